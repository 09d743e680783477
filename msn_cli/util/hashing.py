"""sha256 of a file, with progress; and of several files, in a thread."""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path

from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util.safeio import open_regular

CHUNK = 8 * 1024 * 1024

HashFn = Callable[[Path, ProgressFn, str], str]
"""How a file's sha256 is had: :func:`sha256_file`, or a :class:`BackgroundHashes`."""


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


class BackgroundHashes:
    """sha256 of some files, computed one after another in a thread from now on.

    Reading and hashing release the GIL, so on a second core they cost no wall time while the
    main thread imports torch and transformers (``msn verify`` at ViT-L/16: two 1.2 GB files,
    about 2 s of hashing, under a 3 s import). Calling the object gives a file's sha256 like
    :func:`sha256_file`, waiting for it with progress; a file it was not given is hashed
    there and then. :meth:`close` stops the thread (at the next chunk).
    """

    def __init__(self, paths: list[Path]) -> None:
        self._progress: dict[Path, tuple[int, int | None]] = {}
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="msn-sha256")
        self._futures = {p: self._pool.submit(self._hash, p) for p in paths}
        self._pool.shutdown(wait=False)

    def _hash(self, path: Path) -> str:
        def note(_stage: str, done: int, total: int | None) -> None:
            if self._stop.is_set():
                raise _Stopped()
            self._progress[path] = (done, total)

        return sha256_file(path, note)

    def __call__(self, path: str | os.PathLike[str], progress: ProgressFn = no_progress,
                 stage: str = "hashing") -> str:
        future = self._futures.get(Path(path))
        if future is None:
            return sha256_file(path, progress, stage)
        while True:
            try:
                return future.result(timeout=0.1)
            except FutureTimeout:
                progress(stage, *self._progress.get(Path(path), (0, None)))

    def close(self) -> None:
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Stopped(Exception):
    pass
