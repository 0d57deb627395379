"""The load: pg_restore (in parallel where the format allows) or psql into a database, its
errors read line by line, its progress reported; and the database's own settings and comment
as the archive carries them."""

from __future__ import annotations

import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase
from pathlib import Path

from psycopg import sql

from .. import pgtools
from ..conninfo import child_env
from ..db import Connection
from ..pgtools import Tool
from ..pipeline import Progress
from . import needs, script
from .archive import Dump, TocEntry

# One line per TOC entry done: in a serial restore `creating TABLE "public.user"`,
# `processing data for table "public.user"`, `executing SEQUENCE SET user_id_seq`; in a
# parallel one `processing item 2837 ENCODING ENCODING` (the serial part) and
# `finished item 2813 TABLE DATA charging_session`.
_STEP = re.compile(r'^pg_restore: (?:creating (?:[A-Z]+ )+|processing data for table |'
                   r'executing (?!SELECT)(?:[A-Z]+ )+)"?([^"]*)"?$')
_ITEM = re.compile(r"^pg_restore: (?:processing|finished) item \d+ (?:[A-Z]+ )+(.*)$")
_FROM_TOC = re.compile(r"^pg_restore: from TOC entry (.*)$")
# the server's severity (`ERROR:  `, `FEHLER:  `: in the server's language) is left out
_ERROR = re.compile(r"^pg_restore: error: (?:could not execute query: )?(?:[^:]+:  )?(.*)$")
# psql -v VERBOSITY=verbose: `psql:-:12: ERROR:  42601: syntax error …`, the SQLSTATE tells an
# error from a notice whatever the language; `psql:-:12: error: …` is psql's own (English)
_PSQL_MESSAGE = re.compile(r"^psql:[^:]*:(\d+): (?:[^:]+:  ([0-9A-Z]{5}): |error: )(.*)$")
_NOT_ERRORS = ("00", "01", "02")  # SQLSTATE classes of success, warning, no data
# Settings a client sends by itself, by the first major that sends it: pg_restore on every
# connection (_doSetFixedOutputState), pg_dump at the top of a plain script. A server older
# than that major does not know them; these errors, and only these, are tolerated.
CLIENT_SETTINGS = {"transaction_timeout": 17}
_COMMAND_SET = re.compile(r"^Command was: SET (\w+) = [^;]*;$")
# pg_dump 18 --statistics writes these; older servers have no such functions
STATISTICS_SINCE = 18
_STATISTICS_CALL = re.compile(r"^SELECT \* FROM pg_catalog\.pg_restore_(?:relation|attribute)"
                              r"_stats\(")
_SET = re.compile(r"^SET\s+(\w+)\s*(?:=|TO\s)", re.IGNORECASE)
_OWNER = re.compile(r"^(?:ALTER\s.*\sOWNER\s+TO\s|SET\s+SESSION\s+AUTHORIZATION\s)",
                    re.IGNORECASE | re.DOTALL)
_PRIVILEGES = re.compile(r"^(?:GRANT|REVOKE|ALTER\s+DEFAULT\s+PRIVILEGES)\s", re.IGNORECASE)
_TABLESPACE = re.compile(r"^SET\s+default_tablespace\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class Server:
    """What the load needs to know of the target server."""

    major: int
    settings: frozenset[str]  # the names in its pg_settings

    def unknown_sent_by(self, client_major: int) -> frozenset[str]:
        """The settings a client of `client_major` sends by itself that this server lacks."""
        return frozenset(name for name, since in CLIENT_SETTINGS.items()
                         if client_major >= since and name not in self.settings)


@dataclass(frozen=True)
class Leave:
    """What the user asked to leave out of the load (--no-owner, --no-privileges,
    --no-tablespaces); the same for archives (pg_restore's flags) and plain SQL (statements
    left out)."""

    owner: bool = False
    privileges: bool = False
    tablespaces: bool = False
    # what only a superuser may create, when the role is not one; by name: the subscriptions
    # (unless --with-subscriptions: then created afterwards, slotless)
    superuser_only: tuple[needs.Entry, ...] = ()
    subscriptions: tuple[str, ...] = ()  # always: the load would create them with their slot
    subscribe_after: bool = False  # --with-subscriptions
    exclude_data: tuple[str, ...] = ()  # --exclude-table-data patterns

    def leaves_out(self, kind: str, schema: str, name: str) -> bool:
        """Whether the load leaves out the entry so headed (what the proof does not expect):
        the rows of the tables --exclude-table-data names, and what only a superuser may
        create when the role is not one."""
        return (kind == "TABLE DATA" and excluded(self.exclude_data, schema, name)) or \
            any(entry.covers(kind, schema, name) for entry in self.superuser_only)


def excluded(patterns: Sequence[str], schema: str, table: str) -> bool:
    """Whether --exclude-table-data `patterns` leave out this table's rows: a pattern with a
    dot is matched against `schema.table`, one without against the table name (shell
    wildcards, case-sensitive, as the names are stored)."""
    return any(fnmatchcase(f"{schema}.{table}" if "." in pattern else table, pattern)
               for pattern in patterns)


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
class Loaded:
    """What the load met and what it left out on purpose (`3 statistics entries`)."""

    errors: list[LoadError] = field(default_factory=list)
    left_out: list[str] = field(default_factory=list)


@dataclass
class RestoreLog:
    """Reads `pg_restore --verbose` line by line: progress (finished TOC items of `total`)
    and errors, each with the TOC entry named on the line before it. Only an unknown setting
    the client itself `sends` on connecting is tolerated, told by the failed command (a bare
    `SET x = 0;`): a CREATE that fails, SET clause and all, is an error."""

    total: int
    sends: frozenset[str]  # settings the client sends that the server does not know
    parallel: bool = False  # pg_restore -j: items are counted by number
    progress: Progress | None = None
    done: int = 0
    entry: str | None = None
    errors: list[LoadError] = field(default_factory=list)
    by_bytes: bool = False  # progress is the bytes read (watch_bytes): items only name it
    label: str = "schema"

    def feed(self, line: str) -> None:
        line = line.rstrip("\n")
        if match := _FROM_TOC.match(line):
            self.entry = match.group(1)
        elif match := _ERROR.match(line):
            if "errors ignored on restore" not in line:
                self.errors.append(LoadError(self.entry, match.group(1)))
                self.entry = None
        elif (match := _COMMAND_SET.match(line)) and self.errors:
            # the failed command was the client's own `SET transaction_timeout = 0;` of a
            # setting this server lacks (a parallel worker's error names the entry it was
            # given; the command tells). pg_restore's own words, not the server's: any language
            if match.group(1) in self.sends:
                self.errors[-1] = replace(self.errors[-1], tolerated=True)
        elif match := (_ITEM if self.parallel else _STEP).match(line):
            self.done = min(self.total, self.done + 1)
            self.label = match.group(1)
            if self.progress is not None and not self.by_bytes:
                self.progress(self.done, self.total, match.group(1))

    @contextmanager
    def watch_bytes(self, pid: int, size: int) -> Iterator[None]:
        """While pg_restore (`pid`) runs: progress as the bytes of the dump (`size`) it and
        its workers have read, every half second, so a big table's data moves the bar as it
        loads; where /proc cannot tell, the finished items count instead."""
        if self.progress is None or size <= 0 or pgtools.bytes_read(pid) is None:
            yield
            return
        self.by_bytes = True
        stop = threading.Event()
        progress = self.progress

        def poll() -> None:
            most = 0
            while not stop.wait(0.5):
                read = pgtools.bytes_read(pid)
                if read is not None:
                    most = max(most, min(read, size))  # never backwards (a worker ended)
                    progress(most, size, self.label)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        try:
            yield
        finally:
            stop.set()
            poller.join()
            progress(size, size, self.label)


def load(conninfo: str, server: Server, dump: Dump, readable: Path, loader: Tool, *,
         jobs: int, leave: Leave, work: Path, progress: Progress | None = None,
         alongside: Callable[[Path | None], object] | None = None) -> Loaded:
    """Load the dump with `loader`; every error met, the settings the client sent that the
    server lacks marked tolerated. Statistics are left out for servers before 18. Plain SQL
    runs in one transaction, so its first error leaves nothing behind. `alongside` is called
    with the list of entries an archive's load restores (None: all) just before it starts,
    so that a second reader (the proof's) reads the same ones."""
    conninfo, env = child_env(conninfo)
    if dump.format == "plain":
        return _load_plain(loader, conninfo, env, readable, server, dump, leave, progress)
    loaded = Loaded()
    use_list = None
    left: Counter[str] = Counter()
    for entry in dump.entries:
        if why := _entry_left_out(entry, server, leave):
            left[why] += 1
    if left:
        use_list = work / "restore.list"
        use_list.write_text("".join(f"{e.dump_id}; {e.kind} {e.rest}\n" for e in dump.entries
                                    if not _entry_left_out(e, server, leave)))
        loaded.left_out += _left_out_words(left, server, leave)
    jobs = jobs if dump.parallel else 1
    if alongside is not None:
        alongside(use_list)
    argv = pgtools.pg_restore_cmd(loader, conninfo, readable, jobs=jobs,
                                  no_owner=leave.owner, no_privileges=leave.privileges,
                                  no_tablespaces=leave.tablespaces, use_list=use_list)
    log = RestoreLog(dump.toc_entries or 0, server.unknown_sent_by(loader.version[0]),
                     jobs > 1, progress)
    size = (sum(f.stat().st_size for f in readable.iterdir() if f.is_file())
            if readable.is_dir() else readable.stat().st_size)
    code = pgtools.stream(argv, env, log.feed, watch=lambda pid: log.watch_bytes(pid, size))
    if code != 0 and not log.errors:
        log.errors.append(LoadError(None, f"pg_restore exited with code {code}"))
    loaded.errors = log.errors
    return loaded


def _entry_left_out(entry: TocEntry, server: Server, leave: Leave) -> str | None:
    """Why the load leaves this TOC entry out (the comments and grants of what it leaves out
    with it)."""
    if entry.kind == "STATISTICS DATA" and server.major < STATISTICS_SINCE:
        return "statistics"
    if any(e.covers_listed(entry.kind, entry.rest) for e in leave.superuser_only):
        return "superuser"
    about = entry.kind if entry.kind not in ("COMMENT", "SECURITY LABEL") else \
        entry.rest.removeprefix("- ")
    if leave.subscriptions and about.startswith("SUBSCRIPTION"):
        return "subscriptions"
    if entry.kind == "TABLE DATA" and leave.exclude_data and excluded(
            leave.exclude_data, *entry.rest.split(" ")[:2]):
        return "table data (--exclude-table-data)"
    return None


def _left_out_words(left: Counter[str], server: Server, leave: Leave) -> list[str]:
    words = []
    for why, count in left.items():
        if why == "statistics":
            words.append(_statistics_left_out(count, server))
        elif why == "superuser":
            words.append(f"{count} statement(s) only a superuser may run, and the restoring "
                         f"role is not one ({', '.join(map(str, leave.superuser_only))})")
        elif why == "subscriptions" and not leave.subscribe_after:
            words.append(f"{count} subscription statement(s) ({', '.join(leave.subscriptions)}"
                         ": --with-subscriptions restores them disabled, without a slot)")
        elif why != "subscriptions":
            words.append(f"{count} {why}")
    return words


def _statistics_left_out(count: int, server: Server) -> str:
    return (f"{count} statistics entr{'y' if count == 1 else 'ies'} (PostgreSQL {server.major} "
            "cannot load them; analyze rebuilds them)")


_CHUNK = 1 << 20


def _load_plain(tool: Tool, conninfo: str, env: dict[str, str], readable: Path,
                server: Server, dump: Dump, leave: Leave,
                progress: Progress | None) -> Loaded:
    """psql in one transaction, fed the script statement by statement (script.pieces): COPY
    data passes untouched; left out (and named) are the SET statements of settings the server
    lacks that the dump's pg_dump writes itself, what --no-owner, --no-privileges and
    --no-tablespaces leave out, and statistics for servers before 18."""
    total = readable.stat().st_size
    loaded = Loaded()
    sends = server.unknown_sent_by(_major(dump.pg_dump_version))
    skipped: Counter[str] = Counter()
    unknown: set[str] = set()

    def left_out(piece: script.Piece, header: script.Header | None) -> str | None:
        head = piece.head
        if (match := _SET.match(head)) and match.group(1).lower() in sends:
            unknown.add(match.group(1).lower())
            return "settings"
        if leave.owner and _OWNER.match(head):
            return "ownership statements (--no-owner)"
        if leave.privileges and _PRIVILEGES.match(head):
            return "privilege statements (--no-privileges)"
        if leave.tablespaces and _TABLESPACE.match(head):
            return "tablespace settings (--no-tablespaces)"
        if server.major < STATISTICS_SINCE and _STATISTICS_CALL.match(head):
            return "statistics"
        if header and any(e.covers(header.kind, header.schema, header.name)
                          for e in leave.superuser_only):
            return "superuser"
        if leave.subscriptions and needs.SUBSCRIPTION_STATEMENT.match(head):
            return "subscriptions"
        return None

    def chunks() -> Iterator[bytes]:
        done, buffer, size = 0, [], 0
        header = None
        with readable.open("rb") as handle:
            for piece in script.pieces(handle):
                done += len(piece.text)
                header = piece.header or header
                if (leave.exclude_data and header and header.kind == "TABLE DATA"
                        and piece.kind is not script.Kind.BLANK
                        and excluded(leave.exclude_data, header.schema, header.name)):
                    if piece.kind is script.Kind.STATEMENT:  # the COPY (data lines follow)
                        skipped["table data (--exclude-table-data)"] += 1
                    continue
                if piece.kind is script.Kind.STATEMENT and (why := left_out(piece, header)):
                    skipped[why] += 1
                    continue
                buffer.append(piece.text)
                size += len(piece.text)
                if size >= _CHUNK:  # one write to psql per chunk, not per COPY row
                    if progress is not None:
                        progress(done, total, "SQL script")
                    yield b"".join(buffer)
                    buffer, size = [], 0
        if buffer:
            yield b"".join(buffer)

    def on_line(line: str) -> None:
        match = _PSQL_MESSAGE.match(line.rstrip("\n"))
        if match and not (match.group(2) or "XX").startswith(_NOT_ERRORS):
            loaded.errors.append(LoadError(f"line {match.group(1)}", match.group(3)))

    argv = pgtools.psql_script_cmd(tool, conninfo, None, sqlstate=True)
    code = pgtools.stream(argv, env, on_line, stdin=chunks())
    if progress is not None:
        progress(total, total, "SQL script")
    if code != 0 and not [e for e in loaded.errors if not e.tolerated]:
        loaded.errors.append(LoadError(None, f"psql exited with code {code}"))
    if count := skipped.pop("settings", 0):
        loaded.left_out.append(f"{count} SET statement(s) pg_dump {dump.pg_dump_version} "
                               f"writes that PostgreSQL {server.major} does not know "
                               f"({', '.join(sorted(unknown))})")
    loaded.left_out += _left_out_words(skipped, server, leave)
    return loaded


def _major(version: str | None) -> int:
    match = re.match(r"(\d+)", version or "")
    return int(match.group(1)) if match else 0


# ---------------------------------------------------------------------------------------------
# The database's own properties: pg_restore applies them only with --create, which would
# restore into the dump's own database name; read from its --create script and applied to the
# database this run creates (encoding, locale) and, after the load, to the one it loaded.

_CREATE_DATABASE = re.compile(r"^CREATE DATABASE (?:\"(?:[^\"]|\"\")+\"|\S+) WITH (.*);\s*$",
                              re.DOTALL)
_DATABASE_SETTING = re.compile(r"^ALTER DATABASE (?:\"(?:[^\"]|\"\")+\"|\S+) (SET (\w+)\b.*);"
                               r"\s*$", re.DOTALL)
_DATABASE_COMMENT = re.compile(r"^COMMENT ON DATABASE (?:\"(?:[^\"]|\"\")+\"|\S+) IS (.*);\s*$",
                               re.DOTALL)
_TABLESPACE_OPTION = re.compile(r"\s*\bTABLESPACE = (?:\"(?:[^\"]|\"\")+\"|\S+)")
# the statements of the script's first entries: the database's own, and the session SETs
_DATABASE_PART = re.compile(r"^(?:SET |SELECT pg_catalog\.set_config|CREATE DATABASE |"
                            r"ALTER DATABASE |COMMENT ON DATABASE )")


@dataclass(frozen=True)
class DatabaseProperties:
    """What an archive says of its database."""

    create_options: str = ""  # `TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = …`
    comment: str | None = None  # the literal, quotes included
    settings: tuple[tuple[str, str], ...] = ()  # (name, `SET work_mem TO '7MB'`)

    def without_tablespace(self) -> DatabaseProperties:
        return replace(self, create_options=_TABLESPACE_OPTION.sub("", self.create_options))


def database_properties(schema: Iterable[bytes]) -> DatabaseProperties:
    """The archive's CREATE DATABASE options, comment and `ALTER DATABASE … SET` settings,
    from its --create schema script (pgtools.pg_restore_database_cmd)."""
    create, comment, settings = "", None, []
    for piece in script.pieces(schema):
        if piece.kind is not script.Kind.STATEMENT:
            continue
        text = _LEADING_SPACE.sub("", piece.text.decode())
        if not _DATABASE_PART.match(text):
            break  # the schema begins
        if match := _CREATE_DATABASE.match(text):
            create = match.group(1)
        elif match := _DATABASE_COMMENT.match(text):
            comment = match.group(1)
        elif match := _DATABASE_SETTING.match(text):
            settings.append((match.group(2).lower(), match.group(1)))
    return DatabaseProperties(create, comment, tuple(settings))


_LEADING_SPACE = re.compile(r"^(?:\s+|--[^\n]*\n)+")


def apply_database_properties(conn: Connection, dbname: str, server: Server,
                              properties: DatabaseProperties) -> tuple[list[str], list[str]]:
    """Re-apply the comment and settings to `dbname`: (what was applied, what was skipped
    because the server does not know the setting)."""
    applied, skipped = [], []
    if properties.comment is not None:
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
            sql.Identifier(dbname), sql.SQL(properties.comment)))
        applied.append("comment")
    for name, rest in properties.settings:
        if name not in server.settings and "." not in name:
            skipped.append(name)
            continue
        conn.execute(sql.SQL("ALTER DATABASE {} {}").format(sql.Identifier(dbname),
                                                             sql.SQL(rest)))
        applied.append(name)
    return applied, skipped
