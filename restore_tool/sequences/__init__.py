"""Discover every sequence that feeds a column, measure it against its data, and move the
lagging ones just past it, in a constant number of statements however many tables there are;
and the verdicts of the repair and check steps."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from psycopg.errors import Diagnostic
from psycopg.rows import args_row
from psycopg.sql import SQL, Literal

from .. import db
from ..db import Connection
from ..errors import CommandFailed
from ..names import display_name, natural_key
from ..pipeline import Outcome, Status
from .plan import (
    NEAR_LIMIT as NEAR_LIMIT,
)
from .plan import (
    Action,
    Column,
    SequenceFix,
    SequenceInfo,
    SequenceState,
    plan,
    setval_args,
    unreadable_reason,
)
from .plan import (
    near_limit as near_limit,
)
from .sql import (
    APPLY,
    BATCH_LOCKS,
    DISCOVER,
    FAST_PATH_LOCKS,
    MEASURE,
    MEASURE_EDGE,
    PREPARE_DISCOVERY,
    READ_STATE,
    RESULT_CODE,
    FeedRow,
)

LOCK_TIMEOUT = "5s"  # for --lock when the session has none

# ---------------------------------------------------------------------------------------------
# Discovery: one catalog statement, and the lock budget in the same transaction.



def discover(conn: Connection, schemas: Sequence[str] = ()) -> tuple[list[SequenceInfo], int]:
    """Every sequence that feeds a column, with the columns it feeds; and how many locks the
    server's lock table can spare for measuring them."""
    with conn.transaction(force_rollback=True):  # reads only; its SET LOCALs go with it
        prepared = conn.execute(PREPARE_DISCOVERY).fetchone()
        with conn.cursor(row_factory=args_row(FeedRow)) as cur:
            rows = cur.execute(DISCOVER, {"schemas": list(schemas) or None}).fetchall()
    budget = int(prepared[2]) if prepared else BATCH_LOCKS
    fed: dict[int, list[FeedRow]] = {}
    for row in rows:
        fed.setdefault(row.seq_oid, []).append(row)
    return [_sequence(group) for group in fed.values()], budget


def _sequence(rows: list[FeedRow]) -> SequenceInfo:
    """One sequence from its DISCOVER rows, one row per column it feeds."""
    first = rows[0]
    return SequenceInfo(
        oid=first.seq_oid,
        schema=first.seq_schema,
        name=first.seq_name,
        sql_name=first.seq_sql_name,
        start=first.start,
        increment=first.increment,
        min_value=first.min_value,
        max_value=first.max_value,
        cycle=first.cycle,
        can_read=first.can_read_sequence,
        can_update=first.can_update_sequence,
        columns=tuple(
            Column(
                table_oid=row.table_oid,
                schema=row.table_schema,
                table=row.table_name,
                name=row.column_name,
                sql_name=row.column_sql_name,
                type=row.column_type,
                numeric=row.numeric_column,
                readable=row.can_read_column,
                row_security=row.row_security,
                lock_cost=row.lock_cost,
            )
            for row in rows
        ),
    )


def batches(seqs: Sequence[SequenceInfo], budget: int, *, tables: bool = True
            ) -> list[list[SequenceInfo]]:
    """Consecutive groups whose lock cost stays within `budget` (a costlier one goes alone):
    with `tables`, each sequence's tables and their indexes count too (the block reads or
    locks them); without, only the sequence does."""
    groups: list[list[SequenceInfo]] = []
    cost = 0
    for seq in seqs:
        locks = seq.lock_cost if tables else 1
        if not groups or cost + locks > budget:
            groups.append([])
            cost = 0
        groups[-1].append(seq)
        cost += locks
    return groups


# ---------------------------------------------------------------------------------------------
# Measuring and repairing: one PL/pgSQL block each per connection, whatever the count.


def _run_block(conn: Connection, template: str, items: list[dict[str, object]]) -> Any:
    """Run a MEASURE or APPLY block over `items` and return the JSON it reports. On an
    autocommit connection the block commits as it goes (its lock budget spent); on a
    caller's connection it runs inside the caller's transaction and commits nothing, its
    locks held until that transaction ends."""
    if not conn.autocommit:
        items = [{**item, "commit": False} for item in items]
    version = 18 if conn.info.server_version >= 180000 else 0
    body = template.format(
        input=Literal(json.dumps(items)).as_string(conn) + "::jsonb",
        read_state=READ_STATE[version],
        measure_edge=MEASURE_EDGE,
        code=RESULT_CODE,
    )
    results: list[str] = []

    def collect(diag: Diagnostic) -> None:
        if diag.sqlstate == RESULT_CODE and diag.message_primary is not None:
            results.append(diag.message_primary)

    conn.add_notice_handler(collect)
    try:
        conn.execute(SQL("DO {}").format(Literal(body)))
    finally:
        conn.remove_notice_handler(collect)
    if len(results) != 1:
        raise CommandFailed("The server ran the sequence block but sent back no result.")
    return json.loads(results[0])


def _with_commits(seqs: Sequence[SequenceInfo], budget: int, *, tables: bool = True
                  ) -> list[tuple[SequenceInfo, bool]]:
    """Each sequence, and whether the block commits after it to stay within `budget` locks
    (`tables` as for `batches`)."""
    return [(seq, index == len(group) - 1)
            for group in batches(seqs, budget, tables=tables) for index, seq in enumerate(group)]


@dataclass(frozen=True)
class Measurement:
    states: dict[int, SequenceState]
    edges: dict[int, int | None]


def measure(conn: Connection, seqs: Sequence[SequenceInfo], budget: int) -> Measurement:
    """Each sequence's state and the MAX (MIN when descending) over every column it feeds,
    committing within `budget` locks, and within the fast-path slots."""
    if not seqs:
        return Measurement({}, {})
    result = _run_block(conn, MEASURE, [
        {"oid": seq.oid, "schema": seq.schema, "name": seq.name,
         "descending": seq.descending, "commit": commit,
         "columns": [[column.schema, column.table, column.name] for column in seq.columns]}
        for seq, commit in _with_commits(seqs, min(budget, FAST_PATH_LOCKS))
    ])
    oids, last_values, called, edges = result
    states = {
        oid: SequenceState(last_value, is_called)
        for oid, last_value, is_called in zip(oids, last_values, called, strict=True)
        if last_value is not None
    }
    return Measurement(states, {oid: None if edge is None else int(edge)
                                for oid, edge in zip(oids, edges, strict=True)})


@dataclass(frozen=True)
class Applied:
    edges: dict[int, int]  # sequence oid -> the edge it was moved past
    drawn_from: set[int]  # moved, then used by other sessions before the repair ended


def apply(conn: Connection, moves: Sequence[Planned], budget: int, *, lock: bool = False
          ) -> Applied:
    """The setval calls of the planned moves: the sequences actually moved, each with the
    edge it was moved past (measured again under SHARE ROW EXCLUSIVE locks with `lock`), and
    those of them that other sessions drew from before the block ended."""
    if not moves:
        return Applied({}, set())
    by_oid = {item.seq.oid: item.fix for item in moves}
    items: list[dict[str, object]] = []
    # without `lock` the block touches the sequences alone: the fewer commits, each of which
    # waits for a WAL flush (its setval calls wrote WAL): 9 instead of 25 for 2,500 sequences
    for seq, commit in _with_commits([item.seq for item in moves], budget, tables=lock):
        fix = by_oid[seq.oid]
        assert fix.next_after is not None and fix.edge is not None
        value, called = setval_args(seq, fix.next_after)
        item: dict[str, object] = {
            "oid": seq.oid, "schema": seq.schema, "name": seq.name,
            "increment": seq.increment, "edge": fix.edge, "value": value, "called": called,
            "forward": fix.action is Action.FIXED, "commit": commit}
        if lock:
            item["columns"] = [[c.schema, c.table, c.name] for c in seq.columns]
            item["descending"] = seq.descending
        items.append(item)
    if lock:  # never wait forever behind a long writer: its own lock_timeout, else 5 s
        conn.execute("SELECT set_config('lock_timeout', %s, false) "
                     "WHERE current_setting('lock_timeout') = '0'", (LOCK_TIMEOUT,))
    oids, edges, moved = _run_block(conn, APPLY, items)
    return Applied({int(oid): int(edge) for oid, edge in zip(oids, edges, strict=True)},
                   {int(oid) for oid in moved})


# ---------------------------------------------------------------------------------------------
# The commands' core: survey (verify) and repair (fix-sequences), spread over `jobs`
# connections: the per-table work is CPU-bound in the server, and each connection takes an
# equal share of the sequences.


@dataclass(frozen=True)
class Planned:
    seq: SequenceInfo
    fix: SequenceFix


_MOVES = (Action.FIXED, Action.MOVED_BACK)
_UNREAD = "its state could not be read"


def _survey_share(conn: Connection, seqs: Sequence[SequenceInfo], budget: int,
                  exact: bool) -> list[Planned]:
    reasons = {seq.oid: unreadable_reason(seq) for seq in seqs}
    measured = measure(conn, [seq for seq in seqs if reasons[seq.oid] is None], budget)
    planned = []
    for seq in seqs:
        reason = reasons[seq.oid]
        state = measured.states.get(seq.oid)
        if reason is None and state is None:
            reason = _UNREAD
        planned.append(Planned(seq, plan(seq, state, measured.edges.get(seq.oid),
                                         exact=exact, skip_reason=reason)))
    return planned


def _repair_share(conn: Connection, seqs: Sequence[SequenceInfo], budget: int,
                  exact: bool, dry_run: bool, lock: bool = False) -> list[Planned]:
    planned = []
    for item in _survey_share(conn, seqs, budget, exact):
        if item.fix.action in _MOVES and not item.seq.can_update:
            name = display_name(item.seq.schema, item.seq.name)
            item = Planned(item.seq, replace(item.fix, action=Action.SKIPPED,
                                             reason=f"no UPDATE privilege on sequence {name}"))
        planned.append(item)
    if dry_run:
        return planned
    applied = apply(conn, [item for item in planned if item.fix.action in _MOVES], budget,
                    lock=lock)
    return [
        Planned(item.seq, _applied(item, applied, lock)) if item.seq.oid in applied.edges
        else Planned(item.seq, _moved_meanwhile(item.fix)) if item.fix.action in _MOVES
        else item
        for item in planned
    ]


def _applied(item: Planned, applied: Applied, lock: bool) -> SequenceFix:
    """The fix as made: under --lock the data may have grown since it was planned; a
    sequence other sessions drew from meanwhile is worth a word."""
    fix = replace(item.fix, applied=True)
    edge = applied.edges[item.seq.oid]
    if edge != fix.edge:
        fix = replace(fix, edge=edge, next_after=edge + item.seq.increment)
    if item.seq.oid in applied.drawn_from:
        fix = replace(fix, reason="other sessions drew from it during the repair" + (
            "" if lock else ": writers were active; run again with --lock to be sure none "
            "inserted an explicit id under the new value"))
    return fix


def _moved_meanwhile(fix: SequenceFix) -> SequenceFix:
    return replace(fix, action=Action.OK, next_after=None,
                   reason="another session moved it past the data meanwhile")


def _spread(
    conn: Connection,
    schemas: Sequence[str],
    jobs: int,
    connect: Callable[[], Connection] | None,
    budget: int | None,
    work: Callable[[Connection, Sequence[SequenceInfo], int], list[Planned]],
) -> list[Planned]:
    """Discover, then run `work` on equal shares of the sequences, one connection each, each
    with its share of the lock budget; the result in natural order of the first column each
    feeds (small_2 before small_10)."""
    seqs, capacity = discover(conn, schemas)
    seqs.sort(key=lambda seq: (natural_key(seq.columns[0].label if seq.columns else seq.name),
                               seq.schema, seq.name))
    total = capacity if budget is None else budget

    def run_share(c: Connection, share: Sequence[SequenceInfo], shares: int) -> list[Planned]:
        return work(c, share, max(1, min(BATCH_LOCKS, total // shares)))

    planned = db.spread(conn, connect, jobs, seqs, run_share)
    order = {seq.oid: index for index, seq in enumerate(seqs)}
    return sorted((item for share in planned for item in share),
                  key=lambda item: order[item.seq.oid])


def survey(
    conn: Connection,
    schemas: Sequence[str] = (),
    *,
    exact: bool = False,
    jobs: int = 1,
    connect: Callable[[], Connection] | None = None,
    budget: int | None = None,
) -> list[Planned]:
    """Discover and measure every sequence and plan its fix; changes nothing. The work is
    spread over `jobs` connections (`conn` and more from `connect`); `budget` is the number
    of locks all of them may hold at once (default: a quarter of the server's lock table)."""
    return _spread(conn, schemas, jobs, connect, budget,
                   lambda c, share, b: _survey_share(c, share, b, exact))


def repair(
    conn: Connection,
    schemas: Sequence[str] = (),
    *,
    exact: bool = False,
    dry_run: bool = False,
    jobs: int = 1,
    connect: Callable[[], Connection] | None = None,
    budget: int | None = None,
    lock: bool = False,
) -> list[SequenceFix]:
    """Move every lagging sequence just past its data (forward only unless `exact`).
    A dry run plans the same moves and calls no setval: setval is not transactional.
    `lock` holds writers off the tables (SHARE ROW EXCLUSIVE) while each is moved; without
    it the moved ones are checked again and any that a writer overtook is reported failed.
    `jobs`, `connect` and `budget` as for `survey`."""
    planned = _spread(conn, schemas, jobs, connect, budget,
                      lambda c, share, b: _repair_share(c, share, b, exact, dry_run, lock))
    return [item.fix for item in planned]


# ---------------------------------------------------------------------------------------------
# Verdicts: what the repair and check steps report.

def repair_outcome(fixes: Sequence[SequenceFix], *, dry_run: bool = False) -> Outcome:
    """The repair step's verdict: failed if a sequence cannot get past its data, a warning
    if one was skipped."""
    return Outcome(_repair_status(fixes), repair_summary(fixes, dry_run=dry_run), tuple(fixes))


def spare(planned: Sequence[Planned], near: float = NEAR_LIMIT) -> list[tuple[int, str]]:
    """The tables a smoke insert must leave alone, by OID, with the reason: a sequence that
    feeds them has less than `near` of its range left, and nextval is not rolled back."""
    return [(column.table_oid, f"its sequence is close to its limit ({close})")
            for item in planned if (close := near_limit(item.seq, item.fix, near))
            for column in item.seq.columns]


def check_outcome(planned: Sequence[Planned], near: float = NEAR_LIMIT) -> Outcome:
    """The check step's verdict: failed if any sequence lags its data; a warning naming
    each that has less than `near` of its range left, and the fix."""
    fixes = [item.fix for item in planned]
    close = [line for item in planned if not item.fix.lagging
             and (line := near_limit(item.seq, item.fix, near))]
    lagging = [fix for fix in fixes if fix.lagging]
    skipped = [fix for fix in fixes if fix.action is Action.SKIPPED]
    if lagging:
        status = Status.FAILED
        summary = f"{len(lagging)} of {len(fixes)} sequence(s) lag their data"
    else:
        status = Status.WARNING if skipped else Status.PASSED
        summary = f"{len(fixes) - len(skipped)} sequence(s) ahead of their data"
    if skipped:
        summary += f", {len(skipped)} skipped"
    if close:
        status = Status.FAILED if status is Status.FAILED else Status.WARNING
        summary += f"; {len(close)} close to their limit: {'; '.join(close)}"
    return Outcome(status, summary, tuple(fixes))


def _repair_status(fixes: Sequence[SequenceFix]) -> Status:
    actions = {fix.action for fix in fixes}
    if Action.FAILED in actions:
        return Status.FAILED
    if Action.SKIPPED in actions:
        return Status.WARNING
    return Status.PASSED


def count(fixes: Sequence[SequenceFix]) -> dict[str, int]:
    """How many sequences ended in each bucket the summary names."""
    buckets = {"fixed": 0, "moved back": 0, "already fine": 0, "skipped": 0, "failed": 0}
    names = {Action.FIXED: "fixed", Action.MOVED_BACK: "moved back", Action.OK: "already fine",
             Action.EMPTY: "already fine", Action.SKIPPED: "skipped", Action.FAILED: "failed"}
    for fix in fixes:
        buckets[names[fix.action]] += 1
    return buckets


def repair_summary(fixes: Sequence[SequenceFix], *, dry_run: bool) -> str:
    buckets = count(fixes)
    verb = "would fix" if dry_run else "fixed"
    parts = [f"{verb} {buckets['fixed']}"]
    if buckets["moved back"]:
        parts.append(f"{'would move' if dry_run else 'moved'} {buckets['moved back']} back")
    parts += [f"{buckets[name]} {name}" for name in ("already fine", "skipped", "failed")]
    return ", ".join(parts)
