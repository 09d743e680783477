"""The shared cache of downloaded checkpoints: where it is, what it holds, and its index.

Location, resolved each time a command runs (never at import):
``--cache-dir``, else ``$MSN_CACHE``, else ``$XDG_CACHE_HOME/msn``, else ``~/.cache/msn``.

Layout::

    <cache>/
      CACHEDIR.TAG          marks the folder as a cache (backup tools skip it)
      index.json            one entry per finished file: name, url, size, sha256, date
      index.json.lock       serialises index updates between processes
      files/<name>          finished, checked files (they appear here by atomic rename)
      partial/<name>.part   an interrupted transfer, resumed by the next download
      partial/<name>.json   where that transfer came from (url, validators, expected size)
      locks/<name>.lock     one download of <name> at a time, across processes

Entry names are the released file names (``vits16_800ep.pth.tar``) for the five released
checkpoints, and the last part of the URL path for other URLs (with a short hash of the URL
added when two URLs would share a name).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from .errors import CacheError, UsageError
from .hashing import sha256_file
from .progress import ProgressFn, no_progress
from .variants import VARIANTS, variant_for_filename

INDEX_VERSION = 1
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by msn (msn-cli).\n"
    "# It holds downloaded MSN checkpoints; everything here can be downloaded again.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")


def default_cache_dir() -> Path:
    """The cache folder from the environment, as it is right now."""
    env = os.environ.get("MSN_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "msn"
    return Path.home() / ".cache" / "msn"


def resolve_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """``cache_dir``, else the environment's choice; a path that is a file is refused."""
    path = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    if path.exists() and not path.is_dir():
        raise CacheError(f"the cache location {path} is a file, not a folder",
                         hint="give --cache-dir (or MSN_CACHE) a folder")
    return path


def now_iso() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True)
class CacheEntry:
    """A finished file in the cache, as the index records it."""

    name: str
    url: str
    size: int
    sha256: str
    downloaded_at: str
    variant: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CacheEntry:
        return cls(name=str(d["name"]), url=str(d.get("url") or ""), size=int(d["size"]),
                   sha256=str(d["sha256"]), downloaded_at=str(d.get("downloaded_at") or ""),
                   variant=d.get("variant"))


@dataclass(frozen=True)
class PartialFile:
    """An interrupted transfer that the next download resumes."""

    name: str
    path: Path
    size: int
    url: str | None
    total: int | None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "size": self.size, "url": self.url,
                "total": self.total}


class Cache:
    """One cache folder. Cheap to create; nothing is written until something needs to be."""

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None):
        self.root = resolve_cache_dir(cache_dir)

    # -- layout ----------------------------------------------------------------------------
    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def file_path(self, name: str) -> Path:
        return self.root / "files" / name

    def partial_path(self, name: str) -> Path:
        return self.root / "partial" / f"{name}.part"

    def partial_meta_path(self, name: str) -> Path:
        return self.root / "partial" / f"{name}.json"

    def lock_path(self, name: str) -> Path:
        return self.root / "locks" / f"{name}.lock"

    def ensure(self) -> None:
        """Create the folder, its sub-folders and CACHEDIR.TAG (idempotent)."""
        try:
            for sub in ("files", "partial", "locks"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                _atomic_write(tag, CACHEDIR_TAG.encode())
        except OSError as e:
            raise CacheError(f"cannot use the cache folder {self.root}: {e.strerror or e}",
                             hint="pass --cache-dir or set MSN_CACHE to a writable folder") from e

    # -- locks -----------------------------------------------------------------------------
    def entry_lock(self, name: str, timeout: float = -1):
        """A cross-process lock for downloading or removing ``name``."""
        from filelock import FileLock

        self.ensure()
        return FileLock(str(self.lock_path(name)), timeout=timeout)

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        from filelock import FileLock

        self.ensure()
        with FileLock(str(self.root / "index.json.lock"), timeout=60):
            yield

    # -- index -----------------------------------------------------------------------------
    def _read_index(self) -> dict[str, dict[str, Any]]:
        try:
            raw = self.index_path.read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as e:
            raise CacheError(f"cannot read {self.index_path}: {e.strerror or e}",
                             hint="pass --cache-dir or set MSN_CACHE to a usable folder") from e
        try:
            data = json.loads(raw)
            entries = data["entries"]
            if not isinstance(entries, dict):
                raise TypeError("entries is not an object")
            return entries
        except (ValueError, KeyError, TypeError) as e:
            raise CacheError(f"the cache index {self.index_path} is damaged ({e})",
                             hint=f"delete it (the files stay and are re-checked on next use): "
                                  f"rm {self.index_path}") from e

    def _write_index(self, entries: dict[str, dict[str, Any]]) -> None:
        payload = {"version": INDEX_VERSION, "entries": dict(sorted(entries.items()))}
        _atomic_write(self.index_path, (json.dumps(payload, indent=2) + "\n").encode())

    def entries(self) -> list[CacheEntry]:
        out = []
        for d in self._read_index().values():
            with contextlib.suppress(KeyError, ValueError, TypeError):
                out.append(CacheEntry.from_dict(d))
        return sorted(out, key=lambda e: e.name)

    def get(self, name: str) -> CacheEntry | None:
        d = self._read_index().get(name)
        if d is None:
            return None
        try:
            return CacheEntry.from_dict(d)
        except (KeyError, ValueError, TypeError):
            return None

    def find_by_url(self, url: str) -> CacheEntry | None:
        for e in self.entries():
            if e.url == url:
                return e
        return None

    def put(self, entry: CacheEntry) -> None:
        with self._index_lock():
            entries = self._read_index()
            entries[entry.name] = entry.to_dict()
            self._write_index(entries)

    def drop(self, name: str) -> None:
        with self._index_lock():
            entries = self._read_index()
            if entries.pop(name, None) is not None:
                self._write_index(entries)

    # -- questions -------------------------------------------------------------------------
    def intact(self, entry: CacheEntry) -> bool:
        """The file is there with the size the index recorded (the cheap check)."""
        try:
            return self.file_path(entry.name).stat().st_size == entry.size
        except OSError:
            return False

    def partials(self) -> list[PartialFile]:
        out: list[PartialFile] = []
        folder = self.root / "partial"
        if not folder.is_dir():
            return out
        for p in sorted(folder.glob("*.part")):
            name = p.name[: -len(".part")]
            meta = read_partial_meta(self.partial_meta_path(name))
            with contextlib.suppress(OSError):
                out.append(PartialFile(name, p, p.stat().st_size, meta.get("url"), meta.get("total")))
        return out

    def name_for(self, spec: str) -> str:
        """The entry name for a released name or entry name (for ``ls``/``rm``/``check``)."""
        key = spec.strip()
        if key.lower() in VARIANTS:
            return VARIANTS[key.lower()].filename
        return key

    def name_for_url(self, url: str) -> str:
        """The entry name a URL downloads to (stable for a given URL and index)."""
        known = self.find_by_url(url)
        if known is not None:
            return known.name
        base = url_basename(url)
        taken = self.get(base)
        if taken is None or taken.url == url:
            if taken is None and variant_for_filename(base) is not None:
                # A released file name from some other server: keep it apart from the released one.
                return f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-{base}"
            return base
        return f"{hashlib.sha256(url.encode()).hexdigest()[:10]}-{base}"

    # -- changes ---------------------------------------------------------------------------
    def remove(self, name: str) -> dict[str, Any]:
        """Delete an entry's file, its partial download and its index entry."""
        removed: dict[str, Any] = {"name": name, "bytes": 0, "files": []}
        lock = self.entry_lock(name, timeout=5)
        from filelock import Timeout

        try:
            with lock:
                for p in (self.file_path(name), self.partial_path(name), self.partial_meta_path(name)):
                    try:
                        size = p.stat().st_size
                        p.unlink()
                    except FileNotFoundError:
                        continue
                    except OSError as e:
                        raise CacheError(f"cannot delete {p}: {e.strerror or e}") from e
                    if p != self.partial_meta_path(name):  # the partial's small note is not data
                        removed["bytes"] += size
                        removed["files"].append(str(p))
                self.drop(name)
        except Timeout as e:
            raise CacheError(f"{name} is being downloaded by another process",
                             hint="wait for that download to finish, then try again") from e
        return removed

    def check(self, entry: CacheEntry, progress: ProgressFn = no_progress) -> dict[str, Any]:
        """Re-hash one entry and compare with the index."""
        path = self.file_path(entry.name)
        row: dict[str, Any] = {"name": entry.name, "path": str(path), "expected_size": entry.size,
                               "expected_sha256": entry.sha256}
        try:
            size = path.stat().st_size
        except OSError:
            row.update(ok=False, problem="file missing")
            return row
        row["size"] = size
        if size != entry.size:
            row.update(ok=False, problem=f"size {size} differs from the index's {entry.size}")
            return row
        digest = sha256_file(path, progress, f"checking {entry.name}")
        row["sha256"] = digest
        row["ok"] = digest == entry.sha256
        if not row["ok"]:
            row["problem"] = "sha256 differs from the index"
        return row

    def summary(self) -> dict[str, Any]:
        entries = self.entries()
        partials = self.partials()
        rows = []
        for e in entries:
            d = e.to_dict()
            d["path"] = str(self.file_path(e.name))
            d["intact"] = self.intact(e)
            rows.append(d)
        return {
            "cache_dir": str(self.root),
            "entries": rows,
            "partial": [p.to_dict() for p in partials],
            "total_bytes": sum(e.size for e in entries) + sum(p.size for p in partials),
        }


def url_basename(url: str) -> str:
    path = unquote(urlsplit(url).path)
    base = path.rstrip("/").rsplit("/", 1)[-1]
    base = _SAFE_NAME.sub("_", base).strip("._")
    if not base:
        raise UsageError(f"cannot tell a file name from the URL {url}",
                         hint="give a URL that ends in a file name")
    return base


def read_partial_meta(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def write_partial_meta(path: Path, meta: dict[str, Any]) -> None:
    _atomic_write(path, (json.dumps(meta, indent=2) + "\n").encode())


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def disk_free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
