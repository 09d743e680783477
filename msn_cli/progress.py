"""How core modules report progress without knowing about Rich.

A long step calls ``progress(stage, done, total)`` with a short stage label ("hashing",
"writing", ...), bytes done so far and the total (None when unknown). The CLI turns these
calls into Rich progress bars on stderr; library users pass their own callable or nothing.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, "int | None"], None]


def no_progress(stage: str, done: int, total: int | None) -> None:
    """The default reporter: says nothing."""
