/*
 * fence.c - statements on a backend for a fleet's fence (see fence.h).
 */
#include "control/fence.h"

#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct fence_job {
    struct event_base *base;
    struct event *ev;     /* the connection's socket, or the first step (fd -1) */
    PGconn *pq;
    char (*stmts)[CONF_STATEMENT_MAX];
    size_t n, next;       /* next: the statement to send, or +1 while one runs */
    int connected, running;
    uint64_t deadline_ms;
    void (*done)(void *arg, int ok, const char *err);
    void *arg;
};

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
job_free(struct fence_job *j)
{
    if (j->ev)
        event_free(j->ev);
    if (j->pq)
        PQfinish(j->pq);
    free(j->stmts);
    free(j);
}

/* finish - the one way out: done once, then everything freed. */
static void
finish(struct fence_job *j, int ok, const char *err)
{
    void (*done)(void *, int, const char *) = j->done;
    void *arg = j->arg;
    char why[512];
    snprintf(why, sizeof(why), "%s", err ? err : "");
    why[strcspn(why, "\n")] = '\0';
    job_free(j);
    done(arg, ok, ok ? NULL : why);
}

static void on_event(evutil_socket_t fd, short what, void *arg);

static void
wait_for(struct fence_job *j, short what)
{
    uint64_t now = mono_ms();
    uint64_t left = j->deadline_ms > now ? j->deadline_ms - now : 0;
    struct timeval tv = {.tv_sec = (time_t)(left / 1000),
                         .tv_usec = (suseconds_t)(left % 1000) * 1000};
    if (j->ev)
        event_free(j->ev);
    j->ev = event_new(j->base, PQsocket(j->pq), what, on_event, j);
    if (j->ev == NULL) {
        finish(j, 0, "out of memory");
        return;
    }
    event_add(j->ev, &tv);
}

static void
step(struct fence_job *j)
{
    char why[600];
    if (!j->connected) {
        switch (PQconnectPoll(j->pq)) {
        case PGRES_POLLING_READING:
            wait_for(j, EV_READ);
            return;
        case PGRES_POLLING_WRITING:
            wait_for(j, EV_WRITE);
            return;
        case PGRES_POLLING_OK:
            j->connected = 1;
            if (PQsetnonblocking(j->pq, 1) != 0) {
                finish(j, 0, PQerrorMessage(j->pq));
                return;
            }
            break;
        default:
            snprintf(why, sizeof(why), "cannot log in: %s", PQerrorMessage(j->pq));
            finish(j, 0, why);
            return;
        }
    }
    for (;;) {
        if (j->running) {
            if (!PQconsumeInput(j->pq)) {
                snprintf(why, sizeof(why), "statement %zu: %s", j->next, PQerrorMessage(j->pq));
                finish(j, 0, why);
                return;
            }
            if (PQisBusy(j->pq)) {
                wait_for(j, EV_READ);
                return;
            }
            int failed = 0;
            PGresult *res;
            while ((res = PQgetResult(j->pq)) != NULL) {
                ExecStatusType st = PQresultStatus(res);
                if (!failed && st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
                    snprintf(why, sizeof(why), "statement %zu: %s", j->next,
                             PQresultErrorMessage(res));
                    failed = 1;
                }
                PQclear(res);
            }
            if (failed) {
                finish(j, 0, why);
                return;
            }
            j->running = 0;
        }
        if (j->next == j->n) {
            finish(j, 1, NULL);
            return;
        }
        if (!PQsendQuery(j->pq, j->stmts[j->next])) {
            snprintf(why, sizeof(why), "statement %zu: %s", j->next + 1, PQerrorMessage(j->pq));
            finish(j, 0, why);
            return;
        }
        j->next++;
        j->running = 1;
        if (PQflush(j->pq) == 1) {
            wait_for(j, EV_READ | EV_WRITE);
            return;
        }
    }
}

static void
on_event(evutil_socket_t fd, short what, void *arg)
{
    struct fence_job *j = arg;
    (void)fd;
    if (what & EV_TIMEOUT) {
        finish(j, 0, j->connected ? "no answer in time" : "no login in time");
        return;
    }
    if (j->connected && j->running && PQflush(j->pq) == 1) {
        wait_for(j, EV_READ | EV_WRITE);
        return;
    }
    step(j);
}

struct fence_job *
fence_run(struct event_base *base, const struct rt_backend *b,
          const char (*stmts)[CONF_STATEMENT_MAX], size_t n, uint32_t timeout_ms,
          void (*done)(void *arg, int ok, const char *err), void *arg)
{
    struct fence_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->stmts = calloc(n ? n : 1, sizeof(*j->stmts));
    if (j->stmts == NULL) {
        free(j);
        return NULL;
    }
    memcpy(j->stmts, stmts, n * sizeof(*j->stmts));
    j->n = n;
    j->base = base;
    j->done = done;
    j->arg = arg;
    j->deadline_ms = mono_ms() + timeout_ms;
    /* as the backend's settings say: verify-full checks the server before it sees the password */
    struct conf_login login;
    const char *keys[CONF_LOGIN_PARAMS + 1], *vals[CONF_LOGIN_PARAMS + 1];
    runtime_login(b, &login);
    int k = conf_login_params(&login, "postgres", "tandem fence", keys, vals);
    keys[k] = vals[k] = NULL;
    j->pq = PQconnectStartParams(keys, vals, 0); /* libpq copies what it needs */
    conf_login_wipe(&login);
    /* the first step runs from the loop, so done is never called from inside fence_run */
    j->ev = event_new(base, -1, 0, on_event, j);
    if (j->pq == NULL || j->ev == NULL) {
        job_free(j);
        return NULL;
    }
    event_active(j->ev, 0, 0);
    return j;
}

void
fence_cancel(struct fence_job *j)
{
    if (j != NULL)
        job_free(j);
}
