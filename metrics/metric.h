/*
 * metric.h - counters, declared once in tables, kept per worker, summed when
 * scraped.
 *
 * The request path only ever does metric_add() on its own worker's shard: a
 * plain load/add/store of a 64-bit word with relaxed atomics, no lock and no
 * locked instruction.  The scraper (admin thread) reads every shard with
 * relaxed loads and sums.  A shard is never freed while the process runs, so
 * the scraper may read one whose worker is gone.
 *
 * Labels: listeners and backends are given stable "slots" by name
 * (metric_slot_listener / metric_slot_backend) when a configuration is
 * loaded; a name keeps its slot across reloads, so a counter never jumps to
 * another label.  Slots are never reused; there are at most METRIC_MAX_*.
 *
 * Adding a metric is one line in one of the tables below.
 */
#ifndef TANDEM_METRIC_H
#define TANDEM_METRIC_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "protocol/kind.h"
#include "routing/route.h"

#define METRIC_MAX_LISTENERS 32
#define METRIC_MAX_BACKENDS 32
#define METRIC_MAX_SHARDS 64

/* Counters labelled {listener}: X(id, prometheus name, help). */
#define METRIC_LISTENER_COUNTERS(X)                                                            \
    X(CLIENT_ACCEPTED, "tandem_client_connections_total", "Client connections accepted")       \
    X(CLIENT_CLOSED, "tandem_client_disconnections_total", "Client connections closed")        \
    X(BYTES_RECEIVED, "tandem_bytes_received_total", "Bytes received from clients")            \
    X(BYTES_SENT, "tandem_bytes_sent_total", "Bytes sent to clients")                          \
    X(CANCELS, "tandem_cancel_requests_total", "Cancel requests received from clients")        \
    X(CANCELS_IGNORED, "tandem_cancel_requests_ignored_total",                                 \
      "Cancel requests whose key matched no session: ignored")                                 \
    X(ACCEPT_ERRORS, "tandem_accept_errors_total",                                             \
      "Failed accepts (out of file descriptors or memory): the listener pauses each time")

/* Counters labelled {backend}. */
#define METRIC_BACKEND_COUNTERS(X)                                                             \
    X(SERVER_OPENED, "tandem_server_connections_opened_total", "Backend connections opened")   \
    X(SERVER_CLOSED, "tandem_server_connections_closed_total", "Backend connections closed")   \
    X(CONNECT_FAILURES, "tandem_server_connect_failures_total",                                \
      "Backend connection attempts that failed")                                               \
    X(LOGIN_FALLBACKS, "tandem_server_login_fallbacks_total",                                  \
      "Shadow logins as the client (its ClientKey) that failed, so the backend's own user logged in") \
    X(BACKEND_BYTES_RECEIVED, "tandem_server_bytes_received_total", "Bytes received from backends") \
    X(SERVER_PARKED, "tandem_server_connections_parked_total",                                 \
      "Backend connections a client left idle, reset and kept for the next client (reuse)")    \
    X(SERVER_REUSED, "tandem_server_connections_reused_total",                                 \
      "Logins answered with a kept backend connection instead of a new one (reuse)")

/* Reasons a client connection was refused or cut: tandem_client_errors_total{listener,reason}. */
#define METRIC_CLIENT_ERRORS(X)                                                                \
    X(PROTOCOL, "protocol")                                                                    \
    X(TOO_MANY_CLIENTS, "too_many_clients")                                                    \
    X(STARTUP_TIMEOUT, "startup_timeout")                                                      \
    X(BACKEND_UNREACHABLE, "backend_unreachable")                                              \
    X(BACKEND_LOST, "backend_lost")                                                            \
    X(TLS, "tls")                                                                              \
    X(SHUTDOWN, "shutdown")                                                                    \
    X(IDLE_TIMEOUT, "idle_timeout")                                                            \
    X(AUTH_FAILED, "auth_failed")                                                              \
    X(BACKEND_AUTH, "backend_auth")                                                            \
    X(TLS_REQUIRED, "tls_required")                                                            \
    X(AUTH_QUERY, "auth_query")

enum metric_listener_counter {
#define X(id, name, help) METRIC_L_##id,
    METRIC_LISTENER_COUNTERS(X)
#undef X
    METRIC_L__COUNT
};

enum metric_backend_counter {
#define X(id, name, help) METRIC_B_##id,
    METRIC_BACKEND_COUNTERS(X)
#undef X
    METRIC_B__COUNT
};

enum metric_client_error {
#define X(id, name) METRIC_ERR_##id,
    METRIC_CLIENT_ERRORS(X)
#undef X
    METRIC_ERR__COUNT
};

/* One worker's counters.  Only its worker writes it. */
struct metric_shard {
    uint64_t listener[METRIC_MAX_LISTENERS][METRIC_L__COUNT];
    uint64_t client_errors[METRIC_MAX_LISTENERS][METRIC_ERR__COUNT];
    uint64_t backend[METRIC_MAX_BACKENDS][METRIC_B__COUNT];
    uint64_t requests[METRIC_MAX_LISTENERS][METRIC_MAX_BACKENDS][REQ_KIND__COUNT];
    /* reads answered by the primary in mode split, by why: tandem_route_fallbacks_total */
    uint64_t route_fallbacks[METRIC_MAX_LISTENERS][ROUTE_REASON__COUNT];
};

/* metric_add - add n to a counter of the caller's own shard. */
static inline void
metric_add(uint64_t *counter, uint64_t n)
{
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/* metric_shard_new - a zeroed shard registered for scraping, or NULL when full. */
struct metric_shard *metric_shard_new(void);

/*
 * Slots.  Return the slot of NAME, assigning the next free one on first use;
 * -1 when all slots are taken (the caller then records nothing for it).
 * Thread-safe; meant for configuration load, not the request path.
 */
int metric_slot_listener(const char *name);
int metric_slot_backend(const char *name);

/*
 * metric_listener_count - how many listener slots are assigned: slots
 * 0..count-1 have names.  metric_listener_name - the name of a slot, or NULL
 * when the slot is not assigned.  A name never changes once assigned, so the
 * pointer stays valid for the life of the process.  Thread-safe, lock-free.
 */
int metric_listener_count(void);
const char *metric_listener_name(int slot);

/* Gauges kept outside the shards, set by whoever owns the fact. */
void metric_set_backend_up(int backend_slot, int up);
/* tandem_route_weight{listener,backend}: the read weight in force (set by control/control.c). */
void metric_set_route_weight(int listener_slot, int backend_slot, int weight);
void metric_count_reload(int ok);
/* tandem_state_file_writes_total{result}: control/state.c's writes of the state file. */
void metric_count_state_write(int ok);

/*
 * metric_render_prometheus - write every metric in the Prometheus text
 * exposition format (version 0.0.4) to out.  Sums the shards.
 */
void metric_render_prometheus(FILE *out);

/* metric_put_label - write a label value escaped as the exposition format wants. */
void metric_put_label(FILE *out, const char *value);

/* metric_sum_listener - a listener counter summed over shards (for /api/status, tests). */
uint64_t metric_sum_listener(int listener_slot, enum metric_listener_counter c);

#endif /* TANDEM_METRIC_H */
