"""Smoke tests on real servers: an insert per table proves writes work, finds the lagging
sequence only an insert can find (one a trigger calls), tells our bad guesses (skipped) from
the database's own duplicates (failed), and leaves every row count as it was."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restore_tool import commands, db, smoke
from restore_tool.pipeline import Status, StepName
from restore_tool.project import SmokeRow
from restore_tool.project import load as load_project
from restore_tool.smoke import SmokeResult, Verdict
from tests.func.test_cli import invoke
from tests.helpers import (
    execute,
    load_chinook,
    pg_dump,
    row_counts,
    scalar,
    settings,
)
from tests.servers import Server, scratch_database

ROOT = Path(__file__).resolve().parents[2]

# A sequence no column owns, called by a trigger: catalog checks cannot tie it to the table.
TRIGGER_ID = """
    CREATE SEQUENCE ticket_numbers;
    CREATE TABLE ticket (id integer PRIMARY KEY, subject text NOT NULL);
    CREATE FUNCTION number_ticket() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF NEW.id IS NULL THEN NEW.id := nextval('ticket_numbers'); END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER number_ticket BEFORE INSERT ON ticket
        FOR EACH ROW EXECUTE FUNCTION number_ticket();
    INSERT INTO ticket VALUES (1, 'imported'), (2, 'imported'), (3, 'imported');
"""

# The wide "user" of a real app: enums, foreign keys, unique and check constraints,
# char(n)/varchar(n), uuid, jsonb, arrays, a domain; none of its NOT NULL columns has a default.
WIDE_USER = """
    CREATE TYPE plan AS ENUM ('free', 'pro');
    CREATE DOMAIN email AS varchar(254) CHECK (VALUE LIKE '%_@_%');
    CREATE TABLE hub (hub_id serial PRIMARY KEY, name varchar(40) NOT NULL);
    CREATE TABLE country (code char(2) PRIMARY KEY);
    INSERT INTO hub (name) VALUES ('Kibera'), ('Kisumu');
    INSERT INTO country VALUES ('KE'), ('UG');
    CREATE TABLE "user" (
        user_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        hub_id integer NOT NULL REFERENCES hub,
        country char(2) NOT NULL REFERENCES country,
        first_names varchar(100) NOT NULL,
        last_name varchar(3) NOT NULL,
        initials char(2) NOT NULL,
        email email NOT NULL UNIQUE,
        login varchar(8) NOT NULL UNIQUE,
        external_id uuid NOT NULL UNIQUE,
        plan plan NOT NULL,
        profile jsonb NOT NULL,
        tags text[] NOT NULL,
        scores integer[] NOT NULL,
        age smallint NOT NULL CHECK (age >= 18),
        balance numeric(8, 2) NOT NULL CHECK (balance >= 0),
        born date NOT NULL,
        active boolean NOT NULL,
        seen_at timestamptz NOT NULL,
        nickname text,
        UNIQUE (hub_id, login)
    );
    INSERT INTO "user" (hub_id, country, first_names, last_name, initials, email, login,
                        external_id, plan, profile, tags, scores, age, balance, born, active,
                        seen_at)
    VALUES (1, 'KE', 'Amina', 'Odh', 'AO', 'amina@example.org', 'amina',
            '6f1c1d4e-8a4c-4b2a-9d43-1c2b3a4d5e6f', 'pro', '{"lang": "sw"}', '{a}', '{1}',
            31, 10.5, '1994-05-01', true, now());
"""


def _smoke(conninfo: str, plan: smoke.Plan = smoke.AUTOMATIC, jobs: int = 1
           ) -> dict[str, SmokeResult]:
    with db.connect(conninfo) as conn:
        results = smoke.run(conn, plan, jobs=jobs, connect=lambda: db.connect(conninfo))
    return {r.table: r for r in results}


def test_a_trigger_assigned_id_whose_sequence_lags_fails_with_table_key_and_value(
        db: str, tmp_path: Path) -> None:
    execute(db, TRIGGER_ID)
    before = row_counts(db)
    result = commands.verify(settings(db, tmp_path))
    steps = {step.name: step for step in result.steps}
    assert steps[StepName.CHECK_SEQUENCES].status is Status.PASSED  # no catalog check can see it
    assert steps[StepName.SMOKE_TEST].status is Status.FAILED and result.exit_code == 1
    ticket = next(d for d in steps[StepName.SMOKE_TEST].details if isinstance(d, SmokeResult))
    assert ticket.verdict is Verdict.FAILED
    assert ticket.reason == ('duplicate key value violates unique constraint "ticket_pkey" '
                             "(Key (id)=(1) already exists.)")
    assert "ticket: duplicate key" in steps[StepName.SMOKE_TEST].summary
    assert row_counts(db) == before

    execute(db, "SELECT setval('ticket_numbers', 3)")
    assert _smoke(db)["ticket"].verdict is Verdict.PASSED
    assert row_counts(db) == before


def test_the_wide_user_table_takes_an_insert_and_keeps_its_rows(db: str) -> None:
    execute(db, WIDE_USER)
    before = row_counts(db)
    results = _smoke(db)
    assert {name: r.verdict for name, r in results.items()} == {
        "country": Verdict.PASSED, "hub": Verdict.PASSED, "user": Verdict.PASSED}
    assert row_counts(db) == before
    # an empty "user" has no row to copy: every value is invented; the first guess for
    # age (1) breaks its CHECK, the second (100) fits
    execute(db, 'DELETE FROM "user"')
    user = _smoke(db)["user"]
    assert (user.verdict, user.attempts) == (Verdict.PASSED, 3)
    assert row_counts(db)["user"] == 0


def test_a_check_our_guess_breaks_is_skipped_with_the_database_reason(main_db: str) -> None:
    execute(main_db, """
        CREATE TABLE payment (payment_id serial PRIMARY KEY,
                              amount numeric(8, 2) NOT NULL CONSTRAINT big
                                  CHECK (amount BETWEEN 5 AND 10));
        CREATE TABLE measurement (id bigserial, taken_on date NOT NULL, value integer)
            PARTITION BY RANGE (taken_on);
        CREATE TABLE measurement_2020 PARTITION OF measurement
            FOR VALUES FROM ('2020-01-01') TO ('2021-01-01');
    """)
    results = _smoke(main_db)
    assert results["payment"].verdict is Verdict.SKIPPED
    assert results["payment"].attempts == 3  # template or 1, invented 1, invented 100
    assert 'violates check constraint "big"' in results["payment"].reason
    assert results["measurement"].reason == ('no partition of relation "measurement" found '
                                             "for row")
    outcome = smoke.outcome(list(results.values()))
    assert outcome.status is Status.WARNING  # skipped is not a failure
    assert outcome.summary.startswith("0 passed, 2 skipped (measurement: no partition")

    # with a row to copy from, the partition bound and the CHECK are satisfied
    execute(main_db, "INSERT INTO payment (amount) VALUES (7); "
                     "INSERT INTO measurement (taken_on, value) VALUES ('2020-06-01', 1)")
    results = _smoke(main_db)
    assert {r.verdict for r in results.values()} == {Verdict.PASSED}
    assert row_counts(main_db) == {"payment": 1, "measurement_2020": 1}


def test_chinook_fails_while_its_sequences_lag_and_passes_once_repaired(
        main_db: str, tmp_path: Path) -> None:
    """Real schema: 11 tables, a composite key of two foreign keys (playlist_track)."""
    load_chinook(main_db)
    before = row_counts(main_db)
    results = _smoke(main_db, jobs=2)
    failed = {name for name, r in results.items() if r.verdict is Verdict.FAILED}
    assert len(failed) == 10 and "playlist_track" not in failed
    assert results["track"].reason.endswith("(Key (track_id)=(1) already exists.)")
    assert results["playlist_track"].verdict is Verdict.PASSED

    assert commands.fix_sequences(settings(main_db, tmp_path)).exit_code == 0
    assert {r.verdict for r in _smoke(main_db, jobs=2).values()} == {Verdict.PASSED}
    assert row_counts(main_db) == before


def test_a_deferred_key_is_checked_before_the_rollback(main_db: str) -> None:
    execute(main_db, """
        CREATE TABLE invoice (id serial PRIMARY KEY DEFERRABLE INITIALLY DEFERRED);
        INSERT INTO invoice VALUES (1), (2);
    """)
    assert _smoke(main_db)["invoice"].verdict is Verdict.FAILED


def test_unique_references_pick_a_row_not_yet_referenced(main_db: str) -> None:
    execute(main_db, """
        CREATE TABLE film (film_id serial PRIMARY KEY);
        INSERT INTO film SELECT generate_series(1, 3);
        SELECT setval('film_film_id_seq', 3);
        CREATE TABLE film_detail (film_id integer PRIMARY KEY REFERENCES film, note text);
        INSERT INTO film_detail VALUES (1, 'a'), (2, 'b');
        CREATE TABLE film_cut (film_id integer NOT NULL UNIQUE REFERENCES film);
        INSERT INTO film_cut SELECT generate_series(1, 3);
    """)
    results = _smoke(main_db)
    assert results["film_detail"].verdict is Verdict.PASSED
    assert results["film_cut"].verdict is Verdict.SKIPPED
    assert results["film_cut"].reason == ("every row of film is already referenced where the "
                                          "reference must be unique")


def test_a_hanging_trigger_is_stopped_by_the_timeout(main_db: str) -> None:
    execute(main_db, """
        CREATE TABLE slow (id serial PRIMARY KEY);
        CREATE FUNCTION wait() RETURNS trigger LANGUAGE plpgsql
            AS $$ BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$;
        CREATE TRIGGER wait BEFORE INSERT ON slow FOR EACH ROW EXECUTE FUNCTION wait();
        CREATE TABLE quick (id serial PRIMARY KEY);
    """)
    results = _smoke(main_db, smoke.Plan(timeout=0.3))
    assert results["slow"].verdict is Verdict.SKIPPED
    assert results["slow"].reason == "canceling statement due to statement timeout"
    assert results["quick"].verdict is Verdict.PASSED


def test_privileges_decide_what_the_role_can_try(main_server: Server, main_db: str) -> None:
    role = "rt_smoke_app"
    execute(main_server.conninfo, f"DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN")
    try:
        execute(main_db, f"""
            CREATE TABLE readable (id serial PRIMARY KEY);
            CREATE TABLE writable (id serial PRIMARY KEY);
            GRANT SELECT ON readable TO {role};
            GRANT SELECT, INSERT ON writable TO {role};
        """)
        as_role = f"{main_db} user={role}"
        results = _smoke(as_role)
        assert results["readable"].reason == f"role {role} has no INSERT privilege"
        # INSERT but not USAGE on the sequence: the app's inserts would fail too
        assert results["writable"].verdict is Verdict.SKIPPED
        assert "permission denied for sequence writable_id_seq" in results["writable"].reason
        execute(main_db, f"GRANT USAGE ON SEQUENCE writable_id_seq TO {role}")
        assert _smoke(as_role)["writable"].verdict is Verdict.PASSED
    finally:
        execute(main_db, f"DROP OWNED BY {role}")
        execute(main_server.conninfo, f"DROP ROLE {role}")


CONFIG = """
automatic_smoke = true
smoke_timeout = 2

[[smoke]]
table = "user"

[smoke.values]
hub_id = 1
country = "UG"
first_names = "Smoke"
last_name = "Tst"
initials = "ST"
email = "smoke@example.org"
login = "smoke"
external_id = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
plan = "free"
profile = { source = "restore-tool" }
tags = ["smoke"]
scores = [1, 2]
age = 40
balance = 0
born = 1986-01-02
active = false
seen_at = 2026-11-24T10:00:00Z
"""


def test_configured_rows_replace_the_automatic_row_and_fail_with_the_database_words(
        main_db: str, tmp_path: Path) -> None:
    execute(main_db, WIDE_USER)
    (tmp_path / "restore-tool.toml").write_text(CONFIG)
    code, out, _ = invoke("verify", "--database-url", main_db, "--json", cwd=tmp_path)
    assert code == 0, out
    report = json.loads(out)
    assert report["facts"] == {"Config": str(tmp_path / "restore-tool.toml")}
    details = next(s for s in report["steps"] if s["name"] == StepName.SMOKE_TEST)["details"]
    assert [(d["table"], d["verdict"], d["configured"]) for d in details] == [
        ("user", "passed", True), ("country", "passed", False), ("hub", "passed", False)]

    bad = CONFIG.replace("age = 40", "age = 12").replace('tags = ["smoke"]', "nope = 1")
    (tmp_path / "bad.toml").write_text(bad)
    code, out, _ = invoke("verify", "--database-url", main_db, "--config",
                          str(tmp_path / "bad.toml"), "--no-auto-smoke", cwd=tmp_path)
    assert code == 1
    assert ('❌ user (configured row): column "nope" of relation "user" does not exist'
            in out.splitlines())
    assert "1 failed (user: column \"nope\"" in out

    (tmp_path / "bad.toml").write_text(bad.replace("nope = 1", 'tags = ["smoke"]'))
    code, out, _ = invoke("verify", "--database-url", main_db, "--config",
                          str(tmp_path / "bad.toml"), "--no-auto-smoke", cwd=tmp_path)
    assert code == 1 and 'violates check constraint "user_age_check"' in out
    assert "country" not in out  # --no-auto-smoke: only the configured row

    project = load_project(tmp_path / "restore-tool.toml")
    missing = smoke.Plan(rows=(SmokeRow("nobody", {}, "public"),), automatic=False,
                         timeout=project.smoke_timeout)
    assert _smoke(main_db, missing)["public.nobody"].reason == ('relation "public.nobody" '
                                                                "does not exist")
    code, out, _ = invoke("verify", "--database-url", main_db, "--no-smoke", cwd=tmp_path)
    assert code == 0 and "smoke test       --no-smoke" in out
    assert row_counts(main_db)["user"] == 1


def test_a_bad_config_file_is_one_sentence_and_exit_2(main_db: str, tmp_path: Path) -> None:
    cases = {
        "smoke_timout = 3\n": "unknown setting(s): smoke_timout",
        "[[smoke]]\nvalues = { a = 1 }\n": 'needs table = "NAME"',
        "automatic_smoke = 'no'\n": "automatic_smoke must be true or false",
        "[[smoke]\n": "is not valid TOML",
    }
    for text, sentence in cases.items():
        (tmp_path / "restore-tool.toml").write_text(text)
        code, _, err = invoke("verify", "--database-url", main_db, cwd=tmp_path)
        assert code == 2 and sentence in err and "Traceback" not in err
    code, _, err = invoke("verify", "--database-url", main_db, "--config",
                          str(tmp_path / "missing.toml"))
    assert code == 2 and "missing.toml does not exist" in err


def test_a_restore_whose_trigger_sequence_lags_is_not_swapped_in(
        main_server: Server, tmp_path: Path) -> None:
    with scratch_database(main_server, "rt_smoke_src") as source:
        execute(source, TRIGGER_ID)
        dump = pg_dump(source, tmp_path, "custom")
    with scratch_database(main_server, "rt_smoke_target") as target:
        execute(target, "CREATE TABLE precious (id int); INSERT INTO precious VALUES (1)")
        result = commands.restore(settings(target, tmp_path), dump, commands.Options(replace=True))
        names = [(step.name, step.status) for step in result.steps]
        assert names[6] == (StepName.SMOKE_TEST, Status.FAILED) and result.exit_code == 1
        assert names[-1] == ("swap", Status.SKIPPED)
        assert row_counts(target) == {"precious": 1}
        assert "setval" in result.next_steps[1]
        assert scalar(main_server.conninfo, "SELECT count(*) FROM pg_database "
                      "WHERE datname LIKE 'rt_smoke_target%%'") == 1

        ok = commands.restore(settings(target, tmp_path), ROOT / "backups/battery-hub.dump",
                         commands.Options(replace=True, drop_old=True))
        smoke_step = next(step for step in ok.steps if step.name == StepName.SMOKE_TEST)
        assert ok.exit_code == 0 and smoke_step.summary == "21 passed"


def test_many_tables_on_several_connections(main_db: str) -> None:
    """The size of the 1,000-table benchmark (bench/smoke.py) at a third, for correctness."""
    execute(main_db, """
        DO $$ BEGIN
            FOR i IN 1..300 LOOP
                EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, '
                               'name varchar(20) NOT NULL, parent integer REFERENCES t1)', i);
                EXECUTE format('INSERT INTO t%s (name) VALUES (''x'')', i);
            END LOOP;
        END $$;
    """)
    results = _smoke(main_db, jobs=3)
    assert len(results) == 300 and {r.verdict for r in results.values()} == {Verdict.PASSED}
    assert sum(row_counts(main_db).values()) == 300


@pytest.mark.parametrize("schema", ["public", "Billing Dept"])
def test_quoted_names_and_schemas(main_db: str, schema: str) -> None:
    quoted = '"' + schema + '"'
    execute(main_db, f"""
        CREATE SCHEMA IF NOT EXISTS {quoted};
        CREATE TABLE {quoted}."Order" ("Order Id" serial PRIMARY KEY,
                                       "we""ird" varchar(5) NOT NULL UNIQUE);
        INSERT INTO {quoted}."Order" ("we""ird") VALUES ('a');
    """)
    results = _smoke(main_db, smoke.Plan(schemas=(schema,)))
    assert list(results) == ['"Order"' if schema == "public" else '"Billing Dept"."Order"']
    assert next(iter(results.values())).verdict is Verdict.PASSED


def test_partitions_char_keys_and_rule_partitioning_are_no_false_skips(db: str) -> None:
    """pagila's payment (partitioned, key (payment_date, payment_id) with payment_id from a
    sequence), world's country (char(3) key, a CHECK), pagila 0.10.1's payment (an
    inheritance parent whose DO INSTEAD rules route each row): each insert passes."""
    execute(db, """
        CREATE TABLE payment (payment_id serial, payment_date timestamptz NOT NULL,
            PRIMARY KEY (payment_date, payment_id)) PARTITION BY RANGE (payment_date);
        CREATE TABLE payment_2022 PARTITION OF payment
            FOR VALUES FROM ('2022-01-01') TO ('2023-01-01');
        INSERT INTO payment (payment_date) VALUES ('2022-02-01'), ('2022-03-01');
        CREATE TABLE country (code char(3) PRIMARY KEY, continent text NOT NULL
            CHECK (continent IN ('Asia', 'Europe')));
        INSERT INTO country VALUES ('ABW', 'Europe'), ('AFG', 'Asia');
        CREATE TABLE old_payment (payment_id serial PRIMARY KEY, paid date NOT NULL);
        CREATE TABLE old_payment_2007 (CHECK (paid >= '2007-01-01' AND paid < '2008-01-01'))
            INHERITS (old_payment);
        CREATE RULE old_payment_2007_insert AS ON INSERT TO old_payment
            WHERE paid >= '2007-01-01' AND paid < '2008-01-01'
            DO INSTEAD INSERT INTO old_payment_2007 VALUES (NEW.*);
        INSERT INTO old_payment (paid) VALUES ('2007-03-01');
    """)
    before = row_counts(db)
    results = _smoke(db)
    for label in ("payment", "country", "old_payment"):
        assert results[label].verdict is Verdict.PASSED, (label, results[label].reason)
    assert row_counts(db) == before
