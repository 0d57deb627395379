"""The one URL writer: libpq reads back what it writes, password masked or kept; libpq's
variable names come from libpq itself (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from restore_tool.config import resolve
from restore_tool.conninfo import dbname, libpq_variables, mask, resolved, url

CASES = [
    "postgresql://u:p%40ss@db.example:6432/app?sslmode=require",
    "host=/tmp/sock port=5433 dbname=app user=u password=x",
    "host=db1,db2 port=5432,5433 dbname=app user=u",
    "host=::1 dbname=app user=u",
    "dbname='my db' user=u options='-c default_transaction_read_only=on'",
]


@pytest.mark.parametrize("info", CASES)
def test_kept_url_reads_back_to_the_same_parameters(info: str) -> None:
    assert conninfo_to_dict(url(info, keep_password=True)) == conninfo_to_dict(info)


@pytest.mark.parametrize("info", CASES)
def test_masked_url_differs_only_in_the_password(info: str) -> None:
    masked = conninfo_to_dict(mask(info))
    expected = conninfo_to_dict(info)
    if "password" in expected:
        expected["password"] = "***"
    assert masked == expected


def test_every_libpq_variable_is_known_from_libpq(tmp_path: Path) -> None:
    assert libpq_variables()["PGSSLROOTCERT"] == "sslrootcert"
    assert libpq_variables()["PGAPPNAME"] == "application_name"
    (tmp_path / ".env").write_text("PGHOST=db\nPGSSLROOTCERT=/etc/ca.pem\nPGAPPNAME=deploy\n")
    settings = resolve(environ={}, cwd=tmp_path)
    assert conninfo_to_dict(str(settings.conninfo)) == {
        "host": "db", "sslrootcert": "/etc/ca.pem", "application_name": "deploy"}


def test_the_database_is_the_one_libpq_would_connect_to(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """libpq's order: the conninfo, its service, PG* variables, then the user's name; the URL's
    user is not the database when PGDATABASE is set."""
    for variable in ("PGDATABASE", "PGUSER", "PGSERVICE", "PGHOST", "PGSYSCONFDIR"):
        monkeypatch.delenv(variable, raising=False)
    services = tmp_path / "pg_service.conf"
    services.write_text("[prod]\nhost=db.internal\ndbname=shop_prod\nuser=deploy\n"
                        "[bare]\nhost=other\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    assert dbname("postgresql://app@db/") == "app"
    monkeypatch.setenv("PGDATABASE", "shop_prod")
    assert dbname("postgresql://app@db/") == "shop_prod"
    assert dbname("postgresql://app@db/mine") == "mine"
    monkeypatch.delenv("PGDATABASE")
    assert dbname("postgresql:///?service=prod") == "shop_prod"
    assert resolved("postgresql:///?service=prod")["host"] == "db.internal"
    assert dbname("service=bare user=u") == "u"
    monkeypatch.setenv("PGSERVICE", "prod")
    assert dbname("host=h") == "shop_prod"
