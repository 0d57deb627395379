"""The `pg_restore -l` parser on saved text (no pg_restore run): header, kinds (multi-word
ones included), owners, counts."""

from __future__ import annotations

from restore_tool.restoring.archive import parse_listing

LISTING = """\
;
; Archive created at 2026-11-24 03:20:43 UTC
;     dbname: battery_hub
;     TOC Entries: 182
;     Compression: gzip
;     Dump Version: 1.16-0
;     Format: CUSTOM
;     Dumped from database version: 18.6
;     Dumped by pg_dump version: 18.6
;
; Selected TOC Entries:
;
4; 3079 16384 EXTENSION - vector
894; 1247 16386 TYPE public battery_status postgres
261; 1259 16801 TABLE public audit_log app_owner
2841; 0 0 SEQUENCE OWNED BY public battery_battery_id_seq postgres
2900; 0 16801 TABLE DATA public audit_log app_owner
3001; 0 0 SEQUENCE SET public audit_log_audit_id_seq postgres
3100; 2606 16900 FK CONSTRAINT public battery battery_model_fk postgres
3200; 1259 17000 MATERIALIZED VIEW public hub_stats postgres
3300; 0 17000 MATERIALIZED VIEW DATA public hub_stats postgres
3400; 1259 17100 INDEX public audit_log_at_idx app_owner
;3500; 1259 17200 TABLE public commented_out postgres
"""
LISTING += "3600; 0 0 STATISTICS DATA public audit_log \n"  # no owner: the line ends in a space


def test_header_kinds_owners_and_counts() -> None:
    listing = parse_listing(LISTING)
    assert listing.header["dbname"] == "battery_hub"
    assert listing.header["TOC Entries"] == "182"
    assert listing.header["Dumped by pg_dump version"] == "18.6"
    assert [e.kind for e in listing.entries] == [
        "EXTENSION", "TYPE", "TABLE", "SEQUENCE OWNED BY", "TABLE DATA", "SEQUENCE SET",
        "FK CONSTRAINT", "MATERIALIZED VIEW", "MATERIALIZED VIEW DATA", "INDEX",
        "STATISTICS DATA"]
    assert listing.entries[4].rest == "public audit_log app_owner"
    assert listing.entries[0].owner is None  # extensions name no owner
    assert listing.entries[-1].owner is None  # pg_dump 18 statistics: the owner is empty
    assert listing.owners == ("app_owner", "postgres")
    assert listing.counts == {"tables": 1, "sequences": 0, "indexes": 1, "extensions": 1}
