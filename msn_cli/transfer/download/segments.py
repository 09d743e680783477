"""A segmented transfer: the missing ranges of one file over several connections.

The partial file is preallocated to the file's size and each range is written at its offset.
The note lists the finished ranges (rewritten every ``NOTE_EVERY`` bytes and when a range
ends), so a later run fetches only the missing ones. Every ranged request carries ``If-Range``
with the validator the first answer gave: a 206 of another size or ETag starts over, a range
answered with 200 falls back to one stream, and each range retries on its own. The calling
thread hashes the file's contiguous start as it grows, so the sha256 is ready when the last
range lands.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import requests

from msn_cli.errors import DownloadError, UsageError
from msn_cli.transfer.download.context import Transfer
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
    BodyReader,
    FallBack,
    GaveUp,
    Retry,
    StartOver,
    Watch,
    body_reader,
    failed_status,
    new_session,
    short,
    strong_validator,
    unfollowed,
)
from msn_cli.transfer.download.settings import (
    CHUNK,
    HASH_BATCH,
    MAX_CONNECTIONS,
    NOTE_EVERY,
    SEGMENT_MAX,
    SEGMENT_MIN,
    retry_delay,
)
from msn_cli.transfer.partial import PartialNote, write_partial_note
from msn_cli.util.safeio import redact

Range = tuple[int, int]
FirstStream = tuple[requests.Response, BodyReader]
"""This run's first stream, found slow: its answer and body reader, positioned at the first
byte its file lacks."""


@dataclass(frozen=True)
class Job:
    transfer: Transfer
    note: PartialNote
    """The transfer's note: url, validators, total, and the ranges already written."""
    fresh: bool = False
    """The ranges in ``note`` came from this run's first stream (not from an earlier run), so a
    range answered with 200 means the server ignores ranges, not that the file changed."""


def segmented(job: Job, first: FirstStream | None = None, h: Hasher | None = None) -> tuple[str, int]:
    """Fetch the missing ranges of the partial file over the configured connections; returns
    (sha256, size).

    ``first``: this run's first stream, which goes on as the first range while the other
    connections take the rest; ``h`` then holds the sha256 of the bytes before it.
    Without it, an earlier run's segmented partial file is resumed.
    """
    total, validator = job.note.total, strong_validator(job.note.etag, job.note.last_modified)
    if total is None or validator is None:
        raise StartOver()
    ledger = Ledger(job, total)
    hashed = ledger.prefix() if h is not None else 0
    h = hashlib.sha256() if h is None else h
    fd = open_for_writing(job.transfer.part)
    crew: Crew | None = None
    try:
        _prepare(job, fd, ledger, resuming=first is None)
        plan = _plan(job, ledger, validator, first)
        crew = Crew(job, fd, ledger, plan, first)
        try:
            _hash_as_it_grows(job, ledger, crew, h, hashed)
            crew.wait()
        except BaseException as e:  # Ctrl-C, SIGTERM: stop the workers, keep what arrived
            ledger.fail(e)
            raise
        finally:
            crew.stop()
        _check_ended(ledger)
        return h.hexdigest(), total
    finally:
        if crew is None or not crew.alive():  # never close a descriptor still written to
            os.close(fd)


def _prepare(job: Job, fd: int, ledger: Ledger, resuming: bool) -> None:
    t, total = job.transfer, ledger.total
    size = os.fstat(fd).st_size
    if resuming:
        if size != total and not (size < total and all(b <= size for _, b in ledger.done)):
            t.say(f"the partial {t.name} is not the size its note says; starting over")
            raise StartOver()
        t.say(f"resuming {t.name}: {ledger.bytes:,} of {total:,} bytes are there")
    # The note lists the ranges before the file grows to its full size: a run killed in
    # between leaves a short file whose note is right (extended when resumed), never a
    # full-size file of zeros that a one-stream note would take for complete.
    ledger.write_note()
    if size != total:
        check_space(t.part, t.name, total - ledger.bytes)
        os.ftruncate(fd, total)  # sparse: what is missing fits, as checked just before
    t.progress(t.name, ledger.bytes, total)


def _check_ended(ledger: Ledger) -> None:
    if isinstance(ledger.error, GaveUp):  # say what the other segments kept meanwhile
        raise DownloadError(ledger.error.message,
                            hint=f"run the same command again to resume: {ledger.bytes:,} of "
                                 f"{ledger.total:,} bytes are kept")
    if ledger.error is not None:
        raise ledger.error
    if ledger.bytes != ledger.total:
        raise Retry(f"the segments ended with {ledger.bytes:,} of {ledger.total:,} bytes")


def _hash_as_it_grows(job: Job, ledger: Ledger, crew: Crew, h: Hasher, pos: int) -> None:
    """Hash the file in order from ``pos`` as its contiguous start grows (reading back what the
    workers wrote, from the page cache), until it is all hashed or the workers stop short."""
    part = job.transfer.part
    with reading(part) as f:
        while pos < ledger.total:
            end = ledger.wait_for_start(min(pos + HASH_BATCH, ledger.total), crew.alive)
            if ledger.stop.is_set() or end <= pos:
                return  # the workers ended short or failed: the caller reports it
            if feed(h, f, pos, end) != end:
                raise Retry(f"{part.name} is shorter than what was written")
            pos = end


# -- the pieces and who fetches them -----------------------------------------------------------


@dataclass
class Plan:
    pieces: deque[Range]
    """Ranges no connection has taken yet."""
    head: Range | None
    """The range the first stream goes on with (None: it stops)."""
    validator: str
    """``If-Range`` for every ranged request."""

    def take(self, ledger: Ledger) -> Range | None:
        with ledger.cond:
            return self.pieces.popleft() if self.pieces else None


def _plan(job: Job, ledger: Ledger, validator: str, first: FirstStream | None) -> Plan:
    """The missing ranges, cut on one grid; the first stream keeps the range it is in."""
    total = ledger.total
    seg = segment_size(total, job.transfer.settings.connections)
    pieces = deque(_cut(_missing(ledger.done, total), seg))
    head = None
    if first is not None and pieces and pieces[0][0] == ledger.prefix():
        head = pieces.popleft()
        if head[1] - head[0] < seg // 2 and pieces and pieces[0][0] == head[1]:
            head = (head[0], pieces.popleft()[1])  # no request for a sliver
    return Plan(pieces, head, validator)


def segment_size(total: int, connections: int) -> int:
    """The grid a transfer of ``total`` bytes over ``connections`` cuts its missing ranges on."""
    return max(SEGMENT_MIN, min(SEGMENT_MAX, total // (connections * 4) or 1))


def on_the_grid(note: PartialNote) -> bool:
    """Whether msn could have written ``note``'s finished ranges: each starts at byte 0 or on
    the grid of some ``--connections`` (a range that reaches a missing one's start merges with
    it, so every other range begins where a piece did). A note listing ranges no run could
    leave (thousands of one-byte ranges, one request each) is damaged, not resumed."""
    if note.segments is None or note.total is None:
        return True
    sizes = {segment_size(note.total, c) for c in range(1, MAX_CONNECTIONS + 1)}
    return all(a == 0 or any(a % s == 0 for s in sizes) for a, _ in note.segments)


def _cut(gaps: list[Range], seg: int) -> Iterator[Range]:
    """The ranges of ``gaps`` cut at every multiple of ``seg`` (the same grid whatever was
    there before: a range that starts midway ends where a whole one would)."""
    for a, b in gaps:
        while a < b:
            end = min((a // seg + 1) * seg, b)
            yield a, end
            a = end


def _missing(done: list[Range], total: int) -> list[Range]:
    out, pos = [], 0
    for a, b in done:
        if a > pos:
            out.append((pos, a))
        pos = b
    if pos < total:
        out.append((pos, total))
    return out


class Crew:
    """The connections of one transfer, a thread each. The first uses the file's own connection
    (and the first stream, if it goes on); the others take one of the shared budget per piece."""

    def __init__(self, job: Job, fd: int, ledger: Ledger, plan: Plan, first: FirstStream | None):
        self.ledger = ledger
        go_on = first if plan.head is not None else None
        if first is not None and go_on is None:
            first[0].close()
        count = max(1, min(job.transfer.settings.connections, len(plan.pieces) + (go_on is not None)))
        self.threads = [threading.Thread(target=_work, args=(job, fd, ledger, plan, i == 0,
                                                             go_on if i == 0 else None),
                                         name=f"msn-download-{i}", daemon=True)
                        for i in range(count)]
        for th in self.threads:
            th.start()

    def alive(self) -> bool:
        return any(th.is_alive() for th in self.threads)

    def wait(self) -> None:
        """Until every worker ends, in short waits so that Ctrl-C and SIGTERM get through."""
        for th in self.threads:
            while th.is_alive():
                th.join(0.2)

    def stop(self) -> None:
        """Stop the workers (each ends within its current read) and note what arrived."""
        self.ledger.stop.set()
        for th in self.threads:
            th.join(2.0)
        with contextlib.suppress(OSError):
            self.ledger.write_note()


def _work(job: Job, fd: int, ledger: Ledger, plan: Plan, main: bool, first: FirstStream | None) -> None:
    """One connection: the first stream's range if it has one, then pieces until none is left."""
    session = new_session()
    slots = None if main else job.transfer.slots
    try:
        if first is not None and plan.head is not None:
            fetch_range(job, session, fd, ledger, plan.head, plan.validator, first)
        while not ledger.stop.is_set():
            if slots is not None and not _take_slot(slots, ledger, plan):
                return
            try:
                piece = plan.take(ledger)
                if piece is None:
                    return
                fetch_range(job, session, fd, ledger, piece, plan.validator)
            finally:
                if slots is not None:
                    slots.release()
    except GaveUp as e:
        ledger.gave_up(e)
    except BaseException as e:
        ledger.fail(e)
    finally:
        session.close()


def _take_slot(slots: threading.Semaphore, ledger: Ledger, plan: Plan) -> bool:
    """Wait for a connection of the shared budget; False when there is nothing left to do."""
    while not slots.acquire(timeout=0.2):
        if ledger.stop.is_set() or not plan.pieces:
            return False
    return True


# -- one range ---------------------------------------------------------------------------------


@dataclass
class Cursor:
    pos: int
    end: int


def fetch_range(job: Job, session: requests.Session, fd: int, ledger: Ledger, piece: Range,
                validator: str, first: FirstStream | None = None) -> None:
    """Fetch ``piece`` into ``fd`` at its offset, retrying with backoff; ``first``: an open
    answer whose body goes on at the piece's start, used for the first try."""
    cur = Cursor(*piece)
    failures = 0
    while cur.pos < cur.end and not ledger.stop.is_set():
        before = cur.pos
        try:
            r, read = first if first is not None else _request_range(job, session, cur, validator)
            first = None
            _copy_range(job, fd, ledger, r, read, cur)
            if ledger.stop.is_set():
                return
            if cur.pos < cur.end:
                raise Retry(f"a segment's body ended after {cur.pos - before:,} bytes")
        except Retry as e:
            reason = e.reason
        except requests.exceptions.InvalidURL as e:
            raise UsageError(f"invalid URL {job.transfer.target.shown}: {redact(str(e))}") from None
        except (requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema,
                requests.TooManyRedirects) as e:
            raise unfollowed(job.transfer, e) from None
        except BROKEN as e:
            if ledger.stop.is_set():
                return
            reason = f"a connection broke at byte {cur.pos:,} ({short(e)})"
        else:
            ledger.write_note()  # a finished segment is never fetched again
            return
        failures = 0 if cur.pos > before else failures + 1
        if not _wait_to_retry(job, ledger, reason, failures):
            return


def _wait_to_retry(job: Job, ledger: Ledger, reason: str, failures: int) -> bool:
    """Wait before the next try of a range (False: stopped meanwhile); GaveUp past the retries."""
    t = job.transfer
    if failures > t.settings.retries:
        raise GaveUp(f"download of {t.name} from {t.target.shown} failed: {reason} "
                     f"({failures} attempt{'s' if failures != 1 else ''} at that segment)")
    delay = retry_delay(failures)
    t.say(f"{reason}; retrying that segment in {delay:.1f}s")
    return not ledger.stop.wait(delay)


def _request_range(job: Job, session: requests.Session, cur: Cursor, validator: str) -> FirstStream:
    t = job.transfer
    r = session.get(t.target.url, headers={"Range": f"bytes={cur.pos}-{cur.end - 1}",
                                           "If-Range": validator},
                    stream=True, timeout=t.settings.timeout)
    try:
        _check_range(job, r, cur.pos)
    except BaseException:
        r.close()
        raise
    return r, body_reader(r)


def _copy_range(job: Job, fd: int, ledger: Ledger, r: requests.Response, read: BodyReader,
                cur: Cursor) -> None:
    """The body into ``fd`` from ``cur.pos`` up to ``cur.end`` (or its end, or a stop), noted
    in the ledger as it is written."""
    with ledger.cond:
        ledger.responses.add(r)
    noted = cur.pos  # up to here the ledger knows
    watch = Watch(job.transfer, cur.pos, share=job.transfer.settings.connections)
    try:
        while cur.pos < cur.end and not ledger.stop.is_set():
            data = read(min(CHUNK, cur.end - cur.pos))
            if not data:
                break
            watch.check(cur.pos)  # the range's end bounds its size: only a stall is watched
            write_at(fd, data, cur.pos, job.transfer.part)
            cur.pos += len(data)
            if cur.pos - noted >= CHUNK or cur.pos >= cur.end:
                ledger.add(noted, cur.pos)
                noted = cur.pos
    finally:
        if cur.pos > noted:  # a break or a stop: what arrived is kept
            ledger.add(noted, cur.pos)
        with ledger.cond:
            ledger.responses.discard(r)
        r.close()


def _check_range(job: Job, r: requests.Response, start: int) -> None:
    """A ranged answer is the asked range of the same file, or the transfer cannot go on."""
    t, status = job.transfer, r.status_code
    if status == 206:
        _check_same_file(job, r, start)
    elif status == 200:
        if job.note.segments and not job.fresh:  # resumed: the file changed (If-Range) or
            # ranges stopped working
            t.say(f"{t.name} changed on the server (or it no longer serves ranges); starting over")
            raise StartOver()
        raise FallBack("the server answered a ranged request with the whole file")
    elif status == 416:
        t.say(f"the server refused a range of {t.name}; starting over")
        raise StartOver()
    elif (retry := failed_status(r)) is not None:
        raise retry
    else:
        raise DownloadError(f"{t.target.shown}: HTTP {status} {r.reason or ''}".rstrip(),
                            hint="check the name or URL")


def _check_same_file(job: Job, r: requests.Response, start: int) -> None:
    t, note = job.transfer, job.note
    m = CONTENT_RANGE.match(r.headers.get("Content-Range", ""))
    if not m or int(m.group(1)) != start:
        t.say(f"the server sent another range of {t.name} than asked; starting over")
        raise StartOver()
    etag = r.headers.get("ETag")
    if (m.group(3) != "*" and int(m.group(3)) != note.total) or (
            etag and note.etag and etag != note.etag):
        t.say(f"{t.name} changed on the server; starting over")
        raise StartOver()


# -- what is written ----------------------------------------------------------------------------


class Ledger:
    """What a segmented transfer has written, shared by its workers (all under one lock).

    ``add`` records a written range, reports progress and rewrites the partial note every
    ``NOTE_EVERY`` bytes; ``prefix`` is where the contiguous start of the file ends.
    """

    def __init__(self, job: Job, total: int):
        self.job, self.total = job, total
        self.done: list[Range] = list(job.note.segments or ())
        self.bytes = sum(b - a for a, b in self.done)
        self.noted = self.bytes
        self.cond = threading.Condition()
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.responses: set[requests.Response] = set()
        self.want = 0
        """The hashing thread waits for the contiguous start to reach this."""

    def add(self, a: int, b: int) -> None:
        with self.cond:
            merged: list[Range] = []
            for s, e in self.done:
                if e < a or s > b:
                    merged.append((s, e))
                else:
                    a, b = min(a, s), max(b, e)
            merged.append((a, b))
            merged.sort()
            self.done = merged
            self.bytes = sum(e - s for s, e in merged)
            self.job.transfer.progress(self.job.transfer.name, self.bytes, self.total)
            if self.bytes - self.noted >= NOTE_EVERY:
                self.write_note()
            if self.prefix() >= self.want:  # wake the hashing only for a batch worth hashing
                self.cond.notify_all()

    def prefix(self) -> int:
        return self.done[0][1] if self.done and self.done[0][0] == 0 else 0

    def wait_for_start(self, want: int, workers_alive: Callable[[], bool]) -> int:
        """Wait until the contiguous start reaches ``want`` (or the transfer stops, or the
        workers end); returns where it ends."""
        with self.cond:
            self.want = want
            while self.prefix() < want and not self.stop.is_set() and workers_alive():
                self.cond.wait(0.2)
            return self.prefix()

    def write_note(self) -> None:
        with self.cond:
            write_partial_note(self.job.transfer.note_path,
                               replace(self.job.note, total=self.total, segments=tuple(self.done)))
            self.noted = self.bytes

    def gave_up(self, e: GaveUp) -> None:
        """One range is lost for this run; the others go on."""
        with self.cond:
            self.error = self.error or e
            self.cond.notify_all()

    def fail(self, e: BaseException) -> None:
        with self.cond:
            if self.error is None:
                self.error = e
            self.stop.set()
            for r in list(self.responses):
                with contextlib.suppress(Exception):
                    r.close()  # wakes a worker blocked on its socket
            self.cond.notify_all()
