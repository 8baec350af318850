/*
 * conn.c - socket and TLS byte movement (see conn.h).
 */
#include "engine/conn.h"
#include "protocol/tls_peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

void
conn_tune_socket(int fd, uint32_t keepalive_ms, uint32_t user_timeout_ms)
{
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
    if (keepalive_ms > 0) {
        int idle = (int)((keepalive_ms + 999) / 1000), intvl = idle / 3, cnt = 3;
        if (intvl < 1)
            intvl = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
    }
    if (user_timeout_ms > 0) {
        unsigned int ut = user_timeout_ms;
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    }
}

int
conn_init(struct conn *c, struct event_base *base, int fd, event_callback_fn cb, void *arg)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->in = evbuffer_new();
    c->out = evbuffer_new();
    if (c->in == NULL || c->out == NULL)
        goto out_free;
    if (event_assign(&c->ev_read, base, fd, EV_READ | EV_PERSIST, cb, arg) != 0)
        goto out_free;
    return 0;

out_free:
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    c->in = c->out = NULL;
    c->fd = -1;
    return -1;
}

void
conn_release(struct conn *c)
{
    free(c->tls_error);
    c->tls_error = NULL;
    if (c->fd < 0 && c->in == NULL)
        return;
    if (c->reading)
        event_del(&c->ev_read);
    c->reading = 0;
    conn_want_write(c, 0);
    if (c->ssl && !c->borrowed)
        SSL_free(c->ssl);
    c->ssl = NULL;
    if (c->in)
        evbuffer_free(c->in);
    if (c->out)
        evbuffer_free(c->out);
    c->in = c->out = NULL;
    if (c->fd >= 0 && !c->borrowed)
        close(c->fd);
    c->fd = -1;
}

void
conn_unbind(struct conn *c)
{
    if (c->reading)
        event_del(&c->ev_read);
    c->reading = 0;
    conn_want_write(c, 0);
}

void
conn_rebind(struct conn *c, struct event_base *base, event_callback_fn cb, void *arg)
{
    conn_unbind(c);
    event_assign(&c->ev_read, base, c->fd, EV_READ | EV_PERSIST, cb, arg);
    conn_want_read(c, 1);
    /* out of memory: the bytes wait for the next flush, or the peer's timeout */
    if (evbuffer_get_length(c->out) > 0)
        (void)conn_want_write(c, 1);
}

void
conn_kick(struct conn *c, short what)
{
    /* ev_read carries the callback; its activation says which direction */
    event_active(&c->ev_read, what, 1);
}

void
conn_want_read(struct conn *c, int on)
{
    if (on && !c->reading) {
        event_add(&c->ev_read, NULL);
        c->reading = 1;
    } else if (!on && c->reading) {
        event_del(&c->ev_read);
        c->reading = 0;
    }
}

int
conn_want_write(struct conn *c, int on)
{
    if (on && !c->writing) {
        if (c->ev_write == NULL) {
            /* the callback, its argument and base are ev_read's (conn_init, conn_rebind) */
            c->ev_write = event_new(event_get_base(&c->ev_read), c->fd, EV_WRITE | EV_PERSIST,
                                    event_get_callback(&c->ev_read),
                                    event_get_callback_arg(&c->ev_read));
            if (c->ev_write == NULL)
                return -1;
        }
        event_add(c->ev_write, NULL);
        c->writing = 1;
    } else if (!on && c->ev_write != NULL) {
        event_free(c->ev_write); /* deletes it first */
        c->ev_write = NULL;
        c->writing = 0;
    }
    return 0;
}


const char *
conn_tls_error(const struct conn *c, const char *fallback)
{
    return c->tls_error != NULL && c->tls_error[0] != '\0' ? c->tls_error : fallback;
}

/*
 * Keep prefix and text as c's TLS failure.  The room is allocated at the first
 * failure, not with every connection; without memory the text is lost
 * (the caller's fallback names the failure instead).
 */
static void
set_tls_error(struct conn *c, const char *prefix, const char *text)
{
    if (c->tls_error == NULL && (c->tls_error = malloc(CONN_TLS_ERROR_MAX)) == NULL)
        return;
    snprintf(c->tls_error, CONN_TLS_ERROR_MAX, "%s%s", prefix, text);
}

/* Keep why TLS failed; a reason already kept outlives a later empty queue. */
static void
note_tls_error(struct conn *c, const char *what)
{
    char buf[CONN_TLS_ERROR_MAX];
    if (c->tls_error != NULL && c->tls_error[0] != '\0' && ERR_peek_error() == 0)
        return;
    set_tls_error(c, "", tls_peer_failure(c->ssl, what, buf, sizeof(buf)));
}

/* Map an SSL_* result to conn_io, arming the event TLS is waiting for. */
static enum conn_io
tls_result(struct conn *c, int rc, const char *what)
{
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
        conn_want_read(c, 1);
        return CONN_AGAIN;
    case SSL_ERROR_WANT_WRITE:
        return conn_want_write(c, 1) == 0 ? CONN_AGAIN : CONN_ERROR;
    case SSL_ERROR_ZERO_RETURN:
        return CONN_EOF;
    case SSL_ERROR_SYSCALL:
        if (errno == 0 || errno == EPIPE || errno == ECONNRESET) {
            set_tls_error(c, "connection closed during ", what);
            ERR_clear_error();
            return errno == 0 ? CONN_EOF : CONN_ERROR;
        }
        note_tls_error(c, strerror(errno));
        return CONN_ERROR;
    default:
        note_tls_error(c, what);
        return CONN_ERROR;
    }
}

enum conn_io
conn_read(struct conn *c, uint8_t *scratch, size_t cap, size_t *nread)
{
    ssize_t n;

    *nread = 0;
    if (c->ssl) {
        /* drain what OpenSSL already decrypted: no socket event will say so */
        size_t got = 0;
        do {
            ERR_clear_error();
            int rc = SSL_read(c->ssl, scratch + got, (int)(cap - got));
            if (rc <= 0) {
                if (got > 0)
                    break;
                return tls_result(c, rc, "read");
            }
            got += (size_t)rc;
        } while (got < cap && SSL_pending(c->ssl) > 0);
        if (SSL_pending(c->ssl) > 0)
            event_active(&c->ev_read, EV_READ, 1);
        n = (ssize_t)got;
    } else {
        /* recv, not read: the socket path skips the VFS layer (fd position, verify) */
        do {
            n = recv(c->fd, scratch, cap, 0);
        } while (n < 0 && errno == EINTR);
        if (n == 0)
            return CONN_EOF;
        if (n < 0)
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? CONN_AGAIN : CONN_ERROR;
    }
    if (evbuffer_add(c->in, scratch, (size_t)n) != 0)
        return CONN_ERROR;
    *nread = (size_t)n;
    return CONN_OK;
}

static enum conn_io
flush_tls(struct conn *c)
{
    while (evbuffer_get_length(c->out) > 0) {
        struct evbuffer_iovec v;
        if (evbuffer_peek(c->out, -1, NULL, &v, 1) < 1)
            break;
        ERR_clear_error();
        int rc = SSL_write(c->ssl, v.iov_base, (int)v.iov_len);
        if (rc <= 0)
            return tls_result(c, rc, "write");
        evbuffer_drain(c->out, (size_t)rc);
    }
    return CONN_OK;
}

/*
 * Write as much of out as the socket takes: sendmsg over up to 16 chains at
 * once (libevent's evbuffer_write uses writev, whose VFS path costs more per
 * call on a socket).  MSG_NOSIGNAL: a closed peer is an error, not SIGPIPE.
 */
static enum conn_io
flush_plain(struct conn *c)
{
    struct evbuffer_iovec vec[16];
    struct iovec iov[16];

    while (evbuffer_get_length(c->out) > 0) {
        int n = evbuffer_peek(c->out, -1, NULL, vec, 16);
        if (n > 16)
            n = 16;
        for (int i = 0; i < n; i++) {
            iov[i].iov_base = vec[i].iov_base;
            iov[i].iov_len = vec[i].iov_len;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(c->fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? CONN_AGAIN : CONN_ERROR;
        }
        evbuffer_drain(c->out, (size_t)sent);
    }
    return CONN_OK;
}

enum conn_io
conn_flush(struct conn *c)
{
    enum conn_io io = CONN_OK;

    if (c->ssl) {
        if (!c->tls_done)
            return CONN_AGAIN;
        io = flush_tls(c);
    } else {
        io = flush_plain(c);
    }
    if (io == CONN_ERROR)
        return io;
    int more = evbuffer_get_length(c->out) > 0;
    if (more != (int)c->writing && conn_want_write(c, more) != 0)
        return CONN_ERROR;
    return more ? CONN_AGAIN : CONN_OK;
}

int
conn_start_tls(struct conn *c, SSL_CTX *ctx, int server_side, const char *sni,
               const char *verify_host)
{
    c->ssl = SSL_new(ctx);
    if (c->ssl == NULL || SSL_set_fd(c->ssl, c->fd) != 1) {
        note_tls_error(c, "cannot create TLS state");
        return -1;
    }
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server_side) {
        SSL_set_accept_state(c->ssl);
        return 0;
    }
    SSL_set_connect_state(c->ssl);
    /* callers pass the same name twice, or no name to verify */
    if (tls_peer_expect(c->ssl, sni != NULL && sni[0] ? sni : verify_host,
                        verify_host != NULL && verify_host[0] != '\0') != 0) {
        note_tls_error(c, "cannot set the host name to verify");
        return -1;
    }
    ERR_clear_error();
    return 0;
}

enum conn_io
conn_handshake(struct conn *c)
{
    if (c->tls_done)
        return CONN_OK;
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->tls_done = 1;
        if (conn_want_write(c, evbuffer_get_length(c->out) > 0) != 0)
            return CONN_ERROR;
        return CONN_OK;
    }
    enum conn_io io = tls_result(c, rc, "handshake");
    /* waiting for the peer's flight: a write interest left from the connect would spin */
    if (io == CONN_AGAIN && SSL_want_read(c->ssl))
        conn_want_write(c, 0);
    return io == CONN_EOF ? CONN_ERROR : io;
}
