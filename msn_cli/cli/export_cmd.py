"""``msn export``: back to a checkpoint the original MSN training code resumes from."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from msn_cli.cli.completion import sources
from msn_cli.cli.options import (
    BaseUrlOpt,
    CacheDirOpt,
    EncoderOpt,
    ForceOpt,
    JsonOpt,
    NumHeadsOpt,
    QuietOpt,
    VerboseOpt,
    encoder_choice,
)
from msn_cli.cli.term import Term
from msn_cli.util.fmt import human_size

if TYPE_CHECKING:
    from msn_cli.conversion.export import ExportPlan, ExportResult

SourceArg = Annotated[str, typer.Argument(
    help="A checkpoint file (released or training), a released name (vits16, vitb16, "
         "vitl16, vitb4, vitl7), a URL, a ViTMSNModel folder (msn convert's output or a "
         "downloaded Hub model), or a Hub repo id (owner/name: its config and safetensors "
         "weights are fetched).", autocompletion=sources, show_default=False)]
OutArg = Annotated[Path, typer.Argument(help="The checkpoint file to write (written whole or "
                                             "not at all).", show_default=False)]
SingleProcessOpt = Annotated[bool, typer.Option(
    "--single-process", help="Write keys without the 'module.' prefix, for a run with "
    "world_size 1 (one process, no DistributedDataParallel). The default, with 'module.', "
    "is for a multi-GPU run (world_size > 1), as the released files are: the original code "
    "loads the networks strictly, so the file must match the run it goes to.")]
EpochOpt = Annotated[int, typer.Option(
    "--epoch", min=0, help="The epoch the run resumes at. 0 (the default) restarts the "
    "learning-rate, weight-decay, momentum and sharpening schedules from their beginning, "
    "which is what continuing on new data wants; N fast-forwards them by N epochs, as when "
    "the original run is continued.")]
HeadFromOpt = Annotated[Optional[str], typer.Option(
    "--head-from", help="A checkpoint (file, released name or URL) whose projection head "
    "(fc.*) and prototypes to carry \\[default: the source's own; a folder has none, so "
    "they are initialised as the original init_model does].", show_default=False)]
ProjHiddenOpt = Annotated[Optional[int], typer.Option(
    "--proj-hidden", min=1, help="Hidden size of an initialised head (meta.hidden_dim) "
    "\\[default: 2048].", show_default=False)]
ProjOutOpt = Annotated[Optional[int], typer.Option(
    "--proj-out", min=1, help="Output size of an initialised head and of the prototypes "
    "(meta.output_dim) \\[default: 256].", show_default=False)]
NumPrototypesOpt = Annotated[Optional[int], typer.Option(
    "--num-prototypes", min=1, help="Prototypes of an initialised head (criterion.num_proto) "
    "\\[default: 1024].", show_default=False)]
BnOpt = Annotated[Optional[bool], typer.Option(
    "--bn/--no-bn", help="BatchNorm in an initialised head (meta.use_bn) \\[default: --bn].",
    show_default=False)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of an initialised head and "
                                                     "prototypes.")]
LrOpt = Annotated[Optional[float], typer.Option(
    "--lr", help="The run's optimization.lr, for the prototypes' parameter group and the "
    "'lr' entry \\[default: the source's, else 0.001]; the lr schedule sets every group's lr "
    "at the first step.", show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")]
AllKeysOpt = Annotated[bool, typer.Option("--all-keys", help="List every key of the output.")]


def export(
    source: SourceArg,
    out: OutArg,
    encoder: EncoderOpt = "target",
    single_process: SingleProcessOpt = False,
    epoch: EpochOpt = 0,
    head_from: HeadFromOpt = None,
    proj_hidden: ProjHiddenOpt = None,
    proj_out: ProjOutOpt = None,
    num_prototypes: NumPrototypesOpt = None,
    bn: BnOpt = None,
    seed: SeedOpt = 0,
    lr: LrOpt = None,
    num_heads: NumHeadsOpt = None,
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
    all_keys: AllKeysOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    cache_dir: CacheDirOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Write a checkpoint that the original MSN training code (src/msn_train.py) resumes from.

    The output holds what the original load_checkpoint reads: encoder (a copy of the target
    encoder; --encoder online takes a training checkpoint's online network), target_encoder,
    both with the projection head fc.*, prototypes, opt (a fresh AdamW state in the original
    three parameter groups: no moments), epoch, and the other numbers save_checkpoint writes.
    A folder's backbone goes back to the original layout (qkv joined); its head and
    prototypes come from --head-from or are initialised, and the output says which.

    Exit codes: 0 written, 2 usage or OUT exists (use --force), 3 bad source, 4 network,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

    Examples:

      msn export vits16 ./vits16-resume.pth.tar

      msn export ./vit-msn-small ./resume.pth.tar --head-from vits16

      msn export facebook/vit-msn-small ./resume.pth.tar --head-from vits16

      msn export run/latest.pth.tar out.pth.tar --encoder online --single-process

      msn export vitb16 ./resume.pth.tar --dry-run --all-keys
    """
    from msn_cli.conversion.export import HeadOptions, resolve_export_source
    from msn_cli.conversion.export import export as run_export
    from msn_cli.transfer.sources import resolve_source

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    with term.progress() as progress:
        src = resolve_export_source(source, cache_dir=cache_dir, base_url=base_url,
                                    progress=progress, notify=term.info)
        hsrc = (resolve_source(head_from, cache_dir=cache_dir, base_url=base_url,
                               progress=progress, notify=term.info) if head_from else None)
        result = run_export(
            src, out, encoder=encoder_choice(encoder), single_process=single_process,
            epoch=epoch, head_from=hsrc,
            head=HeadOptions(proj_hidden, proj_out, num_prototypes, bn, seed),
            lr=lr, num_heads=num_heads, force=force, dry_run=dry_run, progress=progress)
    if json_out:
        term.emit_json(result.to_dict(keys=all_keys))
        return
    _show(term, result, out, all_keys=all_keys, verbose=verbose, quiet=quiet)


def _show(term: Term, result: ExportResult, out: Path, *, all_keys: bool, verbose: int,
          quiet: bool) -> None:
    """The plan as asked, what the output holds and how to resume from it, and the result."""
    plan = result.plan
    if result.dry_run or all_keys:
        term.data(_plan_table(plan, all_keys))
    elif verbose:  # detail, on stderr: stdout holds the same result with or without -v
        term.detail_data(_plan_table(plan, all_keys))
    h = plan.head
    a = plan.arch
    term.info(f"encoder: {plan.encoder_from}; keys {'with module.' if plan.prefixed else 'bare'}"
              f" ({'multi-GPU run, world_size > 1' if plan.prefixed else 'single-process run'})")
    head_line = (f"head and prototypes: {h.detail} (fc {a.hidden_size} -> {h.hidden_dim} -> "
                 f"{h.hidden_dim} -> {h.output_dim}, {'with' if h.use_bn else 'no'} BatchNorm; "
                 f"{h.num_prototypes} x {h.output_dim} prototypes)")
    if h.origin == "initialised":  # a warning: shown under -q too
        term.warn(head_line)
    else:
        term.info(head_line)
    groups = ", ".join(f"{g['parameters']}" for g in plan.opt_summary())
    term.info(f"opt: fresh AdamW state, groups of {groups} parameters, no moments; "
              f"epoch {plan.numbers['epoch']}"
              + (" (schedules restart)" if plan.numbers["epoch"] == 0 else ""))
    term.info("resume with meta.model_name: " + (" or ".join(plan.model_names) or "(none of the "
              "family)") + f", meta.hidden_dim: {h.hidden_dim}, meta.output_dim: {h.output_dim}, "
              f"meta.use_bn: {str(h.use_bn).lower()}, criterion.num_proto: {h.num_prototypes}")
    for k, why in plan.assumed.items():
        term.detail(f"{k}: {why}")
    for n in plan.notes:
        term.warn(n)
    if result.dry_run:
        term.info(f"dry run: would write about {human_size(plan.output_bytes)} of tensors to "
                  f"{out}; nothing written")
    else:
        term.success(f"wrote {result.out} ({human_size(result.size or 0)})")
        term.line(str(result.out))


def _plan_table(plan: ExportPlan, all_keys: bool) -> Table:
    t = Table(title="Export plan", title_justify="left")
    for col in ("entry", "key", "shape", "dtype", "from"):
        t.add_column(col, overflow="fold")
    pre = plan.prefix
    for x in plan.tensors:
        if not all_keys and (x.entry == "encoder" and x.origin.startswith("copy of")):
            continue
        if not all_keys and ".blocks." in f".{x.key}" and not x.key.startswith("blocks.0."):
            continue
        t.add_row(x.entry, pre + x.key if x.key else "", str(list(x.shape)), x.dtype,
                  x.origin)
    for g in plan.opt_summary():
        t.add_row("opt", f"group '{g['group']}'", f"{g['parameters']} params", "",
                  f"lr {g.get('lr')}, weight_decay {g.get('weight_decay')}"
                  + "".join(f", {k} {v}" for k, v in g["extra_keys"].items()))
    for k, v in plan.numbers.items():
        t.add_row(k, "", "", "", f"{v}" + ("" if k not in plan.assumed else
                                           " (not known)" if v is None else " (assumed)"))
    if not all_keys:
        t.caption = ("block 0 stands for every block; encoder rows that copy target_encoder "
                     "are folded (--all-keys lists every key)")
    return t
