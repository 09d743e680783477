"""The console script: run the Typer app and turn every failure into a message and an exit code.

``main()`` is the one place where exceptions become text: the project's own errors print
``Error: ...`` and a hint, Typer's parse errors print as Click shows them, anything else is
reported as a bug. Typer and the app are imported inside ``main()``, so that Ctrl-C while they
load reads as ``interrupted`` (see :func:`run`) rather than as a traceback.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from msn_cli.cli.signals import Terminated, catch_signals
from msn_cli.errors import (
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_TERMINATED,
    EXIT_USAGE,
    MsnError,
)

EXIT_BUG = 70  # sysexits.h's EX_SOFTWARE: an error msn does not know, so a bug of msn's


@runtime_checkable
class ParseError(Protocol):
    """Click's ``ClickException`` interface (a bad option, a missing argument). Typer 0.26 and
    later raise the exceptions of its own copy of Click, which have no public class to name."""

    exit_code: int

    def show(self) -> None: ...


def _debug() -> bool:
    return os.environ.get("MSN_DEBUG", "") not in ("", "0", "false")


def _error(message: str, hint: str | None = None) -> None:
    from msn_cli.cli.term import Term
    from msn_cli.util.safeio import redact

    # the last line of defence: no URL credentials in any message, whatever raised it
    Term().error(redact(message), redact(hint) if hint else hint)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``msn ARGV`` (default: ``sys.argv[1:]``); return the exit code."""
    import typer

    from msn_cli.cli import completion
    from msn_cli.cli.app import app
    from msn_cli.original import checkpoint

    catch_signals()
    checkpoint.FREEZE_GC_AFTER_TORCH = True  # a short-lived process: see checkpoint.import_torch
    command = typer.main.get_command(app)
    args = completion.optional_values(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = command.main(args=args, prog_name="msn", standalone_mode=False)
    except (Exception, KeyboardInterrupt, Terminated) as e:
        return exit_code_for(e)
    if rv == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into a silent Exit(130)
        _error("interrupted")
    return rv if isinstance(rv, int) else 0


def exit_code_for(e: BaseException) -> int:
    """Say what stopped the command (on stderr) and return its exit code; with ``MSN_DEBUG``
    set, msn's own errors and bugs are raised again, for the traceback."""
    import typer

    if isinstance(e, MsnError):
        if _debug():
            raise e
        _error(plain_words(e.message), e.hint)
        return e.exit_code
    if isinstance(e, typer.Exit):
        return e.exit_code
    if isinstance(e, ParseError):
        said = bad_value_message(e)
        if said is None:
            e.show()
        else:
            _error(*said)
        return e.exit_code or EXIT_USAGE
    if isinstance(e, (typer.Abort, KeyboardInterrupt)):
        _error("interrupted")
        return EXIT_INTERRUPTED
    if isinstance(e, Terminated):
        _error("terminated")
        return EXIT_TERMINATED
    if isinstance(e, BrokenPipeError):
        return _output_closed()
    if _debug():
        raise e
    _error(f"unexpected {type(e).__name__}: {e}",
           hint="this is a bug in msn; rerun with MSN_DEBUG=1 for the traceback and report it")
    return EXIT_BUG


# Python's words inside a library's message that msn passes on: a file object's repr (PIL),
# exception class names chained by huggingface_hub ("LocalEntryNotFoundError: Got:
# ConnectError: [Errno 111] ..."), errno numbers
_INTERNALS = (
    (re.compile(r"cannot identify image file <_io\.[^>]*>"), "not in an image format PIL reads"),
    (re.compile(r"<_io\.\w+ name=(['\"])(.*?)\1[^>]*>"), r"\2"),
    (re.compile(r"\b(?:[A-Z][a-z0-9]*)+(?:Error|Exception): (?:Got: )?"), ""),
    (re.compile(r"\[Errno -?\d+\] "), ""),
)


def plain_words(message: str) -> str:
    """``message`` without Python's internals (see ``_INTERNALS``): what a user reads."""
    for pattern, repl in _INTERNALS:
        message = pattern.sub(repl, message)
    return message


# Typer checks a value's type and bounds with pydantic, whose sentences are not msn's
_PYDANTIC = (
    (re.compile(r"Input should be greater than or equal to (\S+)"), "must be {0} or more"),
    (re.compile(r"Input should be greater than (\S+)"), "must be more than {0}"),
    (re.compile(r"Input should be less than or equal to (\S+)"), "must be {0} or less"),
    (re.compile(r"Input should be less than (\S+)"), "must be less than {0}"),
    (re.compile(r"Input should be a valid integer"), "must be a whole number"),
    (re.compile(r"Input should be a valid number"), "must be a number"),
)


def bad_value_message(e: BaseException) -> tuple[str, str] | None:
    """msn's ``Error:`` line and hint for a value Typer refused (``--num-heads 0``), or None
    for every other parse error, which Click's own text says well."""
    param, message = getattr(e, "param", None), str(getattr(e, "message", ""))
    ctx = getattr(e, "ctx", None)
    if param is None or not message.startswith("Input should be"):
        return None
    for pattern, words in _PYDANTIC:
        m = pattern.match(message)
        if m:
            message = words.format(*(g.rstrip(".,") for g in m.groups()))
            break
    opts = getattr(param, "opts", None) or [str(getattr(param, "name", "value")).upper()]
    command = getattr(ctx, "command_path", "msn")
    return f"{max(opts, key=len)} {message}", f"{command} -h describes each option"


def _output_closed() -> int:
    """The reader of stdout went away (``msn inspect X | head -1``): exit quietly with the
    status a shell gives a process SIGPIPE killed, as git does. Nothing is said: stderr is
    often the same closed pipe, and the reader asked for no more. stdout is pointed at
    /dev/null so that the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # no real stdout (a test's capture): nothing to flush
        pass
    return EXIT_OUTPUT_CLOSED


def run() -> None:
    """The ``msn`` console script."""
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the command was still being imported
        _error("interrupted")
        code = EXIT_INTERRUPTED
    _forget_caught_interrupt()
    sys.exit(code)


def _forget_caught_interrupt() -> None:
    """Make ``python -m msn_cli`` exit with the code :func:`main` chose.

    CPython remembers a ``KeyboardInterrupt`` that escaped code run from a string (``exec`` and
    ``eval``: dataclasses and namedtuple build their methods that way, at import time), even
    when msn catches it later; under ``python -m`` the interpreter then kills itself with
    SIGINT at exit (exit status -2, not 130). Running a string resets that memory
    (``run_eval_code_obj`` in CPython's Python/pythonrun.c).
    """
    exec("")
