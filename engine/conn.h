/*
 * conn.h - one socket, its two evbuffers and optional TLS.
 *
 * A conn does no protocol work: it moves bytes between a socket and its
 * evbuffers.  Reads go through a caller-provided scratch buffer (one per
 * worker) and are appended to `in`, so an idle connection owns no buffer
 * memory at all; writes go straight from `out` (writev, or SSL_write per
 * chunk).  The write event exists only while the kernel would block a
 * write (or a connect is in flight): an idle connection has none.  The owner (a session) gets one callback for both directions and
 * decides what to read and when; conn_flush() writes immediately and only
 * asks for a write event when the kernel would block.
 */
#ifndef TANDEM_CONN_H
#define TANDEM_CONN_H

#include <event2/event.h>
#include <event2/event_struct.h>
#include <openssl/ssl.h>
#include <stddef.h>
#include <stdint.h>

enum conn_io {
    CONN_OK,      /* progress: bytes read, or everything written, or handshake done */
    CONN_AGAIN,   /* the kernel or TLS would block; events are armed */
    CONN_EOF,     /* orderly close by the peer */
    CONN_ERROR,   /* reset, TLS failure...: errno / the OpenSSL queue say which */
};

struct conn {
    int fd;
    SSL *ssl;                 /* NULL for plain TCP */
    struct evbuffer *in;      /* bytes read, not yet consumed by the owner */
    struct evbuffer *out;     /* bytes to send */
    struct event ev_read;
    struct event *ev_write;   /* allocated while writing (conn_want_write), else NULL */
    unsigned reading : 1;     /* ev_read is added */
    unsigned writing : 1;     /* ev_write is added */
    unsigned tls_done : 1;    /* handshake finished */
    unsigned borrowed : 1;    /* fd and ssl belong to someone else (libpq): not closed here */
    char *tls_error;          /* last TLS failure, for messages: allocated when one happens */
};

/* The longest TLS failure text a conn keeps (conn_tls_error). */
#define CONN_TLS_ERROR_MAX 128

/*
 * conn_tune_socket - keepalive and user timeout on a TCP socket, so a peer
 * that vanished without a FIN or RST (a partition, a powered-off host, a
 * half-open client) is found: keepalive probes start after keepalive_ms
 * idle, one every third of that (at least 1 s), three unanswered end it;
 * TCP_USER_TIMEOUT ends a connection whose sent data stays unacknowledged
 * for user_timeout_ms, which keepalives alone never do (they only probe an
 * idle connection, and retransmissions last about 15 minutes by default).
 * 0 leaves the kernel's setting.  Errors are ignored: a socket that cannot
 * take an option keeps working without it.
 */
void conn_tune_socket(int fd, uint32_t keepalive_ms, uint32_t user_timeout_ms);

/* conn_init - take ownership of fd (non-blocking).  cb gets EV_READ or EV_WRITE. */
int conn_init(struct conn *c, struct event_base *base, int fd, event_callback_fn cb, void *arg);

/* conn_release - remove events, free TLS and buffers, close the fd.  Idempotent. */
void conn_release(struct conn *c);

/* conn_read - one read of at most cap bytes via scratch, appended to c->in. */
enum conn_io conn_read(struct conn *c, uint8_t *scratch, size_t cap, size_t *nread);

/* conn_flush - write as much of c->out as the socket takes; arms ev_write when needed. */
enum conn_io conn_flush(struct conn *c);

/*
 * conn_unbind / conn_rebind - move a conn to another owner: unbind stops
 * its events (the struct may then be copied), rebind points them at cb and
 * arg and watches for reading again (and writing, with bytes to send).
 */
void conn_unbind(struct conn *c);
void conn_rebind(struct conn *c, struct event_base *base, event_callback_fn cb, void *arg);

/* conn_want_read - start or stop watching for readability (backpressure). */
void conn_want_read(struct conn *c, int on);

/*
 * conn_want_write - start or stop watching for writability (a connect in
 * flight, a write the kernel would block).  The write event is allocated
 * when watching starts and freed when it stops (also from the event's own
 * callback: libevent reads nothing of an event after calling it).  -1 when
 * out of memory: nothing is watched.
 */
int conn_want_write(struct conn *c, int on);

/* conn_kick - run c's callback with what (EV_READ, EV_WRITE) from the event loop, soon. */
void conn_kick(struct conn *c, short what);

/*
 * conn_start_tls - wrap the socket in TLS.  server_side 1 accepts (client
 * connections), 0 connects (backends; sni may be NULL).  The handshake then
 * runs through conn_handshake().
 */
int conn_start_tls(struct conn *c, SSL_CTX *ctx, int server_side, const char *sni,
                   const char *verify_host);

/* conn_handshake - advance the TLS handshake: CONN_OK when done. */
enum conn_io conn_handshake(struct conn *c);

/*
 * conn_tls_error - why TLS failed on c (OpenSSL's reason, a certificate
 * check, the peer closing mid-handshake), or fallback when nothing was
 * noted.  The text lives until conn_release.  It is allocated only when a
 * failure happens: an idle connection carries no room for one.
 */
const char *conn_tls_error(const struct conn *c, const char *fallback);

#endif /* TANDEM_CONN_H */
