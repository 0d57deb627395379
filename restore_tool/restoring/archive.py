"""Recognise a dump by its content (custom, directory, tar, plain SQL; gzip, zstd or lz4
around a file) and read what it holds from its header and TOC (`pg_restore -l`)."""

from __future__ import annotations

import gzip
import re
import shutil
import tarfile
import zipfile
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import pgtools
from ..conninfo import looks_like_url
from ..errors import BadInput, CommandFailed, DamagedDump, MissingBinary
from ..pgtools import Tool

# Outer compression of a dump file, by magic number; the tool that removes it.
WRAPPERS = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"\x04\x22\x4d\x18": "lz4"}
ARCHIVE_MAGIC = b"PGDMP"
HEAD = 64 * 1024

# The oldest pg_restore that reads each archive version (pg_backup_archiver.h).
READER_FOR_ARCHIVE = {(1, 14): 12, (1, 15): 16, (1, 16): 17}

# psql releases that know \restrict, which plain dumps carry since the CVE-2025-8714 fix.
RESTRICT_SINCE = {13: 22, 14: 19, 15: 14, 16: 10, 17: 6}

_SQL_START = re.compile(
    r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(?:SET|CREATE|INSERT|COPY|BEGIN|SELECT|ALTER|DROP|"
    r"COMMENT|GRANT|START|DO|\\)", re.IGNORECASE | re.DOTALL)
_HEADER = re.compile(r"^;\s+(Archive created at|dbname|TOC Entries|Compression|Dump Version|"
                     r"Format|Dumped from database version|Dumped by pg_dump version):?\s*(.*)$")
_PLAIN_HEADER = re.compile(r"^-- (Dumped from database version|Dumped by pg_dump version) (.*)$")
# `3346; 1259 16393 TABLE public actor postgres` in `pg_restore -l`; an entry's kind is one
# word unless it is one of these
_TOC_LINE = re.compile(r"^(\d+); \d+ \d+ (.*)$")
_MULTIWORD = ("TABLE DATA", "TABLE ATTACH", "SEQUENCE SET", "SEQUENCE OWNED BY",
              "INDEX ATTACH", "FK CONSTRAINT", "DEFAULT ACL", "DATABASE PROPERTIES",
              "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "LARGE OBJECT", "BLOB METADATA",
              "EVENT TRIGGER", "FOREIGN TABLE", "FOREIGN DATA WRAPPER", "USER MAPPING",
              "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY", "OPERATOR CLASS",
              "OPERATOR FAMILY", "ROW SECURITY", "PUBLICATION TABLE",
              "PUBLICATION TABLES IN SCHEMA", "SUBSCRIPTION TABLE", "STATISTICS DATA",
              "PROCEDURAL LANGUAGE", "SHELL TYPE", "ACCESS METHOD", "TEXT SEARCH PARSER",
              "TEXT SEARCH TEMPLATE", "CHECK CONSTRAINT", "SECURITY LABEL")
# `-- Name: actor; Type: TABLE; Schema: public; Owner: postgres` in a plain dump (and
# `; Tablespace: fast` after it)
_PLAIN_ENTRY = re.compile(r"^-- (?:Data for )?Name: (.*?); Type: ([A-Z ]+); Schema: (.*?); "
                          r"Owner: (.*?)(?:; Tablespace: .*)?$")
_COUNTED = {"TABLE": "tables", "SEQUENCE": "sequences", "INDEX": "indexes",
            "EXTENSION": "extensions"}


@dataclass(frozen=True)
class Dump:
    """What a dump is and holds."""

    path: Path
    format: str  # custom, directory, tar, plain
    wrapper: str | None  # gzip, zstd or lz4 around the whole file
    compression: str | None  # inside the archive (`pg_restore -l`), None for plain SQL
    archive_version: str | None  # 1.16-0; None for plain SQL
    pg_dump_version: str | None
    server_version: str | None
    dbname: str | None
    toc_entries: int | None
    counts: dict[str, int] = field(default_factory=dict)
    owners: tuple[str, ...] = ()
    readers: tuple[Tool, ...] = ()  # the pg_restore (or psql) binaries that read it
    has_create: bool = False  # plain SQL made with --create (CREATE DATABASE, \connect)
    entries: tuple[TocEntry, ...] = ()  # an archive's TOC (`pg_restore -l`)
    plain_data: tuple[tuple[str, str], ...] = ()  # plain SQL: (schema, table) it holds rows of

    @property
    def data_of(self) -> tuple[tuple[str, str], ...]:
        """(schema, table) of every table whose rows the dump holds."""
        if self.format == "plain":
            return self.plain_data
        return tuple((parts[0], parts[1]) for e in self.entries if e.kind == "TABLE DATA"
                     and len(parts := e.rest.split(" ")) >= 2)

    @property
    def parallel(self) -> bool:
        """pg_restore -j works on custom and directory archives only."""
        return self.format in ("custom", "directory")

    @property
    def reader(self) -> Tool:
        return max(self.readers)

    def describe(self) -> str:
        """`custom with gzip data, in a zstd file, archive 1.16-0, pg_dump 18.6 from
        PostgreSQL 18.6, database "x"`."""
        parts = [self.format + (f" with {self.compression} data"
                                if self.compression not in (None, "none") else "")]
        if self.wrapper:
            parts.append(f"in a {self.wrapper} file")
        if self.archive_version:
            parts.append(f"archive {self.archive_version}")
        if self.pg_dump_version:
            parts.append(f"pg_dump {self.pg_dump_version}"
                         + (f" from PostgreSQL {self.server_version}"
                            if self.server_version else ""))
        if self.dbname:
            parts.append(f'database "{self.dbname}"')
        return ", ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path), "format": self.format, "wrapper": self.wrapper,
            "compression": self.compression, "archive_version": self.archive_version,
            "pg_dump_version": self.pg_dump_version, "server_version": self.server_version,
            "dbname": self.dbname, "toc_entries": self.toc_entries, "counts": self.counts,
            "owners": list(self.owners),
            "readers": [{"path": str(t.path), "version": t.version_text}
                        for t in self.readers],
            "reader": str(self.reader.path) if self.readers else None,
        }


def wrapper_of(path: Path) -> str | None:
    """The compression around a dump file (gzip, zstd, lz4), or None; one clear sentence when
    the path is missing, empty, or a folder that is no directory-format dump. What is inside
    is read once unwrapped (`inspect`)."""
    if not path.exists():
        if looks_like_url(str(path)):  # not echoed: a database URL holds its password
            raise BadInput("The dump is given as a URL, not a file: restore-tool reads a dump "
                           "file or directory (download it first); the target database goes "
                           "in DATABASE_URL or --database-url.")
        raise BadInput(f"{path} does not exist.")
    if path.is_dir():
        if not (path / "toc.dat").is_file():
            raise BadInput(f"{path} is a directory but not a directory-format dump "
                           "(it has no toc.dat).")
        return None
    with path.open("rb") as handle:
        magic = handle.read(4)
    if not magic:
        raise BadInput(f"{path} is empty.")
    return WRAPPERS.get(magic[:2]) or WRAPPERS.get(magic)


def is_dump(path: Path) -> bool:
    """Whether `path` is a dump by its first bytes (or its toc.dat): what a folder of
    backups is searched for. Reads nothing more."""
    if path.is_dir():
        return (path / "toc.dat").is_file()
    if not path.is_file():
        return False
    with path.open("rb") as handle:
        head = handle.read(HEAD)
    if not head:
        return False
    if head[:2] in WRAPPERS or head[:4] in WRAPPERS:
        return True
    try:
        _format_of(path, head)
    except BadInput:
        return False
    return True


def _format_of(path: Path, head: bytes) -> str:
    if head.startswith(ARCHIVE_MAGIC):
        return "custom"
    if head[257:262] == b"ustar" and head.startswith(b"toc.dat"):
        return "tar"
    text = _text(head)
    if text is not None and _SQL_START.match(text):
        return "plain"
    raise BadInput(f"{path} is not a PostgreSQL dump (neither an archive made by pg_dump "
                   "nor SQL text).")


def _text(head: bytes) -> str | None:
    """`head` as text, or None for binary: UTF-8 (the read may have cut its last character),
    else one byte a character (a LATIN1 or other single-byte script, `pg_dump -E LATIN1`)."""
    if b"\0" in head:
        return None
    for cut in range(4):
        try:
            return head[:len(head) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return head.decode("latin-1")


@contextmanager
def opened(path: Path, workdir: Path, extra_bins: Sequence[Path] = ()) -> Iterator[
        tuple[Dump, Path]]:
    """The dump recognised and inspected, and the path to give pg_restore or psql: `path`
    itself, or its decompressed copy in `workdir` (pg_restore -j needs a seekable file)."""
    wrapper = wrapper_of(path)
    if wrapper is None:
        inner = _directory_in_tar(path, workdir)
        yield inspect(path, inner or path, None, extra_bins), inner or path
        return
    target = workdir / (path.name + ".unwrapped")
    check_room(path, workdir, unwrapped_size(path, wrapper))
    if wrapper == "gzip":
        try:
            with gzip.open(path, "rb") as source, target.open("wb") as out:
                shutil.copyfileobj(source, out, 1024 * 1024)
        except (OSError, EOFError) as error:
            raise DamagedDump(f"{path} could not be decompressed: "
                              f"{str(error).rstrip('.')}.") from None
    else:
        tool = shutil.which(wrapper)
        if tool is None:
            raise MissingBinary(f"{path} is {wrapper}-compressed and {wrapper} is not "
                                "installed.", f"Install {wrapper}, or decompress it yourself.")
        try:
            pgtools.run(pgtools.decompress_cmd(Path(tool), path, target))
        except CommandFailed as error:
            raise DamagedDump(f"{path} could not be decompressed: {error.message}") from None
    yield inspect(path, target, wrapper, extra_bins), target


def unwrapped_size(path: Path, wrapper: str) -> int | None:
    """How large `path` is once decompressed, as its own header or trailer says: gzip's
    ISIZE (the size modulo 4 GiB: trusted when not below the compressed size), the content
    size of a zstd or lz4 frame when written; None when the file does not say."""
    with path.open("rb") as handle:
        head = handle.read(18)
        if wrapper == "gzip":
            handle.seek(-4, 2)
            size = int.from_bytes(handle.read(4), "little")
            return size if size >= path.stat().st_size else None
    if wrapper == "zstd" and len(head) >= 6:
        descriptor = head[4]
        single, dictionary, fcs = descriptor & 0x20, descriptor & 0x03, descriptor >> 6
        width = {0: 1 if single else 0, 1: 2, 2: 4, 3: 8}[fcs]
        start = 5 + (0 if single else 1) + {0: 0, 1: 1, 2: 2, 3: 4}[dictionary]
        if not width or len(head) < start + width:
            return None
        return int.from_bytes(head[start:start + width], "little") + (256 if width == 2 else 0)
    if wrapper == "lz4" and len(head) >= 14 and head[4] & 0x08:
        return int.from_bytes(head[6:14], "little")
    return None


def check_room(path: Path | str, folder: Path, needed: int | None, *,
               doing: str = "Unpacking") -> None:
    """One sentence, before writing, when `folder` has less free space than `needed`:
    `Unpacking x.dump.gz needs …` (`doing` and `path` say what)."""
    if needed is None:
        return
    free = shutil.disk_usage(folder).free
    if needed > free:
        what = path.name if isinstance(path, Path) else path
        raise BadInput(f"{doing} {what} needs {size_text(needed)} in {folder.parent}, "
                       f"which has {size_text(free)} free.", "Free space there, or choose "
                       "another place with --work-dir DIR.")


def size_text(count: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB"):
        if count < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "bytes" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def _directory_in_tar(path: Path, workdir: Path) -> Path | None:
    """A tar (or zip) holding a directory-format dump, as dvdrental.tar is often passed
    around: unpacked into `workdir`, the folder with its toc.dat. None for anything else, a
    tar-format dump included (its first member is toc.dat itself)."""
    if path.is_dir():
        return None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            toc = _nested_toc(names)
            if toc is not None:
                check_room(path, workdir, sum(info.file_size for info in archive.infolist()))
                archive.extractall(workdir / "unpacked")
    elif tarfile.is_tarfile(path):
        with tarfile.open(path) as archive:
            names = archive.getnames()
            toc = _nested_toc(names)
            if toc is not None:
                check_room(path, workdir, sum(member.size for member in archive.getmembers()))
                archive.extractall(workdir / "unpacked", filter="data")
    else:
        return None
    return None if toc is None else (workdir / "unpacked" / toc).parent


def _nested_toc(names: Sequence[str]) -> str | None:
    if not names or names[0] == "toc.dat":
        return None
    tocs = sorted((n for n in names if n.endswith("/toc.dat") or n == "toc.dat"), key=len)
    return tocs[0] if tocs else None


def inspect(path: Path, readable: Path, wrapper: str | None,
            extra_bins: Sequence[Path] = ()) -> Dump:
    """Read `readable` (the dump without its wrapper) with every pg_restore (or psql) found;
    the ones that succeed are its readers."""
    if readable.is_dir():
        fmt = "directory"
    else:
        with readable.open("rb") as handle:
            fmt = _format_of(path, handle.read(HEAD))
    if fmt == "plain":
        return _inspect_plain(path, readable, wrapper, extra_bins)
    return _inspect_archive(path, readable, fmt, wrapper, extra_bins)


def _inspect_archive(path: Path, readable: Path, fmt: str, wrapper: str | None,
                     extra_bins: Sequence[Path]) -> Dump:
    tools = sorted(pgtools.find_all("pg_restore", extra_bins), reverse=True)
    if not tools:
        raise MissingBinary("pg_restore was not found.",
                            "Install the PostgreSQL client tools or pass --pg-bin DIR.")
    def listed(tool: Tool) -> str | CommandFailed:
        try:
            return pgtools.run(pgtools.pg_restore_list_cmd(tool, readable))
        except CommandFailed as error:
            return error

    with ThreadPoolExecutor(len(tools)) as pool:  # every reader asked at once
        outputs = list(pool.map(listed, tools))
    listing: str | None = None
    readers: list[Tool] = []
    failure = ""
    for tool, output in zip(tools, outputs, strict=True):
        if isinstance(output, CommandFailed):
            failure = failure or output.message
            continue
        readers.append(tool)
        listing = listing or output
    if listing is None:
        raise _unreadable(path, readable, fmt, failure, tools)
    toc = parse_listing(listing)
    header = toc.header
    return Dump(
        path=path, format=fmt, wrapper=wrapper,
        compression=header.get("Compression"),
        archive_version=header.get("Dump Version"),
        pg_dump_version=header.get("Dumped by pg_dump version"),
        server_version=header.get("Dumped from database version"),
        dbname=header.get("dbname"),
        toc_entries=int(header["TOC Entries"]) if "TOC Entries" in header else None,
        counts=toc.counts,
        owners=toc.owners,
        readers=tuple(readers),
        entries=toc.entries,
    )


@dataclass(frozen=True)
class TocEntry:
    """One line of `pg_restore -l`: `3346; 1259 16393 TABLE public actor postgres`."""

    dump_id: int
    kind: str  # TABLE, TABLE DATA, MATERIALIZED VIEW DATA, ...
    rest: str  # what follows the kind: schema, name and owner (`-` or empty for none)

    @property
    def owner(self) -> str | None:
        """The entry's owner, the last word of the line (extensions name none; statistics
        end in a space)."""
        owner = self.rest.rsplit(" ", 1)[-1] if self.kind != "EXTENSION" else ""
        return owner if owner and owner != "-" else None


@dataclass(frozen=True)
class Listing:
    """What `pg_restore -l` says: the header's fields and every TOC entry."""

    header: dict[str, str]
    entries: tuple[TocEntry, ...]

    @property
    def counts(self) -> dict[str, int]:
        found = Counter(_COUNTED[e.kind] for e in self.entries if e.kind in _COUNTED)
        return {name: found[name] for name in _COUNTED.values()}

    @property
    def owners(self) -> tuple[str, ...]:
        return tuple(sorted({e.owner for e in self.entries if e.owner is not None}))


def parse_listing(text: str) -> Listing:
    """Parse `pg_restore -l` output (pure): header lines start with `;`, entries with their
    dump id; an entry's kind is one word unless it is one of the multi-word kinds."""
    header = {m.group(1): m.group(2) for line in text.splitlines()
              if (m := _HEADER.match(line))}
    entries = []
    for line in text.splitlines():
        match = _TOC_LINE.match(line)
        if match is None:
            continue
        dump_id, entry = int(match.group(1)), match.group(2)
        kind = max((m for m in _MULTIWORD if entry.startswith(m + " ")), key=len,
                   default=entry.split(" ", 1)[0])
        entries.append(TocEntry(dump_id, kind, entry[len(kind) + 1:]))
    return Listing(header, tuple(entries))


def _unreadable(path: Path, readable: Path, fmt: str, failure: str,
                tools: Sequence[Tool]) -> Exception:
    """Why no pg_restore here reads the archive: too new for all of them, or damaged."""
    version = archive_version(readable)
    needed = READER_FOR_ARCHIVE.get(version[:2]) if version else None
    newest = tools[0].version_text
    if version and (needed is None or needed > tools[0].version[0]):
        wanted = f"pg_restore {needed} or newer" if needed else "a newer pg_restore"
        return MissingBinary(
            f"{path} is a {fmt} archive of version {'.'.join(map(str, version[:2]))}, which "
            f"needs {wanted}; the newest found here is {newest}.",
            "Install a newer PostgreSQL client, or pass --pg-bin DIR.")
    reason = failure.removeprefix("pg_restore failed: ").removeprefix("pg_restore: error: ")
    return DamagedDump(f"{path} is not a readable dump: {reason}.")


def archive_version(readable: Path) -> tuple[int, int, int] | None:
    """(1, 16, 0) from the archive header (`PGDMP` then major, minor, revision bytes)."""
    if readable.is_dir():
        readable = readable / "toc.dat"
    with readable.open("rb") as handle:
        head = handle.read(1024)
    start = head.find(ARCHIVE_MAGIC)
    if start < 0 or len(head) < start + 8:
        return None
    major, minor, revision = head[start + 5:start + 8]
    return major, minor, revision


def _inspect_plain(path: Path, readable: Path, wrapper: str | None,
                   extra_bins: Sequence[Path]) -> Dump:
    header: dict[str, str] = {}
    counts: Counter[str] = Counter()
    owners: set[str] = set()
    data: list[tuple[str, str]] = []
    restrict = has_create = False
    with readable.open("r", encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.startswith("--"):
                if match := _PLAIN_HEADER.match(line.rstrip("\n")):
                    header[match.group(1)] = match.group(2)
                elif match := _PLAIN_ENTRY.match(line.rstrip("\n")):
                    name, kind, schema, owner = match.groups()
                    if kind == "TABLE DATA":
                        data.append((schema, name))
                    if kind in _COUNTED:
                        counts[_COUNTED[kind]] += 1
                    if owner and owner != "-":
                        owners.add(owner)
            elif line.startswith("\\restrict "):
                restrict = True
            elif line.startswith(("CREATE DATABASE ", "\\connect ")):
                has_create = True
    readers = [tool for tool in pgtools.find_all("psql", extra_bins)
               if not restrict or _knows_restrict(tool)]
    if not readers:
        raise MissingBinary(f"{path} uses \\restrict, which needs a newer psql "
                            "(18, 17.6, 16.10, 15.14 or later).",
                            "Install a newer PostgreSQL client, or pass --pg-bin DIR.")
    return Dump(
        path=path, format="plain", wrapper=wrapper, compression=None, archive_version=None,
        pg_dump_version=header.get("Dumped by pg_dump version"),
        server_version=header.get("Dumped from database version"),
        dbname=None, toc_entries=None,
        counts={name: counts[name] for name in _COUNTED.values()},
        owners=tuple(sorted(owners)), readers=tuple(readers), has_create=has_create,
        plain_data=tuple(data),
    )


def _knows_restrict(tool: Tool) -> bool:
    major, minor = (*tool.version, 0)[:2]
    return major >= 18 or minor >= RESTRICT_SINCE.get(major, 10_000)
