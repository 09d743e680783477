"""The deterministic images parity runs both networks on, and the sizes it runs them at.

Noise exercises every weight with unit-scale activations; the natural-image-like picture
gives the token statistics real use sees. At the native size the embeddings are compared
(where the position embeddings are used as stored); every layer is compared at a smaller size
with position interpolation (:func:`depth_size`), which holds every other weight at a fraction
of the cost of a native pass.

The smaller size: the original resizes the position grid by ``scale_factor=sqrt(npatch/N)``,
transformers to an explicit ``(H/P, W/P)``. Where ``floor(g * sqrt(n^2/g^2)) == n`` both give
the same grid at the same sampling positions and agree to float rounding, so the smaller size
is held to the same tolerance; :func:`msn_cli.original.reference.other_grid` picks such a size
(the native grid halved until at most 8 patches a side, e.g. 112 px for the 224 px /16 models,
56 px for ViT-L/7, 28 px for ViT-B/4).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from msn_cli.original.architecture import IMAGENET_MEAN, IMAGENET_STD, Architecture

if TYPE_CHECKING:
    import torch


def noise_image(size: int, seed: int, channels: int = 3) -> torch.Tensor:
    """Standard normal pixels: roughly the range of an ImageNet-normalised image."""
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, channels, size, size, generator=g)


def natural_image(size: int, seed: int, channels: int = 3) -> torch.Tensor:
    """A smooth image with natural-image statistics, normalised with ImageNet mean/std.

    Sum of bicubically upsampled noise octaves with 1/f-like weights (most energy at low
    frequencies), channels correlated through a shared luminance, squashed into [0, 1],
    quantised to 8 bits like a decoded JPEG, then ``(x - mean) / std``.
    """
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(seed)
    img = torch.zeros(1, channels, size, size)
    for cells, weight in ((2, 1.0), (4, 0.6), (8, 0.35), (16, 0.2), (32, 0.1)):
        n = torch.randn(1, channels, cells, cells, generator=g)
        img += weight * F.interpolate(n, size=(size, size), mode="bicubic", align_corners=False)
    img = 0.75 * img.mean(dim=1, keepdim=True) + 0.25 * img
    img = torch.sigmoid(1.8 * img)
    img = torch.round(img * 255) / 255
    mean = torch.tensor((IMAGENET_MEAN * channels)[:channels]).view(1, channels, 1, 1)
    std = torch.tensor((IMAGENET_STD * channels)[:channels]).view(1, channels, 1, 1)
    return (img - mean) / std


@dataclass(frozen=True)
class ParityInput:
    """One deterministic image of the parity check and how far it runs."""

    description: str
    size: int
    pixels: torch.Tensor
    """1 x C x size x size, float32."""
    every_layer: bool
    """True: every layer is compared; False: the embeddings alone (the native-size inputs)."""


DEPTH_GRID_AT_MOST = 8
"""Patches a side, at most, of the input every layer is compared on (where the grid allows)."""


def depth_size(arch: Architecture) -> int:
    """The image size at which every layer is compared: the native grid halved until it has
    at most :data:`DEPTH_GRID_AT_MOST` patches a side, at a size where both implementations
    resize the position grid alike (:func:`msn_cli.original.reference.other_grid`): 7 x 7
    patches for the /16 models at 224 px, 8 x 8 for ViT-L/7, 7 x 7 for ViT-B/4. The deep
    comparison then costs a small fraction of a native-size pass, for every layer and every
    weight."""
    from msn_cli.original.reference import other_grid

    return other_grid(arch.grid, DEPTH_GRID_AT_MOST) * arch.patch_size


def parity_inputs(arch: Architecture) -> list[ParityInput]:
    """Every parity input, native size first.

    What depends on the image size is the embeddings: the position embeddings are used as
    stored only at the native size, and interpolated at any other. The blocks and the final
    norm act on each token the same way at any size (attention mixes however many tokens
    there are). So the native-size inputs are compared at the embeddings, where the position
    embeddings are used exactly as at native size; every layer -- the embeddings with
    interpolated positions, each block, the final norm, on all tokens -- is compared on
    inputs at :func:`depth_size`; both kinds of image at both sizes.
    """
    native, small, c = arch.image_size, depth_size(arch), arch.num_channels
    return [
        ParityInput(f"normal noise, seed 0, {native} px (embeddings)", native,
                    noise_image(native, 0, c), False),
        ParityInput(f"natural-image-like, seed 2, {native} px (embeddings)", native,
                    natural_image(native, 2, c), False),
        ParityInput(f"normal noise, seed 1, {small} px (interpolated positions, every layer)",
                    small, noise_image(small, 1, c), True),
        ParityInput(f"natural-image-like, seed 4, {small} px (interpolated positions, every "
                    "layer)", small, natural_image(small, 4, c), True),
    ]
