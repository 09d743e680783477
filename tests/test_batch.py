"""``msn convert all``: every released name, through the cache, continuing past failures."""

from __future__ import annotations

import json

from msn_cli.dev.synth import TINY, arch_for, write_checkpoint
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


def test_convert_all_fetches_every_checkpoint_at_once_then_converts(cli, tmp_path, monkeypatch):
    import threading
    import time

    from msn_cli.original.variants import VARIANTS
    from msn_cli.transfer import download

    mirror = tmp_path / "mirror"
    for name in ("vits16", "vitb16", "vitl16", "vitb4"):  # vitl7 is missing: a 404
        write_checkpoint(mirror / VARIANTS[name].filename, TINY)
    calls: list[list[str]] = []
    real = download.fetch_many

    def spy(specs, **options):
        calls.append(list(specs))
        return real(specs, **options)

    monkeypatch.setattr(download, "fetch_many", spy)
    monkeypatch.setenv("MSN_DOWNLOAD_CONNECTIONS", "2")
    held = "/" + VARIANTS["vits16"].filename
    others_while_held: list[int] = []
    with FileServer(mirror).start() as server:
        server.fault(held, "hold", after=1000)  # vits16's body stalls until released

        def release_when_the_others_came() -> None:
            server.holding.wait(30)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                if len([x for x in server.requests() if x.path != held]) >= 4:
                    break
                time.sleep(0.02)
            others_while_held.append(len([x for x in server.requests() if x.path != held]))
            server.release()

        threading.Thread(target=release_when_the_others_came, daemon=True).start()
        r = cli("convert", "all", tmp_path / "models", "--base-url", server.url("/"), "--json")
        gets = server.requests()
    assert calls == [list(VARIANTS)]  # one fetch of all five, before any conversion
    assert others_while_held == [4]  # the other four were asked for while vits16 was held
    assert len(gets) == 5  # each fetched once (the conversions found them in the cache)
    by_name = {i["name"]: i for i in r.json()["items"]}
    missing = by_name["vitl7"]
    assert missing["exit_code"] == 4 and missing["message"].startswith("download failed: ")
    assert "vitl7_200ep.pth.tar: HTTP 404" in missing["message"]
    assert "vitl7: download failed: " in r.stderr
    for name in ("vits16", "vitb16", "vitl16", "vitb4"):  # fetched, then refused (tiny shapes)
        assert by_name[name]["exit_code"] == 3 and "shapes" in by_name[name]["message"]
    assert r.code == 4


def test_rerun_skips_what_is_done_and_names_what_failed(cli, tmp_path):
    mirror = tmp_path / "mirror"
    write_checkpoint(mirror / "vits16_800ep.pth.tar", arch_for("vits16"))  # the rest: 404
    outdir = tmp_path / "models"
    with FileServer(mirror).start() as server:
        first = cli("convert", "all", outdir, "--base-url", server.url("/"))
        manifest = outdir / "vits16" / "msn_manifest.json"
        written = manifest.stat().st_mtime_ns
        again = cli("convert", "all", outdir, "--base-url", server.url("/"), "--json")
    assert first.code == 4 and "4 of 5 conversions failed" in first.stderr
    assert f"Hint: vits16 is in {outdir}; rerun the same command" in first.stderr
    by_name = {i["name"]: i for i in again.json()["items"]}
    assert by_name["vits16"]["ok"] is True and by_name["vits16"]["skipped"] is True
    assert by_name["vits16"]["message"] == "already converted and verified"
    assert "exists and is not empty" not in again.stderr
    assert again.json()["failed"] == 4 and again.code == 4
    assert manifest.stat().st_mtime_ns == written  # left as it was


def test_rerun_with_another_dtype_is_not_skipped(cli, tmp_path):
    from msn_cli.conversion.batch import already_converted

    mirror = tmp_path / "mirror"
    write_checkpoint(mirror / "vits16_800ep.pth.tar", arch_for("vits16"))
    outdir = tmp_path / "models"
    with FileServer(mirror).start() as server:
        cli("convert", "all", outdir, "--base-url", server.url("/"))
    options = {"verify": True, "preprocessing": "msn"}
    assert already_converted(outdir / "vits16", "vits16", {**options, "dtype": None})
    assert already_converted(outdir / "vits16", "vits16", {**options, "dtype": "float16"}) is None
    assert already_converted(outdir / "vits16", "vitb16", options) is None  # another source
    assert already_converted(outdir / "vits16", "vits16", {**options, "preprocessing": "seed"}) is None


def test_offline_hint_claims_no_conversion(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("MSN_OFFLINE", "1")
    r = cli("convert", "all", tmp_path / "models")
    assert r.code == 4
    assert "Hint: nothing was converted" in r.stderr
    assert "were converted" not in r.stderr and " is in " not in r.stderr
