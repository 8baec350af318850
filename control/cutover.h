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

#endif /* TANDEM_CUTOVER_H */
