"""SIGINT and SIGTERM held while something must run to its end: a commit and the note that it
happened, a cleanup, a server's start. The CLI turns SIGTERM into KeyboardInterrupt."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def signals_held() -> Iterator[None]:
    """What must run to its end (a commit and the note that it happened, a cleanup): SIGINT
    and SIGTERM wait, and are delivered right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)
