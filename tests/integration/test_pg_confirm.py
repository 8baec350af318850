"""PostgreSQL shadow mode: a mismatching read is confirmed before it is
reported (issue 13, "Confirmation").

tandem runs the read again on both backends through logins of its own (the
client never waits): if the two answers now agree, the outcome is
`transient`, an ordering artefact; if they still differ after a few
attempts, it is a confirmed `mismatch`.  Writes are never run again.

  - a row changed behind tandem's back on the shadow: a confirmed mismatch,
    both values in the sample;
  - the same, repaired on the shadow while the re-check runs: transient;
  - pgbench tpcb-like at scale 1 with 16 clients (every transaction contends
    on the branch row) and every read compared: no confirmed mismatch, no
    shadow error, the tables equal after the drain;
  - confirm_per_second 0: no re-check, the mismatch is reported at once;
  - a write whose answer differs is never run again.

No test asserts a duration: every wait is an upper bound.
"""
import uuid

import psycopg
import pytest

from harness.shadow import (create_database, delta, execute, outcomes, pgbench_db_popen,
                            pgbench_init_db, rechecks, report, rows, samples_about,
                            shadow_config, table_digest, wait_drained)
from harness.util import free_port, wait_until


def start(tandem, pg_primary, pg_shadow, workers=2, compare=None):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         workers=workers, compare=compare,
                         mirror={"reads": "100%", "level": "all", "queue": "8MB",
                                 "timeout": "5s"})
    return tandem(config_text=text, port=port, admin_port=admin)


@pytest.fixture
def table(pg_primary, pg_shadow):
    name = "cf_" + uuid.uuid4().hex[:10]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        execute(server, f"INSERT INTO {name} VALUES (1, 'alpha'), (2, 'same')")
    yield name
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {name}")


def settle(t, before_out, before_rc, pred, what, timeout=30):
    """Wait until pred(outcome delta, recheck delta) holds; return both deltas."""
    last = []

    def ok():
        last[:] = [delta(outcomes(t), before_out), delta(rechecks(t), before_rc)]
        return pred(*last)
    try:
        wait_until(ok, timeout, what, interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; outcomes {last[0] if last else None}, "
                             f"rechecks {last[1] if last else None}") from None
    return last


def test_real_divergence_is_a_confirmed_mismatch(tandem, pg_primary, pg_shadow, table):
    t = start(tandem, pg_primary, pg_shadow)
    execute(pg_shadow, f"UPDATE {table} SET v = 'omega' WHERE id = 1")
    before_out, before_rc = outcomes(t), rechecks(t)
    with t.connect(user="postgres") as conn:
        # psycopg's parameters: Parse/Bind/Execute, run again with the same value
        assert conn.execute(f"SELECT v AS cf_real FROM {table} WHERE id = %s", (1,)) \
            .fetchone()[0] == "alpha"
    out, rc = settle(t, before_out, before_rc, lambda o, r: o["mismatch"] + o["transient"] >= 1,
                     "the read's verdict")
    assert out["mismatch"] == 1 and out["transient"] == 0, out
    assert rc["confirmed"] == 1 and rc["failed"] == 0 and rc["unsupported"] == 0, rc
    samples = samples_about(report(t), "cf_real")
    assert samples, report(t)["samples"]
    text = str(samples[0])
    assert "alpha" in text and "omega" in text, samples[0]


def test_prepared_binary_parameter_is_confirmed(tandem, pg_primary, pg_shadow, table):
    """A statement prepared in an earlier unit (psycopg's prepare=True), a binary
    parameter (%b): run again with its Parse's declared types, still a mismatch."""
    t = start(tandem, pg_primary, pg_shadow)
    execute(pg_shadow, f"UPDATE {table} SET v = 'omega' WHERE id = 1")
    before_out, before_rc = outcomes(t), rechecks(t)
    with t.connect(user="postgres") as conn:
        sql = f"SELECT v AS cf_prep FROM {table} WHERE id = %b"
        assert conn.execute(sql, (2,), prepare=True).fetchone()[0] == "same"
        assert conn.execute(sql, (1,), prepare=True).fetchone()[0] == "alpha"
    out, rc = settle(t, before_out, before_rc, lambda o, r: o["mismatch"] + o["transient"] >= 1,
                     "the read's verdict")
    assert out["mismatch"] == 1 and out["transient"] == 0, (out, rc)
    assert rc["confirmed"] == 1 and rc["failed"] == 0, rc


def test_repaired_while_rechecked_is_transient(tandem, pg_primary, pg_shadow, table):
    """The shadow answered otherwise, then holds the primary's value again (as a
    mirror arriving late would make it): the re-check sees them agree."""
    t = start(tandem, pg_primary, pg_shadow)
    execute(pg_shadow, f"UPDATE {table} SET v = 'late' WHERE id = 1")
    app = "cf_" + uuid.uuid4().hex[:8]
    sql = f"SELECT pid FROM pg_stat_activity WHERE application_name = '{app}'"
    before_out, before_rc = outcomes(t), rechecks(t)
    conn = psycopg.connect(host="127.0.0.1", port=t.port, user="postgres", dbname="postgres",
                           application_name=app, autocommit=True)
    # the session's own shadow login, before the read
    wait_until(lambda: rows(pg_shadow, sql), 20, "the session's shadow login", interval=0.05)
    own = set(rows(pg_shadow, sql))
    assert conn.execute(f"SELECT v AS cf_late FROM {table} WHERE id = %s", (1,)) \
        .fetchone()[0] == "alpha"
    # a login as APP that is not the session's: the re-check, so the shadow answered 'late'
    wait_until(lambda: set(rows(pg_shadow, sql)) - own, 20, "the re-check's login on the shadow",
               interval=0.02)
    execute(pg_shadow, f"UPDATE {table} SET v = 'alpha' WHERE id = 1")
    out, rc = settle(t, before_out, before_rc, lambda o, r: o["mismatch"] + o["transient"] >= 1,
                     "the read's verdict")
    conn.close()
    assert out["transient"] == 1 and out["mismatch"] == 0, (out, rc)
    assert rc["transient"] == 1, rc


def test_contended_pgbench_has_no_confirmed_mismatch(tandem, pg_primary, pg_shadow):
    db = "confirmbench"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    t = start(tandem, pg_primary, pg_shadow, workers=2)
    before_out, before_rc = outcomes(t), rechecks(t)
    p = pgbench_db_popen(t.port, db, clients=16, seconds=8)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, f"pgbench failed:\n{out}\n{err}"
    assert "failed transactions: 0" in out or "number of failed transactions" not in out, out
    wait_drained(t)
    got, rc = settle(t, before_out, before_rc,
                     lambda o, r: r["confirmed"] + r["transient"] + r["failed"] + r["busy"]
                     + r["unsupported"] >= o["transient"] + o["mismatch"], "every re-check ended")
    for name in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers"):
        assert table_digest(pg_primary, db, name) == table_digest(pg_shadow, db, name), name
    cols = "t.tid, t.bid, t.aid, t.delta"
    assert table_digest(pg_primary, db, "pgbench_history", cols) == \
        table_digest(pg_shadow, db, "pgbench_history", cols)
    assert got["match"] > 0, got
    assert got["shadow_error"] == 0 and got["dropped"] == 0 and got["shadow_timeout"] == 0, got
    # the budget (20/s) may leave some unconfirmed; none of them was confirmed
    assert rc["confirmed"] == 0 and rc["failed"] == 0, (got, rc)
    assert got["mismatch"] == rc["busy"] + rc["unsupported"], (got, rc)
    print(f"contended pgbench -c 16: {got['match']:.0f} match, {got['transient']:.0f} transient, "
          f"{got['mismatch']:.0f} mismatch (unconfirmed: {rc['busy']:.0f} over budget)")


def test_confirmation_off_reports_at_once(tandem, pg_primary, pg_shadow, table):
    t = start(tandem, pg_primary, pg_shadow, compare={"confirm_per_second": "0"})
    execute(pg_shadow, f"UPDATE {table} SET v = 'omega' WHERE id = 1")
    before_out, before_rc = outcomes(t), rechecks(t)
    with t.connect(user="postgres") as conn:
        conn.execute(f"SELECT v AS cf_off FROM {table} WHERE id = %s", (1,)).fetchone()
    out, rc = settle(t, before_out, before_rc, lambda o, r: o["mismatch"] >= 1, "the mismatch")
    assert out["transient"] == 0 and sum(rc.values()) == 0, (out, rc)


def test_a_write_is_never_run_again(tandem, pg_primary, pg_shadow, table):
    t = start(tandem, pg_primary, pg_shadow)
    execute(pg_shadow, f"UPDATE {table} SET v = 'omega' WHERE id = 2")
    before_out, before_rc = outcomes(t), rechecks(t)
    with t.connect(user="postgres") as conn:
        # the answer differs (RETURNING the other column), and it is a write
        got = conn.execute(f"UPDATE {table} SET id = id WHERE id = %s RETURNING v", (2,))
        assert got.fetchone()[0] == "same"
    out, rc = settle(t, before_out, before_rc, lambda o, r: o["mismatch"] >= 1, "the mismatch")
    assert sum(rc.values()) == 0 and out["transient"] == 0, (out, rc)
    assert rows(pg_primary, f"SELECT v FROM {table} WHERE id = 2") == [("same",)]


@pytest.mark.parametrize("samples", ["redacted", "none"])
def test_samples_keep_no_values_when_told(tandem, pg_primary, pg_shadow, table, samples):
    """compare { samples redacted|none; }: the confirmed mismatch is still
    reported (statement, outcome), but neither answer's value reaches the
    report; redacted keeps lengths and a tag that differs when the answers do."""
    t = start(tandem, pg_primary, pg_shadow, compare={"samples": samples})
    execute(pg_shadow, f"UPDATE {table} SET v = 'omega' WHERE id = 1")
    before_out, before_rc = outcomes(t), rechecks(t)
    with t.connect(user="postgres") as conn:
        assert conn.execute(f"SELECT v AS cf_secret FROM {table} WHERE id = %s", (1,)) \
            .fetchone()[0] == "alpha"
    out, _ = settle(t, before_out, before_rc, lambda o, r: o["mismatch"] + o["transient"] >= 1,
                    "the read's verdict")
    assert out["mismatch"] == 1, out
    rep = report(t)
    samples_found = samples_about(rep, "cf_secret")
    assert samples_found, rep["samples"]
    sample = samples_found[0]
    assert "alpha" not in str(rep) and "omega" not in str(rep), sample
    if samples == "none":
        assert sample["primary"] == "" and sample["shadow"] == "", sample
    else:
        assert sample["primary"].startswith("redacted: ") and "tag " in sample["primary"], sample
        assert sample["primary"] != sample["shadow"], sample
