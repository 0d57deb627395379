"""Small helpers the functional tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from restore_tool.config import Settings
from restore_tool.sequence_plan import SequenceFix


def execute(conninfo: str, script: str) -> None:
    """Run a multi-statement script (no parameters) in autocommit."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(script)


def scalar(conninfo: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def settings(conninfo: str, tmp: Path | None = None) -> Settings:
    return Settings(conninfo, "the test", (tmp or Path("/nonexistent")) / ".restore-tool")


def nextval(conninfo: str, sequence: str) -> int:
    """What the next insert would get: consumes one value, as an insert would."""
    return int(scalar(conninfo, "SELECT nextval(%s::regclass)", (sequence,)))


def by_label(fixes: list[SequenceFix] | tuple[Any, ...]) -> dict[str, SequenceFix]:
    return {fix.label: fix for fix in fixes}
