"""safetensors files: a streaming writer (the header from shapes, then one tensor at a time)
and the header reader for files made by anyone.

Peak memory while writing is one output tensor (the largest is a ViT-L MLP matrix, 16 MiB)
on top of the memory-mapped source. The format is the documented one (8-byte little-endian
header length, JSON header with ``dtype``/``shape``/``data_offsets`` and ``__metadata__``,
padded with spaces to 8 bytes, then the raw little-endian data), so ``safetensors.safe_open``
and transformers read it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from msn_cli.hf.dtypes import ST_DTYPES, nbytes_of
from msn_cli.util import safeio

if TYPE_CHECKING:
    import torch



@dataclass(frozen=True)
class PendingTensor:
    name: str
    dtype: str  # torch dtype name, e.g. "float32"
    shape: tuple[int, ...]
    produce: Callable[[], torch.Tensor]
    """Returns the tensor (any layout); called once, when its bytes are due."""

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.dtype, self.shape)


@dataclass(frozen=True)
class Written:
    path: Path
    size: int


def write_safetensors(path: Path, tensors: Iterable[PendingTensor], metadata: dict[str, str],
                      on_bytes: Callable[[int], None] | None = None) -> Written:
    """Write ``tensors`` (sorted by name) to ``path``: the header, then each tensor's bytes.

    ``on_bytes`` is told each tensor's size as it is written. The file is not fsynced here:
    the caller syncs it, beside its read-back.
    """
    import torch  # here, not above: reading a header needs no torch

    items = sorted(tensors, key=lambda t: t.name)
    header: dict[str, object] = {"__metadata__": metadata}
    data_size = 0
    for t in items:
        header[t.name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                          "data_offsets": [data_size, data_size + t.nbytes]}
        data_size += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        for t in items:
            tensor = _produce(t)
            f.write(tensor.reshape(-1).view(torch.uint8).numpy().data)
            if on_bytes is not None:
                on_bytes(t.nbytes)
            del tensor
    return Written(path, 8 + len(raw) + data_size)


def _produce(t: PendingTensor) -> torch.Tensor:
    """``t``'s tensor, contiguous, once it is what the header already says it is."""
    tensor = t.produce()
    if tuple(tensor.shape) != t.shape or str(tensor.dtype).removeprefix("torch.") != t.dtype:
        raise ValueError(f"{t.name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                         f"planned {t.shape} {t.dtype}")
    return tensor.contiguous()  # a tensor that already is contiguous is not copied


class HeaderError(ValueError):
    """A safetensors file whose header is not a valid one (the message says what is wrong)."""


MAX_HEADER_BYTES = 100_000_000
"""safetensors' own cap on the header; it also bounds the read here should the file change
between safetensors' check and that read."""

_PLAIN = {  # safetensors' errors (Display since 0.5, Debug names before) in a reader's words
    "incomplete metadata": "truncated, or longer than its header says",
    "MetadataIncompleteBuffer": "truncated, or longer than its header says",
    "invalid header length": "header length runs past the end of the file",
    "InvalidHeaderLength": "header length runs past the end of the file",
    "header too large": "header length is implausible",
    "HeaderTooLarge": "header length is implausible",
    "header too small": "file shorter than a safetensors header",
    "HeaderTooSmall": "file shorter than a safetensors header",
}


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The JSON header of a safetensors file (no tensor data read), as safetensors checks it.

    A regular file only (a FIFO or a device is refused before a byte is read); then
    safetensors' own reader validates the header exactly as ``from_pretrained`` will: a
    JSON object of at most :data:`MAX_HEADER_BYTES` whose ``__metadata__`` maps strings to
    strings and whose every other entry has a known ``dtype``, a ``shape`` of sizes and
    ``data_offsets`` that tile the data section with each tensor's byte size, to the last
    byte of the file. Returns ``{name: {"dtype", "shape", "data_offsets"}}`` plus
    ``__metadata__`` when the file has one. Raises :class:`HeaderError` for all of that,
    ``OSError`` when the file cannot be read.
    """
    try:
        with safeio.open_regular(path) as f:
            _check_with_safetensors(path)
            n = int.from_bytes(f.read(8), "little")
            raw = f.read(min(n, MAX_HEADER_BYTES))
    except safeio.UnsafeInput as e:
        raise HeaderError(str(e).replace(os.fspath(path), "it")) from None
    try:
        header = json.loads(raw)
    except (ValueError, RecursionError) as e:  # only if the file changed after the check
        raise HeaderError(f"header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise HeaderError("header is not a JSON object")
    if header.get("__metadata__", {}) is None:  # safetensors allows null: read it as absent
        del header["__metadata__"]
    return header


def _check_with_safetensors(path: str | os.PathLike[str]) -> None:
    try:
        with safe_open(os.fspath(path), framework="numpy"):
            pass
    except SafetensorError as e:
        said = str(e).removeprefix("Error while deserializing header: ")
        plain = next((v for k, v in _PLAIN.items() if said.startswith(k)), None)
        raise HeaderError(plain or said[:300]) from None
