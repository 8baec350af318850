/*
 * worker.c - a worker thread: listeners, accept, messages from main.
 */
#include "engine/worker.h"

#include <errno.h>
#include <openssl/rand.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "metrics/shadow.h"
#include "protocol/pgcache.h"
#include "protocol/pgdesc.h"
#include "control/control.h"
#include "control/replica.h"
#include "metrics/log.h"
#include "engine/session.h"

#define TICK_MS 200
/*
 * Out of file descriptors (or memory), accept() fails at once and the
 * listening socket stays readable: retrying would spin.  The listener
 * pauses instead, clients wait in the kernel's backlog, sessions already
 * open go on (they free descriptors as they end); the failure is logged at
 * most once per ACCEPT_LOG_MS with a count.
 */
#define ACCEPT_PAUSE_MS 250
#define ACCEPT_LOG_MS 10000
#define CLASSIFY_CACHE_ENTRIES 4096
#define CLASSIFY_CACHE_BYTES (8u << 20)

unsigned proxy_client_count;
unsigned proxy_shadow_drains;
static int accept_fd_ceiling; /* 0: none (see worker.h) */

void
worker_set_fd_limit(unsigned long nofile)
{
    accept_fd_ceiling = nofile > 2 * WORKER_FD_HEADROOM && nofile < (unsigned long)INT32_MAX
                            ? (int)(nofile - WORKER_FD_HEADROOM)
                            : 0;
}

static void accept_failed(struct wlistener *wl, int err);

/* Clients beyond max_client_conn get a 53300 answer; beyond this many more
 * they are closed at once, so a connection flood costs no memory. */
#define OVER_LIMIT_GRACE 256

struct wlistener {
    struct worker *w;
    struct evconnlistener *lev;
    struct event *resume;          /* re-enables lev after an accept failure */
    struct sockaddr_storage addr;
    int seen; /* mark for reconciling with a new runtime */
    struct wlistener *next;
};

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *peer, int peerlen,
          void *arg)
{
    struct wlistener *wl = arg;
    struct worker *w = wl->w;
    const struct rt_listener *l = runtime_listener_find(w->rt, &wl->addr);
    (void)lev;
    (void)peerlen;

    if (l == NULL || w->draining) {
        close(fd);
        return;
    }
    if (accept_fd_ceiling > 0 && fd >= accept_fd_ceiling) {
        close(fd);
        accept_failed(wl, EMFILE); /* the last descriptors are the admin's and the backends' */
        return;
    }
    unsigned max = w->rt->conf->limits.max_client_conn;
    unsigned n = __atomic_add_fetch(&proxy_client_count, 1, __ATOMIC_RELAXED);
    if (n > max + OVER_LIMIT_GRACE) {
        __atomic_sub_fetch(&proxy_client_count, 1, __ATOMIC_RELAXED);
        if (l->metric_slot >= 0)
            metric_add(&w->metrics->client_errors[l->metric_slot][METRIC_ERR_TOO_MANY_CLIENTS], 1);
        worker_note_refused(w, l->metric_slot, WORKER_REFUSED_OVER_GRACE);
        close(fd);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    /* a client that vanished without a FIN must not hold its session and backends */
    conn_tune_socket(fd, w->rt->conf->limits.tcp_keepalive_ms, w->rt->conf->limits.tcp_user_timeout_ms);
    const struct session_protocol *proto = session_protocol_for(l->conf->proto);
    if (proto == NULL) { /* a protocol this binary was built without: our own bug */
        __atomic_sub_fetch(&proxy_client_count, 1, __ATOMIC_RELAXED);
        close(fd);
        return;
    }
    proto->accept(w, l, fd, peer, n > max);
}

/* One line per listener that refused anything since the last report. */
static void
refused_report(struct worker *w, uint64_t now)
{
    static const char *const what[WORKER_REFUSED__COUNT] = {
        [WORKER_REFUSED_OVER_LIMIT] = "clients over max_client_conn (answered too many clients)",
        [WORKER_REFUSED_OVER_GRACE] = "clients far over max_client_conn (closed at once)",
        [WORKER_REFUSED_STARTUP_TIMEOUT] = "clients that did not log in within startup_timeout",
        [WORKER_REFUSED_CANCEL_UNKNOWN] = "cancel requests with a key of no session (ignored)",
        [WORKER_REFUSED_TLS_REQUIRED] = "plain-text logins (tls required)",
    };
    for (size_t i = 0; i < w->rt->nlisteners; i++) {
        const struct rt_listener *l = &w->rt->listeners[i];
        int slot = l->metric_slot;
        char line[768];
        size_t used = 0;
        if (slot < 0 || slot >= METRIC_MAX_LISTENERS)
            continue;
        for (int r = 0; r < WORKER_REFUSED__COUNT && used < sizeof(line); r++) {
            if (w->refused[slot][r] == 0)
                continue;
            used += (size_t)snprintf(line + used, sizeof(line) - used, "%s%llu %s",
                                     used ? ", " : "", (unsigned long long)w->refused[slot][r],
                                     what[r]);
            w->refused[slot][r] = 0;
        }
        if (used > 0)
            log_warn("listener \"%s\": refused %s; sessions already open go on (next report "
                     "in %d s at the earliest)",
                     l->conf->name, line, WORKER_REFUSED_LOG_MS / 1000);
    }
    w->refused_logged_ns = now;
}

void
worker_note_refused(struct worker *w, int slot, enum worker_refusal r)
{
    uint64_t now = session_now_ns();
    if (slot < 0 || slot >= METRIC_MAX_LISTENERS || (unsigned)r >= WORKER_REFUSED__COUNT)
        return;
    w->refused[slot][r]++;
    if (w->refused_logged_ns == 0 ||
        now - w->refused_logged_ns >= WORKER_REFUSED_LOG_MS * 1000000ull)
        refused_report(w, now);
}

/* The tick's part: refusals summed since the last report, once the interval is over. */
static void
refused_tick(struct worker *w, uint64_t now)
{
    if (w->refused_logged_ns != 0 &&
        now - w->refused_logged_ns >= WORKER_REFUSED_LOG_MS * 1000000ull)
        refused_report(w, now); /* logs nothing when nothing was refused */
}

static void
on_accept_resume(evutil_socket_t fd, short what, void *arg)
{
    struct wlistener *wl = arg;
    (void)fd;
    (void)what;
    evconnlistener_enable(wl->lev);
}

/*
 * accept() failed with something other than a retry (EMFILE, ENFILE,
 * ENOBUFS, ENOMEM...), or took one of the last descriptors (err EMFILE).
 */
static void
accept_failed(struct wlistener *wl, int err)
{
    struct worker *w = wl->w;
    struct evconnlistener *lev = wl->lev;
    const struct rt_listener *l = runtime_listener_find(w->rt, &wl->addr);
    uint64_t now = session_now_ns();
    struct timeval pause = {.tv_sec = 0, .tv_usec = ACCEPT_PAUSE_MS * 1000};

    evconnlistener_disable(lev);
    evtimer_add(wl->resume, &pause);
    if (l != NULL && l->metric_slot >= 0)
        metric_add(&w->metrics->listener[l->metric_slot][METRIC_L_ACCEPT_ERRORS], 1);
    w->accept_failures++;
    if (w->accept_logged_ns != 0 && now - w->accept_logged_ns < ACCEPT_LOG_MS * 1000000ull)
        return;
    log_warn("accept failed on listener \"%s\": %s (%llu times since the last report); "
             "pausing accepting for %d ms each time, sessions already open go on",
             l ? l->conf->name : "?", strerror(err), (unsigned long long)w->accept_failures,
             ACCEPT_PAUSE_MS);
    w->accept_failures = 0;
    w->accept_logged_ns = now;
}

static void
on_accept_error(struct evconnlistener *lev, void *arg)
{
    (void)lev;
    accept_failed(arg, errno);
}

static void
wlistener_free(struct wlistener *wl)
{
    evconnlistener_free(wl->lev);
    event_free(wl->resume);
    free(wl);
}

static struct wlistener *
listener_open(struct worker *w, const struct rt_listener *l, char *err, size_t errlen)
{
    int fd = socket(l->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0)
        goto fail;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&l->addr, l->addrlen) != 0 || listen(fd, 1024) != 0)
        goto fail_close;

    struct wlistener *wl = calloc(1, sizeof(*wl));
    if (wl == NULL)
        goto fail_close;
    wl->w = w;
    wl->addr = l->addr;
    /* backlog 0: the socket already listens (1024); -1 would re-listen with 128 */
    wl->resume = evtimer_new(w->base, on_accept_resume, wl);
    wl->lev = wl->resume ? evconnlistener_new(w->base, on_accept, wl, LEV_OPT_CLOSE_ON_FREE, 0, fd)
                         : NULL;
    if (wl->lev == NULL) {
        if (wl->resume)
            event_free(wl->resume);
        free(wl);
        goto fail_close;
    }
    evconnlistener_set_error_cb(wl->lev, on_accept_error);
    return wl;

fail_close:
    snprintf(err, errlen, "listener \"%s\": cannot listen on %s: %s", l->conf->name, l->addr_text,
             strerror(errno));
    close(fd);
    return NULL;
fail:
    snprintf(err, errlen, "listener \"%s\": socket: %s", l->conf->name, strerror(errno));
    return NULL;
}

static void
listener_close_all(struct worker *w)
{
    while (w->listeners) {
        struct wlistener *wl = w->listeners;
        w->listeners = wl->next;
        wlistener_free(wl);
    }
}

/*
 * Bring the open sockets in line with w->rt: keep those whose address is
 * still configured, open the new ones, close the rest.  A bind failure on
 * reload is logged and the others keep working.
 */
static int
listeners_reconcile(struct worker *w, char *err, size_t errlen)
{
    int rc = 0;
    for (struct wlistener *wl = w->listeners; wl; wl = wl->next)
        wl->seen = runtime_listener_find(w->rt, &wl->addr) != NULL;
    for (struct wlistener **p = &w->listeners; *p;) {
        if (!(*p)->seen) {
            struct wlistener *gone = *p;
            *p = gone->next;
            wlistener_free(gone);
        } else {
            p = &(*p)->next;
        }
    }
    for (size_t i = 0; i < w->rt->nlisteners; i++) {
        const struct rt_listener *l = &w->rt->listeners[i];
        int open = 0;
        for (struct wlistener *wl = w->listeners; wl && !open; wl = wl->next)
            open = runtime_listener_find(w->rt, &wl->addr) == l;
        if (open)
            continue;
        struct wlistener *wl = listener_open(w, l, err, errlen);
        if (wl == NULL) {
            rc = -1;
            continue;
        }
        wl->next = w->listeners;
        w->listeners = wl;
    }
    return rc;
}

/*
 * Cutover and rollback: swap the sessions that are ready, let held writes
 * go, and report per listener how many sessions the operation waits for.
 */
static void
cutover_check(struct worker *w)
{
    unsigned unready[METRIC_MAX_LISTENERS] = {0};
    uint32_t generation[METRIC_MAX_LISTENERS] = {0};
    /* read before looking at the sessions: the counts then answer this generation's pause */
    for (size_t i = 0; i < w->rt->nlisteners; i++) {
        int slot = w->rt->listeners[i].metric_slot;
        if (slot >= 0 && slot < METRIC_MAX_LISTENERS)
            generation[slot] = control_pause_generation(slot);
    }
    for (struct session *s = w->sessions, *next; s; s = next) {
        next = s->next; /* the check may end a session */
        int slot;
        if (session_cutover_check(s, &slot) && slot >= 0 &&
            slot < METRIC_MAX_LISTENERS)
            unready[slot]++;
    }
    for (size_t i = 0; i < w->rt->nlisteners; i++) {
        const struct rt_listener *l = &w->rt->listeners[i];
        int slot = l->metric_slot;
        if (slot < 0 || slot >= METRIC_MAX_LISTENERS)
            continue;
        /* writes of sessions gone, still owed on a connection a plug-in shares */
        const struct session_protocol *p = session_protocol_for((int)l->conf->proto);
        if (control_paused(slot) && p != NULL && p->writes_owed != NULL && p->writes_owed(w, l))
            unready[slot]++;
        control_report_unready(w->id, slot, generation[slot], unready[slot]);
    }
}

static void
on_notify(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t posts;
    (void)what;

    /* one read takes every post since the last: the flags below say what they were */
    if (read(fd, &posts, sizeof(posts)) < 0 && errno != EAGAIN)
        log_at(CONF_LOG_WARN, 0, NULL, "worker %d: reading its notify eventfd: %s", w->id,
               strerror(errno));

    pthread_mutex_lock(&w->lock);
    struct runtime *rt = w->posted_rt;
    int drain = w->posted_drain, quit = w->posted_quit, kick = w->posted_kick;
    w->posted_rt = NULL;
    w->posted_drain = w->posted_quit = w->posted_kick = 0;
    pthread_mutex_unlock(&w->lock);

    if (kick)
        cutover_check(w);
    if (rt != NULL) {
        runtime_unref(w->rt);
        w->rt = rt;
        pgdesc_set_rate(w->desc_cache, rt->conf->limits.describes_per_second);
        if (!w->draining) {
            char err[512];
            if (listeners_reconcile(w, err, sizeof(err)) != 0)
                log_error("%s", err);
        }
    }
    if (drain && !w->draining) {
        w->draining = 1;
        listener_close_all(w);
        for (struct session *s = w->sessions, *next; s; s = next) {
            next = s->next;
            session_drain(s);
        }
    }
    if (quit) {
        listener_close_all(w);
        for (struct session *s = w->sessions, *next; s; s = next) {
            next = s->next;
            session_kill(s);
        }
        if (w->tick)
            event_del(w->tick);
        event_base_loopbreak(w->base);
    }
}

/* Every TICK_MS: per listener, the oldest unanswered mirror and the detached sessions. */
static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct worker *w = arg;
    uint64_t lag[METRIC_MAX_LISTENERS] = {0}, detached[METRIC_MAX_LISTENERS] = {0};
    uint64_t now = session_now_ns();
    (void)fd;
    (void)what;

    for (struct session *s = w->sessions, *next; s; s = next) {
        next = s->next; /* the tick may detach, never free */
        uint64_t l = 0;
        int slot = s->lis->metric_slot;
        s->now_ns = 0; /* an entry point: the session's clock is read afresh */
        int det = session_shadow_tick(s, now, &l);
        session_idle_check(s, now);
        if (slot < 0 || slot >= METRIC_MAX_LISTENERS)
            continue;
        if (l > lag[slot])
            lag[slot] = l;
        detached[slot] += det != 0;
    }
    refused_tick(w, now);
    uint64_t backend_lag_ms[METRIC_MAX_BACKENDS] = {0};
    for (size_t i = 0; i < w->rt->nlisteners; i++) {
        const struct rt_listener *l = &w->rt->listeners[i];
        int slot = l->metric_slot;
        if (slot < 0 || slot >= METRIC_MAX_LISTENERS)
            continue;
        /* the backend mirrored now: after a cutover, the listener's configured primary */
        const struct rt_backend *mirrored =
            l->shadow && control_roles_swapped(slot) ? l->primary : l->shadow;
        int b = mirrored ? mirrored->metric_slot : -1;
        uint64_t repl_ns, repl_bytes;
        /* a replicated shadow lags by its replication; unmeasured, no routed read goes to it */
        int unmeasured = replica_lag(slot, &repl_ns, &repl_bytes) != 0 && replica_enabled(slot);
        if (repl_ns > lag[slot])
            lag[slot] = repl_ns;
        if (b >= 0 && unmeasured)
            backend_lag_ms[b] = UINT32_MAX;
        if (b >= 0 && lag[slot] / 1000000 > backend_lag_ms[b])
            backend_lag_ms[b] = lag[slot] / 1000000;
        shadow_set_lag(w->shadow, slot, (double)lag[slot] / 1e9);
        shadow_set_detached(w->shadow, slot, detached[slot]);
    }
    for (int b = 0; b < METRIC_MAX_BACKENDS; b++)
        control_set_lag(w->id, b, backend_lag_ms[b]); /* max_lag keeps routed reads off a slow one */
    if (w->id == 0)
        shadow_set_queue_bytes(session_queue_total());
    cutover_check(w);
}

int
worker_random(struct worker *w, void *out, size_t n)
{
    uint8_t *at;

    if (n > sizeof(w->random_pool))
        return -1;
    if (n > w->random_left) {
        if (RAND_bytes(w->random_pool, sizeof(w->random_pool)) != 1)
            return -1;
        w->random_left = sizeof(w->random_pool);
    }
    at = w->random_pool + sizeof(w->random_pool) - w->random_left;
    memcpy(out, at, n);
    memset(at, 0, n); /* handed out: not kept a second time */
    w->random_left -= n;
    return 0;
}

/* The sessions that asked to be settled from an event of their own (session_settle_soon). */
static void
on_settle(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    session_settle_queued(arg);
}

int
worker_init(struct worker *w, int id, struct runtime *rt)
{
    memset(w, 0, sizeof(*w));
    w->notify_fd = -1;
    w->id = id;
    w->next_conn_id = 1;
    pthread_mutex_init(&w->lock, NULL);
    /*
     * No lock on the worker's base: only its own thread touches it.  The
     * other threads post through w->lock and the eventfd (notify()), which
     * is the one cross-thread call; a locked base took a mutex on every
     * event (issue 15).
     */
    struct event_config *cfg = event_config_new();
    if (cfg != NULL) {
        event_config_set_flag(cfg, EVENT_BASE_FLAG_NOLOCK);
        w->base = event_base_new_with_config(cfg);
        event_config_free(cfg);
    }
    w->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (w->notify_fd < 0)
        return -1;
    w->metrics = metric_shard_new();
    w->shadow = shadow_shard_new();
    w->cls_cache = pgcache_new(CLASSIFY_CACHE_ENTRIES, CLASSIFY_CACHE_BYTES);
    if (w->base == NULL || w->metrics == NULL || w->shadow == NULL || w->cls_cache == NULL)
        return -1;
    w->desc_cache = pgdesc_new(PGDESC_ENTRIES, PGDESC_BYTES,
                               rt->conf->limits.describes_per_second
                                   ? rt->conf->limits.describes_per_second
                                   : PGDESC_DESCRIBES_PER_SEC);
    if (w->desc_cache == NULL)
        return -1;
    w->tick = event_new(w->base, -1, EV_PERSIST, on_tick, w);
    struct timeval tv = {.tv_sec = 0, .tv_usec = TICK_MS * 1000};
    if (w->tick == NULL || event_add(w->tick, &tv) != 0)
        return -1;
    w->settle = event_new(w->base, -1, 0, on_settle, w);
    if (w->settle == NULL)
        return -1;
    w->notify = event_new(w->base, w->notify_fd, EV_READ | EV_PERSIST, on_notify, w);
    if (w->notify == NULL || event_add(w->notify, NULL) != 0)
        return -1;
    runtime_ref(rt);
    w->rt = rt;
    return 0;
}

int
worker_open_listeners(struct worker *w, char *err, size_t errlen)
{
    return listeners_reconcile(w, err, errlen);
}

static void *
worker_main(void *arg)
{
    struct worker *w = arg;
    log_set_worker(w->id);
    event_base_dispatch(w->base);
    return NULL;
}

int
worker_start(struct worker *w)
{
    return pthread_create(&w->thread, NULL, worker_main, w) == 0 ? 0 : -1;
}

void
worker_join(struct worker *w)
{
    pthread_join(w->thread, NULL);
}

void
worker_job_add(struct worker *w, struct worker_job *job)
{
    job->prev = NULL;
    job->next = w->jobs;
    if (w->jobs)
        w->jobs->prev = job;
    w->jobs = job;
}

void
worker_job_remove(struct worker *w, struct worker_job *job)
{
    if (job->prev)
        job->prev->next = job->next;
    else
        w->jobs = job->next;
    if (job->next)
        job->next->prev = job->prev;
    job->prev = job->next = NULL;
}

void
worker_release(struct worker *w)
{
    listener_close_all(w);
    while (w->jobs) /* their events belong to the base freed below */
        w->jobs->cancel(w->jobs);
    if (w->notify)
        event_free(w->notify);
    if (w->notify_fd >= 0)
        close(w->notify_fd);
    if (w->tick)
        event_free(w->tick);
    if (w->settle)
        event_free(w->settle);
    pgcache_free(w->cls_cache);
    pgdesc_free(w->desc_cache);
    if (w->base)
        event_base_free(w->base);
    runtime_unref(w->rt);
    pthread_mutex_lock(&w->lock);
    runtime_unref(w->posted_rt);
    w->posted_rt = NULL;
    pthread_mutex_unlock(&w->lock);
    pthread_mutex_destroy(&w->lock);
    /* the metric shard stays: the scraper may still read it */
}

/* Wake the worker's loop from another thread: its on_notify runs there. */
static void
notify(struct worker *w)
{
    uint64_t one = 1;
    if (write(w->notify_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        log_at(CONF_LOG_WARN, 0, NULL, "worker %d: cannot wake it: %s", w->id, strerror(errno));
}

void
worker_post_runtime(struct worker *w, struct runtime *rt)
{
    runtime_ref(rt);
    pthread_mutex_lock(&w->lock);
    runtime_unref(w->posted_rt);
    w->posted_rt = rt;
    pthread_mutex_unlock(&w->lock);
    notify(w);
}

void
worker_post_drain(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->posted_drain = 1;
    pthread_mutex_unlock(&w->lock);
    notify(w);
}

void
worker_post_quit(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->posted_quit = 1;
    pthread_mutex_unlock(&w->lock);
    notify(w);
}

void
worker_post_kick(struct worker *w)
{
    pthread_mutex_lock(&w->lock);
    w->posted_kick = 1;
    pthread_mutex_unlock(&w->lock);
    notify(w);
}

void
worker_session_added(struct worker *w, struct session *s)
{
    session_link(s, &w->sessions);
    w->nsessions++;
}

void
worker_session_removed(struct worker *w, struct session *s)
{
    session_unlink(s, &w->sessions);
    w->nsessions--;
}
