"""One forward pass of a converted model on verify's own inputs (used by bench/run.py).

Loads the folder with ``ViTMSNModel.from_pretrained`` and runs the inputs verify's parity
check uses (:func:`msn_cli.verify.parity_inputs`: three images, two at the native size and one
at a second size with interpolated positions, one at a time, with every hidden state) through
it once, as verify does on the converted side. Prints JSON: seconds for the import, the load
and the forward pass.

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

    from msn_cli.architecture import Architecture
    from msn_cli.verify import parity_inputs

    t1 = time.perf_counter()
    model = ViTMSNModel.from_pretrained(str(folder))
    model.eval()
    arch = Architecture.from_hf_config(json.loads((folder / "config.json").read_text()))
    inputs = parity_inputs(arch)
    t2 = time.perf_counter()
    with torch.inference_mode():
        for _, size, pixels in inputs:
            model(pixel_values=pixels.to(model.dtype), output_hidden_states=True,
                  interpolate_pos_encoding=size != arch.image_size)
    t3 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "forward_s": t3 - t2,
                      "inputs": len(inputs)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
