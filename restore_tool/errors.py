"""One exception family for everything a user can cause: each error carries a message,
a hint and an exit code, and is rendered in one place (the CLI)."""

from __future__ import annotations

import enum
from collections.abc import Sequence

import psycopg

from .conninfo import scrub


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # a step or check failed
    USAGE = 2  # bad usage, bad input or bad settings
    CANNOT_START = 3  # no connection, missing binary
    INTERRUPTED = 130


class RestoreToolError(Exception):
    """Base of every error the CLI turns into one sentence and an exit code."""

    exit_code: ExitCode = ExitCode.USAGE

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class ConfigError(RestoreToolError):
    """Settings that cannot work: a malformed URL, an unreadable .env file, a bad option."""

    exit_code = ExitCode.USAGE


class BadInput(RestoreToolError):
    """Input we will not work with: a file that is no dump, a target that is not empty."""

    exit_code = ExitCode.USAGE


class DamagedDump(BadInput):
    """A dump that does not read: truncated, partly uploaded, corrupt (`verify --against`
    reports it as the proof's first finding, exit 1)."""


class ConnectionFailed(RestoreToolError):
    """The target database could not be reached or refused us."""

    exit_code = ExitCode.CANNOT_START


class NoTarget(RestoreToolError):
    """Nothing names a target database, where a command must not guess one."""

    exit_code = ExitCode.CANNOT_START


class MissingBinary(RestoreToolError):
    """A PostgreSQL client tool we need is not installed anywhere we look."""

    exit_code = ExitCode.CANNOT_START


class EmbeddedServerError(RestoreToolError):
    """The embedded PostgreSQL server could not be started or stopped."""

    exit_code = ExitCode.CANNOT_START


class CommandFailed(RestoreToolError):
    """A child process (psql, pg_restore, ...) exited with an error: its argv (which never
    holds a password), its exit code and the last lines of its stderr."""

    exit_code = ExitCode.FAILED

    def __init__(self, message: str, hint: str | None = None, *,
                 argv: Sequence[str] = (), returncode: int | None = None,
                 stderr: Sequence[str] = ()) -> None:
        super().__init__(message, hint)
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stderr = tuple(stderr)


class Busy(RestoreToolError):
    """Another restore-tool run holds the target: nothing was done."""

    exit_code = ExitCode.CANNOT_START


class Interrupted(RestoreToolError):
    """SIGINT or SIGTERM stopped the run; the message says what was cleaned up."""

    exit_code = ExitCode.INTERRUPTED


class SwapBlocked(RestoreToolError):
    """The swap cannot happen without losing something (prepared transactions, sessions that
    would not leave): nothing was swapped."""

    exit_code = ExitCode.FAILED


class DatabaseError(RestoreToolError):
    """The server refused a statement outside any step (the lock query, a catalog read)."""

    exit_code = ExitCode.FAILED


def from_database(error: psycopg.Error, secret: str | None = None) -> DatabaseError:
    """The server's own words (primary message and detail), scrubbed of secrets."""
    diag = error.diag
    lines = str(error).strip().splitlines()
    message = diag.message_primary or (lines[0] if lines else type(error).__name__)
    if diag.message_detail:
        message = f"{message} ({diag.message_detail})"
    return DatabaseError(scrub(message, secret))
