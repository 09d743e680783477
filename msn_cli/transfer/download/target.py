"""What a spec names (the cache entry a released name or a URL downloads to, and from where),
and the checked file it ends as."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msn_cli.errors import DownloadError, UsageError
from msn_cli.original.variants import DEFAULT_BASE_URL, VARIANTS, find_variant, get_variant
from msn_cli.transfer.cache import Cache
from msn_cli.util.safeio import strip_credentials

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Target:
    name: str
    """The cache entry's name."""
    url: str
    """The URL requested, credentials included (used for the request only)."""
    variant: str | None

    @property
    def shown(self) -> str:
        """The URL as shown and stored: without credentials."""
        return strip_credentials(self.url)


def effective_base_url(base_url: str | None = None) -> str:
    return base_url or os.environ.get("MSN_BASE_URL") or DEFAULT_BASE_URL


def check_sha256(value: str | None) -> str | None:
    if value is None:
        return None
    v = value.strip().lower()
    if not _HEX64.match(v):
        raise UsageError(f"--sha256 must be 64 hexadecimal digits, not '{value}'")
    return v


def resolve_target(spec: str, cache: Cache, base_url: str | None) -> Target:
    """A released name becomes ``<base URL>/<file name>``; a URL stays itself (a released
    file's URL on the default or the given server counts as that release); an entry of
    ``msn cache ls`` that came from a URL is fetched from it again."""
    if "://" in spec:
        return _url_target(spec, cache, base_url)
    entry = None if find_variant(spec) else cache.get(spec.strip())
    if entry is not None:
        _http_only(entry.url, f"the cache index's source of {entry.name}",
                   f"give the file's http(s) URL, or remove the entry (msn cache rm {entry.name})")
        return Target(entry.name, entry.url, entry.variant)
    v = get_variant(spec)
    base = effective_base_url(base_url)
    _http_only(base, "the base URL", "give an http(s) mirror in --base-url / MSN_BASE_URL")
    return Target(v.filename, v.url(base), v.name)


def _http_only(url: str, what: str, hint: str) -> None:
    """Only http(s) is fetched: a URL from the environment or the (shared) cache index that
    names another scheme is a network error of its own, never handed to requests."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in ("http", "https"):
        raise DownloadError(f"{what} is {strip_credentials(url)}, not an http(s) URL",
                            hint=hint)


def _url_target(spec: str, cache: Cache, base_url: str | None) -> Target:
    scheme = spec.split("://", 1)[0].lower()
    if scheme not in ("http", "https"):
        raise UsageError(f"unsupported URL scheme '{scheme}://' in {strip_credentials(spec)}",
                         hint="give an http(s) URL or one of " + ", ".join(VARIANTS))
    plain = strip_credentials(spec)
    for v in VARIANTS.values():
        if plain in (v.url(DEFAULT_BASE_URL), strip_credentials(v.url(effective_base_url(base_url)))):
            return Target(v.filename, spec, v.name)
    return Target(cache.name_for_url(spec), spec, None)


def released_size_bound(name: str) -> int:
    """The most the released checkpoint ``name`` can weigh: twice its parameters in float32
    (the encoder, its MLP head and the 1024 prototypes of 256) plus 16 MiB of pickle. Meta
    publishes no sizes; this bound sits about 2x above the Hub uploads of the same weights."""
    v = VARIANTS[name]
    d, m, p = v.hidden_size, v.intermediate_size, v.patch_size
    params = (v.num_layers * (4 * d * d + 2 * d * m + 9 * d + m) + 3 * p * p * d
              + (v.num_patches + 1) * d + 2048 * (d + 2048 + 256) + 1024 * 256)
    return 2 * 4 * params + 16 * 1024 * 1024


@dataclass(frozen=True)
class CachedFile:
    """A checked file in the cache."""

    name: str
    path: Path
    url: str
    sha256: str
    size: int
    downloaded_at: str
    variant: str | None = None
    downloaded: bool = False
    """This call transferred bytes (False: the cache already had the file)."""
    resumed_from: int = 0
    """Bytes of an earlier partial download that this call kept."""
    verified: bool = False
    """The file was re-hashed by this call (``verify=True`` or just downloaded)."""
    split: bool = False
    """This call fetched ranges of the file over several connections."""
    first_rate: float | None = None
    """Bytes per second of the first stream over ``SPLIT_PROBE`` seconds, when a large file's
    first stream was measured to decide whether to split (None: not measured)."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "variant": self.variant, "path": str(self.path), "url": self.url,
                "size": self.size, "sha256": self.sha256, "downloaded_at": self.downloaded_at,
                "downloaded": self.downloaded, "resumed_from": self.resumed_from,
                "verified": self.verified, "split": self.split,
                "first_stream_mb_s": None if self.first_rate is None else round(self.first_rate / 1e6, 1)}
