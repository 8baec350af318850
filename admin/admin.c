/*
 * admin.c - admin HTTP endpoints (see admin.h).
 */
#include "admin/admin.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/listener.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <strings.h>
#include <time.h>
#include <sys/stat.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "admin/admin_req.h"
#include "admin/admin_token.h"
#include "metrics/log.h"
#include "admin/report_page.h"

/* What a request is checked against: copied, so a reload can replace it whole. */
struct admin_rules {
    struct conf_addr addr;              /* the listen address */
    char token_file[CONF_PATH_MAX];     /* "" when no call needs a token (loopback only) */
    char read_token_file[CONF_PATH_MAX]; /* "" when only token_file's token may read */
    char (*server_names)[CONF_HOST_MAX];
    size_t nserver_names;
};

/* An open admin connection: a socket is itself while its inode is the same. */
struct admin_conn {
    int fd;
    dev_t dev;
    ino_t ino;
};

/* Room for the connections accepted in one burst before the socket pauses. */
#define ADMIN_CONN_SLOTS (ADMIN_MAX_CONNECTIONS + 64)

struct admin {
    struct evhttp *http;
    struct evhttp_bound_socket *bound;
    struct admin_hooks hooks;
    struct admin_rules rules;
    /*
     * Counting connections: evhttp (libevent 2.1) neither caps them nor says
     * when one closes.  Its bufferevent callback says when one opens; the
     * next turn of the loop learns its socket (a reference held meanwhile);
     * a socket whose inode changed or is gone is a connection that closed.
     */
    struct bufferevent *learning[ADMIN_CONN_SLOTS];
    int nlearning;
    struct admin_conn conns[ADMIN_CONN_SLOTS];
    int nconns;
    struct event *learn;   /* active: learn the sockets of new connections */
    struct event *recheck; /* while paused: count again, resume under the cap */
    int paused;            /* at the cap */
    struct event *resume;  /* after an accept failure */
    uint64_t accept_failures, accept_logged;
};

typedef void (*route_fn)(struct admin *a, struct evhttp_request *req);

static void
reply_text(struct evhttp_request *req, int code, const char *reason, const char *ctype,
           const char *body, size_t len)
{
    struct evbuffer *buf = evbuffer_new();
    if (buf == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", ctype);
    evbuffer_add(buf, body, len);
    evhttp_send_reply(req, code, reason, buf);
    evbuffer_free(buf);
}

/* admin_json_error - {"error": msg} with the given status. */
static void
reply_json_error(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
    json_t *obj = json_pack("{s:s}", "error", msg);
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text == NULL) {
        evhttp_send_error(req, 500, "out of memory");
        return;
    }
    reply_text(req, code, reason, "application/json", text, strlen(text));
    free(text);
}

static void
route_metrics(struct admin *a, struct evhttp_request *req)
{
    char *text = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&text, &len);
    if (out == NULL) {
        reply_json_error(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    metric_render_prometheus(out);
    shadow_render_prometheus(out);
    if (a->hooks.metrics)
        a->hooks.metrics(a->hooks.ctx, out);
    fclose(out);
    reply_text(req, 200, "OK", "text/plain; version=0.0.4; charset=utf-8", text, len);
    free(text);
}

static void
route_healthz(struct admin *a, struct evhttp_request *req)
{
    (void)a;
    reply_text(req, 200, "OK", "text/plain", "ok\n", 3);
}

static void
route_readyz(struct admin *a, struct evhttp_request *req)
{
    char why[256] = "";
    char body[300];
    if (a->hooks.ready(a->hooks.ctx, why, sizeof(why))) {
        reply_text(req, 200, "OK", "text/plain", "ready\n", 6);
        return;
    }
    int n = snprintf(body, sizeof(body), "%s\n", why);
    reply_text(req, 503, "Service Unavailable", "text/plain", body, (size_t)n);
}

/* reply_json - 200 with doc (taken: freed here); 500 when doc is NULL or cannot be dumped. */
static void
reply_json(struct evhttp_request *req, json_t *doc, const char *what)
{
    char *text = doc ? json_dumps(doc, JSON_INDENT(1)) : NULL;
    json_decref(doc);
    if (text == NULL) {
        char msg[96];
        snprintf(msg, sizeof(msg), "cannot build the %s", what);
        reply_json_error(req, 500, "Internal Server Error", msg);
        return;
    }
    reply_text(req, 200, "OK", "application/json", text, strlen(text));
    free(text);
}

/*
 * GET /api/shadow/report[?top=N][&scope=fleet]: every statement by default
 * (the store bounds them); top=N keeps the N with the most mismatches, for
 * dashboards; scope=fleet merges the fleet's members' (control/fleet.h).
 */
static void
route_shadow_report(struct admin *a, struct evhttp_request *req)
{
    const char *q = evhttp_uri_get_query(evhttp_request_get_evhttp_uri(req));
    const char *bad = NULL;
    size_t top = 0;
    int fleet = 0;

    if (admin_req_report_query(q, &top, &fleet, &bad) != 0) {
        reply_json_error(req, 400, "Bad Request", bad);
        return;
    }
    if (fleet) {
        char err[200] = "no fleet: this tandem has no control { store; fleet; }";
        json_t *rep = a->hooks.fleet_report ? a->hooks.fleet_report(a->hooks.ctx, top, err,
                                                                      sizeof(err))
                                            : NULL;
        if (rep == NULL) {
            reply_json_error(req, 404, "Not Found", err);
            return;
        }
        reply_json(req, rep, "report");
        return;
    }
    json_t *rep = shadow_report_json(top);
    if (rep && a->hooks.verify_report) {
        json_t *v = a->hooks.verify_report(a->hooks.ctx);
        json_object_set_new(rep, "verify", v ? v : json_null());
    }
    reply_json(req, rep, "report");
}

static void
route_status(struct admin *a, struct evhttp_request *req)
{
    reply_json(req, a->hooks.status(a->hooks.ctx), "status");
}

/* GET /report: the shadow-diff page, built into the binary (admin/report.html). */
static void
route_report_page(struct admin *a, struct evhttp_request *req)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    (void)a;
    /* the page fetches the JSON API of this origin and nothing else */
    evhttp_add_header(h, "Content-Security-Policy",
                      "default-src 'none'; script-src 'unsafe-inline'; "
                      "style-src 'unsafe-inline'; connect-src 'self'; img-src data:");
    evhttp_add_header(h, "Cache-Control", "no-store");
    evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
    reply_text(req, 200, "OK", "text/html; charset=utf-8", (const char *)report_page_html,
               report_page_html_len);
}

static const char *
status_reason(int code)
{
    switch (code) {
    case 200: return "OK";
    case 202: return "Accepted";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 409: return "Conflict";
    case 503: return "Service Unavailable";
    default: return "Error";
    }
}

/*
 * An action: the body parsed as JSON (a bad body is a 400 naming the
 * problem), handed to the process, its answer sent with its status.
 */
static void
run_action(struct admin *a, struct evhttp_request *req, enum admin_action action, const char *arg)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    json_t *body = NULL, *reply = NULL;
    char err[256] = "";

    if (len > 0) {
        json_error_t jerr;
        const char *text = (const char *)evbuffer_pullup(in, (ev_ssize_t)len);
        body = text ? json_loadb(text, len, 0, &jerr) : NULL;
        if (body == NULL) {
            snprintf(err, sizeof(err), "body: invalid JSON: %s (line %d, column %d)", jerr.text,
                     jerr.line, jerr.column);
            reply_json_error(req, 400, "Bad Request", err);
            return;
        }
    }
    int code = a->hooks.act(a->hooks.ctx, action, arg, body, &reply, err, sizeof(err));
    json_decref(body);
    if (code >= 300 || reply == NULL) {
        json_decref(reply);
        reply_json_error(req, code >= 300 ? code : 500, status_reason(code >= 300 ? code : 500),
                         err[0] ? err : "failed");
        return;
    }
    char *text = json_dumps(reply, JSON_INDENT(1));
    json_decref(reply);
    if (text == NULL) {
        reply_json_error(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    reply_text(req, code, status_reason(code), "application/json", text, strlen(text));
    free(text);
}

#define OPERATIONS_PREFIX "/api/operations/"
#define VERIFY_PREFIX "/api/verify/"
#define VERIFY_ID_MAX 32

/* /api/verify/ID (GET, DELETE) and /api/verify/ID/cancel (POST). */
static void
route_verify_id(struct admin *a, struct evhttp_request *req, const char *rest)
{
    enum evhttp_cmd_type m = evhttp_request_get_command(req);
    char id[VERIFY_ID_MAX + 1];
    size_t len = strcspn(rest, "/");
    int cancel_path = strcmp(rest + len, "/cancel") == 0;

    if (len == 0 || len > VERIFY_ID_MAX || (rest[len] != '\0' && !cancel_path)) {
        reply_json_error(req, 404, "Not Found", "not found");
        return;
    }
    memcpy(id, rest, len);
    id[len] = '\0';
    if (!cancel_path && (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD))
        run_action(a, req, ADMIN_VERIFY_GET, id);
    else if ((!cancel_path && m == EVHTTP_REQ_DELETE) || (cancel_path && m == EVHTTP_REQ_POST))
        run_action(a, req, ADMIN_VERIFY_CANCEL, id);
    else
        reply_json_error(req, 405, "Method Not Allowed", "method not allowed");
}

/* A route answers with fn, or, when fn is NULL, by handing `action` to the proxy. */
static const struct route {
    const char *path;
    enum evhttp_cmd_type method;
    route_fn fn;
    enum admin_action action;
} routes[] = {
    {"/metrics", EVHTTP_REQ_GET, route_metrics, 0},
    {"/healthz", EVHTTP_REQ_GET, route_healthz, 0},
    {"/readyz", EVHTTP_REQ_GET, route_readyz, 0},
    {"/api/shadow/report", EVHTTP_REQ_GET, route_shadow_report, 0},
    {"/api/status", EVHTTP_REQ_GET, route_status, 0},
    {"/report", EVHTTP_REQ_GET, route_report_page, 0},
    {"/api/weights", EVHTTP_REQ_PUT, NULL, ADMIN_SET_WEIGHTS},
    {"/api/mode", EVHTTP_REQ_PUT, NULL, ADMIN_SET_MODE},
    {"/api/cutover", EVHTTP_REQ_POST, NULL, ADMIN_CUTOVER},
    {"/api/rollback", EVHTTP_REQ_POST, NULL, ADMIN_ROLLBACK},
    {"/api/fleet", EVHTTP_REQ_GET, NULL, ADMIN_FLEET},
    {"/api/verify", EVHTTP_REQ_POST, NULL, ADMIN_VERIFY_START},
    {"/api/shadow/resynced", EVHTTP_REQ_POST, NULL, ADMIN_SHADOW_RESYNCED},
};

static const char *
method_name(enum evhttp_cmd_type cmd)
{
    switch (cmd) {
    case EVHTTP_REQ_PUT:
        return "PUT";
    case EVHTTP_REQ_POST:
        return "POST";
    case EVHTTP_REQ_DELETE:
        return "DELETE";
    case EVHTTP_REQ_PATCH:
        return "PATCH";
    default:
        return "GET";
    }
}

static int
is_mutation(enum evhttp_cmd_type cmd)
{
    return cmd == EVHTTP_REQ_PUT || cmd == EVHTTP_REQ_POST || cmd == EVHTTP_REQ_DELETE ||
           cmd == EVHTTP_REQ_PATCH;
}

/* The client's address, for log lines: evhttp keeps it with the connection. */
static const char *
peer_of(struct evhttp_request *req)
{
    char *peer = NULL;
    ev_uint16_t port = 0;
    evhttp_connection_get_peer(evhttp_request_get_connection(req), &peer, &port);
    return peer ? peer : "?";
}

/*
 * The GETs anyone who reaches the port may make, token or not: probes and
 * scrapers (counters and states, no row value, statement or address) and
 * the report page's shell, which holds no data: its script asks for a
 * token and sends it on its own reads.  Every other call, every path
 * unknown or not, needs a token once one is configured: a new route is
 * protected unless it is added here.
 */
static const char *const open_paths[] = {"/metrics", "/healthz", "/readyz", "/report"};

static int
is_open(struct evhttp_request *req, const char *path)
{
    if (is_mutation(evhttp_request_get_command(req)))
        return 0;
    for (size_t i = 0; i < sizeof(open_paths) / sizeof(open_paths[0]); i++)
        if (strcmp(open_paths[i], path) == 0)
            return 1;
    return 0;
}

/* token_is - 1 when given (len bytes) is the token of file path, 0 when not, -1 unreadable. */
static int
token_is(const char *path, const char *given, size_t len)
{
    char want[ADMIN_TOKEN_MAX + 1], err[CONF_PATH_MAX + 100];

    if (admin_token_read(path, want, sizeof(want), err, sizeof(err)) != 0) {
        log_error("admin: %s", err);
        return -1;
    }
    int ok = admin_token_equal(want, given, len);
    OPENSSL_cleanse(want, sizeof(want));
    return ok;
}

static void
log_refused(struct evhttp_request *req, const char *why)
{
    log_warn("admin: %s %s from %s: %s", method_name(evhttp_request_get_command(req)),
             evhttp_request_get_uri(req), peer_of(req), why);
}

/*
 * authorized - with a token file configured, every call but the open GETs
 * must carry "Authorization: Bearer TOKEN": token_file's token for any
 * call, read_token_file's for reads only.  1 when the request may go on;
 * else 0 and the answer is sent: 401 without credentials (or not Bearer),
 * 403 with a wrong token or a read token on a mutation, 500 when the token
 * file a decision needs cannot be read now.  The files are read at each
 * call, so a rotated secret takes effect without a restart.  Without
 * token_file (allowed on a loopback address only) every call is open.
 */
static int
authorized(struct admin *a, struct evhttp_request *req, const char *path)
{
    int mutation = is_mutation(evhttp_request_get_command(req));
    const char *given, *hdr;

    if (a->rules.token_file[0] == '\0' || is_open(req, path))
        return 1;
    hdr = evhttp_find_header(evhttp_request_get_input_headers(req), "Authorization");
    if (hdr == NULL || strncasecmp(hdr, "Bearer ", 7) != 0) {
        log_refused(req, "no bearer token");
        evhttp_add_header(evhttp_request_get_output_headers(req), "WWW-Authenticate",
                          "Bearer realm=\"tandem\"");
        reply_json_error(req, 401, "Unauthorized",
                         mutation ? "this call needs \"Authorization: Bearer <token>\" "
                                    "(admin token_file)"
                                  : "this call needs \"Authorization: Bearer <token>\" "
                                    "(admin read_token_file or token_file)");
        return 0;
    }
    for (given = hdr + 7; *given == ' ' || *given == '\t'; given++)
        ;
    size_t len = strlen(given);
    while (len > 0 && (given[len - 1] == ' ' || given[len - 1] == '\t'))
        len--;
    int admin_ok = token_is(a->rules.token_file, given, len);
    if (admin_ok == 1)
        return 1;
    /* the read token is checked on mutations too: to say why it is refused */
    int read_ok = a->rules.read_token_file[0] != '\0'
                      ? token_is(a->rules.read_token_file, given, len) : 0;
    if (read_ok == 1 && !mutation)
        return 1;
    if (read_ok == 1) {
        log_refused(req, "a read token on a mutating call");
        reply_json_error(req, 403, "Forbidden",
                         "this token may only read: this call needs the admin token (token_file)");
        return 0;
    }
    if (admin_ok < 0 || read_ok < 0) {
        reply_json_error(req, 500, "Internal Server Error", "the admin token cannot be read");
        return 0;
    }
    log_refused(req, "wrong token");
    reply_json_error(req, 403, "Forbidden", "wrong admin token");
    return 0;
}

/*
 * same_site - a browser's request must come from a page of this server.
 * Host must be one host_allowed() accepts; Origin, when a browser sends it,
 * must be this very origin (scheme http or https, the Host's authority).
 * Clients that send no Host (HTTP/1.0 scripts) are not browsers.  1 when the
 * request may go on; else 0 and a 403 is sent.
 */
static int
same_site(struct admin *a, struct evhttp_request *req)
{
    struct evkeyvalq *in = evhttp_request_get_input_headers(req);
    const char *why = admin_req_same_site(&a->rules.addr,
                                          (const char(*)[CONF_HOST_MAX])a->rules.server_names,
                                          a->rules.nserver_names, evhttp_find_header(in, "Host"),
                                          evhttp_find_header(in, "Origin"));
    if (why == NULL)
        return 1;
    log_refused(req, why);
    reply_json_error(req, 403, "Forbidden", why);
    return 0;
}

/*
 * A mutation's body is JSON and says so: a browser sends a cross-site form
 * or a text/plain body without asking anyone, but application/json only
 * after a CORS preflight, which this server never answers.
 */
static int
json_body(struct evhttp_request *req)
{
    const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");

    if (!is_mutation(evhttp_request_get_command(req)) || admin_req_json_type(ct))
        return 1;
    reply_json_error(req, 415, "Unsupported Media Type",
                     "this call needs \"Content-Type: application/json\"");
    return 0;
}

static void
on_request(struct evhttp_request *req, void *arg)
{
    struct admin *a = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    int path_known = 0;

    if (path == NULL)
        path = "/";
    if (!same_site(a, req))
        return;
    /* before routing: an unauthenticated caller learns nothing, not even a 404 */
    if (!authorized(a, req, path) || !json_body(req))
        return;
    if (strncmp(path, OPERATIONS_PREFIX, strlen(OPERATIONS_PREFIX)) == 0) {
        enum evhttp_cmd_type m = evhttp_request_get_command(req);
        if (m == EVHTTP_REQ_GET || m == EVHTTP_REQ_HEAD)
            run_action(a, req, ADMIN_OPERATION, path + strlen(OPERATIONS_PREFIX));
        else
            reply_json_error(req, 405, "Method Not Allowed", "method not allowed");
        return;
    }
    if (strncmp(path, VERIFY_PREFIX, strlen(VERIFY_PREFIX)) == 0) {
        route_verify_id(a, req, path + strlen(VERIFY_PREFIX));
        return;
    }
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        if (strcmp(routes[i].path, path) != 0)
            continue;
        path_known = 1;
        if (routes[i].method == evhttp_request_get_command(req) ||
            (routes[i].method == EVHTTP_REQ_GET &&
             evhttp_request_get_command(req) == EVHTTP_REQ_HEAD)) {
            if (routes[i].fn != NULL)
                routes[i].fn(a, req);
            else
                run_action(a, req, routes[i].action, NULL);
            return;
        }
    }
    if (path_known)
        reply_json_error(req, 405, "Method Not Allowed", "method not allowed");
    else
        reply_json_error(req, 404, "Not Found", "not found");
}

/* Drop the connections that closed; how many are open (or just opened). */
static int
conns_count(struct admin *a)
{
    int n = 0;
    for (int i = 0; i < a->nconns; i++) {
        struct stat st;
        if (fstat(a->conns[i].fd, &st) == 0 && st.st_ino == a->conns[i].ino &&
            st.st_dev == a->conns[i].dev)
            a->conns[n++] = a->conns[i];
    }
    a->nconns = n;
    return a->nconns + a->nlearning;
}

static void
accepting(struct admin *a, int on)
{
    struct evconnlistener *lev = evhttp_bound_socket_get_listener(a->bound);
    struct timeval second = {1, 0};
    if (on == !a->paused)
        return;
    a->paused = !on;
    if (on) {
        evconnlistener_enable(lev);
        evtimer_del(a->recheck);
        log_info("admin: accepting connections again");
    } else {
        evconnlistener_disable(lev);
        evtimer_add(a->recheck, &second);
        log_warn("admin: %d connections open (at most %d): accepting no more until some close",
                 a->nconns + a->nlearning, ADMIN_MAX_CONNECTIONS);
    }
}

static void
on_learn(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    (void)fd;
    (void)what;
    for (int i = 0; i < a->nlearning; i++) {
        struct bufferevent *bev = a->learning[i];
        int sock = bufferevent_getfd(bev);
        struct stat st;
        if (sock >= 0 && fstat(sock, &st) == 0 && a->nconns < ADMIN_CONN_SLOTS)
            a->conns[a->nconns++] = (struct admin_conn){sock, st.st_dev, st.st_ino};
        bufferevent_decref(bev); /* freed now if evhttp is already done with it */
    }
    a->nlearning = 0;
}

static void
on_recheck(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    struct timeval second = {1, 0};
    (void)fd;
    (void)what;
    if (conns_count(a) < ADMIN_MAX_CONNECTIONS)
        accepting(a, 1);
    else
        evtimer_add(a->recheck, &second);
}

/*
 * accept() on the admin socket failed (out of file descriptors): evhttp
 * sets no error callback, and libevent would retry at once, for ever.
 * Pause as the workers' listeners do.  The callback's argument is evhttp's,
 * so the one admin server of the process is found here.
 */
static struct admin *the_admin;

static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
    struct admin *a = the_admin;
    struct timeval pause = {0, 250 * 1000};
    uint64_t now = (uint64_t)time(NULL);
    int err = errno;
    (void)arg;
    if (a == NULL)
        return;
    evconnlistener_disable(lev);
    if (!a->paused)
        evtimer_add(a->resume, &pause);
    a->accept_failures++;
    if (a->accept_logged != 0 && now - a->accept_logged < 10)
        return;
    log_warn("admin: accept failed: %s (%llu times since the last report); pausing 250 ms each "
             "time", strerror(err), (unsigned long long)a->accept_failures);
    a->accept_failures = 0;
    a->accept_logged = now;
}

static void
on_resume(evutil_socket_t fd, short what, void *arg)
{
    struct admin *a = arg;
    (void)fd;
    (void)what;
    if (!a->paused)
        evconnlistener_enable(evhttp_bound_socket_get_listener(a->bound));
}

/* evhttp accepted a connection and asks for its bufferevent: count it. */
static struct bufferevent *
on_connection(struct event_base *base, void *arg)
{
    struct admin *a = arg;
    struct bufferevent *bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        return NULL;
    if (a->nlearning < ADMIN_CONN_SLOTS) {
        bufferevent_incref(bev); /* its socket is set after we return: learnt next turn */
        a->learning[a->nlearning++] = bev;
        event_active(a->learn, EV_TIMEOUT, 0);
    }
    if (conns_count(a) >= ADMIN_MAX_CONNECTIONS)
        accepting(a, 0);
    return bev;
}

/* rules_make - copy what requests are checked against out of conf; -1 when out of memory. */
static int
rules_make(struct admin_rules *r, const struct conf_admin *conf)
{
    memset(r, 0, sizeof(*r));
    r->addr = conf->addr;
    snprintf(r->token_file, sizeof(r->token_file), "%s", conf->token_file);
    snprintf(r->read_token_file, sizeof(r->read_token_file), "%s", conf->read_token_file);
    if (conf->nserver_names > 0) {
        r->server_names = calloc(conf->nserver_names, sizeof(r->server_names[0]));
        if (r->server_names == NULL)
            return -1;
        memcpy(r->server_names, conf->server_names,
               conf->nserver_names * sizeof(r->server_names[0]));
        r->nserver_names = conf->nserver_names;
    }
    return 0;
}

/* check_token_file - 0 when path ("" : none) holds a usable token; else -1 with err. */
static int
check_token_file(const char *path, char *err, size_t errlen)
{
    char token[ADMIN_TOKEN_MAX + 1], why[CONF_PATH_MAX + 100];

    if (path[0] == '\0')
        return 0;
    if (admin_token_read(path, token, sizeof(token), why, sizeof(why)) != 0) {
        snprintf(err, errlen, "admin: %s", why);
        return -1;
    }
    OPENSSL_cleanse(token, sizeof(token));
    return 0;
}

int
admin_check_conf(const struct conf_admin *conf, char *err, size_t errlen)
{
    if (check_token_file(conf->token_file, err, errlen) != 0)
        return -1;
    return check_token_file(conf->read_token_file, err, errlen);
}

struct admin *
admin_new(struct event_base *base, const struct conf_admin *conf, const struct admin_hooks *hooks,
          char *err, size_t errlen)
{
    const struct conf_addr *addr = &conf->addr;

    /* a token file that cannot be used now is a startup error, not a 500 later */
    if (admin_check_conf(conf, err, errlen) != 0)
        return NULL;
    struct admin *a = calloc(1, sizeof(*a));
    if (a == NULL || rules_make(&a->rules, conf) != 0) {
        snprintf(err, errlen, "out of memory");
        free(a);
        return NULL;
    }
    a->hooks = *hooks;
    a->http = evhttp_new(base);
    if (a->http == NULL) {
        snprintf(err, errlen, "cannot create the HTTP server");
        goto out_free;
    }
    evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                            EVHTTP_REQ_POST | EVHTTP_REQ_DELETE);
    evhttp_set_max_body_size(a->http, 1 << 20);
    evhttp_set_max_headers_size(a->http, 16384);
    evhttp_set_timeout(a->http, 30);
    evhttp_set_gencb(a->http, on_request, a);
    evhttp_set_bevcb(a->http, on_connection, a);
    a->learn = event_new(base, -1, 0, on_learn, a);
    a->recheck = evtimer_new(base, on_recheck, a);
    a->resume = evtimer_new(base, on_resume, a);
    if (a->learn == NULL || a->recheck == NULL || a->resume == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out_free_http;
    }
    a->bound = evhttp_bind_socket_with_handle(a->http, addr->host, addr->port);
    if (a->bound == NULL) {
        snprintf(err, errlen, "admin: cannot listen on %s:%u", addr->host, addr->port);
        goto out_free_http;
    }
    evconnlistener_set_error_cb(evhttp_bound_socket_get_listener(a->bound), on_accept_error);
    the_admin = a;
    return a;
out_free_http:
    if (a->learn)
        event_free(a->learn);
    if (a->recheck)
        event_free(a->recheck);
    if (a->resume)
        event_free(a->resume);
    evhttp_free(a->http);
out_free:
    free(a->rules.server_names);
    free(a);
    return NULL;
}

/* A reload changed which file holds a token (or none): say what it means. */
static void
log_token_change(const char *what, const char *was, const char *now, const char *added,
                 const char *removed)
{
    if (strcmp(was, now) == 0)
        return;
    if (now[0] == '\0')
        log_warn("admin: %s removed: %s from now on", what, removed);
    else if (was[0] == '\0')
        log_info("admin: %s \"%s\" added: %s from now on", what, now, added);
    else
        log_info("admin: %s is now \"%s\"", what, now);
}

void
admin_set_conf(struct admin *a, const struct conf_admin *conf)
{
    struct admin_rules r;

    if (rules_make(&r, conf) != 0) {
        log_error("admin: out of memory: keeping the admin settings in force");
        return;
    }
    log_token_change("token_file", a->rules.token_file, r.token_file,
                     "every call but GET /metrics, /healthz, /readyz and /report needs a token",
                     "no call needs a token");
    log_token_change("read_token_file", a->rules.read_token_file, r.read_token_file,
                     "its token may read", "only token_file's token may read");
    r.addr = a->rules.addr; /* the socket stays where it is until a restart */
    free(a->rules.server_names);
    a->rules = r;
}

void
admin_free(struct admin *a)
{
    if (a == NULL)
        return;
    evhttp_free(a->http);
    for (int i = 0; i < a->nlearning; i++)
        bufferevent_decref(a->learning[i]);
    event_free(a->learn);
    event_free(a->recheck);
    event_free(a->resume);
    if (the_admin == a)
        the_admin = NULL;
    free(a->rules.server_names);
    free(a);
}
