"""Where ``msn convert``'s time goes: one in-process run with its stages timed (bench/run.py).

Wraps the functions ``msn_cli.conversion.convert`` calls (load, plan, the source check in its thread,
the writer, fsync, the read-back check, verify) with timers -- wall time and the process's
CPU time over the stage (all threads together) -- and runs ``convert`` once. Prints JSON: a
list of stages with start, wall seconds and CPU seconds; nested or overlapping stages (the
source check runs in a thread alongside load and plan) are listed as they happened.

Usage: python bench/stages.py FILE OUT [--no-verify]
"""

from __future__ import annotations

import time

T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

RECORDS: list[dict] = []


def timed(owner, name: str, label: str) -> None:
    fn = getattr(owner, name)

    def wrapper(*args, **kwargs):
        w0, c0 = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            RECORDS.append({"stage": label, "start": round(w0 - T0, 3),
                            "wall_s": round(time.perf_counter() - w0, 3),
                            "cpu_s": round(time.process_time() - c0, 3),
                            "thread": threading.current_thread().name})

    setattr(owner, name, wrapper)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    verify = "--no-verify" not in args
    src, out = [a for a in args if not a.startswith("--")][:2]
    w0, c0 = time.perf_counter(), time.process_time()
    import msn_cli.conversion.convert as C
    from msn_cli.transfer.sources import ResolvedSource

    RECORDS.append({"stage": "import msn_cli", "start": round(w0 - T0, 3),
                    "wall_s": round(time.perf_counter() - w0, 3),
                    "cpu_s": round(time.process_time() - c0, 3), "thread": "MainThread"})
    timed(C, "load_checkpoint", "load (torch import, unpickle, mmap)")
    timed(C, "build_plan", "plan")
    timed(C, "check_zip_integrity", "source check: CRC-32 + sha256 (thread)")
    timed(C, "sha256_file", "source sha256 (thread)")
    timed(C._SourceCheck, "wait", "waiting for the source check")
    timed(C, "write_safetensors", "write model.safetensors (tensors, then the header)")
    timed(os, "fsync", "fsync")
    timed(C, "readback_check", "read-back check + sha256 of the file")
    if verify:
        import msn_cli.verify.checks as V

        timed(V, "verify_folder", "verify")
    w1, c1 = time.perf_counter(), time.process_time()
    C.convert(ResolvedSource(src, "path", Path(src)), out, verify=verify)
    RECORDS.append({"stage": "convert() total", "start": round(w1 - T0, 3),
                    "wall_s": round(time.perf_counter() - w1, 3),
                    "cpu_s": round(time.process_time() - c1, 3), "thread": "MainThread"})
    RECORDS.sort(key=lambda r: r["start"])
    print(json.dumps(RECORDS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
