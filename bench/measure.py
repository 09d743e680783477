"""Measuring one command as a fresh process: wall time, CPU time and peak anonymous memory.

The memory figure is the peak of RssAnon + RssShmem summed over the process and its
descendants, read from ``/proc/PID/status``. Pages of a memory-mapped file or of the page cache
are left out on purpose: they are clean, the kernel reclaims them whenever it needs the room, so
handing them back early lowers RSS without lowering what the process costs the machine.

The kernel keeps no high-water mark of anonymous memory (``VmHWM`` is RSS), so the parent
samples it: the whole tree every :data:`POLL_S` seconds, the list of descendants refreshed
every :data:`CHILDREN_EVERY_S` seconds (``/proc/PID/task/*/children`` is not built into every
kernel, so descendants are found by their parent pid in ``/proc/*/stat``, which costs a few
milliseconds per pass). An allocation that lives less than one poll can be missed.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MB = 1_000_000
POLL_S = 0.01
CHILDREN_EVERY_S = 0.2
ANON_FIELDS = (b"RssAnon:", b"RssShmem:")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def anon_bytes(pid: int) -> int:
    """RssAnon + RssShmem of one process; 0 once it has exited (a zombie has no memory)."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read()
    except OSError:
        return 0
    return sum(int(line.split()[1]) * 1024 for line in text.splitlines()
               if line.startswith(ANON_FIELDS))


def parent_pids() -> dict[int, int]:
    """pid -> parent pid of every process visible in /proc."""
    parents: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so split after the last ")"
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 1:
            parents[int(name)] = int(fields[1])
    return parents


def descendants(root: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for pid, ppid in parent_pids().items():
        children.setdefault(ppid, []).append(pid)
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class AnonPeak:
    """The peak anonymous memory of a process tree, sampled by :meth:`sample`."""

    def __init__(self, root: int) -> None:
        self.root = root
        self.tree: set[int] = set()
        self.listed_at = float("-inf")
        self.peak = 0

    def sample(self) -> None:
        now = time.monotonic()
        if now - self.listed_at >= CHILDREN_EVERY_S:
            self.tree = descendants(self.root)
            self.listed_at = now
        total = anon_bytes(self.root) + sum(anon_bytes(pid) for pid in self.tree)
        self.peak = max(self.peak, total)


@dataclass
class Run:
    wall: float
    cpu: float  # user + sys of the child and its reaped descendants
    anon: int  # peak anonymous memory of the process tree, bytes
    rc: int
    stdout: str
    stderr: str


def measure(cmd: list[str], scratch: Path, *, env: dict[str, str] | None = None,
            cwd: Path = REPO, timeout: float = 1800) -> Run:
    """Run ``cmd`` as a fresh process: wall time (perf_counter), its CPU time (wait4) and its
    peak anonymous memory (sampled)."""
    out_path, err_path = scratch / "last.stdout", scratch / "last.stderr"
    env = {**os.environ, **(env or {}), "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    settle()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=cwd, env=env)
        peak = AnonPeak(p.pid)
        deadline = t0 + timeout
        while True:
            peak.sample()
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(POLL_S)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return Run(wall, ru.ru_utime + ru.ru_stime, peak.peak, p.returncode,
               out_path.read_text(errors="replace"), err_path.read_text(errors="replace"))


@dataclass
class Series:
    label: str
    runs: list[Run] = field(default_factory=list)
    out_bytes: int | None = None

    def ok(self) -> bool:
        return bool(self.runs) and all(r.rc == 0 for r in self.runs)

    @property
    def wall(self) -> float:
        return statistics.median(r.wall for r in self.runs)

    @property
    def cpu(self) -> float:
        return statistics.median(r.cpu for r in self.runs)

    @property
    def anon(self) -> int:
        return int(statistics.median(r.anon for r in self.runs))

    def spread(self) -> str:
        walls = sorted(r.wall for r in self.runs)
        return f"{walls[0]:.2f}-{walls[-1]:.2f}" if len(walls) > 1 else f"{walls[0]:.2f}"


def settle() -> None:
    """Before each measured run (not timed): write out whatever earlier runs left dirty (the
    baseline does not fsync its output), so that no run pays for the previous one's write-back.
    ``sync`` flushes; it drops nothing from the page cache."""
    if hasattr(os, "sync"):
        os.sync()
    time.sleep(0.3)


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def evict(path: Path) -> None:
    """Drop one file's pages from the page cache (posix_fadvise DONTNEED); nothing else."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_through(path: Path) -> None:
    buf = bytearray(8 << 20)
    with open(path, "rb", buffering=0) as f:
        while f.readinto(buf):
            pass


def fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def mb(n: int | None) -> str:
    return "" if n is None else f"{n / MB:,.0f}"
