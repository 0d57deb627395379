"""A role that may not read or update everything, row-level security, and the real sample
databases (Chinook loaded with explicit ids, the Pagila schema with its partitions)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from restore_tool import commands
from restore_tool.pipeline import Status
from restore_tool.sequences.plan import Action
from tests.helpers import DATA, by_label, execute, load_chinook, nextval, scalar, settings
from tests.servers import Server


@pytest.fixture
def limited_role(server: Server, db: str) -> Iterator[str]:
    """A login role with only the privileges each test grants it; yields its conninfo."""
    name = f"rt_limited_{uuid.uuid4().hex[:8]}"
    execute(db, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)).as_string())
    try:
        yield make_conninfo(db, user=name)
    finally:
        execute(db, sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(
            sql.Identifier(name)).as_string())


def _grant(db: str, role_conninfo: str, statement: str) -> None:
    role = psycopg.conninfo.conninfo_to_dict(role_conninfo)["user"]
    execute(db, statement.replace("ROLE", sql.Identifier(str(role)).as_string()))


def test_sequences_the_role_cannot_read_or_update_are_skipped(db: str, limited_role: str
                                                              ) -> None:
    execute(db, """
        CREATE TABLE open_t (id serial PRIMARY KEY); INSERT INTO open_t VALUES (5);
        CREATE TABLE secret (id serial PRIMARY KEY); INSERT INTO secret VALUES (8);
        CREATE TABLE readonly (id serial PRIMARY KEY); INSERT INTO readonly VALUES (3);
    """)
    _grant(db, limited_role, """
        GRANT SELECT ON open_t, readonly TO ROLE;
        GRANT SELECT, UPDATE ON open_t_id_seq TO ROLE;
        GRANT SELECT ON readonly_id_seq TO ROLE;
        GRANT SELECT, UPDATE ON secret_id_seq TO ROLE;
    """)
    report = commands.fix_sequences(settings(limited_role))
    fixes = by_label(report.steps[0].details)
    assert fixes["open_t.id"].action is Action.FIXED
    assert fixes["secret.id"].action is Action.SKIPPED
    assert fixes["secret.id"].reason == "no SELECT privilege on secret.id"
    assert fixes["readonly.id"].action is Action.SKIPPED
    assert fixes["readonly.id"].reason == "no UPDATE privilege on sequence readonly_id_seq"
    assert report.steps[0].status is Status.WARNING
    assert report.exit_code == 0
    assert nextval(db, "open_t_id_seq") == 6
    assert nextval(db, "secret_id_seq") == 1

    # verify needs no UPDATE privilege: it reads, and reports what it could not read
    checked = by_label(commands.verify(settings(limited_role)).steps[0].details)
    assert checked["readonly.id"].action is Action.FIXED  # lags: verify fails on it
    assert checked["secret.id"].action is Action.SKIPPED


def test_row_level_security_would_hide_rows_so_the_sequence_is_skipped(
        db: str, limited_role: str) -> None:
    execute(db, """
        CREATE TABLE tenant_data (id serial PRIMARY KEY, tenant text);
        INSERT INTO tenant_data VALUES (1, 'a'), (90, 'b');
        ALTER TABLE tenant_data ENABLE ROW LEVEL SECURITY;
        CREATE POLICY only_a ON tenant_data USING (tenant = 'a');
    """)
    _grant(db, limited_role, "GRANT SELECT ON tenant_data TO ROLE; "
                             "GRANT SELECT, UPDATE ON tenant_data_id_seq TO ROLE;")
    fixes = by_label(commands.fix_sequences(settings(limited_role)).steps[0].details)
    assert fixes["tenant_data.id"].action is Action.SKIPPED
    assert "row-level security" in str(fixes["tenant_data.id"].reason)
    assert nextval(db, "tenant_data_id_seq") == 1


def test_an_owner_gets_no_privilege_it_revoked_from_itself_nor_rows_forced_security_hides(
        db: str, limited_role: str) -> None:
    # discovery takes an owner's privileges for granted only while the default ACL stands
    execute(db, """
        CREATE TABLE own_t (id serial PRIMARY KEY); INSERT INTO own_t VALUES (4);
        CREATE TABLE no_update (id serial PRIMARY KEY); INSERT INTO no_update VALUES (6);
        CREATE TABLE no_select (id serial PRIMARY KEY); INSERT INTO no_select VALUES (7);
        CREATE TABLE forced (id serial PRIMARY KEY, tenant text);
        INSERT INTO forced VALUES (1, 'a'), (90, 'b');
        ALTER TABLE forced ENABLE ROW LEVEL SECURITY;
        ALTER TABLE forced FORCE ROW LEVEL SECURITY;
        CREATE POLICY only_a ON forced USING (tenant = 'a');
    """)
    _grant(db, limited_role, """
        ALTER TABLE own_t OWNER TO ROLE; ALTER TABLE no_update OWNER TO ROLE;
        ALTER TABLE no_select OWNER TO ROLE; ALTER TABLE forced OWNER TO ROLE;
        REVOKE UPDATE ON SEQUENCE no_update_id_seq FROM ROLE;
        REVOKE SELECT ON no_select FROM ROLE;
    """)
    fixes = by_label(commands.fix_sequences(settings(limited_role)).steps[0].details)
    assert fixes["own_t.id"].action is Action.FIXED
    assert fixes["no_update.id"].reason == "no UPDATE privilege on sequence no_update_id_seq"
    assert fixes["no_select.id"].reason == "no SELECT privilege on no_select.id"
    assert "row-level security" in str(fixes["forced.id"].reason)
    assert [nextval(db, f"{name}_id_seq") for name in ("own_t", "no_update", "forced")] \
        == [5, 1, 1]


def test_verify_is_read_only(db: str) -> None:
    execute(db, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (4)")
    report = commands.verify(settings(db))
    assert report.exit_code == 1
    assert scalar(db, "SELECT is_called FROM t_id_seq") is False


def test_chinook_imported_with_explicit_ids(db: str) -> None:
    load_chinook(db)
    before = commands.verify(settings(db))
    assert before.exit_code == 1
    assert len(before.steps[0].details) == 10

    fixed = by_label(commands.fix_sequences(settings(db)).steps[0].details)
    assert fixed["track.track_id"].edge == scalar(db, "SELECT max(track_id) FROM track")
    assert {f.action for f in fixed.values()} == {Action.FIXED}
    assert commands.verify(settings(db)).exit_code == 0
    execute(db, "INSERT INTO artist (name) VALUES ('Smoke Test')")
    # verify's smoke insert (rolled back) consumed one value: nextval is not transactional
    next_after = fixed["artist.artist_id"].next_after
    assert next_after is not None
    assert scalar(db, "SELECT max(artist_id) FROM artist") == next_after + 1


def test_pagila_schema_with_partitions_and_unowned_sequences(main_server: Server,
                                                             main_db: str) -> None:
    if main_server.version < 18:
        pytest.skip("the Pagila schema needs uuidv7() and pgvector (PostgreSQL 18, embedded)")
    execute(main_db, (DATA / "pagila/pagila-schema.sql").read_text())
    execute(main_db, """
        SET search_path = public;
        -- a data-only import: triggers and foreign keys off, as pg_restore --disable-triggers
        SET session_replication_role = replica;
        INSERT INTO language VALUES (1, 'English'), (7, 'Swahili');
        INSERT INTO country VALUES (3, 'Kenya');
        INSERT INTO city VALUES (11, 'Nairobi', 3);
        INSERT INTO address (address_id, address, district, city_id, phone)
            VALUES (21, '1 Moi Ave', 'Central', 11, '0');
        INSERT INTO store (store_id, manager_staff_id, address_id)
            OVERRIDING SYSTEM VALUE VALUES (1, 1, 21);
        INSERT INTO customer (customer_id, store_id, first_name, last_name, address_id)
            VALUES (33, 1, 'Amina', 'Odhiambo', 21);
        INSERT INTO payment (payment_id, customer_id, staff_id, rental_id, amount, payment_date)
            VALUES (16050, 33, 1, 1, 2.99, '2022-01-15'),
                   (17000, 33, 1, 1, 4.99, '2022-06-15');
    """)
    fixes = by_label(commands.fix_sequences(settings(main_db)).steps[0].details)
    assert fixes["payment.payment_id"].edge == 17000
    assert fixes["language.language_id"].next_after == 8
    assert nextval(main_db, "public.payment_payment_id_seq") == 17001
    assert commands.verify(settings(main_db)).exit_code == 0


def test_a_role_limited_to_one_connection_gets_every_sequence(db: str, limited_role: str
                                                              ) -> None:
    """The work is spread over several connections; the server refusing more (a role's
    CONNECTION LIMIT, max_connections) leaves it all to the first one."""
    execute(db, """
        CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (4);
        CREATE TABLE u (id serial PRIMARY KEY); INSERT INTO u VALUES (9);
        CREATE TABLE v (id serial PRIMARY KEY); INSERT INTO v VALUES (2);
    """)
    _grant(db, limited_role, """
        ALTER USER ROLE CONNECTION LIMIT 1;
        GRANT SELECT ON t, u, v TO ROLE;
        GRANT SELECT, UPDATE ON t_id_seq, u_id_seq, v_id_seq TO ROLE;
    """)
    report = commands.fix_sequences(settings(limited_role), jobs=3)
    fixes = by_label(report.steps[0].details)
    assert {label: f.next_after for label, f in fixes.items() if f.applied} == {
        "t.id": 5, "u.id": 10, "v.id": 3}
    assert commands.verify(settings(limited_role), jobs=3).exit_code == 0


def test_a_session_still_closing_under_a_connection_limit_is_waited_for(
        db: str, limited_role: str) -> None:
    """`fix-sequences && verify` as one role with CONNECTION LIMIT 1: the server counts the
    first command's session until its backend has exited, so the second is let in once it
    has, not refused."""
    execute(db, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (4)")
    _grant(db, limited_role, """
        ALTER USER ROLE CONNECTION LIMIT 1;
        GRANT SELECT ON t TO ROLE; GRANT SELECT ON t_id_seq TO ROLE;
    """)
    closing = psycopg.connect(limited_role)
    threading.Timer(0.5, closing.close).start()
    report = commands.verify(settings(limited_role), smoke_test=False)
    assert report.exit_code == 1  # reached the server: t.id lags
    assert by_label(report.steps[0].details)["t.id"].next_after == 5
