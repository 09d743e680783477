"""``export``: back to a checkpoint that the original MSN training code resumes from.

The original resume path (``load_checkpoint`` in facebookresearch/msn ``src/msn_train.py``,
facts in ``../shared/msn-facts.md``) reads ``epoch``, loads ``encoder`` and ``target_encoder``
strictly (projection head ``fc.*`` included; keys with ``module.`` when the resuming run has
``world_size > 1``), sets ``prototypes`` and loads ``opt`` into the AdamW its ``init_opt``
builds: three parameter groups in a fixed order. Released files lack ``encoder``, ``opt`` and
``epoch``; a converted or Hub folder lacks the head and the prototypes too.

Sources: a checkpoint file (released or training; a released name or URL is fetched first),
or a ``ViTMSNModel`` folder. As everywhere in msn, an :class:`ExportPlan` (every tensor of the
output with its origin, the optimizer groups, the numbers) is built and checked before any byte
is written; ``--dry-run`` shows it. The backbone of a folder goes back through the inverse of
:data:`msn_cli.conversion.mapping.RULES` (qkv rows joined). The file is written beside OUT and renamed into
place once read back and compared with the plan (:func:`msn_cli.util.outdir.atomic_output_file`).

What the output does not carry: optimizer moments (``opt`` is the state of an AdamW before its
first step: the moments start at zero) and schedule positions (the original code fast-forwards
its learning-rate, weight-decay, momentum and sharpening schedules by ``epoch`` epochs; with
the default ``epoch`` 0 they restart from their beginning, which is what continuing on new
data wants).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from msn_cli.conversion import mapping
from msn_cli.conversion.plan import plan_from_state
from msn_cli.errors import CheckpointError, FolderError, MappingError, UsageError
from msn_cli.hf.safetensors_io import ST_DTYPES, read_header
from msn_cli.original import family
from msn_cli.original.architecture import Architecture
from msn_cli.original.checkpoint import (
    DDP_PREFIX,
    Checkpoint,
    Encoder,
    check_zip_integrity,
    import_torch,
    infer_architecture,
    load_checkpoint,
    sniff,
    strip_ddp_prefix,
)
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.sources import ResolvedSource
from msn_cli.util.outdir import atomic_output_file, check_file_target

if TYPE_CHECKING:
    import torch

# -- what the original code builds (facts file: "A training run on disk", "Resuming") ---------

PROJ_HIDDEN = 2048
PROJ_OUT = 256
NUM_PROTOTYPES = 1024
USE_BN = True
REF_LR = 1e-3
"""Defaults of the original pre-training configs (``meta.hidden_dim``, ``meta.output_dim``,
``criterion.num_proto``, ``meta.use_bn``, ``optimization.lr``): the head is D -> 2048 -> 2048 ->
256 with BatchNorm, 1024 x 256 prototypes, reference learning rate 1e-3."""

HEAD_LINEAR = ("weight", "bias")
HEAD_BN_PARAMETERS = ("weight", "bias")
HEAD_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")
HEAD_LAYERS = (("fc1", "linear"), ("bn1", "bn"), ("fc2", "linear"), ("bn2", "bn"),
               ("fc3", "linear"))
"""The projection head ``fc`` in registration order: fc1 (D -> hidden), bn1, GELU, fc2
(hidden -> hidden), bn2, GELU, fc3 (hidden -> output). The GELUs hold nothing; without
``use_bn`` the bn layers are absent."""

BOOKKEEPING = ("epoch", "loss", "batch_size", "world_size", "lr", "temperature")
"""The plain numbers ``save_checkpoint`` writes beside the networks; only ``epoch`` is read
back when resuming."""

ENTRY_ORDER = ("encoder", "opt", "prototypes", "target_encoder", *BOOKKEEPING)
"""The order of the entries in a checkpoint the original code saves."""


@dataclass(frozen=True)
class OptGroup:
    """One parameter group of the original ``init_opt``'s AdamW."""

    name: str
    holds: str
    extras: tuple[tuple[str, Any], ...]
    """Keys set on top of AdamW's defaults (``lr`` None: the reference learning rate)."""


OPT_GROUPS: tuple[OptGroup, ...] = (
    OptGroup("weights", "encoder parameters whose name contains neither 'bias' nor 'bn' and "
             "that are not 1-D", ()),
    OptGroup("biases and norms", "the other encoder parameters (biases, BatchNorm, 1-D)",
             (("WD_exclude", True), ("weight_decay", 0))),
    OptGroup("prototypes", "the prototypes", (("lr", None), ("LARS_exclude", True),
                                              ("WD_exclude", True), ("weight_decay", 0))),
)
"""The three groups in their fixed order; ``opt.load_state_dict`` needs the same number of
groups and of parameters per group. Parameters are listed in the online encoder's
``named_parameters()`` order (built before any DistributedDataParallel wrapping: bare names)."""


ADAMW_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2, "amsgrad": False,
    "maximize": False, "foreach": None, "capturable": False, "differentiable": False,
    "fused": None,
}
"""``torch.optim.AdamW``'s hyperparameters and their defaults, as its ``state_dict`` stores
them in every group (torch 2.x; a newer torch fills in keys of its own when loading, an older
one ignores the ones it does not know). The original ``init_opt`` passes none, so its groups
hold these plus the group's own keys. Building an AdamW here instead would import torch's
compiler (about 5 s) for a dict."""


def opt_group_of(name: str, ndim: int) -> int:
    """Which of the first two groups the encoder parameter ``name`` (bare) belongs to."""
    return 0 if ("bias" not in name and "bn" not in name and ndim != 1) else 1


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


# -- the plan ------------------------------------------------------------------------------

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
        return math.prod(self.shape) * _ITEMSIZE.get(self.dtype, 4)

    def to_dict(self) -> dict[str, Any]:
        return {"entry": self.entry, "key": self.key, "origin": self.origin,
                "shape": list(self.shape), "dtype": self.dtype}


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
    opt: dict[str, Any] = field(repr=False)
    numbers: dict[str, Any]
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
        out = []
        for spec, group in zip(OPT_GROUPS, self.opt["param_groups"], strict=True):
            hyper = {k: v for k, v in group.items() if k != "params"}
            out.append({"group": spec.name, "holds": spec.holds, "parameters": len(group["params"]),
                        **{k: hyper[k] for k in ("lr", "weight_decay") if k in hyper},
                        "extra_keys": {k: v for k, v in spec.extras if k not in ("lr", "weight_decay")}})
        return out

    def to_dict(self, keys: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "source": self.source, "architecture": self.arch.to_dict(),
            "variant": self.variant_name, "model_name": self.model_names, "dtype": self.dtype,
            "module_prefix": self.prefixed, "encoder_from": self.encoder_from,
            "head": self.head.to_dict(),
            "entries": {e: len(self.entry(e)) for e in ("encoder", "target_encoder", "prototypes")},
            "optimizer": {"state": "empty (no moments)", "groups": self.opt_summary()},
            "numbers": self.numbers, "assumed": self.assumed, "notes": self.notes,
            "output_bytes": self.output_bytes,
        }
        if keys:
            d["tensors"] = [t.to_dict() for t in self.tensors]
        return d


@dataclass
class ExportResult:
    out: Path | None
    plan: ExportPlan
    size: int | None = None
    dry_run: bool = False

    def to_dict(self, keys: bool = True) -> dict[str, Any]:
        return {"out": str(self.out) if self.out else None, "dry_run": self.dry_run,
                "size": self.size, "plan": self.plan.to_dict(keys)}


_ITEMSIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8}
_FROM_ST = {v: k for k, v in ST_DTYPES.items()}


def _const(t: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: t


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


# -- the backbone, from each kind of source ---------------------------------------------------

@dataclass
class _Backbone:
    """A backbone in the original layout (prefix-free keys, in original order) with lazy tensors."""

    arch: Architecture
    variant_name: str | None
    tensors: list[ExportTensor]  # entry left as "target_encoder"
    dtype: str


def _from_checkpoint_state(state: Mapping[str, torch.Tensor], ckpt: Checkpoint, what: str,
                           num_heads: int | None, entry: str) -> _Backbone:
    """The backbone keys of ``state`` (a network of a checkpoint file), checked to map cleanly
    onto the original model with the same rules as ``convert``."""
    inferred = infer_architecture(state, num_heads)
    plan = plan_from_state(state, inferred, prefix=ckpt.raw_key_prefix)
    plan.require_ok()
    tensors = []
    for key, _targets, _rule in mapping.inverse(inferred.arch):
        t = state[key]
        tensors.append(ExportTensor(entry, key, f"{what} {ckpt.raw_key_prefix}{key}",
                                    tuple(int(s) for s in t.shape), _dtype_name(t),
                                    _const(t)))
    return _Backbone(inferred.arch, inferred.variant.name if inferred.variant else None,
                     tensors, inferred.dtype)


class _Folder:
    """A ``ViTMSNModel`` folder: ``config.json`` and ``*.safetensors``; tensors read when asked."""

    def __init__(self, path: Path):
        self.path = path
        cfg_path = path / "config.json"
        if not cfg_path.is_file():
            raise FolderError(f"{path} has no config.json: not a Hugging Face model folder",
                              hint="give a folder written by msn convert or downloaded from the Hub")
        from msn_cli.util.safeio import UnsafeInput, read_json

        try:  # a folder converted or downloaded elsewhere: capped, regular files only
            self.config = read_json(cfg_path)
        except (OSError, UnsafeInput, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise FolderError(f"cannot read {cfg_path}: {e}") from e
        if not isinstance(self.config, dict):
            raise FolderError(f"{cfg_path} is not a JSON object")
        model_type = self.config.get("model_type")
        if model_type != "vit_msn":
            raise FolderError(f"{path} holds a '{model_type}' model, not a ViTMSNModel (vit_msn)",
                              hint="msn export takes folders of ViTMSNModel")
        from msn_cli.hf.folder import BIN_WEIGHTS, ConfigError, config_architecture, weights_files

        try:  # typed and bounded, like verify's reader
            self.arch = config_architecture(self.config)
        except ConfigError as e:
            raise FolderError(f"{cfg_path}: {e}") from e
        # exactly the files from_pretrained would load, never a glob (a decoy file is ignored)
        files, weight_map = weights_files(path)
        if files[0].name == BIN_WEIGHTS:
            raise FolderError(f"{path} holds only {BIN_WEIGHTS} weights",
                              hint="only safetensors weights are read (never pickles)")
        self.where: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
        for f in files:
            try:
                header = read_header(f)
            except (OSError, ValueError) as e:
                raise FolderError(f"{f.name} is not a readable safetensors file ({e})") from e
            header.pop("__metadata__", None)
            for k, v in header.items():
                try:
                    dtype = _FROM_ST[v["dtype"]]
                    shape = tuple(int(s) for s in v["shape"])
                except (KeyError, TypeError, ValueError) as e:
                    raise FolderError(f"{f.name}: the header entry of {k} is malformed") from e
                if k in self.where or (weight_map is not None and weight_map.get(k) != f.name):
                    raise FolderError(f"{f.name} holds {k}, which the folder stores elsewhere too "
                                      "or its index puts in another file")
                self.where[k] = (f, dtype, shape)
        keys = list(self.where)
        # a ViTMSNForImageClassification save: backbone under vit., a classifier beside it
        self.prefix = "vit." if keys and all(k.startswith(("vit.", "classifier.")) for k in keys) \
            else ""
        self._handles: dict[Path, Any] = {}

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        f = self.where[self.prefix + key][0]
        if f not in self._handles:
            try:
                self._handles[f] = safe_open(str(f), framework="pt")
            except Exception as e:
                raise FolderError(f"cannot read {f}: {e}") from e
        return self._handles[f].get_tensor(self.prefix + key)

    def joined(self, keys: tuple[str, ...]) -> torch.Tensor:
        """The tensors of ``keys`` concatenated by rows (the fused qkv from its three parts)."""
        import torch

        return torch.cat([self.get(k) for k in keys], 0)


def _from_folder(folder: _Folder) -> tuple[_Backbone, list[str]]:
    """The backbone rebuilt from a folder through :func:`mapping.inverse`; notes for the user."""

    arch = folder.arch
    have = {k.removeprefix(folder.prefix) for k in folder.where if k.startswith(folder.prefix)}
    used: set[str] = set()
    problems: list[str] = []
    tensors: list[ExportTensor] = []
    dtypes: set[str] = set()
    for src, targets, rule in mapping.inverse(arch):
        missing = [t for t in targets if t not in have]
        if missing:
            problems.append(f"missing '{folder.prefix}{missing[0]}' (for {src})")
            continue
        used.update(targets)
        parts = [folder.where[folder.prefix + t] for t in targets]
        dts = {p[1] for p in parts}
        dtype = dts.pop() if len(dts) == 1 else "mixed"
        if rule.action == "split_qkv":
            shape = (sum(p[2][0] for p in parts), *parts[0][2][1:])
            origin = "joined from " + ", ".join(folder.prefix + t for t in targets)
            produce: Callable[[], torch.Tensor] = functools.partial(folder.joined, targets)
        else:
            shape = parts[0][2]
            origin = f"from {folder.prefix}{targets[0]}"
            produce = functools.partial(folder.get, targets[0])
        want = rule.shape(arch) if rule.shape is not None else shape
        if shape != want or dtype == "mixed":
            problems.append(f"'{src}' would have shape {list(shape)} ({dtype}), expected "
                            f"{list(want)} for the config's architecture")
            continue
        dtypes.add(dtype)
        tensors.append(ExportTensor("target_encoder", src, origin, shape, dtype, produce))
    notes = []
    for k in sorted(have - used):
        if k.startswith("classifier."):
            continue
        problems.append(f"'{folder.prefix}{k}' maps to no original key")
    if any(k.startswith("classifier.") for k in have):
        notes.append("the folder's classifier (classifier.*) has no place in an MSN checkpoint "
                     "and is left out")
    if problems:
        n = len(problems)
        raise MappingError(f"{folder.path} does not map back onto the original model ({n} problem"
                           f"{'s' if n > 1 else ''}): " + "; ".join(problems[:6])
                           + (f"; and {n - 6} more" if n > 6 else ""), problems)
    from msn_cli.original.variants import match_variant

    v = match_variant(arch.hidden_size, arch.num_layers, arch.patch_size, arch.intermediate_size,
                      arch.image_size)
    dtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
    return _Backbone(arch, v.name if v else None, tensors, dtype), notes


# -- the head and prototypes ---------------------------------------------------------------

def _head_from_state(state: Mapping[str, torch.Tensor], prototypes: Any, d: int, what: str,
                     prefix: str) -> tuple[Head, dict[str, torch.Tensor]]:
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
    w1 = fc["fc.fc1.weight"]
    hidden, out = int(w1.shape[0]), int(fc["fc.fc3.weight"].shape[0])
    expect: dict[str, tuple[int, ...]] = {
        "fc.fc1.weight": (hidden, d), "fc.fc1.bias": (hidden,),
        "fc.fc2.weight": (hidden, hidden), "fc.fc2.bias": (hidden,),
        "fc.fc3.weight": (out, hidden), "fc.fc3.bias": (out,)}
    for layer in ("bn1", "bn2") if use_bn else ():
        for n in ("weight", "bias", "running_mean", "running_var"):
            expect[f"fc.{layer}.{n}"] = (hidden,)
        expect[f"fc.{layer}.num_batches_tracked"] = ()
    for k, shape in expect.items():
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


def _initialised_head(d: int, hidden: int, out: int, use_bn: bool, num_prototypes: int,
                      seed: int) -> dict[str, torch.Tensor]:
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
    sd: dict[str, torch.Tensor] = {}
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


# -- building the plan -----------------------------------------------------------------------

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


def _opt_state(names: list[tuple[str, int]], ref_lr: float) -> dict[str, Any]:
    """The state of a fresh AdamW over the original three groups: no moments (``state`` is
    empty), each group AdamW's defaults with its own keys on top, parameters numbered in
    order as ``Optimizer.state_dict`` numbers them."""
    counts = [0, 0]
    for name, ndim in names:
        counts[opt_group_of(name, ndim)] += 1
    groups = []
    start = 0
    for spec, n in zip(OPT_GROUPS, [*counts, 1], strict=True):
        group: dict[str, Any] = dict(ADAMW_DEFAULTS)
        for k, v in spec.extras:
            group[k] = ref_lr if (k == "lr" and v is None) else v
        group["params"] = list(range(start, start + n))
        start += n
        groups.append(group)
    return {"state": {}, "param_groups": groups}


def _numbers(epoch: int, raw: Mapping[str, Any] | None, ref_lr: float | None,
             prefixed: bool) -> tuple[dict[str, Any], dict[str, str], float]:
    """The bookkeeping numbers, what was assumed, and the reference learning rate."""
    numbers: dict[str, Any] = {"epoch": epoch}
    assumed: dict[str, str] = {}
    carried = raw or {}
    for k in BOOKKEEPING[1:]:
        v = carried.get(k)
        numbers[k] = v if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    if ref_lr is not None:
        numbers["lr"] = ref_lr
    if numbers["lr"] is None:
        numbers["lr"] = REF_LR
        assumed["lr"] = (f"{REF_LR:g}, the original configs' optimization.lr (the prototypes "
                         "group's lr; the lr schedule sets every group's lr at the first step)")
    if not prefixed and numbers["world_size"] not in (None, 1):
        numbers["world_size"] = 1  # a bare-keyed file is for a single-process run
    for k in ("loss", "batch_size", "world_size", "temperature"):
        if numbers[k] is None:
            assumed[k] = "not known: written as None (the original code does not read it back)"
    return numbers, assumed, float(numbers["lr"])


def looks_like_hub_id(spec: str) -> bool:
    """``owner/name`` that is neither a local path nor a URL nor a checkpoint file name."""
    if "://" in spec or spec.count("/") != 1 or spec.startswith((".", "/", "~")):
        return False
    if Path(spec).expanduser().exists():
        return False
    return not spec.lower().endswith((".tar", ".pth", ".pt", ".bin", ".safetensors"))


def resolve_export_source(spec: str, *, cache_dir: str | os.PathLike[str] | None = None,
                          base_url: str | None = None, progress: ProgressFn = no_progress,
                          notify: Callable[[str], None] | None = None) -> ResolvedSource:
    """What ``msn export`` reads: like :func:`msn_cli.transfer.sources.resolve_source` (a released name,
    a file, a URL, a folder), and a Hub repo id (``owner/name``), fetched with
    ``snapshot_download`` (configs and safetensors weights only: never a pickle) into the
    Hugging Face cache."""
    from msn_cli.transfer.sources import resolve_source

    if not looks_like_hub_id(spec):
        return resolve_source(spec, cache_dir=cache_dir, base_url=base_url, progress=progress,
                              notify=notify)
    from msn_cli.errors import NetworkError

    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency
        raise NetworkError("huggingface_hub is not installed") from e
    progress("downloading " + spec, 0, None)
    try:
        path = snapshot_download(spec, allow_patterns=["*.json", "*.safetensors"])
    except Exception as e:
        raise NetworkError(f"cannot fetch {spec} from the Hub: {type(e).__name__}: "
                           f"{(str(e).splitlines() or [''])[0][:200]}",
                           hint="check the repo id and your connection, or give a local path "
                                "(HF_HUB_OFFLINE=1 uses only what is cached)") from e
    return ResolvedSource(spec, "path", Path(path))


@dataclass
class _FileSource:
    """What a checkpoint file gives the export: its target backbone, the online one when
    asked for, the heads they carry, the whole file, and where the encoder comes from."""

    backbone: _Backbone
    raw: Mapping[str, Any] | None
    encoder_from: str
    online: _Backbone | None = None
    online_head: tuple[Head, dict[str, torch.Tensor]] | None = None
    source_head: tuple[Head, dict[str, torch.Tensor]] | None = None


def _from_file(source: ResolvedSource, path: Path, encoder: Encoder, num_heads: int | None,
               check_source: bool, progress: ProgressFn, src_info: dict[str, Any],
               notes: list[str]) -> _FileSource:
    """Load a released or training checkpoint and check each network it gives maps cleanly."""
    online: _Backbone | None = None
    online_head: tuple[Head, dict[str, torch.Tensor]] | None = None
    source_head: tuple[Head, dict[str, torch.Tensor]] | None = None
    sha = None
    if check_source and path.is_file() and sniff(path) == "zip":
        sha = check_zip_integrity(path, progress, want_sha256=source.sha256 is None)
    ckpt = load_checkpoint(path, "target", keep_raw=True)
    raw = ckpt.raw
    src_info.update(layout=ckpt.layout, sha256=source.sha256 or sha, size=ckpt.file_size,
                    prefixed=ckpt.prefixed, encoders=ckpt.available_encoders)
    if ckpt.layout == "state_dict":
        raw = None
    backbone = _from_checkpoint_state(ckpt.state, ckpt, "target_encoder", num_heads,
                                      "target_encoder")
    if source.kind == "variant" and backbone.variant_name != source.name:
        raise CheckpointError(
            f"the file fetched as '{source.name}' has the shapes of "
            f"{backbone.variant_name or 'no released variant'}",
            hint="the mirror or cache holds the wrong file: msn download --force "
                 + str(source.name))
    if encoder == "online":
        if raw is None or "encoder" not in raw:
            raise CheckpointError(
                f"{path.name} has no 'encoder' (the online network)",
                hint="only a training checkpoint has one; leave --encoder at target")
        _, online_state = strip_ddp_prefix(raw["encoder"])
        online = _from_checkpoint_state(online_state, ckpt, "encoder", num_heads, "encoder")
        if online.arch != backbone.arch:
            raise CheckpointError(f"the online encoder of {path.name} has another "
                                  "architecture than its target encoder")
        if online.dtype != backbone.dtype:
            notes.append(f"the online encoder is {online.dtype}, the target {backbone.dtype}")
        online_head = _head_from_state(online_state, raw.get("prototypes"),
                                       backbone.arch.hidden_size, "the online encoder",
                                       ckpt.raw_key_prefix) \
            if any(k.startswith("fc.") for k in online_state) else None
        encoder_from = "the source's online network ('encoder')"
    else:
        encoder_from = "a copy of target_encoder"
    if any(k.startswith("fc.") for k in ckpt.state):
        source_head = _head_from_state(ckpt.state, (raw or {}).get("prototypes"),
                                       backbone.arch.hidden_size, path.name,
                                       ckpt.raw_key_prefix)
    return _FileSource(backbone, raw, encoder_from, online, online_head, source_head)


def _choose_head(head_from: ResolvedSource | None,
                 source_head: tuple[Head, dict[str, torch.Tensor]] | None,
                 raw: Mapping[str, Any] | None, head: HeadOptions, d: int, check_source: bool,
                 progress: ProgressFn, notes: list[str]) -> tuple[Head, dict[str, torch.Tensor]]:
    """The head and prototypes: ``--head-from``, else the source's own, else initialised the
    way the original ``init_model`` does; size options are for an initialised head only."""
    head_tensors: dict[str, torch.Tensor]
    if head_from is not None:
        hp = Path(head_from.path)
        if hp.is_dir():
            raise CheckpointError(f"--head-from {hp} is a folder: a model folder has no head",
                                  hint="give a checkpoint file (released or training)")
        if check_source and hp.is_file() and sniff(hp) == "zip":
            check_zip_integrity(hp, progress, want_sha256=False)
        hck = load_checkpoint(hp, "target", keep_raw=True)
        if not any(k.startswith("fc.") for k in hck.state):
            raise CheckpointError(f"--head-from {hp.name} has no projection head (fc.*)")
        h, head_tensors = _head_from_state(hck.state, (hck.raw or {}).get("prototypes"), d,
                                           hp.name, hck.raw_key_prefix)
        hd = Head("head-from", f"the projection head (target_encoder fc.*) and prototypes of "
                  f"{hp.name}", h.hidden_dim, h.output_dim, h.use_bn, h.num_prototypes)
        if source_head is not None:
            notes.append(f"the source's own head and prototypes are replaced by those of {hp.name}")
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
        head_tensors = _initialised_head(d, hd.hidden_dim, hd.output_dim, hd.use_bn,
                                         hd.num_prototypes, head.seed)
    if hd.origin != "initialised":
        given = head.given()
        have = {"hidden_dim": hd.hidden_dim, "output_dim": hd.output_dim,
                "num_prototypes": hd.num_prototypes, "use_bn": hd.use_bn}
        wrong = [f"--{HeadOptions.FLAGS[k]} {v} (the head has {have[k]})"
                 for k, v in given.items() if have[k] != v]
        if wrong:
            raise UsageError("head size options disagree with the head that is carried over: "
                             + ", ".join(wrong),
                             hint="the sizes apply to an initialised head only; drop them")
    return hd, head_tensors


def plan_export(source: ResolvedSource, *, encoder: Encoder = "target",
                single_process: bool = False, epoch: int = 0,
                head_from: ResolvedSource | None = None, head: HeadOptions = HeadOptions(),
                lr: float | None = None, num_heads: int | None = None,
                progress: ProgressFn = no_progress, check_source: bool = True) -> ExportPlan:
    """Everything the output will hold, with its origin; raises before anything is written."""
    if epoch < 0:
        raise UsageError(f"--epoch must be 0 or more, not {epoch}")
    if lr is not None and not (lr > 0 and math.isfinite(lr)):
        raise UsageError(f"--lr must be a positive number, not {lr}")
    for name, v in head.given().items():
        if name != "use_bn" and v < 1:
            raise UsageError(f"--{HeadOptions.FLAGS[name]} must be 1 or more, not {v}")
    import_torch()
    path = Path(source.path)
    notes: list[str] = []
    raw: Mapping[str, Any] | None = None
    src_info: dict[str, Any] = {**source.to_dict()}
    source_head: tuple[Head, dict[str, torch.Tensor]] | None = None
    online: _Backbone | None = None
    online_head: tuple[Head, dict[str, torch.Tensor]] | None = None
    if path.is_dir():
        if encoder == "online":
            raise CheckpointError(f"{path} is a model folder: it has one network, not an online "
                                  "encoder", hint="--encoder online needs a training checkpoint")
        folder = _Folder(path)
        backbone, more = _from_folder(folder)
        notes += more
        src_info.update(layout="folder", config_heads=folder.arch.num_heads)
        if num_heads is not None and num_heads != folder.arch.num_heads:
            raise UsageError(f"--num-heads {num_heads} disagrees with the folder's config.json "
                             f"({folder.arch.num_heads} heads)",
                             hint="a folder carries its heads in config.json; drop --num-heads")
        encoder_from = "a copy of target_encoder (the folder's backbone)"
    else:
        fs = _from_file(source, path, encoder, num_heads, check_source, progress, src_info,
                        notes)
        backbone, raw, encoder_from = fs.backbone, fs.raw, fs.encoder_from
        online, online_head, source_head = fs.online, fs.online_head, fs.source_head
    arch = backbone.arch
    d = arch.hidden_size
    dtype = backbone.dtype if backbone.dtype in ("float32", "float16", "bfloat16") else "float32"

    hd, head_tensors = _choose_head(head_from, source_head, raw, head, d, check_source,
                                    progress, notes)

    tensors: list[ExportTensor] = []
    for t in backbone.tensors:
        tensors.append(ExportTensor("target_encoder", t.key, t.origin, t.shape, t.dtype,
                                    t.produce))
    hparam = dict(head_keys(hd.use_bn))
    head_origin = {"source": "source", "head-from": f"--head-from {head_from.spec if head_from else ''}",
                   "initialised": "initialised"}[hd.origin]

    def head_entries(entry: str, ts: dict[str, torch.Tensor], origin: str) -> list[ExportTensor]:
        return [ExportTensor(entry, k, f"{origin} {k}", tuple(int(s) for s in ts[k].shape),
                             _dtype_name(ts[k]), _const(ts[k]), hparam[k])
                for k, _ in head_keys(hd.use_bn)]

    tensors += head_entries("target_encoder", head_tensors, head_origin)
    if online is not None:
        tensors += [ExportTensor("encoder", t.key, t.origin, t.shape, t.dtype, t.produce)
                    for t in online.tensors]
        if online_head is not None and hd.origin == "source":
            tensors += head_entries("encoder", online_head[1], "source encoder")
        else:
            tensors += head_entries("encoder", head_tensors, head_origin)
    else:
        tensors += [ExportTensor("encoder", t.key, "copy of target_encoder " + t.key, t.shape,
                                 t.dtype, t.produce, t.parameter)
                    for t in tensors if t.entry == "target_encoder"]
    p = head_tensors["prototypes"]
    tensors.append(ExportTensor("prototypes", "", f"{head_origin} prototypes",
                                tuple(int(s) for s in p.shape), _dtype_name(p), (lambda: p)))

    numbers, assumed, ref_lr = _numbers(epoch, raw, lr, not single_process)
    params = [(t.key, len(t.shape)) for t in tensors if t.entry == "encoder" and t.parameter]
    opt = _opt_state(params, ref_lr)

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
    return ExportPlan(src_info, arch, backbone.variant_name, names, dtype, not single_process,
                      encoder_from, hd, tensors, opt, numbers, assumed, notes)


# -- writing ---------------------------------------------------------------------------------

def _materialise(plan: ExportPlan, progress: ProgressFn) -> dict[str, Any]:
    """The checkpoint dict, in the entry order of the original ``save_checkpoint``."""
    from msn_cli.conversion.convert import _all_finite

    pre = plan.prefix
    nets: dict[str, dict[str, Any]] = {"encoder": {}, "target_encoder": {}}
    made: dict[tuple[str, str], Any] = {}
    total = sum(t.nbytes for t in plan.tensors)
    done = 0
    for t in plan.tensors:
        if t.origin.startswith("copy of target_encoder"):
            v = made[("target_encoder", t.key)]  # the same tensor: written once
        else:
            v = t.produce()
            if not _all_finite(v):
                raise CheckpointError(f"'{t.origin}' holds NaN or infinite values: refusing to "
                                      "export a broken checkpoint",
                                      hint="the source is damaged or was saved from a diverged run")
        made[(t.entry, t.key)] = v
        if t.entry != "prototypes":
            nets[t.entry][pre + t.key] = v
        done += t.nbytes
        progress("preparing", done, total)
    out: dict[str, Any] = {"encoder": nets["encoder"], "opt": plan.opt,
                           "prototypes": made[("prototypes", "")],
                           "target_encoder": nets["target_encoder"]}
    for k in BOOKKEEPING:
        out[k] = plan.numbers[k]
    return out


def _readback(path: Path, obj: dict[str, Any]) -> None:
    """Load the written file as the original code would (weights only) and compare every
    entry with what was meant to be written: tensors bit for bit, everything else equal."""
    import torch

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"read-back check failed: {what} (disk or memory fault?)")

    try:
        got = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise fail(f"the written file does not load ({e})") from e
    if list(got) != list(obj):
        raise fail("the entries differ")

    from msn_cli.conversion.convert import _libc_memcmp

    memcmp = _libc_memcmp()

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        """Bit for bit (libc memcmp, as convert's read-back; torch.equal without libc)."""
        if a.dtype != b.dtype or a.shape != b.shape or not a.is_contiguous():
            return False
        n = a.numel() * a.element_size()
        if memcmp is not None:
            return n == 0 or memcmp(a.data_ptr(), b.data_ptr(), n) == 0
        return torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))

    for entry in ("encoder", "target_encoder"):
        if list(got[entry]) != list(obj[entry]):
            raise fail(f"the keys of {entry} differ")
        for k, v in obj[entry].items():
            if not same(got[entry][k], v.contiguous()):
                raise fail(f"{entry} {k} differs")
    if not same(got["prototypes"], obj["prototypes"].contiguous()):
        raise fail("the prototypes differ")
    if got["opt"] != obj["opt"]:
        raise fail("the optimizer state differs")
    for k in BOOKKEEPING:
        if got[k] != obj[k] and not (got[k] is None and obj[k] is None):
            raise fail(f"{k} differs")


def export(source: ResolvedSource, out: str | os.PathLike[str], *, encoder: Encoder = "target",
           single_process: bool = False, epoch: int = 0, head_from: ResolvedSource | None = None,
           head: HeadOptions = HeadOptions(), lr: float | None = None,
           num_heads: int | None = None, force: bool = False, dry_run: bool = False,
           progress: ProgressFn = no_progress) -> ExportResult:
    """Plan, then write ``out`` whole or not at all; see the module docstring."""
    import torch

    out = Path(out)
    if not dry_run:
        check_file_target(out, force, keep=[source.path])
    plan = plan_export(source, encoder=encoder, single_process=single_process, epoch=epoch,
                       head_from=head_from, head=head, lr=lr, num_heads=num_heads,
                       progress=progress, check_source=not dry_run)
    if dry_run:
        return ExportResult(None, plan, dry_run=True)
    with atomic_output_file(out, force, keep=[source.path]) as tmp:
        obj = _materialise(plan, progress)
        progress("writing", 0, None)
        with open(tmp, "wb") as f:
            torch.save(obj, f)
        _readback(tmp, obj)
        size = tmp.stat().st_size
    return ExportResult(out.absolute(), plan, size)
