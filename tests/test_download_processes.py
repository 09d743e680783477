"""Real ``msn download`` processes: two at once on one file, Ctrl-C and kill -9 then resume."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import run_msn_process
from http_server import FileServer

from msn_cli.transfer.cache import Cache

pytestmark = pytest.mark.slow
SIZE = 4 * 1024 * 1024


@pytest.fixture
def served():
    data = random.Random(7).randbytes(SIZE)
    with FileServer() as srv:
        url = srv.add("/ck/run_b.pth.tar", data)
        yield srv, url, data


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "msn_cli", "download", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, timeout: float = 60.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_two_processes_one_transfer(served):
    server, url, data = served
    server.fault("/ck/run_b.pth.tar", "hold", times=1, after=1_000_000)
    a = start(url, "--json")
    wait_for(server.holding.is_set, what="the first download to start")  # A holds the lock now
    b = start(url, "--json")
    lines: queue.Queue[str] = queue.Queue()
    collected: list[str] = []

    def pump() -> None:
        assert b.stderr is not None
        for line in b.stderr:
            lines.put(line)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 60
    while not any("waiting for another msn process" in s for s in collected):
        assert time.monotonic() < deadline, f"B never waited: {collected}"
        try:
            collected.append(lines.get(timeout=0.5))
        except queue.Empty:
            assert b.poll() is None, f"B ended early: {collected}"
    server.release()  # A finishes while B waits on the lock

    out_a, err_a = a.communicate(timeout=120)
    out_b = b.stdout.read() if b.stdout else ""
    assert b.wait(timeout=120) == 0, collected
    assert a.returncode == 0, err_a
    fa, fb = json.loads(out_a)["files"][0], json.loads(out_b)["files"][0]
    assert fa["downloaded"] is True and fb["downloaded"] is False
    assert fa["path"] == fb["path"] and fa["sha256"] == fb["sha256"] == hashlib.sha256(data).hexdigest()
    assert Path(fa["path"]).read_bytes() == data
    reqs = server.requests("/ck/run_b.pth.tar")
    assert len(reqs) == 1 and reqs[0].sent == len(data)  # one transfer for both


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["ctrl-c", "sigterm", "kill-9"])
def test_interrupted_process_resumes_next_run(served, sig):
    server, url, data = served
    server.fault("/ck/run_b.pth.tar", "slow", times=1, delay=0.05, step=64 * 1024)
    part = Cache().partial_path("run_b.pth.tar")
    p = start(url)
    wait_for(lambda: part.exists() and part.stat().st_size > 300_000, what="bytes on disk")
    p.send_signal(sig)
    _, err = p.communicate(timeout=60)
    if sig in (signal.SIGINT, signal.SIGTERM):
        assert p.returncode == (130 if sig == signal.SIGINT else 143), err
        said = "interrupted" if sig == signal.SIGINT else "terminated"
        assert f"Error: {said} while getting {url}; what arrived is kept in the cache" in err
        assert "run the same command again to resume" in err and "Traceback" not in err
    else:
        assert p.returncode == -signal.SIGKILL
    have = part.stat().st_size
    assert 300_000 < have < len(data)
    assert part.read_bytes() == data[:have]
    assert Cache().get("run_b.pth.tar") is None

    n = len(server.requests())
    r = run_msn_process("download", url, "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    again = server.requests()[n:]
    assert [q.range for q in again] == [f"bytes={have}-"]
    assert again[0].sent == len(data) - have
    f = json.loads(r.stdout)["files"][0]
    assert f["resumed_from"] == have
    assert Path(f["path"]).read_bytes() == data
    assert not part.exists()


def test_offline_process_makes_no_request(served):
    server, url, _ = served
    r = run_msn_process("download", url, env={**os.environ, "MSN_OFFLINE": "1"})
    assert r.returncode == 4
    assert "MSN_OFFLINE" in r.stderr and "Traceback" not in r.stderr
    assert server.log == []
