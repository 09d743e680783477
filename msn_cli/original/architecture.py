"""The architecture of an MSN ViT backbone, and the Hugging Face config it implies."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

LAYER_NORM_EPS = 1e-6


@dataclass(frozen=True)
class Architecture:
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    patch_size: int
    image_size: int
    num_channels: int = 3
    qkv_bias: bool = True
    """Whether the fused qkv projection has a bias (every constructor of the original family
    has one; ``VisionTransformer``'s own default has none)."""

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["num_patches"] = self.num_patches
        d["head_dim"] = self.head_dim
        return d

    def hf_config(self, dtype: str) -> dict[str, Any]:
        """``config.json`` for ``ViTMSNModel``: the backbone only, no classifier labels.

        Written by hand (no transformers import) with the keys ``ViTMSNConfig`` reads; every
        value that changes the computation is explicit so no library default is relied on.
        """
        return {
            "architectures": ["ViTMSNModel"],
            "model_type": "vit_msn",
            "hidden_size": self.hidden_size,
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.0,
            "attention_probs_dropout_prob": 0.0,
            "initializer_range": 0.02,
            "layer_norm_eps": LAYER_NORM_EPS,
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": self.num_channels,
            "qkv_bias": self.qkv_bias,
            "torch_dtype": dtype,
            "dtype": dtype,
        }


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def preprocessor_config(image_size: int) -> dict[str, Any]:
    """``preprocessor_config.json``: the seed's ``ViTImageProcessor`` with ImageNet statistics.

    A plain bilinear resize to ``image_size`` squared (resample 2), rescale by 1/255, normalise.
    """
    return {
        "image_processor_type": "ViTImageProcessor",
        "do_resize": True,
        "size": {"height": image_size, "width": image_size},
        "resample": 2,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "do_convert_rgb": None,
    }
