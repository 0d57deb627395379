"""Where a dump comes from, made a local file or folder that pg_restore and psql can read:
standard input (or any pipe) spooled into the work directory, or the newest dump in a folder
of dumps. Pure file handling: nothing here touches a database."""

from __future__ import annotations

import shutil
import stat
import sys
from pathlib import Path
from typing import IO

from ..errors import BadInput
from . import archive

CHUNK = 1024 * 1024
STDIN = "-"
# names a dump still being written (or given up on) goes by: never the newest dump
_PARTIAL = (".tmp", ".part", ".partial", ".inprogress", ".incomplete", "~")


def local(path: Path, work: Path, stdin: IO[bytes] | None = None) -> tuple[Path, str]:
    """(what to read, how the report names it). `-`, /dev/stdin, a FIFO or `<(pg_dump …)`
    are spooled to `work` first (pg_restore -j needs a file it can seek in); a folder that
    is not itself a directory-format dump stands for the newest dump in it."""
    if str(path) == STDIN or _is_pipe(path):
        source = stdin if stdin is not None else sys.stdin.buffer
        name = "standard input" if str(path) == STDIN else str(path)
        if str(path) == STDIN and source.isatty():
            raise BadInput("`restore -` reads the dump from standard input, which is a "
                           "terminal here.", "Pipe a dump in: pg_dump -Fc … | restore-tool "
                           "restore -")
        if str(path) == STDIN:
            spooled = spool(source, work / "stdin.dump", name)
        else:
            with path.open("rb") as handle:
                spooled = spool(handle, work / "pipe.dump", name)
        return spooled, f"{name} (spooled: {archive.size_text(spooled.stat().st_size)})"
    if path.is_dir() and not (path / "toc.dat").is_file():
        found, skipped = newest(path)
        also = f"; newer but left out: {', '.join(skipped)}" if skipped else ""
        return found, f"{found} (the newest dump in {path}{also})"
    return path, str(path)


def _is_pipe(path: Path) -> bool:
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def spool(source: IO[bytes], target: Path, name: str) -> Path:
    """Copy `source` into `target` a chunk at a time, checking before each write that the
    folder keeps room for it: one sentence when it runs out, the partial copy removed."""
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            free = shutil.disk_usage(target.parent).free
            if free < 2 * len(chunk):
                out.close()
                target.unlink()
                raise BadInput(
                    f"Spooling {name} into {target.parent} stopped after "
                    f"{archive.size_text(written)}: only {archive.size_text(free)} are free "
                    "there.", "Free space there, or choose another place with --work-dir DIR.")
            out.write(chunk)
            written += len(chunk)
    if not written:
        target.unlink()
        raise BadInput(f"{name} is empty: nothing to restore.")
    return target


def newest(folder: Path) -> tuple[Path, list[str]]:
    """The most recently modified dump in `folder` (a dump file of any format, or a
    directory-format dump), and the names of newer entries left out because their names say
    they are still being written (`.part`, `.tmp`, …). One sentence when there is none."""
    entries = sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")),
                     key=lambda entry: entry.stat().st_mtime, reverse=True)
    skipped = []
    for entry in entries:
        if entry.name.endswith(_PARTIAL):
            skipped.append(entry.name)
        elif archive.is_dump(entry):
            return entry, skipped
    raise BadInput(f"{folder} holds no dump (no pg_dump archive, SQL dump or directory-format "
                   "dump in it)" + (f"; left out as unfinished: {', '.join(skipped)}" if skipped
                                    else "") + ".")
