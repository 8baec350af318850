/*
 * session.c - the process-wide mirror queue count (see session.h).
 */
#include "proxy/session.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "proxy/conn.h"
#include "proxy/pg_session.h"
#include "proxy/runtime.h"

static uint64_t queue_bytes;

void
session_queue_account(int64_t delta)
{
    if (delta >= 0)
        __atomic_add_fetch(&queue_bytes, (uint64_t)delta, __ATOMIC_RELAXED);
    else
        __atomic_sub_fetch(&queue_bytes, (uint64_t)-delta, __ATOMIC_RELAXED);
}

uint64_t
session_queue_total(void)
{
    return __atomic_load_n(&queue_bytes, __ATOMIC_RELAXED) + pg_session_queue_total();
}

int
session_connect(struct conn *c, struct event_base *base, const struct rt_backend *b,
                event_callback_fn cb, void *arg)
{
    int fd = socket(b->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    if (conn_init(c, base, fd, cb, arg) != 0) {
        close(fd);
        errno = ENOMEM;
        return -1;
    }
    if (connect(fd, (const struct sockaddr *)&b->addr, b->addrlen) == 0)
        return 0;
    if (errno != EINPROGRESS) {
        int saved = errno;
        conn_release(c);
        errno = saved;
        return -1;
    }
    /* writable = connected or failed */
    event_add(&c->ev_write, NULL);
    c->writing = 1;
    return 1;
}

int
session_connect_result(const struct conn *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    return err;
}
