/*
 * pgcache.h - a bounded LRU cache of statement classifications, keyed by
 * the statement's text.
 *
 * One cache per worker thread: no locks, not shareable.  get and put are
 * O(1): an XXH3 hash picks a chain in a fixed table (at most one entry per
 * bucket on average), the full text is compared on every hit, so two texts
 * with the same hash are two entries, never a wrong answer.
 *
 * Bounds, set at creation: max_entries, and max_bytes counting each entry's
 * header plus its text.  A put that would cross a bound first evicts the
 * least recently used entries (counted).  A text longer than
 * PGCACHE_MAX_TEXT, or costing more than an eighth of max_bytes, is never
 * stored (counted as skipped): one bulk INSERT must not empty the cache.
 *
 * Prepared statements: a Parse message is classified by its text, so this
 * cache covers them too; the session keeps each prepared statement's result
 * itself (by statement name) for its Bind/Execute, and needs no second
 * cache.
 *
 * The cached results depend on the pgclass_opts they were computed with:
 * pgcache_clear() when those change (configuration reload).
 */
#ifndef TANDEM_PGCACHE_H
#define TANDEM_PGCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/pgclass.h"

#define PGCACHE_MAX_TEXT (64u * 1024)

struct pgcache;

struct pgcache_stats {
    uint64_t hits;
    uint64_t misses;
    uint64_t evictions;   /* entries dropped to make room (not by clear) */
    uint64_t skipped;     /* puts refused: text too large to cache */
    size_t entries;       /* now */
    size_t bytes;         /* now: headers + texts */
};

/*
 * pgcache_new - an empty cache of at most max_entries entries (> 0) and, if
 * max_bytes is not 0, at most max_bytes bytes.  Allocates the bucket table
 * now (about 8 bytes per entry).  Returns NULL on a zero max_entries or out
 * of memory.  Free with pgcache_free.
 */
struct pgcache *pgcache_new(size_t max_entries, size_t max_bytes);

/* pgcache_free - free the cache and all entries; NULL is fine. */
void pgcache_free(struct pgcache *c);

/*
 * pgcache_get - look sql[0..len) up.  On a hit, copy its result into *out,
 * make it the most recently used and return true; on a miss return false
 * and leave *out alone.  Counts a hit or a miss.
 */
bool pgcache_get(struct pgcache *c, const char *sql, size_t len, struct pgclass_result *out);

/*
 * pgcache_put - remember res for sql[0..len) (copied; the caller keeps
 * both).  Replaces the result of an equal text already there.  Returns 0, or
 * -1 when not stored (too large: counted as skipped; or out of memory).
 */
int pgcache_put(struct pgcache *c, const char *sql, size_t len,
                const struct pgclass_result *res);

/*
 * pgcache_classify - the request path in one call: get, or classify the
 * NUL-terminated sql with pgclass_classify(sql, opts, out) and put.
 *
 * The key is the text made literal-blind (pgcache_shape): queries sent with
 * their values inline (simple protocol) differ only in literals, which never
 * change what a statement is, so they share one entry and are parsed once.
 */
void pgcache_classify(struct pgcache *c, const char *sql, const struct pgclass_opts *opts,
                      struct pgclass_result *out);

/*
 * pgcache_shape - write into out the text with every number and quoted
 * string literal ('...', E'...', $tag$...$tag$, B'...', X'...') replaced by
 * '?'; keywords, identifiers, "quoted identifiers", $n parameters, operators
 * and comments (where hints live) are kept as they are.  Text that contains
 * "explain" is copied unchanged: there a literal (ANALYZE 0/1) decides
 * whether the statement runs.  Returns the length written (< cap), or
 * (size_t)-1 when the shape does not fit in cap (the caller then keys by the
 * text itself).  Pure; never reads past len.
 */
size_t pgcache_shape(const char *sql, size_t len, char *out, size_t cap);

/* pgcache_clear - drop every entry; counters are kept. */
void pgcache_clear(struct pgcache *c);

void pgcache_get_stats(const struct pgcache *c, struct pgcache_stats *out);

/*
 * pgcache_set_hash - replace the hash function (tests use it to force
 * collisions).  Only on an empty cache; returns -1 otherwise.
 */
int pgcache_set_hash(struct pgcache *c, uint64_t (*hash)(const void *data, size_t len));

#endif /* TANDEM_PGCACHE_H */
