"""Benchmark: the full version grid on bigger data. The matrix schema of the suite
(tests/matrix.py) with `--rows` more rows in its tables, dumped by pg_dump 15-18 in every
format and restored with `restore-tool restore` into PostgreSQL 15-18, every client on PATH;
each cell's seconds and verdict (exit 0 and the source's row counts).

    python bench/matrix.py [--rows 200000] [--versions 15,16,17,18]

A version whose binaries cannot be had is left out and said so."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from restore_tool import commands  # noqa: E402
from restore_tool.config import Settings  # noqa: E402
from tests import matrix  # noqa: E402
from tests.helpers import dbname, execute  # noqa: E402
from tests.servers import NewDatabases, Server, bin_dir, cluster, embedded_server  # noqa: E402

GROW = """
INSERT INTO menu (id, note, dish) SELECT g + 100, 'SET row ' || g, 'dish ' || g
    FROM generate_series(1, {n}) g;
INSERT INTO guest (id, name) SELECT g + 100, 'guest ' || g FROM generate_series(1, {n}) g;
INSERT INTO reading (id, day) SELECT g + 1000, date '2026-01-01' + (g % 700)
    FROM generate_series(1, {n}) g;
REFRESH MATERIALIZED VIEW menu_count;
"""
COUNTS = "SELECT (SELECT count(*) FROM menu), (SELECT count(*) FROM guest), " \
         "(SELECT count(*) FROM reading)"


def counts(conninfo: str) -> tuple[int, ...]:
    import psycopg

    with psycopg.connect(conninfo) as conn:
        row = conn.execute(COUNTS).fetchone()
    assert row is not None
    return tuple(row)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--versions", default="15,16,17,18")
    args = parser.parse_args()
    wanted = args.versions.split(",")
    found = {v: b for v in wanted if (b := bin_dir(v)) is not None}
    for missing in sorted(set(wanted) - set(found)):
        print(f"PostgreSQL {missing}: binaries cannot be had here, left out")
    os.environ["PATH"] = os.pathsep.join([*(str(b) for b in found.values()),
                                          os.environ.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="rt-bench-matrix-") as tmp, ExitStack() as stack:
        base = Path(tmp)
        servers: dict[str, Server] = {}
        for version, binaries in found.items():
            folder = base / f"pg{version}"
            folder.mkdir()
            servers[version] = stack.enter_context(
                embedded_server(folder) if version == "18"
                else cluster(binaries, folder, f"pg{version}"))
        dumps: dict[tuple[str, str], Path] = {}
        expected: dict[str, tuple[int, ...]] = {}
        for version, server in servers.items():
            source = NewDatabases(server)("rt_bench_src")
            matrix.build_source(source, dbname(source))
            execute(source, GROW.format(n=args.rows))
            expected[version] = counts(source)
            out = base / f"dumps{version}"
            out.mkdir()
            for fmt in matrix.FORMATS:
                dumps[(version, fmt)] = matrix.dump(found[version], source, out, fmt)
        print(f"{args.rows:,} rows per table; seconds per restore (✓ exit 0 and the rows)")
        print("pg_dump/format".ljust(18) + "".join(f"into {v}".rjust(10) for v in servers))
        failed = 0
        for (version, fmt), path in dumps.items():
            cells = []
            for server in servers.values():
                made = NewDatabases(server)
                target = made("rt_bench", create=False)
                started = time.monotonic()
                result = commands.restore(Settings(target, "bench", base / ".restore-tool"),
                                          path)
                seconds = time.monotonic() - started
                good = result.exit_code == 0 and counts(target) == expected[version]
                failed += not good
                cells.append(f"{seconds:7.1f} {'✓' if good else '✗'}")
                made.drop_all()
            print(f"{version} {fmt}".ljust(18) + "".join(c.rjust(10) for c in cells))
        print(f"{len(dumps) * len(servers) - failed} of {len(dumps) * len(servers)} cells pass")
        return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
