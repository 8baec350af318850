/*
 * health.c - backend reachability checks (see health.h).
 */
#include "proxy/health.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics/metric.h"
#include "proxy/log.h"

#define HEALTH_INTERVAL_MS 2000
#define HEALTH_TIMEOUT_MS 1500
#define HEALTH_MAX 32

struct probe {
    struct health *h;
    int slot;            /* metric slot of the backend: stable across reloads */
    int fd;
    struct event ev;
    int up;
    int known;
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

static void
probe_done(struct probe *p, int up, const char *why)
{
    if (p->fd >= 0) {
        event_del(&p->ev);
        close(p->fd);
        p->fd = -1;
    }
    if (!p->known || p->up != up)
        log_at(up ? CONF_LOG_INFO : CONF_LOG_WARN, 0, NULL, "backend \"%s\" at %s is %s%s%s",
               p->name, p->addr, up ? "up" : "down", why ? ": " : "", why ? why : "");
    p->up = up;
    p->known = 1;
    metric_set_backend_up(p->slot, up);
}

static void
on_probe(evutil_socket_t fd, short what, void *arg)
{
    struct probe *p = arg;
    int err = 0;
    socklen_t len = sizeof(err);
    if (what & EV_TIMEOUT) {
        probe_done(p, 0, "connect timeout");
        return;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    probe_done(p, err == 0, err ? strerror(err) : NULL);
}

static void
probe_start(struct probe *p, const struct rt_backend *b)
{
    if (p->fd >= 0)
        return; /* the previous check is still running */
    p->fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->fd < 0) {
        probe_done(p, 0, strerror(errno));
        return;
    }
    if (connect(p->fd, (const struct sockaddr *)&b->addr, b->addrlen) == 0) {
        probe_done(p, 1, NULL);
        return;
    }
    if (errno != EINPROGRESS) {
        probe_done(p, 0, strerror(errno));
        return;
    }
    struct timeval tv = {.tv_sec = HEALTH_TIMEOUT_MS / 1000,
                         .tv_usec = (HEALTH_TIMEOUT_MS % 1000) * 1000};
    event_assign(&p->ev, p->h->base, p->fd, EV_WRITE, on_probe, p);
    event_add(&p->ev, &tv);
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
        probe_start(p, b);
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
    for (int i = 0; i < h->nprobes; i++) {
        if (h->probes[i].fd >= 0) {
            event_del(&h->probes[i].ev);
            close(h->probes[i].fd);
        }
    }
    event_free(h->tick);
    runtime_unref(h->rt);
    free(h);
}
