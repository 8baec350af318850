/*
 * fence_redis.c - commands on a Redis backend for a fleet's fence (see fence_redis.h).
 *
 *   main thread                          the job's thread
 *   fence_redis_run ── pthread ────────► redis_link_open (TLS as configured)
 *        │ deadline armed                AUTH, command 1 .. n (each checks
 *        │                               `abandoned` before it is sent)
 *   on_event ◄── event_active ────────── result (unless abandoned)
 *        └─ done(arg, ok, why); freed
 *
 * A job the deadline or fence_redis_cancel() abandons sends nothing more:
 * its thread sees `abandoned` before each command, frees the job itself
 * and never touches the event again.  `mu` orders the two sides.
 */
#include "control/fence_redis.h"

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify/redis_link.h"

struct fence_redis_job {
    pthread_mutex_t mu;
    struct event *ev;    /* the deadline; made active by the thread with its result */
    struct conf_login login; /* tandem's own, TLS as the backend's settings say */
    char (*cmds)[CONF_STATEMENT_MAX];
    size_t n;
    uint32_t timeout_ms;
    int finished;        /* the thread's result is in ok/why */
    int abandoned;       /* the main thread gave up on it: the thread frees the job */
    int ok;
    char why[512];
    void (*done)(void *arg, int ok, const char *err);
    void *arg;
};

static void
job_free(struct fence_redis_job *j)
{
    conf_login_wipe(&j->login);
    pthread_mutex_destroy(&j->mu);
    free(j->cmds);
    free(j);
}

/* abandoned - asked by the thread before each command: the main thread gave up. */
static int
abandoned(struct fence_redis_job *j)
{
    pthread_mutex_lock(&j->mu);
    int gone = j->abandoned;
    pthread_mutex_unlock(&j->mu);
    return gone;
}

/* One command (what: "login", "command 2"); 0, or -1 with why. */
static int
run_one(struct fence_redis_job *j, struct redis_link *k, int argc, const char **argv,
        const size_t *lens, const char *what)
{
    if (abandoned(j))
        return -1;
    redisReply *r = redis_link_command_argv(k, argc, argv, lens);
    if (r == NULL)
        snprintf(j->why, sizeof(j->why), "%s: %s", what, redis_link_error(k));
    else if (r->type == REDIS_REPLY_ERROR)
        snprintf(j->why, sizeof(j->why), "%s: %.*s", what, (int)r->len, r->str);
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    freeReplyObject(r);
    return ok ? 0 : -1;
}

/* Command line i, split as redis-cli does; 0, or -1 with why. */
static int
run_line(struct fence_redis_job *j, struct redis_link *k, size_t i)
{
    char what[32];
    int argc = 0;
    size_t lens[CONF_STATEMENT_MAX / 2 + 1];
    sds *argv = sdssplitargs(j->cmds[i], &argc);

    snprintf(what, sizeof(what), "command %zu", i + 1);
    if (argv == NULL || argc == 0 || (size_t)argc > sizeof(lens) / sizeof(lens[0])) {
        /* tandem -t refuses these: a line that changed under a reload */
        snprintf(j->why, sizeof(j->why), "%s: unbalanced quotes, empty or too many arguments",
                 what);
        if (argv)
            sdsfreesplitres(argv, argc);
        return -1;
    }
    for (int a = 0; a < argc; a++)
        lens[a] = sdslen(argv[a]);
    int rc = run_one(j, k, argc, (const char **)argv, lens, what);
    sdsfreesplitres(argv, argc);
    return rc;
}

/* The login (when the backend has a password), then every command in order. */
static int
run_all(struct fence_redis_job *j)
{
    char err[300];
    struct redis_link *k = redis_link_open(&j->login, (int)j->timeout_ms, err, sizeof(err));
    if (k == NULL) {
        snprintf(j->why, sizeof(j->why), "cannot connect: %s", err);
        return -1;
    }
    int rc = 0;
    if (j->login.password[0]) {
        int with_user = j->login.user[0] != '\0';
        const char *argv[] = {"AUTH", with_user ? j->login.user : j->login.password,
                              j->login.password};
        size_t lens[] = {4, strlen(argv[1]), strlen(j->login.password)};
        rc = run_one(j, k, with_user ? 3 : 2, argv, lens, "login");
    }
    for (size_t i = 0; rc == 0 && i < j->n; i++)
        rc = run_line(j, k, i);
    redis_link_free(k);
    return rc;
}

static void *
job_main(void *arg)
{
    struct fence_redis_job *j = arg;
    int ok = run_all(j) == 0;
    j->why[strcspn(j->why, "\r\n")] = '\0';
    pthread_mutex_lock(&j->mu);
    int gone = j->abandoned;
    if (!gone) {
        j->ok = ok;
        j->finished = 1;
        event_active(j->ev, EV_TIMEOUT, 0); /* the main thread takes it from here */
    }
    pthread_mutex_unlock(&j->mu);
    if (gone)
        job_free(j);
    return NULL;
}

/*
 * give_up - the main thread stops waiting, its result (if any) copied to
 * ok/why: 1 when the thread had finished (the job is the main thread's to
 * free), 0 when it runs on and frees the job itself.
 */
static int
give_up(struct fence_redis_job *j, int *ok, char *why, size_t whylen)
{
    pthread_mutex_lock(&j->mu);
    int finished = j->finished;
    *ok = finished && j->ok;
    snprintf(why, whylen, "%s", finished ? j->why : "no answer in time");
    j->abandoned = 1;
    pthread_mutex_unlock(&j->mu);
    event_free(j->ev); /* the thread no longer touches it */
    j->ev = NULL;
    return finished;
}

static void
on_event(evutil_socket_t fd, short what, void *arg)
{
    struct fence_redis_job *j = arg;
    void (*done)(void *, int, const char *) = j->done;
    void *done_arg = j->arg;
    char why[512];
    int ok;
    (void)fd;
    (void)what;
    if (give_up(j, &ok, why, sizeof(why)))
        job_free(j);
    done(done_arg, ok, ok ? NULL : why);
}

struct fence_redis_job *
fence_redis_run(struct event_base *base, const struct rt_backend *b,
                const char (*cmds)[CONF_STATEMENT_MAX], size_t n, uint32_t timeout_ms,
                void (*done)(void *arg, int ok, const char *err), void *arg)
{
    pthread_t th;
    pthread_attr_t attr;
    if (n == 0)
        return NULL;
    struct fence_redis_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    pthread_mutex_init(&j->mu, NULL);
    j->cmds = calloc(n, sizeof(*j->cmds));
    j->ev = event_new(base, -1, 0, on_event, j);
    if (j->cmds == NULL || j->ev == NULL)
        goto out_free;
    memcpy(j->cmds, cmds, n * sizeof(*j->cmds));
    j->n = n;
    j->timeout_ms = timeout_ms;
    j->done = done;
    j->arg = arg;
    runtime_login(b, &j->login);
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    event_add(j->ev, &tv);
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&th, &attr, job_main, j);
    pthread_attr_destroy(&attr);
    if (rc != 0)
        goto out_free;
    return j;
out_free:
    if (j->ev)
        event_free(j->ev);
    job_free(j);
    return NULL;
}

void
fence_redis_cancel(struct fence_redis_job *j)
{
    char why[8];
    int ok;
    if (j != NULL && give_up(j, &ok, why, sizeof(why)))
        job_free(j);
}
