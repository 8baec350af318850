/*
 * pg_session.c - a PostgreSQL client session relayed to the primary.
 *
 * Bytes are framed, not decoded: each direction keeps "how much of the
 * current message is still to pass" (pg_frame.h); a run of
 * whole or partial messages is moved from one evbuffer to the other with a
 * single evbuffer_remove_buffer(), which hands over chains without copying.
 * Only the few messages tandem must look inside (the startup packet,
 * authentication, BackendKeyData, ReadyForQuery, the query text for
 * classification) are made contiguous, and those are small or bounded by
 * max_packet_size.
 *
 * The sockets are the engine's (engine/session.c): its handlers read and
 * write them, call the op_* hooks here with what arrived, and then
 * session_settle(), the one place that frees a session, so nothing here
 * ever frees the session it is running for.
 */
#include "pg/pg_session.h"

#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "metrics/metric.h"
#include "protocol/pgw.h"
#include "engine/cancel.h"
#include "engine/conn.h"
#include "control/control.h"
#include "protocol/pgcache.h"
#include "metrics/log.h"
#include "pg/pg_session_int.h"
#include "control/runtime.h"
#include "engine/worker.h"
#include "routing/route.h"

/* Before authentication a client may only send small messages. */
#define PREAUTH_MAX_MESSAGE 16384
/* Largest message the backend may send that we inspect whole (auth, Z, K). */
#define INSPECT_MAX_MESSAGE 65536
/* The protocol's own ceiling for a backend message (1 GB data row). */
#define BACKEND_MAX_MESSAGE 0x40000000u
/*
 * And for a client's: PostgreSQL takes a Query, Parse, Bind ... up to 1 GB
 * (PQ_LARGE_MESSAGE_LIMIT) and refuses a larger one itself.  tandem streams
 * every message it does not read whole, so this is a check of the length,
 * not a buffer; max_packet_size bounds what is read whole (the statement
 * text it classifies).
 */
#define FRONTEND_MAX_MESSAGE 0x40000000u
/* How long a closing session may take to hand its last bytes to the client. */
#define LINGER_MS 5000
/* A message the digest reads must be whole; larger ones stream uncompared. */
#define DIGEST_MAX_MESSAGE (1u << 20)
/* A read larger than this is not held back to be routed: the primary answers it. */
#define ROUTE_BUF_MAX (64 * 1024)

static const char *const phase_names[] = {
    "startup", "client_tls", "auth_lookup", "client_auth", "connecting", "server_tls_ask", "server_tls", "auth",
};

static const struct session_ops pg_session_ops;
static int shadowing(const struct pg_session *s);
static int op_idle(struct session *base);
static void logged_in(struct pg_session *s);
static void login_on_kept(struct pg_session *s);

#define slog(s, level, ...) log_at(level, (s)->base.id, (s)->base.peer, __VA_ARGS__)

void
pg_count_backend(struct pg_session *s, const struct rt_backend *b, enum metric_backend_counter c,
                 uint64_t n)
{
    session_count_backend(&s->base, b, c, n);
}

/* The answering backend's counters. */
static void
count_backend(struct pg_session *s, enum metric_backend_counter c, uint64_t n)
{
    session_count_backend(&s->base, s->base.be, c, n);
}

/* After a role swap libpq owns the answering socket: it goes with the connection. */
static void
op_server_closed(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    if (s->server_pq != NULL) {
        PQsetnonblocking(s->server_pq, 1);
        PQfinish(s->server_pq);
        s->server_pq = NULL;
    }
}

/* server_connections reuse: the connection its client left idle is kept (pg_park.h). */
static int
op_server_keep(struct session *base)
{
    return pg_park_put((struct pg_session *)base);
}

/* The client goes: its cancel key with it. */
static void
op_leaving(struct session *base)
{
    cancel_unregister(&((struct pg_session *)base)->cancel);
}

/* ------------------------------------------------------------------ */
/* Ending a session.                                                   */

/* Queue an ErrorResponse for the client. */
static void
send_error(struct pg_session *s, const char *severity, const char *sqlstate, const char *msg)
{
    uint8_t buf[1024];
    size_t n = pgw_build_error(buf, sizeof(buf), severity, sqlstate, msg);
    if (n > 0)
        evbuffer_add(s->base.client.out, buf, n);
}

/*
 * fail - tell the client why (FATAL with sqlstate), count it, and close.
 * The message is for the client and the log alike: it never holds secrets.
 */
/* The refusals a client flood is made of; WORKER_REFUSED__COUNT for the others. */
static enum worker_refusal
refusal_of(enum metric_client_error reason)
{
    switch (reason) {
    case METRIC_ERR_TOO_MANY_CLIENTS: return WORKER_REFUSED_OVER_LIMIT;
    case METRIC_ERR_STARTUP_TIMEOUT: return WORKER_REFUSED_STARTUP_TIMEOUT;
    case METRIC_ERR_TLS_REQUIRED: return WORKER_REFUSED_TLS_REQUIRED;
    default: return WORKER_REFUSED__COUNT;
    }
}

static void
fail(struct pg_session *s, enum metric_client_error reason, const char *sqlstate, const char *msg)
{
    s->no_keep = 1; /* whatever failed, the server connection is not handed to anyone */
    if (s->base.state == SESSION_LINGER || s->base.state == SESSION_DEAD || s->base.state == SESSION_SHADOW_DRAIN)
        return; /* closing already, or the client is gone */
    enum worker_refusal flood = refusal_of(reason);
    if (flood != WORKER_REFUSED__COUNT) {
        /* what a flood brings: summed in the worker's report, not a line per client */
        slog(s, CONF_LOG_DEBUG, "closing: %s (%s)", msg, sqlstate);
        worker_note_refused(s->base.w, s->base.lis->metric_slot, flood);
    } else {
        slog(s, reason == METRIC_ERR_SHUTDOWN ? CONF_LOG_INFO : CONF_LOG_WARN, "closing: %s (%s)",
             msg, sqlstate);
    }
    session_count_client_error(&s->base, reason);
    send_error(s, "FATAL", sqlstate, msg);
    session_set_state(&s->base, SESSION_LINGER);
}

/*
 * pg_session_forward - len bytes of the shadow's answer to a routed read
 * go to the client (dropped when the client is gone).
 */
void
pg_session_forward(struct pg_session *s, struct evbuffer *in, size_t len)
{
    if (s->base.state != SESSION_ACTIVE) {
        evbuffer_drain(in, len);
        return;
    }
    evbuffer_remove_buffer(in, s->base.client.out, len);
    session_count_listener(&s->base, METRIC_L_BYTES_SENT, len);
    s->route.forwarded += len;
}

/* pg_session_route_done - the shadow's ReadyForQuery for the routed read was forwarded. */
void
pg_session_route_done(struct pg_session *s)
{
    s->base.routed = NULL;
    s->route.forwarded = 0;
    evbuffer_drain(s->route.buf, evbuffer_get_length(s->route.buf));
    if (s->base.outstanding > 0)
        s->base.outstanding--;
    if (s->base.state == SESSION_ACTIVE && conn_flush(&s->base.client) == CONN_ERROR)
        s->base.state = SESSION_DEAD;
    session_wake(&s->base);
}

/*
 * pg_session_route_failed - the shadow is gone while answering the routed
 * read.  Nothing of the answer reached the client yet: the caller has put
 * a unit for the primary in the list, and the read goes there (retried,
 * counted).  Part of it did: the client's protocol stream cannot be mended.
 */
void
pg_session_route_failed(struct pg_session *s, int retried)
{
    s->base.routed = NULL;
    s->route.forwarded = 0;
    if (!retried) {
        fail(s, METRIC_ERR_BACKEND_LOST, PGW_SQLSTATE_CONNECTION_FAILURE,
             "lost the connection to the backend answering this read");
        conn_flush(&s->base.client); /* the linger timer ends the session */
        return;
    }
    pg_route_fallback(s, ROUTE_REASON_RETRIED);
    evbuffer_add_buffer(s->base.server.out, s->route.buf);
    if (s->base.server_open && conn_flush(&s->base.server) == CONN_ERROR)
        fail(s, METRIC_ERR_BACKEND_LOST, PGW_SQLSTATE_CONNECTION_FAILURE,
             "lost the connection to the backend");
    session_wake(&s->base);
}

/* The plug-in's parts at the very end (engine/session.c frees the rest first). */
static void
op_destroy(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    pg_shadow_release(s);
    pg_park_login_free(&s->login);
    session_shadow_conn_free(base);
    if (s->route.buf)
        evbuffer_free(s->route.buf);
    pgstmt_table_free(s->stmts);
    pg_authq_forget(s);
    pg_auth_free(s);
    free(s->startup);
    free(s);
}

/* The client's bytes wait while the primary's connection is being opened. */
/*
 * Units sent to the primary and not yet answered (ReadyForQuery), at most:
 * past it the client's next bytes wait in its socket.  Each unit has a
 * record (and, compared, a digest) until both sides answered; a client
 * pipelining without reading its answers used to pile them up without
 * bound (22 MB of INSERTs: +463 MiB).  Only whole units count, so the
 * primary can always answer them and reading resumes: no deadlock.
 */
#define PG_MAX_OUTSTANDING 1024

static int
op_client_wanted(struct session *base)
{
    int phase = base->state;
    return phase != PGS_CONNECTING && phase != PGS_SERVER_TLS_ASK && phase != PGS_SERVER_TLS &&
           base->outstanding < PG_MAX_OUTSTANDING;
}

/* ------------------------------------------------------------------ */
/* Cancel requests.                                                    */

/*
 * A forwarded cancel.  libpq's PQcancel returns when the server has read
 * the request and closed the connection, so a client may send its next
 * query right after; the client's cancel connection (client_fd, a dup of
 * it) is therefore held open until the postmaster has closed ours, or the
 * cancel could land on that next query.
 */
struct cancel_job {
    int fd;        /* to the backend */
    int client_fd; /* the client's cancel connection, closed last */
    int sent;
    struct event ev;
    uint8_t packet[16];
};

static void
cancel_job_done(struct cancel_job *job)
{
    close(job->fd);
    if (job->client_fd >= 0)
        close(job->client_fd);
    free(job);
}

static void
on_cancel_io(evutil_socket_t fd, short what, void *arg)
{
    struct cancel_job *job = arg;
    (void)fd;
    if ((what & EV_WRITE) && !job->sent) {
        /* connected (or failed): one small write, then wait for the server to hang up */
        if (write(job->fd, job->packet, sizeof(job->packet)) == (ssize_t)sizeof(job->packet)) {
            struct timeval tv = {.tv_sec = 5};
            job->sent = 1;
            event_assign(&job->ev, event_get_base(&job->ev), job->fd, EV_READ, on_cancel_io, job);
            event_add(&job->ev, &tv);
            return;
        }
    }
    cancel_job_done(job); /* read: EOF (the cancel was delivered), error or timeout */
}

/* Forward a client's CancelRequest to the backend that runs its query. */
static void
forward_cancel(struct pg_session *s, uint32_t pid, uint32_t key)
{
    struct cancel_target target;

    session_count_listener(&s->base, METRIC_L_CANCELS, 1);
    if (cancel_lookup(pid, key, &target) != 0) {
        /* a finished query's cancel, or someone guessing keys: summed, not a line each */
        slog(s, CONF_LOG_DEBUG, "cancel request with an unknown key ignored");
        session_count_listener(&s->base, METRIC_L_CANCELS_IGNORED, 1);
        worker_note_refused(s->base.w, s->base.lis->metric_slot, WORKER_REFUSED_CANCEL_UNKNOWN);
        return;
    }
    if (target.addrlen == 0) {
        /* swapped to a connection whose key tandem could not read: cancel nothing else */
        slog(s, CONF_LOG_WARN, "cancel request ignored: the answering connection's key is unknown");
        return;
    }
    struct cancel_job *job = malloc(sizeof(*job));
    if (job == NULL)
        return;
    job->sent = 0;
    pgw_build_cancel(job->packet, sizeof(job->packet), target.be_pid, target.be_key);
    job->fd = socket(target.addr.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (job->fd < 0) {
        free(job);
        return;
    }
    if (connect(job->fd, &target.addr.sa, target.addrlen) != 0 &&
        errno != EINPROGRESS) {
        close(job->fd);
        free(job);
        return;
    }
    job->client_fd = dup(s->base.client.fd);
    struct timeval tv = {.tv_sec = 5};
    event_assign(&job->ev, s->base.w->base, job->fd, EV_WRITE, on_cancel_io, job);
    event_add(&job->ev, &tv);
    slog(s, CONF_LOG_INFO, "cancel request forwarded to backend pid %u", target.be_pid);
}

/* ------------------------------------------------------------------ */
/* Connecting to the primary.                                          */

/* The primary could not be reached or refused TLS: a connection_failure error to the client. */
static void
backend_failed(struct session *base, const char *why)
{
    struct pg_session *s = (struct pg_session *)base;
    char msg[512];
    snprintf(msg, sizeof(msg), "could not connect to backend \"%s\" at %s: %s", s->base.be->conf->name,
             s->base.be->addr_text, why);
    count_backend(s, METRIC_B_CONNECT_FAILURES, 1);
    fail(s, METRIC_ERR_BACKEND_UNREACHABLE, PGW_SQLSTATE_CONNECTION_FAILURE, msg);
}

/* Send the startup packet: the client's parameters, protocol 3.0, no _pq_. options. */
static void
send_startup(struct pg_session *s)
{
    struct pgw_startup st;
    const char *err = NULL;
    size_t used;
    uint8_t out[PGW_STARTUP_MAX_LEN];

    /* parsed once already in STARTUP; parsing again keeps no pointers in the session */
    if (pgw_startup_parse(s->startup, s->startup_len, &used, &st, &err) != PGW_OK) {
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "invalid startup packet");
        return;
    }
    size_t n = pgw_build_startup(out, sizeof(out), st.params, st.nparams);
    if (n == 0) {
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "startup packet too long");
        return;
    }
    evbuffer_add(s->base.server.out, out, n);
    s->base.server_ready = 1;
    session_set_state(&s->base, PGS_AUTH);
    session_arm_timer(&s->base, s->base.rt->conf->limits.startup_timeout_ms);
}

static void
op_server_connected(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    count_backend(s, METRIC_B_SERVER_OPENED, 1);
    if (s->base.be->tls != NULL) {
        uint8_t req[8];
        evbuffer_add(s->base.server.out, req, pgw_build_ssl_request(req, sizeof(req)));
        session_set_state(&s->base, PGS_SERVER_TLS_ASK);
        return;
    }
    send_startup(s);
}

/* ------------------------------------------------------------------ */
/* Client input.                                                       */

/*
 * The first packet's length, once 4 bytes of it are in: 0 while fewer
 * are, or when it is out of bounds (the session ends).
 */
static uint32_t
startup_length(struct pg_session *s)
{
    uint8_t b[4];
    if (evbuffer_copyout(s->base.client.in, b, 4) != 4)
        return 0;
    uint32_t len = (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
    if (len < 8 || len > PGW_STARTUP_MAX_LEN) {
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION,
             "invalid length of startup packet");
        return 0;
    }
    return len;
}

/* SSLRequest (its len bytes still in client.in): TLS when the listener has it, else "N". */
static int
startup_ssl(struct pg_session *s, uint32_t len)
{
    struct evbuffer *in = s->base.client.in;
    evbuffer_drain(in, len);
    if (s->base.lis->tls == NULL || s->base.lis->conf->tls == CONF_LTLS_OFF ||
        s->base.client.ssl != NULL) {
        evbuffer_add(s->base.client.out, "N", 1);
        return 1;
    }
    /* bytes sent after SSLRequest, before the handshake, were not
     * protected by TLS: refuse them (CVE-2021-23214) */
    if (evbuffer_get_length(in) > 0) {
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION,
             "received unencrypted data after SSL request");
        return 0;
    }
    evbuffer_add(s->base.client.out, "S", 1);
    if (conn_flush(&s->base.client) != CONN_OK ||
        conn_start_tls(&s->base.client, s->base.lis->tls, 1, NULL, NULL) != 0) {
        session_count_client_error(&s->base, METRIC_ERR_TLS);
        session_close(&s->base);
        return 0;
    }
    session_set_state(&s->base, PGS_CLIENT_TLS);
    return 1;
}

/*
 * Tandem speaks 3.0: tell a newer client, as the server itself would.  The
 * option names come out of the startup packet, so the message is never
 * longer than the packet plus its own header: the buffer is sized for the
 * largest packet accepted.  (A 1 KiB buffer used to drop the message, and
 * the client went on believing its _pq_. options were understood.)
 * 0 when sent or not needed; -1 when it cannot be built (a bug: the client
 * is told and the session ends).
 */
static int
startup_negotiate(struct pg_session *s, const struct pgw_startup *st)
{
    const char *unknown[PGW_STARTUP_MAX_PARAMS];
    size_t nunknown = 0;
    for (size_t i = 0; i < st->nparams; i++)
        if (strncmp(st->params[i].name, "_pq_.", 5) == 0)
            unknown[nunknown++] = st->params[i].name;
    if (PGW_PROTO_MINOR(st->version) == 0 && nunknown == 0)
        return 0;
    uint8_t v[PGW_STARTUP_MAX_LEN + 16];
    size_t n = pgw_build_negotiate(v, sizeof(v), 0, unknown, nunknown);
    if (n == 0) {
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION,
             "cannot negotiate the protocol options of this startup packet");
        return -1;
    }
    evbuffer_add(s->base.client.out, v, n);
    return 0;
}

/* The user's secret is known (sec), or known to be missing (NULL): ask the client for proof. */
static void
auth_begin(struct pg_session *s, const char *user, const struct pgauth_secret *sec)
{
    struct pg_auth_err e;
    if (pg_auth_begin(s, user, sec, &e) != 0) {
        fail(s, e.reason, e.sqlstate, e.msg);
        return;
    }
    session_set_state(&s->base, PGS_CLIENT_AUTH);
}

/*
 * The auth sources in order: the auth_file, then auth_query (cached, or
 * fetched while the session waits in PGS_AUTH_LOOKUP).  A user neither
 * has goes through the same exchange as any other and gets 28P01.
 */
static void
auth_lookup(struct pg_session *s, const char *user, const char *db)
{
    const struct pgauth_secret *sec = user ? runtime_auth_lookup(s->base.lis, user) : NULL;
    struct pgauth_secret fetched;

    /* a name PostgreSQL could not hold either (NAMEDATALEN) is refused by pg_auth_begin */
    if (sec != NULL || user == NULL || user[0] == '\0' || strlen(user) >= 64 ||
        s->base.lis->conf->auth_query[0] == '\0') {
        auth_begin(s, user, sec);
        return;
    }
    switch (pg_authq_lookup(s, user, db, &fetched)) {
    case 1:
        auth_begin(s, user, &fetched);
        break;
    case 0:
        auth_begin(s, user, NULL);
        break;
    case 2:
        session_set_state(&s->base, PGS_AUTH_LOOKUP);
        break;
    default:
        fail(s, METRIC_ERR_AUTH_QUERY, "53200", "out of memory");
        break;
    }
    explicit_bzero(&fetched, sizeof(fetched));
}

void
pg_session_auth_found(struct pg_session *s, int rc, const struct pgauth_secret *sec,
                      const char *why)
{
    struct pgw_startup st;
    const char *err;
    size_t used;

    if (s->base.state != PGS_AUTH_LOOKUP)
        return;
    if (rc < 0) {
        slog(s, CONF_LOG_WARN, "%s", why);
        fail(s, METRIC_ERR_AUTH_QUERY, "28000", why);
    } else if (pgw_startup_parse(s->startup, s->startup_len, &used, &st, &err) != PGW_OK) {
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "invalid startup packet");
    } else {
        auth_begin(s, pgw_startup_param(&st, "user"), rc == 1 ? sec : NULL);
        if (s->base.state == PGS_CLIENT_AUTH && conn_flush(&s->base.client) == CONN_ERROR)
            session_close(&s->base);
    }
    session_settle_soon(&s->base);
}

/* The StartupMessage pkt (len bytes, parsed into st): keep it, and connect to the primary. */
static void
startup_login(struct pg_session *s, const uint8_t *pkt, uint32_t len, const struct pgw_startup *st)
{
    if (startup_negotiate(s, st) != 0)
        return;
    if (s->over_limit) {
        fail(s, METRIC_ERR_TOO_MANY_CLIENTS, PGW_SQLSTATE_TOO_MANY_CONNECTIONS,
             "sorry, too many clients already");
        return;
    }
    if (s->base.draining) {
        fail(s, METRIC_ERR_SHUTDOWN, PGW_SQLSTATE_ADMIN_SHUTDOWN, "tandem is shutting down");
        return;
    }
    s->startup = malloc(len);
    if (s->startup == NULL) {
        session_close(&s->base);
        return;
    }
    memcpy(s->startup, pkt, len);
    s->startup_len = len;
    const char *user = pgw_startup_param(st, "user");
    const char *db = pgw_startup_param(st, "database");
    slog(s, CONF_LOG_DEBUG, "startup user \"%s\" database \"%s\"", user ? user : "",
         db ? db : (user ? user : ""));
    pg_route_login(s, user, db, pgw_startup_param(st, "application_name"));
    evbuffer_drain(s->base.client.in, len);
    if (s->base.lis->auth != NULL || s->base.lis->conf->auth_query[0]) {
        /* an auth source: tandem authenticates the client before any backend is asked;
         * st pointed into the packet just drained, the session's copy lives on */
        struct pgw_startup kept;
        const char *err;
        size_t used;
        if (pgw_startup_parse(s->startup, s->startup_len, &used, &kept, &err) != PGW_OK) {
            fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "invalid startup packet");
            return;
        }
        user = pgw_startup_param(&kept, "user");
        db = pgw_startup_param(&kept, "database");
        auth_lookup(s, user, db ? db : user);
        return;
    }
    session_set_state(&s->base, PGS_CONNECTING);
    session_connect_backend(&s->base);
}

/*
 * The client's password messages while tandem authenticates it itself:
 * read whole (small before authentication), answered by pg_auth.c; once
 * the client is authenticated, the primary is connected to.
 */
static void
client_local_auth(struct pg_session *s)
{
    struct evbuffer *in = s->base.client.in;
    uint8_t hdr[PGW_HEADER_LEN];
    struct pgw_header h;
    const char *err;

    while (s->base.state == PGS_CLIENT_AUTH && evbuffer_get_length(in) >= PGW_HEADER_LEN) {
        evbuffer_copyout(in, hdr, sizeof(hdr));
        if (pgw_header_parse(hdr, sizeof(hdr), PREAUTH_MAX_MESSAGE, &h, &err) != PGW_OK) {
            fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, err);
            return;
        }
        if (h.type == 'X') {
            session_close(&s->base);
            return;
        }
        if (h.type != 'p') {
            char msg[96];
            snprintf(msg, sizeof(msg), "expected password response, got message type %d", h.type);
            fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, msg);
            return;
        }
        size_t total = pgw_header_total(&h);
        if (evbuffer_get_length(in) < total)
            return;
        const uint8_t *msg = evbuffer_pullup(in, (ssize_t)total);
        struct pg_auth_err e;
        int rc = msg ? pg_auth_client(s, msg + PGW_HEADER_LEN, total - PGW_HEADER_LEN, &e) : -1;
        if (msg == NULL) {
            session_close(&s->base);
            return;
        }
        evbuffer_drain(in, total);
        if (rc < 0) {
            fail(s, e.reason, e.sqlstate, e.msg);
            return;
        }
        if (rc == 1) {
            slog(s, CONF_LOG_DEBUG, "client authenticated by tandem");
            s->keep_server = s->base.lis->conf->server_conns == CONF_SERVER_CONNS_REUSE;
            if (s->keep_server && pg_park_take(s)) {
                login_on_kept(s);
                return;
            }
            session_set_state(&s->base, PGS_CONNECTING);
            session_connect_backend(&s->base);
            return;
        }
    }
}

/*
 * Read the first packet.  Returns 1 when the session moved on and the
 * client's input should be looked at again, 0 when more bytes are needed
 * or the session ends.
 */
static int
client_startup(struct pg_session *s)
{
    struct evbuffer *in = s->base.client.in;
    size_t avail = evbuffer_get_length(in);
    uint32_t len = avail >= 4 ? startup_length(s) : 0;

    if (len == 0 || avail < len)
        return 0;
    const uint8_t *pkt = evbuffer_pullup(in, len);
    struct pgw_startup st;
    const char *err = "invalid startup packet";
    size_t used;
    if (pkt == NULL || pgw_startup_parse(pkt, len, &used, &st, &err) != PGW_OK) {
        char msg[160];
        snprintf(msg, sizeof(msg), "invalid startup packet: %s", err);
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, msg);
        return 0;
    }
    switch (st.kind) {
    case PGW_STARTUP_CANCEL:
        forward_cancel(s, st.cancel_pid, st.cancel_key);
        session_close(&s->base);
        return 0;
    case PGW_STARTUP_GSSENC:
        evbuffer_drain(in, len);
        evbuffer_add(s->base.client.out, "N", 1);
        return 1;
    case PGW_STARTUP_SSL:
        return startup_ssl(s, len);
    case PGW_STARTUP_MESSAGE:
        break;
    }
    if (s->base.lis->conf->tls == CONF_LTLS_REQUIRED && s->base.client.ssl == NULL) {
        /* as PostgreSQL's hostssl-only pg_hba: the client learns why, nothing reaches a backend */
        fail(s, METRIC_ERR_TLS_REQUIRED, PGW_SQLSTATE_INVALID_AUTHORIZATION,
             "this listener requires TLS: connect with sslmode=require (or stronger)");
        return 0;
    }
    startup_login(s, pkt, len, &st);
    return 0;
}

/* Messages a client may send during authentication: password / SASL, Terminate. */
static int
client_auth(struct pg_session *s)
{
    struct evbuffer *in = s->base.client.in;
    uint8_t hdr[PGW_HEADER_LEN];
    struct pgw_header h;
    const char *err;

    while (evbuffer_get_length(in) >= PGW_HEADER_LEN) {
        evbuffer_copyout(in, hdr, sizeof(hdr));
        if (pgw_header_parse(hdr, sizeof(hdr), PREAUTH_MAX_MESSAGE, &h, &err) != PGW_OK) {
            fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, err);
            return -1;
        }
        if (h.type == 'X') {
            session_close(&s->base);
            return -1;
        }
        if (h.type != 'p' || s->auth != NULL) {
            char msg[96];
            snprintf(msg, sizeof(msg), "expected password response, got message type %d", h.type);
            if (s->auth != NULL) /* authenticated already: tandem logs in to the primary */
                snprintf(msg, sizeof(msg), "unexpected message type %d during authentication",
                         h.type);
            fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, msg);
            return -1;
        }
        if (evbuffer_get_length(in) < pgw_header_total(&h))
            break;
        evbuffer_remove_buffer(in, s->base.server.out, pgw_header_total(&h));
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Request units: what the client asks, classified as it passes.       */

static int
shadowing(const struct pg_session *s)
{
    return s->base.mirror.state != MIRROR_OFF;
}

/* Where the bytes of a run of client messages go besides the primary. */
enum run_target {
    RUN_PLAIN, /* the primary only */
    RUN_UNIT,  /* also the building unit, for the shadow */
    RUN_COPY,  /* also the shadow's queue directly (COPY data of a mirrored unit) */
    RUN_HOLD,  /* like RUN_UNIT, but held in route.buf until the unit's answerer is known */
};

static void
move_run(struct pg_session *s, size_t run, enum run_target target)
{
    if (run == 0)
        return;
    if (target == RUN_UNIT || target == RUN_HOLD)
        pg_shadow_collect(s, run);
    else if (target == RUN_COPY)
        pg_shadow_copy_data(s, run);
    /* a run begun as a candidate's goes to the primary once the candidacy ended */
    evbuffer_remove_buffer(s->base.client.in,
                           target == RUN_HOLD && s->route.candidate ? s->route.buf : s->base.server.out,
                           run);
}

/*
 * The building unit cannot be moved whole to the shadow after all: what it
 * held goes to the primary, ahead of the rest of it.  reason: the fallback
 * to count, or ROUTE_REASON_NOT_READ when it is no read (not counted).
 */
static void
route_abandon(struct pg_session *s, enum route_reason reason)
{
    if (!s->route.candidate)
        return;
    s->route.candidate = 0;
    evbuffer_add_buffer(s->base.server.out, s->route.buf);
    pg_route_fallback(s, (int)reason);
}

/* A unit starts with its first message, or grows by one more statement. */
static void
unit_statement(struct pg_session *s, const struct pgclass_result *cls)
{
    if (!s->unit_open) {
        s->unit_open = 1;
        s->unit_kind = cls ? cls->kind : REQ_KIND_READ;
        if (shadowing(s))
            pg_unit_begin(s, cls);
        s->route.parsed_unnamed = 0;
        s->route.candidate = s->building != NULL && pg_route_may_start(s, cls) &&
                             (s->route.buf != NULL || (s->route.buf = evbuffer_new()) != NULL);
    } else if (cls) {
        s->unit_kind = req_kind_strongest(s->unit_kind, cls->kind);
        if (shadowing(s))
            pg_unit_add(s, cls);
        if (cls->kind != REQ_KIND_READ)
            route_abandon(s, ROUTE_REASON_NOT_READ);
    }
}

/* A Parse of the candidate goes to the shadow: ours (a re-parse) or the client's. */
static void
route_note_parse(struct pg_session *s, int injected)
{
    struct pg_unit *u = s->building;
    if (!s->route.candidate || u == NULL)
        return;
    if (u->nparse >= 64) {
        route_abandon(s, ROUTE_REASON_UNROUTABLE);
        return;
    }
    if (injected)
        u->parse_injected |= 1ull << u->nparse;
    u->nparse++;
}

/* The unit's last message (Sync, Query, FunctionCall) has been moved. */
static void
unit_end(struct pg_session *s)
{
    const struct rt_backend *answer = s->base.be;

    if (!s->unit_open)
        unit_statement(s, NULL); /* a bare Sync is answered too */
    s->unit_open = 0;
    s->base.outstanding++;
    if (s->route.candidate) {
        s->route.candidate = 0;
        if (pg_route_decide(s, s->building) && pg_unit_route(s) == 0)
            answer = s->base.shadow_be;
        else
            evbuffer_add_buffer(s->base.server.out, s->route.buf);
    }
    if (s->base.lis->metric_slot >= 0 && answer->metric_slot >= 0)
        metric_add(&s->base.w->metrics->requests[s->base.lis->metric_slot][answer->metric_slot][s->unit_kind], 1);
    if (shadowing(s) && s->building)
        pg_unit_close(s);
}

/* Copy len bytes of the client message at offset `at` (header included). */
static const uint8_t *
peek_message(struct pg_session *s, size_t at, size_t len, uint8_t **heap)
{
    struct evbuffer_ptr pos;
    uint8_t *dst = s->base.w->scratch;

    *heap = NULL;
    if (len > sizeof(s->base.w->scratch) && (dst = *heap = malloc(len)) == NULL)
        return NULL;
    evbuffer_ptr_set(s->base.client.in, &pos, at, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(s->base.client.in, &pos, dst, len);
    return dst;
}

static int
word_is(const char **p, const char *word)
{
    size_t n = strlen(word);
    while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r')
        (*p)++;
    if (strncasecmp(*p, word, n) != 0 || ((*p)[n] != '\0' && !strchr(" \t\r\n;", (*p)[n])))
        return 0;
    *p += n;
    return 1;
}

/*
 * SQL-level PREPARE and the protocol's Parse share one namespace, so
 * DEALLOCATE and DISCARD ALL also end protocol-level statements.
 */
static void
track_statement_sql(struct pg_session *s, const char *sql, const struct pgclass_result *cls)
{
    const char *p = sql;
    if (cls->kind != REQ_KIND_SESSION || s->stmts == NULL)
        return;
    if (word_is(&p, "discard")) {
        if (word_is(&p, "all"))
            pgstmt_clear(s->stmts);
    } else if (word_is(&p, "deallocate")) {
        word_is(&p, "prepare");
        if (word_is(&p, "all")) {
            pgstmt_clear(s->stmts);
            return;
        }
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, " \t\r\n;");
        if (n > 0 && p[0] != '"')
            pgstmt_remove(s->stmts, p, n);
    }
}

/*
 * Cutover: does a unit starting with cls wait in client.in?  Every unit but
 * a read does, from a session out of any transaction, while the listener
 * is paused or this session has not yet swapped to the listener's roles.
 */
static int
write_must_wait(struct pg_session *s, const struct pgclass_result *cls)
{
    int slot = s->base.lis->metric_slot;
    if (s->unit_open || cls == NULL || cls->kind == REQ_KIND_READ || s->tx_open ||
        s->tx_status != 'I' || s->base.shadow_be == NULL ||
        (!control_paused(slot) && s->base.swapped == control_roles_swapped(slot)))
        return 0;
    s->base.writes_waiting = 1;
    return 1;
}

/* The classification a Bind to an untracked statement gets: safest is a write. */
static const struct pgclass_result unknown_statement = {.kind = REQ_KIND_WRITE};

/*
 * A scan of the client's input after login: `run` bytes from the front of
 * client.in are framed and go to the primary (and `target`) together, in
 * one evbuffer move, when the target changes or the scan ends.
 */
struct client_scan {
    size_t avail;           /* bytes of client.in not yet moved */
    size_t run;             /* of those, framed and waiting to move */
    enum run_target target; /* where the run goes besides the primary */
};

/* Move the run so far; the next message starts a new one going to target. */
static void
scan_cut(struct pg_session *s, struct client_scan *sc, enum run_target target)
{
    move_run(s, sc->run, sc->target);
    sc->avail -= sc->run;
    sc->run = 0;
    sc->target = target;
}

/* What a message handler tells the scan. */
enum scan_step {
    SCAN_TAKE, /* the message joins the run */
    SCAN_STOP, /* stop here: more bytes are needed, or a cutover holds the write */
    SCAN_FAIL, /* the session is closing */
};

/*
 * A Query, Parse or FunctionCall larger than max_packet_size: streamed like
 * any message, never held whole, so its text is not read: unclassified, it
 * is a write (answered by the primary, mirrored in shadow mode while the
 * unit fits the mirror queue).  Of a Parse the name is read, and the
 * statement recorded as unknown, without a copy to re-parse it on a new
 * shadow connection.
 */
static enum scan_step
scan_large_statement(struct pg_session *s, struct client_scan *sc, const struct pgw_header *h,
                     int *closes)
{
    size_t need = NAME_PREFIX_MAX;
    uint8_t *heap = NULL;

    if (sc->avail - sc->run < need)
        return SCAN_STOP;
    if (write_must_wait(s, &unknown_statement))
        return SCAN_STOP;
    unit_statement(s, &unknown_statement);
    route_abandon(s, ROUTE_REASON_UNROUTABLE);
    if (h->type == 'P') {
        const uint8_t *msg = peek_message(s, sc->run, need, &heap);
        if (msg == NULL) {
            fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "out of memory");
            return SCAN_FAIL;
        }
        const uint8_t *body = msg + PGW_HEADER_LEN;
        const uint8_t *nul = memchr(body, '\0', need - PGW_HEADER_LEN);
        size_t namelen = nul ? (size_t)(nul - body) : 0;
        if (nul == NULL) {
            /* a name longer than tandem tracks: its later uses are unknown writes */
            free(heap);
            route_abandon(s, ROUTE_REASON_UNROUTABLE);
            return SCAN_TAKE;
        }
        if (namelen > 0)
            route_abandon(s, ROUTE_REASON_UNROUTABLE);
        else
            s->route.parsed_unnamed = 1;
        route_note_parse(s, 0);
        if (s->stmts == NULL)
            s->stmts = pgstmt_table_new();
        struct pgstmt *st = s->stmts ? pgstmt_put(s->stmts, (const char *)body, namelen, NULL, 0,
                                                  &unknown_statement)
                                     : NULL;
        if (st && shadowing(s))
            pg_shadow_parsed(s, st);
        free(heap);
    } else {
        *closes = 1; /* Query, FunctionCall: a unit of their own */
    }
    return SCAN_TAKE;
}

/*
 * Query, Parse, FunctionCall: read whole (bounded by max_packet_size) for
 * their SQL, classified; a Parse is recorded for re-parsing on a shadow.
 * Larger ones stream unread (scan_large_statement).  *closes: the message
 * ends its unit.
 */
static enum scan_step
scan_statement(struct pg_session *s, struct client_scan *sc, const struct pgw_header *h,
               int *closes)
{
    size_t total = pgw_header_total(h), blen = h->len - 4;
    const char *sql = NULL, *name = NULL;
    size_t sqllen = 0, namelen = 0;
    struct pgclass_result cls = unknown_statement;
    uint8_t *heap = NULL;
    const uint8_t *msg;

    if (total > s->base.rt->conf->limits.max_packet_size)
        return scan_large_statement(s, sc, h, closes);
    if (sc->avail - sc->run < total)
        return SCAN_STOP;
    if ((msg = peek_message(s, sc->run, total, &heap)) == NULL) {
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "out of memory");
        return SCAN_FAIL;
    }
    if ((h->type == 'Q' && pgw_query_parse(msg + PGW_HEADER_LEN, blen, &sql, &sqllen) != PGW_OK) ||
        (h->type == 'P' &&
         pgstmt_parse_msg(msg + PGW_HEADER_LEN, blen, &name, &namelen, &sql, &sqllen) != 0)) {
        free(heap);
        fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "invalid string in message");
        return SCAN_FAIL;
    }
    if (sql != NULL)
        pgcache_classify(s->base.w->cls_cache, sql, &s->base.rt->classify, &cls);
    if (write_must_wait(s, &cls)) {
        free(heap);
        return SCAN_STOP;
    }
    unit_statement(s, &cls);
    if (sql != NULL && shadowing(s))
        pg_unit_set_sql(s->building, sql, sqllen);
    if (h->type == 'P') {
        /* a named statement parsed on the shadow alone would be missing on the primary */
        if (namelen > 0)
            route_abandon(s, ROUTE_REASON_UNROUTABLE);
        else
            s->route.parsed_unnamed = 1;
        route_note_parse(s, 0);
        if (s->stmts == NULL && (s->stmts = pgstmt_table_new()) != NULL)
            pgstmt_set_parse_budget(s->stmts, s->base.rt->conf->limits.max_prepared_bytes);
        /* the Parse bytes matter only to re-parse on a shadow */
        size_t keep = shadowing(s) ? total : 0;
        struct pgstmt *st = s->stmts ? pgstmt_put(s->stmts, name, namelen, msg, keep, &cls) : NULL;
        if (st && shadowing(s))
            pg_shadow_parsed(s, st);
    } else {
        if (h->type == 'Q')
            track_statement_sql(s, sql, &cls);
        *closes = 1;
    }
    free(heap);
    return SCAN_TAKE;
}

/*
 * Bind, Describe, Close: only the statement's name is read.  A statement
 * the shadow lacks gets its recorded Parse into the unit first.
 */
static enum scan_step
scan_reference(struct pg_session *s, struct client_scan *sc, const struct pgw_header *h)
{
    size_t total = pgw_header_total(h);
    size_t need = total < NAME_PREFIX_MAX ? total : NAME_PREFIX_MAX;
    const char *name;
    size_t namelen;
    struct pgstmt *st = NULL;
    uint8_t *heap = NULL;
    int named;

    if (sc->avail - sc->run < need)
        return SCAN_STOP;
    const uint8_t *msg = peek_message(s, sc->run, need, &heap);
    named = h->type == 'B' ? pgstmt_bind_msg(msg + PGW_HEADER_LEN, need - PGW_HEADER_LEN, &name,
                                             &namelen) == 0
                           : pgstmt_target_msg(msg + PGW_HEADER_LEN, need - PGW_HEADER_LEN, &name,
                                               &namelen) == 0;
    if (named && s->stmts)
        st = pgstmt_get(s->stmts, name, namelen);
    if (h->type == 'B' &&
        write_must_wait(s, st ? &st->cls : (named ? &unknown_statement : NULL))) {
        free(heap);
        return SCAN_STOP;
    }
    if (h->type == 'B') {
        unit_statement(s, st ? &st->cls : (named ? &unknown_statement : NULL));
        const char *q, *n;
        size_t ql, nl;
        if (st && st->parse_len > PGW_HEADER_LEN && shadowing(s) && s->building &&
            s->building->sql == NULL &&
            pgstmt_parse_msg(st->parse + PGW_HEADER_LEN, st->parse_len - PGW_HEADER_LEN, &n, &nl,
                             &q, &ql) == 0)
            pg_unit_set_sql(s->building, q, ql);
    } else {
        unit_statement(s, NULL);
    }
    /* the shadow can run only what it can be given: a statement with
     * its Parse kept, or the unnamed one parsed in this same unit */
    if (h->type == 'C' || (named && namelen > 0 && (st == NULL || st->parse == NULL)) ||
        (named && namelen == 0 && !s->route.parsed_unnamed))
        route_abandon(s, ROUTE_REASON_UNROUTABLE);
    if (st && shadowing(s) && s->unit_buf && s->building &&
        (s->base.mirror.state == MIRROR_READY || s->base.mirror.state == MIRROR_CONNECTING)) {
        /* the unit's earlier bytes first, then the statement's Parse */
        scan_cut(s, sc, RUN_UNIT);
        if (pg_unit_note_statement(s, st))
            route_note_parse(s, 1);
        if (h->type == 'C' && s->shadow && st->epoch == s->shadow->epoch)
            s->building->sampled = 1; /* the shadow must forget it too */
    }
    if (h->type == 'C' && st)
        pgstmt_remove(s->stmts, name, namelen);
    free(heap);
    return SCAN_TAKE;
}

/* Where a message of this type goes besides the primary. */
static enum run_target
message_target(const struct pg_session *s, uint8_t type)
{
    if (type == 'd' || type == 'c' || type == 'f')
        return s->copy_mirror ? RUN_COPY : RUN_PLAIN;
    if (s->route.candidate)
        return RUN_HOLD;
    if (shadowing(s) && s->building &&
        (s->base.mirror.state == MIRROR_READY || s->base.mirror.state == MIRROR_CONNECTING))
        return RUN_UNIT;
    return RUN_PLAIN;
}

/* The message's kind of step: statements, references, the unit's end, the rest. */
static enum scan_step
scan_message(struct pg_session *s, struct client_scan *sc, const struct pgw_header *h,
             int *closes)
{
    switch (h->type) {
    case 'Q':
    case 'P':
    case 'F':
        return scan_statement(s, sc, h, closes);
    case 'B':
    case 'D':
    case 'C':
        return scan_reference(s, sc, h);
    case 'S':
        *closes = 1;
        return SCAN_TAKE;
    case 'E':
        unit_statement(s, NULL);
        return SCAN_TAKE;
    case 'H':
        /* the client waits for answers before its Sync: the primary gives them */
        unit_statement(s, NULL);
        route_abandon(s, ROUTE_REASON_UNROUTABLE);
        return SCAN_TAKE;
    default: /* CopyData, CopyDone, CopyFail, and password messages */
        route_abandon(s, ROUTE_REASON_UNROUTABLE);
        return SCAN_TAKE;
    }
}

/* The unit's last message is in the run: -1 closing, 1 stop reading (routed), 0 go on. */
static int
scan_unit_end(struct pg_session *s, struct client_scan *sc)
{
    scan_cut(s, sc, RUN_PLAIN);
    unit_end(s);
    if (s->base.state != SESSION_ACTIVE)
        return -1;
    if (s->base.routed != NULL)
        return 1; /* what follows waits for the shadow's answer */
    return 0;
}

/*
 * Frame the client's messages after login and move them to the primary.
 * Validates each header (type, length), classifies the units and, in
 * shadow mode, copies each unit's bytes for the shadow.  Only Query and
 * Parse are read whole (for their SQL, bounded by max_packet_size); of a
 * Bind, Describe or Close only the names are read.  Everything else
 * streams.
 */
static int
client_active(struct pg_session *s)
{
    /* the rest of a message begun in an earlier read goes where its start went */
    struct client_scan sc = {
        .avail = evbuffer_get_length(s->base.client.in),
        .target = s->client_frame.skip > 0 ? (enum run_target)s->client_frame.target : RUN_PLAIN,
    };
    struct pgw_header h;
    int terminate = 0;

    while (sc.run < sc.avail) {
        const char *err;
        size_t n;
        enum pg_frame_result fr = pg_frame_step(&s->client_frame, s->base.client.in, NULL, sc.run,
                                                sc.avail - sc.run, PG_FRAME_FRONTEND,
                                                FRONTEND_MAX_MESSAGE, &h, &n, &err);
        if (fr == PG_FRAME_PASS) {
            sc.run += n;
            if (s->close_pending && s->client_frame.skip == 0) {
                /* the last bytes of a streamed Query: its unit ends now */
                s->close_pending = 0;
                int end = scan_unit_end(s, &sc);
                if (end < 0)
                    return -1;
                if (end > 0)
                    break;
            }
            continue;
        }
        if (fr == PG_FRAME_MORE)
            break;
        if (fr == PG_FRAME_BAD) {
            fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, err);
            return -1;
        }
        if (h.type == 'X') {
            terminate = 1;
            break;
        }
        size_t total = pgw_header_total(&h);
        int closes = 0;
        enum scan_step step = scan_message(s, &sc, &h, &closes);
        if (step == SCAN_FAIL)
            return -1;
        if (step == SCAN_STOP)
            break;
        if (s->route.candidate && evbuffer_get_length(s->route.buf) + total > ROUTE_BUF_MAX)
            route_abandon(s, ROUTE_REASON_UNROUTABLE);
        enum run_target want = message_target(s, h.type);
        if (want != sc.target)
            scan_cut(s, &sc, want);
        sc.run += pg_frame_begin(&s->client_frame, &h, sc.avail - sc.run);
        s->client_frame.target = (uint8_t)sc.target;
        if (closes && s->client_frame.skip > 0) {
            s->close_pending = 1; /* a large Query streams on: the unit ends with it */
        } else if (closes) {
            int end = scan_unit_end(s, &sc);
            if (end < 0)
                return -1;
            if (end > 0)
                break;
        }
    }
    move_run(s, sc.run, sc.target);
    if (terminate) {
        /* let the backend end its session cleanly, then go; a kept connection lives on */
        if (!pg_park_may_keep(s)) {
            uint8_t x[8];
            evbuffer_add(s->base.server.out, x, pgw_build_terminate(x, sizeof(x)));
            conn_flush(&s->base.server);
        }
        session_close(&s->base);
        return -1;
    }
    return 0;
}

static void
client_input(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;

    for (;;) {
        switch (s->base.state) {
        case PGS_STARTUP:
            if (!client_startup(s))
                return;
            if (s->base.state == PGS_CLIENT_TLS)
                return; /* the handshake reads what follows */
            continue;
        case PGS_CLIENT_AUTH:
            client_local_auth(s);
            return;
        case PGS_AUTH:
            client_auth(s);
            return;
        case SESSION_ACTIVE:
            client_active(s);
            return;
        default:
            /* connecting: keep the bytes until the backend is ready */
            if (evbuffer_get_length(s->base.client.in) > PREAUTH_MAX_MESSAGE)
                fail(s, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION,
                     "unexpected data before authentication");
            return;
        }
    }
}

/* ------------------------------------------------------------------ */
/* Server input.                                                       */

/* Pull one whole message (at most INSPECT_MAX_MESSAGE) to the front of in. */
static const uint8_t *
whole_message(struct evbuffer *in, struct pgw_header *h, int *bad)
{
    uint8_t hdr[PGW_HEADER_LEN];
    const char *err;

    *bad = 0;
    if (evbuffer_get_length(in) < PGW_HEADER_LEN)
        return NULL;
    evbuffer_copyout(in, hdr, sizeof(hdr));
    if (pgw_header_parse(hdr, sizeof(hdr), INSPECT_MAX_MESSAGE, h, &err) != PGW_OK) {
        *bad = 1;
        return NULL;
    }
    if (evbuffer_get_length(in) < pgw_header_total(h))
        return NULL;
    return evbuffer_pullup(in, (ssize_t)pgw_header_total(h));
}

static void
backend_protocol_error(struct pg_session *s, const char *what)
{
    char msg[256];
    snprintf(msg, sizeof(msg), "backend \"%s\" at %s sent %s", s->base.be->conf->name, s->base.be->addr_text,
             what);
    fail(s, METRIC_ERR_BACKEND_LOST, PGW_SQLSTATE_PROTOCOL_VIOLATION, msg);
}

/* What server_auth does with a message after a step: */
enum auth_next {
    AUTH_RELAY,   /* relay it to the client as it is */
    AUTH_TAKEN,   /* it was consumed (answered, replaced or kept from the client) */
    AUTH_STOP,    /* the phase is over, or the session failed */
};

/*
 * An authentication request: answered by tandem when it authenticated the
 * client itself (it logs in as that client), else relayed, a SASL offer
 * without the -PLUS mechanisms a relay cannot carry.
 */
static enum auth_next
auth_request(struct pg_session *s, const uint8_t *body, size_t blen, size_t total)
{
    uint32_t code;

    if (pgw_auth_parse(body, blen, &code) != PGW_OK) {
        backend_protocol_error(s, "an invalid authentication request");
        return AUTH_STOP;
    }
    if (s->auth != NULL && code != PGW_AUTH_OK) {
        struct pg_auth_err e;
        if (blen < 4 || pg_auth_server(s, code, body + 4, blen - 4, &e) != 0) {
            count_backend(s, METRIC_B_CONNECT_FAILURES, 1);
            fail(s, e.reason, e.sqlstate, e.msg);
            return AUTH_STOP;
        }
        evbuffer_drain(s->base.server.in, total);
        return AUTH_TAKEN;
    }
    if (code == PGW_AUTH_SASL) {
        uint8_t out[INSPECT_MAX_MESSAGE];
        size_t n = pgw_sasl_strip_plus(body, blen, out, sizeof(out));
        if (n == 0) {
            backend_protocol_error(s, "no SASL mechanism tandem can relay");
            return AUTH_STOP;
        }
        evbuffer_add(s->base.client.out, out, n);
        evbuffer_drain(s->base.server.in, total);
        return AUTH_TAKEN;
    }
    if (code == PGW_AUTH_OK)
        s->logged_in = 1;
    return AUTH_RELAY;
}

/* BackendKeyData: kept in the cancel table; the client gets tandem's own key instead. */
static enum auth_next
backend_key(struct pg_session *s, const uint8_t *body, size_t blen, size_t total)
{
    uint32_t be_pid, be_key;
    uint8_t out[32];

    if (pgw_backend_key_parse(body, blen, &be_pid, &be_key) != PGW_OK) {
        backend_protocol_error(s, "invalid BackendKeyData");
        return AUTH_STOP;
    }
    /* a second BackendKeyData replaces the first: the table holds one entry per session */
    cancel_register(&s->cancel, be_pid, be_key, (const struct sockaddr *)&s->base.be->addr,
                    s->base.be->addrlen);
    s->login.be_pid = be_pid;
    s->login.be_key = be_key;
    evbuffer_add(s->base.client.out, out,
                 pgw_build_backend_key(out, sizeof(out), s->cancel.pid, s->cancel.key));
    evbuffer_drain(s->base.server.in, total);
    return AUTH_TAKEN;
}

/* The first ReadyForQuery: logged in; the session is active and its shadow starts. */
static enum auth_next
auth_ready(struct pg_session *s, const uint8_t *body, size_t blen, size_t total)
{
    if (pgw_ready_parse(body, blen, &s->tx_status) != PGW_OK) {
        backend_protocol_error(s, "an invalid ReadyForQuery");
        return AUTH_STOP;
    }
    evbuffer_remove_buffer(s->base.server.in, s->base.client.out, total);
    if (s->keep_server) {
        s->login.epoch = control_epoch(s->base.lis->metric_slot);
        s->login.born_ns = session_now_ns();
    }
    logged_in(s);
    return AUTH_STOP;
}

/*
 * Logged in, on a connection of the session's own or a kept one: the
 * session is active and its shadow starts.
 */
static void
logged_in(struct pg_session *s)
{
    session_set_state(&s->base, SESSION_ACTIVE);
    pg_auth_logged_in(s); /* the ClientKey stays only for the shadow's logins */
    slog(s, CONF_LOG_DEBUG, "logged in to \"%s\"", s->base.be->conf->name);
    /* a canary no_mirror rule keeps the session off the shadow altogether */
    if (s->base.shadow_be != NULL && !s->route.no_mirror &&
        control_mode(s->base.lis->metric_slot, (int)s->base.lis->conf->mode) != CONF_MODE_PASSTHROUGH)
        pg_shadow_start(s);
    if (s->base.mirror.state == MIRROR_OFF &&
        s->base.lis->conf->server_conns != CONF_SERVER_CONNS_REUSE) {
        /*
         * kept for the shadow's logins, and a session without a shadow now
         * never gets one; and as the key of its server connection, kept
         * for the next client (pg_park.c)
         */
        free(s->startup);
        s->startup = NULL;
        s->startup_len = 0;
    }
    if (s->base.draining)
        fail(s, METRIC_ERR_SHUTDOWN, PGW_SQLSTATE_ADMIN_SHUTDOWN,
             "terminating connection because tandem is shutting down");
}

/*
 * The client was authenticated by tandem and got a kept server connection
 * (pg_park_take): tandem answers the rest of the login as that connection's
 * server did at its own (AuthenticationOk, its ParameterStatus set), with
 * tandem's own cancel key, which now cancels on that connection's backend.
 */
static void
login_on_kept(struct pg_session *s)
{
    static const uint8_t auth_ok[] = {'R', 0, 0, 0, 8, 0, 0, 0, PGW_AUTH_OK};
    uint8_t out[32];

    evbuffer_add(s->base.client.out, auth_ok, sizeof(auth_ok));
    evbuffer_add(s->base.client.out, s->login.status, s->login.status_len);
    cancel_register(&s->cancel, s->login.be_pid, s->login.be_key,
                    (const struct sockaddr *)&s->base.be->addr, s->base.be->addrlen);
    evbuffer_add(s->base.client.out, out,
                 pgw_build_backend_key(out, sizeof(out), s->cancel.pid, s->cancel.key));
    evbuffer_add(s->base.client.out, out, pgw_build_ready(out, sizeof(out), 'I'));
    s->logged_in = 1;
    s->tx_status = 'I';
    logged_in(s);
}

/*
 * During authentication every server message is looked at whole: the SASL
 * offer loses its -PLUS mechanisms, BackendKeyData is replaced by tandem's
 * own key, ReadyForQuery ends the phase.
 */
static void
server_auth(struct pg_session *s)
{
    struct evbuffer *in = s->base.server.in;
    struct pgw_header h;
    const uint8_t *msg;
    int bad;

    while (s->base.state == PGS_AUTH && (msg = whole_message(in, &h, &bad)) != NULL) {
        const uint8_t *body = msg + PGW_HEADER_LEN;
        size_t blen = h.len - 4, total = pgw_header_total(&h);
        enum auth_next next = AUTH_RELAY;

        switch (h.type) {
        case 'R':
            next = auth_request(s, body, blen, total);
            break;
        case 'K':
            next = backend_key(s, body, blen, total);
            break;
        case 'Z':
            next = auth_ready(s, body, blen, total);
            break;
        case 'S':
            pg_park_note_status(s, msg, total); /* relayed, and told the next client */
            break;
        case 'E':
            /* the server refused the login: its own error reaches the client */
            if (s->auth != NULL && !s->logged_in) /* refused tandem's login as the client */
                session_count_client_error(&s->base, METRIC_ERR_BACKEND_AUTH);
            evbuffer_remove_buffer(in, s->base.client.out, total);
            session_close(&s->base);
            return;
        default:
            break;
        }
        if (next == AUTH_STOP)
            return;
        if (next == AUTH_TAKEN)
            continue;
        evbuffer_remove_buffer(in, s->base.client.out, total);
    }
    if (s->base.state == PGS_AUTH && bad)
        backend_protocol_error(s, "an oversized message during authentication");
}

/*
 * Frame the server's messages and move them to the client, looking inside
 * ReadyForQuery only.  Data rows stream through in runs; in shadow mode the
 * messages of a unit being compared are digested on their way (whole, up
 * to DIGEST_MAX_MESSAGE) before they move.
 */
/*
 * A run of the primary's messages goes to the client, or, when it answers a
 * unit the shadow answered (the comparison mirror of a routed read), nowhere.
 */
static void
server_run_done(struct pg_session *s, size_t *avail, size_t *run)
{
    if (*run == 0)
        return;
    if (s->server_discard) {
        evbuffer_drain(s->base.server.in, *run);
    } else {
        evbuffer_remove_buffer(s->base.server.in, s->base.client.out, *run);
        session_count_listener(&s->base, METRIC_L_BYTES_SENT, *run);
    }
    *avail -= *run;
    *run = 0;
}

static void
server_active(struct pg_session *s)
{
    struct evbuffer *in = s->base.server.in;
    size_t avail = evbuffer_get_length(in), run = 0;
    struct evbuffer_ptr pos;
    uint8_t hdr[PGW_HEADER_LEN + 1];
    struct pgw_header h;
    const char *err;
    int idle_now = 0;
    /*
     * Passthrough moves nothing out of `in` before the loop ends: its first
     * chain stays where it is.  (Shadowing may drain it midway, and
     * digesting a message may pull its body up.)
     */
    struct pg_frame_view view, *v = NULL;
    if (!shadowing(s)) {
        pg_frame_view_of(&view, in);
        v = &view;
    }

    while (run < avail) {
        if (s->server_frame.skip == 0 && shadowing(s)) {
            int discard = s->base.mirror.pcur != NULL && s->base.mirror.pcur->routed;
            if (discard != s->server_discard) {
                server_run_done(s, &avail, &run);
                s->server_discard = discard;
                continue;
            }
        }
        size_t n;
        enum pg_frame_result fr = pg_frame_step(&s->server_frame, in, v, run, avail - run,
                                                PG_FRAME_BACKEND, BACKEND_MAX_MESSAGE, &h, &n,
                                                &err);
        if (fr == PG_FRAME_PASS) {
            run += n;
            continue;
        }
        if (fr == PG_FRAME_MORE)
            break;
        if (fr == PG_FRAME_BAD) {
            char what[96];
            snprintf(what, sizeof(what), "an invalid message (%s)", err);
            backend_protocol_error(s, what);
            return;
        }
        size_t total = pgw_header_total(&h);
        if (h.type == 'Z' && s->server_discard) {
            if (avail - run < total)
                break;
            pg_shadow_primary_ready(s); /* the comparison is done; the client saw the shadow's */
        } else if (h.type == 'Z') {
            if (avail - run < total)
                break; /* 6 bytes; wait for all of it */
            if (v != NULL && v->len >= run + sizeof(hdr)) {
                s->tx_status = v->p[run + PGW_HEADER_LEN];
            } else {
                evbuffer_ptr_set(in, &pos, run, EVBUFFER_PTR_SET);
                evbuffer_copyout_from(in, &pos, hdr, sizeof(hdr));
                s->tx_status = hdr[PGW_HEADER_LEN];
            }
            if (s->base.outstanding > 0)
                s->base.outstanding--;
            idle_now = s->base.outstanding == 0 && s->tx_status == 'I';
            if (shadowing(s))
                pg_shadow_primary_ready(s);
        } else if (h.type == 'G' && shadowing(s)) {
            pg_shadow_primary_copy_in(s); /* the COPY's data may follow it to the shadow */
            if (pg_shadow_wants_whole(s)) {
                if (avail - run < total)
                    break;
                pg_shadow_primary_message(s, h.type, in, run, h.len - 4);
            }
        } else if (shadowing(s) && pg_shadow_wants_whole(s)) {
            if (total <= DIGEST_MAX_MESSAGE && avail - run < total)
                break; /* digested whole */
            pg_shadow_primary_message(s, h.type, in, run, h.len - 4);
        }
        s->server_frame.skip = total; /* passed by the next steps */
    }
    server_run_done(s, &avail, &run);
    if (idle_now && s->base.draining && s->server_frame.skip == 0) {
        fail(s, METRIC_ERR_SHUTDOWN, PGW_SQLSTATE_ADMIN_SHUTDOWN,
             "terminating connection because tandem is shutting down");
    } else if (idle_now && s->base.shadow_be != NULL &&
               (s->base.writes_waiting || s->base.swapped != control_roles_swapped(s->base.lis->metric_slot))) {
        /* an idle point a cutover waits for: swap now, not at the next tick */
        session_wake(&s->base);
    }
}

/* Advance the TLS handshake with the primary; 1 once done and the startup is queued. */
static int
server_handshake(struct pg_session *s)
{
    enum conn_io io = conn_handshake(&s->base.server);
    if (io == CONN_AGAIN)
        return 0;
    if (io != CONN_OK) {
        backend_failed(&s->base, conn_tls_error(&s->base.server, "TLS handshake failed"));
        return 0;
    }
    send_startup(s);
    return 1;
}

/* The primary's bytes (the engine read them): the TLS answer, authentication, or answers. */
static void
server_input(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    struct evbuffer *in = s->base.server.in;

    if (s->base.state == PGS_SERVER_TLS_ASK) {
        uint8_t answer;
        if (evbuffer_remove(in, &answer, 1) != 1)
            return;
        if (answer != 'S') {
            backend_failed(&s->base, "the server does not accept TLS");
            return;
        }
        if (evbuffer_get_length(in) > 0) {
            backend_failed(&s->base, "unencrypted data after the TLS answer");
            return;
        }
        const struct conf_backend *cb = s->base.be->conf;
        const char *name = cb->tls_server_name[0] ? cb->tls_server_name : cb->addr.host;
        if (conn_start_tls(&s->base.server, s->base.be->tls, 0, name,
                           cb->tls == CONF_TLS_VERIFY_FULL ? name : NULL) != 0) {
            backend_failed(&s->base, conn_tls_error(&s->base.server, "TLS failed"));
            return;
        }
        session_set_state(&s->base, PGS_SERVER_TLS);
        server_handshake(s); /* the server may have answered already */
        return;
    }
    if (s->base.state == PGS_AUTH)
        server_auth(s);
    if (s->base.state == SESSION_ACTIVE)
        server_active(s);
}

/* ------------------------------------------------------------------ */
/* The connections' events (the engine reads and writes the sockets).  */

/* The client's TLS handshake, in phase PGS_CLIENT_TLS. */
static int
op_client_handshake(struct session *base, short *what)
{
    struct pg_session *s = (struct pg_session *)base;
    if (s->base.state != PGS_CLIENT_TLS)
        return 1;
    enum conn_io io = conn_handshake(&s->base.client);
    if (io == CONN_AGAIN)
        return 0;
    if (io != CONN_OK) {
        slog(s, CONF_LOG_INFO, "client TLS handshake failed: %s", conn_tls_error(&s->base.client, "unknown"));
        session_count_client_error(&s->base, METRIC_ERR_TLS);
        s->base.state = SESSION_DEAD; /* no protocol left to speak in */
        return 0;
    }
    session_set_state(&s->base, PGS_STARTUP);
    *what |= EV_READ; /* the startup packet may already sit inside OpenSSL */
    return 1;
}

static void
op_server_lost(struct session *base, enum conn_io io)
{
    struct pg_session *s = (struct pg_session *)base;
    s->no_keep = 1;
    if (s->base.state == SESSION_ACTIVE && s->server_frame.skip == 0 && io == CONN_EOF) {
        /* the server said goodbye (its FATAL, if any, is already forwarded) */
        slog(s, CONF_LOG_INFO, "backend \"%s\" closed the connection", s->base.be->conf->name);
        session_count_client_error(&s->base, METRIC_ERR_BACKEND_LOST);
        session_close(&s->base);
        return;
    }
    if (s->base.state < PGS_AUTH || (s->base.state == PGS_AUTH && !s->logged_in)) {
        backend_failed(&s->base, io == CONN_EOF ? "the server closed the connection"
                                         : conn_tls_error(&s->base.server, strerror(errno)));
        return;
    }
    fail(s, METRIC_ERR_BACKEND_LOST, PGW_SQLSTATE_CONNECTION_FAILURE,
         "lost the connection to the backend");
}

/* The primary's TLS handshake, in phase PGS_SERVER_TLS. */
static int
op_server_handshake(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    if (s->base.state != PGS_SERVER_TLS)
        return 1;
    return server_handshake(s) ? 0 : -1;
}

/* The session's timer, in an opening phase: its deadline. */
static void
op_timer(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;

    switch (s->base.state) {
    case PGS_CONNECTING:
    case PGS_SERVER_TLS_ASK:
    case PGS_SERVER_TLS:
        backend_failed(&s->base, "timeout");
        break;
    case PGS_STARTUP:
    case PGS_CLIENT_TLS:
    case PGS_AUTH_LOOKUP:
    case PGS_CLIENT_AUTH:
    case PGS_AUTH:
        fail(s, METRIC_ERR_STARTUP_TIMEOUT, PGW_SQLSTATE_PROTOCOL_VIOLATION,
             "startup timeout: the connection did not complete its login in time");
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Life cycle.                                                         */

static void
pg_session_accept(struct worker *w, const struct rt_listener *l, int fd,
                  const struct sockaddr *peer, int over_limit)
{
    struct pg_session *s =
        (struct pg_session *)session_new(sizeof(*s), &pg_session_ops, &pg_mirror_ops, w, l, fd, peer);
    if (s == NULL)
        return;
    s->over_limit = over_limit != 0;
    pg_route_accept(s, peer);
    /* a random key per session: cancel requests carry no other proof */
    if (worker_random(w, &s->cancel.pid, sizeof(s->cancel.pid)) != 0 ||
        worker_random(w, &s->cancel.key, sizeof(s->cancel.key)) != 0) {
        s->cancel.pid = (uint32_t)random();
        s->cancel.key = (uint32_t)random();
    }
    s->cancel.pid &= 0x7fffffff; /* clients print it as a positive pid */
    worker_session_added(w, &s->base);
    session_set_state(&s->base, PGS_STARTUP);
    session_arm_timer(&s->base, s->base.rt->conf->limits.startup_timeout_ms);
    session_settle(&s->base);
}

/* ------------------------------------------------------------------ */
/* The engine's hooks (engine/session.h).                              */

static const char *
op_phase_name(int phase)
{
    return phase >= 0 && phase < (int)(sizeof(phase_names) / sizeof(phase_names[0]))
               ? phase_names[phase]
               : "opening";
}

/*
 * Nothing owed to the client, no transaction open: it may close (drain)
 * or swap its roles (cutover).  Still logging in: it may close unless the
 * server is authenticating it (then at its first ReadyForQuery).
 */
static int
op_idle(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    if (s->base.state < SESSION_ACTIVE)
        return s->base.state < PGS_AUTH;
    return s->base.outstanding == 0 && s->tx_status == 'I' && s->base.routed == NULL &&
           s->server_frame.skip == 0;
}

static void
op_close_with(struct session *base, enum session_close why, const char *msg)
{
    (void)why; /* both are an administrator's doing: 57P01 */
    fail((struct pg_session *)base, METRIC_ERR_SHUTDOWN, PGW_SQLSTATE_ADMIN_SHUTDOWN, msg);
}

/* Cutover: a unit that is no read, unanswered by either side, or an open transaction. */
static int
op_writes_owed(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    return s->tx_open || s->tx_status != 'I' || pg_shadow_writes_owed(s);
}

/* The engine found both sides idle: 1 when no transaction or unit is open either. */
static int
op_swap_ready(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    if (s->unit_open || s->tx_open || s->tx_status != 'I' || s->server_frame.skip > 0)
        return 0;
    return pg_shadow_swap_ready(s);
}

/* The cutover's swap (engine/session.h): the client's cancel key follows the connection
 * that answers now (pg_shadow_swap). */
static void
op_swap(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    pg_shadow_swap(s);
    s->route.last_write_ns = 0;
}

static const struct session_ops pg_session_ops = {
    .protocol = "postgres",
    .phase_name = op_phase_name,
    .client_handshake = op_client_handshake,
    .client_input = client_input,
    .connect_failed = backend_failed,
    .server_connected = op_server_connected,
    .server_handshake = op_server_handshake,
    .server_input = server_input,
    .server_lost = op_server_lost,
    .shadow_input = pg_shadow_input,
    .shadow_release = pg_shadow_release_gated,
    .timer = op_timer,
    .client_wanted = op_client_wanted,
    .server_keep = op_server_keep,
    .server_closed = op_server_closed,
    .leaving = op_leaving,
    .orphan = pg_shadow_orphan,
    .destroy = op_destroy,
    .idle = op_idle,
    .close_with = op_close_with,
    .writes_owed = op_writes_owed,
    .swap_ready = op_swap_ready,
    .swap = op_swap,
};

const struct session_protocol pg_protocol = {
    .name = "postgres",
    .conf_proto = CONF_PROTO_POSTGRES,
    .accept = pg_session_accept,
};
