/*
 * tls_tunnel.h - TLS for the fleet's store, whose client library has none.
 *
 * Debian 12's hiredis (0.14) speaks plain TCP only, and the fleet's store
 * connections are hiredis's async contexts.  For a `store rediss://...`
 * they connect instead to a tunnel on the main thread's event base:
 *
 *   hiredis ──unix socket──► tunnel ══TLS══► the store
 *            (a 0700 directory of its own)
 *
 * Every connection hiredis opens to tls_tunnel_path() gets a TLS connection
 * of its own to the store, opened as it is accepted (libevent's
 * bufferevent_openssl does the TLS); bytes go both ways as they come,
 * bounded by watermarks.  When either side ends, both are closed: hiredis
 * sees its connection close as if the store had closed it, and the fleet's
 * one teardown path (lost() in fleet.c) takes over.  Why the TLS side ended
 * is kept for the fleet's log line (tls_tunnel_last_error).
 */
#ifndef TANDEM_TLS_TUNNEL_H
#define TANDEM_TLS_TUNNEL_H

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

struct event_base;
struct tls_tunnel;

/*
 * tls_tunnel_new - listen on a fresh unix socket in a private directory
 * under $TMPDIR (else /tmp) and relay each connection to host:port over TLS
 * with ctx (not owned; it must outlive the tunnel).  server_name is sent as
 * SNI and, when verify, is the name (or IP literal) the certificate must
 * carry.  NULL with err filled when the socket cannot be made.
 */
struct tls_tunnel *tls_tunnel_new(struct event_base *base, SSL_CTX *ctx, const char *host,
                                  uint16_t port, const char *server_name, int verify, char *err,
                                  size_t errlen);

/* tls_tunnel_path - the unix socket hiredis connects to. */
const char *tls_tunnel_path(const struct tls_tunnel *t);

/*
 * tls_tunnel_last_error - why the last tunnelled connection's TLS side ended
 * ("certificate verify failed: ...", "cannot connect: ...", "" when it ended
 * cleanly or none did yet).
 */
const char *tls_tunnel_last_error(const struct tls_tunnel *t);

/* tls_tunnel_free - close every relayed connection and remove the socket; NULL is fine. */
void tls_tunnel_free(struct tls_tunnel *t);

#endif /* TANDEM_TLS_TUNNEL_H */
