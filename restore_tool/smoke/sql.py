"""The catalog description of every table a smoke insert needs to know about: the query,
and the values it is read into."""

from __future__ import annotations

from collections.abc import Sequence
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
                      'counter', a.attidentity <> '' OR coalesce((
                          SELECT pg_get_expr(d.adbin, d.adrelid) LIKE '%%nextval(%%'
                          FROM pg_attrdef d
                          WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum), false),
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
           WHERE f.conrelid = c.oid AND f.contype = 'f'), '[]') AS foreign_keys,
       EXISTS (SELECT FROM pg_rewrite r  -- ON INSERT ... DO INSTEAD (inheritance partitioning)
               WHERE r.ev_class = c.oid AND r.ev_type = '3' AND r.is_instead) AS insert_rule
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
    counter: bool = False  # an identity or a nextval() default: a new value every insert

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
    insert_rule: bool = False  # a DO INSTEAD rule rewrites inserts: the count says 0

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> TableInfo:
        oid, schema, name, can_insert, trigger, columns, uniques, fks, insert_rule = row
        return cls(
            oid, schema, name, can_insert, trigger,
            tuple(ColumnInfo(**column) for column in columns),
            tuple(frozenset(names) for names in uniques),
            tuple(ForeignKey(tuple(fk["columns"]), fk["ref_schema"], fk["ref_table"],
                             tuple(fk["ref_columns"])) for fk in fks),
            insert_rule,
        )

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)

    @property
    def unique_columns(self) -> frozenset[str]:
        return frozenset().union(*self.uniques)
