"""argv and environment for client tools: the password never reaches a command line."""

from __future__ import annotations

from pathlib import Path

import pytest

from restore_tool.conninfo import child_env
from restore_tool.pgtools import Tool, psql_cmd


def test_password_goes_to_the_environment_not_argv(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    conninfo, env = child_env("postgresql://u:s3cret@db:5432/app")
    argv = psql_cmd(Tool((18, 6), Path("/bin/psql")), conninfo)
    assert "s3cret" not in " ".join(argv)
    assert argv[:4] == ["/bin/psql", "-X", "-v", "ON_ERROR_STOP=1"]
    assert env["PGPASSWORD"] == "s3cret"


def test_user_pgpassword_is_kept_when_the_url_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", "from-env")
    _, env = child_env("postgresql://u@db/app")
    assert env["PGPASSWORD"] == "from-env"
