"""The version matrix: pg_dump N in every format restored into PostgreSQL M, for N, M in
15-18, each with the client tools of every major on PATH, as a user with all of them
installed has them. Every cell restores the source's rows exactly, repairs its sequences,
populates its matview, creates its function and (for archives) carries the database's comment,
setting and encoding; a same-major cell tolerates nothing."""

from __future__ import annotations

import os
from pathlib import Path

import psycopg
import pytest

from restore_tool import commands, report
from restore_tool.pipeline import Status
from tests import matrix
from tests.conftest import Servers
from tests.helpers import dbname, execute, scalar, settings
from tests.servers import NewDatabases, Server, bin_dir

VERSIONS = ("15", "16", "17", "18")
_dumps: dict[tuple[str, str], Path] = {}
_sources: dict[str, dict[str, str]] = {}  # each source's _content, read before dumping


def _client_path() -> str:
    found = [str(b) for v in VERSIONS if (b := bin_dir(v)) is not None]
    return os.pathsep.join([*found, os.environ.get("PATH", "")])


def _dump(servers: Servers, version: str, fmt: str, folder: Path) -> Path:
    """pg_dump `version`'s dump of the matrix source on PostgreSQL `version`, made once."""
    if (version, fmt) not in _dumps:
        source_server = servers[version]
        binaries = bin_dir(version)
        assert binaries is not None
        made = NewDatabases(source_server)
        source = made("rt_matrix_src")
        matrix.build_source(source, dbname(source))
        _sources[version] = _content(source)
        for each in matrix.FORMATS:
            out = folder / f"pg{version}"
            out.mkdir(exist_ok=True)
            _dumps[(version, each)] = matrix.dump(binaries, source, out, each)
        made.drop_all()
    return _dumps[(version, fmt)]


def _content(conninfo: str) -> dict[str, str]:
    """Every table's rows as one digest, by name: equal digests, equal data."""
    with psycopg.connect(conninfo) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT oid::regclass::text FROM pg_class WHERE relkind = 'r' AND "
            "relnamespace = 'public'::regnamespace ORDER BY 1")]
        return {table: conn.execute(
            f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "
            f"FROM {table} t").fetchone()[0] for table in tables}  # type: ignore[index]


@pytest.fixture(scope="module")
def dump_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("matrix-dumps")


@pytest.mark.parametrize("target_version", VERSIONS)
@pytest.mark.parametrize("fmt", matrix.FORMATS)
@pytest.mark.parametrize("dump_version", VERSIONS)
def test_pg_dump_n_into_postgresql_m(servers: Servers, dump_folder: Path, dump_version: str,
                                     fmt: str, target_version: str, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    target_server: Server = servers[target_version]
    dump = _dump(servers, dump_version, fmt, dump_folder)
    monkeypatch.setenv("PATH", _client_path())
    made = NewDatabases(target_server)
    try:
        target = made("rt_matrix", create=False)
        result = commands.restore(settings(target, tmp_path), dump)
        assert result.exit_code == 0, report.render(result)
        assert _content(target) == _sources[dump_version]
        proved = next(s for s in result.steps if s.name == "proof")  # no false positive
        assert proved.status is Status.PASSED, proved.summary
        assert "14 rows in 7 tables" in proved.summary, proved.summary
        assert scalar(target, "SELECT public.slow_total()") == 4
        assert scalar(target, "SELECT ispopulated FROM pg_matviews "
                              "WHERE matviewname = 'menu_count'") is True
        execute(target, "INSERT INTO menu (note) VALUES ('after'); "
                        "INSERT INTO guest (name) VALUES ('cy'); "
                        "INSERT INTO reading (day) VALUES ('2026-06-01')")
        load = next(s for s in result.steps if s.name == "load")
        if fmt != "plain":
            name = dbname(target)
            assert scalar(target, "SELECT shobj_description(oid, 'pg_database') FROM "
                                  "pg_database WHERE datname = %s", (name,)) \
                == "the matrix source"
            assert scalar(target, "SELECT setconfig FROM pg_db_role_setting WHERE setrole = 0 "
                                  "AND setdatabase = (SELECT oid FROM pg_database WHERE "
                                  "datname = %s)", (name,)) == ["work_mem=7MB"]
        if dump_version == target_version:  # the matching client: nothing to tolerate
            assert load.status is Status.PASSED, load.summary
            assert f"{target_version} client" not in result.facts[1][1]
    finally:
        made.drop_all()
