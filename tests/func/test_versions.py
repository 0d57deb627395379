"""Restores across versions that must fail, be left out or be carried over, each on the
smallest dump that shows it: a function declared SET transaction_timeout into PostgreSQL 15,
pg_dump 18 --statistics into 15, a plain dump into an older server with --no-owner and
--no-privileges, a LATIN1 database, a tar holding a directory dump, --pg-bin pinning, a
setting the server does not know, a read-only source database, a server speaking German."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from restore_tool import commands, report
from restore_tool.errors import MissingBinary
from restore_tool.pipeline import Report, Status, StepResult
from tests.conftest import Servers
from tests.helpers import databases, dbname, execute, password_url, row_counts, scalar, settings
from tests.servers import NewDatabases, Server, bin_dir, cluster


def _pg_dump(version: str, source: str, out: Path, *args: str) -> Path:
    binaries = bin_dir(version)
    assert binaries is not None
    subprocess.run([str(binaries / "pg_dump"), *args, "--file", str(out), "--dbname", source],
                   check=True, capture_output=True)
    return out


def _step(result: Report, name: str) -> StepResult:
    return next(s for s in result.steps if s.name == name)


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_a_function_with_a_set_clause_the_server_lacks_fails_the_load(
        servers: Servers, new_database: NewDatabases, tmp_path: Path, fmt: str) -> None:
    source = new_database("rt_fn_src")
    execute(source, "CREATE FUNCTION bounded() RETURNS int LANGUAGE sql "
                    "SET transaction_timeout = '5s' AS 'SELECT 1'")
    dump = _pg_dump("18", source, tmp_path / f"fn.{fmt}", f"--format={fmt}")
    made = NewDatabases(servers["15"])
    try:
        result = commands.restore(settings(made("rt_fn", create=False), tmp_path), dump)
        load = _step(result, "load")
        assert result.exit_code == 1 and load.status is Status.FAILED
        assert "transaction_timeout" in load.summary
    finally:
        made.drop_all()


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_statistics_are_left_out_for_servers_before_18(
        servers: Servers, new_database: NewDatabases, tmp_path: Path, fmt: str) -> None:
    source = new_database("rt_stats_src")
    execute(source, "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 50); "
                    "ANALYZE t")
    dump = _pg_dump("18", source, tmp_path / f"stats.{fmt}", f"--format={fmt}", "--statistics")
    made = NewDatabases(servers["15"])
    try:
        target = made("rt_stats", create=False)
        result = commands.restore(settings(target, tmp_path), dump)
        assert result.exit_code == 0, report.render(result)
        assert "statistics entr" in _step(result, "load").summary
        assert row_counts(target) == {"t": 50}
    finally:
        made.drop_all()


def test_plain_no_owner_and_no_privileges_into_an_older_server(
        servers: Servers, new_database: NewDatabases, tmp_path: Path) -> None:
    role, reader = "rt_plain_owner", "rt_plain_reader"
    execute(servers.main.conninfo, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role}; "
                                   f"DROP ROLE IF EXISTS {reader}; CREATE ROLE {reader}")
    source = new_database("rt_owned_src")
    try:
        execute(source, f"CREATE TABLE menu (note text); ALTER TABLE menu OWNER TO {role}; "
                        f"GRANT SELECT ON menu TO {reader}; "
                        "INSERT INTO menu VALUES ('SET menu for Friday')")
        dump = _pg_dump("18", source, tmp_path / "owned.sql", "--format=plain")
    finally:
        execute(source, f"DROP OWNED BY {role}, {reader}")
        execute(servers.main.conninfo, f"DROP ROLE {role}; DROP ROLE {reader}")
    made = NewDatabases(servers["15"])
    try:
        target = made("rt_owned", create=False)
        refused = commands.restore(settings(target, tmp_path), dump)
        assert refused.exit_code == 2 and "--no-owner" in refused.steps[0].summary
        result = commands.restore(settings(target, tmp_path), dump,
                                  commands.Options(no_owner=True, no_privileges=True))
        assert result.exit_code == 0, report.render(result)
        summary = _step(result, "load").summary
        assert "1 ownership statements (--no-owner)" in summary
        assert "1 privilege statements (--no-privileges)" in summary
        assert scalar(target, "SELECT note FROM menu") == "SET menu for Friday"
    finally:
        made.drop_all()


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_a_latin1_database_keeps_its_encoding_and_text(
        servers: Servers, tmp_path: Path, fmt: str) -> None:
    source_server = servers["15"]
    made = NewDatabases(source_server)
    try:
        source = made("rt_latin1_src", create=False)
        execute(source_server.conninfo, f"CREATE DATABASE {dbname(source)} TEMPLATE template0 "
                                        "ENCODING 'LATIN1' LOCALE 'C'")
        execute(source, "CREATE TABLE town (name text); INSERT INTO town VALUES ('Besançon'), "
                        "('Châlons'), ('Zürich')")
        dump = _pg_dump("15", source, tmp_path / f"latin1.{fmt}", f"--format={fmt}",
                        "--encoding=LATIN1")
        assert b"Besan\xe7on" in dump.read_bytes() or fmt != "plain"  # LATIN1 bytes, not UTF-8
        target = made("rt_latin1", create=False)
        result = commands.restore(settings(target, tmp_path), dump)
        assert result.exit_code == 0, report.render(result)
        assert scalar(target, "SELECT string_agg(name, ',' ORDER BY name) FROM town") \
            == "Besançon,Châlons,Zürich"
        if fmt == "custom":  # an archive carries its database's encoding
            assert scalar(target, "SELECT pg_encoding_to_char(encoding) FROM pg_database "
                                  "WHERE datname = current_database()") == "LATIN1"
    finally:
        made.drop_all()


def test_a_locale_the_server_cannot_make_is_one_sentence_and_server_locale_restores(
        servers: Servers, new_database: NewDatabases, tmp_path: Path) -> None:
    source = new_database("rt_builtin_src", create=False)
    execute(servers.main.conninfo, f"CREATE DATABASE {dbname(source)} TEMPLATE template0 "
                                   "LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'")
    execute(source, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    dump = _pg_dump("18", source, tmp_path / "builtin.dump", "--format=custom")
    made = NewDatabases(servers["15"])
    try:
        target = made("rt_builtin", create=False)
        refused = commands.restore(settings(target, tmp_path), dump)
        assert refused.exit_code == 2, report.render(refused)
        assert "cannot create a database as the dump's" in _step(refused, "load").summary
        assert "--server-locale" in report.render(refused)
        done = commands.restore(settings(target, tmp_path), dump,
                                commands.Options(server_locale=True))
        assert done.exit_code == 0, report.render(done)
        assert row_counts(target) == {"t": 1}
    finally:
        made.drop_all()


@pytest.mark.parametrize("container", ["tar", "zip"])
def test_a_tar_or_zip_holding_a_directory_dump_restores(
        new_database: NewDatabases, tmp_path: Path, container: str) -> None:
    source = new_database("rt_dir_src")
    execute(source, "CREATE TABLE film (id serial PRIMARY KEY, title text); "
                    "INSERT INTO film (id, title) VALUES (1, 'a'), (2, 'b')")
    folder = _pg_dump("18", source, tmp_path / "dvdrental", "--format=directory")
    packed = tmp_path / f"dvdrental.{container}"
    if container == "tar":
        with tarfile.open(packed, "w") as archive:
            archive.add(folder, arcname="dvdrental")
    else:
        with zipfile.ZipFile(packed, "w") as archive:
            for path in sorted(folder.rglob("*")):
                archive.write(path, f"dvdrental/{path.relative_to(folder)}")
    assert commands.inspect(packed).format == "directory"
    target = new_database("rt_dir", create=False)
    result = commands.restore(settings(target, tmp_path), packed)
    assert result.exit_code == 0, report.render(result)
    assert row_counts(target) == {"film": 2}


def test_pg_bin_pins_the_client_tools(new_database: NewDatabases, tmp_path: Path) -> None:
    source = new_database("rt_pin_src")
    execute(source, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
    dump = _pg_dump("18", source, tmp_path / "pin.dump", "--format=custom")
    old = bin_dir("15")
    if old is None:
        pytest.skip("needs PostgreSQL 15 client tools")
    with pytest.raises(MissingBinary, match="needs pg_restore 17 or newer; the newest found "
                                            "here is 15"):
        commands.inspect(dump, [old])
    target = new_database("rt_pin", create=False)
    embedded = bin_dir("18")
    assert embedded is not None
    result = commands.restore(settings(target, tmp_path), dump,
                              commands.Options(pg_bin=(embedded,)))
    assert result.exit_code == 0, report.render(result)
    assert "pinned by --pg-bin" in dict(result.facts)["Tools"]


def test_an_unknown_database_setting_is_skipped_and_read_only_sources_restore(
        servers: Servers, tmp_path: Path) -> None:
    """From PostgreSQL 15, whose database sets force_parallel_mode (renamed in 16) and
    default_transaction_read_only, into 18: every step runs, the setting is named."""
    made = NewDatabases(servers["15"])
    try:
        source = made("rt_settings_src")
        execute(source, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (5)")
        execute(source, f"ALTER DATABASE {dbname(source)} SET force_parallel_mode = off; "
                        f"ALTER DATABASE {dbname(source)} SET default_transaction_read_only = on")
        dump = _pg_dump("15", source, tmp_path / "settings.dump", "--format=custom")
    finally:
        made.drop_all()
    targets = NewDatabases(servers.main)
    try:
        target = targets("rt_settings", create=False)
        result = commands.restore(settings(target, tmp_path), dump)
        assert result.exit_code == 0, report.render(result)
        step = _step(result, "database settings")
        assert step.status is Status.WARNING
        assert "skipped force_parallel_mode (unknown to PostgreSQL 18)" in step.summary
        assert scalar(target, "SHOW default_transaction_read_only") == "on"
    finally:
        targets.drop_all()


@pytest.fixture(scope="module")
def german_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Path]]:
    """A PostgreSQL 15 whose messages are German (lc_messages = 'de_DE.UTF-8', the locale
    built with localedef into a LOCPATH), and that LOCPATH for clients; skipped where the
    locale or the translations cannot be had."""
    binaries = bin_dir("15")
    base = tmp_path_factory.mktemp("pg15de")
    locales = base / "locales"
    if binaries is None or not Path("/usr/share/i18n/locales/de_DE").exists() \
            or not list(Path("/usr/share/locale/de/LC_MESSAGES").glob("postgres-15.mo")):
        pytest.skip("needs PostgreSQL 15 with German messages and the de_DE locale source")
    locales.mkdir()
    subprocess.run(["localedef", "-i", "de_DE", "-f", "UTF-8", str(locales / "de_DE.UTF-8")],
                   check=False, capture_output=True)  # exit 1 with warnings, made all the same
    if not (locales / "de_DE.UTF-8").is_dir():
        pytest.skip("localedef could not build de_DE.UTF-8")
    base.chmod(0o755)
    with cluster(binaries, base, "pg15de", "lc_messages=de_DE.UTF-8",
                 env={"LOCPATH": str(locales)}) as server:
        yield server, locales


def test_a_server_and_clients_speaking_german_are_read_the_same(
        german_server: tuple[Server, Path], new_database: NewDatabases, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's own language for everything (LANG, LANGUAGE, LC_ALL) and a server that
    answers in German: the setting pg_restore sends is still tolerated, and a plain script's
    failure is still caught and named (both read by SQLSTATE or in the client's English)."""
    server, locales = german_server
    for name, value in (("LOCPATH", str(locales)), ("LANG", "de_DE.UTF-8"),
                        ("LC_ALL", "de_DE.UTF-8"), ("LANGUAGE", "de")):
        monkeypatch.setenv(name, value)
    source = new_database("rt_de_src")
    execute(source, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
    archive = _pg_dump("18", source, tmp_path / "de.dump", "--format=custom")
    made = NewDatabases(server)
    try:
        target = made("rt_de", create=False)
        result = commands.restore(settings(target, tmp_path), archive)
        assert result.exit_code == 0, report.render(result)
        load = _step(result, "load")
        assert load.status is Status.WARNING and "tolerated error(s)" in load.summary
        assert row_counts(target) == {"t": 2}

        execute(source, "CREATE FUNCTION bounded() RETURNS int LANGUAGE sql "
                        "SET transaction_timeout = '5s' AS 'SELECT 1'")
        script = _pg_dump("18", source, tmp_path / "de.sql", "--format=plain")
        failed = commands.restore(settings(made("rt_de_fn", create=False), tmp_path), script)
        load = _step(failed, "load")
        assert failed.exit_code == 1 and load.status is Status.FAILED
        assert "»transaction_timeout«" in load.summary, load.summary
    finally:
        made.drop_all()


def test_preflight_names_every_role_tablespace_and_extension_the_server_lacks(
        servers: Servers, new_database: NewDatabases, tmp_path: Path) -> None:
    """An owner, a grantee and a tablespace of the source that PostgreSQL 15 lacks, and (in a
    plain script) an extension it cannot install: one refusal names them all, nothing is
    created; the flags restore it."""
    main = servers.main
    owner, reader = "rt_needs_owner", "rt_needs_reader"
    if main.data_dir is None:
        pytest.skip("needs a server on this machine (a tablespace directory)")
    place = main.data_dir.parent / "rt_fast"  # where the server's user may reach
    place.mkdir()
    shutil.chown(place, main.data_dir.stat().st_uid, main.data_dir.stat().st_gid)
    execute(main.conninfo, f"CREATE ROLE {owner}; CREATE ROLE {reader}")
    execute(main.conninfo, f"CREATE TABLESPACE rt_fast LOCATION '{place}'")
    try:
        source = new_database("rt_needs_src")
        execute(source, f"CREATE TABLE menu (id int) TABLESPACE rt_fast; "
                        f"ALTER TABLE menu OWNER TO {owner}; GRANT SELECT ON menu TO {reader}; "
                        "INSERT INTO menu VALUES (1)")
        archive = _pg_dump("18", source, tmp_path / "needs.dump", "--format=custom")
        script = _pg_dump("18", source, tmp_path / "needs.sql", "--format=plain")
        script.write_text(script.read_text() + "CREATE EXTENSION IF NOT EXISTS rt_no_such;\n")
    finally:
        new_database.drop_all()
        execute(main.conninfo, "DROP TABLESPACE rt_fast")
        place.rmdir()
        execute(main.conninfo, f"DROP ROLE {owner}; DROP ROLE {reader}")
    made = NewDatabases(servers["15"])
    try:
        target = made("rt_needs", create=False)
        for dump in (archive, script):
            refused = commands.restore(settings(target, tmp_path), dump)
            summary = refused.steps[0].summary
            assert refused.exit_code == 2, report.render(refused)
            assert f"belong to roles this server does not have: {owner}." in summary
            assert f"grants name roles this server does not have: {reader}." in summary
            assert "tablespaces this server does not have: rt_fast." in summary
            for flag in ("--no-owner", "--no-privileges", "--no-tablespaces"):
                assert flag in summary
            assert ("extensions this server cannot install: rt_no_such" in summary) \
                == (dump is script)
            assert dbname(target) not in databases(servers["15"], dbname(target))
        done = commands.restore(settings(target, tmp_path), archive, commands.Options(
            no_owner=True, no_privileges=True, no_tablespaces=True))
        assert done.exit_code == 0, report.render(done)
        assert row_counts(target) == {"menu": 1}
    finally:
        made.drop_all()


_SUBSCRIBED = """
CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (1);
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';
CREATE EVENT TRIGGER rt_log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();
COMMENT ON EVENT TRIGGER rt_log_ddl IS 'audit';
CREATE SUBSCRIPTION rt_feed CONNECTION 'host=/nonexistent dbname=shop' PUBLICATION shop
    WITH (connect = false, slot_name = 'rt_feed');
"""


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_subscriptions_are_left_out_or_restored_without_a_slot(
        new_database: NewDatabases, tmp_path: Path, fmt: str) -> None:
    source = new_database("rt_sub_src")
    execute(source, _SUBSCRIBED)
    try:
        dump = _pg_dump("18", source, tmp_path / f"sub.{fmt}", f"--format={fmt}")
    finally:
        execute(source, "ALTER SUBSCRIPTION rt_feed SET (slot_name = NONE); "
                        "DROP SUBSCRIPTION rt_feed")
    plain = new_database("rt_sub", create=False)
    result = commands.restore(settings(plain, tmp_path), dump)
    assert result.exit_code == 0, report.render(result)
    assert " subscription statement(s) (rt_feed: --with-subscriptions" in \
        _step(result, "load").summary
    assert scalar(plain, "SELECT count(*) FROM pg_subscription") == 0
    assert scalar(plain, "SELECT count(*) FROM pg_event_trigger") == 1  # a superuser restored
    subscribed = new_database("rt_sub_with", create=False)
    try:
        result = commands.restore(settings(subscribed, tmp_path), dump,
                                  commands.Options(with_subscriptions=True))
        assert result.exit_code == 0, report.render(result)
        assert "created 1 subscription(s) disabled and without a slot: rt_feed" in \
            _step(result, "load").summary
        assert scalar(subscribed, "SELECT subenabled || ',' || coalesce(subslotname::text, "
                                  "'NONE') FROM pg_subscription WHERE subdbid = (SELECT oid "
                                  "FROM pg_database WHERE datname = current_database())"
                      ) == "false,NONE"
    finally:
        execute(subscribed, "DROP SUBSCRIPTION IF EXISTS rt_feed")  # no slot: drops locally


_SUPERUSER_ONLY = """
CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (1);
CREATE FUNCTION log_ddl() RETURNS event_trigger LANGUAGE plpgsql AS 'BEGIN END';
CREATE EVENT TRIGGER rt_log_ddl ON ddl_command_end EXECUTE FUNCTION log_ddl();
COMMENT ON EVENT TRIGGER rt_log_ddl IS 'audit';
CREATE FUNCTION rt_abs(integer) RETURNS integer LANGUAGE internal AS 'int4abs';
COMMENT ON FUNCTION rt_abs(integer) IS 'C code';
REVOKE ALL ON FUNCTION rt_abs(integer) FROM PUBLIC;
CREATE FUNCTION rt_twice(integer) RETURNS integer LANGUAGE sql AS 'SELECT 2 * $1';
CREATE FOREIGN DATA WRAPPER rt_fdw; COMMENT ON FOREIGN DATA WRAPPER rt_fdw IS 'wraps';
CREATE TEXT SEARCH TEMPLATE rt_template (LEXIZE = dsimple_lexize, INIT = dsimple_init);
CREATE TEXT SEARCH PARSER rt_parser (START = prsd_start, GETTOKEN = prsd_nexttoken,
    END = prsd_end, LEXTYPES = prsd_lextype);
CREATE LANGUAGE rt_lang HANDLER plpgsql_call_handler; COMMENT ON LANGUAGE rt_lang IS 'own';
"""


@pytest.mark.parametrize("fmt", ["custom", "plain"])
def test_a_managed_server_role_leaves_superuser_only_entries_out_and_names_them(
        main_server: Server, password_role: tuple[str, str], new_database: NewDatabases,
        tmp_path: Path, fmt: str) -> None:
    """A role with CREATEDB, not superuser (RDS, Cloud SQL, Supabase): the event trigger, the
    function in C-like `internal`, the foreign-data wrapper, the language and the text search
    parser and template are left out with their comments and grants, named by preflight and
    load; the rest restores."""
    role, password = password_role
    execute(main_server.conninfo, f'ALTER ROLE "{role}" CREATEDB')
    source = new_database("rt_managed_src")
    execute(source, _SUPERUSER_ONLY)
    dump = _pg_dump("18", source, tmp_path / f"managed.{fmt}", f"--format={fmt}")
    target = dbname(new_database("rt_managed", create=False))
    result = commands.restore(settings(password_url(main_server, role, password, target),
                                       tmp_path), dump, commands.Options(no_owner=True))
    assert result.exit_code == 0, report.render(result)
    named = ("event trigger rt_log_ddl, foreign data wrapper rt_fdw, function public.rt_abs("
             "integer) (language internal), procedural language rt_lang, text search parser "
             "public.rt_parser, text search template public.rt_template")
    assert named in _step(result, "preflight").summary
    load_summary = _step(result, "load").summary
    assert "statement(s) only a superuser may run, and the restoring role is not one (" \
        in load_summary, load_summary
    restored = main_server.database(target)
    assert row_counts(restored) == {"t": 1}
    assert scalar(restored, "SELECT rt_twice(21)") == 42
    assert scalar(restored, "SELECT (SELECT count(*) FROM pg_event_trigger) + (SELECT count(*) "
                            "FROM pg_foreign_data_wrapper) + (SELECT count(*) FROM pg_ts_template"
                            " WHERE tmplname LIKE 'rt_%') + (SELECT count(*) FROM pg_proc WHERE "
                            "proname = 'rt_abs') + (SELECT count(*) FROM pg_ts_parser WHERE "
                            "prsname LIKE 'rt_%') + (SELECT count(*) FROM pg_language WHERE "
                            "lanname = 'rt_lang')") == 0
    # the proof, by this role, expects none of them; a superuser's expects them all
    as_role = commands.verify(settings(password_url(main_server, role, password, target),
                                       tmp_path), against=dump, smoke_test=False)
    assert as_role.exit_code == 0, report.render(as_role)
    as_superuser = commands.verify(settings(restored, tmp_path), against=dump,
                                   smoke_test=False)
    assert as_superuser.exit_code == 1
    assert "event trigger rt_log_ddl missing" in _step(as_superuser, "proof").summary


def test_scratch_creates_the_roles_the_dump_needs_and_keeps_owners_and_grants(
        servers: Servers, new_database: NewDatabases, tmp_path: Path) -> None:
    owner, reader = "rt_scratch_owner", "rt_scratch_reader"
    execute(servers.main.conninfo, f"CREATE ROLE {owner}; CREATE ROLE {reader}")
    try:
        source = new_database("rt_scratch_src")
        execute(source, f"CREATE TABLE menu (id serial PRIMARY KEY); ALTER TABLE menu OWNER TO "
                        f"{owner}; GRANT SELECT ON menu TO {reader}; INSERT INTO menu VALUES (1)")
        dump = _pg_dump("18", source, tmp_path / "scratch.dump", "--format=custom")
    finally:
        new_database.drop_all()
        execute(servers.main.conninfo, f"DROP ROLE {owner}; DROP ROLE {reader}")
    check = tmp_path / "owned.sql"  # run in the throwaway cluster, after the load
    check.write_text(f"""DO $$ BEGIN
        IF (SELECT tableowner FROM pg_tables WHERE tablename = 'menu') <> '{owner}'
           OR NOT has_table_privilege('{reader}', 'menu', 'SELECT') THEN
            RAISE EXCEPTION 'owner or grant lost';
        END IF; END $$;""")
    result = commands.restore_scratch(dump, commands.Options(post_sql=(check,)))
    assert result.exit_code == 0, report.render(result)
    assert f"created the roles it needs (NOLOGIN): {owner}, {reader}" in result.steps[0].summary
