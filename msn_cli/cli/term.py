"""All terminal output goes through here: data on stdout, messages and progress on stderr.

Commands never ``print``. Three rules hold for everything shown, so that call sites need not
think about them:

- **Text is literal.** A ``str`` handed to a message or put in a table (a path, a URL, a key
  name, a folder called ``odd[/b]``) is shown as it is, never read as Rich markup. Style is
  given explicitly, with :func:`styled` (a :class:`rich.text.Text`).
- **Text is inert.** File names, manifest fields, keys and server messages come from whoever
  made them: every C0 and C1 control character in anything shown (but the newline that lays
  out lines) is written as a visible escape (``\x1b``), so that no string can retitle the
  window, clear the screen or write the clipboard (OSC 52). The consoles do it as they render,
  for every string and every :class:`~rich.text.Text` at any depth of a table, so no call site
  can forget it; ``--json`` needs nothing, JSON escapes them itself.
- **Width is the stream's own.** Messages wrap at word boundaries to the width of the terminal
  they go to (stderr's, even when stdout is piped), continuation lines indented under the
  message; on a pipe they stay one line each. Tables on stdout take the terminal's width, or
  ``COLUMNS`` (else 80) when stdout is not a terminal.
- **Progress only when it helps.** A step gets a bar only once it has run for
  :data:`DELAY` seconds; when it finishes its bar is removed and a line says what it did and
  how long it took, so no long step passes in silence and none is said only at the end. The
  display is cleared when the command ends. Bars appear only on an interactive
  stderr, never under ``--json`` or ``--quiet``; a command that ends quickly, by success or
  error, writes no control codes at all. Rich honours ``NO_COLOR`` on its own.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from rich.console import Console, ConsoleOptions, Group, RenderableType
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
from rich.segment import Segment
from rich.table import Column, Table
from rich.text import Span, Text

from msn_cli.cli.signals import bars_drawn
from msn_cli.progress import SUM_STAGES, ProgressFn, item_unit
from msn_cli.util.fmt import human_size

DELAY = 0.5
"""Seconds a step must run before it gets a progress bar (``MSN_PROGRESS_DELAY`` overrides it,
for tests that want to see the bars of quick steps)."""

FALLBACK_WIDTH = 80
"""Columns for output that goes to no terminal and no ``COLUMNS`` says otherwise."""


_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")
"""C0 and C1 control characters and DEL; the newline is left alone, it lays out the lines."""


def printable(text: str) -> str:
    """``text`` with every control character written as a visible escape: ``ESC ] 0;x`` is shown
    as ``\\x1b]0;x``, never sent to the terminal as a command."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def printable_text(text: Text) -> Text:
    """:func:`printable` for a styled text: its styles stay on the characters they were on."""
    plain = text.plain
    if not _CONTROL.search(plain):
        return text
    pieces = [printable(ch) for ch in plain]
    at = list(accumulate((len(p) for p in pieces), initial=0))
    safe = text.copy()
    safe.plain = "".join(pieces)
    safe.spans = [Span(at[s.start], at[min(s.end, len(plain))], s.style) for s in text.spans]
    return safe


def styled(text: str, style: str = "") -> Text:
    """``text`` shown literally, in ``style`` (the one way to colour a message or a cell)."""
    return Text(printable(text), style=style)


def literal(renderable: Any) -> Any:
    """``renderable`` laid out as a result on stdout: a plain string becomes literal text, and
    in a table (nested tables included) a title or caption given as a string keeps its style
    as a :class:`~rich.text.Text` of its own, and a column that would cut its text short with an
    ellipsis folds it instead. Strings inside tables need nothing: msn's consoles read no markup.
    """
    if isinstance(renderable, str):
        return Text(renderable)
    if isinstance(renderable, Table):
        renderable.caption_justify = renderable.title_justify  # a caption reads as a note below
        for attr in ("title", "caption"):
            value = getattr(renderable, attr)
            if isinstance(value, str):
                setattr(renderable, attr, Text(value, style=_title_style(renderable, attr)))
        for column in renderable.columns:
            if column.overflow == "ellipsis":  # Rich's default cuts a name short: show all of it
                column.overflow = "fold"
            for cell in column.cells:
                if isinstance(cell, (Table, Group)):
                    literal(cell)
        return renderable
    if isinstance(renderable, Group):
        for r in renderable.renderables:
            literal(r)
    return renderable


def _title_style(table: Table, attr: str) -> str:
    # a str title gets the table's title style from Rich; a Text must carry it itself
    style = table.title_style if attr == "title" else table.caption_style
    return str(style) if style else f"table.{attr}"


def stream_width(console: Console) -> int:
    """Columns to lay out for: ``COLUMNS`` when set, else the size of the terminal the console
    writes to, else :data:`FALLBACK_WIDTH`."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    if console.is_terminal:
        try:
            width = os.get_terminal_size(console.file.fileno()).columns
        except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
            width = 0
        if width > 0:
            return width
    return FALLBACK_WIDTH


class PipeConsole(Console):
    """A console whose closed pipe is the caller's to handle (Rich's own exits 1, which
    would read as "a check failed"): see ``entry.exit_code_for``."""

    def on_broken_pipe(self) -> None:
        raise BrokenPipeError


class SafeConsole(PipeConsole):
    """A console that renders every string and every :class:`~rich.text.Text` through
    :func:`printable`, wherever it sits (a message, a table cell, a title, a progress bar)."""

    def render_str(self, text: str, **kwargs: Any) -> Text:
        return super().render_str(printable(text), **kwargs)

    def render(self, renderable: Any, options: ConsoleOptions | None = None) -> Iterable[Segment]:
        if isinstance(renderable, Text):
            renderable = printable_text(renderable)
        return super().render(renderable, options)


def _console(stderr: bool) -> Console:
    """A console that shows every string literally (no markup, no ``:emoji:`` codes). Messages
    on a pipe stay one line each (soft wrap); all else is laid out for the width."""
    probe = Console(stderr=stderr, highlight=False)
    return SafeConsole(stderr=stderr, highlight=False, markup=False, emoji=False,
                       soft_wrap=stderr and not probe.is_terminal, width=stream_width(probe))


class Term:
    def __init__(self, *, json_mode: bool = False, quiet: bool = False, verbose: int = 0):
        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        self.err = _console(stderr=True)
        self.out = _console(stderr=False)
        self._bars: _Bars | None = None

    @property
    def width(self) -> int:
        """Columns a table on stdout may use."""
        return self.out.width

    # -- messages (stderr) ---------------------------------------------------------------
    def say(self, message: str | Text, prefix: Text | None = None) -> None:
        """One message on stderr, literal, wrapped to stderr's terminal at word boundaries
        with continuation lines under the message (not under the prefix)."""
        body = message if isinstance(message, Text) else Text(printable(message))
        if prefix is None or not prefix.plain:
            self.err.print(body)
        elif self.err.soft_wrap:  # not a terminal: one line, whatever its length
            self.err.print(Text.assemble(prefix, body))
        else:
            grid = Table.grid()
            grid.add_column(no_wrap=True)
            grid.add_column(overflow="fold")  # a path longer than a line: all of it
            grid.add_row(prefix, body)
            self.err.print(grid)

    def info(self, message: str | Text) -> None:
        if not self.quiet:
            self.say(message)

    def detail(self, message: str) -> None:
        if self.verbose and not self.quiet:
            self.say(styled(message, "dim"))

    def warn(self, message: str) -> None:
        self.say(message, styled("Warning: ", "yellow"))

    def caution(self, message: str) -> None:
        """A warning whose content is also in --json and the manifest: still a warning, so
        shown under -q (which means "only errors and warnings", for every command)."""
        self.warn(message)

    def success(self, message: str) -> None:
        if not self.quiet:
            self.say(message, styled("✓ ", "green"))

    def failure(self, message: str) -> None:
        """A failed item of a command that goes on (the command's own error comes later)."""
        self.say(message, styled("✗ ", "red"))

    def error(self, message: str, hint: str | None = None) -> None:
        self.say(message, styled("Error: ", "bold red"))
        if hint:
            self.say(hint, styled("Hint: ", "dim"))

    # -- data (stdout) -------------------------------------------------------------------
    def data(self, renderable: RenderableType) -> None:
        """A table or text that *is* the command's result (suppressed by --json).

        Plain strings anywhere in it are literal (see :func:`literal`)."""
        if self.json_mode:
            return
        with self._stdout():
            _print_result(self.out, renderable)

    def detail_data(self, renderable: RenderableType) -> None:
        """A table only -v asks for: on stderr, with the other details, so that stdout holds the
        same result with or without -v (``OUT=$(msn convert -v ...)`` captures the folder)."""
        if self.verbose and not self.quiet and not self.json_mode:
            _print_result(self.err, renderable)  # Rich draws it above live bars itself

    def emit_json(self, payload: Any) -> None:
        self._write(json.dumps(payload, indent=2, default=str) + "\n")

    def line(self, text: str) -> None:
        """A plain line on stdout, for results scripts read (paths), control characters escaped."""
        self._write(printable(text) + "\n")

    def _write(self, text: str) -> None:
        with self._stdout():
            sys.stdout.write(text)
            sys.stdout.flush()

    @contextlib.contextmanager
    def _stdout(self) -> Iterator[None]:
        """Writing to stdout while bars are drawn on the same terminal: lift them first."""
        if self._bars is not None and self.out.is_terminal:
            with self._bars.lifted():
                yield
        else:
            yield

    # -- progress (stderr) ---------------------------------------------------------------
    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.json_mode and not self.quiet and \
            os.environ.get("TERM") != "dumb"

    @contextlib.contextmanager
    def progress(self, delay: float | None = None) -> Iterator[ProgressFn]:
        """A ``ProgressFn`` that draws a bar for every step that runs longer than ``delay``
        seconds; a no-op when not interactive. See the module's docstring."""
        if delay is None:
            try:
                delay = float(os.environ.get("MSN_PROGRESS_DELAY", DELAY))
            except ValueError:
                delay = DELAY
        if not self.interactive:
            yield _silent
            return
        bars = self._bars = _Bars(self.err, delay)
        try:
            yield bars.report
        except BaseException:
            self._bars = None
            bars.close(failed=True)
            raise
        self._bars = None
        bars.close()


def _print_result(console: Console, renderable: RenderableType) -> None:
    """``renderable`` made :func:`literal`; a table's title and caption on lines of their own,
    at the stream's width (Rich wraps them to the table's width, often narrower than a path
    or a sentence)."""
    renderable = literal(renderable)
    if not isinstance(renderable, Table):
        console.print(renderable)
        return
    title, caption = renderable.title, renderable.caption
    renderable.title = renderable.caption = None
    if title is not None:
        console.print(title)
    console.print(renderable)
    if caption is not None:
        console.print(caption)


@dataclass
class _Stage:
    started: float
    done: int = 0
    total: int | None = None
    task: TaskID | None = None
    ended: float | None = None

    @property
    def finished(self) -> bool:
        return self.ended is not None


class _Bars:
    """The progress policy: a stage is drawn once it has run for ``delay`` seconds; a finished
    stage's bar is removed; a stage of unknown size ends when the next stage begins."""

    def __init__(self, console: Console, delay: float):
        self.console = console
        self.delay = delay
        width = console.width
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}", style="bold", markup=False,
                       table_column=Column(no_wrap=True, overflow="ellipsis", max_width=max(12, width // 3))),
            BarColumn(bar_width=max(10, min(40, width - 70))),
            _Amount(), _Speed(), TimeRemainingColumn(),
            console=console, transient=True, redirect_stdout=False,
        )
        self.stages: dict[str, _Stage] = {}
        self.live = False
        self.closed = False
        self.lock = threading.RLock()
        self.timer: threading.Timer | None = None

    def report(self, stage: str, done: int, total: int | None) -> None:
        with self.lock:
            now = time.monotonic()
            st = self.stages.get(stage)
            if st is None or (st.finished and (total is None or done < total)):
                for other in self.stages.values():  # sizes unknown: the step before has ended
                    if other.total is None and not other.finished:
                        self._end(other, now)
                st = self.stages[stage] = _Stage(started=now)
                self._arm()
            st.done, st.total = done, total
            if total is not None and done >= total:
                self._end(st, now)
            elif self.live:
                self._draw(stage, st)
            elif now - st.started >= self.delay:
                self._start()

    def _arm(self) -> None:
        """Start the display after ``delay`` even if no further report comes (a step that
        reports once, then works)."""
        if self.timer is None and not self.live and not self.closed:
            self.timer = threading.Timer(self.delay, self._tick)
            self.timer.daemon = True
            self.timer.start()

    def _tick(self) -> None:
        with self.lock:
            self.timer = None
            if self.closed or self.live:
                return
            now = time.monotonic()
            running = [s for s in self.stages.values() if not s.finished]
            if any(now - s.started >= self.delay for s in running):
                self._start()
            elif running:
                self._arm()

    def _start(self) -> None:
        self.live = True
        for name, st in self.stages.items():
            if not st.finished:
                self._draw(name, st)
        self.progress.start()
        bars_drawn(True)

    def _stop(self) -> None:
        self.progress.stop()
        bars_drawn(False)

    def _draw(self, name: str, st: _Stage) -> None:
        if st.task is None:
            st.task = self.progress.add_task(name, total=st.total, completed=st.done,
                                             unit=item_unit(name))
            for other, total in self.stages.items():  # a sum stays below what it sums
                if other in SUM_STAGES and other != name and total.task is not None:
                    self.progress.remove_task(total.task)
                    total.task = None
                    self._draw(other, total)
        else:
            self.progress.update(st.task, completed=st.done, total=st.total)

    def _end(self, st: _Stage, now: float, said: bool = True) -> None:
        """The stage is over: its bar goes, and a step long enough to have had one is said,
        as it finishes (Rich prints the line above the bars still running)."""
        st.ended = now
        if st.task is not None:
            self.progress.remove_task(st.task)
            st.task = None
            if said and now - st.started >= self.delay:
                self.console.print(Text(self._finished(st), style="dim"))

    def _finished(self, st: _Stage) -> str:
        name = next(k for k, v in self.stages.items() if v is st)
        took = (st.ended or st.started) - st.started
        if st.total is None and not st.done:  # a step that counts nothing (an import, a check)
            return f"{name}: {took:.1f} s"
        unit = item_unit(name)
        amount = f"{st.done} {unit}" if unit else human_size(st.done)
        return f"{name}: {amount} in {took:.1f} s"

    @contextlib.contextmanager
    def lifted(self) -> Iterator[None]:
        with self.lock:
            was_live = self.live
            if was_live:
                self._stop()
            try:
                yield
            finally:
                if was_live and not self.closed:
                    self.progress.start()
                    bars_drawn(True)

    def close(self, failed: bool = False) -> None:
        """Stop drawing; a step of unknown size still drawn ended with the command, and is said
        unless the command failed."""
        with self.lock:
            self.closed = True
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            now = time.monotonic()
            for st in self.stages.values():
                if not st.finished:
                    self._end(st, now, said=not failed and st.total is None)
            if self.live:
                self._stop()


class _Amount(ProgressColumn):
    """Bytes done and total (``1.2/4.9 GB``), or items for an item stage (``2/3 inputs``)."""

    def __init__(self) -> None:
        super().__init__()
        self._bytes = DownloadColumn()

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit")
        if task.total is None and not task.completed:  # a step that counts nothing: no amount
            return Text("")
        if unit is None:
            return self._bytes.render(task)
        total = "?" if task.total is None else f"{int(task.total)}"
        return Text(f"{int(task.completed)}/{total} {unit}", style="progress.download")


class _Speed(ProgressColumn):
    """Speed once it is known: bytes per second, or items per second for an item stage."""

    def __init__(self) -> None:
        super().__init__()
        self._speed = TransferSpeedColumn()

    def render(self, task: Task) -> Text:
        if task.speed is None:
            return Text("")
        unit = task.fields.get("unit")
        if unit:
            return Text(f"{task.speed:.1f} {unit}/s", style="progress.data.speed")
        return self._speed.render(task)


def _silent(stage: str, done: int, total: int | None) -> None:
    pass

