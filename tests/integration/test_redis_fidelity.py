"""Redis through tandem as Redis itself answers: replies nested as deep as a
Lua script makes them, UNSUBSCRIBE's one reply per channel, CLIENT REPLY
OFF|SKIP|ON, MONITOR's stream.  Each in passthrough and in shadow mode,
where the shadow's replies must pair with the mirrored commands too.

No test asserts a duration: every wait is an upper bound.
"""
import socket
import subprocess

import pytest

from harness.redisserver import start_redis_mode, tandem_client
from harness.shadow import outcomes, report, wait_drained
from harness.util import wait_until

@pytest.fixture(params=["passthrough", "shadow"])
def mode(request):
    return request.param


@pytest.fixture
def t(tandem, redis_primary, redis_shadow, mode):
    return start_redis_mode(tandem, redis_primary, redis_shadow, mode)


def check_shadow_clean(t, mode, min_match=1):
    """In shadow mode: every compared command matched, none failed or was dropped."""
    if mode != "shadow":
        return
    wait_drained(t, listener="r")
    wait_until(lambda: outcomes(t, listener="r")["match"] >= min_match, 30,
               f"{min_match} comparisons recorded")
    got = outcomes(t, listener="r")
    for o in ("mismatch", "shadow_error", "shadow_timeout", "dropped"):
        assert got[o] == 0, (o, got, report(t)["samples"])


class Raw:
    """A plain socket speaking RESP, reading exactly what is expected."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=20)
        self.buf = b""

    def send(self, *commands):
        out = b""
        for args in commands:
            out += b"*%d\r\n" % len(args)
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"closed; had {self.buf[:200]!r}")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self):
        """One reply, iteratively (a deep one must not exhaust Python's stack): (value, depth).

        RESP3 too: a map, set or push is a list (a map's keys and values in turn)."""
        stack, depth, value = [], 0, None
        while True:
            line = self.line()
            kind, rest = line[:1], line[1:]
            if kind in (b"*", b"%", b"~", b">") and rest != b"-1" and int(rest) > 0:
                stack.append([int(rest) * (2 if kind == b"%" else 1), []])
                depth = max(depth, len(stack))
                continue
            if kind in (b"$", b"=", b"!") and int(rest) >= 0:
                n = int(rest)
                while len(self.buf) < n + 2:
                    self.buf += self.sock.recv(65536)
                value, self.buf = self.buf[:n], self.buf[n + 2:]
            elif kind in (b"*", b"%", b"~", b">", b"$"):
                value = [] if rest == b"0" else None
            elif kind in (b":", b"("):
                value = int(rest)
            elif kind == b"_":
                value = None
            elif kind == b"#":
                value = rest == b"t"
            elif kind in (b"+", b","):
                value = rest.decode()
            else:
                value = line.decode()  # an error keeps its "-"
            while stack:
                stack[-1][1].append(value)
                stack[-1][0] -= 1
                if stack[-1][0] > 0:
                    break
                value = stack.pop()[1]
            if not stack:
                return value, depth

    def pending(self, timeout=0.5):
        """What arrives within timeout beyond what was read (b"" when nothing)."""
        self.sock.settimeout(timeout)
        try:
            self.buf += self.sock.recv(65536)
        except socket.timeout:
            pass
        finally:
            self.sock.settimeout(20)
        return self.buf

    def close(self):
        self.sock.close()


# -- nesting ---------------------------------------------------------------------

RECURSIVE = "local a = {}; local b = {a}; a[1] = b; return a"


def test_deeply_nested_script_reply(t, mode, redis_primary):
    # what redis-server itself sends, read directly
    direct = Raw(redis_primary.port)
    direct.send(["EVAL", RECURSIVE, 0])
    _, direct_depth = direct.reply()
    direct.close()
    assert direct_depth > 128  # deeper than tandem used to accept

    r = Raw(t.port)
    r.send(["EVAL", RECURSIVE, 0], ["PING"])
    value, depth = r.reply()
    assert depth == direct_depth
    inner = value
    while isinstance(inner, list):
        inner = inner[0]
    assert "reached lua stack limit" in inner
    assert r.reply() == ("PONG", 0)  # the connection goes on
    # a wide one too: unpack of many values, each level its own count
    r.send(["EVAL", "local t = {} for i = 1, 5000 do t[i] = {i, {i}} end return t", 0])
    value, depth = r.reply()
    assert len(value) == 5000 and value[4999] == [5000, [5000]] and depth == 3
    r.close()
    check_shadow_clean(t, mode, min_match=2)


# -- reply accounting: byte for byte what redis-server sends -------------------------

def inline(*lines):
    return b"".join(line.encode() + b"\r\n" for line in lines)


# Commands whose replies differ from one per request, and CLIENT REPLY in every
# combination Redis knows (SKIP of SKIP, OFF then SKIP, errors, empty commands).
SCRIPT = inline(
    "UNSUBSCRIBE", "UNSUBSCRIBE a b c", "PUNSUBSCRIBE", "PUNSUBSCRIBE p* q*", "SUNSUBSCRIBE s1 s2",
    "SET f:k 1", "CLIENT REPLY SKIP", "INCR f:k", "GET f:k",
    "CLIENT REPLY SKIP", "CLIENT REPLY SKIP", "ECHO skipped", "ECHO shown-1",
    "CLIENT REPLY FOO", "CLIENT REPLY", "CLIENT REPLY SKIP x",
    "CLIENT REPLY SKIP", "NOSUCHCOMMAND", "ECHO shown-2",
    "CLIENT REPLY SKIP", "CLIENT REPLY ON", "ECHO shown-3",
    "CLIENT REPLY OFF", "INCR f:k", "RPUSH f:l a b c", "ECHO hidden", "NOSUCHCOMMAND",
    "CLIENT REPLY SKIP", "UNSUBSCRIBE x y", "CLIENT REPLY ON", "GET f:k", "LRANGE f:l 0 -1",
    "CLIENT REPLY SKIP") + b"*0\r\n" + inline("ECHO after-empty-multibulk", "CLIENT REPLY SKIP",
                                              "", "ECHO after-blank-line",
                                              "client reply off", "set f:quiet yes",
                                              "Client Reply On", "GET f:quiet", "ECHO end")
END = b"$3\r\nend\r\n"


def run_script(port, script=SCRIPT, end=END):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(script)
        out = b""
        while not out.endswith(end):
            chunk = s.recv(65536)
            assert chunk, f"closed after {out!r}"
            out += chunk
        return out


def test_reply_accounting_byte_for_byte(t, mode, redis_primary, redis_shadow):
    direct = run_script(redis_primary.port)
    assert b"skipped" not in direct and b"hidden" not in direct and b"shown-3" in direct
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    through = run_script(t.port)
    assert through == direct
    # the session goes on, and so does a new one
    assert run_script(t.port, inline("PING", "ECHO end")) == b"+PONG\r\n" + END
    if mode == "shadow":
        check_shadow_clean(t, mode, min_match=5)  # writes under OFF and SKIP compared too
        wait_until(lambda: redis_primary.digest() == redis_shadow.digest(), 30,
                   "the shadow to hold the same data")
        assert redis_shadow.client().get("f:k") == b"3"


def test_client_reply_inside_multi_keeps_exec_whole(t, mode, redis_shadow):
    # Redis itself would cut EXEC's array short; tandem keeps every server ON
    out = run_script(t.port, inline("MULTI", "CLIENT REPLY OFF", "SET f:tx 1", "EXEC",
                                    "ECHO end"))
    assert out == b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n" + END
    if mode == "shadow":
        check_shadow_clean(t, mode)
        wait_until(lambda: redis_shadow.client().get("f:tx") == b"1", 30, "the mirrored EXEC")


def test_unsubscribe_without_subscriptions_redis_py(t, mode):
    c = tandem_client(t)
    p = c.pubsub()
    p.unsubscribe("a", "b")
    p.punsubscribe()
    # not subscribed, get_message() would not read: the replies themselves
    got = [p.parse_response(block=True, timeout=10) for _ in range(3)]
    assert got == [[b"unsubscribe", b"a", 0], [b"unsubscribe", b"b", 0],
                   [b"punsubscribe", None, 0]]
    c.set("f:after", "ok")
    assert c.get("f:after") == b"ok"
    p.close()
    check_shadow_clean(t, mode)


# -- MONITOR -------------------------------------------------------------------------

def test_monitor_stream_relayed(t, mode, redis_primary):
    mon = subprocess.Popen(["redis-cli", "-p", str(t.port), "monitor"], stdout=subprocess.PIPE,
                           text=True)
    try:
        assert mon.stdout.readline().strip() == "OK"
        c = tandem_client(t)
        direct = redis_primary.client()
        seen = []

        def saw(needle):
            c.set("f:mon", needle)
            direct.get(needle)  # a command of another client, not through tandem
            line = mon.stdout.readline()
            seen.append(line)
            return any(needle in ln for ln in seen) and any(f'"GET" "{needle}"' in ln
                                                            for ln in seen)
        wait_until(lambda: saw("marker-1"), 30, "MONITOR lines for both clients")
    finally:
        mon.terminate()
        mon.wait(10)
    c.set("f:mon", "after")
    assert c.get("f:mon") == b"after"
    check_shadow_clean(t, mode)


# -- RESP3 attributes (Redis's suite: unit/protocol "RESP3 attributes") --------------

def test_resp3_attribute_relayed(t, mode, redis_primary):
    # DEBUG PROTOCOL attrib: an attribute (|1 ...) before the reply it describes
    script = inline("HELLO 3", "DEBUG PROTOCOL attrib", "ECHO end")
    direct = run_script(redis_primary.port, script)
    assert b"|1\r\n" in direct
    assert run_script(t.port, script).split(b"|1\r\n", 1)[1] == direct.split(b"|1\r\n", 1)[1]
    # in RESP2 Redis leaves the attribute out
    assert run_script(t.port, inline("DEBUG PROTOCOL attrib", "ECHO end")) == \
        run_script(redis_primary.port, inline("DEBUG PROTOCOL attrib", "ECHO end"))


# -- the replication stream (Redis's suite: attach_to_replication_stream) ------------

@pytest.mark.parametrize("handshake", [b"SYNC\r\n", b"PSYNC ? -1\r\n"])
def test_replication_stream_relayed(t, mode, handshake):
    r = Raw(t.port)
    r.sock.sendall(handshake)
    line = b""
    while not line.startswith(b"$"):  # +FULLRESYNC for PSYNC; bare newlines are pings
        line = r.line().lstrip(b"\n")
    n = int(line[1:])
    while len(r.buf) < n:  # the RDB payload, not followed by CRLF
        r.buf += r.sock.recv(65536)
    assert r.buf[:5] == b"REDIS"
    r.buf = r.buf[n:]
    c = tandem_client(t)
    c.set("f:repl", "streamed")
    want = b"$6\r\nf:repl\r\n$8\r\nstreamed\r\n"
    wait_until(lambda: want in r.pending(1), 30, "the SET in the replication stream")
    assert c.get("f:repl") == b"streamed"  # other clients go on
    r.close()
    check_shadow_clean(t, mode)


# -- server commands queued in MULTI (Redis's suite: unit/multi "MULTI / EXEC with REPLICAOF")

def test_server_commands_in_multi_stay_on_the_primary(tandem, redis_primary, redis_shadow):
    t = start_redis_mode(tandem, redis_primary, redis_shadow, "shadow")
    c = tandem_client(t)
    before = redis_shadow.client().config_get("maxmemory-samples")["maxmemory-samples"]
    tx = c.pipeline(transaction=True)
    tx.set("f:tx", "a")
    tx.execute_command("REPLICAOF", "127.0.0.1", "1")  # a master that is not there
    tx.execute_command("CONFIG", "SET", "maxmemory-samples", "7")
    tx.set("f:tx2", "b")
    assert tx.execute() == [True, b"OK", b"OK", True]
    assert redis_primary.client().info("replication")["role"] == "slave"
    c.execute_command("REPLICAOF", "NO", "ONE")
    c.execute_command("CONFIG", "SET", "maxmemory-samples", before)
    c.set("f:after", "c")
    wait_drained(t, listener="r")
    sh = redis_shadow.client()
    assert sh.info("replication")["role"] == "master"  # never told to replicate
    assert sh.config_get("maxmemory-samples")["maxmemory-samples"] == before
    assert sh.mget("f:tx", "f:tx2", "f:after") == [b"a", b"b", b"c"]
    got = outcomes(t, listener="r")
    assert got["shadow_error"] == 0 and got["mismatch"] == 0 and got["noise"] >= 1, got


# -- QUIT (Redis's suite: unit/quit) ---------------------------------------------------

def until_closed(port, data):
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(data)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def test_nothing_after_quit_runs(t, mode, redis_primary, redis_shadow):
    script = inline("SET f:before 1", "QUIT", "SET f:quit no", "INCR f:before")
    direct = until_closed(redis_primary.port, script)
    assert direct == b"+OK\r\n+OK\r\n"
    redis_primary.client().flushall()
    assert until_closed(t.port, script) == direct  # no error for the commands after it
    c = tandem_client(t)
    assert c.get("f:before") == b"1" and c.get("f:quit") is None
    if mode == "shadow":
        check_shadow_clean(t, mode)
        assert redis_shadow.client().get("f:quit") is None  # not mirrored either
        assert redis_shadow.client().get("f:before") == b"1"
