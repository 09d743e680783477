"""The markdown that ``bench/run.py`` writes: what was measured, in tables, and the targets.

Every memory figure is the peak anonymous memory of the process tree (``measure.py``).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, TypedDict

from measure import REPO, Series, fmt_ratio, mb

FLOOR_CODE = "import torch; from transformers import ViTMSNModel"
TORCH_ONLY = 'python -c "import torch"'
BASELINE_OF = {"msn": "seed-nocheck", "msn-verify": "seed"}
BEGIN = "<!-- make bench writes from here to the end marker; the rest of the page is kept -->"
END = "<!-- end of make bench's part -->"
MEMORY_NOTE = (
    "- Peak anon: the peak of RssAnon + RssShmem (`/proc/PID/status`) summed over the process and "
    "its descendants, sampled every 10 ms by the parent (`bench/measure.py`). Clean pages of a "
    "memory-mapped checkpoint or of the page cache are not counted: the kernel reclaims them "
    "whenever it needs the room, so giving them back early would only lower RSS.")


class Comparison(TypedDict, total=False):
    """``bench/compare.py``'s answer for two folders."""
    tensors: int
    only_in_a: list[str]
    only_in_b: list[str]
    differing: list[str]
    identical: bool
    error: str


class ForwardTiming(TypedDict):
    """``bench/forward.py``'s answer: seconds of each part of one forward-pass process."""
    import_s: float
    load_s: float
    forward_s: float
    inputs: int
    size: int


class StageRecord(TypedDict):
    """One stage of ``bench/stages.py``'s in-process profile."""
    stage: str
    start: float
    wall_s: float
    cpu_s: float
    thread: str


class Target(NamedTuple):
    name: str
    measured: str
    wanted: str
    met: bool | None


@dataclass
class Options:
    """What the benchmark was asked to do (from the command line)."""
    variants: list[str]
    runs: int
    verify_runs: int
    verify_cost_runs: int
    cold: bool
    cold_runs: int
    quick: bool
    training_variant: str
    verify_cost: bool
    seed_4x: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class VariantResult:
    variant: str
    file: Path
    file_bytes: int
    series: dict[str, Series]
    identical: Comparison | None = None
    identical_4x: Comparison | None = None
    verify: Series | None = None
    verify_seconds: dict[str, float] | None = None  # from the fastest run's --json
    forward: ForwardTiming | None = None
    forward_proc: Series | None = None


@dataclass
class Training:
    convert: Series
    inspect: Series
    file_bytes: int


@dataclass
class Stages:
    variant: str
    no_verify: list[StageRecord] | None
    with_verify: list[StageRecord] | None


@dataclass
class Measured:
    """Everything one ``bench/run.py`` measured, for the report."""
    results: list[VariantResult]
    startup: dict[str, Series] | None = None
    training: Training | None = None
    cold: tuple[str, dict[str, Series]] | None = None
    stages: Stages | None = None
    download: str | None = None
    fewshot: str | None = None


@dataclass
class Context:
    """When and how: the report's header."""
    started: str
    ended: str
    load: tuple[float, float]
    elapsed: float
    have_verify: bool


# --------------------------------------------------------------------------------------------
# The machine and the versions
# --------------------------------------------------------------------------------------------

def versions(python: str = sys.executable, env: dict[str, str] | None = None,
             cwd: Path = REPO) -> dict[str, str]:
    code = ("import json, torch, transformers, safetensors, msn_cli, sys, platform;"
            "print(json.dumps({'python': platform.python_version(), 'torch': torch.__version__,"
            "'transformers': transformers.__version__, 'safetensors': safetensors.__version__,"
            "'msn': msn_cli.__version__}))")
    out = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=cwd,
                         env={**os.environ, **(env or {})}, check=True)
    found: dict[str, str] = json.loads(out.stdout)
    return found


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


def environment_lines(started: str, ended: str, elapsed: float, load: tuple[float, float]) -> list[str]:
    v, m = versions(), machine()
    return [
        f"- Date: {started} to {ended} (UTC), {elapsed / 60:.1f} min",
        f"- Machine: {m['cores']} cores ({m['cpu']}), {m['memory']} RAM, {m['os']}",
        f"- Versions: Python {v['python']}, torch {v['torch']}, transformers {v['transformers']}, "
        f"safetensors {v['safetensors']}, msn {v['msn']}",
        f"- Load average (1 min) before the first run: {load[0]:.2f}, at the end: {load[1]:.2f} "
        "(the end figure includes the benchmark's own processes)"
        + (" -- other work was running at the start; absolute times are inflated, the "
           "side-by-side ratios less so" if load[0] > 0.8 else ""),
    ]


# --------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------

def header(opts: Options, ctx: Context) -> list[str]:
    return [
        "Written by `make bench` (`bench/run.py`) between the two markers around it; do not edit "
        f"it by hand. Command: `{' '.join(['bench/run.py', *sys.argv[1:]])}`.", "",
        *environment_lines(ctx.started, ctx.ended, ctx.elapsed, ctx.load),
        f"- Runs: {opts.runs} of each ({opts.verify_runs} of the two commands that run forward "
        "passes), alternating, order rotated every round; medians shown (min-max of wall in "
        "brackets).",
        "- Page cache: " + ("**cold** for the source file: before every run its pages were "
                            "evicted with `posix_fadvise(POSIX_FADV_DONTNEED)` (that file only)."
                            if opts.cold else
                            "**warm**: every source file was read once before the runs and fits "
                            "in RAM, so reads come from the page cache, for msn and the baseline "
                            "alike. Outputs are written to the page cache; msn also `fsync`s its "
                            "folder (it waits for the disk), the baseline does not."),
        MEMORY_NOTE,
        "- Before every measured run (untimed) `sync` writes out what earlier runs left dirty "
        "(the baseline's unsynced output), so no run pays for another's write-back.",
        "",
    ]


def conversion(results: list[VariantResult]) -> list[str]:
    lines = ["## Conversion", "",
             "| variant | file MB | command | wall s (median, range) | user+sys s | peak anon MB "
             "| output MB | wall vs baseline | anon vs baseline |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        for mode, s in res.series.items():
            if not s.runs:
                continue
            base = res.series.get(BASELINE_OF.get(mode, ""))
            both = base is not None and base.ok() and s.ok()
            wr = s.wall / base.wall if both and base else None
            ar = s.anon / base.anon if both and base and base.anon else None
            status = "" if s.ok() else " **(failed)**"
            vs = f" (vs {BASELINE_OF[mode].replace('-', ' ')})" if mode in BASELINE_OF else ""
            lines.append(
                f"| {res.variant} | {mb(res.file_bytes)} | {s.label}{status} | {s.wall:.2f} "
                f"({s.spread()}) | {s.cpu:.2f} | {mb(s.anon)} | {mb(s.out_bytes)} | "
                f"{fmt_ratio(wr)}{vs if wr else ''} | {fmt_ratio(ar)} |")
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
    return [*lines, ""]


def training(opts: Options, train: Training, results: list[VariantResult]) -> list[str]:
    tc, ti = train.convert, train.inspect
    rel = next((r for r in results if r.variant == opts.training_variant), None)
    rel_anon = rel.series["msn"].anon if rel and rel.series["msn"].ok() else None
    ratio = tc.anon / rel_anon if rel_anon and tc.ok() else None
    return [
        "## Training-layout checkpoint", "",
        f"{opts.training_variant} saved as the MSN training code saves it (`encoder`, "
        "`target_encoder`, `prototypes`, AdamW `opt` state): "
        f"{mb(train.file_bytes)} MB.", "",
        "| command | wall s (median, range) | user+sys s | peak anon MB | vs released layout |",
        "|---|---:|---:|---:|---:|",
        f"| {tc.label} | {tc.wall:.2f} ({tc.spread()}) | {tc.cpu:.2f} | {mb(tc.anon)} | "
        f"{fmt_ratio(ratio)} peak anon |",
        f"| {ti.label} | {ti.wall:.2f} ({ti.spread()}) | {ti.cpu:.2f} | {mb(ti.anon)} | |",
        "", "Only the chosen encoder's tensors are read; the source check (CRC-32 of every zip "
        "member and the sha256 recorded in the manifest) reads the whole file, which costs time in "
        "proportion to the file but no memory.", ""]


def startup(start: dict[str, Series]) -> list[str]:
    torch_s = start[TORCH_ONLY]
    lines = ["## Start-up", "", "| command | wall s (median, range) | user+sys s | peak anon MB "
             "| vs `import torch` |", "|---|---:|---:|---:|---:|"]
    for k, s in start.items():
        lines.append(f"| `{k}` | {s.wall:.3f} ({s.spread()}) | {s.cpu:.3f} | {mb(s.anon)} | "
                     f"{fmt_ratio(s.wall / torch_s.wall)} |")
    return [*lines, ""]


def verify(results: list[VariantResult]) -> list[str]:
    lines = ["## Verify", "",
             "`msn verify FOLDER --json --no-record` on msn's output (a fresh process: the import, both "
             "models, the sha256 of the source and of every file, every check) against one "
             "forward pass of the converted model on one image at the native size "
             "(`bench/forward.py`: the forward pass alone, and its whole process: import + "
             "`from_pretrained` + forward), and against the floor (the import alone, measured in "
             "the variant's rounds). How verify keeps its cost down: docs/design.md.", "",
             "| variant | `msn verify` wall s | user+sys s | peak anon MB | one forward pass s "
             "| forward process wall s | verify / forward pass | verify / forward process "
             "| forward passes beyond the floor |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for res in results:
        if not res.verify or not res.verify.runs:
            continue
        fw = res.forward["forward_s"] if res.forward else None
        fp = res.forward_proc.wall if res.forward_proc and res.forward_proc.ok() else None
        floor = res.series.get("floor")
        beyond = ((res.verify.wall - floor.wall) / fw
                  if fw and floor is not None and floor.ok() else None)
        st = "" if res.verify.ok() else " (failed)"
        lines.append(f"| {res.variant} | {res.verify.wall:.2f}{st} | {res.verify.cpu:.2f} | "
                     f"{mb(res.verify.anon)} | {'' if fw is None else f'{fw:.2f}'} | "
                     f"{'' if fp is None else f'{fp:.2f}'} | "
                     f"{fmt_ratio(res.verify.wall / fw if fw else None)} | "
                     f"{fmt_ratio(res.verify.wall / fp if fp else None)} | "
                     f"{'' if beyond is None else f'{beyond:.1f}'} |")
    return [*lines, "", *verify_breakdown(results)]


def verify_breakdown(results: list[VariantResult]) -> list[str]:
    """Seconds of each part of ``msn verify``, as its ``--json`` report gives them."""
    parts: list[str] = []
    for res in results:
        for name in res.verify_seconds or {}:
            if name not in parts:
                parts.append(name)
    if not parts:
        return []
    lines = ["Where `msn verify`'s time goes (seconds, from its `--json` report, fastest run): the "
             "imports (torch, transformers), the source file, then each check in order.", "",
             "| variant | " + " | ".join(parts) + " |", "|---|" + "---:|" * len(parts)]
    for res in results:
        if res.verify_seconds:
            got = res.verify_seconds
            lines.append(f"| {res.variant} | "
                         + " | ".join(f"{got[p]:.2f}" if p in got else "" for p in parts) + " |")
    return [*lines, ""]


def floor(results: list[VariantResult]) -> list[str]:
    rows = []
    for res in results:
        full, seedc, fl = res.series.get("msn-verify"), res.series.get("seed"), res.series.get("floor")
        if not (full and seedc and fl and full.ok() and seedc.ok() and fl.ok()):
            continue
        seed_work = seedc.wall - fl.wall
        work = f"{(full.wall - fl.wall) / seed_work:.2f}x" if seed_work > 0 else ""
        rows.append(f"| {res.variant} | {fl.wall:.2f} | {mb(fl.anon)} | {seedc.wall:.2f} | "
                    f"{mb(seedc.anon)} | {full.wall:.2f} | {mb(full.anon)} | "
                    f"{fmt_ratio(full.wall / seedc.wall)} | {work} |")
    if not rows:
        return []
    return ["## The floor under `convert` with verify", "",
            "Any process that runs the converted model imports torch and transformers' "
            f"`ViTMSNModel` before anything else: `python -c \"{FLOOR_CODE}\"`, measured "
            "in the same alternating rounds as each variant's commands (the row 'floor' "
            "above). The seed pays it as well; `convert` with verify cannot take less time "
            "or memory than it. 'Work beyond the floor' is (msn - floor) / (seed - floor), "
            "wall time.", "",
            "| variant | floor wall s | floor anon MB | seed with check wall s | seed anon MB "
            "| msn with verify wall s | msn with verify anon MB | msn vs seed wall "
            "| work beyond the floor, msn / seed |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|", *rows, ""]


def stages(st: Stages) -> list[str]:
    lines = [f"## Where the time goes ({st.variant}, one in-process run, `bench/stages.py`)", "",
             "Wall time of each stage and the process's CPU time over it (all threads "
             "together); stages that run in a thread overlap the ones of the main thread.", ""]
    for title, recs in (("`--no-verify`", st.no_verify), ("with verify", st.with_verify)):
        if not recs:
            continue
        lines += [f"{title}:", "", "| stage | starts at s | wall s | CPU s | thread |",
                  "|---|---:|---:|---:|---|"]
        for rec in recs:
            lines.append(f"| {rec['stage']} | {rec['start']:.2f} | {rec['wall_s']:.2f} | "
                         f"{rec['cpu_s']:.2f} | {rec['thread']} |")
        lines.append("")
    return lines


def cold(variant: str, series: dict[str, Series]) -> list[str]:
    seed = series["seed-nocheck"]
    lines = [f"## Cold page cache ({variant})", "",
             "The same two commands with the source file's pages evicted before every run "
             "(`posix_fadvise(POSIX_FADV_DONTNEED)` on that file only), so both read it from "
             "the disk.", "",
             "| command | wall s (median, range) | user+sys s | peak anon MB | wall vs baseline |",
             "|---|---:|---:|---:|---:|"]
    for s in series.values():
        ratio = s.wall / seed.wall if s.ok() and seed.ok() and s is not seed else None
        lines.append(f"| {s.label} | {s.wall:.2f} ({s.spread()}) | {s.cpu:.2f} | {mb(s.anon)} | "
                     f"{fmt_ratio(ratio)} |")
    return [*lines, ""]


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------

def ratio_target(name: str, num: Series | None, den: Series | None, limit: float,
                 anon: bool = False) -> Target | None:
    if not (num and den and num.runs and den.runs):
        return None
    r = None
    if num.ok() and den.ok():
        r = num.anon / den.anon if anon else num.wall / den.wall
    return Target(name, fmt_ratio(r), f"<= {limit:.2f}x", None if r is None else r <= limit)


def vitl16_targets(res: VariantResult) -> list[Target | None]:
    s = res.series
    found: list[Target | None] = [
        ratio_target("ViT-L/16 `convert --no-verify` wall <= 0.3x seed", s.get("msn"),
                     s.get("seed-nocheck"), 0.3),
        ratio_target("ViT-L/16 `convert --no-verify` peak anon <= 0.6x seed", s.get("msn"),
                     s.get("seed-nocheck"), 0.6, anon=True),
        ratio_target("ViT-L/16 `convert --no-verify` wall <= 0.25x seed without check (issue 14)",
                     s.get("msn"), s.get("seed-nocheck"), 0.25),
        ratio_target("ViT-L/16 `convert` with verify no slower than the seed", s.get("msn-verify"),
                     s.get("seed"), 1.0),
    ]
    if res.identical is not None:
        same = bool(res.identical.get("identical"))
        found.append(Target("ViT-L/16 output tensors identical to the seed's",
                            "identical" if same else "differ", "identical", same))
    floor_s = s.get("floor")
    if res.verify and res.verify.ok() and res.forward and floor_s and floor_s.ok():
        fw = res.forward["forward_s"]
        budget = floor_s.wall + 3 * fw
        found.append(Target("ViT-L/16 `msn verify` <= the import + 3 forward passes at 224 px "
                            "(issue 23)", f"{res.verify.wall:.2f} s",
                            f"<= {budget:.2f} s ({floor_s.wall:.2f} + 3 x {fw:.2f})",
                            res.verify.wall <= budget))
    return found


def work_target(res: VariantResult) -> Target | None:
    """convert with verify's wall time beyond the floor against the seed's beyond the same floor."""
    full, seedc, fl = res.series.get("msn-verify"), res.series.get("seed"), res.series.get("floor")
    if not (full and seedc and fl and full.ok() and seedc.ok() and fl.ok()):
        return None
    seed_work = seedc.wall - fl.wall
    r = (full.wall - fl.wall) / seed_work if seed_work > 0 else None
    return Target(f"{res.variant} `convert` with verify: work beyond the import <= 0.5x the seed's "
                  "(issue 23)", fmt_ratio(r), "<= 0.50x", None if r is None else r <= 0.5)


def targets(opts: Options, m: Measured) -> list[Target]:
    found: list[Target | None] = []
    for res in m.results:
        if res.variant == "vitl16":
            found += vitl16_targets(res)
        if res.variant == "vits16":
            found.append(work_target(res))
        found.append(ratio_target(f"{res.variant} `convert` with verify, wall <= 0.75x seed with "
                                  "check (issue 14)", res.series.get("msn-verify"),
                                  res.series.get("seed"), 0.75))
        found.append(ratio_target(f"{res.variant} `convert` with verify, peak anon <= 0.60x "
                                  "seed's", res.series.get("msn-verify"), res.series.get("seed"),
                                  0.6, anon=True))
    if m.training and opts.training_variant == "vitl16":
        rel = next((r for r in m.results if r.variant == "vitl16"), None)
        found.append(ratio_target("training-layout ViT-L/16 peak anon <= 1.1x released layout",
                                  m.training.convert, rel.series.get("msn") if rel else None,
                                  1.1, anon=True))
        ti = m.training.inspect
        found.append(Target("`msn inspect` on the training file < 3 s", f"{ti.wall:.2f} s",
                            "< 3 s", ti.ok() and ti.wall < 3))
    if m.startup:
        for k, s in m.startup.items():
            if k != TORCH_ONLY:
                found.append(ratio_target(f"`{k}` <= 0.25x `{TORCH_ONLY}`", s,
                                          m.startup[TORCH_ONLY], 0.25))
    return [t for t in found if t is not None]


def targets_table(found: list[Target]) -> list[str]:
    if not found:
        return []
    lines = ["## Targets (issues 6, 14 and 23)", "", "| target | measured | wanted | met |",
             "|---|---:|---:|:---:|"]
    for t in found:
        met = "yes" if t.met else ("no" if t.met is False else "?")
        lines.append(f"| {t.name} | {t.measured} | {t.wanted} | {met} |")
    return [*lines, ""]


def write_into(path: Path, text: str) -> None:
    """``text`` between :data:`BEGIN` and :data:`END` in ``path``, the rest of the page kept
    (hand-written sections above or below); a page without the markers is written whole."""
    old = path.read_text() if path.exists() else ""
    if BEGIN in old and END in old.split(BEGIN, 1)[1]:
        head, rest = old.split(BEGIN, 1)
        new = head + BEGIN + "\n" + text + END + rest.split(END, 1)[1]
    else:
        new = f"# Benchmarks\n\n{BEGIN}\n{text}{END}\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def render(opts: Options, ctx: Context, m: Measured) -> tuple[str, list[Target]]:
    lines = header(opts, ctx) + conversion(m.results)
    if m.training:
        lines += training(opts, m.training, m.results)
    if m.startup:
        lines += startup(m.startup)
    if ctx.have_verify and any(r.verify for r in m.results):
        lines += verify(m.results)
    lines += floor(m.results)
    if m.stages:
        lines += stages(m.stages)
    if m.cold:
        lines += cold(*m.cold)
    found = targets(opts, m)
    lines += targets_table(found)
    if m.download:
        lines += [m.download.rstrip(), ""]
    if m.fewshot:
        lines += [m.fewshot.rstrip(), ""]
    return "\n".join(lines) + "\n", found
