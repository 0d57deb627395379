"""`restore-tool restore DUMP`: preflight, load, post-restore hooks, repair sequences,
analyze and verify, then (with --replace) the swap; a failure at any step drops the scratch
database and leaves the target as it was. `inspect(path)` is `restore-tool inspect`."""

from __future__ import annotations

import signal
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from .. import db, embedded, pgtools, sequences, smoke
from ..config import Settings
from ..conninfo import dbname, maintenance, mask, password_of, url, with_dbname
from ..errors import BadInput, Interrupted, RestoreToolError
from ..pgtools import Tool
from ..pipeline import Outcome, Progress, Report, Status, Step, StepName, StepResult, run_steps
from . import archive, hooks, load, needs, swap
from .archive import Dump
from .script import pieces


@dataclass(frozen=True)
class Options:
    """What the user asked of a restore (the CLI's flags). Which of them go together is
    checked by `commands.restore`."""

    replace: bool = False  # restore next to the target and swap it in when all passed
    drop_old: bool = False  # drop the replaced database instead of keeping it renamed
    jobs: int | None = None  # pg_restore -j, vacuumdb -j, sequence connections
    no_owner: bool = False
    no_privileges: bool = False  # leave out GRANT/REVOKE (roles the target lacks)
    no_tablespaces: bool = False
    server_locale: bool = False  # create with the server's encoding and locale, not the dump's
    with_subscriptions: bool = False  # restore subscriptions, disabled and without a slot
    create_roles: bool = False  # --scratch: create the roles the dump needs (NOLOGIN)
    migrate: str | None = None  # e.g. "alembic upgrade head", with DATABASE_URL set
    post_sql: tuple[Path, ...] = ()
    analyze: bool = True
    wait_connections: float | None = None  # seconds for sessions to leave; None: end them
    pg_bin: tuple[Path, ...] = ()


def inspect(path: Path, pg_bin: Sequence[Path] = ()) -> Dump:
    """What a dump is and holds, and which client tool reads it."""
    with tempfile.TemporaryDirectory(prefix="restore-tool-") as work, \
            archive.opened(path, Path(work), pg_bin) as (dump, _):
        return dump


@dataclass
class _Run:
    """What the steps of one restore learn and share."""

    settings: Settings
    path: Path
    options: Options
    smoke: smoke.Plan | None  # None: --no-smoke
    progress: Progress | None
    work: Path
    stack: ExitStack
    info: str = ""  # the target's conninfo
    target: str = ""  # its database name
    target_existed: bool = False
    server: load.Server = field(default_factory=lambda: load.Server(0, frozenset()))
    dump: Dump | None = None
    readable: Path | None = None
    properties: load.DatabaseProperties = field(default_factory=load.DatabaseProperties)
    needs: needs.Needs = field(default_factory=needs.Needs)
    superuser: bool = True
    into: str = ""  # the database being loaded: the target itself, or a scratch one
    created: bool = False  # we created `into`: drop it if anything fails
    old: str | None = None  # the target's new name after a swap
    current: StepName = StepName.PREFLIGHT  # the step running
    discarded: str | None = None  # what cleaning up after a failure left, once done
    tools: dict[str, Tool] = field(default_factory=dict)
    facts_given: list[tuple[str, str]] = field(default_factory=list)  # e.g. the config file
    facts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return self.options.jobs or db.default_jobs()

    @property
    def into_info(self) -> str:
        return with_dbname(self.info, self.into)


def run(settings: Settings, path: Path, options: Options = Options(), *,
        smoke_plan: smoke.Plan | None = smoke.AUTOMATIC,
        facts: Iterable[tuple[str, str]] = (), progress: Progress | None = None) -> Report:
    """Restore the dump at `path` into the target; the report of every step. Holds the
    target's lock throughout; on Ctrl-C or SIGTERM (raised as KeyboardInterrupt) drops what
    this run created and raises Interrupted saying so. Policy (protected targets, which
    options go together) is `commands.restore`'s."""
    with tempfile.TemporaryDirectory(prefix="restore-tool-") as work, ExitStack() as stack:
        state = _Run(settings, path, options, smoke_plan, progress, Path(work), stack)
        state.facts_given = list(facts)
        state.info = db.target_info(settings)
        stack.enter_context(db.target_lock(state.info, "restore"))

        def step(name: StepName, body: Callable[[_Run], Outcome]) -> Step:
            def started() -> Outcome:
                state.current = name
                return body(state)
            return Step(name, started)

        steps = [step(StepName.PREFLIGHT, _preflight), step(StepName.LOAD, _load),
                 step(StepName.POST_RESTORE, _post_restore),
                 step(StepName.REPAIR_SEQUENCES, _repair), step(StepName.ANALYZE, _analyze),
                 step(StepName.SMOKE_TEST, _smoke), step(StepName.CHECK_SEQUENCES, _verify),
                 step(StepName.DATABASE_SETTINGS, _database_settings)]
        if options.replace:
            steps.append(step(StepName.SWAP, _swap))
        results: tuple[StepResult, ...] = ()
        try:
            results = run_steps(steps, secret=password_of(state.info))
        except KeyboardInterrupt as interrupt:
            with _signals_held():
                left = _discard(state)
            raise Interrupted(f"Interrupted ({interrupt.args[0] if interrupt.args else 'SIGINT'})"
                              f" during {state.current}: {left}") from None
        finally:
            outcome: str | None = None
            if not results or any(r.status is Status.FAILED for r in results):
                with _signals_held():
                    outcome = _discard(state)
    failed = [r for r in results if r.status is Status.FAILED]
    return Report("restore", mask(state.info), settings.origin, results,
                  facts=tuple(state.facts),
                  next_steps=_next_steps(state, failed[0].name, outcome) if failed else ())


SCRATCH_DATABASE = "restore_check"


def run_scratch(path: Path, options: Options = Options(), *,
                smoke_plan: smoke.Plan | None = smoke.AUTOMATIC,
                facts: Iterable[tuple[str, str]] = (), progress: Progress | None = None
                ) -> Report:
    """`restore --scratch`: the whole pipeline into a temporary embedded PostgreSQL that is
    deleted afterwards, whatever happened: is this backup restorable?"""
    with embedded.temporary() as admin:
        target = make_conninfo(admin, dbname=SCRATCH_DATABASE)
        settings = Settings(target, "--scratch: a temporary embedded PostgreSQL, deleted "
                            "afterwards", Path(admin))
        return run(settings, path, replace(options, replace=False, drop_old=False),
                   smoke_plan=smoke_plan, facts=facts, progress=progress)


@contextmanager
def _signals_held() -> Iterator[None]:
    """Cleanup and the swap's two renames run to the end: SIGINT and SIGTERM wait (and are
    delivered right after)."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextmanager
def _maintenance(state: _Run) -> Iterator[db.Connection]:
    with closing(db.connect(maintenance(state.info))) as conn:
        yield conn


def _preflight(state: _Run) -> Outcome:
    """Everything that can be known before writing: the dump and who reads it, the target,
    the roles the dump needs, the hook files. Nothing is written here."""
    options = state.options
    for script in options.post_sql:
        if not script.is_file():
            raise BadInput(f"--post-sql {script} does not exist.")
    dump, readable = state.stack.enter_context(
        archive.opened(state.path, state.work, options.pg_bin))
    state.dump, state.readable = dump, readable
    if dump.has_create:
        raise BadInput(f"{state.path} was dumped with --create: it would restore into its own "
                       "database, not the target.", "Dump it again without --create.")
    state.target = dbname(state.info)
    with _maintenance(state) as conn:
        state.server = load.Server(
            conn.info.server_version // 10000,
            frozenset(row[0] for row in conn.execute("SELECT name FROM pg_settings")))
        state.target_existed = db.database_exists(conn, state.target)
        has = db.server_has(conn)
    state.superuser = has.superuser
    if state.target_existed and not options.replace and db.has_data(state.info):
        raise BadInput(f'Database "{state.target}" already has data; restore-tool will not '
                       "restore over it.", "Use --replace to restore next to it and swap it "
                       "in when everything passed (the old one is kept under a dated name).")
    major = state.server.major
    choices = {"loader": pgtools.choose(dump.readers, major),
               "psql": pgtools.chosen("psql", major, options.pg_bin)}
    if options.analyze:
        choices["vacuumdb"] = pgtools.chosen("vacuumdb", major, options.pg_bin)
    state.tools = {role: choice.tool for role, choice in choices.items()}
    loader = state.tools["loader"]
    _read_needs(state, loader)
    created = _create_roles(state, has) if options.create_roles else []
    _check_needs(state, replace(has, roles=has.roles | set(created)))
    state.facts = [
        ("Dump", f"{state.path} ({dump.describe()})"),
        ("Tools", _tools_fact(choices["loader"], state.tools.values(), bool(options.pg_bin))),
        *state.facts_given,
    ]
    summary = (f"{dump.format} dump, {dump.counts.get('tables', 0)} tables; "
               f"{loader.name} {loader.version_text} into PostgreSQL {major}") + (
        f"; created the roles it needs (NOLOGIN): {', '.join(created)}" if created else "")
    return Outcome(Status.PASSED, summary)


def _read_needs(state: _Run, loader: Tool) -> None:
    """The dump's database properties (archives) and what it needs of the server, from its
    schema script: the archive's, written by pg_restore, or the plain script itself."""
    assert state.dump is not None and state.readable is not None
    if state.dump.format == "plain":
        with state.readable.open("rb") as handle:
            state.needs = needs.read(pieces(handle))
        return
    output = pgtools.run(pgtools.pg_restore_database_cmd(loader, state.readable))
    schema = output.encode().splitlines(keepends=True)
    state.properties = load.database_properties(schema)
    if state.options.no_tablespaces:
        state.properties = state.properties.without_tablespace()
    state.needs = needs.read(pieces(schema))


def _create_roles(state: _Run, has: db.ServerHas) -> list[str]:
    """--scratch: the roles the dump's objects and grants name, created NOLOGIN in the
    throwaway cluster, so that owners and grants restore as they are."""
    assert state.dump is not None
    wanted = sorted((set(state.dump.owners) | state.needs.grantees) - has.roles)
    with _maintenance(state) as conn:
        for role in wanted:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    return wanted


def _check_needs(state: _Run, has: db.ServerHas) -> None:
    """Refuse, naming them all, the roles, tablespaces and extensions the dump needs and the
    server lacks (each with the flag that does without it)."""
    assert state.dump is not None
    options, wanted = state.options, state.needs
    problems, hints = [], []
    owners = [] if options.no_owner else sorted(set(state.dump.owners) - has.roles)
    grantees = [] if options.no_privileges else sorted(wanted.grantees - has.roles)
    if owners:
        problems.append(f"The dump's objects belong to roles this server does not have: "
                        f"{', '.join(owners)}.")
        hints.append("use --no-owner to make the restoring role own everything")
    if grantees:
        problems.append(f"Its grants name roles this server does not have: "
                        f"{', '.join(grantees)}.")
        hints.append("use --no-privileges to leave the grants out")
    tablespaces = [] if options.no_tablespaces else sorted(wanted.tablespaces - has.tablespaces)
    if tablespaces:
        problems.append(f"It uses tablespaces this server does not have: "
                        f"{', '.join(tablespaces)}.")
        hints.append("use --no-tablespaces to put everything in the default one")
    if extensions := sorted(wanted.extensions - has.extensions):
        problems.append(f"It needs extensions this server cannot install: "
                        f"{', '.join(extensions)} (not in pg_available_extensions).")
        hints.append("install them on the server (or ask your provider which it offers)")
    if problems:
        hint = "; ".join(hints)
        raise BadInput(" ".join(problems), f"Create what is missing, or {hint}."
                       if owners or grantees or tablespaces else hint[0].upper() + hint[1:] + ".")


def _tools_fact(loader: pgtools.Choice, tools: Iterable[Tool], pinned: bool) -> str:
    """`pg_restore 16.14, psql 16.14 (from /usr/lib/postgresql/16/bin): the server's major`,
    a folder named once, and why the loader was chosen."""
    by_dir: dict[Path, list[str]] = {}
    for tool in dict.fromkeys(tools):
        by_dir.setdefault(tool.path.parent, []).append(
            f"{tool.name} {tool.version_text}")
    why = "pinned by --pg-bin" if pinned else loader.reason
    return "; ".join(f"{', '.join(names)} (from {folder})"
                     for folder, names in by_dir.items()) + f"; {loader.tool.name}: {why}"


def _load(state: _Run) -> Outcome:
    assert state.dump is not None and state.readable is not None
    dump, options, loader = state.dump, state.options, state.tools["loader"]
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    if options.replace and state.target_existed:
        state.into = f"{state.target[:40]}_restoring_{stamp}"
        state.old = f"{state.target[:45]}_old_{stamp}"
    else:
        state.into = state.target
    with _maintenance(state) as conn:
        if state.into != state.target or not state.target_existed:
            state.created = True  # first: an interrupt may land just after it exists
            _create(conn, state)
    loaded = load.load(state.into_info, state.server, dump, state.readable, loader,
                       jobs=state.jobs, leave=load.Leave(
                           options.no_owner, options.no_privileges, options.no_tablespaces,
                           event_triggers=() if state.superuser else state.needs.event_triggers,
                           subscriptions=tuple(needs.subscription_name(s)
                                               for s in state.needs.subscriptions),
                           subscribe_after=options.with_subscriptions),
                       work=state.work, progress=state.progress)
    errors = loaded.errors
    real = [e for e in errors if not e.tolerated]
    what = f"into {state.into}" + (f" (scratch for {state.target})"
                                   if state.into != state.target else "")
    left_out = f"; left out {', '.join(loaded.left_out)}" if loaded.left_out else ""
    if real:
        first = real[0]
        return Outcome(Status.FAILED, f"{len(real)} error(s) {what}; first: {first}",
                       tuple(errors))
    if options.with_subscriptions and state.needs.subscriptions:
        left_out += "; " + _subscribe(state)
    unpopulated = _unpopulated_matviews(state)
    if unpopulated:
        return Outcome(Status.FAILED, f"loaded {what}, but the dump populated materialized "
                       f"view(s) that are not: {', '.join(unpopulated)}", tuple(errors))
    if errors:
        return Outcome(Status.WARNING, f"loaded {what}{left_out}; {len(errors)} tolerated "
                       f"error(s): {loader.name} {loader.version_text} sends settings "
                       f"PostgreSQL {state.server.major} does not know: {errors[0].message}",
                       tuple(errors))
    return Outcome(Status.PASSED, f"loaded {what}" + (
        f", {state.jobs} jobs" if dump.parallel and state.jobs > 1 else "") + left_out)


def _subscribe(state: _Run) -> str:
    """--with-subscriptions: the dump's subscriptions, created disabled (pg_dump writes
    `connect = false`) and with `slot_name = NONE`: dropping one can never drop the slot on
    the publisher, the source's."""
    names = [needs.subscription_name(s) for s in state.needs.subscriptions]
    with closing(db.connect(state.into_info)) as conn:
        for statement in state.needs.subscriptions:
            conn.execute(needs.without_slot(statement).encode())
    return (f"created {len(names)} subscription(s) disabled and without a slot: "
            f"{', '.join(names)}")


def _create(conn: db.Connection, state: _Run) -> None:
    """Create the database to load, with the dump's encoding and locale unless
    --server-locale; one sentence when this server cannot make them."""
    options = "" if state.options.server_locale else state.properties.create_options
    try:
        db.create_database(conn, state.into, options)
    except psycopg.errors.DuplicateDatabase:
        raise
    except (psycopg.errors.InvalidParameterValue, psycopg.errors.FeatureNotSupported,
            psycopg.errors.WrongObjectType, psycopg.errors.InvalidName,
            psycopg.errors.UndefinedObject, psycopg.errors.SyntaxError) as error:
        # SyntaxError: an option older servers lack (BUILTIN_LOCALE before 17)
        state.created = False
        raise BadInput(f"This server cannot create a database as the dump's ({options}): "
                       f"{error.diag.message_primary}.", "Use --server-locale to create it "
                       "with the server's default encoding and locale instead.") from None


def _unpopulated_matviews(state: _Run) -> list[str]:
    """The materialized views whose data the archive holds that are not populated."""
    assert state.dump is not None
    wanted = [e.rest.rsplit(" ", 1)[0] for e in state.dump.entries
              if e.kind == "MATERIALIZED VIEW DATA"]
    if not wanted:
        return []
    with closing(db.connect(state.into_info)) as conn:
        rows = conn.execute("SELECT schemaname || ' ' || matviewname FROM pg_matviews "
                            "WHERE NOT ispopulated AND schemaname || ' ' || matviewname "
                            "= ANY(%s) ORDER BY 1", (wanted,)).fetchall()
    return [row[0].replace(" ", ".", 1) for row in rows]


def _database_settings(state: _Run) -> Outcome:
    """After every other step (a database that sets default_transaction_read_only or its own
    search_path would get in their way): the dump's comment and database settings."""
    properties = state.properties
    if properties.comment is None and not properties.settings:
        return Outcome(Status.SKIPPED, "the dump carries no database comment or settings"
                       if state.dump and state.dump.format != "plain"
                       else "plain SQL carries no database properties")
    with _maintenance(state) as conn:
        applied, skipped = load.apply_database_properties(conn, state.into, state.server,
                                                          properties)
    summary = f"applied {', '.join(applied) or 'nothing'}"
    if skipped:
        return Outcome(Status.WARNING, f"{summary}; skipped {', '.join(skipped)} (unknown to "
                       f"PostgreSQL {state.server.major})")
    return Outcome(Status.PASSED, summary)


def _post_restore(state: _Run) -> Outcome:
    options = state.options
    if not options.migrate and not options.post_sql:
        return Outcome(Status.SKIPPED, "no --migrate or --post-sql")
    done = []
    if options.migrate:
        hooks.migrate(options.migrate, url(state.into_info, keep_password=True))
        done.append(f"ran {options.migrate!r}")
    for script in options.post_sql:
        hooks.post_sql(state.tools["psql"], state.into_info, script)
        done.append(f"ran {script}")
    return Outcome(Status.PASSED, "; ".join(done))


def _repair(state: _Run) -> Outcome:
    with closing(db.connect(state.into_info)) as conn:
        return sequences.repair_outcome(sequences.repair(
            conn, jobs=state.jobs, connect=lambda: db.connect(state.into_info)))


def _analyze(state: _Run) -> Outcome:
    if not state.options.analyze:
        return Outcome(Status.SKIPPED, "--no-analyze: the planner has no statistics yet")
    hooks.analyze(state.tools["vacuumdb"], state.into_info, state.jobs)
    return Outcome(Status.PASSED, f"planner statistics rebuilt ({state.jobs} jobs)")


def _smoke(state: _Run) -> Outcome:
    if state.smoke is None:
        return Outcome(Status.SKIPPED, "--no-smoke")
    with closing(db.connect(state.into_info)) as conn:
        return smoke.step(conn, lambda: db.connect(state.into_info), state.smoke, state.jobs)


def _verify(state: _Run) -> Outcome:
    with closing(db.connect(state.into_info, read_only=True)) as conn:
        return sequences.check_outcome(sequences.survey(
            conn, jobs=state.jobs, connect=lambda: db.connect(state.into_info,
                                                              read_only=True)))


def _swap(state: _Run) -> Outcome:
    if state.old is None:
        return Outcome(Status.SKIPPED, f"{state.target} did not exist: restored in place")
    with _maintenance(state) as conn:
        ended = swap.clear_sessions(conn, state.target, wait=state.options.wait_connections)
        with _signals_held():
            try:
                swap.swap(conn, state.target, state.into, state.old,
                          drop_old=state.options.drop_old)
            except BaseException:
                swap.allow_connections(conn, state.target, True)
                raise
            state.created = False  # handed over: the target now
    summary = f"{state.into} is now {state.target}; " + (
        "the old one was dropped" if state.options.drop_old
        else f"the old one is kept as {state.old}")
    if ended:
        summary += f"; ended {len(ended)} session(s): {'; '.join(map(str, ended))}"
    return Outcome(Status.PASSED, summary)


def _discard(state: _Run) -> str:
    """After a failure or an interruption, the database this run created is dropped (its
    sessions ended: a stopped pg_restore's may linger): nothing half-done stays. Says what
    was left as it was, in one sentence."""
    if state.discarded is not None:  # a signal may arrive while a failure is cleaned up
        return state.discarded
    state.discarded = _drop_created(state)
    return state.discarded


def _drop_created(state: _Run) -> str:
    target = f'"{state.target or dbname(state.info)}"'
    if state.created and state.into:
        try:
            with _maintenance(state) as conn:
                db.drop_database(conn, state.into, force=True)
        except (RestoreToolError, psycopg.Error):  # the server went away mid-run
            state.facts.append(("Left behind", f'"{state.into}": drop it once the server '
                                "is back"))
            return (f'"{state.into}" could not be dropped (the server is unreachable): drop '
                    f"it once the server is back; {target} was not changed.")
        state.created = False
        if state.into != state.target:
            return f'the scratch database "{state.into}" was dropped; {target} was not changed.'
        return f"{target}, which this run created, was dropped again."
    if state.into and state.into == state.target and state.target_existed:
        return f"{target} was empty and may now hold part of the dump."
    if state.current is StepName.SWAP and state.old is not None:
        return f"the swap had completed: {target} is the restored database."
    return f"nothing was changed in {target}."


def _next_steps(state: _Run, failed: StepName, left: str | None) -> tuple[str, ...]:
    if left is not None and "could not be dropped" in left:
        kept = left[0].upper() + left[1:]
    elif not state.into or state.into != state.target or not state.target_existed:
        kept = (f'Database "{state.target}" was not changed.' if state.target_existed
                else f'Nothing was left behind: "{state.target}" does not exist.')
    else:  # loaded straight into an existing empty database
        kept = (f'Database "{state.target}" was empty and may now hold part of the dump: '
                "run again with --replace, or drop and recreate it.")
    return (kept, _HINTS[failed])


_HINTS = {
    StepName.PREFLIGHT: "Fix what preflight names, then run the same command again.",
    StepName.LOAD: "Read the errors above (TOC entry and message); --no-owner helps when roles "
                   "are missing.",
    StepName.POST_RESTORE: "Fix the migration or SQL hook, then run the restore again.",
    StepName.REPAIR_SEQUENCES: "Run `restore-tool fix-sequences --dry-run` on a copy to see why.",
    StepName.ANALYZE: "Read vacuumdb's message above, or run with --no-analyze.",
    StepName.SMOKE_TEST: "An insert failed: a duplicate key on a value the database made means "
                         "a sequence restore-tool cannot tie to a column (one a trigger or the "
                         "application calls) lags; move it with setval in a --post-sql file. "
                         "A configured row that fails needs fixing in restore-tool.toml.",
    StepName.CHECK_SEQUENCES: "A sequence still lags after the repair: see the lines above.",
    StepName.DATABASE_SETTINGS: "Read the error above: the dump's ALTER DATABASE … SET or "
                                "comment could not be applied.",
    StepName.SWAP: "Resolve what the swap names (sessions, prepared transactions), then run "
                   "again.",
}
