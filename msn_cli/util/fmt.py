"""The two formats msn writes everywhere: byte sizes for people and timestamps for records."""

from __future__ import annotations

import datetime as _dt


def human_size(n: float | None) -> str:
    """``1.2 GB``: decimal units, as pip and huggingface_hub show sizes; ``unknown`` for None."""
    if n is None:
        return "unknown"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def utc_now() -> str:
    """The current time as ISO 8601 in UTC to the second: ``2026-12-05T20:12:11Z``."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")
