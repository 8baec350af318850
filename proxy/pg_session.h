/*
 * pg_session.h - one PostgreSQL client and its connection to the primary.
 *
 * States (one transition function, pg_session.c: set_state):
 *
 *   STARTUP ──SSLRequest──► CLIENT_TLS ──handshake──► STARTUP
 *      │ StartupMessage
 *      ▼
 *   CONNECTING ──► SERVER_TLS_ASK ──'S'──► SERVER_TLS ──► AUTH ──ReadyForQuery──► ACTIVE
 *      (no TLS to the backend) ───────────────────────────┘
 *
 *   any state ──error/EOF/drain──► LINGER (flush the last bytes to the client) ──► DEAD
 *   DEAD ──shadow still owes answers──► SHADOW_DRAIN (client and primary closed) ──► freed
 *
 * A CancelRequest is handled in STARTUP and ends the connection there.
 */
#ifndef TANDEM_PG_SESSION_H
#define TANDEM_PG_SESSION_H

#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct rt_listener;
struct pg_session;

/*
 * pg_session_accept - take a new client socket.  over_limit: the process
 * already has max_client_conn clients; the session answers the startup with
 * 53300 and closes.  Never fails visibly: on allocation failure the socket
 * is closed.
 */
void pg_session_accept(struct worker *w, const struct rt_listener *l, int fd,
                       const struct sockaddr *peer, int over_limit);

/* pg_session_drain - SIGTERM: close now if idle, else after the current unit. */
void pg_session_drain(struct pg_session *s);

/* pg_session_kill - close at once (SIGINT, drain timeout). */
void pg_session_kill(struct pg_session *s);

/*
 * pg_session_shadow_tick - the worker's periodic look at a session's shadow:
 * detaches one that timed out; *lag_ns is its oldest unanswered mirror's
 * age, *listener_slot its listener's metric slot.  Returns 1 when detached.
 */
int pg_session_shadow_tick(struct pg_session *s, uint64_t now_ns, uint64_t *lag_ns,
                           int *listener_slot);
uint64_t pg_session_now_ns(void);
int pg_session_cutover_check(struct pg_session *s, int *listener_slot);

#endif /* TANDEM_PG_SESSION_H */
