/*
 * cancel.c - cancel keys shared between workers (see cancel.h).
 */
#include "engine/cancel.h"

#include <pthread.h>
#include <string.h>

#define CANCEL_BUCKETS 4096

static pthread_mutex_t cancel_lock = PTHREAD_MUTEX_INITIALIZER;
static struct cancel_entry *buckets[CANCEL_BUCKETS];

static unsigned
bucket_of(uint32_t pid, uint32_t key)
{
    return (pid * 2654435761u ^ key) % CANCEL_BUCKETS;
}

/*
 * The backend fields are written under the lock: another worker may be
 * copying this entry in cancel_lookup right now.  An entry already in the
 * table is updated where it is; linking it a second time would make it point
 * at itself, and unregistering would then unlink it once and leave a
 * dangling pointer behind.
 */
void
cancel_target_set_addr(struct cancel_target *t, const struct sockaddr *addr, socklen_t addrlen)
{
    if (addrlen > (socklen_t)sizeof(t->addr))
        addrlen = (socklen_t)sizeof(t->addr);
    memset(&t->addr, 0, sizeof(t->addr));
    memcpy(&t->addr, addr, addrlen);
    t->addrlen = addrlen;
}

void
cancel_register(struct cancel_entry *e, uint32_t be_pid, uint32_t be_key,
                const struct sockaddr *addr, socklen_t addrlen)
{
    unsigned b = bucket_of(e->pid, e->key);
    pthread_mutex_lock(&cancel_lock);
    e->to.be_pid = be_pid;
    e->to.be_key = be_key;
    cancel_target_set_addr(&e->to, addr, addrlen);
    if (!e->registered) {
        e->next = buckets[b];
        buckets[b] = e;
        e->registered = 1;
    }
    pthread_mutex_unlock(&cancel_lock);
}

void
cancel_unregister(struct cancel_entry *e)
{
    unsigned b = bucket_of(e->pid, e->key);
    pthread_mutex_lock(&cancel_lock);
    if (!e->registered) {
        pthread_mutex_unlock(&cancel_lock);
        return;
    }
    for (struct cancel_entry **p = &buckets[b]; *p; p = &(*p)->next) {
        if (*p == e) {
            *p = e->next;
            break;
        }
    }
    e->registered = 0;
    pthread_mutex_unlock(&cancel_lock);
}

void
cancel_retarget(struct cancel_entry *e, const struct cancel_target *to)
{
    pthread_mutex_lock(&cancel_lock);
    e->to = *to;
    pthread_mutex_unlock(&cancel_lock);
}

int
cancel_lookup(uint32_t pid, uint32_t key, struct cancel_target *out)
{
    int found = -1;
    pthread_mutex_lock(&cancel_lock);
    for (struct cancel_entry *e = buckets[bucket_of(pid, key)]; e; e = e->next) {
        if (e->pid == pid && e->key == key) {
            *out = e->to;
            found = 0;
            break;
        }
    }
    pthread_mutex_unlock(&cancel_lock);
    return found;
}
