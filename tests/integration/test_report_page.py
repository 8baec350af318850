"""GET /report: the shadow-diff page, self-contained, rendered in headless
Chromium (Debian's /usr/bin/chromium driven by playwright-core from
tests/browser, both installed by scripts/deps.sh) against a shadow-mode
tandem after a known workload with one deliberate mismatch.  The screenshot
is kept in tests/integration/artifacts/report-page.png.

Nothing here is skipped: a missing node, chromium or playwright-core is a
failure naming scripts/deps.sh.
"""
import json
import re

import pytest

from harness.browser import page_check
from harness.ops import READ_TOKEN, TOKEN, admin_call, run_known_workload, start_ops_tandem
from harness.redisserver import redis_config, tandem_client
from harness.shadow import execute
from harness.util import free_port, wait_until



@pytest.fixture(scope="module")
def t(tandem_module, pg_primary, pg_shadow, tmp_path_factory):
    return start_ops_tandem(tandem_module, pg_primary, pg_shadow,
                            str(tmp_path_factory.mktemp("report")))


def test_page_is_self_contained(t):
    status, headers, html = admin_call(t.admin_port, "GET", "/report")
    assert status == 200 and headers["content-type"] == "text/html; charset=utf-8"
    assert "default-src 'none'" in headers["content-security-policy"]
    assert html.lstrip().lower().startswith("<!doctype html>")
    # no asset from elsewhere: no src/href, no url(), no import, no absolute URL fetched
    assert not re.search(r'\b(src|href)\s*=', html, re.I), "the page loads an asset"
    assert "url(" not in html and "@import" not in html
    assert not re.search(r'fetch\(\s*["\']https?:', html)
    for api in ("/api/shadow/report", "/api/status"):
        assert api in html


# Payloads in what the page renders from clients: the SQL text (a comment),
# an application_name, and row values that differ (both sides of a sample).
XSS_SQL = "/* <img src=x onerror=window.__xss='sql'> */"
XSS_APP = "<img src=x onerror=window.__xss='app'>"
XSS_PRIMARY = "<img src=x onerror=window.__xss='primary'>"
XSS_SHADOW = "<script>window.__xss='shadow'</script>"


def hostile_mismatch(t, primary, shadow):
    for server in (primary, shadow):
        execute(server, "CREATE TABLE IF NOT EXISTS xss_rows (id int PRIMARY KEY, v text)")
        execute(server, "GRANT ALL ON xss_rows TO PUBLIC")
        execute(server, "DELETE FROM xss_rows")
    execute(primary, "INSERT INTO xss_rows VALUES (1, %s)" % quote(XSS_PRIMARY))
    execute(shadow, "INSERT INTO xss_rows VALUES (1, %s)" % quote(XSS_SHADOW))
    with t.connect(application_name=XSS_APP) as conn:
        assert conn.execute(f"SELECT v {XSS_SQL} FROM xss_rows WHERE id = %s",
                            (1,)).fetchone() == (XSS_PRIMARY,)


def quote(text):
    return "'" + text.replace("'", "''") + "'"


def test_page_renders_the_workload_in_chromium(t, pg_primary, pg_shadow):

    # one noise with its reason: a backend pid is each server's own (inside a
    # transaction, so the read is mirrored whatever the sample rate)
    with t.connect(user="postgres") as conn:
        with conn.transaction():
            conn.execute("SELECT pg_backend_pid() AS page_noise").fetchone()
    wait_until(lambda: (t.metric("tandem_shadow_noise_total", reason="server_local") or 0) >= 1,
               30, "the pid read to be counted as server_local noise")
    hostile_mismatch(t, pg_primary, pg_shadow)
    known = run_known_workload(t, pg_primary, pg_shadow)
    listener = known["report"]["listeners"][0]
    expect = {
        # the admin has a token: the page asks for it, refuses a wrong one
        "token": READ_TOKEN, "wrong_token": READ_TOKEN + "x",
        "no_markup": ["script", "img", "iframe"],
        "fingerprint": known["fingerprint"],
        "sides": {"primary": known["primary_value"], "shadow": known["shadow_value"]},
        "validation": f"{listener['validation_success_ratio'] * 100:.2f}%",
        "texts": [known["statement"], known["fingerprint"], "primary blue", "shadow green",
                  "Top mismatching statements", "Most slower on the shadow", "Guards",
                  "Noise by reason", "page_noise", "server_local 1",
                  # the payloads are shown as text
                  "onerror=window.__xss", "<script>window.__xss"],
    }
    # the validation ratio is over a sliding window: nothing else runs on this
    # tandem, so it holds while the page loads (the window is minutes long)
    page_check(t.admin_port, expect, "report-page")


# Redis: what the page renders from a client is the command's key and the two
# sides' values.
XSS_KEY = "<img src=x onerror=window.__xss='key'>"
XSS_BLUE = "<script>window.__xss='blue'</script>"
XSS_GREEN = "<img src=x onerror=window.__xss='green'>"


def test_redis_values_render_as_text_in_chromium(tandem, redis_primary, redis_shadow, tmp_path):
    """A Redis mismatch whose key and values are markup, behind the admin's token: the page
    shows the values (mismatch samples) and the key (a data verify's differences) as text,
    and no payload runs."""
    redis_primary.client().flushall()
    redis_shadow.client().flushall()
    redis_primary.client().set(XSS_KEY, XSS_BLUE)
    redis_shadow.client().set(XSS_KEY, XSS_GREEN)
    token, read_token = str(tmp_path / "token"), str(tmp_path / "read-token")
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "read-token").write_text(READ_TOKEN + "\n")
    port, admin = free_port(), free_port()
    text = redis_config(port=port, admin_port=admin, primary=redis_primary, shadow=redis_shadow,
                        mirror={"reads": "100%", "queue": "4MB", "timeout": "5s"})
    plain = f"admin {{ listen 127.0.0.1:{admin}; }}"
    assert plain in text, text
    text = text.replace(plain, f"admin {{ listen 127.0.0.1:{admin}; token_file {token}; "
                               f"read_token_file {read_token}; }}")
    t = tandem(config_text=text, port=port, admin_port=admin)
    t.http_token = READ_TOKEN
    assert tandem_client(t).get(XSS_KEY) == XSS_BLUE.encode()

    def mismatch():
        status, body = t.http("/api/shadow/report")
        assert status == 200, body
        rep = json.loads(body)
        return next((s for s in rep["statements"] if s["count"]["mismatch"] >= 1
                     and any(x.get("fingerprint") == s["fingerprint"] for x in rep["samples"])),
                    None)
    st = wait_until(mismatch, 30, "the GET's mismatch in the report", interval=0.2)
    # the key itself is shown by a data verify's differences
    status, _, body = admin_call(admin, "POST", "/api/verify",
                                 {"listener": "r", "tables": [XSS_KEY], "settle_ms": 100},
                                 token=TOKEN)
    assert status == 202, body
    run_id = json.loads(body)["verify"]["id"]

    def ended():
        status, body = t.http(f"/api/verify/{run_id}")
        assert status == 200, body
        run = json.loads(body)["verify"]
        return run["state"] != "running" and run
    run = wait_until(ended, 60, "the verify run", interval=0.2)
    assert run["state"] == "different", run
    page_check(admin, {
        "verify": {"state": "different", "keys": [XSS_KEY]},
        "token": READ_TOKEN,
        "no_markup": ["script", "img", "iframe"],
        "fingerprint": st["fingerprint"],
        "sides": {"primary": XSS_BLUE, "shadow": XSS_GREEN},
        "texts": [XSS_BLUE, XSS_GREEN],
    }, "report-page-redis")
