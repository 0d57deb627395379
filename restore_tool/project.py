"""restore-tool.toml: what a project tells restore-tool about its database (smoke rows,
protected targets), read with tomllib and checked key by key."""

from __future__ import annotations

import fnmatch
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .conninfo import resolved
from .errors import ConfigError

FILE = "restore-tool.toml"


@dataclass(frozen=True)
class SmokeRow:
    """A `[[smoke]]` row: exact values to insert (and roll back) into one table."""

    table: str
    values: Mapping[str, object]
    schema: str | None = None  # None: the table is found through the search_path

    @property
    def label(self) -> str:
        return f"{self.schema}.{self.table}" if self.schema else self.table


@dataclass(frozen=True)
class Project:
    path: Path | None = None  # the file read, if any
    smoke_rows: tuple[SmokeRow, ...] = ()
    automatic_smoke: bool = True
    smoke_timeout: float = 5.0  # seconds any one smoke statement may take
    protected: tuple[str, ...] = ()  # fnmatch patterns of database names or hosts


_PROJECT_KEYS = {"smoke", "automatic_smoke", "smoke_timeout", "protected"}


def load(path: Path | None = None, *, cwd: Path | None = None) -> Project:
    """`--config FILE`, else ./restore-tool.toml if there is one, else the defaults."""
    if path is None:
        found = (Path.cwd() if cwd is None else cwd) / FILE
        if not found.is_file():
            return Project()
        path = found
    elif not path.is_file():
        raise ConfigError(f"The config file {path} does not exist.", "Check the --config path.")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"The config file {path} could not be read: {error}.") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path} is not valid TOML: {error}.") from None
    unknown = sorted(set(data) - _PROJECT_KEYS)
    if unknown:
        raise ConfigError(f"{path} has unknown setting(s): {', '.join(unknown)}.",
                          f"Known: {', '.join(sorted(_PROJECT_KEYS))}.")
    automatic = data.get("automatic_smoke", True)
    if not isinstance(automatic, bool):
        raise ConfigError(f"{path}: automatic_smoke must be true or false.")
    timeout = data.get("smoke_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ConfigError(f"{path}: smoke_timeout must be a number of seconds above 0.")
    rows = data.get("smoke", [])
    if not isinstance(rows, list):
        raise ConfigError(f"{path}: smoke must be a list of [[smoke]] tables.")
    protected = data.get("protected", [])
    if not isinstance(protected, list) or not all(isinstance(p, str) and p for p in protected):
        raise ConfigError(f'{path}: protected must be a list of patterns, e.g. ["*prod*"].')
    return Project(path, tuple(_smoke_row(path, index, row) for index, row in enumerate(rows, 1)),
                   automatic, float(timeout), tuple(protected))


def _smoke_row(path: Path, index: int, row: object) -> SmokeRow:
    where = f"{path}: [[smoke]] number {index}"
    if not isinstance(row, dict):
        raise ConfigError(f"{where} is not a table.")
    unknown = sorted(set(row) - {"table", "schema", "values"})
    if unknown:
        raise ConfigError(f"{where} has unknown key(s): {', '.join(unknown)}.",
                          "Known: table, schema, values.")
    table, schema, values = row.get("table"), row.get("schema"), row.get("values", {})
    if not isinstance(table, str) or not table:
        raise ConfigError(f"{where} needs table = \"NAME\".")
    if schema is not None and not isinstance(schema, str):
        raise ConfigError(f"{where}: schema must be a string.")
    if not isinstance(values, dict):
        raise ConfigError(f"{where}: values must be a table, e.g. values = {{ id = 1 }}.")
    return SmokeRow(table, values, schema)


def protected_by(conninfo: str, project: Project, environ: Mapping[str, str] | None = None
                 ) -> str | None:
    """The pattern (from restore-tool.toml's `protected` or RESTORE_TOOL_PROTECTED, comma
    separated) that the target's database name or host matches, if any; case-insensitive."""
    environ = os.environ if environ is None else environ
    patterns = [*project.protected,
                *(p.strip() for p in environ.get("RESTORE_TOOL_PROTECTED", "").split(","))]
    params = resolved(conninfo)  # libpq's own: service file, PGDATABASE, PGHOST
    names = [params["dbname"], *params.get("host", "").split(","), params.get("hostaddr", "")]
    for pattern in filter(None, patterns):
        if any(name and fnmatch.fnmatch(name.lower(), pattern.lower()) for name in names):
            return pattern
    return None
