/*
 * fence_redis.h - a fleet's fence on a Redis backend: commands (ACL SETUSER
 * app -@write, ...) run with tandem's own login, over TLS as the backend's
 * settings say (verify/redis_link.h), on a thread of the job's own so the
 * main loop never waits; the result comes back on the main loop.
 *
 *   fence_redis_run ──► connect ──► AUTH user password (when the backend
 *                       has a password) ──► command 1 ──► ... ──► command n
 *                       ──► done(arg, 1, NULL)
 *   any failure, an error reply or the timeout ──► done(arg, 0, "command 2: ERR ...")
 *
 * One command at a time, in order; the first error reply ends the run.
 * Each command is a line split as redis-cli does (quotes, escapes).  The
 * job copies what it needs: the runtime may change while it runs.  A job
 * past its timeout, or cancelled, sends no further command.
 */
#ifndef TANDEM_FENCE_REDIS_H
#define TANDEM_FENCE_REDIS_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "control/runtime.h"

struct fence_redis_job;

/*
 * fence_redis_run - run cmds[0..n) on b.  done is called exactly once,
 * later (never from inside fence_redis_run), unless fence_redis_cancel()
 * came first.  NULL when n is 0 or memory ran out (nothing runs, done is
 * not called).
 */
struct fence_redis_job *fence_redis_run(struct event_base *base, const struct rt_backend *b,
                                        const char (*cmds)[CONF_STATEMENT_MAX], size_t n,
                                        uint32_t timeout_ms,
                                        void (*done)(void *arg, int ok, const char *err),
                                        void *arg);

/* fence_redis_cancel - stop j (no further command is sent, done not called); NULL is fine. */
void fence_redis_cancel(struct fence_redis_job *j);

#endif /* TANDEM_FENCE_REDIS_H */
