/*
 * guard.c - automatic guards (see guard.h).
 */
#include "control/guard.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "control/control.h"
#include "metrics/log.h"

#define GUARD_MAX (METRIC_MAX_LISTENERS * 17)
#define EVAL_MS 1000

enum guard_state { GUARD_INACTIVE, GUARD_OK, GUARD_TRIPPED };

/* A listener in mode split with no guard of its own gets this one. */
static const struct conf_guard default_guard = {
    .name = "shadow_errors",
    .metric = CONF_GUARD_SHADOW_ERROR_RATE,
    .above = 0.05,
    .window_ms = 60000,
    .min_samples = 100,
    .action = CONF_GUARD_READS_TO_PRIMARY,
    .cooldown_ms = 300000,
};

struct guard {
    struct conf_guard conf;      /* copied: survives the runtime it came from */
    char listener[CONF_NAME_MAX];
    int slot;                    /* listener metric slot */
    int implicit;                /* the default guard: active in mode split only */
    enum guard_state state;
    double value;                /* last evaluation; NaN without samples */
    uint64_t samples;
    uint64_t trips;
    time_t last_trip;
    uint64_t cooldown_until_ms;  /* monotonic */
    char reason[256];
};

struct guards {
    struct event *tick;
    struct cutover *cutover;
    const struct runtime *rt;    /* the main thread's current one (proxy.c keeps it alive) */
    struct guard list[GUARD_MAX];
    int n;
};

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const struct rt_listener *
listener_of(const struct guards *g, const struct guard *gd)
{
    for (size_t i = 0; i < g->rt->nlisteners; i++)
        if (g->rt->listeners[i].metric_slot == gd->slot)
            return &g->rt->listeners[i];
    return NULL;
}

/* The backend mirrored now (after a cutover, the listener's configured primary). */
static const struct rt_backend *
current_shadow(const struct rt_listener *l)
{
    return control_roles_swapped(l->metric_slot) ? l->primary : l->shadow;
}

/* The guard's metric over its window: *value (NaN when nothing to measure) and *samples. */
static void
measure(const struct guard *gd, const struct rt_listener *l, double *value, uint64_t *samples)
{
    struct shadow_listener_stats st;
    const uint64_t *o = st.window_outcomes;
    *value = NAN;
    *samples = 0;
    if (gd->conf.metric == CONF_GUARD_BACKEND_DOWN) {
        *value = control_backend_up(current_shadow(l)->metric_slot) ? 0 : 1;
        *samples = gd->conf.min_samples;
        return;
    }
    if (shadow_listener_stats(l->metric_slot, gd->conf.window_ms / 1000, &st) != 0)
        return;
    switch (gd->conf.metric) {
    case CONF_GUARD_SHADOW_ERROR_RATE: {
        uint64_t bad = o[SHADOW_SHADOW_ERROR] + o[SHADOW_SHADOW_TIMEOUT];
        uint64_t all = o[SHADOW_MATCH] + o[SHADOW_MISMATCH] + o[SHADOW_NOISE] +
                       o[SHADOW_PRIMARY_ERROR] + bad;
        *samples = all;
        *value = all ? (double)bad / (double)all : NAN;
        break;
    }
    case CONF_GUARD_MISMATCH_RATE:
        *samples = o[SHADOW_MATCH] + o[SHADOW_MISMATCH];
        *value = *samples ? (double)o[SHADOW_MISMATCH] / (double)*samples : NAN;
        break;
    case CONF_GUARD_LATENCY_RATIO_P50:
    case CONF_GUARD_LATENCY_RATIO_P99: {
        int p99 = gd->conf.metric == CONF_GUARD_LATENCY_RATIO_P99;
        double p = p99 ? st.primary_p99_seconds : st.primary_p50_seconds;
        double s = p99 ? st.shadow_p99_seconds : st.shadow_p50_seconds;
        uint64_t np = st.window_latency_count[SHADOW_SIDE_PRIMARY];
        uint64_t ns = st.window_latency_count[SHADOW_SIDE_SHADOW];
        *samples = np < ns ? np : ns;
        *value = p > 0 ? s / p : NAN;
        break;
    }
    case CONF_GUARD_LAG:
        *value = st.lag_seconds;
        *samples = gd->conf.min_samples;
        break;
    case CONF_GUARD_BACKEND_DOWN:
        break;
    }
}

static void
act(struct guards *g, struct guard *gd, const struct rt_listener *l)
{
    const char *shadow = current_shadow(l)->conf->name;
    long zero = 0;
    char err[256];
    json_t *reply = NULL;

    switch (gd->conf.action) {
    case CONF_GUARD_READS_TO_PRIMARY:
        control_set_weights(g->rt, &shadow, &zero, 1, err, sizeof(err));
        break;
    case CONF_GUARD_STOP_MIRRORING:
        control_set_mode(l->metric_slot, CONF_MODE_PASSTHROUGH);
        break;
    case CONF_GUARD_ROLLBACK:
        /* reads first, whatever the rollback itself then says */
        control_set_weights(g->rt, &shadow, &zero, 1, err, sizeof(err));
        if (cutover_start(g->cutover, g->rt, CUTOVER_ROLLBACK, 0, 0, &reply, err, sizeof(err)) >=
            300)
            log_warn("guard \"%s\" on listener \"%s\": rollback not started: %s", gd->conf.name,
                     gd->listener, err);
        json_decref(reply);
        break;
    }
}

static void
evaluate(struct guards *g, struct guard *gd, uint64_t now)
{
    const struct rt_listener *l = listener_of(g, gd);
    if (l == NULL || l->shadow == NULL ||
        (gd->implicit && control_mode(l->metric_slot, (int)l->conf->mode) != CONF_MODE_SPLIT)) {
        gd->state = GUARD_INACTIVE;
        return;
    }
    measure(gd, l, &gd->value, &gd->samples);
    if (now < gd->cooldown_until_ms)
        return; /* tripped: stays so until the cooldown ends */
    if (gd->samples < gd->conf.min_samples || !(gd->value > gd->conf.above)) {
        gd->state = GUARD_OK;
        return;
    }
    gd->state = GUARD_TRIPPED;
    gd->trips++;
    gd->last_trip = time(NULL);
    gd->cooldown_until_ms = now + gd->conf.cooldown_ms;
    snprintf(gd->reason, sizeof(gd->reason),
             "%s %.4g above %.4g over %us (%llu samples): %s", conf_guard_metric_name(gd->conf.metric),
             gd->value, gd->conf.above, gd->conf.window_ms / 1000,
             (unsigned long long)gd->samples, conf_guard_action_name(gd->conf.action));
    log_warn("guard \"%s\" on listener \"%s\" tripped: %s; cooldown %us", gd->conf.name,
             gd->listener, gd->reason, gd->conf.cooldown_ms / 1000);
    act(g, gd, l);
    control_changed(); /* the trip itself, whatever the action changed */
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct guards *g = arg;
    uint64_t now = mono_ms();
    (void)fd;
    (void)what;
    for (int i = 0; i < g->n; i++)
        evaluate(g, &g->list[i], now);
}

static void
add_guard(struct guards *g, const struct guard *old, int nold, const struct rt_listener *l,
          const struct conf_guard *c, int implicit)
{
    if (g->n == GUARD_MAX)
        return;
    struct guard *gd = &g->list[g->n++];
    memset(gd, 0, sizeof(*gd));
    for (int i = 0; i < nold; i++) {
        if (old[i].slot == l->metric_slot && strcmp(old[i].conf.name, c->name) == 0) {
            *gd = old[i]; /* trips and cooldown carry over a reload */
            break;
        }
    }
    gd->conf = *c;
    gd->slot = l->metric_slot;
    gd->implicit = implicit;
    snprintf(gd->listener, sizeof(gd->listener), "%s", l->conf->name);
    if (gd->trips == 0)
        gd->value = NAN;
}

void
guards_set_runtime(struct guards *g, const struct runtime *rt)
{
    static struct guard old[GUARD_MAX]; /* main thread only */
    int nold = g->n;
    memcpy(old, g->list, sizeof(old[0]) * (size_t)nold);
    g->rt = rt;
    g->n = 0;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        if (l->shadow == NULL || l->metric_slot < 0)
            continue;
        for (size_t k = 0; k < l->conf->nguards; k++)
            add_guard(g, old, nold, l, &l->conf->guards[k], 0);
        if (l->conf->nguards == 0)
            add_guard(g, old, nold, l, &default_guard, 1);
    }
    on_tick(-1, 0, g); /* a state to show from the start */
}

struct guards *
guards_new(struct event_base *base, struct cutover *c, const struct runtime *rt)
{
    struct guards *g = calloc(1, sizeof(*g));
    if (g == NULL)
        return NULL;
    g->cutover = c;
    g->tick = event_new(base, -1, EV_PERSIST, on_tick, g);
    struct timeval tv = {.tv_sec = EVAL_MS / 1000, .tv_usec = (EVAL_MS % 1000) * 1000};
    if (g->tick == NULL || event_add(g->tick, &tv) != 0) {
        guards_free(g);
        return NULL;
    }
    guards_set_runtime(g, rt);
    return g;
}

void
guards_free(struct guards *g)
{
    if (g == NULL)
        return;
    if (g->tick)
        event_free(g->tick);
    free(g);
}

static int64_t
wall_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

size_t
guards_records(const struct guards *g, struct guard_record *out, size_t max)
{
    uint64_t now = mono_ms();
    int64_t wall = wall_now_ms();
    size_t n = 0;
    for (int i = 0; i < g->n && n < max; i++) {
        const struct guard *gd = &g->list[i];
        if (gd->trips == 0)
            continue;
        struct guard_record *r = &out[n++];
        memset(r, 0, sizeof(*r));
        r->listener_slot = gd->slot;
        snprintf(r->name, sizeof(r->name), "%s", gd->conf.name);
        r->trips = gd->trips;
        r->last_trip_ms = (int64_t)gd->last_trip * 1000;
        r->cooldown_until_ms =
            now < gd->cooldown_until_ms ? wall + (int64_t)(gd->cooldown_until_ms - now) : 0;
        snprintf(r->reason, sizeof(r->reason), "%s", gd->reason);
    }
    return n;
}

int
guards_restore(struct guards *g, const struct guard_record *r)
{
    int64_t wall = wall_now_ms();
    for (int i = 0; i < g->n; i++) {
        struct guard *gd = &g->list[i];
        if (gd->slot != r->listener_slot || strcmp(gd->conf.name, r->name) != 0)
            continue;
        gd->trips = r->trips;
        gd->last_trip = (time_t)(r->last_trip_ms / 1000);
        snprintf(gd->reason, sizeof(gd->reason), "%s", r->reason);
        if (r->cooldown_until_ms > wall) {
            gd->cooldown_until_ms = mono_ms() + (uint64_t)(r->cooldown_until_ms - wall);
            gd->state = GUARD_TRIPPED;
        }
        return 0;
    }
    return -1;
}

static const char *const state_names[] = {"inactive", "ok", "tripped"};

json_t *
guards_status_json(const struct guards *g, int slot)
{
    json_t *arr = json_array();
    uint64_t now = mono_ms();
    for (int i = 0; i < g->n; i++) {
        const struct guard *gd = &g->list[i];
        if (gd->slot != slot)
            continue;
        char when[32] = "";
        if (gd->last_trip) {
            log_format_time((int64_t)gd->last_trip * 1000, when, sizeof(when));
        }
        json_t *o = json_pack(
            "{s:s, s:s, s:f, s:I, s:I, s:s, s:I, s:s, s:o, s:I, s:I, s:o, s:o, s:I, s:b}", "name",
            gd->conf.name, "metric", conf_guard_metric_name(gd->conf.metric), "above",
            gd->conf.above, "window_seconds", (json_int_t)(gd->conf.window_ms / 1000),
            "min_samples", (json_int_t)gd->conf.min_samples, "action",
            conf_guard_action_name(gd->conf.action), "cooldown_seconds",
            (json_int_t)(gd->conf.cooldown_ms / 1000), "state", state_names[gd->state], "value",
            gd->value == gd->value ? json_real(gd->value) : json_null(), "samples",
            (json_int_t)gd->samples, "trips", (json_int_t)gd->trips, "last_trip",
            when[0] ? json_string(when) : json_null(), "reason",
            gd->reason[0] ? json_string(gd->reason) : json_null(), "cooldown_left_seconds",
            (json_int_t)(now < gd->cooldown_until_ms ? (gd->cooldown_until_ms - now + 999) / 1000
                                                     : 0),
            "default", gd->implicit);
        json_array_append_new(arr, o);
    }
    return arr;
}

int
guards_hold(const struct guards *g, const char *const *names, const long *weights, size_t n,
            char *err, size_t errlen)
{
    uint64_t now = mono_ms();
    for (int i = 0; i < g->n; i++) {
        const struct guard *gd = &g->list[i];
        if (now >= gd->cooldown_until_ms || gd->conf.action == CONF_GUARD_STOP_MIRRORING)
            continue;
        const struct rt_listener *l = listener_of(g, gd);
        if (l == NULL)
            continue;
        const char *shadow = current_shadow(l)->conf->name;
        for (size_t k = 0; k < n; k++) {
            if (weights[k] > 0 && strcmp(names[k], shadow) == 0) {
                snprintf(err, errlen,
                         "guard \"%s\" on listener \"%s\" tripped (%s); \"%s\" gets no reads for "
                         "%llu s more (cooldown)",
                         gd->conf.name, gd->listener, gd->reason, shadow,
                         (unsigned long long)((gd->cooldown_until_ms - now + 999) / 1000));
                return 409;
            }
        }
    }
    return 0;
}

void
guards_render_prometheus(const struct guards *g, FILE *out)
{
    fputs("# HELP tandem_guard_trips_total Guards tripped, by listener and guard\n"
          "# TYPE tandem_guard_trips_total counter\n",
          out);
    for (int i = 0; i < g->n; i++) {
        fputs("tandem_guard_trips_total{listener=\"", out);
        metric_put_label(out, g->list[i].listener);
        fputs("\",guard=\"", out);
        metric_put_label(out, g->list[i].conf.name);
        fprintf(out, "\"} %llu\n", (unsigned long long)g->list[i].trips);
    }
    fputs("# HELP tandem_guard_tripped 1 while a guard is tripped (its cooldown running)\n"
          "# TYPE tandem_guard_tripped gauge\n",
          out);
    for (int i = 0; i < g->n; i++) {
        fputs("tandem_guard_tripped{listener=\"", out);
        metric_put_label(out, g->list[i].listener);
        fputs("\",guard=\"", out);
        metric_put_label(out, g->list[i].conf.name);
        fprintf(out, "\"} %d\n", g->list[i].state == GUARD_TRIPPED);
    }
}
