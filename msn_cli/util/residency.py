"""Give back the memory-mapped pages of weights a layer has finished with (Linux).

Verify runs two models whose weights are memory-mapped from files: the reference from the
source checkpoint (``torch.load(mmap=True)``), the converted model from ``model.safetensors``.
Every page a forward pass touches stays resident in the process until it is unmapped, so one
pass through both models leaves both files' worth of weights in the process's memory, although
each layer needs only its own weights, and only while it runs.

:class:`PageReleaser` attaches a forward hook to every module that owns tensors: after the
module's forward, the pages of those tensors are dropped from the process with
``madvise(MADV_DONTNEED)``. Only pages of clean mappings of the named files are touched: the
kernel keeps them in the page cache and faults them back in, unchanged, from the file on the
next access. Anything else (anonymous memory, such as an upcast copy, or a mapping of another
file) is left alone -- dropping anonymous pages would zero them. Elsewhere than Linux, and when
``/proc/self/maps`` or ``madvise`` is unavailable, it does nothing.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import sys
from collections.abc import Iterable, Iterator
from typing import Any

MADV_DONTNEED = 4
_PAGE = mmap.PAGESIZE


def _madvise() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.madvise
        fn.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
        fn.restype = ctypes.c_int
        return fn
    except (OSError, AttributeError):
        return None


def file_mappings(paths: Iterable[str | os.PathLike[str]]) -> list[tuple[int, int]]:
    """Address ranges of this process's read-only or private mappings of ``paths``.

    A file is recognised by its device and inode (as ``/proc/self/maps`` lists them), not by
    its name. Shared writable mappings are left out: their pages may hold writes.
    """
    wanted: set[tuple[int, int, int]] = set()
    for p in paths:
        with contextlib.suppress(OSError):
            st = os.stat(p)
            wanted.add((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
    ranges: list[tuple[int, int]] = []
    if not wanted:
        return ranges
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return ranges
    for line in lines:
        parts = line.split(maxsplit=5)
        if len(parts) < 5:
            continue
        span, perms, _offset, dev, inode = parts[:5]
        if "w" in perms and "s" in perms:
            continue
        try:
            major, minor = (int(x, 16) for x in dev.split(":"))
            key = (major, minor, int(inode))
            start, end = (int(x, 16) for x in span.split("-"))
        except ValueError:
            continue
        if key in wanted:
            ranges.append((start, end))
    return ranges


class PageReleaser:
    """Drops the file-backed pages of tensors once they have been used (see the module doc)."""

    def __init__(self, paths: Iterable[str | os.PathLike[str]]):
        self._madvise = _madvise()
        self._ranges = file_mappings(paths) if self._madvise is not None else []
        self.released = 0
        """Bytes of pages given back so far (counted each time; a page may come back)."""

    @property
    def active(self) -> bool:
        return bool(self._ranges)

    def _inside(self, start: int, end: int) -> bool:
        return any(a <= start and end <= b for a, b in self._ranges)

    def release(self, tensors: Iterable[Any]) -> None:
        """Give back the whole pages that lie inside each tensor and inside a mapped file."""
        if not self._ranges:
            return
        for t in tensors:
            if t is None or t.device.type != "cpu" or not t.is_contiguous():
                continue
            start = t.data_ptr()
            end = start + t.numel() * t.element_size()
            lo = -(-start // _PAGE) * _PAGE
            hi = end // _PAGE * _PAGE
            if hi > lo and self._inside(lo, hi) and self._madvise(lo, hi - lo, MADV_DONTNEED) == 0:
                self.released += hi - lo

    @contextlib.contextmanager
    def after_each_module(self, model: Any) -> Iterator[None]:
        """While inside: each module's own parameters and buffers are released after its
        forward (a module that runs twice faults its pages back in from the page cache)."""
        handles = []
        if self._ranges:
            for module in model.modules():
                own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
                if own:
                    handles.append(module.register_forward_hook(
                        lambda _m, _i, _o, own=own: self.release(own)))
        try:
            yield
        finally:
            for h in handles:
                h.remove()
