/*
 * tlstext.h - why a TLS exchange failed, in words an operator can act on.
 *
 * OpenSSL keeps the reason in two places: the certificate check's result on
 * the SSL object (the specific "unable to get local issuer certificate")
 * and its thread's error queue (the generic "certificate verify failed" or
 * a protocol error).  Every TLS user in tandem - the engine's connections,
 * the health probe, the blocking Redis link of verify, fence and replica -
 * reports the same way through this one function.
 */
#ifndef TANDEM_TLSTEXT_H
#define TANDEM_TLSTEXT_H

#include <stddef.h>
#include <openssl/ssl.h>

/*
 * tls_failure_text - write into buf (len bytes, NUL-terminated) why the last
 * OpenSSL call on ssl failed: "certificate verify failed: <reason>" when the
 * peer's certificate was checked (SSL_VERIFY_PEER) and did not verify, else the oldest error on the thread's
 * queue, else fallback.  Clears the queue.  Returns buf.
 */
const char *tls_failure_text(const SSL *ssl, const char *fallback, char *buf, size_t len);

#endif /* TANDEM_TLSTEXT_H */
