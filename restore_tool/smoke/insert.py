"""The one INSERT ... SELECT of each smoke attempt, the INSERT of a configured row, and the
values invented for columns nothing else can fill."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from psycopg import sql

from .sql import ColumnInfo, ForeignKey, TableInfo


@dataclass(frozen=True)
class Attempt:
    """How one insert fills the columns it must: `template` copies the ordinary columns from
    an existing row (it satisfied every CHECK and partition bound once); `fill_keys` gives
    key columns a value even when a BEFORE INSERT trigger may set them."""

    template: bool = True
    fill_keys: bool = True
    variant: int = 0  # 1: the other invented values (100 for 1, true for false, 2000-01-01)


@dataclass(frozen=True)
class Insert:
    statement: sql.Composed
    params: dict[str, str]
    ours: frozenset[str]  # the columns we gave a value
    database: frozenset[str]  # the columns the database fills: defaults, identity, triggers
    invented: frozenset[str]  # of those, the ones given a fresh random value
    sources: tuple[ForeignKey, ...]  # the referenced tables our foreign-key values come from


def build(table: TableInfo, attempt: Attempt) -> Insert:
    """The one INSERT ... SELECT of an attempt. Each needed column gets, in this order: a
    referenced row's value (foreign keys; one not yet used when the key must be unique), a
    fresh value (unique columns: max + 1 or a random token), or the template row's value
    falling back to an invented value of the right type."""
    # a unique set holding a counter (payment_id of (payment_date, payment_id)) is unique by
    # it: its other columns are copied like any other (a partition bound holds for them)
    counters = {c.name for c in table.columns if c.counter}
    unique = frozenset().union(*(s for s in table.uniques if not s & counters))
    skip: frozenset[str] = frozenset()
    if table.before_insert_trigger and not attempt.fill_keys:  # a trigger may assign ids
        skip = unique - {c for fk in table.foreign_keys for c in fk.columns}
    needed = [c for c in table.columns if c.needed and c.name not in skip]
    database = frozenset(c.name for c in table.columns if c.produced) | skip
    names = {c.name for c in needed}
    # foreign keys that give values; those covering a unique set are joined unrestricted
    fks = [fk for fk in table.foreign_keys if names & set(fk.columns)]
    by_column: dict[str, tuple[int, str]] = {}
    for index, fk in enumerate(fks):
        for own, ref in zip(fk.columns, fk.ref_columns, strict=True):
            if own in names and own not in by_column:
                by_column[own] = (index, ref)
    covered = [s for s in table.uniques if s and s <= by_column.keys()]
    open_fks = {by_column[c][0] for s in covered for c in s}

    params: dict[str, str] = {"prefix": secrets.token_hex(4)}

    def inv(column: ColumnInfo, *, unique: bool) -> sql.Composable:
        """An invented value, read by the column's own type input only when it is used (a
        copied value may satisfy a domain's CHECK that the invented one would not)."""
        key = f"v{len(params)}"
        params[key] = json.dumps({column.name: invent(column, unique=unique,
                                                      variant=attempt.variant)})
        return sql.SQL("(json_populate_record(NULL::{t}, {p}::json)).{c}").format(
            t=table.identifier, p=sql.Placeholder(key), c=sql.Identifier(column.name))

    def copied(column: ColumnInfo, value: sql.Composable, fallback: sql.Composable
               ) -> sql.Composable:
        template_cols.append(column.name)
        return sql.SQL("coalesce({}, {})").format(value, fallback)

    exprs: list[sql.Composable] = []
    template_cols: list[str] = []
    fresh: set[str] = set()
    for column in needed:
        source = sql.Identifier("src", column.name)
        if column.name in by_column:
            index, ref = by_column[column.name]
            exprs.append(sql.Identifier(f"fk{index}", ref))
        elif column.name in unique and column.type in _COUNTABLE:
            exprs.append(sql.SQL("(SELECT coalesce(max(x.{c}), 0) + 1 FROM {t} x)").format(
                c=sql.Identifier(column.name), t=table.identifier))
        elif column.name in unique:
            fresh.add(column.name)
            if attempt.template and column.category == "S":
                # an existing value behind a random prefix passes most CHECKs (an email's @);
                # cut to the column's length from the right it would be the existing value
                prefixed = sql.SQL("%(prefix)s || {}").format(source)
                if column.typmod >= 4:
                    prefixed = sql.SQL("left({}, {})").format(
                        prefixed, sql.Literal(column.typmod - 4))
                exprs.append(copied(column, prefixed, inv(column, unique=True)))
            else:
                exprs.append(inv(column, unique=True))
        elif attempt.template:
            exprs.append(copied(column, source, inv(column, unique=False)))
        else:
            exprs.append(inv(column, unique=False))

    if not needed:
        statement = sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table.identifier)
        return Insert(statement, {}, frozenset(), database, frozenset(), ())
    parts: list[sql.Composable] = [
        sql.SQL("INSERT INTO {t} ({cols}) SELECT {exprs} FROM (VALUES (1)) AS one (x)").format(
            t=table.identifier, cols=sql.SQL(", ").join(sql.Identifier(c.name) for c in needed),
            exprs=sql.SQL(", ").join(exprs))]
    if template_cols:
        parts.append(sql.SQL(" LEFT JOIN LATERAL (SELECT {} FROM {} LIMIT 1) AS src ON true")
                     .format(sql.SQL(", ").join(map(sql.Identifier, template_cols)),
                             table.identifier))
    for index, fk in enumerate(fks):
        ref_table = sql.Identifier(fk.ref_schema, fk.ref_table)
        alias = sql.Identifier(f"fk{index}")
        if index in open_fks:
            parts.append(sql.SQL(" CROSS JOIN {} AS {}").format(ref_table, alias))
        else:
            parts.append(sql.SQL(" CROSS JOIN (SELECT {} FROM {} LIMIT 1) AS {}").format(
                sql.SQL(", ").join(map(sql.Identifier, fk.ref_columns)), ref_table, alias))
    if covered:
        conditions = [
            sql.SQL("NOT EXISTS (SELECT FROM {t} x WHERE {match})").format(
                t=table.identifier,
                match=sql.SQL(" AND ").join(
                    sql.SQL("x.{} = {}").format(sql.Identifier(c),
                                                sql.Identifier(f"fk{by_column[c][0]}",
                                                               by_column[c][1]))
                    for c in sorted(s)))
            for s in covered]
        parts.append(sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions))
    parts.append(sql.SQL(" LIMIT 1"))
    return Insert(sql.Composed(parts), params,
                  frozenset(names), database, frozenset(fresh), tuple(fks))


def configured(table: sql.Identifier, values: Mapping[str, object]) -> tuple[sql.Composed,
                                                                              dict[str, str]]:
    """A configured row: its values are read by each column's own type input, as given."""
    if not values:
        return sql.SQL("INSERT INTO {} DEFAULT VALUES").format(table), {}
    statement = sql.SQL("INSERT INTO {t} ({cols}) SELECT {cols} "
                        "FROM json_populate_record(NULL::{t}, %(values)s::json)").format(
        t=table, cols=sql.SQL(", ").join(map(sql.Identifier, values)))
    return statement, {"values": json.dumps(values, default=str)}


_COUNTABLE = frozenset({"int2", "int4", "int8", "numeric", "float4", "float8"})


def invent(column: ColumnInfo, *, unique: bool, variant: int = 0) -> object:
    """A value of the column's type that satisfies its length limit, as JSON for
    json_populate_record: a string in the type's input syntax, or JSON itself for json,
    arrays and composites. Unique columns get a random token where the type allows one.
    Variant 1 is the second guess for a CHECK the first broke (`age >= 18`)."""
    token = secrets.token_hex(8)
    limit = column.typmod - 4 if column.typmod >= 4 else None  # varchar(n), char(n)
    if column.category == "E" and column.label is not None:
        return column.label
    if column.type in ("json", "jsonb"):
        return {"smoke": token} if unique else {}
    if column.category == "A":
        return []
    if column.category == "C":
        return {}
    if column.type == "uuid":
        return str(uuid.uuid4())
    if column.category == "S":
        text = f"smoke-{token}" if unique else "smoke"
        if "mail" in column.name.lower():  # email columns often CHECK for an @
            text += "@example.org"
        return text[-limit:] if limit is not None else text
    if column.category == "N":  # 1 passes the usual CHECKs (> 0, BETWEEN 1 AND n)
        digits = 18
        if column.type == "numeric" and column.typmod >= 4:
            precision, scale = (column.typmod - 4) >> 16, (column.typmod - 4) & 0xFFFF
            digits = precision - scale  # numeric(2,2) holds no 1
        return "0" if digits < 1 else "100" if variant and digits >= 3 else "1"
    if variant and column.type in _SECOND_GUESS:
        return _SECOND_GUESS[column.type]
    if column.category == "V":  # bit(n) takes exactly n bits, varbit(n) at most n
        return "0" * (column.typmod if column.type == "bit" and column.typmod > 0 else 1)
    return _BY_TYPE.get(column.type, _BY_CATEGORY.get(column.category, ""))


_SECOND_GUESS = {"bool": "true", "date": "2000-01-01", "timestamp": "2000-01-01",
                 "timestamptz": "2000-01-01"}
_BY_CATEGORY = {"B": "false", "D": "now", "T": "1 day", "I": "127.0.0.1", "G": "(0,0)",
                "R": "empty"}
_BY_TYPE = {"bytea": "\\x", "macaddr": "08:00:2b:01:02:03", "macaddr8": "08:00:2b:01:02:03:04:05",
            "tsvector": "", "tsquery": "smoke", "xml": "<smoke/>", "pg_lsn": "0/0",
            "box": "(0,0),(1,1)", "circle": "<(0,0),1>", "line": "{1,-1,0}",
            "lseg": "[(0,0),(1,1)]", "path": "((0,0),(1,1))", "polygon": "((0,0),(1,1),(1,0))"}
