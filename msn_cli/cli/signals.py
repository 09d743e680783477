"""SIGTERM and Ctrl-C as exceptions, so that ``finally`` blocks clean up after both alike."""

from __future__ import annotations

import os
import signal
from types import FrameType


class Terminated(BaseException):
    """SIGTERM arrived. A ``BaseException``, like ``KeyboardInterrupt``, so that ``except
    Exception`` does not swallow it."""


_bars_drawn = False


def bars_drawn(drawn: bool) -> None:
    """The terminal layer says whether progress bars are on the screen (see :func:`raise_interrupt`)."""
    global _bars_drawn
    _bars_drawn = drawn


def raise_terminated(signum: int, frame: FrameType | None) -> None:  # pragma: no cover - subprocess tests
    raise Terminated()


def raise_interrupt(signum: int, frame: FrameType | None) -> None:  # pragma: no cover - subprocess tests
    """Ctrl-C, as Python's own handler, except that the line the terminal echoed ``^C`` on is
    ended first, so that "Error: interrupted" starts a line of its own. Not while bars are drawn:
    the ``^C`` is then on their last line, which is erased with them."""
    if not _bars_drawn:
        try:
            if os.isatty(2):
                os.write(2, b"\n")
        except OSError:
            pass
    raise KeyboardInterrupt


def catch_signals() -> None:
    """Turn SIGTERM into :class:`Terminated` and Ctrl-C into ``KeyboardInterrupt`` on a line
    of its own, for the rest of the process."""
    try:
        signal.signal(signal.SIGTERM, raise_terminated)
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not if ignored
            signal.signal(signal.SIGINT, raise_interrupt)
    except ValueError:  # not the main thread (a test runner's thread, say): leave it be
        pass
