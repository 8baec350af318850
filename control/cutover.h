/*
 * cutover.h - cutover and rollback as operations, on the main thread.
 *
 * A cutover makes every listener's shadow its primary without losing a
 * write:
 *
 *   pending ──► in_progress ──all sessions drained──► flip roles ──► completed
 *                   │ (new write units wait in tandem;
 *                   │  reads and open transactions go on)
 *                   └──max_pause passed──► writes resume on the old primary ──► failed
 *
 * "Drained": every write a session sent is acknowledged by the primary and
 * by the shadow.  The flip is one flag per listener (control/control.c);
 * each session swaps its two connections at its next idle point, and its
 * writes keep waiting until it has, so no write reaches the old primary
 * after the flip.  The old primary keeps receiving mirrors: a rollback is
 * the same operation the other way, and loses nothing either.
 *
 * Rollback also moves reads back at once: every listener's read weights go
 * to its configured primary.  One operation at a time; a second is a 409.
 */
#ifndef TANDEM_CUTOVER_H
#define TANDEM_CUTOVER_H

#include <event2/event.h>
#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "control/runtime.h"
#include "control/state_file.h"

enum cutover_kind { CUTOVER_FORWARD, CUTOVER_ROLLBACK };

struct cutover;

/*
 * cutover_new - operations run on base (the main thread).  kick(arg) asks
 * every worker to look at its sessions now (the flip, or the pause, just
 * changed); nworkers is how many report their unready sessions.
 */
struct cutover *cutover_new(struct event_base *base, void (*kick)(void *arg), void *kick_arg,
                            int nworkers);
void cutover_free(struct cutover *c);

/*
 * cutover_start - begin an operation on the listeners of rt.  Returns the
 * HTTP status: 202 with *reply {"operation": {...}}; 409 when one is in
 * progress or the shadow cannot take over (err says why); 400 for bad
 * arguments.
 */
int cutover_start(struct cutover *c, const struct runtime *rt, enum cutover_kind kind,
                  uint32_t max_pause_ms, int force, json_t **reply, char *err, size_t errlen);

/* cutover_set_replica - replicated listeners' steps run through w (NULL: none run). */
struct replica_watch;
void cutover_set_replica(struct cutover *c, struct replica_watch *w);

/* The operation with this id ("op-3"), NULL when unknown; the latest, NULL when none. */
json_t *cutover_operation_json(const struct cutover *c, const char *id);
json_t *cutover_latest_json(const struct cutover *c);

/*
 * cutover_on_commit - commit(arg, slots, nslots, target, err, errlen) runs
 * at the flip, writes still paused, before any role changes: 0 lets the
 * flip happen; -1 fails the operation (err says why) and nothing is
 * swapped.  control/state.c records the new roles there, so a restart can
 * never find the roles older than a write already sent to the new primary.
 * The operation shows as completed in cutover_records() during the call.
 */
void cutover_on_commit(struct cutover *c,
                       int (*commit)(void *arg, const int *slots, int nslots, int target,
                                     char *err, size_t errlen),
                       void *arg);

/*
 * cutover_records - the kept operations, oldest first, at most max, into
 * out; *next_id is the id the next operation gets.  Returns how many.
 */
size_t cutover_records(const struct cutover *c, struct state_op *out, size_t max,
                       unsigned *next_id);

/*
 * cutover_restore - at start, before any operation: the operations of a
 * state file, and ids continuing after theirs.  One that was pending or in
 * progress when tandem stopped shows as failed ("interrupted").
 */
void cutover_restore(struct cutover *c, const struct state_op *ops, size_t n, unsigned next_id);

/*
 * Fleet operations (control/fleet.h).  With a fleet, no member flips on
 * its own: the store decides, and this member carries out its part.
 *
 *   cutover_start ──► fleet->ask ──► (the store opens the operation)
 *        │ 202, "pending"                    │ every member, the asker too:
 *        ▼                                   ▼
 *   cutover_join: pause, drain ──► fleet->drained (reported to the store)
 *        │                 └─ max_pause passed ──► fleet->late (asks the store to abort)
 *        ▼
 *   cutover_decide(commit): flip at idle points  |  cutover_decide(abort): writes resume
 *
 * Writes stay paused between "drained" and the decision, however long it
 * takes: once a member reported, the others may have flipped, so only the
 * store's answer may let its writes go on.
 */
struct cutover_fleet {
    /*
     * ask - an operation asked of this member (API, guard): 0 when the
     * fleet takes it (the operation, local_id, shows as pending until the
     * store opened it), -1 with err when it cannot (no store now).
     */
    int (*ask)(void *arg, unsigned local_id, enum cutover_kind kind, uint32_t max_pause_ms,
               int force, char *err, size_t errlen);
    void (*drained)(void *arg); /* the joined operation is drained here; writes stay paused */
    void (*late)(void *arg);    /* max_pause passed without a decision */
    /* the fleet's steps ran here (cutover_fleet_run_steps): ok, or why a before_flip failed */
    void (*stepped)(void *arg, int ok, const char *why);
    void *arg;
};

/* cutover_set_fleet - operations go through the fleet from now on (f copied; NULL: alone). */
void cutover_set_fleet(struct cutover *c, const struct cutover_fleet *f);

/*
 * cutover_join - the fleet's operation FLEET_ID begins on this member:
 * local_id is the pending operation asked here (0: a new record).  Pauses
 * writes on the listeners to flip and drains them.  Returns 0 while in
 * progress (fleet->drained follows, at once when nothing is to flip here),
 * -1 with err when this member refuses (the shadow diverged...; the
 * operation is then failed here and the caller aborts it everywhere).
 */
int cutover_join(struct cutover *c, const struct runtime *rt, unsigned local_id,
                 enum cutover_kind kind, uint32_t max_pause_ms, int force, const char *fleet_id,
                 char *err, size_t errlen);

/*
 * cutover_fleet_has_steps - 1 when the joined operation flips a replicated
 * listener (shadow_source replication): its before_flip and after_flip
 * steps must run once for the fleet, by the member that coordinates the
 * commit, while every member's writes are paused.
 */
int cutover_fleet_has_steps(const struct cutover *c);

/*
 * cutover_fleet_run_steps - run them here now (polled with the operation):
 * fleet->stepped follows.  -1 when there is nothing to run.
 */
int cutover_fleet_run_steps(struct cutover *c);

/* cutover_joined - 1 while this member takes part in a fleet operation. */
int cutover_joined(const struct cutover *c);

/*
 * cutover_decide - the store's decision for the joined operation: commit
 * flips (the state file records it first; a failure to record is logged,
 * the flip still happens: the fleet already committed), abort lets writes
 * resume on the old primary with reason.  No-op when none is joined.
 */
void cutover_decide(struct cutover *c, int commit, const char *reason);

/* cutover_fail_pending - the pending operation local_id never began (reason why). */
void cutover_fail_pending(struct cutover *c, unsigned local_id, const char *reason);

/* cutover_kick - every worker looks at its sessions now (roles changed from the store). */
void cutover_kick(struct cutover *c);

/* cutover_flip_slots - the listeners the joined operation flips (at most max); returns how many. */
int cutover_flip_slots(const struct cutover *c, int *slots, int max, int *target);

#endif /* TANDEM_CUTOVER_H */
