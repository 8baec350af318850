"""RESP3 through tandem: HELLO 3 relayed, maps, sets, nulls, doubles answered
as redis-server answers them, CLIENT TRACKING invalidation pushes relayed in
their place in the stream, in passthrough, shadow and split mode.  In shadow
mode the shadow connection speaks RESP3 too, so replies compare (maps and
sets unordered).

redis-py 4 has no RESP3: raw sockets and redis-cli -3.
"""
import subprocess

import pytest

from harness.redisserver import MIRROR_ALL, start_redis_mode, start_redis_tandem, tandem_client
from harness.shadow import outcomes, report, wait_drained
from harness.util import wait_until
from test_redis_fidelity import END, Raw, inline

@pytest.fixture(params=["passthrough", "shadow", "split"])
def mode(request):
    return request.param


@pytest.fixture
def t(tandem, redis_primary, redis_shadow, mode):
    return start_redis_mode(tandem, redis_primary, redis_shadow, mode)


def check_shadow_clean(t, mode, min_match=1):
    if mode != "shadow":
        return
    wait_drained(t, listener="r")
    wait_until(lambda: outcomes(t, listener="r")["match"] >= min_match, 30,
               f"{min_match} comparisons recorded")
    got = outcomes(t, listener="r")
    for o in ("mismatch", "shadow_error", "shadow_timeout", "dropped"):
        assert got[o] == 0, (o, got, report(t)["samples"])


SETUP = inline("HSET r3:h a 1 b 2 c 3", "SADD r3:s x y z", "ZADD r3:z 1.5 m", "SET r3:k v",
               "RPUSH r3:l 1 2")
# read after the writes reached both servers (split mode reads either)
READS = inline("HGETALL r3:h", "SMEMBERS r3:s", "ZSCORE r3:z m", "GET r3:none", "GET r3:k",
               "HRANDFIELD r3:none", "LRANGE r3:l 0 -1", "CONFIG GET maxmemory-policy",
               "EXISTS r3:k", "ECHO end")


def resp3_replies(port, script):
    r = Raw(port)
    r.send(["HELLO", "3"])
    hello, _ = r.reply()
    assert isinstance(hello, list) and b"proto" in hello  # a map, read as pairs
    r.sock.sendall(script)
    out = b""
    while not out.endswith(END):
        chunk = r.sock.recv(65536)
        assert chunk, f"closed after {out!r}"
        out += chunk
    r.close()
    return out


def test_resp3_replies_as_redis_sends_them(t, mode, redis_primary, redis_shadow):
    resp3_replies(redis_primary.port, SETUP + inline("ECHO end"))
    resp3_replies(redis_shadow.port, SETUP + inline("ECHO end"))
    direct = resp3_replies(redis_primary.port, READS)
    assert direct.startswith(b"%3\r\n") and b"~3\r\n" in direct and b",1.5\r\n" in direct
    assert b"_\r\n" in direct
    # HGETALL and SMEMBERS may come in another order from the other server (split)
    through = resp3_replies(t.port, READS)
    assert len(through) == len(direct)
    assert through.split(b"\r\n")[0] == b"%3" and sorted(through.split(b"\r\n")) == \
        sorted(direct.split(b"\r\n"))
    if mode != "split":
        assert through == direct
    check_shadow_clean(t, mode, min_match=8)


def test_resp3_writes_mirrored_and_compared(t, mode, redis_primary, redis_shadow):
    out = resp3_replies(t.port, SETUP + inline("HGETALL r3:h", "ECHO end"))
    assert out.startswith(b":3\r\n:3\r\n:1\r\n+OK\r\n:2\r\n%3\r\n")
    if mode == "shadow":
        check_shadow_clean(t, mode, min_match=6)
        wait_until(lambda: redis_primary.digest() == redis_shadow.digest(), 30,
                   "the shadow to hold the same data")


def test_client_tracking_invalidation_push(t, mode, redis_shadow):
    r = Raw(t.port)
    r.send(["HELLO", "3"])
    r.reply()
    r.send(["CLIENT", "TRACKING", "ON"], ["GET", "r3:tracked"])
    assert r.reply() == ("OK", 0)
    assert r.reply() == (None, 0)
    tandem_client(t).set("r3:tracked", "changed")  # another session, through tandem
    # the invalidation arrives alone, between replies: then the next reply
    push, _ = r.reply()
    assert push == [b"invalidate", [b"r3:tracked"]]
    if mode != "passthrough":
        # the other session's write reaches the shadow on its own connection: the read
        # below (compared, or answered by the shadow in split mode) must not overtake it
        wait_until(lambda: redis_shadow.client().get("r3:tracked") == b"changed", 30,
                   "the other session's write on the shadow")
    r.send(["GET", "r3:tracked"], ["PING"])
    assert r.reply() == (b"changed", 0)
    assert r.reply() == ("PONG", 0)
    # a push arriving while replies are owed keeps its place in the stream
    r.send(["SET", "r3:tracked", "again"], ["PING"])
    got = [r.reply()[0] for _ in range(3)]
    assert got in (["OK", [b"invalidate", [b"r3:tracked"]], "PONG"],
                   [[b"invalidate", [b"r3:tracked"]], "OK", "PONG"]), got
    r.close()
    check_shadow_clean(t, mode)


def test_redis_cli_resp3(t, mode, redis_primary, redis_shadow):
    for server in (redis_primary, redis_shadow):
        server.client().hset("r3:cli", mapping={"f": "1"})

    def cli(port, *args):
        out = subprocess.run(["redis-cli", "-3", "-p", str(port), *args], capture_output=True,
                             text=True, timeout=20)
        assert out.returncode == 0, out
        return out.stdout
    assert cli(t.port, "hgetall", "r3:cli") == cli(redis_primary.port, "hgetall", "r3:cli")
    assert cli(t.port, "zscore", "r3:none", "m") == cli(redis_primary.port, "zscore", "r3:none", "m")
    # HELLO 2 goes back to RESP2 on the same connection
    r = Raw(t.port)
    r.send(["HELLO", "3"], ["HELLO", "2"], ["HGETALL", "r3:cli"])
    r.reply()
    r.reply()
    assert r.reply() == ([b"f", b"1"], 1)
    r.close()


def test_reattached_shadow_speaks_resp3(tandem, redis_primary, redis_shadow):
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    t = start_redis_tandem(tandem, redis_primary, redis_shadow, mirror=MIRROR_ALL)
    r = Raw(t.port)
    r.send(["HELLO", "3"], ["HSET", "r3:h", "a", "1", "b", "2"])
    r.reply()
    assert r.reply() == (2, 0)
    wait_until(lambda: outcomes(t, listener="r")["match"] >= 1, 30, "the HSET compared")
    # the shadow drops tandem's connection: it re-attaches at an idle point, HELLO 3 first
    redis_shadow.client().client_kill_filter(_type="normal", skipme=True)
    before = outcomes(t, listener="r")["match"]

    def compared_again():
        r.send(["HGETALL", "r3:h"])
        assert r.reply()[0] in ([b"a", b"1", b"b", b"2"], [b"b", b"2", b"a", b"1"])
        wait_drained(t, listener="r")
        return outcomes(t, listener="r")["match"] > before
    wait_until(compared_again, 30, "a comparison on the new shadow connection", interval=0.3)
    got = outcomes(t, listener="r")
    assert got["mismatch"] == 0 and got["shadow_error"] == 0, (got, report(t)["samples"])
    r.close()


def test_resp3_and_client_reply_survive_cutover(tandem):
    from harness.adminapi import run_operation
    from harness.redisserver import RedisServer
    primary, shadow = RedisServer("r3-primary").start(), RedisServer("r3-shadow").start()
    try:
        t = start_redis_tandem(tandem, primary, shadow, mirror={"reads": "0%", "timeout": "10s"})
        r = Raw(t.port)
        r.send(["HELLO", "3"], ["CLIENT", "REPLY", "OFF"], ["HSET", "r3:c", "a", "1"],
               ["PING"])
        assert isinstance(r.reply()[0], list)  # HELLO's map; nothing more while OFF
        wait_drained(t, listener="r")
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        # the idle session swapped: green answers it, in RESP3, and its replies are still off
        r.send(["HSET", "r3:c", "b", "2"], ["CLIENT", "REPLY", "ON"],
               ["CONFIG", "GET", "port"], ["HGETALL", "r3:c"])
        assert r.reply() == ("OK", 0)  # CLIENT REPLY ON's: the first reply since OFF
        port, _ = r.reply()
        assert port == [b"port", str(shadow.port).encode()]  # a map: RESP3 on the new primary
        fields, _ = r.reply()
        assert sorted(zip(fields[::2], fields[1::2])) == [(b"a", b"1"), (b"b", b"2")]
        assert r.pending() == b""  # nothing more: no reply of the silenced commands
        r.close()
    finally:
        primary.stop()
        shadow.stop()
