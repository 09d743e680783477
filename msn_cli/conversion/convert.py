"""``convert``: an original checkpoint to a ``ViTMSNModel`` folder, planned before written.

Steps: load (memory-mapped, weights only) -> build the plan and refuse if anything does not
map -> write ``model.safetensors`` one tensor at a time into a temporary folder -> read every
tensor back and compare bit for bit with its source -> config, preprocessor config, manifest
-> optionally verify -> rename the folder into place.

Performance (measured by ``bench/run.py``, see docs/benchmarks.md): the source's integrity pass
(CRC-32 of every member, sha256) runs in a background thread from the start, overlapping the
torch import, the load and the writing (the header, written last, records the source's
sha256 once it is known); a tensor written unchanged (every one, unless ``--dtype`` changes
it: the qkv parts are row ranges of a contiguous matrix) is copied file to file by the
kernel (``os.sendfile``) from where the memory map shows it lies, never through this
process; the read-back compares every byte with the source, checks the values are finite,
and feeds the same bytes to sha256 in a background thread while the file is fsynced; source
pages are dropped from the resident set once checked, and the read-back reads into three
reusable buffers, so peak memory stays a few tensors above the interpreter whatever the
file size.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import queue
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli import __version__
from msn_cli.conversion.plan import ConversionPlan, TensorPlan, build_plan
from msn_cli.conversion.provenance import run_context, run_record
from msn_cli.errors import CheckpointError
from msn_cli.hf.manifest import CONFIG, FORMAT_VERSION, PREPROCESSOR, WEIGHTS, write_manifest
from msn_cli.hf.safetensors_io import (
    ST_DTYPES,
    PendingTensor,
    read_header,
    write_safetensors,
)
from msn_cli.original.checkpoint import Checkpoint, Encoder, check_zip_integrity, load_checkpoint, sniff
from msn_cli.original.variants import VARIANTS
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.sources import ResolvedSource
from msn_cli.util.hashing import BackgroundSha256, sha256_file
from msn_cli.util.outdir import atomic_output_dir, check_target

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
    run_config: dict[str, Any] | None = None
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


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def _all_finite(x: torch.Tensor) -> bool:
    """No NaN or infinity in ``x``, mostly in one cheap reduction.

    A NaN or an infinity anywhere makes the sum NaN or infinite, so a finite sum proves every
    value finite; only a non-finite sum (a bad value, or a legitimate overflow) needs the
    element-wise test, which allocates a mask as large as the tensor.
    """
    import torch

    if not x.is_floating_point() or bool(torch.isfinite(x.sum())):
        return True
    return bool(torch.isfinite(x).all())


def _converted(t: TensorPlan, ckpt: Checkpoint) -> torch.Tensor:
    """The output tensor for ``t``: a view of the source when the dtype already matches."""
    import torch

    src = t.take(ckpt.state[t.source])
    want = getattr(torch, t.dtype)
    if src.dtype == want:
        return src
    out = src.to(want)
    ckpt.release(src)  # the source pages were read for the conversion and are done with
    return out


def _require_finite(t: TensorPlan, out: torch.Tensor) -> None:
    if not _all_finite(out):
        raise CheckpointError(
            f"'{t.source}' holds NaN or infinite values: refusing to convert a broken "
            "checkpoint", hint="the file is damaged or was saved from a diverged run")


def _pending(t: TensorPlan, ckpt: Checkpoint) -> PendingTensor:
    """What the writer needs for ``t``: where its bytes lie in the source file when they are
    written unchanged (a kernel copy), and how to make them otherwise."""
    span = None
    src = ckpt.state[t.source]
    if str(src.dtype).removeprefix("torch.") == t.dtype:
        view = t.take(src)
        if tuple(view.shape) == t.shape:
            span = ckpt.file_span(view)
    return PendingTensor(t.target, t.dtype, t.shape, lambda: _converted(t, ckpt), ckpt.release,
                         span=span)


@contextlib.contextmanager
def _source_fd(ckpt: Checkpoint):
    """The checkpoint file opened for the writer's kernel copy, or None: only when it is the
    very file that is mapped (same inode), so the copy reads what the tensors show."""
    inode = ckpt.mapped_inode
    if inode is None:
        yield None
        return
    try:
        fd = os.open(ckpt.path, os.O_RDONLY)
    except OSError:
        yield None
        return
    try:
        yield fd if os.fstat(fd).st_ino == inode else None
    finally:
        os.close(fd)


def write_folder(tmp: Path, ckpt: Checkpoint, plan: ConversionPlan, manifest: dict[str, Any],
                 progress: ProgressFn = no_progress,
                 source_digest: Callable[[], str | None] | None = None) -> dict[str, dict[str, Any]]:
    """Write weights, configs and manifest into ``tmp``; return the file table.

    ``source_digest`` (the source check, still running in its thread) is waited for only once
    the tensors are written: the header, written last, records the source's sha256. A failed
    source check wins over an error it explains (a damaged tensor read as NaN). The weights'
    own sha256 is taken from the bytes read back from the file.
    """
    total = plan.output_bytes
    done = 0

    def on_bytes(n: int) -> None:
        nonlocal done
        done += n
        progress("writing", done, total)

    pending = [_pending(t, ckpt) for t in plan.tensors]
    meta = {"format": "pt", "msn_tool": f"msn {__version__}",
            "msn_source_sha256": manifest["source"].get("sha256") or "0" * 64,  # room for it
            "msn_dropped": ",".join(r.source or "" for r in plan.dropped)}

    def final_metadata() -> dict[str, str]:
        if source_digest is not None:
            manifest["source"]["sha256"] = source_digest()
        return {**meta, "msn_source_sha256": manifest["source"].get("sha256") or ""}

    with _one_torch_thread(), _source_fd(ckpt) as source_fd:
        # the source check is over (or has raised) before the read-back can find NaNs
        written = write_safetensors(tmp / WEIGHTS, pending, meta, on_bytes, sync=False,
                                    digest=False, copy_from=source_fd,
                                    final_metadata=final_metadata)
        # the read-back reads the page cache either way; the disk catches up meanwhile, and
        # the file is synced (or its error raised) before anything else is written
        syncing = _InThread(_fsync_file, tmp / WEIGHTS)
        try:
            digest = readback_check(tmp / WEIGHTS, ckpt, plan, progress)
        finally:
            syncing.join()
    files = {WEIGHTS: {"size": written.size, "sha256": digest}}
    from msn_cli.original.preprocess import get as preprocessing

    choice = preprocessing(manifest.get("preprocessing", {}).get("name", "msn"))
    for name, data in ((CONFIG, plan.config()), (PREPROCESSOR, choice.config(plan.arch.image_size))):
        raw = (json.dumps(data, indent=2) + "\n").encode()
        (tmp / name).write_bytes(raw)
        import hashlib

        files[name] = {"size": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    manifest["files"] = files
    write_manifest(tmp, manifest)
    return files


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _InThread:
    """``fn(*args)`` in a thread; :meth:`join` waits and raises what it raised."""

    def __init__(self, fn, *args, name: str = "msn-fsync") -> None:
        self.error: BaseException | None = None

        def run() -> None:
            try:
                fn(*args)
            except BaseException as e:
                self.error = e

        self._thread = threading.Thread(target=run, name=name, daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout: float) -> None:
        self._thread.join(timeout)

    def join(self) -> None:
        self._thread.join()
        if self.error is not None:
            raise self.error


@contextlib.contextmanager
def _one_torch_thread():
    """torch's intra-op pool off while writing: the only torch work there is one cheap
    reduction per tensor, and idle pool threads spinning after each one took the second core
    from the hashing thread (measured: 1.8x the CPU time, slower wall, on 2 cores)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def readback_check(path: Path, ckpt: Checkpoint, plan: ConversionPlan,
                   progress: ProgressFn = no_progress) -> str:
    """Reopen the written file, compare every tensor with its source bit for bit, and
    return the file's sha256 as read back.

    The header is parsed twice, by safetensors itself (an independent reader: key set) and
    here (every tensor's dtype, shape and byte range against the plan, ranges tiling the file
    exactly, to its last byte); then the file is read once, in order, through the OS: every
    tensor's bytes are compared byte for byte with the source tensor converted again, and
    every byte, header included, goes to sha256 in a background thread. Memory: three
    tensor-sized buffers.
    """
    from safetensors import safe_open

    def fail(what: str) -> CheckpointError:
        return CheckpointError(f"read-back check failed: {what} (disk or memory fault?)")

    want = {t.target for t in plan.tensors}
    with safe_open(str(path), framework="pt") as f:
        if set(f.keys()) != want:
            raise CheckpointError(f"{path.name} was written with the wrong keys")
    header = read_header(path)
    header.pop("__metadata__", None)
    if set(header) != want:
        raise fail(f"the header of {path.name} lists other tensors than planned")
    base = path.stat().st_size - sum(t.nbytes for t in plan.tensors)
    spans = []
    for t in plan.tensors:
        entry = header[t.target]
        lo, hi = (int(x) for x in entry["data_offsets"])
        if (entry["dtype"] != ST_DTYPES[t.dtype] or tuple(entry["shape"]) != t.shape
                or hi - lo != t.nbytes):
            raise fail(f"the header entry of {t.target} differs from the plan")
        spans.append((lo, hi, t))
    spans.sort(key=lambda s: s[0])
    if [s[0] for s in spans[1:]] != [s[1] for s in spans[:-1]] or (spans and spans[0][0] != 0):
        raise fail(f"the tensors of {path.name} do not tile its data section")

    # one reader, in file order (the sha256 needs the bytes in order): read, compare (memcmp,
    # GIL released), hand the buffer to the hashing thread, which returns it when done
    if base < 8 or base != 8 + len(_raw_header(path)):
        raise fail(f"{path.name} has bytes its header does not account for")
    size = max((t.nbytes for t in plan.tensors), default=0)
    pool: queue.Queue = queue.Queue()
    for _ in range(3):
        pool.put(bytearray(size))
    hasher = BackgroundSha256()
    done = 0
    total = plan.output_bytes
    try:
        with open(path, "rb", buffering=0) as f:
            head = f.read(base)
            if len(head) != base:
                raise fail(f"{path.name} is shorter than its header says")
            hasher.put(head)
            for lo, hi, t in spans:  # contiguous from ``base``: a sequential read
                n = hi - lo
                buf = pool.get()
                view = memoryview(buf)
                got = 0
                while got < n and (k := f.readinto(view[got:n])):
                    got += k
                if got != n:
                    raise fail(f"{path.name} is shorter than its header says")
                ref = _converted(t, ckpt)
                if not ref.is_contiguous():
                    ref = ref.contiguous()
                same = _same_bytes(view[:n], ref.reshape(-1).view(_uint8()).numpy())
                if not same:
                    raise fail(f"{t.target} differs from its source")
                _require_finite(t, ref)  # the values as written, whichever way they went
                ckpt.release(ref)
                hasher.put(view[:n], (pool.put, buf))
                done += n
                progress("checking", done, total)
            if f.read(1):
                raise fail(f"{path.name} has bytes its header does not account for")
        return hasher.result()
    finally:
        hasher.close()


def _raw_header(path: Path) -> bytes:
    with open(path, "rb") as f:
        head = f.read(8)
        (n,) = struct.unpack("<Q", head) if len(head) == 8 else (0,)
        return f.read(n) if n <= 100_000_000 else b""


def _same_bytes(a: memoryview, b) -> bool:
    """``a`` and the numpy array ``b`` hold the same bytes: libc ``memcmp`` (no temporary,
    GIL released); numpy's element-wise comparison where there is no libc."""
    import numpy as np

    if a.nbytes != b.nbytes:
        return False
    memcmp = _libc_memcmp()
    if memcmp is None:
        return bool(np.array_equal(np.frombuffer(a, dtype=np.uint8), b.reshape(-1).view(np.uint8)))
    import ctypes

    addr = ctypes.addressof(ctypes.c_char.from_buffer(a)) if a.nbytes else 0
    return a.nbytes == 0 or memcmp(addr, b.ctypes.data, a.nbytes) == 0


_MEMCMP: list = []


def _libc_memcmp():
    if not _MEMCMP:
        fn = None
        try:
            import ctypes

            fn = ctypes.CDLL(None).memcmp
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
            fn.restype = ctypes.c_int
        except (OSError, AttributeError, TypeError):
            fn = None
        _MEMCMP.append(fn)
    return _MEMCMP[0]


def _uint8():
    import torch

    return torch.uint8


class _SourceCheck:
    """The source's integrity pass and sha256, run in a thread from the start of ``convert``.

    Reading and hashing the file (I/O and hashlib/zlib, which release the GIL) overlaps the
    torch import, the load, the plan and the writing; :meth:`wait` is called once the tensors
    are written, before the header (which records the sha256) is final and before the
    read-back. The same checks as before, only alongside.
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
) -> ConvertResult:
    """Convert ``source`` into the folder ``out``; see the module docstring for the steps.

    ``config``: the run's ``params-msn-train.yaml`` (default: the one beside the checkpoint,
    if any); its ``meta.model_name`` gives the heads, and its hyperparameters go into the
    manifest under ``training``. ``num_heads`` overrides the heads.

    ``preprocessing``: which ``preprocessor_config.json`` to write, a name in
    :data:`msn_cli.original.preprocess.PREPROCESSING` (``msn``: MSN's evaluation transform; ``seed``:
    the official uploads' 224x224 resize).
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
        return _convert(source, out, check, dtype=dtype, encoder=encoder, num_heads=num_heads,
                        config=config, force=force, dry_run=dry_run, verify=verify,
                        verify_options=verify_options, preprocessing=preprocessing,
                        progress=progress)
    finally:
        if check is not None:
            check.cancel()


def _convert(source: ResolvedSource, out: Path, check: _SourceCheck | None, *, dtype: str | None,
             encoder: Encoder, num_heads: int | None, config: str | os.PathLike[str] | None,
             force: bool, dry_run: bool, verify: bool,
             verify_options: dict[str, Any] | None, progress: ProgressFn,
             preprocessing: str = "msn") -> ConvertResult:
    known, run = run_context(source.path, config, num_heads)
    ckpt = load_checkpoint(source.path, encoder)
    plan = build_plan(ckpt, dtype, known=known)
    plan.require_ok()
    if verify and not dry_run:
        from msn_cli.verify.checks import preload_transformers

        preload_transformers()  # verify's largest fixed cost, alongside the writing
    wrong = plan.fetched_as(source.name) if source.kind == "variant" else None
    if wrong:
        raise CheckpointError(wrong, hint="the mirror or cache holds the wrong file: "
                                          f"msn download --force {source.name}")
    src_info: dict[str, Any] = {
        **source.to_dict(), "size": ckpt.file_size, "sha256": source.sha256,
        # absolute, so that verify finds it from any folder (push cuts it to the file name)
        "path": str(Path(source.path).absolute()),
        "layout": ckpt.layout, "encoder": ckpt.encoder, "encoder_key": ckpt.encoder_key,
        "prefixed": ckpt.prefixed,
    }
    for e in ckpt.entries:  # a training checkpoint's own bookkeeping: which epoch this is
        if e.name in ("epoch", "loss") and isinstance(e.value, (int, float)) \
                and not isinstance(e.value, bool):
            src_info[e.name] = e.value
    if source.name in VARIANTS:
        # the released file's own URL, never the mirror it came from (README: threat model)
        src_info["url"] = VARIANTS[source.name].url()
    run_info = run_record(run, config is not None)
    if dry_run or check is None:
        return ConvertResult(None, plan, src_info, dry_run=True, run_config=run_info,
                             training=run.training() if run else None)
    manifest: dict[str, Any] = {
        "tool": "msn", "format_version": FORMAT_VERSION, "msn_version": __version__,
        "created": _now(), "source": src_info, "variant": plan.variant_name,
        "architecture": plan.arch.to_dict(), "family": plan.family_name,
        "provenance": [p.to_dict() for p in plan.provenance],
        "assumed": [p.key for p in plan.assumed], "run_config": run_info,
        "training": run.training() if run else None, "dtype": plan.dtype,
        "source_dtype": plan.source_dtype, "tensors": len(plan.tensors),
        "parameters": plan.num_parameters,
        "dropped": [r.source for r in plan.dropped],
        "preprocessing": _preprocessing_record(preprocessing, plan.arch.image_size),
        "verify": None,
    }
    with atomic_output_dir(out, force) as tmp:
        # the source check (zip: every member's CRC-32; the sha256) finishes while the tensors
        # are written; write_folder waits for it before the header is final
        files = write_folder(tmp, ckpt, plan, manifest, progress,
                             source_digest=lambda: check.wait(progress))
        verify_result = None
        if verify:
            from msn_cli.verify.checks import record_in_manifest, verify_folder

            # the weights' sha256 was just computed from the bytes read back from disk
            hashes = {WEIGHTS: files[WEIGHTS]["sha256"]}
            report = verify_folder(tmp, checkpoint=ckpt, progress=progress, known_hashes=hashes,
                                   known=known, **(verify_options or {}))
            verify_result = record_in_manifest(tmp, report)
    return ConvertResult(out.absolute(), plan, src_info, files, verify_result,
                         run_config=run_info, training=run.training() if run else None)


def _preprocessing_record(name: str, image_size: int) -> dict[str, Any]:
    """The manifest's ``preprocessing``: which table entry was written, and why."""
    from msn_cli.original.preprocess import get

    p = get(name)
    return {"name": p.name, "processor": p.config(image_size)["image_processor_type"],
            "summary": p.summary, "why": p.why}
