"""Logs: with log_format json every stderr line is one JSON object (ts, level,
msg), and no password (tandem's own, a client's) is ever written."""
import json
import signal

import psycopg
import pytest

from harness import pgwire
from harness.pgserver import PASSWORDS


def exercise(t):
    """Logins of every kind, right and wrong, a query error, bad input."""
    for user in ("md5user", "scramuser", "cleartextuser"):
        with t.connect(user=user) as conn:
            conn.execute("SELECT 1")
        with pytest.raises(psycopg.OperationalError):
            t.connect(user=user, password="wrong-" + PASSWORDS[user])
    with t.connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
    with pgwire.PgRaw(t.port) as raw:
        raw.send(b"GET / HTTP/1.1\r\n\r\n", may_fail=True)
        raw.expect_error()


def test_json_logs_and_no_secrets(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, log_format="json", log_level="debug",
                  backend_extra=f'user tandemprobe;\npassword "{PASSWORDS["tandemprobe"]}";')
    exercise(t)
    t.signal(signal.SIGHUP)
    t.wait_metric("tandem_reloads_total", 1)
    with t.connect(user="scramuser") as conn:
        conn.execute("SELECT 2")
    assert t.stop() == 0
    log = t.log()
    lines = log.splitlines()
    assert lines, "no log line at all"
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            pytest.fail(f"not a JSON line: {line!r}")
        assert isinstance(obj, dict), line
        for key in ("ts", "level", "msg"):
            assert key in obj, f"no {key!r} in {line}"
        assert obj["level"] in ("debug", "info", "warn", "error"), line
    for user, pw in PASSWORDS.items():
        assert pw not in log, f"the password of {user} is in the log"


def test_text_logs_have_no_secrets(tandem, pg_primary):
    t = tandem.pg(primary=pg_primary, log_level="debug",
                  backend_extra=f'user tandemprobe;\npassword "{PASSWORDS["tandemprobe"]}";')
    exercise(t)
    t.stop()
    log = t.log()
    assert log.strip(), "no log line at all"
    for user, pw in PASSWORDS.items():
        assert pw not in log, f"the password of {user} is in the log"
