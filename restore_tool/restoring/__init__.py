"""`restore-tool restore DUMP`: preflight, load, post-restore hooks, repair sequences,
analyze and verify, then (with --replace) the swap; a failure at any step drops the scratch
database and leaves the target as it was. `inspect(path)` is `restore-tool inspect`."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, ExitStack, closing
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import psycopg
from psycopg.conninfo import make_conninfo

from .. import db, embedded, proof, sequences, smoke, workdir
from ..config import Settings
from ..conninfo import dbname, mask, password_of
from ..errors import BadInput, Interrupted, RestoreToolError
from ..pipeline import (
    Outcome,
    Progress,
    Report,
    Status,
    Step,
    StepName,
    StepResult,
    Watcher,
    run_steps,
)
from ..signals import signals_held
from . import archive, hooks, leftovers, load, needs, sources, swap
from .archive import Dump
from .preflight import preflight as preflight
from .state import Options as Options
from .state import Run, maintenance


def inspect(path: Path | str, pg_bin: Sequence[Path] = (), work_dir: Path | None = None
            ) -> Dump:
    """What a dump is and holds, and which client tool reads it."""
    with work_directory(work_dir) as work:
        local, _ = sources.local(path, work, live=False)
        with archive.opened(local, work, pg_bin) as (dump, _):
            return dump


def work_directory(within: Path | None) -> AbstractContextManager[Path]:
    """The run's work directory, in `within` (--work-dir) or the system temp directory."""
    if within is not None and not (within.is_dir() and os.access(within, os.W_OK | os.X_OK)):
        raise BadInput(f"--work-dir {within} is not a directory this user can write in.")
    return workdir.made("work", within)


def run(settings: Settings, path: Path | str, options: Options = Options(), *,
        smoke_plan: smoke.Plan | None = smoke.AUTOMATIC,
        facts: Iterable[tuple[str, str]] = (), progress: Progress | None = None,
        watcher: Watcher | None = None) -> Report:
    """Restore the dump at `path` into the target; the report of every step. Holds the
    target's lock throughout; on Ctrl-C or SIGTERM (raised as KeyboardInterrupt) drops what
    this run created and raises Interrupted saying so. Policy (protected targets, which
    options go together) is `commands.restore`'s."""
    with work_directory(options.work_dir) as work, ExitStack() as stack:
        state = Run(settings, path, options, smoke_plan, progress, work, stack)
        state.facts_given = list(facts)
        state.info = db.target_info(settings)
        stack.enter_context(db.target_lock(state.info, "restore"))

        def step(name: StepName, body: Callable[[Run], Outcome]) -> Step:
            def started() -> Outcome:
                state.current = name
                return body(state)
            return Step(name, started)

        steps = [step(StepName.PREFLIGHT, preflight), step(StepName.LOAD, _load),
                 step(StepName.PROOF, _proof), step(StepName.POST_RESTORE, _post_restore),
                 step(StepName.REPAIR_SEQUENCES, _repair), step(StepName.ANALYZE, _analyze),
                 step(StepName.SMOKE_TEST, _smoke), step(StepName.CHECK_SEQUENCES, _verify),
                 step(StepName.DATABASE_SETTINGS, _database_settings)]
        if options.replace:
            steps.append(step(StepName.SWAP, _swap))
        results: tuple[StepResult, ...] = ()
        try:
            results = run_steps(steps, secret=password_of(state.info), watcher=watcher)
        except KeyboardInterrupt as interrupt:
            with signals_held():
                left = _discard(state)
            raise Interrupted(f"Interrupted ({interrupt.args[0] if interrupt.args else 'SIGINT'})"
                              f" during {state.current}: {left}") from None
        finally:
            outcome: str | None = None
            if not results or any(r.status is Status.FAILED for r in results):
                with signals_held():
                    outcome = _discard(state)
    failed = [r for r in results if r.status is Status.FAILED]
    return Report("restore", mask(state.info), settings.origin, results,
                  facts=tuple(state.facts),
                  next_steps=_next_steps(failed[0].name, outcome) if failed else ())


SCRATCH_DATABASE = "restore_check"


def run_scratch(path: Path | str, options: Options = Options(), *,
                smoke_plan: smoke.Plan | None = smoke.AUTOMATIC,
                facts: Iterable[tuple[str, str]] = (), progress: Progress | None = None,
                watcher: Watcher | None = None) -> Report:
    """`restore --scratch`: the whole pipeline into a temporary embedded PostgreSQL that is
    deleted afterwards, whatever happened: is this backup restorable?"""
    with embedded.temporary() as admin:
        target = make_conninfo(admin, dbname=SCRATCH_DATABASE)
        settings = Settings(target, "--scratch: a temporary embedded PostgreSQL, deleted "
                            "afterwards", Path(admin))
        return run(settings, path, replace(options, replace=False, drop_old=False),
                   smoke_plan=smoke_plan, facts=facts, progress=progress, watcher=watcher)


def _load(state: Run) -> Outcome:
    assert state.dump is not None and state.readable is not None
    dump, options, loader = state.dump, state.options, state.tools["loader"]
    readable = state.readable
    started, token = datetime.now(), swap.token(state.target)
    if options.replace and state.target_existed:
        state.into = swap.stamped(state.target, "restoring", started, token)
        state.old = swap.stamped(state.target, "old", started, token)
    else:
        state.into = state.target
    if state.into != state.target or not state.target_existed:
        with maintenance(state) as conn:
            _create(conn, state, started)
    leave = load.Leave(options.no_owner, options.no_privileges, options.no_tablespaces,
                       superuser_only=state.superuser_only,
                       subscriptions=tuple(needs.subscription_name(s)
                                           for s in state.needs.subscriptions),
                       subscribe_after=options.with_subscriptions,
                       exclude_data=options.exclude_table_data)

    def read_alongside(use_list: Path | None) -> None:
        """The proof's pass over the archive (the entries the load restores), as it loads."""
        state.reading = proof.tally.ArchiveReader(loader, readable, use_list, leave.leaves_out)
        state.stack.callback(state.reading.stop)

    if options.proof and dump.format == "plain" and dump.pg_dump_version is not None:
        state.reading = proof.tally.PlainReader(readable, leave.leaves_out)
        state.stack.callback(state.reading.stop)
    loaded = load.load(state.into_info, state.server, dump, state.readable, loader,
                       jobs=state.jobs, leave=leave, work=state.work, progress=state.progress,
                       alongside=read_alongside if options.proof else None)
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
    if errors:
        return Outcome(Status.WARNING, f"loaded {what}{left_out}; {len(errors)} tolerated "
                       f"error(s): {loader.name} {loader.version_text} sends settings "
                       f"PostgreSQL {state.server.major} does not know: {errors[0].message}",
                       tuple(errors))
    return Outcome(Status.PASSED, f"loaded {what}" + (
        f", {state.jobs} jobs" if dump.parallel and state.jobs > 1 else "") + left_out)


def _proof(state: Run) -> Outcome:
    """The database just loaded against the dump, before anything else touches it (hooks
    may change data on purpose): every data block read to its end, every entry present and
    healthy, every table's rows."""
    if not state.options.proof:
        return Outcome(Status.SKIPPED, "--no-proof")
    if state.reading is None:
        return Outcome(Status.SKIPPED, "the SQL script was not written by pg_dump: it names "
                       "no entries to prove the database against")
    tally = state.reading.result()
    with closing(db.connect(state.into_info)) as conn:
        return proof.against_dump(conn, tally, jobs=state.jobs, fresh=True,
                                  connect=lambda: db.connect(state.into_info))


def _subscribe(state: Run) -> str:
    """--with-subscriptions: the dump's subscriptions, created disabled (pg_dump writes
    `connect = false`) and with `slot_name = NONE`: dropping one can never drop the slot on
    the publisher, the source's."""
    names = [needs.subscription_name(s) for s in state.needs.subscriptions]
    with closing(db.connect(state.into_info)) as conn:
        for statement in state.needs.subscriptions:
            conn.execute(needs.without_slot(statement).encode())
    return (f"created {len(names)} subscription(s) disabled and without a slot: "
            f"{', '.join(names)}")


def _create(conn: db.Connection, state: Run, started: datetime) -> None:
    """Create the database to load, with the dump's encoding and locale unless
    --server-locale (one sentence when this server cannot make them); record its OID, the
    only way cleanup will ever know it, and mark it as this run's, all with signals held."""
    options = "" if state.options.server_locale else state.properties.create_options
    with signals_held():
        try:
            db.create_database(conn, state.into, options)
        except psycopg.errors.DuplicateDatabase:
            raise BadInput(f'Database "{state.into}" was created by someone else while this run '
                           "prepared; nothing was changed.", "Run again.") from None
        except (psycopg.errors.InvalidParameterValue, psycopg.errors.FeatureNotSupported,
                psycopg.errors.WrongObjectType, psycopg.errors.InvalidName,
                psycopg.errors.UndefinedObject, psycopg.errors.SyntaxError) as error:
            # SyntaxError: an option older servers lack (BUILTIN_LOCALE before 17)
            raise BadInput(f"This server cannot create a database as the dump's ({options}): "
                           f"{error.diag.message_primary}.", "Use --server-locale to create "
                           "it with the server's default encoding and locale instead.") from None
        state.created_oid = db.database_oid(conn, state.into)
        leftovers.set_mark(conn, state.into, state.target, started)


def _database_settings(state: Run) -> Outcome:
    """After every other step (a database that sets default_transaction_read_only or its own
    search_path would get in their way): the dump's settings, and its comment where the
    database is the target already (a scratch one gets it in the swap: till then the comment
    marks it as this run's)."""
    properties = state.properties
    swapping = state.into != state.target
    with maintenance(state) as conn:
        if state.created_oid is not None and not swapping and properties.comment is None:
            leftovers.clear_mark(conn, state.into)
        if properties.comment is None and not properties.settings:
            return Outcome(Status.SKIPPED, "the dump carries no database comment or settings"
                           if state.dump and state.dump.format != "plain"
                           else "plain SQL carries no database properties")
        applied, skipped = load.apply_database_properties(
            conn, state.into, state.server,
            replace(properties, comment=None) if swapping else properties)
    if swapping and properties.comment is not None:
        applied.insert(0, "comment (in the swap)")
    summary = f"applied {', '.join(applied) or 'nothing'}"
    if skipped:
        return Outcome(Status.WARNING, f"{summary}; skipped {', '.join(skipped)} (unknown to "
                       f"PostgreSQL {state.server.major})")
    return Outcome(Status.PASSED, summary)


def _post_restore(state: Run) -> Outcome:
    options = state.options
    if not options.migrate and not options.post_sql:
        return Outcome(Status.SKIPPED, "no --migrate or --post-sql")
    done, details = [], []
    if options.migrate:
        ran = hooks.migrate(options.migrate, state.into_info)
        details.append(ran)
        if ran.exit_code:
            last = f": {ran.lines[-1]}" if ran.lines else ""
            return Outcome(Status.FAILED, f"{options.migrate!r} exited with code "
                           f"{ran.exit_code}{last}", tuple(details))
        done.append(f"ran {options.migrate!r}")
    for script in options.post_sql:
        hooks.post_sql(state.tools["psql"], state.into_info, script)
        done.append(f"ran {script}")
    return Outcome(Status.PASSED, "; ".join(done), tuple(details))


def _repair(state: Run) -> Outcome:
    with closing(db.connect(state.into_info)) as conn:
        return sequences.repair_outcome(sequences.repair(
            conn, jobs=state.jobs, connect=lambda: db.connect(state.into_info)))


def _analyze(state: Run) -> Outcome:
    if not state.options.analyze:
        return Outcome(Status.SKIPPED, "--no-analyze: the planner has no statistics yet")
    hooks.analyze(state.tools["vacuumdb"], state.into_info, state.jobs)
    return Outcome(Status.PASSED, f"planner statistics rebuilt ({state.jobs} jobs)")


def _smoke(state: Run) -> Outcome:
    if state.smoke is None:
        return Outcome(Status.SKIPPED, "--no-smoke")
    with closing(db.connect(state.into_info)) as conn:
        near = sequences.spare(sequences.survey(conn, jobs=state.jobs, connect=lambda: db.connect(
            state.into_info)))
        return smoke.step(conn, lambda: db.connect(state.into_info),
                          replace(state.smoke, spare=tuple(near)), state.jobs)


def _verify(state: Run) -> Outcome:
    with closing(db.connect(state.into_info, read_only=True)) as conn:
        return sequences.check_outcome(sequences.survey(
            conn, jobs=state.jobs, connect=lambda: db.connect(state.into_info,
                                                              read_only=True)))


def _swap(state: Run) -> Outcome:
    if state.old is None:
        return Outcome(Status.SKIPPED, f"{state.target} did not exist: restored in place")
    options = state.options

    def handed_over() -> None:
        state.created_oid = None  # the target now: never dropped by this run
        state.swapped = True

    with maintenance(state) as conn:
        swap.check_prepared(conn, state.target)
        if options.wait_connections is not None:
            swap.wait_for_sessions(conn, state.target, options.wait_connections)
        state.old, ended = swap.swap(
            conn, state.target, state.into, state.old, comment=state.properties.comment,
            end_sessions=options.wait_connections is None, patience=options.lock_wait,
            handed_over=handed_over)
        kept = swap.drop_old(conn, state.old) if options.drop_old else "kept"
    summary = f"{state.into} is now {state.target}; " + (
        "the old one was dropped" if kept is None else f"the old one is kept as {state.old}")
    if ended:
        summary += f"; ended {len(ended)} session(s): {'; '.join(map(str, ended))}"
    if kept not in (None, "kept"):
        return Outcome(Status.WARNING, f"{summary}: --drop-old could not drop it ({kept})")
    return Outcome(Status.PASSED, summary)


def _discard(state: Run) -> str:
    """After a failure or an interruption, the database this run created is dropped (its
    sessions ended: a stopped pg_restore's may linger): nothing half-done stays. Says what
    was left as it was, in one sentence."""
    if state.discarded is not None:  # a signal may arrive while a failure is cleaned up
        return state.discarded
    state.discarded = _drop_created(state)
    return state.discarded


def _drop_created(state: Run) -> str:
    target = f'"{state.target or dbname(state.info)}"'
    if state.created_oid is not None:
        try:
            with maintenance(state) as conn:
                dropped = db.drop_database_oid(conn, state.created_oid)
        except (RestoreToolError, psycopg.Error):  # the server went away mid-run
            state.facts.append(("Left behind", f'"{state.into}": drop it once the server '
                                "is back"))
            return (f'"{state.into}" could not be dropped (the server is unreachable): drop '
                    f"it once the server is back; {target} was not changed.")
        state.created_oid = None
        if dropped is None:
            return f'"{state.into}" was already gone; {target} was not changed.'
        if state.into != state.target:
            return f'the scratch database "{dropped}" was dropped; {target} was not changed.'
        return f"{target}, which this run created, was dropped again."
    if state.swapped:
        return (f"the swap had completed: {target} is the restored database, the old one is "
                f'"{state.old}".')
    if state.into and state.into == state.target and state.target_existed:
        return _loaded_in_place(state, target)
    if state.target_existed is False:
        return f"nothing was left behind: {target} does not exist."
    return f"{target} was not changed."


def _loaded_in_place(state: Run, target: str) -> str:
    """What a failed load into the existing empty target left there, counted by kind: the
    run drops nothing it did not create, so it says what stayed."""
    try:
        held = db.user_objects(state.info)
    except (RestoreToolError, psycopg.Error):
        return f"{target} was empty and may now hold what this run restored (it cannot be " \
            "checked)."
    if not held:
        return f"{target} was empty and still is."
    return (f"{target} was empty and now holds what this run restored: "
            f"{', '.join(f'{n} {kind}' for kind, n in held)}.")


def _next_steps(failed: StepName, left: str | None) -> tuple[str, ...]:
    """What cleaning up found and did (`left`, checked by it), then what to do."""
    kept = left[0].upper() + left[1:] if left else "Nothing was cleaned up."
    if left and "what this run restored" in left:
        kept += " Run again with --replace, or drop and recreate it."
    return (kept, _HINTS[failed])


_HINTS = {
    StepName.PREFLIGHT: "Fix what preflight names, then run the same command again.",
    StepName.LOAD: "Read the errors above (TOC entry and message).",
    StepName.PROOF: "The database did not hold all the dump does (the differences above). A "
                    "damaged dump needs a whole new copy; for anything else, restore again "
                    "while nothing else connects to the database being restored.",
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
