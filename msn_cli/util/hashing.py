"""sha256 of files (with progress) and of byte streams (in a background thread)."""

from __future__ import annotations

import hashlib
import os
import queue
import threading
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


class BackgroundSha256:
    """sha256 of a byte stream in a background thread, fed in order through a short queue."""

    def __init__(self, depth: int = 4) -> None:
        self._q: queue.Queue = queue.Queue(maxsize=depth)
        self._h = hashlib.sha256()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="msn-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            data, after = item
            try:
                if self._error is None:
                    self._h.update(data)
                if after is not None:
                    after[0](after[1])
            except BaseException as e:  # reported to the writer on its next put/result
                self._error = self._error or e

    def put(self, data, after=None) -> None:
        if self._error is not None:
            raise self._error
        self._q.put((data, after))

    def result(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        return self._h.hexdigest()

    def close(self) -> None:
        if self._thread.is_alive():
            self._q.put(None)
            self._thread.join()
