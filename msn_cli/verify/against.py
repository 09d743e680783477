"""verify's ``against`` check (with ``--against``): another Hugging Face folder, tensor by tensor.

A folder or a Hub repository (its config.json and weights only, size-capped:
:mod:`msn_cli.transfer.hub_fetch`): the key diff (a
classification model's ``vit.`` prefix stripped, its head ignored), shapes, and values --
identical in the same dtype, equal up to rounding to the coarser one across dtypes -- plus the
computation-relevant config values. A difference of image processor is a note, not a failure.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from msn_cli.hf.folder import SAFE_INDEX, read_json_object, weights_files
from msn_cli.hf.manifest import CONFIG
from msn_cli.original import preprocess
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.hub_fetch import clearly_repo_id, fetch_model_folder
from msn_cli.util import safeio
from msn_cli.verify.config import RELEVANT_CONFIG
from msn_cli.verify.context import could_not_run, show_value
from msn_cli.verify.photos import read_processor_config
from msn_cli.verify.report import CheckResult, Json

if TYPE_CHECKING:
    import torch

    from msn_cli.verify.context import VerifyContext

_IGNORED_PREFIXES = ("classifier.",)
_EPS = {"float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7, "float64": 2.0 ** -52}


class AgainstRow(TypedDict, total=False):
    key: str
    status: str
    ok: bool
    shape: list[int]
    other_shape: list[int]
    dtype: str
    other_dtype: str
    max_abs_diff: float
    here: object
    there: object


def run(ctx: VerifyContext) -> CheckResult:
    spec = ctx.options.against
    if spec is None:
        return CheckResult("against", None, "skipped: no --against given")
    ctx.notes += against_notes(ctx.folder, spec, ctx.against)
    return check_against(ctx.folder, spec, ctx.progress, ctx.against)


def resolve_against(spec: str, progress: ProgressFn) -> Path:
    """The ``--against`` folder: a local folder, or a Hub repo id fetched (weights and JSON)."""
    p = Path(spec).expanduser()
    if p.exists():
        if not p.is_dir():
            raise could_not_run(f"--against {spec}: not a folder",
                                hint="give a Hugging Face model folder or a Hub repo id")
        return p
    if not clearly_repo_id(spec):
        raise could_not_run(f"--against {spec}: no such folder here",
                            hint="give a Hugging Face model folder, or a Hub repo id (org/name)")
    return fetch_model_folder(spec, allow_pickle=True, progress=progress,
                              hint="check the repo id and your connection (HF_HUB_OFFLINE=1 uses "
                                   "only what is cached)")


class FolderTensors:
    """The tensors ``from_pretrained`` would load from a Hugging Face model folder, read one at
    a time: ``model.safetensors``, else the shards of ``model.safetensors.index.json``, else
    ``pytorch_model.bin`` memory-mapped with ``weights_only=True`` (:func:`weights_files`;
    never a glob, so a decoy file beside them is not read). Every file is a regular file with
    a valid header; a tensor stored twice, or where the index does not put it, is refused."""

    def __init__(self, folder: Path):
        self._loaded: dict[str, torch.Tensor] = {}
        self._handles: dict[str, Any] = {}
        files, weight_map = weights_files(folder)
        if files[0].name.endswith(".bin"):
            self._loaded = _load_bin(files[0])
            return
        where_from: dict[str, str] = {}
        for f in files:
            h = _open_safetensors(folder, f, weight_map is not None)
            for k in h.keys():
                if k in self._handles:
                    raise could_not_run(f"{folder}: tensor {k} is stored more than once "
                                        f"({where_from[k]} and {f.name})")
                if weight_map is not None and weight_map.get(k) != f.name:
                    raise could_not_run(f"{folder}: {f.name} holds {k}, which {SAFE_INDEX} puts "
                                        f"{'in ' + str(weight_map[k]) if k in weight_map else 'nowhere'}")
                self._handles[k] = h
                where_from[k] = f.name
        if weight_map is not None and (lost := sorted(set(weight_map) - set(self._handles))):
            raise could_not_run(f"{folder}: {SAFE_INDEX} lists {len(lost)} tensor(s) no shard "
                                f"holds: {', '.join(lost[:3])}")

    def keys(self) -> list[str]:
        return [*self._loaded, *self._handles]

    def get(self, key: str) -> torch.Tensor:
        if key in self._loaded:
            return self._loaded[key]
        tensor: torch.Tensor = self._handles[key].get_tensor(key)
        return tensor


def _load_bin(path: Path) -> dict[str, torch.Tensor]:
    import torch

    try:
        with safeio.open_regular(path):  # a FIFO would block torch.load
            pass
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except safeio.UnsafeInput as e:
        raise could_not_run(f"cannot read {path}: {e}") from e
    except Exception as e:
        raise could_not_run(f"cannot read {path} safely: {e}") from e
    if not isinstance(obj, dict):
        raise could_not_run(f"{path} holds {type(obj).__name__}, not a state dict "
                            "(tensor names -> tensors)")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _open_safetensors(folder: Path, f: Path, sharded: bool) -> Any:
    from safetensors import safe_open

    from msn_cli.hf.safetensors_io import read_header

    try:
        read_header(f)  # the typed reader first: a regular file, a valid header
        return safe_open(str(f), framework="pt")
    except FileNotFoundError as e:
        raise could_not_run(f"{folder} lacks {f.name}" + (
            f", a shard {SAFE_INDEX} lists" if sharded else "")) from e
    except Exception as e:
        raise could_not_run(f"cannot read {f}: {e}") from e


def _key_map(keys: list[str]) -> dict[str, str]:
    """Normalised key -> stored key: the ``vit.`` prefix of classification-model saves stripped."""
    if keys and all(k.startswith("vit.") or k.startswith(_IGNORED_PREFIXES) for k in keys):
        return {k.removeprefix("vit."): k for k in keys}
    return {k: k for k in keys}


def _compare_tensor(key: str, a: torch.Tensor | None, b: torch.Tensor | None) -> AgainstRow:
    import torch

    row: AgainstRow = {"key": key}
    if a is None or b is None:
        ignored = key.startswith(_IGNORED_PREFIXES)
        row["status"] = ("ignored (classification head)" if ignored else
                         "only here" if b is None else "only there")
        row["ok"] = ignored
        return row
    if a.shape != b.shape:
        row.update({"status": "shape", "ok": False, "shape": list(a.shape),
                    "other_shape": list(b.shape)})
        return row
    da, db = str(a.dtype).removeprefix("torch."), str(b.dtype).removeprefix("torch.")
    d = float((a.float() - b.float()).abs().max()) if a.numel() else 0.0
    row.update({"shape": list(a.shape), "dtype": da, "other_dtype": db, "max_abs_diff": d})
    if da == db:
        ok = bool(torch.equal(a, b))
        row.update({"ok": ok, "status": "identical" if ok else "differs"})
    else:  # different precisions: equal up to rounding to the coarser one
        eps = max(_EPS.get(da, 2.0 ** -23), _EPS.get(db, 2.0 ** -23))
        lim = eps * float(torch.maximum(a.float().abs(), b.float().abs()).max()) + 1e-12
        row.update({"ok": d <= lim, "status": "equal to rounding" if d <= lim else "differs"})
    return row


def _config_rows(folder: Path, other: Path) -> tuple[list[AgainstRow], list[str]]:
    """The computation-relevant config values that differ: rows, and the detail's words."""
    rows: list[AgainstRow] = []
    bad: list[str] = []
    mine, theirs = read_json_object(folder / CONFIG)[0], read_json_object(other / CONFIG)[0]
    if mine is None or theirs is None:
        return rows, bad
    for key in RELEVANT_CONFIG:
        if key in mine and key in theirs and mine[key] != theirs[key]:
            bad.append(f"{key} {show_value(mine[key])} here, {show_value(theirs[key])} there")
            rows.append({"key": f"config.json:{key}", "status": "differs", "ok": False,
                         "here": mine[key], "there": theirs[key]})
    return rows, bad


def check_against(folder: Path, spec: str, progress: ProgressFn = no_progress,
                  other: Path | None = None) -> CheckResult:
    """Compare ``folder`` with ``spec`` (a folder or Hub repo id; ``other`` if already fetched)."""
    if other is None:
        other = resolve_against(spec, progress)
    here, there = FolderTensors(folder), FolderTensors(other)
    ours, theirs = _key_map(here.keys()), _key_map(there.keys())
    rows = [_compare_tensor(key, here.get(ours[key]) if key in ours else None,
                            there.get(theirs[key]) if key in theirs else None)
            for key in sorted(set(ours) | set(theirs))]
    n_bad = sum(not r["ok"] for r in rows)
    worst = max((r.get("max_abs_diff", 0.0) for r in rows), default=0.0)
    config_rows, cfg_bad = _config_rows(folder, other)
    rows += config_rows
    compared = sum(1 for r in rows if "max_abs_diff" in r)
    numbers: dict[str, Json] = {"tensors_here": len(ours), "tensors_there": len(theirs),
                                "compared": compared, "differing": n_bad, "max_abs_diff": worst}
    if n_bad or cfg_bad:
        kinds: dict[str, int] = {}
        for r in rows:
            if not r["ok"]:
                kinds[r["status"]] = kinds.get(r["status"], 0) + 1
        text = f"{spec}: " + ", ".join(f"{n} {k}" for k, n in kinds.items())
        if cfg_bad:
            text += "; config: " + "; ".join(cfg_bad)
        return CheckResult("against", False, text, numbers, rows)
    return CheckResult("against", True, f"{spec}: all {compared} tensors match "
                       f"(max abs diff {worst:.1e})", numbers, rows)


def against_notes(folder: Path, spec: str, other: Path | None) -> list[str]:
    """A preprocessing difference from the ``--against`` folder is a note, not a failure: the
    weights are what ``against`` compares (the official uploads use the seed's processor)."""
    if other is None:
        return []
    mine, theirs = read_processor_config(folder), read_processor_config(other)
    if mine is None or theirs is None:
        return []
    keys = sorted(k for k in set(mine) | set(theirs)
                  if k in preprocess.RELEVANT_ANY and not preprocess.same_value(mine.get(k), theirs.get(k)))
    if not keys:
        return []
    return [f"note: the image processor differs from {spec}'s ({', '.join(keys)}): here "
            f"{_describe(mine)}, there {_describe(theirs)}; a choice, not a conversion error "
            "(msn convert --preprocessing seed writes what the official uploads use)"]


def _describe(cfg: dict[str, Any]) -> str:
    crop, size = cfg.get("crop_size"), cfg.get("size")
    height = crop.get("height") if isinstance(crop, dict) else None
    name = preprocess.identify(cfg, int(height)) if height else None
    if name is None and isinstance(size, dict) and size.get("height"):
        name = preprocess.identify(cfg, int(size["height"]))
    return f"{cfg.get('image_processor_type')}" + (f" ('{name}' preprocessing)" if name else "")
