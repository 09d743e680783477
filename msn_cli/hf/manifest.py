"""``msn_manifest.json``: what a converted folder is, where it came from, and how it checked out.

Written by ``convert`` into the folder; read by ``verify`` (to find the source and check the
files) and ``push`` (to refuse an unverified folder and to fill the model card).

A folder may come from someone else, so :func:`read_manifest` is a typed reader: every value
verify, push and the card read is checked against :data:`SCHEMA` (and every name of the file
table against :func:`msn_cli.util.safeio.relative_parts`) before anyone uses it, and anything
malformed is a :class:`~msn_cli.errors.FolderError` (exit 3) naming the field.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from msn_cli.errors import FolderError
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util import safeio
from msn_cli.util.hashing import sha256_file

MANIFEST = "msn_manifest.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
FORMAT_VERSION = 1


_DAMAGED = "the manifest is damaged; convert the checkpoint again"

_NONE = type(None)
_STR = (str, _NONE)
_INT = (int, _NONE)
_BOOL = (bool, _NONE)
_NUMBER = (int, float, _NONE)

SCHEMA: dict[str, Any] = {
    "tool": (str,),
    "format_version": _INT,
    "msn_version": _STR,
    "created": _STR,
    "variant": _STR,
    "dtype": _STR,
    "source_dtype": _STR,
    "tensors": _INT,
    "parameters": _INT,
    "dropped": ([str], _NONE),
    "source": ({"spec": _STR, "kind": _STR, "path": _STR, "name": _STR, "url": _STR,
                "size": _INT, "sha256": _STR, "layout": _STR, "encoder": _STR,
                "encoder_key": _STR, "prefixed": _BOOL}, _NONE),
    "architecture": ({k: _INT for k in ("hidden_size", "num_layers", "num_heads",
                                        "intermediate_size", "patch_size", "image_size",
                                        "num_channels", "num_patches", "head_dim")}, _NONE),
    "verify": ({"passed": _BOOL, "summary": _STR, "date": _STR, "msn_version": _STR,
                "transformers_version": _STR, "torch_version": _STR, "dtype": _STR,
                "tolerance": ({"atol": _NUMBER, "cosine_min": _NUMBER}, _NONE),
                "checks": ([{"name": (str,), "passed": _BOOL, "detail": _STR}], _NONE)}, _NONE),
}
"""The fields msn reads, with the types allowed: a tuple of alternatives, where a dict is an
object (its listed keys checked, others left alone) and a one-item list a list of that.
Absent keys are allowed (they read as None); ``files`` is checked by :func:`_check_files`."""

_SHA256 = re.compile(r"[0-9a-f]{64}")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", _NONE: "null"}.get(type(value), type(value).__name__)


def _matches(value: Any, allowed: tuple[Any, ...], where: str) -> None:
    for kind in allowed:
        if isinstance(kind, dict):
            if isinstance(value, dict):
                for key, sub in kind.items():
                    _matches(value.get(key), sub, f"{where}.{key}")
                return
        elif isinstance(kind, list):
            if isinstance(value, list):
                for i, item in enumerate(value):
                    _matches(item, (kind[0],), f"{where}[{i}]")
                return
        elif kind is int and isinstance(value, bool):
            continue  # JSON true is not a number
        elif isinstance(value, kind):
            return
    raise ValueError(f"'{where}' is {_kind(value)}")


def _check_files(files: Any) -> None:
    if not isinstance(files, dict):
        raise ValueError(f"'files' is {_kind(files)}, not a table of files")
    for name, entry in files.items():
        try:
            safeio.relative_parts(name)
        except safeio.UnsafeInput as e:
            raise ValueError(f"its file table lists {e}") from None
        if name == MANIFEST:
            raise ValueError(f"its file table lists {MANIFEST} itself")
        if not isinstance(entry, dict):
            raise ValueError(f"'files.{name}' is {_kind(entry)}")
        size, sha = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"'files.{name}.size' is not a byte count")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ValueError(f"'files.{name}.sha256' is not a sha256")


def validate(data: Any) -> dict[str, Any]:
    """``data`` if it is an msn manifest whose every field msn reads has its type.

    Raises ``ValueError`` naming the first field that does not.
    """
    if not isinstance(data, dict) or data.get("tool") != "msn":
        raise ValueError("not an msn manifest")
    _matches(data, (SCHEMA,), "manifest")
    _check_files(data.get("files", {}))
    return data


def read_manifest(folder: Path) -> dict[str, Any]:
    """The folder's manifest, every field msn reads checked (see :data:`SCHEMA`)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder", hint="give the folder msn convert wrote")
    if not os.path.lexists(path):
        raise FolderError(f"{folder} has no {MANIFEST}: it was not written by msn convert",
                          hint="convert the checkpoint with msn convert (msn verify can check a "
                               "folder from elsewhere with --source)")
    try:
        data = safeio.read_json(path)
    except safeio.UnsafeInput as e:
        raise FolderError(f"{path} cannot be read: {e}", hint=_DAMAGED) from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FolderError(f"{path} is not valid JSON ({e})", hint=_DAMAGED) from e
    except OSError as e:
        raise FolderError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return validate(data)
    except ValueError as e:
        what = str(e).replace("'manifest.", "'")
        if what == "not an msn manifest":
            raise FolderError(f"{path} is not an msn manifest", hint=_DAMAGED) from None
        raise FolderError(f"{path} is malformed: {what}", hint=_DAMAGED) from None


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    """Replace the manifest through a fresh temporary file: a link planted under the
    manifest's name, or under any temporary name, is replaced, never written through."""
    safeio.replace_file(folder / MANIFEST, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def regular_file_problem(path: Path) -> str | None:
    """None if ``path`` (links followed) is a regular file msn may read, else what it is:
    ``missing``, ``a named pipe, not a regular file`` ... (nothing is read, nothing blocks)."""
    try:
        with safeio.open_regular(path):
            return None
    except FileNotFoundError:
        return "missing"
    except safeio.UnsafeInput as e:
        return str(e).rsplit(" is ", 1)[-1]
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


def check_files(folder: Path, manifest: dict[str, Any] | None, progress: ProgressFn = no_progress,
                known_hashes: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """Compare every file the manifest lists with the file in ``folder`` (size, then sha256).

    One row per file: ``file``, ``expected_size``, ``expected_sha256``, ``ok``, and ``size``,
    ``sha256`` as found or ``problem``: ``missing``, ``points outside the folder`` (a link
    leaving it), ``a named pipe, not a regular file`` (and the like), ``size N, the manifest
    says M`` or ``sha256 differs from the manifest``. Only regular files inside ``folder`` are
    read. ``known_hashes``: sha256 values the caller computed from the files' bytes as read
    back a moment ago (not read again).
    """
    rows = []
    for name, want in ((manifest or {}).get("files") or {}).items():
        row: dict[str, Any] = {"file": name, "expected_size": want["size"],
                               "expected_sha256": want["sha256"]}
        rows.append(row)
        try:
            p = safeio.inside(folder, name)
        except safeio.UnsafeInput as e:
            outside = str(e).endswith("points outside the folder")
            row.update(ok=False, problem="points outside the folder" if outside else str(e))
            continue
        problem = regular_file_problem(p)
        if problem is not None:
            row.update(ok=False, problem=problem)
            continue
        size = p.stat().st_size
        row["size"] = size
        if size != want["size"]:
            row.update(ok=False, problem=f"size {size}, the manifest says {want['size']}")
            continue
        if known_hashes and name in known_hashes:
            digest = known_hashes[name]
        else:
            try:
                digest = sha256_file(p, progress, f"hashing {name}")
            except (OSError, safeio.UnsafeInput) as e:
                row.update(ok=False, problem=f"unreadable ({e})")
                continue
        row.update(sha256=digest, ok=digest == want["sha256"])
        if not row["ok"]:
            row["problem"] = "sha256 differs from the manifest"
    return rows
