"""PostgreSQL shadow mode: answers that depend on the server, not the data,
are noise with a reason, never a mismatch (issue 13, "server-local values").

Each class, done the way a real client does it:
  - server_local: psql's \\d (it fetches the table's OID from the primary and
    sends it back as a literal), pg_get_viewdef / pg_get_partkeydef of an OID
    fetched through tandem, txid_status of an xid the shadow has not reached,
    COPY FROM / pg_read_file of a file only the primary's data directory has;
  - physical: brin_summarize_new_values after the primary summarized alone.
And a real divergence of an ordinary row is still a mismatch.

The servers are the session's pg_primary and pg_shadow.  One tandem for the
module, used by one test at a time, so outcome deltas are the test's own.
No test asserts a duration: every wait is an upper bound.
"""
import os
import uuid

import pytest

from harness.clients import psql
from harness.shadow import (delta, execute, outcomes, report, rows, shadow_config,
                            statements_about, wait_drained)
from harness.util import free_port, wait_until

REASONS = ("volatile", "physical", "server_local", "ignored")


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary, pg_shadow):
    port, admin = free_port(), free_port()
    text = shadow_config(port=port, admin_port=admin, primary=pg_primary, shadow=pg_shadow,
                         mirror={"reads": "100%", "level": "all", "queue": "4MB",
                                 "timeout": "5s"})
    return tandem_module(config_text=text, port=port, admin_port=admin)


@pytest.fixture
def name(pg_primary, pg_shadow):
    """A fresh name prefix; its tables and views are dropped on both servers afterwards."""
    n = "nz_" + uuid.uuid4().hex[:10]
    yield n
    for server in (pg_primary, pg_shadow):
        for kind, obj in (("VIEW", f"{n}_v"), ("TABLE", f"{n}_part"), ("TABLE", f"{n}_pad"),
                          ("TABLE", n)):
            execute(server, f"DROP {kind} IF EXISTS {obj} CASCADE")


def noise_by_reason(t, listener="pg"):
    """tandem_shadow_noise_total{listener} by reason (0.0 when absent)."""
    return {r: t.metric("tandem_shadow_noise_total", listener=listener, reason=r) or 0.0
            for r in REASONS}


def settle(t, before, pred, what):
    """Wait (bounded) until pred(outcome delta) holds once the mirror drained; return the delta."""
    last = []

    def ok():
        wait_drained(t)
        last[:] = [delta(outcomes(t), before)]
        return pred(last[0])
    try:
        wait_until(ok, 30, what, interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; outcome delta {last[0] if last else None}") from None
    return last[0]


def statement(t, needle):
    """The one report entry whose text contains NEEDLE, once it counted a unit."""
    found = []

    def ok():
        found[:] = statements_about(report(t), needle)
        return len(found) == 1 and found[0]["count"]["total"] >= 1
    try:
        wait_until(ok, 30, f"the report's statement about {needle!r}", interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; found {found}") from None
    return found[0]


def assert_noise(st, reason, at_least=1):
    c, n = st["count"], st.get("noise")
    assert c.get("mismatch", 0) == 0 and c.get("shadow_error", 0) == 0, st
    assert c.get("noise", 0) >= at_least, st
    assert n is not None and n.get(reason, 0) >= at_least, st


def pad_oids(shadow, name):
    """Advance the shadow's OID counter, so objects created next get other OIDs there."""
    for i in range(3):
        execute(shadow, f"CREATE TABLE {name}_pad{i} (a int, b text)")
        execute(shadow, f"DROP TABLE {name}_pad{i}")


def test_psql_describe_is_server_local(t, name, pg_primary, pg_shadow):
    """psql's \\d fetches the table's OID from the primary, then asks about it by
    that OID: on the shadow the number names something else, or nothing."""
    pad_oids(pg_shadow, name)
    with t.connect(user="postgres") as conn:
        conn.execute(f"CREATE TABLE {name} (id int PRIMARY KEY, v text NOT NULL)")
        conn.execute(f"CREATE INDEX ON {name} (v)")
    wait_drained(t)
    oid_p = rows(pg_primary, f"SELECT '{name}'::regclass::oid")[0][0]
    oid_s = rows(pg_shadow, f"SELECT '{name}'::regclass::oid")[0][0]
    assert oid_p != oid_s, "the test needs the table's OIDs to differ"

    before, noise_before = outcomes(t), noise_by_reason(t)
    r = psql(t.port, "-c", f"\\d {name}", user="postgres")
    assert r.returncode == 0, r.stderr
    assert "id|integer" in r.stdout, r.stdout
    # \d sends several catalog queries; they are compared one by one, so wait
    # until every noise outcome counted so far also has its reason counted.
    noise = {}

    def all_server_local(d):
        noise.update(delta(noise_by_reason(t), noise_before))
        return d["noise"] >= 1 and noise["server_local"] == d["noise"]
    got = settle(t, before, all_server_local, "psql's \\d to be compared as server-local")
    assert got["mismatch"] == 0 and got["shadow_error"] == 0, got
    assert noise["physical"] == noise["volatile"] == noise["ignored"] == 0, (noise, got)


def test_oid_fetched_from_the_primary(t, name, pg_primary, pg_shadow):
    """pg_get_viewdef($1) / pg_get_partkeydef($1) with an OID the client read through
    tandem: answered on the shadow for another object (or NULL)."""
    pad_oids(pg_shadow, name)
    with t.connect(user="postgres") as conn:
        conn.execute(f"CREATE TABLE {name} (id int, v text)")
        conn.execute(f"CREATE VIEW {name}_v AS SELECT id, v FROM {name} WHERE id > 0")
        conn.execute(f"CREATE TABLE {name}_part (id int, at date) PARTITION BY RANGE (at)")
        view_oid = conn.execute("SELECT oid FROM pg_class WHERE relname = %s",
                                (f"{name}_v",)).fetchone()[0]
        part_oid = conn.execute("SELECT oid FROM pg_class WHERE relname = %s",
                                (f"{name}_part",)).fetchone()[0]
        before = outcomes(t)
        viewdef = conn.execute("SELECT pg_get_viewdef(%s::oid) AS nz_viewdef",
                               (view_oid,)).fetchone()[0]
        assert "id > 0" in viewdef, viewdef
        keydef = conn.execute("SELECT pg_get_partkeydef(%s) AS nz_partkey",
                              (part_oid,)).fetchone()[0]
        assert keydef == "RANGE (at)", keydef
        got = settle(t, before, lambda d: d["noise"] + d["mismatch"] >= 2,
                     "both statements to be compared")
    assert got["mismatch"] == 0, got
    assert_noise(statement(t, "nz_viewdef"), "server_local")
    assert_noise(statement(t, "nz_partkey"), "server_local")


def test_txid_status_of_an_xid_the_shadow_never_had(t, pg_primary, pg_shadow):
    """An xid of the primary's, passed back: txid_status fails on a shadow whose
    counter is behind ("in the future"), and pg_current_xact_id differs."""
    def next_xid(server):
        return int(rows(server, "SELECT pg_current_xact_id()::text")[0][0])
    ahead = next_xid(pg_shadow) - next_xid(pg_primary) + 50
    with pg_primary.connect() as conn:
        for _ in range(max(ahead, 50)):
            conn.execute("SELECT pg_current_xact_id()")

    with t.connect(user="postgres") as conn:
        before, noise_before = outcomes(t), noise_by_reason(t)
        with conn.transaction():
            xid = conn.execute("SELECT pg_current_xact_id()::text AS nz_xact").fetchone()[0]
        status = conn.execute("SELECT txid_status(%s) AS nz_txid_status",
                              (int(xid),)).fetchone()[0]
        assert status == "committed", status
        got = settle(t, before, lambda d: d["noise"] >= 2, "the xid statements to be compared")
    assert got["mismatch"] == 0 and got["shadow_error"] == 0, got
    assert_noise(statement(t, "nz_txid_status"), "server_local")
    assert_noise(statement(t, "nz_xact"), "server_local")
    assert delta(noise_by_reason(t), noise_before)["server_local"] >= 2


def test_server_file_only_the_primary_has(t, name, pg_primary, pg_shadow):
    """COPY FROM and pg_read_file of a path relative to the data directory: the
    file is in the primary's, not the shadow's.  The shadow's failure is noise,
    not a shadow error; its missing rows still mark it diverged."""
    fname = f"{name}.csv"
    path = os.path.join(pg_primary.data, fname)
    with open(path, "w") as f:
        f.write("1,one\n2,two\n3,three\n")
    os.chmod(path, 0o644)
    assert not os.path.exists(os.path.join(pg_shadow.data, fname))
    try:
        with t.connect(user="postgres") as conn:
            conn.execute(f"CREATE TABLE {name} (id int, v text)")
            before = outcomes(t)
            cur = conn.execute(f"COPY {name} FROM '{fname}' WITH (FORMAT csv)")
            assert cur.rowcount == 3
            text = conn.execute(f"SELECT pg_read_file('{fname}') AS nz_file").fetchone()[0]
            assert text.startswith("1,one"), text
            got = settle(t, before, lambda d: d["noise"] + d["shadow_error"] >= 2,
                         "the COPY and the read to be compared")
    finally:
        os.unlink(path)
    assert got["shadow_error"] == 0 and got["mismatch"] == 0, got
    assert_noise(statement(t, f"COPY {name} FROM"), "server_local")
    assert_noise(statement(t, "nz_file"), "server_local")
    # honest about the data: the shadow lacks the rows, and says so
    assert rows(pg_shadow, f"SELECT count(*) FROM {name}") == [(0,)]
    assert t.metric("tandem_shadow_diverged", listener="pg") == 1


def test_maintenance_function_is_physical(t, name, pg_primary, pg_shadow):
    """brin_summarize_new_values counts the ranges it summarized now: the primary
    did them already, the shadow did not."""
    with t.connect(user="postgres") as conn:
        conn.execute(f"CREATE TABLE {name} (id int, pad text) WITH (autovacuum_enabled = off)")
        conn.execute(f"CREATE INDEX {name}_brin ON {name} USING brin (id) "
                     f"WITH (pages_per_range = 1)")
        conn.execute(f"INSERT INTO {name} SELECT g, repeat('x', 200) FROM generate_series(1, 2000) g")
    wait_drained(t)
    summarized = rows(pg_primary, f"SELECT brin_summarize_new_values('{name}_brin')")[0][0]
    assert summarized > 1, summarized
    with t.connect(user="postgres") as conn:
        before = outcomes(t)
        again = conn.execute(f"SELECT brin_summarize_new_values('{name}_brin') AS nz_brin") \
            .fetchone()[0]
        assert again == 0
        got = settle(t, before, lambda d: d["noise"] + d["mismatch"] >= 1,
                     "the maintenance call to be compared")
    assert got["mismatch"] == 0, got
    assert_noise(statement(t, "nz_brin"), "physical")


def test_real_divergence_is_still_a_mismatch(t, name, pg_primary, pg_shadow):
    """A row changed behind tandem's back on the shadow: no reason excuses it."""
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {name} (id int PRIMARY KEY, v text)")
        execute(server, f"INSERT INTO {name} VALUES (1, 'alpha'), (2, 'same')")
    execute(pg_shadow, f"UPDATE {name} SET v = 'omega' WHERE id = 1")
    with t.connect(user="postgres") as conn:
        before = outcomes(t)
        assert conn.execute(f"SELECT v AS nz_real FROM {name} WHERE id = %s", (1,)) \
            .fetchone()[0] == "alpha"
        got = settle(t, before, lambda d: d["mismatch"] + d["noise"] >= 1, "the read compared")
    assert got["mismatch"] == 1 and got["noise"] == 0, got
    st = statement(t, "nz_real")
    assert st["count"]["mismatch"] == 1 and sum(st["noise"].values()) == 0, st
