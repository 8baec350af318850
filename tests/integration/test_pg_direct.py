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
