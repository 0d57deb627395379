"""Discover every sequence that feeds a column, measure it against its data, and move the
lagging ones just past it, in a constant number of statements however many tables there are."""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from psycopg import sql
from psycopg.rows import class_row

from .db import Connection

# One row per (sequence, column) that the sequence feeds. A column is fed by a sequence when
#  - its DEFAULT calls nextval('s'::regclass) (serial, or a hand-written default, OWNED BY or
#    not): pg_attrdef depends on the sequence;
#  - the sequence is an identity sequence or OWNED BY it: the sequence depends on the column;
#  - its DEFAULT is the legacy nextval('s'::text) form, which records no dependency: the name
#    is resolved as nextval() would, with the session's search_path, then in the table's schema.
# OIDs are unique per catalog only, so every pg_depend join pins classid and refclassid.
# A child table (partition or inheritance child) whose parent is fed by the same sequence
# through the same column is folded into the parent: max() on the parent already covers it.
DISCOVER = """
WITH RECURSIVE legacy AS (
    SELECT ad.adrelid, ad.adnum, n.nspname,
           replace(m[1], '''''', '''') AS name
    FROM pg_attrdef ad
    JOIN pg_class c ON c.oid = ad.adrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace,
    LATERAL regexp_match(pg_get_expr(ad.adbin, ad.adrelid),
        'nextval\\(\\(?''((?:[^'']|'''')+)''::(?:text|character varying)\\)')
        AS m
    -- cheap filters first: deparsing every default costs ~50us each on a large schema
    WHERE ad.adbin::text LIKE
              '%%:funcid ' || 'nextval(regclass)'::regprocedure::oid || ' %%'
      AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.refobjid
                      WHERE d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                        AND d.refclassid = 'pg_class'::regclass AND s.relkind = 'S')
      AND m IS NOT NULL
), feeds AS (
    SELECT d.refobjid AS seq_oid, ad.adrelid AS rel_oid, ad.adnum AS attnum
    FROM pg_depend d
    JOIN pg_attrdef ad ON ad.oid = d.objid
    WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
    UNION
    SELECT d.objid, d.refobjid, d.refobjsubid::smallint
    FROM pg_depend d
    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
      AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
    UNION
    SELECT coalesce(
               CASE WHEN l.name ~ '^("([^"]|"")*"|[^".])*(\\.("([^"]|"")*"|[^".])*)?$'
                    THEN to_regclass(l.name) END,
               CASE WHEN l.name ~ '^("([^"]|"")*"|[^".])*$'
                    THEN to_regclass(quote_ident(l.nspname) || '.' || l.name) END)::oid,
           l.adrelid, l.adnum
    FROM legacy l
), columns AS (
    SELECT f.seq_oid, f.rel_oid, a.attname, a.attnum
    FROM feeds f
    JOIN pg_class s ON s.oid = f.seq_oid AND s.relkind = 'S'
    JOIN pg_class t ON t.oid = f.rel_oid AND t.relkind IN ('r', 'p')
    JOIN pg_attribute a ON a.attrelid = f.rel_oid AND a.attnum = f.attnum
                       AND NOT a.attisdropped
)
SELECT
    s.oid::bigint AS seq_oid,
    sn.nspname AS seq_schema,
    s.relname AS seq_name,
    format('%%I.%%I', sn.nspname, s.relname) AS seq_sql_name,
    q.seqstart AS start,
    q.seqincrement AS increment,
    q.seqmin AS min_value,
    q.seqmax AS max_value,
    q.seqcycle AS cycle,
    has_sequence_privilege(s.oid, 'SELECT') AS can_read_sequence,
    has_sequence_privilege(s.oid, 'UPDATE') AS can_update_sequence,
    t.oid::bigint AS table_oid,
    tn.nspname AS table_schema,
    t.relname AS table_name,
    c.attname AS column_name,
    format('%%I.%%I.%%I', tn.nspname, t.relname, c.attname) AS column_sql_name,
    format_type(a.atttypid, a.atttypmod) AS column_type,
    coalesce(NULLIF(ty.typbasetype, 0), ty.oid)
        IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype)
        AS numeric_column,
    has_column_privilege(t.oid, c.attnum, 'SELECT') AS can_read_column,
    row_security_active(t.oid) AS row_security,
    -- relations that max() on this table locks: it, its partitions or children, their indexes
    (WITH RECURSIVE tree(oid) AS (
         SELECT t.oid
         UNION ALL
         SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.oid)
     SELECT count(*) + (SELECT count(*) FROM pg_index x
                        WHERE x.indrelid IN (SELECT oid FROM tree))
     FROM tree) AS lock_cost
FROM columns c
JOIN pg_class s ON s.oid = c.seq_oid
JOIN pg_namespace sn ON sn.oid = s.relnamespace
JOIN pg_sequence q ON q.seqrelid = s.oid
JOIN pg_class t ON t.oid = c.rel_oid
JOIN pg_namespace tn ON tn.oid = t.relnamespace
JOIN pg_attribute a ON a.attrelid = c.rel_oid AND a.attnum = c.attnum
JOIN pg_type ty ON ty.oid = a.atttypid
WHERE tn.nspname <> 'information_schema' AND left(tn.nspname, 3) <> 'pg_'
  AND NOT EXISTS (
      SELECT 1
      FROM pg_inherits i
      JOIN columns p ON p.rel_oid = i.inhparent AND p.seq_oid = c.seq_oid
                    AND p.attname = c.attname
      WHERE i.inhrelid = c.rel_oid)
  AND (%(schemas)s::text[] IS NULL
       OR EXISTS (SELECT 1 FROM columns o
                  JOIN pg_class ot ON ot.oid = o.rel_oid
                  JOIN pg_namespace onn ON onn.oid = ot.relnamespace
                  WHERE o.seq_oid = c.seq_oid
                    AND (onn.nspname = ANY(%(schemas)s) OR sn.nspname = ANY(%(schemas)s))))
ORDER BY sn.nspname, s.relname, tn.nspname, t.relname, c.attname
"""


@dataclass(frozen=True)
class FeedRow:
    """One catalog row of DISCOVER: a sequence and one column it feeds."""

    seq_oid: int
    seq_schema: str
    seq_name: str
    seq_sql_name: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cycle: bool
    can_read_sequence: bool
    can_update_sequence: bool
    table_oid: int
    table_schema: str
    table_name: str
    column_name: str
    column_sql_name: str
    column_type: str
    numeric_column: bool
    can_read_column: bool
    row_security: bool
    lock_cost: int


@dataclass(frozen=True)
class Column:
    table_oid: int
    schema: str
    table: str
    name: str
    sql_name: str  # quoted as PostgreSQL quotes it: public."user".user_id
    type: str
    numeric: bool
    readable: bool
    row_security: bool
    lock_cost: int = 1

    @property
    def label(self) -> str:
        return display_name(self.schema, self.table, self.name)


@dataclass(frozen=True)
class SequenceInfo:
    """A sequence, its parameters, and every column it feeds."""

    oid: int
    schema: str
    name: str
    sql_name: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cycle: bool
    can_read: bool
    can_update: bool
    columns: tuple[Column, ...] = field(default=())

    @property
    def descending(self) -> bool:
        return self.increment < 0

    @property
    def label(self) -> str:
        """How the runbook names it: `user.user_id` when it feeds one column, else the
        sequence and the columns it feeds."""
        if len(self.columns) == 1:
            return self.columns[0].label
        fed = ", ".join(column.label for column in self.columns)
        return f"{display_name(self.schema, self.name)} (for {fed})"

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def lock_cost(self) -> int:
        """Relations a transaction that measures this sequence holds locks on."""
        return 1 + sum(column.lock_cost for column in self.columns)


@dataclass(frozen=True)
class SequenceState:
    last_value: int
    is_called: bool


class Action(enum.StrEnum):
    FIXED = "fixed"  # moved forward past the data
    MOVED_BACK = "moved back"  # --exact moved it backwards onto the data edge
    OK = "ok"  # already past the data
    EMPTY = "empty"  # no rows: left alone
    SKIPPED = "skipped"  # we may not read or update it
    FAILED = "failed"  # it cannot get past its data


@dataclass(frozen=True)
class SequenceFix:
    """What happened (or, in a dry run, would happen) to one sequence."""

    sequence: str
    label: str
    columns: tuple[str, ...]
    action: Action
    edge_kind: str  # "max", or "min" for descending sequences
    edge: int | None = None
    next_before: int | None = None
    next_after: int | None = None
    reason: str | None = None
    applied: bool = False

    @property
    def lagging(self) -> bool:
        """Inserts through this sequence can collide with existing rows (or cannot happen)."""
        return self.action in (Action.FIXED, Action.FAILED)

    def as_dict(self) -> dict[str, object]:
        return {
            "sequence": self.sequence,
            "label": self.label,
            "columns": list(self.columns),
            "action": str(self.action),
            self.edge_kind: self.edge,
            "next_before": self.next_before,
            "next_after": self.next_after,
            "applied": self.applied,
            "reason": self.reason,
        }


def display_name(*parts: str) -> str:
    """Dotted name for people: `public.` is left out as the runbook does, and a part is
    quoted only when it is not a plain lower-case name (so `user.user_id`)."""
    if len(parts) > 1 and parts[0] == "public":
        parts = parts[1:]
    return ".".join(p if p.isidentifier() and p == p.lower() else _quoted(p) for p in parts)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# ---------------------------------------------------------------------------------------------
# The arithmetic: pure functions over plain numbers, tested without a server.


def next_value(seq: SequenceInfo, state: SequenceState) -> int | None:
    """The value nextval() would return, or None when the sequence is exhausted."""
    if not state.is_called:
        return state.last_value
    candidate = state.last_value + seq.increment
    if seq.min_value <= candidate <= seq.max_value:
        return candidate
    if seq.cycle:
        return seq.min_value if seq.increment > 0 else seq.max_value
    return None


def first_past(seq: SequenceInfo, edge: int) -> int:
    """The first value on the sequence's grid (START + k*INCREMENT, k >= 0) past the data
    edge: above MAX for ascending sequences, below MIN for descending ones."""
    step = abs(seq.increment)
    if seq.increment > 0:
        if edge < seq.start:
            return seq.start
        return seq.start + ((edge - seq.start) // step + 1) * step
    if edge > seq.start:
        return seq.start
    return seq.start - ((seq.start - edge) // step + 1) * step


def setval_args(seq: SequenceInfo, target: int) -> tuple[int, bool]:
    """setval() arguments that make nextval() return `target`: (target - INCREMENT, called)
    as pg_dump writes it, so pg_sequences.last_value shows the data edge; START itself can
    only be reached uncalled, as its predecessor may lie outside MINVALUE..MAXVALUE."""
    if target == seq.start:
        return target, False
    return target - seq.increment, True


def plan(
    seq: SequenceInfo,
    state: SequenceState | None,
    edge: int | None,
    *,
    exact: bool = False,
    skip_reason: str | None = None,
) -> SequenceFix:
    """Decide what to do with one sequence; nothing here talks to the server."""
    fix = SequenceFix(
        sequence=seq.sql_name,
        label=seq.label,
        columns=tuple(c.sql_name for c in seq.columns),
        action=Action.OK,
        edge_kind="min" if seq.descending else "max",
        edge=edge,
    )
    if skip_reason is not None or state is None:
        return replace(fix, action=Action.SKIPPED, reason=skip_reason)
    current = next_value(seq, state)
    fix = replace(fix, next_before=current)
    if edge is None:
        return replace(fix, action=Action.EMPTY, next_after=current)

    target = first_past(seq, edge)
    if not seq.min_value <= target <= seq.max_value:
        bound = "MAXVALUE" if seq.increment > 0 else "MINVALUE"
        limit = seq.max_value if seq.increment > 0 else seq.min_value
        return replace(
            fix,
            action=Action.FAILED,
            reason=f"cannot get past its data: {fix.edge_kind} is {edge} "
            f"but {bound} is {limit}",
        )
    if current is None:
        if exact:
            return replace(fix, action=Action.MOVED_BACK, next_after=target,
                           reason="was exhausted")
        return replace(
            fix,
            action=Action.FAILED,
            reason="has reached its MAXVALUE and can give no more values "
            "(--exact resets it to the data edge)",
        )
    behind = current <= edge if seq.increment > 0 else current >= edge
    if behind:
        return replace(fix, action=Action.FIXED, next_after=target)
    if exact and current != target:
        return replace(fix, action=Action.MOVED_BACK, next_after=target)
    return replace(fix, next_after=current)


# ---------------------------------------------------------------------------------------------
# The statements: discovery, measurement, repair. Each is one statement whatever the count.


def discover(conn: Connection, schemas: Sequence[str] = ()) -> list[SequenceInfo]:
    """Every sequence that feeds a column, with the columns it feeds."""
    with conn.cursor(row_factory=class_row(FeedRow)) as cur:
        rows = cur.execute(DISCOVER, {"schemas": list(schemas) or None}).fetchall()
    grouped: dict[int, SequenceInfo] = {}
    for row in rows:
        column = Column(
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
        seq = grouped.get(row.seq_oid) or SequenceInfo(
            oid=row.seq_oid,
            schema=row.seq_schema,
            name=row.seq_name,
            sql_name=row.seq_sql_name,
            start=row.start,
            increment=row.increment,
            min_value=row.min_value,
            max_value=row.max_value,
            cycle=row.cycle,
            can_read=row.can_read_sequence,
            can_update=row.can_update_sequence,
        )
        grouped[row.seq_oid] = replace(seq, columns=(*seq.columns, column))
    return list(grouped.values())


def unreadable_reason(seq: SequenceInfo) -> str | None:
    """Why this role cannot measure the sequence against its data, if it cannot."""
    if not seq.can_read:
        return f"no SELECT privilege on sequence {display_name(seq.schema, seq.name)}"
    for column in seq.columns:
        if not column.numeric:
            return f"feeds {column.label}, a {column.type} column"
        if not column.readable:
            return f"no SELECT privilege on {column.label}"
        if column.row_security:
            return (f"row-level security hides rows of "
                    f"{display_name(column.schema, column.table)} from this role")
    return None


# Every relation a transaction reads stays locked until it ends, and the server's lock table
# holds max_locks_per_transaction x (max_connections + max_prepared_transactions) locks for
# all sessions together (6,400 by default). Reading 5,000 tables, their indexes and their
# sequences in one statement would need ~15,000: so the reads are cut into the fewest
# statements that each stay within a quarter of the table, one transaction each.
# Planning cost grows faster than the statement, so batches also stop at BATCH_LOCKS: on
# 5,000 tables, batches of ~70 sequences measured fastest (bench/sequences.py).
BATCH_LOCKS = 200
LOCK_BUDGET = """
SELECT current_setting('max_locks_per_transaction')::int
       * (current_setting('max_connections')::int
          + current_setting('max_prepared_transactions')::int) / 4
"""


def lock_budget(conn: Connection) -> int:
    row = conn.execute(LOCK_BUDGET).fetchone()
    return max(16, min(BATCH_LOCKS, int(row[0]))) if row else BATCH_LOCKS


def batches(seqs: Sequence[SequenceInfo], budget: int) -> list[list[SequenceInfo]]:
    """Consecutive groups whose lock cost stays within `budget` (a costlier one goes alone)."""
    groups: list[list[SequenceInfo]] = []
    cost = 0
    for seq in seqs:
        if not groups or cost + seq.lock_cost > budget:
            groups.append([])
            cost = 0
        groups[-1].append(seq)
        cost += seq.lock_cost
    return groups


@dataclass(frozen=True)
class Measurement:
    states: dict[int, SequenceState]
    edges: dict[int, int | None]


def measure(conn: Connection, seqs: Sequence[SequenceInfo], budget: int) -> Measurement:
    """Each sequence's state and the MAX (MIN when descending) over every column it feeds:
    one flat VALUES statement per lock-budget batch."""
    states: dict[int, SequenceState] = {}
    edges: dict[int, int | None] = {}
    for group in batches(seqs, budget):
        rows = []
        for seq in group:
            aggregate = sql.SQL("min" if seq.descending else "max")
            outer = sql.SQL("LEAST" if seq.descending else "GREATEST")
            rows.append(sql.SQL(
                # the state as one text value: one subquery less to plan per sequence
                "({oid}::bigint, (SELECT last_value || ' ' || is_called FROM {seq}),"
                " {outer}({edges})::numeric)"
            ).format(
                oid=sql.Literal(seq.oid),
                seq=seq.identifier,
                outer=outer,
                edges=sql.SQL(", ").join(
                    sql.SQL("(SELECT {agg}({col}) FROM {table})").format(
                        agg=aggregate,
                        col=sql.Identifier(column.name),
                        table=sql.Identifier(column.schema, column.table),
                    )
                    for column in seq.columns
                ),
            ))
        query = sql.SQL("SELECT * FROM (VALUES {}) AS v").format(sql.SQL(",\n").join(rows))
        for oid, state, edge in conn.execute(query):
            last_value, is_called = state.split(" ")
            states[oid] = SequenceState(int(last_value), is_called == "true")
            edges[oid] = None if edge is None else int(edge)
    return Measurement(states, edges)


@dataclass(frozen=True)
class Planned:
    seq: SequenceInfo
    fix: SequenceFix


def survey(
    conn: Connection,
    schemas: Sequence[str] = (),
    *,
    exact: bool = False,
    budget: int | None = None,
) -> list[Planned]:
    """Discover and measure every sequence and plan its fix."""
    budget = lock_budget(conn) if budget is None else budget
    seqs = discover(conn, schemas)
    reasons = {seq.oid: unreadable_reason(seq) for seq in seqs}
    measured = measure(conn, [seq for seq in seqs if reasons[seq.oid] is None], budget)
    return [
        Planned(seq, plan(seq, measured.states.get(seq.oid), measured.edges.get(seq.oid),
                          exact=exact, skip_reason=reasons[seq.oid]))
        for seq in seqs
    ]


_MOVES = (Action.FIXED, Action.MOVED_BACK)


def repair(
    conn: Connection,
    schemas: Sequence[str] = (),
    *,
    exact: bool = False,
    dry_run: bool = False,
    budget: int | None = None,
) -> list[SequenceFix]:
    """Move every lagging sequence just past its data (forward only unless `exact`).
    A dry run plans the same moves and calls no setval: setval is not transactional."""
    budget = lock_budget(conn) if budget is None else budget
    planned = []
    for item in survey(conn, schemas, exact=exact, budget=budget):
        if item.fix.action in _MOVES and not item.seq.can_update:
            name = display_name(item.seq.schema, item.seq.name)
            item = Planned(item.seq, replace(item.fix, action=Action.SKIPPED,
                                             reason=f"no UPDATE privilege on sequence {name}"))
        planned.append(item)
    moves = [item for item in planned if item.fix.action in _MOVES]
    if dry_run or not moves:
        return [item.fix for item in planned]
    applied = apply(conn, moves, budget)
    return [
        replace(item.fix, applied=True) if item.seq.oid in applied
        else _moved_meanwhile(item.fix) if item.fix.action in _MOVES
        else item.fix
        for item in planned
    ]


def _moved_meanwhile(fix: SequenceFix) -> SequenceFix:
    return replace(fix, action=Action.OK, next_after=None,
                   reason="another session moved it past the data meanwhile")


def apply(conn: Connection, moves: Sequence[Planned], budget: int) -> set[int]:
    """setval calls, one statement per lock-budget batch. A forward move re-reads its
    sequence in the same statement, just before its setval, and is left out if the sequence
    is no longer behind its data: a concurrent nextval() is never undone."""
    applied: set[int] = set()
    by_oid = {item.seq.oid: item for item in moves}
    for group in batches([item.seq for item in moves], budget):
        rows = []
        for seq in group:
            fix = by_oid[seq.oid].fix
            assert fix.next_after is not None and fix.edge is not None
            value, called = setval_args(seq, fix.next_after)
            rows.append(sql.SQL(
                "({oid}::bigint, {value}::bigint, {called}, {forward}, {descending}, "
                "{edge}::numeric, (SELECT CASE WHEN is_called THEN last_value::numeric + {inc}"
                " ELSE last_value END FROM {seq}))"
            ).format(oid=sql.Literal(seq.oid), value=sql.Literal(value),
                     called=sql.Literal(called),
                     forward=sql.Literal(fix.action is Action.FIXED),
                     descending=sql.Literal(seq.descending), edge=sql.Literal(fix.edge),
                     inc=sql.Literal(seq.increment), seq=seq.identifier))
        query = sql.SQL(
            "SELECT oid, setval(oid::oid::regclass, value, called) "
            "FROM (VALUES {}) AS v(oid, value, called, forward, descending, edge, next) "
            "WHERE NOT forward OR CASE WHEN descending THEN next >= edge ELSE next <= edge END"
        ).format(sql.SQL(",\n").join(rows))
        applied.update(row[0] for row in conn.execute(query))
    return applied
