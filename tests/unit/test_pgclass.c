/* test_pgclass.c - statement classification: kinds, flags, hints, hostile text. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pgclass.h"

/* Expected flags, one bit per bool of struct pgclass_result. */
enum {
    PE = 1 << 0, /* parse_error */
    TL = 1 << 1, /* too_long */
    LK = 1 << 2, /* locking */
    NM = 1 << 3, /* no_mirror */
    OB = 1 << 4, /* has_order_by */
    VF = 1 << 5, /* volatile_fn */
    UN = 1 << 6, /* unstable */
};

#define R REQ_KIND_READ
#define W REQ_KIND_WRITE
#define S REQ_KIND_SESSION
#define T REQ_KIND_TX
#define A REQ_KIND_ADMIN
#define HP PGCLASS_HINT_PRIMARY
#define HS PGCLASS_HINT_SHADOW
#define HN PGCLASS_HINT_NOSHADOW

struct row {
    const char *sql;
    enum req_kind kind;
    unsigned flags;
    uint8_t hint;
    int nstatements;
};

static const struct row rows[] = {
    /* reads */
    {"SELECT 1", R, 0, 0, 1},
    {"select a, b from t where id = $1", R, 0, 0, 1},
    {"WITH x AS (SELECT 1) SELECT * FROM x", R, 0, 0, 1},
    {"TABLE t", R, 0, 0, 1},
    {"VALUES (1), (2)", R, 0, 0, 1},
    {"SELECT lo_get(16400)", R, UN, 0, 1}, /* a large object's OID is the server's */
    {"SELECT * FROM \"we\"\"ird\" WHERE \"naïve\" = 'héllo'", R, 0, 0, 1},
    {"SELECT '\xe9t\xe9'", R, 0, 0, 1}, /* LATIN1 bytes, invalid UTF-8 */
    {"SELECT 1 LIMIT 1", R, 0, 0, 1},   /* no FROM: nothing to pick from */
    {"SELECT a FROM t WHERE b IN (SELECT b FROM s ORDER BY b)", R, 0, 0, 1},

    /* reads that are not: locking, INTO, data-modifying CTE */
    {"SELECT * FROM t FOR UPDATE", W, LK, 0, 1},
    {"select * from t for share skip locked", W, LK, 0, 1},
    {"SELECT * FROM (SELECT * FROM t FOR NO KEY UPDATE) s", W, LK, 0, 1},
    {"SELECT 1 INTO t2", W, 0, 0, 1},
    {"WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", W, 0, 0, 1},
    {"WITH x AS (UPDATE t SET a = 1 RETURNING a) SELECT count(*) FROM x", W, 0, 0, 1},

    /* EXPLAIN, SHOW */
    {"EXPLAIN SELECT * FROM t", R, OB | UN, 0, 1},
    {"EXPLAIN DELETE FROM t", R, OB | UN, 0, 1},
    {"EXPLAIN SELECT nextval('s')", R, OB | UN, 0, 1},
    {"EXPLAIN ANALYZE DELETE FROM t", W, OB | UN, 0, 1},
    {"EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", W, OB | UN, 0, 1},
    {"EXPLAIN (ANALYZE on) INSERT INTO t VALUES (1)", W, OB | UN, 0, 1},
    {"EXPLAIN (ANALYZE false) DELETE FROM t", R, OB | UN, 0, 1},
    {"EXPLAIN (ANALYZE 0) DELETE FROM t", R, OB | UN, 0, 1},
    {"EXPLAIN ANALYZE SELECT * FROM t", R, OB | UN, 0, 1},
    {"EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", W, OB | LK | UN, 0, 1},
    {"SHOW search_path", R, OB | UN, 0, 1},
    {"SHOW ALL", R, OB | UN, 0, 1},

    /* writes */
    {"INSERT INTO t VALUES (1)", W, 0, 0, 1},
    {"INSERT INTO t SELECT * FROM s", W, 0, 0, 1},
    {"INSERT INTO t (a) VALUES (1) RETURNING id", W, 0, 0, 1},
    {"INSERT INTO t VALUES (1) ON CONFLICT (id) DO UPDATE SET a = 2", W, 0, 0, 1},
    {"UPDATE t SET a = 1 WHERE id = 2", W, 0, 0, 1},
    {"DELETE FROM t WHERE id = 3", W, 0, 0, 1},
    {"MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", W, 0, 0, 1},
    {"CREATE TABLE t (id int primary key)", W, 0, 0, 1},
    {"CREATE TABLE t2 AS SELECT * FROM t", W, 0, 0, 1},
    {"ALTER TABLE t ADD COLUMN b int", W, 0, 0, 1},
    {"DROP TABLE IF EXISTS t CASCADE", W, 0, 0, 1},
    {"CREATE INDEX CONCURRENTLY i ON t (a)", W, 0, 0, 1},
    {"CREATE VIEW v AS SELECT now()", W, VF, 0, 1},
    {"GRANT SELECT ON t TO app", W, 0, 0, 1},
    {"TRUNCATE t", W, 0, 0, 1},
    {"COPY t FROM STDIN", W, 0, 0, 1},
    {"COPY t (a, b) FROM STDIN WITH (FORMAT csv)", W, 0, 0, 1},
    {"COPY t FROM PROGRAM 'cat /tmp/x'", W, UN, 0, 1}, /* the server host's output */
    {"CALL p(1)", W, 0, 0, 1},
    {"DO $$BEGIN PERFORM 1; END$$", W, 0, 0, 1},
    {"LOCK TABLE t IN EXCLUSIVE MODE", W, LK, 0, 1},
    {"EXECUTE p(1)", W, 0, 0, 1},
    {"CREATE ROLE app", W, 0, 0, 1},

    /* write functions */
    {"SELECT nextval('s')", W, VF | UN, 0, 1},
    {"SELECT pg_catalog.setval('s', 1)", W, VF | UN, 0, 1},
    {"SELECT currval('s')", R, VF | UN, 0, 1},
    {"SELECT pg_advisory_lock(1)", W, LK, 0, 1},
    {"SELECT pg_try_advisory_xact_lock(1, 2)", W, LK, 0, 1},
    {"SELECT pg_advisory_unlock_all()", W, 0, 0, 1},
    {"SELECT lo_create(0)", W, UN, 0, 1}, /* answers the new OID */
    {"SELECT id FROM t WHERE pg_try_advisory_lock(id) LIMIT 1", W, LK | UN, 0, 1},

    /* COPY TO */
    {"COPY t TO STDOUT", R, 0, 0, 1},
    {"COPY (SELECT * FROM t ORDER BY id) TO STDOUT", R, OB, 0, 1},
    {"COPY (DELETE FROM t RETURNING *) TO STDOUT", W, 0, 0, 1},
    {"COPY t TO '/tmp/t.csv'", A, UN, 0, 1},

    /* session */
    {"SET search_path = a, b", S, 0, 0, 1},
    {"SET LOCAL statement_timeout = 0", S, 0, 0, 1},
    {"RESET ALL", S, 0, 0, 1},
    {"DISCARD ALL", S, 0, 0, 1},
    {"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", S, 0, 0, 1},
    {"PREPARE p AS SELECT nextval('s')", S, 0, 0, 1},
    {"DEALLOCATE p", S, 0, 0, 1},
    {"LOAD 'auto_explain'", S, 0, 0, 1},
    {"SELECT set_config('search_path', 'a', false)", S, 0, 0, 1},
    {"DECLARE c CURSOR WITH HOLD FOR SELECT * FROM t", S, 0, 0, 1},
    {"DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE", W, LK, 0, 1},
    {"FETCH 10 FROM c", S, 0, 0, 1},
    {"MOVE NEXT IN c", S, 0, 0, 1},
    {"CLOSE c", S, 0, 0, 1},
    {"LISTEN ch", S, NM, 0, 1},
    {"UNLISTEN *", S, NM, 0, 1},
    {"NOTIFY ch, 'x'", S, NM, 0, 1},
    {"SELECT pg_notify('ch', 'x')", S, NM, 0, 1},
    {"LISTEN a; NOTIFY b", S, NM, 0, 2},
    {"INSERT INTO t VALUES (1); NOTIFY ch", W, 0, 0, 2},
    {"SET x = 1; LISTEN ch", S, 0, 0, 2},

    /* transactions */
    {"BEGIN", T, 0, 0, 1},
    {"START TRANSACTION ISOLATION LEVEL REPEATABLE READ", T, 0, 0, 1},
    {"COMMIT", T, 0, 0, 1},
    {"ROLLBACK", T, 0, 0, 1},
    {"SAVEPOINT a", T, 0, 0, 1},
    {"RELEASE SAVEPOINT a", T, 0, 0, 1},
    {"ROLLBACK TO SAVEPOINT a", T, 0, 0, 1},
    {"PREPARE TRANSACTION 'g'", T, 0, 0, 1},
    {"COMMIT PREPARED 'g'", T, 0, 0, 1},
    {"SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", T, 0, 0, 1},
    {"BEGIN; SELECT 1; COMMIT", T, 0, 0, 3},
    {"BEGIN; INSERT INTO t VALUES (1); COMMIT;", W, 0, 0, 3},
    {"BEGIN; SET LOCAL a = 1; COMMIT", S, 0, 0, 3},

    /* admin */
    {"CHECKPOINT", A, 0, 0, 1},
    {"VACUUM t", A, 0, 0, 1},
    {"ANALYZE t", W, 0, 0, 1},          /* statistics: the shadow must plan alike */
    {"ANALYZE", W, 0, 0, 1},
    {"VACUUM (ANALYZE, VERBOSE) t", A, 0, 0, 1},
    {"REINDEX TABLE t", A, 0, 0, 1},
    {"CLUSTER t USING i", A, 0, 0, 1},
    {"ALTER SYSTEM SET work_mem = '1MB'", A, 0, 0, 1},
    {"SELECT pg_terminate_backend(123)", A, 0, 0, 1},
    {"SELECT pg_cancel_backend(pid) FROM pg_stat_activity", A, UN, 0, 1},
    {"SELECT pg_reload_conf(); SELECT 1", A, 0, 0, 2},

    /* order */
    {"SELECT * FROM t ORDER BY a", R, OB, 0, 1},
    {"SELECT * FROM (SELECT * FROM t ORDER BY a) s", R, 0, 0, 1},
    {"SELECT a FROM t UNION SELECT a FROM s ORDER BY 1", R, OB, 0, 1},
    {"(SELECT a FROM t ORDER BY a)", R, OB, 0, 1},
    {"SELECT * FROM t ORDER BY id LIMIT 10", R, OB, 0, 1},
    {"SELECT 1 ORDER BY 1; SELECT 2 ORDER BY 1", R, OB, 0, 2},
    {"SELECT 1 ORDER BY 1; SELECT 2", R, 0, 0, 2},
    {"SHOW a; SELECT * FROM t ORDER BY 1", R, OB | UN, 0, 2},
    {"UPDATE t SET a = 1; SELECT * FROM t ORDER BY 1", W, OB, 0, 2},

    /* values that are not functions of the data */
    {"SELECT now()", R, VF | UN, 0, 1},
    {"SELECT pg_catalog.now()", R, VF | UN, 0, 1},
    {"SELECT CURRENT_TIMESTAMP", R, VF | UN, 0, 1},
    {"SELECT LOCALTIME(2), CURRENT_DATE", R, VF | UN, 0, 1},
    {"SELECT current_user", R, VF | UN, 0, 1},
    {"SELECT random() FROM t", R, VF | UN, 0, 1},
    {"SELECT * FROM t ORDER BY random()", R, OB | VF | UN, 0, 1},
    {"SELECT gen_random_uuid()", R, VF | UN, 0, 1},
    {"SELECT uuid_generate_v4()", R, VF | UN, 0, 1},
    {"SELECT clock_timestamp() - statement_timestamp()", R, VF | UN, 0, 1},
    {"SELECT txid_current(), pg_backend_pid(), inet_server_port()", R, VF | UN, 0, 1},
    {"SELECT 'now'::timestamptz", R, VF | UN, 0, 1},
    {"SELECT * FROM t WHERE created < now() ORDER BY id", R, OB | VF | UN, 0, 1},
    {"UPDATE t SET a = now()", W, VF, 0, 1},
    {"INSERT INTO t VALUES (now()) RETURNING *", W, VF | UN, 0, 1},
    {"SELECT * FROM t LIMIT 10", R, UN, 0, 1},
    {"SELECT * FROM t OFFSET 5", R, UN, 0, 1},
    {"SELECT * FROM t TABLESAMPLE SYSTEM (10)", R, UN, 0, 1},
    {"SELECT oid FROM pg_type WHERE typname = 'hstore'", R, UN, 0, 1},
    {"SELECT * FROM information_schema.tables", R, UN, 0, 1},
    /* names the JSON escapes: a trailing backslash, a quote, a control byte */
    {"SELECT * FROM \"pg_\\\"", R, UN, 0, 1},
    {"SELECT * FROM \"pg_\"\"\\\\\"", R, UN, 0, 1},
    {"SELECT \"\x01\\\"\"\\\" FROM t ORDER BY 1", R, OB, 0, 1},

    /* hints */
    {"/* tandem:primary */ SELECT 1", R, 0, HP, 1},
    {"SELECT 1 -- tandem:shadow", R, 0, HS, 1},
    {"/* tandem:noshadow */ INSERT INTO t VALUES (1)", W, 0, HN, 1},
    {"/* tandem:shadow */ SELECT /* tandem:primary */ 1", R, 0, HP, 1},
    {"/* tandem:primary tandem:noshadow */ SELECT 1", R, 0, HP | HN, 1},
    {"/* tandem:shadow tandem:noshadow */ SELECT 1", R, 0, HN, 1},
    {"/* outer /* tandem:noshadow */ still outer */ SELECT 1", R, 0, HN, 1},
    {"SELECT '/* tandem:primary */'", R, 0, 0, 1},
    {"SELECT E'\\' /* tandem:primary */'", R, 0, 0, 1},
    {"SELECT $$ /* tandem:primary */ $$", R, 0, 0, 1},
    {"SELECT $a$ $$ /* tandem:primary */ $a$", R, 0, 0, 1},
    {"SELECT \"/* tandem:primary */\" FROM t", R, 0, 0, 1},
    {"SELECT 1 /* tandem:primaryx */", R, 0, 0, 1},
    {"SELECT 1 /* TANDEM:PRIMARY */", R, 0, 0, 1},
    {"SELECT $1 /* tandem:primary */", R, 0, HP, 1},

    /* hostile text */
    {"/* tandem:primary */ garbage", W, PE, HP, 0},
    {"garbage text", W, PE, 0, 0},
    {"", R, 0, 0, 0},
    {"   -- only a comment", R, 0, 0, 0},
    {";;;", R, 0, 0, 0},
    {"SELECT 'unterminated", W, PE, 0, 0},
    {"SELECT 1; SELEC 2", W, PE, 0, 0},
    {"/* unterminated comment", W, PE, 0, 0},
    {"SELECT \x01\x02\x03", W, PE, 0, 0},
};

/* Why a difference is noise, and whether server-local input goes in. */
#define NONE SHADOW_NOISE_NONE
#define VOL SHADOW_NOISE_VOLATILE
#define PHY SHADOW_NOISE_PHYSICAL
#define LOC SHADOW_NOISE_SERVER_LOCAL

struct reason_row {
    const char *sql;
    enum shadow_noise_reason reason;
    bool local_input;
};

static const struct reason_row reason_rows[] = {
    /* data: a difference is a finding */
    {"SELECT a FROM t WHERE id = $1", NONE, false},
    {"SELECT a FROM t WHERE id = 16384", NONE, false},
    {"SELECT * FROM t WHERE ref_oid = '16384'", NONE, false}, /* a user column, whatever its name */
    {"SELECT count(*) FROM t WHERE x > 1 ORDER BY 1", NONE, false},
    {"SELECT pg_get_viewdef('v'::regclass)", NONE, false},    /* a name, resolved on each server */
    {"SELECT 'v'::regclass", NONE, false},
    {"SELECT tableoid::regclass, * FROM parent ORDER BY id", NONE, false},
    {"SELECT has_table_privilege('t', 'select')", NONE, false},
    {"SELECT pg_get_serial_sequence('t', 'id')", NONE, false},
    {"SELECT xmin FROM (SELECT min(x) AS xmin FROM pts) s", NONE, false},
    {"SELECT s.xmax FROM f() AS s(xmin, xmax)", NONE, false},
    {"WITH b(xmin) AS (SELECT 1) SELECT xmin FROM b", NONE, false},
    {"SELECT my_has_permission($1)", NONE, false},
    {"UPDATE t SET a = now()", NONE, false},                 /* no rows to differ */
    {"COPY t FROM STDIN", NONE, false},
    {"COPY t TO STDOUT", NONE, false},

    /* volatile */
    {"SELECT now()", VOL, false},
    {"SELECT random() FROM t", VOL, false},
    {"SELECT nextval('s')", VOL, false},
    {"SELECT 'now'::timestamptz", VOL, false},
    {"SELECT * FROM t TABLESAMPLE SYSTEM (10)", VOL, false},
    {"INSERT INTO t VALUES (now()) RETURNING *", VOL, false},

    /* physical */
    {"SELECT pg_relation_size('t')", PHY, false},
    {"SELECT pg_database_size('app')", PHY, false},
    {"SELECT pg_total_relation_size('t'), pg_indexes_size('t')", PHY, false},
    {"SELECT brin_summarize_new_values('t_brin')", PHY, false},
    {"SELECT brin_summarize_range('t_brin', 0)", PHY, false},
    {"SELECT gin_clean_pending_list('t_gin'::regclass)", PHY, false},
    {"SELECT pg_stat_get_numscans('t'::regclass)", PHY, false},
    {"SELECT * FROM pg_stat_user_tables", PHY, false},
    {"SELECT * FROM pg_catalog.pg_statio_user_indexes", PHY, false},
    {"EXPLAIN SELECT * FROM t", PHY, false},
    {"SELECT * FROM t LIMIT 10", PHY, false},
    {"SELECT pg_column_size(a) FROM t ORDER BY id", PHY, false},

    /* server_local: OIDs and reg* values the client brings */
    {"SELECT pg_get_viewdef($1)", LOC, true},
    {"SELECT pg_get_viewdef('16390'::oid, true)", LOC, true},
    {"SELECT pg_catalog.pg_get_partkeydef(16390)", LOC, true},
    {"SELECT pg_get_indexdef($1, 0, true)", LOC, true},
    {"SELECT format_type(16401, NULL)", LOC, true},
    {"SELECT obj_description($1::oid, 'pg_class')", LOC, true},
    {"SELECT has_table_privilege(16384, 'select')", LOC, true},
    {"SELECT '16384'::regclass", LOC, true},
    {"SELECT $1::pg_catalog.regclass::text", LOC, true},
    {"SELECT 'v'::regclass::oid", LOC, false},
    {"SELECT CAST($1 AS oid)", LOC, true},
    {"SELECT lo_get(16400)", LOC, true},
    /* psql's \d, after it fetched the table's OID from the primary */
    {"SELECT c.relchecks, c.relkind, c.relhasindex FROM pg_catalog.pg_class c "
     "LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid) WHERE c.oid = '16384'",
     LOC, false},
    {"SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod) FROM "
     "pg_catalog.pg_attribute a WHERE a.attrelid = '16384' AND a.attnum > 0 ORDER BY a.attnum",
     LOC, false},
    {"SELECT oid FROM pg_type WHERE typname = 'hstore'", LOC, false},
    {"SHOW work_mem", LOC, false},

    /* server_local: system columns, transaction ids, LSNs, pids */
    {"SELECT ctid, * FROM t", LOC, false},
    {"SELECT xmin, xmax FROM t WHERE id = 1", LOC, false},
    {"SELECT t.cmin FROM t", LOC, false},
    {"SELECT tableoid, * FROM parent", LOC, false},
    {"SELECT * FROM t WHERE xmin = $1", LOC, false},
    {"SELECT txid_status($1)", LOC, true},
    {"SELECT txid_status(1234)", LOC, true},
    {"SELECT pg_xact_status($1::xid8)", LOC, true},
    {"SELECT txid_current()", LOC, false},
    {"SELECT pg_current_xact_id()", LOC, false},
    {"SELECT pg_current_wal_lsn()", LOC, false},
    {"SELECT pg_last_wal_replay_lsn()", LOC, false},
    {"SELECT pg_wal_lsn_diff($1, '0/0')", LOC, true},
    {"SELECT pg_backend_pid()", LOC, false},
    {"SELECT now(), pg_backend_pid()", LOC, false}, /* the stronger reason wins */
    {"SELECT version()", LOC, false},
    {"SELECT lo_create(0)", LOC, false},

    /* server_local: files on the server's host */
    {"COPY t FROM '/var/lib/data/t.csv'", LOC, true},
    {"COPY t FROM 'relative.csv' WITH (FORMAT csv)", LOC, true},
    {"COPY t FROM PROGRAM 'cat /tmp/x'", LOC, true},
    {"COPY t TO '/tmp/t.csv'", LOC, true},
    {"SELECT pg_read_file('postmaster.pid')", LOC, true},
    {"SELECT lo_import('/tmp/picture.png')", LOC, true},
    {"SELECT * FROM pg_ls_dir('.')", LOC, true},
    /* input without rows: local_input, no row to differ */
    {"SELECT lo_unlink($1) INTO x", NONE, true},
};

static void
test_noise_reasons(void **state)
{
    (void)state;
    int bad = 0;
    for (size_t i = 0; i < sizeof(reason_rows) / sizeof(reason_rows[0]); i++) {
        const struct reason_row *r = &reason_rows[i];
        struct pgclass_result res;
        pgclass_classify(r->sql, NULL, &res);
        if (res.parse_error || res.noise_reason != r->reason || res.local_input != r->local_input ||
            res.unstable != (r->reason != SHADOW_NOISE_NONE)) {
            fprintf(stderr, "row %zu %s: got %s local_input %d unstable %d, want %s %d\n", i,
                    r->sql, shadow_noise_reason_name(res.noise_reason), res.local_input,
                    res.unstable, shadow_noise_reason_name(r->reason), r->local_input);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* Every statement of the main table: unstable exactly when a reason is given. */
static void
test_reason_iff_unstable(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        struct pgclass_result res;
        pgclass_classify(rows[i].sql, NULL, &res);
        if (res.unstable != (res.noise_reason != SHADOW_NOISE_NONE))
            fprintf(stderr, "row %zu %s: unstable %d reason %s\n", i, rows[i].sql, res.unstable,
                    shadow_noise_reason_name(res.noise_reason));
        assert_int_equal(res.unstable, res.noise_reason != SHADOW_NOISE_NONE);
    }
}

static unsigned
flags_of(const struct pgclass_result *r)
{
    return (r->parse_error ? PE : 0) | (r->too_long ? TL : 0) | (r->locking ? LK : 0) |
           (r->no_mirror ? NM : 0) | (r->has_order_by ? OB : 0) |
           (r->volatile_fn ? VF : 0) | (r->unstable ? UN : 0);
}

static void
test_table(void **state)
{
    (void)state;
    int bad = 0;
    size_t n = sizeof(rows) / sizeof(rows[0]);

    assert_true(n >= 60);
    for (size_t i = 0; i < n; i++) {
        struct pgclass_result r;
        pgclass_classify(rows[i].sql, NULL, &r);
        if (r.kind != rows[i].kind || flags_of(&r) != rows[i].flags ||
            r.hint != rows[i].hint || r.nstatements != rows[i].nstatements) {
            print_error("row %zu %s: got %s flags %#x hint %u n %u, want %s flags %#x hint %u n %d\n",
                        i, rows[i].sql, req_kind_name(r.kind), flags_of(&r), r.hint,
                        r.nstatements, req_kind_name(rows[i].kind), rows[i].flags,
                        rows[i].hint, rows[i].nstatements);
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

/* Mirror levels need schema changes told apart from data changes. */
static void
test_ddl_flag(void **state)
{
    (void)state;
    static const struct {
        const char *sql;
        bool ddl;
    } cases[] = {
        {"CREATE TABLE t (id int)", true},
        {"ALTER TABLE t ADD COLUMN x int", true},
        {"DROP INDEX i", true},
        {"CREATE INDEX i ON t (id)", true},
        {"COMMENT ON TABLE t IS 'x'", true},
        {"GRANT SELECT ON t TO u", true},
        {"INSERT INTO t VALUES (1)", false},
        {"UPDATE t SET id = 2", false},
        {"DELETE FROM t", false},
        {"TRUNCATE t", false},
        {"COPY t FROM STDIN", false},
        {"CALL p()", false},
        {"DO $$ BEGIN END $$", false},
        {"SELECT 1", false},
        {"SET search_path = x", false},
        {"INSERT INTO t VALUES (1); CREATE TABLE u (x int)", true},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct pgclass_result r;
        pgclass_classify(cases[i].sql, NULL, &r);
        if (r.ddl != cases[i].ddl)
            fail_msg("%s: ddl %d, want %d", cases[i].sql, r.ddl, cases[i].ddl);
    }
}

static void
test_user_write_functions(void **state)
{
    (void)state;
    static const char *const fns[] = {"audit_log", "billing.charge", NULL};
    struct pgclass_opts opts = {.write_fns = fns, .nwrite_fns = 3};
    struct pgclass_result r;

    pgclass_classify("SELECT audit_log('x')", NULL, &r);
    assert_int_equal(r.kind, REQ_KIND_READ);
    pgclass_classify("SELECT audit_log('x')", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
    pgclass_classify("SELECT app.audit_log('x')", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
    pgclass_classify("SELECT * FROM t WHERE billing.charge(t.id) > 0", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
    pgclass_classify("SELECT other.charge(1)", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_READ);
    pgclass_classify("SELECT charge(1)", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_READ);
    /* names as the parser reports them: unquoted folds to lower case */
    pgclass_classify("SELECT AUDIT_LOG('x')", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
    pgclass_classify("SELECT \"Audit_Log\"('x')", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_READ);
    /* the built-in list still applies */
    pgclass_classify("SELECT nextval('s')", &opts, &r);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
}

/* SELECT * FROM t WHERE id IN (1, 2, ...) of at least len bytes; malloc'd. */
static char *
long_select(size_t len)
{
    char *q = malloc(len + 64);
    size_t o;
    int i = 0;

    assert_non_null(q);
    o = (size_t)snprintf(q, len + 64, "SELECT * FROM t WHERE id IN (0");
    while (o < len)
        o += (size_t)snprintf(q + o, len + 64 - o, ", %d", ++i);
    snprintf(q + o, len + 64 - o, ") ORDER BY id");
    return q;
}

static void
test_long_text(void **state)
{
    (void)state;
    struct pgclass_result r;
    char *q = long_select(100 * 1024);

    pgclass_classify(q, NULL, &r);
    assert_int_equal(r.kind, REQ_KIND_READ);
    assert_false(r.parse_error);
    assert_true(r.has_order_by);
    assert_int_equal(r.nstatements, 1);

    /* over max_len: not parsed, a write, but hints still read */
    {
        struct pgclass_opts opts = {.max_len = 1000};
        memcpy(q, "/* tandem:noshadow */ ", 22);
        pgclass_classify(q, &opts, &r);
        assert_int_equal(r.kind, REQ_KIND_WRITE);
        assert_true(r.parse_error);
        assert_true(r.too_long);
        assert_int_equal(r.hint, PGCLASS_HINT_NOSHADOW);
    }
    free(q);

    q = long_select(PGCLASS_DEFAULT_MAX_LEN + 10);
    pgclass_classify(q, NULL, &r);
    assert_true(r.too_long);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
    free(q);
}

/* Nesting PostgreSQL accepts but the walk refuses: a write, not a crash. */
static void
test_deep_nesting(void **state)
{
    (void)state;
    struct pgclass_result r;
    size_t depth = 2000, o = 0;
    char *q = malloc(depth * 4 + 32);

    assert_non_null(q);
    o += (size_t)snprintf(q, 32, "SELECT ");
    for (size_t i = 0; i < depth; i++) {
        memcpy(q + o, "1+(", 3);
        o += 3;
    }
    q[o++] = '1';
    memset(q + o, ')', depth);
    o += depth;
    q[o] = '\0';
    pgclass_classify(q, NULL, &r);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
    assert_true(r.parse_error);
    free(q);

    pgclass_classify("SELECT 1+(1+(1+(1+(1+(1)))))", NULL, &r);
    assert_int_equal(r.kind, REQ_KIND_READ);
}

static void
test_describe(void **state)
{
    (void)state;
    struct pgclass_desc a, b;

    /* literals do not change the fingerprint */
    assert_int_equal(pgclass_describe("SELECT * FROM t WHERE id = 1", &a), 0);
    assert_int_equal(pgclass_describe("select *  from t where id = 42", &b), 0);
    assert_true(a.fingerprint == b.fingerprint);
    assert_string_equal(a.fingerprint_hex, b.fingerprint_hex);
    assert_int_equal(strlen(a.fingerprint_hex), 16);
    assert_false(a.fingerprint_fallback);
    assert_string_equal(a.normalized, "SELECT * FROM t WHERE id = $1");
    assert_false(a.normalized_truncated);

    assert_int_equal(pgclass_describe("SELECT * FROM s WHERE id = 1", &b), 0);
    assert_true(a.fingerprint != b.fingerprint);

    /* unparseable: a hash of the text, the text itself, made valid UTF-8 */
    assert_int_equal(pgclass_describe("garbage \xff text", &a), -1);
    assert_true(a.fingerprint_fallback);
    assert_string_equal(a.normalized, "garbage ? text");
    assert_int_equal(pgclass_describe("garbage \xff text", &b), -1);
    assert_true(a.fingerprint == b.fingerprint);
}

/* SELECT a AS "ééé..." FROM t, with pad spaces in front so every é
 * lands across the cut in one of the two runs. */
static void
test_describe_cuts_on_utf8_boundary(void **state)
{
    (void)state;
    char q[4096];

    for (int pad = 0; pad < 2; pad++) {
        struct pgclass_desc d;
        size_t o = (size_t)snprintf(q, sizeof(q), "%sSELECT a AS \"", pad ? " " : "");
        size_t l;
        unsigned char last;

        while (o < 3000) {
            memcpy(q + o, "\xc3\xa9", 2); /* é */
            o += 2;
        }
        snprintf(q + o, sizeof(q) - o, "\" FROM t");
        assert_int_equal(pgclass_describe(q, &d), 0);
        assert_true(d.normalized_truncated);
        l = strlen(d.normalized);
        assert_true(l <= PGCLASS_NORMALIZED_MAX - 1);
        assert_true(l >= PGCLASS_NORMALIZED_MAX - 2);
        /* no character split: the text ends with a whole é */
        last = (unsigned char)d.normalized[l - 1];
        assert_int_equal(last, 0xa9);
        assert_int_equal((unsigned char)d.normalized[l - 2], 0xc3);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_noise_reasons),
        cmocka_unit_test(test_reason_iff_unstable),
        cmocka_unit_test(test_user_write_functions),
        cmocka_unit_test(test_ddl_flag),
        cmocka_unit_test(test_long_text),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_describe_cuts_on_utf8_boundary),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
