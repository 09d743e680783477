"""sha256 of a file, with progress."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util.safeio import open_regular

CHUNK = 8 * 1024 * 1024


def sha256_file(path: str | os.PathLike[str], progress: ProgressFn = no_progress,
                stage: str = "hashing") -> str:
    """sha256 of a regular file (a FIFO or a device raises ``safeio.UnsafeInput``, unread)."""
    path = Path(path)
    total = path.stat().st_size
    h = hashlib.sha256()
    done = 0
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with open_regular(path) as f:
        while n := f.readinto(buf):
            h.update(view[:n])
            done += n
            progress(stage, done, total)
    return h.hexdigest()
