/*
 * recheck.h - the schedule a re-check follows, whatever the protocol.
 *
 * A read whose two answers differ is run again on both backends, through
 * connections of tandem's own, before the mismatch is claimed: the same
 * answers now make it `transient`, RECHECK_ATTEMPTS different ones a
 * confirmed `mismatch`.  How to log in, send and digest is the plug-in's
 * (pg/pg_recheck.c with libpq, redis/redis_recheck.c with hiredis); what
 * is the same for both lives here:
 *
 *   recheck_take    the listener's budget (rate and jobs in flight)
 *   recheck_begin   the job on the worker's list, its deadline armed
 *   attempt:  ops->run(PRIMARY) ─► recheck_primary_answered ─► (a
 *             replicated shadow: wait until it applied what the primary
 *             had) ─► ops->run(SHADOW) ─► the plug-in compares ─►
 *             recheck_again: a pause, then the next attempt, or 0 when
 *             every attempt was used
 *   the deadline ─► ops->expired
 *   recheck_verdict the outcome recorded as the first comparison would
 *                   have recorded it, counted and logged
 *   recheck_end     off the list, timers stopped, the budget given back
 *
 * The shadow runs each attempt after the primary: it applies the primary's
 * writes later, never earlier, so the pauses let it catch up.  The client
 * never waits on any of it.
 */
#ifndef TANDEM_ENGINE_RECHECK_H
#define TANDEM_ENGINE_RECHECK_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdint.h>

#include "engine/worker.h"
#include "metrics/shadow.h"

#define RECHECK_ATTEMPTS 4
#define RECHECK_DEADLINE_MS 15000 /* from start to verdict */

enum recheck_backend { RECHECK_PRIMARY, RECHECK_SHADOW };
extern const char *const recheck_backend_names[2];

struct recheck;

struct recheck_ops {
    /* send this attempt's statement to one side; its answer comes back through the plug-in */
    void (*run)(struct recheck *r, enum recheck_backend side);
    /* no verdict by the deadline */
    void (*expired)(struct recheck *r);
};

/* The first member of a plug-in's job. */
struct recheck {
    struct worker_job job; /* first: the worker's list (job.cancel is the plug-in's) */
    const struct recheck_ops *ops;
    struct worker *w;
    int slot;
    uint64_t session_id;
    char peer[64];
    /* the report's record, as the first comparison had it */
    uint64_t key_id;
    uint64_t primary_ns, shadow_ns;
    int attempt;                    /* 1-based, the one running or next */
    unsigned awaiting_replica : 1;  /* the shadow runs once it applied answered_ns */
    uint64_t answered_ns;           /* when the primary answered this attempt */
    struct event timer;             /* pauses between attempts; a replica's catch-up */
    struct event deadline;
};

/*
 * recheck_take - 1 when listener `slot` may start one more re-check
 * (compare { confirm_per_second } and the jobs in flight), else 0, counted
 * `busy`.  recheck_end gives it back.
 */
int recheck_take(struct shadow_shard *shard, int slot, uint32_t per_second);

/*
 * recheck_begin - r (zeroed but for what the plug-in set) goes on worker
 * w's list with its deadline armed; job.cancel must be set.
 */
void recheck_begin(struct recheck *r, const struct recheck_ops *ops, struct worker *w, int slot,
                   uint64_t session_id, const char *peer);

/* recheck_primary_answered - the primary's answer is in: the shadow runs now or when caught up. */
void recheck_primary_answered(struct recheck *r);

/* recheck_again - the answers differ: 1 when another attempt is scheduled, 0 when none is left. */
int recheck_again(struct recheck *r);

/*
 * recheck_verdict - the outcome the re-check concluded, recorded as the
 * first comparison would have been (key_text and the samples are the
 * plug-in's), counted by result and logged with `why` when it failed.
 */
void recheck_verdict(struct recheck *r, enum shadow_recheck_result result, const char *key_text,
                     const char *psample, const char *ssample, const char *why);

/* recheck_stop_timers - no attempt or deadline fires any more. */
void recheck_stop_timers(struct recheck *r);

/* recheck_end - off the worker's list, timers stopped, the budget given back. */
void recheck_end(struct recheck *r);

#endif
