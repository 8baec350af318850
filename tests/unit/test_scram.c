/*
 * test_scram.c - the SCRAM codec and keys: RFC 7677's test vector from both
 * sides, malformed messages at every truncation, auth-source secrets and
 * userlist lines.  Parsers read exact-size heap copies, so under ASan a read
 * past len is a crash.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "protocol/scram.h"

/* RFC 7677 section 3 */
#define CFB "n=user,r=rOprNGfwEbeRWgbNEkqO"
#define CF "n,," CFB
#define CNONCE "rOprNGfwEbeRWgbNEkqO"
#define NONCE "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define SF "r=" NONCE ",s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define CFWP "c=biws,r=" NONCE
#define CFIN CFWP ",p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define SFIN "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static char *
dup_exact(const char *p, size_t n)
{
    char *q = malloc(n ? n : 1);
    assert_non_null(q);
    memcpy(q, p, n);
    return q;
}

/* The RFC's keys from "pencil", as a stored secret. */
static void
rfc_secret(struct scram_secret *sec, uint8_t client_key[SCRAM_KEY_LEN])
{
    uint8_t salt[32];
    long n = scram_b64_decode("W22ZaJ0SNY7soEsUEjb6gQ==", 24, salt, sizeof(salt));
    assert_int_equal(n, 16);
    memset(sec, 0, sizeof(*sec));
    memcpy(sec->salt, salt, 16);
    sec->salt_len = 16;
    sec->iterations = 4096;
    assert_int_equal(scram_keys_from_password("pencil", salt, 16, 4096, client_key,
                                              sec->stored_key, sec->server_key),
                     0);
}

/*
 * Passwords are SASLprep-normalised before hashing, as PostgreSQL and libpq
 * do: a soft hyphen is mapped to nothing and a Roman numeral nine (U+2168)
 * to "IX" by NFKC, so both give the keys of "IX"; bytes that are not UTF-8
 * are hashed as they are, so such a password still matches PostgreSQL's.
 */
static void
test_saslprep(void **state)
{
    (void)state;
    const uint8_t salt[16] = "0123456789abcdef";
    uint8_t want[3][SCRAM_KEY_LEN], got[3][SCRAM_KEY_LEN];
    assert_int_equal(scram_keys_from_password("IX", salt, 16, 4096, want[0], want[1], want[2]), 0);
    const char *same[] = {"I\xc2\xadX", "\xe2\x85\xa8"};
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(scram_keys_from_password(same[i], salt, 16, 4096, got[0], got[1], got[2]),
                         0);
        assert_memory_equal(got, want, sizeof(want));
    }
    /* not UTF-8: the raw bytes, which differ from any other password's keys */
    assert_int_equal(scram_keys_from_password("I\xffX", salt, 16, 4096, got[0], got[1], got[2]), 0);
    assert_memory_not_equal(got[0], want[0], SCRAM_KEY_LEN);
}

static void
test_rfc7677_server_side(void **state)
{
    (void)state;
    struct scram_secret sec;
    uint8_t ck[SCRAM_KEY_LEN], recovered[SCRAM_KEY_LEN];
    rfc_secret(&sec, ck);

    struct scram_client_first cf;
    const char *err;
    char *m = dup_exact(CF, strlen(CF));
    assert_int_equal(scram_parse_client_first(m, strlen(CF), &cf, &err), 0);
    assert_int_equal(cf.cbind_flag, 'n');
    assert_int_equal(cf.nonce_len, strlen(CNONCE));
    assert_memory_equal(cf.nonce, CNONCE, cf.nonce_len);
    assert_int_equal(cf.bare_len, strlen(CFB));

    const uint8_t *salt = sec.salt;
    char sf[SCRAM_MSG_MAX];
    const char *snonce = NONCE + strlen(CNONCE);
    size_t sflen = scram_build_server_first(sf, sizeof(sf), cf.nonce, cf.nonce_len, snonce,
                                            strlen(snonce), salt, sec.salt_len, sec.iterations);
    assert_string_equal(sf, SF);
    assert_int_equal(sflen, strlen(SF));

    struct scram_client_final fin;
    char *f = dup_exact(CFIN, strlen(CFIN));
    assert_int_equal(scram_parse_client_final(f, strlen(CFIN), &fin, &err), 0);
    assert_int_equal(fin.cbind_len, 3);
    assert_memory_equal(fin.cbind, "n,,", 3);
    assert_int_equal(fin.without_proof_len, strlen(CFWP));

    char am[3 * SCRAM_MSG_MAX];
    size_t amlen = scram_auth_message(am, sizeof(am), cf.bare, cf.bare_len, sf, sflen,
                                      fin.without_proof, fin.without_proof_len);
    assert_int_equal(scram_verify_proof(sec.stored_key, am, amlen, fin.proof, recovered), 0);
    /* the ClientKey recovered from the proof is the password's */
    assert_memory_equal(recovered, ck, SCRAM_KEY_LEN);

    char out[SCRAM_MSG_MAX];
    assert_int_not_equal(scram_build_server_final(out, sizeof(out), sec.server_key, am, amlen), 0);
    assert_string_equal(out, SFIN);

    /* one bit off in the proof: refused */
    fin.proof[5] ^= 1;
    assert_int_equal(scram_verify_proof(sec.stored_key, am, amlen, fin.proof, recovered), -1);
    free(m);
    free(f);
}

static void
test_rfc7677_client_side(void **state)
{
    (void)state;
    struct scram_secret sec;
    uint8_t ck[SCRAM_KEY_LEN];
    rfc_secret(&sec, ck);

    struct scram_server_first sf;
    const char *err;
    char *m = dup_exact(SF, strlen(SF));
    assert_int_equal(scram_parse_server_first(m, strlen(SF), CNONCE, strlen(CNONCE), &sf, &err), 0);
    assert_int_equal(sf.iterations, 4096);
    assert_int_equal(sf.salt_len, 16);
    assert_memory_equal(sf.salt, sec.salt, 16);
    /* a server nonce that does not extend ours is refused */
    assert_int_equal(scram_parse_server_first(m, strlen(SF), "xOpr", 4, &sf, &err), -1);
    assert_int_equal(scram_parse_server_first(m, strlen(SF), CNONCE, strlen(CNONCE), &sf, &err), 0);

    char fin[SCRAM_MSG_MAX];
    size_t wp = 0;
    size_t n = scram_build_client_final(fin, sizeof(fin), sf.nonce, sf.nonce_len, CFB, strlen(CFB),
                                        SF, strlen(SF), ck, &wp);
    assert_int_equal(n, strlen(CFIN));
    assert_string_equal(fin, CFIN);
    assert_int_equal(wp, strlen(CFWP));

    char am[3 * SCRAM_MSG_MAX];
    size_t amlen = scram_auth_message(am, sizeof(am), CFB, strlen(CFB), SF, strlen(SF), CFWP,
                                      strlen(CFWP));
    assert_int_equal(scram_check_server_final(SFIN, strlen(SFIN), sec.server_key, am, amlen, &err), 0);
    char bad[] = SFIN;
    bad[5] = bad[5] == 'A' ? 'B' : 'A';
    assert_int_equal(scram_check_server_final(bad, strlen(bad), sec.server_key, am, amlen, &err), -1);
    assert_int_equal(scram_check_server_final("e=invalid-proof", 15, sec.server_key, am, amlen, &err),
                     -1);
    free(m);
}

/* Every truncation of valid messages either parses or fails: never reads past the end. */
static void
test_truncations(void **state)
{
    (void)state;
    static const char *const firsts[] = {CF, "p=tls-server-end-point,,n=,r=abc", "y,,n=,r=x,ext=1"};
    const char *err;
    for (size_t k = 0; k < sizeof(firsts) / sizeof(firsts[0]); k++) {
        size_t len = strlen(firsts[k]);
        for (size_t i = 0; i <= len; i++) {
            struct scram_client_first cf;
            char *m = dup_exact(firsts[k], i);
            int rc = scram_parse_client_first(m, i, &cf, &err);
            if (i == len)
                assert_int_equal(rc, 0);
            free(m);
        }
    }
    size_t len = strlen(CFIN);
    for (size_t i = 0; i < len; i++) {
        struct scram_client_final fin;
        char *m = dup_exact(CFIN, i);
        assert_int_equal(scram_parse_client_final(m, i, &fin, &err), -1);
        free(m);
    }
    len = strlen(SF);
    for (size_t i = 0; i <= len; i++) {
        struct scram_server_first sf;
        char *m = dup_exact(SF, i);
        scram_parse_server_first(m, i, CNONCE, strlen(CNONCE), &sf, &err);
        free(m);
    }
}

static void
test_client_first_refusals(void **state)
{
    (void)state;
    struct scram_client_first cf;
    const char *err;
    assert_int_equal(scram_parse_client_first("n,a=bob,n=,r=x", 14, &cf, &err), -1);
    assert_string_equal(err, "client uses authorization identity, but it is not supported");
    assert_int_equal(scram_parse_client_first("x,,n=,r=x", 9, &cf, &err), -1);
    assert_int_equal(scram_parse_client_first("n,,n=,r=", 8, &cf, &err), -1);
    assert_int_equal(scram_parse_client_first("n,,m=1,n=,r=x", 13, &cf, &err), -1);
    assert_int_equal(scram_parse_client_first("n,,n=,r=a\0b", 11, &cf, &err), -1);
    assert_int_equal(scram_parse_client_first("p=tls-server-end-point,,n=,r=abc", 32, &cf, &err), 0);
    assert_int_equal(cf.cbind_flag, 'p');
    assert_int_equal(cf.cbind_name_len, strlen(SCRAM_CBIND_NAME));
    assert_int_equal(cf.gs2_header_len, strlen("p=tls-server-end-point,,"));
}

static void
test_initial_response(void **state)
{
    (void)state;
    static const uint8_t msg[] = "SCRAM-SHA-256\0\0\0\0\x05n,,ab";
    const char *mech;
    const uint8_t *data;
    size_t dlen;
    assert_int_equal(scram_parse_initial_response(msg, sizeof(msg) - 1, &mech, &data, &dlen), 0);
    assert_string_equal(mech, "SCRAM-SHA-256");
    assert_int_equal(dlen, 5);
    assert_int_equal(scram_parse_initial_response(msg, sizeof(msg) - 2, &mech, &data, &dlen), -1);
    assert_int_equal(scram_parse_initial_response(msg, 13, &mech, &data, &dlen), -1);
}

static void
test_secrets(void **state)
{
    (void)state;
    struct pgauth_secret s;
    /* PostgreSQL's own verifier for "scramuser-pw" is checked end to end in the
     * integration tests; here the format */
    static const char v[] = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$"
                            "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:"
                            "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
    assert_int_equal(pgauth_secret_parse(v, strlen(v), &s), 0);
    assert_int_equal(s.kind, PGAUTH_SCRAM);
    assert_int_equal(s.scram.iterations, 4096);
    assert_int_equal(s.scram.salt_len, 16);
    uint8_t ck[32], stored[32], server[32];
    assert_int_equal(scram_keys_from_password("pencil", s.scram.salt, 16, 4096, ck, stored, server), 0);
    assert_memory_equal(stored, s.scram.stored_key, 32);
    assert_memory_equal(server, s.scram.server_key, 32);

    /* a truncated verifier is refused, never taken as a password */
    for (size_t i = 6; i < strlen(v); i++) {
        char *m = dup_exact(v, i);
        assert_int_equal(pgauth_secret_parse(m, i, &s), -1);
        free(m);
    }
    assert_int_equal(pgauth_secret_parse("md5aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 35, &s), 0);
    assert_int_equal(s.kind, PGAUTH_MD5);
    assert_int_equal(pgauth_secret_parse("hunter2", 7, &s), 0);
    assert_int_equal(s.kind, PGAUTH_PLAIN);
    assert_string_equal(s.plain, "hunter2");
    assert_int_equal(pgauth_secret_parse("", 0, &s), -1);

    /* PostgreSQL: "md5" + md5(password || user) */
    char md5[PGAUTH_MD5_LEN + 1], resp[PGAUTH_MD5_LEN + 1];
    pgauth_md5_secret("foo", "bar", md5);
    assert_string_equal(md5, "md53858f62230ac3c915f300c664312c63f");
    const uint8_t salt[4] = {1, 2, 3, 4};
    pgauth_md5_response(md5, salt, resp);
    assert_int_equal(strlen(resp), 35);
    assert_memory_equal(resp, "md5", 3);
}

static void
test_userlist(void **state)
{
    (void)state;
    char u[64], sec[128];
    assert_int_equal(pgauth_userlist_line("\"bob\" \"pw\"", 10, u, sizeof(u), sec, sizeof(sec)), 1);
    assert_string_equal(u, "bob");
    assert_string_equal(sec, "pw");
    assert_int_equal(pgauth_userlist_line("\"a\"\"b\" \"x\"\"\" \"extra\"", 20, u, sizeof(u), sec,
                                          sizeof(sec)),
                     1);
    assert_string_equal(u, "a\"b");
    assert_string_equal(sec, "x\"");
    assert_int_equal(pgauth_userlist_line("  ; comment", 11, u, sizeof(u), sec, sizeof(sec)), 0);
    assert_int_equal(pgauth_userlist_line("", 0, u, sizeof(u), sec, sizeof(sec)), 0);
    assert_int_equal(pgauth_userlist_line("\"bob\"", 5, u, sizeof(u), sec, sizeof(sec)), -1);
    assert_int_equal(pgauth_userlist_line("\"bob\" \"pw", 9, u, sizeof(u), sec, sizeof(sec)), -1);
    assert_int_equal(pgauth_userlist_line("bob pw", 6, u, sizeof(u), sec, sizeof(sec)), -1);
    assert_int_equal(pgauth_userlist_line("\"bob\" \"pw\"", 10, u, 3, sec, sizeof(sec)), -1);
}

static void
test_b64(void **state)
{
    (void)state;
    char out[16];
    uint8_t back[16];
    assert_int_equal(scram_b64_encode((const uint8_t *)"ab", 2, out, sizeof(out)), 4);
    assert_string_equal(out, "YWI=");
    assert_int_equal(scram_b64_decode("YWI=", 4, back, sizeof(back)), 2);
    assert_int_equal(scram_b64_decode("YW=I", 4, back, sizeof(back)), -1);
    assert_int_equal(scram_b64_decode("YWI", 3, back, sizeof(back)), -1);
    assert_int_equal(scram_b64_decode("YWJj", 4, back, 2), -1);
    assert_int_equal(scram_b64_encode((const uint8_t *)"abc", 3, out, 4), 0);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rfc7677_server_side), cmocka_unit_test(test_rfc7677_client_side),
        cmocka_unit_test(test_saslprep),
        cmocka_unit_test(test_truncations),         cmocka_unit_test(test_client_first_refusals),
        cmocka_unit_test(test_initial_response),    cmocka_unit_test(test_secrets),
        cmocka_unit_test(test_userlist),            cmocka_unit_test(test_b64),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
