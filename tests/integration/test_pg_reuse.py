"""server_connections reuse: a server connection its client left idle is
reset (DISCARD ALL) and handed to the next client tandem authenticated as
the same user, for the same database, with the same startup parameters.

One worker, so two sequential clients meet the same worker's kept
connections.  The backend's pid (pg_backend_pid(), pg_stat_activity) says
whether a connection was reused.  Before the next client connects, each
test waits until the server has answered the reset (its last query is
server_reset_query and it is idle): the kept connection is then offered.
"""
import os
import signal
import subprocess
import threading

import psycopg
import pytest

from harness.adminapi import run_operation
from harness.clients import check_pgbench, psql
from harness.pgserver import PASSWORDS
from harness.shadow import create_database, shadow_config
from harness.tandemproc import pg_config
from harness.util import free_port, pg_tool, wait_until

REUSE_DB = "reuse_other"


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("reuse") / "userlist.txt"
    path.write_text(
        f'"scramuser" "{PASSWORDS["scramuser"]}"\n'
        f'"md5user" "{PASSWORDS["md5user"]}"\n')
    return path


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary, auth_file):
    create_database(pg_primary, REUSE_DB)
    with pg_primary.connect(dbname=REUSE_DB) as conn:
        conn.execute("GRANT ALL ON SCHEMA public TO scramuser, md5user")
    with pg_primary.connect() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS reuse_t (v text)")
        conn.execute("GRANT ALL ON reuse_t TO scramuser, md5user")
    return tandem_module.pg(primary=pg_primary, workers=1,
                            listener_extra=f"auth_file {auth_file};\nserver_connections reuse;")


def session(t, user="scramuser", dbname="postgres", **kw):
    return psycopg.connect(t.dsn(user=user, dbname=dbname, **kw), autocommit=True)


def pid_of(t, **kw):
    with session(t, **kw) as conn:
        return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def wait_reset(server, pid):
    """The kept backend PID has run the reset and is idle: the next login may take it."""
    def done():
        with server.connect() as conn:
            row = conn.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s",
                               (pid,)).fetchone()
        return row == ("idle", "DISCARD ALL")
    wait_until(done, 10, f"backend {pid} to be reset")


def alive(server, pid):
    with server.connect() as conn:
        return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s",
                            (pid,)).fetchone()[0] == 1


def test_reused_connection_is_clean(t, pg_primary):
    parked = t.metric("tandem_server_connections_parked_total", backend="blue") or 0
    reused = t.metric("tandem_server_connections_reused_total", backend="blue") or 0
    with session(t) as conn:
        first = conn.execute("SELECT pg_backend_pid()").fetchone()[0]
        conn.execute("SET work_mem = '7MB'")
        conn.execute("PREPARE left_over AS SELECT 1")
        conn.execute("CREATE TEMP TABLE left_temp (i int)")
        conn.execute("LISTEN left_channel")
        conn.execute("SELECT pg_advisory_lock(4242)")
        default_work_mem = conn.execute("SELECT reset_val || unit FROM pg_settings "
                                        "WHERE name = 'work_mem'").fetchone()[0]
    wait_reset(pg_primary, first)
    with session(t) as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == first
        assert conn.execute("SELECT current_user, current_database()").fetchone() == \
            ("scramuser", "postgres")
        # psycopg reads these from tandem's ParameterStatus replay
        assert conn.info.parameter_status("server_version")
        assert conn.info.parameter_status("client_encoding") == "UTF8"
        assert conn.execute("SHOW work_mem").fetchone()[0] != "7MB"
        assert conn.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0
        assert conn.execute("SELECT to_regclass('left_temp')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_listening_channels()").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                            "AND pid = pg_backend_pid()").fetchone()[0] == 0
        assert default_work_mem
    assert (t.metric("tandem_server_connections_parked_total", backend="blue") or 0) >= parked + 1
    assert (t.metric("tandem_server_connections_reused_total", backend="blue") or 0) >= reused + 1


def test_other_user_or_database_never_reuses(t, pg_primary):
    first = pid_of(t)
    wait_reset(pg_primary, first)
    with session(t, user="md5user") as conn:
        row = conn.execute("SELECT pg_backend_pid(), current_user").fetchone()
        assert row[0] != first and row[1] == "md5user"
    with session(t, dbname=REUSE_DB) as conn:
        row = conn.execute("SELECT pg_backend_pid(), current_database()").fetchone()
        assert row[0] != first and row[1] == REUSE_DB
    with session(t, application_name="another_app") as conn:
        row = conn.execute("SELECT pg_backend_pid(), current_setting('application_name')"
                           ).fetchone()
        assert row[0] != first and row[1] == "another_app"
    # the first one was kept all along for its own key
    assert pid_of(t) == first


def test_open_or_failed_transaction_is_not_kept(t, pg_primary):
    first = pid_of(t)
    wait_reset(pg_primary, first)
    conn = session(t)
    assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == first
    conn.execute("BEGIN")
    conn.execute("INSERT INTO reuse_t VALUES ('never committed')")
    conn.close()  # Terminate inside the transaction
    wait_until(lambda: not alive(pg_primary, first), 10, "the backend left in a transaction to end")
    second = pid_of(t)
    assert second != first
    with pg_primary.connect() as c:
        assert c.execute("SELECT count(*) FROM reuse_t WHERE v = 'never committed'"
                         ).fetchone()[0] == 0
    wait_reset(pg_primary, second)
    conn = session(t)
    conn.execute("BEGIN")
    with pytest.raises(psycopg.errors.DivisionByZero):
        conn.execute("SELECT 1 / 0")
    conn.close()
    wait_until(lambda: not alive(pg_primary, second), 10, "the failed transaction's backend to end")
    assert pid_of(t) != second


def test_terminated_kept_backend_does_not_fail_the_next_client(t, pg_primary):
    first = pid_of(t)
    wait_reset(pg_primary, first)
    with pg_primary.connect() as conn:
        assert conn.execute("SELECT pg_terminate_backend(%s, 5000)", (first,)).fetchone()[0]
    with session(t) as conn:
        row = conn.execute("SELECT pg_backend_pid(), 1").fetchone()
        assert row[0] != first and row[1] == 1


def test_cancel_on_reused_connection(t, pg_primary):
    first = pid_of(t)
    wait_reset(pg_primary, first)
    with session(t) as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] == first
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        try:
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute("SELECT pg_sleep(60)")
        finally:
            timer.cancel()
        assert conn.execute("SELECT 2").fetchone()[0] == 2


def test_relayed_authentication_never_reuses(tandem, tandem_bin, pg_primary, tmp_path):
    """Without an auth source the server checks every password: reuse is refused at start,
    and a relayed listener keeps nothing."""
    conf = tmp_path / "tandem.conf"
    conf.write_text(pg_config(port=free_port(), primary=pg_primary,
                              listener_extra="server_connections reuse;"))
    r = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "server_connections reuse needs auth_file or auth_query" in r.stderr, r.stderr
    relayed = tandem.pg(primary=pg_primary, workers=1)
    first = pid_of(relayed)
    with session(relayed) as conn:
        assert conn.execute("SELECT pg_backend_pid()").fetchone()[0] != first
    assert (relayed.metric("tandem_server_connections_parked_total", backend="blue") or 0) == 0


def test_cutover_drops_kept_primary_connections(tandem, pg_primary, pg_shadow, auth_file):
    """A connection kept to the old primary is never handed out after the swap: closed."""
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         workers=1, mirror={"reads": "0%", "timeout": "10s"},
                         listener_extra=f"auth_file {auth_file};\nserver_connections reuse;")
    t = tandem(config_text=text, port=port, admin_port=admin)

    def answered():
        with session(t) as conn:
            return conn.execute("SELECT pg_backend_pid(), inet_server_port()").fetchone()

    first, where = answered()
    assert where == pg_primary.port
    wait_reset(pg_primary, first)
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    pid, where = answered()
    assert where == pg_shadow.port  # the new primary answers; nothing kept reached the client
    wait_until(lambda: not alive(pg_primary, first), 10, "the kept old-primary connection to close")
    wait_reset(pg_shadow, pid)
    op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    pid2, where = answered()
    assert where == pg_primary.port and pid2 != first
    wait_until(lambda: not alive(pg_shadow, pid), 10, "the kept green connection to close")


def test_reload_closes_kept_connections(tandem, pg_primary, auth_file):
    """SIGHUP: connections kept under the old configuration are closed, never handed out."""
    t = tandem.pg(primary=pg_primary, workers=1,
                  listener_extra=f"auth_file {auth_file};\nserver_connections reuse;")
    first = pid_of(t)
    wait_reset(pg_primary, first)
    t.signal(signal.SIGHUP)
    wait_until(lambda: not alive(pg_primary, first), 10, "the kept connection to close")
    second = pid_of(t)
    assert second != first
    wait_reset(pg_primary, second)
    assert pid_of(t) == second  # the new configuration keeps connections again


def test_pgbench_connection_storm_sees_no_leftover(t, tmp_path):
    """pgbench -C: every transaction a new login; each one checks that the SET of the
    session before it on the same server connection is gone (else 1/0 fails it)."""
    script = tmp_path / "storm.sql"
    script.write_text("SELECT 1 / (current_setting('work_mem') <> '9MB')::int;\n"
                      "SET work_mem = '9MB';\n")
    reused = t.metric("tandem_server_connections_reused_total", backend="blue") or 0
    proc = subprocess.Popen([pg_tool("pgbench"), "-n", "-C", "-c", "4", "-j", "2", "-t", "100",
                             "-f", str(script), "-h", "127.0.0.1", "-p", str(t.port),
                             "-U", "scramuser", "postgres"],
                            env={**os.environ, "PGPASSWORD": PASSWORDS["scramuser"]},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            stdin=subprocess.DEVNULL)
    assert check_pgbench(proc) == 400
    assert (t.metric("tandem_server_connections_reused_total", backend="blue") or 0) > reused


def test_psql_sessions_one_after_another(t, pg_primary):
    first = psql(t.port, "-c", "SET search_path = nowhere", "-c", "SELECT pg_backend_pid()",
                 user="md5user")
    assert first.returncode == 0, first.stderr
    pid = int(first.stdout.split()[-1])
    wait_reset(pg_primary, pid)
    second = psql(t.port, "-c", "SELECT pg_backend_pid(), current_setting('search_path')",
                  user="md5user")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == f'{pid}|"$user", public'
