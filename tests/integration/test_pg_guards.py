"""Guards: a shadow that starts failing trips a guard, reads move back to the
primary, and the cooldown keeps them there.

The shadow fails for real: a table the reads use is dropped on it.  Every
wait is an upper bound; nothing asserts a duration.
"""
import json
import uuid

import pytest

from harness.adminapi import call
from harness.shadow import execute, shadow_config
from harness.tandemproc import metric_value
from harness.util import free_port, wait_until


@pytest.fixture
def table(pg_primary, pg_shadow):
    name = "gd_" + uuid.uuid4().hex[:10]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name} (id int primary key, v text)")
        execute(server, f"INSERT INTO {name} VALUES (1, 'one')")
        execute(server, f"GRANT ALL ON {name} TO PUBLIC")
    yield name
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {name}")


def start(tandem, primary, shadow, guard):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow,
                         mode="split", mirror={"reads": "0%"},
                         listener_extra="reads { blue weight=0; green weight=100; }\n" + guard)
    return tandem(config_text=text, port=port, admin_port=admin)


def guard_status(t):
    status = json.loads(t.http("/api/status")[1])
    return status["listeners"][0]["guards"]


def test_guard_moves_reads_back_when_the_shadow_fails(tandem, pg_primary, pg_shadow, table):
    t = start(tandem, pg_primary, pg_shadow,
              "guard errors { metric shadow_error_rate; above 20%; window 30s; "
              "min_samples 20; action reads-to-primary; cooldown 10m; }")
    sql = f"SELECT v, inet_server_port() FROM {table} WHERE id = 1"
    with t.connect() as conn:
        assert conn.execute(sql).fetchone() == ("one", pg_shadow.port)
        assert guard_status(t)[0]["state"] == "ok"
        execute(pg_shadow, f"DROP TABLE {table}")  # the shadow starts failing
        errors = 0

        def back_on_primary():
            nonlocal errors
            try:
                return conn.execute(sql).fetchone() == ("one", pg_primary.port)
            except Exception:  # noqa: BLE001 - the shadow's errors, until the guard trips
                errors += 1
                return False
        wait_until(back_on_primary, 30, "the guard to move reads to the primary", interval=0.05)
        assert errors >= 20  # min_samples: not before
        for _ in range(20):
            assert conn.execute(sql).fetchone() == ("one", pg_primary.port)
    g = guard_status(t)[0]
    assert g["state"] == "tripped" and g["trips"] == 1
    assert "shadow_error_rate" in g["reason"] and g["cooldown_left_seconds"] > 0
    text = t.metrics()
    assert metric_value(text, "tandem_guard_trips_total", listener="pg", guard="errors") == 1
    assert metric_value(text, "tandem_route_weight", listener="pg", backend="green") == 0
    assert "guard \"errors\"" in t.log() and "tripped" in t.log()
    # the cooldown: the API may not give the shadow reads back yet
    status, reply = call(t, "PUT", "/api/weights", {"blue": 0, "green": 100})
    assert status == 409 and "cooldown" in reply["error"], reply
    assert call(t, "PUT", "/api/weights", {"blue": 100, "green": 0})[0] == 200


def test_default_guard_in_split_mode(tandem, pg_primary, pg_shadow):
    t = start(tandem, pg_primary, pg_shadow, "")
    guards = guard_status(t)
    assert [g["name"] for g in guards] == ["shadow_errors"]
    assert guards[0]["default"] and guards[0]["above"] == 0.05
    assert guards[0]["min_samples"] == 100 and guards[0]["cooldown_seconds"] == 300
