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

#endif /* TANDEM_CUTOVER_H */
