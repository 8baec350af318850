"""Floods: hundreds of bogus CancelRequests, silent connections, and clients far
above max_client_conn.  tandem keeps serving the sessions it has and /metrics,
counts every refusal, and says in the log what it refused in a few summary
lines (once per listener and worker every 10 s), not a line per event.
"""
import re
import socket
import struct
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from harness.util import free_port, wait_until

CANCELS = 500
SILENT = 400
MAX_CLIENTS = 20


def config(pg_primary, port, admin):
    return (f"workers 2;\nlog_format text;\nadmin {{ listen 127.0.0.1:{admin}; }}\n"
            f"limits {{ max_client_conn {MAX_CLIENTS}; startup_timeout 10s; }}\n"
            f"backend blue {{ address {pg_primary.address}; }}\n"
            f"listener pg {{ listen 127.0.0.1:{port}; protocol postgres; primary blue; }}\n")


@pytest.fixture
def t(tandem, pg_primary):
    port, admin = free_port(), free_port()
    proc = tandem(config_text=config(pg_primary, port, admin), port=port, admin_port=admin)
    wait_until(lambda: proc.metric("tandem_client_connections") == 0, 20,
               "the readiness probe's connection to close")
    return proc


def reported(t):
    """{what: count} summed over the log's refusal reports, and how many lines they took."""
    totals, lines = {}, 0
    for line in t.log().splitlines():
        found = re.search(r'listener "pg": refused (.*); sessions already open go on', line)
        if not found:
            continue
        lines += 1
        for part in found.group(1).split(", "):
            n, what = part.split(" ", 1)
            totals[what] = totals.get(what, 0) + int(n)
    return totals, lines


def bogus_cancel(port, i):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(struct.pack("!IIII", 16, 80877102, 0x7000_0000 + i, 0x1234_5678 ^ i))
        return s.recv(1) == b""  # tandem closes it without a word


def still_serves(t, keeper):
    assert keeper.execute("SELECT 'still here'").fetchone()[0] == "still here"
    code, body = t.http("/metrics")
    assert code == 200 and "tandem_client_connections" in body


def test_a_cancel_flood_is_counted_and_summarized(t):
    keeper = t.connect()
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(bogus_cancel, t.port, i) for i in range(CANCELS)]
        still_serves(t, keeper)  # in the middle of the flood
        assert all(f.result() for f in futures)
    still_serves(t, keeper)
    t.wait_metric("tandem_cancel_requests_ignored_total", CANCELS, listener="pg")
    assert t.metric("tandem_cancel_requests_ignored_total", listener="pg") == CANCELS
    what = "cancel requests with a key of no session (ignored)"
    # every one is in a report: the first at once, the rest at the next report (10 s)
    wait_until(lambda: reported(t)[0].get(what) == CANCELS, 60,
               "the log to report every ignored cancel request")
    _, lines = reported(t)
    print(f"{CANCELS} ignored cancel requests, {lines} log lines")
    assert lines <= 8, t.log()  # a few summaries, never one per request
    assert "cancel request with an unknown key ignored" not in t.log()  # debug only
    keeper.close()


def test_silent_connections_and_a_flood_over_max_client_conn(t):
    keeper = t.connect()
    socks = []
    try:
        for _ in range(100):  # connections that send nothing, above max_client_conn
            socks.append(socket.create_connection(("127.0.0.1", t.port), timeout=30))
        wait_until(lambda: t.metric("tandem_client_connections") >= MAX_CLIENTS + 50, 30,
                   "the silent connections accepted")
        # a real client now: too many clients (53300), said at once
        with pytest.raises(psycopg.OperationalError) as exc:
            t.connect()
        assert "too many clients" in str(exc.value)
        for _ in range(SILENT - 100):  # far above: these are closed at once
            socks.append(socket.create_connection(("127.0.0.1", t.port), timeout=30))
        still_serves(t, keeper)
        # far above the limit, connections are closed at once; the others time out
        total = SILENT + 1
        wait_until(lambda: (t.metric("tandem_client_errors_total", listener="pg",
                                     reason="too_many_clients") or 0) +
                   (t.metric("tandem_client_errors_total", listener="pg",
                             reason="startup_timeout") or 0) >= total, 60,
                   "every silent connection refused")
        still_serves(t, keeper)
    finally:
        for s in socks:
            s.close()
    refused_metric = (t.metric("tandem_client_errors_total", listener="pg",
                               reason="too_many_clients") +
                      t.metric("tandem_client_errors_total", listener="pg",
                               reason="startup_timeout"))
    wait_until(lambda: sum(reported(t)[0].values()) == refused_metric, 60,
               "the log to report every refused connection")
    totals, lines = reported(t)
    assert totals.get("clients that did not log in within startup_timeout", 0) > 0, totals
    assert totals.get("clients far over max_client_conn (closed at once)", 0) > 0, totals
    assert totals.get("clients over max_client_conn (answered too many clients)") == 1, totals
    assert lines <= 8, t.log()
    assert "startup timeout: the connection did not complete" not in t.log()  # debug only
    # the flood is over: a new client gets in again
    wait_until(lambda: t.metric("tandem_client_connections") <= 1, 30, "the flood to be gone")
    with t.connect() as conn:
        assert conn.execute("SELECT 'in again'").fetchone()[0] == "in again"
    keeper.close()
