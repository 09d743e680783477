"""The optimizer state and the bookkeeping numbers of the output, as the original
``init_opt`` and ``save_checkpoint`` write them (facts file: "Resuming")."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from msn_cli.errors import CheckpointError

REF_LR = 1e-3
"""The original pre-training configs' ``optimization.lr``: the reference learning rate."""

BOOKKEEPING = ("epoch", "loss", "batch_size", "world_size", "lr", "temperature")
"""The plain numbers ``save_checkpoint`` writes beside the networks; only ``epoch`` is read
back when resuming."""


class Bookkeeping(TypedDict):
    """The values of :data:`BOOKKEEPING` the output carries (None: not known)."""

    epoch: int
    loss: float | None
    batch_size: float | None
    world_size: float | None
    lr: float
    temperature: float | None


class OptState(TypedDict):
    """``Optimizer.state_dict()``: per-parameter state, and the parameter groups."""

    state: dict[int, Any]
    param_groups: list[dict[str, Any]]


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


def opt_state(names: list[tuple[str, int]], ref_lr: float) -> OptState:
    """The state of a fresh AdamW over the original three groups: no moments (``state`` is
    empty), each group AdamW's defaults with its own keys on top, parameters numbered in
    order as ``Optimizer.state_dict`` numbers them. ``names``: the encoder's parameters
    (bare name, number of dimensions) in order; the prototypes are the last group's one."""
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


def opt_summary(opt: OptState) -> list[dict[str, Any]]:
    """Each group of ``opt`` for people: what it holds, how many parameters, lr and decay."""
    out = []
    for spec, group in zip(OPT_GROUPS, opt["param_groups"], strict=True):
        hyper = {k: v for k, v in group.items() if k != "params"}
        row: dict[str, Any] = {"group": spec.name, "holds": spec.holds,
                               "parameters": len(group["params"]),
                               **{k: hyper[k] for k in ("lr", "weight_decay") if k in hyper}}
        row["extra_keys"] = {k: v for k, v in spec.extras if k not in ("lr", "weight_decay")}
        out.append(row)
    return out


def json_numbers(numbers: Bookkeeping) -> dict[str, Any]:
    """``numbers`` for JSON: a NaN or infinite one (a diverged run's loss, carried as it is)
    as its name, ``"nan"``, since JSON has no such number."""
    return {k: (str(v) if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in numbers.items()}


def same_number(a: object, b: object) -> bool:
    """``a == b``, where a NaN equals a NaN (the written file must give back the loss it got)."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def _number(v: object) -> float | None:
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def bookkeeping_numbers(epoch: int, raw: Mapping[str, Any] | None, ref_lr: float | None,
                        prefixed: bool) -> tuple[Bookkeeping, dict[str, str]]:
    """The bookkeeping numbers (carried from ``raw``, the source file, where it has them) and
    what was assumed; ``numbers["lr"]`` is the reference learning rate."""
    carried = raw or {}
    numbers: Bookkeeping = {
        "epoch": epoch, "loss": _number(carried.get("loss")),
        "batch_size": _number(carried.get("batch_size")),
        "world_size": _number(carried.get("world_size")), "lr": REF_LR,
        "temperature": _number(carried.get("temperature"))}
    assumed: dict[str, str] = {}
    lr = ref_lr if ref_lr is not None else _number(carried.get("lr"))
    if lr is not None and not (lr > 0 and math.isfinite(lr)):  # as --lr is checked
        raise CheckpointError(f"the source's lr is {lr}, not a positive number: it would be "
                              "written into the optimizer",
                              hint="give the learning rate with --lr")
    if lr is None:
        assumed["lr"] = (f"{REF_LR:g}, the original configs' optimization.lr (the prototypes "
                         "group's lr; the lr schedule sets every group's lr at the first step)")
    else:
        numbers["lr"] = lr
    if not prefixed and numbers["world_size"] not in (None, 1):
        numbers["world_size"] = 1  # a bare-keyed file is for a single-process run
    for k, v in numbers.items():  # epoch and lr are always known
        if v is None:
            assumed[k] = "not known: written as None (the original code does not read it back)"
    return numbers, assumed
