"""``msn_manifest.json``: what a converted folder is, where it came from, and how it checked out.

Written by ``convert`` into the folder; read by ``verify`` (to find the source and check the
files) and ``push`` (to refuse an unverified folder and to fill the model card).

:class:`Manifest` is the record, and its declarations are the check: a folder may come from
someone else, so :func:`read_manifest` checks every declared value against its type (and every
name of the file table against :func:`msn_cli.util.safeio.relative_parts`) before anyone uses
it, and anything malformed is a :class:`~msn_cli.errors.FolderError` (exit 3) naming the field.
:func:`write_manifest` is the one writer.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypedDict, Union

from msn_cli.errors import FolderError
from msn_cli.original.variants import VARIANTS, Variant
from msn_cli.progress import ProgressFn, no_progress
from msn_cli.util import safeio
from msn_cli.util.hashing import HashFn, sha256_file

MANIFEST = "msn_manifest.json"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
FORMAT_VERSION = 1


_DAMAGED = "the manifest is damaged; convert the checkpoint again"


# -- the record ----------------------------------------------------------------------------------
# Every field is optional and may be null (a manifest from an older msn lacks the newer ones);
# :func:`read_manifest` checks each present value against these declarations, so the types
# below are what a reader gets. Keys not declared here are kept and left unchecked.

class FileEntry(TypedDict):
    size: int
    sha256: str


class SourceRecord(TypedDict, total=False):
    spec: str | None
    kind: str | None
    path: str | None
    name: str | None
    url: str | None
    size: int | None
    sha256: str | None
    layout: str | None
    encoder: str | None
    encoder_key: str | None
    prefixed: bool | None
    epoch: float | None
    loss: float | None


class ArchitectureRecord(TypedDict, total=False):
    hidden_size: int | None
    num_layers: int | None
    num_heads: int | None
    intermediate_size: int | None
    patch_size: int | None
    image_size: int | None
    num_channels: int | None
    qkv_bias: bool | None
    num_patches: int | None
    head_dim: int | None


class ProvenanceRecord(TypedDict, total=False):
    key: str | None
    value: object
    origin: str | None
    assumed: bool | None
    source: str | None


class RunConfigRecord(TypedDict, total=False):
    file: str | None
    found: str | None
    model_name: str | None


class PreprocessingRecord(TypedDict, total=False):
    name: str | None
    processor: str | None
    summary: str | None
    why: str | None


class ToleranceRecord(TypedDict, total=False):
    atol: float | None
    cosine_min: float | None


class _NamedCheck(TypedDict):
    name: str


class CheckRecord(_NamedCheck, total=False):
    """One verify check; besides these, the check's own figures (numbers, lists, names)."""

    passed: bool | None
    detail: str | None
    max_abs_err: float | None


RELEASE_EVIDENCE = {
    "name": "msn fetched it by its released name",
    "url": "msn fetched it from Meta's URL",
    "sha256": "its sha256 is that of the released file msn fetched by name into its cache",
}
"""How verify can know that a source is Meta's released file (the verify record's
``source.evidence``), in words."""


class VerifiedSourceRecord(TypedDict, total=False):
    """What verify observed of the source: the released checkpoint it is (a name of
    :data:`msn_cli.original.variants.VARIANTS`, None when verify did not see it to be one) and
    how (``name``, ``url`` or ``sha256``). The model card claims Meta's release only on this."""

    released: str | None
    evidence: str | None


class VerifyRecord(TypedDict, total=False):
    passed: bool | None
    summary: str | None
    date: str | None
    msn_version: str | None
    transformers_version: str | None
    torch_version: str | None
    dtype: str | None
    tolerance: ToleranceRecord | None
    checks: list[CheckRecord] | None
    source: VerifiedSourceRecord | None
    provenance: list[ProvenanceRecord] | None
    assumed: list[str] | None


class _Tool(TypedDict):
    tool: str


class Manifest(_Tool, total=False):
    format_version: int | None
    msn_version: str | None
    created: str | None
    variant: str | None
    family: str | None
    dtype: str | None
    source_dtype: str | None
    tensors: int | None
    parameters: int | None
    dropped: list[str] | None
    assumed: list[str] | None
    source: SourceRecord | None
    architecture: ArchitectureRecord | None
    provenance: list[ProvenanceRecord] | None
    run_config: RunConfigRecord | None
    training: dict[str, object] | None
    preprocessing: PreprocessingRecord | None
    verify: VerifyRecord | None
    files: dict[str, FileEntry]
    """Every file of the folder but the manifest: name -> size and sha256."""


# -- checking a value against its declaration ----------------------------------------------------

_NONE = type(None)
_SHA256 = re.compile(r"[0-9a-f]{64}")


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true/false",
            int: "a number", float: "a number", _NONE: "null"}.get(type(value), type(value).__name__)


def _check(value: object, hint: Any, where: str) -> None:
    """Raise ``ValueError`` naming ``where`` unless ``value`` is what ``hint`` declares."""
    if typing.get_origin(hint) in (Union, types.UnionType):  # only ``X | None`` is declared
        if value is None:
            return
        hint = next(a for a in typing.get_args(hint) if a is not _NONE)
    if not _is(value, hint):
        raise ValueError(f"'{where}' is {_kind(value)}")
    for inner, inner_hint, inner_where in _inside(value, hint, where):
        _check(inner, inner_hint, inner_where)


def _is(value: object, hint: Any) -> bool:
    """Whether ``value`` is of the type ``hint`` names, its contents aside (a bool is not a number)."""
    if typing.is_typeddict(hint):
        return isinstance(value, dict)
    container = typing.get_origin(hint)
    if container is not None:  # list[...] or dict[...]
        return isinstance(value, container)
    if hint is object:
        return True
    if isinstance(value, bool):
        return hint is bool
    return isinstance(value, (int, float) if hint is float else hint)


def _inside(value: object, hint: Any, where: str) -> Iterator[tuple[object, Any, str]]:
    """The values a checked object or list holds, each with its declaration and its name."""
    if typing.is_typeddict(hint) and isinstance(value, dict):
        for key, sub in typing.get_type_hints(hint).items():
            if key in value or key in hint.__required_keys__:
                yield value.get(key), sub, f"{where}.{key}"
    elif isinstance(value, list):
        yield from ((item, typing.get_args(hint)[0], f"{where}[{i}]") for i, item in enumerate(value))
    elif isinstance(value, dict):
        yield from ((item, typing.get_args(hint)[1], f"{where}.{key}") for key, item in value.items())


def _check_files(files: object) -> None:
    if not isinstance(files, dict):
        raise ValueError(f"'files' is {_kind(files)}, not a table of files")
    for name, entry in files.items():
        try:
            safeio.relative_parts(name)
        except safeio.UnsafeInput as e:
            raise ValueError(f"its file table lists {e}") from None
        if name == MANIFEST:
            raise ValueError(f"its file table lists {MANIFEST} itself")
        if not isinstance(entry, dict):
            raise ValueError(f"'files.{name}' is {_kind(entry)}")
        size, sha = entry.get("size"), entry.get("sha256")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"'files.{name}.size' is not a byte count")
        if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
            raise ValueError(f"'files.{name}.sha256' is not a sha256")


def _validate(data: object) -> Manifest:
    """``data`` if it is an msn manifest whose every declared field has its type.

    Raises ``ValueError`` naming the first field that does not.
    """
    if not isinstance(data, dict) or data.get("tool") != "msn":
        raise ValueError("not an msn manifest")
    for key, hint in typing.get_type_hints(Manifest).items():
        if key != "files":  # checked apart: names inside the folder, sizes, real sha256s
            _check(data.get(key), hint, f"manifest.{key}")
    _check_files(data.get("files", {}))
    return typing.cast(Manifest, data)


# -- reading and writing -------------------------------------------------------------------------

def read_manifest(folder: Path) -> Manifest:
    """The folder's manifest, every declared field checked (see :class:`Manifest`)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        raise FolderError(f"{folder} is not a folder", hint="give the folder msn convert wrote")
    if not os.path.lexists(path):
        raise FolderError(f"{folder} has no {MANIFEST}: it was not written by msn convert",
                          hint="convert the checkpoint with msn convert (msn verify can check a "
                               "folder from elsewhere with --source)")
    try:
        data = safeio.read_json(path)
    except safeio.UnsafeInput as e:
        raise FolderError(f"{path} cannot be read: {e}", hint=_DAMAGED) from e
    except (ValueError, UnicodeDecodeError) as e:  # ValueError: also a number past the digit limit
        raise FolderError(f"{path} is not valid JSON ({e})", hint=_DAMAGED) from e
    except OSError as e:
        raise FolderError(f"cannot read {path}: {e.strerror or e}") from e
    try:
        return _validate(data)
    except ValueError as e:
        what = str(e).replace("'manifest.", "'")
        if what == "not an msn manifest":
            raise FolderError(f"{path} is not an msn manifest", hint=_DAMAGED) from None
        raise FolderError(f"{path} is malformed: {what}", hint=_DAMAGED) from None


def verified_release(manifest: Manifest) -> tuple[Variant, str] | None:
    """The released checkpoint a passed ``msn verify`` observed the source to be, and how, in
    words; None when it did not (the manifest's own ``source`` is never evidence)."""
    v = manifest.get("verify") or {}
    seen = v.get("source") or {}
    name, how = seen.get("released"), seen.get("evidence")
    if v.get("passed") is not True or name not in VARIANTS or how not in RELEASE_EVIDENCE:
        return None
    return VARIANTS[str(name)], RELEASE_EVIDENCE[str(how)]


def write_manifest(folder: Path, data: Manifest) -> None:
    """Replace the manifest through a fresh temporary file: a link planted under the
    manifest's name, or under any temporary name, is replaced, never written through."""
    safeio.replace_file(folder / MANIFEST, (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def regular_file_problem(path: Path) -> str | None:
    """None if ``path`` (links followed) is a regular file msn may read, else what it is:
    ``missing``, ``a named pipe, not a regular file`` ... (nothing is read, nothing blocks)."""
    try:
        with safeio.open_regular(path):
            return None
    except FileNotFoundError:
        return "missing"
    except safeio.UnsafeInput as e:
        return str(e).rsplit(" is ", 1)[-1]
    except OSError as e:
        return f"unreadable ({e.strerror or e})"


class FileRow(TypedDict, total=False):
    """One listed file as found: ``size`` and ``sha256`` as far as they were read, or ``problem``."""

    file: str
    expected_size: int
    expected_sha256: str
    size: int
    sha256: str
    ok: bool
    problem: str


def check_files(folder: Path, manifest: Manifest | None, progress: ProgressFn = no_progress,
                known_hashes: dict[str, str] | None = None,
                hash_file: HashFn = sha256_file) -> list[FileRow]:
    """Compare every file the manifest lists with the file in ``folder`` (size, then sha256).

    One row per file; its ``problem``: ``missing``, ``points outside the folder`` (a link
    leaving it), ``a named pipe, not a regular file`` (and the like), ``size N, the manifest
    says M`` or ``sha256 differs from the manifest``. Only regular files inside ``folder`` are
    read. ``known_hashes``: sha256 values the caller computed from the files' bytes as read
    back a moment ago (not read again). ``hash_file``: how the others are hashed.
    """
    listed = (manifest.get("files") if manifest else None) or {}
    return [_file_row(folder, name, want, progress, (known_hashes or {}).get(name), hash_file)
            for name, want in listed.items()]


def listed_file(folder: Path, name: str) -> Path | None:
    """The regular file inside ``folder`` that the manifest's ``name`` is (None: it is not one)."""
    try:
        p = safeio.inside(folder, name)
    except safeio.UnsafeInput:
        return None
    return p if regular_file_problem(p) is None else None


def _file_row(folder: Path, name: str, want: FileEntry, progress: ProgressFn,
              known_hash: str | None, hash_file: HashFn) -> FileRow:
    row = FileRow(file=name, expected_size=want["size"], expected_sha256=want["sha256"])

    def failed(problem: str) -> FileRow:
        row["ok"] = False
        row["problem"] = problem
        return row

    try:
        p = safeio.inside(folder, name)
    except safeio.UnsafeInput as e:
        outside = str(e).endswith("points outside the folder")
        return failed("points outside the folder" if outside else str(e))
    problem = regular_file_problem(p)
    if problem is not None:
        return failed(problem)
    row["size"] = size = p.stat().st_size
    if size != want["size"]:
        return failed(f"size {size}, the manifest says {want['size']}")
    if known_hash is None:
        try:
            known_hash = hash_file(p, progress, f"hashing {name}")
        except (OSError, safeio.UnsafeInput) as e:
            return failed(f"unreadable ({e})")
    row["sha256"] = known_hash
    row["ok"] = known_hash == want["sha256"]
    if not row["ok"]:
        row["problem"] = "sha256 differs from the manifest"
    return row
