"""The Python API: `from restore_tool import restore, fix_sequences, verify, inspect`. Each
takes a target URL (None: resolved as the CLI resolves it, from the environment and ./.env)
or, for fix_sequences and verify, an open psycopg connection, and returns the Report the CLI
renders. On a caller's connection the work runs in the caller's transaction (if one is
open) and commits nothing; see the README's "Use from Python" for what that means."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg

from . import commands, config, sequences
from .pipeline import Report
from .project import Project

if TYPE_CHECKING:  # `from restore_tool import fix_sequences` leaves the restore pipeline out
    from .restoring.archive import Dump

Target = str | psycopg.Connection[Any] | None


def _settings(target: str | None) -> config.Settings:
    return config.resolve(database_url=target)


def fix_sequences(target: Target = None, *, schemas: Sequence[str] = (), exact: bool = False,
                  dry_run: bool = False, jobs: int | None = None, lock: bool = False,
                  confirm: str | None = None, project: Project | None = None) -> Report:
    """Move every sequence that lags its data past it, as `restore-tool fix-sequences`. On
    a connection: one connection (no jobs), no run lock, and inside an open transaction no
    commit, so rows the caller inserted in it are measured too."""
    where = target if isinstance(target, psycopg.Connection) else _settings(target)
    return commands.fix_sequences(where, schemas=schemas, exact=exact, dry_run=dry_run,
                                  jobs=jobs, lock=lock, confirm=confirm, project=project)


def verify(target: Target = None, *, schemas: Sequence[str] = (), jobs: int | None = None,
           smoke_test: bool = True, auto_smoke: bool = True,
           near_limit: float = sequences.NEAR_LIMIT, project: Project | None = None,
           against: Path | str | None = None, hashes: bool = False,
           exclude_table_data: Sequence[str] = ()) -> Report:
    """The health check of `restore-tool verify`. On a connection the smoke inserts run in
    savepoints rolled back inside the caller's transaction (nextval still is not).
    `against` a dump or a live postgresql:// database adds the proof (`--against`)."""
    where = target if isinstance(target, psycopg.Connection) else _settings(target)
    return commands.verify(where, schemas=schemas, jobs=jobs, smoke_test=smoke_test,
                           auto_smoke=auto_smoke, near_limit=near_limit, project=project,
                           against=against, hashes=hashes,
                           exclude_table_data=exclude_table_data)


def restore(dump: Path | str, target: str | None = None, *,
            options: commands.Options | None = None, smoke_test: bool = True,
            auto_smoke: bool = True, project: Project | None = None,
            confirm: str | None = None) -> Report:
    """`restore-tool restore`: `dump` is a path, "-", an http(s):// URL or a live
    postgresql:// database; `target` a URL (None: the environment, then the embedded
    server)."""
    return commands.restore(_settings(target), dump, options, smoke_test=smoke_test,
                            auto_smoke=auto_smoke, project=project, confirm=confirm)


def inspect(dump: Path | str, pg_bin: Sequence[Path] = (), work_dir: Path | None = None
            ) -> Dump:
    """What a dump is and holds, as `restore-tool inspect`."""
    return commands.inspect(dump, pg_bin, work_dir)
