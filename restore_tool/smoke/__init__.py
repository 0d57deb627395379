"""Smoke tests: one insert into every table (or the configured rows), each in a savepoint of a
transaction that is always rolled back: proof that writes work, and nothing left behind; and
the smoke step's verdict."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import psycopg
from psycopg import errors
from psycopg.sql import SQL, Identifier

from .. import db
from ..db import Connection
from ..names import display_name
from ..pipeline import Outcome, Status
from ..project import SmokeRow
from .insert import Attempt, Insert, build, configured
from .sql import TABLES, UNIQUE_COLUMNS, TableInfo

MAX_ATTEMPTS = 3
# Tables per rolled-back transaction: keeps each transaction short (it holds back vacuum while
# open, and every insert adds a subtransaction); no speed difference measured at 3,000 tables.
BATCH = 50

# Errors that say nothing about our values: trying another value cannot help.
_FINAL = (errors.QueryCanceled, errors.LockNotAvailable, errors.DeadlockDetected,
          errors.InsufficientPrivilege, errors.ReadOnlySqlTransaction)


class Verdict(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class SmokeResult:
    table: str  # for people: `user`, `billing.invoice`
    verdict: Verdict
    reason: str = ""  # the database's own words, for failed and skipped
    configured: bool = False  # a [[smoke]] row from restore-tool.toml
    attempts: int = 1

    def as_dict(self) -> dict[str, object]:
        return {"table": self.table, "verdict": str(self.verdict), "reason": self.reason,
                "configured": self.configured, "attempts": self.attempts}


@dataclass(frozen=True)
class Plan:
    """What to smoke-test: the configured rows, and automatic rows for every other table."""

    rows: tuple[SmokeRow, ...] = ()
    automatic: bool = True
    timeout: float = 5.0  # seconds any one statement may take (a trigger must not hang us)
    schemas: tuple[str, ...] = ()  # automatic rows only in these schemas (all when empty)
    # tables left alone, with why: an insert would take one of their sequence's last values
    # (nextval is not rolled back)
    spare: tuple[tuple[int, str], ...] = ()


AUTOMATIC = Plan()  # the default: an automatic row for every table


def standby(conn: Connection) -> bool:
    """A hot standby refuses every write: there is nothing to try."""
    row = conn.execute("SELECT pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def discover(conn: Connection, schemas: Sequence[str] = ()) -> list[TableInfo]:
    """Every ordinary table, partitioned ones through their parent, ordered by name."""
    rows = conn.execute(TABLES, {"schemas": list(schemas) or None}).fetchall()
    return [TableInfo.from_row(row) for row in rows]


def run(conn: Connection, plan: Plan, *, jobs: int = 1,
        connect: Callable[[], Connection] | None = None) -> list[SmokeResult]:
    """Insert the configured rows, then one automatic row into every table without one,
    spread over `jobs` connections (`conn` and more from `connect`). Everything is rolled
    back; each insert does consume one value of the sequences its defaults call."""
    results: list[SmokeResult] = []
    spared = dict(plan.spare)
    replaced: set[int] = set(spared)
    if plan.rows:
        with _rolled_back(conn, plan.timeout):
            for row in plan.rows:
                oid, result = _configured(conn, row, spared)
                results.append(result)
                if oid is not None:
                    replaced.add(oid)
    if not plan.automatic:
        return results
    found = discover(conn, plan.schemas)
    results += [SmokeResult(_label(t), Verdict.SKIPPED, spared[t.oid]) for t in found
                if t.oid in spared]
    tables = [table for table in found if table.oid not in replaced]

    def share(c: Connection, items: Sequence[TableInfo], _shares: int
              ) -> list[tuple[int, SmokeResult]]:
        done = []
        for first in range(0, len(items), BATCH):  # a new transaction every BATCH tables
            with _rolled_back(c, plan.timeout):
                done += [(table.oid, smoke_table(c, table))
                         for table in items[first:first + BATCH]]
        return done

    done = dict(pair for part in db.spread(conn, connect, jobs, tables, share) for pair in part)
    return results + [done[table.oid] for table in tables]


@contextmanager
def _rolled_back(conn: Connection, timeout: float) -> Iterator[None]:
    """A transaction that may write and always rolls back, with every constraint checked at
    once (a deferred one would otherwise never be) and the statement and lock timeouts set."""
    milliseconds = str(max(1, round(timeout * 1000)))
    with conn.transaction(force_rollback=True):
        conn.execute("SET TRANSACTION READ WRITE")  # verify's connections default to read-only
        conn.execute("SELECT set_config('statement_timeout', %s, true), "
                     "set_config('lock_timeout', %s, true)", (milliseconds, milliseconds))
        conn.execute("SET CONSTRAINTS ALL IMMEDIATE")
        yield


def _label(table: TableInfo) -> str:
    return display_name(table.schema, table.name)


def smoke_table(conn: Connection, table: TableInfo) -> SmokeResult:
    """Try up to MAX_ATTEMPTS inserts into `table`, each rolled back to its savepoint.
    The caller holds the transaction (see `run`)."""
    label = _label(table)
    if not table.can_insert:
        role = conn.execute("SELECT current_user").fetchone()
        return SmokeResult(label, Verdict.SKIPPED,
                           f"role {role[0] if role else '?'} has no INSERT privilege")
    attempt = Attempt(fill_keys=not table.before_insert_trigger)
    reason = ""
    for number in range(1, MAX_ATTEMPTS + 1):
        insert = build(table, attempt)
        started = time.monotonic()
        try:
            with conn.transaction(force_rollback=True):
                inserted = conn.execute(insert.statement, insert.params).rowcount
        except psycopg.DatabaseError as error:
            _reraise_if_ours(conn, error, time.monotonic() - started)
            reason = error.diag.message_primary or str(error)
            if _database_made_duplicate(conn, insert, error):
                return SmokeResult(label, Verdict.FAILED, _with_detail(error), attempts=number)
            following = _next_attempt(attempt, insert, error)
            if following is None:
                break
            attempt = following
            continue
        if inserted == 1 or (inserted == 0 and table.insert_rule):  # the rule's row is
            return SmokeResult(label, Verdict.PASSED, attempts=number)  # not counted
        return SmokeResult(label, Verdict.SKIPPED, _no_row_reason(conn, insert),
                           attempts=number)
    return SmokeResult(label, Verdict.SKIPPED, reason, attempts=number)


def _reraise_if_ours(conn: Connection, error: psycopg.DatabaseError, elapsed: float) -> None:
    """A lost connection or a cancel from another share or Ctrl-C stops the run; everything
    else the database says about one insert is that insert's result. A cancel is the server's
    statement timeout only once the timeout has passed (told by time, not by its words)."""
    if error.sqlstate is None or error.sqlstate.startswith(("08", "57P")):
        raise error
    if isinstance(error, errors.QueryCanceled) and elapsed < 0.95 * _statement_timeout(conn):
        raise error


def _statement_timeout(conn: Connection) -> float:
    """The statement timeout in seconds (infinite when none is set)."""
    row = conn.execute("SELECT setting::float8 / 1000 FROM pg_settings "
                       "WHERE name = 'statement_timeout'").fetchone()
    return row[0] if row and row[0] > 0 else float("inf")


def _database_made_duplicate(conn: Connection, insert: Insert,
                             error: psycopg.DatabaseError) -> bool:
    """A unique violation whose every key column got its value from the database (default,
    identity, trigger): a lagging sequence, the bug this tool exists for."""
    if not isinstance(error, errors.UniqueViolation):
        return False
    row = conn.execute(UNIQUE_COLUMNS, (error.diag.schema_name, error.diag.constraint_name)
                       ).fetchone()
    if row is None or not row[0] or not row[1]:
        return False  # an expression index, or the index is gone: cannot say
    return set(row[1]) <= insert.database


def _next_attempt(attempt: Attempt, insert: Insert,
                  error: psycopg.DatabaseError) -> Attempt | None:
    """A better attempt after a failure caused by our values, or None when none is left."""
    if isinstance(error, _FINAL):
        return None
    if isinstance(error, errors.NotNullViolation) and not attempt.fill_keys \
            and error.diag.column_name not in insert.ours:
        return replace(attempt, fill_keys=True)  # no trigger filled the key after all
    if attempt.template:
        return replace(attempt, template=False)  # invented values instead of copied ones
    if not attempt.variant and not isinstance(error, errors.UniqueViolation):
        return replace(attempt, variant=1)  # the second guesses
    if isinstance(error, errors.UniqueViolation) and insert.invented:
        return attempt  # fresh random values
    return None


def _no_row_reason(conn: Connection, insert: Insert) -> str:
    """Why the INSERT ... SELECT found no row: a referenced table is empty, or every row of
    it is already referenced where the reference must be unique."""
    for fk in insert.sources:
        query = SQL("SELECT EXISTS (SELECT FROM {})").format(
            Identifier(fk.ref_schema, fk.ref_table))
        row = conn.execute(query).fetchone()
        if row is not None and not row[0]:
            return f"{display_name(fk.ref_schema, fk.ref_table)} is empty: no row to refer to"
    names = ", ".join(display_name(fk.ref_schema, fk.ref_table) for fk in insert.sources)
    return f"every row of {names} is already referenced where the reference must be unique"


def _with_detail(error: psycopg.DatabaseError) -> str:
    primary = error.diag.message_primary or str(error)
    return f"{primary} ({error.diag.message_detail})" if error.diag.message_detail else primary


_RESOLVE = """
SELECT c.oid::int8, n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid = to_regclass(%s)
"""


def _configured(conn: Connection, row: SmokeRow, spared: dict[int, str]
                ) -> tuple[int | None, SmokeResult]:
    """A configured row must go in as given: any error fails it with the database's words.
    On a table a sequence close to its limit feeds it is skipped, saying so: its insert
    could take one of the last values."""
    name = Identifier(row.schema, row.table) if row.schema else Identifier(row.table)
    found = conn.execute(_RESOLVE, (name.as_string(conn),)).fetchone()
    if found is None:
        return None, SmokeResult(row.label, Verdict.FAILED,
                                 f'relation "{row.label}" does not exist', configured=True)
    oid, schema, table = found
    label = display_name(schema, table)
    if oid in spared:
        return oid, SmokeResult(label, Verdict.SKIPPED, spared[oid], configured=True)
    statement, params = configured(Identifier(schema, table), row.values)
    started = time.monotonic()
    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement, params)
    except psycopg.DatabaseError as error:
        _reraise_if_ours(conn, error, time.monotonic() - started)
        return oid, SmokeResult(label, Verdict.FAILED, _with_detail(error), configured=True)
    return oid, SmokeResult(label, Verdict.PASSED, configured=True)


# ---------------------------------------------------------------------------------------------
# The step's verdict


def step(conn: Connection, connect: Callable[[], Connection] | None, plan: Plan,
         jobs: int) -> Outcome:
    """The smoke step: every insert is rolled back (in transactions that may write, even on
    verify's read-only connections)."""
    if standby(conn):
        return Outcome(Status.SKIPPED, "the server is a read-only standby")
    return outcome(run(conn, plan, jobs=jobs, connect=connect))


def outcome(results: Sequence[SmokeResult]) -> Outcome:
    """Failed if any insert failed on a value the database made (or a configured row failed);
    a warning when tables were skipped; the first reasons in the summary."""
    by = {verdict: [r for r in results if r.verdict is verdict] for verdict in Verdict}
    failed, skipped = by[Verdict.FAILED], by[Verdict.SKIPPED]
    if not results:
        return Outcome(Status.SKIPPED, "no table to insert into")
    parts = [f"{len(by[Verdict.PASSED])} passed"]
    if failed:
        parts.insert(0, f"{len(failed)} failed{_first(failed)}")
    if skipped:
        parts.append(f"{len(skipped)} skipped{_first(skipped)}")
    status = Status.FAILED if failed else Status.WARNING if skipped else Status.PASSED
    return Outcome(status, ", ".join(parts), tuple(results))


def _first(results: Sequence[SmokeResult], shown: int = 2) -> str:
    """` (payment: new row ... ; film: ...; and 3 more)`."""
    listed = "; ".join(f"{r.table}: {r.reason}" for r in results[:shown])
    more = f"; and {len(results) - shown} more" if len(results) > shown else ""
    return f" ({listed}{more})"


