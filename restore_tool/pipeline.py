"""Steps, their results and the runner; and the commands as plain functions that return a
Report (`fix_sequences(settings)`, `verify(settings)`), usable without the CLI."""

from __future__ import annotations

import enum
import os
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack, closing
from dataclasses import dataclass, field, replace
from typing import Protocol

import psycopg

from . import db, sequences, smoke
from .config import Settings, mask, password_of, scrub
from .db import Connection
from .errors import ExitCode, RestoreToolError
from .sequences.plan import Action, SequenceFix

REPAIR_SEQUENCES = "repair sequences"
CHECK_SEQUENCES = "check sequences"
SMOKE_TEST = "smoke test"


class Status(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    WARNING = "warning"
    SKIPPED = "skipped"


class Detail(Protocol):
    def as_dict(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class Outcome:
    """What a step function returns; the runner adds its name and time. A failure caused by
    bad input or a missing binary carries that exit code (2, 3) instead of 1."""

    status: Status
    summary: str
    details: tuple[Detail, ...] = ()
    exit_code: ExitCode = ExitCode.FAILED


@dataclass(frozen=True)
class StepResult:
    name: str
    status: Status
    seconds: float
    summary: str
    details: tuple[Detail, ...] = ()
    exit_code: ExitCode = ExitCode.FAILED  # what a failure of this step exits with


@dataclass(frozen=True)
class Report:
    command: str
    target: str
    target_source: str
    steps: tuple[StepResult, ...] = field(default=())
    facts: tuple[tuple[str, str], ...] = ()  # ("Dump", "backups/x.dump (custom, ...)"), ...
    next_steps: tuple[str, ...] = ()  # what to do now that something failed

    @property
    def ok(self) -> bool:
        return all(step.status is not Status.FAILED for step in self.steps)

    @property
    def exit_code(self) -> ExitCode:
        failed = [step for step in self.steps if step.status is Status.FAILED]
        return failed[0].exit_code if failed else ExitCode.OK


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[], Outcome]


def run_steps(steps: Sequence[Step], *, secret: str | None = None) -> tuple[StepResult, ...]:
    """Run steps in order; after the first failure the rest are reported as skipped.
    A database error inside a step fails that step with the server's message."""
    results: list[StepResult] = []
    failed = False
    for step in steps:
        if failed:
            results.append(StepResult(step.name, Status.SKIPPED, 0.0, "not run: an earlier "
                                      "step failed"))
            continue
        started = time.perf_counter()
        try:
            outcome = step.run()
        except psycopg.Error as error:
            outcome = Outcome(Status.FAILED, scrub(_db_message(error), secret))
        except RestoreToolError as error:
            outcome = Outcome(Status.FAILED, scrub(str(error), secret),
                              exit_code=error.exit_code)
        seconds = time.perf_counter() - started
        results.append(StepResult(step.name, outcome.status, seconds, outcome.summary,
                                  outcome.details, outcome.exit_code))
        failed = outcome.status is Status.FAILED
    return tuple(results)


def _db_message(error: psycopg.Error) -> str:
    diag = error.diag
    message = diag.message_primary or str(error).strip().splitlines()[0]
    return f"{message} ({diag.message_detail})" if diag.message_detail else message


@dataclass(frozen=True)
class Target:
    """The open connection a command works on, and how to open more like it (for work
    spread over several connections)."""

    conn: Connection
    connect: Callable[[], Connection]


def _run(command: str, settings: Settings, read_only: bool,
         build: Callable[[Target], list[Step]],
         facts: Sequence[tuple[str, str]] = (), exclusive: bool = False) -> Report:
    info = db.conninfo(settings)
    with ExitStack() as stack:
        conn = stack.enter_context(closing(db.connect(info, read_only=read_only)))
        if exclusive:
            stack.enter_context(db.target_lock(info, command, fallback=conn))
        target = Target(conn, lambda: db.connect(info, read_only=read_only))
        results = run_steps(build(target), secret=password_of(info))
    return Report(command, mask(info), settings.origin, results, facts=tuple(facts))


def default_jobs() -> int:
    """Connections to spread per-table work over: the CPU count, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


# ---------------------------------------------------------------------------------------------
# Commands


def fix_sequences(
    settings: Settings,
    *,
    schemas: Sequence[str] = (),
    exact: bool = False,
    dry_run: bool = False,
    jobs: int | None = None,
    lock: bool = False,
) -> Report:
    """Move every lagging sequence past its data: `restore-tool fix-sequences`. Unless it is
    a dry run, holds the target's lock: a second run (or a restore) fails fast."""

    def repair_step(target: Target) -> Outcome:
        fixes = sequences.repair(target.conn, schemas, exact=exact, dry_run=dry_run,
                                 jobs=jobs or default_jobs(), connect=target.connect,
                                 lock=lock)
        return repair_outcome(fixes, dry_run=dry_run)

    return _run("fix-sequences", settings, False,
                lambda target: [Step(REPAIR_SEQUENCES, lambda: repair_step(target))],
                exclusive=not dry_run)


def verify(
    settings: Settings,
    *,
    schemas: Sequence[str] = (),
    jobs: int | None = None,
    smoke_plan: smoke.Plan | None = smoke.AUTOMATIC,
    facts: Sequence[tuple[str, str]] = (),
) -> Report:
    """Health check: no sequence lags its data, and an insert into every table works (rolled
    back; `smoke_plan=None` skips that). `restore-tool verify`."""

    def check_step(target: Target) -> Outcome:
        return check_outcome(sequences.survey(target.conn, schemas, jobs=jobs or default_jobs(),
                                              connect=target.connect))

    def smoke_step(target: Target) -> Outcome:
        if smoke_plan is None:
            return Outcome(Status.SKIPPED, "--no-smoke")
        plan = smoke_plan if smoke_plan.schemas or not schemas else replace(
            smoke_plan, schemas=tuple(schemas))
        return smoke_test(target.conn, target.connect, plan, jobs or default_jobs())

    return _run("verify", settings, True, lambda target: [
        Step(CHECK_SEQUENCES, lambda: check_step(target)),
        Step(SMOKE_TEST, lambda: smoke_step(target)),
    ], facts)


def smoke_test(conn: Connection, connect: Callable[[], Connection], plan: smoke.Plan,
               jobs: int) -> Outcome:
    """The smoke step: every insert is rolled back (in transactions that may write, even on
    verify's read-only connections)."""
    if smoke.standby(conn):
        return Outcome(Status.SKIPPED, "the server is a read-only standby")
    return smoke_outcome(smoke.run(conn, plan, jobs=jobs, connect=connect))


def smoke_outcome(results: Sequence[smoke.SmokeResult]) -> Outcome:
    """Failed if any insert failed on a value the database made (or a configured row failed);
    a warning when tables were skipped; the first reasons in the summary."""
    by = {verdict: [r for r in results if r.verdict is verdict] for verdict in smoke.Verdict}
    failed, skipped = by[smoke.Verdict.FAILED], by[smoke.Verdict.SKIPPED]
    if not results:
        return Outcome(Status.SKIPPED, "no table to insert into")
    parts = [f"{len(by[smoke.Verdict.PASSED])} passed"]
    if failed:
        parts.insert(0, f"{len(failed)} failed{_first(failed)}")
    if skipped:
        parts.append(f"{len(skipped)} skipped{_first(skipped)}")
    status = Status.FAILED if failed else Status.WARNING if skipped else Status.PASSED
    return Outcome(status, ", ".join(parts), tuple(results))


def _first(results: Sequence[smoke.SmokeResult], shown: int = 2) -> str:
    """` (payment: new row ... ; film: ...; and 3 more)`."""
    listed = "; ".join(f"{r.table}: {r.reason}" for r in results[:shown])
    more = f"; and {len(results) - shown} more" if len(results) > shown else ""
    return f" ({listed}{more})"


def repair_outcome(fixes: Sequence[SequenceFix], *, dry_run: bool = False) -> Outcome:
    """The repair step's verdict: failed if a sequence cannot get past its data, a warning
    if one was skipped."""
    return Outcome(_repair_status(fixes), repair_summary(fixes, dry_run=dry_run), tuple(fixes))


def check_outcome(planned: Sequence[sequences.Planned]) -> Outcome:
    """The check step's verdict: failed if any sequence lags its data."""
    fixes = [item.fix for item in planned]
    lagging = [fix for fix in fixes if fix.lagging]
    skipped = [fix for fix in fixes if fix.action is Action.SKIPPED]
    if lagging:
        status = Status.FAILED
        summary = f"{len(lagging)} of {len(fixes)} sequence(s) lag their data"
    else:
        status = Status.WARNING if skipped else Status.PASSED
        summary = f"{len(fixes) - len(skipped)} sequence(s) ahead of their data"
    if skipped:
        summary += f", {len(skipped)} skipped"
    return Outcome(status, summary, tuple(fixes))


def _repair_status(fixes: Sequence[SequenceFix]) -> Status:
    actions = {fix.action for fix in fixes}
    if Action.FAILED in actions:
        return Status.FAILED
    if Action.SKIPPED in actions:
        return Status.WARNING
    return Status.PASSED


def count(fixes: Sequence[SequenceFix]) -> dict[str, int]:
    """How many sequences ended in each bucket the summary names."""
    buckets = {"fixed": 0, "moved back": 0, "already fine": 0, "skipped": 0, "failed": 0}
    names = {Action.FIXED: "fixed", Action.MOVED_BACK: "moved back", Action.OK: "already fine",
             Action.EMPTY: "already fine", Action.SKIPPED: "skipped", Action.FAILED: "failed"}
    for fix in fixes:
        buckets[names[fix.action]] += 1
    return buckets


def repair_summary(fixes: Sequence[SequenceFix], *, dry_run: bool) -> str:
    buckets = count(fixes)
    verb = "would fix" if dry_run else "fixed"
    parts = [f"{verb} {buckets['fixed']}"]
    if buckets["moved back"]:
        parts.append(f"{'would move' if dry_run else 'moved'} {buckets['moved back']} back")
    parts += [f"{buckets[name]} {name}" for name in ("already fine", "skipped", "failed")]
    return ", ".join(parts)
