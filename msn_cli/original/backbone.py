"""What a loaded state dict is: DistributedDataParallel's prefix, the MSN files that cannot
become a ``ViTMSNModel`` (refused in one line each), and the architecture read from shapes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from msn_cli.conversion.mapping import BLOCK_INDEX
from msn_cli.conversion.provenance import (
    Known,
    Provenance,
    check_constructor,
    named_constructor,
    resolve_heads,
    shared_values,
)
from msn_cli.errors import CheckpointError
from msn_cli.original import family
from msn_cli.original.architecture import Architecture
from msn_cli.original.variants import VARIANTS, Variant, match_variant

if TYPE_CHECKING:
    from pathlib import Path

    import torch

DDP_PREFIX = "module."
PRETRAINING_HINT = ("convert the pre-training checkpoint instead: {tag}-latest.pth.tar or "
                    "{tag}-ep{N}.pth.tar in the run's folder, or a released one (msn convert vits16 ...)")

_BLOCK = re.compile(rf"blocks\.({BLOCK_INDEX})\.")


def strip_ddp_prefix(state: Mapping[Any, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether every key of ``state`` carries DistributedDataParallel's ``module.``, and the
    state with it removed (keys left as they are unless all carry it)."""
    keys = [str(k) for k in state]
    prefixed = bool(keys) and all(k.startswith(DDP_PREFIX) for k in keys)
    return prefixed, {(str(k)[len(DDP_PREFIX):] if prefixed else str(k)): v
                      for k, v in state.items()}


def looks_like_backbone(obj: Mapping[Any, Any]) -> bool:
    """Whether ``obj`` is a bare ViT state dict (a file saved as ``encoder.state_dict()``)."""
    keys = [str(k).removeprefix(DDP_PREFIX) for k in obj]
    return "cls_token" in keys and any(k.startswith("blocks.") for k in keys)


def _dim(t: Any, axis: int) -> int:
    """``t.shape[axis]``, or 0 when ``t`` is not a tensor with a shape."""
    shape = getattr(t, "shape", None)
    return int(shape[axis]) if shape is not None and len(shape) else 0


def _block_numbers(state: Mapping[str, Any]) -> list[int]:
    return sorted({int(m.group(1)) for k in state if (m := _BLOCK.match(k))})


def refuse_unconvertible(path: Path, obj: Mapping[Any, Any], state: Mapping[str, Any]) -> None:
    """Refuse, in one line that says what the file is, MSN files that cannot become a
    ``ViTMSNModel``: conv-stem networks and linear-evaluation checkpoints."""
    _refuse_conv_stem(path, state)
    _refuse_linear_eval(path, obj, state)


def _refuse_conv_stem(path: Path, state: Mapping[str, Any]) -> None:
    stem = sorted(k for k in state if k.startswith("patch_embed.stem."))
    if not stem:
        return
    d = _dim(state.get("cls_token"), -1) or _dim(state.get("norm.weight"), 0)
    depth = len(_block_numbers(state))
    mlp = _dim(state.get("blocks.0.mlp.fc1.weight"), 0)
    names = [c.name for c in family.matching(d, depth, intermediate_size=mlp, conv_stem=True)] \
        if d else []
    what = (f"the conv-stem network {' or '.join(names)} of {family.SOURCE}" if names else
            "a conv-stem ViT")
    raise CheckpointError(
        f"{path.name} holds {what} ({d or '?'} wide, {depth} blocks): its patch embedding is "
        f"a stack of convolutions with BatchNorm ({len(stem)} patch_embed.stem.* tensors), "
        "and ViTMSNModel has only a linear patch embedding, so it cannot become one",
        hint="no Hugging Face ViT class has a conv stem; only the linear-patch models "
             "(deit_* and the released checkpoints) convert")


def _refuse_linear_eval(path: Path, obj: Mapping[Any, Any], state: Mapping[str, Any]) -> None:
    head = obj.get("classifier")
    if not isinstance(head, Mapping):
        return
    keys = {str(k).removeprefix(DDP_PREFIX) for k in head}
    if not ({"linear.weight", "norm.weight"} <= keys and "norm.weight" not in state):
        return
    lin = next((v for k, v in head.items() if str(k).removeprefix(DDP_PREFIX) == "linear.weight"),
               None)
    classes = f" to {_dim(lin, 0)} classes" if _dim(lin, 0) else ""
    raise CheckpointError(
        f"{path.name} is a linear-evaluation checkpoint (MSN's linear_eval.py): its "
        "backbone has no final LayerNorm, and its classifier applies LayerNorm, L2 "
        f"normalisation and a Linear layer{classes} to the cls token before any final "
        "norm, which ViTMSNForImageClassification (final LayerNorm, then a plain "
        "Linear) cannot express", hint=PRETRAINING_HINT)


@dataclass(frozen=True)
class Inferred:
    arch: Architecture
    variant: Variant | None
    dtype: str
    provenance: tuple[Provenance, ...] = ()
    """Every value not read from the weights, with its origin (see :mod:`msn_cli.conversion.provenance`)."""
    warnings: tuple[str, ...] = ()
    family_name: str | None = None
    """The constructors of the original family these shapes match (None: none)."""


@dataclass(frozen=True)
class _Shapes:
    """What the tensor shapes say about the network (everything but the heads)."""

    hidden_size: int
    channels: int
    patch: int
    grid: int
    depth: int
    mlp: int


def _need(state: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    if key not in state:
        raise CheckpointError(f"the backbone has no '{key}': cannot infer the architecture",
                              hint="is this an MSN ViT checkpoint?")
    return state[key]


def _read_shapes(state: Mapping[str, torch.Tensor]) -> _Shapes:
    pw = _need(state, "patch_embed.proj.weight")
    if pw.dim() != 4:
        raise CheckpointError(f"patch_embed.proj.weight has shape {list(pw.shape)}, expected "
                              "D x C x P x P")
    d, channels, ph, pwid = (int(x) for x in pw.shape)
    if ph != pwid:
        raise CheckpointError(f"the patch embedding kernel is {ph}x{pwid}, not square: "
                              "not an MSN ViT")
    pos = _need(state, "pos_embed")
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != d:
        raise CheckpointError(f"pos_embed has shape {list(pos.shape)}, expected 1 x (N+1) x {d}")
    n = int(pos.shape[1]) - 1
    grid = round(n ** 0.5)
    if grid * grid != n or n <= 0:
        raise CheckpointError(f"pos_embed has {n} patch positions, not a square grid")
    blocks = _block_numbers(state)
    if not blocks:
        raise CheckpointError("the backbone has no transformer blocks (no 'blocks.N.' keys)")
    if blocks[-1] >= len(state):  # every block has several keys: the index is not a depth
        raise CheckpointError(f"the backbone has a block {blocks[-1]} but only {len(state)} "
                              f"keys in all: not a network's block index",
                              hint="is this an MSN ViT checkpoint?")
    if blocks != list(range(len(blocks))):
        missing = sorted(set(range(blocks[-1] + 1)) - set(blocks))
        raise CheckpointError(f"transformer blocks are missing: {', '.join(map(str, missing))} "
                              f"(found {len(blocks)} of {blocks[-1] + 1})")
    mlp = int(_need(state, "blocks.0.mlp.fc1.weight").shape[0])
    return _Shapes(d, channels, ph, grid, len(blocks), mlp)


def _check_against_variants(arch: Architecture, variant: Variant | None) -> None:
    """Refuse shapes of a released variant with blocks missing at the end (a shallower but
    well-formed ViT), and heads given against a released variant's own."""
    if variant is None:
        for v in VARIANTS.values():
            if (v.hidden_size, v.patch_size, v.intermediate_size, v.image_size) == (
                    arch.hidden_size, arch.patch_size, arch.intermediate_size, arch.image_size) \
                    and v.num_layers > arch.num_layers:
                raise CheckpointError(
                    f"transformer blocks are missing: the shapes are those of {v.name}, which has "
                    f"{v.num_layers} blocks, but only {arch.num_layers} are present "
                    f"(blocks {arch.num_layers}-{v.num_layers - 1} missing)",
                    hint="the checkpoint is incomplete; download it again")
    elif variant.num_heads != arch.num_heads:
        raise CheckpointError(
            f"--num-heads {arch.num_heads} given, but the shapes are those of the released "
            f"{variant.name}, which has {variant.num_heads} heads",
            hint="drop --num-heads: the released models' heads are known")


def _dtype(state: Mapping[str, torch.Tensor]) -> str:
    """The backbone's one dtype (the projection head left out), or "mixed"."""
    dtypes = {str(t.dtype).removeprefix("torch.") for k, t in state.items() if not k.startswith("fc.")}
    return dtypes.pop() if len(dtypes) == 1 else "mixed"


def infer_architecture(state: Mapping[str, torch.Tensor], num_heads: int | None = None, *,
                       known: Known | None = None) -> Inferred:
    """Read the architecture from tensor shapes alone (never from a file name).

    Heads cannot be read from shapes: they come from ``num_heads`` (the user), the run's
    config (``known.model_name``), the original model family by width, or, outside it,
    hidden size / 64 marked as assumed (:func:`msn_cli.conversion.provenance.resolve_heads`). The result
    carries a :class:`~msn_cli.conversion.provenance.Provenance` record for every such value.
    """
    known = known or Known()
    if num_heads is not None:
        known = replace(known, num_heads=num_heads)
    s = _read_shapes(state)
    constructor, unknown_name = named_constructor(known)
    warnings = [unknown_name] if unknown_name else []
    if constructor is not None:
        check_constructor(constructor, known, s.hidden_size, s.depth, s.patch, s.mlp)
    heads, more = resolve_heads(s.hidden_size, known, constructor)
    warnings += more
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    arch = Architecture(hidden_size=s.hidden_size, num_layers=s.depth, num_heads=heads.value,
                        intermediate_size=s.mlp, patch_size=s.patch, image_size=s.grid * s.patch,
                        num_channels=s.channels, qkv_bias=qkv_bias)
    variant = match_variant(arch.hidden_size, arch.num_layers, arch.patch_size,
                            arch.intermediate_size, arch.image_size)
    _check_against_variants(arch, variant)
    provenance = (
        heads,
        Provenance("qkv_bias", qkv_bias, "weights",
                   "blocks.N.attn.qkv.bias " + ("present" if qkv_bias else "absent")),
        *shared_values(s.hidden_size, constructor),
        Provenance("image_size", arch.image_size, "weights",
                   f"pos_embed holds {s.grid}x{s.grid} positions of {s.patch}-px patches"),
    )
    matches = family.matching(s.hidden_size, arch.num_layers, s.patch, s.mlp)
    return Inferred(arch, variant, _dtype(state), provenance, tuple(warnings),
                    ", ".join(c.name for c in matches) or None)
