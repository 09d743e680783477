"""The independent reference ViT: strict original-name loading, agreement with the converted
model on good conversions, disagreement on broken ones, the original interpolation rule."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from msn_cli.dev.synth import TINY, backbone_state
from msn_cli.errors import CheckpointError
from msn_cli.original.architecture import Architecture
from msn_cli.original.checkpoint import load_checkpoint
from msn_cli.original.reference import (
    build_reference,
    original_grid_after_interpolation,
    other_grid,
    run_reference,
)
from tests.conftest import REPO, TINY_MULTIHEAD


def _hf(folder):
    from transformers import ViTMSNModel

    return ViTMSNModel.from_pretrained(str(folder), dtype=torch.float32).eval()


def _compare(ref, model, pixels, interpolate):
    r = run_reference(ref, pixels).all
    with torch.inference_mode():
        o = model(pixel_values=pixels, output_hidden_states=True,
                  interpolate_pos_encoding=interpolate)
    h = [*o.hidden_states, o.last_hidden_state]
    assert len(h) == len(r)
    return [float((a - b).abs().max()) for a, b in zip(h, r, strict=True)]


@pytest.fixture
def converted_pair(cli, make_ckpt, tmp_path):
    def make(arch):
        ckpt = make_ckpt(arch)
        out = tmp_path / f"out-{arch.hidden_size}"
        assert cli("convert", ckpt, out, "--no-verify", "-q").code == 0
        return ckpt, out

    return make


@pytest.mark.parametrize("arch", [TINY, TINY_MULTIHEAD], ids=["tiny", "multihead"])
def test_reference_agrees_with_converted_model(converted_pair, arch):
    ckpt, out = converted_pair(arch)
    ref = build_reference(load_checkpoint(ckpt).state, num_heads=arch.num_heads)
    model = _hf(out)
    g = torch.Generator().manual_seed(0)
    native = torch.randn(2, 3, arch.image_size, arch.image_size, generator=g)
    errs = _compare(ref, model, native, False)
    assert len(errs) == arch.num_layers + 2
    assert max(errs) < 1e-5
    side = other_grid(arch.grid) * arch.patch_size
    other = torch.randn(1, 3, side, side, generator=g)
    assert max(_compare(ref, model, other, True)) < 1e-5


def test_reference_disagrees_with_a_broken_conversion(converted_pair):
    ckpt, out = converted_pair(TINY_MULTIHEAD)
    w = out / "model.safetensors"
    sd = load_file(str(w))
    p = "encoder.layer.1.attention.attention."
    sd[p + "query.weight"], sd[p + "key.weight"] = sd[p + "key.weight"], sd[p + "query.weight"]
    save_file(sd, str(w))
    ref = build_reference(load_checkpoint(ckpt).state, num_heads=2)
    x = torch.randn(1, 3, 35, 35, generator=torch.Generator().manual_seed(1))
    errs = _compare(ref, _hf(out), x, False)
    assert errs[0] < 1e-5 and errs[1] < 1e-5  # embeddings and block 0 untouched
    assert errs[2] > 1e-2  # block 1 differs


def test_loads_strictly_in_original_names():
    sd = backbone_state(TINY)  # includes the fc.* projection head, which is set aside
    ref = build_reference(sd, num_heads=1)
    names = set(ref.state_dict())
    assert names == {k for k in sd if not k.startswith("fc.")}
    assert "blocks.1.attn.qkv.weight" in names and "pos_embed" in names
    extra = dict(sd, **{"blocks.0.attn.extra": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="strictly"):
        build_reference(extra, num_heads=1)
    missing = {k: v for k, v in sd.items() if k != "blocks.1.norm2.bias"}
    with pytest.raises(CheckpointError, match="strictly"):
        build_reference(missing, num_heads=1)
    renamed = {k.replace("attn.qkv", "attn.qkv_fused"): v for k, v in sd.items()}
    with pytest.raises(CheckpointError):
        build_reference(renamed, num_heads=1)


def test_uses_checkpoint_tensors_in_place():
    sd = backbone_state(TINY, head=False)
    ref = build_reference(sd, num_heads=1)
    assert ref.blocks[0].attn.qkv.weight.data_ptr() == sd["blocks.0.attn.qkv.weight"].data_ptr()
    half = {k: v.half() for k, v in sd.items()}
    ref16 = build_reference(half, num_heads=1)
    assert ref16.norm.weight.dtype == torch.float32  # upcast: the reference computes in float32


def test_architecture_details_of_the_original():
    sd = backbone_state(TINY_MULTIHEAD, head=False)
    ref = build_reference(sd, num_heads=2)
    assert all(m.eps == 1e-6 for m in ref.modules() if isinstance(m, torch.nn.LayerNorm))
    # one block, recomputed by hand from the original tensors: pre-norm, fused qkv rows
    # [q; k; v], per-head softmax attention scaled by head_dim ** -0.5, exact GELU
    x = torch.randn(1, 26, 128, generator=torch.Generator().manual_seed(3))
    p = "blocks.0."

    def ln(t, w, b):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + 1e-6) * sd[w] + sd[b]

    h = ln(x, p + "norm1.weight", p + "norm1.bias")
    qkv = h @ sd[p + "attn.qkv.weight"].T + sd[p + "attn.qkv.bias"]
    q, k, v = qkv[..., :128], qkv[..., 128:256], qkv[..., 256:]
    heads = []
    for i in range(2):
        s = slice(64 * i, 64 * (i + 1))
        a = torch.softmax(q[..., s] @ k[..., s].transpose(-1, -2) / 8.0, dim=-1)
        heads.append(a @ v[..., s])
    y = x + torch.cat(heads, -1) @ sd[p + "attn.proj.weight"].T + sd[p + "attn.proj.bias"]
    m = ln(y, p + "norm2.weight", p + "norm2.bias") @ sd[p + "mlp.fc1.weight"].T + sd[p + "mlp.fc1.bias"]
    m = 0.5 * m * (1 + torch.erf(m / math.sqrt(2)))
    want = y + m @ sd[p + "mlp.fc2.weight"].T + sd[p + "mlp.fc2.bias"]
    with torch.inference_mode():
        got = ref.blocks[0](x)
    assert float((got - want).abs().max()) < 1e-5


def test_original_interpolation_rule_and_the_chosen_second_size():
    for g, at_most in [(g, m) for g in range(2, 64) for m in (None, 8)]:
        n = other_grid(g, at_most)
        assert n != g and original_grid_after_interpolation(g, n) == n
        if at_most is not None and g // 2 > at_most:
            assert n <= at_most  # the deep comparison's size: at most 8 patches a side here
        # at that size the original's scale-factor interpolation and transformers' explicit
        # size give the same positions
        grid = torch.randn(1, 8, g, g, generator=torch.Generator().manual_seed(g))
        a = F.interpolate(grid, scale_factor=math.sqrt(n * n / (g * g)), mode="bicubic")
        b = F.interpolate(grid, size=(n, n), mode="bicubic", align_corners=False)
        assert a.shape == b.shape
        assert float((a - b).abs().max()) < 1e-5
    # sizes where the original rounds one short exist: the reference refuses them, loudly
    assert original_grid_after_interpolation(7, 29) == 28
    grid7 = Architecture(hidden_size=64, num_layers=1, num_heads=1, intermediate_size=128,
                         patch_size=4, image_size=28)
    ref = build_reference(backbone_state(grid7, head=False), num_heads=1)
    with pytest.raises(ValueError, match="scale factor"):
        run_reference(ref, torch.zeros(1, 3, 29 * 4, 29 * 4))


def test_reference_imports_nothing_from_transformers():
    code = ("import sys; from msn_cli.original.reference import build_reference, run_reference; "
            "from msn_cli.dev.synth import TINY, backbone_state; import torch; "
            "m = build_reference(backbone_state(TINY), num_heads=1); "
            "run_reference(m, torch.zeros(1, 3, 64, 64)); "
            "assert not [k for k in sys.modules if k.startswith('transformers')], 'imported'")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    src = (REPO / "msn_cli" / "original" / "reference.py").read_text()
    assert "transformers" not in "".join(
        line for line in src.splitlines() if line.lstrip().startswith(("import", "from")))
