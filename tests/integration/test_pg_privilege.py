"""The shadow never runs anything with more rights than the client has on the
primary.

tandem logs in to the shadow with a user of its own (`backend green { user
...; }`), often a powerful one: it must replay everyone's writes.  So:

* a unit the primary refused for the client's rights (42501, class 28 ...)
  never reaches the shadow (a statement failing the same way takes its place,
  so a transaction the refusal aborted is aborted there too);
* the shadow session acts as the client's role (`-c role=<client>` at login:
  RESET ROLE and DISCARD ALL return to it; SET ROLE NONE is undone at once);
* a shadow user that may not act as the client's role: the session is not
  mirrored (counted under dropped{reason="identity"}), never mirrored with the
  wrong rights;
* at a cutover such a session is closed rather than handed tandem's login.

Roles: `app` (an application role, password login) and `tandem_shadow`
(NOINHERIT, a member of `app` only where a test grants it) on both servers.
"""
import os
import tempfile
import uuid

import psycopg
import pytest

from harness.adminapi import call, run_operation
from harness.shadow import (delta, execute, listener_report, outcomes, report, rows,
                            shadow_config, wait_drained)
from harness.tandemproc import metric_value
from harness.util import free_port, wait_until

APP_PW = "app-Secret-5x"
SHADOW_PW = "tandem-shadow-Secret-9q"


@pytest.fixture(scope="module")
def roles(pg_primary, pg_shadow):
    for server in (pg_primary, pg_shadow):
        execute(server, "DROP ROLE IF EXISTS app")
        execute(server, "DROP ROLE IF EXISTS tandem_shadow")
        execute(server, f"CREATE ROLE app LOGIN PASSWORD '{APP_PW}'")
        execute(server, f"CREATE ROLE tandem_shadow LOGIN NOINHERIT PASSWORD '{SHADOW_PW}'")
    yield
    for server in (pg_primary, pg_shadow):
        execute(server, "DROP OWNED BY app")
        execute(server, "DROP ROLE app")
        execute(server, "DROP OWNED BY tandem_shadow")
        execute(server, "DROP ROLE tandem_shadow")


@pytest.fixture
def tables(pg_primary, pg_shadow, roles):
    """secret (no rights for app) and t (app may insert; who = current_user)."""
    name = "pv_" + uuid.uuid4().hex[:8]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name}_secret (v text)")
        execute(server, f"INSERT INTO {name}_secret VALUES ('classified')")
        execute(server, f"CREATE TABLE {name}_t (v int, who text DEFAULT current_user)")
        execute(server, f"GRANT SELECT, INSERT ON {name}_t TO app")
    yield name
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {name}_secret")
        execute(server, f"DROP TABLE IF EXISTS {name}_t")


def start(factory, primary, shadow, tmp_path, shadow_user="postgres", mode="shadow",
          listener_extra=""):
    extra = f"user {shadow_user};"
    if shadow_user != "postgres":
        pw = tmp_path / "shadow.pw"
        pw.write_text(SHADOW_PW + "\n")
        extra += f"\npassword_file {pw};"
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow, mode=mode,
                         mirror={"reads": "100%", "timeout": "5s"}, listener_extra=listener_extra,
                         shadow_backend_extra=extra)
    return factory(config_text=text, port=port, admin_port=admin)


def app_connect(t, **kw):
    return t.connect(user="app", password=APP_PW, **kw)


def shadow_who(shadow, table):
    return rows(shadow, f"SELECT v, who FROM {table}_t ORDER BY v")


def wait_shadow_who(shadow, table, expected):
    """The shadow's rows of table t, once they are `expected` (the mirror lags a little)."""
    last = []

    def same():
        last[:] = [shadow_who(shadow, table)]
        return last[0] == expected
    try:
        wait_until(same, 20, f"the shadow's rows of {table}_t", interval=0.1)
    except TimeoutError:
        pass
    return last[0]


def test_refused_statements_never_run_on_the_shadow(tandem, tmp_path, pg_primary, pg_shadow,
                                                    tables):
    """DROP TABLE, ALTER ROLE ... SUPERUSER and COPY TO PROGRAM from an
    unprivileged role: refused on the primary, without effect on the shadow
    (where tandem is logged in as a superuser)."""
    t = start(tandem, pg_primary, pg_shadow, tmp_path)
    marker_dir = tempfile.mkdtemp(prefix="tandem-pv-")
    os.chmod(marker_dir, 0o777)
    marker = os.path.join(marker_dir, "ran")
    before = outcomes(t)
    refused = [
        f"DROP TABLE {tables}_secret",
        "ALTER ROLE app SUPERUSER",
        f"DO $$BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}'''; END$$",
        f"DELETE FROM {tables}_secret",
    ]
    with app_connect(t) as conn:
        for sql in refused:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql)
        # inside a transaction: the refusal aborts it on both sides
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            with conn.transaction():
                conn.execute(f"INSERT INTO {tables}_t (v) VALUES (1)")
                conn.execute(f"DROP TABLE {tables}_secret")
        conn.execute(f"INSERT INTO {tables}_t (v) VALUES (2)")
    wait_until(lambda: delta(outcomes(t), before)["primary_error"] >= len(refused) + 1, 20,
               "the refused units recorded as primary_error")
    wait_drained(t)
    got = delta(outcomes(t), before)
    try:
        assert rows(pg_shadow, f"SELECT v FROM {tables}_secret") == [("classified",)]
        assert rows(pg_shadow, "SELECT rolsuper FROM pg_roles WHERE rolname = 'app'") == \
            [(False,)]
        assert not os.path.exists(marker), "COPY TO PROGRAM ran on the shadow"
        # the aborted transaction's insert is on neither side; the later one on both
        assert wait_shadow_who(pg_shadow, tables, [(2, "app")]) == [(2, "app")]
        assert rows(pg_primary, f"SELECT v FROM {tables}_t") == [(2,)]
    finally:
        os.system(f"rm -rf {marker_dir}")
    assert got["primary_error"] >= len(refused) + 1, got
    assert got["shadow_error"] == 0 and got["mismatch"] == 0, got
    assert metric_value(t.metrics(), "tandem_shadow_diverged", listener="pg") == 0


def test_client_writes_run_as_the_client_on_the_shadow(tandem, tmp_path, pg_primary, pg_shadow,
                                                       tables):
    t = start(tandem, pg_primary, pg_shadow, tmp_path)
    before = outcomes(t)
    with app_connect(t) as conn:
        conn.execute(f"INSERT INTO {tables}_t (v) VALUES (1)")
        conn.execute(f"INSERT INTO {tables}_t (v) VALUES (%s)", (2,))
        assert conn.execute("SELECT current_user").fetchone() == ("app",)
    wait_until(lambda: delta(outcomes(t), before)["match"] >= 3, 20, "three matches")
    assert wait_shadow_who(pg_shadow, tables, [(1, "app"), (2, "app")]) == [(1, "app"), (2, "app")]
    got = delta(outcomes(t), before)
    assert got["match"] >= 3 and got["mismatch"] == 0 and got["shadow_error"] == 0, got


def test_set_role_games(tandem, tmp_path, pg_primary, pg_shadow, tables):
    """The client's SET ROLE NONE, RESET ROLE, set_config('role', ...),
    DISCARD ALL and a SET ROLE it may not do: the shadow always acts as the
    client, and nothing diverges."""
    t = start(tandem, pg_primary, pg_shadow, tmp_path)
    with app_connect(t) as conn:
        steps = ["SET ROLE NONE", "RESET ROLE", "SELECT set_config('role', 'none', false)",
                 "DISCARD ALL", "SET SESSION AUTHORIZATION DEFAULT"]
        for i, sql in enumerate(steps, start=1):
            conn.execute(sql)
            conn.execute(f"INSERT INTO {tables}_t (v) VALUES ({i})")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE postgres")
        conn.execute(f"INSERT INTO {tables}_t (v) VALUES (99)")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT * FROM {tables}_secret")
    wait_drained(t)
    expected = [(i, "app") for i in range(1, len(steps) + 1)] + [(99, "app")]
    assert wait_shadow_who(pg_shadow, tables, expected) == expected
    assert metric_value(t.metrics(), "tandem_shadow_diverged", listener="pg") == 0


def test_non_superuser_shadow_login_acts_as_the_client(tandem, tmp_path, pg_primary, pg_shadow,
                                                       tables):
    """A NOINHERIT shadow user granted the application's role: SET ROLE at login."""
    execute(pg_shadow, "GRANT app TO tandem_shadow")
    try:
        t = start(tandem, pg_primary, pg_shadow, tmp_path, shadow_user="tandem_shadow")
        with app_connect(t) as conn:
            conn.execute(f"INSERT INTO {tables}_t (v) VALUES (1)")
            conn.execute("SET ROLE NONE")
            conn.execute(f"INSERT INTO {tables}_t (v) VALUES (2)")
        assert wait_shadow_who(pg_shadow, tables, [(1, "app"), (2, "app")]) == \
            [(1, "app"), (2, "app")]
        assert metric_value(t.metrics(), "tandem_shadow_diverged", listener="pg") == 0
    finally:
        execute(pg_shadow, "REVOKE app FROM tandem_shadow")


def test_shadow_user_that_cannot_act_as_the_client(tandem, tmp_path, pg_primary, pg_shadow,
                                                   tables):
    """tandem_shadow is not a member of app: the session is not mirrored at
    all (counted, logged once) instead of being mirrored with other rights."""
    t = start(tandem, pg_primary, pg_shadow, tmp_path, shadow_user="tandem_shadow")
    with app_connect(t) as conn:
        for i in range(3):
            conn.execute(f"INSERT INTO {tables}_t (v) VALUES ({i})")
    wait_until(lambda: (metric_value(t.metrics(), "tandem_shadow_mirror_dropped_total",
                                     listener="pg", reason="identity") or 0) >= 3, 20,
               "the session's writes counted as dropped for identity")
    assert shadow_who(pg_shadow, tables) == []
    lines = [ln for ln in t.log().splitlines() if "cannot act as role" in ln]
    assert len(lines) == 1, lines
    rep = listener_report(report(t))
    assert rep["dropped"]["identity"] >= 3, rep
    assert rep["diverged"] is True  # its writes are lost to the shadow: no cutover onto it


def test_routed_reads_run_as_the_client(tandem, tmp_path, pg_primary, pg_shadow, tables):
    """Mode split: a read the shadow answers runs with the client's rights there."""
    t = start(tandem, pg_primary, pg_shadow, tmp_path, mode="split",
              listener_extra="reads { blue weight=0; green weight=100; }")
    with app_connect(t) as conn:
        port = None
        for _ in range(20):
            port = conn.execute("SELECT inet_server_port()").fetchone()[0]
            if port == pg_shadow.port:
                break
        assert port == pg_shadow.port, "reads never went to the shadow"
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(f"SELECT v FROM {tables}_secret")


def test_cutover_closes_sessions_acting_as_a_role(tandem, tmp_path, pg_primary, pg_shadow,
                                                  tables):
    """After a cutover the old shadow connection (tandem's login) would answer
    the client: a SET ROLE NONE would give it tandem's rights.  Such a session
    is closed at the swap; a new one logs in to the new primary as itself."""
    t = start(tandem, pg_primary, pg_shadow, tmp_path)
    conn = app_connect(t)
    try:
        conn.execute(f"INSERT INTO {tables}_t (v) VALUES (1)")
        wait_drained(t)
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op

        def closed():
            try:
                conn.execute("SELECT 1")
                return False
            except psycopg.OperationalError as exc:
                assert "cutover" in str(exc), exc
                return True
        wait_until(closed, 20, "the session acting as a role to be closed at the swap")
    finally:
        conn.close()
    with app_connect(t) as conn:
        assert conn.execute("SELECT inet_server_port(), current_user, session_user").fetchone() \
            == (pg_shadow.port, "app", "app")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("SET ROLE postgres")
    assert call(t, "GET", "/api/status")[0] == 200
    op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000, "force": True})
    assert op["state"] == "completed", op
