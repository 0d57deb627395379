"""Names of tables, columns and sequences as people read them (pure)."""

from __future__ import annotations

import re


def display_name(*parts: str) -> str:
    """Dotted name for people: `public.` is left out as the runbook does, and a part is
    quoted only when it is not a plain lower-case name (so `user.user_id`)."""
    if len(parts) > 1 and parts[0] == "public":
        parts = parts[1:]
    return ".".join(p if p.isidentifier() and p == p.lower() else quoted(p) for p in parts)


def quoted(name: str) -> str:
    """`"we""ird"`: an identifier quoted as PostgreSQL quotes it."""
    return '"' + name.replace('"', '""') + '"'


_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple[str | int, ...]:
    """Sort key for names as people count: small_2 before small_10 before small_100. Text
    and numbers alternate in it, text first, so two keys compare piece by piece."""
    pieces: list[str | int] = _DIGITS.split(name)
    pieces[1::2] = [int(piece) for piece in pieces[1::2]]
    return tuple(pieces)
