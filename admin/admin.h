/*
 * admin.h - the admin HTTP server (libevent evhttp), on the main thread.
 *
 *   GET /metrics   Prometheus text exposition
 *   GET /healthz   200 "ok" while the process runs its loop
 *   GET /readyz    200 "ready"; 503 with the reason while draining or when a
 *                  listener's primary is down
 *
 *   GET /api/status, GET /api/shadow/report[?top=N][&scope=fleet]   JSON
 *   GET /report    the shadow-diff page (HTML, self-contained; reads the two above)
 *   PUT /api/weights          read weights, {"blue":90,"green":10}
 *   PUT /api/mode             {"mode":"passthrough"|"shadow"|"split"}
 *   POST /api/cutover         start a cutover (202 with the operation; 409 when refused)
 *   POST /api/rollback        reads to the primary now; roles back after a cutover
 *   GET /api/operations/ID    one operation's state
 *   GET /api/fleet            the fleet's members and its operation (404 without a fleet)
 *   POST /api/verify          start a tandem verify run in the process (202; 409 while one runs)
 *   GET /api/verify/ID        its state, progress and differences (the latest run is kept)
 *   DELETE /api/verify/ID, POST /api/verify/ID/cancel   cancel it
 *
 * With admin { token_file F; } every call but GET /metrics, /healthz,
 * /readyz and /report (the page's shell: no data in it) needs
 * "Authorization: Bearer <the token in F>": 401 without it, 403 when wrong.
 * admin { read_token_file R; } (with token_file only) adds a token that may
 * make those GETs only (the report's rows and statements, status, fleet,
 * operations, verify runs): 403 on a mutation.  F and R are read again at
 * each call (a rotated secret needs no restart); adding, changing or
 * removing either takes effect at a reload (SIGHUP).  Without token_file
 * (a loopback address only: the configuration refuses it elsewhere) every
 * call is open.
 * Unknown paths get a JSON error with status 404, other methods 405.
 */
#ifndef TANDEM_ADMIN_H
#define TANDEM_ADMIN_H

#include <event2/event.h>
#include <jansson.h>
#include <stddef.h>
#include <stdio.h>

#include "conf/conf.h"

struct admin;

/*
 * At most this many admin connections are open at once: past it the admin
 * socket stops accepting (clients wait in the kernel's backlog) until one
 * closes, so connections to the admin port cannot use up the process's
 * file descriptors.  Scrapers, probes and tandem ctl need a handful; idle
 * ones are closed after 30 s.
 */
#define ADMIN_MAX_CONNECTIONS 64

/* Changes an operator asks for (the API's PUT and POST endpoints). */
enum admin_action {
    ADMIN_SET_WEIGHTS, /* PUT /api/weights {"blue":90,"green":10} */
    ADMIN_SET_MODE,    /* PUT /api/mode {"mode":"split"} */
    ADMIN_CUTOVER,     /* POST /api/cutover {"max_pause_ms":2000,"force":false} */
    ADMIN_ROLLBACK,    /* POST /api/rollback {"max_pause_ms":2000} */
    ADMIN_OPERATION,   /* GET /api/operations/ID (arg: the id) */
    ADMIN_FLEET,       /* GET /api/fleet: the members and the fleet's operation */
    ADMIN_VERIFY_START,  /* POST /api/verify {"listener":"pg","dbname":"app",...} */
    ADMIN_VERIFY_GET,    /* GET /api/verify/ID (arg: the id) */
    ADMIN_VERIFY_CANCEL, /* DELETE /api/verify/ID, POST /api/verify/ID/cancel (arg: the id) */
    ADMIN_SHADOW_RESYNCED, /* POST /api/shadow/resynced {"listener":"pg"}: clears diverged */
};

/* What the admin server asks of the process. */
struct admin_hooks {
    void *ctx;
    /* ready - 1 when ready; else 0 with a reason in why. */
    int (*ready)(void *ctx, char *why, size_t whylen);
    /* status - a new JSON object describing the process (the caller frees it). */
    json_t *(*status)(void *ctx);
    /* metrics - append the process's own metric families to /metrics (guards); may be NULL. */
    void (*metrics)(void *ctx, FILE *out);
    /*
     * act - carry out an action with the request's JSON body (NULL when
     * empty).  Returns the HTTP status; on success *reply is the JSON to
     * send (taken), otherwise err says what was wrong.
     */
    int (*act)(void *ctx, enum admin_action action, const char *arg, json_t *body, json_t **reply,
               char *err, size_t errlen);
    /*
     * fleet_report - GET /api/shadow/report?scope=fleet: the fleet's merged
     * report (a new object), or NULL with err (404: no fleet).  May be NULL.
     */
    json_t *(*fleet_report)(void *ctx, size_t top_n, char *err, size_t errlen);
    /*
     * verify_report - the latest verify run's differences for the shadow
     * report's "verify" section (a new object), or NULL when there was none.
     * May be NULL.
     */
    json_t *(*verify_report)(void *ctx);
};

/*
 * admin_new - listen on conf->addr.  NULL with a message in err when the
 * address cannot be bound or a token file is set but unusable.
 */
struct admin *admin_new(struct event_base *base, const struct conf_admin *conf,
                        const struct admin_hooks *hooks, char *err, size_t errlen);

/*
 * admin_check_conf - 0 when conf can be put in force (its token files, if
 * any, are readable and hold a usable token); else -1 with a message in
 * err.  A reload calls it before committing to anything.
 */
int admin_check_conf(const struct conf_admin *conf, char *err, size_t errlen);

/*
 * admin_set_conf - a reloaded configuration's token files and server_name
 * in force from the next request on (conf is copied); the listen address
 * stays until a restart.  Logs what changed about the token.  Call
 * admin_check_conf first.
 */
void admin_set_conf(struct admin *a, const struct conf_admin *conf);

void admin_free(struct admin *a);

#endif /* TANDEM_ADMIN_H */
