"""The baseline: what hand-written fix_all_sequences.py scripts do (the runbook's "How it
works"): list the tables, then per table find its sequence, read MAX, call setval.
Usage: python bench/fix_all_sequences.py DATABASE_URL

It runs in autocommit: the single-transaction form of the same loop fails on 5,000 tables
with `out of shared memory` (every table, index and sequence stays locked until commit)."""

from __future__ import annotations

import sys

import psycopg
from psycopg import sql


def main(url: str) -> int:
    fixed = 0
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        cur.execute("""
            SELECT table_schema, table_name, column_name
            FROM information_schema.columns
            WHERE column_default LIKE 'nextval%'
            ORDER BY table_schema, table_name""")
        for schema, table, column in cur.fetchall():
            qualified = sql.Identifier(schema, table).as_string(conn)
            cur.execute("SELECT pg_get_serial_sequence(%s, %s)", (qualified, column))
            row = cur.fetchone()
            if row is None or row[0] is None:
                continue
            cur.execute(sql.SQL("SELECT MAX({}) FROM {}").format(
                sql.Identifier(column), sql.Identifier(schema, table)))
            found = cur.fetchone()
            max_id = found[0] if found else None
            if max_id is None:
                continue
            cur.execute("SELECT setval(%s, %s, false)", (row[0], max_id + 1))
            print(f"✅ Fixed {table}.{column} sequence (max: {max_id}, next: {max_id + 1})")
            fixed += 1
    print(f"🎉 Successfully fixed {fixed} sequence(s)!")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
