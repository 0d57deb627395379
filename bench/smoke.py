"""Benchmark: the smoke test on N tables shaped like an app's (serial key, a NOT NULL text
column, a unique email, a foreign key, a CHECK), with one row each.

    python bench/smoke.py [--tables 1000] [--jobs 2] [--database-url URL]

Without --database-url it starts a throwaway embedded PostgreSQL (local socket). It reports
the smoke step alone (in-process, on fresh connections, as `restore-tool verify` meets them)
with 1 and with --jobs connections, and the whole `restore-tool verify` process."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import psycopg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from common import embedded_server, recreate  # noqa: E402

from restore_tool import db, smoke  # noqa: E402

BATCH = 200  # tables per DDL transaction: stays under max_locks_per_transaction


def build(admin: str, dbname: str, tables: int) -> str:
    url = recreate(admin, dbname)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE hub (hub_id serial PRIMARY KEY, name text NOT NULL);"
                     "INSERT INTO hub (name) VALUES ('Kibera')")
        for first in range(1, tables + 1, BATCH):
            last = min(first + BATCH - 1, tables)
            conn.execute(f"""
                DO $$ BEGIN FOR i IN {first}..{last} LOOP
                    EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY,
                        hub_id integer NOT NULL REFERENCES hub, name varchar(40) NOT NULL,
                        email varchar(254) NOT NULL UNIQUE, amount numeric(8, 2) NOT NULL
                        CHECK (amount > 0), created_at timestamptz NOT NULL DEFAULT now())', i);
                    EXECUTE format('INSERT INTO t%s (hub_id, name, email, amount)
                        VALUES (1, ''a'', ''a@example.org'', 5)', i);
                END LOOP; END $$""")
    return url


def run_smoke(url: str, jobs: int) -> tuple[float, dict[str, int]]:
    started = time.perf_counter()
    with db.connect(url) as conn:
        results = smoke.run(conn, smoke.Plan(), jobs=jobs, connect=lambda: db.connect(url))
    seconds = time.perf_counter() - started
    verdicts: dict[str, int] = {}
    for result in results:
        verdicts[str(result.verdict)] = verdicts.get(str(result.verdict), 0) + 1
    return seconds, verdicts


def verify_process(url: str, jobs: int) -> float:
    script = Path(sys.executable).with_name("restore-tool")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "restore_tool"]
    started = time.perf_counter()
    subprocess.run([*base, "verify", "--json", "--jobs", str(jobs), "--database-url", url],
                   check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--database-url", help="an admin URL of an existing server")
    args = parser.parse_args()

    def bench(admin: str) -> None:
        started = time.perf_counter()
        url = build(admin, "rt_bench_smoke", args.tables)
        print(f"built {args.tables + 1} tables in {time.perf_counter() - started:.1f}s")
        for jobs in sorted({1, args.jobs}):
            seconds, verdicts = run_smoke(url, jobs)
            per_table = seconds / (args.tables + 1) * 1000
            print(f"smoke step, {jobs} job(s): {seconds:.2f}s ({per_table:.2f} ms per table), "
                  f"{verdicts}")
        print(f"restore-tool verify (sequences + smoke), {args.jobs} jobs: "
              f"{verify_process(url, args.jobs):.2f}s")

    if args.database_url:
        bench(args.database_url)
    else:
        with embedded_server() as (admin, _log):
            bench(admin)


if __name__ == "__main__":
    main()
