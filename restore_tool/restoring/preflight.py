"""The restore's first step: everything that can be known before writing (the dump and
who reads it, the target and its server, what the dump needs of it), refused in one sentence
naming all that is missing. Nothing is written, unless --scratch creates roles."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import closing
from dataclasses import replace
from pathlib import Path

from psycopg import sql

from .. import db, pgtools, workdir
from ..conninfo import dbname
from ..errors import BadInput
from ..pgtools import Tool
from ..pipeline import Outcome, Status
from . import archive, leftovers, load, needs, sources
from .archive import Dump
from .script import pieces
from .state import Run, maintenance


def preflight(state: Run) -> Outcome:
    """Everything that can be known before writing: the hook files, the target (first: a
    target that cannot be restored into is refused before a live source is dumped or a
    download fetched), the dump and who reads it, the roles the dump needs. Nothing is
    written here but the run's own copy of a piped, downloaded or dumped source."""
    options = state.options
    for script in options.post_sql:
        if not script.is_file():
            raise BadInput(f"--post-sql {script} does not exist.")
    state.target = dbname(state.info)
    with maintenance(state) as conn:
        state.server = load.Server(
            conn.info.server_version // 10000,
            frozenset(row[0] for row in conn.execute("SELECT name FROM pg_settings")))
        state.target_existed = db.database_exists(conn, state.target)
        has = db.server_has(conn)
        read_only = db.why_read_only(conn)
        dead, copies = leftovers.dead(conn, state.target), leftovers.old_copies(conn, state.target)
    if read_only is None and state.target_existed and not options.replace:
        with closing(db.connect(state.info)) as conn:  # the load writes in the target itself
            read_only = db.why_read_only(conn)
    if read_only:
        raise BadInput(f"Nothing can be restored: {read_only}.", "Restore into the primary."
                       if "standby" in read_only else "Restore as a role whose sessions may "
                       "write, or RESET default_transaction_read_only where it is set (ALTER "
                       "ROLE or ALTER DATABASE).")
    folders = workdir.dead(options.work_dir)
    if folders:
        state.facts_given.append(("Left on this machine", "; ".join(map(str, folders)) +
                                  ": `restore-tool cleanup` stops and removes them"))
    if dead:
        state.facts_given.append(("Leftovers", "; ".join(map(str, dead)) + ": `restore-tool "
                                  "cleanup` drops them"))
    if copies:
        state.facts_given.append(("Old copies", f"{len(copies)} of {state.target} kept, newest "
                                  f"{copies[0][0]}: `restore-tool cleanup --keep N` drops all "
                                  "but the newest N"))
    held = db.user_objects(state.info) if state.target_existed and not options.replace else []
    if held:
        raise BadInput(f'Database "{state.target}" is not empty (it holds '
                       f"{', '.join(f'{n} {kind}' for kind, n in held)}); restore-tool will not "
                       "restore over it.", "Use --replace to restore next to it and swap it "
                       "in when everything passed (the old one is kept under a dated name).")
    state.path, named = sources.local(state.source, state.work, jobs=state.jobs,
                                      progress=state.progress, pg_bin=options.pg_bin)
    dump, readable = state.stack.enter_context(
        archive.opened(state.path, state.work, options.pg_bin))
    state.dump, state.readable = dump, readable
    for pattern in options.exclude_table_data:
        if not any(load.excluded([pattern], *table) for table in dump.data_of):
            raise BadInput(f"--exclude-table-data {pattern} matches no table whose rows the "
                           "dump holds: nothing was changed.", "Patterns match table names "
                           "(audit_*) or schema.table (billing.*), case-sensitive.")
    if dump.has_create:
        raise BadInput(f"{state.path} was dumped with --create: it would restore into its own "
                       "database, not the target.", "Dump it again without --create.")
    major = state.server.major
    choices = {"loader": pgtools.choose(dump.readers, major),
               "psql": pgtools.chosen("psql", major, options.pg_bin)}
    if options.analyze:
        choices["vacuumdb"] = pgtools.chosen("vacuumdb", major, options.pg_bin)
    state.tools = {role: choice.tool for role, choice in choices.items()}
    loader = state.tools["loader"]
    _read_needs(state, loader)
    created = _create_roles(state, has) if options.create_roles else []
    _check_needs(state, replace(has, roles=has.roles | set(created)))
    if not has.superuser:
        state.superuser_only = state.needs.superuser_only(has.untrusted_languages)
    state.facts = [
        ("Dump", f"{named} ({dump.describe()})"),
        ("Tools", _tools_fact(choices["loader"], state.tools.values(), bool(options.pg_bin))),
        *state.facts_given,
    ]
    summary = (f"{dump.format} dump, {dump.counts.get('tables', 0)} tables; "
               f"{loader.name} {loader.version_text} into PostgreSQL {major}") + (
        f"; created the roles it needs (NOLOGIN): {', '.join(created)}" if created else "") + (
        f"; leaves out what only a superuser may create, as the role is not one: "
        f"{', '.join(map(str, state.superuser_only))}" if state.superuser_only else "")
    return Outcome(Status.PASSED, summary)


def _read_needs(state: Run, loader: Tool) -> None:
    assert state.dump is not None and state.readable is not None
    state.needs, properties = read_needs(state.dump, state.readable, loader)
    if properties is not None:
        state.properties = properties.without_tablespace() if state.options.no_tablespaces \
            else properties


def read_needs(dump: Dump, readable: Path, loader: Tool
               ) -> tuple[needs.Needs, load.DatabaseProperties | None]:
    """What the dump needs of the server, and (archives) the database's properties, from its
    schema script: the archive's, written by pg_restore, or the plain script itself."""
    if dump.format == "plain":
        with readable.open("rb") as handle:
            return needs.read(pieces(handle)), None
    output = pgtools.run(pgtools.pg_restore_database_cmd(loader, readable))
    schema = output.encode().splitlines(keepends=True)
    return needs.read(pieces(schema)), load.database_properties(schema)


def _create_roles(state: Run, has: db.ServerHas) -> list[str]:
    """--scratch: the roles the dump's objects and grants name, created NOLOGIN in the
    throwaway cluster, so that owners and grants restore as they are."""
    assert state.dump is not None
    wanted = sorted((set(state.dump.owners) | state.needs.grantees) - has.roles)
    with maintenance(state) as conn:
        for role in wanted:
            conn.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(sql.Identifier(role)))
    return wanted


def _check_needs(state: Run, has: db.ServerHas) -> None:
    """Refuse, naming them all, the roles, tablespaces and extensions the dump needs and the
    server lacks (each with the flag that does without it)."""
    assert state.dump is not None
    options, wanted = state.options, state.needs
    problems, hints = [], []
    owners = [] if options.no_owner else sorted(set(state.dump.owners) - has.roles)
    grantees = [] if options.no_privileges else sorted(wanted.grantees - has.roles)
    if owners:
        problems.append(f"The dump's objects belong to roles this server does not have: "
                        f"{', '.join(owners)}.")
        hints.append("use --no-owner to make the restoring role own everything")
    if grantees:
        problems.append(f"Its grants name roles this server does not have: "
                        f"{', '.join(grantees)}.")
        hints.append("use --no-privileges to leave the grants out")
    tablespaces = [] if options.no_tablespaces else sorted(wanted.tablespaces - has.tablespaces)
    if tablespaces:
        problems.append(f"It uses tablespaces this server does not have: "
                        f"{', '.join(tablespaces)}.")
        hints.append("use --no-tablespaces to put everything in the default one")
    if extensions := sorted(wanted.extensions - has.extensions):
        problems.append(f"It needs extensions this server cannot install: "
                        f"{', '.join(extensions)} (not in pg_available_extensions).")
        hints.append("install them on the server (or ask your provider which it offers)")
    if problems:
        hint = "; ".join(hints)
        raise BadInput(" ".join(problems), f"Create what is missing, or {hint}."
                       if owners or grantees or tablespaces else hint[0].upper() + hint[1:] + ".")


def _tools_fact(loader: pgtools.Choice, tools: Iterable[Tool], pinned: bool) -> str:
    """`pg_restore 16.14, psql 16.14 (from /usr/lib/postgresql/16/bin): the server's major`,
    a folder named once, and why the loader was chosen."""
    by_dir: dict[Path, list[str]] = {}
    for tool in dict.fromkeys(tools):
        by_dir.setdefault(tool.path.parent, []).append(
            f"{tool.name} {tool.version_text}")
    why = "pinned by --pg-bin" if pinned else loader.reason
    return "; ".join(f"{', '.join(names)} (from {folder})"
                     for folder, names in by_dir.items()) + f"; {loader.tool.name}: {why}"
