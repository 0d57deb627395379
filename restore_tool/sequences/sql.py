"""The SQL of sequence repair, kept together: the catalog query that discovers which
sequence feeds which column, and the PL/pgSQL blocks that measure and move sequences inside
the server. Names reach the server as JSON and are quoted there with format('%I')."""

from __future__ import annotations

from typing import NamedTuple

# One row per (sequence, column) that the sequence feeds. A column is fed by a sequence when
#  - its DEFAULT calls nextval('s'::regclass) (serial, or a hand-written default, OWNED BY or
#    not): pg_attrdef depends on the sequence;
#  - the sequence is an identity sequence or OWNED BY it: the sequence depends on the column;
#  - its DEFAULT is the legacy nextval('s'::text) form, which records no dependency: the name
#    is resolved as nextval() would, with the session's search_path, then in the table's schema.
# OIDs are unique per catalog only, so every pg_depend join pins classid and refclassid.
# A child table (partition or inheritance child) whose parent is fed by the same sequence
# through the same column is folded into the parent: max() on the parent already covers it.
DISCOVER = """
WITH RECURSIVE legacy AS (
    SELECT ad.adrelid, ad.adnum, n.nspname,
           replace(m[1], '''''', '''') AS name
    FROM pg_attrdef ad
    JOIN pg_class c ON c.oid = ad.adrelid
    JOIN pg_namespace n ON n.oid = c.relnamespace,
    LATERAL regexp_match(pg_get_expr(ad.adbin, ad.adrelid),
        'nextval\\(\\(?''((?:[^'']|'''')+)''::(?:text|character varying)\\)')
        AS m
    -- cheap filters first (deparsing every default costs ~50us each on a large schema): the
    -- legacy forms call regclass(text) to cast the name when nextval() runs
    WHERE strpos(ad.adbin::text, ':funcid ' || 'regclass(text)'::regprocedure::oid || ' ') > 0
      AND strpos(ad.adbin::text, ':funcid ' || 'nextval(regclass)'::regprocedure::oid || ' ') > 0
      AND NOT EXISTS (SELECT 1 FROM pg_depend d JOIN pg_class s ON s.oid = d.refobjid
                      WHERE d.classid = 'pg_attrdef'::regclass AND d.objid = ad.oid
                        AND d.refclassid = 'pg_class'::regclass AND s.relkind = 'S')
      AND m IS NOT NULL
), feeds AS (
    SELECT DISTINCT f.seq_oid, f.rel_oid, f.attnum, s.relname AS seq_name,
           s.relnamespace AS seq_namespace, s.relacl IS NULL AS seq_default_acl,
           s.relowner AS seq_owner
    FROM (
        SELECT d.refobjid AS seq_oid, ad.adrelid AS rel_oid, ad.adnum AS attnum
        FROM pg_depend d
        JOIN pg_attrdef ad ON ad.oid = d.objid
        WHERE d.classid = 'pg_attrdef'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.refobjsubid = 0  -- not the default's dependency on its own column
        UNION ALL
        SELECT d.objid, d.refobjid, d.refobjsubid::smallint
        FROM pg_depend d
        WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
          AND d.deptype IN ('a', 'i') AND d.refobjsubid > 0
        UNION ALL
        SELECT coalesce(
                   CASE WHEN l.name ~ '^("([^"]|"")*"|[^".])*(\\.("([^"]|"")*"|[^".])*)?$'
                        THEN to_regclass(l.name) END,
                   CASE WHEN l.name ~ '^("([^"]|"")*"|[^".])*$'
                        THEN to_regclass(quote_ident(l.nspname) || '.' || l.name) END)::oid,
               l.adrelid, l.adnum
        FROM legacy l
    ) f
    JOIN pg_class s ON s.oid = f.seq_oid AND s.relkind = 'S'
), columns AS (
    SELECT f.*, t.relname AS rel_name, t.relnamespace AS rel_namespace,
           t.relacl IS NULL AS rel_default_acl, t.relowner AS rel_owner,
           t.relrowsecurity AS rel_rls,
           a.attname, a.atttypid, a.atttypmod
    FROM feeds f
    JOIN pg_class t ON t.oid = f.rel_oid AND t.relkind IN ('r', 'p'),
    -- an index lookup per column, where a join would read all of pg_attribute
    LATERAL (SELECT a.attname, a.atttypid, a.atttypmod FROM pg_attribute a
             WHERE a.attrelid = f.rel_oid AND a.attnum = f.attnum AND NOT a.attisdropped
             OFFSET 0) a
), tree AS (
    SELECT root, root AS rel FROM (SELECT DISTINCT rel_oid FROM columns) AS r(root)
    UNION ALL
    SELECT tree.root, i.inhrelid FROM tree JOIN pg_inherits i ON i.inhparent = tree.rel
), lock_cost AS (
    -- what max() on a table locks: it, its partitions or children, and all their indexes
    SELECT tree.root, count(DISTINCT tree.rel) + count(x.indexrelid) AS cost
    FROM tree LEFT JOIN pg_index x ON x.indrelid = tree.rel
    GROUP BY tree.root
), me AS (
    SELECT oid, rolsuper FROM pg_roles WHERE rolname = current_user
)
-- A privilege function (which looks its object up again, ~4us a row) is called only when
-- the catalog row does not already answer: a superuser holds every privilege and bypasses
-- row security; the owner holds every privilege while the object keeps its default ACL
-- (relacl NULL); a table without row security has none to apply.
SELECT
    c.seq_oid::bigint AS seq_oid,
    sn.nspname AS seq_schema,
    c.seq_name,
    format('%%I.%%I', sn.nspname, c.seq_name) AS seq_sql_name,
    q.seqstart AS start,
    q.seqincrement AS increment,
    q.seqmin AS min_value,
    q.seqmax AS max_value,
    q.seqcycle AS cycle,
    me.rolsuper OR (c.seq_default_acl AND c.seq_owner = me.oid)
        OR has_sequence_privilege(c.seq_oid, 'SELECT') AS can_read_sequence,
    me.rolsuper OR (c.seq_default_acl AND c.seq_owner = me.oid)
        OR has_sequence_privilege(c.seq_oid, 'UPDATE') AS can_update_sequence,
    c.rel_oid::bigint AS table_oid,
    tn.nspname AS table_schema,
    c.rel_name AS table_name,
    c.attname AS column_name,
    format('%%I.%%I.%%I', tn.nspname, c.rel_name, c.attname) AS column_sql_name,
    format_type(c.atttypid, c.atttypmod) AS column_type,
    coalesce(NULLIF(ty.typbasetype, 0), ty.oid)
        IN ('int2'::regtype, 'int4'::regtype, 'int8'::regtype, 'numeric'::regtype)
        AS numeric_column,
    me.rolsuper OR (c.rel_default_acl AND c.rel_owner = me.oid)
        OR has_column_privilege(c.rel_oid, c.attnum, 'SELECT') AS can_read_column,
    c.rel_rls AND NOT me.rolsuper AND row_security_active(c.rel_oid) AS row_security,
    k.cost AS lock_cost
FROM columns c
CROSS JOIN me
JOIN lock_cost k ON k.root = c.rel_oid
JOIN pg_namespace sn ON sn.oid = c.seq_namespace
JOIN pg_sequence q ON q.seqrelid = c.seq_oid
JOIN pg_namespace tn ON tn.oid = c.rel_namespace
JOIN pg_type ty ON ty.oid = c.atttypid
WHERE tn.nspname <> 'information_schema' AND left(tn.nspname, 3) <> 'pg_'
  AND NOT EXISTS (
      SELECT 1
      FROM pg_inherits i
      JOIN columns p ON p.rel_oid = i.inhparent AND p.seq_oid = c.seq_oid
                    AND p.attname = c.attname
      WHERE i.inhrelid = c.rel_oid)
  AND (%(schemas)s::text[] IS NULL
       OR EXISTS (SELECT 1 FROM columns o
                  JOIN pg_namespace onn ON onn.oid = o.rel_namespace
                  WHERE o.seq_oid = c.seq_oid
                    AND (onn.nspname = ANY(%(schemas)s) OR sn.nspname = ANY(%(schemas)s))))
ORDER BY sn.nspname, c.seq_name, tn.nspname, c.rel_name, c.attname
"""


class FeedRow(NamedTuple):
    """One catalog row of DISCOVER, field for field: a sequence and one column it feeds."""

    seq_oid: int
    seq_schema: str
    seq_name: str
    seq_sql_name: str
    start: int
    increment: int
    min_value: int
    max_value: int
    cycle: bool
    can_read_sequence: bool
    can_update_sequence: bool
    table_oid: int
    table_schema: str
    table_name: str
    column_name: str
    column_sql_name: str
    column_type: str
    numeric_column: bool
    can_read_column: bool
    row_security: bool
    lock_cost: int


# Every relation a transaction reads stays locked until it ends, and the server's lock table
# holds max_locks_per_transaction x (max_connections + max_prepared_transactions) locks for
# all sessions together (6,400 by default): reading 5,000 tables, their indexes and their
# sequences in one transaction would need ~15,000. Each connection gets an equal share of a
# quarter of that table, and its block commits whenever its share is spent, or BATCH_LOCKS,
# whichever is less, so that a long run does not hold back DDL on tables it has finished with.
BATCH_LOCKS = 300

# Measuring writes nothing, so its commits cost next to nothing, and it commits far more
# often: before it would hold more than this many locks, the fast-path lock slots every
# backend has (16; more from PostgreSQL 18). Past them each lock goes through the shared
# lock table, which all connections contend for: at 5,000 tables on two connections, ~13%
# of the measuring.
# Repairing keeps BATCH_LOCKS: its setval calls make each commit flush the WAL.
FAST_PATH_LOCKS = 16

# Catalog statistics lag behind a restore (autovacuum has not analyzed pg_depend yet) and the
# planner then nests loops over catalogs it believes empty: DISCOVER took 15 s instead of
# 0.2 s on 5,000 fresh tables. Hash joins cost the same whatever the statistics say. Before
# PostgreSQL 18 a disabled join method counts as a huge cost, which would start JIT
# compilation (1.7 s): JIT goes off too.
PREPARE_DISCOVERY = """
SELECT set_config('enable_nestloop', 'off', true), set_config('jit', 'off', true),
       current_setting('max_locks_per_transaction')::int
       * (current_setting('max_connections')::int
          + current_setting('max_prepared_transactions')::int) / 4
"""


# The blocks commit whenever their lock budget is spent and hand their result back as one
# NOTICE with RESULT_CODE, since a DO block returns no rows.
RESULT_CODE = "RT000"

# The state of sequence `item` into `last_value` and `is_called`: PostgreSQL 18 reads it
# without planning a query on the sequence (what pg_dump 18 does); older servers select it.
READ_STATE = {
    18: """SELECT d.last_value, d.is_called INTO last_value, is_called
           FROM pg_get_sequence_data((item->>'oid')::oid::regclass) AS d;""",
    0: """EXECUTE format('SELECT last_value, is_called FROM %I.%I',
                         item->>'schema', item->>'name') INTO last_value, is_called;""",
}

# The edge of item's data into `edge`: MAX over every column the sequence feeds (MIN when it
# descends). Shared by MEASURE and, under --lock, APPLY. The first non-null value in index
# order is what max() reads too, but max() also plans the aggregate over a full scan: this
# form costs ~14% less a table in a new session.
MEASURE_EDGE = """
        edge := NULL;
        FOR k IN 0 .. jsonb_array_length(item->'columns') - 1 LOOP  -- no query per item
            col := item->'columns'->k;
            EXECUTE format('SELECT %1$I FROM %2$I.%3$I WHERE %1$I IS NOT NULL '
                           'ORDER BY %1$I %4$s LIMIT 1', col->>2, col->>0, col->>1,
                           CASE WHEN (item->>'descending')::boolean THEN 'ASC' ELSE 'DESC' END)
                INTO value;
            edge := CASE WHEN (item->>'descending')::boolean THEN least(edge, value)
                         ELSE greatest(edge, value) END;
        END LOOP;"""

MEASURE = """
DECLARE
    input CONSTANT jsonb := {input};
    item jsonb;
    col jsonb;
    last_value bigint;
    is_called boolean;
    value numeric;
    edge numeric;
    oids bigint[] := '{{}}';
    last_values bigint[] := '{{}}';
    called boolean[] := '{{}}';
    edges numeric[] := '{{}}';
BEGIN
    FOR item IN SELECT jsonb_array_elements(input) LOOP
        {read_state}
        {measure_edge}
        oids := oids || (item->>'oid')::bigint;
        last_values := last_values || last_value;
        called := called || is_called;
        edges := edges || edge;
        IF (item->>'commit')::boolean THEN
            COMMIT;
        END IF;
    END LOOP;
    PERFORM set_config('client_min_messages', 'notice', true);
    RAISE NOTICE USING ERRCODE = '{code}',
        MESSAGE = json_build_array(oids, last_values, called, edges)::text;
END
"""

# A forward move re-reads its sequence just before its setval and is left out if the sequence
# is no longer behind its data: a concurrent nextval() is never undone. With `lock` (an item
# then carries its columns), the tables are first locked in SHARE ROW EXCLUSIVE mode, which
# lets readers in and keeps writers out until the batch commits, and the data is measured
# again under the lock: a row written since the first measurement moves the target further.
# At the end every moved sequence is read once more and the ones other sessions drew from
# meanwhile are reported: writers were active, and without --lock one could have inserted an
# explicit id under the new value.
APPLY = """
DECLARE
    input CONSTANT jsonb := {input};
    item jsonb;
    col jsonb;
    last_value bigint;
    is_called boolean;
    next numeric;
    value numeric;
    edge numeric;
    planned numeric;
    target numeric;
    called boolean;
    applied bigint[] := '{{}}';
    edges numeric[] := '{{}}';
    done jsonb[] := '{{}}';  -- arrays, not a jsonb array: appending stays cheap
    values_set bigint[] := '{{}}';
    called_set boolean[] := '{{}}';
    i integer := 0;
    moved bigint[] := '{{}}';
BEGIN
    FOR item IN SELECT jsonb_array_elements(input) LOOP
        target := (item->>'value')::numeric;
        called := (item->>'called')::boolean;
        planned := (item->>'edge')::numeric;
        edge := planned;
        IF item ? 'columns' THEN
            FOR col IN SELECT DISTINCT ON (e->>0, e->>1) e
                       FROM jsonb_array_elements(item->'columns') AS e LOOP
                EXECUTE format('LOCK TABLE %I.%I IN SHARE ROW EXCLUSIVE MODE',
                               col->>0, col->>1);
            END LOOP;
            {measure_edge}
            IF edge IS NOT NULL AND (CASE WHEN (item->>'descending')::boolean
                                          THEN edge < planned ELSE edge > planned END) THEN
                target := edge;  -- written since measured: go past it instead
                called := true;
            ELSE
                edge := planned;
            END IF;
        END IF;
        {read_state}
        next := CASE WHEN is_called THEN last_value::numeric + (item->>'increment')::bigint
                     ELSE last_value END;
        IF next IS NOT NULL AND (NOT (item->>'forward')::boolean
            OR CASE WHEN (item->>'increment')::bigint < 0
                    THEN next >= edge
                    ELSE next <= edge END)
        THEN
            PERFORM setval((item->>'oid')::oid::regclass, target::bigint, called);
            applied := applied || (item->>'oid')::bigint;
            edges := edges || edge;
            done := done || item;
            values_set := values_set || target::bigint;
            called_set := called_set || called;
        END IF;
        IF (item->>'commit')::boolean THEN
            COMMIT;
        END IF;
    END LOOP;
    -- Once all are set, read them again: one that moved on was drawn from by other sessions
    -- while the repair ran (a cheap state read, not another MAX per table).
    FOREACH item IN ARRAY done LOOP
        i := i + 1;
        {read_state}
        IF last_value IS DISTINCT FROM values_set[i] OR is_called IS DISTINCT FROM called_set[i]
        THEN
            moved := moved || (item->>'oid')::bigint;
        END IF;
    END LOOP;
    PERFORM set_config('client_min_messages', 'notice', true);
    RAISE NOTICE USING ERRCODE = '{code}',
        MESSAGE = json_build_array(applied, edges, moved)::text;
END
"""
