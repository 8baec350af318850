/*
 * redis_session_int.h - the Redis session's insides, shared by
 * redis_session.c (client and primary) and redis_shadow.c (mirror and
 * compare).  Nothing else includes this.
 *
 * Units
 * -----
 * Every command the client sends that expects a reply is one struct
 * redis_unit, appended in order to one list:
 *
 *   mirror.head -> [GET done] -> [SET primary done] -> [INCR sent] -> NULL
 *                                 ^ scur (waits for the shadow's reply)
 *                                                      ^ pcur (waits for the primary's)
 *
 * The primary answers in order, so each whole reply (framed by a
 * resp_reader) completes pcur; the shadow answers only the mirrored units,
 * in order, so its replies complete scur.  A unit is recorded and recycled
 * from the head once both sides are done with it.  A unit may also be
 * answered by tandem itself (`local`: HELLO 3, a protocol error), in its
 * turn, so replies always reach the client in the order of the requests.
 *
 * RESP3 (HELLO 3, relayed): a push (">") that arrives where a reply could
 * start, and that the unit awaiting one does not expect (only UNSUBSCRIBE's
 * replies are pushes), answers no request: a CLIENT TRACKING invalidation,
 * relayed to the client in its place in the stream and never compared.
 * The shadow connection speaks the protocol the primary accepted (HELLO
 * mirrored once accepted, replayed on a new connection), so replies compare.
 *
 * After SUBSCRIBE/PSUBSCRIBE/SSUBSCRIBE (and MONITOR) the primary pushes
 * messages that answer no request: from there on the connection is a plain
 * relay to the primary (no unit, no mirror) until it closes.  A unit may owe
 * more than one reply (UNSUBSCRIBE a b c outside pub/sub: one per channel).
 *
 * CLIENT REPLY
 * ------------
 * OFF and SKIP are the client's business, never the servers': tandem sends
 * CLIENT REPLY ON in their place (so the server says whether the client may
 * run it), and drops the replies the client asked not to get.  Every unit
 * of the primary (and of the shadow) is still answered, so replies pair
 * with requests on both sides, comparisons go on, and the mode survives a
 * cutover.  Whether a reply reaches the client is decided when it starts,
 * in order (client_reply_*), from the outcome of the CLIENT REPLY before it,
 * as Redis does it (an empty command, "*0" or a blank line, ends a SKIP too;
 * UNSUBSCRIBE's replies are pub/sub messages, which Redis sends regardless).
 *
 * Read routing, mode split
 * ------------------------
 * A read that arrives while the client awaits no other reply (outside
 * MULTI, not blocking, not pub/sub) is routed: session_route_read() picks
 * who answers.  When it is the shadow, the unit is `routed`: its request
 * goes to the shadow at once (nothing of the client's waits ahead of it),
 * the shadow's reply is forwarded to the client, and the client's further
 * commands wait in client.in until that reply is whole, so replies keep
 * the client's order.  At the read sample rate the primary gets the same
 * request as the comparison; its reply is digested and dropped (such a
 * unit awaits the primary but is not `outstanding`: the client awaits
 * nothing from it).  route.buf keeps the request until the reply is
 * complete: a shadow lost before the first byte of it reached the client
 * gets the read retried, once, on the primary.
 *
 * Cutover
 * -------
 * be / shadow_be are the listener's primary and shadow, swapped when a
 * cutover (or a rollback) swaps the session's two connections at an idle
 * point (redis_session.c, "Cutover").  Until then, and while the listener
 * is paused, commands other than reads wait in client.in.
 *
 * Identity
 * --------
 * The shadow never acts with more rights than the client has on the
 * primary.  Once the primary accepted the client's AUTH (or HELLO ... AUTH),
 * its user and password are kept in `ident`; the shadow connection logs in
 * as that identity: the client's AUTH is mirrored in its turn, and a new
 * shadow connection replays it before anything else.  Only a session whose
 * client never logged in uses tandem's own credentials for the shadow.  A
 * shadow that refuses the identity ends the session's mirroring for good
 * (shadow.identity_refused).  Each connection's login (enum rs_login) is
 * known, so a cutover hands the client a connection logged in as itself,
 * or closes the session (redis_session.c, login_carries_over).
 */
#ifndef TANDEM_REDIS_SESSION_INT_H
#define TANDEM_REDIS_SESSION_INT_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdint.h>

#include "metrics/metric.h"
#include "protocol/kind.h"
#include "protocol/outcome.h"
#include "protocol/rediscmd.h"
#include "protocol/resp.h"
#include "engine/conn.h"
#include "engine/mirror.h"
#include "engine/session.h"
#include "routing/canary.h"

struct worker;
struct runtime;
struct rt_listener;
struct rt_backend;

/* The Redis plug-in's opening phases (engine/session.h), in order. */
enum rs_phase {
    RS_CLIENT_TLS = SESSION_OPENING, /* a TLS listener's handshake with the client */
    RS_CONNECTING,                   /* connect (and TLS) to the primary in flight */
};

/* What a unit's successful reply changes in the session. */
enum rs_track {
    RT_NONE,
    RT_AUTH,    /* AUTH, HELLO ... AUTH: the client is authenticated */
    RT_SELECT,  /* the db, replayed on a new shadow connection (the name too: unit.name) */
    RT_RESET,   /* RESET: db 0, no name */
};

/*
 * The commands the session itself acts on, resolved once per command (not
 * by name at every turn).  Every one is a SESSION or TX entry of the
 * command table, so any other command is RC_OTHER without a comparison.
 */
enum rs_cmd {
    RC_OTHER,
    RC_HELLO,
    RC_AUTH,
    RC_SELECT,
    RC_SETNAME,   /* CLIENT SETNAME */
    RC_RESET,
    RC_MULTI,
    RC_EXEC,
    RC_DISCARD,
    RC_WATCH,
    RC_UNWATCH,
    RC_SUBSCRIBE, /* SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE */
    RC_UNSUBSCRIBE, /* UNSUBSCRIBE, PUNSUBSCRIBE, SUNSUBSCRIBE */
    RC_CLIENT_REPLY, /* CLIENT REPLY */
    RC_QUIT,
    RC_MONITOR,   /* MONITOR, SYNC, PSYNC: a stream follows, answering no request */
};

/* A CLIENT REPLY unit's mode, acted on when the primary accepts it. */
enum rs_reply {
    RR_NONE,
    RR_ON,
    RR_OFF,
    RR_SKIP,
};

/* Who a server connection of the session is logged in as. */
enum rs_login {
    RL_DEFAULT, /* nobody logged in: the server's default user */
    RL_TANDEM,  /* tandem's own credentials for that backend (user, password) */
    RL_CLIENT,  /* the identity the client logged in with on the primary (ident) */
};

/* The longest user name and password tandem keeps for a client's identity. */
#define RS_IDENT_USER_MAX 512
#define RS_IDENT_PASS_MAX 1024

/*
 * A client's login: AUTH pass (has_user 0: the default user), AUTH user
 * pass, HELLO ... AUTH user pass.  The password is a secret: it lives here
 * only, is never logged, and is wiped before the memory is freed
 * (redis_ident_free).  user and pass point into buf, NUL-terminated, but
 * may hold NULs: their lengths are what count.
 */
struct redis_ident {
    unsigned has_user : 1;
    size_t user_len, pass_len;
    char *user, *pass;
    char buf[];
};

/* The first bytes of each side's reply, for the report. */
#define RS_SAMPLE_BYTES 256

/*
 * Everything before psample is cleared for each new comparison; the
 * samples are valid up to plen / slen only, so they are not.
 */
struct redis_compare {
    struct redis_compare *next; /* in the session's spares */
    struct resp_reply_info pinfo;
    struct resp_reply_info sinfo;
    uint8_t *req;               /* a read's request (heap), to run it again (redis_recheck.c) */
    uint32_t req_len;
    uint16_t plen, slen;
    uint8_t psample[RS_SAMPLE_BYTES];
    uint8_t ssample[RS_SAMPLE_BYTES];
};

struct redis_unit {
    struct mirror_unit base;    /* first: the mirror queue's view (kind, outcome, timing) */
    const struct rediscmd *cmd; /* NULL: a command the table does not know (a write) */
    uint32_t flags;             /* rediscmd_flags() for its arguments */
    uint8_t mode;               /* enum resp_digest_mode of its replies */
    uint8_t track;              /* enum rs_track */
    uint8_t which;              /* enum rs_cmd */
    unsigned tx : 1;            /* EXEC: its held bytes are the whole MULTI ... EXEC */
    unsigned close_after : 1;   /* a local protocol error: the session ends after it */
    unsigned identity : 1;      /* replay: the client's login; refused, mirroring ends */
    unsigned refused : 1;       /* the primary answered it with an error */
    unsigned sets_login : 1;    /* replay: once sent, the shadow is logged in as `login` */
    uint8_t login;              /* enum rs_login, with sets_login */
    uint8_t reply_mode;         /* enum rs_reply: a CLIENT REPLY outside MULTI */
    unsigned skip_reset : 1;    /* an empty command before it ended a CLIENT REPLY SKIP */
    unsigned reply_started : 1; /* the primary's first reply to it has begun */
    unsigned pushes : 1;        /* its replies are pub/sub messages: CLIENT REPLY spares them */
    unsigned if_accepted : 1;   /* mirrored only once the primary accepted it */
    uint8_t proto;              /* HELLO's protocol version (2, 3), 0: none asked */
    uint8_t effect;             /* enum rs_effect: mirrored as the primary's choice */
    struct evbuffer *exec_reply; /* RS_EFFECT_TX: the primary's EXEC reply, whole (heap), or NULL */
    uint32_t preplies;          /* replies the primary still owes for it */
    uint32_t sreplies;          /* replies the shadow owes for it (MULTI ... EXEC: all) */
    int64_t db;                 /* SELECT's argument */
    char *name;                 /* the name CLIENT SETNAME or HELLO SETNAME sets (heap), or NULL */
    struct redis_ident *ident;  /* RT_AUTH: the login it asks for (heap, wiped), or NULL */
    char *local;                /* answered by tandem: these bytes (heap), or NULL */
    size_t local_len;
    struct redis_compare *cmp;  /* NULL: the replies are not compared */
};

/* Writes whose effect the server chooses (redis_effect.c). */
enum rs_effect {
    RS_EFFECT_NONE,
    RS_EFFECT_XADD,
    RS_EFFECT_SPOP,
    RS_EFFECT_TX, /* an EXEC whose transaction holds either: rewritten from its reply */
};

enum redis_effect_result {
    REDIS_EFFECT_BUILT,    /* out holds the command that does what the primary did */
    REDIS_EFFECT_VERBATIM, /* the command as it is does the same on the shadow */
    REDIS_EFFECT_LOST,     /* the primary's choice is not known: verbatim, and the shadow diverges */
};

struct redis_session;

/* redis_effect_of - u's enum rs_effect, from its command. */
uint8_t redis_effect_of(const struct redis_unit *u);

/*
 * redis_effect_wanted - does command u (request bytes[0..len)) need its
 * effect rewritten: XADD with an id the server completes, SPOP?
 */
int redis_effect_wanted(const struct redis_session *s, const struct redis_unit *u,
                        const uint8_t *bytes, size_t len);

/*
 * redis_effect_build_tx - MULTI ... EXEC (tx[0..tx_len)) with each XADD *
 * and SPOP rewritten from the primary's EXEC reply (u->exec_reply), into
 * out.  *lost counts the commands whose choice could not be read (they go
 * verbatim).  REDIS_EFFECT_LOST: the reply does not fit the transaction.
 */
enum redis_effect_result redis_effect_build_tx(const struct redis_session *s,
                                               const struct redis_unit *u, const uint8_t *tx,
                                               size_t tx_len, struct evbuffer *out,
                                               unsigned *lost);

/*
 * redis_effect_build - the command that mirrors u (its request bytes
 * req_bytes[0..req_len)) as the effect the primary chose, into out.
 */
enum redis_effect_result redis_effect_build(const struct redis_session *s,
                                            const struct redis_unit *u, const uint8_t *req_bytes,
                                            size_t req_len, struct evbuffer *out);

/* The unit a mirror-queue pointer is (struct mirror_unit comes first). */
static inline struct redis_unit *
redis_unit_of(struct mirror_unit *mu)
{
    return (struct redis_unit *)mu;
}

/*
 * A session's leg on a shared connection of one role (redis_pool.h): the
 * connection that owes it replies (NULL when none) and how many.
 */
struct redis_shared;
struct redis_leg {
    struct redis_shared *mux;
    uint32_t owed;
    struct redis_session *next_failed; /* redis_pool.c's list of sessions to fail */
};

/* Why a shared connection failed the sessions waiting on it (redis_pool.c). */
enum redis_shared_loss {
    REDIS_SHARED_LOST,        /* closed, reset, or it sent what is not RESP */
    REDIS_SHARED_UNREACHABLE, /* never opened */
    REDIS_SHARED_TIMEOUT,     /* the shadow role: no answer within the mirror timeout */
};

/*
 * The shadow connection (its queue is the session's struct mirror:
 * engine/mirror.h; while it connects, mirrors wait in conn.out).
 *
 * Pooled (redis_pool.h): a session with no connection state whose shadow
 * backend wants neither AUTH nor TLS has no shadow connection of its own:
 * its mirrors go to a shared one (leg), in the order the queue releases
 * them, and their replies come back through redis_shadow_shared_input.
 * Its first stateful command opens a connection of its own at once
 * (redis_shadow_dedicate); what is released from then on waits in
 * after_pool until the shared connection's replies owed are in, so the
 * shadow applies and answers the session's commands in order.
 */
struct redis_shadow {
    unsigned reply_open : 1;     /* reader is inside a reply */
    unsigned tx_wanted : 1;      /* the open MULTI holds a command worth mirroring */
    unsigned tx_overflow : 1;    /* the open MULTI outgrew the mirror queue: not collected */
    unsigned tx_local : 1;       /* the open MULTI holds a server command sent as PING */
    unsigned tx_effects : 1;     /* the open MULTI holds an XADD * or SPOP (redis_effect.c) */
    unsigned tx_nondet : 1;      /* ... or a command whose reply differs between equal servers */
    unsigned push_open : 1;      /* reader is inside an out-of-band push (dropped) */
    enum rs_login login;         /* the connection's login after what conn.out holds */
    struct resp_reader reader;
    uint32_t replies_left;       /* of scur's replies, including the one being read */
    struct evbuffer *tx_buf;     /* the open MULTI's commands, until EXEC or DISCARD */
    uint32_t tx_cmds;            /* commands in tx_buf, MULTI included */
    struct evbuffer *effect;     /* a released unit's effect, between releasing and replace;
                                  * pooled, a routed read's bytes on their way to the pool */
    unsigned pooled : 1;         /* mirrors go to a shared connection (leg) */
    struct redis_leg leg;        /* the shared connection owing replies */
    struct evbuffer *after_pool; /* for its own connection while leg owes (heap), or NULL */
};

/* Mode split (see "Read routing" above). */
struct redis_route {
    struct evbuffer *buf;       /* its request, for a retry on the primary */
    size_t forwarded;           /* bytes of its reply already given to the client */
    uint64_t last_write_ns;     /* when the primary last acknowledged a write of ours */
    int canary;                 /* rule matched by the session alone; -1 none */
    struct canary_addr client;  /* the client's address, for canary rules */
};

struct redis_session {
    struct session base;          /* first: the engine's part (engine/session.h) */

    unsigned authed : 1;          /* an AUTH or HELLO AUTH succeeded */
    unsigned in_multi : 1;        /* MULTI read, EXEC/DISCARD not yet */
    unsigned watching : 1;        /* WATCH read, EXEC/DISCARD/UNWATCH/RESET not yet */
    unsigned pubsub : 1;          /* SUBSCRIBE or MONITOR read: a plain relay from there on */
    unsigned reply_open : 1;      /* reader is inside a primary reply */
    unsigned reply_off : 1;       /* CLIENT REPLY OFF accepted: no reply reaches the client */
    unsigned reply_skip : 1;      /* CLIENT REPLY SKIP accepted: the next reply does not */
    unsigned reply_silent : 1;    /* the reply being read is dropped, not the client's */
    unsigned empty_pending : 1;   /* an empty command was forwarded since the last unit */
    unsigned push_open : 1;       /* reader is inside an out-of-band RESP3 push of the primary */
    uint8_t proto;                /* the protocol the primary speaks to the client: 2 or 3 */
    unsigned input_closed : 1;    /* nothing more is read from the client */
    unsigned default_open : 1;    /* the primary ran a command of ours for its default user */
    struct resp_limits limits;    /* pre_auth while the primary wants AUTH first */
    size_t client_need;           /* bytes client.in must hold before parsing again */
    /*
     * frames (and digests) the primary's reply while one stays open across
     * reads; NULL otherwise: a whole reply is read with the worker's reader
     * (redis_reply_reader)
     */
    struct resp_reader *reader;
    int64_t db;                   /* SELECTed db, for the shadow */
    char *client_name;            /* CLIENT SETNAME, for the shadow (heap), or NULL */
    struct redis_ident *ident;    /* the login the primary accepted, for the shadow; NULL none */
    enum rs_login primary_login;  /* the login of server (the primary connection) */

    struct redis_unit *spare;     /* recycled units */
    unsigned nspare;
    struct redis_compare *spare_cmp; /* recycled comparisons */
    unsigned nspare_cmp;

    struct redis_shadow *shadow;
    struct redis_route route;

    /*
     * Shared server connections (redis_pool.h).  shared: the session has
     * no connection state and no server connection of its own; its
     * commands go to mux, which owes it mux_owed replies (NULL when none).
     * Cleared for good by its first stateful command.
     */
    unsigned shared : 1;
    unsigned mux_hold : 1;        /* a stateful command waits for leg's replies */
    struct redis_leg leg;         /* the primary's shared connection */
};

/* redis_session.c */
enum rs_cmd redis_cmd_which(const struct rediscmd *cmd);
/* wipe the identity's secret and free it; NULL is fine */
void redis_ident_free(struct redis_ident *id);
/*
 * 1 when the shadow connection acts with no more rights than the client
 * has on the primary: it may answer the client's reads, and become its
 * primary connection at a cutover.
 */
int redis_shadow_login_ok(const struct redis_session *s);
struct redis_unit *redis_unit_new(struct redis_session *s);
/* a cleared comparison, recycled when one is spare; NULL when out of memory */
struct redis_compare *redis_cmp_new(struct redis_session *s);
void redis_cmp_free(struct redis_session *s, struct redis_compare *c);
/* the mirror queue's hook: u leaves the list for good */
void redis_unit_release(void *owner, struct mirror_unit *u);
void redis_count_backend(struct redis_session *s, const struct rt_backend *b,
                         enum metric_backend_counter c, uint64_t n);
/* n bytes at the start of in answer the routed read: to the client */
void redis_session_forward(struct redis_session *s, struct evbuffer *in, size_t n);
/* the routed read's reply is whole (the unit may be freed already) */
void redis_session_route_done(struct redis_session *s);
/* the shadow was lost while answering the routed read (before complete_units) */
void redis_session_route_lost(struct redis_session *s);

/*
 * For redis_pool.c: replies of s arrived on its shared connection's in.
 * redis_session_shared_input takes at most *replies whole ones (and the
 * start of the next), counting *replies down, streams them to the client
 * and lets held commands go; -1 when the bytes are not RESP (s is failed:
 * the connection must close).  Never frees s: redis_session_shared_settle
 * does, at the end.  redis_session_shared_lost: the shared connection
 * failed (unreachable: never opened) while s waited; msg answers every
 * command s awaits, s closes and is settled.
 */
int redis_session_shared_input(struct redis_session *s, struct evbuffer *in, uint32_t *replies);
void redis_session_shared_settle(struct redis_session *s);
void redis_session_shared_lost(struct redis_session *s, const char *msg,
                               enum redis_shared_loss loss);

/*
 * redis_leg_took - n replies owed on leg's shared connection were taken:
 * 1 when it owes none there now (and has left it), 0 otherwise (or it had
 * left already: a failure made it).
 */
static inline int
redis_leg_took(struct redis_leg *leg, uint32_t n)
{
    if (leg->mux == NULL)
        return 0;
    leg->owed -= n;
    if (leg->owed > 0)
        return 0;
    leg->mux = NULL;
    return 1;
}

/* redis_recheck.c */

/* The longest request kept to run a mismatching read again; longer ones are not confirmed. */
#define RS_RECHECK_REQUEST_MAX 4096

/*
 * redis_recheck_keep - u, a compared command whose request is bytes[0..len),
 * was just given its comparison: when it is a read that may be run again
 * (redis_recheck.c) and confirmation is on, a copy of the request joins
 * u->cmp.  Out of memory or too long: none (never confirmed).
 */
void redis_recheck_keep(struct redis_session *s, struct redis_unit *u, const uint8_t *bytes,
                        size_t len);

/*
 * redis_recheck_start - u's answers differ (outcome mismatch about to be
 * recorded as key_id/key_text with the two replies shown as psum, ssum):
 * run it again on both backends before it is claimed.  0: a re-check took
 * it and records the outcome itself (u->cmp's request is the job's);
 * -1: not re-checked (counted why, when confirmation is on), record it now.
 */
int redis_recheck_start(struct redis_session *s, struct redis_unit *u, uint64_t key_id,
                        const char *key_text, const char *psum, const char *ssum);

/* redis_shadow.c */
extern const struct mirror_ops redis_mirror_ops;
void redis_shadow_start(struct redis_session *s);
/* the shadow connection's connect is done */
void redis_shadow_connected(struct session *base);
/* the shadow connection's input (the engine read it): frame, digest, forward a routed answer */
void redis_shadow_input(struct session *base);
void redis_shadow_release(struct redis_session *s);
/* a command was read: decide whether it is mirrored; bytes are its request */
void redis_shadow_command(struct redis_session *s, struct redis_unit *u, const uint8_t *bytes,
                          size_t len);
/* after a batch of primary replies: release what they answered, send */
void redis_shadow_flush(struct redis_session *s);
void redis_shadow_release_gated(struct session *base); /* the engine's tick: redis_shadow_flush */
void redis_shadow_idle(struct redis_session *s);
void redis_shadow_record(struct redis_session *s, struct redis_unit *u);
int redis_shadow_route(struct redis_session *s, struct redis_unit *u, const uint8_t *bytes,
                       size_t len);
int redis_shadow_writes_owed(const struct redis_session *s);
int redis_shadow_swap_ready(const struct redis_session *s);
void redis_shadow_swap(struct redis_session *s);
/* 1 when the shadow backend is one a fleet fences: the mirror logs in there as tandem */
int redis_shadow_fenced(const struct redis_session *s);
/* after a swap: the mirrored connection logs in as tandem on a fenced backend */
void redis_shadow_fence_login(struct redis_session *s);
/* a cutover of a shared session: its shadow connection goes, a new one reaches shadow_be */
void redis_shadow_restart(struct redis_session *s);
/* the session has connection state now: its mirrors move to a connection of its own */
void redis_shadow_dedicate(struct redis_session *s);
/*
 * For redis_pool.c, the shadow role (as redis_session_shared_input and
 * redis_session_shared_lost for the primary): replies of s arrived on its
 * shared shadow connection (at most *replies whole ones taken, counted
 * down; -1 when the bytes are not RESP); the connection failed while s
 * waited on it: its mirror is detached (loss says why).  Neither settles
 * s (nor frees it) from the pool's event: a session draining its shadow is
 * freed from its own (session_shadow_progress, session_settle_soon).
 */
int redis_shadow_shared_input(struct redis_session *s, struct evbuffer *in, uint32_t *replies);
void redis_shadow_shared_lost(struct redis_session *s, const char *msg,
                              enum redis_shared_loss loss);
void redis_shadow_orphan(struct session *base);
/* the client's login cannot be followed on the shadow: the session is mirrored no more */
void redis_shadow_identity_lost(struct redis_session *s, const char *why);
void redis_keep_sample(uint8_t *sample, uint16_t *have, const uint8_t *p, size_t n);

/*
 * redis_reply_reader - the reader of s's primary reply in progress: s's own
 * (a reply open across reads) or its worker's, which a reply read whole
 * uses (2.2 KiB with its nesting stack, not in every idle session).
 */
struct resp_reader *redis_reply_reader(struct redis_session *s);

#endif /* TANDEM_REDIS_SESSION_INT_H */
