"""Option types shared by several commands, defined once."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from msn_cli.cli.completion import choices
from msn_cli.errors import UsageError

if TYPE_CHECKING:
    from msn_cli.original.checkpoint import Encoder

JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]
QuietOpt = Annotated[bool, typer.Option(
    "--quiet", "-q", help="Only errors (and warnings) on stderr; stdout, the data, is unchanged.")]
VerboseOpt = Annotated[int, typer.Option("--verbose", "-v", count=True,
                                         help="More detail on stderr (repeat for more).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing output.")]
CacheDirOpt = Annotated[Optional[Path], typer.Option(
    "--cache-dir", help="Checkpoint cache folder \\[default: $MSN_CACHE, "
    "else $XDG_CACHE_HOME/msn, else ~/.cache/msn].", show_default=False)]
BaseUrlOpt = Annotated[Optional[str], typer.Option(
    "--base-url", envvar="MSN_BASE_URL",
    help="Mirror of https://dl.fbaipublicfiles.com/msn/ to fetch released checkpoints from.")]
ENCODERS = ("target", "online")
EncoderOpt = Annotated[str, typer.Option(
    "--encoder", metavar="|".join(ENCODERS), autocompletion=choices(ENCODERS),
    help="Which network of the file: target (the EMA teacher, as released) "
    "or online (the 'encoder' of a training checkpoint).",
    case_sensitive=False)]
"""``--encoder``: read it with :func:`encoder_choice` (msn's own message for a wrong value)."""
NumHeadsOpt = Annotated[Optional[int], typer.Option(
    "--num-heads", min=1, help="Attention heads (the weights do not hold them) \\[default: "
    "from the run's config, else the original model family by width (1280 wide: 16), else "
    "hidden size / 64, reported as assumed].", show_default=False)]
ConfigOpt = Annotated[Optional[Path], typer.Option(
    "--config", help="The run's params-msn-train.yaml (its meta.model_name gives the heads) "
    "\\[default: the one beside the checkpoint, if any].", show_default=False)]
NoConfigOpt = Annotated[bool, typer.Option(
    "--no-config", help="Ignore the params-msn-train.yaml beside the checkpoint (one from "
    "another run): the heads come from --num-heads, else the width.")]


def config_choice(config: Path | None, no_config: bool) -> Path | None:
    """The ``config=`` that ``--config`` and ``--no-config`` ask for (:data:`os.devnull`:
    none, not even the one beside the checkpoint)."""
    if no_config and config is not None:
        raise UsageError("--config and --no-config ask for opposite things",
                         hint="give one of them")
    return Path(os.devnull) if no_config else config


def encoder_choice(value: str) -> Encoder:
    """The network an ``--encoder`` value names, in any case; anything else is a usage error."""
    choice = value.lower()
    if choice == "target":
        return "target"
    if choice == "online":
        return "online"
    raise UsageError(f"unknown encoder '{value}'", hint="choose target or online")
