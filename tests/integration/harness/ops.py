"""The operator surface: a shadow-mode tandem with an admin token, a known
workload with one deliberate mismatch, `tandem ctl` runs, raw admin calls.

    t, token = start_ops_tandem(factory, pg_primary, pg_shadow, tmp_dir)
    known = run_known_workload(t, pg_primary, pg_shadow)   # what the report must show
    done = ctl(tandem_bin, t, "status", token=token)      # CompletedProcess
    status, headers, body = admin_call(t.admin_port, "PUT", "/api/mode", {"mode": "split"}, token)
"""
import http.client
import json
import os
import subprocess
import uuid

from .shadow import execute, report, shadow_config
from .util import free_port, wait_until

TOKEN = "tok-" + uuid.uuid4().hex
READ_TOKEN = "read-" + uuid.uuid4().hex


def start_ops_tandem(factory, primary, shadow, directory, token=TOKEN):
    """A shadow-mode tandem (every read compared) whose admin needs TOKEN for every
    call but the open GETs, or READ_TOKEN for reads.  t.http() sends READ_TOKEN."""
    token_file = os.path.join(directory, "admin-token")
    with open(token_file, "w") as f:
        f.write(token + "\n")
    read_token_file = os.path.join(directory, "read-token")
    with open(read_token_file, "w") as f:
        f.write(READ_TOKEN + "\n")
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow,
                         mirror={"reads": "100%", "level": "all", "queue": "4MB",
                                 "timeout": "5s"})
    plain = f"admin {{ listen 127.0.0.1:{admin}; }}"
    assert plain in text, text
    text = text.replace(plain, f"admin {{ listen 127.0.0.1:{admin}; token_file {token_file}; "
                               f"read_token_file {read_token_file}; }}")
    t = factory(config_text=text, port=port, admin_port=admin)
    t.token_file, t.read_token_file, t.http_token = token_file, read_token_file, READ_TOKEN
    return t


def run_known_workload(t, primary, shadow, reads=20):
    """READS matching reads, one deliberate mismatch, two writes; wait until the
    report holds them.  Returns what a report of it must show."""
    table = "ops_" + uuid.uuid4().hex[:10]
    for server in (primary, shadow):
        execute(server, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
        execute(server, f"INSERT INTO {table} VALUES (1, 'same'), (2, 'blue-value')")
        execute(server, f"GRANT ALL ON {table} TO PUBLIC")
    # the deliberate difference: the shadow holds another value for row 2
    execute(shadow, f"UPDATE {table} SET v = 'green-value' WHERE id = 2")
    statement = f"SELECT v FROM {table} WHERE id = $1"
    with t.connect() as conn:
        for _ in range(reads):
            assert conn.execute(f"SELECT v FROM {table} WHERE id = %s", (1,)).fetchone() == ("same",)
        assert conn.execute(f"SELECT v FROM {table} WHERE id = %s", (2,)).fetchone() == \
            ("blue-value",)
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (3, "x"))
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (4, "y"))

    def landed():
        rep = report(t)
        stmts = [s for s in rep["statements"] if s.get("statement") == statement]
        inserts = [s for s in rep["statements"]
                   if (s.get("statement") or "").startswith(f"INSERT INTO {table}")]
        # psycopg may add a unit of its own (it prepares a statement run 5 times)
        ok = (stmts and stmts[0]["count"]["total"] >= reads + 1
              and stmts[0]["count"]["mismatch"] == 1 and inserts
              and inserts[0]["count"]["total"] == 2
              and any(s.get("fingerprint") == stmts[0]["fingerprint"]
                      for s in rep.get("samples", [])))
        return ok and (rep, stmts[0])
    rep, st = wait_until(landed, 30, f"the report to hold the workload on {table}", interval=0.2)
    return {"table": table, "statement": statement, "fingerprint": st["fingerprint"],
            "total": st["count"]["total"], "primary_value": "blue-value", "shadow_value": "green-value",
            "report": rep}


def ctl(tandem_bin, t, *args, token_file=None, env=None, timeout=60):
    """tandem ctl --admin 127.0.0.1:ADMIN [--token-file F] ARGS -> CompletedProcess (text).
    token_file defaults to T's read token file when it has one; "" sends no token."""
    cmd = [tandem_bin, "ctl", "--admin", f"127.0.0.1:{t.admin_port}"]
    if token_file is None:
        token_file = getattr(t, "read_token_file", None)
    if token_file:
        cmd += ["--token-file", token_file]
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TANDEM_")}
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=timeout,
                          env={**clean, **(env or {})}, stdin=subprocess.DEVNULL)


def admin_call(port, method, path, body=None, token=None, auth=None):
    """One request to the admin API -> (status, headers dict lowercased, body text).

    auth: the whole Authorization header (overrides token)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {}
    if auth is not None:
        headers["Authorization"] = auth
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body) if not isinstance(body, (str, bytes)) else body
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, \
            resp.read().decode("utf-8", "replace")
    finally:
        conn.close()
