"""Redis shared server connections (server_connections shared): stateless
clients share a small pool of primary connections per worker; a client that
needs connection state gets one of its own.

Real redis-server, real clients (redis-py, raw sockets, redis-benchmark).
How many connections tandem holds is read from the server's CLIENT LIST.
No test asserts a duration.
"""
import signal
import socket
import subprocess
import threading

import pytest
import redis

from harness.adminapi import run_operation
from harness.redisserver import RedisServer, start_redis_tandem, tandem_client
from harness.shadow import wait_drained
from harness.tandemproc import metric_value
from harness.util import wait_until

CLIENTS = 50


def serve(name):
    s = RedisServer(name).start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture
def server():
    yield from serve("mux")


def tandem_conns(server):
    """Connections to SERVER other than the one asking (tandem's, in these tests)."""
    me = server.client()
    me.client_setname("checker")
    return sum(1 for c in me.client_list() if c.get("name") != "checker")


def start(tandem, server, conns="shared", pool=1, **cfg):
    extra = f"server_connections {conns};\nserver_pool {pool};\n" + cfg.pop("listener_extra", "")
    return start_redis_tandem(tandem, server, workers=1, listener_extra=extra, **cfg)


def start_threads(n, fn, errors):
    """n threads running fn(i); what one raises joins errors."""
    def wrap(i):
        try:
            fn(i)
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            errors.append(f"{i}: {exc!r}")

    threads = [threading.Thread(target=wrap, args=(i,)) for i in range(n)]
    for th in threads:
        th.start()
    return threads


def run_threads(n, fn):
    errors = []
    for th in start_threads(n, fn, errors):
        th.join()
    return errors


def counting_client(t, i, rounds=200, barrier=None):
    """INCR a key of its own and read it back, one by one and pipelined: every
    reply must be this client's (a reply of another client's key is a number
    out of sequence)."""
    c = tandem_client(t)
    c.delete(f"mux:{i}")
    if barrier is not None:
        barrier.wait()
    n = 0
    for r in range(rounds):
        n += 1
        assert c.incr(f"mux:{i}") == n
        assert c.get(f"mux:{i}") == str(n).encode()
        if r % 20 == 0:
            p = c.pipeline(transaction=False)
            for _ in range(25):
                p.incr(f"mux:{i}")
                p.echo(f"c{i}")
            got = p.execute()
            assert got[0::2] == list(range(n + 1, n + 26)), got[:6]
            assert got[1::2] == [f"c{i}".encode()] * 25
            n += 25
    return c


def test_many_clients_share_one_connection_and_get_their_own_replies(tandem, server):
    t = start(tandem, server)
    barrier = threading.Barrier(CLIENTS)
    held = []

    def client(i):
        held.append(counting_client(t, i, barrier=barrier))

    assert run_threads(CLIENTS, client) == []
    # all 50 still connected to tandem: the primary sees the pool (one, one worker)
    assert all(c.ping() for c in held)
    assert tandem_conns(server) == 1
    for c in held:
        c.close()


def test_dedicated_setting_gives_each_client_its_own(tandem, server):
    """The same load with server_connections dedicated: what the count above is measured against."""
    t = start(tandem, server, conns="dedicated")
    held = [tandem_client(t) for _ in range(10)]
    assert all(c.ping() for c in held)
    assert tandem_conns(server) == 10


def test_pool_size_bounds_the_connections(tandem, server):
    t = start(tandem, server, pool=3)
    barrier = threading.Barrier(CLIENTS)
    held = []

    def client(i):
        held.append(counting_client(t, i, rounds=60, barrier=barrier))

    assert run_threads(CLIENTS, client) == []
    assert all(c.ping() for c in held)
    assert 1 <= tandem_conns(server) <= 3


def test_select_takes_a_connection_of_its_own(tandem, server):
    t = start(tandem, server)
    server.client().flushall()
    shared = tandem_client(t)
    shared.set("k", "db0")
    own = tandem_client(t, db=3)  # redis-py sends SELECT 3 first
    own.set("k", "db3")
    assert own.get("k") == b"db3"
    assert shared.get("k") == b"db0"
    assert server.client(db=3).get("k") == b"db3"
    assert server.client(db=0).get("k") == b"db0"
    # others stay shared and in db 0 while it works in db 3
    assert run_threads(10, lambda i: counting_client(t, i, rounds=40)) == []
    assert own.incr("n3") == 1 and server.client(db=3).get("n3") == b"1"
    assert server.client(db=0).get("n3") is None
    # SELECT 0 changes nothing: the client stays on the shared connection
    zero = tandem_client(t, db=0)
    zero.execute_command("SELECT", "0")
    assert zero.get("k") == b"db0"
    assert tandem_conns(server) == 2  # the shared one, and the SELECT 3 client's


def test_multi_and_blpop_do_not_stall_the_others(tandem, server):
    t = start(tandem, server)
    server.client().delete("mux:q", "mux:tx")
    popped = []
    blocker = threading.Thread(
        target=lambda: popped.append(tandem_client(t).blpop("mux:q", timeout=0)))
    blocker.start()
    wait_until(lambda: any(c.get("cmd") == "blpop" for c in server.client().client_list()), 20,
               "BLPOP blocking on the primary")
    # the others go on meanwhile, through the shared connection
    tx = tandem_client(t)

    def work(i):
        counting_client(t, i, rounds=60)
        if i == 0:
            for _ in range(50):
                with tx.pipeline(transaction=True) as p:
                    p.incr("mux:tx").incr("mux:tx")
                    a, b = p.execute()
                    assert b == a + 1

    assert run_threads(12, work) == []
    assert popped == []
    tandem_client(t).rpush("mux:q", "x")
    blocker.join(20)
    assert popped == [(b"mux:q", b"x")]
    assert tx.get("mux:tx") == b"100"


def test_subscriber_has_its_own_connection_publishers_share(tandem, server):
    t = start(tandem, server)
    sub = tandem_client(t).pubsub()
    sub.subscribe("mux:chan")
    assert sub.get_message(timeout=10)["type"] == "subscribe"
    publishers = [tandem_client(t) for _ in range(5)]
    for i, p in enumerate(publishers):
        assert p.publish("mux:chan", f"m{i}") == 1
    got = [sub.get_message(timeout=10) for _ in publishers]
    assert [m["data"] for m in got] == [f"m{i}".encode() for i in range(5)]
    assert tandem_conns(server) == 2  # the subscriber's own, and the shared one
    sub.close()


def test_a_client_leaving_with_replies_owed_disturbs_nobody(tandem, server):
    t = start(tandem, server)
    big = b"v" * (1 << 20)
    tandem_client(t).set("mux:big", big)
    stop = threading.Event()

    def leaver(_):
        # pipelines 40 GETs of 1 MiB and leaves before reading a byte, again and again
        req = b"*2\r\n$3\r\nGET\r\n$7\r\nmux:big\r\n" * 40
        while not stop.is_set():
            with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
                s.sendall(req)
                s.recv(100)  # some of its replies have arrived: the rest is owed

    lt = threading.Thread(target=leaver, args=(0,))
    lt.start()
    try:
        errors = run_threads(10, lambda i: counting_client(t, i, rounds=60))
    finally:
        stop.set()
        lt.join()
    assert errors == []
    c = tandem_client(t)
    assert c.get("mux:big") == big
    assert tandem_conns(server) == 1


def test_primary_lost_fails_the_waiting_clients_and_tandem_recovers(tandem, server):
    t = start(tandem, server)
    results = {}
    go = threading.Barrier(21)

    def load(i):
        c = tandem_client(t)
        go.wait()
        n = 0
        try:
            while True:
                c.incr(f"mux:lost:{i}")
                n += 1
        except (redis.ConnectionError, redis.ResponseError) as exc:
            results[i] = str(exc)

    threads = [threading.Thread(target=load, args=(i,)) for i in range(20)]
    for th in threads:
        th.start()
    go.wait()
    wait_until(lambda: (server.client().get("mux:lost:0") or b"0") > b"10", 20, "load under way")
    server.kill()
    for th in threads:
        th.join(30)
    assert len(results) == 20, results  # every client saw its error, none hangs
    told = [r for r in results.values() if "tandem" in r]
    assert told, results  # the waiting ones got tandem's -ERR in RESP
    server.start()
    c = tandem_client(t)
    wait_until(lambda: _works(c), 20, "tandem serving again")
    assert c.incr("mux:after") == 1
    assert tandem_conns(server) == 1


def _works(c):
    try:
        return c.ping()
    except redis.RedisError:
        return False


def test_shadow_mode_compares_each_reply_with_its_own(tandem, server):
    shadow = RedisServer("mux-shadow").start()
    try:
        server.client().flushall()
        t = start(tandem, server, shadow=shadow, mirror={"reads": "100%", "timeout": "10s"})
        assert run_threads(20, lambda i: counting_client(t, i, rounds=60)) == []
        wait_drained(t, listener="r")
        text = t.metrics()
        assert metric_value(text, "tandem_shadow_operations_total", listener="r",
                            outcome="match") > 2000
        for outcome in ("mismatch", "shadow_error", "dropped"):
            assert (metric_value(text, "tandem_shadow_operations_total", listener="r",
                                 outcome=outcome) or 0) == 0, outcome
        wait_until(lambda: server.digest() == shadow.digest(), 30, "DEBUG DIGEST equal")
    finally:
        shadow.stop()


def test_redis_benchmark_through_shared_connections(tandem, server):
    t = start(tandem, server)
    out = subprocess.run(["redis-benchmark", "-h", "127.0.0.1", "-p", str(t.port), "-c", "50",
                          "-n", "20000", "-r", "1000", "-t", "set,get,incr,lpush", "-P", "4",
                          "-q"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "error" not in out.stdout.lower(), out.stdout + out.stderr
    assert (metric_value(t.metrics(), "tandem_client_errors_total", listener="r") or 0) == 0


# -- The shadow leg (issue 15): mirrors of stateless clients share server_pool
# -- shadow connections per worker, as their commands share the primary's.

@pytest.fixture
def shadow():
    yield from serve("mux-shadow")


def start_shadowed(tandem, server, shadow, pool=1, mirror=None, **cfg):
    server.client().flushall()
    shadow.client().flushall()
    return start(tandem, server, pool=pool, shadow=shadow,
                 mirror=mirror or {"reads": "100%", "timeout": "10s"}, **cfg)


def shadow_outcome(t, outcome):
    return metric_value(t.metrics(), "tandem_shadow_operations_total", listener="r",
                        outcome=outcome) or 0


def test_stateless_clients_share_the_shadow_connections(tandem, server, shadow):
    t = start_shadowed(tandem, server, shadow, pool=2)
    barrier = threading.Barrier(30)
    held = []

    def client(i):
        held.append(counting_client(t, i, rounds=60, barrier=barrier))

    assert run_threads(30, client) == []
    wait_drained(t, listener="r")
    # the 30 clients are still connected: the shadow sees the pool, not one each
    assert all(c.ping() for c in held)
    assert 1 <= tandem_conns(shadow) <= 2
    assert shadow_outcome(t, "match") > 30 * 60 * 2
    for outcome in ("mismatch", "shadow_error", "shadow_timeout", "dropped"):
        assert shadow_outcome(t, outcome) == 0, outcome
    wait_until(lambda: server.digest() == shadow.digest(), 30, "DEBUG DIGEST equal")


def test_every_mirrored_write_reaches_the_shadow_in_order(tandem, server, shadow):
    t = start_shadowed(tandem, server, shadow, mirror={"reads": "0%", "timeout": "10s"})

    def writer(i):
        c = tandem_client(t)
        n = 0
        for r in range(40):
            c.rpush(f"order:{i}", n)
            n += 1
            p = c.pipeline(transaction=False)
            for _ in range(r % 7):
                p.rpush(f"order:{i}", n)
                n += 1
            p.execute()
        c.set(f"order:{i}:n", n)

    assert run_threads(20, writer) == []
    wait_drained(t, listener="r")
    for i in range(20):
        n = int(server.client().get(f"order:{i}:n"))
        want = [str(k).encode() for k in range(n)]
        assert server.client().lrange(f"order:{i}", 0, -1) == want
        assert shadow.client().lrange(f"order:{i}", 0, -1) == want, i
    assert tandem_conns(shadow) == 1
    assert shadow_outcome(t, "dropped") == 0


def test_interleaved_clients_each_get_their_own_comparison(tandem, server, shadow):
    """Odd clients read a key that differs on the shadow, even ones one that
    does not: every mismatch is an odd client's read, every match an even's.
    A reply handed to the wrong session would show in either count."""
    t = start_shadowed(tandem, server, shadow,
                       listener_extra="compare { confirm_per_second 0; }")
    for i in range(16):
        server.client().set(f"cmp:{i}", f"v{i}")
        shadow.client().set(f"cmp:{i}", f"v{i}" if i % 2 == 0 else f"other{i}")
    barrier = threading.Barrier(16)

    def reader(i):
        c = tandem_client(t)
        barrier.wait()
        for r in range(50):
            if r % 10 == 0:
                p = c.pipeline(transaction=False)
                for _ in range(5):
                    p.get(f"cmp:{i}")
                assert p.execute() == [f"v{i}".encode()] * 5
            else:
                assert c.get(f"cmp:{i}") == f"v{i}".encode()

    assert run_threads(16, reader) == []
    wait_drained(t, listener="r")
    reads = 45 + 5 * 5
    assert shadow_outcome(t, "mismatch") == 8 * reads
    assert shadow_outcome(t, "match") == 8 * reads
    assert tandem_conns(shadow) == 1


def test_select_moves_the_shadow_leg_to_its_own_connection(tandem, server, shadow):
    t = start_shadowed(tandem, server, shadow, mirror={"reads": "0%", "timeout": "10s"})
    others = [tandem_client(t) for _ in range(5)]
    for i, o in enumerate(others):
        o.set(f"sel:o{i}", "x")
    c = tandem_client(t)
    c.set("sel:k", "db0")  # shared, on both legs
    p = c.pipeline(transaction=False)
    for k in range(20):
        p.rpush("sel:l", k)  # still owed on the shared shadow connection ...
    p.execute_command("SELECT", "1")  # ... when the session takes its own
    p.set("sel:k", "db1")
    p.rpush("sel:l", "in db 1")
    assert p.execute()[-3:] == [True, True, 1]
    for i, o in enumerate(others):
        o.set(f"sel:o{i}", "y")
    wait_drained(t, listener="r")
    assert shadow.client(db=0).get("sel:k") == b"db0"
    assert shadow.client(db=1).get("sel:k") == b"db1"
    assert shadow.client(db=0).lrange("sel:l", 0, -1) == [str(k).encode() for k in range(20)]
    assert shadow.client(db=1).lrange("sel:l", 0, -1) == [b"in db 1"]
    assert all(shadow.client(db=0).get(f"sel:o{i}") == b"y" for i in range(5))
    # the shared shadow connection, and the SELECT 1 client's own, in db 1
    me = shadow.client()
    me.client_setname("checker")
    conns = [x for x in me.client_list() if x.get("name") != "checker"]
    assert sorted(x["db"] for x in conns) == ["0", "1"], conns
    assert c.get("sel:k") == b"db1"
    wait_until(lambda: server.digest() == shadow.digest(), 30, "DEBUG DIGEST equal")
    assert shadow_outcome(t, "dropped") == 0


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_a_dead_shadow_never_errors_a_client(tandem, server, shadow, how):
    t = start_shadowed(tandem, server, shadow, mirror={"reads": "100%", "timeout": "1s"},
                       listener_extra="compare { confirm_per_second 0; }")
    stop = threading.Event()
    done = [0] * 12

    def load(i):
        c = tandem_client(t)
        n = 0
        while not stop.is_set():
            n += 1
            assert c.incr(f"dead:{i}") == n
            assert c.get(f"dead:{i}") == str(n).encode()
            done[i] = n

    errors = []
    threads = start_threads(12, load, errors)
    try:
        wait_until(lambda: min(done) > 20, 30, "load under way")
        if how == "stop":
            shadow.signal(signal.SIGSTOP)
        else:
            shadow.kill()
        n = sum(done)
        # the clients go on, answered by the primary alone, while the shadow is gone
        wait_until(lambda: sum(done) > n + 2000, 60, "clients going on without the shadow")
        wait_until(lambda: shadow_outcome(t, "shadow_timeout") + shadow_outcome(t, "shadow_error")
                   + shadow_outcome(t, "dropped") > 0, 30, "the shadow's loss counted")
        if how == "stop":
            shadow.signal(signal.SIGCONT)
        else:
            shadow.start()
        # the sessions come back to the shadow (after a back-off); it missed
        # their writes meanwhile, so their reads compare as mismatches now
        def compared():
            return shadow_outcome(t, "match") + shadow_outcome(t, "mismatch")
        before = compared()
        wait_until(lambda: compared() > before + 100, 60, "mirroring again")
        fresh = tandem_client(t)
        wait_until(lambda: fresh.incr("dead:fresh") and shadow.client().exists("dead:fresh"),
                   30, "a new client's write on the shadow")
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert errors == []
    assert (metric_value(t.metrics(), "tandem_client_errors_total", listener="r") or 0) == 0
    assert tandem_conns(shadow) == 1


def test_cutover_drains_writes_left_on_a_shared_shadow_connection(tandem, server, shadow):
    """A stopped shadow: a client's large writes fill the shared shadow
    connection past its mirror queue, so its mirror is detached (dropped,
    counted) and it leaves that connection owing replies to writes already
    sent.  Those writes still reach the shadow once it runs again, so a
    cutover's drain waits for them (forced past the divergence the drop
    caused): abandoned while the shadow is stopped."""
    t = start_shadowed(tandem, server, shadow,
                       mirror={"reads": "0%", "queue": "1MB", "timeout": "60s"})
    c = tandem_client(t)
    c.set("drain:warm", "1")
    wait_drained(t, listener="r")
    shadow.signal(signal.SIGSTOP)
    try:
        value = b"x" * (256 << 10)
        k = 0
        while shadow_outcome(t, "dropped") == 0 and k < 400:
            c.set(f"drain:{k}", value)  # the primary answers: the client never waits
            k += 1
        assert shadow_outcome(t, "dropped") > 0, k
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 1500, "force": True})
    finally:
        shadow.signal(signal.SIGCONT)
    assert op["state"] == "failed" and "abandoned" in op["reason"], op
    # the writes sent before the drop did reach the shadow
    wait_until(lambda: shadow.client().exists("drain:0") == 1, 30, "the first write on the shadow")
    assert c.get("drain:warm") == b"1"
