/*
 * scram.c - SCRAM-SHA-256 messages and keys, auth-source secrets (scram.h).
 *
 * Every length from the peer is checked before it is used; nothing is
 * allocated but SASLprep's normalised copy of a password (libpgcommon's).  Comparisons of secrets use CRYPTO_memcmp so a wrong proof
 * takes as long as a nearly right one.
 */
#include "protocol/scram.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdlib.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------------ */
/* Base64                                                              */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t
scram_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap)
{
    size_t need = (len + 2) / 3 * 4;
    if (need + 1 > cap)
        return 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < len)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < len)
            v |= in[i + 2];
        out[o++] = b64chars[v >> 18 & 63];
        out[o++] = b64chars[v >> 12 & 63];
        out[o++] = i + 1 < len ? b64chars[v >> 6 & 63] : '=';
        out[o++] = i + 2 < len ? b64chars[v & 63] : '=';
    }
    out[o] = '\0';
    return o;
}

static int
b64_value(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long
scram_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap)
{
    if (len % 4 != 0)
        return -1;
    size_t o = 0;
    for (size_t i = 0; i < len; i += 4) {
        int v[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            if (in[i + k] == '=' && i + 4 == len && k >= 2) {
                v[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0)
                return -1; /* data after padding */
            v[k] = b64_value(in[i + k]);
            if (v[k] < 0)
                return -1;
        }
        uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
        size_t n = 3 - (size_t)pad;
        if (o + n > cap)
            return -1;
        out[o++] = (uint8_t)(w >> 16);
        if (n > 1)
            out[o++] = (uint8_t)(w >> 8);
        if (n > 2)
            out[o++] = (uint8_t)w;
    }
    return (long)o;
}

/* ------------------------------------------------------------------ */
/* Keys                                                                */

static int
hmac(const uint8_t *key, size_t key_len, const void *msg, size_t len, uint8_t out[SCRAM_KEY_LEN])
{
    unsigned int n = 0;
    return HMAC(EVP_sha256(), key, (int)key_len, msg, len, out, &n) != NULL && n == SCRAM_KEY_LEN
               ? 0
               : -1;
}

/*
 * libpgcommon's SASLprep (RFC 4013), the one PostgreSQL and libpq use: its
 * header sits among the server's, so it is declared here as it is there.
 */
typedef enum {
    SASLPREP_SUCCESS = 0,
    SASLPREP_OOM = -1,
    SASLPREP_INVALID_UTF8 = -2,
    SASLPREP_PROHIBITED = -3
} pg_saslprep_rc;
extern pg_saslprep_rc pg_saslprep(const char *input, char **output);

int
scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                         uint32_t iterations, uint8_t client_key[SCRAM_KEY_LEN],
                         uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN])
{
    uint8_t salted[SCRAM_KEY_LEN];
    if (iterations == 0 || iterations > 100000000u)
        return -1;
    /*
     * As PostgreSQL does on both sides: the normalised password when
     * SASLprep takes it, the password as it is when it is not UTF-8 or has
     * prohibited characters (so such a password still works, byte for byte).
     */
    char *prepped = NULL;
    pg_saslprep_rc prep = pg_saslprep(password, &prepped);
    if (prep == SASLPREP_OOM)
        return -1;
    const char *key = prep == SASLPREP_SUCCESS ? prepped : password;
    int derived = PKCS5_PBKDF2_HMAC(key, (int)strlen(key), salt, (int)salt_len, (int)iterations,
                                    EVP_sha256(), SCRAM_KEY_LEN, salted);
    if (prepped != NULL) {
        OPENSSL_cleanse(prepped, strlen(prepped));
        free(prepped);
    }
    if (derived != 1)
        return -1;
    int rc = hmac(salted, sizeof(salted), "Client Key", 10, client_key) |
             hmac(salted, sizeof(salted), "Server Key", 10, server_key);
    OPENSSL_cleanse(salted, sizeof(salted));
    if (rc != 0 || SHA256(client_key, SCRAM_KEY_LEN, stored_key) == NULL)
        return -1;
    return 0;
}

/* ------------------------------------------------------------------ */
/* Secrets                                                             */

/* Find c in p[0..len): its index, or len. */
static size_t
find(const char *p, size_t len, char c)
{
    const char *q = memchr(p, c, len);
    return q ? (size_t)(q - p) : len;
}

int
scram_secret_parse(const char *text, size_t len, struct scram_secret *out)
{
    static const char prefix[] = "SCRAM-SHA-256$";
    const size_t plen = sizeof(prefix) - 1;
    if (len < plen || memcmp(text, prefix, plen) != 0)
        return -1;
    const char *p = text + plen;
    size_t rest = len - plen;
    /* <iter>:<salt>$<stored>:<server> */
    size_t colon = find(p, rest, ':');
    if (colon == 0 || colon > 9 || colon == rest)
        return -1;
    uint32_t iter = 0;
    for (size_t i = 0; i < colon; i++) {
        if (p[i] < '0' || p[i] > '9')
            return -1;
        iter = iter * 10 + (uint32_t)(p[i] - '0');
    }
    if (iter == 0)
        return -1;
    p += colon + 1, rest -= colon + 1;
    size_t dollar = find(p, rest, '$');
    if (dollar == rest)
        return -1;
    long n = scram_b64_decode(p, dollar, out->salt, sizeof(out->salt));
    if (n <= 0)
        return -1;
    out->salt_len = (size_t)n;
    p += dollar + 1, rest -= dollar + 1;
    colon = find(p, rest, ':');
    if (colon == rest)
        return -1;
    uint8_t key[SCRAM_KEY_LEN + 3];
    if (scram_b64_decode(p, colon, key, sizeof(key)) != SCRAM_KEY_LEN)
        return -1;
    memcpy(out->stored_key, key, SCRAM_KEY_LEN);
    if (scram_b64_decode(p + colon + 1, rest - colon - 1, key, sizeof(key)) != SCRAM_KEY_LEN)
        return -1;
    memcpy(out->server_key, key, SCRAM_KEY_LEN);
    out->iterations = iter;
    return 0;
}

static int
is_md5_hash(const char *text, size_t len)
{
    if (len != PGAUTH_MD5_LEN || memcmp(text, "md5", 3) != 0)
        return 0;
    for (size_t i = 3; i < len; i++)
        if (!((text[i] >= '0' && text[i] <= '9') || (text[i] >= 'a' && text[i] <= 'f')))
            return 0;
    return 1;
}

int
pgauth_secret_parse(const char *text, size_t len, struct pgauth_secret *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 0 || memchr(text, '\0', len) != NULL)
        return -1;
    if (len >= 6 && memcmp(text, "SCRAM-", 6) == 0) {
        out->kind = PGAUTH_SCRAM;
        return scram_secret_parse(text, len, &out->scram);
    }
    if (is_md5_hash(text, len)) {
        out->kind = PGAUTH_MD5;
        memcpy(out->md5, text, len);
        out->md5[len] = '\0';
        return 0;
    }
    if (len > PGAUTH_PASSWORD_MAX)
        return -1;
    out->kind = PGAUTH_PLAIN;
    memcpy(out->plain, text, len);
    out->plain[len] = '\0';
    return 0;
}

/* One quoted field at *pos: its unquoted text into out.  -1 when malformed or too long. */
static int
quoted_field(const char *line, size_t len, size_t *pos, char *out, size_t cap)
{
    size_t i = *pos, o = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
        i++;
    if (i >= len || line[i] != '"')
        return -1;
    for (i++;; i++) {
        if (i >= len)
            return -1; /* unterminated */
        if (line[i] == '"') {
            if (i + 1 < len && line[i + 1] == '"') {
                i++;
            } else {
                break;
            }
        } else if (line[i] == '\0') {
            return -1;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = line[i];
    }
    out[o] = '\0';
    *pos = i + 1;
    return 0;
}

int
pgauth_userlist_line(const char *line, size_t len, char *user, size_t user_cap, char *secret,
                     size_t secret_cap)
{
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t' || line[i] == '\r'))
        i++;
    if (i == len || line[i] == ';' || line[i] == '#')
        return 0;
    if (quoted_field(line, len, &i, user, user_cap) != 0 || user[0] == '\0' ||
        quoted_field(line, len, &i, secret, secret_cap) != 0)
        return -1;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Server side                                                         */

int
scram_parse_initial_response(const uint8_t *body, size_t len, const char **mech,
                             const uint8_t **data, size_t *data_len)
{
    const uint8_t *nul = memchr(body, '\0', len);
    if (nul == NULL)
        return -1;
    size_t at = (size_t)(nul - body) + 1;
    if (len - at < 4)
        return -1;
    uint32_t n = (uint32_t)body[at] << 24 | (uint32_t)body[at + 1] << 16 |
                 (uint32_t)body[at + 2] << 8 | body[at + 3];
    at += 4;
    if (n == 0xffffffffu) {
        n = 0;
    }
    if (n != len - at)
        return -1;
    *mech = (const char *)body;
    *data = body + at;
    *data_len = n;
    return 0;
}

/* A nonce: printable ASCII except ',' (RFC 5802 "printable"). */
static int
valid_nonce(const char *p, size_t len)
{
    if (len == 0)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == ',')
            return 0;
    return 1;
}

int
scram_parse_client_first(const char *msg, size_t len, struct scram_client_first *out,
                         const char **err)
{
    memset(out, 0, sizeof(*out));
    *err = "malformed SCRAM message";
    if (len == 0 || memchr(msg, '\0', len) != NULL)
        return -1;
    size_t i;
    if (msg[0] == 'n' || msg[0] == 'y') {
        out->cbind_flag = msg[0];
        i = 1;
    } else if (msg[0] == 'p' && len > 2 && msg[1] == '=') {
        out->cbind_flag = 'p';
        out->cbind_name = msg + 2;
        out->cbind_name_len = find(msg + 2, len - 2, ',');
        i = 2 + out->cbind_name_len;
    } else {
        *err = "malformed SCRAM message (unexpected channel-binding flag)";
        return -1;
    }
    if (i >= len || msg[i] != ',')
        return -1;
    i++;
    if (i < len && msg[i] == 'a') {
        *err = "client uses authorization identity, but it is not supported";
        return -1;
    }
    if (i >= len || msg[i] != ',')
        return -1;
    i++;
    out->gs2_header = msg;
    out->gs2_header_len = i;
    out->bare = msg + i;
    out->bare_len = len - i;
    if (i < len && msg[i] == 'm') {
        *err = "client requires an unsupported SCRAM extension";
        return -1;
    }
    /* n=<user>, ignored: PostgreSQL takes the user from the startup packet */
    if (len - i < 2 || msg[i] != 'n' || msg[i + 1] != '=')
        return -1;
    i += 2;
    i += find(msg + i, len - i, ',');
    if (len - i < 3 || msg[i] != ',' || msg[i + 1] != 'r' || msg[i + 2] != '=')
        return -1;
    i += 3;
    out->nonce = msg + i;
    out->nonce_len = find(msg + i, len - i, ',');
    if (!valid_nonce(out->nonce, out->nonce_len) || out->nonce_len > SCRAM_NONCE_MAX)
        return -1;
    return 0;
}

int
scram_parse_client_final(const char *msg, size_t len, struct scram_client_final *out,
                         const char **err)
{
    memset(out, 0, sizeof(*out));
    *err = "malformed SCRAM message";
    if (len < 2 || memchr(msg, '\0', len) != NULL || msg[0] != 'c' || msg[1] != '=')
        return -1;
    size_t i = 2, n = find(msg + i, len - i, ',');
    long d = scram_b64_decode(msg + i, n, out->cbind, sizeof(out->cbind));
    if (d <= 0)
        return -1;
    out->cbind_len = (size_t)d;
    i += n;
    if (len - i < 3 || msg[i] != ',' || msg[i + 1] != 'r' || msg[i + 2] != '=')
        return -1;
    i += 3;
    out->nonce = msg + i;
    out->nonce_len = find(msg + i, len - i, ',');
    if (!valid_nonce(out->nonce, out->nonce_len))
        return -1;
    i += out->nonce_len;
    /* optional extensions, then ",p=" and the proof, last */
    for (;;) {
        if (i >= len || msg[i] != ',')
            return -1;
        if (len - i >= 3 && msg[i + 1] == 'p' && msg[i + 2] == '=')
            break;
        i++;
        i += find(msg + i, len - i, ',');
    }
    out->without_proof = msg;
    out->without_proof_len = i;
    i += 3;
    uint8_t proof[SCRAM_KEY_LEN + 3];
    if (find(msg + i, len - i, ',') != len - i ||
        scram_b64_decode(msg + i, len - i, proof, sizeof(proof)) != SCRAM_KEY_LEN) {
        *err = "malformed SCRAM message (invalid proof)";
        return -1;
    }
    memcpy(out->proof, proof, SCRAM_KEY_LEN);
    return 0;
}

size_t
scram_build_server_first(char *out, size_t cap, const char *client_nonce, size_t cn_len,
                         const char *server_nonce, size_t sn_len, const uint8_t *salt,
                         size_t salt_len, uint32_t iterations)
{
    char salt64[SCRAM_SALT_MAX * 2];
    if (scram_b64_encode(salt, salt_len, salt64, sizeof(salt64)) == 0 && salt_len > 0)
        return 0;
    int n = snprintf(out, cap, "r=%.*s%.*s,s=%s,i=%u", (int)cn_len, client_nonce, (int)sn_len,
                     server_nonce, salt64, iterations);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

size_t
scram_auth_message(char *out, size_t cap, const char *client_first_bare, size_t cfb_len,
                   const char *server_first, size_t sf_len, const char *cf_without_proof,
                   size_t cfwp_len)
{
    size_t need = cfb_len + 1 + sf_len + 1 + cfwp_len;
    if (need >= cap)
        return 0;
    size_t o = 0;
    memcpy(out + o, client_first_bare, cfb_len), o += cfb_len;
    out[o++] = ',';
    memcpy(out + o, server_first, sf_len), o += sf_len;
    out[o++] = ',';
    memcpy(out + o, cf_without_proof, cfwp_len), o += cfwp_len;
    out[o] = '\0';
    return o;
}

int
scram_verify_proof(const uint8_t stored_key[SCRAM_KEY_LEN], const char *auth_message,
                   size_t am_len, const uint8_t proof[SCRAM_KEY_LEN],
                   uint8_t client_key[SCRAM_KEY_LEN])
{
    uint8_t sig[SCRAM_KEY_LEN], check[SCRAM_KEY_LEN];
    if (hmac(stored_key, SCRAM_KEY_LEN, auth_message, am_len, sig) != 0)
        return -1;
    for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
        client_key[i] = proof[i] ^ sig[i];
    if (SHA256(client_key, SCRAM_KEY_LEN, check) == NULL ||
        CRYPTO_memcmp(check, stored_key, SCRAM_KEY_LEN) != 0) {
        OPENSSL_cleanse(client_key, SCRAM_KEY_LEN);
        return -1;
    }
    return 0;
}

size_t
scram_build_server_final(char *out, size_t cap, const uint8_t server_key[SCRAM_KEY_LEN],
                         const char *auth_message, size_t am_len)
{
    uint8_t sig[SCRAM_KEY_LEN];
    char sig64[64];
    if (hmac(server_key, SCRAM_KEY_LEN, auth_message, am_len, sig) != 0 ||
        scram_b64_encode(sig, sizeof(sig), sig64, sizeof(sig64)) == 0)
        return 0;
    int n = snprintf(out, cap, "v=%s", sig64);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

/* ------------------------------------------------------------------ */
/* Client side                                                         */

size_t
scram_build_client_first(char *out, size_t cap, const char *nonce, size_t nonce_len)
{
    int n = snprintf(out, cap, "n,,n=,r=%.*s", (int)nonce_len, nonce);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

int
scram_parse_server_first(const char *msg, size_t len, const char *our_nonce, size_t on_len,
                         struct scram_server_first *out, const char **err)
{
    memset(out, 0, sizeof(*out));
    *err = "malformed SCRAM message from the server";
    if (len < 2 || memchr(msg, '\0', len) != NULL || msg[0] != 'r' || msg[1] != '=')
        return -1;
    size_t i = 2;
    out->nonce = msg + i;
    out->nonce_len = find(msg + i, len - i, ',');
    if (!valid_nonce(out->nonce, out->nonce_len) || out->nonce_len <= on_len ||
        memcmp(out->nonce, our_nonce, on_len) != 0) {
        *err = "the server's SCRAM nonce does not extend ours";
        return -1;
    }
    i += out->nonce_len;
    if (len - i < 3 || memcmp(msg + i, ",s=", 3) != 0)
        return -1;
    i += 3;
    size_t n = find(msg + i, len - i, ',');
    long d = scram_b64_decode(msg + i, n, out->salt, sizeof(out->salt));
    if (d <= 0)
        return -1;
    out->salt_len = (size_t)d;
    i += n;
    if (len - i < 4 || memcmp(msg + i, ",i=", 3) != 0)
        return -1;
    i += 3;
    uint32_t iter = 0;
    size_t digits = 0;
    for (; i < len && msg[i] >= '0' && msg[i] <= '9'; i++, digits++) {
        if (digits >= 9)
            return -1;
        iter = iter * 10 + (uint32_t)(msg[i] - '0');
    }
    if (digits == 0 || iter == 0 || (i < len && msg[i] != ','))
        return -1;
    out->iterations = iter;
    return 0;
}

size_t
scram_build_client_final(char *out, size_t cap, const char *nonce, size_t nonce_len,
                         const char *client_first_bare, size_t cfb_len, const char *server_first,
                         size_t sf_len, const uint8_t client_key[SCRAM_KEY_LEN],
                         size_t *without_proof_len)
{
    int n = snprintf(out, cap, "c=biws,r=%.*s", (int)nonce_len, nonce);
    if (n <= 0 || (size_t)n >= cap)
        return 0;
    *without_proof_len = (size_t)n;
    char am[3 * SCRAM_MSG_MAX];
    size_t am_len = scram_auth_message(am, sizeof(am), client_first_bare, cfb_len, server_first,
                                       sf_len, out, (size_t)n);
    uint8_t stored[SCRAM_KEY_LEN], sig[SCRAM_KEY_LEN], proof[SCRAM_KEY_LEN];
    char proof64[64];
    if (am_len == 0 || SHA256(client_key, SCRAM_KEY_LEN, stored) == NULL ||
        hmac(stored, sizeof(stored), am, am_len, sig) != 0)
        return 0;
    for (size_t i = 0; i < SCRAM_KEY_LEN; i++)
        proof[i] = client_key[i] ^ sig[i];
    if (scram_b64_encode(proof, sizeof(proof), proof64, sizeof(proof64)) == 0)
        return 0;
    int m = snprintf(out + n, cap - (size_t)n, ",p=%s", proof64);
    return m > 0 && (size_t)m < cap - (size_t)n ? (size_t)(n + m) : 0;
}

int
scram_check_server_final(const char *msg, size_t len, const uint8_t server_key[SCRAM_KEY_LEN],
                         const char *auth_message, size_t am_len, const char **err)
{
    *err = "malformed SCRAM message from the server";
    if (len >= 2 && msg[0] == 'e' && msg[1] == '=') {
        *err = "the server refused the SCRAM exchange";
        return -1;
    }
    if (len < 2 || msg[0] != 'v' || msg[1] != '=')
        return -1;
    size_t n = find(msg + 2, len - 2, ',');
    uint8_t got[SCRAM_KEY_LEN + 3], want[SCRAM_KEY_LEN];
    if (scram_b64_decode(msg + 2, n, got, sizeof(got)) != SCRAM_KEY_LEN ||
        hmac(server_key, SCRAM_KEY_LEN, auth_message, am_len, want) != 0)
        return -1;
    if (CRYPTO_memcmp(got, want, SCRAM_KEY_LEN) != 0) {
        *err = "the server's SCRAM signature is wrong";
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ */
/* md5                                                                 */

static void
md5_hex(const void *a, size_t alen, const void *b, size_t blen, char out[33])
{
    uint8_t d[16];
    unsigned int n = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    memset(d, 0, sizeof(d));
    if (ctx != NULL && EVP_DigestInit_ex(ctx, EVP_md5(), NULL) == 1 &&
        EVP_DigestUpdate(ctx, a, alen) == 1 && EVP_DigestUpdate(ctx, b, blen) == 1)
        EVP_DigestFinal_ex(ctx, d, &n);
    EVP_MD_CTX_free(ctx);
    for (size_t i = 0; i < 16; i++) {
        out[2 * i] = "0123456789abcdef"[d[i] >> 4];
        out[2 * i + 1] = "0123456789abcdef"[d[i] & 15];
    }
    out[32] = '\0';
}

void
pgauth_md5_secret(const char *password, const char *user, char out[PGAUTH_MD5_LEN + 1])
{
    memcpy(out, "md5", 3);
    md5_hex(password, strlen(password), user, strlen(user), out + 3);
}

void
pgauth_md5_response(const char secret[PGAUTH_MD5_LEN + 1], const uint8_t salt[4],
                    char out[PGAUTH_MD5_LEN + 1])
{
    memcpy(out, "md5", 3);
    md5_hex(secret + 3, 32, salt, 4, out + 3);
}
