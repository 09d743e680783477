"""``python -m msn_cli.dev.clidocs > docs/cli.md``: the command reference, generated from the Typer app.

Walks the command tree that ``msn`` itself runs (``typer.main.get_command(app)``) and writes
Markdown: for every command its usage line, help text (examples as console blocks), arguments
and options with their help, defaults and environment variables. Rich markup is removed; the
output does not depend on the terminal. ``make docs`` regenerates the file and
``tests/test_docs.py`` fails when it is stale.
"""

from __future__ import annotations

import enum
import inspect
import re
import sys
from collections.abc import Iterator
from typing import Any

import typer

from msn_cli.cli.app import app
from msn_cli.cli.helpfmt import arg_name, is_option, subcommands, type_name, usage_pieces
from msn_cli.errors import EXIT_CODES_SUMMARY

GENERATED_BY = "python -m msn_cli.dev.clidocs > docs/cli.md"

# Rich style words, so that "[bold]x[/bold]" goes but "[default: as stored]" stays
_STYLE_WORDS = {
    "bold", "b", "dim", "d", "italic", "i", "underline", "u", "strike", "s", "reverse", "r",
    "blink", "conceal", "overline", "not", "on", "default", "code", "none",
    "black", "red", "green", "yellow", "blue", "magenta", "cyan", "white",
}
_TAG = re.compile(r"(?<!\\)\[(/?)([^\[\]]*)\]")


def plain(text: str) -> str:
    """``text`` without Rich markup tags or their escapes."""

    def drop(m: re.Match[str]) -> str:
        closing, body = m.group(1), m.group(2).strip()
        if closing and not body:
            return ""  # "[/]"
        if body.startswith("link"):
            return ""
        words = body.replace("_", " ").split()
        if words and all(w in _STYLE_WORDS or w.startswith(("bright", "#", "color(", "rgb("))
                         for w in words):
            return ""
        return m.group(0)

    return _TAG.sub(drop, text).replace("\\[", "[")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _help_markdown(text: str) -> list[str]:
    """Help text as Markdown: prose paragraphs as they are, indented lines as a console block."""
    text = plain(inspect.cleandoc(text or ""))
    lines = [line for line in text.splitlines() if line.strip() != "\b"]
    out: list[str] = []
    code: list[str] = []

    def flush() -> None:
        if code:
            while code and not code[-1]:
                code.pop()
            out.extend(["```console", *code, "```", ""])
            code.clear()

    for line in lines:
        if line.startswith((" ", "\t")) and line.strip():
            code.append("$ " + line.strip())
        elif not line.strip():
            if not code and out and out[-1] != "":
                out.append("")
        else:
            flush()
            out.append(line.rstrip())
    flush()
    while out and out[-1] == "":
        out.pop()
    return out


def _default(param: Any) -> str:
    if getattr(param, "show_default", True) is False:
        return ""
    if isinstance(param.show_default, str):
        return param.show_default
    value = param.default
    if value is None or callable(value) or getattr(param, "is_flag", False) or getattr(param, "count", False):
        return ""
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value)) if value else ""
    if isinstance(value, enum.Enum):
        value = value.value
    return str(value)


def _usage(path: list[str], cmd: Any) -> str:
    return " ".join([*path, *usage_pieces(cmd)])


def _walk(cmd: Any, path: list[str]) -> Iterator[tuple[list[str], Any]]:
    yield path, cmd
    for name, sub in subcommands(cmd).items():
        yield from _walk(sub, [*path, name])


def _anchor(path: list[str]) -> str:
    return "-".join(path)


def _command_section(path: list[str], cmd: Any) -> list[str]:
    level = "#" * min(len(path) + 1, 4)
    out = [f"{level} {' '.join(path)}", "", "```text", _usage(path, cmd), "```", ""]
    body = _help_markdown(cmd.help or "")
    if body:
        out += [*body, ""]
    subs = subcommands(cmd)
    if subs:
        out += ["| Command | What it does |", "| --- | --- |"]
        for name, sub in subs.items():
            first = plain(inspect.cleandoc(sub.short_help or sub.help or "")).split("\n\n")[0]
            out.append(f"| [`{' '.join([*path, name])}`](#{_anchor([*path, name])}) | {_cell(first)} |")
        out.append("")
    args = [p for p in cmd.params if not is_option(p) and not getattr(p, "hidden", False)]
    if args:
        out += ["**Arguments**", "", "| Argument | Type | Required | Description |",
                "| --- | --- | --- | --- |"]
        for p in args:
            name = arg_name(p)
            out.append(f"| `{name}` | {_cell(type_name(p))} | {'yes' if p.required else 'no'} | "
                       f"{_cell(plain(getattr(p, 'help', None) or ''))} |")
        out.append("")
    opts = [p for p in cmd.params if is_option(p) and not getattr(p, "hidden", False)]
    out += ["**Options**", "", "| Option | Type | Default | Description |", "| --- | --- | --- | --- |"]
    for p in opts:
        names = ", ".join(f"`{o}`" for o in sorted(p.opts, key=len) + list(p.secondary_opts))
        if getattr(p, "count", False):
            kind = "count"
        elif getattr(p, "is_flag", False):
            kind = "flag"
        else:
            kind = type_name(p)
        described = plain(p.help or "")
        if p.envvar and getattr(p, "show_envvar", True):
            envs = [p.envvar] if isinstance(p.envvar, str) else list(p.envvar)
            described += f" [env var: {', '.join(envs)}]"  # -h's words
        if p.required:
            described += " [required]"
        default = _default(p)
        out.append(f"| {names} | {_cell(kind)} | {f'`{_cell(default)}`' if default else ''} | "
                   f"{_cell(described)} |")
    out += [_help_row(cmd), ""]
    return out


def _help_row(cmd: Any) -> str:
    """The help option's row, in the words -h itself uses for it."""
    ctx = typer.Context(cmd, info_name=cmd.name, help_option_names=["-h", "--help"])
    option = cmd.get_help_option(ctx)
    names = ", ".join(f"`{o}`" for o in sorted(option.opts, key=len))
    return f"| {names} | flag |  | {_cell(plain(option.help or ''))} |"


_COMPLETION = """## Shell completion

`msn` completes commands, options and file names in bash, zsh, fish and PowerShell
(`powershell` or `pwsh`). Without a shell name the current shell is detected.

```console
$ msn --install-completion        # for the current shell; restart the shell afterwards
$ msn --install-completion zsh    # or name the shell
$ msn --show-completion fish      # print the script instead, to install it yourself
```

`--install-completion` appends a line to the shell's start-up file (for example `~/.bashrc`,
`~/.zshrc` or `~/.config/fish/completions/msn.fish`) that loads the completion script.
`--show-completion` only prints the script, for example to save it where your system keeps
completions: `msn --show-completion bash > ~/.local/share/bash-completion/completions/msn`.
"""


def render() -> str:
    """docs/cli.md as a string."""
    root = typer.main.get_command(app)
    sections = list(_walk(root, ["msn"]))
    out = [
        "# msn command reference",
        "",
        f"<!-- Generated from the Typer app by `{GENERATED_BY}` (or `make docs`); do not edit by hand. -->",
        "",
        "Every command takes `-h`/`--help`. Data goes to stdout (`--json` for machine-readable "
        "output), messages and progress to stderr; `-q` keeps only errors and warnings on stderr "
        "(stdout is unchanged), `-v` adds detail. "
        "Colour follows the terminal and is off when `NO_COLOR` is set or the output is not a "
        "terminal. " + EXIT_CODES_SUMMARY,
        "",
        "Commands:",
        "",
    ]
    out += [f"- [`{' '.join(path)}`](#{_anchor(path)})" for path, _ in sections[1:]]
    out += ["- [Shell completion](#shell-completion)", ""]
    for path, cmd in sections:
        out += _command_section(path, cmd)
    out.append(_COMPLETION)
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).rstrip("\n") + "\n"


def main() -> int:
    sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
