/*
 * replica.c - the progress of shadows fed by replication, and cutover
 * steps (see replica.h).
 *
 * The watch is a thread of its own with blocking clients (libpq,
 * verify/redis_link.h, plain or TLS as the backend's settings say):
 * it asks two servers one small question each per poll, and a slow or
 * partitioned server must delay only the watch, never the main loop or a
 * worker.  Every call is bounded (connect_timeout, statement_timeout, the
 * Redis link's timeout).
 */
#include "control/replica.h"

#include <hiredis/hiredis.h>
#include <hiredis/sds.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "verify/redis_link.h"
#include <time.h>

#include "control/control.h"
#include "metrics/log.h"
#include "metrics/metric.h"

#define RING 512              /* primary samples kept: 51 s at the default poll */
#define CALL_TIMEOUT_MS 2000  /* one position query, or one connect */
#define RECONNECT_MS 1000     /* after a failure, per side */

/* ---- published per listener slot, read from any thread ---------------- */

static struct {
    int enabled;
    uint64_t caught_up_ns;
    uint64_t last_move_ns;
    uint64_t lag_ns, lag_bytes;
    int known; /* the last poll measured both sides */
} pub[METRIC_MAX_LISTENERS];

static pthread_mutex_t pub_lock = PTHREAD_MUTEX_INITIALIZER; /* the texts below */
static struct {
    char kind[16];
    char primary_pos[32], shadow_pos[32];
    char primary[CONF_NAME_MAX], shadow[CONF_NAME_MAX]; /* as measured: after a flip, swapped */
    char error[256];
} pub_text[METRIC_MAX_LISTENERS];

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int
slot_ok(int slot)
{
    return slot >= 0 && slot < METRIC_MAX_LISTENERS;
}

int
replica_enabled(int slot)
{
    return slot_ok(slot) && __atomic_load_n(&pub[slot].enabled, __ATOMIC_RELAXED);
}

uint64_t
replica_caught_up_ns(int slot)
{
    return slot_ok(slot) ? __atomic_load_n(&pub[slot].caught_up_ns, __ATOMIC_ACQUIRE) : 0;
}

uint64_t
replica_last_move_ns(int slot)
{
    return slot_ok(slot) ? __atomic_load_n(&pub[slot].last_move_ns, __ATOMIC_ACQUIRE) : 0;
}

int
replica_lag(int slot, uint64_t *lag_ns, uint64_t *lag_bytes)
{
    *lag_ns = *lag_bytes = 0;
    if (!replica_enabled(slot))
        return -1;
    if (!__atomic_load_n(&pub[slot].known, __ATOMIC_ACQUIRE)) {
        /* not measured now: the last moment known applied only grows older */
        uint64_t caught = replica_caught_up_ns(slot), now = mono_ns();
        *lag_ns = caught && now > caught ? now - caught : 0;
        return -1;
    }
    *lag_ns = __atomic_load_n(&pub[slot].lag_ns, __ATOMIC_RELAXED);
    *lag_bytes = __atomic_load_n(&pub[slot].lag_bytes, __ATOMIC_RELAXED);
    return 0;
}


/* ---- one backend, as tandem logs in to it --------------------------------- */

struct endpoint {
    struct conf_login login; /* tandem's own, as the backend's settings say */
    int redis;
    char dbname[CONF_NAME_MAX];
    PGconn *pq;           /* the watch's connection, NULL when none */
    struct redis_link *rc;
    uint64_t retry_at_ns; /* no reconnect before */
};

static void
endpoint_set(struct endpoint *e, const struct rt_backend *b, int redis, const char *dbname)
{
    memset(e, 0, sizeof(*e));
    runtime_login(b, &e->login);
    e->redis = redis;
    snprintf(e->dbname, sizeof(e->dbname), "%s", dbname);
}

static void
endpoint_close(struct endpoint *e)
{
    if (e->pq)
        PQfinish(e->pq);
    redis_link_free(e->rc);
    e->pq = NULL;
    e->rc = NULL;
}

/* A PostgreSQL login as tandem, every statement bounded by timeout_ms. */
static PGconn *
pg_login(const struct endpoint *e, const char *app, uint32_t timeout_ms, char *err, size_t errlen)
{
    char timeout[16], options[64], user_timeout[16];
    const char *keys[CONF_LOGIN_PARAMS + 9], *vals[CONF_LOGIN_PARAMS + 9];
    int k = conf_login_params(&e->login, e->dbname, app, keys, vals);

    snprintf(timeout, sizeof(timeout), "%u", (timeout_ms + 999) / 1000);
    snprintf(options, sizeof(options), "-c statement_timeout=%u", timeout_ms);
    /* statement_timeout is the server's: a partitioned server never says it. The
     * kernel gives up on unacknowledged data after this, so a call cannot hang the
     * watch (or a step) forever */
    snprintf(user_timeout, sizeof(user_timeout), "%u", timeout_ms + 2000);
#define PARAM(key, value) (keys[k] = (key), vals[k++] = (value))
    PARAM("connect_timeout", timeout);
    PARAM("options", options);
    PARAM("tcp_user_timeout", user_timeout);
    PARAM("keepalives", "1");
    PARAM("keepalives_idle", "5");
    PARAM("keepalives_interval", "2");
    PARAM("keepalives_count", "3");
#undef PARAM
    keys[k] = vals[k] = NULL;
    PGconn *pq = PQconnectdbParams(keys, vals, 0);
    if (pq == NULL || PQstatus(pq) != CONNECTION_OK) {
        snprintf(err, errlen, "%s: %s", e->login.name, pq ? PQerrorMessage(pq) : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfinish(pq);
        return NULL;
    }
    return pq;
}

static struct redis_link *
redis_login(const struct endpoint *e, uint32_t timeout_ms, char *err, size_t errlen)
{
    struct redis_link *rc = redis_link_open(&e->login, (int)timeout_ms, err, errlen);
    if (rc == NULL)
        return NULL;
    if (e->login.password[0]) {
        redisReply *r = e->login.user[0]
                            ? redis_link_command(rc, "AUTH %s %s", e->login.user, e->login.password)
                            : redis_link_command(rc, "AUTH %s", e->login.password);
        int bad = r == NULL || r->type == REDIS_REPLY_ERROR;
        snprintf(err, errlen, "%s: AUTH: %s", e->login.name,
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "ok") : redis_link_error(rc));
        if (r)
            freeReplyObject(r);
        if (bad) {
            redis_link_free(rc);
            return NULL;
        }
    }
    return rc;
}

static int
endpoint_open(struct endpoint *e, uint64_t now, char *err, size_t errlen)
{
    if (e->pq != NULL || e->rc != NULL)
        return 0;
    if (now < e->retry_at_ns) {
        snprintf(err, errlen, "%s: not reachable (retrying)", e->login.name);
        return -1;
    }
    if (e->redis)
        e->rc = redis_login(e, CALL_TIMEOUT_MS, err, errlen);
    else
        e->pq = pg_login(e, "tandem replication watch", CALL_TIMEOUT_MS, err, errlen);
    if (e->pq == NULL && e->rc == NULL) {
        e->retry_at_ns = now + RECONNECT_MS * 1000000ull;
        return -1;
    }
    return 0;
}

/* ---- positions ------------------------------------------------------------ */

/* "16/B374D848" -> 0x16B374D848 */
static int
parse_lsn(const char *s, uint64_t *out)
{
    unsigned hi, lo;
    if (s == NULL || sscanf(s, "%X/%X", &hi, &lo) != 2)
        return -1;
    *out = ((uint64_t)hi << 32) | lo;
    return 0;
}

/* One row, one column: the value as text (NULL for SQL NULL) into out; -1 with err on error. */
static int
pg_value(struct endpoint *e, const char *sql, const char *param, char *out, size_t outlen,
         int *is_null, char *err, size_t errlen, char *sqlstate)
{
    const char *params[1] = {param};
    PGresult *r = PQexecParams(e->pq, sql, param ? 1 : 0, NULL, param ? params : NULL, NULL, NULL,
                               0);
    if (sqlstate)
        sqlstate[0] = '\0';
    if (r == NULL || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
        const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
        if (sqlstate && st)
            snprintf(sqlstate, 6, "%s", st);
        snprintf(err, errlen, "%s: %s", e->login.name,
                 r && PQresultStatus(r) == PGRES_TUPLES_OK ? "no row" : PQerrorMessage(e->pq));
        err[strcspn(err, "\n")] = '\0';
        PQclear(r);
        if (PQstatus(e->pq) != CONNECTION_OK)
            endpoint_close(e);
        return -1;
    }
    *is_null = PQgetisnull(r, 0, 0);
    snprintf(out, outlen, "%s", *is_null ? "" : PQgetvalue(r, 0, 0));
    PQclear(r);
    return 0;
}

/* INFO replication's field NAME as a number. */
static int
redis_info_field(struct endpoint *e, const char *field, uint64_t *out, char *err, size_t errlen)
{
    redisReply *r = redis_link_command(e->rc, "INFO replication");
    if (r == NULL || r->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "%s: INFO replication: %s", e->login.name,
                 r ? (r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply") : redis_link_error(e->rc));
        if (r)
            freeReplyObject(r);
        else
            endpoint_close(e);
        return -1;
    }
    size_t flen = strlen(field);
    const char *p = r->str;
    int found = -1;
    while (p && *p) {
        if (strncmp(p, field, flen) == 0 && p[flen] == ':') {
            *out = strtoull(p + flen + 1, NULL, 10);
            found = 0;
            break;
        }
        p = strchr(p, '\n');
        p = p ? p + 1 : NULL;
    }
    if (found != 0)
        snprintf(err, errlen, "%s: INFO replication has no %s (not a %s)", e->login.name, field,
                 strcmp(field, "slave_repl_offset") == 0 ? "replica" : "primary");
    freeReplyObject(r);
    return found;
}

struct watched {
    int slot;
    enum conf_repl_kind kind;
    uint64_t poll_ns;
    char listener[CONF_NAME_MAX];
    char subscription[CONF_NAME_MAX];
    struct endpoint side[2]; /* 0: the configured primary, 1: the configured shadow */
    int primary_backend, shadow_backend; /* conf.backends indexes, for the steps */
    struct conf_step steps[CONF_STEPS_MAX];
    size_t nsteps;
    int swapped;        /* the roles the samples were taken under */
    int origin_denied;  /* pg_replication_origin_status is not ours to read */
    uint64_t next_poll_ns;
    struct { uint64_t t, pos; } ring[RING];
    unsigned nring, head; /* head: the next write */
};

static int
primary_position(struct watched *wd, struct endpoint *e, uint64_t *pos, char *text, size_t tlen,
                 char *err, size_t errlen)
{
    int is_null = 0;
    if (e->redis) {
        if (redis_info_field(e, "master_repl_offset", pos, err, errlen) != 0)
            return -1;
        snprintf(text, tlen, "%" PRIu64, *pos);
        return 0;
    }
    (void)wd;
    /* the insert position, not pg_current_wal_lsn() (written): with synchronous_commit off a
     * commit is acknowledged before its WAL is written, and the written position would
     * declare the shadow caught up without it */
    if (pg_value(e, "SELECT pg_current_wal_insert_lsn()::text", NULL, text, tlen, &is_null, err,
                 errlen, NULL) != 0)
        return -1;
    return parse_lsn(text, pos);
}

/* NULL when a watched subscription has no apply worker (disabled, failing): not measured */
static const char SUB_WITH_ORIGIN[] =
    "SELECT CASE WHEN bool_and(st.pid IS NOT NULL) "
    "THEN min(GREATEST(st.latest_end_lsn, o.remote_lsn))::text END "
    "FROM pg_stat_subscription st "
    "LEFT JOIN pg_replication_origin_status o ON o.external_id = 'pg_' || st.subid "
    "WHERE st.relid IS NULL AND ($1 = '' OR st.subname = $1)";
static const char SUB_ONLY[] = "SELECT CASE WHEN bool_and(st.pid IS NOT NULL) "
                               "THEN min(st.latest_end_lsn)::text END "
                               "FROM pg_stat_subscription st "
                               "WHERE st.relid IS NULL AND ($1 = '' OR st.subname = $1)";

/*
 * The shadow's applied position.  Logical: the subscription's apply worker
 * applies in order, so the position it last reported to the publisher
 * (latest_end_lsn) is applied; the origin's remote_lsn (the end of the last
 * committed remote transaction) is too, and often newer.  The slowest
 * subscription counts when none is named.
 */
static int
shadow_position(struct watched *wd, struct endpoint *e, uint64_t *pos, char *text, size_t tlen,
                char *err, size_t errlen)
{
    int is_null = 0;
    char state[8];
    if (e->redis) {
        if (redis_info_field(e, "slave_repl_offset", pos, err, errlen) != 0)
            return -1;
        snprintf(text, tlen, "%" PRIu64, *pos);
        return 0;
    }
    if (wd->kind == CONF_REPL_PHYSICAL) {
        if (pg_value(e, "SELECT pg_last_wal_replay_lsn()::text", NULL, text, tlen, &is_null, err,
                     errlen, NULL) != 0)
            return -1;
        if (is_null) {
            snprintf(err, errlen, "%s: not a standby (pg_last_wal_replay_lsn() is NULL)", e->login.name);
            return -1;
        }
        return parse_lsn(text, pos);
    }
    int rc = -1;
    if (!wd->origin_denied) {
        rc = pg_value(e, SUB_WITH_ORIGIN, wd->subscription, text, tlen, &is_null, err, errlen,
                      state);
        if (rc != 0 && strcmp(state, "42501") == 0) {
            wd->origin_denied = 1; /* not a superuser: latest_end_lsn alone */
            log_info("replication watch: %s may not read pg_replication_origin_status; "
                     "using pg_stat_subscription alone", e->login.name);
        }
    }
    if (wd->origin_denied)
        rc = pg_value(e, SUB_ONLY, wd->subscription, text, tlen, &is_null, err, errlen, NULL);
    if (rc != 0)
        return -1;
    if (is_null) {
        snprintf(err, errlen, "%s: no running subscription%s%s%s", e->login.name,
                 wd->subscription[0] ? " \"" : "", wd->subscription,
                 wd->subscription[0] ? "\"" : "");
        return -1;
    }
    return parse_lsn(text, pos);
}

static void
publish_error(struct watched *wd, const char *err)
{
    __atomic_store_n(&pub[wd->slot].known, 0, __ATOMIC_RELEASE);
    pthread_mutex_lock(&pub_lock);
    if (strcmp(pub_text[wd->slot].error, err) != 0)
        log_warn("replication watch, listener \"%s\": %s", wd->listener, err);
    snprintf(pub_text[wd->slot].error, sizeof(pub_text[wd->slot].error), "%s", err);
    pthread_mutex_unlock(&pub_lock);
}

/* One measurement of both sides. */
static void
poll_once(struct watched *wd)
{
    char err[300], ptext[32], stext[32];
    uint64_t ppos, spos;
    int swapped = control_roles_swapped(wd->slot);
    struct endpoint *p = &wd->side[swapped], *s = &wd->side[!swapped];

    if (swapped != wd->swapped) {
        /* another primary: its positions are not comparable with the old one's */
        wd->swapped = swapped;
        wd->nring = wd->head = 0;
        __atomic_store_n(&pub[wd->slot].caught_up_ns, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&pub[wd->slot].last_move_ns, mono_ns(), __ATOMIC_RELEASE);
    }
    uint64_t t = mono_ns();
    if (endpoint_open(p, t, err, sizeof(err)) != 0 ||
        primary_position(wd, p, &ppos, ptext, sizeof(ptext), err, sizeof(err)) != 0 ||
        endpoint_open(s, t, err, sizeof(err)) != 0 ||
        shadow_position(wd, s, &spos, stext, sizeof(stext), err, sizeof(err)) != 0) {
        publish_error(wd, err);
        return;
    }
    if (wd->nring > 0 && ppos != wd->ring[(wd->head + RING - 1) % RING].pos)
        __atomic_store_n(&pub[wd->slot].last_move_ns, t, __ATOMIC_RELEASE);
    wd->ring[wd->head].t = t;
    wd->ring[wd->head].pos = ppos;
    wd->head = (wd->head + 1) % RING;
    if (wd->nring < RING)
        wd->nring++;

    /* the newest sample the shadow has applied */
    uint64_t caught = 0, oldest = t;
    for (unsigned i = 0; i < wd->nring; i++) {
        unsigned at = (wd->head + RING - 1 - i) % RING;
        oldest = wd->ring[at].t;
        if (wd->ring[at].pos <= spos) {
            caught = wd->ring[at].t;
            break;
        }
    }
    uint64_t prev = __atomic_load_n(&pub[wd->slot].caught_up_ns, __ATOMIC_RELAXED);
    if (caught > prev)
        __atomic_store_n(&pub[wd->slot].caught_up_ns, caught, __ATOMIC_RELEASE);
    /* lag: how old the newest applied sample is; older than every kept one when none is */
    uint64_t lag = caught == t ? 0 : t - (caught ? caught : oldest);
    __atomic_store_n(&pub[wd->slot].lag_ns, lag, __ATOMIC_RELAXED);
    __atomic_store_n(&pub[wd->slot].lag_bytes, ppos > spos ? ppos - spos : 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pub[wd->slot].known, 1, __ATOMIC_RELEASE);

    pthread_mutex_lock(&pub_lock);
    if (pub_text[wd->slot].error[0])
        log_info("replication watch, listener \"%s\": measuring again", wd->listener);
    pub_text[wd->slot].error[0] = '\0';
    snprintf(pub_text[wd->slot].primary_pos, sizeof(pub_text[wd->slot].primary_pos), "%s", ptext);
    snprintf(pub_text[wd->slot].shadow_pos, sizeof(pub_text[wd->slot].shadow_pos), "%s", stext);
    snprintf(pub_text[wd->slot].primary, sizeof(pub_text[wd->slot].primary), "%s", p->login.name);
    snprintf(pub_text[wd->slot].shadow, sizeof(pub_text[wd->slot].shadow), "%s", s->login.name);
    pthread_mutex_unlock(&pub_lock);
}

/* ---- steps ---------------------------------------------------------------- */

static int
run_pg_step(const struct endpoint *e, const char *sql, uint32_t timeout_ms, char *out,
            size_t outlen)
{
    char err[300];
    PGconn *pq = pg_login(e, "tandem cutover step", timeout_ms, err, sizeof(err));
    if (pq == NULL) {
        snprintf(out, outlen, "%s", err);
        return -1;
    }
    PGresult *r = PQexec(pq, sql);
    ExecStatusType st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
    if (!ok)
        snprintf(out, outlen, "%s", r ? PQresultErrorMessage(r) : PQerrorMessage(pq));
    else if (st == PGRES_TUPLES_OK && PQntuples(r) > 0 && PQnfields(r) > 0)
        snprintf(out, outlen, "%s %s", PQcmdStatus(r), PQgetvalue(r, 0, 0));
    else
        snprintf(out, outlen, "%s", PQcmdStatus(r));
    out[strcspn(out, "\n")] = '\0';
    PQclear(r);
    PQfinish(pq);
    return ok ? 0 : -1;
}

static int
run_redis_step(const struct endpoint *e, const char *command, uint32_t timeout_ms, char *out,
               size_t outlen)
{
    char err[300];
    int argc = 0;
    sds *argv = sdssplitargs(command, &argc);
    if (argv == NULL || argc == 0) {
        snprintf(out, outlen, "unbalanced quotes or empty command");
        if (argv)
            sdsfreesplitres(argv, argc);
        return -1;
    }
    struct redis_link *rc = redis_login(e, timeout_ms, err, sizeof(err));
    if (rc == NULL) {
        snprintf(out, outlen, "%s", err);
        sdsfreesplitres(argv, argc);
        return -1;
    }
    size_t lens[64];
    int n = argc < 64 ? argc : 64;
    for (int i = 0; i < n; i++)
        lens[i] = sdslen(argv[i]);
    redisReply *r = redis_link_command_argv(rc, n, (const char **)argv, lens);
    int ok = r != NULL && r->type != REDIS_REPLY_ERROR;
    if (r == NULL)
        snprintf(out, outlen, "%s", redis_link_error(rc));
    else if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS ||
             r->type == REDIS_REPLY_ERROR)
        snprintf(out, outlen, "%.*s", (int)r->len, r->str);
    else if (r->type == REDIS_REPLY_INTEGER)
        snprintf(out, outlen, "%lld", r->integer);
    else
        snprintf(out, outlen, "ok");
    if (r)
        freeReplyObject(r);
    redis_link_free(rc);
    sdsfreesplitres(argv, argc);
    return ok ? 0 : -1;
}

/* ---- the watch ------------------------------------------------------------ */

struct replica_watch {
    pthread_t thread;
    int started;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    int stop;
    struct watched *wd;
    size_t nwd;
    /* one step run at a time, asked by the main thread */
    enum replica_steps_state steps_state;
    int steps_slot, steps_rollback, steps_phase;
    uint32_t steps_timeout_ms;
    json_t *steps_results;
    char steps_err[300];
};

static void
run_steps(struct replica_watch *w, struct watched *wd, int rollback, int phase,
          uint32_t timeout_ms)
{
    json_t *results = json_array();
    char out[400], err[300] = "";
    int failed = 0;
    for (size_t i = 0; i < wd->nsteps && !failed; i++) {
        const struct conf_step *st = &wd->steps[i];
        if (st->rollback != rollback || (int)st->phase != phase)
            continue;
        const struct endpoint *e = st->backend == wd->primary_backend ? &wd->side[0] : &wd->side[1];
        uint64_t t0 = mono_ns();
        int rc = e->redis ? run_redis_step(e, st->statement, timeout_ms, out, sizeof(out))
                          : run_pg_step(e, st->statement, timeout_ms, out, sizeof(out));
        uint64_t ms = (mono_ns() - t0) / 1000000;
        json_t *o = json_object();
        json_object_set_new(o, "backend", json_string(e->login.name));
        json_object_set_new(o, "statement", json_string(st->statement));
        json_object_set_new(o, "ok", json_boolean(rc == 0));
        json_object_set_new(o, rc == 0 ? "result" : "error", json_string(out));
        json_object_set_new(o, "ms", json_integer((json_int_t)ms));
        json_array_append_new(results, o);
        if (rc != 0) {
            failed = 1;
            snprintf(err, sizeof(err), "step on %s (%.80s%s): %s", e->login.name, st->statement,
                     strlen(st->statement) > 80 ? "..." : "", out);
        }
        log_at(rc == 0 ? CONF_LOG_INFO : CONF_LOG_ERROR, 0, NULL,
               "listener \"%s\": %s step on %s: %s: %s", wd->listener,
               phase == CONF_STEP_BEFORE_FLIP ? "before_flip" : "after_flip", e->login.name,
               st->statement, out);
    }
    pthread_mutex_lock(&w->lock);
    w->steps_results = results;
    snprintf(w->steps_err, sizeof(w->steps_err), "%s", err);
    w->steps_state = failed ? REPLICA_STEPS_FAILED : REPLICA_STEPS_DONE;
    pthread_mutex_unlock(&w->lock);
}

static void *
watch_main(void *arg)
{
    struct replica_watch *w = arg;
    pthread_mutex_lock(&w->lock);
    while (!w->stop) {
        if (w->steps_state == REPLICA_STEPS_RUNNING) { /* run_steps ends it: DONE or FAILED */
            struct watched *wd = NULL;
            for (size_t i = 0; i < w->nwd; i++)
                if (w->wd[i].slot == w->steps_slot)
                    wd = &w->wd[i];
            int rollback = w->steps_rollback, phase = w->steps_phase;
            uint32_t timeout = w->steps_timeout_ms;
            pthread_mutex_unlock(&w->lock);
            if (wd != NULL) {
                run_steps(w, wd, rollback, phase, timeout);
            } else {
                pthread_mutex_lock(&w->lock);
                w->steps_results = json_array();
                w->steps_state = REPLICA_STEPS_DONE;
                pthread_mutex_unlock(&w->lock);
            }
            pthread_mutex_lock(&w->lock);
            continue;
        }
        uint64_t now = mono_ns(), next = now + 1000000000ull;
        for (size_t i = 0; i < w->nwd; i++) {
            struct watched *wd = &w->wd[i];
            if (now >= wd->next_poll_ns) {
                pthread_mutex_unlock(&w->lock);
                poll_once(wd);
                pthread_mutex_lock(&w->lock);
                now = mono_ns();
                wd->next_poll_ns = now + wd->poll_ns;
            }
            if (wd->next_poll_ns < next)
                next = wd->next_poll_ns;
        }
        if (w->stop || w->steps_state == REPLICA_STEPS_RUNNING)
            continue;
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        uint64_t wait = next > now ? next - now : 0;
        until.tv_sec += (time_t)(wait / 1000000000ull);
        until.tv_nsec += (long)(wait % 1000000000ull);
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&w->wake, &w->lock, &until);
    }
    pthread_mutex_unlock(&w->lock);
    return NULL;
}

struct replica_watch *
replica_watch_start(const struct runtime *rt)
{
    struct replica_watch *w = calloc(1, sizeof(*w));
    if (w == NULL)
        return NULL;
    pthread_mutex_init(&w->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&w->wake, &ca);
    pthread_condattr_destroy(&ca);

    for (int s = 0; s < METRIC_MAX_LISTENERS; s++)
        __atomic_store_n(&pub[s].enabled, 0, __ATOMIC_RELAXED);
    for (size_t i = 0; i < rt->nlisteners; i++)
        w->nwd += rt->listeners[i].conf->shadow_source == CONF_SHADOW_REPLICATION &&
                  rt->listeners[i].shadow != NULL && slot_ok(rt->listeners[i].metric_slot);
    if (w->nwd == 0)
        return w;
    if ((w->wd = calloc(w->nwd, sizeof(*w->wd))) == NULL) {
        replica_watch_stop(w);
        return NULL;
    }
    size_t n = 0;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        if (l->conf->shadow_source != CONF_SHADOW_REPLICATION || l->shadow == NULL ||
            !slot_ok(l->metric_slot))
            continue;
        struct watched *wd = &w->wd[n++];
        const struct conf_replication *rc = &l->conf->replication;
        int redis = l->conf->proto == CONF_PROTO_REDIS;
        wd->slot = l->metric_slot;
        wd->kind = rc->kind;
        wd->poll_ns = (uint64_t)rc->poll_ms * 1000000ull;
        snprintf(wd->listener, sizeof(wd->listener), "%s", l->conf->name);
        snprintf(wd->subscription, sizeof(wd->subscription), "%s", rc->subscription);
        endpoint_set(&wd->side[0], l->primary, redis, rc->dbname);
        endpoint_set(&wd->side[1], l->shadow, redis, rc->dbname);
        wd->primary_backend = l->conf->primary;
        wd->shadow_backend = l->conf->shadow;
        memcpy(wd->steps, rc->steps, sizeof(wd->steps));
        wd->nsteps = rc->nsteps;
        wd->swapped = control_roles_swapped(wd->slot);
        pthread_mutex_lock(&pub_lock);
        snprintf(pub_text[wd->slot].kind, sizeof(pub_text[wd->slot].kind), "%s",
                 conf_repl_kind_name(rc->kind));
        snprintf(pub_text[wd->slot].error, sizeof(pub_text[wd->slot].error),
                 "not measured yet");
        pthread_mutex_unlock(&pub_lock);
        __atomic_store_n(&pub[wd->slot].known, 0, __ATOMIC_RELEASE);
        __atomic_store_n(&pub[wd->slot].enabled, 1, __ATOMIC_RELEASE);
    }
    if (pthread_create(&w->thread, NULL, watch_main, w) != 0) {
        replica_watch_stop(w);
        return NULL;
    }
    w->started = 1;
    return w;
}

void
replica_watch_stop(struct replica_watch *w)
{
    if (w == NULL)
        return;
    if (w->started) {
        pthread_mutex_lock(&w->lock);
        w->stop = 1;
        pthread_cond_signal(&w->wake);
        pthread_mutex_unlock(&w->lock);
        pthread_join(w->thread, NULL);
    }
    for (size_t i = 0; i < w->nwd; i++) {
        endpoint_close(&w->wd[i].side[0]);
        endpoint_close(&w->wd[i].side[1]);
    }
    json_decref(w->steps_results);
    free(w->wd);
    pthread_cond_destroy(&w->wake);
    pthread_mutex_destroy(&w->lock);
    free(w);
}

int
replica_steps_run(struct replica_watch *w, int slot, int rollback, int phase,
                  uint32_t timeout_ms)
{
    pthread_mutex_lock(&w->lock);
    if (w->steps_state == REPLICA_STEPS_RUNNING) {
        pthread_mutex_unlock(&w->lock);
        return -1;
    }
    json_decref(w->steps_results);
    w->steps_results = NULL;
    w->steps_err[0] = '\0';
    w->steps_slot = slot;
    w->steps_rollback = rollback;
    w->steps_phase = phase;
    w->steps_timeout_ms = timeout_ms ? timeout_ms : 1;
    if (!w->started) {
        w->steps_results = json_array();
        w->steps_state = REPLICA_STEPS_DONE; /* no replicated listener: nothing to run */
    } else {
        w->steps_state = REPLICA_STEPS_RUNNING;
        pthread_cond_signal(&w->wake);
    }
    pthread_mutex_unlock(&w->lock);
    return 0;
}

enum replica_steps_state
replica_steps_poll(struct replica_watch *w, json_t **results, char *err, size_t errlen)
{
    pthread_mutex_lock(&w->lock);
    enum replica_steps_state st = w->steps_state;
    if (st == REPLICA_STEPS_DONE || st == REPLICA_STEPS_FAILED) {
        *results = w->steps_results ? w->steps_results : json_array();
        w->steps_results = NULL;
        snprintf(err, errlen, "%s", w->steps_err);
        w->steps_err[0] = '\0';
        w->steps_state = REPLICA_STEPS_IDLE;
    }
    pthread_mutex_unlock(&w->lock);
    return st;
}

json_t *
replica_status_json(int slot)
{
    if (!replica_enabled(slot))
        return NULL;
    uint64_t lag_ns = 0, lag_bytes = 0;
    int known = replica_lag(slot, &lag_ns, &lag_bytes) == 0;
    json_t *o = json_object();
    pthread_mutex_lock(&pub_lock);
    json_object_set_new(o, "kind", json_string(pub_text[slot].kind));
    json_object_set_new(o, "primary", json_string(pub_text[slot].primary));
    json_object_set_new(o, "shadow", json_string(pub_text[slot].shadow));
    json_object_set_new(o, "primary_position", json_string(pub_text[slot].primary_pos));
    json_object_set_new(o, "shadow_position", json_string(pub_text[slot].shadow_pos));
    json_object_set_new(o, "error", pub_text[slot].error[0] ? json_string(pub_text[slot].error)
                                                            : json_null());
    pthread_mutex_unlock(&pub_lock);
    json_object_set_new(o, "lag_seconds", known ? json_real((double)lag_ns / 1e9) : json_null());
    json_object_set_new(o, "lag_bytes", known ? json_integer((json_int_t)lag_bytes) : json_null());
    return o;
}

void
replica_render_prometheus(const struct runtime *rt, FILE *out)
{
    int header = 0;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        uint64_t lag_ns, lag_bytes;
        if (!replica_enabled(l->metric_slot))
            continue;
        if (!header) {
            fputs("# HELP tandem_replication_lag_bytes How far the shadow's applied replication "
                  "position is behind the primary's (bytes of WAL; Redis: offset); absent while "
                  "not measured\n# TYPE tandem_replication_lag_bytes gauge\n"
                  "# HELP tandem_replication_measured 1 when the last poll measured both sides\n"
                  "# TYPE tandem_replication_measured gauge\n",
                  out);
            header = 1;
        }
        int known = replica_lag(l->metric_slot, &lag_ns, &lag_bytes) == 0;
        if (known)
            fprintf(out, "tandem_replication_lag_bytes{listener=\"%s\"} %" PRIu64 "\n",
                    l->conf->name, lag_bytes);
        fprintf(out, "tandem_replication_measured{listener=\"%s\"} %d\n", l->conf->name, known);
    }
}
