"""The partial file on disk: opened without following links, written at offsets, read back
into the running sha256.

Anyone who shares the cache can write into ``partial/``, so a planted link is removed (never
written through) and only a regular file is ever opened.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from msn_cli.errors import CacheError
from msn_cli.transfer.cache import disk_free
from msn_cli.transfer.download.settings import CHUNK
from msn_cli.util.safeio import UnsafeInput, open_regular

NotifyFn = Callable[[str], None]


class Hasher(Protocol):
    """A running digest (``hashlib.sha256()``)."""

    def update(self, data: bytes | memoryview, /) -> None: ...
    def hexdigest(self) -> str: ...

_SOMEONE_ELSE = "someone else writes into this cache: download again"


def clear_unsafe_partial(part: Path, say: NotifyFn) -> None:
    """Leave ``part`` absent or a regular file: a planted link goes, its target stays untouched."""
    try:
        mode = part.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise CacheError(f"{part} is a folder, not a partial download; msn does not write into it",
                         hint=f"remove it (rm -r {part}) and download again")
    say(f"discarding {part.name}: it is not a regular file (msn never writes through a link)")
    part.unlink()


def check_space(part: Path, name: str, need: int) -> None:
    """Stop before writing when the disk of ``part`` has less than ``need`` bytes free."""
    free = disk_free(part.parent)
    if free is not None and free < need:
        raise CacheError(
            f"not enough space for {name} in {part.parent}: it needs {need:,} more "
            f"bytes and {free:,} are free",
            hint="free some space (msn cache rm ...) or use --cache-dir / MSN_CACHE elsewhere")


def discard(*paths: Path) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()  # a link is removed, never its target


def open_for_writing(part: Path) -> int:
    """``part`` for writing at offsets, created if missing, never through a link; only a
    regular file."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError:
        if part.is_symlink():
            raise CacheError(f"{part} became a symbolic link; msn does not write through it",
                             hint=_SOMEONE_ELSE) from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheError(f"{part} is not a regular file; msn does not write into it")
    return fd


def write_at(fd: int, data: bytes | memoryview, pos: int, part: Path) -> None:
    """All of ``data`` into ``fd`` at ``pos``; a failing disk is a CacheError (never a retry)."""
    view = memoryview(data)
    while view:
        try:
            k = os.pwrite(fd, view, pos)
        except OSError as e:
            raise CacheError(
                f"cannot write {part}: {e.strerror or e}",
                hint="free some space or use --cache-dir / MSN_CACHE elsewhere; what was written "
                     "is kept and the next run resumes from it") from None
        view, pos = view[k:], pos + k


@contextlib.contextmanager
def reading(path: Path) -> Iterator[BinaryIO]:
    """``path`` opened for reading, a regular file and never through a link."""
    with contextlib.ExitStack() as stack:
        try:
            f: BinaryIO = stack.enter_context(open_regular(path, follow_links=False))
        except UnsafeInput as e:
            raise CacheError(f"refusing to read {e}", hint=_SOMEONE_ELSE) from None
        yield f


def feed(h: Hasher, f: BinaryIO, start: int, end: int,
         report: Callable[[int], None] | None = None) -> int:
    """Hash bytes ``[start, end)`` of ``f`` into ``h``, in order; the position reached (short of
    ``end`` where the file is). ``report`` gets the position after each read."""
    buf = bytearray(min(CHUNK, max(end - start, 1)))
    view = memoryview(buf)
    pos = start
    while pos < end:
        n = os.preadv(f.fileno(), [view[: min(len(buf), end - pos)]], pos)
        if not n:
            break
        h.update(view[:n])
        pos += n
        if report is not None:
            report(pos)
    return pos
