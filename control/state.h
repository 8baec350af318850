/*
 * state.h - the control state kept in `control { state_file PATH; }`, so a
 * restart never forgets a cutover.
 *
 *   start:  read PATH ──► state_file_plan() against the configuration
 *             │              ├─ refuse (corrupt, newer, unknown listener,
 *             │              │   a primary it cannot reconcile): no start
 *             │              └─ apply: roles + epoch, mode, weights,
 *             │                 guard cooldowns, operations (log what differs)
 *             ▼
 *   running: control_changed() ──► event_active ──► write (main thread)
 *            a worker marks a shadow diverged ──► seen within 500 ms ──► write
 *            a flip (cutover, rollback) ──► written first, synchronously;
 *                                           a failed write fails the operation
 *
 * Writes are whole files: PATH.tmp written, fsync'd, renamed over PATH,
 * the directory fsync'd.  A failed write is logged and counted
 * (tandem_state_file_writes_total{result="error"}) and retried 5 s later;
 * it never stops tandem.  Everything here runs on the main thread: the
 * workers only read control.h's atomics, never this.
 *
 * Without state_file, state_open() still returns a struct state (nothing
 * is read or written) so that reloads are checked the same way.
 */
#ifndef TANDEM_STATE_H
#define TANDEM_STATE_H

#include <event2/event.h>
#include <stdio.h>

#include "conf/conf.h"
#include "control/cutover.h"
#include "control/guard.h"
#include "control/runtime.h"

struct state;

/*
 * state_open - at start, after control_load(rt), cutover_new and
 * guards_new, before any worker accepts a client.  Returns NULL when
 * tandem must not start (the reason is logged as "PATH: message") or
 * memory ran out.  rt, c and g must outlive the struct state.
 */
struct state *state_open(struct event_base *base, const struct runtime *rt, struct cutover *c,
                         struct guards *g);

/*
 * state_set_runtime - SIGHUP: rt replaces the running runtime from now on
 * (call before control_load(rt)).  -1 (logged) refuses the reload when it
 * would change who answers a listener that is cut over: the swap is kept
 * as "the configuration's shadow answers", so a reload that rewrites that
 * listener's primary/shadow would silently hand writes to another backend.
 * A restart takes such a file (the state file keeps the roles by name).
 */
int state_set_runtime(struct state *s, const struct runtime *rt);

/*
 * state_stopped - the last write, once every worker has stopped: clean 1
 * (every session and shadow drained: nothing mirrored was left behind)
 * records a clean stop; 0 leaves the file saying "running", so the next
 * start marks mirrored listeners diverged.  The diverged flags are written
 * either way.
 */
void state_stopped(struct state *s, int clean);

void state_free(struct state *s);

/*
 * state_build_doc - the running control state as a document (the fleet
 * publishes it): the listeners of flip[] as they will be once flipped to
 * target.  Operations are left out (each member keeps its own).  0, or -1
 * when memory ran out; doc is then empty.  The caller releases doc.
 */
int state_build_doc(const struct state *s, const int *flip, int nflip, int target,
                    struct state_doc *doc);

/*
 * state_apply_doc - a document from the fleet's store, applied to the
 * running state: mode, weights and guard trips as state_file_plan() says;
 * roles and epoch of a listener only where the document's epoch is higher
 * than the one applied here (roles change only by a committed flip, which
 * never goes back).  from names the source in logs.  Returns how many
 * listeners changed roles, or -1 with err when the document does not fit
 * the configuration (nothing applied).
 */
int state_apply_doc(struct state *s, const struct state_doc *doc, const char *from, char *err,
                    size_t errlen);

/* state_epoch_sum - the sum of every listener's epoch: grows at every flip, never goes back. */
uint64_t state_epoch_sum(const struct state_doc *doc);

/*
 * state_check - tandem -t: read conf's state file (none configured, or
 * none written yet, is fine) and say what a start would do.  Differences
 * from the configuration go to out as "PATH: listener ...: taking the
 * state file's roles"; errors that would refuse a start go to err as
 * "PATH: message".  Returns 0 when tandem would start, -1 when not.
 */
int state_check(const struct conf *conf, FILE *out, FILE *err);

#endif /* TANDEM_STATE_H */
