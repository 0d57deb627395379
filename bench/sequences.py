"""Benchmark: `restore-tool fix-sequences` against the per-table loop of hand-written
fix_all_sequences.py scripts, both as whole processes, on N tables with lagging sequences.

    python bench/sequences.py [--tables 5000] [--repeat 3] [--latency 1.0]

It starts a throwaway embedded PostgreSQL and races both over its local socket, then through
a small TCP proxy that adds --latency ms (default 1) to every round trip. The number
of statements each side sends is read from the server's own log (log_statement=all, in a
separate run so that logging does not weigh on the timings), at N and at N/10 tables."""

from __future__ import annotations

import argparse
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import delaying_proxy, embedded_server, recreate  # noqa: E402

BATCH = 400  # tables per DDL transaction: stays under max_locks_per_transaction


def build(admin: str, dbname: str, tables: int) -> str:
    url = recreate(admin, dbname)
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(1, tables + 1, BATCH):
            last = min(first + BATCH - 1, tables)
            conn.execute(f"""
                DO $$ BEGIN FOR i IN {first}..{last} LOOP
                    EXECUTE format('CREATE TABLE t%s (id serial PRIMARY KEY, note text)', i);
                    EXECUTE format('INSERT INTO t%s SELECT g, ''x'' FROM generate_series(1, %s) g',
                                   i, 1 + i % 20);
                END LOOP; END $$""")
    return url


def lag(url: str) -> None:
    """Every sequence back to 1, as after an explicit-id import; then a checkpoint, so that
    every run starts from the same state: without it the run's backends write out what the
    build or the previous run left dirty (the database is larger than shared_buffers), and
    the same run took 0.8 to 1.4 s in the first minutes after the build, 0.7 s after them."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("""
            DO $$ DECLARE s regclass; BEGIN
                FOR s IN SELECT c.oid FROM pg_class c WHERE c.relkind = 'S' LOOP
                    PERFORM setval(s, 1, false);
                END LOOP; END $$""")
        conn.execute("CHECKPOINT")


def tool_argv(url: str) -> list[str]:
    script = Path(sys.executable).with_name("restore-tool")
    base = [str(script)] if script.exists() else [sys.executable, "-m", "restore_tool"]
    return [*base, "fix-sequences", "--json", "--database-url", url]


def baseline_argv(url: str) -> list[str]:
    return [sys.executable, str(HERE / "fix_all_sequences.py"), url]


def timed(argv: list[str], env: dict[str, str] | None = None,
          cpu: list[float] | None = None) -> float:
    """Wall-clock seconds of the process; with `cpu`, its CPU seconds (user + system) are
    appended there: steadier than wall time on a busy machine, and the loop's low share
    shows where its time goes (waiting on round trips and on a WAL flush per setval)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if cpu is not None:
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


_LOGGED = re.compile(r"LOG:  (?:statement|execute [^:]*): ")


def statements(argv: list[str], url: str, log: Path) -> int:
    """Statements the process sent, counted by the server (log_statement=all)."""
    lag(url)
    offset = log.stat().st_size
    env = {**os.environ, "PGOPTIONS": "-c log_statement=all"}
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
    time.sleep(0.3)  # let the logger flush
    with log.open("rb") as handle:
        handle.seek(offset)
        text = handle.read().decode(errors="replace")
    return len(_LOGGED.findall(text))


def flushes(argv: list[str], url: str) -> int:
    """WAL flushes (fsync calls) the server made while the process ran (pg_stat_io): every
    commit that wrote WAL waits for one, and each setval in autocommit is such a commit."""
    lag(url)
    query = "SELECT sum(fsyncs) FROM pg_stat_io WHERE object = 'wal'"
    with psycopg.connect(url, autocommit=True) as conn:
        before = conn.execute(query).fetchone()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        conn.execute("SELECT pg_stat_clear_snapshot()")
        after = conn.execute(query).fetchone()
    return int(after[0]) - int(before[0]) if before and after else -1


def lagging(url: str, tables: int) -> int:
    """Tables whose sequence would hand out an id at or below their MAX (checks that the
    repair really ran), read independently of either side, BATCH tables per statement."""
    behind = 0
    with psycopg.connect(url, autocommit=True) as conn:
        for first in range(1, tables + 1, BATCH):
            rows = sql.SQL(",\n").join(
                sql.SQL("((SELECT max(id) FROM {t}) >= (SELECT CASE WHEN is_called "
                        "THEN last_value + 1 ELSE last_value END FROM {s}))").format(
                    t=sql.Identifier(f"t{i}"), s=sql.Identifier(f"t{i}_id_seq"))
                for i in range(first, min(first + BATCH, tables + 1)))
            row = conn.execute(sql.SQL(
                "SELECT count(*) FILTER (WHERE behind) FROM (VALUES {}) AS v(behind)").format(
                rows)).fetchone()
            behind += int(row[0]) if row else 0
    return behind


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tables", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--latency", type=float, default=1.0,
                        help="milliseconds each round trip costs through the delaying proxy")
    args = parser.parse_args()

    with embedded_server() as (admin, log):
        print(f"building {args.tables} tables ...", flush=True)
        url = build(admin, "bench_sequences", args.tables)
        with psycopg.connect(url) as conn:
            sizes = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database())), "
                                 "current_setting('shared_buffers')").fetchone()
        cpu: dict[str, list[float]] = {}
        best = {"local": race(url, args.tables, args.repeat, cpu)}
        bare = floor(url, args.tables, max(1, min(8, os.cpu_count() or 1)))
        socket_dir = conninfo_to_dict(url)["host"]
        with delaying_proxy(str(socket_dir), args.latency / 1000) as port:
            far = make_conninfo(url, host="127.0.0.1", port=str(port))
            best["far"] = race(far, args.tables, 1, {})  # the loop alone takes a while there

        synced = {"tool": flushes(tool_argv(url), url),
                  "baseline": flushes(baseline_argv(url), url)}
        small_url = build(admin, "bench_sequences_small", max(1, args.tables // 10))
        counts = {
            "tool": (statements(tool_argv(small_url), small_url, log),
                     statements(tool_argv(url), url, log)),
            "baseline": (statements(baseline_argv(small_url), small_url, log),
                         statements(baseline_argv(url), url, log)),
        }

    small = max(1, args.tables // 10)
    targets = {"local": 5.0, "far": 10.0}
    ok = counts["tool"][0] == counts["tool"][1]
    print(f"tables:                  {args.tables}")
    if sizes:
        print(f"database:                {sizes[0]} (shared_buffers: {sizes[1]})")
    for where, (tool, base) in best.items():
        speedup = min(base) / min(tool)
        ok = ok and speedup >= targets[where]
        label = ("over the local socket" if where == "local"
                 else f"with {args.latency:g} ms per round trip (delaying proxy)")
        print(f"{label}:")
        print(f"  restore-tool fix-sequences: {min(tool):.2f} s  (runs: "
              f"{', '.join(f'{t:.2f}' for t in tool)})")
        print(f"  fix_all_sequences.py loop:  {min(base):.2f} s  (runs: "
              f"{', '.join(f'{t:.2f}' for t in base)})")
        print(f"  speed-up:                {speedup:.1f}x (target: at least "
              f"{targets[where]:g}x)")
    print("client process CPU over the local socket (user + system, least of the runs):")
    print(f"  restore-tool {min(cpu['tool']):.2f} s, loop {min(cpu['baseline']):.2f} s")
    print(f"WAL flushes the server waited for in one run: restore-tool {synced['tool']}, "
          f"loop {synced['baseline']}")
    start, found, maxes = bare
    least = start + found + maxes
    print(f"floor on this machine ({os.cpu_count()} CPUs), before any sequence is read or set:")
    print(f"  Python with psycopg and typer, start to exit: {start:.2f} s, discovery query: "
          f"{found:.2f} s, bare MAX over every table: {maxes:.2f} s; together {least:.2f} s")
    print(f"  so no run can beat the loop by more than {min(best['local'][1]) / least:.1f}x "
          "over the local socket here")
    for name, (at_small, at_large) in counts.items():
        print(f"statements sent by {name:<9} {at_small} at {small} tables, "
              f"{at_large} at {args.tables} tables")
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


def floor(url: str, tables: int, jobs: int) -> tuple[float, float, float]:
    """What any run of the tool must spend here, with nothing else done: starting Python with
    the libraries the CLI cannot do without (psycopg, typer) and exiting as the CLI exits
    (what is alive frozen first, which spares the final collections), the discovery query,
    and a bare read of every table's MAX (its highest id through the index, the cheapest
    form known, the one the tool uses), spread over `jobs` backends as the tool spreads it
    (the sequence reads, setval calls, planning and report come on top). Each the best of
    3, in seconds."""
    from concurrent.futures import ThreadPoolExecutor

    from restore_tool.sequences import discover

    start = min(timed([sys.executable, "-c", "import gc, psycopg, typer; gc.freeze()"])
                for _ in range(3))
    found = []
    for _ in range(3):
        with psycopg.connect(url, autocommit=True) as conn:
            began = time.perf_counter()
            discover(conn)
            found.append(time.perf_counter() - began)
    loop = ("DO $$ DECLARE v numeric; BEGIN FOR i IN {first}..{last} BY {step} LOOP "
            "EXECUTE format('SELECT id FROM t%s WHERE id IS NOT NULL ORDER BY id DESC LIMIT 1', "
            "i) INTO v; END LOOP; END $$")

    def share(first: int) -> None:
        with psycopg.connect(url, autocommit=True) as conn:  # a cold backend, as the tool's
            conn.execute(loop.format(first=first, last=tables, step=jobs))

    maxes = []
    with ThreadPoolExecutor(jobs) as pool:
        for _ in range(3):
            began = time.perf_counter()
            list(pool.map(share, range(1, jobs + 1)))
            maxes.append(time.perf_counter() - began)
    return start, min(found), min(maxes)


def race(url: str, tables: int, repeat: int, cpu: dict[str, list[float]]
         ) -> tuple[list[float], list[float]]:
    """Each side `repeat` times from lagging sequences: (tool times, baseline times); the
    CPU seconds of each run go to cpu["tool"] and cpu["baseline"]."""
    tool: list[float] = []
    base: list[float] = []
    for _ in range(repeat):
        lag(url)
        tool.append(timed(tool_argv(url), cpu=cpu.setdefault("tool", [])))
        assert lagging(url, tables) == 0, "the tool left sequences unrepaired"
        lag(url)
        base.append(timed(baseline_argv(url), cpu=cpu.setdefault("baseline", [])))
        assert lagging(url, tables) == 0, "the baseline left sequences unrepaired"
    return tool, base


if __name__ == "__main__":
    sys.exit(main())
