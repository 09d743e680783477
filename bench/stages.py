"""Where ``msn convert``'s time goes: one in-process run with its stages timed (bench/run.py).

Wraps the functions ``msn_cli.conversion.convert`` calls (load, plan, the source check, the
writer, fsync, the read-back check, verify) with timers -- wall time and the process's CPU
time over the stage (all threads together) -- and runs ``convert`` once. A stage whose
function the code no longer has is left out (named on stderr), so the profile follows the
code. Prints JSON: a list of stages with start, wall seconds and CPU seconds; nested or
overlapping stages (a stage in a thread alongside the main thread's) are listed as they
happened.

Usage: python bench/stages.py FILE OUT [--no-verify]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import functools  # noqa: E402
import importlib  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any  # noqa: E402

if TYPE_CHECKING:
    from report import StageRecord

RECORDS: list[StageRecord] = []

# (module, function, label): what gets a timer, in the module whose global the code calls
STAGES = (
    ("msn_cli.conversion.convert", "load_checkpoint", "load (torch import, unpickle, mmap)"),
    ("msn_cli.conversion.convert", "build_plan", "plan"),
    ("msn_cli.conversion.convert", "check_zip_integrity", "source check: CRC-32 + sha256"),
    ("msn_cli.conversion.convert", "sha256_file", "source sha256"),
    ("msn_cli.conversion.convert", "write_safetensors", "write model.safetensors"),
    ("os", "fsync", "fsync"),
    ("msn_cli.conversion.convert", "readback_check", "read-back check + sha256 of the file"),
)
VERIFY_STAGE = ("msn_cli.verify", "verify_folder", "verify")


def record(label: str, w0: float, c0: float) -> None:
    RECORDS.append({"stage": label, "start": round(w0 - T0, 3),
                    "wall_s": round(time.perf_counter() - w0, 3),
                    "cpu_s": round(time.process_time() - c0, 3),
                    "thread": threading.current_thread().name})


def timed(module: str, name: str, label: str) -> None:
    owner = importlib.import_module(module)
    fn: Callable[..., Any] | None = getattr(owner, name, None)
    if fn is None:
        print(f"stages: {module}.{name} not found; '{label}' left out", file=sys.stderr)
        return
    wrapped = fn

    @functools.wraps(wrapped)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return wrapped(*args, **kwargs)
        finally:
            record(label, w0, c0)

    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verify = "--no-verify" not in args
    src, out = [a for a in args if not a.startswith("--")][:2]
    w0, c0 = time.perf_counter(), time.process_time()
    from msn_cli.conversion.convert import convert
    from msn_cli.transfer.sources import ResolvedSource

    record("import msn_cli", w0, c0)
    for stage in (*STAGES, *([VERIFY_STAGE] if verify else [])):
        timed(*stage)
    w1, c1 = time.perf_counter(), time.process_time()
    convert(ResolvedSource(src, "path", Path(src)), out, verify=verify)
    record("convert() total", w1, c1)
    RECORDS.sort(key=lambda r: r["start"])
    print(json.dumps(RECORDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
