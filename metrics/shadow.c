/*
 * shadow.c - shadow comparison metrics and the shadow-diff report (see
 * shadow.h for the model).
 *
 * Everything in a shard is guarded by its mutex; the worker owning the shard
 * is its only writer, so the mutex is contended only while a scrape copies
 * that shard.  Process-wide state (the diverged flags, the queue bytes, the
 * sample sequence) is atomic.  Statement entries and their texts are never
 * freed, so a scrape may keep pointers to texts after unlocking.
 */
#include "metrics/shadow.h"

#include <math.h>
#include <pthread.h>
#include <sys/random.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <xxhash.h>

#include "metrics/log.h"
#include "metrics/metric.h"

#define NB (SHADOW_LAT_BOUNDS + 1) /* latency buckets, +Inf last */
#define SLOT_NS ((uint64_t)SHADOW_WINDOW_SLOT_SECONDS * 1000000000u)
#define ST_INDEX (SHADOW_MAX_STATEMENTS * 2) /* open addressing, load <= 1/2 */

/* Metrics: X(id, name, type, help).  Rendered in this order. */
#define SHADOW_METRICS(X)                                                                          \
    X(OPERATIONS, "tandem_shadow_operations_total", "counter",                                     \
      "Mirrored request units compared, by outcome")                                               \
    X(NOISE, "tandem_shadow_noise_total", "counter",                                               \
      "Units of outcome noise, by the reason the difference is not the shadow's fault")            \
    X(SUCCESS_RATIO, "tandem_shadow_validation_success_ratio", "gauge",                            \
      "match / (match + mismatch) over the sliding window; NaN without comparisons")               \
    X(PERFORMANCE_RATIO, "tandem_shadow_performance_ratio", "gauge",                               \
      "Shadow p50 latency over primary p50 latency, over the sliding window; NaN without "         \
      "samples")                                                                                   \
    X(LATENCY, "tandem_shadow_latency_seconds", "histogram",                                       \
      "Latency of compared request units, by side")                                                \
    X(LAG, "tandem_shadow_lag_seconds", "gauge",                                                   \
      "Age of the oldest mirror not yet acknowledged by the shadow")                               \
    X(QUEUE_BYTES, "tandem_shadow_queue_bytes", "gauge", "Bytes waiting in mirror queues")         \
    X(DIVERGED, "tandem_shadow_diverged", "gauge",                                                 \
      "1 once the shadow diverged from the primary, until marked resynchronized")                                \
    X(DETACHED, "tandem_shadow_detached_sessions", "gauge",                                        \
      "Client sessions whose shadow is detached now")                                              \
    X(UNITS_OPEN, "tandem_shadow_units_open", "gauge",                                             \
      "Request units sent by clients and not yet answered by every backend they went to and "      \
      "recorded")                                                                                  \
    X(DROPPED, "tandem_shadow_mirror_dropped_total", "counter",                                    \
      "Mirrors discarded without comparison, by reason")                                           \
    X(RECHECKS, "tandem_shadow_rechecks_total", "counter",                                         \
      "Mismatching reads run again on both backends to confirm them, by result")                   \
    X(ENTRIES_EVICTED, "tandem_shadow_statement_entries_evicted_total", "counter",                 \
      "Statement entries with nothing but matches evicted from a full statement table to make "    \
      "room (their counts stay in the listener's)")                                                \
    X(EVICTED, "tandem_shadow_statements_evicted_total", "counter",                                \
      "Comparisons counted under statement \"other\" because the statement table was full")

enum shadow_metric {
#define X(id, name, type, help) SHADOW_M_##id,
    SHADOW_METRICS(X)
#undef X
    SHADOW_M__COUNT
};

static const struct {
    const char *name, *type, *help;
} shadow_metrics[] = {
#define X(id, name, type, help) {name, type, help},
    SHADOW_METRICS(X)
#undef X
};

static const char *const side_names[SHADOW_SIDE__COUNT] = {"primary", "shadow"};

static const char *const drop_names[] = {
#define X(id, name) name,
    SHADOW_DROP_REASONS(X)
#undef X
};

static const char *const recheck_names[] = {
#define X(id, name) name,
    SHADOW_RECHECK_RESULTS(X)
#undef X
};

/* Finite upper bounds, ns: 50us, 63us, 80us, then R10 per decade to 10s. */
static const uint64_t lat_bounds[SHADOW_LAT_BOUNDS] = {
    50000,      63000,      80000,      100000,     125000,     160000,      200000,     250000,
    315000,     400000,     500000,     630000,     800000,     1000000,     1250000,    1600000,
    2000000,    2500000,    3150000,    4000000,    5000000,    6300000,     8000000,    10000000,
    12500000,   16000000,   20000000,   25000000,   31500000,   40000000,    50000000,   63000000,
    80000000,   100000000,  125000000,  160000000,  200000000,  250000000,   315000000,  400000000,
    500000000,  630000000,  800000000,  1000000000, 1250000000, 1600000000,  2000000000, 2500000000,
    3150000000, 4000000000, 5000000000, 6300000000, 8000000000, 10000000000,
};

static const char other_text[] = "(other: statement table full or not described)";

struct hist {
    uint64_t b[NB];
    uint64_t sum_ns;
};

struct win_slot {
    uint64_t stamp; /* epoch + 1; 0: never used */
    uint32_t outcomes[SHADOW__COUNT];
    uint32_t noise[SHADOW_NOISE__COUNT]; /* outcome noise by reason ([0] unused) */
    uint32_t lat[SHADOW_SIDE__COUNT][NB];
};

struct stmt {
    uint64_t id;
    int listener;
    bool other;
    const char *text; /* immutable while the entry lives (eviction frees it) */
    uint64_t count[SHADOW__COUNT];
    uint64_t noise[SHADOW_NOISE__COUNT]; /* count[SHADOW_NOISE] by reason ([0] unused) */
    struct hist lat[SHADOW_SIDE__COUNT];
    uint64_t plan_check_ns;               /* plan_due_locked looks again from then */
    char *plans[SHADOW_SIDE__COUNT];      /* EXPLAIN (FORMAT JSON) of each side, or NULL */
};

struct lis {
    uint64_t outcomes[SHADOW__COUNT];
    uint64_t noise[SHADOW_NOISE__COUNT];
    struct hist lat[SHADOW_SIDE__COUNT];
    struct win_slot win[SHADOW_WINDOW_SLOTS];
    uint64_t dropped[SHADOW_DROP__COUNT];
    uint64_t rechecks[SHADOW_RECHECK__COUNT];
    uint64_t entries_evicted;
    uint64_t evicted;
    uint64_t undescribed;
    struct stmt other;
};

struct sample {
    uint64_t seq; /* process-wide order; 0: empty */
    int64_t time_ms;
    int listener;
    enum shadow_outcome outcome;
    enum shadow_noise_reason reason; /* of a noise outcome; NONE for the others */
    bool fp_known;
    uint64_t fp;
    const char *text; /* the statement's text: immutable */
    char side[SHADOW_SIDE__COUNT][SHADOW_SUMMARY_MAX];
};

struct ring {
    struct sample *s;
    unsigned cap, next;
};

struct shadow_shard {
    pthread_mutex_t lock;
    struct lis *lis[METRIC_MAX_LISTENERS];
    double lag[METRIC_MAX_LISTENERS];
    uint64_t detached[METRIC_MAX_LISTENERS];
    /* written by the shard's worker alone, without the lock: read live at every scrape, so
     * a test (or an operator) can wait for "everything sent was answered" exactly */
    int64_t units_open[METRIC_MAX_LISTENERS];

    struct stmt *stmts[SHADOW_MAX_STATEMENTS];
    int nstmts;
    int32_t st_index[ST_INDEX]; /* -1 empty */
    uint64_t rng;               /* xorshift state: eviction's samples */

    struct ring rings[2]; /* 0: mismatches, 1: others */
};

static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shadow_shard *shards[METRIC_MAX_SHARDS];
static int nshards;
static int diverged[METRIC_MAX_LISTENERS];
static pthread_mutex_t divergence_lock = PTHREAD_MUTEX_INITIALIZER;
static struct shadow_divergence divergences[METRIC_MAX_LISTENERS];
static uint64_t queue_bytes;
static uint64_t sample_seq;
static uint64_t (*clock_fn)(void);

/* ---- small helpers ----------------------------------------------------- */

const char *
shadow_drop_reason_name(enum shadow_drop_reason r)
{
    return (unsigned)r < SHADOW_DROP__COUNT ? drop_names[r] : "unknown";
}

uint64_t
shadow_latency_bound_ns(int i)
{
    return i >= 0 && i < SHADOW_LAT_BOUNDS ? lat_bounds[i] : 0;
}

void
shadow_set_clock(uint64_t (*now_ns)(void))
{
    __atomic_store_n(&clock_fn, now_ns, __ATOMIC_RELEASE);
}

static uint64_t
clock_now(void)
{
    uint64_t (*fn)(void) = __atomic_load_n(&clock_fn, __ATOMIC_ACQUIRE);
    struct timespec ts;

    if (fn != NULL)
        return fn();
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool
slot_ok(int slot)
{
    return slot >= 0 && slot < METRIC_MAX_LISTENERS;
}

/* The bucket of a latency: the first bound >= ns, or the +Inf bucket. */
static int
lat_bucket(uint64_t ns)
{
    int lo = 0, hi = SHADOW_LAT_BOUNDS;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        if (ns <= lat_bounds[mid])
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo; /* SHADOW_LAT_BOUNDS is the +Inf bucket */
}

/* The Prometheus buckets: the 1-2.5-5 series among the fine bounds. */
static bool
lat_exposed(int i)
{
    uint64_t v = lat_bounds[i];
    while (v >= 10 && v % 10 == 0)
        v /= 10;
    return v == 1 || v == 25 || v == 5;
}

/*
 * quantile - q-quantile in seconds of a histogram of n buckets (+Inf
 * last), interpolating linearly inside the bucket as histogram_quantile
 * does; the +Inf bucket answers the highest finite bound.  NaN when empty.
 */
static double
quantile(const uint64_t *b, double q)
{
    uint64_t total = 0, cum = 0;
    double rank;

    for (int i = 0; i < NB; i++)
        total += b[i];
    if (total == 0)
        return NAN;
    rank = q * (double)total;
    for (int i = 0; i < NB; i++) {
        if (b[i] == 0)
            continue;
        if ((double)(cum + b[i]) >= rank) {
            double lo, hi;
            if (i == NB - 1)
                return (double)lat_bounds[SHADOW_LAT_BOUNDS - 1] / 1e9;
            lo = i == 0 ? 0 : (double)lat_bounds[i - 1];
            hi = (double)lat_bounds[i];
            return (lo + (hi - lo) * (rank - (double)cum) / (double)b[i]) / 1e9;
        }
        cum += b[i];
    }
    return (double)lat_bounds[SHADOW_LAT_BOUNDS - 1] / 1e9;
}

static double
ratio(double num, double den)
{
    if (isnan(num) || isnan(den) || den <= 0)
        return NAN;
    return num / den;
}

/* Length of the valid UTF-8 sequence at s[0..n), or 0 when invalid. */
static size_t
utf8_seq(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    size_t len;
    unsigned min;
    uint32_t cp;

    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, min = 0x80, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, min = 0x800, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, min = 0x10000, cp = c & 0x07;
    else
        return 0;
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/*
 * copy_text - copy src[0..len) into dst (cap > 0), NUL-terminated, as valid
 * UTF-8: a byte that does not start a valid sequence becomes '?', and the
 * copy stops before a sequence that would not fit.  NUL bytes end it.
 */
static void
copy_text(char *dst, size_t cap, const char *src, size_t len)
{
    const unsigned char *s = (const unsigned char *)src;
    size_t i = 0, o = 0;

    while (i < len && s[i] != 0) {
        size_t n = utf8_seq(s + i, len - i);
        if (n == 0) {
            if (o + 1 >= cap)
                break;
            dst[o++] = '?';
            i++;
            continue;
        }
        if (o + n >= cap)
            break;
        memcpy(dst + o, s + i, n);
        o += n;
        i += n;
    }
    dst[o] = 0;
}

/* A new copy_text of the NUL-terminated src, at most maxlen bytes. */
static char *
dup_text(const char *src, size_t maxlen)
{
    size_t len = strnlen(src, maxlen + 4);
    size_t cap = (len < maxlen ? len : maxlen) + 1;
    char *t = malloc(cap);
    if (t != NULL)
        copy_text(t, cap, src, len);
    return t;
}

/* ---- shards ------------------------------------------------------------ */

struct shadow_shard *
shadow_shard_new(void)
{
    struct shadow_shard *sh = calloc(1, sizeof(*sh));
    if (sh == NULL)
        return NULL;
    sh->rings[0].s = calloc(SHADOW_SAMPLES, sizeof(struct sample));
    sh->rings[1].s = calloc(SHADOW_OTHER_SAMPLES, sizeof(struct sample));
    if (sh->rings[0].s == NULL || sh->rings[1].s == NULL)
        goto out_free;
    sh->rings[0].cap = SHADOW_SAMPLES;
    sh->rings[1].cap = SHADOW_OTHER_SAMPLES;
    for (int i = 0; i < ST_INDEX; i++)
        sh->st_index[i] = -1;
    sh->rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)(uintptr_t)sh;
    if (pthread_mutex_init(&sh->lock, NULL) != 0)
        goto out_free;

    pthread_mutex_lock(&registry_lock);
    if (nshards == METRIC_MAX_SHARDS) {
        pthread_mutex_unlock(&registry_lock);
        pthread_mutex_destroy(&sh->lock);
        goto out_free;
    }
    shards[nshards] = sh;
    __atomic_store_n(&nshards, nshards + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&registry_lock);
    return sh;

out_free:
    free(sh->rings[1].s);
    free(sh->rings[0].s);
    free(sh);
    return NULL;
}

/* The listener block of slot, allocated on first use; NULL out of memory. */
static struct lis *
get_lis(struct shadow_shard *sh, int slot)
{
    struct lis *l = sh->lis[slot];
    if (l != NULL)
        return l;
    l = calloc(1, sizeof(*l));
    if (l == NULL)
        return NULL;
    l->other.listener = slot;
    l->other.other = true;
    l->other.text = other_text;
    sh->lis[slot] = l;
    return l;
}

static uint32_t
st_hash(int slot, uint64_t id)
{
    return (uint32_t)XXH3_64bits_withSeed(&id, sizeof(id), (uint64_t)slot) & (ST_INDEX - 1);
}

static int
stmt_find(const struct shadow_shard *sh, int slot, uint64_t id)
{
    for (uint32_t h = st_hash(slot, id);; h = (h + 1) & (ST_INDEX - 1)) {
        int i = sh->st_index[h];
        if (i < 0)
            return -1;
        if (sh->stmts[i]->id == id && sh->stmts[i]->listener == slot)
            return i;
    }
}

static void
index_put(struct shadow_shard *sh, int i)
{
    uint32_t h = st_hash(sh->stmts[i]->listener, sh->stmts[i]->id);
    while (sh->st_index[h] >= 0)
        h = (h + 1) & (ST_INDEX - 1);
    sh->st_index[h] = i;
}

/* Take entry i out of the index: linear probing's backward-shift deletion (no tombstones). */
static void
index_remove(struct shadow_shard *sh, int i)
{
    uint32_t hole = st_hash(sh->stmts[i]->listener, sh->stmts[i]->id);
    while (sh->st_index[hole] != i)
        hole = (hole + 1) & (ST_INDEX - 1);
    for (uint32_t j = (hole + 1) & (ST_INDEX - 1);; j = (j + 1) & (ST_INDEX - 1)) {
        int e = sh->st_index[j];
        if (e < 0)
            break;
        uint32_t home = st_hash(sh->stmts[e]->listener, sh->stmts[e]->id);
        /* e may fill the hole unless its home lies cyclically in (hole, j] */
        int stays = hole < j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (!stays) {
            sh->st_index[hole] = e;
            hole = j;
        }
    }
    sh->st_index[hole] = -1;
}

/*
 * An entry a report shows nothing of but counts and latencies: no sample
 * of it is in a ring (so its text may go), and it says nothing against
 * the shadow.
 */
static bool
stmt_clean(const struct stmt *st)
{
    for (int o = 0; o < SHADOW__COUNT; o++)
        if (o != SHADOW_MATCH && o != SHADOW_DROPPED && st->count[o] > 0)
            return false;
    return true;
}

#define EVICT_PROBES 32

/* The least used clean entry of EVICT_PROBES picked at random; -1 when none was clean. */
static int
stmt_victim(struct shadow_shard *sh)
{
    int victim = -1;
    uint64_t least = UINT64_MAX;

    for (int k = 0; k < EVICT_PROBES; k++) {
        sh->rng ^= sh->rng << 13;
        sh->rng ^= sh->rng >> 7;
        sh->rng ^= sh->rng << 17;
        int i = (int)(sh->rng % (uint64_t)sh->nstmts);
        const struct stmt *st = sh->stmts[i];
        if (!stmt_clean(st))
            continue;
        uint64_t used = 0;
        for (int o = 0; o < SHADOW__COUNT; o++)
            used += st->count[o];
        if (used < least) {
            least = used;
            victim = i;
        }
    }
    return victim;
}

/*
 * A new statement entry: in a free place, or in place of a clean one
 * (*evicted set) when the table is full.  -1 when it is full of entries
 * worth keeping, or out of memory.
 */
static int
stmt_add(struct shadow_shard *sh, int slot, uint64_t id, const char *text, int *evicted)
{
    struct stmt *st;
    char *t = dup_text(text, SHADOW_KEY_TEXT_MAX - 1);
    int i = sh->nstmts;

    *evicted = 0;
    if (t == NULL)
        return -1;
    if (i == SHADOW_MAX_STATEMENTS) {
        if ((i = stmt_victim(sh)) < 0) {
            free(t);
            return -1;
        }
        st = sh->stmts[i];
        index_remove(sh, i);
        free((char *)st->text);
        for (int s = 0; s < SHADOW_SIDE__COUNT; s++)
            free(st->plans[s]);
        memset(st, 0, sizeof(*st));
        *evicted = 1;
    } else if ((st = calloc(1, sizeof(*st))) == NULL) {
        free(t);
        return -1;
    } else {
        sh->stmts[sh->nstmts++] = st;
    }
    st->id = id;
    st->listener = slot;
    st->text = t;
    index_put(sh, i);
    return i;
}

/* ---- recording --------------------------------------------------------- */

static void
hist_add(struct hist *h, int b, uint64_t ns)
{
    h->b[b]++;
    h->sum_ns += ns;
}

static int samples_mode[METRIC_MAX_LISTENERS]; /* enum conf_samples, atomic */
static uint64_t redact_seed;                    /* per process: a tag proves nothing outside it */
static pthread_once_t redact_once = PTHREAD_ONCE_INIT;

static void
redact_seed_init(void)
{
    if (getrandom(&redact_seed, sizeof(redact_seed), 0) != sizeof(redact_seed))
        redact_seed = (uint64_t)wall_ms() * 0x9E3779B97F4A7C15ull;
}

void
shadow_set_samples(int slot, int mode)
{
    if (slot_ok(slot))
        __atomic_store_n(&samples_mode[slot], mode, __ATOMIC_RELAXED);
}

static int
samples_of(int slot)
{
    return slot_ok(slot) ? __atomic_load_n(&samples_mode[slot], __ATOMIC_RELAXED)
                         : CONF_SAMPLES_VALUES;
}

/* What a sample keeps of an answer's text t under the listener's compare { samples }. */
static void
sample_text(char *out, int mode, const char *t)
{
    size_t n = strnlen(t, SHADOW_SUMMARY_MAX + 4);
    if (mode == CONF_SAMPLES_NONE || (mode == CONF_SAMPLES_REDACTED && n == 0)) {
        out[0] = '\0';
        return;
    }
    if (mode == CONF_SAMPLES_REDACTED) {
        pthread_once(&redact_once, redact_seed_init);
        snprintf(out, SHADOW_SUMMARY_MAX, "redacted: %zu bytes, tag %08x", n,
                 (unsigned)(XXH3_64bits_withSeed(t, n, redact_seed) >> 32));
        return;
    }
    copy_text(out, SHADOW_SUMMARY_MAX, t, n);
}

static void
sample_put(struct ring *r, int slot, const struct stmt *st, bool fp_known, uint64_t fp,
           enum shadow_outcome o, enum shadow_noise_reason reason, const char *psum,
           const char *ssum)
{
    struct sample *s = &r->s[r->next];
    const char *sum[SHADOW_SIDE__COUNT] = {psum, ssum};

    r->next = (r->next + 1) % r->cap;
    s->seq = __atomic_add_fetch(&sample_seq, 1, __ATOMIC_RELAXED);
    s->time_ms = wall_ms();
    s->listener = slot;
    s->outcome = o;
    s->reason = reason;
    s->fp_known = fp_known;
    s->fp = fp;
    s->text = st->text;
    int mode = samples_of(slot);
    for (int i = 0; i < SHADOW_SIDE__COUNT; i++)
        sample_text(s->side[i], mode, sum[i] != NULL ? sum[i] : "");
}

/* Count one unit into l and st.  Called with the shard locked. */
static void
record_locked(struct shadow_shard *sh, struct lis *l, int slot, struct stmt *st, bool fp_known,
              uint64_t fp, enum shadow_outcome o, enum shadow_noise_reason reason,
              uint64_t p_ns, uint64_t s_ns, const char *psum, const char *ssum, uint64_t now)
{
    uint64_t ns[SHADOW_SIDE__COUNT] = {p_ns, s_ns};
    uint64_t epoch = now / SLOT_NS;
    struct win_slot *w = &l->win[epoch % SHADOW_WINDOW_SLOTS];

    if (w->stamp != epoch + 1) {
        memset(w, 0, sizeof(*w));
        w->stamp = epoch + 1;
    }
    l->outcomes[o]++;
    st->count[o]++;
    w->outcomes[o]++;
    if (o == SHADOW_NOISE) {
        l->noise[reason]++;
        st->noise[reason]++;
        w->noise[reason]++;
    }
    for (int i = 0; i < SHADOW_SIDE__COUNT; i++) {
        int b;
        if (ns[i] == 0)
            continue;
        b = lat_bucket(ns[i]);
        hist_add(&l->lat[i], b, ns[i]);
        hist_add(&st->lat[i], b, ns[i]);
        w->lat[i][b]++;
    }
    if (o == SHADOW_MISMATCH)
        sample_put(&sh->rings[0], slot, st, fp_known, fp, o, reason, psum, ssum);
    else if (o == SHADOW_NOISE || o == SHADOW_SHADOW_ERROR || o == SHADOW_PRIMARY_ERROR)
        sample_put(&sh->rings[1], slot, st, fp_known, fp, o, reason, psum, ssum);
}

static int plan_due_locked(struct stmt *st, uint64_t now, unsigned min_ratio);

void
shadow_record(struct shadow_shard *sh, int slot, uint64_t key_id, const char *key_text,
              enum shadow_outcome o, enum shadow_noise_reason reason, uint64_t p_ns,
              uint64_t s_ns, const char *psum, const char *ssum)
{
    (void)shadow_record_slower(sh, slot, key_id, key_text, o, reason, p_ns, s_ns, psum, ssum, 0);
}

int
shadow_record_slower(struct shadow_shard *sh, int slot, uint64_t key_id, const char *key_text,
                     enum shadow_outcome o, enum shadow_noise_reason reason, uint64_t p_ns,
                     uint64_t s_ns, const char *psum, const char *ssum, unsigned plan_ratio)
{
    uint64_t now;
    struct lis *l;
    struct stmt *st;
    int i, due = 0;

    if (sh == NULL || !slot_ok(slot) || (unsigned)o >= SHADOW__COUNT)
        return 0;
    if (o != SHADOW_NOISE)
        reason = SHADOW_NOISE_NONE;
    else if (reason <= SHADOW_NOISE_NONE || reason >= SHADOW_NOISE__COUNT)
        reason = SHADOW_NOISE_VOLATILE; /* noise's meaning before it had reasons */
    now = clock_now();
    pthread_mutex_lock(&sh->lock);
    l = get_lis(sh, slot);
    if (l == NULL)
        goto out;
    if (key_text == NULL) {
        /* the caller could not name it (over its describe budget): no
         * fingerprint to show, and no entry to find or take */
        l->undescribed++;
        record_locked(sh, l, slot, &l->other, false, 0, o, reason, p_ns, s_ns, psum, ssum, now);
        goto out;
    }
    i = stmt_find(sh, slot, key_id);
    if (i < 0) {
        int evicted;
        i = stmt_add(sh, slot, key_id, key_text, &evicted);
        l->entries_evicted += evicted;
    }
    if (i >= 0) {
        st = sh->stmts[i];
    } else {
        st = &l->other;
        l->evicted++;
    }
    record_locked(sh, l, slot, st, true, key_id, o, reason, p_ns, s_ns, psum, ssum, now);
    if (i >= 0 && plan_ratio > 0)
        due = plan_due_locked(st, now, plan_ratio);
out:
    pthread_mutex_unlock(&sh->lock);
    return due;
}

/* ---- plans of slower statements ----------------------------------------- */

static uint64_t hist_count(const uint64_t *b);

/* Is st slower on the shadow by min_ratio, its plans not fetched lately?  Shard locked. */
static int
plan_due_locked(struct stmt *st, uint64_t now, unsigned min_ratio)
{
    const uint64_t *p = st->lat[SHADOW_SIDE_PRIMARY].b, *s = st->lat[SHADOW_SIDE_SHADOW].b;

    if (now < st->plan_check_ns || hist_count(p) < SHADOW_PLAN_MIN_SAMPLES ||
        hist_count(s) < SHADOW_PLAN_MIN_SAMPLES)
        return 0;
    st->plan_check_ns = now + SHADOW_PLAN_CHECK_NS;
    double r = ratio(quantile(s, 0.5), quantile(p, 0.5));
    if (isnan(r) || r < (double)min_ratio)
        return 0;
    st->plan_check_ns = now + SHADOW_PLAN_INTERVAL_NS;
    return 1;
}

void
shadow_set_plans(struct shadow_shard *sh, int slot, uint64_t key_id, const char *primary_plan,
                 const char *shadow_plan)
{
    const char *plan[SHADOW_SIDE__COUNT] = {primary_plan, shadow_plan};

    if (sh == NULL || !slot_ok(slot) || samples_of(slot) != CONF_SAMPLES_VALUES)
        return; /* a plan shows the parameters' values */
    pthread_mutex_lock(&sh->lock);
    int i = stmt_find(sh, slot, key_id);
    if (i >= 0) /* gone: evicted meanwhile */
        for (int s = 0; s < SHADOW_SIDE__COUNT; s++) {
            free(sh->stmts[i]->plans[s]);
            sh->stmts[i]->plans[s] = plan[s] ? strndup(plan[s], SHADOW_PLAN_MAX) : NULL;
        }
    pthread_mutex_unlock(&sh->lock);
}

/* ---- gauges ------------------------------------------------------------ */

void
shadow_set_lag(struct shadow_shard *sh, int slot, double seconds)
{
    if (sh == NULL || !slot_ok(slot))
        return;
    pthread_mutex_lock(&sh->lock);
    sh->lag[slot] = seconds > 0 ? seconds : 0;
    pthread_mutex_unlock(&sh->lock);
}

void
shadow_set_detached(struct shadow_shard *sh, int slot, uint64_t sessions)
{
    if (sh == NULL || !slot_ok(slot))
        return;
    pthread_mutex_lock(&sh->lock);
    sh->detached[slot] = sessions;
    pthread_mutex_unlock(&sh->lock);
}

void
shadow_units_open(struct shadow_shard *sh, int slot, int delta)
{
    if (sh == NULL || !slot_ok(slot))
        return;
    int64_t *n = &sh->units_open[slot];
    __atomic_store_n(n, __atomic_load_n(n, __ATOMIC_RELAXED) + delta, __ATOMIC_RELAXED);
}

void
shadow_count_recheck(struct shadow_shard *sh, int slot, enum shadow_recheck_result r)
{
    struct lis *l;

    if (sh == NULL || !slot_ok(slot) || (unsigned)r >= SHADOW_RECHECK__COUNT)
        return;
    pthread_mutex_lock(&sh->lock);
    l = get_lis(sh, slot);
    if (l != NULL)
        l->rechecks[r]++;
    pthread_mutex_unlock(&sh->lock);
}

/* Only mismatches get here, so a lock is fine. */
static pthread_mutex_t recheck_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    uint64_t second;
    uint32_t started; /* in that second */
    uint32_t inflight;
} recheck_budget[METRIC_MAX_LISTENERS];

int
shadow_recheck_take(int slot, uint32_t per_second, uint64_t now_s)
{
    int ok = 0;

    if (!slot_ok(slot) || per_second == 0)
        return 0;
    pthread_mutex_lock(&recheck_lock);
    if (recheck_budget[slot].second != now_s) {
        recheck_budget[slot].second = now_s;
        recheck_budget[slot].started = 0;
    }
    if (recheck_budget[slot].started < per_second &&
        recheck_budget[slot].inflight < SHADOW_RECHECK_INFLIGHT_MAX) {
        recheck_budget[slot].started++;
        recheck_budget[slot].inflight++;
        ok = 1;
    }
    pthread_mutex_unlock(&recheck_lock);
    return ok;
}

void
shadow_recheck_give(int slot)
{
    if (!slot_ok(slot))
        return;
    pthread_mutex_lock(&recheck_lock);
    recheck_budget[slot].inflight--;
    pthread_mutex_unlock(&recheck_lock);
}

void
shadow_count_dropped(struct shadow_shard *sh, int slot, enum shadow_drop_reason r, uint64_t n)
{
    struct lis *l;

    if (sh == NULL || !slot_ok(slot) || (unsigned)r >= SHADOW_DROP__COUNT)
        return;
    pthread_mutex_lock(&sh->lock);
    l = get_lis(sh, slot);
    if (l != NULL)
        l->dropped[r] += n;
    pthread_mutex_unlock(&sh->lock);
}

void
shadow_set_queue_bytes(uint64_t bytes)
{
    __atomic_store_n(&queue_bytes, bytes, __ATOMIC_RELAXED);
}

void
shadow_set_diverged(int slot)
{
    if (slot_ok(slot))
        __atomic_store_n(&diverged[slot], 1, __ATOMIC_RELAXED);
}

/* Rare (a write lost to the shadow): a lock is fine here. */
void
shadow_note_divergence(int slot, const char *reason, const char *statement, size_t len)
{
    if (!slot_ok(slot))
        return;
    __atomic_store_n(&diverged[slot], 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&divergence_lock);
    struct shadow_divergence *d = &divergences[slot];
    if (d->count++ == 0) {
        snprintf(d->reason, sizeof(d->reason), "%s", reason ? reason : "");
        copy_text(d->statement, sizeof(d->statement), statement ? statement : "",
                  statement ? len : 0);
    }
    pthread_mutex_unlock(&divergence_lock);
}

int
shadow_diverged(int slot)
{
    return slot_ok(slot) && __atomic_load_n(&diverged[slot], __ATOMIC_RELAXED) != 0;
}

void
shadow_clear_divergence(int slot)
{
    if (!slot_ok(slot))
        return;
    pthread_mutex_lock(&divergence_lock);
    memset(&divergences[slot], 0, sizeof(divergences[slot]));
    __atomic_store_n(&diverged[slot], 0, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&divergence_lock);
}

void
shadow_divergence(int slot, struct shadow_divergence *out)
{
    memset(out, 0, sizeof(*out));
    if (!slot_ok(slot))
        return;
    pthread_mutex_lock(&divergence_lock);
    *out = divergences[slot];
    pthread_mutex_unlock(&divergence_lock);
}

/* ---- aggregation (scrape side) ----------------------------------------- */

struct agg {
    uint64_t outcomes[SHADOW__COUNT];
    uint64_t win_outcomes[SHADOW__COUNT];
    uint64_t noise[SHADOW_NOISE__COUNT];
    uint64_t win_noise[SHADOW_NOISE__COUNT];
    struct hist lat[SHADOW_SIDE__COUNT];
    uint64_t win_lat[SHADOW_SIDE__COUNT][NB];
    uint64_t dropped[SHADOW_DROP__COUNT];
    uint64_t rechecks[SHADOW_RECHECK__COUNT];
    uint64_t entries_evicted, evicted, undescribed;
    double lag;
    uint64_t detached;
    int64_t units_open;
};

static unsigned
window_slots(unsigned seconds)
{
    unsigned n = (seconds + SHADOW_WINDOW_SLOT_SECONDS - 1) / SHADOW_WINDOW_SLOT_SECONDS;
    return n == 0 || n > SHADOW_WINDOW_SLOTS ? SHADOW_WINDOW_SLOTS : n;
}

/* Is a slot stamped for an epoch among the nslots ending at now_epoch? */
static bool
slot_live(const struct win_slot *w, uint64_t now_epoch, unsigned nslots)
{
    uint64_t epoch;
    if (w->stamp == 0)
        return false;
    epoch = w->stamp - 1;
    return epoch <= now_epoch && now_epoch - epoch < nslots;
}

static void
agg_lis_locked(const struct shadow_shard *sh, int slot, uint64_t now_epoch, unsigned nslots,
               struct agg *a)
{
    const struct lis *l = sh->lis[slot];

    if (sh->lag[slot] > a->lag)
        a->lag = sh->lag[slot];
    a->detached += sh->detached[slot];
    a->units_open += __atomic_load_n(&sh->units_open[slot], __ATOMIC_RELAXED);
    if (l == NULL)
        return;
    for (int o = 0; o < SHADOW__COUNT; o++)
        a->outcomes[o] += l->outcomes[o];
    for (int r = 0; r < SHADOW_NOISE__COUNT; r++)
        a->noise[r] += l->noise[r];
    for (int s = 0; s < SHADOW_SIDE__COUNT; s++) {
        for (int b = 0; b < NB; b++)
            a->lat[s].b[b] += l->lat[s].b[b];
        a->lat[s].sum_ns += l->lat[s].sum_ns;
    }
    for (int r = 0; r < SHADOW_DROP__COUNT; r++)
        a->dropped[r] += l->dropped[r];
    for (int r = 0; r < SHADOW_RECHECK__COUNT; r++)
        a->rechecks[r] += l->rechecks[r];
    a->entries_evicted += l->entries_evicted;
    a->evicted += l->evicted;
    a->undescribed += l->undescribed;
    for (int i = 0; i < SHADOW_WINDOW_SLOTS; i++) {
        const struct win_slot *w = &l->win[i];
        if (!slot_live(w, now_epoch, nslots))
            continue;
        for (int o = 0; o < SHADOW__COUNT; o++)
            a->win_outcomes[o] += w->outcomes[o];
        for (int r = 0; r < SHADOW_NOISE__COUNT; r++)
            a->win_noise[r] += w->noise[r];
        for (int s = 0; s < SHADOW_SIDE__COUNT; s++)
            for (int b = 0; b < NB; b++)
                a->win_lat[s][b] += w->lat[s][b];
    }
}

/* Sum listeners [0, nl) over every shard into a[0..nl). */
static void
aggregate(struct agg *a, int nl, unsigned nslots)
{
    int n = __atomic_load_n(&nshards, __ATOMIC_ACQUIRE);
    uint64_t now_epoch = clock_now() / SLOT_NS;

    for (int i = 0; i < n; i++) {
        struct shadow_shard *sh = shards[i];
        pthread_mutex_lock(&sh->lock);
        for (int l = 0; l < nl; l++)
            agg_lis_locked(sh, l, now_epoch, nslots, &a[l]);
        pthread_mutex_unlock(&sh->lock);
    }
}

static uint64_t
hist_count(const uint64_t *b)
{
    uint64_t n = 0;
    for (int i = 0; i < NB; i++)
        n += b[i];
    return n;
}

static void
fill_stats(const struct agg *a, int slot, struct shadow_listener_stats *out)
{
    uint64_t m = a->win_outcomes[SHADOW_MATCH], mm = a->win_outcomes[SHADOW_MISMATCH];

    memset(out, 0, sizeof(*out));
    memcpy(out->outcomes, a->outcomes, sizeof(out->outcomes));
    memcpy(out->window_outcomes, a->win_outcomes, sizeof(out->window_outcomes));
    memcpy(out->noise, a->noise, sizeof(out->noise));
    memcpy(out->window_noise, a->win_noise, sizeof(out->window_noise));
    out->validation_success_ratio = m + mm > 0 ? (double)m / (double)(m + mm) : NAN;
    out->primary_p50_seconds = quantile(a->win_lat[SHADOW_SIDE_PRIMARY], 0.5);
    out->shadow_p50_seconds = quantile(a->win_lat[SHADOW_SIDE_SHADOW], 0.5);
    out->performance_ratio = ratio(out->shadow_p50_seconds, out->primary_p50_seconds);
    out->primary_p99_seconds = quantile(a->win_lat[SHADOW_SIDE_PRIMARY], 0.99);
    out->shadow_p99_seconds = quantile(a->win_lat[SHADOW_SIDE_SHADOW], 0.99);
    for (int s = 0; s < SHADOW_SIDE__COUNT; s++)
        out->window_latency_count[s] = hist_count(a->win_lat[s]);
    for (int s = 0; s < SHADOW_SIDE__COUNT; s++) {
        out->latency_count[s] = hist_count(a->lat[s].b);
        out->latency_sum_seconds[s] = (double)a->lat[s].sum_ns / 1e9;
    }
    memcpy(out->dropped, a->dropped, sizeof(out->dropped));
    memcpy(out->rechecks, a->rechecks, sizeof(out->rechecks));
    out->statements_evicted = a->evicted;
    out->statement_entries_evicted = a->entries_evicted;
    out->statements_undescribed = a->undescribed;
    out->lag_seconds = a->lag;
    out->detached_sessions = a->detached;
    out->units_open = a->units_open > 0 ? (uint64_t)a->units_open : 0;
    out->diverged = __atomic_load_n(&diverged[slot], __ATOMIC_RELAXED) != 0;
}

int
shadow_listener_stats(int slot, unsigned window_seconds, struct shadow_listener_stats *out)
{
    struct agg *a;

    memset(out, 0, sizeof(*out));
    if (!slot_ok(slot))
        return -1;
    a = calloc((size_t)slot + 1, sizeof(*a));
    if (a == NULL)
        return -1;
    aggregate(a, slot + 1, window_slots(window_seconds));
    fill_stats(&a[slot], slot, out);
    free(a);
    return 0;
}

/* ---- Prometheus -------------------------------------------------------- */

/* name{listener="..." -- the caller closes the braces */
static void
series(FILE *out, const char *name, const char *suffix, int slot)
{
    const char *l = metric_listener_name(slot);
    fprintf(out, "%s%s{listener=\"", name, suffix);
    metric_put_label(out, l != NULL ? l : "");
    fputc('"', out);
}


static void
put_double(FILE *out, double v)
{
    if (isnan(v))
        fputs("NaN", out);
    else if (isinf(v))
        fputs(v > 0 ? "+Inf" : "-Inf", out);
    else
        fprintf(out, "%.9g", v);
}

/* name{listener="..."} VALUE: a gauge with the listener label only. */
static void
gauge(FILE *out, const char *name, int slot, double v)
{
    series(out, name, "", slot);
    fputs("} ", out);
    put_double(out, v);
    fputc('\n', out);
}

void
shadow_render_prometheus(FILE *out)
{
    int nl = metric_listener_count();
    struct agg *a = calloc(METRIC_MAX_LISTENERS, sizeof(*a));
    struct shadow_listener_stats *stats = calloc(METRIC_MAX_LISTENERS, sizeof(*stats));

    if (a == NULL || stats == NULL)
        goto out_free;
    aggregate(a, nl, SHADOW_WINDOW_SLOTS);
    for (int l = 0; l < nl; l++)
        fill_stats(&a[l], l, &stats[l]);

    for (int m = 0; m < SHADOW_M__COUNT; m++) {
        const char *name = shadow_metrics[m].name;
        fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, shadow_metrics[m].help, name,
                shadow_metrics[m].type);
        if (m == SHADOW_M_QUEUE_BYTES) {
            fprintf(out, "%s %llu\n", name,
                    (unsigned long long)__atomic_load_n(&queue_bytes, __ATOMIC_RELAXED));
            continue;
        }
        for (int l = 0; l < nl; l++) {
            const struct shadow_listener_stats *st = &stats[l];
            switch ((enum shadow_metric)m) {
            case SHADOW_M_OPERATIONS:
                for (int o = 0; o < SHADOW__COUNT; o++) {
                    series(out, name, "", l);
                    fprintf(out, ",outcome=\"%s\"} %llu\n",
                            shadow_outcome_name((enum shadow_outcome)o),
                            (unsigned long long)st->outcomes[o]);
                }
                break;
            case SHADOW_M_NOISE:
                for (int r = SHADOW_NOISE_NONE + 1; r < SHADOW_NOISE__COUNT; r++) {
                    series(out, name, "", l);
                    fprintf(out, ",reason=\"%s\"} %llu\n",
                            shadow_noise_reason_name((enum shadow_noise_reason)r),
                            (unsigned long long)st->noise[r]);
                }
                break;
            case SHADOW_M_SUCCESS_RATIO:
                gauge(out, name, l, st->validation_success_ratio);
                break;
            case SHADOW_M_PERFORMANCE_RATIO:
                gauge(out, name, l, st->performance_ratio);
                break;
            case SHADOW_M_LATENCY:
                for (int s = 0; s < SHADOW_SIDE__COUNT; s++) {
                    uint64_t cum = 0;
                    for (int b = 0; b < SHADOW_LAT_BOUNDS; b++) {
                        cum += a[l].lat[s].b[b];
                        if (!lat_exposed(b))
                            continue;
                        series(out, name, "_bucket", l);
                        fprintf(out, ",side=\"%s\",le=\"%.9g\"} %llu\n", side_names[s],
                                (double)lat_bounds[b] / 1e9, (unsigned long long)cum);
                    }
                    cum += a[l].lat[s].b[NB - 1];
                    series(out, name, "_bucket", l);
                    fprintf(out, ",side=\"%s\",le=\"+Inf\"} %llu\n", side_names[s],
                            (unsigned long long)cum);
                    series(out, name, "_sum", l);
                    fprintf(out, ",side=\"%s\"} ", side_names[s]);
                    put_double(out, st->latency_sum_seconds[s]);
                    fputc('\n', out);
                    series(out, name, "_count", l);
                    fprintf(out, ",side=\"%s\"} %llu\n", side_names[s], (unsigned long long)cum);
                }
                break;
            case SHADOW_M_LAG:
                gauge(out, name, l, st->lag_seconds);
                break;
            case SHADOW_M_DIVERGED:
                series(out, name, "", l);
                fprintf(out, "} %d\n", st->diverged ? 1 : 0);
                break;
            case SHADOW_M_DETACHED:
                series(out, name, "", l);
                fprintf(out, "} %llu\n", (unsigned long long)st->detached_sessions);
                break;
            case SHADOW_M_UNITS_OPEN:
                series(out, name, "", l);
                fprintf(out, "} %llu\n", (unsigned long long)st->units_open);
                break;
            case SHADOW_M_DROPPED:
                for (int r = 0; r < SHADOW_DROP__COUNT; r++) {
                    series(out, name, "", l);
                    fprintf(out, ",reason=\"%s\"} %llu\n", drop_names[r],
                            (unsigned long long)st->dropped[r]);
                }
                break;
            case SHADOW_M_RECHECKS:
                for (int r = 0; r < SHADOW_RECHECK__COUNT; r++) {
                    series(out, name, "", l);
                    fprintf(out, ",result=\"%s\"} %llu\n", recheck_names[r],
                            (unsigned long long)st->rechecks[r]);
                }
                break;
            case SHADOW_M_ENTRIES_EVICTED:
                series(out, name, "", l);
                fprintf(out, "} %llu\n", (unsigned long long)st->statement_entries_evicted);
                break;
            case SHADOW_M_EVICTED:
                series(out, name, "", l);
                fprintf(out, "} %llu\n", (unsigned long long)st->statements_evicted);
                break;
            case SHADOW_M_QUEUE_BYTES:
            case SHADOW_M__COUNT:
                break;
            }
        }
    }
out_free:
    free(stats);
    free(a);
}

/* ---- JSON report ------------------------------------------------------- */

/* One statement summed over shards. */
struct agg_stmt {
    uint64_t id;
    int listener;
    bool other;
    char *text; /* a copy: an entry's own text may be evicted once the shard is unlocked */
    char *plans[SHADOW_SIDE__COUNT]; /* copies too, from the first shard that has them */
    uint64_t count[SHADOW__COUNT];
    uint64_t noise[SHADOW_NOISE__COUNT];
    uint64_t total;
    uint64_t lat[SHADOW_SIDE__COUNT][NB];
    double ratio; /* shadow p50 / primary p50, NaN */
};

struct stmt_map {
    struct agg_stmt *v;
    size_t n, cap;
    int32_t *index; /* 2 * cap slots, -1 empty */
    bool failed;
};

static size_t
map_slot(const struct stmt_map *m, int listener, uint64_t id, bool other)
{
    uint64_t k[2] = {id, (uint64_t)listener << 1 | other};
    return (size_t)XXH3_64bits(k, sizeof(k)) & (2 * m->cap - 1);
}

static bool
map_grow(struct stmt_map *m)
{
    size_t cap = m->cap ? m->cap * 2 : 256;
    struct agg_stmt *v = realloc(m->v, cap * sizeof(*v));
    int32_t *index;

    if (v == NULL)
        return false;
    m->v = v;
    index = malloc(2 * cap * sizeof(*index));
    if (index == NULL)
        return false;
    free(m->index);
    m->index = index;
    m->cap = cap;
    for (size_t i = 0; i < 2 * cap; i++)
        index[i] = -1;
    for (size_t i = 0; i < m->n; i++) {
        size_t h = map_slot(m, v[i].listener, v[i].id, v[i].other);
        while (index[h] >= 0)
            h = (h + 1) & (2 * cap - 1);
        index[h] = (int32_t)i;
    }
    return true;
}

static void
map_add(struct stmt_map *m, const struct stmt *st)
{
    struct agg_stmt *a;
    size_t h;

    if (m->failed)
        return;
    if (m->n == m->cap && !map_grow(m)) {
        m->failed = true;
        return;
    }
    for (h = map_slot(m, st->listener, st->id, st->other); m->index[h] >= 0;
         h = (h + 1) & (2 * m->cap - 1)) {
        a = &m->v[m->index[h]];
        if (a->id == st->id && a->listener == st->listener && a->other == st->other)
            goto found;
    }
    a = &m->v[m->n];
    memset(a, 0, sizeof(*a));
    a->id = st->id;
    a->listener = st->listener;
    a->other = st->other;
    if ((a->text = strdup(st->text)) == NULL) {
        m->failed = true;
        return;
    }
    m->index[h] = (int32_t)m->n++;
found:
    for (int s = 0; s < SHADOW_SIDE__COUNT; s++)
        if (a->plans[s] == NULL && st->plans[s] != NULL &&
            (a->plans[s] = strdup(st->plans[s])) == NULL)
            m->failed = true;
    for (int o = 0; o < SHADOW__COUNT; o++) {
        a->count[o] += st->count[o];
        a->total += st->count[o];
    }
    for (int r = 0; r < SHADOW_NOISE__COUNT; r++)
        a->noise[r] += st->noise[r];
    for (int s = 0; s < SHADOW_SIDE__COUNT; s++)
        for (int b = 0; b < NB; b++)
            a->lat[s][b] += st->lat[s].b[b];
}

static int
cmp_stmt(const void *x, const void *y)
{
    const struct agg_stmt *a = x, *b = y;
    if (a->count[SHADOW_MISMATCH] != b->count[SHADOW_MISMATCH])
        return a->count[SHADOW_MISMATCH] > b->count[SHADOW_MISMATCH] ? -1 : 1;
    if (a->total != b->total)
        return a->total > b->total ? -1 : 1;
    if (a->listener != b->listener)
        return a->listener < b->listener ? -1 : 1;
    if (a->id != b->id)
        return a->id < b->id ? -1 : 1;
    return 0;
}

static int
cmp_ratio(const void *x, const void *y)
{
    const struct agg_stmt *a = *(const struct agg_stmt *const *)x;
    const struct agg_stmt *b = *(const struct agg_stmt *const *)y;
    if (a->ratio != b->ratio)
        return a->ratio > b->ratio ? -1 : 1;
    return cmp_stmt(a, b);
}

static int
cmp_sample(const void *x, const void *y)
{
    const struct sample *a = x, *b = y;
    return a->seq == b->seq ? 0 : a->seq > b->seq ? -1 : 1;
}

/* Sticky-failure JSON building: a NULL anywhere marks the report failed. */
struct jb {
    bool failed;
};

/* Both steal v, also on failure (jansson decrefs it), and refuse NULLs. */
static void
jset(struct jb *jb, json_t *obj, const char *key, json_t *v)
{
    if (json_object_set_new(obj, key, v) != 0)
        jb->failed = true;
}

static void
jpush(struct jb *jb, json_t *arr, json_t *v)
{
    if (json_array_append_new(arr, v) != 0)
        jb->failed = true;
}

static json_t *
jnum(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *
jms(double seconds)
{
    return jnum(seconds * 1e3);
}

static json_t *
juint(uint64_t v)
{
    return json_integer(v > (uint64_t)INT64_MAX ? INT64_MAX : (json_int_t)v);
}

static json_t *
jlistener(int slot)
{
    const char *name = metric_listener_name(slot);
    char buf[16];
    if (name != NULL)
        return json_string(name);
    snprintf(buf, sizeof(buf), "#%d", slot);
    return json_string(buf);
}

static json_t *
jhex(bool known, uint64_t v)
{
    char buf[17];
    if (!known)
        return json_string("other");
    snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)v);
    return json_string(buf);
}

static json_t *
jtime(int64_t ms)
{
    char buf[40];
    log_format_time(ms, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *
joutcomes(struct jb *jb, const uint64_t *counts, bool total)
{
    json_t *o = json_object();
    uint64_t sum = 0;
    for (int i = 0; i < SHADOW__COUNT; i++) {
        jset(jb, o, shadow_outcome_name((enum shadow_outcome)i), juint(counts[i]));
        sum += counts[i];
    }
    if (total)
        jset(jb, o, "total", juint(sum));
    return o;
}

/* {"volatile": n, "physical": n, "server_local": n, "ignored": n} */
static json_t *
jnoise(struct jb *jb, const uint64_t *noise)
{
    json_t *o = json_object();
    for (int r = SHADOW_NOISE_NONE + 1; r < SHADOW_NOISE__COUNT; r++)
        jset(jb, o, shadow_noise_reason_name((enum shadow_noise_reason)r), juint(noise[r]));
    return o;
}

/* Into est, per relation of an EXPLAIN (FORMAT JSON) node tree: its largest row estimate. */
static void
plan_estimates(json_t *node, json_t *est, int depth)
{
    size_t i;
    json_t *child;
    if (!json_is_object(node) || depth > 100) /* a plan deeper than that is cut: fewer relations */
        return;
    const char *rel = json_string_value(json_object_get(node, "Relation Name"));
    json_t *rows = json_object_get(node, "Plan Rows");
    if (rel != NULL && json_is_number(rows)) {
        json_t *have = json_object_get(est, rel);
        if (have == NULL || json_number_value(have) < json_number_value(rows))
            json_object_set_new(est, rel, json_real(json_number_value(rows)));
    }
    json_array_foreach(json_object_get(node, "Plans"), i, child)
        plan_estimates(child, est, depth + 1);
}

static json_t *
plan_estimates_of(json_t *plan)
{
    size_t i;
    json_t *top, *est = json_object();
    if (est != NULL)
        json_array_foreach(plan, i, top)
            plan_estimates(json_object_get(top, "Plan"), est, 0);
    return est;
}

/*
 * The latency comparison may be unfair when the two planners do not see the
 * same statistics: with the same data and ANALYZE on both, a relation's row
 * estimate is the same whatever plan reads it (an index scan or a
 * sequential scan with the same condition), so estimates twice apart mean
 * the shadow's statistics are missing or stale (ANALYZE never ran there, or
 * ran on other data), not that the shadow is slower by nature.  NULL when
 * fair, else {"reason", "relations": [{relation, primary_rows, shadow_rows}]}.
 */
static json_t *
jplans_unfair(struct jb *jb, json_t *primary, json_t *shadow)
{
    json_t *pe = plan_estimates_of(primary), *se = plan_estimates_of(shadow), *out = NULL;
    const char *rel;
    json_t *pv;
    if (pe == NULL || se == NULL)
        goto out_free;
    json_object_foreach(pe, rel, pv) {
        json_t *sv = json_object_get(se, rel);
        if (sv == NULL)
            continue;
        double p = json_number_value(pv), s = json_number_value(sv);
        double lo = p < s ? p : s, hi = p < s ? s : p;
        if (hi < 2 * (lo > 1 ? lo : 1))
            continue;
        if (out == NULL) {
            out = json_object();
            jset(jb, out, "reason",
                 json_string("the planners' row estimates differ: the shadow's statistics are "
                             "not the primary's (ANALYZE the shadow, or let the mirrored ANALYZE run)"));
            jset(jb, out, "relations", json_array());
        }
        json_t *r = json_object();
        jset(jb, r, "relation", json_string(rel));
        jset(jb, r, "primary_rows", jnum(p));
        jset(jb, r, "shadow_rows", jnum(s));
        jpush(jb, json_object_get(out, "relations"), r);
    }
out_free:
    json_decref(pe);
    json_decref(se);
    return out;
}

static json_t *
jstatement(struct jb *jb, const struct agg_stmt *a)
{
    json_t *o = json_object();
    double p50[SHADOW_SIDE__COUNT];

    jset(jb, o, "listener", jlistener(a->listener));
    jset(jb, o, "fingerprint", jhex(!a->other, a->id));
    jset(jb, o, "statement", json_string(a->text));
    jset(jb, o, "count", joutcomes(jb, a->count, true));
    jset(jb, o, "noise", jnoise(jb, a->noise));
    for (int s = 0; s < SHADOW_SIDE__COUNT; s++)
        p50[s] = quantile(a->lat[s], 0.5);
    jset(jb, o, "primary_p50_ms", jms(p50[SHADOW_SIDE_PRIMARY]));
    jset(jb, o, "shadow_p50_ms", jms(p50[SHADOW_SIDE_SHADOW]));
    jset(jb, o, "primary_p99_ms", jms(quantile(a->lat[SHADOW_SIDE_PRIMARY], 0.99)));
    jset(jb, o, "shadow_p99_ms", jms(quantile(a->lat[SHADOW_SIDE_SHADOW], 0.99)));
    jset(jb, o, "latency_ratio", jnum(a->ratio));
    if (a->plans[SHADOW_SIDE_PRIMARY] != NULL || a->plans[SHADOW_SIDE_SHADOW] != NULL) {
        json_t *plans = json_object();
        for (int s = 0; s < SHADOW_SIDE__COUNT; s++) {
            json_t *p = a->plans[s] ? json_loads(a->plans[s], 0, NULL) : NULL;
            if (p == NULL && a->plans[s] != NULL)
                p = json_string(a->plans[s]); /* cut at SHADOW_PLAN_MAX: shown as text */
            jset(jb, plans, side_names[s], p ? p : json_null());
        }
        json_t *unfair = jplans_unfair(jb, json_object_get(plans, side_names[SHADOW_SIDE_PRIMARY]),
                                       json_object_get(plans, side_names[SHADOW_SIDE_SHADOW]));
        if (unfair != NULL)
            jset(jb, o, "latency_unfair", unfair);
        jset(jb, o, "plans", plans);
    }
    return o;
}

static json_t *
jlisteners(struct jb *jb)
{
    int nl = metric_listener_count();
    struct agg *a = calloc(METRIC_MAX_LISTENERS, sizeof(*a));
    json_t *arr = json_array();
    struct shadow_listener_stats st;

    if (a == NULL) {
        jb->failed = true;
        return arr;
    }
    aggregate(a, nl, SHADOW_WINDOW_SLOTS);
    for (int l = 0; l < nl; l++) {
        json_t *o = json_object(), *d = json_object();
        fill_stats(&a[l], l, &st);
        jset(jb, o, "name", jlistener(l));
        jset(jb, o, "outcomes", joutcomes(jb, st.outcomes, false));
        jset(jb, o, "window_outcomes", joutcomes(jb, st.window_outcomes, false));
        jset(jb, o, "noise", jnoise(jb, st.noise));
        jset(jb, o, "window_noise", jnoise(jb, st.window_noise));
        jset(jb, o, "validation_success_ratio", jnum(st.validation_success_ratio));
        jset(jb, o, "performance_ratio", jnum(st.performance_ratio));
        jset(jb, o, "primary_p50_ms", jms(st.primary_p50_seconds));
        jset(jb, o, "shadow_p50_ms", jms(st.shadow_p50_seconds));
        jset(jb, o, "lag_seconds", jnum(st.lag_seconds));
        jset(jb, o, "diverged", json_boolean(st.diverged));
        struct shadow_divergence dv;
        shadow_divergence(l, &dv);
        if (dv.count > 0) {
            json_t *r = json_object();
            jset(jb, r, "reason", json_string(dv.reason));
            jset(jb, r, "statement", json_string(dv.statement));
            jset(jb, r, "count", juint(dv.count));
            jset(jb, o, "diverged_reason", r);
        } else {
            jset(jb, o, "diverged_reason", json_null());
        }
        jset(jb, o, "detached_sessions", juint(st.detached_sessions));
        for (int r = 0; r < SHADOW_DROP__COUNT; r++)
            jset(jb, d, drop_names[r], juint(st.dropped[r]));
        jset(jb, o, "dropped", d);
        json_t *rc = json_object();
        for (int r = 0; r < SHADOW_RECHECK__COUNT; r++)
            jset(jb, rc, recheck_names[r], juint(st.rechecks[r]));
        jset(jb, o, "rechecks", rc);
        jset(jb, o, "statements_evicted", juint(st.statements_evicted));
        jset(jb, o, "statement_entries_evicted", juint(st.statement_entries_evicted));
        jset(jb, o, "statements_undescribed", juint(st.statements_undescribed));
        jpush(jb, arr, o);
    }
    free(a);
    return arr;
}

/* statements and slowest, from every shard's table and "other" entries. */
static void
jstatements(struct jb *jb, size_t top_n, json_t **statements, json_t **slowest)
{
    int n = __atomic_load_n(&nshards, __ATOMIC_ACQUIRE);
    struct stmt_map m = {0};
    struct agg_stmt **eligible = NULL;
    size_t neligible = 0;

    *statements = json_array();
    *slowest = json_array();
    for (int i = 0; i < n; i++) {
        struct shadow_shard *sh = shards[i];
        pthread_mutex_lock(&sh->lock);
        for (int k = 0; k < sh->nstmts; k++)
            map_add(&m, sh->stmts[k]);
        for (int l = 0; l < METRIC_MAX_LISTENERS; l++)
            if (sh->lis[l] != NULL)
                map_add(&m, &sh->lis[l]->other);
        pthread_mutex_unlock(&sh->lock);
    }
    if (m.failed)
        jb->failed = true;
    if (m.n > 0)
        eligible = malloc(m.n * sizeof(*eligible));
    if (m.n > 0 && eligible == NULL)
        jb->failed = true;

    if (m.n > 0)
        qsort(m.v, m.n, sizeof(*m.v), cmp_stmt);
    for (size_t i = 0; i < m.n; i++) {
        struct agg_stmt *a = &m.v[i];
        a->ratio = ratio(quantile(a->lat[SHADOW_SIDE_SHADOW], 0.5),
                         quantile(a->lat[SHADOW_SIDE_PRIMARY], 0.5));
        if (a->total == 0)
            continue;
        if (top_n == 0 || json_array_size(*statements) < top_n)
            jpush(jb, *statements, jstatement(jb, a));
        if (eligible != NULL && !isnan(a->ratio) &&
            hist_count(a->lat[SHADOW_SIDE_PRIMARY]) >= SHADOW_SLOWEST_MIN_SAMPLES &&
            hist_count(a->lat[SHADOW_SIDE_SHADOW]) >= SHADOW_SLOWEST_MIN_SAMPLES)
            eligible[neligible++] = a;
    }
    if (neligible > 0)
        qsort(eligible, neligible, sizeof(*eligible), cmp_ratio);
    for (size_t i = 0; i < neligible && (top_n == 0 || i < top_n); i++)
        jpush(jb, *slowest, jstatement(jb, eligible[i]));

    free(eligible);
    for (size_t i = 0; i < m.n; i++) {
        free(m.v[i].text);
        for (int s = 0; s < SHADOW_SIDE__COUNT; s++)
            free(m.v[i].plans[s]);
    }
    free(m.index);
    free(m.v);
}

/* samples: every shard's rings copied, newest first, cut to the ring sizes. */
static json_t *
jsamples(struct jb *jb)
{
    int n = __atomic_load_n(&nshards, __ATOMIC_ACQUIRE);
    size_t cap = (size_t)n * (SHADOW_SAMPLES + SHADOW_OTHER_SAMPLES), count = 0;
    struct sample *all = cap > 0 ? malloc(cap * sizeof(*all)) : NULL;
    json_t *arr = json_array();
    unsigned kept[2] = {0, 0};

    if (cap > 0 && all == NULL) {
        jb->failed = true;
        return arr;
    }
    for (int i = 0; i < n; i++) {
        struct shadow_shard *sh = shards[i];
        pthread_mutex_lock(&sh->lock);
        for (int r = 0; r < 2; r++)
            for (unsigned k = 0; k < sh->rings[r].cap; k++)
                if (sh->rings[r].s[k].seq != 0 && count < cap)
                    all[count++] = sh->rings[r].s[k];
        pthread_mutex_unlock(&sh->lock);
    }
    if (count > 0)
        qsort(all, count, sizeof(*all), cmp_sample);
    for (size_t i = 0; i < count; i++) {
        const struct sample *s = &all[i];
        int r = s->outcome == SHADOW_MISMATCH ? 0 : 1;
        json_t *o;
        if (kept[r] == (r == 0 ? SHADOW_SAMPLES : SHADOW_OTHER_SAMPLES))
            continue;
        kept[r]++;
        o = json_object();
        jset(jb, o, "time", jtime(s->time_ms));
        jset(jb, o, "listener", jlistener(s->listener));
        jset(jb, o, "fingerprint", jhex(s->fp_known, s->fp));
        jset(jb, o, "statement", json_string(s->text));
        jset(jb, o, "outcome", json_string(shadow_outcome_name(s->outcome)));
        jset(jb, o, "reason", s->outcome == SHADOW_NOISE
                                  ? json_string(shadow_noise_reason_name(s->reason))
                                  : json_null());
        jset(jb, o, "primary", json_string(s->side[SHADOW_SIDE_PRIMARY]));
        jset(jb, o, "shadow", json_string(s->side[SHADOW_SIDE_SHADOW]));
        jpush(jb, arr, o);
    }
    free(all);
    return arr;
}

json_t *
shadow_report_json(size_t top_n)
{
    struct jb jb = {false};
    json_t *report = json_object();
    json_t *statements, *slowest;

    jset(&jb, report, "generated_at", jtime(wall_ms()));
    jset(&jb, report, "window_seconds", json_integer(SHADOW_WINDOW_SECONDS));
    jset(&jb, report, "listeners", jlisteners(&jb));
    jstatements(&jb, top_n, &statements, &slowest);
    jset(&jb, report, "statements", statements);
    jset(&jb, report, "slowest", slowest);
    jset(&jb, report, "samples", jsamples(&jb));
    if (jb.failed) {
        json_decref(report);
        return NULL;
    }
    return report;
}
