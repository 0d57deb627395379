"""Faults injected on real servers: signals mid-load, two runs at once, clients connected at
swap time, prepared transactions, protected targets, writers during a repair, a server that
stops mid-restore, and a password that must not show anywhere, process list included."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg import sql

from restore_tool.restoring.load import RestoreLog
from tests.helpers import databases, dbname, execute, password_url, pg_dump, row_counts, scalar
from tests.servers import NewDatabases, Server, cluster, embedded_bin_dir, scratch_database

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "backups/battery-hub.dump"
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("PG", "POSTGRES_")) and k not in ("DATABASE_URL",
                                                                     "RESTORE_TOOL_PROTECTED")}


def _cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None
         ) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "restore_tool", *args], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**CLEAN_ENV, **(env or {})}, cwd=cwd)


def _finish(process: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def _until(condition: Callable[[], bool], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


def _processes_running(word: str) -> list[str]:
    lines = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if word in cmdline:
                lines.append(cmdline)
    return lines


@pytest.fixture(scope="module")
def slow_dump(main_server: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A custom dump that takes a few seconds to restore (1.5M rows and two indexes)."""
    folder = tmp_path_factory.mktemp("slow")
    with scratch_database(main_server, "rt_slow_src") as source:
        execute(source, """
            CREATE TABLE reading (id bigserial PRIMARY KEY, meter text NOT NULL,
                                  taken_at timestamptz NOT NULL);
            INSERT INTO reading (meter, taken_at)
                SELECT md5(g::text), now() - g * interval '1 minute'
                FROM generate_series(1, 1500000) g;
            CREATE INDEX ON reading (meter);
        """)
        return pg_dump(source, folder, "custom")


@pytest.fixture
def target(new_database: NewDatabases) -> str:
    """A database with data (to be replaced); it and its copies are dropped afterwards."""
    conninfo = new_database("rt_fault")
    execute(conninfo, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1), (2)")
    return conninfo


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_us_alone_mid_load_stops_pg_restore_and_drops_the_scratch(
        main_server: Server, slow_dump: Path, target: str, signum: int) -> None:
    process = _cli("restore", str(slow_dump), "--database-url", target, "--replace")
    _until(lambda: any("_restoring_" in line for line in _processes_running("pg_restore")))
    time.sleep(0.3)
    process.send_signal(signum)  # to our process only, not its group
    code, out, err = _finish(process)
    assert code == 130, out + err
    name = signal.Signals(signum).name
    errors = [line for line in err.splitlines() if not line.startswith("loading: ")]
    assert errors == [
        f'error: Interrupted ({name}) during load: the scratch database '
        f'"{dbname(target)[:40]}_restoring_{err.split("_restoring_")[1].split(chr(34))[0]}" '
        f'was dropped; "{dbname(target)}" was not changed.']
    assert row_counts(target) == {"precious": 2}
    assert databases(main_server, f"{dbname(target)[:40]}_restoring_%") == []
    assert _processes_running(str(slow_dump)) == []  # no pg_restore outlived us


def test_a_second_run_on_the_same_target_fails_fast_naming_the_first(
        slow_dump: Path, target: str) -> None:
    first = _cli("restore", str(slow_dump), "--database-url", target, "--replace")
    _until(lambda: scalar(target, "SELECT count(*) FROM pg_stat_activity WHERE "
                          "application_name LIKE 'restore-tool restore (pid %%'") == 1)
    started = time.monotonic()
    code, _, err = _finish(_cli("restore", str(SAMPLE), "--database-url", target, "--replace"))
    assert code == 3 and time.monotonic() - started < 10
    assert f'Another run is working on database "{dbname(target)}": restore-tool restore ' \
           f"(pid {first.pid} on " in err
    assert "from a local socket, since 20" in err
    code, _, err = _finish(_cli("fix-sequences", "--database-url", target))
    assert code == 3 and "Another run is working on database" in err
    code, out, err = _finish(first)
    assert code == 0, out + err
    assert "precious" not in row_counts(target)


def test_clients_on_the_target_are_ended_at_the_swap_and_named(target: str) -> None:
    client = psycopg.connect(f"{target} application_name=billing-worker", autocommit=True)
    code, out, err = _finish(_cli("restore", str(SAMPLE), "--database-url", target,
                                  "--replace", "--drop-old"))
    assert code == 0, out + err
    assert "ended 1 session(s): billing-worker (role postgres, from a local socket" in out
    with pytest.raises(psycopg.OperationalError):
        client.execute("SELECT 1")
    client.close()
    assert row_counts(target)["user"] == 16


def test_wait_connections_gives_up_and_changes_nothing(main_server: Server, target: str
                                                       ) -> None:
    with psycopg.connect(f"{target} application_name=report-job", autocommit=True) as client:
        code, out, _ = _finish(_cli("restore", str(SAMPLE), "--database-url", target,
                                    "--replace", "--wait-connections", "1"))
        assert code == 1
        assert ('1 session(s) still connected to "' + dbname(target) + '" after 1 s: '
                "report-job") in out
        client.execute("SELECT 1")  # untouched
    assert row_counts(target) == {"precious": 2}  # new connections are allowed again
    assert databases(main_server, f"{dbname(target)[:40]}_%") == []


def test_prepared_transactions_stop_the_swap_with_a_clear_message(tmp_path: Path) -> None:
    with cluster(embedded_bin_dir(), tmp_path, "prepared", "max_prepared_transactions=2") \
            as server:
        execute(server.conninfo, "CREATE DATABASE app")
        app = server.database("app")
        execute(app, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
        with psycopg.connect(app, autocommit=True) as conn:
            conn.execute("BEGIN; INSERT INTO precious VALUES (2); PREPARE TRANSACTION 'pay-42'")
        code, out, _ = _finish(_cli("restore", str(SAMPLE), "--database-url", app,
                                    "--replace"))
        assert code == 1
        assert 'Database "app" has 1 prepared transaction(s) (pay-42)' in out
        assert "nothing was swapped" in out
        execute(app, "ROLLBACK PREPARED 'pay-42'")
        assert row_counts(app) == {"precious": 1}
        assert databases(server, "app_%") == []


def test_protected_targets_need_confirm(target: str, tmp_path: Path) -> None:
    env = {"RESTORE_TOOL_PROTECTED": "staging, rt_fault*"}
    code, _, err = _finish(_cli("restore", str(SAMPLE), "--database-url", target, "--replace",
                                env=env))
    assert code == 2 and f'Database "{dbname(target)}" is protected (it matches "rt_fault*")' \
        in err and f"--confirm {dbname(target)}" in err
    code, _, err = _finish(_cli("restore", str(SAMPLE), "--database-url", target, "--replace",
                                "--confirm", "some_other_db", env=env))
    assert code == 2 and "is protected" in err
    code, _, err = _finish(_cli("fix-sequences", "--database-url", target, env=env))
    assert code == 2 and "is protected" in err
    code, _, _ = _finish(_cli("fix-sequences", "--dry-run", "--database-url", target, env=env))
    assert code == 0
    code, _, _ = _finish(_cli("verify", "--database-url", target, env=env))
    assert code == 0
    assert row_counts(target) == {"precious": 2}
    (tmp_path / "restore-tool.toml").write_text('protected = ["*FAULT*"]\n')
    code, _, err = _finish(_cli("fix-sequences", "--database-url", target, cwd=tmp_path))
    assert code == 2 and 'matches "*FAULT*"' in err
    code, out, err = _finish(_cli("restore", str(SAMPLE), "--database-url", target,
                                  "--replace", "--confirm", dbname(target), cwd=tmp_path))
    assert code == 0, out + err


def test_fix_sequences_lock_keeps_a_concurrent_writer_from_slipping_under(
        main_db: str) -> None:
    execute(main_db, """
        CREATE TABLE account (id serial PRIMARY KEY);
        INSERT INTO account SELECT generate_series(1, 10);
        CREATE TABLE ledger (id serial PRIMARY KEY, note text);
        INSERT INTO ledger (id, note) SELECT g, 'import' FROM generate_series(1, 50) g;
    """)
    writer = psycopg.connect(main_db)
    writer.execute("INSERT INTO ledger (id, note) VALUES (150, 'still importing')")
    # the repair measures ledger's max as 50, moves account, then waits for the writer's lock
    repair = _cli("fix-sequences", "--lock", "--jobs", "1", "--database-url", main_db)
    _until(lambda: scalar(main_db, "SELECT count(*) FROM pg_stat_activity WHERE "
                          "application_name = 'restore-tool' AND wait_event_type = 'Lock'") == 1)
    scalar(main_db, "SELECT nextval('account_id_seq')")  # the app keeps inserting meanwhile
    writer.commit()
    writer.close()
    code, out, err = _finish(repair)
    assert code == 0, out + err
    lines = out.splitlines()
    assert "✅ Fixed ledger.id sequence (max: 150, next: 151)" in lines  # measured under lock
    assert ("✅ Fixed account.id sequence (max: 10, next: 11); other sessions drew from it "
            "during the repair") in lines
    execute(main_db, "INSERT INTO ledger (note) VALUES ('app')")  # no duplicate key
    assert scalar(main_db, "SELECT count(*) FROM ledger") == 52  # no row lost


def test_the_server_stopping_mid_restore_is_one_sentence(slow_dump: Path, tmp_path: Path
                                                         ) -> None:
    with cluster(embedded_bin_dir(), tmp_path, "doomed") as server:
        execute(server.conninfo, "CREATE DATABASE app")
        app = server.database("app")
        execute(app, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
        process = _cli("restore", str(slow_dump), "--database-url", app, "--replace")
        _until(lambda: len(databases(server, "app_restoring_%")) == 1)
        time.sleep(0.5)
        assert server.bin_dir is not None and server.data_dir is not None
        subprocess.run([str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-m",
                        "immediate", "-w", "stop"], check=True, capture_output=True,
                       user="embedded_postgres" if os.geteuid() == 0 else None)
        code, out, err = _finish(process)
        assert code in (1, 3) and "Traceback" not in out + err, out + err
        assert "could not be dropped (the server is unreachable)" in out
        subprocess.run([str(server.bin_dir / "pg_ctl"), "-D", str(server.data_dir), "-l",
                        str(tmp_path / "log2"), "-w", "-o", f"-h '' -k {tmp_path}", "start"],
                       check=True, capture_output=True,
                       user="embedded_postgres" if os.geteuid() == 0 else None)
        assert row_counts(app) == {"precious": 1}


# Runs the CLI with the loader's child environment made to leak: the password stays in the
# conninfo given to pg_restore's argv. The watcher must see it, or it proves nothing.
_LEAKY = ("import os, sys; import restore_tool.restoring.load as load; "
          "load.child_env = lambda info: (info, dict(os.environ)); "
          "from restore_tool.cli import main; sys.argv[0] = 'restore-tool'; main()")


def _password_in_argv(process: subprocess.Popen[str], password: str) -> list[str]:
    """Every command line holding `password` while `process` runs, except the tool's own (its
    --database-url: also what a child it forks shows for the instant before its exec) and
    this test run's."""
    ours = {os.getpid(), process.pid}
    try:
        own = " ".join(psutil.Process(process.pid).cmdline())
    except psutil.NoSuchProcess:
        own = ""
    seen: list[str] = []
    while process.poll() is None:
        for proc in psutil.process_iter(["pid", "cmdline"]):
            line = " ".join(proc.info["cmdline"] or [])
            if proc.info["pid"] not in ours and password in line and line != own:
                seen.append(line)
        time.sleep(0.05)
    return seen


@pytest.mark.parametrize("leaky", [False, True], ids=["as shipped", "leak injected"])
def test_the_password_shows_nowhere_during_a_restore(
        main_server: Server, password_role: tuple[str, str], new_database: NewDatabases,
        slow_dump: Path, tmp_path: Path, leaky: bool) -> None:
    # new_database after password_role: its databases go first, then the role owning them
    role, password = password_role
    execute(main_server.conninfo, sql.SQL("ALTER ROLE {} CREATEDB").format(
        sql.Identifier(role)).as_string())
    target = dbname(new_database("rt_secret", create=False))
    # sslpassword (an encrypted client key's) has no variable: it must not reach argv either
    key_password = f"key-{password}"
    url = password_url(main_server, role, password, target) + f"&sslpassword={key_password}"
    report = tmp_path / "report.md"
    services = set(Path(tempfile.gettempdir()).glob("restore-tool-service-*"))
    args = ["restore", str(slow_dump), "--database-url", url, "--no-owner", "--json",
            "--report", str(report)]
    process = (subprocess.Popen([sys.executable, "-c", _LEAKY, *args], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CLEAN_ENV)
               if leaky else _cli(*args))
    seen = _password_in_argv(process, password)
    code, out, err = _finish(process)
    assert code == 0, out + err
    if leaky:  # the check catches a leak when there is one
        assert any("pg_restore" in line for line in seen)
        return
    assert seen == []
    for text in (out, err, report.read_text()):
        assert password not in text  # nor key_password, which holds it
    assert "sslpassword=***" in report.read_text()
    # the service file that carried it went with the run
    assert set(Path(tempfile.gettempdir()).glob("restore-tool-service-*")) == services


def test_a_report_that_cannot_be_written_is_one_sentence(target: str) -> None:
    code, out, err = _finish(_cli("restore", str(SAMPLE), "--database-url", target,
                                  "--replace", "--drop-old", "--report", "/proc/version"))
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        "error: the report could not be written to /proc/version")
    assert "All checks passed." in out


def test_scratch_restores_into_a_throwaway_server_and_deletes_it(tmp_path: Path) -> None:
    before = set(Path(tempfile.gettempdir()).glob("restore-tool-scratch-*"))
    code, out, err = _finish(_cli("restore", str(SAMPLE), "--scratch", "--json"))
    assert code == 0, out + err
    report = json.loads(out)
    assert report["target_source"].startswith("--scratch")
    assert [s["status"] for s in report["steps"]] == [
        "passed", "passed", "passed", "skipped", "passed", "passed", "passed", "passed",
        "skipped"]
    assert set(Path(tempfile.gettempdir()).glob("restore-tool-scratch-*")) == before
    code, _, err = _finish(_cli("restore", str(SAMPLE), "--scratch", "--replace"))
    assert code == 2 and "--scratch restores into a temporary server" in err
    code, _, err = _finish(_cli("restore", str(SAMPLE), "--wait-connections", "3"))
    assert code == 2 and "--wait-connections only makes sense with --replace" in err


def test_checklist_lines_come_as_steps_end_and_the_load_moves_by_bytes(
        slow_dump: Path, new_database: NewDatabases) -> None:
    """The preflight line is on stdout while the load still runs (no burst at the end), and
    the load's progress on stderr is a share of the dump's bytes with the time left."""
    target = new_database("rt_streamed", create=False)
    process = _cli("restore", str(slow_dump), "--database-url", target)
    assert process.stdout is not None
    head = [process.stdout.readline() for _ in range(4)]
    assert head[0] == "restore-tool restore\n" and head[3] == "Checklist:\n", head
    first = process.stdout.readline()
    assert first.startswith("  ✅ preflight ") and process.poll() is None  # the load runs on
    code, rest, err = _finish(process)
    assert code == 0, rest + err
    lines = rest.splitlines()
    assert lines[0].startswith("  ✅ load ") and "All checks passed." in lines
    shares = [int(m.group(1)) for m in re.finditer(r"^loading: (\d+)%", err, re.M)]
    assert shares and shares[-1] == 100, err


def test_bytes_read_follow_a_child_as_it_reads(tmp_path: Path) -> None:
    """What moves the load's bar: /proc's count of the bytes a process has read, polled
    while it runs, never going back."""
    data = tmp_path / "data"
    data.write_bytes(os.urandom(8 * 1024 * 1024))
    script = (f"import time\nwith open({str(data)!r}, 'rb', buffering=0) as f:\n"
              "    while f.read(1024 * 1024):\n        time.sleep(0.25)\n")
    reader = subprocess.Popen([sys.executable, "-c", script])
    seen: list[int] = []
    log = RestoreLog(1, frozenset(), progress=lambda done, total, _label: seen.append(done))
    with log.watch_bytes(reader.pid, data.stat().st_size):
        reader.wait()
    assert seen == sorted(seen) and seen[-1] == data.stat().st_size
    assert any(0 < done < data.stat().st_size for done in seen), seen


def test_without_proc_the_load_moves_by_items_finished(tmp_path: Path) -> None:
    """Where /proc cannot tell (another OS; here a process that is gone), the finished TOC
    items move the progress, as pg_restore reports them."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    seen: list[tuple[int, int]] = []
    log = RestoreLog(2, frozenset(), progress=lambda done, total, _label: seen.append(
        (done, total)))
    with log.watch_bytes(gone.pid, 1000):
        log.feed('pg_restore: creating TABLE "public.t"\n')
        log.feed('pg_restore: processing data for table "public.t"\n')
    assert not log.by_bytes and seen == [(1, 2), (2, 2)]


@pytest.mark.skipif(shutil.which("script") is None, reason="needs util-linux's script")
def test_on_a_terminal_a_spinner_names_each_later_step(new_database: NewDatabases,
                                                        tmp_path: Path) -> None:
    """Run under a pseudo-terminal (script): rich draws the bar and names the step running."""
    target = new_database("rt_tty", create=False)
    command = " ".join(shlex.quote(part) for part in [
        sys.executable, "-m", "restore_tool", "restore", str(SAMPLE), "--database-url", target])
    done = subprocess.run(["script", "-qec", command, str(tmp_path / "typescript")],
                          capture_output=True, text=True, env=CLEAN_ENV, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    shown = (tmp_path / "typescript").read_text(errors="replace")
    assert "repair sequences…" in shown and "smoke test…" in shown
    assert "✅ swap" not in shown and "All checks passed." in shown
