/*
 * tls_tunnel.c - the fleet store's TLS tunnel (see tls_tunnel.h).
 *
 * One pair per connection hiredis opens: `plain` is the accepted unix
 * socket, `tls` the bufferevent_openssl to the store.  What one side reads
 * is moved (not copied) to the other's output; when that output passes
 * TUNNEL_HIGH the reading side stops until it drains to half.  Either side
 * ending closes the pair: the one teardown path is pair_close().
 */
#include "control/tls_tunnel.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "conf/conf.h"
#include "protocol/tls_peer.h"

#define TUNNEL_HIGH (1u << 20) /* a side's pending output beyond this: the other stops reading */
#define TUNNEL_BACKLOG 8       /* the fleet opens two connections at a time */

struct tunnel_pair {
    struct tls_tunnel *t;
    struct bufferevent *plain, *tls;
    struct tunnel_pair *prev, *next;
};

struct tls_tunnel {
    struct event_base *base;
    SSL_CTX *ctx;
    char host[CONF_HOST_MAX];
    uint16_t port;
    char server_name[CONF_HOST_MAX];
    int verify;
    char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    struct evconnlistener *listener;
    struct tunnel_pair *pairs;
    char last_error[256];
};

static void
pair_close(struct tunnel_pair *p)
{
    if (p->prev)
        p->prev->next = p->next;
    else
        p->t->pairs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    /* BEV_OPT_CLOSE_ON_FREE: the sockets, and the SSL object with the TLS one */
    bufferevent_free(p->plain);
    if (p->tls)
        bufferevent_free(p->tls);
    free(p);
}

static struct bufferevent *
other_side(const struct tunnel_pair *p, const struct bufferevent *bev)
{
    return bev == p->plain ? p->tls : p->plain;
}

static void
on_read(struct bufferevent *bev, void *arg)
{
    struct bufferevent *to = other_side(arg, bev);
    struct evbuffer *out = bufferevent_get_output(to);
    evbuffer_add_buffer(out, bufferevent_get_input(bev));
    if (evbuffer_get_length(out) >= TUNNEL_HIGH)
        bufferevent_disable(bev, EV_READ);
}

/* bev's output fell to its low watermark: the other side may read again. */
static void
on_drained(struct bufferevent *bev, void *arg)
{
    bufferevent_enable(other_side(arg, bev), EV_READ);
}

/* Why the TLS side ended, in the words of tls_peer.h. */
static void
note_tls_end(struct tunnel_pair *p, short what)
{
    struct tls_tunnel *t = p->t;
    char fallback[160];
    unsigned long e = bufferevent_get_openssl_error(p->tls);

    if (!(what & BEV_EVENT_ERROR)) {
        snprintf(t->last_error, sizeof(t->last_error), "the store closed the connection");
        return;
    }
    int dns = bufferevent_socket_get_dns_error(p->tls);
    if (dns != 0)
        snprintf(fallback, sizeof(fallback), "cannot resolve %s: %s", t->host,
                 evutil_gai_strerror(dns));
    else if (e != 0)
        ERR_error_string_n(e, fallback, sizeof(fallback));
    else if (EVUTIL_SOCKET_ERROR() != 0)
        snprintf(fallback, sizeof(fallback), "cannot connect: %s",
                 evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
    else
        snprintf(fallback, sizeof(fallback), "the store closed the connection");
    tls_peer_failure(bufferevent_openssl_get_ssl(p->tls), fallback, t->last_error,
                     sizeof(t->last_error));
}

static void
on_event(struct bufferevent *bev, short what, void *arg)
{
    struct tunnel_pair *p = arg;
    if (what & BEV_EVENT_CONNECTED) {
        if (bev == p->tls)
            p->t->last_error[0] = '\0';
        return;
    }
    if (bev == p->tls)
        note_tls_end(p, what);
    pair_close(p);
}

static void
on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen,
          void *arg)
{
    struct tls_tunnel *t = arg;
    struct tunnel_pair *p = calloc(1, sizeof(*p));
    SSL *ssl = NULL;
    (void)lev;
    (void)sa;
    (void)salen;

    if (p == NULL || (p->plain = bufferevent_socket_new(t->base, fd, BEV_OPT_CLOSE_ON_FREE)) == NULL) {
        evutil_closesocket(fd);
        free(p);
        return;
    }
    p->t = t;
    p->next = t->pairs;
    if (t->pairs)
        t->pairs->prev = p;
    t->pairs = p;
    ssl = SSL_new(t->ctx);
    if (ssl == NULL || tls_peer_expect(ssl, t->server_name, t->verify) != 0) {
        tls_peer_failure(ssl, "cannot create TLS state", t->last_error, sizeof(t->last_error));
        SSL_free(ssl);
        goto fail;
    }
    p->tls = bufferevent_openssl_socket_new(t->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
                                            BEV_OPT_CLOSE_ON_FREE);
    if (p->tls == NULL) {
        SSL_free(ssl);
        goto fail;
    }
    /* a clean close_notify is not required of the store: a TCP close ends the stream too */
    bufferevent_openssl_set_allow_dirty_shutdown(p->tls, 1);
    for (int i = 0; i < 2; i++) {
        struct bufferevent *bev = i == 0 ? p->plain : p->tls;
        bufferevent_setcb(bev, on_read, on_drained, on_event, p);
        bufferevent_setwatermark(bev, EV_WRITE, TUNNEL_HIGH / 2, 0);
        bufferevent_enable(bev, EV_READ | EV_WRITE);
    }
    /*
     * Resolved here, as hiredis resolves a plain store's name: at each
     * connect, blocking (no evdns base).  A failure is reported through
     * on_event, which closes the pair: p may be gone when this returns 0.
     */
    if (bufferevent_socket_connect_hostname(p->tls, NULL, AF_UNSPEC, t->host, t->port) != 0) {
        snprintf(t->last_error, sizeof(t->last_error), "cannot connect to %s:%u", t->host,
                 t->port);
        goto fail;
    }
    return;
fail:
    /* hiredis sees its connection close; the fleet logs last_error */
    if (t->last_error[0] == '\0')
        snprintf(t->last_error, sizeof(t->last_error), "out of memory");
    pair_close(p);
}

struct tls_tunnel *
tls_tunnel_new(struct event_base *base, SSL_CTX *ctx, const char *host, uint16_t port,
               const char *server_name, int verify, char *err, size_t errlen)
{
    struct tls_tunnel *t = calloc(1, sizeof(*t));
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    const char *tmp = getenv("TMPDIR");

    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->base = base;
    t->ctx = ctx;
    t->port = port;
    t->verify = verify;
    snprintf(t->host, sizeof(t->host), "%s", host);
    snprintf(t->server_name, sizeof(t->server_name), "%s", server_name ? server_name : host);
    if (tmp == NULL || tmp[0] == '\0')
        tmp = "/tmp";
    /* mkdtemp makes it 0700: only this user may reach the store through it */
    if ((size_t)snprintf(t->dir, sizeof(t->dir), "%s/tandem-store-XXXXXX", tmp) >=
            sizeof(t->dir) - 3 ||
        mkdtemp(t->dir) == NULL) {
        snprintf(err, errlen, "cannot make a private directory for the store's TLS tunnel in %s: %s",
                 tmp, strerror(errno));
        free(t);
        return NULL;
    }
    snprintf(t->path, sizeof(t->path), "%s/s", t->dir);
    memcpy(sun.sun_path, t->path, strlen(t->path) + 1);
    t->listener = evconnlistener_new_bind(base, on_accept, t,
                                          LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC,
                                          TUNNEL_BACKLOG, (struct sockaddr *)&sun, sizeof(sun));
    if (t->listener == NULL) {
        snprintf(err, errlen, "cannot listen on %s for the store's TLS tunnel: %s", t->path,
                 strerror(errno));
        rmdir(t->dir);
        free(t);
        return NULL;
    }
    return t;
}

const char *
tls_tunnel_path(const struct tls_tunnel *t)
{
    return t->path;
}

const char *
tls_tunnel_last_error(const struct tls_tunnel *t)
{
    return t->last_error;
}

void
tls_tunnel_free(struct tls_tunnel *t)
{
    if (t == NULL)
        return;
    while (t->pairs)
        pair_close(t->pairs);
    evconnlistener_free(t->listener);
    unlink(t->path);
    rmdir(t->dir);
    free(t);
}
