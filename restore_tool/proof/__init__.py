"""Prove a restore complete: the database against the dump it came from (every data block read
to its end, every entry present and healthy, every table's rows counted on both sides), or
against a live source database (its catalog, its row counts, and with `hashes` a content hash
of every table). Cheapest check first; each difference named in one line."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from psycopg import sql

from .. import db
from ..db import Connection
from ..names import display_name
from ..pipeline import Outcome, Status
from .catalog import ALIASES, COMPARED, INVENTORY, OTHERS, PINNED, TABLES, USER_TABLES
from .tally import DumpEntry, Tally

__all__ = ["Check", "against_dump", "against_source", "outcome"]

Key = tuple[str, str, str]  # kind, schema, name as a dump entry names it
Table = tuple[str, str]  # schema, name

BATCH = 100  # tables counted per statement
PATIENCE = 5.0  # seconds the loaders' sessions get to end (and write their row counters)
SHOWN = 5  # differences named in a step's summary (all of them are in its details)


@dataclass(frozen=True)
class Check:
    """One check of the proof: what it compared, and each difference it found."""

    name: str  # archive integrity, inventory, indexes valid, constraints validated, …
    status: Status
    summary: str
    differences: tuple[str, ...] = ()
    brief: str = ""  # what it proved, in the step's one-line summary (`497 rows in 21 tables`)

    def as_dict(self) -> dict[str, object]:
        return {"check": self.name, "status": str(self.status), "summary": self.summary,
                "differences": list(self.differences)}


def _check(name: str, differences: Sequence[str], passed: str,
           warnings: Sequence[str] = (), brief: str = "") -> Check:
    if differences:
        return Check(name, Status.FAILED, f"{len(differences)} difference(s)",
                     tuple(differences))
    if warnings:
        return Check(name, Status.WARNING, f"{passed}; not compared: {'; '.join(warnings)}",
                     brief=brief)
    return Check(name, Status.PASSED, passed, brief=brief)


def outcome(checks: Sequence[Check], what: str) -> Outcome:
    """The proof step's verdict: failed naming the first differences, else what was proved."""
    differences = [d for check in checks for d in check.differences]
    if differences:
        shown = "; ".join(differences[:SHOWN])
        more = f" (and {len(differences) - SHOWN} more)" if len(differences) > SHOWN else ""
        return Outcome(Status.FAILED, f"{len(differences)} difference(s) from {what}: "
                       f"{shown}{more}", tuple(checks))
    warned = [c for c in checks if c.status is Status.WARNING]
    summary = f"matches {what}: " + ", ".join(c.brief for c in checks if c.brief)
    if warned:
        summary += "; not compared: " + "; ".join(
            c.summary.split("; not compared: ", 1)[-1] for c in warned)
    return Outcome(Status.WARNING if warned else Status.PASSED, summary, tuple(checks))


# ---------------------------------------------------------------------------------------------
# Against a dump


def against_dump(conn: Connection, tally: Tally, *, jobs: int = 1,
                 connect: Callable[[], Connection] | None = None, fresh: bool = False,
                 what: str = "the dump") -> Outcome:
    """Compare the database on `conn` with what `tally` read of a dump. `fresh`: the tables
    were all created by the load just finished, so the server's row counters are used where
    they agree with each other and with the dump (count(*) where they do not)."""
    if not tally.complete:
        return outcome([Check("archive integrity", Status.FAILED, "does not read to its end",
                              (f"the dump is incomplete: {tally.damage}",))], what)
    checks = [Check("archive integrity", Status.PASSED,
                    f"every data block read to its end ({len(tally.rows)} tables)",
                    brief="read to its end")]
    expected = [(ALIASES.get(e.kind, e.kind), e) for e in tally.entries]
    left = Counter(kind for kind, _ in expected if kind not in COMPARED | {"TABLE DATA"})
    checks += _entries([(kind, e) for kind, e in expected if kind in COMPARED],
                       _inventory(conn), left, what)
    checks.append(_rows(conn, tally.rows, jobs, connect, fresh))
    return outcome(checks, what)


def _inventory(conn: Connection) -> dict[Key, tuple[str | None, bool]]:
    """Every object in the database as a dump entry names it: (problem, user object)."""
    with conn.transaction(force_rollback=True):  # its SET LOCAL goes with it
        conn.execute("SELECT set_config('search_path', '', true)")
        rows = conn.execute(INVENTORY).fetchall()
    return {(kind, schema, name): (problem, bool(user)) for kind, schema, name, problem, user
            in rows}


_WORDS = {"FK CONSTRAINT": "foreign key", "MATERIALIZED VIEW DATA": "materialized view",
          "ROW SECURITY": "row-level security on", "DEFAULT": "default of"}
_ON_TABLE = ("CONSTRAINT", "FK CONSTRAINT", "TRIGGER", "POLICY")


def _entries(expected: Sequence[tuple[str, DumpEntry]],
             found: Mapping[Key, tuple[str | None, bool]], not_compared: Counter[str],
             what: str) -> list[Check]:
    """The inventory (each entry present) and the health of what is present: indexes valid,
    constraints validated as in the dump, materialized views populated."""
    relations = {(e.schema, e.name) for kind, e in expected
                 if kind in ("TABLE", "VIEW", "MATERIALIZED VIEW", "FOREIGN TABLE")}
    missing, invalid, unvalidated, unpopulated = [], [], [], []
    for kind, entry in expected:
        key = (kind, entry.schema, entry.name)
        if kind == "MATERIALIZED VIEW DATA":
            state = found.get(key)
            if state is not None and state[0] is not None:
                unpopulated.append(f"{_named(kind, entry, relations)} {state[0]}")
            continue
        if key not in found:
            missing.append(f"{_named(kind, entry, relations)} missing")
            continue
        problem = found[key][0]
        if kind == "INDEX" and problem is not None:
            invalid.append(f"{_named(kind, entry, relations)} {problem}")
        elif kind in ("CONSTRAINT", "FK CONSTRAINT") and problem == "NOT VALID" \
                and not entry.not_valid:
            unvalidated.append(f"{_named(kind, entry, relations)} is NOT VALID in the database, "
                               f"validated in {what}")
    counted = Counter(kind for kind, _ in expected)
    words = ", ".join(f"{n} {kind.lower()}" for kind, n in sorted(counted.items()))
    skipped = ", ".join(f"{n} {kind.lower()}" for kind, n in sorted(not_compared.items()))
    return [
        Check("inventory", Status.FAILED if missing else Status.PASSED,
              f"{len(missing)} of {len(expected)} missing" if missing else
              f"{len(expected)} entries present ({words})"
              + (f"; not compared: {skipped}" if skipped else ""), tuple(missing),
              brief=f"{len(expected)} objects present"),
        _check("indexes valid", invalid, f"{counted['INDEX']} valid"),
        _check("constraints validated", unvalidated,
               f"{counted['CONSTRAINT'] + counted['FK CONSTRAINT']} as validated as in {what}"),
        _check("materialized views populated", unpopulated,
               f"{counted['MATERIALIZED VIEW DATA']} populated"),
    ]


def _named(kind: str, entry: DumpEntry, relations: set[Table]) -> str:
    """`index film_fulltext_idx`, `constraint film_pkey on film`, `default of film.film_id`."""
    word = _WORDS.get(kind, kind.lower())
    if kind in _ON_TABLE or kind == "DEFAULT":
        owners = [name for schema, name in relations
                  if schema == entry.schema and entry.name.startswith(name + " ")]
        if owners:
            table = max(owners, key=len)
            part = entry.name[len(table) + 1:]
            if kind == "DEFAULT":
                return f"{word} {display_name(entry.schema, table, part)}"
            return f"{word} {display_name(part)} on {display_name(entry.schema, table)}"
    if entry.schema == "-":
        return f"{word} {display_name(entry.name)}"
    if kind in ("FUNCTION", "PROCEDURE", "AGGREGATE"):
        return f"{word} {'' if entry.schema == 'public' else entry.schema + '.'}{entry.name}"
    return f"{word} {display_name(entry.schema, entry.name)}"


# ---------------------------------------------------------------------------------------------
# Rows


def _rows(conn: Connection, expected: Mapping[Table, int | None], jobs: int,
          connect: Callable[[], Connection] | None, fresh: bool, origin: str = "the dump"
          ) -> Check:
    """Each table's rows in the database against the rows its data entry holds. `fresh`: the
    load just created every table, so the server's row counters are used where they agree
    with each other and with the dump, if no other session is left on the database."""
    counted = {table: rows for table, rows in expected.items() if rows is not None}
    inserts = sorted(table for table, rows in expected.items() if rows is None)
    fresh = fresh and _alone(conn)
    found = _tables(conn, counted)
    differences: list[str] = []
    unreadable: list[str] = []
    known: dict[Table, int] = {}
    to_count: list[tuple[Table, int]] = []
    for table, want in counted.items():
        if table not in found:
            differences.append(f"{display_name(*table)}: {_rows_text(want)} in {origin}, and the "
                               "table is missing")
            continue
        oid, readable, stats = found[table]
        if not readable:
            unreadable.append(display_name(*table))
        elif fresh and _trusted(stats, want):
            known[table] = want
        else:
            to_count.append((table, oid))
    by_counters = len(known)
    known.update(count_rows(conn, [t for t, _ in to_count], jobs, connect))
    for table, want in counted.items():
        have = known.get(table)
        if have is not None and have != want:
            differences.append(f"{display_name(*table)}: {_rows_text(want)} in {origin}, {have:,} "
                               "in the database")
    warnings = []
    if unreadable:
        warnings.append(f"{len(unreadable)} table(s) this role may not count in full "
                        f"(privileges or row-level security): {', '.join(unreadable)}")
    if inserts:
        warnings.append(f"{len(inserts)} table(s) whose data the dump holds as INSERT "
                        f"statements: {', '.join(display_name(*t) for t in inserts)}")
    total = sum(counted[t] for t in known)
    how = f", {by_counters} by the server's row counters" if by_counters else ""
    return _check("rows", differences, f"{len(known)} tables hold the {total:,} rows expected"
                  f" ({len(to_count)} counted{how})", warnings,
                  brief=f"{_rows_text(total)} in {len(known)} table"
                  f"{'' if len(known) == 1 else 's'}")


def _rows_text(count: int) -> str:
    return f"{count:,} row{'' if count == 1 else 's'}"


def _trusted(stats: tuple[int | None, ...], want: int) -> bool:
    """The server's counters of a table the load created agree with each other and with the
    dump: every row inserted is live, none deleted, updated or aborted (ANALYZE and autovacuum
    make n_live_tup an estimate: then they no longer agree, and count(*) decides)."""
    inserted, live, dead, deleted, updated = stats
    return inserted == want and live == want and dead == 0 and deleted == 0 and updated == 0


def _alone(conn: Connection) -> bool:
    """Whether every other session on the database has ended, the loader's given up to
    PATIENCE seconds (they take a moment to go): a session writes its row counters when it
    ends, so only then do the counters hold every row written, and deleted, by anyone."""
    deadline = time.monotonic() + PATIENCE
    while True:
        row = conn.execute(OTHERS).fetchone()
        loaders, others = (int(row[0]), int(row[1])) if row else (0, 0)
        if others:
            return False
        if not loaders:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def _tables(conn: Connection, tables: Iterable[Table]
            ) -> dict[Table, tuple[int, bool, tuple[int | None, ...]]]:
    wanted = list(tables)
    rows = conn.execute(TABLES, {"schemas": [s for s, _ in wanted],
                                 "names": [n for _, n in wanted]}).fetchall()
    return {(schema, name): (oid, bool(readable), tuple(stats))
            for schema, name, oid, readable, *stats in rows}


def count_rows(conn: Connection, tables: Sequence[Table], jobs: int = 1,
               connect: Callable[[], Connection] | None = None) -> dict[Table, int]:
    """count(*) of each table (its own rows: FROM ONLY), spread over `jobs` connections."""
    return {t: int(v) for t, v in _per_table(conn, tables, jobs, connect, _COUNT).items()}


_COUNT = "count(*)"
# an order-free hash of a table's rows as text: the sum of a 60-bit slice of each row's md5
_HASH = "coalesce(sum(('x' || left(md5(t::text), 15))::bit(60)::bigint), 0)::text"


def _per_table(conn: Connection, tables: Sequence[Table], jobs: int,
               connect: Callable[[], Connection] | None, expression: str,
               pinned: bool = False) -> dict[Table, str]:
    if not tables:
        return {}

    def share(c: Connection, part: Sequence[Table], _shares: int) -> dict[Table, str]:
        return _aggregate(c, part, expression, pinned)

    found: dict[Table, str] = {}
    for part in db.spread(conn, connect, jobs, list(tables), share):
        found.update(part)
    return found


def _aggregate(conn: Connection, tables: Sequence[Table], expression: str, pinned: bool
               ) -> dict[Table, str]:
    """`expression` over each table's own rows, BATCH tables per statement; `pinned`: under
    the PINNED settings (so that a row prints the same text on both servers, whatever their
    versions and defaults), set for the statement's transaction only."""
    found: dict[Table, str] = {}
    for first in range(0, len(tables), BATCH):
        batch = tables[first:first + BATCH]
        parts = [sql.SQL("(SELECT {} FROM ONLY {}.{} AS t)").format(
            sql.SQL(expression),  # one of this module's constants
            sql.Identifier(schema), sql.Identifier(name)) for schema, name in batch]
        with conn.transaction():
            if pinned:
                for setting, value in PINNED.items():
                    conn.execute("SELECT set_config(%s, %s, true)", (setting, value))
            row = conn.execute(sql.SQL("SELECT ARRAY[{}]::text[]").format(
                sql.SQL(", ").join(parts))).fetchone()
        assert row is not None
        found.update(zip(batch, row[0], strict=True))
    return found


# ---------------------------------------------------------------------------------------------
# Against a live source


def against_source(conn: Connection, source: Connection, *, jobs: int = 1,
                   connect: Callable[[], Connection] | None = None, hashes: bool = False,
                   left_out: Callable[[str, str], bool] | None = None,
                   what: str = "the source") -> Outcome:
    """Compare the database on `conn` with the live database on `source` (read in one
    read-only snapshot, never written): its objects (as pg_dump would dump them), each
    table's row count, and with `hashes` each table's content under pinned settings; the
    rows of tables `left_out(schema, table)` names are not compared."""
    with source.transaction():
        source.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        origin = _inventory(source)
        tables = [(str(s), str(n)) for s, n in source.execute(USER_TABLES).fetchall()
                  if left_out is None or not left_out(str(s), str(n))]
        their_rows = count_rows(source, tables)
        their_hashes = _hashed(source, tables, 1, None) if hashes else {}
    expected = [(kind, DumpEntry(kind, schema, name, not_valid=problem == "NOT VALID"))
                for (kind, schema, name), (problem, user) in sorted(origin.items())
                if user and not (kind == "MATERIALIZED VIEW DATA" and problem is not None)]
    checks = _entries(expected, _inventory(conn), Counter(), what)
    checks.append(_rows(conn, their_rows, jobs, connect, fresh=False, origin="the source"))
    if hashes:
        present = [t for t in tables if t in _tables(conn, tables)]
        ours = _hashed(conn, present, jobs, connect)
        differences = [f"{display_name(*t)}: the rows differ from the source's"
                       for t in present if ours.get(t) != their_hashes.get(t)]
        checks.append(_check("hashes", differences,
                             f"{len(present)} tables hold the same rows as the source's",
                             brief="the same content"))
    return outcome(checks, what)


def _hashed(conn: Connection, tables: Sequence[Table], jobs: int,
            connect: Callable[[], Connection] | None) -> dict[Table, str]:
    """Each table's content hash, under the PINNED settings."""
    return _per_table(conn, tables, jobs, connect, _HASH, pinned=True)
