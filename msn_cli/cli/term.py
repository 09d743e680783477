"""All terminal output goes through here: data on stdout, messages and progress on stderr.

Commands never ``print``. Progress bars appear only on an interactive stderr, and never under
``--json`` or ``--quiet``; Rich honours ``NO_COLOR`` on its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    Task,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.text import Text

from ..progress import ProgressFn, item_unit


class Term:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False, verbose: int = 0):
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)
        self.out = Console(highlight=False, soft_wrap=True)
        if not self.out.is_terminal and "COLUMNS" not in os.environ:
            # piped or redirected: tables are data, so do not fold them to 80 columns
            self.out = Console(highlight=False, soft_wrap=True, width=200)

    # -- messages (stderr) ---------------------------------------------------------------
    def info(self, message: str) -> None:
        if not self.quiet:
            self.err.print(message)

    def detail(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.err.print(f"[dim]{message}[/dim]")

    def warn(self, message: str) -> None:
        self.err.print(f"[yellow]Warning:[/yellow] {message}")

    def caution(self, message: str) -> None:
        """A warning that -q silences (what it says is also in --json and the manifest)."""
        if not self.quiet:
            self.warn(message)

    def success(self, message: str) -> None:
        if not self.quiet:
            self.err.print(f"[green]✓[/green] {message}")

    # -- data (stdout) -------------------------------------------------------------------
    def data(self, renderable: Any) -> None:
        """A table or text that *is* the command's result (suppressed by --json)."""
        if not self.json_mode:
            self.out.print(renderable)

    def emit_json(self, payload: Any) -> None:
        sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")
        sys.stdout.flush()

    def line(self, text: str) -> None:
        """A plain line on stdout, for results scripts read (paths)."""
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    # -- progress (stderr) ---------------------------------------------------------------
    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.json_mode and not self.quiet and \
            os.environ.get("TERM") != "dumb"

    @contextlib.contextmanager
    def progress(self) -> Iterator[ProgressFn]:
        """A ``ProgressFn`` that draws one bar per stage; a no-op when not interactive.

        The display starts with the first report, so a command that fails before any long
        step leaves the terminal as it was (no cursor hidden and shown again)."""
        if not self.interactive:
            yield _silent
            return
        bars = Progress(
            SpinnerColumn(), TextColumn("[bold]{task.description}"), BarColumn(),
            _Amount(), _Speed(), TimeRemainingColumn(),
            console=self.err, transient=False,
        )
        tasks: dict[str, TaskID] = {}
        started = False

        def report(stage: str, done: int, total: int | None) -> None:
            nonlocal started
            if not started:
                bars.start()
                started = True
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total, unit=item_unit(stage))
            bars.update(tasks[stage], completed=done, total=total)

        try:
            yield report
        finally:
            if started:
                bars.stop()


class _Amount(ProgressColumn):
    """Bytes done and total (``1.2/4.9 GB``), or items for an item stage (``2/3 inputs``)."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit")
        if unit is None:
            return self._bytes.render(task)
        total = "?" if task.total is None else f"{int(task.total)}"
        return Text(f"{int(task.completed)}/{total} {unit}", style="progress.download")


class _Speed(ProgressColumn):
    """Transfer speed for byte stages; nothing for item stages."""

    def __init__(self) -> None:
        super().__init__()
        self._speed = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        return Text("") if task.fields.get("unit") else self._speed.render(task)


def _silent(stage: str, done: int, total: int | None) -> None:
    pass
