"""The plain-script splitter on the shapes pg_dump writes and the ones that broke the line
filter: data rows that look like SQL, semicolons inside quotes, bodies and comments."""

from __future__ import annotations

from restore_tool.restoring.script import Kind, pieces


def _split(text: str) -> list[tuple[Kind, str]]:
    lines = text.encode().splitlines(keepends=True)
    found = [(p.kind, p.text.decode()) for p in pieces(lines)]
    assert "".join(t for _, t in found) == text  # nothing lost, nothing added
    return found


def test_copy_data_rows_that_begin_with_set_stay_data() -> None:
    script = ("SET transaction_timeout = 0;\n"
              "COPY public.menu (note, dish) FROM stdin;\n"
              "SET menu for Friday\tfish\n"
              "SET transaction_timeout = 0;\tsoup\n"
              "\\.\n"
              "SET row_security = off;\n")
    assert _split(script) == [
        (Kind.STATEMENT, "SET transaction_timeout = 0;\n"),
        (Kind.STATEMENT, "COPY public.menu (note, dish) FROM stdin;\n"),
        (Kind.DATA, "SET menu for Friday\tfish\n"),
        (Kind.DATA, "SET transaction_timeout = 0;\tsoup\n"),
        (Kind.DATA, "\\.\n"),
        (Kind.STATEMENT, "SET row_security = off;\n")]


def test_semicolons_inside_quotes_bodies_and_comments_do_not_end_a_statement() -> None:
    body = ("CREATE FUNCTION f() RETURNS text LANGUAGE plpgsql AS $body$\n"
            "BEGIN RETURN 'a;b'; END;\n$body$;\n")
    quoted = "COMMENT ON TABLE \"we;ird\" IS 'it''s; fine' /* a; /* nested; */ c; */;\n"
    escaped = "SELECT E'back\\\\slash\\'; still', 'x';\n"
    dollar_param = "PREPARE p AS SELECT $1; SELECT 2;\n"
    assert _split(body) == [(Kind.STATEMENT, body)]
    assert _split(quoted) == [(Kind.STATEMENT, quoted)]
    assert _split(escaped) == [(Kind.STATEMENT, escaped)]
    assert _split(dollar_param) == [(Kind.STATEMENT, "PREPARE p AS SELECT $1;"),
                                    (Kind.STATEMENT, " SELECT 2;\n")]


def test_meta_commands_comments_and_a_multiline_statement() -> None:
    script = ("--\n-- Name: menu; Type: TABLE\n--\n\n\\restrict abc\n"
              "CREATE TABLE menu (\n    note text -- a; comment\n);\n\\unrestrict abc\n")
    kinds = [(kind, text) for kind, text in _split(script)]
    assert kinds == [
        (Kind.BLANK, "--\n"), (Kind.BLANK, "-- Name: menu; Type: TABLE\n"), (Kind.BLANK, "--\n"),
        (Kind.BLANK, "\n"), (Kind.META, "\\restrict abc\n"),
        (Kind.STATEMENT, "CREATE TABLE menu (\n    note text -- a; comment\n);\n"),
        (Kind.META, "\\unrestrict abc\n")]
