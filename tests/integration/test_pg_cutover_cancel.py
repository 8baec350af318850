"""Cancel after a cutover: a session opened before the cutover cancels its
query on the backend that answers it now, and again after the rollback.

A session swaps at an idle point, so the session here is idle while the
cutover (and the rollback) completes; then it starts pg_sleep(30) on the
answering server and psycopg's client cancel (a CancelRequest with the key
tandem gave at login) must end it with 57014.  Without the new key the
cancel would reach the old primary's backend, now tandem's mirror
connection, and the sleep would run its 30 s and succeed: the assertion is
on the outcome, never on a duration.
"""
import threading

import psycopg
import pytest

from harness.adminapi import run_operation
from harness.shadow import shadow_config
from harness.util import free_port, wait_until


def start(factory, primary, shadow, mode="shadow"):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow, mode=mode,
                         mirror={"reads": "0%", "timeout": "10s"})
    return factory(config_text=text, port=port, admin_port=admin)


def sleeping(server, tag):
    """Is a backend of server running the pg_sleep tagged `tag`?"""
    with psycopg.connect(server.socket_dsn(), autocommit=True) as direct:
        rows = direct.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE %s",
            (f"%pg_sleep(30) /* {tag} */%",)).fetchone()
    return rows[0] > 0


def cancel_sleep(conn, server, tag):
    """Run pg_sleep(30) on conn; cancel it from another thread once `server` runs it."""
    done = threading.Event()

    def cancel_when_running():
        try:
            wait_until(lambda: done.is_set() or sleeping(server, tag), 25,
                       "the sleep to start on the answering server")
        finally:
            if not done.is_set():
                conn.cancel()

    canceller = threading.Thread(target=cancel_when_running)
    canceller.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled) as err:
            conn.execute(f"SELECT pg_sleep(30) /* {tag} */")
    finally:
        done.set()
        canceller.join()
    assert err.value.sqlstate == "57014"


def test_cancel_follows_cutover_and_rollback(tandem, pg_primary, pg_shadow):
    t = start(tandem, pg_primary, pg_shadow)
    with psycopg.connect(t.dsn(), autocommit=True) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == pg_primary.port
        cancel_sleep(conn, pg_primary, "before")

        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        # the session was idle: it swapped with the listener, and answers from green now
        wait_until(lambda: conn.execute("SELECT inet_server_port()").fetchone()[0]
                   == pg_shadow.port, 10, "the session to swap")
        cancel_sleep(conn, pg_shadow, "after cutover")
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the session goes on

        op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        wait_until(lambda: conn.execute("SELECT inet_server_port()").fetchone()[0]
                   == pg_primary.port, 10, "the session to swap back")
        cancel_sleep(conn, pg_primary, "after rollback")
        assert conn.execute("SELECT 1").fetchone() == (1,)
