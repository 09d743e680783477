"""``msn inspect``: the summary, the architecture, the key-diff, as table and JSON."""

from __future__ import annotations

import re

import torch

from msn_cli.dev.synth import TINY, make_checkpoint


def test_inspect_json_describes_a_released_file(cli, tiny_ckpt):
    r = cli("inspect", tiny_ckpt, "--json")
    assert r.code == 0, r.stderr
    d = r.json()
    assert d["layout"] == "released" and d["module_prefix"] is True
    assert [e["name"] for e in d["entries"]] == ["target_encoder", "prototypes"]
    assert d["encoder_key"] == "target_encoder"
    assert d["architecture"]["hidden_size"] == TINY.hidden_size
    assert d["architecture"]["num_layers"] == TINY.num_layers
    assert d["variant"] is None and d["ok"] is True
    keys = d["keys"]
    statuses = {k["status"] for k in keys}
    assert statuses == {"renamed", "split", "dropped"}
    qkv = next(k for k in keys if k["source"] == "module.blocks.1.attn.qkv.weight")
    assert qkv["targets"] == [f"encoder.layer.1.attention.attention.{p}.weight"
                              for p in ("query", "key", "value")]
    assert qkv["shape"] == [3 * TINY.hidden_size, TINY.hidden_size]
    dropped = [k for k in keys if k["status"] == "dropped"]
    assert len(dropped) == 16 and all("projection head" in k["note"] for k in dropped)
    sd = torch.load(tiny_ckpt, weights_only=True)["target_encoder"]
    assert d["backbone"]["tensors"] == len(sd)
    assert d["file_tensors"] == len(sd) + 1  # the backbone and the prototypes
    assert d["tensors"] == 4 + 16 * TINY.num_layers + 2  # what the conversion writes
    assert len(keys) == len(sd)


def test_inspect_training_file_lists_every_entry(cli, make_ckpt):
    ck = make_ckpt(TINY, "training")
    d = cli("inspect", ck, "--json").json()
    names = {e["name"]: e for e in d["entries"]}
    assert set(names) == {"encoder", "target_encoder", "prototypes", "opt", "epoch", "loss",
                          "batch_size", "world_size", "lr", "temperature"}
    assert names["epoch"]["value"] == 300
    assert names["opt"]["tensors"] > 0
    assert d["layout"] == "training" and set(d["available_encoders"]) == {"target", "online"}


def test_inspect_table_shows_the_mapping(cli, tiny_ckpt, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")  # the borderless layout, easy to match line by line
    r = cli("inspect", tiny_ckpt)
    assert r.code == 0
    # the common module. prefix is said once; block keys sit under a blocks.N -> layer.N heading
    assert "without their module. prefix" in r.stdout
    assert re.search(r"^blocks\.0\.\* +encoder\.layer\.0\.\*", r.stdout, re.M), r.stdout
    assert re.search(r"^  attn\.qkv\.weight +attention\.attention\.\{query,key,value\}\.weight +split",
                     r.stdout, re.M), r.stdout
    assert "fc.* (16 keys)" in r.stdout and "projection head" in r.stdout
    # compact: block 1 folded into block 0's rows
    assert "blocks.1.*" not in r.stdout and "map like block 0" in r.stdout
    full = cli("inspect", tiny_ckpt, "--all-keys")
    # every key with its note does not fit 80 columns as a table: two lines per key instead
    assert re.search(r"^blocks\.1\.\*\n  -> encoder\.layer\.1\.\*$", full.stdout, re.M), full.stdout
    assert re.search(r"^    -> attention\.attention\.value\.bias$", full.stdout, re.M)
    assert "fc.bn2.running_var" in full.stdout
    # --json keeps the full names
    keys = cli("inspect", tiny_ckpt, "--json").json()["keys"]
    assert {"module.blocks.1.norm1.weight", "module.fc.bn2.running_var"} <= {k["source"] for k in keys}
    assert any("encoder.layer.1.attention.attention.value.bias" in k["targets"] for k in keys)


def test_inspect_reports_problems_and_exits_3(cli, tmp_path):
    ck = make_checkpoint(TINY)
    ck["target_encoder"]["module.head.weight"] = torch.zeros(10, TINY.hidden_size)
    del ck["target_encoder"]["module.blocks.1.mlp.fc1.bias"]
    path = tmp_path / "odd.pth.tar"
    torch.save(ck, path)
    r = cli("inspect", path, "--json")
    assert r.code == 3
    d = r.json()
    assert d["ok"] is False
    assert {k["status"] for k in d["keys"]} >= {"unaccounted", "missing"}
    assert "module.head.weight" in r.stderr and "module.blocks.1.mlp.fc1.bias" in r.stderr


def test_help_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys; from msn_cli.cli import main; rc = main(['--help']); "
            "bad = [m for m in ('torch', 'transformers', 'safetensors') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else rc)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    for cmd in ("inspect", "convert", "verify", "download", "push"):
        code2 = code.replace("['--help']", f"['{cmd}', '--help']")
        r = subprocess.run([sys.executable, "-c", code2], capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stdout[-500:], r.stderr[-500:])


def test_version(cli):
    from msn_cli import __version__

    r = cli("--version")
    assert r.code == 0 and r.stdout.strip() == f"msn {__version__}"
