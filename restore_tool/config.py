"""Settings resolved once: flags > the environment merged over .env > the embedded
default."""

from __future__ import annotations

import codecs
import io
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psycopg
from dotenv import dotenv_values
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from .conninfo import libpq_variables, may_hold_secret, misread, scrub
from .errors import ConfigError

EMBEDDED_DIRNAME = ".restore-tool"
EMBEDDED_DATABASE = "restore_tool"

# docker-compose style variables, and what the postgres image assumes when one is missing
# (POSTGRES_PASSWORD alone is the image's one required variable: user and database postgres)
_POSTGRES_VARS = ("POSTGRES_HOST", "POSTGRES_PORT", "POSTGRES_USER", "POSTGRES_PASSWORD",
                  "POSTGRES_DB")
# libpq variables that name a server or database (PGPASSWORD alone picks no target)
_LIBPQ_TARGET_VARS = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGUSER", "PGSERVICE")
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


def embedded_dir(cwd: Path | None = None) -> Path:
    """Where the embedded server keeps its data: ./.restore-tool."""
    return (Path.cwd() if cwd is None else cwd) / EMBEDDED_DIRNAME


NO_TARGET = "no target configured"


def resolve(
    *,
    database_url: str | None = None,
    env_file: Path | None = None,
    embedded: bool = False,
    environ: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> Settings:
    """--database-url, else the environment and the .env file merged variable by variable
    as docker compose merges them (a variable set in the environment beats the same one in
    .env): DATABASE_URL, then POSTGRES_* (the postgres image's names and defaults), then
    libpq's PG*; otherwise the embedded server (origin NO_TARGET)."""
    cwd = Path.cwd() if cwd is None else cwd
    directory = embedded_dir(cwd)
    if embedded:
        return Settings(None, "--embedded", directory)
    if database_url is not None:
        return Settings(checked_url(database_url, "--database-url"), "--database-url", directory)

    dotenv_path = env_file if env_file is not None else cwd / ".env"
    if env_file is not None and not env_file.is_file():
        raise ConfigError(f"The env file {env_file} does not exist.", "Check the --env-file path.")
    sources: list[tuple[str, Mapping[str, str | None]]] = []
    if dotenv_path.is_file():
        sources.append((str(dotenv_path), dotenv_values(stream=io.StringIO(_text(dotenv_path)))))
    sources.append(("the environment", os.environ if environ is None else environ))
    merged: dict[str, tuple[str, str]] = {}  # name -> (value, where it was set)
    for where, values in sources:  # later sources win
        merged.update({name: (value, where) for name, value in values.items() if value})
    found = _from_variables(merged)
    if found is not None:
        return Settings(found[0], found[1], directory)
    return Settings(None, NO_TARGET, directory)


_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
         (codecs.BOM_UTF16_BE, "utf-16"))


def _text(path: Path) -> str:
    """An env file's text: UTF-8, or what its byte-order mark says (a Windows editor's UTF-8
    or UTF-16); anything else is one sentence, never a guess at the target."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"The env file {path} cannot be read: {error.strerror}.") from None
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    if encoding == "utf-8" and b"\0" in data:  # UTF-16 without its mark: NUL every other byte
        raise ConfigError(f"The env file {path} holds NUL bytes (UTF-16 without a "
                          "byte-order mark?).", "Save it as UTF-8.")
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ConfigError(
            f"The env file {path} is not {encoding.upper()} text (byte 0x{data[error.start]:02x} "
            f"on line {line}).", "Save it as UTF-8.") from None


def _from_variables(merged: Mapping[str, tuple[str, str]]) -> tuple[str, str] | None:
    """The target from the merged variables, and where it came from (`POSTGRES_* in the
    environment and ./.env`)."""
    def get(name: str) -> str | None:
        return merged[name][0] if name in merged else None

    def origin(family: str, names: Sequence[str]) -> str:
        wheres = list(dict.fromkeys(merged[name][1] for name in names if name in merged))
        return f"{family} in {' and '.join(wheres)}"

    if url := get("DATABASE_URL"):
        where = origin("DATABASE_URL", ["DATABASE_URL"])
        return checked_url(url, where), where
    if any(get(name) for name in _POSTGRES_VARS):
        user = get("POSTGRES_USER") or "postgres"  # the postgres image's defaults
        params = {
            "host": get("POSTGRES_HOST") or "localhost",
            "port": get("POSTGRES_PORT") or "5432",
            "user": user,
            "password": get("POSTGRES_PASSWORD"),
            "dbname": get("POSTGRES_DB") or user,
        }
        return make_conninfo(**_present(params)), origin("POSTGRES_*", _POSTGRES_VARS)
    if any(get(name) for name in _LIBPQ_TARGET_VARS):
        variables = libpq_variables()
        params = {key: get(var) for var, key in variables.items()}
        return make_conninfo(**_present(params)), origin("PG* variables", list(variables))
    return None


def _present(params: Mapping[str, str | None]) -> dict[str, str]:
    return {key: value for key, value in params.items() if value is not None}


# libpq quotes the token it cannot read, which may be the password: these say where, not what
_UNENCODED = ("The database URL from {origin} has an unencoded @ or / in its user or "
              "password, so its host and database cannot be told apart.")
_UNREADABLE = ("The database URL from {origin} is not a valid PostgreSQL URL (its text is not "
               "shown: it holds a password).")
_ENCODE_HINT = ("Percent-encode the user and password (% as %25, @ as %40, / as %2F, space "
                "as %20), or in key=value form quote the value: password='pa ss'.")


def checked_url(url: str, origin: str) -> str:
    """Validate a URL or key=value DSN, for the target or a live source (`origin` names it
    in the sentence: the URL itself is never shown); accept SQLAlchemy's
    postgresql+driver:// spelling."""
    url = _DRIVER_SUFFIX.sub(r"\1://", url.strip())
    if not url:
        raise ConfigError(f"The database URL from {origin} is empty.")
    if misread(url):
        raise ConfigError(_UNENCODED.format(origin=origin), _ENCODE_HINT)
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError as error:
        if may_hold_secret(url):
            raise ConfigError(_UNREADABLE.format(origin=origin), _ENCODE_HINT) from None
        reason = scrub(str(error).splitlines()[0])
        raise ConfigError(
            f"The database URL from {origin} is not a valid PostgreSQL URL: {reason}.",
            "Expected postgresql://USER:PASSWORD@HOST:PORT/DBNAME.",
        ) from None
    port = str(params.get("port") or "")
    if port and not all(part.isdigit() for part in port.split(",")):
        raise ConfigError(f"The database URL from {origin} has port {port!r}, not a number.")
    return url
