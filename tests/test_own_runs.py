"""Own-trained MSN networks: heads from the original model family (or the run's config, or the
user), every value not in the weights reported with its origin, and precise refusals.

Every checkpoint here is in the exact training layout the original loop saves (``encoder``,
``target_encoder``, ``prototypes``, ``opt``, ``epoch``, ...), at a reduced depth and image
size so that the widest files stay small.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from msn_cli.conversion.provenance import HEADS, Known, Provenance
from msn_cli.dev.synth import (
    TINY,
    backbone_state,
    family_arch,
    make_conv_stem_checkpoint,
    make_linear_eval_checkpoint,
    write_checkpoint,
    write_run_config,
)
from msn_cli.errors import CheckpointError
from msn_cli.hf.manifest import read_manifest
from msn_cli.original import family
from msn_cli.original.checkpoint import infer_architecture, refuse_unconvertible

WIDTHS = (192, 384, 768, 1024, 1280)
SMALL = {"moments": False, "proj_hidden": 256, "proj_out": 64, "num_prototypes": 64}
"""Training layout, with the optimizer's moments left out and a small projection head, so the
1280-wide file is ~170 MB rather than ~700 MB."""


def training_ckpt(folder: Path, width: int, layers: int = 1, name: str = "msn-latest.pth.tar",
                  **kwargs) -> Path:
    arch = family_arch(width, layers, image_size=32, **kwargs)
    return write_checkpoint(folder / name, arch, "training", prefix=False, **SMALL)


def heads_record(payload: dict) -> dict:
    return next(p for p in payload["provenance"] if p["key"] == HEADS)


# -- every width of the family ---------------------------------------------------------------------

_HUGE: dict[str, Path] = {}


def huge(tmp_path_factory) -> tuple[Path, Path]:
    """The 1280-wide file converted once (with verify), shared by the tests that need it."""
    if not _HUGE:
        base = tmp_path_factory.mktemp("huge")
        _HUGE["ckpt"] = training_ckpt(base, 1280)
        _HUGE["out"] = base / "out"
    return _HUGE["ckpt"], _HUGE["out"]


@pytest.mark.parametrize("width", WIDTHS)
def test_each_family_width_converts_with_the_family_heads_and_passes_verify(
        width, cli, tmp_path, tmp_path_factory):
    if width == 1280:
        ckpt, out = huge(tmp_path_factory)
    else:
        ckpt, out = training_ckpt(tmp_path, width), tmp_path / "out"
    r = cli("convert", ckpt, out, "--json")
    assert r.code == 0, r.stderr
    d = r.json()
    want = family.heads_for_width(width)
    assert d["plan"]["architecture"]["num_heads"] == want
    assert d["plan"]["architecture"]["head_dim"] == width // want
    rec = heads_record(d)
    assert rec["origin"] == "family" and rec["value"] == want and not rec["assumed"]
    assert d["assumed"] == [] and "ASSUMED" not in r.stderr
    assert d["verify"]["passed"] is True, d["verify"]["summary"]
    config = json.loads((out / "config.json").read_text())
    assert config["num_attention_heads"] == want
    m = read_manifest(out)
    assert heads_record(m)["origin"] == "family" and m["assumed"] == []
    parity = next(c for c in m["verify"]["checks"] if c["name"] == "parity")
    print(f"width {width}: {want} heads, parity max abs err {parity['max_abs_err']:.2e}, "
          f"worst layer at {parity['worst_ratio']:.0%} of its tolerance")


def test_1280_wide_with_20_heads_fails_verify(cli, tmp_path, tmp_path_factory):
    """The regression test of the bug: deit_huge has 16 heads of 80; a folder written with
    20 heads (1280 / 64) must fail verify, because verify's reference takes its heads from
    the family, not from the folder."""
    ckpt, good = huge(tmp_path_factory)
    if not good.exists():
        assert cli("convert", ckpt, good, "--no-verify").code == 0
    r = cli("verify", good, "--json", "--no-record")
    assert r.code == 0, r.stderr
    assert heads_record(r.json())["value"] == 16

    wrong = tmp_path / "twenty"
    r = cli("convert", ckpt, wrong, "--num-heads", "20", "--no-verify", "--json")
    assert r.code == 0, r.stderr
    assert heads_record(r.json()) == {"key": HEADS, "value": 20, "origin": "user",
                                      "assumed": False, "source": "--num-heads 20"}
    assert "overrides the 16 heads" in r.stderr
    r = cli("verify", wrong, "--json", "--no-record")
    assert r.code == 1
    checks = {c["name"]: c for c in r.json()["checks"]}
    assert checks["parity"]["passed"] is False  # the reference ran with 16 heads
    assert checks["parity"]["max_abs_err"] > 0.1
    assert checks["config"]["passed"] is False
    assert "num_attention_heads = 20, expected 16" in checks["config"]["detail"]
    assert heads_record(r.json())["origin"] == "family"
    # and the user can still say so: then verify checks against their number
    r = cli("verify", wrong, "--json", "--no-record", "--num-heads", "20")
    assert r.code == 0, r.json()["summary"]


def test_verify_ignores_the_heads_the_folder_itself_claims(cli, tmp_path):
    """Rewriting config.json and the manifest's record of the heads does not move verify's
    reference: outside what the user or a run config says, the family decides."""
    ckpt = training_ckpt(tmp_path, 384)
    out = tmp_path / "out"
    assert cli("convert", ckpt, out, "--num-heads", "12", "--no-verify").code == 0
    m = read_manifest(out)
    assert heads_record(m)["value"] == 12
    r = cli("verify", out, "--json", "--no-record")
    assert r.code == 1
    assert heads_record(r.json())["value"] == 6


# -- outside the family ------------------------------------------------------------------------------

def test_a_width_outside_the_family_is_converted_with_assumed_heads_and_says_so(cli, tmp_path):
    ckpt = write_checkpoint(tmp_path / "w64.pth.tar", TINY, "training")
    out = tmp_path / "out"
    r = cli("convert", ckpt, out, "--json")
    assert r.code == 0, r.stderr
    d = r.json()
    assert sorted(d["assumed"]) == ["hidden_act", "layer_norm_eps", HEADS]
    rec = heads_record(d)
    assert rec["value"] == 1 and rec["origin"] == "assumed" and rec["assumed"] is True
    assert "hidden size / 64" in rec["source"] and "src/deit.py" in rec["source"]
    assert "ASSUMED" in r.stderr and "--num-heads" in r.stderr
    m = read_manifest(out)
    assert sorted(m["assumed"]) == sorted(d["assumed"])
    assert sorted(m["verify"]["assumed"]) == sorted(d["assumed"])
    config_check = next(c for c in m["verify"]["checks"] if c["name"] == "config")
    assert "ASSUMED" in config_check["detail"]
    r = cli("verify", out)
    assert r.code == 0 and "ASSUMED" in r.stderr
    r = cli("inspect", ckpt)
    assert r.code == 0 and "ASSUMED" in r.stdout and "ASSUMED" in r.stderr
    r = cli("convert", ckpt, tmp_path / "dry", "--dry-run")
    assert r.code == 0 and "ASSUMED" in r.stdout


def test_heads_given_by_the_user_are_not_assumed(cli, tmp_path):
    ckpt = write_checkpoint(tmp_path / "w64.pth.tar", TINY, "training")
    r = cli("convert", ckpt, tmp_path / "out", "--num-heads", "2", "--json")
    assert r.code == 0, r.stderr
    assert heads_record(r.json())["origin"] == "user"
    assert HEADS not in r.json()["assumed"]
    # verify, later, finds the user's number recorded (the width is outside the family)
    r = cli("verify", tmp_path / "out", "--json", "--no-record")
    assert r.code == 0, r.stderr
    assert heads_record(r.json())["origin"] == "recorded"


def test_heads_messages_say_what_was_given(cli, tmp_path):
    ckpt = write_checkpoint(tmp_path / "w64.pth.tar", TINY, "released")
    r = cli("inspect", ckpt, "--num-heads", "3")
    assert r.code == 3
    assert "cannot be split into 3 heads (given with --num-heads)" in r.stderr
    assert "give the number of heads" not in r.stderr
    odd = TINY.__class__(hidden_size=96, num_layers=1, num_heads=1, intermediate_size=384,
                         patch_size=16, image_size=32)
    ckpt = write_checkpoint(tmp_path / "w96.pth.tar", odd, "released")
    r = cli("inspect", ckpt)
    assert r.code == 3 and "give the number of heads with --num-heads" in r.stderr
    assert "heads given" not in r.stderr


def test_a_manifests_heads_are_not_mistaken_for_the_users():
    """``verify --source vits16`` on a 64-wide folder used to say "1 heads given": the
    manifest's heads were passed on as if given. Now they are only a record, below the family."""
    from msn_cli.dev.synth import arch_for

    with torch.device("meta"):
        state = backbone_state(arch_for("vits16"))
    recorded = Provenance(HEADS, 1, "assumed", "hidden size / 64")
    inf = infer_architecture(state, known=Known(recorded_heads=recorded))
    assert inf.arch.num_heads == 6 and inf.provenance[0].origin == "family"
    with pytest.raises(CheckpointError, match=r"--num-heads 8 given.*vits16, which has 6"):
        infer_architecture(state, 8)


# -- the run's config --------------------------------------------------------------------------------

def test_the_runs_config_beside_the_checkpoint_names_the_constructor(cli, tmp_path):
    run = tmp_path / "run"
    ckpt = training_ckpt(run, 192, layers=12)
    write_run_config(run, model_name="deit_tiny", epochs=300)
    out = tmp_path / "out"
    r = cli("convert", ckpt, out, "--json")
    assert r.code == 0, r.stderr
    d = r.json()
    rec = heads_record(d)
    assert rec["origin"] == "run_config" and rec["value"] == 3 and "deit_tiny" in rec["source"]
    assert d["run_config"] == {"file": "params-msn-train.yaml", "found": "beside the checkpoint",
                               "model_name": "deit_tiny"}
    assert d["verify"]["passed"] is True
    m = read_manifest(out)
    assert m["training"]["model_name"] == "deit_tiny" and m["training"]["epochs"] == 300
    text = (out / "msn_manifest.json").read_text()
    for local in ("/datasets01/", "/checkpoint/msn_logs", "imagenet_full_size"):
        assert local not in text
    # verify, later, reads the config beside the source itself
    r = cli("verify", out, "--json", "--no-record")
    assert r.code == 0, r.stderr
    assert heads_record(r.json())["origin"] == "run_config"
    # the same file named with --config from elsewhere
    cfg = write_run_config(tmp_path / "elsewhere", model_name="deit_tiny")
    lone = tmp_path / "lone"
    lone.mkdir()
    moved = lone / ckpt.name
    ckpt.rename(moved)
    r = cli("inspect", moved, "--config", cfg, "--json")
    assert r.code == 0, r.stderr
    assert heads_record(r.json())["origin"] == "run_config"
    assert r.json()["run_config"]["found"] == "given with --config"
    r = cli("inspect", moved, "--json")
    assert heads_record(r.json())["origin"] == "family"


def test_a_config_that_contradicts_the_shapes_is_refused_naming_both(cli, tmp_path):
    run = tmp_path / "run"
    ckpt = training_ckpt(run, 192)
    write_run_config(run, model_name="deit_small")
    out = tmp_path / "out"
    r = cli("convert", ckpt, out)
    assert r.code == 3
    assert "deit_small" in r.stderr and "width 384" in r.stderr and "width 192" in r.stderr
    assert not out.exists()
    write_run_config(run, model_name="deit_tiny")  # right width, but 12 blocks, not 1
    r = cli("convert", ckpt, out)
    assert r.code == 3 and "blocks 12" in r.stderr and "blocks 1" in r.stderr
    assert not out.exists()


def test_num_heads_that_contradict_the_runs_config_are_refused(cli, tmp_path):
    run = tmp_path / "run"
    ckpt = training_ckpt(run, 192, layers=12)
    write_run_config(run, model_name="deit_tiny")
    r = cli("convert", ckpt, tmp_path / "out", "--num-heads", "4", "--dry-run")
    assert r.code == 3 and "deit_tiny" in r.stderr and "3 heads" in r.stderr


def test_a_malformed_config_beside_the_checkpoint_stops_before_anything_is_written(cli, tmp_path):
    run = tmp_path / "run"
    ckpt = training_ckpt(run, 192)
    (run / "params-msn-train.yaml").write_text("meta: [unclosed\n")
    out = tmp_path / "out"
    r = cli("convert", ckpt, out)
    assert r.code == 3 and "not valid YAML" in r.stderr
    assert not out.exists()


def test_an_unknown_model_name_is_a_warning_and_the_width_decides(cli, tmp_path):
    run = tmp_path / "run"
    ckpt = training_ckpt(run, 384)
    write_run_config(run, model_name="my_deit")
    r = cli("inspect", ckpt, "--json")
    assert r.code == 0, r.stderr
    assert "my_deit" in r.stderr and heads_record(r.json())["origin"] == "family"


# -- refusals -----------------------------------------------------------------------------------------

def test_conv_stem_files_are_refused_in_one_line(cli, tmp_path):
    path = tmp_path / "vitc.pth.tar"
    torch.save(make_conv_stem_checkpoint("vitc_4gf", num_layers=2), path)
    for args in (("convert", path, tmp_path / "out"), ("inspect", path)):
        r = cli(*args)
        assert r.code == 3
        assert "conv-stem" in r.stderr and "patch_embed.stem" in r.stderr
        assert "is this an MSN ViT" not in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("name", ["vitc_4gf", "deit_small_convstem"])
def test_conv_stem_constructors_are_named_when_the_shapes_say_which(name):
    c = family.constructor(name)
    with torch.device("meta"):
        ck = make_conv_stem_checkpoint(name)
    state = {k.removeprefix("module."): v for k, v in ck["target_encoder"].items()}
    with pytest.raises(CheckpointError, match=rf"conv-stem network {name} of the original"):
        refuse_unconvertible(Path("x.pth.tar"), ck, state)
    assert c is not None and c.conv_stem


def test_linear_evaluation_files_are_refused_pointing_to_the_pretraining_checkpoint(cli, tmp_path):
    path = tmp_path / "lineval.pth.tar"
    torch.save(make_linear_eval_checkpoint(TINY), path)
    out = tmp_path / "out"
    for args in (("convert", path, out), ("inspect", path)):
        r = cli(*args)
        assert r.code == 3
        assert "linear-evaluation checkpoint" in r.stderr and "1000 classes" in r.stderr
        assert "pre-training checkpoint" in r.stderr
        assert "is this an MSN ViT" not in r.stderr
    assert not out.exists()


def test_a_backbone_without_qkv_bias_converts_with_qkv_bias_false(cli, tmp_path):
    ckpt = training_ckpt(tmp_path, 192, qkv_bias=False)
    out = tmp_path / "out"
    r = cli("convert", ckpt, out, "--json")
    assert r.code == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["qkv_bias"] is False
    rec = next(p for p in r.json()["provenance"] if p["key"] == "qkv_bias")
    assert rec["value"] is False and rec["origin"] == "weights"
    assert r.json()["verify"]["passed"] is True
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not any(k.endswith("query.bias") for k in f.keys())
    from transformers import ViTMSNModel

    model = ViTMSNModel.from_pretrained(str(out))
    assert not any(n.endswith(("query.bias", "q_proj.bias")) for n, _ in model.named_parameters())


def test_qkv_bias_in_some_blocks_only_is_a_problem(tmp_path):
    from msn_cli.conversion.plan import plan_from_state

    arch = family_arch(192, 2, image_size=32, qkv_bias=False)
    state = backbone_state(arch, head=False)
    state["blocks.1.attn.qkv.bias"] = torch.zeros(3 * 192)
    plan = plan_from_state(state, infer_architecture(state))
    assert any("blocks.1.attn.qkv.bias" in p for p in plan.problems)


# -- the model card ------------------------------------------------------------------------------------

def test_the_card_says_where_the_heads_come_from(cli, tmp_path):
    from msn_cli.hf.card import build_card

    known = tmp_path / "known"
    assert cli("convert", training_ckpt(tmp_path, 384), known, "--no-verify").code == 0
    card = build_card(read_manifest(known), "me/known")
    heads_row = next(line for line in card.splitlines() if line.startswith("| Attention heads"))
    assert "6 (head size 64)" in heads_row and "original model family" in heads_row
    assert "- `num_attention_heads` = 6: original model family" in card
    assert "ASSUMED" not in card

    assumed = tmp_path / "assumed"
    ckpt = write_checkpoint(tmp_path / "w64.pth.tar", TINY, "training")
    assert cli("convert", ckpt, assumed, "--no-verify").code == 0
    card = build_card(read_manifest(assumed), "me/assumed")
    heads_row = next(line for line in card.splitlines() if line.startswith("| Attention heads"))
    assert "**ASSUMED**" in heads_row
    assert "- `num_attention_heads` = 1: **ASSUMED** (fallback)" in card
    assert "parity does not confirm it" in card


def test_the_converted_epoch_and_loss_reach_the_manifest_and_the_card(cli, tmp_path):
    """A training checkpoint says which epoch it is; the card of an own run says so too."""
    from msn_cli.hf.card import build_card

    run = tmp_path / "run"
    ckpt = training_ckpt(run, 192)
    stored = torch.load(ckpt, map_location="cpu", weights_only=True)
    out = tmp_path / "out"
    r = cli("convert", ckpt, out, "--no-verify", "--json")
    assert r.code == 0, r.stderr
    src = read_manifest(out)["source"]
    assert (src["epoch"], src["loss"]) == (stored["epoch"], stored["loss"])
    card = build_card(read_manifest(out), "me/own-run")
    assert f"records epoch {stored['epoch']} and loss {stored['loss']:.3g}" in card
