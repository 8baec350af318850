/*
 * session.c - what sessions of every protocol share (see session.h): the
 * process-wide mirror queue count, backend connects, the read-routing
 * decision's inputs.
 */
#include "engine/session.h"

#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "metrics/log.h"
#include "metrics/metric.h"
#include "engine/conn.h"
#include "control/control.h"
#include "control/runtime.h"
#include "engine/worker.h"
#include "routing/route.h"

static uint64_t queue_bytes;

void
session_queue_account(int64_t delta)
{
    if (delta >= 0)
        __atomic_add_fetch(&queue_bytes, (uint64_t)delta, __ATOMIC_RELAXED);
    else
        __atomic_sub_fetch(&queue_bytes, (uint64_t)-delta, __ATOMIC_RELAXED);
}

uint64_t
session_queue_total(void)
{
    return __atomic_load_n(&queue_bytes, __ATOMIC_RELAXED);
}

int
session_connect(struct conn *c, struct event_base *base, const struct rt_backend *b,
                const struct conf_limits *lim, event_callback_fn cb, void *arg)
{
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    conn_tune_socket(fd, lim->tcp_keepalive_ms, lim->tcp_user_timeout_ms);
    if (conn_init(c, base, fd, cb, arg) != 0) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)&b->addr, b->addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS) {
        int saved = errno;
        conn_release(c);
        errno = saved;
        return -1;
    }
    /* writable = connected or failed */
    if (conn_want_write(c, 1) != 0) {
        conn_release(c);
        errno = ENOMEM;
        return -1;
    }
    return 1;
}

int
session_connect_result(const struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    return err;
}

/* ------------------------------------------------------------------ */
/* Read routing, mode split.                                           */

void
session_route_client(const struct sockaddr *peer, struct canary_addr *a)
{
    memset(a, 0, sizeof(*a));
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)peer;
        a->family = 4;
        memcpy(a->bytes, &in->sin_addr, 4);
    } else if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)peer;
        a->family = 6;
        memcpy(a->bytes, &in6->sin6_addr, 16);
    }
}

int
session_split_mode(const struct rt_listener *l)
{
    return l->shadow != NULL && control_mode(l->metric_slot, (int)l->conf->mode) == CONF_MODE_SPLIT;
}

/*
 * The worker's rotation for listener l, rebuilt when the weights changed.
 * Route index 0 is the listener's primary, 1 its shadow, whoever answers
 * now: weights belong to backends, not to roles.
 */
static struct wrr *
rotation(struct worker *w, const struct rt_listener *l)
{
    int slot = l->metric_slot;
    if (slot < 0 || slot >= METRIC_MAX_LISTENERS)
        return NULL;
    struct worker_wrr *ww = &w->wrr[slot];
    uint32_t version = control_weights_version(slot);
    if (!ww->built || ww->version != version) {
        int weights[2] = {control_weight(slot, l->primary->metric_slot),
                          control_weight(slot, l->shadow->metric_slot)};
        wrr_init(&ww->wrr, weights, 2);
        ww->version = version;
        ww->built = 1;
    }
    return &ww->wrr;
}

void
session_route_fallback(struct worker *w, const struct rt_listener *l, int reason)
{
    int slot = l->metric_slot;
    if (slot >= 0 && slot < METRIC_MAX_LISTENERS && reason > ROUTE_REASON_NOT_READ &&
        reason < ROUTE_REASON__COUNT)
        metric_add(&w->metrics->route_fallbacks[slot][reason], 1);
}

int
session_route_read(struct worker *w, const struct rt_listener *l, const struct rt_backend *be,
                   const struct rt_backend *shadow_be, const struct canary_rule *rule,
                   struct route_input *in)
{
    struct wrr *wrr = l->shadow != NULL ? rotation(w, l) : NULL;
    if (wrr == NULL || shadow_be == NULL)
        return 0;
    const struct rt_backend *role[2] = {l->primary, l->shadow};
    struct route_backend backends[2];
    for (int i = 0; i < 2; i++) {
        backends[i].healthy = role[i] == be || control_backend_up(role[i]->metric_slot) != 0;
        backends[i].lag_ms = role[i] == be ? 0 : control_lag_ms(role[i]->metric_slot);
    }
    in->read_your_writes_ms = l->conf->read_your_writes_ms;
    in->max_lag_ms = l->conf->max_lag_ms;
    in->canary = rule;
    in->primary = be == l->primary ? 0 : 1;
    in->shadow = 1 - in->primary;
    in->backends = backends;
    in->nbackends = 2;
    struct route_decision d = route_decide(in, wrr);
    in->backends = NULL; /* it pointed into this frame */
    if (d.answer == in->shadow)
        return 1;
    session_route_fallback(w, l, (int)d.reason);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Protocol plug-ins.                                                  */

#define SESSION_PROTOCOLS_MAX 8
static const struct session_protocol *protocols[SESSION_PROTOCOLS_MAX];
static size_t nprotocols;

void
session_protocols_register(const struct session_protocol *const *list, size_t n)
{
    nprotocols = n < SESSION_PROTOCOLS_MAX ? n : SESSION_PROTOCOLS_MAX;
    for (size_t i = 0; i < nprotocols; i++)
        protocols[i] = list[i];
}

const struct session_protocol *
session_protocol_for(int conf_proto)
{
    for (size_t i = 0; i < nprotocols; i++)
        if (protocols[i]->conf_proto == conf_proto)
            return protocols[i];
    return NULL;
}

/* ------------------------------------------------------------------ */
/* The session core (session.h): one life for every protocol.          */

#define slog(s, level, ...) log_at(level, (s)->id, (s)->peer, __VA_ARGS__)

static const char *const core_state_names[] = {"active", "linger", "dead", "shadow_drain"};

static const char *
state_name(const struct session *s, int state)
{
    if (state >= SESSION_ACTIVE && state <= SESSION_SHADOW_DRAIN)
        return core_state_names[state - SESSION_ACTIVE];
    return s->ops->phase_name ? s->ops->phase_name(state) : "opening";
}

static void on_client(evutil_socket_t fd, short what, void *arg);
static void on_timer(evutil_socket_t fd, short what, void *arg);

void
session_count_listener(struct session *s, int counter, uint64_t n)
{
    if (s->lis->metric_slot >= 0)
        metric_add(&s->w->metrics->listener[s->lis->metric_slot][counter], n);
}

void
session_count_backend(struct session *s, const struct rt_backend *b, int counter, uint64_t n)
{
    if (b->metric_slot >= 0 && b->metric_slot < METRIC_MAX_BACKENDS)
        metric_add(&s->w->metrics->backend[b->metric_slot][counter], n);
}

int
session_idle_check(struct session *s, uint64_t now_ns)
{
    uint64_t limit_ns = (uint64_t)s->w->rt->conf->limits.client_idle_timeout_ms * 1000000;
    uint64_t connect_ns = (uint64_t)s->rt->conf->limits.connect_timeout_ms * 1000000;

    /* a connect begun while active (a shared Redis session taking its own) has no timer */
    if (s->state == SESSION_ACTIVE && s->server_connecting && now_ns > s->server_connect_ns &&
        now_ns - s->server_connect_ns > connect_ns) {
        s->ops->connect_failed(s, "timeout");
        session_settle_soon(s);
        return 1;
    }
    if (!s->ops->idle_timeout || limit_ns == 0 || s->state != SESSION_ACTIVE)
        return 0;
    if (now_ns < s->last_input_ns || now_ns - s->last_input_ns < limit_ns)
        return 0;
    if (s->outstanding != 0 || s->routed != NULL || s->writes_waiting ||
        (s->ops->pinned != NULL && s->ops->pinned(s)))
        return 0;
    slog(s, CONF_LOG_INFO, "closing: nothing received for %llu s (client_idle_timeout)",
         (unsigned long long)(limit_ns / 1000000000));
    session_count_client_error(s, METRIC_ERR_IDLE_TIMEOUT);
    session_close(s);
    session_settle_soon(s);
    return 1;
}

void
session_count_client_error(struct session *s, int reason)
{
    if (s->lis->metric_slot >= 0)
        metric_add(&s->w->metrics->client_errors[s->lis->metric_slot][reason], 1);
}

int
session_init(struct session *s, const struct session_ops *ops, struct worker *w,
             const struct rt_listener *l, int fd, const struct sockaddr *peer)
{
    if (conn_init(&s->client, w->base, fd, on_client, s) != 0) {
        close(fd);
        __atomic_sub_fetch(&proxy_client_count, 1, __ATOMIC_RELAXED);
        return -1;
    }
    s->ops = ops;
    s->w = w;
    s->rt = w->rt;
    runtime_ref(s->rt);
    s->lis = l;
    /* after a cutover the listener's shadow answers and its primary is mirrored */
    s->swapped = l->shadow != NULL && control_roles_swapped(l->metric_slot);
    s->be = s->swapped ? l->shadow : l->primary;
    s->shadow_be = s->swapped ? l->primary : l->shadow;
    s->id = (uint64_t)w->id << 48 | w->next_conn_id++;
    s->server.fd = -1;
    s->state = SESSION_OPENING;
    s->last_input_ns = session_now_ns();
    runtime_format_addr(peer, s->peer, sizeof(s->peer));
    mirror_init(&s->mirror, NULL, s, w->shadow, l->metric_slot, l->conf->mirror.queue_bytes,
                s->rt->conf->limits.mirror_queue_total, s->id * 0x9e3779b97f4a7c15ull + 1);
    if (l->conf->shadow_source == CONF_SHADOW_REPLICATION) {
        s->mirror.gated = 1;
        s->mirror.gate_wait_ns = (uint64_t)l->conf->replication.compare_wait_ms * 1000000ull;
    }
    session_count_listener(s, METRIC_L_CLIENT_ACCEPTED, 1);
    return 0;
}

struct session *
session_new(size_t size, const struct session_ops *ops, const struct mirror_ops *mirror_ops,
            struct worker *w, const struct rt_listener *l, int fd, const struct sockaddr *peer)
{
    struct session *s = calloc(1, size);
    if (s == NULL) {
        close(fd);
        __atomic_sub_fetch(&proxy_client_count, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    if (session_init(s, ops, w, l, fd, peer) != 0) {
        free(s);
        return NULL;
    }
    s->mirror.ops = mirror_ops;
    return s;
}

int
session_arm_timer(struct session *s, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (s->timer == NULL && (s->timer = evtimer_new(s->w->base, on_timer, s)) == NULL) {
        slog(s, CONF_LOG_WARN, "out of memory for the session's timer");
        return -1;
    }
    return evtimer_add(s->timer, &tv);
}

/* The timer is not due any more: its event goes (also from its own callback). */
static void
timer_free(struct session *s)
{
    if (s->timer != NULL) {
        event_free(s->timer);
        s->timer = NULL;
    }
}

void
session_close_server(struct session *s)
{
    if (!s->server_open)
        return;
    int kept = !s->server_connecting && s->ops->server_keep != NULL && s->ops->server_keep(s);
    if (!kept)
        conn_release(&s->server);
    s->server_open = 0;
    s->server_connecting = 0;
    s->server_ready = 0;
    if (s->ops->server_closed)
        s->ops->server_closed(s);
    if (!kept)
        session_count_backend(s, s->be, METRIC_B_SERVER_CLOSED, 1);
}

void
session_set_state(struct session *s, int next)
{
    slog(s, CONF_LOG_DEBUG, "state %s -> %s", state_name(s, s->state), state_name(s, next));
    s->state = next;
    switch (next) {
    case SESSION_ACTIVE:
        timer_free(s);
        break;
    case SESSION_LINGER:
        /* the backend is no longer needed; the client gets its last bytes */
        session_close_server(s);
        if (s->ops->leaving)
            s->ops->leaving(s);
        conn_want_read(&s->client, 0);
        session_arm_timer(s, SESSION_LINGER_MS);
        break;
    default:
        break;
    }
}

void
session_close(struct session *s)
{
    if (s->state == SESSION_LINGER || s->state == SESSION_DEAD || s->state == SESSION_SHADOW_DRAIN)
        return;
    session_set_state(s, SESSION_LINGER);
}

void
session_wake(struct session *s)
{
    if (s->state == SESSION_ACTIVE)
        session_arm_timer(s, 0);
}

/* The client is gone for good: it no longer counts against max_client_conn. */
static void
client_gone(struct session *s)
{
    session_count_listener(s, METRIC_L_CLIENT_CLOSED, 1);
    __atomic_sub_fetch(&proxy_client_count, 1, __ATOMIC_RELAXED);
}

/*
 * The client and the primary are done, but the shadow still owes answers
 * to mirrored units (often the last COMMIT): closing it now would lose
 * them.  Keep only the shadow until it has answered, or its timeout
 * detaches it.
 */
static void
enter_shadow_drain(struct session *s)
{
    timer_free(s);
    session_close_server(s);
    if (s->ops->leaving)
        s->ops->leaving(s);
    conn_release(&s->client);
    client_gone(s);
    s->client_counted_out = 1;
    __atomic_add_fetch(&proxy_shadow_drains, 1, __ATOMIC_RELAXED);
    s->ops->orphan(s);
    s->state = SESSION_SHADOW_DRAIN;
    slog(s, CONF_LOG_DEBUG, "client gone; waiting for the shadow to catch up");
}

static void
session_free(struct session *s)
{
    struct runtime *rt = s->rt;
    timer_free(s);
    if (s->settle_queued) {
        struct session **p = &s->w->settle_head;
        while (*p != s)
            p = &(*p)->settle_next;
        *p = s->settle_next;
        s->settle_queued = 0;
    }
    session_close_server(s);
    if (s->ops->leaving)
        s->ops->leaving(s);
    conn_release(&s->client);
    if (!s->client_counted_out)
        client_gone(s);
    else
        __atomic_sub_fetch(&proxy_shadow_drains, 1, __ATOMIC_RELAXED);
    worker_session_removed(s->w, s);
    s->ops->destroy(s); /* the plug-in's parts, the mirror and the struct */
    runtime_unref(rt);
}

/*
 * Read and drop what the client sent that will never be answered: closing
 * a socket with unread input sends a reset, which may destroy our last
 * message (the error saying why) before the client read it.  Bounded.
 */
static void
discard_client_input(struct session *s)
{
    size_t total = 0;
    ssize_t n;
    while (total < (1u << 20) &&
           (n = recv(s->client.fd, s->w->scratch, sizeof(s->w->scratch), MSG_DONTWAIT)) > 0)
        total += (size_t)n;
}

/*
 * The read interest of each side, by its destination's backlog.  A read
 * routed to the shadow streams from the shadow to the client: the client
 * side's backlog holds the shadow back then, and the client waits for it.
 */
static void
interest(struct session *s)
{
    int client_backlog = evbuffer_get_length(s->client.out) >= SESSION_BACKPRESSURE_BYTES;
    if (s->server_open)
        conn_want_read(&s->server, !s->server_connecting && !client_backlog);
    conn_want_read(&s->client, s->routed == NULL && !s->writes_waiting &&
                                   (!s->server_open || evbuffer_get_length(s->server.out) <
                                                           SESSION_BACKPRESSURE_BYTES) &&
                                   s->ops->client_wanted(s));
    if (s->mirror.state == MIRROR_READY && s->shadow_open)
        conn_want_read(s->shadow_conn, s->routed == NULL || !client_backlog);
}

void
session_settle(struct session *s)
{
    if (s->state == SESSION_LINGER) {
        if (s->client.fd >= 0 && conn_flush(&s->client) == CONN_AGAIN)
            return; /* waiting for the client to take its last bytes */
        if (s->client.fd >= 0)
            discard_client_input(s);
        s->state = SESSION_DEAD;
    }
    if (s->state == SESSION_DEAD && mirror_busy(&s->mirror))
        enter_shadow_drain(s);
    if (s->state == SESSION_SHADOW_DRAIN) {
        if (!mirror_busy(&s->mirror))
            session_free(s);
        return;
    }
    if (s->state == SESSION_DEAD) {
        session_free(s);
        return;
    }
    interest(s);
}

void
session_settle_soon(struct session *s)
{
    if (!s->settle_queued) {
        s->settle_queued = 1;
        s->settle_next = s->w->settle_head;
        s->w->settle_head = s;
    }
    event_active(s->w->settle, EV_TIMEOUT, 0);
}

void
session_settle_queued(struct worker *w)
{
    while (w->settle_head != NULL) {
        struct session *s = w->settle_head;
        w->settle_head = s->settle_next;
        s->settle_next = NULL;
        s->settle_queued = 0;
        session_settle(s); /* may free s, which left the queue first */
    }
}

/*
 * The session's handlers: the engine reads and writes the sockets, the
 * plug-in is told what arrived, then settle(), the one place a session is
 * freed, so no plug-in code ever runs on a session freed under it.
 */

/* Client bytes (what: the event's flags; 0 to look at client.in again). */
static void
client_io(struct session *s, short what)
{
    size_t n;

    if (s->ops->client_handshake && !s->ops->client_handshake(s, &what))
        return;
    if (what & EV_READ) {
        enum conn_io io = conn_read(&s->client, s->w->scratch, sizeof(s->w->scratch), &n);
        if (io == CONN_EOF || io == CONN_ERROR) {
            if (s->state == SESSION_ACTIVE && s->server_ready)
                conn_flush(&s->server); /* what the client sent before leaving */
            s->state = SESSION_DEAD;
            return;
        }
        if (io == CONN_OK) {
            session_count_listener(s, METRIC_L_BYTES_RECEIVED, n);
            s->last_input_ns = session_clock(s);
        }
    }
    s->ops->client_input(s);
    if (s->state <= SESSION_ACTIVE && s->server_ready && conn_flush(&s->server) == CONN_ERROR) {
        s->ops->server_lost(s, CONN_ERROR);
        return;
    }
    if (s->state < SESSION_LINGER && conn_flush(&s->client) == CONN_ERROR)
        s->state = SESSION_DEAD;
}

static void
on_client(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    s->now_ns = 0;
    if (s->state < SESSION_LINGER)
        client_io(s, what);
    session_settle(s);
}

/* The connect's outcome: 1 when the connection is open and the event may go on. */
static int
server_connect_done(struct session *s)
{
    int err = session_connect_result(&s->server);
    s->server_connecting = 0;
    if (err != 0) {
        s->ops->connect_failed(s, strerror(err));
        return 0;
    }
    s->ops->server_connected(s);
    return s->state < SESSION_LINGER;
}

static void
server_io(struct session *s, short what)
{
    size_t n;

    if (s->server_connecting) {
        if (!server_connect_done(s))
            return;
        what = 0; /* the event said "writable": write what the protocol queued */
    } else if (s->ops->server_handshake) {
        int r = s->ops->server_handshake(s);
        if (r < 0)
            return;
        if (r == 0)
            what = 0;
    }
    if (what & EV_READ) {
        enum conn_io io = conn_read(&s->server, s->w->scratch, sizeof(s->w->scratch), &n);
        if (io == CONN_OK)
            session_count_backend(s, s->be, METRIC_B_BACKEND_BYTES_RECEIVED, n);
        s->ops->server_input(s);
        if (io == CONN_EOF || io == CONN_ERROR) {
            conn_flush(&s->client); /* the last answers, before the protocol says why */
            s->ops->server_lost(s, io);
            return;
        }
    }
    if (s->state >= SESSION_LINGER)
        return;
    if (conn_flush(&s->server) == CONN_ERROR) {
        s->ops->server_lost(s, CONN_ERROR);
        return;
    }
    if (conn_flush(&s->client) == CONN_ERROR)
        s->state = SESSION_DEAD;
}

void
session_on_server(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    s->now_ns = 0;
    if (s->state < SESSION_LINGER && s->server_open)
        server_io(s, what);
    session_settle(s);
}

void
session_deliver_done(struct session *s)
{
    if (s->state < SESSION_LINGER && conn_flush(&s->client) == CONN_ERROR)
        s->state = SESSION_DEAD;
    session_settle(s);
}

void
session_connect_backend(struct session *s)
{
    int rc = session_connect(&s->server, s->w->base, s->be, &s->rt->conf->limits,
                             session_on_server, s);
    if (rc < 0) {
        s->ops->connect_failed(s, strerror(errno));
        return;
    }
    s->server_open = 1;
    s->server_connecting = rc == 1; /* writable = connected or failed: server_io */
    s->server_connect_ns = session_now_ns();
    if (s->state < SESSION_ACTIVE) /* an active session's timer is its wake-up */
        session_arm_timer(s, s->rt->conf->limits.connect_timeout_ms);
    if (rc == 0)
        s->ops->server_connected(s);
}

/*
 * An active session's wake-up (session_wake): an idle point, where a
 * cutover may swap the roles, a routed read was answered, or writes held
 * for a cutover may go; a draining session closes once idle.
 */
static void
wake(struct session *s)
{
    int slot;
    session_cutover_check(s, &slot);
    if (s->state != SESSION_ACTIVE)
        return;
    client_io(s, 0);
    if (s->state == SESSION_ACTIVE && s->draining && s->ops->idle(s) &&
        evbuffer_get_length(s->client.in) == 0)
        s->ops->close_with(s, SESSION_CLOSE_SHUTDOWN,
                           "terminating connection because tandem is shutting down");
}

static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    (void)what;
    s->now_ns = 0;
    if (s->state == SESSION_LINGER) {
        s->state = SESSION_DEAD; /* the client does not read: give up on it */
    } else if (s->state == SESSION_ACTIVE) {
        timer_free(s); /* fired, not pending: an idle session keeps no timer */
        wake(s);
    }
    else if (s->state < SESSION_ACTIVE)
        s->ops->timer(s); /* an opening phase's deadline */
    session_settle(s); /* frees a drained session once the shadow is done */
}

/* ------------------------------------------------------------------ */
/* The shadow connection's bytes.                                      */

int
session_shadow_flush(struct session *s)
{
    struct conn *c = s->shadow_conn;
    size_t before = evbuffer_get_length(c->out);
    if (conn_flush(c) == CONN_ERROR) {
        mirror_detach(&s->mirror, SHADOW_SHADOW_ERROR, mirror_drop_reason(SHADOW_SHADOW_ERROR),
                      "write to the shadow failed", session_clock(s));
        return -1;
    }
    mirror_account(&s->mirror, -(int64_t)(before - evbuffer_get_length(c->out)));
    return 0;
}

static void
shadow_detach(struct session *s, const char *why)
{
    mirror_detach(&s->mirror, SHADOW_SHADOW_ERROR, mirror_drop_reason(SHADOW_SHADOW_ERROR), why,
                  session_clock(s));
}

enum conn_io
session_backend_tls(struct conn *c, const struct rt_backend *be)
{
    const struct conf_backend *cb = be->conf;
    if (c->ssl == NULL) {
        const char *name = cb->tls_server_name[0] ? cb->tls_server_name : cb->addr.host;
        if (conn_start_tls(c, be->tls, 0, name, cb->tls == CONF_TLS_VERIFY_FULL ? name : NULL) != 0)
            return CONN_ERROR;
    }
    return conn_handshake(c);
}

int
session_mirror_open(struct session *s)
{
    if (s->shadow_conn == NULL) {
        if ((s->shadow_conn = calloc(1, sizeof(*s->shadow_conn))) == NULL)
            return -1;
        s->shadow_conn->fd = -1;
    }
    return mirror_open(&s->mirror);
}

void
session_shadow_conn_free(struct session *s)
{
    if (s->shadow_conn == NULL)
        return;
    conn_release(s->shadow_conn);
    free(s->shadow_conn);
    s->shadow_conn = NULL;
    s->shadow_open = 0;
}

int
session_connect_shadow(struct session *s)
{
    s->mirror.state = MIRROR_CONNECTING; /* so a failure is counted */
    int rc = session_connect(s->shadow_conn, s->w->base, s->shadow_be, &s->rt->conf->limits,
                             session_on_shadow, s);
    if (rc < 0) {
        char why[200];
        snprintf(why, sizeof(why), "connect: %s", strerror(errno));
        session_count_backend(s, s->shadow_be, METRIC_B_CONNECT_FAILURES, 1);
        shadow_detach(s, why);
        return -1;
    }
    s->shadow_open = 1;
    s->shadow_connect_ns = session_clock(s);
    return rc;
}

int
session_shadow_tick(struct session *s, uint64_t now_ns, uint64_t *lag_ns)
{
    uint64_t connect_ns = (uint64_t)s->rt->conf->limits.connect_timeout_ms * 1000000ull;

    *lag_ns = 0;
    if (s->mirror.state == MIRROR_OFF)
        return 0;
    /* a plug-in that logs in through its own library (libpq) times its connect itself */
    if (s->mirror.state == MIRROR_CONNECTING && s->ops->shadow_connected != NULL &&
        s->shadow_connect_ns != 0 && now_ns - s->shadow_connect_ns > connect_ns) {
        session_count_backend(s, s->shadow_be, METRIC_B_CONNECT_FAILURES, 1);
        shadow_detach(s, "connect timeout");
        return 1;
    }
    /* gated reads wait for the replica, not for an event of this session: look again */
    if (s->mirror.gated && s->mirror.nheld > 0 &&
        (s->mirror.state == MIRROR_READY || s->mirror.state == MIRROR_CONNECTING)) {
        s->ops->shadow_release(s);
        if (s->mirror.state == MIRROR_READY || s->mirror.state == MIRROR_CONNECTING)
            mirror_complete(&s->mirror); /* a read skipped for lag is done now: record it */
        session_shadow_progress(s);
    }
    return mirror_tick(&s->mirror, now_ns, (uint64_t)s->lis->conf->mirror.timeout_ms * 1000000ull,
                       lag_ns);
}

static void
shadow_connect_done(struct session *s)
{
    int err = session_connect_result(s->shadow_conn);
    if (err != 0) {
        char why[200];
        snprintf(why, sizeof(why), "connect: %s", strerror(err));
        session_count_backend(s, s->shadow_be, METRIC_B_CONNECT_FAILURES, 1);
        shadow_detach(s, why);
        return;
    }
    s->ops->shadow_connected(s);
}

static void
shadow_io(struct session *s, short what)
{
    size_t n;

    if (what & EV_READ) {
        enum conn_io io = conn_read(s->shadow_conn, s->w->scratch, sizeof(s->w->scratch), &n);
        if (io == CONN_OK) {
            session_count_backend(s, s->shadow_be, METRIC_B_BACKEND_BYTES_RECEIVED, n);
            s->ops->shadow_input(s);
        }
        if (s->mirror.state != MIRROR_READY)
            return;
        if (io == CONN_EOF || io == CONN_ERROR) {
            shadow_detach(s, io == CONN_EOF ? "the shadow closed the connection"
                                            : "read from the shadow failed");
            return;
        }
    }
    session_shadow_flush(s);
}

/*
 * Never settles: a session draining its shadow is freed from its own
 * event (session_shadow_progress), and nothing else ends here.
 */
void
session_on_shadow(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    (void)fd;
    s->now_ns = 0;
    if (s->mirror.state == MIRROR_CONNECTING && s->ops->shadow_connected)
        shadow_connect_done(s);
    else if (s->mirror.state == MIRROR_READY)
        shadow_io(s, what);
}

/*
 * Cutover: the answering connection and the shadow's trade places (both
 * idle, session_cutover_check asked swap_ready), each rebound to the
 * handler of its new role.
 */
static void
swap_conns(struct session *s)
{
    struct conn old_server;

    conn_unbind(&s->server);
    conn_unbind(s->shadow_conn);
    old_server = s->server;
    s->server = *s->shadow_conn;
    *s->shadow_conn = old_server;
    conn_rebind(&s->server, s->w->base, session_on_server, s);
    conn_rebind(s->shadow_conn, s->w->base, session_on_shadow, s);
}

void
session_shadow_progress(struct session *s)
{
    /* freed from its own event, never from inside the shadow's handler */
    if (s->state == SESSION_SHADOW_DRAIN && !mirror_busy(&s->mirror))
        session_settle_soon(s);
}

void
session_kill(struct session *s)
{
    s->now_ns = 0;
    if (s->mirror.state == MIRROR_READY || s->mirror.state == MIRROR_CONNECTING) {
        /* what the shadow still owed is counted, not lost silently */
        s->ops->orphan(s);
        mirror_detach(&s->mirror, SHADOW_DROPPED, SHADOW_DROP_QUEUE_FULL, "tandem is exiting",
                      session_now_ns());
    }
    if (s->state != SESSION_SHADOW_DRAIN) {
        /* the client is still there: it is told why (a drained session's client is gone) */
        if (s->state != SESSION_LINGER && s->state != SESSION_DEAD)
            s->ops->close_with(s, SESSION_CLOSE_SHUTDOWN,
                               "terminating connection because tandem is shutting down");
        if (s->client.fd >= 0)
            conn_flush(&s->client);
        s->state = SESSION_DEAD;
    }
    session_settle(s); /* frees it: a drained session's shadow was abandoned above */
}

void
session_drain(struct session *s)
{
    s->now_ns = 0;
    s->draining = 1;
    /* idle now (nothing owed, nothing waiting), or not logged in yet: close; busy: at the
     * next idle point (the plug-in looks at draining there) */
    int close_now = s->state < SESSION_ACTIVE
                        ? s->ops->idle(s) /* the plug-in says which opening phases may go */
                        : s->state == SESSION_ACTIVE && s->ops->idle(s) &&
                              evbuffer_get_length(s->client.in) == 0;
    if (close_now)
        s->ops->close_with(s, SESSION_CLOSE_SHUTDOWN,
                           "terminating connection because tandem is shutting down");
    session_settle(s);
}

/*
 * Whether s may trade its connections now: -1 never (no shadow connection),
 * 0 not yet, 1 now.  Both sides must be idle: a write still held or
 * unanswered by the shadow would reach the old primary a second time once
 * it is the mirrored side, and bytes in flight on either connection belong
 * to the role it has now.  Then the plug-in's part (ops->swap_ready).
 */
static int
swap_ready(struct session *s)
{
    const struct mirror *m = &s->mirror;

    if (m->state == MIRROR_OFF || m->state == MIRROR_DETACHED)
        return -1;
    if (m->state != MIRROR_READY || (!s->shadow_open && !s->shadow_shared) || s->outstanding > 0 ||
        s->routed != NULL || m->head != NULL || mirror_busy(m) ||
        (s->shadow_open && evbuffer_get_length(s->shadow_conn->in) > 0))
        return 0;
    /* no server connection of its own: the plug-in knows what its shared one owes it */
    if (s->server_open &&
        (evbuffer_get_length(s->server.out) > 0 || evbuffer_get_length(s->server.in) > 0))
        return 0;
    return s->ops->swap_ready(s);
}

int
session_cutover_check(struct session *s, int *listener_slot)
{
    s->now_ns = 0; /* an entry point of its own (the worker's look) */
    int slot = *listener_slot = s->lis->metric_slot;
    if (s->shadow_be == NULL || s->ops->swap_ready == NULL)
        return 0;
    /*
     * The client is gone, but writes it was told were done may still be owed
     * by the shadow: a cutover's drain waits for them too, or they would reach
     * the new primary after the swap, behind newer writes.
     */
    if (s->state == SESSION_SHADOW_DRAIN)
        return control_paused(slot) && s->mirror.state != MIRROR_OFF &&
               s->mirror.state != MIRROR_DETACHED && mirror_writes_owed(&s->mirror);
    /* not logged in yet: it has sent no write, and swaps once it is */
    if (s->state != SESSION_ACTIVE)
        return 0;
    int want = control_roles_swapped(slot);
    if (s->ops->pinned && s->ops->pinned(s)) {
        if (!control_paused(slot) && (int)s->swapped != want) {
            s->ops->close_with(s, SESSION_CLOSE_CUTOVER,
                               "the primary changed (cutover): reconnect");
            session_settle_soon(s); /* never freed here: the caller still holds s */
        }
        return 0;
    }
    if (control_paused(slot)) {
        /* drained: every write it sent is acknowledged by both sides (reads may run) */
        if (s->mirror.state == MIRROR_OFF || s->mirror.state == MIRROR_DETACHED)
            return !control_force(slot);
        return s->ops->writes_owed(s);
    }
    if ((int)s->swapped != want) {
        mirror_skip_gated(&s->mirror); /* never to be compared with the old primary */
        int ready = swap_ready(s);
        if (ready < 0 && s->ops->idle(s)) {
            s->ops->close_with(s, SESSION_CLOSE_CUTOVER,
                               "the primary changed (cutover) and this session has no "
                               "connection to the new one: reconnect");
            conn_flush(&s->client);
            session_settle_soon(s); /* never freed here: the caller still holds s */
            return 0;
        }
        if (ready <= 0)
            return 1;
        const struct rt_backend *b = s->be;
        if (s->server_open)
            swap_conns(s);
        s->be = s->shadow_be;
        s->shadow_be = b;
        s->swapped = !s->swapped;
        s->ops->swap(s);
        slog(s, CONF_LOG_DEBUG, "roles swapped: \"%s\" answers, \"%s\" is mirrored",
             s->be->conf->name, s->shadow_be->conf->name);
    }
    if (s->writes_waiting) {
        s->writes_waiting = 0;
        session_wake(s); /* the waiting writes are read again from the session's timer */
    }
    return 0;
}
