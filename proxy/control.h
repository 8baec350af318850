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

#include "proxy/runtime.h"

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

#endif /* TANDEM_CONTROL_H */
