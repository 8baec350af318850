/*
 * test_shadow.c - shadow comparison metrics: sums over shards under
 * concurrency, grouping by the caller's key, "other" for keys refused by a
 * full table or not named by the caller, windows (on an injected clock),
 * ratios, the sample ring, and both expositions parsed back.  How
 * PostgreSQL text becomes a key is protocol/pgdesc's (test_pgdesc.c).
 *
 * Every test uses its own listener names (slots are process-wide) and its
 * own shards, so the tests do not see each other's counts.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <ctype.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"

#define SEC 1000000000ull
#define MS 1000000ull

static uint64_t fake_now = 1000 * SEC;

static uint64_t
fake_clock(void)
{
    return __atomic_load_n(&fake_now, __ATOMIC_RELAXED);
}

static void
advance(uint64_t ns)
{
    __atomic_add_fetch(&fake_now, ns, __ATOMIC_RELAXED);
}

static struct shadow_listener_stats
stats(int slot)
{
    struct shadow_listener_stats st;
    assert_int_equal(shadow_listener_stats(slot, 0, &st), 0);
    return st;
}

static char *
render(size_t *len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    assert_non_null(f);
    shadow_render_prometheus(f);
    fclose(f);
    return buf;
}

/* The report as a browser would get it: serialized, then parsed back. */
static json_t *
report(size_t top_n)
{
    json_t *r = shadow_report_json(top_n);
    char *text;
    json_t *back;
    json_error_t err;

    assert_non_null(r);
    text = json_dumps(r, JSON_COMPACT);
    assert_non_null(text);
    json_decref(r);
    back = json_loads(text, 0, &err);
    free(text);
    assert_non_null(back);
    return back;
}

static json_t *
find_listener(json_t *rep, const char *name)
{
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(rep, "listeners"), i, v) {
        if (strcmp(json_string_value(json_object_get(v, "name")), name) == 0)
            return v;
    }
    return NULL;
}

static size_t
count_in(json_t *arr, const char *listener)
{
    size_t i, n = 0;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (strcmp(json_string_value(json_object_get(v, "listener")), listener) == 0)
            n++;
    }
    return n;
}

static json_t *
nth_in(json_t *arr, const char *listener, size_t nth)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v) {
        if (strcmp(json_string_value(json_object_get(v, "listener")), listener) == 0 && nth-- == 0)
            return v;
    }
    return NULL;
}

static long long
jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    assert_true(json_is_integer(v));
    return json_integer_value(v);
}

/* ---- concurrency ------------------------------------------------------- */

#define ROUNDS 20000

struct writer {
    struct shadow_shard *shard;
    int slot;
};

static int writers_done;

static void *
writer_main(void *arg)
{
    struct writer *w = arg;
    /* the first and the last are one statement (as "select 1" and "select 4" are) */
    static const struct {
        uint64_t id;
        const char *text;
    } keys[] = {{101, "select $1"}, {102, "select $1 from t"}, {103, "update t set a = $1"},
                {101, "select $1"}};
    char sum[64];

    for (int i = 0; i < ROUNDS; i++) {
        enum shadow_outcome o = i % 10 == 0 ? SHADOW_MISMATCH : SHADOW_MATCH;
        snprintf(sum, sizeof(sum), "row %d", i);
        if (i % 2 == 0)
            shadow_record(w->shard, w->slot, keys[i / 2 % 4].id, keys[i / 2 % 4].text, o,
                          SHADOW_NOISE_NONE, (uint64_t)(i % 100 + 1) * 10000, (uint64_t)(i % 50 + 1) * 20000, sum,
                          "other");
        else
            shadow_record(w->shard, w->slot, 42, "GET", o, SHADOW_NOISE_NONE, 1 * MS, 2 * MS, sum, "x");
        if (i % 1000 == 0) {
            shadow_set_lag(w->shard, w->slot, (double)i / 1000);
            shadow_count_dropped(w->shard, w->slot, SHADOW_DROP_QUEUE_FULL, 1);
        }
    }
    __atomic_add_fetch(&writers_done, 1, __ATOMIC_RELEASE);
    return NULL;
}

static void *
reader_main(void *arg)
{
    (void)arg;
    while (__atomic_load_n(&writers_done, __ATOMIC_ACQUIRE) < 2) {
        size_t len;
        struct shadow_listener_stats st;
        char *text = render(&len);
        json_t *r = shadow_report_json(10);
        free(text);
        assert_non_null(r);
        json_decref(r);
        shadow_listener_stats(metric_slot_listener("conc"), 60, &st);
    }
    return NULL;
}

static void
test_concurrent_shards(void **state)
{
    (void)state;
    int slot = metric_slot_listener("conc");
    struct writer w[2];
    pthread_t t[3];
    struct shadow_listener_stats st;

    assert_true(slot >= 0);
    /* before any shard or record: empty but well-formed */
    json_t *empty = report(0);
    assert_int_equal(json_array_size(json_object_get(empty, "statements")), 0);
    assert_int_equal(json_array_size(json_object_get(empty, "samples")), 0);
    json_decref(empty);
    size_t len;
    free(render(&len));

    for (int i = 0; i < 2; i++) {
        w[i].shard = shadow_shard_new();
        w[i].slot = slot;
        assert_non_null(w[i].shard);
    }
    assert_int_equal(pthread_create(&t[2], NULL, reader_main, NULL), 0);
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, writer_main, &w[i]), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);

    st = stats(slot);
    assert_int_equal(st.outcomes[SHADOW_MATCH], 2 * ROUNDS * 9 / 10);
    assert_int_equal(st.outcomes[SHADOW_MISMATCH], 2 * ROUNDS / 10);
    assert_int_equal(st.window_outcomes[SHADOW_MATCH], 2 * ROUNDS * 9 / 10);
    assert_int_equal(st.latency_count[SHADOW_SIDE_PRIMARY], 2 * ROUNDS);
    assert_int_equal(st.dropped[SHADOW_DROP_QUEUE_FULL], 2 * ROUNDS / 1000);
    assert_true(st.lag_seconds == (double)(ROUNDS - 1000) / 1000); /* max, not sum */
    assert_true(fabs(st.validation_success_ratio - 0.9) < 1e-12);
    assert_int_equal(st.statements_evicted, 0);
    assert_int_equal(st.statements_undescribed, 0);

    /* per statement: keys repeated share an entry; both shards' entries merge */
    json_t *rep = report(0);
    json_t *sts = json_object_get(rep, "statements");
    assert_int_equal(count_in(sts, "conc"), 4); /* select $1, select $1 from t, update, GET */
    long long total = 0;
    for (size_t i = 0; i < 4; i++) {
        json_t *s = nth_in(sts, "conc", i);
        long long n = jint(json_object_get(s, "count"), "total");
        const char *text = json_string_value(json_object_get(s, "statement"));
        total += n;
        if (strcmp(text, "GET") == 0)
            assert_int_equal(n, ROUNDS);
        else if (strcmp(text, "select $1") == 0)
            assert_int_equal(n, ROUNDS / 2);
        else
            assert_int_equal(n, ROUNDS / 4);
    }
    assert_int_equal(total, 2 * ROUNDS);
    json_decref(rep);
}

/* ---- keys, bounds ------------------------------------------------------- */

static void
test_undescribed_is_other(void **state)
{
    (void)state;
    int slot = metric_slot_listener("undescribed");
    struct shadow_shard *sh = shadow_shard_new();
    struct shadow_listener_stats st;

    assert_non_null(sh);
    shadow_record(sh, slot, 5, "select $1", SHADOW_MATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    /* no key text: the caller could not describe it; key_id is ignored */
    shadow_record(sh, slot, 5, NULL, SHADOW_MATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    shadow_record(sh, slot, 6, NULL, SHADOW_MISMATCH, SHADOW_NOISE_NONE, MS, MS, "a", "b");
    st = stats(slot);
    assert_int_equal(st.statements_undescribed, 2);
    assert_int_equal(st.statements_evicted, 0);
    assert_int_equal(st.outcomes[SHADOW_MATCH], 2);

    json_t *rep = report(0);
    json_t *sts = json_object_get(rep, "statements");
    assert_int_equal(count_in(sts, "undescribed"), 2);
    json_t *s = nth_in(sts, "undescribed", 0); /* the mismatch sorts first */
    assert_string_equal(json_string_value(json_object_get(s, "fingerprint")), "other");
    assert_string_equal(json_string_value(json_object_get(s, "statement")),
                        "(other: statement table full or not described)");
    assert_int_equal(jint(json_object_get(s, "count"), "total"), 2);
    s = nth_in(sts, "undescribed", 1);
    assert_string_equal(json_string_value(json_object_get(s, "fingerprint")), "0000000000000005");
    assert_int_equal(jint(json_object_get(s, "count"), "total"), 1);
    json_t *x = nth_in(json_object_get(rep, "samples"), "undescribed", 0);
    assert_string_equal(json_string_value(json_object_get(x, "fingerprint")), "other");
    assert_int_equal(jint(find_listener(rep, "undescribed"), "statements_undescribed"), 2);
    json_decref(rep);
}

static void
test_table_bound_and_other(void **state)
{
    (void)state;
    int slot = metric_slot_listener("bound");
    struct shadow_shard *sh = shadow_shard_new();
    char name[32];
    enum { KEEP = 100, MORE = 3 * SHADOW_MAX_STATEMENTS };

    assert_non_null(sh);
    /* the table fills: the first KEEP keys each mismatch once, the rest only match */
    for (int i = 0; i < SHADOW_MAX_STATEMENTS; i++) {
        snprintf(name, sizeof(name), "CMD%d", i);
        shadow_record(sh, slot, 1000 + (uint64_t)i, name, i < KEEP ? SHADOW_MISMATCH : SHADOW_MATCH,
                      SHADOW_NOISE_NONE, MS, MS, "a", "b");
    }
    struct shadow_listener_stats st = stats(slot);
    assert_int_equal(st.statement_entries_evicted, 0);
    assert_int_equal(st.statements_evicted, 0);

    /* many more keys: each takes the place of a clean one; no mismatching one goes */
    for (int i = 0; i < MORE; i++) {
        snprintf(name, sizeof(name), "NEW%d", i);
        shadow_record(sh, slot, 1000000 + (uint64_t)i, name, SHADOW_MATCH, SHADOW_NOISE_NONE, MS,
                      MS, NULL, NULL);
    }
    st = stats(slot);
    assert_int_equal(st.statement_entries_evicted, MORE);
    assert_int_equal(st.statements_evicted, 0);
    assert_int_equal(st.outcomes[SHADOW_MATCH], SHADOW_MAX_STATEMENTS - KEEP + MORE);

    json_t *rep = report(0);
    json_t *sts = json_object_get(rep, "statements");
    assert_int_equal(count_in(sts, "bound"), SHADOW_MAX_STATEMENTS);
    /* sorted by mismatches first: every one of the KEEP is there, with its text */
    for (int i = 0; i < KEEP; i++) {
        json_t *s = nth_in(sts, "bound", (size_t)i);
        assert_int_equal(jint(json_object_get(s, "count"), "mismatch"), 1);
        assert_memory_equal(json_string_value(json_object_get(s, "statement")), "CMD", 3);
    }
    assert_int_equal(jint(find_listener(rep, "bound"), "statement_entries_evicted"), MORE);
    /* the samples of the mismatches still name their statements */
    json_t *x = nth_in(json_object_get(rep, "samples"), "bound", 0);
    assert_memory_equal(json_string_value(json_object_get(x, "statement")), "CMD", 3);
    json_decref(rep);

    /* a table of nothing but entries worth keeping: a new key goes to "other" */
    int slot2 = metric_slot_listener("bound2");
    struct shadow_shard *sh2 = shadow_shard_new();
    assert_non_null(sh2);
    for (int i = 0; i < SHADOW_MAX_STATEMENTS + 10; i++) {
        snprintf(name, sizeof(name), "BAD%d", i);
        shadow_record(sh2, slot2, 5000000 + (uint64_t)i, name, SHADOW_SHADOW_ERROR,
                      SHADOW_NOISE_NONE, MS, MS, "a", "b");
    }
    st = stats(slot2);
    assert_int_equal(st.statements_evicted, 10);
    assert_int_equal(st.statement_entries_evicted, 0);
    rep = report(0);
    json_t *s0 = nth_in(json_object_get(rep, "statements"), "bound2", 0); /* most errors */
    assert_string_equal(json_string_value(json_object_get(s0, "fingerprint")), "other");
    assert_int_equal(jint(json_object_get(s0, "count"), "total"), 10);
    assert_int_equal(count_in(json_object_get(rep, "statements"), "bound2"),
                     SHADOW_MAX_STATEMENTS + 1);
    json_decref(rep);

    /* top_n cuts the list */
    rep = report(3);
    assert_true(json_array_size(json_object_get(rep, "statements")) <= 3);
    json_decref(rep);
}

/* ---- windows and ratios ------------------------------------------------- */

static void
test_window_expiry(void **state)
{
    (void)state;
    int slot = metric_slot_listener("win");
    struct shadow_shard *sh = shadow_shard_new();
    struct shadow_listener_stats st;

    assert_non_null(sh);
    /* start at a slot boundary so "60 s" is exactly 12 slots */
    __atomic_store_n(&fake_now, (fake_clock() / (5 * SEC) + 1) * 5 * SEC, __ATOMIC_RELAXED);
    for (int i = 0; i < 3; i++)
        shadow_record(sh, slot, 1, "GET", SHADOW_MATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    shadow_record(sh, slot, 1, "GET", SHADOW_MISMATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    shadow_record(sh, slot, 1, "GET", SHADOW_SHADOW_ERROR, SHADOW_NOISE_NONE, MS, 0, NULL, NULL);
    shadow_record(sh, slot, 1, "GET", SHADOW_NOISE, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    st = stats(slot);
    assert_true(st.validation_success_ratio == 0.75); /* noise and errors do not count */
    assert_int_equal(st.window_outcomes[SHADOW_SHADOW_ERROR], 1);
    assert_int_equal(st.latency_count[SHADOW_SIDE_SHADOW], 5); /* 0 ns: not recorded */

    /* 61 s later: gone from a 60 s window, still in the 5 min one */
    advance(61 * SEC);
    shadow_record(sh, slot, 1, "GET", SHADOW_MATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    assert_int_equal(shadow_listener_stats(slot, 60, &st), 0);
    assert_int_equal(st.window_outcomes[SHADOW_MATCH], 1);
    assert_true(st.validation_success_ratio == 1.0);
    st = stats(slot);
    assert_int_equal(st.window_outcomes[SHADOW_MATCH], 4);

    /* 5 min after the first records: they expire, the later one stays */
    advance(SHADOW_WINDOW_SECONDS * SEC - 61 * SEC);
    st = stats(slot);
    assert_int_equal(st.window_outcomes[SHADOW_MATCH], 1);
    assert_int_equal(st.window_outcomes[SHADOW_MISMATCH], 0);
    assert_true(st.validation_success_ratio == 1.0);

    /* reusing the first slot resets it, not adds to it */
    shadow_record(sh, slot, 1, "GET", SHADOW_MISMATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    st = stats(slot);
    assert_int_equal(st.window_outcomes[SHADOW_MISMATCH], 1);
    assert_int_equal(st.window_outcomes[SHADOW_MATCH], 1);

    /* nothing in the window: NaN, and totals are kept */
    advance(2 * SHADOW_WINDOW_SECONDS * SEC);
    st = stats(slot);
    assert_true(isnan(st.validation_success_ratio));
    assert_true(isnan(st.performance_ratio));
    assert_int_equal(st.outcomes[SHADOW_MATCH], 4);
    assert_int_equal(st.outcomes[SHADOW_MISMATCH], 2);

    size_t len;
    char *text = render(&len);
    assert_non_null(strstr(text, "tandem_shadow_validation_success_ratio{listener=\"win\"} NaN\n"));
    free(text);
    json_t *rep = report(0);
    assert_true(
        json_is_null(json_object_get(find_listener(rep, "win"), "validation_success_ratio")));
    json_decref(rep);
}

static void
test_latency_ratios(void **state)
{
    (void)state;
    int slot = metric_slot_listener("lat");
    struct shadow_shard *a = shadow_shard_new(), *b = shadow_shard_new();
    struct shadow_listener_stats st;

    assert_non_null(a);
    assert_non_null(b);
    /* 1 ms falls in (0.8, 1] ms, 2 ms in (1.6, 2] ms: interpolated p50s are
     * 0.9 ms and 1.8 ms, whatever the shard */
    for (int i = 0; i < 50; i++) {
        shadow_record(a, slot, 7, "q", SHADOW_MATCH, SHADOW_NOISE_NONE, 1 * MS, 2 * MS, NULL, NULL);
        shadow_record(b, slot, 7, "q", SHADOW_MATCH, SHADOW_NOISE_NONE, 1 * MS, 2 * MS, NULL, NULL);
    }
    /* as slow, but too few samples for "slowest" */
    shadow_record(a, slot, 8, "rare", SHADOW_MATCH, SHADOW_NOISE_NONE, 1 * MS, 2 * MS, NULL, NULL);
    st = stats(slot);
    assert_true(fabs(st.primary_p50_seconds - 0.0009) < 1e-12);
    assert_true(fabs(st.shadow_p50_seconds - 0.0018) < 1e-12);
    assert_true(fabs(st.performance_ratio - 2.0) < 1e-9);
    assert_int_equal(st.latency_count[SHADOW_SIDE_PRIMARY], 101);
    assert_true(fabs(st.latency_sum_seconds[SHADOW_SIDE_PRIMARY] - 0.101) < 1e-9);

    json_t *rep = report(0);
    json_t *s = nth_in(json_object_get(rep, "statements"), "lat", 0);
    assert_string_equal(json_string_value(json_object_get(s, "statement")), "q");
    assert_true(fabs(json_real_value(json_object_get(s, "primary_p50_ms")) - 0.9) < 1e-9);
    assert_true(fabs(json_real_value(json_object_get(s, "shadow_p99_ms")) - 1.996) < 1e-9);
    assert_true(fabs(json_real_value(json_object_get(s, "latency_ratio")) - 2.0) < 1e-9);
    json_t *slow = json_object_get(rep, "slowest");
    assert_int_equal(count_in(slow, "lat"), 1);
    assert_string_equal(json_string_value(json_object_get(nth_in(slow, "lat", 0), "statement")),
                        "q");
    json_t *l = find_listener(rep, "lat");
    assert_true(fabs(json_real_value(json_object_get(l, "performance_ratio")) - 2.0) < 1e-9);
    assert_true(fabs(json_real_value(json_object_get(l, "shadow_p50_ms")) - 1.8) < 1e-9);
    json_decref(rep);

    /* beyond the last bound: the +Inf bucket answers 10 s */
    int slot2 = metric_slot_listener("lat-inf");
    shadow_record(a, slot2, 1, "slow", SHADOW_MATCH, SHADOW_NOISE_NONE, 1 * MS, 60 * SEC, NULL, NULL);
    st = stats(slot2);
    assert_true(st.shadow_p50_seconds == 10.0);
}

/* ---- samples -------------------------------------------------------------- */

static void
test_sample_ring(void **state)
{
    (void)state;
    int slot = metric_slot_listener("ring");
    struct shadow_shard *a = shadow_shard_new(), *b = shadow_shard_new();
    char p[32], s[32];

    assert_non_null(a);
    assert_non_null(b);
    for (int i = 0; i < SHADOW_SAMPLES + 6; i++) {
        snprintf(p, sizeof(p), "p%d", i);
        snprintf(s, sizeof(s), "s%d", i);
        /* alternate shards: the report merges them in record order */
        shadow_record(i % 2 ? b : a, slot, 2, "SET", SHADOW_MISMATCH, SHADOW_NOISE_NONE, MS, MS, p, s);
    }
    for (int i = 0; i < SHADOW_OTHER_SAMPLES + 4; i++)
        shadow_record(a, slot, 3, "RANDOMKEY", SHADOW_NOISE, SHADOW_NOISE_NONE, MS, MS, "n", "n");
    /* never a sample: match, timeout, dropped */
    shadow_record(a, slot, 1, "MATCHED", SHADOW_MATCH, SHADOW_NOISE_NONE, MS, MS, "never", "kept");
    shadow_record(b, slot, 1, "MATCHED", SHADOW_SHADOW_TIMEOUT, SHADOW_NOISE_NONE, MS, 0, "never", "kept");
    shadow_record(b, slot, 1, "MATCHED", SHADOW_DROPPED, SHADOW_NOISE_NONE, MS, 0, "never", "kept");

    json_t *rep = report(0);
    json_t *samples = json_object_get(rep, "samples");
    assert_true(json_array_size(samples) <= SHADOW_SAMPLES + SHADOW_OTHER_SAMPLES);
    assert_int_equal(count_in(samples, "ring"), SHADOW_SAMPLES + SHADOW_OTHER_SAMPLES);
    /* newest first: the noise, then the mismatches from the last one down */
    for (int i = 0; i < SHADOW_OTHER_SAMPLES; i++) {
        json_t *x = nth_in(samples, "ring", (size_t)i);
        assert_string_equal(json_string_value(json_object_get(x, "outcome")), "noise");
        assert_string_equal(json_string_value(json_object_get(x, "statement")), "RANDOMKEY");
    }
    for (int i = 0; i < SHADOW_SAMPLES; i++) {
        json_t *x = nth_in(samples, "ring", (size_t)(SHADOW_OTHER_SAMPLES + i));
        snprintf(p, sizeof(p), "p%d", SHADOW_SAMPLES + 5 - i);
        assert_string_equal(json_string_value(json_object_get(x, "outcome")), "mismatch");
        assert_string_equal(json_string_value(json_object_get(x, "primary")), p);
        assert_string_equal(json_string_value(json_object_get(x, "statement")), "SET");
        assert_string_equal(json_string_value(json_object_get(x, "fingerprint")),
                            "0000000000000002");
        assert_true(json_is_string(json_object_get(x, "time")));
    }
    json_decref(rep);
}

static void
test_summary_cut_and_utf8(void **state)
{
    (void)state;
    int slot = metric_slot_listener("utf8");
    struct shadow_shard *sh = shadow_shard_new();
    char big[3000];

    assert_non_null(sh);
    /* "é" (2 bytes) repeated: the cut at 1023 bytes must not split one */
    for (size_t i = 0; i < 2800; i += 2) {
        big[i] = (char)0xc3;
        big[i + 1] = (char)0xa9;
    }
    big[2800] = 0;
    shadow_record(sh, slot, 9, "bad \xff key", SHADOW_MISMATCH, SHADOW_NOISE_NONE, MS, MS, big, "\xc3(\xff ok");

    json_t *rep = report(0);
    json_t *x = nth_in(json_object_get(rep, "samples"), "utf8", 0);
    assert_non_null(x);
    const char *prim = json_string_value(json_object_get(x, "primary"));
    assert_int_equal(strlen(prim), SHADOW_SUMMARY_MAX - 2); /* 2k <= 1023 */
    assert_int_equal(strncmp(prim, big, strlen(prim)), 0);
    assert_string_equal(json_string_value(json_object_get(x, "shadow")), "?(? ok");
    assert_string_equal(json_string_value(json_object_get(x, "statement")), "bad ? key");
    json_decref(rep);

    /* a key's text is cut likewise, at SHADOW_KEY_TEXT_MAX - 1 bytes */
    shadow_record(sh, slot, 10, big, SHADOW_MISMATCH, SHADOW_NOISE_NONE, MS, MS, "a", "b");
    rep = report(0);
    x = nth_in(json_object_get(rep, "samples"), "utf8", 0);
    const char *text = json_string_value(json_object_get(x, "statement"));
    assert_int_equal(strlen(text), SHADOW_KEY_TEXT_MAX - 2);
    assert_int_equal(strncmp(text, big, strlen(text)), 0);
    json_decref(rep);
}

/* ---- gauges ----------------------------------------------------------------- */

static void
test_gauges(void **state)
{
    (void)state;
    int slot = metric_slot_listener("gauges");
    struct shadow_shard *a = shadow_shard_new(), *b = shadow_shard_new();
    struct shadow_listener_stats st;

    assert_non_null(a);
    assert_non_null(b);
    shadow_set_lag(a, slot, 1.5);
    shadow_set_lag(b, slot, 0.25);
    shadow_set_detached(a, slot, 2);
    shadow_set_detached(b, slot, 3);
    shadow_count_dropped(a, slot, SHADOW_DROP_DETACHED, 4);
    shadow_count_dropped(b, slot, SHADOW_DROP_DETACHED, 1);
    st = stats(slot);
    assert_true(st.lag_seconds == 1.5);
    assert_int_equal(st.detached_sessions, 5);
    assert_int_equal(st.dropped[SHADOW_DROP_DETACHED], 5);
    assert_false(st.diverged);
    shadow_set_diverged(slot);
    shadow_set_lag(a, slot, 0);
    shadow_set_detached(a, slot, 0);
    st = stats(slot);
    assert_true(st.diverged);
    assert_true(st.lag_seconds == 0.25);
    assert_int_equal(st.detached_sessions, 3);
    /* out-of-range slots are ignored */
    shadow_set_lag(a, -1, 9);
    shadow_set_diverged(METRIC_MAX_LISTENERS);
    shadow_record(a, METRIC_MAX_LISTENERS, 1, "x", SHADOW_MATCH, SHADOW_NOISE_NONE, MS, MS, NULL, NULL);
    assert_int_equal(shadow_listener_stats(-1, 0, &st), -1);
    assert_string_equal(shadow_drop_reason_name(SHADOW_DROP_QUEUE_FULL), "queue_full");
    assert_string_equal(shadow_drop_reason_name(SHADOW_DROP_IDENTITY), "identity");
    shadow_count_dropped(a, slot, SHADOW_DROP_IDENTITY, 2);
    st = stats(slot);
    assert_int_equal(st.dropped[SHADOW_DROP_IDENTITY], 2);
    assert_int_equal(st.dropped[SHADOW_DROP_DETACHED], 5);
}

/* ---- the expositions -------------------------------------------------------- */

/* One sample line: name{k="v",...} value, or name value. */
static void
check_sample_line(const char *line)
{
    const char *p = line;
    char *end;

    assert_true(isalpha((unsigned char)*p) || *p == '_' || *p == ':');
    while (isalnum((unsigned char)*p) || *p == '_' || *p == ':')
        p++;
    if (*p == '{') {
        p++;
        while (*p != '}') {
            assert_true(isalpha((unsigned char)*p) || *p == '_');
            while (isalnum((unsigned char)*p) || *p == '_')
                p++;
            assert_int_equal(*p++, '=');
            assert_int_equal(*p++, '"');
            while (*p != '"') {
                assert_true(*p != 0 && *p != '\n');
                if (*p == '\\') {
                    p++;
                    assert_true(*p == '\\' || *p == '"' || *p == 'n');
                }
                p++;
            }
            p++;
            if (*p == ',')
                p++;
            else
                assert_int_equal(*p, '}');
        }
        p++;
    }
    assert_int_equal(*p++, ' ');
    strtod(p, &end);
    assert_true(end != p);
    assert_int_equal(*end, 0);
}

static void
test_prometheus_text(void **state)
{
    (void)state;
    int slot = metric_slot_listener("prom \"q\"");
    struct shadow_shard *sh = shadow_shard_new();
    size_t len, lines = 0;
    char *text, *save = NULL;

    assert_non_null(sh);
    for (int i = 0; i < 3; i++)
        shadow_record(sh, slot, 1, "GET", SHADOW_MATCH, SHADOW_NOISE_NONE, 300 * 1000, 20 * SEC, NULL, NULL);
    shadow_record(sh, slot, 1, "GET", SHADOW_MISMATCH, SHADOW_NOISE_NONE, 30 * 1000, 2 * MS, NULL, NULL);
    shadow_set_queue_bytes(12345);

    text = render(&len);
    assert_int_equal(strlen(text), len);
    assert_int_equal(text[len - 1], '\n');
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lines++;
        if (line[0] == '#') {
            assert_true(strncmp(line, "# HELP tandem_shadow_", 21) == 0 ||
                        strncmp(line, "# TYPE tandem_shadow_", 21) == 0);
            continue;
        }
        check_sample_line(line);
    }
    assert_true(lines > 20);
    free(text);

    text = render(&len);
    assert_non_null(strstr(text, "# TYPE tandem_shadow_latency_seconds histogram\n"));
    assert_non_null(strstr(
        text, "tandem_shadow_operations_total{listener=\"prom \\\"q\\\"\",outcome=\"match\"} 3\n"));
    assert_non_null(strstr(text, "tandem_shadow_validation_success_ratio{listener=\"prom "
                                 "\\\"q\\\"\"} 0.75\n"));
    assert_non_null(strstr(text, "tandem_shadow_queue_bytes 12345\n"));
    /* cumulative buckets: 30us and 300us (x3) on the primary side */
    assert_non_null(strstr(text, "tandem_shadow_latency_seconds_bucket{listener=\"prom "
                                 "\\\"q\\\"\",side=\"primary\",le=\"5e-05\"} 1\n"));
    assert_non_null(strstr(text, "tandem_shadow_latency_seconds_bucket{listener=\"prom "
                                 "\\\"q\\\"\",side=\"primary\",le=\"0.00025\"} 1\n"));
    assert_non_null(strstr(text, "tandem_shadow_latency_seconds_bucket{listener=\"prom "
                                 "\\\"q\\\"\",side=\"primary\",le=\"0.0005\"} 4\n"));
    /* 20 s is beyond 10 s: only +Inf has it */
    assert_non_null(strstr(text, "tandem_shadow_latency_seconds_bucket{listener=\"prom "
                                 "\\\"q\\\"\",side=\"shadow\",le=\"10\"} 1\n"));
    assert_non_null(strstr(text, "tandem_shadow_latency_seconds_bucket{listener=\"prom "
                                 "\\\"q\\\"\",side=\"shadow\",le=\"+Inf\"} 4\n"));
    assert_non_null(strstr(text, "tandem_shadow_latency_seconds_count{listener=\"prom "
                                 "\\\"q\\\"\",side=\"shadow\"} 4\n"));
    assert_non_null(strstr(text, "tandem_shadow_latency_seconds_sum{listener=\"prom "
                                 "\\\"q\\\"\",side=\"primary\"} 0.00093\n"));
    free(text);

    /* the exposed bounds are a subset of the fine ones, 50 us to 10 s */
    assert_int_equal(shadow_latency_bound_ns(0), 50000);
    assert_int_equal(shadow_latency_bound_ns(SHADOW_LAT_BOUNDS - 1), 10 * SEC);
    assert_int_equal(shadow_latency_bound_ns(SHADOW_LAT_BOUNDS), 0);
    for (int i = 1; i < SHADOW_LAT_BOUNDS; i++)
        assert_true(shadow_latency_bound_ns(i) > shadow_latency_bound_ns(i - 1));
}

static void
test_json_shape(void **state)
{
    (void)state;
    int slot = metric_slot_listener("shape");
    struct shadow_shard *sh = shadow_shard_new();

    assert_non_null(sh);
    for (int i = 0; i < 20; i++)
        shadow_record(sh, slot, 0x0123456789abcdefull, "SELECT * FROM shape WHERE id = $1",
                      i == 0 ? SHADOW_MISMATCH : SHADOW_MATCH, SHADOW_NOISE_NONE, 2 * MS, 3 * MS,
                      "SELECT 1 | (7,a)", "SELECT 1 | (7,b)");

    json_t *rep = report(0);
    assert_true(json_is_string(json_object_get(rep, "generated_at")));
    assert_int_equal(jint(rep, "window_seconds"), SHADOW_WINDOW_SECONDS);
    assert_true(json_is_array(json_object_get(rep, "statements")));
    assert_true(json_is_array(json_object_get(rep, "slowest")));
    assert_true(json_is_array(json_object_get(rep, "samples")));

    json_t *l = find_listener(rep, "shape");
    assert_non_null(l);
    assert_int_equal(jint(json_object_get(l, "outcomes"), "match"), 19);
    assert_int_equal(jint(json_object_get(l, "outcomes"), "dropped"), 0);
    assert_true(json_is_real(json_object_get(l, "validation_success_ratio")));
    assert_true(json_is_real(json_object_get(l, "performance_ratio")));
    assert_true(json_is_real(json_object_get(l, "primary_p50_ms")));
    assert_true(json_is_real(json_object_get(l, "shadow_p50_ms")));
    assert_true(json_is_real(json_object_get(l, "lag_seconds")));
    assert_true(json_is_boolean(json_object_get(l, "diverged")));
    assert_int_equal(jint(l, "detached_sessions"), 0);
    assert_int_equal(jint(json_object_get(l, "dropped"), "queue_full"), 0);

    json_t *s = nth_in(json_object_get(rep, "statements"), "shape", 0);
    assert_non_null(s);
    assert_int_equal(jint(json_object_get(s, "count"), "mismatch"), 1);
    assert_string_equal(json_string_value(json_object_get(s, "statement")),
                        "SELECT * FROM shape WHERE id = $1");
    assert_string_equal(json_string_value(json_object_get(s, "fingerprint")), "0123456789abcdef");
    for (const char *const *k =
             (const char *const[]){"primary_p50_ms", "shadow_p50_ms", "primary_p99_ms",
                                   "shadow_p99_ms", "latency_ratio", NULL};
         *k; k++)
        assert_true(json_is_real(json_object_get(s, *k)));

    json_t *x = json_array_get(json_object_get(rep, "samples"), 0);
    assert_string_equal(json_string_value(json_object_get(x, "listener")), "shape");
    assert_string_equal(json_string_value(json_object_get(x, "fingerprint")),
                        json_string_value(json_object_get(s, "fingerprint")));
    assert_string_equal(json_string_value(json_object_get(x, "shadow")), "SELECT 1 | (7,b)");
    json_decref(rep);
}

/* Noise by reason: per listener (since boot and in the window), per
 * statement, in samples and in Prometheus; a reason never leaks into another
 * outcome, and a reasonless noise counts as volatile. */
static void
test_noise_reasons(void **state)
{
    (void)state;
    int slot = metric_slot_listener("why");
    struct shadow_shard *sh = shadow_shard_new();

    assert_non_null(sh);
    for (int i = 0; i < 3; i++)
        shadow_record(sh, slot, 1, "SELECT pg_get_viewdef($1)", SHADOW_NOISE,
                      SHADOW_NOISE_SERVER_LOCAL, MS, MS, "a", "(null)");
    shadow_record(sh, slot, 2, "SELECT brin_summarize_new_values($1)", SHADOW_NOISE,
                  SHADOW_NOISE_PHYSICAL, MS, MS, "0", "2");
    shadow_record(sh, slot, 2, "SELECT brin_summarize_new_values($1)", SHADOW_MATCH,
                  SHADOW_NOISE_PHYSICAL, MS, MS, NULL, NULL);
    shadow_record(sh, slot, 3, "RANDOMKEY", SHADOW_NOISE, SHADOW_NOISE_NONE, MS, MS, "a", "b");
    shadow_record(sh, slot, 4, "GET", SHADOW_MISMATCH, SHADOW_NOISE_IGNORED, MS, MS, "a", "b");
    shadow_record(sh, slot, 5, "SELECT $1", SHADOW_NOISE, SHADOW_NOISE_IGNORED, MS, MS, "a", "b");

    struct shadow_listener_stats st = stats(slot);
    assert_int_equal(st.outcomes[SHADOW_NOISE], 6);
    assert_int_equal(st.noise[SHADOW_NOISE_SERVER_LOCAL], 3);
    assert_int_equal(st.noise[SHADOW_NOISE_PHYSICAL], 1);
    assert_int_equal(st.noise[SHADOW_NOISE_VOLATILE], 1);
    assert_int_equal(st.noise[SHADOW_NOISE_IGNORED], 1);
    assert_int_equal(st.noise[SHADOW_NOISE_NONE], 0);
    assert_int_equal(st.window_noise[SHADOW_NOISE_SERVER_LOCAL], 3);
    assert_int_equal(st.outcomes[SHADOW_MISMATCH], 1);

    size_t len;
    char *text = render(&len);
    assert_non_null(strstr(text, "# TYPE tandem_shadow_noise_total counter\n"));
    assert_non_null(strstr(text, "tandem_shadow_noise_total{listener=\"why\",reason=\"server_local\"} 3\n"));
    assert_non_null(strstr(text, "tandem_shadow_noise_total{listener=\"why\",reason=\"physical\"} 1\n"));
    assert_non_null(strstr(text, "tandem_shadow_noise_total{listener=\"why\",reason=\"volatile\"} 1\n"));
    assert_non_null(strstr(text, "tandem_shadow_noise_total{listener=\"why\",reason=\"ignored\"} 1\n"));
    assert_null(strstr(text, "reason=\"none\""));
    /* the existing series are unchanged */
    assert_non_null(strstr(text, "tandem_shadow_operations_total{listener=\"why\",outcome=\"noise\"} 6\n"));
    free(text);

    json_t *rep = report(0);
    json_t *l = find_listener(rep, "why");
    assert_int_equal(jint(json_object_get(l, "noise"), "server_local"), 3);
    assert_int_equal(jint(json_object_get(l, "window_noise"), "physical"), 1);
    assert_null(json_object_get(json_object_get(l, "noise"), "none"));
    json_t *stmts = json_object_get(rep, "statements"), *v;
    size_t i;
    int seen = 0;
    json_array_foreach(stmts, i, v) {
        if (strcmp(json_string_value(json_object_get(v, "listener")), "why") != 0)
            continue;
        json_t *n = json_object_get(v, "noise");
        const char *stmt = json_string_value(json_object_get(v, "statement"));
        if (strcmp(stmt, "SELECT pg_get_viewdef($1)") == 0) {
            assert_int_equal(jint(n, "server_local"), 3);
            assert_int_equal(jint(n, "volatile"), 0);
            seen++;
        } else if (strcmp(stmt, "SELECT brin_summarize_new_values($1)") == 0) {
            assert_int_equal(jint(n, "physical"), 1);
            assert_int_equal(jint(json_object_get(v, "count"), "match"), 1);
            seen++;
        } else if (strcmp(stmt, "GET") == 0) {
            assert_int_equal(jint(n, "ignored"), 0); /* a mismatch has no reason */
            seen++;
        }
    }
    assert_int_equal(seen, 3);
    json_array_foreach(json_object_get(rep, "samples"), i, v) {
        if (strcmp(json_string_value(json_object_get(v, "listener")), "why") != 0)
            continue;
        const char *o = json_string_value(json_object_get(v, "outcome"));
        json_t *r = json_object_get(v, "reason");
        if (strcmp(o, "noise") == 0)
            assert_true(json_is_string(r));
        else
            assert_true(json_is_null(r));
    }
    json_t *newest = nth_in(json_object_get(rep, "samples"), "why", 0);
    assert_string_equal(json_string_value(json_object_get(newest, "reason")), "ignored");
    json_decref(rep);
}


/* Plans whose row estimates for a relation are twice apart: the latency comparison may be
 * unfair (the shadow's statistics are not the primary's); the same estimates with other
 * plans (a missing index) are fair. */
static void
test_plans_unfair_when_estimates_differ(void **state)
{
    (void)state;
    int slot = metric_slot_listener("plans-fair");
    struct shadow_shard *a = shadow_shard_new();
    assert_non_null(a);
    static const char idx[] =
        "[{\"Plan\": {\"Node Type\": \"Index Scan\", \"Relation Name\": \"t\", \"Plan Rows\": 1}}]";
    static const char seq_same[] =
        "[{\"Plan\": {\"Node Type\": \"Gather\", \"Plan Rows\": 1, \"Plans\": [{\"Node Type\": "
        "\"Seq Scan\", \"Relation Name\": \"t\", \"Plan Rows\": 1}]}}]";
    static const char seq_nostats[] =
        "[{\"Plan\": {\"Node Type\": \"Seq Scan\", \"Relation Name\": \"t\", \"Plan Rows\": 1059}}]";
    shadow_record(a, slot, 1, "fair", SHADOW_MATCH, SHADOW_NOISE_NONE, MS, 5 * MS, NULL, NULL);
    shadow_record(a, slot, 2, "unfair", SHADOW_MATCH, SHADOW_NOISE_NONE, MS, 5 * MS, NULL, NULL);
    shadow_set_plans(a, slot, 1, idx, seq_same);
    shadow_set_plans(a, slot, 2, idx, seq_nostats);

    json_t *rep = report(0), *stmts = json_object_get(rep, "statements");
    for (size_t i = 0; i < count_in(stmts, "plans-fair"); i++) {
        json_t *st = nth_in(stmts, "plans-fair", i);
        const char *text = json_string_value(json_object_get(st, "statement"));
        json_t *unfair = json_object_get(st, "latency_unfair");
        assert_non_null(json_object_get(st, "plans"));
        if (strcmp(text, "fair") == 0) {
            assert_null(unfair);
            continue;
        }
        assert_non_null(unfair);
        json_t *rel = json_array_get(json_object_get(unfair, "relations"), 0);
        assert_string_equal(json_string_value(json_object_get(rel, "relation")), "t");
        assert_true(json_number_value(json_object_get(rel, "primary_rows")) == 1);
        assert_true(json_number_value(json_object_get(rel, "shadow_rows")) == 1059);
        assert_non_null(strstr(json_string_value(json_object_get(unfair, "reason")), "statistics"));
    }
    assert_int_equal(count_in(stmts, "plans-fair"), 2);
    json_decref(rep);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concurrent_shards),
        cmocka_unit_test(test_noise_reasons),
        cmocka_unit_test(test_undescribed_is_other),
        cmocka_unit_test(test_table_bound_and_other),
        cmocka_unit_test(test_window_expiry),
        cmocka_unit_test(test_latency_ratios),
        cmocka_unit_test(test_plans_unfair_when_estimates_differ),
        cmocka_unit_test(test_sample_ring),
        cmocka_unit_test(test_summary_cut_and_utf8),
        cmocka_unit_test(test_gauges),
        cmocka_unit_test(test_prometheus_text),
        cmocka_unit_test(test_json_shape),
    };
    shadow_set_clock(fake_clock);
    return cmocka_run_group_tests(tests, NULL, NULL);
}
