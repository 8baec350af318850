"""`tandem ctl`: the admin API from a shell.

Against a real shadow-mode tandem with a known workload: status and report
as tables and as --json, auth errors surfaced, an unreachable admin named.
Against a scripted admin server (FakeAdmin): the exact method, path, headers
and body each command sends, and how ctl follows an operation - so ctl is
tested apart from the core.  The tests named *_real_endpoint run the same
commands against tandem itself.
"""
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.ops import TOKEN, admin_call, ctl, run_known_workload, start_ops_tandem
from harness.util import free_port


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary, pg_shadow, tmp_path_factory):
    return start_ops_tandem(tandem_module, pg_primary, pg_shadow,
                            str(tmp_path_factory.mktemp("ctl")))


@pytest.fixture(scope="module")
def known(t, pg_primary, pg_shadow):
    return run_known_workload(t, pg_primary, pg_shadow)


def ok(done):
    assert done.returncode == 0, f"exit {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    return done.stdout


# -- status and report against tandem ------------------------------------------------

def test_status_table(tandem_bin, t, known):
    out = ok(ctl(tandem_bin, t, "status"))
    assert out.startswith("tandem "), out
    lines = out.splitlines()
    header = next(ln for ln in lines if ln.startswith("LISTENER"))
    for col in ("MODE", "PRIMARY", "SHADOW", "VALIDATION", "LAG"):
        assert col in header, header
    row = next(ln for ln in lines if ln.startswith("pg "))
    assert "shadow" in row and "blue" in row and "green" in row, row
    rep = known["report"]["listeners"][0]
    assert f"{rep['validation_success_ratio'] * 100:.2f}%" in row or "%" in row, row
    backends = {ln.split()[0]: ln.split() for ln in lines
                if ln.startswith(("blue ", "green "))}
    assert backends["blue"][1] == "primary" and backends["green"][1] == "shadow", backends
    assert backends["blue"][3] == "yes", backends


def test_status_json_is_the_servers(tandem_bin, t):
    got = json.loads(ok(ctl(tandem_bin, t, "--json", "status")))
    status, _, body = admin_call(t.admin_port, "GET", "/api/status", token=TOKEN)
    want = json.loads(body)
    assert status == 200 and set(got) == set(want)
    assert got["listeners"][0]["name"] == "pg" and got["listeners"][0]["shadow"] == "green"


def test_report_table_shows_the_workload(tandem_bin, t, known):
    out = ok(ctl(tandem_bin, t, "report"))
    assert known["fingerprint"] in out, out
    assert known["statement"] in out, out
    row = next(ln for ln in out.splitlines() if ln.startswith(known["fingerprint"]))
    cells = row.split()
    assert cells[1] == str(known["total"]) and cells[2] == "1", row   # total, mismatch
    # the sample, both sides
    assert f"primary: (v) | {known['primary_value']} |" in out, out
    assert f"shadow:  (v) | {known['shadow_value']} |" in out, out
    pg = next(ln for ln in out.splitlines() if ln.startswith("pg "))
    assert int(pg.split()[2]) >= 1, pg   # mismatches of the listener


def test_report_json_and_top(tandem_bin, t, known):
    rep = json.loads(ok(ctl(tandem_bin, t, "--json", "report", "--top", "1")))
    assert len(rep["statements"]) == 1
    assert rep["statements"][0]["fingerprint"] == known["fingerprint"]
    full = json.loads(ok(ctl(tandem_bin, t, "report", "--json")))   # options anywhere
    assert len(full["statements"]) >= 2


def test_env_fallbacks(tandem_bin, t):
    import subprocess
    env = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    env.update(TANDEM_ADMIN=f"127.0.0.1:{t.admin_port}", TANDEM_TOKEN_FILE=t.token_file)
    done = subprocess.run([tandem_bin, "ctl", "--json", "status"], capture_output=True,
                          text=True, env=env, timeout=30)
    assert done.returncode == 0 and json.loads(done.stdout)["listeners"], done


# -- errors ------------------------------------------------------------------------------

def test_auth_errors_surface(tandem_bin, t, tmp_path):
    done = ctl(tandem_bin, t, "mode", "split", token_file="")
    assert done.returncode == 1 and done.stdout == ""
    assert "PUT /api/mode: 401" in done.stderr and "--token-file" in done.stderr, done.stderr
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-token\n")
    done = ctl(tandem_bin, t, "mode", "split", token_file=str(wrong))
    assert done.returncode == 1 and "PUT /api/mode: 403 wrong admin token" in done.stderr, done
    done = ctl(tandem_bin, t, "mode", "split", token_file=t.read_token_file)
    assert done.returncode == 1 and "PUT /api/mode: 403 this token may only read" in done.stderr
    # reads need a token too (the read token or the admin one)
    for command in ("status", "report"):
        done = ctl(tandem_bin, t, command, token_file="")
        assert done.returncode == 1 and "401" in done.stderr, done
        assert "--token-file" in done.stderr, done.stderr
        ok(ctl(tandem_bin, t, command, token_file=t.read_token_file))
        ok(ctl(tandem_bin, t, command, token_file=t.token_file))


def test_unusable_token_file_is_a_usage_error(tandem_bin, t, tmp_path):
    done = ctl(tandem_bin, t, "status", token_file=str(tmp_path / "absent"))
    assert done.returncode == 2 and "No such file or directory" in done.stderr, done


def test_unreachable_admin(tandem_bin):
    import subprocess
    port = free_port()
    done = subprocess.run([tandem_bin, "ctl", "--admin", f"127.0.0.1:{port}", "status"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 1, done
    assert f"cannot reach the admin API at 127.0.0.1:{port}: Connection refused" in done.stderr


@pytest.mark.parametrize("args,needle", [
    ([], "usage: tandem ctl"),
    (["frobnicate"], 'unknown command "frobnicate"'),
    (["weights"], "expected NAME=WEIGHT"),
    (["weights", "blue=lots"], '"blue=lots": expected NAME=WEIGHT'),
    (["weights", "=5"], "expected NAME=WEIGHT"),
    (["mode"], "expected one of passthrough, shadow, split"),
    (["cutover", "--max-pause", "2"], "expected a duration like 2s"),
    (["cutover", "--sideways"], 'cutover: unknown argument "--sideways"'),
    (["rollback", "--sideways"], 'rollback: unknown argument "--sideways"'),
    (["operation"], "expected one operation id"),
    (["operation", "../metrics"], "expected one operation id"),
    (["report", "--top", "x"], "expected a number"),
    (["--admin", "nope", "status"], "expected HOST:PORT"),
])
def test_usage_errors(tandem_bin, args, needle):
    import subprocess
    done = subprocess.run([tandem_bin, "ctl", *args], capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")})
    assert done.returncode == 2, done
    assert needle in done.stderr, done.stderr


# -- what each command sends: a scripted admin server -----------------------------------

class FakeAdmin:
    """An HTTP server answering from a script: {(method, path): [(status, body), ...]}
    (the last answer repeats); every request recorded as (method, path, headers, body)."""

    def __init__(self, script):
        self.script = {k: list(v) for k, v in script.items()}
        self.requests = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length).decode() if length else None
                fake.requests.append((self.command, self.path, dict(self.headers), body))
                answers = fake.script.get((self.command, self.path)) or [(404, {"error": "not found"})]
                status, doc = answers.pop(0) if len(answers) > 1 else answers[0]
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def calls(self):
        return [(m, p, json.loads(b) if b else None) for m, p, _, b in self.requests]


@pytest.fixture
def fake():
    servers = []

    def make(script):
        servers.append(FakeAdmin(script))
        return servers[-1]
    yield make
    for s in servers:
        s.close()


def run_fake(tandem_bin, f, *args, token_file=None):
    class T:
        admin_port = f.port
    return ctl(tandem_bin, T, *args, token_file=token_file)


def op(state, type_="cutover", reason=""):
    return {"operation": {"id": "op-7", "type": type_, "state": state, "reason": reason,
                          "created": "2026-01-01T00:00:00Z", "started": None, "finished": None}}


def test_weights_sends_put_with_the_weights(tandem_bin, fake, tmp_path):
    token = tmp_path / "token"
    token.write_text("abc123\n")
    f = fake({("PUT", "/api/weights"): [(200, {"weights": {"blue": 90, "green": 10}})]})
    out = ok(run_fake(tandem_bin, f, "weights", "blue=90", "green=10", token_file=str(token)))
    assert f.calls() == [("PUT", "/api/weights", {"blue": 90, "green": 10})]
    headers = f.requests[0][2]
    assert headers["Authorization"] == "Bearer abc123"
    assert headers["Content-Type"] == "application/json"
    assert out == "weights: blue=90 green=10\n"


def test_mode_sends_put(tandem_bin, fake):
    f = fake({("PUT", "/api/mode"): [(200, {"mode": "split"})]})
    assert ok(run_fake(tandem_bin, f, "mode", "split")) == "mode: split\n"
    assert f.calls() == [("PUT", "/api/mode", {"mode": "split"})]


def test_server_refusal_is_printed_with_exit_1(tandem_bin, fake):
    f = fake({("PUT", "/api/mode"): [(400, {"error": "mode: expected passthrough, shadow or split"})]})
    done = run_fake(tandem_bin, f, "mode", "sideways")
    assert done.returncode == 1
    assert done.stderr == ("tandem ctl: PUT /api/mode: 400 mode: expected passthrough, shadow "
                           "or split\n")


def test_cutover_sends_options_and_waits_until_completed(tandem_bin, fake):
    f = fake({("POST", "/api/cutover"): [(202, op("pending"))],
              ("GET", "/api/operations/op-7"): [(200, op("in_progress")),
                                               (200, op("completed"))]})
    out = ok(run_fake(tandem_bin, f, "cutover", "--max-pause", "2s", "--force"))
    calls = f.calls()
    assert calls[0] == ("POST", "/api/cutover", {"max_pause_ms": 2000, "force": True})
    assert [c[:2] for c in calls[1:]] == [("GET", "/api/operations/op-7")] * 2
    assert out.startswith("operation op-7: cutover completed"), out


def test_cutover_without_options_sends_an_empty_object(tandem_bin, fake):
    f = fake({("POST", "/api/cutover"): [(202, op("pending"))]})
    out = ok(run_fake(tandem_bin, f, "cutover", "--no-wait"))
    assert f.calls() == [("POST", "/api/cutover", {})]
    assert out.startswith("operation op-7: cutover pending"), out


def test_failed_operation_exits_1_with_its_reason(tandem_bin, fake):
    f = fake({("POST", "/api/rollback"): [(202, op("in_progress", "rollback"))],
              ("GET", "/api/operations/op-7"): [
                  (200, op("failed", "rollback", "drain did not finish within 2000 ms"))]})
    done = run_fake(tandem_bin, f, "rollback")
    assert done.returncode == 1, done
    assert f.calls()[0] == ("POST", "/api/rollback", {})
    assert "rollback failed (drain did not finish within 2000 ms)" in done.stdout, done.stdout


def test_cutover_json_prints_the_final_operation(tandem_bin, fake):
    f = fake({("POST", "/api/cutover"): [(202, op("pending"))],
              ("GET", "/api/operations/op-7"): [(200, op("completed"))]})
    got = json.loads(ok(run_fake(tandem_bin, f, "--json", "cutover")))
    assert got["operation"]["state"] == "completed"


def test_busy_is_409(tandem_bin, fake):
    f = fake({("POST", "/api/cutover"): [(409, {"error": "operation op-3 (rollback) is running"})]})
    done = run_fake(tandem_bin, f, "cutover")
    assert done.returncode == 1
    assert "POST /api/cutover: 409 operation op-3 (rollback) is running" in done.stderr


def test_operation_gets_it(tandem_bin, fake):
    f = fake({("GET", "/api/operations/op-7"): [(200, op("completed", "rollback"))]})
    out = ok(run_fake(tandem_bin, f, "operation", "op-7"))
    assert f.calls() == [("GET", "/api/operations/op-7", None)]
    assert out.startswith("operation op-7: rollback completed")
    done = run_fake(tandem_bin, f, "operation", "op-8")
    assert done.returncode == 1 and "GET /api/operations/op-8: 404 not found" in done.stderr


def test_status_with_the_fields_the_core_adds(tandem_bin, fake):
    """The status table reads mode, roles, weights, lag, guards and the operation."""
    status = {"version": "0.2.0", "uptime_seconds": 3725, "workers": 2, "draining": False,
              "mode": "split", "roles": {"primary": "green", "shadow": "blue"},
              "weights": {"blue": 90, "green": 10},
              "operation": op("completed")["operation"],
              "guards": [{"name": "shadow_error_rate", "state": "tripped", "trips": 2,
                          "reason": "error rate 7.1% > 5% over 60 s"}],
              "listeners": [{"name": "pg", "listen": "127.0.0.1:6432", "mode": "split",
                             "primary": "green", "shadow": "blue", "clients": 4}],
              "backends": [{"name": "blue", "role": "shadow", "up": True, "lag_ms": 12,
                            "weight": 90, "address": "10.0.0.1:5432", "tls": "disable"},
                           {"name": "green", "role": "primary", "up": False, "lag_ms": 0,
                            "address": "10.0.0.2:5432", "tls": "require"}]}
    f = fake({("GET", "/api/status"): [(200, status)]})
    out = ok(run_fake(tandem_bin, f, "status"))
    assert "up 1h02m" in out and "mode split; primary green, shadow blue" in out, out
    assert "operation op-7: cutover completed" in out
    rows = {ln.split()[0]: ln.split() for ln in out.splitlines() if ln.strip()}
    assert rows["blue"][1:6] == ["shadow", "10.0.0.1:5432", "yes", "12ms", "90"], rows["blue"]
    assert rows["green"][1:6] == ["primary", "10.0.0.2:5432", "no", "0ms", "10"], rows["green"]
    assert rows["shadow_error_rate"][1:4] == ["-", "tripped", "2"], rows["shadow_error_rate"]
    assert "error rate 7.1% > 5% over 60 s" in out


# -- the same commands against tandem's own endpoints -----------------------------------

def test_weights_and_mode_real_endpoint(tandem_bin, t):
    out = ok(ctl(tandem_bin, t, "weights", "blue=90", "green=10", token_file=t.token_file))
    assert out == "weights: blue=90 green=10\n"
    st = json.loads(ok(ctl(tandem_bin, t, "--json", "status")))
    assert st.get("weights", st["listeners"][0].get("weights")) == {"blue": 90, "green": 10}
    table = ok(ctl(tandem_bin, t, "status"))
    rows = {ln.split()[0]: ln.split() for ln in table.splitlines() if ln.strip()}
    assert rows["blue"][5] == "90" and rows["green"][5] == "10", table
    assert ok(ctl(tandem_bin, t, "mode", "split", token_file=t.token_file)) == "mode: split\n"
    assert json.loads(ok(ctl(tandem_bin, t, "--json", "status")))["mode"] == "split"
    ok(ctl(tandem_bin, t, "mode", "shadow", token_file=t.token_file))
    ok(ctl(tandem_bin, t, "weights", "blue=100", "green=0", token_file=t.token_file))


def roles(st):
    return st.get("roles") or st["listeners"][0].get("roles")


def test_cutover_and_rollback_real_endpoint(tandem_bin, t):
    done = ctl(tandem_bin, t, "cutover", "--max-pause", "5s", token_file=t.token_file,
               timeout=120)
    out = ok(done)
    assert "cutover completed" in out, out
    st = json.loads(ok(ctl(tandem_bin, t, "--json", "status")))
    assert roles(st) == {"primary": "green", "shadow": "blue"}
    op_id = out.split()[1].rstrip(":")
    assert "cutover completed" in ok(ctl(tandem_bin, t, "operation", op_id))
    out = ok(ctl(tandem_bin, t, "rollback", token_file=t.token_file, timeout=120))
    assert "rollback completed" in out, out
    st = json.loads(ok(ctl(tandem_bin, t, "--json", "status")))
    assert roles(st) == {"primary": "blue", "shadow": "green"}
