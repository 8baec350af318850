/*
 * guard.h - automatic guards: thresholds over the shadow's sliding window
 * that move reads back, stop mirroring, or roll back, on their own.
 *
 * Evaluated once a second on the main thread from the shadow store
 * (metrics/shadow.h), health and lag.  A guard trips when its metric is
 * above its threshold with at least min_samples in the window; it then
 * acts, logs, counts (tandem_guard_trips_total) and shows in /api/status,
 * and for its cooldown it neither trips again nor lets the API give the
 * shadow reads back: the on-call engineer decides, not a flapping metric.
 */
#ifndef TANDEM_GUARD_H
#define TANDEM_GUARD_H

#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>

#include "control/cutover.h"
#include "control/runtime.h"

struct guards;

struct guards *guards_new(struct event_base *base, struct cutover *c, const struct runtime *rt);
/* guards_set_runtime - the guards of rt from now on; a guard keeps its trips and cooldown by name. */
void guards_set_runtime(struct guards *g, const struct runtime *rt);
void guards_free(struct guards *g);

/* The listener's guards for /api/status (a new array). */
json_t *guards_status_json(const struct guards *g, int listener_slot);

/*
 * guards_hold - 409 reason for PUT /api/weights: giving a backend reads
 * while a guard that took them away cools down.  0 when allowed.
 */
int guards_hold(const struct guards *g, const char *const *names, const long *weights, size_t n,
                char *err, size_t errlen);

/*
 * A guard's trips and cooldown as a state file keeps them: cooldown as the
 * wall-clock time it ends (0: none), so it means the same after a restart.
 */
struct guard_record {
    int listener_slot;
    char name[CONF_NAME_MAX];
    uint64_t trips;
    int64_t last_trip_ms;      /* unix ms; 0: never */
    int64_t cooldown_until_ms; /* unix ms; 0: not cooling down */
    char reason[256];
};

/* guards_records - every guard that ever tripped, at most max, into out; returns how many. */
size_t guards_records(const struct guards *g, struct guard_record *out, size_t max);

/*
 * guards_restore - at start: the guard of that listener and name takes the
 * record's trips and what is left of its cooldown (tripped until then).
 * 0, or -1 when there is no such guard any more (the caller logs it).
 */
int guards_restore(struct guards *g, const struct guard_record *r);

/* tandem_guard_trips_total{listener,guard}, tandem_guard_tripped{listener,guard}. */
void guards_render_prometheus(const struct guards *g, FILE *out);

#endif /* TANDEM_GUARD_H */
