"""The networks a checkpoint file gives the export: its target backbone, the online one when
asked for, and the projection heads they carry, each checked to map cleanly onto the original
model with the same rules as ``convert``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.conversion import mapping
from msn_cli.conversion.export.head import Head, HeadTensors, head_from_state
from msn_cli.conversion.plan import dtype_name, plan_from_state
from msn_cli.errors import CheckpointError
from msn_cli.hf.dtypes import nbytes_of
from msn_cli.original.architecture import Architecture
from msn_cli.original.checkpoint import (
    Checkpoint,
    Encoder,
    check_zip_integrity,
    infer_architecture,
    load_checkpoint,
    sniff,
    strip_ddp_prefix,
)
from msn_cli.progress import ProgressFn
from msn_cli.transfer.sources import ResolvedSource

if TYPE_CHECKING:
    import torch

@dataclass(frozen=True)
class ExportTensor:
    """One tensor of the output: where it goes and where it comes from."""

    entry: str  # encoder | target_encoder | prototypes
    key: str  # prefix-free key in the entry ("" for prototypes)
    origin: str
    shape: tuple[int, ...]
    dtype: str
    produce: Callable[[], torch.Tensor] = field(repr=False, compare=False)
    parameter: bool = True  # False for BatchNorm buffers (not in the optimizer)

    @property
    def nbytes(self) -> int:
        return nbytes_of(self.dtype, self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "key": self.key, "origin": self.origin,
                "shape": list(self.shape), "dtype": self.dtype}


def held(t: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A ``produce`` for a tensor already in hand."""
    return lambda: t


@dataclass
class Backbone:
    """A backbone in the original layout (prefix-free keys, in original order) with lazy tensors."""

    arch: Architecture
    variant_name: str | None
    tensors: list[ExportTensor]  # entry left as "target_encoder"
    dtype: str


@dataclass
class SourceNetworks:
    """What a source gives the export: its target backbone, the online one when asked for,
    the heads they carry, the whole file (None for a folder or a bare state dict), and where
    the output's ``encoder`` comes from."""

    backbone: Backbone
    raw: Mapping[str, Any] | None
    encoder_from: str
    online: Backbone | None = None
    online_head: tuple[Head, HeadTensors] | None = None
    source_head: tuple[Head, HeadTensors] | None = None


def backbone_from_state(state: Mapping[str, torch.Tensor], ckpt: Checkpoint, what: str,
                        num_heads: int | None, entry: str) -> Backbone:
    """The backbone keys of ``state`` (a network of a checkpoint file), checked to map cleanly
    onto the original model with the same rules as ``convert``."""
    inferred = infer_architecture(state, num_heads)
    plan = plan_from_state(state, inferred, prefix=ckpt.raw_key_prefix)
    plan.require_ok()
    tensors = []
    for key, _targets, _rule in mapping.inverse(inferred.arch):
        t = state[key]
        tensors.append(ExportTensor(entry, key, f"{what} {ckpt.raw_key_prefix}{key}",
                                    tuple(int(s) for s in t.shape), dtype_name(t), held(t)))
    return Backbone(inferred.arch, inferred.variant.name if inferred.variant else None,
                    tensors, inferred.dtype)


def _online(ckpt: Checkpoint, backbone: Backbone, num_heads: int | None,
            notes: list[str]) -> tuple[Backbone, tuple[Head, HeadTensors] | None]:
    """The online network (``encoder``) of a training checkpoint, and its head if it has one."""
    raw = ckpt.raw if ckpt.layout != "state_dict" else None
    if raw is None or "encoder" not in raw:
        raise CheckpointError(f"{ckpt.path.name} has no 'encoder' (the online network)",
                              hint="only a training checkpoint has one; leave --encoder at target")
    _, online_state = strip_ddp_prefix(raw["encoder"])
    online = backbone_from_state(online_state, ckpt, "encoder", num_heads, "encoder")
    if online.arch != backbone.arch:
        raise CheckpointError(f"the online encoder of {ckpt.path.name} has another "
                              "architecture than its target encoder")
    if online.dtype != backbone.dtype:
        notes.append(f"the online encoder is {online.dtype}, the target {backbone.dtype}")
    head = head_from_state(online_state, raw.get("prototypes"), backbone.arch.hidden_size,
                           "the online encoder", ckpt.raw_key_prefix) \
        if any(k.startswith("fc.") for k in online_state) else None
    return online, head


def networks_from_file(source: ResolvedSource, encoder: Encoder, num_heads: int | None,
                       check_source: bool, progress: ProgressFn, src_info: dict[str, Any],
                       notes: list[str]) -> SourceNetworks:
    """Load a released or training checkpoint and check each network it gives maps cleanly."""
    path = Path(source.path)
    sha = None
    if check_source and path.is_file() and sniff(path) == "zip":
        sha = check_zip_integrity(path, progress, want_sha256=source.sha256 is None)
    ckpt = load_checkpoint(path, "target", keep_raw=True)
    raw = ckpt.raw if ckpt.layout != "state_dict" else None
    src_info.update(layout=ckpt.layout, sha256=source.sha256 or sha, size=ckpt.file_size,
                    prefixed=ckpt.prefixed, encoders=ckpt.available_encoders)
    backbone = backbone_from_state(ckpt.state, ckpt, "target_encoder", num_heads,
                                   "target_encoder")
    if source.kind == "variant" and backbone.variant_name != source.name:
        raise CheckpointError(
            f"the file fetched as '{source.name}' has the shapes of "
            f"{backbone.variant_name or 'no released variant'}",
            hint="the mirror or cache holds the wrong file: msn download --force "
                 + str(source.name))
    got = SourceNetworks(backbone, raw, "a copy of target_encoder")
    if encoder == "online":
        got.online, got.online_head = _online(ckpt, backbone, num_heads, notes)
        got.encoder_from = "the source's online network ('encoder')"
    if any(k.startswith("fc.") for k in ckpt.state):
        got.source_head = head_from_state(ckpt.state, (raw or {}).get("prototypes"),
                                          backbone.arch.hidden_size, path.name,
                                          ckpt.raw_key_prefix)
    return got
