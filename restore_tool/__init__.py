"""restore-tool: safe, boring PostgreSQL restores."""

__version__ = "0.1.0"
