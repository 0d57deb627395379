"""A staging-refresh script's needs, through the real CLI against a real server: where the
dump comes from (`pg_dump … | restore-tool restore -`, /dev/stdin, a FIFO, a folder of
backups), leaving some tables' rows out, and rolling back to the previous database."""

from __future__ import annotations

import http.server
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, cast

import psycopg
import pytest

from restore_tool.conninfo import url
from restore_tool.errors import BadInput, MissingBinary
from restore_tool.restoring import sources
from tests.conftest import ROOT
from tests.func.test_faults import CLEAN_ENV, _until
from tests.helpers import (
    databases,
    dbname,
    execute,
    password_url,
    pg_dump,
    row_counts,
    scalar,
)
from tests.servers import NewDatabases, Server, embedded_bin_dir, free_port, standby

SAMPLE = ROOT / "backups" / "battery-hub.dump"


def _restore(*args: str, stdin: IO[bytes] | int | None = subprocess.DEVNULL,
             cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run([sys.executable, "-m", "restore_tool", "restore", *args, "--json"],
                          stdin=stdin, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def _facts(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout)["facts"])


def test_a_pg_dump_piped_in_is_spooled_and_restored_with_jobs(
        new_database: NewDatabases) -> None:
    source = new_database("rt_pipe_source")
    execute(source, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t SELECT "
                    "generate_series(1, 1000)")
    target = new_database("rt_pipe_target", create=False)
    dump = subprocess.Popen([str(embedded_bin_dir() / "pg_dump"), "-Fc", "--dbname", source],
                            stdout=subprocess.PIPE)
    with dump:
        done = _restore("-", "--database-url", target, "--jobs", "2", stdin=dump.stdout)
    assert dump.returncode == 0
    facts = _facts(done)
    assert facts["Dump"].startswith("standard input (spooled: ") and "custom" in facts["Dump"]
    steps = json.loads(done.stdout)["steps"]
    assert steps[1]["summary"].endswith(", 2 jobs"), steps[1]
    assert row_counts(target) == {"t": 1000}
    assert not list(Path("/tmp").glob("restore-tool-work-*/stdin.dump"))  # gone with the run


def test_dev_stdin_and_a_plain_script_piped_in(new_database: NewDatabases,
                                               tmp_path: Path) -> None:
    source = new_database("rt_stdin_source")
    execute(source, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (7)")
    script = pg_dump(source, tmp_path, "plain")
    target = new_database("rt_stdin_target", create=False)
    with subprocess.Popen(["cat", str(script)], stdout=subprocess.PIPE) as cat:
        facts = _facts(_restore("/dev/stdin", "--database-url", target, stdin=cat.stdout))
    assert facts["Dump"].startswith("/dev/stdin (spooled: ") and "plain" in facts["Dump"]
    assert row_counts(target) == {"t": 1}


def test_nothing_piped_in_is_one_sentence(new_database: NewDatabases) -> None:
    target = new_database("rt_stdin_empty", create=False)
    done = _restore("-", "--database-url", target)
    assert done.returncode == 2 and "standard input is empty: nothing to restore." in \
        json.loads(done.stdout)["steps"][0]["summary"]


def test_a_folder_of_backups_restores_its_newest_dump_and_names_it(
        new_database: NewDatabases, tmp_path: Path) -> None:
    """The newest dump by modification time; one still being written (.part, .tmp) and
    files that are no dump are passed over."""
    backups = tmp_path / "backups"
    backups.mkdir()
    old = backups / "2026-12-01.dump"
    shutil.copy(SAMPLE, old)
    os.utime(old, (time.time() - 86400,) * 2)
    source = new_database("rt_newest_source")
    execute(source, "CREATE TABLE newest (id int); INSERT INTO newest VALUES (1), (2)")
    newest = pg_dump(source, backups, "custom").rename(backups / "2026-12-02.dump")
    os.utime(newest, (time.time() - 60,) * 2)
    (backups / "2026-12-03.dump.part").write_bytes(b"PGDMP" + b"\0" * 100)
    (backups / "notes.txt").write_text("rotated nightly\n")
    (backups / "latest.dump").symlink_to(backups / "rotated-away.dump")  # dangling
    target = new_database("rt_newest_target", create=False)
    facts = _facts(_restore(str(backups), "--database-url", target))
    assert facts["Dump"].startswith(f"{newest} (the newest dump in {backups}; newer but left "
                                    "out: 2026-12-03.dump.part)")
    assert row_counts(target) == {"newest": 2}


def test_a_folder_without_a_dump_is_one_sentence(tmp_path: Path,
                                                 new_database: NewDatabases) -> None:
    (tmp_path / "notes.txt").write_text("nothing here\n")
    target = new_database("rt_no_dump", create=False)
    done = _restore(str(tmp_path), "--database-url", target)
    assert done.returncode == 2
    assert json.loads(done.stdout)["steps"][0]["summary"] == (
        f"{tmp_path} holds no dump: it is not a directory-format dump (it has no toc.dat), "
        "and no pg_dump archive, SQL dump or directory-format dump is in it.")


def test_a_fifo_is_spooled_too(new_database: NewDatabases, tmp_path: Path) -> None:
    fifo = tmp_path / "dump.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as out:
            out.write(SAMPLE.read_bytes())

    writer = threading.Thread(target=feed)
    writer.start()
    target = new_database("rt_fifo", create=False)
    facts = _facts(_restore(str(fifo), "--database-url", target))
    writer.join()
    assert facts["Dump"].startswith(f"{fifo} (spooled: ")
    assert row_counts(target)["user"] == 16


def test_spooling_stops_with_one_sentence_when_the_disk_fills(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk running out is made by shrinking what disk_usage reports: the partial copy
    is removed and the sentence says how far it got."""
    real = shutil.disk_usage
    calls = iter(range(1000))

    def filling(path: object) -> object:
        usage = real(path)  # type: ignore[arg-type]
        return usage._replace(total=1024 ** 3, free=300 * sources.CHUNK if next(calls) < 2
                              else 1024)

    monkeypatch.setattr(shutil, "disk_usage", filling)
    with SAMPLE.open("rb") as dump_bytes, pytest.raises(BadInput) as caught:
        big = _Repeat(dump_bytes.read(), 5)
        sources.spool(cast(IO[bytes], big), tmp_path / "stdin.dump", "standard input")
    assert caught.value.message == (f"Spooling standard input into {tmp_path} stopped after "
                                    "2.0 MiB: only 1.0 KiB are free there, and 51.2 MiB are "
                                    "left for others.")
    assert "--work-dir" in (caught.value.hint or "")
    assert not (tmp_path / "stdin.dump").exists()


class _Repeat:
    """A stream of `times` MiB-sized reads."""

    def __init__(self, data: bytes, times: int) -> None:
        self.data, self.left = (data * (sources.CHUNK // len(data) + 1))[:sources.CHUNK], times

    def read(self, _size: int) -> bytes:
        self.left -= 1
        return self.data if self.left >= 0 else b""


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_exclude_table_data_leaves_tables_empty_and_a_pattern_matching_none_is_refused(
        new_database: NewDatabases, tmp_path: Path, fmt: str) -> None:
    """A staging refresh without the audit log and the secrets: those tables exist, empty;
    every other keeps its rows. A pattern that matches nothing (a typo that would let the
    secrets through) is refused before anything is created."""
    source = new_database("rt_exclude_source")
    execute(source, """
        CREATE TABLE customer (id serial PRIMARY KEY); INSERT INTO customer VALUES (1), (2);
        CREATE TABLE audit_log (id serial PRIMARY KEY); INSERT INTO audit_log VALUES (1);
        CREATE TABLE audit_login (id int); INSERT INTO audit_login VALUES (1);
        CREATE SCHEMA billing;
        CREATE TABLE billing.secrets (token text); INSERT INTO billing.secrets VALUES ('s3');
        CREATE TABLE billing.invoice (id int); INSERT INTO billing.invoice VALUES (9);
    """)
    dump = pg_dump(source, tmp_path, fmt)
    target = new_database("rt_exclude_target", create=False)
    done = _restore(str(dump), "--database-url", target, "--exclude-table-data", "audit_*",
                    "--exclude-table-data", "billing.secrets")
    assert done.returncode == 0, done.stdout + done.stderr
    load = json.loads(done.stdout)["steps"][1]
    assert "3 table data (--exclude-table-data)" in load["summary"], load
    assert row_counts(target) == {"customer": 2, "audit_log": 0, "audit_login": 0}
    assert [scalar(target, f"SELECT count(*) FROM billing.{table}")
            for table in ("secrets", "invoice")] == [0, 1]
    again = new_database("rt_exclude_typo", create=False)
    done = _restore(str(dump), "--database-url", again, "--exclude-table-data", "billing.Secrets")
    assert done.returncode == 2
    assert json.loads(done.stdout)["steps"][0]["summary"].startswith(
        "--exclude-table-data billing.Secrets matches no table whose rows the dump holds: "
        "nothing was changed.")


def test_rollback_swaps_the_previous_database_back_and_a_second_undoes_it(
        main_server: Server, new_database: NewDatabases) -> None:
    """After a staging refresh (restore --replace), `rollback` brings back the database it
    replaced, with its own comment, ending the application's session; the refreshed one is
    kept as the newest old copy, so rolling back again undoes the rollback."""
    target = new_database("rt_rollback")
    name = dbname(target)
    execute(target, "CREATE TABLE precious (id int); INSERT INTO precious SELECT "
                    f"generate_series(1, 500); COMMENT ON DATABASE \"{name}\" IS 'the live one'")
    assert _restore(str(SAMPLE), "--database-url", target, "--replace").returncode == 0
    assert row_counts(target)["user"] == 16
    app = psycopg.connect(target, application_name="billing-worker")
    try:
        done = _cli("rollback", "--database-url", target, "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        (step,) = json.loads(done.stdout)["steps"]
        assert step["summary"].startswith(f"{name}_old_") and f"is now {name}; the database " \
            f"it replaces is kept as {name}_old_" in step["summary"]
        assert "ended 1 session(s): billing-worker" in step["summary"]
    finally:
        app.close()
    assert row_counts(target) == {"precious": 500}
    assert scalar(target, "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                          "WHERE datname = current_database()") == "the live one"
    assert len(databases(main_server, f"{name}_old_%")) == 1
    assert _cli("rollback", "--database-url", target).returncode == 0
    assert row_counts(target)["user"] == 16


def test_rollback_without_an_old_copy_changes_nothing(
        main_server: Server, new_database: NewDatabases) -> None:
    """Nor is a database taken for one whose name only looks like a copy of the target's:
    its token was made from another name."""
    target = new_database("rt_rollback_none")
    execute(target, "CREATE TABLE t (id int)")
    lookalike = f"{dbname(target)}_old_20260101_000000_000000"
    execute(main_server.conninfo, f'CREATE DATABASE "{lookalike}"')
    done = _cli("rollback", "--database-url", target, "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["steps"][0]["summary"].startswith(
        f'There is no old copy of "{dbname(target)}" to roll back to')
    assert databases(main_server, lookalike) == [lookalike]
    assert scalar(target, "SELECT to_regclass('t') IS NOT NULL") is True


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run([sys.executable, "-m", "restore_tool", *args], capture_output=True,
                          text=True, env=env, timeout=300)


def test_a_live_database_is_dumped_and_restored_with_its_password_masked(
        main_server: Server, password_role: tuple[str, str],
        new_database: NewDatabases) -> None:  # the role goes after the databases
    role, password = password_role
    source = new_database("rt_live_source")
    execute(source, f"""CREATE TABLE t (id serial PRIMARY KEY);
        INSERT INTO t SELECT generate_series(1, 300); ALTER TABLE t OWNER TO "{role}";
        GRANT CONNECT ON DATABASE "{dbname(source)}" TO "{role}";
        ALTER SEQUENCE t_id_seq OWNER TO "{role}"; SELECT setval('t_id_seq', 1)""")
    target = new_database("rt_live_target", create=False)
    done = _restore(password_url(main_server, role, password, dbname(source)),
                    "--database-url", target, "--jobs", "2", "--no-owner")
    facts = _facts(done)
    assert facts["Dump"].startswith(f"postgresql://{role}:***@/{dbname(source)}?host=")
    assert "a live database, dumped read-only by pg_dump 18." in facts["Dump"]
    assert " -Fd -j 2: " in facts["Dump"] and "directory" in facts["Dump"]
    assert password not in done.stdout + done.stderr
    assert row_counts(target) == {"t": 300}
    assert scalar(target, "SELECT nextval('t_id_seq')") > 300  # repaired as any restore


def test_a_live_source_is_only_read_a_hot_standby_serves(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    """A hot standby refuses every write: a dump taken from one took none, and neither did
    the proof against it (`verify --against` the standby, --hashes)."""
    with standby(tmp_path) as (primary, replica):
        execute(primary.conninfo, "CREATE DATABASE shop")
        execute(primary.database("shop"), "CREATE TABLE t (id int); "
                                          "INSERT INTO t SELECT generate_series(1, 50)")
        _until(lambda: databases(replica, "shop") == ["shop"] and bool(
            scalar(replica.database("shop"), "SELECT to_regclass('t') IS NOT NULL")), 30)
        _until(lambda: scalar(replica.database("shop"), "SELECT count(*) FROM t") == 50, 30)
        target = new_database("rt_from_standby", create=False)
        _facts(_restore(url(replica.database("shop"), keep_password=True), "--database-url",
                        target, "--jobs", "2"))
        assert row_counts(target) == {"t": 50}
        env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
        done = subprocess.run([sys.executable, "-m", "restore_tool", "verify", "--against",
                               url(replica.database("shop"), keep_password=True), "--hashes",
                               "--no-smoke", "--json", "--database-url", target],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        proof = json.loads(done.stdout)["steps"][0]
        assert proof["name"] == "proof" and "50 rows in 1 table" in proof["summary"]


class _Dumps(http.server.SimpleHTTPRequestHandler):
    """Serves backups/; `/short/…` promises more bytes than it sends (a cut download)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, directory=str(ROOT / "backups"), **kwargs)

    def do_GET(self) -> None:  # http.server.s name
        if not self.path.startswith("/short/"):
            super().do_GET()
            return
        data = SAMPLE.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:len(data) // 2])
        self.close_connection = True

    def log_message(self, *_args: Any) -> None:
        pass


@pytest.fixture
def served() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Dumps)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_a_download_is_restored_and_its_query_never_shown(
        served: str, new_database: NewDatabases) -> None:
    target = new_database("rt_download", create=False)
    signed = f"{served}/battery-hub.dump?X-Amz-Signature=s3cr3t-signature&X-Amz-Expires=60"
    done = _restore(signed, "--database-url", target)
    facts = _facts(done)
    assert facts["Dump"].startswith(f"{served}/battery-hub.dump?… (downloaded: ")
    assert "s3cr3t-signature" not in done.stdout + done.stderr
    assert row_counts(target)["user"] == 16
    inspected = _cli("inspect", signed)
    assert inspected.returncode == 0 and "Format:      custom" in inspected.stdout
    assert "s3cr3t-signature" not in inspected.stdout + inspected.stderr


def test_a_cut_download_and_a_missing_one_are_one_sentence(
        main_server: Server, served: str, new_database: NewDatabases) -> None:
    target = new_database("rt_cut_download", create=False)
    done = _restore(f"{served}/short/battery-hub.dump", "--database-url", target)
    assert done.returncode == 2
    summary = json.loads(done.stdout)["steps"][0]["summary"]
    assert summary.startswith(f"The download of {served}/short/battery-hub.dump stopped after ")
    assert "nothing was restored from it." in summary
    done = _restore(f"{served}/nope.dump", "--database-url", target)
    assert done.returncode == 2 and json.loads(done.stdout)["steps"][0]["summary"] == (
        f"Downloading {served}/nope.dump failed: HTTP 404 File not found.")
    done = _restore(f"http://127.0.0.1:{free_port()}/prod.dump", "--database-url", target)
    assert done.returncode == 3 and json.loads(done.stdout)["steps"][0]["summary"].startswith(
        "Downloading http://127.0.0.1:") and "Connection refused" in done.stdout
    assert databases(main_server, dbname(target)) == []  # nothing was created


def test_a_download_and_a_live_dump_check_the_room_they_need_first(
        served: str, main_db: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The free space where they go is made small by shrinking what disk_usage reports:
    each says what it needs and writes nothing."""
    execute(main_db, "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS note "
                     "FROM generate_series(1, 20000) g")
    real = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real(path)._replace(free=1024))
    with pytest.raises(BadInput) as caught:
        sources.download(f"{served}/battery-hub.dump", tmp_path)
    assert caught.value.message.startswith(
        f"Downloading {served}/battery-hub.dump needs ") and "which has 1.0 KiB free" in \
        caught.value.message
    with pytest.raises(BadInput) as caught:
        sources.from_database(url(main_db, keep_password=True), tmp_path)
    assert caught.value.message.startswith("Dumping postgresql://") and " needs " in \
        caught.value.message
    assert list(tmp_path.iterdir()) == []


def test_a_live_source_without_a_pg_dump_that_can_dump_it_is_exit_3(
        main_db: str, tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    with pytest.raises(MissingBinary) as caught:
        sources.from_database(url(main_db, keep_password=True), tmp_path, pg_bin=[empty])
    assert caught.value.exit_code == 3
    assert caught.value.message.startswith("No pg_dump 18 or newer is installed here")


def test_restore_dash_from_a_terminal_is_one_sentence(tmp_path: Path) -> None:
    """`restore -` typed at a prompt would wait forever for a dump that never comes."""
    leader, follower = os.openpty()
    try:
        with os.fdopen(follower, "rb", buffering=0, closefd=False) as terminal, \
                pytest.raises(BadInput) as caught:
            sources.local("-", tmp_path, stdin=terminal)
    finally:
        os.close(leader)
        os.close(follower)
    assert caught.value.message == ("`restore -` reads the dump from standard input, which is "
                                    "a terminal here.")
    assert list(tmp_path.iterdir()) == []


def test_rollback_of_a_target_that_does_not_exist_is_one_sentence(
        new_database: NewDatabases) -> None:
    target = new_database("rt_rollback_gone", create=False)
    done = _cli("rollback", "--database-url", target)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f'error: Database "{dbname(target)}" does not exist: there '
                                  "is nothing to roll back.")


def test_rollback_of_a_protected_target_needs_confirm(new_database: NewDatabases) -> None:
    target = new_database("rt_rollback_protected")
    env = {"RESTORE_TOOL_PROTECTED": dbname(target)}
    done = subprocess.run([sys.executable, "-m", "restore_tool", "rollback", "--database-url",
                           target], capture_output=True, text=True, timeout=120,
                          env={**{k: v for k, v in os.environ.items() if k not in CLEAN_ENV},
                               **env})
    assert done.returncode == 2 and f'Database "{dbname(target)}" is protected' in done.stderr


def test_a_target_that_cannot_take_the_restore_is_refused_before_the_source_is_fetched(
        new_database: NewDatabases) -> None:
    """A live source is only dumped (a download only fetched) once the target is known to
    take it: here the source is unreachable, and the refusal is the target's."""
    target = new_database("rt_refused_first")
    execute(target, "CREATE TABLE kept (id int)")
    done = _restore(f"postgresql://app:pw@127.0.0.1:{free_port()}/prod", "--database-url",
                    target)
    assert done.returncode == 2, done.stdout + done.stderr
    assert f'Database "{dbname(target)}" is not empty' in \
        json.loads(done.stdout)["steps"][0]["summary"]


def _readme_refresh_script() -> str:
    text = (ROOT / "README.md").read_text()
    block = text.split("### A staging refresh\n\n", 1)[1].split("\n\n", 1)[0]
    return "\n".join(line.removeprefix("    ") for line in block.splitlines()) + "\n"


def test_the_readme_staging_refresh_script_runs(
        new_database: NewDatabases, tmp_path: Path) -> None:
    """The README's script, with only its folder, migration and database name swapped for
    the test's: a protected staging database refreshed from the newest backup, the audit
    log and the secrets left empty, then verified."""
    source = new_database("rt_prod")
    execute(source, """
        CREATE TABLE customer (id serial PRIMARY KEY); INSERT INTO customer VALUES (1), (2);
        CREATE TABLE audit_log (id serial PRIMARY KEY); INSERT INTO audit_log VALUES (1);
        CREATE SCHEMA billing;
        CREATE TABLE billing.secrets (token text); INSERT INTO billing.secrets VALUES ('s3');
    """)
    backups = tmp_path / "prod"
    backups.mkdir()
    pg_dump(source, backups, "custom")
    staging = new_database("rt_staging")
    execute(staging, "CREATE TABLE yesterday (id int)")
    script = _readme_refresh_script()
    assert script.startswith("#!/bin/sh -e\n") and "--exclude-table-data 'audit_*'" in script
    script = (script.replace("/backups/prod/", f"{backups}/")
              .replace('"alembic upgrade head"', '"true"')
              .replace("--confirm staging", f"--confirm {dbname(staging)}"))
    (tmp_path / "refresh.sh").write_text(script)
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV} | {
        "DATABASE_URL": staging, "RESTORE_TOOL_PROTECTED": dbname(staging),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(["sh", str(tmp_path / "refresh.sh")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout == ""  # --quiet: nothing to say when all is well
    assert row_counts(staging) == {"customer": 2, "audit_log": 0}
    assert scalar(staging, "SELECT count(*) FROM billing.secrets") == 0
