/*
 * verify_pg.c - tandem verify for PostgreSQL (verify.h).
 *
 * Per table, on one connection to each side (libpq, blocking: this is a
 * command, not the proxy):
 *
 *   the primary names the next chunk's last key (CHUNK rows on from the last)
 *   both hash the chunk inside the database:  count(*), md5 of the rows'
 *     text in key order, over  key > last AND key <= end
 *   equal ─► next chunk
 *   different ─► both send the chunk as (key, md5 of the row) and the two
 *     lists are compared: changed, missing on either side
 *   after the last chunk, the shadow's rows past the primary's last key
 *     are missing on the primary
 *
 * Each difference is looked at again after --settle, one row on each side:
 * only one still there is reported (a write in flight is not a difference).
 * A table without a primary key is compared whole: count and an md5 of its
 * rows in text order.
 */
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "verify/verify.h"

#define KEY_COLS_MAX 32

struct side {
    PGconn *pq;
    const char *name;
};

struct table_walk {
    struct verify_run *run;
    struct side *p, *s;
    struct verify_table *t;
    char rel[300];                 /* the quoted, qualified name */
    int nkeys;
    char keycols[1024];            /* "a", "b" (quoted, comma-separated) */
    char keytext[1200];            /* a::text, b::text */
    char *last[KEY_COLS_MAX];      /* the last chunk's end (NULL: from the start) */
};

static int
fail(struct verify_run *run, const struct side *sd, const char *what)
{
    snprintf(run->error, sizeof(run->error), "%s: %s: %s", sd->name, what,
             PQerrorMessage(sd->pq));
    run->error[strcspn(run->error, "\n")] = '\0';
    return -1;
}

#define CANCEL_POLL_MS 100 /* how late a cancel is noticed while a query runs */

/*
 * The result of the query just sent, waiting in slices so a cancel is
 * noticed: then the server is asked to cancel it (PQcancel, from this
 * thread) and its result, an error, drained.
 */
static PGresult *
await_result(struct verify_run *run, struct side *sd)
{
    int asked = 0;
    while (PQisBusy(sd->pq)) {
        if (!asked && verify_cancelled(run)) {
            PGcancel *c = PQgetCancel(sd->pq);
            char why[128];
            if (c) {
                PQcancel(c, why, sizeof(why));
                PQfreeCancel(c);
            }
            asked = 1;
        }
        struct pollfd pfd = {.fd = PQsocket(sd->pq), .events = POLLIN};
        if (pfd.fd < 0 || (poll(&pfd, 1, CANCEL_POLL_MS) > 0 && !PQconsumeInput(sd->pq)))
            break;
    }
    PGresult *r = PQgetResult(sd->pq), *more;
    while ((more = PQgetResult(sd->pq)) != NULL)
        PQclear(more);
    return r;
}

/* One query with text parameters; NULL (run->error set) unless it returned rows or ran. */
static PGresult *
query(struct verify_run *run, struct side *sd, const char *sql, int n, const char *const *params)
{
    if (verify_cancelled(run))
        return NULL;
    PGresult *r = PQsendQueryParams(sd->pq, sql, n, NULL, params, NULL, NULL, 0)
                      ? await_result(run, sd)
                      : NULL;
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK) {
        if (!verify_cancelled(run)) {
            snprintf(run->error, sizeof(run->error), "%s: %s", sd->name,
                     r ? PQresultErrorMessage(r) : PQerrorMessage(sd->pq));
            run->error[strcspn(run->error, "\n")] = '\0';
        }
        PQclear(r);
        return NULL;
    }
    return r;
}

/* "(a, b) > ($1, $2)" / "<= ($3, $4)" from parameter first. */
static void
key_cmp(const struct table_walk *w, const char *op, int first, char *out, size_t cap)
{
    size_t n = (size_t)snprintf(out, cap, "(%s) %s (", w->keycols, op);
    for (int i = 0; i < w->nkeys && n < cap; i++)
        n += (size_t)snprintf(out + n, cap - n, "%s$%d", i ? ", " : "", first + i);
    if (n < cap)
        snprintf(out + n, cap - n, ")");
}

static void
key_join(PGresult *r, int row, int ncols, char *out, size_t cap)
{
    size_t n = 0;
    out[0] = '\0';
    for (int c = 0; c < ncols && n < cap; c++)
        n += (size_t)snprintf(out + n, cap - n, "%s%s", c ? "," : "",
                              PQgetisnull(r, row, c) ? "NULL" : PQgetvalue(r, row, c));
}

/* ------------------------------------------------------------------ */
/* A chunk's rows, compared one by one.                                */

struct row {
    char *key;    /* joined key text */
    char **vals;  /* the key's values, for the re-check */
    char md5[33];
};

static int
row_cmp(const void *a, const void *b)
{
    return strcmp(((const struct row *)a)->key, ((const struct row *)b)->key);
}

static void
rows_free(struct row *rows, int n, int nkeys)
{
    for (int i = 0; i < n; i++) {
        free(rows[i].key);
        for (int k = 0; k < nkeys; k++)
            free(rows[i].vals[k]);
        free(rows[i].vals);
    }
    free(rows);
}

/* The chunk's rows of one side as (key, md5), sorted by key text. */
static struct row *
fetch_rows(struct table_walk *w, struct side *sd, const char *where, int n,
           const char *const *params, int *nrows)
{
    char sql[4096], key[1024];
    snprintf(sql, sizeof(sql), "SELECT %s, md5(t::text) FROM %s t%s%s", w->keytext, w->rel,
             where[0] ? " WHERE " : "", where);
    PGresult *r = query(w->run, sd, sql, n, params);
    if (r == NULL)
        return NULL;
    int count = PQntuples(r);
    struct row *rows = calloc((size_t)count + 1, sizeof(*rows));
    for (int i = 0; rows && i < count; i++) {
        key_join(r, i, w->nkeys, key, sizeof(key));
        rows[i].key = strdup(key);
        rows[i].vals = calloc((size_t)w->nkeys, sizeof(char *));
        for (int k = 0; rows[i].vals && k < w->nkeys; k++)
            rows[i].vals[k] = PQgetisnull(r, i, k) ? NULL : strdup(PQgetvalue(r, i, k));
        snprintf(rows[i].md5, sizeof(rows[i].md5), "%s", PQgetvalue(r, i, w->nkeys));
    }
    PQclear(r);
    if (rows)
        qsort(rows, (size_t)count, sizeof(*rows), row_cmp);
    *nrows = count;
    return rows;
}

#define RECHECKS 5

/*
 * Is the row (its key values) still different?  Both sides are asked again,
 * RECHECKS times over --settle: 0 as soon as they agree; 1 when they never
 * did (kind says how); 2 when they never did but the primary's own row
 * changed meanwhile (in flight under live writes: unsettled).
 */
static int
still_differs(struct table_walk *w, char *const *vals, enum verify_diff_kind *kind)
{
    char where[1400], sql[4096], first[34] = "";
    int moved = 0;
    struct side *sides[2] = {w->p, w->s};

    key_cmp(w, "=", 1, where, sizeof(where));
    snprintf(sql, sizeof(sql), "SELECT md5(t::text) FROM %s t WHERE %s", w->rel, where);
    for (int attempt = 0; attempt < RECHECKS; attempt++) {
        char hash[2][34] = {"-", "-"}; /* "-": no such row */
        if (attempt > 0)
            verify_sleep_ms(w->run, w->run->opts->settle_ms / RECHECKS);
        for (int i = 0; i < 2; i++) {
            PGresult *r = query(w->run, sides[i], sql, w->nkeys, (const char *const *)vals);
            if (r == NULL)
                return 1; /* cannot tell: keep it */
            if (PQntuples(r) > 0)
                snprintf(hash[i], sizeof(hash[i]), "%s", PQgetvalue(r, 0, 0));
            PQclear(r);
        }
        if (strcmp(hash[0], hash[1]) == 0)
            return 0;
        if (attempt == 0)
            snprintf(first, sizeof(first), "%s", hash[0]);
        else if (strcmp(first, hash[0]) != 0)
            moved = 1;
        *kind = strcmp(hash[1], "-") == 0   ? VERIFY_MISSING_ON_SHADOW
                : strcmp(hash[0], "-") == 0 ? VERIFY_MISSING_ON_PRIMARY
                                            : VERIFY_CHANGED;
    }
    return moved ? 2 : 1;
}

/* A pending difference, looked at again at the table's end. */
struct pending {
    char **vals;
    char *key;
};

struct pendings {
    struct pending *v;
    size_t n, cap;
};

static void
pending_add(struct pendings *pd, const struct row *r, int nkeys)
{
    if (pd->n == pd->cap) {
        size_t cap = pd->cap ? 2 * pd->cap : 64;
        struct pending *v = realloc(pd->v, cap * sizeof(*v));
        if (v == NULL)
            return;
        pd->v = v;
        pd->cap = cap;
    }
    struct pending *p = &pd->v[pd->n++];
    p->key = strdup(r->key);
    p->vals = calloc((size_t)nkeys, sizeof(char *));
    for (int k = 0; p->vals && k < nkeys; k++)
        p->vals[k] = r->vals[k] ? strdup(r->vals[k]) : NULL;
}

/* Compare two sorted row lists: every difference becomes pending. */
static void
diff_rows(struct row *a, int na, struct row *b, int nb, struct pendings *pd, int nkeys)
{
    int i = 0, j = 0;
    while (i < na || j < nb) {
        int c = i == na ? 1 : j == nb ? -1 : strcmp(a[i].key, b[j].key);
        if (c < 0) {
            pending_add(pd, &a[i++], nkeys);
        } else if (c > 0) {
            pending_add(pd, &b[j++], nkeys);
        } else {
            if (strcmp(a[i].md5, b[j].md5) != 0)
                pending_add(pd, &a[i], nkeys);
            i++;
            j++;
        }
    }
}

/* ------------------------------------------------------------------ */
/* A table.                                                            */

static int
table_keys(struct table_walk *w, const char *oid)
{
    const char *params[1] = {oid};
    PGresult *r = query(w->run, w->p,
                        "SELECT quote_ident(a.attname) FROM pg_index i JOIN pg_attribute a "
                        "ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
                        "WHERE i.indrelid = $1::oid AND i.indisprimary "
                        "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                        1, params);
    if (r == NULL)
        return -1;
    size_t n = 0, m = 0;
    w->nkeys = PQntuples(r) < KEY_COLS_MAX ? PQntuples(r) : 0;
    w->keycols[0] = w->keytext[0] = '\0';
    for (int i = 0; i < w->nkeys; i++) {
        const char *c = PQgetvalue(r, i, 0);
        n += (size_t)snprintf(w->keycols + n, sizeof(w->keycols) - n, "%s%s", i ? ", " : "", c);
        m += (size_t)snprintf(w->keytext + m, sizeof(w->keytext) - m, "%s%s::text",
                              i ? ", " : "", c);
    }
    PQclear(r);
    return 0;
}

/* Count and md5 of the rows matching where (or all), in order. */
static int
chunk_hash(struct table_walk *w, struct side *sd, const char *where, int n,
           const char *const *params, const char *order, char *out, size_t cap)
{
    char sql[4096];
    snprintf(sql, sizeof(sql),
             "SELECT count(*), coalesce(md5(string_agg(t::text, '|' ORDER BY %s)), '') FROM %s "
             "t%s%s",
             order, w->rel, where[0] ? " WHERE " : "", where);
    PGresult *r = query(w->run, sd, sql, n, params);
    if (r == NULL)
        return -1;
    snprintf(out, cap, "%s %s", PQgetvalue(r, 0, 0), PQgetvalue(r, 0, 1));
    PQclear(r);
    return 0;
}

static int
walk_unkeyed(struct table_walk *w)
{
    char hp[80], hs[80];
    w->t->chunks = w->t->chunks_checked = 1;
    if (chunk_hash(w, w->p, "", 0, NULL, "t::text", hp, sizeof(hp)) != 0 ||
        chunk_hash(w, w->s, "", 0, NULL, "t::text", hs, sizeof(hs)) != 0)
        return -1;
    w->t->rows_checked = strtoull(hp, NULL, 10);
    w->run->rows_checked += w->t->rows_checked;
    if (strcmp(hp, hs) != 0 && w->run->opts->settle_ms > 0) {
        verify_sleep_ms(w->run, w->run->opts->settle_ms);
        if (chunk_hash(w, w->p, "", 0, NULL, "t::text", hp, sizeof(hp)) != 0 ||
            chunk_hash(w, w->s, "", 0, NULL, "t::text", hs, sizeof(hs)) != 0)
            return -1;
    }
    w->t->whole_differs = strcmp(hp, hs) != 0;
    return 0;
}

/*
 * "(a, b) > ($1, $2)" after the last chunk's end, or "" from the start; its
 * parameters appended to params at *np.
 */
static void
after_last(const struct table_walk *w, int first, char *out, size_t cap, const char **params,
           int *np)
{
    out[0] = '\0';
    if (first)
        return;
    key_cmp(w, ">", *np + 1, out, cap);
    for (int k = 0; k < w->nkeys; k++)
        params[(*np)++] = w->last[k];
}

/* The primary's key CHUNK rows on from the last chunk (end[], strdup'ed): 1, 0 none left, -1. */
static int
chunk_end(struct table_walk *w, int first, const char *chunk, char **end)
{
    char lo[1400], desc[1200], sql[4096];
    const char *params[KEY_COLS_MAX + 1];
    int np = 0;
    size_t dn = 0;

    after_last(w, first, lo, sizeof(lo), params, &np);
    params[np] = chunk;
    /* the last of the next CHUNK keys: each key column descending */
    for (const char *c = w->keycols; *c && dn + 8 < sizeof(desc);) {
        const char *comma = strstr(c, ", ");
        size_t len = comma ? (size_t)(comma - c) : strlen(c);
        /* s.: the column, not the output's text of it (same name) */
        dn += (size_t)snprintf(desc + dn, sizeof(desc) - dn, "%ss.%.*s DESC", dn ? ", " : "",
                               (int)len, c);
        c += len + (comma ? 2 : 0);
    }
    snprintf(sql, sizeof(sql),
             "SELECT %s FROM (SELECT %s FROM %s%s%s ORDER BY %s LIMIT $%d) s ORDER BY %s LIMIT 1",
             w->keytext, w->keycols, w->rel, first ? "" : " WHERE ", lo, w->keycols, np + 1,
             desc);
    PGresult *r = query(w->run, w->p, sql, np + 1, params);
    if (r == NULL)
        return -1;
    int found = PQntuples(r) > 0;
    for (int k = 0; found && k < w->nkeys; k++)
        end[k] = strdup(PQgetvalue(r, 0, k));
    PQclear(r);
    return found;
}

/* Rows of a range on both sides, compared one by one: the differences pending. */
static int
diff_range(struct table_walk *w, const char *where, int np, const char *const *params,
           struct pendings *pd)
{
    int na = 0, nb = 0, rc = 0;
    struct row *a = fetch_rows(w, w->p, where, np, params, &na);
    struct row *b = a ? fetch_rows(w, w->s, where, np, params, &nb) : NULL;
    if (a && b)
        diff_rows(a, na, b, nb, pd, w->nkeys);
    else
        rc = -1;
    if (a)
        rows_free(a, na, w->nkeys);
    if (b)
        rows_free(b, nb, w->nkeys);
    return rc;
}

/* The range (last, end] hashed on both sides; row by row when they differ. */
static int
check_chunk(struct table_walk *w, int first, char *const *end, struct pendings *pd)
{
    char where[2800], lo[1400], hi[1400], hp[80], hs[80];
    const char *params[2 * KEY_COLS_MAX];
    int np = 0;

    after_last(w, first, lo, sizeof(lo), params, &np);
    key_cmp(w, "<=", np + 1, hi, sizeof(hi));
    for (int k = 0; k < w->nkeys; k++)
        params[np++] = end[k];
    snprintf(where, sizeof(where), "%s%s%s", lo, first ? "" : " AND ", hi);
    w->t->chunks_checked++;
    if (chunk_hash(w, w->p, where, np, params, w->keycols, hp, sizeof(hp)) != 0 ||
        chunk_hash(w, w->s, where, np, params, w->keycols, hs, sizeof(hs)) != 0)
        return -1;
    uint64_t rows = strtoull(hp, NULL, 10);
    w->t->rows_checked += rows;
    w->run->rows_checked += rows;
    return strcmp(hp, hs) == 0 ? 0 : diff_range(w, where, np, params, pd);
}

/* The shadow's rows past the primary's last key (all of them when the primary has none). */
static int
check_tail(struct table_walk *w, int first, struct pendings *pd)
{
    char where[1400];
    const char *params[KEY_COLS_MAX];
    int np = 0, nb = 0;

    after_last(w, first, where, sizeof(where), params, &np);
    struct row *b = fetch_rows(w, w->s, where, np, params, &nb);
    if (b == NULL)
        return -1;
    diff_rows(NULL, 0, b, nb, pd, w->nkeys);
    rows_free(b, nb, w->nkeys);
    return 0;
}

/* Each pending difference once more, while the shadow has time to catch up; then freed. */
static void
settle_pending(struct table_walk *w, struct pendings *pd, int ask)
{
    for (size_t i = 0; i < pd->n; i++) {
        enum verify_diff_kind kind = VERIFY_CHANGED;
        int d = ask && pd->v[i].vals ? still_differs(w, pd->v[i].vals, &kind) : 0;
        if (d == 1)
            verify_diff_note(w->t, kind, pd->v[i].key);
        else if (d == 2)
            w->t->unsettled++;
        for (int k = 0; pd->v[i].vals && k < w->nkeys; k++)
            free(pd->v[i].vals[k]);
        free(pd->v[i].vals);
        free(pd->v[i].key);
    }
    free(pd->v);
}

static int
walk_keyed(struct table_walk *w, uint64_t start_ns)
{
    const struct verify_opts *o = w->run->opts;
    struct pendings pd = {0};
    char chunk[32];
    int first = 1, rc = 0;

    snprintf(chunk, sizeof(chunk), "%llu", (unsigned long long)o->chunk);
    while (rc == 0) {
        char *end[KEY_COLS_MAX];
        int found = chunk_end(w, first, chunk, end);
        if (found <= 0) {
            rc = found;
            break;
        }
        w->t->chunks++;
        if (verify_sampled(o))
            rc = check_chunk(w, first, end, &pd);
        for (int k = 0; k < w->nkeys; k++) {
            free(w->last[k]);
            w->last[k] = end[k];
        }
        first = 0;
        verify_progress(w->run, w->t->name, w->t->rows_checked);
        verify_pace(w->run, w->run->rows_checked, start_ns);
        if (verify_cancelled(w->run))
            rc = -1;
    }
    if (rc == 0)
        rc = check_tail(w, first, &pd);
    settle_pending(w, &pd, rc == 0);
    for (int k = 0; k < w->nkeys; k++) {
        free(w->last[k]);
        w->last[k] = NULL;
    }
    return rc;
}

int
verify_pg_with(struct verify_run *run, PGconn *primary, PGconn *shadow)
{
    const struct verify_opts *o = run->opts;
    struct side p = {.pq = primary, .name = "primary"}, s = {.pq = shadow, .name = "shadow"};
    int rc = 0;
    uint64_t start = verify_now_ns();

    PGresult *tables = query(run, &p,
                             "SELECT c.oid::text, n.nspname, c.relname, "
                             "quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
                             "greatest(c.reltuples, 0)::bigint "
                             "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                             "WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' "
                             "AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 2, 3",
                             0, NULL);
    if (tables == NULL)
        return -1;
    char *picked = calloc((size_t)PQntuples(tables) + 1, 1);
    if (picked == NULL) {
        snprintf(run->error, sizeof(run->error), "out of memory");
        PQclear(tables);
        return -1;
    }
    for (int i = 0; i < PQntuples(tables); i++) {
        char qualified[300];
        const char *nsp = PQgetvalue(tables, i, 1), *rel = PQgetvalue(tables, i, 2);
        snprintf(qualified, sizeof(qualified), "%s.%s", nsp, rel);
        if ((picked[i] = (char)verify_selected(o, rel, qualified))) {
            run->tables_total++;
            run->rows_estimate += strtoull(PQgetvalue(tables, i, 4), NULL, 10);
        }
    }
    verify_progress(run, "tables", 0);
    for (int i = 0; rc == 0 && i < PQntuples(tables); i++) {
        char qualified[300];
        const char *nsp = PQgetvalue(tables, i, 1), *rel = PQgetvalue(tables, i, 2);
        snprintf(qualified, sizeof(qualified), "%s.%s", nsp, rel);
        if (!picked[i])
            continue;
        struct table_walk w = {.run = run, .p = &p, .s = &s};
        snprintf(w.rel, sizeof(w.rel), "%s", PQgetvalue(tables, i, 3));
        if ((w.t = verify_table_add(run, strcmp(nsp, "public") == 0 ? rel : qualified)) == NULL) {
            snprintf(run->error, sizeof(run->error), "out of memory");
            rc = -1;
            break;
        }
        if (table_keys(&w, PQgetvalue(tables, i, 0)) != 0) {
            rc = -1;
            break;
        }
        w.t->has_key = w.nkeys > 0;
        rc = w.nkeys > 0 ? walk_keyed(&w, start) : walk_unkeyed(&w);
        if (rc == 0) {
            run->tables_done++;
            verify_progress(run, w.t->name, w.t->rows_checked);
        }
    }
    free(picked);
    PQclear(tables);
    return rc;
}

int
verify_pg(struct verify_run *run)
{
    const struct verify_opts *o = run->opts;
    struct side p = {.name = "primary"}, s = {.name = "shadow"};
    int rc = 0;

    p.pq = PQconnectdb(o->primary);
    s.pq = PQconnectdb(o->shadow);
    if (PQstatus(p.pq) != CONNECTION_OK)
        rc = fail(run, &p, "connect");
    else if (PQstatus(s.pq) != CONNECTION_OK)
        rc = fail(run, &s, "connect");
    if (rc == 0)
        rc = verify_pg_with(run, p.pq, s.pq);
    PQfinish(p.pq);
    PQfinish(s.pq);
    return rc;
}
