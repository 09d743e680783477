"""The projection head and prototypes of the output: carried over from a checkpoint, or
initialised the way the original ``init_model`` does (facts file: "A training run on disk")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from msn_cli.errors import CheckpointError, UsageError
from msn_cli.original.checkpoint import check_zip_integrity, load_checkpoint, sniff
from msn_cli.progress import ProgressFn
from msn_cli.transfer.sources import ResolvedSource

if TYPE_CHECKING:
    import torch

PROJ_HIDDEN = 2048
PROJ_OUT = 256
NUM_PROTOTYPES = 1024
USE_BN = True
"""Defaults of the original pre-training configs (``meta.hidden_dim``, ``meta.output_dim``,
``criterion.num_proto``, ``meta.use_bn``): the head is D -> 2048 -> 2048 -> 256 with
BatchNorm, and 1024 x 256 prototypes."""

HEAD_LINEAR = ("weight", "bias")
HEAD_BN_PARAMETERS = ("weight", "bias")
HEAD_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
HEAD_LAYERS = (("fc1", "linear"), ("bn1", "bn"), ("fc2", "linear"), ("bn2", "bn"),
               ("fc3", "linear"))
"""The projection head ``fc`` in registration order: fc1 (D -> hidden), bn1, GELU, fc2
(hidden -> hidden), bn2, GELU, fc3 (hidden -> output). The GELUs hold nothing; without
``use_bn`` the bn layers are absent."""

HeadTensors = dict[str, "torch.Tensor"]
"""The head's tensors by key (``fc.`` prefix), and ``prototypes``."""


def head_keys(use_bn: bool) -> list[tuple[str, bool]]:
    """``(key, is_parameter)`` of the projection head in registration order (``fc.`` prefix)."""
    out: list[tuple[str, bool]] = []
    for layer, kind in HEAD_LAYERS:
        if kind == "linear":
            out += [(f"fc.{layer}.{n}", True) for n in HEAD_LINEAR]
        elif use_bn:
            out += [(f"fc.{layer}.{n}", True) for n in HEAD_BN_PARAMETERS]
            out += [(f"fc.{layer}.{n}", False) for n in HEAD_BN_BUFFERS]
    return out


@dataclass(frozen=True)
class Head:
    """The projection head and prototypes the output carries, and where they come from."""

    origin: str  # source | head-from | initialised
    detail: str  # said to the user as it is
    hidden_dim: int
    output_dim: int
    use_bn: bool
    num_prototypes: int
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class HeadOptions:
    """Head sizes for an initialised head (None: the original configs' default)."""

    hidden_dim: int | None = None
    output_dim: int | None = None
    num_prototypes: int | None = None
    use_bn: bool | None = None
    seed: int = 0

    FLAGS: ClassVar[dict[str, str]] = {"hidden_dim": "proj-hidden", "output_dim": "proj-out",
                                       "num_prototypes": "num-prototypes", "use_bn": "bn"}
    """The command-line option of each size."""

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in (("hidden_dim", self.hidden_dim), ("output_dim", self.output_dim),
                                  ("num_prototypes", self.num_prototypes),
                                  ("use_bn", self.use_bn)) if v is not None}


def _expected_shapes(d: int, hidden: int, out: int, use_bn: bool) -> dict[str, tuple[int, ...]]:
    expect: dict[str, tuple[int, ...]] = {
        "fc.fc1.weight": (hidden, d), "fc.fc1.bias": (hidden,),
        "fc.fc2.weight": (hidden, hidden), "fc.fc2.bias": (hidden,),
        "fc.fc3.weight": (out, hidden), "fc.fc3.bias": (out,)}
    for layer in ("bn1", "bn2") if use_bn else ():
        for n in ("weight", "bias", "running_mean", "running_var"):
            expect[f"fc.{layer}.{n}"] = (hidden,)
        expect[f"fc.{layer}.num_batches_tracked"] = ()
    return expect


def head_from_state(state: Mapping[str, torch.Tensor], prototypes: Any, d: int, what: str,
                    prefix: str) -> tuple[Head, HeadTensors]:
    """The projection head stored in ``state`` (with ``prototypes``), checked against the
    layout the original ``init_model`` builds; CheckpointError when it is not that head."""
    import torch

    fc = {k: v for k, v in state.items() if k.startswith("fc.")}
    use_bn = "fc.bn1.weight" in fc
    want = [k for k, _ in head_keys(use_bn)]
    if set(fc) != set(want):
        extra = sorted(set(fc) - set(want))
        lacking = sorted(set(want) - set(fc))
        raise CheckpointError(
            f"the projection head of {what} is not the one the original init_model builds"
            + (f": it lacks {prefix}{lacking[0]}" if lacking else "")
            + (f"; it has {prefix}{extra[0]}" if extra else ""),
            hint="give --head-from a checkpoint with the standard head, or leave the head to be "
                 "initialised")
    hidden, out = int(fc["fc.fc1.weight"].shape[0]), int(fc["fc.fc3.weight"].shape[0])
    for k, shape in _expected_shapes(d, hidden, out, use_bn).items():
        if tuple(fc[k].shape) != shape:
            raise CheckpointError(
                f"{prefix}{k} in {what} has shape {list(fc[k].shape)}, expected {list(shape)}"
                + (f" (the backbone is {d} wide)" if k == "fc.fc1.weight" else ""),
                hint="the head must come from a model of the same width")
    if not isinstance(prototypes, torch.Tensor) or prototypes.dim() != 2 \
            or int(prototypes.shape[1]) != out:
        shown = list(prototypes.shape) if isinstance(prototypes, torch.Tensor) else \
            type(prototypes).__name__
        raise CheckpointError(f"the prototypes of {what} are {shown}, expected N x {out} "
                              "(the head's output size)")
    head = Head("", "", hidden, out, use_bn, int(prototypes.shape[0]))
    return head, {**{k: fc[k] for k in want}, "prototypes": prototypes}


def initialised_head(d: int, hidden: int, out: int, use_bn: bool, num_prototypes: int,
                     seed: int) -> HeadTensors:
    """A head and prototypes as the original ``init_model`` and ``main`` make them: every
    Linear weight from a normal of std 0.02 truncated to [-2, 2], biases 0; BatchNorm weight 1,
    bias 0, running mean 0, running variance 1, no batches tracked; prototypes uniform in
    +-sqrt(1 / output_dim). Seeded, so the same options give the same file. float32, as the
    original model's parameters, whatever the backbone's dtype: the prototypes are not loaded
    into a parameter but replace its data, so a half-precision tensor would stay one."""
    import torch

    g = torch.Generator().manual_seed(seed)
    tdt = torch.float32
    dims = {"fc1": (hidden, d), "fc2": (hidden, hidden), "fc3": (out, hidden)}
    sd: HeadTensors = {}
    for key, _param in head_keys(use_bn):
        _, layer, name = key.split(".")
        if layer in dims:
            if name == "weight":
                w = torch.empty(dims[layer])
                torch.nn.init.trunc_normal_(w, std=0.02, a=-2.0, b=2.0, generator=g)
                sd[key] = w.to(tdt)
            else:
                sd[key] = torch.zeros(dims[layer][0], dtype=tdt)
        elif name == "num_batches_tracked":
            sd[key] = torch.tensor(0, dtype=torch.long)
        elif name in ("weight", "running_var"):
            sd[key] = torch.ones(hidden, dtype=tdt)
        else:
            sd[key] = torch.zeros(hidden, dtype=tdt)
    bound = (1.0 / out) ** 0.5
    protos = torch.empty(num_prototypes, out)
    torch.nn.init.uniform_(protos, -bound, bound, generator=g)
    sd["prototypes"] = protos.to(tdt)
    return sd


def _head_of_file(head_from: ResolvedSource, d: int, check_source: bool,
                  progress: ProgressFn) -> tuple[Head, HeadTensors]:
    """The head and prototypes of ``--head-from``, a checkpoint file."""
    hp = Path(head_from.path)
    if hp.is_dir():
        raise CheckpointError(f"--head-from {hp} is a folder: a model folder has no head",
                              hint="give a checkpoint file (released or training)")
    if check_source and hp.is_file() and sniff(hp) == "zip":
        check_zip_integrity(hp, progress, want_sha256=False)
    hck = load_checkpoint(hp, "target", keep_raw=True)
    if not any(k.startswith("fc.") for k in hck.state):
        raise CheckpointError(f"--head-from {hp.name} has no projection head (fc.*)")
    h, tensors = head_from_state(hck.state, (hck.raw or {}).get("prototypes"), d, hp.name,
                                 hck.raw_key_prefix)
    return Head("head-from", f"the projection head (target_encoder fc.*) and prototypes of "
                f"{hp.name}", h.hidden_dim, h.output_dim, h.use_bn, h.num_prototypes), tensors


def _require_sizes_unset(hd: Head, head: HeadOptions) -> None:
    """Size options describe an initialised head: refuse any that a carried head contradicts."""
    have = {"hidden_dim": hd.hidden_dim, "output_dim": hd.output_dim,
            "num_prototypes": hd.num_prototypes, "use_bn": hd.use_bn}
    wrong = [f"--{HeadOptions.FLAGS[k]} {v} (the head has {have[k]})"
             for k, v in head.given().items() if have[k] != v]
    if wrong:
        raise UsageError("head size options disagree with the head that is carried over: "
                         + ", ".join(wrong),
                         hint="the sizes apply to an initialised head only; drop them")


def choose_head(head_from: ResolvedSource | None, source_head: tuple[Head, HeadTensors] | None,
                raw: Mapping[str, Any] | None, head: HeadOptions, d: int, check_source: bool,
                progress: ProgressFn, notes: list[str]) -> tuple[Head, HeadTensors]:
    """The head and prototypes: ``--head-from``, else the source's own, else initialised the
    way the original ``init_model`` does; size options are for an initialised head only."""
    if head_from is not None:
        hd, head_tensors = _head_of_file(head_from, d, check_source, progress)
        if source_head is not None:
            notes.append("the source's own head and prototypes are replaced by those of "
                         f"{Path(head_from.path).name}")
    elif source_head is not None:
        h, head_tensors = source_head
        hd = Head("source", "the source's own projection head and prototypes", h.hidden_dim,
                  h.output_dim, h.use_bn, h.num_prototypes)
    else:
        if raw is not None and "prototypes" in raw:
            notes.append("the source's prototypes are left out: they belong with a projection "
                         "head, which the source lacks")
        hd = Head("initialised",
                  "initialised as the original init_model does (seeded: truncated normal std "
                  "0.02 for Linear weights, zero biases, fresh BatchNorm, uniform prototypes): "
                  "NOT trained",
                  head.hidden_dim or PROJ_HIDDEN, head.output_dim or PROJ_OUT,
                  USE_BN if head.use_bn is None else head.use_bn,
                  head.num_prototypes or NUM_PROTOTYPES, head.seed)
        head_tensors = initialised_head(d, hd.hidden_dim, hd.output_dim, hd.use_bn,
                                        hd.num_prototypes, head.seed)
    if hd.origin != "initialised":
        _require_sizes_unset(hd, head)
    return hd, head_tensors
