"""The shadow report's statement table holds a real application (issue 13):
tens of thousands of distinct statements within a stated memory bound
(metrics/shadow.h: SHADOW_MAX_STATEMENTS entries per worker), evicting only
entries with nothing but matches, never one that mismatched; the report
says how many were evicted.

One workload: a statement that really differs (a row changed behind
tandem's back), then 40,000 distinct statements, each compared, through a
one-worker tandem whose table holds 16,384.  The figure printed (the
process's resident memory before and after) is for the note, not asserted
beyond a generous bound.
"""
import uuid

from harness.clients import psql
from harness.shadow import (execute, listener_report, outcomes, report, shadow_config,
                            statements_about, wait_drained)
from harness.util import free_port, proc_kib, sanitized, wait_until

DISTINCT = 40000
TABLE_MAX = 16384


def test_many_statements_keep_the_mismatch(tandem, pg_primary, pg_shadow, tmp_path):
    port, admin = free_port(), free_port()
    # every statement named, however fast psql sends them: the default describe budget
    # (2000 new texts per second per worker) would count the rest under "other"
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         workers=1, compare={"confirm_per_second": "0"},
                         mirror={"reads": "100%", "queue": "8MB", "timeout": "5s"})
    text = text.replace("log_level info;", "log_level info;\nlimits { describes_per_second 1000000; }")
    t = tandem(config_text=text, port=port, admin_port=admin)
    name = "rb_" + uuid.uuid4().hex[:10]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        execute(server, f"INSERT INTO {name} VALUES (1, 'alpha')")
    try:
        execute(pg_shadow, f"UPDATE {name} SET v = 'omega' WHERE id = 1")
        rss_before = proc_kib(t.proc.pid)
        with t.connect(user="postgres") as conn:
            conn.execute(f"SELECT v AS rb_real FROM {name} WHERE id = 1").fetchone()
        # distinct fingerprints (the column alias is part of a statement's shape), one
        # Query each: psql reading a script
        script = tmp_path / "statements.sql"
        script.write_text("".join(f"WITH rb_{i} AS (SELECT 1 AS x) SELECT x FROM rb_{i};\n"
                                  for i in range(DISTINCT)))
        done = psql(t.port, "-q", "-f", str(script), user="postgres", timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        wait_drained(t, timeout=120)
        wait_until(lambda: outcomes(t)["match"] >= DISTINCT, 60, "every statement compared",
                   interval=0.5)
        rss_after = proc_kib(t.proc.pid)
        rep = report(t)
        lr = listener_report(rep)
        real = statements_about(rep, "rb_real")
        assert len(real) == 1 and real[0]["count"]["mismatch"] == 1, real
        kept = len([s for s in rep["statements"] if "rb_" in (s.get("statement") or "")])
        assert kept <= TABLE_MAX + 1, kept
        # the table was full: each statement past TABLE_MAX took the place of a clean one
        assert lr["statements_undescribed"] == 0, lr
        described = DISTINCT + 1
        assert abs(lr["statement_entries_evicted"] - (described - TABLE_MAX)) <= 2, \
            {k: v for k, v in lr.items() if "statement" in k}
        assert lr["statements_evicted"] == 0, lr
        grown = rss_after - rss_before
        print(f"{DISTINCT} distinct statements ({described} described), {kept} kept, "
              f"{lr['statement_entries_evicted']} evicted; RSS {rss_before} -> {rss_after} KiB "
              f"(+{grown} KiB)")
        # the stated bound: under 17 MiB for a full table of short statements (and the
        # describe and classification caches, bounded too, have their share)
        assert grown < 64 * 1024 or sanitized(t.proc.pid), (rss_before, rss_after)
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, f"DROP TABLE IF EXISTS {name}")
