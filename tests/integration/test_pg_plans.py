"""Why the shadow is slower (issue 13): for a statement whose shadow latency
is worse than the primary's by compare { explain_when_slower } (p50 over p50,
with enough samples on each side), tandem fetches EXPLAIN (FORMAT JSON) of
it, with one recorded set of parameters, from both backends through logins
of its own, and the report keeps both plans.

The shadow is made slower the way a migration does it: an index missing
there.  The primary's plan uses the index, the shadow's scans the table.
"""
import uuid

from harness.browser import page_check
from harness.shadow import execute, report, shadow_config, statements_about
from harness.util import free_port, wait_until



def node_types(plan):
    """Every 'Node Type' of an EXPLAIN (FORMAT JSON) document, in pre-order."""
    out = []

    def walk(node):
        out.append(node.get("Node Type"))
        for child in node.get("Plans", []):
            walk(child)
    for top in plan:
        walk(top["Plan"])
    return out


def test_slower_statement_comes_with_both_plans(tandem, pg_primary, pg_shadow):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         workers=1, compare={"explain_when_slower": "2"},
                         mirror={"reads": "100%", "timeout": "10s"})
    t = tandem(config_text=text, port=port, admin_port=admin)
    name = "pl_" + uuid.uuid4().hex[:8]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name} AS SELECT g AS id, md5(g::text) AS v "
                        f"FROM generate_series(1, 200000) g")
        execute(server, f"ANALYZE {name}")
    execute(pg_primary, f"CREATE INDEX {name}_v ON {name} (v)")
    try:
        with t.connect(user="postgres") as conn:
            for i in range(80):
                conn.execute(f"SELECT id AS pl_probe FROM {name} WHERE v = %s",
                             (f"{i:032x}",)).fetchall()

        def planned():
            st = statements_about(report(t), "pl_probe")
            return st and st[0].get("plans") and st[0]
        st = wait_until(planned, 60, "the plans of the slower statement", interval=0.5)
        assert st["latency_ratio"] >= 2, st
        primary, shadow = st["plans"]["primary"], st["plans"]["shadow"]
        assert isinstance(primary, list) and isinstance(shadow, list), st["plans"]
        p, s = node_types(primary), node_types(shadow)
        assert any("Index" in n for n in p), p
        assert "Seq Scan" in s and not any("Index" in n for n in s), s
        print(f"primary {p} · shadow {s} · ratio {st['latency_ratio']:.1f}x")

        # the page shows both, side by side (headless Chromium, as test_report_page)
        page_check(t.admin_port, {"texts": ["PLAN ON THE PRIMARY", "PLAN ON THE SHADOW",  # h3: uppercase by CSS
                                            f"Seq Scan on {name}", f"using {name}_v"]},
                   "report-plans")
    finally:
        for server in (pg_primary, pg_shadow):
            execute(server, f"DROP TABLE IF EXISTS {name}")
