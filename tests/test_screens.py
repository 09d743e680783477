"""What a person sees: the real commands in a real pseudo-terminal at 80 and 120 columns.

Each test runs ``python -m msn_cli`` on a pty with a real window size (the helper of
``test_conventions``), replays what the terminal received through a small VT100 screen, and
asserts on that screen: messages wrapped at words (never by the terminal in mid-word), key names
whole in the key-diff, no progress rows left over from quick steps, no control codes after an
error. Names that look like Rich markup (``odd[/b]``, ``odd [v2]``) are shown as they are.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from msn_cli.dev.synth import TINY, write_checkpoint
from tests.http_server import FileServer
from tests.test_conventions import _in_a_terminal

WIDTHS = [80, 120]
_CSI = re.compile(r"\x1b\[([?]?)([0-9;]*)([A-Za-z@])")
_OTHER_ESC = re.compile(r"\x1b(\][^\x07\x1b]*(\x07|\x1b\\)|[()][0-9A-Za-z]|[=>78])")
BAR = "━"


class Screen:
    """A minimal VT100 screen with unlimited scrollback: printable text with the terminal's
    own wrap at the last column, CR, LF, BS, and the CSI codes Rich writes (cursor up/down/
    left/right/column, erase in line/display, SGR, cursor show/hide)."""

    def __init__(self, columns: int, data: bytes):
        self.columns = columns
        self.rows: list[list[str]] = [[]]
        self.wrapped: set[int] = set()  # rows the terminal continued onto the next row itself
        self.y = self.x = 0
        self.pending_wrap = False
        self.cursor_visible = True
        self._feed(data.decode("utf-8", "replace"))

    @property
    def lines(self) -> list[str]:
        return ["".join(row).rstrip() for row in self.rows]

    @property
    def text(self) -> str:
        return "\n".join(self.lines).strip("\n")

    def _down(self, n: int = 1) -> None:
        self.y += n
        while len(self.rows) <= self.y:
            self.rows.append([])

    def _put(self, ch: str) -> None:
        if self.pending_wrap:
            self.wrapped.add(self.y)
            self.x, self.pending_wrap = 0, False
            self._down()
        row = self.rows[self.y]
        row.extend(" " * (self.x + 1 - len(row)))
        row[self.x] = ch
        self.x += 1
        if self.x >= self.columns:
            self.x, self.pending_wrap = self.columns - 1, True

    def _feed(self, text: str) -> None:
        i = 0
        while i < len(text):
            ch = text[i]
            if ch == "\x1b":
                m = _CSI.match(text, i)
                if m:
                    self._csi(m.group(1), m.group(2), m.group(3))
                    i = m.end()
                    continue
                m = _OTHER_ESC.match(text, i)
                i = m.end() if m else i + 1
                continue
            if ch == "\r":
                self.x, self.pending_wrap = 0, False
            elif ch == "\n":
                self.pending_wrap = False
                self._down()
            elif ch == "\b":
                self.x, self.pending_wrap = max(0, self.x - 1), False
            elif ch >= " ":
                self._put(ch)
            i += 1

    def _csi(self, private: str, params: str, final: str) -> None:
        nums = [int(p) for p in params.split(";") if p] or [0]
        n = max(nums[0], 1)
        if private == "?":
            if params == "25" and final in "hl":
                self.cursor_visible = final == "h"
            return
        self.pending_wrap = False
        row = self.rows[self.y]
        if final == "A":
            self.y = max(0, self.y - n)
        elif final == "B":
            self._down(n)
        elif final == "C":
            self.x = min(self.columns - 1, self.x + n)
        elif final == "D":
            self.x = max(0, self.x - n)
        elif final == "G":
            self.x = min(self.columns - 1, n - 1)
        elif final == "K":
            if nums[0] == 0:
                del row[self.x:]
            elif nums[0] == 1:
                row[:self.x + 1] = " " * min(len(row), self.x + 1)
            else:
                row.clear()
        elif final == "J":
            if nums[0] == 0:
                del row[self.x:]
                del self.rows[self.y + 1:]
            else:
                self.rows, self.y = [[] for _ in self.rows], self.y

    def broken_mid_word(self) -> list[str]:
        """Rows the terminal had to continue in the middle of a word (output wider than it).

        A line that is one long word (the result path on stdout) cannot be broken elsewhere."""
        out = []
        for y in sorted(self.wrapped):
            this, nxt = self.lines[y], self.lines[y + 1] if y + 1 < len(self.rows) else ""
            one_word = " " not in (this + nxt).strip()
            if this and nxt and not one_word and not this[-1].isspace() and not nxt[0].isspace():
                out.append(f"{this[-20:]!r} / {nxt[:20]!r}")
        return out


def progress_rows(screen: Screen) -> list[str]:
    """Rows of a progress bar (a bar that is no table border)."""
    return [line for line in screen.lines if BAR in line and not set(line) & set("┏┳┓┡╇┩┗┻┛")]


def control_codes(raw: bytes) -> list[str]:
    """Every escape sequence in ``raw`` other than colours and styles (SGR)."""
    text = raw.decode("utf-8", "replace")
    return [m.group(0) for m in _CSI.finditer(text) if m.group(3) != "m"] + \
        [m.group(0) for m in _OTHER_ESC.finditer(text)]


def run(args: list, columns: int, env: dict[str, str] | None = None, stdout_to_pipe: bool = False):
    result = _in_a_terminal([str(a) for a in args], env or {}, stdout_to_pipe=stdout_to_pipe,
                            size=(columns, 60))
    return (*result[:2], Screen(columns, result[1]), *result[2:])


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> dict[str, Path]:
    """A checkpoint in the released layout and its converted folder, under a long path (so
    that messages naming it are wider than the terminal)."""
    root = tmp_path_factory.mktemp("screens") / "a-folder-with-a-rather-long-name-for-wrapping"
    ck = write_checkpoint(root / "vit-msn-tiny.pth.tar", TINY, "released", seed=0)
    out = root / "vit-msn-tiny"
    code, raw = _in_a_terminal(["convert", str(ck), str(out), "--no-verify"], {}, size=(120, 60))
    assert code == 0, raw[-500:]
    return {"ckpt": ck, "out": out, "root": root}


# -- messages wrap at words, to the width of the terminal they go to --------------------------

@pytest.mark.parametrize(("columns", "stdout_piped"), [(80, False), (120, False), (80, True)],
                         ids=["80", "120", "80-stdout-piped"])
def test_messages_wrap_at_word_boundaries(demo, tmp_path, columns, stdout_piped):
    out = tmp_path / "converted-into-another-folder-with-a-long-name"
    for args in (["convert", demo["ckpt"], out], ["verify", out, "--no-record"],
                 ["convert", demo["ckpt"], out]):  # the last one fails: out exists
        code, _raw, screen, *_ = run(args, columns, stdout_to_pipe=stdout_piped)
        assert code in (0, 2), screen.text
        assert not screen.broken_mid_word(), (args[0], screen.broken_mid_word(), screen.text)
        assert all(len(line) <= columns for line in screen.lines)
        said = [line for line in screen.lines if line.startswith(("✓", "Error:", "Hint:"))]
        assert said, screen.text
    # a message longer than the terminal went on, indented under the message, not mid-word
    code, _raw, screen, *_ = run(["convert", demo["ckpt"], out], columns, stdout_to_pipe=stdout_piped)
    assert code == 2
    error = screen.text[screen.text.index("Error:"):]
    assert "exists" in error and re.sub(r"\n +", "", error).count(str(out)) == 1, error
    if len(str(out)) + 40 > columns:
        assert re.search(r"^Error: .*\n       \S", error, re.M), error


# -- the key-diff ------------------------------------------------------------------------------

def _shown_names(keys: list[dict]) -> set[str]:
    """The names the default key-diff shows whole: original keys without ``module.`` (relative
    to their block), Hugging Face keys relative to theirs, qkv targets in brace form."""
    names = set()
    for k in keys:
        src = (k["source"] or "").removeprefix("module.")
        if k["status"] not in ("renamed", "split") or re.match(r"blocks\.[1-9]", src):
            continue
        names.add(re.sub(r"^blocks\.\d+\.", "", src))
        targets = [re.sub(r"^encoder\.layer\.\d+\.", "", t) for t in k["targets"]]
        if k["status"] == "split":
            targets = [targets[0].replace(".query.", ".{query,key,value}.")]
        names.update(targets)
    return names


@pytest.mark.parametrize("columns", WIDTHS)
def test_key_diff_never_splits_a_key(demo, cli, columns):
    keys = cli("inspect", demo["ckpt"], "--json").json()["keys"]
    names = _shown_names(keys)
    assert "attention.attention.{query,key,value}.weight" in names and "cls_token" in names
    code, _raw, screen = run(["inspect", demo["ckpt"]], columns)
    assert code == 0, screen.text
    words = {w for line in screen.lines for w in re.split(r"[\s│┃]+", line)}
    assert names <= words, sorted(names - words)
    assert not screen.broken_mid_word(), screen.broken_mid_word()
    assert "without their module. prefix" in screen.text
    if columns >= 120:
        assert "shape" in screen.text and "192x64" in screen.text


def test_a_piped_key_diff_is_not_drawn_wider_than_80(demo):
    code, _raw, _screen, stdout = run(["inspect", demo["ckpt"]], 120, stdout_to_pipe=True)
    assert code == 0
    lines = stdout.decode().splitlines()
    assert "Key mapping" in stdout.decode()
    tables = [line for line in lines if " " in line.strip()]  # a lone path may be longer
    assert max(len(line) for line in tables) <= 80, max(tables, key=len)


def test_json_keeps_the_full_names(demo, cli):
    keys = cli("inspect", demo["ckpt"], "--json").json()["keys"]
    sources = {k["source"] for k in keys}
    assert "module.blocks.0.attn.qkv.weight" in sources and "module.pos_embed" in sources


# -- progress ----------------------------------------------------------------------------------

@pytest.mark.parametrize("columns", WIDTHS)
def test_no_progress_rows_for_quick_steps(demo, tmp_path, columns):
    shutil.copytree(demo["out"], tmp_path / "out")
    code, raw, screen = run(["verify", tmp_path / "out", "--no-record"], columns)
    assert code == 0, screen.text
    assert not progress_rows(screen) and "hashing" not in screen.text, screen.text
    # with every step drawn, the bars are there while they run and gone when they finish
    code, raw, screen = run(["verify", tmp_path / "out", "--no-record"], columns,
                            {"MSN_PROGRESS_DELAY": "0"})
    assert code == 0, screen.text
    assert BAR.encode() in raw and re.search(rb"parity\S* \S*" + BAR.encode(), raw)
    assert not progress_rows(screen), screen.text
    assert screen.cursor_visible
    assert any(line.startswith("msn verify ") for line in screen.lines), screen.text


@pytest.mark.parametrize("columns", WIDTHS)
def test_verbose_says_how_long_the_long_steps_took(demo, tmp_path, columns):
    shutil.copytree(demo["out"], tmp_path / "out")
    code, _raw, screen = run(["verify", tmp_path / "out", "--no-record", "-v"], columns,
                            {"MSN_PROGRESS_DELAY": "0"})
    assert code == 0, screen.text
    assert re.search(r"^parity: \d+ passes in \d+\.\d s$", screen.text, re.M), screen.text


# -- errors leave the terminal as it was -------------------------------------------------------

@pytest.fixture
def garbage_url(tmp_path):
    bad = tmp_path / "garbage.pth.tar"
    bad.write_bytes(b"PK\x03\x04" + b"\0" * 5000)
    with FileServer() as server:
        server.add("/msn/garbage.pth.tar", bad)
        yield server.url("/msn/garbage.pth.tar")


@pytest.mark.parametrize("columns", WIDTHS)
def test_no_control_codes_when_an_error_ends_a_quick_command(garbage_url, tmp_path, columns):
    code, raw, screen = run(["inspect", garbage_url, "--cache-dir", tmp_path / "cache"], columns)
    assert code == 3, screen.text
    assert "Error:" in screen.text
    assert control_codes(raw) == [], control_codes(raw)


@pytest.mark.parametrize("columns", WIDTHS)
def test_an_error_after_bars_were_drawn_clears_them(garbage_url, tmp_path, columns):
    code, raw, screen = run(["inspect", garbage_url, "--cache-dir", tmp_path / "cache"], columns,
                            {"MSN_PROGRESS_DELAY": "0"})
    assert code == 3, screen.text
    assert BAR.encode() in raw  # bars were drawn ...
    assert not progress_rows(screen)  # ... and nothing is left of them
    assert screen.cursor_visible
    # what is left: the steps that finished, each said in a line, then the error
    said = screen.lines[:next(i for i, line in enumerate(screen.lines) if line.startswith("Error:"))]
    assert all(re.fullmatch(r"\S+: .* in \d+\.\d s", line) for line in said), screen.text


# -- names that look like markup are shown as they are -----------------------------------------

@pytest.mark.parametrize("name", ["odd[/b]", "odd [v2]", "x[bold]y"])
def test_names_that_look_like_markup(cli, tmp_path, tiny_ckpt, name):
    folder = tmp_path / name  # "odd[/b]" is a folder "b]" in a folder "odd["
    folder.mkdir(parents=True)
    ck = shutil.copy(tiny_ckpt, folder / f"{name.replace('/', '-')}.pth.tar")
    out = folder / "out"
    r = cli("inspect", ck)
    assert r.code == 0, r.stderr
    assert str(ck) in r.stdout
    r = cli("convert", ck, out)
    assert r.code == 0, r.stderr
    assert str(out) in r.stderr  # "✓ wrote <out> ..."
    r = cli("verify", out)
    assert r.code == 0, r.stderr
    assert f"msn verify {out}" in r.stdout
    r = cli("push", out, "someone/model", "--dry-run")
    assert r.code == 0, r.stderr


def test_a_url_that_looks_like_markup_in_the_cache(cli, tmp_path, tiny_ckpt, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    cache = tmp_path / "cache"
    name = "vitb16_600ep.pth.tar"
    with FileServer() as server:
        server.add(f"/msn/{name}", tiny_ckpt)
        url = server.url(f"/msn/{name}") + "?tag=odd[/b]"
        r = cli("download", url, "--cache-dir", cache)
        assert r.code == 0, r.stderr
    r = cli("cache", "ls", "--cache-dir", cache)
    assert r.code == 0, r.stderr
    assert "odd[/b]" in r.stdout
    assert "…" not in r.stdout, r.stdout  # the name is folded at worst, never cut short
    assert json.loads(cli("cache", "ls", "--cache-dir", cache, "--json").stdout)["entries"]


def test_names_in_tables_are_never_cut_short(cli, tmp_path, monkeypatch):
    from msn_cli.dev.synth import write_run_folder

    monkeypatch.setenv("COLUMNS", "80")
    run_folder = tmp_path / "run [v2]"
    write_run_folder(run_folder)
    r = cli("inspect", run_folder)
    assert r.code == 0, r.stderr
    assert "Training run " + str(run_folder) in " ".join(r.stdout.split())
    assert "msn-experiment-1-latest.pth.tar" in r.stdout and "…" not in r.stdout, r.stdout


# -- verify at 80 columns: every number and key whole, -v on stderr ---------------------------

def _words(screen: Screen) -> set[str]:
    return {w for line in screen.lines for w in re.split(r"[\s│┃]+", line) if w}


def _layer_numbers(report: dict) -> set[str]:
    """The figures of the per-layer table, formatted as the table formats them."""
    return {f"{s[k]:{fmt}}" for s in report["layers"]
            for k, fmt in (("max_abs_err", ".2e"), ("allowed", ".2e"), ("mean_abs_err", ".2e"),
                           ("min_cosine", ".7f"))}


@pytest.fixture
def broken(demo, tmp_path):
    """The demo folder with one weight of block 1 moved by 1e-3: verify fails there."""
    from tests.test_verify import L, _perturb, edit_weights

    out = tmp_path / "broken"
    shutil.copytree(demo["out"], out)
    edit_weights(out, _perturb(L.format(i=1) + "output.dense.weight"))
    return out


def test_a_failing_verify_at_80_columns_cuts_no_number(cli, broken):
    report = cli("verify", broken, "--json", "--no-record").json()
    assert report["first_bad_layer"] == "block 1"
    code, _raw, screen = run(["verify", broken, "--no-record"], 80)
    assert code == 1, screen.text
    words = _words(screen)
    assert _layer_numbers(report) <= words, sorted(_layer_numbers(report) - words)
    assert "first" in words and "FAIL" in words
    for c in report["checks"]:
        assert c["name"] in words
    assert all(len(line) <= 80 for line in screen.lines)
    assert not screen.broken_mid_word(), screen.broken_mid_word()
    # the error names the failed check and the first bad layer, in a line or two
    error = screen.text[screen.text.index("Error:"):screen.text.index("Hint:")]
    assert "parity" in error and "block 1" in error and len(error.splitlines()) <= 2, error


def test_verify_v_at_80_columns_cuts_no_number_or_key(cli, demo, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(demo["out"], out)
    report = cli("verify", out, "--json", "--no-record").json()
    code, _raw, screen = run(["verify", out, "--no-record", "-v"], 80)
    assert code == 0, screen.text
    words = _words(screen)
    assert _layer_numbers(report) <= words, sorted(_layer_numbers(report) - words)
    files = next(c for c in report["checks"] if c["name"] == "files")["rows"]
    config = next(c for c in report["checks"] if c["name"] == "config")["rows"]
    whole = {r["sha256"] for r in files} | {r["file"] for r in files} | {r["key"] for r in config}
    whole |= {s["hf"] for s in report["layers"]}
    assert not {w for w in whole if w not in words and w + ":" not in words}, \
        sorted(w for w in whole if w not in words and w + ":" not in words)
    assert all(len(line) <= 80 for line in screen.lines)
    assert not screen.broken_mid_word(), screen.broken_mid_word()


def test_v_adds_on_stderr_only(cli, demo, tiny_ckpt, tmp_path, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = tmp_path / "out"
    shutil.copytree(demo["out"], out)
    plain, verbose = cli("verify", out, "--no-record"), cli("verify", out, "--no-record", "-v")
    assert plain.code == verbose.code == 0, verbose.stderr
    assert verbose.stdout == plain.stdout
    assert "Layers compared" in verbose.stderr and "config check" in verbose.stderr
    # OUT=$(msn convert -v ...) captures the folder, and the plan goes to stderr
    r = cli("convert", tiny_ckpt, tmp_path / "conv", "-v", "--no-verify")
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == [str((tmp_path / "conv").absolute())]
    assert "Conversion plan" in r.stderr and "Architecture" in r.stderr
    r = cli("export", out, tmp_path / "resume.pth.tar", "-v")
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines() == [str((tmp_path / "resume.pth.tar").absolute())]
    assert "Export plan" in r.stderr


def test_q_keeps_the_warnings(cli, tiny_ckpt, tmp_path):
    """-q: only errors and warnings, in every command (TINY's heads are ASSUMED)."""
    r = cli("convert", tiny_ckpt, tmp_path / "conv", "-q", "--no-verify")
    assert r.code == 0, r.stderr
    assert "Warning: ASSUMED" in r.stderr and "✓" not in r.stderr
    r = cli("verify", tmp_path / "conv", "-q", "--no-record")
    assert r.code == 0, r.stderr
    assert "Warning: ASSUMED" in r.stderr and "✓" not in r.stderr


def test_verify_help_lists_every_check_on_a_line_of_its_own():
    from msn_cli.verify import CHECKS

    code, _raw, screen = run(["verify", "-h"], 80)
    assert code == 0
    names = [c.name for c in CHECKS]
    assert len(names) == 8
    listed = [line.split()[0] for line in screen.lines if line.split() and line.split()[0] in names
              and len(line.split()) > 3]
    assert listed == names, screen.text


def test_a_wrong_source_says_the_cause_and_stops(cli, demo, tmp_path):
    from tests.conftest import TINY_MULTIHEAD

    other = write_checkpoint(tmp_path / "other.pth.tar", TINY_MULTIHEAD, "released", seed=3)
    out = tmp_path / "out"
    shutil.copytree(demo["out"], out)
    code, _raw, screen = run(["verify", out, "--no-record", "--source", other], 80)
    assert code == 1, screen.text
    error = screen.text[screen.text.index("Error:"):]
    said = "".join(error.split())  # a path longer than a line is folded
    assert "".join(f"{other} is not the file this folder was converted from".split()) in said, error
    assert "Input image size" not in error and "expected" not in error, error
    assert len(error[:error.index("Hint:")].splitlines()) <= 3, error


def test_a_failed_golden_check_says_which_image_it_needs():
    from msn_cli.cli.verify_cmd import failure_message
    from msn_cli.verify.report import CheckResult, VerifyReport

    report = VerifyReport(Path("x"), "float32", None, [
        CheckResult("parity", True, "ok"), CheckResult("golden", False, "max abs err 1.6e+01")])
    message, hint = failure_message(report)
    assert message == "verify failed: golden"
    assert hint is not None and "000000039769.jpg" in hint and "COCO" in hint


def test_the_projection_head_is_described_by_its_shapes(cli, demo):
    keys = cli("inspect", demo["ckpt"], "--all-keys", "--json").json()["keys"]
    head = [k for k in keys if k["status"] == "dropped"]
    assert head
    for k in head:
        assert "2048" not in k["note"], k
        if len(k["shape"]) == 2:
            assert f"{k['shape'][1]} -> {k['shape'][0]}" in k["note"], k


def test_passing_rows_say_why_a_number_over_the_tolerance_passes(make_ckpt, tmp_path):
    """rocket.jpg is one pixel off (its crop margin is odd): its max diff is far over one 8-bit
    level, and the row says what is within it; the summary says where parity's worst layer is
    against its own (scaled) tolerance."""
    from tests.test_preprocessing import TINY224

    out = tmp_path / "out"
    code, raw = _in_a_terminal(["convert", str(make_ckpt(TINY224)), str(out), "--no-verify"], {},
                               size=(80, 60))
    assert code == 0, raw[-500:]
    code, _raw, screen = run(["verify", out, "--no-record"], 80)
    assert code == 0, screen.text
    text = " ".join(screen.text.replace("│", " ").split())
    assert "one pixel off" in text
    assert "within tolerance of the crop with its offset floored" in text, screen.text
    assert re.search(r"the worst layer at \d+% of its tolerance", text), screen.text


# -- silences and Ctrl-C -----------------------------------------------------------------------

def _interrupted_in_a_terminal(args: list[str], server: FileServer, columns: int = 80) -> tuple[int, bytes]:
    """``python -m msn_cli ARGS`` with a pty as its controlling terminal; once the server holds
    the download, Ctrl-C is typed (the terminal echoes ``^C`` and sends SIGINT)."""
    import fcntl
    import os
    import pty
    import select
    import struct
    import sys
    import termios
    import time

    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES")}
    env.update({"TERM": "xterm-256color", "MSN_PROGRESS_DELAY": "1000"})  # no bars: a bare line
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.execve(sys.executable, [sys.executable, "-m", "msn_cli", *args], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 60, columns, 0, 0))
    chunks, typed = [], False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if not typed and server.holding.is_set():
            os.write(fd, b"\x03")
            typed = True
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
    server.release()
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)


def test_ctrl_c_says_interrupted_on_a_line_of_its_own(tmp_path, tiny_ckpt):
    with FileServer() as server:
        server.add("/msn/x.pth.tar", tiny_ckpt)
        server.fault("/msn/x.pth.tar", "hold", after=1000)
        code, raw = _interrupted_in_a_terminal(
            ["inspect", server.url("/msn/x.pth.tar"), "--cache-dir", str(tmp_path / "cache")], server)
    screen = Screen(80, raw)
    assert code == 130, screen.text
    assert "^C" in screen.text  # the terminal's echo: the test typed Ctrl-C
    assert any(line.startswith("Error: interrupted") for line in screen.lines), screen.lines


def test_each_long_step_is_said_as_it_finishes(demo, tmp_path):
    """Every step is drawn (delay 0): the imports and each check have a spinner, and each step
    is said when it finishes, before the result, without -v."""
    out = tmp_path / "out"
    shutil.copytree(demo["out"], out)
    code, raw, screen = run(["verify", out, "--no-record"], 80, {"MSN_PROGRESS_DELAY": "0"})
    assert code == 0, screen.text
    assert b"importing torch and transformers" in raw and b"preprocessing check" in raw
    lines = screen.lines
    table = next(i for i, line in enumerate(lines) if line.startswith("msn verify "))
    said = [line for line in lines[:table] if re.fullmatch(r"[\w ]+: (\d+ \w+ in )?\d+\.\d s", line)]
    assert any(line.startswith("importing torch and transformers: ") for line in said), screen.text
    assert any(line.startswith("parity: ") for line in said), screen.text


def test_a_run_folder_at_80_columns_cuts_no_number(cli, tmp_path):
    from msn_cli.dev.synth import write_run_folder

    run_folder = write_run_folder(tmp_path / "run", tag="msn-vits16-imagenet-1k-long-run-tag")
    report = cli("inspect", run_folder, "--json").json()
    code, _raw, screen = run(["inspect", run_folder], 80)
    assert code == 0, screen.text
    words = _words(screen)
    for c in report["checkpoints"]:
        assert c["file"] in words, (c["file"], screen.text)
        assert f"{c['loss']:.4f}" in words, (c["loss"], screen.text)
    assert not screen.broken_mid_word(), screen.broken_mid_word()


def test_the_total_row_of_several_downloads_stays_below_the_files(monkeypatch):
    import io

    from rich.console import Console

    from msn_cli.cli.term import Term
    from msn_cli.transfer.download import TOTAL_STAGE as total

    monkeypatch.setenv("TERM", "xterm-256color")
    term = Term()
    term.err = Console(file=io.StringIO(), force_terminal=True, width=80)
    with term.progress(delay=0) as report:
        report("vits16_800ep.pth.tar", 10, 1000)
        report(total, 10, 2000)
        report("vitb16_600ep.pth.tar", 10, 1000)
        report(total, 20, 2000)
        assert term._bars is not None
        rows = [t.description for t in term._bars.progress.tasks]
    assert rows == ["vits16_800ep.pth.tar", "vitb16_600ep.pth.tar", total]


def test_convert_says_its_plan_before_it_writes_and_verifies(demo, tmp_path):
    """The counts line comes as soon as the plan is built, above the verify steps, not with the
    result after them (issue 25 item 24)."""
    code, _raw, screen = run(["convert", demo["ckpt"], tmp_path / "out"], 80,
                             {"MSN_PROGRESS_DELAY": "0"})
    assert code == 0, screen.text
    lines = screen.lines
    counts = next(i for i, line in enumerate(lines) if "Hugging Face tensors from" in line)
    parity = next(i for i, line in enumerate(lines) if line.startswith("parity: "))
    wrote = next(i for i, line in enumerate(lines) if line.startswith("✓ wrote "))
    assert counts < parity < wrote, screen.text
