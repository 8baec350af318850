/*
 * session.c - what sessions of every protocol share (see session.h): the
 * process-wide mirror queue count, backend connects, the read-routing
 * decision's inputs.
 */
#include "engine/session.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
                event_callback_fn cb, void *arg)
{
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
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
    event_add(&c->ev_write, NULL);
    c->writing = 1;
    return 1;
}

void
session_swap_conns(struct conn *server, struct conn *shadow, struct event_base *base,
                   event_callback_fn cb, void *arg)
{
    struct conn old_server;

    conn_unbind(server);
    conn_unbind(shadow);
    old_server = *server;
    *server = *shadow;
    *shadow = old_server;
    conn_rebind(server, base, cb, arg);
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
