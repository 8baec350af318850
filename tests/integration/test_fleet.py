"""A fleet: several tandems sharing one control state through a real redis-server.

`control { store redis://...; fleet NAME; member ID; }`: mode and weights set
on one member reach the others, /api/fleet lists them, a cutover asked of any
member flips all of them or none (two-phase, decided in the store), a member
killed after a cutover comes back on the new primary, and losing the store
costs clients nothing.  Which server answers is read from the servers
themselves (`inet_server_port()`); no assertion is about time.
"""
import json
import signal
import subprocess
import threading
import time
import uuid

import psycopg
import pytest
import redis

from harness.browser import page_check
from harness.adminapi import call, run_operation
from harness.clients import check_pgbench
from harness.redisserver import RedisServer, redis_config, tandem_client
from harness.shadow import (answering_port, assert_same_data, create_database, execute,
                            pgbench_db_popen, pgbench_init_db, shadow_config, wait_drained)
from harness.tandemproc import metric_value
from harness.util import free_port, wait_until



@pytest.fixture
def store():
    """The fleet's store: a redis-server of the test's own (kill and restart it at will)."""
    server = RedisServer("store")
    try:
        server.start()
        yield server
    finally:
        server.stop()


def member_text(store, name, pg_primary, pg_shadow, fleet="f1", extra="", mode="shadow",
                listener_extra="", reads="0%", scheme="redis"):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         workers=1, mirror={"reads": reads, "timeout": "10s"}, mode=mode,
                         listener_extra=listener_extra)
    control = (f"control {{ store {scheme}://{store.address}/0; fleet {fleet}; member {name}; "
               f"{extra} }}\n")
    return control + text, port, admin


def start_member(factory, store, name, pg_primary, pg_shadow, **kw):
    text, port, admin = member_text(store, name, pg_primary, pg_shadow, **kw)
    t = factory(config_text=text, port=port, admin_port=admin)
    t.config_text = text
    wait_until(lambda: joined(t), 20, f"member {name} to join the fleet")
    return t


def joined(t):
    code, body = t.http("/readyz")
    return code == 200


def status(t):
    code, body = t.http("/api/status")
    assert code == 200, body
    return json.loads(body)


def fleet(t):
    code, body = t.http("/api/fleet")
    assert code == 200, body
    return json.loads(body)


def listener(t):
    return status(t)["listeners"][0]


@pytest.fixture
def three(tandem, store, pg_primary, pg_shadow):
    return [start_member(tandem, store, f"m{i}", pg_primary, pg_shadow) for i in (1, 2, 3)]


@pytest.fixture
def bench_db(pg_primary, pg_shadow):
    db = "fleet_bench"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    return db


def test_mode_and_weights_reach_every_member_and_fleet_lists_them(three, tandem_bin):
    a, b, c = three
    code, reply = call(a, "PUT", "/api/mode", {"mode": "split"})
    assert code == 200, reply
    wait_until(lambda: all(status(t)["mode"] == "split" for t in three), 20,
               "mode split on every member")
    code, reply = call(b, "PUT", "/api/weights", {"blue": 30, "green": 70})
    assert code == 200, reply
    wait_until(lambda: all(status(t)["weights"] == {"blue": 30, "green": 70} for t in three), 20,
               "weights on every member")
    # back to the configured mode and weights, asked of another member: every member
    # follows (they used to keep split and 30/70, the configured values being no change)
    code, reply = call(c, "PUT", "/api/mode", {"mode": "shadow"})
    assert code == 200, reply
    code, reply = call(c, "PUT", "/api/weights", {"blue": 1, "green": 0})
    assert code == 200, reply
    wait_until(lambda: all(status(t)["mode"] == "shadow" and
                           status(t)["weights"] == {"blue": 1, "green": 0} for t in three), 20,
               "the configured mode and weights on every member")

    wait_until(lambda: len(fleet(c)["members"]) == 3, 20, "three members listed")
    doc = fleet(c)
    assert doc["fleet"] == "f1" and doc["member"] == "m3" and doc["store"]["connected"]
    assert sorted(m["id"] for m in doc["members"]) == ["m1", "m2", "m3"]
    for m in doc["members"]:
        assert m["roles"] == [{"listener": "pg", "primary": "blue", "shadow": "green",
                               "epoch": 0, "writes_paused": False}]
        assert m["admin"].startswith("127.0.0.1:")
    assert status(a)["fleet"] == {"name": "f1", "member": "m1", "connected": True}
    wait_until(lambda: len(fleet(a)["members"]) == 3, 20, "a's view to list three members")

    done = subprocess.run([tandem_bin, "ctl", "--admin", f"127.0.0.1:{a.admin_port}", "fleet"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("fleet f1, member m1, store 127.0.0.1:")
    assert "connected" in lines[0]
    assert sorted(ln.split()[0] for ln in lines[2:5]) == ["m1", "m2", "m3"]
    assert all("pg: blue (shadow green)" in ln for ln in lines[2:5])


def test_cutover_asked_of_one_flips_all_under_pgbench(three, pg_primary, pg_shadow, bench_db,
                                                       tandem_bin):
    a, b, c = three
    procs = [pgbench_db_popen(t.port, bench_db, clients=2, seconds=12) for t in three]
    try:
        time.sleep(3)
        op = run_operation(b, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        assert op["fleet_operation"].startswith("fleet-op-")
        for t in three:
            wait_until(lambda t=t: listener(t)["roles"] == {"primary": "green",
                                                            "shadow": "blue"}, 20,
                       "every member cut over")
            assert listener(t)["epoch"] == 1
            assert answering_port(t, bench_db) == pg_shadow.port
        # /api/fleet's view of the store is refreshed at each heartbeat (1 s)
        record = wait_until(lambda: (fleet(a)["operation"] or {}).get("id") ==
                            op["fleet_operation"] and fleet(a)["operation"], 20,
                            "member a's view of the operation")
        assert record["asked_by"] == "m2", record
        wait_until(lambda: fleet(a)["operation"]["state"] == "completed", 20,
                   "every member to report swapped")
        steps = {m["id"]: m["step"] for m in fleet(a)["operation"]["members"]}
        assert steps == {"m1": "swapped", "m2": "swapped", "m3": "swapped"}
        time.sleep(2)
        # rollback through ctl, asked of another member
        done = subprocess.run([tandem_bin, "ctl", "--admin", f"127.0.0.1:{c.admin_port}",
                               "rollback", "--max-pause", "8s"],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        for t in three:
            wait_until(lambda t=t: listener(t)["roles"] == {"primary": "blue",
                                                            "shadow": "green"}, 20,
                       "every member rolled back")
            assert listener(t)["epoch"] == 2
    finally:
        processed = [check_pgbench(p) for p in procs]  # zero failed transactions
    assert all(n > 0 for n in processed)
    for t in three:
        wait_drained(t)
    assert_same_data(pg_primary, pg_shadow, bench_db)


def test_member_stopped_during_the_drain_aborts_everywhere(three, pg_primary, pg_shadow):
    a, b, c = three
    # c cannot drain while this transaction holds a write open
    held = c.connect(autocommit=False)
    held.execute("CREATE TEMP TABLE IF NOT EXISTS held (x int)")
    held.execute("INSERT INTO held VALUES (1)")
    try:
        status_code, reply = call(a, "POST", "/api/cutover", {"max_pause_ms": 1500})
        assert status_code == 202, reply
        local = reply["operation"]["id"]
        wait_until(lambda: listener(c)["writes_paused"], 20, "c to pause writes")
        c.signal(signal.SIGSTOP)
        wait_until(lambda: call(a, "GET", f"/api/operations/{local}")[1]["operation"]["state"]
                   == "failed", 30, "the operation to fail on a")
        op = call(a, "GET", f"/api/operations/{local}")[1]["operation"]
        assert "not drained: m3" in op["reason"], op
        # the view of /api/fleet is refreshed at each heartbeat
        wait_until(lambda: fleet(a)["operation"]["state"] == "aborted", 20,
                   "the fleet's record to say aborted")
        steps = {m["id"]: m["step"] for m in fleet(a)["operation"]["members"]}
        assert steps["m3"] == "pausing", steps  # never drained
        for t in (a, b):
            assert listener(t)["roles"] == {"primary": "blue", "shadow": "green"}
            assert listener(t)["epoch"] == 0
            assert not listener(t)["writes_paused"]
            assert answering_port(t) == pg_primary.port
            st = status(t)["operation"]
            assert st["state"] == "failed" and "aborted" in st["reason"], st
    finally:
        c.signal(signal.SIGCONT)
    held.commit()
    held.close()
    wait_until(lambda: not listener(c)["writes_paused"], 20, "c to resume writes")
    assert listener(c)["roles"] == {"primary": "blue", "shadow": "green"}
    assert listener(c)["epoch"] == 0
    assert status(c)["operation"]["state"] == "failed"
    for t in three:
        assert metric_value(t.metrics(), "tandem_fleet_operations_aborted_total") == 1
        assert metric_value(t.metrics(), "tandem_fleet_operations_committed_total") == 0
    assert answering_port(c) == pg_primary.port


def test_member_killed_after_cutover_comes_back_on_the_new_primary(tandem, store, pg_primary,
                                                                    pg_shadow):
    a = start_member(tandem, store, "m1", pg_primary, pg_shadow)
    b = start_member(tandem, store, "m2", pg_primary, pg_shadow)
    op = run_operation(a, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    wait_until(lambda: listener(b)["epoch"] == 1, 20, "b cut over")
    b.signal(signal.SIGKILL)
    b.wait_exit(30)
    again = tandem(config_text=b.config_text, port=b.port, admin_port=b.admin_port)
    wait_until(lambda: joined(again), 20, "the restarted member to join")
    assert listener(again)["roles"] == {"primary": "green", "shadow": "blue"}
    assert listener(again)["epoch"] == 1
    assert answering_port(again) == pg_shadow.port
    op = run_operation(again, "/api/rollback", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    wait_until(lambda: listener(a)["epoch"] == 2, 20, "a rolled back")
    assert answering_port(a) == pg_primary.port


def test_store_killed_during_steady_load(tandem, store, pg_primary, pg_shadow, bench_db):
    a = start_member(tandem, store, "m1", pg_primary, pg_shadow)
    b = start_member(tandem, store, "m2", pg_primary, pg_shadow)
    procs = [pgbench_db_popen(t.port, bench_db, clients=2, seconds=8) for t in (a, b)]
    try:
        time.sleep(2)
        store.kill()
        wait_until(lambda: not fleet(a)["store"]["connected"], 20, "a to notice")
        # no change without the store: it would be lost when the store comes back
        code, reply = call(a, "PUT", "/api/mode", {"mode": "split"})
        assert code == 503, reply
        code, reply = call(b, "POST", "/api/cutover", {})
        assert code == 503 and "no member starts a flip on its own" in reply["error"], reply
        time.sleep(2)
        store.start()  # an empty store on the same port
        for t in (a, b):
            wait_until(lambda t=t: fleet(t)["store"]["connected"], 30, "reconnected")
    finally:
        processed = [check_pgbench(p) for p in procs]  # no client error
    assert all(n > 0 for n in processed)
    # the members seeded the new store and still act as one
    code, reply = call(b, "PUT", "/api/mode", {"mode": "split"})
    assert code == 200, reply
    wait_until(lambda: status(a)["mode"] == "split", 20, "mode reached a")
    assert store.client().hget("fleet:f1:state", "doc") is not None
    text = a.metrics()
    assert metric_value(text, "tandem_fleet_store_up") == 1
    assert metric_value(text, "tandem_fleet_store_lost_total") >= 1
    assert metric_value(text, "tandem_fleet_changes_refused_total") == 1
    assert metric_value(text, "tandem_fleet_joins_total") >= 2
    assert metric_value(b.metrics(), "tandem_fleet_changes_refused_total") == 1


def test_no_client_is_served_before_the_fleet_state(tandem, pg_primary, pg_shadow):
    """Store down at start: not ready (no client accepted) until it answers."""
    store = RedisServer("late-store")
    try:
        text, port, admin = member_text(store, "m1", pg_primary, pg_shadow,
                                        extra="join_timeout 60s;")
        t = tandem(config_text=text, port=port, admin_port=admin)
        code, body = t.http("/readyz")
        assert code == 503 and "joining the fleet" in body, body
        store.start()
        wait_until(lambda: joined(t), 30, "the member to join once the store answers")
        assert answering_port(t) == pg_primary.port
        assert fleet(t)["store"]["connected"]
    finally:
        store.stop()


def test_guard_trip_in_one_member_moves_every_members_reads(tandem, store, pg_primary,
                                                            pg_shadow):
    table = "fleet_gd_" + uuid.uuid4().hex[:10]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {table} (id int primary key, v text)")
        execute(server, f"INSERT INTO {table} VALUES (1, 'one')")
        execute(server, f"GRANT ALL ON {table} TO PUBLIC")
    split = ("reads { blue weight=0; green weight=100; }\n"
             "guard errors { metric shadow_error_rate; above 20%; window 30s; min_samples 20; "
             "action reads-to-primary; cooldown 10m; }")
    try:
        a, b = [start_member(tandem, store, name, pg_primary, pg_shadow, mode="split",
                             listener_extra=split) for name in ("m1", "m2")]
        sql = f"SELECT v, inet_server_port() FROM {table} WHERE id = 1"
        with b.connect() as conn:
            assert conn.execute(sql).fetchone() == ("one", pg_shadow.port)
        execute(pg_shadow, f"DROP TABLE {table}")  # the shadow fails, seen by a only
        with a.connect() as conn:
            def back_on_primary():
                try:
                    return conn.execute(sql).fetchone() == ("one", pg_primary.port)
                except Exception:  # noqa: BLE001 - the shadow's errors, until the guard trips
                    return False
            wait_until(back_on_primary, 30, "a's guard to trip", interval=0.05)
        # b saw no error at all, and yet
        wait_until(lambda: listener(b)["weights"] == {"blue": 0, "green": 0}, 20,
                   "b's reads to move to the primary")
        with b.connect() as conn:
            for _ in range(10):
                assert conn.execute(sql).fetchone() == ("one", pg_primary.port)
        g = listener(b)["guards"][0]
        assert g["state"] == "tripped" and g["trips"] == 1, g
        # the cooldown holds on b too
        code, reply = call(b, "PUT", "/api/weights", {"blue": 0, "green": 100})
        assert code == 409 and "cooldown" in reply["error"], reply
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, f"DROP TABLE IF EXISTS {table}")


def test_reload_keeps_the_fleets_weights(tandem, store, pg_primary, pg_shadow):
    a = start_member(tandem, store, "m1", pg_primary, pg_shadow, mode="split")
    b = start_member(tandem, store, "m2", pg_primary, pg_shadow, mode="split")
    code, reply = call(a, "PUT", "/api/weights", {"blue": 40, "green": 60})
    assert code == 200, reply
    wait_until(lambda: listener(b)["weights"] == {"blue": 40, "green": 60}, 20, "b's weights")
    b.signal(signal.SIGHUP)
    wait_until(lambda: "reloading" in b.log(), 20, "b to reload")
    time.sleep(1.5)  # a reload that published the file's weights would have reached a by now
    assert listener(a)["weights"] == {"blue": 40, "green": 60}
    wait_until(lambda: listener(b)["weights"] == {"blue": 40, "green": 60}, 20,
               "b back on the fleet's weights")


def test_store_killed_during_an_operation_aborts_it_consistently(tandem, store, pg_primary,
                                                                  pg_shadow):
    a = start_member(tandem, store, "m1", pg_primary, pg_shadow)
    b = start_member(tandem, store, "m2", pg_primary, pg_shadow)
    wait_until(lambda: len(fleet(a)["members"]) == 2, 20, "both members live")
    held = b.connect(autocommit=False)  # b cannot drain while this write is open
    held.execute("CREATE TEMP TABLE IF NOT EXISTS held (x int)")
    held.execute("INSERT INTO held VALUES (1)")
    code, reply = call(a, "POST", "/api/cutover", {"max_pause_ms": 8000})
    assert code == 202, reply
    local_a = reply["operation"]["id"]
    wait_until(lambda: listener(b)["writes_paused"], 20, "b to pause writes")
    store.kill()
    # b had not reported drained: the fleet cannot commit without it, b resumes
    wait_until(lambda: not listener(b)["writes_paused"], 30, "b to resume writes")
    held.commit()
    held.close()
    assert status(b)["operation"]["state"] == "failed"
    store.start()  # empty: no record of the operation, no commit
    wait_until(lambda: call(a, "GET", f"/api/operations/{local_a}")[1]["operation"]["state"]
               == "failed", 40, "a to learn the operation did not commit")
    for t in (a, b):
        wait_until(lambda t=t: fleet(t)["store"]["connected"], 30, "reconnected")
        assert listener(t)["roles"] == {"primary": "blue", "shadow": "green"}
        assert listener(t)["epoch"] == 0
        assert not listener(t)["writes_paused"]
        assert answering_port(t) == pg_primary.port


@pytest.fixture
def redis_pair():
    servers = [RedisServer("fleet-blue").start(), RedisServer("fleet-green").start()]
    yield servers
    for server in servers:
        server.stop()


def test_redis_listener_fleet_cutover(tandem, store, redis_pair):
    blue, green = redis_pair
    members = []
    for name in ("m1", "m2"):
        port, admin = free_port(), free_port()
        text = (f"control {{ store redis://{store.address}; fleet rf; member {name}; }}\n" +
                redis_config(port=port, admin_port=admin, primary=blue, shadow=green, workers=1))
        t = tandem(config_text=text, port=port, admin_port=admin)
        wait_until(lambda t=t: joined(t), 20, f"{name} to join")
        members.append(t)
    a, b = members
    for i, t in enumerate(members):
        tandem_client(t).set(f"before{i}", "x")
    op = run_operation(b, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    for t in members:
        wait_until(lambda t=t: status(t)["listeners"][0]["roles"]
                   == {"primary": "green", "shadow": "blue"}, 20, "every member cut over")
    for i, t in enumerate(members):
        assert tandem_client(t).set(f"after{i}", "y")
    wait_until(lambda: blue.digest() == green.digest(), 20, "both servers equal")
    assert green.client().get("after0") == b"y" and green.client().get("after1") == b"y"


REDIS_USERS = {"app": "on >app-pw ~* &* +@all", "tandem": "on >tandem-pw ~* &* +@all"}
REDIS_FENCE = """
user tandem;
password tandem-pw;
fence "ACL SETUSER app -@write";
unfence "ACL SETUSER app +@write";
"""


def app_write(server, key):
    """SET key on SERVER itself as the application's user (a new connection): None, or the
    error text."""
    try:
        redis.Redis(host=server.host, port=server.port, username="app", password="app-pw",
                    socket_timeout=20).set(key, "direct")
        return None
    except redis.exceptions.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"  # NOPERM is NoPermissionError in redis-py


def redis_fence_members(tandem, store, blue, green, fleet, fence):
    """Two members of `fleet` on a Redis listener blue -> green whose primary has
    the fence statements `fence`; the shadow logs in as tandem's own user."""
    members = []
    for name in ("m1", "m2"):
        port, admin = free_port(), free_port()
        text = (f"control {{ store redis://{store.address}; fleet {fleet}; member {name}; }}\n"
                + redis_config(port=port, admin_port=admin, primary=blue, shadow=green,
                               workers=1, primary_extra=fence,
                               shadow_extra="user tandem;\npassword tandem-pw;"))
        t = tandem(config_text=text, port=port, admin_port=admin)
        wait_until(lambda t=t: joined(t), 20, f"{name} to join")
        members.append(t)
    return members


def test_redis_fence_refuses_the_application_on_the_old_primary(tandem, store):
    """blue fences the application's ACL user at the commit; tandem's mirror to blue logs in
    as tandem's own user there, so every acknowledged INCR reaches blue too; rollback
    unfences."""
    blue = RedisServer("fence-blue", users=REDIS_USERS).start()
    green = RedisServer("fence-green", users=REDIS_USERS).start()
    try:
        members = redis_fence_members(tandem, store, blue, green, "rfence", REDIS_FENCE)
        a, b = members
        assert app_write(blue, "before") is None
        stale = redis.Redis(host=blue.host, port=blue.port, username="app", password="app-pw",
                            socket_timeout=20)
        stale.set("stale-before", "x")  # a writer straight to blue, connected before the flip
        acked, stop = [], threading.Event()

        def writer():
            c = tandem_client(a, username="app", password="app-pw")
            while not stop.is_set():
                acked.append(c.incr("counter"))

        th = threading.Thread(target=writer)
        th.start()
        try:
            time.sleep(1)
            op = run_operation(b, "/api/cutover", {"max_pause_ms": 8000})
            assert op["state"] == "completed", op
            time.sleep(1)
        finally:
            stop.set()
            th.join(30)
        assert acked and acked == list(range(1, len(acked) + 1))
        for t in members:
            wait_until(lambda t=t: listener(t)["roles"] == {"primary": "green", "shadow": "blue"},
                       20, "every member cut over")
        assert int(green.client().get("counter")) == len(acked)
        # the old primary refuses the application, on a new connection and on an old one
        assert "NoPermissionError" in app_write(blue, "after")
        with pytest.raises(redis.exceptions.NoPermissionError):
            stale.set("stale-after", "x")
        # tandem's mirror (its own user on blue) still writes there: nothing acknowledged lost
        c = tandem_client(b, username="app", password="app-pw")
        assert c.incr("counter") == len(acked) + 1
        wait_until(lambda: blue.client().get("counter") == green.client().get("counter"), 30,
                   "blue to have every acknowledged INCR")
        assert blue.client().get("after") is None and blue.client().get("stale-after") is None
        assert sum(metric_value(t.metrics(), "tandem_fleet_fences_total") for t in members) == 1
        # rollback: blue unfenced, it answers the application again.  A session logged in as
        # app whose mirror to blue is tandem's login cannot carry it over as its primary
        # connection: it is asked to reconnect, after nothing of its own was lost
        kept = tandem_client(a, username="app", password="app-pw")
        assert kept.incr("counter") == len(acked) + 2
        op = run_operation(a, "/api/rollback", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        for t in members:
            wait_until(lambda t=t: listener(t)["roles"] == {"primary": "blue", "shadow": "green"},
                       20, "every member rolled back")
        assert app_write(blue, "after-rollback") is None
        stale.set("stale-after-rollback", "x")
        wait_until(lambda: "this connection's login cannot be carried over to backend "
                   "\"blue\": reconnect" in a.log(), 20, "kept to be asked to reconnect")
        # (redis-py's pool reconnects it, as app, on a new connection)
        assert kept.incr("counter") == len(acked) + 3
        c = tandem_client(b, username="app", password="app-pw")
        assert c.incr("counter") == len(acked) + 4
        wait_until(lambda: green.client().get("counter") == str(len(acked) + 4).encode(), 20,
                   "green to have every acknowledged INCR")
    finally:
        blue.stop()
        green.stop()


def test_a_redis_fence_that_fails_aborts_and_is_undone(tandem, store, tandem_bin, tmp_path):
    blue = RedisServer("fence-blue", users=REDIS_USERS).start()
    green = RedisServer("fence-green", users=REDIS_USERS).start()
    broken = REDIS_FENCE.replace('unfence', 'fence "NO_SUCH_COMMAND x";\nunfence')
    try:
        members = redis_fence_members(tandem, store, blue, green, "rbroken", broken)
        a, b = members
        code, reply = call(a, "POST", "/api/cutover", {"max_pause_ms": 8000})
        assert code == 202, reply
        local = reply["operation"]["id"]
        wait_until(lambda: call(a, "GET", f"/api/operations/{local}")[1]["operation"]["state"]
                   == "failed", 30, "the operation to fail")
        op = call(a, "GET", f"/api/operations/{local}")[1]["operation"]
        assert "could not fence the old primary" in op["reason"], op
        assert "command 2" in op["reason"] and "unknown command" in op["reason"], op
        for t in members:
            wait_until(lambda t=t: not listener(t)["writes_paused"], 20, "writes resumed")
            assert listener(t)["roles"] == {"primary": "blue", "shadow": "green"}
        # the first command had fenced blue: undone
        wait_until(lambda: sum(metric_value(t.metrics(), "tandem_fleet_fences_undone_total")
                               for t in members) == 1, 20, "the fence to be undone")
        assert app_write(blue, "after") is None
        assert tandem_client(a, username="app", password="app-pw").set("through", "y")
        # tandem -t: a command that redis-cli could not split
        conf = tmp_path / "bad.conf"
        conf.write_text(f"control {{ store redis://{store.address}; fleet x; }}\n" + redis_config(
            port=free_port(), admin_port=free_port(), primary=blue, shadow=green,
            primary_extra='user tandem;\nfence "ACL SETUSER \\"app";'))
        done = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 1
        assert "fence 1 is not a Redis command (unbalanced quotes or empty)" in done.stderr
    finally:
        blue.stop()
        green.stop()


def test_store_password_is_used_and_never_logged(tandem, tandem_bin, pg_primary, pg_shadow,
                                                 tmp_path):
    secret = "s3cret-" + uuid.uuid4().hex
    store = RedisServer("auth-store", password=secret)
    try:
        store.start()
        good = tmp_path / "store.pw"
        good.write_text(secret + "\n")
        bad = tmp_path / "wrong.pw"
        bad.write_text("not-" + secret + "\n")
        text, port, admin = member_text(store, "m1", pg_primary, pg_shadow,
                                        extra=f"password_file {good};")
        t = tandem(config_text=text, port=port, admin_port=admin)
        wait_until(lambda: joined(t), 20, "the member to join with the password")
        assert fleet(t)["store"]["connected"]
        # a wrong password: refused by the store, the member waits for it, nothing leaks
        text2, port2, admin2 = member_text(store, "m2", pg_primary, pg_shadow,
                                           extra=f"password_file {bad}; join_timeout 60s;")
        t2 = tandem(config_text=text2, port=port2, admin_port=admin2)
        wait_until(lambda: "WRONGPASS" in t2.log() or "NOAUTH" in t2.log(), 20,
                   "the refusal to be logged")
        assert t2.http("/readyz")[0] == 503
        for proc in (t, t2):
            assert secret not in proc.log()
        # tandem -t: a password file that cannot be read
        conf = tmp_path / "m3.conf"
        conf.write_text(member_text(store, "m3", pg_primary, pg_shadow,
                                    extra=f"password_file {tmp_path}/missing.pw;")[0])
        done = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True,
                              text=True, timeout=30)
        assert done.returncode == 1
        assert f"password_file \"{tmp_path}/missing.pw\": No such file or directory" in done.stderr
    finally:
        store.stop()


FENCE = """
user postgres;
fence "ALTER ROLE trustuser SET default_transaction_read_only = on";
fence "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'stale-app'";
unfence "ALTER ROLE trustuser RESET default_transaction_read_only";
"""


def rows_of(server, sql):
    with server.connect() as conn:
        return conn.execute(sql).fetchall()


def direct_insert(server, tag, application_name="direct"):
    """An INSERT on SERVER itself as trustuser (a new session): None, or the error text."""
    try:
        with psycopg.connect(server.dsn(user="trustuser", application_name=application_name),
                             autocommit=True) as conn:
            conn.execute("INSERT INTO fence_t VALUES (%s)", (tag,))
        return None
    except psycopg.Error as exc:
        return str(exc)


def fenced_members(tandem, store, pg_primary, pg_shadow, fence):
    for server in (pg_primary, pg_shadow):
        execute(server, "DROP TABLE IF EXISTS fence_t")
        execute(server, "CREATE TABLE fence_t (tag text)")
        execute(server, "GRANT ALL ON fence_t TO PUBLIC")
    members = []
    for name in ("m1", "m2"):
        port, admin = free_port(), free_port()
        text = shadow_config(port=port, admin_port=admin, primary=pg_primary,
                             shadow=pg_shadow, workers=1, backend_extra=fence,
                             mirror={"reads": "0%", "timeout": "10s"})
        text = (f"control {{ store redis://{store.address}; fleet fenced; member {name}; }}\n"
                + text)
        t = tandem(config_text=text, port=port, admin_port=admin)
        wait_until(lambda t=t: joined(t), 20, f"{name} to join")
        members.append(t)
    return members


def test_store_over_tls(tandem, tandem_bin, certs, pg_primary, pg_shadow, tmp_path):
    """control { store rediss://...; }: a TLS-only store (no plain port) that wants a
    password and a client certificate.  The members share a mode change and a cutover
    through it; a member with the wrong CA is refused with the certificate's reason and
    never joins; tandem -t checks the store's TLS settings and files."""
    secret = "s3cret-" + uuid.uuid4().hex
    store = RedisServer("tls-store", password=secret, tls=certs, tls_auth_clients=True)
    try:
        store.start()
        pw = tmp_path / "store.pw"
        pw.write_text(secret + "\n")
        tls = (f"tls_ca_file {certs.ca}; tls_cert {certs.client_cert}; "
               f"tls_key {certs.client_key}; password_file {pw};")
        a, b = [start_member(tandem, store, name, pg_primary, pg_shadow, scheme="rediss",
                             extra=tls) for name in ("m1", "m2")]
        code, reply = call(a, "PUT", "/api/mode", {"mode": "split"})
        assert code == 200, reply
        wait_until(lambda: all(status(t)["mode"] == "split" for t in (a, b)), 20,
                   "mode split on both members")
        code, reply = call(a, "PUT", "/api/mode", {"mode": "shadow"})
        assert code == 200, reply
        wait_until(lambda: all(status(t)["mode"] == "shadow" for t in (a, b)), 20,
                   "mode shadow again on both members")
        op = run_operation(b, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        for t in (a, b):
            wait_until(lambda t=t: listener(t)["roles"] == {"primary": "green",
                                                            "shadow": "blue"}, 20,
                       "both members cut over")
        assert fleet(a)["store"]["connected"]
        # /api/fleet's view of the store is refreshed at each heartbeat (1 s)
        wait_until(lambda: len(fleet(a)["members"]) == 2, 20, "both members listed")

        # the wrong CA: the store's certificate does not verify, the member waits for it
        text, port, admin = member_text(store, "m3", pg_primary, pg_shadow, scheme="rediss",
                                        extra=tls.replace(certs.ca, certs.wrong_ca) +
                                        " join_timeout 60s;")
        bad = tandem(config_text=text, port=port, admin_port=admin)
        wait_until(lambda: "TLS: certificate verify failed" in bad.log(), 20,
                   "the refusal to be logged")
        assert bad.http("/readyz")[0] == 503
        for proc in (a, b, bad):
            assert secret not in proc.log()

        # tandem -t
        def check(extra, scheme="rediss"):
            conf = tmp_path / "check.conf"
            conf.write_text(member_text(store, "m4", pg_primary, pg_shadow, scheme=scheme,
                                        extra=extra)[0])
            return subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True,
                                  text=True, timeout=30)
        assert check(tls).returncode == 0
        done = check(f"tls_ca_file {tmp_path}/missing.pem;")
        assert done.returncode == 1 and "cannot load CA file" in done.stderr, done.stderr
        done = check(f"tls_ca_file {certs.ca};", scheme="redis")
        assert done.returncode == 1, done.stderr
        assert "tls_ca_file is the store's TLS: it needs a rediss:// store" in done.stderr
        done = check("tls disable;")
        assert done.returncode == 1 and "a rediss:// store is reached over TLS" in done.stderr
        done = check(f"tls_cert {certs.client_cert};")
        assert done.returncode == 1 and "tls_cert without tls_key" in done.stderr
    finally:
        store.stop()


def test_fence_the_old_primary_at_commit(tandem, store, pg_primary, pg_shadow):
    try:
        members = fenced_members(tandem, store, pg_primary, pg_shadow, FENCE)
        a, b = members
        assert direct_insert(pg_primary, "before") is None
        stale = psycopg.connect(pg_primary.dsn(user="trustuser", application_name="stale-app"),
                                autocommit=True)  # a stale writer, straight to blue
        op = run_operation(a, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        for t in members:
            wait_until(lambda t=t: listener(t)["epoch"] == 1, 20, "every member cut over")
        # blue refuses the application's writes now; its stale session is gone
        assert "read-only transaction" in direct_insert(pg_primary, "stale")
        with pytest.raises(psycopg.OperationalError):
            stale.execute("INSERT INTO fence_t VALUES ('stale-session')")
        stale.close()
        # tandem's own mirror connections (user postgres) still write to blue
        with b.connect(user="trustuser") as conn:
            assert conn.execute("INSERT INTO fence_t VALUES ('through') "
                                "RETURNING inet_server_port()").fetchone()[0] == pg_shadow.port
        wait_drained(b)
        for server in (pg_primary, pg_shadow):
            tags = {r[0] for r in server.connect().execute("SELECT tag FROM fence_t")}
            assert "through" in tags and "stale" not in tags and "stale-session" not in tags
        text = "".join(t.metrics() for t in members)
        assert sum(metric_value(t.metrics(), "tandem_fleet_fences_total") for t in members) == 1
        # rollback: green fenced, blue answers the application again
        op = run_operation(b, "/api/rollback", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        assert direct_insert(pg_primary, "after") is None
        assert "read-only transaction" in direct_insert(pg_shadow, "after")
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, "ALTER ROLE trustuser RESET default_transaction_read_only")
            execute(server, "DROP TABLE IF EXISTS fence_t")


def test_a_fence_that_fails_aborts_and_is_undone(tandem, store, pg_primary, pg_shadow):
    broken = FENCE.replace('fence "SELECT pg_terminate_backend',
                           'fence "SELECT no_such_function()";\nfence "SELECT pg_terminate_backend')
    try:
        a, b = fenced_members(tandem, store, pg_primary, pg_shadow, broken)
        status_code, reply = call(a, "POST", "/api/cutover", {"max_pause_ms": 8000})
        assert status_code == 202, reply
        local = reply["operation"]["id"]
        wait_until(lambda: call(a, "GET", f"/api/operations/{local}")[1]["operation"]["state"]
                   == "failed", 30, "the operation to fail")
        op = call(a, "GET", f"/api/operations/{local}")[1]["operation"]
        assert "could not fence the old primary" in op["reason"], op
        assert "no_such_function" in op["reason"], op
        for t in (a, b):
            wait_until(lambda t=t: not listener(t)["writes_paused"], 20, "writes resumed")
            assert listener(t)["roles"] == {"primary": "blue", "shadow": "green"}
            assert listener(t)["epoch"] == 0
        # the first statement had fenced blue: undone
        wait_until(lambda: sum(metric_value(t.metrics(), "tandem_fleet_fences_undone_total")
                               for t in (a, b)) == 1, 20, "the fence to be undone")
        assert direct_insert(pg_primary, "after") is None
        assert sum(metric_value(t.metrics(), "tandem_fleet_fences_failed_total")
                   for t in (a, b)) == 1
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, "ALTER ROLE trustuser RESET default_transaction_read_only")
            execute(server, "DROP TABLE IF EXISTS fence_t")


def test_member_frozen_through_a_cutover_holds_its_writes_until_it_caught_up(
        tandem, store, pg_primary, pg_shadow):
    """b is frozen long enough to drop out of the fleet, the fleet cuts over without it; when b
    runs again, the first write of a session it already had goes to the new primary."""
    for server in (pg_primary, pg_shadow):
        execute(server, "DROP TABLE IF EXISTS frozen_t")
        execute(server, "CREATE TABLE frozen_t (p int)")
        execute(server, "GRANT ALL ON frozen_t TO PUBLIC")
    a = start_member(tandem, store, "m1", pg_primary, pg_shadow)
    b = start_member(tandem, store, "m2", pg_primary, pg_shadow)
    wait_until(lambda: len(fleet(a)["members"]) == 2, 20, "both members live")
    session = b.connect()
    assert session.execute("SELECT inet_server_port()").fetchone()[0] == pg_primary.port
    session.execute("SET application_name = 'frozen-test'")  # mirrored: its shadow is attached
    wait_drained(b)
    b.signal(signal.SIGSTOP)
    try:
        wait_until(lambda: [m["id"] for m in fleet(a)["members"]] == ["m1"], 30,
                   "b to drop out of the fleet")
        op = run_operation(a, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
    finally:
        b.signal(signal.SIGCONT)
    # the very first write after SIGCONT: never on the old primary.  The session may also be
    # closed ("reconnect") when its shadow connection did not survive the freeze (a login
    # timer that ran out while the process was stopped): nothing was written then.
    insert = "INSERT INTO frozen_t VALUES (inet_server_port()) RETURNING p"
    try:
        port = session.execute(insert).fetchone()[0]
    except psycopg.OperationalError as exc:
        assert "the primary changed (cutover)" in str(exc), exc
        session = b.connect()
        port = session.execute(insert).fetchone()[0]
    assert port == pg_shadow.port
    session.close()
    wait_drained(b)
    # green has the row as the primary; blue at most its mirror (a freeze can detach the
    # session's shadow: its login timer ran out while the process was stopped; that loss is
    # counted and the shadow marked diverged)
    assert rows_of(pg_shadow, "SELECT count(*) FROM frozen_t") == [(1,)]
    assert rows_of(pg_primary, "SELECT count(*) FROM frozen_t")[0][0] in (0, 1)
    assert listener(b)["epoch"] == 1
    assert "did not run for" in b.log() and "caught up with the fleet's log" in b.log()


def test_fleet_report_merges_every_members(tandem, tandem_bin, store, pg_primary, pg_shadow):
    table = "fleet_rp_" + uuid.uuid4().hex[:8]
    execute(pg_primary, f"CREATE TABLE {table} (id int primary key, v text)")
    execute(pg_shadow, f"CREATE TABLE {table} (id int primary key, v text)")
    execute(pg_primary, f"INSERT INTO {table} VALUES (1, 'one')")
    execute(pg_shadow, f"INSERT INTO {table} VALUES (1, 'uno')")  # the shadow differs
    try:
        for server in (pg_primary, pg_shadow):
            execute(server, f"GRANT ALL ON {table} TO PUBLIC")
        a, b = [start_member(tandem, store, name, pg_primary, pg_shadow, reads="100%")
                for name in ("m1", "m2")]
        sql = f"SELECT v FROM {table} WHERE id = 1"
        for t in (a, b):
            with t.connect() as conn:
                for _ in range(3):
                    conn.execute(sql).fetchall()

        def merged():
            code, rep = call(a, "GET", "/api/shadow/report?scope=fleet")
            assert code == 200, rep
            for st in rep["statements"]:
                if table in st["statement"]:
                    return rep, st
            return rep, None
        wait_until(lambda: (merged()[1] or {}).get("members") == ["m1", "m2"]
                   and merged()[1]["count"].get("mismatch") == 6, 30,
                   "both members' mismatches in the fleet's report")
        rep, st = merged()
        assert rep["scope"] == "fleet" and sorted(rep["members"]) == ["m1", "m2"]
        assert {s["member"] for s in rep["samples"] if table in s["statement"]} == {"m1", "m2"}
        outcomes = rep["listeners"][0]["outcomes"]
        assert outcomes.get("mismatch", 0) >= 6
        # each member alone still has its own
        code, own = call(b, "GET", "/api/shadow/report")
        assert code == 200 and "scope" not in own
        done = subprocess.run([tandem_bin, "ctl", "--admin", f"127.0.0.1:{b.admin_port}",
                               "report", "--fleet"], capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert table in done.stdout
        assert call(a, "GET", "/api/shadow/report?scope=nope")[0] == 400
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, f"DROP TABLE IF EXISTS {table}")


def test_report_page_switches_to_the_fleet_and_names_each_member(tandem, store, pg_primary,
                                                                 pg_shadow):
    """The report page of a member: its fleet switch shows the merged report, each mismatch
    sample naming the member that saw it (headless Chromium, as test_report_page.py)."""
    table = "fleet_pg_" + uuid.uuid4().hex[:8]
    execute(pg_primary, f"CREATE TABLE {table} (id int primary key, v text)")
    execute(pg_shadow, f"CREATE TABLE {table} (id int primary key, v text)")
    execute(pg_primary, f"INSERT INTO {table} VALUES (1, 'one')")
    execute(pg_shadow, f"INSERT INTO {table} VALUES (1, 'uno')")  # the shadow differs
    try:
        for server in (pg_primary, pg_shadow):
            execute(server, f"GRANT ALL ON {table} TO PUBLIC")
        a, b = [start_member(tandem, store, name, pg_primary, pg_shadow, reads="100%")
                for name in ("m1", "m2")]
        sql = f"SELECT v FROM {table} WHERE id = 1"
        for _ in range(2):
            for t in (a, b):
                with t.connect() as conn:
                    conn.execute(sql).fetchall()

        def fleet_statement():
            rep = call(a, "GET", "/api/shadow/report?scope=fleet")[1]
            return next((st for st in rep["statements"] if table in st["statement"]), None)
        wait_until(lambda: (fleet_statement() or {}).get("members") == ["m1", "m2"], 30,
                   "both members' mismatches in the fleet's report")
        fingerprint = fleet_statement()["fingerprint"]
        page_check(a.admin_port, {"scope": "fleet", "fingerprint": fingerprint,
                                  "sides": {"primary": "one", "shadow": "uno"},
                                  "members": ["m1", "m2"],
                                  "texts": ["this member", "fleet f1 · 2 members", table]},
                   "report-page-fleet")
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, f"DROP TABLE IF EXISTS {table}")


def replica_member(tandem, store, name, blue, green, before_flip="REPLICAOF NO ONE"):
    """A member whose Redis listener's shadow green is blue's replica (shadow_source
    replication), with the cutover's and the rollback's REPLICAOF steps."""
    port, admin = free_port(), free_port()
    text = f"""
control {{ store redis://{store.address}; fleet repl; member {name}; }}
workers 1;
admin {{ listen 127.0.0.1:{admin}; }}
backend blue {{ address {blue.address}; }}
backend green {{ address {green.address}; }}
listener r {{
    listen 127.0.0.1:{port};
    protocol redis;
    primary blue;
    shadow green;
    mode shadow;
    shadow_source replication;
    mirror {{ reads 0%; timeout 20s; }}
    replication {{
        poll 50ms;
        cutover before_flip green "{before_flip}";
        cutover after_flip blue "REPLICAOF 127.0.0.1 {green.port}";
        rollback before_flip blue "REPLICAOF NO ONE";
        rollback after_flip green "REPLICAOF 127.0.0.1 {blue.port}";
    }}
}}
"""
    t = tandem(config_text=text, port=port, admin_port=admin)
    wait_until(lambda: joined(t), 20, f"{name} to join")
    wait_until(lambda: (listener(t)["replication"] or {}).get("error") is None, 30,
               f"{name}'s replication watch to measure both sides")
    return t


def test_replicated_shadow_fleet_runs_its_steps_once(tandem, store):
    """A fleet over a Redis replica: the REPLICAOF steps run once, by the member that
    coordinates the commit, every member's writes paused meanwhile; every acknowledged
    INCR is on the new primary, and the old one follows it."""
    blue = RedisServer("repl-fleet-blue").start()
    green = RedisServer("repl-fleet-green").start()
    try:
        green.client().execute_command("REPLICAOF", "127.0.0.1", str(blue.port))
        wait_until(lambda: green.client().info("replication").get("master_link_status")
                   == "up", 30, "the replica to sync")
        members = [replica_member(tandem, store, name, blue, green) for name in ("m1", "m2")]
        a, b = members
        acked = []

        def under_incr_loop(asked, path):
            stop = threading.Event()

            def writer(t):
                c = tandem_client(t)
                while not stop.is_set():
                    acked.append(c.incr("counter"))

            threads = [threading.Thread(target=writer, args=(t,)) for t in members]
            for th in threads:
                th.start()
            try:
                time.sleep(1)
                op = run_operation(asked, path, {"max_pause_ms": 10000})
                assert op["state"] == "completed", op
                time.sleep(1)
            finally:
                stop.set()
                for th in threads:
                    th.join(30)
            # the steps ran once for the fleet: on one member, both phases, all ok
            ran = [s for t in members for s in (status(t)["operation"].get("steps") or [])]
            assert [(s["phase"], s["ok"]) for s in ran] == [("before_flip", True),
                                                            ("after_flip", True)], ran

        under_incr_loop(b, "/api/cutover")
        for t in members:
            wait_until(lambda t=t: listener(t)["roles"] == {"primary": "green", "shadow": "blue"},
                       20, "every member cut over")
        assert green.client().info("replication")["role"] == "master"
        assert int(green.client().get("counter")) == len(acked) == max(acked)
        wait_until(lambda: blue.client().get("counter") == green.client().get("counter"), 30,
                   "blue to follow green")
        assert blue.client().info("replication")["role"] == "slave"

        under_incr_loop(a, "/api/rollback")
        for t in members:
            wait_until(lambda t=t: listener(t)["roles"] == {"primary": "blue", "shadow": "green"},
                       20, "every member rolled back")
        assert blue.client().info("replication")["role"] == "master"
        assert int(blue.client().get("counter")) == len(acked) == max(acked)
        wait_until(lambda: green.client().get("counter") == blue.client().get("counter"), 30,
                   "green to follow blue again")
    finally:
        blue.stop()
        green.stop()


def test_replicated_shadow_fleet_step_that_fails_aborts_everywhere(tandem, store):
    blue = RedisServer("repl-fleet-blue").start()
    green = RedisServer("repl-fleet-green").start()
    try:
        green.client().execute_command("REPLICAOF", "127.0.0.1", str(blue.port))
        wait_until(lambda: green.client().info("replication").get("master_link_status")
                   == "up", 30, "the replica to sync")
        members = [replica_member(tandem, store, name, blue, green, before_flip="NO_SUCH_CMD")
                   for name in ("m1", "m2")]
        a, b = members
        code, reply = call(a, "POST", "/api/cutover", {"max_pause_ms": 10000})
        assert code == 202, reply
        local = reply["operation"]["id"]
        wait_until(lambda: call(a, "GET", f"/api/operations/{local}")[1]["operation"]["state"]
                   == "failed", 30, "the operation to fail")
        op = call(a, "GET", f"/api/operations/{local}")[1]["operation"]
        assert "before_flip step" in op["reason"] and "NO_SUCH_CMD" in op["reason"], op
        for t in members:
            wait_until(lambda t=t: not listener(t)["writes_paused"], 20, "writes resumed")
            assert listener(t)["roles"] == {"primary": "blue", "shadow": "green"}
            assert listener(t)["epoch"] == 0
            assert tandem_client(t).incr("after") >= 1  # blue takes writes again
        assert green.client().info("replication")["role"] == "slave"
    finally:
        blue.stop()
        green.stop()
