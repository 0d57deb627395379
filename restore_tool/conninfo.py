"""The one place for connection strings: the URL written out (password masked or kept),
secrets scrubbed from messages, the database a conninfo names, the maintenance database,
and the environment child tools get. libpq's own option table names the variables."""

from __future__ import annotations

import configparser
import functools
import getpass
import os
import re
from urllib.parse import quote

from psycopg import pq
from psycopg.conninfo import conninfo_to_dict, make_conninfo


@functools.cache
def libpq_variables() -> dict[str, str]:
    """Every environment variable libpq reads and the keyword it sets (`PGSSLROOTCERT` ->
    `sslrootcert`), from libpq itself."""
    return {option.envvar.decode(): option.keyword.decode()
            for option in pq.Conninfo.get_defaults() if option.envvar}


def _params(info: str) -> dict[str, str]:
    return {key: str(value) for key, value in conninfo_to_dict(info).items()
            if value is not None}


def url(info: str, *, keep_password: bool = False) -> str:
    """The conninfo as a postgresql:// URL that libpq reads back to the same parameters:
    the password as `***` (for people), or kept (only ever for a child's environment)."""
    params = _params(info)
    user = params.pop("user", None)
    password = params.pop("password", None)
    hosts = params.pop("host", "")
    ports = params.pop("port", "")
    dbname = params.pop("dbname", "")
    netloc = quote(user, safe="") if user is not None else ""
    if password is not None:
        netloc += ":" + (quote(password, safe="") if keep_password else "***")
    if netloc:
        netloc += "@"
    if any(host.startswith("/") for host in hosts.split(",")):
        # a socket directory is a path: it goes in the query, with its port
        params = {"host": hosts, **({"port": ports} if ports else {}), **params}
    else:
        netloc += _netloc_hosts(hosts, ports)
    query = "&".join(f"{key}={quote(value, safe='/')}" for key, value in params.items())
    return f"postgresql://{netloc}/{quote(dbname, safe='')}" + (f"?{query}" if query else "")


def _netloc_hosts(hosts: str, ports: str) -> str:
    """`db1:5432,db2:5433` (libpq's multi-host form), IPv6 addresses in brackets."""
    names = hosts.split(",") if hosts else []
    numbers = ports.split(",") if ports else []
    if len(numbers) == 1 and len(names) > 1:
        numbers *= len(names)
    if not names:
        return f":{numbers[0]}" if numbers else ""
    written = []
    for index, name in enumerate(names):
        host = f"[{name}]" if ":" in name else quote(name, safe="")
        port = numbers[index] if index < len(numbers) else ""
        written.append(host + (f":{port}" if port else ""))
    return ",".join(written)


def mask(info: str) -> str:
    """The conninfo for people: a URL with the password replaced by ***."""
    return url(info)


_URL_PASSWORD = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)


def scrub(text: str, password: str | None = None) -> str:
    """Remove anything that looks like a password from a message before it is shown."""
    if password:
        text = text.replace(password, "***")
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _KV_PASSWORD.sub(r"\1***", text)


def password_of(info: str) -> str | None:
    return _params(info).get("password")


def dbname(info: str) -> str:
    """The database libpq connects to for this conninfo (see `resolved`)."""
    return resolved(info)["dbname"]


def resolved(info: str) -> dict[str, str]:
    """The parameters libpq connects with, by its rules: the conninfo's own, then those of
    its service (`service=` or PGSERVICE, from PGSERVICEFILE or ~/.pg_service.conf, then
    PGSYSCONFDIR/pg_service.conf), then the PG* variables; the user defaults to the OS user
    and the database to the user."""
    params = _params(info)
    service = params.get("service") or os.environ.get("PGSERVICE")
    for key, value in (_service(service) if service else {}).items():
        params.setdefault(key, value)
    for variable, keyword in libpq_variables().items():
        if os.environ.get(variable):
            params.setdefault(keyword, os.environ[variable])
    params.setdefault("user", getpass.getuser())
    params.setdefault("dbname", params["user"])
    return params


def _service(name: str) -> dict[str, str]:
    """The first service file's section `name` (libpq reads the user's file, then the
    system's); empty when none has it or a file cannot be read."""
    home = os.environ.get("PGSERVICEFILE") or os.path.expanduser("~/.pg_service.conf")
    files = [home] + ([os.path.join(os.environ["PGSYSCONFDIR"], "pg_service.conf")]
                      if os.environ.get("PGSYSCONFDIR") else [])
    for path in files:
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.has_section(name):
            return dict(parser.items(name))
    return {}


def with_dbname(info: str, name: str) -> str:
    return make_conninfo(info, dbname=name)


def maintenance(info: str) -> str:
    """The same server, through a database that is never the one being replaced."""
    return with_dbname(info, "template1" if dbname(info) == "postgres" else "postgres")


def child_env(info: str) -> tuple[str, dict[str, str]]:
    """A conninfo without its password, and an environment that carries the password in
    PGPASSWORD: the password never reaches a command line. Without a password in the URL,
    the user's own PGPASSWORD (or passfile) still applies, as it does for our connection."""
    params = _params(info)
    password = params.pop("password", None)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return make_conninfo(**params), env
