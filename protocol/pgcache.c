/*
 * pgcache.c - LRU cache of pgclass results.
 *
 *   buckets[hash & mask] ─► entry ─chain─► entry ─chain─► NULL
 *
 *   lru: head (most recent) ◄─prev/next─► ... ◄─prev/next─► tail (next victim)
 *
 * Each entry is one allocation holding its text.  The bucket table has a
 * power-of-two size of at least max_entries and never grows.
 */
#include "protocol/lru.h"
#include "protocol/pgcache.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <xxhash.h>

struct pgcache_entry {
    struct pgcache_entry *chain;    /* next in the same bucket */
    struct lru_node lru;           /* its place in the recency list */
    uint64_t hash;
    size_t len;
    int verbatim;                   /* a text equal to this key came: it is its own shape */
    struct pgclass_result res;
    char text[];                    /* len bytes, not NUL-terminated */
};

struct pgcache {
    struct pgcache_entry **buckets;
    size_t mask;
    struct lru lru;                 /* head: most recent; tail: the next victim */
    size_t max_entries;
    size_t max_bytes;               /* 0: no byte bound */
    uint64_t (*hash)(const void *data, size_t len);
    struct pgcache_stats stats;
};

static uint64_t
default_hash(const void *data, size_t len)
{
    return XXH3_64bits(data, len);
}

static size_t
entry_cost(size_t len)
{
    return sizeof(struct pgcache_entry) + len;
}

struct pgcache *
pgcache_new(size_t max_entries, size_t max_bytes)
{
    struct pgcache *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->buckets = lru_buckets(max_entries, sizeof(c->buckets[0]), &c->mask);
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->hash = default_hash;
    return c;
}

void
pgcache_clear(struct pgcache *c)
{
    struct pgcache_entry *e = LRU_ENTRY(c->lru.head, struct pgcache_entry, lru);

    while (e != NULL) {
        struct pgcache_entry *next = LRU_ENTRY(e->lru.next, struct pgcache_entry, lru);
        free(e);
        e = next;
    }
    memset(c->buckets, 0, (c->mask + 1) * sizeof(c->buckets[0]));
    c->lru.head = c->lru.tail = NULL;
    c->stats.entries = 0;
    c->stats.bytes = 0;
}

void
pgcache_free(struct pgcache *c)
{
    if (c == NULL)
        return;
    pgcache_clear(c);
    free(c->buckets);
    free(c);
}

int
pgcache_set_hash(struct pgcache *c, uint64_t (*hash)(const void *data, size_t len))
{
    if (c->stats.entries != 0 || hash == NULL)
        return -1;
    c->hash = hash;
    return 0;
}

/* The slot pointing at the entry for (hash, sql, len), or at the chain's
 * terminating NULL. */
static struct pgcache_entry **
find_slot(struct pgcache *c, uint64_t hash, const char *sql, size_t len)
{
    struct pgcache_entry **slot = &c->buckets[hash & c->mask];

    while (*slot != NULL) {
        struct pgcache_entry *e = *slot;
        if (e->hash == hash && e->len == len && memcmp(e->text, sql, len) == 0)
            break;
        slot = &e->chain;
    }
    return slot;
}

static void
remove_entry(struct pgcache *c, struct pgcache_entry *e)
{
    struct pgcache_entry **slot = &c->buckets[e->hash & c->mask];

    while (*slot != e)
        slot = &(*slot)->chain;
    *slot = e->chain;
    lru_unlink(&c->lru, &e->lru);
    c->stats.entries--;
    c->stats.bytes -= entry_cost(e->len);
    free(e);
}

/* The entry for sql[0..len), or NULL; not counted. */
static struct pgcache_entry *
lookup(struct pgcache *c, const char *sql, size_t len)
{
    if (len > PGCACHE_MAX_TEXT)
        return NULL;
    return *find_slot(c, c->hash(sql, len), sql, len);
}

/* A hit on e: counted, made the most recent, its result copied out. */
static bool
hit(struct pgcache *c, struct pgcache_entry *e, struct pgclass_result *out)
{
    if (e == NULL) {
        c->stats.misses++;
        return false;
    }
    c->stats.hits++;
    lru_touch(&c->lru, &e->lru);
    *out = e->res;
    return true;
}

bool
pgcache_get(struct pgcache *c, const char *sql, size_t len, struct pgclass_result *out)
{
    return hit(c, lookup(c, sql, len), out);
}

/* pgcache_put's work: the entry stored (new or updated), or NULL. */
static struct pgcache_entry *
put(struct pgcache *c, const char *sql, size_t len, const struct pgclass_result *res)
{
    uint64_t hash;
    struct pgcache_entry **slot, *e;
    size_t cost = entry_cost(len);

    if (len > PGCACHE_MAX_TEXT || (c->max_bytes != 0 && cost > c->max_bytes / 8)) {
        c->stats.skipped++;
        return NULL;
    }
    hash = c->hash(sql, len);
    slot = find_slot(c, hash, sql, len);
    if (*slot != NULL) {
        e = *slot;
        e->res = *res;
        lru_touch(&c->lru, &e->lru);
        return e;
    }

    while (c->lru.tail != NULL &&
           (c->stats.entries + 1 > c->max_entries ||
            (c->max_bytes != 0 && c->stats.bytes + cost > c->max_bytes))) {
        remove_entry(c, LRU_ENTRY(c->lru.tail, struct pgcache_entry, lru));
        c->stats.evictions++;
    }

    e = malloc(cost);
    if (e == NULL)
        return NULL;
    e->hash = hash;
    e->len = len;
    e->verbatim = 0;
    e->res = *res;
    memcpy(e->text, sql, len);
    /* eviction may have emptied the chain slot pointed into: look again */
    slot = &c->buckets[hash & c->mask];
    e->chain = *slot;
    *slot = e;
    lru_push_head(&c->lru, &e->lru);
    c->stats.entries++;
    c->stats.bytes += cost;
    return e;
}

int
pgcache_put(struct pgcache *c, const char *sql, size_t len, const struct pgclass_result *res)
{
    return put(c, sql, len, res) != NULL ? 0 : -1;
}

static int
ident_char(unsigned char ch)
{
    return ch == '_' || ch == '$' || (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') ||
           (ch >= 'A' && ch <= 'Z') || ch >= 0x80;
}

/* "explain" anywhere, any case: those texts keep their literals (see the header). */
static int
mentions_explain(const char *sql, size_t len)
{
    for (size_t i = 0; i + 7 <= len; i++)
        if ((sql[i] | 0x20) == 'e' && strncasecmp(sql + i, "explain", 7) == 0)
            return 1;
    return 0;
}

/* End of a '...' literal starting at i (the quote); backslash escapes when e. */
static size_t
skip_quoted(const char *s, size_t len, size_t i, int e)
{
    for (i++; i < len; i++) {
        if (e && s[i] == '\\' && i + 1 < len) {
            i++;
        } else if (s[i] == '\'') {
            if (i + 1 < len && s[i + 1] == '\'')
                i++; /* '' is a quote inside the literal */
            else
                return i + 1;
        }
    }
    return len;
}

size_t
pgcache_shape(const char *sql, size_t len, char *out, size_t cap)
{
    size_t i = 0, n = 0;

#define PUT(ch)                                                                                    \
    do {                                                                                           \
        if (n + 1 >= cap)                                                                          \
            return (size_t)-1;                                                                     \
        out[n++] = (ch);                                                                           \
    } while (0)

    if (mentions_explain(sql, len)) {
        if (len + 1 > cap)
            return (size_t)-1;
        memcpy(out, sql, len);
        out[len] = '\0';
        return len;
    }
    while (i < len) {
        unsigned char ch = (unsigned char)sql[i];
        int prev_ident = i > 0 && ident_char((unsigned char)sql[i - 1]);

        if (ch == '-' && i + 1 < len && sql[i + 1] == '-') { /* line comment: kept */
            while (i < len && sql[i] != '\n')
                PUT(sql[i++]);
        } else if (ch == '/' && i + 1 < len && sql[i + 1] == '*') { /* block comment: kept */
            int depth = 0;
            do {
                if (sql[i] == '/' && i + 1 < len && sql[i + 1] == '*') {
                    depth++;
                    PUT(sql[i++]);
                } else if (sql[i] == '*' && i + 1 < len && sql[i + 1] == '/') {
                    depth--;
                    PUT(sql[i++]);
                }
                PUT(sql[i++]);
            } while (i < len && depth > 0);
        } else if (ch == '"') { /* quoted identifier: kept */
            PUT(sql[i++]);
            while (i < len) {
                char q = sql[i++];
                PUT(q);
                if (q == '"') {
                    if (i < len && sql[i] == '"')
                        PUT(sql[i++]);
                    else
                        break;
                }
            }
        } else if (ch == '\'' || (!prev_ident && i + 1 < len && sql[i + 1] == '\'' &&
                                  strchr("eEbBxXnN", ch) != NULL)) {
            int e = ch == 'e' || ch == 'E';
            i = skip_quoted(sql, len, ch == '\'' ? i : i + 1, e);
            PUT('?');
        } else if (ch == '$' && !prev_ident) {
            /* $1 is a parameter (kept); $tag$...$tag$ is a string (replaced) */
            size_t j = i + 1;
            while (j < len && sql[j] != '$' && ident_char((unsigned char)sql[j]) &&
                   !(j == i + 1 && sql[j] >= '0' && sql[j] <= '9'))
                j++;
            if (j < len && sql[j] == '$') {
                size_t taglen = j - i + 1;
                const char *end = NULL;
                for (size_t k = j + 1; k + taglen <= len; k++)
                    if (memcmp(sql + k, sql + i, taglen) == 0) {
                        end = sql + k;
                        break;
                    }
                i = end ? (size_t)(end - sql) + taglen : len;
                PUT('?');
            } else {
                PUT(sql[i++]);
                while (i < len && sql[i] >= '0' && sql[i] <= '9')
                    PUT(sql[i++]);
            }
        } else if (!prev_ident && ((ch >= '0' && ch <= '9') ||
                                   (ch == '.' && i + 1 < len && sql[i + 1] >= '0' &&
                                    sql[i + 1] <= '9'))) {
            /* a number: digits, one dot, an exponent */
            while (i < len && ((sql[i] >= '0' && sql[i] <= '9') || sql[i] == '.' ||
                               sql[i] == '_' || ((sql[i] == 'e' || sql[i] == 'E') &&
                                                 i + 1 < len &&
                                                 ((sql[i + 1] >= '0' && sql[i + 1] <= '9') ||
                                                  sql[i + 1] == '+' || sql[i + 1] == '-'))))
                i += (sql[i] == 'e' || sql[i] == 'E') ? 2 : 1;
            PUT('?');
        } else {
            PUT(sql[i++]);
        }
    }
#undef PUT
    out[n] = '\0';
    return n;
}

void
pgcache_classify(struct pgcache *c, const char *sql, const struct pgclass_opts *opts,
                 struct pgclass_result *out)
{
    char stack[2048];
    size_t len = strlen(sql);
    struct pgcache_entry *e = lookup(c, sql, len);

    /*
     * A text without literals (parameters instead: the extended protocol's
     * usual case) is its own shape: found as it came, the shaping (the
     * costliest step of a hit) is skipped.  Only an entry whose key some
     * text equal to it already showed to be its own shape answers so.
     */
    if (e != NULL && e->verbatim) {
        hit(c, e, out);
        return;
    }
    /* shape into a stack buffer: typical statements fit; longer ones key by text */
    size_t klen = pgcache_shape(sql, len, stack, sizeof(stack));
    const char *key = klen == (size_t)-1 ? sql : stack;

    if (klen == (size_t)-1)
        klen = len;
    int verbatim = key == sql || (klen == len && memcmp(key, sql, len) == 0);
    e = lookup(c, key, klen);
    if (!hit(c, e, out)) {
        pgclass_classify(sql, opts, out);
        /* too long to parse is also too long to cache: nothing to do */
        e = put(c, key, klen, out);
    }
    if (e != NULL && verbatim)
        e->verbatim = 1;
}

void
pgcache_get_stats(const struct pgcache *c, struct pgcache_stats *out)
{
    *out = c->stats;
}
