/*
 * pg_recheck.c - confirm a mismatching read before it is reported: run the
 * same statement with the same parameters again on both backends, through
 * connections of tandem's own, and compare those two answers.
 *
 *   record(): a read's answers differ ──► pg_recheck_start()
 *     budget (confirm_per_second, SHADOW_RECHECK_INFLIGHT_MAX per listener)
 *     job: log in to the primary and the shadow (libpq, non-blocking, on
 *          the worker's base, as the session's shadow login does)
 *       attempt: the primary runs it ─► then the shadow ─► compare
 *         the same ─► outcome transient (an ordering artefact of
 *                     concurrent writes: the shadow applied them later)
 *         different ─► again after a pause, RECHECK_ATTEMPTS in all
 *         still different ─► outcome mismatch, confirmed
 *       a failed login, query or the deadline ─► outcome mismatch, counted
 *         "failed": the claim stands as first observed
 *
 * The shadow runs each attempt after the primary: it applies the primary's
 * writes later, never earlier, so the pause between attempts lets it catch
 * up.  When the read's transaction is still open, both runs see only what
 * was committed, which is as it should be: the question is whether the
 * shadow holds the same data, not whether it saw the same interleaving.
 *
 * The same job, run once, fetches the plans of a read whose fingerprint
 * is slower on the shadow (shadow_record_slower): EXPLAIN (FORMAT JSON) of the
 * statement with this unit's parameters on both backends, kept with the
 * statement for the report (pg_explain_start).
 *
 * The client never waits: its session has moved on (it may have left; the
 * job keeps its own copies).  Writes are never run again: only units of
 * kind read get here.
 */
#include <event2/event.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "control/runtime.h"
#include "engine/recheck.h"
#include "engine/session.h"
#include "engine/worker.h"
#include "metrics/log.h"
#include "metrics/shadow.h"
#include "pg/pg_session_int.h"
#include "protocol/pgdesc.h"
#include "protocol/pgw.h"

#define PRIMARY RECHECK_PRIMARY
#define SHADOW RECHECK_SHADOW

enum side_state { SIDE_CONNECTING, SIDE_READY, SIDE_SENDING, SIDE_READING };

struct recheck_side {
    struct pg_recheck *job;
    enum recheck_backend which;
    PGconn *pq;
    enum side_state state;
    struct event ev;
    unsigned ev_added : 1;
    XXH3_state_t *digest; /* this attempt's answer */
    uint64_t answer;
    char error[160];      /* the run failed: no verdict from it (the read succeeded before) */
    char *plan;           /* an explain job's answer */
};

enum job_kind { JOB_RECHECK, JOB_EXPLAIN };

struct pg_recheck {
    struct recheck r;      /* first: the schedule, the worker's list, the report's key */
    enum job_kind kind;
    char *explain_sql;     /* JOB_EXPLAIN: "EXPLAIN (FORMAT JSON) " and the statement */
    struct runtime *rt;    /* one reference: ignore_columns and the listener's settings */
    int ordered;
    const char *const *ignore;
    /* the report's record, as record() had it (and r.key_id, r.primary_ns, r.shadow_ns) */
    char *key_text;        /* NULL: counted under "other" */
    char psample[sizeof(((struct pg_compare *)0)->psample)];
    char ssample[sizeof(((struct pg_compare *)0)->ssample)];
    /* the statement: call points into unit (and into sql when the unit had no Parse) */
    uint8_t *unit;
    char *sql;
    struct pgw_call call;
    struct recheck_side side[2];
};

#define jlog(j, level, ...) log_at(level, (j)->r.session_id, (j)->r.peer, __VA_ARGS__)

static void side_step(struct recheck_side *sd);

/* ------------------------------------------------------------------ */
/* The job's one end.                                                  */

static void
side_release(struct recheck_side *sd)
{
    if (sd->ev_added)
        event_del(&sd->ev);
    sd->ev_added = 0;
    if (sd->pq) {
        PQsetnonblocking(sd->pq, 1); /* a stalled backend cannot stall the worker */
        PQfinish(sd->pq);
        sd->pq = NULL;
    }
    if (sd->digest)
        XXH3_freeState(sd->digest);
    sd->digest = NULL;
    free(sd->plan);
    sd->plan = NULL;
}

static void
job_free(struct pg_recheck *j)
{
    recheck_end(&j->r);
    side_release(&j->side[PRIMARY]);
    side_release(&j->side[SHADOW]);
    runtime_unref(j->rt);
    free(j->key_text);
    free(j->unit);
    free(j->sql);
    free(j->explain_sql);
    free(j);
}

/* An explain job's end: both plans kept with the statement, or (failed) nothing. */
static void
explain_done(struct pg_recheck *j, const char *why)
{
    if (why == NULL)
        shadow_set_plans(j->r.w->shadow, j->r.slot, j->r.key_id, j->side[PRIMARY].plan,
                         j->side[SHADOW].plan);
    jlog(j, why ? CONF_LOG_INFO : CONF_LOG_DEBUG, "plans of a statement slower on the shadow: %s",
         why ? why : "fetched from both");
    job_free(j);
}

/*
 * The verdict: recorded as record() would have, with the outcome the
 * re-check concluded, and counted by result.
 */
static void
finish(struct pg_recheck *j, enum shadow_recheck_result result, const char *why)
{
    if (j->kind == JOB_EXPLAIN) {
        explain_done(j, why ? why : "failed");
        return;
    }
    recheck_verdict(&j->r, result, j->key_text, j->psample, j->ssample, why);
    job_free(j);
}

static void
job_cancel(struct worker_job *job)
{
    job_free((struct pg_recheck *)job);
}

static void
expired(struct recheck *r)
{
    finish((struct pg_recheck *)r, SHADOW_RECHECK_FAILED, "no verdict in time");
}

/* ------------------------------------------------------------------ */
/* Digesting an answer.                                                */

static int
column_ignored(const struct pg_recheck *j, const char *name)
{
    for (const char *const *c = j->ignore; c && *c; c++)
        if (strcmp(*c, name) == 0)
            return 1;
    return 0;
}

/*
 * One result into the side's digest: its status; for rows, the column
 * names and every row (in order when the statement orders them, else as a
 * multiset: a sum of row hashes); for an error, its SQLSTATE.
 */
static void
digest_result(struct pg_recheck *j, struct recheck_side *sd, const PGresult *r)
{
    XXH3_state_t *d = sd->digest;
    ExecStatusType status = PQresultStatus(r);
    uint32_t st = (uint32_t)status;

    XXH3_64bits_update(d, &st, sizeof(st));
    if (status == PGRES_FATAL_ERROR) {
        /* two failures alike say nothing about the data both answered differently */
        if (sd->error[0] == '\0')
            snprintf(sd->error, sizeof(sd->error), "%s", PQresultErrorMessage(r));
        sd->error[strcspn(sd->error, "\n")] = '\0';
        return;
    }
    if (status == PGRES_COMMAND_OK) {
        const char *tag = PQcmdStatus((PGresult *)r);
        XXH3_64bits_update(d, tag, strlen(tag));
        return;
    }
    if (status != PGRES_TUPLES_OK)
        return;
    if (j->kind == JOB_EXPLAIN) {
        /* one row, one column: the plan as JSON text */
        if (sd->plan == NULL && PQntuples(r) == 1 && PQnfields(r) == 1)
            sd->plan = strdup(PQgetvalue(r, 0, 0));
        return;
    }
    int ncols = PQnfields(r), nrows = PQntuples(r);
    uint8_t keep[1600]; /* PostgreSQL's column limit */
    for (int c = 0; c < ncols && c < (int)sizeof(keep); c++) {
        const char *name = PQfname(r, c);
        keep[c] = !column_ignored(j, name);
        if (keep[c])
            XXH3_64bits_update(d, name, strlen(name) + 1);
    }
    uint64_t sum = 0;
    for (int row = 0; row < nrows; row++) {
        /* each field chained into the row's hash, its length (or NULL) seeding the next */
        uint64_t h = 0;
        for (int c = 0; c < ncols && c < (int)sizeof(keep); c++) {
            if (!keep[c])
                continue;
            if (PQgetisnull(r, row, c))
                h = XXH3_64bits_withSeed("", 0, h + 1);
            else
                h = XXH3_64bits_withSeed(PQgetvalue(r, row, c), (size_t)PQgetlength(r, row, c),
                                         h + 2 + (uint64_t)PQgetlength(r, row, c));
        }
        if (j->ordered)
            XXH3_64bits_update(d, &h, sizeof(h));
        else
            sum += h;
    }
    XXH3_64bits_update(d, &sum, sizeof(sum));
    XXH3_64bits_update(d, &nrows, sizeof(nrows));
}

/* ------------------------------------------------------------------ */
/* Attempts.                                                           */

static void
on_side(evutil_socket_t fd, short what, void *arg)
{
    struct recheck_side *sd = arg;
    (void)fd;
    (void)what;
    sd->ev_added = 0;
    side_step(sd);
}

/* Wait for the side's socket to be readable or writable, then step again. */
static void
wait_for(struct recheck_side *sd, short what)
{
    if (sd->ev_added)
        event_del(&sd->ev);
    /* libpq may have opened another socket (the next address): watch the current one */
    event_assign(&sd->ev, sd->job->r.w->base, PQsocket(sd->pq), what, on_side, sd);
    event_add(&sd->ev, NULL);
    sd->ev_added = 1;
}

static int
send_query(struct recheck_side *sd)
{
    const struct pgw_call *c = &sd->job->call;

    if (sd->digest == NULL && (sd->digest = XXH3_createState()) == NULL)
        return -1;
    XXH3_64bits_reset(sd->digest);
    if (sd->job->kind == JOB_EXPLAIN) /* one statement: the extended protocol refuses more */
        return PQsendQueryParams(sd->pq, sd->job->explain_sql, c->nparams,
                                 c->ntypes ? c->param_types : NULL, c->values, c->lengths,
                                 c->param_formats, 0)
                   ? 0
                   : -1;
    if (c->simple)
        return PQsendQuery(sd->pq, c->sql) ? 0 : -1;
    return PQsendQueryParams(sd->pq, c->sql, c->nparams, c->ntypes ? c->param_types : NULL,
                             c->values, c->lengths, c->param_formats, 0)
               ? 0
               : -1;
}

static void side_failed(struct recheck_side *sd, const char *what);

/* Both answers of this attempt are in: the same, or again, or confirmed. */
static void
attempt_done(struct pg_recheck *j)
{
    for (int i = 0; i < 2; i++) {
        if (j->side[i].error[0]) {
            char why[200];
            snprintf(why, sizeof(why), "the %s failed it: %s", recheck_backend_names[i], j->side[i].error);
            finish(j, SHADOW_RECHECK_FAILED, why);
            return;
        }
    }
    if (j->kind == JOB_EXPLAIN) {
        explain_done(j, NULL);
        return;
    }
    if (j->side[PRIMARY].answer == j->side[SHADOW].answer) {
        finish(j, SHADOW_RECHECK_TRANSIENT, NULL);
        return;
    }
    if (!recheck_again(&j->r))
        finish(j, SHADOW_RECHECK_CONFIRMED, NULL);
}

/* An attempt on one side (engine/recheck.c calls it: the primary first, then the shadow). */
static void
run(struct recheck *r, enum recheck_backend which)
{
    struct recheck_side *sd = &((struct pg_recheck *)r)->side[which];
    if (send_query(sd) != 0) {
        side_failed(sd, "send");
        return;
    }
    sd->state = SIDE_SENDING;
    side_step(sd);
}

/*
 * The side's state machine, driven by its socket: log in, send, read the
 * answer.  Every branch either waits on the socket again or moves on.
 */
static void
side_step(struct recheck_side *sd)
{
    struct pg_recheck *j = sd->job;

    switch (sd->state) {
    case SIDE_CONNECTING:
        switch (PQconnectPoll(sd->pq)) {
        case PGRES_POLLING_READING:
            wait_for(sd, EV_READ);
            return;
        case PGRES_POLLING_WRITING:
            wait_for(sd, EV_WRITE);
            return;
        case PGRES_POLLING_OK:
            PQsetnonblocking(sd->pq, 1);
            sd->state = SIDE_READY;
            /* both logged in: the first attempt */
            if (j->side[PRIMARY].state == SIDE_READY && j->side[SHADOW].state == SIDE_READY)
                run(&j->r, RECHECK_PRIMARY);
            return;
        default:
            side_failed(sd, "login");
            return;
        }
    case SIDE_SENDING: {
        int rc = PQflush(sd->pq);
        if (rc < 0) {
            side_failed(sd, "send");
            return;
        }
        if (rc > 0) {
            wait_for(sd, EV_WRITE);
            return;
        }
        sd->state = SIDE_READING;
    }
        /* the answer may be in already */
        /* fall through */
    case SIDE_READING:
        if (!PQconsumeInput(sd->pq)) {
            side_failed(sd, "read");
            return;
        }
        while (!PQisBusy(sd->pq)) {
            PGresult *r = PQgetResult(sd->pq);
            if (r == NULL) {
                sd->answer = XXH3_64bits_digest(sd->digest);
                sd->state = SIDE_READY;
                if (sd->which == PRIMARY)
                    recheck_primary_answered(&j->r);
                else
                    attempt_done(j);
                return;
            }
            digest_result(j, sd, r);
            PQclear(r);
        }
        wait_for(sd, EV_READ);
        return;
    case SIDE_READY:
        return;
    }
}

static void
side_failed(struct recheck_side *sd, const char *what)
{
    char why[300];
    snprintf(why, sizeof(why), "%s %s: %s", recheck_backend_names[sd->which], what,
             sd->pq ? PQerrorMessage(sd->pq) : "out of memory");
    why[strcspn(why, "\n")] = '\0';
    finish(sd->job, SHADOW_RECHECK_FAILED, why);
}

/* ------------------------------------------------------------------ */
/* Taking a mismatch.                                                  */

static const struct recheck_ops ops = {.run = run, .expired = expired};

/* The statement of u to run again, or -1 when it is not one plain statement. */
static int
take_statement(struct pg_recheck *j, const struct pg_unit *u)
{
    if (u->call == NULL || pgw_call_decode(u->call, u->call_len, &j->call) != PGW_OK)
        return -1;
    j->unit = u->call;
    if (j->call.sql != NULL)
        return 0;
    /* a Bind of a statement prepared earlier: its text, whole, is the unit's */
    if (u->sql == NULL || u->sql_truncated || (j->sql = strdup(u->sql)) == NULL)
        return -1;
    j->call.sql = j->sql;
    return 0;
}

/*
 * A job for unit u of session s: its statement taken (u->call is the job's
 * then), logins to both backends begun.  NULL when u holds no statement to
 * run again (*unsupported set) or out of memory; the budget is the
 * caller's, and given back here on failure.
 */
static struct pg_recheck *
job_new(struct pg_session *s, struct pg_unit *u, enum job_kind kind, int *unsupported)
{
    const struct rt_listener *lis = s->base.lis;
    struct pg_recheck *j = calloc(1, sizeof(*j));

    *unsupported = 0;
    if (j == NULL || take_statement(j, u) != 0) {
        *unsupported = j != NULL;
        if (j)
            free(j->sql);
        free(j);
        shadow_recheck_give(lis->metric_slot);
        return NULL;
    }
    u->call = NULL; /* the job's now */
    j->kind = kind;
    j->r.job.cancel = job_cancel;
    j->rt = s->base.rt;
    runtime_ref(j->rt);
    j->ordered = u->ordered;
    j->ignore = lis->ignore_columns;
    recheck_begin(&j->r, &ops, s->base.w, lis->metric_slot, s->base.id, s->base.peer);
    return j;
}

/* The logins to both backends (libpq copies every parameter: the session may go). */
static void
job_login(struct pg_recheck *j, struct pg_session *s)
{
    const struct rt_backend *ends[2] = {s->base.be, s->base.shadow_be};
    for (int i = 0; i < 2; i++) {
        struct recheck_side *sd = &j->side[i];
        sd->job = j;
        sd->which = (enum recheck_backend)i;
        sd->state = SIDE_CONNECTING;
        sd->pq = pg_login_start(s, ends[i]);
    }
    for (int i = 0; i < 2; i++) {
        if (j->side[i].pq == NULL || PQstatus(j->side[i].pq) == CONNECTION_BAD) {
            side_failed(&j->side[i], "login");
            return;
        }
    }
    /* libpq's connect starts as if it had said PGRES_POLLING_WRITING */
    wait_for(&j->side[PRIMARY], EV_WRITE);
    wait_for(&j->side[SHADOW], EV_WRITE);
}

int
pg_recheck_start(struct pg_session *s, struct pg_unit *u, const struct pgdesc_key *key)
{
    const struct rt_listener *lis = s->base.lis;
    int slot = lis->metric_slot, unsupported;
    struct shadow_shard *shard = s->base.w->shadow;

    if (lis->conf->compare.confirm_per_second == 0 || u->base.kind != REQ_KIND_READ ||
        u->cmp == NULL || s->base.shadow_be == NULL)
        return -1;
    if (u->call == NULL) {
        shadow_count_recheck(shard, slot, SHADOW_RECHECK_UNSUPPORTED);
        return -1;
    }
    if (!recheck_take(shard, slot, lis->conf->compare.confirm_per_second))
        return -1;
    struct pg_recheck *j = job_new(s, u, JOB_RECHECK, &unsupported);
    if (j == NULL) {
        shadow_count_recheck(shard, slot, SHADOW_RECHECK_UNSUPPORTED);
        return -1;
    }
    j->r.key_id = key->fingerprint;
    j->key_text = key->text ? strdup(key->text) : NULL;
    j->r.primary_ns = u->base.primary_ns;
    j->r.shadow_ns = u->base.shadow_done && u->base.forced < 0 ? u->base.shadow_ns : 0;
    memcpy(j->psample, u->cmp->psample, sizeof(j->psample));
    memcpy(j->ssample, u->cmp->ssample, sizeof(j->ssample));
    job_login(j, s);
    return 0; /* a failed login is recorded, unconfirmed */
}

void
pg_explain_start(struct pg_session *s, struct pg_unit *u, uint64_t key_id)
{
    static const char prefix[] = "EXPLAIN (FORMAT JSON) ";
    int unsupported;

    if (u->base.kind != REQ_KIND_READ || u->call == NULL || s->base.shadow_be == NULL ||
        !shadow_recheck_take(s->base.lis->metric_slot, UINT32_MAX, session_now_ns() / 1000000000ull))
        return;
    struct pg_recheck *j = job_new(s, u, JOB_EXPLAIN, &unsupported);
    if (j == NULL)
        return;
    j->r.key_id = key_id;
    size_t n = strlen(j->call.sql);
    if ((j->explain_sql = malloc(sizeof(prefix) + n)) == NULL) {
        job_free(j);
        return;
    }
    memcpy(j->explain_sql, prefix, sizeof(prefix) - 1);
    memcpy(j->explain_sql + sizeof(prefix) - 1, j->call.sql, n + 1);
    job_login(j, s);
}
