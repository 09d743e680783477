"""The network whose features a low-shot evaluation scores, from whatever the user names.

- a converted folder (or a Hub repo id, fetched with its JSON and safetensors files only):
  ``ViTMSNModel`` with ``output_hidden_states``, and the folder's own image processor
  (``AutoImageProcessor``, ``trust_remote_code=False``);
- anything ``msn convert`` takes as a source (a checkpoint file, a released name, a URL, an
  entry of ``msn cache ls``): msn's independent reference network
  (:mod:`msn_cli.original.reference`) and MSN's evaluation transform
  (:mod:`msn_cli.original.preprocess`), so the two can be compared.

Either way the feature is what the original ``logistic_eval.py`` takes,
``forward_blocks(x, num_blocks=1)``: the cls token as the last block leaves it, before the
final LayerNorm (``hidden_states[-1][:, 0]`` of a folder, ``blocks[-1][:, 0]`` of the
reference).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from msn_cli.errors import FolderError, UsageError
from msn_cli.fewshot.store import FEATURE_DEFINITION
from msn_cli.hf.folder import code_references, config_architecture, read_json_object, weights_files
from msn_cli.hf.quiet import quiet_transformers
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.hub_fetch import clearly_repo_id
from msn_cli.util.hashing import sha256_file

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL import Image

NOT_MSN_HINT = ("give a folder msn convert wrote, a Hub id such as facebook/vit-msn-small, or an "
                "original checkpoint (file, released name such as vits16, or URL)")


@dataclass
class FeatureModel:
    """A network ready to turn pixels into features, and what identifies it."""

    spec: str
    kind: str
    """``folder``, ``hub`` or ``checkpoint``."""
    key: str
    """sha256 over the model's files and the feature definition: the feature cache's key."""
    width: int
    image_size: int
    transform: Callable[[Image.Image], np.ndarray]
    """PIL image -> 3 x s x s float32 (called from worker threads)."""
    forward: Callable[[torch.Tensor], torch.Tensor]
    """B x 3 x s x s -> B x width, the pre-norm cls token."""
    device: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"spec": self.spec, "kind": self.kind, "key": self.key, "width": self.width,
                "image_size": self.image_size, "device": self.device}


def check_device(device: str) -> str:
    if device not in ("cpu", "cuda"):
        raise UsageError(f"unknown device '{device}'", hint="choose cpu or cuda")
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device is available here",
                             hint="run on a machine with a GPU, or use --device cpu")
    return device


def load_model(spec: str, *, device: str = "cpu", cache_dir: str | None = None,
               base_url: str | None = None, num_heads: int | None = None,
               progress: ProgressFn = no_progress) -> FeatureModel:
    """The :class:`FeatureModel` ``spec`` names (see the module docstring)."""
    check_device(device)
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_folder(path, spec, "folder", device)
    if clearly_repo_id(spec):
        return load_folder(fetch_hub(spec, progress), spec, "hub", device)
    return load_checkpoint_model(spec, device=device, cache_dir=cache_dir, base_url=base_url,
                                 num_heads=num_heads, progress=progress)


def fetch_hub(spec: str, progress: ProgressFn) -> Path:
    """The config, the safetensors weights and the processor config only, each size-capped:
    nothing a folder could run, no pickled weights (:mod:`msn_cli.transfer.hub_fetch`)."""
    from msn_cli.transfer.hub_fetch import fetch_model_folder

    return fetch_model_folder(spec, extra_json=("preprocessor_config.json",), progress=progress,
                              hint="check the repo id and your connection (HF_HUB_OFFLINE=1 "
                                   "uses only what is cached)")


def _folder_key(folder: Path, weights: list[Path]) -> str:
    h = hashlib.sha256(FEATURE_DEFINITION.encode())
    for name in ("config.json", "preprocessor_config.json"):
        h.update(hashlib.sha256((folder / name).read_bytes()).digest())
    for w in weights:
        h.update(bytes.fromhex(sha256_file(w)))
    return h.hexdigest()


def load_folder(folder: Path, spec: str, kind: str, device: str) -> FeatureModel:
    """A converted folder's model and its own processor."""
    import torch
    from transformers import AutoImageProcessor, ViTMSNModel

    config, why = read_json_object(folder / "config.json")
    if config is None:
        raise FolderError(f"{folder} is not an MSN model: {why}", hint=NOT_MSN_HINT)
    if config.get("model_type") != "vit_msn":
        raise FolderError(f"{folder} is not an MSN model: config.json has model_type "
                          f"{str(config.get('model_type'))[:40]!r}, not 'vit_msn'", hint=NOT_MSN_HINT)
    arch = config_architecture(config)
    weights, _ = weights_files(folder)
    if any(w.suffix != ".safetensors" for w in weights):
        raise FolderError(f"{folder} holds pickled weights ({weights[0].name}); msn reads "
                          "safetensors only", hint="save the model with safetensors")
    processor_config, why = read_json_object(folder / "preprocessor_config.json")
    if processor_config is None:
        raise FolderError(f"{folder} has no usable image processor: {why}",
                          hint="msn convert writes preprocessor_config.json beside the weights")
    code = code_references(folder)  # transformers never sees a folder that names code
    if code:
        raise FolderError(f"{folder} names code to run ({'; '.join(code[:5])}), which msn never runs",
                          hint=NOT_MSN_HINT)
    try:
        with quiet_transformers():
            processor = AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=False)
            model: Any = ViTMSNModel.from_pretrained(str(folder), use_safetensors=True,
                                                     dtype=torch.float32, trust_remote_code=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise FolderError(f"{folder} cannot be loaded: {first}", hint=NOT_MSN_HINT) from e
    model.eval().to(device)

    def transform(image: Image.Image) -> np.ndarray:
        pixels: np.ndarray = processor(images=image, return_tensors="np")["pixel_values"][0]
        return pixels.astype("float32", copy=False)

    def forward(x: torch.Tensor) -> torch.Tensor:
        out = model(pixel_values=x, output_hidden_states=True)
        cls: torch.Tensor = out.hidden_states[-1][:, 0]
        return cls

    return FeatureModel(spec, kind, _folder_key(folder, weights), arch.hidden_size,
                        arch.image_size, transform, forward, device)


def load_checkpoint_model(spec: str, *, device: str, cache_dir: str | None, base_url: str | None,
                          num_heads: int | None, progress: ProgressFn) -> FeatureModel:
    """An original checkpoint through msn's reference network and MSN's evaluation transform."""
    from msn_cli.conversion.provenance import assumed, run_context
    from msn_cli.original.backbone import infer_architecture
    from msn_cli.original.checkpoint import import_torch, load_checkpoint
    from msn_cli.original.preprocess import msn_eval_transform
    from msn_cli.original.reference import build_reference
    from msn_cli.transfer.sources import resolve_source

    source = resolve_source(spec, cache_dir=cache_dir, base_url=base_url, progress=progress)
    if source.path.is_dir():
        raise FolderError(f"{source.path} is not an MSN model folder or checkpoint", hint=NOT_MSN_HINT)
    import_torch()
    ckpt = load_checkpoint(source.path, "target")
    known, _ = run_context(source.path, None, num_heads)
    inferred = infer_architecture(ckpt.state, known=known)
    arch = inferred.arch
    reference = build_reference(ckpt.state, num_heads=arch.num_heads).to(device)
    notes = [p.warning() for p in assumed(inferred.provenance)]
    digest = source.sha256 or sha256_file(source.path, progress, "hashing source")
    key = hashlib.sha256(f"{FEATURE_DEFINITION}|checkpoint|{digest}|target|heads {arch.num_heads}"
                         f"|transform msn {arch.image_size}".encode()).hexdigest()
    size = arch.image_size

    def transform(image: Image.Image) -> np.ndarray:
        return msn_eval_transform(image, size)

    def forward(x: torch.Tensor) -> torch.Tensor:
        block: torch.Tensor = reference(x).blocks[-1][:, 0]
        return block

    return FeatureModel(spec, "checkpoint", key, arch.hidden_size, size, transform, forward,
                        device, notes)
