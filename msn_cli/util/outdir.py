"""Output folders (and files) that appear whole or not at all.

A command writes into a temporary folder beside OUT (``.OUT.msn-tmp-PID-XXXX``) and renames it
into place once everything in it is complete and synced. A lock file (``.OUT.msn-lock``, removed
when the run ends) keeps two processes from writing the same OUT; whoever holds it knows every
leftover temporary folder of that OUT belongs to a run that died (SIGKILL, power cut) and
removes it. With
``force``, an existing OUT is moved aside, the new folder renamed in, and only then the old
one deleted; if anything fails the old folder is put back.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from msn_cli.errors import OutputError, OutputExistsError, UsageError
from msn_cli.util.interrupts import deferred
from msn_cli.util.safeio import fsync_dir, fsync_file

if TYPE_CHECKING:
    from filelock import FileLock

TMP_MARK = ".msn-tmp-"
OLD_MARK = ".msn-old-"


def lock_path(out: Path) -> Path:
    return out.parent / f".{out.name}.msn-lock"


def check_target(out: Path, force: bool, keep: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Refuse early (before any work) when OUT cannot or must not be written.

    ``keep``: files the command reads (the source checkpoint), which replacing OUT must not delete.
    """
    if out.is_symlink():  # replacing would swap the link, never what it points to
        raise OutputExistsError(f"{out} is a symbolic link (to {os.readlink(out)}): msn writes a "
                                "folder whole and renames it into place",
                                hint=f"give the folder itself ({out.resolve()}), or remove the link")
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out} exists and is a file, not a folder",
                                hint="choose another output folder")
    if (out / "CACHEDIR.TAG").exists():
        # msn's checkpoint cache (or any other tool's cache): --force must never replace it
        raise OutputExistsError(f"{out} is a cache folder (it holds CACHEDIR.TAG); msn never "
                                "replaces one, not even with --force",
                                hint="choose another output folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise OutputExistsError(f"{out} exists and is not empty",
                                hint="add --force to replace it (only once the new one is complete)")
    if out.is_dir():
        inside = out.resolve()
        for path in keep:
            if inside in Path(path).resolve().parents:
                raise OutputExistsError(
                    f"{path} is inside {out}: replacing the folder would delete it",
                    hint="move the checkpoint out of the folder, or choose another output folder")
    _check_parent(out)


def _check_parent(out: Path) -> None:
    parent = out.parent if out.parent != Path("") else Path(".")
    for above in (parent, *parent.parents):
        if above.exists():
            if not above.is_dir():
                raise OutputError(f"cannot create {out}: {above} is a file, not a folder",
                                  hint="choose another output folder")
            break
    if parent.exists() and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"cannot write to {parent}: permission denied or read-only",
                          hint="choose an output folder in a writable location")


def stale_temporaries(out: Path) -> list[Path]:
    parent = out.parent
    if not parent.is_dir():
        return []
    return [p for p in parent.iterdir()
            if p.name.startswith(f".{out.name}{TMP_MARK}") or p.name.startswith(f".{out.name}{OLD_MARK}")]


@contextlib.contextmanager
def _output_lock(out: Path, what: str) -> Iterator[None]:
    """The parent made and ``out``'s lock held (one writer per output), released on exit."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot create {out.parent}: {e.strerror}",
                          hint=f"choose an output {what} in a writable location") from e
    lock = _OutLock(lock_path(out))
    # Ctrl-C and SIGTERM are held back while the lock changes hands: one raised between taking
    # it and entering this ``try`` (or inside release) would leave the lock file behind
    try:
        try:
            with deferred():
                locked = lock.acquire()
        except OSError as e:
            raise _output_error(e, out) from e
        if not locked:
            raise UsageError(f"another msn process is writing {out}",
                             hint=f"wait for it to finish, or choose another output {what}")
        yield
    finally:
        with deferred():
            lock.release()


@contextlib.contextmanager
def atomic_output_dir(out: str | os.PathLike[str], force: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary folder; on clean exit it becomes ``out``."""
    out = Path(out).absolute()
    check_target(out, force)
    with _output_lock(out, "folder"):
        for stale in stale_temporaries(out):  # we hold the lock: these are from dead runs
            if stale.is_symlink():  # an old swap of a linked OUT: the link only, not its target
                stale.unlink()
            elif OLD_MARK in stale.name and not out.exists():
                os.rename(stale, out)  # died mid-swap: the previous OUT is the one to keep
            else:
                shutil.rmtree(stale, ignore_errors=True)
        check_target(out, force)  # re-check under the lock
        tmp: Path | None = None
        try:
            with deferred():  # an interrupt as mkdtemp returns would leave the folder behind
                tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}{TMP_MARK}{os.getpid()}-",
                                            dir=out.parent))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
            yield tmp
            fsync_dir(tmp)
            _install(tmp, out)
        except BaseException as e:
            if tmp is not None:
                shutil.rmtree(tmp, ignore_errors=True)
            if isinstance(e, OSError) and e.errno in _OUTPUT_ERRNOS:
                raise _output_error(e, out) from e
            raise


def check_file_target(out: Path, force: bool,
                      keep: Sequence[str | os.PathLike[str]] = ()) -> None:
    """:func:`check_target` for an output that is one file (``msn export``).

    ``keep``: files the command reads; replacing one of them with its own output is refused
    (the source would be gone if anything after the rename went wrong).
    """
    if out.is_dir():
        raise OutputExistsError(f"{out} is a folder, not a file",
                                hint="give the path of the .pth.tar file to write")
    if out.exists() and not force:
        raise OutputExistsError(f"{out} exists", hint="add --force to replace it (only once the "
                                                      "new file is complete)")
    for path in keep:
        if out.exists() and Path(path).exists() and out.resolve() == Path(path).resolve():
            raise OutputExistsError(f"{out} is the source itself",
                                    hint="write the export to another file")
    _check_parent(out)


@contextlib.contextmanager
def atomic_output_file(out: str | os.PathLike[str], force: bool = False,
                       keep: Sequence[str | os.PathLike[str]] = ()) -> Iterator[Path]:
    """Yield a temporary file path beside ``out``; on clean exit it is synced and renamed to
    ``out`` (one ``rename``: readers see the old file or the new one, never a part).

    The same lock as :func:`atomic_output_dir` keeps two runs apart, and leftovers of dead
    runs (``.OUT.msn-tmp-PID-XXXX``) are removed under it. On any failure the temporary file
    is removed and an existing ``out`` is untouched.
    """
    out = Path(out).absolute()
    check_file_target(out, force, keep)
    with _output_lock(out, "file"):
        for stale in stale_temporaries(out):  # we hold the lock: these are from dead runs
            if stale.is_dir():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    stale.unlink()
        check_file_target(out, force, keep)  # re-check under the lock
        tmp: Path | None = None
        try:
            with deferred():  # an interrupt as mkstemp returns would leave the file behind
                fd, name = tempfile.mkstemp(prefix=f".{out.name}{TMP_MARK}{os.getpid()}-",
                                            dir=out.parent)
                os.close(fd)
                tmp = Path(name)
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; the result is ordinary
            yield tmp
            fsync_file(tmp)
            os.replace(tmp, out)
            tmp = None
            fsync_dir(out.parent)
        except BaseException as e:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            if isinstance(e, OSError) and e.errno in _OUTPUT_ERRNOS:
                raise _output_error(e, out) from e
            raise


_OUTPUT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
                  errno.EIO}


def _output_error(e: OSError, out: Path) -> OutputError:
    """An OS-level failure while writing ``out``, said in the user's terms."""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return OutputError(f"no space left on the device while writing {out}; nothing was written",
                           hint="free some space or choose an output folder on another disk")
    if e.errno == errno.EFBIG:
        return OutputError(f"file too large for the file system while writing {out}",
                           hint="choose an output folder on another file system")
    if e.errno == errno.EROFS:
        return OutputError(f"cannot write {out}: the file system is read-only",
                           hint="choose an output folder in a writable location")
    if e.errno in (errno.EACCES, errno.EPERM):
        return OutputError(f"cannot write {out}: permission denied",
                           hint="choose an output folder in a writable location")
    return OutputError(f"cannot write {out}: {e.strerror or e}",
                       hint="check the disk, or choose an output folder elsewhere")


class _OutLock:
    """A non-blocking exclusive lock on OUT: ``flock`` on ``.OUT.msn-lock``, removed on release.

    Removing the file while holding the lock is safe because every taker checks, once it holds
    the lock, that the path still names the file it locked (else it locked a removed file and
    tries again). A process killed while holding it leaves the file; the kernel has dropped the
    lock, so the next run takes it and removes it. Without ``fcntl`` (Windows) ``filelock`` is
    used and the file stays. ``filelock`` is not used on POSIX because it leaves the file
    beside OUT after every run.
    """

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None
        self._fallback: FileLock | None = None

    def acquire(self) -> bool:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            from filelock import FileLock, Timeout

            self._fallback = FileLock(str(self.path))
            try:
                self._fallback.acquire(timeout=0)
            except Timeout:
                return False
            return True
        for _ in range(20):
            fd = _open_lock_file(self.path)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
            except BaseException:
                os.close(fd)
                raise
            try:
                current = os.lstat(self.path)
            except FileNotFoundError:
                current = None
            if current is not None and os.path.samestat(os.fstat(fd), current):
                self._fd = fd
                return True
            os.close(fd)  # its holder removed it as we took it: take the new one
        return False

    def release(self) -> None:
        if self._fallback is not None:  # pragma: no cover - not POSIX
            self._fallback.release()
            return
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
        os.close(self._fd)
        self._fd = None


def _open_lock_file(path: Path) -> int:
    """``path`` opened for the lock, created if missing, never through a link: anyone who can
    write beside OUT could plant one pointing at a file of the user's, which ``O_CREAT`` would
    otherwise create or open (and release would leave behind)."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP or path.is_symlink():
            raise OutputError(f"refusing to use the lock file {path}: it is a symbolic link",
                              hint=f"remove it (rm {path}) if you did not put it there") from None
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OutputError(f"refusing to use the lock file {path}: it is not a regular file",
                          hint="remove it if you did not put it there")
    return fd


def _install(tmp: Path, out: Path) -> None:
    if out.is_dir() and not any(out.iterdir()):
        out.rmdir()
    if not out.exists():
        os.rename(tmp, out)
        fsync_dir(out.parent)
        return
    old = out.parent / f".{out.name}{OLD_MARK}{os.getpid()}"
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)
        raise
    fsync_dir(out.parent)
    shutil.rmtree(old, ignore_errors=True)

