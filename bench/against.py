"""Before and after: two revisions of msn in alternating runs (``bench/run.py --against REV``).

Each revision other than this working tree is checked out with ``git worktree add --detach``
under ``SCRATCH/trees/`` (removed at the end). Both run in this venv, the same ``msn``
script, with ``PYTHONPATH`` (and the working directory) at their own tree, so the only
difference between the two is msn's code. Per variant, untimed first: each revision converts
the file once with ``--no-verify``; the two outputs must hold identical tensors, and each
revision's own output is what its ``msn verify`` runs on. Then ``--runs`` rounds of the six
commands (``convert --no-verify``, ``convert`` with verify, ``verify``, for each revision),
each command's two revisions back to back, which goes first swapped every round, a sync before
each run, each measured by ``bench/measure.py``.

Writes a markdown section (medians, min-max of wall, after / before) to ``--output`` and to
stdout; exit 1 when a run fails or the outputs differ.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from measure import REPO, Series, fmt_ratio, log, mb, measure
from report import Options, environment_lines

MSN = str(Path(sys.executable).parent / "msn")
COMMANDS = ("convert --no-verify", "convert", "verify")


@dataclass
class Code:
    """One revision of msn: where its tree is and how it is named in the report."""
    name: str  # "before" or "after"
    tree: Path
    describe: str
    worktree: bool

    def env(self) -> dict[str, str]:
        return {"PYTHONPATH": str(self.tree)}


@dataclass
class VariantRows:
    variant: str
    file_bytes: int
    identical: bool
    series: dict[tuple[str, str], Series] = field(default_factory=dict)  # (command, code)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def checkout(name: str, rev: str | None, scratch: Path) -> Code:
    """``rev`` in a worktree of its own, or this working tree when ``rev`` is None."""
    if rev is None:
        dirty = " + uncommitted edits" if git("status", "--porcelain", "--untracked-files=no") else ""
        head = git("log", "-1", "--format=%h %<(72,trunc)%s")
        return Code(name, REPO, f"working tree ({head}{dirty})", False)
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    tree = scratch / "trees" / f"{name}-{sha[:12]}"
    if tree.exists():
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO,
                       capture_output=True)
        shutil.rmtree(tree, ignore_errors=True)
    tree.parent.mkdir(parents=True, exist_ok=True)
    git("worktree", "add", "--detach", str(tree), sha)
    return Code(name, tree, f"{rev} ({git('log', '-1', '--format=%h %<(72,trunc)%s', sha)})", True)


def check_import(code: Code) -> None:
    """The revision's own msn_cli is the one its processes import."""
    found = subprocess.run([sys.executable, "-c", "import msn_cli; print(msn_cli.__file__)"],
                           cwd=code.tree, env={**os.environ, **code.env()}, capture_output=True,
                           text=True, check=True).stdout.strip()
    if not Path(found).resolve().is_relative_to(code.tree.resolve()):
        raise SystemExit(f"{code.name}: msn_cli imports from {found}, not from {code.tree}")


def command(cmd: str, src: Path, out: Path, folder: Path) -> list[str]:
    if cmd == "verify":
        return [MSN, "verify", str(folder), "-q", "--no-record"]
    return [MSN, "convert", str(src), str(out), "-q", *(["--no-verify"] if "--no-verify" in cmd else [])]


def prepare(codes: list[Code], src: Path, outs: Path, scratch: Path) -> dict[str, Path]:
    """Each revision's own ``--no-verify`` output (untimed), which its ``msn verify`` checks."""
    folders = {}
    for code in codes:
        folder = outs / f"{src.stem}-{code.name}-folder"
        shutil.rmtree(folder, ignore_errors=True)
        run = measure(command("convert --no-verify", src, folder, folder), scratch,
                      env=code.env(), cwd=code.tree)
        if run.rc != 0:
            raise SystemExit(f"{code.name}: msn convert failed (exit {run.rc}): {run.stderr[-600:]}")
        folders[code.name] = folder
    return folders


def same_tensors(a: Path, b: Path) -> bool:
    r = subprocess.run([sys.executable, str(REPO / "bench" / "compare.py"), str(a), str(b)],
                       cwd=REPO, capture_output=True, text=True)
    return r.returncode == 0


def run_variant(opts: Options, codes: list[Code], src: Path, scratch: Path) -> VariantRows:
    outs = scratch / "out"
    folders = prepare(codes, src, outs, scratch)
    rows = VariantRows(src.name.split("_")[0], src.stat().st_size,
                       same_tensors(folders[codes[0].name], folders[codes[1].name]))
    for cmd in COMMANDS:
        for code in codes:
            rows.series[(cmd, code.name)] = Series(f"`msn {cmd}`")
    for r in range(opts.runs):
        # each command's two revisions back to back, the first of them swapped every round, so
        # neither always runs just after the other's writing; a sync before each run, so that
        # no run pays for the write-back of the one before
        for cmd in COMMANDS:
            for code in (codes if r % 2 == 0 else codes[::-1]):
                _timed(opts, rows, cmd, code, src, folders, scratch, r)
    for folder in folders.values():
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def _timed(opts: Options, rows: VariantRows, cmd: str, code: Code, src: Path,
           folders: dict[str, Path], scratch: Path, r: int) -> None:
    out = scratch / "out" / f"{rows.variant}-{code.name}-out"
    shutil.rmtree(out, ignore_errors=True)
    os.sync()
    log(f"{rows.variant} run {r + 1}/{opts.runs}: {code.name}: msn {cmd}")
    run = measure(command(cmd, src, out, folders[code.name]), scratch, env=code.env(), cwd=code.tree)
    if run.rc != 0:
        log(f"  FAILED (exit {run.rc}): {run.stderr.strip()[-600:]}")
    rows.series[(cmd, code.name)].runs.append(run)
    shutil.rmtree(out, ignore_errors=True)


def table(results: list[VariantRows]) -> list[str]:
    lines = ["| variant | command | before wall s | after wall s | after / before wall "
             "| before anon MB | after anon MB | after / before anon | before user+sys s "
             "| after user+sys s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for cmd in COMMANDS:
            b, a = res.series[(cmd, "before")], res.series[(cmd, "after")]
            if not (b.ok() and a.ok()):
                lines.append(f"| {res.variant} | `msn {cmd}` | **failed** (before ok: {b.ok()}, "
                             f"after ok: {a.ok()}) | | | | | | | |")
                continue
            lines.append(f"| {res.variant} | `msn {cmd}` | {b.wall:.2f} ({b.spread()}) | "
                         f"{a.wall:.2f} ({a.spread()}) | {fmt_ratio(a.wall / b.wall)} | "
                         f"{mb(b.anon)} | {mb(a.anon)} | "
                         f"{fmt_ratio(a.anon / b.anon if b.anon else None)} | {b.cpu:.2f} | "
                         f"{a.cpu:.2f} |")
    return lines


def render(opts: Options, codes: list[Code], results: list[VariantRows], started: str,
           elapsed: float, load: tuple[float, float]) -> str:
    ended = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    lines = ["## Before and after", "",
             f"`bench/run.py {' '.join(sys.argv[1:])}` (`bench/against.py`): the same venv, "
             "each revision's code through `PYTHONPATH`, each command's two revisions back to "
             "back, which goes first swapped every round, a sync before each run; "
             f"runs of each: {opts.runs}; medians (min-max of wall in brackets).", "",
             *(f"- {c.name}: {c.describe}" for c in codes),
             *environment_lines(started, ended, elapsed, load),
             "- Peak anon: RssAnon + RssShmem of the process tree, sampled every 10 ms "
             "(`bench/measure.py`); page-cache and mapped-file pages not counted.",
             "- `msn verify` runs on each revision's own `--no-verify` output; the two outputs' "
             "tensors: " + ", ".join(f"{r.variant} {'identical' if r.identical else 'DIFFER'}"
                                      for r in results) + ".", "",
             *table(results), ""]
    return "\n".join(lines) + "\n"


def main(opts: Options, files: list[Path], before: str, after: str | None, scratch: Path,
         output: Path) -> int:
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    t0, load0 = time.perf_counter(), os.getloadavg()[0]
    codes = [checkout("before", before, scratch), checkout("after", after, scratch)]
    try:
        for code in codes:
            check_import(code)
            log(f"{code.name}: {code.describe}")
        results = [run_variant(opts, codes, src, scratch) for src in files]
    finally:
        for code in codes:
            if code.worktree:
                subprocess.run(["git", "worktree", "remove", "--force", str(code.tree)], cwd=REPO,
                               capture_output=True)
    text = render(opts, codes, results, started, time.perf_counter() - t0,
                  (load0, os.getloadavg()[0]))
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text)
    print(text)
    log(f"wrote {output}")
    failed = any(not s.ok() for r in results for s in r.series.values())
    return 1 if failed or not all(r.identical for r in results) else 0
