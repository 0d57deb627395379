"""Reading `pg_restore --verbose` output, saved from real runs: progress and errors."""

from __future__ import annotations

from restore_tool.restoring.load import LoadError, RestoreLog, Server

SERIAL = """\
pg_restore: connecting to database for restore
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;
pg_restore: executing SELECT pg_catalog.set_config('search_path', '', false);
pg_restore: creating TABLE "public.user"
pg_restore: from TOC entry 215; 1255 16390 FUNCTION public.has_parent(integer) postgres
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: CREATE FUNCTION public.has_parent(integer) RETURNS boolean
    LANGUAGE sql
    SET transaction_timeout TO '5s'
    AS $_$SELECT true$_$;
pg_restore: processing data for table "public.user"
pg_restore: from TOC entry 3360; 0 16399 TABLE DATA public child postgres
pg_restore: error: COPY failed for table "child": ERROR:  relation "parent" does not exist
pg_restore: executing SEQUENCE SET user_user_id_seq
pg_restore: from TOC entry 2475; 2604 16482 DEFAULT public track track_id postgres
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;
pg_restore: warning: errors ignored on restore: 4
"""  # noqa: E501

PARALLEL = """\
pg_restore: processing item 2837 ENCODING ENCODING
pg_restore: creating TABLE "public.invoice"
pg_restore: launching item 2809 TABLE DATA payment
pg_restore: finished item 2809 TABLE DATA payment
"""


def test_serial_progress_and_errors_with_their_toc_entry() -> None:
    seen: list[tuple[int, int, str]] = []
    log = RestoreLog(10, frozenset({"transaction_timeout"}), progress=lambda *a: seen.append(a))
    for line in SERIAL.splitlines():
        log.feed(line)
    assert seen == [(1, 10, "public.user"), (2, 10, "public.user"),
                    (3, 10, "user_user_id_seq")]
    assert log.errors == [
        # the client's own SET on connecting: tolerated
        LoadError(None, 'unrecognized configuration parameter "transaction_timeout"', True),
        # a function declared SET transaction_timeout is not created: an error
        LoadError("215; 1255 16390 FUNCTION public.has_parent(integer) postgres",
                  'unrecognized configuration parameter "transaction_timeout"'),
        LoadError("3360; 0 16399 TABLE DATA public child postgres",
                  'COPY failed for table "child": ERROR:  relation "parent" does not exist'),
        # a parallel worker's connection names the entry it was handed; the command tells
        LoadError("2475; 2604 16482 DEFAULT public track track_id postgres",
                  'unrecognized configuration parameter "transaction_timeout"', True),
    ]


def test_unknown_settings_the_client_did_not_send_are_errors() -> None:
    log = RestoreLog(10, frozenset({"transaction_timeout"}))
    log.feed('pg_restore: error: could not execute query: ERROR:  unrecognized configuration '
             'parameter "foo"')
    log.feed("Command was: SET foo = 0;")
    assert [e.tolerated for e in log.errors] == [False]


def test_parallel_progress_counts_items_once() -> None:
    seen: list[tuple[int, int, str]] = []
    log = RestoreLog(2, frozenset(), parallel=True, progress=lambda *a: seen.append(a))
    for line in PARALLEL.splitlines():
        log.feed(line)
    assert seen == [(1, 2, "ENCODING"), (2, 2, "payment")]


def test_what_a_client_sends_that_a_server_lacks() -> None:
    pg15 = Server(15, frozenset({"statement_timeout", "lock_timeout"}))
    pg17 = Server(17, frozenset({"statement_timeout", "transaction_timeout"}))
    assert pg15.unknown_sent_by(18) == {"transaction_timeout"}
    assert pg15.unknown_sent_by(16) == frozenset()  # a 16 client sends nothing new
    assert pg17.unknown_sent_by(18) == frozenset()
