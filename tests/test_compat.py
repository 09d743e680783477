"""The converted folder against the transformers that is installed (4.57 under ``make compat``, 5.x
under ``make test``): it loads with no missing, unexpected or mismatched key and no warning, computes
what the original network computes, and round-trips through ``save_pretrained``.

The reference forward pass below is written from the original architecture (msn-facts.md), on the
original key names, and shares no code with transformers or with msn_cli.
"""

from __future__ import annotations

import json
import logging
import os
import re
import warnings
from importlib.metadata import requires, version
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from packaging.requirements import Requirement
from packaging.version import Version
from safetensors import safe_open

from msn_cli.dev.synth import TINY
from tests.conftest import TINY_MULTIHEAD


def _declared(dist: str) -> Requirement:
    """The range msn-cli declares for ``dist`` (pyproject.toml, as installed)."""
    for d in requires("msn-cli") or []:
        req = Requirement(d)
        if req.name.lower().replace("-", "_") == dist and req.marker is None:
            return req
    raise AssertionError(f"{dist} is not declared in pyproject.toml")


def test_installed_transformers_and_hub_are_reported_and_in_the_declared_range():
    import huggingface_hub
    import transformers

    tf, hub = Version(transformers.__version__), Version(huggingface_hub.__version__)
    assert tf == Version(version("transformers")) and hub == Version(version("huggingface_hub"))
    assert tf in _declared("transformers").specifier, f"transformers {tf} is outside the declared range"
    assert hub in _declared("huggingface_hub").specifier, f"huggingface_hub {hub} is outside the range"
    # `make compat` says which line it means to test; a resolver that picked another one fails here
    expected = os.environ.get("MSN_EXPECT_TRANSFORMERS")
    if expected:
        assert f"{tf.major}.{tf.minor}" == expected, f"expected transformers {expected}.x, found {tf}"


def _original_state(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(path, map_location="cpu", weights_only=True)
    return {k.removeprefix("module."): v.float() for k, v in obj["target_encoder"].items()}


def _reference(sd: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> list[torch.Tensor]:
    """Embeddings, every block's output, and the final norm, as the original ViT computes them."""
    w = sd["patch_embed.proj.weight"]
    d, p = w.shape[0], w.shape[-1]
    t = F.conv2d(x, w, sd["patch_embed.proj.bias"], stride=p).flatten(2).transpose(1, 2)
    t = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), t], dim=1) + sd["pos_embed"]
    outs = [t]
    n_blocks = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(n_blocks):
        b = f"blocks.{i}."
        bsz, n, _ = t.shape
        h = F.layer_norm(t, (d,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
        qkv = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
        q, k, v = qkv.reshape(bsz, n, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (d // heads) ** -0.5).softmax(dim=-1)
        o = (attn @ v).transpose(1, 2).reshape(bsz, n, d)
        t = t + F.linear(o, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
        h = F.layer_norm(t, (d,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
        h = F.gelu(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
        t = t + F.linear(h, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
        outs.append(t)
    outs.append(F.layer_norm(t, (d,), sd["norm.weight"], sd["norm.bias"], 1e-6))
    return outs


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(f"{record.name}: {record.getMessage()}")


def _load_quietly(folder: Path, **kwargs):
    """``ViTMSNModel.from_pretrained`` with its loading report, and every warning it raised."""
    from transformers import AutoConfig, ViTMSNModel

    handler = _Records()
    logger = logging.getLogger("transformers")
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            config = AutoConfig.from_pretrained(folder)
            model, info = ViTMSNModel.from_pretrained(folder, output_loading_info=True, **kwargs)
    finally:
        logger.removeHandler(handler)
    said = handler.records + [f"{w.category.__name__}: {w.message}" for w in caught
                              if "transformers" in w.filename or "huggingface_hub" in w.filename]
    return config, model, info, said


@pytest.mark.parametrize("arch", [TINY, TINY_MULTIHEAD], ids=["tiny", "multihead"])
def test_converted_folder_loads_cleanly_and_matches_the_original(cli, make_ckpt, tmp_path, arch):
    ck = make_ckpt(arch, "released", prefix=True)
    out = tmp_path / "out"
    r = cli("convert", ck, out, "--no-verify", "--num-heads", arch.num_heads)
    assert r.code == 0, r.stderr

    config, model, info, said = _load_quietly(out)
    assert type(config).__name__ == "ViTMSNConfig"
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads,
            config.patch_size, config.image_size) == (arch.hidden_size, arch.num_layers,
                                                      arch.num_heads, arch.patch_size, arch.image_size)
    assert not list(info["missing_keys"]), info
    assert not list(info["unexpected_keys"]), info
    assert not list(info["mismatched_keys"]), info
    assert not info["error_msgs"], info
    assert said == [], said

    x = torch.randn(2, arch.num_channels, arch.image_size, arch.image_size,
                    generator=torch.Generator().manual_seed(7))
    model.eval()
    with torch.no_grad():
        got = model(pixel_values=x, output_hidden_states=True)
        want = _reference(_original_state(ck), x, arch.num_heads)
    ours = [*got.hidden_states, got.last_hidden_state]
    assert len(ours) == len(want) == arch.num_layers + 2
    for i, (a, b) in enumerate(zip(ours, want, strict=True)):
        assert a.shape == b.shape, i
        scale = max(1.0, float(b.abs().max()))
        assert float((a - b).abs().max()) <= 1e-4 * scale, f"output {i} differs"


def test_half_precision_folder_keeps_its_dtype_and_round_trips(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify", "--dtype", "bfloat16").code == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dtype"] == cfg["torch_dtype"] == "bfloat16"

    config, model, _, said = _load_quietly(out, dtype="auto")
    assert said == [], said
    assert str(config.dtype).removeprefix("torch.") == "bfloat16"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        ours = {k: f.get_tensor(k) for k in f.keys()}
    saved = tmp_path / "resaved"
    model.save_pretrained(saved)
    with safe_open(str(saved / "model.safetensors"), framework="pt") as f:
        theirs = {k: f.get_tensor(k) for k in f.keys()}
    # save_pretrained writes the canonical on-disk names in 4.x and 5.x alike: the same as ours
    assert sorted(theirs) == sorted(ours)
    for k, v in ours.items():
        assert theirs[k].dtype == v.dtype and torch.equal(theirs[k], v), k
    assert re.fullmatch(r"\d+\.\d+.*", json.loads((saved / "config.json").read_text())
                        .get("transformers_version", ""))
