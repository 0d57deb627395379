"""What this tool leaves on a server when a run dies, and how it knows its own: every database
a run creates carries a comment marking it (`restore-tool run {…}`: the target, the run's pid
and host, its start), replaced by the dump's comment in the step that makes it the target.
A marked database whose run is gone is a leftover; `<target>_old_<stamp>` databases are the
copies --replace keeps."""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import dataclass
from datetime import datetime

from psycopg import sql

from .. import db, workdir
from ..db import LOCK_CLASS, Connection
from . import swap

MARK = "restore-tool run "
_OLD = re.compile(r"_old_(\d{8}_\d{6})(?:_([0-9a-f]{6}))?$")


def mark(target: str, started: datetime) -> str:
    """The marker comment, ASCII whatever the names (json escapes them)."""
    return MARK + json.dumps({"target": target, "pid": os.getpid(), "host": socket.gethostname(),
                              "started": started.isoformat(timespec="seconds")})


def set_mark(conn: Connection, database: str, target: str, started: datetime) -> None:
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        sql.Identifier(database), sql.Literal(mark(target, started))))


def clear_mark(conn: Connection, database: str) -> None:
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS NULL").format(sql.Identifier(database)))


@dataclass(frozen=True)
class Leftover:
    """A database a run created and did not finish with."""

    name: str
    oid: int
    target: str
    pid: int
    host: str
    started: str

    def __str__(self) -> str:
        return (f'"{self.name}" (left by a run for "{self.target}", pid {self.pid} on '
                f"{self.host}, started {self.started})")


_MARKED = """
SELECT d.datname, d.oid, s.description
FROM pg_database d JOIN pg_shdescription s
  ON s.objoid = d.oid AND s.classoid = 'pg_database'::regclass
WHERE s.description LIKE 'restore-tool run %'
ORDER BY d.datname
"""
_LOCKED = """
SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s
  AND objid = hashtext(%s)::oid AND objsubid = 2
"""


def dead(conn: Connection, running_for: str | None = None) -> list[Leftover]:
    """The marked databases whose run is gone: on this host its pid is not alive; elsewhere it
    holds no lock on its target. `running_for`: the target this process holds the lock of
    (no other run can be running for it)."""
    found = []
    for name, oid, description in conn.execute(_MARKED):
        try:
            fields = json.loads(description[len(MARK):])
            left = Leftover(name, int(oid), str(fields["target"]), int(fields["pid"]),
                            str(fields["host"]), str(fields["started"]))
        except (ValueError, KeyError, TypeError):
            continue
        if left.host == socket.gethostname() and left.pid == os.getpid():
            continue  # this run's own
        if left.host == socket.gethostname():
            running = workdir.alive(left.pid)
        else:
            running = left.target != running_for and conn.execute(
                _LOCKED, (LOCK_CLASS, left.target)).fetchone() is not None
        if not running:
            found.append(left)
    return found


def old_copies(conn: Connection, target: str) -> list[tuple[str, datetime]]:
    """The copies --replace kept of `target`, newest first, with when each was replaced: a
    name is one only if its token's first half is the target's digest and it is exactly
    what `swap.stamped` makes of `target` for its stamp and token (so another database
    whose name shares a cut prefix is never taken for one); names from before tokens must
    repeat the target whole."""
    rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE '%\\_old\\_%' "
                        "ORDER BY datname").fetchall()
    copies = []
    for (name,) in rows:
        match = _OLD.search(name)
        if not match:
            continue
        replaced = datetime.strptime(match.group(1), "%Y%m%d_%H%M%S")
        tok = match.group(2)
        if tok and tok[:3] != swap.token(target)[:3]:  # made from another name
            continue
        if name == (swap.stamped(target, "old", replaced, tok) if tok
                    else f"{target}_old_{match.group(1)}"):
            copies.append((name, replaced))
    return sorted(copies, key=lambda c: c[1], reverse=True)


def cleanup(conn: Connection, target: str, *, dry_run: bool, keep: int | None,
            older_than: float | None) -> list[str]:
    """`restore-tool cleanup`: drop the leftovers of dead runs (by OID: a database that lost
    its mark or its name since is left alone), and of `target`'s old copies those beyond the
    newest `keep` or older than `older_than` days (none unless one is given). One line per
    database, saying what was (or, with `dry_run`, would be) done. The caller holds the
    target's lock, so no run for it elsewhere is alive."""
    lines = []
    verb = "would drop" if dry_run else "dropped"
    for left in dead(conn, running_for=target):
        if not dry_run and db.database_name(conn, left.oid) != left.name:
            lines.append(f"left {left}: it changed since it was listed")
            continue
        if not dry_run:
            db.drop_database_oid(conn, left.oid)
        lines.append(f"{verb} {left}")
    now = datetime.now()
    for index, (name, replaced) in enumerate(old_copies(conn, target)):
        beyond = keep is not None and index >= keep
        old = older_than is not None and (now - replaced).total_seconds() > older_than * 86400
        about = f'"{name}" (the copy of "{target}" replaced {replaced:%Y-%m-%d %H:%M:%S})'
        if beyond or old:
            if not dry_run:
                db.drop_database(conn, name, force=True)
            lines.append(f"{verb} {about}")
        else:
            lines.append(f"kept {about}")
    return lines
