"""What a Hugging Face model folder is, read from its JSON files only (``msn inspect FOLDER``).

msn's own output (``msn_manifest.json`` beside ``config.json``) says where it came from, how
each value was known and what the last ``msn verify`` found; a folder from elsewhere (a Hub
download) has only its ``config.json``. No weights are read: this is as fast on ViT-L as on a
tiny model, and a damaged weights file is ``msn verify``'s to find.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msn_cli.errors import FolderError
from msn_cli.hf.folder import SAFE_WEIGHTS, read_json_object
from msn_cli.hf.manifest import CONFIG, MANIFEST, Manifest, read_manifest

CONFIG_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "num_attention_heads",
               "intermediate_size", "patch_size", "image_size", "layer_norm_eps", "hidden_act",
               "qkv_bias", "torch_dtype", "dtype")
"""The values of config.json that describe the network (those present are shown)."""


def is_model_folder(path: Path) -> bool:
    """A folder with a ``config.json`` or an ``msn_manifest.json``: a model, not a training run."""
    return path.is_dir() and ((path / CONFIG).exists() or (path / MANIFEST).exists())


@dataclass
class FolderReport:
    folder: Path
    by_msn: bool
    """Written by ``msn convert`` (it has a manifest)."""
    config: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)
    provenance: list[dict[str, Any]] = field(default_factory=list)
    verify: dict[str, Any] | None = None
    files: dict[str, int] = field(default_factory=dict)

    def verify_words(self) -> str:
        """The last verify's outcome in a line."""
        if not self.by_msn:
            return "unknown: not written by msn convert (msn verify FOLDER --source CKPT checks it)"
        v = self.verify
        if not v:
            return "never verified (msn verify FOLDER)"
        outcome = "passed" if v.get("passed") is True else "FAILED"
        return f"{outcome} on {v.get('date') or '?'} (msn {v.get('msn_version') or '?'}): " \
               f"{v.get('summary') or ''}".rstrip(": ")

    def next_steps(self) -> list[str]:
        folder = str(self.folder)
        if not self.by_msn:
            return [f"msn verify {folder} --source CHECKPOINT compares it with the original",
                    f"msn export {folder} OUT.pth.tar goes back to the original training code"]
        steps = [f"msn verify {folder} checks it again"]
        if (self.verify or {}).get("passed") is True:
            steps.append(f"msn push {folder} ORG/NAME publishes it")
        return steps

    def to_dict(self) -> dict[str, Any]:
        return {"folder": str(self.folder), "kind": "converted folder" if self.by_msn else
                "Hugging Face model folder", "written_by_msn": self.by_msn, "config": self.config,
                "source": self.source, "provenance": self.provenance, "verify": self.verify,
                "files": self.files, "next": self.next_steps()}


def describe_folder(folder: Path) -> FolderReport:
    """Read ``folder``'s config.json and manifest; :class:`FolderError` when they cannot be."""
    config, why = read_json_object(folder / CONFIG)
    if config is None:
        raise FolderError(f"{folder}: {why}", hint="a model folder holds config.json and its "
                          "weights; msn convert writes one")
    manifest: Manifest | None = read_manifest(folder) if (folder / MANIFEST).exists() else None
    shown = {k: config[k] for k in CONFIG_KEYS if k in config}
    if manifest is None:
        sizes = {p.name: p.stat().st_size for p in [folder / SAFE_WEIGHTS] if p.is_file()}
        return FolderReport(folder, False, shown, files=sizes)
    source = {k: v for k, v in (manifest.get("source") or {}).items()
              if k in ("spec", "kind", "name", "url", "sha256", "layout", "encoder") and v}
    verify = manifest.get("verify")
    return FolderReport(
        folder, True, shown, source=source,
        provenance=[dict(p) for p in manifest.get("provenance") or []],
        verify={k: verify.get(k) for k in ("passed", "summary", "date", "msn_version")}
        if verify else None,
        files={name: entry["size"] for name, entry in manifest.get("files", {}).items()})
