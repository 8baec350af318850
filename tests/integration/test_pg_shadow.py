"""PostgreSQL shadow mode: every unit answered by the primary, writes, session
state, transactions and sampled reads mirrored to the shadow, answers
compared and counted.

The servers are the session's pg_primary and pg_shadow; each test makes its
own tables (or databases) directly on both.  The tests that stop or kill a
shadow get a server of their own.  No test asserts a duration: every wait is
an upper bound.
"""
import re
import signal
import time
import uuid

import psycopg
import pytest

from harness.clients import check_pgbench
from harness.pgserver import PASSWORDS
from harness.shadow import (create_database, delta, execute, kill_server, listener_report,
                            outcomes, pgbench_db_popen, pgbench_init_db, report, restart_server,
                            rows, samples_about, shadow_config, signal_server, statements_about,
                            table_digest, wait_drained)
from harness.util import free_port, proc_kib, sanitized, wait_until

PGBENCH_TABLES = ("pgbench_accounts", "pgbench_tellers", "pgbench_branches")


def start_shadow_tandem(factory, primary, shadow, **cfg):
    port, admin = free_port(), free_port()
    cfg.setdefault("mirror", {"reads": "100%", "level": "all", "queue": "4MB",
                              "timeout": "5s"})
    text = shadow_config(port=port, admin_port=admin, primary=primary, shadow=shadow, **cfg)
    return factory(config_text=text, port=port, admin_port=admin)


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary, pg_shadow):
    """One shadow-mode tandem for the tests that do not break anything: all reads compared."""
    return start_shadow_tandem(tandem_module, pg_primary, pg_shadow,
                               compare={"ignore_columns": "updated_at"})


@pytest.fixture
def table(pg_primary, pg_shadow):
    """A fresh table name; dropped on both servers after the test."""
    name = "sh_" + uuid.uuid4().hex[:12]
    yield name
    for server in (pg_primary, pg_shadow):
        execute(server, f"DROP TABLE IF EXISTS {name}")


def on_both(primary, shadow, *sql):
    for server in (primary, shadow):
        for stmt in sql:
            execute(server, stmt)

def assert_only_ordering_mismatches(t, got):
    """Outcomes of a contended pgbench through shadow mode.

    Everything must match except, possibly, a small share of the one read
    whose value depends on how concurrent transactions interleave: pgbench's
    SELECT abalance inside its transaction.  Units reach the shadow in the
    order the primary answered them, but a shadow backend starved of CPU can
    still execute its session's UPDATE after another session's later one took
    the row lock; the tables converge (checked by the caller), the read in
    between may differ: re-run once the transactions ended, both sides agree,
    and the outcome is transient (a mismatch only when over the re-check
    budget).  README, "Known limits".  Errors, drops and timeouts are never
    allowed, nor a mismatch of any other statement.
    """
    bad = {k: v for k, v in got.items()
           if k not in ("match", "noise", "mismatch", "transient") and v}
    assert not bad, f"outcomes other than match/noise/mismatch: {got}"
    differing = [st for st in report(t)["statements"] if st["count"].get("mismatch")]
    assert all(st["statement"].startswith("SELECT abalance") for st in differing), differing
    for st in differing:
        assert st["count"]["mismatch"] <= max(2, st["count"]["total"] // 100), st



def wait_shadow_rows(shadow, sql, expected, timeout=10, dbname="postgres"):
    """Wait until SQL on the shadow (directly) returns EXPECTED; fail showing the last answer."""
    last = []

    def same():
        last[:] = [rows(shadow, sql, dbname)]
        return last[0] == expected
    try:
        wait_until(same, timeout, f"the shadow to answer {sql!r} with {expected!r}", interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; the shadow answers {last[0] if last else None!r}") from None


def wait_outcome(t, outcome, at_least, timeout=20, listener="pg"):
    def reached():
        o = outcomes(t, listener)
        return o[outcome] >= at_least and o
    try:
        return wait_until(reached, timeout, f"{outcome} >= {at_least}", interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; outcomes now {outcomes(t, listener)}") from None


def wait_statement_counts(t, needle, pred, timeout=20):
    """Wait until the report's statements mentioning NEEDLE satisfy pred(list); return it."""
    last = []

    def ok():
        last[:] = [statements_about(report(t), needle)]
        return pred(last[0]) and last[0]
    try:
        return wait_until(ok, timeout, f"report statements about {needle!r}", interval=0.1)
    except TimeoutError as exc:
        rep = report(t)
        lis = [{k: v for k, v in entry.items() if k != "window_outcomes"}
               for entry in rep["listeners"]]
        others = [s for s in rep["statements"] if s["fingerprint"] == "other"]
        raise AssertionError(f"{exc}; they are {last[0] if last else None!r}; listeners {lis}; "
                             f"'other' statements {others}") from None


def log_lines(t, *words):
    return [ln for ln in t.log().splitlines() if all(w in ln for w in words)]


# -- 1. pgbench: both sides end identical, everything matches ------------------------

def test_pgbench_tpcb_like_converges(tandem, pg_primary, pg_shadow):
    db = "shadowbench"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    # One worker: mirrors then reach the shadow exactly in the order the primary
    # answered them (across workers that order is approximate; README, Known limits),
    # which is what every read inside these transactions being a match relies on.
    t = start_shadow_tandem(tandem, pg_primary, pg_shadow, workers=1)
    before = outcomes(t)

    check_pgbench(pgbench_db_popen(t.port, db, clients=8, seconds=8))
    wait_drained(t)

    checks = {name: "t" for name in PGBENCH_TABLES}
    # mtime is CURRENT_TIMESTAMP on each side: compare the rest, as a multiset
    checks["pgbench_history"] = "t.tid, t.bid, t.aid, t.delta"
    last = {}

    def identical():
        for name, cols in checks.items():
            last[name] = (table_digest(pg_primary, db, name, cols),
                          table_digest(pg_shadow, db, name, cols))
        return all(p == s for p, s in last.values())
    try:
        wait_until(identical, 20, "the shadow's pgbench tables to equal the primary's",
                   interval=0.5)
    except TimeoutError:
        differ = {n: v for n, v in last.items() if v[0] != v[1]}
        pytest.fail(f"tables differ after the mirror drained (count, md5 primary vs shadow): "
                    f"{differ}; outcomes {delta(outcomes(t), before)}; mismatch samples "
                    f"{report(t)['samples'][:3]}\n" + "\n".join(log_lines(t, "shadow")[-20:]))

    # Every unit compares equal, the `SELECT abalance` inside each transaction
    # included: with 8 sessions some update the same account close together,
    # so this holds only when the shadow applies them in the primary's order
    # (DESIGN.md, Order: real-time order across sessions).
    got = delta(outcomes(t), before)
    assert got["match"] > 0, got
    assert_only_ordering_mismatches(t, got)
    assert t.metric("tandem_shadow_diverged", listener="pg") == 0


# -- 2. a row changed behind tandem's back -------------------------------------------

def test_row_changed_on_shadow_is_a_mismatch(t, table, pg_primary, pg_shadow):
    on_both(pg_primary, pg_shadow,
            f"CREATE TABLE {table} (id int PRIMARY KEY, v text)",
            f"INSERT INTO {table} VALUES (1, 'alpha-value'), (2, 'same')")
    execute(pg_shadow, f"UPDATE {table} SET v = 'omega-value' WHERE id = 1")
    before = outcomes(t)

    with t.connect(user="postgres") as conn:
        for _ in range(3):
            assert conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone()[0] \
                == "alpha-value"
        # the unchanged row matches
        assert conn.execute(f"SELECT v FROM {table} WHERE id = 2").fetchone()[0] == "same"
        # (the session stays open until the shadow answered: see test_short_sessions_*)
        wait_outcome(t, "mismatch", before["mismatch"] + 3)
        wait_outcome(t, "match", before["match"] + 1)
    got = delta(outcomes(t), before)
    assert got["mismatch"] == 3, got

    rep = report(t)
    samples = samples_about(rep, table)
    assert samples, f"no sample for {table}: {rep.get('samples')}"
    s = samples[-1]
    assert s["outcome"] == "mismatch", s
    assert "alpha-value" in s["primary"], s
    assert "omega-value" in s["shadow"], s
    assert "omega-value" not in s["primary"] and "alpha-value" not in s["shadow"], s


def test_ignored_column_differs_without_mismatch(t, table, pg_primary, pg_shadow):
    """compare { ignore_columns updated_at; }: a difference only there is no mismatch;
    the same difference in another column is one."""
    on_both(pg_primary, pg_shadow,
            f"CREATE TABLE {table} (id int, v text, updated_at timestamptz, created_at timestamptz)",
            f"INSERT INTO {table} VALUES (1, 'x', '2020-01-01', '2020-01-01')")
    execute(pg_shadow, f"UPDATE {table} SET updated_at = '2024-06-06', created_at = '2024-06-06'")
    with t.connect(user="postgres") as conn:
        conn.execute(f"SELECT id, v, updated_at FROM {table}").fetchall()
        conn.execute(f"SELECT id, v, created_at FROM {table}").fetchall()
        stmts = wait_statement_counts(
            t, table, lambda st: len(st) == 2 and all(s["count"]["total"] >= 1 for s in st))
    by_col = {("updated_at" if "updated_at" in s["statement"] else "created_at"): s["count"]
              for s in stmts}
    ignored, compared = by_col["updated_at"], by_col["created_at"]
    assert ignored.get("mismatch", 0) == 0, stmts
    assert ignored.get("match", 0) + ignored.get("noise", 0) == 1, stmts
    assert compared.get("mismatch", 0) == 1, stmts


def test_volatile_function_is_noise(t):
    marker = "sh_noise_" + uuid.uuid4().hex[:8]
    with t.connect(user="postgres") as conn:
        conn.execute(f"SELECT random() AS {marker}, clock_timestamp()").fetchall()
        stmts = wait_statement_counts(
            t, marker, lambda st: st and st[0]["count"]["total"] >= 1)
    count = stmts[0]["count"]
    assert count.get("noise", 0) == 1 and count.get("mismatch", 0) == 0, stmts


# -- 3. row order matters only under ORDER BY -----------------------------------------------

def test_row_order_only_matters_with_order_by(t, table, pg_primary, pg_shadow):
    create = f"CREATE TABLE {table} (id int, k int)"
    # same ids on both; inserted in opposite orders, and k (only sorted on) swapped
    execute(pg_primary, create)
    execute(pg_primary, f"INSERT INTO {table} VALUES (1, 1), (2, 2), (3, 3)")
    execute(pg_shadow, create)
    execute(pg_shadow, f"INSERT INTO {table} VALUES (3, 1), (2, 2), (1, 3)")
    unordered = f"SELECT id FROM {table}"
    by_k = f"SELECT id FROM {table} ORDER BY k"
    by_id = f"SELECT id FROM {table} ORDER BY id"
    # the premise: the servers really return the rows in different orders
    assert rows(pg_primary, unordered) != rows(pg_shadow, unordered)
    assert sorted(rows(pg_primary, unordered)) == sorted(rows(pg_shadow, unordered))
    assert rows(pg_primary, by_k) != rows(pg_shadow, by_k)

    with t.connect(user="postgres") as conn:
        assert conn.execute(unordered).fetchall() == [(1,), (2,), (3,)]
        assert conn.execute(by_k).fetchall() == [(1,), (2,), (3,)]
        assert conn.execute(by_id).fetchall() == [(1,), (2,), (3,)]

        def three_done(st):
            return len(st) >= 3 and all(s["count"]["total"] >= 1 for s in st)
        stmts = wait_statement_counts(t, table, three_done)
    by_text = {}
    for s in stmts:
        if "ORDER BY k" in s["statement"]:
            by_text["by_k"] = s
        elif "ORDER BY id" in s["statement"]:
            by_text["by_id"] = s
        else:
            by_text["unordered"] = s
    assert set(by_text) == {"by_k", "by_id", "unordered"}, stmts
    assert by_text["unordered"]["count"].get("match", 0) == 1, by_text["unordered"]
    assert by_text["by_id"]["count"].get("match", 0) == 1, by_text["by_id"]
    assert by_text["by_k"]["count"].get("mismatch", 0) == 1, by_text["by_k"]


# -- 4. a stopped shadow, a killed shadow --------------------------------------------------------



def _bench_pair(primary, shadow):
    db = "shadowstop_" + uuid.uuid4().hex[:8]
    for server in (primary, shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    return db


def _wait_new_matches(t, since, what):
    try:
        wait_until(lambda: outcomes(t)["match"] > since, 20, what, interval=0.1)
    except TimeoutError as exc:
        raise AssertionError(f"{exc}; outcomes {outcomes(t)}\n"
                             + "\n".join(log_lines(t, "shadow")[-20:])) from None


def test_shadow_stopped_then_resumed(tandem, pg_primary, pg_victim):
    db = _bench_pair(pg_primary, pg_victim)
    t = start_shadow_tandem(tandem, pg_primary, pg_victim,
                            mirror={"reads": "100%", "timeout": "2s", "queue": "4MB"})
    before = outcomes(t)
    bench = pgbench_db_popen(t.port, db, clients=4, seconds=8)
    try:
        _wait_new_matches(t, before["match"] + 20, "mirroring to work before the stop")
        signal_server(pg_victim, signal.SIGSTOP)
        try:
            # the sessions give up on the stalled shadow (mirror timeout 2 s) ...
            t.wait_metric("tandem_shadow_detached_sessions", 1, timeout=15, listener="pg")
            time.sleep(1)   # ... and go on a while without it (a stall, not a measurement)
            assert bench.poll() is None, "pgbench ended while the shadow was stopped"
        finally:
            signal_server(pg_victim, signal.SIGCONT)
    finally:
        check_pgbench(bench)

    got = delta(outcomes(t), before)
    assert got["shadow_timeout"] + got["dropped"] > 0, got
    dropped = t.metric("tandem_shadow_mirror_dropped_total", listener="pg")
    assert dropped and dropped > 0, t.metrics()
    assert log_lines(t, 'shadow "green"', "detached"), t.log()[-3000:]

    # later sessions mirror again
    mid = outcomes(t)
    check_pgbench(pgbench_db_popen(t.port, db, clients=2, seconds=3))
    _wait_new_matches(t, mid["match"], "new matches after the shadow came back")


def test_shadow_killed_then_restarted(tandem, pg_primary, pg_victim):
    db = _bench_pair(pg_primary, pg_victim)
    t = start_shadow_tandem(tandem, pg_primary, pg_victim,
                            mirror={"reads": "100%", "timeout": "2s"})
    before = outcomes(t)
    bench = pgbench_db_popen(t.port, db, clients=4, seconds=8)
    try:
        # pgbench's own first session (its table check) matches before the
        # benchmark's sessions are logged in to the shadow: wait for theirs
        _wait_new_matches(t, before["match"] + 20, "mirroring to work before the kill")
        kill_server(pg_victim)
        time.sleep(2)   # keep pgbench running against a dead shadow for a while
        assert bench.poll() is None, "pgbench ended right after the shadow was killed"
    finally:
        check_pgbench(bench)

    got = delta(outcomes(t), before)
    assert got["shadow_error"] > 0, got
    assert t.metric("tandem_shadow_diverged", listener="pg") == 1, \
        "writes were lost with the shadow, but diverged is not set"

    restart_server(pg_victim)
    mid = outcomes(t)
    check_pgbench(pgbench_db_popen(t.port, db, clients=2, seconds=3))
    _wait_new_matches(t, mid["match"], "new matches after the shadow was restarted")


# -- 5. faithful mirroring ---------------------------------------------------------------
#
# Each session below stays open until the shadow has what it should: what
# happens to mirrors still in flight when a session ends is the business of
# test_short_sessions_reach_the_shadow.

def test_prepared_statements_psycopg(t, table, pg_primary, pg_shadow):
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    before = outcomes(t)
    expected = [(i, f"v{i}!" if i < 5 else f"v{i}") for i in range(10)]
    with t.connect(user="postgres") as conn:
        for i in range(10):
            conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, f"v{i}"), prepare=True)
        for i in range(10):
            assert conn.execute(f"SELECT v FROM {table} WHERE id = %s", (i,),
                                prepare=True).fetchone()[0] == f"v{i}"
        conn.execute(f"UPDATE {table} SET v = v || '!' WHERE id < %s", (5,), prepare=True)
        wait_shadow_rows(pg_shadow, f"SELECT id, v FROM {table} ORDER BY id", expected)
        wait_outcome(t, "match", before["match"] + 21)
    got = delta(outcomes(t), before)
    assert got["mismatch"] == 0 and got["shadow_error"] == 0 and got["dropped"] == 0, got


def test_pgbench_prepared_converges(tandem, pg_primary, pg_shadow):
    db = "shadowprep"
    for server in (pg_primary, pg_shadow):
        create_database(server, db)
        pgbench_init_db(server, db)
    # One worker: mirrors then reach the shadow exactly in the order the primary
    # answered them (across workers that order is approximate; README, Known limits),
    # which is what every read inside these transactions being a match relies on.
    t = start_shadow_tandem(tandem, pg_primary, pg_shadow, workers=1)
    before = outcomes(t)
    check_pgbench(pgbench_db_popen(t.port, db, clients=4, seconds=4, mode="prepared"))
    wait_drained(t)
    last = {}

    def identical():
        for name in PGBENCH_TABLES:
            last[name] = (table_digest(pg_primary, db, name), table_digest(pg_shadow, db, name))
        return all(p == s for p, s in last.values())
    try:
        wait_until(identical, 20, "pgbench tables equal on both sides", interval=0.5)
    except TimeoutError:
        pytest.fail(f"tables differ: {last}; outcomes {delta(outcomes(t), before)}\n"
                    + "\n".join(log_lines(t, "shadow")[-20:]))
    got = delta(outcomes(t), before)
    assert got["match"] > 0, got
    # a prepared statement missing on the shadow would be an error there
    assert_only_ordering_mismatches(t, got)


def test_pipeline_mode_writes(t, table, pg_primary, pg_shadow):
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    before = outcomes(t)
    expected = [(i, "upd" if i % 2 == 0 else f"p{i}") for i in range(15)]
    with t.connect(user="postgres") as conn:
        with conn.pipeline():
            for i in range(20):
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, f"p{i}"))
            conn.execute(f"UPDATE {table} SET v = 'upd' WHERE mod(id, 2) = 0")
            conn.execute(f"DELETE FROM {table} WHERE id >= %s", (15,))
            cur = conn.execute(f"SELECT count(*) FROM {table}")
        assert cur.fetchone()[0] == 15
        assert rows(pg_primary, f"SELECT id, v FROM {table} ORDER BY id") == expected
        try:
            wait_shadow_rows(pg_shadow, f"SELECT id, v FROM {table} ORDER BY id", expected)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\noutcomes {delta(outcomes(t), before)}\n"
                                 + "\n".join(log_lines(t, "shadow")[-5:])) from None


def test_transaction_failing_on_primary(t, table, pg_primary, pg_shadow):
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    with t.connect(user="postgres", autocommit=False) as conn:
        conn.execute(f"INSERT INTO {table} VALUES (1)")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(f"INSERT INTO {table} VALUES (1)")
        conn.rollback()
        conn.execute(f"INSERT INTO {table} VALUES (2)")
        conn.commit()
        # and one that the client rolls back although nothing failed
        conn.execute(f"INSERT INTO {table} VALUES (3)")
        conn.rollback()
        conn.execute(f"INSERT INTO {table} VALUES (4)")
        conn.commit()
        assert rows(pg_primary, f"SELECT id FROM {table} ORDER BY id") == [(2,), (4,)]
        wait_shadow_rows(pg_shadow, f"SELECT id FROM {table} ORDER BY id", [(2,), (4,)])


def test_application_name_on_the_shadow(t, pg_shadow):
    startup_name = "sh_start_" + uuid.uuid4().hex[:8]
    set_name = "sh_set_" + uuid.uuid4().hex[:8]
    names_sql = "SELECT application_name FROM pg_stat_activity WHERE application_name LIKE 'sh_%'"

    def shadow_names():
        return {r[0] for r in rows(pg_shadow, names_sql)}

    with t.connect(user="postgres", application_name=startup_name) as conn:
        conn.execute("SELECT 1")
        try:
            wait_until(lambda: startup_name in shadow_names(), 20,
                       "a shadow session with the startup application_name")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; shadow sessions: {shadow_names()}") from None
        conn.execute(f"SET application_name = '{set_name}'")
        assert conn.execute("SHOW application_name").fetchone()[0] == set_name
        try:
            wait_until(lambda: set_name in shadow_names(), 20,
                       "the shadow session to take the SET application_name")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; shadow sessions: {shadow_names()}") from None


def test_copy_from_stdin(t, table, pg_primary, pg_shadow):
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int, v text)")
    data = [(i, f"c{i}") for i in range(2000)]
    summary = f"SELECT count(*), sum(id), md5(string_agg(v, ',' ORDER BY id)) FROM {table}"
    with t.connect(user="postgres") as conn:
        with conn.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
            for row in data:
                copy.write_row(row)
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 2000
        expected = rows(pg_primary, summary)
        assert expected[0][0] == 2000
        wait_shadow_rows(pg_shadow, summary, expected)


def test_short_sessions_reach_the_shadow(tandem, table, pg_primary, pg_shadow):
    """Connect, write, disconnect at once: the write still reaches the shadow
    (or, failing that, is counted as lost and the shadow marked diverged)."""
    t = start_shadow_tandem(tandem, pg_primary, pg_shadow)
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int PRIMARY KEY)")
    for i in range(5):
        with t.connect(user="postgres") as conn:
            conn.execute(f"INSERT INTO {table} VALUES ({i})")
    expected = [(i,) for i in range(5)]
    assert rows(pg_primary, f"SELECT id FROM {table} ORDER BY id") == expected
    try:
        wait_shadow_rows(pg_shadow, f"SELECT id FROM {table} ORDER BY id", expected)
    except AssertionError as exc:
        raise AssertionError(
            f"{exc}\noutcomes: {outcomes(t)}; diverged="
            f"{t.metric('tandem_shadow_diverged', listener='pg')}") from None


# -- 6. a shadow that refuses the login ------------------------------------------------------------

def test_shadow_refuses_login(tandem, tmp_path, pg_primary, pg_shadow):
    pwfile = tmp_path / "shadow-password"
    pwfile.write_text("certainly-not-the-password\n")
    pwfile.chmod(0o600)
    t = start_shadow_tandem(
        tandem, pg_primary, pg_shadow,
        shadow_backend_extra=f"user scramuser;\npassword_file {pwfile};")
    before = outcomes(t)

    def one_session():
        with t.connect(user="postgres") as conn:
            assert conn.execute("SELECT 'fine'").fetchone()[0] == "fine"
            conn.execute("CREATE TEMP TABLE sh_tmp (i int)")
            conn.execute("INSERT INTO sh_tmp VALUES (1)")
            assert conn.execute("SELECT count(*) FROM sh_tmp").fetchone()[0] == 1
        return delta(outcomes(t), before)["shadow_error"] > 0

    # several sessions, each one's units wait for its shadow login to fail
    wait_until(one_session, 20, "shadow_error to be counted", interval=0.2)
    with t.connect(user="postgres") as conn:
        assert conn.execute("SELECT 'still fine'").fetchone()[0] == "still fine"
    lines = log_lines(t, 'shadow "green"', "login failed")
    assert lines, f"no log line naming the shadow and the login failure:\n{t.log()[-3000:]}"
    assert any("scramuser" in ln or "password" in ln for ln in lines), lines
    assert "certainly-not-the-password" not in t.log()


# -- 7. the report ---------------------------------------------------------------------------------

def test_report_shape(t, table, pg_primary, pg_shadow):
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int, v text)",
            f"INSERT INTO {table} VALUES (42, 'x')")
    with t.connect(user="postgres") as conn:
        conn.execute(f"SELECT v FROM {table} WHERE id = 42 AND v <> 'literal'").fetchall()
        conn.execute(f"UPDATE {table} SET v = 'y' WHERE id = 42")
        stmts = wait_statement_counts(t, table, lambda st: len(st) >= 2)
    rep = report(t)

    assert isinstance(rep["generated_at"], (str, int, float)), rep["generated_at"]
    for key in ("listeners", "statements", "slowest", "samples"):
        assert isinstance(rep[key], list), (key, rep[key])
    lis = listener_report(rep)
    for key in ("outcomes", "validation_success_ratio", "performance_ratio", "lag_seconds",
                "diverged", "detached_sessions", "primary_p50_ms", "shadow_p50_ms"):
        assert key in lis, (key, lis)
    assert set(lis["outcomes"]) >= {"match", "mismatch", "noise", "shadow_error",
                                    "primary_error", "shadow_timeout", "dropped"}, lis
    assert lis["outcomes"]["match"] >= 2, lis

    texts = [s["statement"] for s in stmts]
    for s in stmts:
        assert re.fullmatch(r"[0-9a-f]{16}", s["fingerprint"]), s
        assert s["listener"] == "pg", s
        for key in ("count", "primary_p50_ms", "shadow_p50_ms"):
            assert key in s, (key, s)
        assert s["count"]["total"] >= 1, s
        # the literals are gone (the random table name may hold a "42" of its own)
        shown = s["statement"].replace(table, "<table>")
        assert "42" not in shown and "'literal'" not in shown, s
        assert "$1" in s["statement"], s
    assert any(x.startswith("SELECT") for x in texts) and any(x.startswith("UPDATE")
                                                              for x in texts), texts
    for s in rep["samples"]:
        for key in ("time", "listener", "fingerprint", "statement", "outcome", "primary",
                    "shadow"):
            assert key in s, (key, s)


# -- the command-line form ---------------------------------------------------------------------------

def test_cli_form_with_shadow_user(tandem, tmp_path, table, pg_primary, pg_shadow):
    """tandem postgres ... --shadow --mode shadow --mirror-reads 100% --shadow-user
    --shadow-password-file: tandem logs in to the shadow as that user, and compares."""
    pwfile = tmp_path / "shadow-password"
    pwfile.write_text(PASSWORDS["scramuser"] + "\n")
    pwfile.chmod(0o600)
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int, v text)",
            f"INSERT INTO {table} VALUES (1, 'same'), (2, 'blue-side')",
            f"GRANT SELECT ON {table} TO PUBLIC")
    execute(pg_shadow, f"UPDATE {table} SET v = 'green-side' WHERE id = 2")
    # the shadow user acts as the client's role there (README, "Rights on the shadow")
    execute(pg_shadow, "GRANT trustuser TO scramuser")
    port, admin = free_port(), free_port()
    t = tandem(args=["postgres", "--listen", f"127.0.0.1:{port}",
                     "--primary", pg_primary.address, "--shadow", f"green={pg_shadow.address}",
                     "--mode", "shadow", "--mirror-reads", "100%", "--shadow-user", "scramuser",
                     "--shadow-password-file", str(pwfile), "--admin", f"127.0.0.1:{admin}",
                     "--workers", "1"],
               port=port, admin_port=admin)
    name = listener_report(report(t), listener="postgres")["name"]
    before = outcomes(t, name)
    marker = "sh_cli_" + uuid.uuid4().hex[:8]
    with t.connect(user="trustuser", application_name=marker) as conn:
        assert conn.execute(f"SELECT v FROM {table} WHERE id = 1").fetchone()[0] == "same"
        assert conn.execute(f"SELECT v FROM {table} WHERE id = 2").fetchone()[0] == "blue-side"
        wait_outcome(t, "mismatch", before["mismatch"] + 1, listener=name)
        wait_outcome(t, "match", before["match"] + 1, listener=name)
        users = rows(pg_shadow, "SELECT usename FROM pg_stat_activity "
                                f"WHERE application_name = '{marker}'")
        assert users == [("scramuser",)], users
    got = delta(outcomes(t, name), before)
    assert got["mismatch"] == 1 and got["shadow_error"] == 0, got
    execute(pg_shadow, "REVOKE trustuser FROM scramuser")


def test_passfile_logs_each_client_user_in_as_itself(tandem, tmp_path, table, pg_primary,
                                                     pg_shadow):
    """backend green { passfile F; } without a fixed user: each session logs in
    to the shadow as its own client user, with that user's password from the
    .pgpass-format file (libpq's own lookup)."""
    passfile = tmp_path / "green.pgpass"
    passfile.write_text(f"*:*:*:scramuser:{PASSWORDS['scramuser']}\n"
                        f"*:*:*:md5user:{PASSWORDS['md5user']}\n")
    passfile.chmod(0o600)
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int)",
            f"GRANT SELECT ON {table} TO PUBLIC")
    t = start_shadow_tandem(tandem, pg_primary, pg_shadow, workers=1,
                            shadow_backend_extra=f"passfile {passfile};")
    seen = {}
    for user in ("scramuser", "md5user"):
        marker = "sh_pass_" + uuid.uuid4().hex[:8]
        with t.connect(user=user, password=PASSWORDS[user], application_name=marker) as conn:
            conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            wait_until(lambda: rows(pg_shadow, "SELECT usename FROM pg_stat_activity "
                                               f"WHERE application_name = '{marker}'"), 10,
                       f"a shadow session for {user}")
            seen[user] = rows(pg_shadow, "SELECT usename FROM pg_stat_activity "
                                         f"WHERE application_name = '{marker}'")
    assert seen == {"scramuser": [("scramuser",)], "md5user": [("md5user",)]}, seen
    assert not [ln for ln in log_lines(t, "shadow") if "login failed" in ln]


# -- large messages: a message spread over many reads reaches the shadow whole ------------

@pytest.mark.parametrize("size", [64 * 1024, 200 * 1024, 900 * 1024])
def test_large_bind_reaches_the_shadow(t, table, pg_primary, pg_shadow, size):
    """One INSERT whose Bind spans several socket reads (extended protocol)."""
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    value = (uuid.uuid4().hex * (size // 32 + 1))[:size]
    before = outcomes(t)
    with t.connect(user="postgres") as conn:
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (1, value), prepare=False)
        conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (2, value), prepare=True)
    summary = f"SELECT id, length(v), md5(v) FROM {table} ORDER BY id"
    expected = rows(pg_primary, summary)
    assert [r[1] for r in expected] == [size, size]
    wait_shadow_rows(pg_shadow, summary, expected)
    wait_drained(t)
    got = delta(outcomes(t), before)
    assert got["shadow_error"] == 0 and got["dropped"] == 0, got
    assert got["match"] >= 2, got


def test_large_query_and_pipeline_of_large_binds(t, table, pg_primary, pg_shadow, tmp_path):
    """The simple protocol (psql -f), a pipeline of large Binds, and a COPY with large rows."""
    on_both(pg_primary, pg_shadow, f"CREATE TABLE {table} (id int PRIMARY KEY, v text)")
    value = (uuid.uuid4().hex * 30000)[:900 * 1024]
    script = tmp_path / "big.sql"
    script.write_text(f"INSERT INTO {table} VALUES (1, '{value}');\n")
    from harness.clients import psql
    psql(t.port, "-f", str(script), user="postgres")
    with t.connect(user="postgres") as conn:
        with conn.pipeline():
            for i in range(2, 8):
                conn.execute(f"INSERT INTO {table} VALUES (%s, %s)", (i, value[: 100 * 1024 * i]))
        with conn.cursor().copy(f"COPY {table} (id, v) FROM STDIN") as copy:
            for i in range(8, 12):
                copy.write_row((i, value[i:]))
    summary = f"SELECT count(*), sum(length(v)), md5(string_agg(md5(v), ',' ORDER BY id)) FROM {table}"
    expected = rows(pg_primary, summary)
    assert expected[0][0] == 11
    # 7 MB for the shadow to write after the primary did: on a loaded machine, seconds
    wait_shadow_rows(pg_shadow, summary, expected, timeout=60)


def test_unit_larger_than_the_mirror_queue_is_not_copied(tandem, pg_primary, pg_shadow):
    """Pipelined Bind/Execute without a Sync make one unit; its bytes were
    copied for the shadow without bound until the Sync (+146 MiB).  Past the
    session's mirror { queue } they are not copied: the unit is dropped
    (too_large) and the shadow detached, the primary runs every row."""
    from harness import pgwire
    import struct
    table = "big_unit_" + uuid.uuid4().hex[:8]
    for server in (pg_primary, pg_shadow):
        execute(server, f"CREATE TABLE {table} (v text)")
        execute(server, f"GRANT ALL ON {table} TO PUBLIC")
    port, admin = free_port(), free_port()
    t = tandem(config_text=shadow_config(port=port, admin_port=admin, primary=pg_primary,
                                         shadow=pg_shadow,
                                         mirror={"reads": "0%", "queue": "64KB",
                                                 "timeout": "5s"}),
               port=port, admin_port=admin)
    value = b"x" * (256 * 1024)
    bind = pgwire.message(b"B", b"\0\0" + struct.pack("!hhi", 0, 1, len(value)) + value
                          + struct.pack("!h", 0))
    execute_msg = pgwire.message(b"E", b"\0" + struct.pack("!i", 0))
    with pgwire.PgRaw(t.port, timeout=60) as raw:
        raw.login("trustuser")
        rss0 = proc_kib(t.proc.pid)
        raw.send(pgwire.message(b"P", b"\0" + f"INSERT INTO {table} VALUES ($1)".encode()
                                + b"\0\0\0"))
        count = 400  # 100 MiB in one unit
        for _ in range(count):
            raw.send(bind + execute_msg)
        rss1 = proc_kib(t.proc.pid)
        raw.send(pgwire.message(b"S"))
        seen = []
        while True:
            mtype, payload = raw.read_message()
            assert mtype != "E", pgwire.parse_error(payload)
            seen.append(mtype)
            if mtype == "Z":
                break
        assert seen.count("C") == count
    assert rows(pg_primary, f"SELECT count(*) FROM {table}")[0][0] == count
    t.wait_metric("tandem_shadow_mirror_dropped_total", 1, listener="pg", reason="too_large")
    wait_until(lambda: listener_report(report(t), "pg")["diverged"] is True, 20, "diverged")
    assert rows(pg_shadow, f"SELECT count(*) FROM {table}")[0][0] == 0
    # a figure, not a timing: 100 MiB went through; tandem kept far less of it
    print(f"tandem RSS {rss0} KiB -> {rss1} KiB while a 100 MiB unit passed")
    assert rss1 - rss0 < 48 * 1024 or sanitized(t.proc.pid), (rss0, rss1)


def test_pipelining_client_that_never_reads_is_bounded(tandem, pg_primary, pg_shadow):
    """A client that pipelines queries and reads nothing: every unit kept a
    record (and a digest) until both sides answered, without bound (22 MB of
    INSERTs: +463 MiB).  Now at most 1024 units are in flight; the rest wait
    in the client's socket, and every answer arrives once it reads."""
    import socket
    import threading
    from harness import pgwire
    port, admin = free_port(), free_port()
    t = tandem(config_text=shadow_config(port=port, admin_port=admin, primary=pg_primary,
                                         shadow=pg_shadow,
                                         mirror={"reads": "100%", "queue": "4MB",
                                                 "timeout": "5s"}),
               port=port, admin_port=admin)
    count = 200000
    data = memoryview(pgwire.query_message("SELECT 1") * count)
    with pgwire.PgRaw(t.port, timeout=120) as raw:
        raw.login("trustuser")
        rss0 = proc_kib(t.proc.pid)
        raw.sock.settimeout(3)
        off = 0
        while off < len(data):
            try:
                off += raw.sock.send(data[off:off + 65536])
            except socket.timeout:
                break  # nothing taken for 3 s: tandem stopped reading
        time.sleep(3)  # let tandem take what it will; the RSS is read after, nothing timed
        rss1 = proc_kib(t.proc.pid)
        print(f"tandem RSS {rss0} KiB -> {rss1} KiB with {off // 14} of {count} queries "
              "taken, no answer read")
        assert rss1 - rss0 < 64 * 1024 or sanitized(t.proc.pid), (rss0, rss1, off)
        # the rest from a thread; every answer read here
        raw.sock.settimeout(120)
        sender = threading.Thread(target=lambda: raw.sock.sendall(data[off:]))
        sender.start()
        ready = 0
        while ready < count:
            mtype, payload = raw.read_message()
            assert mtype != "E", pgwire.parse_error(payload)
            ready += mtype == "Z"
        sender.join(60)
        assert raw.simple_query("SELECT 'done'")[0] == [["done"]]
