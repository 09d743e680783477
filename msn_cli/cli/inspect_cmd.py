"""``msn inspect``: what is in a checkpoint, the model it implies, and how every key maps."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from msn_cli.cli.completion import sources
from msn_cli.cli.options import (
    BaseUrlOpt,
    CacheDirOpt,
    ConfigOpt,
    EncoderOpt,
    JsonOpt,
    NoConfigOpt,
    NumHeadsOpt,
    QuietOpt,
    VerboseOpt,
    config_choice,
    encoder_choice,
)
from msn_cli.cli.render import arch_table, assumption_warnings, counts_line, keydiff_table
from msn_cli.cli.term import Term
from msn_cli.hf.folder_report import is_model_folder
from msn_cli.util.fmt import human_size

if TYPE_CHECKING:
    from msn_cli.original.checkpoint import Checkpoint


def inspect(
    checkpoint: Annotated[str, typer.Argument(
        help="A checkpoint file, a released name (vits16, vitb16, vitl16, vitb4, vitl7) or an "
             "entry of msn cache ls, a URL, a training run's folder, or a model folder (msn "
             "convert's output) or its model.safetensors.",
        autocompletion=sources, show_default=False)],
    encoder: EncoderOpt = "target",
    num_heads: NumHeadsOpt = None,
    config: ConfigOpt = None,
    no_config: NoConfigOpt = False,
    all_keys: Annotated[bool, typer.Option("--all-keys", help="List every key of every block.")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    cache_dir: CacheDirOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Show what a checkpoint holds, the model it implies and how every key maps.

    Reads metadata only (tensors are memory-mapped, not read), so it is fast on any size.
    Exits 3 when the checkpoint does not map cleanly onto ViTMSNModel.

    Given a training run's folder, lists its checkpoints ({tag}-latest.pth.tar,
    {tag}-ep{N}.pth.tar) with the epoch and loss each stores, and the hyperparameters of its
    params-msn-train.yaml (local paths left out). Exits 3 when a checkpoint cannot be read.

    Given a model folder (msn convert's output, or a Hugging Face download) or its
    model.safetensors, shows its config.json with where each value came from, the source it
    was converted from and the last verify's result, from its JSON files alone.

    Examples:

      msn inspect vits16_800ep.pth.tar

      msn inspect vitb16 --json

      msn inspect training.pth.tar --encoder online --all-keys

      msn inspect /checkpoint/msn_logs/ --json

      msn inspect ./vit-msn-small
    """
    path = Path(checkpoint).expanduser()
    ignored = {"--encoder": encoder.lower() != "target", "--num-heads": num_heads is not None,
               "--config": config is not None or no_config, "--all-keys": all_keys}
    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    if path.is_file() and path.suffix == ".safetensors":
        path = _weights_folder(term, path)
    if is_model_folder(path):
        _refuse_ignored(ignored, "a model folder")
        _inspect_folder(term, path)
        return
    if path.is_dir():
        _refuse_ignored({k: v for k, v in ignored.items() if k != "--config"}, "a run folder")
        _inspect_run(path, term)
        return
    from msn_cli.conversion.inspect import inspect_checkpoint
    from msn_cli.transfer.sources import resolve_source

    with term.progress() as progress:
        src = resolve_source(checkpoint, cache_dir=cache_dir, base_url=base_url, progress=progress,
                             notify=term.info)
    report = inspect_checkpoint(src, encoder=encoder_choice(encoder), num_heads=num_heads,
                                config=config_choice(config, no_config))
    for warning in assumption_warnings(report.plan):
        term.caution(warning)
    if json_out:
        term.emit_json(report.to_dict())
    else:
        term.data(_entries_table(report.checkpoint))
        term.data(arch_table(report.plan))
        term.data(keydiff_table(report.plan, full=all_keys, width=term.width))
        term.data(counts_line(report.plan))
    for warning in report.warnings:
        term.warn(warning + " (msn convert refuses it; the mirror or cache holds the "
                  f"wrong file: msn download --force {report.source.name})")
    report.plan.require_ok()


def _entries_table(ck: Checkpoint) -> Table:
    t = Table(title=f"{ck.path}", title_justify="left")
    t.add_column("entry")
    t.add_column("type")
    t.add_column("tensors", justify="right")
    t.add_column("size", justify="right")
    for e in ck.entries:
        t.add_row(e.name, e.kind if e.value is None else f"{e.kind} = {e.value}",
                  str(e.tensors) if e.tensors else "", human_size(e.nbytes) if e.nbytes else "")
    t.caption = (f"{ck.layout} layout, {human_size(ck.file_size)} on disk, {ck.storage}; "
                 f"converting '{ck.encoder_key or 'the state dict'}'"
                 f"{' (keys prefixed module.)' if ck.prefixed else ''}")
    return t


SHAPE_KEYS = ("hidden_size", "num_hidden_layers", "intermediate_size", "patch_size", "image_size")
"""config.json values that the weights' shapes give (the manifest's provenance names the rest)."""


def _refuse_ignored(ignored: dict[str, bool], what: str) -> None:
    from msn_cli.errors import UsageError

    given = [name for name, on in ignored.items() if on]
    if given:
        raise UsageError(f"{', '.join(given)} applies to one checkpoint, not to {what}",
                         hint="give one checkpoint file to msn inspect for that")


def _inspect_run(folder: Path, term: Term) -> None:
    from msn_cli.cli.render import run_checkpoints_table, run_config_table
    from msn_cli.original.runfolder import inspect_run

    report = inspect_run(folder)
    if term.json_mode:
        term.emit_json(report.to_dict())
    else:
        term.data(run_checkpoints_table(report, term.width))
        term.data(run_config_table(report))
    report.require_ok()


def _weights_folder(term: Term, path: Path) -> Path:
    """The model folder a ``.safetensors`` file belongs to, said so; a lone one is refused."""
    from msn_cli.errors import UsageError

    if is_model_folder(path.parent):
        term.info(f"{path.name} is the weights of the model folder {path.parent}: "
                  "showing the folder")
        return path.parent
    raise UsageError(f"{path} is a safetensors file, not an original MSN checkpoint",
                     hint="msn inspect reads original checkpoints (.pth.tar) and model folders "
                          "(config.json beside the weights): give the folder that holds it")


def _inspect_folder(term: Term, folder: Path) -> None:
    """A model folder: what it is, its config with where each value came from, the last
    verify, and the command that fits next."""
    from msn_cli.hf.folder_report import describe_folder

    report = describe_folder(folder)
    if term.json_mode:
        term.emit_json(report.to_dict())
        return
    origin = {str(p.get("key")): f"{p.get('origin')}: {p.get('source')}"
              for p in report.provenance}
    t = Table(title=f"{folder}: " + ("a folder msn convert wrote" if report.by_msn else
                                     "a Hugging Face model folder (not written by msn)"),
              title_justify="left")
    t.add_column("config.json")
    t.add_column("value", overflow="fold")
    t.add_column("known from", overflow="fold")
    for key, value in report.config.items():
        shapes = report.by_msn and key in SHAPE_KEYS
        t.add_row(key, str(value), origin.get(key, "weights: their shapes" if shapes else ""))
    term.data(t)
    if report.source:
        term.data("\n".join(["source:", *(f"  {k} {v}" for k, v in report.source.items())]))
    if report.files:
        term.data("files: " + ", ".join(f"{name} ({human_size(size)})"
                                        for name, size in report.files.items()))
    term.data(f"verify: {report.verify_words()}")
    for step in report.next_steps():
        term.info(step)
