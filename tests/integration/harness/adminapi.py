"""The admin API's mutating calls, for tests: JSON in, (status, JSON) out.

    status, reply = call(t, "PUT", "/api/weights", {"blue": 90, "green": 10})
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
"""
import json
import signal
import urllib.error
import urllib.request

from .util import wait_until


def call(t, method, path, body=None):
    """METHOD path on T's admin port with BODY as JSON; (status, decoded JSON reply)."""
    data = json.dumps(body).encode() if body is not None else None
    # mutations say their body is JSON, as tandem ctl does (else 415)
    req = urllib.request.Request(f"http://127.0.0.1:{t.admin_port}{path}", data=data,
                                 method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def run_operation(t, path, body=None, timeout=60):
    """POST path (a cutover or rollback); wait until the operation is over; its final JSON."""
    status, reply = call(t, "POST", path, body)
    assert status == 202, reply
    op = reply["operation"]
    # pending: a fleet member waits for the store to open the operation for every member
    assert op["state"] in ("pending", "in_progress", "completed"), op
    final = {}

    def over():
        nonlocal final
        status, got = call(t, "GET", f"/api/operations/{op['id']}")
        assert status == 200, got
        final = got["operation"]
        return final["state"] in ("completed", "failed")
    wait_until(over, timeout, f"{path} to finish")
    return final


def status(t):
    """GET /api/status, decoded (200 asserted)."""
    code, body = t.http("/api/status")
    assert code == 200, body
    return json.loads(body)


def listener(t, name="pg"):
    """The listener's entry in /api/status."""
    for entry in status(t)["listeners"]:
        if entry["name"] == name:
            return entry
    raise AssertionError(f"no listener {name}")


def kill(t):
    """SIGKILL: no drain, no last write of the state file."""
    t.signal(signal.SIGKILL)
    t.wait_exit(30)
