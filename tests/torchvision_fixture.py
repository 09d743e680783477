"""torchvision's own outputs on the bundled photos, stored for the preprocessing tests.

PyPI's torchvision does not import beside the torch msn's venv installs, and a venv with one
that does weighs 5.8 GB; so the tests compare with outputs made once in that venv
(``make torchvision``, ``.venv-tv``) and stored in ``tests/fixtures/``:

- ``transform-{size}-{i}``: MSN's evaluation transform as torchvision computes it,
  ``Resize(eval_resize_size(size))`` (bilinear, PIL) + ``CenterCrop(size)`` + ``ToTensor()`` +
  ``Normalize(ImageNet mean, std)``, on photo ``i`` of ``bundled_photos()``, at 224 and 64 px;
- ``processor-{i}``: ``pixel_values`` of transformers' image processor with its torchvision
  backend, loaded from msn's default ``preprocessor_config.json`` at 224 px.

Arrays are float32 exactly as produced (``np.savez_compressed``, lossless), so each comparison
keeps the tolerance it has against live torchvision: bit for bit for the transform, verify's
``PIXEL_ATOL`` for the processor. The ``.json`` beside it records the versions that made them,
the photos' sha256 and the processor configuration: the tests refuse a fixture made from other
photos or another configuration.

Regenerate (needs torchvision): ``make torchvision``, or in a venv that has it,
``python -m tests.torchvision_fixture``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from msn_cli.original import preprocess
from msn_cli.original.architecture import IMAGENET_MEAN, IMAGENET_STD
from msn_cli.verify.photos import PHOTOS, PHOTOS_DIR, bundled_photos

FIXTURES = Path(__file__).parent / "fixtures"
ARRAYS = FIXTURES / "torchvision_outputs.npz"
RECORD = FIXTURES / "torchvision_outputs.json"
SIZES = (224, 64)
PROCESSOR_SIZE = 224


def photo_hashes() -> dict[str, str]:
    return {file: hashlib.sha256((PHOTOS_DIR / file).read_bytes()).hexdigest()
            for file in sorted({p[0] for p in PHOTOS})}


@dataclass
class Stored:
    """The stored outputs, by photo index; ``record`` is the JSON beside them."""
    transform: dict[tuple[int, int], np.ndarray]  # (size, photo index) -> 3 x size x size
    processor: list[np.ndarray]
    record: dict[str, Any]


def load() -> Stored:
    record = json.loads(RECORD.read_text())
    with np.load(ARRAYS) as z:
        transform = {(size, i): z[f"transform-{size}-{i}"]
                     for size in SIZES for i in range(len(record["photos"]))}
        processor = [z[f"processor-{i}"] for i in range(len(record["photos"]))]
    return Stored(transform, processor, record)


def torchvision_transform(size: int) -> Any:
    import torchvision.transforms as T

    return T.Compose([T.Resize(preprocess.eval_resize_size(size)), T.CenterCrop(size),
                      T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])


def torchvision_processor(folder: Path) -> Any:
    import transformers
    from transformers import AutoImageProcessor

    from msn_cli.verify.photos import backend_name

    kw = ({"backend": "torchvision"} if int(transformers.__version__.split(".")[0]) >= 5
          else {"use_fast": True})
    proc = AutoImageProcessor.from_pretrained(str(folder), **kw)
    if backend_name(proc) != "torchvision":
        raise SystemExit(f"transformers gave {type(proc).__name__}, not its torchvision backend")
    return proc


def generate() -> None:
    import torch
    import torchvision
    import transformers

    photos = bundled_photos()
    arrays: dict[str, np.ndarray] = {}
    for size in SIZES:
        tv = torchvision_transform(size)
        for i, photo in enumerate(photos):
            arrays[f"transform-{size}-{i}"] = tv(photo.image).numpy()
    config = preprocess.msn_processor_config(PROCESSOR_SIZE)
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "preprocessor_config.json").write_text(json.dumps(config))
        proc = torchvision_processor(Path(tmp))
        for i, photo in enumerate(photos):
            arrays[f"processor-{i}"] = proc(images=photo.image, return_tensors="pt")[
                "pixel_values"][0].numpy()
    assert all(a.dtype == np.float32 for a in arrays.values())
    FIXTURES.mkdir(exist_ok=True)
    np.savez_compressed(ARRAYS, **arrays)  # type: ignore[arg-type]  # numpy's stub: **kwds vs allow_pickle
    record = {
        "made_by": "python -m tests.torchvision_fixture (make torchvision)",
        "versions": {"torch": torch.__version__, "torchvision": torchvision.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__},
        "photos": [p.name for p in photos],
        "photo_sha256": photo_hashes(),
        "sizes": list(SIZES),
        "resize": {str(s): preprocess.eval_resize_size(s) for s in SIZES},
        "processor_config": config,
        "processor": type(proc).__name__,
    }
    RECORD.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {ARRAYS} ({ARRAYS.stat().st_size:,} bytes) and {RECORD.name}", file=sys.stderr)


if __name__ == "__main__":
    generate()
