/*
 * fleet.h - many tandems as one: the control state shared through a Redis
 * store (`control { store redis://HOST:PORT[/DB]; fleet NAME; }`).
 *
 *   member ──hiredis async (main thread, libevent adapter)──► Redis
 *     two connections: "cmd" for scripts and heartbeats, "sub" for a
 *     blocking XREAD of the fleet's log, so a read never waits behind a
 *     write and a write never waits behind the XREAD.
 *
 *   join     EVAL join: the state document + its log id, the running operation
 *            ──► apply (roles only where the store's epoch is higher)
 *            ──► XREAD from that log id, in order, for ever
 *            (the workers start accepting only now, or after join_timeout)
 *   change   control_changed() here ──► EVAL publish: state + XADD, one script
 *   member   every second SET fleet:NAME:member:ID (PX 5 s) + ZADD members
 *   cutover  asked here ──► EVAL op_start (the live members) ──► every member
 *            joins: pause, drain ──► EVAL report drained; the last one's
 *            report commits (the new state in the same script) ──► XADD commit
 *            ──► each member flips ──► reports swapped.  A member past
 *            max_pause asks EVAL report late: the operation aborts everywhere.
 *
 * Every store decision is one Lua script, so "all drained -> commit" and
 * "too late -> abort" cannot both happen: the first to run wins.
 *
 * Losing the store: the member keeps serving with the last state it knew;
 * API changes (weights, mode, cutover, rollback) are refused with 503;
 * reconnects with back-off (100 ms doubling to 5 s); on reconnect it
 * applies the store's state before anything else.  During an operation, a
 * member that had not yet reported "drained" aborts its part (the fleet
 * cannot commit without its report); one that had reported holds writes
 * until the store answers, because the others may have flipped.
 *
 * The store's password (password_file, read at every connect) is sent with
 * AUTH and never logged.
 */
#ifndef TANDEM_FLEET_H
#define TANDEM_FLEET_H

#include <event2/event.h>
#include <jansson.h>
#include <stdio.h>

#include "conf/conf.h"
#include "control/cutover.h"
#include "control/runtime.h"
#include "control/state.h"

struct fleet;

/*
 * fleet_open - join rt's fleet (rt->conf->control.store_enabled must be
 * set): connect, read the state, then call ready(arg) once, when the
 * state was applied or join_timeout passed without the store (logged
 * loudly: the state file's or the configuration's roles are used).
 * st, c and rt must outlive the fleet.  NULL when memory ran out.
 */
struct fleet *fleet_open(struct event_base *base, const struct runtime *rt, struct state *st,
                         struct cutover *c, void (*ready)(void *arg), void *arg);

/*
 * fleet_set_runtime - SIGHUP, after control_load(rt): rt from now on (the
 * store's address changes at restart only).  The file's weights and mode
 * are not published: the fleet's state is read again and applied over
 * them (alone, a reload resets them; in a fleet, the fleet's win).
 */
void fleet_set_runtime(struct fleet *f, const struct runtime *rt);

/* fleet_connected - 1 while the store answers and the member applied its state. */
int fleet_connected(const struct fleet *f);

/* fleet_count_refused - a change refused because the store is unreachable (the API's 503). */
void fleet_count_refused(struct fleet *f);

/*
 * fleet_render_prometheus - tandem_fleet_*_total (store lost, joins, states
 * applied and published, changes refused, operations committed and aborted),
 * tandem_fleet_store_up, tandem_fleet_state_version, tandem_fleet_members.
 */
void fleet_render_prometheus(const struct fleet *f, FILE *out);

/* fleet_json - GET /api/fleet: the members, the running operation (a new object). */
json_t *fleet_json(const struct fleet *f);

/*
 * fleet_report_json - GET /api/shadow/report?scope=fleet: this member's
 * report as it is now merged with the other live members' (each publishes
 * its top statements every 5 s, kept 15 s; fleet_codec.h says how they
 * merge).  A new object, NULL when memory ran out.
 */
json_t *fleet_report_json(const struct fleet *f, size_t top_n);

/* fleet_free - stop (the member's key expires by its TTL); NULL is fine. */
void fleet_free(struct fleet *f);

/*
 * fleet_check - tandem -t: the password file is readable and not empty.
 * Writes "FILE: message" to err; 0 when fine or no store is configured.
 */
int fleet_check(const struct conf *conf, FILE *out, FILE *err);

#endif /* TANDEM_FLEET_H */
