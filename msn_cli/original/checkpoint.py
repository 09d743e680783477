"""Safe loading of original MSN checkpoints, and the backbone chosen from one.

Loading is always ``torch.load(weights_only=True)``: the restricted unpickler refuses any
Python object other than tensors and plain containers, so nothing in a file can run code.
Zip-format files are memory-mapped, so only the tensors a caller touches are read from disk;
the optimizer state of a training checkpoint is never paged in.

What a file is from its bytes and whether its archive is intact is :mod:`.archive`'s; what a
state dict is (DDP prefix, refusals, architecture) is :mod:`.backbone`'s. The names of those two
that callers use beside :func:`load_checkpoint` are importable from here too.
"""

from __future__ import annotations

import math
import pickle
import re
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from msn_cli.errors import CheckpointError
from msn_cli.original.archive import check_legacy_pickles, check_pickle_crc
from msn_cli.original.archive import check_zip_integrity as check_zip_integrity
from msn_cli.original.archive import sniff as sniff
from msn_cli.original.backbone import DDP_PREFIX as DDP_PREFIX
from msn_cli.original.backbone import Inferred as Inferred
from msn_cli.original.backbone import infer_architecture as infer_architecture
from msn_cli.original.backbone import looks_like_backbone
from msn_cli.original.backbone import refuse_unconvertible as refuse_unconvertible
from msn_cli.original.backbone import strip_ddp_prefix as strip_ddp_prefix

if TYPE_CHECKING:
    import os

    import torch

Encoder = Literal["target", "online"]
ENCODER_KEYS: dict[str, str] = {"target": "target_encoder", "online": "encoder"}
Layout = Literal["released", "training", "state_dict"]
Scalar = bool | int | float | str | None

FREEZE_GC_AFTER_TORCH = False
"""Set by the CLI's ``main()`` only: library users' processes are never touched."""


def import_torch() -> Any:
    """``import torch``, with Ctrl-C and SIGTERM held back until it is done (see
    :mod:`msn_cli.util.interrupts`: torch's start-up can swallow them); in the CLI, when this is
    what first imports it, ``gc.freeze()`` after.

    torch creates about a million Python objects that live until the process ends; frozen,
    the cyclic garbage collector stops traversing them, both in the collections a command
    triggers and in the final one at exit (the gain per command is in docs/benchmarks.md).
    Only objects alive at that moment are frozen (they are still freed by reference
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


def storage_label(kind: str) -> str:
    """How a file of ``kind`` (from :func:`sniff`) is held once loaded."""
    return "zip (memory-mapped)" if kind == "zip" else "legacy pickle (read whole)"


def _check_loadable(path: Path) -> str:
    """Refuse what is not a torch.save file, before torch sees it; the file's kind."""
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
        check_pickle_crc(path)  # a damaged pickle must not read as a hostile one
    else:
        check_legacy_pickles(path)
    return kind


def load_file(path: Path) -> Any:
    """The object ``path`` holds, loaded with ``torch.load(weights_only=True)`` (memory-mapped
    when it is a zip archive); every way it can fail is a :class:`CheckpointError`."""
    torch = import_torch()
    kind = _check_loadable(path)
    try:
        with warnings.catch_warnings():  # torch's warnings are not for our users
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=(kind == "zip"))
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
    refuse_hostile_objects(path, obj)
    return obj


Where = tuple["Where", object] | None
"""Where an object sits in a loaded file: its parent's place and its key or index."""


def _where_text(where: Where) -> str:
    parts: list[str] = []
    while where is not None:
        where, key = where
        parts.append(f"[{key}]" if isinstance(key, int) else f"/{str(key)[:60]}")
    return "".join(reversed(parts)).lstrip("/") or "the file itself"


def _nodes(obj: Any) -> Iterator[tuple[Any, Where]]:
    """Every object ``obj`` holds (dict keys and values, list and tuple items), each container
    once: without recursion (a pickle can nest deeper than Python recurses) and without
    looping (a pickle can hold a list that holds itself)."""
    seen: set[int] = set()
    stack: list[tuple[Any, Where]] = [(obj, None)]
    while stack:
        o, where = stack.pop()
        yield o, where
        if isinstance(o, (Mapping, list, tuple)):
            if id(o) in seen:
                continue
            seen.add(id(o))
            if isinstance(o, Mapping):
                for k, v in o.items():
                    stack.append((k, where))
                    stack.append((v, (where, k if isinstance(k, str) else type(k).__name__)))
            else:
                stack.extend((v, (where, i)) for i, v in enumerate(o))


def _tensor_problem(t: torch.Tensor) -> str | None:
    import torch

    if t.layout != torch.strided:
        return f"a {str(t.layout).removeprefix('torch.')} tensor, where checkpoints hold dense ones"
    need, have = t.numel() * t.element_size(), t.untyped_storage().nbytes()
    if need > have:
        return (f"a {list(t.shape)} tensor over a storage of {have:,} bytes: a view that "
                f"repeats its elements (stride 0 or overlapping), which a copy would expand to "
                f"{need:,} bytes")
    return None


def refuse_hostile_objects(path: Path, obj: Any) -> None:
    """Refuse what ``weights_only`` loads but no checkpoint holds, before anything reads it: a
    tensor that is not dense (sparse), a tensor with more elements than its storage (a few
    stored rows read as a million), an integer past 64 bits (no training code saves one, and
    ``float()`` and ``str()`` fail on it)."""
    import torch

    for o, where in _nodes(obj):
        if isinstance(o, torch.Tensor):
            problem = _tensor_problem(o)
        elif isinstance(o, int) and not isinstance(o, bool) and o.bit_length() > 64:
            problem = f"an integer of {o.bit_length()} bits, where a checkpoint's fit in 64"
        else:
            continue
        if problem is not None:
            raise CheckpointError(f"refused {path.name}: {_where_text(where)} is {problem}",
                                  hint="torch.save of a model writes no such thing; do not "
                                       "trust this file")


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
    value: Scalar = None

    def to_dict(self) -> dict[str, Any]:
        """The entry for JSON: a NaN or infinite value (a diverged run's loss) as its name,
        ``"nan"``, since JSON has no such number."""
        out = {k: v for k, v in self.__dict__.items() if v is not None}
        if isinstance(self.value, float) and not math.isfinite(self.value):
            out["value"] = str(self.value)
        return out


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


def _walk_tensors(obj: Any) -> Iterator[torch.Tensor]:
    import torch

    return (o for o, _ in _nodes(obj) if isinstance(o, torch.Tensor))


@dataclass
class Checkpoint:
    """A loaded checkpoint: the chosen backbone's state dict (prefix stripped) and its context."""

    path: Path
    layout: Layout
    encoder: Encoder
    encoder_key: str | None
    prefixed: bool
    state: dict[str, torch.Tensor]
    entries: list[Entry]
    file_size: int
    storage: str  # storage_label(): "zip (memory-mapped)" or "legacy pickle (read whole)"
    available_encoders: list[str] = field(default_factory=list)
    raw: Mapping[str, Any] | None = field(default=None, repr=False, compare=False)
    """The whole loaded file when asked for (``keep_raw``), for the entries other than the
    chosen backbone (``msn export`` reads the other network, the prototypes and the
    bookkeeping numbers)."""

    @property
    def raw_key_prefix(self) -> str:
        return DDP_PREFIX if self.prefixed else ""

    def original_key(self, key: str) -> str:
        return self.raw_key_prefix + key


def _pick_backbone(path: Path, obj: Mapping[Any, Any], encoder: Encoder,
                   available: list[str]) -> tuple[Layout, Mapping[Any, Any], str | None]:
    """The layout of the file, the state dict of ``encoder`` in it, and the entry that held it."""
    if available:
        key = ENCODER_KEYS[encoder]
        if key not in obj:
            raise CheckpointError(
                f"{path.name} has no '{key}' (the {encoder} encoder)",
                hint=f"it has: {', '.join(available)}; pick one with --encoder "
                + "|".join(available))
        layout: Layout = "training" if ("encoder" in obj or "opt" in obj) else "released"
        state = obj[key]
        if not isinstance(state, Mapping):
            raise CheckpointError(f"'{key}' in {path.name} is a {type(state).__name__}, "
                                  "not a state dict")
        return layout, state, key
    if looks_like_backbone(obj):
        return "state_dict", obj, None
    shown = ", ".join(list(map(str, obj))[:8]) or "nothing"
    raise CheckpointError(
        f"{path.name} is not an MSN checkpoint: it has no 'target_encoder' or 'encoder' "
        f"(found: {shown})",
        hint="MSN checkpoints hold 'target_encoder' and 'prototypes' (plus 'encoder' and "
             "'opt' when saved during training)")


def load_checkpoint(path: str | os.PathLike[str], encoder: Encoder = "target",
                    keep_raw: bool = False) -> Checkpoint:
    """Load ``path`` safely and pick the backbone ``encoder`` ("target" or "online").

    ``keep_raw``: keep the whole loaded file in :attr:`Checkpoint.raw` (otherwise the other
    entries are let go, which frees them for a legacy file read whole)."""
    path = Path(path)
    kind = sniff(path) if path.is_file() else None
    obj = load_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(
            f"{path.name} holds a {type(obj).__name__}, not a dict: not an MSN checkpoint")
    entries = [_describe(str(k), v) for k, v in obj.items()]
    available = [name for name, key in ENCODER_KEYS.items() if key in obj]
    layout, state, encoder_key = _pick_backbone(path, obj, encoder, available)
    import torch

    bad = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise CheckpointError(f"the state dict holds non-tensor entries: {', '.join(bad[:5])}")
    prefixed, stripped = strip_ddp_prefix(state)
    refuse_unconvertible(path, obj, stripped)
    return Checkpoint(
        path=path, layout=layout, encoder=encoder, encoder_key=encoder_key, prefixed=prefixed,
        state=stripped, entries=entries, file_size=path.stat().st_size,
        storage=storage_label(kind or ""), available_encoders=available,
        raw=obj if keep_raw else None,
    )
