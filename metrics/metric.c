/*
 * metric.c - shards, slots and the Prometheus exposition (see metric.h).
 */
#include "metrics/metric.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define SLOT_NAME_MAX 64

struct slot_table {
    char name[METRIC_MAX_LISTENERS > METRIC_MAX_BACKENDS ? METRIC_MAX_LISTENERS
                                                         : METRIC_MAX_BACKENDS][SLOT_NAME_MAX];
    int count; /* read with an acquire load: names below count are final */
    int max;
};

static pthread_mutex_t metric_lock = PTHREAD_MUTEX_INITIALIZER;
static struct metric_shard *shards[METRIC_MAX_SHARDS];
static int nshards;
static struct slot_table listeners = {.max = METRIC_MAX_LISTENERS};
static struct slot_table backends = {.max = METRIC_MAX_BACKENDS};
static int backend_up[METRIC_MAX_BACKENDS];
static int route_weight[METRIC_MAX_LISTENERS][METRIC_MAX_BACKENDS]; /* weight + 1; 0: not routed */
static uint64_t reloads_ok, reloads_failed;
static uint64_t state_writes_ok, state_writes_failed;

struct metric_shard *
metric_shard_new(void)
{
    struct metric_shard *shard = calloc(1, sizeof(*shard));
    if (shard == NULL)
        return NULL;
    pthread_mutex_lock(&metric_lock);
    if (nshards == METRIC_MAX_SHARDS) {
        pthread_mutex_unlock(&metric_lock);
        free(shard);
        return NULL;
    }
    shards[nshards] = shard;
    __atomic_store_n(&nshards, nshards + 1, __ATOMIC_RELEASE);
    pthread_mutex_unlock(&metric_lock);
    return shard;
}

static int
slot_get(struct slot_table *t, const char *name)
{
    int slot = -1;

    pthread_mutex_lock(&metric_lock);
    for (int i = 0; i < t->count; i++) {
        if (strcmp(t->name[i], name) == 0) {
            slot = i;
            goto out;
        }
    }
    if (t->count < t->max) {
        slot = t->count;
        snprintf(t->name[slot], SLOT_NAME_MAX, "%s", name);
        __atomic_store_n(&t->count, t->count + 1, __ATOMIC_RELEASE);
    }
out:
    pthread_mutex_unlock(&metric_lock);
    return slot;
}

int
metric_slot_listener(const char *name)
{
    return slot_get(&listeners, name);
}

int
metric_slot_backend(const char *name)
{
    return slot_get(&backends, name);
}

int
metric_listener_count(void)
{
    return __atomic_load_n(&listeners.count, __ATOMIC_ACQUIRE);
}

const char *
metric_listener_name(int slot)
{
    if (slot < 0 || slot >= metric_listener_count())
        return NULL;
    return listeners.name[slot];
}

void
metric_set_backend_up(int slot, int up)
{
    if (slot >= 0 && slot < METRIC_MAX_BACKENDS)
        __atomic_store_n(&backend_up[slot], up, __ATOMIC_RELAXED);
}

void
metric_set_route_weight(int listener_slot, int backend_slot, int weight)
{
    if (listener_slot >= 0 && listener_slot < METRIC_MAX_LISTENERS && backend_slot >= 0 &&
        backend_slot < METRIC_MAX_BACKENDS)
        __atomic_store_n(&route_weight[listener_slot][backend_slot], weight + 1, __ATOMIC_RELAXED);
}

void
metric_count_reload(int ok)
{
    __atomic_fetch_add(ok ? &reloads_ok : &reloads_failed, 1, __ATOMIC_RELAXED);
}

void
metric_count_state_write(int ok)
{
    __atomic_fetch_add(ok ? &state_writes_ok : &state_writes_failed, 1, __ATOMIC_RELAXED);
}

static uint64_t
load(const uint64_t *c)
{
    return __atomic_load_n(c, __ATOMIC_RELAXED);
}

uint64_t
metric_sum_listener(int slot, enum metric_listener_counter c)
{
    uint64_t sum = 0;
    int n = __atomic_load_n(&nshards, __ATOMIC_ACQUIRE);
    if (slot < 0 || slot >= METRIC_MAX_LISTENERS)
        return 0;
    for (int i = 0; i < n; i++)
        sum += load(&shards[i]->listener[slot][c]);
    return sum;
}

/* Label values are our own names (validated by conf), but escape anyway. */
void
metric_put_label(FILE *out, const char *value)
{
    for (const char *p = value; *p; p++) {
        if (*p == '\\' || *p == '"')
            fputc('\\', out);
        if (*p == '\n') {
            fputs("\\n", out);
            continue;
        }
        fputc(*p, out);
    }
}

static void
header(FILE *out, const char *name, const char *help, const char *type)
{
    fprintf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void
metric_render_prometheus(FILE *out)
{
    int n = __atomic_load_n(&nshards, __ATOMIC_ACQUIRE);
    int nl = __atomic_load_n(&listeners.count, __ATOMIC_ACQUIRE);
    int nb = __atomic_load_n(&backends.count, __ATOMIC_ACQUIRE);
    static const char *const error_names[] = {
#define X(id, name) name,
        METRIC_CLIENT_ERRORS(X)
#undef X
    };

    fprintf(out, "# HELP tandem_build_info tandem version\n# TYPE tandem_build_info gauge\n"
                 "tandem_build_info{version=\"%s\"} 1\n",
            TANDEM_VERSION);

#define X(id, metric, help)                                                                    \
    header(out, metric, help, "counter");                                                        \
    for (int l = 0; l < nl; l++) {                                                             \
        fprintf(out, "%s{listener=\"", metric);                                                  \
        metric_put_label(out, listeners.name[l]);                                                     \
        fprintf(out, "\"} %llu\n", (unsigned long long)metric_sum_listener(l, METRIC_L_##id)); \
    }
    METRIC_LISTENER_COUNTERS(X)
#undef X

    header(out, "tandem_client_connections", "Client connections open now", "gauge");
    for (int l = 0; l < nl; l++) {
        uint64_t open = metric_sum_listener(l, METRIC_L_CLIENT_ACCEPTED) -
                        metric_sum_listener(l, METRIC_L_CLIENT_CLOSED);
        fputs("tandem_client_connections{listener=\"", out);
        metric_put_label(out, listeners.name[l]);
        fprintf(out, "\"} %lld\n", (long long)open);
    }

    header(out, "tandem_client_errors_total",
           "Client connections refused or cut by tandem, by reason", "counter");
    for (int l = 0; l < nl; l++) {
        for (int e = 0; e < METRIC_ERR__COUNT; e++) {
            uint64_t sum = 0;
            for (int s = 0; s < n; s++)
                sum += load(&shards[s]->client_errors[l][e]);
            fputs("tandem_client_errors_total{listener=\"", out);
            metric_put_label(out, listeners.name[l]);
            fprintf(out, "\",reason=\"%s\"} %llu\n", error_names[e], (unsigned long long)sum);
        }
    }

#define X(id, metric, help)                                                                    \
    header(out, metric, help, "counter");                                                        \
    for (int b = 0; b < nb; b++) {                                                             \
        uint64_t sum = 0;                                                                      \
        for (int s = 0; s < n; s++)                                                            \
            sum += load(&shards[s]->backend[b][METRIC_B_##id]);                                \
        fprintf(out, "%s{backend=\"", metric);                                                   \
        metric_put_label(out, backends.name[b]);                                                      \
        fprintf(out, "\"} %llu\n", (unsigned long long)sum);                                   \
    }
    METRIC_BACKEND_COUNTERS(X)
#undef X

    header(out, "tandem_server_connections", "Backend connections open now", "gauge");
    for (int b = 0; b < nb; b++) {
        uint64_t opened = 0, closed = 0;
        for (int s = 0; s < n; s++) {
            opened += load(&shards[s]->backend[b][METRIC_B_SERVER_OPENED]);
            closed += load(&shards[s]->backend[b][METRIC_B_SERVER_CLOSED]);
        }
        fputs("tandem_server_connections{backend=\"", out);
        metric_put_label(out, backends.name[b]);
        fprintf(out, "\"} %lld\n", (long long)(opened - closed));
    }

    header(out, "tandem_backend_up", "1 when the backend accepted its last health check",
           "gauge");
    for (int b = 0; b < nb; b++) {
        fputs("tandem_backend_up{backend=\"", out);
        metric_put_label(out, backends.name[b]);
        fprintf(out, "\"} %d\n", __atomic_load_n(&backend_up[b], __ATOMIC_RELAXED));
    }

    header(out, "tandem_requests_total", "Request units forwarded, by answering backend and kind",
           "counter");
    for (int l = 0; l < nl; l++) {
        for (int b = 0; b < nb; b++) {
            for (int k = 0; k < REQ_KIND__COUNT; k++) {
                uint64_t sum = 0;
                for (int s = 0; s < n; s++)
                    sum += load(&shards[s]->requests[l][b][k]);
                if (sum == 0 && k != REQ_KIND_READ && k != REQ_KIND_WRITE)
                    continue;
                fputs("tandem_requests_total{listener=\"", out);
                metric_put_label(out, listeners.name[l]);
                fputs("\",backend=\"", out);
                metric_put_label(out, backends.name[b]);
                fprintf(out, "\",kind=\"%s\"} %llu\n", req_kind_name((enum req_kind)k),
                        (unsigned long long)sum);
            }
        }
    }

    header(out, "tandem_route_weight", "Read weight of a backend on a listener (mode split)",
           "gauge");
    for (int l = 0; l < nl; l++) {
        for (int b = 0; b < nb; b++) {
            int w = __atomic_load_n(&route_weight[l][b], __ATOMIC_RELAXED);
            if (w == 0)
                continue;
            fputs("tandem_route_weight{listener=\"", out);
            metric_put_label(out, listeners.name[l]);
            fputs("\",backend=\"", out);
            metric_put_label(out, backends.name[b]);
            fprintf(out, "\"} %d\n", w - 1);
        }
    }

    header(out, "tandem_route_fallbacks_total",
           "Reads answered by the primary in mode split, by reason", "counter");
    for (int l = 0; l < nl; l++) {
        for (int r = ROUTE_REASON_NONE + 1; r < ROUTE_REASON__COUNT; r++) {
            uint64_t sum = 0;
            for (int s = 0; s < n; s++)
                sum += load(&shards[s]->route_fallbacks[l][r]);
            fputs("tandem_route_fallbacks_total{listener=\"", out);
            metric_put_label(out, listeners.name[l]);
            fprintf(out, "\",reason=\"%s\"} %llu\n", route_reason_name((enum route_reason)r),
                    (unsigned long long)sum);
        }
    }

    header(out, "tandem_reloads_total", "Configuration reloads, by result", "counter");
    fprintf(out, "tandem_reloads_total{result=\"ok\"} %llu\n",
            (unsigned long long)__atomic_load_n(&reloads_ok, __ATOMIC_RELAXED));
    fprintf(out, "tandem_reloads_total{result=\"error\"} %llu\n",
            (unsigned long long)__atomic_load_n(&reloads_failed, __ATOMIC_RELAXED));

    header(out, "tandem_state_file_writes_total",
           "Writes of the control state file (control { state_file }), by result", "counter");
    fprintf(out, "tandem_state_file_writes_total{result=\"ok\"} %llu\n",
            (unsigned long long)__atomic_load_n(&state_writes_ok, __ATOMIC_RELAXED));
    fprintf(out, "tandem_state_file_writes_total{result=\"error\"} %llu\n",
            (unsigned long long)__atomic_load_n(&state_writes_failed, __ATOMIC_RELAXED));
}
