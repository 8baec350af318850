"""The harness itself, against PostgreSQL directly (no tandem): if these fail,
every tandem test would fail for a reason that is not tandem's."""
import psycopg
import pytest

from harness import pgwire
from harness.pgserver import PASSWORDS


@pytest.mark.parametrize("user", ["trustuser", "md5user", "scramuser", "cleartextuser"])
def test_direct_login_each_method(pg_primary, user):
    with psycopg.connect(pg_primary.dsn(user=user, sslmode="disable")) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == user


@pytest.mark.parametrize("user,method", [("md5user", 5), ("scramuser", 10), ("cleartextuser", 3)])
def test_direct_raw_login_and_wrong_password(pg_primary, user, method):
    with pgwire.PgRaw(pg_primary.port) as raw:
        raw.login(user, PASSWORDS[user])
        rows, tags, err = raw.simple_query("SELECT current_user")
        assert err is None and rows == [[user]] and tags == ["SELECT 1"]
    with pgwire.PgRaw(pg_primary.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login(user, "wrong-" + PASSWORDS[user])
        assert exc.value.fields["C"] == "28P01"
        assert raw.is_closed()


def test_direct_ssl_verify_full(pg_primary, certs):
    dsn = pg_primary.dsn(user="trustuser", sslmode="verify-full", sslrootcert=certs.ca)
    with psycopg.connect(dsn) as conn:
        assert conn.pgconn.ssl_in_use
        assert conn.execute(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()[0] is True


def test_direct_ssl_wrong_ca_refused(pg_primary, certs):
    dsn = pg_primary.dsn(user="trustuser", sslmode="verify-full", sslrootcert=certs.wrong_ca)
    with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
        psycopg.connect(dsn)


def test_direct_raw_bad_type_is_08P01(pg_primary):
    with pgwire.PgRaw(pg_primary.port) as raw:
        raw.login("trustuser")
        raw.send(pgwire.message(b"z"))
        assert raw.expect_error_and_close()["C"] == "08P01"


def test_two_servers_are_distinct(pg_primary, pg_shadow):
    assert pg_primary.port != pg_shadow.port
    with pg_primary.connect() as a, pg_shadow.connect() as b:
        assert a.execute("SHOW port").fetchone()[0] == str(pg_primary.port)
        assert b.execute("SHOW port").fetchone()[0] == str(pg_shadow.port)


# -- the tandem fixture's crash detection, with a stand-in binary ------------------

FAKE = r'''#!/usr/bin/python3
import os, signal, socket, sys, time
port = int(sys.argv[sys.argv.index("--listen") + 1].rsplit(":", 1)[1])
how = os.environ["FAKE_HOW"]
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port)); s.listen()
def on_term(*_):
    if how == "segv":
        signal.signal(signal.SIGSEGV, signal.SIG_DFL); os.kill(os.getpid(), signal.SIGSEGV)
    if how == "asan":
        sys.stderr.write("==1==ERROR: AddressSanitizer: heap-use-after-free\n"); sys.exit(1)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
if how == "exit":   # exit by itself once the harness saw it listening
    s.accept(); sys.exit(3)
while True:
    time.sleep(1)
'''


@pytest.mark.parametrize("how,expect", [("clean", None), ("segv", "SIGSEGV"),
                                        ("asan", "AddressSanitizer"), ("exit", "by itself")])
def test_harness_detects_crashes(tmp_path, how, expect):
    from harness.tandemproc import TandemFactory
    from harness.util import free_port
    fake = tmp_path / "fake-tandem"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    factory = TandemFactory(str(fake), f"selfcheck-{how}")
    port = free_port()
    proc = factory(args=["postgres", "--listen", f"127.0.0.1:{port}"], port=port,
                   env={"FAKE_HOW": how})
    if how == "exit":
        proc.wait_exit(timeout=20)
    failures = factory.close()
    if expect is None:
        assert failures == []
    else:
        assert len(failures) == 1 and expect in failures[0], failures
