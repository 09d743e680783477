"""A training run's folder: its checkpoints (epoch and loss of each) and its config, as data.

The original training code writes into its logging folder ``{tag}-latest.pth.tar`` (every
epoch), ``{tag}-ep{N}.pth.tar`` (every few epochs) and ``params-msn-train.yaml``. Each
checkpoint is loaded the safe way (``weights_only=True``) and, in the zip format, memory-mapped:
only the pickled object table is read, never the tensors' bytes, so listing a folder of
multi-GB training files costs milliseconds per file.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from msn_cli.errors import CheckpointError, MsnError
from msn_cli.original.checkpoint import load_file, sniff, storage_label
from msn_cli.original.family import constructor
from msn_cli.original.runconfig import CONFIG_NAME, RunConfig, find_run_config, read_run_config

CHECKPOINT_NAME = re.compile(r"(?P<tag>.+)-(?:(?P<latest>latest)|ep(?P<n>\d+))\.pth\.tar")
"""``{write_tag}-latest.pth.tar`` and ``{write_tag}-ep{N}.pth.tar``, as ``src/msn_train.py`` names them."""

BOOKKEEPING = ("epoch", "loss", "batch_size", "world_size", "lr", "temperature")
"""The plain numbers a training checkpoint stores beside its networks."""
NETWORKS = ("encoder", "target_encoder", "prototypes", "opt")


@dataclass
class RunCheckpoint:
    """One checkpoint of a run, as read from the file (never from its name alone)."""

    file: str
    tag: str
    kind: Literal["latest", "epoch"]
    number: int | None
    """The ``N`` of ``-ep{N}`` (the training code names a file one above the epoch it stores)."""
    size: int
    epoch: int | None = None
    loss: float | None = None
    values: dict[str, Any] = field(default_factory=dict)
    networks: list[str] = field(default_factory=list)
    storage: str | None = None
    problem: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "tag": self.tag, "kind": self.kind, "number": self.number,
                "size": self.size, "epoch": self.epoch, "loss": self.loss,
                "values": self.values, "networks": self.networks,
                "storage": self.storage, "problem": self.problem}


@dataclass
class RunReport:
    folder: Path
    config: RunConfig | None
    checkpoints: list[RunCheckpoint]

    @property
    def ok(self) -> bool:
        return all(c.problem is None for c in self.checkpoints)

    @property
    def latest(self) -> RunCheckpoint | None:
        """The readable checkpoint with the highest stored epoch."""
        done = [c for c in self.checkpoints if c.epoch is not None]
        return max(done, key=lambda c: (c.epoch, c.kind == "latest")) if done else None

    def config_dict(self) -> dict[str, Any] | None:
        if self.config is None:
            return None
        name = self.config.model_name
        c = constructor(name) if name else None
        return {"file": CONFIG_NAME if self.config.path.name == CONFIG_NAME else self.config.path.name,
                "model_name": name, "constructor": c.to_dict() if c else None,
                "write_tag": self.config.write_tag, "training": self.config.training()}

    def to_dict(self) -> dict[str, Any]:
        latest = self.latest
        return {"folder": str(self.folder), "config": self.config_dict(),
                "checkpoints": [c.to_dict() for c in self.checkpoints],
                "latest": latest.file if latest else None, "ok": self.ok}

    def require_ok(self) -> None:
        bad = [c for c in self.checkpoints if c.problem is not None]
        if bad:
            raise CheckpointError(f"{len(bad)} of {len(self.checkpoints)} checkpoints in {self.folder} "
                                  f"cannot be read: {bad[0].file}: {bad[0].problem}",
                                  hint="inspect the file alone for details")


def _read(path: Path, row: RunCheckpoint) -> None:
    try:
        obj = load_file(path)
    except MsnError as e:
        row.problem = e.message
        return
    row.storage = storage_label(sniff(path))
    if not isinstance(obj, Mapping):
        row.problem = f"holds a {type(obj).__name__}, not a dict: not an MSN checkpoint"
        return
    row.networks = [k for k in NETWORKS if k in obj]
    if not row.networks:
        row.problem = "has no 'target_encoder' or 'encoder': not an MSN checkpoint"
        return
    for key in BOOKKEEPING:
        v = obj.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            row.values[key] = v
        elif isinstance(v, float):  # nan/inf: kept visible, not as a number JSON cannot hold
            row.values[key] = str(v)
    epoch, loss = row.values.get("epoch"), row.values.get("loss")
    row.epoch = epoch if isinstance(epoch, int) else None
    row.loss = float(loss) if isinstance(loss, (int, float)) else None


def inspect_run(folder: str | os.PathLike[str], config: str | os.PathLike[str] | None = None) -> RunReport:
    """List a run folder's checkpoints (epoch and loss read from each) and read its config.

    ``config``: a config file to use instead of the ``params-msn-train.yaml`` in the folder.
    Raises :class:`CheckpointError` when the folder holds no run checkpoints, and
    :class:`~msn_cli.errors.ConfigError` when the config is malformed or hostile.
    """
    p = Path(folder)
    if not p.is_dir():
        raise CheckpointError(f"{p} is not a folder")
    found: list[RunCheckpoint] = []
    for q in sorted(p.iterdir()):
        m = CHECKPOINT_NAME.fullmatch(q.name)
        if m is None or not q.is_file():
            continue
        found.append(RunCheckpoint(file=q.name, tag=m.group("tag"),
                                   kind="latest" if m.group("latest") else "epoch",
                                   number=int(m.group("n")) if m.group("n") else None,
                                   size=q.stat().st_size))
    if not found:
        others = sorted(q.name for q in p.iterdir() if q.name.endswith((".pth", ".pth.tar", ".pt")))
        hint = (f"it holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}: "
                "give one of those files to msn inspect" if others else
                "give a checkpoint file, or the logging folder a training run wrote its checkpoints to")
        raise CheckpointError(f"{p} is not a training run: it holds no {{tag}}-latest.pth.tar or "
                              "{tag}-ep{N}.pth.tar checkpoints", hint=hint)
    found.sort(key=lambda c: (c.tag, c.kind == "latest", c.number or 0))
    cfg_path = Path(config) if config is not None else find_run_config(p)
    run_config = read_run_config(cfg_path) if cfg_path is not None else None
    for row in found:
        _read(p / row.file, row)
    return RunReport(p, run_config, found)
