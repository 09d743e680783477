"""The original MSN model family: the constructors of facebookresearch/msn ``src/deit.py``.

People who train MSN themselves pick one of these by name (``meta.model_name`` in the run's
``params-msn-train.yaml``). The table is data, read by everything that needs a value the
weights do not hold: the number of heads above all (``deit_huge`` is 1280 wide with 16 heads
of 80 dimensions, so "hidden size / 64" is wrong there), and the values every constructor
shares (qkv bias, LayerNorm eps, exact GELU, 224-pixel training images).

Facts from ``../shared/msn-facts.md`` ("The original model family"); no code is taken from the
original repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FALLBACK_HEAD_DIM = 64
"""Head size assumed for a width that no constructor of the family has (and used by every
released model)."""


@dataclass(frozen=True)
class Constructor:
    """One named constructor of ``src/deit.py``."""

    name: str
    hidden_size: int
    depth: int
    num_heads: int
    mlp_ratio: int
    patch_size: int | None
    """Kernel and stride of the linear patch embedding; None for a conv-stem model."""
    conv_stem: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def intermediate_size(self) -> int:
        return self.hidden_size * self.mlp_ratio

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "hidden_size": self.hidden_size, "depth": self.depth,
                "num_heads": self.num_heads, "head_dim": self.head_dim,
                "mlp_ratio": self.mlp_ratio, "intermediate_size": self.intermediate_size,
                "patch_size": self.patch_size, "conv_stem": self.conv_stem}


def _widths(prefix: str, d: int, depth: int, heads: int, patches: dict[str, int]) -> list[Constructor]:
    return [Constructor(prefix + suffix, d, depth, heads, 4, p) for suffix, p in patches.items()]


FAMILY: tuple[Constructor, ...] = (
    *_widths("deit_tiny", 192, 12, 3, {"": 16}),
    *_widths("deit_small", 384, 12, 6, {"": 16, "_p8": 8, "_p7": 7}),
    *_widths("deit_base", 768, 12, 12, {"": 16, "_p8": 8, "_p7": 7, "_p4": 4}),
    *_widths("deit_large", 1024, 24, 16, {"": 16, "_p8": 8, "_p7": 7}),
    *_widths("deit_huge", 1280, 32, 16, {"": 16, "_p8": 8, "_p7": 7, "_p10": 10}),
    Constructor("vitc_4gf", 384, 11, 6, 3, None, conv_stem=True),
    Constructor("deit_small_convstem", 384, 11, 6, 6, None, conv_stem=True),
)
"""Every constructor, in the order of the facts table."""

SHARED = {
    "qkv_bias": True,
    "layer_norm_eps": 1e-6,
    "hidden_act": "gelu",
    "image_size": 224,
}
"""What every named constructor of the family shares (``VisionTransformer`` itself defaults to
no qkv bias; every constructor passes it). ``image_size``: training builds at 224 pixels
(``init_model`` passes no ``img_size``)."""

SOURCE = "the original model family (facebookresearch/msn src/deit.py)"
"""How reports name this table as the origin of a value."""

_BY_NAME = {c.name: c for c in FAMILY}


def constructor(name: str) -> Constructor | None:
    """The constructor called ``name`` (as ``meta.model_name`` spells it), or None."""
    return _BY_NAME.get(name.strip())


def heads_for_width(hidden_size: int) -> int | None:
    """The number of heads the family uses at this width, or None outside the family.

    Every constructor of one width has the same heads, so the width alone decides.
    """
    heads = {c.num_heads for c in FAMILY if c.hidden_size == hidden_size}
    if len(heads) == 1:
        return heads.pop()
    return None


def matching(hidden_size: int, depth: int | None = None, patch_size: int | None = None,
             intermediate_size: int | None = None, conv_stem: bool = False) -> list[Constructor]:
    """The constructors whose shapes agree with every value given (None: not compared)."""
    out = []
    for c in FAMILY:
        if c.hidden_size != hidden_size or c.conv_stem != conv_stem:
            continue
        if depth is not None and c.depth != depth:
            continue
        if patch_size is not None and not c.conv_stem and c.patch_size != patch_size:
            continue
        if intermediate_size is not None and c.intermediate_size != intermediate_size:
            continue
        out.append(c)
    return out
