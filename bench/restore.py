"""Benchmark: `restore-tool restore` (the whole pipeline: inspect, load, repair sequences,
analyze, verify) against the bare tools, `pg_restore -j N` then `vacuumdb --analyze-only -j N`,
into the same throwaway embedded server, in the same run; what the proof adds to it (the
same restore with --no-proof); and `verify --against DUMP` on the database restored.

    python bench/restore.py [--rows 4000000] [--repeat 5]

Targets (medians of --repeat runs, alternating): the pipeline without its proof within 10% of
the bare tools; the proof adds at most 15% to the restore; `verify --against` takes less than
the restore itself."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import embedded_server, recreate  # noqa: E402

TABLES = 4


def build(admin: str, rows: int) -> str:
    """TABLES tables of rows/TABLES rows each: serial key, a few columns, one more index."""
    url = recreate(admin, "bench_restore_source")
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(TABLES):
            table = sql.Identifier(f"orders_{i}")
            conn.execute(sql.SQL(
                "CREATE TABLE {} (id bigserial PRIMARY KEY, customer int NOT NULL, "
                "amount numeric(10, 2) NOT NULL, note text, created timestamptz NOT NULL)"
            ).format(table))
            conn.execute(sql.SQL(
                "INSERT INTO {} (id, customer, amount, note, created) "
                "SELECT g, g %% 50000, (g %% 10000) / 100.0, 'order ' || g, "
                "timestamptz '2024-01-01' + g * interval '1 second' "
                "FROM generate_series(1, %s) g").format(table), (rows // TABLES,))
            conn.execute(sql.SQL("CREATE INDEX ON {} (customer)").format(table))
    return url


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env=env)
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    jobs = os.cpu_count() or 1
    from restore_tool import embedded

    bin_dir = embedded.bin_dir()
    script = Path(sys.executable).with_name("restore-tool")
    cli = [str(script)] if script.exists() else [sys.executable, "-m", "restore_tool"]

    with embedded_server() as (admin, _), tempfile.TemporaryDirectory() as tmp:
        print(f"building {args.rows:,} rows in {TABLES} tables ...", flush=True)
        source = build(admin, args.rows)
        dump = Path(tmp) / "bench.dump"
        subprocess.run([str(bin_dir / "pg_dump"), "-Fc", "-f", str(dump), "-d", source],
                       check=True)
        bare, tool, unproved, against = [], [], [], []
        for _ in range(args.repeat):
            started = time.perf_counter()
            target = recreate(admin, "bench_restore_bare", create=True)
            subprocess.run([str(bin_dir / "pg_restore"), "-j", str(jobs), "-d", target,
                            str(dump)], check=True)
            subprocess.run([str(bin_dir / "vacuumdb"), "--analyze-only", "--quiet", "-j",
                            str(jobs), "-d", target], check=True)
            bare.append(time.perf_counter() - started)

            target = recreate(admin, "bench_restore_tool", create=False)
            unproved.append(timed([*cli, "restore", str(dump), "--json", "--jobs", str(jobs),
                                   "--no-proof", "--database-url", target]))

            target = recreate(admin, "bench_restore_tool", create=False)
            tool.append(timed([*cli, "restore", str(dump), "--json", "--jobs", str(jobs),
                               "--database-url", target]))
            against.append(timed([*cli, "verify", "--against", str(dump), "--no-smoke",
                                  "--json", "--jobs", str(jobs), "--database-url", target]))
        target = recreate(admin, "bench_restore_tool", create=False)
        done = subprocess.run([*cli, "restore", str(dump), "--json", "--jobs", str(jobs),
                               "--database-url", target], check=True, capture_output=True,
                              text=True)
        proof_line = next(step for step in json.loads(done.stdout)["steps"]
                          if step["name"] == "proof")["details"][-1]["summary"]
        best_bare, best_tool = statistics.median(bare), statistics.median(unproved)
        proved, checked = statistics.median(tool), statistics.median(against)
        size = dump.stat().st_size

    over = best_tool / best_bare - 1
    proof = proved / best_tool - 1
    print(f"rows:                       {args.rows:,} ({size / 1e6:.0f} MB "
          f"custom dump), {jobs} jobs")
    print(f"pg_restore -j + vacuumdb:   {best_bare:.2f} s median  (runs: "
          f"{', '.join(f'{t:.2f}' for t in bare)})")
    print(f"restore --no-proof:         {best_tool:.2f} s median  (runs: "
          f"{', '.join(f'{t:.2f}' for t in unproved)})")
    print(f"overhead:                   {over:+.1%} (target: at most +10%)")
    print(f"restore (with its proof):   {proved:.2f} s median  (runs: "
          f"{', '.join(f'{t:.2f}' for t in tool)})")
    print(f"the proof adds:             {proof:+.1%} (target: at most +15%)")
    print(f"  its rows: {proof_line}")
    print(f"verify --against the dump:  {checked:.2f} s median  (runs: "
          f"{', '.join(f'{t:.2f}' for t in against)}; target: less than the restore)")
    ok = over <= 0.10 and proof <= 0.15 and checked < proved
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
