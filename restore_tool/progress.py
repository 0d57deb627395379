"""What the CLI shows while a restore runs. On stderr: a rich bar (percent and time left)
while the dump loads and a spinner for each later step when stderr is a terminal, a plain
line every few seconds otherwise (CI logs). On stdout, with `lines`: each checklist line as
its step ends."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .pipeline import StepName, StepResult

PLAIN_EVERY = 5.0  # seconds between plain lines


class Live:
    """The progress callback (`live(done, total, label)`) and the steps' Watcher in one."""

    def __init__(self, bar: Any = None, print_line: Callable[[StepResult], None] | None = None
                 ) -> None:
        self.bar, self.print_line = bar, print_line
        self.task = bar.add_task("starting", total=None) if bar is not None else None
        self.last = 0.0
        self.started_at = time.monotonic()

    def __call__(self, done: int, total: int, label: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total or None,
                            description=f"loading {label[:40]:<40}")
            return
        now = time.monotonic()
        if now - self.last >= PLAIN_EVERY or (total and done >= total):
            self.last = now
            print(f"loading: {_share(done, total, now - self.started_at)} {label}",
                  file=sys.stderr, flush=True)

    def started(self, name: StepName) -> None:
        self.started_at = time.monotonic()
        if self.bar is not None:
            self.bar.reset(self.task, total=None, description=f"{name}…")

    def finished(self, step: StepResult) -> None:
        if self.print_line is not None:
            self.print_line(step)


class Quiet(Live):
    """--quiet: nothing at all."""

    def __call__(self, done: int, total: int, label: str) -> None:
        pass


def _share(done: int, total: int, elapsed: float) -> str:
    """`42% (about 14 s left)`, or `3 of ?` when the total is not known."""
    if not total:
        return f"{done} of ?"
    percent = f"{100 * done // total}%"
    if 0 < done < total:
        return f"{percent} (about {elapsed * (total - done) / done:.0f} s left)"
    return percent


@contextmanager
def reporter(quiet: bool = False, print_line: Callable[[StepResult], None] | None = None
             ) -> Iterator[Live]:
    """The Live for one command; `print_line` prints a finished step's checklist line."""
    if quiet:
        yield Quiet()
        return
    if sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                   TaskProgressColumn(), TimeRemainingColumn(), TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            yield Live(bar, print_line)
        return
    yield Live(None, print_line)
