"""One file's download into the cache: check what an earlier run left, make attempts until one
brings the whole file (retrying, starting over or falling back to one stream as the attempts
say), then check the file and move it into ``files/``."""

from __future__ import annotations

import os
import stat
import threading
import time

from msn_cli.errors import CacheError, DownloadError
from msn_cli.original.checkpoint import sniff
from msn_cli.progress import ProgressFn
from msn_cli.transfer.cache import Cache, CacheEntry
from msn_cli.transfer.download.context import NotifyFn, Outcome, Transfer
from msn_cli.transfer.download.partfile import clear_unsafe_partial, discard
from msn_cli.transfer.download.protocol import FallBack, Retry, StartOver, new_session
from msn_cli.transfer.download.segments import on_the_grid
from msn_cli.transfer.download.settings import Settings, retry_delay
from msn_cli.transfer.download.stream import attempt
from msn_cli.transfer.download.target import CachedFile, Target
from msn_cli.transfer.partial import DamagedNote, PartialNote, read_partial_note
from msn_cli.util.fmt import utc_now


def download(cache: Cache, target: Target, pinned: str | None, progress: ProgressFn,
             say: NotifyFn, connections: int, slots: threading.Semaphore | None = None) -> CachedFile:
    """Download ``target`` into ``cache`` (its entry lock held by the caller)."""
    t = Transfer(target, cache.partial_path(target.name), cache.partial_meta_path(target.name),
                 Settings.from_env(connections), progress, say, slots)
    outcome = Outcome(resumed_from=_keep_or_drop_partial(t))
    digest, size = _attempts(t, outcome)
    _refuse_unfit(t, pinned, digest)
    final = cache.file_path(target.name)
    os.replace(t.part, final)
    entry = CacheEntry(target.name, target.shown, size, digest, utc_now(), target.variant)
    cache.put(entry)
    discard(t.note_path)
    return CachedFile(entry.name, final, entry.url, digest, size, entry.downloaded_at, target.variant,
                      downloaded=True, resumed_from=0 if outcome.restarted else outcome.resumed_from,
                      verified=True, split=outcome.split, first_rate=outcome.rate)


def _keep_or_drop_partial(t: Transfer) -> int:
    """Keep an earlier run's partial file only with a note of this URL; the bytes it holds."""
    clear_unsafe_partial(t.part, t.say)
    try:
        note = read_partial_note(t.note_path)
        _check_fits(t, note)
    except DamagedNote as e:
        note = None
        t.say(f"the note of a partial {t.name} is damaged ({e}); starting over")
        discard(t.part, t.note_path)
    if t.part.exists() and (note is None or note.url != t.target.shown):
        t.say(f"discarding a partial {t.name} that came from another URL" if note else
              f"discarding a partial {t.name} with no note of where it came from")
        t.part.unlink()
    kept = t.part.stat().st_size if t.part.exists() else 0
    if kept and note is not None and note.have is not None:
        kept = note.have  # a segmented transfer: its file is preallocated
    return kept


def _check_fits(t: Transfer, note: PartialNote | None) -> None:
    """A note whose size this file cannot have, or whose ranges no run could leave, is damaged."""
    if note is None:
        return
    if note.total is not None and note.total > t.max_size:
        raise DamagedNote(f"its total of {note.total:,} bytes is more than {t.name} can be")
    if not on_the_grid(note):
        raise DamagedNote("its finished ranges are not ones msn writes")


def _attempts(t: Transfer, outcome: Outcome) -> tuple[str, int]:
    """Attempts until one brings the whole file; (sha256, size)."""
    session = new_session()
    failures = attempts = 0
    try:
        while True:
            attempts += 1
            try:
                return attempt(t, session, outcome)
            except FallBack as e:
                t.say(f"{e}; downloading {t.name} again with one connection")
                outcome.single = True
                discard(t.part)
                outcome.resumed_from = 0
            except StartOver:
                discard(t.part)
                outcome.resumed_from = 0
                if attempts >= t.settings.max_attempts:
                    raise DownloadError(f"download of {t.name} kept restarting; giving up") from None
            except Retry as e:
                failures = 0 if e.gained > 0 else failures + 1
                _wait_or_give_up(t, e, failures, attempts)
    finally:
        session.close()


def _wait_or_give_up(t: Transfer, e: Retry, failures: int, attempts: int) -> None:
    retries = min(t.settings.retries, 1) if e.unreachable else t.settings.retries
    if failures > retries or attempts >= t.settings.max_attempts:
        have = t.part.stat().st_size if t.part.exists() else 0
        raise DownloadError(
            f"download of {t.name} from {t.target.shown} failed after {attempts} "
            f"attempt{'s' if attempts != 1 else ''}: {e.reason}",
            hint=(f"run the same command again to resume from byte {have:,}" if have
                  else "check the network (or --base-url / MSN_BASE_URL) and try again"),
        ) from None
    delay = retry_delay(failures)
    t.say(f"{e.reason}; retrying in {delay:.1f}s (attempt {attempts + 1})")
    time.sleep(delay)


def _refuse_unfit(t: Transfer, pinned: str | None, digest: str) -> None:
    """The file is the one pinned, a checkpoint rather than a page, and still a regular file;
    otherwise it is deleted and nothing is cached."""
    shown = t.target.shown
    if pinned is not None and digest != pinned:
        discard(t.part, t.note_path)
        raise DownloadError(
            f"{t.name} from {shown} has sha256 {digest}, not the expected {pinned}; "
            "the download was deleted",
            hint="check the --sha256 value; if it is right, the server sent a different file")
    kind = sniff(t.part)
    if kind.startswith(("an HTML", "a git-lfs")):
        # an error or login page answered with 200, or an un-fetched LFS pointer
        discard(t.part, t.note_path)
        raise DownloadError(f"{shown} sent {kind}, not a checkpoint; nothing was cached",
                            hint="check the URL (or --base-url / MSN_BASE_URL)")
    if not stat.S_ISREG(t.part.lstat().st_mode):  # swapped for a link since it was written
        discard(t.part, t.note_path)
        raise CacheError(f"{t.part} was replaced by something else than the download; nothing was "
                         "cached", hint="someone else writes into this cache: download again")
