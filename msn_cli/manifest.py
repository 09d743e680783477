"""``msn_manifest.json``: what a converted folder is, where it came from, and how it checked out.

Written by ``convert`` into the folder; read by ``verify`` (to find the source and check the
files) and ``push`` (to refuse an unverified folder and to fill the model card).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import FolderError
from .hashing import sha256_file

MANIFEST = "msn_manifest.json"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
FORMAT_VERSION = 1


_DAMAGED = "the manifest is damaged; convert the checkpoint again"


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder", hint="give the folder msn convert wrote")
    if not path.is_file():
        raise FolderError(f"{folder} has no {MANIFEST}: it was not written by msn convert",
                          hint="convert the checkpoint with msn convert (msn verify can check a "
                               "folder from elsewhere with --source)")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise FolderError(f"{path} is not valid JSON ({e})", hint=_DAMAGED) from e
    if not isinstance(data, dict) or data.get("tool") != "msn":
        raise FolderError(f"{path} is not an msn manifest", hint=_DAMAGED)
    if not isinstance(data.get("files", {}), dict):
        raise FolderError(f"{path} has no valid file table", hint=_DAMAGED)
    return data


def write_manifest(folder: Path, data: dict[str, Any]) -> None:
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    tmp.replace(folder / MANIFEST)


def check_files(folder: Path, manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """Compare every file the manifest lists with the file on disk (size, then sha256)."""
    rows = []
    for name, want in manifest.get("files", {}).items():
        p = folder / name
        row: dict[str, Any] = {"file": name, "expected_sha256": want.get("sha256"),
                               "expected_size": want.get("size")}
        if not p.is_file():
            row.update(ok=False, problem="missing")
        elif p.stat().st_size != want.get("size"):
            row.update(ok=False, size=p.stat().st_size,
                       problem=f"size {p.stat().st_size}, expected {want.get('size')}")
        else:
            digest = sha256_file(p)
            row.update(ok=digest == want.get("sha256"), sha256=digest, size=p.stat().st_size)
            if not row["ok"]:
                row["problem"] = "sha256 differs"
        rows.append(row)
    return rows
