"""``msn push``: not built yet."""

from __future__ import annotations

from ..errors import UsageError


def push() -> None:
    """Not available yet."""
    raise UsageError("msn push is not available yet")
