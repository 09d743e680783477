"""verify's ``golden`` check: the published values of the five released models.

Only for the released variants, when the source is known to be Meta's released file, and
with ``--image`` (COCO val2017 000000039769): the seed's preprocessing and
``last_hidden_state[0, 0, :3]`` against its published values. Known to be the released file
means what verify observed in its own run (:func:`msn_cli.verify.source.observed_release`):
fetched by its released name or from its original URL, or a file with the sha256 of such a
fetch; never the manifest's word (the model card's rule too, :func:`msn_cli.hf.card.origin`).
A file of a released shape from elsewhere (an own training run) is skipped, saying why.

Tolerance: 1e-4 in float32 (the seed's), ``atol[dtype] * max(1, max|expected|)`` in
float16/bfloat16.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.original.variants import Variant
from msn_cli.verify.photos import load_photo
from msn_cli.verify.report import CheckResult, Json, SourceReport, tolerance_for

if TYPE_CHECKING:
    import torch

    from msn_cli.verify.context import VerifyContext

GOLDEN_ATOL_FLOAT32 = 1e-4
GOLDEN_IMAGE_SIZE = 224


def run(ctx: VerifyContext) -> CheckResult:
    if ctx.variant is None:
        return CheckResult("golden", None, "skipped: not one of the released variants")
    why_not = golden_skip_reason(ctx.source, ctx.variant)
    if why_not is not None:
        return CheckResult("golden", None, "skipped: " + why_not)
    return check_golden(ctx.model, ctx.variant, ctx.image, ctx.dtype)


def golden_skip_reason(source: SourceReport, variant: Variant) -> str | None:
    """None when verify observed the source to be ``variant``'s released file in this run
    (:func:`msn_cli.verify.source.observed_release`); else why not. Shapes never decide, nor
    does the manifest's word, and Meta publishes no sha256 of the files."""
    if source.get("released") == variant.name:
        return None
    return (f"the source has {variant.name}'s shape but msn did not see it to be Meta's released "
            f"{variant.filename} (fetched by that name or from Meta's URL, or with the sha256 of "
            "such a fetch); the published values hold only for that file (convert it by name: "
            f"msn convert {variant.name})")


def golden_pixels(image: Path, size: int = GOLDEN_IMAGE_SIZE) -> torch.Tensor:
    """The seed's preprocessing, done here with PIL and numpy: RGB, a plain bilinear resize to
    ``size`` x ``size`` (no crop), x / 255, ImageNet mean/std; 1 x 3 x size x size float32.

    This is what the seed's ``ViTImageProcessor`` did in transformers 4.x (PIL backend);
    transformers 5.x picks a torchvision backend when one is installed, whose resize differs,
    so verify does not delegate it.
    """
    import torch

    from msn_cli.original.preprocess import seed_transform

    # read as --image is everywhere: a regular file only, within PIL's pixel limit
    return torch.from_numpy(seed_transform(load_photo(image).image, size))[None]


def check_golden(model: Any, variant: Variant | None, image: Path | None, dtype: str) -> CheckResult:
    if variant is None:
        return CheckResult("golden", None, "skipped: not one of the released variants")
    if image is None:
        return CheckResult("golden", None, f"skipped: {variant.name} has published values; give "
                           "--image with COCO val2017 000000039769.jpg to check them")
    if model is None:
        return CheckResult("golden", False, "the model did not load")
    import torch

    pixels = golden_pixels(image, variant.image_size)
    with torch.inference_mode():
        out = model(pixel_values=pixels.to(getattr(torch, dtype))).last_hidden_state
    got = [float(x) for x in out[0, 0, :3].float()]
    want = list(variant.expected_slice)
    atol = GOLDEN_ATOL_FLOAT32 if dtype == "float32" else \
        tolerance_for(dtype).atol * max(1.0, *(abs(w) for w in want))
    err = max(abs(g - w) for g, w in zip(got, want, strict=True))
    numbers: dict[str, Json] = {"got": got, "expected": want, "max_abs_err": err, "atol": atol}
    text = (f"last_hidden_state[0, 0, :3] = {', '.join(f'{g:.4f}' for g in got)}; published "
            f"{', '.join(f'{w:.4f}' for w in want)}; max abs err {err:.1e} (tol {atol:.0e})")
    return CheckResult("golden", err <= atol, text, numbers)
