"""The Python API on a real server: the README's pytest fixture as written, a URL in and a
Report out, and the repair inside a caller's transaction, committing nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

import restore_tool
from restore_tool import Options, Report, fix_sequences, inspect, restore, verify
from restore_tool.errors import RestoreToolError
from tests.conftest import ROOT
from tests.helpers import execute, row_counts, scalar
from tests.servers import NewDatabases

SAMPLE = ROOT / "backups" / "battery-hub.dump"


def _readme_fixture() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("<!-- fixture example: start -->\n", 1)[1].split(
        "<!-- fixture example: end -->", 1)[0]
    return block.removeprefix("```python\n").rsplit("```", 1)[0]


def test_the_readme_fixture_runs_as_written(new_database: NewDatabases, tmp_path: Path) -> None:
    target = new_database("rt_readme_fixture")
    (tmp_path / "test_example.py").write_text(_readme_fixture())
    env = {**os.environ, "DATABASE_URL": target}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(tmp_path / "test_example.py")], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 passed" in done.stdout
    assert scalar(target, "SELECT to_regclass('ticket') IS NULL") is True  # rolled back


def test_the_api_takes_a_url_and_returns_the_report(new_database: NewDatabases) -> None:
    target = new_database("rt_api", create=False)
    assert inspect(SAMPLE).format == "custom"
    report = restore(SAMPLE, target, options=Options(jobs=2))
    assert isinstance(report, Report) and report.ok and report.exit_code == 0
    assert [step.name for step in report.steps][:2] == ["preflight", "load"]
    assert row_counts(target)["user"] == 16
    assert verify(target).ok and fix_sequences(target, dry_run=True).ok
    proved = verify(target, against=SAMPLE, smoke_test=False)
    assert proved.ok and proved.steps[0].name == "proof"
    execute(target, "DELETE FROM audit_log WHERE audit_id = 1")
    lost = verify(target, against=SAMPLE, smoke_test=False)
    assert lost.exit_code == 1 and "audit_log: 60 rows in the dump, 59 in the database" in \
        lost.steps[0].summary
    assert restore_tool.__version__.startswith("0.")


def test_the_repair_in_a_callers_transaction_commits_nothing(main_db: str) -> None:
    execute(main_db, "CREATE TABLE untouched (id serial PRIMARY KEY); "
                     "INSERT INTO untouched VALUES (5)")
    with psycopg.connect(main_db) as conn:  # not autocommit: a transaction is open
        conn.execute("CREATE TABLE seeded (id serial PRIMARY KEY)")
        conn.execute("INSERT INTO seeded VALUES (1), (2), (41)")
        report = fix_sequences(conn)
        assert report.ok, report.steps
        assert report.steps[0].summary.startswith("fixed 2,")
        assert conn.info.transaction_status is psycopg.pq.TransactionStatus.INTRANS
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND "
                            "relation = 'untouched'::regclass").fetchone() != (0,)  # the
        # repair read it, and its lock stays until the caller's transaction ends
        assert scalar(main_db, "SELECT to_regclass('seeded') IS NULL") is True  # unseen
        assert conn.execute("INSERT INTO seeded DEFAULT VALUES RETURNING id").fetchone() == (42,)
        assert verify(conn).ok
        assert conn.execute("SHOW enable_nestloop").fetchone() == ("on",)  # put back
        conn.rollback()
    assert scalar(main_db, "SELECT to_regclass('seeded') IS NULL") is True


def test_a_bad_url_raises_the_clis_error_with_its_sentence() -> None:
    with pytest.raises(RestoreToolError) as caught:
        fix_sequences("postgresql://app:pa ss@db/x")
    assert caught.value.exit_code == 2 and "pa ss" not in caught.value.message
