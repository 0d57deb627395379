"""The post-restore hooks (the user's migration command, SQL files) and the ANALYZE pass,
each run on the restored database only."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from .. import pgtools
from ..conninfo import child_env
from ..pgtools import Tool


def migrate(command: str, url: str) -> str:
    """Run the user's migration command with DATABASE_URL set to the restored database."""
    env = dict(os.environ, DATABASE_URL=url)
    return pgtools.run(shlex.split(command), env, user_locale=True)


def post_sql(tool: Tool, conninfo: str, script: Path) -> None:
    """Run an SQL file in one transaction, stopping at its first error."""
    conninfo, env = child_env(conninfo)
    pgtools.run(pgtools.psql_script_cmd(tool, conninfo, script), env)


def analyze(tool: Tool, conninfo: str, jobs: int) -> None:
    """One parallel ANALYZE pass: a fresh restore has no planner statistics."""
    conninfo, env = child_env(conninfo)
    pgtools.run(pgtools.vacuumdb_cmd(tool, conninfo, jobs=jobs), env)
