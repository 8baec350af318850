/*
 * fence.h - a fleet's fence: statements run on one PostgreSQL backend with
 * tandem's own login, on the main thread, without blocking it (libpq's
 * non-blocking API on the event base, as the health probes do).
 *
 *   fence_run ──► connect (user, password of the backend) ──► statement 1
 *                 ──► ... ──► statement n ──► done(arg, 1, NULL)
 *   any failure or the timeout ──► done(arg, 0, "statement 2: ERROR ...")
 *
 * Each statement is its own implicit transaction, in order; the first that
 * fails ends the run.  The job copies what it needs: the runtime may change
 * while it runs.
 */
#ifndef TANDEM_FENCE_H
#define TANDEM_FENCE_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "control/runtime.h"

struct fence_job;

/*
 * fence_run - run stmts[0..n) on b.  done is called exactly once, later
 * (never from inside fence_run), unless fence_cancel() came first.  NULL
 * when memory ran out (nothing runs, done is not called).
 */
struct fence_job *fence_run(struct event_base *base, const struct rt_backend *b,
                            const char (*stmts)[CONF_STATEMENT_MAX], size_t n,
                            uint32_t timeout_ms,
                            void (*done)(void *arg, int ok, const char *err), void *arg);

/* fence_cancel - stop j (its connection closed, done not called); NULL is fine. */
void fence_cancel(struct fence_job *j);

#endif /* TANDEM_FENCE_H */
