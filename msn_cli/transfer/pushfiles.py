"""The folder's files as ``push`` checked them, held from the check to the upload.

``push`` compares every file with the manifest's sha256 and then hands it to huggingface_hub,
which would read it again by its path at commit time: a file swapped in between (for a link
to a private key, say) would be uploaded unchecked. So each file is opened once, without
following links (a link under a listed name is refused), hashed from that descriptor, and
uploaded from what was hashed:

- a file up to :data:`SMALL` bytes (the config files) is read whole, and those very bytes are
  hashed and uploaded;
- a larger one (the weights) stays open: renaming it, deleting it or putting a link in its
  place changes nothing, the upload reads the same open file. huggingface_hub hashes it again
  when the commit is prepared, and push refuses to send it unless that is the sha256 it checked
  (a change made inside the file itself). Keeping it in memory instead would cost its size.

:class:`HeldFiles` is a :data:`~msn_cli.util.hashing.HashFn`, so ``check_files`` hashes through it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

from msn_cli.progress import ProgressFn
from msn_cli.util import safeio
from msn_cli.util.hashing import CHUNK

SMALL = safeio.MAX_JSON_BYTES
"""Files up to this size are uploaded from the bytes that were hashed."""


@dataclass
class Held:
    size: int
    sha256: str
    data: bytes | None = None
    """The whole file as hashed (a small file)."""
    handle: io.BufferedReader | None = None
    """The open file that was hashed, at its start (a large file)."""


class HeldFiles:
    """Opens (without following links), hashes and keeps each file it is asked for; closes
    them all with :meth:`close`. Raises ``safeio.UnsafeInput`` for a link or a file that is not
    regular, ``OSError`` for one that cannot be read."""

    def __init__(self) -> None:
        self._files: dict[Path, Held] = {}
        self._stack = contextlib.ExitStack()

    def __call__(self, path: Path, progress: ProgressFn, stage: str) -> str:
        return self.hold(path, progress, stage).sha256

    def get(self, path: Path) -> Held | None:
        return self._files.get(path)

    def hold(self, path: Path, progress: ProgressFn, stage: str = "hashing") -> Held:
        held = self._files.get(path)
        if held is None:
            with contextlib.ExitStack() as opened:
                f = opened.enter_context(safeio.open_regular(path, follow_links=False))
                held = self._read(f, progress, stage)
                if held.handle is not None:  # the upload reads it: keep it open until close()
                    self._stack.enter_context(opened.pop_all())
            self._files[path] = held
        return held

    @staticmethod
    def _read(f: io.BufferedReader, progress: ProgressFn, stage: str) -> Held:
        total = os.fstat(f.fileno()).st_size
        if total <= SMALL:
            data = f.read(SMALL + 1)
            if len(data) <= SMALL:  # not grown past the cap since fstat
                progress(stage, len(data), len(data))
                return Held(len(data), hashlib.sha256(data).hexdigest(), data=data)
            f.seek(0)
        h = hashlib.sha256()
        done = 0
        buf = bytearray(CHUNK)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
            done += n
            progress(stage, done, total)
        f.seek(0)
        return Held(done, h.hexdigest(), handle=f)

    def close(self) -> None:
        self._stack.close()
        self._files.clear()
