"""The export plan: every tensor of the output with its origin, the optimizer groups and the
numbers, built and checked before any byte is written (``--dry-run`` shows it)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.conversion.export.backbone import ExportTensor, SourceNetworks, held, networks_from_file
from msn_cli.conversion.export.folder import networks_from_folder
from msn_cli.conversion.export.head import Head, HeadOptions, HeadTensors, choose_head, head_keys
from msn_cli.conversion.export.optimizer import (
    Bookkeeping,
    OptState,
    bookkeeping_numbers,
    json_numbers,
    opt_state,
    opt_summary,
)
from msn_cli.conversion.plan import dtype_name
from msn_cli.errors import UsageError
from msn_cli.original import family
from msn_cli.original.architecture import Architecture
from msn_cli.original.checkpoint import DDP_PREFIX, Encoder, import_torch
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.sources import ResolvedSource

if TYPE_CHECKING:
    pass


@dataclass
class ExportPlan:
    source: dict[str, Any]
    arch: Architecture
    variant_name: str | None
    model_names: list[str]
    dtype: str
    prefixed: bool
    encoder_from: str
    head: Head
    tensors: list[ExportTensor]
    opt: OptState = field(repr=False)
    numbers: Bookkeeping
    assumed: dict[str, str]
    notes: list[str] = field(default_factory=list)

    @property
    def prefix(self) -> str:
        return DDP_PREFIX if self.prefixed else ""

    def entry(self, name: str) -> list[ExportTensor]:
        return [t for t in self.tensors if t.entry == name]

    @property
    def output_bytes(self) -> int:
        """Tensor bytes in the file: an ``encoder`` that is the target's copy is stored once
        (torch.save writes a shared tensor once)."""
        shared = self.encoder_from.startswith("a copy")
        return sum(t.nbytes for t in self.tensors if not (shared and t.entry == "encoder"))

    def opt_summary(self) -> list[dict[str, Any]]:
        return opt_summary(self.opt)

    def to_dict(self, keys: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source, "architecture": self.arch.to_dict(),
            "variant": self.variant_name, "model_name": self.model_names, "dtype": self.dtype,
            "module_prefix": self.prefixed, "encoder_from": self.encoder_from,
            "head": self.head.to_dict(),
            "entries": {e: len(self.entry(e)) for e in ("encoder", "target_encoder", "prototypes")},
            "optimizer": {"state": "empty (no moments)", "groups": self.opt_summary()},
            "numbers": json_numbers(self.numbers), "assumed": self.assumed, "notes": self.notes,
            "output_bytes": self.output_bytes,
        }
        if keys:
            d["tensors"] = [t.to_dict() for t in self.tensors]
        return d


def _check_options(epoch: int, lr: float | None, head: HeadOptions) -> None:
    if epoch < 0:
        raise UsageError(f"--epoch must be 0 or more, not {epoch}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"--lr must be a positive number, not {lr}")
    for name, v in head.given().items():
        if name != "use_bn" and v < 1:
            raise UsageError(f"--{HeadOptions.FLAGS[name]} must be 1 or more, not {v}")


def _output_tensors(got: SourceNetworks, hd: Head, head_tensors: HeadTensors,
                    head_origin: str) -> list[ExportTensor]:
    """Every tensor of the output in entry order: target_encoder (backbone, head), encoder
    (the online network or a copy of the target), prototypes."""
    parameter = dict(head_keys(hd.use_bn))

    def head_entries(entry: str, ts: HeadTensors, origin: str) -> list[ExportTensor]:
        return [ExportTensor(entry, k, f"{origin} {k}", tuple(int(s) for s in ts[k].shape),
                             dtype_name(ts[k]), held(ts[k]), parameter[k])
                for k, _ in head_keys(hd.use_bn)]

    tensors = [ExportTensor("target_encoder", t.key, t.origin, t.shape, t.dtype, t.produce)
               for t in got.backbone.tensors]
    tensors += head_entries("target_encoder", head_tensors, head_origin)
    if got.online is not None:
        tensors += [ExportTensor("encoder", t.key, t.origin, t.shape, t.dtype, t.produce)
                    for t in got.online.tensors]
        if got.online_head is not None and hd.origin == "source":
            tensors += head_entries("encoder", got.online_head[1], "source encoder")
        else:
            tensors += head_entries("encoder", head_tensors, head_origin)
    else:
        tensors += [ExportTensor("encoder", t.key, "copy of target_encoder " + t.key, t.shape,
                                 t.dtype, t.produce, t.parameter)
                    for t in tensors if t.entry == "target_encoder"]
    p = head_tensors["prototypes"]
    tensors.append(ExportTensor("prototypes", "", f"{head_origin} prototypes",
                                tuple(int(s) for s in p.shape), dtype_name(p), held(p)))
    return tensors


def _model_names(arch: Architecture, dtype: str, notes: list[str]) -> list[str]:
    """The original family's constructors that build ``arch``; notes on what the original
    code will make of the output."""
    if dtype != "float32":
        notes.append(f"the backbone is {dtype}, kept as stored: the original code loads it into "
                     "its float32 parameters")
    names = [c.name for c in family.matching(arch.hidden_size, arch.num_layers, arch.patch_size,
                                             arch.intermediate_size)
             if c.num_heads == arch.num_heads]
    if not names:
        notes.append("no constructor of the original model family (src/deit.py) builds this "
                     f"architecture ({arch.hidden_size} wide, {arch.num_layers} blocks, "
                     f"{arch.num_heads} heads, patch {arch.patch_size}): the original code needs "
                     "a constructor of its own for it")
    if arch.image_size != family.SHARED["image_size"]:
        notes.append(f"the position embeddings are for {arch.image_size} px; the original "
                     f"training builds its models at {family.SHARED['image_size']} px")
    return names


def plan_export(source: ResolvedSource, *, encoder: Encoder = "target",
                single_process: bool = False, epoch: int = 0,
                head_from: ResolvedSource | None = None, head: HeadOptions = HeadOptions(),
                lr: float | None = None, num_heads: int | None = None,
                progress: ProgressFn = no_progress, check_source: bool = True) -> ExportPlan:
    """Everything the output will hold, with its origin; raises before anything is written."""
    _check_options(epoch, lr, head)
    import_torch()
    path = Path(source.path)
    notes: list[str] = []
    src_info: dict[str, Any] = {**source.to_dict()}
    if path.is_dir():
        got = networks_from_folder(path, encoder, num_heads, src_info, notes)
    else:
        got = networks_from_file(source, encoder, num_heads, check_source, progress, src_info,
                                 notes)
    arch = got.backbone.arch
    dtype = got.backbone.dtype if got.backbone.dtype in ("float32", "float16", "bfloat16") \
        else "float32"
    hd, head_tensors = choose_head(head_from, got.source_head, got.raw, head, arch.hidden_size,
                                   check_source, progress, notes)
    head_origin = {"source": "source", "initialised": "initialised",
                   "head-from": f"--head-from {head_from.spec if head_from else ''}"}[hd.origin]
    tensors = _output_tensors(got, hd, head_tensors, head_origin)
    numbers, assumed = bookkeeping_numbers(epoch, got.raw, lr, not single_process)
    params = [(t.key, len(t.shape)) for t in tensors if t.entry == "encoder" and t.parameter]
    opt = opt_state(params, float(numbers["lr"]))
    names = _model_names(arch, dtype, notes)
    return ExportPlan(src_info, arch, got.backbone.variant_name, names, dtype, not single_process,
                      got.encoder_from, hd, tensors, opt, numbers, assumed, notes)
