"""What every verify check is handed: the options, and one :class:`VerifyContext`.

The context holds what verify found before the checks ran (the folder, its manifest, the
source checkpoint and the architecture read from it) and what a check finds for the ones after
it: ``files`` the weights' dtype and whether the folder may be loaded, ``loading`` the
converted model, ``parity`` the reference network and the per-layer figures.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

from msn_cli.errors import EXIT_BAD_INPUT, MsnError
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util.hashing import HashFn, sha256_file
from msn_cli.verify.report import InputRecord, LayerStat, SourceReport, Tolerance, tolerance_for

if TYPE_CHECKING:
    from msn_cli.conversion.provenance import Known
    from msn_cli.hf.manifest import Manifest
    from msn_cli.original.architecture import Architecture
    from msn_cli.original.checkpoint import Checkpoint, Inferred
    from msn_cli.original.variants import Variant
    from msn_cli.transfer.sources import ResolvedSource


@dataclass(frozen=True)
class VerifyOptions:
    """What :func:`msn_cli.verify.verify_folder` is asked for, beyond the folder.

    ``checkpoint``: the source, already loaded (``convert`` passes its own, with ``resolved``,
    how it found it: what tells a released checkpoint, never the manifest's word); else
    ``source`` (a path, released name, cache entry or URL), else the one the manifest records.
    ``num_heads`` / ``config`` / ``known``: the values the weights do not hold (see
    :func:`msn_cli.verify.verify_folder`). ``known_hashes``: sha256 values of the folder's
    files, computed by the caller from the bytes read back from disk a moment ago (compared,
    not read again). ``preprocessing_effect``: also measure the effect of each photo's pixel
    differences on the converted model's output.
    """

    checkpoint: Checkpoint | None = None
    resolved: ResolvedSource | None = None
    source: str | None = None
    image: str | os.PathLike[str] | None = None
    against: str | None = None
    cache_dir: str | os.PathLike[str] | None = None
    base_url: str | None = None
    encoder: str | None = None
    num_heads: int | None = None
    config: str | os.PathLike[str] | None = None
    known: Known | None = None
    known_hashes: Mapping[str, str] | None = None
    progress: ProgressFn = no_progress
    preprocessing_effect: bool = False


class VerifyKeywords(TypedDict, total=False):
    """:class:`VerifyOptions`' fields, for calls that pass them as keywords."""

    checkpoint: Checkpoint | None
    resolved: ResolvedSource | None
    source: str | None
    image: str | os.PathLike[str] | None
    against: str | None
    cache_dir: str | os.PathLike[str] | None
    base_url: str | None
    encoder: str | None
    num_heads: int | None
    config: str | os.PathLike[str] | None
    known: Known | None
    known_hashes: Mapping[str, str] | None
    progress: ProgressFn
    preprocessing_effect: bool


@dataclass
class VerifyContext:
    """One verify run, handed to each check in turn."""

    folder: Path
    options: VerifyOptions
    manifest: Manifest | None
    checkpoint: Checkpoint
    source: SourceReport
    inferred: Inferred
    """The architecture from the source's shapes, and where the values it does not hold came
    from."""
    variant: Variant | None
    """The released variant the folder is (by the manifest, else by the source's shapes)."""
    image: Path | None
    against: Path | None
    """The ``--against`` folder (fetched from the Hub when a repo id was given)."""
    notes: list[str] = field(default_factory=list)
    hash_file: HashFn = sha256_file
    """How the files check hashes the folder's files (begun in a thread before the imports)."""
    # -- found by the checks, for the ones after them --------------------------------------
    dtype: str = "float32"
    """files: the weights' dtype (else the manifest's; float32 if neither has one)."""
    unloadable: str | None = None
    """files: why the folder must not be given to ``from_pretrained`` (None: it may)."""
    model: Any = None
    """loading: the converted ``ViTMSNModel`` (None when it did not load)."""
    reference: Any = None
    """parity: the independent reference network on the source's tensors."""
    layers: list[LayerStat] = field(default_factory=list)
    inputs: list[InputRecord] = field(default_factory=list)

    @property
    def arch(self) -> Architecture:
        return self.inferred.arch

    @property
    def tolerance(self) -> Tolerance:
        return tolerance_for(self.dtype)

    @property
    def progress(self) -> ProgressFn:
        return self.options.progress


def could_not_run(message: str, hint: str | None = None) -> MsnError:
    """The error for a verify that cannot run at all (exit 3), as opposed to a failed check."""
    return MsnError(message, hint, exit_code=EXIT_BAD_INPUT)


def first_line(e: BaseException, limit: int = 200) -> str:
    """``Type: first line of the message``, cut to ``limit`` characters."""
    return f"{type(e).__name__}: " + ((str(e).strip().splitlines() or [""])[0])[:limit]


def show_value(v: object) -> str:
    """A configuration value as a message shows it: ``1e-06``, ``"gelu"``, ``True``."""
    if isinstance(v, float):
        return f"{v:g}"
    return json.dumps(v) if isinstance(v, str) else str(v)
