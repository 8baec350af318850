#!/usr/bin/python3
"""bench/corpus.py - a varied workload through tandem, and its validation figure.

Run by bench/corpus.sh against a tandem in shadow mode (every read compared)
in front of two freshly initialised identical servers.  What a real
application and its tools send, not what a benchmark does:

  - psql meta-commands (\\d, \\dt+, \\df, \\l, \\dn, \\du, \\dT, \\sf ...), which
    read OIDs from the primary and send them back;
  - SQLAlchemy's introspection (Inspector: tables, columns, keys, indexes,
    constraints, comments, views, sequences) and a MetaData.reflect(), over
    psycopg2, and the catalog queries Django's introspection sends;
  - sequences (serial, identity, nextval/currval/setval), partitioned tables
    (routing, moving rows, attach/detach), large objects, LISTEN/NOTIFY,
    COPY FROM STDIN / TO STDOUT, prepared statements, savepoints, and plain
    reads (joins, CTEs, window functions, JSON).

It then prints tandem's outcome counts, the validation figure (match over
everything compared) and every statement that mismatched or failed on the
shadow, with its samples.  Usage: corpus.py PORT ADMIN_PORT [DBNAME]
"""
import json
import subprocess
import sys
import time
import urllib.request

import psycopg

PORT, ADMIN = int(sys.argv[1]), int(sys.argv[2])
DB = sys.argv[3] if len(sys.argv) > 3 else "postgres"
DSN = f"host=127.0.0.1 port={PORT} user=postgres dbname={DB}"
PSQL = "/usr/lib/postgresql/15/bin/psql"

SCHEMA = """
CREATE TYPE corp_status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE corp_customers (
    id serial PRIMARY KEY, email text UNIQUE NOT NULL, name text,
    created date NOT NULL DEFAULT DATE '2024-01-01', CHECK (email LIKE '%@%'));
COMMENT ON TABLE corp_customers IS 'who buys';
COMMENT ON COLUMN corp_customers.email IS 'where to write';
CREATE TABLE corp_orders (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id int NOT NULL REFERENCES corp_customers (id) ON DELETE CASCADE,
    status corp_status NOT NULL DEFAULT 'new', total numeric(12, 2) NOT NULL,
    doc jsonb NOT NULL DEFAULT '{}');
CREATE INDEX corp_orders_customer ON corp_orders (customer_id);
CREATE INDEX corp_orders_doc ON corp_orders USING gin (doc);
CREATE VIEW corp_order_totals AS
    SELECT c.name, count(*) AS n, sum(o.total) AS total
    FROM corp_customers c JOIN corp_orders o ON o.customer_id = c.id GROUP BY c.name;
CREATE MATERIALIZED VIEW corp_paid AS SELECT id, total FROM corp_orders WHERE status = 'paid';
CREATE SEQUENCE corp_ticket START 1000 INCREMENT 7;
CREATE FUNCTION corp_fn(a int, b int) RETURNS int LANGUAGE sql IMMUTABLE AS 'SELECT a * b + 1';
CREATE TABLE corp_events (id bigserial, at date NOT NULL, kind text, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE corp_events_2024 PARTITION OF corp_events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE corp_events_2025 PARTITION OF corp_events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE corp_events_old (id bigserial, at date NOT NULL, kind text, PRIMARY KEY (id, at));
CREATE SCHEMA corp_audit;
CREATE TABLE corp_audit.log (id serial PRIMARY KEY, what text);
"""

META = [r"\d", r"\dt+", r"\d+ corp_orders", r"\d corp_customers", r"\d corp_events", r"\df",
        r"\df+ corp_fn", r"\l", r"\dn", r"\du", r"\di", r"\dv", r"\dm", r"\ds", r"\dT+",
        r"\dx", r"\sf corp_fn", r"\dp", r"\dd", r"\dD", r"\dC", r"\dy", r"\d+ corp_order_totals",
        r"\d corp_audit.*", r"\lo_list", r"\dconfig work_mem", r"\dP+", r"\des", r"\drds"]


def psql(*args):
    done = subprocess.run([PSQL, "-X", "-q", "-h", "127.0.0.1", "-p", str(PORT), "-U", "postgres",
                           "-d", DB, *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        print(f"psql {args}: {done.stderr.strip()}", file=sys.stderr)


def data(conn):
    with conn.cursor() as cur:
        for i in range(200):
            cur.execute("INSERT INTO corp_customers (email, name) VALUES (%s, %s) RETURNING id",
                        (f"c{i}@example.com", f"customer {i % 37}"))
        with cur.copy("COPY corp_orders (customer_id, status, total, doc) FROM STDIN") as cp:
            for i in range(2000):
                cp.write_row((1 + i % 200, ("new", "paid", "shipped")[i % 3], i * 1.25,
                              json.dumps({"n": i, "tags": ["a", "b"][: i % 3]})))
        cur.execute("REFRESH MATERIALIZED VIEW corp_paid")
        cur.execute("ANALYZE")


def sequences(conn):
    for _ in range(20):
        conn.execute("SELECT nextval('corp_ticket')").fetchone()
    conn.execute("SELECT currval('corp_ticket')").fetchone()
    conn.execute("SELECT setval('corp_ticket', 5000)").fetchone()
    conn.execute("SELECT last_value, is_called FROM corp_ticket").fetchone()
    conn.execute("INSERT INTO corp_audit.log (what) VALUES ('seq') RETURNING id").fetchone()
    conn.execute("SELECT * FROM pg_sequences WHERE sequencename = 'corp_ticket'").fetchall()
    conn.execute("SELECT pg_get_serial_sequence('corp_customers', 'id')").fetchone()


def partitions(conn):
    with conn.cursor() as cur:
        for i in range(300):
            cur.execute("INSERT INTO corp_events (at, kind) VALUES (DATE '2024-01-01' + %s, %s)",
                        (i * 2, f"k{i % 5}"))
        cur.execute("UPDATE corp_events SET at = at + 400 WHERE kind = 'k1' AND at < '2024-06-01'")
        cur.execute("SELECT tableoid::regclass, count(*) FROM corp_events GROUP BY 1 ORDER BY 1")
        cur.fetchall()
        cur.execute("SELECT kind, count(*), min(at), max(at) FROM corp_events GROUP BY kind ORDER BY kind")
        cur.fetchall()
        cur.execute("ALTER TABLE corp_events DETACH PARTITION corp_events_2025")
        cur.execute("ALTER TABLE corp_events ATTACH PARTITION corp_events_2025 "
                    "FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
        oid = cur.execute("SELECT 'corp_events'::regclass::oid").fetchone()[0]
        cur.execute("SELECT pg_get_partkeydef(%s)", (oid,))
        cur.execute("SELECT * FROM pg_partition_tree('corp_events') ORDER BY relid::text")
        cur.fetchall()


def large_objects(conn):
    with conn.transaction():
        oid = conn.execute("SELECT lo_from_bytea(0, 'hello large object')").fetchone()[0]
        conn.execute("SELECT lo_get(%s)", (oid,)).fetchone()
        conn.execute("SELECT lo_put(%s, 6, 'LARGE')", (oid,))
        conn.execute("SELECT lo_get(%s, 0, 11)", (oid,)).fetchone()
        fd = conn.execute("SELECT lo_open(%s, 262144)", (oid,)).fetchone()[0]
        conn.execute("SELECT loread(%s, 5)", (fd,)).fetchone()
        conn.execute("SELECT lo_close(%s)", (fd,))
    conn.execute("SELECT count(*) FROM pg_largeobject_metadata").fetchone()
    conn.execute("SELECT lo_unlink(%s)", (oid,))


def notify():
    got = []
    listener = psycopg.connect(DSN, autocommit=True)
    listener.add_notify_handler(lambda n: got.append(n.payload))
    listener.execute("LISTEN corp_channel")
    with psycopg.connect(DSN, autocommit=True) as talker:
        talker.execute("NOTIFY corp_channel, 'one'")
        talker.execute("SELECT pg_notify('corp_channel', 'two')")
    deadline = time.time() + 5
    while len(got) < 2 and time.time() < deadline:
        listener.execute("SELECT 1")  # notifications arrive with an answer
        time.sleep(0.1)
    listener.execute("UNLISTEN corp_channel")
    listener.close()
    if got != ["one", "two"]:
        print(f"LISTEN/NOTIFY through tandem: got {got}", file=sys.stderr)


def reads(conn):
    q = [
        "SELECT c.name, count(o.id), sum(o.total) FROM corp_customers c "
        "LEFT JOIN corp_orders o ON o.customer_id = c.id GROUP BY c.name ORDER BY c.name",
        "WITH r AS (SELECT customer_id, total, rank() OVER (PARTITION BY customer_id "
        "ORDER BY total DESC, id) AS k FROM corp_orders) SELECT * FROM r WHERE k = 1 ORDER BY customer_id",
        "SELECT doc->>'n' AS n, jsonb_array_length(doc->'tags') FROM corp_orders "
        "WHERE doc @> '{\"tags\": [\"a\"]}' ORDER BY id LIMIT 50",
        "SELECT status, percentile_cont(0.5) WITHIN GROUP (ORDER BY total) FROM corp_orders GROUP BY status",
        "SELECT * FROM corp_order_totals ORDER BY name",
        "SELECT count(*), sum(total) FROM corp_paid",
        "SELECT corp_fn(6, 7), corp_fn(id, 2) FROM corp_customers WHERE id < 5 ORDER BY id",
        "SELECT g, g * g FROM generate_series(1, 100) g",
        "SELECT string_agg(name, ',' ORDER BY id) FROM corp_customers WHERE id % 10 = 0",
        "SELECT exists (SELECT 1 FROM corp_orders WHERE total > 1000)",
    ]
    for sql in q:
        conn.execute(sql).fetchall()
    for i in range(50):  # prepared, with parameters
        conn.execute("SELECT id, status, total FROM corp_orders WHERE customer_id = %s ORDER BY id",
                     (1 + i,), prepare=True).fetchall()
    with conn.transaction():
        conn.execute("UPDATE corp_orders SET status = 'shipped' WHERE id % 97 = 0")
        with conn.transaction():  # a savepoint
            conn.execute("UPDATE corp_customers SET name = 'x' WHERE id = 1")
            conn.execute("SELECT name FROM corp_customers WHERE id = 1").fetchone()
            raise_rollback = True
            if raise_rollback:
                conn.execute("SELECT 1")
        conn.execute("SELECT count(*) FROM corp_orders WHERE status = 'shipped'").fetchone()
    with conn.cursor() as cur:
        with cur.copy("COPY (SELECT id, total FROM corp_orders ORDER BY id) TO STDOUT") as cp:
            for _ in cp:
                pass


def sqlalchemy_introspection():
    import sqlalchemy as sa
    engine = sa.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{PORT}/{DB}")
    insp = sa.inspect(engine)
    for schema in [None, "corp_audit"]:
        for t in insp.get_table_names(schema=schema):
            insp.get_columns(t, schema=schema)
            insp.get_pk_constraint(t, schema=schema)
            insp.get_foreign_keys(t, schema=schema)
            insp.get_indexes(t, schema=schema)
            insp.get_unique_constraints(t, schema=schema)
            insp.get_check_constraints(t, schema=schema)
            insp.get_table_comment(t, schema=schema)
        for v in insp.get_view_names(schema=schema):
            insp.get_view_definition(v, schema=schema)
    insp.get_schema_names()
    insp.get_sequence_names()
    insp.get_enums()
    insp.has_table("corp_orders")
    meta = sa.MetaData()
    meta.reflect(bind=engine, views=True)
    with engine.connect() as c:
        orders = meta.tables["corp_orders"]
        c.execute(sa.select(orders.c.id, orders.c.total).where(orders.c.customer_id == 3)
                  .order_by(orders.c.id)).fetchall()
    engine.dispose()


# Django's PostgreSQL introspection (django/db/backends/postgresql/introspection.py, 4.2)
DJANGO = [
    """SELECT c.relname, CASE WHEN c.relispartition THEN 'p' WHEN c.relkind IN ('m', 'v') THEN 'v'
       ELSE 't' END, obj_description(c.oid, 'pg_class') FROM pg_catalog.pg_class c
       LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
       WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v') AND n.nspname NOT IN ('pg_catalog', 'pg_toast')
       AND pg_catalog.pg_table_is_visible(c.oid)""",
    """SELECT a.attname AS column_name, NOT (a.attnotnull OR (t.typtype = 'd' AND t.typnotnull))
       AS is_nullable, pg_get_expr(ad.adbin, ad.adrelid) AS column_default,
       CASE WHEN collname = 'default' THEN NULL ELSE collname END AS collation,
       a.attidentity != '' AS is_autofield, col_description(a.attrelid, a.attnum) AS column_comment
       FROM pg_attribute a LEFT JOIN pg_attrdef ad ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
       JOIN pg_type t ON a.atttypid = t.oid JOIN pg_class c ON a.attrelid = c.oid
       JOIN pg_namespace n ON c.relnamespace = n.oid LEFT JOIN pg_collation co ON a.attcollation = co.oid
       WHERE c.relkind IN ('f', 'm', 'p', 'r', 'v') AND c.relname = %s
       AND n.nspname NOT IN ('pg_catalog', 'pg_toast') AND pg_catalog.pg_table_is_visible(c.oid)""",
    """SELECT s.relname AS sequence_name, a.attname AS colname FROM pg_class s
       JOIN pg_depend d ON d.objid = s.oid AND d.classid = 'pg_class'::regclass
       AND d.refclassid = 'pg_class'::regclass
       JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
       JOIN pg_class tbl ON tbl.oid = d.refobjid AND tbl.relname = %s
       AND pg_catalog.pg_table_is_visible(tbl.oid) WHERE s.relkind = 'S'""",
    """SELECT a1.attname, c2.relname, a2.attname FROM pg_constraint con
       LEFT JOIN pg_class c1 ON con.conrelid = c1.oid LEFT JOIN pg_class c2 ON con.confrelid = c2.oid
       LEFT JOIN pg_attribute a1 ON c1.oid = a1.attrelid AND a1.attnum = con.conkey[1]
       LEFT JOIN pg_attribute a2 ON c2.oid = a2.attrelid AND a2.attnum = con.confkey[1]
       WHERE c1.relname = %s AND con.contype = 'f' AND c1.relnamespace = c2.relnamespace
       AND pg_catalog.pg_table_is_visible(c1.oid)""",
    """SELECT c.conname, array(SELECT attname FROM unnest(c.conkey) WITH ORDINALITY cols(colid, arridx)
       JOIN pg_attribute AS ca ON cols.colid = ca.attnum WHERE ca.attrelid = c.conrelid
       ORDER BY cols.arridx), c.contype, (SELECT fkc.relname || '.' || fka.attname
       FROM pg_attribute AS fka JOIN pg_class AS fkc ON fka.attrelid = fkc.oid
       WHERE fka.attrelid = c.confrelid AND fka.attnum = c.confkey[1]), cl.reloptions
       FROM pg_constraint AS c JOIN pg_class AS cl ON c.conrelid = cl.oid
       WHERE cl.relname = %s AND pg_catalog.pg_table_is_visible(cl.oid)""",
    """SELECT indexname, array_agg(attname ORDER BY arridx), indisunique, indisprimary,
       array_agg(ordering ORDER BY arridx), amname, exprdef, s2.attoptions
       FROM (SELECT c2.relname as indexname, idx.*, attr.attname, am.amname,
         CASE WHEN idx.indexprs IS NOT NULL THEN pg_get_indexdef(idx.indexrelid) END AS exprdef,
         CASE am.amname WHEN %s THEN CASE (option & 1) WHEN 1 THEN 'DESC' ELSE 'ASC' END END
         as ordering, c2.reloptions as attoptions
         FROM (SELECT * FROM pg_index i, unnest(i.indkey, i.indoption)
           WITH ORDINALITY koi(key, option, arridx)) idx
         LEFT JOIN pg_class c ON idx.indrelid = c.oid LEFT JOIN pg_class c2 ON idx.indexrelid = c2.oid
         LEFT JOIN pg_am am ON c2.relam = am.oid
         LEFT JOIN pg_attribute attr ON attr.attrelid = c.oid AND attr.attnum = idx.key
         WHERE c.relname = %s AND pg_catalog.pg_table_is_visible(c.oid)) s2
       GROUP BY indexname, indisunique, indisprimary, amname, exprdef, attoptions""",
]


def django_introspection(conn):
    conn.execute(DJANGO[0]).fetchall()
    for t in ("corp_customers", "corp_orders", "corp_events"):
        conn.execute(DJANGO[1], (t,)).fetchall()
        conn.execute(DJANGO[2], (t,)).fetchall()
        conn.execute(DJANGO[3], (t,)).fetchall()
        conn.execute(DJANGO[4], (t,)).fetchall()
        conn.execute(DJANGO[5], ("btree", t)).fetchall()


def maintenance(conn):
    """Physical state and server-local values: noise with a reason, never a mismatch."""
    conn.execute("CREATE INDEX corp_events_brin ON corp_events_2024 USING brin (at)")
    conn.execute("SELECT brin_summarize_new_values('corp_events_brin')").fetchone()
    conn.execute("SELECT gin_clean_pending_list('corp_orders_doc')").fetchone()
    xid = conn.execute("SELECT txid_current()").fetchone()[0]
    conn.execute("SELECT txid_status(%s)", (xid,)).fetchone()
    conn.execute("SELECT pg_relation_size('corp_orders'), pg_total_relation_size('corp_orders')").fetchone()
    conn.execute("SELECT n_live_tup FROM pg_stat_user_tables WHERE relname = 'corp_orders'").fetchone()
    conn.execute("COPY (SELECT id, email FROM corp_customers ORDER BY id) TO '/tmp/tandem-corpus-copy.csv'")
    conn.execute("CREATE TABLE corp_loaded (id int, email text)")
    conn.execute("COPY corp_loaded FROM '/tmp/tandem-corpus-copy.csv'")
    conn.execute("SELECT count(*) FROM corp_loaded").fetchone()
    conn.execute("SELECT pg_backend_pid() > 0, current_setting('work_mem'), version() IS NOT NULL").fetchone()
    conn.execute("VACUUM ANALYZE corp_orders")
    conn.execute("SELECT relname, relkind FROM pg_class WHERE relname LIKE 'corp_%' ORDER BY relname").fetchall()


def concurrent_worker(n):
    """DDL from several sessions at once: the shadow allocates OIDs in another order, so
    what psql \d and drivers send back (an OID of the primary's) names another object there."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        for i in range(8):
            t = f"corp_t{n}_{i}"
            conn.execute(f"CREATE TABLE {t} (id int PRIMARY KEY, v text, at date DEFAULT DATE '2024-01-01')")
            conn.execute(f"CREATE INDEX ON {t} (v)")
            conn.execute(f"INSERT INTO {t} SELECT g, md5(g::text) FROM generate_series(1, 50) g")
            psql("-c", rf"\d {t}")
            oid = conn.execute("SELECT %s::regclass::oid", (t,)).fetchone()[0]
            conn.execute("SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = %s",
                         (oid,)).fetchall()
            conn.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                         "WHERE a.attrelid = %s AND a.attnum > 0 ORDER BY a.attnum", (oid,)).fetchall()
            conn.execute("SELECT lo_from_bytea(0, 'x')").fetchone()
            conn.execute("SELECT txid_current()").fetchone()
            conn.execute(f"SELECT ctid, xmin, id FROM {t} WHERE id < 3 ORDER BY id").fetchall()
            conn.execute(f"SELECT count(*), sum(id) FROM {t}").fetchone()
            if i % 2:
                conn.execute(f"DROP TABLE {t}")


def concurrent():
    import threading
    threads = [threading.Thread(target=concurrent_worker, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()


def report():
    deadline = time.time() + 60
    while True:  # drained: nothing queued, nothing unanswered
        body = urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/metrics", timeout=10).read().decode()
        busy = [ln for ln in body.splitlines()
                if (ln.startswith("tandem_shadow_units_open{") or ln.startswith("tandem_shadow_queue_bytes"))
                and not ln.endswith(" 0")]
        if not busy or time.time() > deadline:
            break
        time.sleep(0.5)
    time.sleep(4)  # the last re-checks (up to 2 s apart) end
    rep = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ADMIN}/api/shadow/report?top=2000",
                                            timeout=10).read())
    return rep


def main():
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(SCHEMA)
        data(conn)
        for cmd in META:
            psql("-c", cmd)
        psql("-c", r"\copy corp_audit.log (what) FROM STDIN", "-f", "/dev/null")
        sequences(conn)
        partitions(conn)
        large_objects(conn)
        notify()
        reads(conn)
        django_introspection(conn)
        maintenance(conn)
        sqlalchemy_introspection()
        concurrent()
        for cmd in META[:8]:  # again, after all that
            psql("-c", cmd)
    rep = report()
    with open("/tmp/tandem-corpus-report.json", "w") as f:
        json.dump(rep, f, indent=1)
    lis = next(entry for entry in rep["listeners"] if entry.get("name") == "pg")
    print(json.dumps({k: lis[k] for k in lis if k in ("outcomes", "noise", "rechecks")}))
    count = lis["outcomes"]
    compared = sum(v for k, v in count.items() if k not in ("dropped", "primary_error", "skipped_lag"))
    judged = count.get("match", 0) + count.get("mismatch", 0) + count.get("shadow_error", 0)
    print(f"compared units: {compared}; validation (match / (match + mismatch + shadow_error)): "
          f"{count.get('match', 0)} / {judged} = {100.0 * count.get('match', 0) / max(judged, 1):.2f}%; "
          f"noise {count.get('noise', 0)} (by reason {lis['noise']}), transient "
          f"{count.get('transient', 0)}, mismatch {count.get('mismatch', 0)}, "
          f"shadow_error {count.get('shadow_error', 0)}")
    bad = [s for s in rep.get("statements", [])
           if s["count"].get("mismatch", 0) or s["count"].get("shadow_error", 0)]
    for s in bad:
        print(f"--- {s['count']}: {s['statement'][:300]}")
    for smp in rep.get("samples", []):
        print(f"sample: {json.dumps(smp)[:600]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
