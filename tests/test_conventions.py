"""Conventions every command keeps, checked over the whole command tree (new commands included):

- ``-h``/``--help`` everywhere, and examples in the help of every command that does something;
- ``--json``, ``-q/--quiet`` and ``-v/--verbose`` on every command that reports;
- data on stdout (``--json`` output is JSON and nothing else), messages and progress on stderr;
  ``-q`` leaves stderr empty on success; a failure is ``Error: ...`` (and a hint) on stderr,
  nothing on stdout, no traceback;
- ``NO_COLOR`` respected on a real terminal (a pseudo-terminal here).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import typer

from msn_cli.cli.app import app
from msn_cli.dev.synth import TINY, write_checkpoint
from tests.http_server import FileServer

# Commands where a convention does not apply, with the reason. Keep this empty unless it truly
# cannot apply (a group only dispatches to its subcommands and reports nothing itself).
NOT_APPLICABLE: dict[str, str] = {}

# Commands that take no input that could be wrong, so have no failing invocation, with the reason.
CANNOT_FAIL: dict[str, str] = {"version": "it reports what is installed and reads no input"}

# A simple failing invocation of every command that reports (path -> arguments after it);
# {damaged_cache} is a cache folder whose index is not JSON.
FAILING: dict[str, list[str]] = {
    "download": ["no-such-checkpoint-name"],
    "inspect": ["/no/such/file.pth.tar"],
    "export": ["/no/such/file.pth.tar", "/no/such/out.pth.tar"],
    "convert": ["/no/such/file.pth.tar", "/no/such/out"],
    "verify": ["/no/such/folder"],
    "fewshot": ["/no/such/model", "--train", "/no/such/train", "--val", "/no/such/val"],
    "push": ["/no/such/folder", "someone/repo"],
    "cache ls": ["--cache-dir", "{damaged_cache}"],
    "cache rm": ["no-such-entry", "--yes"],
    "cache check": ["--cache-dir", "{damaged_cache}"],  # a name not in the cache is a failed check (1)
}


def _tree(cmd, path):
    yield path, cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        if not getattr(sub, "hidden", False):
            yield from _tree(sub, [*path, name])


ROOT = typer.main.get_command(app)
ALL = [(" ".join(p[1:]), c) for p, c in _tree(ROOT, ["msn"])]
LEAVES = [(name, c) for name, c in ALL if not getattr(c, "commands", None)]


def _opts(cmd) -> set[str]:
    return {o for p in cmd.params for o in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]}


def test_the_tree_is_what_we_think():
    names = {name for name, _ in LEAVES}
    assert {"download", "inspect", "convert", "verify", "push"} <= names
    assert set(FAILING) | set(CANNOT_FAIL) == names, \
        "add a failing invocation for every new command to FAILING"


@pytest.mark.parametrize("name", [n for n, _ in ALL], ids=lambda n: n or "msn")
def test_every_command_has_short_and_long_help(cli, name):
    for flag in ("-h", "--help"):
        r = cli(*name.split(), flag)
        assert r.code == 0, (name, flag, r.stderr)
        assert "Usage" in r.stdout and r.stderr == ""


@pytest.mark.parametrize("name", [n for n, _ in LEAVES])
def test_every_command_shows_examples_and_reporting_options(name):
    cmd = dict(LEAVES)[name]
    if name in NOT_APPLICABLE:
        pytest.skip(NOT_APPLICABLE[name])
    help_text = cmd.help or ""
    assert "Examples:" in help_text, f"msn {name}: no examples in the help"
    examples = help_text.split("Examples:", 1)[1]
    assert re.search(rf"^\s+(\S+=\S+ )?msn {re.escape(name)}\b", examples, re.M), \
        f"msn {name}: the examples do not run msn {name}"
    missing = {"--json", "-q", "--quiet", "-v", "--verbose"} - _opts(cmd)
    assert not missing, f"msn {name} lacks {sorted(missing)}"
    verbose = next(p for p in cmd.params if "--verbose" in getattr(p, "opts", []))
    assert getattr(verbose, "count", False), f"msn {name}: -v should count (-vv for more)"


@pytest.mark.parametrize("name", list(FAILING))
@pytest.mark.parametrize("mode", [[], ["--json"], ["-q"]], ids=["plain", "json", "quiet"])
def test_a_failure_is_one_error_on_stderr_and_nothing_on_stdout(cli, tmp_path, name, mode):
    damaged = tmp_path / "damaged-cache"
    damaged.mkdir()
    (damaged / "index.json").write_text("not json")
    args = [a.replace("{damaged_cache}", str(damaged)) for a in FAILING[name]]
    r = cli(*name.split(), *args, *mode)
    assert r.code not in (0, 70), (r.code, r.stderr)
    assert r.stdout == "", f"msn {name} {mode}: wrote to stdout on failure: {r.stdout[:200]}"
    lines = r.stderr.strip().splitlines()
    assert lines and lines[0].startswith("Error: "), r.stderr
    assert len(lines) <= 3 and "Traceback" not in r.stderr, r.stderr
    assert all(line.startswith(("Error: ", "Hint: ")) or not line.startswith(" ") for line in lines)


@pytest.fixture
def pipeline(tmp_path):
    """A local file server with a tiny checkpoint; a cache folder; a place for outputs."""
    ck = write_checkpoint(tmp_path / "src" / "tiny.pth.tar", TINY)
    with FileServer() as server:
        server.add("/msn/tiny.pth.tar", ck)
        yield {"url": server.url("/msn/tiny.pth.tar"), "ckpt": ck, "cache": tmp_path / "cache",
               "out": tmp_path / "out"}


def _images(root: Path) -> Path:
    """Two classes of two small photos-to-be (noise), the layout msn fewshot reads."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(2):
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(root / cls / f"{i}.png")
    return root


def test_data_on_stdout_messages_on_stderr_across_the_pipeline(cli, pipeline):
    url, ck, cache, out = pipeline["url"], pipeline["ckpt"], pipeline["cache"], pipeline["out"]
    steps = [
        ("download", [url, "--cache-dir", cache]),
        ("inspect", [ck]),
        ("convert", [ck, out, "--force"]),
        ("verify", [out, "--no-record"]),
        ("push", [out, "someone/vit-msn-tiny", "--dry-run"]),
        ("export", [out, out.parent / "resume.pth.tar", "--force"]),
        ("fewshot", [out, "--train", _images(out.parent / "train"), "--val",
                     _images(out.parent / "val"), "--shots", "1", "--splits", "1",
                     "--cache-dir", cache]),
        ("cache ls", ["--cache-dir", cache]),
        ("cache check", ["--cache-dir", cache]),
    ]
    assert {s for s, _ in steps} | {"cache rm"} == set(FAILING)
    for name, args in steps:
        r = cli(*name.split(), *args, "--json")
        assert r.code == 0, (name, r.stderr)
        json.loads(r.stdout)  # the whole of stdout is one JSON document
        assert "{" not in r.stderr.split("\n", 1)[0], f"msn {name} --json: JSON on stderr?"

        q = cli(*name.split(), *args, "-q")
        assert q.code == 0, (name, q.stderr)
        # -q: only errors and warnings (TINY's heads are ASSUMED), in every command
        assert all(line.startswith("Warning: ") for line in q.stderr.splitlines()), \
            f"msn {name} -q still says: {q.stderr[:300]}"

        v = cli(*name.split(), *args, "-vv")
        assert v.code == 0, (name, v.stderr)
        plain = cli(*name.split(), *args)
        assert plain.code == 0, (name, plain.stderr)
        if name != "verify":  # verify's -v adds rows to its report (stdout), by design
            assert len(v.stderr) >= len(plain.stderr), f"msn {name} -vv says less than without"
    entry = cli("cache", "ls", "--cache-dir", cache, "--json").json()["entries"][0]["name"]
    r = cli("cache", "rm", entry, "--yes", "--cache-dir", cache, "--json")
    assert r.code == 0, r.stderr
    json.loads(r.stdout)
    assert cli("cache", "ls", "--cache-dir", cache, "--json").json()["entries"] == []


def _in_a_terminal(args: list[str], env: dict[str, str], stdout_to_pipe: bool = False,
                   size: tuple[int, int] | None = None):
    """Run ``python -m msn_cli ARGS`` with stdin/stderr (and stdout) on a pseudo-terminal.

    ``size`` (columns, rows) gives the terminal a real window size, as a terminal emulator
    does, and unsets ``COLUMNS`` (which a shell does not export); without it ``COLUMNS=100``.
    Returns the exit code and what the terminal received (and stdout, when piped).
    """
    full = {k: v for k, v in os.environ.items()
            if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
                         "COLUMNS", "LINES")}
    full.update({"TERM": "xterm-256color", **({} if size else {"COLUMNS": "100"}), **env})
    master, slave = pty.openpty()
    if size:
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "msn_cli", *args], stdin=slave,
                            stdout=subprocess.PIPE if stdout_to_pipe else slave,
                            stderr=slave, env=full, close_fds=True)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    piped = proc.stdout.read() if proc.stdout else b""
    code = proc.wait(timeout=120)
    return (code, b"".join(chunks), piped) if stdout_to_pipe else (code, b"".join(chunks))


_SGR = re.compile(rb"\x1b\[([0-9;]*)m")
_COLOUR = {*range(30, 38), 38, 39, *range(40, 48), 48, 49, *range(90, 98), *range(100, 108)}


def _colours(output: bytes) -> set[int]:
    """The colour codes among the SGR escapes of ``output`` (bold, dim etc. are not colours)."""
    found: set[int] = set()
    for m in _SGR.finditer(output):
        params = [int(x) for x in m.group(1).split(b";") if x]
        i = 0
        while i < len(params):
            if params[i] in (38, 48):  # 38;5;N or 38;2;R;G;B
                found.add(params[i])
                i += 3 if i + 1 < len(params) and params[i + 1] == 5 else 5
                continue
            if params[i] in _COLOUR:
                found.add(params[i])
            i += 1
    return found


@pytest.mark.parametrize("args", [["inspect", "/no/such/file.pth.tar"], ["convert", "-h"]],
                         ids=["failing", "help"])
def test_no_colour_with_NO_COLOR_on_a_terminal(args):
    code, coloured = _in_a_terminal(args, {})
    assert _colours(coloured), "no colour even on a terminal: this test would prove nothing"
    code2, plain = _in_a_terminal(args, {"NO_COLOR": "1"})
    assert code2 == code
    assert not _colours(plain), f"colour despite NO_COLOR: {plain[:300]!r}"


@pytest.mark.parametrize("name", [n for n, _ in ALL], ids=lambda n: n or "msn")
def test_help_text_is_shown_in_full(cli, monkeypatch, name):
    """Rich markup must not eat text: a literal "[default: ...]" in a help string needs "\\[" ."""
    monkeypatch.setenv("COLUMNS", "1000")
    cmd = dict(ALL)[name]
    shown = " ".join(cli(*name.split(), "-h").stdout.split())
    for p in cmd.params:
        text = getattr(p, "help", None)
        if not text or getattr(p, "hidden", False):
            continue
        for bracketed in re.findall(r"\[[^\]]+\]", text.replace("\\[", "[")):
            assert " ".join(bracketed.split()) in shown, \
                f"msn {name} -h does not show {bracketed!r} (from the help of {p.name}): escape it as \\["


def test_progress_goes_to_the_terminal_on_stderr_and_stdout_stays_data(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    code, terminal, stdout = _in_a_terminal(["convert", str(tiny_ckpt), str(out), "--no-verify"],
                                            {"MSN_PROGRESS_DELAY": "0"}, stdout_to_pipe=True)
    assert code == 0, terminal[-500:]
    assert stdout.decode().splitlines() == [str(out.absolute())]  # the result, nothing else
    assert b"writing" in terminal and _colours(terminal), "no progress bar on an interactive stderr"


def test_a_command_failing_before_any_long_step_leaves_the_terminal_alone():
    code, terminal = _in_a_terminal(["inspect", "/no/such/file.pth.tar"], {})
    assert code == 3 and b"no such file" in terminal
    assert b"\x1b[?25l" not in terminal and b"\x1b[?25h" not in terminal  # cursor hide/show


def test_progress_counts_parity_passes_not_bytes(tiny_ckpt, tmp_path):
    out = tmp_path / "out"
    quick_bars = {"MSN_PROGRESS_DELAY": "0"}  # the tiny model's steps are sub-second
    code, terminal = _in_a_terminal(["convert", str(tiny_ckpt), str(out), "--no-verify"], quick_bars)
    assert code == 0 and b"\x1b[?25l" in terminal  # the progress display ran: it hid the cursor
    code, terminal = _in_a_terminal(["verify", str(out), "--no-record"], quick_bars)
    assert code == 0, terminal[-500:]
    plain = re.sub(rb"\x1b\[[0-9;?]*[A-Za-z]", b"", terminal)
    parity = [line for line in plain.replace(b"\r", b"\n").split(b"\n") if b"parity" in line]
    # the reference, then the converted model, at each of two sizes: the bar moves every pass
    assert parity and any(re.search(rb"\d/4 passes", line) for line in parity), parity[-3:]
    assert not any(b"bytes" in line for line in parity), parity[-3:]


GROUPS = [(name, c) for name, c in ALL if getattr(c, "commands", None)]


@pytest.mark.parametrize("name", [n for n, _ in GROUPS], ids=lambda n: n or "msn")
def test_every_group_shows_examples_of_its_own_commands(name):
    help_text = dict(GROUPS)[name].help or ""
    assert "Examples:" in help_text, f"msn {name}: no examples in the help"
    lines = [ln.split("#")[0].split() for ln in help_text.split("Examples:", 1)[1].splitlines()
             if ln.strip().startswith("msn ")]
    assert lines, f"msn {name}: the examples run nothing"
    leaves = dict(LEAVES)
    prefix = name.split()
    for words in lines:
        assert words[1:1 + len(prefix)] == prefix, f"msn {name}: example {' '.join(words)!r}"
        path = next((" ".join(words[1:k]) for k in range(len(words), 1, -1)
                     if " ".join(words[1:k]) in leaves), None)
        assert path, f"msn {name}: example {' '.join(words)!r} runs no command"
