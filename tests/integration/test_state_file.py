"""The state file: a tandem killed after a cutover comes back on the new primary.

`control { state_file PATH; }` keeps roles (with an epoch), mode, weights,
guard cooldowns and the last operations; each test kills tandem with
SIGKILL (no chance to say goodbye) and starts it again with the very same
configuration, then asks the servers themselves who took the writes.
"""
import json
import os
import signal
import subprocess

import pytest

from harness.adminapi import call, kill, listener, run_operation, status
from harness.redisserver import RedisServer, redis_config, tandem_client
from harness.shadow import execute, shadow_config, wait_drained
from harness.util import free_port, wait_until

TABLE = "state_restart"


def with_state(text, path):
    return f"control {{ state_file {path}; }}\n" + text


def pg_text(primary, shadow, state, mode="shadow"):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow, mode=mode,
                         mirror={"reads": "0%", "timeout": "10s"})
    return with_state(text, state), port, admin


@pytest.fixture
def table(pg_primary, pg_shadow):
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {TABLE}")
        execute(server, f"CREATE TABLE {TABLE} (tag text PRIMARY KEY, port int)")
        execute(server, f"GRANT ALL ON {TABLE} TO PUBLIC")
    return TABLE


def write_through(t, tag):
    """An INSERT through tandem; the port of the server that answered it (the primary)."""
    with t.connect() as conn:
        return conn.execute(f"INSERT INTO {TABLE} VALUES (%s, inet_server_port()) "
                            "RETURNING inet_server_port()", (tag,)).fetchone()[0]


def row_on(server, tag):
    """The row TAG as SERVER itself has it: (tag, port of the server that executed it)."""
    with server.connect() as conn:
        return conn.execute(f"SELECT tag, port FROM {TABLE} WHERE tag = %s", (tag,)).fetchone()


def test_pg_restart_after_cutover_keeps_the_new_primary(tandem, pg_primary, pg_shadow, table,
                                                        tmp_path):
    state = tmp_path / "state.json"
    text, port, admin = pg_text(pg_primary, pg_shadow, state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert write_through(t, "before") == pg_primary.port
    wait_drained(t)
    assert listener(t)["epoch"] == 0
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    assert listener(t)["epoch"] == 1
    recorded = json.loads(state.read_text())
    assert recorded["listeners"]["pg"]["primary"] == "green", recorded
    assert recorded["listeners"]["pg"]["epoch"] == 1, recorded
    kill(t)

    t = tandem(config_text=text, port=port, admin_port=admin)  # the same file, unchanged
    pg = listener(t)
    assert pg["roles"] == {"primary": "green", "shadow": "blue"}, pg
    assert pg["cut_over"] is True and pg["epoch"] == 1, pg
    log = t.log()
    assert ('the configuration says primary "blue", shadow "green"; the state file says '
            'primary "green", shadow "blue" (epoch 1)') in log, log
    # the write is answered by green, the new primary ...
    assert write_through(t, "after") == pg_shadow.port
    # ... which executed it itself, and blue got it only as green's mirror
    assert row_on(pg_shadow, "after") == ("after", pg_shadow.port)
    wait_drained(t)
    assert row_on(pg_primary, "after") == ("after", pg_primary.port)
    # the operation of the first process is still there, ids go on after it
    assert status(t)["operation"]["id"] == op["id"]
    code, got = call(t, "GET", f"/api/operations/{op['id']}")
    assert code == 200 and got["operation"]["state"] == "completed", got

    # ctl shows the epoch
    out = subprocess.run([t.binary, "ctl", "--admin", f"127.0.0.1:{admin}", "status"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "epoch 1" in out.stdout, out.stdout


def test_pg_rollback_then_restart_keeps_the_old_roles(tandem, pg_primary, pg_shadow, table,
                                                      tmp_path):
    state = tmp_path / "state.json"
    text, port, admin = pg_text(pg_primary, pg_shadow, state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert run_operation(t, "/api/cutover", {"max_pause_ms": 8000})["state"] == "completed"
    kill(t)
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert listener(t)["epoch"] == 1
    assert write_through(t, "cut") == pg_shadow.port
    # killed: blue (the shadow now) may miss writes that were in flight, so a rollback
    # onto it waits for the operator to say it was resynchronized (test_crash.py)
    code, reply = call(t, "POST", "/api/rollback", {"max_pause_ms": 8000})
    assert code == 409 and "tandem stopped without draining" in reply["error"], reply
    assert call(t, "POST", "/api/shadow/resynced", {"listener": "pg"})[0] == 200
    op = run_operation(t, "/api/rollback", {"max_pause_ms": 8000})
    assert op["state"] == "completed", op
    assert op["id"] == "op-3", op  # ids continue across the restart (op-2: the refusal)
    assert listener(t)["epoch"] == 2
    kill(t)

    t = tandem(config_text=text, port=port, admin_port=admin)
    pg = listener(t)
    assert pg["roles"] == {"primary": "blue", "shadow": "green"}, pg
    assert pg["cut_over"] is False and pg["epoch"] == 2, pg
    assert write_through(t, "back") == pg_primary.port
    assert row_on(pg_primary, "back") == ("back", pg_primary.port)


def test_pg_mode_and_weights_survive_a_restart(tandem, pg_primary, pg_shadow, tmp_path):
    state = tmp_path / "state.json"
    text, port, admin = pg_text(pg_primary, pg_shadow, state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert call(t, "PUT", "/api/mode", {"mode": "split"})[0] == 200
    assert call(t, "PUT", "/api/weights", {"blue": 30, "green": 70})[0] == 200
    kill(t)

    t = tandem(config_text=text, port=port, admin_port=admin)
    pg = listener(t)
    assert pg["mode"] == "split", pg
    assert pg["weights"] == {"blue": 30, "green": 70}, pg
    assert t.metric("tandem_route_weight", listener="pg", backend="green") == 70
    kill(t)

    # the file changed since (the operator edited mode): the file wins, the roles stay
    edited = text.replace("mode shadow;", "mode passthrough;")
    t = tandem(config_text=edited, port=port, admin_port=admin)
    assert listener(t)["mode"] == "passthrough"


def test_a_damaged_state_file_refuses_to_start(tandem_bin, pg_primary, pg_shadow, tmp_path):
    state = tmp_path / "state.json"
    text, _, _ = pg_text(pg_primary, pg_shadow, state)
    conf = tmp_path / "tandem.conf"
    conf.write_text(text)
    cases = {
        '{"version": 1, "listeners": {"pg": {"primary": "gre': "not JSON",
        '{"version": 9, "listeners": {}}': "version: 9 is not a version this tandem reads",
        '{"version": 1, "listeners": {"old": {"primary": "blue", "shadow": "green", "epoch": 0,'
        ' "mode": "shadow", "configured_mode": "shadow", "weights": {},'
        ' "configured_weights": {}}}}': 'listener "old" is not in the configuration',
    }
    for body, message in cases.items():
        state.write_text(body)
        run = subprocess.run([tandem_bin, "-c", str(conf)], capture_output=True, text=True,
                             timeout=60)
        assert run.returncode == 1, (body, run.stderr)
        assert f"{state}: " in run.stderr and message in run.stderr, run.stderr
        assert "refusing to start" in run.stderr, run.stderr
        check = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True,
                               text=True, timeout=60)
        assert check.returncode == 1, check
        assert f"{state}: " in check.stderr and message in check.stderr, check.stderr
        assert state.read_text() == body  # never rewritten by a tandem that did not start


def test_check_reports_a_state_file_that_contradicts_the_file(tandem, tandem_bin, pg_primary,
                                                              pg_shadow, tmp_path):
    state = tmp_path / "state.json"
    text, port, admin = pg_text(pg_primary, pg_shadow, state)
    conf = tmp_path / "tandem.conf"
    conf.write_text(text)
    check = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check
    assert "no state file yet" in check.stdout, check.stdout

    t = tandem(config_text=text, port=port, admin_port=admin)
    assert run_operation(t, "/api/cutover", {"max_pause_ms": 8000})["state"] == "completed"
    check = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check  # tandem would start: on the state file's roles
    assert (f'{state}: listener "pg": the configuration says primary "blue", shadow "green"; '
            'the state file says primary "green", shadow "blue" (epoch 1): taking the state '
            "file's roles") in check.stdout, check.stdout
    assert "configuration is valid" in check.stdout

    # the operator writes the new roles into the file: nothing to report any more
    conf.write_text(text.replace("primary blue;", "primary X;").replace("shadow green;",
                                                                        "shadow blue;")
                    .replace("primary X;", "primary green;"))
    check = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 0, check
    assert "taking the state file's roles" not in check.stdout, check.stdout

    # a primary that is neither: tandem would not start
    conf.write_text("backend red { address 127.0.0.1:1; }\n" +
                    text.replace("shadow green;", "shadow red;"))
    check = subprocess.run([tandem_bin, "-t", "-c", str(conf)], capture_output=True, text=True,
                           timeout=60)
    assert check.returncode == 1, check
    assert "tandem will not pick a primary on its own" in check.stderr, check.stderr


def test_a_reload_cannot_swap_the_roles_of_a_cut_over_listener(tandem, pg_primary, pg_shadow,
                                                               table, tmp_path):
    """After a cutover, a reloaded file naming the new roles is refused (it would
    flip who answers under live sessions); a restart takes it, on the same roles."""
    state = tmp_path / "state.json"
    text, port, admin = pg_text(pg_primary, pg_shadow, state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    assert run_operation(t, "/api/cutover", {"max_pause_ms": 8000})["state"] == "completed"
    swapped = (text.replace("primary blue;", "primary X;").replace("shadow green;", "shadow blue;")
               .replace("primary X;", "primary green;"))
    t.write_config(swapped)
    t.signal(signal.SIGHUP)
    t.wait_metric("tandem_reloads_total", 1, result="error")
    assert "reload refused" in t.log()
    assert write_through(t, "reloaded") == pg_shadow.port
    kill(t)
    t = tandem(config_text=swapped, port=port, admin_port=admin)
    pg = listener(t)
    assert pg["roles"] == {"primary": "green", "shadow": "blue"} and pg["epoch"] == 1, pg
    assert pg["cut_over"] is False  # as the file says now
    assert write_through(t, "restarted") == pg_shadow.port


def test_redis_restart_after_cutover_keeps_the_new_primary(tandem, tmp_path):
    primary, shadow = RedisServer("state-primary").start(), RedisServer("state-shadow").start()
    try:
        state = tmp_path / "state.json"
        port, admin = free_port(), free_port()
        text = with_state(redis_config(port=port, admin_port=admin, primary=primary,
                                       shadow=shadow, mode="shadow",
                                       mirror={"reads": "0%", "timeout": "10s"}), state)
        t = tandem(config_text=text, port=port, admin_port=admin)
        tandem_client(t).set("k", "before")
        op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
        assert op["state"] == "completed", op
        kill(t)

        t = tandem(config_text=text, port=port, admin_port=admin)
        r = listener(t, "r")
        assert r["roles"] == {"primary": "green", "shadow": "blue"} and r["epoch"] == 1, r
        c = tandem_client(t)
        assert int(c.config_get("port")["port"]) == shadow.port  # green answers
        # a write only the primary takes: blocking pops are never mirrored
        shadow.client().rpush("only-primary", "x")
        primary.client().rpush("only-primary", "x")
        assert c.blpop("only-primary", timeout=5) == (b"only-primary", b"x")
        assert shadow.client().llen("only-primary") == 0  # popped on green, the primary
        assert primary.client().llen("only-primary") == 1
        c.set("k", "after")
        wait_drained(t, listener="r")
        assert shadow.client().get("k") == b"after" and primary.client().get("k") == b"after"
    finally:
        primary.stop()
        shadow.stop()


def test_a_guard_cooldown_goes_on_after_a_restart(tandem, pg_primary, pg_shadow, tmp_path):
    """A state file whose guard cools down for 10 more minutes: the restarted
    tandem shows it tripped and still refuses to give the shadow reads."""
    import time
    state = tmp_path / "state.json"
    port, admin = free_port(), free_port()
    text = with_state(shadow_config(
        port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow, mode="split",
        listener_extra="guard errors { metric shadow_error_rate; above 5%; "
                       "action reads-to-primary; cooldown 1h; }"), state)
    until = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() + 600))
    state.write_text(json.dumps({
        "version": 1,
        "listeners": {"pg": {
            "primary": "blue", "shadow": "green", "epoch": 4, "mode": "split",
            "configured_mode": "split", "weights": {"blue": 1, "green": 0},
            "configured_weights": {"blue": 1, "green": 0},
            "guards": [{"name": "errors", "trips": 3, "last_trip": "2025-01-01T00:00:00.000Z",
                        "cooldown_until": until, "reason": "shadow_error_rate 0.5 above 0.05"}]}},
        "operations": []}))
    t = tandem(config_text=text, port=port, admin_port=admin)
    pg = listener(t)
    assert pg["epoch"] == 4, pg
    guard = [g for g in pg["guards"] if g["name"] == "errors"][0]
    assert guard["state"] == "tripped" and guard["trips"] == 3, guard
    assert 500 < guard["cooldown_left_seconds"] <= 600, guard
    code, reply = call(t, "PUT", "/api/weights", {"blue": 50, "green": 50})
    assert code == 409 and 'guard "errors"' in reply["error"], reply
    # and it is written back as it was read
    recorded = json.loads(state.read_text())["listeners"]["pg"]
    assert recorded["guards"][0]["trips"] == 3 and recorded["guards"][0]["cooldown_until"]


def test_a_flip_that_cannot_be_recorded_does_not_happen(tandem, pg_primary, pg_shadow, table,
                                                        tmp_path):
    """The state file's directory disappears: writes fail (logged, counted),
    a cutover fails with nothing swapped; when it is back, writes resume."""
    import shutil
    directory = tmp_path / "state"
    directory.mkdir()
    state = directory / "state.json"
    text, port, admin = pg_text(pg_primary, pg_shadow, state)
    t = tandem(config_text=text, port=port, admin_port=admin)
    wait_until(state.exists, 20, "the first write of the state file")
    shutil.rmtree(directory)
    assert call(t, "PUT", "/api/mode", {"mode": "split"})[0] == 200
    t.wait_metric("tandem_state_file_writes_total", 1, result="error")
    op = run_operation(t, "/api/cutover", {"max_pause_ms": 8000})
    assert op["state"] == "failed" and "could not record the new roles" in op["reason"], op
    pg = listener(t)
    assert pg["roles"] == {"primary": "blue", "shadow": "green"} and pg["epoch"] == 0, pg
    assert write_through(t, "unrecorded") == pg_primary.port
    assert "not written" in t.log()
    directory.mkdir()
    ok = t.metric("tandem_state_file_writes_total", result="ok")
    t.wait_metric("tandem_state_file_writes_total", ok + 1, timeout=30, result="ok")
    assert json.loads(state.read_text())["listeners"]["pg"]["mode"] == "split"
    assert run_operation(t, "/api/cutover", {"max_pause_ms": 8000})["state"] == "completed"
    assert json.loads(state.read_text())["listeners"]["pg"]["epoch"] == 1
