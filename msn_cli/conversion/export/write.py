"""Writing the export: the checkpoint dict in the original entry order, ``torch.save`` into a
temporary file beside OUT, the file loaded back and compared with what was meant, then the
rename into place (:func:`msn_cli.util.outdir.atomic_output_file`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from msn_cli.conversion.export.head import HeadOptions
from msn_cli.conversion.export.optimizer import BOOKKEEPING, OptState, same_number
from msn_cli.conversion.export.plan import ExportPlan, plan_export
from msn_cli.conversion.tensor_checks import all_finite, same_bits
from msn_cli.errors import CheckpointError
from msn_cli.original.checkpoint import Encoder
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.sources import ResolvedSource
from msn_cli.util.outdir import atomic_output_file, check_file_target

if TYPE_CHECKING:
    import torch


class ResumeCheckpoint(TypedDict):
    """The file the original ``save_checkpoint`` writes, entries in its order."""

    encoder: dict[str, torch.Tensor]
    opt: OptState
    prototypes: torch.Tensor
    target_encoder: dict[str, torch.Tensor]
    epoch: int
    loss: float | None
    batch_size: float | None
    world_size: float | None
    lr: float
    temperature: float | None


@dataclass
class ExportResult:
    out: Path | None
    plan: ExportPlan
    size: int | None = None
    dry_run: bool = False

    def to_dict(self, keys: bool = True) -> dict[str, Any]:
        return {"out": str(self.out) if self.out else None, "dry_run": self.dry_run,
                "size": self.size, "plan": self.plan.to_dict(keys)}


def materialise(plan: ExportPlan, progress: ProgressFn = no_progress) -> ResumeCheckpoint:
    """The checkpoint dict, every tensor produced and checked finite."""
    pre = plan.prefix
    nets: dict[str, dict[str, torch.Tensor]] = {"encoder": {}, "target_encoder": {}}
    made: dict[tuple[str, str], torch.Tensor] = {}
    total = sum(t.nbytes for t in plan.tensors)
    done = 0
    for t in plan.tensors:
        if t.origin.startswith("copy of target_encoder"):
            v = made[("target_encoder", t.key)]  # the same tensor: written once
        else:
            v = t.produce()
            if not all_finite(v):
                raise CheckpointError(f"'{t.origin}' holds NaN or infinite values: refusing to "
                                      "export a broken checkpoint",
                                      hint="the source is damaged or was saved from a diverged run")
        made[(t.entry, t.key)] = v
        if t.entry != "prototypes":
            nets[t.entry][pre + t.key] = v
        done += t.nbytes
        progress("preparing", done, total)
    n = plan.numbers
    return {"encoder": nets["encoder"], "opt": plan.opt, "prototypes": made[("prototypes", "")],
            "target_encoder": nets["target_encoder"], "epoch": n["epoch"], "loss": n["loss"],
            "batch_size": n["batch_size"], "world_size": n["world_size"], "lr": n["lr"],
            "temperature": n["temperature"]}


def _readback_failed(what: str) -> CheckpointError:
    return CheckpointError(f"read-back check failed: {what} (disk or memory fault?)")


def readback_check(path: Path, meant: ResumeCheckpoint) -> None:
    """Load the written file as the original code would (weights only) and compare every
    entry with what was meant to be written: tensors bit for bit, everything else equal."""
    import torch

    try:
        got = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        raise _readback_failed(f"the written file does not load ({e})") from e
    if list(got) != list(meant):
        raise _readback_failed("the entries differ")
    networks: dict[str, dict[str, torch.Tensor]] = {"encoder": meant["encoder"],
                                                     "target_encoder": meant["target_encoder"]}
    for entry, network in networks.items():
        if list(got[entry]) != list(network):
            raise _readback_failed(f"the keys of {entry} differ")
        for k, v in network.items():
            if not same_bits(got[entry][k], v):
                raise _readback_failed(f"{entry} {k} differs")
    if not same_bits(got["prototypes"], meant["prototypes"]):
        raise _readback_failed("the prototypes differ")
    if got["opt"] != meant["opt"]:
        raise _readback_failed("the optimizer state differs")
    for k, value in meant.items():
        if k in BOOKKEEPING and not same_number(got[k], value):
            raise _readback_failed(f"{k} differs")


def export(source: ResolvedSource, out: str | os.PathLike[str], *, encoder: Encoder = "target",
           single_process: bool = False, epoch: int = 0, head_from: ResolvedSource | None = None,
           head: HeadOptions = HeadOptions(), lr: float | None = None,
           num_heads: int | None = None, force: bool = False, dry_run: bool = False,
           progress: ProgressFn = no_progress) -> ExportResult:
    """Plan, then write ``out`` whole or not at all (see :mod:`msn_cli.conversion.export`)."""
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
        meant = materialise(plan, progress)
        progress("writing", 0, None)
        with open(tmp, "wb") as f:
            torch.save(meant, f)
        readback_check(tmp, meant)
        size = tmp.stat().st_size
    return ExportResult(out.absolute(), plan, size)
