"""Strings from a file, a folder or a manifest never reach the terminal as commands.

A run folder's file name or a manifest's source path is written by whoever made the folder; an
``ESC ] 0;...`` in it would retitle the window, ``ESC [2J`` clear the screen, and OSC 52 write
the clipboard on some terminals. Every C0/C1 control character in what msn shows is written as
a visible escape (``\\x1b``); ``--json`` escapes them as JSON does.
"""

from __future__ import annotations

import json
import shutil

import pytest

from msn_cli.dev.synth import write_run_folder
from tests.test_conventions import _in_a_terminal
from tests.test_screens import Screen

TITLE = "\x1b]0;PWNED\x07"
CLEAR = "\x1b[2J"
CLIPBOARD = "\x1b]52;c;cm0gLXJmIH4=\x07"
CSI_C1 = "\x9b2J"  # the one-byte C1 form of ESC [
HOSTILE = TITLE + CLEAR + CLIPBOARD + CSI_C1
RAW = [s.encode() for s in (TITLE, CLEAR, CLIPBOARD, "\x1b]0;", "\x1b]52;", CSI_C1)]


def _no_raw_sequences(output: bytes) -> None:
    for raw in RAW:
        assert raw not in output, (raw, output[-800:])


@pytest.fixture
def hostile_run(tmp_path):
    run = write_run_folder(tmp_path / "run", saved=())
    shutil.copy(run / "msn-experiment-1-latest.pth.tar", run / f"{HOSTILE}-ep5.pth.tar")
    return run


def test_a_run_folder_file_name_is_shown_escaped(cli, hostile_run):
    r = cli("inspect", hostile_run)
    assert r.code == 0, r.stderr
    _no_raw_sequences((r.stdout + r.stderr).encode())
    assert "\\x1b]0;PWNED" in r.stdout and "\\x1b[2J" in r.stdout  # shown, as escapes
    # --json keeps the name whole, escaped as JSON escapes it
    r = cli("inspect", hostile_run, "--json")
    _no_raw_sequences(r.stdout.encode())
    assert any(HOSTILE in c["file"] for c in json.loads(r.stdout)["checkpoints"])


@pytest.mark.parametrize("columns", [80])
def test_a_run_folder_file_name_on_a_terminal(hostile_run, columns):
    code, raw = _in_a_terminal(["inspect", str(hostile_run)], {}, size=(columns, 60))
    assert code == 0, raw[-800:]
    _no_raw_sequences(raw)
    # shown, as text (folded to the width)
    assert "\\x1b]0;PWNED" in "".join(Screen(80, raw).text.split()), Screen(80, raw).text


def test_a_manifest_source_path_is_shown_escaped(cli, tmp_path, tiny_ckpt):
    out = tmp_path / "out"
    assert cli("convert", tiny_ckpt, out, "--no-verify", "-q").code == 0
    manifest = out / "msn_manifest.json"
    m = json.loads(manifest.read_text())
    m["source"]["path"] = m["source"]["spec"] = str(tmp_path / f"{HOSTILE}.pth.tar")
    manifest.write_text(json.dumps(m))
    r = cli("verify", out)
    assert r.code != 0
    assert "Error:" in r.stderr and "\\x1b]52;" in r.stderr, r.stderr
    _no_raw_sequences((r.stdout + r.stderr).encode())
    code, raw = _in_a_terminal(["verify", str(out)], {}, size=(80, 60))
    assert code == r.code
    _no_raw_sequences(raw)
    # shown, as text (folded to the width)
    assert "\\x1b]0;PWNED" in "".join(Screen(80, raw).text.split()), Screen(80, raw).text


def test_every_way_to_the_terminal_escapes(capsys):
    """Messages, table cells and titles, styled text, plain result lines: each escapes."""
    from rich.table import Table

    from msn_cli.cli.term import Term, styled

    term = Term()
    term.info(f"a message {HOSTILE}")
    term.warn(f"a warning {HOSTILE}")
    term.error(f"an error {HOSTILE}", hint=f"a hint {HOSTILE}")
    t = Table(title=f"title {HOSTILE}")
    t.add_column(f"header {HOSTILE}")
    t.add_row(f"cell {HOSTILE}")
    t.add_row(styled(f"styled {HOSTILE}", "red"))
    term.data(t)
    term.data(styled(f"text {HOSTILE}", "bold"))
    term.line(f"line {HOSTILE}")
    out, err = capsys.readouterr()
    _no_raw_sequences((out + err).encode())
    shown = " ".join((out + err).split())
    for what in ("a message", "a warning", "an error", "a hint", "title", "header", "cell",
                 "styled", "text", "line"):
        assert f"{what} \\x1b]0;PWNED" in shown, (what, shown)
