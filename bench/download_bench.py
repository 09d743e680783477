"""Download benchmark: msn against curl on the same 1.2 GB file from a local server.

Generates a file of random bytes under .bench/download/ and serves it from tests/http_server.py
in separate processes (kernel sendfile, so the server is not the bottleneck): one uncapped, one
that caps every connection at ``--rate-mbs`` MB/s as a long congested path does. Each case
downloads the file with ``curl -o`` and with ``msn_cli.transfer.download.fetch`` (what
``msn download`` runs: one stream, the rest split over ``--connections`` ranged requests when
that stream is slow, sha256 of the whole file, the rename and the index update), alternating
the two, each run measured by ``bench/measure.py`` after a ``sync`` (untimed). Times are
whole-process wall times (start to exit); memory is msn's peak anonymous memory, and a second,
16x smaller file shows whether that peak depends on the file size.

Prints a markdown section on stdout (``make bench`` includes it). Standalone:

    .venv/bin/python bench/download_bench.py [--size-mb 1145] [--runs 3] [--capped-runs 1]
        [--rate-mbs 25] [--connections 4] [--keep]
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
from dataclasses import dataclass
from pathlib import Path

from measure import REPO, measure

SCRATCH = REPO / ".bench" / "download"
MiB = 1024 * 1024

# Runs in its own process: times fetch() alone (not the interpreter start) and reports its
# anonymous memory just before the transfer, so the peak's growth during it can be told apart
# from the interpreter and its imports.
DRIVER = r"""
import json, sys, time
import filelock, requests  # imported once per process by msn; not part of a transfer
from msn_cli.transfer.download import fetch

def anon():
    return sum(int(line.split()[1]) * 1024 for line in open("/proc/self/status")
               if line.startswith(("RssAnon:", "RssShmem:")))

url, cache, conns = sys.argv[1], sys.argv[2], int(sys.argv[3])
before = anon()
t0, c0 = time.perf_counter(), time.process_time()
f = fetch(url, cache_dir=cache, force=True, connections=conns)
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"seconds": dt, "cpu": cpu, "size": f.size, "sha256": f.sha256,
                  "split": f.split, "first_rate": f.first_rate, "anon_before": before}))
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


def start_server(root: Path, rate: float | None = None) -> tuple[subprocess.Popen[str], int]:
    extra = ["--rate", str(rate)] if rate else []
    p = subprocess.Popen([sys.executable, str(REPO / "tests" / "http_server.py"), "--root", str(root),
                          *extra], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    port = int(p.stdout.readline().strip())
    return p, port


@dataclass
class Transfer:
    """One download: whole-process wall and CPU time; for msn, what fetch() reported."""
    wall: float
    cpu: float
    size: int
    sha256: str | None = None
    split: bool = False
    first_rate: float | None = None
    anon_peak: int = 0
    anon_before: int = 0


def run_curl(url: str, out: Path) -> Transfer:
    run = measure(["curl", "-sS", "--fail", "-o", str(out), "-w", "%{size_download}", url], SCRATCH)
    if run.rc != 0:
        raise RuntimeError(f"curl failed: {run.stderr}")
    out.unlink()
    return Transfer(run.wall, run.cpu, int(float(run.stdout.split()[-1])))


def run_msn(url: str, cache: Path, connections: int) -> Transfer:
    env = {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = measure([sys.executable, "-c", DRIVER, url, str(cache), str(connections)], SCRATCH, env=env)
    if run.rc != 0:
        raise RuntimeError(f"msn fetch failed ({run.rc}): {run.stderr[-2000:]}")
    got = json.loads(run.stdout)
    shutil.rmtree(cache, ignore_errors=True)
    return Transfer(run.wall, run.cpu, got["size"], got["sha256"], bool(got["split"]),
                    got["first_rate"], run.anon, got["anon_before"])


def mbps(t: Transfer) -> float:
    return t.size / t.wall / 1e6


@dataclass
class Case:
    name: str
    rate: float | None  # bytes/s per connection, None uncapped
    runs: int
    goal: float  # wanted speed, x curl


def run_case(case: Case, tools: list[tuple[str, bool]], serve: Path, connections: int,
             results: dict[tuple[str, str], list[Transfer]]) -> Transfer | None:
    """Alternating runs of each tool; uncapped, also the small file once (msn's memory)."""
    server, port = start_server(serve, case.rate)
    url = f"http://127.0.0.1:{port}/big.bin"
    try:
        if case.rate is None:  # warm the page cache for the served file
            run_curl(url, SCRATCH / "warm.bin")
        for i in range(case.runs):
            for tool, is_msn in (tools if i % 2 == 0 else tools[::-1]):
                res = (run_msn(url, SCRATCH / "cache", connections) if is_msn
                       else run_curl(url, SCRATCH / "curl.bin"))
                results.setdefault((case.name, tool), []).append(res)
                print(f"{case.name}, run {i + 1}, {tool}: {mbps(res):.0f} MB/s", file=sys.stderr)
        if case.rate is None:
            return run_msn(f"http://127.0.0.1:{port}/small.bin", SCRATCH / "cache", connections)
        return None
    finally:
        server.terminate()
        server.wait()


def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):,.0f} ({', '.join(f'{x:,.0f}' for x in xs)})"


def table(cases: list[Case], tools: list[tuple[str, bool]],
          results: dict[tuple[str, str], list[Transfer]]) -> list[str]:
    lines = ["| case | tool | MB/s, median (each run) | x curl | goal | CPU s per GB | peak anon |",
             "|---|---|---|---|---|---|---|"]
    for case in cases:
        base = statistics.median(mbps(r) for r in results[(case.name, tools[0][0])])
        for tool, is_msn in tools:
            rs = results[(case.name, tool)]
            speeds = [mbps(r) for r in rs]
            ratio = statistics.median(speeds) / base
            cpu = statistics.median(r.cpu / (r.size / 1e9) for r in rs)
            peak = max(r.anon_peak for r in rs)
            mark = ""
            if is_msn:
                ok = ratio >= case.goal and peak < 150 * MiB
                mark = f">= {case.goal:g}x, anon < 150 MiB: {'met' if ok else 'MISSED'}"
            lines.append(f"| {case.name} | {tool} | {fmt(speeds)} | {ratio:.2f}x | {mark} | "
                         f"{cpu:.2f} | {f'{peak / MiB:.0f} MiB' if is_msn else ''} |")
    return lines


def notes(cases: list[Case], tools: list[tuple[str, bool]],
          results: dict[tuple[str, str], list[Transfer]], small: Transfer | None,
          sizes: tuple[int, int], big_sha: str) -> list[str]:
    lines = []
    for case in cases:
        for tool, is_msn in tools:
            if not is_msn:
                continue
            rs = results[(case.name, tool)]
            rates = [r.first_rate / 1e6 for r in rs if r.first_rate is not None]
            first = f"; first stream {', '.join(f'{x:,.0f}' for x in rates)} MB/s" if rates else ""
            lines.append(f"- {case.name}, {tool}: split in {sum(r.split for r in rs)} of "
                         f"{len(rs)} runs{first}.")
    if small is not None:
        growth = max(r.anon_peak - r.anon_before for rs in results.values() for r in rs if r.sha256)
        lines.append(f"- Memory is flat: the peak anonymous memory grew by at most "
                     f"{growth / MiB:.1f} MiB during a {sizes[0] / MiB:,.0f} MiB download and by "
                     f"{(small.anon_peak - small.anon_before) / MiB:.1f} MiB during a "
                     f"{sizes[1] / MiB:,.0f} MiB one; the rest is the interpreter and its imports.")
    lines.append(f"- sha256 of every msn download matched the served file ({big_sha[:16]}...).")
    lines.append(f"- Load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs "
                 "(the server, curl and msn share them).")
    return lines


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=int(os.environ.get("MSN_BENCH_DL_MB", "1145")),
                    help="file size in MiB [1145, i.e. 1.2 GB]")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("MSN_BENCH_DL_RUNS", "3")),
                    help="runs of each tool uncapped [3]; 0 skips the case")
    ap.add_argument("--capped-runs", type=int, default=1, help="runs of each tool capped [1]; 0 skips")
    ap.add_argument("--rate-mbs", type=float, default=25.0,
                    help="the capped case's limit per connection, MB/s [25]; 0 skips the case")
    ap.add_argument("--connections", type=int, default=4, help="msn's connections [4]")
    ap.add_argument("--keep", action="store_true", help="keep the generated files in .bench/")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if shutil.which("curl") is None:
        print("### Download throughput\n\nSkipped: curl is not installed (apt-get install curl).\n")
        return 0
    serve = SCRATCH / "serve"
    size = args.size_mb * MiB
    small_size = max(size // 16, MiB)
    big_sha = make_file(serve / "big.bin", size)
    small_sha = make_file(serve / "small.bin", small_size)
    cases = [Case("uncapped loopback", None, args.runs, 0.9)] if args.runs > 0 else []
    if args.rate_mbs > 0 and args.capped_runs > 0:
        cases.append(Case(f"each connection capped at {args.rate_mbs:g} MB/s", args.rate_mbs * 1e6,
                          args.capped_runs, 3.0))
    tools = [("curl -o", False), (f"msn, {args.connections} connections", True)]
    results: dict[tuple[str, str], list[Transfer]] = {}
    small = None
    try:
        for case in cases:
            small = run_case(case, tools, serve, args.connections, results) or small
    finally:
        if not args.keep:
            shutil.rmtree(SCRATCH, ignore_errors=True)
    for (_case, tool), runs in results.items():
        for r in runs:
            if r.size != size or (r.sha256 is not None and r.sha256 != big_sha):
                raise SystemExit(f"{tool} downloaded a different file than was served")
    if small is not None and small.sha256 != small_sha:
        raise SystemExit("msn downloaded a different small file than was served")
    print("### Download throughput (`msn download` vs `curl -o`)\n")
    print(f"One {size / 1e9:.2f} GB file of random bytes served from 127.0.0.1 by the test server "
          "(sendfile) in another process. Whole-process wall time, start to exit, alternating "
          f"the tools. msn starts one stream and splits the rest over {args.connections} ranged "
          "requests if that stream is slow (below `MSN_DOWNLOAD_SPLIT_BELOW` MB/s in its first "
          "`SPLIT_PROBE` seconds); its time covers the sha256 of the whole file, the rename and "
          "the index update. Peak anon: RssAnon + RssShmem of the msn process, sampled every "
          "10 ms (`bench/measure.py`).\n")
    print("\n".join(table(cases, tools, results)) + "\n")
    print("\n".join(notes(cases, tools, results, small, (size, small_size), big_sha)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
