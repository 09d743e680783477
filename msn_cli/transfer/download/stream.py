"""One attempt over one stream: resume the partial file (or start it), receive the body to its
end while hashing it, and hand a large file whose stream is slow over to :mod:`segments`."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, replace

import requests

from msn_cli.errors import DownloadError, UsageError
from msn_cli.transfer.download.context import Outcome, Transfer
from msn_cli.transfer.download.partfile import (
    Hasher,
    check_space,
    feed,
    open_for_writing,
    reading,
    write_at,
)
from msn_cli.transfer.download.protocol import (
    BROKEN,
    CONTENT_RANGE,
    UNSATISFIED,
    BodyReader,
    Retry,
    StartOver,
    Watch,
    body_reader,
    failed_status,
    host,
    no_connection,
    short,
    strong_validator,
    too_large,
    unfollowed,
)
from msn_cli.transfer.download.segments import Job, segmented
from msn_cli.transfer.download.settings import CHUNK
from msn_cli.transfer.partial import DamagedNote, PartialNote, read_partial_note, write_partial_note
from msn_cli.util.fmt import utc_now
from msn_cli.util.safeio import redact


def attempt(t: Transfer, session: requests.Session, outcome: Outcome) -> tuple[str, int]:
    """One request: resume or start the partial file and stream it to the end; (sha256, size)."""
    have = t.part.stat().st_size if t.part.exists() else 0
    note = _note_to_resume(t, have)
    if note is not None and note.segments is not None:  # an earlier segmented transfer
        outcome.split = True
        return segmented(Job(t, note))
    r = _request(t, session, have, note)
    with r:
        if r.status_code == 416 and have:
            return _complete_already(t, r, have, note)
        start, total = _start(t, r, have, note, outcome)
        if total is not None and total > t.max_size:
            raise too_large(t, f"announces {total:,} bytes")
        _check_space(t, start, total)
        started_at = (note.started_at if note else None) or utc_now()
        note = PartialNote(t.target.shown, r.headers.get("ETag"), r.headers.get("Last-Modified"),
                           total, started_at)
        write_partial_note(t.note_path, note)
        return _receive(t, r, note, start, _probe(t, r, note, outcome), outcome)


def _note_to_resume(t: Transfer, have: int) -> PartialNote | None:
    """The note of the partial file's bytes; a partial file without a usable one starts over."""
    if not have:
        return None
    try:
        note = read_partial_note(t.note_path)
    except DamagedNote:
        raise StartOver() from None
    if note is None:
        raise StartOver()
    if not (note.etag or note.last_modified):
        t.say(f"the server gave no ETag or Last-Modified for {t.name}, so a resumed transfer could "
              "not be told from a changed file; starting over")
        raise StartOver()
    return note


def _request(t: Transfer, session: requests.Session, have: int,
             note: PartialNote | None) -> requests.Response:
    headers = {}
    if note is not None:
        headers["Range"] = f"bytes={have}-"
        validator = note.etag or note.last_modified
        if validator:
            headers["If-Range"] = validator
    try:
        return session.get(t.target.url, headers=headers, stream=True, timeout=t.settings.timeout)
    except requests.exceptions.InvalidURL as e:
        raise UsageError(f"invalid URL {t.target.shown}: {redact(str(e))}") from None
    except (requests.ConnectionError, requests.Timeout) as e:
        raise Retry(f"cannot reach {host(t.target.shown)} ({short(e)})",
                    unreachable=no_connection(e) is not None) from None
    except requests.RequestException as e:  # a redirect to file:// or ftp://, or a loop of them
        raise unfollowed(t, e) from None


def _complete_already(t: Transfer, r: requests.Response, have: int,
                      note: PartialNote | None) -> tuple[str, int]:
    """A 416 to a resume request: the earlier run may have had every byte and stopped before
    the checks; then the file is hashed as it is. Otherwise the transfer starts over."""
    m = UNSATISFIED.match(r.headers.get("Content-Range", ""))
    if m and int(m.group(1)) == have and note is not None and note.total == have:
        h = hashlib.sha256()
        _hash_start(t, h, have, t.name)
        return h.hexdigest(), have
    t.say(f"the server refused to resume {t.name}; starting over")
    raise StartOver()


def _start(t: Transfer, r: requests.Response, have: int, note: PartialNote | None,
           outcome: Outcome) -> tuple[int, int | None]:
    """Where the body starts in the file and the file's size (None: unknown), from the answer."""
    status = r.status_code
    retry = failed_status(r)
    if retry is not None:
        raise retry
    if status >= 400:
        hint = "check the name or URL" + (", and --base-url / MSN_BASE_URL" if t.target.variant else "")
        raise DownloadError(f"{t.target.shown}: HTTP {status} {r.reason or ''}".rstrip(), hint=hint)
    if status == 206 and have:
        return have, _resumed_total(t, r, have, note)
    if status == 200:
        if have:
            t.say(f"the server does not support resuming; downloading {t.name} from the start")
            outcome.restarted = True
            outcome.single = True  # it ignores Range: splitting would not work either
        length = r.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None
    raise DownloadError(f"{t.target.shown}: unexpected HTTP {status} {r.reason or ''}".rstrip())


def _resumed_total(t: Transfer, r: requests.Response, have: int, note: PartialNote | None) -> int | None:
    m = CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
    if not m or int(m.group(1)) != have:
        t.say(f"the server sent another range of {t.name} than asked; starting over")
        raise StartOver()
    total = None if m.group(3) == "*" else int(m.group(3))
    if note is not None and note.total is not None and total is not None and note.total != total:
        t.say(f"{t.name} changed size on the server; starting over")
        raise StartOver()
    if not _same_version(r, note):
        t.say(f"{t.name} changed on the server (the answer's validator is not the one its first "
              "bytes came with); starting over")
        raise StartOver()
    t.say(f"resuming {t.name} from byte {have:,}")
    return total


def _same_version(r: requests.Response, note: PartialNote | None) -> bool:
    """Whether a 206 carries the validator the partial file's bytes came with (the ETag when
    the note has one, else Last-Modified). A server or proxy that ignores If-Range answers a
    changed file with 206 too, so the answer's own validator is checked: missing is different."""
    if note is None:
        return False
    if note.etag:
        return r.headers.get("ETag") == note.etag
    return bool(note.last_modified) and r.headers.get("Last-Modified") == note.last_modified


def _check_space(t: Transfer, start: int, total: int | None) -> None:
    if total is not None:
        check_space(t.part, t.name, total - start)


def _hash_start(t: Transfer, h: Hasher, n: int, stage: str) -> int:
    """Hash the first ``n`` bytes of the partial file; the bytes there were (short: fewer)."""
    with reading(t.part) as f:
        return feed(h, f, 0, n, lambda done: t.progress(stage, done, n))


# -- the first stream of a large file: split the rest when it is slow --------------------------


@dataclass
class Probe:
    """Measures a large file's first stream over ``window`` seconds from its first byte, to
    split the rest when it brings less than ``below`` bytes per second (see ``SPLIT_BELOW``)."""

    below: float
    window: float
    total: int
    slots: threading.Semaphore | None
    outcome: Outcome
    since: tuple[float, int] | None = None
    """(time, bytes) where the measured window starts."""
    measuring: bool = True

    def split_now(self, done: int) -> bool:
        if not self.measuring:
            return False
        now = time.monotonic()
        if self.since is None:  # from the first byte: the request's round trip is not the rate
            self.since = (now, done)
            return False
        t0, d0 = self.since
        if now - t0 < self.window:
            return False
        self.outcome.rate = rate = (done - d0) / (now - t0)
        if rate >= self.below or done >= self.total:
            self.measuring = False  # fast: one stream to the end
            return False
        if _free_slot(self.slots):
            return True
        # The shared budget is all in use (other files): measured again, since the rate may
        # have been low only because the others shared the link.
        self.since = (now, done)
        return False


def _free_slot(slots: threading.Semaphore | None) -> bool:
    """Whether a connection of the shared budget is free now (always, without one)."""
    if slots is None:
        return True
    if not slots.acquire(blocking=False):
        return False
    slots.release()
    return True


def _probe(t: Transfer, r: requests.Response, note: PartialNote, outcome: Outcome) -> Probe | None:
    """A probe where splitting may pay and is safe: a large file, several connections, a server
    that offers ranges and a validator to guard them."""
    s, total = t.settings, note.total
    ranges = r.status_code == 206 or r.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
    guarded = strong_validator(note.etag, note.last_modified) is not None
    if (total is None or outcome.single or s.connections <= 1 or total < s.split_min
            or s.split_below <= 0 or not ranges or not guarded):
        return None
    return Probe(s.split_below, s.split_probe, total, t.slots, outcome)


# -- receiving -----------------------------------------------------------------------------------


def _receive(t: Transfer, r: requests.Response, note: PartialNote, start: int,
             probe: Probe | None, outcome: Outcome) -> tuple[str, int]:
    """The body into the partial file from ``start``, hashed on the way; (sha256, size)."""
    total = note.total
    h = hashlib.sha256()
    if start and _hash_start(t, h, start, f"checking partial {t.name}") != start:
        raise StartOver()
    read = body_reader(r)
    done, split = _copy(t, read, h, start, total, probe)
    if split:  # the rest of the file over several connections, this one included
        return _split(t, r, read, note, done, h, outcome)
    if total is not None and done != total:
        if done < total:
            raise Retry(f"the body ended after {done:,} of {total:,} bytes", gained=done - start)
        raise StartOver()
    return h.hexdigest(), done


def _copy(t: Transfer, read: BodyReader, h: Hasher, start: int, total: int | None,
          probe: Probe | None) -> tuple[int, bool]:
    """Write what arrives at once (a broken connection loses nothing that came) and hash it.
    Returns the bytes the file holds and whether the probe asks to split the rest."""
    fd = open_for_writing(t.part)
    done = shown = start
    watch = Watch(t, start)
    try:
        if os.fstat(fd).st_size != start:
            # Only when there is something to cut: truncating makes ext4 write the file's
            # dirty pages back when it is closed (auto_da_alloc).
            os.ftruncate(fd, start)
        t.progress(t.name, done, total)
        if probe is not None and probe.window <= 0:
            return done, True  # split at once, without measuring
        while data := read(CHUNK):
            watch.check(done + len(data))
            write_at(fd, data, done, t.part)
            h.update(data)
            done += len(data)
            if done - shown >= CHUNK:
                t.progress(t.name, done, total)
                shown = done
            if probe is not None and probe.split_now(done):
                return done, True
        return done, False
    except BROKEN as e:
        raise Retry(f"the connection broke after {done:,} bytes ({short(e)})", gained=done - start) from None
    finally:
        os.close(fd)
        t.progress(t.name, done, total)


def _split(t: Transfer, r: requests.Response, read: BodyReader, note: PartialNote, done: int,
           h: Hasher, outcome: Outcome) -> tuple[str, int]:
    if outcome.rate is not None:
        t.say(f"{t.name} comes at {outcome.rate / 1e6:.1f} MB/s over one connection; "
              f"splitting the rest over up to {t.settings.connections} connections")
    outcome.split = True
    job = Job(t, replace(note, segments=((0, done),) if done else ()), fresh=True)
    return segmented(job, first=(r, read), h=h)
