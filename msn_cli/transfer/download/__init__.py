"""Download released checkpoints (or any http(s) URL) into the shared cache.

:func:`fetch` is the one entry point (:func:`fetch_many` runs several within one budget of
connections). What it does, in order:

1. Resolve the spec (:mod:`.target`): a released name (``vits16``) becomes
   ``<base-url>/<file name>``, where the base URL is ``base_url``, else ``$MSN_BASE_URL``, else
   Meta's server; a URL stays a URL.
2. Already in the cache with the size the index recorded: return it. No network, no hashing
   (unless ``verify``), the sha256 comes from the index.
3. Offline (``MSN_OFFLINE=1`` or ``HF_HUB_OFFLINE=1``): stop with an error that says how to get
   the file. Nothing below touches the network.
4. Take the entry's file lock. Another process downloading the same file makes this one wait;
   when the lock comes, a finished entry from that process is used as is.
5. Attempts (:mod:`.run`), each one stream (:mod:`.stream`): the body goes in chunks into
   ``partial/<name>.part`` and into a running sha256. A partial file left by an earlier run is
   resumed with a ``Range`` request (guarded by ``If-Range`` when the server gave an ETag or
   Last-Modified); its bytes are hashed first so that no second pass is needed. A server that
   answers 200 instead of 206 is followed by starting over. Connection errors, timeouts and
   5xx answers are retried a bounded number of times with exponential backoff, resuming each
   time from what arrived.
   A file of at least ``SPLIT_MIN`` bytes, from a server that offers ranges and a validator,
   starts the same way, but its stream is measured over its first ``SPLIT_PROBE`` seconds;
   below ``SPLIT_BELOW`` MB/s the rest is split (:mod:`.segments`): the first stream goes on
   as the first range and ``connections`` workers in all fetch the others, each written at its
   offset into the preallocated partial file; the note (:mod:`msn_cli.transfer.partial`) lists
   the finished ranges so that a later run fetches only the missing ones.
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
import functools
import os
import threading
from collections.abc import Callable, Iterator

from msn_cli.errors import CacheError, DownloadError, MsnError, OfflineError
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.cache import Cache
from msn_cli.transfer.download.context import NotifyFn
from msn_cli.transfer.download.partfile import discard
from msn_cli.transfer.download.settings import download_connections
from msn_cli.transfer.download.target import CachedFile, Target, check_sha256, resolve_target
from msn_cli.transfer.offline import offline_variable
from msn_cli.util.hashing import sha256_file
from msn_cli.util.safeio import UnsafeInput, strip_credentials

__all__ = ["TOTAL_STAGE", "CachedFile", "download_connections", "fetch", "fetch_many"]

TOTAL_STAGE = "all files"
"""The progress stage under which :func:`fetch_many` reports the bytes of all its files."""


def fetch(spec: str, *, cache_dir: str | os.PathLike[str] | None = None, base_url: str | None = None,
          sha256: str | None = None, force: bool = False, verify: bool = False,
          progress: ProgressFn = no_progress, notify: NotifyFn | None = None,
          connections: int | None = None, _slots: threading.Semaphore | None = None) -> CachedFile:
    """The cached file for ``spec`` (a released name or an http(s) URL), downloading it if needed.

    ``sha256`` pins the expected hash; ``force`` downloads again even when cached; ``verify``
    re-hashes a cached file (a damaged one is downloaded again). ``progress`` receives
    ``(file name, bytes done, total or None)``; ``notify`` receives one-line messages (resuming,
    retrying, waiting for another process). ``connections``: concurrent ranged requests for a
    file of at least ``SPLIT_MIN`` bytes whose first stream is slower than ``SPLIT_BELOW``
    (None: ``MSN_DOWNLOAD_CONNECTIONS``, else 4).
    """
    say = notify or _silent
    conns = download_connections(connections)
    cache = Cache(cache_dir)
    target = resolve_target(spec, cache, base_url)
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
    # Imported here: the transfer needs requests, whose import a cache hit need not pay for.
    from msn_cli.transfer.download.run import download

    cache.ensure()
    with _locked(cache, target.name, say):
        if force:  # the cached file stays until the new one is complete and replaces it
            discard(cache.partial_path(target.name), cache.partial_meta_path(target.name))
        else:
            # Another process may have finished it while this one waited (said nothing new).
            hit = _lookup(cache, target, pinned, False, progress, _silent)
            if hit is not None:
                return hit
        return download(cache, target, pinned, progress, say, conns, _slots)


def _silent(message: str) -> None:
    """The default ``notify``: says nothing."""


@contextlib.contextmanager
def _locked(cache: Cache, name: str, say: NotifyFn) -> Iterator[None]:
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


def _lookup(cache: Cache, target: Target, pinned: str | None, verify: bool,
            progress: ProgressFn, say: NotifyFn) -> CachedFile | None:
    """The cached file when the index has it whole (and, with ``verify``, its bytes match)."""
    entry = cache.get(target.name)
    if entry is None and cache.file_path(target.name).exists():
        entry = cache.adopt(target.name, progress)  # a file the index lost: hashed once, kept
    if entry is None:
        return None
    if not cache.intact(entry):
        say(f"the cached {target.name} is missing or its size differs from the index; "
            "downloading it again")
        return None
    if verify:
        digest = _sha256(cache, entry.name, progress)
        if digest != entry.sha256:
            say(f"the cached {entry.name} is damaged (sha256 {digest[:12]}..., the index says "
                f"{entry.sha256[:12]}...); downloading it again")
            cache.remove(entry.name)
            return None
    if pinned is not None and entry.sha256 != pinned:
        raise DownloadError(
            f"the cached {entry.name} has sha256 {entry.sha256}, not the expected {pinned}",
            hint=f"if the expected hash is right, the server sent another file; "
                 f"'msn download {target.variant or entry.url} --force' downloads it again")
    return CachedFile(entry.name, cache.file_path(entry.name), entry.url, entry.sha256, entry.size,
                      entry.downloaded_at, entry.variant or target.variant, verified=verify)


def _sha256(cache: Cache, name: str, progress: ProgressFn) -> str:
    try:
        return sha256_file(cache.file_path(name), progress, f"verifying {name}")
    except UnsafeInput as e:
        raise CacheError(f"refusing to read {e}",
                         hint="someone else writes into this cache: download again") from None


# -- several files at once ---------------------------------------------------------------------


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
    conns = download_connections(connections)
    cache = Cache(cache_dir)
    results: list[CachedFile | MsnError | None] = [None] * len(specs)
    groups: dict[str, list[int]] = {}  # specs for one cache entry go one after the other
    for i, spec in enumerate(specs):
        try:
            groups.setdefault(resolve_target(spec, cache, base_url).name, []).append(i)
        except MsnError as e:
            results[i] = e
    slots = threading.BoundedSemaphore(conns)
    get = functools.partial(fetch, cache_dir=cache_dir, base_url=base_url, force=force, verify=verify,
                            progress=_Totals(progress, set(groups)), notify=notify,
                            connections=conns, _slots=slots)
    threads = [threading.Thread(target=_fetch_in_turn, args=(get, specs, indices, slots, results),
                                name=f"msn-fetch-{n}", daemon=True)
               for n, indices in enumerate(groups.values())]
    for t in threads:
        t.start()
    for t in threads:  # joined in short waits, so that Ctrl-C and SIGTERM reach this thread
        while t.is_alive():
            t.join(0.2)
    return [r if r is not None else DownloadError(f"{strip_credentials(s)} was not fetched")
            for r, s in zip(results, specs, strict=True)]


def _fetch_in_turn(get: Callable[[str], CachedFile], specs: list[str], indices: list[int],
                   slots: threading.Semaphore, results: list[CachedFile | MsnError | None]) -> None:
    """Fetch the specs at ``indices`` one after the other, each holding a connection."""
    for i in indices:
        while not slots.acquire(timeout=0.2):
            pass
        try:
            results[i] = get(specs[i])
        except MsnError as e:
            results[i] = e
        except BaseException as e:  # a bug: reported as the file's failure, never lost
            results[i] = DownloadError(f"{strip_credentials(specs[i])}: {type(e).__name__}: {e}")
        finally:
            slots.release()


class _Totals:
    """Progress of several files: each under its own name and, summed, under ``TOTAL_STAGE``."""

    def __init__(self, progress: ProgressFn, names: set[str]):
        self.progress, self.names = progress, names
        self.lock = threading.Lock()
        self.seen: dict[str, tuple[int, int | None]] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        with self.lock:
            self.progress(stage, done, total)
            if stage in self.names:
                self.seen[stage] = (done, total)
                known = [t for _, t in self.seen.values() if t is not None]
                self.progress(TOTAL_STAGE, sum(d for d, _ in self.seen.values()), sum(known) or None)
