"""Never drop, misname or misreport a database: the cases that lost a database that held data
(a 63-byte name, a database created by someone else meanwhile, a swap blocked by a lock and
then killed), each on a real server."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import psutil
import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from restore_tool import commands, project, report, restoring
from restore_tool.pipeline import Outcome, Report, StepName, StepResult
from restore_tool.restoring import swap
from restore_tool.restoring.state import Run
from tests.func.test_faults import (  # noqa: F401 (slow_dump: a fixture)
    CLEAN_ENV,
    SAMPLE,
    _cli,
    _finish,
    _processes_running,
    _until,
    slow_dump,
)
from tests.helpers import databases, dbname, execute, pg_dump, row_counts, scalar, settings
from tests.servers import NewDatabases, Server, standby

PRECIOUS = "CREATE TABLE precious (id int); INSERT INTO precious SELECT generate_series(1, 500)"


def _step(result: Report, name: StepName) -> StepResult:
    return next(r for r in result.steps if r.name is name)


def _names(server: Server) -> list[str]:
    return databases(server, "%")


def test_a_63_byte_name_is_replaced_and_its_copies_fit_and_are_named_as_stored(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    """21 characters of three bytes: a scratch name cut by characters came out as the
    target's own name, and the cleanup dropped the target."""
    target = new_database("顧客管理システム本番データベース東京")  # 18 characters + _<8 hex>
    assert len(dbname(target).encode()) == 63
    execute(target, PRECIOUS)
    result = commands.restore(settings(target, tmp_path), SAMPLE,
                              commands.Options(replace=True))
    assert result.exit_code == 0, report.render(result)
    assert row_counts(target)["user"] == 16
    summary = _step(result, StepName.SWAP).summary
    old = summary.split("the old one is kept as ")[1].split(";")[0]
    assert old in _names(main_server) and len(old.encode()) <= 63
    assert row_counts(main_server.database(old)) == {"precious": 500}


def test_names_differ_for_runs_in_the_same_second_and_targets_sharing_a_prefix() -> None:
    shared, moment = "a" * 60, datetime(2026, 12, 4, 11, 30, 5)
    names = {swap.stamped(shared + tail, kind, moment, swap.token(shared + tail))
             for tail in ("x", "y") for kind in ("old", "restoring") for _run in range(2)}
    assert len(names) == 8 and all(len(n.encode()) <= 63 for n in names)
    assert swap.stamped("é" * 40, "old", moment, "0a0b0c").startswith("é" * 18 + "_old_")


def test_a_database_someone_creates_meanwhile_is_never_dropped(
        main_server: Server, new_database: NewDatabases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Between preflight (the target does not exist) and the load's CREATE DATABASE, another
    client creates it and writes to it: the run fails and leaves it alone."""
    target = new_database("rt_race", create=False)
    name = dbname(target)
    real = restoring.preflight

    def preflight_then_someone_creates_it(state: Run) -> Outcome:
        outcome = real(state)
        execute(main_server.conninfo, f'CREATE DATABASE "{name}"')
        execute(target, PRECIOUS)
        return outcome

    monkeypatch.setattr(restoring, "preflight", preflight_then_someone_creates_it)
    result = commands.restore(settings(target, tmp_path), SAMPLE)
    rendered = report.render(result)
    assert result.exit_code != 0, rendered
    assert "was created by someone else while this run prepared" in rendered
    assert "dropped" not in rendered
    assert row_counts(target) == {"precious": 500}


def _hold_database_lock(server: Server, target: str) -> psycopg.Connection:
    """A session elsewhere (not on the target: ending its sessions does not end it) in an open
    transaction that commented on the database: it holds a lock on the database object until
    it ends, which blocks ALTER DATABASE … RENAME."""
    holder = psycopg.connect(server.conninfo, application_name="rt-lock-holder")
    holder.execute(f'COMMENT ON DATABASE "{dbname(target)}" IS \'being edited\'')
    return holder


def test_a_lock_on_the_target_stops_the_swap_naming_its_holder(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    target = new_database("rt_locked")
    execute(target, PRECIOUS)
    holder = _hold_database_lock(main_server, target)
    try:
        result = commands.restore(settings(target, tmp_path), SAMPLE,
                                  commands.Options(replace=True, lock_wait=2))
    finally:
        holder.close()
    rendered = report.render(result)
    assert result.exit_code == 1, rendered
    summary = _step(result, StepName.SWAP).summary
    assert f'The swap waited 2 s for a lock on database "{dbname(target)}" held by ' \
           "rt-lock-holder (role postgres, pid " in summary, summary
    assert "nothing was swapped" in summary
    assert row_counts(target) == {"precious": 500}
    assert scalar(main_server.conninfo, "SELECT datallowconn FROM pg_database WHERE datname = "
                  "%s", (dbname(target),)) is True
    assert databases(main_server, f"{dbname(target)}_%") == []


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_a_signal_during_a_blocked_swap_leaves_the_target_as_it_was(
        main_server: Server, new_database: NewDatabases, signum: int) -> None:
    """The rename waits on a lock; a signal then (SIGKILL included: its backend gives up at
    lock_timeout and rolls back) leaves the target with its data, taking connections."""
    target = new_database("rt_swap_signal")
    execute(target, PRECIOUS)
    holder = _hold_database_lock(main_server, target)
    try:
        process = _cli("restore", str(SAMPLE), "--database-url", target, "--replace",
                       "--lock-wait", "60")
        _until(lambda: scalar(main_server.conninfo, "SELECT count(*) FROM pg_stat_activity "
                              "WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER DATABASE%%'")
               == 1, timeout=90)
        sent = time.monotonic()
        process.send_signal(signum)
        code, out, err = _finish(process, timeout=30)
        took = time.monotonic() - sent
    finally:
        holder.close()
    assert code == (-9 if signum == signal.SIGKILL else 130), out + err
    assert took < 10
    _until(lambda: databases(main_server, f"{dbname(target)}_restoring_%") == []
           or signum == signal.SIGKILL, timeout=10)
    _until(lambda: scalar(main_server.conninfo, "SELECT count(*) FROM pg_stat_activity WHERE "
                          "query LIKE 'ALTER DATABASE%%' AND pid <> pg_backend_pid()") == 0,
           timeout=10)
    assert row_counts(target) == {"precious": 500}
    assert databases(main_server, f"{dbname(target)}_old_%") == []
    if signum != signal.SIGKILL:
        assert "was dropped" in err and "was not changed" in err, err


def test_drop_old_that_cannot_drop_says_the_swap_is_done_and_names_the_old_one(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    """The old database holds a subscription, so it cannot be dropped: the swap stands."""
    target = new_database("rt_drop_old")
    execute(target, PRECIOUS + "; CREATE SUBSCRIPTION rt_sub CONNECTION 'host=/nonexistent' "
            "PUBLICATION p WITH (connect = false, slot_name = NONE)")
    try:
        result = commands.restore(settings(target, tmp_path), SAMPLE,
                                  commands.Options(replace=True, drop_old=True))
        assert result.exit_code == 0, report.render(result)
        summary = _step(result, StepName.SWAP).summary
        old = summary.split("the old one is kept as ")[1].split(":")[0]
        assert "--drop-old could not drop it" in summary, summary
        assert row_counts(main_server.database(old)) == {"precious": 500}  # connectable
        assert row_counts(target)["user"] == 16
    finally:
        for name in databases(main_server, f"{dbname(target)}_old_%"):
            execute(main_server.database(name), "DROP SUBSCRIPTION rt_sub")


def _socket(server: Server) -> dict[str, str]:
    params = conninfo_to_dict(server.conninfo)
    return {key: str(params[key]) for key in ("host", "port") if params.get(key)}


def test_protection_applies_to_the_database_pgdatabase_names(
        main_server: Server, new_database: NewDatabases) -> None:
    """The URL names a user and no database; libpq takes PGDATABASE, and so does the check."""
    target = new_database("rt_shop_prod")
    where = _socket(main_server)
    url = f"postgresql:///?host={where['host']}&user=postgres" + (
        f"&port={where['port']}" if "port" in where else "")
    code, out, err = _finish(_cli("fix-sequences", "--database-url", url, env={
        "PGDATABASE": dbname(target), "RESTORE_TOOL_PROTECTED": "*prod*"}))
    assert code == 2, out + err
    assert f'Database "{dbname(target)}" is protected (it matches "*prod*")' in err


def test_a_service_file_target_is_the_one_replaced(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    target = new_database("rt_service")
    execute(target, PRECIOUS)
    services = tmp_path / "pg_service.conf"
    services.write_text("[rt]\n" + "".join(f"{k}={v}\n" for k, v in _socket(main_server).items())
                        + f"dbname={dbname(target)}\nuser=postgres\n")
    before = set(_names(main_server))
    code, out, err = _finish(_cli("restore", str(SAMPLE), "--replace", "--drop-old",
                                  env={"DATABASE_URL": "postgresql:///?service=rt",
                                       "PGSERVICEFILE": str(services)}))
    assert code == 0, out + err
    assert f"/{dbname(target)}?service=rt" in out
    assert row_counts(target)["user"] == 16
    assert set(_names(main_server)) == before  # nothing created under another name


def test_a_migration_sees_only_the_restored_database_under_every_name(
        main_server: Server, new_database: NewDatabases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The live database is named by PG* and POSTGRES_* variables too; the hook must not
    reach it through any of them."""
    target = new_database("rt_hook_env")
    execute(target, PRECIOUS)
    where = _socket(main_server)
    for name, value in {"PGHOST": where["host"], "PGDATABASE": dbname(target),
                        "PGUSER": "postgres", "POSTGRES_DB": dbname(target),
                        "POSTGRES_HOST": where["host"], "PGSERVICE": "live"}.items():
        monkeypatch.setenv(name, value)
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[live]\ndbname={dbname(target)}\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    seen = tmp_path / "env.json"
    hook = (f"{sys.executable} -c 'import json, os; "
            f"json.dump(dict(os.environ), open(\"{seen}\", \"w\"))'")
    result = commands.restore(settings(target, tmp_path), SAMPLE,
                              commands.Options(replace=True, migrate=hook))
    assert result.exit_code == 0, report.render(result)
    env = json.loads(seen.read_text())
    scratch = _step(result, StepName.LOAD).summary.split("into ")[1].split(" ")[0]
    assert "_restoring_" in scratch
    assert {env[n] for n in ("PGDATABASE", "POSTGRES_DB")} == {scratch}
    assert conninfo_to_dict(env["DATABASE_URL"])["dbname"] == scratch
    assert "PGSERVICE" not in env


def test_a_killed_run_leaves_a_marked_scratch_the_next_run_names_and_cleanup_drops(
        main_server: Server, new_database: NewDatabases, tmp_path: Path,
        slow_dump: Path) -> None:  # noqa: F811 (the fixture)
    """SIGKILL mid-load (the tool and its pg_restore): the target keeps its data; the scratch
    database stays, marked; the next run names it, `cleanup --dry-run` lists it, `cleanup`
    drops it; `cleanup --keep 0` drops the old copy a replace kept."""
    target = new_database("rt_killed")
    execute(target, PRECIOUS)
    process = _cli("restore", str(slow_dump), "--database-url", target, "--replace")
    _until(lambda: any("_restoring_" in line for line in _processes_running("pg_restore")))
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    _finish(process)
    scratch = databases(main_server, f"{dbname(target)}_restoring_%")
    assert len(scratch) == 1 and row_counts(target) == {"precious": 500}
    result = commands.restore(settings(target, tmp_path), SAMPLE, commands.Options(
        replace=True))
    assert result.exit_code == 0, report.render(result)
    facts = dict(result.facts)
    assert f'"{scratch[0]}" (left by a run for "{dbname(target)}", pid {process.pid} on ' \
        in facts["Leftovers"], facts
    assert "restore-tool cleanup" in facts["Leftovers"]
    code, out, err = _finish(_cli("cleanup", "--dry-run", "--database-url", target))
    assert code == 0 and f'would drop "{scratch[0]}"' in out, out + err
    assert scratch == databases(main_server, f"{dbname(target)}_restoring_%")
    code, out, err = _finish(_cli("cleanup", "--database-url", target))
    assert code == 0 and f'dropped "{scratch[0]}"' in out and "kept " in out, out + err
    assert databases(main_server, f"{dbname(target)}_restoring_%") == []
    old = databases(main_server, f"{dbname(target)}_old_%")
    assert len(old) == 1
    code, out, err = _finish(_cli("cleanup", "--keep", "0", "--database-url", target))
    assert code == 0 and f'dropped "{old[0]}"' in out, out + err
    assert databases(main_server, f"{dbname(target)}_old_%") == []
    assert row_counts(target)["user"] == 16


def test_verify_warns_of_a_sequence_near_its_limit_and_spares_its_last_values(
        new_database: NewDatabases, tmp_path: Path) -> None:
    """A smallserial one value from its limit: verify names it and the fix, and its smoke
    insert does not take that last value, which the application's next insert needs."""
    target = new_database("rt_near_limit")
    execute(target, "CREATE TABLE ticket (id smallserial PRIMARY KEY, note text); "
                    "INSERT INTO ticket (id) VALUES (32766); "
                    "SELECT setval('ticket_id_seq', 32766)")
    result = commands.verify(settings(target, tmp_path))
    assert result.exit_code == 0, report.render(result)
    check = _step(result, StepName.CHECK_SEQUENCES)
    assert check.status.value == "warning"
    assert "1 close to their limit: ticket.id: 1 of 32,767 values left (0.0%); widen it: " \
           "ALTER SEQUENCE public.ticket_id_seq AS bigint, and ticket.id to bigint" \
        in check.summary, check.summary
    assert "ticket: its sequence is close to its limit" in \
        _step(result, StepName.SMOKE_TEST).summary
    config = tmp_path / "restore-tool.toml"  # a configured row for it is left alone too
    config.write_text('automatic_smoke = false\n[[smoke]]\ntable = "ticket"\n'
                      '[smoke.values]\nnote = "smoke"\n')
    result = commands.verify(settings(target, tmp_path), project=project.load(config))
    smoked = _step(result, StepName.SMOKE_TEST)
    assert smoked.status.value == "warning" and "ticket: its sequence is close to its " \
        "limit" in smoked.summary, report.render(result)
    execute(target, "INSERT INTO ticket (note) VALUES ('the application')")  # the last value
    assert scalar(target, "SELECT max(id) FROM ticket") == 32767


def test_restore_spares_a_table_whose_sequence_is_near_its_limit(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    """Restore's own smoke step: the restored smallserial keeps its last value for the
    application, as verify's does."""
    source = new_database("rt_near_src")
    execute(source, "CREATE TABLE ticket (id smallserial PRIMARY KEY, note text); "
                    "INSERT INTO ticket (id) VALUES (32766); "
                    "SELECT setval('ticket_id_seq', 32766)")
    dump = pg_dump(source, tmp_path, "custom")
    target = new_database("rt_near_dst", create=False)
    result = commands.restore(settings(target, tmp_path), dump)
    assert result.exit_code == 0, report.render(result)
    assert "ticket: its sequence is close to its limit" in \
        _step(result, StepName.SMOKE_TEST).summary
    execute(target, "INSERT INTO ticket (note) VALUES ('the application')")
    assert scalar(target, "SELECT max(id) FROM ticket") == 32767


@pytest.mark.parametrize("command, url, code, words", [
    ("restore", "postgresql://app:Hunter2-secret@db.invalid:5432/shop", 3,
     "Could not connect to postgresql://app:***@db.invalid:5432/shop"),  # a live source
    ("inspect", "postgresql://app:Hunter2-secret@db.invalid:5432/shop", 2,
     "a live database (a postgresql:// URL) is a source only restore takes"),
    ("restore", "s3://AKIAHunter2:Hunter2-secret@bucket/prod.dump", 2,
     "The dump is given as a URL restore-tool cannot read"),
    ("restore", "postgresql://app:Se@Hunter2@db.invalid/shop", 2,  # checked as the target is
     "The database URL from the dump's source has an unencoded @ or / in its user or password"),
])
def test_a_url_given_as_the_dump_never_echoes_its_password(
        main_server: Server, command: str, url: str, code: int, words: str) -> None:
    done, out, err = _finish(_cli(command, url, env={"DATABASE_URL": main_server.conninfo}))
    assert done == code and "Traceback" not in err, out + err
    assert words in out + err
    assert "Hunter2" not in out + err


def _scratch_left() -> tuple[set[Path], list[str]]:
    """The scratch directories there are now, and any process still running in one."""
    folders = set(Path(tempfile.gettempdir()).glob("restore-tool-scratch-*"))
    running = [" ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])
               if "restore-tool-scratch-" in " ".join(p.info["cmdline"] or [])]
    return folders, running


@pytest.mark.parametrize("how", ["SIGTERM to the tool", "Ctrl-C to the process group"])
def test_a_signal_while_the_scratch_server_starts_stops_it_and_deletes_its_directory(
        how: str) -> None:
    """Before: SIGTERM during initdb or pg_ctl exited 1 ("could not start"), and a postmaster
    started by an interrupted pg_ctl outlived its deleted directory."""
    before, _ = _scratch_left()
    process = subprocess.Popen(
        [sys.executable, "-m", "restore_tool", "restore", str(SAMPLE), "--scratch"],
        text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=CLEAN_ENV,
        start_new_session=True)
    _until(lambda: bool(_scratch_left()[0] - before), timeout=30)  # the start has begun
    time.sleep(0.2)  # inside initdb
    if how.startswith("SIGTERM"):
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)
    code, out, err = _finish(process)
    assert code == 130, out + err
    assert err.strip().splitlines()[-1] == (
        f"error: Interrupted ({how.split()[0].replace('Ctrl-C', 'SIGINT')}) while the "
        "temporary server started: it was stopped and its directory deleted.")
    folders, running = _scratch_left()
    assert folders - before == set() and running == []


@pytest.mark.parametrize("made, held", [
    ("SELECT lo_from_bytea(0, 'precious')", "1 large objects"),
    ("CREATE FUNCTION answer() RETURNS int LANGUAGE sql AS 'SELECT 42'", "1 functions"),
    ("CREATE TYPE mood AS ENUM ('ok')", "1 types"),
    ("CREATE SCHEMA app", "1 schemas"),
    ("CREATE OPERATOR === (LEFTARG = int, RIGHTARG = int, FUNCTION = int4eq)",
     "1 other objects"),
    ("CREATE PUBLICATION everything FOR ALL TABLES", "1 other objects"),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC", "1 other objects"),
], ids=["large object", "function", "type", "schema", "operator", "publication",
        "default privileges"])
def test_a_database_holding_any_user_object_is_not_empty(
        new_database: NewDatabases, tmp_path: Path, made: str, held: str) -> None:
    """Before: only tables counted; a database of large objects or functions was loaded into
    without --replace."""
    target = new_database("rt_notempty")
    execute(target, made)
    result = commands.restore(settings(target, tmp_path), SAMPLE)
    preflight = _step(result, StepName.PREFLIGHT)
    assert preflight.status.value == "failed", report.render(result)
    assert f"is not empty (it holds {held})" in preflight.summary
    assert row_counts(target) == {}  # none of the dump's tables
    assert scalar(target, "SELECT count(*) FROM pg_proc WHERE proname = 'answer'") == (
        1 if made.startswith("CREATE FUNCTION") else 0)


def test_a_failed_load_into_an_empty_target_names_what_it_left_there(
        new_database: NewDatabases, tmp_path: Path) -> None:
    """The run drops nothing it did not create: what stayed is counted, not guessed."""
    target = new_database("rt_inplace")
    breaks = tmp_path / "breaks.sql"
    breaks.write_text("SELECT 1/0;\n")
    result = commands.restore(settings(target, tmp_path), SAMPLE,
                              commands.Options(post_sql=(breaks,)))
    rendered = report.render(result)
    assert result.exit_code == 1, rendered
    assert _step(result, StepName.POST_RESTORE).status.value == "failed"
    relations = scalar(target, "SELECT count(*) FROM pg_class WHERE oid >= 16384")
    assert relations > 20 and row_counts(target)["user"] == 16
    assert (f'"{dbname(target)}" was empty and now holds what this run restored: '
            f"{relations} relations, ") in rendered


def test_a_read_only_role_is_refused_before_anything_is_written(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    """Before: every statement of the load failed, and the report said the target "may now
    hold part of the dump"."""
    role = f"rt_ro_{os.getpid()}"
    execute(main_server.conninfo, f'CREATE ROLE "{role}" LOGIN CREATEDB; '
            f'ALTER ROLE "{role}" SET default_transaction_read_only = on')
    try:
        for create in (True, False):
            target = new_database("rt_readonly", create=create)
            if create:
                execute(target, f'ALTER DATABASE "{dbname(target)}" OWNER TO "{role}"')
            result = commands.restore(
                settings(psycopg.conninfo.make_conninfo(target, user=role), tmp_path),
                SAMPLE, commands.Options(no_owner=True))
            preflight = _step(result, StepName.PREFLIGHT)
            assert preflight.summary.startswith(
                f'Nothing can be restored: sessions of role "{role}" in "postgres" are '
                "read-only (default_transaction_read_only = on, the role's setting)."
            ), report.render(result)
            assert (f'"{dbname(target)}" was not changed' in report.render(result)) is create
            assert databases(main_server, dbname(target)) == ([dbname(target)] if create else [])
    finally:
        new_database.drop_all()
        execute(main_server.conninfo, f'DROP ROLE "{role}"')


def test_a_target_whose_own_setting_makes_it_read_only_is_refused(
        new_database: NewDatabases, tmp_path: Path) -> None:
    """The dump's ALTER DATABASE … SET default_transaction_read_only = on, left by an earlier
    failed load, or set by hand: the maintenance database writes, the target does not."""
    target = new_database("rt_db_readonly")
    execute(target, f'ALTER DATABASE "{dbname(target)}" SET default_transaction_read_only = on')
    result = commands.restore(settings(target, tmp_path), SAMPLE)
    preflight = _step(result, StepName.PREFLIGHT)
    assert preflight.summary.startswith(
        f'Nothing can be restored: sessions of role "postgres" in "{dbname(target)}" are '
        "read-only (default_transaction_read_only = on, the database's setting). Restore as "
        "a role whose sessions may write"), report.render(result)
    assert row_counts(target) == {}


def test_a_hot_standby_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with standby(tmp_path) as (primary, replica):
        execute(primary.conninfo, "CREATE DATABASE shop")
        _until(lambda: databases(replica, "shop") == ["shop"], timeout=30)
        result = commands.restore(settings(replica.database("shop"), tmp_path), SAMPLE)
        preflight = _step(result, StepName.PREFLIGHT)
        assert preflight.summary.startswith(
            "Nothing can be restored: the server is a hot standby (in recovery): it takes no "
            "writes. Restore into the primary."), report.render(result)
        assert '"shop" was not changed.' in report.render(result)


def test_a_killed_scratch_run_leaves_its_server_which_the_next_run_names_and_cleanup_stops(
        main_server: Server, slow_dump: Path, new_database: NewDatabases,  # noqa: F811 (the fixture)
        tmp_path: Path) -> None:
    """SIGKILL mid-load of `restore --scratch`: its postmaster runs on in a directory nobody
    mentioned. The next restore names it; cleanup stops the server and removes it."""
    before, _ = _scratch_left()
    process = _cli("restore", str(slow_dump), "--scratch")
    _until(lambda: bool(_scratch_left()[1]) and bool(_processes_running("pg_restore")))
    process.kill()
    process.communicate()
    folders, running = _scratch_left()
    (left,) = folders - before
    assert running, "the killed run's server should still run"
    env = {"DATABASE_URL": main_server.conninfo}
    code, out, err = _finish(_cli("cleanup", "--dry-run", env=env))
    assert code == 0, out + err
    assert f"would remove {left} (left by pid {process.pid}" in out
    assert "its server still running" in out
    target = new_database("rt_after_kill", create=False)
    result = commands.restore(settings(target, tmp_path), SAMPLE)
    assert result.exit_code == 0, report.render(result)
    assert any(name == "Left on this machine" and str(left) in text
               for name, text in result.facts)
    code, out, err = _finish(_cli("cleanup", env=env))
    assert code == 0, out + err
    assert f"removed {left}" in out
    _until(lambda: _scratch_left()[1] == [], timeout=10)
    assert not left.exists()


def _hook_running(pid: int, hook: str) -> bool:
    """Whether the run `pid` has started its hook: a process under it that is the shell (or
    what the shell became) running `hook`; not any other `sleep` on the machine, nor a child
    the run forked and has not yet exec'd, which still shows the run's own command line."""
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return False
    for child in children:
        try:
            argv = child.cmdline()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            continue
        if argv and Path(argv[0]).name in ("sh", "dash", "sleep") and \
                " ".join(argv).endswith(hook):
            return True
    return False


def _waiting(server: Server, query: str) -> bool:
    return bool(scalar(server.conninfo, "SELECT count(*) FROM pg_stat_activity WHERE "
                       "wait_event_type = 'Lock' AND query ILIKE %s", (query,)))


# The check step's connections are the run's only read-only ones: a login event trigger
# (PostgreSQL 17+) holds exactly those.
_READ_ONLY_GATE = """
CREATE FUNCTION rt_gate() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
    IF current_setting('default_transaction_read_only') = 'on' THEN PERFORM pg_sleep(60); END IF;
END $$;
CREATE EVENT TRIGGER rt_gate ON login EXECUTE FUNCTION rt_gate();
"""


def _block(server: Server, step: str, scratch: str) -> psycopg.Connection:
    """A session that makes `step` of the run wait, and the wait begun: a table lock for the
    steps that read or write rows, a login trigger for the check's read-only connections, and
    an uncommitted setting of the same database for database settings (the run's ALTER
    DATABASE … SET waits on its pg_db_role_setting row)."""
    if step == "database settings":
        holder = psycopg.connect(server.conninfo)
        holder.execute(f'ALTER DATABASE "{scratch}" SET work_mem = \'5MB\'')
        _until(lambda: _waiting(server, "ALTER DATABASE % SET %"), timeout=30)
        return holder
    holder = psycopg.connect(server.database(scratch), autocommit=step == "check sequences")
    if step == "check sequences":
        holder.execute(_READ_ONLY_GATE)
        _until(lambda: bool(scalar(server.conninfo, "SELECT count(*) FROM pg_stat_activity "
                                   "WHERE datname = %s AND wait_event = 'PgSleep'",
                                   (scratch,))), timeout=30)
        return holder
    mode = "ACCESS EXCLUSIVE" if step == "repair sequences" else "EXCLUSIVE"
    holder.execute(f'LOCK TABLE "user" IN {mode} MODE')  # ACCESS EXCLUSIVE stops max()
    _until(lambda: _waiting(server, {"repair sequences": "%", "analyze": "ANALYZE%"}
                            .get(step, "%INSERT INTO%")), timeout=30)
    return holder


@pytest.mark.parametrize("step", ["post-restore", "repair sequences", "analyze", "smoke test",
                                  "check sequences", "database settings"])
def test_sigkill_at_a_later_step_of_a_replace_leaves_the_target_and_a_scratch_cleanup_drops(
        main_server: Server, new_database: NewDatabases, tmp_path: Path, step: str) -> None:
    """SIGKILL (the tool and its children) while the hook runs, or while a later step waits
    on another session (see _block): the target keeps its data and takes connections; the
    scratch database stays, and cleanup drops it, even one that already holds the dump's
    settings; the next restore names it first. (Mid-load and mid-swap are the tests above.)"""
    if step == "check sequences" and main_server.version < 17:
        pytest.skip("login event triggers are PostgreSQL 17+")
    dump = SAMPLE
    if step == "database settings":  # a dump that carries some
        source = new_database("rt_kill_source")
        assert commands.restore(settings(source, tmp_path), SAMPLE).exit_code == 0
        execute(source, f'ALTER DATABASE "{dbname(source)}" SET work_mem = \'7MB\'')
        dump = pg_dump(source, tmp_path, "custom")
    target = new_database("rt_kill_step")
    execute(target, PRECIOUS)
    hook = {"post-restore": "sleep 60"}.get(step, "sleep 2")
    extra = ["--no-analyze"] if step == "smoke test" else []
    process = _cli("restore", str(dump), "--database-url", target, "--replace",
                   "--migrate", hook, *extra)
    _until(lambda: _hook_running(process.pid, hook), timeout=60)
    holder = None
    try:
        if step != "post-restore":  # the load is done: block the step that comes
            (scratch,) = databases(main_server, f"{dbname(target)}_restoring_%")
            holder = _block(main_server, step, scratch)
    finally:  # killed whatever happened above: a run left going would spoil the next case
        for child in psutil.Process(process.pid).children(recursive=True):
            child.kill()
        process.kill()
        _finish(process)
        if holder is not None:
            holder.close()
    assert row_counts(target) == {"precious": 500}
    (scratch,) = databases(main_server, f"{dbname(target)}_restoring_%")
    assert databases(main_server, f"{dbname(target)}_old_%") == []
    result = commands.restore(settings(target, tmp_path), SAMPLE, commands.Options(
        replace=True))  # the next run names what the killed one left
    assert result.exit_code == 0, report.render(result)
    assert f'"{scratch}" (left by a run for "{dbname(target)}", pid {process.pid} on ' \
        in dict(result.facts)["Leftovers"], result.facts
    code, out, err = _finish(_cli("cleanup", "--database-url", target))
    assert code == 0 and f'dropped "{scratch}"' in out, out + err
    assert databases(main_server, f"{dbname(target)}_restoring_%") == []
    assert row_counts(target)["user"] == 16 and len(databases(
        main_server, f"{dbname(target)}_old_%")) == 1  # the killed run's target, kept


def test_an_unwrapped_dump_goes_to_the_work_dir_when_it_has_room(
        new_database: NewDatabases, tmp_path: Path) -> None:
    forged = tmp_path / "huge.dump.zst"  # a zstd frame whose header claims 1 PiB
    forged.write_bytes(b"\x28\xb5\x2f\xfd\xe0" + (2 ** 50).to_bytes(8, "little") + b"x" * 64)
    code, _, err = _finish(_cli("inspect", str(forged), "--work-dir", str(tmp_path)))
    assert code == 2 and "Traceback" not in err
    assert f"error: Unpacking huge.dump.zst needs 1024.0 TiB in {tmp_path}, which has" in err
    assert "choose another place with --work-dir DIR" in err
    code, _, err = _finish(_cli("inspect", str(SAMPLE), "--work-dir", str(tmp_path / "no")))
    assert code == 2 and f"--work-dir {tmp_path / 'no'} is not a directory" in err
    packed, work = tmp_path / "sample.dump.gz", tmp_path / "work"
    packed.write_bytes(gzip.compress(SAMPLE.read_bytes()))
    work.mkdir()
    target = new_database("rt_workdir", create=False)
    seen: list[Path] = []
    real = restoring.preflight

    def preflight_noting_the_work_dir(state: Run) -> Outcome:
        outcome = real(state)
        seen.extend(state.work.iterdir())
        return outcome

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(restoring, "preflight", preflight_noting_the_work_dir)
        result = commands.restore(settings(target, tmp_path), packed,
                                  commands.Options(work_dir=work))
    assert result.exit_code == 0, report.render(result)
    assert [p.name for p in seen] == [".restore-tool-run", "sample.dump.gz.unwrapped"]
    assert all(p.parent.parent == work for p in seen) and list(work.iterdir()) == []


def test_a_killed_runs_work_dir_is_found_where_it_was_put(
        main_server: Server, new_database: NewDatabases, tmp_path: Path,
        slow_dump: Path) -> None:  # noqa: F811 (the fixture)
    """SIGKILL mid-load of a gzip dump unpacked into --work-dir: the unpacked copy stays; the
    next run and cleanup find it there (and cleanup drops the scratch database too)."""
    packed, work = tmp_path / "slow.dump.gz", tmp_path / "work"
    packed.write_bytes(gzip.compress(slow_dump.read_bytes(), compresslevel=1))
    work.mkdir()
    target = new_database("rt_killed_work")
    execute(target, PRECIOUS)
    process = _cli("restore", str(packed), "--database-url", target, "--replace",
                   "--work-dir", str(work))
    _until(lambda: any("_restoring_" in line for line in _processes_running("pg_restore")))
    for child in psutil.Process(process.pid).children(recursive=True):
        child.kill()
    process.kill()
    _finish(process)
    (left,) = work.iterdir()
    assert (left / "slow.dump.gz.unwrapped").exists()
    code, out, err = _finish(_cli("cleanup", "--dry-run", "--database-url", target))
    assert code == 0 and str(left) not in out, out + err  # not where it was put
    result = commands.restore(settings(target, tmp_path), SAMPLE, commands.Options(
        replace=True, drop_old=True, work_dir=work))
    assert result.exit_code == 0, report.render(result)
    assert f"{left} (left by pid {process.pid}" in dict(result.facts)["Left on this machine"]
    code, out, err = _finish(_cli("cleanup", "--work-dir", str(work), "--database-url", target))
    assert code == 0 and f"removed {left} (left by pid {process.pid}" in out, out + err
    assert "dropped" in out and list(work.iterdir()) == []
    assert databases(main_server, f"{dbname(target)}_restoring_%") == []


def test_cleanup_drops_a_leftover_another_host_left_for_its_target(
        main_server: Server, new_database: NewDatabases) -> None:
    """A run on another machine is alive only while it holds its target's lock; cleanup holds
    that lock itself, so another host's leftover for the same target is dead, not alive."""
    target = new_database("rt_other_host")
    left = f"{dbname(target)}_restoring_20261201_101010_abc123"
    execute(main_server.conninfo, f'CREATE DATABASE "{left}"')
    description = "restore-tool run " + json.dumps({
        "target": dbname(target), "pid": 4242, "host": "ci-runner-7",
        "started": "2026-12-01T10:10:10"})
    execute(main_server.conninfo, psycopg.sql.SQL("COMMENT ON DATABASE {} IS {}").format(
        psycopg.sql.Identifier(left), psycopg.sql.Literal(description)).as_string())
    code, out, err = _finish(_cli("cleanup", "--database-url", target))
    assert code == 0 and f'dropped "{left}" (left by a run for "{dbname(target)}", pid 4242 ' \
        "on ci-runner-7" in out, out + err
    assert databases(main_server, left) == []
