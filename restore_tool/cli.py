"""The command line: parse options, build Settings, call the core, render, exit with its code.
Every RestoreToolError is turned into one sentence and an exit code here, and only here."""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Annotated, NoReturn

import typer
from psycopg.conninfo import make_conninfo

from . import config, db, embedded, pgtools, pipeline, progress, report, restore, smoke
from .errors import ConfigError, ExitCode, RestoreToolError

app = typer.Typer(
    help="Safe, boring PostgreSQL restores: repair sequences, verify, and more.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
embedded_app = typer.Typer(help="The embedded PostgreSQL server used when no target is set.",
                           no_args_is_help=True)
app.add_typer(embedded_app, name="embedded")

DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", help="Target database URL (beats DATABASE_URL, POSTGRES_*, PG*, .env).",
    show_default=False)]
EnvFile = Annotated[Path | None, typer.Option(
    "--env-file", help="Read settings from this file instead of ./.env.", show_default=False)]
Embedded = Annotated[bool, typer.Option(
    "--embedded", help="Use the embedded server in ./.restore-tool whatever is configured.")]
Json = Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout.")]
Debug = Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")]
Schemas = Annotated[list[str] | None, typer.Option(
    "--schema", help="Only sequences feeding tables in (or living in) this schema; repeatable.",
    show_default=False)]
Jobs = Annotated[int | None, typer.Option(
    "--jobs", "-j", min=1, max=64, show_default="the CPU count, at most 8",
    help="Connections to spread the per-table work over.")]


ConfigFile = Annotated[Path | None, typer.Option(
    "--config", help="Read [[smoke]] rows and settings from this file instead of "
    "./restore-tool.toml.", show_default=False)]
NoSmoke = Annotated[bool, typer.Option(
    "--no-smoke", help="Skip the smoke test (the rolled-back inserts).")]
NoAutoSmoke = Annotated[bool, typer.Option(
    "--no-auto-smoke", help="Smoke-test only the [[smoke]] rows of the config file, no "
    "automatic row per table.")]


Confirm = Annotated[str | None, typer.Option(
    "--confirm", metavar="DBNAME", help="Required to change a protected target (see "
    "`protected` in restore-tool.toml, RESTORE_TOOL_PROTECTED): its database name.",
    show_default=False)]


def _smoke_plan(project: config.Project, no_smoke: bool, no_auto_smoke: bool
                ) -> smoke.Plan | None:
    """The smoke plan from restore-tool.toml and the flags."""
    if no_smoke:
        return None
    return smoke.Plan(rows=project.smoke_rows,
                      automatic=project.automatic_smoke and not no_auto_smoke,
                      timeout=project.smoke_timeout)


def _facts(project: config.Project) -> list[tuple[str, str]]:
    return [("Config", str(project.path))] if project.path else []


def _check_protected(settings: config.Settings, project: config.Project,
                     confirm: str | None) -> None:
    """A target matching a protected pattern is only changed with --confirm DBNAME."""
    info = settings.conninfo or make_conninfo(dbname=config.EMBEDDED_DATABASE)
    pattern = config.protected_by(info, project)
    if pattern is None:
        return
    name = db.dbname(info)
    if confirm != name:
        raise ConfigError(f'Database "{name}" is protected (it matches "{pattern}"): '
                          f"nothing was changed.", f"Pass --confirm {name} to go ahead.")


def _settings(database_url: str | None, env_file: Path | None, use_embedded: bool
              ) -> config.Settings:
    return config.resolve(database_url=database_url, env_file=env_file, embedded=use_embedded)


def _on_sigterm(_signum: int, _frame: FrameType | None) -> None:
    """SIGTERM (CI, systemd, kill) unwinds like Ctrl-C: children stopped, scratch dropped."""
    raise KeyboardInterrupt("SIGTERM")


def _guarded(debug: bool, body: Callable[[], int]) -> NoReturn:
    """Run a command body; translate our errors, Ctrl-C and SIGTERM into a sentence and an
    exit code."""
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread (embedded use): leave signals alone
        previous = None
    try:
        code = body()
    except RestoreToolError as error:
        if debug:
            raise
        typer.echo(f"error: {error.message}", err=True)
        if error.hint:
            typer.echo(f"hint: {error.hint}", err=True)
        raise typer.Exit(int(error.exit_code)) from None
    except KeyboardInterrupt as interrupt:
        name = interrupt.args[0] if interrupt.args else "SIGINT"
        typer.echo(f"error: interrupted ({name}).", err=True)
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(code)


def _emit(result: pipeline.Report, as_json: bool) -> int:
    typer.echo(report.to_json(result) if as_json else report.render(result), nl=False)
    return int(result.exit_code)


@app.command("fix-sequences")
def fix_sequences(
    schema: Schemas = None,
    exact: Annotated[bool, typer.Option(
        "--exact", help="Also move sequences that are ahead of their data back to its edge "
        "(reuses ids: only for databases nothing else writes to).")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Show what would change; call no setval.")] = False,
    lock: Annotated[bool, typer.Option(
        "--lock", help="Hold writers off each table (SHARE ROW EXCLUSIVE, with a lock "
        "timeout) while its sequence is moved: for databases in use.")] = False,
    jobs: Jobs = None,
    config_file: ConfigFile = None,
    confirm: Confirm = None,
    database_url: DatabaseUrl = None,
    env_file: EnvFile = None,
    use_embedded: Embedded = False,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Move every sequence that lags its data just past it (forward only)."""

    def body() -> int:
        settings = _settings(database_url, env_file, use_embedded)
        project = config.load_project(config_file)
        if not dry_run:
            _check_protected(settings, project, confirm)
        result = pipeline.fix_sequences(settings, schemas=schema or (), exact=exact,
                                        dry_run=dry_run, jobs=jobs, lock=lock)
        return _emit(result, as_json)

    _guarded(debug, body)


@app.command()
def verify(
    schema: Schemas = None,
    jobs: Jobs = None,
    config_file: ConfigFile = None,
    no_smoke: NoSmoke = False,
    no_auto_smoke: NoAutoSmoke = False,
    database_url: DatabaseUrl = None,
    env_file: EnvFile = None,
    use_embedded: Embedded = False,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Health check for deploys: exit 0 when no sequence lags its data and a rolled-back
    insert into every table works, 1 when not. Changes no data."""

    def body() -> int:
        settings = _settings(database_url, env_file, use_embedded)
        project = config.load_project(config_file)
        return _emit(pipeline.verify(settings, schemas=schema or (), jobs=jobs,
                                     smoke_plan=_smoke_plan(project, no_smoke, no_auto_smoke),
                                     facts=_facts(project)), as_json)

    _guarded(debug, body)


PgBin = Annotated[list[Path] | None, typer.Option(
    "--pg-bin", help="Also look for pg_restore, psql and vacuumdb here; repeatable.",
    show_default=False)]


@app.command("inspect")
def inspect_dump(
    dump: Annotated[Path, typer.Argument(help="Dump file or directory.", show_default=False)],
    pg_bin: PgBin = None,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """What is in a dump, and which pg_restore (or psql) here can read it."""

    def body() -> int:
        found = restore.inspect(dump, pg_bin or ())
        typer.echo(report.dump_json(found) if as_json else report.render_dump(found), nl=False)
        return 0

    _guarded(debug, body)


@app.command("restore")
def restore_dump(
    dump: Annotated[Path, typer.Argument(help="Dump file or directory.", show_default=False)],
    replace: Annotated[bool, typer.Option(
        "--replace", help="Restore next to a target that has data and swap it in when every "
        "step passed (the old one is kept under a dated name).")] = False,
    drop_old: Annotated[bool, typer.Option(
        "--drop-old", help="With --replace: drop the old database after the swap.")] = False,
    jobs: Jobs = None,
    no_owner: Annotated[bool, typer.Option(
        "--no-owner", help="Make the restoring role own everything (for dumps whose roles "
        "do not exist here).")] = False,
    migrate: Annotated[str | None, typer.Option(
        "--migrate", help="Command to run on the restored database before any swap, with "
        "DATABASE_URL set (e.g. \"alembic upgrade head\").", show_default=False)] = None,
    post_sql: Annotated[list[Path] | None, typer.Option(
        "--post-sql", help="SQL file to run on the restored database before any swap (one "
        "transaction each); repeatable.", show_default=False)] = None,
    no_analyze: Annotated[bool, typer.Option(
        "--no-analyze", help="Skip the ANALYZE pass.")] = False,
    config_file: ConfigFile = None,
    no_smoke: NoSmoke = False,
    no_auto_smoke: NoAutoSmoke = False,
    wait_connections: Annotated[float | None, typer.Option(
        "--wait-connections", metavar="SECONDS", min=0, help="With --replace: wait this "
        "long for sessions on the old database to leave instead of ending them.",
        show_default=False)] = None,
    scratch: Annotated[bool, typer.Option(
        "--scratch", help="Restore into a temporary embedded PostgreSQL, run every step, "
        "delete it: is this backup restorable? (implies --no-owner)")] = False,
    confirm: Confirm = None,
    report_file: Annotated[Path | None, typer.Option(
        "--report", help="Also write the checklist as Markdown to this file.",
        show_default=False)] = None,
    pg_bin: PgBin = None,
    database_url: DatabaseUrl = None,
    env_file: EnvFile = None,
    use_embedded: Embedded = False,
    as_json: Json = False,
    debug: Debug = False,
) -> None:
    """Restore a dump: load, repair sequences, analyze, smoke-test, verify, and print the
    checklist."""

    def body() -> int:
        if drop_old and not replace:
            raise ConfigError("--drop-old only makes sense with --replace.")
        if wait_connections is not None and not replace:
            raise ConfigError("--wait-connections only makes sense with --replace.")
        project = config.load_project(config_file)
        options = restore.Options(
            replace=replace, drop_old=drop_old, jobs=jobs, no_owner=no_owner or scratch,
            migrate=migrate, post_sql=tuple(post_sql or ()), analyze=not no_analyze,
            smoke=_smoke_plan(project, no_smoke, no_auto_smoke),
            wait_connections=wait_connections, pg_bin=tuple(pg_bin or ()),
            facts=tuple(_facts(project)))
        with progress.reporter() as show:
            if scratch:
                if database_url or use_embedded or replace:
                    raise ConfigError("--scratch restores into a temporary server of its "
                                      "own: it takes no target and no --replace.")
                result = restore.run_scratch(dump, options, show)
            else:
                settings = _settings(database_url, env_file, use_embedded)
                _check_protected(settings, project, confirm)
                result = restore.run(settings, dump, options, show)
        code = _emit(result, as_json)
        if report_file is not None:
            try:
                report_file.write_text(report.to_markdown(result), encoding="utf-8")
            except OSError as error:
                typer.echo(f"error: the report could not be written to {report_file}: "
                           f"{error.strerror or error}.", err=True)
                return code or int(ExitCode.USAGE)
        return code

    _guarded(debug, body)


@app.command()
def url(
    database_url: DatabaseUrl = None,
    env_file: EnvFile = None,
    use_embedded: Embedded = False,
    debug: Debug = False,
) -> None:
    """Print the target's URL (password masked); for the embedded server, start it first."""

    def body() -> int:
        settings = _settings(database_url, env_file, use_embedded)
        typer.echo(config.mask(db.conninfo(settings)))
        typer.echo(f"(from {settings.origin})", err=True)
        return 0

    _guarded(debug, body)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def psql(
    ctx: typer.Context,
    database_url: DatabaseUrl = None,
    env_file: EnvFile = None,
    use_embedded: Embedded = False,
    debug: Debug = False,
) -> None:
    """Open psql on the target (extra arguments go to psql, e.g. `-- -c 'select 1'`)."""

    def body() -> int:
        settings = _settings(database_url, env_file, use_embedded)
        info = db.conninfo(settings)
        typer.echo(f"Connecting to {config.mask(info)} (from {settings.origin})", err=True)
        conninfo, env = pgtools.child_env(info)
        argv = pgtools.psql_cmd(pgtools.find("psql"), conninfo, ctx.args)
        pgtools.run(argv, env, foreground=True)
        return 0

    _guarded(debug, body)


@embedded_app.command("status")
def embedded_status() -> None:
    """Say whether the embedded server in ./.restore-tool runs."""
    directory = config.resolve(embedded=True).embedded_dir
    running = embedded.is_running(directory)
    typer.echo(f"The embedded server in {directory} is {'running' if running else 'stopped'}.")


@embedded_app.command("stop")
def embedded_stop(debug: Debug = False) -> None:
    """Stop the embedded server in ./.restore-tool (its data is kept)."""

    def body() -> int:
        directory = config.resolve(embedded=True).embedded_dir
        stopped = embedded.stop(directory)
        typer.echo(f"Stopped the embedded server in {directory}." if stopped
                   else f"The embedded server in {directory} was not running.")
        return 0

    _guarded(debug, body)


def main() -> None:
    app()
