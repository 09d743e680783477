"""``verify``: prove that a converted folder computes what the original network computes.

The checks, declared once, in the order they run (:data:`CHECKS`); each is a function of one
:class:`~msn_cli.verify.context.VerifyContext` in its own module, whose docstring says what it
proves. Each passes, fails, or is skipped; a failed check is a result, never an exception --
exceptions mean verify could not run at all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from msn_cli.conversion.provenance import assumed_warning, run_context
from msn_cli.errors import FolderError
from msn_cli.hf.manifest import MANIFEST, listed_file, read_manifest
from msn_cli.original.checkpoint import infer_architecture
from msn_cli.original.variants import VARIANTS, match_variant
from msn_cli.util.fmt import utc_now
from msn_cli.util.hashing import BackgroundHashes
from msn_cli.verify import against, config, files, golden, image, loading, parity, preprocessing
from msn_cli.verify.context import VerifyContext, VerifyOptions, could_not_run
from msn_cli.verify.image_input import read_photo
from msn_cli.verify.report import CheckResult, VerifyReport
from msn_cli.verify.source import SourceFile, find_source, import_versions, load_source, recorded_heads

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from msn_cli.hf.manifest import Manifest
    from msn_cli.original.architecture import Architecture
    from msn_cli.original.checkpoint import Checkpoint
    from msn_cli.verify.context import VerifyKeywords


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[VerifyContext], CheckResult]
    uses_models: bool = False
    """Runs the converted model or the reference: the last such check lets go of both."""


CHECKS: tuple[Check, ...] = (
    Check("files", files.run),
    Check("loading", loading.run),
    Check("config", config.run),
    Check("parity", parity.run, uses_models=True),
    Check("preprocessing", preprocessing.run, uses_models=True),
    Check("golden", golden.run, uses_models=True),
    Check("image", image.run, uses_models=True),
    Check("against", against.run),
)
"""Every check, in the order it runs and reports."""


def verify_folder(folder: str | os.PathLike[str], options: VerifyOptions | None = None,
                  **keywords: Unpack[VerifyKeywords]) -> VerifyReport:
    """Run every check of :data:`CHECKS` on ``folder``.

    ``options`` (or the same fields as keywords, see :class:`VerifyOptions`). The values the
    weights do not hold (the heads above all) are resolved independently of the folder's own
    ``config.json``: ``num_heads`` (the user) > the run's config (``config``, or the
    ``params-msn-train.yaml`` beside the source checkpoint) > the original model family by
    width > what the manifest records as given by the user or a run config > hidden size /
    64, reported as assumed. ``known``: all of that already resolved (``convert`` passes its
    own).

    A failed check is part of the returned report. Raises :class:`FolderError`,
    :class:`CheckpointError` (exit 3) or a network error (exit 4) when verify cannot run.
    """
    options = replace(options or VerifyOptions(), **keywords)
    start = time.perf_counter()
    found = _find(Path(folder), options)  # before the imports: what cannot run fails fast
    found_at = time.perf_counter()
    hashes = BackgroundHashes(_to_hash(found, options))  # on the second core, during the imports
    try:
        options.progress("importing torch and transformers", 0, None)  # a spinner if it is slow
        versions = import_versions()
        imported_at = time.perf_counter()
        ctx = _context(found, options, hashes)
        seconds = {"source": found_at - start + time.perf_counter() - imported_at,
                   "imports": imported_at - found_at}
        checks = []
        last_model_user = max(i for i, c in enumerate(CHECKS) if c.uses_models)
        for i, check in enumerate(CHECKS):
            began = time.perf_counter()
            options.progress(f"{check.name} check", 0, None)  # a spinner while it runs, if long
            result = check.run(ctx)
            result.seconds = time.perf_counter() - began
            checks.append(result)
            if i == last_model_user:
                ctx.model = ctx.reference = None
    finally:
        hashes.close()
    seconds["total"] = time.perf_counter() - start
    variant = ctx.variant.name if ctx.variant else _variant_name(ctx.arch)
    return VerifyReport(folder=ctx.folder, dtype=ctx.dtype, tolerance=ctx.tolerance, checks=checks,
                        layers=ctx.layers, inputs=ctx.inputs, source=ctx.source, variant=variant,
                        notes=ctx.notes, date=utc_now(), versions=versions,
                        provenance=list(ctx.inferred.provenance), seconds=seconds)


@dataclass(frozen=True)
class _Found:
    folder: Path
    manifest: Manifest | None
    image: Path | None
    against: Path | None
    source: SourceFile | Checkpoint


def _find(folder: Path, options: VerifyOptions) -> _Found:
    """The folder, its manifest, the ``--image`` and ``--against`` and the source file: what
    verify needs before anything is read (raising when verify cannot run)."""
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder" if folder.exists() else f"no such folder: {folder}",
                          hint="give the folder msn convert wrote")
    image = Path(options.image).expanduser() if options.image is not None else None
    if image is not None and not image.is_file():
        raise could_not_run(f"the image {image} is not a regular file" if image.exists()
                            else f"no such image: {image}")
    if image is not None:
        read_photo(image)  # a photo msn refuses fails here, before the imports (kept decoded)
    manifest: Manifest | None = None
    if (folder / MANIFEST).exists() or (options.checkpoint is None and options.source is None):
        try:
            manifest = read_manifest(folder)
        except OSError as e:
            raise FolderError(f"cannot read {folder / MANIFEST}: {e.strerror or e}") from e
    against_path = against.resolve_against(options.against, options.progress) \
        if options.against is not None else None
    return _Found(folder, manifest, image, against_path, find_source(manifest, folder, options))


def _to_hash(found: _Found, options: VerifyOptions) -> list[Path]:
    """The files verify will hash: the source when its recorded sha256 is to be checked, and
    the manifest's files that are regular files inside the folder (and not hashed already)."""
    paths = []
    src = found.source
    if isinstance(src, SourceFile) and src.record.get("sha256") and not src.resolved.sha256 \
            and src.record.get("size") in (None, src.resolved.path.stat().st_size):
        paths.append(src.resolved.path)
    listed = (found.manifest.get("files") if found.manifest else None) or {}
    for name in listed:
        if name not in (options.known_hashes or {}):
            path = listed_file(found.folder, name)
            if path is not None:
                paths.append(path)
    return paths


def _context(found: _Found, options: VerifyOptions, hashes: BackgroundHashes) -> VerifyContext:
    """The source read (and hashed), and the architecture its shapes give."""
    ckpt, source = load_source(found.source, options, hashes)
    known = options.known
    if known is None:
        known, _ = run_context(ckpt.path, options.config, options.num_heads,
                               recorded_heads(found.manifest))
    elif options.num_heads is not None:
        known = replace(known, num_heads=options.num_heads)
    inferred = infer_architecture(ckpt.state, known=known)
    summary = assumed_warning(inferred.provenance)
    notes = [*inferred.warnings, *([summary] if summary else [])]
    released = source.get("released")
    if released is not None and VARIANTS[released] is not inferred.variant:
        notes.append(f"the source was fetched as the released {released} but does not have its "
                     "shapes: it is not taken for Meta's release")
        source.pop("released")
        source.pop("evidence", None)
    # the variant is the source's shapes', never the manifest's word: it picks the golden
    # values, and only a release verify observed (``source["released"]``) is checked against them
    return VerifyContext(folder=found.folder, options=options, manifest=found.manifest,
                         checkpoint=ckpt, source=source, inferred=inferred,
                         variant=inferred.variant, image=found.image, against=found.against,
                         notes=notes, hash_file=hashes)


def _variant_name(arch: Architecture) -> str | None:
    v = match_variant(arch.hidden_size, arch.num_layers, arch.patch_size, arch.intermediate_size,
                      arch.image_size)
    return v.name if v else None
