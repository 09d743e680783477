"""The source checkpoint verify compares a folder with, found the way the manifest says.

A folder may come from anyone, so its manifest never makes msn download an arbitrary URL:
see :func:`manifest_download`. Nor does its word make a file Meta's release: only what verify
observes in its own run does (:func:`observed_release`).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from msn_cli import __version__
from msn_cli.conversion.provenance import HEADS, Provenance
from msn_cli.errors import CheckpointError, MsnError
from msn_cli.original.checkpoint import Checkpoint, Encoder, load_checkpoint
from msn_cli.original.variants import VARIANTS, Variant
from msn_cli.util.hashing import HashFn, sha256_file
from msn_cli.verify.context import VerifyOptions, could_not_run
from msn_cli.verify.report import SourceReport, Versions

if TYPE_CHECKING:
    from msn_cli.hf.manifest import Manifest, SourceRecord
    from msn_cli.transfer.sources import ResolvedSource


def recorded_path(path: object, folder: Path) -> Path | None:
    """The manifest's source file, when it is still there.

    msn records an absolute path. A relative one is the path as typed, relative to the folder
    convert ran in; it is tried first, then the same file name beside the converted folder
    (where the demo and most users keep it). The source's sha256, checked next, catches a
    different file of the same name.
    """
    if not isinstance(path, str) or not path:
        return None
    recorded = Path(path).expanduser()
    candidates = [recorded]
    if not recorded.is_absolute():
        candidates.append(folder.absolute().parent / recorded.name)
    return next((c for c in candidates if c.is_file()), None)


def manifest_download(src: SourceRecord, options: VerifyOptions) -> ResolvedSource:
    """The source a manifest names by name or URL, fetched only when that is safe.

    A folder may come from anyone, so its word alone never makes msn download an arbitrary
    URL (an internal host, a huge file to fill the cache). The rule: a released checkpoint
    (its name, or its canonical URL) is fetched as the released name, from the user's own
    ``--base-url`` / ``MSN_BASE_URL`` or Meta's server; any other URL is used only when the
    cache already holds it (no network); else verify asks for ``--source URL``.
    """
    from msn_cli.transfer.cache import Cache
    from msn_cli.transfer.sources import ResolvedSource, public_url, resolve_source
    from msn_cli.util.safeio import strip_credentials

    canonical = public_url(src)  # a released name, or a released file's own URL
    if canonical:
        released = next(v.name for v in VARIANTS.values() if v.url() == canonical)
        return resolve_source(released, cache_dir=options.cache_dir, base_url=options.base_url,
                              progress=options.progress)
    url = src.get("url")
    if not isinstance(url, str) or "://" not in url:
        raise CheckpointError("the source checkpoint is gone, and the manifest names no released "
                              "variant or URL to fetch it again", hint="pass it with --source PATH|NAME|URL")
    shown = strip_credentials(url)
    cache = Cache(options.cache_dir)
    entry = cache.find_by_url(shown)
    if entry is not None and cache.intact(entry):
        return ResolvedSource(shown, "url", cache.file_path(entry.name), url=shown, sha256=entry.sha256)
    raise CheckpointError(
        f"the source checkpoint is gone and the manifest names {shown}, which is not a released "
        "checkpoint: msn does not download a URL on a folder's word",
        hint=f"if you trust that URL, pass it with --source {shown} (or a local copy with --source PATH)")


def _resolve(src: SourceRecord, folder: Path, options: VerifyOptions) -> ResolvedSource:
    """``--source``, else the file the manifest records, else its released name or URL."""
    from msn_cli.transfer.sources import resolve_source

    recorded = recorded_path(src.get("path"), folder)
    given = options.source if options.source is not None else \
        str(recorded) if recorded is not None else None
    if given is not None:
        return resolve_source(given, cache_dir=options.cache_dir, base_url=options.base_url,
                              progress=options.progress)
    if src.get("kind") in ("variant", "url") and (src.get("name") or src.get("url")):
        return manifest_download(src, options)
    where = src.get("path") or "(not recorded)"
    raise CheckpointError(f"the source checkpoint {where} is gone, and the manifest names no "
                          "released variant or URL to fetch it again",
                          hint="pass it with --source PATH|NAME|URL")


@dataclass(frozen=True)
class SourceFile:
    """The source checkpoint found (not read yet), and what the manifest records of it."""

    resolved: ResolvedSource
    encoder: Encoder
    record: SourceRecord


def find_source(manifest: Manifest | None, folder: Path,
                options: VerifyOptions) -> SourceFile | Checkpoint:
    """The source file to compare with, or the checkpoint ``options`` holds loaded already."""
    if options.checkpoint is not None:
        return options.checkpoint
    src: SourceRecord = (manifest.get("source") if manifest else None) or {}
    enc = options.encoder or src.get("encoder") or "target"
    if enc not in ("target", "online"):
        raise could_not_run(f"unknown encoder '{enc}' in the manifest")
    return SourceFile(_resolve(src, folder, options), "online" if enc == "online" else "target", src)


def observed_release(resolved: ResolvedSource | None, sha256: str | None,
                     cache_dir: str | os.PathLike[str] | None = None) -> tuple[Variant, str] | None:
    """The released checkpoint the source is, as msn observed it in this run, and how (a key
    of :data:`msn_cli.hf.manifest.RELEASE_EVIDENCE`); None when nothing msn did shows it.

    Fetched by its released name or from its canonical URL; or a file whose ``sha256`` (as
    computed in this run) is what the cache index recorded when msn fetched a release by its
    name. Meta publishes no checksums, and a file's name, its place or a manifest's word are
    anyone's to choose, so nothing else counts.
    """
    from msn_cli.transfer.sources import public_url

    if resolved is None:
        return None
    if resolved.kind == "variant" and resolved.name in VARIANTS:
        return VARIANTS[resolved.name], "name"
    canonical = public_url({"url": resolved.url}) if resolved.kind == "url" else None
    if canonical is not None:
        return next(v for v in VARIANTS.values() if v.url() == canonical), "url"
    if sha256 is None:
        return None
    from msn_cli.transfer.cache import Cache

    try:
        entries = Cache(cache_dir).entries()
    except (MsnError, OSError):  # no cache, or a damaged index: nothing is known from it
        return None
    fetched = next((e.variant for e in entries if e.variant in VARIANTS and e.sha256 == sha256), None)
    return (VARIANTS[fetched], "sha256") if fetched is not None else None


def load_source(found: SourceFile | Checkpoint, options: VerifyOptions,
                hash_file: HashFn = sha256_file) -> tuple[Checkpoint, SourceReport]:
    """The source checkpoint, and what verify reports of it; ``mismatch`` says when it is not
    the file the manifest records (the files check then fails: never a recorded pass);
    ``released``, the release msn observed it to be (:func:`observed_release`)."""
    if isinstance(found, Checkpoint):
        given: SourceReport = {"path": str(found.path), "kind": "given", "encoder": found.encoder,
                               "given": True}
        resolved = options.resolved
        _note_release(given, observed_release(resolved, resolved.sha256 if resolved else None,
                                              options.cache_dir))
        return found, given
    resolved, src = found.resolved, found.record
    ckpt = load_checkpoint(resolved.path, found.encoder)
    want_sha = src.get("sha256")
    have = None
    if want_sha and not (src.get("size") and ckpt.file_size != src.get("size")):
        have = resolved.sha256 or hash_file(resolved.path, options.progress, "hashing source")
    info: SourceReport = {"path": str(resolved.path), "kind": resolved.kind,
                          "encoder": found.encoder, "given": options.source is not None}
    if want_sha and have != want_sha:  # never a pass: the card would vouch for want_sha
        info["mismatch"] = (f"the source {resolved.path} is not the file this folder was converted "
                            f"from (the manifest records {src.get('size')} bytes, sha256 "
                            f"{want_sha[:12]}...)")
    else:
        _note_release(info, observed_release(resolved, have, options.cache_dir))
    return ckpt, info


def _note_release(info: SourceReport, seen: tuple[Variant, str] | None) -> None:
    if seen is not None:
        info["released"], info["evidence"] = seen[0].name, seen[1]


def recorded_heads(manifest: Manifest | None) -> Provenance | None:
    """The heads a manifest records with their origin (None for manifests without one)."""
    for record in (manifest.get("provenance") if manifest else None) or []:
        p = Provenance.from_dict(record)
        if p is not None and p.key == HEADS:
            return p
    return None


def import_versions() -> Versions:
    """The versions verify runs under; the first import of torch and transformers (with
    Ctrl-C held back until both are in, see :mod:`msn_cli.util.interrupts`)."""
    from msn_cli.original.checkpoint import import_torch
    from msn_cli.util.interrupts import deferred

    torch = import_torch()
    with deferred():
        import transformers
        from transformers import ViTMSNModel  # noqa: F401  (the model class's own imports)

    return {"msn": __version__, "transformers": transformers.__version__,
            "torch": str(torch.__version__)}


def import_in_background() -> None:
    """Begin importing transformers' ``ViTMSNModel`` in a daemon thread.

    ``convert`` calls it before writing the weights: the import (about 2 s, verify's largest
    fixed cost) then overlaps the writing and the read-back, which leave the interpreter mostly
    free (file I/O, hashing, torch kernels): at ViT-L/16, convert with verify takes 0.5 s less
    (docs/benchmarks.md). :func:`import_versions` then finds the module imported, or waits on
    the import lock for the rest. An error is left for that import to raise.
    """
    import threading

    def run() -> None:
        with contextlib.suppress(BaseException):
            from transformers import ViTMSNModel  # noqa: F401

    threading.Thread(target=run, name="msn-import-transformers", daemon=True).start()
