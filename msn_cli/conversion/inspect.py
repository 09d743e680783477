"""``inspect``: a checkpoint's contents, the model it implies and its key mapping, as data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from msn_cli.conversion.plan import ConversionPlan, build_plan
from msn_cli.conversion.provenance import run_context, run_record
from msn_cli.hf.manifest import RunConfigRecord
from msn_cli.original.checkpoint import Checkpoint, Encoder, load_checkpoint
from msn_cli.transfer.sources import ResolvedSource


@dataclass
class InspectReport:
    source: ResolvedSource
    checkpoint: Checkpoint
    plan: ConversionPlan
    run_config: RunConfigRecord | None = None
    training: dict[str, Any] | None = None

    @property
    def warnings(self) -> list[str]:
        """A file fetched as a released name with another variant's shapes (convert refuses it)."""
        wrong = self.plan.fetched_as(self.source.name) if self.source.kind == "variant" else None
        return [wrong] if wrong else []

    def to_dict(self) -> dict[str, Any]:
        ck = self.checkpoint
        total_tensors = sum(e.tensors for e in ck.entries)
        return {
            "source": self.source.to_dict(),
            "file": {"path": str(ck.path), "size": ck.file_size, "storage": ck.storage},
            "layout": ck.layout,
            "entries": [e.to_dict() for e in ck.entries],
            "file_tensors": total_tensors,
            "file_tensor_bytes": sum(e.nbytes for e in ck.entries),
            "encoder": ck.encoder,
            "encoder_key": ck.encoder_key,
            "available_encoders": ck.available_encoders,
            "module_prefix": ck.prefixed,
            "backbone": {
                "tensors": len(ck.state),
                "parameters": sum(t.numel() for t in ck.state.values()),
                "bytes": sum(t.numel() * t.element_size() for t in ck.state.values()),
            },
            **self.plan.to_dict(),
            "run_config": self.run_config,
            "training": self.training,
            "ok": self.plan.ok,
            "warnings": self.warnings,
        }


def inspect_checkpoint(source: ResolvedSource, encoder: Encoder = "target",
                       num_heads: int | None = None,
                       config: str | os.PathLike[str] | None = None) -> InspectReport:
    """Load and plan ``source``; ``config`` (default: the run's config beside it, if any) and
    ``num_heads`` as for :func:`msn_cli.conversion.convert.convert`."""
    known, run = run_context(source.path, config, num_heads)
    ckpt = load_checkpoint(source.path, encoder)
    return InspectReport(source, ckpt, build_plan(ckpt, None, known=known),
                         run_record(run, config is not None), run.training() if run else None)
