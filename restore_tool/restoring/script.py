"""A plain SQL dump read statement by statement, as psql would split it: quotes, E'' strings,
quoted identifiers, dollar quoting, comments, psql meta-commands (`\\connect`, `\\restrict`) and
the data lines of `COPY … FROM stdin` blocks, which pass through untouched, one line at a time.
Pure: bytes in, pieces out (the encoding is the script's own; every one pg_dump writes keeps
ASCII bytes for quotes and semicolons)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    STATEMENT = "statement"  # one SQL statement with its `;` (and the rest of its last line)
    DATA = "data"  # a line of a COPY block, its `\.` included
    META = "meta"  # a psql meta-command line
    BLANK = "blank"  # whitespace and comment lines between statements


@dataclass(frozen=True)
class Piece:
    kind: Kind
    text: bytes

    @property
    def head(self) -> str:
        """The statement without its leading comments and whitespace, as text, up to 200
        characters: enough to tell what it is."""
        return _LEADING.sub("", self.text[:400].decode("utf-8", errors="replace"))[:200]

    @property
    def header(self) -> Header | None:
        """The last entry header among the piece's comments (a statement's leading ones):
        pg_dump and pg_restore write one before each entry's statements."""
        if self.kind is Kind.DATA or b"-- " not in self.text[:2000]:
            return None
        text = self.text[:2000].decode("utf-8", errors="replace")
        if self.kind is Kind.STATEMENT:
            leading = _LEADING.match(text)
            text = leading.group(0) if leading else ""
        found = HEADER.findall(text)
        return Header(*found[-1]) if found else None


@dataclass(frozen=True)
class Header:
    """`-- Name: my_abs(integer); Type: FUNCTION; Schema: public; Owner: app`: names as
    `pg_restore -l` lists them (the schema `-` for none)."""

    name: str
    kind: str
    schema: str


_LEADING = re.compile(r"^(?:\s+|--[^\n]*\n)+")
HEADER = re.compile(r"^-- (?:Data for )?Name: (.*?); Type: ([A-Z ]+); Schema: (.*?); Owner: ",
                     re.MULTILINE)
_COPY_FROM_STDIN = re.compile(rb"^\s*COPY\s.*\sFROM\s+stdin", re.IGNORECASE | re.DOTALL)
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*)?\$")
_END_OF_COPY = (b"\\.\n", b"\\.\r\n", b"\\.")


class _State(Enum):
    CODE = 0
    QUOTE = 1  # '…'
    ESCAPE_QUOTE = 2  # E'…', where a backslash escapes the next byte
    IDENTIFIER = 3  # "…"
    DOLLAR = 4  # $tag$…$tag$
    BLOCK_COMMENT = 5  # /* … */, nested


def pieces(lines: Iterable[bytes]) -> Iterator[Piece]:
    """Split a script (its lines, newlines kept) into statements, COPY data lines, psql
    meta-command lines and what lies between them. Concatenating the texts gives the input
    back byte for byte."""
    splitter = _Splitter()
    for line in lines:
        yield from splitter.feed(line)
    if splitter.buffer:
        yield Piece(Kind.STATEMENT, bytes(splitter.buffer))  # unterminated: psql runs it too


class _Splitter:
    def __init__(self) -> None:
        self.buffer = bytearray()
        self.state = _State.CODE
        self.tag = b""
        self.depth = 0
        self.in_copy = False

    def feed(self, line: bytes) -> Iterator[Piece]:
        if self.in_copy:
            if line in _END_OF_COPY:
                self.in_copy = False
            yield Piece(Kind.DATA, line)
            return
        if not self.buffer:
            stripped = line.lstrip()
            if stripped.startswith(b"\\"):
                yield Piece(Kind.META, line)
                return
            if not stripped or stripped.startswith(b"--"):
                yield Piece(Kind.BLANK, line)
                return
        start = 0
        while True:
            end = self._scan(line, start)
            if end is None:
                self.buffer += line[start:]
                return
            rest = line[end:]
            if not rest.strip():  # the usual case: `;` ends the line
                self.buffer += line[start:]
                yield from self._statement()
                return
            self.buffer += line[start:end]
            yield from self._statement()
            start = end

    def _statement(self) -> Iterator[Piece]:
        text = bytes(self.buffer)
        self.buffer.clear()
        self.in_copy = bool(_COPY_FROM_STDIN.match(text))
        yield Piece(Kind.STATEMENT, text)

    def _scan(self, line: bytes, i: int) -> int | None:
        """Advance through `line` from `i`; the index just past a top-level `;`, or None when
        the line ends inside the statement."""
        n = len(line)
        while i < n:
            c = line[i]
            state = self.state
            if state is _State.CODE:
                if c == 0x2D and line[i + 1:i + 2] == b"-":  # -- comment: rest of the line
                    return None
                if c == 0x2F and line[i + 1:i + 2] == b"*":
                    self.state, self.depth = _State.BLOCK_COMMENT, 1
                    i += 2
                    continue
                if c == 0x27:  # '
                    escape = i > 0 and line[i - 1] in b"Ee" and (
                        i < 2 or not _word_byte(line[i - 2]))
                    self.state = _State.ESCAPE_QUOTE if escape else _State.QUOTE
                elif c == 0x22:  # "
                    self.state = _State.IDENTIFIER
                elif c == 0x24 and (i == 0 or not _word_byte(line[i - 1])):  # $
                    match = _DOLLAR_TAG.match(line, i)
                    if match:
                        self.state, self.tag = _State.DOLLAR, match.group(0)
                        i = match.end()
                        continue
                elif c == 0x3B:  # ;
                    return i + 1
            elif state in (_State.QUOTE, _State.ESCAPE_QUOTE):
                if (c == 0x5C and state is _State.ESCAPE_QUOTE) or (
                        c == 0x27 and line[i + 1:i + 2] == b"'"):  # \x or '': still inside
                    i += 2
                    continue
                if c == 0x27:
                    self.state = _State.CODE
            elif state is _State.IDENTIFIER:
                if c == 0x22:
                    self.state = _State.CODE
            elif state is _State.DOLLAR:
                end = line.find(self.tag, i)
                if end < 0:
                    return None
                self.state = _State.CODE
                i = end + len(self.tag)
                continue
            elif state is _State.BLOCK_COMMENT:
                pair = line[i:i + 2]
                if pair == b"*/":
                    self.depth -= 1
                    if self.depth == 0:
                        self.state = _State.CODE
                    i += 2
                    continue
                if pair == b"/*":
                    self.depth += 1
                    i += 2
                    continue
            i += 1
        return None


def _word_byte(byte: int) -> bool:
    return chr(byte).isalnum() or byte == 0x5F or byte >= 0x80
