"""Invented smoke values and the statement built from a table's description: no server.
(Whether the server accepts them is tested in tests/func/test_smoke.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restore_tool.errors import ConfigError
from restore_tool.project import Project, protected_by
from restore_tool.project import load as load_project
from restore_tool.smoke.insert import Attempt, build, invent
from restore_tool.smoke.sql import ColumnInfo, ForeignKey, TableInfo


def column(name: str, category: str, type_: str, typmod: int = -1, *, not_null: bool = True,
           produced: bool = False, label: str | None = None) -> ColumnInfo:
    return ColumnInfo(name, not_null, produced, category, type_, typmod, label)


def test_invented_values_fit_type_and_length() -> None:
    assert invent(column("code", "S", "bpchar", 2 + 4), unique=False) == "ke"
    unique = invent(column("code", "S", "varchar", 8 + 4), unique=True)
    assert isinstance(unique, str) and len(unique) == 8
    assert invent(column("email", "S", "text"), unique=False) == "smoke@example.org"
    assert invent(column("mood", "E", "mood", label="sad"), unique=False) == "sad"
    assert invent(column("payload", "U", "jsonb"), unique=False) == {}
    assert invent(column("tags", "A", "_text"), unique=False) == []
    assert invent(column("ratio", "N", "numeric", (2 << 16 | 2) + 4), unique=False) == "0"
    assert invent(column("age", "N", "int2"), unique=False) == "1"
    assert invent(column("age", "N", "int2"), unique=False, variant=1) == "100"
    assert invent(column("flags", "V", "bit", 3), unique=False) == "000"
    assert invent(column("born", "D", "date"), unique=False, variant=1) == "2000-01-01"
    assert invent(column("at", "D", "time"), unique=False, variant=1) == "now"


TABLE = TableInfo(
    1, "public", "user", True, False,
    (column("user_id", "N", "int4", produced=True), column("hub_id", "N", "int4"),
     column("email", "S", "varchar", 254 + 4), column("nickname", "S", "text", not_null=False),
     column("age", "N", "int2")),
    (frozenset({"user_id"}), frozenset({"email"})),
    (ForeignKey(("hub_id",), "public", "hub", ("hub_id",)),),
)


def test_the_insert_leaves_defaults_to_the_database_and_says_whose_values_are_whose() -> None:
    insert = build(TABLE, Attempt())
    text = insert.statement.as_string(None)
    assert text.startswith('INSERT INTO "public"."user" ("hub_id", "email", "age") SELECT ')
    assert '"user_id"' not in text.split("SELECT")[0] and "nickname" not in text
    assert 'CROSS JOIN (SELECT "hub_id" FROM "public"."hub" LIMIT 1) AS "fk0"' in text
    assert insert.ours == {"hub_id", "email", "age"} and insert.database == {"user_id"}
    assert insert.invented == {"email"}
    assert {json.loads(v)["age"] for k, v in insert.params.items() if "age" in v} == {"1"}


def test_a_project_file_is_read_and_checked(tmp_path: Path) -> None:
    assert load_project(cwd=tmp_path).smoke_rows == ()  # no file: the defaults
    (tmp_path / "restore-tool.toml").write_text(
        'automatic_smoke = false\nsmoke_timeout = 1.5\n[[smoke]]\ntable = "user"\n'
        'schema = "app"\nvalues = { hub_id = 1 }\n')
    project = load_project(cwd=tmp_path)
    assert (project.automatic_smoke, project.smoke_timeout) == (False, 1.5)
    assert project.smoke_rows[0].label == "app.user"
    assert dict(project.smoke_rows[0].values) == {"hub_id": 1}
    for text in ("smoke_timeout = 0\n", "smoke = 3\n", "[[smoke]]\ntable = 'a'\nvalues = 2\n",
                 "[[smoke]]\ntable = 'a'\ncolumns = {}\n", "[[smoke]]\ntable = 'a'\nschema = 1\n",
                 "protected = '*prod*'\n", "protected = ['']\n"):
        (tmp_path / "restore-tool.toml").write_text(text)
        with pytest.raises(ConfigError):
            load_project(cwd=tmp_path)


def test_protected_patterns_match_name_or_host_from_file_and_environment() -> None:
    project = Project(protected=("*PROD*",))
    assert protected_by("host=db1 dbname=app_prod", project, {}) == "*PROD*"
    assert protected_by("host=db1 dbname=app", project, {}) is None
    env = {"RESTORE_TOOL_PROTECTED": " staging , db-main.internal"}
    assert protected_by("host=db-main.internal dbname=app", Project(), env) == \
        "db-main.internal"
    assert protected_by("host=other dbname=staging", Project(), env) == "staging"
    assert protected_by("host=other dbname=app", Project(), {"RESTORE_TOOL_PROTECTED": ""}) \
        is None
