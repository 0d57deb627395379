"""Session servers (the embedded one, or RESTORE_TOOL_TEST_DSN; plus every PostgreSQL on the
machine for the version matrix) and a scratch database per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.servers import Server, embedded_server, scratch_database, system_server, system_versions

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MATRIX = ["embedded", *(f"pg{version}" for version in system_versions())]


@pytest.fixture(scope="session")
def main_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The embedded PostgreSQL 18, or the server RESTORE_TOOL_TEST_DSN names."""
    dsn = os.environ.get("RESTORE_TOOL_TEST_DSN")
    if dsn:
        try:
            with psycopg.connect(dsn) as conn:
                version = conn.info.server_version // 10000
        except psycopg.OperationalError as error:
            pytest.exit(f"RESTORE_TOOL_TEST_DSN is unreachable: {error}", returncode=3)
        yield Server("dsn", dsn, version)
        return
    with embedded_server(tmp_path_factory.mktemp("embedded")) as server:
        yield server


@pytest.fixture(scope="session", params=MATRIX)
def server(request: pytest.FixtureRequest, main_server: Server,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Every PostgreSQL found: the sequence tests run once against each."""
    if request.param == "embedded":
        yield main_server
        return
    version = request.param.removeprefix("pg")
    if not Path(f"/usr/lib/postgresql/{version}/bin/postgres").exists():
        pytest.skip(f"PostgreSQL {version} is not installed on this machine")
    with system_server(version, tmp_path_factory.mktemp(request.param)) as found:
        yield found


@pytest.fixture
def db(server: Server) -> Iterator[str]:
    """A fresh database on each server of the matrix."""
    with scratch_database(server) as conninfo:
        yield conninfo


@pytest.fixture
def main_db(main_server: Server) -> Iterator[str]:
    """A fresh database on the main server, for tests that need no matrix."""
    with scratch_database(main_server) as conninfo:
        yield conninfo
