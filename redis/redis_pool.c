/*
 * redis_pool.c - server connections shared by stateless Redis sessions
 * (see redis_pool.h).
 *
 * One struct redis_pool per worker (worker.protocol_state), a list of
 * struct redis_shared, each of one role (primary or shadow).  Each shared
 * connection owns its socket (a struct conn on the worker's base, handler
 * on_shared) and a ring of waits:
 *
 *   ring: [A 1] [B 16] [nobody 2 w] [C 1]      conn.in: A's reply, B's ...
 *          ^ head: the next reply is A's
 *
 * The handler frames nothing itself while someone waits: the waiting
 * session's reader of that role does (redis_session_shared_input for the
 * primary, redis_shadow_shared_input for the shadow).  Only replies whose
 * session left are framed here, by `discard`, and dropped.  The roles
 * differ in nothing else than who reads, what a failure does to the
 * sessions waiting (shared_lost), and the shadow's bounds: its waits'
 * deadline (the `deadline` event, once connected) and its unsent bytes.
 */
#include "redis/redis_pool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/control.h"
#include "control/runtime.h"
#include "engine/conn.h"
#include "engine/session.h"
#include "engine/worker.h"
#include "metrics/log.h"
#include "metrics/metric.h"
#include "protocol/resp.h"
#include "redis/redis_session_int.h"

/* Who waits for how many replies, in the order the commands went out. */
struct shared_wait {
    struct redis_session *s; /* NULL: it left, its replies are dropped */
    uint32_t replies;
    /* the shadow role: */
    unsigned writes : 1;     /* a write among them (a cutover's drain waits for it) */
    uint32_t timeout_ms;     /* the sender's mirror timeout */
    uint64_t sent_ns;        /* when the first of them went out */
};

struct redis_pool;

struct redis_shared {
    struct redis_shared *next;   /* the pool's list */
    struct redis_pool *pool;
    struct runtime *rt;          /* held: be lives in it */
    const struct rt_backend *be;
    enum redis_role role;
    struct conn conn;
    struct event deadline;       /* the connect's; then, the shadow role's oldest wait's */
    struct event flush_ev;       /* the write of everything sent during this loop turn */
    unsigned connecting : 1;
    unsigned flush_armed : 1;
    unsigned busy : 1;           /* inside its own handler: freed at its end */
    unsigned failed : 1;         /* out of the pool; freed when not busy */
    unsigned discard_open : 1;   /* discard is inside a reply */
    unsigned deadline_armed : 1; /* the shadow role: deadline watches the head's wait */
    uint64_t progress_ns;        /* the shadow role: when its last bytes arrived */
    struct resp_reader discard;  /* frames the replies of sessions that left */
    struct shared_wait *ring;
    uint32_t cap, head, len;     /* cap: a power of two */
};

struct redis_pool {
    struct worker_job job;       /* first: the worker frees the pool with it */
    struct worker *w;
    struct redis_shared *conns;
};

#define RING_MIN 64

/* ------------------------------------------------------------------ */
/* The pool of a worker.                                               */

static void shared_free(struct redis_shared *sh);

static void
pool_cancel(struct worker_job *job)
{
    struct redis_pool *p = (struct redis_pool *)job;
    worker_job_remove(p->w, job);
    while (p->conns) {
        struct redis_shared *sh = p->conns;
        p->conns = sh->next;
        shared_free(sh);
    }
    p->w->protocol_state[CONF_PROTO_REDIS] = NULL;
    free(p);
}

static struct redis_pool *
pool_of(struct worker *w)
{
    struct redis_pool *p = w->protocol_state[CONF_PROTO_REDIS];
    if (p != NULL)
        return p;
    if ((p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    p->w = w;
    p->job.cancel = pool_cancel;
    worker_job_add(w, &p->job);
    w->protocol_state[CONF_PROTO_REDIS] = p;
    return p;
}

static void
count_backend(struct redis_shared *sh, enum metric_backend_counter c, uint64_t n)
{
    int slot = sh->be->metric_slot;
    if (slot >= 0 && slot < METRIC_MAX_BACKENDS)
        metric_add(&sh->pool->w->metrics->backend[slot][c], n);
}

/* The session's side of role: where it owes replies, and its reader of that role's. */
static struct redis_leg *
leg_of(struct redis_session *s, enum redis_role role)
{
    return role == REDIS_ROLE_SHADOW ? &s->shadow->leg : &s->leg;
}

/*
 * The shadow role's unsent bytes were handed over by their sessions still
 * counted against the process's mirror bound (mirror_hand_over): what is
 * written, or dropped with the connection, leaves that count.
 */
static void
unsent_gone(struct redis_shared *sh, size_t n)
{
    if (sh->role == REDIS_ROLE_SHADOW && n > 0)
        session_queue_account(-(int64_t)n);
}

/* ------------------------------------------------------------------ */
/* The ring of waits.                                                  */

static struct shared_wait *
ring_at(const struct redis_shared *sh, uint32_t i)
{
    return &sh->ring[(sh->head + i) & (sh->cap - 1)];
}

static int
ring_push(struct redis_shared *sh, struct redis_session *s, uint32_t replies, int writes)
{
    if (sh->len > 0) {
        struct shared_wait *tail = ring_at(sh, sh->len - 1);
        if (tail->s == s && tail->replies <= UINT32_MAX - replies) {
            tail->replies += replies; /* a pipeline: one wait (the oldest deadline) */
            tail->writes |= writes != 0;
            return 0;
        }
    }
    if (sh->len == sh->cap) {
        uint32_t cap = sh->cap ? sh->cap * 2 : RING_MIN;
        struct shared_wait *ring = malloc(sizeof(*ring) * cap);
        if (ring == NULL)
            return -1;
        for (uint32_t i = 0; i < sh->len; i++)
            ring[i] = *ring_at(sh, i);
        free(sh->ring);
        sh->ring = ring;
        sh->cap = cap;
        sh->head = 0;
    }
    struct shared_wait *wt = ring_at(sh, sh->len);
    wt->s = s;
    wt->replies = replies;
    wt->writes = writes != 0;
    if (sh->role == REDIS_ROLE_SHADOW) {
        wt->sent_ns = session_clock(&s->base);
        wt->timeout_ms = s->base.lis->conf->mirror.timeout_ms;
    }
    sh->len++;
    return 0;
}

static void
ring_pop(struct redis_shared *sh)
{
    sh->head = (sh->head + 1) & (sh->cap - 1);
    sh->len--;
}

/* ------------------------------------------------------------------ */
/* A shared connection's life.                                         */

static void on_shared(evutil_socket_t fd, short what, void *arg);
static void on_flush(evutil_socket_t fd, short what, void *arg);
static void on_deadline(evutil_socket_t fd, short what, void *arg);

/* Close and free: nobody waits any more (shared_fail saw to that). */
static void
shared_free(struct redis_shared *sh)
{
    if (sh->conn.fd >= 0 || sh->conn.in != NULL) {
        unsent_gone(sh, evbuffer_get_length(sh->conn.out));
        conn_release(&sh->conn);
        if (!sh->connecting)
            count_backend(sh, METRIC_B_SERVER_CLOSED, 1);
    }
    event_del(&sh->deadline);
    event_del(&sh->flush_ev);
    free(sh->ring);
    runtime_unref(sh->rt);
    free(sh);
}

static void
pool_unlink(struct redis_shared *sh)
{
    for (struct redis_shared **pp = &sh->pool->conns; *pp; pp = &(*pp)->next)
        if (*pp == sh) {
            *pp = sh->next;
            break;
        }
    sh->next = NULL;
}

/*
 * shared_fail - the connection is lost (or never opened, or timed out): it
 * leaves the pool, and every session waiting on it is told, once
 * (redis_session_shared_lost: msg for each command it awaits, and it
 * closes; redis_shadow_shared_lost: its mirror is detached); sessions
 * that owe nothing here are untouched.  Freed now, or at the end of its
 * handler.
 */
static void
shared_fail(struct redis_shared *sh, const char *msg, enum redis_shared_loss loss)
{
    struct redis_session *failed = NULL;

    if (sh->failed)
        return;
    sh->failed = 1;
    pool_unlink(sh);
    log_at(CONF_LOG_WARN, 0, NULL, "shared %s connection to \"%s\" at %s: %s",
           sh->role == REDIS_ROLE_SHADOW ? "shadow" : "server", sh->be->conf->name,
           sh->be->addr_text, msg);
    /* each waiting session once (a session may wait in several places of the ring) */
    for (uint32_t i = 0; i < sh->len; i++) {
        struct redis_session *s = ring_at(sh, i)->s;
        struct redis_leg *leg = s != NULL ? leg_of(s, sh->role) : NULL;
        if (leg != NULL && leg->mux == sh) {
            leg->mux = NULL;
            leg->owed = 0;
            leg->next_failed = failed;
            failed = s;
        }
    }
    sh->len = 0;
    while (failed != NULL) {
        struct redis_session *s = failed;
        struct redis_leg *leg = leg_of(s, sh->role);
        failed = leg->next_failed;
        leg->next_failed = NULL;
        /* the primary's settles s: not touched after */
        if (sh->role == REDIS_ROLE_SHADOW)
            redis_shadow_shared_lost(s, msg, loss);
        else
            redis_session_shared_lost(s, msg, loss);
    }
    if (!sh->busy)
        shared_free(sh);
}

/* Open a new shared connection to be for the pool.  NULL, errno set, when it cannot be. */
static struct redis_shared *
shared_open(struct redis_pool *p, struct runtime *rt, const struct rt_backend *be,
            enum redis_role role)
{
    struct redis_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return NULL;
    sh->pool = p;
    sh->be = be;
    sh->role = role;
    sh->rt = rt;
    sh->conn.fd = -1;
    int rc = session_connect(&sh->conn, p->w->base, be, &rt->conf->limits, on_shared, sh);
    if (rc < 0) {
        int saved = errno;
        count_backend(sh, METRIC_B_CONNECT_FAILURES, 1);
        free(sh);
        errno = saved;
        return NULL;
    }
    runtime_ref(rt);
    evtimer_assign(&sh->deadline, p->w->base, on_deadline, sh);
    event_assign(&sh->flush_ev, p->w->base, -1, 0, on_flush, sh);
    sh->connecting = rc == 1;
    if (sh->connecting) {
        uint32_t ms = rt->conf->limits.connect_timeout_ms;
        struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
        evtimer_add(&sh->deadline, &tv);
    } else {
        count_backend(sh, METRIC_B_SERVER_OPENED, 1);
        conn_want_read(&sh->conn, 1);
    }
    sh->next = p->conns;
    p->conns = sh;
    return sh;
}

/*
 * The connection for a session that owes no replies: of its backend's in
 * that role, the one with the fewest waits, or a new one while the
 * listener's server_pool is not reached.  Idle connections of an older
 * configuration close here.
 */
static struct redis_shared *
shared_pick(struct redis_session *s, enum redis_role role)
{
    struct redis_pool *p = pool_of(s->base.w);
    const struct rt_backend *be = role == REDIS_ROLE_SHADOW ? s->base.shadow_be : s->base.be;
    struct redis_shared *best = NULL;
    uint32_t n = 0;

    if (p == NULL)
        return NULL;
    for (struct redis_shared *sh = p->conns, *next; sh; sh = next) {
        next = sh->next;
        if (sh->be == be && sh->role == role) {
            n++;
            if (best == NULL || sh->len < best->len)
                best = sh;
        } else if (sh->rt != p->w->rt && sh->len == 0 && !sh->busy) {
            pool_unlink(sh); /* a reload replaced its backend: nobody needs it */
            shared_free(sh);
        }
    }
    if (best != NULL && (best->len == 0 || n >= s->base.lis->conf->server_pool))
        return best;
    struct redis_shared *fresh = shared_open(p, s->base.rt, be, role);
    return fresh != NULL ? fresh : best;
}

static void deadline_watch(struct redis_shared *sh);

int
redis_pool_send(struct redis_session *s, enum redis_role role, struct evbuffer *src, size_t n,
                uint32_t replies, int writes)
{
    struct redis_leg *leg = leg_of(s, role);
    struct redis_shared *sh = leg->mux != NULL ? leg->mux : shared_pick(s, role);
    if (sh == NULL)
        return -1;
    if (role == REDIS_ROLE_SHADOW &&
        evbuffer_get_length(sh->conn.out) + n > s->base.mirror.queue_bytes) {
        errno = ENOBUFS; /* the shadow does not take them fast enough: cap, drop, count */
        return -1;
    }
    if (replies > 0 && ring_push(sh, s, replies, writes) != 0) {
        errno = ENOMEM;
        return -1;
    }
    evbuffer_remove_buffer(src, sh->conn.out, n);
    if (replies > 0) {
        leg->mux = sh;
        leg->owed += replies;
    }
    if (!sh->flush_armed && !sh->connecting) {
        sh->flush_armed = 1;
        event_active(&sh->flush_ev, EV_WRITE, 0);
    }
    if (role == REDIS_ROLE_SHADOW)
        deadline_watch(sh);
    return 0;
}

void
redis_pool_leave(struct redis_session *s, enum redis_role role)
{
    struct redis_leg *leg = leg_of(s, role);
    struct redis_shared *sh = leg->mux;
    int shadow = role == REDIS_ROLE_SHADOW;
    if (sh == NULL)
        return;
    for (uint32_t i = 0; i < sh->len; i++) {
        struct shared_wait *wt = ring_at(sh, i);
        if (wt->s != s)
            continue;
        if (i == 0 && (shadow ? s->shadow->reply_open : s->reply_open)) {
            /* it left in the middle of a reply: the pool reads the rest of it */
            sh->discard = shadow ? s->shadow->reader : *redis_reply_reader(s);
            sh->discard_open = 1;
        }
        wt->s = NULL;
    }
    leg->mux = NULL;
    leg->owed = 0;
    if (shadow)
        s->shadow->reply_open = 0;
    else
        s->reply_open = 0;
}

size_t
redis_pool_backlog(const struct redis_session *s, enum redis_role role)
{
    const struct redis_leg *leg = role == REDIS_ROLE_SHADOW ? &s->shadow->leg : &s->leg;
    return leg->mux != NULL ? evbuffer_get_length(leg->mux->conn.out) : 0;
}

int
redis_pool_writes_owed(struct worker *w, const struct rt_listener *l)
{
    struct redis_pool *p = w->protocol_state[CONF_PROTO_REDIS];
    const struct rt_backend *mirrored =
        l->shadow != NULL && control_roles_swapped(l->metric_slot) ? l->primary : l->shadow;
    if (p == NULL || mirrored == NULL)
        return 0;
    for (const struct redis_shared *sh = p->conns; sh; sh = sh->next) {
        /* by slot: a reload gives the same backend a new struct */
        if (sh->role != REDIS_ROLE_SHADOW ||
            (sh->be != mirrored && sh->be->metric_slot != mirrored->metric_slot))
            continue;
        for (uint32_t i = 0; i < sh->len; i++) {
            const struct shared_wait *wt = ring_at(sh, i);
            if (wt->s == NULL && wt->writes)
                return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* Events.                                                             */

/* Write what the sessions sent; -1 when the connection failed (and is failed). */
static int
shared_flush(struct redis_shared *sh)
{
    if (sh->connecting || sh->failed)
        return 0;
    size_t before = evbuffer_get_length(sh->conn.out);
    if (conn_flush(&sh->conn) == CONN_ERROR) {
        shared_fail(sh, "ERR tandem: lost the connection to the backend", REDIS_SHARED_LOST);
        return -1;
    }
    unsent_gone(sh, before - evbuffer_get_length(sh->conn.out));
    return 0;
}

/* Replies of a session that left: framed and dropped.  0 on, 1 need more, -1 broken. */
static int
discard_reply(struct redis_shared *sh, struct shared_wait *wt)
{
    struct evbuffer *in = sh->conn.in;
    struct evbuffer_iovec v;
    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
        return 1;
    if (!sh->discard_open) {
        resp_reader_init(&sh->discard, RESP_DIGEST_NONE);
        sh->discard_open = 1;
    }
    size_t used = 0;
    struct resp_reply_info info;
    const char *err = NULL;
    enum resp_status st = resp_reader_feed(&sh->discard, v.iov_base, v.iov_len, &used, &info, &err);
    if (st == RESP_ERROR)
        return -1;
    evbuffer_drain(in, used);
    if (st == RESP_OK) {
        sh->discard_open = 0;
        if (--wt->replies == 0)
            ring_pop(sh);
    }
    return 0;
}

/*
 * Hand what arrived to whoever waits for it, in order: each session's own
 * reader takes its replies (and streams a partial one to its client), then
 * it is settled.  Stops when the bytes run out or the connection broke.
 */
static void
shared_deliver(struct redis_shared *sh)
{
    while (!sh->failed && sh->len > 0 && evbuffer_get_length(sh->conn.in) > 0) {
        struct shared_wait *wt = ring_at(sh, 0);
        struct redis_session *s = wt->s;
        if (s == NULL) {
            int rc = discard_reply(sh, wt);
            if (rc < 0)
                shared_fail(sh, "ERR tandem: the backend sent an invalid reply", REDIS_SHARED_LOST);
            if (rc != 0)
                return;
            continue;
        }
        uint32_t owed = wt->replies, left = owed;
        int rc = sh->role == REDIS_ROLE_SHADOW ? redis_shadow_shared_input(s, sh->conn.in, &left)
                                               : redis_session_shared_input(s, sh->conn.in, &left);
        /*
         * Meanwhile s may have sent more (the ring grew, and may have added
         * them to this very wait) or left (the wait is nobody's): the head
         * is still this wait, less what s took.
         */
        wt = ring_at(sh, 0);
        wt->replies -= owed - left;
        if (wt->replies == 0)
            ring_pop(sh);
        /*
         * The primary's replies went to the client: the session's event
         * ends (and may free s: its waits are nobody's then).  The shadow's
         * are the session's business alone, as on its own connection,
         * whose handler never settles (session_shadow_progress does).
         */
        if (sh->role == REDIS_ROLE_PRIMARY)
            redis_session_shared_settle(s);
        if (rc < 0) {
            shared_fail(sh, "ERR tandem: the backend sent an invalid reply", REDIS_SHARED_LOST);
            return;
        }
    }
    if (!sh->failed && sh->len == 0 && evbuffer_get_length(sh->conn.in) > 0)
        shared_fail(sh, "ERR tandem: the backend sent a reply to no request", REDIS_SHARED_LOST);
}

static void
shared_connected(struct redis_shared *sh)
{
    int err = session_connect_result(&sh->conn);
    evtimer_del(&sh->deadline);
    if (err != 0) {
        char msg[512];
        snprintf(msg, sizeof(msg), "ERR tandem: could not connect to backend \"%s\" at %s: %s",
                 sh->be->conf->name, sh->be->addr_text, strerror(err));
        count_backend(sh, METRIC_B_CONNECT_FAILURES, 1);
        shared_fail(sh, msg, REDIS_SHARED_UNREACHABLE);
        return;
    }
    sh->connecting = 0;
    count_backend(sh, METRIC_B_SERVER_OPENED, 1);
    conn_want_read(&sh->conn, 1);
    deadline_watch(sh);
}

static void
on_shared(evutil_socket_t fd, short what, void *arg)
{
    struct redis_shared *sh = arg;
    struct worker *w = sh->pool->w;
    (void)fd;
    sh->busy = 1;
    if (sh->connecting) {
        shared_connected(sh);
        what = EV_WRITE; /* write what waited for the connect */
    }
    if (!sh->failed && (what & EV_READ)) {
        size_t n = 0;
        enum conn_io io = conn_read(&sh->conn, w->scratch, sizeof(w->scratch), &n);
        if (io == CONN_OK) {
            count_backend(sh, METRIC_B_BACKEND_BYTES_RECEIVED, n);
            if (sh->role == REDIS_ROLE_SHADOW && sh->deadline_armed)
                sh->progress_ns = session_now_ns();
        }
        shared_deliver(sh);
        if (!sh->failed && (io == CONN_EOF || io == CONN_ERROR))
            shared_fail(sh,
                        io == CONN_EOF ? "ERR tandem: the backend closed the connection"
                                       : "ERR tandem: lost the connection to the backend",
                        REDIS_SHARED_LOST);
    }
    if (!sh->failed && (what & EV_WRITE))
        shared_flush(sh);
    sh->busy = 0;
    if (sh->failed)
        shared_free(sh);
}

/* Every command sent during the loop turn leaves in one write. */
static void
on_flush(evutil_socket_t fd, short what, void *arg)
{
    struct redis_shared *sh = arg;
    (void)fd;
    (void)what;
    sh->flush_armed = 0;
    sh->busy = 1;
    shared_flush(sh);
    sh->busy = 0;
    if (sh->failed)
        shared_free(sh);
}

/*
 * The shadow role, connected: the deadline event watches the head's wait
 * (the replies come in order, so nothing after it can be answered before
 * it).  It times out when neither it was sent nor any bytes arrived within
 * its sender's mirror timeout: a merged wait (a pipeline) answered reply
 * by reply stays alive, a shadow that stopped answering does not.  (Each
 * session's mirror still times each of its commands: mirror_tick.)  Armed
 * when a wait arrives while none is watched; re-armed at its firing for
 * the head of then.
 */
static uint64_t
head_deadline(const struct redis_shared *sh)
{
    const struct shared_wait *wt = ring_at(sh, 0);
    uint64_t since = wt->sent_ns > sh->progress_ns ? wt->sent_ns : sh->progress_ns;
    return since + (uint64_t)wt->timeout_ms * 1000000ull;
}

static void
deadline_watch(struct redis_shared *sh)
{
    if (sh->role != REDIS_ROLE_SHADOW || sh->connecting || sh->deadline_armed || sh->len == 0)
        return;
    uint64_t now = session_now_ns(), at = head_deadline(sh);
    uint64_t us = at > now ? (at - now) / 1000 + 1 : 0;
    struct timeval tv = {.tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000)};
    sh->deadline_armed = 1;
    evtimer_add(&sh->deadline, &tv);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct redis_shared *sh = arg;
    char msg[512];
    (void)fd;
    (void)what;
    if (!sh->connecting) {
        sh->deadline_armed = 0;
        if (sh->len > 0 && head_deadline(sh) <= session_now_ns()) {
            shared_fail(sh, "no answer within the shadow timeout", REDIS_SHARED_TIMEOUT);
            return; /* not busy: freed here */
        }
        deadline_watch(sh);
        return;
    }
    snprintf(msg, sizeof(msg), "ERR tandem: could not connect to backend \"%s\" at %s: timeout",
             sh->be->conf->name, sh->be->addr_text);
    count_backend(sh, METRIC_B_CONNECT_FAILURES, 1);
    shared_fail(sh, msg, REDIS_SHARED_UNREACHABLE); /* not busy: freed here */
}
