"""A PostgreSQL listener's `tls optional | required | off`, with real psql clients.

optional (the default): TLS for clients that ask when tls_cert is set, plain
text for the others, and `N` to an SSLRequest when no certificate is set.
required: a plain StartupMessage gets a FATAL 28000 and reaches no backend;
TLS sessions work.  off: every SSLRequest gets `N`, the session goes on in
plain text; sslmode=require then fails on the client's side.
"""
import socket
import struct
import subprocess

import pytest

from harness.clients import psql
from harness.tandemproc import metric_value
from harness.util import free_port


def listener_text(pg_primary, port, admin, extra):
    return (f"workers 1;\nlog_format text;\nadmin {{ listen 127.0.0.1:{admin}; }}\n"
            f"backend blue {{ address {pg_primary.address}; }}\n"
            f"listener pg {{ listen 127.0.0.1:{port}; protocol postgres; primary blue; {extra} }}\n")


def start(tandem, pg_primary, extra):
    port, admin = free_port(), free_port()
    return tandem(config_text=listener_text(pg_primary, port, admin, extra), port=port,
                  admin_port=admin)


def ssl_request_answer(port):
    """The single byte tandem answers to an SSLRequest."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("!II", 8, 80877103))
        return s.recv(1)


def plain_startup_error(port):
    """A plain-text StartupMessage; the fields of the ErrorResponse it gets."""
    params = b"user\0trustuser\0database\0postgres\0\0"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(struct.pack("!II", 8 + len(params), 196608) + params)
        data = b""
        while len(data) < 5 or len(data) < 1 + struct.unpack("!I", data[1:5])[0]:
            chunk = s.recv(4096)
            assert chunk, data
            data += chunk
    assert data[:1] == b"E", data
    body = data[5:1 + struct.unpack("!I", data[1:5])[0]]
    return {f[:1].decode(): f[1:].decode() for f in body.split(b"\0") if f}


def test_required_refuses_plain_text_and_serves_tls(tandem, pg_primary, certs):
    t = start(tandem, pg_primary, f"tls_cert {certs.server_cert}; tls_key {certs.server_key}; "
                                  "tls required;")
    plain = psql(t.port, "-c", "SELECT 'plain'", sslmode="disable")
    assert plain.returncode != 0
    assert "this listener requires TLS" in plain.stderr, plain.stderr
    for mode in ("prefer", "require"):
        r = psql(t.port, "-c", "SELECT 'over tls'", sslmode=mode)
        assert r.returncode == 0 and r.stdout.strip() == "over tls", (mode, r.stderr)
    # the SQLSTATE is the authorization class, as a hostssl-only pg_hba.conf gives
    assert plain_startup_error(t.port)["C"] == "28000"
    assert t.metric("tandem_client_errors_total", listener="pg", reason="tls_required") >= 2
    # the log says it (summed with other refusals, not a line per client)
    assert 'listener "pg": refused 1 plain-text logins (tls required)' in t.log(), t.log()


def test_optional_without_a_certificate_answers_n_and_goes_on_plain(tandem, pg_primary):
    t = start(tandem, pg_primary, "tls optional;")
    assert ssl_request_answer(t.port) == b"N"
    r = psql(t.port, "-c", "SELECT 'plain'", sslmode="prefer")
    assert r.returncode == 0 and r.stdout.strip() == "plain", r.stderr
    r = psql(t.port, "-c", "SELECT 1", sslmode="require")
    assert r.returncode != 0 and "server does not support SSL" in r.stderr, r.stderr


def test_optional_with_a_certificate_serves_both(tandem, pg_primary, certs):
    t = start(tandem, pg_primary, f"tls_cert {certs.server_cert}; tls_key {certs.server_key};")
    assert ssl_request_answer(t.port) == b"S"
    assert psql(t.port, "-c", "SELECT 1", sslmode="disable").returncode == 0
    assert psql(t.port, "-c", "SELECT 1", sslmode="require").returncode == 0


def test_off_answers_n(tandem, pg_primary):
    t = start(tandem, pg_primary, "tls off;")
    assert ssl_request_answer(t.port) == b"N"
    r = psql(t.port, "-c", "SELECT 'plain'", sslmode="prefer")
    assert r.returncode == 0 and r.stdout.strip() == "plain", r.stderr
    r = psql(t.port, "-c", "SELECT 1", sslmode="require")
    assert r.returncode != 0 and "server does not support SSL" in r.stderr, r.stderr


@pytest.mark.parametrize("extra,message", [
    ("tls required;", "tls required needs tls_cert and tls_key"),
    ("tls_cert /x.pem; tls_key /y.pem; tls off;", "tls off never offers TLS"),
    ("tls sometimes;", "expected optional|required|off"),
])
def test_check_refuses_contradictions(tandem_bin, pg_primary, tmp_path, extra, message):
    conf = tmp_path / "tandem.conf"
    conf.write_text(listener_text(pg_primary, free_port(), free_port(), extra))
    r = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r
    assert f"{conf}:5: " in r.stderr and message in r.stderr, r.stderr


def test_check_refuses_tls_optional_on_a_redis_listener(tandem_bin, tmp_path):
    """Redis has no in-protocol TLS request: its listeners are TLS from the first byte or not."""
    conf = tmp_path / "tandem.conf"
    conf.write_text("backend r { address 127.0.0.1:6379; }\n"
                    "listener c {\n  listen 127.0.0.1:7000;\n  protocol redis;\n  primary r;\n"
                    "  tls optional;\n}\n")
    r = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 1, r
    assert f"{conf}:6: " in r.stderr and "is for postgres listeners" in r.stderr, r.stderr
