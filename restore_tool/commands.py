"""The commands as plain, typed functions: what `restore-tool X` runs, and what a Python
caller gets. All policy lives here (protected targets and --confirm, which options go
together, the smoke plan from restore-tool.toml), so the CLI and a caller meet the same
refusals; each returns a Report (inspect: a Dump)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from . import db, embedded, sequences, workdir
from .config import EMBEDDED_DATABASE, NO_TARGET, Settings
from .conninfo import child_env, dbname, maintenance, mask, password_of, url
from .db import Connection
from .errors import BadInput, ConfigError, NoTarget
from .pipeline import Outcome, Progress, Report, Status, Step, StepName, Watcher, run_steps
from .project import Project, protected_by
from .project import load as load_project

# The restore pipeline, the proof, the smoke test and the client tools are imported by the
# commands that use them: `fix-sequences` starts without any of them, `verify` (run at every
# deploy) with the smoke test alone.
if TYPE_CHECKING:
    from . import smoke
    from .restoring import Options
    from .restoring.archive import Dump

__all__ = ["Dump", "Options", "Project", "Report", "cleanup", "fix_sequences", "inspect",
           "psql", "restore", "restore_scratch", "rollback", "target_url", "verify"]


def __getattr__(name: str) -> Any:
    if name == "Options":
        from .restoring import Options
        return Options
    if name == "Dump":
        from .restoring.archive import Dump
        return Dump
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def fix_sequences(
    settings: Settings | Connection,
    *,
    schemas: Sequence[str] = (),
    exact: bool = False,
    dry_run: bool = False,
    jobs: int | None = None,
    lock: bool = False,
    project: Project | None = None,
    confirm: str | None = None,
) -> Report:
    """Move every lagging sequence past its data: `restore-tool fix-sequences`. A protected
    target needs `confirm` (its database name) unless it is a dry run; unless it is a dry
    run, holds the target's lock: a second run (or a restore) fails fast. On a caller's
    connection (`settings` a Connection): that one connection, no run lock, and inside its
    open transaction nothing committed."""
    if not dry_run:
        check_protected(settings, _project(project), confirm)

    def repair_step(target: _Target) -> Outcome:
        fixes = sequences.repair(target.conn, schemas, exact=exact, dry_run=dry_run,
                                 jobs=target.jobs(jobs), connect=target.connect, lock=lock)
        return sequences.repair_outcome(fixes, dry_run=dry_run)

    return _run("fix-sequences", settings, False,
                lambda target: [Step(StepName.REPAIR_SEQUENCES, lambda: repair_step(target))],
                exclusive=not dry_run, schemas=schemas)


def verify(
    settings: Settings | Connection,
    *,
    schemas: Sequence[str] = (),
    jobs: int | None = None,
    smoke_test: bool = True,
    auto_smoke: bool = True,
    near_limit: float = sequences.NEAR_LIMIT,
    project: Project | None = None,
    against: Path | str | None = None,
    hashes: bool = False,
    exclude_table_data: Sequence[str] = (),
    pg_bin: Sequence[Path] = (),
    work_dir: Path | None = None,
) -> Report:
    """Health check: no sequence lags its data (a warning for those with less than
    `near_limit` of their range left), and an insert into every table works (rolled back;
    `smoke_test=False` skips that, `auto_smoke=False` keeps only the configured rows); a
    table whose sequence is that close is spared the insert, which would take one of its
    last values. Changes no data. `restore-tool verify`. On a caller's connection the
    smoke inserts are savepoints rolled back inside its transaction (nextval still is not).
    `against` (a dump, or a live postgresql:// database) adds the proof first: everything it
    holds is in the database (objects, their health, each table's rows; with `hashes`, a live
    source's contents), but the rows of tables `exclude_table_data` names."""
    if against is None and (hashes or exclude_table_data):
        raise ConfigError(f"{'--hashes' if hashes else '--exclude-table-data'} only makes "
                          "sense with --against.")
    found = _project(project)
    plan = smoke_plan(found, smoke_test, auto_smoke)
    if plan is not None and schemas and not plan.schemas:
        plan = replace(plan, schemas=tuple(schemas))

    spare: list[tuple[int, str]] = []

    def check_step(target: _Target) -> Outcome:
        planned = sequences.survey(target.conn, schemas, jobs=target.jobs(jobs),
                                   connect=target.connect)
        spare.extend(sequences.spare(planned, near_limit))
        return sequences.check_outcome(planned, near_limit)

    def smoke_step(target: _Target) -> Outcome:
        from . import smoke

        if plan is None:
            return Outcome(Status.SKIPPED, "--no-smoke")
        return smoke.step(target.conn, target.connect, replace(plan, spare=tuple(spare)),
                          target.jobs(jobs))

    def proof_step(target: _Target) -> Outcome:
        from .restoring.against import prove

        assert against is not None
        return prove(target.conn, against, jobs=target.jobs(jobs), connect=target.connect,
                     hashes=hashes, exclude_table_data=exclude_table_data, pg_bin=pg_bin,
                     work_dir=work_dir)

    return _run("verify", settings, True, lambda target: [
        *([Step(StepName.PROOF, lambda: proof_step(target))] if against is not None else []),
        Step(StepName.CHECK_SEQUENCES, lambda: check_step(target)),
        Step(StepName.SMOKE_TEST, lambda: smoke_step(target)),
    ], config_facts(found), schemas=schemas)


def restore(
    settings: Settings,
    dump: Path | str,
    options: Options | None = None,
    *,
    smoke_test: bool = True,
    auto_smoke: bool = True,
    project: Project | None = None,
    confirm: str | None = None,
    progress: Progress | None = None,
    watcher: Watcher | None = None,
) -> Report:
    """Restore `dump` into the target: load, hooks, repair sequences, analyze, smoke test,
    verify, and with `options.replace` the swap. `restore-tool restore DUMP`."""
    from . import restoring

    options = options or restoring.Options()
    _check_options(options)
    found = _project(project)
    check_protected(settings, found, confirm)
    return restoring.run(settings, dump, options,
                         smoke_plan=smoke_plan(found, smoke_test, auto_smoke),
                         facts=config_facts(found), progress=progress, watcher=watcher)


def restore_scratch(
    dump: Path | str,
    options: Options | None = None,
    *,
    smoke_test: bool = True,
    auto_smoke: bool = True,
    project: Project | None = None,
    given_target: str | None = None,
    progress: Progress | None = None,
    watcher: Watcher | None = None,
) -> Report:
    """`restore --scratch`: the whole pipeline into a temporary embedded PostgreSQL, deleted
    afterwards: is this backup restorable? The roles the dump needs are created there
    (NOLOGIN), so owners and grants restore as they are. `given_target` names a target
    option the caller was given (`--database-url`), which a scratch restore refuses."""
    from . import restoring

    options = options or restoring.Options()
    if given_target is not None or options.replace:
        raise ConfigError("--scratch restores into a temporary server of its own: it takes "
                          f"no target and no --replace (got {given_target or '--replace'}).")
    _check_options(options)
    found = _project(project)
    return restoring.run_scratch(dump, replace(options, create_roles=True),
                                 smoke_plan=smoke_plan(found, smoke_test, auto_smoke),
                                 facts=config_facts(found), progress=progress, watcher=watcher)


def inspect(dump: Path | str, pg_bin: Sequence[Path] = (), work_dir: Path | None = None) -> Dump:
    """What a dump is and holds, and which client tool here reads it."""
    from . import restoring

    return restoring.inspect(dump, pg_bin, work_dir)


def cleanup(settings: Settings, *, dry_run: bool = False, keep: int | None = None,
            older_than: float | None = None, work_dir: Path | None = None,
            confirm: str | None = None,
            project: Project | None = None) -> list[str]:
    """`restore-tool cleanup`: drop what dead runs left on the target's server (the
    databases they marked as theirs), and the target's old copies beyond the newest `keep`
    or older than `older_than` days; the directories dead runs left on this machine (a
    --scratch server in one is stopped first). One line per database or directory."""
    from .restoring import leftovers

    if not dry_run and (keep is not None or older_than is not None):
        check_protected(settings, _project(project), confirm)
    info = db.target_info(settings)
    name = dbname(info)
    with db.target_lock(info, "cleanup"), closing(db.connect(maintenance(info))) as conn:
        lines = leftovers.cleanup(conn, name, dry_run=dry_run, keep=keep, older_than=older_than)
    for left in workdir.dead(work_dir):  # a killed run's unwrapped dump, scratch server, …
        if not dry_run:
            workdir.remove(left, embedded.bin_dir() / "pg_ctl")
        lines.append(f"{'would remove' if dry_run else 'removed'} {left}")
    return lines or ["nothing to clean up"]


def rollback(settings: Settings, *, lock_wait: float = 30.0, confirm: str | None = None,
             project: Project | None = None) -> Report:
    """`restore-tool rollback`: swap the newest copy a --replace kept (`<db>_old_…`) back in
    as the target, in one transaction as the restore's swap (sessions on the target ended),
    and keep the database it replaces as the newest old copy (so a second rollback undoes
    the first). Refused, changing nothing, when there is no old copy."""
    from .restoring import leftovers, swap

    check_protected(settings, _project(project), confirm)
    info = db.target_info(settings)
    target = dbname(info)

    def swap_back(conn: Connection) -> Outcome:
        copies = leftovers.old_copies(conn, target)
        if not copies:
            raise BadInput(f'There is no old copy of "{target}" to roll back to (no database '
                           f"{target}_old_… that restore --replace kept): nothing was changed.")
        previous, replaced = copies[0]
        comment = conn.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                               "WHERE datname = %s", (previous,)).fetchone()
        kept = swap.stamped(target, "old", datetime.now(), swap.token(target))
        literal = None if comment is None or comment[0] is None else \
            sql.Literal(comment[0]).as_string(conn)
        swap.check_prepared(conn, target)
        kept, ended = swap.swap(conn, target, previous, kept, comment=literal,
                                       end_sessions=True, patience=lock_wait,
                                       handed_over=lambda: None)
        sessions = f"; ended {len(ended)} session(s): " + ", ".join(map(str, ended)) \
            if ended else ""
        return Outcome(Status.PASSED, f"{previous} (replaced {replaced:%Y-%m-%d %H:%M:%S}) is "
                       f"now {target}; the database it replaces is kept as {kept}{sessions}")

    with db.target_lock(info, "rollback"), closing(db.connect(maintenance(info))) as conn:
        if not db.database_exists(conn, target):
            raise BadInput(f'Database "{target}" does not exist: there is nothing to roll back.',
                           "Rename the old copy yourself if that is what you want: ALTER "
                           "DATABASE … RENAME TO ….")
        results = run_steps([Step(StepName.SWAP, lambda: swap_back(conn))],
                            secret=password_of(info))
    return Report("rollback", mask(info), settings.origin, results)


def target_url(settings: Settings, *, show_password: bool = False) -> str:
    """The target's URL, password masked unless `show_password` (for psql and GUI clients);
    the embedded server is started first."""
    info = db.target_info(settings)
    return url(info, keep_password=True) if show_password else mask(info)


def psql(settings: Settings, args: Sequence[str] = ()) -> None:
    """Interactive psql on the target, handed the terminal; the password in its environment."""
    from . import pgtools

    info, env = child_env(db.target_info(settings))
    pgtools.run(pgtools.psql_cmd(pgtools.find("psql"), info, args), env, foreground=True)


# ---------------------------------------------------------------------------------------------
# Policy


def _check_options(options: Options) -> None:
    if options.drop_old and not options.replace:
        raise ConfigError("--drop-old only makes sense with --replace.")
    if options.wait_connections is not None and not options.replace:
        raise ConfigError("--wait-connections only makes sense with --replace.")


def _project(given: Project | None) -> Project:
    """The caller's project, else ./restore-tool.toml if there is one, else the defaults."""
    return given if given is not None else load_project()


def check_protected(settings: Settings | Connection, found: Project, confirm: str | None
                    ) -> None:
    """A target matching a protected pattern is only changed with `confirm` naming it."""
    if isinstance(settings, psycopg.Connection):
        info = _dsn(settings)
    else:
        info = db.named(settings.conninfo) if settings.conninfo else \
            make_conninfo(dbname=EMBEDDED_DATABASE)
    pattern = protected_by(info, found)
    if pattern is None:
        return
    name = dbname(info)
    if confirm != name:
        raise ConfigError(f'Database "{name}" is protected (it matches "{pattern}"): '
                          f"nothing was changed.", f"Pass --confirm {name} to go ahead.")


def smoke_plan(found: Project, enabled: bool, automatic: bool) -> smoke.Plan | None:
    """The smoke plan from restore-tool.toml and the flags; None: no smoke test."""
    from . import smoke

    if not enabled:
        return None
    return smoke.Plan(rows=found.smoke_rows, automatic=found.automatic_smoke and automatic,
                      timeout=found.smoke_timeout)


def config_facts(found: Project) -> list[tuple[str, str]]:
    """The Config line of the report: which restore-tool.toml was read."""
    return [("Config", str(found.path))] if found.path else []


# ---------------------------------------------------------------------------------------------
# Running a command's steps on the target


@dataclass(frozen=True)
class _Target:
    """The open connection a command works on, and how to open more like it (for work
    spread over several connections)."""

    conn: Connection
    connect: Callable[[], Connection] | None  # None: the caller's connection, and only it

    def jobs(self, asked: int | None) -> int:
        return 1 if self.connect is None else asked or db.default_jobs()


def _run(command: str, settings: Settings | Connection, read_only: bool,
         build: Callable[[_Target], list[Step]],
         facts: Sequence[tuple[str, str]] = (), exclusive: bool = False,
         schemas: Sequence[str] = ()) -> Report:
    if isinstance(settings, psycopg.Connection):  # a caller's, as it is: not read-only, no run lock
        _check_schemas(settings, schemas)
        results = run_steps(build(_Target(settings, None)), secret=settings.info.password)
        return Report(command, mask(_dsn(settings)), "a psycopg connection", results,
                      facts=tuple(facts))
    if settings.origin == NO_TARGET and not embedded.initialized(settings.embedded_dir):
        # a deploy step whose environment was not loaded must not pass on an empty server
        raise NoTarget(f"No target database is configured: {command} found no --database-url, "
                       "DATABASE_URL, POSTGRES_* or PG* variables in the environment or ./.env.",
                       "Load the environment the application uses, pass --database-url, or "
                       "--embedded for the embedded server in ./.restore-tool.")
    info = db.target_info(settings)
    with ExitStack() as stack:
        conn = stack.enter_context(closing(db.connect(info, read_only=read_only, patience=2.0)))
        _check_schemas(conn, schemas)
        if exclusive:
            stack.enter_context(db.target_lock(info, command, fallback=conn))
        target = _Target(conn, lambda: db.connect(info, read_only=read_only))
        results = run_steps(build(target), secret=password_of(info))
    return Report(command, mask(info), settings.origin, results, facts=tuple(facts))


def _dsn(conn: Connection) -> str:
    """A caller's connection as a conninfo (its password is not in it)."""
    return make_conninfo(conn.info.dsn)


def _check_schemas(conn: Connection, schemas: Sequence[str]) -> None:
    """--schema must name a schema the database has: one that does not would pass every
    check vacuously. Names are case-sensitive, as in SQL with quotes."""
    if not schemas:
        return
    rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname !~ '^pg_(toast|temp)'"
                        " ORDER BY 1").fetchall()
    have = [str(row[0]) for row in rows]
    missing = [name for name in schemas if name not in have]
    if missing:
        alike = [name for name in have if name.lower() in {m.lower() for m in missing}]
        raise BadInput(f'--schema {missing[0]}: database "{conn.info.dbname}" has no schema '
                       f'"{missing[0]}".', f"Schema names are case-sensitive: did you mean "
                       f"{', '.join(alike)}?" if alike else "Its schemas: " + ", ".join(
                           name for name in have if name != "information_schema"
                           and not name.startswith("pg_")) + ".")
