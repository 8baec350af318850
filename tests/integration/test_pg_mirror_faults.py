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

from harness.shadow import rows, shadow_config, wait_drained
from harness.util import free_port


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
