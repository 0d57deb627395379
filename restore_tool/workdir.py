"""Directories a run makes outside the database (the dump unwrapped, a --scratch server, a
service file), each marked with the run that made it, and those of dead runs found again:
a SIGKILL leaves them, and with a --scratch server, its postmaster still running."""

from __future__ import annotations

import atexit
import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

PREFIX = "restore-tool-"
MARK = ".restore-tool-run"


def new(kind: str, *, within: Path | None = None, until_exit: bool = False) -> Path:
    """A directory only this user can enter, `restore-tool-<kind>-…` in `within` (default
    the system temp directory), marked as this run's; `until_exit` removes it when the
    process ends."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{kind}-", dir=within))
    (folder / MARK).write_text(json.dumps({
        "pid": os.getpid(), "host": socket.gethostname(),
        "started": f"{datetime.now():%Y-%m-%d %H:%M:%S}"}))
    if until_exit:
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


@contextmanager
def made(kind: str, within: Path | None = None) -> Iterator[Path]:
    """`new(kind)`, removed with all it holds when the block ends, however it ends."""
    folder = new(kind, within=within)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Left:
    """A directory of a run that is gone, and the server still running in it, if any."""

    path: Path
    pid: int
    started: str
    server: int | None

    def __str__(self) -> str:
        running = f", its server still running (pid {self.server})" if self.server else ""
        return f"{self.path} (left by pid {self.pid}, started {self.started}{running})"


def dead(within: Path | None = None) -> list[Left]:
    """The marked directories whose run (on this host) is gone: in the system temp directory
    and in `within` (a --work-dir)."""
    found = []
    places = {Path(tempfile.gettempdir()), *([within] if within is not None else [])}
    for folder in sorted(f for place in places for f in place.glob(f"{PREFIX}*")):
        try:
            fields = json.loads((folder / MARK).read_text())
            pid, host, started = int(fields["pid"]), str(fields["host"]), str(fields["started"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or not marked
        if host == socket.gethostname() and not alive(pid):
            found.append(Left(folder, pid, started, _server(folder)))
    return found


def _server(folder: Path) -> int | None:
    """The postmaster running on a data directory inside `folder`, by its postmaster.pid."""
    for pid_file in folder.glob("*/postmaster.pid"):
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            continue
        if alive(pid):
            return pid
    return None


def remove(left: Left, pg_ctl: Path) -> None:
    """Stop the server a dead run left (`pg_ctl stop -m immediate`, as the data directory's
    owner: pg_ctl refuses root), then delete the directory."""
    if left.server is not None:
        for pid_file in left.path.glob("*/postmaster.pid"):
            pgdata = pid_file.parent
            owner = pwd.getpwuid(pgdata.stat().st_uid).pw_name
            subprocess.run([str(pg_ctl), "-D", str(pgdata), "-m", "immediate", "-w", "stop"],
                           capture_output=True, check=False,
                           user=owner if os.geteuid() == 0 else None)
    shutil.rmtree(left.path, ignore_errors=True)
