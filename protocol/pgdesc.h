/*
 * pgdesc.h - what the shadow-diff report calls a PostgreSQL statement: its
 * fingerprint and normalized text (pgclass_describe), remembered per worker
 * so the two parses run once per distinct text, not once per request.
 *
 *   pg plug-in: unit compared
 *     -> pgdesc_describe(cache, sql)  hit: the remembered key
 *                                     miss: pgclass_describe, if this
 *                                           second's budget allows
 *     -> shadow_record(.., key.fingerprint, key.text, ..)
 *                                     text NULL: counted as "other"
 *
 * Why a budget: a client that inlines its values (simple protocol) or
 * generates SQL can make every text new, and each describe costs two
 * parses (~17 us for a 90-byte SELECT) on the worker's request path.  Over
 * the budget a text is refused, not cached, so it is described in a later
 * second when the budget allows.
 *
 * The key of a cache entry is an XXH3-128 hash of the text made
 * literal-blind (pgcache_shape): texts that differ only in literal values
 * have the same fingerprint, so they share one entry and one describe.  A
 * text whose shape does not fit PGDESC_SHAPE_MAX is keyed by its own bytes.
 * The text itself is not kept: two different shapes with the same 128-bit
 * hash and length would share an entry, which is far less likely than
 * anything else going wrong.
 *
 * Memory: at most max_entries entries, and, if max_bytes is not 0, at most
 * max_bytes bytes of entries counting each entry's header and its
 * normalized text (at most PGCLASS_NORMALIZED_MAX bytes); plus a bucket
 * table of one pointer per entry (rounded up to a power of two) and
 * ~1.1 KiB of scratch, both allocated by pgdesc_new.  A put that would
 * cross a bound evicts the least recently used entries first.
 *
 * One cache per worker thread: no locks, not shareable.  Pure: no sockets,
 * no events, no logging, no clock (the caller passes the time).
 */
#ifndef TANDEM_PGDESC_H
#define TANDEM_PGDESC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/pgclass.h"

/* The worker's cache: ~256 KiB of entry headers when full, the rest texts. */
#define PGDESC_ENTRIES 4096
#define PGDESC_BYTES (1u << 20)
#define PGDESC_DESCRIBES_PER_SEC 2000 /* pgclass_describe calls per cache and second */

/* A literal-blind shape longer than this is not computed: the text is the key. */
#define PGDESC_SHAPE_MAX 2048

struct pgdesc;

/* A statement as the report groups and shows it. */
struct pgdesc_key {
    uint64_t fingerprint; /* pgclass_describe's fingerprint */
    /*
     * pgclass_describe's normalized text: NUL-terminated, valid UTF-8,
     * shorter than PGCLASS_NORMALIZED_MAX.  Borrowed from the cache: valid
     * until the next call on it.  NULL when not described.
     */
    const char *text;
};

struct pgdesc_stats {
    uint64_t hits;      /* answered from the cache */
    uint64_t describes; /* pgclass_describe calls */
    uint64_t refused;   /* misses over the describe budget: not described */
    uint64_t evictions; /* entries dropped to make room */
    size_t entries;     /* now */
    size_t bytes;       /* now: headers + texts */
};

/*
 * pgdesc_new - an empty cache of at most max_entries entries (> 0) and, if
 * max_bytes is not 0, at most max_bytes bytes, describing at most
 * describes_per_sec new texts per second (> 0).  Returns NULL on a zero
 * bound or out of memory.  Free with pgdesc_free.
 */
struct pgdesc *pgdesc_new(size_t max_entries, size_t max_bytes, unsigned describes_per_sec);
/* pgdesc_set_rate - a new budget (> 0; 0 is ignored), from the next call on. */
void pgdesc_set_rate(struct pgdesc *c, unsigned describes_per_sec);

/* pgdesc_free - free the cache and its entries; NULL is fine. */
void pgdesc_free(struct pgdesc *c);

/*
 * pgdesc_describe - the key of the statement text sql[0..len) (need not be
 * NUL-terminated; only read; NULL with len 0 is the empty text).
 *
 * now_ns: a monotonic clock in nanoseconds; the budget is counted per
 * whole second of it.  A cached text costs no budget.
 *
 * Returns true with *out filled: from the cache, or described now and
 * cached (when the entry cannot be stored, out of memory or larger than
 * max_bytes, out->text points into the cache's scratch, valid likewise).
 * Returns false when the text is not cached and this second's budget is
 * spent, or out of memory: then out->fingerprint is 0 and out->text NULL,
 * and nothing is cached.
 */
bool pgdesc_describe(struct pgdesc *c, const char *sql, size_t len, uint64_t now_ns,
                     struct pgdesc_key *out);

void pgdesc_get_stats(const struct pgdesc *c, struct pgdesc_stats *out);

#endif /* TANDEM_PGDESC_H */
