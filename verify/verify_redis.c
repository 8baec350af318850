/*
 * verify_redis.c - tandem verify for Redis (verify.h).
 *
 * SCAN of the primary's keyspace (COUNT --chunk); for each key picked by
 * --sample-rate, on both sides: its type, a digest of its value (read by
 * type: GET, HGETALL and SMEMBERS sorted, ZRANGE WITHSCORES, LRANGE,
 * XRANGE; other types by type alone) and its TTL (equal within
 * --ttl-tolerance).  Then a SCAN of the shadow for keys the primary lacks.
 * A differing key is looked at again after --settle.  Blocking (redis_link.h):
 * this is a command, not the proxy.
 */
#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>

#include "verify/redis_link.h"
#include "verify/verify.h"

struct side {
    struct redis_link *c;
    const char *name;
};

/* redis://[[USER]:PASSWORD@]HOST:PORT[/DB]: connected, logged in, the db selected. */
static int
side_open(struct verify_run *run, struct side *sd, const char *url)
{
    char host[256] = "", user[128] = "", pass[256] = "", rest[600];
    int port = 6379, db = 0;

    snprintf(rest, sizeof(rest), "%s", url + strlen("redis://"));
    char *at = strrchr(rest, '@'), *hp = rest;
    if (at != NULL) {
        *at = '\0';
        char *colon = strchr(rest, ':');
        if (colon) {
            *colon = '\0';
            snprintf(pass, sizeof(pass), "%s", colon + 1);
        }
        snprintf(user, sizeof(user), "%s", rest);
        hp = at + 1;
    }
    char *slash = strchr(hp, '/');
    if (slash) {
        db = atoi(slash + 1);
        *slash = '\0';
    }
    char *colon = strrchr(hp, ':');
    if (colon) {
        port = atoi(colon + 1);
        *colon = '\0';
    }
    snprintf(host, sizeof(host), "%s", hp);
    struct conf_login login = {.sslmode = "disable"};
    snprintf(login.name, sizeof(login.name), "%s", sd->name);
    snprintf(login.host, sizeof(login.host), "%s", host);
    snprintf(login.hostaddr, sizeof(login.hostaddr), "%s", host);
    snprintf(login.port, sizeof(login.port), "%d", port);
    sd->c = redis_link_open(&login, 10000, run->error, sizeof(run->error));
    if (sd->c == NULL)
        return -1;
    char why[300];
    if (verify_redis_login(sd->c, user, pass, db, why, sizeof(why)) != 0) {
        snprintf(run->error, sizeof(run->error), "%s: %s", sd->name, why);
        return -1;
    }
    return 0;
}

int
verify_redis_login(struct redis_link *c, const char *user, const char *password, int db, char *err,
                   size_t errlen)
{
    redisReply *r = NULL;
    if (password && password[0]) {
        r = user && user[0] ? redis_link_command(c, "AUTH %s %s", user, password)
                            : redis_link_command(c, "AUTH %s", password);
        int bad = r == NULL || r->type == REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (bad) {
            snprintf(err, errlen, "AUTH refused"); /* no secret */
            return -1;
        }
    }
    if (db != 0) {
        r = redis_link_command(c, "SELECT %d", db);
        int bad = r == NULL || r->type == REDIS_REPLY_ERROR;
        freeReplyObject(r);
        if (bad) {
            snprintf(err, errlen, "SELECT %d refused", db);
            return -1;
        }
    }
    return 0;
}

/* A set's members, or a hash's (field, value) pairs, in any order: a sum of their hashes. */
static uint64_t
unordered_digest(const redisReply *r, size_t group)
{
    uint64_t sum = (uint64_t)r->elements;
    for (size_t i = 0; i + group <= r->elements; i += group) {
        uint64_t h = 0;
        for (size_t k = 0; k < group; k++) {
            const redisReply *e = r->element[i + k];
            h = XXH3_64bits_withSeed(e->str, e->len, h + e->len);
        }
        sum += h;
    }
    return sum;
}

static void
digest_reply(XXH3_state_t *d, const redisReply *r)
{
    uint32_t type = (uint32_t)r->type;
    XXH3_64bits_update(d, &type, sizeof(type));
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
        XXH3_64bits_update(d, &r->len, sizeof(r->len));
        XXH3_64bits_update(d, r->str, r->len);
        break;
    case REDIS_REPLY_INTEGER:
        XXH3_64bits_update(d, &r->integer, sizeof(r->integer));
        break;
    case REDIS_REPLY_ARRAY: /* RESP2: Debian 12's hiredis speaks no RESP3 */
        XXH3_64bits_update(d, &r->elements, sizeof(r->elements));
        for (size_t i = 0; i < r->elements; i++)
            digest_reply(d, r->element[i]);
        break;
    default:
        break;
    }
}

/*
 * One key of one side: its type, value digest and TTL (ms; -1 none, -2
 * missing).  0, or -1 on a connection error.
 */
static int
key_state(struct side *sd, const char *key, size_t klen, char *type, size_t tcap,
          uint64_t *digest, long long *pttl)
{
    redisReply *r = redis_link_command(sd->c, "TYPE %b", key, klen);
    if (r == NULL)
        return -1;
    snprintf(type, tcap, "%s", r->type == REDIS_REPLY_STATUS ? r->str : "?");
    freeReplyObject(r);
    *digest = 0;
    *pttl = -2;
    if (strcmp(type, "none") == 0)
        return 0;
    const char *fmt = strcmp(type, "string") == 0 ? "GET %b"
                      : strcmp(type, "hash") == 0 ? "HGETALL %b"
                      : strcmp(type, "set") == 0  ? "SMEMBERS %b"
                      : strcmp(type, "zset") == 0 ? "ZRANGE %b 0 -1 WITHSCORES"
                      : strcmp(type, "list") == 0 ? "LRANGE %b 0 -1"
                      : strcmp(type, "stream") == 0 ? "XRANGE %b - +"
                                                    : NULL;
    if (fmt != NULL) {
        r = redis_link_command(sd->c, fmt, key, klen);
        if (r == NULL)
            return -1;
        int set = strcmp(type, "set") == 0, hash = strcmp(type, "hash") == 0;
        if (r->type == REDIS_REPLY_ARRAY && (set || hash)) {
            *digest = unordered_digest(r, hash ? 2 : 1);
            freeReplyObject(r);
            goto ttl;
        }
        XXH3_state_t *d = XXH3_createState();
        if (d) {
            XXH3_64bits_reset(d);
            digest_reply(d, r);
            *digest = XXH3_64bits_digest(d);
            XXH3_freeState(d);
        }
        freeReplyObject(r);
    }
ttl:
    r = redis_link_command(sd->c, "PTTL %b", key, klen);
    if (r == NULL)
        return -1;
    *pttl = r->type == REDIS_REPLY_INTEGER ? r->integer : -2;
    freeReplyObject(r);
    return 0;
}

/* 1 when the key differs (kind set), 0 when equal, -1 on an error. */
static int
compare_key(struct verify_run *run, struct side *p, struct side *s, const char *key, size_t klen,
            enum verify_diff_kind *kind)
{
    char tp[32], ts[32];
    uint64_t dp, ds;
    long long lp, ls;

    if (key_state(p, key, klen, tp, sizeof(tp), &dp, &lp) != 0 ||
        key_state(s, key, klen, ts, sizeof(ts), &ds, &ls) != 0) {
        snprintf(run->error, sizeof(run->error), "connection lost: %s",
                 redis_link_error(p->c)[0] ? redis_link_error(p->c) : redis_link_error(s->c));
        return -1;
    }
    if (strcmp(tp, "none") == 0 && strcmp(ts, "none") == 0)
        return 0; /* gone from both meanwhile */
    if (strcmp(ts, "none") == 0) {
        *kind = VERIFY_MISSING_ON_SHADOW;
        return 1;
    }
    if (strcmp(tp, "none") == 0) {
        *kind = VERIFY_MISSING_ON_PRIMARY;
        return 1;
    }
    *kind = VERIFY_CHANGED;
    if (strcmp(tp, ts) != 0 || dp != ds)
        return 1;
    long long tol = (long long)run->opts->ttl_tolerance_ms;
    if ((lp < 0) != (ls < 0) || (lp >= 0 && llabs(lp - ls) > tol))
        return 1;
    return 0;
}

struct pending {
    char **keys;
    size_t *lens;
    size_t n, cap;
};

static void
pending_add(struct pending *pd, const char *key, size_t len)
{
    if (pd->n == pd->cap) {
        size_t cap = pd->cap ? 2 * pd->cap : 64;
        char **k = realloc(pd->keys, cap * sizeof(*k));
        size_t *l = k ? realloc(pd->lens, cap * sizeof(*l)) : NULL;
        if (k)
            pd->keys = k;
        if (l == NULL)
            return;
        pd->lens = l;
        pd->cap = cap;
    }
    if ((pd->keys[pd->n] = malloc(len + 1)) == NULL)
        return;
    memcpy(pd->keys[pd->n], key, len);
    pd->keys[pd->n][len] = '\0';
    pd->lens[pd->n++] = len;
}

/* Every key of from's keyspace (sampled): differing ones pending; only_missing: the other lacks it. */
static int
scan_side(struct verify_run *run, struct side *from, struct side *p, struct side *s,
          int only_missing, struct verify_table *t, struct pending *pd, uint64_t start)
{
    const struct verify_opts *o = run->opts;
    char cursor[32] = "0";
    do {
        if (verify_cancelled(run))
            return -1;
        redisReply *r = redis_link_command(from->c, "SCAN %s COUNT %llu", cursor,
                                     (unsigned long long)o->chunk);
        if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
            snprintf(run->error, sizeof(run->error), "%s: SCAN failed", from->name);
            freeReplyObject(r);
            return -1;
        }
        snprintf(cursor, sizeof(cursor), "%s", r->element[0]->str);
        redisReply *keys = r->element[1];
        if (!only_missing)
            t->chunks++;
        for (size_t i = 0; i < keys->elements; i++) {
            const char *k = keys->element[i]->str;
            size_t len = keys->element[i]->len;
            if (!verify_selected(o, k, NULL))
                continue;
            enum verify_diff_kind kind;
            if (only_missing) {
                redisReply *e = redis_link_command(p->c, "EXISTS %b", k, len);
                int missing = e && e->type == REDIS_REPLY_INTEGER && e->integer == 0;
                freeReplyObject(e);
                if (missing)
                    pending_add(pd, k, len);
                continue;
            }
            if (!verify_sampled(o))
                continue;
            t->rows_checked++;
            run->rows_checked++;
            int d = compare_key(run, p, s, k, len, &kind);
            if (d < 0) {
                freeReplyObject(r);
                return -1;
            }
            if (d > 0)
                pending_add(pd, k, len);
        }
        if (!only_missing)
            t->chunks_checked++;
        freeReplyObject(r);
        verify_progress(run, t->name, t->rows_checked);
        verify_pace(run, t->rows_checked, start);
    } while (strcmp(cursor, "0") != 0);
    return 0;
}

int
verify_redis_with(struct verify_run *run, struct redis_link *primary, struct redis_link *shadow)
{
    const struct verify_opts *o = run->opts;
    struct side p = {.c = primary, .name = "primary"}, s = {.c = shadow, .name = "shadow"};
    struct pending pd = {0};
    uint64_t start = verify_now_ns();
    int rc = 0;

    struct verify_table *t = verify_table_add(run, "keyspace");
    if (t == NULL) {
        snprintf(run->error, sizeof(run->error), "out of memory");
        return -1;
    }
    t->has_key = 1;
    run->tables_total = 1;
    redisReply *size = redis_link_command(p.c, "DBSIZE");
    if (size && size->type == REDIS_REPLY_INTEGER && size->integer > 0)
        run->rows_estimate = (uint64_t)size->integer;
    freeReplyObject(size);
    verify_progress(run, t->name, 0);
    rc = scan_side(run, &p, &p, &s, 0, t, &pd, start);
    if (rc == 0)
        rc = scan_side(run, &s, &p, &s, 1, t, &pd, start);
    if (rc == 0 && pd.n > 0 && o->settle_ms > 0)
        verify_sleep_ms(run, o->settle_ms);
    if (rc == 0 && verify_cancelled(run))
        rc = -1;
    for (size_t i = 0; i < pd.n; i++) {
        enum verify_diff_kind kind;
        if (rc == 0) {
            int d = compare_key(run, &p, &s, pd.keys[i], pd.lens[i], &kind);
            if (d < 0)
                rc = -1;
            else if (d > 0)
                verify_diff_note(t, kind, pd.keys[i]);
        }
        free(pd.keys[i]);
    }
    free(pd.keys);
    free(pd.lens);
    if (rc == 0) {
        run->tables_done = 1;
        verify_progress(run, t->name, t->rows_checked);
    }
    return rc;
}

int
verify_redis(struct verify_run *run)
{
    const struct verify_opts *o = run->opts;
    struct side p = {.name = "primary"}, s = {.name = "shadow"};
    int rc = 0;

    if (side_open(run, &p, o->primary) != 0 || side_open(run, &s, o->shadow) != 0)
        rc = -1;
    if (rc == 0)
        rc = verify_redis_with(run, p.c, s.c);
    redis_link_free(p.c);
    redis_link_free(s.c);
    return rc;
}
