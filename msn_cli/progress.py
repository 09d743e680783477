"""How core modules report progress without knowing about Rich.

A long step calls ``progress(stage, done, total)`` with a short stage label ("hashing",
"writing", ...), bytes done so far and the total (None when unknown); the stages in
``ITEM_STAGES`` count items instead (verify's parity counts forward passes). The CLI turns these
calls into Rich progress bars on stderr; library users pass their own callable or nothing.
"""

from __future__ import annotations

from collections.abc import Callable

ProgressFn = Callable[[str, int, "int | None"], None]

ITEM_STAGES = {"parity": "passes", "features": "images"}
"""Stages that count items, not bytes, and what they count."""


SUM_STAGES = {"all files"}
"""Stages that sum the others (several files downloaded at once): drawn below them."""


def item_unit(stage: str) -> str | None:
    """What ``stage`` counts when it is not bytes (None for bytes). A prefix such as the
    batch converter's "vits16: " is ignored."""
    return ITEM_STAGES.get(stage.rsplit(": ", 1)[-1])


def no_progress(stage: str, done: int, total: int | None) -> None:
    """The default reporter: says nothing."""
