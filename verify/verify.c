/*
 * verify.c - tandem verify's command line and report (verify.h).
 */
#include "verify/verify.h"

#include <fnmatch.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf_value.h"

static const char *const kind_names[] = {"changed", "missing_on_shadow", "missing_on_primary"};

uint64_t
verify_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct verify_table *
verify_table_add(struct verify_run *run, const char *name)
{
    if (run->ntables == run->cap) {
        size_t cap = run->cap ? 2 * run->cap : 16;
        struct verify_table *t = realloc(run->tables, cap * sizeof(*t));
        if (t == NULL)
            return NULL;
        run->tables = t;
        run->cap = cap;
    }
    struct verify_table *t = &run->tables[run->ntables];
    memset(t, 0, sizeof(*t));
    if ((t->name = strdup(name)) == NULL)
        return NULL;
    run->ntables++;
    return t;
}

void
verify_diff_note(struct verify_table *t, enum verify_diff_kind kind, const char *key)
{
    t->counts[kind]++;
    if (t->ndiffs == 0 && (t->diffs = calloc(VERIFY_DIFFS_KEPT, sizeof(*t->diffs))) == NULL)
        return;
    if (t->ndiffs < VERIFY_DIFFS_KEPT) {
        t->diffs[t->ndiffs].kind = kind;
        t->diffs[t->ndiffs].key = strdup(key);
        t->ndiffs++;
    }
}

int
verify_selected(const struct verify_opts *o, const char *name, const char *qualified)
{
    int in = o->ninclude == 0;
    for (size_t i = 0; i < o->ninclude && !in; i++)
        in = fnmatch(o->include[i], name, 0) == 0 ||
             (qualified && fnmatch(o->include[i], qualified, 0) == 0);
    for (size_t i = 0; i < o->nexclude && in; i++)
        in = !(fnmatch(o->exclude[i], name, 0) == 0 ||
               (qualified && fnmatch(o->exclude[i], qualified, 0) == 0));
    return in;
}

/* Per thread: the proxy's verify thread shares no random state with anyone. */
static __thread unsigned short sample_seed[3];
static __thread int sample_seeded;

int
verify_sampled(const struct verify_opts *o)
{
    if (o->sample_rate >= 1.0)
        return 1;
    if (!sample_seeded) {
        uint64_t now = verify_now_ns() ^ (uint64_t)(uintptr_t)&sample_seeded;
        memcpy(sample_seed, &now, sizeof(sample_seed));
        sample_seeded = 1;
    }
    return erand48(sample_seed) < o->sample_rate;
}

int
verify_cancelled(struct verify_run *run)
{
    const int *c = run->opts->cancel;
    if (run->cancelled)
        return 1;
    if (c == NULL || !__atomic_load_n(c, __ATOMIC_ACQUIRE))
        return 0;
    run->cancelled = 1;
    snprintf(run->error, sizeof(run->error), "cancelled");
    return 1;
}

#define SLEEP_SLICE_MS 100 /* how late a cancel is noticed while pacing or settling */

void
verify_sleep_ms(struct verify_run *run, uint64_t ms)
{
    while (ms > 0 && !verify_cancelled(run)) {
        uint64_t step = ms < SLEEP_SLICE_MS ? ms : SLEEP_SLICE_MS;
        usleep((useconds_t)(step * 1000));
        ms -= step;
    }
}

void
verify_pace(struct verify_run *run, uint64_t rows_done, uint64_t start_ns)
{
    const struct verify_opts *o = run->opts;
    if (o->max_rate <= 0)
        return;
    double due_s = (double)rows_done / o->max_rate;
    double spent_s = (double)(verify_now_ns() - start_ns) / 1e9;
    if (due_s > spent_s)
        verify_sleep_ms(run, (uint64_t)((due_s - spent_s) * 1e3));
}

void
verify_progress(const struct verify_run *run, const char *what, uint64_t rows)
{
    if (run->opts->on_progress) {
        run->opts->on_progress(run, run->opts->progress_arg);
        return;
    }
    if (!run->opts->progress)
        return;
    fprintf(stderr, "\r\033[Kverify: %s: %llu checked", what, (unsigned long long)rows);
    fflush(stderr);
}

/* ------------------------------------------------------------------ */
/* The report.                                                         */

int
verify_table_differs(const struct verify_table *t)
{
    return t->whole_differs || t->counts[0] + t->counts[1] + t->counts[2] > 0;
}

int
verify_run_equal(const struct verify_run *run, int rc)
{
    int equal = rc == 0;
    for (size_t i = 0; i < run->ntables; i++)
        equal = equal && !verify_table_differs(&run->tables[i]);
    return equal;
}

const char *
verify_kind_name(enum verify_diff_kind kind)
{
    return kind_names[kind];
}

static void
print_text(const struct verify_run *run)
{
    printf("%-40s %12s %10s %10s %12s %12s %10s\n", "TABLE", "CHECKED", "CHUNKS", "CHANGED",
           "NOT_SHADOW", "NOT_PRIMARY", "UNSETTLED");
    for (size_t i = 0; i < run->ntables; i++) {
        const struct verify_table *t = &run->tables[i];
        char chunks[48];
        snprintf(chunks, sizeof(chunks), "%llu/%llu", (unsigned long long)t->chunks_checked,
                 (unsigned long long)t->chunks);
        printf("%-40s %12llu %10s %10llu %12llu %12llu %10llu%s\n", t->name,
               (unsigned long long)t->rows_checked, chunks, (unsigned long long)t->counts[0],
               (unsigned long long)t->counts[1], (unsigned long long)t->counts[2],
               (unsigned long long)t->unsettled,
               !t->has_key ? (t->whole_differs ? "  (no primary key: differs)"
                                               : "  (no primary key: compared whole)")
                           : "");
    }
    for (size_t i = 0; i < run->ntables; i++) {
        const struct verify_table *t = &run->tables[i];
        for (size_t k = 0; k < t->ndiffs; k++)
            printf("%s %s: %s\n", t->name, t->diffs[k].key ? t->diffs[k].key : "?",
                   kind_names[t->diffs[k].kind]);
    }
}

json_t *
verify_run_json(const struct verify_run *run, int equal)
{
    json_t *root = json_object(), *arr = json_array();
    for (size_t i = 0; i < run->ntables; i++) {
        const struct verify_table *t = &run->tables[i];
        json_t *o = json_object(), *d = json_array();
        json_object_set_new(o, "name", json_string(t->name));
        json_object_set_new(o, "primary_key", json_boolean(t->has_key));
        json_object_set_new(o, "equal", json_boolean(!verify_table_differs(t)));
        json_object_set_new(o, "rows_checked", json_integer((json_int_t)t->rows_checked));
        json_object_set_new(o, "chunks", json_integer((json_int_t)t->chunks));
        json_object_set_new(o, "chunks_checked", json_integer((json_int_t)t->chunks_checked));
        json_object_set_new(o, "unsettled", json_integer((json_int_t)t->unsettled));
        for (int k = 0; k < 3; k++)
            json_object_set_new(o, kind_names[k], json_integer((json_int_t)t->counts[k]));
        for (size_t k = 0; k < t->ndiffs; k++) {
            json_t *x = json_object();
            json_object_set_new(x, "key", json_string(t->diffs[k].key ? t->diffs[k].key : ""));
            json_object_set_new(x, "kind", json_string(kind_names[t->diffs[k].kind]));
            json_array_append_new(d, x);
        }
        json_object_set_new(o, "differences", d);
        json_array_append_new(arr, o);
    }
    json_object_set_new(root, "equal", json_boolean(equal));
    json_object_set_new(root, "tables", arr);
    if (run->error[0])
        json_object_set_new(root, "error", json_string(run->error));
    return root;
}

static void
print_json(const struct verify_run *run, int equal)
{
    json_t *root = verify_run_json(run, equal);
    char *s = root ? json_dumps(root, JSON_INDENT(2)) : NULL;
    if (s)
        puts(s);
    free(s);
    json_decref(root);
}

static void
usage(FILE *out)
{
    fputs("usage: tandem verify --primary WHERE --shadow WHERE [options]\n"
          "  WHERE: a libpq connection string (\"host=... dbname=... user=...\") or\n"
          "         redis://[[USER]:PASSWORD@]HOST:PORT[/DB]\n"
          "  --table GLOB        only these tables (Redis: keys); repeatable\n"
          "  --exclude GLOB      not these; repeatable\n"
          "  --chunk ROWS        rows per hashed chunk (10000; Redis: keys per SCAN, 1000)\n"
          "  --sample-rate PCT   check this share of the chunks (Redis: keys), e.g. 10%\n"
          "  --max-rate N        at most N rows (keys) per second\n"
          "  --settle DUR        look at a difference again after DUR (1s)\n"
          "  --ttl-tolerance DUR Redis: TTLs this close are equal (2s)\n"
          "  --json              the result as JSON on stdout\n"
          "Exit status: 0 equal, 1 different, 2 error.\n",
          out);
}

void
verify_run_release(struct verify_run *run)
{
    for (size_t i = 0; i < run->ntables; i++) {
        for (size_t k = 0; k < run->tables[i].ndiffs; k++)
            free(run->tables[i].diffs[k].key);
        free(run->tables[i].diffs);
        free(run->tables[i].name);
    }
    free(run->tables);
    run->tables = NULL;
    run->ntables = run->cap = 0;
}

int
verify_main(int argc, char **argv)
{
    struct verify_opts o = {.sample_rate = 1.0, .settle_ms = 1000, .ttl_tolerance_ms = 2000};
    const char *inc[64], *exc[64];
    struct verify_run run = {.opts = &o};
    uint64_t v;
    uint32_t bp;

    o.include = inc;
    o.exclude = exc;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        int takes = 1;
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            o.json = 1;
            takes = 0;
        } else if (val == NULL) {
            fprintf(stderr, "tandem verify: %s needs a value\n", a);
            return 2;
        } else if (strcmp(a, "--primary") == 0) {
            o.primary = val;
        } else if (strcmp(a, "--shadow") == 0) {
            o.shadow = val;
        } else if (strcmp(a, "--table") == 0 && o.ninclude < 64) {
            inc[o.ninclude++] = val;
        } else if (strcmp(a, "--exclude") == 0 && o.nexclude < 64) {
            exc[o.nexclude++] = val;
        } else if (strcmp(a, "--chunk") == 0 && conf_value_number(val, &v) == CONF_VALUE_OK &&
                   v > 0) {
            o.chunk = v;
        } else if (strcmp(a, "--sample-rate") == 0 &&
                   conf_value_percent(val, &bp) == CONF_VALUE_OK && bp > 0 && bp <= 10000) {
            o.sample_rate = bp / 10000.0;
        } else if (strcmp(a, "--max-rate") == 0 && conf_value_number(val, &v) == CONF_VALUE_OK) {
            o.max_rate = (double)v;
        } else if (strcmp(a, "--settle") == 0 &&
                   conf_value_duration_ms(val, &v) == CONF_VALUE_OK) {
            o.settle_ms = v;
        } else if (strcmp(a, "--ttl-tolerance") == 0 &&
                   conf_value_duration_ms(val, &v) == CONF_VALUE_OK) {
            o.ttl_tolerance_ms = v;
        } else {
            fprintf(stderr, "tandem verify: bad argument %s %s\n", a, val);
            usage(stderr);
            return 2;
        }
        i += takes;
    }
    if (o.primary == NULL || o.shadow == NULL) {
        usage(stderr);
        return 2;
    }
    int redis = strncmp(o.primary, "redis://", 8) == 0;
    if (redis != (strncmp(o.shadow, "redis://", 8) == 0)) {
        fprintf(stderr, "tandem verify: --primary and --shadow must be both Redis or both "
                        "PostgreSQL\n");
        return 2;
    }
    if (o.chunk == 0)
        o.chunk = redis ? 1000 : 10000;
    o.progress = !o.json && isatty(STDERR_FILENO);

    int rc = redis ? verify_redis(&run) : verify_pg(&run);
    if (o.progress)
        fputs("\r\033[K", stderr);
    int equal = verify_run_equal(&run, rc);
    if (o.json)
        print_json(&run, equal);
    else
        print_text(&run);
    if (rc != 0)
        fprintf(stderr, "tandem verify: %s\n", run.error);
    else if (!o.json)
        printf("%s\n", equal ? "equal: no difference found" : "the shadow differs");
    verify_run_release(&run);
    return rc != 0 ? 2 : equal ? 0 : 1;
}
