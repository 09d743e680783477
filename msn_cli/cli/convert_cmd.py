"""``msn convert``: an original checkpoint to a ViTMSNModel folder."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from msn_cli.cli.completion import choices, sources
from msn_cli.cli.options import (
    BaseUrlOpt,
    CacheDirOpt,
    ConfigOpt,
    EncoderOpt,
    ForceOpt,
    JsonOpt,
    NoConfigOpt,
    NumHeadsOpt,
    QuietOpt,
    VerboseOpt,
    config_choice,
    encoder_choice,
)
from msn_cli.cli.render import arch_table, assumption_warnings, counts_line, keydiff_table
from msn_cli.cli.term import Term, styled
from msn_cli.conversion.plan import DTYPES
from msn_cli.hf.folder import SAFE_WEIGHTS
from msn_cli.original.preprocess import PREPROCESSING
from msn_cli.util.fmt import human_size

if TYPE_CHECKING:
    from msn_cli.conversion.batch import BatchItem
    from msn_cli.conversion.convert import ConvertResult
    from msn_cli.conversion.plan import ConversionPlan

SourceArg = Annotated[str, typer.Argument(
    help="A checkpoint file, a released name (vits16, vitb16, vitl16, vitb4, vitl7) or an "
         "entry of msn cache ls, a URL, or 'all' for the five released checkpoints (OUT is "
         "then a parent folder; a rerun skips those already converted there).",
    autocompletion=sources, show_default=False)]
OutArg = Annotated[Path, typer.Argument(help="Output folder (created whole or not at all).",
                                        show_default=False)]
DtypeOpt = Annotated[Optional[str], typer.Option(
    "--dtype", metavar="|".join(DTYPES), autocompletion=choices(DTYPES),
    help="The weights' dtype \\[default: as stored].", show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")]
NoVerifyOpt = Annotated[bool, typer.Option("--no-verify", help="Skip msn verify after writing.")]
PreprocessingOpt = Annotated[str, typer.Option(
    "--preprocessing", metavar="|".join(PREPROCESSING), autocompletion=choices(list(PREPROCESSING)),
    help="The preprocessor_config.json to write: 'msn' (MSN's own "
    "evaluation transform: short side 256, center crop 224) or 'seed' (the official "
    "uploads' whole-image resize to 224x224).")]
AllKeysOpt = Annotated[bool, typer.Option("--all-keys", help="List every key of every block.")]


def convert(
    source: SourceArg,
    out: OutArg,
    dtype: DtypeOpt = None,
    encoder: EncoderOpt = "target",
    num_heads: NumHeadsOpt = None,
    config: ConfigOpt = None,
    no_config: NoConfigOpt = False,
    dry_run: DryRunOpt = False,
    no_verify: NoVerifyOpt = False,
    preprocessing: PreprocessingOpt = "msn",
    force: ForceOpt = False,
    all_keys: AllKeysOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    cache_dir: CacheDirOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Convert an original MSN checkpoint into a Hugging Face ViTMSNModel folder.

    Writes model.safetensors (canonical key names: loads in transformers 4.x and 5.x),
    config.json, preprocessor_config.json and msn_manifest.json, then runs msn verify
    and records the result. The folder appears only when complete; an existing folder is
    replaced only with --force, and only after the new one is complete.

    Exit codes: 0 converted (and verified), 1 verify failed, 2 usage, 3 bad checkpoint,
    4 network, 130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

    Examples:

      msn convert vits16 ./vit-msn-small

      msn convert ./vitb16_600ep.pth.tar ./out --dtype float16

      msn convert vitl16 ./out --dry-run --all-keys

      msn convert all ./msn-models     # all five, into ./msn-models/<name>

      msn convert vits16 ./out --preprocessing seed   # the official uploads' processor
    """
    from msn_cli.conversion.convert import convert as run_convert
    from msn_cli.errors import VerificationFailed
    from msn_cli.transfer.sources import resolve_source

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    config = config_choice(config, no_config)
    if source.lower() == "all" and not Path(source).exists():
        if config is not None:
            from msn_cli.errors import UsageError

            raise UsageError("--config and --no-config apply to one checkpoint of one run, "
                             "not to 'all'",
                             hint="the five released checkpoints need no run config")
        _convert_all(term, out, cache_dir=cache_dir, base_url=base_url, dtype=dtype,
                     encoder=encoder_choice(encoder), num_heads=num_heads,
                     preprocessing=_preprocessing(preprocessing), force=force, dry_run=dry_run,
                     verify=not no_verify)
        return
    said: list[ConversionPlan] = []

    def say_plan(plan: ConversionPlan) -> None:  # as soon as it is known, before the writing
        if not term.json_mode:
            _say_plan(term, plan)
            said.append(plan)

    with term.progress() as progress:
        src = resolve_source(source, cache_dir=cache_dir, base_url=base_url, progress=progress,
                             notify=term.info)
        result = run_convert(src, out, dtype=dtype, encoder=encoder_choice(encoder),
                             num_heads=num_heads, config=config, force=force, dry_run=dry_run,
                             verify=not no_verify, preprocessing=_preprocessing(preprocessing),
                             progress=progress, on_plan=say_plan)
    _show(term, result, out, all_keys=all_keys, verbose=verbose, plan_said=bool(said))
    if result.verify is not None and not result.verify.get("passed"):
        raise VerificationFailed(
            f"verify failed: {result.verify.get('summary', 'see msn verify')}",
            hint=f"the folder was kept for inspection at {result.out}; "
                 "msn push refuses it. Run msn verify on it for the full report")


def _say_plan(term: Term, plan: ConversionPlan) -> None:
    for warning in assumption_warnings(plan):
        term.caution(warning)
    term.info(counts_line(plan))


def _show(term: Term, result: ConvertResult, out: Path, *, all_keys: bool, verbose: int,
          plan_said: bool = False) -> None:
    """The result: JSON, or the plan's tables as asked and a line on what was written (the
    warnings and the counts line unless ``plan_said``: convert said them as the plan was built)."""
    plan = result.plan
    if term.json_mode:
        for warning in assumption_warnings(plan):
            term.caution(warning)
        payload = result.to_dict()
        if not all_keys:
            payload["plan"].pop("keys", None)
        term.emit_json(payload)
        return
    # the plan is the result of a dry run or --all-keys (stdout); -v adds it as detail (stderr)
    show = term.data if result.dry_run or all_keys else term.detail_data
    width = term.width if result.dry_run or all_keys else term.err.width
    if verbose or result.dry_run:
        show(arch_table(plan))
    if result.dry_run or all_keys or verbose:
        show(keydiff_table(plan, full=all_keys, title="Conversion plan", width=width))
    if not plan_said:
        _say_plan(term, plan)
    if result.dry_run:
        term.info(f"dry run: would write {human_size(plan.output_bytes)} of {plan.dtype} "
                  f"weights to {out}; nothing written")
        return
    term.success(f"wrote {result.out} ({human_size(result.files[SAFE_WEIGHTS]['size'])}"
                 f" {SAFE_WEIGHTS}, {plan.dtype})")
    if result.verify is not None:
        _say_verify(term, result.verify)
    term.line(str(result.out))  # the result, on stdout even with -q


def _preprocessing(name: str) -> str:
    from msn_cli.errors import UsageError
    from msn_cli.original.preprocess import PREPROCESSING

    if name not in PREPROCESSING:
        raise UsageError(f"--preprocessing {name}: not one of {', '.join(PREPROCESSING)}",
                         hint="msn: MSN's evaluation transform (default); seed: 224x224 resize")
    return name


def _say_verify(term: Term, v: Mapping[str, Any]) -> None:
    if v.get("passed"):
        term.success(f"verified: {v.get('summary', 'all checks passed')}")
    else:
        term.failure(f"verify failed: {v.get('summary', '')}")


def _convert_all(term: Term, outdir: Path, *, cache_dir: Path | None, base_url: str | None,
                 **options: Any) -> None:
    from rich.table import Table

    from msn_cli.conversion.batch import convert_all
    from msn_cli.errors import MsnError

    def said(item: BatchItem) -> None:
        if item.skipped:
            term.info(f"{item.name}: {item.message} in {item.out} (--force converts it again)")
        elif item.ok:
            term.success(f"{item.name}: {item.message}")
        else:
            term.failure(f"{item.name}: {item.message}")

    with term.progress() as progress:
        items = convert_all(outdir, cache_dir=cache_dir, base_url=base_url, progress=progress,
                            notify=term.info, on_item=said, **options)
    if term.json_mode:
        term.emit_json({"outdir": str(outdir), "items": [i.to_dict() for i in items],
                        "failed": sum(not i.ok for i in items)})
    else:
        t = Table(title=f"msn convert all -> {outdir}", title_justify="left")
        for col in ("checkpoint", "result", "folder", "detail"):
            t.add_column(col, overflow="fold")
        for i in items:
            result = "skipped" if i.skipped else "ok" if i.ok else f"failed ({i.exit_code})"
            t.add_row(i.name, styled(result, "green" if i.ok else "red"),
                      str(i.out) if i.ok else "—", i.message)
        term.data(t)
    failed = [i for i in items if not i.ok]
    if failed:
        raise MsnError(f"{len(failed)} of {len(items)} conversions failed: "
                       + ", ".join(i.name for i in failed),
                       hint=batch_hint(items, outdir), exit_code=max(i.exit_code for i in failed))


def batch_hint(items: list[BatchItem], outdir: Path) -> str:
    """What a failed ``convert all`` leaves and what to run next, claiming no conversion that
    did not happen."""
    from msn_cli.errors import EXIT_NETWORK

    failed = [i for i in items if not i.ok]
    done = [i.name for i in items if i.ok]
    rerun = "rerun the same command: what is done is skipped"
    if any(i.out.exists() for i in failed):
        rerun += f"; --force converts again what is in {outdir}"
    if not done:
        why = "no network, or none of them is reachable" if all(
            i.exit_code == EXIT_NETWORK for i in failed) else "see each line above"
        return f"nothing was converted ({why}); {rerun}"
    return f"{', '.join(done)} {'is' if len(done) == 1 else 'are'} in {outdir}; {rerun}"
