"""An independent reference implementation of the original MSN ViT backbone, in plain PyTorch.

Written from the architecture of the original code (facebookresearch/msn ``src/deit.py``, a
DeiT/timm ViT), not from transformers, and importing nothing from it, so that ``msn verify``
compares the converted model with a second implementation that shares none of its code:

* patch embedding: a convolution with kernel = stride = patch size, flattened to tokens;
* a class token prepended, learned absolute position embeddings added; at another input size
  the patch part of the position grid is resized bicubically with
  ``scale_factor = sqrt(npatch / N)``, exactly as the original does (transformers resizes to
  an explicit size instead; see :func:`other_grid` for the sizes where both agree);
* pre-norm blocks: ``x + attn(norm1(x))`` then ``x + mlp(norm2(x))``; attention uses the fused
  qkv projection (rows: query, key, value; a bias when the weights have one), scale
  ``head_dim ** -0.5``, softmax, output projection; the MLP is Linear, exact (erf) GELU, Linear;
* LayerNorm with eps 1e-6 everywhere, and a final LayerNorm. No dropout.

The module's parameter names are the original key names (prefix-free, as in a single-GPU
save), and :func:`build_reference` loads a backbone state dict strictly: any missing or
unexpected key is an error. The projection head (``fc.*``), used only in pre-training, is not
part of the backbone and is set aside before loading.

:meth:`MSNViT.forward` returns what :mod:`msn_cli.verify.parity` compares: the token sequence after
the embeddings, after every block, and after the final norm (all tokens); :meth:`MSNViT.embed`
the embeddings alone (what verify compares at the native size).

Importing this module imports torch: only verify does, once the checkpoint is loaded.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from msn_cli.errors import CheckpointError

EPS = 1e-6
HEAD_KEY_PREFIX = "fc."


@dataclass
class ReferenceOutput:
    embeddings: torch.Tensor
    blocks: list[torch.Tensor]
    final: torch.Tensor

    @property
    def all(self) -> list[torch.Tensor]:
        """Embeddings, each block's output, then the final norm: ``num_layers + 2`` tensors."""
        return [self.embeddings, *self.blocks, self.final]


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, channels: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        grid = self.proj(images)  # B x D x H/P x W/P
        tokens: torch.Tensor = grid.flatten(2).transpose(1, 2)  # B x N x D, row-major over the grid
        return tokens


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        fused = self.qkv(x).view(b, n, 3, self.heads, self.head_dim)
        fused = fused.permute(2, 0, 3, 1, 4)  # 3 x B x heads x N x head_dim
        q, k, v = fused.unbind(0)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (self.head_dim ** -0.5)
        weights = scores.softmax(dim=-1)
        mixed = torch.matmul(weights, v)  # B x heads x N x head_dim
        out: torch.Tensor = self.proj(mixed.transpose(1, 2).reshape(b, n, d))
        return out


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc2(F.gelu(self.fc1(x), approximate="none"))
        return out


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int, qkv_bias: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=EPS)
        self.attn = Attention(dim, heads, qkv_bias)
        self.norm2 = nn.LayerNorm(dim, eps=EPS)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        out: torch.Tensor = x + self.mlp(self.norm2(x))
        return out


class MSNViT(nn.Module):
    """The original backbone; parameter names are the original (prefix-free) keys."""

    def __init__(self, dim: int, depth: int, heads: int, hidden: int, patch: int,
                 image_size: int, channels: int = 3, qkv_bias: bool = True) -> None:
        super().__init__()
        grid = image_size // patch
        self.patch_size = patch
        self.patch_embed = PatchEmbed(dim, channels, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.ModuleList([Block(dim, heads, hidden, qkv_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=EPS)

    def position_embeddings(self, npatch: int) -> torch.Tensor:
        """The original ``interpolate_pos_encoding``: bicubic, by a scale factor."""
        pos = self.pos_embed
        n = pos.shape[1] - 1
        if npatch == n:
            return pos
        dim = pos.shape[-1]
        g = int(math.sqrt(n))
        grid = pos[:, 1:].reshape(1, g, g, dim).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=math.sqrt(npatch / n), mode="bicubic")
        resized = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        if resized.shape[1] != npatch:
            raise ValueError(
                f"the original position interpolation gives {resized.shape[1]} positions "
                f"for {npatch} patches at this size (scale factor rounding)")
        return torch.cat((pos[:, :1], resized), dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Patch embedding, class token, position embeddings: the blocks' input."""
        x = self.patch_embed(images)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        x = torch.cat((cls, x), dim=1)
        return x + self.position_embeddings(x.shape[1] - 1)

    def forward(self, images: torch.Tensor) -> ReferenceOutput:
        x = embeddings = self.embed(images)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return ReferenceOutput(embeddings, outs, self.norm(x))


def build_reference(state: Mapping[str, torch.Tensor], *, num_heads: int,
                    image_size: int | None = None) -> MSNViT:
    """An ``MSNViT`` holding ``state`` (prefix-free original keys), in float32, eval mode.

    The shapes, and whether the qkv projection has a bias (``VisionTransformer``'s own default
    has none; every named constructor passes one), are read from the state dict itself;
    ``num_heads`` cannot be. Loading is
    strict: a key the backbone does not have, or lacks, raises :class:`CheckpointError`.
    Float32 tensors are used in place (no copy of a memory-mapped checkpoint); other float
    dtypes are upcast.
    """
    backbone = {k: v for k, v in state.items() if not k.startswith(HEAD_KEY_PREFIX)}
    try:
        pw = backbone["patch_embed.proj.weight"]
        pos = backbone["pos_embed"]
        fc1 = backbone["blocks.0.mlp.fc1.weight"]
    except KeyError as e:
        raise CheckpointError(f"the backbone has no {e.args[0]!r}: not an MSN ViT") from None
    dim, channels, patch = int(pw.shape[0]), int(pw.shape[1]), int(pw.shape[2])
    depth = len({k.split(".")[1] for k in backbone if k.startswith("blocks.")})
    grid = round(math.sqrt(pos.shape[1] - 1))
    with torch.device("meta"):
        model = MSNViT(dim, depth, num_heads, int(fc1.shape[0]), patch,
                    image_size or grid * patch, channels,
                    qkv_bias="blocks.0.attn.qkv.bias" in backbone)
    weights = {k: (v if v.dtype == torch.float32 else v.float()) for k, v in backbone.items()}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = " ".join(line.strip() for line in first[1:3]) or first[0]
        raise CheckpointError(f"the reference ViT cannot load the backbone strictly: {detail}",
                              hint="the checkpoint does not have the original MSN ViT layout") from e
    return model.eval()


def run_reference(model: MSNViT, images: torch.Tensor) -> ReferenceOutput:
    """Forward ``images`` (float32, B x C x H x W) without building a graph."""
    with torch.inference_mode():
        out: ReferenceOutput = model(images.float())
        return out


def run_embeddings(model: MSNViT, images: torch.Tensor) -> torch.Tensor:
    """The embeddings alone (no block runs) for ``images``, without building a graph."""
    with torch.inference_mode():
        return model.embed(images.float())


def original_grid_after_interpolation(grid: int, new_grid: int) -> int:
    """The grid side the original's ``scale_factor`` interpolation produces for ``new_grid``.

    PyTorch sizes the output as ``floor(input * scale_factor)`` in double precision; with
    ``scale_factor = sqrt(new_grid**2 / grid**2)`` that can land one short of ``new_grid``.
    """
    return math.floor(grid * math.sqrt((new_grid * new_grid) / (grid * grid)))


def other_grid(grid: int, at_most: int | None = None) -> int:
    """A second grid side for the interpolation comparison, where both implementations agree.

    The original scales the position grid by ``sqrt(npatch / N)``; transformers resizes to the
    explicit ``H/P x W/P``. They produce the same grid, and the same sampling positions (a
    scale of ``new/g`` versus its reciprocal source step ``g/new``, equal to rounding), only
    where ``floor(g * sqrt(new**2 / g**2)) == new``. Half the native grid is preferred (it is
    also the cheapest); otherwise the nearest side that satisfies the condition. With
    ``at_most``: the native grid halved (a quarter, an eighth, ...) down to ``at_most`` a side
    or fewer, where that satisfies the condition; else as without it.
    """
    if at_most is not None and grid // 2 > at_most:
        side = grid // 2
        while side > at_most:
            side //= 2
        if side >= 2 and original_grid_after_interpolation(grid, side) == side:
            return side
    candidates = [grid // 2, *(grid + d for d in (1, -1, 2, -2, 3, -3, 4, -4))]
    for c in candidates:
        if c >= 2 and c != grid and original_grid_after_interpolation(grid, c) == c:
            return c
    return grid * 2  # sqrt(4) is exact: always agrees
