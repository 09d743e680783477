"""``msn convert`` on local files: layouts, prefixes, dtypes, the written folder, the plan."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from msn_cli.dev.synth import TINY, make_checkpoint
from tests.conftest import TINY_MULTIHEAD


def _read(folder):
    with safe_open(str(folder / "model.safetensors"), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _expected(ckpt_path, encoder_key="target_encoder"):
    """The reference conversion written out by hand from msn-facts.md, independent of RULES."""
    obj = torch.load(ckpt_path, weights_only=True)
    sd = {k.removeprefix("module."): v for k, v in obj[encoder_key].items()}
    out = {"embeddings.cls_token": sd["cls_token"], "embeddings.position_embeddings": sd["pos_embed"],
           "embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "layernorm.weight": sd["norm.weight"], "layernorm.bias": sd["norm.bias"]}
    n = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(n):
        b, h = f"blocks.{i}.", f"encoder.layer.{i}."
        for p in ("weight", "bias"):
            qkv = sd[b + "attn.qkv." + p]
            d = qkv.shape[0] // 3
            q, k, v = qkv[:d], qkv[d:2 * d], qkv[2 * d:]
            out[h + "attention.attention.query." + p] = q
            out[h + "attention.attention.key." + p] = k
            out[h + "attention.attention.value." + p] = v
            out[h + "layernorm_before." + p] = sd[b + "norm1." + p]
            out[h + "attention.output.dense." + p] = sd[b + "attn.proj." + p]
            out[h + "layernorm_after." + p] = sd[b + "norm2." + p]
            out[h + "intermediate.dense." + p] = sd[b + "mlp.fc1." + p]
            out[h + "output.dense." + p] = sd[b + "mlp.fc2." + p]
    return out


@pytest.mark.parametrize("layout", ["released", "training"])
@pytest.mark.parametrize("prefix", [True, False])
@pytest.mark.parametrize("arch", [TINY, TINY_MULTIHEAD], ids=["tiny", "multihead"])
def test_convert_is_bit_exact_for_layouts_and_prefixes(cli, make_ckpt, tmp_path, layout, prefix, arch):
    ck = make_ckpt(arch, layout, prefix=prefix)
    out = tmp_path / "out"
    r = cli("convert", ck, out, "--no-verify", "--num-heads", arch.num_heads)
    assert r.code == 0, r.stderr
    got, meta = _read(out)
    want = _expected(ck)
    assert set(got) == set(want)
    for k, v in want.items():
        assert torch.equal(got[k], v), k
    assert meta["format"] == "pt"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["architectures"] == ["ViTMSNModel"] and cfg["model_type"] == "vit_msn"
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["intermediate_size"], cfg["patch_size"], cfg["image_size"]) == (
        arch.hidden_size, arch.num_layers, arch.num_heads, arch.intermediate_size,
        arch.patch_size, arch.image_size)
    assert cfg["layer_norm_eps"] == 1e-6 and cfg["hidden_act"] == "gelu"
    assert "id2label" not in cfg and "num_labels" not in cfg
    pre = json.loads((out / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.485, 0.456, 0.406] and pre["image_std"] == [0.229, 0.224, 0.225]
    # the default: MSN's evaluation transform (short side 256/224 of the size, center crop)
    assert pre["image_processor_type"] == "BitImageProcessor"
    assert pre["size"] == {"shortest_edge": round(arch.image_size * 256 / 224)}
    assert pre["crop_size"] == {"height": arch.image_size, "width": arch.image_size}
    assert pre["do_center_crop"] is True and pre["resample"] == 2


def test_online_encoder_of_a_training_checkpoint(cli, make_ckpt, tmp_path):
    ck = make_ckpt(TINY, "training")
    r = cli("convert", ck, tmp_path / "out", "--no-verify", "--encoder", "online")
    assert r.code == 0, r.stderr
    got, _ = _read(tmp_path / "out")
    want = _expected(ck, "encoder")
    assert all(torch.equal(got[k], v) for k, v in want.items())
    target = _expected(ck, "target_encoder")
    assert not torch.equal(got["layernorm.weight"], target["layernorm.weight"])


def test_online_encoder_missing_in_a_released_file(cli, tiny_ckpt, tmp_path):
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--encoder", "online")
    assert r.code == 3
    assert "no 'encoder'" in r.stderr and "--encoder" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_dtype_option_casts_every_tensor(cli, tiny_ckpt, tmp_path, dtype):
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--no-verify", "--dtype", dtype, "--json")
    assert r.code == 0, r.stderr
    got, _ = _read(tmp_path / "out")
    want = _expected(tiny_ckpt)
    for k, v in got.items():
        assert v.dtype == getattr(torch, dtype)
        assert torch.equal(v, want[k].to(v.dtype))
    assert json.loads((tmp_path / "out" / "config.json").read_text())["torch_dtype"] == dtype
    assert r.json()["plan"]["dtype"] == dtype


def test_stored_half_precision_is_kept_by_default(cli, make_ckpt, tmp_path):
    ck = make_ckpt(TINY, dtype="bfloat16")
    assert cli("convert", ck, tmp_path / "out", "--no-verify").code == 0
    got, _ = _read(tmp_path / "out")
    assert {v.dtype for v in got.values()} == {torch.bfloat16}


def test_unknown_dtype_is_a_usage_error(cli, tiny_ckpt, tmp_path):
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--dtype", "float8")
    assert r.code == 2 and "float8" in r.stderr
    assert not (tmp_path / "out").exists()


def test_dry_run_writes_nothing_and_prints_the_plan(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--dry-run", "--json", "--all-keys")
    assert r.code == 0, r.stderr
    data = r.json()
    assert data["dry_run"] is True and data["out"] is None
    assert data["plan"]["tensors"] == 4 + 16 * TINY.num_layers + 2
    assert not out.exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "ckpts"]
    r = cli("convert", tiny_ckpt, out, "--dry-run")
    assert r.code == 0 and not out.exists()
    assert "Conversion plan (original keys shown without their module. prefix)" in r.stdout
    assert "blocks.0.*" in r.stdout and "attn.qkv.weight" in r.stdout


def test_manifest_records_source_and_file_hashes(cli, tiny_ckpt, tmp_path):
    import hashlib

    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    m = json.loads((out / "msn_manifest.json").read_text())
    assert m["tool"] == "msn" and m["source"]["kind"] == "path"
    assert m["source"]["sha256"] == hashlib.sha256(tiny_ckpt.read_bytes()).hexdigest()
    assert m["source"]["size"] == tiny_ckpt.stat().st_size
    assert m["source"]["layout"] == "released" and m["source"]["prefixed"] is True
    assert len(m["dropped"]) == 16 and all(k.startswith("module.fc.") for k in m["dropped"])
    for name, entry in m["files"].items():
        data = (out / name).read_bytes()
        assert entry == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert set(m["files"]) == {"model.safetensors", "config.json", "preprocessor_config.json"}


def test_existing_output_needs_force_and_force_replaces(cli, tiny_ckpt, make_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert r.code == 2 and "--force" in r.stderr
    assert (out / "keep.txt").read_text() == "precious"
    other = make_ckpt(TINY, seed=7, name="other.pth.tar")
    r = cli("convert", other, out, "--no-verify", "--force")
    assert r.code == 0, r.stderr
    assert not (out / "keep.txt").exists()
    got, _ = _read(out)
    assert torch.equal(got["layernorm.weight"], _expected(other)["layernorm.weight"])
    leftovers = [p.name for p in tmp_path.iterdir() if ".msn-tmp-" in p.name or ".msn-old-" in p.name]
    assert leftovers == []


def test_empty_existing_folder_is_used_without_force(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    assert cli("convert", tiny_ckpt, out, "--no-verify").code == 0
    assert (out / "model.safetensors").is_file()


def test_converted_folder_loads_in_transformers_without_key_problems(cli, make_ckpt, tmp_path):
    from transformers import ViTMSNModel

    ck = make_ckpt(TINY_MULTIHEAD, "training")
    out = tmp_path / "out"
    assert cli("convert", ck, out, "--no-verify", "--num-heads", "2").code == 0
    model, info = ViTMSNModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    assert model.config.num_attention_heads == 2
    assert model.config.layer_norm_eps == 1e-6
    with torch.no_grad():
        y = model(torch.randn(1, 3, 35, 35)).last_hidden_state
    assert y.shape == (1, 26, 128) and torch.isfinite(y).all()


def test_real_vits16_shapes_convert_and_load(cli, make_ckpt, tmp_path):
    """A full-size ViT-S/16 (88 MB) in the released layout: variant recognised, loads cleanly."""
    from transformers import ViTMSNModel

    from msn_cli.dev.synth import arch_for

    ck = make_ckpt(arch_for("vits16"), name="vits16_800ep.pth.tar")
    out = tmp_path / "small"
    r = cli("convert", ck, out, "--no-verify", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["plan"]["variant"] == "vits16"
    _, info = ViTMSNModel.from_pretrained(out, output_loading_info=True)
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    assert (out / "model.safetensors").stat().st_size == pytest.approx(86.7e6, rel=0.002)


def test_bare_state_dict_is_accepted(tmp_path, cli):
    sd = make_checkpoint(TINY)["target_encoder"]
    path = tmp_path / "bare.pth"
    torch.save(sd, path)
    r = cli("convert", path, tmp_path / "out", "--no-verify", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["source"]["layout"] == "state_dict"


def test_quiet_convert_still_prints_the_folder_on_stdout(cli, tiny_ckpt, tmp_path):
    r = cli("convert", tiny_ckpt, tmp_path / "out", "--no-verify", "-q")
    assert r.code == 0  # -q: only errors and warnings (the tiny width's ASSUMED values) on stderr
    assert all(line.startswith("Warning: ") for line in r.stderr.splitlines()), r.stderr
    assert r.stdout.strip() == str((tmp_path / "out").absolute())
