"""The dump's side of the proof: one streaming pass over its SQL script (`pg_restore -f -`
for an archive, the file itself for plain SQL) that reads every data block to its end and
tallies what the dump holds: each entry as its header names it (`-- Name: actor_pkey …;
Type: CONSTRAINT; Schema: public`), whether a constraint is NOT VALID, and the rows of each
COPY block, counted in C (bytes.count) a chunk at a time, not line by line in Python."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .. import pgtools
from ..errors import MissingBinary
from ..pgtools import Tool
from ..restoring.script import HEADER

FOOTER = b"-- PostgreSQL database dump complete"
_CONSTRAINTS = ("CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT")
_END = b"\n\\.\n"  # the end of a COPY block: `\.` on a line of its own
CHUNK = 1 << 20

# (kind, schema, name) of an entry the run leaves out on purpose: not expected
Skip = Callable[[str, str, str], bool]


@dataclass(frozen=True)
class DumpEntry:
    kind: str  # as pg_dump names it: TABLE, FK CONSTRAINT, MATERIALIZED VIEW DATA, …
    schema: str  # `-` for none
    name: str  # the entry's tag: `actor`, `film film_pkey`, `last_day(timestamp with time zone)`
    not_valid: bool = False  # a constraint the dump adds NOT VALID


@dataclass
class Tally:
    """What the script holds, and whether it read to its end."""

    entries: list[DumpEntry] = field(default_factory=list)
    # rows of each table's data entry; None: INSERT statements (--inserts), not counted
    rows: dict[tuple[str, str], int | None] = field(default_factory=dict)
    damage: str | None = None  # why it does not read to its end, naming the entry

    @property
    def complete(self) -> bool:
        return self.damage is None


class Scanner:
    """Fed the script in chunks of any size; `finish` says whether it was whole."""

    def __init__(self, skip: Skip | None = None) -> None:
        self.skip = skip
        self.tally = Tally()
        self.buffer = b""
        self.pos = 0
        self.header: DumpEntry | None = None  # the entry whose statements are being read
        self.skipping = False
        self.copy: tuple[str, str] | None = None  # in the COPY block of this table
        self.footer = False

    def feed(self, chunk: bytes) -> None:
        self.buffer += chunk
        while True:
            if self.copy is not None:
                if not self._data():
                    break
            elif not self._line():
                break
        # keep what is unread (a partial line, or the newline a COPY block's end may follow)
        keep = self.pos - 1 if self.copy is not None and self.pos > 0 else self.pos
        self.buffer, self.pos = self.buffer[keep:], self.pos - keep

    def _data(self) -> bool:
        """Count the rows of the open COPY block up to its end, or up to the last complete
        line held; True when the block ended (the buffer's byte before `pos` is a newline)."""
        assert self.copy is not None
        end = self.buffer.find(_END, self.pos - 1)
        rows = self.tally.rows
        if end < 0:
            last = self.buffer.rfind(b"\n", self.pos - 1)
            if not self.skipping:
                rows[self.copy] = (rows[self.copy] or 0) + self.buffer.count(
                    b"\n", self.pos, last + 1)
            self.pos = last + 1
            return False
        if not self.skipping:
            rows[self.copy] = (rows[self.copy] or 0) + self.buffer.count(b"\n", self.pos, end + 1)
        self.pos = end + len(_END)
        self.copy = None
        return True

    def _line(self) -> bool:
        newline = self.buffer.find(b"\n", self.pos)
        if newline < 0:
            return False
        line = self.buffer[self.pos:newline]
        self.pos = newline + 1
        if line.startswith(b"-- "):
            self._comment(line)
        elif self.header is not None:
            self._statement(line)
        return True

    def _comment(self, line: bytes) -> None:
        if line.startswith(FOOTER):
            self.footer = True
            return
        match = HEADER.match(line.decode("utf-8", errors="replace"))
        if match is None:
            return
        name, kind, schema = match.groups()
        self.header = DumpEntry(kind, schema, name)
        self.skipping = self.skip is not None and self.skip(kind, schema, name)
        if not self.skipping:
            self.tally.entries.append(self.header)

    def _statement(self, line: bytes) -> None:
        header = self.header
        assert header is not None
        if header.kind == "TABLE DATA":
            key = (header.schema, header.name)
            if line.startswith(b"COPY ") and line.endswith(b" FROM stdin;"):
                self.copy = key  # a skipped entry's data lines are read past, not counted
                if not self.skipping:
                    self.tally.rows.setdefault(key, 0)
            elif line.startswith(b"INSERT INTO ") and not self.skipping:
                self.tally.rows[key] = None
        elif header.kind in _CONSTRAINTS and b" NOT VALID" in line and not self.skipping:
            self.header = DumpEntry(header.kind, header.schema, header.name, not_valid=True)
            self.tally.entries[-1] = self.header

    def finish(self, failure: str | None = None) -> Tally:
        """The tally; `failure` is the reader's own error (pg_restore's last line)."""
        if self.buffer[self.pos:].startswith(FOOTER):
            self.footer = True
        where = self._where()
        if failure is not None:
            self.tally.damage = f"{where}: {failure}" if where else failure
        elif self.copy is not None:
            self.tally.damage = f"{where}: its data ends without the end-of-data line"
        elif not self.footer:
            self.tally.damage = ((f"{where}: " if where else "") + "it ends without pg_dump's "
                                 f"last line ({FOOTER.decode()[3:]!r})")
        return self.tally

    def _where(self) -> str | None:
        """The entry being read when the script stopped."""
        if self.copy is not None:
            rows = self.tally.rows.get(self.copy) or 0
            return (f"the data of table {_dotted(*self.copy)} stops after {rows:,} row(s)")
        if self.header is not None:
            return f"it stops in or after {self.header.kind.lower()} " \
                   f"{_dotted(self.header.schema, self.header.name)}"
        return None


def _dotted(schema: str, name: str) -> str:
    return name if schema == "-" else f"{schema}.{name}"


def scan(chunks: Iterable[bytes], skip: Skip | None = None,
         failure: Callable[[], str | None] = lambda: None) -> Tally:
    scanner = Scanner(skip)
    for chunk in chunks:
        scanner.feed(chunk)
    return scanner.finish(failure())


def plain(path: Path, skip: Skip | None = None) -> Tally:
    """Tally a plain SQL dump, the file as it is."""
    with path.open("rb") as handle:
        return scan(iter(lambda: handle.read(CHUNK), b""), skip)


class _Background:
    """A tally made in a thread of its own, started at once; `result()` waits for it."""

    def __init__(self, work: Callable[[], Tally]) -> None:
        self.tally: Tally | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(work,), daemon=True)
        self.thread.start()

    def _run(self, work: Callable[[], Tally]) -> None:
        try:
            self.tally = work()
        except BaseException as error:  # handed to result()
            self.error = error

    def result(self) -> Tally:
        self.thread.join()
        if self.error is not None:
            raise self.error
        assert self.tally is not None
        return self.tally

    def stop(self) -> None:
        self.thread.join(timeout=10)


class ArchiveReader(_Background):
    """`pg_restore -f -` of an archive (only the entries of `use_list` when given), its
    script tallied as it streams. `stop()` ends it early (the run failed or was
    interrupted)."""

    def __init__(self, tool: Tool, archive: Path, use_list: Path | None = None,
                 skip: Skip | None = None) -> None:
        argv = pgtools.pg_restore_script_cmd(tool, archive, use_list)
        try:
            self.process = subprocess.Popen(
                argv, bufsize=0, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL, env=pgtools.messages_in_c(os.environ))
        except OSError as error:
            raise MissingBinary(f"{argv[0]} could not be run: {error.strerror}.") from None
        self.stderr: list[bytes] = []
        drain = threading.Thread(target=self._drain, daemon=True)
        drain.start()
        super().__init__(lambda: self._read(skip, drain))

    def _drain(self) -> None:
        assert self.process.stderr is not None
        with self.process.stderr as stderr:
            self.stderr.extend(stderr.read().splitlines()[-pgtools.STDERR_LINES:])

    def _read(self, skip: Skip | None, drain: threading.Thread) -> Tally:
        assert self.process.stdout is not None
        stdout = self.process.stdout

        def failure() -> str | None:
            code = self.process.wait()
            drain.join()
            if code == 0:
                return None
            lines = [line.decode(errors="replace") for line in self.stderr]
            errors = [line for line in lines if line.startswith("pg_restore: error:")]
            return (errors or lines or [f"pg_restore exited with code {code}"])[-1]
        with stdout:
            return scan(iter(lambda: stdout.read(CHUNK), b""), skip, failure)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        super().stop()
        self.process.wait()


class PlainReader(_Background):
    """`plain` of a script in a thread of its own, as ArchiveReader runs pg_restore."""

    def __init__(self, path: Path, skip: Skip | None = None) -> None:
        super().__init__(lambda: plain(path, skip))


Reader = ArchiveReader | PlainReader


def archive(tool: Tool, path: Path, use_list: Path | None = None,
            skip: Skip | None = None) -> Tally:
    reader = ArchiveReader(tool, path, use_list, skip)
    try:
        return reader.result()
    finally:
        reader.stop()
