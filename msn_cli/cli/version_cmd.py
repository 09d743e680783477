"""``msn version``: msn's version and those of the libraries it converts for, as ``hf version``
and ``hf env`` say theirs (the first line is what ``msn --version`` prints)."""

from __future__ import annotations

import platform
import sys
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as dist_version
from pathlib import Path

from msn_cli import __version__
from msn_cli.cli.options import JsonOpt, QuietOpt, VerboseOpt
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


def version(json_out: JsonOpt = False, quiet: QuietOpt = False, verbose: VerboseOpt = 0) -> None:
    """Show msn's version, and Python's and the libraries' (for a bug report).

    With -v, also where msn is installed and which Python runs it.

    Examples:

      msn version

      msn version --json
    """
    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    found: dict[str, str | None] = versions()
    if verbose:
        found["msn_location"] = str(Path(__file__).resolve().parent.parent)
        found["python_executable"] = sys.executable
    if json_out:
        term.emit_json(found)
        return
    term.line(f"msn {found.pop('msn')}")
    for name, value in found.items():
        term.line(f"{name} {value or 'not installed'}")
