"""Small helpers the functional tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from restore_tool.config import Settings
from restore_tool.sequence_plan import SequenceFix
from tests.servers import sql_script

SHARED = Path(__file__).resolve().parents[2] / "shared"


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


def load_chinook(db: str) -> None:
    """The serial-key schema filled with the explicit-id data, as an import would."""
    schema = sql_script(SHARED / "datasets/chinook/Chinook_PostgreSql_SerialPKs.sql")
    schema = schema.split("Populate Tables")[0].rsplit("/*", 1)[0]
    data = sql_script(SHARED / "datasets/chinook/Chinook_PostgreSql.sql").split(
        "Populate Tables")[1].split("*/", 1)[1]
    execute(db, schema)
    execute(db, data)
