"""Real photographs through the folder's image processor and through the independent transform.

What the ``preprocessing`` and ``image`` checks share: the bundled photographs (``msn_cli/photos``:
public-domain and CC0 photographs from scikit-image's data module, of several aspect ratios),
the folder's processor loaded as a user loads it (``AutoImageProcessor.from_pretrained``, with
whichever backend the installed transformers picks: PIL, or torchvision when it imports), and
the comparison of one photo's pixels with the transform the folder declares
(:mod:`msn_cli.original.preprocess`; ``msn``: MSN's own evaluation transform).

Tolerance (:data:`PIXEL_ATOL`): every pixel within one 8-bit level of the independent
transform, ``1 / (255 * min(std)) = 0.0175`` in normalised units (torchvision's tensor resize
and PIL's may round a few pixels differently). For the ``msn`` transform a photo whose crop
margin is 3 mod 4 pixels is cropped one pixel off by transformers, which floors the offset
where torchvision rounds it; such a photo passes when the processor's pixels are the original
transform's with the floored offset (within the same tolerance), and the row says so.
Anything else fails.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from msn_cli.hf.folder import folder_files_problem, read_json_object
from msn_cli.hf.manifest import CONFIG, MANIFEST, PREPROCESSOR
from msn_cli.hf.quiet import quiet_transformers
from msn_cli.original import preprocess
from msn_cli.original.architecture import IMAGENET_STD
from msn_cli.verify.context import first_line
from msn_cli.verify.report import CheckResult

if TYPE_CHECKING:
    import numpy as np
    import torch
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


class Effect(TypedDict):
    """Two ``last_hidden_state`` tensors compared: the cls token and all tokens."""

    cls_max_abs_err: float
    cls_cosine: float
    tokens_max_abs_err: float
    tokens_min_cosine: float


NO_EFFECT = Effect(cls_max_abs_err=0.0, cls_cosine=1.0, tokens_max_abs_err=0.0, tokens_min_cosine=1.0)


class PhotoRow(TypedDict, total=False):
    photo: str
    description: str
    size: list[int]
    backend: str
    geometry: dict[str, object]
    max_abs_pixel_diff: float
    mean_abs_pixel_diff: float
    differing_pixels: float
    max_abs_diff_to_floored_crop: float
    status: str
    ok: bool
    effect: Effect


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
    from msn_cli.verify.image_input import read_photo

    img = read_photo(path)  # photo formats only, a pixel limit, decoded once per run
    return Photo(path.name, f"--image, {img.size[0]}x{img.size[1]}", img)


def read_processor_config(folder: Path) -> dict[str, Any] | None:
    return read_json_object(folder / PREPROCESSOR)[0]


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


# -- the processor, as a user loads it -------------------------------------------------------

class ProcessorUnavailable(Exception):
    """transformers cannot provide image processors in this environment (not the folder's fault)."""


def backend_name(processor: object) -> str:
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
        raise ProcessorUnavailable(first_line(e)) from e
    try:
        import torchvision  # noqa: F401  (transformers picks its backend when it imports)
    except ModuleNotFoundError:
        pass
    except Exception as e:
        raise ProcessorUnavailable(f"torchvision is installed but does not import "
                                   f"({first_line(e)})") from e
    try:
        with quiet_transformers():
            proc = AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=False)
    except (ImportError, RuntimeError) as e:
        raise ProcessorUnavailable(first_line(e)) from e
    except Exception as e:
        raise ValueError(first_line(e)) from e
    return proc, backend_name(proc)


def folder_processor(folder: Path, check: str) -> tuple[Any, str] | CheckResult:
    """``(processor, backend)`` as a user loads it, or the ``check``'s result saying why not.

    transformers never sees a folder that holds files it may not, or whose
    ``processor_config.json`` (read first), ``preprocessor_config.json`` or ``config.json``
    names code: it would offer to run it.
    """
    unreadable = read_json_object(folder / PREPROCESSOR)[1] or read_json_object(folder / CONFIG)[1]
    if unreadable:  # never hand transformers a FIFO, a device or a huge file to open
        return CheckResult(check, False, unreadable)
    unsafe = folder_files_problem(folder)
    if unsafe is not None:
        return CheckResult(check, False, f"not loaded: the folder {unsafe}")
    try:
        return load_processor(folder)
    except ProcessorUnavailable as e:
        return CheckResult(check, None, f"skipped: transformers cannot load image processors "
                           f"here ({e}); install a torchvision built for the installed torch, or "
                           "uninstall torchvision to use the PIL backend")
    except ValueError as e:
        return CheckResult(check, False, f"AutoImageProcessor.from_pretrained refuses the folder: {e}")


def processor_pixels(processor: Any, image: Image.Image) -> np.ndarray:
    """The processor's ``pixel_values`` for one image, 3 x H x W float32."""
    out = processor(images=image, return_tensors="pt")["pixel_values"]
    pixels: np.ndarray = out[0].float().numpy()
    return pixels


# -- comparisons -----------------------------------------------------------------------------

def _pixel_stats(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """Max and mean absolute difference, and the fraction of values that differ."""
    import numpy as np

    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return float(d.max()), float(d.mean()), float((d > 1e-6).mean())


def output_effect(a: torch.Tensor, b: torch.Tensor) -> Effect:
    """Two ``last_hidden_state`` tensors (1 x T x D): cls and all-token max abs err, cosine."""
    import torch

    a, b = a.float()[0], b.float()[0]
    cos = torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-12)
    return {"cls_max_abs_err": float((a[0] - b[0]).abs().max()), "cls_cosine": float(cos[0]),
            "tokens_max_abs_err": float((a - b).abs().max()), "tokens_min_cosine": float(cos.min())}


def model_output(model: Any, pixels: np.ndarray, dtype: str) -> torch.Tensor:
    """``last_hidden_state`` of one image (1 x T x D)."""
    import torch

    x = torch.from_numpy(pixels)[None].to(getattr(torch, dtype))
    with torch.inference_mode():
        out: torch.Tensor = model(pixel_values=x).last_hidden_state
    return out


@dataclass(eq=False)
class PhotoResult:
    row: PhotoRow
    ok: bool
    pixels: np.ndarray
    """The processor's."""
    expected: np.ndarray
    """The independent transform's."""


def compare_photo(processor: Any, backend: str, photo: Photo, choice: str, size: int) -> PhotoResult:
    """The processor's pixels of ``photo`` against the independent transform ``choice``."""
    expected = preprocess.get(choice).transform(photo.image, size)
    got = processor_pixels(processor, photo.image)
    row: PhotoRow = {"photo": photo.name, "description": photo.description,
                     "size": list(photo.image.size), "backend": backend}
    geometry = preprocess.eval_geometry(*photo.image.size, size) if choice == "msn" else None
    if geometry is not None:
        row["geometry"] = geometry.to_dict()
    if got.shape != expected.shape:
        row.update({"status": f"shape {list(got.shape)}, expected {list(expected.shape)}", "ok": False})
        return PhotoResult(row, False, got, expected)
    worst, mean, differing = _pixel_stats(got, expected)
    row.update({"max_abs_pixel_diff": worst, "mean_abs_pixel_diff": mean, "differing_pixels": differing})
    if worst == 0:
        status, ok = "identical", True
    elif worst <= PIXEL_ATOL:
        status, ok = "within one 8-bit level", True
    else:
        status, ok = "differs", False
        if geometry is not None and geometry.odd_margin:
            floored = preprocess.msn_eval_transform(photo.image, size, floor_crop=True)
            row["max_abs_diff_to_floored_crop"] = shifted = _pixel_stats(got, floored)[0]
            if shifted <= PIXEL_ATOL:
                status, ok = "one pixel off (odd crop margin: transformers floors the offset)", True
    row.update({"status": status, "ok": ok})
    return PhotoResult(row, ok, got, expected)


def add_effect(model: Any, result: PhotoResult, dtype: str) -> None:
    """The photo's effect on ``model``'s output: its ``last_hidden_state`` on the processor's
    pixels against on the transform's (none when the pixels are identical: the same input
    gives the same output). Nothing for a photo whose pixels could not be compared."""
    if result.row.get("max_abs_pixel_diff") == 0:
        result.row["effect"] = NO_EFFECT.copy()
    elif "max_abs_pixel_diff" in result.row:
        result.row["effect"] = output_effect(model_output(model, result.pixels, dtype),
                                             model_output(model, result.expected, dtype))
