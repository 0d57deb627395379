"""What to do with one sequence: the catalog facts as values, and the arithmetic that turns
a sequence's state and its data edge into a fix. Nothing here talks to the server."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from functools import cached_property

from ..names import display_name


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

    @cached_property
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

    @cached_property
    def label(self) -> str:
        """How the runbook names it: `user.user_id` when it feeds one column, else the
        sequence and the columns it feeds."""
        if len(self.columns) == 1:
            return self.columns[0].label
        fed = ", ".join(column.label for column in self.columns)
        return f"{display_name(self.schema, self.name)} (for {fed})"

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
    edge_kind = "min" if seq.descending else "max"
    current = None if state is None else next_value(seq, state)
    action, after, reason = _decide(seq, state, current, edge, edge_kind, exact, skip_reason)
    return SequenceFix(
        sequence=seq.sql_name,
        label=seq.label,
        columns=tuple(c.sql_name for c in seq.columns),
        action=action,
        edge_kind=edge_kind,
        edge=edge,
        next_before=current,
        next_after=after,
        reason=reason,
    )


def _decide(
    seq: SequenceInfo,
    state: SequenceState | None,
    current: int | None,
    edge: int | None,
    edge_kind: str,
    exact: bool,
    skip_reason: str | None,
) -> tuple[Action, int | None, str | None]:
    """The action, the value nextval() returns afterwards, and why, for `plan`."""
    if skip_reason is not None or state is None:
        return Action.SKIPPED, None, skip_reason
    if edge is None:
        return Action.EMPTY, current, None
    target = first_past(seq, edge)
    if not seq.min_value <= target <= seq.max_value:
        bound = "MAXVALUE" if seq.increment > 0 else "MINVALUE"
        limit = seq.max_value if seq.increment > 0 else seq.min_value
        if seq.cycle:  # it wraps to its other end by design: said, not failed
            return (Action.OK, current, f"cycles: its data reaches its {bound} {limit}, so the "
                    "next values wrap around, as it was declared to")
        return (Action.FAILED, None,
                f"cannot get past its data: {edge_kind} is {edge} but {bound} is {limit}; "
                + _widening(seq, bound, limit))
    if current is None:
        if exact:
            return Action.MOVED_BACK, target, "was exhausted"
        return (Action.FAILED, None, "has reached its MAXVALUE and can give no more values "
                "(--exact resets it to the data edge)")
    behind = current <= edge if seq.increment > 0 else current >= edge
    if behind:
        return Action.FIXED, target, None
    if exact and current != target:
        return Action.MOVED_BACK, target, None
    return Action.OK, current, None


# the bounds a sequence gets from its type when none is declared (ascending; descending: -x-1)
_TYPE_LIMITS = {2**15 - 1: "smallint", 2**31 - 1: "integer"}


def _widening(seq: SequenceInfo, bound: str, limit: int) -> str:
    """The fix for an overflow: a wider type for a sequence at its type's bound (and for
    the columns it feeds that are as narrow), else a wider declared bound."""
    width = _TYPE_LIMITS.get(limit if seq.increment > 0 else -limit - 1)
    if width is None and abs(limit) >= 2**63 - 1:
        return "no wider type exists"
    if width is None:
        return f"raise it: ALTER SEQUENCE {seq.sql_name} NO {bound}"
    narrow = [c.label for c in seq.columns if c.type in ("smallint", "integer")]
    columns = f", and {', '.join(narrow)} to bigint" if narrow else ""
    return f"widen it: ALTER SEQUENCE {seq.sql_name} AS bigint{columns}"


NEAR_LIMIT = 0.10  # verify warns when less than this share of a sequence's range is left


def values_left(seq: SequenceInfo, next_value: int | None) -> int:
    """How many values nextval() can still give from `next_value` (None: exhausted) before
    the sequence's limit; a CYCLE sequence never runs out (-1)."""
    if seq.cycle:
        return -1
    if next_value is None:
        return 0
    room = seq.max_value - next_value if seq.increment > 0 else next_value - seq.min_value
    return max(0, room // abs(seq.increment) + 1)


def near_limit(seq: SequenceInfo, fix: SequenceFix, share: float = NEAR_LIMIT) -> str | None:
    """`user.id: 3 of 32,767 values left (0.0%); widen it: ALTER SEQUENCE … AS bigint` when
    less than `share` of the sequence's range is left (as check_postgres's `sequence`
    action warns), else None."""
    left = values_left(seq, fix.next_before)
    total = (seq.max_value - seq.min_value) // abs(seq.increment) + 1
    if left < 0 or left >= share * total:
        return None
    bound, limit = ("MAXVALUE", seq.max_value) if seq.increment > 0 else \
        ("MINVALUE", seq.min_value)
    return (f"{seq.label}: {left:,} of {total:,} values left ({left / total:.1%}); "
            f"{_widening(seq, bound, limit)}")


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
