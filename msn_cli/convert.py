"""``convert``: an original checkpoint to a ``ViTMSNModel`` folder, planned before written.

Steps: load (memory-mapped, weights only) -> build the plan and refuse if anything does not
map -> write ``model.safetensors`` one tensor at a time into a temporary folder -> read every
tensor back and compare bit for bit with its source -> config, preprocessor config, manifest
-> optionally verify -> rename the folder into place.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .architecture import preprocessor_config
from .checkpoint import Checkpoint, Encoder, check_zip_integrity, load_checkpoint
from .errors import CheckpointError
from .hashing import sha256_file
from .manifest import CONFIG, FORMAT_VERSION, PREPROCESSOR, WEIGHTS, write_manifest
from .outdir import atomic_output_dir, check_target
from .plan import ConversionPlan, TensorPlan, build_plan
from .progress import ProgressFn, no_progress
from .safetensors_io import PendingTensor, write_safetensors
from .sources import ResolvedSource

if TYPE_CHECKING:
    import torch


@dataclass
class ConvertResult:
    out: Path | None
    plan: ConversionPlan
    source: dict[str, Any]
    files: dict[str, dict[str, Any]] = field(default_factory=dict)
    verify: dict[str, Any] | None = None
    dry_run: bool = False

    @property
    def verified_ok(self) -> bool | None:
        return None if self.verify is None else bool(self.verify.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out) if self.out else None, "dry_run": self.dry_run,
                "source": self.source, "plan": self.plan.to_dict(), "files": self.files,
                "verify": self.verify}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _produce(t: TensorPlan, state: dict[str, torch.Tensor]):
    import torch

    def produce() -> torch.Tensor:
        src = t.take(state[t.source])
        out = src.to(getattr(torch, t.dtype))
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            raise CheckpointError(
                f"'{t.source}' holds NaN or infinite values: refusing to convert a broken "
                "checkpoint", hint="the file is damaged or was saved from a diverged run")
        return out

    return produce


def write_folder(tmp: Path, ckpt: Checkpoint, plan: ConversionPlan, manifest: dict[str, Any],
                 progress: ProgressFn = no_progress) -> dict[str, dict[str, Any]]:
    """Write weights, configs and manifest into ``tmp``; return the file table."""
    total = plan.output_bytes
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        progress("writing", done, total)

    pending = [PendingTensor(t.target, t.dtype, t.shape, _produce(t, ckpt.state))
               for t in plan.tensors]
    meta = {"format": "pt", "msn_tool": f"msn {__version__}",
            "msn_source_sha256": manifest["source"].get("sha256") or "",
            "msn_dropped": ",".join(r.source or "" for r in plan.dropped)}
    written = write_safetensors(tmp / WEIGHTS, pending, meta, on_bytes)
    readback_check(tmp / WEIGHTS, ckpt, plan, progress)
    files = {WEIGHTS: {"size": written.size, "sha256": written.sha256}}
    for name, data in ((CONFIG, plan.config()),
                       (PREPROCESSOR, preprocessor_config(plan.arch.image_size))):
        raw = (json.dumps(data, indent=2) + "\n").encode()
        (tmp / name).write_bytes(raw)
        import hashlib

        files[name] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    manifest["files"] = files
    write_manifest(tmp, manifest)
    return files


def readback_check(path: Path, ckpt: Checkpoint, plan: ConversionPlan,
                   progress: ProgressFn = no_progress) -> None:
    """Reopen the written file and compare every tensor with its source, bit for bit."""
    import torch
    from safetensors import safe_open

    done = 0
    total = plan.output_bytes
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        want = {t.target for t in plan.tensors}
        if names != want:
            raise CheckpointError(f"{path.name} was written with the wrong keys")
        for t in plan.tensors:
            got = f.get_tensor(t.target)
            ref = t.take(ckpt.state[t.source]).to(getattr(torch, t.dtype))
            if got.shape != ref.shape or not torch.equal(got, ref):
                raise CheckpointError(f"read-back check failed for {t.target}: the written "
                                      "tensor differs from its source (disk or memory fault?)")
            done += t.nbytes
            progress("checking", done, total)


def convert(
    source: ResolvedSource,
    out: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    encoder: Encoder = "target",
    num_heads: int | None = None,
    force: bool = False,
    dry_run: bool = False,
    verify: bool = True,
    verify_options: dict[str, Any] | None = None,
    progress: ProgressFn = no_progress,
) -> ConvertResult:
    """Convert ``source`` into the folder ``out``; see the module docstring for the steps."""
    out = Path(out)
    if not dry_run:
        check_target(out, force, keep=[source.path])
    ckpt = load_checkpoint(source.path, encoder)
    plan = build_plan(ckpt, dtype, num_heads)
    plan.require_ok()
    if source.kind == "variant" and plan.variant_name != source.name:
        raise CheckpointError(
            f"the file fetched as '{source.name}' has the shapes of "
            f"{plan.variant_name or 'no released variant'} ({plan.arch.hidden_size} wide, "
            f"{plan.arch.num_layers} blocks, patch {plan.arch.patch_size})",
            hint="the mirror or cache holds the wrong file: msn download --force " + str(source.name))
    src_info: dict[str, Any] = {
        **source.to_dict(), "size": ckpt.file_size, "sha256": source.sha256,
        "layout": ckpt.layout, "encoder": ckpt.encoder, "encoder_key": ckpt.encoder_key,
        "prefixed": ckpt.prefixed,
    }
    if dry_run:
        return ConvertResult(None, plan, src_info, dry_run=True)
    if ckpt.storage.startswith("zip"):  # one pass: every member's CRC-32, and the sha256
        digest = check_zip_integrity(source.path, progress, want_sha256=not src_info["sha256"])
        src_info["sha256"] = src_info["sha256"] or digest
    elif not src_info["sha256"]:
        src_info["sha256"] = sha256_file(source.path, progress, "hashing source")
    manifest: dict[str, Any] = {
        "tool": "msn", "format_version": FORMAT_VERSION, "msn_version": __version__,
        "created": _now(), "source": src_info, "variant": plan.variant_name,
        "architecture": plan.arch.to_dict(), "dtype": plan.dtype,
        "source_dtype": plan.source_dtype, "tensors": len(plan.tensors),
        "parameters": plan.num_parameters,
        "dropped": [r.source for r in plan.dropped], "verify": None,
    }
    with atomic_output_dir(out, force) as tmp:
        files = write_folder(tmp, ckpt, plan, manifest, progress)
        verify_result = None
        if verify:
            from .verify import record_in_manifest, verify_folder

            report = verify_folder(tmp, checkpoint=ckpt, progress=progress,
                                   **(verify_options or {}))
            verify_result = record_in_manifest(tmp, report)
    return ConvertResult(out.absolute(), plan, src_info, files, verify_result)
