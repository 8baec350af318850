/*
 * test_pgdigest.c - the answer digest: what counts, what does not, and that
 * no split of a body changes anything.
 *
 * Messages are built as real backend bytes by the small builders below.
 * Every body is fed through exact-size heap copies (one per iovec), so under
 * ASan a read past a piece is a crash, not luck.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "protocol/pgdigest.h"

/* ------------------------------------------------------------------ */
/* Message builders.                                                  */

#define BODY_MAX 4096

struct msg {
    uint8_t type;
    size_t len;
    uint8_t body[BODY_MAX];
};

struct col {
    const char *name;
    uint32_t table;
    uint16_t attnum;
    uint32_t type;
    int32_t typmod;
    uint16_t format;
};

static void
put8(struct msg *m, uint8_t v)
{
    assert_true(m->len < BODY_MAX);
    m->body[m->len++] = v;
}

static void
put16(struct msg *m, uint16_t v)
{
    put8(m, (uint8_t)(v >> 8));
    put8(m, (uint8_t)v);
}

static void
put32(struct msg *m, uint32_t v)
{
    put16(m, (uint16_t)(v >> 16));
    put16(m, (uint16_t)v);
}

static void
putn(struct msg *m, const void *p, size_t n)
{
    assert_true(n <= BODY_MAX - m->len);
    memcpy(m->body + m->len, p, n);
    m->len += n;
}

static void
putstr(struct msg *m, const char *s)
{
    putn(m, s, strlen(s) + 1);
}

static struct msg *
mk(struct msg *m, uint8_t type)
{
    memset(m, 0, sizeof(*m));
    m->type = type;
    return m;
}

static struct msg *
mk_T(struct msg *m, const struct col *cols, int n)
{
    mk(m, 'T');
    put16(m, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        putstr(m, cols[i].name);
        put32(m, cols[i].table);
        put16(m, cols[i].attnum);
        put32(m, cols[i].type);
        put16(m, 0xffff); /* typlen */
        put32(m, (uint32_t)cols[i].typmod);
        put16(m, cols[i].format);
    }
    return m;
}

/* A DataRow of n text values; NULL is SQL NULL. */
static struct msg *
mk_D(struct msg *m, int n, const char *const *vals)
{
    mk(m, 'D');
    put16(m, (uint16_t)n);
    for (int i = 0; i < n; i++) {
        if (vals[i] == NULL) {
            put32(m, 0xffffffffu);
            continue;
        }
        put32(m, (uint32_t)strlen(vals[i]));
        putn(m, vals[i], strlen(vals[i]));
    }
    return m;
}

#define D2(m, a, b) mk_D((m), 2, (const char *const[]){(a), (b)})
#define D3(m, a, b, c) mk_D((m), 3, (const char *const[]){(a), (b), (c)})

static struct msg *
mk_C(struct msg *m, const char *tag)
{
    mk(m, 'C');
    putstr(m, tag);
    return m;
}

static struct msg *
mk_E(struct msg *m, const char *sqlstate, const char *message)
{
    mk(m, 'E');
    put8(m, 'S');
    putstr(m, "ERROR");
    put8(m, 'V');
    putstr(m, "ERROR");
    put8(m, 'C');
    putstr(m, sqlstate);
    put8(m, 'M');
    putstr(m, message);
    put8(m, 'F');
    putstr(m, "nbtinsert.c");
    put8(m, 0);
    return m;
}

static struct msg *
mk_raw(struct msg *m, uint8_t type, const void *body, size_t len)
{
    mk(m, type);
    putn(m, body, len);
    return m;
}

static struct msg *
mk_t(struct msg *m, const uint32_t *oids, int n)
{
    mk(m, 't');
    put16(m, (uint16_t)n);
    for (int i = 0; i < n; i++)
        put32(m, oids[i]);
    return m;
}

static struct msg *
mk_copyresp(struct msg *m, uint8_t type, uint8_t format, int n)
{
    mk(m, type);
    put8(m, format);
    put16(m, (uint16_t)n);
    for (int i = 0; i < n; i++)
        put16(m, format);
    return m;
}

/* ------------------------------------------------------------------ */
/* Feeding.                                                           */

enum split {
    WHOLE,    /* one iovec */
    TWO,      /* two iovecs cut at offset k (clamped) */
    BYTES,    /* one iovec per byte */
    EMPTIES,  /* like TWO, with empty iovecs before, between and after */
};

static void
feed(struct pgdigest *d, const struct msg *m, enum split how, size_t k)
{
    static struct iovec iov[BODY_MAX + 4]; /* big; and filled before use */
    int n = 0;
    size_t len = m->len;

    if (k > len)
        k = len;
    switch (how) {
    case WHOLE:
        iov[n].iov_base = malloc(len ? len : 1);
        memcpy(iov[n].iov_base, m->body, len);
        iov[n++].iov_len = len;
        break;
    case TWO:
    case EMPTIES:
        if (how == EMPTIES)
            iov[n++] = (struct iovec){NULL, 0};
        iov[n].iov_base = malloc(k ? k : 1);
        memcpy(iov[n].iov_base, m->body, k);
        iov[n++].iov_len = k;
        if (how == EMPTIES)
            iov[n++] = (struct iovec){NULL, 0};
        iov[n].iov_base = malloc(len - k ? len - k : 1);
        memcpy(iov[n].iov_base, m->body + k, len - k);
        iov[n++].iov_len = len - k;
        if (how == EMPTIES)
            iov[n++] = (struct iovec){NULL, 0};
        break;
    case BYTES:
        for (size_t i = 0; i < len; i++) {
            iov[n].iov_base = malloc(1);
            memcpy(iov[n].iov_base, m->body + i, 1);
            iov[n++].iov_len = 1;
        }
        break;
    }
    pgdigest_feed(d, m->type, iov, n, len);
    for (int i = 0; i < n; i++)
        free(iov[i].iov_base);
}

struct script {
    struct msg m[24];
    int n;
};

static struct msg *
add(struct script *s)
{
    assert_true(s->n < 24);
    return &s->m[s->n++];
}

static struct pgdigest_opts unordered = {.ordered = false};
static struct pgdigest_opts ordered = {.ordered = true};

static struct pgdigest_result
run_split(const struct script *s, const struct pgdigest_opts *o, enum split how, size_t k,
          char *sample, size_t cap)
{
    struct pgdigest d;
    struct pgdigest_result r;

    pgdigest_init(&d, o, sample, cap);
    for (int i = 0; i < s->n; i++)
        feed(&d, &s->m[i], how, k);
    pgdigest_final(&d, &r);
    return r;
}

static struct pgdigest_result
run(const struct script *s, const struct pgdigest_opts *o)
{
    return run_split(s, o, WHOLE, 0, NULL, 0);
}

static bool
same_result(const struct pgdigest_result *a, const struct pgdigest_result *b)
{
    return a->hash == b->hash && a->rows == b->rows && a->error == b->error
           && a->malformed == b->malformed && strcmp(a->sqlstate, b->sqlstate) == 0
           && strcmp(a->tag, b->tag) == 0;
}

static const struct col id_name[] = {
    {"id", 16400, 1, 23, -1, 0},
    {"name", 16400, 2, 25, -1, 0},
};

/* (id, name) | rows... | SELECT n, the rows given as "id", "name" pairs. */
static void
select_script(struct script *s, const char *const *rows, int nrows, const char *tag)
{
    s->n = 0;
    mk_T(add(s), id_name, 2);
    for (int i = 0; i < nrows; i++)
        D2(add(s), rows[2 * i], rows[2 * i + 1]);
    mk_C(add(s), tag);
}

/* Valid UTF-8, nothing else. */
static bool
utf8_valid(const char *str)
{
    const uint8_t *s = (const uint8_t *)str;
    while (*s) {
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf;
        if (*s < 0x80)
            len = 1;
        else if (*s >= 0xc2 && *s <= 0xdf)
            len = 2;
        else if (*s >= 0xe0 && *s <= 0xef) {
            len = 3;
            lo = *s == 0xe0 ? 0xa0 : 0x80;
            hi = *s == 0xed ? 0x9f : 0xbf;
        } else if (*s >= 0xf0 && *s <= 0xf4) {
            len = 4;
            lo = *s == 0xf0 ? 0x90 : 0x80;
            hi = *s == 0xf4 ? 0x8f : 0xbf;
        } else
            return false;
        if (len > 1 && (s[1] < lo || s[1] > hi))
            return false;
        for (size_t i = 2; i < len; i++)
            if (s[i] < 0x80 || s[i] > 0xbf)
                return false;
        s += len;
    }
    return true;
}

/* ------------------------------------------------------------------ */
/* What counts.                                                       */

static void
test_row_order(void **state)
{
    (void)state;
    struct script a, b;
    select_script(&a, (const char *const[]){"1", "alice", "2", "bob", "3", "carol"}, 3,
                  "SELECT 3");
    select_script(&b, (const char *const[]){"3", "carol", "1", "alice", "2", "bob"}, 3,
                  "SELECT 3");

    struct pgdigest_result ua = run(&a, &unordered), ub = run(&b, &unordered);
    assert_int_equal(ua.hash, ub.hash);
    assert_int_equal(ua.rows, 3);
    assert_int_equal(pgdigest_compare(&ua, &ub, false), SHADOW_MATCH);

    struct pgdigest_result oa = run(&a, &ordered), ob = run(&b, &ordered);
    assert_int_not_equal(oa.hash, ob.hash);
    assert_int_equal(pgdigest_compare(&oa, &ob, false), SHADOW_MISMATCH);
    assert_int_equal(pgdigest_compare(&oa, &ob, true), SHADOW_NOISE);
    /* Ordered and unordered digests of the same rows are different things. */
    assert_int_not_equal(oa.hash, ua.hash);
}

static void
test_multiset_multiplicity(void **state)
{
    (void)state;
    struct script a, b, c;
    /* {x, x, y} vs {x, y, y}: same distinct rows, same count. */
    select_script(&a, (const char *const[]){"1", "x", "1", "x", "2", "y"}, 3, "SELECT 3");
    select_script(&b, (const char *const[]){"1", "x", "2", "y", "2", "y"}, 3, "SELECT 3");
    /* {y, z, z}: the pair cancels in an xor, and the count is the same. */
    select_script(&c, (const char *const[]){"2", "y", "3", "z", "3", "z"}, 3, "SELECT 3");
    struct pgdigest_result ra = run(&a, &unordered), rb = run(&b, &unordered);
    struct pgdigest_result rc = run(&c, &unordered);
    assert_int_not_equal(ra.hash, rb.hash);
    assert_int_not_equal(rc.hash, ra.hash);
    assert_int_not_equal(rc.hash, rb.hash);
}

static void
test_value_changed(void **state)
{
    (void)state;
    struct script a, b;
    select_script(&a, (const char *const[]){"1", "alice", "2", "bob"}, 2, "SELECT 2");
    select_script(&b, (const char *const[]){"1", "alice", "2", "Bob"}, 2, "SELECT 2");
    assert_int_not_equal(run(&a, &unordered).hash, run(&b, &unordered).hash);
    assert_int_not_equal(run(&a, &ordered).hash, run(&b, &ordered).hash);

    /* Bytes moved from one column to the next. */
    select_script(&b, (const char *const[]){"1", "alice", "2b", "ob"}, 2, "SELECT 2");
    assert_int_not_equal(run(&a, &unordered).hash, run(&b, &unordered).hash);
}

static void
test_null_vs_empty(void **state)
{
    (void)state;
    struct script a, b;
    select_script(&a, (const char *const[]){"1", NULL}, 1, "SELECT 1");
    select_script(&b, (const char *const[]){"1", ""}, 1, "SELECT 1");
    struct pgdigest_result ra = run(&a, &unordered), rb = run(&b, &unordered);
    assert_int_not_equal(ra.hash, rb.hash);
    assert_int_equal(pgdigest_compare(&ra, &rb, false), SHADOW_MISMATCH);
}

static void
test_ignored_column(void **state)
{
    (void)state;
    static const struct col cols[] = {
        {"id", 1, 1, 23, -1, 0},
        {"updated_at", 1, 2, 1184, -1, 0},
        {"name", 1, 3, 25, -1, 0},
    };
    const char *const ign[] = {"nothing_like_it", NULL, "updated_at"};
    struct pgdigest_opts with = {.ignore_columns = ign, .nignore = 3};
    struct pgdigest_opts with_ord = {.ordered = true, .ignore_columns = ign, .nignore = 3};
    struct script a = {0}, b = {0};

    mk_T(add(&a), cols, 3);
    D3(add(&a), "1", "2024-01-01 10:00:00+00", "alice");
    D3(add(&a), "2", NULL, "bob");
    mk_C(add(&a), "SELECT 2");
    mk_T(add(&b), cols, 3);
    D3(add(&b), "1", "2024-01-01 10:00:01.123+00", "alice");
    D3(add(&b), "2", "2024-01-02", "bob");
    mk_C(add(&b), "SELECT 2");

    assert_int_equal(run(&a, &with).hash, run(&b, &with).hash);
    assert_int_equal(run(&a, &with_ord).hash, run(&b, &with_ord).hash);
    assert_int_not_equal(run(&a, &unordered).hash, run(&b, &unordered).hash);

    /* The other columns still count. */
    D3(&b.m[2], "2", "2024-01-02", "bobby");
    assert_int_not_equal(run(&a, &with).hash, run(&b, &with).hash);

    /* Names match exactly: "Updated_at" is another column. */
    const char *const ign_case[] = {"Updated_at"};
    struct pgdigest_opts case_opts = {.ignore_columns = ign_case, .nignore = 1};
    D3(&b.m[2], "2", "2024-01-02", "bob");
    assert_int_not_equal(run(&a, &case_opts).hash, run(&b, &case_opts).hash);

    /* Ignoring applies after a 'T' only: the same rows with no 'T' count whole. */
    struct script c = a, e = b;
    c.m[0] = c.m[1];
    c.m[1] = c.m[2];
    c.m[2] = c.m[3];
    c.n = 3;
    e.m[0] = e.m[1];
    e.m[1] = e.m[2];
    e.m[2] = e.m[3];
    e.n = 3;
    assert_int_not_equal(run(&c, &with).hash, run(&e, &with).hash);
}

static void
test_rowdesc(void **state)
{
    (void)state;
    struct col other[2];
    struct script a, b;
    const char *const rows[] = {"1", "alice"};

    select_script(&a, rows, 1, "SELECT 1");
    struct pgdigest_result ra = run(&a, &unordered);

    /* Table OID, attnum, typmod and format do not count. */
    memcpy(other, id_name, sizeof(other));
    other[0].table = other[1].table = 99999;
    other[0].attnum = 7;
    other[1].typmod = 36;
    other[1].format = 1;
    b = a;
    mk_T(&b.m[0], other, 2);
    assert_int_equal(run(&b, &unordered).hash, ra.hash);

    /* The type OID does ... */
    memcpy(other, id_name, sizeof(other));
    other[0].type = 20; /* int8 for int4 */
    mk_T(&b.m[0], other, 2);
    assert_int_not_equal(run(&b, &unordered).hash, ra.hash);

    /* ... but user types (server-assigned OIDs) are one class. */
    memcpy(other, id_name, sizeof(other));
    other[1].type = 16385;
    mk_T(&b.m[0], other, 2);
    uint64_t user1 = run(&b, &unordered).hash;
    other[1].type = 90210;
    mk_T(&b.m[0], other, 2);
    assert_int_equal(run(&b, &unordered).hash, user1);
    assert_int_not_equal(user1, ra.hash);

    /* Names count. */
    memcpy(other, id_name, sizeof(other));
    other[1].name = "nom";
    mk_T(&b.m[0], other, 2);
    assert_int_not_equal(run(&b, &unordered).hash, ra.hash);

    /* A column more or less counts (rows adjusted to match). */
    mk_T(&b.m[0], id_name, 1);
    mk_D(&b.m[1], 1, (const char *const[]){"1"});
    assert_int_not_equal(run(&b, &unordered).hash, ra.hash);
}

static void
test_tags(void **state)
{
    (void)state;
    struct script a = {0}, b = {0};
    mk_C(add(&a), "UPDATE 1");
    mk_C(add(&b), "UPDATE 2");
    struct pgdigest_result ra = run(&a, &unordered), rb = run(&b, &unordered);
    assert_int_not_equal(ra.hash, rb.hash);
    assert_string_equal(ra.tag, "UPDATE 1");
    assert_int_equal(ra.rows, 0);
    assert_false(ra.error);
    assert_int_equal(pgdigest_compare(&ra, &rb, false), SHADOW_MISMATCH);

    /* The last tag is the one kept; a long one is cut to fit. */
    char longtag[200];
    memset(longtag, 'X', sizeof(longtag) - 1);
    longtag[sizeof(longtag) - 1] = '\0';
    mk_C(add(&a), "INSERT 0 5");
    assert_string_equal(run(&a, &unordered).tag, "INSERT 0 5");
    mk_C(add(&a), longtag);
    struct pgdigest_result rl = run(&a, &unordered);
    assert_int_equal(strlen(rl.tag), PGDIGEST_TAG_MAX - 1);
    assert_false(rl.malformed);

    /* The kept tag is text: stray bytes and control characters shown as '?',
     * a character never cut.  The digest has the bytes as sent. */
    struct script c = {0}, e = {0};
    mk_C(add(&c), "SE\xffLECT\x01 1 \xc3\xa9");
    mk_C(add(&e), "SE?LECT? 1 \xc3\xa9");
    struct pgdigest_result rc = run(&c, &unordered);
    assert_string_equal(rc.tag, "SE?LECT? 1 \xc3\xa9");
    assert_int_not_equal(rc.hash, run(&e, &unordered).hash);
    memset(longtag, 'X', sizeof(longtag) - 1);
    memcpy(longtag + PGDIGEST_TAG_MAX - 2, "\xc3\xa9", 2);
    c.n = 0;
    mk_C(add(&c), longtag);
    rc = run(&c, &unordered);
    assert_int_equal(strlen(rc.tag), PGDIGEST_TAG_MAX - 2);
}

static void
test_errors(void **state)
{
    (void)state;
    struct script a = {0}, b = {0}, c = {0};
    mk_E(add(&a), "23505", "duplicate key value violates unique constraint \"t_pkey\"");
    mk_E(add(&b), "23505", "doppelter Schlüsselwert verletzt Unique-Constraint");
    mk_E(add(&c), "42P01", "relation \"t\" does not exist");

    struct pgdigest_result ra = run(&a, &unordered), rb = run(&b, &unordered);
    struct pgdigest_result rc = run(&c, &unordered);
    assert_true(ra.error);
    assert_string_equal(ra.sqlstate, "23505");
    assert_int_equal(ra.hash, rb.hash);
    assert_int_equal(pgdigest_compare(&ra, &rb, false), SHADOW_MATCH);
    assert_int_equal(pgdigest_compare(&ra, &rc, false), SHADOW_MISMATCH);
    assert_int_equal(pgdigest_compare(&ra, &rc, true), SHADOW_NOISE);

    /* The first error is the one kept. */
    mk_E(add(&a), "25P02", "current transaction is aborted");
    assert_string_equal(run(&a, &unordered).sqlstate, "23505");

    /* Rows before a failure do not matter when both sides failed alike. */
    struct script d = {0};
    mk_T(add(&d), id_name, 2);
    D2(add(&d), "1", "x");
    mk_E(add(&d), "23505", "boom");
    struct pgdigest_result rd = run(&d, &unordered);
    assert_int_equal(rd.rows, 1);
    assert_int_equal(pgdigest_compare(&rd, &ra, false), SHADOW_MATCH);

    /* No 'C' field: an error all the same, with no SQLSTATE. */
    struct script e = {0};
    mk_raw(add(&e), 'E', "SERROR\0Mno code\0", 17);
    struct pgdigest_result re = run(&e, &unordered);
    assert_true(re.error);
    assert_false(re.malformed);
    assert_string_equal(re.sqlstate, "");
}

static struct pgdigest_result
result(uint64_t hash, bool error, const char *sqlstate, bool malformed)
{
    struct pgdigest_result r;
    memset(&r, 0, sizeof(r));
    r.hash = hash;
    r.error = error;
    snprintf(r.sqlstate, sizeof(r.sqlstate), "%s", sqlstate);
    r.malformed = malformed;
    return r;
}

static void
test_compare_branches(void **state)
{
    (void)state;
    struct pgdigest_result ok1 = result(1, false, "", false);
    struct pgdigest_result ok1b = result(1, false, "", false);
    struct pgdigest_result ok2 = result(2, false, "", false);
    struct pgdigest_result e1 = result(1, true, "23505", false);
    struct pgdigest_result e2 = result(2, true, "23505", false);
    struct pgdigest_result e3 = result(1, true, "40001", false);
    struct pgdigest_result bad = result(1, false, "", true);
    struct pgdigest_result bad_e = result(1, true, "23505", true);

    for (int u = 0; u < 2; u++) {
        bool unstable = u;
        enum shadow_outcome differ = unstable ? SHADOW_NOISE : SHADOW_MISMATCH;
        assert_int_equal(pgdigest_compare(&ok1, &ok1b, unstable), SHADOW_MATCH);
        assert_int_equal(pgdigest_compare(&ok1, &ok2, unstable), differ);
        assert_int_equal(pgdigest_compare(&e1, &e2, unstable), SHADOW_MATCH);
        assert_int_equal(pgdigest_compare(&e1, &e3, unstable), differ);
        assert_int_equal(pgdigest_compare(&e1, &ok1, unstable), SHADOW_PRIMARY_ERROR);
        assert_int_equal(pgdigest_compare(&ok1, &e1, unstable), SHADOW_SHADOW_ERROR);
        assert_int_equal(pgdigest_compare(&bad, &ok1, unstable), SHADOW_PRIMARY_ERROR);
        assert_int_equal(pgdigest_compare(&ok1, &bad, unstable), SHADOW_SHADOW_ERROR);
        assert_int_equal(pgdigest_compare(&e1, &bad_e, unstable), SHADOW_SHADOW_ERROR);
        assert_int_equal(pgdigest_compare(&bad, &bad, unstable), SHADOW_PRIMARY_ERROR);
    }
}

/* The reason comes with the noise; a server-local input excuses only its own failures. */
static void
test_judge_reasons(void **state)
{
    (void)state;
    struct pgdigest_result ok1 = result(1, false, "", false);
    struct pgdigest_result ok2 = result(2, false, "", false);
    struct pgdigest_result nofile = result(1, true, "58P01", false);
    struct pgdigest_result future = result(1, true, "22023", false);
    struct pgdigest_result nolo = result(1, true, "42704", false);
    struct pgdigest_result notable = result(1, true, "42P01", false);
    struct pgdigest_result denied = result(1, true, "42501", false);
    struct pgdigest_result bad = result(1, false, "", true);
    enum shadow_noise_reason why;

    assert_int_equal(pgdigest_judge(&ok1, &ok2, SHADOW_NOISE_NONE, false, &why), SHADOW_MISMATCH);
    assert_int_equal(why, SHADOW_NOISE_NONE);
    assert_int_equal(pgdigest_judge(&ok1, &ok2, SHADOW_NOISE_PHYSICAL, false, &why), SHADOW_NOISE);
    assert_int_equal(why, SHADOW_NOISE_PHYSICAL);
    assert_int_equal(pgdigest_judge(&ok1, &ok2, SHADOW_NOISE_SERVER_LOCAL, true, &why),
                     SHADOW_NOISE);
    assert_int_equal(why, SHADOW_NOISE_SERVER_LOCAL);
    assert_int_equal(pgdigest_judge(&ok1, &ok1, SHADOW_NOISE_SERVER_LOCAL, true, &why),
                     SHADOW_MATCH);
    assert_int_equal(why, SHADOW_NOISE_NONE);

    /* the shadow failed: its own fault unless the input was the primary's */
    for (int li = 0; li < 2; li++) {
        enum shadow_outcome local = li ? SHADOW_NOISE : SHADOW_SHADOW_ERROR;
        assert_int_equal(pgdigest_judge(&ok1, &nofile, SHADOW_NOISE_NONE, li, &why), local);
        assert_int_equal(why, li ? SHADOW_NOISE_SERVER_LOCAL : SHADOW_NOISE_NONE);
        assert_int_equal(pgdigest_judge(&ok1, &future, SHADOW_NOISE_SERVER_LOCAL, li, &why), local);
        assert_int_equal(pgdigest_judge(&ok1, &nolo, SHADOW_NOISE_VOLATILE, li, &why), local);
        assert_int_equal(why, li ? SHADOW_NOISE_SERVER_LOCAL : SHADOW_NOISE_NONE);
        /* a missing table or a refused permission is the shadow's own */
        assert_int_equal(pgdigest_judge(&ok1, &notable, SHADOW_NOISE_SERVER_LOCAL, li, &why),
                         SHADOW_SHADOW_ERROR);
        assert_int_equal(pgdigest_judge(&ok1, &denied, SHADOW_NOISE_SERVER_LOCAL, li, &why),
                         SHADOW_SHADOW_ERROR);
        assert_int_equal(why, SHADOW_NOISE_NONE);
        /* the primary's failure, and broken answers, are never excused */
        assert_int_equal(pgdigest_judge(&nofile, &ok1, SHADOW_NOISE_SERVER_LOCAL, li, &why),
                         SHADOW_PRIMARY_ERROR);
        assert_int_equal(pgdigest_judge(&ok1, &bad, SHADOW_NOISE_SERVER_LOCAL, li, &why),
                         SHADOW_SHADOW_ERROR);
        /* both failed alike: a match */
        assert_int_equal(pgdigest_judge(&nofile, &nofile, SHADOW_NOISE_SERVER_LOCAL, li, &why),
                         SHADOW_MATCH);
    }
}

static void
test_result_sets(void **state)
{
    (void)state;
    struct script a = {0}, b = {0};
    /* Two result sets under equal tags: a row moved from one to the other. */
    mk_T(add(&a), id_name, 2);
    D2(add(&a), "1", "a");
    D2(add(&a), "2", "b");
    mk_C(add(&a), "X");
    mk_T(add(&a), id_name, 2);
    D2(add(&a), "3", "c");
    mk_C(add(&a), "X");

    mk_T(add(&b), id_name, 2);
    D2(add(&b), "1", "a");
    mk_C(add(&b), "X");
    mk_T(add(&b), id_name, 2);
    D2(add(&b), "2", "b");
    D2(add(&b), "3", "c");
    mk_C(add(&b), "X");
    assert_int_not_equal(run(&a, &unordered).hash, run(&b, &unordered).hash);
    assert_int_equal(run(&a, &unordered).rows, 3);

    /* Not part of the answer: notices, parameter status, notifications,
     * keys, ReadyForQuery. */
    struct script c = a;
    mk_raw(add(&c), 'N', "SNOTICE\0C00000\0Mhi\0", 20);
    mk_raw(add(&c), 'S', "TimeZone\0UTC\0", 13);
    mk_raw(add(&c), 'A', "\0\0\0\1ch\0payload\0", 15);
    mk_raw(add(&c), 'K', "\0\0\0\1\0\0\0\2", 8);
    mk_raw(add(&c), 'Z', "I", 1);
    assert_int_equal(run(&c, &unordered).hash, run(&a, &unordered).hash);

    /* The pending result set counts at final; final does not change d. */
    struct pgdigest d;
    struct pgdigest_result r1, r2, r3;
    pgdigest_init(&d, NULL, NULL, 0);
    feed(&d, &a.m[0], WHOLE, 0);
    feed(&d, &a.m[1], WHOLE, 0);
    pgdigest_final(&d, &r1);
    pgdigest_final(&d, &r2);
    assert_true(same_result(&r1, &r2));
    feed(&d, &a.m[2], WHOLE, 0);
    pgdigest_final(&d, &r3);
    assert_int_not_equal(r1.hash, r3.hash);
    assert_int_equal(r3.rows, 2);
}

static void
test_extended_and_copy(void **state)
{
    (void)state;
    struct script a = {0};
    const uint32_t oids[] = {23, 25};

    mk(add(&a), '1');
    mk_t(add(&a), oids, 2);
    mk_T(add(&a), id_name, 2);
    mk(add(&a), '2');
    D2(add(&a), "1", "a");
    mk(add(&a), 's');
    D2(add(&a), "2", "b");
    mk_C(add(&a), "SELECT 1");
    mk(add(&a), '3');
    mk(add(&a), 'n');
    mk(add(&a), 'I');
    uint64_t base = run(&a, &unordered).hash;

    /* Each of these bytes counts: drop it, and the digest changes. */
    for (int i = 0; i < a.n; i++) {
        struct script b = a;
        memmove(&b.m[i], &b.m[i + 1], (size_t)(b.n - i - 1) * sizeof(b.m[0]));
        b.n--;
        assert_int_not_equal(run(&b, &unordered).hash, base);
    }
    /* A parameter type counts. */
    struct script b = a;
    mk_t(&b.m[1], (const uint32_t[]){23, 1043}, 2);
    assert_int_not_equal(run(&b, &unordered).hash, base);
    /* PortalSuspended ends a chunk of rows: moving a row across it counts. */
    b = a;
    b.m[5] = a.m[6];
    b.m[6] = a.m[5];
    struct pgdigest_result rb = run(&b, &unordered);
    assert_false(rb.malformed);
    assert_int_not_equal(rb.hash, base);

    /* COPY TO: rows as a multiset, CopyDone, tag. */
    struct script c = {0}, e;
    mk_copyresp(add(&c), 'H', 0, 2);
    mk_raw(add(&c), 'd', "1\talice\n", 8);
    mk_raw(add(&c), 'd', "2\tbob\n", 6);
    mk(add(&c), 'c');
    mk_C(add(&c), "COPY 2");
    e = c;
    e.m[1] = c.m[2];
    e.m[2] = c.m[1];
    assert_int_equal(run(&c, &unordered).hash, run(&e, &unordered).hash);
    assert_int_not_equal(run(&c, &ordered).hash, run(&e, &ordered).hash);
    assert_int_equal(run(&c, &unordered).rows, 2);
    e = c;
    mk_copyresp(&e.m[0], 'H', 1, 2); /* binary */
    assert_int_not_equal(run(&c, &unordered).hash, run(&e, &unordered).hash);
    e = c;
    mk_raw(&e.m[2], 'd', "2\tbob\r\n", 7);
    assert_int_not_equal(run(&c, &unordered).hash, run(&e, &unordered).hash);

    /* An unexpected type counts whole (FunctionCallResponse). */
    struct script f = {0}, g = {0};
    mk_raw(add(&f), 'V', "\0\0\0\1a", 5);
    mk_raw(add(&g), 'V', "\0\0\0\1b", 5);
    assert_int_not_equal(run(&f, &unordered).hash, run(&g, &unordered).hash);
}

/* ------------------------------------------------------------------ */
/* Splits.                                                            */

/* Every kind of message, a value longer than a hashing block, and bytes that
 * are not UTF-8, so each split path is walked. */
static void
everything_script(struct script *s)
{
    static const struct col cols[] = {
        {"id", 1, 1, 23, -1, 0},
        {"updated_at", 1, 2, 1184, -1, 0},
        {"payload", 1, 3, 17, -1, 0},
    };
    static char big[700];
    memset(big, 'z', sizeof(big) - 1);
    memcpy(big, "h\xc3\xa9llo w\xf0\x9f\x98\x80rld \xff\x01\n", 19);

    s->n = 0;
    mk(add(s), '1');
    mk_t(add(s), (const uint32_t[]){23, 16999}, 2);
    mk_T(add(s), cols, 3);
    mk(add(s), '2');
    D3(add(s), "1", "2024-01-01", "abc");
    D3(add(s), "2", NULL, "");
    D3(add(s), "3", "2024-01-03", big);
    D3(add(s), big, big, big);
    mk(add(s), 's');
    D3(add(s), "4", "x", NULL);
    mk_C(add(s), "SELECT 5");
    mk_raw(add(s), 'N', "SWARNING\0C01000\0Mcareful\0", 26);
    mk_E(add(s), "23505", "duplicate key value violates unique constraint \"t_pkey\"");
    mk_copyresp(add(s), 'H', 0, 3);
    mk_raw(add(s), 'd', "1\t\xc3\xa9t\xc3\xa9\n", 9);
    mk_raw(add(s), 'd', big, sizeof(big) - 1);
    mk(add(s), 'c');
    mk_C(add(s), "COPY 2");
    mk(add(s), 'n');
    mk(add(s), 'I');
    mk_raw(add(s), 'V', "\0\0\0\2ok", 6);
    mk_raw(add(s), 'Z', "I", 1);
}

static void
check_splits(const struct script *s, const struct pgdigest_opts *o, size_t cap)
{
    char ref_sample[512], sample[512];
    size_t maxlen = 0;

    for (int i = 0; i < s->n; i++)
        if (s->m[i].len > maxlen)
            maxlen = s->m[i].len;

    struct pgdigest_result ref = run_split(s, o, WHOLE, 0, ref_sample, cap);
    for (size_t k = 0; k <= maxlen + 1; k++) {
        struct pgdigest_result r = run_split(s, o, TWO, k, sample, cap);
        if (!same_result(&r, &ref))
            fail_msg("split at %zu changes the result", k);
        assert_string_equal(sample, ref_sample);
    }
    for (size_t k = 0; k <= maxlen; k += 7) {
        struct pgdigest_result r = run_split(s, o, EMPTIES, k, sample, cap);
        assert_true(same_result(&r, &ref));
        assert_string_equal(sample, ref_sample);
    }
    struct pgdigest_result r = run_split(s, o, BYTES, 0, sample, cap);
    assert_true(same_result(&r, &ref));
    assert_string_equal(sample, ref_sample);
}

static void
test_every_split(void **state)
{
    (void)state;
    struct script s;
    const char *const ign[] = {"updated_at"};
    const char *const ign2[] = {"id", "payload"};
    struct pgdigest_opts ig = {.ignore_columns = ign, .nignore = 1};
    struct pgdigest_opts ig2 = {.ordered = true, .ignore_columns = ign2, .nignore = 2};

    everything_script(&s);
    struct pgdigest_result r = run(&s, &unordered);
    assert_false(r.malformed);
    assert_true(r.error);
    assert_int_equal(r.rows, 7);
    assert_string_equal(r.tag, "COPY 2");

    check_splits(&s, &unordered, 512);
    check_splits(&s, &ordered, 100);
    check_splits(&s, &ig, 512);
    check_splits(&s, &ig2, 37);
    assert_int_not_equal(run(&s, &ig).hash, r.hash);

    /* The ignored column is the last one. */
    const char *const ign3[] = {"payload"};
    struct pgdigest_opts ig3 = {.ignore_columns = ign3, .nignore = 1};
    check_splits(&s, &ig3, 512);
}

/* Rows whose hashed bytes end at, just before or just after a hashing block
 * boundary: the last block is hashed differently, wherever the pieces end. */
static void
test_block_boundaries(void **state)
{
    (void)state;
    static const struct col ab[] = {{"a", 0, 0, 25, -1, 0}, {"b", 0, 0, 25, -1, 0}};
    const char *const ign[] = {"b"};
    struct pgdigest_opts ig = {.ignore_columns = ign, .nignore = 1};
    static char val[PGDIGEST_BLOCK * 3 + 16];
    struct script s;

    for (size_t blocks = 1; blocks <= 3; blocks++) {
        for (size_t hashed = blocks * PGDIGEST_BLOCK - 3; hashed <= blocks * PGDIGEST_BLOCK + 3;
             hashed++) {
            size_t vlen = hashed - 6; /* int16 count, int32 length */
            memset(val, 'v', vlen);
            val[vlen] = '\0';
            val[vlen / 2] = (char)blocks;

            /* One column: hashed in place whole, streamed in pieces. */
            s.n = 0;
            mk_D(add(&s), 1, (const char *const[]){val});
            mk_raw(add(&s), 'd', val, hashed);
            check_splits(&s, &unordered, 64);

            /* Two columns, the second ignored: streamed even when whole. */
            s.n = 0;
            mk_T(add(&s), ab, 2);
            D2(add(&s), val, "ignored");
            mk_C(add(&s), "SELECT 1");
            check_splits(&s, &ig, 64);
            struct pgdigest_result r1 = run(&s, &ig);
            D2(&s.m[1], val, "other");
            assert_int_equal(run(&s, &ig).hash, r1.hash);
        }
    }
}

/* ------------------------------------------------------------------ */
/* Malformed bodies.                                                  */

static void
check_malformed(const struct msg *bad, const struct msg *before)
{
    struct pgdigest d;
    struct pgdigest_result r;
    struct msg ok;
    const struct pgdigest_opts *opts[] = {&unordered, &ordered};
    const char *const ign[] = {"name"};
    struct pgdigest_opts ig = {.ignore_columns = ign, .nignore = 1};

    for (size_t o = 0; o < 3; o++) {
        const struct pgdigest_opts *op = o < 2 ? opts[o] : &ig;
        for (size_t k = 0; k <= bad->len + 1; k++) {
            for (int how = WHOLE; how <= EMPTIES; how++) {
                char sample[64];
                pgdigest_init(&d, op, sample, sizeof(sample));
                if (before)
                    feed(&d, before, WHOLE, 0);
                feed(&d, bad, (enum split)how, k);
                /* Ignored from then on. */
                D2(&ok, "1", "x");
                feed(&d, &ok, WHOLE, 0);
                pgdigest_final(&d, &r);
                if (!r.malformed)
                    fail_msg("'%c' body of %zu bytes split %d at %zu not malformed", bad->type,
                             bad->len, how, k);
                assert_int_equal(r.rows, 0);
                assert_int_equal(pgdigest_compare(&r, &r, false), SHADOW_PRIMARY_ERROR);
                assert_true(strlen(sample) < sizeof(sample));
            }
        }
    }
}

static void
test_malformed(void **state)
{
    (void)state;
    struct msg m, t;

    mk_T(&t, id_name, 2);
    /* DataRow: column length past the end. */
    check_malformed(mk_raw(&m, 'D', "\0\1\0\0\0\5abcd", 10), NULL);
    check_malformed(mk_raw(&m, 'D', "\0\2\0\0\0\1a\0\0\0\7abc", 15), &t);
    check_malformed(mk_raw(&m, 'D', "\0\1\x7f\xff\xff\xff" "abc", 9), NULL);
    /* Negative lengths other than -1. */
    check_malformed(mk_raw(&m, 'D', "\0\1\xff\xff\xff\xfe", 6), NULL);
    check_malformed(mk_raw(&m, 'D', "\0\1\x80\0\0\0", 6), NULL);
    /* Truncated: no count, a cut length, missing columns. */
    check_malformed(mk_raw(&m, 'D', "", 0), NULL);
    check_malformed(mk_raw(&m, 'D', "\0", 1), NULL);
    check_malformed(mk_raw(&m, 'D', "\0\1\0\0", 4), NULL);
    check_malformed(mk_raw(&m, 'D', "\0\2\0\0\0\1a", 7), NULL);
    /* Trailing bytes, a negative count, a count other than the 'T''s. */
    check_malformed(mk_raw(&m, 'D', "\0\1\0\0\0\1ab", 8), NULL);
    check_malformed(mk_raw(&m, 'D', "\xff\xff", 2), NULL);
    check_malformed(mk_raw(&m, 'D', "\0\1\0\0\0\1a", 7), &t);
    /* Other types. */
    check_malformed(mk_raw(&m, 'T', "\0\1id\0\0\0", 7), NULL);
    check_malformed(mk_raw(&m, 'T', "\0\1id", 4), NULL);
    check_malformed(mk_raw(&m, 'T', "\x80\0", 2), NULL);
    check_malformed(mk_raw(&m, 'C', "SELECT 1", 8), NULL);
    check_malformed(mk_raw(&m, 'C', "SELECT 1\0x", 10), NULL);
    check_malformed(mk_raw(&m, 'C', "", 0), NULL);
    check_malformed(mk_raw(&m, 'E', "SERROR\0C23505\0", 14), NULL);
    check_malformed(mk_raw(&m, 'E', "SERROR\0C235", 11), NULL);
    check_malformed(mk_raw(&m, 'E', "\0x", 2), NULL);
    check_malformed(mk_raw(&m, 't', "\0\2\0\0\0\x17", 6), NULL);
    check_malformed(mk_raw(&m, 'H', "\0\0\1", 3), NULL);
    check_malformed(mk_raw(&m, 'I', "x", 1), NULL);
    check_malformed(mk_raw(&m, '1', "\0", 1), NULL);

    /* iovec lengths that do not add up to body_len. */
    struct pgdigest d;
    struct pgdigest_result r;
    uint8_t body[8] = {0, 0};
    struct iovec iov[2] = {{body, 2}, {body + 2, 2}};
    pgdigest_init(&d, NULL, NULL, 0);
    pgdigest_feed(&d, 'D', iov, 2, 2);
    pgdigest_final(&d, &r);
    assert_true(r.malformed);
    pgdigest_init(&d, NULL, NULL, 0);
    pgdigest_feed(&d, 'D', iov, 1, 4);
    pgdigest_final(&d, &r);
    assert_true(r.malformed);
    pgdigest_init(&d, NULL, NULL, 0);
    pgdigest_feed(&d, 'D', iov, -1, 0);
    pgdigest_final(&d, &r);
    assert_true(r.malformed);
    /* A zero-column row is fine. */
    pgdigest_init(&d, NULL, NULL, 0);
    pgdigest_feed(&d, 'D', iov, 1, 2);
    pgdigest_final(&d, &r);
    assert_false(r.malformed);
    assert_int_equal(r.rows, 1);
}

/* ------------------------------------------------------------------ */
/* The sample.                                                        */

static void
test_sample_text(void **state)
{
    (void)state;
    char sample[256];
    struct script s;

    select_script(&s, (const char *const[]){"1", "alice", "2", NULL}, 2, "SELECT 2");
    run_split(&s, &unordered, WHOLE, 0, sample, sizeof(sample));
    assert_string_equal(sample, "(id, name) | 1, alice | 2, NULL | SELECT 2");

    struct script e = {0};
    mk_E(add(&e), "23505", "duplicate key");
    mk_raw(add(&e), 'E', "VFATAL\0C57P01\0Mbye\0", 20);
    run_split(&e, &unordered, WHOLE, 0, sample, sizeof(sample));
    assert_string_equal(sample, "ERROR 23505: duplicate key | FATAL 57P01: bye");

    /* Control characters and stray bytes escaped; long values cut. */
    select_script(&s, (const char *const[]){"a\tb\nc\x01", "\xff\xc3(", "x", NULL}, 2,
                  "SELECT 2");
    D2(add(&s), "1", "0123456789012345678901234567890123456789012345678901234567890");
    mk_C(add(&s), "SELECT 1");
    run_split(&s, &unordered, WHOLE, 0, sample, sizeof(sample));
    assert_string_equal(sample, "(id, name) | a\\tb\\nc\\x01, \\xff\\xc3( | x, NULL | SELECT 2 | "
                                "1, 012345678901234567890123456789012345678901234567... | "
                                "SELECT 1");
    assert_true(utf8_valid(sample));

    /* A value is cut at 48 bytes, before a character that would cross it. */
    struct script u = {0};
    mk_D(add(&u), 1, (const char *const[]){"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9z"});
    mk_D(add(&u), 1, (const char *const[]){"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9z"});
    run_split(&u, &unordered, WHOLE, 0, sample, sizeof(sample));
    assert_string_equal(sample, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa... | "
                                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\xc3\xa9...");

    /* No sample buffer, or an empty one: nothing written, nothing breaks. */
    run_split(&s, &unordered, WHOLE, 0, NULL, 100);
    sample[0] = 'q';
    run_split(&s, &unordered, WHOLE, 0, sample, 0);
    assert_int_equal(sample[0], 'q');

    /* Empty query, suspended portal, copy. */
    struct script c = {0};
    mk(add(&c), 'I');
    mk(add(&c), 's');
    mk_copyresp(add(&c), 'H', 0, 1);
    mk_raw(add(&c), 'd', "7\n", 2);
    run_split(&c, &unordered, WHOLE, 0, sample, sizeof(sample));
    assert_string_equal(sample, "EMPTY | SUSPENDED | COPY OUT | 7\\n");
}

static void
test_sample_bound(void **state)
{
    (void)state;
    char sample[300];
    struct script s = {0};
    /* Multi-byte characters everywhere, so a cut can fall inside one. */
    static const struct col cols[] = {{"n\xc3\xa4me", 0, 0, 25, -1, 0}};
    mk_T(add(&s), cols, 1);
    for (int i = 0; i < 16; i++)
        mk_D(add(&s), 1, (const char *const[]){"\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80-"
                                               "\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80-"
                                               "\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80-"
                                               "\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80-"
                                               "\xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80"});
    mk_C(add(&s), "SELECT 16");
    mk_E(add(&s), "22021", "invalid byte sequence for encoding \"UTF8\": 0x\xc3\xa9\xc3\xa9");

    for (size_t cap = 0; cap < sizeof(sample); cap++) {
        memset(sample, 'Q', sizeof(sample));
        run_split(&s, &unordered, WHOLE, 0, cap ? sample : NULL, cap);
        if (cap == 0)
            continue;
        size_t len = strlen(sample);
        assert_true(len < cap);
        for (size_t i = cap; i < sizeof(sample); i++)
            assert_int_equal(sample[i], 'Q');
        if (!utf8_valid(sample))
            fail_msg("cap %zu: not UTF-8: %s", cap, sample);
        /* Room permitting, the tag shows even when the rows did not fit. */
        if (cap >= 120)
            assert_non_null(strstr(sample, "| SELECT 16"));
        if (cap >= 40)
            assert_non_null(strstr(sample, "..."));
    }
    /* A cap of 300 shows the columns and the first rows, cut, then the tag. */
    run_split(&s, &unordered, WHOLE, 0, sample, sizeof(sample));
    static const char head[] = "(n\xc3\xa4me) | \xe2\x82\xac\xc3\xa9\xf0\x9f\x98\x80-";
    assert_memory_equal(sample, head, sizeof(head) - 1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_row_order),
        cmocka_unit_test(test_multiset_multiplicity),
        cmocka_unit_test(test_value_changed),
        cmocka_unit_test(test_null_vs_empty),
        cmocka_unit_test(test_ignored_column),
        cmocka_unit_test(test_rowdesc),
        cmocka_unit_test(test_tags),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_compare_branches),
        cmocka_unit_test(test_result_sets),
        cmocka_unit_test(test_extended_and_copy),
        cmocka_unit_test(test_every_split),
        cmocka_unit_test(test_block_boundaries),
        cmocka_unit_test(test_malformed),
        cmocka_unit_test(test_judge_reasons),
        cmocka_unit_test(test_sample_text),
        cmocka_unit_test(test_sample_bound),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
