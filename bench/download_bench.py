"""Download benchmark: msn's fetch against curl on the same ~1 GB file from a local server.

Generates a file of random bytes under .bench/download/, serves it from tests/http_server.py
in a separate process (kernel sendfile, so the server is not the bottleneck), then downloads
it several times with ``curl -o`` and with ``msn_cli.download.fetch`` (streamed to the cache
and sha256-hashed while streaming, as ``msn download`` does), alternating the two. Each msn
run happens in a fresh process whose peak memory is read from the kernel (wait4 ru_maxrss);
a second, 16x smaller file shows whether that peak depends on the file size.

Prints a markdown section on stdout (``make bench`` includes it). Standalone:

    .venv/bin/python bench/download_bench.py [--size-mb 1024] [--runs 5] [--keep]
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
from msn_cli.download import fetch

def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0

url, cache = sys.argv[1], sys.argv[2]
before = hwm()
t0, c0 = time.perf_counter(), time.process_time()
f = fetch(url, cache_dir=cache, force=True)
dt, cpu = time.perf_counter() - t0, time.process_time() - c0
print(json.dumps({"seconds": dt, "cpu": cpu, "size": f.size, "sha256": f.sha256,
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


def start_server(root: Path) -> tuple[subprocess.Popen, int]:
    p = subprocess.Popen([sys.executable, str(REPO / "tests" / "http_server.py"), "--root", str(root)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    port = int(p.stdout.readline().strip())
    return p, port


def run_curl(url: str, out: Path) -> dict:
    p = subprocess.Popen(["curl", "-sS", "--fail", "-o", str(out), "-w",
                          "%{time_total} %{size_download}", url],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    text = p.stdout.read() if p.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"curl failed: {p.stderr.read() if p.stderr else ''}")
    total, size = text.split()
    out.unlink()
    return {"seconds": float(total), "size": int(float(size)), "cpu": usage.ru_utime + usage.ru_stime}


def run_msn(url: str, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", DRIVER, url, str(cache)], stdout=subprocess.PIPE,
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
    ap.add_argument("--size-mb", type=int, default=int(os.environ.get("MSN_BENCH_DL_MB", "1024")),
                    help="file size in MiB [1024]")
    ap.add_argument("--runs", type=int, default=int(os.environ.get("MSN_BENCH_DL_RUNS", "5")))
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
    server, port = start_server(serve)
    base = f"http://127.0.0.1:{port}"
    curl_runs: list[dict] = []
    msn_runs: list[dict] = []
    try:
        # Warm the page cache for the served file so the first run is not penalised.
        run_curl(f"{base}/big.bin", SCRATCH / "warm.bin")
        for i in range(args.runs):
            pair = [("curl", lambda: run_curl(f"{base}/big.bin", SCRATCH / "curl.bin")),
                    ("msn", lambda: run_msn(f"{base}/big.bin", SCRATCH / "cache"))]
            if i % 2:
                pair.reverse()
            for tool, fn in pair:
                res = fn()
                (curl_runs if tool == "curl" else msn_runs).append(res)
                print(f"run {i + 1} {tool}: {mbps(res['size'], res['seconds']):.0f} MB/s",
                      file=sys.stderr)
        small = run_msn(f"{base}/small.bin", SCRATCH / "cache")
    finally:
        server.terminate()
        server.wait()
        if not args.keep:
            shutil.rmtree(SCRATCH, ignore_errors=True)

    for r in msn_runs:
        if r["sha256"] != big_sha or r["size"] != size:
            raise SystemExit("msn downloaded a different file than was served")
    if small["sha256"] != small_sha:
        raise SystemExit("msn downloaded a different small file than was served")
    curl_speeds = [mbps(r["size"], r["seconds"]) for r in curl_runs]
    msn_speeds = [mbps(r["size"], r["seconds"]) for r in msn_runs]
    ratio = statistics.median(msn_speeds) / statistics.median(curl_speeds)
    peak = max(r["peak_rss"] for r in msn_runs)
    growth = max(r["hwm_after"] - r["hwm_before"] for r in msn_runs)
    small_growth = small["hwm_after"] - small["hwm_before"]

    def fmt(xs: list[float]) -> str:
        return f"{statistics.median(xs):,.0f} (runs: {', '.join(f'{x:,.0f}' for x in xs)})"

    print("### Download throughput (`msn download` vs `curl -o`)\n")
    print(f"One {size / 1e9:.2f} GB file of random bytes served from 127.0.0.1 by the test server "
          f"(sendfile) in another process; {args.runs} runs each, alternating. msn's time covers "
          "streaming to the cache, sha256 while streaming, the rename and the index update; "
          "curl's is its `time_total`.\n")
    def cpu_per_gb(runs: list[dict]) -> float:
        return statistics.median(r["cpu"] / (r["size"] / 1e9) for r in runs)

    print("| tool | MB/s, median (each run) | CPU s per GB | peak RSS of the process |")
    print("|---|---|---|---|")
    print(f"| curl -o | {fmt(curl_speeds)} | {cpu_per_gb(curl_runs):.2f} | |")
    print(f"| msn fetch (sha256 included) | {fmt(msn_speeds)} | {cpu_per_gb(msn_runs):.2f} | "
          f"{peak / MiB:.0f} MiB |")
    print()
    verdict = "meets" if ratio >= 0.8 else "MISSES"
    print(f"- Throughput ratio msn / curl: **{ratio:.2f}x** ({verdict} the >= 0.8x target).")
    print(f"- Memory is flat: the peak grew by {growth / MiB:.1f} MiB during the "
          f"{size / MiB:,.0f} MiB download and by {small_growth / MiB:.1f} MiB during a "
          f"{small_size / MiB:,.0f} MiB one (peak RSS {small['peak_rss'] / MiB:.0f} MiB there); "
          "the rest is the interpreter and its imports.")
    print(f"- sha256 of every msn download matched the served file ({big_sha[:16]}...).")
    print("- CPU time: curl's whole process; msn's fetch() call, all threads. Hashing costs CPU that curl "
          "does not spend: on an idle machine it runs on a second core beside the transfer; on a "
          f"busy one it shows up as throughput (load average at the end: "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs).\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
