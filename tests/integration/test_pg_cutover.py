"""Cutover and rollback: the shadow becomes the primary, and back, while
pgbench runs through tandem, with no failed transaction and no lost write.

Which server answers is read from `SELECT inet_server_port()`.  The only
bound on time is max_pause, which tandem itself enforces (a cutover that
cannot drain in time is abandoned); the tests assert the outcome, never a
duration.
"""
import json
import signal
import time

import psycopg
import pytest

from harness.adminapi import call, run_operation
from harness.clients import check_pgbench
from harness.shadow import (answering_port, assert_same_data, create_database, execute,
                            pgbench_db_popen, pgbench_init_db, shadow_config, signal_server, wait_drained)
from harness.tandemproc import metric_value
from harness.util import free_port, wait_until



def start(factory, primary, shadow, mode="shadow", listener_extra="", mirror=None, workers=2):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow, mode=mode,
                         workers=workers, listener_extra=listener_extra,
                         mirror=mirror or {"reads": "0%", "timeout": "10s"})
    return factory(config_text=text, port=port, admin_port=admin)


@pytest.fixture
def bench_db(pg_primary, pg_shadow):
    db = "cutover_bench"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    return db


def table_on_both(primary, shadow, name, columns):
    """Table NAME (COLUMNS) on both servers, writable by every role."""
    for server in (primary, shadow):
        execute(server, f"CREATE TABLE IF NOT EXISTS {name} ({columns})")
        execute(server, f"GRANT ALL ON {name} TO PUBLIC")


def test_cutover_then_rollback_under_pgbench(tandem, pg_primary, pg_shadow, bench_db):
    t = start(tandem, pg_primary, pg_shadow)
    proc = pgbench_db_popen(t.port, bench_db, clients=8, seconds=14)
    try:
        time.sleep(3)
        before = metric_value(t.metrics(), "tandem_requests_total", listener="pg",
                              backend="green", kind="write") or 0
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        assert op["type"] == "cutover" and op["pause_ms"] <= op["max_pause_ms"]
        print(f"cutover: writes waited {op['pause_ms']} ms")
        assert answering_port(t, bench_db) == pg_shadow.port  # new sessions: green answers
        status = json.loads(t.http("/api/status")[1])
        listener = status["listeners"][0]
        assert listener["roles"] == {"primary": "green", "shadow": "blue"}
        assert status["operation"]["id"] == op["id"]
        time.sleep(3)
        after = metric_value(t.metrics(), "tandem_requests_total", listener="pg",
                             backend="green", kind="write") or 0
        assert after > before + 50  # pgbench's sessions now write to green first
        op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        assert op["type"] == "rollback"
        print(f"rollback: writes waited {op['pause_ms']} ms")
        assert answering_port(t, bench_db) == pg_primary.port
    finally:
        processed = check_pgbench(proc)  # exit 0, no failed transaction
    assert processed > 100
    wait_drained(t)
    assert_same_data(pg_primary, pg_shadow, bench_db)
    text = t.metrics()
    for outcome in ("shadow_error", "shadow_timeout", "dropped"):
        assert (metric_value(text, "tandem_shadow_operations_total", listener="pg",
                             outcome=outcome) or 0) == 0, outcome


def test_prepared_sessions_survive_cutover(tandem, pg_primary, pg_shadow, bench_db):
    """pgbench -M prepared: statements prepared before the cutover work on the new primary."""
    t = start(tandem, pg_primary, pg_shadow)
    proc = pgbench_db_popen(t.port, bench_db, clients=4, seconds=8, mode="prepared")
    try:
        time.sleep(2)
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
    finally:
        check_pgbench(proc)
    wait_drained(t)
    assert_same_data(pg_primary, pg_shadow, bench_db)
    op = run_operation(t, "/api/rollback")
    assert op["state"] == "completed", op


def test_cutover_that_cannot_drain_is_abandoned(tandem, pg_primary, pg_victim):
    db = "cutover_stall"
    for server in (pg_primary, pg_victim):
        create_database(server, db)
        pgbench_init_db(server, db)
    t = start(tandem, pg_primary, pg_victim)
    proc = pgbench_db_popen(t.port, db, clients=4, seconds=8)
    try:
        time.sleep(2)
        signal_server(pg_victim, signal.SIGSTOP)
        try:
            # a write the stopped shadow cannot acknowledge: the drain cannot finish
            with t.connect(user="postgres", dbname=db) as conn:
                conn.execute("UPDATE pgbench_branches SET bbalance = bbalance WHERE bid = 1")
            status, reply = call(t, "POST", "/api/cutover", {"max_pause_ms": 1500})
            assert status == 202, reply
            # one operation at a time
            status2, reply2 = call(t, "POST", "/api/rollback")
            assert status2 == 409 and "in progress" in reply2["error"], reply2
            op_id = reply["operation"]["id"]
            wait_until(lambda: call(t, "GET", f"/api/operations/{op_id}")[1]["operation"]
                       ["state"] == "failed", 30, "the cutover to be abandoned")
        finally:
            signal_server(pg_victim, signal.SIGCONT)
        op = call(t, "GET", f"/api/operations/{op_id}")[1]["operation"]
        assert "abandoned" in op["reason"] and "1500 ms" in op["reason"], op
        assert answering_port(t, db) == pg_primary.port  # roles unchanged
    finally:
        check_pgbench(proc)
    wait_drained(t)
    assert_same_data(pg_primary, pg_victim, db)


def test_refused_when_the_shadow_diverged_unless_forced(tandem, pg_primary, pg_shadow):
    t = start(tandem, pg_primary, pg_shadow)
    table_on_both(pg_primary, pg_shadow, "cut_div", "v int")
    try:
        with t.connect() as conn:  # a session with a shadow; mirroring turned off under it
            status, reply = call(t, "PUT", "/api/mode", {"mode": "passthrough"})
            assert status == 200 and reply == {"mode": "passthrough"}
            conn.execute("INSERT INTO cut_div VALUES (1)")  # lost to the shadow
        call(t, "PUT", "/api/mode", {"mode": "shadow"})
        wait_until(lambda: metric_value(t.metrics(), "tandem_shadow_diverged", listener="pg") == 1,
                   10, "the shadow marked diverged")
        status, reply = call(t, "POST", "/api/cutover")
        assert status == 409 and "diverged" in reply["error"], reply
        op = run_operation(t, "/api/cutover", {"force": True})
        assert op["state"] == "completed", op
        assert answering_port(t) == pg_shadow.port
        op = run_operation(t, "/api/rollback", {"force": True})
        assert op["state"] == "completed", op
    finally:
        execute(pg_primary, "DROP TABLE cut_div")
        execute(pg_shadow, "DROP TABLE cut_div")


def test_bad_requests(tandem, pg_primary, pg_shadow):
    t = start(tandem, pg_primary, pg_shadow)
    assert call(t, "GET", "/api/operations/op-99")[0] == 404
    assert call(t, "GET", "/api/operations/nonsense")[0] == 404
    status, reply = call(t, "PUT", "/api/mode", {"mode": "sideways"})
    assert status == 400 and "passthrough" in reply["error"]
    status, reply = call(t, "POST", "/api/cutover", {"max_pause_ms": "soon"})
    assert status == 400 and "max_pause_ms" in reply["error"]
    assert call(t, "GET", "/api/cutover")[0] == 405


def test_mode_switch_at_run_time(tandem, pg_primary, pg_shadow):
    t = start(tandem, pg_primary, pg_shadow, mode="shadow",
              listener_extra="reads { blue weight=0; green weight=100; }")
    assert answering_port(t) == pg_primary.port
    assert call(t, "PUT", "/api/mode", {"mode": "split"})[0] == 200
    assert answering_port(t) == pg_shadow.port
    status = json.loads(t.http("/api/status")[1])
    assert status["listeners"][0]["mode"] == "split"
    # rollback: reads back to the primary at once
    op = run_operation(t, "/api/rollback")
    assert op["state"] == "completed", op
    assert answering_port(t) == pg_primary.port
    assert metric_value(t.metrics(), "tandem_route_weight", listener="pg", backend="green") == 0


def test_passthrough_listener_switched_to_shadow_mirrors_new_sessions(tandem, pg_primary,
                                                                      pg_shadow):
    """A passthrough session has no shadow state at all (allocated on a
    shadow's first start); after PUT /api/mode shadow a new session gets
    one and mirrors its writes, while the old session goes on unmirrored."""
    t = start(tandem, pg_primary, pg_shadow, mode="passthrough")
    table_on_both(pg_primary, pg_shadow, "lazy_shadow", "v int")
    try:
        with t.connect() as old:
            old.execute("INSERT INTO lazy_shadow VALUES (1)")
            assert call(t, "PUT", "/api/mode", {"mode": "shadow"})[0] == 200
            with t.connect() as new:
                new.execute("INSERT INTO lazy_shadow VALUES (2)")
            old.execute("INSERT INTO lazy_shadow VALUES (3)")
        with psycopg.connect(pg_shadow.socket_dsn(dbname="postgres"), autocommit=True) as sh:
            wait_until(lambda: sh.execute("SELECT count(*) FROM lazy_shadow").fetchone()[0] >= 1,
                       10, "the new session's write on the shadow")
            assert [r[0] for r in sh.execute("SELECT v FROM lazy_shadow ORDER BY v")] == [2]
    finally:
        execute(pg_primary, "DROP TABLE lazy_shadow")
        execute(pg_shadow, "DROP TABLE lazy_shadow")


def test_forced_cutover_with_sessions_mid_query_and_no_shadow(tandem, tmp_path, pg_primary,
                                                              pg_shadow):
    """Sessions whose shadow login failed (no shadow connection) are mid-query
    when a forced cutover flips the roles: each gets its answer, then a clear
    FATAL at its idle point; tandem itself goes on (it used to free the
    session twice: a crash taking every client with it)."""
    from harness.pgserver import PASSWORDS
    bad = tmp_path / "bad.pw"
    bad.write_text("not-the-password\n")
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         mirror={"reads": "0%", "timeout": "10s"},
                         shadow_backend_extra=f"user tandemprobe;\npassword_file {bad};")
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert PASSWORDS["tandemprobe"] != "not-the-password"
    results, errors = [], []

    def query(conn):
        try:
            results.append(conn.execute("SELECT pg_sleep(2), 1").fetchone()[1])
            # closed at an idle point once the roles flipped (a re-attach attempt
            # to the shadow may delay it by a login's time)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                conn.execute("SELECT 1")
                time.sleep(0.2)
        except psycopg.OperationalError as exc:
            errors.append(str(exc))

    import threading
    conns = [t.connect() for _ in range(4)]
    try:
        wait_until(lambda: "login failed" in t.log(), 20, "the shadow logins to fail")
        threads = [threading.Thread(target=query, args=(c,)) for c in conns]
        for th in threads:
            th.start()
        time.sleep(0.5)  # the queries are running on the primary
        op = run_operation(t, "/api/cutover", {"force": True})
        assert op["state"] == "completed", op
        for th in threads:
            th.join(30)
    finally:
        for c in conns:
            c.close()
    assert results == [1, 1, 1, 1], (results, errors)
    # each was told why (the FATAL may be cut off by the client's own next
    # query racing the close: then libpq says the server closed the connection)
    assert len(errors) == 4, errors
    closing = [ln for ln in t.log().splitlines() if "closing: the primary changed (cutover)" in ln]
    assert len(closing) == 4, closing
    # tandem is alive and new sessions reach the new primary
    assert answering_port(t) == pg_shadow.port
    op = run_operation(t, "/api/rollback", {"force": True})
    assert op["state"] == "completed", op


@pytest.mark.parametrize("case", ["shadow_error", "mismatch"])
def test_refused_after_a_write_the_shadow_did_not_apply(tandem, pg_primary, pg_shadow, case):
    """A write the shadow failed (or answered otherwise: another row count)
    while the primary acknowledged it leaves the shadow without that write:
    the cutover is refused (409) naming the reason and the statement."""
    from harness.shadow import listener_report, report
    t = start(tandem, pg_primary, pg_shadow)
    table = f"cut_lost_{case}"
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {table}")
    execute(pg_primary, f"CREATE TABLE {table} (v int)")
    # the shadow enforces what the primary does not (a schema drift)
    execute(pg_shadow, f"CREATE TABLE {table} (v int CHECK (v < 0))")
    for server in (pg_primary, pg_shadow):
        execute(server, f"GRANT ALL ON {table} TO PUBLIC")
    if case == "mismatch":
        execute(pg_primary, f"INSERT INTO {table} VALUES (5)")  # a row the shadow lacks
        statement = f"UPDATE {table} SET v = v + 1"
    else:
        statement = f"INSERT INTO {table} VALUES (7)"
    try:
        assert call(t, "GET", "/api/status")[0] == 200
        with t.connect() as conn:
            conn.execute(statement)  # acknowledged by the primary
        wait_until(lambda: metric_value(t.metrics(), "tandem_shadow_diverged", listener="pg") == 1,
                   20, "the shadow marked diverged")
        status, reply = call(t, "POST", "/api/cutover")
        assert status == 409, reply
        assert "diverged" in reply["error"] and case in reply["error"], reply
        assert statement in reply["error"], reply
        why = listener_report(report(t))["diverged_reason"]
        assert why["reason"] == case and why["statement"] == statement, why
        assert answering_port(t) == pg_primary.port  # nothing swapped
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, f"DROP TABLE IF EXISTS {table}")


def test_a_write_failing_on_both_sides_does_not_diverge(tandem, pg_primary, pg_shadow):
    t = start(tandem, pg_primary, pg_shadow)
    table_on_both(pg_primary, pg_shadow, "cut_both", "v int PRIMARY KEY")
    try:
        with t.connect() as conn:
            conn.execute("INSERT INTO cut_both VALUES (1)")
            with pytest.raises(psycopg.errors.UniqueViolation):
                conn.execute("INSERT INTO cut_both VALUES (1)")
            conn.execute("INSERT INTO cut_both VALUES (2)")
        wait_drained(t)
        assert metric_value(t.metrics(), "tandem_shadow_diverged", listener="pg") == 0
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, "DROP TABLE cut_both")
