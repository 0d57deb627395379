"""argv as data: each child command's builder against the command line a person would type,
and a failed child's error carrying its argv, exit code and stderr tail (no server)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import pytest

from restore_tool import pgtools
from restore_tool.errors import CommandFailed
from restore_tool.pgtools import Tool

TOOL = {name: Tool((18, 6), Path(f"/pg/bin/{name}"))
        for name in ("pg_restore", "psql", "vacuumdb", "pg_dump")}
DB = "host=/tmp dbname=app user=u"


def test_pg_restore_builders() -> None:
    assert pgtools.pg_restore_cmd(TOOL["pg_restore"], DB, Path("x.dump"), jobs=4,
                                  no_owner=True) == shlex.split(
        f"/pg/bin/pg_restore --verbose --dbname '{DB}' --jobs 4 --no-owner x.dump")
    assert pgtools.pg_restore_cmd(TOOL["pg_restore"], DB, Path("x.tar")) == shlex.split(
        f"/pg/bin/pg_restore --verbose --dbname '{DB}' x.tar")
    assert pgtools.pg_restore_list_cmd(TOOL["pg_restore"], Path("x.dump")) == shlex.split(
        "/pg/bin/pg_restore --list x.dump")
    assert pgtools.pg_restore_cmd(TOOL["pg_restore"], DB, Path("x.dump"), no_privileges=True,
                                  no_tablespaces=True, use_list=Path("r.list")) == shlex.split(
        f"/pg/bin/pg_restore --verbose --dbname '{DB}' --no-privileges --no-tablespaces "
        "--use-list r.list x.dump")
    assert pgtools.pg_restore_database_cmd(TOOL["pg_restore"], Path("x.dump")) == shlex.split(
        "/pg/bin/pg_restore --create --schema-only --file - x.dump")


def test_psql_vacuumdb_pg_dump_and_decompressor_builders() -> None:
    assert pgtools.psql_script_cmd(TOOL["psql"], DB, None) == shlex.split(
        f"/pg/bin/psql -X -v ON_ERROR_STOP=1 -d '{DB}' --single-transaction --quiet -f -")
    assert pgtools.psql_script_cmd(TOOL["psql"], DB, Path("scrub.sql"))[-1] == "scrub.sql"
    assert pgtools.vacuumdb_cmd(TOOL["vacuumdb"], DB, jobs=2) == shlex.split(
        f"/pg/bin/vacuumdb --analyze-only --quiet --jobs 2 --dbname '{DB}'")
    assert pgtools.pg_dump_cmd(TOOL["pg_dump"], DB, Path("out"), fmt="directory",
                               jobs=2) == shlex.split(
        f"/pg/bin/pg_dump --format=directory --file out --jobs 2 --dbname '{DB}'")
    assert pgtools.decompress_cmd(Path("/usr/bin/zstd"), Path("a.zst"), Path("a")) == \
        shlex.split("/usr/bin/zstd -d -q -f a.zst -o a")
    assert pgtools.decompress_cmd(Path("/usr/bin/lz4"), Path("a.lz4"), Path("a")) == \
        shlex.split("/usr/bin/lz4 -d -q -f a.lz4 a")


def test_a_failed_child_carries_argv_exit_code_and_stderr_tail() -> None:
    script = "import sys; [print(f'line {i}', file=sys.stderr) for i in range(30)]; sys.exit(3)"
    argv = [sys.executable, "-c", script, "postgresql://u:s3cret@db/app"]
    with pytest.raises(CommandFailed) as caught:
        pgtools.run(argv)
    error = caught.value
    assert error.returncode == 3
    assert error.message.endswith("failed: line 29")
    assert error.stderr == tuple(f"line {i}" for i in range(10, 30))
    assert error.argv[-1] == "postgresql://u:***@db/app"  # scrubbed all the same


def test_child_tools_speak_english_and_keep_the_users_encoding() -> None:
    env = pgtools.messages_in_c({"LC_ALL": "de_DE.UTF-8", "LANGUAGE": "de:en", "PATH": "/bin"})
    assert env["LC_MESSAGES"] == "C" and "LANGUAGE" not in env and "LC_ALL" not in env
    assert env["LC_CTYPE"] == "de_DE.UTF-8" and env["PATH"] == "/bin"
    assert pgtools.messages_in_c({"LANG": "fr_FR.UTF-8"}) == {"LANG": "fr_FR.UTF-8",
                                                               "LC_MESSAGES": "C"}


def test_the_load_script_names_each_errors_sqlstate() -> None:
    assert pgtools.psql_script_cmd(TOOL["psql"], DB, None, sqlstate=True) == [
        "/pg/bin/psql", "-X", "-v", "ON_ERROR_STOP=1", "-d", DB, "-v", "VERBOSITY=verbose",
        "--single-transaction", "--quiet", "-f", "-"]
