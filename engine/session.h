/*
 * session.h - what every protocol's client session shows its worker.
 *
 * A worker keeps one list of sessions, whatever their protocol, for the
 * things it does to all of them: drain on SIGTERM, kill on SIGINT or at the
 * drain deadline, and the periodic shadow look (timeouts, lag, detached
 * sessions).  Each protocol's session struct embeds struct session as its
 * FIRST member and fills ops; the worker calls through ops only and never
 * frees a session itself (sessions free themselves from their own handlers,
 * after unlinking with worker_session_removed()).
 *
 *   struct pg_session    { struct session base; ... }   pg_session.c
 *   struct redis_session { struct session base; ... }   redis_session.c
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

#include "protocol/outcome.h"

struct session;

struct session_ops {
    const char *protocol; /* "postgres", "redis": for logs */
    /* SIGTERM: close now when idle, else at the session's next idle point. */
    void (*drain)(struct session *s);
    /* Close at once (SIGINT, drain deadline); may free the session. */
    void (*kill)(struct session *s);
    /*
     * The worker's periodic look: detach a shadow that timed out (never
     * free).  *lag_ns: age of the oldest unanswered mirror; *listener_slot:
     * the listener's metric slot.  Returns 1 when the shadow is detached.
     */
    int (*shadow_tick)(struct session *s, uint64_t now_ns, uint64_t *lag_ns, int *listener_slot);
    /*
     * Cutover and rollback (control/cutover.h): swap roles when ready, let
     * held writes go; 1 while the session keeps the operation waiting.
     * NULL: the protocol does not take part (its listeners are not cut over).
     */
    int (*cutover_check)(struct session *s, int *listener_slot);
};

struct session {
    const struct session_ops *ops;
    struct session *prev, *next; /* the worker's list */
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
};

void session_protocols_register(const struct session_protocol *const *protocols, size_t n);
/* The plug-in serving listeners of conf_proto, NULL when none is registered. */
const struct session_protocol *session_protocol_for(int conf_proto);

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
struct rt_backend;

/*
 * session_connect - open a non-blocking TCP connection to backend b into c
 * (TCP_NODELAY, keepalive; cb gets its events).  Returns 0 when connected
 * at once, 1 while in progress (c's write event is armed: when it fires,
 * ask session_connect_result()), -1 on failure with errno set (c released).
 */
int session_connect(struct conn *c, struct event_base *base, const struct rt_backend *b,
                    event_callback_fn cb, void *arg);

/* session_connect_result - 0 once c's connect succeeded, else the errno it failed with. */
int session_connect_result(const struct conn *c);

/*
 * session_swap_conns - cutover: the answering connection and the shadow's
 * trade places (both idle).  server is rebound to cb/arg; shadow is left
 * unbound for the protocol's shadow side to rebind (conn_rebind).
 */
void session_swap_conns(struct conn *server, struct conn *shadow, struct event_base *base,
                        event_callback_fn cb, void *arg);

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
