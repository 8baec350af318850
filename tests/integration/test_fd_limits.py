"""Out of file descriptors: tandem under a small `ulimit -n`, flooded.

accept() failing with EMFILE used to be a busy loop that logged each time
(9.7 s of CPU and 289 MB of log in 5 s at ulimit -n 128).  Now each
listener pauses, the failure is logged at most once per interval with a
count and counted in tandem_accept_errors_total; sessions already open, a
scraper's open connection and new scrapes go on (clients are not given the
last WORKER_FD_HEADROOM descriptors).  The CPU tandem used during the flood
is measured from /proc/PID/stat and written to the artifacts (a figure for
the note, never asserted).  The admin port is capped at
ADMIN_MAX_CONNECTIONS (64) connections.
"""
import http.client
import os
import socket
import time

import pytest

from harness.tandemproc import pg_config
from harness.util import ARTIFACTS, free_port, wait_until

NOFILE = 128


@pytest.fixture
def limited(tandem, tmp_path):
    """A tandem factory whose processes run under ulimit -n NOFILE (soft and hard)."""
    wrapper = tmp_path / "tandem-nofile"
    wrapper.write_text(f"#!/bin/sh\nulimit -n {NOFILE}\nexec {tandem.binary} \"$@\"\n")
    wrapper.chmod(0o755)
    real = tandem.binary
    tandem.binary = str(wrapper)
    yield tandem
    tandem.binary = real


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def flood(port, count):
    """Open COUNT connections that never say anything; the list of sockets."""
    socks = []
    for _ in range(count):
        try:
            socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        except OSError:
            break
    return socks


def test_out_of_descriptors_pauses_accepting(limited, pg_primary):
    port, admin = free_port(), free_port()
    text = pg_config(port=port, primary=pg_primary, admin_port=admin,
                     limits={"max_client_conn": "1000", "startup_timeout": "1m"})
    t = limited(config_text=text, port=port, admin_port=admin)
    # the start says the limit cannot carry max_client_conn
    assert f"max_client_conn 1000 needs up to" in t.log()
    assert f"but the limit is {NOFILE}" in t.log()

    keeper = t.connect()
    scraper = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
    scraper.request("GET", "/metrics")
    assert scraper.getresponse().read()

    cpu0, wall0 = cpu_seconds(t.proc.pid), time.monotonic()
    socks = flood(port, 3 * NOFILE)  # the kernel's backlog holds what tandem cannot take
    try:
        wait_until(lambda: "accept failed on listener" in t.log(), 30, "the accept failure")
        time.sleep(3)  # let a busy loop show, if there were one
        cpu1, wall1 = cpu_seconds(t.proc.pid), time.monotonic()

        # what is open goes on: the session, and the scraper's connection
        assert keeper.execute("SELECT 'still served'").fetchone()[0] == "still served"
        scraper.request("GET", "/metrics")
        body = scraper.getresponse().read().decode()
        errors = [ln for ln in body.splitlines() if ln.startswith("tandem_accept_errors_total")]
        assert errors and float(errors[0].split()[-1]) >= 1, errors
        # and a new scrape: the last descriptors are kept for the admin and the backends
        for _ in range(3):
            status, _ = t.http("/metrics")
            assert status == 200
        log_lines = t.log().count("accept failed on listener")
    finally:
        for s in socks:
            s.close()
    os.makedirs(ARTIFACTS, exist_ok=True)
    with open(os.path.join(ARTIFACTS, "fd_limits_cpu.txt"), "w") as f:
        f.write(f"ulimit -n {NOFILE}, {len(socks)} silent connections: tandem used "
                f"{cpu1 - cpu0:.2f} s CPU in {wall1 - wall0:.1f} s; "
                f"{log_lines} 'accept failed' log lines\n")
    # once descriptors are free again, new clients are taken
    def new_session_works():
        with t.connect() as conn:
            return conn.execute("SELECT 1").fetchone()[0] == 1
    wait_until(new_session_works, 30, "a new session after the flood")
    keeper.close()
    scraper.close()


def test_admin_connections_capped(tandem, pg_primary):
    """Hundreds of idle connections to the admin port: at most 64 are taken,
    the others wait in the backlog; once they go, /metrics answers."""
    t = tandem.pg(primary=pg_primary)
    idle = flood(t.admin_port, 200)
    try:
        wait_until(lambda: "connections open (at most 64)" in t.log(), 30,
                   "the admin to stop accepting")
    finally:
        for s in idle:
            s.close()
    wait_until(lambda: "admin: accepting connections again" in t.log(), 30, "the admin to resume")
    wait_until(lambda: t.http("/metrics")[0] == 200, 30, "/metrics")


def test_config_check_warns_when_the_limit_is_too_small(limited, pg_primary, tmp_path):
    """tandem -t compares with the hard limit (what a start could raise to): a warning, exit 0."""
    import subprocess
    conf = tmp_path / "tandem.conf"
    conf.write_text(pg_config(port=free_port(), primary=pg_primary,
                              limits={"max_client_conn": "5000"}))
    done = subprocess.run([limited.binary, "-t", "-c", str(conf)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0, done
    assert "warning: max_client_conn 5000 needs up to 10098 file descriptors (2 per client)" \
        in done.stderr, done.stderr
    assert f"but the limit is {NOFILE} (ulimit -n -H)" in done.stderr, done.stderr
    conf.write_text(pg_config(port=free_port(), primary=pg_primary,
                              limits={"max_client_conn": "1"}))
    done = subprocess.run([limited.binary, "-t", "-c", str(conf)], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 0 and "warning" not in done.stderr, done
