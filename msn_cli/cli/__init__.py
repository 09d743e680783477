"""The command-line layer: parse, call the core, render. ``run()`` is the console script.

Each command (or group) is a module of its own, registered in :mod:`msn_cli.cli.app`; none of
them imports this package's ``__init__``, which only names the entry points.
"""

from __future__ import annotations

from msn_cli.cli.entry import main, run

__all__ = ["main", "run"]
