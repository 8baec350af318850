/*
 * control.h - routing state that changes while tandem runs: read weights
 * set through the admin API, backend health from the probes, mirror lag
 * from the workers' ticks.
 *
 * Written by the main thread (admin, health) or by one worker each (lag),
 * read by every worker on every routed unit: plain atomics, no lock.  Kept
 * by metric slot, which is stable across reloads, so a reload keeps health
 * and lag; it resets the weights to the file's (control_load).
 *
 * Weights carry a version: a worker compares it with the version its own
 * struct wrr was built from and rebuilds the rotation when it moved, so a
 * change reaches the next read of every session.
 */
#ifndef TANDEM_CONTROL_H
#define TANDEM_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "control/runtime.h"

/* control_load - the weights of rt's listeners, as configured (boot and reload). */
void control_load(const struct runtime *rt);

/*
 * control_set_weights - PUT /api/weights: names[i] gets weights[i] on every
 * listener of rt that reads from it.  All or nothing: -1 with err when a
 * name is not a backend any listener reads from, or a weight is out of
 * range.
 */
int control_set_weights(const struct runtime *rt, const char *const *names, const long *weights,
                        size_t n, char *err, size_t errlen);

/* control_set_weight - one weight of one listener (a state file's, at start). */
void control_set_weight(int listener_slot, int backend_slot, int weight);

/* The weight of a backend (metric slot) on a listener (metric slot); 0 when unknown. */
int control_weight(int listener_slot, int backend_slot);
/* Bumps when any weight of the listener changes. */
uint32_t control_weights_version(int listener_slot);

/* Health: 1 usable for reads, 0 not; a backend never probed counts as usable. */
void control_set_backend_up(int backend_slot, int up);
int control_backend_up(int backend_slot);

/* Lag: each worker reports the oldest unanswered mirror per backend; readers take the max. */
void control_set_lag(int worker, int backend_slot, uint64_t lag_ms);
uint64_t control_lag_ms(int backend_slot);

/*
 * Mode: PUT /api/mode sets it per listener; -1 (the default, and after a
 * reload) means the file's.  control_mode returns the one in force.
 */
void control_set_mode(int listener_slot, int mode);
int control_mode(int listener_slot, int configured);

/*
 * Cutover and rollback (control/cutover.c drives them).
 *
 * roles_swapped: the listener's shadow answers and its primary is
 * mirrored.  It survives reloads: a reload must never swap primaries back
 * behind the operator's back.  paused: new write units wait in tandem.
 * A session whose own roles differ from the listener's holds its writes
 * too, until it has swapped; so the flag can flip before every worker got
 * to every session without a write reaching the old primary.
 *
 * Workers report, per listener, how many sessions are not yet ready to
 * swap (idle, their shadow caught up), tagged with the pause generation
 * they saw, so a count from before the pause is never mistaken for "all
 * ready".
 */
void control_set_roles_swapped(int listener_slot, int swapped);
int control_roles_swapped(int listener_slot);
/*
 * The epoch: how many times the listener's roles flipped (cutover,
 * rollback) over its life, a state file's included.  control_flip sets
 * roles_swapped and adds one to the epoch.
 */
void control_flip(int listener_slot, int swapped);
uint64_t control_epoch(int listener_slot);
void control_set_epoch(int listener_slot, uint64_t epoch);
void control_set_paused(int listener_slot, int paused, uint32_t generation);
/* control_paused - writes wait: an operation paused them, or the write lease expired. */
int control_paused(int listener_slot);

/*
 * The write lease of a fleet member (control/fleet.c): new write units go
 * on only while the monotonic clock is before until_ms (0: no lease, the
 * default alone).  The fleet renews it while its main thread runs and, after
 * the process did not run for a while (SIGSTOP, a stalled host), only once
 * it has read the fleet's log again: a member resumed after a cutover it
 * missed holds its writes until it has flipped, rather than sending them to
 * the old primary.  Renewing an expired lease must be followed by a kick of
 * the workers (cutover_kick) so that held writes go.
 */
void control_set_write_lease(uint64_t until_ms);
int control_write_lease_expired(void);
uint32_t control_pause_generation(int listener_slot);
/* force: sessions without a shadow are not waited for (they are closed at their next idle point). */
void control_set_force(int listener_slot, int force);
int control_force(int listener_slot);
void control_report_unready(int worker, int listener_slot, uint32_t generation, unsigned n);
/* control_unready - sessions not ready on the listener, or -1 while a worker has not reported. */
long control_unready(int listener_slot, int nworkers);

/*
 * Change notice: control_changed() says that the control state (weights,
 * mode, roles, a guard, an operation) changed; control_load, the setters
 * of weights and mode, and control_flip call it themselves.  The listeners
 * added with control_on_change (control/state.c, which writes the state
 * file; control/fleet.c, which publishes to the store; at most 4) are
 * called synchronously, in the caller's thread: each must be cheap and
 * thread-safe, an event_active().  Add and remove them on the main thread
 * before the workers start or after they stopped.
 */
void control_on_change(void (*fn)(void *arg), void *arg);
void control_off_change(void (*fn)(void *arg), void *arg);
void control_changed(void);

#endif /* TANDEM_CONTROL_H */
