"""``msn verify``: prove a converted folder computes what the original network computes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from msn_cli.cli.options import BaseUrlOpt, CacheDirOpt, ConfigOpt, JsonOpt, NumHeadsOpt, QuietOpt, VerboseOpt
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
    out: Annotated[Path, typer.Argument(help="The folder msn convert wrote.", show_default=False)],
    source: SourceOpt = None,
    image: ImageOpt = None,
    against: AgainstOpt = None,
    num_heads: NumHeadsOpt = None,
    config: ConfigOpt = None,
    no_record: NoRecordOpt = False,
    effect: EffectOpt = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    cache_dir: CacheDirOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Check that a converted folder computes what the original network computes.

    files: the manifest's hashes match; config.json and the weights agree.
    loading: from_pretrained reports no missing/unexpected/mismatched keys.
    config: every computation-relevant value matches the source checkpoint.
    parity: an independent original ViT on the source vs the converted model,
    all tokens: the embeddings at the native size, every layer at a smaller one
    (seeded inputs); names the first bad layer.
    golden: published values of the five released models (needs --image).
    against: tensor-by-tensor comparison with another folder or Hub repo.

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
        report = verify_folder(out, source=source, image=image, against=against,
                               cache_dir=cache_dir, base_url=base_url, num_heads=num_heads,
                               config=config, progress=progress, preprocessing_effect=effect)
    finish(term, report, out, record=not no_record)


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
        raise VerificationFailed(
            f"verify failed: {report.summary()}",
            hint="'checks' and 'layers' in the JSON say which check and which layer"
            if term.json_mode else "the tables above show which check and which layer")


def show_report(term: Term, report: VerifyReport, verbose: int) -> None:
    """The checks, parity per layer, and (on failure or with -v) each check's rows."""
    term.data(checks_table(report, timed=bool(verbose)))
    for size in dict.fromkeys(s.size for s in report.layers):
        term.data(layers_table(report, size, full=bool(verbose)))
    against_check = report.check("against")
    if against_check is not None and against_check.rows and (verbose or not against_check.passed):
        term.data(against_table(against_check))
    for c in report.checks:
        if c.name in ("preprocessing", "image") and c.rows and (verbose or c.passed is False):
            term.data(photos_table(c))
        if verbose and c.name in ("files", "config") and c.rows:
            term.data(rows_table(c))
    if report.seconds:
        term.detail("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in report.seconds.items()))


def checks_table(report: VerifyReport, timed: bool = False) -> Table:
    """One row per check; with ``timed``, the seconds each took."""
    t = Table(title=f"msn verify {report.folder} ({report.dtype})", title_justify="left")
    t.add_column("check", no_wrap=True)
    t.add_column("result", no_wrap=True)
    if timed:
        t.add_column("seconds", justify="right", no_wrap=True)
    t.add_column("detail", overflow="fold")
    for c in report.checks:
        time = [f"{c.seconds:.2f}" if c.seconds is not None else ""] if timed else []
        t.add_row(c.name, styled(*_STATUS[c.passed]), *time, c.detail)
    if report.tolerance:
        t.caption = (f"parity tolerance ({report.dtype}): max abs err <= {report.tolerance.atol:g} x "
                     f"max(1, max|reference|) per layer, cosine >= {report.tolerance.cosine_min}")
    return t


def layers_table(report: VerifyReport, size: int, full: bool = False) -> Table:
    first = report.first_bad_layer
    n = sum(1 for i in report.inputs if i["size"] == size)
    t = Table(title=f"Parity per layer at {size} px (all tokens, {n} input{'s' if n != 1 else ''})",
              title_justify="left")
    cols = [("layer", "left")]
    if full:
        cols += [("Hugging Face", "left"), ("original", "left")]
    cols += [("max abs err", "right"), ("tolerance", "right"), ("mean abs err", "right"),
             ("min cosine", "right"), ("result", "left")]
    for col, just in cols:
        t.add_column(col, justify=just, no_wrap=True)  # type: ignore[arg-type]
    for s in report.layers:
        if s.size != size:
            continue
        result = styled("pass", "green") if s.passed else styled("FAIL", "bold red")
        if first is s:
            result.append(" <- first bad layer", style="bold red")
        names = [s.name, s.hf, s.original] if full else [s.name]
        t.add_row(*names, f"{s.max_abs_err:.2e}", f"{s.allowed:.2e}",
                  f"{s.mean_abs_err:.2e}", f"{s.min_cosine:.7f}",
                  result)
    return t


def against_table(check: CheckResult) -> Table:
    t = Table(title="Tensor-by-tensor comparison (--against)", title_justify="left")
    t.add_column("key", overflow="fold")
    t.add_column("status")
    t.add_column("shape")
    t.add_column("dtype here / there")
    t.add_column("max abs diff", justify="right")
    for r in check.rows:
        style = "green" if r.get("ok") else "bold red"
        shape = _dims(r.get("shape"))
        if "other_shape" in r:
            shape += " vs " + _dims(r["other_shape"])
        dtypes = f"{r['dtype']} / {r['other_dtype']}" if "dtype" in r else ""
        t.add_row(str(r["key"]), styled(str(r["status"]), style), shape, dtypes,
                  _num(r.get("max_abs_diff"), ".1e"))
    return t


def rows_table(check: CheckResult) -> Table:
    t = Table(title=f"{check.name} check", title_justify="left")
    keys = [k for k in check.rows[0] if k not in ("expected_sha256",)]
    for k in keys:
        t.add_column(k, overflow="fold")
    for r in check.rows:
        t.add_row(*(str(r.get(k, "")) for k in keys))
    return t


def photos_table(check: CheckResult) -> Table:
    """Per photo: the processor's pixels against the independent transform, and the effect."""
    n = check.numbers
    t = Table(title=f"{check.name}: {n.get('processor', '')} ({n.get('backend', '')} backend) "
                    f"vs the '{n.get('preprocessing', '')}' transform, pixels in normalised units",
              title_justify="left")
    for col in ("photo", "size", "crop (left, top)", "max diff", "mean diff", "cls max err",
                "cls cosine", "tokens min cosine", "result"):
        t.add_column(col, justify="left" if col in ("photo", "result") else "right", overflow="fold")
    for r in check.rows:
        g, e = _mapping(r.get("geometry")), _mapping(r.get("effect"))
        crop = (f"{g['left']}, {g['top']}" + (f" (floor {g['floor_left']}, {g['floor_top']})"
                                               if g.get("odd_margin") else "")) if g else ""
        style = "green" if r.get("ok") else "bold red"
        result = styled(str(r.get("status")), style)
        t.add_row(str(r.get("photo")), _dims(r.get("size")), crop,
                  _num(r.get("max_abs_pixel_diff"), ".4f"), _num(r.get("mean_abs_pixel_diff"), ".5f"),
                  _num(e.get("cls_max_abs_err"), ".2e"), _num(e.get("cls_cosine"), ".6f"),
                  _num(e.get("tokens_min_cosine"), ".6f"), result)
    return t


def _num(v: object, fmt: str) -> str:
    return format(v, fmt) if isinstance(v, (int, float)) else ""


def _dims(v: object) -> str:
    """A shape or an image size as ``224x224``."""
    return "x".join(map(str, v)) if isinstance(v, (list, tuple)) else ""


def _mapping(v: object) -> Mapping[str, object]:
    return v if isinstance(v, dict) else {}
