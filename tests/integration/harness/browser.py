"""The report page in headless Chromium: tests/browser/report_page.js (Debian's
/usr/bin/chromium driven by playwright-core, both installed by scripts/deps.sh).

A missing node, chromium or playwright-core fails the test naming
scripts/deps.sh: nothing here is skipped."""
import json
import os
import shutil
import subprocess

import pytest

from harness.util import ARTIFACTS, REPO

BROWSER_DIR = os.path.join(REPO, "tests", "browser")
CHROMIUM = "/usr/bin/chromium"


def page_check(admin_port, expect, name):
    """Open http://127.0.0.1:ADMIN_PORT/report and check EXPECT (report_page.js's spec:
    texts, fingerprint, sides, token, no_markup, verify, scope, members ...).  The
    screenshot and the spec are kept in tests/integration/artifacts/NAME.{png,expect.json}."""
    node = shutil.which("node")
    missing = [what for what, ok in (("node", node), (CHROMIUM, os.access(CHROMIUM, os.X_OK)),
                                     ("tests/browser/node_modules/playwright-core",
                                      os.path.isdir(os.path.join(BROWSER_DIR, "node_modules",
                                                                 "playwright-core"))))
               if not ok]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/deps.sh")
    os.makedirs(ARTIFACTS, exist_ok=True)
    shot = os.path.join(ARTIFACTS, f"{name}.png")
    if os.path.exists(shot):
        os.unlink(shot)
    spec = os.path.join(ARTIFACTS, f"{name}.expect.json")
    with open(spec, "w") as f:
        json.dump({"url": f"http://127.0.0.1:{admin_port}/report", "screenshot": shot, **expect}, f)
    done = subprocess.run([node, os.path.join(BROWSER_DIR, "report_page.js"), spec],
                          capture_output=True, text=True, timeout=180, cwd=BROWSER_DIR)
    result = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    assert done.returncode == 0, f"the page check failed:\n{result}\nstderr:\n{done.stderr[-3000:]}"
    assert json.loads(result) == {"ok": True, "problems": []}
    assert os.path.getsize(shot) > 10000, "the screenshot is (nearly) empty"
