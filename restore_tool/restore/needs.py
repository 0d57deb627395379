"""What a dump needs of the server, read from its schema script before anything is written:
the roles its grants name, its tablespaces and extensions, and the entries only a superuser
may create (event triggers) or that reach outside the database (subscriptions). Pure: the
statements come from script.pieces."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from . import script

_IDENT = r'(?:"(?:[^"]|"")+"|[^\s,;()"]+)'
_GRANT_TO = re.compile(rf"\sTO\s+((?:{_IDENT}\s*,\s*)*{_IDENT})", re.IGNORECASE)
_REVOKE_FROM = re.compile(rf"\sFROM\s+((?:{_IDENT}\s*,\s*)*{_IDENT})", re.IGNORECASE)
_FOR_ROLE = re.compile(rf"\sFOR\s+(?:ROLE|USER)\s+((?:{_IDENT}\s*,\s*)*{_IDENT})",
                       re.IGNORECASE)
# pg_dump writes `SET default_tablespace = fast_disk;` (an identifier) and `= '';` for none
_DEFAULT_TABLESPACE = re.compile(rf"^SET\s+default_tablespace\s*=\s*(''|{_IDENT})",
                                 re.IGNORECASE)
_EXTENSION = re.compile(rf"^CREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?({_IDENT})",
                        re.IGNORECASE)
_EVENT_TRIGGER = re.compile(rf"^CREATE\s+EVENT\s+TRIGGER\s+({_IDENT})", re.IGNORECASE)
_SUBSCRIPTION = re.compile(rf"^CREATE\s+SUBSCRIPTION\s+({_IDENT})", re.IGNORECASE)
# statements about an event trigger or a subscription: left out with it
EVENT_TRIGGER_STATEMENT = re.compile(
    r"^(?:(?:CREATE|ALTER)\s+EVENT\s+TRIGGER|(?:COMMENT|SECURITY\s+LABEL)(?:\s.*?)?\sON\s+EVENT\s+"
    r"TRIGGER)\s", re.IGNORECASE | re.DOTALL)
SUBSCRIPTION_STATEMENT = re.compile(
    r"^(?:(?:CREATE|ALTER)\s+SUBSCRIPTION|(?:COMMENT|SECURITY\s+LABEL)(?:\s.*?)?\sON\s+"
    r"SUBSCRIPTION)\s", re.IGNORECASE | re.DOTALL)
_SLOT_NAME = re.compile(r"slot_name\s*=\s*(?:'(?:[^']|'')*'|NONE)", re.IGNORECASE)


@dataclass(frozen=True)
class Needs:
    """Names the dump's statements use (role names as the server stores them)."""

    grantees: frozenset[str] = frozenset()  # GRANT … TO, REVOKE … FROM, DEFAULT PRIVILEGES
    tablespaces: frozenset[str] = frozenset()
    extensions: frozenset[str] = frozenset()
    event_triggers: tuple[str, ...] = ()
    subscriptions: tuple[str, ...] = ()  # each CREATE SUBSCRIPTION, as the dump has it


def read(pieces: Iterable[script.Piece]) -> Needs:
    grantees: set[str] = set()
    tablespaces: set[str] = set()
    extensions: set[str] = set()
    event_triggers: list[str] = []
    subscriptions: list[str] = []
    for piece in pieces:
        if piece.kind is not script.Kind.STATEMENT:
            continue
        head = piece.head
        word = head[:6].upper()
        if word in ("GRANT ", "REVOKE") or head.upper().startswith("ALTER DEFAULT"):
            text = piece.text.decode("utf-8", errors="replace")
            revoke = word == "REVOKE" or re.search(r"\sREVOKE\s", text, re.IGNORECASE)
            for pattern in (_FOR_ROLE, _REVOKE_FROM if revoke else _GRANT_TO):
                if match := pattern.search(text):
                    grantees.update(_names(match.group(1)))
        elif match := _DEFAULT_TABLESPACE.match(head):
            if match.group(1) != "''":
                tablespaces.update(_names(match.group(1)))
        elif match := _EXTENSION.match(head):
            extensions.update(_names(match.group(1)))
        elif match := _EVENT_TRIGGER.match(head):
            event_triggers.extend(_names(match.group(1)))
        elif _SUBSCRIPTION.match(head):
            subscriptions.append(piece.text.decode("utf-8", errors="replace").strip())
    grantees.discard("public")
    return Needs(frozenset(grantees), frozenset(tablespaces), frozenset(extensions),
                 tuple(event_triggers), tuple(subscriptions))


def subscription_name(statement: str) -> str:
    match = _SUBSCRIPTION.match(statement)
    return _names(match.group(1))[0] if match else "?"


def without_slot(statement: str) -> str:
    """A dump's CREATE SUBSCRIPTION (pg_dump writes `connect = false`: created disabled) with
    `slot_name = NONE`, so that dropping it can never drop the publisher's slot."""
    if _SLOT_NAME.search(statement):
        return _SLOT_NAME.sub("slot_name = NONE", statement, count=1)
    return re.sub(r"\)\s*;\s*$", ", slot_name = NONE);", statement)


def _names(listed: str) -> list[str]:
    """`a, "B c", "d""e"` → a, B c, d"e; PUBLIC (any case, unquoted) as `public`."""
    found = re.findall(rf"{_IDENT}", listed)
    return [n[1:-1].replace('""', '"') if n.startswith('"') else n.lower() for n in found]
