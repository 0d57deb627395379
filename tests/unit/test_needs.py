"""What a schema script needs of the server (pure: saved statements, no server)."""

from __future__ import annotations

from restore_tool.restoring import needs, script

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
--
-- Name: log_ddl; Type: EVENT TRIGGER; Schema: -; Owner: app
--

CREATE EVENT TRIGGER log_ddl ON ddl_command_end EXECUTE FUNCTION public.log_ddl();
ALTER EVENT TRIGGER log_ddl OWNER TO app;
-- Name: f(integer); Type: FUNCTION; Schema: public; Owner: app
CREATE FUNCTION public.f(integer) RETURNS integer
    LANGUAGE c
    AS '$libdir/f', 'f';
-- Name: g(integer); Type: FUNCTION; Schema: public; Owner: app
CREATE FUNCTION public.g(integer) RETURNS integer
    LANGUAGE plperlu
    AS $$
    LANGUAGE c
$$;
-- Name: h(); Type: FUNCTION; Schema: public; Owner: app
CREATE FUNCTION public.h() RETURNS integer
    LANGUAGE sql
    AS $$SELECT 1$$;
CREATE SUBSCRIPTION feed CONNECTION 'host=primary' PUBLICATION p WITH (slot_name = 'feed');
"""


def test_roles_tablespaces_extensions_and_superuser_entries() -> None:
    found = needs.read(script.pieces(SCRIPT.splitlines(keepends=True)))
    assert found.grantees == {"reader", "Report Writer", 'old"team', "app_owner", "auditor"}
    assert found.tablespaces == {"fast_disk", "Slow Disk"}
    assert found.extensions == {"postgis"}
    trigger = needs.Entry("EVENT TRIGGER", "-", "log_ddl")
    in_c = needs.Entry("FUNCTION", "public", "f(integer)", "c")
    in_plperlu = needs.Entry("FUNCTION", "public", "g(integer)", "plperlu")
    assert found.special == (trigger, in_c, in_plperlu)
    assert found.superuser_only(frozenset({"c", "internal"})) == (trigger, in_c)
    assert [needs.subscription_name(s) for s in found.subscriptions] == ["feed"]


def test_an_entry_covers_its_comments_and_grants_by_their_names() -> None:
    language = needs.Entry("PROCEDURAL LANGUAGE", "-", "plperlu")
    assert language.covers("PROCEDURAL LANGUAGE", "-", "plperlu")
    assert language.covers("COMMENT", "-", "LANGUAGE plperlu")
    assert language.covers_listed("ACL", "- LANGUAGE plperlu postgres")
    assert not language.covers_listed("ACL", "- LANGUAGE plperlu2 postgres")
    template = needs.Entry("TEXT SEARCH TEMPLATE", "public", "simple2")
    assert template.covers_listed("TEXT SEARCH TEMPLATE", "public simple2 ")
    assert template.covers_listed("TEXT SEARCH TEMPLATE", "public simple2")
    assert not template.covers_listed("TEXT SEARCH TEMPLATE", "other simple2 ")
    assert not template.covers("TABLE", "public", "simple2")
    assert str(needs.Entry("FUNCTION", "public", "f(integer)", "c")) == \
        "function public.f(integer) (language c)"


def test_a_subscription_restored_has_no_slot() -> None:
    dumped = ("CREATE SUBSCRIPTION feed CONNECTION 'host=primary' PUBLICATION p "
              "WITH (connect = false, slot_name = 'feed');")
    assert needs.without_slot(dumped).endswith("WITH (connect = false, slot_name = NONE);")
    assert needs.without_slot("CREATE SUBSCRIPTION f CONNECTION '' PUBLICATION p WITH "
                              "(connect = false);").endswith("(connect = false, slot_name = NONE);")
