"""The post-restore hooks (the user's migration command, SQL files) and the ANALYZE pass,
each run on the restored database only."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from .. import pgtools
from ..conninfo import child_env, resolved, url
from ..pgtools import Tool


def migrate(command: str, conninfo: str) -> str:
    """Run the user's migration command on the restored database: see `hook_env`."""
    return pgtools.run(shlex.split(command), hook_env(conninfo), user_locale=True)


def hook_env(conninfo: str) -> dict[str, str]:
    """The environment with every common name pointing at `conninfo`'s database only:
    DATABASE_URL, libpq's PGHOST, PGPORT, PGDATABASE, PGUSER, PGPASSWORD (PGSERVICE cleared:
    its file could name another database) and the postgres image's POSTGRES_* names."""
    params = resolved(conninfo)
    env = {k: v for k, v in os.environ.items() if k not in ("PGSERVICE", "PGHOSTADDR")}
    env["DATABASE_URL"] = url(conninfo, keep_password=True)
    for suffix, keyword in (("HOST", "host"), ("PORT", "port"), ("DATABASE", "dbname"),
                            ("USER", "user"), ("PASSWORD", "password")):
        for name in (f"PG{suffix}", f"POSTGRES_{'DB' if suffix == 'DATABASE' else suffix}"):
            if keyword in params:
                env[name] = params[keyword]
            else:
                env.pop(name, None)
    return env


def post_sql(tool: Tool, conninfo: str, script: Path) -> None:
    """Run an SQL file in one transaction, stopping at its first error."""
    conninfo, env = child_env(conninfo)
    pgtools.run(pgtools.psql_script_cmd(tool, conninfo, script), env)


def analyze(tool: Tool, conninfo: str, jobs: int) -> None:
    """One parallel ANALYZE pass: a fresh restore has no planner statistics."""
    conninfo, env = child_env(conninfo)
    pgtools.run(pgtools.vacuumdb_cmd(tool, conninfo, jobs=jobs), env)
