"""The load: pg_restore (in parallel where the format allows) or psql into a database, its
errors read line by line, its progress reported; and the database's own settings and comment
as the archive carries them."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from psycopg import sql

from .. import pgtools
from ..conninfo import child_env
from ..db import Connection
from ..pgtools import Tool
from ..pipeline import Progress
from .archive import Dump

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
    conninfo, env = child_env(conninfo)
    newer_dump = server.major < _major(dump.pg_dump_version)
    if dump.format == "plain":
        return _load_plain(dump.reader, conninfo, env, readable, server if newer_dump else None,
                           progress)
    jobs = jobs if dump.parallel else 1
    argv = pgtools.pg_restore_cmd(dump.reader, conninfo, readable, jobs=jobs, no_owner=no_owner)
    log = RestoreLog(dump.toc_entries or 0, newer_dump, jobs > 1, progress)
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

    argv = pgtools.psql_script_cmd(tool, conninfo, None)
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
    output = pgtools.run(pgtools.pg_restore_script_cmd(tool, readable, use_list=empty_list,
                                                       create=True, schema_only=True))
    return [(m.group(1), m.group(3)) for line in output.splitlines()
            if (m := _DATABASE_LINE.match(line))]


def apply_database_settings(conn: Connection, dbname: str,
                            settings: Sequence[tuple[str, str]]) -> None:
    for kind, rest in settings:
        conn.execute(sql.SQL("{} {} {}").format(
            sql.SQL(kind), sql.Identifier(dbname), sql.SQL(rest)))
