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

/* Embedded in each session; registered once its backend key is known. */
struct cancel_entry {
    uint32_t pid, key;            /* what tandem gave the client */
    struct sockaddr_storage addr; /* the backend to cancel on */
    socklen_t addrlen;
    uint32_t be_pid, be_key;      /* the backend's own key */
    struct cancel_entry *next;
    int registered;
};

void cancel_register(struct cancel_entry *e);
void cancel_unregister(struct cancel_entry *e);

/* cancel_lookup - copy the entry for (pid, key) into out; 0 if found, -1 if not. */
int cancel_lookup(uint32_t pid, uint32_t key, struct cancel_entry *out);

#endif /* TANDEM_CANCEL_H */
