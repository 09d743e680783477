"""``msn fewshot``: MSN's low-shot evaluation on the user's own image folders."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.table import Table

from msn_cli.cli.options import BaseUrlOpt, CacheDirOpt, JsonOpt, NumHeadsOpt, QuietOpt, VerboseOpt
from msn_cli.cli.term import Term

if TYPE_CHECKING:
    from msn_cli.fewshot.run import FewshotReport

FolderOpt = Annotated[Path, typer.Option(
    help="An image folder: one sub-folder of images per class (torchvision's ImageFolder layout).",
    show_default=False)]


def _shots(value: str) -> list[int]:
    from msn_cli.errors import UsageError

    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--shots {value}: not a list of numbers",
                         hint="e.g. --shots 1,2,5") from None


def fewshot(
    model: Annotated[str, typer.Argument(
        help="A converted folder, a Hub repo id (facebook/vit-msn-small), or an original "
             "checkpoint: a file, a released name (vits16 ...), a URL or an entry of msn cache ls.",
        show_default=False)],
    train: Annotated[Path, typer.Option("--train", help="Labelled images, one sub-folder per "
                                        "class (torchvision's ImageFolder layout).",
                                        show_default=False)],
    val: Annotated[Path, typer.Option("--val", help="Images to score, with the class folders of "
                                      "--train.", show_default=False)],
    shots: Annotated[str, typer.Option(
        "--shots", help="Labelled images per class, comma-separated; each sampled --splits "
        "times (seeds 0..N-1).")] = "1,2,5",
    splits: Annotated[int, typer.Option("--splits", help="Random splits per shot count.")] = 3,
    subset: Annotated[Optional[list[Path]], typer.Option(
        "--subset", help="MSN's split file (e.g. imagenet_subsets1/1imgs_class.txt: one image "
        "file name per line, or class/file); repeat for several splits. Replaces --shots.",
        show_default=False)] = None,
    lambd: Annotated[float, typer.Option(
        "--lambd", help="L2 regularisation; the classifier uses lambd / n_train (the original "
        "README's value).")] = 0.0025,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 64,
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    solver: Annotated[str, typer.Option(
        "--solver", help="auto (cyanure, the original's solver, when installed, else "
        "scikit-learn), cyanure or sklearn.")] = "auto",
    save_features: Annotated[Optional[Path], typer.Option(
        "--save-features", help="Write the raw features and labels of the images used as "
        "safetensors.", show_default=False)] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing "
                                        "--save-features file.")] = False,
    no_cache: Annotated[bool, typer.Option(
        "--no-cache", help="Neither read nor write the feature cache.")] = False,
    num_heads: NumHeadsOpt = None,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
    cache_dir: CacheDirOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    r"""Score a model's features with MSN's low-shot protocol on your own images.

    The features are the paper's: the cls token as the last block leaves it, before the
    final LayerNorm (not last_hidden_state, not a pooler), each row centred and
    L2-normalised; the classifier is a multinomial logistic regression with an L2 penalty
    and no intercept, lambda = --lambd / n_train (cyanure, as the original, or scikit-learn
    with the equivalent C). Each image's feature is computed once and cached (by model and
    image hash), so a second run with other shots computes nothing new. Top-1 in percent,
    mean and std over the splits. See docs/fewshot.md.

    Needs the fewshot extra: pip install 'msn-cli\[fewshot]'.

    Examples:

      msn fewshot ./vit-msn-small --train pets/train --val pets/val

      msn fewshot vits16 --train pets/train --val pets/val --shots 1,5 --json

      msn fewshot vits16 --train train/ --val val/ --subset 1imgs_class.txt
    """
    from msn_cli.fewshot.run import Options
    from msn_cli.fewshot.run import fewshot as run_fewshot

    opts = Options(shots=tuple(_shots(shots)), splits=splits, subsets=tuple(subset or ()),
                   lambd=lambd, batch_size=batch_size, device=device.lower(), solver=solver.lower(),
                   save_features=save_features, force=force,
                   cache_dir=str(cache_dir) if cache_dir else None, use_cache=not no_cache,
                   base_url=base_url, num_heads=num_heads)
    term = Term(json_mode=json_out, quiet=quiet, verbose=verbose)
    with term.progress() as progress:
        report = run_fewshot(model, train, val, opts, progress)
    for note in report.notes:
        term.caution(note)
    if term.json_mode:
        term.emit_json(report.to_dict())
        return
    term.data(results_table(report))
    if save_features is not None:
        term.detail(f"features written to {save_features}")


def results_table(report: FewshotReport) -> Table:
    """One row per shot count (or split file): top-1 mean ± std over its splits."""
    f = report.features
    rate = f"{f['images_per_second']:.1f} img/s" if f["images_per_second"] else "cached"
    table = Table(title=f"Low-shot top-1 on --val ({report.runs[0].n_val} images, "
                        f"{len(report.classes)} classes), {report.solver}, lambd {report.lambd:g}",
                  caption=f"features: {f['computed']} computed, {f['cached']} from the cache, "
                          f"{f['seconds']:.1f} s")
    for name in ("shots", "splits", "top-1 %", "train top-1 %", "images/class", "features"):
        table.add_column(name, justify="left" if name == "shots" else "right")
    for g in report.groups:
        s = g.summary()
        table.add_row(g.label, str(s["splits"]), f"{s['top1_mean']:.2f} ± {s['top1_std']:.2f}",
                      f"{s['train_top1_mean']:.2f}", f"{g.images_per_class:g}", rate)
    return table
