"""Files and names that someone else may have planted: the rules every reader and writer follows.

A shared cache, a folder converted elsewhere, a manifest edited by hand and a mirror URL with
credentials are all input msn does not control. The rules, in one place:

- a *name* (a cache entry, a file of a folder) is one plain path component or a relative path
  of plain components, and always resolves inside the folder it belongs to;
- files are read only when they are *regular files* (a FIFO would block, ``/dev/zero`` never
  ends), and never beyond a size cap;
- JSON is parsed from capped bytes, and nesting deeper than the parser can recurse is refused;
- where msn writes, it creates a new file exclusively, without following links, and renames
  it into place, so a planted symlink is replaced, never written through;
- a URL shown, stored or published carries no credentials.

Each function raises :class:`UnsafeInput` with a short reason; the caller turns it into its
own format's error (cache, folder, manifest ...) with that format's exit code and hint.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

MAX_JSON_BYTES = 16 * 1024 * 1024
"""Cap for the small JSON files msn reads (index, partial notes, manifests, configs)."""

class UnsafeInput(ValueError):
    """A name, file or document that breaks one of the rules above (the message says which)."""


# -- names ------------------------------------------------------------------------------------

_BAD_CHARS = re.compile(r"[\x00-\x1f\x7f/\\]")


def safe_name(name: Any) -> str:
    """``name`` if it is one plain path component (no separators, no ``..``, no control chars)."""
    if not isinstance(name, str) or not name:
        raise UnsafeInput(f"{name!r} is not a file name")
    if name in (".", "..") or _BAD_CHARS.search(name):
        raise UnsafeInput(f"'{_printable(name)}' is not a plain file name")
    return name


def relative_parts(relative: Any) -> tuple[str, ...]:
    """The components of ``relative`` if it is a relative path of plain components.

    The rule on the name alone (no file system access); :func:`inside` adds the links.
    """
    if not isinstance(relative, str) or not relative:
        raise UnsafeInput(f"{relative!r} is not a file name")
    if "\\" in relative:
        raise UnsafeInput(f"'{_printable(relative)}' is not a file of the folder")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or not pure.parts:
        raise UnsafeInput(f"'{_printable(relative)}' is not a file of the folder")
    for part in pure.parts:
        try:
            safe_name(part)
        except UnsafeInput:
            raise UnsafeInput(f"'{_printable(relative)}' is not a file of the folder") from None
    return pure.parts


def inside(folder: Path, relative: Any) -> Path:
    """``folder / relative`` for a relative path of plain components that stays in ``folder``.

    Links are followed for the check: a name whose target lies outside is refused too.
    """
    path = folder.joinpath(*relative_parts(relative))
    try:
        if not path.resolve().is_relative_to(folder.resolve()):
            raise UnsafeInput(f"'{_printable(relative)}' points outside the folder")
    except (OSError, RuntimeError) as e:  # a link loop
        raise UnsafeInput(f"'{_printable(relative)}' cannot be resolved ({e})") from e
    return path


def _printable(text: str) -> str:
    return text.encode("unicode_escape", "backslashreplace").decode("ascii")[:200]


# -- reading ----------------------------------------------------------------------------------

@contextlib.contextmanager
def open_regular(path: str | os.PathLike[str], *, follow_links: bool = True) -> Iterator[io.BufferedReader]:
    """A binary file object for ``path`` if it is a regular file.

    Opened non-blocking first, so a FIFO cannot hang the open; a FIFO, device, socket or
    folder is refused before a byte is read. ``follow_links=False`` also refuses a symlink.
    Raises :class:`UnsafeInput` for the wrong kind of file and lets ``OSError`` through.
    """
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)

    def opener(name: str, _flags: int) -> int:
        try:
            fd = os.open(name, flags)
        except OSError as e:
            if not follow_links and os.path.islink(name):
                raise UnsafeInput(f"{name} is a symbolic link") from e
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise UnsafeInput(f"{name} is {_kind(st.st_mode)}, not a regular file")
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd

    # The file object owns the descriptor from the moment the opener returns it: a Ctrl-C or
    # SIGTERM raised as ``open`` returns drops the object, which closes it once (closing it
    # here as well would fail with EBADF, and that OSError would replace the interrupt).
    with open(os.fspath(path), "rb", opener=opener) as f:
        yield f


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"


def read_capped(path: str | os.PathLike[str], limit: int = MAX_JSON_BYTES, *,
                follow_links: bool = True) -> bytes:
    """The bytes of a regular file no larger than ``limit``."""
    with open_regular(path, follow_links=follow_links) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UnsafeInput(f"{path} is larger than {limit:,} bytes")
    return data


def parse_json(data: bytes | str) -> Any:
    """JSON; raises ``ValueError`` (``UnsafeInput`` when nested deeper than the parser can
    recurse, which the size cap alone does not prevent)."""
    if isinstance(data, bytes):
        data = data.decode("utf-8")
    try:
        return json.loads(data)
    except RecursionError:
        raise UnsafeInput("nested deeper than the JSON parser can follow") from None


def read_json(path: str | os.PathLike[str], limit: int = MAX_JSON_BYTES, *,
              follow_links: bool = True) -> Any:
    """A capped JSON document from a regular file.

    Raises :class:`UnsafeInput` (wrong kind of file, too large, too deep), ``ValueError``
    (not JSON, not UTF-8) or ``OSError``.
    """
    return parse_json(read_capped(path, limit, follow_links=follow_links))


# -- writing ----------------------------------------------------------------------------------

def replace_file(path: str | os.PathLike[str], data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` through a new temporary file renamed over it.

    The temporary file is created exclusively (``O_EXCL | O_NOFOLLOW``) with a random name,
    so a link planted under any name is never written through; the rename replaces a link at
    ``path`` itself, never its target.
    """
    path = Path(path)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) \
        | getattr(os, "O_CLOEXEC", 0)
    for _ in range(16):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o644)
            break
        except FileExistsError:
            continue
    else:  # pragma: no cover - 16 collisions of 48 random bits
        raise FileExistsError(f"cannot create a temporary file beside {path}")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_file(path: str | os.PathLike[str]) -> None:
    """Wait until the file at ``path`` is on the disk; raises ``OSError`` (e.g. ``EIO``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Wait until the entries of the folder ``path`` (a rename into it) are on the disk.

    Best effort: some file systems and platforms refuse to open or sync a folder, and a
    rename is durable there without it, so errors are ignored.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# -- URLs -------------------------------------------------------------------------------------

def strip_credentials(url: str) -> str:
    """``url`` without ``user:password@`` (everything else unchanged)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s/@]+@")


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it removed (for messages and logs)."""
    return _USERINFO.sub(r"\1", text)

