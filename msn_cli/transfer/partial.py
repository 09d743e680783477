"""``partial/<name>.json``: the note beside an interrupted transfer, with its one reader and writer.

The note says where the partial file's bytes came from, so that the next run resumes only a
transfer of the same file: the URL (never its credentials), the validators the server gave
(``ETag``, ``Last-Modified``), the expected size and, for a transfer split over several
connections, the byte ranges already written. The cache is shared, so a note is read as
untrusted input: anything msn would not have written is a :class:`DamagedNote`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from msn_cli.util.safeio import read_json, replace_file, strip_credentials

MAX_SEGMENTS = 1_000_000


@dataclass(frozen=True)
class PartialNote:
    """Where an interrupted transfer came from (no credentials) and what it has."""

    url: str
    etag: str | None = None
    last_modified: str | None = None
    total: int | None = None
    started_at: str | None = None
    segments: tuple[tuple[int, int], ...] | None = None
    """A segmented transfer: the byte ranges ``[start, end)`` already written, in order and
    apart; the partial file is then preallocated to ``total`` (None: one stream, whose partial
    file holds the first bytes only)."""

    @property
    def have(self) -> int | None:
        """Bytes a segmented transfer has written (None for one stream: the file's size)."""
        return None if self.segments is None else sum(b - a for a, b in self.segments)


class DamagedNote(ValueError):
    """A partial note that is not what msn writes: its transfer is started over."""


def write_partial_note(path: Path, note: PartialNote) -> None:
    """Write ``note`` through a fresh file renamed over ``path``; the URL loses its credentials."""
    record: dict[str, object] = {
        "url": strip_credentials(note.url), "etag": note.etag, "last_modified": note.last_modified,
        "total": note.total, "started_at": note.started_at}
    if note.segments is not None:
        record["segments"] = [list(s) for s in note.segments]
    replace_file(path, (json.dumps(record, indent=2) + "\n").encode())


def read_partial_note(path: Path) -> PartialNote | None:
    """The note at ``path``; None when there is none.

    Anything msn would not have written (not a regular file, not JSON, a ``url`` that is not a
    string, a ``total`` that is not a whole number, segments out of order ...) is a
    :class:`DamagedNote`.
    """
    try:
        record = read_json(path, follow_links=False)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise DamagedNote(str(e)) from None
    if not isinstance(record, dict):
        raise DamagedNote("it is not an object")
    url, total = record.get("url"), record.get("total")
    if not isinstance(url, str) or not url:
        raise DamagedNote("its url is not a string")
    if total is not None and not _is_count(total):
        raise DamagedNote("its total is not a whole number of bytes")
    texts = [_text(record, key) for key in ("etag", "last_modified", "started_at")]
    return PartialNote(strip_credentials(url), texts[0], texts[1], total, texts[2],
                       _segments(record.get("segments"), total))


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _text(record: dict[str, object], key: str) -> str | None:
    value = record.get(key)
    if value is not None and not isinstance(value, str):
        raise DamagedNote(f"its {key} is not a string")
    return value


def _segments(raw: object, total: int | None) -> tuple[tuple[int, int], ...] | None:
    """A note's finished ranges: ``[start, end]`` pairs of whole numbers inside ``total``,
    ascending and apart."""
    if raw is None:
        return None
    if total is None:
        raise DamagedNote("it lists segments without a total")
    if not isinstance(raw, list) or len(raw) > MAX_SEGMENTS:
        raise DamagedNote("its segments are not a list of ranges")
    out: list[tuple[int, int]] = []
    last = 0
    for item in raw:
        if not (isinstance(item, list) and len(item) == 2 and all(_is_whole(x) for x in item)):
            raise DamagedNote("a segment is not a pair of whole numbers")
        a, b = item
        if not last <= a < b <= total or (out and a == last):
            raise DamagedNote("its segments are not ascending, apart and inside the file")
        out.append((a, b))
        last = b
    return tuple(out)


def _is_whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
