"""PostgreSQL shadow mode: mirror { order commit; } (issue 13, "In-transaction
reads under contention").

With the strict order a mirrored unit waits until the shadow acknowledged
every commit the primary had answered when it answered that unit, on any
session of the listener, so an in-transaction read sees on the shadow what
it saw on the primary.  Under pgbench tpcb-like at scale 1 with 16 clients
(every transaction contends on the branch row) and every read compared:
no confirmed mismatch, no shadow error, nothing dropped, the tables equal
after the drain.  Two workers, so a commit acknowledged on one thread
releases units waiting on the other.  `tandem -t` checks the setting.

No test asserts a duration: every wait is an upper bound.
"""
import subprocess

from harness.shadow import (create_database, delta, outcomes, pgbench_db_popen,
                            pgbench_init_db, rechecks, shadow_config, table_digest,
                            wait_drained)
from harness.util import free_port, wait_until


def test_strict_order_under_contention(tandem, pg_primary, pg_shadow):
    db = "orderbench"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         workers=2, mirror={"reads": "100%", "queue": "8MB", "timeout": "10s",
                                            "order": "commit"})
    t = tandem(config_text=text, port=port, admin_port=admin)
    before_out, before_rc = outcomes(t), rechecks(t)
    p = pgbench_db_popen(t.port, db, clients=16, seconds=8)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, f"pgbench failed:\n{out}\n{err}"
    wait_drained(t)
    last = []

    def rechecks_over():
        last[:] = [delta(outcomes(t), before_out), delta(rechecks(t), before_rc)]
        o, r = last
        return (r["confirmed"] + r["transient"] + r["failed"] + r["busy"] + r["unsupported"]
                >= o["transient"] + o["mismatch"])
    wait_until(rechecks_over, 60, "every re-check ended", interval=0.2)
    got, rc = last
    for name in ("pgbench_accounts", "pgbench_branches", "pgbench_tellers"):
        assert table_digest(pg_primary, db, name) == table_digest(pg_shadow, db, name), name
    cols = "t.tid, t.bid, t.aid, t.delta"
    assert table_digest(pg_primary, db, "pgbench_history", cols) == \
        table_digest(pg_shadow, db, "pgbench_history", cols)
    assert got["match"] > 0, got
    assert got["shadow_error"] == 0 and got["dropped"] == 0 and got["shadow_timeout"] == 0, got
    assert rc["confirmed"] == 0 and rc["failed"] == 0, (got, rc)
    print(f"order commit, pgbench -c 16: {got['match']:.0f} match, "
          f"{got['transient']:.0f} transient, {got['mismatch']:.0f} mismatch")


def test_order_setting_is_checked(tandem_bin, tmp_path):
    good = tmp_path / "good.conf"
    bad = tmp_path / "bad.conf"
    body = ("backend a {{ address 127.0.0.1:1; }}\nbackend b {{ address 127.0.0.1:2; }}\n"
            "listener l {{\n    listen 127.0.0.1:{port}; primary a; shadow b; mode shadow;\n"
            "    mirror {{ order {order}; }}\n}}\n")
    good.write_text(body.format(port=free_port(), order="commit"))
    bad.write_text(body.format(port=free_port(), order="sooner"))
    ok = subprocess.run([tandem_bin, "-t", "-c", str(good)], capture_output=True, text=True,
                        timeout=30)
    assert ok.returncode == 0, ok.stderr
    ko = subprocess.run([tandem_bin, "-t", "-c", str(bad)], capture_output=True, text=True,
                        timeout=30)
    assert ko.returncode != 0
    assert f"{bad}:5:" in ko.stderr + ko.stdout, ko.stderr
