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
      partial/<name>.json   where that transfer came from (url, validators, expected size, and
                            for a segmented transfer the byte ranges already written)
      locks/<name>.lock     one download of <name> at a time, across processes

Entry names are the released file names (``vits16_800ep.pth.tar``) for the five released
checkpoints, and the last part of the URL path for other URLs (with a short hash of the URL
added when two URLs would share a name).

Anyone who shares the cache can write into it, so nothing read from it is trusted (see
:mod:`msn_cli.util.safeio`): every path is built from a name that passes ``safe_name`` (one plain
component: never ``..``, never absolute); an index entry that breaks a rule is reported as
damaged and ignored, never followed; the sub-folders must be real folders, not links; cached
and partial files must be regular files; locks and notes are never written through a link; URLs
are stored without credentials.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from msn_cli.errors import CacheError, UsageError
from msn_cli.original.variants import VARIANTS, variant_for_filename
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.transfer.partial import DamagedNote, read_partial_note
from msn_cli.util.hashing import sha256_file
from msn_cli.util.safeio import UnsafeInput, read_json, replace_file, safe_name, strip_credentials

if TYPE_CHECKING:
    from filelock import FileLock

INDEX_VERSION = 1
CACHEDIR_TAG = (
    "Signature: 8a477f597d28d172789f06886806bc55\n"
    "# This file is a cache directory tag created by msn (msn-cli).\n"
    "# It holds downloaded MSN checkpoints; everything here can be downloaded again.\n"
    "# For information about cache directory tags see https://bford.info/cachedir/\n"
)
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._+-]+")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
SUBFOLDERS = ("files", "partial", "locks")


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
    def from_dict(cls, d: Any, key: str | None = None) -> CacheEntry:
        """The entry an index record describes; :class:`ValueError` saying what is wrong.

        ``key``: the index key the record is filed under, which must be its name.
        """
        if not isinstance(d, dict):
            raise ValueError(f"the record is {type(d).__name__}, not an object")
        try:
            name = safe_name(d.get("name"))
        except UnsafeInput as e:
            raise ValueError(f"its name {e}") from None
        if key is not None and key != name:
            raise ValueError(f"it is filed under another name than its own ('{name}')")
        url = d.get("url") or ""
        size = d.get("size")
        sha = d.get("sha256")
        when = d.get("downloaded_at") or ""
        variant = d.get("variant")
        if not isinstance(url, str):
            raise ValueError("its url is not a string")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError("its size is not a whole number of bytes")
        if not isinstance(sha, str) or not _HEX64.match(sha):
            raise ValueError("its sha256 is not 64 hexadecimal digits")
        if not isinstance(when, str):
            raise ValueError("its downloaded_at is not a string")
        if variant is not None and (not isinstance(variant, str) or variant not in VARIANTS):
            raise ValueError("its variant is not a released name")
        return cls(name=name, url=strip_credentials(url), size=size, sha256=sha, downloaded_at=when,
                   variant=variant)


@dataclass(frozen=True)
class DamagedEntry:
    """An index record msn ignores (it never builds a path from it): its key and why."""

    key: str
    problem: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "problem": self.problem}


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

    # Every path below is built from a name that passes safe_name: one plain component.
    def file_path(self, name: str) -> Path:
        return self.root / "files" / _entry_name(name)

    def partial_path(self, name: str) -> Path:
        return self.root / "partial" / f"{_entry_name(name)}.part"

    def partial_meta_path(self, name: str) -> Path:
        return self.root / "partial" / f"{_entry_name(name)}.json"

    def lock_path(self, name: str) -> Path:
        return self.root / "locks" / f"{_entry_name(name)}.lock"

    def ensure(self) -> None:
        """Create the folder, its sub-folders and CACHEDIR.TAG (idempotent)."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            for sub in SUBFOLDERS:
                with contextlib.suppress(FileExistsError):
                    (self.root / sub).mkdir()
            self.check_layout()
            tag = self.root / "CACHEDIR.TAG"
            if not tag.exists():
                replace_file(tag, CACHEDIR_TAG.encode())
        except OSError as e:
            raise CacheError(f"cannot use the cache folder {self.root}: {e.strerror or e}",
                             hint="pass --cache-dir or set MSN_CACHE to a writable folder") from e

    def check_layout(self) -> None:
        """The sub-folders that exist are real folders: a planted link would lead msn outside."""
        for sub in SUBFOLDERS:
            path = self.root / sub
            try:
                mode = path.lstat().st_mode
            except FileNotFoundError:
                continue
            if not stat.S_ISDIR(mode):
                what = "a symbolic link" if stat.S_ISLNK(mode) else "not a folder"
                raise CacheError(f"the cache's {sub}/ ({path}) is {what}; msn keeps its files "
                                 "inside the cache and will not follow it",
                                 hint=f"remove it (rm {path}); msn creates it again")

    # -- locks -----------------------------------------------------------------------------
    def entry_lock(self, name: str, timeout: float = -1) -> FileLock:
        """A cross-process lock for downloading or removing ``name``."""
        # filelock (tens of ms to import) only where a lock is taken: a cache hit takes none
        from filelock import FileLock

        self.ensure()
        path = self.lock_path(name)
        _unlink_link(path)
        return FileLock(str(path), timeout=timeout)

    @contextlib.contextmanager
    def _index_lock(self) -> Iterator[None]:
        from filelock import FileLock

        self.ensure()
        path = self.root / "index.json.lock"
        _unlink_link(path)
        with FileLock(str(path), timeout=60):
            yield

    # -- index -----------------------------------------------------------------------------
    def _read_index(self) -> dict[str, Any]:
        """The index's records by key, as stored (the typed reading is :meth:`_typed`).

        A file that is not a capped, depth-bounded JSON object with an ``entries`` object is a
        :class:`CacheError` (exit 3) saying how to start the index afresh.
        """
        try:
            data = read_json(self.index_path)
        except (FileNotFoundError, NotADirectoryError):
            return {}
        except OSError as e:
            raise CacheError(f"cannot read {self.index_path}: {e.strerror or e}",
                             hint="pass --cache-dir or set MSN_CACHE to a usable folder") from e
        except ValueError as e:  # UnsafeInput included: not a regular file, too large, too deep
            raise _damaged_index(self.index_path, str(e)) from None
        if not isinstance(data, dict) or not isinstance(data.get("entries"), dict):
            raise _damaged_index(self.index_path, "it holds no 'entries' object")
        entries: dict[str, Any] = data["entries"]
        return entries

    def _typed(self) -> tuple[dict[str, CacheEntry], list[DamagedEntry]]:
        good: dict[str, CacheEntry] = {}
        damaged: list[DamagedEntry] = []
        for key, d in self._read_index().items():
            try:
                good[key] = CacheEntry.from_dict(d, key)
            except ValueError as e:
                damaged.append(DamagedEntry(key, f"ignored: {e}"))
        return good, damaged

    def _write_index(self, entries: dict[str, Any]) -> None:
        payload = {"version": INDEX_VERSION, "entries": dict(sorted(entries.items()))}
        replace_file(self.index_path, (json.dumps(payload, indent=2) + "\n").encode())

    def entries(self) -> list[CacheEntry]:
        """The usable entries (a damaged record is left out: see :meth:`damaged`)."""
        return sorted(self._typed()[0].values(), key=lambda e: e.name)

    def damaged(self) -> list[DamagedEntry]:
        """Index records msn ignores: a name that is not one plain file name, wrong types."""
        return self._typed()[1]

    def get(self, name: str) -> CacheEntry | None:
        return self._typed()[0].get(name)

    def find_by_url(self, url: str) -> CacheEntry | None:
        url = strip_credentials(url)
        for e in self.entries():
            if e.url == url:
                return e
        return None

    def put(self, entry: CacheEntry) -> None:
        with self._index_lock():
            entries = self._read_index()
            record = entry.to_dict()
            record["name"] = _entry_name(entry.name)
            record["url"] = strip_credentials(entry.url)  # the index is shared: no secrets in it
            entries[entry.name] = record
            self._write_index(entries)

    def drop(self, name: str) -> None:
        """Forget the index record filed under ``name`` (damaged ones too); no file is touched."""
        with self._index_lock():
            entries = self._read_index()
            if name in entries:
                del entries[name]
                self._write_index(entries)

    # -- questions -------------------------------------------------------------------------
    def intact(self, entry: CacheEntry) -> bool:
        """The file is there, a regular file, with the size the index recorded (the cheap check)."""
        self.check_layout()
        try:
            st = self.file_path(entry.name).lstat()
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == entry.size

    def partials(self) -> list[PartialFile]:
        """Interrupted transfers; anything under ``partial/`` with another name is not one."""
        out: list[PartialFile] = []
        folder = self.root / "partial"
        if not folder.is_dir() or folder.is_symlink():
            return out
        for p in sorted(folder.glob("*.part")):
            name = p.name[: -len(".part")]
            try:
                safe_name(name)
                st = p.lstat()
            except (UnsafeInput, OSError):
                continue
            if stat.S_ISDIR(st.st_mode):
                continue
            try:
                note = read_partial_note(self.partial_meta_path(name))
            except DamagedNote:
                note = None
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0  # a link: its own, not its target's
            if note is not None and note.have is not None and size:
                size = note.have  # a segmented transfer's file is preallocated: count what arrived
            out.append(PartialFile(name, p, size, note.url if note else None,
                                   note.total if note else None))
        return out

    def name_for(self, spec: str) -> str:
        """The entry name for a released name or entry name (for ``ls``/``rm``/``check``)."""
        key = spec.strip()
        if key.lower() in VARIANTS:
            return VARIANTS[key.lower()].filename
        return key

    def name_for_url(self, url: str) -> str:
        """The entry name a URL downloads to (stable for a given URL and index, with or
        without credentials in it)."""
        url = strip_credentials(url)
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
        """Delete an entry's file, its partial download and its index entry.

        A damaged index record whose key is not a plain file name loses its record only: no
        path is ever built from it. A link in the cache is removed, never its target.
        """
        removed: dict[str, Any] = {"name": name, "bytes": 0, "files": []}
        try:
            safe_name(name)
        except UnsafeInput:
            self.drop(name)
            return removed
        lock = self.entry_lock(name, timeout=5)
        from filelock import Timeout

        try:
            with lock:
                for p in (self.file_path(name), self.partial_path(name), self.partial_meta_path(name)):
                    try:
                        st = p.lstat()
                        if stat.S_ISDIR(st.st_mode):
                            raise CacheError(f"{p} is a folder, not a file msn wrote; "
                                             "msn does not delete it", hint=f"look at it: rm -r {p}")
                        size = st.st_size if stat.S_ISREG(st.st_mode) else 0
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
        self.check_layout()
        path = self.file_path(entry.name)
        row: dict[str, Any] = {"name": entry.name, "path": str(path), "expected_size": entry.size,
                               "expected_sha256": entry.sha256}
        try:
            st = path.lstat()
        except OSError:
            row.update(ok=False, problem="file missing")
            return row
        if not stat.S_ISREG(st.st_mode):
            row.update(ok=False, problem="not a regular file (msn does not read through links)")
            return row
        size = st.st_size
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

    def orphans(self) -> list[str]:
        """Names of regular files in ``files/`` that the index does not list (an index deleted
        or damaged and started afresh, a run killed between the rename and the index update)."""
        folder = self.root / "files"
        if not folder.is_dir() or folder.is_symlink():
            return []
        good, damaged = self._typed()
        known = set(good) | {d.key for d in damaged}
        out = []
        for p in sorted(folder.iterdir()):
            try:
                safe_name(p.name)
            except UnsafeInput:
                continue
            if p.name not in known and stat.S_ISREG(p.lstat().st_mode):
                out.append(p.name)
        return out

    def adopt(self, name: str, progress: ProgressFn = no_progress) -> CacheEntry | None:
        """Record an orphan file of ``files/`` in the index, hashed once (None: not one, or being
        downloaded now). Only a finished, checked download is ever renamed into ``files/``, so
        its bytes are what was fetched; where from is not known any more: a released file
        keeps its canonical URL, any other file none."""
        from filelock import Timeout

        try:
            with self.entry_lock(name, timeout=0):
                if self.get(name) is not None or name not in self.orphans():
                    return self.get(name)
                path = self.file_path(name)
                digest = sha256_file(path, progress, f"adopting {name}")
                st = path.lstat()
                v = variant_for_filename(name)
                when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(st.st_mtime))
                entry = CacheEntry(name, v.url() if v else "", st.st_size, digest, when,
                                   v.name if v else None)
                self.put(entry)
                return entry
        except Timeout:
            return None
        except UnsafeInput:  # swapped for a link meanwhile: left alone
            return None

    def adopt_orphans(self, progress: ProgressFn = no_progress) -> list[CacheEntry]:
        return [e for name in self.orphans() if (e := self.adopt(name, progress)) is not None]

    def summary(self) -> dict[str, Any]:
        self.check_layout()
        self.adopt_orphans()
        good, damaged = self._typed()
        entries = sorted(good.values(), key=lambda e: e.name)
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
            "damaged": [d.to_dict() for d in damaged],
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


def _entry_name(name: str) -> str:
    try:
        return safe_name(name)
    except UnsafeInput as e:
        raise CacheError(f"refusing the cache entry {e}: msn never builds a path outside the "
                         "cache from it", hint="msn cache ls lists damaged index entries; "
                                               "msn cache rm --all --yes drops them") from None


def _damaged_index(path: Path, why: str) -> CacheError:
    return CacheError(f"the cache index {path} is damaged ({why})",
                      hint=f"delete it: rm {path} (the files stay; the next msn cache ls or "
                           "download hashes them once and records them again)")


def _unlink_link(path: Path) -> None:
    """Remove a symbolic link planted where msn opens a file of its own (never its target)."""
    if path.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def disk_free(path: Path) -> int | None:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None
