/*
 * tls_peer.h - the two things every TLS user in tandem does alike: say whom
 * it expects at the other end, and say why the exchange failed.
 *
 * The users: the engine's connections (engine/conn.c), the health probe
 * (control/health.c), the blocking Redis link of verify, fence and replica
 * (verify/redis_link.c) and the fleet store's tunnel (control/tls_tunnel.c).
 * Pure OpenSSL calls on an SSL object: no socket, no log.
 */
#ifndef TANDEM_TLS_PEER_H
#define TANDEM_TLS_PEER_H

#include <stddef.h>
#include <openssl/ssl.h>

/*
 * tls_peer_expect - a client's ssl will talk to `name` (a host name or an IP
 * literal): SNI carries it when it is a host name (never an IP literal,
 * RFC 6066); with verify, the certificate must be valid for it (host names
 * without partial wildcards, IP literals against the IP SANs) and the
 * handshake fails otherwise (SSL_VERIFY_PEER).  NULL or "" name: nothing.
 * 0, or -1 when OpenSSL refused the name.
 */
int tls_peer_expect(SSL *ssl, const char *name, int verify);

/*
 * tls_peer_failure - write into buf (len bytes, NUL-terminated) why the last
 * OpenSSL call on ssl failed: "certificate verify failed: <reason>" when the
 * peer's certificate was checked (SSL_VERIFY_PEER) and did not verify, else
 * the oldest error on the thread's queue, else fallback.  Clears the queue.
 * Returns buf.
 */
const char *tls_peer_failure(const SSL *ssl, const char *fallback, char *buf, size_t len);

#endif /* TANDEM_TLS_PEER_H */
