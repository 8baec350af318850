"""Signals: SIGHUP reloads without dropping anything (and keeps the old config
when the new one is wrong), SIGTERM drains, SIGINT exits at once."""
import json
import signal
import threading
import uuid

import psycopg
import pytest

from harness.clients import check_pgbench, pgbench_popen
from harness.tandemproc import pg_config
from harness.util import free_port, wait_until


def reloads(t):
    return t.metric("tandem_reloads_total") or 0


def server_runs(pg, marker):
    """True when a query containing MARKER is running on server PG."""
    with pg.connect() as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                             "AND query LIKE %s", (f"%{marker}%",)).fetchone()[0] == 1


class Running:
    """A query run in a thread on CONN; .result or .error when done."""

    def __init__(self, conn, sql):
        self.result = self.error = None
        self.thread = threading.Thread(target=self._run, args=(conn, sql), daemon=True)
        self.thread.start()

    def _run(self, conn, sql):
        try:
            self.result = conn.execute(sql).fetchall()
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            self.error = exc

    def join(self, timeout):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"query still running after {timeout}s"


# -- SIGHUP ------------------------------------------------------------------

def test_sighup_under_load(tandem, pgbench_db):
    port, admin = free_port(), free_port()

    def conf(log_format, max_client_conn):
        return pg_config(port=port, primary=pgbench_db, admin_port=admin, log_format=log_format,
                         limits={"max_client_conn": max_client_conn})

    t = tandem(config_text=conf("text", 100), port=port, admin_port=admin)
    before = reloads(t)
    bench = pgbench_popen(t.port, clients=4, seconds=6)
    try:
        t.wait_metric("tandem_client_connections", 4, listener="pg")
        t.write_config(conf("json", 200))
        t.signal(signal.SIGHUP)
        t.wait_metric("tandem_reloads_total", before + 1)
        t.write_config(conf("text", 300))
        t.signal(signal.SIGHUP)
        t.wait_metric("tandem_reloads_total", before + 2)
        assert bench.poll() is None, "pgbench ended before both reloads were done"
    finally:
        check_pgbench(bench)
    with t.connect() as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_sighup_with_bad_config_keeps_old_one(tandem, pg_primary):
    port, admin = free_port(), free_port()
    good = pg_config(port=port, primary=pg_primary, admin_port=admin,
                     limits={"max_client_conn": 50})
    t = tandem(config_text=good, port=port, admin_port=admin)
    held = t.connect()
    before = reloads(t)

    # Line 5 (max_client_conn 1) is valid and would refuse our second session
    # below if applied; line 8 is an error, so nothing of this file applies.
    bad_lines = good.splitlines()
    assert bad_lines[4].strip() == "max_client_conn 50;", bad_lines
    bad_lines[4] = "    max_client_conn 1;"
    bad_lines.insert(7, "this_is_not_a_directive 42;")
    t.write_config("\n".join(bad_lines) + "\n")
    t.signal(signal.SIGHUP)

    where = f"{t.conf_path}:8:"
    wait_until(lambda: where in t.log() or "tandem.conf:8:" in t.log(), 20,
               f"the log to name {where}")
    assert t.proc.poll() is None, "tandem exited on a bad reload"
    assert held.execute("SELECT 'held'").fetchone()[0] == "held"
    with t.connect() as c2, t.connect() as c3:
        assert c2.execute("SELECT 2").fetchone()[0] + c3.execute("SELECT 3").fetchone()[0] == 5
    t.wait_metric("tandem_reloads_total", before + 1)   # counted (as a failure)
    # and a good file after the bad one reloads normally
    t.write_config(good)
    t.signal(signal.SIGHUP)
    t.wait_metric("tandem_reloads_total", before + 2)
    assert held.execute("SELECT 'still held'").fetchone()[0] == "still held"
    held.close()


def test_sighup_applies_new_limit_and_log_format(tandem, pg_primary):
    port, admin = free_port(), free_port()

    def conf(log_format, max_client_conn):
        return pg_config(port=port, primary=pg_primary, admin_port=admin, log_format=log_format,
                         limits={"max_client_conn": max_client_conn})

    t = tandem(config_text=conf("text", 50), port=port, admin_port=admin)
    wait_until(lambda: t.metric("tandem_client_connections") == 0, 20, "no client connections")
    held = [t.connect(), t.connect()]
    before = reloads(t)
    t.write_config(conf("json", 2))
    t.signal(signal.SIGHUP)
    t.wait_metric("tandem_reloads_total", before + 1)
    # the two sessions stay; a third is now one too many
    with pytest.raises(psycopg.OperationalError, match="too many|53300|connections"):
        t.connect()
    assert [c.execute("SELECT 1").fetchone()[0] for c in held] == [1, 1]
    for c in held:
        c.close()
    assert t.stop() == 0
    last = t.log().splitlines()[-1]
    assert json.loads(last)["msg"], f"after the reload to json, the last line is {last!r}"


# -- SIGTERM -----------------------------------------------------------------------

def test_sigterm_drains_then_exits_0(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, shutdown_timeout=20)
    marker = "drain_" + uuid.uuid4().hex[:8]
    conn = t.connect()
    running = Running(conn, f"SELECT pg_sleep(3), 'done' /* {marker} */")
    wait_until(lambda: server_runs(pg_primary, marker), 20, "the query to run")

    t.signal(signal.SIGTERM)
    # draining: not ready any more, and new sessions are refused
    wait_until(lambda: t.http("/readyz")[0] == 503, 10, "/readyz 503 while draining")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(t.dsn(connect_timeout=5))

    running.join(30)
    assert running.error is None, f"the in-flight query failed: {running.error!r}"
    assert running.result[0][1] == "done"
    rc = t.wait_exit(timeout=20 + 15)
    assert rc == 0, f"exit status {rc}"
    conn.close()


def test_sigterm_exits_when_idle_sessions_remain(tandem, pg_primary):
    """Idle sessions do not hold the drain: tandem closes them and exits 0."""
    t = tandem.pg(primary=pg_primary, shutdown_timeout=20)
    idle = [t.connect() for _ in range(3)]
    t.signal(signal.SIGTERM)
    rc = t.wait_exit(timeout=20 + 15)
    assert rc == 0
    for conn in idle:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")


def test_sigterm_gives_up_after_shutdown_timeout(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, shutdown_timeout=2)
    marker = "stuck_" + uuid.uuid4().hex[:8]
    conn = t.connect()
    running = Running(conn, f"SELECT pg_sleep(60) /* {marker} */")
    wait_until(lambda: server_runs(pg_primary, marker), 20, "the query to run")
    t.signal(signal.SIGTERM)
    t.wait_exit(timeout=2 + 20)   # far below the 60 s the query would take
    running.join(20)
    assert isinstance(running.error, psycopg.OperationalError), running.error
    _terminate(pg_primary, marker)


# -- SIGINT ----------------------------------------------------------------------------

def test_sigint_exits_at_once(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, shutdown_timeout=60)
    marker = "sigint_" + uuid.uuid4().hex[:8]
    conn = t.connect()
    running = Running(conn, f"SELECT pg_sleep(30) /* {marker} */")
    wait_until(lambda: server_runs(pg_primary, marker), 20, "the query to run")
    t.signal(signal.SIGINT)
    # shutdown_timeout is 60 s and the query 30 s: exiting within 15 s means no drain
    t.wait_exit(timeout=15)
    running.join(20)
    assert isinstance(running.error, psycopg.OperationalError), running.error
    _terminate(pg_primary, marker)


def _terminate(pg, marker):
    with pg.connect() as admin:
        admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",))


def test_sigint_while_a_session_waits_for_its_shadow(tandem, pg_primary, pg_victim):
    """A session whose client left while its shadow still owed answers
    (state shadow_drain), then SIGINT: a clean exit, never a crash."""
    from harness.shadow import execute, shadow_config, signal_server
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_victim,
                         mirror={"reads": "0%", "timeout": "60s"})
    t = tandem(config_text=text, port=port, admin_port=admin)
    for server in (pg_primary, pg_victim):
        execute(server, "CREATE TABLE IF NOT EXISTS sigint_drain (v int)")
        execute(server, "GRANT ALL ON sigint_drain TO PUBLIC")
    signal_server(pg_victim, signal.SIGSTOP)
    try:
        for i in range(3):
            with t.connect() as conn:
                conn.execute("INSERT INTO sigint_drain VALUES (%s)", (i,))
        # the clients are gone, their shadows still owe the inserts
        wait_until(lambda: t.metric("tandem_client_connections", listener="pg") == 0 and
                   (t.metric("tandem_shadow_lag_seconds", listener="pg") or 0) > 0, 20,
                   "sessions left with only their shadow")
        t.signal(signal.SIGINT)
        assert t.wait_exit(timeout=30) == 0
        assert t.crash_report() is None, t.crash_report()
    finally:
        signal_server(pg_victim, signal.SIGCONT)
        execute(pg_primary, "DROP TABLE sigint_drain")
