"""The download's numbers: defaults, their environment variables, and the wait between tries."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from msn_cli.errors import UsageError

CHUNK = 1024 * 1024
"""Bytes asked of the socket per read; progress and the segment ledger move in steps of this."""
RETRIES = 4
"""Retries of failed attempts that gained no bytes; ``MSN_DOWNLOAD_RETRIES`` (0: never retry)."""
BACKOFF = 1.0
"""First wait between attempts in seconds; doubled each time, at most ``BACKOFF_MAX``."""
BACKOFF_MAX = 30.0
CONNECT_TIMEOUT = 15.0
READ_TIMEOUT = 60.0
"""Seconds without a byte before the connection counts as lost; ``MSN_DOWNLOAD_TIMEOUT``."""
MIN_RATE = 10_000.0
"""Bytes per second: a body that brings less than this over ``MSN_DOWNLOAD_TIMEOUT`` seconds
is stalled and the download gives up (what arrived is kept for the next run);
``MSN_DOWNLOAD_MIN_RATE`` (0: never). A per-read timeout alone lets a server that sends a byte
now and then hold a download for ever."""
MAX_SIZE = 16 * 1024**3
"""Bytes: the most a downloaded file may be when msn knows no better bound (a URL that is not a
released checkpoint); ``MSN_DOWNLOAD_MAX_SIZE``. A training checkpoint of ViT-L is about 5 GB.
A longer answer (announced or sent) is refused, so a server cannot fill the cache's disk."""
CONNECTIONS = 4
"""Concurrent ranged requests for one large file; ``--connections`` / ``MSN_DOWNLOAD_CONNECTIONS``."""
MAX_CONNECTIONS = 16
SPLIT_MIN = 64 * 1024 * 1024
"""Files smaller than this use one stream whatever ``connections`` says; ``MSN_DOWNLOAD_SPLIT_MIN``."""
SPLIT_BELOW = 150.0
"""MB/s. A large file starts as one stream; only when that stream brings less than this in its
first ``SPLIT_PROBE`` seconds is the rest split (``MSN_DOWNLOAD_SPLIT_BELOW``; 0: never split).
Splitting pays where one connection is capped below the link (a long or congested path); where
one stream already runs this fast, the link or the CPU is the limit and more connections only
add receive threads and a second read of every byte to hash it (docs/benchmarks.md). 150 MB/s
sits above a saturated 1 Gbit/s link and well below what one stream does on a fast local path.
Under a budget shared by several files (``fetch_many``) a slow stream splits only once a
connection is free, and is measured again every ``SPLIT_PROBE`` seconds until then."""
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
"""A segmented transfer hashes the file's contiguous start when this much more of it is there."""


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


def env_number(var: str, default: float) -> float:
    """``var`` as a number, ``default`` when unset; anything else is a usage error."""
    raw = os.environ.get(var)
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise UsageError(f"{var} must be a number, not '{raw}'") from None


def _env_rate(var: str, default: float) -> float:
    value = env_number(var, default)
    if not 0 <= value < math.inf:
        raise UsageError(f"{var} must be a number of 0 or more, not '{os.environ[var]}'")
    return value


@dataclass(frozen=True)
class Settings:
    """One download's settings, read from the environment when it starts."""

    connections: int
    retries: int
    read_timeout: float
    split_min: int
    split_below: float
    """Bytes per second: a first stream slower than this has the rest of its file split."""
    split_probe: float
    """Seconds of the first stream measured before deciding (0: split at once)."""
    min_rate: float = MIN_RATE
    max_size: int = MAX_SIZE

    @classmethod
    def from_env(cls, connections: int) -> Settings:
        retries = int(env_number("MSN_DOWNLOAD_RETRIES", RETRIES))
        read_timeout = env_number("MSN_DOWNLOAD_TIMEOUT", READ_TIMEOUT)
        below = _env_rate("MSN_DOWNLOAD_SPLIT_BELOW", SPLIT_BELOW)
        probe = _env_rate("MSN_DOWNLOAD_SPLIT_PROBE", SPLIT_PROBE)
        split_min = int(env_number("MSN_DOWNLOAD_SPLIT_MIN", SPLIT_MIN))
        min_rate = _env_rate("MSN_DOWNLOAD_MIN_RATE", MIN_RATE)
        max_size = _env_rate("MSN_DOWNLOAD_MAX_SIZE", MAX_SIZE)
        return cls(connections, retries, read_timeout, split_min, below * 1e6, probe, min_rate,
                   int(max_size))

    @property
    def timeout(self) -> tuple[float, float]:
        """``(connect, read)`` for requests."""
        return CONNECT_TIMEOUT, self.read_timeout

    @property
    def max_attempts(self) -> int:
        """Attempts that gained bytes do not use up the retries, but the total stays bounded."""
        return 1 if self.retries <= 0 else 4 * (self.retries + 1)


def retry_delay(failures: int) -> float:
    """Seconds to wait after ``failures`` tries in a row that gained nothing (exponential)."""
    return min(BACKOFF * 2.0 ** max(failures - 1, 0), BACKOFF_MAX)
