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
   measured by ``bench/measure.py`` (wall time, the child's user+sys time, and the peak
   anonymous memory of its process tree): ``msn convert FILE OUT --no-verify``; the
   seed-equivalent path (``bench/baseline.py``) with and without the seed's forward-pass check;
   ``msn convert FILE OUT`` with its verify; and the floor, the import of torch and
   transformers' ``ViTMSNModel`` alone;
4. checks that msn's and the baseline's ``model.safetensors`` hold the same keys and
   identical tensors (``torch.equal``, ``bench/compare.py``);
5. the training-layout file: ``msn convert --no-verify`` and ``msn inspect``;
6. start-up: ``msn --help`` and ``msn inspect --help`` against ``python -c "import torch"``;
7. per variant: ``msn verify`` on the converted folder against one forward pass of the
   converted model on verify's own inputs (``bench/forward.py``); and where the time of one
   convert goes, stage by stage (``bench/stages.py``);
8. runs ``bench/download_bench.py`` and includes the section it prints (and likewise
   ``bench/fewshot_bench.py``: msn fewshot's feature pass against a plain transformers loop);
9. writes its part of ``docs/benchmarks.md``, between two markers, the rest of the page kept
   (``bench/report.py``: medians, ratios to the baseline, the targets with pass/fail, the
   machine's core count and the versions).

``--against REV`` measures something else: two revisions of msn in alternating runs
(``bench/against.py``).

Examples::

    .venv/bin/python bench/run.py                      # everything, 3 runs each (~20-25 min, 2 cores)
    .venv/bin/python bench/run.py --quick              # ViT-S/16 only, 2 runs (~2 min)
    .venv/bin/python bench/run.py --variants vitl16 --runs 5 --no-training --output /tmp/b.md
    .venv/bin/python bench/run.py --against 49aca62 --variants vits16 --runs 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import report
from measure import REPO, Run, Series, evict, folder_bytes, log, measure, read_through
from report import (
    FLOOR_CODE,
    TORCH_ONLY,
    Comparison,
    Context,
    ForwardTiming,
    Measured,
    Options,
    StageRecord,
    Stages,
    Training,
    VariantResult,
)

BENCH = REPO / "bench"
PY = sys.executable
BIN = Path(PY).parent
MSN = str(BIN / "msn")
ALL_VARIANTS = ("vits16", "vitb16", "vitl16", "vitb4", "vitl7")
TINY = "tiny"  # the tests' model: --against only (the baseline picks its config by released name)

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
# The commands
# --------------------------------------------------------------------------------------------

MODES = ("msn", "seed-nocheck", "seed", "msn-verify", "seed-4x", "floor")
LABELS = {
    "msn": "`msn convert --no-verify`",
    "seed-nocheck": "seed-equivalent, without its forward check",
    "seed": "seed-equivalent (with its forward check)",
    "msn-verify": "`msn convert` (with verify)",
    "seed-4x": "seed-equivalent without its check, under transformers 4.x (for reference)",
    "floor": f"floor: `python -c \"{FLOOR_CODE}\"` alone (converts nothing)",
}
SLOW = ("seed", "msn-verify")  # they run forward passes: fewer rounds (--verify-runs)
KEPT = ("msn", "seed-nocheck", "seed-4x")  # their first output is compared after the rounds


def mode_cmd(opts: Options, mode: str, src: Path, out: Path) -> list[str]:
    if mode == "floor":
        return [PY, "-c", FLOOR_CODE]
    if mode == "msn":
        return [MSN, "convert", str(src), str(out), "--no-verify", "-q"]
    if mode == "msn-verify":
        return [MSN, "convert", str(src), str(out), "-q"]
    python = opts.seed_4x if mode == "seed-4x" and opts.seed_4x else PY
    cmd = [python, str(BENCH / "baseline.py"), str(src), str(out)]
    return cmd + (["--no-check"] if mode in ("seed-nocheck", "seed-4x") else [])


def find_seed_4x(choice: str | None) -> tuple[str, str] | None:
    """A python with transformers 4.x for the reference row, and its version."""
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
    return candidate, version


# --------------------------------------------------------------------------------------------
# Per variant
# --------------------------------------------------------------------------------------------

def variant_rounds(opts: Options, variant: str, src: Path, scratch: Path,
                   modes: list[str]) -> tuple[dict[str, Series], dict[str, Path]]:
    """Every mode, ``opts.runs`` rounds, the order rotated each round; the first output of the
    modes in :data:`KEPT` is kept for the comparison."""
    series = {m: Series(opts.labels.get(m, LABELS[m])) for m in modes}
    outs = scratch / "out"
    kept: dict[str, Path] = {}
    for r in range(opts.runs):
        order = modes[r % len(modes):] + modes[:r % len(modes)]  # rotate: no mode always first
        for mode in order:
            if mode in SLOW and r >= opts.verify_runs:
                continue
            out = outs / f"{variant}-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            if opts.cold:
                evict(src)
            log(f"{variant} run {r + 1}/{opts.runs}: {mode}")
            run = measure(mode_cmd(opts, mode, src, out), scratch)
            series[mode].runs.append(run)
            if run.rc != 0:
                log(f"  FAILED (exit {run.rc}): {run.stderr.strip()[-600:]}")
            elif series[mode].out_bytes is None and mode != "floor":
                series[mode].out_bytes = folder_bytes(out)
            if r == 0 and run.rc == 0 and mode in KEPT:
                kept[mode] = out.with_name(out.name + "-first")
                shutil.rmtree(kept[mode], ignore_errors=True)
                out.rename(kept[mode])
            else:
                shutil.rmtree(out, ignore_errors=True)
    return series, kept


def compare(a: Path, b: Path) -> Comparison:
    cmp = subprocess.run([PY, str(BENCH / "compare.py"), str(a), str(b)],
                         capture_output=True, text=True, cwd=REPO)
    try:
        found: Comparison = json.loads(cmp.stdout)
    except json.JSONDecodeError:
        found = {"identical": False, "error": cmp.stderr.strip()[-300:]}
    return found


def verify_seconds(report_json: str) -> dict[str, float] | None:
    """Where one ``msn verify`` spent its time, from its ``--json`` report: the imports, the
    source, each check in order, the total."""
    try:
        rep = json.loads(report_json)
        seconds = rep["seconds"]
        found = {"imports": float(seconds["imports"]), "source": float(seconds["source"])}
        found.update({c["name"]: float(c["seconds"]) for c in rep["checks"]})
        found["total"] = float(seconds["total"])
    except (ValueError, KeyError, TypeError):
        return None
    return found


def verify_cost(opts: Options, res: VariantResult, folder: Path, scratch: Path) -> None:
    """``msn verify`` on msn's output against one forward pass (``bench/forward.py``)."""
    res.verify = Series("`msn verify`")
    res.forward_proc = Series("forward pass process")
    for r in range(opts.verify_cost_runs):
        log(f"{res.variant}: msn verify / one forward pass, run {r + 1}")
        run = measure([MSN, "verify", str(folder), "--json", "--no-record"], scratch)
        res.verify.runs.append(run)
        if run.rc == 0 and run.wall <= min(v.wall for v in res.verify.runs):
            res.verify_seconds = verify_seconds(run.stdout)
        fw = measure([PY, str(BENCH / "forward.py"), str(folder)], scratch)
        res.forward_proc.runs.append(fw)
        if fw.rc == 0:
            got: ForwardTiming = json.loads(fw.stdout.strip().splitlines()[-1])
            if res.forward is None or got["forward_s"] < res.forward["forward_s"]:
                res.forward = got


def run_variant(opts: Options, variant: str, src: Path, scratch: Path,
                have_verify: bool) -> VariantResult:
    modes = [m for m in MODES if (have_verify or m != "msn-verify") and (opts.seed_4x or m != "seed-4x")]
    series, kept = variant_rounds(opts, variant, src, scratch, modes)
    res = VariantResult(variant, src, src.stat().st_size, series)
    if "msn" in kept and "seed-nocheck" in kept:
        res.identical = compare(kept["msn"], kept["seed-nocheck"])
        log(f"{variant}: msn vs the baseline, tensors identical: {res.identical.get('identical')}")
    if "msn" in kept and "seed-4x" in kept:
        res.identical_4x = compare(kept["msn"], kept["seed-4x"])
    if have_verify and "msn" in kept and opts.verify_cost:
        verify_cost(opts, res, kept["msn"], scratch)
    for path in kept.values():
        shutil.rmtree(path, ignore_errors=True)
    return res


# --------------------------------------------------------------------------------------------
# The other sections
# --------------------------------------------------------------------------------------------

def startup(opts: Options, scratch: Path) -> dict[str, Series]:
    cmds = {
        TORCH_ONLY: [PY, "-c", "import torch"],
        "msn --help": [MSN, "--help"],
        "msn inspect --help": [MSN, "inspect", "--help"],
    }
    res = {k: Series(k) for k in cmds}
    for _ in range(max(3, opts.runs + 2)):
        for k, cmd in cmds.items():
            res[k].runs.append(measure(cmd, scratch))
    log("start-up: " + ", ".join(f"{k} {s.wall:.2f} s" for k, s in res.items()))
    return res


def cold_pass(opts: Options, scratch: Path, variant: str, src: Path) -> dict[str, Series]:
    """msn and the baseline with the source file evicted from the page cache before each run."""
    res = {m: Series(LABELS[m]) for m in ("msn", "seed-nocheck")}
    for r in range(opts.cold_runs):
        for mode in (("msn", "seed-nocheck") if r % 2 == 0 else ("seed-nocheck", "msn")):
            out = scratch / "out" / f"cold-{mode}"
            shutil.rmtree(out, ignore_errors=True)
            evict(src)
            log(f"{variant} cold run {r + 1}/{opts.cold_runs}: {mode}")
            res[mode].runs.append(measure(mode_cmd(opts, mode, src, out), scratch))
            if res[mode].out_bytes is None and res[mode].runs[-1].rc == 0:
                res[mode].out_bytes = folder_bytes(out)
            shutil.rmtree(out, ignore_errors=True)
    read_through(src)  # warm again for whatever follows
    return res


def training_layout(opts: Options, scratch: Path, src: Path) -> Training:
    res = Training(Series("`msn convert --no-verify` (training layout)"),
                   Series("`msn inspect` (training layout)"), src.stat().st_size)
    out = scratch / "out" / "training"
    for r in range(opts.runs):
        shutil.rmtree(out, ignore_errors=True)
        if opts.cold:
            evict(src)
        log(f"training layout run {r + 1}/{opts.runs}: convert --no-verify")
        run = measure([MSN, "convert", str(src), str(out), "--no-verify", "-q"], scratch)
        res.convert.runs.append(run)
        if run.rc == 0 and res.convert.out_bytes is None:
            res.convert.out_bytes = folder_bytes(out)
        elif run.rc != 0:
            log(f"  FAILED: {run.stderr.strip()[-400:]}")
        shutil.rmtree(out, ignore_errors=True)
        if opts.cold:
            evict(src)
        log(f"training layout run {r + 1}/{opts.runs}: inspect")
        res.inspect.runs.append(measure([MSN, "inspect", str(src)], scratch))
    return res


def stage_profile(src: Path, scratch: Path, verify: bool) -> list[StageRecord] | None:
    out = scratch / "out" / "stages"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [PY, str(BENCH / "stages.py"), str(src), str(out)] + ([] if verify else ["--no-verify"])
    run = measure(cmd, scratch)
    shutil.rmtree(out, ignore_errors=True)
    if run.rc != 0:
        log(f"stage profile failed: {run.stderr.strip()[-400:]}")
        return None
    found: list[StageRecord] = json.loads(run.stdout.strip().splitlines()[-1])
    return found


def script_section(script: str, title: str, args: list[str], scratch: Path) -> str:
    """The markdown section a bench script prints (``bench/download_bench.py``,
    ``bench/fewshot_bench.py``), or the failure in its place."""
    cmd = [PY, str(BENCH / script), *args]
    log(f"{title}: " + " ".join(cmd[1:]))
    run: Run = measure(cmd, scratch, timeout=1800)
    if run.rc != 0:
        return f"## {title}\n\n`bench/{script}` failed (exit {run.rc}):\n\n```\n" \
               f"{run.stderr.strip()[-1500:]}\n```\n"
    return run.stdout.strip() + "\n"


# --------------------------------------------------------------------------------------------
# The command line
# --------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description="Benchmark msn convert against the seed-equivalent conversion; writes "
                    "docs/benchmarks.md. With --against, compare two revisions of msn instead.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="See the module docstring for what is measured and how.")
    ap.add_argument("--quick", action="store_true",
                    help="ViT-S/16 only (training layout also at S/16), 2 runs, small download test")
    ap.add_argument("--variants", help=f"comma-separated subset of {','.join(ALL_VARIANTS)} "
                                       f"(and {TINY} with --against)")
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
    ap.add_argument("--no-fewshot", action="store_true",
                    help="skip bench/fewshot_bench.py (msn fewshot's feature pass vs transformers)")
    ap.add_argument("--seed-4x", metavar="PYTHON", default=None,
                    help="also run the baseline under this python with transformers 4.x, for "
                         "reference [default: .venv-compat/bin/python if it has 4.x; 'none' to skip]")
    ap.add_argument("--cold", action="store_true",
                    help="evict the source file (only it) from the page cache before every run")
    ap.add_argument("--cold-runs", type=int, default=None,
                    help="runs of an extra cold-cache pass (msn vs baseline, no verify) on the "
                         "largest variant; 0 to skip [default 2; 0 with --quick]")
    ap.add_argument("--against", metavar="REV",
                    help="compare this git revision of msn (before) with --after, in alternating "
                         "runs: convert --no-verify, convert, verify (bench/against.py)")
    ap.add_argument("--after", metavar="REV",
                    help="with --against: the revision measured as 'after' [default: this "
                         "working tree, uncommitted edits included]")
    ap.add_argument("--scratch", type=Path, default=REPO / ".bench", help="scratch folder [.bench]")
    ap.add_argument("--output", type=Path, default=None,
                    help="where to write the report [docs/benchmarks.md; with --against "
                         "SCRATCH/against.md]")
    return ap


def options(ap: argparse.ArgumentParser, args: argparse.Namespace) -> Options:
    if not Path(MSN).exists():
        ap.error(f"no msn script beside {PY}: run `make install` first")
    if args.variants:
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        known = (*ALL_VARIANTS, TINY) if args.against else ALL_VARIANTS
        bad = [v for v in variants if v not in known]
        if bad:
            ap.error(f"unknown variant(s) {', '.join(bad)}; choose from {', '.join(known)}")
    else:
        variants = ["vits16"] if args.quick else list(ALL_VARIANTS)
    runs = args.runs or (2 if args.quick else 3)
    if runs < 1 or args.verify_runs < 1 or args.verify_cost_runs < 1:
        ap.error("--runs, --verify-runs and --verify-cost-runs must be at least 1")
    if args.after and not args.against:
        ap.error("--after goes with --against")
    cold_runs = args.cold_runs if args.cold_runs is not None else (0 if args.quick else 2)
    opts = Options(variants, runs, min(args.verify_runs, runs), args.verify_cost_runs, args.cold,
                   cold_runs, args.quick, "vits16" if args.quick else "vitl16",
                   not args.no_verify_cost)
    if not args.against:
        found = find_seed_4x(args.seed_4x)
        if found:
            opts.seed_4x = found[0]
            opts.labels["seed-4x"] = (f"seed-equivalent without its check, under transformers "
                                      f"{found[1]} (for reference)")
    return opts


def measure_all(opts: Options, args: argparse.Namespace, scratch: Path) -> Measured:
    files = scratch / "files"
    have_verify = not args.no_verify
    sources = {v: ensure_file(files, v, "released") for v in opts.variants}
    train_src = None if args.no_training else ensure_file(files, opts.training_variant, "training")
    if not opts.cold:
        for p in [*sources.values(), *([train_src] if train_src else [])]:
            read_through(p)
    m = Measured([])
    m.startup = None if args.no_startup else startup(opts, scratch)
    m.results = [run_variant(opts, v, sources[v], scratch, have_verify) for v in opts.variants]
    if train_src is not None:
        m.training = training_layout(opts, scratch, train_src)
    big = "vitl16" if "vitl16" in opts.variants else opts.variants[-1]
    if opts.cold_runs and not opts.cold:
        m.cold = (big, cold_pass(opts, scratch, big, sources[big]))
    if not args.no_stages:
        log(f"stage profile on {big}")
        m.stages = Stages(big, stage_profile(sources[big], scratch, False),
                          stage_profile(sources[big], scratch, True) if have_verify else None)
    if not args.no_download:
        m.download = script_section("download_bench.py", "Download", ["--size-mb", "64", "--runs", "1"]
                                    if opts.quick else ["--runs", str(opts.runs)], scratch)
    if not args.no_fewshot:
        m.fewshot = script_section("fewshot_bench.py", "Few-shot feature pass",
                                   ["--images", "64", "--runs", "2"] if opts.quick
                                   else ["--runs", str(opts.runs)], scratch)
    return m


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    opts = options(ap, args)
    scratch = args.scratch.resolve()
    (scratch / "out").mkdir(parents=True, exist_ok=True)
    if args.against:
        import against

        files = [ensure_file(scratch / "files", v, "released") for v in opts.variants]
        return against.main(opts, files, args.against, args.after, scratch,
                            args.output or scratch / "against.md")

    t_start = time.perf_counter()
    started = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    load0 = os.getloadavg()[0]
    m = measure_all(opts, args, scratch)
    ctx = Context(started, dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M"),
                  (load0, os.getloadavg()[0]), time.perf_counter() - t_start, not args.no_verify)
    text, targets = report.render(opts, ctx, m)
    output: Path = args.output or REPO / "docs" / "benchmarks.md"
    report.write_into(output, text)
    log(f"wrote {output} ({(time.perf_counter() - t_start) / 60:.1f} min)")
    for t in targets:
        log(f"target: {t.name}: {t.measured} (wanted {t.wanted}) -> {'met' if t.met else 'NOT met'}")
    failed = [s for r in m.results for s in r.series.values() if not s.ok()]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
