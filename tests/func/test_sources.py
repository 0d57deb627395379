"""Where a refresh script's dump comes from, through the real CLI against a real server:
a pipe (`pg_dump … | restore-tool restore -`, /dev/stdin, a FIFO) and a folder of backups."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, cast

import pytest

from restore_tool.errors import BadInput
from restore_tool.restore import sources
from tests.conftest import ROOT
from tests.func.test_faults import CLEAN_ENV
from tests.helpers import execute, pg_dump, row_counts
from tests.servers import NewDatabases, embedded_bin_dir

SAMPLE = ROOT / "backups" / "battery-hub.dump"


def _restore(*args: str, stdin: IO[bytes] | int | None = subprocess.DEVNULL,
             cwd: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    return subprocess.run([sys.executable, "-m", "restore_tool", "restore", *args, "--json"],
                          stdin=stdin, capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)


def _facts(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    assert done.returncode == 0, done.stdout + done.stderr
    return dict(json.loads(done.stdout)["facts"])


def test_a_pg_dump_piped_in_is_spooled_and_restored_with_jobs(
        new_database: NewDatabases) -> None:
    source = new_database("rt_pipe_source")
    execute(source, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t SELECT "
                    "generate_series(1, 1000)")
    target = new_database("rt_pipe_target", create=False)
    dump = subprocess.Popen([str(embedded_bin_dir() / "pg_dump"), "-Fc", "--dbname", source],
                            stdout=subprocess.PIPE)
    with dump:
        done = _restore("-", "--database-url", target, "--jobs", "2", stdin=dump.stdout)
    assert dump.returncode == 0
    facts = _facts(done)
    assert facts["Dump"].startswith("standard input (spooled: ") and "custom" in facts["Dump"]
    steps = json.loads(done.stdout)["steps"]
    assert steps[1]["summary"].endswith(", 2 jobs"), steps[1]
    assert row_counts(target) == {"t": 1000}
    assert not list(Path("/tmp").glob("restore-tool-work-*/stdin.dump"))  # gone with the run


def test_dev_stdin_and_a_plain_script_piped_in(new_database: NewDatabases,
                                               tmp_path: Path) -> None:
    source = new_database("rt_stdin_source")
    execute(source, "CREATE TABLE t (id serial PRIMARY KEY); INSERT INTO t VALUES (7)")
    script = pg_dump(source, tmp_path, "plain")
    target = new_database("rt_stdin_target", create=False)
    with subprocess.Popen(["cat", str(script)], stdout=subprocess.PIPE) as cat:
        facts = _facts(_restore("/dev/stdin", "--database-url", target, stdin=cat.stdout))
    assert facts["Dump"].startswith("/dev/stdin (spooled: ") and "plain" in facts["Dump"]
    assert row_counts(target) == {"t": 1}


def test_nothing_piped_in_is_one_sentence(new_database: NewDatabases) -> None:
    target = new_database("rt_stdin_empty", create=False)
    done = _restore("-", "--database-url", target)
    assert done.returncode == 2 and "standard input is empty: nothing to restore." in \
        json.loads(done.stdout)["steps"][0]["summary"]


def test_a_folder_of_backups_restores_its_newest_dump_and_names_it(
        new_database: NewDatabases, tmp_path: Path) -> None:
    """The newest dump by modification time; one still being written (.part, .tmp) and
    files that are no dump are passed over."""
    backups = tmp_path / "backups"
    backups.mkdir()
    old = backups / "2026-12-01.dump"
    shutil.copy(SAMPLE, old)
    os.utime(old, (time.time() - 86400,) * 2)
    source = new_database("rt_newest_source")
    execute(source, "CREATE TABLE newest (id int); INSERT INTO newest VALUES (1), (2)")
    newest = pg_dump(source, backups, "custom").rename(backups / "2026-12-02.dump")
    os.utime(newest, (time.time() - 60,) * 2)
    (backups / "2026-12-03.dump.part").write_bytes(b"PGDMP" + b"\0" * 100)
    (backups / "notes.txt").write_text("rotated nightly\n")
    target = new_database("rt_newest_target", create=False)
    facts = _facts(_restore(str(backups), "--database-url", target))
    assert facts["Dump"].startswith(f"{newest} (the newest dump in {backups}; newer but left "
                                    "out: 2026-12-03.dump.part)")
    assert row_counts(target) == {"newest": 2}


def test_a_folder_without_a_dump_is_one_sentence(tmp_path: Path,
                                                 new_database: NewDatabases) -> None:
    (tmp_path / "notes.txt").write_text("nothing here\n")
    target = new_database("rt_no_dump", create=False)
    done = _restore(str(tmp_path), "--database-url", target)
    assert done.returncode == 2
    assert json.loads(done.stdout)["steps"][0]["summary"] == (
        f"{tmp_path} holds no dump (no pg_dump archive, SQL dump or directory-format dump in "
        "it).")


def test_a_fifo_is_spooled_too(new_database: NewDatabases, tmp_path: Path) -> None:
    fifo = tmp_path / "dump.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with fifo.open("wb") as out:
            out.write(SAMPLE.read_bytes())

    writer = threading.Thread(target=feed)
    writer.start()
    target = new_database("rt_fifo", create=False)
    facts = _facts(_restore(str(fifo), "--database-url", target))
    writer.join()
    assert facts["Dump"].startswith(f"{fifo} (spooled: ")
    assert row_counts(target)["user"] == 16


def test_spooling_stops_with_one_sentence_when_the_disk_fills(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The disk running out is made by shrinking what disk_usage reports: the partial copy
    is removed and the sentence says how far it got."""
    real = shutil.disk_usage
    calls = iter(range(1000))

    def filling(path: object) -> object:
        usage = real(path)  # type: ignore[arg-type]
        return usage._replace(free=sources.CHUNK * 3 if next(calls) < 2 else 1024)

    monkeypatch.setattr(shutil, "disk_usage", filling)
    with SAMPLE.open("rb") as dump_bytes, pytest.raises(BadInput) as caught:
        big = _Repeat(dump_bytes.read(), 5)
        sources.spool(cast(IO[bytes], big), tmp_path / "stdin.dump", "standard input")
    assert caught.value.message == (f"Spooling standard input into {tmp_path} stopped after "
                                    "2.0 MiB: only 1.0 KiB are free there.")
    assert "--work-dir" in (caught.value.hint or "")
    assert not (tmp_path / "stdin.dump").exists()


class _Repeat:
    """A stream of `times` MiB-sized reads."""

    def __init__(self, data: bytes, times: int) -> None:
        self.data, self.left = (data * (sources.CHUNK // len(data) + 1))[:sources.CHUNK], times

    def read(self, _size: int) -> bytes:
        self.left -= 1
        return self.data if self.left >= 0 else b""
