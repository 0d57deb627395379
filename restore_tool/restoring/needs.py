"""What a dump needs of the server, read from its schema script before anything is written:
the roles its grants name, its tablespaces and extensions, the entries only a superuser may
create (event triggers, languages, foreign-data wrappers, text search parsers and templates,
functions in an untrusted language such as C) and those that reach outside the database
(subscriptions). Pure: the statements come from script.pieces."""

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
_SUBSCRIPTION = re.compile(rf"^CREATE\s+SUBSCRIPTION\s+({_IDENT})", re.IGNORECASE)
# statements about a subscription: left out with it
SUBSCRIPTION_STATEMENT = re.compile(
    r"^(?:(?:CREATE|ALTER)\s+SUBSCRIPTION|(?:COMMENT|SECURITY\s+LABEL)(?:\s.*?)?\sON\s+"
    r"SUBSCRIPTION)\s", re.IGNORECASE | re.DOTALL)
_SLOT_NAME = re.compile(r"slot_name\s*=\s*(?:'(?:[^']|'')*'|NONE)", re.IGNORECASE)
# kinds only a superuser may create, whoever owns the database
SUPERUSER_KINDS = frozenset({"EVENT TRIGGER", "PROCEDURAL LANGUAGE", "FOREIGN DATA WRAPPER",
                             "TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE"})
_ROUTINES = frozenset({"FUNCTION", "PROCEDURE"})
_LANGUAGE = re.compile(r"^\s+LANGUAGE\s+(\S+)\s*$", re.MULTILINE)  # pg_dump's own line
_TRUSTED = frozenset({"sql", "plpgsql"})  # trusted on every server
_ABOUT = frozenset({"COMMENT", "SECURITY LABEL", "ACL"})  # entries about another one
_ABOUT_WORD = {"PROCEDURAL LANGUAGE": "LANGUAGE"}  # how they name it: `LANGUAGE plperlu`


@dataclass(frozen=True)
class Entry:
    """A dump entry by its header (`Name: my_abs(integer); Type: FUNCTION; Schema: public`),
    names as `pg_restore -l` lists them."""

    kind: str
    schema: str  # `-` for none
    name: str
    language: str | None = None  # a function's, unless sql or plpgsql

    def covers(self, kind: str, schema: str, name: str) -> bool:
        """Whether the entry so named is this one, or its comment, security label or grant."""
        return schema == self.schema and name == self._tag(kind)

    def covers_listed(self, kind: str, rest: str) -> bool:
        """`covers` for a `pg_restore -l` line: `rest` is `schema name owner`."""
        tag = self._tag(kind)
        listed = f"{self.schema} {tag}"
        return tag is not None and (rest == listed or rest.startswith(listed + " "))

    def _tag(self, kind: str) -> str | None:
        if kind == self.kind:
            return self.name
        return f"{_ABOUT_WORD.get(self.kind, self.kind)} {self.name}" if kind in _ABOUT else None

    def __str__(self) -> str:
        schema = f"{self.schema}." if self.schema != "-" else ""
        language = f" (language {self.language})" if self.language else ""
        return f"{self.kind.lower()} {schema}{self.name}{language}"


@dataclass(frozen=True)
class Needs:
    """Names the dump's statements use (role names as the server stores them)."""

    grantees: frozenset[str] = frozenset()  # GRANT … TO, REVOKE … FROM, DEFAULT PRIVILEGES
    tablespaces: frozenset[str] = frozenset()
    extensions: frozenset[str] = frozenset()
    special: tuple[Entry, ...] = ()  # SUPERUSER_KINDS, and routines in other languages
    subscriptions: tuple[str, ...] = ()  # each CREATE SUBSCRIPTION, as the dump has it

    def superuser_only(self, untrusted: frozenset[str]) -> tuple[Entry, ...]:
        """What only a superuser may create on a server whose untrusted languages
        (`pg_language`, c and internal among them) are `untrusted`, in the order of their names."""
        return tuple(sorted((e for e in self.special
                             if e.language is None or e.language in untrusted), key=str))


def read(pieces: Iterable[script.Piece]) -> Needs:
    grantees: set[str] = set()
    tablespaces: set[str] = set()
    extensions: set[str] = set()
    special: list[Entry] = []
    subscriptions: list[str] = []
    header: script.Header | None = None
    for piece in pieces:
        header = piece.header or header
        if piece.kind is not script.Kind.STATEMENT:
            continue
        head = piece.head
        if header and head[:6].upper() == "CREATE" and (entry := _special(header, piece)) \
                and entry not in special:
            special.append(entry)
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
        elif _SUBSCRIPTION.match(head):
            subscriptions.append(piece.text.decode("utf-8", errors="replace").strip())
    grantees.discard("public")
    return Needs(frozenset(grantees), frozenset(tablespaces), frozenset(extensions),
                 tuple(special), tuple(subscriptions))


def _special(header: script.Header, piece: script.Piece) -> Entry | None:
    """The entry a CREATE under `header` makes, if only a superuser may make it somewhere."""
    if header.kind in SUPERUSER_KINDS:
        return Entry(header.kind, header.schema, header.name)
    if header.kind in _ROUTINES:
        found = _LANGUAGE.search(piece.text[:4000].decode("utf-8", errors="replace"))
        language = found.group(1).strip('"') if found else None
        if language and language not in _TRUSTED:
            return Entry(header.kind, header.schema, header.name, language)
    return None


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
