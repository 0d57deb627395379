"""Settings resolved once from flags > environment > .env > the embedded default,
and the masking that keeps passwords out of everything we print."""

from __future__ import annotations

import fnmatch
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

import psycopg
from dotenv import dotenv_values
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .errors import ConfigError

EMBEDDED_DIRNAME = ".restore-tool"
EMBEDDED_DATABASE = "restore_tool"
PROJECT_FILE = "restore-tool.toml"

# docker-compose style variables, and what the postgres image assumes when one is missing
_POSTGRES_VARS = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_DB")
# libpq variables that name a server or database (PGPASSWORD alone picks no target)
_LIBPQ_TARGET_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
_LIBPQ_VARS = {
    "PGHOST": "host",
    "PGHOSTADDR": "hostaddr",
    "PGPORT": "port",
    "PGDATABASE": "dbname",
    "PGUSER": "user",
    "PGPASSWORD": "password",
    "PGPASSFILE": "passfile",
    "PGSERVICE": "service",
    "PGSSLMODE": "sslmode",
    "PGCONNECT_TIMEOUT": "connect_timeout",
    "PGOPTIONS": "options",
}
# SQLAlchemy spells URLs postgresql+psycopg2://; libpq wants postgresql://
_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://")


@dataclass(frozen=True)
class Settings:
    """Where the target database is. `conninfo` is None for the embedded default, whose
    address is only known once its server runs."""

    conninfo: str | None
    origin: str
    embedded_dir: Path

    @property
    def embedded(self) -> bool:
        return self.conninfo is None

    def redacted(self) -> str:
        """The target for display: password masked, origin named."""
        if self.conninfo is None:
            return f"embedded PostgreSQL in {self.embedded_dir} ({self.origin})"
        return f"{mask(self.conninfo)} ({self.origin})"


def resolve(
    *,
    database_url: str | None = None,
    env_file: Path | None = None,
    embedded: bool = False,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """First match wins: --database-url, the real environment (DATABASE_URL, then POSTGRES_*,
    then PG*), the same names in the .env file, otherwise the embedded server."""
    cwd = Path.cwd() if cwd is None else cwd
    embedded_dir = cwd / EMBEDDED_DIRNAME
    if embedded:
        return Settings(None, "--embedded", embedded_dir)
    if database_url is not None:
        return Settings(_from_url(database_url, "--database-url"), "--database-url", embedded_dir)

    sources: list[tuple[str, Mapping[str, str | None]]] = [
        ("the environment", os.environ if environ is None else environ)
    ]
    dotenv_path = env_file if env_file is not None else cwd / ".env"
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"The env file {env_file} does not exist.", "Check the --env-file path.")
    if dotenv_path.is_file():
        sources.append((str(dotenv_path), dotenv_values(dotenv_path)))

    for where, values in sources:
        found = _from_variables(values, where)
        if found is not None:
            return Settings(found[0], found[1], embedded_dir)
    return Settings(None, "no target configured", embedded_dir)


def _from_variables(values: Mapping[str, str | None], where: str) -> tuple[str, str] | None:
    def get(name: str) -> str | None:
        value = values.get(name)
        return value if value else None

    if url := get("DATABASE_URL"):
        origin = f"DATABASE_URL in {where}"
        return _from_url(url, origin), origin
    if any(get(name) for name in _POSTGRES_VARS):
        user = get("POSTGRES_USER") or "postgres"
        params = {
            "host": get("POSTGRES_HOST") or "localhost",
            "port": get("POSTGRES_PORT") or "5432",
            "user": user,
            "password": get("POSTGRES_PASSWORD"),
            "dbname": get("POSTGRES_DB") or user,
        }
        return make_conninfo(**_present(params)), f"POSTGRES_* in {where}"
    if any(get(name) for name in _LIBPQ_TARGET_VARS):
        params = {key: get(var) for var, key in _LIBPQ_VARS.items()}
        return make_conninfo(**_present(params)), f"PG* variables in {where}"
    return None


def _present(params: Mapping[str, str | None]) -> dict[str, str]:
    return {key: value for key, value in params.items() if value is not None}


def _from_url(url: str, origin: str) -> str:
    """Validate a URL or key=value DSN; accept SQLAlchemy's postgresql+driver:// spelling."""
    url = _DRIVER_SUFFIX.sub(r"\1://", url.strip())
    if not url:
        raise ConfigError(f"The database URL from {origin} is empty.")
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        reason = scrub(str(error).splitlines()[0])
        raise ConfigError(
            f"The database URL from {origin} is not a valid PostgreSQL URL: {reason}.",
            "Expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME.",
        ) from None
    port = str(params.get("port") or "")
    if port and not all(part.isdigit() for part in port.split(",")):
        raise ConfigError(f"The database URL from {origin} has port {port!r}, not a number.")
    return url


def mask(conninfo: str) -> str:
    """The conninfo as a postgresql:// URL with the password replaced by ***."""
    params = {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}
    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = params.pop("dbname", "")
    netloc = quote(user, safe="")
    if password is not None:
        netloc += ":***"
    if netloc:
        netloc += "@"
    if host.startswith("/"):
        params = {"host": host, **({"port": port} if port else {}), **params}
    else:
        netloc += host + (f":{port}" if port else "")
    query = f"?{urlencode(params, safe='/')}" if params else ""
    return f"postgresql://{netloc}/{quote(dbname, safe='')}{query}"


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def scrub(text: str, password: str | None = None) -> str:
    """Remove anything that looks like a password from a message before it is shown."""
    if password:
        text = text.replace(password, "***")
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def password_of(conninfo: str) -> str | None:
    value = conninfo_to_dict(conninfo).get("password")
    return None if value is None else str(value)


# ---------------------------------------------------------------------------------------------
# restore-tool.toml: what a project tells restore-tool about its database.


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


def load_project(path: Path | None = None, *, cwd: Path | None = None) -> Project:
    """`--config FILE`, else ./restore-tool.toml if there is one, else the defaults."""
    if path is None:
        found = (Path.cwd() if cwd is None else cwd) / PROJECT_FILE
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
    params = conninfo_to_dict(conninfo)
    names = [str(params.get("dbname") or params.get("user") or ""),
             *str(params.get("host") or "").split(","), str(params.get("hostaddr") or "")]
    for pattern in filter(None, patterns):
        if any(name and fnmatch.fnmatch(name.lower(), pattern.lower()) for name in names):
            return pattern
    return None
