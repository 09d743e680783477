"""Download benchmark: msn against curl on the same 1.2 GB file from a local server.

Generates a file of random bytes under .bench/download/ and serves it from tests/http_server.py
in separate processes (kernel sendfile, so the server is not the bottleneck): one uncapped, one
that caps every connection at ``--rate-mbs`` MB/s as a long congested path does. Each case
downloads the file with ``curl -o`` and with ``msn_cli.transfer.download.fetch`` (what ``msn download``
runs: one stream, the rest split over ``--connections`` ranged requests when that stream is
slow, sha256 of the whole file, the rename and
the index update), alternating the two, with a ``sync`` (untimed) before every run. Times
are whole-process wall times (start to exit); each msn process reports its own peak memory
(VmHWM), and a second, 16x smaller file shows whether that peak depends on the file size.

Prints a markdown section on stdout (``make bench`` includes it). Standalone:

    .venv/bin/python bench/download_bench.py [--size-mb 1145] [--runs 3] [--capped-runs 1]
        [--rate-mbs 25] [--connections 4] [--compare-hash] [--keep]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRATCH = REPO / ".bench" / "download"
MiB = 1024 * 1024

# Runs in its own process: times fetch() alone (not the interpreter start) and reports the
# growth of peak memory while it ran.
DRIVER = r"""
import json, sys, time
import filelock, requests  # imported once per process by msn; not part of a transfer
from msn_cli.transfer.download import fetch

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

import msn_cli.transfer.download as dl
url, cache, conns, in_order = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
dl.HASH_IN_ORDER = in_order
before = hwm()
t0, c0 = time.perf_counter(), time.process_time()
f = fetch(url, cache_dir=cache, force=True, connections=conns)
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"seconds": dt, "cpu": cpu, "size": f.size, "sha256": f.sha256,
                  "split": f.split, "first_rate": f.first_rate,
                  "hwm_before": before, "hwm_after": hwm()}))
"""


def make_file(path: Path, size: int) -> str:
    """Random bytes (incompressible), written in 16 MiB blocks; returns the sha256."""
    if path.exists() and path.stat().st_size == size:
        digest_file = path.with_suffix(".sha256")
        if digest_file.exists():
            return digest_file.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    h = hashlib.sha256()
    block = os.urandom(16 * MiB)
    with open(path, "wb") as f:
        left, i = size, 0
        while left > 0:
            # A different block each time: rotate and stamp the counter.
            chunk = block[i % 4096:] + block[: i % 4096]
            chunk = i.to_bytes(8, "little") + chunk[8:]
            chunk = chunk[: min(left, len(chunk))]
            f.write(chunk)
            h.update(chunk)
            left -= len(chunk)
            i += 1
    digest = h.hexdigest()
    path.with_suffix(".sha256").write_text(digest + "\n")
    return digest


def start_server(root: Path, rate: float | None = None) -> tuple[subprocess.Popen, int]:
    extra = ["--rate", str(rate)] if rate else []
    p = subprocess.Popen([sys.executable, str(REPO / "tests" / "http_server.py"), "--root", str(root),
                          *extra], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    port = int(p.stdout.readline().strip())
    return p, port


def run_curl(url: str, out: Path) -> dict:
    t0 = time.perf_counter()
    p = subprocess.Popen(["curl", "-sS", "--fail", "-o", str(out), "-w",
                          "%{time_total} %{size_download}", url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    text = p.stdout.read() if p.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"curl failed: {p.stderr.read() if p.stderr else ''}")
    total, size = text.split()
    out.unlink()
    return {"wall": wall, "seconds": float(total), "size": int(float(size)),
            "cpu": usage.ru_utime + usage.ru_stime}


def run_msn(url: str, cache: Path, connections: int = 4, in_order: bool = True) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", DRIVER, url, str(cache), str(connections),
                          "1" if in_order else "0"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=env)
    _, status, _usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out = p.stdout.read() if p.stdout else b""
    err = p.stderr.read() if p.stderr else b""
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise RuntimeError(f"msn fetch failed ({p.returncode}): {err.decode(errors='replace')[-2000:]}")
    res = json.loads(out)
    res["wall"] = wall
    # The process's own high-water mark (ru_maxrss would also count the parent's memory,
    # which a vfork-ed child borrows until it execs).
    res["peak_rss"] = res["hwm_after"]
    shutil.rmtree(cache, ignore_errors=True)
    return res


def mbps(size: int, seconds: float) -> float:
    return size / seconds / 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=int(os.environ.get("MSN_BENCH_DL_MB", "1145")),
                    help="file size in MiB [1145, i.e. 1.2 GB]")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("MSN_BENCH_DL_RUNS", "3")),
                    help="runs of each tool uncapped [3]; 0 skips the case")
    ap.add_argument("--capped-runs", type=int, default=1, help="runs of each tool capped [1]; 0 skips")
    ap.add_argument("--rate-mbs", type=float, default=25.0,
                    help="the capped case's limit per connection, MB/s [25]; 0 skips the case")
    ap.add_argument("--connections", type=int, default=4, help="msn's connections [4]")
    ap.add_argument("--compare-hash", action="store_true",
                    help="also run msn hashing the finished file afterwards instead of in order")
    ap.add_argument("--keep", action="store_true", help="keep the generated files in .bench/")
    args = ap.parse_args(argv)
    if shutil.which("curl") is None:
        print("### Download throughput\n\nSkipped: curl is not installed (apt-get install curl).\n")
        return 0

    serve = SCRATCH / "serve"
    size = args.size_mb * MiB
    small_size = max(size // 16, MiB)
    big_sha = make_file(serve / "big.bin", size)
    small_sha = make_file(serve / "small.bin", small_size)
    cases = [("uncapped loopback", None, args.runs, 0.9)] if args.runs > 0 else []
    if args.rate_mbs > 0 and args.capped_runs > 0:
        cases.append((f"each connection capped at {args.rate_mbs:g} MB/s", args.rate_mbs * 1e6,
                      args.capped_runs, 3.0))
    tools = [("curl -o", None), (f"msn, {args.connections} connections", True)]
    if args.compare_hash:
        tools.append((f"msn, {args.connections} connections, sha256 afterwards", False))
    results: dict[tuple[str, str], list[dict]] = {}
    small = None
    try:
        for case, rate, runs, _goal in cases:
            server, port = start_server(serve, rate)
            url = f"http://127.0.0.1:{port}/big.bin"
            try:
                if rate is None:  # warm the page cache for the served file
                    run_curl(url, SCRATCH / "warm.bin")
                for i in range(runs):
                    order = tools if i % 2 == 0 else tools[::-1]
                    for tool, in_order in order:
                        # Untimed: write out what the previous run left dirty, so that no run
                        # pays for another's write-back (make bench does the same for convert).
                        os.sync()
                        res = (run_curl(url, SCRATCH / "curl.bin") if in_order is None else
                               run_msn(url, SCRATCH / "cache", args.connections, in_order))
                        results.setdefault((case, tool), []).append(res)
                        print(f"{case}, run {i + 1}, {tool}: {mbps(res['size'], res['wall']):.0f} MB/s",
                              file=sys.stderr)
                if rate is None:
                    small = run_msn(f"http://127.0.0.1:{port}/small.bin", SCRATCH / "cache",
                                    args.connections)
            finally:
                server.terminate()
                server.wait()
    finally:
        if not args.keep:
            shutil.rmtree(SCRATCH, ignore_errors=True)

    for (_case, tool), runs_ in results.items():
        for r in runs_:
            if r["size"] != size or (not tool.startswith("curl") and r["sha256"] != big_sha):
                raise SystemExit(f"{tool} downloaded a different file than was served")
    if small is not None and small["sha256"] != small_sha:
        raise SystemExit("msn downloaded a different small file than was served")

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):,.0f} ({', '.join(f'{x:,.0f}' for x in xs)})"

    print("### Download throughput (`msn download` vs `curl -o`)\n")
    print(f"One {size / 1e9:.2f} GB file of random bytes served from 127.0.0.1 by the test server "
          "(sendfile) in another process. Whole-process wall time, start to exit, alternating "
          f"the tools. msn starts one stream and splits the rest over {args.connections} ranged "
          "requests if that stream is slow (below `MSN_DOWNLOAD_SPLIT_BELOW` MB/s in its first "
          "`SPLIT_PROBE` seconds); its time covers the sha256 of the whole file, the rename and "
          "the index update.\n")
    print("| case | tool | MB/s, median (each run) | x curl | goal | CPU s per GB | peak RSS |")
    print("|---|---|---|---|---|---|---|")
    verdicts = []
    for case, _rate, _runs, goal in cases:
        base = statistics.median(mbps(r["size"], r["wall"]) for r in results[(case, "curl -o")])
        for tool, in_order in tools:
            rs = results[(case, tool)]
            speeds = [mbps(r["size"], r["wall"]) for r in rs]
            ratio = statistics.median(speeds) / base
            cpu = statistics.median(r["cpu"] / (r["size"] / 1e9) for r in rs)
            peak = f"{max(r['peak_rss'] for r in rs) / MiB:.0f} MiB" if in_order is not None else ""
            mark = ""
            if in_order is True:
                ok = ratio >= goal and max(r["peak_rss"] for r in rs) < 150 * MiB
                mark = f">= {goal:g}x, RSS < 150 MiB: {'met' if ok else 'MISSED'}"
                verdicts.append(ok)
            print(f"| {case} | {tool} | {fmt(speeds)} | {ratio:.2f}x | {mark} | {cpu:.2f} | {peak} |")
    print()
    for case, _rate, _runs, _goal in cases:
        for tool, in_order in tools:
            if in_order is None:
                continue
            rs = results[(case, tool)]
            rates = [r["first_rate"] / 1e6 for r in rs if r.get("first_rate") is not None]
            first = f"; first stream {', '.join(f'{x:,.0f}' for x in rates)} MB/s" if rates else ""
            print(f"- {case}, {tool}: split in {sum(bool(r.get('split')) for r in rs)} of "
                  f"{len(rs)} runs{first}.")
    if small is not None:
        growth = max(r["hwm_after"] - r["hwm_before"] for rs in results.values() for r in rs
                     if "hwm_after" in r)
        print(f"- Memory is flat: the peak grew by at most {growth / MiB:.1f} MiB during a "
              f"{size / MiB:,.0f} MiB download and by {(small['hwm_after'] - small['hwm_before']) / MiB:.1f}"
              f" MiB during a {small_size / MiB:,.0f} MiB one; the rest is the interpreter and its "
              "imports.")
    print(f"- sha256 of every msn download matched the served file ({big_sha[:16]}...).")
    print(f"- Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (the "
          "server, curl and msn share them).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
