"""PostgreSQL passthrough: the query protocols, COPY, LISTEN/NOTIFY and cancel,
through one tandem in front of pg_primary."""
import hashlib
import select
import struct
import threading
import uuid

import psycopg
import pytest

from harness import pgwire
from harness.clients import psql
from harness.util import proc_kib, sanitized, wait_until


@pytest.fixture(scope="module")
def t(tandem_module, pg_primary):
    return tandem_module.pg(primary=pg_primary)


@pytest.fixture
def table(t):
    """A fresh table name, dropped after the test."""
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    with t.connect() as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


# -- simple query ------------------------------------------------------------

def test_simple_query(t):
    with t.connect() as conn:
        assert conn.execute("SELECT 40 + 2").fetchone()[0] == 42
        assert conn.execute("SELECT current_user").fetchone()[0] == "trustuser"


def test_simple_query_multi_statement_psql(t):
    r = psql(t.port, "-c", "SELECT 1; SELECT 'two'")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "two"


def test_psql_script_with_transaction(t, table):
    # one -c per statement: a multi-statement -c is one implicit transaction
    script = [f"CREATE TABLE {table} (id int)", "BEGIN", f"INSERT INTO {table} VALUES (1), (2)",
              "ROLLBACK", f"INSERT INTO {table} VALUES (3)", f"SELECT sum(id) FROM {table}"]
    r = psql(t.port, *[arg for stmt in script for arg in ("-c", stmt)])
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "3"


def test_error_then_session_continues(t):
    with t.connect() as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.UndefinedTable):
            conn.execute("SELECT * FROM no_such_table_here")
        assert conn.execute("SELECT 'still here'").fetchone()[0] == "still here"


def test_failed_transaction_block(t):
    with t.connect(autocommit=False) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            conn.execute("SELECT 1/0")
        with pytest.raises(psycopg.errors.InFailedSqlTransaction):
            conn.execute("SELECT 1")
        conn.rollback()
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_large_result_streams(t):
    with t.connect() as conn:
        cur = conn.execute("SELECT i, md5(i::text) FROM generate_series(1, 200000) i")
        rows = cur.fetchall()
    assert len(rows) == 200000
    assert rows[-1] == (200000, hashlib.md5(b"200000").hexdigest())
    assert sum(r[0] for r in rows) == 200000 * 200001 // 2


def test_large_query_text(t):
    """A 512 KiB query message, below the default max_packet_size (1 MiB)."""
    blob = "x" * (512 * 1024)
    with t.connect() as conn:
        assert conn.execute(f"SELECT length('{blob}')").fetchone()[0] == len(blob)


# -- extended query ----------------------------------------------------------

def test_extended_query_parameters(t):
    with t.connect() as conn:
        for i in range(8):  # psycopg prepares server-side after a few runs, and prepare=True at once
            row = conn.execute("SELECT %s::int + %s::int, %s::text, %s::text IS NULL",
                               (i, 1, f"v{i}", None), prepare=True).fetchone()
            assert row == (i + 1, f"v{i}", True)
        row = conn.execute("SELECT %s::bytea, %s::numeric", (b"\x00\xff", 1.5),
                           binary=True).fetchone()
        assert row == (b"\x00\xff", 1.5)


def test_extended_query_error_and_recovery(t):
    with t.connect() as conn:
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            conn.execute("SELECT %s::int", ("not a number",))
        with pytest.raises(psycopg.errors.UndefinedColumn):
            conn.execute("SELECT nope FROM (SELECT 1) s WHERE 1 = %s", (1,), prepare=True)
        assert conn.execute("SELECT %s::int", (7,), prepare=True).fetchone()[0] == 7


def test_executemany(t, table):
    with t.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id int, v text)")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} VALUES (%s, %s)",
                            [(i, str(i)) for i in range(200)])
        assert conn.execute(f"SELECT count(*), sum(id) FROM {table}").fetchone() == (200, 19900)


def test_pipeline_mode(t):
    with t.connect() as conn:
        conn.execute("CREATE TEMP TABLE p (id int PRIMARY KEY, v text)")
        with conn.pipeline():
            for i in range(100):
                conn.execute("INSERT INTO p VALUES (%s, %s)", (i, str(i)))
            cur = conn.execute("SELECT count(*), sum(id) FROM p")
            cur2 = conn.execute("SELECT v FROM p WHERE id = %s", (42,))
        assert cur.fetchone() == (100, 4950)
        assert cur2.fetchone() == ("42",)

        # An error inside a pipeline aborts the rest of it, and only it.
        with pytest.raises(psycopg.errors.UniqueViolation):
            with conn.pipeline():
                conn.execute("INSERT INTO p VALUES (%s, 'dup')", (1,))
                conn.execute("INSERT INTO p VALUES (%s, 'after')", (1000,))
        assert conn.execute("SELECT count(*) FROM p").fetchone()[0] == 100
        with conn.pipeline():
            cur = conn.execute("SELECT %s::int * 2", (21,))
        assert cur.fetchone()[0] == 42


# -- COPY ----------------------------------------------------------------------

def test_copy_from_stdin_and_to_stdout(t, table):
    n = 20000
    with t.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id int, name text)")
        with conn.cursor() as cur:
            with cur.copy(f"COPY {table} (id, name) FROM STDIN") as copy:
                for i in range(n):
                    copy.write_row((i, f"name-{i}"))
            assert cur.rowcount == n
        assert conn.execute(f"SELECT count(*), sum(id) FROM {table}").fetchone() == (
            n, n * (n - 1) // 2)
        with conn.cursor() as cur:
            with cur.copy(f"COPY (SELECT id, name FROM {table} ORDER BY id) TO STDOUT") as copy:
                rows = [(int(a), b) for a, b in copy.rows()]
        assert rows == [(i, f"name-{i}") for i in range(n)]


def test_copy_from_stdin_bad_data(t, table):
    with t.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        with pytest.raises(psycopg.errors.InvalidTextRepresentation):
            with conn.cursor() as cur:
                with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    copy.write(b"1\n2\nnot-an-int\n4\n")
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_psql_copy(t, table, tmp_path):
    src = tmp_path / "in.csv"
    dst = tmp_path / "out.csv"
    src.write_text("".join(f"{i},row {i}\n" for i in range(5000)))
    r = psql(t.port, "-c", f"CREATE TABLE {table} (id int, v text)",
             "-c", f"\\copy {table} FROM '{src}' WITH (FORMAT csv)",
             "-c", f"\\copy (SELECT * FROM {table} ORDER BY id) TO '{dst}' WITH (FORMAT csv)")
    assert r.returncode == 0, r.stderr
    assert dst.read_text() == src.read_text()


# -- LISTEN / NOTIFY -------------------------------------------------------------

def test_listen_notify_across_connections(t):
    with t.connect() as listener, t.connect() as notifier:
        got = []
        listener.add_notify_handler(got.append)
        listener.execute("LISTEN tandem_chan")
        notifier.execute("NOTIFY tandem_chan, 'hello'")
        notifier.execute("SELECT pg_notify('tandem_chan', 'world')")
        # The notifications arrive while the listener is idle: tandem must
        # forward what the server sends between requests.
        readable, _, _ = select.select([listener.fileno()], [], [], 20)
        assert readable, "no NotificationResponse reached the idle client within 20 s"

        def both():
            listener.execute("SELECT 1")
            return len(got) >= 2
        wait_until(both, 20, "two notifications")
        assert [(n.channel, n.payload) for n in got] == [("tandem_chan", "hello"),
                                                         ("tandem_chan", "world")]


# -- cancel ------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["simple", "extended"])
def test_query_cancel(t, pg_primary, protocol):
    marker = "cancel_" + uuid.uuid4().hex[:8]
    with t.connect() as conn:
        def sleeping():
            with pg_primary.connect() as admin:
                return admin.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                    "AND query LIKE %s", (f"%{marker}%",)).fetchone()[0] == 1

        def canceller():
            wait_until(sleeping, 20, "the pg_sleep to run on the server")
            conn.cancel()

        th = threading.Thread(target=canceller, daemon=True)
        th.start()
        with pytest.raises(psycopg.errors.QueryCanceled):
            if protocol == "simple":
                conn.execute(f"SELECT pg_sleep(30) /* {marker} */")
            else:
                conn.execute(f"SELECT pg_sleep(%s) /* {marker} */", (30,))
        th.join(30)
        assert conn.execute("SELECT 'after cancel'").fetchone()[0] == "after cancel"


def test_cancel_of_idle_session_is_harmless(t):
    with t.connect() as conn:
        conn.cancel()
        assert conn.execute("SELECT 1").fetchone()[0] == 1


def test_many_sessions(t):
    conns = [t.connect() for _ in range(20)]
    try:
        pids = {c.execute("SELECT pg_backend_pid()").fetchone()[0] for c in conns}
        assert len(pids) == 20, "each client session needs its own server session"
    finally:
        for c in conns:
            c.close()


def test_query_cancel_many_sessions(t, pg_primary):
    """Each cancel arrives on a new connection, which may land on any worker."""
    for n in range(6):
        marker = f"cancel_many_{n}_" + uuid.uuid4().hex[:6]
        with t.connect() as conn:
            def canceller():
                wait_until(lambda: _active(pg_primary, marker), 20, "the pg_sleep to run")
                conn.cancel()
            th = threading.Thread(target=canceller, daemon=True)
            th.start()
            with pytest.raises(psycopg.errors.QueryCanceled):
                conn.execute(f"SELECT pg_sleep(30) /* {marker} */")
            th.join(30)


def _active(pg, marker):
    with pg.connect() as admin:
        return admin.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' "
                             "AND query LIKE %s", (f"%{marker}%",)).fetchone()[0] == 1


# -- framing: how the bytes are cut must not matter -----------------------------

def test_byte_by_byte_and_batched_messages(t):
    import socket
    with pgwire.PgRaw(t.port) as raw:
        raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for b in pgwire.startup_message("trustuser"):
            raw.send(bytes([b]))
        while raw.read_message()[0] != "Z":
            pass
        for b in pgwire.query_message("SELECT 'slow'"):
            raw.send(bytes([b]))
        assert _read_rows(raw) == [["slow"]]
        # three queries in one write
        raw.send(b"".join(pgwire.query_message(f"SELECT {i}") for i in range(3)))
        assert [_read_rows(raw) for _ in range(3)] == [[["0"]], [["1"]], [["2"]]]


def _read_rows(raw):
    rows = []
    while True:
        mtype, payload = raw.read_message()
        if mtype == "D":
            (ln,) = struct.unpack("!i", payload[2:6])
            rows.append([payload[6:6 + ln].decode()])
        elif mtype == "E":
            raise AssertionError(pgwire.parse_error(payload))
        elif mtype == "Z":
            return rows


# -- what the server says on its own -----------------------------------------------

def test_notices_and_parameter_status(t):
    with t.connect() as conn:
        notices = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("DO $$ BEGIN RAISE NOTICE 'hello from plpgsql'; END $$")
        assert notices == ["hello from plpgsql"]
        conn.execute("SET application_name = 'renamed-by-set'")
        assert conn.info.parameter_status("application_name") == "renamed-by-set"


def test_copy_fail_from_client(t, table):
    with t.connect() as conn:
        conn.execute(f"CREATE TABLE {table} (id int)")
        # psycopg answers an exception in the block with CopyFail; the server
        # then fails the COPY with 57014, which psycopg raises
        with pytest.raises(psycopg.errors.QueryCanceled, match="COPY from stdin failed"):
            with conn.cursor() as cur:
                with cur.copy(f"COPY {table} FROM STDIN") as copy:
                    copy.write_row((1,))
                    raise RuntimeError("client gives up")
        assert conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0


# -- backpressure ------------------------------------------------------------------

def test_slow_reader_makes_server_wait_not_tandem_buffer(t, pg_primary):
    """A client that stops reading a 200 MB result: tandem must stop reading
    the server (which then waits in ClientWrite) instead of buffering it."""
    marker = "slowreader_" + uuid.uuid4().hex[:8]
    rss_before = proc_kib(t.proc.pid)
    with pgwire.PgRaw(t.port, timeout=60) as raw:
        raw.login("trustuser")
        raw.send(pgwire.query_message(
            f"SELECT repeat('x', 1000) FROM generate_series(1, 200000) /* {marker} */"))

        def server_blocked():
            with pg_primary.connect() as admin:
                return admin.execute(
                    "SELECT wait_event FROM pg_stat_activity WHERE query LIKE %s "
                    "AND pid <> pg_backend_pid()", (f"%{marker}%",)).fetchone() == ("ClientWrite",)
        try:
            wait_until(server_blocked, 30, "the server to wait in ClientWrite")
        except TimeoutError as exc:
            raise AssertionError(f"{exc}; tandem RSS grew from {rss_before} KiB to "
                                 f"{proc_kib(t.proc.pid)} KiB") from None
        grown = proc_kib(t.proc.pid) - rss_before
        assert grown < 64 * 1024 or sanitized(t.proc.pid), f"tandem RSS grew by {grown} KiB while the client did not read"
        # now read it all: nothing lost
        rows, done = 0, False
        while not done:
            mtype, _ = raw.read_message()
            rows += mtype == "D"
            done = mtype == "Z"
        assert rows == 200000


# -- server sessions that end under the client -----------------------------------------

def test_server_session_terminated_while_idle(t, pg_primary):
    conn = t.connect(application_name="victim-idle")
    conn.execute("SELECT 1")
    with pg_primary.connect() as admin:
        n = admin.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE application_name = 'victim-idle'").fetchone()[0]
        assert n == 1
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    conn.close()
    with t.connect() as fresh:
        assert fresh.execute("SELECT 'fresh'").fetchone()[0] == "fresh"


def test_server_session_terminated_by_itself(t):
    conn = t.connect()
    with pytest.raises(psycopg.OperationalError):    # 57P01 admin_shutdown
        conn.execute("SELECT pg_terminate_backend(pg_backend_pid())")
    assert conn.closed or conn.broken
    conn.close()
    with t.connect() as fresh:
        assert fresh.execute("SELECT 2").fetchone()[0] == 2


def test_connection_storm(t):
    """Many short sessions opened and closed at once from several threads."""
    errors = []

    def churn(k):
        try:
            for i in range(25):
                with t.connect() as conn:
                    assert conn.execute("SELECT %s::int", (i,)).fetchone()[0] == i
                if i % 5 == 0:   # and some that leave without a Terminate
                    with pgwire.PgRaw(t.port) as raw:
                        raw.login("trustuser")
                        raw.send(pgwire.query_message("SELECT pg_sleep(0.01)"))
        except Exception as exc:  # noqa: BLE001
            errors.append(f"thread {k}: {exc!r}")

    threads = [threading.Thread(target=churn, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert not any(th.is_alive() for th in threads)
