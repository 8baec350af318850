/*
 * cutover.c - cutover and rollback operations (see cutover.h).
 */
#include "control/cutover.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "control/control.h"
#include "control/replica.h"
#include "metrics/log.h"

#define OPS_KEPT 32          /* finished operations kept for GET /api/operations/ID */
#define POLL_MS 10
#define MAX_PAUSE_DEFAULT_MS 2000

enum op_state { OP_PENDING, OP_IN_PROGRESS, OP_COMPLETED, OP_FAILED };

/*
 * Where an operation in progress is.  A listener whose shadow is fed by
 * replication adds two waits to the drain: the shadow applying what the
 * primary had when the drain ended, and the configured steps on either
 * side of the flip (control/replica.h).
 */
enum op_phase {
    PHASE_DRAIN,       /* sessions finishing the writes they sent */
    PHASE_CATCH_UP,    /* replicated shadows applying the primary's position */
    PHASE_BEFORE_FLIP, /* before_flip steps, listener by listener */
    PHASE_AFTER_FLIP,  /* flipped; after_flip steps, writes still paused */
};

static const char *const state_names[] = {"pending", "in_progress", "completed", "failed"};
/* a state file records them by the same numbers */
_Static_assert((int)OP_FAILED == (int)STATE_OP_FAILED && (int)OP_COMPLETED == (int)STATE_OP_COMPLETED &&
                   (int)OP_IN_PROGRESS == (int)STATE_OP_IN_PROGRESS,
               "operation states");

struct operation {
    unsigned id;
    enum cutover_kind kind;
    enum op_state state;
    char reason[256];
    struct timespec created, started, finished; /* wall clock, for the API */
    uint64_t pause_start_ms, pause_ms;           /* monotonic: how long writes waited */
    uint32_t max_pause_ms;
    int force;
    int target;                                   /* roles_swapped after the flip */
    int slots[METRIC_MAX_LISTENERS];
    int nslots;
    char fleet_id[32];                            /* "" alone; the store's operation id */
    int reported;                                 /* fleet: drained was reported */
    int late;                                     /* fleet: max_pause passed was reported */
    int fleet_steps;                              /* fleet: this member runs the steps: */
                                                  /* 1 before_flip, 2 after_flip, 0 none */
    enum op_phase phase;
    uint64_t drained_ns;                          /* the drain ended (session clock) */
    int step_at;                                  /* index into slots of the step run */
    int steps_running;
    json_t *steps;                                /* results of every step run, in order */
};

struct cutover {
    struct event_base *base;
    struct event *poll;
    void (*kick)(void *arg); /* every worker looks at its sessions now */
    void *kick_arg;
    int nworkers;
    struct operation ops[OPS_KEPT]; /* ring by id */
    unsigned next_id;
    struct operation *current;      /* in progress, or NULL */
    uint32_t generation;
    int (*commit)(void *arg, const int *slots, int nslots, int target, char *err, size_t errlen);
    void *commit_arg;
    struct cutover_fleet fleet;     /* fleet.ask == NULL: alone */
    struct operation *pending;      /* asked here, waiting for the store to open it */
    struct replica_watch *replica;  /* runs the steps of replicated listeners */
};

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static json_t *
time_json(const struct timespec *t)
{
    char buf[40];
    if (t->tv_sec == 0)
        return json_null();
    log_format_time((int64_t)t->tv_sec * 1000 + t->tv_nsec / 1000000, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *
op_json(const struct operation *op)
{
    char id[16];
    snprintf(id, sizeof(id), "op-%u", op->id);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:I, s:I, s:b}", "id", id, "type",
                     op->kind == CUTOVER_FORWARD ? "cutover" : "rollback", "state",
                     state_names[op->state], "reason",
                     op->reason[0] ? json_string(op->reason) : json_null(), "created",
                     time_json(&op->created), "started", time_json(&op->started), "finished",
                     time_json(&op->finished), "pause_ms", (json_int_t)op->pause_ms,
                     "max_pause_ms", (json_int_t)op->max_pause_ms, "force", op->force);
    if (o != NULL && op->fleet_id[0])
        json_object_set_new(o, "fleet_operation", json_string(op->fleet_id));
    if (o != NULL && op->steps != NULL)
        json_object_set_new(o, "steps", json_deep_copy(op->steps));
    return o;
}

static void
kick_workers(struct cutover *c)
{
    c->kick(c->kick_arg);
}

static void
finish(struct cutover *c, struct operation *op, enum op_state state)
{
    op->state = state;
    clock_gettime(CLOCK_REALTIME, &op->finished);
    c->current = NULL;
    event_del(c->poll);
    for (int i = 0; i < op->nslots; i++) {
        control_set_paused(op->slots[i], 0, c->generation);
        control_set_force(op->slots[i], 0);
    }
    kick_workers(c);
    control_changed();
}

/* Have the replicated shadows of op applied what their primaries had when the drain ended? */
static int
caught_up(const struct operation *op)
{
    if (op->force)
        return 1; /* forced: what the shadow has not applied is given up */
    for (int i = 0; i < op->nslots; i++)
        if (replica_enabled(op->slots[i]) && replica_caught_up_ns(op->slots[i]) <= op->drained_ns)
            return 0;
    return 1;
}

/* The writes still paused: how long a step may take (at least 2 s). */
static uint32_t
step_timeout(const struct operation *op, uint64_t now_ms)
{
    uint64_t used = now_ms - op->pause_start_ms;
    uint64_t left = used < op->max_pause_ms ? op->max_pause_ms - used : 0;
    return left < 2000 ? 2000 : (uint32_t)left;
}

/*
 * steps - run the phase's steps of op's replicated listeners, one listener
 * after the other (the watch runs one list at a time).  1 when all ran, 0
 * while one runs, -1 when one failed (why says which and how).
 */
static int
steps(struct cutover *c, struct operation *op, int phase, char *why, size_t whylen)
{
    if (c->replica == NULL)
        return 1;
    for (; op->step_at < op->nslots; op->step_at++) {
        int slot = op->slots[op->step_at];
        if (!replica_enabled(slot))
            continue;
        if (!op->steps_running) {
            if (replica_steps_run(c->replica, slot, op->kind == CUTOVER_ROLLBACK, phase,
                                  step_timeout(op, mono_ms())) != 0)
                return 0; /* the watch is busy with another run: ask again */
            op->steps_running = 1;
            return 0;
        }
        json_t *results = NULL;
        enum replica_steps_state st = replica_steps_poll(c->replica, &results, why, whylen);
        if (st == REPLICA_STEPS_RUNNING)
            return 0;
        if (st == REPLICA_STEPS_IDLE) { /* a reload replaced the watch while it ran */
            op->steps_running = 0;
            snprintf(why, whylen, "step run lost: the configuration was reloaded meanwhile");
            return -1;
        }
        op->steps_running = 0;
        if (op->steps == NULL)
            op->steps = json_array();
        size_t i;
        json_t *r;
        json_array_foreach(results, i, r) {
            json_object_set_new(r, "phase", json_string(phase == CONF_STEP_BEFORE_FLIP
                                                            ? "before_flip"
                                                            : "after_flip"));
            json_array_append(op->steps, r);
        }
        json_decref(results);
        if (st == REPLICA_STEPS_FAILED)
            return -1;
    }
    return 1;
}

/* flip - record the new roles, then flip every listener of op. */
static void
flip(struct cutover *c, struct operation *op, uint64_t now)
{
    char why[200];
    op->pause_ms = now - op->pause_start_ms;
    /* as it will be recorded: completed, unless the record itself fails */
    op->state = OP_COMPLETED;
    clock_gettime(CLOCK_REALTIME, &op->finished);
    if (c->commit &&
        c->commit(c->commit_arg, op->slots, op->nslots, op->target, why, sizeof(why)) != 0) {
        snprintf(op->reason, sizeof(op->reason),
                 "abandoned: %s; nothing was swapped, writes resumed on the old primary", why);
        finish(c, op, OP_FAILED);
        log_error("op-%u: %s", op->id, op->reason);
        return;
    }
    for (int i = 0; i < op->nslots; i++)
        control_flip(op->slots[i], op->target);
    log_info("op-%u: %s: roles %s after %llu ms of paused writes", op->id,
             op->kind == CUTOVER_FORWARD ? "cutover" : "rollback",
             op->target ? "swapped (the shadow is the primary)" : "as configured",
             (unsigned long long)op->pause_ms);
    /* writes stay paused through the after_flip steps (a reverse subscription must exist
     * before the new primary takes a write the old one should get back) */
    op->state = OP_IN_PROGRESS;
    op->phase = PHASE_AFTER_FLIP;
    op->step_at = 0;
    kick_workers(c);
}

/* The after_flip steps ran (or one failed): the operation ends; the flip stands either way. */
static void
after_flip(struct cutover *c, struct operation *op)
{
    char why[300] = "";
    int r = steps(c, op, CONF_STEP_AFTER_FLIP, why, sizeof(why));
    if (r == 0)
        return;
    if (r < 0)
        snprintf(op->reason, sizeof(op->reason),
                 "completed, but an after_flip %s; the new primary takes the writes: repair "
                 "the replication back before a rollback",
                 why);
    op->pause_ms = mono_ms() - op->pause_start_ms;
    finish(c, op, OP_COMPLETED);
    log_at(r < 0 ? CONF_LOG_ERROR : CONF_LOG_INFO, 0, NULL,
           "op-%u: %s completed: writes waited %llu ms%s%s", op->id,
           op->kind == CUTOVER_FORWARD ? "cutover" : "rollback", (unsigned long long)op->pause_ms,
           r < 0 ? "; " : "", r < 0 ? op->reason : "");
}

static const char *
lag_text(const struct operation *op, char *buf, size_t len)
{
    buf[0] = '\0';
    for (int i = 0; i < op->nslots; i++) {
        uint64_t ns, bytes;
        if (!replica_enabled(op->slots[i]))
            continue;
        if (replica_lag(op->slots[i], &ns, &bytes) == 0)
            snprintf(buf, len, "lag %.3f s, %llu bytes", (double)ns / 1e9,
                     (unsigned long long)bytes);
        else
            snprintf(buf, len, "the replication position is not measured");
    }
    return buf;
}

/*
 * fleet_steps - the fleet's operation, all members drained and the old
 * primary fenced: this member (the one that coordinates the commit) runs
 * the steps of its replicated listeners once for the fleet, before_flip
 * then after_flip, writes still paused everywhere (so a reverse
 * subscription exists before the new primary takes its first write, as
 * alone).  A before_flip failure aborts the operation; an after_flip one is
 * recorded and the commit goes on (the new primary may be promoted already).
 */
static void
fleet_steps(struct cutover *c, struct operation *op)
{
    char why[300] = "";
    int after = op->fleet_steps == 2;
    int r = steps(c, op, after ? CONF_STEP_AFTER_FLIP : CONF_STEP_BEFORE_FLIP, why, sizeof(why));
    if (r == 0)
        return;
    if (r < 0 && !after) {
        char text[340];
        op->fleet_steps = 0;
        snprintf(text, sizeof(text), "before_flip %s", why);
        c->fleet.stepped(c->fleet.arg, 0, text);
        return;
    }
    if (r < 0) {
        snprintf(op->reason, sizeof(op->reason),
                 "completed, but an after_flip %s; the new primary takes the writes: repair "
                 "the replication back before a rollback",
                 why);
        log_error("op-%u (%s): %s", op->id, op->fleet_id, op->reason);
    }
    if (!after) {
        op->fleet_steps = 2;
        op->step_at = 0;
        return;
    }
    op->fleet_steps = 0;
    c->fleet.stepped(c->fleet.arg, 1, NULL);
}

/*
 * Every POLL_MS while in progress: drained -> (replicated: caught up ->
 * before_flip steps) -> flip -> (after_flip steps) -> completed; past
 * max_pause before the flip -> give up.
 */
static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct cutover *c = arg;
    struct operation *op = c->current;
    (void)fd;
    (void)what;
    if (op == NULL)
        return;
    if (op->phase == PHASE_AFTER_FLIP) {
        after_flip(c, op);
        return;
    }
    long waiting = 0;
    for (int i = 0; i < op->nslots; i++) {
        long n = control_unready(op->slots[i], c->nworkers);
        waiting += n < 0 ? 1 : n;
    }
    uint64_t now = mono_ms();
    if (op->phase == PHASE_DRAIN && waiting == 0) {
        op->phase = PHASE_CATCH_UP;
        /* rounded up: a replica sample taken before this moment never counts as after it */
        op->drained_ns = (mono_ms() + 1) * 1000000ull;
    }
    if (op->phase == PHASE_CATCH_UP && caught_up(op))
        op->phase = PHASE_BEFORE_FLIP;
    if (op->fleet_id[0]) {
        /* the store decides; this member says where it is (and runs the steps when asked) */
        if (op->fleet_steps)
            fleet_steps(c, op);
        if (c->current != op)
            return;
        if (op->phase >= PHASE_BEFORE_FLIP && !op->reported) {
            op->reported = 1;
            op->pause_ms = now - op->pause_start_ms;
            log_info("op-%u (%s): drained after %llu ms; waiting for the fleet", op->id,
                     op->fleet_id, (unsigned long long)op->pause_ms);
            c->fleet.drained(c->fleet.arg);
        } else if (now - op->pause_start_ms >= op->max_pause_ms && !op->late) {
            op->late = 1;
            log_warn("op-%u (%s): no decision within %u ms (%ld session(s) here not drained)",
                     op->id, op->fleet_id, op->max_pause_ms, waiting);
            c->fleet.late(c->fleet.arg);
        }
        return;
    }
    if (op->phase == PHASE_BEFORE_FLIP) {
        char why[300] = "";
        int r = steps(c, op, CONF_STEP_BEFORE_FLIP, why, sizeof(why));
        if (r > 0) {
            flip(c, op, now);
            if (c->current == op && op->phase == PHASE_AFTER_FLIP)
                after_flip(c, op);
            return;
        }
        if (r < 0) {
            op->pause_ms = now - op->pause_start_ms;
            snprintf(op->reason, sizeof(op->reason),
                     "abandoned: before_flip %s; nothing was swapped, writes resumed on the old "
                     "primary", why);
            finish(c, op, OP_FAILED);
            log_error("op-%u: %s", op->id, op->reason);
            return;
        }
        return; /* a step runs: its own timeout bounds it, then it decides */
    }
    if (now - op->pause_start_ms >= op->max_pause_ms) {
        char lag[120];
        op->pause_ms = now - op->pause_start_ms;
        if (op->phase == PHASE_CATCH_UP)
            snprintf(op->reason, sizeof(op->reason),
                     "abandoned: the shadow did not catch up with the primary's replication "
                     "within %u ms (%s); writes resumed on the old primary",
                     op->max_pause_ms, lag_text(op, lag, sizeof(lag)));
        else
            snprintf(op->reason, sizeof(op->reason),
                     "abandoned: the drain did not finish within %u ms (%ld session(s) still in "
                     "a transaction or waiting for the shadow); writes resumed on the old primary",
                     op->max_pause_ms, waiting);
        finish(c, op, OP_FAILED);
        log_warn("op-%u: %s", op->id, op->reason);
    }
}

void
cutover_set_replica(struct cutover *c, struct replica_watch *w)
{
    c->replica = w;
}

struct cutover *
cutover_new(struct event_base *base, void (*kick)(void *arg), void *kick_arg, int nworkers)
{
    struct cutover *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->base = base;
    c->kick = kick;
    c->kick_arg = kick_arg;
    c->nworkers = nworkers;
    c->next_id = 1;
    c->poll = event_new(base, -1, EV_PERSIST, on_poll, c);
    if (c->poll == NULL) {
        free(c);
        return NULL;
    }
    return c;
}

void
cutover_free(struct cutover *c)
{
    if (c == NULL)
        return;
    for (int i = 0; i < OPS_KEPT; i++)
        json_decref(c->ops[i].steps);
    event_free(c->poll);
    free(c);
}

/* Why the shadow of l cannot take over now; NULL when it can. */
static const char *
refusal(const struct rt_listener *l, char *buf, size_t len)
{
    struct shadow_listener_stats st;
    int mode = control_mode(l->metric_slot, (int)l->conf->mode);
    uint64_t lag_ns, lag_bytes;
    if (replica_enabled(l->metric_slot)) {
        /* replication feeds the shadow, whatever the mode: it must be measured to wait for it */
        if (replica_lag(l->metric_slot, &lag_ns, &lag_bytes) != 0) {
            json_t *rs = replica_status_json(l->metric_slot);
            const char *e = rs ? json_string_value(json_object_get(rs, "error")) : NULL;
            snprintf(buf, len, "listener \"%s\": the shadow's replication position is not "
                     "measured (%s); fix it, or force", l->conf->name, e ? e : "unknown");
            json_decref(rs);
            return buf;
        }
    } else if (mode == CONF_MODE_PASSTHROUGH) {
        snprintf(buf, len, "listener \"%s\" is in mode passthrough: nothing mirrors to \"%s\"",
                 l->conf->name, l->shadow->conf->name);
        return buf;
    }
    if (shadow_listener_stats(l->metric_slot, 60, &st) != 0)
        return NULL;
    if (st.diverged) {
        struct shadow_divergence dv;
        shadow_divergence(l->metric_slot, &dv);
        if (dv.count > 0)
            snprintf(buf, len, "listener \"%s\": the shadow diverged (%s: %.120s%s); "
                     "resynchronize it, or force", l->conf->name, dv.reason, dv.statement,
                     strlen(dv.statement) > 120 ? "..." : "");
        else
            snprintf(buf, len, "listener \"%s\": the shadow diverged (a write was lost to it); "
                     "resynchronize it, or force", l->conf->name);
        return buf;
    }
    if (st.detached_sessions > 0) {
        snprintf(buf, len, "listener \"%s\": %llu session(s) have their shadow detached; "
                 "wait for them to re-attach, or force", l->conf->name,
                 (unsigned long long)st.detached_sessions);
        return buf;
    }
    return NULL;
}

/* move_reads_home - a rollback gives every listener's reads to its configured primary at once. */
static void
move_reads_home(const struct runtime *rt)
{
    char why[300];
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        if (l->shadow == NULL || l->metric_slot < 0)
            continue;
        const char *name = l->shadow->conf->name;
        long zero = 0;
        control_set_weights(rt, &name, &zero, 1, why, sizeof(why));
    }
}

/*
 * choose - the listeners op flips into op->slots.  -1 with op->reason
 * ("refused: ...") when one of them cannot take over and op is not forced.
 */
static int
choose(struct operation *op, const struct runtime *rt)
{
    char why[300];
    op->nslots = 0;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        if (l->shadow == NULL || l->metric_slot < 0)
            continue;
        if (control_roles_swapped(l->metric_slot) == op->target)
            continue; /* already where the operation goes */
        if (!op->force && refusal(l, why, sizeof(why)) != NULL) {
            snprintf(op->reason, sizeof(op->reason), "refused: %s", why);
            return -1;
        }
        op->slots[op->nslots++] = l->metric_slot;
    }
    return 0;
}

static struct operation *
new_operation(struct cutover *c, enum cutover_kind kind, uint32_t max_pause_ms, int force)
{
    struct operation *op = &c->ops[c->next_id % OPS_KEPT];
    json_decref(op->steps);
    memset(op, 0, sizeof(*op));
    op->id = c->next_id++;
    op->kind = kind;
    op->max_pause_ms = max_pause_ms ? max_pause_ms : MAX_PAUSE_DEFAULT_MS;
    op->force = force;
    op->target = kind == CUTOVER_FORWARD;
    clock_gettime(CLOCK_REALTIME, &op->created);
    return op;
}

static void
refuse(struct cutover *c, struct operation *op)
{
    op->state = OP_FAILED;
    clock_gettime(CLOCK_REALTIME, &op->finished);
    log_warn("op-%u: %s", op->id, op->reason);
    control_changed();
}

/* begin - pause writes on op's listeners and poll until drained or max_pause. */
static void
begin(struct cutover *c, struct operation *op)
{
    clock_gettime(CLOCK_REALTIME, &op->started);
    op->state = OP_IN_PROGRESS;
    c->current = op;
    c->generation++;
    op->pause_start_ms = mono_ms();
    for (int i = 0; i < op->nslots; i++) {
        control_set_force(op->slots[i], op->force);
        control_set_paused(op->slots[i], 1, c->generation);
    }
    kick_workers(c);
    struct timeval tv = {.tv_sec = 0, .tv_usec = POLL_MS * 1000};
    event_add(c->poll, &tv);
    log_info("op-%u: %s started%s%s: new writes wait while the shadow catches up (at most %u ms)",
             op->id, op->kind == CUTOVER_FORWARD ? "cutover" : "rollback",
             op->fleet_id[0] ? " for the fleet as " : "", op->fleet_id, op->max_pause_ms);
}

int
cutover_start(struct cutover *c, const struct runtime *rt, enum cutover_kind kind,
              uint32_t max_pause_ms, int force, json_t **reply, char *err, size_t errlen)
{
    if (c->current != NULL || c->pending != NULL) {
        const struct operation *busy = c->current ? c->current : c->pending;
        snprintf(err, errlen, "op-%u (%s) is in progress", busy->id,
                 busy->kind == CUTOVER_FORWARD ? "cutover" : "rollback");
        return 409;
    }
    struct operation *op = new_operation(c, kind, max_pause_ms, force);
    if (kind == CUTOVER_ROLLBACK && c->fleet.ask == NULL)
        move_reads_home(rt); /* whatever follows; a fleet's members each do it when they join */
    int conflict = choose(op, rt);
    if (!conflict && kind == CUTOVER_FORWARD && op->nslots == 0) {
        snprintf(op->reason, sizeof(op->reason),
                 "refused: no listener with a shadow is left to cut over");
        conflict = 1;
    }
    if (conflict) {
        snprintf(err, errlen, "%s", op->reason);
        refuse(c, op);
        return 409;
    }
    if (c->fleet.ask != NULL) {
        /* no member flips on its own: the store opens the operation for every member */
        char why[300];
        op->state = OP_PENDING;
        c->pending = op;
        if (c->fleet.ask(c->fleet.arg, op->id, kind, op->max_pause_ms, force, why,
                         sizeof(why)) != 0) {
            c->pending = NULL;
            snprintf(op->reason, sizeof(op->reason), "refused: %s", why);
            snprintf(err, errlen, "%s", op->reason);
            refuse(c, op);
            return 503;
        }
        control_changed();
        *reply = json_pack("{s:o}", "operation", op_json(op));
        return 202;
    }
    if (op->nslots == 0) {
        clock_gettime(CLOCK_REALTIME, &op->started);
        snprintf(op->reason, sizeof(op->reason), "reads moved to the primary; roles unchanged");
        op->state = OP_COMPLETED;
        op->finished = op->started;
        control_changed();
        *reply = json_pack("{s:o}", "operation", op_json(op));
        return 202;
    }
    begin(c, op);
    control_changed(); /* in the state file: a restart lists it as interrupted */
    *reply = json_pack("{s:o}", "operation", op_json(op));
    return 202;
}

void
cutover_set_fleet(struct cutover *c, const struct cutover_fleet *f)
{
    if (f != NULL)
        c->fleet = *f;
    else
        memset(&c->fleet, 0, sizeof(c->fleet));
}

int
cutover_join(struct cutover *c, const struct runtime *rt, unsigned local_id,
             enum cutover_kind kind, uint32_t max_pause_ms, int force, const char *fleet_id,
             char *err, size_t errlen)
{
    struct operation *op = NULL;
    if (c->current != NULL) {
        snprintf(err, errlen, "op-%u is in progress on this member", c->current->id);
        return -1;
    }
    if (c->pending != NULL && c->pending->id == local_id)
        op = c->pending;
    else if (c->pending != NULL) {
        /* asked here, but the store opened another operation first */
        cutover_fail_pending(c, c->pending->id, "another fleet operation began first");
    }
    c->pending = NULL;
    if (op == NULL)
        op = new_operation(c, kind, max_pause_ms, force);
    op->kind = kind;
    op->target = kind == CUTOVER_FORWARD;
    op->max_pause_ms = max_pause_ms ? max_pause_ms : MAX_PAUSE_DEFAULT_MS;
    op->force = force;
    snprintf(op->fleet_id, sizeof(op->fleet_id), "%s", fleet_id);
    if (kind == CUTOVER_ROLLBACK)
        move_reads_home(rt);
    if (choose(op, rt) != 0) {
        snprintf(err, errlen, "%s", op->reason);
        refuse(c, op);
        return -1;
    }
    begin(c, op);
    control_changed();
    return 0;
}

int
cutover_fleet_has_steps(const struct cutover *c)
{
    const struct operation *op = c->current;
    if (c->replica == NULL || op == NULL || op->fleet_id[0] == '\0')
        return 0;
    for (int i = 0; i < op->nslots; i++)
        if (replica_enabled(op->slots[i]))
            return 1;
    return 0;
}

int
cutover_fleet_run_steps(struct cutover *c)
{
    struct operation *op = c->current;
    if (!cutover_fleet_has_steps(c) || c->fleet.stepped == NULL)
        return -1;
    op->fleet_steps = 1;
    op->step_at = 0;
    op->steps_running = 0;
    log_info("op-%u (%s): running the fleet's steps here (before_flip, after_flip)", op->id,
             op->fleet_id);
    return 0;
}

int
cutover_joined(const struct cutover *c)
{
    return c->current != NULL && c->current->fleet_id[0] != '\0';
}

void
cutover_decide(struct cutover *c, int commit, const char *reason)
{
    struct operation *op = c->current;
    char why[300];
    if (op == NULL || op->fleet_id[0] == '\0')
        return;
    op->pause_ms = mono_ms() - op->pause_start_ms;
    if (!commit) {
        snprintf(op->reason, sizeof(op->reason), "%s", reason);
        finish(c, op, OP_FAILED);
        log_warn("op-%u (%s): %s", op->id, op->fleet_id, op->reason);
        return;
    }
    op->state = OP_COMPLETED;
    clock_gettime(CLOCK_REALTIME, &op->finished);
    /* the store holds the new roles already: a state file that cannot follow is only logged */
    if (c->commit && c->commit(c->commit_arg, op->slots, op->nslots, op->target, why,
                               sizeof(why)) != 0)
        log_error("op-%u (%s): committed by the fleet, but %s", op->id, op->fleet_id, why);
    for (int i = 0; i < op->nslots; i++)
        control_flip(op->slots[i], op->target);
    finish(c, op, OP_COMPLETED);
    log_info("op-%u (%s): %s committed by the fleet: roles %s, writes waited %llu ms", op->id,
             op->fleet_id, op->kind == CUTOVER_FORWARD ? "cutover" : "rollback",
             op->target ? "swapped (the shadow is the primary)" : "as configured",
             (unsigned long long)op->pause_ms);
}

void
cutover_fail_pending(struct cutover *c, unsigned local_id, const char *reason)
{
    struct operation *op = c->pending;
    if (op == NULL || op->id != local_id)
        return;
    c->pending = NULL;
    snprintf(op->reason, sizeof(op->reason), "%s", reason);
    refuse(c, op);
}

void
cutover_kick(struct cutover *c)
{
    kick_workers(c);
}

int
cutover_flip_slots(const struct cutover *c, int *slots, int max, int *target)
{
    const struct operation *op = c->current;
    int n = 0;
    *target = op ? op->target : 0;
    for (int i = 0; op && i < op->nslots && n < max; i++)
        slots[n++] = op->slots[i];
    return n;
}

json_t *
cutover_operation_json(const struct cutover *c, const char *id)
{
    char *end;
    if (strncmp(id, "op-", 3) != 0)
        return NULL;
    unsigned long n = strtoul(id + 3, &end, 10);
    if (*end != '\0' || n == 0 || n >= c->next_id || c->next_id - n > OPS_KEPT ||
        c->ops[n % OPS_KEPT].id != n)
        return NULL;
    return op_json(&c->ops[n % OPS_KEPT]);
}

json_t *
cutover_latest_json(const struct cutover *c)
{
    if (c->next_id == 1 || c->ops[(c->next_id - 1) % OPS_KEPT].id != c->next_id - 1)
        return NULL;
    return op_json(&c->ops[(c->next_id - 1) % OPS_KEPT]);
}

void
cutover_on_commit(struct cutover *c,
                  int (*commit)(void *arg, const int *slots, int nslots, int target, char *err,
                                size_t errlen),
                  void *arg)
{
    c->commit = commit;
    c->commit_arg = arg;
}

static int64_t
wall_ms(const struct timespec *t)
{
    return t->tv_sec == 0 ? 0 : (int64_t)t->tv_sec * 1000 + t->tv_nsec / 1000000;
}

static struct timespec
wall_ts(int64_t ms)
{
    struct timespec t = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000};
    return t;
}

size_t
cutover_records(const struct cutover *c, struct state_op *out, size_t max, unsigned *next_id)
{
    size_t n = 0;
    if (max > OPS_KEPT)
        max = OPS_KEPT;
    unsigned first = c->next_id > max ? c->next_id - (unsigned)max : 1;
    *next_id = c->next_id;
    for (unsigned id = first; id < c->next_id; id++) {
        const struct operation *op = &c->ops[id % OPS_KEPT];
        if (op->id != id)
            continue; /* not restored from a state file */
        struct state_op *r = &out[n++];
        memset(r, 0, sizeof(*r));
        r->id = op->id;
        r->type = op->kind == CUTOVER_FORWARD ? STATE_OP_CUTOVER : STATE_OP_ROLLBACK;
        r->state = (enum state_op_state)op->state;
        snprintf(r->reason, sizeof(r->reason), "%s", op->reason);
        r->created_ms = wall_ms(&op->created);
        r->started_ms = wall_ms(&op->started);
        r->finished_ms = wall_ms(&op->finished);
        r->pause_ms = op->pause_ms;
        r->max_pause_ms = op->max_pause_ms;
        r->force = op->force;
    }
    return n;
}

void
cutover_restore(struct cutover *c, const struct state_op *ops, size_t n, unsigned next_id)
{
    for (size_t i = 0; i < n; i++) {
        const struct state_op *r = &ops[i];
        struct operation *op = &c->ops[r->id % OPS_KEPT];
        memset(op, 0, sizeof(*op));
        op->id = r->id;
        op->kind = r->type == STATE_OP_CUTOVER ? CUTOVER_FORWARD : CUTOVER_ROLLBACK;
        op->state = (enum op_state)r->state;
        snprintf(op->reason, sizeof(op->reason), "%s", r->reason);
        if (op->state == OP_PENDING || op->state == OP_IN_PROGRESS) {
            op->state = OP_FAILED;
            snprintf(op->reason, sizeof(op->reason),
                     "interrupted: tandem stopped before the operation ended (the roles are "
                     "the state file's: see each listener's epoch)");
        }
        op->created = wall_ts(r->created_ms);
        op->started = wall_ts(r->started_ms);
        op->finished = wall_ts(r->finished_ms);
        op->pause_ms = r->pause_ms;
        op->max_pause_ms = r->max_pause_ms;
        op->force = r->force;
        op->target = op->kind == CUTOVER_FORWARD;
    }
    if (next_id > c->next_id)
        c->next_id = next_id;
}
