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

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "out": str(self.out), "ok": self.ok, "exit_code": self.exit_code,
                "message": self.message, "result": self.result}


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

    Every checkpoint not in the cache is fetched first, all at once within one budget of
    connections (:func:`msn_cli.transfer.download.fetch_many`: ``progress`` shows each file and the
    total); then each is converted in turn. A failure of one checkpoint (network, bad file,
    failed verify) is recorded in its :class:`BatchItem` and the next one is converted.
    ``notify`` receives the downloads' one-line messages (resuming, retrying, splitting).
    """
    from msn_cli.conversion.convert import convert
    from msn_cli.transfer.download import fetch_many
    from msn_cli.transfer.sources import is_url, resolve_source

    outdir = Path(outdir)
    names = list(names or VARIANTS)
    remote = [n for n in names if is_url(n) or not Path(n).expanduser().exists()]  # a path is read
    fetched = dict(zip(remote, fetch_many(remote, cache_dir=cache_dir, base_url=base_url,
                                          progress=progress, notify=notify), strict=True))
    items: list[BatchItem] = []
    for name in names:
        out = outdir / name

        def scoped(stage: str, done: int, total: int | None, _name: str = name) -> None:
            progress(f"{_name}: {stage}", done, total)

        got = fetched.get(name)
        try:
            if isinstance(got, MsnError):
                raise got
            src = resolve_source(name, cache_dir=cache_dir, base_url=base_url, progress=scoped)
            res = convert(src, out, progress=scoped, **convert_options)
            ok = res.verify is None or bool(res.verify.get("passed"))
            summary = (res.verify or {}).get("summary", "converted (not verified)")
            item = BatchItem(name, out, ok, 0 if ok else 1,
                             summary if ok else f"verify failed: {summary}", res.to_dict())
        except MsnError as e:
            message = e.message
            if got is e and "download" not in message.lower():
                message = f"download failed: {message}"
            item = BatchItem(name, out, False, e.exit_code, message)
        items.append(item)
        if on_item:
            on_item(item)
    return items
