"""The database's side of the proof, as SQL: every object a dump entry can name, named as
pg_dump names it (so `film film_pkey` for a constraint, `last_day(timestamp with time zone)`
for a function, types written with search_path empty as pg_dump writes them), with what is
wrong with it; and the row counts of tables."""

from __future__ import annotations

# (kind, schema, name, problem, user): problem is NULL for a healthy object, else what is
# wrong (`is invalid`, `NOT VALID`, `is not populated`); user is false for the system's own
# objects and those of extensions (a live source's inventory leaves them out: pg_dump does).
# Runs with search_path empty (format_type then qualifies every type outside pg_catalog).
INVENTORY = """
WITH ext AS (
    SELECT classid, objid FROM pg_depend WHERE deptype = 'e'
), rel AS (
    SELECT c.oid, c.relname, c.relkind, c.relispopulated, c.relrowsecurity, n.nspname,
           n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
           AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_class'::regclass
                           AND ext.objid = c.oid) AS user_object
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
)
SELECT 'SCHEMA', '-', n.nspname, NULL,
       n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'
FROM pg_namespace n
UNION ALL
SELECT 'EXTENSION', '-', extname, NULL, true FROM pg_extension
UNION ALL
SELECT CASE relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                    WHEN 'S' THEN 'SEQUENCE' WHEN 'f' THEN 'FOREIGN TABLE' ELSE 'TABLE' END,
       nspname, relname, NULL, user_object
FROM rel WHERE relkind IN ('r', 'p', 'v', 'm', 'S', 'f')
UNION ALL
SELECT 'MATERIALIZED VIEW DATA', nspname, relname,
       CASE WHEN NOT relispopulated THEN 'is not populated' END, user_object
FROM rel WHERE relkind = 'm'
UNION ALL
SELECT 'ROW SECURITY', nspname, relname, NULL, user_object FROM rel WHERE relrowsecurity
UNION ALL
SELECT 'INDEX', i.nspname, i.relname,
       CASE WHEN NOT x.indisvalid THEN 'is invalid' WHEN NOT x.indisready THEN 'is not ready' END,
       t.user_object
FROM pg_index x JOIN rel i ON i.oid = x.indexrelid JOIN rel t ON t.oid = x.indrelid
UNION ALL
SELECT CASE WHEN co.contype = 'f' THEN 'FK CONSTRAINT' ELSE 'CONSTRAINT' END, n.nspname,
       coalesce(r.relname, ty.typname) || ' ' || co.conname,
       CASE WHEN NOT co.convalidated THEN 'NOT VALID' END,
       n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND coalesce(r.user_object, true)
       AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass
                       AND ext.objid = co.contypid)
FROM pg_constraint co
JOIN pg_namespace n ON n.oid = co.connamespace
LEFT JOIN rel r ON r.oid = co.conrelid
LEFT JOIN pg_type ty ON ty.oid = co.contypid
WHERE co.contype <> 'n'  -- NOT NULL (a catalog row since 18) is part of its table's entry
UNION ALL
SELECT 'TRIGGER', r.nspname, r.relname || ' ' || tg.tgname, NULL, r.user_object
FROM pg_trigger tg JOIN rel r ON r.oid = tg.tgrelid
WHERE NOT tg.tgisinternal
UNION ALL
SELECT 'POLICY', r.nspname, r.relname || ' ' || p.polname, NULL, r.user_object
FROM pg_policy p JOIN rel r ON r.oid = p.polrelid
UNION ALL
SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END,
       n.nspname,
       p.proname || '(' || CASE WHEN p.prokind = 'a' AND p.pronargs = 0 THEN '*' ELSE
           coalesce((SELECT string_agg(format_type(a.type, NULL), ', ' ORDER BY a.i)
                     FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a(type, i)), '')
       END || ')', NULL,
       n.nspname NOT IN ('pg_catalog', 'information_schema')
       AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_proc'::regclass
                       AND ext.objid = p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
UNION ALL
SELECT CASE ty.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname, ty.typname, NULL,
       n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
       AND ty.typelem = 0  -- not an array type, nor a table's row type (a composite is one):
       AND (ty.typrelid = 0 OR EXISTS (SELECT 1 FROM rel WHERE rel.oid = ty.typrelid
                                                        AND rel.relkind = 'c'))
       AND NOT EXISTS (SELECT 1 FROM ext WHERE ext.classid = 'pg_type'::regclass
                       AND ext.objid = ty.oid)
FROM pg_type ty JOIN pg_namespace n ON n.oid = ty.typnamespace
UNION ALL
SELECT 'DEFAULT', r.nspname, r.relname || ' ' || a.attname, NULL, r.user_object
FROM pg_attrdef d
JOIN rel r ON r.oid = d.adrelid
JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
UNION ALL
SELECT 'EVENT TRIGGER', '-', evtname, NULL, true FROM pg_event_trigger
"""

# The kinds INVENTORY names; a dump's CHECK CONSTRAINT (one dumped apart from its table or
# domain) is a CONSTRAINT here. Other entries (comments, grants, SEQUENCE SET, attachments)
# are not compared: the checklist says how many.
COMPARED = frozenset({
    "SCHEMA", "EXTENSION", "TABLE", "VIEW", "MATERIALIZED VIEW", "SEQUENCE", "FOREIGN TABLE",
    "MATERIALIZED VIEW DATA", "ROW SECURITY", "INDEX", "CONSTRAINT", "FK CONSTRAINT",
    "TRIGGER", "POLICY", "FUNCTION", "PROCEDURE", "AGGREGATE", "TYPE", "DOMAIN", "DEFAULT",
    "EVENT TRIGGER",
})
ALIASES = {"CHECK CONSTRAINT": "CONSTRAINT"}

# Each wanted (schema, table): its OID, whether this role may count it as it is (SELECT,
# and no row-level security filtering what it sees), and the server's own counters of the
# rows written to it.
TABLES = """
SELECT w.schema, w.name, c.oid::bigint,
       has_table_privilege(c.oid, 'SELECT') AND NOT coalesce(row_security_active(c.oid), false),
       s.n_tup_ins, s.n_live_tup, s.n_dead_tup, s.n_tup_del, s.n_tup_upd
FROM unnest(%(schemas)s::text[], %(names)s::text[]) AS w(schema, name)
JOIN pg_namespace n ON n.nspname = w.schema
JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = w.name
                AND c.relkind IN ('r', 'p', 'f', 'm')
LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid
"""

# A live source's tables that hold rows of their own (not a partitioned parent, not a view).
USER_TABLES = """
SELECT n.nspname, c.relname
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2
"""

# Session settings under which a row prints the same text on every server and version the
# proof compares (dates, times, intervals, floats, bytea, money, regclass names).
PINNED = {
    "DateStyle": "ISO, MDY", "TimeZone": "UTC", "IntervalStyle": "postgres",
    "extra_float_digits": "1", "bytea_output": "hex", "lc_monetary": "C", "search_path": "",
}

# Sessions other than ours on the database just loaded: the loader's (pg_restore's or psql's,
# till they are gone: each writes its row counters when it ends), and anyone else's.
OTHERS = """
SELECT count(*) FILTER (WHERE application_name IN ('pg_restore', 'psql')),
       count(*) FILTER (WHERE application_name NOT IN ('pg_restore', 'psql'))
FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
"""
