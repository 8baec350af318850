"""The admin HTTP listener: /metrics (Prometheus text), /healthz, /readyz."""
import pytest

from harness.tandemproc import parse_metrics
from harness.util import wait_until


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary):
    return tandem_module.pg(primary=pg_primary)


def test_healthz(t):
    status, body = t.http("/healthz")
    assert status == 200
    assert body.strip() == "ok"


def test_readyz(t):
    status, body = t.http("/readyz")
    assert status == 200
    assert body.strip() == "ready"


def test_metrics_is_prometheus_text(t):
    text = t.metrics()
    samples = parse_metrics(text)     # raises on any line that is not a sample
    names = {name for name, _, _ in samples}
    for name in ("tandem_client_connections", "tandem_client_connections_total",
                 "tandem_requests_total", "tandem_backend_up"):
        assert name in names, f"{name} missing from /metrics:\n{text}"
    assert "# TYPE tandem_client_connections_total counter" in text
    assert "# TYPE tandem_client_connections gauge" in text
    assert "# HELP tandem_requests_total " in text


def test_backend_up(t):
    wait_until(lambda: t.metric("tandem_backend_up", backend="blue") == 1, 20,
               'tandem_backend_up{backend="blue"} 1')
    assert 'tandem_backend_up{backend="blue"} 1' in t.metrics()


def test_connection_and_request_counters_move(t):
    conns0 = t.metric("tandem_client_connections_total", listener="pg") or 0
    reqs0 = t.metric("tandem_requests_total", listener="pg", backend="blue") or 0
    rx0 = t.metric("tandem_bytes_received_total", listener="pg") or 0
    tx0 = t.metric("tandem_bytes_sent_total", listener="pg") or 0
    held = [t.connect() for _ in range(3)]
    try:
        for conn in held:
            for i in range(5):
                assert conn.execute("SELECT %s::int", (i,)).fetchone()[0] == i
        t.wait_metric("tandem_client_connections", 3, listener="pg")
    finally:
        for conn in held:
            conn.close()
    t.wait_metric("tandem_client_connections_total", conns0 + 3, listener="pg")
    t.wait_metric("tandem_requests_total", reqs0 + 15, listener="pg", backend="blue")
    t.wait_metric("tandem_bytes_received_total", rx0 + 1, listener="pg")
    t.wait_metric("tandem_bytes_sent_total", tx0 + 1, listener="pg")
    # the gauge comes back down when the sessions end
    wait_until(lambda: t.metric("tandem_client_connections", listener="pg") == 0, 20,
               "tandem_client_connections back to 0")


def test_requests_have_kind_label(t):
    with t.connect() as conn:
        conn.execute("SELECT 1")
    kinds = {labels.get("kind") for name, labels, _ in parse_metrics(t.metrics())
             if name == "tandem_requests_total"}
    assert kinds and None not in kinds, kinds


def test_server_connections_gauge(t):
    with t.connect() as conn:
        conn.execute("SELECT 1")
        t.wait_metric("tandem_server_connections", 1, backend="blue")


def test_unknown_path_is_404(t):
    status, _ = t.http("/no/such/thing")
    assert status == 404


def test_admin_beyond_loopback_needs_a_token(tandem_bin, tmp_path):
    """An admin server others can reach must not run without a token: the
    configuration is refused (file:line, and on the command line), and a
    token_file makes it valid."""
    import subprocess
    conf = tmp_path / "t.conf"
    conf.write_text("backend blue { address 127.0.0.1:1; }\n"
                    "listener pg { listen 127.0.0.1:5999; primary blue; }\n"
                    "admin { listen 0.0.0.0:9999; }\n")
    done = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 1, done
    assert (f"{conf}:3: admin: 0.0.0.0:9999 is not a loopback address: "
            "a token_file is required") in done.stderr
    done = subprocess.run([tandem_bin, "postgres", "--listen", "127.0.0.1:5999", "--primary",
                           "127.0.0.1:1", "--admin", "0.0.0.0:9999"],
                          capture_output=True, text=True, timeout=20)
    assert done.returncode == 1 and "a token_file is required" in done.stderr, done
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    conf.write_text(conf.read_text().replace("admin { listen 0.0.0.0:9999; }",
                                             f"admin {{ listen 0.0.0.0:9999; token_file {token}; }}"))
    done = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                          timeout=20)
    assert done.returncode == 0, done


def test_status(t):
    """GET /api/status: version, mode and roles per listener, backends with health."""
    import json
    wait_until(lambda: t.metric("tandem_backend_up", backend="blue") == 1, 20, "blue up")
    status, body = t.http("/api/status")
    assert status == 200
    st = json.loads(body)
    assert st["version"] and st["workers"] >= 1 and st["draining"] is False
    (listener,) = st["listeners"]
    assert listener["protocol"] == "postgres" and listener["mode"] == "passthrough"
    assert listener["primary"] == "blue" and listener["shadow"] is None
    (blue,) = [b for b in st["backends"] if b["name"] == "blue"]
    assert blue["up"] is True and blue["tls"] == "disable"


def test_unknown_path_is_a_json_404(t):
    import json
    status, body = t.http("/nope")
    assert status == 404
    assert json.loads(body) == {"error": "not found"}


def test_shadow_report_top_parameter(t):
    import json
    status, body = t.http("/api/shadow/report?top=3")
    assert status == 200 and isinstance(json.loads(body)["statements"], list)
    status, body = t.http("/api/shadow/report?top=lots")
    assert status == 400 and "top" in json.loads(body)["error"]
