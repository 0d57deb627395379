"""restore-tool: safe, boring PostgreSQL restores.

    from restore_tool import fix_sequences, inspect, restore, verify

Each returns a Report (inspect: a Dump); see restore_tool.api. They are imported on first
use, so that `restore-tool --version` does not load psycopg."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["Options", "Report", "__version__", "fix_sequences", "inspect", "restore",
           "verify"]

if TYPE_CHECKING:
    from .api import fix_sequences, inspect, restore, verify
    from .pipeline import Report
    from .restoring.state import Options


def __getattr__(name: str) -> Any:
    if name in ("fix_sequences", "inspect", "restore", "verify"):
        from . import api
        return getattr(api, name)
    if name == "Report":
        from .pipeline import Report
        return Report
    if name == "Options":
        from .restoring.state import Options
        return Options
    raise AttributeError(f"module 'restore_tool' has no attribute {name!r}")
