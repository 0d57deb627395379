"""`restore-tool restore` and `inspect` on real servers: every dump format restored and
compared table by table with its source (Chinook, imported with explicit ids), a pg_dump 18
dump into PostgreSQL 15, refusal, --replace, and failures that must leave nothing behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from restore_tool import commands, report
from restore_tool.errors import MissingBinary
from restore_tool.pipeline import Status
from restore_tool.restoring import archive
from restore_tool.sequences.plan import Action
from tests.helpers import (
    by_label,
    databases,
    dbname,
    execute,
    load_chinook,
    pg_dump,
    row_counts,
    scalar,
    settings,
)
from tests.servers import NewDatabases, Server, embedded_bin_dir, scratch_database

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ["custom", "directory", "tar", "plain", "plain.gz", "custom.gz", "custom.zst",
           "plain.lz4"]


@pytest.fixture(scope="module")
def chinook(main_server: Server, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[tuple[str, Path]]:
    """A Chinook database loaded with explicit ids (its sequences lag) and a folder of dumps."""
    with scratch_database(main_server, "rt_chinook") as source:
        load_chinook(source)
        dbname = psycopg.conninfo.conninfo_to_dict(source)["dbname"]
        execute(source, f'ALTER DATABASE "{dbname}" SET work_mem = \'7MB\'')
        yield source, tmp_path_factory.mktemp("dumps")


def _dump(chinook: tuple[str, Path], fmt: str) -> Path:
    source, folder = chinook
    existing = folder / f"chinook.{fmt}"
    return existing if existing.exists() else pg_dump(source, folder, fmt)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_restores_the_same_rows_and_repairs_sequences(
        new_database: NewDatabases, chinook: tuple[str, Path], fmt: str, tmp_path: Path
        ) -> None:
    target = new_database("rt_restored", create=False)
    result = commands.restore(settings(target, tmp_path), _dump(chinook, fmt))
    assert result.exit_code == 0, report.render(result)
    assert row_counts(target) == row_counts(chinook[0])
    fixes = by_label(next(s for s in result.steps if s.name == "repair sequences").details)
    assert fixes["track.track_id"].action is Action.FIXED
    assert fixes["track.track_id"].next_after == 1 + scalar(target, "SELECT max(track_id) "
                                                                      "FROM track")
    execute(target, "INSERT INTO artist (name) VALUES ('after the restore')")
    if fmt.startswith(("custom", "directory", "tar")):  # database settings travel with them
        assert scalar(target, "SHOW work_mem") == "7MB"


def test_inspect_reads_format_versions_and_counts(chinook: tuple[str, Path]) -> None:
    found = commands.inspect(_dump(chinook, "custom.gz"))
    assert (found.format, found.wrapper, found.archive_version) == ("custom", "gzip", "1.16-0")
    assert found.pg_dump_version and found.pg_dump_version.startswith("18.")
    assert found.counts == {"tables": 11, "sequences": 10, "indexes": 11, "extensions": 0}
    assert found.reader.version[0] == 18
    shape = json.loads(report.dump_json(found))
    assert (shape["ok"], shape["command"], shape["exit_code"]) == (True, "inspect", 0)
    assert shape["dump"]["format"] == "custom" and shape["dump"]["reader"].endswith("pg_restore")


@pytest.mark.parametrize("content", [b"", b"\x00\x01garbage" * 100, b"PGDMP\x01\x10\x00"])
def test_what_is_no_dump_gets_one_sentence_and_exit_2(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.dump"
    path.write_bytes(content)
    done = _cli("inspect", str(path))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_missing_path_and_a_folder_without_toc(tmp_path: Path) -> None:
    assert _cli("inspect", str(tmp_path / "nope.dump")).returncode == 2
    done = _cli("inspect", str(tmp_path))
    assert done.returncode == 2 and "no toc.dat" in done.stderr


def test_pg18_dump_into_postgresql_15(server: Server, chinook: tuple[str, Path],
                                      tmp_path: Path) -> None:
    """What users hit every day: a pg_dump 18 dump restored into an older server. Only a
    pg_restore 17 or 18 reads it; the settings pg_restore sends that the server does not know
    are tolerated, those the plain script holds are left out and named."""
    if server.version >= 18:
        pytest.skip("needs a server older than the dump")
    for fmt in ("custom", "plain"):
        with scratch_database(server, "rt_old") as target:
            result = commands.restore(settings(target, tmp_path), _dump(chinook, fmt))
            load_step = next(s for s in result.steps if s.name == "load")
            assert result.exit_code == 0, report.render(result)
            if server.version < 17 and fmt == "custom":  # pg_restore 18 sends it; 15, 16 lack it
                assert load_step.status is Status.WARNING
                assert "transaction_timeout" in load_step.summary
            elif server.version < 17:  # pg_dump 18 wrote it: left out, and named
                assert load_step.status is Status.PASSED, load_step.summary
                assert "SET statement(s) pg_dump 18" in load_step.summary
                assert "(transaction_timeout)" in load_step.summary
            else:
                assert load_step.status is Status.PASSED, load_step.summary
            assert row_counts(target) == row_counts(chinook[0])


def test_a_database_with_data_is_refused_without_replace(main_db: str, tmp_path: Path) -> None:
    execute(main_db, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
    done = _cli("restore", str(ROOT / "backups/battery-hub.dump"), "--database-url", main_db,
                cwd=tmp_path)
    assert done.returncode == 2
    assert "is not empty (it holds" in done.stdout and "--replace" in done.stdout
    assert row_counts(main_db) == {"precious": 1}


def test_replace_swaps_in_and_keeps_the_old_database(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    target = new_database("rt_replaced")
    name = dbname(target)
    execute(target, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
    result = commands.restore(settings(target, tmp_path), ROOT / "backups/battery-hub.dump",
                         commands.Options(replace=True))
    assert result.exit_code == 0, report.render(result)
    assert "precious" not in row_counts(target) and row_counts(target)["user"] == 16
    old = databases(main_server, f"{name}_old_%")
    assert len(old) == 1 and row_counts(main_server.database(old[0])) == {"precious": 1}
    assert databases(main_server, f"{name}_restoring_%") == []

    again = commands.restore(settings(target, tmp_path), ROOT / "backups/battery-hub.dump",
                        commands.Options(replace=True, drop_old=True))
    assert again.exit_code == 0
    assert databases(main_server, f"{name}_old_%") == old  # the first one, kept


def _failing_source(server: Server) -> Iterator[str]:
    """A database whose dump fails on restore: a CHECK calls a function that reads another
    table, unqualified (the restore runs with an empty search_path)."""
    with scratch_database(server, "rt_failing") as source:
        execute(source, """
            CREATE TABLE parent (id int PRIMARY KEY); INSERT INTO parent VALUES (1);
            CREATE FUNCTION has_parent(int) RETURNS boolean LANGUAGE sql
                AS 'SELECT EXISTS (SELECT 1 FROM parent WHERE id = $1)';
            CREATE TABLE child (id serial PRIMARY KEY, pid int CHECK (has_parent(pid)));
            INSERT INTO child (pid) VALUES (1);
        """)
        yield source


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_a_failing_statement_leaves_the_old_database_and_no_scratch(
        main_server: Server, new_database: NewDatabases, tmp_path: Path, fmt: str) -> None:
    for source in _failing_source(main_server):
        dump = pg_dump(source, tmp_path, fmt)
    target = new_database("rt_kept")
    name = dbname(target)
    execute(target, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
    result = commands.restore(settings(target, tmp_path), dump, commands.Options(replace=True))
    load_step = next(s for s in result.steps if s.name == "load")
    assert result.exit_code == 1 and load_step.status is Status.FAILED
    assert "parent" in load_step.summary
    assert row_counts(target) == {"precious": 1}
    assert databases(main_server, f"{name}_%") == []
    assert f'"{name}" was not changed.' in report.render(result)


@pytest.mark.parametrize("keep", [0.5, 0.95])
def test_a_truncated_dump_leaves_the_old_database_and_no_scratch(
        main_server: Server, new_database: NewDatabases, chinook: tuple[str, Path],
        tmp_path: Path, keep: float) -> None:
    """Cut short in its data (the TOC still reads) or near its end: the load fails, the
    scratch database is dropped, the target keeps its data."""
    whole = _dump(chinook, "custom").read_bytes()
    dump = tmp_path / "truncated.dump"
    dump.write_bytes(whole[:int(len(whole) * keep)])
    target = new_database("rt_truncated")
    execute(target, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
    result = commands.restore(settings(target, tmp_path), dump, commands.Options(replace=True))
    assert result.exit_code != 0
    failed = next(s for s in result.steps if s.status is Status.FAILED)
    assert failed.name in ("preflight", "load")
    assert row_counts(target) == {"precious": 1}
    assert databases(main_server, f"{dbname(target)}_%") == []


def test_plain_sql_with_an_error_loads_nothing(main_server: Server, new_database: NewDatabases,
                                               tmp_path: Path) -> None:
    """psql runs the script in one transaction: a new target is dropped again, an existing
    empty one stays empty."""
    script = tmp_path / "seed.sql"
    script.write_text("CREATE TABLE a (id int);\nINSERT INTO a VALUES (1);\n"
                      "INSERT INTO missing_table VALUES (2);\nCREATE TABLE b (id int);\n")
    target = new_database("rt_plain_error", create=False)
    result = commands.restore(settings(target, tmp_path), script)
    assert result.exit_code == 1
    assert 'relation "missing_table" does not exist' in result.steps[1].summary
    assert databases(main_server, dbname(target)) == []
    empty = new_database("rt_plain_empty")
    assert commands.restore(settings(empty, tmp_path), script).exit_code == 1
    assert row_counts(empty) == {}


def test_hooks_run_on_the_restored_database_before_the_swap(new_database: NewDatabases,
                                                           tmp_path: Path) -> None:
    target = new_database("rt_hooks", create=False)
    scrub = tmp_path / "scrub.sql"
    scrub.write_text("UPDATE \"user\" SET email = 'user' || user_id || '@example.invalid';")
    migrate = (f"{sys.executable} -c \"import os, psycopg; psycopg.connect(os.environ["
               f"'DATABASE_URL'], autocommit=True).execute('CREATE TABLE migrated ()')\"")
    result = commands.restore(settings(target, tmp_path), ROOT / "backups/battery-hub.dump",
                         commands.Options(migrate=migrate, post_sql=(scrub,)))
    assert result.exit_code == 0, report.render(result)
    assert scalar(target, "SELECT count(*) FROM \"user\" WHERE email NOT LIKE "
                          "'%@example.invalid'") == 0
    assert scalar(target, "SELECT to_regclass('migrated') IS NOT NULL") is True
    missing = commands.restore(settings(target, tmp_path), ROOT / "backups/battery-hub.dump",
                          commands.Options(replace=True, post_sql=(tmp_path / "nope.sql",)))
    assert missing.exit_code == 2 and "nope.sql does not exist" in missing.steps[0].summary


def test_a_migration_runs_through_the_shell_and_a_failure_shows_its_output(
        new_database: NewDatabases, tmp_path: Path) -> None:
    """--migrate runs as make runs a command (sh -c, in the working directory: `cd`, `VAR=1`
    and a tool installed beside restore-tool with its venv not activated all work); its
    output streams to stderr, and the last 40 lines are in the checklist, JSON and Markdown."""
    (tmp_path / "app").mkdir()
    script = tmp_path / "app" / "migrate.sh"
    script.write_text('#!/bin/sh\necho "DEBUG is $DEBUG in $(basename $PWD)"\n'
                      'for i in $(seq 1 50); do echo "INFO line $i"; done\n'
                      "echo \"FAILED: Can't locate revision identified by 'abc123'\"\n"
                      'echo "the last word, on stderr" >&2\nexit 1\n')
    script.chmod(0o755)
    env = {name: value for name, value in os.environ.items()  # our venv is not activated
           if not name.startswith(("PG", "POSTGRES_", "DATABASE_URL"))} | {"PATH": "/usr/bin:/bin"}
    dump = str(ROOT / "backups/battery-hub.dump")
    runs = {}
    for name, command in {"ok": "ruff --version",  # in our venv's bin, not on PATH
                          "failed": "cd app && DEBUG=1 ./migrate.sh",
                          "missing": "alembic upgrade head"}.items():
        markdown = tmp_path / f"{name}.md"
        target = new_database(f"rt_hook_{name}", create=False)
        runs[name] = subprocess.run(
            [sys.executable, "-m", "restore_tool", "restore", dump, "--database-url", target,
             "--migrate", command, "--json", "--report", str(markdown)],
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert runs["ok"].returncode == 0 and "ruff " in runs["ok"].stderr, runs["ok"].stderr
    done = runs["failed"]
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "DEBUG is 1 in app" in done.stderr and "INFO line 1\n" in done.stderr  # streamed
    step = json.loads(done.stdout)["steps"][3]
    assert (step["name"], step["status"]) == ("post-restore", "failed")
    assert step["summary"] == ("'cd app && DEBUG=1 ./migrate.sh' exited with code 1: "
                               "the last word, on stderr")
    (output,) = step["details"]
    assert output["exit_code"] == 1 and len(output["output"]) == 40
    assert output["output"][0] == "INFO line 13"
    assert output["output"][-2] == "FAILED: Can't locate revision identified by 'abc123'"
    assert "FAILED: Can't locate revision" in (tmp_path / "failed.md").read_text()
    missing = json.loads(runs["missing"].stdout)["steps"][3]
    assert runs["missing"].returncode == 1 and "Traceback" not in runs["missing"].stderr
    assert missing["summary"].startswith("'alembic upgrade head' exited with code 127: ")
    assert "alembic: not found" in missing["summary"]


def test_the_demo_shows_the_duplicate_key_then_the_repair_then_the_insert(
        main_server: Server) -> None:
    """`make demo`'s first half (backups/demo.py), on the main server instead of the
    embedded one: the error an application hits, fix-sequences, the same insert working."""
    assert "backups/demo.py" in (ROOT / "Makefile").read_text()
    try:
        done = subprocess.run([sys.executable, str(ROOT / "backups" / "demo.py"),
                               main_server.conninfo], capture_output=True, text=True,
                              timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        out = done.stdout
        error = out.index('ERROR:  duplicate key value violates unique constraint "user_pkey"')
        fixed = out.index("✅ Fixed user.user_id sequence (max: 17, next: 18)")
        inserted = out.index("INSERT 0 1: user_id 18")
        assert error < fixed < inserted
    finally:
        execute(main_server.conninfo, "DROP DATABASE IF EXISTS battery_hub_demo WITH (FORCE)")


def test_the_sample_dump_from_the_cli(new_database: NewDatabases, tmp_path: Path) -> None:
    """What `make demo` runs, against a new database: JSON on stdout, progress on stderr,
    the Markdown report, every step passed and the 22 lagging sequences fixed."""
    target = new_database("rt_sample", create=False)
    markdown = tmp_path / "report.md"
    done = _cli("restore", str(ROOT / "backups/battery-hub.dump"), "--database-url", target,
                "--json", "--report", str(markdown), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    shape = json.loads(done.stdout)
    assert set(shape) == {"ok", "command", "exit_code", "target", "target_source", "facts",
                          "steps"}
    assert [s["name"] for s in shape["steps"]] == [
        "preflight", "load", "proof", "post-restore", "repair sequences", "analyze",
        "smoke test", "check sequences", "database settings"]
    assert shape["steps"][4]["summary"].startswith("fixed 22,")
    assert "loading:" in done.stderr
    assert markdown.read_text().startswith("# restore-tool restore: passed")


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "restore_tool", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)


def test_a_dump_too_new_for_every_pg_restore_names_what_is_needed(tmp_path: Path) -> None:
    path = tmp_path / "future.dump"
    path.write_bytes(b"PGDMP\x01\x63\x00" + b"\x00" * 100)
    assert archive.archive_version(path) == (1, 99, 0)
    with pytest.raises(MissingBinary, match=r"archive of version 1\.99, which needs a newer "
                                            r"pg_restore; the newest found here is 18\."):
        commands.inspect(path)


def test_a_plain_dump_made_with_create_is_refused(
        main_server: Server, new_database: NewDatabases, chinook: tuple[str, Path],
        tmp_path: Path) -> None:
    script = tmp_path / "created.sql"
    subprocess.run([str(embedded_bin_dir() / "pg_dump"), "--create", "--file", str(script),
                    "--dbname", chinook[0]], check=True)
    target = new_database("rt_created", create=False)
    result = commands.restore(settings(target, tmp_path), script)
    assert result.exit_code == 2
    assert "was dumped with --create" in result.steps[0].summary
    assert databases(main_server, dbname(target)) == []


def test_roles_missing_on_the_target_are_named_before_anything_is_written(
        main_server: Server, new_database: NewDatabases, tmp_path: Path) -> None:
    role = "rt_ghost_owner"
    execute(main_server.conninfo, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role}")
    with scratch_database(main_server, "rt_owned") as source:
        execute(source, f"CREATE TABLE owned (id serial PRIMARY KEY); "
                        f"INSERT INTO owned VALUES (5); ALTER TABLE owned OWNER TO {role}")
        dump = pg_dump(source, tmp_path, "custom")
    execute(main_server.conninfo, f"DROP ROLE {role}")
    target = new_database("rt_owned_copy", create=False)
    refused = commands.restore(settings(target, tmp_path), dump)
    assert refused.exit_code == 2
    assert f"roles this server does not have: {role}." in refused.steps[0].summary
    assert "--no-owner" in refused.steps[0].summary
    assert databases(main_server, dbname(target)) == []
    done = commands.restore(settings(target, tmp_path), dump, commands.Options(no_owner=True))
    assert done.exit_code == 0, report.render(done)
    assert row_counts(target) == {"owned": 1}


def test_a_damaged_gzip_file_and_drop_old_without_replace(main_db: str, tmp_path: Path,
                                                          chinook: tuple[str, Path]) -> None:
    whole = _dump(chinook, "plain.gz").read_bytes()
    damaged = tmp_path / "damaged.sql.gz"
    damaged.write_bytes(whole[:len(whole) // 2])
    done = _cli("inspect", str(damaged))
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: {damaged} could not be decompressed: ")
    flags = _cli("restore", str(ROOT / "backups/battery-hub.dump"), "--drop-old",
                 "--database-url", main_db, cwd=tmp_path)
    assert flags.returncode == 2
    assert flags.stderr == "error: --drop-old only makes sense with --replace.\n"
