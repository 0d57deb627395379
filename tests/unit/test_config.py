"""Settings resolution and masking, from plain dicts and files: no server needed."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

from restore_tool.config import resolve
from restore_tool.conninfo import mask, scrub
from restore_tool.errors import ConfigError


def test_flag_beats_everything(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://file@h/f\n")
    settings = resolve(database_url="postgresql://flag@h/db", cwd=tmp_path,
                       environ={"DATABASE_URL": "postgresql://env@h/e"})
    assert settings.conninfo == "postgresql://flag@h/db"
    assert settings.origin == "--database-url"


def test_order_in_the_environment_database_url_then_postgres_then_pg(tmp_path: Path) -> None:
    environ = {"DATABASE_URL": "postgresql://a@h/a", "POSTGRES_DB": "b", "PGHOST": "c"}
    assert resolve(cwd=tmp_path, environ=environ).origin == "DATABASE_URL in the environment"
    del environ["DATABASE_URL"]
    settings = resolve(cwd=tmp_path, environ=environ)
    assert settings.origin == "POSTGRES_* in the environment"
    del environ["POSTGRES_DB"]
    assert resolve(cwd=tmp_path, environ=environ).origin == "PG* variables in the environment"


def test_postgres_variables_default_like_the_postgres_image(tmp_path: Path) -> None:
    settings = resolve(cwd=tmp_path, environ={"POSTGRES_USER": "beppp",
                                              "POSTGRES_PASSWORD": "s3cret"})
    assert mask(str(settings.conninfo)) == "postgresql://beppp:***@localhost:5432/beppp"


def test_the_environment_is_merged_over_the_env_file_variable_by_variable(
        tmp_path: Path) -> None:
    """As docker compose merges them: a variable in the environment beats the same one in
    .env, and only that one; an exported PGUSER does not hide .env's target."""
    (tmp_path / ".env").write_text("POSTGRES_HOST=db.internal\nPOSTGRES_PORT=6543\n"
                                   "POSTGRES_USER=app\nPOSTGRES_PASSWORD=s3cret\n"
                                   "POSTGRES_DB=shop\n")
    settings = resolve(cwd=tmp_path, environ={"POSTGRES_DB": "other"})
    assert conninfo_to_dict(settings.conninfo or "") == {
        "host": "db.internal", "port": "6543", "user": "app", "password": "s3cret",
        "dbname": "other"}
    assert settings.origin == f"POSTGRES_* in {tmp_path / '.env'} and the environment"
    settings = resolve(cwd=tmp_path, environ={"PGUSER": "me", "PGHOST": "localhost"})
    assert conninfo_to_dict(settings.conninfo or "")["host"] == "db.internal"
    assert settings.origin == f"POSTGRES_* in {tmp_path / '.env'}"
    (tmp_path / ".env").write_text("DATABASE_URL=postgresql://file@h/f\n")
    settings = resolve(cwd=tmp_path, environ={"PGHOST": "envhost", "PGDATABASE": "envdb"})
    assert settings.conninfo == "postgresql://file@h/f"  # DATABASE_URL first, from anywhere
    settings = resolve(cwd=tmp_path, environ={"DATABASE_URL": "postgresql://env@h/e"})
    assert (settings.conninfo, settings.origin) == ("postgresql://env@h/e",
                                                    "DATABASE_URL in the environment")


def test_postgres_password_alone_is_the_images_defaults(tmp_path: Path) -> None:
    """The postgres image needs only POSTGRES_PASSWORD: user and database postgres."""
    (tmp_path / ".env").write_text("POSTGRES_PASSWORD=s3cret\n")
    settings = resolve(cwd=tmp_path, environ={})
    assert conninfo_to_dict(settings.conninfo or "") == {
        "host": "localhost", "port": "5432", "user": "postgres", "password": "s3cret",
        "dbname": "postgres"}
    settings = resolve(cwd=tmp_path, environ={"POSTGRES_USER": "app"})
    assert conninfo_to_dict(settings.conninfo or "")["dbname"] == "app"  # POSTGRES_DB defaults so


def test_env_file_option_and_a_missing_one(tmp_path: Path) -> None:
    other = tmp_path / "staging.env"
    other.write_text("POSTGRES_HOST=db.staging\nPOSTGRES_DB=app\n")
    settings = resolve(cwd=tmp_path, environ={}, env_file=other)
    assert mask(str(settings.conninfo)) == "postgresql://postgres@db.staging:5432/app"
    with pytest.raises(ConfigError, match="does not exist"):
        resolve(cwd=tmp_path, environ={}, env_file=tmp_path / "nope.env")


def test_pgpassword_alone_picks_no_target(tmp_path: Path) -> None:
    settings = resolve(cwd=tmp_path, environ={"PGPASSWORD": "x"})
    assert settings.embedded
    assert settings.embedded_dir == tmp_path / ".restore-tool"


def test_sqlalchemy_urls_are_accepted(tmp_path: Path) -> None:
    settings = resolve(cwd=tmp_path, environ={
        "DATABASE_URL": "postgresql+psycopg2://u:pw@db:5433/app"})
    assert settings.conninfo == "postgresql://u:pw@db:5433/app"


@pytest.mark.parametrize("url, message", [
    ("not a url", 'missing "=" after "not"'),
    ("postgresql://u:pw@h:port/db", "has port 'port', not a number"),
    ("  ", "is empty"),
])
def test_bad_urls_are_one_sentence_without_the_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        resolve(database_url=url)
    assert "pw" not in str(raised.value)


@pytest.mark.parametrize("url, secret", [
    ("postgresql://app:100%sure@db:5432/shop", "100%sure"),
    ("postgresql://app:pa ss word@db:5432/shop", "ss word"),
    ("postgresql://app:Se@cr3t@db:5432/shop", "cr3t"),
    ("postgresql://app:se/cret@db:5432/shop", "cret"),
    ("host=db password=top secret dbname=shop", "secret"),
])
def test_a_malformed_url_is_refused_without_any_part_of_its_password(
        url: str, secret: str) -> None:
    """libpq quotes the token it cannot read, and an unencoded @ or / turns the rest of the
    password into a host, port or database name: none of it may be shown."""
    with pytest.raises(ConfigError) as raised:
        resolve(database_url=url)
    shown = str(raised.value) + str(raised.value.hint)
    assert secret not in shown and "Percent-encode" in shown


@pytest.mark.parametrize("url", [
    "postgresql://db/shop?user=app@corp",  # an @ in the query is no password's
    "postgresql://app:pa?ss@db/shop",      # libpq reads a ? in a password as it is meant
])
def test_urls_libpq_reads_as_meant_are_accepted(url: str) -> None:
    assert resolve(database_url=url).conninfo == url


@pytest.mark.parametrize("conninfo, shown", [
    ("postgresql://u:p%40ss@h:5432/db", "postgresql://u:***@h:5432/db"),
    ("host=/tmp/sock user=postgres dbname=x", "postgresql://postgres@/x?host=%2Ftmp%2Fsock"),
    ("host=h password='a b' dbname=d sslmode=require",
     "postgresql://:***@h/d?sslmode=require"),
    ("host=h dbname=d sslpassword=keypass", "postgresql://h/d?sslpassword=***"),
])
def test_mask(conninfo: str, shown: str) -> None:
    assert mask(conninfo).replace("%2F", "/") == shown.replace("%2F", "/")


def test_scrub_removes_passwords_in_every_spelling() -> None:
    assert scrub("postgresql://u:hunter2@h/db failed") == "postgresql://u:***@h/db failed"
    assert scrub("password=hunter2 host=h") == "password=*** host=h"
    assert scrub("postgresql://h/d?sslpassword=hunter2&x=1") == \
        "postgresql://h/d?sslpassword=***&x=1"
    assert scrub("host=h password=p&ss sslpassword=k&y") == \
        "host=h password=*** sslpassword=***"
    assert scrub("it was hunter2", "hunter2") == "it was ***"


_ENV_TEXT = "# caf\u00e9 staging\nDATABASE_URL=postgresql://u:pw@db:5433/app\n"


@pytest.mark.parametrize("data", [
    _ENV_TEXT.encode("utf-8-sig"),                           # Notepad's UTF-8
    _ENV_TEXT.encode("utf-16"),                              # PowerShell's > (LE, marked)
    codecs.BOM_UTF16_BE + _ENV_TEXT.encode("utf-16-be"),
], ids=["utf-8 with bom", "utf-16 le", "utf-16 be"])
def test_an_env_file_with_a_byte_order_mark_is_read_as_it_says(
        tmp_path: Path, data: bytes) -> None:
    (tmp_path / ".env").write_bytes(data)
    assert resolve(cwd=tmp_path, environ={}).conninfo == "postgresql://u:pw@db:5433/app"


@pytest.mark.parametrize("data, message", [
    (_ENV_TEXT.encode("latin-1"), "is not UTF-8 text (byte 0xe9 on line 1)"),
    (_ENV_TEXT.encode("utf-16-le"), "holds NUL bytes"),
], ids=["latin-1", "utf-16 without its mark"])
def test_an_env_file_in_another_encoding_is_one_sentence(
        tmp_path: Path, data: bytes, message: str) -> None:
    (tmp_path / ".env").write_bytes(data)
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        resolve(cwd=tmp_path, environ={})
    assert raised.value.hint == "Save it as UTF-8."
