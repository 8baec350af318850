/*
 * health.h - periodic, asynchronous reachability checks of every backend.
 *
 * Each check is a non-blocking TCP connect with a timeout (a PostgreSQL
 * backend with a user: a login and SELECT 1; a Redis backend with tls:
 * the TLS handshake as configured and a PING, never a password), run on the main
 * thread's event loop; the result feeds tandem_backend_up and /readyz.
 */
#ifndef TANDEM_HEALTH_H
#define TANDEM_HEALTH_H

#include <event2/event.h>
#include <event2/event_struct.h>

#include "control/runtime.h"

struct health;

struct health *health_new(struct event_base *base, struct runtime *rt);
/* health_set_runtime - check the backends of rt from now on (after a reload). */
void health_set_runtime(struct health *h, struct runtime *rt);
/* health_backend_state - 1 up, 0 down (last check failed), -1 not checked yet. */
int health_backend_state(const struct health *h, const struct rt_backend *b);
void health_free(struct health *h);

#endif /* TANDEM_HEALTH_H */
