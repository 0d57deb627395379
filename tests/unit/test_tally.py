"""The proof's reader of a dump's SQL script: entries by their headers, rows by COPY block,
NOT VALID constraints, and a script that stops early, however the bytes arrive."""

from __future__ import annotations

import pytest

from restore_tool.proof.tally import DumpEntry, Scanner

SCRIPT = b"""--
-- PostgreSQL database dump
--

SET statement_timeout = 0;

--
-- Name: Sales Dept; Type: SCHEMA; Schema: -; Owner: app
--

CREATE SCHEMA "Sales Dept";

--
-- Name: guest; Type: TABLE; Schema: public; Owner: app
--

CREATE TABLE public.guest (id integer, name text);

--
-- Data for Name: guest; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.guest (id, name) FROM stdin;
1\tada
2\tback\\\\.slash
-- Name: fake; Type: TABLE; Schema: public; Owner: app\tdave
3\t\\\\.
\\.

--
-- Data for Name: empty; Type: TABLE DATA; Schema: public; Owner: app
--

COPY public.empty (id) FROM stdin;
\\.

--
-- Data for Name: old style; Type: TABLE DATA; Schema: Sales Dept; Owner: app
--

INSERT INTO "Sales Dept"."old style" VALUES (1);
INSERT INTO "Sales Dept"."old style" VALUES (2);

--
-- Name: guest guest_fk; Type: FK CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.guest
    ADD CONSTRAINT guest_fk FOREIGN KEY (id) REFERENCES public.host(id) NOT VALID;

--
-- Name: guest guest_pkey; Type: CONSTRAINT; Schema: public; Owner: app
--

ALTER TABLE ONLY public.guest
    ADD CONSTRAINT guest_pkey PRIMARY KEY (id);

--
-- PostgreSQL database dump complete
--

"""


def _scanned(data: bytes, size: int, skip=None):  # type: ignore[no-untyped-def]
    scanner = Scanner(skip)
    for start in range(0, len(data), size):
        scanner.feed(data[start:start + size])
    return scanner.finish()


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_every_chunking_reads_the_same_entries_and_rows(size: int) -> None:
    tally = _scanned(SCRIPT, size)
    assert tally.complete, tally.damage
    assert tally.rows == {("public", "guest"): 4, ("public", "empty"): 0,
                          ("Sales Dept", "old style"): None}  # INSERTs: not counted
    assert tally.entries == [
        DumpEntry("SCHEMA", "-", "Sales Dept"), DumpEntry("TABLE", "public", "guest"),
        DumpEntry("TABLE DATA", "public", "guest"), DumpEntry("TABLE DATA", "public", "empty"),
        DumpEntry("TABLE DATA", "Sales Dept", "old style"),
        DumpEntry("FK CONSTRAINT", "public", "guest guest_fk", not_valid=True),
        DumpEntry("CONSTRAINT", "public", "guest guest_pkey")]


@pytest.mark.parametrize("size", [1, 4096])
def test_a_script_cut_in_a_copy_block_names_the_table_and_its_rows_so_far(size: int) -> None:
    cut = SCRIPT[:SCRIPT.index(b"3\t")]
    tally = _scanned(cut, size)
    assert tally.damage == ("the data of table public.guest stops after 3 row(s): its data "
                            "ends without the end-of-data line")


def test_a_script_cut_between_entries_lacks_the_last_line() -> None:
    cut = SCRIPT[:SCRIPT.index(b"-- Name: guest guest_pkey")]
    tally = _scanned(cut, 100)
    assert tally.damage is not None
    assert "in or after fk constraint public.guest guest_fk" in tally.damage
    assert "PostgreSQL database dump complete" in tally.damage


def test_the_readers_own_error_is_kept_with_the_entry() -> None:
    scanner = Scanner()
    scanner.feed(SCRIPT[:SCRIPT.index(b"2\t")])
    tally = scanner.finish("pg_restore: error: could not read from input file: end of file")
    assert tally.damage == ("the data of table public.guest stops after 1 row(s): pg_restore: "
                            "error: could not read from input file: end of file")


def test_skipped_entries_are_not_expected() -> None:
    tally = _scanned(SCRIPT, 10, skip=lambda kind, schema, name: kind == "TABLE DATA"
                     and name == "guest")
    assert ("public", "guest") not in tally.rows
    assert DumpEntry("TABLE DATA", "public", "guest") not in tally.entries
    assert DumpEntry("TABLE", "public", "fake") not in tally.entries  # a data line, read past
    assert tally.rows[("public", "empty")] == 0
