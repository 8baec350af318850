/*
 * shadow.h - what shadow comparison found: outcome counters, latency
 * histograms, sliding windows, the latest mismatch samples and the mirror
 * gauges; exposed as Prometheus text and as the JSON shadow-diff report.
 *
 *   worker thread                           admin thread (scrape / report)
 *   -------------                           ------------------------------
 *   shadow_record                           shadow_render_prometheus
 *     -> its own struct shadow_shard          shadow_report_json
 *        (mutex taken uncontended)            shadow_listener_stats
 *                                               -> locks each shard in turn,
 *                                                  sums into its own memory
 *
 * Per shard (one per worker, never freed), all under the shard's mutex:
 *
 *   listener block (one per listener slot, allocated on first use)
 *     outcome counters since boot, latency histograms per side since boot,
 *     a sliding window of SHADOW_WINDOW_SLOTS x SHADOW_WINDOW_SLOT_SECONDS
 *     (outcome counts and latency histograms per side, each slot stamped
 *     with its epoch and cleared when reused), mirror-dropped counters, the
 *     "other" statement.
 *   statement table: (listener, statement key) -> counts by outcome and
 *     latency histograms; at most SHADOW_MAX_STATEMENTS entries.  When
 *     full, a new key takes the place of the least used of a random sample
 *     of clean entries (no mismatch, transient, noise or error: nothing a
 *     report would show of it but counts; statement_entries_evicted), as
 *     Redis approximates LRU; an entry that ever mismatched or failed is
 *     never evicted.  With no clean entry found, the new key is counted in
 *     its listener's "other" statement (and in statements_evicted).  The display text of a key is
 *     stored once, in its entry.  The caller names the key: this module
 *     knows no protocol (PostgreSQL's key is protocol/pgdesc's fingerprint
 *     and normalized text, Redis's its command).  A caller that could not
 *     name one (over its describe budget) records under "other" too (and
 *     in statements_undescribed).
 *   sample rings: the latest SHADOW_SAMPLES mismatches, and separately the
 *     latest SHADOW_OTHER_SAMPLES noise / shadow_error / primary_error
 *     units, so frequent noise (now()...) never pushes findings out.  The
 *     report merges every shard's rings, newest first, and keeps at most
 *     that many of each: exactly the process-wide latest.
 *
 * Latency buckets: SHADOW_LAT_BOUNDS finite upper bounds from 50 us to 10 s,
 * ten per decade (the R10 series 1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8),
 * plus +Inf: quantiles are estimated (linear inside a bucket, as
 * Prometheus's histogram_quantile) within ~12%.  Prometheus gets the 1-2.5-5
 * subset (50us, 100us, 250us, ... 5s, 10s, +Inf), which are bounds of the
 * fine series, so the exposed cumulative counts are exact.
 *
 * Clock: the windows use a monotonic clock in nanoseconds, replaceable with
 * shadow_set_clock() for tests.  Sample times and generated_at are wall time
 * (CLOCK_REALTIME).
 *
 * Pure: no sockets, no events, no logging.  Allocation failures lose data
 * silently (counted nowhere but never crash); nothing here fails the caller.
 */
#ifndef TANDEM_SHADOW_H
#define TANDEM_SHADOW_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "protocol/outcome.h"

/*
 * Statement entries per shard (one shard per worker), all listeners: an
 * entry is 1 KiB of counters and histograms plus its text (at most
 * SHADOW_KEY_TEXT_MAX, typically 100 bytes): under 17 MiB per worker full,
 * 32 MiB with every text at its longest.  tests/integration/
 * test_pg_report_bound.py measures a real one: 40,000 distinct statements
 * through one worker, +21 MiB resident in all (caches included).
 */
#define SHADOW_MAX_STATEMENTS 16384
#define SHADOW_SAMPLES 64            /* mismatch samples kept (per shard; report: total) */
#define SHADOW_OTHER_SAMPLES 16      /* noise / error samples kept, likewise */
#define SHADOW_SUMMARY_MAX 1024      /* bytes of a side's summary kept, NUL included */
#define SHADOW_KEY_TEXT_MAX 1024     /* bytes of a key's display text kept, NUL included */
#define SHADOW_WINDOW_SLOTS 60
#define SHADOW_WINDOW_SLOT_SECONDS 5 /* window: 60 x 5 s = 5 min */
#define SHADOW_WINDOW_SECONDS (SHADOW_WINDOW_SLOTS * SHADOW_WINDOW_SLOT_SECONDS)
#define SHADOW_LAT_BOUNDS 54          /* finite latency bucket bounds (+Inf is one more) */
#define SHADOW_SLOWEST_MIN_SAMPLES 10 /* report "slowest": both sides measured this often */
/* Plans of a statement slower on the shadow: after this many latencies on each side,
 * looked at every 10 s, fetched again at most every 10 min, each kept up to 32 KiB. */
#define SHADOW_PLAN_MIN_SAMPLES 50
#define SHADOW_PLAN_CHECK_NS (10ull * 1000000000ull)
#define SHADOW_PLAN_INTERVAL_NS (600ull * 1000000000ull)
#define SHADOW_PLAN_MAX (32 * 1024)

enum shadow_side { SHADOW_SIDE_PRIMARY, SHADOW_SIDE_SHADOW, SHADOW_SIDE__COUNT };

/* Why a mirror was discarded without comparison:
 * tandem_shadow_mirror_dropped_total{listener,reason}. */
#define SHADOW_DROP_REASONS(X)                                                                     \
    X(QUEUE_FULL, "queue_full")         /* session or global mirror queue bound reached */         \
    X(SHADOW_ERROR, "shadow_error")     /* the shadow connection failed: queue discarded */        \
    X(SHADOW_TIMEOUT, "shadow_timeout") /* the shadow stopped answering: queue discarded */        \
    X(DETACHED, "detached")             /* the session's shadow was detached */                    \
    X(MIRRORING_OFF, "mirroring_off")   /* mode passthrough set at run time, or a guard */         \
    X(IDENTITY, "identity")             /* the shadow cannot act as the client (role, ACL user) */ \
    X(TOO_LARGE, "too_large")           /* one unit larger than the session's mirror queue */

enum shadow_drop_reason {
#define X(id, name) SHADOW_DROP_##id,
    SHADOW_DROP_REASONS(X)
#undef X
    SHADOW_DROP__COUNT
};

const char *shadow_drop_reason_name(enum shadow_drop_reason r);

/* What re-checking a mismatching read concluded (or why it was not re-checked):
 * tandem_shadow_rechecks_total{listener,result}. */
#define SHADOW_RECHECK_RESULTS(X)                                                                  \
    X(CONFIRMED, "confirmed")     /* still different when run again on both: a mismatch */         \
    X(TRANSIENT, "transient")     /* the same when run again: outcome transient */                \
    X(BUSY, "busy")               /* over confirm_per_second or in-flight bound: not re-checked */ \
    X(UNSUPPORTED, "unsupported") /* not one plain statement (or too large) to run again */        \
    X(FAILED, "failed")           /* a login, query or the deadline failed: not confirmed */

enum shadow_recheck_result {
#define X(id, name) SHADOW_RECHECK_##id,
    SHADOW_RECHECK_RESULTS(X)
#undef X
    SHADOW_RECHECK__COUNT
};

/* One worker's shadow state.  Opaque. */
struct shadow_shard;

/*
 * shadow_shard_new - an empty shard, registered for scraping, or NULL when
 * METRIC_MAX_SHARDS shards exist or out of memory.  Never freed (the scraper
 * may read it after its worker is gone).  Any thread may record into any
 * shard (every access takes the shard's mutex), but it is meant to be used
 * by one worker, so the mutex is uncontended but for the scraper.
 */
struct shadow_shard *shadow_shard_new(void);

/*
 * shadow_record - record one compared request unit, of any protocol.
 *
 * listener_slot: metric_slot_listener()'s slot; out of range records
 * nothing.  key_id: the statement key the unit is grouped by (a
 * PostgreSQL fingerprint, a hash of a Redis command name ...), shown as 16
 * hex digits.  key_text: its display text, NUL-terminated; read, and copied
 * (at most SHADOW_KEY_TEXT_MAX - 1 bytes, invalid UTF-8 replaced by '?')
 * once, when the key is first seen in this shard.  key_text NULL: the
 * caller could not name the key (e.g. over its describe budget); the unit
 * is counted in the listener's "other" statement, with fingerprint "other",
 * and in statements_undescribed, and key_id is ignored.
 * reason: why a NOISE is noise (ignored for any other outcome; a NOISE
 * with SHADOW_NOISE_NONE or out of range counts as volatile, what noise
 * meant before it had reasons).
 * primary_ns / shadow_ns: each side's latency; 0 means the side gave no
 * answer (dropped, timed out) and is not recorded.  primary_summary /
 * shadow_summary: what each side answered (tag, error, first rows), NUL-
 * terminated, may be NULL; read, and copied (cut to SHADOW_SUMMARY_MAX - 1
 * bytes, invalid UTF-8 replaced by '?') only for a MISMATCH, NOISE,
 * SHADOW_ERROR or PRIMARY_ERROR outcome, never for MATCH.
 */
void shadow_record(struct shadow_shard *shard, int listener_slot, uint64_t key_id,
                   const char *key_text, enum shadow_outcome outcome,
                   enum shadow_noise_reason reason, uint64_t primary_ns, uint64_t shadow_ns,
                   const char *primary_summary, const char *shadow_summary);

/*
 * Gauges and counters the session layer keeps.
 *
 * shadow_set_lag - this shard's (worker's) age in seconds of its oldest
 *   unacknowledged mirror on the listener (0 when none); the scrape shows
 *   the max over shards.
 * shadow_set_detached - this shard's count of sessions whose shadow is
 *   detached, on the listener; the scrape shows the sum.
 * shadow_units_open - delta (+1 or -1) this shard's count of request units
 *   in sessions' unit lists on the listener (a unit leaves once every
 *   backend it went to answered and it was recorded); the scrape shows the
 *   sum, read live.  Only the shard's worker calls it.
 * shadow_count_dropped - n mirrors of the listener discarded without
 *   comparison, by reason.  Outcome counters are not touched: a unit that
 *   should also count as outcome "dropped" is recorded with SHADOW_DROPPED.
 * shadow_set_queue_bytes - bytes in all mirror queues (process-wide).
 * shadow_set_diverged - mark the listener diverged; sticky until the
 *   operator says the shadow was resynchronized (shadow_clear_divergence),
 *   across restarts with a state file.
 * shadow_note_divergence - the same, saying why: reason (a short phrase,
 *   e.g. "shadow_error on a write") and the statement (len bytes, need not
 *   be NUL-terminated; NULL for none).  The first one is kept for the
 *   report and the cutover's refusal; later ones are counted.
 */
void shadow_set_lag(struct shadow_shard *shard, int listener_slot, double seconds);
void shadow_set_detached(struct shadow_shard *shard, int listener_slot, uint64_t sessions);
void shadow_units_open(struct shadow_shard *shard, int listener_slot, int delta);
void shadow_count_dropped(struct shadow_shard *shard, int listener_slot,
                          enum shadow_drop_reason reason, uint64_t n);
/*
 * shadow_record_slower - shadow_record, under the same lock: then 1 when
 * the statement is now slower on the shadow by plan_ratio or more (p50
 * over p50, with SHADOW_PLAN_MIN_SAMPLES latencies on each side) and its
 * plans were not fetched in the last SHADOW_PLAN_INTERVAL_NS: the caller
 * fetches them.  An entry is looked at every 10 s at most; plan_ratio 0:
 * never 1.
 * shadow_set_plans - keep the two plans (EXPLAIN (FORMAT JSON) text, NULL
 * for none) with the statement; the report shows them.
 */
int shadow_record_slower(struct shadow_shard *shard, int listener_slot, uint64_t key_id,
                         const char *key_text, enum shadow_outcome outcome,
                         enum shadow_noise_reason reason, uint64_t primary_ns,
                         uint64_t shadow_ns, const char *primary_summary,
                         const char *shadow_summary, unsigned plan_ratio);
void shadow_set_plans(struct shadow_shard *shard, int listener_slot, uint64_t key_id,
                      const char *primary_plan, const char *shadow_plan);

/* shadow_count_recheck - one mismatching read's re-check ended with result r. */

void shadow_count_recheck(struct shadow_shard *shard, int listener_slot,
                          enum shadow_recheck_result r);

/*
 * The re-checks' budget per listener slot, process-wide (any thread; every
 * protocol's re-checks share it): shadow_recheck_take - 1 when one more may
 * start in the second now_s (under per_second, and fewer than
 * SHADOW_RECHECK_INFLIGHT_MAX running), 0 when not (per_second 0: never);
 * shadow_recheck_give - one that took it has ended.
 */
#define SHADOW_RECHECK_INFLIGHT_MAX 8
int shadow_recheck_take(int listener_slot, uint32_t per_second, uint64_t now_s);
void shadow_recheck_give(int listener_slot);
void shadow_set_queue_bytes(uint64_t bytes);
void shadow_set_diverged(int listener_slot);

/*
 * shadow_set_samples - what samples of listener_slot keep of the answers
 * from now on (enum conf_samples): their text, a redacted form (length and
 * a tag that is equal for equal answers, keyed per process so a guessed
 * value cannot be checked against it), or nothing; plans only with text.
 */
void shadow_set_samples(int listener_slot, int mode);
void shadow_note_divergence(int listener_slot, const char *reason, const char *statement,
                            size_t len);

/* Why the listener diverged, the first time (empty strings: no reason noted). */
#define SHADOW_DIVERGED_TEXT_MAX 256
struct shadow_divergence {
    char reason[64];
    char statement[SHADOW_DIVERGED_TEXT_MAX];
    uint64_t count; /* divergences noted since boot */
};
void shadow_divergence(int listener_slot, struct shadow_divergence *out);
/* shadow_diverged - 1 when the listener is marked diverged (cheap: one atomic load). */
int shadow_diverged(int listener_slot);
/* shadow_clear_divergence - the operator resynchronized the shadow: not diverged, no reason. */
void shadow_clear_divergence(int listener_slot);

/* A listener summed over shards (shadow_listener_stats).  Ratios and
 * latencies are NaN when there is nothing to compute them from. */
struct shadow_listener_stats {
    uint64_t outcomes[SHADOW__COUNT];           /* since boot */
    uint64_t window_outcomes[SHADOW__COUNT];    /* over the window asked for */
    uint64_t noise[SHADOW_NOISE__COUNT];        /* since boot: outcomes[SHADOW_NOISE] by
                                                 * reason ([SHADOW_NOISE_NONE] is 0) */
    uint64_t window_noise[SHADOW_NOISE__COUNT]; /* the same over the window */
    double validation_success_ratio;            /* window: match / (match + mismatch) */
    double primary_p50_seconds;                 /* window */
    double shadow_p50_seconds;                  /* window */
    double performance_ratio;                   /* window: shadow p50 / primary p50 */
    double primary_p99_seconds;                 /* window */
    double shadow_p99_seconds;                  /* window */
    uint64_t window_latency_count[SHADOW_SIDE__COUNT]; /* window: latencies recorded */
    uint64_t latency_count[SHADOW_SIDE__COUNT]; /* since boot: latencies recorded */
    double latency_sum_seconds[SHADOW_SIDE__COUNT];
    uint64_t dropped[SHADOW_DROP__COUNT]; /* since boot */
    uint64_t rechecks[SHADOW_RECHECK__COUNT]; /* since boot */
    uint64_t statements_evicted;          /* records of keys refused by a full statement table */
    uint64_t statement_entries_evicted;   /* clean entries evicted to make room */
    uint64_t statements_undescribed;      /* records with no key text (caller over budget) */
    double lag_seconds;                   /* max over shards */
    uint64_t detached_sessions;           /* sum over shards */
    uint64_t units_open;                  /* sum over shards, live */
    bool diverged;
};

/*
 * shadow_listener_stats - sum the listener over every shard into *out, with
 * a window of the last window_seconds (rounded up to whole slots, 0 or more
 * than SHADOW_WINDOW_SECONDS means the whole window; the current, partly
 * elapsed slot counts).  For /api/status and the guards.  Returns 0, or -1
 * when the slot is out of range or out of memory (*out zeroed).
 */
int shadow_listener_stats(int listener_slot, unsigned window_seconds,
                          struct shadow_listener_stats *out);

/*
 * shadow_render_prometheus - write the shadow metrics (text format 0.0.4)
 * for every assigned listener slot:
 *
 *   tandem_shadow_operations_total{listener,outcome}        counter
 *   tandem_shadow_noise_total{listener,reason}              counter; the
 *       operations of outcome noise by reason (volatile, physical,
 *       server_local, ignored): they sum to outcome="noise"
 *   tandem_shadow_validation_success_ratio{listener}        gauge, window;
 *       NaN when the window holds no match and no mismatch (a comparison
 *       with NaN is false, so alert rules neither fire nor resolve on it)
 *   tandem_shadow_performance_ratio{listener}               gauge, window;
 *       shadow p50 / primary p50, NaN when either side has no sample
 *   tandem_shadow_latency_seconds_bucket{listener,side,le}  histogram,
 *       _sum, _count (since boot; side is "primary" or "shadow")
 *   tandem_shadow_lag_seconds{listener}                     gauge, max
 *   tandem_shadow_queue_bytes                               gauge
 *   tandem_shadow_diverged{listener}                        gauge 0/1
 *   tandem_shadow_detached_sessions{listener}               gauge, sum
 *   tandem_shadow_units_open{listener}                      gauge, sum, live
 *   tandem_shadow_mirror_dropped_total{listener,reason}     counter
 *   tandem_shadow_statements_evicted_total{listener}        counter
 */
void shadow_render_prometheus(FILE *out);

/*
 * shadow_report_json - the shadow-diff report (GET /api/shadow/report), a
 * new object the caller owns (json_decref), or NULL out of memory:
 *
 *   generated_at      RFC 3339 UTC, milliseconds
 *   window_seconds    SHADOW_WINDOW_SECONDS
 *   listeners   [ {name, outcomes{<outcome>: n} (since boot),
 *                  window_outcomes{...}, noise{<reason>: n} (since boot),
 *                  window_noise{...}, validation_success_ratio,
 *                  performance_ratio, primary_p50_ms, shadow_p50_ms
 *                  (those four over the window; null when not computable),
 *                  lag_seconds, diverged, diverged_reason (null, or
 *                  {reason, statement, count}), detached_sessions,
 *                  dropped{<reason>: n}, statements_evicted,
 *                  statements_undescribed} ]  in slot order
 *   statements  [ {listener, fingerprint (16 hex digits, or "other"),
 *                  statement, count{<outcome>: n, total}, noise{<reason>: n},
 *                  primary_p50_ms, shadow_p50_ms, primary_p99_ms, shadow_p99_ms,
 *                  latency_ratio (shadow p50 / primary p50)} ]
 *                  since boot, summed over shards; sorted by mismatches
 *                  desc, then total desc; the first top_n (0: all)
 *   slowest     [ same objects ]  those with at least
 *                  SHADOW_SLOWEST_MIN_SAMPLES latencies on both sides, by
 *                  latency_ratio desc; the first top_n (0: all)
 *   samples     [ {time, listener, fingerprint, statement, outcome,
 *                  reason (of a noise; null otherwise), primary, shadow} ]
 *                  newest first: the latest SHADOW_SAMPLES mismatches and
 *                  SHADOW_OTHER_SAMPLES
 *                  others, merged
 *
 * Latencies and ratios without data are null.  Every string is valid UTF-8.
 */
json_t *shadow_report_json(size_t top_n);

/*
 * shadow_set_clock - make the windows use now_ns() (a monotonic clock in
 * nanoseconds) instead of CLOCK_MONOTONIC; NULL restores it.  For tests;
 * set it before recording.
 */
void shadow_set_clock(uint64_t (*now_ns)(void));

/* shadow_latency_bound_ns - the finite upper bound of latency bucket i
 * (0 <= i < SHADOW_LAT_BOUNDS), in nanoseconds; 0 out of range. */
uint64_t shadow_latency_bound_ns(int i);

#endif /* TANDEM_SHADOW_H */
