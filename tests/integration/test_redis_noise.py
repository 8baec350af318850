"""Redis shadow mode: replies that depend on the server, not the data, are
noise with a reason (issue 13): OBJECT ENCODING and MEMORY USAGE (physical:
the shadow keeps the same hash in another encoding), SCAN cursors (physical:
each server's hash table has its own order), INFO-like commands are never
mirrored.  A real difference of a value is still a mismatch.

The servers are the session's pair, flushed first.  No test asserts a
duration: every wait is an upper bound.
"""
import pytest

from harness.redisserver import start_redis_tandem, tandem_client
from harness.shadow import delta, outcomes, report, wait_drained
from harness.util import wait_until

MIRROR_ALL = {"reads": "100%", "queue": "4MB", "timeout": "5s"}
REASONS = ("volatile", "physical", "server_local", "ignored")


@pytest.fixture
def pair(redis_primary, redis_shadow):
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    return redis_primary, redis_shadow


def statement(t, text):
    """The report's entry for command TEXT ("OBJECT ENCODING"), once it counted a unit."""
    found = []

    def ok():
        found[:] = [s for s in report(t)["statements"] if s["statement"] == text]
        return found and found[0]["count"]["total"] >= 1
    try:
        wait_until(ok, 30, f"the report's entry for {text!r}", interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; statements {[s['statement'] for s in report(t)['statements']]}") \
            from None
    return found[0]


def settled(t, before, n):
    last = []

    def ok():
        wait_drained(t, listener="r")
        last[:] = [delta(outcomes(t, "r"), before)]
        return sum(last[0].values()) >= n
    try:
        wait_until(ok, 30, f"{n} commands compared", interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; delta {last[0] if last else None}") from None
    return last[0]


def test_encoding_memory_and_scan_are_physical(tandem, pair):
    primary, shadow = pair
    # the shadow keeps small hashes as real hash tables: same data, other layout
    old = shadow.client().config_get("hash-max-listpack-entries")["hash-max-listpack-entries"]
    shadow.client().config_set("hash-max-listpack-entries", 0)
    try:
        t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
        c = tandem_client(t)
        c.hset("nz:h", mapping={f"f{i}": f"v{i}" for i in range(8)})
        for i in range(200):
            c.set(f"nz:k:{i}", i)
        wait_drained(t, listener="r")
        assert shadow.client().object("encoding", "nz:h") == b"hashtable"
        assert primary.client().object("encoding", "nz:h") == b"listpack"

        before = outcomes(t, "r")
        noise_before = {r: t.metric("tandem_shadow_noise_total", listener="r", reason=r) or 0.0
                        for r in REASONS}
        assert c.object("encoding", "nz:h") == b"listpack"
        c.memory_usage("nz:h")
        c.execute_command("SCAN", 0, "COUNT", 20)
        c.execute_command("HSCAN", "nz:h", 0)
        got = settled(t, before, 4)
    finally:
        shadow.client().config_set("hash-max-listpack-entries", old)
    assert got["mismatch"] == 0 and got["shadow_error"] == 0, got
    for text in ("OBJECT ENCODING", "MEMORY USAGE", "SCAN"):
        st = statement(t, text)
        assert st["count"]["mismatch"] == 0, st
        assert st["count"]["noise"] == 1 and st["noise"]["physical"] == 1, st
    noise = {r: (t.metric("tandem_shadow_noise_total", listener="r", reason=r) or 0.0)
             - noise_before[r] for r in REASONS}
    assert noise["physical"] == got["noise"] and noise["physical"] >= 3, (noise, got)
    # the page's source: samples of noise carry the reason
    samples = [s for s in report(t)["samples"] if s["outcome"] == "noise"]
    assert samples and all(s["reason"] == "physical" for s in samples), samples


def test_value_changed_on_shadow_is_still_a_mismatch(tandem, pair):
    primary, shadow = pair
    t = start_redis_tandem(tandem, primary, shadow, mirror=MIRROR_ALL)
    c = tandem_client(t)
    c.set("nz:v", "alpha")
    wait_drained(t, listener="r")
    shadow.client().set("nz:v", "omega")
    before = outcomes(t, "r")
    assert c.get("nz:v") == b"alpha"
    got = settled(t, before, 1)
    assert got["mismatch"] == 1 and got["noise"] == 0, got
    st = statement(t, "GET")
    assert sum(st["noise"].values()) == 0, st
