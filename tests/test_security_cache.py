"""Issue 19, the cache and network half: a hostile cache, partial note or mirror URL never makes
msn reach outside the cache, crash, or leak a secret; a folder's manifest never makes it fetch
an arbitrary URL; OUT is never a cache.

Every test drives the real command and checks what a user (or a victim) would see on disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from msn_cli.dev.synth import TINY, arch_for, write_checkpoint
from msn_cli.errors import CacheError
from msn_cli.original.variants import VARIANTS
from msn_cli.transfer.cache import Cache
from msn_cli.transfer.download import settings

SECRET = "S3cretPW"
PRECIOUS = b"precious data that is not msn's\n"


def body(n: int) -> bytes:
    """Random bytes that never look like an HTML/XML page: random data whose first non-blank
    byte is ``<`` (about 1 in 250) is rightly refused by the download's sniffing, which made
    these tests fail now and then."""
    return b"\x80" + os.urandom(n - 1)


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(settings, "BACKOFF", 0.01)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def record(name: str, data: bytes, url: str = "") -> dict:
    return {"name": name, "url": url, "size": len(data), "sha256": sha(data),
            "downloaded_at": "2026-01-01T00:00:00Z", "variant": None}


def plant_index(entries: dict) -> Cache:
    cache = Cache()
    cache.ensure()
    cache.index_path.write_text(json.dumps({"version": 1, "entries": entries}))
    return cache


def with_credentials(url: str) -> str:
    return url.replace("http://", f"http://alice:{SECRET}@", 1)


# -- 1. names from index.json ------------------------------------------------------------------

@pytest.fixture
def victims(tmp_path):
    """Two files outside the cache, named by index entries as ../../x and /abs/x."""
    root = Cache().root
    relative = root.parent / "victim_dir" / "important.txt"  # files/../../victim_dir/...
    absolute = tmp_path / "abs" / "victim.txt"
    for p in (relative, absolute):
        p.parent.mkdir(parents=True)
        p.write_bytes(PRECIOUS)
    plant_index({"../../victim_dir/important.txt": record("../../victim_dir/important.txt", PRECIOUS),
                 str(absolute): record(str(absolute), PRECIOUS)})
    return [relative, absolute]


def test_cache_check_reports_unsafe_names_as_damaged_and_hashes_nothing_outside(cli, victims):
    r = cli("cache", "check", "--json")
    assert r.code == 1, r.stderr  # was 0: both outside files hashed and "matching"
    rows = r.json()["checked"]
    assert len(rows) == 2
    for row in rows:
        assert row["ok"] is False and "damaged index entry" in row["problem"]
        assert "not a plain file name" in row["problem"]
        assert "sha256" not in row  # nothing was hashed
    r = cli("cache", "check")
    assert r.code == 1 and "damaged index entry" in r.stderr


def test_cache_rm_all_never_deletes_or_locks_outside_and_drops_the_bad_records(cli, victims):
    r = cli("cache", "rm", "--all", "--yes", "--json")
    assert r.code == 0, r.stderr
    for victim in victims:
        assert victim.read_bytes() == PRECIOUS  # was deleted
        assert not victim.with_name(victim.name + ".lock").exists()  # was left beside it
    assert r.json()["bytes"] == 0
    assert json.loads(Cache().index_path.read_text())["entries"] == {}
    assert cli("cache", "ls", "--json").json()["damaged"] == []


def test_cache_ls_lists_damaged_records_with_a_clear_message(cli, victims):
    r = cli("cache", "ls", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["entries"] == []
    assert sorted(d["key"] for d in doc["damaged"]) == sorted(
        ["../../victim_dir/important.txt", str(victims[1])])
    r = cli("cache", "ls")
    assert r.code == 0
    assert r.stderr.count("damaged index entry") == 2 and "msn cache rm --all" in r.stderr


@pytest.mark.parametrize("method", ["file_path", "partial_path", "partial_meta_path", "lock_path"])
@pytest.mark.parametrize("name", ["../x", "/abs/x", "..", "a/b", "", "x\n"])
def test_every_cache_path_refuses_a_name_that_is_not_one_plain_component(method, name):
    with pytest.raises(CacheError, match="never builds a path outside"):
        getattr(Cache(), method)(name)


def test_a_record_filed_under_another_name_is_damaged_not_followed(cli, tmp_path):
    victim = tmp_path / "v.txt"
    victim.write_bytes(PRECIOUS)
    plant_index({"ok.bin": record(str(victim), PRECIOUS)})
    doc = cli("cache", "ls", "--json").json()
    assert doc["entries"] == [] and doc["damaged"][0]["key"] == "ok.bin"
    assert cli("cache", "rm", "ok.bin", "--yes").code == 0
    assert victim.read_bytes() == PRECIOUS


# -- 2. download with such an entry ---------------------------------------------------------------

def test_download_never_writes_to_the_path_a_planted_entry_names(cli, server):
    data = body(50_000)
    url = server.add("/notes.txt", data)
    victim = Cache().root.parent / "victim3" / "notes.txt"
    victim.parent.mkdir(parents=True)
    victim.write_bytes(PRECIOUS)
    plant_index({"../../victim3/notes.txt": record("../../victim3/notes.txt", b"x" * 7, url)})
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert victim.read_bytes() == PRECIOUS  # was overwritten with the download
    path = Path(r.stdout.strip())
    assert path == Cache().file_path("notes.txt") and ".." not in str(path)
    assert path.read_bytes() == data


# -- 3. a planted partial symlink -----------------------------------------------------------------

@pytest.mark.parametrize("with_note", [True, False])
def test_a_symlinked_partial_is_replaced_never_written_through(cli, server, tmp_path, with_note):
    data = body(300_000)
    url = server.add("/run.bin", data)
    target = tmp_path / "target.txt"
    target.write_bytes(PRECIOUS)
    cache = Cache()
    cache.ensure()
    cache.partial_path("run.bin").symlink_to(target)
    if with_note:
        cache.partial_meta_path("run.bin").write_text(json.dumps({"url": url, "total": len(data)}))
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert target.read_bytes() == PRECIOUS
    final = cache.file_path("run.bin")
    assert not final.is_symlink() and final.is_file()
    assert final.read_bytes() == data


def test_a_symlinked_cached_file_is_not_hashed_but_fetched_again(cli, server, tmp_path):
    data = body(20_000)
    url = server.add("/run.bin", data)
    assert cli("download", url).code == 0
    outside = tmp_path / "outside.bin"
    outside.write_bytes(data)  # same bytes: a hash through the link would "match"
    final = Cache().file_path("run.bin")
    final.unlink()
    final.symlink_to(outside)
    r = cli("cache", "check", "--json")
    assert r.code == 1 and "not a regular file" in r.json()["checked"][0]["problem"]
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert not final.is_symlink() and final.read_bytes() == data and outside.read_bytes() == data


def test_a_symlinked_cache_subfolder_is_refused(cli, server, tmp_path):
    data = b"data" * 100
    url = server.add("/run.bin", data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "run.bin").write_bytes(PRECIOUS)
    cache = plant_index({"run.bin": record("run.bin", PRECIOUS, url)})
    shutil.rmtree(cache.root / "files")
    (cache.root / "files").symlink_to(elsewhere)
    for args in (("download", url), ("cache", "ls"), ("cache", "check"), ("cache", "rm", "--all", "--yes")):
        r = cli(*args)
        assert r.code == 3 and "symbolic link" in r.stderr, (args, r.stderr)
    assert [p.name for p in elsewhere.iterdir()] == ["run.bin"]
    assert (elsewhere / "run.bin").read_bytes() == PRECIOUS


def test_a_symlinked_lock_file_is_replaced_not_followed(cli, server, tmp_path):
    url = server.add("/run.bin", b"data" * 100)
    target = tmp_path / "target.txt"
    target.write_bytes(PRECIOUS)
    cache = Cache()
    cache.ensure()
    cache.lock_path("run.bin").symlink_to(target)
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert target.read_bytes() == PRECIOUS and not cache.lock_path("run.bin").is_symlink()


# -- 12. the cache's formats: malformed values are the format's own error --------------------------

def test_a_deeply_nested_index_is_a_cache_error_not_a_crash(cli):
    cache = Cache()
    cache.ensure()
    cache.index_path.write_text('{"version": 1, "entries": ' + "[" * 200_000 + "]" * 200_000 + "}")
    for args in (("cache", "ls"), ("cache", "check"), ("download", "vits16")):
        r = cli(*args)
        assert r.code == 3, (args, r.stderr)  # was 70: RecursionError
        assert "cache index" in r.stderr and "damaged" in r.stderr and "rm " in r.stderr


@pytest.mark.parametrize("doc", [[], {"entries": []}, {"entries": "x"}, "text", 7])
def test_an_index_of_the_wrong_shape_is_a_cache_error(cli, doc):
    cache = Cache()
    cache.ensure()
    cache.index_path.write_text(json.dumps(doc))
    r = cli("cache", "ls")
    assert r.code == 3 and "damaged" in r.stderr


@pytest.mark.parametrize("bad", [{"size": "big"}, {"size": -1}, {"size": True}, {"sha256": 5},
                                 {"url": ["x"]}, {"variant": {"x": 1}}, {"name": 3}])
def test_an_index_record_with_wrong_types_is_reported_and_ignored(cli, bad):
    rec = {**record("a.bin", b"abc"), **bad}
    plant_index({"a.bin": rec})
    r = cli("cache", "ls", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["entries"] == [] and r.json()["damaged"][0]["key"] == "a.bin"
    r = cli("cache", "check")
    assert r.code == 1 and "damaged index entry" in r.stderr


@pytest.mark.parametrize("note", [{"url": None, "total": "x"}, {"url": ["http://x/"], "total": 3},
                                  {"total": "x"}, {"url": "U", "etag": 5}, [1, 2], "[[[["])
def test_a_damaged_partial_note_restarts_the_transfer(cli, server, note):
    data = body(200_000)
    url = server.add("/run.bin", data)
    cache = Cache()
    cache.ensure()
    cache.partial_path("run.bin").write_bytes(b"garbage that is not the start of the file")
    if isinstance(note, dict):
        note = {k: (url if v in ("U", None) and k == "url" else v) for k, v in note.items()}
    cache.partial_meta_path("run.bin").write_text(note if isinstance(note, str) else json.dumps(note))
    r = cli("cache", "ls", "--json")
    assert r.code == 0, r.stderr  # was 70 (a total that is not a number, a url that is a list)
    part = r.json()["partial"][0]
    assert part["name"] == "run.bin" and part["url"] is None and part["total"] is None
    assert cli("cache", "ls").code == 0
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert cache.file_path("run.bin").read_bytes() == data
    assert r.json()["files"][0]["resumed_from"] == 0
    assert server.requests()[-1].range is None  # started over, nothing resumed from garbage


# -- 5. credentials in mirror URLs ----------------------------------------------------------------

def no_secret_on_disk(root: Path) -> None:
    for p in root.rglob("*"):
        if p.is_file() and not p.is_symlink():
            assert SECRET.encode() not in p.read_bytes(), p


def test_base_url_credentials_reach_the_request_only(cli, server):
    data = body(100_000)
    server.add("/m/vits16_800ep.pth.tar", data)
    base = with_credentials(server.url("/m/"))
    r = cli("download", "vits16", "--base-url", base, "--json")
    assert r.code == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    assert r.json()["files"][0]["url"] == server.url("/m/vits16_800ep.pth.tar")
    no_secret_on_disk(Cache().root)
    for args in (("cache", "ls"), ("cache", "ls", "--json"), ("cache", "check", "--json")):
        r = cli(*args)
        assert r.code == 0 and SECRET not in r.stdout + r.stderr
    assert "127.0.0.1" in cli("cache", "ls", "--json").stdout  # the URL is there, without them


def test_url_credentials_never_appear_in_errors(cli, server, monkeypatch):
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    missing = with_credentials(server.url("/missing.bin"))
    r = cli("download", missing)
    assert r.code == 4 and "404" in r.stderr and SECRET not in r.stderr
    assert server.url("/missing.bin") in r.stderr
    closed = f"http://alice:{SECRET}@127.0.0.1:9/x.bin"  # nothing listens on the discard port
    r = cli("download", closed)
    assert r.code == 4 and SECRET not in r.stderr and "127.0.0.1:9" in r.stderr
    r = cli("download", closed, missing, "--json")  # several: warnings and the JSON list
    assert r.code == 4 and SECRET not in r.stdout + r.stderr
    r = cli("download", "vits16", "--base-url", with_credentials(server.url("/nothing/")))
    assert r.code == 4 and SECRET not in r.stderr


def test_a_resumed_download_needs_no_stored_secret(cli, server, monkeypatch):
    data = body(3_000_000)
    server.add("/m/vits16_800ep.pth.tar", data)
    server.fault("/m/vits16_800ep.pth.tar", "cut", after=1_000_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    monkeypatch.setenv("MSN_BASE_URL", with_credentials(server.url("/m/")))
    r = cli("download", "vits16")
    assert r.code == 4 and SECRET not in r.stderr
    no_secret_on_disk(Cache().root)  # the partial note holds the URL without them
    r = cli("download", "vits16", "--json")  # the URL comes again from MSN_BASE_URL
    assert r.code == 0, r.stderr
    assert r.json()["files"][0]["resumed_from"] > 0
    assert Cache().file_path("vits16_800ep.pth.tar").read_bytes() == data


def test_manifest_card_and_commit_description_name_no_secret_and_no_mirror(cli, server, tmp_path):
    ckpt = write_checkpoint(tmp_path / "src" / "my_run.pth.tar", TINY)
    server.add("/internal/my_run.pth.tar", ckpt.read_bytes())
    url = with_credentials(server.url("/internal/my_run.pth.tar"))
    out = tmp_path / "out"
    r = cli("convert", url, out, "--json")
    assert r.code == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    manifest = json.loads((out / "msn_manifest.json").read_text())
    assert manifest["source"]["url"] == server.url("/internal/my_run.pth.tar")  # local record
    assert SECRET not in json.dumps(manifest)
    r = cli("push", out, "alice/my-run", "--dry-run", "--json")
    assert r.code == 0, r.stderr
    assert SECRET not in r.stdout + r.stderr
    from msn_cli.transfer.push import plan_push

    plan = plan_push(out, "alice/my-run")
    published = plan.card + plan.commit_description + "".join(
        (f.data or b"").decode() for f in plan.files if f.path == "msn_manifest.json")
    assert SECRET not in published
    assert "127.0.0.1" not in published and "/internal/" not in published  # never a host
    assert "my_run.pth.tar" in plan.card and "my_run.pth.tar" in plan.commit_description


def test_a_released_checkpoint_from_a_mirror_publishes_the_canonical_url(cli, server, tmp_path):
    mirror = tmp_path / "mirror"
    write_checkpoint(mirror / "vits16_800ep.pth.tar", arch_for("vits16"))
    server.add("/m/vits16_800ep.pth.tar", mirror / "vits16_800ep.pth.tar")
    out = tmp_path / "out"
    # fetched by its released name (from a mirror) and verified: the release is what verify saw
    r = cli("convert", "vits16", out, "--base-url", with_credentials(server.url("/m/")))
    assert r.code == 0, r.stderr
    canonical = VARIANTS["vits16"].url()
    manifest = json.loads((out / "msn_manifest.json").read_text())
    assert manifest["source"]["url"] == canonical
    from msn_cli.transfer.push import plan_push

    plan = plan_push(out, "alice/vits16")
    assert f"Source checkpoint: <{canonical}>" in plan.card
    assert f"Source: {canonical}" in plan.commit_description
    published = plan.card + plan.commit_description + "".join(
        (f.data or b"").decode() for f in plan.files if f.path == "msn_manifest.json")
    assert "127.0.0.1" not in published and SECRET not in published


def test_hf_endpoint_credentials_stay_out_of_push_output(cli, folder, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", f"http://alice:{SECRET}@127.0.0.1:9")
    r = cli("push", folder, "alice/x", "--dry-run", "--json")
    assert r.code == 0 and SECRET not in r.stdout and r.json()["endpoint"] == "http://127.0.0.1:9"
    r = cli("push", folder, "alice/x", "--token", "hf_test_token_0123456789")
    assert r.code == 4 and SECRET not in r.stderr and "127.0.0.1:9" in r.stderr


# -- 10. verify fetches on a folder's word only what is released ------------------------------------

def _point_manifest_at(folder: Path, **source) -> None:
    path = folder / "msn_manifest.json"
    manifest = json.loads(path.read_text())
    manifest["source"].update(path=str(folder / "gone.pth.tar"), **source)
    path.write_text(json.dumps(manifest))


def _source_bytes(folder: Path, tmp_path_factory) -> bytes:
    from tests.conftest import verified_source_path

    return (verified_source_path(tmp_path_factory).parent / "vit-tiny.pth.tar").read_bytes()


def test_verify_does_not_download_a_url_named_by_the_manifest(cli, folder, server, tmp_path_factory):
    url = server.add("/internal/huge.pth.tar", _source_bytes(folder, tmp_path_factory))
    _point_manifest_at(folder, kind="url", name=None, url=url)
    r = cli("verify", folder, "--json")
    assert r.code == 3, r.stderr  # was 0, after downloading the URL into the cache
    assert server.requests() == []
    assert "--source" in r.stderr and "not a released checkpoint" in r.stderr
    # given explicitly, the same URL is fetched, and the folder verifies
    r = cli("verify", folder, "--source", url, "--json")
    assert r.code == 0, r.stderr
    assert len(server.requests()) == 1


def test_verify_uses_a_manifest_url_already_in_the_cache_offline(cli, folder, server, tmp_path_factory,
                                                                 monkeypatch):
    url = server.add("/internal/run.pth.tar", _source_bytes(folder, tmp_path_factory))
    assert cli("download", url).code == 0
    _point_manifest_at(folder, kind="url", name=None, url=with_credentials(url))
    monkeypatch.setenv("MSN_OFFLINE", "1")
    r = cli("verify", folder, "--json")
    assert r.code == 0, r.stderr
    assert len(server.requests()) == 1  # the first download only
    assert SECRET not in r.stdout + r.stderr


def test_verify_fetches_a_released_checkpoint_by_name_from_the_users_mirror(cli, folder, server):
    server.add("/m/vits16_800ep.pth.tar", b"not the file")
    _point_manifest_at(folder, kind="url", name=None, url=VARIANTS["vits16"].url())
    r = cli("verify", folder, "--base-url", server.url("/m/"))
    assert [q.path for q in server.requests()] == ["/m/vits16_800ep.pth.tar"]
    assert r.code == 3  # the mirror's file is no checkpoint: a clear error, after the fetch


# -- 14. OUT is never a cache -----------------------------------------------------------------------

def test_convert_force_refuses_to_replace_a_cache_folder(cli, server, tiny_ckpt):
    url = server.add("/run.bin", b"data" * 100)
    assert cli("download", url).code == 0
    cache = Cache()
    before = sorted(p.relative_to(cache.root) for p in cache.root.rglob("*"))
    r = cli("convert", tiny_ckpt, cache.root, "--force", "--no-verify")
    assert r.code == 2 and "CACHEDIR.TAG" in r.stderr
    assert sorted(p.relative_to(cache.root) for p in cache.root.rglob("*")) == before
    assert cache.get("run.bin") is not None
