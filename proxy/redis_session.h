/*
 * redis_session.h - one Redis client, its connection to the primary and,
 * in shadow mode, its shadow connection (redis_shadow.c).
 *
 * States (one transition function, redis_session.c: set_state):
 *
 *   CONNECTING ──connected──► ACTIVE ──error/EOF/QUIT/drain──► LINGER ──► DEAD
 *      │ (requests read meanwhile wait in the primary's output buffer)      │
 *      └──unreachable: -ERR naming the backend──► LINGER          shadow still owes answers
 *                                                                           ▼
 *                                                   SHADOW_DRAIN (client and primary closed) ──► freed
 */
#ifndef TANDEM_REDIS_SESSION_H
#define TANDEM_REDIS_SESSION_H

#include <sys/socket.h>

struct worker;
struct rt_listener;

/*
 * redis_session_accept - take a new client socket.  over_limit: the process
 * already has max_client_conn clients; the client gets Redis's "-ERR max
 * number of clients reached" and is closed.  Never fails visibly: on
 * allocation failure the socket is closed.
 */
void redis_session_accept(struct worker *w, const struct rt_listener *l, int fd,
                          const struct sockaddr *peer, int over_limit);

#endif /* TANDEM_REDIS_SESSION_H */
