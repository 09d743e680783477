"""Turn what the user typed (a variant name, a file path, a URL) into a local checkpoint file."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from msn_cli.errors import CheckpointError, UsageError
from msn_cli.original.variants import VARIANTS, find_variant, get_variant
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util.safeio import strip_credentials


@dataclass(frozen=True)
class ResolvedSource:
    spec: str
    kind: Literal["variant", "path", "url"]
    path: Path
    name: str | None = None  # variant name
    url: str | None = None
    sha256: str | None = None  # known without hashing (the cache index recorded it)

    def to_dict(self) -> dict[str, Any]:
        """What was resolved, as shown and recorded: URLs without their credentials."""
        return {"spec": strip_credentials(self.spec), "kind": self.kind, "path": str(self.path),
                "name": self.name, "url": strip_credentials(self.url) if self.url else None}


def public_url(src: Any) -> str | None:
    """The source URL a published text (card, commit description, pushed manifest) may name.

    Only the canonical URL of a released checkpoint (``variants.DEFAULT_BASE_URL`` + its file
    name), whatever mirror it was fetched from; None for every other source. msn cannot tell a
    public host from an internal one, so no other URL is ever published.
    """
    if not isinstance(src, dict):
        return None
    name = src.get("name")
    if isinstance(name, str) and name in VARIANTS:
        return VARIANTS[name].url()
    url = src.get("url")
    if isinstance(url, str) and strip_credentials(url) in {v.url() for v in VARIANTS.values()}:
        return strip_credentials(url)
    return None


def public_file_name(src: Any) -> str:
    """The file name alone of a source that has no public URL (never a path, host or secret)."""
    if isinstance(src, dict):
        for key in ("url", "path", "spec"):
            value = src.get(key)
            if isinstance(value, str) and value:
                path = unquote(urlsplit(value).path) if "://" in value else value
                name = PurePosixPath(path.replace("\\", "/")).name
                if name:
                    return name
    return "unknown"


def is_url(spec: str) -> bool:
    return "://" in spec


def resolve_source(spec: str, *, cache_dir: str | os.PathLike[str] | None = None,
                   base_url: str | None = None, progress: ProgressFn = no_progress,
                   notify: Callable[[str], None] | None = None) -> ResolvedSource:
    """A local file for ``spec``, downloading into the cache when it is a name or a URL.

    A name is a released variant (``vits16``), its file name (``vits16_800ep.pth.tar``) or any
    entry of ``msn cache ls``. An existing path wins over a name; a URL must be http(s). ``notify``
    receives the download's one-line messages (resuming, retrying).
    """
    if is_url(spec):
        scheme = spec.split("://", 1)[0].lower()
        if scheme not in ("http", "https"):
            raise UsageError(f"unsupported URL scheme '{scheme}://' in {spec}",
                             hint="give an http(s) URL, a local path or a variant name")
        from msn_cli.transfer.download import fetch

        got = fetch(spec, cache_dir=cache_dir, progress=progress, notify=notify)
        return ResolvedSource(spec, "url", got.path, url=spec, sha256=got.sha256)
    path = Path(spec).expanduser()
    if path.exists():
        return ResolvedSource(spec, "path", path)
    if find_variant(spec) is None and os.sep not in spec:
        from msn_cli.transfer.cache import Cache

        entry = Cache(cache_dir).get(spec.strip())
        if entry is not None:  # an entry of msn cache ls that came from a URL
            from msn_cli.transfer.download import fetch

            got = fetch(entry.name, cache_dir=cache_dir, progress=progress, notify=notify)
            return ResolvedSource(spec, "url", got.path, url=got.url, sha256=got.sha256)
    if find_variant(spec) is not None or not _looks_like_path(spec):
        variant = get_variant(spec)
        from msn_cli.transfer.download import fetch

        got = fetch(variant.name, cache_dir=cache_dir, base_url=base_url, progress=progress,
                    notify=notify)
        return ResolvedSource(spec, "variant", got.path, name=variant.name, url=got.url,
                              sha256=got.sha256)
    raise CheckpointError(f"no such file: {spec}",
                          hint="give a path, a URL, an entry of msn cache ls, or one of "
                               + ", ".join(VARIANTS))


def _looks_like_path(spec: str) -> bool:
    return os.sep in spec or "." in spec or spec.startswith("~")
