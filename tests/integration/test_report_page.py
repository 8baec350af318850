"""GET /report: the shadow-diff page, self-contained, rendered in headless
Chromium (Debian's /usr/bin/chromium driven by playwright-core from
tests/browser, both installed by scripts/deps.sh) against a shadow-mode
tandem after a known workload with one deliberate mismatch.  The screenshot
is kept in tests/integration/artifacts/report-page.png.

Nothing here is skipped: a missing node, chromium or playwright-core is a
failure naming scripts/deps.sh.
"""
import json
import os
import re
import shutil
import subprocess

import pytest

from harness.ops import READ_TOKEN, admin_call, run_known_workload, start_ops_tandem
from harness.shadow import execute
from harness.util import ARTIFACTS, REPO, wait_until

BROWSER_DIR = os.path.join(REPO, "tests", "browser")
CHROMIUM = "/usr/bin/chromium"


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
    node = shutil.which("node")
    missing = [what for what, ok in (("node", node), (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
                                     ("tests/browser/node_modules/playwright-core",
                                      os.path.isdir(os.path.join(BROWSER_DIR, "node_modules",
                                                                 "playwright-core"))))
               if not ok]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/deps.sh")

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
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, "report-page.png")
    if os.path.exists(shot):
        os.unlink(shot)
    expect = {
        "url": f"http://127.0.0.1:{t.admin_port}/report",
        "screenshot": shot,
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
    spec = os.path.join(ARTIFACTS, "report-page.expect.json")
    with open(spec, "w") as f:
        json.dump(expect, f)
    done = subprocess.run([node, os.path.join(BROWSER_DIR, "report_page.js"), spec],
                          capture_output=True, text=True, timeout=180, cwd=BROWSER_DIR)
    result = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"the page check failed:\n{result}\nstderr:\n{done.stderr[-3000:]}"
    assert json.loads(result) == {"ok": True, "problems": []}
    assert os.path.getsize(shot) > 10000, "the screenshot is (nearly) empty"
