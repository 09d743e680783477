"""verify's ``preprocessing`` check: the folder's image processor computes the transform it declares.

The folder's processor, loaded as a user loads it, against the independent implementation
of the transform it declares, on the bundled photographs and every ``--image``
(:mod:`msn_cli.verify.photos`: which photos, which backend, the tolerance). Per photo: max
and mean absolute pixel difference (normalised units) and, when asked for, the effect on the
converted model's output (``last_hidden_state`` on the processor's pixels vs on the
transform's: max abs error and cosine of the cls token, and of all tokens). ``msn verify``
measures the effect unless ``--no-effect``; convert's own verify does not. The effect costs
two forward passes of the converted model at the native size per photo whose pixels differ,
and never decides the check.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.verify.context import first_line
from msn_cli.verify.photos import (
    PIXEL_ATOL,
    PhotoRow,
    add_effect,
    bundled_photos,
    compare_photo,
    declared_choice,
    folder_processor,
    load_photo,
)
from msn_cli.verify.report import CheckResult, Json

if TYPE_CHECKING:
    from msn_cli.original.architecture import Architecture
    from msn_cli.verify.context import VerifyContext


def run(ctx: VerifyContext) -> CheckResult:
    return check_preprocessing(ctx.folder, ctx.model, ctx.arch, ctx.dtype,
                               [ctx.image] if ctx.image else [],
                               effect=ctx.options.preprocessing_effect)


def check_preprocessing(folder: Path, model: Any, arch: Architecture, dtype: str,
                        images: list[Path] | None = None, effect: bool = False) -> CheckResult:
    """The processor's pixels against the independent transform on every photo; with
    ``effect`` (and a ``model``), each differing photo's effect on the model's output too."""
    choice = declared_choice(folder, arch.image_size)
    loaded = folder_processor(folder, "preprocessing")
    if isinstance(loaded, CheckResult):
        return loaded
    processor, backend = loaded
    photos = bundled_photos() + [load_photo(p) for p in images or []]
    rows: list[PhotoRow] = []
    for photo in photos:
        try:  # a processor (or with the effect, the model) that crashes on a photo fails its row
            result = compare_photo(processor, backend, photo, choice, arch.image_size)
            if effect and model is not None:
                add_effect(model, result, dtype)
            rows.append(result.row)
        except Exception as e:
            rows.append({"photo": photo.name, "backend": backend, "ok": False,
                         "status": f"the processor failed: {first_line(e)}"})
    return _summarise("preprocessing", type(processor).__name__, backend, choice, rows)


def _summarise(name: str, cls: str, backend: str, choice: str, rows: list[PhotoRow]) -> CheckResult:
    numbers: dict[str, Json] = {
        "processor": cls, "backend": backend, "preprocessing": choice, "photos": len(rows),
        "pixel_atol": PIXEL_ATOL,
        "max_abs_pixel_diff": max((r.get("max_abs_pixel_diff", 0.0) for r in rows), default=0.0),
        "mean_abs_pixel_diff": max((r.get("mean_abs_pixel_diff", 0.0) for r in rows), default=0.0),
    }
    effects = [r["effect"] for r in rows if "effect" in r]
    if effects:
        numbers["cls_max_abs_err"] = max(e["cls_max_abs_err"] for e in effects)
        numbers["cls_min_cosine"] = min(e["cls_cosine"] for e in effects)
        numbers["tokens_min_cosine"] = min(e["tokens_min_cosine"] for e in effects)
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    what = ("MSN's evaluation transform" if choice == "msn" else "the seed's 224x224 resize")
    text = (f"{cls} ({backend} backend) vs {what} on {len(rows)} photos: "
            + ", ".join(f"{n} {s}" for s, n in counts.items()))
    odd = [r for r in rows if r["status"].startswith("one pixel off")]
    if odd:
        worst = max(odd, key=lambda r: r["max_abs_pixel_diff"])
        text += (f" (max {worst['max_abs_pixel_diff']:.2f}, mean {worst['mean_abs_pixel_diff']:.3f}"
                 " against the centred crop; within tolerance of the crop with its offset floored, "
                 f"max {worst.get('max_abs_diff_to_floored_crop', 0.0):.4f}")
        if "effect" in worst:
            e = worst["effect"]
            text += f"; output: cls cosine {e['cls_cosine']:.5f}, max abs err {e['cls_max_abs_err']:.2e}"
        text += ")"
    text += f"; tolerance: one 8-bit level ({PIXEL_ATOL:.4f})"
    bad = [r for r in rows if not r["ok"]]
    if bad:
        text = "FAILED on " + ", ".join(f"{r['photo']} ({r['status']}" + (
            f", max {r['max_abs_pixel_diff']:.3f}" if "max_abs_pixel_diff" in r else "") + ")"
            for r in bad) + "; " + text
    return CheckResult(name, not bad, text, numbers, rows)
