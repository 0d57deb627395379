"""The post-restore hooks (the user's migration command, SQL files) and the ANALYZE pass,
each run on the restored database only."""

from __future__ import annotations

import os
import sys
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from .. import pgtools
from ..conninfo import child_env, password_of, resolved, scrub, url
from ..pgtools import Tool

HOOK_LINES = 40  # the end of a hook's output kept for the report


@dataclass(frozen=True)
class HookOutput:
    """What a --migrate command did: its exit code and the last HOOK_LINES lines it wrote
    (stdout and stderr as they came, passwords scrubbed)."""

    command: str
    exit_code: int
    lines: tuple[str, ...]

    def as_dict(self) -> dict[str, object]:
        return {"command": self.command, "exit_code": self.exit_code,
                "output": list(self.lines)}


def migrate(command: str, conninfo: str) -> HookOutput:
    """Run the user's migration command through the shell (`sh -c`, as make and compose run
    commands: `cd app && alembic upgrade head`, `DEBUG=1 …` work) in the working directory,
    with `hook_env`; this interpreter's bin directory is put on PATH, so a tool installed
    beside restore-tool runs without the venv activated. Its stdout and stderr stream to our
    stderr as they come; the last HOOK_LINES lines are kept."""
    env = hook_env(conninfo)
    here = str(Path(sys.executable).parent)
    if here not in env.get("PATH", "").split(os.pathsep):
        env["PATH"] = os.pathsep.join(part for part in (here, env.get("PATH")) if part)
    secret = password_of(conninfo)
    tail: deque[str] = deque(maxlen=HOOK_LINES)

    def line(text: str) -> None:
        text = scrub(text.rstrip("\n"), secret)
        tail.append(text)
        print(text, file=sys.stderr, flush=True)

    code = pgtools.shell(command, env, line)
    return HookOutput(command, code, tuple(tail))


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
