"""Small helpers the functional tests share."""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from restore_tool.config import Settings
from restore_tool.sequences.plan import SequenceFix
from tests.servers import Server, embedded_bin_dir, sql_script

DATA = Path(__file__).resolve().parent / "data"  # public sample databases, with licences


def execute(conninfo: str, script: str) -> None:
    """Run a multi-statement script (no parameters) in autocommit."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(script)


def dbname(conninfo: str) -> str:
    """The database a conninfo the tests built names."""
    return str(conninfo_to_dict(conninfo)["dbname"])


def databases(server: Server, like: str) -> list[str]:
    """The databases on `server` whose names match the LIKE pattern."""
    with psycopg.connect(server.conninfo) as conn:
        return [row[0] for row in conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s ORDER BY 1", (like,))]


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
    schema = sql_script(DATA / "chinook/Chinook_PostgreSql_SerialPKs.sql")
    schema = schema.split("Populate Tables")[0].rsplit("/*", 1)[0]
    data = sql_script(DATA / "chinook/Chinook_PostgreSql.sql").split(
        "Populate Tables")[1].split("*/", 1)[1]
    execute(db, schema)
    execute(db, data)


def row_counts(conninfo: str) -> dict[str, int]:
    with psycopg.connect(conninfo) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = "
            "'public'::regnamespace ORDER BY 1")]
        return {t: int(conn.execute(sql.SQL("SELECT count(*) FROM {}").format(
            sql.Identifier(t))).fetchone()[0]) for t in tables}  # type: ignore[index]


def pg_dump(source: str, path: Path, fmt: str) -> Path:
    """Dump `source` as `fmt` (custom, directory, tar, plain, optionally .gz/.zst/.lz4)."""
    base, _, wrapper = fmt.partition(".")
    plain = path / f"chinook.{base}"
    subprocess.run([str(embedded_bin_dir() / "pg_dump"), f"--format={base}", "--file",
                    str(plain), "--dbname", source], check=True)
    if not wrapper:
        return plain
    if shutil.which({"gz": "gzip", "zst": "zstd", "lz4": "lz4"}[wrapper]) is None:
        pytest.skip(f"{wrapper} is not installed")
    wrapped = path / f"chinook.{fmt}"
    if wrapper == "gz":
        with plain.open("rb") as source_file, gzip.open(wrapped, "wb") as out:
            shutil.copyfileobj(source_file, out)
    else:
        tool = {"zst": "zstd", "lz4": "lz4"}[wrapper]
        output = ["-o", str(wrapped)] if tool == "zstd" else [str(wrapped)]
        subprocess.run([tool, "-q", "-f", str(plain), *output], check=True)
    return wrapped


def password_url(server: Server, user: str, password: str, dbname: str) -> str:
    """A URL that logs in with a password over the server's socket."""
    host = conninfo_to_dict(server.conninfo)["host"]
    return f"postgresql://{user}:{password}@/{dbname}?host={host}"
