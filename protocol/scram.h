/*
 * scram.h - SCRAM-SHA-256 (RFC 5802, RFC 7677) as PostgreSQL speaks it, and
 * the secrets an auth source holds (pg_authid / PgBouncer userlist format).
 *
 * Pure: no socket, no log, no malloc.  Parsers take the bytes the peer sent
 * and a length, and point into them; builders write into a caller's buffer
 * and return the length written, 0 when it does not fit.  The crypto is
 * OpenSSL's (HMAC, SHA-256, PKCS5_PBKDF2_HMAC); nonces come from the caller
 * (RAND_bytes in the session), so every function here is deterministic.
 *
 * Both sides of the exchange are here, because tandem is both: the server
 * to its client, the client to its backends.
 *
 *   client                         tandem (server side)
 *   SASLInitialResponse  ------->  scram_parse_client_first
 *                        <-------  scram_build_server_first  (r=cnonce+snonce,s=,i=)
 *   SASLResponse         ------->  scram_parse_client_final, scram_verify_proof
 *                                    -> ClientKey = ClientProof XOR ClientSignature
 *                        <-------  scram_build_server_final   (v=ServerSignature)
 *
 *   tandem (client side)           backend
 *   scram_build_client_first ----> (n,,n=,r=nonce)
 *   scram_parse_server_first <---- r=, s=, i=
 *   scram_build_client_final ----> c=biws,r=,p=  (the proof from ClientKey)
 *   scram_check_server_final <---- v=  (checked with ServerKey)
 */
#ifndef TANDEM_SCRAM_H
#define TANDEM_SCRAM_H

#include <stddef.h>
#include <stdint.h>

#define SCRAM_KEY_LEN 32          /* SHA-256 */
#define SCRAM_SALT_MAX 64         /* decoded salt bytes accepted (PostgreSQL uses 16) */
#define SCRAM_NONCE_MAX 128       /* characters of one side's nonce */
#define SCRAM_CBIND_MAX 64        /* channel-binding data: a SHA-512 digest at most */
#define SCRAM_MSG_MAX 1024        /* any one SCRAM message tandem builds or accepts */
#define SCRAM_MECH "SCRAM-SHA-256"
#define SCRAM_MECH_PLUS "SCRAM-SHA-256-PLUS"
#define SCRAM_CBIND_NAME "tls-server-end-point"

/* A stored SCRAM verifier: "SCRAM-SHA-256$<iter>:<salt b64>$<StoredKey b64>:<ServerKey b64>". */
struct scram_secret {
    uint32_t iterations;
    uint8_t salt[SCRAM_SALT_MAX];
    size_t salt_len;
    uint8_t stored_key[SCRAM_KEY_LEN];
    uint8_t server_key[SCRAM_KEY_LEN];
};

/* What an auth source knows of a user. */
enum pgauth_kind {
    PGAUTH_SCRAM, /* a SCRAM verifier: SCRAM only */
    PGAUTH_MD5,   /* "md5" + md5(password || user): md5 only */
    PGAUTH_PLAIN, /* the password itself: anything */
};

#define PGAUTH_PASSWORD_MAX 256
#define PGAUTH_MD5_LEN 35 /* "md5" + 32 hex digits */

struct pgauth_secret {
    enum pgauth_kind kind;
    struct scram_secret scram;               /* PGAUTH_SCRAM */
    char md5[PGAUTH_MD5_LEN + 1];            /* PGAUTH_MD5 */
    char plain[PGAUTH_PASSWORD_MAX + 1];     /* PGAUTH_PLAIN */
};

/* 0 and *out filled, or -1 when text is no valid SCRAM-SHA-256 verifier. */
int scram_secret_parse(const char *text, size_t len, struct scram_secret *out);

/*
 * pgauth_secret_parse - a pg_authid.rolpassword value or a userlist's
 * second field: a SCRAM verifier, an md5 hash, else a plain password.
 * An empty text, or one that starts like a verifier but does not parse,
 * is refused (-1): a typo must not become a password.
 */
int pgauth_secret_parse(const char *text, size_t len, struct pgauth_secret *out);

/*
 * pgauth_userlist_line - one line of a userlist file: `"user" "secret"`
 * (a doubled "" inside quotes is one quote; more fields are ignored).
 * 1 with user and secret written NUL-terminated, 0 for a blank or `;`/`#`
 * comment line, -1 when malformed or a field does not fit.
 */
int pgauth_userlist_line(const char *line, size_t len, char *user, size_t user_cap, char *secret,
                         size_t secret_cap);

/* The SCRAM keys of a password, SASLprep-normalised as PostgreSQL does (libpgcommon's). */
int scram_keys_from_password(const char *password, const uint8_t *salt, size_t salt_len,
                             uint32_t iterations, uint8_t client_key[SCRAM_KEY_LEN],
                             uint8_t stored_key[SCRAM_KEY_LEN], uint8_t server_key[SCRAM_KEY_LEN]);

/* Base64 (RFC 4648, padded).  Encode: length written incl. NUL room, 0 when it does not fit. */
size_t scram_b64_encode(const uint8_t *in, size_t len, char *out, size_t cap);
/* Decode: bytes written, or -1 when not canonical base64 or too long for cap. */
long scram_b64_decode(const char *in, size_t len, uint8_t *out, size_t cap);

/* ---- server side ---------------------------------------------------- */

/*
 * The body of a SASLInitialResponse: mechanism name, int32 length (-1: no
 * data), data.  Points into body; -1 when malformed.
 */
int scram_parse_initial_response(const uint8_t *body, size_t len, const char **mech,
                                 const uint8_t **data, size_t *data_len);

struct scram_client_first {
    char cbind_flag;           /* 'n' none, 'y' client could but thinks we can't, 'p' bound */
    const char *cbind_name;    /* 'p': the channel-binding type (not NUL-terminated) */
    size_t cbind_name_len;
    const char *gs2_header;    /* "n,," / "y,," / "p=tls-server-end-point,," */
    size_t gs2_header_len;
    const char *bare;          /* client-first-message-bare, for the AuthMessage */
    size_t bare_len;
    const char *nonce;
    size_t nonce_len;
};

/* 0, or -1 with *err a short reason for the client (never the bytes sent). */
int scram_parse_client_first(const char *msg, size_t len, struct scram_client_first *out,
                             const char **err);

struct scram_client_final {
    uint8_t cbind[SCRAM_CBIND_MAX + 64]; /* c= decoded: gs2 header then binding data */
    size_t cbind_len;
    const char *nonce;
    size_t nonce_len;
    const char *without_proof;           /* client-final-message-without-proof */
    size_t without_proof_len;
    uint8_t proof[SCRAM_KEY_LEN];
};

int scram_parse_client_final(const char *msg, size_t len, struct scram_client_final *out,
                             const char **err);

/* "r=<client nonce><server nonce>,s=<salt>,i=<iterations>" */
size_t scram_build_server_first(char *out, size_t cap, const char *client_nonce, size_t cn_len,
                                const char *server_nonce, size_t sn_len, const uint8_t *salt,
                                size_t salt_len, uint32_t iterations);

/*
 * scram_auth_message - client-first-bare "," server-first "," client-final-without-proof.
 * Length written, 0 when it does not fit.
 */
size_t scram_auth_message(char *out, size_t cap, const char *client_first_bare, size_t cfb_len,
                          const char *server_first, size_t sf_len, const char *cf_without_proof,
                          size_t cfwp_len);

/*
 * scram_verify_proof - ClientKey = proof XOR HMAC(StoredKey, AuthMessage);
 * 0 and client_key written when H(ClientKey) == StoredKey, -1 otherwise.
 */
int scram_verify_proof(const uint8_t stored_key[SCRAM_KEY_LEN], const char *auth_message,
                       size_t am_len, const uint8_t proof[SCRAM_KEY_LEN],
                       uint8_t client_key[SCRAM_KEY_LEN]);

/* "v=<HMAC(ServerKey, AuthMessage)>" */
size_t scram_build_server_final(char *out, size_t cap, const uint8_t server_key[SCRAM_KEY_LEN],
                                const char *auth_message, size_t am_len);

/* ---- client side ---------------------------------------------------- */

/* "n,,n=,r=<nonce>" (PostgreSQL takes the user from the startup packet). */
size_t scram_build_client_first(char *out, size_t cap, const char *nonce, size_t nonce_len);

struct scram_server_first {
    const char *nonce; /* the combined nonce */
    size_t nonce_len;
    uint8_t salt[SCRAM_SALT_MAX];
    size_t salt_len;
    uint32_t iterations;
};

/* 0, or -1 with *err; our_nonce must be the nonce's prefix. */
int scram_parse_server_first(const char *msg, size_t len, const char *our_nonce, size_t on_len,
                             struct scram_server_first *out, const char **err);

/*
 * "c=biws,r=<nonce>,p=<proof>", the proof made from client_key.  The part
 * without the proof (for the AuthMessage) is its first *without_proof_len
 * bytes.
 */
size_t scram_build_client_final(char *out, size_t cap, const char *nonce, size_t nonce_len,
                                const char *client_first_bare, size_t cfb_len,
                                const char *server_first, size_t sf_len,
                                const uint8_t client_key[SCRAM_KEY_LEN], size_t *without_proof_len);

/* The server's final message: 0 when v= is HMAC(server_key, AuthMessage), -1 otherwise. */
int scram_check_server_final(const char *msg, size_t len, const uint8_t server_key[SCRAM_KEY_LEN],
                             const char *auth_message, size_t am_len, const char **err);

/* ---- md5 ------------------------------------------------------------ */

/* "md5" + md5(password || user) into out[PGAUTH_MD5_LEN + 1]. */
void pgauth_md5_secret(const char *password, const char *user, char out[PGAUTH_MD5_LEN + 1]);
/* The response to AuthenticationMD5Password: "md5" + md5(hex of secret || salt). */
void pgauth_md5_response(const char secret[PGAUTH_MD5_LEN + 1], const uint8_t salt[4],
                         char out[PGAUTH_MD5_LEN + 1]);

#endif /* TANDEM_SCRAM_H */
