"""Mirroring faults found with real tools (issue 13):

  - a database created through tandem and used at once: the new session's
    shadow login may arrive before the shadow has run the CREATE DATABASE;
    it waits for it (retrying within the mirror timeout) instead of
    dropping the session's writes;
  - ANALYZE reaches the shadow, so the shadow plans with statistics too and
    its latencies compare fairly.
"""
import uuid

import psycopg

from harness.shadow import outcomes, rows, shadow_config, wait_drained
from harness.util import free_port, wait_until


def test_create_database_then_write_at_once(tandem, pg_primary, pg_shadow):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         mirror={"level": "all", "timeout": "5s"})
    t = tandem(config_text=text, port=port, admin_port=admin)
    names = ["nd_" + uuid.uuid4().hex[:8] for _ in range(5)]
    try:
        for name in names:
            with t.connect(user="postgres") as admin_conn:
                admin_conn.execute(f'CREATE DATABASE "{name}"')
            with psycopg.connect(host="127.0.0.1", port=t.port, user="postgres", dbname=name,
                                 autocommit=True) as conn:
                conn.execute("CREATE TABLE notes (id int PRIMARY KEY, v text)")
                conn.execute("INSERT INTO notes VALUES (1, 'written at once')")
        wait_drained(t)
        for name in names:
            assert rows(pg_shadow, "SELECT v FROM notes", dbname=name) == [("written at once",)], \
                name
        assert t.metric("tandem_shadow_diverged", listener="pg") == 0
    finally:
        for name in names:
            for server in (pg_primary, pg_shadow):
                with server.connect() as c:
                    c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_analyze_reaches_the_shadow(tandem, pg_primary, pg_shadow):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         mirror={"level": "all", "timeout": "5s"})
    t = tandem(config_text=text, port=port, admin_port=admin)
    name = "an_" + uuid.uuid4().hex[:8]
    sql = f"SELECT reltuples::bigint FROM pg_class WHERE relname = '{name}'"
    try:
        with t.connect(user="postgres") as conn:
            conn.execute(f"CREATE TABLE {name} AS SELECT g AS id FROM generate_series(1, 5000) g")
            assert rows(pg_shadow, sql) != [(5000,)]  # never analyzed there yet
            conn.execute(f"ANALYZE {name}")
        wait_drained(t)
        assert rows(pg_primary, sql) == [(5000,)]
        assert rows(pg_shadow, sql) == [(5000,)]
    finally:
        for server in (pg_primary, pg_shadow):
            with server.connect() as c:
                c.execute(f"DROP TABLE IF EXISTS {name}")


def test_prepared_statements_past_max_prepared_bytes(tandem, pg_primary, pg_shadow):
    """limits { max_prepared_bytes }: a session keeps the Parse of its prepared
    statements, to re-create them on a new shadow connection, only up to the
    bound.  A statement within it is re-created after a re-attach (and its reads
    compared again); one past it keeps only its classification: using it on a
    shadow that lacks it detaches the shadow (counted), and the client never
    notices."""
    port, admin = free_port(), free_port()
    text = "limits { max_prepared_bytes 16KB; }\n" + shadow_config(
        port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
        mirror={"reads": "100%", "timeout": "5s"})
    t = tandem(config_text=text, port=port, admin_port=admin)
    app = "prep_" + uuid.uuid4().hex[:8]
    small = "SELECT %s::int + 1 AS small"
    large = "SELECT %s::int + 2 AS large /* " + "x" * 32768 + " */"
    with psycopg.connect(host="127.0.0.1", port=t.port, user="postgres", dbname="postgres",
                         autocommit=True, application_name=app) as conn:
        for q, add in ((small, 1), (large, 2)):
            assert conn.execute(q, (1,), prepare=True).fetchone() == (1 + add,)
        wait_drained(t)
        # the session's shadow connection goes away: the next unit re-attaches
        killed = rows(pg_shadow, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 f"WHERE application_name = '{app}'")
        assert killed == [(True,)]
        before = outcomes(t)["match"]

        def small_matched_again():  # the first unit may find the dead connection first
            assert conn.execute(small, (5,), prepare=True).fetchone() == (6,)
            wait_drained(t)
            return outcomes(t)["match"] > before
        # re-created on the new shadow connection, and compared there
        wait_until(small_matched_again, 20, "the small statement compared after a re-attach")
        after = outcomes(t)
        # the statement past the bound cannot be: the shadow detaches, the client goes on
        assert conn.execute(large, (5,), prepare=True).fetchone() == (7,)
        assert conn.execute("SELECT 42").fetchone() == (42,)
        wait_drained(t)
        final = outcomes(t)
    lost = final["dropped"] + final["shadow_error"] - after["dropped"] - after["shadow_error"]
    assert lost >= 1, final
    assert t.metric("tandem_client_errors_total", listener="pg") in (None, 0)
