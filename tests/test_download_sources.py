"""``msn inspect`` / ``msn convert`` resolving released names and URLs through the cache."""

from __future__ import annotations

import hashlib
import json

import pytest
from http_server import FileServer

from msn_cli.dev.synth import TINY, write_checkpoint
from msn_cli.original.variants import VARIANTS
from msn_cli.transfer.cache import Cache

FILENAME = VARIANTS["vits16"].filename


@pytest.fixture
def mirror(tmp_path):
    """A local mirror serving a tiny synthetic checkpoint under the released vits16 file name."""
    ckpt = write_checkpoint(tmp_path / "mirror" / FILENAME, TINY, "released")
    with FileServer(root=tmp_path / "mirror") as srv:
        yield srv, ckpt


def test_inspect_name_downloads_through_the_mirror_once(cli, mirror):
    server, ckpt = mirror
    r = cli("inspect", "vits16", "--base-url", server.url("/"), "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["source"]["kind"] == "variant" and doc["source"]["name"] == "vits16"
    assert doc["source"]["url"] == server.url("/" + FILENAME)
    assert doc["file"]["path"] == str(Cache().file_path(FILENAME))
    assert len(server.requests()) == 1
    # The second time the cache answers: no request, not even with a mirror given.
    r = cli("inspect", "vits16", "--base-url", server.url("/"), "--json")
    assert r.code == 0 and len(server.requests()) == 1
    entry = Cache().get(FILENAME)
    assert entry is not None and entry.sha256 == hashlib.sha256(ckpt.read_bytes()).hexdigest()


def test_convert_url_records_url_and_sha256_from_the_index(cli, mirror, tmp_path, monkeypatch):
    server, ckpt = mirror
    url = server.url("/" + FILENAME)
    assert cli("download", url).code == 0
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()

    import msn_cli.conversion.convert as conv

    def no_rehash(*args, **kwargs):
        raise AssertionError("convert hashed a source whose sha256 the cache index knows")

    monkeypatch.setattr(conv, "sha256_file", no_rehash)
    n = len(server.requests())
    out = tmp_path / "out"
    r = cli("convert", url, out, "--no-verify")
    assert r.code == 0, r.stderr
    assert len(server.requests()) == n  # served from the cache
    manifest = json.loads((out / "msn_manifest.json").read_text())
    assert manifest["source"]["url"] == url
    assert manifest["source"]["sha256"] == digest
    assert manifest["source"]["kind"] == "url"


def test_convert_name_fetches_via_mirror_and_refuses_a_wrong_file(cli, mirror, tmp_path, monkeypatch):
    # A tiny model served as 'vits16' has the wrong shapes: convert must say so (exit 3) after
    # resolving the name through MSN_BASE_URL and the cache.
    server, _ = mirror
    monkeypatch.setenv("MSN_BASE_URL", server.url("/"))
    r = cli("convert", "vits16", tmp_path / "out", "--no-verify")
    assert r.code == 3
    assert "fetched as 'vits16'" in r.stderr
    assert len(server.requests()) == 1
    assert Cache().get(FILENAME) is not None
    assert not (tmp_path / "out").exists()


def test_offline_inspect_of_uncached_name_says_how_to_get_it(cli, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    r = cli("inspect", "vitb16")
    assert r.code == 4
    assert "HF_HUB_OFFLINE" in r.stderr and "msn download vitb16" in r.stderr


def test_inspect_name_warns_in_converts_words_when_the_file_is_another_model(cli, mirror,
                                                                             monkeypatch, tmp_path):
    server, _ = mirror
    monkeypatch.setenv("MSN_BASE_URL", server.url("/"))
    refused = cli("convert", "vits16", tmp_path / "out", "--no-verify")
    r = cli("inspect", "vits16")
    assert r.code == 0, r.stderr  # the file itself maps cleanly: inspect shows it, and warns
    words = refused.stderr.split("Error: ", 1)[1].splitlines()[0]
    assert words.startswith("the file fetched as 'vits16' has the shapes of no released variant")
    assert "Warning: " + words in r.stderr and "msn convert refuses it" in r.stderr
    doc = cli("inspect", "vits16", "--json").json()
    assert doc["warnings"] == [words]


def test_cache_entry_names_are_accepted_wherever_a_name_is(cli, mirror, tmp_path, monkeypatch):
    server, ckpt = mirror
    monkeypatch.setenv("MSN_BASE_URL", server.url("/"))
    write_checkpoint(ckpt.parent / "other.pth", TINY, "released", seed=3)
    url = server.url("/other.pth")
    assert cli("download", url).code == 0
    released = cli("download", FILENAME, "--json")  # the entry name msn cache ls shows
    assert released.code == 0, released.stderr
    assert released.json()["files"][0]["variant"] == "vits16"
    n = len(server.requests())
    again = cli("download", "other.pth", "--verify", "--json")
    assert again.code == 0, again.stderr
    assert again.json()["files"][0]["url"] == url and len(server.requests()) == n  # cached, re-hashed
    monkeypatch.chdir(tmp_path)  # no file called other.pth here: the cache's entry is meant
    r = cli("inspect", "other.pth", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["source"]["kind"] == "url" and r.json()["source"]["url"] == url
    r = cli("inspect", FILENAME, "--json")
    assert r.code == 0 and r.json()["source"]["name"] == "vits16"
    r = cli("convert", "other.pth", "out", "--json", "-q")
    assert r.code == 0, r.stderr
    r = cli("verify", "out", "--source", "other.pth", "--json", "--no-record")
    assert r.code == 0 and r.json()["passed"] is True
    assert cli("cache", "check", "other.pth", FILENAME).code == 0
    assert cli("cache", "rm", "other.pth", "--yes").code == 0
    r = cli("inspect", "other.pth")
    assert r.code == 3 and "no such file: other.pth" in r.stderr
    assert len(server.requests()) == n
