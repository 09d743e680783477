"""verify's ``files`` check: the folder holds what its manifest says, and nothing is
inconsistent before ``from_pretrained`` is given it.

Every file the manifest lists is there with its recorded size and sha256; the three files a
``ViTMSNModel`` folder needs exist; ``config.json`` and the ``model.safetensors`` header agree
(every key the config implies, at the shape it implies, nothing else, one dtype that is the
config's and the manifest's). A source that is not the file the manifest records fails it too:
the card would otherwise vouch for a file verify did not compare with.

The folder holds nothing but the files of a converted folder, and no JSON file transformers
reads names code (:func:`msn_cli.hf.folder.folder_files_problem`): such a folder is never given
to transformers at all, by any check.

It also finds, for the checks after it, the weights' dtype and whether the folder may be
loaded at all: a config claiming a million layers would otherwise be built, at minutes and
gigabytes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.conversion import mapping
from msn_cli.errors import ConfigError
from msn_cli.hf.folder import SAFE_WEIGHTS, config_architecture, folder_files_problem, read_json_object
from msn_cli.hf.manifest import CONFIG, PREPROCESSOR, regular_file_problem
from msn_cli.hf.manifest import check_files as check_listed_files
from msn_cli.hf.safetensors_io import HeaderError, read_header
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util.hashing import HashFn, sha256_file
from msn_cli.verify.report import TOLERANCES, CheckResult, Json, Row

if TYPE_CHECKING:
    from msn_cli.hf.manifest import Manifest
    from msn_cli.original.architecture import Architecture
    from msn_cli.verify.context import VerifyContext

_ST_TO_TORCH = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64",
                "I64": "int64", "I32": "int32", "U8": "uint8", "BOOL": "bool"}


@dataclass
class FilesFound:
    """The files check, and what it found for the checks after it."""

    result: CheckResult
    dtype: str | None
    """The weights' one dtype (None: unreadable, or mixed)."""
    unloadable: str | None
    """Why ``from_pretrained`` must not be given the folder (None: it may)."""


@dataclass
class _Findings:
    rows: list[Row] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    unloadable: list[str] = field(default_factory=list)


def run(ctx: VerifyContext) -> CheckResult:
    found = check_files(ctx.folder, ctx.manifest, ctx.progress, ctx.options.known_hashes,
                        ctx.hash_file)
    result = found.result
    manifest_dtype = ctx.manifest.get("dtype") if ctx.manifest else None
    dtype = found.dtype or manifest_dtype or "float32"
    ctx.dtype = dtype if dtype in TOLERANCES else "float32"
    ctx.unloadable = found.unloadable
    mismatch = ctx.source.get("mismatch")
    if mismatch:
        detail = mismatch if result.passed else f"{result.detail}; {mismatch}"
        return CheckResult("files", False, detail, result.numbers, result.rows)
    return result


def expected_shapes(arch: Architecture) -> dict[str, tuple[int, ...]]:
    """Every Hugging Face key of a ``ViTMSNModel`` with ``arch`` and its shape (from the rules)."""
    out: dict[str, tuple[int, ...]] = {}
    for target, _src, rule, part in mapping.expected_targets(arch):
        assert rule.shape is not None
        shape = rule.shape(arch)
        if part is not None:
            shape = (shape[0] // 3, *shape[1:])
        out[target] = shape
    return out


def _weights_header(folder: Path) -> tuple[dict[str, Any] | None, str | None]:
    path = folder / SAFE_WEIGHTS
    try:
        return read_header(path), None
    except FileNotFoundError:
        return None, f"{SAFE_WEIGHTS} is missing"
    except (HeaderError, OSError) as e:
        return None, f"{SAFE_WEIGHTS} is not a readable safetensors file ({e})"


def check_files(folder: Path, manifest: Manifest | None, progress: ProgressFn = no_progress,
                known_hashes: Mapping[str, str] | None = None,
                hash_file: HashFn = sha256_file) -> FilesFound:
    """Hashes against the manifest, required files, config <-> weights header; and the dtype.

    ``known_hashes``: sha256 values the caller computed from the files' bytes as read back
    from disk a moment ago (``convert`` does, after writing); those files are not read again.
    """
    f = _Findings()
    listed = (manifest.get("files") if manifest else None) or {}
    unsafe = folder_files_problem(folder, listed)
    if unsafe is not None:
        f.problems.append(f"the folder {unsafe}")
        f.unloadable.append(f"the folder {unsafe}")
    absent = set()
    for name in (SAFE_WEIGHTS, CONFIG, PREPROCESSOR):
        problem = regular_file_problem(folder / name)
        if problem is not None:
            f.problems.append(f"{name} is {problem}")
            f.rows.append({"file": name, "ok": False, "problem": problem})
            absent.add(name)
    for row in check_listed_files(folder, manifest, progress, dict(known_hashes or {}), hash_file):
        if row["file"] in absent:
            continue
        f.rows.append(row)
        if not row["ok"]:
            f.problems.append(f"{row['file']} is missing" if row["problem"] == "missing" else
                              f"{row['file']}: {row['problem']}")
    config, cerr = read_json_object(folder / CONFIG)
    header, herr = _weights_header(folder)
    for name, err in ((CONFIG, cerr), (SAFE_WEIGHTS, herr)):
        if err is not None:
            f.unloadable.append(err)
            if name not in absent:
                f.problems.append(err)
    dtype = _header_against_config(header, config, manifest, f) if header is not None else None
    why = "; ".join(f.unloadable) or None
    numbers: dict[str, Json] = {"files": len(f.rows)}
    if f.problems:
        return FilesFound(CheckResult("files", False, "; ".join(f.problems), numbers, f.rows),
                          dtype, why)
    what = (f"{len(listed)} files match the manifest's sha256" if listed else
            "the manifest lists no files: hashes not checked" if manifest else
            "no manifest: hashes not checked")
    return FilesFound(CheckResult("files", True, f"{what}, no other file and no code named; "
                                  f"config and weights header agree ({dtype})", numbers, f.rows),
                      dtype, why)


def _header_against_config(header: dict[str, Any], config: dict[str, Any] | None,
                           manifest: Manifest | None, f: _Findings) -> str | None:
    """The weights' one dtype; every tensor the config implies, at its shape, nothing else,
    and one dtype that is the config's and the manifest's (what is not, into ``f``)."""
    tensors = {k: v for k, v in header.items() if k != "__metadata__"}
    dtypes = sorted({_ST_TO_TORCH.get(v["dtype"], v["dtype"]) for v in tensors.values()})
    dtype = dtypes[0] if len(dtypes) == 1 else None
    if len(dtypes) > 1:
        f.problems.append(f"{SAFE_WEIGHTS} mixes dtypes: {', '.join(dtypes)}")
    if config is not None:
        _keys_against_config(tensors, config, f)
        cdtype = config.get("torch_dtype") or config.get("dtype")
        if dtype and cdtype and cdtype != dtype:
            f.problems.append(f"{CONFIG} says dtype {cdtype}, the weights are {dtype}")
    mdtype = manifest.get("dtype") if manifest else None
    if dtype and mdtype and mdtype != dtype:
        f.problems.append(f"the manifest says dtype {mdtype}, the weights are {dtype}")
    return dtype


def _keys_against_config(tensors: dict[str, Any], config: dict[str, Any], f: _Findings) -> None:
    try:
        want = expected_shapes(config_architecture(config, tensors))
    except ConfigError as e:
        f.problems.append(str(e))
        f.unloadable.append(str(e))
        return
    missing = sorted(set(want) - set(tensors))
    extra = sorted(set(tensors) - set(want))
    shapes = sorted(k for k in set(want) & set(tensors) if tuple(tensors[k]["shape"]) != want[k])
    for label, keys in (("missing from the weights", missing),
                        ("not expected by the config", extra),
                        ("with a shape the config does not imply", shapes)):
        if keys:
            f.problems.append(f"{len(keys)} tensor(s) {label}: {', '.join(keys[:3])}"
                              + (" ..." if len(keys) > 3 else ""))
    if missing or shapes:
        f.unloadable.append(f"{CONFIG} implies tensors the weights do not hold")
