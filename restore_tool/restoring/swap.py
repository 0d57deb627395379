"""The swap: sessions on the database being replaced are refused, ended or waited for, then
one transaction renames the scratch database into its place, the old one kept (or dropped
afterwards); the names both get."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg import sql

from .. import db
from ..db import Connection
from ..errors import SwapBlocked
from ..signals import signals_held


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


def check_prepared(conn: Connection, target: str) -> None:
    """Refuse prepared transactions on `target`: no session holds them, so nothing can end
    them, and the rename would wait on them."""
    prepared = [row[0] for row in conn.execute(
        "SELECT gid FROM pg_prepared_xacts WHERE database = %s ORDER BY prepared", (target,))]
    if prepared:
        raise SwapBlocked(
            f'Database "{target}" has {len(prepared)} prepared transaction(s) '
            f"({', '.join(prepared)}) that no session holds, so none can be ended: nothing "
            "was swapped.", "COMMIT PREPARED or ROLLBACK PREPARED them, then run again.")


def wait_for_sessions(conn: Connection, target: str, wait: float) -> None:
    """--wait-connections: give the sessions on `target` `wait` seconds to leave on their
    own. Nothing is changed meanwhile (new connections are not refused: a run killed here
    leaves the database as it was)."""
    deadline = time.monotonic() + wait
    found = sessions(conn, target)
    while found and time.monotonic() < deadline:
        time.sleep(0.1)
        found = sessions(conn, target)
    if found:
        raise SwapBlocked(
            f'{len(found)} session(s) still connected to "{target}" after {wait:g} s: '
            f"{'; '.join(map(str, found))}. Nothing was swapped.",
            "Stop them, or run without --wait-connections to end them.")


def token(target: str) -> str:
    """Six hex digits for one run's names: three from the target's whole name (targets that
    share the part a name keeps differ), three at random (runs in the same second differ)."""
    return hashlib.blake2b(target.encode(), digest_size=2).hexdigest()[:3] + \
        secrets.token_hex(2)[:3]


def stamped(target: str, kind: str, now: datetime, token: str) -> str:
    """`<target>_<kind>_<YYYYmmdd_HHMMSS>_<token>` in 63 bytes (PostgreSQL keeps no more of
    a name): the target's part is cut at a character boundary, the suffix never. The token
    tells apart runs in the same second and targets that share their first characters."""
    suffix = f"_{kind}_{now:%Y%m%d_%H%M%S}_{token}"
    room = NAME_BYTES - len(suffix.encode())
    return target.encode()[:room].decode(errors="ignore") + suffix


NAME_BYTES = 63
_IDLE = psycopg.pq.TransactionStatus.IDLE

_LOCK_HOLDERS = """
SELECT a.pid, coalesce(nullif(a.application_name, ''), 'an unnamed client'), a.usename,
       coalesce(a.state, '?'), to_char(a.xact_start, 'HH24:MI:SS')
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'object' AND l.granted AND l.classid = 'pg_database'::regclass
  AND l.objid = %s AND l.pid <> pg_backend_pid()
ORDER BY a.pid
"""


def swap(conn: Connection, target: str, scratch: str, old: str, *, comment: str | None,
         end_sessions: bool, patience: float, handed_over: Callable[[], None]
         ) -> tuple[str, list[Session]]:
    """One transaction ends the sessions on the target (with `end_sessions`), renames it to
    `old` and the scratch database into its place, and gives the new one the dump's `comment`
    (its marker goes): a kill at any moment leaves both as they were or both swapped, and
    nothing refusing connections. Each attempt waits at most a second for a lock
    (`lock_timeout`); attempts go on for `patience` seconds, and signals are honoured at
    every wait. The commit and `handed_over` run with signals held. Returns the old
    database's name as the server stored it, and the sessions ended."""
    deadline = time.monotonic() + patience
    ended: dict[int, Session] = {}
    while True:
        try:
            conn.execute("BEGIN")
            conn.execute("SET LOCAL lock_timeout = '1s'")
            if end_sessions:
                for session in sessions(conn, target):
                    conn.execute("SELECT pg_terminate_backend(%s)", (session.pid,))
                    ended[session.pid] = session
            db.rename_database(conn, target, old)  # waits for ended sessions to go
            db.rename_database(conn, scratch, target)
            conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(target), sql.SQL("NULL") if comment is None
                else sql.SQL(comment)))
            stored = conn.execute("SELECT datname FROM pg_database WHERE datname = %s",
                                  (old,)).fetchone()
            with signals_held():
                conn.execute("COMMIT")
                handed_over()
            return (str(stored[0]) if stored else old), list(ended.values())
        except (psycopg.errors.LockNotAvailable, psycopg.errors.ObjectInUse) as error:
            conn.execute("ROLLBACK")
            if time.monotonic() >= deadline:
                raise SwapBlocked(_blocked(conn, target, patience, error), "End the session "
                                  "named, or give it longer with --lock-wait.") from None
            time.sleep(0.2)
        except BaseException:
            if not conn.closed and conn.info.transaction_status != _IDLE:
                conn.execute("ROLLBACK")
            raise


def _blocked(conn: Connection, target: str, patience: float, error: psycopg.Error) -> str:
    oid = db.database_oid(conn, target)
    holders = conn.execute(_LOCK_HOLDERS, (oid,)).fetchall() if oid is not None else []
    who = "; ".join(f"{app} (role {user}, pid {pid}, {state}"
                    + (f" since {since}" if since else "") + ")"
                    for pid, app, user, state, since in holders)
    what = (f"a lock on database \"{target}\" held by {who}" if who
            else f"database \"{target}\" ({error.diag.message_primary})")
    return f"The swap waited {patience:g} s for {what}: nothing was swapped."


def drop_old(conn: Connection, old: str) -> str | None:
    """After the swap, --drop-old: None when dropped, else why not (it stays as it is)."""
    try:
        db.drop_database(conn, old, force=True)
    except psycopg.Error as error:
        return error.diag.message_primary or str(error)
    return None
