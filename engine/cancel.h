/*
 * cancel.h - the process-wide table of cancel keys.
 *
 * A CancelRequest arrives on a new connection, which SO_REUSEPORT may give
 * to any worker, so the key tandem handed a client must be findable from
 * every thread.  This is the one shared, locked structure; it is touched at
 * session login, session end and cancel time, never per request.
 */
#ifndef TANDEM_CANCEL_H
#define TANDEM_CANCEL_H

#include <stdint.h>
#include <sys/socket.h>

/*
 * Embedded in each session.  The owner sets pid and key (what tandem gives
 * the client) before the first cancel_register and never changes them while
 * registered; every other field belongs to the table and is written only
 * under its lock.
 */
struct cancel_entry {
    uint32_t pid, key;            /* what tandem gave the client */
    struct sockaddr_storage addr; /* the backend to cancel on */
    socklen_t addrlen;
    uint32_t be_pid, be_key;      /* the backend's own key */
    struct cancel_entry *next;
    int registered;
};

/*
 * cancel_register - make e findable by (e->pid, e->key), cancelling on the
 * backend at addr with (be_pid, be_key).  Calling it again for an entry
 * already registered (a backend that sends BackendKeyData twice, a second
 * login) replaces the backend's key and address in place: an entry is in
 * the table at most once.  addrlen larger than sockaddr_storage is cut.
 */
void cancel_register(struct cancel_entry *e, uint32_t be_pid, uint32_t be_key,
                     const struct sockaddr *addr, socklen_t addrlen);

/* cancel_unregister - remove e; harmless if it is not registered. */
void cancel_unregister(struct cancel_entry *e);

/* cancel_lookup - copy the entry for (pid, key) into out; 0 if found, -1 if not. */
int cancel_lookup(uint32_t pid, uint32_t key, struct cancel_entry *out);

#endif /* TANDEM_CANCEL_H */
