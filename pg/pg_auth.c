/*
 * pg_auth.c - tandem authenticates the client itself, and logs in to the
 * primary as that client (a listener with an auth_file).
 *
 * A relay cannot carry SCRAM-SHA-256-PLUS across two TLS sessions (the
 * binding names the certificate of the session it runs in), so with an
 * auth source tandem is the server to its client and the client to its
 * backend, as PgBouncer does:
 *
 *   client                 tandem                             primary
 *   startup  ----------->  secret = auth source[user]
 *            <-----------  AuthenticationSASL (-PLUS on TLS)
 *   client-first ------->  server-first (salt, iterations of the secret)
 *            <-----------
 *   client-final ------->  ClientKey = proof XOR HMAC(StoredKey, AuthMessage)
 *                          H(ClientKey) == StoredKey, else 28P01
 *            <-----------  SASLFinal (v=, from ServerKey)
 *                          connect, startup  ---------------->
 *                                            <---------------- AuthenticationSASL
 *                          client-first (n,,) -------------->
 *                                            <---------------- server-first
 *                          client-final (proof from ClientKey) ->
 *                                            <---------------- SASLFinal: v= checked
 *            <-----------  AuthenticationOk, parameters, K, Z (relayed as before)
 *
 * So no application password is stored: the ClientKey recovered from the
 * client's proof is kept for the session's logins, and is valid on a
 * backend whose verifier for the role has the same salt and iterations
 * (the same secret).  A plain password in the auth file is used directly;
 * an md5 secret serves md5 on both sides.
 *
 * An unknown user gets the same exchange against a made-up verifier
 * (salt derived from the name, so it is stable) and the same 28P01 as a
 * wrong password: the answer does not reveal which users exist.
 */
#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/runtime.h"
#include "pg/pg_session_int.h"
#include "protocol/pgw.h"
#include "protocol/scram.h"

#define SQLSTATE_INVALID_PASSWORD "28P01"
#define SQLSTATE_INVALID_AUTHORIZATION "28000"
/* Iterations for a verifier tandem makes itself (plain password, unknown user): PostgreSQL's. */
#define LOCAL_ITERATIONS 4096
#define SERVER_NONCE_BYTES 18

enum pg_auth_step {
    PGA_SASL_FIRST,  /* AuthenticationSASL sent: waiting for SASLInitialResponse */
    PGA_SASL_FINAL,  /* server-first sent: waiting for client-final */
    PGA_MD5,         /* AuthenticationMD5Password sent: waiting for the hash */
    PGA_CLIENT_DONE, /* the client is authenticated: logging in to the primary */
};

struct pg_auth {
    enum pg_auth_step step;
    unsigned known : 1;          /* the user is in the auth source */
    unsigned plus_offered : 1;   /* SCRAM-SHA-256-PLUS offered (the client is on TLS) */
    unsigned plus : 1;           /* the client chose it */
    unsigned have_client_key : 1;
    struct pgauth_secret secret; /* a copy: a reload may free the runtime's first */
    struct scram_secret scram;   /* the verifier the client's exchange runs against */
    uint8_t client_key[SCRAM_KEY_LEN];
    uint8_t md5_salt[4];
    char user[64];
    /* the client's exchange */
    char gs2[64];
    size_t gs2_len;
    char cfb[SCRAM_MSG_MAX];
    size_t cfb_len;
    char sf[SCRAM_MSG_MAX];
    size_t sf_len;
    char nonce[2 * SCRAM_NONCE_MAX];
    size_t nonce_len;
    struct pg_auth_login primary; /* the primary's exchange (tandem as the client) */
};

/* ------------------------------------------------------------------ */
/* Messages                                                            */

static void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* An Authentication message: code, then n bytes of data. */
static void
send_auth(struct evbuffer *out, uint32_t code, const void *data, size_t n)
{
    uint8_t h[9];
    h[0] = 'R';
    put32(h + 1, (uint32_t)(8 + n));
    put32(h + 5, code);
    evbuffer_add(out, h, sizeof(h));
    if (n)
        evbuffer_add(out, data, n);
}

/* A 'p' message: prefix (may be NULL), then n bytes. */
static void
send_password_message(struct evbuffer *out, const void *prefix, size_t plen, const void *data,
                      size_t n)
{
    uint8_t h[5];
    h[0] = 'p';
    put32(h + 1, (uint32_t)(4 + plen + n));
    evbuffer_add(out, h, sizeof(h));
    if (plen)
        evbuffer_add(out, prefix, plen);
    evbuffer_add(out, data, n);
}

/* A random nonce of printable characters (base64 of random bytes). */
static int
make_nonce(char *out, size_t cap, size_t *len)
{
    uint8_t r[SERVER_NONCE_BYTES];
    if (RAND_bytes(r, sizeof(r)) != 1)
        return -1;
    *len = scram_b64_encode(r, sizeof(r), out, cap);
    return *len > 0 ? 0 : -1;
}

/* ------------------------------------------------------------------ */
/* The made-up verifier of an unknown user                             */

static uint8_t mock_key[32];
static pthread_once_t mock_once = PTHREAD_ONCE_INIT;

static void
mock_init(void)
{
    if (RAND_bytes(mock_key, sizeof(mock_key)) != 1)
        memset(mock_key, 0x5a, sizeof(mock_key)); /* still unknowable to the client: no key matches */
}

static void
mock_verifier(const char *user, struct scram_secret *out)
{
    uint8_t d[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    pthread_once(&mock_once, mock_init);
    memset(d, 0, sizeof(d));
    HMAC(EVP_sha256(), mock_key, sizeof(mock_key), (const uint8_t *)user, strlen(user), d, &n);
    memset(out, 0, sizeof(*out));
    memcpy(out->salt, d, 16);
    out->salt_len = 16;
    out->iterations = LOCAL_ITERATIONS;
    /* stored and server keys no ClientKey hashes to: every proof fails */
    RAND_bytes(out->stored_key, sizeof(out->stored_key));
    RAND_bytes(out->server_key, sizeof(out->server_key));
}

/* ------------------------------------------------------------------ */
/* The client's side                                                   */

static int
auth_error(struct pg_auth_err *e, enum metric_client_error reason, const char *sqlstate,
           const char *fmt, const char *arg)
{
    e->reason = reason;
    e->sqlstate = sqlstate;
    snprintf(e->msg, sizeof(e->msg), fmt, arg);
    return -1;
}

static int
password_failed(struct pg_session *s, struct pg_auth_err *e)
{
    return auth_error(e, METRIC_ERR_AUTH_FAILED, SQLSTATE_INVALID_PASSWORD,
                      "password authentication failed for user \"%s\"", s->auth->user);
}

int
pg_auth_begin(struct pg_session *s, const char *user, const struct pgauth_secret *sec,
              struct pg_auth_err *e)
{
    const struct rt_listener *l = s->base.lis;
    struct pg_auth *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return auth_error(e, METRIC_ERR_PROTOCOL, "53200", "%s", "out of memory");
    s->auth = a;
    if (user == NULL || user[0] == '\0' || strlen(user) >= sizeof(a->user))
        return auth_error(e, METRIC_ERR_AUTH_FAILED, SQLSTATE_INVALID_AUTHORIZATION, "%s",
                          "no PostgreSQL user name specified in startup packet");
    snprintf(a->user, sizeof(a->user), "%s", user);
    a->known = sec != NULL;
    if (sec != NULL)
        a->secret = *sec;

    if (a->known && a->secret.kind == PGAUTH_MD5) {
        if (RAND_bytes(a->md5_salt, sizeof(a->md5_salt)) != 1)
            return auth_error(e, METRIC_ERR_PROTOCOL, "XX000", "%s", "no random bytes for a salt");
        send_auth(s->base.client.out, PGW_AUTH_MD5, a->md5_salt, sizeof(a->md5_salt));
        a->step = PGA_MD5;
        return 0;
    }
    if (!a->known) {
        mock_verifier(user, &a->scram);
    } else if (a->secret.kind == PGAUTH_SCRAM) {
        a->scram = a->secret.scram;
    } else { /* a plain password: a verifier of our own, with a fresh salt */
        uint8_t ck[SCRAM_KEY_LEN];
        a->scram.salt_len = 16;
        a->scram.iterations = LOCAL_ITERATIONS;
        if (RAND_bytes(a->scram.salt, 16) != 1 ||
            scram_keys_from_password(a->secret.plain, a->scram.salt, 16, LOCAL_ITERATIONS, ck,
                                     a->scram.stored_key, a->scram.server_key) != 0)
            return auth_error(e, METRIC_ERR_PROTOCOL, "XX000", "%s", "cannot derive SCRAM keys");
        OPENSSL_cleanse(ck, sizeof(ck));
    }
    /* the mechanisms, most preferred first, each NUL-terminated, then an empty name */
    char mechs[64];
    size_t n = 0;
    if (s->base.client.ssl != NULL && l->cbind_len > 0) {
        memcpy(mechs, SCRAM_MECH_PLUS, sizeof(SCRAM_MECH_PLUS));
        n = sizeof(SCRAM_MECH_PLUS);
        a->plus_offered = 1;
    }
    memcpy(mechs + n, SCRAM_MECH, sizeof(SCRAM_MECH));
    n += sizeof(SCRAM_MECH);
    mechs[n++] = '\0';
    send_auth(s->base.client.out, PGW_AUTH_SASL, mechs, n);
    a->step = PGA_SASL_FIRST;
    return 0;
}

static int
client_first(struct pg_session *s, const uint8_t *body, size_t len, struct pg_auth_err *e)
{
    struct pg_auth *a = s->auth;
    const char *mech, *err;
    const uint8_t *data;
    size_t dlen;
    struct scram_client_first cf;

    if (scram_parse_initial_response(body, len, &mech, &data, &dlen) != 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "malformed SASLInitialResponse");
    if (strcmp(mech, SCRAM_MECH_PLUS) == 0 && a->plus_offered)
        a->plus = 1;
    else if (strcmp(mech, SCRAM_MECH) != 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "client selected an invalid SASL authentication mechanism");
    if (scram_parse_client_first((const char *)data, dlen, &cf, &err) != 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s", err);
    /* as PostgreSQL: the flag must agree with the mechanism; "y" when we offered
     * binding means someone removed it from our offer (a downgrade) */
    if (a->plus ? cf.cbind_flag != 'p' || cf.cbind_name_len != strlen(SCRAM_CBIND_NAME) ||
                      memcmp(cf.cbind_name, SCRAM_CBIND_NAME, cf.cbind_name_len) != 0
                : cf.cbind_flag == 'p' || (cf.cbind_flag == 'y' && a->plus_offered))
        return auth_error(e, METRIC_ERR_AUTH_FAILED, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "SCRAM channel binding negotiation error");
    if (cf.gs2_header_len >= sizeof(a->gs2) || cf.bare_len >= sizeof(a->cfb))
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "SCRAM message too long");
    memcpy(a->gs2, cf.gs2_header, cf.gs2_header_len);
    a->gs2_len = cf.gs2_header_len;
    memcpy(a->cfb, cf.bare, cf.bare_len);
    a->cfb_len = cf.bare_len;

    char snonce[64];
    size_t sn_len;
    if (make_nonce(snonce, sizeof(snonce), &sn_len) != 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, "XX000", "%s", "no random bytes for a nonce");
    a->sf_len = scram_build_server_first(a->sf, sizeof(a->sf), cf.nonce, cf.nonce_len, snonce,
                                         sn_len, a->scram.salt, a->scram.salt_len,
                                         a->scram.iterations);
    if (a->sf_len == 0 || cf.nonce_len + sn_len >= sizeof(a->nonce))
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "SCRAM message too long");
    memcpy(a->nonce, cf.nonce, cf.nonce_len);
    memcpy(a->nonce + cf.nonce_len, snonce, sn_len);
    a->nonce_len = cf.nonce_len + sn_len;
    send_auth(s->base.client.out, PGW_AUTH_SASL_CONTINUE, a->sf, a->sf_len);
    a->step = PGA_SASL_FINAL;
    return 0;
}

static int
client_final(struct pg_session *s, const uint8_t *body, size_t len, struct pg_auth_err *e)
{
    struct pg_auth *a = s->auth;
    const struct rt_listener *l = s->base.lis;
    struct scram_client_final fin;
    const char *err;

    if (scram_parse_client_final((const char *)body, len, &fin, &err) != 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s", err);
    /* c= is the gs2 header again, and with -PLUS the hash of our certificate */
    size_t want = a->gs2_len + (a->plus ? l->cbind_len : 0);
    if (fin.cbind_len != want || memcmp(fin.cbind, a->gs2, a->gs2_len) != 0 ||
        (a->plus && CRYPTO_memcmp(fin.cbind + a->gs2_len, l->cbind, l->cbind_len) != 0))
        return auth_error(e, METRIC_ERR_AUTH_FAILED, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "SCRAM channel binding check failed");
    if (fin.nonce_len != a->nonce_len || memcmp(fin.nonce, a->nonce, a->nonce_len) != 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "unexpected SCRAM nonce in the final message");
    char am[3 * SCRAM_MSG_MAX];
    size_t am_len = scram_auth_message(am, sizeof(am), a->cfb, a->cfb_len, a->sf, a->sf_len,
                                       fin.without_proof, fin.without_proof_len);
    if (am_len == 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                          "SCRAM message too long");
    if (scram_verify_proof(a->scram.stored_key, am, am_len, fin.proof, a->client_key) != 0 ||
        !a->known)
        return password_failed(s, e);
    /* the ClientKey opens the backends only with the auth source's own verifier */
    a->have_client_key = a->secret.kind == PGAUTH_SCRAM;
    if (!a->have_client_key)
        OPENSSL_cleanse(a->client_key, sizeof(a->client_key));
    char v[SCRAM_MSG_MAX];
    size_t vlen = scram_build_server_final(v, sizeof(v), a->scram.server_key, am, am_len);
    if (vlen == 0)
        return auth_error(e, METRIC_ERR_PROTOCOL, "XX000", "%s", "cannot sign the SCRAM exchange");
    send_auth(s->base.client.out, PGW_AUTH_SASL_FINAL, v, vlen);
    a->step = PGA_CLIENT_DONE;
    return 1;
}

static int
client_md5(struct pg_session *s, const uint8_t *body, size_t len, struct pg_auth_err *e)
{
    struct pg_auth *a = s->auth;
    char want[PGAUTH_MD5_LEN + 1];
    pgauth_md5_response(a->secret.md5, a->md5_salt, want);
    /* the hash, NUL-terminated */
    if (len != PGAUTH_MD5_LEN + 1 || body[PGAUTH_MD5_LEN] != '\0' ||
        CRYPTO_memcmp(body, want, PGAUTH_MD5_LEN) != 0)
        return password_failed(s, e);
    a->step = PGA_CLIENT_DONE;
    return 1;
}

int
pg_auth_client(struct pg_session *s, const uint8_t *body, size_t len, struct pg_auth_err *e)
{
    switch (s->auth->step) {
    case PGA_SASL_FIRST:
        return client_first(s, body, len, e);
    case PGA_SASL_FINAL:
        return client_final(s, body, len, e);
    case PGA_MD5:
        return client_md5(s, body, len, e);
    case PGA_CLIENT_DONE:
        break;
    }
    return auth_error(e, METRIC_ERR_PROTOCOL, PGW_SQLSTATE_PROTOCOL_VIOLATION, "%s",
                      "unexpected password message");
}

/* ------------------------------------------------------------------ */
/* The primary's side: tandem answers its authentication requests      */

/* One login of tandem's as the client: to backend be, its messages to out. */
struct login {
    struct pg_auth *a;
    struct pg_auth_login *lg;
    const struct rt_backend *be;
    struct evbuffer *out;
};

static int
backend_error(const struct login *l, struct pg_auth_err *e, const char *why)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "tandem cannot log in to backend \"%s\" as \"%s\": %s",
             l->be->conf->name, l->a->user, why);
    return auth_error(e, METRIC_ERR_BACKEND_AUTH, SQLSTATE_INVALID_AUTHORIZATION, "%s", msg);
}

/* Is mech among the NUL-separated names of an AuthenticationSASL body (after the code)? */
static int
offers(const uint8_t *p, size_t len, const char *mech)
{
    size_t i = 0;
    while (i < len && p[i] != '\0') {
        const uint8_t *nul = memchr(p + i, '\0', len - i);
        if (nul == NULL)
            return 0;
        if (strcmp((const char *)p + i, mech) == 0)
            return 1;
        i = (size_t)(nul - p) + 1;
    }
    return 0;
}

static int
server_sasl(const struct login *l, const uint8_t *data, size_t len, struct pg_auth_err *e)
{
    struct pg_auth *a = l->a;
    struct pg_auth_login *lg = l->lg;
    if (!offers(data, len, SCRAM_MECH))
        return backend_error(l, e, "the backend offers no SCRAM-SHA-256");
    if (!a->have_client_key && a->secret.kind != PGAUTH_PLAIN)
        return backend_error(l, e, "the backend asks for SCRAM, and the auth source holds no "
                                   "SCRAM secret or password for the user");
    if (make_nonce(lg->nonce, sizeof(lg->nonce), &lg->nonce_len) != 0)
        return backend_error(l, e, "no random bytes for a nonce");
    char cf[SCRAM_MSG_MAX];
    size_t n = scram_build_client_first(cf, sizeof(cf), lg->nonce, lg->nonce_len);
    if (n == 0)
        return backend_error(l, e, "SCRAM message too long");
    memcpy(lg->cfb, cf + 3, n - 3); /* without "n,," */
    lg->cfb_len = n - 3;
    uint8_t len4[4];
    put32(len4, (uint32_t)n);
    uint8_t prefix[sizeof(SCRAM_MECH) + 4];
    memcpy(prefix, SCRAM_MECH, sizeof(SCRAM_MECH));
    memcpy(prefix + sizeof(SCRAM_MECH), len4, 4);
    send_password_message(l->out, prefix, sizeof(prefix), cf, n);
    return 0;
}

static int
server_continue(const struct login *l, const uint8_t *data, size_t len, struct pg_auth_err *e)
{
    struct pg_auth *a = l->a;
    struct pg_auth_login *lg = l->lg;
    struct scram_server_first sf;
    const char *err;
    uint8_t ck[SCRAM_KEY_LEN], stored[SCRAM_KEY_LEN];

    if (lg->cfb_len == 0 || len >= SCRAM_MSG_MAX ||
        scram_parse_server_first((const char *)data, len, lg->nonce, lg->nonce_len, &sf, &err) != 0)
        return backend_error(l, e, lg->cfb_len == 0 ? "unexpected SASL continuation" : "malformed SCRAM message");
    if (a->secret.kind == PGAUTH_PLAIN) {
        if (scram_keys_from_password(a->secret.plain, sf.salt, sf.salt_len, sf.iterations, ck,
                                     stored, lg->server_key) != 0)
            return backend_error(l, e, "cannot derive SCRAM keys");
    } else {
        /* the ClientKey proves only against the same verifier */
        const struct scram_secret *v = &a->secret.scram;
        if (sf.salt_len != v->salt_len || memcmp(sf.salt, v->salt, v->salt_len) != 0 ||
            sf.iterations != v->iterations) {
            lg->verifier_differs = 1;
            return backend_error(l, e, "its SCRAM verifier for the role differs from the auth "
                                       "source's (another salt or iteration count): set the same "
                                       "secret on the backend, or a password in the auth source");
        }
        memcpy(ck, a->client_key, sizeof(ck));
        memcpy(lg->server_key, v->server_key, SCRAM_KEY_LEN);
    }
    char fin[SCRAM_MSG_MAX];
    size_t wp = 0;
    size_t n = scram_build_client_final(fin, sizeof(fin), sf.nonce, sf.nonce_len, lg->cfb,
                                        lg->cfb_len, (const char *)data, len, ck, &wp);
    OPENSSL_cleanse(ck, sizeof(ck));
    if (n == 0)
        return backend_error(l, e, "SCRAM message too long");
    lg->am_len = scram_auth_message(lg->am, sizeof(lg->am), lg->cfb, lg->cfb_len,
                                    (const char *)data, len, fin, wp);
    send_password_message(l->out, NULL, 0, fin, n);
    return 0;
}

static int
server_md5(const struct login *l, const uint8_t *data, size_t len, struct pg_auth_err *e)
{
    struct pg_auth *a = l->a;
    char secret[PGAUTH_MD5_LEN + 1], resp[PGAUTH_MD5_LEN + 1];
    if (len != 4)
        return backend_error(l, e, "malformed md5 request");
    if (a->secret.kind == PGAUTH_MD5)
        memcpy(secret, a->secret.md5, sizeof(secret));
    else if (a->secret.kind == PGAUTH_PLAIN)
        pgauth_md5_secret(a->secret.plain, a->user, secret);
    else
        return backend_error(l, e, "the backend asks for md5, and the auth source holds a "
                                   "SCRAM secret (md5 needs the md5 hash or the password)");
    pgauth_md5_response(secret, data, resp);
    send_password_message(l->out, NULL, 0, resp, sizeof(resp));
    OPENSSL_cleanse(secret, sizeof(secret));
    return 0;
}

static int
answer(const struct login *l, uint32_t code, const uint8_t *data, size_t len,
       struct pg_auth_err *e)
{
    struct pg_auth *a = l->a;
    const char *err;

    switch (code) {
    case PGW_AUTH_SASL:
        return server_sasl(l, data, len, e);
    case PGW_AUTH_SASL_CONTINUE:
        return server_continue(l, data, len, e);
    case PGW_AUTH_SASL_FINAL:
        if (l->lg->am_len == 0 ||
            scram_check_server_final((const char *)data, len, l->lg->server_key, l->lg->am,
                                     l->lg->am_len, &err) != 0)
            return backend_error(l, e, l->lg->am_len == 0 ? "unexpected SASL final message" : err);
        return 0;
    case PGW_AUTH_MD5:
        return server_md5(l, data, len, e);
    case PGW_AUTH_CLEARTEXT:
        if (a->secret.kind != PGAUTH_PLAIN)
            return backend_error(l, e, "the backend asks for a cleartext password, and the auth "
                                       "source holds none for the user");
        send_password_message(l->out, NULL, 0, a->secret.plain, strlen(a->secret.plain) + 1);
        return 0;
    default:
        return backend_error(l, e, "the backend asks for an authentication method tandem does "
                                   "not speak");
    }
}

int
pg_auth_server(struct pg_session *s, uint32_t code, const uint8_t *data, size_t len,
               struct pg_auth_err *e)
{
    struct login l = {s->auth, &s->auth->primary, s->base.be, s->base.server.out};
    return answer(&l, code, data, len, e);
}

int
pg_auth_can_login(const struct pg_session *s)
{
    return s->auth != NULL && s->auth->step == PGA_CLIENT_DONE;
}

int
pg_auth_answer(struct pg_session *s, struct pg_auth_login *lg, const struct rt_backend *be,
               struct evbuffer *out, uint32_t code, const uint8_t *data, size_t len,
               struct pg_auth_err *e)
{
    struct login l = {s->auth, lg, be, out};
    return answer(&l, code, data, len, e);
}

/* Logged in to the primary: the client's exchange is wiped, what logs in again stays. */
void
pg_auth_logged_in(struct pg_session *s)
{
    struct pg_auth *a = s->auth;
    if (a == NULL)
        return;
    if (s->base.shadow_be == NULL) {
        pg_auth_free(s);
        return;
    }
    /* a shadow logs in (again, on each re-attach) with the same ClientKey or secret */
    OPENSSL_cleanse(&a->scram, sizeof(a->scram));
    OPENSSL_cleanse(a->cfb, sizeof(a->cfb));
    OPENSSL_cleanse(a->sf, sizeof(a->sf));
    OPENSSL_cleanse(&a->primary, sizeof(a->primary));
}

void
pg_auth_free(struct pg_session *s)
{
    if (s->auth == NULL)
        return;
    OPENSSL_cleanse(s->auth, sizeof(*s->auth));
    free(s->auth);
    s->auth = NULL;
}
