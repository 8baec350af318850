/*
 * proxy.c - the main thread: start workers, serve admin, handle signals.
 *
 *   SIGHUP   re-read the file; a bad file keeps the running configuration
 *   SIGTERM  stop accepting, let sessions reach an idle point, exit 0
 *            (after shutdown_timeout the rest are closed)
 *   SIGINT   close everything and exit 0 at once
 */
#include "engine/proxy.h"

#include <event2/thread.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "admin/admin.h"
#include "admin/admin_req.h"
#include "control/control.h"
#include "control/replica.h"
#include "control/cutover.h"
#include "control/guard.h"
#include "control/health.h"
#include "metrics/log.h"
#include "control/runtime.h"
#include "control/fleet.h"
#include "control/state.h"
#include "engine/worker.h"
#include "verify/verify_job.h"

#define DRAIN_TICK_MS 100

struct proxy {
    struct event_base *base;
    struct runtime *rt;
    const char *conf_path;
    struct worker *workers;
    int nworkers;
    int nstarted;
    struct admin *admin;
    struct health *health;
    struct cutover *cutover;
    struct replica_watch *replica; /* replicated shadows' progress and cutover steps */
    struct guards *guards;
    struct state *state; /* the state file (control/state.h) */
    struct fleet *fleet; /* control { store; fleet; } (control/fleet.h), or NULL */
    struct verify_job *verify; /* the latest POST /api/verify run, or NULL */
    unsigned verify_seq;
    struct event *sig_hup, *sig_term, *sig_int;
    struct event *drain_tick;
    struct timeval drain_deadline;
    int draining;
    int drained; /* SIGTERM's drain ended with every session and shadow done */
    int start_failed; /* a worker thread could not start */
    time_t started;
};

/* The cutover's call: every worker looks at its sessions now. */
static void
kick_workers(void *arg)
{
    struct proxy *p = arg;
    for (int i = 0; i < p->nworkers; i++)
        worker_post_kick(&p->workers[i]);
}

static void
log_conf_errors(const char *path, const struct conf_errors *errs)
{
    char line[CONF_PATH_MAX + 300];
    for (size_t i = 0; i < errs->count; i++) {
        conf_format_error(NULL, path, &errs->list[i], line, sizeof(line));
        log_error("%s", line);
    }
    if (errs->dropped)
        log_error("%s: %zu more errors", path, errs->dropped);
}

static void
reload(struct proxy *p)
{
    struct conf_errors errs = {0};
    char err[512];

    if (p->conf_path == NULL) {
        log_warn("reload requested, but the configuration came from the command line");
        return;
    }
    log_info("reloading \"%s\"", p->conf_path);
    /* a run logs in with the old file's credentials: it ends here (joined at the next start) */
    if (p->verify && verify_job_cancel(p->verify) == 0)
        log_info("%s: cancelled by the reload", verify_job_id(p->verify));
    struct conf *conf = conf_load_file(p->conf_path, &errs);
    if (conf == NULL) {
        log_conf_errors(p->conf_path, &errs);
        log_error("reload failed: keeping the running configuration");
        metric_count_reload(0);
        return;
    }
    struct runtime *rt = runtime_new(conf, err, sizeof(err));
    if (rt == NULL) {
        log_error("reload failed: %s; keeping the running configuration", err);
        metric_count_reload(0);
        return;
    }
    if (rt->conf->workers != p->nworkers)
        log_warn("workers changed from %d to %d: takes effect at the next restart", p->nworkers,
                 rt->conf->workers);
    /*
     * The admin's token_file and server_name follow the file; its socket
     * stays until a restart.  So does all of it when the address changed: the
     * new file's rule "no token only on loopback" was checked for the new
     * address, not for the socket still open.
     */
    int admin_moved = rt->conf->admin.enabled != p->rt->conf->admin.enabled ||
                      strcmp(rt->conf->admin.addr.host, p->rt->conf->admin.addr.host) != 0 ||
                      rt->conf->admin.addr.port != p->rt->conf->admin.addr.port;
    if (admin_moved)
        log_warn("admin address changed: takes effect, with its token_file and server_name, "
                 "at the next restart");
    else if (p->admin != NULL && admin_check_conf(&rt->conf->admin, err, sizeof(err)) != 0) {
        log_error("reload failed: %s; keeping the running configuration", err);
        runtime_unref(rt);
        metric_count_reload(0);
        return;
    }

    if (state_set_runtime(p->state, rt) != 0) { /* logged: a reload never changes roles */
        runtime_unref(rt);
        metric_count_reload(0);
        return;
    }
    log_setup(rt->conf->log_format, rt->conf->log_level);
    control_load(rt); /* weights set through the API give way to the file's */
    for (int i = 0; i < p->nstarted; i++)
        worker_post_runtime(&p->workers[i], rt);
    health_set_runtime(p->health, rt);
    /* the watch copies what it measures: a new one for the new configuration */
    replica_watch_stop(p->replica);
    p->replica = replica_watch_start(rt);
    cutover_set_replica(p->cutover, p->replica);
    if (p->fleet)
        fleet_set_runtime(p->fleet, rt);
    if (p->admin != NULL && !admin_moved)
        admin_set_conf(p->admin, &rt->conf->admin);
    runtime_unref(p->rt);
    p->rt = rt;
    guards_set_runtime(p->guards, rt);
    metric_count_reload(1);
    log_info("configuration reloaded");
}

static void
quit(struct proxy *p)
{
    if (p->verify)
        verify_job_cancel(p->verify); /* joined in proxy_release */
    for (int i = 0; i < p->nstarted; i++)
        worker_post_quit(&p->workers[i]);
    event_base_loopbreak(p->base);
}

static void
on_drain_tick(evutil_socket_t fd, short what, void *arg)
{
    struct proxy *p = arg;
    struct timeval now;
    (void)fd;
    (void)what;

    unsigned left = __atomic_load_n(&proxy_client_count, __ATOMIC_RELAXED);
    unsigned shadows = __atomic_load_n(&proxy_shadow_drains, __ATOMIC_RELAXED);
    gettimeofday(&now, NULL);
    if (left == 0 && shadows == 0) {
        log_info("all sessions closed; exiting");
        p->drained = 1;
        quit(p);
    } else if (timercmp(&now, &p->drain_deadline, >=)) {
        log_warn("shutdown timeout: closing %u sessions and %u shadows still catching up", left,
                 shadows);
        quit(p);
    }
}

static void
on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct proxy *p = arg;
    (void)what;

    switch (sig) {
    case SIGHUP:
        reload(p);
        break;
    case SIGTERM:
        if (p->draining)
            return;
        p->draining = 1;
        if (p->verify && verify_job_cancel(p->verify) == 0)
            log_info("%s: cancelled by SIGTERM", verify_job_id(p->verify));
        uint32_t ms = p->rt->conf->limits.shutdown_timeout_ms;
        log_info("SIGTERM: draining sessions (up to %u ms)", ms);
        struct timeval now, span = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        gettimeofday(&now, NULL);
        timeradd(&now, &span, &p->drain_deadline);
        for (int i = 0; i < p->nstarted; i++)
            worker_post_drain(&p->workers[i]);
        struct timeval tick = {.tv_sec = 0, .tv_usec = DRAIN_TICK_MS * 1000};
        p->drain_tick = event_new(p->base, -1, EV_PERSIST, on_drain_tick, p);
        event_add(p->drain_tick, &tick);
        break;
    case SIGINT:
        log_info("SIGINT: exiting now");
        quit(p);
        break;
    }
}

static int
ready(void *ctx, char *why, size_t whylen)
{
    struct proxy *p = ctx;
    if (p->draining) {
        snprintf(why, whylen, "draining");
        return 0;
    }
    if (p->nstarted == 0) {
        snprintf(why, whylen, "joining the fleet: waiting for its state");
        return 0;
    }
    for (size_t i = 0; i < p->rt->nlisteners; i++) {
        const struct rt_listener *l = &p->rt->listeners[i];
        /* the backend answering now: after a cutover, the listener's shadow */
        const struct rt_backend *b =
            l->shadow && control_roles_swapped(l->metric_slot) ? l->shadow : l->primary;
        if (health_backend_state(p->health, b) == 0) {
            snprintf(why, whylen, "primary \"%s\" at %s is down", b->conf->name, b->addr_text);
            return 0;
        }
    }
    return 1;
}

static json_t *
backend_json(const struct proxy *p, const struct rt_backend *b)
{
    int state = health_backend_state(p->health, b);
    return json_pack("{s:s, s:s, s:s, s:o, s:I}", "name", b->conf->name, "address", b->addr_text,
                     "tls", conf_tls_name(b->conf->tls), "up",
                     state < 0 ? json_null() : json_boolean(state), "lag_ms",
                     (json_int_t)control_lag_ms(b->metric_slot));
}

/* {"blue": 90, "green": 10}: the read weights in force on listener l. */
static json_t *
weights_json(const struct rt_listener *l)
{
    json_t *o = json_object();
    json_object_set_new(o, l->primary->conf->name,
                        json_integer(control_weight(l->metric_slot, l->primary->metric_slot)));
    if (l->shadow)
        json_object_set_new(o, l->shadow->conf->name,
                            json_integer(control_weight(l->metric_slot, l->shadow->metric_slot)));
    return o;
}

/* PUT /api/weights: {"blue":90,"green":10}, for every listener reading from those. */
static int
set_weights(struct proxy *p, json_t *body, json_t **reply, char *err, size_t errlen)
{
    _Static_assert(ADMIN_REQ_MAX_WEIGHTS >= METRIC_MAX_BACKENDS, "room for every backend");
    const char *names[ADMIN_REQ_MAX_WEIGHTS];
    long weights[ADMIN_REQ_MAX_WEIGHTS];
    size_t n = 0;

    if (admin_req_weights_body(body, names, weights, METRIC_MAX_BACKENDS, &n, err, errlen) != 0)
        return 400;
    int held = guards_hold(p->guards, names, weights, n, err, errlen);
    if (held != 0)
        return held;
    if (control_set_weights(p->rt, names, weights, n, err, errlen) != 0)
        return 400;
    json_t *all = json_object(), *per = json_array();
    for (size_t i = 0; i < p->rt->nlisteners; i++) {
        const struct rt_listener *l = &p->rt->listeners[i];
        json_t *w = weights_json(l);
        json_object_update(all, w);
        json_array_append_new(per, json_pack("{s:s, s:o}", "name", l->conf->name, "weights", w));
    }
    log_info("read weights set through the admin API");
    *reply = json_pack("{s:o, s:o}", "weights", all, "listeners", per);
    return 200;
}

/* PUT /api/mode: {"mode":"split"} for every listener with a shadow (until the next reload). */
static int
set_mode(struct proxy *p, json_t *body, json_t **reply, char *err, size_t errlen)
{
    int mode;
    if (admin_req_mode_body(body, &mode, err, errlen) != 0)
        return 400;
    const char *name = conf_mode_name((enum conf_mode)mode);
    int changed = 0;
    for (size_t i = 0; i < p->rt->nlisteners; i++) {
        const struct rt_listener *l = &p->rt->listeners[i];
        if (l->shadow == NULL)
            continue;
        control_set_mode(l->metric_slot, mode);
        changed++;
    }
    if (changed == 0 && mode != CONF_MODE_PASSTHROUGH) {
        snprintf(err, errlen, "no listener has a shadow: mode %s needs one", name);
        return 400;
    }
    log_info("mode set to %s through the admin API", name);
    *reply = json_pack("{s:s}", "mode", name);
    return 200;
}

/* POST /api/cutover and /api/rollback: {"max_pause_ms": 2000, "force": false}, both optional. */
static int
start_operation(struct proxy *p, enum cutover_kind kind, json_t *body, json_t **reply, char *err,
                size_t errlen)
{
    uint32_t max_pause;
    int force;
    if (admin_req_operation_body(body, &max_pause, &force, err, errlen) != 0)
        return 400;
    return cutover_start(p->cutover, p->rt, kind, max_pause, force, reply, err, errlen);
}

/*
 * POST /api/verify: a run against the listener's primary and shadow as
 * they are now (swapped after a cutover).  One at a time: 409 while one runs.
 */
static int
start_verify(struct proxy *p, json_t *body, json_t **reply, char *err, size_t errlen)
{
    struct admin_req_verify rq;
    const struct rt_listener *l = NULL;

    if (admin_req_verify_body(body, &rq, err, errlen) != 0)
        return 400;
    for (size_t i = 0; i < p->rt->nlisteners && l == NULL; i++)
        if (strcmp(p->rt->listeners[i].conf->name, rq.listener) == 0)
            l = &p->rt->listeners[i];
    if (l == NULL) {
        snprintf(err, errlen, "listener: no listener \"%s\"", rq.listener);
        return 400;
    }
    if (l->shadow == NULL) {
        snprintf(err, errlen, "listener \"%s\" has no shadow to compare with", rq.listener);
        return 400;
    }
    int redis = l->conf->proto == CONF_PROTO_REDIS;
    if (!redis && (rq.dbname == NULL || rq.db >= 0)) {
        snprintf(err, errlen, rq.dbname == NULL ? "dbname: required for a postgres listener"
                                                : "db: only for a redis listener (use dbname)");
        return 400;
    }
    if (redis && rq.dbname != NULL) {
        snprintf(err, errlen, "dbname: only for a postgres listener (use db)");
        return 400;
    }
    if (p->draining) {
        snprintf(err, errlen, "draining: no new verify run");
        return 503;
    }
    if (p->verify && verify_job_running(p->verify)) {
        snprintf(err, errlen, "%s is running: one verify run at a time",
                 verify_job_id(p->verify));
        return 409;
    }
    struct verify_job_spec *spec = calloc(1, sizeof(*spec));
    if (spec == NULL) {
        snprintf(err, errlen, "out of memory");
        return 500;
    }
    int swapped = control_roles_swapped(l->metric_slot);
    snprintf(spec->id, sizeof(spec->id), "verify-%u", p->verify_seq + 1);
    snprintf(spec->listener, sizeof(spec->listener), "%s", l->conf->name);
    spec->redis = redis;
    snprintf(spec->dbname, sizeof(spec->dbname), "%s", rq.dbname ? rq.dbname : "");
    spec->db = rq.db > 0 ? (int)rq.db : 0;
    runtime_login(swapped ? l->shadow : l->primary, &spec->primary);
    runtime_login(swapped ? l->primary : l->shadow, &spec->shadow);
    for (size_t i = 0; i < rq.ninclude; i++)
        snprintf(spec->include[i], sizeof(spec->include[i]), "%s", rq.include[i]);
    for (size_t i = 0; i < rq.nexclude; i++)
        snprintf(spec->exclude[i], sizeof(spec->exclude[i]), "%s", rq.exclude[i]);
    spec->ninclude = rq.ninclude;
    spec->nexclude = rq.nexclude;
    spec->chunk = rq.chunk;
    spec->sample_rate = rq.sample_rate;
    spec->max_rate = rq.max_rate;
    spec->settle_ms = rq.settle_ms >= 0 ? (uint64_t)rq.settle_ms : 1000;
    spec->ttl_tolerance_ms = rq.ttl_tolerance_ms >= 0 ? (uint64_t)rq.ttl_tolerance_ms : 2000;

    verify_job_free(p->verify); /* the previous run, ended: its thread joins at once */
    p->verify = verify_job_start(spec, err, errlen);
    free(spec);
    if (p->verify == NULL)
        return 500;
    p->verify_seq++;
    log_info("%s: verify of listener \"%s\" started through the admin API",
             verify_job_id(p->verify), l->conf->name);
    *reply = json_pack("{s:o}", "verify", verify_job_json(p->verify, 0));
    return 202;
}

/* GET and cancel /api/verify/ID: only the latest run is kept. */
static int
verify_call(struct proxy *p, enum admin_action action, const char *id, json_t **reply, char *err,
            size_t errlen)
{
    if (p->verify == NULL || strcmp(verify_job_id(p->verify), id) != 0) {
        snprintf(err, errlen, "no verify run \"%.32s\" (only the latest is kept)", id);
        return 404;
    }
    if (action == ADMIN_VERIFY_CANCEL) {
        if (verify_job_cancel(p->verify) != 0) {
            snprintf(err, errlen, "%s has ended: nothing to cancel", id);
            return 409;
        }
        log_info("%s: cancelled through the admin API", id);
        *reply = json_pack("{s:o}", "verify", verify_job_json(p->verify, 0));
        return 202;
    }
    *reply = json_pack("{s:o}", "verify", verify_job_json(p->verify, 0));
    return 200;
}

static json_t *
verify_report(void *ctx)
{
    struct proxy *p = ctx;
    return p->verify ? verify_job_json(p->verify, 1) : NULL;
}

static void
render_metrics(void *ctx, FILE *out)
{
    struct proxy *p = ctx;
    if (p->guards)
        guards_render_prometheus(p->guards, out);
    if (p->fleet)
        fleet_render_prometheus(p->fleet, out);
    replica_render_prometheus(p->rt, out);
}

/*
 * POST /api/shadow/resynced {"listener": "pg"}: the operator copied the
 * primary's data to the shadow again (or verified it), so its lost writes
 * no longer stand between it and a cutover.  The state file follows.
 */
static int
shadow_resynced(struct proxy *p, json_t *body, json_t **reply, char *err, size_t errlen)
{
    const char *name = json_string_value(json_object_get(body, "listener"));
    if (name == NULL) {
        snprintf(err, errlen, "body: expected {\"listener\": \"NAME\"}");
        return 400;
    }
    for (size_t i = 0; i < p->rt->nlisteners; i++) {
        const struct rt_listener *l = &p->rt->listeners[i];
        if (strcmp(l->conf->name, name) != 0)
            continue;
        if (l->shadow == NULL) {
            snprintf(err, errlen, "listener \"%.63s\" has no shadow", name);
            return 409;
        }
        int was = shadow_diverged(l->metric_slot);
        shadow_clear_divergence(l->metric_slot);
        log_warn("listener \"%s\": the shadow \"%s\" is marked resynchronized through the admin "
                 "API (%s)", name, l->shadow->conf->name, was ? "it was diverged" : "it was not diverged");
        control_changed();
        *reply = json_pack("{s:s, s:b, s:b}", "listener", name, "was_diverged", was, "diverged", 0);
        return 200;
    }
    snprintf(err, errlen, "no listener \"%.63s\"", name);
    return 404;
}

static int
act(void *ctx, enum admin_action action, const char *arg, json_t *body, json_t **reply, char *err,
    size_t errlen)
{
    struct proxy *p = ctx;
    if ((action == ADMIN_SET_WEIGHTS || action == ADMIN_SET_MODE) && p->fleet &&
        !fleet_connected(p->fleet)) {
        /* the store's state wins when it returns: a change made now would be lost */
        fleet_count_refused(p->fleet);
        snprintf(err, errlen, "the fleet's store is unreachable: changes wait until it is back");
        return 503;
    }
    switch (action) {
    case ADMIN_FLEET:
        if (p->fleet == NULL) {
            snprintf(err, errlen, "no fleet: this tandem has no control { store; fleet; }");
            return 404;
        }
        *reply = fleet_json(p->fleet);
        return 200;
    case ADMIN_SET_WEIGHTS:
        return set_weights(p, body, reply, err, errlen);
    case ADMIN_SET_MODE:
        return set_mode(p, body, reply, err, errlen);
    case ADMIN_CUTOVER:
        return start_operation(p, CUTOVER_FORWARD, body, reply, err, errlen);
    case ADMIN_ROLLBACK:
        return start_operation(p, CUTOVER_ROLLBACK, body, reply, err, errlen);
    case ADMIN_VERIFY_START:
        return start_verify(p, body, reply, err, errlen);
    case ADMIN_VERIFY_GET:
    case ADMIN_VERIFY_CANCEL:
        return verify_call(p, action, arg, reply, err, errlen);
    case ADMIN_SHADOW_RESYNCED:
        return shadow_resynced(p, body, reply, err, errlen);
    case ADMIN_OPERATION: {
        json_t *op = cutover_operation_json(p->cutover, arg);
        if (op == NULL) {
            snprintf(err, errlen, "no operation \"%.64s\"", arg);
            return 404;
        }
        *reply = json_pack("{s:o}", "operation", op);
        return 200;
    }
    }
    snprintf(err, errlen, "unknown action");
    return 404;
}

/* GET /api/shadow/report?scope=fleet */
static json_t *
fleet_report(void *ctx, size_t top_n, char *err, size_t errlen)
{
    struct proxy *p = ctx;
    if (p->fleet == NULL) {
        snprintf(err, errlen, "no fleet: this tandem has no control { store; fleet; }");
        return NULL;
    }
    json_t *rep = fleet_report_json(p->fleet, top_n);
    if (rep == NULL)
        snprintf(err, errlen, "out of memory");
    return rep;
}

/* NaN (no samples in the window) is null in JSON. */
static json_t *
ratio_json(double v)
{
    return v == v ? json_real(v) : json_null();
}

/* GET /api/status: what an operator needs at a glance. */
static json_t *
status(void *ctx)
{
    struct proxy *p = ctx;
    json_t *root = json_object(), *listeners = json_array(), *backends = json_array();

    for (size_t i = 0; i < p->rt->nbackends; i++)
        json_array_append_new(backends, backend_json(p, &p->rt->backends[i]));
    for (size_t i = 0; i < p->rt->nlisteners; i++) {
        const struct rt_listener *l = &p->rt->listeners[i];
        int swapped = l->shadow != NULL && control_roles_swapped(l->metric_slot);
        const struct rt_backend *primary = swapped ? l->shadow : l->primary;
        const struct rt_backend *shadow = swapped ? l->primary : l->shadow;
        json_t *o = json_pack(
            "{s:s, s:s, s:s, s:s, s:s, s:o, s:b, s:b}", "name", l->conf->name, "protocol",
            conf_proto_name(l->conf->proto), "listen", l->addr_text, "mode",
            conf_mode_name((enum conf_mode)control_mode(l->metric_slot, (int)l->conf->mode)),
            "primary", primary->conf->name, "shadow",
            shadow ? json_string(shadow->conf->name) : json_null(), "cut_over", swapped,
            "writes_paused", control_paused(l->metric_slot));
        json_object_set_new(o, "roles",
                            json_pack("{s:s, s:o}", "primary", primary->conf->name, "shadow",
                                      shadow ? json_string(shadow->conf->name) : json_null()));
        json_object_set_new(o, "epoch", json_integer((json_int_t)control_epoch(l->metric_slot)));
        json_object_set_new(o, "weights", weights_json(l));
        json_object_set_new(o, "guards", guards_status_json(p->guards, l->metric_slot));
        json_object_set_new(o, "clients",
                            json_integer((json_int_t)(
                                metric_sum_listener(l->metric_slot, METRIC_L_CLIENT_ACCEPTED) -
                                metric_sum_listener(l->metric_slot, METRIC_L_CLIENT_CLOSED))));
        struct shadow_listener_stats st;
        if (l->shadow && shadow_listener_stats(l->metric_slot, SHADOW_WINDOW_SECONDS, &st) == 0) {
            json_object_set_new(
                o, "shadow_state",
                json_pack("{s:o, s:o, s:f, s:b, s:I}", "validation_success_ratio",
                          ratio_json(st.validation_success_ratio), "performance_ratio",
                          ratio_json(st.performance_ratio), "lag_seconds", st.lag_seconds,
                          "diverged", st.diverged, "detached_sessions",
                          (json_int_t)st.detached_sessions));
        }
        json_t *repl = replica_status_json(l->metric_slot);
        json_object_set_new(o, "shadow_source",
                            json_string(repl ? "replication" : "mirror"));
        json_object_set_new(o, "replication", repl ? repl : json_null());
        json_array_append_new(listeners, o);
    }
    json_object_set_new(root, "version", json_string(TANDEM_VERSION));
    json_object_set_new(root, "uptime_seconds", json_integer((json_int_t)(time(NULL) - p->started)));
    json_object_set_new(root, "workers", json_integer(p->nworkers));
    json_object_set_new(root, "draining", json_boolean(p->draining));
    json_object_set_new(root, "configuration", json_string(p->conf_path ? p->conf_path : ""));
    json_object_set_new(root, "listeners", listeners);
    /* at a glance: the first listener with a shadow (each listener has its own) */
    for (size_t i = 0; i < json_array_size(listeners); i++) {
        json_t *l = json_array_get(listeners, i);
        if (json_is_null(json_object_get(l, "shadow")))
            continue;
        json_object_set(root, "mode", json_object_get(l, "mode"));
        json_object_set(root, "roles", json_object_get(l, "roles"));
        json_object_set(root, "weights", json_object_get(l, "weights"));
        break;
    }
    json_t *op = cutover_latest_json(p->cutover);
    json_object_set_new(root, "operation", op ? op : json_null());
    json_t *vj = p->verify ? verify_job_json(p->verify, 0) : NULL;
    json_object_set_new(root, "verify", vj ? vj : json_null());
    if (p->fleet) {
        json_t *fl = fleet_json(p->fleet);
        json_object_set_new(root, "fleet",
                            json_pack("{s:O, s:O, s:b}", "name", json_object_get(fl, "fleet"),
                                      "member", json_object_get(fl, "member"), "connected",
                                      fleet_connected(p->fleet)));
        json_decref(fl);
    }
    json_object_set_new(root, "backends", backends);
    return root;
}

static void
proxy_release(struct proxy *p)
{
    for (int i = 0; i < p->nstarted; i++)
        worker_join(&p->workers[i]);
    for (int i = 0; i < p->nworkers; i++)
        worker_release(&p->workers[i]);
    free(p->workers);
    verify_job_free(p->verify); /* cancelled by quit(): joins within a moment */
    fleet_free(p->fleet);
    if (p->nstarted > 0)
        state_stopped(p->state, p->drained);
    state_free(p->state);
    admin_free(p->admin);
    health_free(p->health);
    guards_free(p->guards);
    replica_watch_stop(p->replica);
    cutover_free(p->cutover);
    if (p->sig_hup)
        event_free(p->sig_hup);
    if (p->sig_term)
        event_free(p->sig_term);
    if (p->sig_int)
        event_free(p->sig_int);
    if (p->drain_tick)
        event_free(p->drain_tick);
    runtime_unref(p->rt);
    if (p->base)
        event_base_free(p->base);
}

/* The workers, each with its own sockets on every listener (SO_REUSEPORT). */
static int
workers_open(struct proxy *p)
{
    char err[512];

    p->nworkers = p->rt->conf->workers;
    p->workers = calloc((size_t)p->nworkers, sizeof(*p->workers));
    if (p->workers == NULL)
        return -1;
    for (int i = 0; i < p->nworkers; i++) {
        if (worker_init(&p->workers[i], i, p->rt) != 0) {
            log_error("cannot create worker %d", i);
            return -1;
        }
        if (worker_open_listeners(&p->workers[i], err, sizeof(err)) != 0) {
            log_error("%s", err);
            return -1;
        }
    }
    return 0;
}

static void log_started(const struct proxy *p);

/* start_workers - the workers accept clients from now on (at once, or once the fleet's state is in). */
static void
start_workers(void *arg)
{
    struct proxy *p = arg;
    for (int i = 0; i < p->nworkers; i++) {
        if (worker_start(&p->workers[i]) != 0) {
            log_error("cannot start worker thread %d", i);
            p->start_failed = 1;
            quit(p);
            return;
        }
        p->nstarted++;
    }
    log_started(p);
}

#define FD_RESERVE 32 /* logs, probes, the state file, forwarded cancels, epoll, pipes */

int
proxy_fd_check(const struct conf *conf, int raise, char *msg, size_t msglen)
{
    struct rlimit rl;
    int shadows = 0;
    uint64_t workers = conf->workers > 0 ? (uint64_t)conf->workers : 4;

    for (size_t i = 0; i < conf->nlisteners; i++)
        shadows |= conf->listeners[i].shadow >= 0;
    uint64_t per_client = shadows ? 3 : 2;
    uint64_t need = (uint64_t)conf->limits.max_client_conn * per_client +
                    workers * conf->nlisteners + ADMIN_MAX_CONNECTIONS + FD_RESERVE;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 0;
    if (raise && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < need) {
        struct rlimit want = rl;
        want.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > need ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &want) == 0)
            rl = want;
    }
    if (raise)
        worker_set_fd_limit(rl.rlim_cur == RLIM_INFINITY ? 0 : (unsigned long)rl.rlim_cur);
    rlim_t have = raise ? rl.rlim_cur : rl.rlim_max;
    if (have == RLIM_INFINITY || have >= need)
        return 0;
    uint64_t fit = have > workers * conf->nlisteners + ADMIN_MAX_CONNECTIONS + FD_RESERVE
                       ? (have - workers * conf->nlisteners - ADMIN_MAX_CONNECTIONS - FD_RESERVE) /
                             per_client
                       : 0;
    snprintf(msg, msglen,
             "max_client_conn %u needs up to %llu file descriptors (%llu per client%s), but the "
             "limit is %llu (ulimit -n%s): about %llu clients fit, more get accept errors; raise "
             "the limit (systemd LimitNOFILE=, ulimit -n) or lower max_client_conn",
             conf->limits.max_client_conn, (unsigned long long)need,
             (unsigned long long)per_client, shadows ? ": its own, the primary's, the shadow's" : "",
             (unsigned long long)have, raise ? "" : " -H", (unsigned long long)fit);
    return 1;
}

static void
log_started(const struct proxy *p)
{
    for (size_t i = 0; i < p->rt->nlisteners; i++) {
        const struct rt_listener *l = &p->rt->listeners[i];
        /* the backend answering now: the shadow when a state file or the fleet says cut over */
        int swapped = l->shadow != NULL && control_roles_swapped(l->metric_slot);
        const struct rt_backend *b = swapped ? l->shadow : l->primary;
        log_info("listener \"%s\" (%s) on %s, primary \"%s\" at %s%s, mode %s", l->conf->name,
                 conf_proto_name(l->conf->proto), l->addr_text, b->conf->name, b->addr_text,
                 swapped ? " (cut over)" : "",
                 conf_mode_name((enum conf_mode)control_mode(l->metric_slot, (int)l->conf->mode)));
    }
    if (p->admin)
        log_info("admin on http://%s:%u/", p->rt->conf->admin.addr.host,
                 p->rt->conf->admin.addr.port);
    log_info("tandem %s started with %d worker%s", TANDEM_VERSION, p->nworkers,
             p->nworkers == 1 ? "" : "s");
}

int
proxy_run(struct conf *conf, const char *conf_path)
{
    struct proxy proxy = {.conf_path = conf_path, .started = time(NULL)}, *p = &proxy;
    char err[512];
    int rc = 1;

    log_setup(conf->log_format, conf->log_level);
    signal(SIGPIPE, SIG_IGN);
    /* workers are woken from the main thread with event_active() */
    if (evthread_use_pthreads() != 0) {
        log_error("libevent has no thread support");
        conf_free(conf);
        return 1;
    }
    if (proxy_fd_check(conf, 1, err, sizeof(err)) != 0)
        log_warn("%s", err);
    p->rt = runtime_new(conf, err, sizeof(err));
    if (p->rt == NULL) {
        log_error("%s", err);
        return 1;
    }
    p->base = event_base_new();
    if (p->base == NULL)
        goto out;

    if (workers_open(p) != 0)
        goto out;
    if (p->rt->conf->admin.enabled) {
        struct admin_hooks hooks = {.ctx = p,
                                    .ready = ready,
                                    .status = status,
                                    .act = act,
                                    .metrics = render_metrics,
                                    .fleet_report = fleet_report,
                                    .verify_report = verify_report};
        p->admin = admin_new(p->base, &p->rt->conf->admin, &hooks, err, sizeof(err));
        if (p->admin == NULL) {
            log_error("%s", err);
            goto out;
        }
    }
    control_load(p->rt);
    p->health = health_new(p->base, p->rt);
    p->cutover = cutover_new(p->base, kick_workers, p, p->nworkers);
    p->replica = replica_watch_start(p->rt);
    if (p->cutover && p->replica)
        cutover_set_replica(p->cutover, p->replica);
    p->guards = p->cutover ? guards_new(p->base, p->cutover, p->rt) : NULL;
    p->sig_hup = evsignal_new(p->base, SIGHUP, on_signal, p);
    p->sig_term = evsignal_new(p->base, SIGTERM, on_signal, p);
    p->sig_int = evsignal_new(p->base, SIGINT, on_signal, p);
    if (p->health == NULL || p->cutover == NULL || p->replica == NULL || p->guards == NULL || !p->sig_hup || !p->sig_term || !p->sig_int)
        goto out;
    /* the state file's roles, mode, weights: before the first client is accepted */
    if ((p->state = state_open(p->base, p->rt, p->cutover, p->guards)) == NULL)
        goto out;
    event_add(p->sig_hup, NULL);
    event_add(p->sig_term, NULL);
    event_add(p->sig_int, NULL);

    if (p->rt->conf->control.store_enabled) {
        /* a member accepts clients once the fleet's state is applied (start_workers) */
        if ((p->fleet = fleet_open(p->base, p->rt, p->state, p->cutover, start_workers, p)) ==
            NULL)
            goto out;
    } else {
        start_workers(p);
    }
    event_base_dispatch(p->base);
    rc = p->start_failed;
out:
    if (rc != 0 && p->nstarted > 0)
        quit(p);
    proxy_release(p);
    return rc;
}
