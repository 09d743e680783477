"""A ``ViTMSNModel`` folder as the export's source: read through the inverse of
:data:`msn_cli.conversion.mapping.RULES` (qkv rows joined), from a local path or a Hub repo id."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.conversion import mapping
from msn_cli.conversion.export.backbone import Backbone, ExportTensor, SourceNetworks
from msn_cli.errors import CheckpointError, ConfigError, FolderError, MappingError, UsageError
from msn_cli.hf.dtypes import ST_DTYPES
from msn_cli.hf.folder import BIN_WEIGHTS, config_architecture, weights_files
from msn_cli.hf.safetensors_io import read_header
from msn_cli.original.checkpoint import Encoder
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.sources import ResolvedSource
from msn_cli.util.safeio import read_json

if TYPE_CHECKING:
    import torch

_FROM_ST = {v: k for k, v in ST_DTYPES.items()}


class ModelFolder:
    """A ``ViTMSNModel`` folder: ``config.json`` and ``*.safetensors``; tensors read when asked."""

    def __init__(self, path: Path):
        self.path = path
        self.config = _read_config(path)
        try:  # typed and bounded, like verify's reader
            self.arch = config_architecture(self.config)
        except ConfigError as e:
            raise FolderError(f"{path / 'config.json'}: {e}") from e
        # exactly the files from_pretrained would load, never a glob (a decoy file is ignored)
        files, weight_map = weights_files(path)
        if files[0].name == BIN_WEIGHTS:
            raise FolderError(f"{path} holds only {BIN_WEIGHTS} weights",
                              hint="only safetensors weights are read (never pickles)")
        self.where: dict[str, tuple[Path, str, tuple[int, ...]]] = {}
        for f in files:
            self._add_file(f, weight_map)
        keys = list(self.where)
        # a ViTMSNForImageClassification save: backbone under vit., a classifier beside it
        self.prefix = "vit." if keys and all(k.startswith(("vit.", "classifier.")) for k in keys) \
            else ""
        self.where_bare = {k.removeprefix(self.prefix) for k in keys if k.startswith(self.prefix)}
        """The keys of the model itself (without ``vit.``)."""
        self._handles: dict[Path, Any] = {}

    def _add_file(self, f: Path, weight_map: dict[str, str] | None) -> None:
        """Record where each tensor of the weights file ``f`` lies, with its dtype and shape."""
        try:
            header = read_header(f)
        except (OSError, ValueError) as e:
            raise FolderError(f"{f.name} is not a readable safetensors file ({e})") from e
        header.pop("__metadata__", None)
        for k, v in header.items():
            try:
                dtype = _FROM_ST[v["dtype"]]
                shape = tuple(int(s) for s in v["shape"])
            except (KeyError, TypeError, ValueError) as e:
                raise FolderError(f"{f.name}: the header entry of {k} is malformed") from e
            if k in self.where or (weight_map is not None and weight_map.get(k) != f.name):
                raise FolderError(f"{f.name} holds {k}, which the folder stores elsewhere too "
                                  "or its index puts in another file")
            self.where[k] = (f, dtype, shape)

    def get(self, key: str) -> torch.Tensor:
        from safetensors import safe_open

        f = self.where[self.prefix + key][0]
        if f not in self._handles:
            try:
                self._handles[f] = safe_open(str(f), framework="pt")
            except Exception as e:
                raise FolderError(f"cannot read {f}: {e}") from e
        tensor: torch.Tensor = self._handles[f].get_tensor(self.prefix + key)
        return tensor

    def joined(self, keys: tuple[str, ...]) -> torch.Tensor:
        """The tensors of ``keys`` concatenated by rows (the fused qkv from its three parts)."""
        import torch

        return torch.cat([self.get(k) for k in keys], 0)


def _read_config(path: Path) -> dict[str, Any]:
    """``config.json`` of a ``vit_msn`` model, read as untrusted input (capped, regular file)."""
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FolderError(f"{path} has no config.json: not a Hugging Face model folder",
                          hint="give a folder written by msn convert or downloaded from the Hub")
    try:
        config = read_json(cfg_path)
    except (OSError, ValueError) as e:  # UnsafeInput, UnicodeDecodeError, JSON and int errors
        raise FolderError(f"cannot read {cfg_path}: {e}") from e
    if not isinstance(config, dict):
        raise FolderError(f"{cfg_path} is not a JSON object")
    model_type = config.get("model_type")
    if model_type != "vit_msn":
        raise FolderError(f"{path} holds a '{model_type}' model, not a ViTMSNModel (vit_msn)",
                          hint="msn export takes folders of ViTMSNModel")
    return config


def _original_tensor(folder: ModelFolder, src: str, targets: tuple[str, ...],
                     rule: mapping.Rule) -> ExportTensor | str:
    """The original tensor ``src`` rebuilt from its Hugging Face ``targets``, or the problem."""
    missing = [t for t in targets if t not in folder.where_bare]
    if missing:
        return f"missing '{folder.prefix}{missing[0]}' (for {src})"
    parts = [folder.where[folder.prefix + t] for t in targets]
    dts = {p[1] for p in parts}
    dtype = dts.pop() if len(dts) == 1 else "mixed"
    if rule.action == "split_qkv":
        shape = (sum(p[2][0] for p in parts), *parts[0][2][1:])
        origin = "joined from " + ", ".join(folder.prefix + t for t in targets)
        produce: Callable[[], torch.Tensor] = functools.partial(folder.joined, targets)
    else:
        shape = parts[0][2]
        origin = f"from {folder.prefix}{targets[0]}"
        produce = functools.partial(folder.get, targets[0])
    want = rule.shape(folder.arch) if rule.shape is not None else shape
    if shape != want or dtype == "mixed":
        return (f"'{src}' would have shape {list(shape)} ({dtype}), expected {list(want)} for "
                "the config's architecture")
    return ExportTensor("target_encoder", src, origin, shape, dtype, produce)


def backbone_from_folder(folder: ModelFolder) -> tuple[Backbone, list[str]]:
    """The backbone rebuilt from a folder through :func:`mapping.inverse`; notes for the user."""
    arch = folder.arch
    used: set[str] = set()
    problems: list[str] = []
    tensors: list[ExportTensor] = []
    for src, targets, rule in mapping.inverse(arch):
        got = _original_tensor(folder, src, targets, rule)
        if isinstance(got, str):
            problems.append(got)
            continue
        used.update(targets)
        tensors.append(got)
    have = folder.where_bare
    problems += [f"'{folder.prefix}{k}' maps to no original key" for k in sorted(have - used)
                 if not k.startswith("classifier.")]
    notes = []
    if any(k.startswith("classifier.") for k in have):
        notes.append("the folder's classifier (classifier.*) has no place in an MSN checkpoint "
                     "and is left out")
    if problems:
        n = len(problems)
        raise MappingError(f"{folder.path} does not map back onto the original model ({n} problem"
                           f"{'s' if n > 1 else ''}): " + "; ".join(problems[:6])
                           + (f"; and {n - 6} more" if n > 6 else ""), problems)
    from msn_cli.original.variants import match_variant

    v = match_variant(arch.hidden_size, arch.num_layers, arch.patch_size, arch.intermediate_size,
                      arch.image_size)
    dtypes = {t.dtype for t in tensors}
    dtype = dtypes.pop() if len(dtypes) == 1 else "mixed"
    return Backbone(arch, v.name if v else None, tensors, dtype), notes


def networks_from_folder(path: Path, encoder: Encoder, num_heads: int | None,
                         src_info: dict[str, Any], notes: list[str]) -> SourceNetworks:
    """What a folder gives the export: its backbone, without a head or an online network."""
    if encoder == "online":
        raise CheckpointError(f"{path} is a model folder: it has one network, not an online "
                              "encoder", hint="--encoder online needs a training checkpoint")
    folder = ModelFolder(path)
    backbone, more = backbone_from_folder(folder)
    notes += more
    src_info.update(layout="folder", config_heads=folder.arch.num_heads)
    if num_heads is not None and num_heads != folder.arch.num_heads:
        raise UsageError(f"--num-heads {num_heads} disagrees with the folder's config.json "
                         f"({folder.arch.num_heads} heads)",
                         hint="a folder carries its heads in config.json; drop --num-heads")
    return SourceNetworks(backbone, None, "a copy of target_encoder (the folder's backbone)")


def resolve_export_source(spec: str, *, cache_dir: str | os.PathLike[str] | None = None,
                          base_url: str | None = None, progress: ProgressFn = no_progress,
                          notify: Callable[[str], None] | None = None) -> ResolvedSource:
    """What ``msn export`` reads: like :func:`msn_cli.transfer.sources.resolve_source` (a
    released name, a file, a URL, a folder), and a Hub repo id (``owner/name``), fetched
    with only its config.json and safetensors weights (never a pickle), each size-capped, into
    the Hugging Face cache (:mod:`msn_cli.transfer.hub_fetch`)."""
    from msn_cli.transfer.hub_fetch import clearly_repo_id
    from msn_cli.transfer.sources import resolve_source

    if not clearly_repo_id(spec):
        return resolve_source(spec, cache_dir=cache_dir, base_url=base_url, progress=progress,
                              notify=notify)
    from msn_cli.transfer.hub_fetch import fetch_model_folder

    path = fetch_model_folder(spec, progress=progress,
                              hint="check the repo id and your connection, or give a local path "
                                   "(HF_HUB_OFFLINE=1 uses only what is cached)")
    return ResolvedSource(spec, "path", Path(path))
