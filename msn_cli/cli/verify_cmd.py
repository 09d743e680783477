"""``msn verify``: not built yet."""

from __future__ import annotations

from ..errors import UsageError


def verify() -> None:
    """Not available yet."""
    raise UsageError("msn verify is not available yet")
