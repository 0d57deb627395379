"""What one restore is asked (Options, the CLI's flags) and what its steps learn and share
(Run)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .. import db, smoke
from ..config import Settings
from ..conninfo import maintenance as maintenance_info
from ..conninfo import with_dbname
from ..pgtools import Tool
from ..pipeline import Progress, StepName
from . import load
from .archive import Dump
from .needs import Entry, Needs

if TYPE_CHECKING:
    from ..proof.tally import Reader


@dataclass(frozen=True)
class Options:
    """What the user asked of a restore (the CLI's flags). Which of them go together is
    checked by `commands.restore`."""

    replace: bool = False  # restore next to the target and swap it in when all passed
    drop_old: bool = False  # drop the replaced database instead of keeping it renamed
    jobs: int | None = None  # pg_restore -j, vacuumdb -j, sequence connections
    no_owner: bool = False
    no_privileges: bool = False  # leave out GRANT/REVOKE (roles the target lacks)
    no_tablespaces: bool = False
    server_locale: bool = False  # create with the server's encoding and locale, not the dump's
    with_subscriptions: bool = False  # restore subscriptions, disabled and without a slot
    create_roles: bool = False  # --scratch: create the roles the dump needs (NOLOGIN)
    migrate: str | None = None  # e.g. "alembic upgrade head", with DATABASE_URL set
    post_sql: tuple[Path, ...] = ()
    analyze: bool = True
    wait_connections: float | None = None  # seconds for sessions to leave; None: end them
    lock_wait: float = 30.0  # seconds the swap waits for locks on the target
    work_dir: Path | None = None  # where an unwrapped dump goes (default the temp directory)
    pg_bin: tuple[Path, ...] = ()
    # tables whose rows are left out (they are created, empty): `audit_*`, `billing.secrets`
    exclude_table_data: tuple[str, ...] = ()
    proof: bool = True  # prove the load complete against the dump before anything else


@dataclass
class Run:
    """What the steps of one restore learn and share."""

    settings: Settings
    source: Path | str  # as given: a path, -, an http(s):// or postgresql:// URL
    options: Options
    smoke: smoke.Plan | None  # None: --no-smoke
    progress: Progress | None
    work: Path
    stack: ExitStack
    path: Path = Path()  # the dump as a local file or folder (preflight makes it one)
    info: str = ""  # the target's conninfo
    target: str = ""  # its database name
    target_existed: bool | None = None  # None: not known yet (preflight had not asked)
    server: load.Server = field(default_factory=lambda: load.Server(0, frozenset()))
    dump: Dump | None = None
    readable: Path | None = None
    properties: load.DatabaseProperties = field(default_factory=load.DatabaseProperties)
    needs: Needs = field(default_factory=Needs)
    superuser_only: tuple[Entry, ...] = ()  # left out: the role is not superuser
    into: str = ""  # the database being loaded: the target itself, or a scratch one
    created_oid: int | None = None  # we created `into` (this OID): drop it if anything fails
    swapped: bool = False  # the swap committed: `into` is the target
    old: str | None = None  # the target's new name after a swap
    current: StepName = StepName.PREFLIGHT  # the step running
    discarded: str | None = None  # what cleaning up after a failure left, once done
    tools: dict[str, Tool] = field(default_factory=dict)
    reading: Reader | None = None  # the proof's pass over the dump, alongside the load
    facts_given: list[tuple[str, str]] = field(default_factory=list)  # e.g. the config file
    facts: list[tuple[str, str]] = field(default_factory=list)

    @property
    def jobs(self) -> int:
        return self.options.jobs or db.default_jobs()

    @property
    def into_info(self) -> str:
        return with_dbname(self.info, self.into)


@contextmanager
def maintenance(state: Run) -> Iterator[db.Connection]:
    with closing(db.connect(maintenance_info(state.info))) as conn:
        yield conn
