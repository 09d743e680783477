"""Synthetic checkpoints in the exact original MSN layouts, for the demo, tests and benchmarks.

Random weights with the real key names, shapes, dtypes and nesting of the files Meta released
(``target_encoder`` + ``prototypes``, keys prefixed with ``module.``) and of the files the MSN
training code saves (``encoder``, ``target_encoder``, ``prototypes``, AdamW ``opt`` state and
bookkeeping numbers). The weights are scaled like a trained ViT's so activations stay in a
realistic range through every layer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .architecture import Architecture
from .variants import VARIANTS

if TYPE_CHECKING:
    import torch

Layout = Literal["released", "training"]

TINY = Architecture(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=256,
                    patch_size=16, image_size=64)
"""The demo's model: 64 wide, 2 blocks, 4x4 patches of 16 px (a few hundred kB)."""

PROJ_HIDDEN, PROJ_OUT, NUM_PROTOTYPES = 2048, 256, 1024


def arch_for(name: str) -> Architecture:
    """An architecture by variant name, or ``tiny``."""
    if name == "tiny":
        return TINY
    v = VARIANTS[name]
    return Architecture(v.hidden_size, v.num_layers, v.num_heads, v.intermediate_size,
                        v.patch_size, v.image_size)


def backbone_state(arch: Architecture, seed: int = 0, head: bool = True,
                   proj_hidden: int = PROJ_HIDDEN, proj_out: int = PROJ_OUT,
                   ) -> dict[str, torch.Tensor]:
    """An original-layout backbone state dict (no prefix), in the original key order."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d, f, p, c = arch.hidden_size, arch.intermediate_size, arch.patch_size, arch.num_channels

    def w(*shape: int, fan_in: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * (fan_in ** -0.5)

    def small(*shape: int, scale: float = 0.02) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    sd: dict[str, torch.Tensor] = {
        "cls_token": small(1, 1, d),
        "pos_embed": small(1, arch.num_patches + 1, d),
        "patch_embed.proj.weight": w(d, c, p, p, fan_in=c * p * p),
        "patch_embed.proj.bias": small(d),
    }
    for i in range(arch.num_layers):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"] = 1 + small(d, scale=0.1)
        sd[b + "norm1.bias"] = small(d)
        sd[b + "attn.qkv.weight"] = w(3 * d, d, fan_in=d)
        sd[b + "attn.qkv.bias"] = small(3 * d)
        sd[b + "attn.proj.weight"] = w(d, d, fan_in=d) * 0.5
        sd[b + "attn.proj.bias"] = small(d)
        sd[b + "norm2.weight"] = 1 + small(d, scale=0.1)
        sd[b + "norm2.bias"] = small(d)
        sd[b + "mlp.fc1.weight"] = w(f, d, fan_in=d)
        sd[b + "mlp.fc1.bias"] = small(f)
        sd[b + "mlp.fc2.weight"] = w(d, f, fan_in=f) * 0.5
        sd[b + "mlp.fc2.bias"] = small(d)
    sd["norm.weight"] = 1 + small(d, scale=0.1)
    sd["norm.bias"] = small(d)
    if head:
        dims = [(d, proj_hidden), (proj_hidden, proj_hidden), (proj_hidden, proj_out)]
        for j, (i_, o) in enumerate(dims, start=1):
            sd[f"fc.fc{j}.weight"] = w(o, i_, fan_in=i_)
            sd[f"fc.fc{j}.bias"] = small(o)
            if j < 3:
                sd[f"fc.bn{j}.weight"] = torch.ones(o)
                sd[f"fc.bn{j}.bias"] = torch.zeros(o)
                sd[f"fc.bn{j}.running_mean"] = small(o)
                sd[f"fc.bn{j}.running_var"] = torch.ones(o)
                sd[f"fc.bn{j}.num_batches_tracked"] = torch.tensor(1000, dtype=torch.long)
    return sd


def make_checkpoint(
    arch: Architecture,
    layout: Layout = "released",
    *,
    seed: int = 0,
    prefix: bool = True,
    dtype: str = "float32",
    head: bool = True,
    proj_hidden: int | None = None,
    proj_out: int | None = None,
    num_prototypes: int | None = None,
) -> dict:
    """A checkpoint dict as ``torch.save`` wrote it in the original code.

    Projection-head and prototype sizes default to the real ones (2048/256, 1024 prototypes)
    and shrink with the model for tiny architectures so test files stay small.
    """
    import torch

    small_model = arch.hidden_size < 256
    ph = proj_hidden or (4 * arch.hidden_size if small_model else PROJ_HIDDEN)
    po = proj_out or (arch.hidden_size if small_model else PROJ_OUT)
    npro = num_prototypes or (64 if small_model else NUM_PROTOTYPES)
    pre = "module." if prefix else ""
    tdt = getattr(torch, dtype)

    def encoder(s: int) -> dict[str, torch.Tensor]:
        sd = backbone_state(arch, seed=s, head=head, proj_hidden=ph, proj_out=po)
        return {pre + k: (v.to(tdt) if v.is_floating_point() else v) for k, v in sd.items()}

    g = torch.Generator().manual_seed(seed + 1000)
    prototypes = torch.randn(npro, po, generator=g).to(tdt)
    target = encoder(seed)
    if layout == "released":
        return {"target_encoder": target, "prototypes": prototypes}
    online = encoder(seed + 1)
    params = [v for v in online.values() if v.is_floating_point()] + [prototypes]
    opt_state = {
        i: {"step": torch.tensor(1000.0), "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.zeros_like(p)}
        for i, p in enumerate(params)
    }
    groups = [{"params": list(range(len(params))), "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
               "weight_decay": 0.04, "amsgrad": False, "WD_exclude": False, "LARS_exclude": False,
               "foreach": None, "maximize": False, "capturable": False, "differentiable": False,
               "fused": None}]
    return {"encoder": online, "target_encoder": target, "prototypes": prototypes,
            "opt": {"state": opt_state, "param_groups": groups},
            "epoch": 300, "loss": 2.4871, "batch_size": 1024, "world_size": 32, "lr": 0.001,
            "temperature": 0.1}


def write_checkpoint(path: str | os.PathLike[str], arch: Architecture,
                     layout: Layout = "released", **kwargs) -> Path:
    """Write a synthetic checkpoint to ``path`` with ``torch.save`` (zip format) and return it."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make_checkpoint(arch, layout, **kwargs), path)
    return path


# -- a training run on disk ----------------------------------------------------------------------

def run_config(model_name: str = "deit_small", *, folder: str = "/checkpoint/msn_logs/",
               write_tag: str = "msn-experiment-1", **overrides) -> dict:
    """A ``params-msn-train.yaml`` mapping with every key the original pre-training config has
    (including its local paths, which must never be published). ``overrides`` replace values by
    key, whatever section they sit in (``epochs=100``, ``num_proto=64``)."""
    cfg: dict = {
        "criterion": {"batch_size": 64, "ent_weight": 0.0, "final_sharpen": 0.25, "me_max": True,
                      "memax_weight": 1.0, "num_proto": 1024, "start_sharpen": 0.25,
                      "temperature": 0.1, "use_ent": True, "use_sinkhorn": True},
        "data": {"color_jitter_strength": 0.5, "focal_size": 96, "focal_views": 10,
                 "image_folder": "imagenet_full_size/061417/", "label_smoothing": 0.0,
                 "num_workers": 10, "patch_drop": 0.15, "pin_mem": True, "rand_size": 224,
                 "rand_views": 1, "root_path": "/datasets01/"},
        "logging": {"folder": folder, "write_tag": write_tag},
        "meta": {"bottleneck": 1, "copy_data": False, "drop_path_rate": 0.0, "hidden_dim": 2048,
                 "load_checkpoint": False, "model_name": model_name, "output_dim": 256,
                 "read_checkpoint": None, "use_bn": True, "use_fp16": False, "use_pred_head": False},
        "optimization": {"clip_grad": 3.0, "epochs": 800, "final_lr": 1.0e-06,
                         "final_weight_decay": 0.4, "lr": 0.001, "start_lr": 0.0002, "warmup": 15,
                         "weight_decay": 0.04},
    }
    for key, value in overrides.items():
        sections = [s for s in cfg.values() if key in s]
        if not sections:
            raise KeyError(f"no config key {key!r}")
        sections[0][key] = value
    return cfg


def write_run_config(folder: str | os.PathLike[str], config: dict | None = None, **kwargs) -> Path:
    """Write ``params-msn-train.yaml`` into ``folder`` as the original ``main.py`` dumps it
    (PyYAML's block style, keys sorted)."""
    import yaml

    from .runconfig import CONFIG_NAME

    path = Path(folder) / CONFIG_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config if config is not None else run_config(**kwargs)))
    return path


def run_loss(epoch: int) -> float:
    """The average loss the synthetic run stores at ``epoch`` (falls as training goes on)."""
    return round(8.0 / (1.0 + epoch / 10.0), 4)


def write_run_folder(folder: str | os.PathLike[str], arch: Architecture = TINY, *,
                     model_name: str = "deit_small", tag: str = "msn-experiment-1",
                     saved: tuple[int, ...] = (10, 25), epochs_done: int = 30, world_size: int = 1,
                     config: bool = True, seed: int = 0, **config_overrides) -> Path:
    """A training run's logging folder as the original code leaves it.

    ``{tag}-ep{N}.pth.tar`` for each N of ``saved`` (the training code stores epoch N - 1 in
    the file it names ``-ep{N}``), ``{tag}-latest.pth.tar`` at ``epochs_done``, each in the
    training layout with its own ``epoch`` and ``loss`` (:func:`run_loss`); keys prefixed with
    ``module.`` when ``world_size > 1``; and ``params-msn-train.yaml`` (unless ``config`` is
    False) naming ``model_name``, with its local paths pointing into ``folder``.
    """
    import torch

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if config:
        write_run_config(folder, run_config(model_name, folder=str(folder.resolve()), write_tag=tag,
                                            **config_overrides))
    ck = make_checkpoint(arch, "training", seed=seed, prefix=world_size > 1)
    ck["world_size"] = world_size
    ck["batch_size"] = config_overrides.get("batch_size", 64)
    ck["lr"] = config_overrides.get("lr", 0.001)
    files = [(f"{tag}-ep{n}.pth.tar", n - 1) for n in saved] + [(f"{tag}-latest.pth.tar", epochs_done)]
    for name, epoch in files:
        torch.save({**ck, "epoch": epoch, "loss": run_loss(epoch)}, folder / name)
    return folder
