"""Redis TLS on both sides of tandem: clients to a listener with tls_cert/tls_key
(TLS from the first byte: redis-cli --tls, redis-py ssl=True), and tandem to
redis-server started with --tls-port (tls require / verify-full against the
test CA, a client certificate for a server with --tls-auth-clients yes).
No test asserts a duration."""
import os
import socket
import subprocess
import tempfile

import pytest
import redis

from harness.adminapi import call, listener, run_operation
from harness.redisserver import RedisServer, redis_config
from harness.shadow import delta, outcomes, rechecks
from harness.util import free_port, wait_until


@pytest.fixture(scope="module")
def tls_primary(certs):
    """A TLS-only redis-server that takes clients without a certificate."""
    server = RedisServer("tls-primary", tls=certs)
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(scope="module")
def tls_shadow(certs):
    """A TLS-only redis-server that asks every client for a certificate signed by the CA."""
    server = RedisServer("tls-shadow", tls=certs, tls_auth_clients=True)
    try:
        yield server.start()
    finally:
        server.stop()


def verify_full(certs, ca=None, client_cert=False):
    lines = ["tls verify-full;", f"tls_ca_file {ca or certs.ca};"]
    if client_cert:
        lines += [f"tls_cert {certs.client_cert};", f"tls_key {certs.client_key};"]
    return "\n".join(lines)


def listener_tls(certs):
    return f"tls_cert {certs.server_cert};\ntls_key {certs.server_key};"


def start(factory, certs, primary, shadow=None, **cfg):
    port, admin = free_port(), free_port()
    cfg.setdefault("listener_extra", listener_tls(certs))
    text = redis_config(port=port, admin_port=admin, primary=primary, shadow=shadow, **cfg)
    return factory(config_text=text, port=port, admin_port=admin)


def start_both_tls(factory, certs, primary, shadow, **cfg):
    """tandem on a TLS listener in front of a verify-full primary and a verify-full shadow
    that asks for tandem's client certificate, every read mirrored."""
    cfg.setdefault("mirror", {"reads": "100%", "queue": "4MB", "timeout": "5s"})
    return start(factory, certs, primary, shadow, primary_extra=verify_full(certs),
                 shadow_extra=verify_full(certs, client_cert=True), **cfg)


def tls_client(t, certs, **kw):
    """redis-py through tandem's TLS listener, checking its certificate against the CA."""
    return redis.Redis(host="127.0.0.1", port=t.port, socket_timeout=20, ssl=True,
                       ssl_ca_certs=certs.ca, **kw)


def redis_cli(t, certs, *args):
    return subprocess.run(["redis-cli", "-h", "127.0.0.1", "-p", str(t.port), "--tls",
                           "--cacert", certs.ca, *args],
                          capture_output=True, text=True, timeout=30)


# -- passthrough and shadow ---------------------------------------------------------

def test_passthrough_tls_both_sides(tandem, certs, tls_primary):
    t = start(tandem, certs, tls_primary, primary_extra=verify_full(certs))
    c = tls_client(t, certs)
    assert c.ping()
    c.set("tls:pass", "over tls")
    assert c.get("tls:pass") == b"over tls"
    big = os.urandom(1 << 20)
    c.set("tls:big", big)
    assert c.get("tls:big") == big
    assert tls_primary.client().get("tls:pass") == b"over tls"
    r = redis_cli(t, certs, "SET", "tls:cli", "from redis-cli")
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stderr
    r = redis_cli(t, certs, "GET", "tls:cli")
    assert r.stdout.strip() == "from redis-cli", r.stderr
    assert tls_primary.client().get("tls:cli") == b"from redis-cli"


def test_shadow_mode_over_tls(tandem, certs, tls_primary, tls_shadow):
    """Listener, primary and shadow all TLS; the shadow asks for tandem's client certificate."""
    tls_primary.client().flushall()
    tls_shadow.client().flushall()
    t = start_both_tls(tandem, certs, tls_primary, tls_shadow)
    c = tls_client(t, certs)
    for i in range(200):
        c.set(f"sh:{i}", f"v{i}")
    assert c.mget([f"sh:{i}" for i in range(200)])[199] == b"v199"
    r = redis_cli(t, certs, "RPUSH", "sh:list", "a", "b")
    assert r.stdout.strip() == "2", r.stderr
    wait_until(lambda: tls_shadow.client().exists("sh:list") == 1, 15, "the mirrored RPUSH")
    wait_until(lambda: tls_shadow.digest() == tls_primary.digest(), 15, "shadow == primary")
    assert (t.metric("tandem_server_connect_failures_total", backend="green") or 0) == 0
    assert t.metric("tandem_server_connections_opened_total", backend="green") >= 1


def test_cutover_and_split_over_tls(tandem, certs, tls_primary, tls_shadow):
    """A client on the TLS listener keeps its connection through a cutover and a rollback
    (its TLS connections to both backends trade roles); split mode reads from both."""
    tls_primary.client().flushall()
    tls_shadow.client().flushall()
    t = start_both_tls(tandem, certs, tls_primary, tls_shadow)
    c = tls_client(t, certs)
    assert c.incr("co:n") == 1
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    assert c.incr("co:n") == 2  # the same connection, answered by green now
    assert listener(t, "r")["roles"] == {"primary": "green", "shadow": "blue"}
    wait_until(lambda: tls_primary.client().get("co:n") == b"2", 15, "blue mirrored")
    op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    assert c.incr("co:n") == 3
    assert tls_shadow.client().get("co:n") is not None

    split = start_both_tls(tandem, certs, tls_primary, tls_shadow, mode="split",
                           mirror={"reads": "0%"},
                           listener_extra=listener_tls(certs) + "\nread_your_writes 0ms;"
                           "\nreads { blue weight=50; green weight=50; }")
    sc = tls_client(split, certs)
    sc.set("sp:k", "v")
    wait_until(lambda: tls_shadow.client().get("sp:k") == b"v", 15, "the write mirrored")
    for _ in range(100):
        assert sc.get("sp:k") == b"v"
    assert split.metric("tandem_requests_total", listener="r", backend="green", kind="read") > 0
    assert split.metric("tandem_requests_total", listener="r", backend="blue", kind="read") > 0


def test_command_line_form(tandem, certs, tls_primary, tls_shadow):
    """tandem redis --tls-cert/--tls-key, --primary-tls/--primary-ca, --shadow-cert/--shadow-key."""
    port, admin = free_port(), free_port()
    t = tandem(args=["redis", "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin}",
                     "--tls-cert", certs.server_cert, "--tls-key", certs.server_key,
                     "--primary", f"blue={tls_primary.address}", "--primary-tls", "verify-full",
                     "--primary-ca", certs.ca,
                     "--shadow", f"green={tls_shadow.address}", "--shadow-tls", "verify-full",
                     "--shadow-ca", certs.ca, "--shadow-cert", certs.client_cert,
                     "--shadow-key", certs.client_key, "--mode", "shadow"],
               port=port, admin_port=admin)
    r = redis_cli(t, certs, "SET", "cli:k", "v")
    assert r.stdout.strip() == "OK", r.stderr
    wait_until(lambda: tls_shadow.client().get("cli:k") == b"v", 15, "the mirror over TLS")


def test_confirmation_recheck_over_tls(tandem, certs, tls_primary, tls_shadow):
    """A mismatching read is run again on both TLS backends (the shadow with tandem's client
    certificate) by the re-check's own connections: confirmed, never `unsupported`."""
    tls_primary.client().flushall()
    tls_shadow.client().flushall()
    tls_primary.client().set("rc:k", "alpha")
    tls_shadow.client().set("rc:k", "omega")
    t = start_both_tls(tandem, certs, tls_primary, tls_shadow)
    before_out, before_rc = outcomes(t, "r"), rechecks(t, "r")
    c = tls_client(t, certs)
    assert c.get("rc:k") == b"alpha"
    wait_until(lambda: delta(rechecks(t, "r"), before_rc)["confirmed"] == 1, 30,
               "the re-check's verdict")
    rc = delta(rechecks(t, "r"), before_rc)
    assert rc["unsupported"] == 0 and rc["failed"] == 0, rc
    assert delta(outcomes(t, "r"), before_out)["mismatch"] == 1


# -- what the backend's TLS refuses ---------------------------------------------------

def test_verify_full_wrong_ca_fails_clearly(tandem, certs, tls_primary):
    t = start(tandem, certs, tls_primary, primary_extra=verify_full(certs, ca=certs.wrong_ca))
    c = tls_client(t, certs)
    with pytest.raises(redis.ResponseError) as err:
        c.ping()
    assert "certificate verify failed" in str(err.value)
    assert 'could not connect to backend "blue"' in str(err.value)
    wait_until(lambda: 'TLS with backend "blue" failed: certificate verify failed' in t.log(), 10,
               "the log line")
    # the health probe's handshake fails the same way: down, no password ever sent
    wait_until(lambda: t.metric("tandem_backend_up", backend="blue") == 0, 15, "blue down")
    assert "is down: TLS: handshake: certificate verify failed" in t.log()


def test_verify_full_wrong_name_fails(tandem, certs, tls_primary):
    """The CA is right but the name is not the certificate's: refused too."""
    t = start(tandem, certs, tls_primary,
              primary_extra=verify_full(certs) + "\ntls_server_name db.example.com;")
    with pytest.raises(redis.ResponseError) as err:
        tls_client(t, certs).ping()
    assert "certificate verify failed" in str(err.value)


def test_client_certificate_required_by_the_server(tandem, certs, tls_shadow):
    """tls-auth-clients yes: without tls_cert tandem is refused, with it the commands run."""
    without = start(tandem, certs, tls_shadow, primary_extra=verify_full(certs))
    with pytest.raises((redis.ResponseError, redis.ConnectionError)):
        tls_client(without, certs).set("cc:k", "refused")
    assert tls_shadow.client().get("cc:k") is None
    # the health probe's PING finds it too (TLS 1.3 refuses the client after the handshake)
    wait_until(lambda: without.metric("tandem_backend_up", backend="blue") == 0, 15, "blue down")
    with_cert = start(tandem, certs, tls_shadow, primary_extra=verify_full(certs, client_cert=True))
    c = tls_client(with_cert, certs)
    c.set("cc:k", "accepted")
    assert c.get("cc:k") == b"accepted"
    assert tls_shadow.client().get("cc:k") == b"accepted"
    wait_until(lambda: with_cert.metric("tandem_backend_up", backend="blue") == 1, 15, "blue up")


def test_tls_require_does_not_verify(tandem, certs, tls_primary):
    """tls require (no CA): encrypted, the certificate is not checked, as libpq's require."""
    t = start(tandem, certs, tls_primary, primary_extra="tls require;", listener_extra="")
    c = redis.Redis(host="127.0.0.1", port=t.port, socket_timeout=20)  # plain-text listener
    c.set("req:k", "v")
    assert tls_primary.client().get("req:k") == b"v"


def test_health_probe_over_tls_marks_up(tandem, certs, tls_primary, tls_shadow):
    t = start(tandem, certs, tls_primary, tls_shadow, primary_extra=verify_full(certs),
              shadow_extra=verify_full(certs, client_cert=True))
    wait_until(lambda: t.metric("tandem_backend_up", backend="blue") == 1, 15, "blue up")
    wait_until(lambda: t.metric("tandem_backend_up", backend="green") == 1, 15, "green up")
    # and down once the server is gone: the probe really talks to it
    tls_shadow.kill()
    try:
        wait_until(lambda: t.metric("tandem_backend_up", backend="green") == 0, 20, "green down")
    finally:
        tls_shadow.start()


# -- tandem's own logins: verify and the replica watch ---------------------------------

def test_verify_api_over_tls(tandem, certs, tls_primary, tls_shadow):
    """POST /api/verify logs in to both TLS backends (the shadow with the client certificate)."""
    t = start(tandem, certs, tls_primary, tls_shadow, primary_extra=verify_full(certs),
              shadow_extra=verify_full(certs, client_cert=True), listener_extra="")
    for server in (tls_primary, tls_shadow):
        c = server.client()
        c.flushall()
        for i in range(50):
            c.set(f"vt:{i}", i)

    def run():
        status, doc = call(t, "POST", "/api/verify", {"listener": "r", "settle_ms": 100})
        assert status == 202, doc
        run_id = doc["verify"]["id"]

        def ended():
            doc = call(t, "GET", f"/api/verify/{run_id}")[1]["verify"]
            return doc["state"] != "running" and doc
        return wait_until(ended, 60, "the verify run")

    got = run()
    assert got["state"] == "equal" and got["tables"][0]["rows_checked"] == 50, got
    tls_shadow.client().set("vt:7", "changed")
    got = run()
    assert got["state"] == "different", got
    assert [d["key"] for d in got["differences"]] == ["vt:7"], got


def test_verify_api_wrong_ca_never_logs_in(tandem, certs, tls_primary):
    t = start(tandem, certs, tls_primary, tls_primary,
              primary_extra=verify_full(certs, ca=certs.wrong_ca) + "\npassword secret;",
              shadow_extra=verify_full(certs), listener_extra="")
    status, doc = call(t, "POST", "/api/verify", {"listener": "r"})
    assert status == 202, doc
    run_id = doc["verify"]["id"]
    got = wait_until(lambda: (d := call(t, "GET", f"/api/verify/{run_id}")[1]["verify"])["state"]
                     != "running" and d, 60, "the verify run")
    assert got["state"] == "error" and "certificate verify failed" in got["error"], got


def test_replica_watch_over_tls(tandem, certs):
    """A TLS replica (REPLICAOF over --tls-replication) watched over TLS by tandem."""
    blue = RedisServer("tls-repl-blue", tls=certs).start()
    green = RedisServer("tls-repl-green", tls=certs).start()
    try:
        green.client().execute_command("REPLICAOF", "127.0.0.1", str(blue.port))
        wait_until(lambda: green.client().info("replication").get("master_link_status") == "up",
                   30, "the replica to sync")
        repl = "shadow_source replication;\nreplication { poll 50ms; }"
        t = start(tandem, certs, blue, green, primary_extra=verify_full(certs),
                  shadow_extra=verify_full(certs), listener_extra=listener_tls(certs) + "\n" + repl)
        wait_until(lambda: (listener(t, "r")["replication"] or {}).get("error") is None
                   and listener(t, "r")["replication"].get("primary_position"), 30,
                   "the watch to measure both sides over TLS")
        c = tls_client(t, certs)
        c.set("repl:k", "v")
        assert c.get("repl:k") == b"v"
        wait_until(lambda: green.client().get("repl:k") == b"v", 30, "the write to replicate")

        bad = start(tandem, certs, blue, green, primary_extra=verify_full(certs),
                    shadow_extra=verify_full(certs, ca=certs.wrong_ca),
                    listener_extra=listener_tls(certs) + "\n" + repl)
        wait_until(lambda: "certificate verify failed" in
                   ((listener(bad, "r")["replication"] or {}).get("error") or ""), 30,
                   "the watch to refuse green's certificate")
    finally:
        green.stop()
        blue.stop()


REDIS_USERS = {"app": "on >app-pw ~* &* +@all", "tandem": "on >tandem-pw ~* &* +@all"}


def test_fleet_fence_over_tls(tandem, certs):
    """A fleet's fence (ACL SETUSER) runs over TLS with tandem's own login: the cutover
    fences the application's user on the old primary, the rollback unfences it."""
    store = RedisServer("tls-fence-store").start()
    blue = RedisServer("tls-fence-blue", tls=certs, users=REDIS_USERS).start()
    green = RedisServer("tls-fence-green", tls=certs, users=REDIS_USERS).start()

    def app_set(key):
        c = redis.Redis(host=blue.host, port=blue.port, username="app", password="app-pw",
                        ssl=True, ssl_ca_certs=certs.ca, socket_timeout=20)
        c.set(key, "direct")

    try:
        members = []
        for name in ("m1", "m2"):
            port, admin = free_port(), free_port()
            login = "user tandem;\npassword tandem-pw;\n" + verify_full(certs)
            text = (f"control {{ store redis://{store.address}; fleet tlsfence; member {name}; }}\n"
                    + redis_config(port=port, admin_port=admin, primary=blue, shadow=green,
                                   workers=1, listener_extra=listener_tls(certs),
                                   primary_extra=login + '\nfence "ACL SETUSER app -@write";'
                                   '\nunfence "ACL SETUSER app +@write";',
                                   shadow_extra=login))
            t = tandem(config_text=text, port=port, admin_port=admin)
            wait_until(lambda t=t: t.http("/readyz")[0] == 200, 20, f"{name} to join")
            members.append(t)
        app_set("before")
        tls_client(members[0], certs, username="app", password="app-pw").set("through", "1")
        op = run_operation(members[1], "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        assert sum(t.metric("tandem_fleet_fences_total") for t in members) == 1
        with pytest.raises(redis.exceptions.NoPermissionError):
            app_set("after")
        op = run_operation(members[0], "/api/rollback", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        app_set("after-rollback")
        assert blue.client().get("after-rollback") == b"direct"
    finally:
        for server in (green, blue, store):
            server.stop()


# -- the listener ------------------------------------------------------------------

def test_plain_text_client_on_tls_listener_costs_one_connection(tandem, certs, tls_primary):
    t = start(tandem, certs, tls_primary, primary_extra=verify_full(certs))
    opened = t.metric("tandem_server_connections_opened_total", backend="blue") or 0
    with socket.create_connection(("127.0.0.1", t.port), timeout=10) as s:
        s.sendall(b"*1\r\n$4\r\nPING\r\n")
        got = b""
        while True:
            try:
                chunk = s.recv(4096)
            except ConnectionResetError:  # closed with our bytes unread
                break
            if not chunk:
                break
            got += chunk
    assert b"PONG" not in got
    assert t.metric("tandem_client_errors_total", listener="r", reason="tls") >= 1
    # nothing was opened to the backend for it, and others are served on
    assert (t.metric("tandem_server_connections_opened_total", backend="blue") or 0) == opened
    assert tls_client(t, certs).ping()
    plain = redis.Redis(host="127.0.0.1", port=t.port, socket_timeout=5)
    with pytest.raises(redis.ConnectionError):
        plain.ping()
    assert tls_client(t, certs).ping()
    assert "client TLS handshake failed" in t.log()


def test_client_that_never_handshakes_is_closed(tandem, certs, tls_primary):
    """A TLS listener's client that sends nothing is closed after startup_timeout."""
    port, admin = free_port(), free_port()
    text = redis_config(port=port, admin_port=admin, primary=tls_primary,
                        primary_extra=verify_full(certs), listener_extra=listener_tls(certs))
    text = "limits { startup_timeout 1s; }\n" + text
    t = tandem(config_text=text, port=port, admin_port=admin)
    with socket.create_connection(("127.0.0.1", t.port), timeout=20) as s:
        assert s.recv(100) == b""  # closed by tandem, not by our timeout
    assert "client TLS handshake not done within startup_timeout" in t.log()


# -- tandem -t ----------------------------------------------------------------------

BAD = [
    ("listener r { listen 127.0.0.1:7000; protocol redis; primary b; tls optional; }",
     "tls optional is for postgres listeners"),
    ("listener r { listen 127.0.0.1:7000; protocol redis; primary b; tls required; }",
     "tls required needs tls_cert and tls_key"),
]


@pytest.mark.parametrize("listener,message", BAD)
def test_conf_listener_tls_words(tandem_bin, listener, message):
    text = "backend b { address 127.0.0.1:6379; }\n" + listener + "\n"
    _check_refused(tandem_bin, text, message, line=2)


@pytest.mark.parametrize("extra,message", [
    ("tls verify-full; tls_ca_file /x; tls_cert /c;", "tls_cert without tls_key"),
    ("tls verify-full; tls_ca_file /x; tls_key /k;", "tls_key without tls_cert"),
    ("tls_cert /c; tls_key /k;", "tls_cert is shown over TLS only"),
])
def test_conf_backend_client_cert(tandem_bin, extra, message):
    text = (f"backend b {{ address 127.0.0.1:6379;\n{extra} }}\n"
            "listener r { listen 127.0.0.1:7000; protocol redis; primary b; }\n")
    _check_refused(tandem_bin, text, message, line=2)


def test_conf_redis_tls_accepted(tandem_bin, certs):
    text = (f"backend b {{ address 127.0.0.1:6379; {verify_full(certs, client_cert=True)} }}\n"
            f"listener r {{ listen 127.0.0.1:7000; protocol redis; primary b; tls required;\n"
            f"{listener_tls(certs)} }}\n")
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([tandem_bin, "-t", "-c", f.name], capture_output=True, text=True,
                           timeout=30)
    assert r.returncode == 0, r.stderr


def _check_refused(tandem_bin, text, message, line):
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write(text)
        f.flush()
        r = subprocess.run([tandem_bin, "-t", "-c", f.name], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 1
        assert f"{f.name}:{line}: " in r.stderr and message in r.stderr, r.stderr
