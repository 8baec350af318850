"""PostgreSQL mode split: reads answered by weights and canary rules, writes by
the primary; transactions and fresh writes keep reads on the primary; a
failing shadow costs no client an error.

Which server answered is read from `SELECT inet_server_port()`: the primary
and the shadow are two real PostgreSQL servers on different ports.  No test
asserts a duration: every wait is an upper bound.
"""
import json
import subprocess
import threading
import time
import urllib.request
import uuid

import psycopg
import pytest

from harness.adminapi import call
from harness.clients import _env, check_pgbench
from harness.pgwire import PgRaw
from harness.shadow import (execute, kill_server, restart_server, shadow_config, wait_drained)
from harness.tandemproc import metric_value
from harness.util import free_port, pg_tool, wait_until


def start_split(factory, primary, shadow, weights, listener_extra="", workers=2,
                mirror=None, **cfg):
    port, admin = free_port(), free_port()
    reads = " ".join(f"{name} weight={w};" for name, w in weights.items())
    extra = f"reads {{ {reads} }}\n" + listener_extra
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow,
                         mode="split", workers=workers, listener_extra=extra,
                         mirror=mirror if mirror is not None else {"reads": "0%"}, **cfg)
    return factory(config_text=text, port=port, admin_port=admin)


def who(conn, sql="SELECT inet_server_port()", **kw):
    return conn.execute(sql, **kw).fetchone()[0]


def answered_by(t, primary, shadow, n, **connect_kw):
    """n reads over one connection: {"primary": k, "shadow": n-k}."""
    got = {"primary": 0, "shadow": 0}
    with t.connect(**connect_kw) as conn:
        for _ in range(n):
            port = who(conn)
            got["primary" if port == primary.port else "shadow"] += 1
            assert port in (primary.port, shadow.port)
    return got


def put_json(t, path, body):
    """PUT path with body (a dict, or raw bytes to send as they are)."""
    if not isinstance(body, bytes):
        return call(t, "PUT", path, body)
    req = urllib.request.Request(f"http://127.0.0.1:{t.admin_port}{path}", data=body,
                                 method="PUT", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def fallbacks(t, reason):
    return metric_value(t.metrics(), "tandem_route_fallbacks_total", listener="pg",
                        reason=reason) or 0.0


# -- weights ------------------------------------------------------------------------------

def test_weights_70_30_over_10000_reads(tandem, pg_primary, pg_shadow):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 70, "green": 30})
    total = {"primary": 0, "shadow": 0}
    errors = []

    def client(n):
        try:
            got = answered_by(t, pg_primary, pg_shadow, n)
            for k in total:
                total[k] += got[k]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(2500,)) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert total["primary"] + total["shadow"] == 10000
    share = total["shadow"] / 10000
    assert 0.28 <= share <= 0.32, total
    text = t.metrics()
    assert metric_value(text, "tandem_route_weight", listener="pg", backend="green") == 30
    assert metric_value(text, "tandem_route_weight", listener="pg", backend="blue") == 70
    assert metric_value(text, "tandem_requests_total", listener="pg", backend="green",
                        kind="read") >= total["shadow"]


def test_weight_zero_and_simple_protocol(tandem, pg_primary, pg_shadow):
    """psql (simple protocol): weights 0/100 send every read to the shadow."""
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 0, "green": 100})
    out = subprocess.run([pg_tool("psql"), "-X", "-At", "-h", "127.0.0.1", "-p", str(t.port),
                          "-U", "trustuser", "-d", "postgres",
                          "-c", "SELECT inet_server_port()", "-c", "SELECT inet_server_port()"],
                         env=_env("trustuser", None), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [str(pg_shadow.port)] * 2


def test_weights_changed_under_load_through_the_api(tandem, pg_primary, pg_shadow):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 100, "green": 0})
    stop = threading.Event()
    seen, errors = set(), []

    def reader():
        try:
            with t.connect() as conn:
                while not stop.is_set():
                    seen.add(who(conn))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for th in threads:
        th.start()
    try:
        for weights in ({"blue": 50, "green": 50}, {"blue": 0, "green": 100},
                        {"blue": 90, "green": 10}, {"blue": 100, "green": 0}):
            status, body = put_json(t, "/api/weights", weights)
            assert status == 200, body
            assert body["weights"] == weights
            time.sleep(0.5)
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors, errors
    assert seen == {pg_primary.port, pg_shadow.port}
    # the next read of an open session follows the new weights
    put_json(t, "/api/weights", {"green": 100, "blue": 0})
    with t.connect() as conn:
        assert {who(conn) for _ in range(20)} == {pg_shadow.port}
    status, body = t.http("/api/status")
    listener = json.loads(body)["listeners"][0]
    assert listener["weights"] == {"blue": 0, "green": 100}
    assert listener["mode"] == "split"


@pytest.mark.parametrize("body, needle", [
    (b"{not json", "invalid JSON"),
    (b"[1,2]", "expected a JSON object"),
    (b'{"blue": "ten"}', "expected an integer"),
    (b'{"purple": 10}', "purple"),
    (b'{"blue": -1}', "0..1000000"),
])
def test_bad_weights_body_is_a_400_naming_the_problem(tandem, pg_primary, pg_shadow, body,
                                                      needle):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 100, "green": 0})
    status, reply = put_json(t, "/api/weights", body)
    assert status == 400
    assert needle in reply["error"], reply
    with t.connect() as conn:  # nothing changed
        assert who(conn) == pg_primary.port


def test_reload_resets_weights_to_the_file(tandem, pg_primary, pg_shadow):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 100, "green": 0})
    with t.connect() as conn:
        put_json(t, "/api/weights", {"blue": 0, "green": 100})
        assert who(conn) == pg_shadow.port
        with open(t.conf_path) as f:
            t.write_config(f.read())
        t.signal(__import__("signal").SIGHUP)
        t.wait_metric("tandem_reloads_total", 1, result="ok")
        wait_until(lambda: who(conn) == pg_primary.port, 10, "reads back on the primary")


# -- consistency -----------------------------------------------------------------------------

@pytest.fixture
def table(pg_primary, pg_shadow):
    name = "sp_" + uuid.uuid4().hex[:12]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name} (id int primary key, v text)")
        execute(server, f"GRANT ALL ON {name} TO PUBLIC")
    yield name
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {name}")


def test_reads_in_a_transaction_and_after_a_write_go_to_the_primary(tandem, pg_primary,
                                                                      pg_shadow, table):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 0, "green": 100},
                    listener_extra="read_your_writes 1500ms;")
    with t.connect() as conn:
        assert who(conn) == pg_shadow.port
        before = fallbacks(t, "in_transaction")
        with conn.transaction():
            assert [who(conn) for _ in range(5)] == [pg_primary.port] * 5
        assert fallbacks(t, "in_transaction") >= before + 5
        # a write, then reads: the primary until read_your_writes has passed
        conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        assert who(conn) == pg_primary.port
        assert conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone() == ("x",)
        assert fallbacks(t, "read_your_writes") >= 2
        wait_until(lambda: who(conn) == pg_shadow.port, 10, "reads back on the shadow")
        # the write was mirrored before the shadow answered: the shadow has it
        assert conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone() == ("x",)
    with t.connect(autocommit=False) as conn:  # psycopg's implicit BEGIN
        assert who(conn) == pg_primary.port
        conn.rollback()


def test_read_your_writes_zero_turns_it_off(tandem, pg_primary, pg_shadow, table):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 0, "green": 100},
                    listener_extra="read_your_writes 0;")
    with t.connect() as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1, 'x')")
        assert who(conn) == pg_shadow.port


def test_comparison_keeps_going_on_routed_reads(tandem, pg_primary, pg_shadow, table):
    """The shadow answers; the primary gets the comparison mirror (reads 100%)."""
    execute(pg_primary, f"INSERT INTO {table} VALUES (1, 'same'), (2, 'primary')")
    execute(pg_shadow, f"INSERT INTO {table} VALUES (1, 'same'), (2, 'shadow')")
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 0, "green": 100},
                    mirror={"reads": "100%"})
    # the client has the shadow's answers; the primary's comparison answers may
    # still be on their way: the session stays open until they are in (a client
    # that leaves first takes the primary's connection, and those answers, with
    # it: README, "Known limits")
    def compared():
        text = t.metrics()
        return (metric_value(text, "tandem_shadow_operations_total", listener="pg",
                             outcome="mismatch") >= 1 and
                metric_value(text, "tandem_shadow_operations_total", listener="pg",
                             outcome="match") >= 1)
    with t.connect() as conn:
        assert conn.execute(f"SELECT v FROM {table} WHERE id = 2").fetchone() == ("shadow",)
        assert conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone() == ("same",)
        wait_until(compared, 20, "one mismatch (id 2) and one match (id 1)")


# -- prepared statements -----------------------------------------------------------------

def test_psycopg_prepared_statements_follow_the_read(tandem, pg_primary, pg_shadow, table):
    execute(pg_primary, f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 50) g")
    execute(pg_shadow, f"INSERT INTO {table} SELECT g, 'v' || g FROM generate_series(1, 50) g")
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 50, "green": 50})
    ports = set()
    with t.connect() as conn:
        for i in range(1, 51):
            row = conn.execute(f"SELECT v, inet_server_port() FROM {table} WHERE id = %s",
                               (i,), prepare=True).fetchone()
            assert row[0] == f"v{i}"
            ports.add(row[1])
        conn.execute(f"UPDATE {table} SET v = 'w' WHERE id = %s", (1,), prepare=True)
        assert conn.execute(f"SELECT v FROM {table} WHERE id = %s", (1,),
                            prepare=True).fetchone() == ("w",)
    assert ports == {pg_primary.port, pg_shadow.port}


@pytest.mark.parametrize("mode", ["prepared", "extended", "simple"])
def test_pgbench_select_only_in_split(tandem, pg_primary, pg_shadow, mode):
    from harness.shadow import create_database, pgbench_db_popen, pgbench_init_db
    db = f"split_{mode}"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 50, "green": 50})
    proc = pgbench_db_popen(t.port, db, clients=4, seconds=3, mode=mode, extra=("-S",))
    assert check_pgbench(proc) > 100  # exit 0, no failed transaction
    text = t.metrics()
    assert metric_value(text, "tandem_requests_total", listener="pg", backend="green",
                        kind="read") > 100


# -- canary rules ----------------------------------------------------------------------------

CANARIES = {
    "user": ("canary c { user postgres; route green; }", {"user": "postgres"}, {}),
    "database": ("canary c { database canarydb; route green; }", {"dbname": "canarydb"}, {}),
    "application_name": ('canary c { application_name "billing-*"; route green; }',
                         {"application_name": "billing-eu"}, {"application_name": "shop"}),
}


@pytest.fixture(scope="module")
def canarydb(pg_primary, pg_shadow):
    from harness.shadow import create_database
    for server in (pg_primary, pg_shadow):
        create_database(server, "canarydb")
    return "canarydb"


@pytest.mark.parametrize("match", sorted(CANARIES))
def test_canary_routes_matching_sessions_only(tandem, pg_primary, pg_shadow, canarydb, match):
    rule, hit, miss = CANARIES[match]
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 100, "green": 0},
                    listener_extra=rule)
    for _ in range(3):
        assert answered_by(t, pg_primary, pg_shadow, 20, **hit) == {"primary": 0, "shadow": 20}
        assert answered_by(t, pg_primary, pg_shadow, 20, **miss) == {"primary": 20, "shadow": 0}


def test_canary_pins_to_primary(tandem, pg_primary, pg_shadow):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 0, "green": 100},
                    listener_extra='canary c { application_name "batch*"; primary; }')
    assert answered_by(t, pg_primary, pg_shadow, 20, application_name="batch-1") == \
        {"primary": 20, "shadow": 0}
    assert answered_by(t, pg_primary, pg_shadow, 20) == {"primary": 0, "shadow": 20}
    assert fallbacks(t, "canary_primary") >= 20


def test_canary_hint(tandem, pg_primary, pg_shadow):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 100, "green": 0},
                    listener_extra="canary c { hint shadow; route green; }")
    with t.connect() as conn:
        for _ in range(10):
            assert who(conn, "/* tandem:shadow */ SELECT inet_server_port()") == pg_shadow.port
            assert who(conn) == pg_primary.port


def test_canary_client_address(tandem, pg_primary, pg_shadow):
    """client 127.0.0.2/32: a raw protocol client bound to 127.0.0.2 matches, 127.0.0.1 not."""
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 100, "green": 0},
                    listener_extra="canary c { client 127.0.0.2/32; route green; }")
    for source, expect in (("127.0.0.2", pg_shadow.port), ("127.0.0.1", pg_primary.port)):
        with PgRaw(t.port, source=source) as wire:
            wire.login("trustuser")
            for _ in range(10):
                rows, _, error = wire.simple_query("SELECT inet_server_port()")
                assert error is None and rows == [[str(expect)]], (source, rows, error)


def test_canary_percentage_keeps_each_client_on_one_side(tandem, pg_primary, pg_shadow):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 100, "green": 0},
                    listener_extra="canary c { percent 50% by application_name; route green; }")
    sides = {}
    for i in range(30):
        app = f"client-{i}"
        got = answered_by(t, pg_primary, pg_shadow, 5, application_name=app)
        assert 0 in got.values(), (app, got)  # all of a session's reads on one side
        sides[app] = "shadow" if got["shadow"] else "primary"
    for app, side in list(sides.items())[:10]:  # and the same side the next time
        got = answered_by(t, pg_primary, pg_shadow, 5, application_name=app)
        assert got[side] == 5, (app, side, got)
    share = sum(1 for s in sides.values() if s == "shadow") / len(sides)
    assert 0.15 <= share <= 0.85, sides


def test_canary_no_mirror_keeps_the_session_off_the_shadow(tandem, pg_primary, pg_shadow,
                                                            table):
    t = start_split(tandem, pg_primary, pg_shadow, {"blue": 0, "green": 100},
                    listener_extra='canary c { application_name "legacy"; no_mirror; }')
    with t.connect(application_name="legacy") as conn:
        conn.execute(f"INSERT INTO {table} VALUES (7, 'legacy')")
        assert who(conn) == pg_primary.port
    with psycopg.connect(pg_shadow.socket_dsn(), autocommit=True) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone() == (0,)


# -- a failing shadow -------------------------------------------------------------------------

def test_shadow_stopped_reads_fall_back_then_return(tandem, pg_primary, pg_victim):
    t = start_split(tandem, pg_primary, pg_victim, {"blue": 0, "green": 100},
                    mirror={"reads": "0%", "timeout": "2s"})
    errors, counts = [], {"primary": 0, "shadow": 0}
    stop = threading.Event()

    def reader():
        try:
            with t.connect() as conn:
                while not stop.is_set():
                    port = who(conn)
                    counts["primary" if port == pg_primary.port else "shadow"] += 1
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for th in threads:
        th.start()
    try:
        wait_until(lambda: counts["shadow"] > 50, 20, "reads on the shadow")
        kill_server(pg_victim)
        before = counts["primary"]
        wait_until(lambda: counts["primary"] > before + 200, 30, "reads on the primary")
        restart_server(pg_victim)
        after = counts["shadow"]
        wait_until(lambda: counts["shadow"] > after + 50, 90, "reads back on the shadow")
    finally:
        stop.set()
        for th in threads:
            th.join()
    assert not errors, errors
    text = t.metrics()
    assert sum(metric_value(text, "tandem_route_fallbacks_total", listener="pg", reason=r) or 0
               for r in ("unhealthy", "retried")) > 0
    assert metric_value(text, "tandem_client_errors_total", listener="pg",
                        reason="backend_lost") == 0


def test_health_probe_logs_in(tandem, pg_primary, pg_shadow, tmp_path):
    """A backend with tandem's own user is probed by a login and SELECT 1."""
    from harness.pgserver import PASSWORDS
    pw = tmp_path / "probe.pw"
    pw.write_text(PASSWORDS["tandemprobe"] + "\n")
    bad = tmp_path / "bad.pw"
    bad.write_text("wrong\n")
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         mode="split", listener_extra="reads { blue weight=0; green weight=100; }",
                         backend_extra=f"user tandemprobe;\npassword_file {pw};")
    text = text.replace(f"password_file {pw};\n}}\nlistener",
                        f"password_file {bad};\n}}\nlistener")  # green's login is refused
    t = tandem(config_text=text, port=port, admin_port=admin)
    wait_until(lambda: metric_value(t.metrics(), "tandem_backend_up", backend="green") == 0, 20,
               "green marked down by its failing login probe")
    wait_until(lambda: metric_value(t.metrics(), "tandem_backend_up", backend="blue") == 1, 30,
               "blue up by its login probe")
    # green's gauge reads 0 before its first probe has even run: the log says when it did
    wait_until(lambda: any('backend "green"' in ln and "is down" in ln
                           for ln in t.log().splitlines()), 60,
               "the log to say green is down")


def test_cli_form(tandem, pg_primary, pg_shadow):
    port, admin = free_port(), free_port()
    t = tandem(args=["postgres", "--listen", f"127.0.0.1:{port}",
                     "--primary", f"blue={pg_primary.address}",
                     "--shadow", f"green={pg_shadow.address}", "--mode", "split",
                     "--read-weights", "blue=0,green=100", "--admin", f"127.0.0.1:{admin}"],
               port=port, admin_port=admin)
    assert answered_by(t, pg_primary, pg_shadow, 10) == {"primary": 0, "shadow": 10}
