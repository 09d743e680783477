"""Manifest values made safe for the model card, the commit description and the published manifest.

A converted folder may come from someone else, and ``msn verify`` re-establishes only the
verify record, not the rest of the manifest: ``created``, ``msn_version``, file names, provenance
texts, a check's detail, all are whatever the folder's maker wrote. The card is Markdown that the
Hub renders with HTML allowed, so a value could add a link, an image, a heading ("## Security
notice") or break out of a table. Two rules, applied to every value that reaches the card:

- a value with a type is checked against it (:func:`timestamp`, :func:`version`,
  :func:`sha256`) and shown as ``unknown`` when it is not one: a forged date is not repeated;
- any other text is escaped (:func:`md_text`): HTML's ``< > & "`` become entities, every
  character Markdown reads as markup gets a backslash, line breaks and control characters
  become spaces, bare URLs and e-mail addresses are kept from turning into links, and the
  length is capped. :func:`md_code` keeps a plain file name in a code span.

The card's front matter is built from msn's own constants and the publisher's own ``--card``
file only: nothing from the manifest reaches it.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

MAX_TEXT = 500
"""Characters of one manifest string shown in the card (a check's detail is about 200)."""

UNKNOWN = "unknown"

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_HTML = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;"}
# Markup that can start anywhere in a line (emphasis, code, links, tables, strikethrough, math,
# escapes) or at its start (a heading). ``(`` and ``!`` are inert once ``[`` is escaped; ``_``
# inside a word (``deit_small``) is no emphasis in CommonMark, so only one at a word's edge is.
_MARKUP = re.compile(r"([\\`*{}\[\]#|~$]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")
# GitHub-flavoured Markdown links bare URLs, www. names and e-mail addresses on its own.
_AUTOLINK = ((re.compile(r"://"), r":\/\/"), (re.compile(r"(?i)\bwww\."), lambda m: m.group()[:3] + "\\."),
             (re.compile("@"), r"\@"))
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}")
_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?"
                        r"(?:Z|[+-]\d{2}:\d{2})?)?")
_VERSION = re.compile(r"[0-9]+(?:\.[0-9]+){0,5}(?:[.+-]?[A-Za-z0-9]+){0,6}")
_SHA256 = re.compile(r"[0-9a-f]{64}")


def md_text(value: object, limit: int = MAX_TEXT) -> str:
    """``value`` as inert Markdown text: shown as written, read as no markup and no HTML."""
    text = _CONTROL.sub(" ", str(value)).strip()
    if len(text) > limit:
        text = text[:limit].rstrip() + "…"
    text = "".join(_HTML.get(c, c) for c in text)
    text = _MARKUP.sub(lambda m: "\\" + m.group(), text)
    for pattern, replacement in _AUTOLINK:
        text = pattern.sub(replacement, text)
    return text


def md_code(value: object) -> str:
    """A file or key name: in a code span when it is plain (letters, digits, ``._/+-``),
    else as escaped text (a backtick would end the span, and the span would show ``&lt;``)."""
    text = str(value)
    return f"`{text}`" if _PLAIN_NAME.fullmatch(text) else md_text(text)


def timestamp(value: object) -> str | None:
    """``value`` if it is an ISO 8601 date or date and time (what convert and verify write)."""
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        return None
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:  # 2026-13-45
        return None
    return value


def version(value: object) -> str | None:
    """``value`` if it is a release number such as ``0.4.1``, ``4.57.0.dev0`` or ``2.5.1+cpu``."""
    if isinstance(value, str) and value.isascii() and len(value) <= 64 and _VERSION.fullmatch(value):
        return value
    return None


def sha256(value: object) -> str | None:
    """``value`` if it is a sha256 in lower-case hex."""
    return value if isinstance(value, str) and _SHA256.fullmatch(value) else None


def html_safe_json(data: Any) -> bytes:
    """``data`` as indented JSON whose bytes hold no ``<``, ``>`` or ``&``: inside strings they
    are written ``\\u003c`` and so on, which any JSON reader reads back as the same text, while
    nothing that shows the file's bytes can take them for HTML. (Non-ASCII is escaped too.)"""
    text = json.dumps(data, indent=2)
    for ch in "<>&":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return (text + "\n").encode()
