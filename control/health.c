/*
 * health.c - backend reachability checks (see health.h).
 */
#include "control/health.h"

#include <errno.h>
#include <arpa/inet.h>
#include <libpq-fe.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics/metric.h"
#include "control/control.h"
#include "metrics/log.h"
#include "protocol/tls_peer.h"

#define HEALTH_INTERVAL_MS 2000
#define HEALTH_TIMEOUT_MS 1500
#define HEALTH_MAX 32
/* HAProxy's defaults: down after 3 failed checks in a row, up after 2 good ones */
#define HEALTH_FALL 3
#define HEALTH_RISE 2

struct probe {
    struct health *h;
    int slot;            /* metric slot of the backend: stable across reloads */
    int fd;              /* TCP probe socket, -1 when none */
    SSL *ssl;            /* the TCP probe's TLS handshake (a Redis TLS backend), NULL none */
    int connected;       /* the TCP probe's connect is done (its handshake may run) */
    int tls_phase;       /* 0 handshake, 1 PING to send, 2 its answer awaited */
    PGconn *pq;          /* login probe in flight, NULL when none */
    int sent;            /* the login probe's SELECT 1 is sent */
    uint64_t deadline_ms;
    struct event ev;
    int ev_added;
    int up;
    int known;
    int streak;          /* results in a row contradicting `up` */
    char name[CONF_NAME_MAX];
    char addr[CONF_HOST_MAX + 16];
};

struct health {
    struct event_base *base;
    struct runtime *rt;
    struct event *tick;
    struct probe probes[HEALTH_MAX];
    int nprobes;
};

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
probe_stop(struct probe *p)
{
    if (p->ev_added) {
        event_del(&p->ev);
        p->ev_added = 0;
    }
    if (p->ssl) {
        SSL_free(p->ssl);
        p->ssl = NULL;
    }
    if (p->fd >= 0) {
        close(p->fd);
        p->fd = -1;
    }
    if (p->pq) {
        PQfinish(p->pq);
        p->pq = NULL;
    }
}

/* One check's result; the state flips after FALL failures or RISE successes in a row. */
static void
probe_done(struct probe *p, int ok, const char *why)
{
    probe_stop(p);
    if (!p->known) {
        p->known = 1;
        p->up = !ok; /* so that the first result is taken at once */
        p->streak = ok ? HEALTH_RISE : HEALTH_FALL;
    } else if (ok == p->up) {
        p->streak = 0;
        return;
    } else {
        p->streak++;
    }
    if (p->streak < (ok ? HEALTH_RISE : HEALTH_FALL))
        return;
    log_at(ok ? CONF_LOG_INFO : CONF_LOG_WARN, 0, NULL, "backend \"%s\" at %s is %s%s%s", p->name,
           p->addr, ok ? "up" : "down", why ? ": " : "", why ? why : "");
    p->up = ok;
    p->streak = 0;
    metric_set_backend_up(p->slot, ok);
    control_set_backend_up(p->slot, ok);
}

/* Wait for fd in direction `what` (then cb), until the check's deadline. */
static void
probe_wait(struct probe *p, evutil_socket_t fd, short what, event_callback_fn cb)
{
    uint64_t now = now_ms();
    uint64_t left = p->deadline_ms > now ? p->deadline_ms - now : 1;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000), .tv_usec = (suseconds_t)(left % 1000) * 1000};
    event_assign(&p->ev, p->h->base, fd, what, cb, p);
    event_add(&p->ev, &tv);
    p->ev_added = 1;
}

static void on_tcp_probe(evutil_socket_t fd, short what, void *arg);

/* Wait for the TCP probe's socket in direction `what`. */
static void
tcp_wait(struct probe *p, short what)
{
    probe_wait(p, p->fd, what, on_tcp_probe);
}

/*
 * tls_probe_start - a Redis backend with tls require or verify-full: the
 * probe's connection does the TLS handshake as the sessions' would
 * (verify-full: the CA and the name), so a server that cannot prove it is
 * the backend is down.  Then one PING, never a password.
 */
static int
tls_probe_start(struct probe *p, const struct rt_backend *b)
{
    const struct conf_backend *cb = b->conf;
    const char *name = cb->tls_server_name[0] ? cb->tls_server_name : cb->addr.host;

    p->ssl = SSL_new(b->tls);
    if (p->ssl == NULL || SSL_set_fd(p->ssl, p->fd) != 1)
        return -1;
    SSL_set_connect_state(p->ssl);
    if (tls_peer_expect(p->ssl, name, cb->tls == CONF_TLS_VERIFY_FULL) != 0)
        return -1;
    return 0;
}

static void tls_probe_step(struct probe *p);

/* The TCP connect is done: up, or on to the TLS handshake. */
static void
tcp_connected(struct probe *p)
{
    p->connected = 1;
    if (p->ssl == NULL)
        probe_done(p, 1, NULL);
    else
        tls_probe_step(p);
}

/*
 * An OpenSSL call of the probe returned rc: 1 when it waits for the socket
 * (armed), 0 when it failed (the probe is down, with the reason).
 */
static int
tls_probe_wait(struct probe *p, int rc, const char *what)
{
    int e = SSL_get_error(p->ssl, rc);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
        tcp_wait(p, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE);
        return 1;
    }
    char why[200], err[160];
    tls_peer_failure(p->ssl, "the server closed the connection", err, sizeof(err));
    snprintf(why, sizeof(why), "TLS: %s: %s", what, err);
    probe_done(p, 0, why);
    return 0;
}

/*
 * Advance the probe's TLS exchange: the handshake, then a PING and the
 * first byte of its answer (+PONG, or -NOAUTH: either way the server
 * serves).  The PING is what makes a server that refuses tandem's client
 * certificate say so: with TLS 1.3 it does that after the handshake.
 */
static void
tls_probe_step(struct probe *p)
{
    static const char ping[] = "*1\r\n$4\r\nPING\r\n";
    char answer[1];
    int rc;

    ERR_clear_error();
    if (p->tls_phase == 0) {
        if ((rc = SSL_do_handshake(p->ssl)) != 1) {
            tls_probe_wait(p, rc, "handshake");
            return;
        }
        p->tls_phase = 1;
    }
    if (p->tls_phase == 1) {
        if ((rc = SSL_write(p->ssl, ping, (int)sizeof(ping) - 1)) <= 0) {
            tls_probe_wait(p, rc, "PING");
            return;
        }
        p->tls_phase = 2;
    }
    if ((rc = SSL_read(p->ssl, answer, sizeof(answer))) <= 0) {
        tls_probe_wait(p, rc, "PING");
        return;
    }
    if (answer[0] == '+' || answer[0] == '-')
        probe_done(p, 1, NULL);
    else
        probe_done(p, 0, "TLS: PING: not a Redis answer");
}

static void
on_tcp_probe(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    int err = 0;
    socklen_t len = sizeof(err);
    p->ev_added = 0;
    if (what & EV_TIMEOUT) {
        probe_done(p, 0, p->ssl && p->connected ? "TLS: no answer in time" : "connect timeout");
        return;
    }
    if (p->ssl && p->connected) {
        tls_probe_step(p);
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        probe_done(p, 0, strerror(err));
        return;
    }
    tcp_connected(p);
}

/*
 * A TCP connect: for backends tandem has no login for, and for Redis (with
 * its TLS handshake when the backend has tls: tls_probe_start).
 */
static void
tcp_probe(struct probe *p, const struct rt_backend *b, int tls)
{
    p->connected = 0;
    p->tls_phase = 0;
    p->deadline_ms = now_ms() + HEALTH_TIMEOUT_MS;
    p->fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        probe_done(p, 0, strerror(errno));
        return;
    }
    if (tls && tls_probe_start(p, b) != 0) {
        probe_done(p, 0, "cannot create TLS state");
        return;
    }
    if (connect(p->fd, (const struct sockaddr *)&b->addr, b->addrlen) == 0) {
        tcp_connected(p);
        return;
    }
    if (errno != EINPROGRESS) {
        probe_done(p, 0, strerror(errno));
        return;
    }
    tcp_wait(p, EV_WRITE);
}

static void on_login_probe(evutil_socket_t fd, short what, void *arg);

/* Wait for the login probe's socket (libpq's) in direction `what`. */
static void
login_wait(struct probe *p, short what)
{
    probe_wait(p, PQsocket(p->pq), what, on_login_probe);
}

/* Advance the login probe: PQconnectPoll, then SELECT 1 and its result. */
static void
login_step(struct probe *p)
{
    if (!p->sent) {
        switch (PQconnectPoll(p->pq)) {
        case PGRES_POLLING_READING:
            login_wait(p, EV_READ);
            return;
        case PGRES_POLLING_WRITING:
            login_wait(p, EV_WRITE);
            return;
        case PGRES_POLLING_OK:
            if (PQsetnonblocking(p->pq, 1) != 0 || !PQsendQuery(p->pq, "SELECT 1")) {
                probe_done(p, 0, PQerrorMessage(p->pq));
                return;
            }
            p->sent = 1;
            PQflush(p->pq);
            login_wait(p, EV_READ);
            return;
        default: {
            char why[256];
            snprintf(why, sizeof(why), "%s", PQerrorMessage(p->pq));
            why[strcspn(why, "\n")] = '\0';
            probe_done(p, 0, why);
            return;
        }
        }
    }
    if (!PQconsumeInput(p->pq)) {
        probe_done(p, 0, "connection lost during SELECT 1");
        return;
    }
    if (PQisBusy(p->pq)) {
        login_wait(p, EV_READ);
        return;
    }
    PGresult *res = PQgetResult(p->pq);
    int ok = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK;
    PQclear(res);
    probe_done(p, ok, ok ? NULL : "SELECT 1 failed");
}

static void
on_login_probe(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    (void)fd;
    p->ev_added = 0;
    if (what & EV_TIMEOUT) {
        probe_done(p, 0, "no answer to the login and SELECT 1 in time");
        return;
    }
    login_step(p);
}

/*
 * A PostgreSQL login with tandem's own credentials for the backend, then
 * SELECT 1: a server that accepts TCP but cannot serve (starting up, out of
 * connections, recovering) is not healthy.  libpq's non-blocking API keeps
 * the main loop free.
 *
 * The probe sends tandem's password, so it connects exactly as the backend's
 * TLS settings say, like the shadow's logins (pg_shadow.c): verify-full
 * checks the certificate against tls_ca_file and the name against
 * tls_server_name (else the address's host), on the address tandem resolved.
 * A server that cannot prove it is the backend never sees the password.
 */
static void
login_probe(struct probe *p, const struct rt_backend *b)
{
    struct conf_login login;
    char timeout[8];
    const char *keys[CONF_LOGIN_PARAMS + 2], *vals[CONF_LOGIN_PARAMS + 2];

    runtime_login(b, &login);
    int k = conf_login_params(&login, "postgres", "tandem health check", keys, vals);
    snprintf(timeout, sizeof(timeout), "%d", (HEALTH_TIMEOUT_MS + 999) / 1000);
    keys[k] = "connect_timeout";
    vals[k++] = timeout;
    keys[k] = vals[k] = NULL;

    p->pq = PQconnectStartParams(keys, vals, 0); /* libpq copies what it needs */
    conf_login_wipe(&login);
    if (p->pq == NULL || PQstatus(p->pq) == CONNECTION_BAD) {
        probe_done(p, 0, p->pq ? PQerrorMessage(p->pq) : "out of memory");
        return;
    }
    p->sent = 0;
    p->deadline_ms = now_ms() + HEALTH_TIMEOUT_MS;
    login_step(p);
}

/* Is b the backend of a PostgreSQL listener?  (Redis backends get the TCP check.) */
static int
speaks_postgres(const struct runtime *rt, const struct rt_backend *b)
{
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        if ((l->primary == b || l->shadow == b) && l->conf->proto == CONF_PROTO_POSTGRES)
            return 1;
    }
    return 0;
}

static void
probe_start(struct probe *p, const struct runtime *rt, const struct rt_backend *b)
{
    if (p->fd >= 0 || p->pq != NULL)
        return; /* the previous check is still running */
    int postgres = speaks_postgres(rt, b);
    if (b->conf->user[0] && postgres)
        login_probe(p, b);
    else /* PostgreSQL asks for TLS in its protocol; Redis speaks it from the first byte */
        tcp_probe(p, b, b->tls != NULL && !postgres);
}

static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct health *h = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < h->rt->nbackends && i < HEALTH_MAX; i++) {
        const struct rt_backend *b = &h->rt->backends[i];
        struct probe *p = NULL;
        for (int j = 0; j < h->nprobes && p == NULL; j++)
            if (h->probes[j].slot == b->metric_slot)
                p = &h->probes[j];
        if (p == NULL) {
            if (h->nprobes == HEALTH_MAX)
                continue;
            p = &h->probes[h->nprobes++];
            p->h = h;
            p->fd = -1;
            p->slot = b->metric_slot;
        }
        snprintf(p->name, sizeof(p->name), "%s", b->conf->name);
        snprintf(p->addr, sizeof(p->addr), "%s", b->addr_text);
        probe_start(p, h->rt, b);
    }
}

struct health *
health_new(struct event_base *base, struct runtime *rt)
{
    struct health *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return NULL;
    h->base = base;
    runtime_ref(rt);
    h->rt = rt;
    h->tick = event_new(base, -1, EV_PERSIST, on_tick, h);
    struct timeval tv = {.tv_sec = HEALTH_INTERVAL_MS / 1000,
                         .tv_usec = (HEALTH_INTERVAL_MS % 1000) * 1000};
    event_add(h->tick, &tv);
    on_tick(-1, 0, h); /* know the state before the first scrape */
    return h;
}

void
health_set_runtime(struct health *h, struct runtime *rt)
{
    runtime_ref(rt);
    runtime_unref(h->rt);
    h->rt = rt;
    on_tick(-1, 0, h);
}

int
health_backend_state(const struct health *h, const struct rt_backend *b)
{
    for (int i = 0; i < h->nprobes; i++)
        if (h->probes[i].slot == b->metric_slot)
            return h->probes[i].known ? h->probes[i].up : -1;
    return -1;
}

void
health_free(struct health *h)
{
    if (h == NULL)
        return;
    for (int i = 0; i < h->nprobes; i++)
        probe_stop(&h->probes[i]);
    event_free(h->tick);
    runtime_unref(h->rt);
    free(h);
}
