/*
 * test_pgdesc.c - statement descriptions for the shadow report: cache hits
 * that cost no budget, literal-blind keys, distinct statements, both
 * eviction bounds, and the describe budget, fed on to metrics/shadow as the
 * PostgreSQL plug-in does (refused texts fold into "other").
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "protocol/pgdesc.h"

#define SEC 1000000000ull
#define MS 1000000ull
#define T0 (1000 * SEC)

static struct pgdesc_stats
stats(const struct pgdesc *c)
{
    struct pgdesc_stats st;
    pgdesc_get_stats(c, &st);
    return st;
}

/* Describe the NUL-terminated sql at time now; it must succeed. */
static struct pgdesc_key
key_at(struct pgdesc *c, const char *sql, uint64_t now)
{
    struct pgdesc_key k;
    assert_true(pgdesc_describe(c, sql, strlen(sql), now, &k));
    assert_non_null(k.text);
    return k;
}

static void
test_hits_and_literals(void **state)
{
    (void)state;
    /* a budget of one describe per second: hits must not spend it */
    struct pgdesc *c = pgdesc_new(16, 0, 1);
    struct pgdesc_key k, k2;

    assert_non_null(c);
    k = key_at(c, "select 1", T0);
    assert_string_equal(k.text, "select $1");
    assert_int_equal(stats(c).describes, 1);

    /* another literal: the same shape, a hit, the same key */
    k2 = key_at(c, "select 2", T0);
    assert_true(k2.fingerprint == k.fingerprint);
    assert_string_equal(k2.text, "select $1");
    /* not NUL-terminated: only len bytes count */
    assert_true(pgdesc_describe(c, "select 3; garbage", 8, T0, &k2));
    assert_true(k2.fingerprint == k.fingerprint);
    for (int i = 0; i < 1000; i++)
        assert_true(key_at(c, "select 1", T0).fingerprint == k.fingerprint);
    assert_int_equal(stats(c).describes, 1);
    assert_int_equal(stats(c).hits, 1002);
    assert_int_equal(stats(c).refused, 0);
    assert_int_equal(stats(c).entries, 1);

    /* a new shape (the spacing) with another literal is described again, and
     * pgclass_describe's fingerprint ignores both: the same statement */
    k2 = key_at(c, "SELECT   42", T0 + SEC);
    assert_true(k2.fingerprint == k.fingerprint);
    assert_string_equal(k2.text, "SELECT   $1");
    assert_int_equal(stats(c).describes, 2);
    pgdesc_free(c);
}

static void
test_distinct_statements(void **state)
{
    (void)state;
    static const char *const texts[] = {
        "select a from t", "select b from t", "select a from u",
        "update t set a = 1", "delete from t where a = 1", "select 1",
        "not sql at all (", "",
    };
    enum { N = sizeof(texts) / sizeof(texts[0]) };
    struct pgdesc *c = pgdesc_new(64, 0, 1000), *fresh = pgdesc_new(64, 0, 1000);
    uint64_t ids[N];

    assert_non_null(c);
    assert_non_null(fresh);
    for (int i = 0; i < N; i++) {
        ids[i] = key_at(c, texts[i], T0).fingerprint;
        for (int j = 0; j < i; j++)
            assert_true(ids[i] != ids[j]);
    }
    /* an id depends on the text only, not on the cache that described it */
    for (int i = N - 1; i >= 0; i--)
        assert_true(key_at(fresh, texts[i], T0).fingerprint == ids[i]);
    /* text that does not parse is shown as it is */
    assert_string_equal(key_at(c, "not sql at all (", T0).text, "not sql at all (");
    /* no text (a unit whose SQL was not kept) is the empty statement */
    struct pgdesc_key k;
    assert_true(pgdesc_describe(c, NULL, 0, T0, &k));
    assert_true(k.fingerprint == ids[N - 1]);
    assert_string_equal(k.text, "");
    pgdesc_free(fresh);
    pgdesc_free(c);
}

static void
test_entry_bound(void **state)
{
    (void)state;
    struct pgdesc *c = pgdesc_new(8, 0, 1000);
    char sql[64];

    assert_non_null(c);
    for (int i = 0; i < 100; i++) {
        snprintf(sql, sizeof(sql), "select x from t%d", i);
        key_at(c, sql, T0);
        assert_true(stats(c).entries <= 8);
    }
    assert_int_equal(stats(c).entries, 8);
    assert_int_equal(stats(c).evictions, 92);
    assert_int_equal(stats(c).describes, 100);

    /* least recently used goes first: touch t92, then add one more */
    key_at(c, "select x from t92", T0);
    assert_int_equal(stats(c).hits, 1);
    key_at(c, "select x from t100", T0);
    key_at(c, "select x from t92", T0); /* kept */
    assert_int_equal(stats(c).hits, 2);
    key_at(c, "select x from t93", T0); /* the victim: described again */
    assert_int_equal(stats(c).hits, 2);
    assert_int_equal(stats(c).describes, 102);
    pgdesc_free(c);
}

static void
test_byte_bound(void **state)
{
    (void)state;
    const size_t max_bytes = 2048;
    struct pgdesc *c = pgdesc_new(1000, max_bytes, 1000);
    char sql[400];
    int n;

    assert_non_null(c);
    for (int i = 0; i < 50; i++) {
        /* ~300 bytes of normalized text each */
        n = snprintf(sql, sizeof(sql), "select %d from t%d where ", i, i);
        while (n < 300)
            n += snprintf(sql + n, sizeof(sql) - (size_t)n, "c%d = 0 and ", n);
        snprintf(sql + n, sizeof(sql) - (size_t)n, "true");
        struct pgdesc_key k = key_at(c, sql, T0);
        assert_true(strlen(k.text) > 300);
        assert_true(stats(c).bytes <= max_bytes);
    }
    assert_true(stats(c).entries >= 2 && stats(c).entries < 2048 / 300);
    assert_int_equal(stats(c).evictions, 50 - stats(c).entries);
    pgdesc_free(c);

    /* one entry larger than the bound on its own: described, never cached */
    c = pgdesc_new(8, 256, 1000);
    assert_non_null(c);
    n = snprintf(sql, sizeof(sql), "select ");
    while (n < 300)
        n += snprintf(sql + n, sizeof(sql) - (size_t)n, "c%d, ", n);
    snprintf(sql + n, sizeof(sql) - (size_t)n, "1 from t");
    struct pgdesc_key k = key_at(c, sql, T0);
    uint64_t fp = k.fingerprint;
    assert_non_null(strstr(k.text, "$1 from t"));
    assert_true(key_at(c, sql, T0).fingerprint == fp);
    assert_int_equal(stats(c).entries, 0);
    assert_int_equal(stats(c).bytes, 0);
    assert_int_equal(stats(c).describes, 2);
    pgdesc_free(c);
}

static void
test_bad_bounds(void **state)
{
    (void)state;
    assert_null(pgdesc_new(0, 0, 1));
    assert_null(pgdesc_new(1, 0, 0));
    pgdesc_free(NULL);
}

/* Record one unit of sql the way pg/pg_shadow.c's record() does. */
static bool
record_pg(struct pgdesc *c, struct shadow_shard *sh, int slot, const char *sql, uint64_t now)
{
    struct pgdesc_key k;
    bool described = pgdesc_describe(c, sql, strlen(sql), now, &k);
    shadow_record(sh, slot, k.fingerprint, k.text, SHADOW_MATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    return described;
}

static long long
jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

static void
test_budget_folds_into_other(void **state)
{
    (void)state;
    int slot = metric_slot_listener("pgdesc-budget");
    struct shadow_shard *sh = shadow_shard_new();
    struct pgdesc *c = pgdesc_new(PGDESC_ENTRIES, PGDESC_BYTES, PGDESC_DESCRIBES_PER_SEC);
    struct shadow_listener_stats st;
    char sql[64];

    assert_non_null(sh);
    assert_non_null(c);
    /* texts differing in literals share one shape (never re-described), so
     * each new text here differs in a comment: same fingerprint, new shape */
    for (int i = 0; i < PGDESC_DESCRIBES_PER_SEC + 5; i++) {
        snprintf(sql, sizeof(sql), "select 1 /* %d */ from budget", i);
        assert_true(record_pg(c, sh, slot, sql, T0 + SEC / 2) == (i < PGDESC_DESCRIBES_PER_SEC));
    }
    assert_int_equal(stats(c).refused, 5);
    assert_int_equal(stats(c).describes, PGDESC_DESCRIBES_PER_SEC);
    assert_int_equal(shadow_listener_stats(slot, 0, &st), 0);
    assert_int_equal(st.statements_undescribed, 5);
    /* a cached text is still answered when the budget is spent */
    assert_true(record_pg(c, sh, slot, "select 2 /* 0 */ from budget", T0 + SEC / 2));

    /* the next second a refused text is described and cached */
    snprintf(sql, sizeof(sql), "select 1 /* %d */ from budget", PGDESC_DESCRIBES_PER_SEC + 1);
    assert_true(record_pg(c, sh, slot, sql, T0 + SEC));
    assert_true(record_pg(c, sh, slot, sql, T0 + SEC));
    assert_int_equal(stats(c).describes, PGDESC_DESCRIBES_PER_SEC + 1);
    assert_int_equal(shadow_listener_stats(slot, 0, &st), 0);
    assert_int_equal(st.statements_undescribed, 5);
    assert_int_equal(st.outcomes[SHADOW_MATCH], PGDESC_DESCRIBES_PER_SEC + 8);

    json_t *rep = shadow_report_json(0);
    json_t *sts = json_object_get(rep, "statements"), *v, *fp = NULL, *other = NULL;
    size_t i;
    assert_non_null(rep);
    json_array_foreach(sts, i, v) {
        if (strcmp(json_string_value(json_object_get(v, "listener")), "pgdesc-budget") != 0)
            continue;
        if (strcmp(json_string_value(json_object_get(v, "fingerprint")), "other") == 0)
            other = v;
        else
            fp = v;
    }
    assert_non_null(fp);
    assert_non_null(other);
    /* normalized text as first described (the comment is the first text's) */
    assert_string_equal(json_string_value(json_object_get(fp, "statement")),
                        "select $1 /* 0 */ from budget");
    assert_int_equal(jint(json_object_get(fp, "count"), "total"), PGDESC_DESCRIBES_PER_SEC + 3);
    assert_string_equal(json_string_value(json_object_get(other, "statement")),
                        "(other: statement table full or not described)");
    assert_int_equal(jint(json_object_get(other, "count"), "total"), 5);
    json_decref(rep);
    pgdesc_free(c);
}

/*
 * A text that is its own shape is found as it came; a text equal to the
 * shape of another, but not its own shape, is shaped and described anew.
 */
static void
test_verbatim(void **state)
{
    (void)state;
    struct pgdesc *c = pgdesc_new(16, 0, 100);

    assert_non_null(c);
    for (int i = 0; i < 3; i++)
        key_at(c, "select v from t where id = $1", T0);
    assert_int_equal(stats(c).describes, 1);
    assert_int_equal(stats(c).hits, 2);
    /* "select $a$x$a$5" shapes to "select ?5", whose own shape is "select ??" */
    key_at(c, "select $a$x$a$5", T0);
    key_at(c, "select ?5", T0);
    assert_int_equal(stats(c).describes, 3);
    assert_int_equal(stats(c).entries, 3);
    pgdesc_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hits_and_literals),
        cmocka_unit_test(test_verbatim),
        cmocka_unit_test(test_distinct_statements),
        cmocka_unit_test(test_entry_bound),
        cmocka_unit_test(test_byte_bound),
        cmocka_unit_test(test_bad_bounds),
        cmocka_unit_test(test_budget_folds_into_other),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
