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

#include <netinet/in.h>
#include <stdint.h>
#include <sys/socket.h>

/*
 * Where a cancel goes: the backend answering the session, and that
 * connection's own key.  addrlen 0: no key is known for it (a cancel is
 * then ignored rather than sent to another connection).
 */
struct cancel_target {
    /* a backend's address: IPv4 or IPv6 (not a sockaddr_storage: 100 bytes per session less) */
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } addr;
    socklen_t addrlen;
    uint32_t be_pid, be_key;
};

/* cancel_target_set_addr - t's address: addrlen bytes of addr (cut to the room t has). */
void cancel_target_set_addr(struct cancel_target *t, const struct sockaddr *addr,
                            socklen_t addrlen);

/* Embedded in each session; registered once its backend key is known. */
struct cancel_entry {
    uint32_t pid, key;       /* what tandem gave the client */
    struct cancel_target to; /* the answering backend; changes at a cutover's swap */
    struct cancel_entry *next;
    int registered;
};

/*
 * cancel_register - make e findable by (e->pid, e->key), cancelling on the
 * backend at addr with (be_pid, be_key).  Calling it again for an entry
 * already registered (a backend that sends BackendKeyData twice, a second
 * login) replaces the backend's key and address in place: an entry is in
 * the table at most once.  addr is a backend's IPv4 or IPv6 address.
 */
void cancel_register(struct cancel_entry *e, uint32_t be_pid, uint32_t be_key,
                     const struct sockaddr *addr, socklen_t addrlen);

/* cancel_unregister - remove e; harmless if it is not registered. */
void cancel_unregister(struct cancel_entry *e);

/*
 * cancel_retarget - point e at another backend connection (a cutover or
 * rollback swapped which one answers the session); registered or not.
 * Only the entry's owner calls it, while other workers may look it up.
 */
void cancel_retarget(struct cancel_entry *e, const struct cancel_target *to);

/* cancel_lookup - copy the target of the entry for (pid, key) into out; 0 if found, -1 if not. */
int cancel_lookup(uint32_t pid, uint32_t key, struct cancel_target *out);

#endif /* TANDEM_CANCEL_H */
