"""One forward pass of a converted model at its native size (used by bench/run.py).

Loads the folder with ``ViTMSNModel.from_pretrained`` and runs one image at the native size
(224 px for the released models: verify's own first input, seeded normal noise) through it
once -- the yardstick issue 14 sets for ``msn verify``. Prints JSON: seconds for the import,
the load and the forward pass.

Usage: python bench/forward.py FOLDER
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    folder = Path(args[0])
    t0 = time.perf_counter()
    import torch
    from transformers import ViTMSNModel

    from msn_cli.hf.folder import config_architecture
    from msn_cli.verify.inputs import noise_image

    t1 = time.perf_counter()
    model = ViTMSNModel.from_pretrained(str(folder)).eval()  # type: ignore[no-untyped-call]
    arch = config_architecture(json.loads((folder / "config.json").read_text()))
    pixels = noise_image(arch.image_size, 0, arch.num_channels).to(model.dtype)
    t2 = time.perf_counter()
    with torch.inference_mode():
        model(pixel_values=pixels)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "forward_s": t3 - t2,
                      "inputs": 1, "size": arch.image_size}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
