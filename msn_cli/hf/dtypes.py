"""The tensor dtypes msn writes to safetensors, and their sizes (no torch or safetensors import:
the plan sizes tensors before either is needed)."""

from __future__ import annotations

import math

ST_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64",
             "int64": "I64", "int32": "I32", "uint8": "U8", "bool": "BOOL"}
"""torch dtype name -> safetensors dtype name, for the dtypes msn writes."""
ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4,
            "uint8": 1, "bool": 1}
"""torch dtype name -> bytes per element."""


def nbytes_of(dtype: str, shape: tuple[int, ...]) -> int:
    """The bytes of a tensor of ``dtype`` (a torch dtype name) and ``shape``; a dtype msn does
    not write counts 4 bytes an element (the plan refuses it before anything is written)."""
    return math.prod(shape) * ITEMSIZE.get(dtype, 4)
