"""Redis cutover and rollback: the shadow becomes the primary, and back, while
writers run through tandem, with no client error and no lost write.

Which server answers is read from `CONFIG GET port` (an admin command: the
primary answers it, never mirrored).  The only bound on time is max_pause,
which tandem enforces itself; the tests assert outcomes, never durations.
"""
import json
import signal
import subprocess
import threading
import time

import pytest
import redis

from harness.adminapi import run_operation
from harness.redisserver import RedisServer, start_redis_tandem, tandem_client
from harness.shadow import wait_drained
from harness.tandemproc import metric_value
from harness.util import wait_until


def answering_port(t):
    return int(tandem_client(t).config_get("port")["port"])


def writes_to(t, backend):
    return metric_value(t.metrics(), "tandem_requests_total", listener="r", backend=backend,
                        kind="write") or 0


@pytest.fixture
def pair():
    primary, shadow = RedisServer("cut-primary").start(), RedisServer("cut-shadow").start()
    try:
        yield primary, shadow
    finally:
        primary.stop()
        shadow.stop()


class Writers:
    """N redis-py clients writing through tandem (strings, counters, lists, hashes, MULTI)."""

    def __init__(self, t, n=6):
        self.stop = threading.Event()
        self.errors, self.done = [], [0] * n
        self.threads = [threading.Thread(target=self.run, args=(t, i)) for i in range(n)]

    def run(self, t, i):
        try:
            c = tandem_client(t)
            k = 0
            while not self.stop.is_set():
                c.set(f"w{i}:s:{k % 500}", k)
                c.incr(f"w{i}:n")
                c.rpush(f"w{i}:l", k)
                c.hset(f"w{i}:h", f"f{k % 50}", k)
                assert c.get(f"w{i}:s:{k % 500}") == str(k).encode()  # read-your-write
                if k % 10 == 0:
                    with c.pipeline(transaction=True) as p:
                        p.incr(f"w{i}:tx").sadd(f"w{i}:set", k).execute()
                k += 1
                self.done[i] = k
        except Exception as exc:  # noqa: BLE001 - reported by check()
            self.errors.append(repr(exc))

    def __enter__(self):
        for th in self.threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for th in self.threads:
            th.join()

    def progress(self):
        return sum(self.done)


def test_cutover_then_rollback_under_writers(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mode="shadow",
                           mirror={"reads": "0%", "timeout": "10s"})
    with Writers(t) as w:
        wait_until(lambda: w.progress() > 300, 30, "writers under way")
        before = writes_to(t, "green")
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        assert op["type"] == "cutover" and op["pause_ms"] <= op["max_pause_ms"]
        assert answering_port(t) == shadow.port  # new sessions: green answers
        status = json.loads(t.http("/api/status")[1])
        assert status["listeners"][0]["roles"] == {"primary": "green", "shadow": "blue"}
        n = w.progress()
        wait_until(lambda: w.progress() > n + 300, 30, "writers going on after the cutover")
        # the writers' own sessions swapped: green acknowledges their writes first now
        assert writes_to(t, "green") > before + 300
        op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        assert op["type"] == "rollback"
        assert answering_port(t) == primary.port
        n = w.progress()
        wait_until(lambda: w.progress() > n + 300, 30, "writers going on after the rollback")
    assert not w.errors, w.errors[:5]
    wait_drained(t, listener="r")
    wait_until(lambda: primary.digest() == shadow.digest(), 30, "DEBUG DIGEST equal")
    assert primary.client().dbsize() > 100
    text = t.metrics()
    for outcome in ("shadow_error", "shadow_timeout", "dropped"):
        assert (metric_value(text, "tandem_shadow_operations_total", listener="r",
                             outcome=outcome) or 0) == 0, outcome
    assert (metric_value(text, "tandem_client_errors_total", listener="r") or 0) == 0


def test_redis_benchmark_through_a_cutover(tandem, pair):
    """redis-benchmark's clients keep going across the swap; nothing is lost."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mode="shadow",
                           mirror={"reads": "0%", "timeout": "10s"})
    proc = subprocess.Popen(["redis-benchmark", "-h", "127.0.0.1", "-p", str(t.port), "-c", "8",
                             "-n", "60000", "-r", "5000", "-t", "set,incr,lpush", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until(lambda: primary.client().dbsize() > 100, 30, "redis-benchmark under way")
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
    finally:
        out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "error" not in out.lower(), out
    wait_drained(t, listener="r")
    wait_until(lambda: primary.digest() == shadow.digest(), 30, "DEBUG DIGEST equal")
    op = run_operation(t, "/api/rollback")
    assert op["state"] == "completed", op
    assert (metric_value(t.metrics(), "tandem_client_errors_total", listener="r") or 0) == 0


def test_write_of_a_client_that_left_is_drained(tandem, pair):
    """A client writes, is answered and leaves while the shadow still owes that
    write: the cutover's drain waits for it as for any session's (it would
    reach the new primary after the swap, behind newer writes), so with the
    shadow stopped it is abandoned.  No other client is writing."""
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mode="shadow", log_level="debug",
                           mirror={"reads": "0%", "timeout": "30s"})
    c = tandem_client(t)
    c.set("cutover:warm", "1")
    wait_drained(t, listener="r")
    shadow.signal(signal.SIGSTOP)
    try:
        c.set("cutover:left", "1")
        c.connection_pool.disconnect()  # gone: its session waits for the shadow's answer alone
        # the cutover starts only once the session is in that state (before it,
        # the session is an active one, whose drain was never in question)
        wait_until(lambda: "client gone; waiting for the shadow to catch up" in t.log(), 15,
                   "the session waiting for the shadow alone")
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 1500})
    finally:
        shadow.signal(signal.SIGCONT)
    assert op["state"] == "failed" and "abandoned" in op["reason"], op
    wait_drained(t, listener="r")
    assert shadow.client().get("cutover:left") == b"1"
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op


def test_cutover_that_cannot_drain_is_abandoned(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mode="shadow",
                           mirror={"reads": "0%", "timeout": "30s"})
    with Writers(t, n=2) as w:
        wait_until(lambda: w.progress() > 100, 30, "writers under way")
        shadow.signal(signal.SIGSTOP)
        try:
            # a write the stopped shadow cannot acknowledge: the drain cannot finish
            tandem_client(t).set("cutover:unacknowledged", "1")
            op = run_operation(t, "/api/cutover", {"max_pause_ms": 1500})
        finally:
            shadow.signal(signal.SIGCONT)
        assert op["state"] == "failed" and "abandoned" in op["reason"], op
        assert answering_port(t) == primary.port  # roles unchanged
        n = w.progress()
        wait_until(lambda: w.progress() > n + 100, 30, "writers going on")
    assert not w.errors, w.errors[:5]
    wait_drained(t, listener="r")
    wait_until(lambda: primary.digest() == shadow.digest(), 30, "DEBUG DIGEST equal")


def test_subscribers_reconnect_to_the_new_primary(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mode="shadow")
    sub = tandem_client(t).pubsub()
    sub.subscribe("news")
    wait_until(lambda: sub.get_message(timeout=0.1) is not None, 10, "subscribed")
    op = run_operation(t, "/api/cutover")
    assert op["state"] == "completed", op
    # the subscribed connection is closed: it would hear nothing on the old primary
    with pytest.raises(redis.ConnectionError):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            sub.get_message(timeout=0.2)


def test_refused_after_a_write_only_the_shadow_failed(tandem, pair):
    """A write the primary acknowledged and the shadow refused (another type
    under the key there): the shadow misses it, so a cutover is refused (409)
    naming the reason, until forced."""
    from harness.adminapi import call
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mode="shadow",
                           mirror={"reads": "0%", "timeout": "10s"})
    tandem_client(t).incr("drift:n")  # both sides alike
    wait_drained(t, listener="r")
    assert metric_value(t.metrics(), "tandem_shadow_diverged", listener="r") == 0
    shadow.client().set("drift:h", "a string")
    tandem_client(t).hset("drift:h", "f", "1")  # a hash on the primary, WRONGTYPE on the shadow
    wait_until(lambda: metric_value(t.metrics(), "tandem_shadow_diverged", listener="r") == 1,
               20, "the shadow marked diverged")
    status, reply = call(t, "POST", "/api/cutover")
    assert status == 409, reply
    assert "diverged" in reply["error"] and "shadow_error" in reply["error"], reply
    assert answering_port(t) == primary.port
