"""`make demo`, first half: the problem restore-tool solves, shown on the sample dump.

The dump is restored the way people restore, with a bare `pg_restore`, into a database of its
own (battery_hub_demo) on the server of URL; the application's next insert into "user" then
dies with a duplicate key, `restore-tool fix-sequences` repairs the sequences, and the same
insert goes in.

    .venv/bin/python backups/demo.py URL    (make demo passes the embedded server's URL)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
DUMP = HERE / "battery-hub.dump"
DBNAME = "battery_hub_demo"
INSERT = ("INSERT INTO \"user\" (hub_id, first_names, last_name, email) VALUES "
          "(1, 'Ada', 'Lovelace', %s) RETURNING user_id")


def _insert(url: str, attempt: int) -> None:
    print("$ psql -c 'INSERT INTO \"user\" (…) VALUES (…)'   # the application's next insert")
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(INSERT, (f"ada{attempt}@example.org",)).fetchone()
        print(f"INSERT 0 1: user_id {row[0] if row else '?'}\n")
    except psycopg.errors.UniqueViolation as error:
        print(f"ERROR:  {error.diag.message_primary}\nDETAIL:  {error.diag.message_detail}\n")


def main(server: str) -> int:
    from restore_tool import pgtools

    with psycopg.connect(server, autocommit=True) as conn:  # the demo's own database only
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(DBNAME)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
    url = make_conninfo(server, dbname=DBNAME)
    print(f"$ pg_restore --no-owner -d {DBNAME} {DUMP.relative_to(HERE.parent)}")
    subprocess.run([str(pgtools.find("pg_restore").path), "--no-owner", "--dbname", url,
                    str(DUMP)], check=True)
    print()
    _insert(url, 1)
    print("$ restore-tool fix-sequences")
    fixed = subprocess.run([sys.executable, "-m", "restore_tool", "fix-sequences",
                            "--database-url", url], check=False)
    print()
    _insert(url, 2)
    return fixed.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
