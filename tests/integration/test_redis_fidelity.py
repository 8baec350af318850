"""Redis through tandem as Redis itself answers: replies nested as deep as a
Lua script makes them, UNSUBSCRIBE's one reply per channel, CLIENT REPLY
OFF|SKIP|ON, MONITOR's stream.  Each in passthrough and in shadow mode,
where the shadow's replies must pair with the mirrored commands too.

No test asserts a duration: every wait is an upper bound.
"""
import socket
import subprocess

import pytest
import redis

from harness.redisserver import start_redis_tandem, tandem_client
from harness.shadow import outcomes, report, wait_drained
from harness.util import wait_until

MIRROR_ALL = {"reads": "100%", "queue": "4MB", "timeout": "5s"}


@pytest.fixture(params=["passthrough", "shadow"])
def mode(request):
    return request.param


@pytest.fixture
def t(tandem, redis_primary, redis_shadow, mode):
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    if mode == "passthrough":
        return start_redis_tandem(tandem, redis_primary)
    return start_redis_tandem(tandem, redis_primary, redis_shadow, mirror=MIRROR_ALL)


def check_shadow_clean(t, mode, min_match=1):
    """In shadow mode: every compared command matched, none failed or was dropped."""
    if mode != "shadow":
        return
    wait_drained(t, listener="r")
    got = outcomes(t, listener="r")
    assert got["match"] >= min_match, got
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
        """One reply, iteratively (a deep one must not exhaust Python's stack): (value, depth)."""
        stack, depth, value = [], 0, None
        while True:
            line = self.line()
            kind, rest = line[:1], line[1:]
            if kind == b"*" and int(rest) > 0:
                stack.append([int(rest), []])
                depth = max(depth, len(stack))
                continue
            if kind == b"$" and int(rest) >= 0:
                n = int(rest)
                while len(self.buf) < n + 2:
                    self.buf += self.sock.recv(65536)
                value, self.buf = self.buf[:n], self.buf[n + 2:]
            elif kind == b"*" or kind == b"$":
                value = [] if rest == b"0" else None
            elif kind == b":":
                value = int(rest)
            elif kind == b"+":
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
