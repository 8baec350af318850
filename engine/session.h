/*
 * session.h - the engine's session: one life for every protocol.
 *
 *   client ──► engine (struct session) ──► plug-in (struct session_ops)
 *                │  one state writer, one teardown (session_settle),
 *                │  drain and kill, the cutover swap, counters
 *                └─► mirror queue (engine/mirror.h) ──► plug-in (struct mirror_ops)
 *
 * Each protocol's session struct embeds struct session as its FIRST
 * member; the engine calls the plug-in through ops and the plug-in calls
 * the engine's session_* functions.  The three connections (client,
 * primary, shadow) are the engine's: it reads and writes their sockets,
 * applies backpressure, and hands the plug-in what arrived.  A worker keeps one list of sessions,
 * whatever their protocol (drain on SIGTERM, kill on SIGINT, the periodic
 * shadow look); nothing frees a session but session_settle(), at the end
 * of the session's own event.
 *
 *   struct pg_session    { struct session base; ... }   pg/pg_session.c
 *   struct redis_session { struct session base; ... }   redis/redis_session.c
 *
 * Mirror queue bytes of every protocol's shadows count against one bound,
 * limits.mirror_queue_total: session_queue_account() / session_queue_total().
 */
#ifndef TANDEM_SESSION_H
#define TANDEM_SESSION_H

#include <event2/event.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "engine/conn.h"
#include "engine/mirror.h"
#include "protocol/outcome.h"

struct session;

/* Why the engine closes a session (session_ops.close_with). */
enum session_close {
    SESSION_CLOSE_SHUTDOWN, /* SIGTERM at an idle point, SIGINT, the drain deadline */
    SESSION_CLOSE_CUTOVER,  /* the roles flipped and the session cannot follow */
};

/*
 * A plug-in's side of a session: what the engine's core (session_settle,
 * session_kill, session_drain, session_cutover_check, ...) asks of the
 * protocol.  Every hook gets the struct session the plug-in embeds first.
 * No hook frees the session: only session_settle() does, at the end of an
 * event (or from the session's own settle event).
 */
struct session_ops {
    const char *protocol; /* "postgres", "redis": for logs */
    /*
     * idle_timeout - 1: limits.client_idle_timeout closes a client silent
     * that long with nothing owed to it (session_idle_check).  A protocol
     * whose clients idle by design (PostgreSQL pools; its server has
     * idle_session_timeout of its own) leaves it 0.
     */
    int idle_timeout;
    /* phase_name - an opening phase's name, for the log */
    const char *(*phase_name)(int phase);
    /*
     * The session's connections are the engine's: it reads and writes the
     * sockets and calls these with what arrived (each handler settles
     * after).
     *   client_handshake - NULL, or the client side's own opening (TLS):
     *                      0 to stop at this event (in progress, or failed
     *                      and the session ended), 1 to read on (*what may
     *                      gain EV_READ: bytes may wait inside the TLS layer)
     *   client_input     - client.in may hold new bytes (or: look again)
     *   connect_failed   - the backend connection could not be opened
     *                      (session_connect_backend); why: for the client
     *   server_connected - it is open: begin the protocol (set server_ready
     *                      once the connection carries the protocol's bytes)
     *   server_handshake - NULL, or the server side's own opening (TLS):
     *                      1 not in one, read on; 0 it just completed
     *                      (write what waits); -1 stop at this event
     *   server_input     - server.in may hold new bytes
     *   server_lost      - the backend connection ended (CONN_EOF) or failed
     *   shadow_connected - shadow_conn's connect (session_connect) is done:
     *                      begin there (NULL: the plug-in opens it otherwise)
     *   shadow_input     - shadow_conn.in may hold new bytes
     *   timer            - an opening phase's deadline (the engine owns an
     *                      active session's wake-ups, linger and drain)
     */
    int (*client_handshake)(struct session *s, short *what);
    void (*client_input)(struct session *s);
    void (*connect_failed)(struct session *s, const char *why);
    void (*server_connected)(struct session *s);
    int (*server_handshake)(struct session *s);
    void (*server_input)(struct session *s);
    void (*server_lost)(struct session *s, enum conn_io io);
    void (*shadow_connected)(struct session *s);
    void (*shadow_input)(struct session *s);
    /*
     * shadow_release - held units the primary answered go to the shadow now,
     * sent and flushed the plug-in's way (a replicated shadow caught up
     * since their answer: the engine's tick asks)
     */
    void (*shadow_release)(struct session *s);
    void (*timer)(struct session *s);
    /*
     * client_wanted - after an event: may the client's next bytes be read
     * (the plug-in's own reasons: still connecting, too many answers owed)?
     * The engine adds backpressure, writes held by a cutover and a routed
     * read in flight.
     */
    int (*client_wanted)(struct session *s);
    /*
     * server_keep - the backend connection is about to be released: 1 when
     * the plug-in took it instead (moved out of s->server, left closed: a
     * connection kept idle for a later client, pg/pg_park.h), 0 to release
     * it.  NULL: never kept.
     */
    int (*server_keep)(struct session *s);
    /* server_closed - the backend connection was just released (NULL: nothing more) */
    void (*server_closed)(struct session *s);
    /* leaving - the client goes (linger, shadow drain, end): what only it needs (NULL: none) */
    void (*leaving)(struct session *s);
    /* orphan - the client left while the shadow owes answers: theirs are read, not compared */
    void (*orphan)(struct session *s);
    /* destroy - the very end: the plug-in's parts (shadow, units, buffers) and the struct */
    void (*destroy)(struct session *s);
    /* idle - no answer owed, no transaction open, no input waiting: may close (drain) or swap */
    int (*idle)(struct session *s);
    /*
     * close_with - end the session (state LINGER), telling the client why
     * where the protocol has a form for it (FATAL with SQLSTATE 57P01;
     * Redis says nothing at a shutdown), counted as a client error.
     */
    void (*close_with)(struct session *s, enum session_close why, const char *msg);
    /*
     * Cutover and rollback (control/cutover.h).  NULL swap_ready: the
     * protocol does not take part (its listeners are not cut over).
     *   writes_owed - paused: 1 while a write of the session is unacknowledged
     *                 by either side, or a transaction is open
     *   swap_ready  - asked only once both connections are idle (nothing
     *                 unanswered, unsent or half read, the mirror queue
     *                 empty, no routed read: the engine checks that): 1
     *                 when the shadow may answer the client now, 0 not yet
     *                 (the plug-in's own framing or transaction), -1 never
     *                 (a connection the client may not use)
     *   swap        - the engine just traded server and shadow_conn, and
     *                 be and shadow_be: the plug-in trades what it keeps
     *                 per side and points its shadow side at the old
     *                 primary.  A session with no server connection of its
     *                 own (server_open 0: a plug-in that multiplexes its
     *                 answering side, redis/redis_pool.h) keeps both
     *                 connections where they are: its plug-in re-points
     *                 them itself
     *   pinned      - the session cannot follow a cutover at all (Redis
     *                 pub/sub); NULL: none is
     */
    int (*writes_owed)(struct session *s);
    int (*swap_ready)(struct session *s);
    void (*swap)(struct session *s);
    int (*pinned)(struct session *s);
};

/*
 * A session's life, for every protocol.  The states from SESSION_ACTIVE on
 * are the engine's; below it a plug-in numbers its own opening phases
 * (PostgreSQL: startup, TLS, connect, authentication), in order.
 *
 *   opening phases --> ACTIVE --> LINGER --> DEAD --> (freed)
 *                         \          \         \
 *                          +----------+---------+--> SHADOW_DRAIN --> (freed)
 *                                       when the shadow still owes answers
 */
enum session_state {
    SESSION_OPENING = 0,       /* the plug-in's first opening phase */
    SESSION_ACTIVE = 16,       /* logged in: forwarding */
    SESSION_LINGER,            /* closing: flushing the last bytes to the client */
    SESSION_DEAD,              /* to be freed by settle() */
    SESSION_SHADOW_DRAIN,      /* client and primary gone; the shadow finishes what it owes */
};

struct session {
    const struct session_ops *ops;
    struct session *prev, *next;  /* the worker's list */
    struct worker *w;
    struct runtime *rt;           /* reference held for the session's life */
    const struct rt_listener *lis;
    const struct rt_backend *be;  /* the answering backend: the primary */
    const struct rt_backend *shadow_be; /* the mirrored one; NULL when the listener has none */
    uint64_t id;
    char peer[64];
    int state;                    /* enum session_state, or a plug-in's opening phase */

    struct conn client;
    struct conn server;
    /*
     * to the mirrored backend (the plug-in opens it; session_on_shadow):
     * allocated by session_mirror_open, so a session that never mirrors
     * (passthrough, a canary no_mirror rule) carries no room for it; not
     * NULL whenever mirror.state is not MIRROR_OFF
     */
    struct conn *shadow_conn;
    /*
     * the plug-in's deadlines, the linger limit and wake-ups
     * (session_arm_timer, session_wake): allocated while one is due, so an
     * idle active session carries none
     */
    struct event *timer;
    /* queued to be settled from an event of its own (session_settle_soon): the worker's list */
    struct session *settle_next;
    unsigned settle_queued : 1;

    unsigned server_open : 1;
    unsigned shadow_open : 1;     /* shadow_conn holds a socket */
    unsigned shadow_shared : 1;   /* the plug-in mirrors on a shared connection, not shadow_conn */
    unsigned server_connecting : 1; /* the connect is in flight (session_connect_backend) */
    unsigned server_ready : 1;    /* it carries the protocol's bytes (TLS, if any, is up) */
    unsigned draining : 1;        /* SIGTERM: close at the next idle point */
    unsigned client_counted_out : 1; /* the client's departure is already counted */
    unsigned swapped : 1;         /* roles swapped by a cutover: be is the listener's shadow */
    unsigned writes_waiting : 1;  /* a write waits in client.in for a cutover to finish */
    uint32_t outstanding;         /* units sent and not yet answered by the primary */
    struct mirror_unit *routed;   /* the read the shadow answers for the client (split), NULL none */
    uint64_t now_ns;              /* this event's clock reading; 0: not read yet (session_clock) */
    uint64_t shadow_connect_ns;   /* when session_connect_shadow started (its deadline) */
    uint64_t server_connect_ns;   /* when session_connect_backend started (its deadline) */
    uint64_t last_input_ns;       /* the client's last bytes (session_now_ns) */
    struct mirror mirror;         /* the units in order, and the mirror queue (mirror.h) */
};

/*
 * A protocol plug-in, as the engine sees it: the listeners it serves and
 * how it takes a client.  accept() owns fd from then on (closes it on
 * failure); over_limit: the client is past max_client_conn and gets the
 * protocol's own "too many clients" error.  The binary's main registers
 * its plug-ins once, before proxy_run(); the engine names none of them.
 */
struct worker;
struct rt_listener;
struct sockaddr;
struct session_protocol {
    const char *name; /* "postgres", "redis" */
    int conf_proto;   /* enum conf_proto of the listeners it serves */
    void (*accept)(struct worker *w, const struct rt_listener *l, int fd,
                   const struct sockaddr *peer, int over_limit);
    /*
     * writes_owed - NULL, or: 1 while a write of a session that is gone
     * (not in the worker's list any more) was sent to l's mirrored backend
     * on a connection the plug-in shares and is unanswered there: l's
     * cutover drain waits for it, as for a session's own
     * (session_cutover_check).
     */
    int (*writes_owed)(struct worker *w, const struct rt_listener *l);
};

void session_protocols_register(const struct session_protocol *const *protocols, size_t n);
/* The plug-in serving listeners of conf_proto, NULL when none is registered. */
const struct session_protocol *session_protocol_for(int conf_proto);

/*
 * The session core, for every protocol.
 *
 * session_init - the engine's part of a new session for client socket fd
 * (taken over: closed on failure) on listener l: roles as the listener has
 * them now, an id, the peer's address, the client's, the timer's and the
 * settle event's handlers.
 * The caller then calls worker_session_added().  -1 when out of memory.
 */
int session_init(struct session *s, const struct session_ops *ops, struct worker *w,
                 const struct rt_listener *l, int fd, const struct sockaddr *peer);

/*
 * session_new - a plug-in's session of `size` bytes (its struct, which
 * embeds struct session first), zeroed and initialised (session_init) with
 * its mirror queue's hooks.  NULL when out of memory: fd is closed and the
 * client uncounted.
 */
struct session *session_new(size_t size, const struct session_ops *ops,
                            const struct mirror_ops *mirror_ops, struct worker *w,
                            const struct rt_listener *l, int fd, const struct sockaddr *peer);

/*
 * session_connect_backend - open the answering connection to s->be, with a
 * connect_timeout_ms deadline (on the session's timer while it opens; an
 * active session's timer is its wake-up, so then session_idle_check):
 * ops->server_connected runs once it is open (now, or from its event),
 * ops->connect_failed when it cannot be.
 */
void session_connect_backend(struct session *s);

/*
 * session_backend_tls - one step of the TLS handshake on c, a connection
 * to be (a backend with tls require or verify-full: the handshake starts
 * on the first call, with the backend's SNI and, for verify-full, its name
 * checked).  CONN_OK once done, CONN_AGAIN in progress, CONN_ERROR failed:
 * conn_tls_error(c) says why when OpenSSL did.
 */
enum conn_io session_backend_tls(struct conn *c, const struct rt_backend *be);

/*
 * session_mirror_open - the session is to mirror: its shadow connection's
 * room (s->shadow_conn, closed) and its mirror queue (mirror_open, state
 * DETACHED until the plug-in connects).  -1 when out of memory: the
 * session runs without a shadow.  Idempotent.
 */
int session_mirror_open(struct session *s);

/*
 * session_shadow_conn_free - release and free s->shadow_conn: a plug-in's
 * destroy hook, once its shadow is closed (NULL: nothing).
 */
void session_shadow_conn_free(struct session *s);

/*
 * session_connect_shadow - open shadow_conn to s->shadow_be, the mirror
 * MIRROR_CONNECTING from now (mirror_open first).  0: connected already,
 * the caller sends what waited (as ops->shadow_connected would); 1: in
 * progress, ops->shadow_connected runs from its event, and
 * session_shadow_tick detaches it past connect_timeout_ms; -1: failed,
 * counted, the shadow detached.
 */
int session_connect_shadow(struct session *s);

/*
 * session_shadow_tick - the worker's periodic look at a session's shadow:
 * a connect past its deadline or a mirror unanswered past the listener's
 * mirror timeout detaches it (never frees).  *lag_ns: the age of the
 * oldest unanswered mirror.  1 when the shadow is detached now.
 */
int session_shadow_tick(struct session *s, uint64_t now_ns, uint64_t *lag_ns);

/*
 * session_on_shadow - the handler of the shadow connection, for every
 * protocol (give it to conn_init / session_connect with the session as
 * arg): while MIRROR_CONNECTING the connect's outcome
 * (ops->shadow_connected, or the shadow detached); once MIRROR_READY, read
 * (ops->shadow_input), detach when the shadow closed or failed, write what
 * waits (session_shadow_flush).
 */
void session_on_shadow(evutil_socket_t fd, short what, void *arg);

/*
 * session_shadow_flush - write what shadow_conn holds; what left it leaves
 * the mirror queue's count.  -1 when the write failed: the shadow is
 * detached.
 */
int session_shadow_flush(struct session *s);

/*
 * session_clock - the monotonic clock, read at most once per event: the
 * commands one read brings and the replies one read completes share that
 * read's time (clock_gettime per mirrored command was 5% of tandem's CPU
 * in Redis shadow mode).  Every engine entry point clears now_ns first, so
 * a time never outlives its event.
 */
static inline uint64_t session_now_ns(void);
static inline uint64_t
session_clock(struct session *s)
{
    if (s->now_ns == 0)
        s->now_ns = session_now_ns();
    return s->now_ns;
}

/*
 * session_on_server - the handler of the answering backend's connection
 * (session_connect_backend and session_swap_conns bind it, with the
 * session as arg): connect result, handshake, read, write, then settle.
 */
void session_on_server(evutil_socket_t fd, short what, void *arg);

/*
 * session_deliver_done - a plug-in handed s replies read from a server
 * connection it shares between sessions (not s->server): the engine's end
 * of such an event, as for the session's own connection: the client is
 * flushed, s settled.  Never touch s after.
 */
void session_deliver_done(struct session *s);

/* session_set_state - the one writer of s->state (logs it; LINGER closes the backend). */
void session_set_state(struct session *s, int next);

/* session_close - end without a word (the peer left, Terminate, QUIT): LINGER, once. */
void session_close(struct session *s);

/* session_wake - an active session reads its waiting input again, from its timer. */
void session_wake(struct session *s);

/*
 * session_arm_timer - the session's timer fires in ms (its event is
 * allocated now if it has none).  -1 when out of memory: nothing fires.
 */
int session_arm_timer(struct session *s, uint32_t ms);

/*
 * session_close_server - release the backend connection (counted), if open,
 * unless the plug-in keeps it (ops->server_keep).
 */
void session_close_server(struct session *s);

/*
 * session_settle - after every event: free a finished session (LINGER with
 * nothing left to send, DEAD, SHADOW_DRAIN with nothing owed), or set each
 * side's read interest: backpressure, the destination's backlog.  The one place a session is freed: call it
 * last in a handler, never touch s after.
 */
void session_settle(struct session *s);

/*
 * session_settle_soon - settle from an event of its own (code outside its
 * handlers): s joins its worker's settle queue, one event for all of them
 * (not one struct event per session).
 */
void session_settle_soon(struct session *s);

/* session_settle_queued - the worker's settle event: settle every queued session. */
void session_settle_queued(struct worker *w);

/*
 * session_idle_check - the worker's periodic look: an active session's
 * backend connect past limits.connect_timeout_ms fails (ops->connect_failed;
 * an active session opens one when a plug-in that shares server
 * connections gives it one of its own).  Then: close a client of an
 * idle_timeout protocol that sent nothing for limits.client_idle_timeout
 * (0: never) while nothing is owed to it: no answer outstanding, no routed
 * read, no write held by a cutover, not pinned (pub/sub: silent by design).
 * An open MULTI or a partial command does not keep it (the server's own
 * `timeout` closes those too).  Counted as client error idle_timeout; the
 * session is settled from its own event.  Returns 1 when it closed.
 */
int session_idle_check(struct session *s, uint64_t now_ns);

/* session_shadow_progress - the shadow answered: a session draining its shadow may be done. */
void session_shadow_progress(struct session *s);

/* session_kill - SIGINT or the drain deadline: close at once, counting what the shadow owed. */
void session_kill(struct session *s);

/* session_drain - SIGTERM: close now when idle (or still opening), else at the next idle point. */
void session_drain(struct session *s);

/*
 * session_cutover_check - the worker's look at a session while a cutover
 * or rollback is on, and after: while paused, whether every write is
 * acknowledged by both sides; once the listener's roles flipped, swap the
 * session's two connections at an idle point (or close a session that has
 * no connection the client may use); then let waiting writes go.  Returns
 * 1 while the session keeps the operation waiting.  Never frees s.
 */
int session_cutover_check(struct session *s, int *listener_slot);

/* Counters of the session's listener, backend b, and client errors, in its worker's shard. */
void session_count_listener(struct session *s, int counter, uint64_t n);
void session_count_backend(struct session *s, const struct rt_backend *b, int counter, uint64_t n);
void session_count_client_error(struct session *s, int reason);

/* How long a closing session may take to hand its last bytes to the client. */
#define SESSION_LINGER_MS 5000
/* Stop reading a source while its destination holds this much unsent. */
#define SESSION_BACKPRESSURE_BYTES (256 * 1024)

static inline void
session_link(struct session *s, struct session **head)
{
    s->prev = NULL;
    s->next = *head;
    if (*head)
        (*head)->prev = s;
    *head = s;
}

static inline void
session_unlink(struct session *s, struct session **head)
{
    if (s->prev)
        s->prev->next = s->next;
    else
        *head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    s->prev = s->next = NULL;
}

/* session_now_ns - the monotonic clock every session's timing uses. */
static inline uint64_t
session_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

struct conn;
struct conf_limits;
struct rt_backend;

/*
 * session_connect - open a non-blocking TCP connection to backend b into c
 * (TCP_NODELAY; keepalive and user timeout from lim, conn_tune_socket(); cb
 * gets its events).  Returns 0 when connected
 * at once, 1 while in progress (c's write event is armed: when it fires,
 * ask session_connect_result()), -1 on failure with errno set (c released).
 */
int session_connect(struct conn *c, struct event_base *base, const struct rt_backend *b,
                    const struct conf_limits *lim, event_callback_fn cb, void *arg);

/* session_connect_result - 0 once c's connect succeeded, else the errno it failed with. */
int session_connect_result(const struct conn *c);


/* Shadow re-attach back-off after `failures` consecutive failures: 1 s doubling to 60 s. */
static inline uint64_t
session_retry_backoff_ns(unsigned failures)
{
    uint64_t ns = 1000000000ull << (failures > 0 && failures < 7 ? failures - 1 : 6);
    return ns < 60000000000ull ? ns : 60000000000ull;
}

/*
 * Mode split, for every protocol: which backend answers a read.
 *
 * session_route_client - the client's address in the form canary rules
 * match (family 0 for a unix socket).
 */
struct sockaddr;
struct canary_addr;
struct canary_rule;
struct route_input;
struct rt_listener;
struct worker;
void session_route_client(const struct sockaddr *peer, struct canary_addr *out);

/* session_split_mode - the listener is in mode split (PUT /api/mode included). */
int session_split_mode(const struct rt_listener *l);

/*
 * session_route_read - route_decide() for a read of a session whose
 * answering backend is be and mirrored one shadow_be (the listener's
 * primary and shadow, in either order: after a cutover they are swapped).
 * The caller fills in->kind, in_transaction, hint and ms_since_write; the
 * rest comes from here: the listener's read_your_writes and max_lag, the
 * worker's weighted rotation for the listener (rebuilt when the weights'
 * version moved), health and lag (control/control.h), and rule (the matched
 * canary rule or NULL; its backend index is 0 for the listener's primary,
 * 1 for its shadow).  Returns 1 when shadow_be answers; 0 when be does,
 * and then the reason is counted (session_route_fallback).
 */
int session_route_read(struct worker *w, const struct rt_listener *l, const struct rt_backend *be,
                       const struct rt_backend *shadow_be, const struct canary_rule *rule,
                       struct route_input *in);

/* session_route_fallback - count a read answered by the primary for reason (enum route_reason). */
void session_route_fallback(struct worker *w, const struct rt_listener *l, int reason);

/*
 * Process-wide mirror queue bytes of every protocol's shadows: each
 * session accounts what enters and leaves its queue; the total is checked
 * against limits.mirror_queue_total and exported.
 */
void session_queue_account(int64_t delta);
uint64_t session_queue_total(void);

#endif /* TANDEM_SESSION_H */
