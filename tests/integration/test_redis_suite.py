"""Redis's own test suite through tandem: a few of its files, directly and in
passthrough, must fail nothing through tandem that they do not fail directly.

bench/redis-suite.sh runs the whole suite three ways (direct, passthrough,
shadow); this is its CI-sized subset: files that exercise what a proxy gets
wrong first (protocol errors and RESP3 attributes, the replication stream the
suite reads with SYNC, pub/sub reply counts, RESP3 pushes and CLIENT REPLY,
Lua's deep replies).  Each file runs on fresh servers, one file at a time,
with tandem on one worker: some of the suite's tests send on two connections
without waiting in between (a deferring client's UNSUBSCRIBE, then PUBLISH on
another) and count on Redis reading them in that order; with two workers the
two connections race through different threads (README, "Redis's own test
suite").
Skipped only when the suite's tarball cannot be downloaded (it is cached by
scripts/deps.sh).
"""
import os
import re
import subprocess

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
FILES = "unit/protocol unit/type/string unit/pubsub unit/info-command unit/type/incr unit/tracking"


@pytest.fixture(scope="module")
def suite_tarball():
    got = subprocess.run([os.path.join(ROOT, "scripts", "redis-suite-src.sh")],
                         capture_output=True, text=True, timeout=600)
    if got.returncode != 0:
        pytest.skip(f"Redis's test suite tarball cannot be downloaded: {got.stderr.strip()}")
    return got.stdout.strip()


def test_suite_files_pass_through_tandem_as_directly(suite_tarball, tandem_bin):
    env = dict(os.environ, TANDEM_BIN=tandem_bin)
    got = subprocess.run([os.path.join(ROOT, "bench", "redis-suite.sh"), "--files", FILES,
                          "--modes", "direct passthrough", "--jobs", "1", "--timeout", "120",
                          "--workers", "1"],
                         capture_output=True, text=True, env=env, timeout=900)
    out = got.stdout + got.stderr
    rows = dict(re.findall(r"^(direct|passthrough) +(\d+ +\d+ +\d+)", got.stdout, re.M))
    assert set(rows) == {"direct", "passthrough"}, out
    direct = [int(x) for x in rows["direct"].split()]
    through = [int(x) for x in rows["passthrough"].split()]
    assert direct[0] > 200, out  # the files really ran
    assert "Failing only through tandem: none" in got.stdout, out
    assert through[2] == 0, out  # no file ended early through tandem
    assert through[0] == direct[0], out
    assert got.returncode == 0, out
