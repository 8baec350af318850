/*
 * admin_token.c - reading and comparing the admin bearer token (see admin_token.h).
 */
#include "admin/admin_token.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>

int
admin_token_read(const char *path, char *buf, size_t bufsize, char *err, size_t errlen)
{
    FILE *f = fopen(path, "r");
    size_t n;

    if (bufsize < ADMIN_TOKEN_MAX + 1) {
        snprintf(err, errlen, "token buffer too small");
        return -1;
    }
    if (f == NULL) {
        snprintf(err, errlen, "token file \"%s\": %s", path, strerror(errno));
        return -1;
    }
    /* one byte more than allowed, to tell "exactly the limit" from "too long" */
    n = fread(buf, 1, ADMIN_TOKEN_MAX + 1, f);
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        snprintf(err, errlen, "token file \"%s\": read error", path);
        return -1;
    }
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' ||
                     buf[n - 1] == '\t'))
        n--;
    if (n > ADMIN_TOKEN_MAX) {
        snprintf(err, errlen, "token file \"%s\": token longer than %d bytes", path,
                 ADMIN_TOKEN_MAX);
        return -1;
    }
    if (n == 0) {
        snprintf(err, errlen, "token file \"%s\" is empty", path);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (c <= ' ' || c >= 0x7f) {
            snprintf(err, errlen,
                     "token file \"%s\": the token must be printable ASCII without spaces",
                     path);
            return -1;
        }
    }
    buf[n] = '\0';
    return 0;
}

static int
sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int outlen = 0;
    return EVP_Digest(data, len, out, &outlen, EVP_sha256(), NULL) == 1 && outlen == 32 ? 0 : -1;
}

int
admin_token_equal(const char *want, const char *given, size_t len)
{
    unsigned char a[32], b[32];

    if (sha256(want, strlen(want), a) != 0 || sha256(given, len, b) != 0)
        return 0;
    return CRYPTO_memcmp(a, b, sizeof(a)) == 0;
}
