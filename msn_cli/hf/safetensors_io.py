"""A streaming safetensors writer: header from shapes, then one tensor at a time.

Peak memory is a few output tensors (the largest is a ViT-L MLP matrix, 16 MiB) on top of the
memory-mapped source. Either the file's sha256 is computed from the bytes as they are
written, in a background thread (hashlib releases the GIL), or nothing is hashed, tensors
given as byte ranges of another file are copied by the kernel, and the header is written
last (its metadata may be learnt while the tensors are written); see
:func:`write_safetensors`.
The format is the documented one (8-byte little-endian header length, JSON header with
``dtype``/``shape``/``data_offsets`` and ``__metadata__``, padded with spaces to 8 bytes,
then the raw little-endian data), so ``safetensors.safe_open`` and transformers read it.
"""

from __future__ import annotations

import errno
import json
import os
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safetensors import SafetensorError, safe_open

from msn_cli.util import safeio
from msn_cli.util.hashing import BackgroundSha256

if TYPE_CHECKING:
    import torch

ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
             "int64": "I64", "int32": "I32", "uint8": "U8", "bool": "BOOL"}
_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "U8": 1, "BOOL": 1,
             "I8": 1, "I16": 2, "U16": 2, "U32": 4, "U64": 8, "F8_E4M3": 1, "F8_E5M2": 1}


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
    span: tuple[int, int] | None = None
    """``(offset, length)`` of bytes equal to the produced tensor's in the file given to
    :func:`write_safetensors` as ``copy_from``: copied file to file by the kernel, and
    ``produce`` is not called (unless the copy is not supported there)."""

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


def _header_bytes(header: dict[str, object], size: int | None = None) -> bytes:
    raw = json.dumps(header, separators=(",", ":")).encode()
    if size is None:
        return raw + b" " * (-len(raw) % 8)
    if len(raw) > size:
        raise ValueError("the final metadata does not fit the header's reserved room")
    return raw + b" " * (size - len(raw))


def write_safetensors(path: Path, tensors: Iterable[PendingTensor], metadata: dict[str, str],
                      on_bytes: Callable[[int], None] | None = None, *, sync: bool = True,
                      digest: bool = True, copy_from: int | None = None,
                      final_metadata: Callable[[], dict[str, str]] | None = None) -> Written:
    """Write ``tensors`` (sorted by name) to ``path``; ``fsync`` it unless ``sync=False``
    (the caller then syncs it itself, e.g. while it reads the file back).

    With ``digest=False`` nothing is hashed and ``Written.sha256`` is empty (the caller
    hashes the file later, e.g. as it reads it back), and the header is written last: the
    tensors go in from its end, and ``final_metadata`` (when given) is called once they are
    all written, for metadata learnt meanwhile; it must fit the room ``metadata`` reserved
    (use a placeholder of the same length). Writing the first page last also keeps it out
    of the write-back that starts while the tensors are written (rewriting a page under
    write-back waits for the disk).

    ``copy_from``, an open file descriptor, is where the tensors' ``span`` point: with
    ``digest=False`` those bytes go file to file through ``os.sendfile`` (no page of them is
    mapped or copied into this process; measured 0.4 s against 0.7 s for 1.2 GB from a
    memory map). Where the kernel refuses that (not Linux, a file system without it) the
    writer falls back to ``produce`` for the rest of the file. Nothing here compares the
    copied bytes with the tensors: the caller's read-back does.
    """
    if digest and final_metadata is not None:
        raise ValueError("a header hashed as it is written cannot change afterwards")
    items = sorted(tensors, key=lambda t: t.name)
    header: dict[str, object] = {"__metadata__": metadata}
    data_size = 0
    for t in items:
        header[t.name] = {"dtype": ST_DTYPES[t.dtype], "shape": list(t.shape),
                          "data_offsets": [data_size, data_size + t.nbytes]}
        data_size += t.nbytes
    raw = _header_bytes(header)
    hasher = BackgroundSha256() if digest else None
    kernel_copy = copy_from is not None and not digest and hasattr(os, "sendfile")
    try:
        with open(path, "wb", buffering=0) as f:
            if hasher:
                head = struct.pack("<Q", len(raw)) + raw
                _write_all(f, head)
                hasher.put(head)
            else:
                f.seek(8 + len(raw))
            for t in items:
                if kernel_copy and t.span is not None and t.span[1] == t.nbytes:
                    assert copy_from is not None
                    at, length = t.span
                    copied = _sendfile_all(f.fileno(), copy_from, at, length)
                    if copied == length:
                        if on_bytes:
                            on_bytes(t.nbytes)
                        continue
                    kernel_copy = False  # not supported here: the rest goes through memory
                    if copied:  # a partial copy (never seen): rewind and write it whole
                        f.seek(-copied, os.SEEK_CUR)
                tensor = t.produce()
                if tuple(tensor.shape) != t.shape or str(tensor.dtype).removeprefix("torch.") != t.dtype:
                    raise ValueError(f"{t.name}: produced {tuple(tensor.shape)} {tensor.dtype}, "
                                     f"planned {t.shape} {t.dtype}")
                if not tensor.is_contiguous():  # a view that is already contiguous is not copied
                    tensor = tensor.contiguous()
                buf = tensor.reshape(-1).view(_byte_dtype()).numpy().data
                _write_all(f, buf)
                if hasher:  # it holds the tensor until hashed, then hands it to ``release``
                    hasher.put(buf, (t.release, tensor) if t.release else None)
                elif t.release:
                    t.release(tensor)
                if on_bytes:
                    on_bytes(t.nbytes)
                del tensor, buf
            if not hasher:
                if final_metadata is not None:
                    header["__metadata__"] = final_metadata()
                    raw = _header_bytes(header, len(raw))
                f.seek(0)
                _write_all(f, struct.pack("<Q", len(raw)) + raw)
            sha = hasher.result() if hasher else ""
            if sync:
                os.fsync(f.fileno())
    finally:
        if hasher:
            hasher.close()
    return Written(path, 8 + len(raw) + data_size, sha)


def _write_all(f, data) -> None:
    view = memoryview(data).cast("B")
    while view:
        n = f.write(view)
        view = view[n:]


_NO_KERNEL_COPY = {getattr(errno, name) for name in
                   ("EINVAL", "ENOSYS", "EOPNOTSUPP", "ENOTSUP", "EXDEV", "EBADF", "ESPIPE")
                   if hasattr(errno, name)}


def _sendfile_all(out_fd: int, in_fd: int, offset: int, length: int) -> int:
    """Copy ``length`` bytes at ``offset`` of ``in_fd`` to ``out_fd``'s position; return the
    bytes copied, short only where the kernel cannot do it (then the caller writes them).
    Other errors (no space, I/O) are raised as they are."""
    done = 0
    while done < length:
        try:
            n = os.sendfile(out_fd, in_fd, offset + done, length - done)
        except OSError as e:
            if e.errno in _NO_KERNEL_COPY:
                return done
            raise
        if n == 0:  # the source ended early: let the caller's own path find out why
            return done
        done += n
    return done


def _byte_dtype():
    import torch

    return torch.uint8


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
