"""Redis mode split: reads answered by weights and canary rules, writes by the
primary; MULTI, WATCH and fresh writes keep reads on the primary; a failing
shadow costs no client an error.

Which server answered a GET is told by its value: the key `who` (and the
keys the canary tests read) hold different values on the two servers, set
directly, behind tandem's back.  No test asserts a duration: every wait is
an upper bound.
"""
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from harness.adminapi import call
from harness.redisserver import RedisServer, start_redis_tandem, tandem_client
from harness.tandemproc import metric_value
from harness.util import wait_until


def start_split(factory, primary, shadow, weights, extra="", mirror=None, **cfg):
    reads = " ".join(f"{name} weight={w};" for name, w in weights.items())
    return start_redis_tandem(factory, primary, shadow, mode="split",
                              mirror=mirror if mirror is not None else {"reads": "0%"},
                              listener_extra=f"reads {{ {reads} }}\n{extra}", **cfg)


def mark(primary, shadow, *keys):
    """Each key holds "primary" on the primary and "shadow" on the shadow."""
    for server, value in ((primary, "primary"), (shadow, "shadow")):
        c = server.client()
        for key in keys or ("who",):
            c.set(key, value)


def who(c, key="who"):
    value = c.get(key)
    assert value in (b"primary", b"shadow"), value
    return value.decode()


def count(c, n, key="who"):
    got = {"primary": 0, "shadow": 0}
    for _ in range(n):
        got[who(c, key)] += 1
    return got


def fallbacks(t, reason):
    return metric_value(t.metrics(), "tandem_route_fallbacks_total", listener="r",
                        reason=reason) or 0.0


@pytest.fixture
def pair(redis_primary, redis_shadow):
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    mark(redis_primary, redis_shadow)
    return redis_primary, redis_shadow


@pytest.fixture
def own_pair():
    primary, shadow = RedisServer("split-primary").start(), RedisServer("split-shadow").start()
    mark(primary, shadow)
    try:
        yield primary, shadow
    finally:
        primary.stop()
        shadow.stop()


# -- weights ------------------------------------------------------------------------------

def test_weights_70_30_over_many_gets(tandem, pair):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 70, "green": 30})
    with ThreadPoolExecutor(4) as pool:  # a client's error is raised here
        counts = list(pool.map(lambda _: count(tandem_client(t), 2000), range(4)))
    total = {side: sum(c[side] for c in counts) for side in ("primary", "shadow")}
    assert total["primary"] + total["shadow"] == 8000
    share = total["shadow"] / 8000
    assert 0.27 <= share <= 0.33, total
    text = t.metrics()
    assert metric_value(text, "tandem_route_weight", listener="r", backend="green") == 30
    assert metric_value(text, "tandem_requests_total", listener="r", backend="green",
                        kind="read") >= total["shadow"]
    assert metric_value(text, "tandem_requests_total", listener="r", backend="blue",
                        kind="read") >= total["primary"]


def test_pipeline_keeps_reply_order(tandem, pair):
    """A pipeline of reads and writes: each reply in its place, whoever answered it."""
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 50, "green": 50},
                    extra="read_your_writes 0ms;")
    c = tandem_client(t)
    for round_ in range(20):
        p = c.pipeline(transaction=False)
        for i in range(30):
            p.set(f"po:{i}", f"{round_}-{i}")
            p.get(f"po:{i}")
            p.get("who")
        replies = p.execute()
        for i in range(30):
            assert replies[3 * i] is True
            assert replies[3 * i + 1] == f"{round_}-{i}".encode()
            assert replies[3 * i + 2] in (b"primary", b"shadow")
    # one at a time, both sides answer; every reply belongs to its own command
    seen = set()
    for i in range(200):  # ECHO is a read too: two GETs a round see both sides
        seen.add(who(c))
        seen.add(who(c))
        assert c.echo(f"e{i}") == f"e{i}".encode()
    assert seen == {"primary", "shadow"}


def test_weights_changed_through_the_api(tandem, pair):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 100, "green": 0})
    c = tandem_client(t)
    assert count(c, 50) == {"primary": 50, "shadow": 0}
    status, body = call(t, "PUT", "/api/weights", {"blue": 0, "green": 100})
    assert status == 200, body
    assert count(c, 50) == {"primary": 0, "shadow": 50}  # the same connection follows


# -- canary rules -----------------------------------------------------------------------------

def test_canary_client_name(tandem, pair):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 100, "green": 0},
                    extra='canary cart { client_name "cart-*"; route green; }\n'
                          'canary pinned { client_name "pin-*"; primary; }')
    assert count(tandem_client(t, client_name="cart-7"), 100) == {"primary": 0, "shadow": 100}
    assert count(tandem_client(t, client_name="web-1"), 100) == {"primary": 100, "shadow": 0}
    assert count(tandem_client(t), 100) == {"primary": 100, "shadow": 0}  # no name
    # renamed on the way: CLIENT SETNAME, then HELLO 2 SETNAME
    c = tandem_client(t)
    assert who(c) == "primary"
    c.client_setname("cart-late")
    assert count(c, 20) == {"primary": 0, "shadow": 20}
    c.execute_command("HELLO", "2", "SETNAME", "web-again")
    assert count(c, 20) == {"primary": 20, "shadow": 0}
    c.execute_command("HELLO", "2", "SETNAME", "cart-hello")
    assert count(c, 20) == {"primary": 0, "shadow": 20}
    assert c.client_getname() == "cart-hello"  # the primary got the name too


def test_canary_pins_to_primary(tandem, pair):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 0, "green": 100},
                    extra='canary pinned { client_name "pin-*"; primary; }')
    assert count(tandem_client(t, client_name="pin-1"), 50) == {"primary": 50, "shadow": 0}
    assert count(tandem_client(t, client_name="other"), 50) == {"primary": 0, "shadow": 50}
    assert fallbacks(t, "canary_primary") >= 50


@pytest.mark.parametrize("network, matches", [("127.0.0.0/8", True), ("10.0.0.0/8", False),
                                              ("[::1]/128", False)])
def test_canary_client_address(tandem, pair, network, matches):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 100, "green": 0},
                    extra=f"canary near {{ client {network}; route green; }}")
    got = count(tandem_client(t), 100)
    assert got == ({"primary": 0, "shadow": 100} if matches else {"primary": 100, "shadow": 0})


def test_canary_key_prefix(tandem, pair):
    primary, shadow = pair
    mark(primary, shadow, "user:1", "user:2", "order:1", "usr:1")
    t = start_split(tandem, primary, shadow, {"blue": 100, "green": 0},
                    extra='canary users { key_prefix "user:"; route green; }')
    c = tandem_client(t)
    for key in ("user:1", "user:2"):
        assert count(c, 50, key) == {"primary": 0, "shadow": 50}, key
    for key in ("order:1", "usr:1", "who"):
        assert count(c, 50, key) == {"primary": 50, "shadow": 0}, key
    # a multi-key read goes by its first key
    assert c.mget("user:1", "order:1") == [b"shadow", b"shadow"]
    assert c.mget("order:1", "user:1") == [b"primary", b"primary"]


def test_canary_percent_by_client_name_keeps_each_client_on_one_side(tandem, pair):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 100, "green": 0},
                    extra="canary some { percent 50% by client_name; route green; }")
    sides = {}
    for i in range(40):
        name = f"app-{i}"
        got = count(tandem_client(t, client_name=name), 10)
        assert 0 in got.values(), (name, got)  # all or nothing for one client
        sides[name] = "shadow" if got["shadow"] else "primary"
        # a second connection with the same name lands on the same side
        assert who(tandem_client(t, client_name=name)) == sides[name]
    assert set(sides.values()) == {"primary", "shadow"}, sides
    assert count(tandem_client(t), 10) == {"primary": 10, "shadow": 0}  # no name: no match


# -- consistency ---------------------------------------------------------------------------

def test_reads_after_a_write_and_in_transactions_go_to_the_primary(tandem, pair):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 0, "green": 100},
                    extra="read_your_writes 1500ms;")
    c = tandem_client(t)
    assert who(c) == "shadow"
    before = fallbacks(t, "read_your_writes")
    c.set("ryw:k", "v")
    assert who(c) == "primary"  # right after the write: the primary answers
    assert c.get("ryw:k") == b"v"
    assert fallbacks(t, "read_your_writes") >= before + 2
    wait_until(lambda: who(c) == "shadow", 15, "reads routed again after read_your_writes")
    # MULTI: the reads queued in it are answered by the primary's EXEC
    before = fallbacks(t, "in_transaction")
    with c.pipeline(transaction=True) as p:
        p.get("who").get("who")
        assert p.execute() == [b"primary", b"primary"]
    assert fallbacks(t, "in_transaction") >= before + 2
    # WATCH pins: the value read is the one the transaction is checked against
    wait_until(lambda: who(c) == "shadow", 15, "reads routed again after EXEC")
    c.execute_command("WATCH", "who")
    assert who(c) == "primary"
    c.execute_command("UNWATCH")
    assert who(c) == "shadow"
    # another connection never wrote: routed at once
    assert who(tandem_client(t)) == "shadow"


def test_blocking_and_pubsub_stay_on_the_primary(tandem, pair):
    primary, shadow = pair
    t = start_split(tandem, primary, shadow, {"blue": 0, "green": 100})
    c = tandem_client(t)
    primary.client().rpush("bl:l", "from-primary")
    shadow.client().rpush("bl:l", "from-shadow")
    assert c.blpop("bl:l", timeout=5) == (b"bl:l", b"from-primary")
    primary.client().xadd("bl:x", {"f": "p"}, id="1-1")
    shadow.client().xadd("bl:x", {"f": "s"}, id="1-1")
    assert c.xread({"bl:x": "0"}, block=100)[0][1][0][1] == {b"f": b"p"}


# -- failure --------------------------------------------------------------------------------

def test_shadow_killed_reads_fall_back_with_zero_client_errors(tandem, own_pair):
    primary, shadow = own_pair
    t = start_split(tandem, primary, shadow, {"blue": 50, "green": 50},
                    extra="read_your_writes 0ms;")
    stop = threading.Event()
    errors, seen = [], []

    def reader():
        try:
            c = tandem_client(t)
            while not stop.is_set():
                seen.append(who(c))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for th in threads:
        th.start()
    try:
        wait_until(lambda: seen.count("shadow") > 200, 30, "reads routed to the shadow")
        shadow.kill()
        n = len(seen)
        wait_until(lambda: len(seen) > n + 2000, 60, "reads after the shadow died")
        tail = seen[n + 1000:]
        assert set(tail) == {"primary"}, {v: tail.count(v) for v in set(tail)}
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors, errors
    text = t.metrics()
    moved = sum(metric_value(text, "tandem_route_fallbacks_total", listener="r",
                             reason=r) or 0 for r in ("retried", "unhealthy"))
    assert moved > 0
    assert (metric_value(text, "tandem_client_errors_total", listener="r") or 0) == 0
    # back: routed again once a session re-attaches (after its back-off)
    shadow.start()
    mark(primary, shadow)
    c = tandem_client(t)
    wait_until(lambda: who(c) == "shadow", 90, "reads routed to the restarted shadow")


def test_shadow_stopped_mid_read_is_retried_on_the_primary(tandem, own_pair):
    """A routed read the stalled shadow never answers is retried once it times out."""
    primary, shadow = own_pair
    t = start_split(tandem, primary, shadow, {"blue": 0, "green": 100},
                    mirror={"reads": "0%", "timeout": "1s"})
    c = tandem_client(t)
    assert who(c) == "shadow"
    shadow.signal(signal.SIGSTOP)
    try:
        assert who(c) == "primary"  # waited for the shadow's timeout, then retried
    finally:
        shadow.signal(signal.SIGCONT)
    assert fallbacks(t, "retried") >= 1
    assert (metric_value(t.metrics(), "tandem_client_errors_total", listener="r") or 0) == 0
