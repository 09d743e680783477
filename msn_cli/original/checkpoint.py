"""Safe loading of original MSN checkpoints, and what can be read from them.

Loading is always ``torch.load(weights_only=True)``: the restricted unpickler refuses any
Python object other than tensors and plain containers, so nothing in a file can run code.
Zip-format files are memory-mapped, so only the tensors a caller touches are read from disk;
the optimizer state of a training checkpoint is never paged in.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import struct
import warnings
import zipfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from msn_cli.conversion.provenance import (
    Known,
    Provenance,
    check_constructor,
    named_constructor,
    resolve_heads,
    shared_values,
)
from msn_cli.errors import CheckpointError
from msn_cli.original import family
from msn_cli.original.architecture import Architecture
from msn_cli.original.variants import VARIANTS, Variant, match_variant
from msn_cli.progress import ProgressFn, no_progress

if TYPE_CHECKING:
    import torch

Encoder = Literal["target", "online"]
ENCODER_KEYS: dict[str, str] = {"target": "target_encoder", "online": "encoder"}
DDP_PREFIX = "module."

_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def sniff(path: Path) -> str:
    """What kind of file this is from its first bytes: zip, legacy, or a description of junk."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head.startswith(_LEGACY_MAGIC):
        return "legacy"
    if head.startswith(b"\x80"):
        return "pickle"
    if head.startswith(b"version https://git-lfs"):
        return "a git-lfs pointer file (the weights were never fetched: run `git lfs pull`)"
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html", b"<?xml", b"<")):
        return "an HTML/XML page (probably an error page saved under the checkpoint's name)"
    try:
        head.decode("utf-8")
        return "a text file"
    except UnicodeDecodeError:
        return "binary data that is neither a zip nor a pickle"


FREEZE_GC_AFTER_TORCH = False
"""Set by the CLI's ``main()`` only: library users' processes are never touched."""


def import_torch() -> Any:
    """``import torch``, with Ctrl-C and SIGTERM held back until it is done (see
    :mod:`msn_cli.util.interrupts`: torch's start-up can swallow them); in the CLI, when this is
    what first imports it, ``gc.freeze()`` after.

    torch creates about a million Python objects that live until the process ends; frozen,
    the cyclic garbage collector stops traversing them, both in the collections a conversion
    triggers and in the final one at exit (measured: about 0.3-0.5 s less per command on 2
    cores). Only objects alive at that moment are frozen (they are still freed by reference
    counting). A program that imported torch itself, or that uses msn as a library, is left
    alone: freezing is process-wide, so it is the ``msn`` command's decision alone.
    """
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"]
    from msn_cli.util.interrupts import deferred

    with deferred():
        import torch
    if FREEZE_GC_AFTER_TORCH:
        import gc

        gc.freeze()
    return torch


def _load(path: Path) -> Any:
    torch = import_torch()

    if not path.exists():
        raise CheckpointError(f"no such file: {path}")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder, not a checkpoint file",
                              hint="msn inspect/convert take a .pth.tar file, a variant name or a URL")
    kind = sniff(path)
    if kind not in ("zip", "legacy", "pickle"):
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint: it is {kind}")
    if kind == "zip" and not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path.name} is a damaged zip archive (truncated or cut short)",
                              hint="download it again (msn download --force NAME)")
    if kind == "zip":
        _check_pickle_crc(path)  # a damaged pickle must not read as a hostile one
    try:
        with warnings.catch_warnings():  # torch's warnings are not for our users
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True, mmap=(kind == "zip"))
    except pickle.UnpicklingError as e:
        found = _refused_global(str(e))
        raise CheckpointError(
            f"refused to load {path.name}: it holds Python objects other than tensors and plain "
            f"containers{found}, which loading would execute",
            hint="MSN checkpoints hold only tensors, dicts, lists and numbers; do not trust this file",
        ) from e
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else (
            "the file ends too early (truncated)" if isinstance(e, EOFError) else type(e).__name__)
        if kind == "pickle" and "magic number" in first.lower():
            raise CheckpointError(f"{path.name} is a plain Python pickle, not a file written by "
                                  "torch.save", hint="MSN checkpoints are torch.save files") from e
        raise CheckpointError(f"cannot read {path.name}: {first}",
                              hint="the file is damaged or truncated; download it again") from e


def _damaged(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{path.name} is damaged: {what}",
                           hint="the file changed after it was written; download it again "
                                "(msn download --force NAME)")


def _check_pickle_crc(path: Path) -> None:
    """Check the CRC-32 of the archive's ``data.pkl`` (small) before anything unpickles it."""
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if info.filename.rsplit("/", 1)[-1] == "data.pkl":
                    with zf.open(info) as f:
                        while f.read(1 << 20):
                            pass
    except zipfile.BadZipFile as e:  # "Bad CRC-32 for file ...", bad local header, ...
        raise _damaged(path, f"{e} (the object table does not match its checksum)") from e
    except (OSError, EOFError, ValueError) as e:
        raise _damaged(path, str(e) or type(e).__name__) from e


def _crc32():
    """zlib-ng's CRC-32 (carry-less multiply: 10 GB/s here, against 2.3 GB/s for the
    standard library's zlib; the same checksum), or the standard library's where it is not
    installed. Both release the GIL, so the check runs beside the conversion."""
    try:
        from zlib_ng import zlib_ng

        return zlib_ng.crc32
    except ImportError:
        return zlib.crc32


def check_zip_integrity(path: str | os.PathLike[str], progress: ProgressFn = no_progress,
                        want_sha256: bool = True) -> str | None:
    """Read a zip-format checkpoint once, checking every member against its stored CRC-32.

    ``torch.load`` does not check these checksums, so a flipped bit in a tensor would otherwise
    be converted silently. The file's sha256 is computed in the same pass and returned when
    ``want_sha256``. Raises :class:`CheckpointError` naming the first damaged member.
    """
    path = Path(path)
    ranges: list[tuple[int, int, int, str]] = []  # data start, end, CRC, member name
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
        with open(path, "rb") as f:
            for info in infos:
                f.seek(info.header_offset)
                local = f.read(30)
                if len(local) != 30 or not local.startswith(_ZIP_MAGIC):
                    raise _damaged(path, f"the local header of {info.filename} is broken")
                if info.compress_type != zipfile.ZIP_STORED:  # torch never compresses; be safe
                    with zipfile.ZipFile(path) as zf, zf.open(info) as member:
                        while member.read(1 << 20):
                            pass
                    continue
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                start = info.header_offset + 30 + name_len + extra_len
                ranges.append((start, start + info.compress_size, info.CRC, info.filename))
    except zipfile.BadZipFile as e:
        raise _damaged(path, str(e)) from e
    ranges.sort()
    total = path.stat().st_size
    digest = hashlib.sha256() if want_sha256 else None
    crcs = [0] * len(ranges)
    crc32 = _crc32()
    first_open = 0  # ranges before this one are complete and checked
    pos = 0
    buf = bytearray(8 << 20)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            chunk = view[:n]
            if digest is not None:
                digest.update(chunk)
            end = pos + n
            j = first_open
            while j < len(ranges) and ranges[j][0] <= end:
                start, stop, want, name = ranges[j]
                lo, hi = max(start, pos), min(stop, end)
                if lo < hi:
                    crcs[j] = crc32(chunk[lo - pos:hi - pos], crcs[j])
                if stop > end:
                    break
                if crcs[j] != want:
                    raise _damaged(path, f"member {name} does not match its CRC-32 checksum")
                j += 1
                first_open = j
            pos = end
            progress("checking source", pos, total)
    if first_open < len(ranges):
        raise _damaged(path, f"it ends inside member {ranges[first_open][3]} (truncated)")
    return digest.hexdigest() if digest is not None else None


def _refused_global(message: str) -> str:
    m = re.search(r"(?:GLOBAL|global) ([\w.]+(?: ?\.[\w]+)*)", message)
    return f" (it asks for {m.group(1)})" if m else ""


@dataclass
class Entry:
    """A top-level entry of a checkpoint file, described for ``inspect``."""

    name: str
    kind: str
    tensors: int = 0
    numel: int = 0
    nbytes: int = 0
    value: Any = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def _describe(name: str, obj: Any) -> Entry:
    import torch

    if isinstance(obj, torch.Tensor):
        return Entry(name, f"tensor {list(obj.shape)} {str(obj.dtype).removeprefix('torch.')}",
                     1, obj.numel(), obj.numel() * obj.element_size())
    if isinstance(obj, (bool, int, float, str)) or obj is None:
        return Entry(name, type(obj).__name__, value=obj)
    e = Entry(name, type(obj).__name__)
    for t in _walk_tensors(obj):
        e.tensors += 1
        e.numel += t.numel()
        e.nbytes += t.numel() * t.element_size()
    return e


def _walk_tensors(obj: Any):
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, Mapping):
        for v in obj.values():
            yield from _walk_tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _walk_tensors(v)


@dataclass
class Checkpoint:
    """A loaded checkpoint: the chosen backbone's state dict (prefix stripped) and its context."""

    path: Path
    layout: Literal["released", "training", "state_dict"]
    encoder: Encoder
    encoder_key: str | None
    prefixed: bool
    state: dict[str, torch.Tensor]
    entries: list[Entry]
    file_size: int
    storage: str  # "zip (memory-mapped)" or "legacy (read whole)"
    available_encoders: list[str] = field(default_factory=list)
    raw: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    """The whole loaded file when asked for (``keep_raw``), for the entries other than the
    chosen backbone (``msn export`` reads the other network, the prototypes and the
    bookkeeping numbers)."""
    _pages: _MappedPages | None = field(default=None, repr=False, compare=False)

    @property
    def raw_key_prefix(self) -> str:
        return DDP_PREFIX if self.prefixed else ""

    def release(self, tensor: torch.Tensor) -> None:
        """Drop ``tensor``'s pages from this process's resident memory, when they are mapped.

        Reading a memory-mapped tensor makes its pages resident, so without this a pass over
        every tensor ends with the whole file in the process's RSS. The data stays in the file
        (and in the page cache); touching the tensor again maps it back. A no-op for tensors
        not mapped from this file (legacy files read whole, converted copies).
        """
        if (pages := self._mapped()) is not None:
            pages.release(tensor)

    def _mapped(self) -> _MappedPages | None:
        """This file's mappings in this process (found once); None unless memory-mapped."""
        if not self.storage.startswith("zip"):
            return None
        if self._pages is None:
            self._pages = _MappedPages(self.path)
        return self._pages

    def file_span(self, tensor: torch.Tensor) -> tuple[int, int] | None:
        """Where ``tensor``'s bytes lie in the checkpoint file: ``(offset, length)``.

        Known only for a contiguous tensor inside this process's private mapping of the file
        (a zip checkpoint, memory-mapped); None otherwise. Lets the writer copy the bytes
        file to file in the kernel instead of through this process. The caller must still
        compare what it copied with the tensor (convert's read-back check does).
        """
        pages = self._mapped()
        return pages.span(tensor) if pages is not None and tensor.is_contiguous() else None

    @property
    def mapped_inode(self) -> int | None:
        """The inode number of the file as mapped (None when nothing is mapped), so that a
        copy read through a freshly opened file can be checked to read that same file."""
        pages = self._mapped()
        return pages.inode if pages is not None else None

    def original_key(self, key: str) -> str:
        return self.raw_key_prefix + key


def load_checkpoint(path: str | os.PathLike[str], encoder: Encoder = "target",
                    keep_raw: bool = False) -> Checkpoint:
    """Load ``path`` safely and pick the backbone ``encoder`` ("target" or "online").

    ``keep_raw``: keep the whole loaded file in :attr:`Checkpoint.raw` (otherwise the other
    entries are let go, which frees them for a legacy file read whole)."""
    path = Path(path)
    kind = sniff(path) if path.is_file() else None
    obj = _load(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path.name} holds a {type(obj).__name__}, not a dict: not an MSN checkpoint")
    entries = [_describe(str(k), v) for k, v in obj.items()]
    available = [name for name, key in ENCODER_KEYS.items() if key in obj]
    if available:
        key = ENCODER_KEYS[encoder]
        if key not in obj:
            raise CheckpointError(
                f"{path.name} has no '{key}' (the {encoder} encoder)",
                hint=f"it has: {', '.join(available)}; pick one with --encoder "
                + "|".join(available))
        layout: Literal["released", "training", "state_dict"] = (
            "training" if ("encoder" in obj or "opt" in obj) else "released")
        state = obj[key]
        if not isinstance(state, Mapping):
            raise CheckpointError(f"'{key}' in {path.name} is a {type(state).__name__}, "
                                  "not a state dict")
        encoder_key: str | None = key
    elif _looks_like_backbone(obj):
        layout, state, encoder_key = "state_dict", obj, None
    else:
        shown = ", ".join(list(map(str, obj))[:8]) or "nothing"
        raise CheckpointError(
            f"{path.name} is not an MSN checkpoint: it has no 'target_encoder' or 'encoder' "
            f"(found: {shown})",
            hint="MSN checkpoints hold 'target_encoder' and 'prototypes' (plus 'encoder' and "
                 "'opt' when saved during training)")
    import torch

    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"the state dict holds non-tensor entries: {', '.join(bad[:5])}")
    prefixed, stripped = strip_ddp_prefix(state)
    refuse_unconvertible(path, obj, stripped)
    return Checkpoint(
        path=path, layout=layout, encoder=encoder, encoder_key=encoder_key, prefixed=prefixed,
        state=stripped, entries=entries, file_size=path.stat().st_size,
        storage="zip (memory-mapped)" if kind == "zip" else "legacy pickle (read whole)",
        available_encoders=available, raw=obj if keep_raw else None,
    )


def strip_ddp_prefix(state: Mapping[Any, Any]) -> tuple[bool, dict[str, Any]]:
    """Whether every key of ``state`` carries DistributedDataParallel's ``module.``, and the
    state with it removed (keys left as they are unless all carry it)."""
    keys = [str(k) for k in state]
    prefixed = bool(keys) and all(k.startswith(DDP_PREFIX) for k in keys)
    return prefixed, {(str(k)[len(DDP_PREFIX):] if prefixed else str(k)): v
                      for k, v in state.items()}


class _MappedPages:
    """The private read-only mappings of one file in this process, and ``madvise`` on them.

    Only ranges inside a private (copy-on-write) mapping of the checkpoint file are ever
    advised, found in ``/proc/self/maps``; ``MADV_DONTNEED`` on such clean pages only unmaps
    them (they are read again from the file when next touched), so nothing can be lost.
    Anywhere else (not Linux, no libc) this does nothing.
    """

    MADV_DONTNEED = 4

    def __init__(self, path: Path) -> None:
        self.ranges: list[tuple[int, int]] = []
        self.offsets: list[int] = []  # file offset of each range's first byte
        self.inode: int | None = None
        self.page = 4096
        self._madvise: Any = None
        try:
            import ctypes
            import mmap

            real = os.path.realpath(path)
            with open("/proc/self/maps") as f:
                for line in f:
                    parts = line.split(maxsplit=5)
                    if len(parts) == 6 and parts[5].rstrip("\n") == real and parts[1][3:4] == "p":
                        lo, hi = (int(x, 16) for x in parts[0].split("-"))
                        inode = int(parts[4])
                        if self.inode not in (None, inode):  # replaced between two mappings
                            self.ranges, self.offsets, self.inode = [], [], None
                            break
                        self.ranges.append((lo, hi))
                        self.offsets.append(int(parts[2], 16))
                        self.inode = inode
            if self.ranges:
                libc = ctypes.CDLL(None, use_errno=True)
                fn = libc.madvise
                fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
                fn.restype = ctypes.c_int
                self._madvise = fn
                self.page = mmap.PAGESIZE
        except (OSError, AttributeError, ValueError):
            self.ranges, self.offsets, self.inode = [], [], None

    def span(self, tensor: torch.Tensor) -> tuple[int, int] | None:
        start = tensor.data_ptr()
        n = tensor.numel() * tensor.element_size()
        for (a, b), off in zip(self.ranges, self.offsets, strict=True):
            if a <= start and start + n <= b:
                return off + (start - a), n
        return None

    def release(self, tensor: torch.Tensor) -> None:
        if self._madvise is None:
            return
        start = tensor.data_ptr()
        end = start + tensor.numel() * tensor.element_size()
        lo = -(-start // self.page) * self.page  # only whole pages inside the tensor
        hi = end // self.page * self.page
        for a, b in self.ranges:
            if a <= start and end <= b:
                if hi > lo:
                    self._madvise(lo, hi - lo, self.MADV_DONTNEED)
                return


PRETRAINING_HINT = ("convert the pre-training checkpoint instead: {tag}-latest.pth.tar or "
                    "{tag}-ep{N}.pth.tar in the run's folder, or a released one (msn convert vits16 ...)")


def refuse_unconvertible(path: Path, obj: Mapping, state: Mapping[str, Any]) -> None:
    """Refuse, in one line that says what the file is, MSN files that cannot become a
    ``ViTMSNModel``: conv-stem networks and linear-evaluation checkpoints."""
    stem = sorted(k for k in state if k.startswith("patch_embed.stem."))
    if stem:
        d = _dim0(state.get("cls_token"), -1) or _dim0(state.get("norm.weight"), 0)
        depth = len({m.group(1) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
        fc1 = state.get("blocks.0.mlp.fc1.weight")
        mlp = _dim0(fc1, 0)
        names = [c.name for c in family.matching(d, depth, intermediate_size=mlp, conv_stem=True)] \
            if d else []
        what = (f"the conv-stem network {' or '.join(names)} of {family.SOURCE}" if names else
                "a conv-stem ViT")
        raise CheckpointError(
            f"{path.name} holds {what} ({d or '?'} wide, {depth} blocks): its patch embedding is "
            f"a stack of convolutions with BatchNorm ({len(stem)} patch_embed.stem.* tensors), "
            "and ViTMSNModel has only a linear patch embedding, so it cannot become one",
            hint="no Hugging Face ViT class has a conv stem; only the linear-patch models "
                 "(deit_* and the released checkpoints) convert")
    head = obj.get("classifier")
    if isinstance(head, Mapping):
        keys = {str(k).removeprefix(DDP_PREFIX) for k in head}
        if {"linear.weight", "norm.weight"} <= keys and "norm.weight" not in state:
            lin = next((v for k, v in head.items()
                        if str(k).removeprefix(DDP_PREFIX) == "linear.weight"), None)
            classes = f" to {_dim0(lin, 0)} classes" if _dim0(lin, 0) else ""
            raise CheckpointError(
                f"{path.name} is a linear-evaluation checkpoint (MSN's linear_eval.py): its "
                "backbone has no final LayerNorm, and its classifier applies LayerNorm, L2 "
                f"normalisation and a Linear layer{classes} to the cls token before any final "
                "norm, which ViTMSNForImageClassification (final LayerNorm, then a plain "
                "Linear) cannot express", hint=PRETRAINING_HINT)


def _dim0(t: Any, axis: int) -> int:
    shape = getattr(t, "shape", None)
    return int(shape[axis]) if shape is not None and len(shape) else 0


def _looks_like_backbone(obj: Mapping) -> bool:
    keys = [str(k).removeprefix(DDP_PREFIX) for k in obj]
    return "cls_token" in keys and any(k.startswith("blocks.") for k in keys)


@dataclass(frozen=True)
class Inferred:
    arch: Architecture
    variant: Variant | None
    dtype: str
    provenance: tuple[Provenance, ...] = ()
    """Every value not read from the weights, with its origin (see :mod:`msn_cli.conversion.provenance`)."""
    warnings: tuple[str, ...] = ()
    family_name: str | None = None
    """The constructors of the original family these shapes match (None: none)."""


def infer_architecture(state: Mapping[str, torch.Tensor], num_heads: int | None = None, *,
                       known: Known | None = None) -> Inferred:
    """Read the architecture from tensor shapes alone (never from a file name).

    Heads cannot be read from shapes: they come from ``num_heads`` (the user), the run's
    config (``known.model_name``), the original model family by width, or, outside it,
    hidden size / 64 marked as assumed (:func:`msn_cli.conversion.provenance.resolve_heads`). The result
    carries a :class:`~msn_cli.conversion.provenance.Provenance` record for every such value.
    """
    known = known or Known()
    if num_heads is not None:
        known = replace(known, num_heads=num_heads)

    def need(key: str):
        if key not in state:
            raise CheckpointError(f"the backbone has no '{key}': cannot infer the architecture",
                                  hint="is this an MSN ViT checkpoint?")
        return state[key]

    pw = need("patch_embed.proj.weight")
    if pw.dim() != 4:
        raise CheckpointError(f"patch_embed.proj.weight has shape {list(pw.shape)}, expected "
                              "D x C x P x P")
    d, channels, ph, pwid = (int(x) for x in pw.shape)
    if ph != pwid:
        raise CheckpointError(f"the patch embedding kernel is {ph}x{pwid}, not square: "
                              "not an MSN ViT")
    pos = need("pos_embed")
    if pos.dim() != 3 or pos.shape[0] != 1 or pos.shape[2] != d:
        raise CheckpointError(f"pos_embed has shape {list(pos.shape)}, expected 1 x (N+1) x {d}")
    n = int(pos.shape[1]) - 1
    grid = round(n ** 0.5)
    if grid * grid != n or n <= 0:
        raise CheckpointError(f"pos_embed has {n} patch positions, not a square grid")
    blocks = sorted({int(m.group(1)) for k in state if (m := re.match(r"blocks\.(\d+)\.", k))})
    if not blocks:
        raise CheckpointError("the backbone has no transformer blocks (no 'blocks.N.' keys)")
    if blocks != list(range(len(blocks))):
        missing = sorted(set(range(blocks[-1] + 1)) - set(blocks))
        raise CheckpointError(f"transformer blocks are missing: {', '.join(map(str, missing))} "
                              f"(found {len(blocks)} of {blocks[-1] + 1})")
    fc1 = need("blocks.0.mlp.fc1.weight")
    mlp = int(fc1.shape[0])
    constructor, unknown_name = named_constructor(known)
    warnings = [unknown_name] if unknown_name else []
    if constructor is not None:
        check_constructor(constructor, known, d, len(blocks), ph, mlp)
    heads, more = resolve_heads(d, known, constructor)
    warnings += more
    qkv_bias = "blocks.0.attn.qkv.bias" in state
    arch = Architecture(hidden_size=d, num_layers=len(blocks), num_heads=heads.value,
                        intermediate_size=mlp, patch_size=ph, image_size=grid * ph,
                        num_channels=channels, qkv_bias=qkv_bias)
    variant = match_variant(arch.hidden_size, arch.num_layers, arch.patch_size,
                            arch.intermediate_size, arch.image_size)
    if variant is None:  # blocks missing at the end leave a shallower but well-formed ViT
        for v in VARIANTS.values():
            if (v.hidden_size, v.patch_size, v.intermediate_size, v.image_size) == (
                    arch.hidden_size, arch.patch_size, arch.intermediate_size, arch.image_size) \
                    and v.num_layers > arch.num_layers:
                raise CheckpointError(
                    f"transformer blocks are missing: the shapes are those of {v.name}, which has "
                    f"{v.num_layers} blocks, but only {arch.num_layers} are present "
                    f"(blocks {arch.num_layers}-{v.num_layers - 1} missing)",
                    hint="the checkpoint is incomplete; download it again")
    if variant is not None and variant.num_heads != arch.num_heads:
        raise CheckpointError(
            f"--num-heads {arch.num_heads} given, but the shapes are those of the released "
            f"{variant.name}, which has {variant.num_heads} heads",
            hint="drop --num-heads: the released models' heads are known")
    provenance = [
        heads,
        Provenance("qkv_bias", qkv_bias, "weights",
                   "blocks.N.attn.qkv.bias " + ("present" if qkv_bias else "absent")),
        *shared_values(d, constructor),
        Provenance("image_size", arch.image_size, "weights",
                   f"pos_embed holds {grid}x{grid} positions of {ph}-px patches"),
    ]
    matches = family.matching(d, arch.num_layers, ph, mlp)
    dtypes = {str(t.dtype).removeprefix("torch.") for k, t in state.items() if not k.startswith("fc.")}
    dtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
    return Inferred(arch, variant, dtype, tuple(provenance), tuple(warnings),
                    ", ".join(c.name for c in matches) or None)
