"""``msn download`` against a real HTTP server on 127.0.0.1 with injected faults."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest
from http_server import FileServer

from msn_cli.transfer import download as dl
from msn_cli.transfer.cache import Cache
from msn_cli.transfer.download import partfile, settings
from msn_cli.transfer.partial import PartialNote, write_partial_note

SIZE = 3 * 1024 * 1024 + 12345


@pytest.fixture(autouse=True)
def _fast_backoff(monkeypatch):
    monkeypatch.setattr(settings, "BACKOFF", 0.01)


def payload(size: int = SIZE, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


@pytest.fixture
def served(server):
    data = payload()
    url = server.add("/files/run_a.pth.tar", data)
    return server, url, data


def cache() -> Cache:
    return Cache()  # MSN_CACHE, as the isolation fixture set it


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_url_prints_path_and_records_index(cli, served):
    _server, url, data = served
    r = cli("download", url)
    assert r.code == 0, r.stderr
    path = Path(r.stdout.strip())
    assert path == cache().file_path("run_a.pth.tar")
    assert path.read_bytes() == data
    entry = cache().get("run_a.pth.tar")
    assert entry is not None
    assert (entry.url, entry.size, entry.sha256) == (url, len(data), sha(data))
    assert entry.downloaded_at.endswith("Z")
    assert not list((cache().root / "partial").iterdir())
    tag = (cache().root / "CACHEDIR.TAG").read_text()
    assert tag.startswith("Signature: 8a477f597d28d172789f06886806bc55")


def test_cached_file_is_reused_without_network(cli, served):
    server, url, data = served
    assert cli("download", url).code == 0
    before = len(server.log)
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert len(server.log) == before  # no request at all
    f = r.json()["files"][0]
    assert f["downloaded"] is False and f["sha256"] == sha(data) and f["size"] == len(data)


def test_cut_mid_body_resumes_in_a_second_run(cli, served, monkeypatch):
    server, url, data = served
    server.fault("/files/run_a.pth.tar", "cut", times=None, after=1_500_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    r = cli("download", url)
    assert r.code == 4
    assert "connection broke" in r.stderr and "resume" in r.stderr
    part = cache().partial_path("run_a.pth.tar")
    have = part.stat().st_size
    assert 0 < have <= 1_500_000
    assert part.read_bytes() == data[:have]
    assert cache().get("run_a.pth.tar") is None
    assert not cache().file_path("run_a.pth.tar").exists()

    server.clear_faults()
    first_run = len(server.requests())
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    second = server.requests()[first_run:]
    assert len(second) == 1
    assert second[0].range == f"bytes={have}-" and second[0].status == 206
    assert second[0].sent == len(data) - have  # nothing sent twice
    f = r.json()["files"][0]
    assert f["resumed_from"] == have and f["sha256"] == sha(data)
    assert Path(f["path"]).read_bytes() == data
    assert not part.exists()


def test_500_then_success_retries(cli, served):
    server, url, data = served
    server.fault("/files/run_a.pth.tar", "error", times=2, status=503)
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert [q.status for q in server.requests()] == [503, 503, 200]
    assert Path(r.json()["files"][0]["path"]).read_bytes() == data
    assert "retrying" in r.stderr


def test_persistent_500_gives_up_after_bounded_retries(cli, served, monkeypatch):
    server, url, _ = served
    server.fault("/files/run_a.pth.tar", "error", times=None)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "2")
    r = cli("download", url)
    assert r.code == 4
    assert "HTTP 500" in r.stderr and "after 3 attempts" in r.stderr
    assert len(server.requests()) == 3
    assert cache().get("run_a.pth.tar") is None


def test_connection_refused_is_a_network_error(cli, monkeypatch):
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    with FileServer() as srv:
        url = srv.url("/gone.bin")
    r = cli("download", url)  # the server is gone: nothing listens on that port
    assert r.code == 4
    assert "cannot reach 127.0.0.1" in r.stderr
    assert "Traceback" not in r.stderr


def test_server_that_ignores_range_is_handled_by_starting_over(cli, served, monkeypatch):
    server, url, data = served
    server.fault("/files/run_a.pth.tar", "cut", times=1, after=1_000_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    assert cli("download", url).code == 4
    have = cache().partial_path("run_a.pth.tar").stat().st_size
    assert have > 0
    server.fault("/files/run_a.pth.tar", "ignore_range", times=None)
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    last = server.requests()[-1]
    assert last.range == f"bytes={have}-" and last.status == 200 and last.sent == len(data)
    f = r.json()["files"][0]
    assert f["resumed_from"] == 0 and f["sha256"] == sha(data)
    assert Path(f["path"]).read_bytes() == data
    assert "does not support resuming" in r.stderr


def test_short_body_once_is_resumed_in_the_same_run(cli, served):
    server, url, data = served
    server.fault("/files/run_a.pth.tar", "short", times=1, after=700_000)
    r = cli("download", url)
    assert r.code == 0, r.stderr
    reqs = server.requests()
    assert [q.status for q in reqs] == [200, 206]
    assert reqs[0].sent == 700_000 and reqs[1].range == "bytes=700000-"
    assert reqs[1].sent == len(data) - 700_000
    assert Path(r.stdout.strip()).read_bytes() == data


def test_short_body_every_time_fails_clearly_and_marks_nothing_good(cli, served, monkeypatch):
    server, url, _ = served
    server.fault("/files/run_a.pth.tar", "short", times=None, after=0)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "1")
    r = cli("download", url)
    assert r.code == 4
    assert "the body ended" in r.stderr
    assert cache().get("run_a.pth.tar") is None
    assert not cache().file_path("run_a.pth.tar").exists()


def test_404_is_a_clear_error_and_nothing_is_cached(cli, server):
    r = cli("download", server.url("/nope/missing.pth.tar"))
    assert r.code == 4
    assert "HTTP 404" in r.stderr and "Traceback" not in r.stderr
    assert len(server.requests()) == 1  # not retried
    assert cache().entries() == []
    assert not any((cache().root / "files").iterdir())


def test_wrong_sha256_deletes_the_download(cli, served):
    _server, url, data = served
    r = cli("download", url, "--sha256", "0" * 64)
    assert r.code == 4
    assert sha(data) in r.stderr and "deleted" in r.stderr
    assert cache().entries() == []
    assert not cache().file_path("run_a.pth.tar").exists()
    assert not cache().partial_path("run_a.pth.tar").exists()


def test_right_sha256_pin_passes_and_is_checked_against_the_index(cli, served):
    server, url, data = served
    r = cli("download", url, "--sha256", sha(data).upper())
    assert r.code == 0, r.stderr
    n = len(server.log)
    r = cli("download", url, "--sha256", "f" * 64)  # cached, but not the pinned file
    assert r.code == 4 and "not the expected" in r.stderr
    assert len(server.log) == n


@pytest.mark.parametrize("bad", ["abc", "z" * 64])
def test_malformed_sha256_is_a_usage_error(cli, served, bad):
    _, url, _ = served
    r = cli("download", url, "--sha256", bad)
    assert r.code == 2 and "64 hexadecimal" in r.stderr


def test_unknown_name_and_bad_scheme_are_usage_errors(cli):
    r = cli("download", "vits17")
    assert r.code == 2 and "did you mean 'vits16'" in r.stderr
    r = cli("download", "ftp://example.org/a.pth.tar")
    assert r.code == 2 and "ftp://" in r.stderr
    r = cli("download")
    assert r.code == 2 and "nothing to download" in r.stderr


@pytest.mark.parametrize("var", ["MSN_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_never_touches_the_network(cli, served, monkeypatch, var):
    server, url, data = served
    monkeypatch.setenv(var, "1")
    r = cli("download", url)
    assert r.code == 4
    assert var in r.stderr and "msn download" in r.stderr
    r = cli("download", "vits16", "--base-url", server.url("/"))
    assert r.code == 4 and "vits16_800ep.pth.tar" in r.stderr
    assert server.log == []
    # A cached file is fine offline.
    monkeypatch.delenv(var)
    assert cli("download", url).code == 0
    monkeypatch.setenv(var, "1")
    n = len(server.log)
    r = cli("download", url)
    assert r.code == 0 and Path(r.stdout.strip()).read_bytes() == data
    assert len(server.log) == n


def test_size_mismatch_in_cache_downloads_again(cli, served):
    server, url, data = served
    assert cli("download", url).code == 0
    path = cache().file_path("run_a.pth.tar")
    with open(path, "r+b") as f:
        f.truncate(1000)
    r = cli("download", url)
    assert r.code == 0
    assert len(server.requests()) == 2
    assert path.read_bytes() == data


def test_verify_rehashes_and_replaces_a_damaged_file(cli, served):
    server, url, data = served
    assert cli("download", url).code == 0
    r = cli("download", url, "--verify", "--json")
    assert r.code == 0 and r.json()["files"][0]["verified"] is True
    assert len(server.requests()) == 1
    path = cache().file_path("run_a.pth.tar")
    damaged = bytearray(data)
    damaged[12345] ^= 0xFF
    path.write_bytes(bytes(damaged))  # same size: only a hash notices
    r = cli("download", url)  # the cheap check passes: no network
    assert r.code == 0 and len(server.requests()) == 1
    r = cli("download", url, "--verify", "--json")
    assert r.code == 0, r.stderr
    assert "damaged" in r.stderr and r.json()["files"][0]["downloaded"] is True
    assert len(server.requests()) == 2
    assert path.read_bytes() == data


def test_force_downloads_again(cli, served):
    server, url, _data = served
    assert cli("download", url).code == 0
    r = cli("download", url, "--force", "--json")
    assert r.code == 0 and r.json()["files"][0]["downloaded"] is True
    assert len(server.requests()) == 2


def test_no_content_length_still_downloads(cli, served):
    server, url, data = served
    server.fault("/files/run_a.pth.tar", "no_length")
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert Path(r.stdout.strip()).read_bytes() == data


def test_file_changed_on_server_restarts_instead_of_mixing(cli, server, monkeypatch):
    old, new = payload(seed=1), payload(seed=2)
    url = server.add("/x.bin", old)
    server.fault("/x.bin", "cut", after=1_000_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    assert cli("download", url).code == 4
    assert cache().partial_path("x.bin").stat().st_size > 0
    server.add("/x.bin", new)  # new ETag: If-Range does not match, the server sends all of it
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert server.requests()[-1].status == 200
    assert Path(r.stdout.strip()).read_bytes() == new


def test_released_names_through_base_url_and_env(cli, server, monkeypatch):
    files = {}
    for i, name in enumerate(["vits16", "vitb16", "vitl16", "vitb4", "vitl7"]):
        from msn_cli.original.variants import VARIANTS

        files[name] = payload(50_000 + i, seed=10 + i)
        server.add(f"/mirror/msn/{VARIANTS[name].filename}", files[name])
    monkeypatch.setenv("MSN_BASE_URL", server.url("/mirror/msn/"))
    r = cli("download", "--all", "--json")
    assert r.code == 0, r.stderr
    got = {f["variant"]: f for f in r.json()["files"]}
    assert set(got) == set(files)
    for name, data in files.items():
        assert Path(got[name]["path"]).read_bytes() == data
        assert got[name]["url"] == server.url(f"/mirror/msn/{Path(got[name]['path']).name}")
    # Plain output: one path per line, in order.
    monkeypatch.delenv("MSN_BASE_URL")
    r = cli("download", "vitb4", "vits16")
    assert r.code == 0
    assert [Path(p).name for p in r.stdout.split()] == ["vitb4_300ep.pth.tar", "vits16_800ep.pth.tar"]


def test_one_failure_among_several_still_downloads_the_rest(cli, server):
    from msn_cli.original.variants import VARIANTS

    server.add(f"/m/{VARIANTS['vits16'].filename}", b"x" * 1000)
    r = cli("download", "vits16", "vitb16", "--base-url", server.url("/m"), "--json")
    assert r.code == 4
    doc = r.json()
    assert [f["variant"] for f in doc["files"]] == ["vits16"]
    assert doc["failed"][0]["spec"] == "vitb16" and "404" in doc["failed"][0]["error"]
    assert "1 of 2 downloads failed" in r.stderr


def test_progress_reports_bytes_and_total(served, tmp_path):
    _server, url, data = served
    calls = []
    dl.fetch(url, cache_dir=tmp_path / "c", progress=lambda s, d, t: calls.append((s, d, t)))
    stages = {s for s, _, _ in calls}
    assert stages == {"run_a.pth.tar"}
    assert calls[-1][1:] == (len(data), len(data))
    dones = [d for _, d, _ in calls]
    assert dones == sorted(dones)


def test_interrupt_in_library_keeps_the_partial_for_resume(served, tmp_path):
    server, url, data = served
    server.fault("/files/run_a.pth.tar", "slow", delay=0.001, step=256 * 1024)

    def stop_midway(stage, done, total):
        if done > 1_000_000:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        dl.fetch(url, cache_dir=tmp_path / "c", progress=stop_midway)
    c = Cache(tmp_path / "c")
    have = c.partial_path("run_a.pth.tar").stat().st_size
    assert have > 1_000_000
    got = dl.fetch(url, cache_dir=tmp_path / "c")
    assert got.resumed_from == have and got.path.read_bytes() == data
    assert json.loads(c.index_path.read_text())["entries"]["run_a.pth.tar"]["sha256"] == sha(data)


def test_disk_check_message_when_space_is_short(served, tmp_path, monkeypatch):
    from msn_cli.errors import CacheError

    _, url, _ = served
    monkeypatch.setattr(partfile, "disk_free", lambda path: 10)
    with pytest.raises(CacheError, match="not enough space"):
        dl.fetch(url, cache_dir=tmp_path / "c")


def test_cache_location_is_read_when_called(served, monkeypatch, tmp_path):
    _, url, _ = served
    monkeypatch.setenv("MSN_CACHE", str(tmp_path / "late"))
    got = dl.fetch(url)
    assert got.path.is_relative_to(tmp_path / "late")
    assert os.path.exists(tmp_path / "late" / "index.json")


def test_disk_write_failure_is_a_cache_error_and_keeps_the_partial(cli, served, monkeypatch):
    import errno

    _, url, data = served
    real_pwrite = os.pwrite
    seen = []

    def pwrite(fd, view, pos):
        seen.append(len(view))
        if sum(seen) > 1_000_000:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwrite(fd, view, pos)

    monkeypatch.setattr(os, "pwrite", pwrite)
    r = cli("download", url)
    assert r.code == 3
    assert "No space left on device" in r.stderr and "Traceback" not in r.stderr
    assert cache().get("run_a.pth.tar") is None
    have = cache().partial_path("run_a.pth.tar").stat().st_size
    assert 0 < have < len(data)
    monkeypatch.setattr(os, "pwrite", real_pwrite)
    r = cli("download", url, "--json")
    assert r.code == 0 and r.json()["files"][0]["resumed_from"] == have


def test_unusable_cache_folder_is_a_clear_error(cli, served, tmp_path):
    _, url, _ = served
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    r = cli("download", url, "--cache-dir", blocker / "cache")
    assert r.code == 3
    assert "cannot use the cache folder" in r.stderr and "Traceback" not in r.stderr


def test_complete_partial_left_before_the_rename_is_finished_without_a_body(cli, served):
    # A run killed after the last byte arrived but before the rename: the server answers the
    # Range request with 416, and the partial is checked and moved into place.
    server, url, data = served
    c = cache()
    c.ensure()
    c.partial_path("run_a.pth.tar").write_bytes(data)
    etag = '"' + sha(data)[:16] + '"'  # the test server's, which the first run noted
    write_partial_note(c.partial_meta_path("run_a.pth.tar"), PartialNote(url, etag, total=len(data)))
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    reqs = server.requests()
    assert [(q.status, q.sent) for q in reqs] == [(416, 0)]
    f = r.json()["files"][0]
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data
    assert "━" not in r.stderr  # no progress bar when stderr is not a terminal


def test_partial_from_another_url_is_not_spliced(cli, served):
    server, url, data = served
    c = cache()
    c.ensure()
    c.partial_path("run_a.pth.tar").write_bytes(b"junk" * 1000)
    write_partial_note(c.partial_meta_path("run_a.pth.tar"), PartialNote(url + "?old"))
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert server.requests()[0].range is None
    assert Path(r.stdout.strip()).read_bytes() == data


def test_verify_works_offline_on_a_cached_file(cli, served, monkeypatch):
    server, url, _ = served
    assert cli("download", url).code == 0
    monkeypatch.setenv("MSN_OFFLINE", "1")
    r = cli("download", url, "--verify", "--json")
    assert r.code == 0, r.stderr
    assert r.json()["files"][0]["verified"] is True
    assert len(server.requests()) == 1
    Cache().file_path("run_a.pth.tar").write_bytes(b"broken")  # size differs now
    r = cli("download", url)
    assert r.code == 4 and "MSN_OFFLINE" in r.stderr
    assert len(server.requests()) == 1


@pytest.mark.parametrize("answer_etag", ['"v2"', None])
def test_a_206_of_another_version_starts_over_instead_of_splicing(cli, server, monkeypatch,
                                                                  answer_etag):
    """The file changed on the server and the server (or a proxy) ignores If-Range: it answers
    the resume with 206 under another ETag, or none. Its bytes are not appended to the old ones."""
    old, new = payload(seed=1), payload(seed=2)
    url = server.add("/x.bin", old)
    server.fault("/x.bin", "cut", after=1_000_000)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    assert cli("download", url).code == 4
    have = cache().partial_path("x.bin").stat().st_size
    assert have > 0
    server.add("/x.bin", new)
    server.fault("/x.bin", "swap_etag", etag=answer_etag, ranged=True)
    monkeypatch.delenv("MSN_DOWNLOAD_RETRIES")
    before = len(server.requests())
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert "changed on the server" in r.stderr and "resuming" not in r.stderr
    asked = server.requests()[before:]
    assert [(q.range, q.status) for q in asked] == [(f"bytes={have}-", 206), (None, 200)]
    f = r.json()["files"][0]
    assert f["resumed_from"] == 0 and f["sha256"] == sha(new)
    assert Path(f["path"]).read_bytes() == new
    assert cache().get("x.bin").sha256 == sha(new)


def test_a_partial_file_without_a_validator_is_not_resumed(cli, monkeypatch):
    """Without an ETag or Last-Modified nothing could tell a changed file from the same one."""
    old, new = payload(seed=1), payload(seed=2)
    with FileServer(etag=False) as srv:
        url = srv.add("/y.bin", old)
        srv.fault("/y.bin", "cut", after=1_000_000)
        monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
        assert cli("download", url).code == 4
        assert cache().partial_path("y.bin").stat().st_size > 0
        srv.add("/y.bin", new)
        monkeypatch.delenv("MSN_DOWNLOAD_RETRIES")
        before = len(srv.requests())
        r = cli("download", url)
        assert r.code == 0, r.stderr
        assert [q.range for q in srv.requests()[before:]] == [None]
        assert Path(r.stdout.strip()).read_bytes() == new
