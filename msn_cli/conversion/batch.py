"""Batch conversion: every released checkpoint into OUTDIR/<name>, past individual failures."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from msn_cli.errors import MsnError
from msn_cli.original.variants import VARIANTS
from msn_cli.progress import ProgressFn, no_progress


@dataclass
class BatchItem:
    name: str
    out: Path
    ok: bool
    exit_code: int
    message: str
    result: dict[str, Any] | None = None
    skipped: bool = False
    """Converted by an earlier run (OUTDIR/<name> holds it): left as it is."""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "out": str(self.out), "ok": self.ok, "exit_code": self.exit_code,
                "message": self.message, "result": self.result, "skipped": self.skipped}


def already_converted(out: Path, name: str, options: dict[str, Any]) -> str | None:
    """Why ``out`` is a finished conversion of the released checkpoint ``name`` with these
    options, in words; None when it is not (absent, another source, another dtype or
    preprocessing, a failed verify, not msn's). A rerun of ``convert all`` leaves such a
    folder as it is, so that it only redoes what failed."""
    from msn_cli.hf.manifest import read_manifest

    if not out.is_dir():
        return None
    try:
        manifest = read_manifest(out)
    except MsnError:
        return None
    source = manifest.get("source") or {}
    verify = manifest.get("verify")
    wanted_dtype = options.get("dtype")
    wanted_pre = options.get("preprocessing")
    if source.get("kind") != "variant" or source.get("name") != name:
        return None
    if wanted_dtype is not None and manifest.get("dtype") != wanted_dtype:
        return None
    if wanted_pre is not None and (manifest.get("preprocessing") or {}).get("name") != wanted_pre:
        return None
    if verify is None:
        return "already converted (not verified)" if options.get("verify") is False else None
    return "already converted and verified" if verify.get("passed") is True else None


def convert_all(
    outdir: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    base_url: str | None = None,
    progress: ProgressFn = no_progress,
    notify: Callable[[str], None] | None = None,
    on_item: Callable[[BatchItem], None] | None = None,
    **convert_options: Any,
) -> list[BatchItem]:
    """Download (through the cache) and convert each released checkpoint; never stop early.

    A name whose ``OUTDIR/<name>`` already holds its finished conversion (see
    :func:`already_converted`) is skipped, unless ``force``. Every other checkpoint not in the
    cache is fetched first, all at once within one budget of
    connections (:func:`msn_cli.transfer.download.fetch_many`: ``progress`` shows each file and the
    total); then each is converted in turn. A failure of one checkpoint (network, bad file,
    failed verify) is recorded in its :class:`BatchItem` and the next one is converted.
    ``notify`` receives the downloads' one-line messages (resuming, retrying, splitting).
    """
    from msn_cli.transfer.download import fetch_many
    from msn_cli.transfer.sources import is_url

    outdir = Path(outdir)
    names = list(names or VARIANTS)
    finished = {} if convert_options.get("force") else {
        n: why for n in names if (why := already_converted(outdir / n, n, convert_options))}
    remote = [n for n in names if n not in finished  # a path is read where it is
              and (is_url(n) or not Path(n).expanduser().exists())]
    fetched = dict(zip(remote, fetch_many(remote, cache_dir=cache_dir, base_url=base_url,
                                          progress=progress, notify=notify), strict=True))
    items: list[BatchItem] = []
    for name in names:
        out = outdir / name
        if name in finished:
            item = BatchItem(name, out, True, 0, finished[name], skipped=True)
        else:
            item = _convert_one(name, out, fetched.get(name), cache_dir=cache_dir,
                                base_url=base_url, progress=progress, options=convert_options)
        items.append(item)
        if on_item:
            on_item(item)
    return items


def _convert_one(name: str, out: Path, got: object, *,
                 cache_dir: str | os.PathLike[str] | None, base_url: str | None,
                 progress: ProgressFn, options: dict[str, Any]) -> BatchItem:
    """Convert one checkpoint of the batch (``got``: what the joint fetch gave for it); a
    failure becomes the item's message and exit code."""
    from msn_cli.conversion.convert import convert
    from msn_cli.transfer.sources import resolve_source

    def scoped(stage: str, done: int, total: int | None) -> None:
        progress(f"{name}: {stage}", done, total)

    try:
        if isinstance(got, MsnError):
            raise got
        src = resolve_source(name, cache_dir=cache_dir, base_url=base_url, progress=scoped)
        res = convert(src, out, progress=scoped, **options)
        ok = res.verify is None or bool(res.verify.get("passed"))
        summary = (res.verify or {}).get("summary", "converted (not verified)")
        return BatchItem(name, out, ok, 0 if ok else 1,
                         summary if ok else f"verify failed: {summary}", res.to_dict())
    except MsnError as e:
        message = e.message
        if got is e and "download" not in message.lower():
            message = f"download failed: {message}"
        return BatchItem(name, out, False, e.exit_code, message)
