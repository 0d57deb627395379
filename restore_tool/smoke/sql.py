"""The SQL of smoke tests, kept together: the catalog query that describes every table a
smoke insert needs to know about, and the builder of the one INSERT ... SELECT per attempt."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg import sql

# One row per ordinary table (partitions through their parent; no views, foreign tables,
# extension members or system schemas), with its columns, the column sets that must be unique
# (unique indexes' key columns and exclusion constraints) and its foreign keys, as JSON.
# Domains are looked through one level: their category, base type, typmod and default.
TABLES = r"""
WITH before_insert AS (  -- tables with a BEFORE INSERT row trigger, on them or a partition
    SELECT tg.tgrelid AS relid, p.inhparent AS parent
    FROM pg_trigger tg
    LEFT JOIN pg_inherits p ON p.inhrelid = tg.tgrelid
    WHERE NOT tg.tgisinternal AND tg.tgenabled <> 'D'
      AND tg.tgtype & 7 = 7  -- ROW | BEFORE | INSERT
)
SELECT c.oid::int8 AS oid, n.nspname AS schema, c.relname AS name,
       has_table_privilege(c.oid, 'INSERT') AS can_insert,
       c.oid IN (SELECT relid FROM before_insert UNION ALL SELECT parent FROM before_insert)
           AS before_insert_trigger,
       coalesce((
           SELECT json_agg(json_build_object(
                      'name', a.attname,
                      'not_null', a.attnotnull OR coalesce(t.typnotnull, false),
                      'produced', a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> ''
                                  OR t.typdefaultbin IS NOT NULL,
                      'category', t.typcategory,
                      'type', coalesce(b.typname, t.typname),
                      'typmod', CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END,
                      'label', (SELECT e.enumlabel FROM pg_enum e
                                WHERE e.enumtypid = coalesce(b.oid, t.oid)
                                ORDER BY e.enumsortorder LIMIT 1))
                  ORDER BY a.attnum)
           FROM pg_attribute a
           JOIN pg_type t ON t.oid = a.atttypid
           LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
           WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped), '[]') AS columns,
       coalesce((
           SELECT json_agg(names)
           FROM (SELECT (SELECT array_agg(a.attname ORDER BY k.ord)
                         FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY k(num, ord)
                         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num) AS names
                 FROM pg_index i WHERE i.indrelid = c.oid AND i.indisunique
                 UNION ALL
                 SELECT (SELECT array_agg(a.attname ORDER BY k.ord)
                         FROM unnest(x.conkey) WITH ORDINALITY k(num, ord)
                         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.num)
                 FROM pg_constraint x WHERE x.conrelid = c.oid AND x.contype = 'x') AS sets
           WHERE names IS NOT NULL), '[]') AS uniques,
       coalesce((
           SELECT json_agg(json_build_object(
                      'columns', (SELECT array_agg(a.attname ORDER BY k.ord)
                                  FROM unnest(f.conkey) WITH ORDINALITY k(num, ord)
                                  JOIN pg_attribute a ON a.attrelid = f.conrelid
                                                     AND a.attnum = k.num),
                      'ref_schema', rn.nspname, 'ref_table', r.relname,
                      'ref_columns', (SELECT array_agg(a.attname ORDER BY k.ord)
                                      FROM unnest(f.confkey) WITH ORDINALITY k(num, ord)
                                      JOIN pg_attribute a ON a.attrelid = f.confrelid
                                                         AND a.attnum = k.num))
                  ORDER BY f.conname)
           FROM pg_constraint f
           JOIN pg_class r ON r.oid = f.confrelid
           JOIN pg_namespace rn ON rn.oid = r.relnamespace
           WHERE f.conrelid = c.oid AND f.contype = 'f'), '[]') AS foreign_keys
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\_toast%%' AND n.nspname NOT LIKE 'pg\_temp%%'
  AND (%(schemas)s::text[] IS NULL OR n.nspname = ANY (%(schemas)s::text[]))
  AND NOT EXISTS (SELECT 1 FROM pg_depend d
                  WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                    AND d.refclassid = 'pg_extension'::regclass AND d.deptype = 'e')
ORDER BY n.nspname, c.relname
"""

# The columns of a unique index or constraint, found by its name after a unique violation
# (for a partitioned table the violated index belongs to a partition: same column names).
UNIQUE_COLUMNS = """
SELECT coalesce(bool_and(k.num > 0), false),
       array_agg(a.attname) FILTER (WHERE a.attname IS NOT NULL)
FROM pg_class ic
JOIN pg_namespace n ON n.oid = ic.relnamespace
JOIN pg_index i ON i.indexrelid = ic.oid
CROSS JOIN LATERAL unnest(i.indkey[0:i.indnkeyatts - 1]) AS k(num)
LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.num
WHERE n.nspname = %s AND ic.relname = %s
"""


@dataclass(frozen=True)
class ColumnInfo:
    name: str
    not_null: bool
    produced: bool  # a default, an identity or a generated column: the database fills it
    category: str  # pg_type.typcategory: N numeric, S string, D date/time, E enum, A array...
    type: str  # the base type's name (through one domain)
    typmod: int
    label: str | None  # an enum's first label

    @property
    def needed(self) -> bool:
        """A value must be given: NOT NULL and nothing in the database fills it."""
        return self.not_null and not self.produced


@dataclass(frozen=True)
class ForeignKey:
    columns: tuple[str, ...]
    ref_schema: str
    ref_table: str
    ref_columns: tuple[str, ...]


@dataclass(frozen=True)
class TableInfo:
    oid: int
    schema: str
    name: str
    can_insert: bool
    before_insert_trigger: bool
    columns: tuple[ColumnInfo, ...]
    uniques: tuple[frozenset[str], ...]
    foreign_keys: tuple[ForeignKey, ...]

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TableInfo:
        oid, schema, name, can_insert, trigger, columns, uniques, fks = row
        return cls(
            oid, schema, name, can_insert, trigger,
            tuple(ColumnInfo(**column) for column in columns),
            tuple(frozenset(names) for names in uniques),
            tuple(ForeignKey(tuple(fk["columns"]), fk["ref_schema"], fk["ref_table"],
                             tuple(fk["ref_columns"])) for fk in fks),
        )

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def unique_columns(self) -> frozenset[str]:
        return frozenset().union(*self.uniques)


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
    unique = table.unique_columns
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
                # an existing value behind a random prefix passes most CHECKs (an email's @)
                prefixed = sql.SQL("%(prefix)s || {}").format(source)
                if column.typmod >= 4:
                    prefixed = sql.SQL("right({}, {})").format(
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
