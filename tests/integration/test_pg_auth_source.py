"""tandem authenticates clients itself (listener auth_file): SCRAM with TLS on
both legs, the managed-database setup a relay cannot serve.

The servers here require TLS and scram-sha-256 (hostssl; plain TCP is
rejected).  Clients connect with sslmode=verify-full channel_binding=require,
so they accept nothing but SCRAM-SHA-256-PLUS bound to tandem's certificate;
tandem logs in to the primary with the ClientKey recovered from the client's
proof, so the auth file holds only PostgreSQL's verifier, no password.
"""
import subprocess

import psycopg
import pytest

from harness import pgwire
from harness.adminapi import run_operation
from harness.clients import psql
from harness.pgserver import PASSWORDS, PgServer
from harness.shadow import outcomes, shadow_config
from harness.tandemproc import pg_config
from harness.util import free_port, wait_until

TLS_HBA = """\
local     all  all                       trust
host      all  postgres   127.0.0.1/32   trust
hostnossl all  all        127.0.0.1/32   reject
hostssl   all  md5user    127.0.0.1/32   md5
hostssl   all  all        127.0.0.1/32   scram-sha-256
"""


@pytest.fixture(scope="module")
def tls_primary(certs):
    server = PgServer("tls-primary", certs, hba=TLS_HBA)
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_shadow(certs, tls_primary):
    server = PgServer("tls-shadow", certs, hba=TLS_HBA)
    try:
        server.start()
        with server.connect() as conn:
            # tandem's own login acts as the client's role on the shadow
            conn.execute("GRANT scramuser TO tandemprobe")
        yield server
    finally:
        server.stop()


def verifier(server, role):
    with server.connect() as conn:
        return conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s",
                            (role,)).fetchone()[0]


@pytest.fixture(scope="module")
def auth_file(tmp_path_factory, tls_primary):
    path = tmp_path_factory.mktemp("auth") / "userlist.txt"
    scram = verifier(tls_primary, "scramuser")
    assert scram.startswith("SCRAM-SHA-256$")
    path.write_text(
        "; tandem auth file: PostgreSQL's own verifiers\n"
        f'"scramuser" "{scram}"\n'
        f'"md5user" "{verifier(tls_primary, "md5user")}"\n'
        f'"cleartextuser" "{PASSWORDS["cleartextuser"]}"\n')
    return path


def backend_tls(certs):
    return f"tls verify-full;\ntls_ca_file {certs.ca};\ntls_server_name localhost;"


def listener_tls(certs, path):
    return (f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};\n"
            f"auth_file {path};")


@pytest.fixture(scope="module")
def t(tandem_module, tls_primary, certs, auth_file):
    return tandem_module.pg(primary=tls_primary, backend_extra=backend_tls(certs),
                            listener_extra=listener_tls(certs, auth_file))


def strict(certs):
    """What a managed-database client sets: verify tandem's certificate, insist on binding."""
    return dict(host="localhost", sslmode="verify-full", sslrootcert=certs.ca,
                channel_binding="require")


def connect(t, certs, user, password, **kw):
    return psycopg.connect(port=t.port, user=user, password=password,
                           dbname="postgres", autocommit=True, connect_timeout=10,
                           **{**strict(certs), **kw})


def test_direct_relay_is_what_fails(tandem_module, tls_primary, certs):
    """The premise: without an auth source, a strict client cannot log in through tandem."""
    t = tandem_module.pg(primary=tls_primary, backend_extra=backend_tls(certs),
                         listener_extra=f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};")
    with pytest.raises(psycopg.OperationalError, match="channel binding"):
        connect(t, certs, "scramuser", PASSWORDS["scramuser"])
    # relayed authentication is still the default and works without binding
    with connect(t, certs, "scramuser", PASSWORDS["scramuser"], channel_binding="disable") as c:
        assert c.execute("SELECT current_user").fetchone()[0] == "scramuser"


def test_psycopg_scram_plus_through_tandem(t, certs, tls_primary):
    with connect(t, certs, "scramuser", PASSWORDS["scramuser"]) as conn:
        assert conn.info.pgconn.ssl_in_use
        row = conn.execute("SELECT current_user, ssl FROM pg_stat_ssl "
                           "JOIN pg_stat_activity USING (pid) WHERE pid = pg_backend_pid()"
                           ).fetchone()
        # the primary sees the client's role, over TLS (tandem's leg)
        assert row == ("scramuser", True)
        conn.execute("CREATE TABLE IF NOT EXISTS auth_src (v int)")
        conn.execute("INSERT INTO auth_src VALUES (1)")
    with tls_primary.connect() as direct:
        assert direct.execute("SELECT count(*) FROM auth_src").fetchone()[0] >= 1


def test_psql_scram_plus_through_tandem(t, certs):
    # psql reaches 127.0.0.1, which the certificate names too (SAN IP)
    opts = {k: v for k, v in strict(certs).items() if k != "host"}
    r = psql(t.port, "-c", "SELECT current_user", user="scramuser",
             password=PASSWORDS["scramuser"], **opts)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scramuser"


def test_plain_scram_without_tls_to_tandem(t):
    """A client without TLS to tandem is offered SCRAM-SHA-256 (no -PLUS)."""
    with pgwire.PgRaw(t.port) as raw:
        raw.login("scramuser", PASSWORDS["scramuser"])
        assert raw.simple_query("SELECT current_user")[0] == [["scramuser"]]


def test_md5_secret(t, certs):
    """An md5 hash in the auth file: md5 with the client, md5 with the server."""
    with connect(t, certs, "md5user", PASSWORDS["md5user"], channel_binding="disable") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "md5user"


def test_plain_password_in_auth_file(t, certs):
    """A password in the auth file: SCRAM-PLUS with the client, the password to the server."""
    with connect(t, certs, "cleartextuser", PASSWORDS["cleartextuser"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "cleartextuser"


def test_non_ascii_password_is_saslprep_normalised(tandem_module, tls_primary, certs, tmp_path):
    """A plain password with characters SASLprep maps (a soft hyphen goes, a
    Roman numeral nine becomes "IX"): PostgreSQL normalises it when it makes
    the verifier and libpq when it logs in, so tandem must too, both when it
    checks the client's proof and when it logs in to the primary with it."""
    typed = "p\u00e4ss\u00ad-\u2168"
    with tls_primary.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS preppy")
        conn.execute(f"CREATE ROLE preppy LOGIN PASSWORD '{typed}'")
    path = tmp_path / "userlist.txt"
    path.write_text(f'"preppy" "{typed}"\n', encoding="utf-8")
    t = tandem_module.pg(primary=tls_primary, backend_extra=backend_tls(certs),
                         listener_extra=listener_tls(certs, path))
    for password in (typed, "p\u00e4ss-IX"):  # as typed, and already normalised
        with psycopg.connect(port=tls_primary.port, user="preppy", password=password,
                             dbname="postgres", **strict(certs)) as direct:
            assert direct.execute("SELECT current_user").fetchone()[0] == "preppy"
        with connect(t, certs, "preppy", password) as conn:
            assert conn.execute("SELECT current_user").fetchone()[0] == "preppy"
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(t, certs, "preppy", "p\u00e4ss-IIX")


def client_errors(t, reason):
    return t.metric("tandem_client_errors_total", listener="pg", reason=reason) or 0


def test_wrong_password_gets_28P01(t, certs):
    before = client_errors(t, "auth_failed")
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("scramuser", "wrong-password")
        assert exc.value.fields["C"] == "28P01", exc.value.fields
        assert exc.value.fields["S"] == "FATAL"
        assert exc.value.fields["M"] == 'password authentication failed for user "scramuser"'
        assert raw.is_closed()
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(t, certs, "scramuser", "wrong-password")
    wait_until(lambda: client_errors(t, "auth_failed") >= before + 2, 10, "auth_failed counted")


def test_unknown_user_looks_like_a_wrong_password(t, certs):
    """A user missing from the auth source: the same exchange and the same 28P01 as a
    wrong password (as PostgreSQL does), so the answer does not reveal who exists."""
    before = client_errors(t, "auth_failed")
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("trustuser", "anything")  # exists on the server, not in the auth file
        assert exc.value.fields["C"] == "28P01", exc.value.fields
        assert exc.value.fields["M"] == 'password authentication failed for user "trustuser"'
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(t, certs, "no_such_user", "x")
    wait_until(lambda: client_errors(t, "auth_failed") >= before + 2, 10, "auth_failed counted")


def test_backend_with_another_verifier_is_a_clear_error(tandem_module, tls_primary, certs,
                                                        tmp_path):
    """The ClientKey opens only the same verifier: a secret with another salt gives a
    clear error naming the backend, not a misleading password failure."""
    path = tmp_path / "userlist.txt"
    path.write_text('"scramuser" "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$'
                    'WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:'
                    'wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU="\n')  # RFC 7677: "pencil"
    t = tandem_module.pg(primary=tls_primary, backend_extra=backend_tls(certs),
                         listener_extra=listener_tls(certs, path))
    with pytest.raises(psycopg.OperationalError) as exc:
        connect(t, certs, "scramuser", "pencil")
    assert 'cannot log in to backend "blue" as "scramuser"' in str(exc.value)
    assert "verifier" in str(exc.value)
    assert client_errors(t, "backend_auth") >= 1


def test_bad_auth_file_refused_at_start(tandem_bin, tls_primary, certs, tmp_path):
    """A malformed secret stops the start with file and line, and never echoes the secret."""
    path = tmp_path / "userlist.txt"
    path.write_text('"scramuser" "SCRAM-SHA-256$4096:c2VjcmV0LXNhbHQ="\n')
    conf = tmp_path / "tandem.conf"
    conf.write_text(pg_config(port=free_port(), primary=tls_primary,
                              backend_extra=backend_tls(certs),
                              listener_extra=listener_tls(certs, path)))
    r = subprocess.run([tandem_bin, "-c", str(conf)], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    assert f'auth_file "{path}" line 1' in r.stderr, r.stderr
    assert "c2VjcmV0LXNhbHQ" not in r.stderr + r.stdout
    # tandem -t reads it as a start would
    r = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and f'auth_file "{path}" line 1' in r.stderr, r.stderr
    assert "c2VjcmV0LXNhbHQ" not in r.stderr + r.stdout


def shadow_tandem(tandem_module, tls_primary, tls_shadow, certs, auth_file):
    for server in (tls_primary, tls_shadow):
        with server.connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS auth_mirror (v int)")
            conn.execute("GRANT ALL ON auth_mirror TO scramuser")
    port, admin_port = free_port(), free_port()
    text = shadow_config(
        port=port, admin_port=admin_port, primary=tls_primary, shadow=tls_shadow,
        backend_extra=backend_tls(certs), mirror={"reads": "100%"},
        shadow_backend_extra=(f'user tandemprobe;\n'
                              f'password "{PASSWORDS["tandemprobe"]}";'),
        listener_extra=listener_tls(certs, auth_file))
    return tandem_module(config_text=text, port=port, admin_port=admin_port)


def shadow_session_user(shadow, app):
    """The session user of the shadow's session for application APP (None: none yet)."""
    with shadow.connect() as c:
        row = c.execute("SELECT usename FROM pg_stat_activity WHERE application_name = %s",
                        (app,)).fetchone()
    return row and row[0]


def write_and_see_mirrored(t, certs, tls_shadow, value, app):
    """A write through tandem reaches the shadow; returns the shadow session's user."""
    with connect(t, certs, "scramuser", PASSWORDS["scramuser"], application_name=app) as conn:
        conn.execute("INSERT INTO auth_mirror VALUES (%s)", (value,))
        row = conn.execute("SELECT current_user, session_user").fetchone()
        assert row == ("scramuser", "scramuser")

        def mirrored():
            with tls_shadow.connect() as c:
                return c.execute("SELECT count(*) FROM auth_mirror WHERE v = %s",
                                 (value,)).fetchone()[0] == 1
        wait_until(mirrored, 15, "the write mirrored to the shadow")
        return shadow_session_user(tls_shadow, app)


def test_shadow_logs_in_as_the_client(tandem_module, tls_primary, tls_shadow, certs, auth_file):
    """Shadow mode, TLS + SCRAM on all three legs: the shadow's verifier for the role is
    the primary's, so tandem logs in to the shadow as scramuser itself with the ClientKey
    (no role switched to by tandem's own user), and the write is mirrored with the
    client's own rights."""
    with tls_shadow.connect() as conn:
        conn.execute(f"ALTER ROLE scramuser PASSWORD '{verifier(tls_primary, 'scramuser')}'")
    t = shadow_tandem(tandem_module, tls_primary, tls_shadow, certs, auth_file)
    assert write_and_see_mirrored(t, certs, tls_shadow, 42, "as-client") == "scramuser"
    # SELECT current_user, session_user was compared: the same on both sides
    wait_until(lambda: outcomes(t)["match"] >= 2, 15, "the insert and the select compared")
    assert outcomes(t)["mismatch"] == 0
    assert (t.metric("tandem_server_login_fallbacks_total", backend="green") or 0) == 0


def test_session_logged_in_as_the_client_survives_a_cutover(tandem_module, tls_primary,
                                                            tls_shadow, certs, auth_file):
    """A session opened before the cutover (the shadow logged in as the client itself) goes
    on after it on the new primary as the same role; a new session logs in to the new
    primary with its ClientKey; after the rollback the same again."""
    with tls_shadow.connect() as conn:
        conn.execute(f"ALTER ROLE scramuser PASSWORD '{verifier(tls_primary, 'scramuser')}'")
    t = shadow_tandem(tandem_module, tls_primary, tls_shadow, certs, auth_file)
    with connect(t, certs, "scramuser", PASSWORDS["scramuser"]) as old:
        old.execute("INSERT INTO auth_mirror VALUES (50)")
        assert old.execute("SELECT inet_server_port()").fetchone()[0] == tls_primary.port
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        row = old.execute("SELECT inet_server_port(), session_user").fetchone()
        assert row == (tls_shadow.port, "scramuser")
        old.execute("INSERT INTO auth_mirror VALUES (51)")
        with connect(t, certs, "scramuser", PASSWORDS["scramuser"]) as new:
            row = new.execute("SELECT inet_server_port(), session_user").fetchone()
            assert row == (tls_shadow.port, "scramuser")
        op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        row = old.execute("SELECT inet_server_port(), session_user").fetchone()
        assert row == (tls_primary.port, "scramuser")
    for server in (tls_primary, tls_shadow):
        def both_rows(server=server):
            with server.connect() as c:
                return c.execute("SELECT count(*) FROM auth_mirror WHERE v IN (50, 51)"
                                 ).fetchone()[0] == 2
        wait_until(both_rows, 15, f"both writes on {server.port}")


def test_shadow_with_another_verifier_falls_back(tandem_module, tls_primary, tls_shadow, certs,
                                                 auth_file):
    """The shadow's verifier for the role differs (another salt: the same password set
    there again), so the ClientKey cannot open it: the shadow's own user logs in acting
    as the role, as before; counted and logged, the client never notices."""
    with tls_shadow.connect() as conn:
        conn.execute(f"ALTER ROLE scramuser PASSWORD '{PASSWORDS['scramuser']}'")
    assert verifier(tls_shadow, "scramuser") != verifier(tls_primary, "scramuser")
    t = shadow_tandem(tandem_module, tls_primary, tls_shadow, certs, auth_file)
    assert write_and_see_mirrored(t, certs, tls_shadow, 43, "fallback") == "tandemprobe"
    assert t.metric("tandem_server_login_fallbacks_total", backend="green") >= 1
    assert "differs from the auth source" in t.log()


# -- auth_query: secrets fetched from the primary through tandem's own login --------------

AUTHQ_PASSWORD = "authq-Secret-5k2"


@pytest.fixture(scope="module")
def authq_role(tls_primary):
    """tandem's own login for the auth query (pg_shadow needs a superuser)."""
    with tls_primary.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS tandemauth")
        conn.execute(f"CREATE ROLE tandemauth LOGIN SUPERUSER PASSWORD '{AUTHQ_PASSWORD}'")
    return "tandemauth"


def authq_tandem(tandem_module, tls_primary, certs, password=AUTHQ_PASSWORD, extra=""):
    return tandem_module.pg(
        primary=tls_primary,
        backend_extra=f'{backend_tls(certs)}\nuser tandemauth;\npassword "{password}";',
        listener_extra=(f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};\n"
                        f"auth_query default;\n{extra}"))


@pytest.fixture(scope="module")
def tq(tandem_module, tls_primary, certs, authq_role):
    return authq_tandem(tandem_module, tls_primary, certs)


def test_auth_query_psycopg_and_psql(tq, certs):
    """No auth file: the verifier comes from pg_shadow through tandem's own login, and the
    client's SCRAM-PLUS proof yields the ClientKey that logs in to the primary."""
    with connect(tq, certs, "scramuser", PASSWORDS["scramuser"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "scramuser"
    opts = {k: v for k, v in strict(certs).items() if k != "host"}
    r = psql(tq.port, "-c", "SELECT session_user", user="scramuser",
             password=PASSWORDS["scramuser"], **opts)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "scramuser"
    # an md5 secret from the query serves md5 both ways
    with connect(tq, certs, "md5user", PASSWORDS["md5user"], channel_binding="disable") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "md5user"


def test_auth_query_wrong_password_and_missing_user(tq, certs):
    before = client_errors(tq, "auth_failed")
    with pytest.raises(psycopg.OperationalError,
                       match='password authentication failed for user "scramuser"'):
        connect(tq, certs, "scramuser", "wrong-password")
    # a user the query does not return: the same exchange, the same 28P01
    with pgwire.PgRaw(tq.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("no_such_user", "x")
        assert exc.value.fields["C"] == "28P01", exc.value.fields
        assert exc.value.fields["M"] == 'password authentication failed for user "no_such_user"'
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        connect(tq, certs, "no_such_user", "x")
    wait_until(lambda: client_errors(tq, "auth_failed") >= before + 3, 10, "auth_failed counted")


def test_auth_query_login_failing_is_a_clear_error(tandem_module, tls_primary, certs,
                                                   authq_role):
    """tandem's own login for the query is refused: the client gets an ErrorResponse with
    a SQLSTATE saying so (not a password failure), counted as reason="auth_query"."""
    t = authq_tandem(tandem_module, tls_primary, certs, password="not-the-password")
    with pgwire.PgRaw(t.port) as raw:
        with pytest.raises(pgwire.LoginFailed) as exc:
            raw.login("scramuser", PASSWORDS["scramuser"])
        assert exc.value.fields["C"] == "28000", exc.value.fields
        assert 'tandem cannot look up user "scramuser"' in exc.value.fields["M"]
        assert "tandem's login failed" in exc.value.fields["M"]
        assert "not-the-password" not in exc.value.fields["M"]
    with pytest.raises(psycopg.OperationalError, match="auth_query on backend"):
        connect(t, certs, "scramuser", PASSWORDS["scramuser"])
    assert client_errors(t, "auth_query") >= 2
    assert "not-the-password" not in t.log()


def test_auth_query_refresh_sees_a_new_password(tandem_module, tls_primary, certs, authq_role):
    """The fetched secret is cached for auth_query_refresh, then fetched again."""
    with tls_primary.connect() as conn:
        conn.execute("DROP ROLE IF EXISTS rotating")
        conn.execute("CREATE ROLE rotating LOGIN PASSWORD 'first-Pass-1'")
    t = authq_tandem(tandem_module, tls_primary, certs, extra="auth_query_refresh 1s;")
    with connect(t, certs, "rotating", "first-Pass-1") as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "rotating"
    with tls_primary.connect() as conn:
        conn.execute("ALTER ROLE rotating PASSWORD 'second-Pass-2'")

    def new_password_works():
        try:
            with connect(t, certs, "rotating", "second-Pass-2"):
                return True
        except psycopg.OperationalError:
            return False
    wait_until(new_password_works, 20, "the new password accepted after the refresh")


def test_auth_query_config_checked(tandem_bin, tls_primary, certs, tmp_path):
    """tandem -t: auth_query needs tandem's own user on the primary and a $1."""
    for extra, backend, message in (
            ("auth_query default;", "", 'auth_query runs as tandem\'s own login: backend "blue" '
                                        'needs a user'),
            ('auth_query "SELECT usename, passwd FROM pg_shadow";', "user tandemauth;",
             "auth_query must take the user name as $1"),
            ("auth_query_refresh 5s;", "", "auth_query_refresh needs auth_query")):
        conf = tmp_path / "tandem.conf"
        conf.write_text(pg_config(port=free_port(), primary=tls_primary,
                                  backend_extra=f"{backend_tls(certs)}\n{backend}",
                                  listener_extra=extra))
        r = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1, r.stderr
        lines = conf.read_text().splitlines()
        lineno = next(i + 1 for i, ln in enumerate(lines) if extra.split()[0] in ln)
        assert f"{conf}:{lineno}: " in r.stderr and message in r.stderr, r.stderr


class Blackhole:
    """A TCP server that accepts and never answers, until hang_up(): then every
    connection it holds or is offered later is closed (EOF to the peer)."""

    def __init__(self):
        import socket
        import threading
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.held, self.closing, self.lock = [], False, threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                if self.closing:
                    conn.close()
                else:
                    self.held.append(conn)

    def hang_up(self):
        with self.lock:
            self.closing = True
            for conn in self.held:
                conn.close()

    def close(self):
        self.hang_up()
        self.sock.close()


def test_auth_query_fetch_never_holds_up_other_clients(tandem_module, tls_primary, certs,
                                                       authq_role):
    """One worker, two listeners: while listener "stalled" waits for its auth query on a
    backend that accepts and never answers, a client of listener "pg" on the same worker
    logs in and is answered; the stalled client gets 28000 once that backend hangs up."""
    import socket
    hole = Blackhole()
    port, stalled_port, admin_port = free_port(), free_port(), free_port()
    text = pg_config(port=port, primary=tls_primary, admin_port=admin_port, workers=1,
                     limits={"connect_timeout": "60s", "startup_timeout": "120s"},
                     backend_extra=backend_tls(certs),
                     extra=(f"backend hole {{ address 127.0.0.1:{hole.port}; user tandemauth;\n"
                            f'password "{AUTHQ_PASSWORD}"; }}\n'
                            f"listener stalled {{ listen 127.0.0.1:{stalled_port};\n"
                            "protocol postgres; primary hole; mode passthrough;\n"
                            "auth_query default; }"))
    try:
        t = tandem_module(config_text=text, port=port, admin_port=admin_port)
        with pgwire.PgRaw(stalled_port) as waiting:
            waiting.send(pgwire.startup_message("scramuser"))
            # the same worker serves another client meanwhile
            with pgwire.PgRaw(port) as other:
                other.login("scramuser", PASSWORDS["scramuser"])
                assert other.simple_query("SELECT 7")[0] == [["7"]]
            waiting.sock.settimeout(0.2)
            with pytest.raises(socket.timeout):
                waiting.sock.recv(1)  # still waiting for its secret: no answer yet
            waiting.sock.settimeout(30)
            hole.hang_up()  # the auth query's login fails
            fields = waiting.expect_error_and_close()
            assert fields["C"] == "28000", fields
            assert 'auth_query on backend "hole" failed' in fields["M"], fields
        t.wait_metric("tandem_client_errors_total", 1, listener="stalled", reason="auth_query")
    finally:
        hole.close()


def test_top_level_auth_file_serves_every_postgres_listener(tandem_module, tls_primary, certs,
                                                            auth_file, tandem_bin, tmp_path):
    """auth_file at the top level: a listener without one of its own uses it."""
    port, admin_port = free_port(), free_port()
    text = pg_config(port=port, primary=tls_primary, admin_port=admin_port,
                     backend_extra=backend_tls(certs),
                     listener_extra=f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};",
                     extra=f"auth_file {auth_file};")
    t = tandem_module(config_text=text, port=port, admin_port=admin_port)
    with connect(t, certs, "scramuser", PASSWORDS["scramuser"]) as conn:
        assert conn.execute("SELECT current_user").fetchone()[0] == "scramuser"
    # tandem -t reads it as a start would
    bad = tmp_path / "bad.txt"
    bad.write_text('"scramuser" "SCRAM-SHA-256$4096:c2VjcmV0LXNhbHQ="\n')
    conf = tmp_path / "tandem.conf"
    conf.write_text(text.replace(f"auth_file {auth_file};", f"auth_file {bad};"))
    r = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and f'auth_file "{bad}" line 1' in r.stderr, r.stderr


# -- server_connections reuse: kept connections over TLS, SCRAM from the verifier ------------

def _backend_pid(conn):
    return conn.execute("SELECT pg_backend_pid()").fetchone()[0]


def _wait_reset(server, pid):
    def done():
        with server.connect() as conn:
            return conn.execute("SELECT state, query FROM pg_stat_activity WHERE pid = %s",
                                (pid,)).fetchone() == ("idle", "DISCARD ALL")
    wait_until(done, 10, f"backend {pid} to be reset")


def test_reuse_over_tls_needs_the_password_each_time(tandem_module, tls_primary, certs, auth_file,
                                                     authq_role):
    """A kept TLS connection logged in with the ClientKey serves the next client of the same
    user, auth_file or auth_query alike, and only after that client's own proof."""
    for source in (f"auth_file {auth_file};", "auth_query default;"):
        t = tandem_module.pg(
            primary=tls_primary, workers=1,
            backend_extra=f'{backend_tls(certs)}\nuser tandemauth;\npassword "{AUTHQ_PASSWORD}";',
            listener_extra=(f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};\n"
                            f"{source}\nserver_connections reuse;"))
        with connect(t, certs, "scramuser", PASSWORDS["scramuser"]) as conn:
            first = _backend_pid(conn)
        _wait_reset(tls_primary, first)
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            connect(t, certs, "scramuser", "wrong-password")
        with connect(t, certs, "scramuser", PASSWORDS["scramuser"]) as conn:
            assert conn.info.pgconn.ssl_in_use
            row = conn.execute("SELECT pg_backend_pid(), current_user, ssl FROM pg_stat_ssl "
                               "WHERE pid = pg_backend_pid()").fetchone()
            assert row == (first, "scramuser", True), source
        assert (t.metric("tandem_server_connections_reused_total", backend="blue") or 0) >= 1
