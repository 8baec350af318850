"""Crash safety: tandem SIGKILLed under load and in the middle of a cutover.

Each test kills tandem with SIGKILL (no drain, no last write of the state
file), starts it again on the very same configuration and state file, then
asks the servers themselves: every write a client saw acknowledged is on
the primary the restarted tandem names; the roles are all old or all new,
as the state file says; and a shadow that may have missed writes while
tandem died is still marked diverged after the restart, so no cutover or
rollback moves clients onto it without the operator saying so.
"""
import json
import re
import signal
import subprocess
import threading

import psycopg
import pytest
import redis

from harness.adminapi import call, kill, listener, run_operation, status
from harness.redisserver import RedisServer
from harness.shadow import (create_database, execute, listener_report, pgbench_db_popen,
                            pgbench_init_db, report, rows, shadow_config, wait_drained)
from harness.util import free_port, wait_until

TABLE = "crash_acks"


def with_state(text, path):
    return f"control {{ state_file {path}; }}\n" + text


def shadow_state(t, name="pg"):
    """(diverged, diverged_reason) as /api/shadow/report says."""
    rep = listener_report(report(t), name)
    return rep["diverged"], rep.get("diverged_reason")


# -- tandem killed under pgbench -------------------------------------------------------

@pytest.fixture
def bench_db(pg_primary, pg_shadow):
    db = "crash_bench"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    return db


def history_count(server, db):
    return rows(server, "SELECT count(*) FROM pgbench_history", dbname=db)[0][0]


def processed(out):
    """pgbench's own count of the transactions it saw committed."""
    found = re.search(r"number of transactions actually processed: (\d+)", out)
    assert found, out
    return int(found.group(1))


def test_killed_under_pgbench_every_committed_transaction_is_on_the_primary(
        tandem, pg_primary, pg_shadow, bench_db, tmp_path):
    state = tmp_path / "state.json"
    port, admin = free_port(), free_port()
    text = with_state(shadow_config(port=port, admin_port=admin, primary=pg_primary,
                                    shadow=pg_shadow, mirror={"reads": "0%", "timeout": "10s"}),
                      state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert shadow_state(t) == (False, None)
    before = history_count(pg_primary, bench_db)
    bench = pgbench_db_popen(t.port, bench_db, clients=4, seconds=120)
    try:
        # under load for real: a few hundred transactions committed, mirrors in flight
        wait_until(lambda: history_count(pg_primary, bench_db) - before >= 300, 90,
                   "pgbench to commit 300 transactions through tandem")
        kill(t)
        out, err = bench.communicate(timeout=60)
    finally:
        if bench.poll() is None:
            bench.kill()
            bench.wait()
    committed = processed(out)
    assert committed >= 300, out
    # pgbench inserts one history row per transaction: every one it saw committed is there
    # (a few more may be, those whose COMMIT ran but whose answer died with tandem)
    on_primary = history_count(pg_primary, bench_db) - before
    print(f"pgbench saw {committed} committed; the primary has {on_primary} "
          f"({on_primary / committed:.4f} x)")
    assert on_primary >= committed, (on_primary, committed, out, err)
    assert json.loads(state.read_text())["running"] is True  # no clean stop was recorded
    conf = tmp_path / "tandem.conf"
    conf.write_text(text)
    check = subprocess.run([t.binary, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check
    assert (f'{state}: listener "pg": the last tandem did not stop cleanly: a start marks the '
            'shadow "green" diverged') in check.stdout, check.stdout

    t = tandem(config_text=text, port=port, admin_port=admin)
    # whatever was mirrored in flight may never have reached the shadow: it says so
    diverged, why = shadow_state(t)
    assert diverged is True, why
    assert why["reason"] == "tandem stopped without draining", why
    assert "killed or crashed" in t.log()
    assert t.metric("tandem_shadow_diverged", listener="pg") == 1
    code, reply = call(t, "POST", "/api/cutover", {"max_pause_ms": 8000})
    assert code == 409 and "the shadow diverged" in reply["error"], reply
    assert "tandem stopped without draining" in reply["error"], reply
    assert listener(t)["epoch"] == 0
    # the flag is in the file: a second kill and start still has it
    wait_until(lambda: json.loads(state.read_text())["listeners"]["pg"]["diverged"], 20,
               "the diverged flag in the state file")
    kill(t)
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert shadow_state(t)[0] is True

    # the operator resynchronizes the shadow (out of band) and says so; a clean stop
    # (SIGTERM, drained) then records nothing to fear
    out = subprocess.run([t.binary, "ctl", "--admin", f"127.0.0.1:{admin}", "resynced", "pg"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout == "listener pg: shadow resynchronized (it was diverged)\n", out.stdout
    assert shadow_state(t) == (False, None)
    wait_until(lambda: json.loads(state.read_text())["listeners"]["pg"]["diverged"] is None, 20,
               "the state file to forget the divergence")
    assert t.stop() == 0  # SIGTERM: drained, a clean stop
    assert json.loads(state.read_text())["running"] is False
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert shadow_state(t) == (False, None)


def test_a_recorded_divergence_survives_a_clean_restart_and_refuses_a_cutover(
        tandem, pg_primary, pg_shadow, tmp_path):
    """A shadow that lost a write (as a state file records it) is still diverged after
    any restart, clean or not, until the operator says it was resynchronized."""
    state = tmp_path / "state.json"
    port, admin = free_port(), free_port()
    text = with_state(shadow_config(port=port, admin_port=admin, primary=pg_primary,
                                    shadow=pg_shadow), state)
    state.write_text(json.dumps({
        "version": 1, "running": False,
        "listeners": {"pg": {
            "primary": "blue", "shadow": "green", "epoch": 0, "mode": "shadow",
            "configured_mode": "shadow", "weights": {"blue": 1, "green": 0},
            "configured_weights": {"blue": 1, "green": 0}, "guards": [],
            "diverged": {"reason": "shadow_timeout: the shadow was detached",
                         "statement": "INSERT INTO orders VALUES ($1)"}}}}))
    t = tandem(config_text=text, port=port, admin_port=admin)
    diverged, why = shadow_state(t)
    assert diverged is True
    assert why["reason"] == "shadow_timeout: the shadow was detached", why
    assert why["statement"] == "INSERT INTO orders VALUES ($1)", why
    code, reply = call(t, "POST", "/api/cutover", {"max_pause_ms": 8000})
    assert code == 409 and "INSERT INTO orders" in reply["error"], reply
    assert t.stop() == 0
    recorded = json.loads(state.read_text())
    assert recorded["running"] is False
    assert recorded["listeners"]["pg"]["diverged"]["statement"] == "INSERT INTO orders VALUES ($1)"
    conf = tmp_path / "tandem.conf"
    conf.write_text(text)
    check = subprocess.run([t.binary, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=30)
    assert check.returncode == 0, check
    assert (f'{state}: listener "pg": the shadow "green" is diverged (shadow_timeout: the shadow '
            'was detached)') in check.stdout, check.stdout
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert shadow_state(t)[0] is True
    code, reply = call(t, "POST", "/api/shadow/resynced", {"listener": "nope"})
    assert code == 404, reply
    code, reply = call(t, "POST", "/api/shadow/resynced", {"listener": "pg"})
    assert code == 200, reply
    assert run_operation(t, "/api/cutover", {"max_pause_ms": 8000})["state"] == "completed"


# -- tandem killed during a cutover ----------------------------------------------------------

class Writers:
    """Threads that INSERT ids through tandem and keep those acknowledged, and an INCR
    loop on the Redis listener that keeps the values it was answered."""

    def __init__(self, t, redis_port, tag, threads=2):
        self.t, self.redis_port, self.tag = t, redis_port, tag
        self.stop = threading.Event()
        self.acked = []
        self.incrs = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._pg, args=(k,), daemon=True)
                        for k in range(threads)]
        self.threads.append(threading.Thread(target=self._redis, daemon=True))
        for th in self.threads:
            th.start()

    def _pg(self, k):
        n = 0
        while not self.stop.is_set():
            try:
                with psycopg.connect(self.t.dsn(), autocommit=True) as conn:
                    while not self.stop.is_set():
                        n += 1
                        ident = f"{self.tag}-{k}-{n}"
                        conn.execute(f"INSERT INTO {TABLE} VALUES (%s)", (ident,))
                        with self.lock:
                            self.acked.append(ident)
            except psycopg.Error:
                self.stop.wait(0.05)

    def _redis(self):
        while not self.stop.is_set():
            try:
                c = redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=30)
                while not self.stop.is_set():
                    value = c.incr(f"{self.tag}:counter")
                    with self.lock:
                        self.incrs.append(value)
            except (redis.RedisError, OSError):
                self.stop.wait(0.05)

    def count(self):
        with self.lock:
            return len(self.acked), len(self.incrs)

    def finish(self):
        self.stop.set()
        for th in self.threads:
            th.join(60)
        return list(self.acked), max(self.incrs, default=0)


@pytest.fixture
def redis_pair():
    blue, green = RedisServer("crash-blue").start(), RedisServer("crash-green").start()
    yield blue, green
    blue.stop()
    green.stop()


def two_listener_text(pg_primary, pg_shadow, blue, green, port, rport, admin, state):
    """One tandem, a PostgreSQL and a Redis listener: a cutover flips both or neither."""
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         mirror={"reads": "0%", "timeout": "10s"})
    text += ("backend rblue { address %s; }\nbackend rgreen { address %s; }\n"
             "listener r {\n    listen 127.0.0.1:%d;\n    protocol redis;\n    primary rblue;\n"
             "    shadow rgreen;\n    mode shadow;\n    mirror { reads 0%%; timeout 10s; }\n}\n"
             % (blue.address, green.address, rport))
    return with_state(text, state)


def acked_missing(server, acked):
    have = {r[0] for r in rows(server, f"SELECT id FROM {TABLE}")}
    return [a for a in acked if a not in have]


def start_cutover_held(t, pg_primary):
    """A cutover waiting in its drain: a session holds a transaction open."""
    held = psycopg.connect(t.dsn(), autocommit=False)
    held.execute(f"INSERT INTO {TABLE} VALUES ('held')")
    code, reply = call(t, "POST", "/api/cutover", {"max_pause_ms": 60000})
    assert code == 202, reply
    wait_until(lambda: listener(t)["writes_paused"] and listener(t, "r")["writes_paused"], 30,
               "the cutover to pause writes (its drain)")
    return held


def check_restarted(t, state, writers_result, pg_primary, pg_shadow, blue, green, tag):
    """Roles all old or all new, as the file says; every acknowledged write on the primary."""
    acked, top = writers_result
    recorded = json.loads(state.read_text())["listeners"]
    pg, r = listener(t), listener(t, "r")
    assert pg["epoch"] == r["epoch"] == recorded["pg"]["epoch"] == recorded["r"]["epoch"], (
        pg, r, recorded)
    new = pg["epoch"] == 1
    print(f"restarted with epoch {pg['epoch']}: roles {pg['roles']}")
    assert pg["roles"] == ({"primary": "green", "shadow": "blue"} if new
                           else {"primary": "blue", "shadow": "green"}), pg
    assert r["roles"] == ({"primary": "rgreen", "shadow": "rblue"} if new
                          else {"primary": "rblue", "shadow": "rgreen"}), r
    assert recorded["pg"]["primary"] == pg["roles"]["primary"]
    primary = pg_shadow if new else pg_primary
    print(f"{len(acked)} acknowledged INSERTs, {len(acked_missing(primary, acked))} missing; "
          f"INCR acknowledged up to {top}")
    assert acked_missing(primary, acked) == []
    rprimary = green if new else blue
    assert int(rprimary.client().get(f"{tag}:counter") or 0) >= top
    # clients now reach that primary, and nothing goes back to the other
    with t.connect() as conn:
        assert conn.execute("SELECT inet_server_port()").fetchone()[0] == primary.port
    return new


@pytest.fixture
def acks(pg_primary, pg_shadow):
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {TABLE}")
        execute(server, f"CREATE TABLE {TABLE} (id text PRIMARY KEY)")
        execute(server, f"GRANT ALL ON {TABLE} TO PUBLIC")
    return TABLE


def test_killed_during_a_cutover_drain_keeps_the_old_roles(tandem, pg_primary, pg_shadow,
                                                           redis_pair, acks, tmp_path):
    blue, green = redis_pair
    state = tmp_path / "state.json"
    port, rport, admin = free_port(), free_port(), free_port()
    text = two_listener_text(pg_primary, pg_shadow, blue, green, port, rport, admin, state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    w = Writers(t, rport, "drain")
    wait_until(lambda: min(w.count()) >= 50, 60, "writes and INCRs acknowledged")
    held = start_cutover_held(t, pg_primary)
    assert status(t)["operation"]["state"] == "in_progress"
    t.signal(signal.SIGSTOP)  # frozen in its drain, as the admin API showed it
    kill(t)
    result = w.finish()
    held.close()
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert check_restarted(t, state, result, pg_primary, pg_shadow, blue, green, "drain") is False
    op = status(t)["operation"]
    assert op["state"] == "failed" and "interrupted" in op["reason"], op
    assert acked_missing(pg_primary, ["held"]) == ["held"]  # never committed: nowhere
    assert shadow_state(t)[0] is True  # mirrors in flight died with tandem


@pytest.mark.parametrize("delay_ms", [0, 30, 200])
def test_killed_around_a_cutover_swap_roles_are_all_old_or_all_new(
        tandem, pg_primary, pg_shadow, redis_pair, acks, tmp_path, delay_ms):
    """The drain ends when the held transaction commits; tandem writes the new roles to
    the state file and swaps.  Killed DELAY_MS after that commit: before the file is
    written, between the write and the swap, or after: the restart agrees with the file
    either way, for both listeners, and every acknowledged write is on its primary."""
    blue, green = redis_pair
    state = tmp_path / "state.json"
    port, rport, admin = free_port(), free_port(), free_port()
    text = two_listener_text(pg_primary, pg_shadow, blue, green, port, rport, admin, state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    tag = f"swap{delay_ms}"
    w = Writers(t, rport, tag)
    wait_until(lambda: min(w.count()) >= 50, 60, "writes and INCRs acknowledged")
    held = start_cutover_held(t, pg_primary)
    held.commit()  # the drain can end now
    if delay_ms:
        threading.Event().wait(delay_ms / 1000)  # where in the swap the kill lands varies
    kill(t)
    result = w.finish()
    held.close()
    t = tandem(config_text=text, port=port, admin_port=admin)
    new = check_restarted(t, state, result, pg_primary, pg_shadow, blue, green, tag)
    # the operation agrees with the roles: completed once the new roles were recorded
    op = status(t)["operation"]
    if new:
        assert op["state"] == "completed", op
    else:
        assert op["state"] == "failed" and "interrupted" in op["reason"], op
    # the held transaction's commit was acknowledged: it is on the primary named now
    assert acked_missing(pg_shadow if new else pg_primary, ["held"]) == []
    # the other side may miss writes mirrored in flight: marked, not trusted
    assert shadow_state(t)[0] is True and shadow_state(t, "r")[0] is True
