"""Redis shadow mode with ACL users: the shadow acts as the client, never as tandem.

Both servers have a password for the default user (tandem's own login, set
as the backends' `password`) and the client's ACL users.  A client that
logged in on the primary as a restricted user must never get more on the
shadow, nor, after a cutover, on the new primary: the shadow connection logs
in as the client (its AUTH mirrored in turn, replayed on a new connection).

Each test has servers of its own (ACL users differ).  No test asserts a
duration: every wait is an upper bound.
"""
import socket
import time

import pytest
import redis

from harness.adminapi import run_operation
from harness.redisserver import RedisServer, start_redis_tandem, tandem_client
from harness.shadow import listener_report, outcomes, report, wait_drained
from harness.util import wait_until

ADMIN_PW = "adminpw-7f3"
BASE = ["on", ">readerpw-91c", "~*", "+get", "+auth", "+hello", "+ping", "+select", "+client"]
READER = ("reader", "readerpw-91c")
MIRROR = {"reads": "100%", "queue": "4MB", "timeout": "5s"}
TANDEM_LOGINS = f"password {ADMIN_PW};"


def servers(name, primary_users, shadow_users):
    primary = RedisServer(f"{name}-primary", password=ADMIN_PW, users=primary_users).start()
    try:
        shadow = RedisServer(f"{name}-shadow", password=ADMIN_PW, users=shadow_users).start()
    except BaseException:
        primary.stop()
        raise
    for server in (primary, shadow):
        server.client().set("seed", "planted")
    return primary, shadow


@pytest.fixture
def stop_after():
    started = []
    yield started
    for server in started:
        server.stop()


def start(tandem, primary, shadow, **kw):
    return start_redis_tandem(tandem, primary, shadow, mirror=MIRROR, primary_extra=TANDEM_LOGINS,
                              shadow_extra=TANDEM_LOGINS, **kw)


def dropped(t, reason):
    return t.metric("tandem_shadow_mirror_dropped_total", listener="r", reason=reason) or 0


def keyspace(server):
    return sorted(server.client().keys("*"))


def acl_denials(server, user):
    """The keys ACL LOG says USER was refused on SERVER."""
    return {e["object"] for e in server.client().acl_log() if e["username"] == user}


def raw_session(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    return s, s.makefile("rb")


def test_restricted_client_acts_as_itself_on_the_shadow(tandem, stop_after):
    # the shadow's copy of the user is stricter (no strict:*): a mirrored write it runs
    # as the client is refused there, where tandem's own login would have run it
    primary, shadow = servers("ident-reader",
                              {"reader": BASE + ["(~allowed:* ~strict:* +set)"]},
                              {"reader": BASE + ["(~allowed:* +set)"]})
    stop_after += [primary, shadow]
    t = start(tandem, primary, shadow)
    before = outcomes(t, listener="r")
    c = tandem_client(t, username=READER[0], password=READER[1])
    assert c.get("seed") == b"planted"
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.set("seed", "overwritten")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.flushall()
    assert c.set("allowed:x", "1")
    assert c.set("strict:y", "1")  # the primary's copy of the user may
    # the same with HELLO 2 AUTH on a connection of its own
    sock, f = raw_session(t.port)
    with sock:
        sock.sendall(b"HELLO 2 AUTH reader readerpw-91c\r\nSET strict:z 1\r\nSET allowed:z 1\r\n")
        hello = f.readline()
        assert hello.startswith(b"*"), hello
        for _ in range(int(hello[1:]) // 2):  # the map's fields: name and value lines
            for _ in range(2):
                line = f.readline()
                if line[:1] == b"$":
                    f.readline()
                elif line[:1] == b"*":  # modules: an empty array
                    assert line == b"*0\r\n", line
        assert f.readline() == b"+OK\r\n" and f.readline() == b"+OK\r\n"
    wait_drained(t, listener="r")
    assert keyspace(primary) == [b"allowed:x", b"allowed:z", b"seed", b"strict:y", b"strict:z"]
    assert keyspace(shadow) == [b"allowed:x", b"allowed:z", b"seed"]
    assert shadow.client().get("seed") == b"planted"
    assert shadow.client().get("allowed:x") == b"1"
    # the shadow refused them to the user "reader": they ran as the client
    assert {"strict:y", "strict:z"} <= acl_denials(shadow, "reader")
    got = outcomes(t, listener="r")
    assert got["shadow_error"] - before["shadow_error"] == 2, report(t)["samples"]
    assert got["mismatch"] - before["mismatch"] == 0
    assert dropped(t, "identity") == 0
    assert "readerpw" not in t.log()


def test_full_rights_client_mirrored(tandem, stop_after):
    writer = ["on", ">writerpw-5d2", "~*", "&*", "+@all"]
    primary, shadow = servers("ident-writer", {"writer": writer}, {"writer": writer})
    stop_after += [primary, shadow]
    t = start(tandem, primary, shadow)
    for c in (tandem_client(t, username="writer", password="writerpw-5d2"),
              tandem_client(t, password=ADMIN_PW)):  # AUTH <password>: the default user
        prefix = "w" if c.connection_pool.connection_kwargs.get("username") else "d"
        c.set(f"{prefix}:s", "one")
        c.incrby(f"{prefix}:n", 5)
        c.hset(f"{prefix}:h", mapping={"f1": "v1", "f2": "v2"})
        c.rpush(f"{prefix}:l", *range(20))
        with c.pipeline(transaction=True) as p:
            p.incr(f"{prefix}:tx").sadd(f"{prefix}:set", "a", "b").execute()
        assert c.get(f"{prefix}:s") == b"one"
    # RESET logs out both connections; the shadow's logs in again with tandem's password
    sock, f = raw_session(t.port)
    with sock:
        sock.sendall(b"AUTH writer writerpw-5d2\r\nSET r:1 a\r\nRESET\r\nGET r:1\r\n"
                     b"AUTH writer writerpw-5d2\r\nSET r:2 b\r\n")
        assert [f.readline() for _ in range(3)] == [b"+OK\r\n", b"+OK\r\n", b"+RESET\r\n"]
        assert f.readline().startswith(b"-NOAUTH")
        assert [f.readline() for _ in range(2)] == [b"+OK\r\n", b"+OK\r\n"]
    wait_drained(t, listener="r")
    wait_until(lambda: primary.digest() == shadow.digest(), 30, "DEBUG DIGEST equal")
    got = outcomes(t, listener="r")
    assert got["match"] > 10
    for o in ("mismatch", "shadow_error", "shadow_timeout", "dropped"):
        assert got[o] == 0, (o, report(t)["samples"])
    assert dropped(t, "identity") == 0
    assert "writerpw" not in t.log() and ADMIN_PW not in t.log()


def test_reattached_shadow_logs_in_as_the_client(tandem, stop_after):
    primary, shadow = servers("ident-back",
                              {"reader": BASE + ["(~allowed:* ~strict:* +set)"]},
                              {"reader": BASE + ["(~allowed:* +set)"]})
    stop_after += [primary, shadow]
    t = start(tandem, primary, shadow)
    c = tandem_client(t, username=READER[0], password=READER[1], single_connection_client=True)
    c.set("allowed:1", "a")
    wait_drained(t, listener="r")
    shadow.kill()
    c.set("allowed:2", "b")  # the shadow is gone: detached
    wait_until(lambda: t.metric("tandem_shadow_detached_sessions", listener="r") >= 1, 20,
               "the session to detach")
    shadow.start()  # same port, empty, the same ACL users

    def reattached():
        c.set("allowed:3", "c")
        return shadow.client().get("allowed:3") == b"c"
    wait_until(reattached, 90, "the session to re-attach (back-off)", interval=0.5)
    before = outcomes(t, listener="r")["shadow_error"]
    c.set("strict:after", "x")  # the primary's copy of the user may, the shadow's may not
    wait_drained(t, listener="r")
    assert shadow.client().get("strict:after") is None
    assert primary.client().get("strict:after") == b"x"
    assert "strict:after" in acl_denials(shadow, "reader")
    assert outcomes(t, listener="r")["shadow_error"] == before + 1
    assert dropped(t, "identity") == 0


def test_cutover_keeps_the_clients_rights(tandem, stop_after):
    primary, shadow = servers("ident-cut", {"reader": BASE}, {"reader": BASE})
    stop_after += [primary, shadow]
    t = start(tandem, primary, shadow)
    c = tandem_client(t, username=READER[0], password=READER[1], single_connection_client=True)
    assert c.get("seed") == b"planted"
    sock = c.connection._sock
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.set("k", "v")
    wait_drained(t, listener="r")
    assert acl_denials(shadow, "reader") == set()  # the refused SET was not mirrored
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    # the same connection, now answered by the former shadow: still the reader's rights
    assert c.get("seed") == b"planted"
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.set("k", "v")
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.flushall()
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.execute_command("CONFIG", "GET", "port")
    assert c.connection._sock is sock  # not reconnected
    # the server answering it is the new primary: it refused the commands to "reader"
    assert {"set", "flushall", "config|get"} <= acl_denials(shadow, "reader")
    op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    with pytest.raises(redis.exceptions.NoPermissionError):
        c.flushall()
    assert c.get("seed") == b"planted"
    assert c.connection._sock is sock
    for server in (primary, shadow):
        assert keyspace(server) == [b"seed"]


def test_cutover_closes_a_client_that_never_logged_in(tandem, stop_after):
    # the primary wants a password the client never gave: the shadow connection, logged in
    # with tandem's password, must not become its primary connection
    primary, shadow = servers("ident-anon", {}, {})
    stop_after += [primary, shadow]
    t = start(tandem, primary, shadow)
    sock, f = raw_session(t.port)
    with sock:
        sock.sendall(b"GET seed\r\n")
        assert f.readline().startswith(b"-NOAUTH"), "the primary wants a password"
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        line = f.readline()
        assert line.startswith(b"-ERR tandem: the primary changed (cutover)"), line
        assert f.read() == b""  # closed
    assert tandem_client(t, password=ADMIN_PW).get("seed") == b"planted"


def test_client_unknown_to_the_shadow_is_not_mirrored(tandem, stop_after):
    ghost = ["on", ">ghostpw-3a8", "~*", "&*", "+@all"]
    primary, shadow = servers("ident-ghost", {"ghost": ghost}, {})
    stop_after += [primary, shadow]
    t = start(tandem, primary, shadow)
    c = tandem_client(t, username="ghost", password="ghostpw-3a8", single_connection_client=True)
    c.set("ghost:1", "a")
    wait_until(lambda: dropped(t, "identity") >= 1, 20, "mirrors dropped for the identity")
    wait_until(lambda: t.metric("tandem_shadow_detached_sessions", listener="r") == 1, 20,
               "the session to count as detached")
    n = dropped(t, "identity")
    time.sleep(1.5)  # past the first re-attach back-off: it must not re-attach
    c.set("ghost:2", "b")
    c.hset("ghost:h", "f", "v")
    assert c.get("ghost:1") == b"a"  # a read, not mirrored any more either (100% sampled)
    wait_until(lambda: dropped(t, "identity") >= n + 3, 20, "the later mirrors counted")
    assert dropped(t, "identity") == n + 3
    assert keyspace(shadow) == [b"seed"]
    assert keyspace(primary) == [b"ghost:1", b"ghost:2", b"ghost:h", b"seed"]
    assert listener_report(report(t), "r")["diverged"] is True
    log = t.log()
    refusals = [ln for ln in log.splitlines() if "refused the client's login" in ln]
    assert len(refusals) == 1, refusals
    assert 'login as "ghost"' in refusals[0] and "WRONGPASS" in refusals[0], refusals[0]
    assert "ghostpw" not in log
    # a full-rights client that the shadow knows is mirrored as before, beside it
    other = tandem_client(t, password=ADMIN_PW)
    other.set("admin:k", "v")
    wait_drained(t, listener="r")
    assert shadow.client().get("admin:k") == b"v"
    # cutover (forced: the shadow is diverged): the ghost cannot be carried over
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000, "force": True})
    assert op["state"] == "completed", op
    with pytest.raises(redis.exceptions.ResponseError, match=r"primary changed \(cutover\)"):
        c.get("ghost:1")
    with pytest.raises(redis.exceptions.ConnectionError):
        c.get("ghost:1")
    assert other.get("admin:k") == b"v"
