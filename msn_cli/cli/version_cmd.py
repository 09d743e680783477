"""``msn version``: msn's version and those of the libraries it converts for, as ``hf version``
and ``hf env`` say theirs (the first line is what ``msn --version`` prints)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version

from msn_cli import __version__
from msn_cli.cli.options import JsonOpt
from msn_cli.cli.term import Term

# what decides whether a conversion loads and runs; read from the installed metadata, so that
# asking does not import torch
LIBRARIES = ("torch", "transformers", "huggingface_hub", "safetensors", "typer", "rich")


def versions() -> dict[str, str | None]:
    """msn's version, Python's and each of :data:`LIBRARIES` (None where not installed)."""
    found: dict[str, str | None] = {"msn": __version__, "python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = dist_version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def version(json_out: JsonOpt = False) -> None:
    """Show msn's version, and Python's and the libraries' (for a bug report).

    Examples:

      msn version

      msn version --json
    """
    term = Term(json_mode=json_out)
    found = versions()
    if json_out:
        term.emit_json(found)
        return
    term.line(f"msn {found.pop('msn')}")
    for name, value in found.items():
        term.line(f"{name} {value or 'not installed'}")
