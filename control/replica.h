/*
 * replica.h - shadows fed by replication (shadow_source replication): how
 * far the shadow has applied what the primary wrote, and the SQL or Redis
 * steps a cutover runs on the two sides.
 *
 * One thread (the watch) reads positions with tandem's own connections,
 * every replication { poll }:
 *
 *   primary   t: pg_current_wal_insert_lsn() | INFO replication master_repl_offset
 *   shadow      : pg_stat_subscription latest_end_lsn (with the origin's
 *                 remote_lsn when readable) | pg_last_wal_replay_lsn()
 *                 | INFO replication slave_repl_offset
 *
 * and keeps the primary's recent samples (t, position).  The newest sample
 * whose position the shadow has applied gives `caught_up_ns`: everything
 * the primary had acknowledged at that moment is visible on the shadow.
 * So a read the primary answered at T can be compared on the shadow once
 * caught_up_ns > T (engine/mirror.c holds it until then), and a cutover
 * whose writes were drained at D may flip once caught_up_ns > D.
 *
 * Which side is "primary" follows the roles: after a flip the watch
 * measures the other way (a rollback needs the reverse replication).
 * Positions are published per listener slot and read from any thread.
 */
#ifndef TANDEM_REPLICA_H
#define TANDEM_REPLICA_H

#include <jansson.h>
#include <stdint.h>

#include "control/runtime.h"

struct replica_watch;

/*
 * replica_watch_start - watch every listener of rt with shadow_source
 * replication (none: a watch that does nothing, no thread).  Copies what
 * it needs from rt.  NULL when out of memory or the thread cannot start.
 */
struct replica_watch *replica_watch_start(const struct runtime *rt);
/* replica_watch_stop - stop the thread, close its connections, free w (NULL is fine). */
void replica_watch_stop(struct replica_watch *w);

/* replica_enabled - 1 when the listener's shadow is fed by replication. */
int replica_enabled(int listener_slot);

/*
 * replica_caught_up_ns - the newest moment (session_now_ns clock) whose
 * primary position the shadow has applied; 0 when never measured.
 */
uint64_t replica_caught_up_ns(int listener_slot);

/*
 * replica_last_move_ns - when the primary's position was last seen
 * advancing (a poll found it past the one before); 0 when never.  A read
 * answered before that may meet newer data on the shadow.
 */
uint64_t replica_last_move_ns(int listener_slot);

/*
 * replica_lag - 0 with the lag in ns and bytes (or offsets); -1 when not
 * measured now, *lag_ns then the age of the last moment known applied
 * (0 when none) and *lag_bytes 0.
 */
int replica_lag(int listener_slot, uint64_t *lag_ns, uint64_t *lag_bytes);

/* replica_status_json - {kind, primary_position, shadow_position, lag_*, error} or NULL. */
json_t *replica_status_json(int listener_slot);

/*
 * Steps.  replica_steps_run asks the watch to run, in order, the listener's
 * steps of this operation (rollback or not) and phase; each step on its
 * backend with tandem's own login, every one bounded by timeout_ms.  The
 * first failure ends the run.  0 when asked (or nothing to run: then done
 * at once), -1 when a run is in progress.
 */
enum replica_steps_state { REPLICA_STEPS_IDLE, REPLICA_STEPS_RUNNING, REPLICA_STEPS_DONE,
                           REPLICA_STEPS_FAILED };

int replica_steps_run(struct replica_watch *w, int listener_slot, int rollback, int phase,
                      uint32_t timeout_ms);
/*
 * replica_steps_poll - where the run is; when DONE or FAILED, *results
 * (a new array of {backend, statement, ok, result|error, ms}, the caller's)
 * and the watch is idle again.  err says why on FAILED.
 */
enum replica_steps_state replica_steps_poll(struct replica_watch *w, json_t **results,
                                            char *err, size_t errlen);

/* replica_render_prometheus - tandem_replication_lag_bytes{listener} and friends. */
struct rt_listener;
void replica_render_prometheus(const struct runtime *rt, FILE *out);

#endif /* TANDEM_REPLICA_H */
