"""The swap: sessions on the database being replaced are refused, ended or waited for, then
the scratch database is renamed into its place and the old one kept (or dropped)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from psycopg import sql

from .. import db
from ..db import Connection
from ..errors import SwapBlocked


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
