from __future__ import annotations


def test_convert_tiny_writes_folder(cli, tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    r = cli("convert", tiny_ckpt, out, "--no-verify")
    assert r.code == 0, r.stderr
    assert {p.name for p in out.iterdir()} == {
        "model.safetensors", "config.json", "preprocessor_config.json", "msn_manifest.json"}
