"""verify's ``preprocessing`` and ``image`` checks, and what decides whether ``golden`` applies.

``preprocessing``
    Loads the folder's image processor as a user would (``AutoImageProcessor.from_pretrained``,
    with whichever backend the installed transformers picks: PIL, or torchvision when it
    imports) and runs it on real photographs of several aspect ratios -- the ones this package
    ships (``msn_cli/photos``: public-domain and CC0 photographs from scikit-image's data
    module) plus every ``--image`` -- against the independent transform the folder declares
    (:mod:`msn_cli.original.preprocess`; ``msn``: MSN's own evaluation transform). Per photo: max and
    mean absolute pixel difference (normalised units) and the effect on the converted model's
    output (``last_hidden_state`` on the processor's pixels vs on the transform's: max abs
    error and cosine of the cls token, and of all tokens) -- ``msn verify`` measures it unless
    ``--no-effect``; convert's own verify does not: it costs two forward passes at the native
    size per photo whose pixels differ, and never decides the check.

    Tolerance (:data:`PIXEL_ATOL`): every pixel within one 8-bit level of the independent
    transform, ``1 / (255 * min(std)) = 0.0175`` in normalised units (torchvision's tensor
    resize and PIL's may round a few pixels differently). For the ``msn`` transform a photo
    whose crop margin is 3 mod 4 pixels is cropped one pixel off by transformers, which floors
    the offset where torchvision rounds it; such a photo passes when the processor's pixels are
    the original transform's with the floored offset (within the same tolerance), and the row
    says so (with its measured output effect where it was measured). Anything else fails.

``image`` (with ``--image``)
    End to end: the photo through the folder's processor and the converted model, against the
    photo through the independent transform and the independent reference
    (:mod:`msn_cli.original.reference`) on the source checkpoint. Passes when the pixels pass as above
    and the converted model on the processor's pixels matches the reference on the same pixels
    within the parity tolerance; the end-to-end difference is reported.

``golden`` applies only when the source is known to be Meta's released file: fetched by its
released name through the download index or from its original URL (the model card's rule,
:func:`msn_cli.hf.card.origin`; Meta publishes no sha256 to recognise a local copy by). A file of
a released shape from elsewhere (an own training run) is skipped, saying why.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.errors import EXIT_BAD_INPUT, MsnError
from msn_cli.hf.folder import read_json_object
from msn_cli.hf.manifest import CONFIG, MANIFEST, PREPROCESSOR
from msn_cli.original import preprocess
from msn_cli.original.architecture import IMAGENET_STD, Architecture
from msn_cli.original.variants import Variant

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

PIXEL_ATOL = 1 / (255 * min(IMAGENET_STD)) * (1 + 1e-4)
"""One 8-bit level in normalised units (the smallest std gives the largest step), plus float slack."""

PHOTOS_DIR = Path(__file__).parent.parent / "photos"
# (file, transposition or None, description): real photographs of several aspect ratios.
# rocket.jpg is 640x427: resized to 383x256, its crop margin is 159 px, 3 mod 4: the odd case.
PHOTOS: tuple[tuple[str, str | None, str], ...] = (
    ("rocket.jpg", None, "DSCOVR launch, 640x427 (odd crop margin)"),
    ("rocket.jpg", "rotate90", "the same, rotated: 427x640 (odd margin, vertical)"),
    ("chelsea.png", None, "Chelsea the cat, 451x300"),
    ("retina.jpg", None, "retina, 1411x1411 (square, large downscale)"),
)


@dataclass
class Photo:
    name: str
    description: str
    image: Image.Image


def bundled_photos() -> list[Photo]:
    from PIL import Image

    out = []
    for file, transpose, desc in PHOTOS:
        with Image.open(PHOTOS_DIR / file) as im:
            img = im.convert("RGB")
        name = file
        if transpose == "rotate90":
            img = img.transpose(Image.Transpose.ROTATE_90)
            name = f"{file} (rotated)"
        out.append(Photo(name, desc, img))
    return out


def load_photo(path: Path) -> Photo:
    from PIL import Image, UnidentifiedImageError

    from msn_cli.util import safeio

    try:  # a regular file only (a FIFO would block), and PIL's decompression-bomb limit
        with safeio.open_regular(path) as f, Image.open(f) as im:
            img = im.convert("RGB")
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as e:
        raise MsnError(f"cannot read the image {path}: {e}", exit_code=EXIT_BAD_INPUT) from e
    return Photo(path.name, f"--image, {img.size[0]}x{img.size[1]}", img)


# --------------------------------------------------------------------------------------------
# Which preprocessing the folder declares
# --------------------------------------------------------------------------------------------

def read_processor_config(folder: Path) -> dict[str, Any] | None:
    return read_json_object(folder / PREPROCESSOR)[0]


def _unreadable(folder: Path) -> str | None:
    """Why ``from_pretrained`` must not be given the folder (it opens both JSON files)."""
    return read_json_object(folder / PREPROCESSOR)[1] or read_json_object(folder / CONFIG)[1]


def declared_choice(folder: Path, image_size: int) -> str:
    """The table entry the folder's manifest records; else the one its config matches; else msn."""
    manifest = read_json_object(folder / MANIFEST)[0] or {}
    record = manifest.get("preprocessing")
    name = record.get("name") if isinstance(record, dict) else None
    if isinstance(name, str) and name in preprocess.PREPROCESSING:
        return name
    raw = read_processor_config(folder)
    found = preprocess.identify(raw, image_size) if raw is not None else None
    return found or preprocess.DEFAULT_PREPROCESSING


# --------------------------------------------------------------------------------------------
# The processor, as a user loads it
# --------------------------------------------------------------------------------------------

class ProcessorUnavailable(Exception):
    """transformers cannot provide image processors in this environment (not the folder's fault)."""


def backend_name(processor: Any) -> str:
    """``pil`` or ``torchvision``: what the processor computes with."""
    bases = {c.__name__ for c in type(processor).__mro__}
    if "TorchvisionBackend" in bases or "BaseImageProcessorFast" in bases:
        return "torchvision"
    return "pil"


def load_processor(folder: Path) -> tuple[Any, str]:
    """``AutoImageProcessor.from_pretrained(folder)``; (processor, backend).

    Raises :class:`ProcessorUnavailable` when image processors cannot be imported here (a
    torchvision that does not match torch breaks all of them), ``ValueError`` with the first
    line of the error when the folder's configuration is refused.
    """
    try:
        from transformers import AutoImageProcessor
    except Exception as e:  # pragma: no cover - transformers itself is a dependency
        raise ProcessorUnavailable(_first_line(e)) from e
    try:
        import torchvision  # noqa: F401  (transformers picks its backend when it imports)
    except ModuleNotFoundError:
        pass
    except Exception as e:
        raise ProcessorUnavailable(f"torchvision is installed but does not import "
                                   f"({_first_line(e)})") from e
    from msn_cli.verify.checks import _quiet_transformers

    try:
        with _quiet_transformers():
            proc = AutoImageProcessor.from_pretrained(str(folder))
    except (ImportError, RuntimeError) as e:
        raise ProcessorUnavailable(_first_line(e)) from e
    except Exception as e:
        raise ValueError(_first_line(e)) from e
    return proc, backend_name(proc)


def _first_line(e: BaseException) -> str:
    return f"{type(e).__name__}: " + ((str(e).strip().splitlines() or [""])[0])[:200]


def processor_pixels(processor: Any, image: Image.Image) -> np.ndarray:
    """The processor's ``pixel_values`` for one image, 3 x H x W float32."""
    out = processor(images=image, return_tensors="pt")["pixel_values"]
    return out[0].float().numpy()


# --------------------------------------------------------------------------------------------
# Comparisons
# --------------------------------------------------------------------------------------------

def _pixel_stats(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    import numpy as np

    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return {"max": float(d.max()), "mean": float(d.mean()),
            "differing": float((d > 1e-6).mean())}


def output_effect(a: Any, b: Any) -> dict[str, float]:
    """Two ``last_hidden_state`` tensors (1 x T x D): cls and all-token max abs err, cosine."""
    import torch

    a, b = a.float()[0], b.float()[0]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)
    return {"cls_max_abs_err": float((a[0] - b[0]).abs().max()), "cls_cosine": float(cos[0]),
            "tokens_max_abs_err": float((a - b).abs().max()), "tokens_min_cosine": float(cos.min())}


def _model_out(model: Any, pixels: np.ndarray, dtype: str) -> Any:
    import torch

    x = torch.from_numpy(pixels)[None].to(getattr(torch, dtype))
    with torch.inference_mode():
        return model(pixel_values=x).last_hidden_state


@dataclass
class PhotoResult:
    row: dict[str, Any]
    ok: bool
    pixels: Any  # the processor's
    expected: Any  # the independent transform's


def compare_photo(processor: Any, backend: str, photo: Photo, choice: str, size: int,
                  model: Any = None, dtype: str = "float32") -> PhotoResult:
    p = preprocess.get(choice)
    expected = p.transform(photo.image, size)
    got = processor_pixels(processor, photo.image)
    row: dict[str, Any] = {"photo": photo.name, "description": photo.description,
                           "size": list(photo.image.size), "backend": backend}
    if choice == "msn":
        row["geometry"] = preprocess.eval_geometry(*photo.image.size, size).to_dict()
    if got.shape != expected.shape:
        row.update(status=f"shape {list(got.shape)}, expected {list(expected.shape)}", ok=False)
        return PhotoResult(row, False, got, expected)
    stats = _pixel_stats(got, expected)
    row.update(max_abs_pixel_diff=stats["max"], mean_abs_pixel_diff=stats["mean"],
               differing_pixels=stats["differing"])
    if stats["max"] == 0:
        status, ok = "identical", True
    elif stats["max"] <= PIXEL_ATOL:
        status, ok = "within one 8-bit level", True
    else:
        status, ok = "differs", False
        if choice == "msn" and row["geometry"]["odd_margin"]:
            floored = preprocess.msn_eval_transform(photo.image, size, floor_crop=True)
            shifted = _pixel_stats(got, floored)
            row["max_abs_diff_to_floored_crop"] = shifted["max"]
            if shifted["max"] <= PIXEL_ATOL:
                status, ok = "one pixel off (odd crop margin: transformers floors the offset)", True
    row.update(status=status, ok=ok)
    if model is not None and stats["max"] == 0:  # the same input: the same output, no need to run
        row["effect"] = {"cls_max_abs_err": 0.0, "cls_cosine": 1.0, "tokens_max_abs_err": 0.0,
                         "tokens_min_cosine": 1.0}
    elif model is not None:
        row["effect"] = output_effect(_model_out(model, got, dtype), _model_out(model, expected, dtype))
    return PhotoResult(row, ok, got, expected)


# --------------------------------------------------------------------------------------------
# The checks
# --------------------------------------------------------------------------------------------

def _unavailable(name: str, why: str) -> Any:
    from msn_cli.verify.checks import CheckResult

    return CheckResult(name, None, f"skipped: transformers cannot load image processors here "
                       f"({why}); install a torchvision built for the installed torch, or "
                       "uninstall torchvision to use the PIL backend")


def _folder_processor(folder: Path, check: str) -> tuple[Any, str] | Any:
    """``(processor, backend)`` as a user loads it, or the ``check``'s row saying why not."""
    from msn_cli.verify.checks import CheckResult

    unreadable = _unreadable(folder)
    if unreadable:  # never hand transformers a FIFO, a device or a huge file to open
        return CheckResult(check, False, unreadable)
    try:
        return load_processor(folder)
    except ProcessorUnavailable as e:
        return _unavailable(check, str(e))
    except ValueError as e:
        return CheckResult(check, False, f"AutoImageProcessor.from_pretrained refuses the folder: {e}")


def check_preprocessing(folder: Path, model: Any, arch: Architecture, dtype: str,
                        images: list[Path] | None = None, effect: bool = False) -> Any:
    """The processor's pixels against the independent transform on every photo; with
    ``effect``, each differing photo's effect on ``model``'s output too (two forward passes
    at the native size per photo: seconds on a ViT-L/7, so only on request)."""
    choice = declared_choice(folder, arch.image_size)
    loaded = _folder_processor(folder, "preprocessing")
    if not isinstance(loaded, tuple):
        return loaded
    processor, backend = loaded
    photos = bundled_photos() + [load_photo(p) for p in images or []]
    rows = []
    for photo in photos:
        try:
            rows.append(compare_photo(processor, backend, photo, choice, arch.image_size,
                                      model if effect else None, dtype).row)
        except Exception as e:  # a processor that crashes on an image is a failed row
            rows.append({"photo": photo.name, "backend": backend, "ok": False,
                         "status": f"the processor failed: {_first_line(e)}"})
    return _summarise("preprocessing", type(processor).__name__, backend, choice, rows)


def _summarise(name: str, cls: str, backend: str, choice: str, rows: list[dict[str, Any]]) -> Any:
    from msn_cli.verify.checks import CheckResult

    numbers: dict[str, Any] = {
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
        text += (f" (max {worst['max_abs_pixel_diff']:.2f}, mean {worst['mean_abs_pixel_diff']:.3f}")
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


def check_image(folder: Path, model: Any, reference: Any, arch: Architecture, dtype: str,
                image: Path, tolerance: Any) -> Any:
    """End to end: processor + converted model vs independent transform + independent reference."""
    import torch

    from msn_cli.original.reference import run_reference
    from msn_cli.verify.checks import CheckResult

    if model is None or reference is None:
        return CheckResult("image", None, "skipped: the converted model did not load")
    choice = declared_choice(folder, arch.image_size)
    loaded = _folder_processor(folder, "image")
    if not isinstance(loaded, tuple):
        return loaded
    processor, backend = loaded
    photo = load_photo(image)
    res = compare_photo(processor, backend, photo, choice, arch.image_size)
    got = _model_out(model, res.pixels, dtype)
    ref_same = run_reference(reference, torch.from_numpy(res.pixels)[None]).final
    ref_orig = run_reference(reference, torch.from_numpy(res.expected)[None]).final
    stage = output_effect(got, ref_same)
    allowed = tolerance.atol * max(1.0, float(ref_same.abs().max()))
    model_ok = stage["tokens_max_abs_err"] <= allowed and stage["tokens_min_cosine"] >= tolerance.cosine_min
    e2e = output_effect(got, ref_orig)
    numbers = {"photo": photo.name, "backend": backend, "preprocessing": choice,
               "pixels": res.row.get("status"), "max_abs_pixel_diff": res.row.get("max_abs_pixel_diff"),
               "mean_abs_pixel_diff": res.row.get("mean_abs_pixel_diff"),
               "model_max_abs_err": stage["tokens_max_abs_err"], "model_allowed": allowed,
               **{f"end_to_end_{k}": v for k, v in e2e.items()}}
    text = (f"{photo.name}: pixels {res.row['status']} ({backend}); converted model vs reference "
            f"on the processor's pixels: max abs err {stage['tokens_max_abs_err']:.1e} "
            f"(tol {allowed:.1e}); end to end: cls cosine {e2e['cls_cosine']:.6f}, max abs err "
            f"{e2e['cls_max_abs_err']:.2e}, all tokens min cosine {e2e['tokens_min_cosine']:.6f}")
    return CheckResult("image", res.ok and model_ok, text, numbers, [res.row])


def golden_skip_reason(manifest: dict[str, Any] | None, variant: Variant) -> str | None:
    """None when the folder's source is known to be ``variant``'s released file; else why not.

    The same rule the model card uses (:func:`msn_cli.hf.card.origin`): fetched by its released
    name or from Meta's URL, in the released layout, with no training record. Shapes never
    decide, and Meta publishes no sha256 of the files.
    """
    from msn_cli.hf.card import origin

    o = origin(manifest or {})
    if o.kind == "released" and o.variant is variant:
        return None
    return (f"the source has {variant.name}'s shape but is not known to be Meta's released "
            f"{variant.filename} ({o.reason}); the published values hold only for that file "
            f"(convert it by name: msn convert {variant.name})")


def against_notes(folder: Path, spec: str, other: Path | None) -> list[str]:
    """A preprocessing difference from the ``--against`` folder is a note, not a failure: the
    weights are what ``against`` compares (the official uploads use the seed's processor)."""
    if other is None:
        return []
    mine, theirs = read_processor_config(folder), read_processor_config(other)
    if mine is None or theirs is None:
        return []
    keys = sorted(k for k in set(mine) | set(theirs)
                  if k in preprocess.RELEVANT_ANY and not preprocess.same_value(mine.get(k), theirs.get(k)))
    if not keys:
        return []

    def describe(cfg: dict[str, Any]) -> str:
        size = cfg.get("crop_size", {}).get("height") if isinstance(cfg.get("crop_size"), dict) else None
        name = preprocess.identify(cfg, int(size)) if size else None
        if name is None and isinstance(cfg.get("size"), dict) and cfg["size"].get("height"):
            name = preprocess.identify(cfg, int(cfg["size"]["height"]))
        return f"{cfg.get('image_processor_type')}" + (f" ('{name}' preprocessing)" if name else "")

    return [f"note: the image processor differs from {spec}'s ({', '.join(keys)}): here "
            f"{describe(mine)}, there {describe(theirs)}; a choice, not a conversion error "
            "(msn convert --preprocessing seed writes what the official uploads use)"]
