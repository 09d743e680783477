"""Ctrl-C and SIGTERM held back while code that would swallow them runs.

Python raises ``KeyboardInterrupt`` (and the CLI's SIGTERM handler its own exception) at the
next bytecode the main thread runs, wherever that is. During ``import torch`` it can be the
import of numpy that torch's C++ start-up performs and whose failure it clears and ignores:
the interrupt would vanish and the command go on to the end with exit code 0. Inside
:func:`deferred` the two signals are only recorded; they are delivered, to the handlers that
were there before, as the block ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def deferred(signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)) -> Iterator[None]:
    """Record ``signums`` instead of acting on them for the block; then act on the first.

    Only the main thread can change handlers; anywhere else (or for a signal that is ignored)
    this does nothing. A signal that arrives in the block is delivered to the handler that
    was in place before it: a Python handler is called (``KeyboardInterrupt`` for the default
    SIGINT one), a default disposition is raised again with the handler restored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    previous: dict[int, Any] = {}
    for signum in signums:
        handler = signal.getsignal(signum)
        if handler in (signal.SIG_IGN, None):
            continue
        previous[signum] = handler
        signal.signal(signum, lambda n, _frame: pending.append(n))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        if pending:
            first = previous[pending[0]]
            if callable(first):
                first(pending[0], None)
            else:  # SIG_DFL: what the process would have done, now
                signal.raise_signal(pending[0])
