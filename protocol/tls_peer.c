/*
 * tls_peer.c - whom a TLS client expects, and why TLS failed (see tls_peer.h).
 */
#include "protocol/tls_peer.h"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <stdio.h>

int
tls_peer_expect(SSL *ssl, const char *name, int verify)
{
    if (name == NULL || name[0] == '\0')
        return 0;
    struct in6_addr a6;
    struct in_addr a4;
    int literal = inet_pton(AF_INET, name, &a4) == 1 || inet_pton(AF_INET6, name, &a6) == 1;
    if (!literal && SSL_set_tlsext_host_name(ssl, name) != 1)
        return -1;
    if (!verify)
        return 0;
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    if ((literal ? X509_VERIFY_PARAM_set1_ip_asc(param, name)
                 : X509_VERIFY_PARAM_set1_host(param, name, 0)) != 1)
        return -1;
    SSL_set_verify(ssl, SSL_VERIFY_PEER, NULL);
    return 0;
}

const char *
tls_peer_failure(const SSL *ssl, const char *fallback, char *buf, size_t len)
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
