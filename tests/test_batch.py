"""``msn convert all``: every released name, through the cache, continuing past failures."""

from __future__ import annotations

import json

from msn_cli.synth import TINY, arch_for, write_checkpoint
from tests.http_server import FileServer


def test_convert_all_continues_past_failures_and_summarises(cli, tmp_path):
    mirror = tmp_path / "mirror"
    # vits16: a real-shaped file; vitb16: a file whose shapes are not ViT-B/16's; the rest: 404
    write_checkpoint(mirror / "vits16_800ep.pth.tar", arch_for("vits16"))
    write_checkpoint(mirror / "vitb16_600ep.pth.tar", TINY)
    outdir = tmp_path / "models"
    with FileServer(mirror).start() as server:
        r = cli("convert", "all", outdir, "--base-url", server.url("/"), "--json")
    data = r.json()
    by_name = {i["name"]: i for i in data["items"]}
    assert list(by_name) == ["vits16", "vitb16", "vitl16", "vitb4", "vitl7"]
    assert by_name["vits16"]["ok"] is True
    assert by_name["vits16"]["result"]["verify"]["passed"] is True
    assert by_name["vitb16"]["ok"] is False and by_name["vitb16"]["exit_code"] == 3
    assert "shapes" in by_name["vitb16"]["message"]
    for name in ("vitl16", "vitb4", "vitl7"):
        assert by_name[name]["ok"] is False and by_name[name]["exit_code"] == 4
    assert data["failed"] == 4
    assert r.code == 4  # the worst failure decides
    assert "4 of 5 conversions failed" in r.stderr
    assert sorted(p.name for p in outdir.iterdir() if not p.name.startswith(".")) == ["vits16"]
    manifest = json.loads((outdir / "vits16" / "msn_manifest.json").read_text())
    assert manifest["source"]["kind"] == "variant" and manifest["source"]["name"] == "vits16"
    assert manifest["source"]["url"].endswith("/vits16_800ep.pth.tar")


def test_convert_all_offline_fails_each_with_a_network_error(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MSN_OFFLINE", "1")
    r = cli("convert", "all", tmp_path / "models", "--json")
    assert r.code == 4
    items = r.json()["items"]
    assert len(items) == 5 and all(not i["ok"] and i["exit_code"] == 4 for i in items)
