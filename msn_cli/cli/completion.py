"""``msn --install-completion [SHELL]`` and ``msn --show-completion [SHELL]``.

Typer's own two options are flags whose shell argument exists only when its shell detection is
switched off, so ``--install-completion zsh`` quietly installed for the detected shell. These
take an optional shell name (bash, zsh, fish, powershell, pwsh) and detect the shell only when
none is given. The scripts, the install locations and the classes that answer the shell are
Typer's, taken from ``typer.completion``, the one module of Typer's that is not private and
holds them (it imports them without re-exporting them, hence the ``type: ignore``); the shell is
detected with shellingham, as Typer does. Typer's parser has no options with an optional
value, so :func:`optional_values` gives a bare option the empty value ("detect") before parsing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Optional

import shellingham
import typer
from typer.completion import (  # type: ignore[attr-defined]
    completion_init,
    get_completion_script,
    install,
)

from msn_cli.errors import UsageError

SHELLS = ("bash", "zsh", "fish", "powershell", "pwsh")
PROG = "msn"
COMPLETE_VAR = "_MSN_COMPLETE"


def optional_values(args: list[str]) -> list[str]:
    """``args`` with ``--install-completion`` / ``--show-completion`` given ``=`` ("detect")
    where no shell name follows them."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--":
            break
        if arg in ("--install-completion", "--show-completion") and (
                i + 1 == len(out) or out[i + 1].startswith("-")):
            out[i] = arg + "="
    return out


def init() -> None:
    """Register Typer's completion classes (what answers when the shell asks for candidates)."""
    completion_init()


def _shell(value: str) -> str:
    if value:
        shell = value.lower()
        if shell not in SHELLS:
            raise UsageError(f"unknown shell '{value}'", hint="give one of " + ", ".join(SHELLS))
        return shell
    hint = "name the shell: one of " + ", ".join(SHELLS)
    try:
        detected = str(shellingham.detect_shell()[0]).lower()
    except shellingham.ShellDetectionFailure:
        raise UsageError("cannot tell which shell this is", hint=hint) from None
    if detected not in SHELLS:
        raise UsageError(f"completion is not available for {detected}", hint=hint)
    return detected


def _install(ctx: typer.Context, value: Optional[str]) -> None:
    if value is None or ctx.resilient_parsing:
        return
    shell, path = install(shell=_shell(value), prog_name=PROG, complete_var=COMPLETE_VAR)
    typer.echo(f"{shell} completion installed in {path}", err=True)
    typer.echo("Completion will take effect once you restart the terminal", err=True)
    raise typer.Exit()


def _show(ctx: typer.Context, value: Optional[str]) -> None:
    if value is None or ctx.resilient_parsing:
        return
    typer.echo(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=_shell(value)))
    raise typer.Exit()


InstallOpt = Annotated[Optional[str], typer.Option(
    "--install-completion", metavar="[SHELL]", is_eager=True,
    expose_value=False, callback=_install, show_default=False,
    help="Install completion for SHELL (bash, zsh, fish, powershell, pwsh), "
         "by default the current shell.")]
ShowOpt = Annotated[Optional[str], typer.Option(
    "--show-completion", metavar="[SHELL]", is_eager=True,
    expose_value=False, callback=_show, show_default=False,
    help="Print the completion script for SHELL (by default the current shell), "
         "to install it yourself.")]


# -- candidates for values: what the shell offers after an option or for SOURCE --------------

MAX_PATHS = 200  # a folder of thousands of files offers its first 200, not a stall


def choices(values: Sequence[str]) -> Callable[[Any, list[str], str], list[str]]:
    """Completion for an option with a fixed set of values (``--dtype <TAB>``)."""

    def complete(ctx: Any, args: list[str], incomplete: str) -> list[str]:
        return [v for v in values if v.startswith(incomplete.lower())]

    return complete


def sources(ctx: Any, args: list[str], incomplete: str) -> list[str]:
    """Completion for SOURCE: the released names (and ``all`` for convert) and the paths that
    match. Typer's bash and zsh scripts complete file names only when a command offers
    nothing, so the paths are listed here too, or a checkpoint beside would never be offered."""
    from msn_cli.original.variants import VARIANTS

    names = [*VARIANTS, "all"] if getattr(ctx, "info_name", None) == "convert" else list(VARIANTS)
    return [n for n in names if n.startswith(incomplete)] + paths(incomplete)


def released(ctx: Any, args: list[str], incomplete: str) -> list[str]:
    """Completion for download's NAMES: the released names (a URL is typed, not offered)."""
    from msn_cli.original.variants import VARIANTS

    return [n for n in VARIANTS if n.startswith(incomplete)]


def paths(incomplete: str) -> list[str]:
    """The files and folders whose path starts with ``incomplete`` (folders end with /),
    hidden ones only when asked for by a leading dot."""
    folder, _, stem = incomplete.rpartition("/")
    prefix = folder + "/" if _ else ""
    base = Path(folder or ("/" if _ else ".")).expanduser()
    try:
        entries = sorted(e for e in os.listdir(base) if e.startswith(stem)
                         and (stem.startswith(".") or not e.startswith(".")))
    except OSError:
        return []
    return [prefix + e + ("/" if (base / e).is_dir() else "") for e in entries[:MAX_PATHS]]
