/* test_pgcache.c - LRU classification cache: hits, eviction order, bounds, collisions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pgcache.h"

/* A result that remembers which text it was stored for. */
static struct pgclass_result
tagged(uint16_t tag)
{
    struct pgclass_result r;
    memset(&r, 0, sizeof(r));
    r.kind = REQ_KIND_READ;
    r.nstatements = tag;
    return r;
}

static bool
get(struct pgcache *c, const char *sql, uint16_t *tag)
{
    struct pgclass_result r;
    if (!pgcache_get(c, sql, strlen(sql), &r))
        return false;
    *tag = r.nstatements;
    return true;
}

static void
put(struct pgcache *c, const char *sql, uint16_t tag)
{
    struct pgclass_result r = tagged(tag);
    assert_int_equal(pgcache_put(c, sql, strlen(sql), &r), 0);
}

static void
test_hit_and_miss(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(8, 0);
    struct pgcache_stats st;
    uint16_t tag = 0;

    assert_non_null(c);
    assert_false(get(c, "SELECT 1", &tag));
    put(c, "SELECT 1", 7);
    assert_true(get(c, "SELECT 1", &tag));
    assert_int_equal(tag, 7);
    /* the key is the whole text: a prefix or a longer text is another key */
    assert_false(get(c, "SELECT", &tag));
    assert_false(get(c, "SELECT 10", &tag));
    assert_false(pgcache_get(c, "SELECT 1", 7, &(struct pgclass_result){0}));

    pgcache_get_stats(c, &st);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.misses, 4);
    assert_int_equal(st.entries, 1);
    assert_true(st.bytes > strlen("SELECT 1"));

    /* a put of an equal text replaces, does not add */
    put(c, "SELECT 1", 9);
    assert_true(get(c, "SELECT 1", &tag));
    assert_int_equal(tag, 9);
    pgcache_get_stats(c, &st);
    assert_int_equal(st.entries, 1);

    pgcache_clear(c);
    assert_false(get(c, "SELECT 1", &tag));
    pgcache_get_stats(c, &st);
    assert_int_equal(st.entries, 0);
    assert_int_equal(st.bytes, 0);
    assert_int_equal(st.hits, 2); /* counters survive clear */
    pgcache_free(c);
    pgcache_free(NULL);
}

static void
test_lru_order(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(3, 0);
    struct pgcache_stats st;
    uint16_t tag;

    put(c, "a", 1);
    put(c, "b", 2);
    put(c, "c", 3);
    assert_true(get(c, "a", &tag)); /* a is now the most recent: b is next out */
    put(c, "d", 4);
    assert_false(get(c, "b", &tag));
    assert_true(get(c, "c", &tag));  /* order now, most recent first: c d a */
    put(c, "e", 5);                  /* evicts a */
    assert_false(get(c, "a", &tag));
    assert_true(get(c, "c", &tag) && tag == 3);
    assert_true(get(c, "d", &tag) && tag == 4);
    assert_true(get(c, "e", &tag) && tag == 5);
    /* a replacing put refreshes too: c e d after this, d next out */
    put(c, "c", 33);
    put(c, "f", 6); /* evicts d */
    assert_false(get(c, "d", &tag));
    assert_true(get(c, "c", &tag) && tag == 33);

    pgcache_get_stats(c, &st);
    assert_int_equal(st.evictions, 3);
    assert_int_equal(st.entries, 3);
    pgcache_free(c);
}

static void
test_entry_bound(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(10, 0);
    struct pgcache_stats st;
    char sql[32];
    uint16_t tag;

    for (int i = 0; i < 100; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d", i);
        put(c, sql, (uint16_t)i);
        pgcache_get_stats(c, &st);
        assert_true(st.entries <= 10);
    }
    assert_int_equal(st.entries, 10);
    assert_int_equal(st.evictions, 90);
    for (int i = 0; i < 100; i++) {
        snprintf(sql, sizeof(sql), "SELECT %d", i);
        assert_int_equal(get(c, sql, &tag), i >= 90);
    }
    pgcache_free(c);
}

static void
test_byte_bound(void **state)
{
    (void)state;
    struct pgcache *probe = pgcache_new(1, 0);
    struct pgcache_stats st;
    struct pgcache *c;
    char sql[128];
    size_t cost;

    /* learn what one 100-byte text costs, then allow exactly ten */
    memset(sql, 'x', 100);
    sql[100] = '\0';
    put(probe, sql, 1);
    pgcache_get_stats(probe, &st);
    cost = st.bytes;
    pgcache_free(probe);

    c = pgcache_new(1000, 10 * cost);
    for (int i = 0; i < 50; i++) {
        snprintf(sql, sizeof(sql), "%03d", i);
        sql[3] = 'x'; /* keep all 100 bytes */
        put(c, sql, (uint16_t)i);
        pgcache_get_stats(c, &st);
        assert_true(st.bytes <= 10 * cost);
    }
    assert_int_equal(st.entries, 10);
    assert_int_equal(st.evictions, 40);

    /* a text costing more than an eighth of the byte bound is not stored */
    {
        char big[2048];
        struct pgclass_result r = tagged(1);
        memset(big, 'y', sizeof(big) - 1);
        big[sizeof(big) - 1] = '\0';
        assert_int_equal(pgcache_put(c, big, strlen(big), &r), -1);
        pgcache_get_stats(c, &st);
        assert_int_equal(st.skipped, 1);
        assert_int_equal(st.entries, 10);
    }
    pgcache_free(c);
}

static void
test_text_too_large(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(4, 0);
    struct pgcache_stats st;
    struct pgclass_result r = tagged(1);
    size_t n = PGCACHE_MAX_TEXT + 1;
    char *big = malloc(n + 1);

    assert_non_null(big);
    memset(big, 'z', n);
    big[n] = '\0';
    assert_int_equal(pgcache_put(c, big, n, &r), -1);
    assert_false(pgcache_get(c, big, n, &r));
    assert_int_equal(pgcache_put(c, big, n - 1, &r), 0);
    assert_true(pgcache_get(c, big, n - 1, &r));
    pgcache_get_stats(c, &st);
    assert_int_equal(st.skipped, 1);
    assert_int_equal(st.entries, 1);
    free(big);
    pgcache_free(c);
}

static uint64_t
same_hash(const void *data, size_t len)
{
    (void)data;
    (void)len;
    return 42;
}

static void
test_same_hash_different_text(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(3, 0);
    uint16_t tag;

    assert_int_equal(pgcache_set_hash(c, same_hash), 0);
    put(c, "SELECT 1", 1);
    put(c, "SELECT 2", 2);
    put(c, "SELECT 3", 3);
    assert_true(get(c, "SELECT 1", &tag) && tag == 1);
    assert_true(get(c, "SELECT 2", &tag) && tag == 2);
    assert_true(get(c, "SELECT 3", &tag) && tag == 3);
    assert_false(get(c, "SELECT 4", &tag));
    /* same length, same hash, different bytes */
    assert_false(get(c, "SELECT x", &tag));

    /* eviction from the middle of one chain keeps the rest reachable:
     * LRU is 1 2 3 (1 least recent) */
    put(c, "SELECT 4", 4);
    assert_false(get(c, "SELECT 1", &tag));
    assert_true(get(c, "SELECT 3", &tag) && tag == 3);
    assert_true(get(c, "SELECT 2", &tag) && tag == 2);
    assert_true(get(c, "SELECT 4", &tag) && tag == 4);

    /* the hash can only change while empty */
    assert_int_equal(pgcache_set_hash(c, same_hash), -1);
    pgcache_clear(c);
    assert_int_equal(pgcache_set_hash(c, same_hash), 0);
    pgcache_free(c);
}

static void
test_classify_through_cache(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(16, 1 << 20);
    struct pgcache_stats st;
    struct pgclass_result a, b;

    pgcache_classify(c, "SELECT * FROM t FOR UPDATE", NULL, &a);
    pgcache_classify(c, "SELECT * FROM t FOR UPDATE", NULL, &b);
    assert_int_equal(a.kind, REQ_KIND_WRITE);
    assert_true(a.locking);
    assert_memory_equal(&a, &b, sizeof(a));
    pgcache_classify(c, "garbage", NULL, &a);
    assert_true(a.parse_error);
    pgcache_get_stats(c, &st);
    assert_int_equal(st.misses, 2);
    assert_int_equal(st.hits, 1);
    assert_int_equal(st.entries, 2);
    pgcache_free(c);
}

static void
test_bad_sizes(void **state)
{
    (void)state;
    assert_null(pgcache_new(0, 0));
    assert_null(pgcache_new(SIZE_MAX, 0));
}

static void
assert_shape(const char *sql, const char *want)
{
    char out[256];
    size_t n = pgcache_shape(sql, strlen(sql), out, sizeof(out));
    if (n == (size_t)-1 || strcmp(out, want) != 0)
        fail_msg("shape of [%s]: got [%s], want [%s]", sql, n == (size_t)-1 ? "(none)" : out,
                 want);
}

/* Literals go, everything that could change a classification stays. */
static void
test_shape(void **state)
{
    (void)state;
    assert_shape("SELECT abalance FROM pgbench_accounts WHERE aid = 123;",
                 "SELECT abalance FROM pgbench_accounts WHERE aid = ?;");
    assert_shape("select 1.5e-3, .5, 42, 'it''s', E'a\\'b', x'ff', B'01'",
                 "select ?, ?, ?, ?, ?, ?, ?");
    /* identifiers with digits, quoted identifiers, parameters stay */
    assert_shape("select t1.c2, \"Col 3\" from t1 where a = $1", "select t1.c2, \"Col 3\" from t1 where a = $1");
    /* dollar-quoted strings go; a hint in a comment stays */
    assert_shape("do $x$ begin perform 1; end $x$", "do ?");
    assert_shape("/* tandem:primary */ select 7 -- note 8\n", "/* tandem:primary */ select ? -- note 8\n");
    assert_shape("select '/* tandem:primary */'", "select ?");
    /* a literal can decide whether EXPLAIN runs the statement: kept whole */
    assert_shape("explain (analyze 0) delete from t where id = 5",
                 "explain (analyze 0) delete from t where id = 5");
    /* unterminated literal: no read past the end */
    assert_shape("select 'abc", "select ?");
    char small[8];
    assert_int_equal(pgcache_shape("select 12345678", 15, small, sizeof(small)), (size_t)-1);
}

/* Simple-protocol texts that differ only in values are classified once. */
static void
test_classify_once_per_shape(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(16, 0);
    struct pgclass_result r;
    struct pgcache_stats st;
    pgcache_classify(c, "SELECT v FROM t WHERE id = 1", NULL, &r);
    pgcache_classify(c, "SELECT v FROM t WHERE id = 2", NULL, &r);
    pgcache_classify(c, "SELECT v FROM t WHERE id = 'x'", NULL, &r);
    pgcache_get_stats(c, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(r.kind, REQ_KIND_READ);
    pgcache_classify(c, "UPDATE t SET v = 3 WHERE id = 1", NULL, &r);
    assert_int_equal(r.kind, REQ_KIND_WRITE);
    pgcache_free(c);
}

/*
 * A text that is its own shape is found as it came (unshaped); an entry
 * keyed by the shape of another text answers a text equal to that key only
 * when the text's own shape is that key too.
 */
static void
test_classify_verbatim(void **state)
{
    (void)state;
    struct pgcache *c = pgcache_new(16, 0);
    struct pgclass_result r;
    struct pgcache_stats st;
    for (int i = 0; i < 3; i++)
        pgcache_classify(c, "SELECT v FROM t WHERE id = $1", NULL, &r);
    pgcache_get_stats(c, &st);
    assert_int_equal(st.misses, 1);
    assert_int_equal(st.hits, 2);
    assert_int_equal(st.entries, 1);
    assert_int_equal(r.kind, REQ_KIND_READ);
    /* "select $a$x$a$5" shapes to "select ?5", which itself shapes to "select ??" */
    assert_shape("select $a$x$a$5", "select ?5");
    assert_shape("select ?5", "select ??");
    pgcache_classify(c, "select $a$x$a$5", NULL, &r);
    pgcache_classify(c, "select ?5", NULL, &r);
    pgcache_get_stats(c, &st);
    assert_int_equal(st.misses, 3);
    assert_int_equal(st.entries, 3);
    pgcache_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shape),
        cmocka_unit_test(test_classify_once_per_shape),
        cmocka_unit_test(test_classify_verbatim),
        cmocka_unit_test(test_hit_and_miss),
        cmocka_unit_test(test_lru_order),
        cmocka_unit_test(test_entry_bound),
        cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_text_too_large),
        cmocka_unit_test(test_same_hash_different_text),
        cmocka_unit_test(test_classify_through_cache),
        cmocka_unit_test(test_bad_sizes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
