/*
 * pgdesc.c - per-worker cache of statement descriptions (see pgdesc.h).
 *
 *   buckets[hash.low64 & mask] ─► entry ─chain─► entry ─chain─► NULL
 *
 *   lru: head (most recent) ◄─prev/next─► ... ◄─prev/next─► tail (next victim)
 *
 * Each entry is one allocation holding its normalized text.  The bucket
 * table has a power-of-two size of at least max_entries and never grows.
 */
#include "protocol/lru.h"
#include "protocol/pgdesc.h"

#include <stdlib.h>
#include <string.h>

#include <xxhash.h>

#include "protocol/pgcache.h"

struct pgdesc_entry {
    struct pgdesc_entry *chain; /* next in the same bucket */
    struct lru_node lru;           /* its place in the recency list */
    XXH128_hash_t hash;         /* of the key text (shape, or the text itself) */
    size_t klen;                /* the key text's length */
    int verbatim;               /* a text equal to the key came: it is its own shape */
    uint64_t fingerprint;
    char text[];                /* normalized, NUL-terminated */
};

struct pgdesc {
    struct pgdesc_entry **buckets;
    size_t mask;
    struct lru lru;                 /* head: most recent; tail: the next victim */
    size_t max_entries;
    size_t max_bytes; /* 0: no byte bound */
    unsigned per_sec;
    uint64_t budget_sec; /* the second the budget is counted for */
    unsigned budget_used;
    struct pgdesc_stats stats;
    /* the last description, when it could not be cached (out->text) */
    struct pgclass_desc scratch;
};

static size_t
entry_cost(size_t textlen)
{
    return sizeof(struct pgdesc_entry) + textlen + 1;
}

struct pgdesc *
pgdesc_new(size_t max_entries, size_t max_bytes, unsigned describes_per_sec)
{
    if (describes_per_sec == 0)
        return NULL;
    struct pgdesc *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->buckets = lru_buckets(max_entries, sizeof(c->buckets[0]), &c->mask);
    if (c->buckets == NULL) {
        free(c);
        return NULL;
    }
    c->max_entries = max_entries;
    c->max_bytes = max_bytes;
    c->per_sec = describes_per_sec;
    c->budget_sec = UINT64_MAX;
    return c;
}

void
pgdesc_free(struct pgdesc *c)
{
    struct pgdesc_entry *e;

    if (c == NULL)
        return;
    e = LRU_ENTRY(c->lru.head, struct pgdesc_entry, lru);
    while (e != NULL) {
        struct pgdesc_entry *next = LRU_ENTRY(e->lru.next, struct pgdesc_entry, lru);
        free(e);
        e = next;
    }
    free(c->buckets);
    free(c);
}

void
pgdesc_get_stats(const struct pgdesc *c, struct pgdesc_stats *out)
{
    *out = c->stats;
}

/* The slot pointing at the entry for (h, klen), or at its chain's NULL. */
static struct pgdesc_entry **
find_slot(struct pgdesc *c, XXH128_hash_t h, size_t klen)
{
    struct pgdesc_entry **pp = &c->buckets[h.low64 & c->mask];

    while (*pp != NULL && !((*pp)->klen == klen && XXH128_isEqual((*pp)->hash, h)))
        pp = &(*pp)->chain;
    return pp;
}

static void
evict_tail(struct pgdesc *c)
{
    struct pgdesc_entry *e = LRU_ENTRY(c->lru.tail, struct pgdesc_entry, lru);
    struct pgdesc_entry **pp = find_slot(c, e->hash, e->klen);

    *pp = e->chain;
    lru_unlink(&c->lru, &e->lru);
    c->stats.entries--;
    c->stats.bytes -= entry_cost(strlen(e->text));
    c->stats.evictions++;
    free(e);
}

/* One more pgclass_describe allowed in now_ns's second? */
void
pgdesc_set_rate(struct pgdesc *c, unsigned describes_per_sec)
{
    if (c != NULL && describes_per_sec > 0)
        c->per_sec = describes_per_sec;
}

static bool
budget_take(struct pgdesc *c, uint64_t now_ns)
{
    uint64_t sec = now_ns / 1000000000u;

    if (sec != c->budget_sec) {
        c->budget_sec = sec;
        c->budget_used = 0;
    }
    if (c->budget_used >= c->per_sec)
        return false;
    c->budget_used++;
    return true;
}

/*
 * Remember desc under (h, klen), evicting from the LRU tail until both
 * bounds hold.  Returns the entry, or NULL when it cannot be stored (larger
 * than max_bytes on its own, or out of memory).
 */
static struct pgdesc_entry *
put(struct pgdesc *c, XXH128_hash_t h, size_t klen, const struct pgclass_desc *desc)
{
    size_t textlen = strlen(desc->normalized);
    size_t cost = entry_cost(textlen);
    struct pgdesc_entry *e, **pp;

    if (c->max_bytes != 0 && cost > c->max_bytes)
        return NULL;
    e = malloc(cost);
    if (e == NULL)
        return NULL;
    while (c->stats.entries >= c->max_entries ||
           (c->max_bytes != 0 && c->stats.bytes + cost > c->max_bytes))
        evict_tail(c);
    e->hash = h;
    e->klen = klen;
    e->verbatim = 0;
    e->fingerprint = desc->fingerprint;
    memcpy(e->text, desc->normalized, textlen + 1);
    /* looked up just before and not found: the slot is the chain's end */
    pp = find_slot(c, h, klen);
    e->chain = NULL;
    *pp = e;
    lru_push_head(&c->lru, &e->lru);
    c->stats.entries++;
    c->stats.bytes += cost;
    return e;
}

bool
pgdesc_describe(struct pgdesc *c, const char *sql, size_t len, uint64_t now_ns,
                struct pgdesc_key *out)
{
    char shape[PGDESC_SHAPE_MAX];
    size_t klen;
    XXH128_hash_t h;
    struct pgdesc_entry *e;
    char *text;

    out->fingerprint = 0;
    out->text = NULL;
    if (sql == NULL)
        sql = "", len = 0;
    /* a text without literals is its own shape: found as it came, unshaped
     * (as in pgcache_classify) */
    e = *find_slot(c, XXH3_128bits(sql, len), len);
    if (e != NULL && e->verbatim)
        goto out_hit;
    /*
     * A shape is never longer than its text (a literal becomes one '?'), so
     * a text keyed by itself (its shape did not fit) is longer than any
     * shape that does: the two kinds of key never share a length.
     */
    klen = pgcache_shape(sql, len, shape, sizeof(shape));
    int verbatim = klen == (size_t)-1 || (klen == len && memcmp(shape, sql, len) == 0);
    if (klen == (size_t)-1)
        h = XXH3_128bits(sql, len), klen = len;
    else
        h = XXH3_128bits(shape, klen);

    e = *find_slot(c, h, klen);
    if (e != NULL) {
        e->verbatim |= verbatim;
        goto out_hit;
    }
    if (!budget_take(c, now_ns)) {
        c->stats.refused++;
        return false;
    }
    /* pgclass_describe wants a C string; the unit's text need not be one */
    text = malloc(len + 1);
    if (text == NULL)
        return false;
    memcpy(text, sql, len);
    text[len] = '\0';
    pgclass_describe(text, &c->scratch);
    free(text);
    c->stats.describes++;
    e = put(c, h, klen, &c->scratch);
    if (e == NULL) {
        out->fingerprint = c->scratch.fingerprint;
        out->text = c->scratch.normalized;
        return true;
    }
    e->verbatim = verbatim;
    goto out_found;
out_hit:
    lru_touch(&c->lru, &e->lru);
    c->stats.hits++;
out_found:
    out->fingerprint = e->fingerprint;
    out->text = e->text;
    return true;
}
