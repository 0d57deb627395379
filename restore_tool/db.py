"""Connections to the target: one place that turns Settings into a live connection and
every libpq failure into one sentence; DDL on databases, the advisory lock per target, and
work spread over several connections."""

from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from contextlib import closing, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow

from . import embedded
from .config import EMBEDDED_DATABASE, Settings
from .conninfo import dbname, maintenance, mask, password_of, scrub, with_dbname
from .errors import Busy, ConnectionFailed

Connection = psycopg.Connection[TupleRow]

APPLICATION_NAME = "restore-tool"


def target_info(settings: Settings) -> str:
    """The target's conninfo; for the embedded default this starts its server and creates
    its database on first use."""
    if settings.conninfo is not None:
        return named(settings.conninfo)
    admin = embedded.ensure_running(settings.embedded_dir)
    with _connect(admin, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (EMBEDDED_DATABASE,)
        ).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(EMBEDDED_DATABASE)))
    return make_conninfo(admin, dbname=EMBEDDED_DATABASE)


def named(info: str) -> str:
    """The conninfo with its database written out: the one the server says libpq connected
    to (`current_database()`, service files and PGDATABASE included), or, when it cannot
    connect (the database does not exist yet, or the server is down: said later), the one
    libpq's rules name."""
    try:
        with _connect(info, autocommit=True) as conn:
            row = conn.execute("SELECT current_database()").fetchone()
    except ConnectionFailed:
        return with_dbname(info, dbname(info))
    return with_dbname(info, str(row[0]) if row else dbname(info))


def connect(info: str, *, read_only: bool = False, patience: float = 0.0) -> Connection:
    """An autocommit connection; `read_only` makes the server refuse any write (verify).
    A server that says it is full is asked again for `patience` seconds: a session closed a
    moment ago (the previous command's, under a role's CONNECTION LIMIT) is counted until
    its backend has exited."""
    options = "-c default_transaction_read_only=on" if read_only else None
    deadline = time.monotonic() + patience
    while True:
        try:
            return _connect(info, autocommit=True, options=options)
        except ConnectionFailed as error:
            if not any(full in str(error) for full in _FULL) or time.monotonic() > deadline:
                raise
        time.sleep(0.1)


_FULL = ("too many connections", "too many clients", "connection slots are reserved")


def _connect(
    info: str, *, autocommit: bool, options: str | None = None, name: str | None = None
) -> Connection:
    params = conninfo_to_dict(info)
    target = make_conninfo(
        info,
        application_name=name or params.get("application_name") or APPLICATION_NAME,
        options=" ".join(str(o) for o in (params.get("options"), options) if o) or None,
    )
    try:
        conn = psycopg.connect(target, autocommit=autocommit)
    except psycopg.OperationalError as error:
        raise _connection_failed(info, error) from None
    return conn


def database_exists(conn: Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)
                        ).fetchone() is not None


# What makes a database not empty: anything in a schema of its own (not the system ones).
# What users made, by kind: everything created after initdb has an OID from 16384 on
# (FirstNormalObjectId), whatever catalog it is in; other sessions' temporary objects aside.
_USER_OBJECTS = r"""
SELECT kind, n FROM (
  SELECT 1, 'relations', count(*) FROM pg_class
   WHERE oid >= 16384 AND relpersistence <> 't'
  UNION ALL SELECT 2, 'functions', count(*) FROM pg_proc WHERE oid >= 16384
  UNION ALL SELECT 3, 'types', count(*) FROM pg_type t
   WHERE oid >= 16384 AND typrelid = 0
     AND NOT EXISTS (SELECT 1 FROM pg_type e WHERE e.typarray = t.oid)
  UNION ALL SELECT 4, 'schemas', count(*) FROM pg_namespace
   WHERE oid >= 16384 AND nspname NOT LIKE 'pg\_temp\_%' AND nspname NOT LIKE 'pg\_toast\_temp\_%'
  UNION ALL SELECT 5, 'large objects', count(*) FROM pg_largeobject_metadata
  UNION ALL SELECT 6, 'extensions', count(*) FROM pg_extension WHERE oid >= 16384
  UNION ALL SELECT 7, 'other objects', {others} + (SELECT count(*) FROM pg_default_acl)
) found (rank, kind, n)
WHERE n > 0 ORDER BY rank
""".format(others=" + ".join(f"(SELECT count(*) FROM {catalog} WHERE oid >= 16384)" for catalog in (
    "pg_collation", "pg_operator", "pg_opfamily", "pg_cast", "pg_conversion", "pg_language",
    "pg_ts_config", "pg_ts_dict", "pg_foreign_data_wrapper", "pg_foreign_server",
    "pg_publication", "pg_event_trigger", "pg_statistic_ext")))


def user_objects(info: str) -> list[tuple[str, int]]:
    """What the database holds that users made, by kind (`[("functions", 3)]`); empty for
    a database as CREATE DATABASE makes it."""
    with connect(info) as conn:
        return [(str(kind), int(n)) for kind, n in conn.execute(_USER_OBJECTS)]


_READ_ONLY = """
SELECT pg_is_in_recovery(), current_setting('transaction_read_only'), current_user,
       current_database(), (SELECT source FROM pg_settings
                            WHERE name = 'default_transaction_read_only')
"""
_READ_ONLY_BY = {"user": "the role's", "database": "the database's",
                 "database user": "the role's in this database"}


def why_read_only(conn: Connection) -> str | None:
    """Why this session cannot write, in words (a hot standby, a read-only default and where
    it is set), or None."""
    row = conn.execute(_READ_ONLY).fetchone()
    assert row is not None
    standby, read_only, role, database, source = row
    if standby:
        return "the server is a hot standby (in recovery): it takes no writes"
    if read_only == "on":
        where = _READ_ONLY_BY.get(source, f"the server's ({source})")
        return (f'sessions of role "{role}" in "{database}" are read-only '
                f"(default_transaction_read_only = on, {where} setting)")
    return None


def create_database(conn: Connection, name: str, options: str = "") -> None:
    """CREATE DATABASE from template0, with `options` as a dump's own CREATE DATABASE writes
    them (`TEMPLATE = template0 ENCODING = 'LATIN1' LOCALE_PROVIDER = icu …`) when given."""
    if options:
        conn.execute(sql.SQL("CREATE DATABASE {} WITH {}").format(sql.Identifier(name),
                                                                 sql.SQL(options)))
        return
    conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))


def drop_database(conn: Connection, name: str, *, force: bool = False) -> None:
    """`force` ends its sessions first (WITH (FORCE), PostgreSQL 13+)."""
    statement = "DROP DATABASE IF EXISTS {} WITH (FORCE)" if force else "DROP DATABASE IF EXISTS {}"
    conn.execute(sql.SQL(statement).format(sql.Identifier(name)))


def database_oid(conn: Connection, name: str) -> int | None:
    row = conn.execute("SELECT oid FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return int(row[0]) if row else None


def database_name(conn: Connection, oid: int) -> str | None:
    """The name the server stores for database `oid` (None: it is gone)."""
    row = conn.execute("SELECT datname FROM pg_database WHERE oid = %s", (oid,)).fetchone()
    return str(row[0]) if row else None


def drop_database_oid(conn: Connection, oid: int) -> str | None:
    """Drop database `oid` (its sessions ended), whatever it is called now: the name dropped,
    None if it was already gone."""
    name = database_name(conn, oid)
    if name is not None:
        drop_database(conn, name, force=True)
    return name


def rename_database(conn: Connection, name: str, new_name: str) -> None:
    conn.execute(sql.SQL("ALTER DATABASE {} RENAME TO {}").format(
        sql.Identifier(name), sql.Identifier(new_name)))


# ---------------------------------------------------------------------------------------------
# One run per target: a session advisory lock, taken through the maintenance database (the
# target itself may not exist yet, and is renamed by a swap), so it holds across machines and
# goes away with the session if the run dies.

LOCK_CLASS = 0x5254  # "RT"; the second key is hashtext(target database name)

_HOLDER = """
SELECT a.application_name, a.usename, coalesce(host(a.client_addr), 'a local socket'),
       to_char(a.backend_start, 'YYYY-MM-DD HH24:MI:SS TZ'), a.pid
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s
  AND l.objid = hashtext(%s)::oid AND l.objsubid = 2
"""


@contextmanager
def target_lock(info: str, command: str, fallback: Connection | None = None) -> Iterator[None]:
    """Hold the target's lock for the whole run, or fail at once naming who holds it. When
    no connection to the maintenance database can be had (no CONNECT there, a role's
    CONNECTION LIMIT), the lock is taken on `fallback`, a connection to the target: it then
    keeps out other runs of the same command only."""
    target = dbname(info)
    name = f"restore-tool {command} (pid {os.getpid()} on {socket.gethostname()})"[:63]
    try:
        conn: Connection | None = _connect(maintenance(info), autocommit=True, name=name)
    except ConnectionFailed:
        if fallback is None:
            raise
        conn = None
    with closing(conn) if conn is not None else nullcontext():
        held = conn or fallback
        assert held is not None
        _try_lock(held, target)
        try:
            yield
        finally:
            if conn is None and not held.closed:
                held.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", (LOCK_CLASS, target))


def _try_lock(conn: Connection, target: str) -> None:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))",
                       (LOCK_CLASS, target)).fetchone()
    if not (row and row[0]):
        holder = conn.execute(_HOLDER, (LOCK_CLASS, target)).fetchone()
        who = (f"{holder[0] or 'an unnamed client'} (role {holder[1]}, from {holder[2]}, "
               f"since {holder[3]}, server pid {holder[4]})") if holder else "another session"
        raise Busy(f'Another run is working on database "{target}": {who}.',
                   "Wait for it to finish; nothing was changed.")


def default_jobs() -> int:
    """Connections to spread per-table work over: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


T = TypeVar("T")
R = TypeVar("R")


def spread(
    conn: Connection,
    connect: Callable[[], Connection] | None,
    jobs: int,
    items: Sequence[T],
    work: Callable[[Connection, Sequence[T], int], R],
) -> list[R]:
    """Run `work(connection, share, shares)` on up to `jobs` equal shares of `items` at once
    (never more shares than items): the first share on `conn`, each other one on its own
    connection from `connect`, opened here and closed after. Fewer shares when the server
    refuses more connections (its max_connections, the role's CONNECTION LIMIT); on any error
    every share is cancelled."""
    jobs = min(jobs, len(items))
    extra: list[Connection] = []
    try:
        while connect is not None and len(extra) < jobs - 1:
            try:
                extra.append(connect())
            except ConnectionFailed:
                break
        conns = [conn, *extra]
        shares = [items[index::len(conns)] for index in range(len(conns))]
        if len(conns) == 1:
            return [work(conn, shares[0], 1)]
        with ThreadPoolExecutor(len(conns)) as pool:
            futures = [pool.submit(work, c, share, len(conns))
                       for c, share in zip(conns, shares, strict=True)]
            try:
                done, _ = wait(futures, return_when=FIRST_EXCEPTION)
                for future in done:
                    future.result()  # raises the error of a share that failed
                return [future.result() for future in futures]
            except BaseException:
                for c in conns:
                    c.cancel_safe()
                wait(futures)
                raise
    finally:
        for c in extra:
            c.close()


# A refused connection carries no SQLSTATE (libpq keeps it to itself), so the hint is found by
# the message: the server's FATAL is in its own language, for which no hint is given (the
# message itself is shown as the server wrote it).
_HINTS = (
    ("password authentication failed", "Check the password (DATABASE_URL or POSTGRES_PASSWORD)."),
    ("no password supplied", "Set the password in DATABASE_URL, POSTGRES_PASSWORD or PGPASSWORD."),
    ("does not exist", "Check the database and role names, or create them first."),
    ("Connection refused", "Is the server running and listening on that host and port?"),
    ("No such file or directory", "Is the server running, and is that its socket directory?"),
    ("failed to resolve host", "Check the host name."),
    ("could not translate host name", "Check the host name."),
    ("timeout expired", "Is the host reachable from here?"),
)


def _connection_failed(info: str, error: psycopg.OperationalError) -> ConnectionFailed:
    reason = _reason(str(error))
    reason = scrub(reason, password_of(info))
    hint = next((h for needle, h in _HINTS if needle in reason), None)
    return ConnectionFailed(f"Could not connect to {mask(info)}: {reason}.", hint)


_PREFIXES = re.compile(
    r"^(connection failed: )?(connection to server (at|on) .*? failed: )?(FATAL: +)?"
)


def _reason(message: str) -> str:
    """libpq's first line without its boilerplate: `password authentication failed for ...`."""
    lines = [line.strip() for line in message.strip().splitlines() if line.strip()]
    first = lines[0] if lines else "unknown error"
    reason = _PREFIXES.sub("", first).rstrip(".")
    return reason or first


@dataclass(frozen=True)
class ServerHas:
    """What a restore may need of the server: its roles, tablespaces, the extensions it can
    install, its untrusted languages (c and internal among them), and whether the connected
    role is superuser."""

    roles: frozenset[str]
    tablespaces: frozenset[str]
    extensions: frozenset[str]
    untrusted_languages: frozenset[str]
    superuser: bool


def server_has(conn: Connection) -> ServerHas:
    def names(query: str) -> frozenset[str]:
        return frozenset(row[0] for row in conn.execute(query))

    superuser = conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
                             ).fetchone()
    return ServerHas(names("SELECT rolname FROM pg_roles"),
                     names("SELECT spcname FROM pg_tablespace"),
                     names("SELECT name FROM pg_available_extensions"),
                     names("SELECT lanname FROM pg_language WHERE NOT lanpltrusted"),
                     bool(superuser and superuser[0]))
