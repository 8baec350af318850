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
#include "metrics/log.h"

#define OPS_KEPT 32          /* finished operations kept for GET /api/operations/ID */
#define POLL_MS 10
#define MAX_PAUSE_DEFAULT_MS 2000

enum op_state { OP_PENDING, OP_IN_PROGRESS, OP_COMPLETED, OP_FAILED };

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
    struct tm tm;
    if (t->tv_sec == 0)
        return json_null();
    gmtime_r(&t->tv_sec, &tm);
    size_t n = strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, sizeof(buf) - n, ".%03ldZ", t->tv_nsec / 1000000);
    return json_string(buf);
}

static json_t *
op_json(const struct operation *op)
{
    char id[16];
    snprintf(id, sizeof(id), "op-%u", op->id);
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:I, s:I, s:b}", "id", id, "type",
                     op->kind == CUTOVER_FORWARD ? "cutover" : "rollback", "state",
                     state_names[op->state], "reason",
                     op->reason[0] ? json_string(op->reason) : json_null(), "created",
                     time_json(&op->created), "started", time_json(&op->started), "finished",
                     time_json(&op->finished), "pause_ms", (json_int_t)op->pause_ms,
                     "max_pause_ms", (json_int_t)op->max_pause_ms, "force", op->force);
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

/* Every POLL_MS while in progress: all drained -> flip; past max_pause -> give up. */
static void
on_poll(evutil_socket_t fd, short what, void *arg)
{
    struct cutover *c = arg;
    struct operation *op = c->current;
    (void)fd;
    (void)what;
    if (op == NULL)
        return;
    long waiting = 0;
    for (int i = 0; i < op->nslots; i++) {
        long n = control_unready(op->slots[i], c->nworkers);
        waiting += n < 0 ? 1 : n;
    }
    uint64_t now = mono_ms();
    if (waiting == 0) {
        char why[200];
        op->pause_ms = now - op->pause_start_ms;
        /* as it will be recorded: completed, unless the record itself fails */
        op->state = OP_COMPLETED;
        clock_gettime(CLOCK_REALTIME, &op->finished);
        if (c->commit && c->commit(c->commit_arg, op->slots, op->nslots, op->target, why,
                                   sizeof(why)) != 0) {
            snprintf(op->reason, sizeof(op->reason),
                     "abandoned: %s; nothing was swapped, writes resumed on the old primary",
                     why);
            finish(c, op, OP_FAILED);
            log_error("op-%u: %s", op->id, op->reason);
            return;
        }
        for (int i = 0; i < op->nslots; i++)
            control_flip(op->slots[i], op->target);
        finish(c, op, OP_COMPLETED);
        log_info("op-%u: %s completed: roles %s, writes waited %llu ms", op->id,
                 op->kind == CUTOVER_FORWARD ? "cutover" : "rollback",
                 op->target ? "swapped (the shadow is the primary)" : "as configured",
                 (unsigned long long)op->pause_ms);
        return;
    }
    if (now - op->pause_start_ms >= op->max_pause_ms) {
        op->pause_ms = now - op->pause_start_ms;
        snprintf(op->reason, sizeof(op->reason),
                 "abandoned: the drain did not finish within %u ms (%ld session(s) still in a "
                 "transaction or waiting for the shadow); writes resumed on the old primary",
                 op->max_pause_ms, waiting);
        finish(c, op, OP_FAILED);
        log_warn("op-%u: %s", op->id, op->reason);
    }
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
    event_free(c->poll);
    free(c);
}

/* Why the shadow of l cannot take over now; NULL when it can. */
static const char *
refusal(const struct rt_listener *l, char *buf, size_t len)
{
    struct shadow_listener_stats st;
    int mode = control_mode(l->metric_slot, (int)l->conf->mode);
    if (mode == CONF_MODE_PASSTHROUGH) {
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

int
cutover_start(struct cutover *c, const struct runtime *rt, enum cutover_kind kind,
              uint32_t max_pause_ms, int force, json_t **reply, char *err, size_t errlen)
{
    char why[300];
    if (c->current != NULL) {
        snprintf(err, errlen, "op-%u (%s) is in progress", c->current->id,
                 c->current->kind == CUTOVER_FORWARD ? "cutover" : "rollback");
        return 409;
    }
    if (max_pause_ms == 0)
        max_pause_ms = MAX_PAUSE_DEFAULT_MS;

    struct operation *op = &c->ops[c->next_id % OPS_KEPT];
    memset(op, 0, sizeof(*op));
    op->id = c->next_id++;
    op->kind = kind;
    op->max_pause_ms = max_pause_ms;
    op->force = force;
    op->target = kind == CUTOVER_FORWARD;
    clock_gettime(CLOCK_REALTIME, &op->created);

    int conflict = 0;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        if (l->shadow == NULL || l->metric_slot < 0)
            continue;
        if (kind == CUTOVER_ROLLBACK) {
            /* reads back to the configured primary at once, whatever follows */
            const char *name = l->shadow->conf->name;
            long zero = 0;
            control_set_weights(rt, &name, &zero, 1, why, sizeof(why));
        }
        if (control_roles_swapped(l->metric_slot) == op->target)
            continue; /* already where the operation goes */
        if (!force && refusal(l, why, sizeof(why)) != NULL) {
            snprintf(op->reason, sizeof(op->reason), "refused: %s", why);
            conflict = 1;
            break;
        }
        op->slots[op->nslots++] = l->metric_slot;
    }
    if (!conflict && kind == CUTOVER_FORWARD && op->nslots == 0) {
        snprintf(op->reason, sizeof(op->reason),
                 "refused: no listener with a shadow is left to cut over");
        conflict = 1;
    }
    if (conflict) {
        op->state = OP_FAILED;
        clock_gettime(CLOCK_REALTIME, &op->finished);
        snprintf(err, errlen, "%s", op->reason);
        log_warn("op-%u: %s", op->id, op->reason);
        control_changed();
        return 409;
    }
    clock_gettime(CLOCK_REALTIME, &op->started);
    if (op->nslots == 0) {
        snprintf(op->reason, sizeof(op->reason), "reads moved to the primary; roles unchanged");
        op->state = OP_COMPLETED;
        op->finished = op->started;
        control_changed();
        *reply = json_pack("{s:o}", "operation", op_json(op));
        return 202;
    }
    op->state = OP_IN_PROGRESS;
    c->current = op;
    c->generation++;
    op->pause_start_ms = mono_ms();
    for (int i = 0; i < op->nslots; i++) {
        control_set_force(op->slots[i], force);
        control_set_paused(op->slots[i], 1, c->generation);
    }
    kick_workers(c);
    struct timeval tv = {.tv_sec = 0, .tv_usec = POLL_MS * 1000};
    event_add(c->poll, &tv);
    log_info("op-%u: %s started: new writes wait while the shadow catches up (at most %u ms)",
             op->id, kind == CUTOVER_FORWARD ? "cutover" : "rollback", max_pause_ms);
    *reply = json_pack("{s:o}", "operation", op_json(op));
    return 202;
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
                     "interrupted: tandem stopped before the operation ended");
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
