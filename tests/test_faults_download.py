"""``msn convert URL`` when the download goes wrong: killed mid-transfer, run twice at once,
cut short, or answered with something that is not a checkpoint. Real processes against the
local fault-injecting server (tests/http_server.py) on 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from msn_cli.dev.synth import TINY, write_checkpoint
from msn_cli.transfer.cache import Cache
from msn_cli.transfer.download import settings

pytestmark = pytest.mark.slow
PATH = "/msn/run_c.pth.tar"


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


@pytest.fixture
def ckpt(tmp_path) -> Path:
    return write_checkpoint(tmp_path / "src" / "run_c.pth.tar", TINY)  # ~1 MB with the head


@pytest.fixture
def reference(cli, ckpt, tmp_path) -> str:
    """sha256 of model.safetensors converted from the local file (the right answer)."""
    out = tmp_path / "reference"
    assert cli("convert", ckpt, out, "--no-verify").code == 0
    return _sha((out / "model.safetensors").read_bytes())


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "msn_cli", *map(str, args)], env=dict(os.environ),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _good_entries() -> list[str]:
    return [e.name for e in Cache().entries()]


def test_sigkill_mid_download_then_the_next_convert_resumes_intact(server, ckpt, reference, tmp_path):
    data = ckpt.read_bytes()
    url = server.add(PATH, data)
    server.fault(PATH, "slow", times=1, delay=0.05, step=32 * 1024)
    name = Cache().name_for_url(url)
    part = Cache().partial_path(name)
    out = tmp_path / "out"
    p = _start("convert", url, out, "--no-verify")
    _wait_for(lambda: part.exists() and part.stat().st_size > 200_000, "bytes on disk")
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    have = part.stat().st_size
    assert 200_000 < have < len(data) and part.read_bytes() == data[:have]
    assert not out.exists() and _good_entries() == []  # a partial is never marked good

    n = len(server.requests())
    q = _start("convert", url, out, "--no-verify")
    _, err = q.communicate(timeout=300)
    assert q.returncode == 0, err
    again = server.requests()[n:]
    assert [r.range for r in again] == [f"bytes={have}-"]  # resumed, not started over
    assert sum(r.sent for r in again) == len(data) - have
    entry = Cache().get(name)
    assert entry is not None and entry.sha256 == _sha(data)
    assert Cache().file_path(name).read_bytes() == data  # the cached file is intact
    assert _sha((out / "model.safetensors").read_bytes()) == reference


def test_two_converts_of_one_url_at_once_share_one_transfer(server, ckpt, reference, tmp_path):
    data = ckpt.read_bytes()
    url = server.add(PATH, data)
    server.fault(PATH, "hold", times=1, after=300_000)
    a = _start("convert", url, tmp_path / "a", "--no-verify")
    _wait_for(server.holding.is_set, "the first transfer to start")  # A holds the download lock
    b = _start("convert", url, tmp_path / "b", "--no-verify")
    time.sleep(1.0)  # not an assertion: gives B time to reach the lock and wait on it
    server.release()
    _, err_a = a.communicate(timeout=300)
    _, err_b = b.communicate(timeout=300)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    gets = server.requests(PATH)
    assert len(gets) == 1 and gets[0].sent == len(data)  # one transfer served both
    for out in (tmp_path / "a", tmp_path / "b"):
        assert _sha((out / "model.safetensors").read_bytes()) == reference
    assert Cache().file_path(Cache().name_for_url(url)).read_bytes() == data


def test_download_cut_short_every_time_fails_cleanly(cli, server, ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(settings, "BACKOFF", 0.01)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "1")
    data = ckpt.read_bytes()
    url = server.add(PATH, data)
    server.fault(PATH, "short", times=None, after=100_000)
    out = tmp_path / "out"
    r = cli("convert", url, out, "--no-verify")
    assert r.code == 4, r.stderr
    assert "Traceback" not in r.stderr
    assert len([x for x in r.stderr.splitlines() if x.startswith("Error:")]) == 1
    assert not out.exists() and _good_entries() == []


NOT_CHECKPOINTS = {
    "html": (b"<!DOCTYPE html>\n<html><body><h1>403 Forbidden</h1></body></html>\n", "HTML"),
    "lfs": (b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 9\n",
            "git-lfs pointer"),
}


@pytest.mark.parametrize("case", list(NOT_CHECKPOINTS))
def test_a_page_served_as_the_checkpoint_is_refused(cli, server, tmp_path, case):
    body, needle = NOT_CHECKPOINTS[case]
    url = server.add(PATH, body)
    out = tmp_path / "out"
    for command in (("convert", url, out, "--no-verify"), ("inspect", url)):
        r = cli(*command)
        assert r.code in (3, 4), r.stderr
        assert needle.lower() in r.stderr.lower() and "Traceback" not in r.stderr
        assert len([x for x in r.stderr.splitlines() if x.startswith("Error:")]) == 1
        assert not out.exists()


@pytest.mark.parametrize("case", list(NOT_CHECKPOINTS))
def test_a_page_served_as_the_checkpoint_is_not_cached_as_good(cli, server, tmp_path, case):
    body, _ = NOT_CHECKPOINTS[case]
    url = server.add(PATH, body)
    cli("convert", url, tmp_path / "out", "--no-verify")
    assert _good_entries() == []


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["int", "term"])
def test_signal_during_the_download_of_convert(server, ckpt, tmp_path, sig, code):
    data = ckpt.read_bytes()
    url = server.add(PATH, data)
    server.fault(PATH, "slow", times=1, delay=0.05, step=32 * 1024)
    part = Cache().partial_path(Cache().name_for_url(url))
    out = tmp_path / "out"
    p = _start("convert", url, out, "--no-verify")
    _wait_for(lambda: part.exists() and part.stat().st_size > 100_000, "bytes on disk")
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    assert p.returncode == code, err
    assert "Traceback" not in err
    assert len([x for x in err.splitlines() if x.startswith("Error:")]) == 1, err
    assert not out.exists() and _good_entries() == []
    have = part.stat().st_size  # kept for the next run to resume
    assert 0 < have < len(data) and part.read_bytes() == data[:have]


# -- bounds: a server cannot fill the disk or hold a download for ever --------------------------


def test_a_body_without_a_length_is_cut_at_the_maximum_size(cli, server, monkeypatch):
    data = os.urandom(3_000_000)
    url = server.add("/endless.bin", data)
    server.fault("/endless.bin", "no_length")
    monkeypatch.setenv("MSN_DOWNLOAD_MAX_SIZE", "1000000")
    r = cli("download", url)
    assert r.code == 4, r.stderr
    assert "more than endless.bin can be" in r.stderr and "MSN_DOWNLOAD_MAX_SIZE" in r.stderr
    assert "Traceback" not in r.stderr
    c = Cache()
    assert c.get("endless.bin") is None
    assert not c.partial_path("endless.bin").exists()  # nothing left to resume from a lie
    assert not c.file_path("endless.bin").exists()
    assert sum(p.stat().st_size for p in c.root.rglob("*") if p.is_file()) < 1_100_000


def test_an_announced_length_over_the_cap_is_refused_before_the_body(cli, server, monkeypatch):
    url = server.add("/big.bin", os.urandom(2_000_000))
    monkeypatch.setenv("MSN_DOWNLOAD_MAX_SIZE", "1000000")
    r = cli("download", url)
    assert r.code == 4 and "announces 2,000,000 bytes" in r.stderr
    assert not Cache().partial_path("big.bin").exists() or Cache().partial_path("big.bin").stat().st_size == 0


def test_a_released_name_is_capped_at_what_that_checkpoint_can_weigh(cli, server, monkeypatch):
    from msn_cli.transfer.download.target import released_size_bound

    bound = released_size_bound("vits16")
    assert bound < settings.MAX_SIZE
    server.add("/m/vits16_800ep.pth.tar", b"x")
    server.fault("/m/vits16_800ep.pth.tar", "announce", after=bound + 1)  # one byte over it
    monkeypatch.setenv("MSN_BASE_URL", server.url("/m/"))
    r = cli("download", "vits16")
    assert r.code == 4 and f"announces {bound + 1:,} bytes" in r.stderr
    assert "the bound of a released checkpoint" in r.stderr


def test_a_stalled_transfer_gives_up(cli, server, monkeypatch):
    """One byte a second never trips a per-read timeout; the minimum rate does."""
    url = server.add("/trickle.bin", os.urandom(40))
    server.fault("/trickle.bin", "slow", times=None, step=1, delay=1.0)
    monkeypatch.setenv("MSN_DOWNLOAD_TIMEOUT", "2")
    monkeypatch.setenv("MSN_DOWNLOAD_MIN_RATE", "100")
    t0 = time.monotonic()
    r = cli("download", url)
    took = time.monotonic() - t0
    assert r.code == 4, r.stderr
    assert "stalled" in r.stderr and "MSN_DOWNLOAD_MIN_RATE" in r.stderr
    assert took < 8, took
    part = Cache().partial_path("trickle.bin")
    assert 0 < part.stat().st_size < 40  # what arrived is kept for the next run


# -- what msn does not fetch, and a network that is not there ---------------------------------


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.bin"])
def test_a_redirect_to_another_scheme_is_a_network_error(cli, server, location):
    url = server.add("/r.bin", b"x" * 100)
    server.fault("/r.bin", "redirect", location=location)
    r = cli("download", url)
    assert r.code == 4, r.stderr
    assert f"redirects to {location}, which msn does not fetch" in r.stderr
    assert "bug" not in r.stderr and "Traceback" not in r.stderr


def test_a_base_url_or_an_index_url_that_is_not_http_is_a_network_error(cli, server, monkeypatch):
    r = cli("download", "vits16", "--base-url", "file:///etc/")
    assert r.code == 4 and "the base URL is file:///etc/, not an http(s) URL" in r.stderr, r.stderr
    url = server.add("/i.bin", b"y" * 100)
    assert cli("download", url).code == 0
    index = Cache().root / "index.json"
    index.write_text(index.read_text().replace(url, "file:///etc/passwd"))
    r = cli("download", "i.bin", "--force")
    assert r.code == 4, r.stderr
    assert "source of i.bin is file:///etc/passwd, not an http(s) URL" in r.stderr
    assert "bug" not in r.stderr


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/x.bin", "http://no-such-host.invalid/x.bin"])
def test_no_network_is_not_retried_for_long(cli, url, monkeypatch):
    monkeypatch.setattr(settings, "BACKOFF", 1.0)
    t0 = time.monotonic()
    r = cli("download", url)
    took = time.monotonic() - t0
    assert r.code == 4
    assert took < 5, took
    lines = r.stderr.splitlines()
    retries = [x for x in lines if "retrying" in x]
    assert len(retries) <= 1
    assert all(len(x) <= 100 for x in retries), retries  # one line at 80-100 columns
    assert any(w in r.stderr for w in ("connection refused", "the name does not resolve"))
