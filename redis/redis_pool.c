/*
 * redis_pool.c - server connections shared by stateless Redis sessions
 * (see redis_pool.h).
 *
 * One struct redis_pool per worker (worker.protocol_state), a list of
 * struct redis_shared.  Each shared connection owns its socket (a struct
 * conn on the worker's base, handler on_shared) and a ring of waits:
 *
 *   ring: [A 1] [B 16] [nobody 2] [C 1]      conn.in: A's reply, B's ...
 *          ^ head: the next reply is A's
 *
 * The handler frames nothing itself while someone waits: the waiting
 * session's reader does (redis_session_shared_input).  Only replies whose
 * session left are framed here, by `discard`, and dropped.
 */
#include "redis/redis_pool.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
};

struct redis_pool;

struct redis_shared {
    struct redis_shared *next;   /* the pool's list */
    struct redis_pool *pool;
    struct runtime *rt;          /* held: be lives in it */
    const struct rt_backend *be;
    struct conn conn;
    struct event deadline;       /* the connect's */
    struct event flush_ev;       /* the write of everything sent during this loop turn */
    unsigned connecting : 1;
    unsigned flush_armed : 1;
    unsigned busy : 1;           /* inside its own handler: freed at its end */
    unsigned failed : 1;         /* out of the pool; freed when not busy */
    unsigned discard_open : 1;   /* discard is inside a reply */
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

/* ------------------------------------------------------------------ */
/* The ring of waits.                                                  */

static struct shared_wait *
ring_at(const struct redis_shared *sh, uint32_t i)
{
    return &sh->ring[(sh->head + i) & (sh->cap - 1)];
}

static int
ring_push(struct redis_shared *sh, struct redis_session *s, uint32_t replies)
{
    if (sh->len > 0) {
        struct shared_wait *tail = ring_at(sh, sh->len - 1);
        if (tail->s == s && tail->replies <= UINT32_MAX - replies) {
            tail->replies += replies; /* a pipeline: one wait */
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
    *ring_at(sh, sh->len) = (struct shared_wait){.s = s, .replies = replies};
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
 * shared_fail - the connection is lost (or never opened): it leaves the
 * pool, and every session waiting on it gets msg for each command it
 * awaits (redis_session_shared_lost), once, and closes; sessions that owe
 * nothing here are untouched.  Freed now, or at the end of its handler.
 */
static void
shared_fail(struct redis_shared *sh, const char *msg, int unreachable)
{
    struct redis_session *failed = NULL;

    if (sh->failed)
        return;
    sh->failed = 1;
    pool_unlink(sh);
    log_at(CONF_LOG_WARN, 0, NULL, "shared connection to \"%s\" at %s: %s", sh->be->conf->name,
           sh->be->addr_text, msg);
    /* each waiting session once (a session may wait in several places of the ring) */
    for (uint32_t i = 0; i < sh->len; i++) {
        struct redis_session *s = ring_at(sh, i)->s;
        if (s != NULL && s->mux == sh) {
            s->mux = NULL;
            s->mux_owed = 0;
            s->mux_next = failed;
            failed = s;
        }
    }
    sh->len = 0;
    while (failed != NULL) {
        struct redis_session *s = failed;
        failed = s->mux_next;
        s->mux_next = NULL;
        redis_session_shared_lost(s, msg, unreachable); /* settles s: not touched after */
    }
    if (!sh->busy)
        shared_free(sh);
}

/* Open a new shared connection to be for the pool.  NULL, errno set, when it cannot be. */
static struct redis_shared *
shared_open(struct redis_pool *p, struct runtime *rt, const struct rt_backend *be)
{
    struct redis_shared *sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return NULL;
    sh->pool = p;
    sh->be = be;
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
 * The connection for a session that owes no replies: of its backend's, the
 * one with the fewest waits, or a new one while the listener's server_pool
 * is not reached.  Idle connections of an older configuration close here.
 */
static struct redis_shared *
shared_pick(struct redis_session *s)
{
    struct redis_pool *p = pool_of(s->base.w);
    struct redis_shared *best = NULL;
    uint32_t n = 0;

    if (p == NULL)
        return NULL;
    for (struct redis_shared *sh = p->conns, *next; sh; sh = next) {
        next = sh->next;
        if (sh->be == s->base.be) {
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
    struct redis_shared *fresh = shared_open(p, s->base.rt, s->base.be);
    return fresh != NULL ? fresh : best;
}

int
redis_pool_send(struct redis_session *s, struct evbuffer *src, size_t n, uint32_t replies)
{
    struct redis_shared *sh = s->mux != NULL ? s->mux : shared_pick(s);
    if (sh == NULL)
        return -1;
    if (replies > 0 && ring_push(sh, s, replies) != 0) {
        errno = ENOMEM;
        return -1;
    }
    evbuffer_remove_buffer(src, sh->conn.out, n);
    if (replies > 0) {
        s->mux = sh;
        s->mux_owed += replies;
    }
    if (!sh->flush_armed && !sh->connecting) {
        sh->flush_armed = 1;
        event_active(&sh->flush_ev, EV_WRITE, 0);
    }
    return 0;
}

void
redis_pool_leave(struct redis_session *s)
{
    struct redis_shared *sh = s->mux;
    if (sh == NULL)
        return;
    for (uint32_t i = 0; i < sh->len; i++) {
        struct shared_wait *wt = ring_at(sh, i);
        if (wt->s != s)
            continue;
        if (i == 0 && s->reply_open) {
            /* it left in the middle of a reply: the pool reads the rest of it */
            sh->discard = *redis_reply_reader(s);
            sh->discard_open = 1;
        }
        wt->s = NULL;
    }
    s->mux = NULL;
    s->mux_owed = 0;
    s->reply_open = 0;
}

size_t
redis_pool_backlog(const struct redis_session *s)
{
    return s->mux != NULL ? evbuffer_get_length(s->mux->conn.out) : 0;
}

/* ------------------------------------------------------------------ */
/* Events.                                                             */

/* Write what the sessions sent; -1 when the connection failed (and is failed). */
static int
shared_flush(struct redis_shared *sh)
{
    if (sh->connecting || sh->failed)
        return 0;
    if (conn_flush(&sh->conn) == CONN_ERROR) {
        shared_fail(sh, "ERR tandem: lost the connection to the backend", 0);
        return -1;
    }
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
                shared_fail(sh, "ERR tandem: the backend sent an invalid reply", 0);
            if (rc != 0)
                return;
            continue;
        }
        uint32_t owed = wt->replies, left = owed;
        int rc = redis_session_shared_input(s, sh->conn.in, &left);
        /*
         * Meanwhile s may have sent more (the ring grew, and may have added
         * them to this very wait) or left (the wait is nobody's): the head
         * is still this wait, less what s took.
         */
        wt = ring_at(sh, 0);
        wt->replies -= owed - left;
        if (wt->replies == 0)
            ring_pop(sh);
        if (rc < 0) {
            redis_session_shared_settle(s);
            shared_fail(sh, "ERR tandem: the backend sent an invalid reply", 0);
            return;
        }
        redis_session_shared_settle(s); /* may free s: its waits are nobody's now */
    }
    if (!sh->failed && sh->len == 0 && evbuffer_get_length(sh->conn.in) > 0)
        shared_fail(sh, "ERR tandem: the backend sent a reply to no request", 0);
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
        shared_fail(sh, msg, 1);
        return;
    }
    sh->connecting = 0;
    count_backend(sh, METRIC_B_SERVER_OPENED, 1);
    conn_want_read(&sh->conn, 1);
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
        if (io == CONN_OK)
            count_backend(sh, METRIC_B_BACKEND_BYTES_RECEIVED, n);
        shared_deliver(sh);
        if (!sh->failed && (io == CONN_EOF || io == CONN_ERROR))
            shared_fail(sh,
                        io == CONN_EOF ? "ERR tandem: the backend closed the connection"
                                       : "ERR tandem: lost the connection to the backend",
                        0);
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

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct redis_shared *sh = arg;
    char msg[512];
    (void)fd;
    (void)what;
    snprintf(msg, sizeof(msg), "ERR tandem: could not connect to backend \"%s\" at %s: timeout",
             sh->be->conf->name, sh->be->addr_text);
    count_backend(sh, METRIC_B_CONNECT_FAILURES, 1);
    shared_fail(sh, msg, 1); /* not busy: freed here */
}
