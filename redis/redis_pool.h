/*
 * redis_pool.h - server connections shared by Redis sessions that carry no
 * connection state (listener setting server_connections shared), on both
 * legs: the primary's (a session's commands) and the shadow's (its
 * mirrored commands).
 *
 *   client A ─┐                          ┌─► A's replies (A's reader frames them)
 *   client B ─┼─► one shared connection ─┤   in the order the commands went out
 *   client C ─┘   per worker, backend    └─► B's, C's ...
 *                 and role (server_pool of them)
 *
 * Each worker keeps, per backend and role, up to the listener's
 * server_pool connections.  A session sends its commands on one of them
 * (the one it still owes replies on, else the least busy) and the
 * connection keeps a FIFO of who waits for how many replies.  Replies come
 * back in the order of the requests, so the head of the FIFO says whose
 * they are: the session's own reader of that role frames them (and
 * digests them for the comparison) exactly as it frames its own
 * connection's replies, streaming a large reply as it arrives.  Nothing is
 * framed twice.
 *
 * A session is shared only while it has no connection state: its first
 * stateful command (rediscmd's SESSION, TX, BLOCKING, PUBSUB and ADMIN
 * kinds, unknown commands) waits for its replies owed on the primary's
 * shared connection, then it opens a connection of its own and keeps it
 * (redis_session.c, "Shared server connections"); its shadow leg opens
 * one of its own at once too, and sends on it only once the replies owed
 * on the shadow's shared connection are in (redis_shadow.c).  Since a
 * shared session never changed its connections' state, the new ones need
 * nothing replayed.
 *
 * A session that leaves a role's connection with replies owed stays in
 * the FIFO as nobody: its replies are framed by the pool's own reader
 * (carrying on from the session's, when it left in the middle of one) and
 * dropped.  On the shadow role such a wait keeps whether it holds a write:
 * until answered it holds a cutover's drain (redis_pool_writes_owed).
 *
 * A shared connection that fails fails exactly the sessions waiting on it:
 * on the primary each gets its errors in RESP and closes, as with a
 * connection of its own; on the shadow each one's mirror is detached
 * (counted as a shadow error, or a timeout), the client never notices.
 * The others open a new one with their next command.  A shadow connection
 * whose oldest wait is older than the mirror timeout of the session that
 * sent it fails as timed out; a session may not add to a shadow
 * connection's unsent bytes beyond its own mirror queue bound (its mirror
 * is detached, the drop counted), and those bytes count against the
 * process's mirror_queue_total.
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
struct rt_listener;
struct worker;

/* Which leg of its sessions a shared connection carries. */
enum redis_role {
    REDIS_ROLE_PRIMARY, /* to s->base.be: the client's commands */
    REDIS_ROLE_SHADOW,  /* to s->base.shadow_be: its mirrored commands */
};

/*
 * redis_pool_send - move n bytes at the start of src, holding commands of s
 * that await `replies` replies (`writes`: a write among them), to the
 * shared connection of role that s owes replies on (or another, opened if
 * need be).  0 sent (maybe once the connect completes); -1 nothing moved,
 * errno says why: no connection could be opened, or ENOBUFS (the shadow
 * role: its unsent bytes would pass s's mirror queue bound).
 */
int redis_pool_send(struct redis_session *s, enum redis_role role, struct evbuffer *src, size_t n,
                    uint32_t replies, int writes);

/*
 * redis_pool_leave - s no longer reads its shared connection of role (it
 * closes, takes a connection of its own, or its mirror is detached): the
 * replies it still owes are dropped there.  Nothing when it owes none.
 */
void redis_pool_leave(struct redis_session *s, enum redis_role role);

/* redis_pool_backlog - bytes the shared connection s owes replies on has not sent yet. */
size_t redis_pool_backlog(const struct redis_session *s, enum redis_role role);

/*
 * redis_pool_writes_owed - 1 while a write of a session that left is
 * unanswered on a shared shadow connection of w to the backend listener l
 * mirrors now: l's cutover drain waits for it, as for a session's own.
 */
int redis_pool_writes_owed(struct worker *w, const struct rt_listener *l);

#endif /* TANDEM_REDIS_POOL_H */
