"""Segmented downloads: one large file over several ranged requests, and every fault of a segment.

The split threshold is lowered (``MSN_DOWNLOAD_SPLIT_MIN``) so that a 6 MB file is "large": it
is fetched in 16 ranges of 375,000 bytes over 4 connections. These tests split at once
(``MSN_DOWNLOAD_SPLIT_PROBE=0``: no measuring of the first stream); the adaptive decision
(measure the first stream, split only a slow one) has its own tests at the end.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from http_server import FileServer

from msn_cli.transfer import download as dl
from msn_cli.transfer.cache import Cache
from msn_cli.transfer.download import settings
from msn_cli.transfer.partial import DamagedNote, read_partial_note

SIZE = 6_000_000
SEG = SIZE // 16  # what download/segments.py picks for 4 connections
PATH = "/big/run_c.pth.tar"
NAME = "run_c.pth.tar"


@pytest.fixture(autouse=True)
def _split_small_files(monkeypatch):
    monkeypatch.setattr(settings, "BACKOFF", 0.01)
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_MIN", "1000000")
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_PROBE", "0")
    monkeypatch.delenv("MSN_DOWNLOAD_CONNECTIONS", raising=False)


def payload(seed: int = 3) -> bytes:
    return random.Random(seed).randbytes(SIZE)


@pytest.fixture
def served(server):
    data = payload()
    return server, server.add(PATH, data), data


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def ranged(server, since: int = 0):
    return [r for r in server.requests(PATH)[since:] if r.range]


def span(rng: str) -> tuple[int, int]:
    a, b = rng.split("=", 1)[1].split("-")
    return int(a), int(b) + 1


def test_a_large_file_is_fetched_in_concurrent_ranges(cli, served):
    server, url, data = served
    server.rate = 8_000_000  # per connection: the ranges overlap in time
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    f = r.json()["files"][0]
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data
    parts = ranged(server)
    assert len(parts) == 15 and all(p.status == 206 for p in parts)  # the first came with the GET
    assert sorted(span(p.range)[0] for p in parts) == list(range(SEG, SIZE, SEG))
    assert server.peak >= 3  # several connections at once
    assert not Cache().partial_path(NAME).exists() and not Cache().partial_meta_path(NAME).exists()


def test_one_connection_or_a_small_file_uses_one_stream(cli, served, monkeypatch):
    server, url, data = served
    r = cli("download", url, "--connections", "1")
    assert r.code == 0, r.stderr
    assert [x.range for x in server.requests(PATH)] == [None]
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_MIN", str(SIZE + 1))
    assert cli("download", url, "--force").code == 0
    assert [x.range for x in server.requests(PATH)] == [None, None]
    assert Path(Cache().file_path(NAME)).read_bytes() == data


def test_connections_out_of_range_is_a_usage_error(cli, served, monkeypatch):
    server, url, _ = served
    assert cli("download", url, "--connections", "17").code == 2
    monkeypatch.setenv("MSN_DOWNLOAD_CONNECTIONS", "four")
    r = cli("download", url)
    assert r.code == 2 and "MSN_DOWNLOAD_CONNECTIONS" in r.stderr
    assert server.requests() == []


def test_a_cut_in_one_segment_is_retried_from_where_it_broke(cli, served):
    server, url, data = served
    server.fault(PATH, "cut", start=2 * SEG, after=100_000)
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert "retrying that segment" in r.stderr
    assert Path(r.stdout.strip()).read_bytes() == data
    again = [p for p in ranged(server) if span(p.range)[0] > 2 * SEG and span(p.range)[0] < 3 * SEG]
    assert len(again) == 1 and span(again[0].range) == (2 * SEG + 100_000, 3 * SEG)


def test_a_5xx_on_one_segment_is_retried(cli, served):
    server, url, data = served
    server.fault(PATH, "error", times=2, status=503, start=5 * SEG)
    r = cli("download", url)
    assert r.code == 0, r.stderr
    statuses = [p.status for p in ranged(server) if span(p.range)[0] == 5 * SEG]
    assert statuses == [503, 503, 206]
    assert Path(r.stdout.strip()).read_bytes() == data


def fail_one_segment(cli, server, url, monkeypatch, at: int = 5 * SEG):
    """A run that ends with every segment but one written; returns its partial note."""
    server.fault(PATH, "error", times=None, status=500, start=at)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "1")
    r = cli("download", url)
    assert r.code == 4 and "resume" in r.stderr, r.stderr
    server.clear_faults()
    monkeypatch.delenv("MSN_DOWNLOAD_RETRIES")
    note = read_partial_note(Cache().partial_meta_path(NAME))
    assert note is not None and note.segments is not None and note.total == SIZE
    return note


def test_a_failed_segment_is_resumed_in_the_next_run_without_refetching_the_rest(cli, served,
                                                                                 monkeypatch):
    server, url, data = served
    note = fail_one_segment(cli, server, url, monkeypatch)
    assert note.segments == ((0, 5 * SEG), (6 * SEG, SIZE))
    part = Cache().partial_path(NAME)
    body = part.read_bytes()
    assert all(body[a:b] == data[a:b] for a, b in note.segments)
    listed = json.loads(cli("cache", "ls", "--json").stdout)["partial"]
    assert [(p["size"], p["total"]) for p in listed] == [(SIZE - SEG, SIZE)]  # what arrived

    n = len(server.requests(PATH))
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    second = server.requests(PATH)[n:]
    assert [(x.range, x.status) for x in second] == [(f"bytes={5 * SEG}-{6 * SEG - 1}", 206)]
    assert second[0].sent == SEG  # nothing fetched twice
    f = r.json()["files"][0]
    assert f["resumed_from"] == SIZE - SEG and f["sha256"] == sha(data)
    assert Path(f["path"]).read_bytes() == data


def test_a_short_partial_whose_note_fits_is_extended_not_restarted(cli, served, monkeypatch):
    """A run killed after noting its first ranges but before growing the file to full size."""
    server, url, data = served
    fail_one_segment(cli, server, url, monkeypatch)
    part, meta = Cache().partial_path(NAME), Cache().partial_meta_path(NAME)
    with open(part, "r+b") as f:
        f.truncate(5 * SEG)
    d = json.loads(meta.read_text())
    d["segments"] = [[0, 5 * SEG]]
    meta.write_text(json.dumps(d))
    n = len(server.requests(PATH))
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert "starting over" not in r.stderr
    again = server.requests(PATH)[n:]
    assert again and min(span(x.range)[0] for x in again) == 5 * SEG
    assert sum(x.sent for x in again) == SIZE - 5 * SEG
    f = r.json()["files"][0]
    assert f["resumed_from"] == 5 * SEG and Path(f["path"]).read_bytes() == data


def test_a_file_changed_between_runs_starts_over_instead_of_splicing(cli, served, monkeypatch):
    server, url, _old = served
    fail_one_segment(cli, server, url, monkeypatch)
    new = payload(seed=4)
    server.add(PATH, new)  # another ETag: If-Range no longer matches
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert "changed on the server" in r.stderr
    assert Path(r.stdout.strip()).read_bytes() == new
    assert Cache().get(NAME).sha256 == sha(new)


def test_a_206_of_another_version_starts_over(cli, served, monkeypatch):
    server, url, _old = served
    fail_one_segment(cli, server, url, monkeypatch)
    new = payload(seed=5)
    server.add(PATH, new)  # same size, another ETag
    server.fault(PATH, "ignore_if_range", times=None, ranged=True)  # it sends the range anyway
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert "changed on the server" in r.stderr
    assert Path(r.stdout.strip()).read_bytes() == new  # not old bytes with a new segment in them


def test_a_server_that_answers_a_range_with_200_falls_back_to_one_stream(cli, served):
    server, url, data = served
    server.fault(PATH, "ignore_range", times=None, ranged=True)
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert "one connection" in r.stderr
    last = server.requests(PATH)[-1]
    assert last.range is None and last.status == 200 and last.done
    f = r.json()["files"][0]
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data


def test_without_a_validator_the_file_is_not_split(cli, monkeypatch):
    data = payload()
    with FileServer(etag=False) as srv:  # nothing to put in If-Range: splicing could not be guarded
        url = srv.add(PATH, data)
        r = cli("download", url)
        assert r.code == 0, r.stderr
        assert [x.range for x in srv.requests(PATH)] == [None]
    assert Path(r.stdout.strip()).read_bytes() == data


@pytest.mark.parametrize("bad", [
    [[0, 10], [5, 20]],          # overlapping
    [[10, 0]],                   # backwards
    [[0, SIZE + 1]],             # beyond the file
    [[0, True]],                 # a bool is not a byte count
    [[0, 10], [10, 20]],         # touching ranges are one range
    "0-10",
    [[0, 1, 2]],
])
def test_a_damaged_segment_list_is_a_damaged_note(tmp_path, bad):
    p = tmp_path / "n.json"
    p.write_text(json.dumps({"url": "http://x/y", "total": SIZE, "segments": bad}))
    with pytest.raises(DamagedNote):
        read_partial_note(p)
    p.write_text(json.dumps({"url": "http://x/y", "segments": [[0, 1]]}))  # no total
    with pytest.raises(DamagedNote):
        read_partial_note(p)


def test_a_damaged_segment_list_starts_over(cli, served, monkeypatch):
    server, url, data = served
    fail_one_segment(cli, server, url, monkeypatch)
    meta = Cache().partial_meta_path(NAME)
    d = json.loads(meta.read_text())
    d["segments"] = [[0, SIZE * 2]]
    meta.write_text(json.dumps(d))
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert "damaged" in r.stderr
    assert Path(r.stdout.strip()).read_bytes() == data


# -- real processes ---------------------------------------------------------------------------


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "msn_cli", "download", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def resume_after_kill(server, url: str, data: bytes, kept, have: int) -> dict:
    """Run the download again, uncapped, after a killed one: it must resume from the note
    (ranged requests only), never ask for a noted byte again, fetch exactly the rest, and end
    with the right file. Returns the file's --json record."""
    server.rate = None
    n = len(server.requests(PATH))
    q = start(url, "--json")
    out, err = q.communicate(timeout=120)
    assert q.returncode == 0, err
    again = server.requests(PATH)[n:]
    assert again and all(x.range for x in again)  # resumed from the note, not started over
    for x in again:  # no noted byte is asked for again
        a, b = span(x.range)
        assert all(b <= s or a >= e for s, e in kept), (x.range, kept)
    assert sum(x.sent for x in again) == SIZE - have
    f = json.loads(out)["files"][0]
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data
    return f


def noted() -> tuple[tuple[int, int], ...]:
    try:
        note = read_partial_note(Cache().partial_meta_path(NAME))
    except DamagedNote:
        return ()
    return (note.segments or ()) if note else ()


@pytest.mark.slow
def test_sigkill_then_resume_keeps_every_noted_segment(served):
    server, url, data = served
    server.rate = 1_000_000  # 1 MB/s per connection: ~1.5 s for the whole file on 4
    p = start(url)
    wait_for(lambda: sum(b - a for a, b in noted()) >= 2 * SEG, "two segments noted")
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    kept = noted()
    have = sum(b - a for a, b in kept)
    assert 2 * SEG <= have < SIZE
    body = Cache().partial_path(NAME).read_bytes()
    assert all(body[a:b] == data[a:b] for a, b in kept)
    assert Cache().get(NAME) is None  # a partial is never marked good

    f = resume_after_kill(server, url, data, kept, have)
    assert f["resumed_from"] == have


@pytest.mark.slow
def test_two_processes_share_one_segmented_transfer(served):
    server, url, data = served
    server.fault(PATH, "hold", after=50_000, start=3 * SEG)
    a = start(url, "--json")
    wait_for(server.holding.is_set, "a segment of the first download to be held")
    b = start(url, "--json")
    time.sleep(2.0)  # not an assertion: gives B time to reach the lock and wait on it
    assert b.poll() is None
    server.release()
    out_a, err_a = a.communicate(timeout=120)
    out_b, err_b = b.communicate(timeout=120)
    assert a.returncode == 0, err_a
    assert b.returncode == 0, err_b
    assert "waiting for another msn process" in err_b
    fa, fb = json.loads(out_a)["files"][0], json.loads(out_b)["files"][0]
    assert fa["downloaded"] is True and fb["downloaded"] is False
    assert fa["sha256"] == fb["sha256"] == sha(data)
    assert Path(fa["path"]).read_bytes() == data
    assert len(server.requests(PATH, method="GET")) == 16  # one transfer, not two



@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_stops_every_connection_and_keeps_the_ranges(served, sig, code):
    server, url, data = served
    server.rate = 1_000_000
    p = start(url)
    wait_for(lambda: sum(b - a for a, b in noted()) >= SEG, "a segment noted")
    p.send_signal(sig)
    _, err = p.communicate(timeout=30)  # the workers stop: no wait for the body to end
    assert p.returncode == code, err
    assert "run the same command again" in err
    kept = noted()
    body = Cache().partial_path(NAME).read_bytes()
    assert kept and all(body[a:b] == data[a:b] for a, b in kept)
    server.rate = None
    q = start(url)
    out, err = q.communicate(timeout=120)
    assert q.returncode == 0, err
    assert Path(out.strip()).read_bytes() == data


# -- several files at once ---------------------------------------------------------------------


def test_several_files_download_at_once_within_the_connection_budget(cli, server, monkeypatch):
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_MIN", str(10 * SIZE))  # one stream each
    files = {f"/many/f{i}.bin": payload(seed=10 + i) for i in range(3)}
    urls = [server.add(p, d) for p, d in files.items()]
    server.rate = 4_000_000
    count = open_responses(monkeypatch)
    r = cli("download", *urls, "--connections", "2", "--json")
    assert r.code == 0, r.stderr
    got = r.json()["files"]
    assert [Path(f["path"]).read_bytes() for f in got] == list(files.values())  # in the order given
    assert count["peak"] == 2 and server.peak >= 2  # two files at once, never more than the budget


def open_responses(monkeypatch) -> dict[str, int]:
    """Count the responses msn holds open at once, on its side (the server sees a response
    closed early only when its next write fails)."""
    import threading

    import requests

    count = {"now": 0, "peak": 0}
    lock = threading.Lock()
    get, close = requests.Session.get, requests.Response.close

    def counted_get(self, *a, **k):
        r = get(self, *a, **k)
        with lock:
            count["now"] += 1
            count["peak"] = max(count["peak"], count["now"])
        r._msn_open = True
        return r

    def counted_close(self):
        with lock:
            if getattr(self, "_msn_open", False):
                self._msn_open = False
                count["now"] -= 1
        close(self)

    monkeypatch.setattr(requests.Session, "get", counted_get)
    monkeypatch.setattr(requests.Response, "close", counted_close)
    return count


def test_large_files_at_once_share_the_budget_between_their_ranges(cli, server, monkeypatch):
    files = {f"/many/g{i}.bin": payload(seed=20 + i) for i in range(2)}
    urls = [server.add(p, d) for p, d in files.items()]
    server.rate = 4_000_000
    count = open_responses(monkeypatch)
    r = cli("download", *urls, "--connections", "3", "--json")
    assert r.code == 0, r.stderr
    assert [Path(f["path"]).read_bytes() for f in r.json()["files"]] == list(files.values())
    assert count["peak"] == 3 and count["now"] == 0
    order = [x.path for x in server.requests()]
    assert order.index("/many/g1.bin") < len(order) - 1 - order[::-1].index("/many/g0.bin")  # at once
    for p in files:  # each file was split: the free connection went to one and then the other
        assert any(x.range for x in server.requests(p))


def test_fetch_many_reports_each_file_and_the_total(server, tmp_path):
    datas = [payload(seed=30), payload(seed=31)[:1_000_000]]
    urls = [server.add(f"/t/h{i}.bin", d) for i, d in enumerate(datas)]
    seen: list[tuple[str, int, int | None]] = []
    out = dl.fetch_many([urls[0], urls[1], urls[0]], cache_dir=tmp_path, connections=4,
                        progress=lambda s, d, t: seen.append((s, d, t)))
    assert [f.sha256 for f in out] == [sha(datas[0]), sha(datas[1]), sha(datas[0])]
    assert [f.downloaded for f in out] == [True, True, False]  # the same file twice: one transfer
    totals = [(d, t) for s, d, t in seen if s == dl.TOTAL_STAGE]
    assert totals[-1] == (SIZE + 1_000_000, SIZE + 1_000_000)
    assert {s for s, _, _ in seen} >= {"h0.bin", "h1.bin", dl.TOTAL_STAGE}


@pytest.mark.slow
def test_ctrl_c_stops_several_downloads_at_once(server):
    urls = [server.add(f"/many/k{i}.bin", payload(seed=40 + i)) for i in range(2)]
    server.rate = 500_000
    p = start(*urls)
    wait_for(lambda: server.body_bytes() > 200_000, "bytes sent")
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)  # no wait for the transfers to end
    assert p.returncode == 130, err
    assert "interrupted while getting 2 files" in err
    assert {x.name for x in Cache().partials()} == {"k0.bin", "k1.bin"}


# -- adaptive splitting: one stream first, the rest split only when it is slow ----------------


@pytest.fixture
def measured(monkeypatch):
    """The default (measure the first stream) with a short window: 8 MB/s is 'slow' against a
    threshold of 50 MB/s and 'fast' against one of 2."""
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_PROBE", "0.3")


def test_a_fast_first_stream_is_never_split(cli, served, measured, monkeypatch):
    server, url, data = served
    server.rate = 8_000_000
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "2")
    r = cli("download", url, "--json", "-v")
    assert r.code == 0, r.stderr
    assert [(x.range, x.status) for x in server.requests(PATH)] == [(None, 200)]
    assert "MB/s, fast enough not to split it" in r.stderr
    f = r.json()["files"][0]
    assert f["split"] is False and 2 < f["first_stream_mb_s"] < 12  # measured, then kept
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data


def test_a_slow_first_stream_goes_on_and_the_rest_is_split(cli, served, measured, monkeypatch):
    server, url, data = served
    server.rate = 8_000_000
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "50")
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert "over one connection; splitting the rest over up to 4 connections" in r.stderr
    first, *rest = server.requests(PATH)
    assert first.range is None and not first.done  # the first stream, ended at its boundary
    spans = sorted(span(x.range) for x in rest)
    assert rest and all(x.status == 206 for x in rest)
    # the first stream ran for the measured 0.3 s (~2.4 MB) before the others began, and it
    # kept what came after: the ranges asked for are the rest of the file, on the grid
    assert spans[0][0] >= 1_000_000 and spans[0][0] % SEG == 0
    assert all(a == b for (_, b), (a, _) in itertools.pairwise(spans)) and spans[-1][1] == SIZE
    assert server.peak >= 3
    f = r.json()["files"][0]
    assert f["split"] is True and 2 < f["first_stream_mb_s"] < 12
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data


def test_ranges_ignored_after_the_split_fall_back_to_one_stream(cli, served, measured, monkeypatch):
    server, url, data = served
    server.rate = 8_000_000
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "50")
    server.fault(PATH, "ignore_range", times=None, ranged=True)
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    assert "splitting the rest over up to 4" in r.stderr and "again with one connection" in r.stderr
    assert "changed on the server" not in r.stderr  # the ranges came from this very run
    last = server.requests(PATH)[-1]
    assert last.range is None and last.status == 200
    f = r.json()["files"][0]
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data


def test_a_resumed_single_stream_that_is_slow_is_split_too(cli, served, measured, monkeypatch):
    server, url, data = served
    server.fault(PATH, "cut", after=1_000_000)  # a one-stream run that breaks (killed in its probe)
    monkeypatch.setenv("MSN_DOWNLOAD_RETRIES", "0")
    assert cli("download", url, "--connections", "1").code == 4
    monkeypatch.delenv("MSN_DOWNLOAD_RETRIES")
    note = read_partial_note(Cache().partial_meta_path(NAME))
    assert note is not None and note.segments is None  # a one-stream note
    have = Cache().partial_path(NAME).stat().st_size
    assert 0 < have <= 1_000_000
    server.rate = 8_000_000
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "50")
    r = cli("download", url, "--json")
    assert r.code == 0, r.stderr
    resumed, *rest = server.requests(PATH)[1:]
    assert resumed.range == f"bytes={have}-" and resumed.status == 206
    assert rest and all(x.range and x.status == 206 for x in rest)
    assert min(span(x.range)[0] for x in rest) > have + 1_000_000  # after the measured 0.3 s
    f = r.json()["files"][0]
    assert f["split"] is True and f["resumed_from"] == have
    assert f["sha256"] == sha(data) and Path(f["path"]).read_bytes() == data


def test_split_thresholds_must_be_numbers_of_zero_or_more(cli, served, monkeypatch):
    server, url, _ = served
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "-1")
    r = cli("download", url)
    assert r.code == 2 and "MSN_DOWNLOAD_SPLIT_BELOW" in r.stderr
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "0")  # never split
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_PROBE", "soon")
    r = cli("download", url)
    assert r.code == 2 and "MSN_DOWNLOAD_SPLIT_PROBE" in r.stderr
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_PROBE", "0")  # would split at once, but BELOW is 0
    assert cli("download", url).code == 0
    assert [x.range for x in server.requests(PATH)] == [None]


@pytest.mark.slow
def test_sigkill_after_an_adaptive_split_resumes_from_the_note(served, monkeypatch):
    server, url, data = served
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_PROBE", "0.3")
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "50")
    server.rate = 1_000_000
    p = start(url)
    wait_for(lambda: sum(b - a for a, b in noted()) >= 2 * SEG, "two segments noted")
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=60)
    kept = noted()
    assert kept[0][0] == 0 and kept[0][1] >= 200_000  # what the first stream brought alone
    assert len(server.requests(PATH)) > 1  # it was split
    have = sum(b - a for a, b in kept)
    body = Cache().partial_path(NAME).read_bytes()
    assert len(body) == SIZE and all(body[a:b] == data[a:b] for a, b in kept)

    f = resume_after_kill(server, url, data, kept, have)
    assert f["resumed_from"] == have and f["split"] is True


def test_at_once_a_slow_file_splits_only_when_a_connection_of_the_budget_is_free(cli, server,
                                                                                  monkeypatch):
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_PROBE", "0.2")
    monkeypatch.setenv("MSN_DOWNLOAD_SPLIT_BELOW", "50")
    short, long = payload(seed=50)[:2_000_000], payload(seed=51)
    urls = [server.add("/many/s.bin", short), server.add("/many/l.bin", long)]
    server.rate = 4_000_000  # both first streams are slow, and both connections are in use
    count = open_responses(monkeypatch)
    r = cli("download", *urls, "--connections", "2", "--json")
    assert r.code == 0, r.stderr
    assert [Path(f["path"]).read_bytes() for f in r.json()["files"]] == [short, long]
    assert count["peak"] == 2
    assert [x.range for x in server.requests("/many/s.bin")] == [None]  # never a free connection
    first, *rest = server.requests("/many/l.bin")
    assert first.range is None and rest  # split once the short file had handed its connection on
    assert min(span(x.range)[0] for x in rest) >= 2_000_000  # ~0.5 s at 4 MB/s: after s.bin ended
    assert [f["split"] for f in r.json()["files"]] == [False, True]


def _plant_note(served, monkeypatch, cli, segments, total=None):
    server, url, _data = served
    fail_one_segment(cli, server, url, monkeypatch)
    meta = Cache().partial_meta_path(NAME)
    d = json.loads(meta.read_text())
    d["segments"], d["total"] = segments, total or d["total"]
    meta.write_text(json.dumps(d))
    return len(server.requests(PATH))


def test_a_note_of_ranges_no_run_could_leave_starts_over(cli, served, monkeypatch):
    """20,000 one-byte ranges would be 20,000 requests; msn's grid never leaves such a note."""
    server, url, data = served
    n = _plant_note(served, monkeypatch, cli, [[2 * i + 1, 2 * i + 2] for i in range(20_000)])
    t0 = time.monotonic()
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert time.monotonic() - t0 < 20
    assert "damaged" in r.stderr and "not ones msn writes" in r.stderr
    assert len(server.requests(PATH)[n:]) <= 16  # the grid's ranges, not one per noted byte
    assert Path(r.stdout.strip()).read_bytes() == data


def test_a_note_with_an_impossible_total_starts_over(cli, served, monkeypatch):
    """``total: 2**62`` used to fail every later run with exit 70 (File too large)."""
    _server, url, data = served
    _plant_note(served, monkeypatch, cli, [[0, 5 * SEG]], total=2**62)
    r = cli("download", url)
    assert r.code == 0, r.stderr
    assert "damaged" in r.stderr and "more than" in r.stderr
    assert Path(r.stdout.strip()).read_bytes() == data


def test_free_space_is_checked_before_the_partial_file_is_preallocated(cli, served, monkeypatch):
    import shutil

    _server, url, _data = served
    _plant_note(served, monkeypatch, cli, [[0, 5 * SEG]])
    part = Cache().partial_path(NAME)
    with open(part, "r+b") as f:
        f.truncate(5 * SEG)  # a run killed before it grew the file
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**12, 0, SEG))
    r = cli("download", url)
    assert r.code == 3, r.stderr
    assert "not enough space" in r.stderr and "Traceback" not in r.stderr
    assert part.stat().st_size == 5 * SEG  # not grown to the file's size
