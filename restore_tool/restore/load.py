"""The load and swap steps: pg_restore (in parallel where the format allows) or psql into a
database, its errors read line by line, its progress reported; and the swap of a scratch
database into the target's place."""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from .. import db, pgtools
from ..db import Connection
from ..errors import SwapBlocked
from ..pgtools import Tool
from .archive import Dump

# done, total, what is being loaded
Progress = Callable[[int, int, str], None]

# One line per TOC entry done: in a serial restore `creating TABLE "public.user"`,
# `processing data for table "public.user"`, `executing SEQUENCE SET user_id_seq`; in a
# parallel one `processing item 2837 ENCODING ENCODING` (the serial part) and
# `finished item 2813 TABLE DATA charging_session`.
_STEP = re.compile(r'^pg_restore: (?:creating (?:[A-Z]+ )+|processing data for table |'
                   r'executing (?!SELECT)(?:[A-Z]+ )+)"?([^"]*)"?$')
_ITEM = re.compile(r"^pg_restore: (?:processing|finished) item \d+ (?:[A-Z]+ )+(.*)$")
_FROM_TOC = re.compile(r"^pg_restore: from TOC entry (.*)$")
_ERROR = re.compile(r"^pg_restore: error: (?:could not execute query: )?(?:ERROR:  )?(.*)$")
_PSQL_ERROR = re.compile(r"^psql:[^:]*:(\d+): (?:ERROR|FATAL):  (.*)$")
# settings a newer pg_dump writes that an older server does not know
_UNKNOWN_SETTING = re.compile(r'unrecognized configuration parameter "([^"]+)"')


@dataclass(frozen=True)
class Server:
    """What the load needs to know of the target server."""

    major: int
    settings: frozenset[str]  # the names in its pg_settings


@dataclass(frozen=True)
class LoadError:
    """One error pg_restore or psql met: its TOC entry (or script line) and the message."""

    where: str | None
    message: str
    tolerated: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"where": self.where, "message": self.message, "tolerated": self.tolerated}

    def __str__(self) -> str:
        prefix = "tolerated: " if self.tolerated else ""
        return f"{prefix}{self.message}" + (f" (TOC entry {self.where})" if self.where else "")


def restore_cmd(tool: Tool, conninfo: str, dump: Dump, readable: Path, *, jobs: int,
                no_owner: bool) -> list[str]:
    """pg_restore into `conninfo`, verbose (for progress), in parallel where it can."""
    argv = [str(tool.path), "--verbose", "--dbname", conninfo]
    if dump.parallel and jobs > 1:
        argv += ["--jobs", str(jobs)]
    if no_owner:
        argv += ["--no-owner"]
    return [*argv, str(readable)]


@dataclass
class RestoreLog:
    """Reads `pg_restore --verbose` line by line: progress (finished TOC items of `total`)
    and errors, each with the TOC entry named on the line before it."""

    total: int
    newer_dump: bool  # a dump from a newer pg_dump than the server: unknown settings expected
    parallel: bool = False  # pg_restore -j: items are counted by number
    progress: Progress | None = None
    done: int = 0
    entry: str | None = None
    errors: list[LoadError] = field(default_factory=list)

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if match := _FROM_TOC.match(line):
            self.entry = match.group(1)
        elif match := _ERROR.match(line):
            if "errors ignored on restore" not in line:
                message = match.group(1)
                tolerated = self.newer_dump and bool(_UNKNOWN_SETTING.search(message))
                self.errors.append(LoadError(self.entry, message, tolerated))
        elif match := (_ITEM if self.parallel else _STEP).match(line):
            self.done = min(self.total, self.done + 1)
            if self.progress is not None:
                self.progress(self.done, self.total, match.group(1))


def load(conninfo: str, server: Server, dump: Dump, readable: Path, *, jobs: int,
         no_owner: bool, progress: Progress | None = None) -> list[LoadError]:
    """Load the dump; every error met, the ones an older server is expected to meet marked
    tolerated. Plain SQL runs in one transaction, so its first error leaves nothing behind."""
    conninfo, env = pgtools.child_env(conninfo)
    newer_dump = server.major < _major(dump.pg_dump_version)
    if dump.format == "plain":
        return _load_plain(dump.reader, conninfo, env, readable, server if newer_dump else None,
                           progress)
    argv = restore_cmd(dump.reader, conninfo, dump, readable, jobs=jobs, no_owner=no_owner)
    log = RestoreLog(dump.toc_entries or 0, newer_dump, "--jobs" in argv, progress)
    code = pgtools.stream(argv, env, log.feed)
    if code != 0 and not log.errors:
        log.errors.append(LoadError(None, f"pg_restore exited with code {code}"))
    return log.errors


def _load_plain(tool: Tool, conninfo: str, env: dict[str, str], readable: Path,
                older: Server | None, progress: Progress | None) -> list[LoadError]:
    """psql in one transaction; for a server `older` than the pg_dump that wrote the script,
    the SET lines of settings it does not know are left out (and reported as tolerated)."""
    total = readable.stat().st_size
    errors: list[LoadError] = []

    def lines() -> Iterator[bytes]:
        done = 0
        with readable.open("rb") as handle:
            for line in handle:
                done += len(line)
                if older is not None and line.startswith(b"SET ") and not _known(
                        _setting_of(line), older):
                    errors.append(LoadError(None, f"skipped {line.decode().strip()} "
                                            f"(unknown to PostgreSQL {older.major})", True))
                    continue
                if progress is not None and done % (1 << 20) < len(line):
                    progress(done, total, "SQL script")
                yield line

    def on_line(line: str) -> None:
        if match := _PSQL_ERROR.match(line.rstrip("\n")):
            errors.append(LoadError(f"line {match.group(1)}", match.group(2)))

    argv = pgtools.psql_cmd(tool, conninfo, ["--single-transaction", "--quiet", "-f", "-"])
    code = pgtools.stream(argv, env, on_line, stdin=lines())
    if progress is not None:
        progress(total, total, "SQL script")
    if code != 0 and not [e for e in errors if not e.tolerated]:
        errors.append(LoadError(None, f"psql exited with code {code}"))
    return errors


def _known(setting: str, server: Server) -> bool:
    """Whether `server` accepts a SET of `setting`: one of its own, or a custom `a.b` one."""
    return setting in server.settings or "." in setting


def _setting_of(line: bytes) -> str:
    """`transaction_timeout` from `SET transaction_timeout = 0;`."""
    return line[4:].split(b" ", 1)[0].decode(errors="replace").lower()


def _major(version: str | None) -> int:
    match = re.match(r"(\d+)", version or "")
    return int(match.group(1)) if match else 0


# ---------------------------------------------------------------------------------------------
# Database-level settings and comment: pg_restore applies them only with --create, which
# would restore into the dump's own database name.

_DATABASE_LINE = re.compile(r"^(ALTER DATABASE|COMMENT ON DATABASE) (\"(?:[^\"]|\"\")+\"|\S+) "
                            r"(SET .*|IS .*)$")


def database_settings(tool: Tool, readable: Path, empty_list: Path) -> list[tuple[str, str]]:
    """(kind, rest) of each `ALTER DATABASE x SET ...` and `COMMENT ON DATABASE x IS ...`
    the archive carries."""
    empty_list.write_text("")
    output = pgtools.run([str(tool.path), "--create", "--schema-only", "-L", str(empty_list),
                          "-f", "-", str(readable)])
    return [(m.group(1), m.group(3)) for line in output.splitlines()
            if (m := _DATABASE_LINE.match(line))]


def apply_database_settings(conn: Connection, dbname: str,
                            settings: Sequence[tuple[str, str]]) -> None:
    for kind, rest in settings:
        conn.execute(sql.SQL("{} {} {}").format(
            sql.SQL(kind), sql.Identifier(dbname), sql.SQL(rest)))


# ---------------------------------------------------------------------------------------------
# Post-restore hooks


def migrate(command: str, url: str) -> str:
    """Run the user's migration command with DATABASE_URL set to the restored database."""
    env = dict(os.environ, DATABASE_URL=url)
    return pgtools.run(shlex.split(command), env)


def post_sql(tool: Tool, conninfo: str, script: Path) -> None:
    """Run an SQL file in one transaction, stopping at its first error."""
    conninfo, env = pgtools.child_env(conninfo)
    pgtools.run(pgtools.psql_cmd(tool, conninfo, ["--single-transaction", "--quiet", "-f",
                                                  str(script)]), env)


def analyze(tool: Tool, conninfo: str, jobs: int) -> None:
    """One parallel ANALYZE pass: a fresh restore has no planner statistics."""
    conninfo, env = pgtools.child_env(conninfo)
    pgtools.run([str(tool.path), "--analyze-only", "--quiet", "--jobs", str(jobs),
                 "--dbname", conninfo], env)


# ---------------------------------------------------------------------------------------------
# Swap


@dataclass(frozen=True)
class Session:
    """A client connected to the database about to be swapped out."""

    pid: int
    application: str
    user: str
    client: str

    def __str__(self) -> str:
        return (f"{self.application or 'an unnamed client'} (role {self.user}, from "
                f"{self.client}, pid {self.pid})")


_SESSIONS = """
SELECT pid, application_name, usename, coalesce(host(client_addr), 'a local socket')
FROM pg_stat_activity
WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'
ORDER BY pid
"""


def sessions(conn: Connection, database: str) -> list[Session]:
    return [Session(*row) for row in conn.execute(_SESSIONS, (database,))]


def allow_connections(conn: Connection, database: str, allow: bool) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} ALLOW_CONNECTIONS {}").format(
        sql.Identifier(database), sql.SQL("true" if allow else "false")))


def clear_sessions(conn: Connection, target: str, *, wait: float | None,
                   patience: float = 10.0) -> list[Session]:
    """Before the swap: refuse prepared transactions (no session holds them, so nothing can
    end them), block new connections to `target`, then end the sessions on it (the ones
    ended are returned), or with `wait` give them that many seconds to leave on their own.
    On any failure new connections are allowed again."""
    prepared = [row[0] for row in conn.execute(
        "SELECT gid FROM pg_prepared_xacts WHERE database = %s ORDER BY prepared", (target,))]
    if prepared:
        raise SwapBlocked(
            f'Database "{target}" has {len(prepared)} prepared transaction(s) '
            f"({', '.join(prepared)}) that no session holds, so none can be ended: nothing "
            "was swapped.", "COMMIT PREPARED or ROLLBACK PREPARED them, then run again.")
    allow_connections(conn, target, False)
    try:
        found = sessions(conn, target)
        ended: list[Session] = []
        if found and wait is None:
            for session in found:
                conn.execute("SELECT pg_terminate_backend(%s)", (session.pid,))
            ended, wait = found, patience
        deadline = time.monotonic() + (wait or 0)
        while found and time.monotonic() < deadline:
            time.sleep(0.1)
            found = sessions(conn, target)
        if found:
            raise SwapBlocked(
                f'{len(found)} session(s) still connected to "{target}" after {wait:g} s: '
                f"{'; '.join(map(str, found))}. Nothing was swapped.",
                "Stop them, or run without --wait-connections to end them.")
        return ended
    except BaseException:
        allow_connections(conn, target, True)
        raise


def swap(conn: Connection, target: str, scratch: str, old: str, *, drop_old: bool) -> None:
    """Rename the target (its sessions cleared) away and the scratch database into its place;
    with `drop_old` drop the old one, else let it take connections again. If the second
    rename fails, the first is undone."""
    db.rename_database(conn, target, old)
    try:
        db.rename_database(conn, scratch, target)
    except Exception:
        db.rename_database(conn, old, target)
        raise
    if drop_old:
        db.drop_database(conn, old)
    else:
        allow_connections(conn, old, True)
