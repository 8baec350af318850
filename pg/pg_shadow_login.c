/*
 * pg_shadow_login.c - the shadow session logs in as the client's role
 * itself, when tandem authenticated the client (an auth source, pg_auth.c).
 *
 * libpq (pg_login.c) can log in only with a password, and tandem holds
 * none: it holds the ClientKey recovered from the client's SCRAM proof.
 * So tandem speaks the login itself, as it does to the primary, on the
 * shadow connection it will mirror on:
 *
 *   connect -> [SSLRequest, 'S', TLS handshake] -> StartupMessage (the
 *   client's parameters, its user) -> SASL answered by pg_auth_answer ->
 *   AuthenticationOk, ParameterStatus, BackendKeyData -> ReadyForQuery
 *
 * and the session is mirrored with the client's own rights, no role
 * switched to.  When the shadow refuses that login (its verifier for the
 * role differs, so the ClientKey cannot open it; another method; any
 * error before ReadyForQuery) the login of before runs instead (libpq with
 * the shadow backend's credentials), counted and logged: the client never
 * waits for or fails on the shadow.  A connect or TLS failure detaches the
 * shadow as any failed connect does (libpq would fail the same way).
 */
#include <errno.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/runtime.h"
#include "engine/worker.h"
#include "metrics/log.h"
#include "pg/pg_session_int.h"
#include "protocol/pgw.h"

/* The largest message the login reads whole (authentication, parameters, errors). */
#define LOGIN_MAX_MESSAGE (64 * 1024)

#define slog(s, level, ...) log_at(level, (s)->base.id, (s)->base.peer, __VA_ARGS__)

enum own_phase {
    OWN_CONNECTING, /* the TCP connect is in flight */
    OWN_TLS_ASK,    /* SSLRequest sent: waiting for 'S' */
    OWN_TLS,        /* the TLS handshake */
    OWN_AUTH,       /* startup sent: authentication, parameters, key, until ReadyForQuery */
};

struct pg_shadow_login {
    enum own_phase phase;
    unsigned authenticated : 1; /* AuthenticationOk came */
    struct pg_auth_login auth;
};

static void on_login_event(evutil_socket_t fd, short what, void *arg);

void
pg_shadow_login_free(struct pg_session *s)
{
    struct pg_shadow_login *o = s->shadow->own;
    if (o == NULL)
        return;
    explicit_bzero(o, sizeof(*o));
    free(o);
    s->shadow->own = NULL;
}

/* The connection and the state go; the caller says what comes next. */
static void
login_stop(struct pg_session *s)
{
    pg_shadow_conn_close(s);
    pg_shadow_login_free(s);
}

static void
fall_back(struct pg_session *s, const char *why)
{
    login_stop(s);
    pg_shadow_login_fallback(s, why);
}

static void
give_up(struct pg_session *s, const char *why)
{
    login_stop(s);
    pg_shadow_login_failed(s, why);
}

/* The client's startup parameters, its user among them, as the primary got them. */
static int
send_startup(struct pg_session *s)
{
    struct pgw_startup st;
    const char *err = NULL;
    size_t used;
    uint8_t out[PGW_STARTUP_MAX_LEN];

    if (pgw_startup_parse(s->startup, s->startup_len, &used, &st, &err) != PGW_OK)
        return -1;
    size_t n = pgw_build_startup(out, sizeof(out), st.params, st.nparams);
    if (n == 0)
        return -1;
    evbuffer_add(s->base.shadow_conn->out, out, n);
    s->shadow->own->phase = OWN_AUTH;
    return 0;
}

static void
connected(struct pg_session *s)
{
    struct pg_shadow_login *o = s->shadow->own;
    if (s->base.shadow_be->tls != NULL) {
        uint8_t req[8];
        evbuffer_add(s->base.shadow_conn->out, req, pgw_build_ssl_request(req, sizeof(req)));
        o->phase = OWN_TLS_ASK;
    } else if (send_startup(s) != 0) {
        fall_back(s, "the client's startup packet cannot be sent again");
        return;
    }
    conn_want_read(s->base.shadow_conn, 1);
}

static void
tls_handshake(struct pg_session *s)
{
    enum conn_io io = conn_handshake(s->base.shadow_conn);
    if (io == CONN_AGAIN)
        return;
    if (io != CONN_OK) {
        char why[200];
        snprintf(why, sizeof(why), "TLS: %s",
                 conn_tls_error(s->base.shadow_conn, "handshake failed"));
        give_up(s, why);
        return;
    }
    if (send_startup(s) != 0)
        fall_back(s, "the client's startup packet cannot be sent again");
}

/* The shadow's one-byte answer to SSLRequest. */
static void
tls_answer(struct pg_session *s)
{
    const struct conf_backend *cb = s->base.shadow_be->conf;
    uint8_t c;
    if (evbuffer_remove(s->base.shadow_conn->in, &c, 1) != 1)
        return;
    if (c != 'S') {
        give_up(s, "the shadow refuses TLS");
        return;
    }
    const char *name = cb->tls_server_name[0] ? cb->tls_server_name : cb->addr.host;
    if (conn_start_tls(s->base.shadow_conn, s->base.shadow_be->tls, 0, name,
                       cb->tls == CONF_TLS_VERIFY_FULL ? name : NULL) != 0) {
        give_up(s, conn_tls_error(s->base.shadow_conn, "TLS failed"));
        return;
    }
    s->shadow->own->phase = OWN_TLS;
    tls_handshake(s);
}

/* An ErrorResponse during the login: why, for the log (the server's words, no secret). */
static void
refused(struct pg_session *s, const uint8_t *body, size_t len)
{
    struct pgw_error_fields f;
    char why[300];
    if (pgw_error_parse(body, len, &f) == PGW_OK && f.message != NULL)
        snprintf(why, sizeof(why), "the shadow refused the login (%s): %.*s", f.sqlstate,
                 (int)(f.message_len < 200 ? f.message_len : 200), f.message);
    else
        snprintf(why, sizeof(why), "the shadow refused the login");
    fall_back(s, why);
}

/* ReadyForQuery: logged in as the client.  The connection is the mirror's now. */
static void
logged_in(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    if (sh->login_ev_added) {
        event_del(&sh->login_ev);
        sh->login_ev_added = 0;
    }
    pg_shadow_login_free(s);
    sh->as_client = 1;
    conn_rebind(s->base.shadow_conn, s->base.w->base, session_on_shadow, &s->base);
    pg_shadow_attached(s);
}

/* One whole message of the login; 0 to read on, -1 when the login ended here. */
static int
login_message(struct pg_session *s, uint8_t type, const uint8_t *body, size_t len)
{
    struct pg_shadow *sh = s->shadow;
    struct pg_shadow_login *o = sh->own;
    const char *name, *value;
    uint32_t code, pid, key;
    struct pg_auth_err e;

    switch (type) {
    case 'R':
        if (pgw_auth_parse(body, len, &code) != PGW_OK || len < 4)
            return fall_back(s, "an invalid authentication request"), -1;
        if (code == PGW_AUTH_OK) {
            o->authenticated = 1;
            return 0;
        }
        if (pg_auth_answer(s, &o->auth, s->base.shadow_be, s->base.shadow_conn->out, code, body + 4,
                           len - 4, &e) != 0)
            return fall_back(s, e.msg), -1;
        return 0;
    case 'E':
        refused(s, body, len);
        return -1;
    case 'S':
        if (pgw_parameter_status_parse(body, len, &name, &value) == PGW_OK &&
            strcmp(name, "is_superuser") == 0)
            sh->super_at_login = strcmp(value, "on") == 0;
        return 0;
    case 'K':
        if (pgw_backend_key_parse(body, len, &pid, &key) == PGW_OK) {
            sh->key.be_pid = pid;
            sh->key.be_key = key;
            cancel_target_set_addr(&sh->key, (const struct sockaddr *)&s->base.shadow_be->addr,
                                   s->base.shadow_be->addrlen);
        }
        return 0;
    case 'Z':
        if (!o->authenticated)
            return fall_back(s, "ReadyForQuery before AuthenticationOk"), -1;
        /* the login's last message: nothing of it is left for the mirror's reader */
        evbuffer_drain(s->base.shadow_conn->in, PGW_HEADER_LEN + len);
        logged_in(s);
        return -1;
    default: /* NoticeResponse, NegotiateProtocolVersion: nothing to act on */
        return 0;
    }
}

static void
read_messages(struct pg_session *s)
{
    struct evbuffer *in = s->base.shadow_conn->in;
    uint8_t hdr[PGW_HEADER_LEN];
    struct pgw_header h;
    const char *err;

    while (s->shadow->own != NULL && evbuffer_get_length(in) >= PGW_HEADER_LEN) {
        evbuffer_copyout(in, hdr, sizeof(hdr));
        if (pgw_header_parse(hdr, sizeof(hdr), LOGIN_MAX_MESSAGE, &h, &err) != PGW_OK) {
            fall_back(s, "the shadow sent an invalid or oversized message during the login");
            return;
        }
        size_t total = pgw_header_total(&h);
        if (evbuffer_get_length(in) < total)
            return;
        const uint8_t *msg = evbuffer_pullup(in, (ssize_t)total);
        if (msg == NULL || login_message(s, h.type, msg + PGW_HEADER_LEN, total - PGW_HEADER_LEN))
            return; /* the login ended: in may be gone */
        evbuffer_drain(in, total);
    }
}

/* Read what came, act on it, send what the login wrote. */
static void
login_io(struct pg_session *s, short what)
{
    struct pg_shadow_login *o = s->shadow->own;
    size_t n;

    if ((what & EV_READ) && o->phase != OWN_TLS) {
        enum conn_io io =
            conn_read(s->base.shadow_conn, s->base.w->scratch, sizeof(s->base.w->scratch), &n);
        if (io == CONN_EOF || io == CONN_ERROR) {
            give_up(s, "the shadow closed the connection during the login");
            return;
        }
    }
    if (o->phase == OWN_TLS)
        tls_handshake(s);
    else if (o->phase == OWN_TLS_ASK)
        tls_answer(s);
    else
        read_messages(s);
    if (s->shadow->own == NULL || s->shadow->own->phase == OWN_TLS)
        return;
    if (conn_flush(s->base.shadow_conn) == CONN_ERROR)
        give_up(s, "write to the shadow failed during the login");
}

static void
on_login_event(evutil_socket_t fd, short what, void *arg)
{
    struct pg_session *s = arg;
    (void)fd;
    s->base.now_ns = 0;
    if (s->shadow->own == NULL)
        return;
    if (s->shadow->own->phase == OWN_CONNECTING) {
        int err = session_connect_result(s->base.shadow_conn);
        if (err != 0) {
            char why[200];
            snprintf(why, sizeof(why), "connect: %s", strerror(err));
            pg_count_backend(s, s->base.shadow_be, METRIC_B_CONNECT_FAILURES, 1);
            give_up(s, why);
            return;
        }
        connected(s);
        if (s->shadow->own != NULL && conn_flush(s->base.shadow_conn) == CONN_ERROR)
            give_up(s, "write to the shadow failed during the login");
        return;
    }
    login_io(s, what);
}

static void
on_login_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct pg_session *s = arg;
    (void)fd, (void)what;
    s->base.now_ns = 0;
    s->shadow->login_ev_added = 0;
    if (s->shadow->own != NULL)
        give_up(s, "login timeout");
}

int
pg_shadow_login_start(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    if (!pg_auth_can_login(s) || sh->own != NULL)
        return -1;
    sh->own = calloc(1, sizeof(*sh->own));
    if (sh->own == NULL)
        return -1;
    int rc = session_connect(s->base.shadow_conn, s->base.w->base, s->base.shadow_be,
                             &s->base.rt->conf->limits, on_login_event, s);
    if (rc < 0) {
        pg_shadow_login_free(s);
        return -1; /* libpq's login tries, and says why it cannot */
    }
    s->base.shadow_open = 1; /* shadow_close releases it, and counts it closed */
    pg_count_backend(s, s->base.shadow_be, METRIC_B_SERVER_OPENED, 1);
    sh->as_role = 0;
    sh->as_client = 0;
    memset(&sh->key, 0, sizeof(sh->key));
    uint32_t ms = s->base.rt->conf->limits.connect_timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_assign(&sh->login_ev, s->base.w->base, on_login_timeout, s);
    evtimer_add(&sh->login_ev, &tv);
    sh->login_ev_added = 1;
    if (rc == 0) { /* connected already */
        sh->own->phase = OWN_CONNECTING;
        conn_kick(s->base.shadow_conn, EV_WRITE);
    }
    return 0;
}
