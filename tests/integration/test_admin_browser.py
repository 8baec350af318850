"""The admin API against a web page in the operator's browser.

Without a token (allowed on loopback) the admin port's boundary is who can
reach it - and a browser on the operator's machine can.  A page of another
site can send a form or a text/plain POST without asking (no CORS
preflight), and with DNS rebinding its own name can point at 127.0.0.1.
So: mutations need "Content-Type: application/json" (415 otherwise), a
foreign Origin is refused and so is a Host that is not this server's (403),
all as JSON errors; `tandem ctl` and same-origin requests still work.
"""
import http.client
import json
import subprocess

import pytest

from harness.shadow import shadow_config
from harness.util import free_port


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary, pg_shadow):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow)
    text = text.replace(f"admin {{ listen 127.0.0.1:{admin}; }}",
                        f"admin {{ listen 127.0.0.1:{admin}; server_name tandem.test ops.test; }}")
    return tandem_module(config_text=text, port=port, admin_port=admin)


def request(t, method, path, body=None, headers=None, host=None):
    """(status, headers lowercased, text).  host: the Host header (None: http.client's)."""
    conn = http.client.HTTPConnection("127.0.0.1", t.admin_port, timeout=10)
    try:
        conn.putrequest(method, path, skip_host=host is not None, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        data = body.encode() if isinstance(body, str) else body
        for k, v in (headers or {}).items():
            conn.putheader(k, v)
        if data is not None:
            conn.putheader("Content-Length", str(len(data)))
        conn.endheaders(data)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode()
    finally:
        conn.close()


def mode(t):
    status, _, text = request(t, "GET", "/api/status")
    assert status == 200, text
    return json.loads(text)["mode"]


def json_error(status, headers, text, code):
    assert status == code, (status, text)
    assert headers.get("content-type") == "application/json", headers
    return json.loads(text)["error"]


CROSS_SITE_BODIES = [
    ("text/plain", '{"mode":"passthrough"}'),
    ("text/plain;charset=UTF-8", '{"mode":"passthrough"}'),
    ("application/x-www-form-urlencoded", '{"mode":"passthrough"}='),
    ("multipart/form-data; boundary=x", '--x\r\n\r\n{"mode":"passthrough"}\r\n--x--\r\n'),
    ("application/jsonp", '{"mode":"passthrough"}'),
    (None, '{"mode":"passthrough"}'),
]


@pytest.mark.parametrize("ctype,body", CROSS_SITE_BODIES, ids=[str(c) for c, _ in CROSS_SITE_BODIES])
def test_mutation_without_json_content_type_is_415(t, ctype, body):
    """What a cross-site form or fetch(no-cors) can send: refused, nothing changed."""
    assert mode(t) == "shadow"
    headers = {"Content-Type": ctype} if ctype else {}
    err = json_error(*request(t, "PUT", "/api/mode", body, headers), 415)
    assert "application/json" in err
    err = json_error(*request(t, "POST", "/api/rollback", "{}", headers), 415)
    assert mode(t) == "shadow"


def test_mutation_with_json_content_type_works(t):
    for ctype in ("application/json", "Application/JSON; charset=utf-8"):
        status, _, text = request(t, "PUT", "/api/mode", '{"mode":"shadow"}',
                                  {"Content-Type": ctype})
        assert status == 200, text
        assert json.loads(text) == {"mode": "shadow"}


@pytest.mark.parametrize("origin", ["http://evil.example", "https://evil.example",
                                    "http://127.0.0.1:1", "null", "file://"])
def test_foreign_origin_is_403(t, origin):
    assert mode(t) == "shadow"
    err = json_error(*request(t, "PUT", "/api/mode", '{"mode":"passthrough"}',
                              {"Content-Type": "application/json", "Origin": origin}), 403)
    assert "cross-origin" in err
    json_error(*request(t, "GET", "/api/shadow/report", headers={"Origin": origin}), 403)
    assert mode(t) == "shadow"


def test_same_origin_is_allowed(t):
    me = f"127.0.0.1:{t.admin_port}"
    status, _, text = request(t, "PUT", "/api/mode", '{"mode":"shadow"}',
                              {"Content-Type": "application/json", "Origin": f"http://{me}"},
                              host=me)
    assert status == 200, text


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "localhost.evil.example",
                                  "tandem.test.evil.example", "10.1.2.3:{port}", "bad host",
                                  "[::1", "127.0.0.1:port"])
def test_foreign_host_is_403(t, host):
    """DNS rebinding: the attacker's name resolves to 127.0.0.1; reads refused too
    (the report shows row values)."""
    host = host.format(port=t.admin_port)
    for method, path, body in (("GET", "/api/shadow/report", None),
                               ("GET", "/api/status", None),
                               ("PUT", "/api/mode", '{"mode":"passthrough"}')):
        err = json_error(*request(t, method, path, body, {"Content-Type": "application/json"},
                                  host=host), 403)
        assert "Host" in err
    assert mode(t) == "shadow"
    assert "Host is not an address or name of this admin server" in t.log()


@pytest.mark.parametrize("host", ["127.0.0.1:{port}", "127.0.0.1", "localhost:{port}",
                                  "LOCALHOST", "localhost.", "[::1]:{port}", "127.0.0.2",
                                  "tandem.test:{port}", "OPS.test"])
def test_own_hosts_are_allowed(t, host):
    status, _, text = request(t, "GET", "/api/status", host=host.format(port=t.admin_port))
    assert status == 200, text


def test_metrics_and_health_need_no_special_headers(t):
    """Prometheus and kubelet probes: plain GETs, whatever Host they were given as an IP."""
    for path in ("/metrics", "/healthz", "/readyz"):
        status, _, _ = request(t, "GET", path)
        assert status == 200, path


def test_ctl_still_works(tandem_bin, t):
    done = subprocess.run([tandem_bin, "ctl", "--admin", f"127.0.0.1:{t.admin_port}", "mode",
                           "split"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert mode(t) == "split"
    done = subprocess.run([tandem_bin, "ctl", "--admin", f"localhost:{t.admin_port}", "mode",
                           "shadow"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert mode(t) == "shadow"
