"""What every step of one file's download shares, and what the steps learn on the way."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from msn_cli.progress import ProgressFn
from msn_cli.transfer.download.settings import Settings
from msn_cli.transfer.download.target import Target, released_size_bound

NotifyFn = Callable[[str], None]


@dataclass(frozen=True)
class Transfer:
    """One file's download: what is fetched, where it is written, how it is reported."""

    target: Target
    part: Path
    """``partial/<name>.part``: the bytes so far."""
    note_path: Path
    """``partial/<name>.json``: where they came from (:mod:`msn_cli.transfer.partial`)."""
    settings: Settings
    progress: ProgressFn
    say: NotifyFn
    slots: threading.Semaphore | None = None
    """Connections shared with other files fetched at once (``fetch_many``), or None."""

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def max_size(self) -> int:
        """The most this file may be: a released checkpoint's bound, else ``MSN_DOWNLOAD_MAX_SIZE``."""
        limit = self.settings.max_size
        return limit if self.target.variant is None else min(limit, released_size_bound(self.target.variant))


@dataclass
class Outcome:
    """What the attempts of one download found out, for the next attempt and the result."""

    resumed_from: int = 0
    """Bytes of an earlier run's partial file kept (0 once an attempt starts over)."""
    restarted: bool = False
    """The server ignored a resume request, so the kept bytes were dropped."""
    single: bool = False
    """Never split: the server ignores ranges."""
    split: bool = False
    """Ranges of the file were fetched over several connections."""
    rate: float | None = None
    """Bytes per second of the measured first stream."""
