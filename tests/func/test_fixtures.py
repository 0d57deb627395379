"""The test fixtures' own promise: what a test made is dropped however it ended, and nothing
else is."""

from __future__ import annotations

from datetime import datetime

import pytest

from restore_tool.restoring.swap import stamped
from tests.helpers import databases, dbname, execute
from tests.servers import NewDatabases, Server


def test_new_databases_drops_what_it_made_and_its_copies_after_a_failing_test(
        main_server: Server) -> None:
    made = NewDatabases(main_server)
    name = dbname(made("rt_fixture"))
    when = datetime(2026, 12, 3, 9, 30)
    copies = [stamped(name, "restoring", when, "abc123"), stamped(name, "old", when, "abc123")]
    bystander = f"{name}x"  # shares the prefix, but nobody's copy of it
    for other in [*copies, bystander]:
        execute(main_server.conninfo, f'CREATE DATABASE "{other}"')
    with pytest.raises(AssertionError):
        try:
            raise AssertionError("the test failed")
        finally:
            made.drop_all()
    left = {row for row in [name, *copies, bystander] if databases(main_server, row)}
    execute(main_server.conninfo, f'DROP DATABASE "{bystander}"')
    assert left == {bystander}
