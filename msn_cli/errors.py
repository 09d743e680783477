"""The project's own exceptions.

Every failure a user can cause or meet is one of these. Each carries a one-line message,
an optional hint, and the process exit code that :func:`msn_cli.cli.main` turns it into.
Library users catch :class:`MsnError`; nothing here imports Typer or Rich.
"""

from __future__ import annotations

# Exit codes, shared by every command (0 is success; documented in docs/cli.md).
EXIT_CHECK_FAILED = 1  # verify ran and a check failed
EXIT_USAGE = 2  # bad arguments, unknown names, refusing to overwrite
EXIT_BAD_INPUT = 3  # input that is not what it should be; verify could not run
EXIT_NETWORK = 4  # download / Hub errors, offline mode
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_TERMINATED = 143  # SIGTERM (128 + 15, what a shell reports for a process it killed)
EXIT_OUTPUT_CLOSED = 141  # stdout's reader went away (128 + SIGPIPE's 13, as git exits)

EXIT_CODES_SUMMARY = ("Exit codes: 0 ok, 1 a check failed, 2 usage or refusing to overwrite, "
                      "3 bad input, 4 network or Hub, 130 interrupted, 141 output closed (a pipe's reader "
                      "quit), 143 terminated.")
"""The one-line summary shown by ``msn -h`` and docs/cli.md."""


class MsnError(Exception):
    """Base class: a message for the user, a hint, an exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, *, exit_code: int | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class UsageError(MsnError):
    """Arguments that cannot work: unknown variant, bad URL scheme, conflicting options."""

    exit_code = EXIT_USAGE


class OutputExistsError(MsnError):
    """The output folder or file is there and ``--force`` was not given."""

    exit_code = EXIT_USAGE


class CheckpointError(MsnError):
    """The file is not a readable MSN checkpoint, or it is one we cannot convert."""

    exit_code = EXIT_BAD_INPUT


class MappingError(CheckpointError):
    """The plan found source keys nothing accounts for, or target keys nothing produces."""

    def __init__(self, message: str, problems: list[str], hint: str | None = None):
        super().__init__(message, hint)
        self.problems = problems


class FolderError(MsnError):
    """A converted folder is missing files, or its files are unreadable or inconsistent."""

    exit_code = EXIT_BAD_INPUT


class VerificationFailed(MsnError):
    """Verify ran and at least one check failed."""

    exit_code = EXIT_CHECK_FAILED


class NetworkError(MsnError):
    """A download or Hub call failed, or the network is off limits (offline mode)."""

    exit_code = EXIT_NETWORK


class DownloadError(NetworkError):
    """A transfer failed in a way a retry did not mend (404, short body, wrong hash)."""


class OfflineError(NetworkError):
    """``MSN_OFFLINE=1`` or ``HF_HUB_OFFLINE=1`` and the thing is not on disk."""


class HubError(NetworkError):
    """The Hugging Face Hub refused or failed a request."""


class CacheError(MsnError):
    """The cache folder is unusable or an entry is damaged."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(MsnError):
    """A config file is unreadable, malformed or hostile: a training run's
    ``params-msn-train.yaml``, or a folder's ``config.json`` values that cannot describe its
    weights (the message names the value)."""

    exit_code = EXIT_BAD_INPUT


class OutputError(MsnError):
    """The output location cannot be written: read-only, permission denied, disk full."""

    exit_code = EXIT_BAD_INPUT
