"""The two checks every written tensor goes through: its values are finite, and the file holds
exactly its bits. Shared by ``convert`` and ``export``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def all_finite(x: torch.Tensor) -> bool:
    """No NaN or infinity in ``x``, mostly in one cheap reduction.

    A NaN or an infinity anywhere makes the sum NaN or infinite, so a finite sum proves every
    value finite; only a non-finite sum (a bad value, or a legitimate overflow) needs the
    element-wise test, which allocates a mask as large as the tensor.
    """
    import torch

    if not x.is_floating_point() or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """``a`` and ``b`` have the same dtype and shape and hold the same bits.

    Compared as integers of the dtype's width, so a NaN equals itself and 0.0 differs from
    -0.0, as in a byte comparison; ``torch.equal`` allocates nothing and releases the GIL.
    """
    import torch

    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    as_int = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
    return torch.equal(a.contiguous().view(as_int), b.contiguous().view(as_int))
