/*
 * fence_redis.c - commands on a Redis backend for a fleet's fence (see fence_redis.h).
 */
#include "control/fence_redis.h"

#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fence_redis_job {
    redisAsyncContext *ac;
    struct event *ev; /* the deadline; made active at once for an early failure */
    char user[CONF_NAME_MAX], password[256];
    char (*cmds)[CONF_STATEMENT_MAX];
    size_t n, next;  /* next: the command whose reply is awaited */
    int authing;     /* the AUTH's reply is awaited */
    char early[256]; /* why the connection could not even start */
    void (*done)(void *arg, int ok, const char *err);
    void *arg;
};

static void
job_free(struct fence_redis_job *j)
{
    redisAsyncContext *ac = j->ac;
    j->ac = NULL;
    if (ac != NULL) {
        /* pending callbacks run now (or after the current one) and see j->ac NULL */
        ac->data = NULL;
        redisAsyncFree(ac);
    }
    if (j->ev)
        event_free(j->ev);
    OPENSSL_cleanse(j->password, sizeof(j->password));
    free(j->cmds);
    free(j);
}

/* finish - the one way out: done once, then everything freed. */
static void
finish(struct fence_redis_job *j, int ok, const char *err)
{
    void (*done)(void *, int, const char *) = j->done;
    void *arg = j->arg;
    char why[512];
    snprintf(why, sizeof(why), "%s", err ? err : "");
    why[strcspn(why, "\r\n")] = '\0';
    job_free(j);
    done(arg, ok, ok ? NULL : why);
}

static void on_reply(redisAsyncContext *ac, void *reply, void *priv);

/*
 * fail_later - end the run from the loop: hiredis may not be inside a
 * callback that defers freeing the connection (its connect callback is not).
 */
static void
fail_later(struct fence_redis_job *j, const char *why)
{
    snprintf(j->early, sizeof(j->early), "%s", why);
    event_active(j->ev, EV_TIMEOUT, 0);
}

/* send_next - AUTH first (when there is a password), then the next command; all answered: done. */
static void
send_next(struct fence_redis_job *j)
{
    char why[600];
    if (j->next == j->n) {
        finish(j, 1, NULL); /* from on_reply only: fence_redis_run refuses n == 0 */
        return;
    }
    int argc = 0;
    sds *argv = sdssplitargs(j->cmds[j->next], &argc);
    if (argv == NULL || argc == 0) {
        /* tandem -t refuses these: a line that changed under a reload */
        if (argv)
            sdsfreesplitres(argv, argc);
        snprintf(why, sizeof(why), "command %zu: unbalanced quotes or empty", j->next + 1);
        fail_later(j, why);
        return;
    }
    size_t lens[CONF_STATEMENT_MAX / 2 + 1];
    if ((size_t)argc > sizeof(lens) / sizeof(lens[0])) {
        sdsfreesplitres(argv, argc);
        snprintf(why, sizeof(why), "command %zu: too many arguments", j->next + 1);
        fail_later(j, why);
        return;
    }
    for (int i = 0; i < argc; i++)
        lens[i] = sdslen(argv[i]);
    int rc = redisAsyncCommandArgv(j->ac, on_reply, j, argc, (const char **)argv, lens);
    sdsfreesplitres(argv, argc);
    if (rc != REDIS_OK) {
        snprintf(why, sizeof(why), "command %zu: not sent: %s", j->next + 1, j->ac->errstr);
        fail_later(j, why);
    }
}

static void
on_reply(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fence_redis_job *j = priv;
    const redisReply *r = reply;
    char why[600], what[32];
    if (j->ac == NULL)
        return; /* being freed */
    if (j->authing)
        snprintf(what, sizeof(what), "login");
    else
        snprintf(what, sizeof(what), "command %zu", j->next + 1);
    if (r == NULL) {
        snprintf(why, sizeof(why), "%s: %s", what, ac->errstr[0] ? ac->errstr : "connection lost");
        finish(j, 0, why);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(why, sizeof(why), "%s: %.*s", what, (int)r->len, r->str);
        finish(j, 0, why);
        return;
    }
    if (j->authing)
        j->authing = 0;
    else
        j->next++;
    send_next(j);
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct fence_redis_job *j = ac->data;
    char why[600];
    if (j == NULL)
        return;
    if (status != REDIS_OK) {
        j->ac = NULL; /* hiredis frees it after this callback */
        snprintf(why, sizeof(why), "cannot connect: %s", ac->errstr);
        finish(j, 0, why);
        return;
    }
    if (j->password[0]) {
        const char *argv[] = {"AUTH", j->user, j->password};
        int with_user = j->user[0] != '\0';
        size_t lens[] = {4, strlen(j->user), strlen(j->password)};
        j->authing = 1;
        if (redisAsyncCommandArgv(j->ac, on_reply, j, with_user ? 3 : 2,
                                  with_user ? argv : (const char *[]){"AUTH", j->password},
                                  with_user ? lens : (size_t[]){4, lens[2]}) != REDIS_OK)
            fail_later(j, "login: not sent");
        return;
    }
    send_next(j);
}

static void
on_event(evutil_socket_t fd, short what, void *arg)
{
    struct fence_redis_job *j = arg;
    (void)fd;
    (void)what;
    finish(j, 0, j->early[0] ? j->early : "no answer in time");
}

struct fence_redis_job *
fence_redis_run(struct event_base *base, const struct rt_backend *b,
                const char (*cmds)[CONF_STATEMENT_MAX], size_t n, uint32_t timeout_ms,
                void (*done)(void *arg, int ok, const char *err), void *arg)
{
    if (n == 0)
        return NULL;
    struct fence_redis_job *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return NULL;
    j->cmds = calloc(n, sizeof(*j->cmds));
    j->ev = event_new(base, -1, 0, on_event, j);
    if (j->cmds == NULL || j->ev == NULL) {
        job_free(j);
        return NULL;
    }
    memcpy(j->cmds, cmds, n * sizeof(*j->cmds));
    j->n = n;
    j->done = done;
    j->arg = arg;
    snprintf(j->user, sizeof(j->user), "%s", b->conf->user);
    snprintf(j->password, sizeof(j->password), "%s", b->password);
    struct timeval tv = {.tv_sec = (time_t)(timeout_ms / 1000),
                         .tv_usec = (suseconds_t)(timeout_ms % 1000) * 1000};
    event_add(j->ev, &tv);
    redisAsyncContext *ac = redisAsyncConnect(b->conf->addr.host, b->conf->addr.port);
    if (ac == NULL || ac->err) {
        /* done later, from the loop, as the contract says */
        snprintf(j->early, sizeof(j->early), "cannot connect: %s",
                 ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        event_active(j->ev, EV_TIMEOUT, 0);
        return j;
    }
    j->ac = ac;
    ac->data = j;
    if (redisLibeventAttach(ac, base) != REDIS_OK ||
        redisAsyncSetConnectCallback(ac, on_connect) != REDIS_OK) {
        fail_later(j, "cannot connect: event setup failed");
    }
    return j;
}

void
fence_redis_cancel(struct fence_redis_job *j)
{
    if (j != NULL)
        job_free(j);
}
