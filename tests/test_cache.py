"""The cache: where it is, its layout and index, and ``msn cache ls / rm / check``."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from msn_cli.original.variants import VARIANTS
from msn_cli.transfer.cache import Cache, default_cache_dir
from msn_cli.transfer.download import settings


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(settings, "BACKOFF", 0.01)


def blob(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n)


@pytest.fixture
def filled(cli, server):
    """A cache with two released names (from a mirror) and one URL download."""
    a, b, c = blob(70_000, 1), blob(120_000, 2), blob(33_333, 3)
    server.add(f"/m/{VARIANTS['vits16'].filename}", a)
    server.add(f"/m/{VARIANTS['vitb4'].filename}", b)
    url = server.add("/other/my_run.pth.tar", c)
    assert cli("download", "vits16", "vitb4", "--base-url", server.url("/m/")).code == 0
    assert cli("download", url).code == 0
    return {"vits16_800ep.pth.tar": a, "vitb4_300ep.pth.tar": b, "my_run.pth.tar": c, "url": url}


def test_location_order_is_resolved_at_call_time(monkeypatch, tmp_path):
    monkeypatch.setenv("MSN_CACHE", str(tmp_path / "a"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "a"
    assert Cache(tmp_path / "explicit").root == tmp_path / "explicit"
    monkeypatch.delenv("MSN_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "msn"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "msn"
    assert Cache().root == tmp_path / "home" / ".cache" / "msn"


def test_cache_dir_option_wins_over_environment(cli, server, tmp_path):
    url = server.add("/f.bin", b"abc" * 1000)
    r = cli("download", url, "--cache-dir", tmp_path / "mine")
    assert r.code == 0
    assert Path(r.stdout.strip()) == tmp_path / "mine" / "files" / "f.bin"
    assert (tmp_path / "mine" / "CACHEDIR.TAG").is_file()
    assert Cache().entries() == []  # $MSN_CACHE untouched


def test_ls_json_lists_entries_partials_and_total(cli, filled, server, monkeypatch):
    url = server.add("/p/half.bin", blob(400_000, 9))
    server.fault("/p/half.bin", "short", times=None, after=150_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    assert cli("download", url).code == 4
    r = cli("cache", "ls", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["cache_dir"] == str(Cache().root)
    names = {e["name"]: e for e in doc["entries"]}
    assert set(names) == {"vits16_800ep.pth.tar", "vitb4_300ep.pth.tar", "my_run.pth.tar"}
    assert names["vits16_800ep.pth.tar"]["variant"] == "vits16"
    assert names["my_run.pth.tar"]["variant"] is None and names["my_run.pth.tar"]["url"] == filled["url"]
    for name, e in names.items():
        assert e["size"] == len(filled[name]) and e["intact"] is True
        assert Path(e["path"]).read_bytes() == filled[name]
    assert [p["name"] for p in doc["partial"]] == ["half.bin"]
    assert doc["partial"][0]["size"] == 150_000 and doc["partial"][0]["total"] == 400_000
    assert doc["total_bytes"] == sum(len(filled[n]) for n in names) + 150_000
    # The table names everything too.
    r = cli("cache", "ls")
    assert r.code == 0
    for name in [*names, "half.bin"]:
        assert name in r.stdout


def test_ls_on_an_empty_cache(cli):
    r = cli("cache", "ls", "--json")
    assert r.code == 0
    assert r.json()["entries"] == [] and r.json()["total_bytes"] == 0


def test_rm_by_released_name_with_yes(cli, filled):
    r = cli("cache", "rm", "vits16", "--yes", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert [x["name"] for x in doc["removed"]] == ["vits16_800ep.pth.tar"]
    assert doc["bytes"] == len(filled["vits16_800ep.pth.tar"])
    assert not Cache().file_path("vits16_800ep.pth.tar").exists()
    assert {e.name for e in Cache().entries()} == {"vitb4_300ep.pth.tar", "my_run.pth.tar"}


def test_rm_by_url_and_entry_name(cli, filled):
    assert cli("cache", "rm", filled["url"], "vitb4_300ep.pth.tar", "-y").code == 0
    assert {e.name for e in Cache().entries()} == {"vits16_800ep.pth.tar"}


def test_rm_without_yes_and_no_terminal_refuses(cli, filled):
    r = cli("cache", "rm", "--all")
    assert r.code == 2 and "--yes" in r.stderr
    assert len(Cache().entries()) == 3


@pytest.mark.parametrize(("answer", "kept"), [("n\n", 3), ("y\n", 0), ("", 3)])  # "": Ctrl-D
def test_rm_prompts_when_interactive(cli, filled, monkeypatch, answer, kept):
    from msn_cli.cli import cache_cmd

    monkeypatch.setattr(cache_cmd, "_stdin_interactive", lambda: True)
    monkeypatch.setattr("sys.stdin", io.StringIO(answer))
    r = cli("cache", "rm", "--all")
    assert r.code == 0, r.stderr
    assert "Delete" in r.stderr
    assert len(Cache().entries()) == kept
    assert len(list((Cache().root / "files").iterdir())) == kept


def test_rm_all_removes_partials_too(cli, filled, server, monkeypatch):
    url = server.add("/p/half.bin", blob(400_000, 9))
    server.fault("/p/half.bin", "short", after=100_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    assert cli("download", url).code == 4
    r = cli("cache", "rm", "--all", "--yes", "--json")
    assert r.code == 0
    assert r.json()["bytes"] == sum(len(v) for k, v in filled.items() if k != "url") + 100_000
    assert cli("cache", "ls", "--json").json()["total_bytes"] == 0
    assert (Cache().root / "CACHEDIR.TAG").exists()  # the cache itself stays


def test_rm_unknown_name_is_a_usage_error(cli, filled):
    r = cli("cache", "rm", "vitl16", "--yes")
    assert r.code == 2 and "msn cache ls" in r.stderr
    assert len(Cache().entries()) == 3


def test_check_passes_then_finds_damage(cli, filled):
    r = cli("cache", "check", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["ok"] is True and len(r.json()["checked"]) == 3
    path = Cache().file_path("vitb4_300ep.pth.tar")
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    r = cli("cache", "check", "--json")
    assert r.code == 1
    bad = [c for c in r.json()["checked"] if not c["ok"]]
    assert [c["name"] for c in bad] == ["vitb4_300ep.pth.tar"]
    assert "sha256 differs" in bad[0]["problem"]
    assert cli("cache", "check", "vits16").code == 0  # only the one asked for


def test_check_of_a_name_not_in_the_cache_reports_it_missing(cli, filled):
    r = cli("cache", "check", "vits16", "vitl16", "--json")
    assert r.code == 1  # as the help says: a missing file fails the check
    rows = {c["name"]: c for c in r.json()["checked"]}
    assert rows["vitl16_600ep.pth.tar"]["problem"] == "not in the cache"
    assert rows["vits16_800ep.pth.tar"]["ok"] is True
    r = cli("cache", "check", "nothing-like-it.pth")
    assert r.code == 1 and "nothing-like-it.pth: not in the cache" in r.stderr


def test_damaged_index_is_a_clear_error(cli, filled):
    Cache().index_path.write_text("{ not json")
    r = cli("cache", "ls")
    assert r.code == 3
    assert "index" in r.stderr and "Traceback" not in r.stderr


def test_index_records_what_the_issue_asks(filled):
    doc = json.loads(Cache().index_path.read_text())
    assert doc["version"] == 1
    e = doc["entries"]["my_run.pth.tar"]
    assert set(e) >= {"url", "size", "sha256", "downloaded_at"}


def test_same_basename_from_two_urls_gets_two_entries(cli, server):
    u1 = server.add("/a/model.pth", b"one" * 100)
    u2 = server.add("/b/model.pth", b"two" * 100)
    p1 = Path(cli("download", u1).stdout.strip())
    p2 = Path(cli("download", u2).stdout.strip())
    assert p1 != p2
    assert p1.read_bytes() == b"one" * 100 and p2.read_bytes() == b"two" * 100
    assert Path(cli("download", u1).stdout.strip()) == p1


@pytest.mark.parametrize("command", [("cache", "ls"), ("download", "vits16")])
def test_a_cache_location_that_is_a_file_is_an_error(cli, tmp_path, monkeypatch, command):
    monkeypatch.setenv("MSN_OFFLINE", "1")
    not_a_dir = tmp_path / "cache-file"
    not_a_dir.write_text("not a folder")
    r = cli(*command, "--cache-dir", not_a_dir, "--json")
    assert r.code == 3
    assert "is a file, not a folder" in r.stderr and r.stdout == ""
    assert not_a_dir.read_text() == "not a folder"


# -- files the index lost, --force, and hf's habits ---------------------------------------------


def test_files_without_an_index_entry_are_adopted_listed_and_removable(cli, server, filled):
    import hashlib

    (Cache().root / "index.json").unlink()  # what the hint for a damaged index says to do
    n = len(server.requests())
    r = cli("cache", "ls", "--json")
    assert r.code == 0, r.stderr
    got = {e["name"]: e for e in r.json()["entries"]}
    assert set(got) == {"vits16_800ep.pth.tar", "vitb4_300ep.pth.tar", "my_run.pth.tar"}
    for name, e in got.items():
        assert e["sha256"] == hashlib.sha256(filled[name]).hexdigest() and e["intact"]
    assert got["vits16_800ep.pth.tar"]["variant"] == "vits16"
    assert r.json()["total_bytes"] == sum(len(filled[k]) for k in got)
    # the next download uses the adopted file: not one request
    r = cli("download", "vits16", "--base-url", server.url("/m/"))
    assert r.code == 0 and len(server.requests()) == n
    (Cache().root / "index.json").unlink()
    r = cli("cache", "rm", "--all", "--yes", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["bytes"] == sum(len(filled[k]) for k in got)
    assert list((Cache().root / "files").iterdir()) == []


def test_an_orphan_is_adopted_by_the_download_that_wants_it(cli, server, filled):
    (Cache().root / "index.json").unlink()
    n = len(server.requests())
    r = cli("download", filled["url"], "--json")
    assert r.code == 0, r.stderr
    assert len(server.requests()) == n
    assert r.json()["files"][0]["downloaded"] is False


def test_force_keeps_the_old_file_until_the_new_one_is_complete(cli, server, filled, monkeypatch):
    url = filled["url"]
    entry = Cache().get("my_run.pth.tar")
    server.fault("/other/my_run.pth.tar", "cut", times=None, after=10_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    r = cli("download", url, "--force")
    assert r.code == 4
    assert Cache().file_path("my_run.pth.tar").read_bytes() == filled["my_run.pth.tar"]
    assert Cache().get("my_run.pth.tar") == entry
    server.clear_faults()
    n = len(server.requests())
    r = cli("download", url)  # the old file is still the cached one
    assert r.code == 0 and len(server.requests()) == n
    server.add("/other/my_run.pth.tar", new := blob(44_444, 9))
    r = cli("download", url, "--force")
    assert r.code == 0, r.stderr
    assert Cache().file_path("my_run.pth.tar").read_bytes() == new
    assert Cache().get("my_run.pth.tar").size == len(new)


def test_list_and_verify_are_ls_and_check(cli, filled):
    assert cli("cache", "list", "--json").json() == cli("cache", "ls", "--json").json()
    v, c = cli("cache", "verify", "--json"), cli("cache", "check", "--json")
    assert v.code == c.code == 0 and v.json() == c.json()


def test_rm_dry_run_removes_nothing_and_says_what_it_would(cli, filled):
    files = sorted(p.name for p in (Cache().root / "files").iterdir())
    index = (Cache().root / "index.json").read_bytes()
    r = cli("cache", "rm", "--all", "--dry-run", "--json")
    assert r.code == 0, r.stderr
    doc = r.json()
    assert doc["dry_run"] is True and doc["removed"] == []
    assert sorted(w["name"] for w in doc["would_remove"]) == files
    assert doc["bytes"] == sum(len(filled[n]) for n in files)
    r = cli("cache", "rm", "vits16", "--dry-run")  # no --yes needed: nothing is removed
    assert r.code == 0 and "vits16_800ep.pth.tar" in r.stdout and "would remove 1" in r.stderr
    assert sorted(p.name for p in (Cache().root / "files").iterdir()) == files
    assert (Cache().root / "index.json").read_bytes() == index


def test_ls_at_80_columns_is_one_line_per_file_and_never_splits_a_url(cli, server, filled,
                                                                      monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    long_url = server.add("/a/rather/long/path/to/a/mirror/of/the/checkpoints/" + "x" * 40
                          + "/big_run.pth.tar", blob(3_000_000, 5))
    server.fault("/a/rather/long/path/to/a/mirror/of/the/checkpoints/" + "x" * 40
                 + "/big_run.pth.tar", "cut", after=1_000_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    assert cli("download", long_url).code == 4  # leaves a partial download
    r = cli("cache", "ls")
    assert r.code == 0, r.stderr
    lines = r.stdout.splitlines()
    cut = lines.index("sources:")
    table, sources = lines[:cut], lines[cut + 1:]
    urls = [filled["url"], long_url, server.url(f"/m/{VARIANTS['vits16'].filename}"),
            server.url(f"/m/{VARIANTS['vitb4'].filename}")]
    for u in urls:
        assert sum(x.endswith(" " + u) for x in sources) == 1, (u, r.stdout)  # whole, on one line
    assert len(sources) == len(urls)
    assert all(len(x) <= 80 for x in table), r.stdout
    for name in ("vits16_800ep.pth.tar", "vitb4_300ep.pth.tar", "my_run.pth.tar", "big_run.pth.tar"):
        assert sum(name in x for x in table) == 1, (name, r.stdout)  # one row each
    assert len(lines) <= 16, r.stdout


def test_check_hashes_an_adopted_file_once(cli, filled, monkeypatch):
    from msn_cli.transfer import cache as cache_mod

    (Cache().root / "index.json").unlink()
    hashed = []
    real = cache_mod.sha256_file
    monkeypatch.setattr(cache_mod, "sha256_file", lambda p, *a: hashed.append(p.name) or real(p, *a))
    r = cli("cache", "verify", "--json")
    assert r.code == 0, r.stderr
    assert sorted(hashed) == sorted(n for n in filled if n != "url")  # once each
    assert all(row["ok"] for row in r.json()["checked"])
