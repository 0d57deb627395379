"""The progress callback the CLI hands to long steps: a rich progress bar when stderr is a
terminal, a plain line every few seconds otherwise (CI logs). Always on stderr."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .pipeline import Progress as Callback

PLAIN_EVERY = 5.0  # seconds between plain lines


@contextmanager
def reporter(quiet: bool = False) -> Iterator[Callback]:
    if quiet:
        yield lambda _done, _total, _label: None
        return
    if sys.stderr.isatty():
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn())
        with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
            task = bar.add_task("loading", total=None)

            def show(done: int, total: int, label: str) -> None:
                bar.update(task, completed=done, total=total or None,
                           description=f"loading {label[:40]:<40}")

            yield show
        return
    last = 0.0

    def plain(done: int, total: int, label: str) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= PLAIN_EVERY or (total and done >= total):
            last = now
            print(f"loading: {done}/{total} {label}", file=sys.stderr, flush=True)

    yield plain
