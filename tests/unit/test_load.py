"""Reading `pg_restore --verbose` output, saved from real runs: progress and errors."""

from __future__ import annotations

from restore_tool.restore.load import LoadError, RestoreLog

SERIAL = """\
pg_restore: connecting to database for restore
pg_restore: executing SELECT pg_catalog.set_config('search_path', '', false);
pg_restore: creating TABLE "public.user"
pg_restore: from TOC entry 215; 1255 16390 FUNCTION public.has_parent(integer) postgres
pg_restore: error: could not execute query: ERROR:  unrecognized configuration parameter "transaction_timeout"
Command was: SET transaction_timeout = 0;
pg_restore: processing data for table "public.user"
pg_restore: from TOC entry 3360; 0 16399 TABLE DATA public child postgres
pg_restore: error: COPY failed for table "child": ERROR:  relation "parent" does not exist
pg_restore: executing SEQUENCE SET user_user_id_seq
pg_restore: warning: errors ignored on restore: 2
"""  # noqa: E501

PARALLEL = """\
pg_restore: processing item 2837 ENCODING ENCODING
pg_restore: creating TABLE "public.invoice"
pg_restore: launching item 2809 TABLE DATA payment
pg_restore: finished item 2809 TABLE DATA payment
"""


def test_serial_progress_and_errors_with_their_toc_entry() -> None:
    seen: list[tuple[int, int, str]] = []
    log = RestoreLog(10, newer_dump=True, progress=lambda *a: seen.append(a))
    for line in SERIAL.splitlines():
        log.feed(line)
    assert seen == [(1, 10, "public.user"), (2, 10, "public.user"),
                    (3, 10, "user_user_id_seq")]
    assert log.errors == [
        LoadError("215; 1255 16390 FUNCTION public.has_parent(integer) postgres",
                  'unrecognized configuration parameter "transaction_timeout"', True),
        LoadError("3360; 0 16399 TABLE DATA public child postgres",
                  'COPY failed for table "child": ERROR:  relation "parent" does not exist'),
    ]


def test_unknown_settings_are_errors_when_the_dump_is_not_newer() -> None:
    log = RestoreLog(10, newer_dump=False)
    log.feed('pg_restore: error: could not execute query: ERROR:  unrecognized configuration '
             'parameter "foo"')
    assert [e.tolerated for e in log.errors] == [False]


def test_parallel_progress_counts_items_once() -> None:
    seen: list[tuple[int, int, str]] = []
    log = RestoreLog(2, newer_dump=False, parallel=True, progress=lambda *a: seen.append(a))
    for line in PARALLEL.splitlines():
        log.feed(line)
    assert seen == [(1, 2, "ENCODING"), (2, 2, "payment")]


def test_plain_set_lines_an_older_server_does_not_know() -> None:
    from restore_tool.restore.load import Server, _known, _setting_of

    pg15 = Server(15, frozenset({"statement_timeout", "lock_timeout"}))
    assert not _known(_setting_of(b"SET transaction_timeout = 0;\n"), pg15)
    assert _known(_setting_of(b"SET Lock_Timeout = 0;\n"), pg15)
    assert _known(_setting_of(b"SET myapp.tenant = 'acme';\n"), pg15)  # custom: any server
