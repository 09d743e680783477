"""The seed-equivalent conversion, rebuilt from the issue's description for the benchmark.

What the seed (transformers' ``convert_msn_to_pytorch.py``) does, step by step, and what this
script does in its place:

1. picks the config from the checkpoint's *name* ("s16", "l16", "b4", "l7", else the base
   defaults), sets ``num_labels=1000`` with an ImageNet id2label downloaded from the Hub, and
   ``hidden_dropout_prob=0.1`` for the large models. Here: the same choices by name; the label
   file is not downloaded (no network), 1000 generic labels of the same shape stand in.
2. builds a randomly initialised ``ViTMSNModel(config)``.
3. loads the *whole* file (``torch.load``, no memory map; ``weights_only=True`` as torch >= 2.6
   does by default) and takes ``target_encoder``.
4. pops the projection head, renames the keys to the canonical Hugging Face names and splits
   the fused qkv into query/key/value slices, exactly as the seed's tables do.
5. ``load_state_dict`` (strict). **Adaptation for transformers 5.x:** 5.x renamed the in-memory
   parameters (``layers.i.attention.q_proj``, ``layers.i.mlp.fc1``, ...), so the seed's strict
   load fails there (missing/unexpected keys). The canonical names are passed through
   :data:`TO_5X`, a rename table written here after the one transformers itself applies to
   ``ViTModel`` checkpoints when loading (``conversion_mapping.py``); on 4.x it is skipped.
   ``save_pretrained`` writes the canonical names back, so the output keys equal msn's.
6. the seed's check: ``eval()``, one forward pass on one 224 px image through
   ``ViTImageProcessor`` with ImageNet statistics, and a look at ``last_hidden_state[0, 0, :3]``.
   The COCO image cannot be downloaded here: a deterministic synthetic image of the same size
   (640x480) stands in; there are no expected numbers for random weights, so the three numbers
   are printed, not compared. ``--no-check`` skips this step.
7. ``model.save_pretrained(out)`` and ``image_processor.save_pretrained(out)``.

Stage timings (perf_counter) are written as JSON to ``--stages`` when given.

Usage: python bench/baseline.py FILE OUT [--no-check] [--stages PATH] [--arch D,L,H,F,P,S]

``--arch`` (hidden, layers, heads, MLP, patch, image size) replaces the name-based choice, for
the test suite's tiny models, which no released name describes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL import Image

# Canonical (4.x / on-disk) name -> transformers 5.x in-memory name, in order.
TO_5X: list[tuple[str, str]] = [
    (r"encoder\.layer\.", "layers."),
    (r"attention\.attention\.query", "attention.q_proj"),
    (r"attention\.attention\.key", "attention.k_proj"),
    (r"attention\.attention\.value", "attention.v_proj"),
    (r"attention\.output\.dense", "attention.o_proj"),
    (r"intermediate\.dense", "mlp.fc1"),
    (r"output\.dense", "mlp.fc2"),
]

PROJECTION_HEAD = [f"module.fc.{m}.{p}" for m in ("fc1", "fc2", "fc3") for p in ("weight", "bias")] + [
    f"module.fc.{m}.{p}" for m in ("bn1", "bn2")
    for p in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]


def config_for(name: str) -> Any:
    from transformers import ViTMSNConfig

    config = ViTMSNConfig()
    config.num_labels = 1000
    config.id2label = {i: f"class_{i}" for i in range(1000)}
    config.label2id = {v: k for k, v in config.id2label.items()}
    if "s16" in name:
        config.hidden_size, config.intermediate_size, config.num_attention_heads = 384, 1536, 6
    elif "l16" in name:
        config.hidden_size, config.intermediate_size = 1024, 4096
        config.num_hidden_layers, config.num_attention_heads = 24, 16
        config.hidden_dropout_prob = 0.1
    elif "b4" in name:
        config.patch_size = 4
    elif "l7" in name:
        config.patch_size = 7
        config.hidden_size, config.intermediate_size = 1024, 4096
        config.num_hidden_layers, config.num_attention_heads = 24, 16
        config.hidden_dropout_prob = 0.1
    return config


def rename_keys(num_layers: int) -> list[tuple[str, str]]:
    """The seed's rename table for the bare backbone (base_model=True)."""
    pairs = []
    for i in range(num_layers):
        s, d = f"module.blocks.{i}.", f"encoder.layer.{i}."
        pairs += [(s + "norm1.weight", d + "layernorm_before.weight"),
                  (s + "norm1.bias", d + "layernorm_before.bias"),
                  (s + "attn.proj.weight", d + "attention.output.dense.weight"),
                  (s + "attn.proj.bias", d + "attention.output.dense.bias"),
                  (s + "norm2.weight", d + "layernorm_after.weight"),
                  (s + "norm2.bias", d + "layernorm_after.bias"),
                  (s + "mlp.fc1.weight", d + "intermediate.dense.weight"),
                  (s + "mlp.fc1.bias", d + "intermediate.dense.bias"),
                  (s + "mlp.fc2.weight", d + "output.dense.weight"),
                  (s + "mlp.fc2.bias", d + "output.dense.bias")]
    pairs += [("module.cls_token", "embeddings.cls_token"),
              ("module.patch_embed.proj.weight", "embeddings.patch_embeddings.projection.weight"),
              ("module.patch_embed.proj.bias", "embeddings.patch_embeddings.projection.bias"),
              ("module.pos_embed", "embeddings.position_embeddings"),
              ("module.norm.weight", "layernorm.weight"),
              ("module.norm.bias", "layernorm.bias")]
    return pairs


def split_qkv(sd: dict[str, torch.Tensor], num_layers: int, d: int) -> None:
    """The seed's qkv split: row slices (views) of the fused projection."""
    for i in range(num_layers):
        w = sd.pop(f"module.blocks.{i}.attn.qkv.weight")
        b = sd.pop(f"module.blocks.{i}.attn.qkv.bias")
        p = f"encoder.layer.{i}.attention.attention."
        sd[p + "query.weight"], sd[p + "query.bias"] = w[:d, :], b[:d]
        sd[p + "key.weight"], sd[p + "key.bias"] = w[d:2 * d, :], b[d:2 * d]
        sd[p + "value.weight"], sd[p + "value.bias"] = w[-d:, :], b[-d:]


def to_model_names(sd: dict[str, torch.Tensor], model: Any) -> dict[str, torch.Tensor]:
    """Canonical names -> this transformers' in-memory names (identity on 4.x)."""
    want = set(model.state_dict())
    if set(sd) == want:
        return sd
    out = {}
    for k, v in sd.items():
        for pat, rep in TO_5X:
            k = re.sub(pat, rep, k)
        out[k] = v
    return out


def synthetic_image() -> Image.Image:
    """A deterministic 640x480 RGB picture standing in for the COCO image."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:480, 0:640]
    rgb = np.stack([(x * 255 // 639), (y * 255 // 479), ((x + y) * 255 // 1118)], axis=-1)
    return Image.fromarray(rgb.astype("uint8"), "RGB")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("file")
    ap.add_argument("out")
    ap.add_argument("--no-check", action="store_true", help="skip the seed's forward-pass check")
    ap.add_argument("--stages", help="write stage timings (JSON) here")
    ap.add_argument("--arch", help="hidden,layers,heads,mlp,patch,image: overrides the name")
    args = ap.parse_args(argv)

    stages: dict[str, float] = {}
    t = time.perf_counter()

    def mark(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        stages[name] = round(now - t, 4)
        t = now

    import torch
    from transformers import ViTImageProcessor, ViTMSNModel
    from transformers.utils.constants import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

    torch.set_grad_enabled(False)
    mark("import")
    config = config_for(Path(args.file).name)
    if args.arch:
        d, n, h, f, p, s = (int(x) for x in args.arch.split(","))
        config.hidden_size, config.num_hidden_layers, config.num_attention_heads = d, n, h
        config.intermediate_size, config.patch_size, config.image_size = f, p, s
    model = ViTMSNModel(config)
    mark("build_model")
    state_dict = torch.load(args.file, map_location="cpu", weights_only=True)["target_encoder"]
    mark("load")
    for k in PROJECTION_HEAD:
        state_dict.pop(k, None)
    for src, dest in rename_keys(config.num_hidden_layers):
        state_dict[dest] = state_dict.pop(src)
    split_qkv(state_dict, config.num_hidden_layers, config.hidden_size)
    state_dict = to_model_names(state_dict, model)
    model.load_state_dict(state_dict)  # strict, as the seed
    model.eval()  # type: ignore[no-untyped-call]
    mark("load_state_dict")
    image_processor = ViTImageProcessor(size=config.image_size, image_mean=IMAGENET_DEFAULT_MEAN,
                                        image_std=IMAGENET_DEFAULT_STD)
    if not args.no_check:
        inputs = image_processor(images=synthetic_image(), return_tensors="pt")
        torch.manual_seed(2)
        out = model(**inputs).last_hidden_state
        print("last_hidden_state[0, 0, :3] =", [round(float(v), 4) for v in out[0, 0, :3]])
        mark("forward_check")
    model.save_pretrained(args.out)
    image_processor.save_pretrained(args.out)
    mark("save")
    if args.stages:
        Path(args.stages).write_text(json.dumps(stages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
