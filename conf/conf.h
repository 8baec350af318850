/*
 * conf.h - tandem's configuration: the grammar's result, as plain values.
 *
 * A struct conf is an immutable snapshot once conf_load_*() returned it: the
 * proxy shares it between threads and never writes to it.  The file and the
 * command line (tandem postgres --listen ...) both build this same struct.
 *
 * This module is pure: it reads no socket, starts no thread, logs nothing.
 * conf_load_file() is the only function that touches the file system, and
 * only to read the file it was given.
 *
 * Grammar (nginx-style; '#' starts a comment; strings may be "quoted"):
 *
 *   workers 2;
 *   log_format text;                      # text | json
 *   log_level info;                       # debug | info | warn | error
 *   limits {
 *       max_client_conn 10000;
 *       max_packet_size 1MB;              # sizes: B, KB, MB, GB (powers of 2)
 *       startup_timeout 10s;              # durations: ms, s, m, h
 *       connect_timeout 5s;
 *       shutdown_timeout 30s;
 *       client_idle_timeout 1h;           # Redis clients; 0s: never
 *       tcp_keepalive 60s;                # probes on idle sockets; 0s: the kernel's 2 h
 *       tcp_user_timeout 30s;             # unacknowledged data this long: dead; 0s: kernel's
 *       max_command_size 64MB;            # one Redis command, buffered until whole
 *       max_prepared_bytes 8MB;           # Parse messages kept per session (shadow)
 *   }
 *   admin { listen 127.0.0.1:9090; token_file /etc/tandem/token;
 *           read_token_file /etc/tandem/read-token;  # reads only (the report, status)
 *           server_name tandem.internal; }       # names the Host header may carry
 *                                                 # (besides IPs and localhost)
 *   control {
 *       state_file /var/lib/tandem/state.json;  # roles, epoch, mode... survive a restart
 *       store redis://10.0.0.5:6379/0;          # a fleet: the control state shared by every
 *       fleet payments;                         #   member of that name (control/fleet.h)
 *       password_file /etc/tandem/store.pw;     # the store's AUTH password (never logged)
 *       member pod-a;                           # this member's id; default HOSTNAME:ADMINPORT
 *       join_timeout 10s;                       # store unreachable at start: wait this long
 *       # store rediss://...: TLS (control/tls_tunnel.h), verify-full unless tls require;
 *       # tls_ca_file (default: the system's CAs), tls_server_name, tls_cert + tls_key
 *   }
 *   backend blue {
 *       address 127.0.0.1:5432;
 *       tls disable;                      # disable | require | verify-full
 *       tls_ca_file /etc/ssl/ca.pem;      # required by verify-full
 *       tls_server_name db.internal;      # default: host of address
 *       tls_cert /etc/tandem/client.pem;  # a client certificate, for a backend that asks
 *       tls_key  /etc/tandem/client.key;  #   (both or neither)
 *       user tandem;                      # tandem's own logins (shadow, probes)
 *       password_file /etc/tandem/blue.pw;
 *       fence "ALTER ROLE app SET default_transaction_read_only = on";   # a fleet's commit:
 *       fence "SELECT pg_terminate_backend(pid) FROM pg_stat_activity    #   run when blue stops
 *              WHERE usename = 'app'";                                   #   answering, with
 *       unfence "ALTER ROLE app RESET default_transaction_read_only";    #   tandem's login
 *   }
 *   listener pg {
 *       listen 0.0.0.0:6432;
 *       protocol postgres;                # postgres | redis
 *       tls_cert /etc/tandem/cert.pem;    # TLS for clients; both or neither
 *       tls_key  /etc/tandem/key.pem;
 *       tls optional;                     # optional | required (needs tls_cert) | off
 *                                         # redis: TLS from the first byte with tls_cert
 *                                         #   (required, or off without one)
 *       primary blue;
 *       shadow green;
 *       mode passthrough;                 # passthrough | shadow | split
 *                                         # default: shadow if a shadow is named
 *       mirror { reads 10%; level all; queue 4MB; timeout 5s; }
 *       compare { ignore_columns updated_at; ignore_fingerprints 0123456789abcdef; }
 *       reads { blue weight=90; green weight=10; }   # mode split; 0..1000000 each
 *       read_your_writes 1s;              # 0ms turns it off
 *       max_lag 1s;
 *       server_connections shared;        # redis: shared | dedicated; postgres: dedicated | reuse
 *       server_pool 1;                    # redis: shared connections per worker, backend, role;
 *                                         # postgres reuse: idle ones kept per worker (16)
 *       server_idle_timeout 60s;          # postgres reuse: an idle kept one is closed after
 *       server_lifetime 1h;               # postgres reuse: an older one is not kept
 *       server_reset_query "DISCARD ALL"; # postgres reuse: run before it is kept ("" none)
 *       canary billing {                  # 0..64 per listener; first match wins
 *           application_name "billing-*"; # glob
 *           user alice; database app;     # exact
 *           client 10.0.0.0/8;            # ADDR[/PREFIX], v4 or v6 ([::1]/128);
 *                                         # host bits below the prefix refused
 *           hint shadow;                  # units carrying tandem:shadow
 *           percent 5% by user;           # 0.01%..100%, by user|application_name|client
 *           route green;                  # exactly one: route NAME | primary | no_mirror
 *       }
 *       canary cart {                     # on a redis listener:
 *           client_name "cart-*";         # glob on CLIENT SETNAME / HELLO SETNAME
 *           key_prefix "user:";           # the command's first key starts with it
 *           client 10.0.0.0/8;
 *           percent 5% by client_name;    # by client_name|client
 *           route green;
 *       }
 *   }
 *
 * Defaults: workers = online CPUs, at most 4; log_format text; log_level
 * info; the limits shown above; no admin server unless admin { } is given
 * (then 127.0.0.1:9090); backend tls disable; listener protocol postgres.
 * Required: at least one listener; in a listener, listen and primary; in a
 * backend, address.  Every directive may appear once per block, except
 * backend, listener and canary.  Names are 1..63 of [A-Za-z0-9_.-].
 *
 * Read routing: reads { } names the listener's primary and/or shadow (any
 * other backend is an error); a canary's route names one of them too.
 * Without reads { } the primary answers every read (weight 1, shadow 0);
 * read_your_writes and max_lag default to 1 s.  A canary rule with no
 * match clause matches every session.
 *
 * Later capabilities (guard { }) add blocks inside listener and at top
 * level; the parser is table-driven so each is a handful of table rows.
 */
#ifndef TANDEM_CONF_H
#define TANDEM_CONF_H

#include <stddef.h>
#include <stdint.h>

#define CONF_NAME_MAX 64
#define CONF_HOST_MAX 256
#define CONF_PATH_MAX 1024
/* auth_query default: PgBouncer's, the user's name and rolpassword (pg_shadow needs a superuser) */
#define CONF_AUTH_QUERY_DEFAULT "SELECT usename, passwd FROM pg_shadow WHERE usename = $1"
#define CONF_MAX_ERRORS 64

enum conf_proto { CONF_PROTO_POSTGRES, CONF_PROTO_REDIS };
enum conf_mode { CONF_MODE_PASSTHROUGH, CONF_MODE_SHADOW, CONF_MODE_SPLIT };
/*
 * Server connections.  Redis listeners: clients without connection state
 * share them (shared, the default) or not (dedicated).  PostgreSQL
 * listeners: each client holds its own (dedicated, the default), and with
 * reuse one its client left idle is reset and kept for the next client
 * tandem authenticated as the same user, database and startup parameters.
 */
enum conf_server_conns { CONF_SERVER_CONNS_SHARED, CONF_SERVER_CONNS_DEDICATED,
                         CONF_SERVER_CONNS_REUSE };
enum conf_tls { CONF_TLS_DISABLE, CONF_TLS_REQUIRE, CONF_TLS_VERIFY_FULL };
/* A postgres listener's clients: TLS when they ask (optional), always (required), never (off). */
enum conf_listener_tls { CONF_LTLS_OPTIONAL, CONF_LTLS_REQUIRED, CONF_LTLS_OFF };
enum conf_log_format { CONF_LOG_TEXT, CONF_LOG_JSON };
enum conf_log_level { CONF_LOG_DEBUG, CONF_LOG_INFO, CONF_LOG_WARN, CONF_LOG_ERROR };

/* "host:port", "[v6]:port".  host is kept as text; the proxy resolves it. */
struct conf_addr {
    char host[CONF_HOST_MAX];
    uint16_t port;
};

#define CONF_FENCE_MAX 8         /* fence / unfence statements per backend */
#define CONF_STATEMENT_MAX 512   /* bytes of one, with its NUL */

struct conf_backend {
    char name[CONF_NAME_MAX];
    struct conf_addr addr;
    enum conf_tls tls;
    char tls_ca_file[CONF_PATH_MAX];     /* "" when unset */
    char tls_server_name[CONF_HOST_MAX]; /* "" means addr.host */
    char tls_cert[CONF_PATH_MAX];        /* client certificate tandem shows the backend; "" none */
    char tls_key[CONF_PATH_MAX];         /* its key; both or neither */
    char user[CONF_NAME_MAX];            /* "" when unset */
    char password[CONF_NAME_MAX * 2];    /* inline password; prefer password_file */
    char password_file[CONF_PATH_MAX];
    char passfile[CONF_PATH_MAX];        /* .pgpass-format file: a password per client user */
    /*
     * A fleet's fence: statements run on this backend, with tandem's own
     * login (user), when a committed flip makes it stop answering (fence)
     * or answer again (unfence).  SQL for a PostgreSQL backend; for a
     * Redis one a command line split as redis-cli does (ACL SETUSER ...).
     */
    char fence[CONF_FENCE_MAX][CONF_STATEMENT_MAX];
    size_t nfence;
    char unfence[CONF_FENCE_MAX][CONF_STATEMENT_MAX];
    size_t nunfence;
    int fence_line;                      /* the first fence or unfence, for messages */
    int line;                            /* where it was declared; 0 from the CLI */
};

/* What a listener in mode shadow or split sends to its shadow. */
enum conf_mirror_level {
    CONF_MIRROR_ALL, /* every write, session and transaction unit */
    CONF_MIRROR_DML, /* no DDL */
    CONF_MIRROR_DDL, /* DDL and session state only */
};

struct conf_mirror {
    double reads;                 /* fraction of reads outside transactions; default 0.10 */
    enum conf_mirror_level level; /* default all */
    uint32_t queue_bytes;         /* per session; default 4 MiB; 0 means the default */
    uint32_t timeout_ms;          /* shadow reply timeout; default 5 s; 0 means the default */
};

/*
 * shadow_source replication; with replication { }: the shadow is fed by the
 * database's own replication (PostgreSQL logical replication or a physical
 * standby, a Redis replica).  tandem mirrors no write; it measures the
 * shadow's progress, compares a sampled read once the shadow has applied
 * what the primary had when it answered, and cuts over once it caught up,
 * running the configured steps.
 */
enum conf_shadow_source { CONF_SHADOW_MIRROR, CONF_SHADOW_REPLICATION };
enum conf_repl_kind { CONF_REPL_LOGICAL, CONF_REPL_PHYSICAL, CONF_REPL_REPLICA };
enum conf_step_phase { CONF_STEP_BEFORE_FLIP, CONF_STEP_AFTER_FLIP };

#define CONF_STEPS_MAX 16 /* steps per listener's replication { } */

/* replication { cutover|rollback before_flip|after_flip BACKEND "STATEMENT"; } */
struct conf_step {
    int rollback;                     /* 0: a cutover runs it; 1: a rollback */
    enum conf_step_phase phase;       /* writes are paused during both */
    char backend_name[CONF_NAME_MAX]; /* the listener's primary or shadow */
    int backend;                      /* index into conf.backends, resolved */
    char statement[CONF_STATEMENT_MAX]; /* SQL, or a Redis command (split like redis-cli) */
    int line;
};

struct conf_replication {
    enum conf_repl_kind kind;         /* logical (default, PostgreSQL), physical; replica (Redis) */
    uint32_t poll_ms;                 /* how often positions are read; 100 ms */
    uint32_t compare_wait_ms;         /* a sampled read waits this long for the shadow; 10 s */
    char subscription[CONF_NAME_MAX]; /* logical: the subscription to watch; "" all (slowest) */
    char dbname[CONF_NAME_MAX];       /* database tandem's own connections use; "postgres" */
    struct conf_step steps[CONF_STEPS_MAX];
    size_t nsteps;
};

/* What comparison leaves out. */
/* compare { samples }: what the report keeps of the two answers of a sample. */
enum conf_samples {
    CONF_SAMPLES_VALUES,   /* their first bytes, as text (and the plans of slower statements) */
    CONF_SAMPLES_REDACTED, /* their length and a tag equal for equal answers, no value, no plan */
    CONF_SAMPLES_NONE,     /* nothing but the statement and the outcome */
};

struct conf_compare {
    char (*ignore_columns)[CONF_NAME_MAX]; /* column names whose values are not compared */
    size_t nignore_columns;
    char (*ignore_fingerprints)[17];       /* statement fingerprints (hex) counted as noise */
    size_t nignore_fingerprints;
    uint32_t confirm_per_second;           /* re-checks of mismatching reads; 0: none (default 20) */
    uint32_t explain_when_slower;          /* fetch plans when shadow p50 >= N x primary's; 0: never */
    enum conf_samples samples;             /* what the report keeps of answers; default values */
};

/*
 * reads { blue weight=90; green weight=10; }: smooth weighted round robin.
 * After a load, read_weights holds the primary and the shadow (when there
 * is one) exactly once each: those named in reads { } in the order
 * written, then a role left out with weight 0.  No reads { }: primary 1,
 * shadow 0.  Every weight 0 is allowed: reads go to the primary.
 */
struct conf_read_weight {
    int backend;      /* index into conf.backends */
    uint32_t weight;  /* 0 takes the backend out of read routing; 0..1000000 */
};

/* What a matching canary rule does with a session's reads. */
enum conf_canary_action {
    CONF_CANARY_ROUTE,     /* answer reads from `backend` */
    CONF_CANARY_PRIMARY,   /* pin reads to the primary */
    CONF_CANARY_NO_MIRROR, /* leave the session's units off the shadow */
};

/* Which session attribute a percentage rule hashes, so a client stays on one side. */
enum conf_canary_key {
    CONF_CANARY_KEY_USER,
    CONF_CANARY_KEY_APPLICATION,
    CONF_CANARY_KEY_CLIENT,
    CONF_CANARY_KEY_CLIENT_NAME, /* Redis */
};

/*
 * canary NAME { user alice; database app; application_name "billing-*";
 *               client 10.0.0.0/8; hint shadow; percent 5% by user;
 *               route green; | primary; | no_mirror; }
 * Every given match must hold (AND); rules are tried in file order, first
 * match wins.  "" / 0 means the match is not used.  user, database,
 * application_name and hint are for postgres listeners, client_name and
 * key_prefix for redis ones (the other protocol's are refused).
 */
struct conf_canary {
    char name[CONF_NAME_MAX];
    char user[CONF_NAME_MAX];             /* exact */
    char database[CONF_NAME_MAX];         /* exact */
    char application_name[CONF_NAME_MAX]; /* fnmatch glob */
    char client_name[CONF_NAME_MAX];      /* fnmatch glob (Redis) */
    char key_prefix[CONF_NAME_MAX];       /* the first key's bytes start with it (Redis) */
    int has_client;                       /* client CIDR given */
    uint8_t client_addr[16];              /* network, IPv4-mapped when family 4 */
    int client_family;                    /* 4 or 6 */
    int client_prefix;                    /* prefix length in bits of that family */
    int hint_shadow;                      /* match units carrying the tandem:shadow hint */
    uint32_t percent_bp;                  /* 1..10000 basis points; 0: no percentage match */
    enum conf_canary_key percent_key;
    enum conf_canary_action action;
    int backend;                          /* CONF_CANARY_ROUTE: index into conf.backends */
    int line;
};

/* What a guard watches, over its window. */
enum conf_guard_metric {
    CONF_GUARD_SHADOW_ERROR_RATE, /* (shadow_error + shadow_timeout) / compared units */
    CONF_GUARD_MISMATCH_RATE,     /* mismatch / (match + mismatch) */
    CONF_GUARD_LATENCY_RATIO_P50, /* shadow p50 / primary p50 */
    CONF_GUARD_LATENCY_RATIO_P99,
    CONF_GUARD_LAG,               /* mirror lag, seconds */
    CONF_GUARD_BACKEND_DOWN,      /* the shadow fails its health check */
};

/* What a tripped guard does. */
enum conf_guard_action {
    CONF_GUARD_READS_TO_PRIMARY, /* the shadow's read weight to 0 */
    CONF_GUARD_STOP_MIRRORING,   /* mode passthrough */
    CONF_GUARD_ROLLBACK,         /* POST /api/rollback: reads back, and roles if cut over */
};

/*
 * guard NAME { metric shadow_error_rate; above 5%; window 60s;
 *              min_samples 100; action reads-to-primary; cooldown 5m; }
 * above: a percentage for the rates, a ratio (2.0) for latency, a duration
 * for lag; none for backend_down.  Defaults as shown (above: 5% for the
 * rates, 2.0 for latency, 1s for lag); window 5s..5m.  A listener in mode split with no
 * guard gets one: shadow_error_rate above 5%, reads to the primary.
 */
struct conf_guard {
    char name[CONF_NAME_MAX];
    enum conf_guard_metric metric;
    double above;
    char above_text[32];          /* as written, checked against the metric when the block ends */
    uint32_t window_ms;
    uint32_t min_samples;
    enum conf_guard_action action;
    uint32_t cooldown_ms;
    int line;
};

struct conf_listener {
    char name[CONF_NAME_MAX];
    struct conf_addr addr;
    enum conf_proto proto;
    char tls_cert[CONF_PATH_MAX]; /* "" when the listener does not offer TLS */
    char tls_key[CONF_PATH_MAX];
    enum conf_listener_tls tls;   /* tls optional (default) | required | off */
    char auth_file[CONF_PATH_MAX]; /* "" relays authentication; else tandem authenticates
                                    * clients with the secrets in it (userlist format) */
    char auth_query[CONF_PATH_MAX]; /* "" none; else the SQL ($1: the user) that fetches a
                                     * user's secret from the primary (pg/pg_auth_query.c) */
    uint32_t auth_query_refresh_ms; /* how long a fetched secret (or its absence) is used */
    int primary;                  /* index into conf.backends */
    int shadow;                   /* index into conf.backends, -1 for none */
    enum conf_mode mode;
    struct conf_mirror mirror;    /* mirror { reads 10%; level all; queue 4MB; timeout 5s; } */
    struct conf_compare compare;  /* compare { ignore_columns a b; ignore_fingerprints f; } */
    enum conf_shadow_source shadow_source; /* mirror (default) or replication */
    struct conf_replication replication;   /* shadow_source replication */
    struct conf_read_weight *read_weights; /* reads { NAME weight=N; ... } (mode split) */
    size_t nread_weights;
    uint32_t read_your_writes_ms;  /* reads this soon after a write go to the primary; 1 s; 0 off */
    uint32_t max_lag_ms;           /* no routed reads to a backend lagging more; default 1 s */
    enum conf_server_conns server_conns; /* redis: shared (default) | dedicated;
                                          * postgres: dedicated (default) | reuse */
    uint32_t server_pool;          /* redis: shared connections per worker/backend/role; 1..64, 1;
                                    * postgres reuse: idle connections kept per worker, 16 */
    uint32_t server_idle_timeout_ms; /* postgres reuse: a kept connection idle this long closes */
    uint32_t server_lifetime_ms;   /* postgres reuse: a connection this old is closed, not kept */
    char server_reset_query[CONF_PATH_MAX]; /* postgres reuse: resets a connection before it is
                                             * kept; "DISCARD ALL"; "" none */
    struct conf_canary *canaries;  /* canary NAME { ... } in order */
    size_t ncanaries;
    struct conf_guard *guards;     /* guard NAME { ... } */
    size_t nguards;
    int line;
};

struct conf_limits {
    uint32_t max_client_conn;     /* per process; default 10000 */
    uint32_t max_packet_size;     /* bytes; default 1 MiB; min 1 KiB: the longest statement
                                   * text read whole to classify (longer ones stream) */
    uint32_t startup_timeout_ms;  /* client must finish startup; default 10 s */
    uint32_t connect_timeout_ms;  /* backend TCP+TLS connect; default 5 s */
    uint32_t shutdown_timeout_ms; /* SIGTERM drain; default 30 s */
    uint32_t client_idle_timeout_ms; /* Redis clients silent this long are closed; 1 h; 0: never */
    uint32_t tcp_keepalive_ms;    /* idle time before keepalive probes, every socket; 60 s;
                                   * 0: the kernel's (2 h) */
    uint32_t tcp_user_timeout_ms; /* unacknowledged data this long ends a socket; 30 s; 0: kernel's */
    uint32_t max_command_size;    /* a Redis command buffered until whole; 64 MiB; 1 KiB..1 GiB */
    uint32_t max_prepared_bytes;  /* Parse messages kept per PostgreSQL session; 8 MiB; 0..1 GiB */
    uint32_t describes_per_second; /* new statement texts the report names, per worker; 2000 */
    uint64_t mirror_queue_total;  /* all shadows' queues together; default 256 MiB; 0: default */
};

struct conf_admin {
    int enabled;               /* admin { listen } or --admin given */
    struct conf_addr addr;     /* default 127.0.0.1:9090 when enabled */
    char token_file[CONF_PATH_MAX];      /* the token of every call, mutations too */
    char read_token_file[CONF_PATH_MAX]; /* a token that may only read; needs token_file */
    /* server_name a.example b.example;: more names the Host header may carry */
    char (*server_names)[CONF_HOST_MAX];
    size_t nserver_names;
};

/* control { }: where the control state lives beyond the process. */
struct conf_control {
    char state_file[CONF_PATH_MAX]; /* "" when none: roles come from the file at every start */
    int store_enabled;              /* store redis://... given (then fleet is required) */
    struct conf_addr store;         /* the Redis holding the fleet's state */
    uint32_t store_db;              /* SELECT'ed database; 0 by default */
    char fleet[CONF_NAME_MAX];      /* the fleet's name: keys are fleet:NAME:... */
    char store_password_file[CONF_PATH_MAX]; /* "" when the store needs no AUTH */
    char member[CONF_NAME_MAX];     /* "" : HOSTNAME:ADMINPORT (or HOSTNAME:PID without admin) */
    uint32_t join_timeout_ms;       /* default 10 s */
    /*
     * A rediss:// store is reached over TLS (verify-full unless tls
     * require): tls_ca_file, else the system's CAs; tls_server_name, else
     * the store's host; a client certificate where the store asks.
     */
    enum conf_tls store_tls;                   /* CONF_TLS_DISABLE for redis:// */
    char store_tls_ca_file[CONF_PATH_MAX];     /* "" : the system's default CAs */
    char store_tls_server_name[CONF_HOST_MAX]; /* "" : store.host */
    char store_tls_cert[CONF_PATH_MAX];        /* both or neither */
    char store_tls_key[CONF_PATH_MAX];
};

struct conf {
    char file[CONF_PATH_MAX]; /* "" when built from the command line */
    int workers;              /* 1..64; default: number of CPUs, at most 4 */
    enum conf_log_format log_format;
    enum conf_log_level log_level;
    struct conf_limits limits;
    struct conf_admin admin;
    struct conf_control control;
    struct conf_backend *backends;
    size_t nbackends;
    struct conf_listener *listeners;
    size_t nlisteners;
    char (*write_functions)[CONF_NAME_MAX * 2]; /* write_functions f schema.g; (classification) */
    size_t nwrite_functions;
    char auth_file[CONF_PATH_MAX]; /* every postgres listener's without one of its own */
};

/* Errors collected by a load: every one, not just the first. */
struct conf_error {
    int line;        /* 0 when the error is not tied to a line (e.g. CLI) */
    char msg[256];
};

struct conf_errors {
    struct conf_error list[CONF_MAX_ERRORS];
    size_t count;     /* number stored (<= CONF_MAX_ERRORS) */
    size_t dropped;   /* errors beyond the list */
};

/*
 * conf_load_buffer - parse and validate a configuration held in memory.
 *
 * name is used in messages only (the file name).  Returns a new struct conf
 * on success, NULL when errs->count > 0 after the load.  Never aborts on bad
 * input; every error found is appended to errs (start from a zeroed errs).
 * buf need not be NUL-terminated; more than 1 MiB is refused.  A syntax
 * error that leaves the structure unknown (bad token, unclosed block or
 * string) stops the load there: errors up to it are reported, the
 * directives are not checked.
 */
struct conf *conf_load_buffer(const char *name, const char *buf, size_t len,
                              struct conf_errors *errs);

/* conf_load_file - read FILE (at most 1 MiB) and conf_load_buffer() it. */
struct conf *conf_load_file(const char *path, struct conf_errors *errs);

/*
 * conf_load_args - build a configuration from the file-less command line:
 *   tandem postgres --listen HOST:PORT --primary [NAME=]HOST:PORT
 *                   [--shadow [NAME=]HOST:PORT] [--admin HOST:PORT]
 *                   [--workers N] [--mode M] [--log-format F]
 * proto is "postgres" or "redis"; argv excludes the program and proto word.
 * Backend names default to "blue" (primary) and "green" (shadow).
 * Every flag is a directive of the file form, read by the same code, so the
 * result equals that of the equivalent file (the listener is named after
 * proto):
 *   --workers --log-format --log-level              top level
 *   --max-client-conn --max-packet-size
 *   --startup-timeout --connect-timeout --shutdown-timeout   limits { }
 *   --admin (its listen) --admin-token-file --admin-read-token-file   admin { }
 *   --state-file                                     control { state_file }
 *   --primary --primary-tls --primary-ca --primary-cert --primary-key --primary-user
 *   --primary-password-file
 *   --shadow --shadow-tls --shadow-ca --shadow-cert --shadow-key --shadow-user
 *   --shadow-password-file
 *                                       backend { address tls tls_ca_file ... }
 *   --listen --tls-cert --tls-key --mode             listener { }
 *   --read-your-writes --max-lag                     listener { }
 *   --mirror-reads --mirror-level --mirror-queue --mirror-timeout   mirror { }
 *   --read-weights blue=90,green=10                  reads { blue weight=90; ... }
 * Canary rules are file-only.
 * Flags are --flag VALUE or --flag=VALUE, each at most once; errors have
 * line 0 and name the flag: '--listen: bad address "x"'.
 */
struct conf *conf_load_args(const char *proto, int argc, char **argv,
                            struct conf_errors *errs);

/* conf_free - release a struct conf from any conf_load_*(); NULL is fine. */
void conf_free(struct conf *conf);

/*
 * conf_format_error - "FILE:LINE: msg" (or "tandem: msg" without a line).
 * FILE is name, or conf_or_null->file when name is NULL or "".
 */
void conf_format_error(const struct conf *conf_or_null, const char *name,
                       const struct conf_error *err, char *out, size_t outlen);

/* Enum names as written in the file, for logs and /api/status. */
const char *conf_mode_name(enum conf_mode mode);
const char *conf_repl_kind_name(enum conf_repl_kind kind);
const char *conf_guard_metric_name(enum conf_guard_metric m);
const char *conf_guard_action_name(enum conf_guard_action a);
const char *conf_proto_name(enum conf_proto proto);
const char *conf_tls_name(enum conf_tls tls);

/* conf_addr_is_loopback - 127.0.0.0/8, ::1 or "localhost". */
int conf_addr_is_loopback(const struct conf_addr *a);

/* conf_backend_find - index of the backend named NAME, or -1. */
int conf_backend_find(const struct conf *conf, const char *name);

/* conf_addr_format - "host:port", or "[v6]:port" when the host has a ':'. */
void conf_addr_format(const struct conf_addr *addr, char *out, size_t outlen);

#endif /* TANDEM_CONF_H */
