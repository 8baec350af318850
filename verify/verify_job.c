/*
 * verify_job.c - a tandem verify run on a thread of the proxy (verify_job.h).
 */
#include "verify/verify_job.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/log.h"
#include "verify/redis_link.h"
#include "verify/verify.h"

#define PUBLISH_EVERY_NS 250000000ull /* progress snapshots while running */
#define CONNECT_TIMEOUT_S 10
#define REDIS_TIMEOUT_S 30            /* one command (a large key's value) */

struct verify_job {
    struct verify_job_spec spec;
    pthread_t thread;
    pthread_mutex_t lock;
    int cancel;                /* atomic: ask the thread to stop */
    int running;               /* atomic */
    struct timespec started, finished;
    json_t *snap;              /* under lock: the latest snapshot */
    uint64_t published_ns;     /* the thread's own */
};

static json_t *
time_json(const struct timespec *t)
{
    char buf[40];
    if (t->tv_sec == 0)
        return json_null();
    log_format_time((int64_t)t->tv_sec * 1000 + t->tv_nsec / 1000000, buf, sizeof(buf));
    return json_string(buf);
}

/* The whole record of the run as it stands; built on the verify thread. */
static json_t *
snapshot(struct verify_job *j, const struct verify_run *run, const char *state, int rc)
{
    const struct verify_job_spec *sp = &j->spec;
    json_t *o = json_object(), *diffs = json_array();
    json_int_t total = 0;
    const char *current = NULL;

    if (run->ntables > run->tables_done && strcmp(state, "running") == 0)
        current = run->tables[run->ntables - 1].name;
    json_object_set_new(o, "id", json_string(sp->id));
    json_object_set_new(o, "state", json_string(state));
    json_object_set_new(o, "listener", json_string(sp->listener));
    json_object_set_new(o, "protocol", json_string(sp->redis ? "redis" : "postgres"));
    if (sp->redis)
        json_object_set_new(o, "db", json_integer(sp->db));
    else
        json_object_set_new(o, "dbname", json_string(sp->dbname));
    json_object_set_new(o, "primary", json_string(sp->primary.name));
    json_object_set_new(o, "shadow", json_string(sp->shadow.name));
    json_object_set_new(o, "started", time_json(&j->started));
    json_object_set_new(o, "finished", time_json(&j->finished));
    json_object_set_new(
        o, "progress",
        json_pack("{s:I, s:I, s:I, s:I, s:o}", "tables_done", (json_int_t)run->tables_done,
                  "tables_total", (json_int_t)run->tables_total, "rows_checked",
                  (json_int_t)run->rows_checked, "rows_estimate", (json_int_t)run->rows_estimate,
                  "current_table", current ? json_string(current) : json_null()));
    json_t *rep = verify_run_json(run, verify_run_equal(run, rc));
    json_object_set(o, "tables", json_object_get(rep, "tables"));
    json_decref(rep);
    for (size_t i = 0; i < run->ntables; i++) {
        const struct verify_table *t = &run->tables[i];
        total += (json_int_t)(t->counts[0] + t->counts[1] + t->counts[2]);
        for (size_t k = 0; k < t->ndiffs && json_array_size(diffs) < VERIFY_JOB_DIFFS; k++)
            json_array_append_new(diffs, json_pack("{s:s, s:s, s:s}", "table", t->name, "key",
                                                   t->diffs[k].key ? t->diffs[k].key : "",
                                                   "kind", verify_kind_name(t->diffs[k].kind)));
    }
    json_object_set_new(o, "differences", diffs);
    json_object_set_new(o, "differences_total", json_integer(total));
    json_object_set_new(o, "error", run->error[0] && strcmp(state, "running") != 0
                                        ? json_string(run->error)
                                        : json_null());
    return o;
}

static void
publish(struct verify_job *j, json_t *snap)
{
    if (snap == NULL)
        return; /* out of memory: the last snapshot stays */
    pthread_mutex_lock(&j->lock);
    json_t *old = j->snap;
    j->snap = snap;
    pthread_mutex_unlock(&j->lock);
    json_decref(old);
}

static void
on_progress(const struct verify_run *run, void *arg)
{
    struct verify_job *j = arg;
    uint64_t now = verify_now_ns();
    if (now - j->published_ns < PUBLISH_EVERY_NS)
        return;
    j->published_ns = now;
    publish(j, snapshot(j, run, "running", 0));
}

/* A PostgreSQL login as tandem, read-only: the run never writes. */
static PGconn *
pg_open(const struct conf_login *e, const char *dbname, char *err, size_t errlen)
{
    char timeout[16];
    const char *keys[CONF_LOGIN_PARAMS + 3], *vals[CONF_LOGIN_PARAMS + 3];
    int k = conf_login_params(e, dbname, "tandem verify", keys, vals);

    snprintf(timeout, sizeof(timeout), "%d", CONNECT_TIMEOUT_S);
    keys[k] = "connect_timeout";
    vals[k++] = timeout;
    keys[k] = "options";
    vals[k++] = "-c default_transaction_read_only=on";
    keys[k] = vals[k] = NULL;
    PGconn *pq = PQconnectdbParams(keys, vals, 0);
    if (pq == NULL || PQstatus(pq) != CONNECTION_OK) {
        snprintf(err, errlen, "%s: %s", e->name, pq ? PQerrorMessage(pq) : "out of memory");
        err[strcspn(err, "\n")] = '\0';
        PQfinish(pq);
        return NULL;
    }
    return pq;
}

/*
 * A login as tandem to a Redis backend, over TLS as the backend's settings
 * say (verify/redis_link.h: verify-full checks the CA and the name before
 * AUTH leaves).
 */
static struct redis_link *
redis_open(const struct conf_login *e, int db, char *err, size_t errlen)
{
    char why[300];
    struct redis_link *c = redis_link_open(e, REDIS_TIMEOUT_S * 1000, err, errlen);
    if (c == NULL)
        return NULL;
    if (verify_redis_login(c, e->user, e->password, db, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "%s: %s", e->name, why);
        redis_link_free(c);
        return NULL;
    }
    return c;
}

static void *
job_main(void *arg)
{
    struct verify_job *j = arg;
    const struct verify_job_spec *sp = &j->spec;
    const char *inc[VERIFY_JOB_GLOBS], *exc[VERIFY_JOB_GLOBS];
    struct verify_opts o = {.include = inc,
                            .exclude = exc,
                            .ninclude = sp->ninclude,
                            .nexclude = sp->nexclude,
                            .chunk = sp->chunk ? sp->chunk : sp->redis ? 1000 : 10000,
                            .sample_rate = sp->sample_rate,
                            .max_rate = sp->max_rate,
                            .settle_ms = sp->settle_ms,
                            .ttl_tolerance_ms = sp->ttl_tolerance_ms,
                            .on_progress = on_progress,
                            .progress_arg = j,
                            .cancel = &j->cancel};
    struct verify_run run = {.opts = &o};
    int rc = -1;

    for (size_t i = 0; i < sp->ninclude; i++)
        inc[i] = sp->include[i];
    for (size_t i = 0; i < sp->nexclude; i++)
        exc[i] = sp->exclude[i];
    if (sp->redis) {
        struct redis_link *p = redis_open(&sp->primary, sp->db, run.error, sizeof(run.error));
        struct redis_link *s = p ? redis_open(&sp->shadow, sp->db, run.error, sizeof(run.error)) : NULL;
        if (p && s)
            rc = verify_redis_with(&run, p, s);
        redis_link_free(p);
        redis_link_free(s);
    } else {
        PGconn *p = pg_open(&sp->primary, sp->dbname, run.error, sizeof(run.error));
        PGconn *s = p ? pg_open(&sp->shadow, sp->dbname, run.error, sizeof(run.error)) : NULL;
        if (p && s)
            rc = verify_pg_with(&run, p, s);
        PQfinish(p);
        PQfinish(s);
    }
    verify_cancelled(&run); /* a cancel during the connect counts too */
    const char *state = run.cancelled ? "cancelled"
                        : rc != 0     ? "error"
                        : verify_run_equal(&run, rc) ? "equal"
                                                     : "different";
    clock_gettime(CLOCK_REALTIME, &j->finished);
    publish(j, snapshot(j, &run, state, rc));
    verify_run_release(&run);
    __atomic_store_n(&j->running, 0, __ATOMIC_RELEASE);
    return NULL;
}

struct verify_job *
verify_job_start(const struct verify_job_spec *spec, char *err, size_t errlen)
{
    struct verify_job *j = calloc(1, sizeof(*j));
    if (j == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    j->spec = *spec;
    pthread_mutex_init(&j->lock, NULL);
    clock_gettime(CLOCK_REALTIME, &j->started);
    j->running = 1;
    struct verify_run empty = {0};
    j->snap = snapshot(j, &empty, "running", 0);
    if (j->snap == NULL || pthread_create(&j->thread, NULL, job_main, j) != 0) {
        snprintf(err, errlen, "cannot start the verify thread");
        json_decref(j->snap);
        pthread_mutex_destroy(&j->lock);
        free(j);
        return NULL;
    }
    return j;
}

int
verify_job_running(struct verify_job *j)
{
    return __atomic_load_n(&j->running, __ATOMIC_ACQUIRE);
}

const char *
verify_job_id(const struct verify_job *j)
{
    return j->spec.id;
}

json_t *
verify_job_json(struct verify_job *j, int diffs_only)
{
    pthread_mutex_lock(&j->lock);
    json_t *copy = json_deep_copy(j->snap);
    pthread_mutex_unlock(&j->lock);
    if (copy == NULL || !diffs_only)
        return copy;
    json_t *o = json_object();
    static const char *const keep[] = {"id",          "state",       "listener",
                                       "finished",    "differences", "differences_total"};
    for (size_t i = 0; i < sizeof(keep) / sizeof(keep[0]); i++)
        json_object_set(o, keep[i], json_object_get(copy, keep[i]));
    json_decref(copy);
    return o;
}

int
verify_job_cancel(struct verify_job *j)
{
    if (!verify_job_running(j))
        return -1;
    __atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
    return 0;
}

void
verify_job_free(struct verify_job *j)
{
    if (j == NULL)
        return;
    __atomic_store_n(&j->cancel, 1, __ATOMIC_RELEASE);
    pthread_join(j->thread, NULL);
    json_decref(j->snap);
    pthread_mutex_destroy(&j->lock);
    free(j);
}
