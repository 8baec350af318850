/*
 * conf_parse.c - syntax tree to struct conf; see conf_parse.h.
 *
 * Every directive is one row of directives[] below: its name, the blocks it
 * may appear in, its argument count, and how its value is stored - for most,
 * a generic setter plus the offset of the field it fills.  Adding a key is
 * adding a row.  A block row names the context its body is read in and the
 * functions that open it (create the backend, say) and close it (check what
 * only makes sense once the whole block is read).
 *
 *   tree ──► apply_block(top) ──► row lookup ──► setter ──► struct conf
 *                 │                                 ▲
 *                 └─► block row: enter ─► apply_block(inner) ─► leave
 *
 *   then check_conf(): backend references, duplicate addresses, listeners
 *
 * Each problem is reported and the walk goes on, so one run names all of
 * them; a value that was refused leaves the field at its default.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <hiredis/sds.h>

#include "conf/conf_err.h"
#include "conf/conf_parse.h"
#include "conf/conf_value.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

const char *const conf_proto_names[] = {"postgres", "redis", NULL};
const char *const conf_mode_names[] = {"passthrough", "shadow", "split", NULL};
const char *const conf_server_conns_names[] = {"shared", "dedicated", "reuse", NULL};
const char *const conf_guard_metric_names[] = {"shadow_error_rate", "mismatch_rate",
                                               "latency_ratio_p50", "latency_ratio_p99", "lag",
                                               "backend_down", NULL};
const char *const conf_guard_action_names[] = {"reads-to-primary", "stop-mirroring", "rollback",
                                               NULL};
const char *const conf_tls_names[] = {"disable", "require", "verify-full", NULL};
const char *const conf_listener_tls_names[] = {"optional", "required", "off", NULL};
const char *const conf_log_format_names[] = {"text", "json", NULL};
const char *const conf_log_level_names[] = {"debug", "info", "warn", "error", NULL};
const char *const conf_mirror_level_names[] = {"all", "dml", "ddl", NULL};
const char *const conf_shadow_source_names[] = {"mirror", "replication", NULL};
const char *const conf_repl_kind_names[] = {"logical", "physical", "replica", NULL};
const char *const conf_samples_names[] = {"values", "redacted", "none", NULL};
/* percent P by KEY, indexed by enum conf_canary_key */
static const char *const canary_key_names[] = {"user", "application_name", "client", "client_name",
                                               NULL};
static const char *const canary_action_names[] = {"route", "primary", "no_mirror"};

/* The setters store enums and counts through 4-byte fields. */
_Static_assert(sizeof(enum conf_proto) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_mode) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_server_conns) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_tls) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_listener_tls) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_log_format) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_log_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_mirror_level) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_shadow_source) == sizeof(int), "enum size");
_Static_assert(sizeof(enum conf_repl_kind) == sizeof(int), "enum size");
_Static_assert(CONF_CANARY_KEY_CLIENT_NAME == 3 && CONF_CANARY_NO_MIRROR == 2, "names tables");
_Static_assert(sizeof(int) == sizeof(uint32_t), "int size");

/* Contexts: where a directive may appear (a row's ctx is a mask of them). */
enum {
    CTX_TOP = 1u << 0,
    CTX_LIMITS = 1u << 1,
    CTX_ADMIN = 1u << 2,
    CTX_BACKEND = 1u << 3,
    CTX_LISTENER = 1u << 4,
    CTX_MIRROR = 1u << 5,
    CTX_COMPARE = 1u << 6,
    CTX_CANARY = 1u << 7,
    CTX_GUARD = 1u << 8,
    CTX_CONTROL = 1u << 9,
    CTX_REPLICATION = 1u << 10,
};

/* Most entries in one listener's reads { }, and canary rules per listener. */
#define READS_MAX CONF_MAX_BACKENDS
#define CANARIES_MAX 64
#define GUARDS_MAX 16

/* Row flags. */
enum {
    D_BLOCK = 1u << 0,    /* takes a { } body */
    D_MULTI = 1u << 1,    /* may appear more than once in its block */
    D_REQUIRED = 1u << 2, /* its block is incomplete without it */
    D_LIST = 1u << 3,     /* one or more arguments (nargs is ignored) */
};

/* A backend named before backends can be resolved: kept until check_conf(). */
struct name_ref {
    char name[CONF_NAME_MAX]; /* "" when unset or already refused */
    int line;
};

/* What the parse knows about a listener beyond struct conf_listener. */
struct listener_state {
    char primary[CONF_NAME_MAX]; /* "" until a valid primary was read */
    char shadow[CONF_NAME_MAX];
    int primary_line;
    int auth_query_line; /* 0: no auth_query (its backend user is checked once resolved) */
    int reuse_line;      /* 0: no server_connections reuse (it needs an auth source) */
    int shadow_line;
    int listen_line;
    const struct conf_node *reads; /* the reads { } node (the tree outlives the parse) */
    struct name_ref *read_refs;    /* parallel to l->read_weights while parsing */
    struct name_ref *routes;       /* parallel to l->canaries: route's backend */
    size_t canaries_cap;
};

struct conf_build {
    struct conf *conf;
    struct conf_errors *errs;
    struct listener_state *lstate; /* parallel to conf->listeners */
    size_t backends_cap;
    size_t listeners_cap;
    size_t lstate_cap;
    int admin_line;
    int store_line; /* control { store } and { fleet }: each needs the other */
    int store_rediss; /* the store's URL is rediss://: TLS */
    int fleet_line;
    int oom;
    struct name_ref *route; /* of the canary being read */
};

struct conf_directive;

/* Store N's value into OBJ, the struct of the block being read. */
typedef void conf_set_fn(struct conf_build *b, void *obj, const struct conf_directive *d,
                         const struct conf_node *n);
/*
 * Open block N, found in OBJ: the struct its body fills, or NULL to skip
 * the body.
 */
typedef void *conf_enter_fn(struct conf_build *b, void *obj, const struct conf_directive *d,
                            const struct conf_node *n);
/* Close block N once its body is read; SEEN[i] is the node of row i, or NULL. */
typedef void conf_leave_fn(struct conf_build *b, void *obj, const struct conf_node *n,
                           const struct conf_node *const *seen);

struct conf_directive {
    const char *name;
    unsigned ctx;     /* CTX_* where it may appear */
    unsigned flags;   /* D_* */
    unsigned nargs;   /* exact; for blocks, the words before '{' */
    conf_set_fn *set; /* simple directives */
    size_t offset;    /* of the field (or a block's struct) within the context's struct */
    size_t size;      /* of that field */
    const void *data; /* setter-specific: a range, enum names */
    unsigned inner;   /* blocks: the context of the body */
    conf_enter_fn *enter;
    conf_leave_fn *leave;
};

struct conf_range {
    uint64_t min;
    uint64_t max;
    const char *text; /* as a user writes it, for messages */
};

static const struct conf_range range_workers = {1, 64, "1..64"};
static const struct conf_range range_client_conn = {1, 1000000, "1..1000000"};
static const struct conf_range range_packet = {1ull << 10, 1ull << 30, "1KB..1GB"};
static const struct conf_range range_timeout = {1, 60 * 60 * 1000, "1ms..1h"};
static const struct conf_range range_auth_refresh = {1000, 24 * 60 * 60 * 1000, "1s..24h"};
static const struct conf_range range_repl_poll = {10, 60 * 1000, "10ms..1m"};
static const struct conf_range range_queue = {64ull << 10, 1ull << 30, "64KB..1GB"};
static const struct conf_range range_queue_total = {1ull << 20, 64ull << 30, "1MB..64GB"};
static const struct conf_range range_ryw = {0, 60 * 60 * 1000, "0ms..1h"};
static const struct conf_range range_prepared = {0, 1ull << 30, "0B..1GB"};
static const struct conf_range range_idle = {0, 7 * 24 * 60 * 60 * 1000u, "0s..168h"};
/* whole seconds are what the kernel takes for keepalives; an hour is plenty for either */
static const struct conf_range range_tcp = {0, 60 * 60 * 1000u, "0s..1h"};
static const struct conf_range range_weight = {0, 1000000, "0..1000000"};
/* the shadow store's sliding window (metrics/shadow.h): 5 s slots, 5 min */
static const struct conf_range range_guard_window = {5000, 300 * 1000, "5s..5m"};
static const struct conf_range range_min_samples = {1, 1000000000, "1..1000000000"};
static const struct conf_range range_cooldown = {0, 24 * 60 * 60 * 1000, "0s..24h"};
static const struct conf_range range_confirm = {0, 10000, "0..10000"};
static const struct conf_range range_server_pool = {1, 64, "1..64"};
static const struct conf_range range_server_idle = {1000, 24 * 60 * 60 * 1000, "1s..24h"};
static const struct conf_range range_describes = {1, 1000000, "1..1000000"};
static const struct conf_range range_explain = {0, 1000, "0..1000"};
static const struct conf_range range_join_timeout = {0, 10 * 60 * 1000, "0s..10m"};

static conf_set_fn set_number, set_size, set_duration, set_enum, set_string, set_addr,
    set_backend_ref, set_fraction, set_size64, set_ignore_columns, set_ignore_fingerprints,
    set_write_functions, set_server_names, set_client, set_hint, set_percent, set_route,
    set_action, set_store, set_name, set_statement, set_step;
struct conf_node;
static void check_auth_query(struct conf_build *b, struct conf_listener *l,
                             const struct conf_node *const *seen, const char *desc);
static conf_enter_fn enter_member, enter_admin, enter_backend, enter_listener, enter_reads,
    enter_canary, enter_guard;
static conf_leave_fn leave_admin, leave_control, leave_backend, leave_listener, leave_canary,
    leave_guard;

#define FIELD(type, field) offsetof(type, field), sizeof(((type *)0)->field)
/* A directive taking one or more words, stored by its own setter. */
#define LIST(name, ctx, set)                                                                       \
    {                                                                                              \
        name, ctx, D_LIST, 0, set, 0, 0, NULL, 0, NULL, NULL                                       \
    }
#define SIMPLE(name, ctx, flags, set, type, field, data)                                           \
    {                                                                                              \
        name, ctx, flags, 1, set, FIELD(type, field), data, 0, NULL, NULL                          \
    }
/* A directive of NARGS words stored by its own setter into the block's struct. */
#define ROW(name, ctx, nargs, set)                                                                 \
    {                                                                                              \
        name, ctx, 0, nargs, set, 0, 0, NULL, 0, NULL, NULL                                        \
    }
/* A block opened by its own enter function (backend, listener...). */
#define BLOCK(name, ctx, flags, nargs, inner, enter, leave)                                        \
    {                                                                                              \
        name, ctx, D_BLOCK | (flags), nargs, NULL, 0, 0, NULL, inner, enter, leave                 \
    }
/* A block whose body fills member FIELD of its context's struct TYPE (limits...). */
#define MEMBER_BLOCK(name, ctx, inner, type, field)                                                \
    {                                                                                              \
        name, ctx, D_BLOCK, 0, NULL, FIELD(type, field), NULL, inner, enter_member, NULL           \
    }

static const struct conf_directive directives[] = {
    /* top level */
    SIMPLE("workers", CTX_TOP, 0, set_number, struct conf, workers, &range_workers),
    SIMPLE("log_format", CTX_TOP, 0, set_enum, struct conf, log_format, conf_log_format_names),
    SIMPLE("log_level", CTX_TOP, 0, set_enum, struct conf, log_level, conf_log_level_names),
    MEMBER_BLOCK("limits", CTX_TOP, CTX_LIMITS, struct conf, limits),
    BLOCK("admin", CTX_TOP, 0, 0, CTX_ADMIN, enter_admin, leave_admin),
    {"control", CTX_TOP, D_BLOCK, 0, NULL, FIELD(struct conf, control), NULL, CTX_CONTROL,
     enter_member, leave_control},
    BLOCK("backend", CTX_TOP, D_MULTI, 1, CTX_BACKEND, enter_backend, leave_backend),
    BLOCK("listener", CTX_TOP, D_MULTI, 1, CTX_LISTENER, enter_listener, leave_listener),
    LIST("write_functions", CTX_TOP, set_write_functions),
    SIMPLE("auth_file", CTX_TOP, 0, set_string, struct conf, auth_file, NULL),
    /*
     * Later capabilities are rows here, each with a CTX_ of its own and the
     * rows of its body, as mirror, compare, canary and guard below.
     */

    /* limits { } */
    SIMPLE("max_client_conn", CTX_LIMITS, 0, set_number, struct conf_limits, max_client_conn,
           &range_client_conn),
    SIMPLE("max_packet_size", CTX_LIMITS, 0, set_size, struct conf_limits, max_packet_size,
           &range_packet),
    SIMPLE("startup_timeout", CTX_LIMITS, 0, set_duration, struct conf_limits, startup_timeout_ms,
           &range_timeout),
    SIMPLE("connect_timeout", CTX_LIMITS, 0, set_duration, struct conf_limits, connect_timeout_ms,
           &range_timeout),
    SIMPLE("shutdown_timeout", CTX_LIMITS, 0, set_duration, struct conf_limits, shutdown_timeout_ms,
           &range_timeout),
    SIMPLE("client_idle_timeout", CTX_LIMITS, 0, set_duration, struct conf_limits,
           client_idle_timeout_ms, &range_idle),
    SIMPLE("tcp_keepalive", CTX_LIMITS, 0, set_duration, struct conf_limits, tcp_keepalive_ms,
           &range_tcp),
    SIMPLE("tcp_user_timeout", CTX_LIMITS, 0, set_duration, struct conf_limits,
           tcp_user_timeout_ms, &range_tcp),
    SIMPLE("max_command_size", CTX_LIMITS, 0, set_size, struct conf_limits, max_command_size,
           &range_packet),
    SIMPLE("max_prepared_bytes", CTX_LIMITS, 0, set_size, struct conf_limits, max_prepared_bytes,
           &range_prepared),
    SIMPLE("describes_per_second", CTX_LIMITS, 0, set_number, struct conf_limits,
           describes_per_second, &range_describes),
    SIMPLE("mirror_queue_total", CTX_LIMITS, 0, set_size64, struct conf_limits, mirror_queue_total,
           &range_queue_total),

    /* admin { } */
    SIMPLE("listen", CTX_ADMIN, 0, set_addr, struct conf_admin, addr, NULL),
    SIMPLE("token_file", CTX_ADMIN, 0, set_string, struct conf_admin, token_file, NULL),
    SIMPLE("read_token_file", CTX_ADMIN, 0, set_string, struct conf_admin, read_token_file, NULL),
    LIST("server_name", CTX_ADMIN, set_server_names),

    /* control { } */
    SIMPLE("state_file", CTX_CONTROL, 0, set_string, struct conf_control, state_file, NULL),
    ROW("store", CTX_CONTROL, 1, set_store),
    SIMPLE("fleet", CTX_CONTROL, 0, set_name, struct conf_control, fleet, NULL),
    SIMPLE("password_file", CTX_CONTROL, 0, set_string, struct conf_control, store_password_file,
           NULL),
    SIMPLE("member", CTX_CONTROL, 0, set_name, struct conf_control, member, NULL),
    SIMPLE("tls", CTX_CONTROL, 0, set_enum, struct conf_control, store_tls, conf_tls_names),
    SIMPLE("tls_ca_file", CTX_CONTROL, 0, set_string, struct conf_control, store_tls_ca_file, NULL),
    SIMPLE("tls_server_name", CTX_CONTROL, 0, set_string, struct conf_control,
           store_tls_server_name, NULL),
    SIMPLE("tls_cert", CTX_CONTROL, 0, set_string, struct conf_control, store_tls_cert, NULL),
    SIMPLE("tls_key", CTX_CONTROL, 0, set_string, struct conf_control, store_tls_key, NULL),
    SIMPLE("join_timeout", CTX_CONTROL, 0, set_duration, struct conf_control, join_timeout_ms,
           &range_join_timeout),

    /* backend NAME { } */
    SIMPLE("address", CTX_BACKEND, D_REQUIRED, set_addr, struct conf_backend, addr, NULL),
    SIMPLE("tls", CTX_BACKEND, 0, set_enum, struct conf_backend, tls, conf_tls_names),
    SIMPLE("tls_ca_file", CTX_BACKEND, 0, set_string, struct conf_backend, tls_ca_file, NULL),
    SIMPLE("tls_server_name", CTX_BACKEND, 0, set_string, struct conf_backend, tls_server_name,
           NULL),
    SIMPLE("tls_cert", CTX_BACKEND, 0, set_string, struct conf_backend, tls_cert, NULL),
    SIMPLE("tls_key", CTX_BACKEND, 0, set_string, struct conf_backend, tls_key, NULL),
    SIMPLE("user", CTX_BACKEND, 0, set_string, struct conf_backend, user, NULL),
    SIMPLE("password", CTX_BACKEND, 0, set_string, struct conf_backend, password, NULL),
    SIMPLE("password_file", CTX_BACKEND, 0, set_string, struct conf_backend, password_file, NULL),
    SIMPLE("passfile", CTX_BACKEND, 0, set_string, struct conf_backend, passfile, NULL),
    {"fence", CTX_BACKEND, D_MULTI, 1, set_statement, 0, 0, NULL, 0, NULL, NULL},
    {"unfence", CTX_BACKEND, D_MULTI, 1, set_statement, 0, 0, NULL, 0, NULL, NULL},

    /* listener NAME { } */
    SIMPLE("listen", CTX_LISTENER, D_REQUIRED, set_addr, struct conf_listener, addr, NULL),
    SIMPLE("protocol", CTX_LISTENER, 0, set_enum, struct conf_listener, proto, conf_proto_names),
    SIMPLE("tls_cert", CTX_LISTENER, 0, set_string, struct conf_listener, tls_cert, NULL),
    SIMPLE("tls_key", CTX_LISTENER, 0, set_string, struct conf_listener, tls_key, NULL),
    SIMPLE("tls", CTX_LISTENER, 0, set_enum, struct conf_listener, tls, conf_listener_tls_names),
    SIMPLE("auth_file", CTX_LISTENER, 0, set_string, struct conf_listener, auth_file, NULL),
    SIMPLE("auth_query", CTX_LISTENER, 0, set_string, struct conf_listener, auth_query, NULL),
    SIMPLE("auth_query_refresh", CTX_LISTENER, 0, set_duration, struct conf_listener,
           auth_query_refresh_ms, &range_auth_refresh),
    SIMPLE("primary", CTX_LISTENER, D_REQUIRED, set_backend_ref, struct conf_listener, primary,
           NULL),
    SIMPLE("shadow", CTX_LISTENER, 0, set_backend_ref, struct conf_listener, shadow, NULL),
    SIMPLE("mode", CTX_LISTENER, 0, set_enum, struct conf_listener, mode, conf_mode_names),
    MEMBER_BLOCK("mirror", CTX_LISTENER, CTX_MIRROR, struct conf_listener, mirror),
    MEMBER_BLOCK("compare", CTX_LISTENER, CTX_COMPARE, struct conf_listener, compare),
    SIMPLE("shadow_source", CTX_LISTENER, 0, set_enum, struct conf_listener, shadow_source,
           conf_shadow_source_names),
    MEMBER_BLOCK("replication", CTX_LISTENER, CTX_REPLICATION, struct conf_listener, replication),
    /* reads { NAME weight=N; }: its directives are backend names, read by enter_reads() */
    BLOCK("reads", CTX_LISTENER, 0, 0, 0, enter_reads, NULL),
    SIMPLE("read_your_writes", CTX_LISTENER, 0, set_duration, struct conf_listener,
           read_your_writes_ms, &range_ryw),
    SIMPLE("max_lag", CTX_LISTENER, 0, set_duration, struct conf_listener, max_lag_ms,
           &range_timeout),
    SIMPLE("server_connections", CTX_LISTENER, 0, set_enum, struct conf_listener, server_conns,
           conf_server_conns_names),
    SIMPLE("server_pool", CTX_LISTENER, 0, set_number, struct conf_listener, server_pool,
           &range_server_pool),
    SIMPLE("server_idle_timeout", CTX_LISTENER, 0, set_duration, struct conf_listener,
           server_idle_timeout_ms, &range_server_idle),
    SIMPLE("server_lifetime", CTX_LISTENER, 0, set_duration, struct conf_listener,
           server_lifetime_ms, &range_server_idle),
    SIMPLE("server_reset_query", CTX_LISTENER, 0, set_string, struct conf_listener,
           server_reset_query, NULL),
    BLOCK("canary", CTX_LISTENER, D_MULTI, 1, CTX_CANARY, enter_canary, leave_canary),
    BLOCK("guard", CTX_LISTENER, D_MULTI, 1, CTX_GUARD, enter_guard, leave_guard),

    /* listener { mirror { } } */
    SIMPLE("reads", CTX_MIRROR, 0, set_fraction, struct conf_mirror, reads, NULL),
    SIMPLE("level", CTX_MIRROR, 0, set_enum, struct conf_mirror, level, conf_mirror_level_names),
    SIMPLE("queue", CTX_MIRROR, 0, set_size, struct conf_mirror, queue_bytes, &range_queue),
    SIMPLE("timeout", CTX_MIRROR, 0, set_duration, struct conf_mirror, timeout_ms, &range_timeout),

    /* listener { replication { } } */
    SIMPLE("kind", CTX_REPLICATION, 0, set_enum, struct conf_replication, kind,
           conf_repl_kind_names),
    SIMPLE("poll", CTX_REPLICATION, 0, set_duration, struct conf_replication, poll_ms,
           &range_repl_poll),
    SIMPLE("compare_wait", CTX_REPLICATION, 0, set_duration, struct conf_replication,
           compare_wait_ms, &range_timeout),
    SIMPLE("subscription", CTX_REPLICATION, 0, set_string, struct conf_replication, subscription,
           NULL),
    SIMPLE("dbname", CTX_REPLICATION, 0, set_string, struct conf_replication, dbname, NULL),
    {"cutover", CTX_REPLICATION, D_MULTI, 3, set_step, 0, 0, NULL, 0, NULL, NULL},
    {"rollback", CTX_REPLICATION, D_MULTI, 3, set_step, 0, 0, NULL, 0, NULL, NULL},

    /* listener { compare { } } */
    LIST("ignore_columns", CTX_COMPARE, set_ignore_columns),
    LIST("ignore_fingerprints", CTX_COMPARE, set_ignore_fingerprints),
    SIMPLE("confirm_per_second", CTX_COMPARE, 0, set_number, struct conf_compare,
           confirm_per_second, &range_confirm),
    SIMPLE("explain_when_slower", CTX_COMPARE, 0, set_number, struct conf_compare,
           explain_when_slower, &range_explain),
    SIMPLE("samples", CTX_COMPARE, 0, set_enum, struct conf_compare, samples, conf_samples_names),

    /* listener { canary NAME { } }: matches, then exactly one action */
    SIMPLE("user", CTX_CANARY, 0, set_string, struct conf_canary, user, NULL),
    SIMPLE("database", CTX_CANARY, 0, set_string, struct conf_canary, database, NULL),
    SIMPLE("application_name", CTX_CANARY, 0, set_string, struct conf_canary, application_name,
           NULL),
    SIMPLE("client_name", CTX_CANARY, 0, set_string, struct conf_canary, client_name, NULL),
    SIMPLE("key_prefix", CTX_CANARY, 0, set_string, struct conf_canary, key_prefix, NULL),
    ROW("client", CTX_CANARY, 1, set_client),
    ROW("hint", CTX_CANARY, 1, set_hint),
    ROW("percent", CTX_CANARY, 3, set_percent),
    ROW("route", CTX_CANARY, 1, set_route),
    ROW("primary", CTX_CANARY, 0, set_action),
    ROW("no_mirror", CTX_CANARY, 0, set_action),

    SIMPLE("metric", CTX_GUARD, D_REQUIRED, set_enum, struct conf_guard, metric,
           conf_guard_metric_names),
    SIMPLE("above", CTX_GUARD, 0, set_string, struct conf_guard, above_text, NULL),
    SIMPLE("window", CTX_GUARD, 0, set_duration, struct conf_guard, window_ms, &range_guard_window),
    SIMPLE("min_samples", CTX_GUARD, 0, set_number, struct conf_guard, min_samples,
           &range_min_samples),
    SIMPLE("action", CTX_GUARD, 0, set_enum, struct conf_guard, action, conf_guard_action_names),
    SIMPLE("cooldown", CTX_GUARD, 0, set_duration, struct conf_guard, cooldown_ms,
           &range_cooldown),
};

#define NDIRECTIVES ARRAY_SIZE(directives)

/* ---- lookups and messages ------------------------------------------------ */

static int
row_find(const char *name, unsigned ctx)
{
    for (size_t i = 0; i < NDIRECTIVES; i++)
        if ((directives[i].ctx & ctx) && strcmp(directives[i].name, name) == 0)
            return (int)i;
    return -1;
}

/* The node of directive NAME in context CTX among SEEN, or NULL. */
static const struct conf_node *
seen_node(const struct conf_node *const *seen, unsigned ctx, const char *name)
{
    int i = row_find(name, ctx);

    assert(i >= 0); /* a leave function asked for a row that does not exist */
    return seen[i];
}

static const char *
ctx_where(unsigned ctx)
{
    switch (ctx) {
    case CTX_TOP:
        return "at top level";
    case CTX_LIMITS:
        return "in limits";
    case CTX_ADMIN:
        return "in admin";
    case CTX_BACKEND:
        return "in backend";
    case CTX_LISTENER:
        return "in listener";
    case CTX_MIRROR:
        return "in mirror";
    case CTX_COMPARE:
        return "in compare";
    case CTX_CONTROL:
        return "in control";
    case CTX_CANARY:
        return "in canary";
    default:
        return "here";
    }
}

/* An error about node N, prefixed with what the user wrote ("workers", "--workers"). */
static void __attribute__((format(printf, 3, 4)))
node_err(struct conf_build *b, const struct conf_node *n, const char *fmt, ...)
{
    char msg[sizeof(((struct conf_error *)0)->msg)];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    conf_err_add(b->errs, n->line, "%s: %s", n->label, msg);
}

/* 'listener "pg"': how messages name the backend or listener being read. */
static const char *
block_desc(const struct conf_node *n, char *out, size_t outlen)
{
    char q[CONF_QUOTE_MAX];

    if (n->nargs > 0)
        snprintf(out, outlen, "%s %s", n->name, conf_err_quote(n->args[0], q, sizeof(q)));
    else
        snprintf(out, outlen, "%s", n->name);
    return out;
}

/* ---- setters ------------------------------------------------------------- */

static void
store_u32(void *obj, const struct conf_directive *d, uint64_t v)
{
    uint32_t u = (uint32_t)v;

    assert(d->size == sizeof(u));
    memcpy((char *)obj + d->offset, &u, sizeof(u));
}

/*
 * The value of N parsed by PARSE, checked against d->data's range, stored as
 * a 32-bit field.  WHAT names the syntax in messages ("number", "size").
 */
static void
set_ranged(struct conf_build *b, void *obj, const struct conf_directive *d,
           const struct conf_node *n, enum conf_value_rc (*parse)(const char *, uint64_t *),
           const char *what)
{
    const struct conf_range *r = d->data;
    char q[CONF_QUOTE_MAX];
    uint64_t v = 0;
    enum conf_value_rc rc = parse(n->args[0], &v);

    conf_err_quote(n->args[0], q, sizeof(q));
    if (rc == CONF_VALUE_BAD) {
        node_err(b, n, "bad %s %s", what, q);
        return;
    }
    if (rc == CONF_VALUE_RANGE || v < r->min || v > r->max) {
        node_err(b, n, "%s out of range %s", q, r->text);
        return;
    }
    store_u32(obj, d, v);
}

static void
set_number(struct conf_build *b, void *obj, const struct conf_directive *d,
           const struct conf_node *n)
{
    set_ranged(b, obj, d, n, conf_value_number, "number");
}

static void
set_size(struct conf_build *b, void *obj, const struct conf_directive *d, const struct conf_node *n)
{
    set_ranged(b, obj, d, n, conf_value_size, "size");
}

static void
set_duration(struct conf_build *b, void *obj, const struct conf_directive *d,
             const struct conf_node *n)
{
    set_ranged(b, obj, d, n, conf_value_duration_ms, "duration");
}

static void
set_enum(struct conf_build *b, void *obj, const struct conf_directive *d, const struct conf_node *n)
{
    const char *const *names = d->data;
    char expected[128], q[CONF_QUOTE_MAX];
    size_t used = 0;

    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(names[i], n->args[0]) == 0) {
            store_u32(obj, d, (uint64_t)i);
            return;
        }
    }
    expected[0] = '\0';
    for (int i = 0; names[i] != NULL && used < sizeof(expected); i++) {
        int w = snprintf(expected + used, sizeof(expected) - used, "%s%s", i ? "|" : "", names[i]);
        if (w < 0)
            break;
        used += (size_t)w;
    }
    node_err(b, n, "bad value %s (expected %s)", conf_err_quote(n->args[0], q, sizeof(q)),
             expected);
}

static void
set_string(struct conf_build *b, void *obj, const struct conf_directive *d,
           const struct conf_node *n)
{
    const char *v = n->args[0];
    size_t len = strlen(v);

    /* "" is how struct conf spells "unset"; writing it is a mistake. */
    if (len == 0) {
        node_err(b, n, "empty value");
        return;
    }
    if (len >= d->size) {
        node_err(b, n, "value too long (max %zu bytes)", d->size - 1);
        return;
    }
    memset((char *)obj + d->offset, 0, d->size);
    memcpy((char *)obj + d->offset, v, len);
}

static void
set_addr(struct conf_build *b, void *obj, const struct conf_directive *d, const struct conf_node *n)
{
    struct conf_addr a;
    char q[CONF_QUOTE_MAX];

    assert(d->size == sizeof(a));
    if (conf_value_addr(n->args[0], &a) != CONF_VALUE_OK) {
        node_err(b, n, "bad address %s", conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    memcpy((char *)obj + d->offset, &a, sizeof(a));
}

/* control { store redis://HOST:PORT[/DB]; } */
static void
set_store(struct conf_build *b, void *obj, const struct conf_directive *d,
          const struct conf_node *n)
{
    struct conf_control *c = obj;
    char q[CONF_QUOTE_MAX];

    b->store_line = n->line;
    int tls = 0;
    if (conf_value_redis_url(n->args[0], &c->store, &c->store_db, &tls) != CONF_VALUE_OK) {
        node_err(b, n, "bad store %s (expected redis://HOST:PORT[/DB] or rediss://... for TLS, "
                       "DB 0..15, no password: use password_file)",
                 conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    b->store_rediss = tls;
    c->store_enabled = 1;
}

/* backend { fence "SQL"; unfence "SQL"; }: each appends one statement. */
static void
set_statement(struct conf_build *b, void *obj, const struct conf_directive *d,
              const struct conf_node *n)
{
    struct conf_backend *be = obj;
    int fence = strcmp(d->name, "fence") == 0;
    char (*list)[CONF_STATEMENT_MAX] = fence ? be->fence : be->unfence;
    size_t *count = fence ? &be->nfence : &be->nunfence;
    size_t len = strlen(n->args[0]);

    if (len == 0 || len >= CONF_STATEMENT_MAX) {
        node_err(b, n, "expected a statement of 1..%d bytes", CONF_STATEMENT_MAX - 1);
        return;
    }
    if (*count == CONF_FENCE_MAX) {
        node_err(b, n, "too many statements (max %d)", CONF_FENCE_MAX);
        return;
    }
    memcpy(list[(*count)++], n->args[0], len + 1);
    if (be->fence_line == 0)
        be->fence_line = n->line;
}

/*
 * replication { cutover after_flip green "ALTER SUBSCRIPTION s DISABLE"; }:
 * one step, appended in order.  The backend is resolved in check_conf().
 */
static void
set_step(struct conf_build *b, void *obj, const struct conf_directive *d,
         const struct conf_node *n)
{
    struct conf_replication *r = obj;
    char q[CONF_QUOTE_MAX];
    size_t len = strlen(n->args[2]);
    enum conf_step_phase phase;

    if (strcmp(n->args[0], "before_flip") == 0)
        phase = CONF_STEP_BEFORE_FLIP;
    else if (strcmp(n->args[0], "after_flip") == 0)
        phase = CONF_STEP_AFTER_FLIP;
    else {
        node_err(b, n, "bad phase %s (expected before_flip|after_flip)",
                 conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    if (strlen(n->args[1]) >= CONF_NAME_MAX) {
        node_err(b, n, "backend name too long");
        return;
    }
    if (len == 0 || len >= CONF_STATEMENT_MAX) {
        node_err(b, n, "expected a statement of 1..%d bytes", CONF_STATEMENT_MAX - 1);
        return;
    }
    if (r->nsteps == CONF_STEPS_MAX) {
        node_err(b, n, "too many steps (max %d)", CONF_STEPS_MAX);
        return;
    }
    struct conf_step *st = &r->steps[r->nsteps++];
    st->rollback = strcmp(d->name, "rollback") == 0;
    st->phase = phase;
    snprintf(st->backend_name, sizeof(st->backend_name), "%s", n->args[1]);
    st->backend = -1;
    memcpy(st->statement, n->args[2], len + 1);
    st->line = n->line;
}

/* A name of [A-Za-z0-9_.-] stored as a string field (fleet, member). */
static void
set_name(struct conf_build *b, void *obj, const struct conf_directive *d,
         const struct conf_node *n)
{
    char q[CONF_QUOTE_MAX];

    if (conf_value_name(n->args[0]) != CONF_VALUE_OK) {
        node_err(b, n, "bad name %s (1..63 of A-Z a-z 0-9 _ . -)",
                 conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    if (strcmp(d->name, "fleet") == 0)
        b->fleet_line = n->line;
    set_string(b, obj, d, n);
}

/*
 * primary / shadow: backends may be declared after the listener that names
 * them, so keep the name and resolve it in check_conf().
 */
static void
set_backend_ref(struct conf_build *b, void *obj, const struct conf_directive *d,
                const struct conf_node *n)
{
    struct conf_listener *l = obj;
    struct listener_state *st = &b->lstate[l - b->conf->listeners];
    int is_primary = d->offset == offsetof(struct conf_listener, primary);
    char *name = is_primary ? st->primary : st->shadow;
    char q[CONF_QUOTE_MAX];

    if (conf_value_name(n->args[0]) != CONF_VALUE_OK) {
        node_err(b, n, "bad name %s", conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    snprintf(name, CONF_NAME_MAX, "%s", n->args[0]);
    if (is_primary)
        st->primary_line = n->line;
    else
        st->shadow_line = n->line;
}

/* reads 10%: a fraction of 1, from a percentage (basis points: 0.01% steps). */
static void
set_fraction(struct conf_build *b, void *obj, const struct conf_directive *d,
             const struct conf_node *n)
{
    char q[CONF_QUOTE_MAX];
    uint32_t bp = 0;
    double v;

    assert(d->size == sizeof(v));
    if (conf_value_percent(n->args[0], &bp) != CONF_VALUE_OK || bp > 10000) {
        node_err(b, n, "bad percentage %s (expected 0%%..100%%)",
                 conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    v = bp / 10000.0;
    memcpy((char *)obj + d->offset, &v, sizeof(v));
}

/* A size stored in a 64-bit field (totals that may pass 4 GB). */
static void
set_size64(struct conf_build *b, void *obj, const struct conf_directive *d,
           const struct conf_node *n)
{
    const struct conf_range *r = d->data;
    char q[CONF_QUOTE_MAX];
    uint64_t v = 0;
    enum conf_value_rc rc = conf_value_size(n->args[0], &v);

    assert(d->size == sizeof(v));
    conf_err_quote(n->args[0], q, sizeof(q));
    if (rc == CONF_VALUE_BAD) {
        node_err(b, n, "bad size %s", q);
        return;
    }
    if (rc == CONF_VALUE_RANGE || v < r->min || v > r->max) {
        node_err(b, n, "%s out of range %s", q, r->text);
        return;
    }
    memcpy((char *)obj + d->offset, &v, sizeof(v));
}

/*
 * Copy every argument of N into a new array of fixed-width rows, each
 * checked by ok().  *rows and *count are replaced (the directive appears
 * once per block).  Returns -1 after reporting an error.
 */
static int
set_rows(struct conf_build *b, const struct conf_node *n, void **rows, size_t *count,
         size_t width, int (*ok)(const char *))
{
    char q[CONF_QUOTE_MAX];
    char *a = calloc(n->nargs, width);

    if (a == NULL) {
        b->oom = 1;
        return -1;
    }
    for (size_t i = 0; i < n->nargs; i++) {
        if (strlen(n->args[i]) >= width || !ok(n->args[i])) {
            node_err(b, n, "bad value %s", conf_err_quote(n->args[i], q, sizeof(q)));
            free(a);
            return -1;
        }
        memcpy(a + i * width, n->args[i], strlen(n->args[i]));
    }
    free(*rows);
    *rows = a;
    *count = n->nargs;
    return 0;
}

static int
ok_column(const char *s)
{
    return s[0] != '\0';
}

/* Fingerprints as the report prints them: 16 hex digits. */
static int
ok_fingerprint(const char *s)
{
    if (strlen(s) != 16)
        return 0;
    for (; *s; s++)
        if (!((*s >= '0' && *s <= '9') || (*s >= 'a' && *s <= 'f')))
            return 0;
    return 1;
}

/* A function name, optionally schema-qualified: name or schema.name. */
static int
ok_function(const char *s)
{
    size_t dots = 0;
    if (!s[0] || s[0] == '.' || s[strlen(s) - 1] == '.')
        return 0;
    for (; *s; s++) {
        if (*s == '.')
            dots++;
        else if (!(*s == '_' || *s == '$' || (*s >= '0' && *s <= '9') ||
                   (*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
                   (unsigned char)*s >= 0x80))
            return 0;
    }
    return dots <= 1;
}

static void
set_ignore_columns(struct conf_build *b, void *obj, const struct conf_directive *d,
                   const struct conf_node *n)
{
    struct conf_compare *c = obj;
    set_rows(b, n, (void **)&c->ignore_columns, &c->nignore_columns,
             sizeof(c->ignore_columns[0]), ok_column);
}

static void
set_ignore_fingerprints(struct conf_build *b, void *obj, const struct conf_directive *d,
                        const struct conf_node *n)
{
    struct conf_compare *c = obj;
    set_rows(b, n, (void **)&c->ignore_fingerprints, &c->nignore_fingerprints,
             sizeof(c->ignore_fingerprints[0]), ok_fingerprint);
}

static void
set_write_functions(struct conf_build *b, void *obj, const struct conf_directive *d,
                    const struct conf_node *n)
{
    struct conf *c = obj;
    set_rows(b, n, (void **)&c->write_functions, &c->nwrite_functions,
             sizeof(c->write_functions[0]), ok_function);
}

/* A DNS name as a Host header carries it: letters, digits, '-', '_', '.'; not an IP. */
static int
ok_server_name(const char *s)
{
    int alpha = 0;
    if (!s[0] || s[0] == '.' || s[0] == '-')
        return 0;
    for (; *s; s++) {
        if ((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || *s == '-' || *s == '_')
            alpha = 1;
        else if (!((*s >= '0' && *s <= '9') || *s == '.'))
            return 0;
    }
    return alpha; /* IP literals are allowed by the address rules, not by name */
}

static void
set_server_names(struct conf_build *b, void *obj, const struct conf_directive *d,
                 const struct conf_node *n)
{
    struct conf_admin *a = obj;
    set_rows(b, n, (void **)&a->server_names, &a->nserver_names, sizeof(a->server_names[0]),
             ok_server_name);
}

/* ---- canary rules -------------------------------------------------------- */

/*
 * ADDR[/PREFIX]: an IPv4 or IPv6 network, IPv6 optionally in brackets
 * ([::1]/128).  No prefix means one host (/32, /128).  Refuses a zone
 * (fe80::1%eth0), a prefix longer than the family, and host bits set below
 * the prefix (10.0.0.1/8 is a typo for 10.0.0.0/8 or 10.0.0.1/32, and
 * guessing which would route the wrong sessions).
 */
static void
set_client(struct conf_build *b, void *obj, const struct conf_directive *d,
           const struct conf_node *n)
{
    struct conf_canary *cn = obj;
    const char *v = n->args[0];
    const char *slash = strchr(v, '/');
    size_t alen = slash != NULL ? (size_t)(slash - v) : strlen(v);
    char host[64], q[CONF_QUOTE_MAX];
    uint8_t addr[16];
    int family, prefix, max;

    conf_err_quote(v, q, sizeof(q));
    if (alen >= 2 && v[0] == '[' && v[alen - 1] == ']') {
        v++; /* brackets: IPv6 only, checked below */
        alen -= 2;
    }
    if (alen == 0 || alen >= sizeof(host)) {
        node_err(b, n, "bad address %s (expected ADDRESS[/PREFIX])", q);
        return;
    }
    memcpy(host, v, alen);
    host[alen] = '\0';
    memset(addr, 0, sizeof(addr));
    if (v == n->args[0] && inet_pton(AF_INET, host, addr + 12) == 1) {
        addr[10] = addr[11] = 0xff; /* ::ffff:a.b.c.d */
        family = 4;
        max = 32;
    } else if (inet_pton(AF_INET6, host, addr) == 1) {
        family = 6;
        max = 128;
    } else {
        node_err(b, n, "bad address %s (expected ADDRESS[/PREFIX])", q);
        return;
    }
    prefix = max;
    if (slash != NULL) {
        const char *p = slash + 1;
        size_t len = strlen(p);
        if (len == 0 || len > 3 || strspn(p, "0123456789") != len || atoi(p) > max) {
            node_err(b, n, "bad prefix in %s (expected /0../%d)", q, max);
            return;
        }
        prefix = atoi(p);
    }
    const uint8_t *net = family == 4 ? addr + 12 : addr;
    for (int bit = prefix; bit < max; bit++) {
        if (net[bit / 8] & (0x80u >> (bit % 8))) {
            node_err(b, n, "%s has host bits set", q);
            return;
        }
    }
    memcpy(cn->client_addr, addr, sizeof(addr));
    cn->client_family = family;
    cn->client_prefix = prefix;
    cn->has_client = 1;
}

/* hint shadow: the only hint so far, a comment the client puts in the query. */
static void
set_hint(struct conf_build *b, void *obj, const struct conf_directive *d, const struct conf_node *n)
{
    struct conf_canary *cn = obj;
    char q[CONF_QUOTE_MAX];

    if (strcmp(n->args[0], "shadow") != 0) {
        node_err(b, n, "bad value %s (expected shadow)", conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    cn->hint_shadow = 1;
}

/* percent P by KEY: P in 0.01%..100%, KEY the session attribute hashed. */
static void
set_percent(struct conf_build *b, void *obj, const struct conf_directive *d,
            const struct conf_node *n)
{
    struct conf_canary *cn = obj;
    char q[CONF_QUOTE_MAX];
    uint32_t bp = 0;
    int key = -1;

    if (conf_value_percent(n->args[0], &bp) != CONF_VALUE_OK || bp < 1 || bp > 10000) {
        node_err(b, n, "bad percentage %s (expected 0.01%%..100%%)",
                 conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    if (strcmp(n->args[1], "by") != 0) {
        node_err(b, n, "expected \"by\" after the percentage, got %s",
                 conf_err_quote(n->args[1], q, sizeof(q)));
        return;
    }
    for (int i = 0; canary_key_names[i] != NULL; i++)
        if (strcmp(canary_key_names[i], n->args[2]) == 0)
            key = i;
    if (key < 0) {
        node_err(b, n, "bad key %s (expected user|application_name|client|client_name)",
                 conf_err_quote(n->args[2], q, sizeof(q)));
        return;
    }
    cn->percent_bp = bp;
    cn->percent_key = (enum conf_canary_key)key;
}

/* route NAME: the backend is resolved in check_conf(), as primary and shadow are. */
static void
set_route(struct conf_build *b, void *obj, const struct conf_directive *d,
          const struct conf_node *n)
{
    struct conf_canary *cn = obj;
    char q[CONF_QUOTE_MAX];

    cn->action = CONF_CANARY_ROUTE;
    if (conf_value_name(n->args[0]) != CONF_VALUE_OK) {
        node_err(b, n, "bad name %s", conf_err_quote(n->args[0], q, sizeof(q)));
        return;
    }
    snprintf(b->route->name, sizeof(b->route->name), "%s", n->args[0]);
    b->route->line = n->line;
}

/* primary; no_mirror; */
static void
set_action(struct conf_build *b, void *obj, const struct conf_directive *d,
           const struct conf_node *n)
{
    struct conf_canary *cn = obj;

    cn->action = strcmp(d->name, "primary") == 0 ? CONF_CANARY_PRIMARY : CONF_CANARY_NO_MIRROR;
}

/* ---- blocks -------------------------------------------------------------- */

/* A block that fills a member of its context's struct: limits, later mirror... */
static void *
enter_member(struct conf_build *b, void *obj, const struct conf_directive *d,
             const struct conf_node *n)
{
    return (char *)obj + d->offset;
}

static void *
enter_admin(struct conf_build *b, void *obj, const struct conf_directive *d,
            const struct conf_node *n)
{
    struct conf_admin *a = &b->conf->admin;

    a->enabled = 1;
    snprintf(a->addr.host, sizeof(a->addr.host), "127.0.0.1");
    a->addr.port = 9090;
    b->admin_line = n->line;
    return a;
}

static void
leave_admin(struct conf_build *b, void *obj, const struct conf_node *n,
            const struct conf_node *const *seen)
{
    const struct conf_node *listen = seen_node(seen, CTX_ADMIN, "listen");
    const struct conf_admin *a = obj;

    if (listen != NULL)
        b->admin_line = listen->line;
    /* an admin server others can reach must not answer without a token */
    if (a->token_file[0] == '\0' && !conf_addr_is_loopback(&a->addr))
        conf_err_add(b->errs, listen != NULL ? listen->line : n->line,
                     "admin: %s:%u is not a loopback address: a token_file is required",
                     a->addr.host, a->addr.port);
    /* without token_file mutations would be open while reads are not */
    if (a->read_token_file[0] != '\0' && a->token_file[0] == '\0') {
        const struct conf_node *rt = seen_node(seen, CTX_ADMIN, "read_token_file");
        conf_err_add(b->errs, rt != NULL ? rt->line : n->line,
                     "admin: read_token_file needs token_file (the token of the mutating calls)");
    }
}

/*
 * Grow *ARRAY of *CAP elements of SIZE bytes to hold COUNT + 1, up to MAX.
 * New elements are zeroed.  0 on success.
 */
static int
grow(void **array, size_t *cap, size_t count, size_t size)
{
    if (count < *cap)
        return 0;
    size_t ncap = *cap ? *cap * 2 : 4;
    char *p = realloc(*array, ncap * size);
    if (p == NULL)
        return -1;
    memset(p + *cap * size, 0, (ncap - *cap) * size);
    *array = p;
    *cap = ncap;
    return 0;
}

/* Shared by backend and listener: name checks. 0 when the name is usable. */
static int
check_block_name(struct conf_build *b, const struct conf_node *n, int duplicate)
{
    char q[CONF_QUOTE_MAX];

    conf_err_quote(n->args[0], q, sizeof(q));
    if (conf_value_name(n->args[0]) != CONF_VALUE_OK) {
        node_err(b, n, "bad name %s", q);
        return -1;
    }
    if (duplicate)
        conf_err_add(b->errs, n->line, "duplicate %s %s", n->name, q);
    return 0;
}

static void *
enter_backend(struct conf_build *b, void *obj, const struct conf_directive *d,
              const struct conf_node *n)
{
    struct conf *c = b->conf;

    if (c->nbackends >= CONF_MAX_BACKENDS) {
        conf_err_add(b->errs, n->line, "too many backends (max %d)", CONF_MAX_BACKENDS);
        return NULL;
    }
    if (grow((void **)&c->backends, &b->backends_cap, c->nbackends, sizeof(*c->backends)) != 0) {
        b->oom = 1;
        return NULL;
    }
    int duplicate = conf_backend_find(c, n->args[0]) >= 0;
    /* Still read a misnamed or duplicate backend: its body may hold more errors. */
    struct conf_backend *be = &c->backends[c->nbackends++];
    if (check_block_name(b, n, duplicate) == 0)
        snprintf(be->name, sizeof(be->name), "%s", n->args[0]);
    be->tls = CONF_TLS_DISABLE;
    be->line = n->line;
    return be;
}

/* A client certificate (backend or store, CTX): both files, and only where TLS is on. */
static void
check_client_cert(struct conf_build *b, unsigned ctx, enum conf_tls tls,
                  const struct conf_node *const *seen, const char *desc)
{
    const struct conf_node *cert = seen_node(seen, ctx, "tls_cert");
    const struct conf_node *key = seen_node(seen, ctx, "tls_key");
    if (cert != NULL && key == NULL)
        conf_err_add(b->errs, cert->line, "%s: tls_cert without tls_key", desc);
    else if (key != NULL && cert == NULL)
        conf_err_add(b->errs, key->line, "%s: tls_key without tls_cert", desc);
    else if (cert != NULL && tls == CONF_TLS_DISABLE)
        conf_err_add(b->errs, cert->line,
                     "%s: tls_cert is shown over TLS only: set tls require or verify-full", desc);
}

/*
 * control { }: the store's TLS settings need a rediss:// store, which is
 * verified (verify-full) unless it says tls require.
 */
static void
leave_control(struct conf_build *b, void *obj, const struct conf_node *n,
              const struct conf_node *const *seen)
{
    static const char *const tls_words[] = {"tls", "tls_ca_file", "tls_server_name", "tls_cert",
                                            "tls_key"};
    struct conf_control *c = obj;
    const struct conf_node *tls = seen_node(seen, CTX_CONTROL, "tls");
    (void)n;

    if (!b->store_rediss) {
        for (size_t i = 0; i < sizeof(tls_words) / sizeof(tls_words[0]); i++) {
            const struct conf_node *w = seen_node(seen, CTX_CONTROL, tls_words[i]);
            if (w != NULL)
                conf_err_add(b->errs, w->line,
                             "control: %s is the store's TLS: it needs a rediss:// store",
                             tls_words[i]);
        }
        c->store_tls = CONF_TLS_DISABLE;
        return;
    }
    if (tls == NULL)
        c->store_tls = CONF_TLS_VERIFY_FULL;
    else if (c->store_tls == CONF_TLS_DISABLE)
        conf_err_add(b->errs, tls->line,
                     "control: a rediss:// store is reached over TLS: tls require or verify-full "
                     "(or a redis:// store)");
    check_client_cert(b, CTX_CONTROL, c->store_tls, seen, "control");
}

static void
leave_backend(struct conf_build *b, void *obj, const struct conf_node *n,
              const struct conf_node *const *seen)
{
    struct conf_backend *be = obj;
    const struct conf_node *pw = seen_node(seen, CTX_BACKEND, "password");
    const struct conf_node *pwfile = seen_node(seen, CTX_BACKEND, "password_file");
    const struct conf_node *tls = seen_node(seen, CTX_BACKEND, "tls");
    char desc[CONF_QUOTE_MAX + 16];

    block_desc(n, desc, sizeof(desc));
    const struct conf_node *passfile = seen_node(seen, CTX_BACKEND, "passfile");
    if (pw != NULL && pwfile != NULL)
        conf_err_add(b->errs, pw->line > pwfile->line ? pw->line : pwfile->line,
                     "%s: password and password_file are mutually exclusive", desc);
    /* one password for everyone, or one per client user: not both */
    if (passfile != NULL && (pw != NULL || pwfile != NULL))
        conf_err_add(b->errs, passfile->line,
                     "%s: passfile and password/password_file are mutually exclusive", desc);
    if (tls != NULL && be->tls == CONF_TLS_VERIFY_FULL &&
        seen_node(seen, CTX_BACKEND, "tls_ca_file") == NULL)
        conf_err_add(b->errs, tls->line, "%s: tls verify-full needs tls_ca_file", desc);
    check_client_cert(b, CTX_BACKEND, be->tls, seen, desc);
    /* a fence runs with tandem's own login, never a client's */
    const struct conf_node *fence = seen_node(seen, CTX_BACKEND, "fence");
    if (fence == NULL)
        fence = seen_node(seen, CTX_BACKEND, "unfence");
    if (fence != NULL && be->user[0] == '\0')
        conf_err_add(b->errs, fence->line,
                     "%s: fence and unfence run with tandem's own login: they need user", desc);
}

static void *
enter_listener(struct conf_build *b, void *obj, const struct conf_directive *d,
               const struct conf_node *n)
{
    struct conf *c = b->conf;
    int duplicate = 0;

    if (c->nlisteners >= CONF_MAX_LISTENERS) {
        conf_err_add(b->errs, n->line, "too many listeners (max %d)", CONF_MAX_LISTENERS);
        return NULL;
    }
    if (grow((void **)&c->listeners, &b->listeners_cap, c->nlisteners, sizeof(*c->listeners)) !=
            0 ||
        grow((void **)&b->lstate, &b->lstate_cap, c->nlisteners, sizeof(*b->lstate)) != 0) {
        b->oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < c->nlisteners; i++)
        if (strcmp(c->listeners[i].name, n->args[0]) == 0)
            duplicate = 1;
    struct conf_listener *l = &c->listeners[c->nlisteners++];
    if (check_block_name(b, n, duplicate) == 0)
        snprintf(l->name, sizeof(l->name), "%s", n->args[0]);
    l->proto = CONF_PROTO_POSTGRES;
    l->primary = -1;
    l->shadow = -1;
    l->mode = CONF_MODE_PASSTHROUGH;
    l->mirror.reads = 0.10; /* the other mirror fields' zero means their default */
    l->compare.confirm_per_second = 20;
    l->compare.explain_when_slower = 2;
    l->read_your_writes_ms = 1000;
    l->max_lag_ms = 1000;
    l->replication.poll_ms = 100;
    l->replication.compare_wait_ms = 10 * 1000;
    snprintf(l->replication.dbname, sizeof(l->replication.dbname), "postgres");
    l->server_conns = CONF_SERVER_CONNS_SHARED;
    l->server_pool = 1;
    l->server_idle_timeout_ms = 60 * 1000;
    l->server_lifetime_ms = 60 * 60 * 1000;
    snprintf(l->server_reset_query, sizeof(l->server_reset_query), "DISCARD ALL");
    l->line = n->line;
    return l;
}

/*
 * reads { blue weight=90; green weight=10; }: each directive's name is a
 * backend, which the table cannot know, so the body is read here and the
 * names resolved in check_conf().  Returns NULL: apply_block() must not
 * read the body as directives.  Messages start with the block's label
 * ("reads", or "--read-weights" from the command line).
 */
static void *
enter_reads(struct conf_build *b, void *obj, const struct conf_directive *d,
            const struct conf_node *n)
{
    struct conf_listener *l = obj;
    struct listener_state *st = &b->lstate[l - b->conf->listeners];
    size_t count = 0;
    char q[CONF_QUOTE_MAX], q2[CONF_QUOTE_MAX];

    st->reads = n;
    for (const struct conf_node *c = n->child; c != NULL; c = c->next)
        count++;
    if (count > READS_MAX) {
        conf_err_add(b->errs, n->line, "%s: too many backends (max %d)", n->label, READS_MAX);
        return NULL;
    }
    if (count == 0)
        return NULL;
    l->read_weights = calloc(count, sizeof(*l->read_weights));
    st->read_refs = calloc(count, sizeof(*st->read_refs));
    if (l->read_weights == NULL || st->read_refs == NULL) {
        b->oom = 1;
        return NULL;
    }
    for (const struct conf_node *c = n->child; c != NULL; c = c->next) {
        const char *w = c->nargs == 1 ? c->args[0] : "";
        uint64_t v = 0;
        int duplicate = 0;

        conf_err_quote(c->name, q, sizeof(q));
        if (conf_value_name(c->name) != CONF_VALUE_OK) {
            conf_err_add(b->errs, c->line, "%s: bad backend name %s", n->label, q);
            continue;
        }
        if (c->block) {
            conf_err_add(b->errs, c->line, "%s: %s does not take a { } block", n->label, q);
            continue;
        }
        /* against every earlier entry, refused ones too: the name is what repeats */
        for (const struct conf_node *e = n->child; e != c; e = e->next)
            if (strcmp(e->name, c->name) == 0)
                duplicate = 1;
        if (duplicate) {
            conf_err_add(b->errs, c->line, "%s: duplicate backend %s", n->label, q);
            continue;
        }
        if (c->nargs != 1) {
            conf_err_add(b->errs, c->line, "%s: %s takes 1 argument (weight=N), got %zu", n->label,
                         q, c->nargs);
            continue;
        }
        enum conf_value_rc rc =
            strncmp(w, "weight=", 7) == 0 ? conf_value_number(w + 7, &v) : CONF_VALUE_BAD;
        if (rc != CONF_VALUE_OK || v > range_weight.max) {
            conf_err_add(b->errs, c->line, "%s: %s: bad weight %s (expected weight=%s)", n->label,
                         q, conf_err_quote(w, q2, sizeof(q2)), range_weight.text);
            continue;
        }
        struct name_ref *ref = &st->read_refs[l->nread_weights];
        snprintf(ref->name, sizeof(ref->name), "%s", c->name);
        ref->line = c->line;
        l->read_weights[l->nread_weights].backend = -1;
        l->read_weights[l->nread_weights].weight = (uint32_t)v;
        l->nread_weights++;
    }
    return NULL;
}

static void *
enter_canary(struct conf_build *b, void *obj, const struct conf_directive *d,
             const struct conf_node *n)
{
    struct conf_listener *l = obj;
    struct listener_state *st = &b->lstate[l - b->conf->listeners];
    int duplicate = 0;

    if (l->ncanaries >= CANARIES_MAX) {
        conf_err_add(b->errs, n->line, "too many canary rules (max %d)", CANARIES_MAX);
        return NULL;
    }
    size_t cap = st->canaries_cap;
    if (grow((void **)&l->canaries, &cap, l->ncanaries, sizeof(*l->canaries)) != 0 ||
        grow((void **)&st->routes, &st->canaries_cap, l->ncanaries, sizeof(*st->routes)) != 0) {
        b->oom = 1;
        return NULL;
    }
    for (size_t i = 0; i < l->ncanaries; i++)
        if (strcmp(l->canaries[i].name, n->args[0]) == 0)
            duplicate = 1;
    struct conf_canary *cn = &l->canaries[l->ncanaries];
    b->route = &st->routes[l->ncanaries];
    l->ncanaries++;
    if (check_block_name(b, n, duplicate) == 0)
        snprintf(cn->name, sizeof(cn->name), "%s", n->args[0]);
    cn->backend = -1;
    cn->line = n->line;
    return cn;
}

static void *
enter_guard(struct conf_build *b, void *obj, const struct conf_directive *d,
            const struct conf_node *n)
{
    struct conf_listener *l = obj;
    int duplicate = 0;
    (void)d;

    if (l->nguards >= GUARDS_MAX) {
        conf_err_add(b->errs, n->line, "too many guards (max %d)", GUARDS_MAX);
        return NULL;
    }
    struct conf_guard *g = realloc(l->guards, (l->nguards + 1) * sizeof(*g));
    if (g == NULL) {
        b->oom = 1;
        return NULL;
    }
    l->guards = g;
    for (size_t i = 0; i < l->nguards; i++)
        if (strcmp(l->guards[i].name, n->args[0]) == 0)
            duplicate = 1;
    g = &l->guards[l->nguards++];
    memset(g, 0, sizeof(*g));
    if (check_block_name(b, n, duplicate) == 0)
        snprintf(g->name, sizeof(g->name), "%s", n->args[0]);
    g->window_ms = 60000;
    g->min_samples = 100;
    g->action = CONF_GUARD_READS_TO_PRIMARY;
    g->cooldown_ms = 300000;
    g->line = n->line;
    return g;
}

/* above is read by the metric's kind: a percentage, a ratio, or a duration. */
static void
leave_guard(struct conf_build *b, void *obj, const struct conf_node *n,
            const struct conf_node *const *seen)
{
    struct conf_guard *g = obj;
    const struct conf_node *above = seen_node(seen, CTX_GUARD, "above");
    const char *text = g->above_text;
    char desc[CONF_QUOTE_MAX + 16], q[CONF_QUOTE_MAX];
    int line = above ? above->line : n->line;
    uint32_t bp;
    uint64_t ms;
    char *end;

    block_desc(n, desc, sizeof(desc));
    conf_err_quote(text, q, sizeof(q));
    switch (g->metric) {
    case CONF_GUARD_SHADOW_ERROR_RATE:
    case CONF_GUARD_MISMATCH_RATE:
        if (above == NULL)
            g->above = 0.05;
        else if (conf_value_percent(text, &bp) != CONF_VALUE_OK || bp > 10000)
            conf_err_add(b->errs, line, "%s: above: bad percentage %s (expected 0%%..100%%)", desc,
                         q);
        else
            g->above = bp / 10000.0;
        break;
    case CONF_GUARD_LATENCY_RATIO_P50:
    case CONF_GUARD_LATENCY_RATIO_P99:
        g->above = above ? strtod(text, &end) : 2.0;
        if (above && (end == text || *end != '\0' || !(g->above > 0) || g->above > 1000))
            conf_err_add(b->errs, line, "%s: above: bad ratio %s (expected a number like 2.0)",
                         desc, q);
        break;
    case CONF_GUARD_LAG:
        if (above == NULL)
            g->above = 1.0;
        else if (conf_value_duration_ms(text, &ms) != CONF_VALUE_OK)
            conf_err_add(b->errs, line, "%s: above: bad duration %s (expected like 1s)", desc, q);
        else
            g->above = (double)ms / 1000.0;
        break;
    case CONF_GUARD_BACKEND_DOWN:
        if (above != NULL)
            conf_err_add(b->errs, line, "%s: above: backend_down takes no threshold", desc);
        break;
    }
}

/* Exactly one action per rule: a rule that does nothing, or two things, is a mistake. */
static void
leave_canary(struct conf_build *b, void *obj, const struct conf_node *n,
             const struct conf_node *const *seen)
{
    const struct conf_node *act[3];
    const struct conf_node *last = NULL;
    char desc[CONF_QUOTE_MAX + 16], names[64] = "";
    size_t nact = 0, used = 0;

    act[CONF_CANARY_ROUTE] = seen_node(seen, CTX_CANARY, "route");
    act[CONF_CANARY_PRIMARY] = seen_node(seen, CTX_CANARY, "primary");
    act[CONF_CANARY_NO_MIRROR] = seen_node(seen, CTX_CANARY, "no_mirror");
    for (int i = 0; i < 3; i++) {
        if (act[i] == NULL)
            continue;
        nact++;
        if (last == NULL || act[i]->line >= last->line)
            last = act[i];
        int w = snprintf(names + used, sizeof(names) - used, "%s%s", used ? ", " : "",
                         canary_action_names[i]);
        if (w > 0 && (size_t)w < sizeof(names) - used)
            used += (size_t)w;
    }
    block_desc(n, desc, sizeof(desc));
    if (nact == 0)
        conf_err_add(b->errs, n->line,
                     "%s: no action (expected route BACKEND, primary or no_mirror)", desc);
    else if (nact > 1)
        conf_err_add(b->errs, last->line, "%s: more than one action (%s)", desc, names);
}

/* The last child NAME of a block node, or NULL. */
static const struct conf_node *
seen_node_in(const struct conf_node *block, const char *name)
{
    const struct conf_node *found = NULL;
    for (const struct conf_node *n = block->child; n != NULL; n = n->next)
        if (strcmp(n->name, name) == 0)
            found = n;
    return found;
}

/* shadow_source and replication { } agree with each other and the protocol. */
static void
check_replication(struct conf_build *b, struct conf_listener *l,
                  const struct conf_node *const *seen, const char *desc)
{
    const struct conf_node *source = seen_node(seen, CTX_LISTENER, "shadow_source");
    const struct conf_node *block = seen_node(seen, CTX_LISTENER, "replication");
    const struct conf_node *kind = block ? seen_node_in(block, "kind") : NULL;
    int redis = l->proto == CONF_PROTO_REDIS;

    if (block != NULL && l->shadow_source != CONF_SHADOW_REPLICATION)
        conf_err_add(b->errs, block->line,
                     "%s: replication { } needs shadow_source replication;", desc);
    if (l->shadow_source != CONF_SHADOW_REPLICATION)
        return;
    if (seen_node(seen, CTX_LISTENER, "shadow") == NULL)
        conf_err_add(b->errs, source->line, "%s: shadow_source replication needs a shadow backend",
                     desc);
    if (kind == NULL)
        l->replication.kind = redis ? CONF_REPL_REPLICA : CONF_REPL_LOGICAL;
    else if (redis != (l->replication.kind == CONF_REPL_REPLICA))
        conf_err_add(b->errs, kind->line, "%s: replication kind %s is for %s listeners", desc,
                     conf_repl_kind_names[l->replication.kind], redis ? "postgres" : "redis");
}

/*
 * tls required needs a certificate to offer; off with one is a
 * contradiction.  Redis has no in-protocol TLS request: a Redis listener
 * with a certificate is TLS from the first byte (required), one without
 * is plain text (off), and optional means nothing there.
 */
static void check_server_conns(struct conf_build *b, struct conf_listener *l,
                               const struct conf_node *const *seen, const char *desc);

static void
check_listener_tls(struct conf_build *b, const struct conf_listener *l,
                   const struct conf_node *const *seen, const char *desc)
{
    const struct conf_node *tls = seen_node(seen, CTX_LISTENER, "tls");
    const struct conf_node *cert = seen_node(seen, CTX_LISTENER, "tls_cert");
    if (tls == NULL)
        return;
    if (l->proto == CONF_PROTO_REDIS && l->tls == CONF_LTLS_OPTIONAL)
        conf_err_add(b->errs, tls->line,
                     "%s: tls optional is for postgres listeners (a redis listener with "
                     "tls_cert is TLS from the first byte: tls required)",
                     desc);
    else if (l->tls == CONF_LTLS_REQUIRED && cert == NULL)
        conf_err_add(b->errs, tls->line, "%s: tls required needs tls_cert and tls_key", desc);
    else if (l->tls == CONF_LTLS_OFF && cert != NULL)
        conf_err_add(b->errs, tls->line,
                     "%s: tls off never offers TLS: remove tls_cert/tls_key or the tls line",
                     desc);
}

static void
leave_listener(struct conf_build *b, void *obj, const struct conf_node *n,
               const struct conf_node *const *seen)
{
    struct conf_listener *l = obj;
    struct listener_state *st = &b->lstate[l - b->conf->listeners];
    const struct conf_node *listen = seen_node(seen, CTX_LISTENER, "listen");
    const struct conf_node *cert = seen_node(seen, CTX_LISTENER, "tls_cert");
    const struct conf_node *key = seen_node(seen, CTX_LISTENER, "tls_key");
    const struct conf_node *shadow = seen_node(seen, CTX_LISTENER, "shadow");
    const struct conf_node *mode = seen_node(seen, CTX_LISTENER, "mode");
    char desc[CONF_QUOTE_MAX + 16];

    block_desc(n, desc, sizeof(desc));
    if (listen != NULL)
        st->listen_line = listen->line;
    if (cert != NULL && key == NULL)
        conf_err_add(b->errs, cert->line, "%s: tls_cert without tls_key", desc);
    if (key != NULL && cert == NULL)
        conf_err_add(b->errs, key->line, "%s: tls_key without tls_cert", desc);
    check_listener_tls(b, l, seen, desc);
    if (st->shadow[0] != '\0' && strcmp(st->shadow, st->primary) == 0)
        conf_err_add(b->errs, st->shadow_line, "%s: shadow is the same backend as primary", desc);
    check_replication(b, l, seen, desc);
    /* Naming a shadow means wanting it used: mirror unless told otherwise. */
    if (mode == NULL)
        l->mode = shadow != NULL ? CONF_MODE_SHADOW : CONF_MODE_PASSTHROUGH;
    else if (l->mode != CONF_MODE_PASSTHROUGH && shadow == NULL)
        conf_err_add(b->errs, mode->line, "%s: mode %s needs a shadow backend", desc,
                     conf_mode_names[l->mode]);
    check_server_conns(b, l, seen, desc);
    const struct conf_node *auth_file = seen_node(seen, CTX_LISTENER, "auth_file");
    if (auth_file != NULL && l->proto == CONF_PROTO_REDIS)
        conf_err_add(b->errs, auth_file->line, "%s: auth_file applies to protocol postgres only",
                     desc);
    check_auth_query(b, l, seen, desc);
}

/*
 * server_connections and its companions.  PostgreSQL sessions carry state
 * from their first message (startup, login), so a postgres listener never
 * shares a connection between clients at once: dedicated (the default), or
 * reuse, one client after another (pg/pg_park.h).  The reuse settings mean
 * nothing to Redis.
 */
static void
check_server_conns(struct conf_build *b, struct conf_listener *l,
                   const struct conf_node *const *seen, const char *desc)
{
    static const char *const reuse_only[] = {"server_idle_timeout", "server_lifetime",
                                             "server_reset_query"};
    const struct conf_node *conns = seen_node(seen, CTX_LISTENER, "server_connections");
    const struct conf_node *pool = seen_node(seen, CTX_LISTENER, "server_pool");

    if (l->proto == CONF_PROTO_REDIS) {
        if (l->server_conns == CONF_SERVER_CONNS_REUSE)
            conf_err_add(b->errs, conns->line,
                         "%s: server_connections reuse applies to protocol postgres only", desc);
        for (size_t i = 0; i < sizeof(reuse_only) / sizeof(reuse_only[0]); i++) {
            const struct conf_node *n = seen_node(seen, CTX_LISTENER, reuse_only[i]);
            if (n != NULL)
                conf_err_add(b->errs, n->line, "%s: %s applies to protocol postgres only", desc,
                             reuse_only[i]);
        }
        return;
    }
    if (conns == NULL)
        l->server_conns = CONF_SERVER_CONNS_DEDICATED;
    else if (l->server_conns == CONF_SERVER_CONNS_REUSE)
        b->lstate[l - b->conf->listeners].reuse_line = conns->line;
    else if (l->server_conns == CONF_SERVER_CONNS_SHARED)
        conf_err_add(b->errs, conns->line,
                     "%s: server_connections shared applies to protocol redis only "
                     "(postgres: dedicated | reuse)", desc);
    if (pool == NULL)
        l->server_pool = 16;
}

/*
 * auth_query: postgres only; the query runs as tandem's own login to the
 * primary, so that backend needs a user; "default" is PgBouncer's query.
 */
static void
check_auth_query(struct conf_build *b, struct conf_listener *l, const struct conf_node *const *seen,
                 const char *desc)
{
    const struct conf_node *q = seen_node(seen, CTX_LISTENER, "auth_query");
    const struct conf_node *refresh = seen_node(seen, CTX_LISTENER, "auth_query_refresh");
    if (refresh == NULL)
        l->auth_query_refresh_ms = 60000;
    if (q == NULL) {
        if (refresh != NULL)
            conf_err_add(b->errs, refresh->line, "%s: auth_query_refresh needs auth_query", desc);
        return;
    }
    if (l->proto == CONF_PROTO_REDIS) {
        conf_err_add(b->errs, q->line, "%s: auth_query applies to protocol postgres only", desc);
        return;
    }
    if (strcmp(l->auth_query, "default") == 0)
        snprintf(l->auth_query, sizeof(l->auth_query), "%s", CONF_AUTH_QUERY_DEFAULT);
    else if (strstr(l->auth_query, "$1") == NULL)
        conf_err_add(b->errs, q->line, "%s: auth_query must take the user name as $1", desc);
    b->lstate[l - b->conf->listeners].auth_query_line = q->line;
}

/* ---- the walk ------------------------------------------------------------ */

static void
arg_count_err(struct conf_build *b, const struct conf_directive *d, const struct conf_node *n)
{
    char q[CONF_QUOTE_MAX];

    conf_err_quote(n->name, q, sizeof(q));
    if (n->nargs == 0)
        conf_err_add(b->errs, n->line, "missing %s for %s", (d->flags & D_BLOCK) ? "name" : "value",
                     q);
    else if (d->nargs == 0)
        conf_err_add(b->errs, n->line, "%s takes no arguments, got %zu", q, n->nargs);
    else
        conf_err_add(b->errs, n->line, "%s takes %u argument%s, got %zu", q, d->nargs,
                     d->nargs == 1 ? "" : "s", n->nargs);
}

/*
 * Apply the children of BLOCK, read in context CTX, to OBJ.  OWNER is the
 * row that opened the block (NULL for the top level): its required rows
 * are checked and its leave function called once the body is read.
 */
static void
apply_block(struct conf_build *b, const struct conf_node *block, unsigned ctx, void *obj,
            const struct conf_directive *owner)
{
    const struct conf_node *seen[NDIRECTIVES];
    char q[CONF_QUOTE_MAX];

    memset(seen, 0, sizeof(seen));
    for (const struct conf_node *n = block->child; n != NULL && !b->oom; n = n->next) {
        int i = row_find(n->name, ctx);

        conf_err_quote(n->name, q, sizeof(q));
        if (i < 0) {
            if (row_find(n->name, ~0u) >= 0)
                conf_err_add(b->errs, n->line, "directive %s is not allowed %s", q, ctx_where(ctx));
            else
                conf_err_add(b->errs, n->line, "unknown directive %s", q);
            continue;
        }
        const struct conf_directive *d = &directives[i];
        if ((d->flags & D_BLOCK) && !n->block) {
            conf_err_add(b->errs, n->line, "directive %s needs a { } block", q);
            continue;
        }
        if (!(d->flags & D_BLOCK) && n->block) {
            conf_err_add(b->errs, n->line, "directive %s does not take a { } block", q);
            continue;
        }
        if (seen[i] != NULL && !(d->flags & D_MULTI)) {
            conf_err_add(b->errs, n->line, "duplicate directive %s", q);
            continue;
        }
        seen[i] = n;
        if ((d->flags & D_LIST) ? n->nargs == 0 : n->nargs != d->nargs) {
            arg_count_err(b, d, n);
            continue;
        }
        if (d->flags & D_BLOCK) {
            void *inner = d->enter(b, obj, d, n);
            if (inner != NULL)
                apply_block(b, n, d->inner, inner, d);
        } else {
            d->set(b, obj, d, n);
        }
    }
    if (owner == NULL || b->oom)
        return;

    char desc[CONF_QUOTE_MAX + 16];
    block_desc(block, desc, sizeof(desc));
    for (size_t i = 0; i < NDIRECTIVES; i++)
        if ((directives[i].ctx & ctx) && (directives[i].flags & D_REQUIRED) && seen[i] == NULL)
            conf_err_add(b->errs, block->line, "%s: missing \"%s\"", desc, directives[i].name);
    if (owner->leave != NULL)
        owner->leave(b, obj, block, seen);
}

/* ---- whole-configuration checks ------------------------------------------ */

static int
same_addr(const struct conf_addr *x, const struct conf_addr *y)
{
    return x->port != 0 && x->port == y->port && strcasecmp(x->host, y->host) == 0;
}

static void
resolve_ref(struct conf_build *b, const struct conf_listener *l, const char *name, int line,
            int *index)
{
    char q[CONF_QUOTE_MAX], lq[CONF_QUOTE_MAX];

    if (name[0] == '\0')
        return; /* unset, or already refused */
    *index = conf_backend_find(b->conf, name);
    if (*index < 0)
        conf_err_add(b->errs, line, "listener %s: unknown backend %s",
                     conf_err_quote(l->name, lq, sizeof(lq)), conf_err_quote(name, q, sizeof(q)));
}

/*
 * NAME of the listener's reads { } or a canary's route: a declared backend
 * that is this listener's primary or shadow.  Returns its index, or -1
 * after reporting (WHAT: 'reads', 'canary "x": route').
 */
static int
resolve_role(struct conf_build *b, const struct conf_listener *l, const char *what,
             const struct name_ref *ref)
{
    char q[CONF_QUOTE_MAX], lq[CONF_QUOTE_MAX];
    int i = conf_backend_find(b->conf, ref->name);

    conf_err_quote(l->name, lq, sizeof(lq));
    conf_err_quote(ref->name, q, sizeof(q));
    if (i < 0) {
        conf_err_add(b->errs, ref->line, "listener %s: %s: unknown backend %s", lq, what, q);
        return -1;
    }
    /* an unresolved primary was reported already; do not blame the reference too */
    if (l->primary >= 0 && i != l->primary && i != l->shadow) {
        conf_err_add(b->errs, ref->line,
                     "listener %s: %s: backend %s is neither primary nor shadow", lq, what, q);
        return -1;
    }
    return i;
}

/*
 * Resolve reads { } and complete it: the result names the primary and the
 * shadow (when there is one) exactly once each, in the order written, a
 * role left out with weight 0 after them.  Without reads { }, the primary
 * answers every read: primary weight 1, shadow 0.
 */
static void
check_reads(struct conf_build *b, struct conf_listener *l, struct listener_state *st)
{
    int roles[2] = {l->primary, l->shadow};
    struct conf_read_weight *w;
    size_t n = 0;

    if (l->primary < 0)
        return; /* reported; nothing to complete */
    w = calloc(l->nread_weights + 2, sizeof(*w));
    if (w == NULL) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < l->nread_weights; i++) {
        int be = resolve_role(b, l, st->reads->label, &st->read_refs[i]);
        if (be < 0)
            continue;
        w[n].backend = be;
        w[n].weight = l->read_weights[i].weight;
        n++;
    }
    for (int r = 0; r < 2; r++) {
        size_t i;
        if (roles[r] < 0)
            continue;
        for (i = 0; i < n && w[i].backend != roles[r]; i++)
            ;
        if (i < n)
            continue;
        w[n].backend = roles[r];
        w[n].weight = st->reads == NULL && r == 0 ? 1 : 0;
        n++;
    }
    free(l->read_weights);
    l->read_weights = w;
    l->nread_weights = n;
}

/*
 * A match on what the listener's protocol does not have would never hold:
 * name it rather than let the rule silently match nothing.
 */
static void
check_canary_proto(struct conf_build *b, const struct conf_listener *l,
                   const struct conf_canary *cn)
{
    int redis = l->proto == CONF_PROTO_REDIS;
    const char *bad = NULL;
    char q[CONF_QUOTE_MAX], lq[CONF_QUOTE_MAX];

    if (redis && cn->user[0])
        bad = "user";
    else if (redis && cn->database[0])
        bad = "database";
    else if (redis && cn->application_name[0])
        bad = "application_name (use client_name)";
    else if (redis && cn->hint_shadow)
        bad = "hint";
    else if (redis && cn->percent_bp > 0 && cn->percent_key != CONF_CANARY_KEY_CLIENT &&
             cn->percent_key != CONF_CANARY_KEY_CLIENT_NAME)
        bad = "percent by user or application_name (use client_name or client)";
    else if (!redis && cn->client_name[0])
        bad = "client_name (use application_name)";
    else if (!redis && cn->key_prefix[0])
        bad = "key_prefix";
    else if (!redis && cn->percent_bp > 0 && cn->percent_key == CONF_CANARY_KEY_CLIENT_NAME)
        bad = "percent by client_name (use application_name)";
    if (bad != NULL)
        conf_err_add(b->errs, cn->line, "listener %s: canary %s: %s is not for a %s listener",
                     conf_err_quote(l->name, lq, sizeof(lq)),
                     conf_err_quote(cn->name, q, sizeof(q)), bad, redis ? "redis" : "postgres");
}

static void
check_canaries(struct conf_build *b, struct conf_listener *l, struct listener_state *st)
{
    char what[CONF_QUOTE_MAX + 32], q[CONF_QUOTE_MAX];

    for (size_t i = 0; i < l->ncanaries; i++) {
        struct conf_canary *cn = &l->canaries[i];
        check_canary_proto(b, l, cn);
        if (st->routes[i].name[0] == '\0')
            continue; /* no route, or a bad name already reported */
        snprintf(what, sizeof(what), "canary %s: route", conf_err_quote(cn->name, q, sizeof(q)));
        cn->backend = resolve_role(b, l, what, &st->routes[i]);
    }
}

/* Each step names the listener's primary or shadow: the two sides of the flip. */
static void
check_steps(struct conf_build *b, struct conf_listener *l)
{
    char q[CONF_QUOTE_MAX], lq[CONF_QUOTE_MAX];
    for (size_t i = 0; i < l->replication.nsteps; i++) {
        struct conf_step *st = &l->replication.steps[i];
        st->backend = conf_backend_find(b->conf, st->backend_name);
        if (st->backend >= 0 && (st->backend == l->primary || st->backend == l->shadow))
            continue;
        conf_err_add(b->errs, st->line,
                     "listener %s: step backend %s is not this listener's primary or shadow",
                     conf_err_quote(l->name, lq, sizeof(lq)),
                     conf_err_quote(st->backend_name, q, sizeof(q)));
        st->backend = -1;
    }
}

/*
 * check_fences - a Redis listener's backends: each fence and unfence is a
 * command line split as redis-cli does.  PostgreSQL's are SQL: the server
 * judges.
 */
static void
check_fences(struct conf_build *b, const struct conf_listener *l)
{
    char q[CONF_QUOTE_MAX];
    if (l->proto != CONF_PROTO_REDIS)
        return;
    for (int k = 0; k < 2; k++) {
        int i = k == 0 ? l->primary : l->shadow;
        if (i < 0)
            continue;
        const struct conf_backend *be = &b->conf->backends[i];
        if (be->nfence + be->nunfence == 0)
            continue;
        conf_err_quote(be->name, q, sizeof(q));
        /* the fenced user's writes are refused there: tandem's mirror logs in as its own */
        if (be->password[0] == '\0' && be->password_file[0] == '\0')
            conf_err_add(b->errs, be->fence_line,
                         "backend %s: a Redis backend's fence needs password or password_file "
                         "(tandem's mirror logs in there with user and it)",
                         q);
        for (size_t j = 0; j < be->nfence + be->nunfence; j++) {
            const char *cmd = j < be->nfence ? be->fence[j] : be->unfence[j - be->nfence];
            int argc = 0;
            sds *argv = sdssplitargs(cmd, &argc);
            if (argv == NULL || argc == 0)
                conf_err_add(b->errs, be->fence_line,
                             "backend %s: %s %zu is not a Redis command (unbalanced quotes or "
                             "empty)",
                             q, j < be->nfence ? "fence" : "unfence",
                             (j < be->nfence ? j : j - be->nfence) + 1);
            if (argv != NULL)
                sdsfreesplitres(argv, argc);
        }
    }
}

static void
check_conf(struct conf_build *b)
{
    struct conf *c = b->conf;
    char addr[CONF_HOST_MAX + 16], q[CONF_QUOTE_MAX], q2[CONF_QUOTE_MAX];

    for (size_t i = 0; i < c->nlisteners; i++) {
        struct conf_listener *l = &c->listeners[i];
        struct listener_state *st = &b->lstate[i];

        resolve_ref(b, l, st->primary, st->primary_line, &l->primary);
        resolve_ref(b, l, st->shadow, st->shadow_line, &l->shadow);
        /* the top-level auth_file: every postgres listener's that names none itself */
        if (l->proto == CONF_PROTO_POSTGRES && l->auth_file[0] == '\0')
            snprintf(l->auth_file, sizeof(l->auth_file), "%s", c->auth_file);
        /* a kept connection goes to a client whose password tandem checked itself */
        if (st->reuse_line && l->auth_file[0] == '\0' && !st->auth_query_line)
            conf_err_add(b->errs, st->reuse_line,
                         "listener %s: server_connections reuse needs auth_file or auth_query "
                         "(with relayed authentication the server checks every password)",
                         conf_err_quote(l->name, q, sizeof(q)));
        /* the query runs on the answering backend: after a cutover, the shadow */
        for (int r = 0; r < 2 && st->auth_query_line; r++) {
            int be = r == 0 ? l->primary : l->shadow;
            if (be >= 0 && c->backends[be].user[0] == '\0')
                conf_err_add(b->errs, st->auth_query_line,
                             "listener %s: auth_query runs as tandem's own login: backend \"%s\" "
                             "needs a user (and password or password_file)",
                             conf_err_quote(l->name, q, sizeof(q)), c->backends[be].name);
        }
        check_reads(b, l, st);
        check_canaries(b, l, st);
        check_steps(b, l);
        check_fences(b, l);
        /* Two listeners on one address: the second bind would fail at start. */
        for (size_t j = 0; j < i; j++) {
            if (!same_addr(&l->addr, &c->listeners[j].addr))
                continue;
            conf_addr_format(&l->addr, addr, sizeof(addr));
            conf_err_add(b->errs, st->listen_line,
                         "listener %s: address %s already used by listener %s",
                         conf_err_quote(l->name, q, sizeof(q)), addr,
                         conf_err_quote(c->listeners[j].name, q2, sizeof(q2)));
            break;
        }
        if (c->admin.enabled && same_addr(&l->addr, &c->admin.addr)) {
            conf_addr_format(&l->addr, addr, sizeof(addr));
            conf_err_add(b->errs, b->admin_line, "admin: address %s already used by listener %s",
                         addr, conf_err_quote(l->name, q, sizeof(q)));
        }
    }
    if (c->nlisteners == 0)
        conf_err_add(b->errs, 0, "no listener defined");
    if (b->store_line && !b->fleet_line)
        conf_err_add(b->errs, b->store_line,
                     "control: a store needs a fleet name (fleet NAME;): members share a "
                     "fleet's state");
    if (b->fleet_line && !b->store_line)
        conf_err_add(b->errs, b->fleet_line,
                     "control: fleet needs a store (store redis://HOST:PORT[/DB];)");
    if (c->control.store_password_file[0] && !b->store_line)
        conf_err_add(b->errs, 0, "control: password_file is the store's: it needs a store");
}

static int
default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);

    /* More workers than 4 rarely pays for a proxy whose work is mostly I/O. */
    if (n < 1)
        return 1;
    return n > 4 ? 4 : (int)n;
}

static void
set_defaults(struct conf *c)
{
    c->workers = default_workers();
    c->log_format = CONF_LOG_TEXT;
    c->log_level = CONF_LOG_INFO;
    c->limits.max_client_conn = 10000;
    c->limits.max_packet_size = 1u << 20;
    c->limits.startup_timeout_ms = 10 * 1000;
    c->limits.connect_timeout_ms = 5 * 1000;
    c->limits.shutdown_timeout_ms = 30 * 1000;
    c->limits.client_idle_timeout_ms = 60 * 60 * 1000;
    c->limits.tcp_keepalive_ms = 60 * 1000;
    c->limits.tcp_user_timeout_ms = 30 * 1000;
    c->limits.max_command_size = 64u << 20;
    c->limits.max_prepared_bytes = 8u << 20;
    c->limits.describes_per_second = 2000; /* protocol/pgdesc.h: PGDESC_DESCRIBES_PER_SEC */
    c->admin.enabled = 0; /* enter_admin() sets the default address */
    c->control.join_timeout_ms = 10 * 1000;
}

struct conf *
conf_parse_tree(const struct conf_tree *t, const char *file, struct conf_errors *errs)
{
    struct conf_build b;
    size_t before = errs->count + errs->dropped;

    memset(&b, 0, sizeof(b));
    b.errs = errs;
    b.conf = calloc(1, sizeof(*b.conf));
    if (b.conf == NULL) {
        conf_err_add(errs, 0, "out of memory");
        return NULL;
    }
    snprintf(b.conf->file, sizeof(b.conf->file), "%s", file != NULL ? file : "");
    set_defaults(b.conf);
    apply_block(&b, &t->root, CTX_TOP, b.conf, NULL);
    if (!b.oom)
        check_conf(&b);
    if (b.oom)
        conf_err_add(errs, 0, "out of memory");
    for (size_t i = 0; i < b.conf->nlisteners; i++) {
        free(b.lstate[i].read_refs);
        free(b.lstate[i].routes);
    }
    free(b.lstate);
    if (errs->count + errs->dropped != before) {
        conf_free(b.conf);
        return NULL;
    }
    return b.conf;
}
