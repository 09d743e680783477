"""Download released checkpoints (or any http(s) URL) into the shared cache.

:func:`fetch` is the one entry point. What it does, in order:

1. Resolve the spec: a released name (``vits16``) becomes ``<base-url>/<file name>``, where the
   base URL is ``base_url``, else ``$MSN_BASE_URL``, else Meta's server; a URL stays a URL.
2. Already in the cache with the size the index recorded: return it. No network, no hashing
   (unless ``verify``), the sha256 comes from the index.
3. Offline (``MSN_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``): stop with an error that says how to get
   the file. Nothing below touches the network.
4. Take the entry's file lock. Another process downloading the same file makes this one wait;
   when the lock comes, a finished entry from that process is used as is.
5. Stream the body in chunks into ``partial/<name>.part`` while hashing it. A partial file left
   by an earlier run is resumed with a ``Range`` request (guarded by ``If-Range`` when the server
   gave an ETag or Last-Modified); its bytes are hashed first so that no second pass is needed.
   A server that answers 200 instead of 206 is followed by starting over. Connection errors,
   timeouts and 5xx answers are retried a bounded number of times with exponential backoff,
   resuming each time from what arrived.
   A file of at least ``SPLIT_MIN`` bytes, from a server that offers ranges and a validator,
   starts the same way, but its stream is measured over its first ``SPLIT_PROBE`` seconds;
   below ``SPLIT_BELOW`` MB/s the rest is split (:func:`_segmented`): the first stream goes on
   as the first range and ``connections`` workers in all fetch the others with ``Range`` +
   ``If-Range`` requests, each written at its offset into the preallocated partial file, while
   a hasher thread carries the first stream's digest on along the contiguous start; the note
   lists the finished ranges so that a later run fetches only the missing ones. A 206 of
   another size or ETag starts over; a range answered with 200 falls back to one stream; each
   range retries on its own.
6. Check the length against Content-Length / Content-Range and, when pinned, the sha256; then
   rename the file into ``files/`` (atomic) and record it in the index.

An interruption (Ctrl-C, SIGTERM, a killed process, a failed run) leaves the partial file for
the next run to resume. Memory use does not grow with the file size.

Credentials in a URL (``http://user:password@mirror/``, in ``--base-url``, ``MSN_BASE_URL`` or a
URL given directly) are used for the request and nowhere else: messages, the index and the
partial note hold the URL without them. A resumed download gets them again the way the first
one did, from the URL given again or from the current ``--base-url`` / ``MSN_BASE_URL``; nothing
secret is written to disk. Partial files are opened without following links (a planted
symlink is removed, never written through) and the finished file is a regular file.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msn_cli.errors import CacheError, DownloadError, MsnError, OfflineError, UsageError
from msn_cli.original.checkpoint import sniff
from msn_cli.original.variants import DEFAULT_BASE_URL, VARIANTS, find_variant, get_variant
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.cache import (
    Cache,
    CacheEntry,
    DamagedNote,
    PartialNote,
    disk_free,
    now_iso,
    read_partial_note,
    write_partial_meta,
)
from msn_cli.util.safeio import UnsafeInput, open_regular, redact, strip_credentials

CHUNK = 1024 * 1024
RETRIES = 4
"""Retries of failed attempts that gained no bytes; ``MSN_DOWNLOAD_RETRIES`` (0: never retry)."""
BACKOFF = 1.0
"""First wait between attempts in seconds; doubled each time, at most ``BACKOFF_MAX``."""
BACKOFF_MAX = 30.0
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
"""Seconds without a byte before the connection counts as lost; ``MSN_DOWNLOAD_TIMEOUT``."""
CONNECTIONS = 4
"""Concurrent ranged requests for one large file; ``--connections`` / ``MSN_DOWNLOAD_CONNECTIONS``."""
MAX_CONNECTIONS = 16
SPLIT_MIN = 64 * 1024 * 1024
"""Files smaller than this use one stream whatever ``connections`` says; ``MSN_DOWNLOAD_SPLIT_MIN``."""
SPLIT_BELOW = 150.0
"""MB/s. A large file starts as one stream; only when that stream brings less than this in its
first ``SPLIT_PROBE`` seconds is the rest split (``MSN_DOWNLOAD_SPLIT_BELOW``; 0: never split).
Splitting pays where one connection is capped below the link (a long or congested path: 3-4x
with 4 connections); where one stream already runs this fast, the link or the CPU is the limit
and more connections only add receive threads and a second read of every byte to hash it
(measured on 2 cores, 1.2 GB uncapped: 0.74x curl split in 4 against 0.93x as one stream).
150 MB/s sits above a saturated 1 Gbit/s link and well below what one stream does on a fast
local path. Under a
budget shared by several files (:func:`fetch_many`) a slow stream splits only once a connection
is free, and is measured again every ``SPLIT_PROBE`` seconds until then."""
SPLIT_PROBE = 0.5
"""Seconds of the first stream, from its first byte, measured before deciding
(``MSN_DOWNLOAD_SPLIT_PROBE``; 0: split at once, without measuring). Long enough that a rate
of hundreds of MB/s is seen as such and short enough that a slow link loses little: at 25 MB/s
per connection, the other connections of a 1.2 GB file start 0.5 s late (about 3% of its time).
A path still in TCP slow start measures slow and is split, which is what a long path needs."""
SEGMENT_MIN = 256 * 1024
SEGMENT_MAX = 32 * 1024 * 1024
NOTE_EVERY = 8 * 1024 * 1024
"""A segmented transfer rewrites its partial note after this many new bytes (and when a
segment ends): a killed process loses at most that much plus the segments in flight."""
HASH_BATCH = 8 * 1024 * 1024
"""The in-order hasher wakes when this much more of the file's start is there (or all of it)."""
HASH_IN_ORDER = True
"""Hash a segmented download's contiguous prefix while the rest arrives (False: hash the
finished file afterwards). Measured in docs/benchmarks.md; the faster is the default."""

NotifyFn = Callable[[str], None]
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class CachedFile:
    """A checked file in the cache."""

    name: str
    path: Path
    url: str
    sha256: str
    size: int
    downloaded_at: str
    variant: str | None = None
    downloaded: bool = False
    """This call transferred bytes (False: the cache already had the file)."""
    resumed_from: int = 0
    """Bytes of an earlier partial download that this call kept."""
    verified: bool = False
    """The file was re-hashed by this call (``verify=True`` or just downloaded)."""
    split: bool = False
    """This call fetched ranges of the file over several connections."""
    first_rate: float | None = None
    """Bytes per second of the first stream over ``SPLIT_PROBE`` seconds, when a large file's
    first stream was measured to decide whether to split (None: not measured)."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "variant": self.variant, "path": str(self.path), "url": self.url,
                "size": self.size, "sha256": self.sha256, "downloaded_at": self.downloaded_at,
                "downloaded": self.downloaded, "resumed_from": self.resumed_from,
                "verified": self.verified, "split": self.split,
                "first_stream_mb_s": None if self.first_rate is None else round(self.first_rate / 1e6, 1)}


def offline_variable() -> str | None:
    """The environment variable that puts msn offline, if one does."""
    for var in ("MSN_OFFLINE", "HF_HUB_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None


def effective_base_url(base_url: str | None = None) -> str:
    return base_url or os.environ.get("MSN_BASE_URL") or DEFAULT_BASE_URL


def check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    if not _HEX64.match(v):
        raise UsageError(f"--sha256 must be 64 hexadecimal digits, not '{value}'")
    return v


@dataclass(frozen=True)
class _Target:
    name: str
    url: str
    """The URL requested, credentials included (used for the request only)."""
    variant: str | None

    @property
    def shown(self) -> str:
        """The URL as shown and stored: without credentials."""
        return strip_credentials(self.url)


def _target(spec: str, cache: Cache, base_url: str | None) -> _Target:
    if "://" in spec:
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"unsupported URL scheme '{scheme}://' in {strip_credentials(spec)}",
                             hint="give an http(s) URL or one of " + ", ".join(VARIANTS))
        plain = strip_credentials(spec)
        for v in VARIANTS.values():
            if plain in (v.url(DEFAULT_BASE_URL), strip_credentials(v.url(effective_base_url(base_url)))):
                return _Target(v.filename, spec, v.name)
        return _Target(cache.name_for_url(spec), spec, None)
    entry = None if find_variant(spec) else cache.get(spec.strip())
    if entry is not None:  # an entry of msn cache ls, downloaded from a URL: fetched from it again
        return _Target(entry.name, entry.url, entry.variant)
    v = get_variant(spec)
    return _Target(v.filename, v.url(effective_base_url(base_url)), v.name)


def fetch(spec: str, *, cache_dir: str | os.PathLike[str] | None = None, base_url: str | None = None,
          sha256: str | None = None, force: bool = False, verify: bool = False,
          progress: ProgressFn = no_progress, notify: NotifyFn | None = None,
          connections: int | None = None, _slots: Any = None) -> CachedFile:
    """The cached file for ``spec`` (a released name or an http(s) URL), downloading it if needed.

    ``sha256`` pins the expected hash; ``force`` downloads again even when cached; ``verify``
    re-hashes a cached file (a damaged one is downloaded again). ``progress`` receives
    ``(file name, bytes done, total or None)``; ``notify`` receives one-line messages (resuming,
    retrying, waiting for another process). ``connections``: concurrent ranged requests for a
    file of at least ``SPLIT_MIN`` bytes whose first stream is slower than ``SPLIT_BELOW``
    (None: ``MSN_DOWNLOAD_CONNECTIONS``, else 4).
    """
    say = notify or (lambda message: None)
    conns = download_connections(connections)
    cache = Cache(cache_dir)
    target = _target(spec, cache, base_url)
    pinned = check_sha256(sha256)

    if not force:
        hit = _lookup(cache, target, pinned, verify, progress, say)
        if hit is not None:
            return hit
    var = offline_variable()
    if var is not None:
        raise OfflineError(
            f"{target.name} is not in the cache ({cache.root}) and {var} is set, so msn may not "
            "use the network",
            hint=f"unset {var} and run 'msn download {strip_credentials(spec)}', or copy the file "
                 f"from {target.shown} onto this machine and give its path instead")
    cache.ensure()
    with _locked(cache, target.name, say):
        if force:
            _discard(cache, target.name)
        else:
            # Another process may have finished it while this one waited (said nothing new).
            hit = _lookup(cache, target, pinned, False, progress, lambda message: None)
            if hit is not None:
                return hit
        return _download(cache, target, pinned, progress, say, conns, _slots)


def fetch_many(specs: list[str], *, cache_dir: str | os.PathLike[str] | None = None,
               base_url: str | None = None, force: bool = False, verify: bool = False,
               progress: ProgressFn = no_progress, notify: NotifyFn | None = None,
               connections: int | None = None) -> list[CachedFile | MsnError]:
    """:func:`fetch` for several files at once, all within one budget of ``connections``.

    Each file being fetched holds one connection of the budget; a large file's extra ranges
    take free ones as they come, so the number of connections open at once never exceeds the
    budget and a file that finishes hands its connection on. Returns, in the order of
    ``specs``, each file or the error that stopped it (one failure does not stop the others).
    Progress goes to ``progress`` under each file's name and, summed, under ``TOTAL_STAGE``.
    """
    import threading

    conns = download_connections(connections)
    cache = Cache(cache_dir)
    slots = threading.BoundedSemaphore(conns)
    results: list[CachedFile | MsnError | None] = [None] * len(specs)
    groups: dict[str, list[int]] = {}  # specs for one cache entry go one after the other
    for i, spec in enumerate(specs):
        try:
            groups.setdefault(_target(spec, cache, base_url).name, []).append(i)
        except MsnError as e:
            results[i] = e
    names = set(groups)
    lock = threading.Lock()
    seen: dict[str, tuple[int, int | None]] = {}

    def report(stage: str, done: int, total: int | None) -> None:
        with lock:
            progress(stage, done, total)
            if stage in names:
                seen[stage] = (done, total)
                known = [t for _, t in seen.values() if t is not None]
                progress(TOTAL_STAGE, sum(d for d, _ in seen.values()), sum(known) or None)

    def run(indices: list[int]) -> None:
        for i in indices:
            while not slots.acquire(timeout=0.2):
                pass
            try:
                results[i] = fetch(specs[i], cache_dir=cache_dir, base_url=base_url, force=force,
                                   verify=verify, progress=report, notify=notify,
                                   connections=conns, _slots=slots)
            except MsnError as e:
                results[i] = e
            except BaseException as e:  # a bug: reported as the file's failure, never lost
                results[i] = DownloadError(f"{strip_credentials(specs[i])}: {type(e).__name__}: {e}")
            finally:
                slots.release()

    threads = [threading.Thread(target=run, args=(indices,), name=f"msn-fetch-{n}", daemon=True)
               for n, indices in enumerate(groups.values())]
    for t in threads:
        t.start()
    for t in threads:  # joined in short waits, so that Ctrl-C and SIGTERM reach this thread
        while t.is_alive():
            t.join(0.2)
    return [r if r is not None else DownloadError(f"{strip_credentials(s)} was not fetched")
            for r, s in zip(results, specs, strict=True)]


TOTAL_STAGE = "all files"


def download_connections(value: int | None = None) -> int:
    """``value``, else ``MSN_DOWNLOAD_CONNECTIONS``, else the default; 1 to ``MAX_CONNECTIONS``."""
    source = "--connections"
    if value is None:
        raw = os.environ.get("MSN_DOWNLOAD_CONNECTIONS", "").strip()
        if not raw:
            return CONNECTIONS
        source = "MSN_DOWNLOAD_CONNECTIONS"
        try:
            value = int(raw)
        except ValueError:
            raise UsageError(f"{source} must be a whole number from 1 to {MAX_CONNECTIONS}, "
                             f"not '{raw}'") from None
    if not 1 <= value <= MAX_CONNECTIONS:
        raise UsageError(f"{source} must be from 1 to {MAX_CONNECTIONS}, not {value}")
    return value


@contextlib.contextmanager
def _locked(cache: Cache, name: str, say: NotifyFn):
    from filelock import Timeout

    lock = cache.entry_lock(name)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        say(f"waiting for another msn process that is downloading {name}")
        lock.acquire(poll_interval=0.1)
    try:
        yield
    finally:
        lock.release()


def _lookup(cache: Cache, target: _Target, pinned: str | None, verify: bool,
            progress: ProgressFn, say: NotifyFn) -> CachedFile | None:
    entry = cache.get(target.name)
    if entry is None:
        return None
    if not cache.intact(entry):
        say(f"the cached {target.name} is missing or its size differs from the index; "
            "downloading it again")
        return None
    verified = False
    if verify:
        digest = _hash_file(cache.file_path(entry.name), progress, f"verifying {entry.name}")
        if digest != entry.sha256:
            say(f"the cached {entry.name} is damaged (sha256 {digest[:12]}..., the index says "
                f"{entry.sha256[:12]}...); downloading it again")
            cache.remove(entry.name)
            return None
        verified = True
    if pinned is not None and entry.sha256 != pinned:
        raise DownloadError(
            f"the cached {entry.name} has sha256 {entry.sha256}, not the expected {pinned}",
            hint=f"if the expected hash is right, the server sent another file; "
                 f"'msn download {target.variant or entry.url} --force' downloads it again")
    return CachedFile(entry.name, cache.file_path(entry.name), entry.url, entry.sha256, entry.size,
                      entry.downloaded_at, entry.variant or target.variant, verified=verified)


def _discard(cache: Cache, name: str) -> None:
    for p in (cache.file_path(name), cache.partial_path(name), cache.partial_meta_path(name)):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()  # a link is removed, never its target
    cache.drop(name)


def _clear_unsafe_partial(part: Path, say: NotifyFn) -> None:
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


def _hash_file(path: Path, progress: ProgressFn, stage: str, limit: int | None = None) -> str:
    h = hashlib.sha256()
    _hash_into(h, path, progress, stage, limit)
    return h.hexdigest()


def _hash_into(h: Any, path: Path, progress: ProgressFn, stage: str, limit: int | None = None) -> int:
    """Hash ``path`` (a regular file, never read through a link) into ``h``; the bytes read."""
    buf = bytearray(CHUNK)  # hashed while in the CPU's cache: 1.8 GB/s here, 1.4 with 8 MiB
    view = memoryview(buf)
    done = 0
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(open_regular(path, follow_links=False))
        except UnsafeInput as e:
            raise CacheError(f"refusing to read {e}",
                             hint="someone else writes into this cache: download again") from None
        total = os.fstat(f.fileno()).st_size if limit is None else limit
        while done < total:
            n = f.readinto(view[: min(len(buf), total - done)])
            if not n:
                break
            h.update(view[:n])
            done += n
            progress(stage, done, total)
    return done


# -- the transfer ----------------------------------------------------------------------------


class _Retry(Exception):
    """An attempt failed in a way another attempt may mend."""

    def __init__(self, reason: str, gained: int = 0):
        super().__init__(reason)
        self.reason = reason
        self.gained = gained


class _StartOver(Exception):
    """The partial file cannot be continued; the next attempt starts from byte 0."""


def _env_number(var: str, default: float) -> float:
    raw = os.environ.get(var)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"{var} must be a number, not '{raw}'") from None


def _download(cache: Cache, target: _Target, pinned: str | None, progress: ProgressFn,
              say: NotifyFn, connections: int = 1, slots: Any = None) -> CachedFile:
    import requests

    from msn_cli import __version__

    retries = int(_env_number("MSN_DOWNLOAD_RETRIES", RETRIES))
    read_timeout = _env_number("MSN_DOWNLOAD_TIMEOUT", READ_TIMEOUT)
    part = cache.partial_path(target.name)
    meta_path = cache.partial_meta_path(target.name)
    _clear_unsafe_partial(part, say)
    try:
        note = read_partial_note(meta_path)
    except DamagedNote as e:
        note = None
        say(f"the note of a partial {target.name} is damaged ({e}); starting over")
        _discard_partial(part, meta_path)
    if part.exists() and (note is None or note.url != target.shown):
        say(f"discarding a partial {target.name} that came from another URL" if note else
            f"discarding a partial {target.name} with no note of where it came from")
        part.unlink()
    resumed_from = part.stat().st_size if part.exists() else 0
    if resumed_from and note is not None and note.have is not None:
        resumed_from = note.have  # a segmented transfer: its file is preallocated

    def new_session() -> Any:
        s = requests.Session()
        s.headers.update({"User-Agent": f"msn-cli/{__version__}", "Accept-Encoding": "identity"})
        return s

    session = new_session()
    failures = attempts = 0
    state: dict[str, Any] = {"restarted": False, "single": False, "split": False, "rate": None}
    below = _env_number("MSN_DOWNLOAD_SPLIT_BELOW", SPLIT_BELOW)
    probe = _env_number("MSN_DOWNLOAD_SPLIT_PROBE", SPLIT_PROBE)
    for var, value in (("MSN_DOWNLOAD_SPLIT_BELOW", below), ("MSN_DOWNLOAD_SPLIT_PROBE", probe)):
        if not 0 <= value < float("inf"):
            raise UsageError(f"{var} must be a number of 0 or more, not '{os.environ[var]}'")
    split = _Split(connections, int(_env_number("MSN_DOWNLOAD_SPLIT_MIN", SPLIT_MIN)), retries,
                   new_session, slots, below * 1e6, probe)
    # Attempts that gained bytes do not use up the retries, but the total stays bounded.
    max_attempts = 1 if retries <= 0 else 4 * (retries + 1)
    try:
        while True:
            attempts += 1
            try:
                digest, size = _attempt(session, target, part, meta_path, (CONNECT_TIMEOUT, read_timeout),
                                        progress, say, state, split)
                break
            except _FallBack as e:
                say(f"{e}; downloading {target.name} again with one connection")
                state["single"] = True
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                resumed_from = 0
                continue
            except _StartOver:
                with contextlib.suppress(FileNotFoundError):
                    part.unlink()
                resumed_from = 0
                if attempts >= max_attempts:
                    raise DownloadError(f"download of {target.name} kept restarting; giving up") from None
                continue
            except _Retry as e:
                failures = 0 if e.gained > 0 else failures + 1
                have = part.stat().st_size if part.exists() else 0
                if failures > retries or attempts >= max_attempts:
                    raise DownloadError(
                        f"download of {target.name} from {target.shown} failed after {attempts} "
                        f"attempt{'s' if attempts != 1 else ''}: {e.reason}",
                        hint=(f"run the same command again to resume from byte {have:,}" if have
                              else "check the network (or --base-url / MSN_BASE_URL) and try again"),
                    ) from None
                delay = min(BACKOFF * 2 ** max(failures - 1, 0), BACKOFF_MAX)
                say(f"{e.reason}; retrying in {delay:.1f}s (attempt {attempts + 1})")
                time.sleep(delay)
    finally:
        session.close()

    if pinned is not None and digest != pinned:
        _discard_partial(part, meta_path)
        raise DownloadError(
            f"{target.name} from {target.shown} has sha256 {digest}, not the expected {pinned}; "
            "the download was deleted",
            hint="check the --sha256 value; if it is right, the server sent a different file")
    kind = sniff(part)
    if kind.startswith(("an HTML", "a git-lfs")):
        # a 200 response that is an error or login page, or an un-fetched LFS pointer: never
        # let it into the cache as if it were the checkpoint
        _discard_partial(part, meta_path)
        raise DownloadError(f"{target.shown} sent {kind}, not a checkpoint; nothing was cached",
                            hint="check the URL (or --base-url / MSN_BASE_URL)")
    final = cache.file_path(target.name)
    if not stat.S_ISREG(part.lstat().st_mode):  # swapped for a link since it was written
        _discard_partial(part, meta_path)
        raise CacheError(f"{part} was replaced by something else than the download; nothing was "
                         "cached", hint="someone else writes into this cache: download again")
    os.replace(part, final)
    entry = CacheEntry(target.name, target.shown, size, digest, now_iso(), target.variant)
    cache.put(entry)
    with contextlib.suppress(FileNotFoundError):
        meta_path.unlink()
    return CachedFile(entry.name, final, entry.url, digest, size, entry.downloaded_at, target.variant,
                      downloaded=True, resumed_from=0 if state["restarted"] else resumed_from,
                      verified=True, split=state["split"], first_rate=state["rate"])


def _open_partial_fd(part: Path) -> int:
    """``part`` for writing (``os.pwrite``), created if missing, never through a link; only a
    regular file."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags, 0o644)
    except OSError as e:
        if part.is_symlink():
            raise CacheError(f"{part} became a symbolic link; msn does not write through it",
                             hint="someone else writes into this cache: download again") from None
        raise e
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise CacheError(f"{part} is not a regular file; msn does not write into it")
    return fd


def _discard_partial(part: Path, meta_path: Path) -> None:
    for p in (part, meta_path):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


_CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
_UNSATISFIED = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.I)


def _attempt(session: Any, target: _Target, part: Path, meta_path: Path, timeout: tuple[float, float],
             progress: ProgressFn, say: NotifyFn, state: dict[str, Any], split: _Split) -> tuple[str, int]:
    """One request: resume or start the partial file, stream it to the end, return (sha256, size)."""
    import requests

    _BROKEN = _broken_errors()
    have = part.stat().st_size if part.exists() else 0
    note: PartialNote | None = None
    if have:
        try:
            note = read_partial_note(meta_path)
        except DamagedNote:
            raise _StartOver() from None
        if note is not None and note.segments is not None:  # a segmented transfer: resume it
            state["split"] = True
            return _segmented(_Job(target, part, meta_path, timeout, progress, say, split, note))
    headers = {}
    if note is not None:
        headers["Range"] = f"bytes={have}-"
        validator = note.etag or note.last_modified
        if validator:
            headers["If-Range"] = validator
    elif have:
        raise _StartOver()
    try:
        r = session.get(target.url, headers=headers, stream=True, timeout=timeout)
    except requests.exceptions.InvalidURL as e:
        raise UsageError(f"invalid URL {target.shown}: {redact(str(e))}") from None
    except (requests.ConnectionError, requests.Timeout) as e:
        raise _Retry(f"cannot reach {_host(target.shown)} ({_short(e)})") from None
    with r:
        status = r.status_code
        if status == 416 and have:
            m = _UNSATISFIED.match(r.headers.get("Content-Range", ""))
            if m and int(m.group(1)) == have and note is not None and note.total == have:
                # The earlier run had every byte; it stopped before the checks.
                return _hash_file(part, progress, target.name), have
            say(f"the server refused to resume {target.name}; starting over")
            raise _StartOver()
        if status >= 500 or status in (408, 429):
            raise _Retry(f"the server answered HTTP {status} {r.reason or ''}".rstrip())
        if status >= 400:
            hint = ("check the name or URL" + (", and --base-url / MSN_BASE_URL" if target.variant
                                                else ""))
            raise DownloadError(f"{target.shown}: HTTP {status} {r.reason or ''}".rstrip(), hint=hint)
        if status == 206 and have:
            m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
            if not m or int(m.group(1)) != have:
                say(f"the server sent another range of {target.name} than asked; starting over")
                raise _StartOver()
            total = None if m.group(3) == "*" else int(m.group(3))
            if note is not None and note.total is not None and total is not None \
                    and note.total != total:
                say(f"{target.name} changed size on the server; starting over")
                raise _StartOver()
            say(f"resuming {target.name} from byte {have:,}")
        elif status == 200:
            if have:
                say(f"the server does not support resuming; downloading {target.name} from the start")
                have = 0
                state["restarted"] = True
                state["single"] = True  # it ignores Range: splitting would not work either
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        else:
            raise DownloadError(f"{target.shown}: unexpected HTTP {status} {r.reason or ''}".rstrip())

        if total is not None:
            free = disk_free(part.parent)
            if free is not None and free < total - have:
                raise CacheError(
                    f"not enough space for {target.name} in {part.parent}: it needs "
                    f"{total - have:,} more bytes and {free:,} are free",
                    hint="free some space (msn cache rm ...) or use --cache-dir / MSN_CACHE elsewhere")
        etag, modified = r.headers.get("ETag"), r.headers.get("Last-Modified")
        # A large file from a server that offers ranges and a validator may be split, but only
        # if its first stream turns out slow: it is measured while it runs (see SPLIT_BELOW).
        measure = (not state["single"] and total is not None and split.connections > 1
                   and total >= split.split_min and split.below > 0
                   and (status == 206 or r.headers.get("Accept-Ranges", "").strip().lower() == "bytes")
                   and _validator(etag, modified) is not None)
        started_at = (note.started_at if note else None) or now_iso()
        write_partial_meta(meta_path, {"url": target.shown, "etag": etag,
                                       "last_modified": modified, "total": total,
                                       "started_at": started_at})
        h = hashlib.sha256()
        if have:
            if _hash_into(h, part, progress, f"checking partial {target.name}", have) != have:
                raise _StartOver()
        done = start = have
        progress(target.name, done, total)
        read = _body_reader(r)
        split_now = measure and split.probe <= 0
        since: tuple[float, int] | None = None  # (time, bytes) where the measured window starts
        fd = _open_partial_fd(part)
        try:
            if os.fstat(fd).st_size != have:
                # Only when there is something to cut: on ext4, truncating a file to 0 bytes
                # (even an empty one) makes its close() start writing back every dirty page
                # of it (auto_da_alloc), which cost 0.38 s of 1.9 at the end of a 1.2 GB
                # download here.
                os.ftruncate(fd, have)
            pipe = _HashPipe(h)
            buf, fill = None, 0
            try:
                buf = pipe.take()
                while not split_now:
                    # Each arrival is written at once (a broken connection loses nothing that
                    # came); the hash gets the buffer when it is full.
                    n = read(memoryview(buf)[fill:])
                    if not n:
                        break
                    _write_at(fd, memoryview(buf)[fill:fill + n], done, part)
                    fill += n
                    done += n
                    if fill == len(buf):
                        pipe.put(buf, fill)
                        progress(target.name, done, total)
                        buf, fill = None, 0
                        buf = pipe.take()
                    if measure:
                        now = time.monotonic()
                        if since is None:
                            since = (now, done)  # from the first byte: the request's round
                            # trip and the server's start are not the stream's rate
                        elif now - since[0] >= split.probe:
                            state["rate"] = rate = (done - since[1]) / (now - since[0])
                            if rate >= split.below or done >= (total or 0):
                                measure = False  # fast: one stream to the end
                            elif _free_slot(split.slots):
                                split_now = True
                            else:  # the shared budget is all in use (other files): this
                                # stream goes on and is measured again, since its rate may
                                # have been low only because others shared the link
                                since = (now, done)
            finally:
                if buf is not None:
                    pipe.put(buf, fill)
                progress(target.name, done, total)
                pipe.close()  # everything written is hashed before anything else happens
        except _BROKEN as e:
            raise _Retry(f"the connection broke after {done:,} bytes ({_short(e)})",
                         gained=done - start) from None
        finally:
            os.close(fd)
        if split_now:  # the rest of the file over several connections, this one included
            assert total is not None
            rate = state["rate"]
            if rate is not None:
                say(f"{target.name} comes at {rate / 1e6:.1f} MB/s over one connection; "
                    f"splitting the rest over up to {split.connections} connections")
            note = PartialNote(target.shown, etag, modified, total, started_at,
                               ((0, done),) if done else ())
            job = _Job(target, part, meta_path, timeout, progress, say, split, note, fresh=True)
            state["split"] = True
            return _segmented(job, (r, read), h)
    if total is not None and done != total:
        if done < total:
            raise _Retry(f"the body ended after {done:,} of {total:,} bytes", gained=done - start)
        raise _StartOver()
    return h.hexdigest(), done


# -- segmented transfer ----------------------------------------------------------------------


class _FallBack(Exception):
    """The server answered a ranged request with the whole file: use one stream."""


class _GaveUp(DownloadError):
    """One segment used up its retries: its worker stops, the others finish what they can."""


@dataclass(frozen=True)
class _Split:
    connections: int
    split_min: int
    retries: int
    new_session: Callable[[], Any]
    slots: Any = None
    """Connections shared with other files fetched at once (a semaphore), or None."""
    below: float = SPLIT_BELOW * 1e6
    """Bytes per second: a first stream slower than this has the rest of its file split."""
    probe: float = SPLIT_PROBE
    """Seconds of the first stream measured before deciding (0: split at once)."""


@dataclass(frozen=True)
class _Job:
    target: _Target
    part: Path
    meta_path: Path
    timeout: tuple[float, float]
    progress: ProgressFn
    say: NotifyFn
    split: _Split
    note: PartialNote
    """The transfer's note: url, validators, total, and the ranges already written."""
    fresh: bool = False
    """The ranges in ``note`` came from this run's first stream (not from an earlier run), so a
    range answered with 200 means the server ignores ranges, not that the file changed."""


def _validator(etag: str | None, last_modified: str | None) -> str | None:
    """What ``If-Range`` sends: a strong ETag, else Last-Modified (a weak ETag cannot guard)."""
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified or None


def _free_slot(slots: Any) -> bool:
    """Whether a connection of the shared budget is free now (always, without one)."""
    if slots is None:
        return True
    if not slots.acquire(blocking=False):
        return False
    slots.release()
    return True


def _cut(gaps: list[tuple[int, int]], seg: int) -> Iterator[tuple[int, int]]:
    """The ranges of ``gaps`` cut at every multiple of ``seg`` (the same grid whatever was
    there before: a range that starts midway ends where a whole one would)."""
    for a, b in gaps:
        while a < b:
            end = min((a // seg + 1) * seg, b)
            yield a, end
            a = end


def _missing(done: list[tuple[int, int]], total: int) -> list[tuple[int, int]]:
    out, pos = [], 0
    for a, b in done:
        if a > pos:
            out.append((pos, a))
        pos = b
    if pos < total:
        out.append((pos, total))
    return out


class _Ledger:
    """What a segmented transfer has written, shared by its workers (all under one lock).

    ``add`` records a written range, reports progress and rewrites the partial note every
    ``NOTE_EVERY`` bytes; ``prefix`` is where the contiguous start of the file ends.
    """

    def __init__(self, job: _Job, total: int):
        import threading

        self.job, self.total = job, total
        self.done: list[tuple[int, int]] = list(job.note.segments or ())
        self.bytes = sum(b - a for a, b in self.done)
        self.noted = self.bytes
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.responses: set[Any] = set()
        self.want = 0
        """The hasher waits for the contiguous start to reach this."""

    def add(self, a: int, b: int) -> None:
        with self.cond:
            merged: list[tuple[int, int]] = []
            for s, e in self.done:
                if e < a or s > b:
                    merged.append((s, e))
                else:
                    a, b = min(a, s), max(b, e)
            merged.append((a, b))
            merged.sort()
            self.done = merged
            self.bytes = sum(e - s for s, e in merged)
            self.job.progress(self.job.target.name, self.bytes, self.total)
            if self.bytes - self.noted >= NOTE_EVERY:
                self.write_note()
            if self.prefix() >= self.want:  # wake the hasher only for a batch worth hashing
                self.cond.notify_all()

    def prefix(self) -> int:
        return self.done[0][1] if self.done and self.done[0][0] == 0 else 0

    def write_note(self) -> None:
        n = self.job.note
        with self.cond:
            write_partial_meta(self.job.meta_path, {
                "url": n.url, "etag": n.etag, "last_modified": n.last_modified, "total": self.total,
                "started_at": n.started_at, "segments": [list(r) for r in self.done]})
            self.noted = self.bytes

    def fail(self, e: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = e
            self.stop.set()
            for r in list(self.responses):
                with contextlib.suppress(Exception):
                    r.close()  # wakes a worker blocked on its socket
            self.cond.notify_all()


def _segmented(job: _Job, first: tuple[Any, Callable[[memoryview], int]] | None = None,
               digest: Any = None) -> tuple[str, int]:
    """Fetch the missing ranges of ``job.part`` over ``job.split.connections`` connections.

    ``first``: this run's first stream, measured and found slow: its response and body reader,
    whose next byte is the first one ``job.note`` lacks (the file holds the bytes before it,
    and ``digest`` is their sha256). It goes on as the first range; the other connections take
    the rest. Without it, an earlier run's partial file is resumed. Each range is written at its
    offset into the preallocated partial file; the sha256 covers the whole file, in order.
    Returns (sha256, size).
    """
    import threading
    from collections import deque

    note, say, name = job.note, job.say, job.target.name
    total = note.total
    validator = _validator(note.etag, note.last_modified)
    if total is None or validator is None:
        raise _StartOver()
    fd = _open_partial_fd(job.part)
    closing = True
    try:
        ledger = _Ledger(job, total)
        size = os.fstat(fd).st_size
        if first is None and size != total and not (
                size < total and all(b <= size for _, b in ledger.done)):
            say(f"the partial {name} is not the size its note says; starting over")
            raise _StartOver()
        if first is None:
            say(f"resuming {name}: {ledger.bytes:,} of {total:,} bytes are there")
        # The note lists the ranges before the file grows to its full size: a run killed in
        # between leaves a short file whose note is right (extended when resumed), never a
        # full-size file of zeros that a one-stream note would take for complete.
        ledger.write_note()
        if size != total:
            os.ftruncate(fd, total)  # sparse: the disk check before this made sure it fits
        conns = job.split.connections
        seg = max(SEGMENT_MIN, min(SEGMENT_MAX, total // (conns * 4) or 1))
        pieces = deque(_cut(_missing(ledger.done, total), seg))
        head = None
        if first is not None and pieces and pieces[0][0] == ledger.prefix():
            head = pieces.popleft()
            if head[1] - head[0] < seg // 2 and pieces and pieces[0][0] == head[1]:
                head = (head[0], pieces.popleft()[1])  # no request for a sliver
        job.progress(name, ledger.bytes, total)

        slots = job.split.slots

        def worker(main: bool, initial: tuple[int, int] | None, response: Any) -> None:
            """Fetch pieces until none is left. The main worker uses the file's own connection;
            the others each take one from the shared budget (``slots``) per piece."""
            session = job.split.new_session()
            buf = bytearray(CHUNK)  # this worker's receive buffer, reused for every piece
            try:
                piece = initial
                while not ledger.stop.is_set():
                    extra = piece is None and not main and slots is not None
                    if extra:
                        while not slots.acquire(timeout=0.2):
                            if ledger.stop.is_set() or not pieces:
                                return
                    try:
                        if piece is None:
                            with ledger.cond:
                                if not pieces:
                                    return
                                piece = pieces.popleft()
                        _fetch_range(job, session, fd, ledger, piece, validator, buf, response)
                        piece = response = None
                    finally:
                        if extra:
                            slots.release()
            except _GaveUp as e:
                with ledger.cond:
                    ledger.error = ledger.error or e
                    ledger.cond.notify_all()
            except BaseException as e:
                ledger.fail(e)
            finally:
                session.close()

        threads = [threading.Thread(target=worker, name=f"msn-download-{i}", daemon=True,
                                    args=(i == 0, *((head, first) if i == 0 and head else (None, None))))
                   for i in range(max(1, min(conns, len(pieces) + (head is not None))))]
        if first is not None and head is None:
            first[0].close()
        hashed = ledger.prefix() if digest is not None else 0  # what ``digest`` covers
        digest = (hashlib.sha256() if digest is None else digest) if HASH_IN_ORDER else None
        hasher = None
        if digest is not None:
            hasher = threading.Thread(target=_hash_prefix,
                                      args=(job.part, ledger, digest, threads, hashed),
                                      name="msn-download-hash", daemon=True)
        try:
            for t in threads:
                t.start()
            if hasher is not None:
                hasher.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.2)
            if hasher is not None:
                while hasher.is_alive():
                    hasher.join(0.2)
        except BaseException as e:  # Ctrl-C, SIGTERM: stop the workers, keep what arrived
            ledger.fail(e)
            raise
        finally:
            ledger.stop.set()
            for t in threads:
                t.join(2.0)
            closing = not any(t.is_alive() for t in threads)  # never close an fd still written
            with contextlib.suppress(OSError):
                ledger.write_note()
        if isinstance(ledger.error, _GaveUp):  # say what the other segments kept meanwhile
            raise DownloadError(ledger.error.message,
                                hint=f"run the same command again to resume: {ledger.bytes:,} of "
                                     f"{total:,} bytes are kept")
        if ledger.error is not None:
            raise ledger.error
        if ledger.bytes != total:
            raise _Retry(f"the segments ended with {ledger.bytes:,} of {total:,} bytes")
    finally:
        if closing:
            os.close(fd)
    if digest is None:
        return _hash_file(job.part, job.progress, f"hashing {name}"), total
    return digest.hexdigest(), total


def _hash_prefix(part: Path, ledger: _Ledger, h: Any, workers: list[Any], pos: int = 0) -> None:
    """Hash the file in order from ``pos`` (``h`` holds the bytes before it) as its contiguous
    start grows (reads what the workers wrote, from the page cache)."""
    import threading

    with contextlib.suppress(AttributeError, OSError):  # Linux: a thread has its own nice value
        # The lowest CPU priority: where the CPU is idle (a slow network) the hash keeps up with
        # the transfer; where the transfer itself needs every core, it waits its turn.
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    try:
        with open_regular(part, follow_links=False) as f:
            while pos < ledger.total:
                with ledger.cond:
                    ledger.want = min(pos + HASH_BATCH, ledger.total)
                    while ledger.prefix() < ledger.want and not ledger.stop.is_set():
                        if not any(t.is_alive() for t in workers) and ledger.prefix() < ledger.want:
                            return  # the workers ended short: the caller reports it
                        ledger.cond.wait(0.2)
                    if ledger.stop.is_set():
                        return
                    end = ledger.prefix()
                while pos < end:
                    n = os.preadv(f.fileno(), [view[: min(len(buf), end - pos)]], pos)
                    if not n:
                        raise _Retry(f"{part.name} is shorter than what was written")
                    h.update(view[:n])
                    pos += n
    except UnsafeInput as e:
        ledger.fail(CacheError(f"refusing to read {e}",
                               hint="someone else writes into this cache: download again"))
    except BaseException as e:
        ledger.fail(e)


def _fetch_range(job: _Job, session: Any, fd: int, ledger: _Ledger, piece: tuple[int, int],
                 validator: str, buf: bytearray,
                 response: tuple[Any, Callable[[memoryview], int]] | None = None) -> None:
    """Fetch ``[start, end)`` into ``fd`` at its offset through ``buf``, retrying with backoff.

    ``response``: an open answer (and its body reader) whose body goes on at ``start``, used
    for the first try."""
    import requests

    broken = _broken_errors()
    pos, end = piece
    failures = 0
    view = memoryview(buf)
    url, shown = job.target.url, job.target.shown
    while pos < end and not ledger.stop.is_set():
        gained = 0
        try:
            if response is not None:
                r, read = response
                response = None
            else:
                r = session.get(url, headers={"Range": f"bytes={pos}-{end - 1}", "If-Range": validator},
                                stream=True, timeout=job.timeout)
                _check_range(job, r, pos)
                read = _body_reader(r)
            with ledger.cond:
                ledger.responses.add(r)
            fill = 0  # written into the file but not yet in the ledger
            try:
                while pos < end:
                    if ledger.stop.is_set():
                        return
                    n = read(view[fill: fill + min(len(view) - fill, end - pos)])
                    if not n:
                        break
                    _write_at(fd, view[fill:fill + n], pos, job.part)
                    fill += n
                    gained += n
                    pos += n
                    if fill == len(view) or pos >= end:
                        ledger.add(pos - fill, pos)
                        fill = 0
            finally:
                if fill:  # a break or a stop: what arrived is kept
                    ledger.add(pos - fill, pos)
                with ledger.cond:
                    ledger.responses.discard(r)
                r.close()
            if pos < end:
                raise _Retry(f"a segment's body ended after {gained:,} bytes")
        except _Retry as e:
            reason = e.reason
        except requests.exceptions.InvalidURL as e:
            raise UsageError(f"invalid URL {shown}: {redact(str(e))}") from None
        except broken as e:
            if ledger.stop.is_set():
                return
            reason = f"a connection broke at byte {pos:,} ({_short(e)})"
        else:
            ledger.write_note()  # a finished segment is never fetched again
            return
        failures = 0 if gained else failures + 1
        if failures > job.split.retries:
            raise _GaveUp(
                f"download of {job.target.name} from {shown} failed: {reason} "
                f"({failures} attempt{'s' if failures != 1 else ''} at that segment)")
        delay = min(BACKOFF * 2 ** max(failures - 1, 0), BACKOFF_MAX)
        job.say(f"{reason}; retrying that segment in {delay:.1f}s")
        if ledger.stop.wait(delay):
            return


def _check_range(job: _Job, r: Any, start: int) -> None:
    """A ranged answer is the asked range of the same file, or the transfer cannot go on."""
    status, name = r.status_code, job.target.name
    if status == 206:
        m = _CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
        etag = r.headers.get("ETag")
        if not m or int(m.group(1)) != start:
            r.close()
            job.say(f"the server sent another range of {name} than asked; starting over")
            raise _StartOver()
        if (m.group(3) != "*" and int(m.group(3)) != job.note.total) or (
                etag and job.note.etag and etag != job.note.etag):
            r.close()
            job.say(f"{name} changed on the server; starting over")
            raise _StartOver()
        return
    r.close()
    if status == 200:
        if job.note.segments and not job.fresh:  # resumed: the file changed (If-Range) or
            # ranges stopped working
            job.say(f"{name} changed on the server (or it no longer serves ranges); starting over")
            raise _StartOver()
        raise _FallBack("the server answered a ranged request with the whole file")
    if status == 416:
        job.say(f"the server refused a range of {name}; starting over")
        raise _StartOver()
    if status >= 500 or status in (408, 429):
        raise _Retry(f"the server answered HTTP {status} {r.reason or ''}".rstrip())
    raise DownloadError(f"{job.target.shown}: HTTP {status} {r.reason or ''}".rstrip(),
                        hint="check the name or URL")


class _HashPipe:
    """Hashes received buffers in order on a thread of its own while the next ones arrive.

    The receiving thread takes a free buffer, reads the socket into it, writes it to the file
    and hands it over; the hash thread updates the digest and frees the buffer. ``readinto``,
    ``pwrite`` and ``hashlib`` all release the GIL on large buffers, so on two cores receiving
    and hashing overlap (each costs about 0.6 CPU-s per GB here). ``count`` buffers of
    ``CHUNK`` bytes are all the memory it ever uses: when the hash falls behind, ``take`` waits.
    """

    def __init__(self, h: Any, count: int = 4, size: int = CHUNK):
        import queue
        import threading

        self._h = h
        self._free: queue.Queue[bytearray] = queue.Queue()
        for _ in range(count):
            self._free.put(bytearray(size))
        self._full: queue.Queue[tuple[bytearray, int] | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="msn-download-hash", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self._full.get()
            if item is None:
                return
            buf, n = item
            try:
                if self._error is None:
                    self._h.update(memoryview(buf)[:n])
            except BaseException as e:
                self._error = e
            finally:
                self._free.put(buf)

    def take(self) -> bytearray:
        if self._error is not None:
            raise self._error
        return self._free.get()

    def put(self, buf: bytearray, n: int) -> None:
        self._full.put((buf, n))

    def close(self) -> None:
        self._full.put(None)
        self._thread.join()
        if self._error is not None:
            raise self._error


_pwrite = os.pwrite
WRITE_CHUNK = 32 * 1024
"""Bytes per ``pwrite``. What arrives is received into 1 MiB buffers but written in these
pieces: on Linux 6.18 / ext4 a 1 MiB write makes the kernel allocate large page-cache folios,
and on the benchmark machine that made one uncapped stream vary between 316 and 520 MB/s; 16
to 64 KiB writes (curl writes 16 KiB) ran at 650 to 935 MB/s, 32 KiB at 891 to 928 (3 runs
each, alternating, 1.2 GB from 127.0.0.1)."""


def _write_at(fd: int, view: memoryview, pos: int, part: Path) -> None:
    """All of ``view`` into ``fd`` at ``pos``; a failing disk is a CacheError (never a retry)."""
    while view:
        try:
            k = _pwrite(fd, view[:WRITE_CHUNK], pos)
        except OSError as e:
            raise CacheError(
                f"cannot write {part}: {e.strerror or e}",
                hint="free some space or use --cache-dir / MSN_CACHE elsewhere; what was written "
                     "is kept and the next run resumes from it") from None
        view, pos = view[k:], pos + k


def _body_reader(r: Any) -> Callable[[memoryview], int]:
    """``readinto`` for a streamed response's body: whatever has arrived (at least one byte,
    0 at the end), undecoded (the bytes on the server, as ``curl -o`` saves them).

    For a body of known length under the standard library's response (``r.raw._fp`` in
    urllib3 1.x and 2.x), one ``recv`` goes straight into the caller's buffer: no copy and no
    allocation in between, which is what lets one stream keep up with curl. Anything else
    (chunked bodies, other transports) goes through :func:`_chunks` and one copy.
    """
    import http.client
    import io

    fp = getattr(r.raw, "_fp", None)
    raw = getattr(fp, "fp", None)
    if (isinstance(fp, http.client.HTTPResponse) and not fp.chunked
            and isinstance(fp.length, int) and isinstance(raw, io.BufferedReader)):
        left = fp.length

        def direct(view: memoryview) -> int:
            nonlocal left
            if left <= 0 or not view:
                return 0
            n = raw.readinto1(view[: min(len(view), left)])
            left -= n
            return n

        return direct
    chunks = _chunks(r)
    pending = memoryview(b"")

    def readinto(view: memoryview) -> int:
        nonlocal pending
        if not pending:
            pending = memoryview(next(chunks, b""))
            if not pending:
                return 0
        n = min(len(view), len(pending))
        view[:n] = pending[:n]
        pending = pending[n:]
        return n

    return readinto


def _chunks(r: Any) -> Iterator[bytes]:
    """The body as it arrives, undecoded (the bytes on the server, as ``curl -o`` saves them).

    ``read1`` hands over whatever the socket has, so a broken connection loses nothing that
    arrived before the break; without it (urllib3 < 2) smaller chunks keep the loss small.
    """
    read1 = getattr(r.raw, "read1", None)
    if read1 is None:
        r.raw.decode_content = False
        yield from r.raw.stream(64 * 1024, decode_content=False)
        return
    while True:
        chunk = read1(CHUNK, decode_content=False)
        if not chunk:
            return
        yield chunk


def _broken_errors() -> tuple[type[BaseException], ...]:
    import http.client

    import requests
    import urllib3.exceptions

    return (http.client.HTTPException, requests.ConnectionError, requests.Timeout,
            requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
            urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.DecodeError, ConnectionError,
            TimeoutError)


def _host(url: str) -> str:
    from urllib.parse import urlsplit

    return urlsplit(url).netloc or url


def _short(e: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, in a few words."""
    for _ in range(6):
        inner = getattr(e, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in getattr(e, "args", ()) if isinstance(a, BaseException)), None)
        if inner is None:
            break
        e = inner
    if type(e).__name__ == "IncompleteRead":
        return "the body ended early"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror[0].lower() + e.strerror[1:]
    text = redact(str(e).strip()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."
