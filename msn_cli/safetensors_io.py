"""A streaming safetensors writer: header from shapes, then one tensor at a time.

Peak memory is a few output tensors (the largest is a ViT-L MLP matrix, 16 MiB) on top of the
memory-mapped source; the file's sha256 is computed from the bytes as they are written, in a
background thread (hashlib releases the GIL), so hashing overlaps the writing.
The format is the documented one (8-byte little-endian header length, JSON header with
``dtype``/``shape``/``data_offsets`` and ``__metadata__``, padded with spaces to 8 bytes,
then the raw little-endian data), so ``safetensors.safe_open`` and transformers read it.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
             "int64": "I64", "int32": "I32", "uint8": "U8", "bool": "BOOL"}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1}


@dataclass(frozen=True)
class PendingTensor:
    name: str
    dtype: str  # torch dtype name, e.g. "float32"
    shape: tuple[int, ...]
    produce: Callable[[], torch.Tensor]
    """Returns the tensor (any layout); called once, when its bytes are due."""
    release: Callable[[torch.Tensor], None] | None = None
    """Called with the produced tensor once its bytes are written and hashed (e.g. to drop
    memory-mapped source pages from the resident set)."""

    @property
    def nbytes(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n * _ITEMSIZE[ST_DTYPES[self.dtype]]


@dataclass(frozen=True)
class Written:
    path: Path
    size: int
    sha256: str


def write_safetensors(path: Path, tensors: Iterable[PendingTensor], metadata: dict[str, str],
                      on_bytes: Callable[[int], None] | None = None, *, sync: bool = True,
                      digest: bool = True) -> Written:
    """Write ``tensors`` (sorted by name) to ``path``; ``fsync`` it unless ``sync=False``
    (the caller then syncs it itself, e.g. while it reads the file back). With
    ``digest=False`` nothing is hashed and ``Written.sha256`` is empty (the caller hashes the
    file later, e.g. as it reads it back after :func:`patch_metadata`)."""
    items = sorted(tensors, key=lambda t: t.name)
    header: dict[str, object] = {"__metadata__": metadata}
    offset = 0
    for t in items:
        header[t.name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    hasher = BackgroundSha256() if digest else None
    try:
        with open(path, "wb") as f:
            for chunk in (struct.pack("<Q", len(raw)), raw):
                f.write(chunk)
                if hasher:
                    hasher.put(chunk)
            for t in items:
                tensor = t.produce()
                if tuple(tensor.shape) != t.shape or str(tensor.dtype).removeprefix("torch.") != t.dtype:
                    raise ValueError(f"{t.name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                                     f"planned {t.shape} {t.dtype}")
                if not tensor.is_contiguous():  # a view that is already contiguous is not copied
                    tensor = tensor.contiguous()
                buf = tensor.reshape(-1).view(_byte_dtype()).numpy().data
                f.write(buf)
                if hasher:  # it holds the tensor until hashed, then hands it to ``release``
                    hasher.put(buf, (t.release, tensor) if t.release else None)
                elif t.release:
                    t.release(tensor)
                if on_bytes:
                    on_bytes(t.nbytes)
                del tensor, buf
            sha = hasher.result() if hasher else ""
            f.flush()
            if sync:
                os.fsync(f.fileno())
    finally:
        if hasher:
            hasher.close()
    return Written(path, 8 + len(raw) + offset, sha)


def patch_metadata(path: Path, metadata: dict[str, str]) -> None:
    """Replace the ``__metadata__`` of a file written by :func:`write_safetensors`, in place.

    The header keeps its length (the new one is padded with spaces), so no tensor moves; a
    header that would grow is refused. Lets a writer reserve a value it learns only later
    (a placeholder of the same length) and start writing before it is known.
    """
    with open(path, "r+b") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        header["__metadata__"] = metadata
        raw = json.dumps(header, separators=(",", ":")).encode()
        if len(raw) > n:
            raise ValueError(f"{path.name}: the new metadata does not fit the reserved header")
        f.seek(8)
        f.write(raw + b" " * (n - len(raw)))


class BackgroundSha256:
    """sha256 of a byte stream in a background thread, fed in order through a short queue."""

    def __init__(self, depth: int = 4) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._h = hashlib.sha256()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="msn-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            data, after = item
            try:
                if self._error is None:
                    self._h.update(data)
                if after is not None:
                    after[0](after[1])
            except BaseException as e:  # reported to the writer on its next put/result
                self._error = self._error or e

    def put(self, data, after=None) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((data, after))

    def result(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        return self._h.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()


def _byte_dtype():
    import torch

    return torch.uint8


def read_header(path: Path) -> dict:
    """The JSON header of a safetensors file (no tensor data read)."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError("file shorter than a safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > 100_000_000:
            raise ValueError("header length is implausible")
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError("header is truncated")
    header = json.loads(raw)
    if not isinstance(header, dict):
        raise ValueError("header is not a JSON object")
    return header
