"""The step framework: a step returns an Outcome, the runner times it, stops at the first
failure and hands every StepResult to a Report (what the CLI renders and exits with)."""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import psycopg

from .conninfo import scrub
from .errors import ExitCode, RestoreToolError, from_database

# done, total, what is being worked on: the callback long steps report progress through
Progress = Callable[[int, int, str], None]


class StepName(enum.StrEnum):
    PREFLIGHT = "preflight"
    LOAD = "load"
    PROOF = "proof"
    POST_RESTORE = "post-restore"
    REPAIR_SEQUENCES = "repair sequences"
    ANALYZE = "analyze"
    SMOKE_TEST = "smoke test"
    CHECK_SEQUENCES = "check sequences"
    DATABASE_SETTINGS = "database settings"
    SWAP = "swap"


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
    name: StepName
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
    name: StepName
    run: Callable[[], Outcome]


class Watcher(Protocol):
    """Told as each step starts and ends (the CLI's spinner and its checklist lines)."""

    def started(self, name: StepName) -> None: ...

    def finished(self, step: StepResult) -> None: ...


def run_steps(steps: Sequence[Step], *, secret: str | None = None,
              watcher: Watcher | None = None) -> tuple[StepResult, ...]:
    """Run steps in order; after the first failure the rest are reported as skipped.
    A database error inside a step fails that step with the server's message."""
    results: list[StepResult] = []
    failed = False
    for step in steps:
        if failed:
            results.append(StepResult(step.name, Status.SKIPPED, 0.0, "not run: an earlier "
                                      "step failed"))
            if watcher is not None:
                watcher.finished(results[-1])
            continue
        if watcher is not None:
            watcher.started(step.name)
        started = time.perf_counter()
        try:
            outcome = step.run()
        except psycopg.Error as error:
            outcome = Outcome(Status.FAILED, from_database(error, secret).message)
        except RestoreToolError as error:
            outcome = Outcome(Status.FAILED, scrub(str(error), secret),
                              exit_code=error.exit_code)
        seconds = time.perf_counter() - started
        results.append(StepResult(step.name, outcome.status, seconds, outcome.summary,
                                  outcome.details, outcome.exit_code))
        if watcher is not None:
            watcher.finished(results[-1])
        failed = outcome.status is Status.FAILED
    return tuple(results)
