"""``make bench``: msn convert against the seed-equivalent conversion, side by side, in one run.

What it does (everything in ``.bench/``, which is gitignored):

1. writes the synthetic checkpoints it needs with :mod:`msn_cli.dev.synth` (real key names, shapes
   and layouts, random weights): ViT-S/16, ViT-B/16, ViT-L/16, ViT-B/4 (3,137 tokens) and
   ViT-L/7 in the released layout and ViT-L/16 in the training layout (about 5 GB); existing
   files are reused;
2. reads each file once, so that every measured run starts with the file in the page cache
   (``--cold`` instead evicts *that file* from the page cache before every run with
   ``posix_fadvise(DONTNEED)``; nothing system-wide is ever dropped); an extra cold pass
   (``--cold-runs``, msn and the baseline, no verify) shows the largest variant read from disk;
3. per variant, runs alternately (the order rotates every round), each as a fresh process
   measured with ``os.wait4`` (the child's own user+sys time and peak RSS) and
   ``time.perf_counter`` (wall): ``msn convert FILE OUT --no-verify``; the seed-equivalent
   path (``bench/baseline.py``) with and without the seed's forward-pass check; and
   ``msn convert FILE OUT`` with its verify;
4. checks that msn's and the baseline's ``model.safetensors`` hold the same keys and
   identical tensors (``torch.equal``, ``bench/compare.py``);
5. the training-layout file: ``msn convert --no-verify`` (peak RSS against the released-layout
   run) and ``msn inspect``;
6. start-up: ``msn --help`` and ``msn inspect --help`` against ``python -c "import torch"``;
7. per variant: ``msn verify`` on the converted folder against one forward pass of the
   converted model on verify's own inputs (``bench/forward.py``); and where the time of one
   convert goes, stage by stage (``bench/stages.py``);
8. runs ``bench/download_bench.py`` when it exists and includes the section it prints;
9. writes ``docs/benchmarks.md`` (medians; ratios to the baseline; the targets of issue 6
   with pass/fail; the machine's core count and the versions).

Examples::

    .venv/bin/python bench/run.py                      # everything, 3 runs each (~20-25 min, 2 cores)
    .venv/bin/python bench/run.py --quick              # ViT-S/16 only, 2 runs (~2 min)
    .venv/bin/python bench/run.py --variants vitl16 --runs 5 --no-training --output /tmp/b.md
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
PY = sys.executable
BIN = Path(PY).parent
MSN = str(BIN / "msn") if (BIN / "msn").exists() else None
ALL_VARIANTS = ("vits16", "vitb16", "vitl16", "vitb4", "vitl7")
MB = 1_000_000


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Measuring one process
# --------------------------------------------------------------------------------------------

@dataclass
class Run:
    wall: float
    cpu: float  # user + sys of the child alone
    rss: int  # peak resident set size of the child, bytes
    rc: int
    stdout: str
    stderr: str


def measure(cmd: list[str], scratch: Path, timeout: float = 1800) -> Run:
    """Run ``cmd`` as a fresh process; wall (perf_counter), its own CPU and peak RSS (wait4)."""
    out_path, err_path = scratch / "last.stdout", scratch / "last.stderr"
    env = {**os.environ, "NO_COLOR": "1", "PYTHONUNBUFFERED": "1"}
    settle()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=REPO,
                             env=env)
        deadline = t0 + timeout
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, ru = os.wait4(p.pid, 0)
                break
            time.sleep(0.005)
        wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    return Run(wall, ru.ru_utime + ru.ru_stime, ru.ru_maxrss * 1024, p.returncode,
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
    def rss(self) -> int:
        return int(statistics.median(r.rss for r in self.runs))

    def spread(self) -> str:
        walls = sorted(r.wall for r in self.runs)
        return f"{walls[0]:.2f}-{walls[-1]:.2f}" if len(walls) > 1 else f"{walls[0]:.2f}"


def settle() -> None:
    """Before each measured run (not timed): write out whatever earlier runs left dirty
    (the baseline does not fsync its 1.2 GB output), so that no run pays for the previous
    one's write-back. ``sync`` flushes; it drops nothing from the page cache."""
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


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

GEN = """
import sys
from pathlib import Path
from msn_cli.dev.synth import arch_for, write_checkpoint
name, layout, dest = sys.argv[1], sys.argv[2], Path(sys.argv[3])
tmp = dest.with_name(dest.name + ".part")
write_checkpoint(tmp, arch_for(name), layout)
tmp.replace(dest)
"""


def ensure_file(files: Path, variant: str, layout: str) -> Path:
    # the variant name stays in the file name: the seed picks its config from the name
    dest = files / f"{variant}_{layout}.pth.tar"
    if not dest.is_file():
        log(f"generating {dest.name} ...")
        files.mkdir(parents=True, exist_ok=True)
        subprocess.run([PY, "-c", GEN, variant, layout, str(dest)], check=True, cwd=REPO)
    return dest


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

@dataclass
class VariantResult:
    variant: str
    file: Path
    file_bytes: int
    series: dict[str, Series]
    identical: dict | None = None
    identical_4x: dict | None = None
    verify: Series | None = None
    forward: dict | None = None
    forward_proc: Series | None = None


MODES = ("msn", "seed-nocheck", "seed", "msn-verify", "seed-4x", "floor")
FLOOR_CODE = "import torch; from transformers import ViTMSNModel"
LABELS = {
    "msn": "`msn convert --no-verify`",
    "seed-nocheck": "seed-equivalent, without its forward check",
    "seed": "seed-equivalent (with its forward check)",
    "msn-verify": "`msn convert` (with verify)",
    "seed-4x": "seed-equivalent without its check, under transformers 4.x (for reference)",
    "floor": f"floor: `python -c \"{FLOOR_CODE}\"` alone (converts nothing)",
}
SEED_4X: str | None = None  # a python with transformers 4.x (--seed-4x), for the reference row
BASELINE_OF = {"msn": "seed-nocheck", "msn-verify": "seed"}


def mode_cmd(mode: str, src: Path, out: Path) -> list[str]:
    if mode == "floor":
        return [PY, "-c", FLOOR_CODE]
    if mode == "msn":
        return [MSN, "convert", str(src), str(out), "--no-verify", "-q"]
    if mode == "msn-verify":
        return [MSN, "convert", str(src), str(out), "-q"]
    cmd = [SEED_4X if mode == "seed-4x" else PY, str(BENCH / "baseline.py"), str(src), str(out)]
    return cmd + (["--no-check"] if mode in ("seed-nocheck", "seed-4x") else [])


def find_seed_4x(choice: str | None) -> str | None:
    if choice == "none":
        return None
    candidate = choice or str(REPO / ".venv-compat" / "bin" / "python")
    if not Path(candidate).exists():
        return None
    probe = subprocess.run([candidate, "-c", "import transformers; print(transformers.__version__)"],
                           capture_output=True, text=True)
    version = probe.stdout.strip()
    if probe.returncode != 0 or not version.startswith("4."):
        return None
    LABELS["seed-4x"] = ("seed-equivalent without its check, under transformers "
                         f"{version} (for reference)")
    return candidate


def run_variant(variant: str, src: Path, args, scratch: Path, have_verify: bool) -> VariantResult:
    modes = [m for m in MODES if (have_verify or m != "msn-verify") and (SEED_4X or m != "seed-4x")]
    series = {m: Series(LABELS[m]) for m in modes}
    outs = scratch / "out"
    kept: dict[str, Path] = {}
    for r in range(args.runs):
        order = modes[r % len(modes):] + modes[:r % len(modes)]  # rotate: no mode always first
        for mode in order:
            if mode in ("seed", "msn-verify") and r >= args.verify_runs:
                continue  # the slow pair (forward passes) runs fewer rounds
            out = outs / f"{variant}-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            if args.cold:
                evict(src)
            log(f"{variant} run {r + 1}/{args.runs}: {mode}")
            run = measure(mode_cmd(mode, src, out), scratch)
            series[mode].runs.append(run)
            if run.rc != 0:
                log(f"  FAILED (exit {run.rc}): {run.stderr.strip()[-600:]}")
            elif series[mode].out_bytes is None and mode != "floor":
                series[mode].out_bytes = folder_bytes(out)
            if r == 0 and run.rc == 0 and mode in ("msn", "seed-nocheck", "seed-4x"):
                kept[mode] = out.with_name(out.name + "-first")  # compared after the runs
                shutil.rmtree(kept[mode], ignore_errors=True)
                out.rename(kept[mode])
            else:
                shutil.rmtree(out, ignore_errors=True)
    res = VariantResult(variant, src, src.stat().st_size, series)
    for base, attr in (("seed-nocheck", "identical"), ("seed-4x", "identical_4x")):
        if "msn" not in kept or base not in kept:
            continue
        cmp = subprocess.run([PY, str(BENCH / "compare.py"), str(kept["msn"]), str(kept[base])],
                             capture_output=True, text=True, cwd=REPO)
        try:
            found = json.loads(cmp.stdout)
        except json.JSONDecodeError:
            found = {"identical": False, "error": cmp.stderr.strip()[-300:]}
        setattr(res, attr, found)
        log(f"{variant}: msn vs {base} tensors identical: {found.get('identical')}")
    if have_verify and "msn" in kept and not args.no_verify_cost:
        folder = kept["msn"]
        res.verify = Series("`msn verify`")
        res.forward_proc = Series("forward pass process")
        for r in range(args.verify_cost_runs):
            log(f"{variant}: msn verify / one forward pass, run {r + 1}")
            res.verify.runs.append(measure([MSN, "verify", str(folder), "-q", "--no-record"], scratch))
            fw = measure([PY, str(BENCH / "forward.py"), str(folder)], scratch)
            res.forward_proc.runs.append(fw)
            if fw.rc == 0:
                got = json.loads(fw.stdout.strip().splitlines()[-1])
                if res.forward is None or got["forward_s"] < res.forward["forward_s"]:
                    res.forward = got
    for path in kept.values():
        shutil.rmtree(path, ignore_errors=True)
    return res


TORCH_ONLY = "python -c \"import torch\""


def startup(args, scratch: Path) -> dict[str, Series]:
    cmds = {
        TORCH_ONLY: [PY, "-c", "import torch"],
        "msn --help": [MSN, "--help"],
        "msn inspect --help": [MSN, "inspect", "--help"],
    }
    res = {k: Series(k) for k in cmds}
    n = max(3, args.runs + 2)
    for _ in range(n):
        for k, cmd in cmds.items():
            res[k].runs.append(measure(cmd, scratch))
    log("start-up: " + ", ".join(f"{k} {s.wall:.2f} s" for k, s in res.items()))
    return res


def cold_pass(args, scratch: Path, variant: str, src: Path) -> dict[str, Series]:
    """msn and the baseline with the source file evicted from the page cache before each run."""
    res = {m: Series(LABELS[m]) for m in ("msn", "seed-nocheck")}
    for r in range(args.cold_runs):
        for mode in (("msn", "seed-nocheck") if r % 2 == 0 else ("seed-nocheck", "msn")):
            out = scratch / "out" / f"cold-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            evict(src)
            log(f"{variant} cold run {r + 1}/{args.cold_runs}: {mode}")
            res[mode].runs.append(measure(mode_cmd(mode, src, out), scratch))
            if res[mode].out_bytes is None and res[mode].runs[-1].rc == 0:
                res[mode].out_bytes = folder_bytes(out)
            shutil.rmtree(out, ignore_errors=True)
    read_through(src)  # warm again for whatever follows
    return res


def training(args, scratch: Path, src: Path) -> dict[str, Series]:
    res = {"convert": Series("`msn convert --no-verify` (training layout)"),
           "inspect": Series("`msn inspect` (training layout)")}
    for r in range(args.runs):
        out = scratch / "out" / "training"
        shutil.rmtree(out, ignore_errors=True)
        if args.cold:
            evict(src)
        log(f"training layout run {r + 1}/{args.runs}: convert --no-verify")
        run = measure([MSN, "convert", str(src), str(out), "--no-verify", "-q"], scratch)
        res["convert"].runs.append(run)
        if run.rc == 0 and res["convert"].out_bytes is None:
            res["convert"].out_bytes = folder_bytes(out)
        elif run.rc != 0:
            log(f"  FAILED: {run.stderr.strip()[-400:]}")
        shutil.rmtree(out, ignore_errors=True)
        if args.cold:
            evict(src)
        log(f"training layout run {r + 1}/{args.runs}: inspect")
        res["inspect"].runs.append(measure([MSN, "inspect", str(src)], scratch))
    return res


def stage_profile(src: Path, scratch: Path, verify: bool) -> list[dict] | None:
    out = scratch / "out" / "stages"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PY, str(BENCH / "stages.py"), str(src), str(out)] + ([] if verify else ["--no-verify"])
    run = measure(cmd, scratch)
    shutil.rmtree(out, ignore_errors=True)
    if run.rc != 0:
        log(f"stage profile failed: {run.stderr.strip()[-400:]}")
        return None
    return json.loads(run.stdout.strip().splitlines()[-1])


def download_section(args, scratch: Path) -> str | None:
    script = BENCH / "download_bench.py"
    if not script.is_file() or args.no_download:
        return None
    extra = ["--size-mb", "64", "--runs", "1"] if args.quick else ["--runs", str(args.runs)]
    cmd = [PY, str(script), *extra]
    log("download benchmark: " + " ".join(cmd[1:]))
    run = measure(cmd, scratch, timeout=1200)
    if run.rc != 0:
        return f"## Download\n\n`bench/download_bench.py` failed (exit {run.rc}):\n\n```\n" \
               f"{run.stderr.strip()[-1500:]}\n```\n"
    return run.stdout.strip() + "\n"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def versions() -> dict[str, str]:
    code = ("import json, torch, transformers, safetensors, msn_cli, sys, platform;"
            "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__,"
            "'transformers': transformers.__version__, 'safetensors': safetensors.__version__,"
            "'msn': msn_cli.__version__}))")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, cwd=REPO)
    return json.loads(out.stdout)


def machine() -> dict[str, str]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024 / 1024:.0f} GiB"
    except (OSError, ValueError, IndexError):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cores": str(cores), "cpu": cpu, "memory": mem,
            "os": f"{platform.system()} {platform.release()}"}


def fmt_ratio(x: float | None) -> str:
    return "" if x is None else f"{x:.2f}x"


def mb(n: int | None) -> str:
    return "" if n is None else f"{n / MB:,.0f}"


def report(args, started: str, ended: str, load: tuple, results: list[VariantResult],
           start: dict[str, Series] | None, train: dict[str, Series] | None,
           cold: tuple[str, dict[str, Series]] | None,
           stages: tuple[str, list[dict] | None, list[dict] | None] | None,
           download: str | None, have_verify: bool, elapsed: float) -> tuple[str, list]:
    v = versions()
    m = machine()
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`bench/run.py`); do not edit by hand. Command: "
        f"`{' '.join(['bench/run.py', *sys.argv[1:]])}`.",
        "",
        f"- Date: {started} to {ended} (UTC), {elapsed / 60:.1f} min",
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, {m['os']}",
        f"- Versions: Python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, "
        f"safetensors {v['safetensors']}, msn {v['msn']}",
        f"- Load average (1 min) before the first run: {load[0]:.2f}, at the end: {load[1]:.2f} "
        "(the end figure includes the benchmark's own processes)"
        + (" -- other work was running at the start; absolute times are inflated, the "
           "side-by-side ratios less so" if load[0] > 0.8 else ""),
        f"- Runs: {args.runs} of each ({args.verify_runs} of the two commands that run forward "
        "passes), alternating, order rotated every round; medians shown (min-max of wall in "
        "brackets).",
        "- Page cache: " + ("**cold** for the source file: before every run its pages were "
                            "evicted with `posix_fadvise(POSIX_FADV_DONTNEED)` (that file only)."
                            if args.cold else
                            "**warm**: every source file was read once before the runs and fits "
                            "in RAM, so reads come from the page cache, for msn and the baseline "
                            "alike. Outputs are written to the page cache; msn also `fsync`s its "
                            "folder (it waits for the disk), the baseline does not."),
        "- Peak RSS: the child process's own `ru_maxrss` from `wait4` (memory-mapped file pages "
        "count while they are mapped).",
        "- Before every measured run (untimed) `sync` writes out what earlier runs left dirty "
        "(the baseline's unsynced output), so no run pays for another's write-back.",
        "",
        "## Conversion",
        "",
        "| variant | file MB | command | wall s (median, range) | user+sys s | peak RSS MB "
        "| output MB | wall vs baseline | RSS vs baseline |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    targets: list[tuple[str, str, str, bool | None]] = []
    for res in results:
        for mode, s in res.series.items():
            if not s.runs:
                continue
            base = res.series.get(BASELINE_OF.get(mode, ""))
            wr = s.wall / base.wall if base and base.ok() and s.ok() else None
            rr = s.rss / base.rss if base and base.ok() and s.ok() else None
            status = "" if s.ok() else " **(failed)**"
            vs = f" (vs {BASELINE_OF[mode].replace('-', ' ')})" if mode in BASELINE_OF else ""
            lines.append(
                f"| {res.variant} | {mb(res.file_bytes)} | {s.label}{status} | {s.wall:.2f} "
                f"({s.spread()}) | {s.cpu:.2f} | {mb(s.rss)} | {mb(s.out_bytes)} | "
                f"{fmt_ratio(wr)}{vs if wr else ''} | {fmt_ratio(rr)} |")
    lines += ["", "Baseline = `bench/baseline.py`, the seed's steps rebuilt from issue 6's description "
              "(see its docstring): `torch.load` of the whole file, the config picked from the file "
              "name, `ViTMSNModel(config)` randomly initialised, the seed's renames and qkv split, "
              "strict `load_state_dict`, optionally its forward-pass check on one 224 px image, "
              "`save_pretrained`. Under transformers 5.x the seed's canonical names are mapped to "
              "5.x's in-memory names with a table mirroring transformers' own `ViTModel` "
              "conversion (`encoder.layer.` -> `layers.`, `attention.attention.query` -> "
              "`attention.q_proj`, ...); `save_pretrained` writes the canonical names back. "
              "`msn convert --no-verify` is compared with the baseline *without* its forward check, "
              "`msn convert` with verify with the baseline *with* it.", ""]
    lines += ["Output tensors (msn vs baseline, same keys, `torch.equal` on every tensor):", ""]
    for res in results:
        for ident, which in ((res.identical, "baseline"), (res.identical_4x, "baseline under 4.x")):
            if ident is None:
                if which == "baseline":
                    lines.append(f"- {res.variant}: not compared (a run failed)")
                continue
            extra = "" if ident.get("identical") else (
                f" -- only in msn: {ident.get('only_in_a')}, only in {which}: "
                f"{ident.get('only_in_b')}, differing: {ident.get('differing')}")
            lines.append(f"- {res.variant}, msn vs {which}: "
                         f"{'identical' if ident.get('identical') else 'NOT identical'}"
                         f", {ident.get('tensors', 0)} tensors{extra}")
    lines.append("")

    if train:
        tc, ti = train["convert"], train["inspect"]
        rel = next((r for r in results if r.variant == args.training_variant), None)
        rel_rss = rel.series["msn"].rss if rel and rel.series["msn"].ok() else None
        lines += ["## Training-layout checkpoint", "",
                  f"{args.training_variant} saved as the MSN training code saves it (`encoder`, "
                  "`target_encoder`, `prototypes`, AdamW `opt` state): "
                  f"{mb(train['file_bytes'])} MB.", "",  # type: ignore[index]
                  "| command | wall s (median, range) | user+sys s | peak RSS MB | vs released layout |",
                  "|---|---:|---:|---:|---:|"]
        ratio = tc.rss / rel_rss if rel_rss and tc.ok() else None
        lines.append(f"| {tc.label} | {tc.wall:.2f} ({tc.spread()}) | {tc.cpu:.2f} | {mb(tc.rss)} | "
                     f"{fmt_ratio(ratio)} peak RSS |")
        lines.append(f"| {ti.label} | {ti.wall:.2f} ({ti.spread()}) | {ti.cpu:.2f} | {mb(ti.rss)} | |")
        lines += ["", "Only the chosen encoder's tensors are read through the memory map; the "
                  "source check (CRC-32 of every zip member and the sha256 recorded in the "
                  "manifest) reads the whole file through one 8 MB buffer, which costs time in "
                  "proportion to the file but no memory.", ""]
        if args.training_variant == "vitl16":
            targets.append(("training-layout ViT-L/16 peak RSS <= 1.1x released layout",
                            fmt_ratio(ratio), "<= 1.10x", None if ratio is None else ratio <= 1.1))
            targets.append(("`msn inspect` on the training file < 3 s", f"{ti.wall:.2f} s",
                            "< 3 s", ti.ok() and ti.wall < 3))

    if start:
        torch_s = start[TORCH_ONLY]
        lines += ["## Start-up", "", "| command | wall s (median, range) | user+sys s | peak RSS MB "
                  "| vs `import torch` |", "|---|---:|---:|---:|---:|"]
        for k, s in start.items():
            lines.append(f"| `{k}` | {s.wall:.3f} ({s.spread()}) | {s.cpu:.3f} | {mb(s.rss)} | "
                         f"{fmt_ratio(s.wall / torch_s.wall)} |")
            if k != TORCH_ONLY:
                ratio = s.wall / torch_s.wall
                targets.append((f"`{k}` <= 0.25x `python -c \"import torch\"`", fmt_ratio(ratio),
                                "<= 0.25x", s.ok() and ratio <= 0.25))
        lines.append("")

    if have_verify and any(r.verify for r in results):
        lines += ["## Verify", "",
                  "`msn verify FOLDER --no-record` on msn's output (a fresh process: import, load "
                  "of both models, the sha256 of the source and of every file, the embeddings on "
                  "two inputs at the native size and every layer on two inputs at the smaller "
                  "size, through the reference and the converted model) against one forward pass "
                  "of the converted model on one image at the native size (`bench/forward.py`: "
                  "forward time alone, and its whole process: import + `from_pretrained` + "
                  "forward).", "",
                  "| variant | `msn verify` wall s | user+sys s | peak RSS MB | one forward pass s "
                  "| forward process wall s | verify / forward pass | verify / forward process |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for res in results:
            if not res.verify or not res.verify.runs:
                continue
            fw = res.forward["forward_s"] if res.forward else None
            fp = res.forward_proc.wall if res.forward_proc and res.forward_proc.ok() else None
            st = "" if res.verify.ok() else " (failed)"
            lines.append(f"| {res.variant} | {res.verify.wall:.2f}{st} | {res.verify.cpu:.2f} | "
                         f"{mb(res.verify.rss)} | {'' if fw is None else f'{fw:.2f}'} | "
                         f"{'' if fp is None else f'{fp:.2f}'} | "
                         f"{fmt_ratio(res.verify.wall / fw if fw else None)} | "
                         f"{fmt_ratio(res.verify.wall / fp if fp else None)} |")
        lines += ["", (
            'How verify keeps its cost down (issue 14; README, `msn verify`): only the embeddings'
            ' depend on the input size (the position embeddings are used as stored at the native '
            'size, interpolated at any other), so the embeddings -- patch projection, class '
            'token, position embeddings, every token -- are compared on two inputs at the native '
            'size, and every layer (embeddings, each block, the final norm, every token) on two '
            'inputs at the native grid halved to at most 8 patches a side (7 x 7 patches: 112 px '
            'for the /16 models, 28 px for ViT-B/4; 8 x 8 = 56 px for ViT-L/7), each size as one '
            "batch: every weight tensor takes part at a fraction of a native-size pass (ViT-B/4's"
            " 3,137 tokens never go through the blocks). Memory: both models' weights are memory-"
            'mapped from their files (the source checkpoint, `model.safetensors`), and after each'
            ' module has run its weight pages are given back to the kernel '
            '(`madvise(MADV_DONTNEED)` on clean file-backed pages only; they stay in the page '
            'cache), so the process holds about one layer of each model, not both models. '
            "Order: transformers' import (the floor below) starts in a thread as soon as torch "
            'is in, and the reference runs every parity input before the converted model is '
            'loaded, so the import overlaps the hashing and the reference; on 2 cores both are '
            'already busy then, and the gain is within the noise of these runs.'
        ), ""]

    for res in results:
        if res.variant != "vitl16":
            continue
        msn, seed = res.series.get("msn"), res.series.get("seed-nocheck")
        if msn and seed and msn.ok() and seed.ok():
            wr, rr = msn.wall / seed.wall, msn.rss / seed.rss
            targets.insert(0, ("ViT-L/16 `convert --no-verify` wall <= 0.3x seed", fmt_ratio(wr),
                               "<= 0.30x", wr <= 0.3))
            targets.insert(1, ("ViT-L/16 `convert --no-verify` peak RSS <= 0.6x seed", fmt_ratio(rr),
                               "<= 0.60x", rr <= 0.6))
        if res.identical is not None:
            targets.insert(2, ("ViT-L/16 output tensors identical to the seed's", "identical"
                               if res.identical.get("identical") else "differ", "identical",
                               bool(res.identical.get("identical"))))
        full, seedc = res.series.get("msn-verify"), res.series.get("seed")
        if full and seedc and full.ok() and seedc.ok():
            r = full.wall / seedc.wall
            targets.append(("ViT-L/16 `convert` with verify faster than the seed", fmt_ratio(r),
                            "< 1.00x", r < 1))
        if msn and seed and msn.ok() and seed.ok():
            wr = msn.wall / seed.wall
            targets.append(("ViT-L/16 `convert --no-verify` wall <= 0.25x seed without check "
                            "(issue 14)", fmt_ratio(wr), "<= 0.25x", wr <= 0.25))
        if res.verify and res.verify.ok() and res.forward:
            r = res.verify.wall / res.forward["forward_s"]
            targets.append(("ViT-L/16 `msn verify` <= 4x one forward pass at 224 px (issue 14)",
                            fmt_ratio(r), "<= 4.00x", r <= 4))
    floors = []
    for res in results:  # issue 14: convert with verify against the seed with its check, each
        full, seedc = res.series.get("msn-verify"), res.series.get("seed")
        if not (full and seedc and full.runs and seedc.runs):
            continue
        ok = full.ok() and seedc.ok()
        wr, rr = (full.wall / seedc.wall, full.rss / seedc.rss) if ok else (None, None)
        floor = res.series.get("floor")
        if ok and floor is not None and floor.runs and floor.ok():
            floors.append(f"| {res.variant} | {floor.wall:.2f} | {mb(floor.rss)} | {seedc.wall:.2f} | "
                          f"{mb(seedc.rss)} | {fmt_ratio(floor.wall / seedc.wall)} | "
                          f"{fmt_ratio(floor.rss / seedc.rss)} | {fmt_ratio(wr)} | {fmt_ratio(rr)} |")
        targets.append((f"{res.variant} `convert` with verify, wall <= 0.75x seed with check "
                        "(issue 14)", fmt_ratio(wr), "<= 0.75x", None if wr is None else wr <= 0.75))
        targets.append((f"{res.variant} `convert` with verify, peak RSS <= 0.60x seed's "
                        "(issue 14)", fmt_ratio(rr), "<= 0.60x", None if rr is None else rr <= 0.6))

    if floors:
        lines += ["## The floor under `convert` with verify", "",
                  "Any process that runs the converted model imports torch and transformers' "
                  f"`ViTMSNModel` before anything else: `python -c \"{FLOOR_CODE}\"`, measured "
                  "in the same alternating rounds as each variant's commands (the row 'floor' "
                  "above). The seed pays it as well; `convert` with verify cannot take less time "
                  "or memory than it.", "",
                  "| variant | floor wall s | floor peak RSS MB | seed with check wall s | seed peak "
                  "RSS MB | floor wall vs seed | floor RSS vs seed | msn with verify wall vs seed "
                  "| msn with verify RSS vs seed |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
                  *floors, ""]

    if stages:
        name, nov, withv = stages
        lines += [f"## Where the time goes ({name}, one in-process run, `bench/stages.py`)", "",
                  "Wall time of each stage and the process's CPU time over it (all threads "
                  "together). The source check runs in a thread from the start, alongside the "
                  "load, the plan and the writing (tensors stored unchanged are copied file to "
                  "file by the kernel, `os.sendfile`; the header goes in last, with the source's "
                  "sha256); the read-back compares every byte with the source and checks the "
                  "values are finite while a thread hashes the same bytes and another fsyncs "
                  "the file.", ""]
        for title, recs in (("`--no-verify`", nov), ("with verify", withv)):
            if not recs:
                continue
            lines += [f"{title}:", "", "| stage | starts at s | wall s | CPU s | thread |",
                      "|---|---:|---:|---:|---|"]
            for rec in recs:
                lines.append(f"| {rec['stage']} | {rec['start']:.2f} | {rec['wall_s']:.2f} | "
                             f"{rec['cpu_s']:.2f} | {rec['thread']} |")
            lines.append("")

    if cold:
        variant, series = cold
        seed = series["seed-nocheck"]
        lines += [f"## Cold page cache ({variant})", "",
                  "The same two commands with the source file's pages evicted before every run "
                  "(`posix_fadvise(POSIX_FADV_DONTNEED)` on that file only), so both read it from "
                  "the disk.", "",
                  "| command | wall s (median, range) | user+sys s | peak RSS MB | wall vs baseline |",
                  "|---|---:|---:|---:|---:|"]
        for s in series.values():
            ratio = s.wall / seed.wall if s.ok() and seed.ok() and s is not seed else None
            lines.append(f"| {s.label} | {s.wall:.2f} ({s.spread()}) | {s.cpu:.2f} | {mb(s.rss)} | "
                         f"{fmt_ratio(ratio)} |")
        lines.append("")

    if targets:
        lines += ["## Targets (issues 6 and 14)", "", "| target | measured | wanted | met |",
                  "|---|---:|---:|:---:|"]
        for t, got, want, ok in targets:
            lines.append(f"| {t} | {got} | {want} | {'yes' if ok else ('no' if ok is False else '?')} |")
        lines.append("")
    if download:
        lines += [download.rstrip(), ""]
    return "\n".join(lines) + "\n", targets


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description="Benchmark msn convert against the seed-equivalent conversion; writes "
                    "docs/benchmarks.md.", formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for what is measured and how.")
    ap.add_argument("--quick", action="store_true",
                    help="ViT-S/16 only (training layout also at S/16), 2 runs, small download test")
    ap.add_argument("--variants", help=f"comma-separated subset of {','.join(ALL_VARIANTS)}")
    ap.add_argument("--runs", type=int, help="runs of each command (default 3; 2 with --quick)")
    ap.add_argument("--verify-runs", type=int, default=3,
                    help="rounds that include the two slow commands, `msn convert` with verify "
                         "and the baseline with its check (default 3, at most --runs)")
    ap.add_argument("--verify-cost-runs", type=int, default=1,
                    help="runs of `msn verify` and of one forward pass per variant (default 1)")
    ap.add_argument("--no-training", action="store_true", help="skip the training-layout file")
    ap.add_argument("--no-startup", action="store_true", help="skip the start-up timings")
    ap.add_argument("--no-verify", action="store_true",
                    help="skip everything that runs verify (msn convert with verify, msn verify)")
    ap.add_argument("--no-verify-cost", action="store_true",
                    help="skip msn verify vs one forward pass")
    ap.add_argument("--no-stages", action="store_true", help="skip the stage profile")
    ap.add_argument("--no-download", action="store_true", help="skip bench/download_bench.py")
    ap.add_argument("--seed-4x", metavar="PYTHON", default=None,
                    help="also run the baseline under this python with transformers 4.x, for "
                         "reference [default: .venv-compat/bin/python if it has 4.x; 'none' to skip]")
    ap.add_argument("--cold", action="store_true",
                    help="evict the source file (only it) from the page cache before every run")
    ap.add_argument("--cold-runs", type=int, default=None,
                    help="runs of an extra cold-cache pass (msn vs baseline, no verify) on the "
                         "largest variant; 0 to skip [default 2; 0 with --quick]")
    ap.add_argument("--scratch", type=Path, default=REPO / ".bench", help="scratch folder [.bench]")
    ap.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md",
                    help="where to write the report [docs/benchmarks.md]")
    args = ap.parse_args(argv)
    if MSN is None:
        ap.error(f"no msn script beside {PY}: run `make install` first")
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        bad = [v for v in variants if v not in ALL_VARIANTS]
        if bad:
            ap.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(ALL_VARIANTS)}")
    else:
        variants = ["vits16"] if args.quick else list(ALL_VARIANTS)
    args.runs = args.runs or (2 if args.quick else 3)
    if args.runs < 1 or args.verify_runs < 1 or args.verify_cost_runs < 1:
        ap.error("--runs, --verify-runs and --verify-cost-runs must be at least 1")
    args.verify_runs = min(args.verify_runs, args.runs)
    if args.cold_runs is None:
        args.cold_runs = 0 if args.quick else 2
    args.training_variant = "vits16" if args.quick else "vitl16"
    global SEED_4X
    SEED_4X = find_seed_4x(args.seed_4x)

    t_start = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    scratch = args.scratch.resolve()
    files = scratch / "files"
    (scratch / "out").mkdir(parents=True, exist_ok=True)
    have_verify = not args.no_verify

    sources = {v: ensure_file(files, v, "released") for v in variants}
    train_src = None if args.no_training else ensure_file(files, args.training_variant, "training")
    if not args.cold:
        for p in [*sources.values(), *([train_src] if train_src else [])]:
            read_through(p)

    start = None if args.no_startup else startup(args, scratch)
    results = [run_variant(v, sources[v], args, scratch, have_verify) for v in variants]
    train = None
    if train_src is not None:
        train = training(args, scratch, train_src)
        train["file_bytes"] = train_src.stat().st_size  # type: ignore[assignment]
    cold = None
    if args.cold_runs and not args.cold:
        big = "vitl16" if "vitl16" in variants else variants[-1]
        cold = (big, cold_pass(args, scratch, big, sources[big]))
    stages = None
    if not args.no_stages:
        big = variants[-1] if "vitl16" not in variants else "vitl16"
        log(f"stage profile on {big}")
        stages = (big, stage_profile(sources[big], scratch, False),
                  stage_profile(sources[big], scratch, True) if have_verify else None)
    download = download_section(args, scratch)
    ended = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    text, targets = report(args, started, ended, (load0, os.getloadavg()[0]), results, start, train, cold,
                           stages, download, have_verify, time.perf_counter() - t_start)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    log(f"wrote {args.output} ({(time.perf_counter() - t_start) / 60:.1f} min)")
    for t, got, want, ok in targets:
        log(f"target: {t}: {got} (wanted {want}) -> {'met' if ok else 'NOT met'}")
    failed = [s for r in results for s in r.series.values() if not s.ok()]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
