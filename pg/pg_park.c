/*
 * pg_park.c - server connections kept for the next client (pg_park.h).
 *
 * One pool per worker (protocol_state[WORKER_STATE_PG_PARK]): a list of
 * kept connections, most recently kept first, each on the worker's event
 * base with its read watched.  A kept connection is the worker's, not a
 * session's: its own handler reads the reset's answer, and closes it at
 * EOF, on any other byte, or at the tick (reload, cutover, idle timeout).
 * Taking one moves the struct conn back into a session, as a cutover's
 * swap moves connections (conn_unbind, copy, conn_rebind).
 */
#include "pg/pg_park.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "control/control.h"
#include "control/runtime.h"
#include "engine/worker.h"
#include "metrics/log.h"
#include "metrics/metric.h"
#include "pg/pg_session_int.h"
#include "protocol/pgw.h"

/* How often the kept connections are looked at: idle timeout, reload, cutover. */
#define PARK_TICK_MS 1000
/* Largest message of the reset's answer read whole (a notice, a parameter). */
#define RESET_MAX_MESSAGE 65536

enum parked_state {
    PARKED_RESETTING, /* server_reset_query sent: waiting for its ReadyForQuery */
    PARKED_IDLE,      /* reset: may be taken */
};

struct pg_parked {
    struct pg_parked *prev, *next;
    struct park_pool *pool;
    struct runtime *rt;            /* one reference: lis and be point into it */
    const struct rt_listener *lis;
    const struct rt_backend *be;
    uint8_t *startup;              /* the key: the client's startup packet, byte for byte */
    size_t startup_len;
    struct pg_server_login login;
    struct conn conn;
    enum parked_state state;
    uint64_t parked_ns;
};

struct park_pool {
    struct worker_job job;         /* first: the worker frees the pool with it */
    struct worker *w;
    struct pg_parked *head;
    struct event *tick;
};

static void
count(struct worker *w, const struct rt_backend *be, enum metric_backend_counter c)
{
    if (be->metric_slot >= 0 && be->metric_slot < METRIC_MAX_BACKENDS)
        metric_add(&w->metrics->backend[be->metric_slot][c], 1);
}

void
pg_park_login_free(struct pg_server_login *login)
{
    free(login->status);
    memset(login, 0, sizeof(*login));
}

/* The backend answering the listener's clients now (its roles may have flipped). */
static const struct rt_backend *
answering(const struct rt_listener *l)
{
    return l->shadow != NULL && control_roles_swapped(l->metric_slot) ? l->shadow : l->primary;
}

/* Still the listener's answering connection, from the listener's current roles? */
static int
current(const struct pg_parked *p, const struct worker *w)
{
    return p->rt == w->rt && p->login.epoch == control_epoch(p->lis->metric_slot) &&
           p->be == answering(p->lis);
}

static void
unlink_parked(struct pg_parked *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        p->pool->head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    p->prev = p->next = NULL;
}

/* Free what p holds but its connection (released, or moved to a session, by the caller). */
static void
parked_free(struct pg_parked *p)
{
    runtime_unref(p->rt);
    pg_park_login_free(&p->login);
    free(p->startup);
    free(p);
}

/* Close a kept connection: a Terminate first when it is healthy (polite), counted closed. */
static void
parked_close(struct pg_parked *p, int polite, const char *why)
{
    struct worker *w = p->pool->w;
    unlink_parked(p);
    if (polite) {
        uint8_t x[8];
        evbuffer_add(p->conn.out, x, pgw_build_terminate(x, sizeof(x)));
        conn_flush(&p->conn); /* once: a server that does not take it is closed anyway */
    }
    log_at(CONF_LOG_DEBUG, 0, p->be->addr_text, "kept server connection (backend pid %u) closed: %s",
           p->login.be_pid, why);
    conn_release(&p->conn);
    count(w, p->be, METRIC_B_SERVER_CLOSED);
    parked_free(p);
}

/*
 * The reset's answer: CommandComplete, ParameterStatus (the values it put
 * back: the login's, which the next client is told), notices and
 * notifications still owed to the client that left, then ReadyForQuery
 * 'I'.  0 while it is incomplete or done, -1 when it failed (an error,
 * anything else, a transaction left).
 */
static int
reset_input(struct pg_parked *p)
{
    struct evbuffer *in = p->conn.in;
    uint8_t hdr[PGW_HEADER_LEN + 1];
    struct pgw_header h;
    const char *err;

    while (p->state == PARKED_RESETTING && evbuffer_get_length(in) >= PGW_HEADER_LEN) {
        evbuffer_copyout(in, hdr, PGW_HEADER_LEN);
        if (pgw_header_parse(hdr, PGW_HEADER_LEN, RESET_MAX_MESSAGE, &h, &err) != PGW_OK)
            return -1;
        size_t total = pgw_header_total(&h);
        if (evbuffer_get_length(in) < total)
            return 0;
        switch (h.type) {
        case 'C':
        case 'S':
        case 'N':
        case 'A':
            break;
        case 'Z':
            if (h.len != 5 || evbuffer_copyout(in, hdr, sizeof(hdr)) != (ssize_t)sizeof(hdr) ||
                hdr[PGW_HEADER_LEN] != 'I' || evbuffer_get_length(in) != total)
                return -1;
            p->state = PARKED_IDLE;
            break;
        default:
            return -1; /* an ErrorResponse: the reset failed */
        }
        evbuffer_drain(in, total);
    }
    return 0;
}

/* A kept connection's events: the reset's answer, or its end. */
static void
on_parked(evutil_socket_t fd, short what, void *arg)
{
    struct pg_parked *p = arg;
    struct worker *w = p->pool->w;
    size_t n;
    (void)fd;

    if ((what & EV_WRITE) && conn_flush(&p->conn) == CONN_ERROR) {
        parked_close(p, 0, "write failed");
        return;
    }
    if (!(what & EV_READ))
        return;
    enum conn_io io = conn_read(&p->conn, w->scratch, sizeof(w->scratch), &n);
    if (io == CONN_EOF || io == CONN_ERROR) {
        parked_close(p, 0, "the server closed it");
        return;
    }
    if (io == CONN_OK && p->state == PARKED_IDLE) {
        /* an idle server says something only as it goes (FATAL) */
        parked_close(p, 0, "the server sent a message while it was idle");
        return;
    }
    if (reset_input(p) != 0)
        parked_close(p, 0, "server_reset_query failed");
}

/* The worker's look: reload, cutover or rollback, server_idle_timeout, server_lifetime. */
static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct park_pool *pool = arg;
    uint64_t now = session_now_ns();
    (void)fd;
    (void)what;

    for (struct pg_parked *p = pool->head, *next; p != NULL; p = next) {
        next = p->next;
        const struct conf_listener *lc = p->lis->conf;
        if (!current(p, pool->w))
            parked_close(p, 1, "the configuration or the roles changed");
        else if (now - p->parked_ns >= (uint64_t)lc->server_idle_timeout_ms * 1000000ull)
            parked_close(p, 1, "server_idle_timeout");
        else if (now - p->login.born_ns >= (uint64_t)lc->server_lifetime_ms * 1000000ull)
            parked_close(p, 1, "server_lifetime");
    }
}

static void
pool_cancel(struct worker_job *job)
{
    struct park_pool *pool = (struct park_pool *)job;
    worker_job_remove(pool->w, job);
    while (pool->head)
        parked_close(pool->head, 1, "tandem is stopping");
    if (pool->tick)
        event_free(pool->tick);
    pool->w->protocol_state[WORKER_STATE_PG_PARK] = NULL;
    free(pool);
}

static struct park_pool *
pool_of(struct worker *w)
{
    struct park_pool *pool = w->protocol_state[WORKER_STATE_PG_PARK];
    if (pool != NULL)
        return pool;
    if ((pool = calloc(1, sizeof(*pool))) == NULL)
        return NULL;
    pool->w = w;
    pool->tick = event_new(w->base, -1, EV_PERSIST, on_tick, pool);
    struct timeval tv = {.tv_sec = PARK_TICK_MS / 1000, .tv_usec = (PARK_TICK_MS % 1000) * 1000};
    if (pool->tick == NULL || event_add(pool->tick, &tv) != 0) {
        if (pool->tick)
            event_free(pool->tick);
        free(pool);
        return NULL;
    }
    pool->job.cancel = pool_cancel;
    worker_job_add(w, &pool->job);
    w->protocol_state[WORKER_STATE_PG_PARK] = pool;
    return pool;
}

/* ------------------------------------------------------------------ */
/* The session's side.                                                 */

void
pg_park_note_status(struct pg_session *s, const uint8_t *msg, size_t len)
{
    struct pg_server_login *lg = &s->login;
    if (!s->keep_server)
        return;
    if (lg->status_len + len > PG_PARK_STATUS_MAX) {
        s->keep_server = 0; /* more than a login says: not worth keeping */
        return;
    }
    uint8_t *grown = realloc(lg->status, lg->status_len + len);
    if (grown == NULL) {
        s->keep_server = 0;
        return;
    }
    memcpy(grown + lg->status_len, msg, len);
    lg->status = grown;
    lg->status_len += len;
}

int
pg_park_may_keep(struct pg_session *s)
{
    const struct session *b = &s->base;
    const struct conf_listener *lc = b->lis->conf;

    if (!s->keep_server || s->no_keep || lc->server_conns != CONF_SERVER_CONNS_REUSE ||
        b->lis->metric_slot < 0 || s->login.born_ns == 0)
        return 0;
    if (!b->server_open || !b->server_ready || b->server_connecting || s->server_pq != NULL ||
        b->draining || b->w->draining)
        return 0;
    /* an idle point: nothing owed, nothing half sent or half read, no transaction */
    if (s->tx_status != 'I' || s->tx_open || s->unit_open || s->close_pending ||
        s->server_discard || b->outstanding != 0 || b->routed != NULL ||
        s->server_frame.skip != 0 || s->client_frame.skip != 0 ||
        evbuffer_get_length(b->server.in) != 0 || evbuffer_get_length(b->server.out) != 0 ||
        (b->server.ssl != NULL && SSL_pending(b->server.ssl) > 0))
        return 0;
    /* to the listener's answering backend, since its login: no cutover or rollback since */
    if (s->login.epoch != control_epoch(b->lis->metric_slot) || b->be != answering(b->lis))
        return 0;
    if (session_now_ns() - s->login.born_ns >= (uint64_t)lc->server_lifetime_ms * 1000000ull)
        return 0;
    const struct park_pool *pool = b->w->protocol_state[WORKER_STATE_PG_PARK];
    unsigned kept = 0;
    for (const struct pg_parked *p = pool ? pool->head : NULL; p; p = p->next)
        kept += p->lis == b->lis;
    return kept < lc->server_pool;
}

int
pg_park_put(struct pg_session *s)
{
    struct worker *w = s->base.w;
    const struct conf_listener *lc = s->base.lis->conf;
    struct park_pool *pool;
    struct pg_parked *p;

    if (!pg_park_may_keep(s) || (pool = pool_of(w)) == NULL || (p = calloc(1, sizeof(*p))) == NULL)
        return 0;
    if ((p->startup = malloc(s->startup_len)) == NULL) {
        free(p);
        return 0;
    }
    memcpy(p->startup, s->startup, s->startup_len);
    p->startup_len = s->startup_len;
    p->pool = pool;
    p->rt = s->base.rt;
    runtime_ref(p->rt);
    p->lis = s->base.lis;
    p->be = s->base.be;
    p->login = s->login;
    memset(&s->login, 0, sizeof(s->login));
    p->parked_ns = session_now_ns();

    conn_unbind(&s->base.server);
    p->conn = s->base.server;
    memset(&s->base.server, 0, sizeof(s->base.server));
    s->base.server.fd = -1;
    conn_rebind(&p->conn, w->base, on_parked, p);

    p->next = pool->head;
    if (pool->head)
        pool->head->prev = p;
    pool->head = p;
    count(w, p->be, METRIC_B_SERVER_PARKED);
    log_at(CONF_LOG_DEBUG, s->base.id, s->base.peer,
           "server connection (backend pid %u) kept for the next client", p->login.be_pid);

    p->state = PARKED_IDLE;
    if (lc->server_reset_query[0] != '\0') {
        uint8_t q[sizeof(lc->server_reset_query) + 8];
        evbuffer_add(p->conn.out, q, pgw_build_query(q, sizeof(q), lc->server_reset_query));
        p->state = PARKED_RESETTING;
        if (conn_flush(&p->conn) == CONN_ERROR)
            parked_close(p, 0, "write failed");
    }
    return 1;
}

/* Nothing waits on p's socket: no EOF, no FATAL of a backend terminated a moment ago. */
static int
parked_quiet(const struct pg_parked *p)
{
    char c;
    if (evbuffer_get_length(p->conn.in) > 0 || (p->conn.ssl && SSL_pending(p->conn.ssl) > 0))
        return 0;
    ssize_t n = recv(p->conn.fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

int
pg_park_take(struct pg_session *s)
{
    struct worker *w = s->base.w;
    struct park_pool *pool = w->protocol_state[WORKER_STATE_PG_PARK];

    if (pool == NULL || s->base.lis->conf->server_conns != CONF_SERVER_CONNS_REUSE)
        return 0;
    for (struct pg_parked *p = pool->head, *next; p != NULL; p = next) {
        next = p->next;
        if (p->state != PARKED_IDLE || p->lis != s->base.lis || p->be != s->base.be ||
            p->startup_len != s->startup_len || memcmp(p->startup, s->startup, s->startup_len) != 0)
            continue;
        if (!current(p, w)) {
            parked_close(p, 1, "the configuration or the roles changed");
            continue;
        }
        if (!parked_quiet(p)) {
            parked_close(p, 0, "the server closed it");
            continue;
        }
        unlink_parked(p);
        conn_unbind(&p->conn);
        s->base.server = p->conn;
        conn_rebind(&s->base.server, w->base, session_on_server, &s->base);
        s->base.server_open = 1;
        s->base.server_ready = 1;
        s->base.server_connecting = 0;
        pg_park_login_free(&s->login);
        s->login = p->login;
        memset(&p->login, 0, sizeof(p->login));
        count(w, p->be, METRIC_B_SERVER_REUSED);
        log_at(CONF_LOG_DEBUG, s->base.id, s->base.peer,
               "logged in on a kept server connection (backend pid %u)", s->login.be_pid);
        parked_free(p);
        return 1;
    }
    return 0;
}
