/*
 * fuzz_scram.c - libFuzzer harness for the SCRAM messages a client sends
 * tandem (client-first, client-final, SASLInitialResponse) and the secrets
 * and userlist lines an auth source holds.
 *
 * Input: one byte selecting the parser, then the message.  Every pointer a
 * parser returns must lie inside the input; a parsed message must rebuild
 * into an AuthMessage without overflow.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/scram.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define INSIDE(p, n, base, size)                                                                   \
    ((const uint8_t *)(p) >= (base) && (const uint8_t *)(p) + (n) <= (base) + (size))

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    const uint8_t *m = data + 1;
    size_t len = size - 1;
    /* an exact-size copy: a read past len is a crash under ASan */
    char *msg = malloc(len ? len : 1);
    CHECK(msg != NULL);
    if (len)
        memcpy(msg, m, len);
    const uint8_t *base = (const uint8_t *)msg;
    const char *err = NULL;
    char am[3 * SCRAM_MSG_MAX];

    switch (sel % 5) {
    case 0: {
        struct scram_client_first cf;
        if (scram_parse_client_first(msg, len, &cf, &err) == 0) {
            CHECK(INSIDE(cf.bare, cf.bare_len, base, len));
            CHECK(INSIDE(cf.nonce, cf.nonce_len, base, len));
            CHECK(cf.gs2_header_len + cf.bare_len == len);
            CHECK(cf.nonce_len > 0 && cf.nonce_len <= SCRAM_NONCE_MAX);
            char sf[SCRAM_MSG_MAX];
            const uint8_t salt[16] = {0};
            (void)scram_build_server_first(sf, sizeof(sf), cf.nonce, cf.nonce_len, "abc", 3, salt,
                                           sizeof(salt), 4096);
        } else {
            CHECK(err != NULL);
        }
        break;
    }
    case 1: {
        struct scram_client_final fin;
        if (scram_parse_client_final(msg, len, &fin, &err) == 0) {
            CHECK(INSIDE(fin.nonce, fin.nonce_len, base, len));
            CHECK(fin.without_proof == msg && fin.without_proof_len < len);
            CHECK(fin.cbind_len <= sizeof(fin.cbind));
            size_t n = scram_auth_message(am, sizeof(am), "n=,r=a", 6, "r=ab,s=AA==,i=1", 15,
                                          fin.without_proof, fin.without_proof_len);
            CHECK(n == 0 || n < sizeof(am));
            uint8_t ck[SCRAM_KEY_LEN], sk[SCRAM_KEY_LEN] = {0};
            if (n > 0)
                CHECK(scram_verify_proof(sk, am, n, fin.proof, ck) == -1);
        } else {
            CHECK(err != NULL);
        }
        break;
    }
    case 2: {
        const char *mech;
        const uint8_t *d;
        size_t dlen;
        if (scram_parse_initial_response(base, len, &mech, &d, &dlen) == 0) {
            CHECK(INSIDE(mech, strlen(mech) + 1, base, len));
            CHECK(INSIDE(d, dlen, base, len));
        }
        break;
    }
    case 3: {
        struct pgauth_secret s;
        if (pgauth_secret_parse(msg, len, &s) == 0 && s.kind == PGAUTH_SCRAM)
            CHECK(s.scram.iterations > 0 && s.scram.salt_len > 0 &&
                  s.scram.salt_len <= SCRAM_SALT_MAX);
        break;
    }
    case 4: {
        char u[64], sec[512];
        int rc = pgauth_userlist_line(msg, len, u, sizeof(u), sec, sizeof(sec));
        CHECK(rc >= -1 && rc <= 1);
        if (rc == 1)
            CHECK(strlen(u) < sizeof(u) && strlen(sec) < sizeof(sec) && u[0] != '\0');
        break;
    }
    }
    free(msg);
    return 0;
}
