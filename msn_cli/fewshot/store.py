"""The feature cache: each image's feature, by model and by the sha256 of the image file.

Location: ``<msn cache>/features/<model key>/`` (the msn cache folder of
:func:`msn_cli.transfer.cache.resolve_cache_dir`: ``--cache-dir``, ``$MSN_CACHE``,
``$XDG_CACHE_HOME/msn`` or ``~/.cache/msn``). The model key is a sha256 over the model's files
and the feature definition (:data:`FEATURE_DEFINITION`), so another model, another processor
or another feature never reads these rows.

Each file is one chunk of at most :data:`CHUNK_ROWS` images, a safetensors file with two
tensors: ``sha256`` (uint8, n x 32, the image files' hashes) and ``features`` (float32,
n x width, the raw pre-norm cls tokens). A chunk is written to a temporary name and renamed
into place (:func:`msn_cli.util.safeio.replace_file`), so an interrupted run leaves whole chunks
or none. Anyone who shares the cache can write into it: a chunk that is not a regular file,
too large, not safetensors, or of the wrong dtypes or shapes is skipped (and reported), never
trusted.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from msn_cli.errors import CacheError
from msn_cli.util import safeio

if TYPE_CHECKING:
    import numpy as np

FEATURE_DEFINITION = "msn-fewshot-features-v1: cls token of the last block, before the final norm"
CHUNK_ROWS = 2048
MAX_CHUNKS = 10_000
"""Chunks read per model (20 M images at most)."""
SUBFOLDER = "features"


def features_dir(cache_dir: str | os.PathLike[str] | None, model_key: str) -> Path:
    """``<msn cache>/features/<model_key>``, refusing a ``features`` that is a link or a file."""
    from msn_cli.transfer.cache import resolve_cache_dir

    root = resolve_cache_dir(cache_dir) / SUBFOLDER
    for path in (root, root / model_key):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(mode):
            raise CacheError(f"the feature cache {path} is not a folder (a link or a file); msn "
                             "will not follow it", hint=f"remove it (rm {path}); msn creates it again")
    return root / model_key


class FeatureStore:
    """The cached features of one model: look up by image hash, add rows, write chunks.

    ``folder`` None: nothing is read or written (``--no-cache``).
    """

    def __init__(self, folder: Path | None, width: int) -> None:
        self.folder = folder
        self.width = width
        self.notes: list[str] = []
        self._rows: dict[bytes, np.ndarray] = {}
        self._new_hashes: list[bytes] = []
        self._new_rows: list[np.ndarray] = []
        self.written = 0
        if folder is not None and folder.is_dir():
            self._load(folder)

    def __len__(self) -> int:
        return len(self._rows)

    def _load(self, folder: Path) -> None:
        chunks = sorted(p for p in folder.iterdir() if p.suffix == ".safetensors"
                        and not p.name.startswith("."))
        if len(chunks) > MAX_CHUNKS:
            self.notes.append(f"the feature cache {folder} holds {len(chunks)} chunks; only the "
                              f"first {MAX_CHUNKS} are read")
        for chunk in chunks[:MAX_CHUNKS]:
            why = self._load_chunk(chunk)
            if why:
                self.notes.append(f"skipped the damaged feature cache file {chunk}: {why}")

    def _load_chunk(self, chunk: Path) -> str | None:
        import numpy as np
        from safetensors.numpy import load

        limit = CHUNK_ROWS * (32 + 4 * self.width) + 64 * 1024
        try:
            tensors = load(safeio.read_capped(chunk, limit, follow_links=False))
        except (OSError, safeio.UnsafeInput) as e:
            return str(e)
        except Exception as e:  # safetensors' own errors: not a safetensors file
            return f"not a safetensors file ({type(e).__name__})"
        hashes, rows = tensors.get("sha256"), tensors.get("features")
        if hashes is None or rows is None or hashes.dtype != np.uint8 or rows.dtype != np.float32 \
                or hashes.ndim != 2 or hashes.shape[1] != 32 or rows.shape != (hashes.shape[0], self.width):
            return "not a chunk of this model's features"
        if not np.isfinite(rows).all():
            return "holds values that are not finite"
        for h, row in zip(hashes, rows, strict=True):
            self._rows[h.tobytes()] = row
        return None

    def get(self, sha256_hex: str) -> np.ndarray | None:
        return self._rows.get(bytes.fromhex(sha256_hex))

    def add(self, sha256_hex: list[str], rows: np.ndarray) -> None:
        """Remember new rows; a full chunk is written at once."""
        for h, row in zip(sha256_hex, rows, strict=True):
            key = bytes.fromhex(h)
            if key not in self._rows:
                self._rows[key] = row
                self._new_hashes.append(key)
                self._new_rows.append(row)
        while len(self._new_hashes) >= CHUNK_ROWS:
            self._write(CHUNK_ROWS)

    def flush(self) -> None:
        """Write the rows not yet written (at the end of a pass that completed)."""
        if self._new_hashes:
            self._write(len(self._new_hashes))

    def _write(self, n: int) -> None:
        import numpy as np
        from safetensors.numpy import save

        hashes, rows = self._new_hashes[:n], self._new_rows[:n]
        del self._new_hashes[:n], self._new_rows[:n]
        if self.folder is None:
            return
        data = save({"sha256": np.frombuffer(b"".join(hashes), dtype=np.uint8).reshape(n, 32),
                     "features": np.ascontiguousarray(np.stack(rows), dtype=np.float32)},
                    metadata={"definition": FEATURE_DEFINITION})
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            safeio.replace_file(self.folder / f"{secrets.token_hex(8)}.safetensors", data)
        except OSError as e:  # a cache that cannot be written costs time next run, not this one
            self.notes.append(f"cannot write the feature cache {self.folder}: {e.strerror or e}")
            self.folder = None
            return
        self.written += n
