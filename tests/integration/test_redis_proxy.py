"""Redis passthrough: real redis-server behind tandem, real clients in front.

Pipelines answered in order, AUTH/HELLO relayed, pub/sub and BLPOP, bad
input costing one connection, an unreachable primary named in the error,
the `tandem redis ...` command line.  No test asserts a duration.
"""
import socket
import subprocess
import threading

import pytest
import redis

from harness.redisserver import (RedisServer, redis_config, start_redis_tandem,
                                 tandem_client)
from harness.util import free_port, wait_until


@pytest.fixture(scope="module")
def t(tandem_module, redis_primary):
    return start_redis_tandem(tandem_module, redis_primary)


def raw(port, data, read_until_close=True, timeout=10):
    """Send bytes on a fresh connection; return what came back until close (or timeout)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        out = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    return out, True
                out += chunk
                if not read_until_close:
                    return out, False
        except socket.timeout:
            return out, False


def test_commands_and_pipeline_in_order(t):
    c = tandem_client(t)
    assert c.ping()
    c.set("p:k", "v")
    assert c.get("p:k") == b"v"
    c.delete("p:n")
    pipe = c.pipeline(transaction=False)
    for i in range(2000):
        pipe.incr("p:n")
        pipe.echo(f"e{i}")
    replies = pipe.execute()
    assert replies[0::2] == list(range(1, 2001))
    assert replies[1::2] == [f"e{i}".encode() for i in range(2000)]
    # large values stream through both ways
    big = b"x" * (3 << 20)
    c.set("p:big", big)
    assert c.get("p:big") == big
    assert t.metric("tandem_requests_total", listener="r", backend="blue", kind="write") >= 2000
    assert t.metric("tandem_requests_total", listener="r", backend="blue", kind="read") >= 2000
    assert t.metric("tandem_bytes_received_total", listener="r") > 3 << 20


def test_inline_and_redis_cli(t):
    out, _ = raw(t.port, b"PING\r\nSET p:inline \"a b\"\r\nGET p:inline\r\nQUIT\r\n")
    assert out == b"+PONG\r\n+OK\r\n$3\r\na b\r\n+OK\r\n"
    cli = subprocess.run(["redis-cli", "-p", str(t.port), "lrange", "p:none", "0", "-1"],
                         capture_output=True, text=True, timeout=20)
    assert cli.returncode == 0 and cli.stdout.strip() == ""
    cli = subprocess.run(["redis-cli", "-p", str(t.port), "hello", "3"], capture_output=True,
                         text=True, timeout=20)
    lines = cli.stdout.split()
    assert "proto" in lines and lines[lines.index("proto") + 1] == "3", cli.stdout  # relayed


def test_multi_exec_and_watch(t):
    c = tandem_client(t)
    with c.pipeline(transaction=True) as pipe:
        pipe.set("p:tx", 1).incr("p:tx").get("p:tx")
        assert pipe.execute() == [True, 2, b"2"]
    # WATCH: a change by another client aborts the transaction
    other = tandem_client(t)
    with c.pipeline(transaction=True) as pipe:
        pipe.watch("p:tx")
        other.set("p:tx", 100)
        pipe.multi()
        pipe.incr("p:tx")
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert c.get("p:tx") == b"100"


def test_pubsub_through_tandem(t):
    sub = tandem_client(t).pubsub()
    sub.subscribe("p:chan")
    msg = sub.get_message(timeout=10)
    assert msg and msg["type"] == "subscribe"
    pub = tandem_client(t)
    wait_until(lambda: pub.publish("p:chan", "hello") == 1, 10, "the subscriber to count")
    got = wait_until(lambda: sub.get_message(timeout=1), 10, "the message")
    assert got["type"] == "message" and got["data"] == b"hello"
    sub.psubscribe("p:*")
    wait_until(lambda: pub.publish("p:chan", "two") == 2, 10, "two subscriptions")
    seen = []
    wait_until(lambda: seen.extend(m["data"] for m in [sub.get_message(timeout=1)] if m)
               or seen.count(b"two") == 2, 10, "both deliveries")
    sub.close()


def test_blpop_through_tandem(t):
    c = tandem_client(t)
    c.delete("p:q")
    result = {}

    def waiter():
        result["v"] = tandem_client(t).blpop("p:q", timeout=20)

    th = threading.Thread(target=waiter)
    th.start()
    wait_until(lambda: any(cl.get("cmd") == "blpop" for cl in c.client_list()), 10,
               "the BLPOP to block")
    c.rpush("p:q", "item")
    th.join(30)
    assert result["v"] == (b"p:q", b"item")


@pytest.mark.parametrize("payload, error", [
    (b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*1\r\n$999999999999\r\n", b"-ERR Protocol error: invalid bulk length\r\n"),
    (b"*99999999999\r\n", b"-ERR Protocol error: invalid multibulk length\r\n"),
    (b"*1\r\nx\r\n", b"-ERR Protocol error: expected '$', got 'x'\r\n"),
    (b"SET a \"b\r\n", b"-ERR Protocol error: unbalanced quotes in request\r\n"),
    (b"A" * (70 * 1024), b"-ERR Protocol error: too big inline request\r\n"),
])
def test_bad_input_closes_only_that_connection(t, payload, error):
    keep = tandem_client(t)
    keep.set("p:alive", "1")
    before = t.metric("tandem_client_errors_total", listener="r", reason="protocol") or 0
    out, closed = raw(t.port, b"PING\r\n" + payload)
    assert out == b"+PONG\r\n" + error
    assert closed
    assert keep.get("p:alive") == b"1"
    assert t.metric("tandem_client_errors_total", listener="r", reason="protocol") >= before + 1


def test_auth_relayed_and_preauth_limits(tandem):
    server = RedisServer("auth", password="s3cret").start()
    try:
        t = start_redis_tandem(tandem, server, primary_extra="password s3cret;")
        anon = tandem_client(t)
        with pytest.raises(redis.AuthenticationError):
            anon.ping()
        c = tandem_client(t, password="s3cret")
        assert c.ping()
        c.set("a:k", "x" * 100000)  # beyond the pre-auth bulk limit, after AUTH
        assert len(c.get("a:k")) == 100000
        out, _ = raw(t.port, b"HELLO 2 AUTH default s3cret\r\nGET a:missing\r\n",
                     read_until_close=False)
        assert out.startswith(b"*")
        # before AUTH: Redis's unauthenticated limits
        out, closed = raw(t.port, b"*2\r\n$3\r\nGET\r\n$20000\r\n")
        assert out == b"-ERR Protocol error: unauthenticated bulk length\r\n" and closed
    finally:
        server.stop()


def test_unreachable_primary_named(tandem):
    dead = RedisServer("dead")  # never started: nobody listens on its port
    t = start_redis_tandem(tandem, dead)
    out, closed = raw(t.port, b"PING\r\n")
    assert out.startswith(b"-ERR tandem: could not connect to backend \"blue\" at 127.0.0.1:")
    assert closed
    dead.stop()


def test_cli_form(tandem, redis_primary, redis_shadow):
    port, admin = free_port(), free_port()
    t = tandem(args=["redis", "--listen", f"127.0.0.1:{port}", "--primary",
                     f"blue={redis_primary.address}", "--shadow", f"green={redis_shadow.address}",
                     "--mode", "shadow", "--mirror-reads", "100%", "--admin",
                     f"127.0.0.1:{admin}"], port=port, admin_port=admin)
    c = tandem_client(t)
    c.set("cli:k", "v")
    assert c.get("cli:k") == b"v"
    wait_until(lambda: redis_shadow.client().get("cli:k") == b"v", 15, "the mirror")
    status, body = t.http("/api/status")
    assert status == 200 and '"protocol": "redis"' in body.replace('":"', '": "')


def test_redis_benchmark_passthrough(t):
    proc = subprocess.run(["redis-benchmark", "-p", str(t.port), "-q", "-n", "20000", "-c", "20",
                           "-P", "8", "-t", "set,get,incr,lpush,mset"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "requests per second" in proc.stdout
    assert "error" not in (proc.stdout + proc.stderr).lower()


def test_config_check_accepts_redis(tandem_bin, redis_primary, tmp_path):
    conf = tmp_path / "r.conf"
    conf.write_text(redis_config(port=free_port(), primary=redis_primary))
    out = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def _closed_by_tandem(sock):
    """True once tandem closed SOCK (EOF within the socket's timeout)."""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except ConnectionResetError:
        return True


def test_silent_clients_closed_after_client_idle_timeout(tandem, redis_primary, redis_shadow):
    """A silent client used to hold its primary and shadow connections for ever.
    With limits { client_idle_timeout 1s; } it is closed (counted as client
    error idle_timeout) - also inside MULTI or after half a command - while a
    subscriber and a client blocked in BLPOP, silent by design, stay."""
    port, admin = free_port(), free_port()
    text = "limits { client_idle_timeout 1s; }\n" + redis_config(
        port=port, admin_port=admin, primary=redis_primary, shadow=redis_shadow)
    t = tandem(config_text=text, port=port, admin_port=admin)

    sub = tandem_client(t).pubsub()
    sub.subscribe("idle:chan")
    assert sub.get_message(timeout=10)["type"] == "subscribe"
    c = tandem_client(t)
    c.delete("idle:q")
    result = {}
    th = threading.Thread(target=lambda: result.update(v=tandem_client(t).blpop("idle:q", 0)))
    th.start()
    wait_until(lambda: any(cl.get("cmd") == "blpop" for cl in c.client_list()), 10,
               "the BLPOP to block")
    c.close()

    silent = []
    for first in (b"PING\r\n", b"MULTI\r\n", b"PING\r\n*2\r\n$3\r\nGET\r\n"):
        s = socket.create_connection(("127.0.0.1", t.port), timeout=30)
        s.sendall(first)
        assert s.recv(100).startswith(b"+"), first
        silent.append(s)
    for s in silent:
        assert _closed_by_tandem(s)
        s.close()
    t.wait_metric("tandem_client_errors_total", 3, reason="idle_timeout")
    assert "closing: nothing received for 1 s (client_idle_timeout)" in t.log()

    # the silent-by-design ones are still served
    pub = tandem_client(t)
    assert pub.publish("idle:chan", "still here") == 1
    got = wait_until(lambda: sub.get_message(timeout=1), 10, "the message")
    assert got["data"] == b"still here"
    pub.rpush("idle:q", "item")
    th.join(30)
    assert result["v"] == (b"idle:q", b"item")
    sub.close()


@pytest.mark.parametrize("payload", [
    b"*1\r\n$2000000\r\n",                        # one bulk announced above the limit
    b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1048577\r\n",  # the third argument
    b"*8000000\r\n$1\r\na\r\n",                   # 8 million arguments: 48 MB at least
], ids=["bulk", "third_arg", "many_args"])
def test_command_above_max_command_size_is_refused_at_once(tandem, redis_primary, payload):
    """An incomplete command used to be buffered whole whatever its size (a
    300 MB bulk: +357 MiB) and parsed again at every read (8M arguments: 48 s
    of CPU).  Past limits { max_command_size } it is refused as soon as its
    announced size shows, in Redis's form, and only that connection ends."""
    port, admin = free_port(), free_port()
    text = "limits { max_command_size 1MB; }\n" + redis_config(
        port=port, admin_port=admin, primary=redis_primary)
    t = tandem(config_text=text, port=port, admin_port=admin)
    keeper = tandem_client(t)
    assert keeper.ping()
    out, closed = raw(t.port, payload)
    assert out == (b"-ERR Protocol error: command longer than tandem's max_command_size "
                   b"(1048576 bytes)\r\n"), out
    assert closed
    t.wait_metric("tandem_client_errors_total", 1, reason="protocol")
    # just below the limit works, in pieces
    big = b"x" * (1024 * 1024 - 100)
    assert keeper.set("mcs:big", big)
    assert keeper.get("mcs:big") == big
