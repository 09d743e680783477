"""``msn verify``: prove a converted folder computes what the original network computes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import RenderableType
from rich.text import Text

from msn_cli.cli.options import (
    BaseUrlOpt,
    CacheDirOpt,
    ConfigOpt,
    JsonOpt,
    NoConfigOpt,
    NumHeadsOpt,
    QuietOpt,
    VerboseOpt,
    config_choice,
)
from msn_cli.cli.render import Col, fitted_table
from msn_cli.cli.term import Term, styled

if TYPE_CHECKING:
    from collections.abc import Mapping

    from msn_cli.verify.report import CheckResult, VerifyReport

_STATUS = {True: ("passed", "green"), False: ("FAILED", "bold red"), None: ("skipped", "dim")}


SourceOpt = Annotated[Optional[str], typer.Option(
    "--source", help="The original checkpoint (file, released name, entry of msn cache ls "
    "or URL); by default "
    "the one the manifest records.", show_default=False)]
ImageOpt = Annotated[Optional[Path], typer.Option(
    "--image", help="COCO val2017 image 000000039769.jpg (from "
    "http://images.cocodataset.org/val2017/000000039769.jpg), to check the published values "
    "of the five released models (golden check).", show_default=False)]
AgainstOpt = Annotated[Optional[str], typer.Option(
    "--against", help="Another Hugging Face folder or Hub repo id (e.g. facebook/vit-msn-small) "
    "to compare tensor by tensor. The per-tensor table is shown when the check fails, or "
    "always with -v (--json always holds it).", show_default=False)]
NoRecordOpt = Annotated[bool, typer.Option(
    "--no-record", help="Do not store the result in msn_manifest.json.")]
EffectOpt = Annotated[bool, typer.Option(
    "--effect/--no-effect", help="Also measure, for each bundled photo whose processor pixels "
    "differ from the independent transform's, the effect on the converted model's output "
    "(two forward passes at the native size per such photo). The pixel comparison, which "
    "decides the check, always runs.")]


def verify(
    folder: Annotated[Path, typer.Argument(help="The folder msn convert wrote.", show_default=False)],
    source: SourceOpt = None,
    image: ImageOpt = None,
    against: AgainstOpt = None,
    num_heads: NumHeadsOpt = None,
    config: ConfigOpt = None,
    no_config: NoConfigOpt = False,
    no_record: NoRecordOpt = False,
    effect: EffectOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    cache_dir: CacheDirOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Check that a converted folder computes what the original network computes.

    The checks, in this order:

      files          the manifest's hashes match; config.json and weights agree
      loading        from_pretrained: no missing, unexpected or mismatched key
      config         every value that matters matches the source checkpoint
      parity         an independent original ViT vs the converted model, per layer
      preprocessing  the processor's pixels vs MSN's transform on bundled photos
      golden         published values of the 5 released models (needs --image)
      image          --image end to end, processor and model vs the original
      against        tensor by tensor vs another folder or Hub repo (--against)

    Parity compares all tokens: the embeddings at the native size, every layer at a smaller
    one (seeded inputs), and names the first bad layer.

    The result is recorded in msn_manifest.json unless --no-record. A folder without
    msn_manifest.json (written by another tool) can be verified with --source: hashes are then
    not checked and nothing is recorded.

    What parity can and cannot prove: it compares the folder with the original
    network built from the same weights, so it catches every weight that is
    mapped, split or stored wrongly. Values that are not in the weights (the
    number of heads, LayerNorm eps, activation) cannot be read from the source:
    verify takes them from --num-heads, the run's config (--config, or the
    params-msn-train.yaml beside the checkpoint), the original model family by
    width, or what the manifest records as given, never from the folder's own
    config.json. So they are checked only against what msn knows or assumes;
    an assumed value (a width outside the family) is reported as ASSUMED.

    Exit codes: 0 every check that ran passed, 1 a check failed,
    3 verify could not run (no source checkpoint, unreadable folder), 4 network,
    130 interrupted (Ctrl-C), 143 terminated (SIGTERM).

    Examples:

      msn verify ./vit-msn-small

      msn verify ./out --source ./vits16_800ep.pth.tar --json

      msn verify ./vit-msn-small --image 000000039769.jpg

      msn verify ./vit-msn-small --against facebook/vit-msn-small
    """
    from msn_cli.verify import verify_folder

    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    with term.progress() as progress:
        report = verify_folder(folder, source=source, image=image, against=against,
                               cache_dir=cache_dir, base_url=base_url, num_heads=num_heads,
                               config=config_choice(config, no_config), progress=progress,
                               preprocessing_effect=effect)
    finish(term, report, folder, record=not no_record)


def finish(term: Term, report: VerifyReport, out: Path, *, record: bool) -> None:
    """Record the report in the manifest (unless told not to), show it, and fail (exit 1)
    unless every check that ran passed."""
    from msn_cli.errors import VerificationFailed
    from msn_cli.hf.manifest import MANIFEST
    from msn_cli.verify import record_in_manifest

    recorded = False
    if record and (out / MANIFEST).is_file():
        record_in_manifest(out, report)
        recorded = True
    for note in report.notes:
        term.caution(note)
    if term.json_mode:
        term.emit_json({**report.to_dict(), "recorded": recorded})
    else:
        show_report(term, report, term.verbose)
        if recorded:
            term.detail(f"recorded in {out / MANIFEST}")
        if report.passed:
            term.success(f"verified: {report.summary()}")
    if not report.passed:
        message, hint = failure_message(report)
        raise VerificationFailed(message, hint=hint or (
            "'checks' and 'layers' in the JSON say which check and which layer"
            if term.json_mode else "the tables above show which check and which layer"))


GOLDEN_IMAGE = "COCO val2017 000000039769.jpg"


def failure_message(report: VerifyReport) -> tuple[str, str | None]:
    """The one line that says why verify failed, and a hint when the cause is known.

    A source that is not the recorded file explains every other failure: that is all it says.
    Else the failed checks by name, and the first bad layer; the tables hold the figures.
    """
    mismatch = report.source.get("mismatch")
    if mismatch:
        cause = mismatch.split(" (", 1)[0] if "converted from" in mismatch else mismatch
        given = report.source.get("given")
        return f"verify failed: {cause}", (
            "every check compares with that file, so the others fail with it; "
            + ("leave out --source to use the one the manifest records, or give that file"
               if given else "give the file it was converted from with --source"))
    failed = [c.name for c in report.checks if c.passed is False]
    first = report.first_bad_layer
    message = "verify failed: " + ", ".join(failed) + (
        f" (first bad layer: {first.name} at {first.size} px)" if first is not None else "")
    golden = report.check("golden")
    if golden is not None and golden.passed is False:
        return message, (f"the golden values are the released model's outputs on {GOLDEN_IMAGE} "
                         "(http://images.cocodataset.org/val2017/000000039769.jpg): with any "
                         "other --image the golden check cannot pass")
    return message, None


def show_report(term: Term, report: VerifyReport, verbose: int) -> None:
    """The checks and parity per layer on stdout, with each check's rows when it failed; -v
    adds, on stderr, the rows of the checks that passed, the modules each layer compares and
    the time each step took (stdout is the same with or without -v)."""
    width, err_width = term.width, term.err.width
    term.data(checks_table(report, width))
    for size in dict.fromkeys(s.size for s in report.layers):
        term.data(layers_table(report, size, width))
    for c in report.checks:
        table = {"against": against_table, "preprocessing": photos_table, "image": photos_table}.get(c.name)
        if table is not None and c.rows:  # the rows: the result when failed, a detail when not
            if c.passed is False:
                term.data(table(c, width))
            else:
                term.detail_data(table(c, err_width))
    if verbose:
        if report.layers:
            term.detail_data(layer_names_table(report, err_width))
        for c in report.checks:
            if c.name in ("files", "config") and c.rows:
                term.detail_data(rows_table(c, err_width))
    steps = {k: v for k, v in report.seconds.items() if k != "total"}
    steps.update((c.name, c.seconds) for c in report.checks if c.seconds is not None)
    if "total" in report.seconds:
        steps["total"] = report.seconds["total"]
    if steps:
        term.detail("time: " + ", ".join(f"{k} {v:.2f}s" for k, v in steps.items()))


def checks_table(report: VerifyReport, width: int = 80) -> RenderableType:
    """One row per check."""
    caption = None
    if report.tolerance:
        caption = (f"parity tolerance ({report.dtype}): max abs err <= {report.tolerance.atol:g} x "
                   f"max(1, max|reference|) per layer, cosine >= {report.tolerance.cosine_min}")
    return fitted_table(f"msn verify {report.folder} ({report.dtype})",
                        [Col("check", lead=True), Col("result", lead=True), Col("detail", words=True)],
                        [[c.name, styled(*_STATUS[c.passed]), c.detail] for c in report.checks],
                        width, caption)


def layers_table(report: VerifyReport, size: int, width: int = 80) -> RenderableType:
    """Parity per layer at one input size: the numbers, and which layer failed first."""
    first = report.first_bad_layer
    n = sum(1 for i in report.inputs if i["size"] == size)
    rows: list[list[str | Text]] = []
    for s in report.layers:
        if s.size != size:
            continue
        result = styled("pass", "green") if s.passed else styled("FAIL", "bold red")
        if first is s:
            result.append(" <- first bad layer", style="bold red")
        rows.append([s.name, f"{s.max_abs_err:.2e}", f"{s.allowed:.2e}", f"{s.mean_abs_err:.2e}",
                     f"{s.min_cosine:.7f}", result])
    cols = [Col("layer", lead=True), Col("max abs err", "right"), Col("tolerance", "right"),
            Col("mean abs err", "right"), Col("min cosine", "right"), Col("result", words=True, lead=True)]
    return fitted_table(f"Parity per layer at {size} px (all tokens, {n} input{'s' if n != 1 else ''})",
                        cols, rows, width)


def layer_names_table(report: VerifyReport, width: int = 80) -> RenderableType:
    """What each parity layer compares: the Hugging Face output and the original module."""
    names = {s.name: (s.hf, s.original) for s in report.layers}
    return fitted_table("Layers compared", [Col("layer", lead=True), Col("Hugging Face"),
                                            Col("original", words=True)],
                        [[name, hf, original] for name, (hf, original) in names.items()], width)


def against_table(check: CheckResult, width: int = 80) -> RenderableType:
    rows: list[list[str | Text]] = []
    for r in check.rows:
        style = "green" if r.get("ok") else "bold red"
        shape = _dims(r.get("shape"))
        if "other_shape" in r:
            shape += " vs " + _dims(r["other_shape"])
        dtypes = f"{r['dtype']} / {r['other_dtype']}" if "dtype" in r else ""
        rows.append([str(r["key"]), styled(str(r["status"]), style), shape, dtypes,
                     _num(r.get("max_abs_diff"), ".1e")])
    cols = [Col("key", lead=True), Col("status", lead=True), Col("shape", words=True),
            Col("dtype here / there", words=True), Col("max abs diff", "right")]
    return fitted_table("Tensor-by-tensor comparison (--against)", cols, rows, width)


def rows_table(check: CheckResult, width: int = 80) -> RenderableType:
    keys = [k for k in check.rows[0] if k not in ("expected_sha256",)]
    cols = [Col(k, lead=i == 0, words=k in ("expected", "found")) for i, k in enumerate(keys)]
    return fitted_table(f"{check.name} check", cols,
                        [[str(r.get(k, "")) for k in keys] for r in check.rows], width)


def photos_table(check: CheckResult, width: int = 80) -> RenderableType:
    """Per photo: the processor's pixels against the independent transform, and the effect."""
    n = check.numbers
    rows: list[list[str | Text]] = []
    for r in check.rows:
        g, e = _mapping(r.get("geometry")), _mapping(r.get("effect"))
        crop = (f"{g['left']}, {g['top']}" + (f" (floor {g['floor_left']}, {g['floor_top']})"
                                               if g.get("odd_margin") else "")) if g else ""
        style = "green" if r.get("ok") else "bold red"
        rows.append([str(r.get("photo")), _dims(r.get("size")), crop,
                     _num(r.get("max_abs_pixel_diff"), ".4f"), _num(r.get("mean_abs_pixel_diff"), ".5f"),
                     _num(e.get("cls_max_abs_err"), ".2e"), _num(e.get("cls_cosine"), ".6f"),
                     _num(e.get("tokens_min_cosine"), ".6f"), styled(str(r.get("status")), style)])
    cols = [Col("photo", words=True, lead=True), Col("size", "right"),
            Col("crop (left, top)", "right", words=True),
            Col("max diff", "right"), Col("mean diff", "right"), Col("cls max err", "right"),
            Col("cls cosine", "right"), Col("tokens min cosine", "right"), Col("result", lead=True)]
    title = (f"{check.name}: {n.get('processor', '')} ({n.get('backend', '')} backend) "
             f"vs the '{n.get('preprocessing', '')}' transform, pixels in normalised units")
    return fitted_table(title, cols, rows, width)


def _num(v: object, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else ""


def _dims(v: object) -> str:
    """A shape or an image size as ``224x224``."""
    return "x".join(map(str, v)) if isinstance(v, (list, tuple)) else ""


def _mapping(v: object) -> Mapping[str, object]:
    return v if isinstance(v, dict) else {}
