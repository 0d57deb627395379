"""`restore-tool verify --against SOURCE`: the proof of a database already restored, against a
dump (any source `restore` reads but a live one: a file, a folder, -, an http(s):// URL) or a
live postgresql:// database, which is only read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import closing
from pathlib import Path

from .. import db, proof
from ..config import checked_url
from ..conninfo import mask
from ..db import Connection
from ..errors import BadInput, DamagedDump
from ..pipeline import Outcome, Status
from . import archive, load, sources, work_directory
from .preflight import read_needs


def prove(conn: Connection, against: Path | str, *, jobs: int = 1,
          connect: Callable[[], Connection] | None = None, hashes: bool = False,
          exclude_table_data: Sequence[str] = (), pg_bin: Sequence[Path] = (),
          work_dir: Path | None = None) -> Outcome:
    """The database on `conn` against `against`: exit 1 for each difference, 0 when none.
    Tables whose rows `exclude_table_data` names are not counted (a staging refresh that left
    them out)."""
    if sources.is_database(against):
        info = checked_url(str(against), "--against")
        with closing(db.connect(info, read_only=True)) as source:
            return proof.against_source(conn, source, jobs=jobs, connect=connect,
                                        hashes=hashes, left_out=lambda schema, table:
                                        load.excluded(exclude_table_data, schema, table),
                                        what=f"the source {mask(info)}")
    if hashes:
        raise BadInput("--hashes compares contents with a live source (--against "
                       "postgresql://…); against a dump the rows are counted.")

    with work_directory(work_dir) as work:
        local, named = sources.local(against, work, live=False, jobs=jobs, pg_bin=pg_bin)
        archive.wrapper_of(local)  # missing, empty, not a dump: bad input, exit 2
        if not archive.is_dump(local):
            raise BadInput(f"{named} is not a PostgreSQL dump (neither an archive made by "
                           "pg_dump nor SQL text).")
        try:
            with archive.opened(local, work, pg_bin) as (dump, readable):
                if dump.format == "plain" and dump.pg_dump_version is None:
                    raise BadInput(f"{named} is an SQL script not written by pg_dump: it names "
                                   "no entries to prove the database against.")
                skip = _left_out(conn, dump, readable, exclude_table_data)
                tally = proof.tally.plain(readable, skip) if dump.format == "plain" else \
                    proof.tally.archive(dump.reader, readable, skip=skip)
        except DamagedDump as damaged:
            return proof.outcome([proof.Check("archive integrity", Status.FAILED,
                                              "does not read", (damaged.message,))],
                                 f"the dump {named}")
    return proof.against_dump(conn, tally, jobs=jobs, connect=connect,
                              what=f"the dump {named}")


def _left_out(conn: Connection, dump: archive.Dump, readable: Path,
              exclude_table_data: Sequence[str]) -> proof.tally.Skip:
    """What a restore by this role left out on purpose, so not expected: the rows of the
    tables `exclude_table_data` names, and, for a role that is not superuser (a managed
    server's), what only a superuser may create (as restore's preflight finds it)."""
    has = db.server_has(conn)
    special = () if has.superuser else \
        read_needs(dump, readable, dump.reader)[0].superuser_only(has.untrusted_languages)
    return load.Leave(superuser_only=special,
                      exclude_data=tuple(exclude_table_data)).leaves_out
