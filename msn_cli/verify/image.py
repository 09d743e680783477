"""verify's ``image`` check (with ``--image``): one photo end to end.

The photo through the folder's processor and the converted model, against the photo through
the independent transform and the independent reference (:mod:`msn_cli.original.reference`)
on the source checkpoint. Passes when the pixels pass (:mod:`msn_cli.verify.photos`) and the
converted model on the processor's pixels matches the reference on the same pixels within the
parity tolerance; the end-to-end difference (processor + converted model against transform +
reference) is reported.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.verify.photos import (
    compare_photo,
    declared_choice,
    folder_processor,
    load_photo,
    model_output,
    output_effect,
)
from msn_cli.verify.report import CheckResult, Json, Tolerance

if TYPE_CHECKING:
    from msn_cli.original.architecture import Architecture
    from msn_cli.verify.context import VerifyContext


def run(ctx: VerifyContext) -> CheckResult:
    if ctx.image is None:
        return CheckResult("image", None, "skipped: no --image given")
    return check_image(ctx.folder, ctx.model, ctx.reference, ctx.arch, ctx.dtype, ctx.image,
                       ctx.tolerance)


def check_image(folder: Path, model: Any, reference: Any, arch: Architecture, dtype: str,
                image: Path, tolerance: Tolerance) -> CheckResult:
    """End to end: processor + converted model vs independent transform + independent reference."""
    import torch

    from msn_cli.original.reference import run_reference

    if model is None or reference is None:
        return CheckResult("image", None, "skipped: the converted model did not load")
    choice = declared_choice(folder, arch.image_size)
    loaded = folder_processor(folder, "image")
    if isinstance(loaded, CheckResult):
        return loaded
    processor, backend = loaded
    photo = load_photo(image)
    res = compare_photo(processor, backend, photo, choice, arch.image_size)
    got = model_output(model, res.pixels, dtype)
    ref_same = run_reference(reference, torch.from_numpy(res.pixels)[None]).final
    ref_orig = run_reference(reference, torch.from_numpy(res.expected)[None]).final
    stage = output_effect(got, ref_same)
    allowed = tolerance.atol * max(1.0, float(ref_same.abs().max()))
    model_ok = stage["tokens_max_abs_err"] <= allowed and stage["tokens_min_cosine"] >= tolerance.cosine_min
    e2e = output_effect(got, ref_orig)
    numbers: dict[str, Json] = {
        "photo": photo.name, "backend": backend, "preprocessing": choice,
        "pixels": res.row.get("status"), "max_abs_pixel_diff": res.row.get("max_abs_pixel_diff"),
        "mean_abs_pixel_diff": res.row.get("mean_abs_pixel_diff"),
        "model_max_abs_err": stage["tokens_max_abs_err"], "model_allowed": allowed,
        "end_to_end_cls_max_abs_err": e2e["cls_max_abs_err"],
        "end_to_end_cls_cosine": e2e["cls_cosine"],
        "end_to_end_tokens_max_abs_err": e2e["tokens_max_abs_err"],
        "end_to_end_tokens_min_cosine": e2e["tokens_min_cosine"]}
    text = (f"{photo.name}: pixels {res.row['status']} ({backend}); converted model vs reference "
            f"on the processor's pixels: max abs err {stage['tokens_max_abs_err']:.1e} "
            f"(tol {allowed:.1e}); end to end: cls cosine {e2e['cls_cosine']:.6f}, max abs err "
            f"{e2e['cls_max_abs_err']:.2e}, all tokens min cosine {e2e['tokens_min_cosine']:.6f}")
    return CheckResult("image", res.ok and model_ok, text, numbers, [res.row])
