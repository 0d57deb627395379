"""The test fixtures' own promise: what a test made is dropped however it ended, and nothing
else is."""

from __future__ import annotations

import pytest

from tests.helpers import databases, dbname, execute
from tests.servers import NewDatabases, Server


def test_new_databases_drops_what_it_made_and_its_copies_after_a_failing_test(
        main_server: Server) -> None:
    made = NewDatabases(main_server)
    name = dbname(made("rt_fixture"))
    copies = [f"{name[:40]}_restoring_20261203", f"{name[:45]}_old_20261203"]
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
