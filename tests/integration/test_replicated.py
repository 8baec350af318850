"""Shadows fed by replication (shadow_source replication): PostgreSQL logical
replication, a physical standby, a Redis replica.

tandem mirrors no write to such a shadow; it reads both servers' positions
with its own connections, compares a sampled read only once the shadow has
applied what the primary had when it answered, and cuts over once the shadow
caught up, running the configured steps.  The servers here replicate for
real: a publication on blue and a subscription on green (wal_level logical),
a standby made with pg_basebackup, REPLICAOF.
"""
import json
import random
import subprocess
import threading
import time

import psycopg
import pytest
import redis

from harness.adminapi import call, run_operation
from harness.clients import _env, check_pgbench
from harness.ops import ctl
from harness.pgserver import PgServer
from harness.redisserver import RedisServer
from harness.shadow import (assert_same_data, create_database, execute, outcomes, report,
                            pgbench_db_popen, pgbench_init_db, rows, table_digest)
from harness.tandemproc import metric_value
from harness.util import free_port, pg_tool, wait_until


LOGICAL = """wal_level = logical
max_worker_processes = 24
max_logical_replication_workers = 12
max_replication_slots = 16
max_wal_senders = 16
wal_retrieve_retry_interval = 200ms
# an idle publisher tells its subscribers where its WAL ends only in keepalives,
# sent every wal_sender_timeout / 2 (30 s by default): longer than a test's wait
# for a quiet primary's read to be released (compare_wait)
wal_sender_timeout = 10s
wal_receiver_status_interval = 1s"""


@pytest.fixture(scope="module")
def blue(certs):
    server = PgServer("blue", certs, extra_conf=LOGICAL).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def green(certs):
    server = PgServer("green", certs, extra_conf=LOGICAL).start()
    yield server
    server.stop()


def drop_subscriptions(*servers):
    """Every subscription on SERVERS goes, and every slot left: tests start clean."""
    for server in servers:
        for name, db in rows(server, "SELECT s.subname, d.datname FROM pg_subscription s "
                                     "JOIN pg_database d ON d.oid = s.subdbid"):
            execute(server, f"ALTER SUBSCRIPTION {name} DISABLE", dbname=db)
            execute(server, f"ALTER SUBSCRIPTION {name} SET (slot_name = NONE)", dbname=db)
            execute(server, f"DROP SUBSCRIPTION {name}", dbname=db)
    for server in servers:
        wait_until(lambda: rows(server, "SELECT count(*) FROM pg_replication_slots "
                                        "WHERE active")[0][0] == 0, 30, "slots to be released")
        execute(server, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots")


def subscribe(source, target, db, name, copy_data=True):
    """target subscribes to every table of db on source (publication NAME there)."""
    execute(source, f"CREATE PUBLICATION {name} FOR ALL TABLES", dbname=db)
    execute(target, f"CREATE SUBSCRIPTION {name} CONNECTION 'host=127.0.0.1 port={source.port} "
                    f"user=postgres dbname={db}' PUBLICATION {name} "
                    f"WITH (copy_data = {'true' if copy_data else 'false'})", dbname=db)


def logical_pair(blue, green, db):
    """db with pgbench's tables on blue, replicated to green by a subscription sub_<db>."""
    drop_subscriptions(blue, green)
    for server in (blue, green):
        create_database(server, db)
    pgbench_init_db(blue, db)
    schema = subprocess.run([pg_tool("pg_dump"), "-s", "-h", blue.sockdir, "-p", str(blue.port),
                             "-U", "postgres", db], capture_output=True, text=True, check=True,
                            env=_env("postgres", None)).stdout
    subprocess.run([pg_tool("psql"), "-q", "-v", "ON_ERROR_STOP=1", "-h", green.sockdir, "-p",
                    str(green.port), "-U", "postgres", "-d", db], input=schema, text=True,
                   check=True, capture_output=True, env=_env("postgres", None))
    subscribe(blue, green, db, f"sub_{db}")
    wait_until(lambda: rows(green, "SELECT count(*) FROM pg_subscription_rel "
                                   "WHERE srsubstate <> 'r'", dbname=db)[0][0] == 0,
               60, "the subscription's initial copy")
    wait_until(lambda: table_digest(blue, db, "pgbench_accounts")
               == table_digest(green, db, "pgbench_accounts"), 60, "green to hold blue's rows")


def pause_subscription(server, db):
    """Disable sub_<db> and wait until its apply worker has stopped (DISABLE is asynchronous)."""
    execute(server, f"ALTER SUBSCRIPTION sub_{db} DISABLE", dbname=db)
    wait_until(lambda: rows(server, "SELECT count(*) FROM pg_stat_subscription "
                                    f"WHERE subname = 'sub_{db}' AND pid IS NOT NULL",
                            dbname=db)[0][0] == 0, 30, "the apply worker to stop")


def replicated_config(port, admin, primary, shadow, replication, listener_extra="",
                      protocol="postgres", reads="100%", mode="shadow", user="postgres"):
    body = "\n".join(f"        {line};" for line in replication)
    return f"""
workers 2;
log_level info;
admin {{ listen 127.0.0.1:{admin}; }}
backend blue {{ address {primary.address}; {f'user {user};' if user else ''} }}
backend green {{ address {shadow.address}; {f'user {user};' if user else ''} }}
listener pg {{
    listen 127.0.0.1:{port};
    protocol {protocol};
    primary blue;
    shadow green;
    mode {mode};
    shadow_source replication;
    mirror {{ reads {reads}; timeout 20s; }}
    replication {{
{body}
    }}
    {listener_extra}
}}
"""


def start(tandem, primary, shadow, replication, **kw):
    port, admin = free_port(), free_port()
    return tandem(config_text=replicated_config(port, admin, primary, shadow, replication, **kw),
                  port=port, admin_port=admin)


def status_replication(t):
    return json.loads(t.http("/api/status")[1])["listeners"][0]["replication"]


def wait_measured(t):
    wait_until(lambda: (status_replication(t) or {}).get("error") is None, 30,
               "the replication watch to measure both sides")


def settled(t, want):
    """Wait until outcomes satisfy want(delta-free counts) and no unit is open."""
    wait_until(lambda: want(outcomes(t)) and
               metric_value(t.metrics(), "tandem_shadow_units_open", listener="pg") == 0,
               60, "the compared reads to be recorded")
    return outcomes(t)


def test_logical_lag_and_status(tandem, tandem_bin, blue, green):
    db = "repl_status"
    logical_pair(blue, green, db)
    t = start(tandem, blue, green, ["kind logical", f"dbname {db}", "poll 50ms"])
    wait_measured(t)
    st = status_replication(t)
    assert st["kind"] == "logical" and st["primary"] == "blue" and st["shadow"] == "green", st
    assert "/" in st["primary_position"] and "/" in st["shadow_position"], st
    text = t.metrics()
    assert metric_value(text, "tandem_replication_measured", listener="pg") == 1
    assert metric_value(text, "tandem_replication_lag_bytes", listener="pg") is not None
    out = ctl(tandem_bin, t, "status")
    assert out.returncode == 0, out.stderr
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("pg ") and "logical" in ln]
    assert line and "blue@" in line[0] and "green@" in line[0], out.stdout
    # a write through tandem reaches green by replication alone: nothing mirrored it
    with t.connect(user="postgres", dbname=db) as conn:
        conn.execute("UPDATE pgbench_branches SET bbalance = 4242 WHERE bid = 1")
    wait_until(lambda: rows(green, "SELECT bbalance FROM pgbench_branches WHERE bid = 1",
                            dbname=db)[0][0] == 4242, 30, "the write to replicate")
    writes_to_green = metric_value(t.metrics(), "tandem_requests_total", listener="pg",
                                   backend="green", kind="write") or 0
    assert writes_to_green == 0

    # a paused subscription: the lag grows and shows; resumed, it comes back to 0
    pause_subscription(green, db)
    try:
        with t.connect(user="postgres", dbname=db) as conn:
            for i in range(20):
                conn.execute("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid = %s",
                             (i + 1,))
        # the worker stopped: not measured (no routed read goes there), and the age of
        # what green is known to have applied grows
        wait_until(lambda: (metric_value(t.metrics(), "tandem_shadow_lag_seconds", listener="pg")
                            or 0) > 0.5, 30, "the lag to show")
        assert metric_value(t.metrics(), "tandem_replication_measured", listener="pg") == 0
        assert "no running subscription" in status_replication(t)["error"]
    finally:
        execute(green, f"ALTER SUBSCRIPTION sub_{db} ENABLE", dbname=db)
    wait_until(lambda: metric_value(t.metrics(), "tandem_replication_lag_bytes",
                                    listener="pg") == 0 and
               metric_value(t.metrics(), "tandem_shadow_lag_seconds", listener="pg") < 0.5,
               60, "the lag to close")


def read_after_write(t, db, n, stop=None):
    """n times: a write through tandem, then a read of the same row (compared)."""
    with t.connect(user="postgres", dbname=db) as conn:
        for i in range(n):
            aid = random.randint(1, 100000)
            conn.execute("UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid = %s",
                         (aid,))
            conn.execute("SELECT aid, abalance FROM pgbench_accounts WHERE aid = %s", (aid,))
            if stop is not None and stop.is_set():
                break


def test_reads_wait_for_the_shadow_to_catch_up(tandem, blue, green):
    """Each read follows a write of the same row.  With the subscription paused,
    green answers with the old value if asked too soon: the gate must hold the
    comparison until green applied the write, and report no mismatch."""
    db = "repl_gate"
    logical_pair(blue, green, db)
    t = start(tandem, blue, green, ["kind logical", f"dbname {db}", "poll 50ms",
                                    "compare_wait 30s"])
    wait_measured(t)
    before = outcomes(t)
    pause_subscription(green, db)
    try:
        read_after_write(t, db, 30)
        time.sleep(1.5)  # green is behind for a while: the reads wait, none is compared
        during = outcomes(t)
        assert during == before, (before, during)
    finally:
        execute(green, f"ALTER SUBSCRIPTION sub_{db} ENABLE", dbname=db)
    got = settled(t, lambda o: o["match"] + o["mismatch"] + o["skipped_lag"]
                  >= before["match"] + 30)
    assert got["mismatch"] == before["mismatch"], got
    assert got["skipped_lag"] == before["skipped_lag"], got
    assert got["match"] - before["match"] >= 30, got
    writes_to_green = metric_value(t.metrics(), "tandem_requests_total", listener="pg",
                                   backend="green", kind="write") or 0
    assert writes_to_green == 0


def test_a_real_difference_is_still_a_mismatch(tandem, blue, green):
    """A row changed on green behind tandem's back (a subscriber is writable), read
    while blue is quiet: that difference is the shadow's, and it is claimed."""
    db = "repl_diff"
    logical_pair(blue, green, db)
    t = start(tandem, blue, green, ["kind logical", f"dbname {db}", "poll 50ms",
                                    "compare_wait 20s"], listener_extra="compare { confirm_per_second 0; }")
    wait_measured(t)
    execute(green, "UPDATE pgbench_branches SET bbalance = -1 WHERE bid = 1", dbname=db)
    before = outcomes(t)
    with t.connect(user="postgres", dbname=db) as conn:
        conn.execute("SELECT bid, bbalance FROM pgbench_branches WHERE bid = 1")
    got = settled(t, lambda o: o["mismatch"] > before["mismatch"])
    assert got["noise"] == before["noise"], got


def test_reads_past_the_wait_are_skipped_not_mismatched(tandem, blue, green):
    db = "repl_skip"
    logical_pair(blue, green, db)
    t = start(tandem, blue, green, ["kind logical", f"dbname {db}", "poll 50ms",
                                    "compare_wait 300ms"])
    wait_measured(t)
    before = outcomes(t)
    pause_subscription(green, db)
    try:
        read_after_write(t, db, 10)
        got = settled(t, lambda o: o["skipped_lag"] >= before["skipped_lag"] + 10)
    finally:
        execute(green, f"ALTER SUBSCRIPTION sub_{db} ENABLE", dbname=db)
    assert got["mismatch"] == before["mismatch"], got


def test_cutover_and_rollback_on_logical_replication(tandem, blue, green):
    """pgbench through tandem; cutover waits for green to catch up, flips, and
    the steps turn the replication around; rollback turns it back.  Every
    transaction pgbench saw committed is on blue at the end, and green equal."""
    db = "repl_cut"
    logical_pair(blue, green, db)
    green_dsn = f"host=127.0.0.1 port={green.port} user=postgres dbname={db}"
    blue_dsn = f"host=127.0.0.1 port={blue.port} user=postgres dbname={db}"
    steps = [
        "kind logical", f"dbname {db}", "poll 50ms",
        # forward: green stops following blue, blue follows green from now on
        f'cutover after_flip green "DROP SUBSCRIPTION sub_{db}"',
        f'cutover after_flip green "CREATE PUBLICATION back_{db} FOR ALL TABLES"',
        f'cutover after_flip blue "CREATE SUBSCRIPTION back_{db} CONNECTION \'{green_dsn}\' '
        f'PUBLICATION back_{db} WITH (copy_data = false)"',
        # back: the other way round
        f'rollback after_flip blue "DROP SUBSCRIPTION back_{db}"',
        f'rollback after_flip green "CREATE SUBSCRIPTION sub_{db} CONNECTION \'{blue_dsn}\' '
        f'PUBLICATION sub_{db} WITH (copy_data = false)"',
    ]
    t = start(tandem, blue, green, steps, reads="0%")
    wait_measured(t)
    proc = pgbench_db_popen(t.port, db, clients=4, seconds=8)
    try:
        time.sleep(2)
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 15000})
        assert op["state"] == "completed", op
        assert [s["ok"] for s in op["steps"]] == [True, True, True], op
        assert {s["phase"] for s in op["steps"]} == {"after_flip"}
        with t.connect(user="postgres", dbname=db) as conn:
            assert conn.execute("SELECT inet_server_port()").fetchone()[0] == green.port
        wait_measured(t)  # measured the other way now: green -> blue
        assert status_replication(t)["primary"] == "green"
        time.sleep(2)
        op = run_operation(t, "/api/rollback", {"max_pause_ms": 15000})
        assert op["state"] == "completed", op
        assert [s["ok"] for s in op["steps"]] == [True, True], op
        with t.connect(user="postgres", dbname=db) as conn:
            assert conn.execute("SELECT inet_server_port()").fetchone()[0] == blue.port
    finally:
        processed = check_pgbench(proc)
    # every acknowledged transaction wrote one history row; the last primary is blue
    assert rows(blue, "SELECT count(*) FROM pgbench_history", dbname=db)[0][0] == processed
    wait_until(lambda: rows(green, "SELECT count(*) FROM pgbench_history",
                            dbname=db)[0][0] == processed, 60, "green to catch up again")
    assert_same_data(blue, green, db)


def test_cutover_waits_and_gives_up_when_the_shadow_cannot_catch_up(tandem, blue, green):
    db = "repl_stuck"
    logical_pair(blue, green, db)
    t = start(tandem, blue, green, ["kind logical", f"dbname {db}", "poll 50ms"])
    wait_measured(t)
    # green's apply worker runs but cannot apply: a lock holds it (measured, lagging)
    with psycopg.connect(green.socket_dsn(dbname=db)) as lock:
        lock.execute("LOCK TABLE pgbench_branches IN ACCESS EXCLUSIVE MODE")
        with t.connect(user="postgres", dbname=db) as conn:
            conn.execute("UPDATE pgbench_branches SET bbalance = bbalance + 1")
        wait_until(lambda: (metric_value(t.metrics(), "tandem_replication_lag_bytes",
                                         listener="pg") or 0) > 0, 30, "the lag to show")
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 1500})
        assert op["state"] == "failed", op
        assert "did not catch up" in op["reason"] and "bytes" in op["reason"], op
        with t.connect(user="postgres", dbname=db) as conn:  # writes resumed on blue
            conn.execute("UPDATE pgbench_branches SET bbalance = bbalance + 1")
            assert conn.execute("SELECT inet_server_port()").fetchone()[0] == blue.port
        lock.rollback()
    # a subscription that is not running cannot be waited for: refused up front
    pause_subscription(green, db)
    try:
        # tandem refuses once its watch has seen it (the next poll): not before
        wait_until(lambda: status_replication(t)["error"] is not None, 30,
                   "the watch to see the subscription stopped")
        status, reply = call(t, "POST", "/api/cutover", {"max_pause_ms": 1500})
        assert status == 409 and "not measured" in reply["error"], reply
    finally:
        execute(green, f"ALTER SUBSCRIPTION sub_{db} ENABLE", dbname=db)


def test_a_failing_step_before_the_flip_abandons_the_cutover(tandem, blue, green):
    db = "repl_badstep"
    logical_pair(blue, green, db)
    t = start(tandem, blue, green, ["kind logical", f"dbname {db}", "poll 50ms",
                                    'cutover before_flip green "SELECT no_such_function()"'])
    wait_measured(t)
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 5000})
    assert op["state"] == "failed", op
    assert "no_such_function" in op["reason"] and "nothing was swapped" in op["reason"], op
    assert op["steps"][0]["ok"] is False and op["steps"][0]["backend"] == "green", op
    with t.connect(user="postgres", dbname=db) as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == blue.port


def test_config_errors(tandem_bin, tmp_path):
    bad = replicated_config(1, 2, type("S", (), {"address": "127.0.0.1:5"})(),
                            type("S", (), {"address": "127.0.0.1:6"})(),
                            ["kind replica", 'cutover after_flip nobody "SELECT 1"'])
    path = tmp_path / "bad.conf"
    path.write_text(bad)
    r = subprocess.run([tandem_bin, "-t", "-c", str(path)], capture_output=True, text=True)
    assert r.returncode != 0
    assert "replication kind replica is for redis listeners" in r.stderr, r.stderr
    assert "step backend \"nobody\" is not this listener's primary or shadow" in r.stderr, r.stderr


# -- a physical standby ---------------------------------------------------------------

def test_physical_standby_cutover_by_promotion(tandem, certs):
    primary = PgServer("phys-blue", certs).start()
    standby = None
    try:
        db = "phys"
        create_database(primary, db)
        pgbench_init_db(primary, db)
        standby = PgServer("phys-green", certs, standby_of=primary).start()
        t = start(tandem, primary, standby,
                  ["kind physical", "poll 50ms", 'cutover before_flip green "SELECT pg_promote()"'],
                  reads="20%")
        wait_measured(t)
        assert status_replication(t)["kind"] == "physical"
        proc = pgbench_db_popen(t.port, db, clients=4, seconds=8)
        try:
            time.sleep(3)
            op = run_operation(t, "/api/cutover", {"max_pause_ms": 15000})
            assert op["state"] == "completed", op
            assert op["steps"][0]["ok"] is True, op
        finally:
            processed = check_pgbench(proc)
        assert rows(standby, "SELECT pg_is_in_recovery()")[0][0] is False
        # blue took the writes before the flip, green (promoted) after: green has them all
        assert rows(standby, "SELECT count(*) FROM pgbench_history", dbname=db)[0][0] == processed
        got = outcomes(t)
        assert got["mismatch"] == 0, got
    finally:
        if standby is not None:
            standby.stop()
        primary.stop()


# -- a Redis replica --------------------------------------------------------------------

def test_redis_replica_compare_cutover_and_rollback(tandem):
    blue_r = RedisServer("repl-blue").start()
    green_r = RedisServer("repl-green").start()
    try:
        green_r.client().execute_command("REPLICAOF", "127.0.0.1", str(blue_r.port))
        wait_until(lambda: green_r.client().info("replication").get("master_link_status")
                   == "up", 30, "the replica to sync")
        t = start(tandem, blue_r, green_r,
                  ["poll 50ms", "compare_wait 20s",
                   'cutover before_flip green "REPLICAOF NO ONE"',
                   f'cutover after_flip blue "REPLICAOF 127.0.0.1 {green_r.port}"',
                   'rollback before_flip blue "REPLICAOF NO ONE"',
                   f'rollback after_flip green "REPLICAOF 127.0.0.1 {blue_r.port}"'],
                  protocol="redis", user=None)
        wait_measured(t)
        assert status_replication(t)["kind"] == "replica"
        acked = []

        def under_incr_loop(path):
            """PATH (cutover, rollback) while a client INCRs and GETs through tandem."""
            stop = threading.Event()

            def writer():
                c = redis.Redis(host="127.0.0.1", port=t.port)
                while not stop.is_set():
                    acked.append(c.incr("counter"))
                    c.get("counter")  # compared once the replica applied the INCR

            th = threading.Thread(target=writer)
            th.start()
            try:
                time.sleep(1)
                op = run_operation(t, path, {"max_pause_ms": 10000})
                assert op["state"] == "completed", op
                assert [s["ok"] for s in op["steps"]] == [True, True], op
                time.sleep(1)
            finally:
                stop.set()
                th.join(30)

        under_incr_loop("/api/cutover")
        assert acked, "no INCR was acknowledged"
        # green answers now; it holds every acknowledged INCR
        assert int(green_r.client().get("counter")) == acked[-1] == len(acked)
        assert green_r.client().info("replication")["role"] == "master"
        wait_until(lambda: blue_r.client().get("counter") == green_r.client().get("counter"),
                   30, "blue to follow green")
        got = outcomes(t, listener="pg")
        # every GET follows an INCR of the same key: the replica, caught up, is often
        # already past the answer: noise "replication", never a mismatch
        mismatches = [x for x in report(t)["samples"] if x["outcome"] == "mismatch"]
        assert got["mismatch"] == 0 and got["match"] + got["noise"] > 0, (got, mismatches)
        noise = metric_value(t.metrics(), "tandem_shadow_noise_total", listener="pg",
                             reason="replication") or 0
        assert noise == got["noise"], (noise, got)
        # a real difference: green (now the primary) and blue disagree on a key only
        # blue was told about behind tandem's back; read while green is quiet
        blue_r.client().config_set("replica-read-only", "no")
        blue_r.client().set("only-on-blue", "x")
        c = redis.Redis(host="127.0.0.1", port=t.port)
        c.set("only-on-blue", "y")
        wait_until(lambda: blue_r.client().get("only-on-blue") == b"y", 30, "the SET to replicate")
        blue_r.client().set("only-on-blue", "z")
        time.sleep(0.3)
        assert c.get("only-on-blue") == b"y"
        wait_until(lambda: outcomes(t, listener="pg")["mismatch"] == 1, 30,
                   "the real difference to be claimed")
        writes_to_green = metric_value(t.metrics(), "tandem_requests_total", listener="pg",
                                       backend="green", kind="write") or 0
        assert writes_to_green > 0  # after the flip: green is the primary

        # and back: blue answers again, with every INCR acknowledged on either side
        blue_r.client().config_set("replica-read-only", "yes")
        under_incr_loop("/api/rollback")
        assert int(blue_r.client().get("counter")) == acked[-1] == len(acked)
        assert blue_r.client().info("replication")["role"] == "master"
        wait_until(lambda: green_r.client().get("counter") == blue_r.client().get("counter"),
                   30, "green to follow blue again")
    finally:
        green_r.stop()
        blue_r.stop()
