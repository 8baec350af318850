/*
 * pg_auth_query.c - a listener's auth_query: the secret of a user missing
 * from its auth_file is fetched from the primary, as PgBouncer's auth_user
 * + auth_query do, and kept for auth_query_refresh.  The query runs on
 * the backend the session will log in to (after a cutover, the new
 * primary), as that backend's own user.
 *
 *   session (startup, user u)      this worker                     primary
 *   pg_authq_lookup(u) -----> cache hit (fresh): the secret, or "none"
 *                             else join u's fetch, or start one:
 *                               libpq login as the backend's user ------->
 *                               PQsendQueryParams(auth_query, $1 = u) --->
 *                             <------------------------------- a row, or none
 *   pg_session_auth_found <--- every waiter, from this event
 *
 * Everything runs on the worker's event loop without blocking (libpq's
 * non-blocking connect and query), so no other client waits for a fetch.
 * The cache and the fetches are the worker's own: no lock.  A fetch that
 * fails (tandem's own login refused, a timeout, a query error) is cached
 * by nobody: each waiter gets the error, the next login tries again.
 */
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/runtime.h"
#include "engine/worker.h"
#include "metrics/log.h"
#include "pg/pg_session_int.h"
#include "protocol/pgw.h"
#include "protocol/scram.h"

/* Users remembered per worker (found or not); the oldest goes first beyond it. */
#define AUTHQ_CACHE_MAX 4096

struct authq_entry {
    struct authq_entry *next;
    char listener[CONF_NAME_MAX];
    char user[64];
    int found;
    struct pgauth_secret secret;
    uint64_t fetched_ns;
};

struct authq_fetch {
    struct authq_fetch *next;
    struct authq_state *st;
    char listener[CONF_NAME_MAX];
    char user[64];
    char dbname[64];
    char query[CONF_PATH_MAX];
    struct runtime *rt; /* a reference: be stays valid across a reload */
    const struct rt_backend *be;
    uint32_t timeout_ms;
    PGconn *pq;
    int sent; /* the query went out: reading its result */
    struct event ev;
    struct event timer;
    int ev_added;
    struct pg_session *waiters; /* linked by authq_next */
};

struct authq_state {
    struct worker_job job; /* first: the worker's cancel frees everything */
    struct worker *w;
    struct authq_entry *cache;
    size_t ncache;
    struct authq_fetch *fetches;
};

static void fetch_step(struct authq_fetch *f);

static void
count_connect_failure(struct authq_fetch *f)
{
    int slot = f->be->metric_slot;
    if (slot >= 0 && slot < METRIC_MAX_BACKENDS)
        metric_add(&f->st->w->metrics->backend[slot][METRIC_B_CONNECT_FAILURES], 1);
}

static void
state_cancel(struct worker_job *job)
{
    struct authq_state *st = (struct authq_state *)job;
    worker_job_remove(st->w, job);
    while (st->fetches) {
        struct authq_fetch *f = st->fetches;
        st->fetches = f->next;
        if (f->ev_added)
            event_del(&f->ev);
        event_del(&f->timer);
        for (struct pg_session *s = f->waiters; s; s = s->authq_next)
            s->authq_wait = NULL;
        if (f->pq)
            PQfinish(f->pq);
        runtime_unref(f->rt);
        free(f);
    }
    while (st->cache) {
        struct authq_entry *e = st->cache;
        st->cache = e->next;
        explicit_bzero(e, sizeof(*e));
        free(e);
    }
    st->w->protocol_state[CONF_PROTO_POSTGRES] = NULL;
    free(st);
}

static struct authq_state *
state_of(struct worker *w)
{
    struct authq_state *st = w->protocol_state[CONF_PROTO_POSTGRES];
    if (st != NULL)
        return st;
    if ((st = calloc(1, sizeof(*st))) == NULL)
        return NULL;
    st->w = w;
    st->job.cancel = state_cancel;
    worker_job_add(w, &st->job);
    w->protocol_state[CONF_PROTO_POSTGRES] = st;
    return st;
}

static struct authq_entry *
cache_find(struct authq_state *st, const char *listener, const char *user)
{
    for (struct authq_entry *e = st->cache; e; e = e->next)
        if (strcmp(e->user, user) == 0 && strcmp(e->listener, listener) == 0)
            return e;
    return NULL;
}

/* Remember u's secret (or its absence); new entries go first, the last one past the cap goes. */
static void
cache_put(struct authq_state *st, const struct authq_fetch *f, int found,
          const struct pgauth_secret *sec)
{
    struct authq_entry *e = cache_find(st, f->listener, f->user);
    if (e == NULL) {
        if ((e = calloc(1, sizeof(*e))) == NULL)
            return;
        snprintf(e->listener, sizeof(e->listener), "%s", f->listener);
        snprintf(e->user, sizeof(e->user), "%s", f->user);
        e->next = st->cache;
        st->cache = e;
        if (++st->ncache > AUTHQ_CACHE_MAX) {
            struct authq_entry **pp = &st->cache;
            while ((*pp)->next)
                pp = &(*pp)->next;
            explicit_bzero(*pp, sizeof(**pp));
            free(*pp);
            *pp = NULL;
            st->ncache--;
        }
    }
    e->found = found;
    if (found)
        e->secret = *sec;
    else
        explicit_bzero(&e->secret, sizeof(e->secret));
    e->fetched_ns = session_now_ns();
}

/* The fetch is over: every waiter hears, the fetch goes. */
static void
fetch_end(struct authq_fetch *f, int rc, const struct pgauth_secret *sec, const char *why)
{
    struct authq_state *st = f->st;
    if (rc >= 0)
        cache_put(st, f, rc, sec);
    for (struct authq_fetch **pp = &st->fetches; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            break;
        }
    if (f->ev_added)
        event_del(&f->ev);
    event_del(&f->timer);
    if (f->pq) {
        PQsetnonblocking(f->pq, 1); /* PQfinish's Terminate never waits */
        PQfinish(f->pq);
    }
    struct pg_session *s = f->waiters;
    char msg[300];
    if (rc < 0)
        snprintf(msg, sizeof(msg),
                 "tandem cannot look up user \"%s\": auth_query on backend "
                 "\"%s\" failed: %s",
                 f->user, f->be->conf->name, why);
    runtime_unref(f->rt);
    free(f);
    while (s) {
        struct pg_session *next = s->authq_next;
        s->authq_wait = NULL;
        s->authq_next = NULL;
        pg_session_auth_found(s, rc, sec, rc < 0 ? msg : NULL);
        s = next;
    }
}

/* The first line of libpq's message (it never holds the password). */
static void
fail_pq(struct authq_fetch *f, const char *what)
{
    char why[256];
    const char *m = f->pq ? PQerrorMessage(f->pq) : "out of memory";
    snprintf(why, sizeof(why), "%s: %.*s", what, (int)strcspn(m, "\n"), m);
    fetch_end(f, -1, NULL, why);
}

/* The query's result: 1 a secret, 0 no such user (no row, or no password), -1 an error. */
static int
read_result(struct authq_fetch *f, struct pgauth_secret *sec, char *why, size_t cap)
{
    int rc = -1;
    PGresult *r;
    snprintf(why, cap, "no result");
    while ((r = PQgetResult(f->pq)) != NULL) {
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            const char *m = PQresultErrorMessage(r);
            snprintf(why, cap, "the query failed: %.*s", (int)strcspn(m, "\n"), m);
            rc = -1;
        } else if (PQnfields(r) != 2) {
            snprintf(why, cap, "the query must return two columns (user name, secret)");
            rc = -1;
        } else if (PQntuples(r) == 0 || PQgetisnull(r, 0, 1)) {
            rc = 0;
        } else {
            const char *v = PQgetvalue(r, 0, 1);
            rc = pgauth_secret_parse(v, strlen(v), sec) == 0 ? 1 : 0;
            if (rc == 0)
                snprintf(why, cap, "the secret is no SCRAM verifier, md5 hash or password");
        }
        PQclear(r);
    }
    return rc;
}

static void
on_fetch_event(evutil_socket_t fd, short what, void *arg)
{
    struct authq_fetch *f = arg;
    (void)fd;
    (void)what;
    f->ev_added = 0;
    fetch_step(f);
}

/* The deadline; also a login libpq could not even start (from this event, not the caller's). */
static void
on_fetch_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct authq_fetch *f = arg;
    (void)fd, (void)what;
    if (f->pq == NULL || PQstatus(f->pq) == CONNECTION_BAD) {
        count_connect_failure(f);
        fail_pq(f, "tandem's login failed");
        return;
    }
    fetch_end(f, -1, NULL, "timeout");
}

static void
wait_for(struct authq_fetch *f, short what)
{
    event_assign(&f->ev, f->st->w->base, PQsocket(f->pq), what, on_fetch_event, f);
    event_add(&f->ev, NULL);
    f->ev_added = 1;
}

/* The query's turn: send it, then read until its result is whole. */
static void
query_step(struct authq_fetch *f)
{
    if (!f->sent) {
        const char *params[1] = {f->user};
        if (PQsetnonblocking(f->pq, 1) != 0 ||
            PQsendQueryParams(f->pq, f->query, 1, NULL, params, NULL, NULL, 0) != 1) {
            fail_pq(f, "cannot send the query");
            return;
        }
        f->sent = 1;
    }
    int fl = PQflush(f->pq);
    if (fl < 0 || PQconsumeInput(f->pq) != 1) {
        fail_pq(f, "lost the connection");
        return;
    }
    if (fl > 0 || PQisBusy(f->pq)) {
        wait_for(f, fl > 0 ? EV_READ | EV_WRITE : EV_READ);
        return;
    }
    struct pgauth_secret sec;
    char why[256];
    int rc = read_result(f, &sec, why, sizeof(why));
    fetch_end(f, rc, rc == 1 ? &sec : NULL, why);
    explicit_bzero(&sec, sizeof(sec));
}

static void
fetch_step(struct authq_fetch *f)
{
    if (f->sent || PQstatus(f->pq) == CONNECTION_OK) {
        query_step(f);
        return;
    }
    switch (PQconnectPoll(f->pq)) {
    case PGRES_POLLING_OK:
        query_step(f);
        return;
    case PGRES_POLLING_READING:
        wait_for(f, EV_READ);
        return;
    case PGRES_POLLING_WRITING:
        wait_for(f, EV_WRITE);
        return;
    default:
        count_connect_failure(f);
        fail_pq(f, "tandem's login failed");
        return;
    }
}

static struct authq_fetch *
fetch_start(struct authq_state *st, struct pg_session *s, const char *user, const char *db)
{
    const struct rt_listener *l = s->base.lis;
    struct authq_fetch *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->st = st;
    f->rt = s->base.rt;
    runtime_ref(f->rt);
    f->be = s->base.be; /* the backend answering now: the primary, or after a cutover the new one */
    snprintf(f->listener, sizeof(f->listener), "%s", l->conf->name);
    snprintf(f->user, sizeof(f->user), "%s", user);
    snprintf(f->dbname, sizeof(f->dbname), "%s", db);
    snprintf(f->query, sizeof(f->query), "%s", l->conf->auth_query);
    f->pq = pg_login_start_own(s, f->be, f->dbname);
    f->next = st->fetches;
    st->fetches = f;
    uint32_t ms = s->base.rt->conf->limits.connect_timeout_ms * 2;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_assign(&f->timer, st->w->base, on_fetch_timeout, f);
    evtimer_add(&f->timer, &tv);
    return f;
}

int
pg_authq_lookup(struct pg_session *s, const char *user, const char *db, struct pgauth_secret *sec)
{
    const struct rt_listener *l = s->base.lis;
    struct authq_state *st = state_of(s->base.w);
    if (st == NULL)
        return -1;
    struct authq_entry *e = cache_find(st, l->conf->name, user);
    uint64_t max_age = (uint64_t)l->conf->auth_query_refresh_ms * 1000000ull;
    if (e != NULL && session_now_ns() - e->fetched_ns < max_age) {
        if (e->found)
            *sec = e->secret;
        return e->found;
    }
    struct authq_fetch *f;
    for (f = st->fetches; f; f = f->next)
        if (strcmp(f->user, user) == 0 && strcmp(f->listener, l->conf->name) == 0)
            break;
    int fresh = f == NULL;
    if (fresh && (f = fetch_start(st, s, user, db)) == NULL)
        return -1;
    s->authq_wait = f;
    s->authq_next = f->waiters;
    f->waiters = s;
    /* the fetch moves on its own events only: no waiter hears back inside this call */
    if (fresh) {
        if (f->pq == NULL || PQstatus(f->pq) == CONNECTION_BAD)
            event_active(&f->timer, EV_TIMEOUT, 1);
        else
            wait_for(f, EV_WRITE); /* libpq: poll as if PQconnectPoll said WRITING */
    }
    return 2;
}

void
pg_authq_forget(struct pg_session *s)
{
    struct authq_fetch *f = s->authq_wait;
    if (f == NULL)
        return;
    for (struct pg_session **pp = &f->waiters; *pp; pp = &(*pp)->authq_next)
        if (*pp == s) {
            *pp = s->authq_next;
            break;
        }
    s->authq_wait = NULL;
    s->authq_next = NULL;
}
