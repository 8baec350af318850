"""POST /api/verify (issue 14): tandem verify as an operation inside the
proxy, on a thread of its own, with tandem's own logins to the listener's
primary and shadow.

PostgreSQL: pgbench tables, identical, under a light live load through
tandem: state equal; then a row changed, one deleted and one added on the
shadow behind tandem's back: state different with exactly those three keys,
in GET /api/verify/ID, /api/status and /api/shadow/report.  One run at a
time (409), bad bodies (400 JSON), cancel (DELETE, and a reload), no token
(401).  Redis: a key changed on the shadow is reported.  Real servers.
"""
import json
import os
import signal
import uuid

import pytest
import redis

from harness.browser import page_check
from harness.ops import admin_call, ctl
from harness.redisserver import redis_config
from harness.shadow import (create_database, execute, pgbench_db_popen, pgbench_init_db,
                            rows, shadow_config, wait_drained)
from harness.util import free_port, wait_until


TOKEN = "tok-" + uuid.uuid4().hex
DB = "verifyapi"
PGBENCH = {"listener": "pg", "dbname": DB, "tables": ["pgbench_*"],
           "exclude": ["pgbench_history"], "chunk": 5000}


def with_token(text, admin, directory):
    token_file = os.path.join(directory, "admin-token")
    with open(token_file, "w") as f:
        f.write(TOKEN + "\n")
    plain = f"admin {{ listen 127.0.0.1:{admin}; }}"
    assert plain in text, text
    return text.replace(plain, f"admin {{ listen 127.0.0.1:{admin}; token_file {token_file}; }}")


@pytest.fixture(scope="module")
def pg(tandem_module, pg_primary, pg_shadow, tmp_path_factory):
    """A shadow-mode tandem whose backends name tandem's own login (user postgres),
    and a pgbench database on both servers."""
    for server in (pg_primary, pg_shadow):
        create_database(server, DB)
        pgbench_init_db(server, DB)
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         workers=1, backend_extra="user postgres;")
    directory = str(tmp_path_factory.mktemp("verifyapi"))
    text = with_token(text, admin, directory)
    t = tandem_module(config_text=text, port=port, admin_port=admin)
    t.token_file = os.path.join(directory, "admin-token")
    t.http_token = TOKEN
    return t


def call(t, method, path, body=None, token=TOKEN):
    status, headers, text = admin_call(t.admin_port, method, path, body, token=token)
    assert headers.get("content-type") == "application/json", (status, headers, text)
    return status, json.loads(text)


def get(t, path):
    status, text = t.http(path)
    assert status == 200, (status, text)
    return json.loads(text)


def start(t, body):
    status, doc = call(t, "POST", "/api/verify", body)
    assert status == 202, (status, doc)
    run = doc["verify"]
    assert run["state"] == "running" and run["id"].startswith("verify-"), run
    return run["id"]


def wait_ended(t, run_id, timeout=180):
    def ended():
        status, doc = call(t, "GET", f"/api/verify/{run_id}")
        assert status == 200, (status, doc)
        return doc["verify"]["state"] != "running" and doc["verify"]
    return wait_until(ended, timeout, f"{run_id} to end", interval=0.2)


def test_pg_equal_under_load_then_three_rows_differ(pg, pg_primary, pg_shadow):
    # a light live load through tandem while the run compares
    bench = pgbench_db_popen(pg.port, DB, clients=2, seconds=6, extra=("-R", "50"))
    # max_rate keeps the run going for a while: the second start must meet it running
    run_id = start(pg, {**PGBENCH, "max_rate": 30000, "settle_ms": 2000})
    status, doc = call(pg, "POST", "/api/verify", PGBENCH)
    assert status == 409 and run_id in doc["error"], (status, doc)

    # progress is visible while it runs, in GET /api/verify/ID and /api/status
    def progressing():
        _, doc = call(pg, "GET", f"/api/verify/{run_id}")
        v = doc["verify"]
        return (v["state"] != "running" or v["progress"]["rows_checked"] > 0) and v
    progressing_run = wait_until(progressing, 60, "progress")
    assert progressing_run["progress"]["tables_total"] == 3, progressing_run
    status = get(pg, "/api/status")
    assert status["verify"]["id"] == run_id, status["verify"]

    run = wait_ended(pg, run_id)
    out, err = bench.communicate(timeout=60)
    assert bench.returncode == 0, err
    assert run["state"] == "equal", run
    assert run["error"] is None and run["differences"] == [] and run["differences_total"] == 0
    assert run["progress"]["tables_done"] == run["progress"]["tables_total"] == 3, run
    assert run["primary"] == "blue" and run["shadow"] == "green" and run["dbname"] == DB
    accounts = next(x for x in run["tables"] if x["name"] == "pgbench_accounts")
    assert accounts["rows_checked"] == 100000 and accounts["equal"], accounts
    assert run["started"] and run["finished"]
    wait_drained(pg)

    # behind tandem's back: one row changed, one deleted, one added on the shadow
    execute(pg_shadow, "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid = 100",
            dbname=DB)
    execute(pg_shadow, "DELETE FROM pgbench_accounts WHERE aid = 200", dbname=DB)
    execute(pg_shadow, "INSERT INTO pgbench_accounts VALUES (999999, 1, 0, 'x')", dbname=DB)
    try:
        run_id = start(pg, {**PGBENCH, "settle_ms": 300})
        run = wait_ended(pg, run_id)
        assert run["state"] == "different", run
        want = [("pgbench_accounts", "100", "changed"),
                ("pgbench_accounts", "200", "missing_on_shadow"),
                ("pgbench_accounts", "999999", "missing_on_primary")]
        got = sorted((d["table"], d["key"], d["kind"]) for d in run["differences"])
        assert got == want and run["differences_total"] == 3, run
        status = get(pg, "/api/status")
        assert status["verify"]["id"] == run_id and status["verify"]["state"] == "different"
        rep = get(pg, "/api/shadow/report")["verify"]
        assert rep["id"] == run_id and rep["state"] == "different", rep
        assert sorted((d["table"], d["key"], d["kind"]) for d in rep["differences"]) == want
    finally:
        # the shadow as the primary again, for the tests that follow
        execute(pg_shadow, "DELETE FROM pgbench_accounts WHERE aid IN (100, 200, 999999)",
                dbname=DB)
        for aid, bid, bal, filler in rows(pg_primary, "SELECT aid, bid, abalance, filler FROM "
                                          "pgbench_accounts WHERE aid IN (100, 200)", dbname=DB):
            text = "NULL" if filler is None else "'" + filler.replace("'", "''") + "'"
            execute(pg_shadow, f"INSERT INTO pgbench_accounts VALUES ({aid}, {bid}, {bal}, "
                               f"{text})", dbname=DB)


BAD_BODIES = [
    ("not json", "{", "invalid JSON"),
    ("not an object", [1], "expected a JSON object"),
    ("no listener", {"dbname": DB}, "listener: required"),
    ("unknown listener", {"listener": "nope", "dbname": DB}, "no listener \"nope\""),
    ("no dbname", {"listener": "pg"}, "dbname: required"),
    ("db on postgres", {"listener": "pg", "dbname": DB, "db": 1}, "db: only"),
    ("sample_rate", {**PGBENCH, "sample_rate": 2}, "sample_rate"),
    ("sample_rate zero", {**PGBENCH, "sample_rate": 0}, "sample_rate"),
    ("max_rate", {**PGBENCH, "max_rate": -1}, "max_rate"),
    ("chunk", {**PGBENCH, "chunk": 0}, "chunk"),
    ("tables", {**PGBENCH, "tables": "pgbench_*"}, "tables"),
    ("tables item", {**PGBENCH, "tables": [""]}, "tables[0]"),
    ("too many", {**PGBENCH, "exclude": ["x"] * 65}, "exclude"),
    ("unknown key", {**PGBENCH, "dbnme": "x"}, "unknown key \"dbnme\""),
]


@pytest.mark.parametrize("what,body,message", BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_body_is_400(pg, what, body, message):
    status, doc = call(pg, "POST", "/api/verify", body)
    assert status == 400 and message in doc["error"], (status, doc)
    assert get(pg, "/api/status")["listeners"], "tandem still answers"


def test_without_token_is_401(pg):
    status, doc = call(pg, "POST", "/api/verify", PGBENCH, token=None)
    assert status == 401, (status, doc)
    status, doc = call(pg, "DELETE", "/api/verify/verify-1", {}, token=None)
    assert status == 401, (status, doc)
    # a run's differences are row keys: reading them needs the token as well
    status, doc = call(pg, "GET", "/api/verify/verify-1", token=None)
    assert status == 401, (status, doc)


def test_cancel(pg):
    # at 2000 rows/s the 100000 accounts alone take most of a minute: cancelled long before
    run_id = start(pg, {**PGBENCH, "max_rate": 2000, "chunk": 1000})
    status, doc = call(pg, "DELETE", f"/api/verify/{run_id}", {})
    assert status == 202 and doc["verify"]["id"] == run_id, (status, doc)
    run = wait_ended(pg, run_id)
    assert run["state"] == "cancelled" and run["error"] == "cancelled", run
    status, doc = call(pg, "DELETE", f"/api/verify/{run_id}", {})
    assert status == 409, (status, doc)
    status, doc = call(pg, "GET", "/api/verify/verify-999")
    assert status == 404, (status, doc)

    # POST .../cancel does the same; and a reload cancels a run too
    run_id = start(pg, {**PGBENCH, "max_rate": 2000, "chunk": 1000})
    status, doc = call(pg, "POST", f"/api/verify/{run_id}/cancel", {})
    assert status == 202, (status, doc)
    assert wait_ended(pg, run_id)["state"] == "cancelled"
    run_id = start(pg, {**PGBENCH, "max_rate": 2000, "chunk": 1000})
    pg.signal(signal.SIGHUP)
    assert wait_ended(pg, run_id)["state"] == "cancelled"
    # and the next run starts and finishes normally
    run_id = start(pg, {**PGBENCH, "tables": ["pgbench_branches"]})
    assert wait_ended(pg, run_id)["state"] == "equal"


def test_ctl_verify(pg, pg_shadow, tandem_bin):
    """tandem ctl verify starts a run through the API and follows it: exit 0
    equal, 1 different (the key printed), 2 refused."""
    args = ("verify", "--listener", "pg", "--dbname", DB, "--settle", "200ms", "--wait")
    done = ctl(tandem_bin, pg, *args, "--table", "pgbench_branches", token_file=pg.token_file)
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert "pgbench_branches" in done.stdout and ": equal" in done.stdout, done.stdout

    execute(pg_shadow, "UPDATE pgbench_tellers SET tbalance = tbalance + 1 WHERE tid = 3",
            dbname=DB)
    try:
        done = ctl(tandem_bin, pg, "--json", *args, "--table", "pgbench_tellers",
                   token_file=pg.token_file)
        assert done.returncode == 1, (done.stdout, done.stderr)
        run = json.loads(done.stdout)["verify"]
        assert run["state"] == "different" and [(d["key"], d["kind"]) for d in
                                                run["differences"]] == [("3", "changed")], run
        done = ctl(tandem_bin, pg, "verify", run["id"], token_file=pg.token_file)
        assert done.returncode == 1 and "pgbench_tellers 3: changed" in done.stdout, done.stdout
    finally:
        execute(pg_shadow, "UPDATE pgbench_tellers SET tbalance = tbalance - 1 WHERE tid = 3",
                dbname=DB)
    # refused by the server (no dbname): exit 2 with its message; no token: 2 as well
    done = ctl(tandem_bin, pg, "verify", "--listener", "pg", token_file=pg.token_file)
    assert done.returncode == 2 and "dbname: required" in done.stderr, done.stderr
    done = ctl(tandem_bin, pg, *args)
    assert done.returncode == 2 and "401" in done.stderr, done.stderr
    done = ctl(tandem_bin, pg, "verify", "--dbname", DB)
    assert done.returncode == 2 and "--listener" in done.stderr, done.stderr


def test_sigterm_during_a_run_exits(tandem, pg_primary, pg_shadow):
    """The run's thread is cancelled and joined: tandem exits 0, not hung."""
    port, admin = free_port(), free_port()
    t = tandem(config_text=shadow_config(port=port, admin_port=admin, primary=pg_primary,
                                         shadow=pg_shadow, workers=1,
                                         backend_extra="user postgres;"),
               port=port, admin_port=admin)
    run_id = start(t, {**PGBENCH, "max_rate": 1000, "chunk": 1000})
    _, doc = call(t, "GET", f"/api/verify/{run_id}", token=None)
    assert doc["verify"]["state"] == "running", doc
    t.signal(signal.SIGTERM)
    assert t.wait_exit(60) == 0


def test_redis_changed_key_reported(tandem, redis_primary, redis_shadow):
    """...and shown on the report page as text: the key is markup on purpose."""
    prefix = "vapi:" + uuid.uuid4().hex[:6] + ":"
    hostile = f"{prefix}<img src=x onerror=alert(1)>"
    port, admin = free_port(), free_port()
    t = tandem(config_text=redis_config(port=port, admin_port=admin, primary=redis_primary,
                                        shadow=redis_shadow), port=port, admin_port=admin)
    clients = [redis.Redis(host="127.0.0.1", port=s.port) for s in (redis_primary, redis_shadow)]
    try:
        for c in clients:
            for i in range(199):
                c.set(f"{prefix}{i}", f"v{i}")
            c.set(hostile, "same")
        body = {"listener": "r", "tables": [f"{prefix}*"], "settle_ms": 200}
        status, doc = call(t, "POST", "/api/verify", {**body, "dbname": "x"})
        assert status == 400 and "dbname" in doc["error"], (status, doc)
        run = wait_ended(t, start(t, body))
        assert run["state"] == "equal" and run["protocol"] == "redis", run
        assert run["tables"][0]["rows_checked"] == 200, run

        clients[1].set(hostile, "changed on the shadow")
        run = wait_ended(t, start(t, body))
        assert run["state"] == "different", run
        assert [(d["key"], d["kind"]) for d in run["differences"]] == [(hostile, "changed")], run
        rep = get(t, "/api/shadow/report")["verify"]
        assert [d["key"] for d in rep["differences"]] == [hostile], rep
        page_check(t.admin_port, {"verify": {"state": "different", "keys": [hostile]}},
                   "report-page-verify")
    finally:
        for c in clients:
            for k in c.scan_iter(f"{prefix}*"):
                c.delete(k)
