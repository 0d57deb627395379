"""The package as a user installs it: `pip install .` (not editable) into a fresh venv, its
metadata, and the Makefile targets that run the tool (ARGS, `make clean` with the embedded
server running)."""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.conftest import ROOT
from tests.func.test_cli import CLEAN_ENV

_LEFT_OUT = shutil.ignore_patterns(".venv", ".restore-tool", ".git", "dist", "build",
                                   "*.egg-info", "__pycache__", ".pytest_cache", ".mypy_cache",
                                   ".ruff_cache")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    """(a copy of the project, a venv holding `pip install` of that copy), the copy's .venv
    pointing at that venv so that its Makefile runs the installed CLI."""
    base = tmp_path_factory.mktemp("package")
    project, venv = base / "project", base / "venv"
    shutil.copytree(ROOT, project, ignore=_LEFT_OUT)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet",
                           "--disable-pip-version-check", str(project)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    (project / ".venv").symlink_to(venv)
    (venv / "bin" / ".installed").touch()  # what `make setup` leaves: no reinstall
    yield project, venv


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}


def test_pip_install_gives_a_working_cli_with_its_license_and_types(
        installed: tuple[Path, Path]) -> None:
    project, venv = installed
    cli = venv / "bin" / "restore-tool"
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True)
    assert version.returncode == 0 and version.stdout.startswith("restore-tool 0.")
    inspected = subprocess.run([str(cli), "inspect", str(project / "backups" /
                                                        "battery-hub.dump")],
                               capture_output=True, text=True, env=_env(), timeout=120)
    assert inspected.returncode == 0, inspected.stderr
    (info,) = (venv / "lib").glob("python3*/site-packages/restore_tool-*.dist-info")
    metadata = email.message_from_string((info / "METADATA").read_text())
    assert metadata["License-Expression"] == "MIT"
    assert "Typing :: Typed" in metadata.get_all("Classifier", [])
    assert (info / "licenses" / "LICENSE").read_text().startswith("MIT License")
    assert (info.parent / "restore_tool" / "py.typed").exists()
    assert not (info.parent / "restore_tool" / "__editable__").exists()


def test_the_build_backend_can_read_the_license_it_is_given() -> None:
    """`license = "MIT"` (a PEP 639 expression) needs setuptools 77; an older floor would
    let a build with 68-76 fail."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(pyproject["project"]["license"], str)
    assert pyproject["build-system"]["requires"] == ["setuptools>=77"]


def test_make_targets_take_args_and_clean_stops_the_server_first(
        installed: tuple[Path, Path], main_db: str) -> None:
    project, _ = installed
    made = subprocess.run(["make", "-s", "verify", f"ARGS=--database-url '{main_db}' --json "
                           "--no-smoke"], cwd=project, capture_output=True, text=True,
                          env=_env(), timeout=120)
    assert made.returncode == 0 and made.stdout.lstrip().startswith("{"), made.stderr
    url = subprocess.run([str(project / ".venv" / "bin" / "restore-tool"), "url"],
                         cwd=project, capture_output=True, text=True, env=_env(), timeout=120)
    assert url.returncode == 0, url.stderr
    pid = int((project / ".restore-tool" / "pgdata" / "postmaster.pid").read_text().split()[0])
    assert _alive(pid)
    cleaned = subprocess.run(["make", "-s", "clean"], cwd=project, capture_output=True,
                             text=True, env=_env(), timeout=120)
    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.startswith("Stopped the embedded server"), cleaned.stdout
    assert not _alive(pid) and not (project / ".restore-tool").exists()


def _alive(pid: int) -> bool:
    """Running, not a zombie its reparented parent has yet to reap."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
