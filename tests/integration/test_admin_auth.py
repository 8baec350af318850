"""Admin API security: with admin { token_file F; } every call but GET
/metrics, /healthz, /readyz and /report (the page's shell) needs
"Authorization: Bearer <token>" - 401 without it, 403 with a wrong one, JSON
errors.  admin { read_token_file R; } adds a token for the reads only (the
report's rows and statements, status, fleet, operations, verify runs): 403 on
a mutation.  A token file that cannot be used refuses startup; a non-loopback
admin without a token is refused too (test_pg_admin.py); without token_file
(loopback only) every call is open."""
import json
import signal
import socket
import subprocess

import pytest

from harness.ops import READ_TOKEN, TOKEN, admin_call, start_ops_tandem
from harness.tandemproc import pg_config
from harness.util import free_port, wait_until

MUTATIONS = [("PUT", "/api/weights", {"blue": 100}), ("PUT", "/api/mode", {"mode": "shadow"}),
             ("POST", "/api/cutover", {}), ("POST", "/api/rollback", {}),
             ("DELETE", "/api/anything", None), ("POST", "/no/such/path", None)]


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary, pg_shadow, tmp_path_factory):
    return start_ops_tandem(tandem_module, pg_primary, pg_shadow,
                            str(tmp_path_factory.mktemp("auth")))


@pytest.mark.parametrize("method,path,body", MUTATIONS)
def test_mutation_without_token_is_401(t, method, path, body):
    status, headers, text = admin_call(t.admin_port, method, path, body)
    assert status == 401, (status, text)
    assert headers.get("www-authenticate", "").startswith("Bearer"), headers
    assert headers.get("content-type") == "application/json"
    assert "Authorization: Bearer" in json.loads(text)["error"]


@pytest.mark.parametrize("auth", ["Bearer wrong", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}",
                                  f"Bearer {TOKEN} {TOKEN}"],
                         ids=["wrong", "longer", "shorter", "twice"])
def test_wrong_token_is_403(t, auth):
    status, _, text = admin_call(t.admin_port, "PUT", "/api/mode", {"mode": "shadow"}, auth=auth)
    assert status == 403, (status, text)
    assert json.loads(text) == {"error": "wrong admin token"}


@pytest.mark.parametrize("auth", [f"Basic {TOKEN}", TOKEN, "Bearer", "Bearer   "],
                         ids=["basic", "bare", "bearer-alone", "bearer-blank"])
def test_not_a_bearer_credential_is_401(t, auth):
    status, _, text = admin_call(t.admin_port, "POST", "/api/cutover", {}, auth=auth)
    assert status == 401, (status, text)


# Real mutations, with a body that succeeds on this shadow-mode tandem and
# leaves it as it was (the fixture is shared): the mode it runs in, the read
# weights it has (every read on the primary).  With the expected reply.
SUCCEEDING = [("PUT", "/api/mode", {"mode": "shadow"}, {"mode": "shadow"}),
              ("PUT", "/api/weights", {"blue": 100, "green": 0},
               {"weights": {"blue": 100, "green": 0},
                "listeners": [{"name": "pg", "weights": {"blue": 100, "green": 0}}]})]


@pytest.mark.parametrize("method,path,body,reply", SUCCEEDING, ids=[m[1] for m in SUCCEEDING])
def test_right_token_passes_auth(t, method, path, body, reply):
    """The same call is refused without the token (401) and with a wrong one
    (403), and does its work with the right one: 200 and the endpoint's own
    answer, not merely something other than 401/403."""
    status, _, text = admin_call(t.admin_port, method, path, body)
    assert status == 401, (status, text)
    status, _, text = admin_call(t.admin_port, method, path, body, token=TOKEN + "x")
    assert status == 403, (status, text)
    status, headers, text = admin_call(t.admin_port, method, path, body, token=TOKEN)
    assert status == 200, (status, text)
    assert headers.get("content-type") == "application/json"
    assert json.loads(text) == reply


@pytest.mark.parametrize("method,path,body", MUTATIONS)
def test_right_token_is_never_refused(t, method, path, body):
    """Past auth every mutating call is routed: whatever answers (a handler,
    or 404/405 for a path that has none), it is not 401/403, and JSON."""
    status, _, text = admin_call(t.admin_port, method, path, body, token=TOKEN)
    assert status not in (401, 403), (status, text)
    if path.startswith("/api/") and method != "DELETE":
        assert status not in (404, 405), (status, text)  # a real endpoint answered
    json.loads(text)


def test_bearer_scheme_is_case_insensitive_and_spaces_trimmed(t):
    status, _, text = admin_call(t.admin_port, "POST", "/no/such/path", {},
                                 auth=f"bearer   {TOKEN}  ")
    assert status == 404, (status, text)


# GETs that show row values, statements, addresses or errors: a token needed
VALUE_GETS = ["/api/status", "/api/shadow/report", "/api/shadow/report?top=1&scope=fleet",
              "/api/fleet", "/api/operations/op-1", "/api/verify/verify-1", "/no/such/path"]
# probes, scrapers and the page's shell (no data in it): open to anyone who reaches the port
OPEN_GETS = ["/metrics", "/healthz", "/readyz", "/report"]
CREDENTIALS = {"none": None, "read": f"Bearer {READ_TOKEN}", "admin": f"Bearer {TOKEN}",
               "wrong": f"Bearer {READ_TOKEN}x"}


@pytest.mark.parametrize("who", list(CREDENTIALS))
@pytest.mark.parametrize("path", VALUE_GETS)
def test_value_showing_reads_need_a_token(t, path, who):
    status, headers, text = admin_call(t.admin_port, "GET", path, auth=CREDENTIALS[who])
    assert headers.get("content-type") == "application/json", headers
    if who == "none":
        assert status == 401, (status, text)
        assert headers.get("www-authenticate", "").startswith("Bearer"), headers
        assert "read_token_file" in json.loads(text)["error"]
    elif who == "wrong":
        assert status == 403, (status, text)
        assert json.loads(text) == {"error": "wrong admin token"}
    else:
        assert status not in (401, 403), (status, text)
        if path in ("/api/status", "/api/shadow/report"):
            assert status == 200, (status, text)
            assert json.loads(text)["listeners"], text[:300]


def test_head_of_a_value_showing_read_needs_a_token(t):
    assert admin_call(t.admin_port, "HEAD", "/api/shadow/report")[0] == 401
    assert admin_call(t.admin_port, "HEAD", "/api/shadow/report", token=READ_TOKEN)[0] == 200


@pytest.mark.parametrize("who", list(CREDENTIALS))
@pytest.mark.parametrize("path", OPEN_GETS)
def test_open_reads_need_no_token(t, path, who):
    status, headers, text = admin_call(t.admin_port, "GET", path, auth=CREDENTIALS[who])
    assert status == 200, (path, status, text[:200])
    assert "www-authenticate" not in headers


def test_report_shell_holds_no_data(t):
    """/report is served to anyone: it must be the static page, its data
    fetched by its script with the token (test_admin_browser.py)."""
    status, headers, text = admin_call(t.admin_port, "GET", "/report")
    assert status == 200 and headers["content-type"].startswith("text/html"), headers
    assert 'id="login"' in text and "sessionStorage" in text, text[:300]


@pytest.mark.parametrize("method,path,body", MUTATIONS)
def test_mutation_with_the_read_token_is_403(t, method, path, body):
    status, _, text = admin_call(t.admin_port, method, path, body, token=READ_TOKEN)
    assert status == 403, (status, text)
    assert json.loads(text) == {
        "error": "this token may only read: this call needs the admin token (token_file)"}


def test_token_file_is_read_again_at_each_mutation(t):
    """A rotated secret (the Kubernetes Secret volume is updated in place) needs no restart."""
    with open(t.token_file, "w") as f:
        f.write("rotated-token\n")
    try:
        status, _, _ = admin_call(t.admin_port, "POST", "/no/such/path", {}, token=TOKEN)
        assert status == 403
        status, _, _ = admin_call(t.admin_port, "POST", "/no/such/path", {},
                                  token="rotated-token")
        assert status == 404
    finally:
        with open(t.token_file, "w") as f:
            f.write(TOKEN + "\n")


def _start(tandem_bin, admin_line):
    conf = (f"backend blue {{ address 127.0.0.1:1; }}\n"
            f"listener pg {{ listen 127.0.0.1:{free_port()}; primary blue; }}\n{admin_line}\n")
    return subprocess.run([tandem_bin, "-c", "/dev/stdin"], input=conf, capture_output=True,
                          text=True, timeout=20)


@pytest.mark.parametrize("content,why", [("", "is empty"), ("\n  \n", "is empty"),
                                         ("two words\n", "printable ASCII without spaces"),
                                         ("x" * 1025, "longer than 1024 bytes")])
def test_unusable_token_file_refuses_startup(tandem_bin, tmp_path, content, why):
    token = tmp_path / "token"
    token.write_text(content)
    done = _start(tandem_bin, f"admin {{ listen 127.0.0.1:{free_port()}; token_file {token}; }}")
    assert done.returncode == 1, done
    assert f'admin: token file "{token}"' in done.stderr and why in done.stderr, done.stderr


def test_missing_token_file_refuses_startup(tandem_bin, tmp_path):
    token = tmp_path / "absent"
    done = _start(tandem_bin, f"admin {{ listen 127.0.0.1:{free_port()}; token_file {token}; }}")
    assert done.returncode == 1, done
    assert f'admin: token file "{token}": No such file or directory' in done.stderr, done.stderr


@pytest.mark.parametrize("uri", [b"/api/mode\r2099-01-01T00:00:00.000Z error FORGED",
                                 b"/api/mode?\x1b[2J\x1b]0;owned\x07", b"/api/\x9bmode"])
def test_logged_uri_is_escaped(t, uri):
    """The refused call is logged with its URI: a CR must not start a forged
    line, an escape sequence must not reach the operator's terminal."""
    with socket.create_connection(("127.0.0.1", t.admin_port), timeout=10) as s:
        s.sendall(b"PUT " + uri + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        answer = s.recv(65536)
    assert answer.startswith(b"HTTP/1.1 "), answer
    with open(t.log_path, "rb") as f:
        log = f.read()
    assert b"FORGED" not in log or b"\\r2099-01-01T00:00:00.000Z error FORGED" in log
    for line in log.splitlines():
        assert not line.startswith(b"2099-"), line
        assert b"\x1b" not in line and b"\x07" not in line and b"\x9b" not in line, line
        assert b"\r" not in line, line


# -- token_file and SIGHUP -------------------------------------------------------

def _reload(t, text, outcome):
    done = t.log().count(outcome)
    t.write_config(text)
    t.signal(signal.SIGHUP)
    wait_until(lambda: t.log().count(outcome) > done, 20, f"{outcome!r} in the log")


def test_token_file_added_removed_by_reload(tandem, pg_primary, tmp_path):
    """Adding token_file and sending SIGHUP used to be silently ignored: the
    admin kept answering mutations without a token."""
    port, admin = free_port(), free_port()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    plain = pg_config(port=port, primary=pg_primary, admin_port=admin)
    with_token = plain.replace(f"admin {{ listen 127.0.0.1:{admin}; }}",
                               f"admin {{ listen 127.0.0.1:{admin}; token_file {token}; }}")
    assert with_token != plain
    t = tandem(config_text=plain, port=port, admin_port=admin)
    # no token_file (loopback only): every call is open, reads included
    assert admin_call(admin, "POST", "/no/such/path", {})[0] == 404
    assert admin_call(admin, "GET", "/api/shadow/report")[0] == 200

    _reload(t, with_token, "configuration reloaded")
    assert f'admin: token_file "{token}" added' in t.log()
    assert admin_call(admin, "POST", "/no/such/path", {})[0] == 401
    assert admin_call(admin, "POST", "/no/such/path", {}, token=TOKEN)[0] == 404
    assert admin_call(admin, "GET", "/api/shadow/report")[0] == 401
    assert admin_call(admin, "GET", "/api/shadow/report", token=TOKEN)[0] == 200

    # a token file that cannot be used: the reload is refused, the token stays
    token.write_text("")
    _reload(t, with_token, "reload failed")
    assert f'reload failed: admin: token file "{token}"' in t.log()
    token.write_text(TOKEN + "\n")
    assert admin_call(admin, "POST", "/no/such/path", {})[0] == 401

    _reload(t, plain, "configuration reloaded")
    assert "admin: token_file removed: no call needs a token from now on" in t.log()
    assert admin_call(admin, "POST", "/no/such/path", {})[0] == 404
    assert admin_call(admin, "GET", "/api/status")[0] == 200


def test_read_token_file_added_changed_removed_by_reload(tandem, pg_primary, tmp_path):
    port, admin = free_port(), free_port()
    token, read1, read2 = tmp_path / "token", tmp_path / "read1", tmp_path / "read2"
    token.write_text(TOKEN + "\n")
    read1.write_text("reader-one\n")
    read2.write_text("reader-two\n")
    plain = pg_config(port=port, primary=pg_primary, admin_port=admin)
    base = f"admin {{ listen 127.0.0.1:{admin}; token_file {token}; }}"
    with_token = plain.replace(f"admin {{ listen 127.0.0.1:{admin}; }}", base)
    assert with_token != plain
    t = tandem(config_text=with_token, port=port, admin_port=admin)
    assert admin_call(admin, "GET", "/api/status", token="reader-one")[0] == 403

    _reload(t, with_token.replace(base, base[:-1] + f"read_token_file {read1}; }}"),
            "configuration reloaded")
    assert f'admin: read_token_file "{read1}" added: its token may read from now on' in t.log()
    assert admin_call(admin, "GET", "/api/status", token="reader-one")[0] == 200
    assert admin_call(admin, "GET", "/api/status", token=TOKEN)[0] == 200
    assert admin_call(admin, "PUT", "/api/mode", {"mode": "passthrough"},
                      token="reader-one")[0] == 403

    # an unusable read token file: the reload is refused, the one in force stays
    _reload(t, with_token.replace(base, base[:-1] + f"read_token_file {tmp_path}/absent; }}"),
            "reload failed")
    assert f'admin: token file "{tmp_path}/absent": No such file or directory' in t.log()
    assert admin_call(admin, "GET", "/api/status", token="reader-one")[0] == 200

    _reload(t, with_token.replace(base, base[:-1] + f"read_token_file {read2}; }}"),
            "configuration reloaded")
    assert f'admin: read_token_file is now "{read2}"' in t.log()
    assert admin_call(admin, "GET", "/api/status", token="reader-one")[0] == 403
    assert admin_call(admin, "GET", "/api/status", token="reader-two")[0] == 200

    _reload(t, with_token, "configuration reloaded")
    assert "admin: read_token_file removed: only token_file's token may read" in t.log()
    assert admin_call(admin, "GET", "/api/status", token="reader-two")[0] == 403
    assert admin_call(admin, "GET", "/api/status", token=TOKEN)[0] == 200


def test_read_token_file_without_token_file_refuses_startup(tandem_bin, tmp_path):
    """Mutations would be open while reads are not: a configuration error."""
    read = tmp_path / "read"
    read.write_text("reader\n")
    done = _start(tandem_bin, f"admin {{ listen 127.0.0.1:{free_port()};\n"
                              f"read_token_file {read}; }}")
    assert done.returncode != 0, done
    assert ":4: admin: read_token_file needs token_file" in done.stderr, done.stderr
