/*
 * redis_pool.h - server connections shared by Redis sessions that carry no
 * connection state (listener setting server_connections shared).
 *
 *   client A ─┐                          ┌─► A's replies (A's reader frames them)
 *   client B ─┼─► one shared connection ─┤   in the order the commands went out
 *   client C ─┘   per worker and backend └─► B's, C's ...
 *                 (server_pool of them)
 *
 * Each worker keeps, per backend, up to the listener's server_pool
 * connections.  A session sends its commands on one of them (the one it
 * still owes replies on, else the least busy) and the connection keeps a
 * FIFO of who waits for how many replies.  Replies come back in the order
 * of the requests, so the head of the FIFO says whose they are: the
 * session's own reader frames them (and digests them for the comparison)
 * exactly as it frames its own connection's replies, streaming a large
 * reply as it arrives.  Nothing is framed twice.
 *
 * A session is shared only while it has no connection state: its first
 * stateful command (rediscmd's SESSION, TX, BLOCKING, PUBSUB and ADMIN
 * kinds, unknown commands) waits for its replies owed here, then it opens
 * a connection of its own and keeps it (redis_session.c, "Shared server
 * connections").  Since a shared session never changed its connection's
 * state, the new connection needs nothing replayed.
 *
 * A session that leaves with replies owed stays in the FIFO as nobody:
 * its replies are framed by the pool's own reader (carrying on from the
 * session's, when it left in the middle of one) and dropped.  A shared
 * connection that fails fails exactly the sessions waiting on it (each
 * gets its errors in RESP and closes, as with a connection of its own);
 * the others open a new one with their next command.
 *
 * The shared connections log in as nobody (a backend that wants AUTH
 * gives its sessions their own connections), do not speak TLS (likewise),
 * and live on the worker's event base, freed with the worker
 * (worker_job).  Writes are gathered: every command sent to a connection
 * during one turn of the event loop leaves in one write.
 */
#ifndef TANDEM_REDIS_POOL_H
#define TANDEM_REDIS_POOL_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct redis_session;
struct redis_shared;

/*
 * redis_pool_send - move n bytes at the start of src, holding commands of s
 * that await `replies` replies, to the shared connection of s->base.be that
 * s owes replies on (or another, opened if need be).  0 sent (maybe once
 * the connect completes); -1 when no connection could be opened: nothing
 * moved, errno says why.
 */
int redis_pool_send(struct redis_session *s, struct evbuffer *src, size_t n, uint32_t replies);

/*
 * redis_pool_leave - s no longer reads its shared connection (it closes, or
 * takes a connection of its own): the replies it still owes are dropped
 * there.  Nothing when it owes none.
 */
void redis_pool_leave(struct redis_session *s);

/* redis_pool_backlog - bytes the shared connection s owes replies on has not sent yet. */
size_t redis_pool_backlog(const struct redis_session *s);

#endif /* TANDEM_REDIS_POOL_H */
