"""The HTTP side of a download: the session, reading a body, what an answer means, and the
exceptions that steer the attempts (retry, start over, fall back to one stream)."""

from __future__ import annotations

import http.client
import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import requests
import urllib3.exceptions

from msn_cli import __version__
from msn_cli.errors import DownloadError
from msn_cli.transfer.download.partfile import discard
from msn_cli.util.safeio import redact

if TYPE_CHECKING:
    from msn_cli.transfer.download.context import Transfer

BodyReader = Callable[[int], bytes]
"""Up to ``n`` bytes of a body as they arrive (at least one), ``b""`` at its end."""

CONTENT_RANGE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
UNSATISFIED = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.I)
_SMALL_READ = 64 * 1024

BROKEN: tuple[type[BaseException], ...] = (
    http.client.HTTPException, requests.ConnectionError, requests.Timeout,
    requests.exceptions.ChunkedEncodingError, urllib3.exceptions.ProtocolError,
    urllib3.exceptions.ReadTimeoutError, urllib3.exceptions.DecodeError, ConnectionError,
    TimeoutError)
"""A connection that failed mid-way: the attempt is retried from what arrived."""


class Retry(Exception):
    """An attempt failed in a way another attempt may mend."""

    def __init__(self, reason: str, gained: int = 0, unreachable: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.gained = gained
        self.unreachable = unreachable
        """No connection at all (a name that does not resolve, a refused connection): no network
        or a wrong host, which waiting seldom mends, so it is retried once only."""


class StartOver(Exception):
    """The partial file cannot be continued; the next attempt starts from byte 0."""


class FallBack(Exception):
    """The server answered a ranged request with the whole file: use one stream."""


class GaveUp(DownloadError):
    """One segment used up its retries: its worker stops, the others finish what they can."""


class Watch:
    """Gives up on a body that brings less than ``min_rate`` bytes per second over ``window``
    seconds (a stall: no retry, what arrived is kept) or that would pass ``max_size`` bytes."""

    def __init__(self, t: Transfer, done: int, share: int = 1):
        """``share``: connections the file's transfer runs over, each held to its share."""
        s = t.settings
        self.t, self.window, self.min_rate = t, s.read_timeout, s.min_rate / share
        self.since = (time.monotonic(), done)

    def check(self, done: int) -> None:
        t = self.t
        if done > t.max_size:
            discard(t.part, t.note_path)  # a lie, not a transfer to resume
            raise too_large(t, "sent more")
        if self.min_rate <= 0:
            return
        now = time.monotonic()
        t0, d0 = self.since
        if now - t0 < self.window:
            return
        if done - d0 < self.min_rate * (now - t0):
            raise DownloadError(
                f"download of {t.name} from {t.target.shown} stalled: {done - d0:,} bytes in "
                f"{now - t0:.0f} s, below the minimum of {self.min_rate:,.0f} bytes/s",
                hint="run the same command again to resume (MSN_DOWNLOAD_MIN_RATE sets the minimum, "
                     "MSN_DOWNLOAD_TIMEOUT the seconds it is measured over; 0 never gives up)")
        self.since = (now, done)


def too_large(t: Transfer, what: str) -> DownloadError:
    limit = ("the bound of a released checkpoint" if t.target.variant is not None
             and t.max_size < t.settings.max_size else "MSN_DOWNLOAD_MAX_SIZE")
    return DownloadError(f"{t.target.shown} {what}: more than {t.name} can be ({limit}, "
                         f"{t.max_size:,} bytes); nothing was cached",
                         hint="check the URL; for a larger file raise MSN_DOWNLOAD_MAX_SIZE")


def unfollowed(t: Transfer, e: requests.RequestException) -> DownloadError:
    """A request msn cannot make: a redirect to another scheme than http(s), too many redirects."""
    if isinstance(e, requests.TooManyRedirects):
        return DownloadError(f"{t.target.shown} redirects too many times", hint="check the URL")
    text = redact(str(e))
    m = re.search(r"'([^']*)'", text)
    where = m.group(1) if m else text
    return DownloadError(f"{t.target.shown} redirects to {where}, which msn does not fetch "
                         "(only http and https)", hint="check the URL (or --base-url / MSN_BASE_URL)")


def new_session() -> requests.Session:
    s = requests.Session()
    s.headers.update({"User-Agent": f"msn-cli/{__version__}", "Accept-Encoding": "identity"})
    return s


def body_reader(r: requests.Response) -> BodyReader:
    """Read ``r``'s body undecoded (the bytes on the server, as ``curl -o`` saves them).

    urllib3's ``read1`` hands over whatever the socket has, so a broken connection loses
    nothing that arrived before the break; where it is missing (urllib3 < 2.1), small reads
    keep that loss small.
    """
    raw = r.raw
    read1 = getattr(raw, "read1", None)

    def read(n: int) -> bytes:
        data: bytes = (read1(n, decode_content=False) if read1 is not None
                       else raw.read(min(n, _SMALL_READ), decode_content=False))
        return data

    return read


def failed_status(r: requests.Response) -> Retry | None:
    """A Retry for an answer a later try may not get (5xx, 408, 429); None otherwise."""
    status = r.status_code
    if status >= 500 or status in (408, 429):
        return Retry(f"the server answered HTTP {status} {r.reason or ''}".rstrip())
    return None


def strong_validator(etag: str | None, last_modified: str | None) -> str | None:
    """What a segment's ``If-Range`` sends: a strong ETag, else Last-Modified (a weak ETag
    cannot guard a range)."""
    if etag and not etag.startswith("W/"):
        return etag
    return last_modified or None


def host(url: str) -> str:
    return urlsplit(url).netloc or url


def _causes(e: BaseException) -> list[BaseException]:
    """``e`` and what it wraps (``reason``, exception arguments, ``__cause__``), a few deep."""
    seen: list[BaseException] = []
    todo = [e]
    while todo and len(seen) < 12:
        x = todo.pop(0)
        if any(x is y for y in seen):
            continue
        seen.append(x)
        inner = [getattr(x, "reason", None), x.__cause__, x.__context__, *getattr(x, "args", ())]
        todo += [i for i in inner if isinstance(i, BaseException)]
    return seen


def no_connection(e: BaseException) -> str | None:
    """"the name does not resolve" or "connection refused" when that is why ``e`` happened."""
    causes = _causes(e)
    if any(isinstance(x, (socket.gaierror, urllib3.exceptions.NameResolutionError)) for x in causes):
        return "the name does not resolve"
    if any(isinstance(x, ConnectionRefusedError) for x in causes):
        return "connection refused"
    return None


def short(e: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, in a few words."""
    plain = no_connection(e)
    if plain is not None:
        return plain
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
