"""How ``-h`` names parameters and types, shared with the reference generator.

Typer's own help names arguments {source} and [names]..., types <str>, <bool> (even for flags,
which take no value) and <list[str]>, keeps a paragraph's line breaks, and drops the
indentation of examples that directly follow the first paragraph. :class:`MsnCommand` and
:class:`MsnGroup` give ``-h`` the names docs/cli.md uses (``msn_cli.dev.clidocs`` writes that
page with the functions below): SOURCE OUT, [NAMES...], TEXT, PATH, INTEGER, nothing for a flag.
"""

from __future__ import annotations

import contextlib
import enum
import inspect
import pathlib
import re
import typing
from collections.abc import Iterator
from typing import Any

from typer.core import TyperCommand, TyperGroup


def type_name(param: Any) -> str:
    """A parameter's type as help shows it: ``TEXT``, ``PATH``, ``INTEGER [x>=1]``, ``a|b``."""
    if getattr(param, "metavar", None) and is_option(param):
        return str(param.metavar) + _range(param)
    click_type = getattr(param, "type", None)  # typer built on click
    if click_type is not None and getattr(click_type, "name", None):
        choices = getattr(click_type, "choices", None)
        return "|".join(map(str, choices)) if choices else str(click_type.name).upper()
    descriptor = getattr(param, "type_descriptor", None)  # typer with its own copy of click
    ann = getattr(descriptor, "annotation", None)
    return _annotation_name(ann, param)


def _annotation_name(ann: Any, param: Any) -> str:
    origin = typing.get_origin(ann)
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        return _annotation_name(args[0], param) if args else "TEXT"
    if origin in (list, tuple, set):
        items = typing.get_args(ann)
        return _annotation_name(items[0], param) if items else "TEXT"
    if origin is typing.Literal:
        return "|".join(map(str, typing.get_args(ann)))
    if isinstance(ann, type) and issubclass(ann, enum.Enum):
        return "|".join(str(m.value) for m in ann)
    names = {str: "TEXT", int: "INTEGER", float: "FLOAT", bool: "BOOLEAN"}
    name = names.get(ann) if isinstance(ann, type) else None
    if name is None:
        name = "PATH" if isinstance(ann, type) and issubclass(ann, pathlib.PurePath) else "TEXT"
    return name + _range(param)


def _range(param: Any) -> str:
    """The bounds as -h writes them after the type (``[x>=1]``, ``[0<=x<=9]``)."""
    lo, hi = getattr(param, "min", None), getattr(param, "max", None)
    if getattr(param, "count", False) or (lo is None and hi is None):
        return ""
    if hi is None:
        return f" [x>={lo}]"
    if lo is None:
        return f" [x<={hi}]"
    return f" [{lo}<=x<={hi}]"


def is_option(param: Any) -> bool:
    """An option (not an argument)."""
    return getattr(param, "param_type_name", "") == "option"


def arg_name(param: Any) -> str:
    """An argument's name as help shows it: ``SOURCE``, ``NAMES...``."""
    name = (param.metavar or param.name or "ARG").upper().removesuffix("...")
    return name + "..." if param.nargs == -1 else name


def _arg_usage(param: Any) -> str:
    name = arg_name(param)
    return name if param.required else f"[{name}]"


def usage_pieces(cmd: Any) -> list[str]:
    """What follows the command's name in its usage line: ``[OPTIONS] SOURCE [OUT]``."""
    parts = ["[OPTIONS]"]
    parts += [_arg_usage(p) for p in cmd.params if not is_option(p) and not getattr(p, "hidden", False)]
    if subcommands(cmd):
        parts.append("COMMAND [ARGS]...")
    return parts


def subcommands(cmd: Any) -> dict[str, Any]:
    """A group's visible subcommands by name (none for a command)."""
    commands = getattr(cmd, "commands", None) or {}
    return {name: sub for name, sub in commands.items() if not getattr(sub, "hidden", False)}


def _conform(param: Any) -> None:
    if getattr(param, "hidden", False):
        return
    if not is_option(param):
        kind = type_name(param)
        param.metavar = arg_name(param)
        if hasattr(param, "display_type_rich"):  # typer's own click: the type column of -h
            param.display_type_rich = lambda ctx, _kind=kind: _kind
    elif getattr(param, "is_flag", False) or getattr(param, "count", False):
        param.metavar = ""  # a flag takes no value: show no type
        param.show_default = False
    elif not param.metavar:
        param.metavar = type_name(param).split(" [")[0]  # -h adds the range itself


_COMMENT = re.compile(r"^(\s+)(\S.*?)\s+(#.*)$")


def fit_example(line: str, width: int | None) -> list[str]:
    """An example line as it fits ``width`` columns: a trailing ``# comment`` that would wrap
    to column 1 goes on its own line above the command, with the same indentation."""
    m = _COMMENT.match(line)
    if width is None or m is None or len(line) <= width:
        return [line]
    indent, command, comment = m.groups()
    return [indent + comment, indent + command]


def live_help(text: str, width: int | None = None) -> str:
    """Help text as -h shows it: each prose paragraph one line (the terminal wraps it at words),
    indented lines (examples) kept as they are, their comments moved above them where a line
    is wider than ``width``."""
    paragraphs = []
    for para in inspect.cleandoc(text or "").split("\n\n"):
        lines = para.splitlines()
        if any(line.startswith((" ", "\t", "\b")) for line in lines):
            fitted = [part for line in lines for part in fit_example(line, width)]
            # "[default]" keeps typer from removing the indentation as common to all lines
            paragraphs.append("\n".join(f"[default]{line}" if line.startswith(" ") else line
                                        for line in fitted))
        else:
            paragraphs.append(" ".join(line.strip() for line in lines))
    return "\n\n".join(paragraphs)


_HIGHLIGHTERS = ("highlighter", "negative_highlighter", "types_highlighter")
"""typer.rich_utils' highlighters: between them they style every text of a help screen."""


@contextlib.contextmanager
def _folding_help() -> Iterator[None]:
    """Typer's help rendering with long words (URLs, an environment variable's name, a long
    --no-option) folded onto the next line rather than cut with "…", which is what the narrow
    columns of its tables otherwise do. Typer has no option for the overflow, but looks up
    names of its module each time it builds a cell: its highlighters, which style every text,
    and ``Columns``, which groups a help cell's texts (help, env var, default); each sets it
    here. (Rich and typer's Rich layer are imported here: only -h needs them.)"""
    from rich.columns import Columns
    from rich.highlighter import Highlighter
    from rich.text import Text
    from typer import rich_utils

    class Folding(Highlighter):
        def __init__(self, inner: Highlighter):
            self.inner = inner

        def highlight(self, text: Text) -> None:
            self.inner.highlight(text)
            text.overflow = "fold"

    def folding(renderables: list[Any], *args: Any, **kwargs: Any) -> Columns:
        for item in renderables:
            if isinstance(item, Text):
                item.overflow = "fold"
        return Columns(renderables, *args, **kwargs)

    patched: dict[str, Any] = {name: Folding(getattr(rich_utils, name)) for name in _HIGHLIGHTERS}
    patched["Columns"] = folding  # typer calls it, never subclasses it
    saved = {name: getattr(rich_utils, name) for name in patched}
    for name, value in patched.items():
        setattr(rich_utils, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(rich_utils, name, value)


def help_width() -> int:
    """Columns an example line of -h may use: typer's console, less the one-column margins."""
    from rich.console import Console
    from typer import rich_utils

    return Console(width=rich_utils.MAX_WIDTH).width - 2


class _LikeTheReference:
    """-h with the reference's names (see the module's docstring), for a Typer command class."""

    params: list[Any]
    help: str | None

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        return usage_pieces(self)

    def get_params(self, ctx: Any) -> list[Any]:
        params: list[Any] = super().get_params(ctx)  # type: ignore[misc]
        for param in params:  # completion and help options included
            _conform(param)
        return params

    def format_help(self, ctx: Any, formatter: Any) -> None:
        original = self.help
        self.help = live_help(original or "", help_width())
        try:
            with _folding_help():
                super().format_help(ctx, formatter)  # type: ignore[misc]
        finally:
            self.help = original


class MsnCommand(_LikeTheReference, TyperCommand):
    """A command whose -h reads like docs/cli.md."""


class MsnGroup(_LikeTheReference, TyperGroup):
    """A command group whose -h reads like docs/cli.md."""
