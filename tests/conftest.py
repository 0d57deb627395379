"""Session servers (the embedded one, or RESTORE_TOOL_TEST_DSN; plus every PostgreSQL on the
machine for the version matrix) and a scratch database per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from tests.helpers import execute
from tests.servers import (
    MATRIX_VERSIONS,
    NewDatabases,
    Server,
    embedded_server,
    scratch_database,
    version_server,
)

ROOT = Path(__file__).resolve().parents[1]
MATRIX = ["embedded", *(f"pg{version}" for version in MATRIX_VERSIONS)]


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


class Servers:
    """One throwaway cluster per PostgreSQL major, started on first use and kept for the
    session; 18 is the main server. Skips a major whose binaries cannot be had."""

    def __init__(self, main: Server, factory: pytest.TempPathFactory) -> None:
        self.main, self.factory = main, factory
        self.stack = ExitStack()
        self.started: dict[str, Server] = {}

    def __getitem__(self, version: str) -> Server:
        if version == "18":
            return self.main
        if version not in self.started:
            self.started[version] = self.stack.enter_context(
                version_server(version, self.factory.mktemp(f"pg{version}")))
        return self.started[version]


@pytest.fixture(scope="session")
def servers(main_server: Server, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Servers]:
    found = Servers(main_server, tmp_path_factory)
    with found.stack:
        yield found


@pytest.fixture(scope="session", params=MATRIX)
def server(request: pytest.FixtureRequest, servers: Servers) -> Server:
    """Every PostgreSQL of the matrix: the sequence tests run once against each."""
    if request.param == "embedded":
        return servers.main
    return servers[request.param.removeprefix("pg")]


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


@pytest.fixture
def new_database(main_server: Server) -> Iterator[NewDatabases]:
    """Makes databases on the main server (`new_database("rt_x", create=False)` for a name
    only); drops them and their restore copies when the test ends, passed or failed."""
    made = NewDatabases(main_server)
    try:
        yield made
    finally:
        made.drop_all()


@pytest.fixture
def password_role(main_server: Server) -> Iterator[tuple[str, str]]:
    """A role that must log in with a password (scram), on the embedded server."""
    if main_server.data_dir is None:
        pytest.skip("needs a server whose pg_hba.conf the tests may edit")
    role, password = f"rt_pw_{uuid.uuid4().hex[:8]}", f"Sup3r-{uuid.uuid4().hex[:12]}"
    hba = main_server.data_dir / "pg_hba.conf"
    original = hba.read_text()
    execute(main_server.conninfo, sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
        sql.Identifier(role), sql.Literal(password)).as_string())
    hba.write_text(f"local all {role} scram-sha-256\n{original}")
    execute(main_server.conninfo, "SELECT pg_reload_conf()")
    try:
        yield role, password
    finally:
        hba.write_text(original)
        execute(main_server.conninfo, "SELECT pg_reload_conf()")
        execute(main_server.conninfo, sql.SQL("DROP ROLE {}").format(
            sql.Identifier(role)).as_string())
