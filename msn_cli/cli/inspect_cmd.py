"""``msn inspect``: what is in a checkpoint, the model it implies, and how every key maps."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from .options import BaseUrlOpt, CacheDirOpt, EncoderOpt, JsonOpt, NumHeadsOpt, QuietOpt, VerboseOpt
from .render import arch_table, counts_line, human_bytes, keydiff_table
from .term import Term


def inspect(
    checkpoint: Annotated[str, typer.Argument(
        help="A checkpoint file, a released name (vits16, vitb16, vitl16, vitb4, vitl7) or a URL.",
        show_default=False)],
    encoder: EncoderOpt = "target",
    num_heads: NumHeadsOpt = None,
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

    Examples:

      msn inspect vits16_800ep.pth.tar

      msn inspect vitb16 --json

      msn inspect training.pth.tar --encoder online --all-keys
    """
    from ..inspect import inspect_checkpoint
    from ..sources import resolve_source

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    with term.progress() as progress:
        src = resolve_source(checkpoint, cache_dir=cache_dir, base_url=base_url, progress=progress,
                             notify=term.info)
    report = inspect_checkpoint(src, encoder=_encoder(encoder), num_heads=num_heads)
    if json_out:
        term.emit_json(report.to_dict())
    else:
        ck = report.checkpoint
        t = Table(title=f"{ck.path}", title_justify="left")
        t.add_column("entry")
        t.add_column("type")
        t.add_column("tensors", justify="right")
        t.add_column("size", justify="right")
        for e in ck.entries:
            t.add_row(e.name, e.kind if e.value is None else f"{e.kind} = {e.value}",
                      str(e.tensors) if e.tensors else "", human_bytes(e.nbytes) if e.nbytes else "")
        t.caption = (f"{ck.layout} layout, {human_bytes(ck.file_size)} on disk, {ck.storage}; "
                     f"converting '{ck.encoder_key or 'the state dict'}'"
                     f"{' (keys prefixed module.)' if ck.prefixed else ''}")
        term.data(t)
        term.data(arch_table(report.plan))
        term.data(keydiff_table(report.plan, full=all_keys, width=term.out.width))
        term.data(counts_line(report.plan))
    report.plan.require_ok()


def _encoder(value: str):
    v = value.lower()
    if v not in ("target", "online"):
        from ..errors import UsageError

        raise UsageError(f"unknown encoder '{value}'", hint="choose target or online")
    return v
