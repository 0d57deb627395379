"""The sequence arithmetic: next value, the grid, and the decision, on plain numbers."""

from __future__ import annotations

import pytest

from restore_tool.names import display_name
from restore_tool.sequences.plan import (
    Action,
    Column,
    SequenceInfo,
    SequenceState,
    first_past,
    next_value,
    plan,
    setval_args,
)

COLUMN = Column(1, "public", "user", "user_id", 'public."user".user_id', "integer", True, True,
                False)


def seq(start: int = 1, increment: int = 1, lo: int = 1, hi: int = 2**31 - 1,
        cycle: bool = False) -> SequenceInfo:
    return SequenceInfo(1, "public", "user_user_id_seq", "public.user_user_id_seq", start,
                        increment, lo, hi, cycle,
                        True, True, (COLUMN,))


def test_next_value() -> None:
    assert next_value(seq(), SequenceState(1, False)) == 1
    assert next_value(seq(), SequenceState(1, True)) == 2
    assert next_value(seq(hi=10), SequenceState(10, True)) is None
    assert next_value(seq(hi=10, cycle=True), SequenceState(10, True)) == 1
    assert next_value(seq(-1, -1, -100, -1), SequenceState(-5, True)) == -6


@pytest.mark.parametrize("start, increment, edge, expected", [
    (1, 1, 3, 4),
    (1, 1, 0, 1),
    (1000, 1, 17, 1000),
    (7, 100, 150, 207),
    (7, 100, 207, 307),
    (-1, -1, -37, -38),
    (-1, -10, -25, -31),
    (-1, -1, 5, -1),
])
def test_first_past_stays_on_the_grid(start: int, increment: int, edge: int,
                                      expected: int) -> None:
    lo, hi = (-(2**31), -1) if increment < 0 else (1, 2**31 - 1)
    assert first_past(seq(start, increment, lo, hi), edge) == expected


def test_plan_decisions() -> None:
    lagging = plan(seq(), SequenceState(1, False), 3)
    assert (lagging.action, lagging.next_before, lagging.next_after) == (Action.FIXED, 1, 4)
    assert lagging.label == "user.user_id"
    assert plan(seq(), SequenceState(3, True), 3).action is Action.OK
    ahead = plan(seq(), SequenceState(100, True), 3)
    assert (ahead.action, ahead.next_after) == (Action.OK, 101)
    back = plan(seq(), SequenceState(100, True), 3, exact=True)
    assert (back.action, back.next_after) == (Action.MOVED_BACK, 4)
    assert plan(seq(), SequenceState(1, False), None).action is Action.EMPTY
    over = plan(seq(hi=100), SequenceState(1, False), 150)
    assert over.action is Action.FAILED
    assert over.reason == ("cannot get past its data: max is 150 but MAXVALUE is 100; raise "
                           "it: ALTER SEQUENCE public.user_user_id_seq NO MAXVALUE")
    small = plan(seq(hi=2**15 - 1), SequenceState(1, False), 2**15 - 1)
    assert small.action is Action.FAILED and small.reason is not None
    assert small.reason.endswith("widen it: ALTER SEQUENCE public.user_user_id_seq AS bigint, "
                                 "and user.user_id to bigint")
    cycling = plan(seq(hi=100, cycle=True), SequenceState(100, True), 100)
    assert cycling.action is Action.OK and "wrap around" in (cycling.reason or "")
    skipped = plan(seq(), None, None, skip_reason="no SELECT privilege")
    assert (skipped.action, skipped.reason) == (Action.SKIPPED, "no SELECT privilege")


def test_setval_arguments_show_the_data_edge_as_last_value() -> None:
    assert setval_args(seq(), 18) == (17, True)
    assert setval_args(seq(7, 100), 207) == (107, True)
    assert setval_args(seq(-1, -1, -100, -1), -38) == (-37, True)
    assert setval_args(seq(1000, 1, 1000), 1000) == (1000, False)


def test_display_names_quote_only_what_needs_it() -> None:
    assert display_name("public", "user", "user_id") == "user.user_id"
    assert display_name("Sales", "order") == '"Sales".order'
    assert display_name("s", 'we"ird') == 's."we""ird"'
