"""What a schema script needs of the server (pure: saved statements, no server)."""

from __future__ import annotations

from restore_tool.restore import needs, script

SCRIPT = b"""\
SET default_tablespace = '';
CREATE EXTENSION IF NOT EXISTS postgis WITH SCHEMA public;
SET default_tablespace = fast_disk;
SET default_tablespace = "Slow Disk";
CREATE TABLE public.menu (note text);
COPY public.menu (note) FROM stdin;
GRANT SELECT ON TABLE public.menu TO ghost;
\\.
GRANT SELECT ON TABLE public.menu TO reader, "Report Writer" WITH GRANT OPTION;
REVOKE ALL ON TABLE public.menu FROM PUBLIC;
REVOKE ALL ON FUNCTION public.f(to_date integer) FROM "old""team";
ALTER DEFAULT PRIVILEGES FOR ROLE app_owner IN SCHEMA public GRANT SELECT ON TABLES TO auditor;
CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION public.log_ddl();
COMMENT ON EVENT TRIGGER log_ddl IS 'audit';
CREATE SUBSCRIPTION feed CONNECTION 'host=primary' PUBLICATION p WITH (slot_name = 'feed');
"""


def test_roles_tablespaces_extensions_and_superuser_entries() -> None:
    found = needs.read(script.pieces(SCRIPT.splitlines(keepends=True)))
    assert found.grantees == {"reader", "Report Writer", 'old"team', "app_owner", "auditor"}
    assert found.tablespaces == {"fast_disk", "Slow Disk"}
    assert found.extensions == {"postgis"}
    assert found.event_triggers == ("log_ddl",)
    assert [needs.subscription_name(s) for s in found.subscriptions] == ["feed"]
    assert needs.EVENT_TRIGGER_STATEMENT.match("COMMENT ON EVENT TRIGGER log_ddl IS 'audit';")


def test_a_subscription_restored_has_no_slot() -> None:
    dumped = ("CREATE SUBSCRIPTION feed CONNECTION 'host=primary' PUBLICATION p "
              "WITH (connect = false, slot_name = 'feed');")
    assert needs.without_slot(dumped).endswith("WITH (connect = false, slot_name = NONE);")
    assert needs.without_slot("CREATE SUBSCRIPTION f CONNECTION '' PUBLICATION p WITH "
                              "(connect = false);").endswith("(connect = false, slot_name = NONE);")
