"""docs/cli.md and docs/tour.md: generated, complete, free of markup, and never stale.

When test_cli_md_is_up_to_date or test_tour_is_up_to_date fails, regenerate with
``make docs`` (``python -m msn_cli.dev.clidocs > docs/cli.md`` and
``python -m msn_cli.dev.tour docs/tour.md``) and commit the result.
"""

from __future__ import annotations

import difflib
import re
import subprocess
import sys

import pytest
import typer

from msn_cli.cli.app import app
from msn_cli.dev.clidocs import plain, render
from tests.conftest import REPO, run_msn_process

DOC = REPO / "docs" / "cli.md"


def _commands(cmd, path):
    yield path, cmd
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        if not getattr(sub, "hidden", False):
            yield from _commands(sub, [*path, name])


def test_cli_md_is_up_to_date():
    r = subprocess.run([sys.executable, "-m", "msn_cli.dev.clidocs"], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr
    fresh = r.stdout
    assert fresh == render()
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    if current != fresh:
        diff = "".join(list(difflib.unified_diff(current.splitlines(True), fresh.splitlines(True),
                                                 "docs/cli.md", "generated", n=1))[:40])
        raise AssertionError(f"docs/cli.md is stale: run `make docs` and commit it\n{diff}")


def test_every_command_argument_and_option_is_documented():
    text = render()
    sections = re.split(r"^#{2,4} ", text, flags=re.M)
    by_title = {s.splitlines()[0].strip(): s for s in sections[1:]}
    root = typer.main.get_command(app)
    paths = list(_commands(root, ["msn"]))
    assert len(paths) >= 6
    for path, cmd in paths:
        title = " ".join(path)
        assert title in by_title, f"no section for {title}"
        section = by_title[title]
        assert f"```text\n{title} [OPTIONS]" in section, title
        for p in cmd.params:
            if getattr(p, "hidden", False):
                continue
            if getattr(p, "param_type_name", "") == "option":
                for opt in p.opts:
                    assert f"`{opt}`" in section, f"{title}: {opt} missing"
                if p.help:
                    assert " ".join(plain(p.help).split())[:40] in section, f"{title}: help of {p.opts}"
            else:
                assert f"`{p.name.upper()}" in section, f"{title}: argument {p.name} missing"
        first_line = plain(cmd.help or "").strip().splitlines()[0] if cmd.help else ""
        assert first_line in section, title
        assert "`-h`, `--help`" in section
    assert "## Shell completion" in text and "--install-completion" in text and "--show-completion" in text


def test_no_markup_or_terminal_escapes():
    text = render()
    assert "\x1b" not in text
    assert not re.search(r"\[/?(bold|dim|italic|red|green|yellow|cyan|blue|magenta)\b", text)
    assert "╭" not in text and "│" not in text


def test_plain_drops_rich_tags_and_keeps_bracketed_text():
    assert plain("[bold red]FAILED[/bold red] now") == "FAILED now"
    assert plain("x [dim]y[/] z") == "x y z"
    assert plain("a [default: as stored].") == "a [default: as stored]."
    assert plain(r"keep \[this] and [link=https://x.org]that[/link]") == "keep [this] and that"


def test_shell_completion_as_documented():
    shown = run_msn_process("--show-completion", "bash")
    assert shown.returncode == 0 and "_MSN_COMPLETE" in shown.stdout and "complete" in shown.stdout
    done = run_msn_process(env={"_MSN_COMPLETE": "complete_bash", "COMP_WORDS": "msn con", "COMP_CWORD": "1"})
    assert done.stdout.split() == ["convert"]
    done = run_msn_process(env={"_MSN_COMPLETE": "complete_bash", "COMP_WORDS": "msn cache ",
                                "COMP_CWORD": "2"})
    assert set(done.stdout.split()) >= {"ls", "rm", "check"}


def test_readme_links_the_tour_and_the_docs():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    for page in ("docs/tour.md", "docs/cli.md", "docs/guide.md", "docs/design.md",
                 "docs/security.md", "docs/benchmarks.md"):
        assert f"]({page}" in readme, page
        assert (REPO / page).is_file(), page
    assert len(readme.splitlines()) < 250


def test_readme_start_commands_are_make_targets():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    for target in ("demo", "test"):
        assert f"make {target}" in readme, target
        assert re.search(rf"^{target}: install$", makefile, re.M), target
    assert "msn_cli.dev.demo demo-out" in makefile and "`demo-out/`" in readme


@pytest.mark.slow
def test_tour_is_up_to_date():
    """docs/tour.md is what the demo's commands print now (a real run, ~25 s)."""
    from msn_cli.dev.tour import BEGIN, DEFAULT_PAGE, END

    page = REPO / DEFAULT_PAGE
    text = page.read_text(encoding="utf-8")
    tour = text[text.index(BEGIN):text.index(END)]
    assert "$ msn convert" in tour and "$ msn verify" in tour and "Parity per layer" in tour
    assert str(REPO) not in tour and "/tmp" not in tour and "msn-tour-" not in tour
    r = subprocess.run([sys.executable, "-m", "msn_cli.dev.tour", "--check", str(page)],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, f"{r.stderr}\n{r.stdout[:3000]}"
    assert page.read_text(encoding="utf-8") == text  # --check writes nothing
