"""Image preprocessing: what MSN's own evaluation fed the network, what the seed wrote, and the
transformers image processor configuration that stands for each -- one table, read by
``convert`` (which ``preprocessor_config.json`` to write), ``verify`` (what to compare it with),
the manifest and the model card.

``msn`` (the default): the original evaluation transform of facebookresearch/msn
(``logistic_eval.py``, the linear evaluation likewise), as torchvision documents its pieces:

1. ``Resize(256)`` on a PIL image: the short side becomes 256, the long side
   ``int(256 * long / short)`` (truncated), resampled by PIL's own ``Image.resize`` with
   ``BILINEAR`` (PIL's filter support widens with the scale factor: that is its antialiasing);
2. ``CenterCrop(224)``: top ``int(round((h - 224) / 2.0))``, left likewise, with Python's
   ``round`` (halves go to the even neighbour);
3. ``ToTensor``: uint8 -> float32, divided by 255;
4. ``Normalize`` with the ImageNet mean and std, in float32.

At another native size ``s`` it scales: short side ``round(s * 256 / 224)``, crop ``s``.

transformers has no processor that rounds the crop offset: its ``center_crop`` floors it, in the
PIL and the torchvision backend alike (transformers 4.57 and 5.x). The two offsets differ only
when the margin ``d = resized - crop`` satisfies ``d % 4 == 3`` (``d / 2`` ends in .5 and its
floor is odd): e.g. a 640x427 photo, resized to 383x256, has ``d = 159`` and crops from column
79 instead of 80. ``BitImageProcessor`` with ``shortest_edge`` and ``crop_size`` is otherwise
the same transform; ``msn verify``'s ``preprocessing`` check measures what remains.

``seed``: what transformers' ``convert_msn_to_pytorch.py`` and the official ``facebook/vit-msn-*``
uploads use: ``ViTImageProcessor``, a plain bilinear resize of the whole image to ``s`` x ``s``
(aspect ratio not kept, no crop), ImageNet mean/std. The published golden values were computed
with it.

Both independent transforms here use PIL and numpy only (no torchvision, no transformers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from msn_cli.original.architecture import IMAGENET_MEAN, IMAGENET_STD

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

EVAL_RESIZE = 256
EVAL_CROP = 224
PIL_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, as transformers' "resample" stores it


def eval_resize_size(image_size: int) -> int:
    """The short side MSN's evaluation resizes to before cropping ``image_size``: 256 at 224."""
    return round(image_size * EVAL_RESIZE / EVAL_CROP)


# --------------------------------------------------------------------------------------------
# Geometry (pure integers: shared by the transform and by the reports)
# --------------------------------------------------------------------------------------------

def resized_size(width: int, height: int, short: int) -> tuple[int, int]:
    """torchvision ``Resize(short)`` output size (width, height): the long side truncated."""
    if width <= height:
        return short, int(short * height / width)
    return int(short * width / height), short


def crop_offset(length: int, crop: int) -> int:
    """torchvision ``CenterCrop`` offset along one axis: ``int(round((length - crop) / 2.0))``."""
    return round((length - crop) / 2.0)  # Python's round: halves to the even neighbour


def floor_offset(length: int, crop: int) -> int:
    """transformers' ``center_crop`` offset along one axis: ``(length - crop) // 2``."""
    return (length - crop) // 2


@dataclass(frozen=True)
class CropGeometry:
    """Where the evaluation transform crops an image of ``size`` (width, height)."""

    size: tuple[int, int]
    resized: tuple[int, int]
    crop: int
    left: int
    top: int
    floor_left: int
    floor_top: int

    @property
    def odd_margin(self) -> bool:
        """True when transformers' floored offset differs from torchvision's rounded one."""
        return (self.left, self.top) != (self.floor_left, self.floor_top)

    def to_dict(self) -> dict[str, Any]:
        return {"size": list(self.size), "resized": list(self.resized), "crop": self.crop,
                "left": self.left, "top": self.top, "floor_left": self.floor_left,
                "floor_top": self.floor_top, "odd_margin": self.odd_margin}


def eval_geometry(width: int, height: int, image_size: int) -> CropGeometry:
    rw, rh = resized_size(width, height, eval_resize_size(image_size))
    return CropGeometry((width, height), (rw, rh), image_size,
                        crop_offset(rw, image_size), crop_offset(rh, image_size),
                        floor_offset(rw, image_size), floor_offset(rh, image_size))


# --------------------------------------------------------------------------------------------
# The independent transforms (PIL + numpy)
# --------------------------------------------------------------------------------------------

def _normalise(rgb: Image.Image) -> np.ndarray:
    """``ToTensor`` then ``Normalize``: float32 ``x / 255``, ``(x - mean) / std``; 3 x H x W."""
    import numpy as np

    x = np.asarray(rgb, dtype=np.uint8).astype(np.float32) / np.float32(255)
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32)
    std = np.asarray(IMAGENET_STD, dtype=np.float32)
    return np.ascontiguousarray(((x - mean) / std).transpose(2, 0, 1))


def _pad_to(img: Image.Image, crop: int) -> Image.Image:
    """torchvision ``CenterCrop`` on an image smaller than the crop: zero padding first,
    ``(crop - w) // 2`` left and top, the rest right and bottom."""
    from PIL import Image

    w, h = img.size
    if w >= crop and h >= crop:
        return img
    nw, nh = max(w, crop), max(h, crop)
    out = Image.new(img.mode, (nw, nh), 0)
    out.paste(img, ((nw - w) // 2, (nh - h) // 2))
    return out


def msn_eval_transform(image: Image.Image, image_size: int = EVAL_CROP, *,
                       floor_crop: bool = False) -> np.ndarray:
    """MSN's evaluation transform: resize short side, center crop (rounded offset), normalise.

    ``floor_crop``: crop at transformers' floored offset instead (what its processors do).
    """
    from PIL import Image

    rgb = image.convert("RGB")
    w, h = rgb.size
    rw, rh = resized_size(w, h, eval_resize_size(image_size))
    if (rw, rh) != (w, h):
        rgb = rgb.resize((rw, rh), resample=Image.Resampling.BILINEAR)
    rgb = _pad_to(rgb, image_size)
    w, h = rgb.size
    offset = floor_offset if floor_crop else crop_offset
    left, top = offset(w, image_size), offset(h, image_size)
    return _normalise(rgb.crop((left, top, left + image_size, top + image_size)))


def seed_transform(image: Image.Image, image_size: int = EVAL_CROP) -> np.ndarray:
    """The seed's preprocessing: RGB, bilinear resize to ``image_size`` squared, normalise."""
    from PIL import Image

    rgb = image.convert("RGB").resize((image_size, image_size), resample=Image.Resampling.BILINEAR)
    return _normalise(rgb)


# --------------------------------------------------------------------------------------------
# The processor configurations, and the table
# --------------------------------------------------------------------------------------------

def msn_processor_config(image_size: int) -> dict[str, Any]:
    """``BitImageProcessor``: shortest edge ``round(s * 256 / 224)``, bilinear, center crop
    ``s``, 1/255, ImageNet mean/std (loads as ``BitImageProcessor`` in transformers 4.57 and
    5.x, with the PIL or the torchvision backend, whichever is installed)."""
    return {
        "image_processor_type": "BitImageProcessor",
        "do_resize": True,
        "size": {"shortest_edge": eval_resize_size(image_size)},
        "resample": PIL_BILINEAR,
        "do_center_crop": True,
        "crop_size": {"height": image_size, "width": image_size},
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "do_convert_rgb": True,
    }


def seed_processor_config(image_size: int) -> dict[str, Any]:
    """The seed's ``ViTImageProcessor``: a plain bilinear resize to ``s`` squared."""
    from msn_cli.original.architecture import preprocessor_config

    return preprocessor_config(image_size)


@dataclass(frozen=True)
class Preprocessing:
    name: str
    summary: str
    """One line: what the processor does (at 224 px)."""
    why: str
    """Why one would choose it: the manifest and the model card say it."""
    config: Callable[[int], dict[str, Any]]
    """``preprocessor_config.json`` at a native image size."""
    transform: Callable[[Any, int], Any]
    """The independent implementation (PIL image, size -> 3 x s x s float32 array)."""
    relevant: tuple[str, ...]
    """The processor settings that change what reaches the network (``verify``'s config check)."""


_COMMON = ("do_resize", "size", "resample", "do_rescale", "rescale_factor", "do_normalize",
           "image_mean", "image_std")

PREPROCESSING: dict[str, Preprocessing] = {
    "msn": Preprocessing(
        "msn",
        "BitImageProcessor: short side 256 (bilinear), center crop 224, ImageNet mean/std",
        "MSN's own evaluation transform (Resize(256), CenterCrop(224), ImageNet Normalize, as in "
        "facebookresearch/msn logistic_eval.py): the input distribution the paper's evaluations "
        "used. transformers floors the crop offset where torchvision rounds it, so images whose "
        "crop margin is 3 mod 4 pixels are cropped one pixel off; msn verify measures the effect.",
        msn_processor_config, msn_eval_transform,
        (*_COMMON, "do_center_crop", "crop_size"),
    ),
    "seed": Preprocessing(
        "seed",
        "ViTImageProcessor: whole image resized to 224x224 (bilinear), ImageNet mean/std",
        "What transformers' convert_msn_to_pytorch.py and the official facebook/vit-msn-* "
        "uploads use, and what the published reference values were computed with; it squashes "
        "the image (aspect ratio not kept, no crop), unlike MSN's own evaluation.",
        seed_processor_config, seed_transform, _COMMON,
    ),
}
DEFAULT_PREPROCESSING = "msn"
RELEVANT_ANY = ("image_processor_type", *dict.fromkeys(k for p in PREPROCESSING.values() for k in p.relevant))
"""Every setting any table entry depends on (what ``--against`` compares)."""


def get(name: str) -> Preprocessing:
    return PREPROCESSING[name]


def identify(config: dict[str, Any], image_size: int) -> str | None:
    """The table entry whose settings ``config`` (a ``preprocessor_config.json``) has, or None."""
    for name, p in PREPROCESSING.items():
        want = p.config(image_size)
        if config.get("image_processor_type") == want["image_processor_type"] and all(
                same_value(config.get(k), want[k]) for k in p.relevant):
            return name
    return None


def same_value(a: Any, b: Any) -> bool:
    """Two JSON values equal as a config reader sees them (floats to 1e-9, bools never numbers)."""
    import math

    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return (isinstance(a, (int, float)) and isinstance(b, (int, float))
                and not isinstance(a, bool) and not isinstance(b, bool)
                and math.isclose(float(a), float(b), rel_tol=1e-9))
    return type(a) is type(b) and a == b
