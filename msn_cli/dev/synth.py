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
from typing import TYPE_CHECKING, Any, Literal

from msn_cli.original.architecture import Architecture
from msn_cli.original.variants import VARIANTS

if TYPE_CHECKING:
    import torch

Layout = Literal["released", "training"]

TINY = Architecture(hidden_size=64, num_layers=2, num_heads=1, intermediate_size=256,
                    patch_size=16, image_size=64)
"""The tests' smallest model: 64 wide, 2 blocks, 4x4 patches of 16 px (a few hundred kB).
Outside the original model family, so its heads (1) are assumed unless given."""

DEMO = Architecture(hidden_size=192, num_layers=2, num_heads=3, intermediate_size=768,
                    patch_size=16, image_size=64)
"""The demo's model: deit_tiny's width (so its 3 heads come from the original model family,
not from an assumption), 2 blocks, 4x4 patches of 16 px (a few MB)."""

PROJ_HIDDEN, PROJ_OUT, NUM_PROTOTYPES = 2048, 256, 1024


def arch_for(name: str) -> Architecture:
    """An architecture by variant name, or ``tiny``."""
    if name == "tiny":
        return TINY
    v = VARIANTS[name]
    return Architecture(v.hidden_size, v.num_layers, v.num_heads, v.intermediate_size,
                        v.patch_size, v.image_size)


def family_arch(hidden_size: int, num_layers: int = 2, patch_size: int = 16,
                image_size: int = 64, qkv_bias: bool = True) -> Architecture:
    """A network of the original model family at ``hidden_size`` (its heads, MLP ratio 4),
    at a reduced depth and image size so that test files stay small."""
    from msn_cli.original import family

    heads = family.heads_for_width(hidden_size)
    if heads is None:
        raise ValueError(f"no constructor of the original family is {hidden_size} wide")
    return Architecture(hidden_size, num_layers, heads, 4 * hidden_size, patch_size, image_size,
                        qkv_bias=qkv_bias)


def backbone_state(arch: Architecture, seed: int = 0, head: bool = True,
                   proj_hidden: int = PROJ_HIDDEN, proj_out: int = PROJ_OUT,
                   ) -> dict[str, torch.Tensor]:
    """An original-layout backbone state dict (no prefix), in the original key order."""
    import torch

    g = torch.Generator().manual_seed(seed)
    d, f, p, c = arch.hidden_size, arch.intermediate_size, arch.patch_size, arch.num_channels

    def w(*shape: int, fan_in: int) -> torch.Tensor:
        scale: float = fan_in ** -0.5
        return torch.randn(*shape, generator=g) * scale

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
        if arch.qkv_bias:
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
    moments: bool = True,
) -> dict[str, Any]:
    """A checkpoint dict as ``torch.save`` wrote it in the original code.

    ``moments=False``: the optimizer state without AdamW's moments (``state: {}``, which the
    original ``load_checkpoint`` accepts), to keep wide test files small.

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
    } if moments else {}
    groups = [{"params": list(range(len(params))), "lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8,
               "weight_decay": 0.04, "amsgrad": False, "WD_exclude": False, "LARS_exclude": False,
               "foreach": None, "maximize": False, "capturable": False, "differentiable": False,
               "fused": None}]
    return {"encoder": online, "target_encoder": target, "prototypes": prototypes,
            "opt": {"state": opt_state, "param_groups": groups},
            "epoch": 300, "loss": 2.4871, "batch_size": 1024, "world_size": 32, "lr": 0.001,
            "temperature": 0.1}


def write_checkpoint(path: str | os.PathLike[str], arch: Architecture,
                     layout: Layout = "released", **kwargs: Any) -> Path:
    """Write a synthetic checkpoint to ``path`` with ``torch.save`` (zip format) and return it."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(make_checkpoint(arch, layout, **kwargs), path)
    return path


def make_conv_stem_checkpoint(name: str = "vitc_4gf", seed: int = 0, num_layers: int | None = None,
                              image_size: int = 64) -> dict[str, Any]:
    """A released-layout file of a conv-stem constructor (``vitc_4gf``, ``deit_small_convstem``):
    ``patch_embed.stem.N.*`` (3x3 convolutions with BatchNorm, strides 2,2,2,2, then a 1x1
    convolution to the width) instead of ``patch_embed.proj.*``. The stem's channel counts are
    illustrative; what matters here is the layout."""
    import torch

    from msn_cli.original import family

    c = family.constructor(name)
    if c is None or not c.conv_stem:
        raise ValueError(f"{name} is not a conv-stem constructor")
    arch = Architecture(c.hidden_size, num_layers or c.depth, c.num_heads, c.intermediate_size,
                        16, image_size)
    sd = backbone_state(arch, seed=seed, head=False)
    del sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"]
    g = torch.Generator().manual_seed(seed + 7)
    stem: dict[str, torch.Tensor] = {}
    chans = [3, 24, 48, 96, 192]
    for j in range(4):
        i = 3 * j
        stem[f"patch_embed.stem.{i}.weight"] = torch.randn(chans[j + 1], chans[j], 3, 3, generator=g) * 0.1
        stem[f"patch_embed.stem.{i + 1}.weight"] = torch.ones(chans[j + 1])
        stem[f"patch_embed.stem.{i + 1}.bias"] = torch.zeros(chans[j + 1])
        stem[f"patch_embed.stem.{i + 1}.running_mean"] = torch.zeros(chans[j + 1])
        stem[f"patch_embed.stem.{i + 1}.running_var"] = torch.ones(chans[j + 1])
        stem[f"patch_embed.stem.{i + 1}.num_batches_tracked"] = torch.tensor(10)
    stem["patch_embed.stem.12.weight"] = torch.randn(c.hidden_size, chans[-1], 1, 1, generator=g) * 0.1
    stem["patch_embed.stem.12.bias"] = torch.zeros(c.hidden_size)
    ordered = {k: v for k, v in sd.items() if not k.startswith("blocks.")}
    ordered.update(stem)
    ordered.update({k: v for k, v in sd.items() if k.startswith("blocks.")})
    target = {"module." + k: v for k, v in ordered.items()}
    return {"target_encoder": target, "prototypes": torch.randn(64, 64, generator=g)}


def make_linear_eval_checkpoint(arch: Architecture, num_classes: int = 1000,
                                seed: int = 0) -> dict[str, Any]:
    """A file as MSN's ``linear_eval.py`` saves it: the backbone without its final LayerNorm
    (built with ``norm = None``) and without the projection head, plus ``classifier``
    (LayerNorm, then L2 normalisation, then ``linear``), ``opt`` and bookkeeping."""
    import torch

    sd = backbone_state(arch, seed=seed, head=False)
    del sd["norm.weight"], sd["norm.bias"]
    g = torch.Generator().manual_seed(seed + 11)
    d = arch.hidden_size
    classifier = {"module.norm.weight": torch.ones(d), "module.norm.bias": torch.zeros(d),
                  "module.linear.weight": torch.randn(num_classes, d, generator=g) * 0.01,
                  "module.linear.bias": torch.zeros(num_classes)}
    return {"target_encoder": {"module." + k: v for k, v in sd.items()}, "classifier": classifier,
            "opt": {"state": {}, "param_groups": [{"params": [0, 1, 2, 3], "lr": 6.4}]},
            "epoch": 100, "best_top1_acc": 75.7, "batch_size": 256, "lr": 6.4, "world_size": 8}


# -- a training run on disk ----------------------------------------------------------------------

def run_config(model_name: str = "deit_small", *, folder: str = "/checkpoint/msn_logs/",
               write_tag: str = "msn-experiment-1", **overrides: Any) -> dict[str, Any]:
    """A ``params-msn-train.yaml`` mapping with every key the original pre-training config has
    (including its local paths, which must never be published). ``overrides`` replace values by
    key, whatever section they sit in (``epochs=100``, ``num_proto=64``)."""
    cfg: dict[str, dict[str, Any]] = {
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


def write_run_config(folder: str | os.PathLike[str], config: dict[str, Any] | None = None,
                     **kwargs: Any) -> Path:
    """Write ``params-msn-train.yaml`` into ``folder`` as the original ``main.py`` dumps it
    (PyYAML's block style, keys sorted)."""
    import yaml

    from msn_cli.original.runconfig import CONFIG_NAME

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
                     config: bool = True, seed: int = 0, **config_overrides: Any) -> Path:
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
