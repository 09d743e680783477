"""The Typer application: one command per module, registered here."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from msn_cli import __version__
from msn_cli.cli import completion, version_cmd
from msn_cli.cli.cache_cmd import cache_app
from msn_cli.cli.convert_cmd import convert
from msn_cli.cli.download_cmd import download
from msn_cli.cli.export_cmd import export
from msn_cli.cli.fewshot_cmd import fewshot
from msn_cli.cli.helpfmt import MsnCommand, MsnGroup
from msn_cli.cli.inspect_cmd import inspect
from msn_cli.cli.push_cmd import push
from msn_cli.cli.verify_cmd import verify
from msn_cli.errors import EXIT_CODES_SUMMARY

app = typer.Typer(
    name="msn",
    cls=MsnGroup,
    help="Convert Meta's original MSN (Masked Siamese Networks) ViT checkpoints into Hugging "
         "Face transformers models, prove the conversion exact, and publish the result.\n\n"
         "Pipeline: download -> inspect -> convert -> verify -> push.\n\n"
         "Examples:\n\n"
         "  msn convert vits16 ./vit-msn-small     # download (cached), convert, verify\n\n"
         "  msn inspect ./vits16_800ep.pth.tar --json\n\n"
         "  msn push ./vit-msn-small org/vit-msn-small --dry-run\n\n"
         "  msn export vits16 ./resume.pth.tar      # back to the original training code\n\n"
         + EXIT_CODES_SUMMARY,
    no_args_is_help=True,
    add_completion=False,  # our own two options, that honour a named shell: see completion.py
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"msn {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[Optional[bool], typer.Option(
        "--version", "-V", callback=_version, is_eager=True, help="Show the version and exit.")] = None,
    install_completion: completion.InstallOpt = None,
    show_completion: completion.ShowOpt = None,
) -> None:
    pass


completion.init()
for _command in (download, inspect, convert, verify, push, export):
    app.command(rich_help_panel="Pipeline", cls=MsnCommand)(_command)
app.command(rich_help_panel="About", cls=MsnCommand)(version_cmd.version)
app.command(rich_help_panel="Evaluation", cls=MsnCommand)(fewshot)
app.add_typer(cache_app, name="cache", rich_help_panel="Cache")
