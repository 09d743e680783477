"""The command-line layer: parse, call the core, render. ``main()`` is the console script."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence

from msn_cli.errors import EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, MsnError


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that cleanup (``finally``) runs."""


def _on_sigterm(signum, frame):  # pragma: no cover - exercised through a subprocess test
    raise Terminated()


def _debug() -> bool:
    return os.environ.get("MSN_DEBUG", "") not in ("", "0", "false")


def _error(message: str, hint: str | None = None) -> None:
    from msn_cli.cli.term import Term
    from msn_cli.util.safeio import redact

    # the last line of defence: no URL credentials in any message, whatever raised it
    Term().error(redact(message), redact(hint) if hint else hint)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; every known failure becomes one line on stderr and an exit code."""
    import typer

    try:  # typer >= 0.26 carries its own copy of click (and does not install click)
        from typer._click import ClickException
    except ImportError:  # older typer is built on click itself
        from click import ClickException  # type: ignore[assignment]

    from msn_cli.cli import completion
    from msn_cli.cli.app import app

    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (e.g. called from a test runner thread)
        pass
    from msn_cli.original import checkpoint

    checkpoint.FREEZE_GC_AFTER_TORCH = True  # a short-lived process: see checkpoint.import_torch
    command = typer.main.get_command(app)
    args = completion.optional_values(list(sys.argv[1:] if argv is None else argv))
    try:
        rv = command.main(args=args, prog_name="msn", standalone_mode=False)
        if rv == EXIT_INTERRUPTED:  # typer turns KeyboardInterrupt into a silent Exit(130)
            _error("interrupted")
        return rv if isinstance(rv, int) else 0
    except MsnError as e:
        if _debug():
            raise
        _error(e.message, e.hint)
        return e.exit_code
    except typer.Exit as e:
        return e.exit_code
    except ClickException as e:
        e.show()
        return e.exit_code if e.exit_code else EXIT_USAGE
    except (typer.Abort, KeyboardInterrupt):
        _error("interrupted")
        return EXIT_INTERRUPTED
    except Terminated:
        _error("terminated")
        return EXIT_TERMINATED
    except BrokenPipeError:
        return 1
    except Exception as e:  # a bug of ours: say so, without a wall of text
        if _debug():
            raise
        _error(f"unexpected {type(e).__name__}: {e}",
               hint="this is a bug in msn; rerun with MSN_DEBUG=1 for the traceback and report it")
        return 70


def run() -> None:
    try:
        code = main()
    except KeyboardInterrupt:  # Ctrl-C while the command was still being imported
        _error("interrupted")
        code = EXIT_INTERRUPTED
    sys.exit(code)
