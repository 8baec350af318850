/*
 * tlstext.c - the words for a TLS failure (see tlstext.h).
 */
#include "protocol/tlstext.h"

#include <openssl/err.h>
#include <openssl/x509.h>
#include <stdio.h>

const char *
tls_failure_text(const SSL *ssl, const char *fallback, char *buf, size_t len)
{
    /* without SSL_VERIFY_PEER (tls require) the check's result is recorded
     * but did not fail the handshake: it is not the reason */
    long verify = X509_V_OK;
    if (ssl != NULL && (SSL_get_verify_mode(ssl) & SSL_VERIFY_PEER))
        verify = SSL_get_verify_result(ssl);
    unsigned long e = ERR_peek_error();

    if (verify != X509_V_OK)
        snprintf(buf, len, "certificate verify failed: %s", X509_verify_cert_error_string(verify));
    else if (e != 0)
        ERR_error_string_n(e, buf, len);
    else
        snprintf(buf, len, "%s", fallback);
    ERR_clear_error();
    return buf;
}
