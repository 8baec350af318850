"""TLS on both sides of tandem: clients to the listener (tls_cert/tls_key),
and tandem to the backend (tls require / verify-full against the SSL-enabled
PostgreSQL, whose certificate is signed by the test CA)."""
import ssl
import struct
import subprocess

import psycopg
import pytest

from harness import pgwire
from harness.clients import psql
from harness.fakepg import FakePg
from harness.pgserver import PASSWORDS
from harness.util import free_port, wait_until

SSL_IN_USE = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def tls_listener(tandem_module, pg_primary, certs):
    """Clients may use TLS; the backend link is plain."""
    return tandem_module.pg(primary=pg_primary, listener_extra=(
        f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};"))


# -- client side ---------------------------------------------------------------

def test_client_sslmode_require_psycopg(tls_listener):
    with tls_listener.connect(sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_client_sslmode_verify_full(tls_listener, certs):
    with tls_listener.connect(sslmode="verify-full", sslrootcert=certs.ca) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 'verified'").fetchone()[0] == "verified"


def test_client_sslmode_require_psql(tls_listener):
    r = psql(tls_listener.port, "-c", "SELECT 'over tls'", sslmode="require")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "over tls"


def test_client_sslmode_disable_still_works(tls_listener):
    with tls_listener.connect(sslmode="disable") as conn:
        assert not conn.pgconn.ssl_in_use
        assert conn.execute("SELECT 1").fetchone()[0] == 1
    r = psql(tls_listener.port, "-c", "SELECT 'plain'", sslmode="disable")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("user", ["md5user", "scramuser", "cleartextuser"])
def test_client_tls_password_logins(tls_listener, user):
    with tls_listener.connect(user=user, sslmode="require") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == user


def test_client_tls_large_result(tls_listener):
    with tls_listener.connect(sslmode="require") as conn:
        rows = conn.execute("SELECT repeat('x', 1000) FROM generate_series(1, 5000)").fetchall()
    assert len(rows) == 5000 and rows[-1][0] == "x" * 1000


def test_plain_listener_refuses_ssl_politely(tandem, pg_primary):
    """A listener without a certificate answers SSLRequest with 'N' and goes on in plain."""
    t = tandem.pg(primary=pg_primary, admin=False)
    with pgwire.PgRaw(t.port) as raw:
        raw.send(struct.pack("!ii", 8, pgwire.SSL_REQUEST))
        assert raw.read_byte() == b"N"
        raw.login("trustuser")
        assert raw.simple_query("SELECT 1")[0] == [["1"]]
    with pytest.raises(psycopg.OperationalError):
        t.connect(sslmode="require")
    with t.connect(sslmode="prefer") as conn:
        assert not conn.pgconn.ssl_in_use


# -- backend side ----------------------------------------------------------------

def test_backend_plain_by_default(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, admin=False)
    with t.connect() as conn:
        assert conn.execute(SSL_IN_USE).fetchone()[0] is False


def test_backend_tls_require(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, admin=False, backend_extra="tls require;")
    with t.connect() as conn:
        assert conn.execute(SSL_IN_USE).fetchone()[0] is True
    with t.connect(user="scramuser") as conn:
        assert conn.execute(SSL_IN_USE).fetchone()[0] is True


def test_backend_tls_verify_full(tandem, pg_primary, certs):
    t = tandem.pg(primary=pg_primary, admin=False,
                  backend_extra=f"tls verify-full;\ntls_ca_file {certs.ca};")
    with t.connect() as conn:
        assert conn.execute(SSL_IN_USE).fetchone()[0] is True
        rows = conn.execute("SELECT generate_series(1, 10000)").fetchall()
        assert len(rows) == 10000


def test_backend_tls_verify_full_with_server_name(tandem, pg_primary, certs):
    t = tandem.pg(primary=pg_primary, admin=False,
                  backend_extra=(f"tls verify-full;\ntls_ca_file {certs.ca};\n"
                                 "tls_server_name localhost;"))
    with t.connect() as conn:
        assert conn.execute(SSL_IN_USE).fetchone()[0] is True


def test_backend_verify_full_wrong_ca_gets_08006(tandem, pg_primary, certs):
    t = tandem.pg(primary=pg_primary, backend_extra=(
        f"tls verify-full;\ntls_ca_file {certs.wrong_ca};"))
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("trustuser")
        assert exc.value.fields["C"] == "08006", exc.value.fields
        assert raw.is_closed()
    with pytest.raises(psycopg.OperationalError):
        t.connect()
    # tandem itself is still up and answering
    status, _ = t.http("/healthz")
    assert status == 200


def test_backend_verify_full_wrong_server_name_gets_08006(tandem, pg_primary, certs):
    t = tandem.pg(primary=pg_primary, admin=False, backend_extra=(
        f"tls verify-full;\ntls_ca_file {certs.ca};\ntls_server_name db.example.invalid;"))
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("trustuser")
        assert exc.value.fields["C"] == "08006", exc.value.fields


@pytest.mark.parametrize("user", ["md5user", "cleartextuser", "trustuser"])
def test_tls_both_sides_password_logins(tandem, pg_primary, certs, user):
    """TLS to tandem and from tandem to the server, each relayable auth method."""
    t = tandem.pg(primary=pg_primary, admin=False,
                  backend_extra=f"tls verify-full;\ntls_ca_file {certs.ca};",
                  listener_extra=f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};")
    with t.connect(user=user, sslmode="require") as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute(SSL_IN_USE).fetchone()[0] is True
        assert conn.execute("SELECT current_user").fetchone()[0] == user


def test_garbage_instead_of_tls_handshake(tls_listener):
    """SSLRequest accepted ('S'), then bytes that are not TLS: that connection
    is closed and counted (reason tls); an open session is untouched."""
    with tls_listener.connect(sslmode="require") as keeper:
        before = tls_listener.metric("tandem_client_errors_total", reason="tls") or 0
        with pgwire.PgRaw(tls_listener.port) as raw:
            raw.send(struct.pack("!ii", 8, pgwire.SSL_REQUEST))
            assert raw.read_byte() == b"S"
            raw.send(b"this is not a TLS ClientHello\r\n" * 4, may_fail=True)
            assert raw.is_closed()
        tls_listener.wait_metric("tandem_client_errors_total", before + 1, reason="tls")
        assert keeper.execute("SELECT 'keeper ok'").fetchone()[0] == "keeper ok"


def test_client_gives_up_mid_handshake(tls_listener):
    for _ in range(10):
        with pgwire.PgRaw(tls_listener.port) as raw:
            raw.send(struct.pack("!ii", 8, pgwire.SSL_REQUEST))
            assert raw.read_byte() == b"S"
            raw.send(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")  # a ClientHello's start
    with tls_listener.connect(sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_tls_both_sides_scram_default_binding_is_refused_by_the_server(tandem, pg_primary, certs):
    """The documented limit (README, "Known limits"): with TLS on both legs,
    libpq's default channel_binding=prefer cannot log in with SCRAM through a
    relay.  Over TLS the server offers SCRAM-SHA-256-PLUS, bound to its own
    certificate, which tandem must strip; libpq on TLS, offered no binding,
    answers "y" (I could bind, you can't), and the server, itself on TLS,
    refuses that as a downgrade.  The exchange is signed end to end, so tandem
    cannot rewrite it.  What tandem owes the client is the server's own error,
    unchanged, and a working workaround (the next test)."""
    t = tandem.pg(primary=pg_primary, admin=False,
                  backend_extra=f"tls verify-full;\ntls_ca_file {certs.ca};",
                  listener_extra=f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};")
    with pytest.raises(psycopg.OperationalError) as exc:
        t.connect(user="scramuser", sslmode="require").close()
    assert "channel binding" in str(exc.value)
    # the listener is unharmed
    with t.connect(user="md5user", sslmode="require") as conn:
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_tls_both_sides_scram_with_channel_binding_disabled(tandem, pg_primary, certs):
    """The client-side workaround for the case above: channel_binding=disable
    makes libpq send "n" (no binding), which the server accepts."""
    t = tandem.pg(primary=pg_primary, admin=False,
                  backend_extra=f"tls verify-full;\ntls_ca_file {certs.ca};",
                  listener_extra=f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};")
    with t.connect(user="scramuser", sslmode="require", channel_binding="disable") as conn:
        assert conn.execute(SSL_IN_USE).fetchone()[0] is True


# -- the health probe: tandem's own login, with tandem's password ----------------

def test_health_probe_verify_full_logs_in_with_the_ca(tandem, pg_primary, certs):
    t = tandem.pg(primary=pg_primary, backend_extra=(
        f"tls verify-full;\ntls_ca_file {certs.ca};\n"
        f'user tandemprobe;\npassword "{PASSWORDS["tandemprobe"]}";'))
    wait_until(lambda: t.metric("tandem_backend_up", backend="blue") == 1, 20,
               "the verify-full health probe to log in")


def test_health_probe_verify_full_refuses_an_unverified_server(tandem, certs, tmp_path):
    """A server with a self-signed certificate (right name, not signed by the
    configured CA) asks the probe for a cleartext password: the probe must
    refuse the certificate and never send it.  Before the fix it connected
    with sslmode=require and the fake server caught the password."""
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-keyout", "self.key", "-out", "self.crt", "-days", "2",
                    "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   cwd=tmp_path, check=True, capture_output=True)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "self.crt", tmp_path / "self.key")
    with FakePg(tls_context=ctx, ask_password=True) as fake:
        port, admin = free_port(), free_port()
        text = (f"admin {{ listen 127.0.0.1:{admin}; }}\n"
                f"backend impostor {{\n    address 127.0.0.1:{fake.port};\n"
                f"    tls verify-full;\n    tls_ca_file {certs.ca};\n"
                f'    user tandemprobe;\n    password "{PASSWORDS["tandemprobe"]}";\n}}\n'
                f"listener pg {{\n    listen 127.0.0.1:{port};\n    protocol postgres;\n"
                "    primary impostor;\n    mode passthrough;\n}\n")
        t = tandem(config_text=text, port=port, admin_port=admin)
        wait_until(lambda: fake.tls_failures >= 2 or fake.passwords, 20,
                   "the health probe to try the impostor")
        assert fake.passwords == []
        assert fake.startups == []
        wait_until(lambda: t.metric("tandem_backend_up", backend="impostor") == 0, 20,
                   "the impostor to be reported down")
        assert "certificate verify failed" in t.log()
