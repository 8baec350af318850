/*
 * redis_recheck.c - confirm a mismatching Redis read before it is claimed:
 * run the same command again on both backends, through connections of
 * tandem's own, and compare those two replies (pg_recheck.c does the same
 * for PostgreSQL; the design is the same).
 *
 *   redis_shadow_record(): a read's replies differ ──► redis_recheck_start()
 *     budget (compare { confirm_per_second }, SHADOW_RECHECK_INFLIGHT_MAX)
 *     job: connections of its own (engine/conn.h: TLS as the backends'
 *          settings say) to the primary and the shadow on the worker's
 *          base, logged in as the session's were (AUTH, SELECT)
 *       attempt: the primary runs it ─► then the shadow ─► rediscmp
 *         match     ─► outcome transient (an ordering artefact: a write
 *                      reached one side before the other)
 *         different ─► again after a pause, RECHECK_ATTEMPTS in all
 *         still different ─► outcome mismatch, confirmed
 *       a refused connect or login, an error reply, a lost connection,
 *       the deadline ─► outcome mismatch, counted "failed": the claim
 *         stands as first observed
 *
 * The request is the client's own bytes (kept by redis_recheck_keep, at
 * most RS_RECHECK_REQUEST_MAX), sent as they are.  Only reads get here, and
 * never one whose reply differs by nature (NONDET: RANDOMKEY, SRANDMEMBER,
 * TIME, OBJECT ...), that blocks, that is pub/sub or administration, or
 * that is never mirrored.
 *
 * Replies are read by resp_reader (resp.h) straight from the bytes, as the
 * session reads a reply (per the command's digest mode), so
 * rediscmp_outcome judges the new pair exactly as it judged the first.
 * Nothing of a reply is kept but its digest (and an error's first line);
 * a read whose first reply was larger than RECHECK_REPLY_MAX is not run
 * again.
 *
 * The client never waits: its session has moved on (it may have left; the
 * job keeps its own copies: the request, the logins, the report's text).
 *
 * The job never frees anything in a callback: finish() records the verdict
 * and arms `reap`, whose handler releases the connections and the job.
 */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/runtime.h"
#include "engine/recheck.h"
#include "engine/session.h"
#include "engine/worker.h"
#include "metrics/log.h"
#include "metrics/shadow.h"
#include "protocol/rediscmp.h"
#include "redis/redis_session_int.h"

#define RECHECK_REPLY_MAX (1024 * 1024)
/* what the re-check's connections are called on the servers (CLIENT LIST) */
#define RECHECK_CLIENT_NAME "tandem-recheck"
#define RECHECK_NAME_LEN "14" /* strlen(RECHECK_CLIENT_NAME), for its RESP */

/* Never run again, whatever else: their replies differ by nature, or they are not reads. */
#define RECHECK_REFUSED                                                                            \
    (REDISCMD_WRITE | REDISCMD_ADMIN | REDISCMD_SESSION | REDISCMD_TX | REDISCMD_BLOCKING |        \
     REDISCMD_PUBSUB | REDISCMD_NO_MIRROR | REDISCMD_NONDET | REDISCMD_LOCAL | REDISCMD_PHYSICAL | \
     REDISCMD_BLOCK_OPT)

#define PRIMARY RECHECK_PRIMARY
#define SHADOW RECHECK_SHADOW

struct recheck_side {
    struct redis_recheck *job;
    enum recheck_backend which;
    struct conn conn;            /* to the backend, TLS as its settings say */
    unsigned open : 1;           /* conn holds a socket */
    unsigned connecting : 1;     /* the TCP connect is in flight */
    unsigned reading : 1;        /* inside a reply */
    unsigned awaiting : 1;       /* the request is sent, its reply not read */
    uint8_t *login;              /* AUTH, SELECT as the session (heap, wiped), or NULL */
    size_t login_len;
    size_t login_cmd[2];         /* the length of each command in login, 0: none */
    unsigned setup_left;         /* replies to the login commands and CLIENT SETNAME owed */
    struct resp_reader reader;   /* the reply being read */
    struct resp_reply_info info; /* the last whole reply */
    char text[128];              /* the last error reply's text, for the log */
};

struct redis_recheck {
    struct recheck r; /* first: the schedule, the worker's list, the report's key */
    /* the command and how its replies compare */
    uint8_t *req;
    size_t req_len;
    uint32_t flags;
    enum resp_digest_mode mode;
    int64_t ttl_tolerance;
    /* the report's record, as redis_shadow_record had it (and r.key_id, r.*_ns) */
    char key_text[64];
    char *psum, *ssum;
    struct recheck_side side[2];
    struct resp_reply_info answer[2]; /* this attempt's replies */
    unsigned done : 1;                /* the verdict is recorded: only reap is left */
    unsigned closing : 1;             /* the contexts are being freed: callbacks do nothing */
    struct event reap;
};

static void finish(struct redis_recheck *j, enum shadow_recheck_result r, const char *why);

/* ------------------------------------------------------------------ */
/* Keeping a request.                                                  */

/* May a command with these flags, of this kind, be run again to confirm it? */
static int
may_recheck(const struct redis_unit *u)
{
    return u->cmd != NULL && u->base.kind == REQ_KIND_READ && !u->base.replay && !u->tx &&
           (u->flags & RECHECK_REFUSED) == 0;
}

void
redis_recheck_keep(struct redis_session *s, struct redis_unit *u, const uint8_t *bytes, size_t len)
{
    struct redis_compare *c = u->cmp;

    if (c == NULL || c->req != NULL || len == 0 || len > RS_RECHECK_REQUEST_MAX ||
        s->base.lis->conf->compare.confirm_per_second == 0 || !may_recheck(u))
        return;
    if ((c->req = malloc(len)) == NULL)
        return;
    memcpy(c->req, bytes, len);
    c->req_len = (uint32_t)len;
}

/* ------------------------------------------------------------------ */
/* The job's one end.                                                  */

static void
side_close(struct recheck_side *sd)
{
    if (sd->open) {
        conn_release(&sd->conn);
        sd->open = 0;
    }
    if (sd->login != NULL) {
        OPENSSL_cleanse(sd->login, sd->login_len);
        free(sd->login);
        sd->login = NULL;
    }
}

static void
job_free(struct redis_recheck *j)
{
    j->closing = 1;
    recheck_end(&j->r);
    side_close(&j->side[PRIMARY]);
    side_close(&j->side[SHADOW]);
    event_del(&j->reap);
    free(j->req);
    free(j->psum);
    free(j->ssum);
    free(j);
}

static void
on_reap(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    job_free(arg);
}

static void
job_cancel(struct worker_job *job)
{
    job_free((struct redis_recheck *)job);
}

/*
 * The verdict: recorded as redis_shadow_record would have, with the outcome
 * the re-check concluded, and counted by result.  Called from anywhere
 * (connection callbacks too): the job is freed later, by reap.
 */
static void
finish(struct redis_recheck *j, enum shadow_recheck_result result, const char *why)
{
    if (j->done || j->closing)
        return;
    j->done = 1;
    recheck_verdict(&j->r, result, j->key_text, j->psum, j->ssum, why);
    recheck_stop_timers(&j->r);
    event_active(&j->reap, EV_TIMEOUT, 1);
}

static void
expired(struct recheck *r)
{
    finish((struct redis_recheck *)r, SHADOW_RECHECK_FAILED, "no verdict in time");
}

static void
side_failed(struct recheck_side *sd, const char *what, const char *detail)
{
    char why[300];
    snprintf(why, sizeof(why), "%s %s%s%s", recheck_backend_names[sd->which], what, detail ? ": " : "",
             detail ? detail : "");
    finish(sd->job, SHADOW_RECHECK_FAILED, why);
}

/* ------------------------------------------------------------------ */
/* Attempts.                                                           */

static void run(struct recheck *r, enum recheck_backend which);

/* Both replies of this attempt are in: the same, or again, or confirmed. */
static void
attempt_done(struct redis_recheck *j)
{
    for (int i = 0; i < 2; i++) {
        if (j->answer[i].type == '-') {
            /* two errors alike (NOAUTH, NOPERM) say nothing about the data: no verdict */
            char why[200];
            snprintf(why, sizeof(why), "the %s answered with an error: %s", recheck_backend_names[i],
                     j->side[i].text);
            finish(j, SHADOW_RECHECK_FAILED, why);
            return;
        }
    }
    enum shadow_outcome o =
        rediscmp_outcome(j->flags, &j->answer[PRIMARY], &j->answer[SHADOW], j->ttl_tolerance);
    if (o == SHADOW_MATCH) {
        finish(j, SHADOW_RECHECK_TRANSIENT, NULL);
        return;
    }
    if (!recheck_again(&j->r))
        finish(j, SHADOW_RECHECK_CONFIRMED, NULL);
}

/*
 * reply_done - side sd read a whole reply: a login's (an error ends the
 * job: the server's words, never the password), CLIENT SETNAME's (for the
 * operator's eyes only: a refusal changes nothing), or the request's.
 */
static void
reply_done(struct recheck_side *sd)
{
    struct redis_recheck *j = sd->job;
    if (sd->setup_left > 0) {
        int login = sd->setup_left > 1; /* SETNAME is the last of them */
        sd->setup_left--;
        if (login && sd->info.type == '-')
            side_failed(sd, "login refused", sd->text);
        return;
    }
    if (!sd->awaiting) {
        side_failed(sd, "read", "a reply to nothing asked");
        return;
    }
    sd->awaiting = 0;
    j->answer[sd->which] = sd->info;
    if (sd->which == PRIMARY)
        recheck_primary_answered(&j->r);
    else
        attempt_done(j);
}

/* The start of an error reply: its first line, for the log. */
static void
note_error(struct recheck_side *sd)
{
    char line[sizeof(sd->text) + 1];
    ev_ssize_t n = evbuffer_copyout(sd->conn.in, line, sizeof(line) - 1);
    line[n > 0 ? n : 0] = '\0';
    line[strcspn(line, "\r\n")] = '\0';
    snprintf(sd->text, sizeof(sd->text), "%s", line + (line[0] == '-'));
}

/* The replies in conn.in, read as they come (never buffered whole). */
static void
side_input(struct recheck_side *sd)
{
    struct evbuffer *in = sd->conn.in;
    struct evbuffer_iovec v;

    while (!sd->job->done && evbuffer_peek(in, -1, NULL, &v, 1) >= 1 && v.iov_len > 0) {
        if (!sd->reading) {
            resp_reader_init(&sd->reader, sd->job->mode);
            sd->reading = 1;
            if (((const uint8_t *)v.iov_base)[0] == '-')
                note_error(sd);
        }
        size_t used = 0;
        const char *err = NULL;
        enum resp_status st = resp_reader_feed(&sd->reader, v.iov_base, v.iov_len, &used,
                                               &sd->info, &err);
        evbuffer_drain(in, used);
        /* NEED_MORE consumes everything it is given: used 0 would be our bug, never a loop */
        if (st == RESP_ERROR || (st == RESP_NEED_MORE && used == 0)) {
            side_failed(sd, "read", "a reply tandem could not read");
            return;
        }
        if (st == RESP_OK) {
            sd->reading = 0;
            reply_done(sd);
        }
    }
}

/* Its bytes go once the connection carries RESP (connected, TLS done). */
static int
side_ready(const struct recheck_side *sd)
{
    return sd->open && !sd->connecting && (sd->conn.ssl == NULL || sd->conn.tls_done);
}

static void
on_side(evutil_socket_t fd, short what, void *arg)
{
    struct recheck_side *sd = arg;
    size_t n;
    (void)fd;
    (void)what;
    if (sd->job->done || sd->job->closing)
        return;
    if (sd->connecting) {
        int err = session_connect_result(&sd->conn);
        if (err != 0) {
            side_failed(sd, "connect", strerror(err));
            return;
        }
        sd->connecting = 0;
        conn_want_read(&sd->conn, 1);
    }
    if (sd->conn.ssl != NULL && !sd->conn.tls_done) {
        enum conn_io io = conn_handshake(&sd->conn);
        if (io == CONN_AGAIN)
            return;
        if (io != CONN_OK) {
            side_failed(sd, "TLS", conn_tls_error(&sd->conn, "handshake failed"));
            return;
        }
    }
    enum conn_io io = conn_read(&sd->conn, sd->job->r.w->scratch, sizeof(sd->job->r.w->scratch), &n);
    side_input(sd);
    if (sd->job->done)
        return;
    if (io == CONN_EOF || io == CONN_ERROR) {
        side_failed(sd, "connection", io == CONN_EOF ? "closed" : "lost");
        return;
    }
    if (conn_flush(&sd->conn) == CONN_ERROR)
        side_failed(sd, "connection", "lost");
}

/* An attempt on one side (engine/recheck.c calls it: the primary first, then the shadow). */
static void
run(struct recheck *r, enum recheck_backend which)
{
    struct redis_recheck *j = (struct redis_recheck *)r;
    struct recheck_side *sd = &j->side[which];
    if (!sd->open || evbuffer_add(sd->conn.out, j->req, j->req_len) != 0) {
        side_failed(sd, "send", NULL);
        return;
    }
    sd->awaiting = 1;
    if (side_ready(sd) && conn_flush(&sd->conn) == CONN_ERROR)
        side_failed(sd, "connection", "lost");
}

/* ------------------------------------------------------------------ */
/* Taking a mismatch.                                                  */

static const struct recheck_ops ops = {.run = run, .expired = expired};

/*
 * The commands that log side `which` in as the session's connection to it
 * is: AUTH as the client (or with tandem's own credentials, as the session
 * did), SELECT its db.  0, or -1 when tandem cannot tell (the client's
 * identity is not kept) or out of memory.
 */
static int
build_login(struct recheck_side *sd, const struct redis_session *s, const struct rt_backend *b,
            enum rs_login login)
{
    uint8_t buf[RS_IDENT_USER_MAX + RS_IDENT_PASS_MAX + 128];
    size_t n = 0;
    unsigned cmds = 0; /* at most AUTH and SELECT */

    switch (login) {
    case RL_CLIENT:
        if (s->ident == NULL)
            return -1;
        if (s->ident->has_user)
            n = resp_build_command(buf, sizeof(buf), 3,
                                   (const char *const[]){"AUTH", s->ident->user, s->ident->pass},
                                   (const size_t[]){4, s->ident->user_len, s->ident->pass_len});
        else
            n = resp_build_command(buf, sizeof(buf), 2,
                                   (const char *const[]){"AUTH", s->ident->pass},
                                   (const size_t[]){4, s->ident->pass_len});
        if (n == 0)
            return -1;
        sd->login_cmd[cmds++] = n;
        break;
    case RL_TANDEM:
        if (b->password[0]) {
            if (b->conf->user[0])
                n = resp_build_command(buf, sizeof(buf), 3,
                                       (const char *const[]){"AUTH", b->conf->user, b->password},
                                       NULL);
            else
                n = resp_build_command(buf, sizeof(buf), 2,
                                       (const char *const[]){"AUTH", b->password}, NULL);
            if (n == 0)
                return -1;
            sd->login_cmd[cmds++] = n;
        }
        break;
    case RL_DEFAULT:
        break;
    }
    if (s->db != 0) {
        char db[24];
        snprintf(db, sizeof(db), "%lld", (long long)s->db);
        size_t k = resp_build_command(buf + n, sizeof(buf) - n, 2,
                                      (const char *const[]){"SELECT", db}, NULL);
        if (k == 0)
            goto out_wipe;
        n += k;
        sd->login_cmd[cmds++] = k;
    }
    if (n > 0) {
        if ((sd->login = malloc(n)) == NULL)
            goto out_wipe;
        memcpy(sd->login, buf, n);
    }
    sd->login_len = n;
    OPENSSL_cleanse(buf, n);
    return 0;

out_wipe:
    OPENSSL_cleanse(buf, n);
    return -1;
}

/*
 * Why u cannot be run again as the session ran it, or NULL: its request
 * was not kept, or a login or SELECT after it changed what the session's
 * connections are (s->db and the logins are the session's now, not
 * necessarily u's).
 */
static const char *
unsupported(const struct redis_session *s, const struct redis_unit *u)
{
    if (u->cmp == NULL || u->cmp->req == NULL || !may_recheck(u))
        return "no request kept";
    if (u->cmp->pinfo.size > RECHECK_REPLY_MAX)
        return "reply too large";
    for (const struct mirror_unit *mu = u->base.next; mu; mu = mu->next) {
        const struct redis_unit *later = (const struct redis_unit *)mu;
        if (later->track != RT_NONE)
            return "session state changed after it";
    }
    return NULL;
}

/*
 * Connect side sd to b on the worker's base (TLS as b's settings say: with
 * verify-full the login leaves only once the certificate and the name were
 * checked), its login and CLIENT SETNAME queued; -1 when it cannot start.
 */
static int
side_connect(struct recheck_side *sd, const struct rt_backend *b, const struct conf_limits *lim,
             struct event_base *base)
{
    static const char setname[] = "*3\r\n$6\r\nCLIENT\r\n$7\r\nSETNAME\r\n"
                                  "$" RECHECK_NAME_LEN "\r\n" RECHECK_CLIENT_NAME "\r\n";
    const struct conf_backend *cb = b->conf;
    const char *name = cb->tls_server_name[0] ? cb->tls_server_name : cb->addr.host;

    int rc = session_connect(&sd->conn, base, b, lim, on_side, sd);
    if (rc < 0)
        return -1;
    sd->open = 1;
    sd->connecting = rc == 1;
    if (b->tls != NULL && conn_start_tls(&sd->conn, b->tls, 0, name,
                                         cb->tls == CONF_TLS_VERIFY_FULL ? name : NULL) != 0)
        return -1;
    sd->setup_left = (sd->login_cmd[0] > 0) + (sd->login_cmd[1] > 0) + 1;
    if ((sd->login_len > 0 && evbuffer_add(sd->conn.out, sd->login, sd->login_len) != 0) ||
        evbuffer_add(sd->conn.out, setname, sizeof(setname) - 1) != 0)
        return -1;
    if (!sd->connecting) {
        conn_want_read(&sd->conn, 1);
        if (sd->conn.ssl != NULL)
            on_side(sd->conn.fd, EV_WRITE, sd); /* the handshake starts */
        else if (conn_flush(&sd->conn) == CONN_ERROR)
            return -1;
    }
    return 0;
}

int
redis_recheck_start(struct redis_session *s, struct redis_unit *u, uint64_t key_id,
                    const char *key_text, const char *psum, const char *ssum)
{
    const struct rt_listener *lis = s->base.lis;
    int slot = lis->metric_slot;
    struct shadow_shard *shard = s->base.w->shadow;
    const char *why;

    if (lis->conf->compare.confirm_per_second == 0 || u->base.kind != REQ_KIND_READ ||
        u->cmp == NULL || s->base.shadow_be == NULL)
        return -1;
    if ((why = unsupported(s, u)) != NULL) {
        shadow_count_recheck(shard, slot, SHADOW_RECHECK_UNSUPPORTED);
        log_at(CONF_LOG_DEBUG, s->base.id, s->base.peer,
               "shadow mismatch of \"%s\" not re-checked: %s", key_text, why);
        return -1;
    }
    if (!recheck_take(shard, slot, lis->conf->compare.confirm_per_second))
        return -1;
    struct redis_recheck *j = calloc(1, sizeof(*j));
    if (j == NULL)
        goto out_budget;
    j->flags = u->flags;
    j->mode = (enum resp_digest_mode)u->mode;
    j->ttl_tolerance = rediscmp_ttl_tolerance(u->cmd->name);
    j->r.key_id = key_id;
    snprintf(j->key_text, sizeof(j->key_text), "%s", key_text);
    j->r.primary_ns = u->base.primary_ns;
    j->r.shadow_ns = u->base.shadow_done ? u->base.shadow_ns : 0;
    if ((j->psum = strdup(psum)) == NULL || (j->ssum = strdup(ssum)) == NULL)
        goto out_free;
    for (int i = 0; i < 2; i++) {
        j->side[i].job = j;
        j->side[i].which = (enum recheck_backend)i;
    }
    if (build_login(&j->side[PRIMARY], s, s->base.be, s->primary_login) != 0 ||
        build_login(&j->side[SHADOW], s, s->base.shadow_be, s->shadow->login) != 0) {
        side_close(&j->side[PRIMARY]);
        side_close(&j->side[SHADOW]);
        free(j->psum);
        free(j->ssum);
        free(j);
        shadow_recheck_give(slot);
        shadow_count_recheck(shard, slot, SHADOW_RECHECK_UNSUPPORTED);
        return -1;
    }
    j->req = u->cmp->req; /* the job's now */
    j->req_len = u->cmp->req_len;
    u->cmp->req = NULL;
    j->r.job.cancel = job_cancel;
    evtimer_assign(&j->reap, s->base.w->base, on_reap, j);
    recheck_begin(&j->r, &ops, s->base.w, slot, s->base.id, s->base.peer);
    const struct rt_backend *ends[2] = {s->base.be, s->base.shadow_be};
    for (int i = 0; i < 2; i++) {
        if (side_connect(&j->side[i], ends[i], &s->base.rt->conf->limits, j->r.w->base) != 0) {
            side_failed(&j->side[i], "connect", "cannot start");
            return 0; /* recorded, unconfirmed */
        }
    }
    if (!j->done)
        run(&j->r, RECHECK_PRIMARY); /* queued behind the login */
    return 0;

out_free:
    free(j->psum);
    free(j->ssum);
    free(j);
out_budget:
    shadow_recheck_give(slot);
    return -1;
}
