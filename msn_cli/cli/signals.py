"""SIGTERM as an exception, so that ``finally`` blocks clean up after it as after Ctrl-C."""

from __future__ import annotations

import signal
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived. A ``BaseException``, like ``KeyboardInterrupt``, so that ``except
    Exception`` does not swallow it."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:  # pragma: no cover - subprocess tests
    raise Terminated()


def catch_sigterm() -> None:
    """Turn SIGTERM into :class:`Terminated` for the rest of the process."""
    try:
        signal.signal(signal.SIGTERM, raise_terminated)
    except ValueError:  # not the main thread (a test runner's thread, say): leave it be
        pass
