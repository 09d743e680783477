"""``msn download``: not built yet."""

from __future__ import annotations

from ..errors import UsageError


def download() -> None:
    """Not available yet."""
    raise UsageError("msn download is not available yet")
