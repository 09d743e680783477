"""``convert``: an original checkpoint to a ``ViTMSNModel`` folder, planned before written.

Steps: load (memory-mapped, weights only) -> build the plan and refuse if anything does not
map -> write ``model.safetensors`` (the header, then one tensor at a time) into a temporary
folder -> read every tensor back and compare it bit for bit with its source -> fsync ->
config, preprocessor config, manifest -> optionally verify -> rename the folder into place.

Three things run beside the main thread, because reading, hashing and syncing release the GIL
and each saves a measured share of the wall time (docs/benchmarks.md): the source's integrity
pass (CRC-32 of every member, sha256) from the start, waited for once the weights are written;
the fsync of the weights while they are read back; and the read-back's sha256 of each tensor
while the next one is read and compared.

Memory: every output tensor is a view of the memory-mapped source unless ``--dtype`` changes
it, the writer holds one tensor at a time and the read-back three tensor-sized buffers, so peak
anonymous memory stays a few tensors above the interpreter whatever the file size.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from msn_cli import __version__
from msn_cli.conversion.plan import ConversionPlan, TensorPlan, build_plan
from msn_cli.conversion.provenance import run_context, run_record
from msn_cli.conversion.tensor_checks import all_finite
from msn_cli.errors import CheckpointError
from msn_cli.hf.dtypes import ST_DTYPES
from msn_cli.hf.folder import SAFE_WEIGHTS
from msn_cli.hf.manifest import (
    CONFIG,
    FORMAT_VERSION,
    PREPROCESSOR,
    ArchitectureRecord,
    FileEntry,
    Manifest,
    PreprocessingRecord,
    RunConfigRecord,
    SourceRecord,
    write_manifest,
)
from msn_cli.hf.safetensors_io import PendingTensor, read_header, write_safetensors
from msn_cli.original.checkpoint import Checkpoint, Encoder, check_zip_integrity, load_checkpoint, sniff
from msn_cli.original.variants import VARIANTS
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.sources import ResolvedSource
from msn_cli.util.fmt import utc_now
from msn_cli.util.hashing import sha256_file
from msn_cli.util.outdir import atomic_output_dir, check_target
from msn_cli.util.safeio import fsync_file

if TYPE_CHECKING:
    import torch


@dataclass
class ConvertResult:
    out: Path | None
    plan: ConversionPlan
    source: SourceRecord
    files: dict[str, FileEntry] = field(default_factory=dict)
    verify: Mapping[str, Any] | None = None
    dry_run: bool = False
    run_config: RunConfigRecord | None = None
    training: dict[str, Any] | None = None

    @property
    def verified_ok(self) -> bool | None:
        return None if self.verify is None else bool(self.verify.get("passed"))

    def to_dict(self) -> dict[str, Any]:
        return {"out": str(self.out) if self.out else None, "dry_run": self.dry_run,
                "source": self.source, "plan": self.plan.to_dict(), "files": self.files,
                "provenance": [p.to_dict() for p in self.plan.provenance],
                "assumed": [p.key for p in self.plan.assumed], "run_config": self.run_config,
                "training": self.training, "verify": self.verify}


def _converted(t: TensorPlan, ckpt: Checkpoint) -> torch.Tensor:
    """The output tensor for ``t``: a view of the source when the dtype already matches."""
    import torch

    src = t.take(ckpt.state[t.source])
    want = getattr(torch, t.dtype)
    return src if src.dtype == want else src.to(want)


def _require_finite(t: TensorPlan, out: torch.Tensor) -> None:
    if not all_finite(out):
        raise CheckpointError(
            f"'{t.source}' holds NaN or infinite values: refusing to convert a broken "
            "checkpoint", hint="the file is damaged or was saved from a diverged run")


def write_weights(tmp: Path, ckpt: Checkpoint, plan: ConversionPlan,
                  progress: ProgressFn = no_progress,
                  source_checked: Callable[[], object] = lambda: None) -> FileEntry:
    """Write ``model.safetensors`` into ``tmp``, read it back bit for bit and fsync it; its
    size and the sha256 of the bytes read back.

    ``source_checked`` waits for the source's integrity check (and raises its error): it is
    called once the tensors are written, before the read-back, so that the read-back has the
    cores to itself and a damaged source is reported as such rather than as the NaN or the
    failed read it explains.
    """
    total = plan.output_bytes
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        progress("writing", done, total)

    weights = tmp / SAFE_WEIGHTS
    pending = [PendingTensor(t.target, t.dtype, t.shape, functools.partial(_converted, t, ckpt))
               for t in plan.tensors]
    meta = {"format": "pt", "msn_tool": f"msn {__version__}",
            "msn_dropped": ",".join(r.source or "" for r in plan.dropped)}
    with _one_torch_thread(), ThreadPoolExecutor(1, thread_name_prefix="msn-fsync") as syncer:
        try:
            written = write_safetensors(weights, pending, meta, on_bytes)
        except Exception:
            source_checked()
            raise
        source_checked()
        synced = syncer.submit(fsync_file, weights)  # the disk catches up during the read-back
        digest = readback_check(weights, ckpt, plan, progress)
        synced.result()
    return {"size": written.size, "sha256": digest}


def write_configs(tmp: Path, plan: ConversionPlan, manifest: Manifest,
                  weights: FileEntry) -> dict[str, FileEntry]:
    """Write the config, the preprocessor config and the manifest; return the file table."""
    files: dict[str, FileEntry] = {SAFE_WEIGHTS: weights}
    from msn_cli.original.preprocess import get as preprocessing

    choice = preprocessing((manifest.get("preprocessing") or {}).get("name") or "msn")
    for name, data in ((CONFIG, plan.config()), (PREPROCESSOR, choice.config(plan.arch.image_size))):
        raw = (json.dumps(data, indent=2) + "\n").encode()
        (tmp / name).write_bytes(raw)
        files[name] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    manifest["files"] = files
    write_manifest(tmp, manifest)
    return files


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """torch's intra-op pool off while writing and reading back: the only torch work there is
    a cheap reduction and a comparison per tensor, and pool threads spinning after each one
    take a core from the hashing and syncing threads."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _check_header(path: Path, plan: ConversionPlan) -> tuple[int, list[TensorPlan]]:
    """The header's length and the planned tensors in file order, once both readers agree
    with the plan.

    The header is parsed twice, by safetensors itself (an independent reader: the key set)
    and by :func:`read_header` (every tensor's dtype, shape and byte range against the plan,
    the ranges tiling the data section exactly, to the file's last byte).
    """
    from safetensors import safe_open

    want = {t.target for t in plan.tensors}
    with safe_open(str(path), framework="pt") as f:
        if set(f.keys()) != want:
            raise CheckpointError(f"{path.name} was written with the wrong keys")
    header = read_header(path)
    header.pop("__metadata__", None)
    if set(header) != want:
        raise _readback_failed(f"the header of {path.name} lists other tensors than planned")
    at: dict[str, int] = {}
    for t in plan.tensors:
        entry = header[t.target]
        lo, hi = (int(x) for x in entry["data_offsets"])
        if (entry["dtype"] != ST_DTYPES[t.dtype] or tuple(entry["shape"]) != t.shape
                or hi - lo != t.nbytes):
            raise _readback_failed(f"the header entry of {t.target} differs from the plan")
        at[t.target] = lo
    ordered = sorted(plan.tensors, key=lambda t: at[t.target])
    ends = 0
    for t in ordered:
        if at[t.target] != ends:
            raise _readback_failed(f"the tensors of {path.name} do not tile its data section")
        ends += t.nbytes
    return path.stat().st_size - ends, ordered


def _readback_failed(what: str) -> CheckpointError:
    return CheckpointError(f"read-back check failed: {what} (disk or memory fault?)")


def readback_check(path: Path, ckpt: Checkpoint, plan: ConversionPlan,
                   progress: ProgressFn = no_progress) -> str:
    """Reopen the written file, compare every tensor with its source bit for bit, and
    return the file's sha256 as read back.

    After the header checks (:func:`_check_header`) the file is read once, in order: each
    tensor's bytes are compared with the source tensor converted again and its values checked
    finite, and every byte, header included, goes to sha256 in a second thread while the next
    tensors are read and compared (at most two tensors ahead of the hashing). Each tensor is
    read into a bytearray of its own size, whose ``==`` with the source's bytes is one memcmp:
    at ViT-L/16 0.1 s against 0.5 s for ``torch.equal`` on the same bytes (docs/benchmarks.md).
    """
    import torch

    base, ordered = _check_header(path, plan)
    hashing: deque[Future[None]] = deque()  # in order: at most three buffers alive
    digest = hashlib.sha256()
    done, total = 0, plan.output_bytes
    with ThreadPoolExecutor(1, thread_name_prefix="msn-sha256") as hasher, open(path, "rb", buffering=0) as f:
        head = f.read(base)
        if len(head) != base or base < 8 or int.from_bytes(head[:8], "little") != base - 8:
            raise _readback_failed(f"{path.name} has bytes its header does not account for")
        hashing.append(hasher.submit(digest.update, head))
        for t in ordered:
            while len(hashing) >= 3:
                hashing.popleft().result()
            got = bytearray(t.nbytes)
            if f.readinto(got) != t.nbytes:
                raise _readback_failed(f"{path.name} is shorter than its header says")
            ref = _converted(t, ckpt)
            if got != ref.contiguous().reshape(-1).view(torch.uint8).numpy().data:
                raise _readback_failed(f"{t.target} differs from its source")
            _require_finite(t, ref)  # the values as written, whichever way they went
            hashing.append(hasher.submit(digest.update, got))
            done += t.nbytes
            progress("checking", done, total)
        for pending in hashing:
            pending.result()
        if f.read(1):
            raise _readback_failed(f"{path.name} has bytes its header does not account for")
    return digest.hexdigest()


class _SourceCheck:
    """The source's integrity pass and sha256, run in a thread from the start of ``convert``.

    Reading and hashing the file (I/O and hashlib/zlib, which release the GIL) overlaps the
    torch import, the load, the plan and the writing; :meth:`wait` is called before the
    manifest, which records the sha256, is written.
    """

    class _Cancelled(Exception):
        pass

    def __init__(self, path: Path, known_sha256: str | None) -> None:
        self.path, self.known = path, known_sha256
        self.stage, self.done = "checking source", 0
        self.total: int | None = None
        self.result: str | None = None
        self.error: BaseException | None = None
        self._stop = False
        self._thread = threading.Thread(target=self._run, name="msn-source-check", daemon=True)
        self._thread.start()

    def _progress(self, stage: str, done: int, total: int | None) -> None:
        if self._stop:
            raise self._Cancelled()
        self.stage, self.done, self.total = stage, done, total

    def _run(self) -> None:
        try:
            if not self.path.is_file():  # loading it fails with the right message
                return
            if sniff(self.path) == "zip":  # every member's CRC-32, and the sha256
                self.result = check_zip_integrity(self.path, self._progress,
                                                  want_sha256=not self.known)
            elif not self.known:
                self.result = sha256_file(self.path, self._progress, "hashing source")
        except self._Cancelled:
            pass
        except BaseException as e:  # raised in the caller's thread by wait()
            self.error = e

    def wait(self, progress: ProgressFn) -> str | None:
        while self._thread.is_alive():
            self._thread.join(0.1)
            progress(self.stage, self.done, self.total)
        if self.error is not None:
            raise self.error
        return self.known or self.result

    def cancel(self) -> None:
        self._stop = True
        self._thread.join()


def convert(
    source: ResolvedSource,
    out: str | os.PathLike[str],
    *,
    dtype: str | None = None,
    encoder: Encoder = "target",
    num_heads: int | None = None,
    config: str | os.PathLike[str] | None = None,
    force: bool = False,
    dry_run: bool = False,
    verify: bool = True,
    verify_options: dict[str, Any] | None = None,
    preprocessing: str = "msn",
    progress: ProgressFn = no_progress,
    on_plan: Callable[[ConversionPlan], None] | None = None,
) -> ConvertResult:
    """Convert ``source`` into the folder ``out``; see the module docstring for the steps.

    ``on_plan`` is called with the plan once it is built, before anything is written (the CLI
    says the plan's counts then, not after verify).

    ``config``: the run's ``params-msn-train.yaml`` (default: the one beside the checkpoint,
    if any); its ``meta.model_name`` gives the heads, and its hyperparameters go into the
    manifest under ``training``. ``num_heads`` overrides the heads.

    ``preprocessing``: which ``preprocessor_config.json`` to write, a name in
    :data:`msn_cli.original.preprocess.PREPROCESSING` (``msn``: MSN's evaluation transform;
    ``seed``: the official uploads' 224x224 resize).
    """
    from msn_cli.errors import UsageError
    from msn_cli.original.preprocess import PREPROCESSING

    if preprocessing not in PREPROCESSING:
        raise UsageError(f"unknown preprocessing '{preprocessing}'",
                         hint=f"one of: {', '.join(PREPROCESSING)}")
    out = Path(out)
    if not dry_run:
        check_target(out, force, keep=[source.path])
    check = None if dry_run else _SourceCheck(Path(source.path), source.sha256)
    try:
        return _convert(source, out, check, _Options(dtype, encoder, num_heads, config, force,
                                                     verify, verify_options, preprocessing, on_plan),
                        progress)
    finally:
        if check is not None:
            check.cancel()


@dataclass(frozen=True)
class _Options:
    """The options of :func:`convert` that :func:`_convert` reads."""

    dtype: str | None
    encoder: Encoder
    num_heads: int | None
    config: str | os.PathLike[str] | None
    force: bool
    verify: bool
    verify_options: dict[str, Any] | None
    preprocessing: str
    on_plan: Callable[[ConversionPlan], None] | None = None


def _convert(source: ResolvedSource, out: Path, check: _SourceCheck | None, opts: _Options,
             progress: ProgressFn) -> ConvertResult:
    """The plan, and unless ``check`` is None (a dry run) the folder written and verified."""
    known, run = run_context(source.path, opts.config, opts.num_heads)
    progress("loading checkpoint", 0, None)  # a spinner if it is slow (importing torch, reading)
    ckpt = load_checkpoint(source.path, opts.encoder)
    plan = build_plan(ckpt, opts.dtype, known=known)
    plan.require_ok()
    if opts.verify and check is not None:
        from msn_cli.verify.source import import_in_background

        import_in_background()
    wrong = plan.fetched_as(source.name) if source.kind == "variant" else None
    if wrong:
        raise CheckpointError(wrong, hint="the mirror or cache holds the wrong file: "
                                          f"msn download --force {source.name}")
    if opts.on_plan is not None and check is not None:
        opts.on_plan(plan)
    src_info = _source_record(source, ckpt)
    run_info = run_record(run, opts.config is not None)
    training = run.training() if run else None
    if check is None:
        return ConvertResult(None, plan, src_info, dry_run=True, run_config=run_info,
                             training=training)
    manifest = _manifest(plan, src_info, run_info, training, opts.preprocessing)
    with atomic_output_dir(out, opts.force) as tmp:
        weights = write_weights(tmp, ckpt, plan, progress, lambda: check.wait(progress))
        src_info["sha256"] = check.wait(progress)
        files = write_configs(tmp, plan, manifest, weights)
        verify_result = None
        if opts.verify:
            from msn_cli.verify import record_in_manifest, verify_folder

            # the weights' sha256 was just computed from the bytes read back from disk
            hashes = {SAFE_WEIGHTS: files[SAFE_WEIGHTS]["sha256"]}
            # how the source was found, and its sha256: what tells a released checkpoint
            found = replace(source, sha256=src_info["sha256"])
            report = verify_folder(tmp, checkpoint=ckpt, resolved=found, progress=progress,
                                   known_hashes=hashes, known=known, **(opts.verify_options or {}))
            verify_result = record_in_manifest(tmp, report)
    return ConvertResult(out.absolute(), plan, src_info, files, verify_result,
                         run_config=run_info, training=training)


def _source_record(source: ResolvedSource, ckpt: Checkpoint) -> SourceRecord:
    """The manifest's ``source``: what was converted, and where it came from."""
    resolved = source.to_dict()
    src_info: SourceRecord = {
        "spec": resolved["spec"], "kind": resolved["kind"],
        # absolute, so that verify finds it from any folder (push cuts it to the file name)
        "path": str(Path(source.path).absolute()),
        "name": resolved["name"], "url": resolved["url"],
        "size": ckpt.file_size, "sha256": source.sha256,
        "layout": ckpt.layout, "encoder": ckpt.encoder, "encoder_key": ckpt.encoder_key,
        "prefixed": ckpt.prefixed,
    }
    for e in ckpt.entries:  # a training checkpoint's own bookkeeping: which epoch this is
        if isinstance(e.value, (int, float)) and not isinstance(e.value, bool):
            if e.name == "epoch":
                src_info["epoch"] = e.value
            elif e.name == "loss":
                src_info["loss"] = e.value
    if source.name in VARIANTS:
        # the released file's own URL, never the mirror it came from (docs/security.md)
        src_info["url"] = VARIANTS[source.name].url()
    return src_info


def _manifest(plan: ConversionPlan, src_info: SourceRecord, run_info: RunConfigRecord | None,
              training: dict[str, Any] | None, preprocessing: str) -> Manifest:
    """``msn_manifest.json`` before the files and the verify result are known."""
    return {
        "tool": "msn", "format_version": FORMAT_VERSION, "msn_version": __version__,
        "created": utc_now(), "source": src_info, "variant": plan.variant_name,
        # Architecture.to_dict writes exactly the fields ArchitectureRecord declares
        "architecture": cast(ArchitectureRecord, plan.arch.to_dict()), "family": plan.family_name,
        "provenance": [p.to_dict() for p in plan.provenance],
        "assumed": [p.key for p in plan.assumed], "run_config": run_info,
        "training": training, "dtype": plan.dtype,
        "source_dtype": plan.source_dtype, "tensors": len(plan.tensors),
        "parameters": plan.num_parameters,
        "dropped": [r.source for r in plan.dropped if r.source is not None],
        "preprocessing": _preprocessing_record(preprocessing, plan.arch.image_size),
        "verify": None,
    }


def _preprocessing_record(name: str, image_size: int) -> PreprocessingRecord:
    """The manifest's ``preprocessing``: which table entry was written, and why."""
    from msn_cli.original.preprocess import get

    p = get(name)
    return {"name": p.name, "processor": p.config(image_size)["image_processor_type"],
            "summary": p.summary, "why": p.why}
