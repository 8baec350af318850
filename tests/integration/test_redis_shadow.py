"""Redis shadow mode: every command answered by the primary, writes (and
sampled reads) mirrored to the shadow once the primary answered them,
replies compared per command.

Each test that breaks a server gets servers of its own; the others share
one pair and flush it first.  No test asserts a duration: every wait is an
upper bound.
"""
import signal
import subprocess
import threading
import time

import pytest
import redis

from harness.redisserver import RedisServer, start_redis_tandem, tandem_client
from harness.shadow import listener_report, outcomes, report, wait_drained
from harness.util import wait_until

MIRROR_ALL = {"reads": "100%", "queue": "4MB", "timeout": "5s"}


@pytest.fixture
def pair(redis_primary, redis_shadow):
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    return redis_primary, redis_shadow


@pytest.fixture
def own_pair():
    primary, shadow = RedisServer("own-primary").start(), RedisServer("own-shadow").start()
    try:
        yield primary, shadow
    finally:
        primary.stop()
        shadow.stop()


def wait_same_digest(primary, shadow, timeout=30):
    def same():
        return primary.digest() == shadow.digest()
    try:
        wait_until(same, timeout, "DEBUG DIGEST equal on both servers", interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: primary {primary.digest()} shadow {shadow.digest()}; "
                             f"keys {sorted(primary.client().keys())[:20]} vs "
                             f"{sorted(shadow.client().keys())[:20]}") from None


def mixed_workload(c):
    """Strings, hashes, lists, sets, sorted sets, expirations, MULTI/EXEC, pipelines, db 2."""
    c.set("s:1", "one")
    c.append("s:1", "-more")
    c.incrby("s:n", 5)
    c.incrbyfloat("s:f", 1.5)
    c.mset({"s:a": "A", "s:b": "B"})
    c.setex("s:ttl", 300, "expiring")
    c.set("s:px", "x", px=600000)
    c.expire("s:a", 1000)
    c.persist("s:a")
    c.hset("h:1", mapping={"f1": "v1", "f2": "v2", "f3": "v3"})
    c.hincrby("h:1", "count", 3)
    c.hdel("h:1", "f2")
    c.rpush("l:1", *[f"e{i}" for i in range(50)])
    c.lpush("l:1", "head")
    c.ltrim("l:1", 0, 30)
    c.lset("l:1", 2, "changed")
    c.rpoplpush("l:1", "l:2")
    c.sadd("set:1", *[f"m{i}" for i in range(40)])
    c.srem("set:1", "m3")
    c.sinterstore("set:2", ["set:1"])
    c.zadd("z:1", {f"z{i}": i for i in range(30)})
    c.zincrby("z:1", 2.5, "z4")
    c.zremrangebyscore("z:1", 10, 12)
    c.xadd("x:1", {"a": "1"}, id="1-1")
    with c.pipeline(transaction=True) as p:
        p.set("tx:1", "a").incr("tx:n").lpush("tx:l", "x", "y").hset("tx:h", "k", "v")
        p.execute()
    p = c.pipeline(transaction=False)
    for i in range(500):
        p.set(f"pipe:{i}", i)
        p.sadd("pipe:set", i % 37)
        p.zadd("pipe:z", {f"m{i % 50}": i})
    p.execute()
    c.delete("pipe:3", "pipe:4")
    c.rename("s:b", "s:b2")
    db2 = redis.Redis(host=c.connection_pool.connection_kwargs["host"],
                      port=c.connection_pool.connection_kwargs["port"], db=2, socket_timeout=20)
    db2.set("db2:k", "in db 2")
    db2.hset("db2:h", "f", "v")
    # reads, compared against the shadow
    c.get("s:1"), c.hgetall("h:1"), c.smembers("set:1"), c.lrange("l:1", 0, -1)
    c.zrange("z:1", 0, -1, withscores=True), c.ttl("s:ttl"), c.pttl("s:px"), c.keys("s:*")


def test_mixed_workload_same_data(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    mixed_workload(c)
    wait_drained(t, listener="r")
    wait_same_digest(primary, shadow)
    assert primary.client(db=2).get("db2:k") == b"in db 2"
    assert shadow.client(db=2).get("db2:k") == b"in db 2"
    got = outcomes(t, listener="r")
    assert got["match"] > 100
    assert got["mismatch"] == 0, report(t)["samples"]
    for o in ("shadow_error", "shadow_timeout", "dropped"):
        assert got[o] == 0, (o, report(t))
    stmts = {s["statement"] for s in report(t)["statements"] if s["listener"] == "r"}
    assert {"SET", "HGETALL", "SMEMBERS", "MULTI/EXEC", "TTL", "SELECT"} <= stmts


def test_mismatch_shows_both_values(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.set("mm:k", "primary-value")
    wait_drained(t, listener="r")
    shadow.client().set("mm:k", "changed-behind-tandem")
    assert c.get("mm:k") == b"primary-value"  # the client always gets the primary's answer

    def found():
        return [s for s in report(t)["samples"]
                if s["statement"] == "GET" and s["outcome"] == "mismatch"]
    sample = wait_until(found, 15, "the mismatch in the report")[0]
    assert "primary-value" in sample["primary"]
    assert "changed-behind-tandem" in sample["shadow"]
    assert outcomes(t, listener="r")["mismatch"] >= 1


def test_unordered_and_nondeterministic_replies(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    for i in range(200):
        c.sadd("u:set", f"member-{i}")
        c.hset("u:h", f"f{i}", i)
    wait_drained(t, listener="r")
    # the same members, inserted in another order on the shadow: hash order differs
    shadow.client().delete("u:set")
    shadow.client().sadd("u:set", *[f"member-{i}" for i in reversed(range(200))])
    before = outcomes(t, listener="r")
    c.smembers("u:set"), c.hgetall("u:h"), c.randomkey(), c.srandmember("u:set")
    wait_drained(t, listener="r")
    got = outcomes(t, listener="r")
    assert got["mismatch"] == before["mismatch"]
    assert got["match"] + got["noise"] >= before["match"] + before["noise"] + 4


def test_aborted_transaction_not_mirrored(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c, other = tandem_client(t), tandem_client(t)
    c.set("w:k", 1)
    with c.pipeline(transaction=True) as p:
        p.watch("w:k")
        other.set("w:k", 5)
        p.multi()
        p.set("w:k", 99)
        with pytest.raises(redis.WatchError):
            p.execute()
    wait_drained(t, listener="r")
    assert shadow.client().get("w:k") == b"5"
    wait_same_digest(primary, shadow)


def test_shadow_auth_and_select_replay(tandem, redis_primary):
    shadow = RedisServer("auth-shadow", password="shadowpw").start()
    try:
        redis_primary.client().flushall()
        t = start_redis_tandem(tandem, redis_primary, shadow, mirror=MIRROR_ALL,
                               shadow_extra="password shadowpw;")
        c = tandem_client(t, db=5)
        c.set("sel:k", "v5")
        wait_drained(t, listener="r")
        assert shadow.client(db=5).get("sel:k") == b"v5"
        assert outcomes(t, listener="r")["shadow_error"] == 0
    finally:
        shadow.stop()


def benchmark(port, seconds_hint_requests=60000, extra=()):
    return subprocess.Popen(["redis-benchmark", "-p", str(port), "-q", "-n",
                             str(seconds_hint_requests), "-c", "20", "-P", "4",
                             "-t", "set,incr,lpush", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def check_benchmark(proc):
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "error" not in (out + err).lower(), out + err
    return out


def test_shadow_stopped_then_killed_during_benchmark(tandem, own_pair):
    primary, shadow = own_pair
    t = start_redis_tandem(tandem, primary, shadow,
                           mirror={"reads": "10%", "queue": "1MB", "timeout": "1s"})
    proc = benchmark(t.port, 150000)
    wait_until(lambda: (outcomes(t, listener="r")["match"] > 100), 60, "mirrors flowing")
    shadow.signal(signal.SIGSTOP)
    wait_until(lambda: t.metric("tandem_shadow_detached_sessions", listener="r") or
               sum(outcomes(t, listener="r")[o] for o in ("dropped", "shadow_timeout")) > 0,
               60, "the stopped shadow to be detached")
    shadow.signal(signal.SIGCONT)
    time.sleep(0.5)  # let it answer a little again; no assertion depends on this
    shadow.kill()
    check_benchmark(proc)
    got = outcomes(t, listener="r")
    assert got["dropped"] + got["shadow_timeout"] + got["shadow_error"] > 0
    rep = listener_report(report(t), "r")
    assert rep["diverged"] is True
    # the primary has every write: a client through tandem still works
    assert tandem_client(t).incr("after") == 1


def test_shadow_comes_back(tandem, own_pair):
    primary, shadow = own_pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.set("back:1", "a")
    wait_drained(t, listener="r")
    shadow.kill()
    c.set("back:2", "b")  # the shadow is gone: detached, counted
    wait_until(lambda: t.metric("tandem_shadow_detached_sessions", listener="r") >= 1, 20,
               "the session to detach")
    shadow.start()  # same port, empty

    def reattached():
        c.set("back:3", "c")
        return shadow.client().get("back:3") == b"c"
    wait_until(reattached, 90, "the session to re-attach (back-off)", interval=0.5)
    assert c.get("back:2") == b"b"


def test_redis_benchmark_shadow_zero_errors(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror={"reads": "10%"})
    out = check_benchmark(benchmark(t.port, 30000, extra=("-r", "1000")))
    assert "requests per second" in out
    wait_drained(t, listener="r")
    wait_same_digest(primary, shadow)


def test_multi_larger_than_the_mirror_queue_detaches(tandem, pair):
    """MULTI's commands were copied for the shadow without bound until EXEC.
    Now a transaction outgrowing mirror { queue } stops being collected and
    the shadow is detached at once (dropped: queue_full, the write marks the
    shadow diverged); the client's transaction runs on the primary as usual."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow,
                           mirror={"reads": "100%", "queue": "64KB", "timeout": "5s"})
    c = tandem_client(t)
    c.set("tx:small", "x")
    wait_drained(t, listener="r")
    dropped = t.metric("tandem_shadow_mirror_dropped_total", listener="r",
                       reason="queue_full") or 0
    with c.pipeline(transaction=True) as pipe:
        for i in range(40):
            pipe.set(f"tx:big:{i}", "v" * 4096)  # 160 KB in one transaction
        assert pipe.execute() == [True] * 40
    assert primary.client().get("tx:big:39") == b"v" * 4096
    t.wait_metric("tandem_shadow_mirror_dropped_total", dropped + 1, listener="r",
                  reason="queue_full")
    wait_until(lambda: listener_report(report(t), "r")["diverged"] is True, 20,
               "the shadow marked diverged")
    assert shadow.client().get("tx:big:0") is None
    assert c.get("tx:small") == b"x"


def test_xadd_and_spop_mirror_the_primarys_choice(tandem, pair):
    """XADD * and SPOP let the server choose (a stream id, which members):
    the shadow gets the primary's choice (XADD with its id, SREM of what it
    popped), so both servers end with the same stream and the same set,
    and nothing is marked diverged."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.sadd("pop:set", *[f"member-{i}" for i in range(300)])
    ids = []
    for i in range(40):
        ids.append(c.xadd("ev:1", {"n": str(i)}))                 # XADD ev:1 * n i
        c.xadd("ev:2", {"n": str(i)}, maxlen=10, approximate=False)  # MAXLEN = 10 *
        c.spop("pop:set")                                          # one member
        c.spop("pop:set", 3)                                       # three
        time.sleep(0.002)  # ids a millisecond apart on the shadow would differ anyway
    c.execute_command("XADD", "ev:3", "NOMKSTREAM", "*", "n", "1")  # no stream: nothing added
    wait_drained(t, listener="r")
    assert shadow.client().xrange("ev:1") == primary.client().xrange("ev:1")
    assert [e[0] for e in primary.client().xrange("ev:1")] == ids
    assert shadow.client().xrange("ev:2") == primary.client().xrange("ev:2")
    assert shadow.client().smembers("pop:set") == primary.client().smembers("pop:set")
    assert len(primary.client().smembers("pop:set")) == 300 - 40 * 4
    wait_same_digest(primary, shadow)
    assert listener_report(report(t), "r")["diverged"] is False
    assert outcomes(t, listener="r")["shadow_error"] == 0


def test_xadd_and_spop_inside_multi_mirror_the_primarys_choice(tandem, pair):
    """Inside MULTI ... EXEC the primary's choices are the elements of
    EXEC's reply: the mirrored transaction is rewritten from it (XADD with
    the ids EXEC returned, SREM of what SPOP popped), so the stream and the
    set are the same on both servers and the reads after it match."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.sadd("txpop:set", *[f"member-{i}" for i in range(600)])
    for _ in range(5):
        with c.pipeline(transaction=True) as p:
            for i in range(30):
                p.xadd("txev:1", {"n": str(i)})                 # XADD txev:1 * n i
            p.spop("txpop:set")                                   # one member
            p.spop("txpop:set", 70)                               # more than 64
            p.execute_command("XADD", "txev:1", "1-1", "late", "x")  # an error inside EXEC
            p.xadd("txev:2", {"n": "1"}, maxlen=5, approximate=False)
            p.set("txev:plain", "v")
            p.srandmember("txpop:set", 2)                         # read only: nothing to mirror
            got = p.execute(raise_on_error=False)
        assert isinstance(got[32], redis.ResponseError)
        assert len(got[31]) == 70
        time.sleep(0.002)
    wait_drained(t, listener="r")
    assert shadow.client().xrange("txev:1") == primary.client().xrange("txev:1")
    assert len(primary.client().xrange("txev:1")) == 150
    assert shadow.client().xrange("txev:2") == primary.client().xrange("txev:2")
    assert shadow.client().smembers("txpop:set") == primary.client().smembers("txpop:set")
    assert len(primary.client().smembers("txpop:set")) == 600 - 5 * 71
    before = outcomes(t, listener="r")
    assert c.xrange("txev:1")[0] == primary.client().xrange("txev:1")[0]
    c.xlen("txev:1"), c.smembers("txpop:set")
    wait_drained(t, listener="r")
    after = outcomes(t, listener="r")
    assert after["match"] >= before["match"] + 3
    assert after["mismatch"] == 0, report(t)["samples"]
    wait_same_digest(primary, shadow)
    assert listener_report(report(t), "r")["diverged"] is False
    assert after["shadow_error"] == 0


def test_aborted_multi_with_xadd_and_spop_mirrors_nothing(tandem, pair):
    """A transaction that did not commit (EXECABORT, or a WATCH that failed:
    EXEC answers nil) sends nothing to the shadow, rewritten or not."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.sadd("ab:set", "a", "b", "c")
    c.set("ab:watched", "0")
    with c.pipeline(transaction=True) as p:
        p.xadd("ab:s", {"n": "1"})
        p.spop("ab:set")
        p.execute_command("XADD")                                 # wrong arity: EXECABORT
        with pytest.raises(redis.ResponseError):
            p.execute()
    with c.pipeline(transaction=True) as p:
        p.watch("ab:watched")
        p.multi()
        tandem_client(t).set("ab:watched", "1")                  # the WATCH fails
        p.xadd("ab:s", {"n": "2"})
        p.spop("ab:set")
        with pytest.raises(redis.WatchError):
            p.execute()
    wait_drained(t, listener="r")
    for server in (primary, shadow):
        assert server.client().exists("ab:s") == 0
        assert server.client().scard("ab:set") == 3
    wait_same_digest(primary, shadow)
    assert listener_report(report(t), "r")["diverged"] is False
    assert outcomes(t, listener="r")["shadow_error"] == 0


def test_exec_reply_larger_than_the_mirror_queue_marks_the_shadow_diverged(tandem, pair):
    """An EXEC whose reply (SPOP of many members) outgrows the session's
    mirror queue is not kept: the transaction goes verbatim, the shadow
    pops its own members, and tandem says so (diverged)."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=dict(MIRROR_ALL, queue="1MB"))
    c = tandem_client(t)
    members = [f"{i:06d}-" + "y" * 60 for i in range(20000)]
    for i in range(0, len(members), 2000):
        c.sadd("huge:set", *members[i:i + 2000])
    with c.pipeline(transaction=True) as p:
        p.spop("huge:set", 8000)                                    # about 580 KB x 2 > 1 MB
        p.spop("huge:set", 8000)
        popped = p.execute()
    assert sum(len(x) for x in popped) == 16000
    wait_drained(t, listener="r")
    wait_until(lambda: listener_report(report(t), "r")["diverged"] is True, 20,
               "the shadow marked diverged")
    assert shadow.client().scard("huge:set") == primary.client().scard("huge:set") == 4000
    # verbatim: the shadow popped 16,000 of its own choosing
    assert shadow.client().smembers("huge:set") != primary.client().smembers("huge:set")


def test_spop_answer_too_long_to_keep_marks_the_shadow_diverged(tandem, pair):
    """SPOP of members whose names outgrow what tandem keeps of a reply:
    the primary's choice is unknown, the shadow pops its own, and tandem
    says so (diverged), never silently."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.sadd("big:set", *[f"{i:04d}-" + "x" * 100 for i in range(50)])
    assert len(c.spop("big:set", 10)) == 10
    wait_drained(t, listener="r")
    wait_until(lambda: listener_report(report(t), "r")["diverged"] is True, 20,
               "the shadow marked diverged")
    assert len(shadow.client().smembers("big:set")) == 40


def test_a_script_killed_on_the_primary_never_runs_on_the_shadow(tandem, own_pair):
    """A runaway script stopped by SCRIPT KILL (and a function by FUNCTION
    KILL) wrote nothing, Redis kills no other: the shadow is not given it,
    so it is not left running there, every other command answered BUSY."""
    primary, shadow = own_pair
    for server in (primary, shadow):
        server.client().config_set("busy-reply-threshold", 100)
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.function_load("#!lua name=spinlib\nredis.register_function('spin', "
                    "function() while true do end end)")
    wait_drained(t, listener="r")
    for call in (lambda cl: cl.eval("while true do end", 0),
                 lambda cl: cl.fcall("spin", 0)):
        errors = []

        def run():
            try:
                call(tandem_client(t))
            except redis.ResponseError as exc:
                errors.append(str(exc))
        th = threading.Thread(target=run)
        th.start()
        killer = tandem_client(t)

        def killed():
            for what in ("SCRIPT", "FUNCTION"):
                try:
                    killer.execute_command(what, "KILL")
                    return True
                except redis.ResponseError:
                    pass  # NOTBUSY yet, or the other kind
            return False
        wait_until(killed, 20, "SCRIPT/FUNCTION KILL accepted by the primary")
        th.join(20)
        assert errors and "killed by user" in errors[0], errors
    c.set("after", "1")
    wait_drained(t, listener="r")
    # the shadow answers at once, not BUSY: it never ran either script
    assert shadow.client().get("after") == b"1"
    assert shadow.client().ping()
    assert outcomes(t, listener="r")["shadow_error"] == 0
