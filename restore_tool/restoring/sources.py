"""Where a dump comes from, made a local file or folder that pg_restore and psql can read:
standard input (or any pipe) spooled into the work directory, a download, a live database
dumped with pg_dump (read-only), or the newest dump in a folder of dumps."""

from __future__ import annotations

import re
import shutil
import stat
import sys
from collections.abc import Callable, Sequence
from contextlib import closing, suppress
from http.client import IncompleteRead
from pathlib import Path
from typing import IO
from urllib.error import HTTPError, URLError
from urllib.parse import urlsplit
from urllib.request import urlopen

from .. import db, pgtools
from ..config import checked_url
from ..conninfo import child_env, looks_like_url, mask
from ..errors import BadInput, ConnectionFailed, MissingBinary
from ..pipeline import Progress
from . import archive

CHUNK = 1024 * 1024
RESERVE = 1024 ** 3  # what spooling leaves free (or 5% of a smaller disk): the input's size
                     # is not known in advance, and /dev/zero never ends
STDIN = "-"
# names a dump still being written (or given up on) goes by: never the newest dump
_PARTIAL = (".tmp", ".part", ".partial", ".inprogress", ".incomplete", "~")


def local(source: Path | str, work: Path, *, jobs: int = 1, progress: Progress | None = None,
          stdin: IO[bytes] | None = None, live: bool = True, pg_bin: Sequence[Path] = ()
          ) -> tuple[Path, str]:
    """(what to read, how the report names it, password masked). `-`, /dev/stdin, a FIFO or
    `<(pg_dump …)` are spooled to `work` first (pg_restore -j needs a file it can seek in);
    an http(s):// URL is downloaded there; a postgresql:// URL is a live database, dumped
    there (`live`: a restore may, inspect may not); a folder that is not itself a
    directory-format dump stands for the newest dump in it."""
    text = str(source)
    if is_database(source):
        if not live:
            raise BadInput("inspect reads dumps; a live database (a postgresql:// URL) is a "
                           "source only restore takes.")
        return from_database(text, work, jobs=jobs, pg_bin=pg_bin)
    if isinstance(source, str) and text.lower().startswith(("http://", "https://")):
        return download(text, work, progress)
    if looks_like_url(text):  # not echoed: it may hold a password
        raise BadInput("The dump is given as a URL restore-tool cannot read: it reads a dump "
                       "file or directory, -, an http(s):// URL or a live postgresql:// "
                       "database; the target goes in DATABASE_URL or --database-url.")
    path = Path(source)
    if str(path) == STDIN or _is_pipe(path):
        name = "standard input" if str(path) == STDIN else str(path)
        if str(path) == STDIN:
            given = stdin if stdin is not None else sys.stdin.buffer
            if given.isatty():
                raise BadInput("`restore -` reads the dump from standard input, which is a "
                               "terminal here.", "Pipe a dump in: pg_dump -Fc … | "
                               "restore-tool restore -")
            spooled = spool(given, work / "stdin.dump", name)
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


def spool(source: IO[bytes], target: Path, name: str,
          on_chunk: Callable[[int], None] | None = None) -> Path:
    """Copy `source` into `target` a chunk at a time, checking before each write that the
    folder keeps room for it: one sentence when it runs out, the partial copy removed.
    `on_chunk` hears the bytes written so far."""
    written = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK):
            usage = shutil.disk_usage(target.parent)
            keep = min(RESERVE, usage.total // 20)  # never fill the disk for others
            if usage.free - len(chunk) < keep:
                out.close()
                target.unlink()
                raise BadInput(
                    f"Spooling {name} into {target.parent} stopped after "
                    f"{archive.size_text(written)}: only {archive.size_text(usage.free)} are "
                    f"free there, and {archive.size_text(keep)} are left for others.",
                    "Free space there, or choose another place with --work-dir DIR.")
            out.write(chunk)
            written += len(chunk)
            if on_chunk is not None:
                on_chunk(written)
    if not written:
        target.unlink()
        raise BadInput(f"{name} is empty: nothing to restore.")
    return target


def newest(folder: Path) -> tuple[Path, list[str]]:
    """The most recently modified dump in `folder` (a dump file of any format, or a
    directory-format dump), and the names of newer entries left out because their names say
    they are still being written (`.part`, `.tmp`, …). One sentence when there is none."""
    def modified(entry: Path) -> float:
        try:
            return entry.stat().st_mtime
        except OSError:  # a dangling link: never the newest
            return float("-inf")

    entries = sorted((entry for entry in folder.iterdir() if not entry.name.startswith(".")),
                     key=modified, reverse=True)
    skipped = []
    for entry in entries:
        if entry.name.endswith(_PARTIAL):
            skipped.append(entry.name)
        elif archive.is_dump(entry):
            return entry, skipped
    raise BadInput(f"{folder} holds no dump: it is not a directory-format dump (it has no "
                   "toc.dat), and no pg_dump archive, SQL dump or directory-format dump is in "
                   "it" + (f" (left out as unfinished: {', '.join(skipped)})" if skipped
                           else "") + ".")


def is_database(source: Path | str) -> bool:
    """Whether `source` names a live database (postgresql://, postgres+driver://) rather
    than a dump."""
    return isinstance(source, str) and bool(_DATABASE_URL.match(source))


_DATABASE_URL = re.compile(r"^postgres(?:ql)?(?:\+[A-Za-z0-9_]+)?://", re.IGNORECASE)


def shown_url(url: str) -> str:
    """An http(s) URL for people: no user or password, no query (a presigned URL's
    signature is a secret too)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}" + ("?…" if parts.query else "")


def download(url: str, work: Path, progress: Progress | None = None) -> tuple[Path, str]:
    """Fetch `url` into `work`: the free space checked against its Content-Length first,
    and again before every MiB; a download that ends short of its Content-Length is one
    sentence, never a truncated dump restored."""
    shown = shown_url(url)
    try:
        response = urlopen(url, timeout=60)  # http and https only: local() checked
    except HTTPError as error:
        raise BadInput(f"Downloading {shown} failed: HTTP {error.code} {error.reason}.") \
            from None
    except (URLError, OSError) as error:
        reason = getattr(error, "reason", None) or error
        raise ConnectionFailed(f"Downloading {shown} failed: {reason}.") from None
    with response:
        length = int(response.headers.get("Content-Length") or 0) or None
        target = work / "download.dump"
        archive.check_room(shown, work, length, doing="Downloading")

        def shown_progress(done: int) -> None:
            if progress is not None:
                progress(done, length or 0, "download")

        with suppress(IncompleteRead):  # the length check below says so
            spool(response, target, shown, shown_progress)
        got = target.stat().st_size if target.exists() else 0
    if length is not None and got != length:
        target.unlink(missing_ok=True)
        raise BadInput(f"The download of {shown} stopped after {archive.size_text(got)} of "
                       f"{archive.size_text(length)} ({got} of {length} bytes): nothing was "
                       "restored from it.", "Download it again.")
    return target, f"{shown} (downloaded: {archive.size_text(got)})"


def from_database(url: str, work: Path, *, jobs: int = 1, pg_bin: Sequence[Path] = ()
                  ) -> tuple[Path, str]:
    """A live source database dumped into `work` by the pg_dump of its own major (else the
    oldest newer one), directory format with `jobs` connections, in read-only sessions:
    the source is never written to. The room it needs is checked first against the size of
    its tables (the most the dump's data can take)."""
    conninfo = checked_url(url, "the dump's source")
    shown = mask(conninfo)
    with closing(db.connect(conninfo, read_only=True)) as conn:
        major = conn.info.server_version // 10000
        row = conn.execute(_TABLE_BYTES).fetchone()
    tables = int(row[0]) if row else 0
    candidates = [tool for tool in pgtools.find_all("pg_dump", pg_bin)
                  if tool.version[0] >= major]
    if not candidates:
        raise MissingBinary(f"No pg_dump {major} or newer is installed here to dump the source "
                            f"(PostgreSQL {major}).", "Install the PostgreSQL client of that "
                            "version, or pass --pg-bin DIR.")
    tool = next((t for t in candidates if t.version[0] == major), min(candidates))
    archive.check_room(shown, work, tables, doing="Dumping")  # the most its data can take
    out = work / "source.dir"
    info, env = child_env(conninfo)
    env["PGOPTIONS"] = " ".join(filter(None, (env.get("PGOPTIONS"),
                                              "-c default_transaction_read_only=on")))
    pgtools.run(pgtools.pg_dump_cmd(tool, info, out, fmt="directory", jobs=jobs), env)
    size = sum(f.stat().st_size for f in out.iterdir())
    return out, (f"{shown} (a live database, dumped read-only by pg_dump {tool.version_text}"
                 f" -Fd -j {jobs}: {archive.size_text(size)})")


_TABLE_BYTES = ("SELECT coalesce(sum(pg_table_size(oid)), 0) FROM pg_class "
                "WHERE relkind IN ('r', 'm') AND relpersistence = 'p'")
