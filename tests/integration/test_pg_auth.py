"""Logins through tandem with each authentication method of the server:
the right password works, a wrong one gets the server's own 28P01."""
import psycopg
import pytest

from harness import pgwire
from harness.clients import psql
from harness.pgserver import PASSWORDS


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary):
    return tandem_module.pg(primary=pg_primary)


PASSWORD_USERS = ["md5user", "scramuser", "cleartextuser"]


def test_trust_login(t):
    with t.connect(user="trustuser") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "trustuser"
    with pgwire.PgRaw(t.port) as raw:
        raw.login("trustuser")
        assert raw.simple_query("SELECT current_user")[0] == [["trustuser"]]


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_password_login_psycopg(t, user):
    with t.connect(user=user, password=PASSWORDS[user]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == user


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_password_login_psql(t, user):
    r = psql(t.port, "-c", "SELECT current_user", user=user)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == user


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_password_login_raw(t, user):
    """The exact exchange: cleartext, md5 with salt, SCRAM with the server's signature checked."""
    with pgwire.PgRaw(t.port) as raw:
        raw.login(user, PASSWORDS[user])
        assert raw.backend_key is not None, "no BackendKeyData"
        assert "server_version" in raw.params
        assert raw.simple_query("SELECT current_user")[0] == [[user]]


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_wrong_password_gets_28P01(t, user):
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login(user, "wrong-password")
        fields = exc.value.fields
        assert fields["C"] == "28P01", fields
        assert fields["S"] == "FATAL", fields
        assert f'password authentication failed for user "{user}"' in fields["M"], fields
        assert raw.is_closed()


@pytest.mark.parametrize("user", PASSWORD_USERS)
def test_wrong_password_psycopg_and_psql(t, user):
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        t.connect(user=user, password="wrong-password")
    r = psql(t.port, "-c", "SELECT 1", user=user, password="wrong-password")
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert f'password authentication failed for user "{user}"' in r.stderr


def test_unknown_role_gets_server_error(t):
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("no_such_role", "x")
        # hba falls to scram for unknown roles: the server fails it as 28P01
        assert exc.value.fields["C"] == "28P01", exc.value.fields


def test_unknown_database_gets_3D000(t):
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("trustuser", database="no_such_db")
        assert exc.value.fields["C"] == "3D000", exc.value.fields


def test_startup_parameters_reach_server(t):
    with t.connect(application_name="tandem-it", options="-c search_path=pg_catalog") as conn:
        assert conn.execute("SHOW application_name").fetchone()[0] == "tandem-it"
        assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog"
