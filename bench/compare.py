"""Are two Hugging Face model folders tensor-for-tensor identical? (used by bench/run.py)

Reads ``model.safetensors`` of both folders one tensor at a time and compares key sets,
dtypes, shapes and values (``torch.equal``). Prints one JSON object; exit 0 when identical.

Usage: python bench/compare.py FOLDER_A FOLDER_B
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from report import Comparison


def compare(a: Path, b: Path) -> Comparison:
    import torch
    from safetensors import safe_open

    with safe_open(str(a / "model.safetensors"), "pt") as fa, \
            safe_open(str(b / "model.safetensors"), "pt") as fb:
        ka, kb = set(fa.keys()), set(fb.keys())
        differing = []
        for k in sorted(ka & kb):
            x, y = fa.get_tensor(k), fb.get_tensor(k)
            if x.dtype != y.dtype or x.shape != y.shape or not torch.equal(x, y):
                differing.append(k)
    return {"tensors": len(ka & kb), "only_in_a": sorted(ka - kb), "only_in_b": sorted(kb - ka),
            "differing": differing,
            "identical": ka == kb and not differing and bool(ka)}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    result = compare(Path(args[0]), Path(args[1]))
    print(json.dumps(result))
    return 0 if result["identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
