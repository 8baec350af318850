/*
 * pg_session_int.h - the PostgreSQL session's insides, shared by
 * pg_session.c (client and primary) and pg_shadow.c (mirror and compare),
 * and the plug-in's helpers (logins, authentication, kept connections).
 * Nothing outside pg/ includes this.
 *
 * Request units in shadow mode
 * ----------------------------
 * Every unit the client sends (a Query, or the messages up to a Sync) gets a
 * struct pg_unit from its first message, appended to one list in order:
 *
 *   mirror.head -> [u1 done] -> [u2 primary done] -> [u3 building] -> NULL
 *                                 ^ scur (waits for the shadow's Z)
 *                                                     ^ pcur (waits for the primary's Z)
 *
 * The primary answers units in order, so its ReadyForQuery completes pcur;
 * the shadow answers only the mirrored ones, in order, so its ReadyForQuery
 * completes scur.  A unit is recorded and freed from the head once both
 * sides are done with it.  Units are decided (mirrored or not) when they
 * close; until then their messages are copied into unit_buf.
 */
#ifndef TANDEM_PG_SESSION_INT_H
#define TANDEM_PG_SESSION_INT_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <libpq-fe.h>
#include <stdint.h>
#include <stdio.h>

#include "metrics/metric.h"
#include "protocol/kind.h"
#include "protocol/outcome.h"
#include "protocol/pgclass.h"
#include "protocol/pgdigest.h"
#include "protocol/pgstmt.h"
#include "protocol/scram.h"
#include "engine/cancel.h"
#include "engine/conn.h"
#include "engine/mirror.h"
#include "pg/pg_frame.h"
#include "pg/pg_park.h"
#include "engine/session.h"
#include "routing/canary.h"

struct worker;
struct runtime;
struct rt_listener;
struct rt_backend;
struct authq_fetch;

/* The PostgreSQL plug-in's opening phases, in order (engine/session.h). */
enum pgs_phase {
    PGS_STARTUP = SESSION_OPENING, /* waiting for the client's first packet */
    PGS_CLIENT_TLS,     /* TLS handshake with the client */
    PGS_AUTH_LOOKUP,    /* waiting for the user's secret from auth_query (pg_auth_query.c) */
    PGS_CLIENT_AUTH,    /* tandem authenticating the client (an auth source: pg_auth.c) */
    PGS_CONNECTING,     /* TCP connect to the primary in flight */
    PGS_SERVER_TLS_ASK, /* SSLRequest sent to the primary, waiting for S/N */
    PGS_SERVER_TLS,     /* TLS handshake with the primary */
    PGS_AUTH,           /* startup sent; relaying authentication, or answering it (pg_auth.c) */
};

/* Both digests of a compared unit, and what the report shows of each side. */
struct pg_compare {
    struct pgdigest primary;
    struct pgdigest shadow;
    struct pgdigest_result pres;
    struct pgdigest_result sres;
    char psample[512];
    char ssample[512];
};

/* Bytes of a Bind, Describe or Close read to learn the statement name. */
#define NAME_PREFIX_MAX (PGW_HEADER_LEN + 2 * (PGSTMT_NAME_MAX + 1) + 1)
/* A statement text this long or shorter is kept in its unit (pg_unit.sql_inline). */
#define PG_UNIT_SQL_INLINE 160
/* Statements one unit may parse or re-parse for the shadow (a pipeline may hold many). */
#define PG_UNIT_NAMES_MAX 1024

struct pg_unit {
    struct mirror_unit base;    /* first: the mirror queue's view (kind, outcome, timing) */
    uint8_t hint;               /* PGCLASS_HINT_* of its statements */
    unsigned sampled : 1;       /* a read picked for comparison */
    unsigned local_input : 1;   /* a server file or an OID of the primary's goes in */
    uint8_t noise_reason;       /* enum shadow_noise_reason: a difference is noise, and why */
    unsigned ordered : 1;
    unsigned no_mirror : 1;     /* LISTEN/NOTIFY only, or an admin statement */
    unsigned unmirrorable : 1;  /* too many statements to track: cannot be mirrored */
    unsigned too_large : 1;     /* larger than the session's mirror queue: never copied whole */
    unsigned ddl : 1;           /* changes the schema (mirror levels tell DDL from DML) */
    unsigned refused : 1;       /* the primary refused it for the client's rights: never mirrored */
    unsigned primary_effect : 1; /* the primary completed a statement of it before refusing */
    unsigned relock : 1;        /* ours: puts the shadow session back in the client's role */
    uint8_t nparse;             /* routed: Parse messages sent to the shadow, in order */
    uint8_t parse_seen;         /* routed: ParseComplete answers seen so far */
    uint64_t parse_injected;    /* routed: bit i set when Parse i was ours, not the client's */
    struct pg_compare *cmp;     /* NULL: the primary's answer is not digested */
    char *sql;                  /* the first statement's text, for the report */
    size_t sqllen;
    unsigned sql_truncated : 1; /* sql holds only the text's start */
    uint8_t *call;              /* a compared read's own messages, to run it again (pg_recheck) */
    uint32_t call_len;
    /* statements parsed or re-parsed for the shadow in this unit, each once */
    char **names;
    uint16_t nnames;
    uint16_t names_cap;
    /* sql when it is short (most statements): no allocation.  Last: a
     * recycled unit is cleared up to here, not through it */
    char sql_inline[PG_UNIT_SQL_INLINE];
};

/* The unit a mirror-queue pointer is (struct mirror_unit comes first). */
static inline struct pg_unit *
pg_unit_of(struct mirror_unit *mu)
{
    return (struct pg_unit *)mu;
}

/*
 * The shadow connection.  Its queue is the session's struct mirror
 * (engine/mirror.h): state OFF, CONNECTING (libpq logging in; released
 * bytes wait in pending), READY, DETACHED.
 */
struct pg_shadow {
    PGconn *pq;                 /* owns the socket and TLS state */
    struct pg_shadow_login *own; /* tandem logging in itself as the client (pg_shadow_login.c) */
    struct event login_ev;
    unsigned login_ev_added : 1;
    unsigned replay_incomplete : 1;
    unsigned as_role : 1;       /* logged in as tandem's user, acting as the client's role */
    unsigned as_client : 1;     /* logged in as the client's role itself (its ClientKey) */
    unsigned super_at_login : 1; /* is_superuser was on at login (acting as the client) */
    char client_role[64];       /* as_role: the client's user, the role acted as */
    unsigned relocks_pending;   /* relock units on their way: the role may be off until they run */
    struct evbuffer *pending;   /* mirrored bytes waiting for the login */
    uint32_t epoch;             /* statements present on this connection carry it */
    struct pg_frame frame;      /* the shadow's stream (target 1: the rest goes to the client) */
    struct evbuffer *state_log; /* session-state units to replay on re-attach */
    unsigned state_units;
    uint64_t login_started_ns;  /* this attach's first login attempt */
    unsigned login_retries;     /* logins refused for a database or role not there yet */
    /*
     * This connection's cancel key, for the client once it answers (a
     * cutover).  libpq reads the shadow's BackendKeyData and keeps the
     * secret to itself, so tandem reads it off libpq's protocol trace
     * during the login (key_trace, lines scanned as they are written, none
     * kept).  After a swap: the old primary's key, taken from the session.
     */
    struct cancel_target key;   /* addrlen 0: not known */
    FILE *key_trace;
    char key_line[128];
    size_t key_line_len;
};

/*
 * Read routing, mode split
 * ------------------------
 * A read that starts while the session is idle is a candidate: its bytes
 * wait in route.buf (and, as always in shadow mode, in unit_buf with any
 * Parse the shadow lacks) until its Sync or Query shows the whole unit.
 * Then route_decide() picks who answers.  The primary: route.buf goes to
 * the primary as any unit would.  The shadow: unit_buf goes to the shadow
 * at once, the client's further input waits until the shadow's
 * ReadyForQuery (so answers keep their order), and the primary gets
 * route.buf as the comparison mirror when the read is sampled.  route.buf
 * is kept until the answer is complete: a shadow that fails before sending
 * a byte of it gets the read retried on the primary.
 */
struct pg_route {
    unsigned candidate : 1;     /* the building unit may be answered by the shadow */
    unsigned no_mirror : 1;     /* a canary rule keeps this session off the shadow */
    unsigned parsed_unnamed : 1; /* the building unit parses the unnamed statement */
    int canary;                 /* rule matched at login (no hint); -1 none */
    int canary_hint;            /* rule matched by a unit with the tandem:shadow hint */
    struct evbuffer *buf;       /* the candidate's or the routed unit's client bytes */
    size_t forwarded;           /* bytes of its answer already given to the client */
    uint64_t last_write_ns;     /* when the primary last acknowledged a write of ours */
    struct canary_addr client;  /* the client's address, for canary rules */
};

struct pg_session {
    struct session base;          /* first: the engine's part (engine/session.h) */
    PGconn *server_pq;            /* libpq owning the server socket (after a role swap), or NULL */

    unsigned over_limit : 1;
    unsigned logged_in : 1;
    unsigned unit_open : 1;       /* messages read since the last Sync */
    unsigned tx_open : 1;         /* a transaction may be open (BEGIN seen, not yet idle) */
    unsigned copy_mirror : 1;     /* CopyData from the client goes to the shadow too */
    unsigned server_discard : 1;  /* the primary's current run answers a routed unit: dropped */
    unsigned close_pending : 1;   /* the unit ends with the client's message still passing */
    unsigned keep_server : 1;     /* server_connections reuse: the connection may be kept (pg_park.h) */
    unsigned no_keep : 1;         /* the session failed or lost its server: nothing is kept */
    uint8_t tx_status;            /* from the last ReadyForQuery: I, T or E */
    struct pg_frame client_frame; /* the client's stream: its current message, where it goes */
    struct pg_frame server_frame; /* the answering backend's stream */
    enum req_kind unit_kind;      /* of the unit being read (passthrough and shadow) */

    struct pg_auth *auth;         /* tandem authenticates the client (pg_auth.c); NULL: relayed */
    struct authq_fetch *authq_wait; /* the auth_query fetch this session waits for, or NULL */
    struct pg_session *authq_next;  /* the fetch's next waiter */
    uint8_t *startup;             /* the client's startup packet, for the shadow's logins; NULL: none */
    size_t startup_len;
    struct cancel_entry cancel;   /* our key for the client -> the backend's key */
    struct pg_server_login login; /* keep_server: what the server's login said, for the next client */
    struct pgstmt_table *stmts;   /* prepared statements, NULL until the first Parse */

    /* shadow mode only (base.mirror.state != MIRROR_OFF) */
    struct pg_shadow *shadow;     /* NULL until the session first gets a shadow (pg_shadow_start): an idle passthrough session stays small */
    struct pg_unit *building;     /* the unit being read from the client */
    struct evbuffer *unit_buf;    /* the building unit's messages, for the shadow */

    /* mode split (pg_route.c): at most one unit answered by the shadow at a time */
    struct pg_route route;
};

/* pg_session.c: count on backend b's metrics (primary or shadow) in this worker's shard. */
void pg_count_backend(struct pg_session *s, const struct rt_backend *b,
                      enum metric_backend_counter c, uint64_t n);


/*
 * pg_auth.c: authentication by tandem, with the listener's auth source.
 * Each returns -1 with e filled (for fail(): the client's error, counted
 * under e->reason), never holding a secret.  pg_auth_begin sends the
 * client its authentication request for user's secret sec (NULL: the user
 * is unknown, refused after a full exchange; s->auth is set even when it fails);
 * pg_auth_client takes one password message's body: 0 more to come, 1 the
 * client is authenticated; pg_auth_server answers the primary's
 * Authentication request code (data after the code); pg_auth_free wipes.
 */
struct pg_auth;
struct pg_auth_err {
    enum metric_client_error reason;
    const char *sqlstate;
    char msg[256];
};
int pg_auth_begin(struct pg_session *s, const char *user, const struct pgauth_secret *sec,
                  struct pg_auth_err *e);
int pg_auth_client(struct pg_session *s, const uint8_t *body, size_t len, struct pg_auth_err *e);
int pg_auth_server(struct pg_session *s, uint32_t code, const uint8_t *data, size_t len,
                   struct pg_auth_err *e);
void pg_auth_free(struct pg_session *s);

/*
 * One login of tandem's to a backend as the authenticated client (the
 * primary's, or the shadow's): the state of its SCRAM exchange.
 * verifier_differs: the backend's verifier for the role is not the auth
 * source's, so the ClientKey cannot open it.
 */
struct pg_auth_login {
    char cfb[SCRAM_MSG_MAX];
    size_t cfb_len;
    char nonce[64];
    size_t nonce_len;
    char am[3 * SCRAM_MSG_MAX];
    size_t am_len;
    uint8_t server_key[SCRAM_KEY_LEN];
    unsigned verifier_differs : 1;
};
/* pg_auth_can_login - 1 when tandem authenticated the client and can log in as it. */
int pg_auth_can_login(const struct pg_session *s);
/* pg_auth_answer - pg_auth_server for another login: to backend be, messages to out. */
int pg_auth_answer(struct pg_session *s, struct pg_auth_login *lg, const struct rt_backend *be,
                   struct evbuffer *out, uint32_t code, const uint8_t *data, size_t len,
                   struct pg_auth_err *e);
/*
 * pg_auth_logged_in - the primary logged tandem in: the client's exchange
 * is wiped; the ClientKey (or secret) stays while the session has a shadow
 * to log in to (each re-attach logs in again), else everything goes.
 */
void pg_auth_logged_in(struct pg_session *s);

/*
 * pg_auth_query.c - a listener's auth_query, on this worker's cache.
 * pg_authq_lookup: 1 *sec is user's secret, 0 the query returns no such
 * user, -1 out of memory, 2 a fetch is under way: pg_session_auth_found
 * runs later (from the fetch's event; rc 1/0 as here, -1 with why) unless
 * pg_authq_forget (the session ends) takes the session off it first.
 */
int pg_authq_lookup(struct pg_session *s, const char *user, const char *db,
                    struct pgauth_secret *sec);
void pg_authq_forget(struct pg_session *s);
/* pg_session.c: the lookup's answer (sec: rc 1 only; why: rc -1 only) */
void pg_session_auth_found(struct pg_session *s, int rc, const struct pgauth_secret *sec,
                           const char *why);

/* pg_shadow.c */
extern const struct mirror_ops pg_mirror_ops;
void pg_shadow_start(struct pg_session *s);
/* the own login's ends (pg_shadow_login.c): logged in on shadow_conn; failed (detached); */
void pg_shadow_attached(struct pg_session *s);
void pg_shadow_login_failed(struct pg_session *s, const char *why);
/* its login refused or impossible: libpq logs in with the shadow backend's credentials */
void pg_shadow_login_fallback(struct pg_session *s, const char *why);

/*
 * pg_shadow_login.c - the shadow login as the client itself, when tandem
 * authenticated it (pg_auth_can_login): connect, TLS as configured,
 * startup with the client's parameters, SCRAM with the ClientKey.  start:
 * 0 under way (it ends in pg_shadow_attached, _failed or _fallback), -1
 * not possible here (nothing changed).  free: stop it, idempotent.
 */
int pg_shadow_login_start(struct pg_session *s);
void pg_shadow_login_free(struct pg_session *s);
/* pg_shadow_conn_close - the shadow connection and its login's event go, counted closed. */
void pg_shadow_conn_close(struct pg_session *s);
/* the shadow connection's input (the engine read it): digest, compare, forward a routed answer */
void pg_shadow_input(struct session *base);
void pg_shadow_release_gated(struct session *base);
void pg_shadow_release(struct pg_session *s);
/* one line of libpq's protocol trace: 0 and the key when it is the BackendKeyData's */
int pg_shadow_key_line(const char *line, size_t len, uint32_t *pid, uint32_t *key);
struct pg_unit *pg_unit_begin(struct pg_session *s, const struct pgclass_result *first);
void pg_unit_add(struct pg_session *s, const struct pgclass_result *cls);
int pg_unit_note_statement(struct pg_session *s, struct pgstmt *st);
void pg_unit_close(struct pg_session *s);
void pg_unit_set_sql(struct pg_unit *u, const char *sql, size_t len);
void pg_shadow_copy_data(struct pg_session *s, size_t len);
void pg_shadow_collect(struct pg_session *s, size_t len);
void pg_shadow_primary_message(struct pg_session *s, uint8_t type, struct evbuffer *in,
                               size_t offset, size_t body_len);
void pg_shadow_primary_ready(struct pg_session *s);
void pg_shadow_primary_copy_in(struct pg_session *s);
int pg_shadow_wants_whole(const struct pg_session *s);
void pg_shadow_parsed(struct pg_session *s, struct pgstmt *st);
void pg_shadow_orphan(struct session *base);
/*
 * pg_login.c: a login of tandem's to backend b as s's client
 * (pg_login_start; libpq copies every parameter, NULL when it cannot
 * start), and whether it acts as the client's role there (pg_login_as_role:
 * 1, 0 as the client's own user, -1 when that role cannot be set).
 */
PGconn *pg_login_start(const struct pg_session *s, const struct rt_backend *b);
/* pg_login_start_own - tandem's own login to b (its user and password), to dbname, no options. */
PGconn *pg_login_start_own(const struct pg_session *s, const struct rt_backend *b,
                           const char *dbname);
int pg_login_as_role(const struct pg_session *s, const struct rt_backend *b);
/*
 * pg_recheck_start - u, a read whose answers differ, is run again on both
 * backends before it is reported (pg_recheck.c): 0 when the re-check took
 * it (it records the outcome later, and owns u->call now), -1 when the
 * caller records the mismatch itself (not a read, nothing to run again,
 * over the budget: counted).  key: the report's key for u.
 */
struct pgdesc_key;
int pg_recheck_start(struct pg_session *s, struct pg_unit *u, const struct pgdesc_key *key);
/* pg_explain_start - fetch both backends' plans of u's statement (shadow_record_slower said so). */
void pg_explain_start(struct pg_session *s, struct pg_unit *u, uint64_t key_id);
int pg_unit_route(struct pg_session *s);
int pg_shadow_swap_ready(struct pg_session *s);
int pg_shadow_writes_owed(const struct pg_session *s);
void pg_shadow_swap(struct pg_session *s);

/* pg_session.c: routed units */
void pg_session_forward(struct pg_session *s, struct evbuffer *in, size_t len);
void pg_session_route_done(struct pg_session *s);
void pg_session_route_failed(struct pg_session *s, int retried);

/* pg_route.c */
struct sockaddr;
void pg_route_accept(struct pg_session *s, const struct sockaddr *peer);
void pg_route_login(struct pg_session *s, const char *user, const char *database,
                    const char *application_name);
int pg_route_may_start(struct pg_session *s, const struct pgclass_result *cls);
int pg_route_decide(struct pg_session *s, const struct pg_unit *u);
void pg_route_fallback(struct pg_session *s, int reason);

#endif /* TANDEM_PG_SESSION_INT_H */
