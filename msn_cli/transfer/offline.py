"""Whether msn may use the network: the one reading of ``MSN_OFFLINE`` and ``HF_HUB_OFFLINE``."""

from __future__ import annotations

import os

OFFLINE_VARIABLES = ("MSN_OFFLINE", "HF_HUB_OFFLINE")
_TRUE = {"1", "true", "yes", "on"}


def offline_variable() -> str | None:
    """The variable that puts msn offline (set to a true value), read now; None when online."""
    for var in OFFLINE_VARIABLES:
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return var
    return None
