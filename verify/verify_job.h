/*
 * verify_job.h - one tandem verify run inside the proxy (POST /api/verify).
 *
 * The run has a thread of its own with blocking clients (libpq, hiredis):
 * a slow table or a partitioned server delays only it, never the main loop
 * or a worker.  It logs in as tandem (the backend's user and password, TLS
 * as configured), runs the same core as the command (verify.h), and
 * publishes a snapshot of its progress under a lock; the main thread reads
 * only the snapshot.
 *
 *   main thread                         verify thread
 *   verify_job_start ──pthread_create──► connect both, verify_*_with
 *   verify_job_json  ◄── snapshot ─────  on_progress (at most every 250 ms,
 *                        (mutex)          and at the end)
 *   verify_job_cancel ── flag ─────────► noticed within ~100 ms, a running
 *                                         query cancelled (PQcancel)
 *   verify_job_free  ── cancel, join
 */
#ifndef TANDEM_VERIFY_JOB_H
#define TANDEM_VERIFY_JOB_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"
#include "conf/conf_login.h"

#define VERIFY_JOB_GLOBS 64

struct verify_job_spec {
    char id[32];            /* "verify-1" */
    char listener[CONF_NAME_MAX];
    int redis;              /* 0: PostgreSQL */
    char dbname[CONF_NAME_MAX];        /* PostgreSQL: the database compared */
    int db;                 /* Redis: the database number */
    struct conf_login primary, shadow; /* copied: the run outlives a reload's runtime */
    char include[VERIFY_JOB_GLOBS][256], exclude[VERIFY_JOB_GLOBS][256];
    size_t ninclude, nexclude;
    uint64_t chunk;         /* 0: the command's default */
    double sample_rate;     /* 0..1 */
    double max_rate;        /* rows (keys) per second; 0 unbounded */
    uint64_t settle_ms, ttl_tolerance_ms;
};

struct verify_job;

/*
 * verify_job_start - a run of spec (copied) on a new thread.  NULL with err
 * when the thread cannot start.
 */
struct verify_job *verify_job_start(const struct verify_job_spec *spec, char *err, size_t errlen);

/* verify_job_running - 1 until the run ended (equal, different, error or cancelled). */
int verify_job_running(struct verify_job *j);

const char *verify_job_id(const struct verify_job *j);

/*
 * verify_job_json - {"id", "state": running|equal|different|error|cancelled,
 * "listener", "protocol", "dbname", "primary", "shadow", "started",
 * "finished", "progress": {...}, "tables": [...], "differences": [first
 * VERIFY_JOB_DIFFS {table, key, kind}], "differences_total", "error"}: a
 * new object for the caller.  diffs_only: only id, state, finished and the
 * differences (the shadow report's section).
 */
json_t *verify_job_json(struct verify_job *j, int diffs_only);

#define VERIFY_JOB_DIFFS 100

/* verify_job_cancel - ask the run to stop (returns at once); 0, or -1 when it had ended. */
int verify_job_cancel(struct verify_job *j);

/* verify_job_free - cancel, join the thread, free.  NULL is fine. */
void verify_job_free(struct verify_job *j);

#endif /* TANDEM_VERIFY_JOB_H */
