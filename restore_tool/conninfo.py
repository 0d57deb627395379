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

from . import workdir


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
    if "sslpassword" in params and not keep_password:
        params["sslpassword"] = "***"
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
    query = "&".join(f"{key}={quote(value, safe='/*')}" for key, value in params.items())
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
# in a URL's query a value ends at & (percent-encoded inside); in key=value form at a space
_QUERY_PASSWORD = re.compile(r"([?&](?:ssl)?password=)[^&\s#]*", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"((?<![?&\w])(?:ssl)?password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)",
                          re.IGNORECASE)


def scrub(text: str, password: str | None = None) -> str:
    """Remove anything that looks like a password (a URL's, `password=`, `sslpassword=`)
    from a message before it is shown."""
    if password:
        text = text.replace(password, "***")
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    text = _QUERY_PASSWORD.sub(r"\1***", text)
    return _KV_PASSWORD.sub(r"\1***", text)


_URL = re.compile(r"^[a-z][a-z0-9+.-]*://", re.IGNORECASE)


def looks_like_url(text: str) -> bool:
    """`postgresql://…`, `s3://…`: a URL, not a path (a Path keeps one slash of the two)."""
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:/", text, re.IGNORECASE))


def misread(info: str) -> bool:
    """Whether libpq would read this URL's user or password as something else: an
    unencoded `@` or `/` in it moves the split between credentials and host, so part of the
    password would become a host, port or database name (and be shown as one)."""
    match = _URL.match(info)
    if not match:
        return False
    head = info[match.end():].split("?", 1)[0]
    at = head.rfind("@")
    return at >= 0 and (head.count("@") > 1 or "/" in head[:at])


def may_hold_secret(info: str) -> bool:
    """Whether a conninfo that libpq cannot parse may hold a password, so that libpq's
    words about it (which quote the offending token) must not be shown."""
    return bool(_URL.match(info) and "@" in info) or bool(
        re.search(r"password\s*=", info, re.IGNORECASE))


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
    if "sslpassword" in params:
        # no variable carries it: a service file of this run's does, merged with the user's
        service = params.get("service") or os.environ.get("PGSERVICE")
        values = {**(_service(service) if service else {}),
                  "sslpassword": params.pop("sslpassword")}
        params["service"] = _OWN_SERVICE
        env["PGSERVICEFILE"] = _service_file(values)
    return make_conninfo(**params), env


_OWN_SERVICE = "restore-tool"


def _service_file(values: dict[str, str]) -> str:
    """A service file only this user can read, in a directory removed when the process
    ends (a SIGKILL leaves it, for `cleanup`: it holds what the user's own environment
    holds)."""
    path = os.path.join(workdir.new("service", until_exit=True), "pg_service.conf")
    with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
        handle.write(f"[{_OWN_SERVICE}]\n")
        handle.writelines(f"{key}={value}\n" for key, value in values.items()
                          if key != "service")
    return path
