"""The images of a low-shot evaluation: class folders, MSN's split files, sampled shots, and the
bounded reading of one image.

Folders use the layout torchvision's ``ImageFolder``, timm and ``datasets``' imagefolder read:
one sub-folder per class, its images inside (nested folders included), classes in sorted
order, files with an image extension only. Everything the folders or a split file control is
bounded (classes, images, lines, bytes and pixels of an image), and each bad input is one
:class:`~msn_cli.errors.MsnError` that names the class, file or line.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from msn_cli.errors import EXIT_BAD_INPUT, MsnError, UsageError
from msn_cli.util import safeio

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
"""torchvision's ``IMG_EXTENSIONS``: what counts as an image in a class folder."""
PIL_FORMATS = ("JPEG", "PNG", "PPM", "BMP", "TIFF", "WEBP", "GIF")
"""The decoders PIL may use (a file is sniffed by content, so a misnamed file still decodes only
as one of these)."""
MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 50_000_000
"""Width x height, checked from the header before anything is decoded (ImageNet's largest
image is about 2.5 Mpx; PIL's own bomb limit is 179 Mpx)."""
MAX_CLASSES = 100_000
MAX_IMAGES = 5_000_000
"""Per folder: ImageNet-1K's training set is 1.28 M images."""
MAX_SUBSET_BYTES = 64 * 1024 * 1024
MAX_SPLITS = 1_000
MAX_SHOTS = 100_000


class DataError(MsnError):
    """An image folder, split file or image that cannot be used (exit 3)."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class ImageFolder:
    """One ``--train`` or ``--val`` folder: sorted class names and, per class, its image files."""

    root: Path
    classes: list[str]
    files: dict[str, list[Path]]

    @property
    def count(self) -> int:
        return sum(len(v) for v in self.files.values())


@dataclass(frozen=True)
class Split:
    """The labelled training images of one run, and where they came from."""

    files: list[Path]
    labels: list[int]
    shots: int | None
    """Images per class (None for a split file with unequal counts, such as 1%)."""
    seed: int | None = None
    subset: str | None = None
    per_class: dict[str, int] = field(default_factory=dict)


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith(".")


def _class_images(folder: Path, budget: int) -> list[Path]:
    """The image files under one class folder, sorted, at most ``budget``."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if _is_image(path):
                found.append(path)
                if len(found) > budget:
                    raise DataError(f"{folder.parent} holds more than {MAX_IMAGES:,} images",
                                    hint="evaluate on a smaller folder")
    return found


def scan_folder(root: Path, option: str) -> ImageFolder:
    """The classes and images of ``root`` (``option`` names it in messages: ``--train``)."""
    if not root.is_dir():
        raise DataError(f"{option} {root}: no such folder",
                        hint="give a folder with one sub-folder of images per class")
    try:
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    except OSError as e:
        raise DataError(f"{option} {root}: cannot be read ({e.strerror or e})") from e
    if not names:
        raise DataError(f"{option} {root} has no class folders",
                        hint="one sub-folder per class, its images inside (the ImageFolder layout)")
    if len(names) > MAX_CLASSES:
        raise DataError(f"{option} {root} has {len(names):,} class folders, more than {MAX_CLASSES:,}")
    files: dict[str, list[Path]] = {}
    left = MAX_IMAGES
    for name in names:
        images = _class_images(root / name, left)
        if not images:
            raise DataError(f"class '{name}' in {option} {root} has no images",
                            hint="extensions read: " + " ".join(IMAGE_EXTENSIONS))
        files[name] = images
        left -= len(images)
    return ImageFolder(root, names, files)


def check_val_classes(train: ImageFolder, val: ImageFolder) -> None:
    """Every ``--val`` class must be one the classifier can predict."""
    missing = [c for c in val.classes if c not in train.files]
    if missing:
        raise DataError(f"class '{missing[0]}' in --val {val.root} is not in --train {train.root}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                        hint="--val's class folders must carry the names of --train's")


def check_counts(shots: list[int], splits: int) -> None:
    if not shots or any(k < 1 or k > MAX_SHOTS for k in shots):
        raise UsageError(f"--shots must be numbers from 1 to {MAX_SHOTS:,}")
    if splits < 1 or splits > MAX_SPLITS:
        raise UsageError(f"--splits must be from 1 to {MAX_SPLITS}")


def sample_split(train: ImageFolder, shots: int, seed: int) -> Split:
    """``shots`` images per class, drawn with ``seed``.

    Per class (in sorted order) one permutation of its files is drawn from one generator seeded
    with ``seed``, and the first ``shots`` are taken: the 1-shot split of a seed is inside its
    2-shot split, and so on, so the images of smaller shots are computed (and cached) once.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    files: list[Path] = []
    labels: list[int] = []
    for label, name in enumerate(train.classes):
        pool = train.files[name]
        if len(pool) < shots:
            raise DataError(f"class '{name}' in --train {train.root} has {len(pool)} image"
                            f"{'s' if len(pool) != 1 else ''}, fewer than --shots {shots}",
                            hint="lower --shots, or remove the class folder")
        order = rng.permutation(len(pool))
        files += [pool[i] for i in order[:shots]]
        labels += [label] * shots
    return Split(files, labels, shots, seed=seed,
                 per_class={name: shots for name in train.classes})


def _subset_lines(path: Path) -> list[tuple[int, str]]:
    try:
        raw = safeio.read_capped(path, MAX_SUBSET_BYTES)
    except FileNotFoundError:
        raise DataError(f"--subset {path}: no such file") from None
    except (OSError, safeio.UnsafeInput) as e:
        raise DataError(f"--subset {path}: cannot be read ({e})") from e
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DataError(f"--subset {path} is not UTF-8 text") from None
    lines = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise DataError(f"--subset {path} lists no images")
    return lines


def _by_name(train: ImageFolder) -> dict[str, list[tuple[str, Path]]]:
    index: dict[str, list[tuple[str, Path]]] = {}
    for name, paths in train.files.items():
        for p in paths:
            index.setdefault(p.name, []).append((name, p))
    return index


def _match_line(train: ImageFolder, index: dict[str, list[tuple[str, Path]]],
                entry: str) -> list[tuple[str, Path]]:
    """The training images a split file's line names: a file name anywhere under --train, or
    ``class/file`` relative to it."""
    if "/" not in entry and "\\" not in entry:
        return index.get(entry, [])
    try:
        parts = safeio.relative_parts(entry.replace("\\", "/"))
    except safeio.UnsafeInput:
        return []
    cls = parts[0]
    target = train.root.joinpath(*parts)
    return [(cls, p) for p in train.files.get(cls, []) if p == target]


def read_subset(train: ImageFolder, path: Path) -> Split:
    """The training images MSN's split file ``path`` lists (``1imgs_class.txt``: one image file
    name per line, found under --train by name, as the original finds it; or ``class/file``)."""
    index = _by_name(train)
    labels_of = {name: i for i, name in enumerate(train.classes)}
    files: list[Path] = []
    labels: list[int] = []
    per_class: dict[str, int] = {}
    seen: set[Path] = set()
    for number, entry in _subset_lines(path):
        found = _match_line(train, index, entry)
        where = f"--subset {path} line {number}"
        if not found:
            raise DataError(f"{where}: '{entry[:200]}' matches no image under --train {train.root}",
                            hint="the split files name ImageNet training images: give the "
                                 "training folder they come from")
        if len(found) > 1:
            raise DataError(f"{where}: '{entry[:200]}' matches {len(found)} images (in "
                            f"{', '.join(repr(c) for c, _ in found[:3])})",
                            hint="write the line as class/file to say which")
        cls, file = found[0]
        if file in seen:
            raise DataError(f"{where}: '{entry[:200]}' is listed twice")
        seen.add(file)
        files.append(file)
        labels.append(labels_of[cls])
        per_class[cls] = per_class.get(cls, 0) + 1
    counts = set(per_class.values())
    return Split(files, labels, counts.pop() if len(counts) == 1 else None,
                 subset=str(path), per_class=per_class)


def check_split_covers(split: Split, train: ImageFolder, val: ImageFolder) -> None:
    """A split file must hold an image of every class --val scores."""
    for name in val.classes:
        if name not in split.per_class:
            raise DataError(f"class '{name}' in --val {val.root} has no image in --subset "
                            f"{split.subset}", hint="the split must label every class --val holds")


# -- one image ------------------------------------------------------------------------------

def read_image(path: Path) -> tuple[str, bytes]:
    """The sha256 and the bytes of one image file (a regular file of bounded size)."""
    try:
        data = safeio.read_capped(path, MAX_IMAGE_BYTES)
    except safeio.UnsafeInput as e:
        raise DataError(f"cannot read the image {path}: {e}") from e
    except OSError as e:
        raise DataError(f"cannot read the image {path}: {e.strerror or e}") from e
    return hashlib.sha256(data).hexdigest(), data


def quiet_bomb_warning() -> None:
    """Silence PIL's ``DecompressionBombWarning`` for the process.

    PIL warns from 89 Mpx on, inside ``Image.open``, before msn can look at the size; msn's own
    limit (:data:`MAX_PIXELS`) is lower and refuses such an image with an error. Decoding runs
    in worker threads, where ``warnings.catch_warnings`` is not safe, so the filter (for this
    one category) is installed once, from the main thread."""
    import warnings

    from PIL import Image

    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def decode_image(path: Path, data: bytes) -> Image.Image:
    """``data`` decoded as an RGB image, after its size is checked against :data:`MAX_PIXELS`."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data), formats=PIL_FORMATS) as im:
            w, h = im.size
            if w * h > MAX_PIXELS:
                raise DataError(f"the image {path} is {w}x{h} pixels, more than "
                                f"{MAX_PIXELS:,}", hint="resize it, or remove it from the folder")
            return im.convert("RGB")
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError,
            SyntaxError) as e:
        raise DataError(f"cannot decode the image {path}: {e}",
                        hint="formats read: " + ", ".join(PIL_FORMATS)) from e


def labels_array(labels: list[int]) -> np.ndarray:
    import numpy as np

    return np.asarray(labels, dtype=np.int64)
