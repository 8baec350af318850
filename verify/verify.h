/*
 * verify.h - tandem verify: are the data of the primary and the shadow the
 * same?  Compared while traffic flows, from the command line.
 *
 *   tandem verify --primary CONNINFO|redis://… --shadow CONNINFO|redis://…
 *                 [--table GLOB]... [--exclude GLOB]... [--chunk ROWS]
 *                 [--sample-rate PCT] [--max-rate ROWS/S] [--settle DUR]
 *                 [--ttl-tolerance DUR] [--json]
 *
 * PostgreSQL (verify_pg.c): each table in primary-key order, in chunks,
 * each chunk hashed inside each database (md5 over the rows' text, so rows
 * do not cross the network); a differing chunk is fetched as per-row
 * hashes and compared row by row; a table without a primary key is
 * compared whole (count and hash).  Redis (verify_redis.c): SCAN of both
 * keyspaces, each key's type, value digest and TTL.
 *
 * A difference found is looked at again, a few times over --settle (1 s):
 * a write still on its way to the shadow is not a difference.  A row the
 * primary itself changed meanwhile (a hot row under live writes) that never
 * matched is counted as unsettled, not as a difference: run again when the
 * writes are quieter to check it.  Exit 0 when equal,
 * 1 when not, 2 on error.
 */
#ifndef TANDEM_VERIFY_H
#define TANDEM_VERIFY_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct pg_conn;      /* libpq's PGconn */
struct redis_link;   /* verify/redis_link.h */
struct verify_run;

enum verify_diff_kind { VERIFY_CHANGED, VERIFY_MISSING_ON_SHADOW, VERIFY_MISSING_ON_PRIMARY };

struct verify_diff {
    enum verify_diff_kind kind;
    char *key; /* the primary key's values, comma-separated (Redis: the key) */
};

/* One table (Redis: the keyspace) and what was found in it. */
struct verify_table {
    char *name;
    int has_key;            /* compared row by row (0: a table without a primary key, whole) */
    int whole_differs;      /* without a key: count or hash differ */
    uint64_t rows_checked;  /* rows (keys) whose chunk was compared */
    uint64_t chunks, chunks_checked;
    uint64_t counts[3];     /* by enum verify_diff_kind, after the re-check */
    uint64_t unsettled;     /* differed, and the primary's own row kept changing: in flight */
    struct verify_diff *diffs; /* the first VERIFY_DIFFS_KEPT of them */
    size_t ndiffs;
};

#define VERIFY_DIFFS_KEPT 100

struct verify_opts {
    const char *primary, *shadow;
    const char **include, **exclude; /* globs on "table" or "schema.table" (Redis: keys) */
    size_t ninclude, nexclude;
    uint64_t chunk;                  /* rows per chunk (Redis: keys per SCAN) */
    double sample_rate;              /* 0..1: the share of chunks (keys) checked */
    double max_rate;                 /* rows (keys) per second; 0: unbounded */
    uint64_t settle_ms;              /* before a difference is looked at again */
    uint64_t ttl_tolerance_ms;       /* Redis: TTLs this close are equal */
    int json;
    int progress;                    /* a progress line on stderr (a terminal) */
    /*
     * on_progress - called on the verifying thread after each chunk (SCAN
     * page) and each table, when the run is consistent: it may read run
     * (not keep pointers into it).  NULL: the progress line, if progress.
     */
    void (*on_progress)(const struct verify_run *run, void *arg);
    void *progress_arg;
    const int *cancel;               /* set (atomically) by another thread: stop; may be NULL */
};

/* The tables compared so far, for the report. */
struct verify_run {
    const struct verify_opts *opts;
    struct verify_table *tables;
    size_t ntables, cap;
    size_t tables_total;             /* selected tables (known once listed; Redis: 1) */
    size_t tables_done;
    uint64_t rows_estimate;          /* planner's estimate (Redis: DBSIZE); 0 unknown */
    uint64_t rows_checked;           /* over every table */
    char error[512];                 /* set when the run failed (exit 2) */
    int cancelled;                   /* it stopped because *opts->cancel was set */
};

struct verify_table *verify_table_add(struct verify_run *run, const char *name);
/* verify_diff_note - one difference; kept up to VERIFY_DIFFS_KEPT. */
void verify_diff_note(struct verify_table *t, enum verify_diff_kind kind, const char *key);
/* verify_selected - name passes --table / --exclude. */
int verify_selected(const struct verify_opts *o, const char *name, const char *qualified);
/* verify_sampled - this chunk (key) is checked at --sample-rate. */
int verify_sampled(const struct verify_opts *o);
/* verify_pace - sleep as --max-rate asks, rows_done since start_ns. */
void verify_pace(struct verify_run *run, uint64_t rows_done, uint64_t start_ns);
void verify_progress(const struct verify_run *run, const char *what, uint64_t rows);
uint64_t verify_now_ns(void);
/* verify_cancelled - 1 when *opts->cancel is set (run->cancelled and run->error set too). */
int verify_cancelled(struct verify_run *run);
/* verify_sleep_ms - sleep ms, in slices, returning early when cancelled. */
void verify_sleep_ms(struct verify_run *run, uint64_t ms);

/* verify_table_differs - the table holds a difference. */
int verify_table_differs(const struct verify_table *t);
/* verify_run_equal - the run finished without error and no table differs. */
int verify_run_equal(const struct verify_run *run, int rc);
/*
 * verify_run_json - {"equal", "tables": [{name, primary_key, equal,
 * rows_checked, chunks, chunks_checked, unsettled, changed,
 * missing_on_shadow, missing_on_primary, differences: [{key, kind}]}]}
 * (plus "error" when set): a new object; the command's --json and the API.
 */
json_t *verify_run_json(const struct verify_run *run, int equal);
const char *verify_kind_name(enum verify_diff_kind kind);
/* verify_run_release - frees what the run allocated (not run itself). */
void verify_run_release(struct verify_run *run);

/* 0: compared (equal or not: see the tables), -1: run->error says why. */
int verify_pg(struct verify_run *run);   /* opts->primary/shadow: libpq connection strings */
int verify_redis(struct verify_run *run); /* opts->primary/shadow: redis:// URLs */
/* The core, on connections the caller opened (and closes). */
int verify_pg_with(struct verify_run *run, struct pg_conn *primary, struct pg_conn *shadow);
int verify_redis_with(struct verify_run *run, struct redis_link *primary,
                      struct redis_link *shadow);
/*
 * verify_redis_login - AUTH (user may be "" or NULL; nothing without a
 * password) and SELECT db on an open connection.  0, or -1 with err (the
 * password never in it).
 */
int verify_redis_login(struct redis_link *c, const char *user, const char *password, int db,
                       char *err, size_t errlen);

/* tandem verify ARGS...: the command (argv[0] is "verify"). */
int verify_main(int argc, char **argv);

#endif /* TANDEM_VERIFY_H */
