#!/usr/bin/python3
"""idle_client.py - open many idle PostgreSQL client connections to a proxy
and measure the proxy's resident memory growth per connection.

    idle_client.py --port P --pid PID --count N --mode login|tcp|redis [--settle S]

--mode login: each connection sends a StartupMessage (user/database
              postgres, `trust` auth expected), waits for ReadyForQuery and
              runs one `SELECT 1`, so the proxy holds a logged-in session
              and, behind it, a backend connection.
--mode tcp:   each connection is only connected: the proxy holds a client
              that has not sent its startup packet yet.
--mode redis: each connection sends one PING and reads +PONG (RESP2), so
              a Redis proxy holds an active client session.

VmRSS of PID (from /proc/PID/status) is read after WARMUP connections
were opened and closed, before the first measured one, and SETTLE seconds after the last one; the connections are all still open
then (the ones the proxy closed meanwhile are counted).  Prints one line of
key=value pairs.  Standard library only; loopback only.
"""
import argparse
import os
import resource
import select
import socket
import struct
import sys
import time


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def startup_packet(user, database):
    body = struct.pack("!I", 196608)
    for k, v in (("user", user), ("database", database), ("application_name", "idle_client")):
        body += k.encode() + b"\0" + v.encode() + b"\0"
    body += b"\0"
    return struct.pack("!I", len(body) + 4) + body


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed by server")
        buf += chunk
    return buf


def until_ready(s):
    """Read messages up to ReadyForQuery; raise on an error or a password request."""
    while True:
        kind = recv_exact(s, 1)
        (length,) = struct.unpack("!I", recv_exact(s, 4))
        if length < 4 or length > 1 << 20:
            raise ConnectionError("bad message length %d" % length)
        body = recv_exact(s, length - 4)
        if kind == b"E":
            raise ConnectionError("server error: %r" % body[:200])
        if kind == b"R" and struct.unpack("!I", body[:4])[0] != 0:
            raise ConnectionError("server asks for a password (not trust auth)")
        if kind == b"Z":
            return


def redis_ping(s):
    """One PING and its +PONG: the proxy has an active session for s."""
    s.sendall(b"*1\r\n$4\r\nPING\r\n")
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(64)
        if not chunk:
            raise ConnectionError("closed by server")
        buf += chunk
    if buf != b"+PONG\r\n":
        raise ConnectionError("unexpected reply %r" % buf[:100])


def login(s, user, database):
    """Complete a trust login, then run one query: a pooler in session mode
    (PgBouncer) assigns its server connection at the first query, not at
    login, so only then does each side hold what a live session holds."""
    s.sendall(startup_packet(user, database))
    until_ready(s)
    q = b"SELECT 1\0"
    s.sendall(b"Q" + struct.pack("!I", len(q) + 4) + q)
    until_ready(s)


def still_open(socks):
    """Count sockets the peer has not closed (nothing readable = still idle)."""
    open_ = 0
    for i in range(0, len(socks), 512):
        part = socks[i:i + 512]
        p = select.poll()
        for s in part:
            p.register(s, select.POLLIN | select.POLLHUP | select.POLLERR)
        ready = {fd for fd, _ in p.poll(0)}
        for s in part:
            if s.fileno() not in ready:
                open_ += 1
                continue
            try:
                data = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                if data:
                    open_ += 1  # an unsolicited message, but still open
            except (BlockingIOError, InterruptedError):
                open_ += 1
            except OSError:
                pass
    return open_


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True, help="proxy process to measure")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--mode", choices=("login", "tcp", "redis"), required=True)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--warmup", type=int, default=1, help="connections opened and closed first")
    ap.add_argument("--user", default="postgres")
    ap.add_argument("--database", default="postgres")
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        sys.exit("idle_client: loopback only")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, a.count + 256) if hard != resource.RLIM_INFINITY else a.count + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))

    # Warm up: the proxy's first client may allocate per-process state
    # (pools, caches) that is not a per-connection cost.
    for _ in range(a.warmup):
        with socket.create_connection((a.host, a.port), timeout=15) as s:
            if a.mode == "login":
                login(s, a.user, a.database)
            elif a.mode == "redis":
                redis_ping(s)
    time.sleep(0.5)
    before = rss_kb(a.pid)
    socks, failed, consecutive, first_error = [], 0, 0, ""
    t0 = time.monotonic()
    for _ in range(a.count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.settimeout(10)
        try:
            s.connect((a.host, a.port))
            if a.mode == "login":
                login(s, a.user, a.database)
            elif a.mode == "redis":
                redis_ping(s)
            s.setblocking(False)
            socks.append(s)
        except OSError as e:  # ConnectionError and socket.timeout included
            failed += 1
            consecutive += 1
            first_error = first_error or str(e)
            s.close()
            if consecutive >= 10:
                break  # the proxy is refusing or stuck: do not wait out every timeout
            continue
        consecutive = 0
    opened_s = time.monotonic() - t0
    time.sleep(a.settle)
    after = rss_kb(a.pid)
    held = still_open(socks)
    delta = after - before
    per_conn = delta * 1024.0 / held if held else 0.0
    print("opened=%d held=%d failed=%d rss_before_kb=%d rss_after_kb=%d "
          "delta_kb=%d bytes_per_conn=%.0f open_seconds=%.1f first_error=%s"
          % (len(socks), held, failed, before, after, delta, per_conn, opened_s,
             (first_error or "-").replace(" ", "_")))
    sys.stdout.flush()
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
