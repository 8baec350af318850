/*
 * test_pgw.c - the PostgreSQL wire codec, case by case and split at every
 * byte.
 *
 * Every parser call goes through an exact-size heap copy of its input, so
 * under ASan a read one byte past len is a crash, not luck.  Builders write
 * into buffers followed by canary bytes that must survive.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "protocol/pgw.h"

/* A byte string literal and its length, NULs inside included. */
#define LIT(s) (const uint8_t *)(s), (sizeof(s) - 1)

#define CANARY 0xa5
#define CANARY_LEN 32

static uint8_t *
dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n ? n : 1);
    assert_non_null(q);
    if (n)
        memcpy(q, p, n);
    return q;
}

static void
put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* An untyped packet with a given (maybe lying) length field: len, code, payload. */
static size_t
mk_raw(uint8_t *out, uint32_t wire_len, uint32_t code, const uint8_t *payload, size_t plen)
{
    put32(out, wire_len);
    put32(out + 4, code);
    if (plen)
        memcpy(out + 8, payload, plen);
    return 8 + plen;
}

/* An untyped packet with its true length. */
static size_t
mk_untyped(uint8_t *out, uint32_t code, const uint8_t *payload, size_t plen)
{
    return mk_raw(out, (uint32_t)(8 + plen), code, payload, plen);
}

/* A typed message: type, length, body. */
static size_t
mk_typed(uint8_t *out, uint8_t type, const uint8_t *body, size_t blen)
{
    out[0] = type;
    put32(out + 1, (uint32_t)(blen + 4));
    if (blen)
        memcpy(out + 5, body, blen);
    return 5 + blen;
}

/* ------------------------------------------------------------------ */
/* Startup packets.                                                   */

static enum pgw_status
startup_on_copy(const uint8_t *buf, size_t len, size_t *used, struct pgw_startup *st,
                const char **err)
{
    uint8_t *copy = dup_exact(buf, len);
    enum pgw_status r = pgw_startup_parse(copy, len, used, st, err);
    free(copy);
    return r;
}

/*
 * A valid packet: every proper prefix is NEED_MORE, the whole is OK, and
 * trailing bytes (the next message) are left alone.  *st is the result of
 * parsing buf itself, so its pointers stay valid for the caller.
 */
static void
startup_split_ok(const uint8_t *buf, size_t n, struct pgw_startup *st)
{
    size_t used = 0;
    const char *err = NULL;
    for (size_t k = 0; k < n; k++) {
        enum pgw_status r = startup_on_copy(buf, k, &used, st, &err);
        if (r != PGW_NEED_MORE)
            fail_msg("prefix %zu of %zu: status %d (%s)", k, n, r, err ? err : "");
    }
    uint8_t more[PGW_STARTUP_MAX_LEN + 8];
    memcpy(more, buf, n);
    memcpy(more + n, "Qxyz", 4);
    assert_int_equal(startup_on_copy(more, n + 4, &used, st, &err), PGW_OK);
    assert_int_equal(used, n);
    assert_int_equal(pgw_startup_parse(buf, n, &used, st, &err), PGW_OK);
    assert_int_equal(used, n);
    assert_null(err);
}

/*
 * An invalid packet: prefixes are NEED_MORE until the first that shows the
 * fault, ERROR from then on; the whole is ERROR with message want.
 * first_bad: the shortest prefix that must already be an error.
 */
static void
startup_split_bad(const uint8_t *buf, size_t n, size_t first_bad, const char *want)
{
    struct pgw_startup st;
    size_t used = 0;
    const char *err = NULL;
    for (size_t k = 0; k <= n; k++) {
        err = NULL;
        enum pgw_status r = startup_on_copy(buf, k, &used, &st, &err);
        if (k < first_bad && r != PGW_NEED_MORE)
            fail_msg("prefix %zu: status %d, want NEED_MORE", k, r);
        if (k >= first_bad && r != PGW_ERROR)
            fail_msg("prefix %zu: status %d, want ERROR", k, r);
        if (r == PGW_ERROR) {
            assert_non_null(err);
            assert_string_equal(err, want);
        }
    }
}

static void
test_startup_message(void **state)
{
    (void)state;
    uint8_t buf[256];
    struct pgw_startup st;
    size_t n = mk_untyped(buf, PGW_PROTO_30,
                          LIT("user\0alice\0database\0shop\0application_name\0psql\0\0"));
    startup_split_ok(buf, n, &st);
    assert_int_equal(st.kind, PGW_STARTUP_MESSAGE);
    assert_int_equal(st.version, 0x00030000);
    assert_int_equal(st.nparams, 3);
    assert_string_equal(st.params[0].name, "user");
    assert_string_equal(st.params[0].value, "alice");
    assert_string_equal(pgw_startup_param(&st, "database"), "shop");
    assert_string_equal(pgw_startup_param(&st, "application_name"), "psql");
    assert_null(pgw_startup_param(&st, "options"));
    assert_null(pgw_startup_param(&st, "use"));
    /* The pointers are into buf. */
    assert_true((const uint8_t *)st.params[0].name >= buf &&
                (const uint8_t *)st.params[0].name < buf + n);

    /* Minimal. */
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0\0"));
    startup_split_ok(buf, n, &st);
    assert_int_equal(st.nparams, 1);
    assert_string_equal(pgw_startup_param(&st, "user"), "u");

    /* Empty value; a later duplicate wins, as in the server. */
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0a\0options\0\0user\0b\0\0"));
    startup_split_ok(buf, n, &st);
    assert_int_equal(st.nparams, 3);
    assert_string_equal(pgw_startup_param(&st, "options"), "");
    assert_string_equal(pgw_startup_param(&st, "user"), "b");

    /* Protocol 3.2 with a protocol option: accepted, left to the caller. */
    n = mk_untyped(buf, 0x00030002, LIT("user\0u\0_pq_.compression\0on\0\0"));
    startup_split_ok(buf, n, &st);
    assert_int_equal(PGW_PROTO_MAJOR(st.version), 3);
    assert_int_equal(PGW_PROTO_MINOR(st.version), 2);
    assert_string_equal(pgw_startup_param(&st, "_pq_.compression"), "on");
}

static void
test_startup_limits(void **state)
{
    (void)state;
    static uint8_t buf[PGW_STARTUP_MAX_LEN + 64];
    uint8_t payload[PGW_STARTUP_MAX_LEN];
    struct pgw_startup st;
    size_t p = 0;

    /* Exactly PGW_STARTUP_MAX_PARAMS pairs. */
    for (int i = 0; i < PGW_STARTUP_MAX_PARAMS; i++) {
        const char *pair = i == 0 ? "user\0u" : "k\0v";
        size_t pl = i == 0 ? 7 : 4;
        memcpy(payload + p, pair, pl);
        p += pl;
    }
    payload[p++] = 0;
    size_t n = mk_untyped(buf, PGW_PROTO_30, payload, p);
    startup_split_ok(buf, n, &st);
    assert_int_equal(st.nparams, PGW_STARTUP_MAX_PARAMS);

    /* One more pair is refused. */
    memcpy(payload + p - 1, "k\0v\0", 5);
    n = mk_untyped(buf, PGW_PROTO_30, payload, p + 4);
    startup_split_bad(buf, n, n, "too many parameters in startup packet");

    /* Exactly PGW_STARTUP_MAX_LEN bytes: fine. */
    size_t vlen = PGW_STARTUP_MAX_LEN - 8 - 5 - 1 - 1;
    memcpy(payload, "user\0", 5);
    memset(payload + 5, 'x', vlen);
    payload[5 + vlen] = 0;
    payload[5 + vlen + 1] = 0;
    n = mk_untyped(buf, PGW_PROTO_30, payload, 5 + vlen + 2);
    assert_int_equal(n, PGW_STARTUP_MAX_LEN);
    startup_split_ok(buf, n, &st);
    assert_int_equal(strlen(pgw_startup_param(&st, "user")), vlen);

    /* One byte more: refused as soon as the length is readable. */
    memmove(payload + 6, payload + 5, vlen + 2);
    payload[5] = 'x';
    n = mk_untyped(buf, PGW_PROTO_30, payload, 5 + vlen + 3);
    startup_split_bad(buf, n, 4, "invalid length of startup packet");
}

static void
test_startup_special(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct pgw_startup st;

    size_t n = mk_untyped(buf, PGW_CODE_SSL, NULL, 0);
    startup_split_ok(buf, n, &st);
    assert_int_equal(st.kind, PGW_STARTUP_SSL);
    assert_int_equal(st.nparams, 0);
    assert_null(pgw_startup_param(&st, "user"));

    n = mk_untyped(buf, PGW_CODE_GSSENC, NULL, 0);
    startup_split_ok(buf, n, &st);
    assert_int_equal(st.kind, PGW_STARTUP_GSSENC);

    n = mk_untyped(buf, PGW_CODE_CANCEL, LIT("\x00\x00\x30\x39\xde\xad\xbe\xef"));
    startup_split_ok(buf, n, &st);
    assert_int_equal(st.kind, PGW_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, 12345);
    assert_int_equal(st.cancel_key, 0xdeadbeef);
    assert_int_equal(st.nparams, 0);
}

static void
test_startup_invalid(void **state)
{
    (void)state;
    uint8_t buf[256];
    size_t n;

    /* Lengths out of range: an error once the 4 length bytes are in. */
    static const uint32_t bad_lens[] = {0,          3,         4, 7, PGW_STARTUP_MAX_LEN + 1,
                                        0x7fffffff, 0xffffffff};
    for (size_t i = 0; i < sizeof(bad_lens) / sizeof(bad_lens[0]); i++) {
        n = mk_raw(buf, bad_lens[i], PGW_PROTO_30, LIT("user\0u\0\0"));
        startup_split_bad(buf, n, 4, "invalid length of startup packet");
    }

    /* Other protocols: an error once the code is in. */
    n = mk_untyped(buf, 0x00020000, LIT("user\0u\0\0"));
    startup_split_bad(buf, n, 8, "unsupported frontend protocol");
    n = mk_untyped(buf, 0x00040000, LIT("user\0u\0\0"));
    startup_split_bad(buf, n, 8, "unsupported frontend protocol");
    n = mk_untyped(buf, 1234u << 16 | 5681, NULL, 0);
    startup_split_bad(buf, n, 8, "unsupported frontend protocol");

    /* Special codes with the wrong length. */
    n = mk_raw(buf, 12, PGW_CODE_CANCEL, LIT("\0\0\0\1"));
    startup_split_bad(buf, n, 8, "invalid length of cancel request");
    n = mk_raw(buf, 20, PGW_CODE_CANCEL, LIT("\0\0\0\1\0\0\0\2\0\0\0\3"));
    startup_split_bad(buf, n, 8, "invalid length of cancel request");
    n = mk_raw(buf, 12, PGW_CODE_SSL, LIT("\0\0\0\0"));
    startup_split_bad(buf, n, 8, "invalid length of encryption request");
    n = mk_raw(buf, 9, PGW_CODE_GSSENC, LIT("\0"));
    startup_split_bad(buf, n, 8, "invalid length of encryption request");

    /* Layout faults: only visible with the whole packet. */
    static const char layout[] = "invalid startup packet layout: expected terminator as last byte";
    n = mk_untyped(buf, PGW_PROTO_30, NULL, 0); /* no list at all */
    startup_split_bad(buf, n, n, layout);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0")); /* no terminator */
    startup_split_bad(buf, n, n, layout);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0\0x")); /* bytes after it */
    startup_split_bad(buf, n, n, layout);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0\0\0"));
    startup_split_bad(buf, n, n, layout);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0abc")); /* name not ended */
    startup_split_bad(buf, n, n, layout);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0db\0")); /* no value */
    startup_split_bad(buf, n, n, "invalid startup packet layout: missing parameter value");
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0db\0xy")); /* value not ended */
    startup_split_bad(buf, n, n, "invalid startup packet layout: missing parameter value");
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user")); /* name not ended */
    startup_split_bad(buf, n, n, layout);

    /* No user, or an empty one. */
    static const char nouser[] = "no PostgreSQL user name specified in startup packet";
    n = mk_untyped(buf, PGW_PROTO_30, LIT("database\0d\0\0"));
    startup_split_bad(buf, n, n, nouser);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0\0\0"));
    startup_split_bad(buf, n, n, nouser);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("\0"));
    startup_split_bad(buf, n, n, nouser);
    n = mk_untyped(buf, PGW_PROTO_30, LIT("user\0u\0user\0\0\0")); /* last one wins */
    startup_split_bad(buf, n, n, nouser);
}

/* ------------------------------------------------------------------ */
/* Headers and framing.                                               */

/*
 * Frame one message off the front of buf: NEED_MORE until the header and the
 * whole body are in.
 */
static enum pgw_status
frame(const uint8_t *buf, size_t len, uint32_t max_len, struct pgw_header *h, const char **err)
{
    uint8_t *copy = dup_exact(buf, len);
    enum pgw_status r = pgw_header_parse(copy, len, max_len, h, err);
    free(copy);
    if (r == PGW_OK && pgw_header_total(h) > len)
        return PGW_NEED_MORE;
    return r;
}

/* A valid typed message: every proper prefix is NEED_MORE, the whole OK. */
static void
frame_split_ok(const uint8_t *msg, size_t n, uint8_t type)
{
    struct pgw_header h;
    const char *err = NULL;
    for (size_t k = 0; k < n; k++) {
        enum pgw_status r = frame(msg, k, 1u << 20, &h, &err);
        if (r != PGW_NEED_MORE)
            fail_msg("prefix %zu of %zu: status %d", k, n, r);
    }
    assert_int_equal(frame(msg, n, 1u << 20, &h, &err), PGW_OK);
    assert_int_equal(h.type, type);
    assert_int_equal(pgw_header_total(&h), n);
}

static void
test_header(void **state)
{
    (void)state;
    uint8_t buf[64];
    struct pgw_header h;
    const char *err;

    /* An empty body (length 4) is a whole message. */
    size_t n = mk_typed(buf, 'S', NULL, 0);
    frame_split_ok(buf, n, 'S');
    assert_int_equal(pgw_header_parse(buf, n, 4, &h, &err), PGW_OK);
    assert_int_equal(h.len, 4);
    assert_int_equal(pgw_header_total(&h), 5);

    n = mk_typed(buf, 'Q', LIT("select 1\0"));
    frame_split_ok(buf, n, 'Q');

    /* A header is enough: the body is the caller's to wait for. */
    put32(buf + 1, 1000);
    assert_int_equal(pgw_header_parse(buf, 5, 1000, &h, &err), PGW_OK);
    assert_int_equal(h.len, 1000);
    assert_int_equal(pgw_header_total(&h), 1001);

    /* max_len is inclusive. */
    err = "x";
    assert_int_equal(pgw_header_parse(buf, 5, 999, &h, &err), PGW_ERROR);
    assert_string_equal(err, "message too large");
    put32(buf + 1, 0xffffffff);
    assert_int_equal(pgw_header_parse(buf, 5, 0xfffffffe, &h, &err), PGW_ERROR);
    assert_string_equal(err, "message too large");
    assert_int_equal(pgw_header_parse(buf, 5, 0xffffffff, &h, &err), PGW_OK);
    assert_int_equal(pgw_header_total(&h), (size_t)0xffffffff + 1);

    static const uint32_t small[] = {0, 1, 3};
    for (size_t i = 0; i < 3; i++) {
        put32(buf + 1, small[i]);
        for (size_t k = 0; k < 5; k++)
            assert_int_equal(frame(buf, k, 1u << 20, &h, &err), PGW_NEED_MORE);
        assert_int_equal(frame(buf, 5, 1u << 20, &h, &err), PGW_ERROR);
        assert_string_equal(err, "invalid message length");
    }
    /* err may be NULL. */
    assert_int_equal(pgw_header_parse(buf, 5, 100, &h, NULL), PGW_ERROR);
}

static void
test_types(void **state)
{
    (void)state;
    static const char fe[] = "BCcdDEfFHpPQSX";
    static const char be[] = "123AcCdDEGHIKnNRsStTVWZv";
    for (int t = 0; t < 256; t++) {
        int in_fe = t != 0 && memchr(fe, t, sizeof(fe) - 1) != NULL;
        int in_be = t != 0 && memchr(be, t, sizeof(be) - 1) != NULL;
        assert_int_equal(!!pgw_frontend_type_valid((uint8_t)t), in_fe);
        assert_int_equal(!!pgw_backend_type_valid((uint8_t)t), in_be);
    }
}

/* Fixed-size server messages: a ReadyForQuery of length 4 has no status byte to read. */
static void
test_backend_lengths(void **state)
{
    (void)state;
    assert_true(pgw_backend_len_valid('Z', 5));
    assert_false(pgw_backend_len_valid('Z', 4));
    assert_false(pgw_backend_len_valid('Z', 6));
    assert_false(pgw_backend_len_valid('Z', 1u << 30));
    for (const char *t = "123cIns"; *t; t++) {
        assert_true(pgw_backend_len_valid((uint8_t)*t, 4));
        assert_false(pgw_backend_len_valid((uint8_t)*t, 5));
    }
    /* COPY responses: format, column count, a format per column */
    for (const char *t = "GHW"; *t; t++) {
        assert_false(pgw_backend_len_valid((uint8_t)*t, 6));
        assert_true(pgw_backend_len_valid((uint8_t)*t, 7));
        assert_true(pgw_backend_len_valid((uint8_t)*t, 7 + 2 * 65535));
        assert_false(pgw_backend_len_valid((uint8_t)*t, 7 + 2 * 65535 + 1));
        assert_false(pgw_backend_len_valid((uint8_t)*t, 1u << 30));
    }
    /* variable length: anything the header parser let through */
    assert_true(pgw_backend_len_valid('D', 4));
    assert_true(pgw_backend_len_valid('K', 12));
    assert_true(pgw_backend_len_valid('K', 20));
    assert_true(pgw_backend_len_valid('E', 100000));
}

/*
 * A backend's answer to a login, framed with the stream cut in two at every
 * offset: a receiver that accumulates bytes sees the same messages each time.
 */
static void
test_stream_split(void **state)
{
    (void)state;
    uint8_t stream[512];
    size_t n = 0;
    n += mk_typed(stream + n, 'R', LIT("\0\0\0\0"));
    n += mk_typed(stream + n, 'S', LIT("client_encoding\0UTF8\0"));
    n += mk_typed(stream + n, 'S',
                  LIT("server_version\0"
                      "17.2\0"));
    n += mk_typed(stream + n, 'K', LIT("\0\0\x30\x39\x01\x02\x03\x04"));
    n += mk_typed(stream + n, 'Z', LIT("I"));
    static const char want[] = "RSSKZ";

    for (size_t cut = 0; cut <= n; cut++) {
        uint8_t acc[512];
        size_t have = 0, off = 0;
        char got[8] = {0};
        int ngot = 0;
        const uint8_t *chunks[2] = {stream, stream + cut};
        size_t sizes[2] = {cut, n - cut};
        for (int c = 0; c < 2; c++) {
            memcpy(acc + have, chunks[c], sizes[c]);
            have += sizes[c];
            for (;;) {
                struct pgw_header h;
                const char *err;
                enum pgw_status r = frame(acc + off, have - off, 8192, &h, &err);
                if (r == PGW_NEED_MORE)
                    break;
                assert_int_equal(r, PGW_OK);
                assert_true(pgw_backend_type_valid(h.type));
                assert_true(ngot < 7);
                got[ngot++] = (char)h.type;
                off += pgw_header_total(&h);
            }
        }
        assert_string_equal(got, want);
        assert_int_equal(off, n);
    }
}

/* ------------------------------------------------------------------ */
/* Body parsers.                                                      */

/* The body parser for a backend message type, as a proxy would call it. */
static enum pgw_status
body_parse(uint8_t type, const uint8_t *body, size_t len)
{
    struct pgw_error_fields ef;
    const char *a, *b;
    uint32_t u, v;
    uint8_t z;
    size_t sz;
    struct pgw_command_tag tag;

    uint8_t *copy = dup_exact(body, len);
    enum pgw_status r;
    switch (type) {
    case 'E':
    case 'N':
        r = pgw_error_parse(copy, len, &ef);
        break;
    case 'Z':
        r = pgw_ready_parse(copy, len, &z);
        break;
    case 'K':
        r = pgw_backend_key_parse(copy, len, &u, &v);
        break;
    case 'R':
        r = pgw_auth_parse(copy, len, &u);
        break;
    case 'S':
        r = pgw_parameter_status_parse(copy, len, &a, &b);
        break;
    case 'Q':
        r = pgw_query_parse(copy, len, &a, &sz);
        break;
    case 'C':
        r = pgw_command_complete_parse(copy, len, &tag);
        break;
    case 'v':
        r = pgw_negotiate_parse(copy, len, &u, &v, &a);
        break;
    default:
        r = PGW_ERROR;
        fail_msg("no body parser for '%c'", type);
    }
    free(copy);
    return r;
}

/*
 * A valid body: framed as a message it splits cleanly, the body parses, and
 * (when prefixes_bad) no proper prefix of the body parses: a cut message is
 * never taken for a whole one.
 */
static void
body_ok(uint8_t type, const uint8_t *body, size_t len, int prefixes_bad)
{
    uint8_t msg[1024];
    assert_true(len + 5 <= sizeof(msg));
    size_t n = mk_typed(msg, type, body, len);
    frame_split_ok(msg, n, type);
    assert_int_equal(body_parse(type, body, len), PGW_OK);
    if (prefixes_bad)
        for (size_t k = 0; k < len; k++)
            if (body_parse(type, body, k) != PGW_ERROR)
                fail_msg("'%c' body prefix %zu of %zu parsed", type, k, len);
}

static void
body_bad(uint8_t type, const uint8_t *body, size_t len)
{
    assert_int_equal(body_parse(type, body, len), PGW_ERROR);
}

static void
test_error_parse(void **state)
{
    (void)state;
    struct pgw_error_fields ef;
    /* As a PostgreSQL 17 server sends it. */
    static const char e1[] = "SERROR\0VERROR\0C42P01\0Mrelation \"nope\" does not exist\0"
                             "P15\0Fparse_relation.c\0L1449\0RparserOpenTable\0\0";
    body_ok('E', LIT(e1), 1);
    assert_int_equal(pgw_error_parse(LIT(e1), &ef), PGW_OK);
    assert_string_equal(ef.severity, "ERROR");
    assert_string_equal(ef.sqlstate, "42P01");
    assert_int_equal(ef.message_len, strlen("relation \"nope\" does not exist"));
    assert_memory_equal(ef.message, "relation \"nope\" does not exist", ef.message_len);
    assert_int_equal(ef.message[ef.message_len], '\0');

    /* Localized S, V wins. */
    static const char e2[] = "SFEHLER\0VFATAL\0C28P01\0MPasswort falsch\0\0";
    body_ok('E', LIT(e2), 1);
    assert_int_equal(pgw_error_parse(LIT(e2), &ef), PGW_OK);
    assert_string_equal(ef.severity, "FATAL");
    assert_string_equal(ef.sqlstate, "28P01");

    /* A localized S shorter than V. */
    static const char n2[] = "SAVISO\0VWARNING\0C01000\0Mx\0\0";
    body_ok('N', LIT(n2), 1);
    assert_int_equal(pgw_error_parse(LIT(n2), &ef), PGW_OK);
    assert_string_equal(ef.severity, "WARNING");

    /* Old server: S only; a notice; fields in any order. */
    static const char n1[] = "Mhello\0C01000\0SWARNING\0\0";
    body_ok('N', LIT(n1), 1);
    assert_int_equal(pgw_error_parse(LIT(n1), &ef), PGW_OK);
    assert_string_equal(ef.severity, "WARNING");
    assert_string_equal(ef.sqlstate, "01000");
    assert_int_equal(ef.message_len, 5);

    /* A long localized S is cut to fit, not in the middle of a character. */
    static const char e3[] = "S\xd0\x9f\xd0\xa0\xd0\x95\xd0\x94\xd0\xa3\xd0\x9f\xd0\xa0\xd0\x95"
                             "\xd0\x96\xd0\x94\xd0\x95\xd0\x9d\xd0\x98\xd0\x95\0\0";
    body_ok('N', LIT(e3), 1);
    assert_int_equal(pgw_error_parse(LIT(e3), &ef), PGW_OK);
    assert_int_equal(strlen(ef.severity), 14);
    assert_memory_equal(ef.severity, e3 + 1, 14);

    /* No fields at all. */
    body_ok('E', LIT("\0"), 1);
    assert_int_equal(pgw_error_parse(LIT("\0"), &ef), PGW_OK);
    assert_string_equal(ef.severity, "");
    assert_string_equal(ef.sqlstate, "");
    assert_null(ef.message);

    body_bad('E', LIT(""));
    body_bad('E', LIT("SERROR\0")); /* no terminator */
    body_bad('E', LIT("SERROR"));   /* field not ended */
    body_bad('E', LIT("S"));
    body_bad('E', LIT("SERROR\0\0\0")); /* bytes after the terminator */
    body_bad('E', LIT("SERROR\0\0M\0"));
    body_bad('E', LIT("C4200\0\0"));   /* SQLSTATE of 4 */
    body_bad('E', LIT("C420000\0\0")); /* and of 6 */
}

static void
test_small_bodies(void **state)
{
    (void)state;
    uint8_t z = 0;
    uint32_t pid = 0, key = 0, code = 99;

    static const char *const st = "ITE";
    for (int i = 0; i < 3; i++) {
        body_ok('Z', (const uint8_t *)st + i, 1, 1);
        assert_int_equal(pgw_ready_parse((const uint8_t *)st + i, 1, &z), PGW_OK);
        assert_int_equal(z, st[i]);
    }
    body_bad('Z', LIT("X"));
    body_bad('Z', LIT("II"));
    body_bad('Z', LIT(""));

    body_ok('K', LIT("\0\0\x30\x39\xde\xad\xbe\xef"), 1);
    assert_int_equal(pgw_backend_key_parse(LIT("\0\0\x30\x39\xde\xad\xbe\xef"), &pid, &key),
                     PGW_OK);
    assert_int_equal(pid, 12345);
    assert_int_equal(key, 0xdeadbeef);
    body_bad('K', LIT("\0\0\x30\x39\xde\xad\xbe"));
    body_bad('K', LIT("\0\0\x30\x39\xde\xad\xbe\xef\0"));

    const char *name = NULL, *value = NULL;
    body_ok('S', LIT("client_encoding\0UTF8\0"), 1);
    assert_int_equal(pgw_parameter_status_parse(LIT("client_encoding\0UTF8\0"), &name, &value),
                     PGW_OK);
    assert_string_equal(name, "client_encoding");
    assert_string_equal(value, "UTF8");
    body_ok('S', LIT("application_name\0\0"), 1);
    body_bad('S', LIT(""));
    body_bad('S', LIT("a\0"));
    body_bad('S', LIT("a\0b"));
    body_bad('S', LIT("a\0b\0c"));
    body_bad('S', LIT("a\0b\0\0"));
    body_bad('S', LIT("\0b\0")); /* empty name */
    body_bad('S', LIT("abc"));

    const char *sql = NULL;
    size_t sql_len = 0;
    body_ok('Q', LIT("select 1; select 2\0"), 1);
    assert_int_equal(pgw_query_parse(LIT("select 1\0"), &sql, &sql_len), PGW_OK);
    assert_string_equal(sql, "select 1");
    assert_int_equal(sql_len, 8);
    body_ok('Q', LIT("\0"), 1);
    body_bad('Q', LIT(""));
    body_bad('Q', LIT("select 1"));
    body_bad('Q', LIT("select 1\0\0"));
    body_bad('Q', LIT("a\0b\0"));
    (void)code;
}

static void
test_auth_parse(void **state)
{
    (void)state;
    uint32_t code = 99;

    body_ok('R', LIT("\0\0\0\0"), 1);
    assert_int_equal(pgw_auth_parse(LIT("\0\0\0\0"), &code), PGW_OK);
    assert_int_equal(code, PGW_AUTH_OK);
    body_ok('R', LIT("\0\0\0\3"), 1);
    body_ok('R', LIT("\0\0\0\5\x01\x02\x03\x04"), 1);
    assert_int_equal(pgw_auth_parse(LIT("\0\0\0\5\x01\x02\x03\x04"), &code), PGW_OK);
    assert_int_equal(code, PGW_AUTH_MD5);
    static const char sasl[] = "\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
    body_ok('R', LIT(sasl), 1);
    assert_int_equal(pgw_auth_parse(LIT(sasl), &code), PGW_OK);
    assert_int_equal(code, PGW_AUTH_SASL);
    /* SASLContinue/Final data is opaque: its prefixes are whole messages too. */
    body_ok('R', LIT("\0\0\0\x0br=abc,s=xyz,i=4096"), 0);
    assert_int_equal(pgw_auth_parse(LIT("\0\0\0\x0bx"), &code), PGW_OK);
    assert_int_equal(code, PGW_AUTH_SASL_CONTINUE);
    body_ok('R', LIT("\0\0\0\x0cv=sig"), 0);
    /* A code we do not speak: reported, the caller refuses it. */
    assert_int_equal(pgw_auth_parse(LIT("\0\0\0\x63"), &code), PGW_OK);
    assert_int_equal(code, 99);

    body_bad('R', LIT(""));
    body_bad('R', LIT("\0\0\0"));
    body_bad('R', LIT("\0\0\0\0\0")); /* Ok with a tail */
    body_bad('R', LIT("\0\0\0\3x"));
    body_bad('R', LIT("\0\0\0\5\1\2\3")); /* short salt */
    body_bad('R', LIT("\0\0\0\5\1\2\3\4\5"));
    body_bad('R', LIT("\0\0\0\x0a"));                /* SASL: no list */
    body_bad('R', LIT("\0\0\0\x0a\0"));              /* empty list */
    body_bad('R', LIT("\0\0\0\x0aSCRAM-SHA-256\0")); /* no terminator */
    body_bad('R', LIT("\0\0\0\x0aSCRAM-SHA-256"));
    body_bad('R', LIT("\0\0\0\x0aSCRAM-SHA-256\0\0\0"));
}

static void
test_command_complete(void **state)
{
    (void)state;
    struct pgw_command_tag t;
    static const struct {
        const char *tag;
        const char *verb;
        int has_rows;
        uint64_t rows;
    } cases[] = {
        {"INSERT 0 5", "INSERT", 1, 5},
        {"SELECT 3", "SELECT", 1, 3},
        {"UPDATE 0", "UPDATE", 1, 0},
        {"COPY 18446744073709551615", "COPY", 1, UINT64_MAX},
        {"COPY 18446744073709551616", "COPY", 0, 0},
        {"CREATE TABLE", "CREATE TABLE", 0, 0},
        {"BEGIN", "BEGIN", 0, 0},
        {"", "", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        size_t n = strlen(cases[i].tag) + 1;
        body_ok('C', (const uint8_t *)cases[i].tag, n, 1);
        assert_int_equal(pgw_command_complete_parse((const uint8_t *)cases[i].tag, n, &t), PGW_OK);
        assert_ptr_equal(t.tag, cases[i].tag);
        assert_int_equal(t.tag_len, n - 1);
        assert_int_equal(t.verb_len, strlen(cases[i].verb));
        assert_memory_equal(t.tag, cases[i].verb, t.verb_len);
        assert_int_equal(t.has_rows, cases[i].has_rows);
        assert_true(t.rows == cases[i].rows);
    }
    body_bad('C', LIT(""));
    body_bad('C', LIT("SELECT 1"));
    body_bad('C', LIT("SELECT 1\0\0"));
}

/* ------------------------------------------------------------------ */
/* SASL mechanism list rewrite.                                       */

static void
test_sasl_strip_plus(void **state)
{
    (void)state;
    uint8_t out[128 + CANARY_LEN];
    static const char sasl[] = "\0\0\0\x0aSCRAM-SHA-256-PLUS\0SCRAM-SHA-256\0\0";
    static const char want[] = "R\0\0\0\x17\0\0\0\x0aSCRAM-SHA-256\0\0";

    uint8_t *copy = dup_exact(LIT(sasl));
    size_t n = pgw_sasl_strip_plus(copy, sizeof(sasl) - 1, out, 128);
    assert_int_equal(n, sizeof(want) - 1);
    assert_memory_equal(out, want, n);
    /* The result is a valid AuthenticationSASL. */
    frame_split_ok(out, n, 'R');
    body_ok('R', out + 5, n - 5, 1);

    /* Every cap short of n: 0, and nothing written past cap. */
    for (size_t cap = 0; cap < n; cap++) {
        memset(out, CANARY, sizeof(out));
        assert_int_equal(pgw_sasl_strip_plus(copy, sizeof(sasl) - 1, out, cap), 0);
        for (size_t i = cap; i < sizeof(out); i++)
            assert_int_equal(out[i], CANARY);
    }
    memset(out, CANARY, sizeof(out));
    assert_int_equal(pgw_sasl_strip_plus(copy, sizeof(sasl) - 1, out, n), n);
    assert_int_equal(out[n], CANARY);
    free(copy);

    /* Nothing to strip: the same list back; order is kept. */
    static const char two[] = "\0\0\0\x0aSCRAM-SHA-256\0OTHER\0\0";
    n = pgw_sasl_strip_plus(LIT(two), out, 128);
    assert_int_equal(n, 5 + sizeof(two) - 1);
    assert_memory_equal(out + 5, two, sizeof(two) - 1);

    /* "-PLUS" must be the suffix, case as sent. */
    static const char odd[] = "\0\0\0\x0a-PLUS\0X-PLUSY\0x-plus\0A-PLUS\0\0";
    n = pgw_sasl_strip_plus(LIT(odd), out, 128);
    assert_int_equal(n, 5 + 4 + sizeof("X-PLUSY\0x-plus\0") - 1 + 1);
    assert_memory_equal(out + 9, "X-PLUSY\0x-plus\0\0", sizeof("X-PLUSY\0x-plus\0\0") - 1);

    /* Only channel binding on offer, or not a SASL list: 0. */
    assert_int_equal(pgw_sasl_strip_plus(LIT("\0\0\0\x0aSCRAM-SHA-256-PLUS\0\0"), out, 128), 0);
    assert_int_equal(pgw_sasl_strip_plus(LIT("\0\0\0\x0bSCRAM-SHA-256\0\0"), out, 128), 0);
    assert_int_equal(pgw_sasl_strip_plus(LIT("\0\0\0\x0aSCRAM-SHA-256\0"), out, 128), 0);
    assert_int_equal(pgw_sasl_strip_plus(LIT("\0\0\0\x0a\0"), out, 128), 0);
    assert_int_equal(pgw_sasl_strip_plus(LIT("\0\0\0"), out, 128), 0);
    /* Every prefix of a valid body is refused, read inside its bounds. */
    for (size_t k = 0; k < sizeof(sasl) - 1; k++) {
        copy = dup_exact((const uint8_t *)sasl, k);
        assert_int_equal(pgw_sasl_strip_plus(copy, k, out, 128), 0);
        free(copy);
    }
}

/* ------------------------------------------------------------------ */
/* Builders.                                                          */

/*
 * Run a builder at every cap from 0 to its full length + 1 over a buffer
 * followed by canaries: below the full length it answers 0 (or, when may_cut,
 * something no longer than cap); it never writes at or past cap.
 */
typedef size_t (*build_fn)(uint8_t *out, size_t cap, const void *arg);

static size_t
check_caps(build_fn fn, const void *arg, int may_cut)
{
    static uint8_t big[16384];
    size_t full = fn(big, sizeof(big), arg);
    assert_true(full > 0 && full < sizeof(big));
    for (size_t cap = 0; cap <= full + 1; cap++) {
        uint8_t *out = malloc(cap + CANARY_LEN);
        assert_non_null(out);
        memset(out, CANARY, cap + CANARY_LEN);
        size_t n = fn(out, cap, arg);
        if (cap >= full) {
            assert_int_equal(n, full);
            assert_memory_equal(out, big, full);
        } else if (may_cut) {
            assert_true(n <= cap);
        } else {
            assert_int_equal(n, 0);
        }
        for (size_t i = cap; i < cap + CANARY_LEN; i++)
            if (out[i] != CANARY)
                fail_msg("cap %zu: byte %zu written", cap, i);
        free(out);
    }
    return full;
}

struct error_args {
    const char *severity, *sqlstate, *message;
};

static size_t
build_error_fn(uint8_t *out, size_t cap, const void *arg)
{
    const struct error_args *a = arg;
    return pgw_build_error(out, cap, a->severity, a->sqlstate, a->message);
}

/* Parse a built ErrorResponse: framing, fields. */
static void
error_round_trip(const uint8_t *msg, size_t n, const struct error_args *a, size_t *msg_len)
{
    struct pgw_header h;
    const char *err;
    struct pgw_error_fields ef;
    frame_split_ok(msg, n, 'E');
    assert_int_equal(pgw_header_parse(msg, n, 1u << 20, &h, &err), PGW_OK);
    uint8_t *body = dup_exact(msg + 5, n - 5);
    assert_int_equal(pgw_error_parse(body, n - 5, &ef), PGW_OK);
    assert_string_equal(ef.severity, a->severity);
    assert_string_equal(ef.sqlstate, a->sqlstate);
    assert_non_null(ef.message);
    assert_true(ef.message_len <= strlen(a->message));
    assert_memory_equal(ef.message, a->message, ef.message_len);
    *msg_len = ef.message_len;
    free(body);
}

static void
test_build_error(void **state)
{
    (void)state;
    uint8_t out[512];
    size_t mlen;
    struct error_args a = {"FATAL", PGW_SQLSTATE_TOO_MANY_CONNECTIONS,
                           "sorry, too many clients already"};
    size_t full = check_caps(build_error_fn, &a, 1);
    assert_int_equal(pgw_build_error(out, sizeof(out), a.severity, a.sqlstate, a.message), full);
    error_round_trip(out, full, &a, &mlen);
    assert_int_equal(mlen, strlen(a.message));

    /* Smaller caps cut the message; below the fixed part, nothing. */
    size_t fixed = full - strlen(a.message);
    for (size_t cap = 0; cap < full; cap++) {
        size_t n = pgw_build_error(out, cap, a.severity, a.sqlstate, a.message);
        if (cap < fixed) {
            assert_int_equal(n, 0);
            continue;
        }
        assert_int_equal(n, cap);
        error_round_trip(out, n, &a, &mlen);
        assert_int_equal(mlen, cap - fixed);
    }

    /* A cut never splits a UTF-8 character. */
    struct error_args u = {"ERROR", PGW_SQLSTATE_PROTOCOL_VIOLATION, "gr\xc3\xbc\xc3\x9f"};
    full = pgw_build_error(out, sizeof(out), u.severity, u.sqlstate, u.message);
    fixed = full - strlen(u.message);
    static const size_t want_len[] = {0, 1, 2, 2, 4, 4, 6};
    for (size_t m = 0; m <= 6; m++) {
        size_t n = pgw_build_error(out, fixed + m, u.severity, u.sqlstate, u.message);
        assert_true(n > 0 && n <= fixed + m);
        error_round_trip(out, n, &u, &mlen);
        assert_int_equal(mlen, want_len[m]);
    }

    /* A SQLSTATE is five characters; anything else is refused. */
    assert_int_equal(pgw_build_error(out, sizeof(out), "ERROR", "", "m"), 0);
    assert_int_equal(pgw_build_error(out, sizeof(out), "ERROR", "4200", "m"), 0);
    assert_int_equal(pgw_build_error(out, sizeof(out), "ERROR", "420000", "m"), 0);

    /* A NULL message is an empty one. */
    size_t n = pgw_build_error(out, sizeof(out), "ERROR", "XX000", NULL);
    struct error_args e = {"ERROR", "XX000", ""};
    error_round_trip(out, n, &e, &mlen);
    assert_int_equal(mlen, 0);
}

struct negotiate_args {
    uint32_t minor;
    const char *const *opts;
    size_t n;
};

static size_t
build_negotiate_fn(uint8_t *out, size_t cap, const void *arg)
{
    const struct negotiate_args *a = arg;
    return pgw_build_negotiate(out, cap, a->minor, a->opts, a->n);
}

static void
test_build_negotiate(void **state)
{
    (void)state;
    static const char *const opts[] = {"_pq_.compression", "_pq_.x"};
    uint8_t out[256];
    for (size_t nopt = 0; nopt <= 2; nopt++) {
        struct negotiate_args a = {0, opts, nopt};
        size_t n = check_caps(build_negotiate_fn, &a, 0);
        assert_int_equal(pgw_build_negotiate(out, sizeof(out), 0, opts, nopt), n);
        frame_split_ok(out, n, 'v');
        body_ok('v', out + 5, n - 5, 1);
        uint32_t minor = 9, count = 9;
        const char *first = "x";
        assert_int_equal(pgw_negotiate_parse(out + 5, n - 5, &minor, &count, &first), PGW_OK);
        assert_int_equal(minor, 0);
        assert_int_equal(count, nopt);
        const char *p = first;
        for (size_t i = 0; i < nopt; i++) {
            assert_string_equal(p, opts[i]);
            p += strlen(p) + 1;
        }
        if (nopt == 0)
            assert_null(first);
    }
    /* Counts that do not match the names. */
    body_bad('v', LIT("\0\0\0\0\0\0\0\1"));
    body_bad('v', LIT("\0\0\0\0\0\0\0\1a\0b\0"));
    body_bad('v', LIT("\0\0\0\0\0\0\0\2a\0"));
    body_bad('v', LIT("\0\0\0\0\0\0\0\1\0"));
    body_bad('v', LIT("\0\0\0\0\xff\xff\xff\xff"
                      "a\0"));
    body_bad('v', LIT("\0\0\0\0\0\0\0"));
}

struct key_args {
    uint32_t pid, key;
};

static size_t
build_key_fn(uint8_t *out, size_t cap, const void *arg)
{
    const struct key_args *a = arg;
    return pgw_build_backend_key(out, cap, a->pid, a->key);
}

static size_t
build_cancel_fn(uint8_t *out, size_t cap, const void *arg)
{
    const struct key_args *a = arg;
    return pgw_build_cancel(out, cap, a->pid, a->key);
}

static size_t
build_ssl_fn(uint8_t *out, size_t cap, const void *arg)
{
    (void)arg;
    return pgw_build_ssl_request(out, cap);
}

static size_t
build_terminate_fn(uint8_t *out, size_t cap, const void *arg)
{
    (void)arg;
    return pgw_build_terminate(out, cap);
}

static size_t
build_ready_fn(uint8_t *out, size_t cap, const void *arg)
{
    return pgw_build_ready(out, cap, *(const uint8_t *)arg);
}

static void
test_build_fixed(void **state)
{
    (void)state;
    uint8_t out[64];
    struct pgw_startup st;
    struct key_args k = {4242, 0x01020304};
    uint32_t pid, key;

    size_t n = check_caps(build_key_fn, &k, 0);
    assert_int_equal(n, 13);
    pgw_build_backend_key(out, sizeof(out), k.pid, k.key);
    body_ok('K', out + 5, 8, 1);
    frame_split_ok(out, n, 'K');
    assert_int_equal(pgw_backend_key_parse(out + 5, 8, &pid, &key), PGW_OK);
    assert_int_equal(pid, k.pid);
    assert_int_equal(key, k.key);

    n = check_caps(build_cancel_fn, &k, 0);
    assert_int_equal(n, 16);
    pgw_build_cancel(out, sizeof(out), k.pid, k.key);
    startup_split_ok(out, n, &st);
    assert_int_equal(st.kind, PGW_STARTUP_CANCEL);
    assert_int_equal(st.cancel_pid, k.pid);
    assert_int_equal(st.cancel_key, k.key);

    n = check_caps(build_ssl_fn, NULL, 0);
    assert_int_equal(n, 8);
    pgw_build_ssl_request(out, sizeof(out));
    startup_split_ok(out, n, &st);
    assert_int_equal(st.kind, PGW_STARTUP_SSL);

    n = check_caps(build_terminate_fn, NULL, 0);
    assert_int_equal(n, 5);
    pgw_build_terminate(out, sizeof(out));
    frame_split_ok(out, n, 'X');
    assert_true(pgw_frontend_type_valid(out[0]));

    static const uint8_t statuses[] = {'I', 'T', 'E'};
    for (int i = 0; i < 3; i++) {
        uint8_t z = 0;
        n = check_caps(build_ready_fn, &statuses[i], 0);
        assert_int_equal(n, 6);
        pgw_build_ready(out, sizeof(out), statuses[i]);
        frame_split_ok(out, n, 'Z');
        assert_int_equal(pgw_ready_parse(out + 5, 1, &z), PGW_OK);
        assert_int_equal(z, statuses[i]);
    }
    assert_int_equal(pgw_build_ready(out, sizeof(out), 'X'), 0);
}

struct startup_args {
    const struct pgw_param *params;
    size_t n;
};

static size_t
build_startup_fn(uint8_t *out, size_t cap, const void *arg)
{
    const struct startup_args *a = arg;
    return pgw_build_startup(out, cap, a->params, a->n);
}

static void
test_build_startup(void **state)
{
    (void)state;
    static uint8_t out[PGW_STARTUP_MAX_LEN * 2];
    struct pgw_startup st;
    static const struct pgw_param params[] = {
        {"user", "alice"}, {"_pq_.compression", "on"},     {"database", "shop"}, {"options", ""},
        {"", "ignored"},   {"application_name", "tandem"},
    };
    struct startup_args a = {params, 6};
    size_t n = check_caps(build_startup_fn, &a, 0);
    assert_int_equal(pgw_build_startup(out, sizeof(out), params, 6), n);
    startup_split_ok(out, n, &st);
    assert_int_equal(st.kind, PGW_STARTUP_MESSAGE);
    assert_int_equal(st.version, PGW_PROTO_30);
    assert_int_equal(st.nparams, 4);
    assert_string_equal(pgw_startup_param(&st, "user"), "alice");
    assert_string_equal(pgw_startup_param(&st, "database"), "shop");
    assert_string_equal(pgw_startup_param(&st, "options"), "");
    assert_string_equal(pgw_startup_param(&st, "application_name"), "tandem");
    assert_null(pgw_startup_param(&st, "_pq_.compression"));

    /* Parsed params build back into the same packet. */
    uint8_t again[256];
    assert_int_equal(pgw_build_startup(again, sizeof(again), st.params, st.nparams), n);
    assert_memory_equal(again, out, n);

    /* Too long for a server to accept: 0 whatever the cap. */
    static char longval[PGW_STARTUP_MAX_LEN];
    memset(longval, 'x', sizeof(longval) - 1);
    struct pgw_param big[] = {{"user", longval}};
    assert_int_equal(pgw_build_startup(out, sizeof(out), big, 1), 0);
    /* ... but the longest acceptable one is built. */
    longval[PGW_STARTUP_MAX_LEN - 8 - 5 - 1 - 1] = '\0';
    n = pgw_build_startup(out, sizeof(out), big, 1);
    assert_int_equal(n, PGW_STARTUP_MAX_LEN);
    startup_split_ok(out, n, &st);
}

/* Refusals for rights or identity: never replayed on the shadow. */
static void
test_sqlstate_is_denial(void **state)
{
    (void)state;
    assert_true(pgw_sqlstate_is_denial("42501"));
    assert_true(pgw_sqlstate_is_denial("28000"));
    assert_true(pgw_sqlstate_is_denial("28P01"));
    assert_true(pgw_sqlstate_is_denial("0LP01"));
    assert_true(pgw_sqlstate_is_denial("0P000"));
    assert_false(pgw_sqlstate_is_denial("42P01")); /* undefined table */
    assert_false(pgw_sqlstate_is_denial("23505")); /* unique violation */
    assert_false(pgw_sqlstate_is_denial("4250"));
    assert_false(pgw_sqlstate_is_denial(""));
    assert_false(pgw_sqlstate_is_denial(NULL));
}

static void
test_build_query(void **state)
{
    uint8_t out[64];
    const char *sql;
    size_t len, n;
    (void)state;
    n = pgw_build_query(out, sizeof(out), "SELECT 1");
    assert_int_equal(n, 1 + 4 + 9);
    assert_int_equal(out[0], 'Q');
    assert_int_equal(pgw_query_parse(out + 5, n - 5, &sql, &len), PGW_OK);
    assert_int_equal(len, 8);
    assert_memory_equal(sql, "SELECT 1", 8);
    assert_int_equal(pgw_build_query(out, 10, "SELECT 1"), 0); /* does not fit */
}

/* ------------------------------------------------------------------ */
/* pgw_call_decode: a unit's one statement call.                      */

/* Append a message of type with body to buf at *n. */
static void
msg(uint8_t *buf, size_t *n, uint8_t type, const void *body, size_t len)
{
    buf[(*n)++] = type;
    uint32_t l = (uint32_t)len + 4;
    buf[(*n)++] = (uint8_t)(l >> 24);
    buf[(*n)++] = (uint8_t)(l >> 16);
    buf[(*n)++] = (uint8_t)(l >> 8);
    buf[(*n)++] = (uint8_t)l;
    memcpy(buf + *n, body, len);
    *n += len;
}

static void
test_call_decode(void **state)
{
    (void)state;
    static struct pgw_call call;
    uint8_t u[512];
    size_t n = 0;

    /* a Query */
    msg(u, &n, 'Q', "SELECT 1; SELECT 2", 19);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_OK);
    assert_true(call.simple);
    assert_string_equal(call.sql, "SELECT 1; SELECT 2");
    assert_int_equal(call.nparams, 0);

    /* Parse (one declared int4) Bind (text '42', binary NULL) Describe Execute Sync */
    static const uint8_t parse[] = "\0SELECT $1::int, $2::text\0\0\1\0\0\0\x17";
    static const uint8_t bind[] = {0, 0, 0, 2, 0, 0, 0, 1, 0, 2, 0, 0, 0, 2, '4', '2',
                                   0xff, 0xff, 0xff, 0xff, 0, 0};
    static const uint8_t describe[] = "P";
    static const uint8_t execute[] = {0, 0, 0, 0, 0};
    n = 0;
    msg(u, &n, 'P', parse, sizeof(parse) - 1);
    msg(u, &n, 'B', bind, sizeof(bind));
    msg(u, &n, 'D', describe, 2);
    msg(u, &n, 'E', execute, sizeof(execute));
    msg(u, &n, 'S', "", 0);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_OK);
    assert_false(call.simple);
    assert_string_equal(call.sql, "SELECT $1::int, $2::text");
    assert_int_equal(call.ntypes, 1);
    assert_int_equal(call.param_types[0], 23);
    assert_int_equal(call.nparams, 2);
    assert_int_equal(call.param_formats[0], 0);
    assert_int_equal(call.param_formats[1], 1);
    assert_int_equal(call.lengths[0], 2);
    assert_memory_equal(call.values[0], "42", 2);
    assert_null(call.values[1]);

    /* a Bind of a statement prepared earlier: no text, no types */
    size_t bind_at = 0;
    n = 0;
    msg(u, &n, 'B', bind, sizeof(bind));
    bind_at = n;
    msg(u, &n, 'E', execute, sizeof(execute));
    msg(u, &n, 'S', "", 0);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_OK);
    assert_null(call.sql);
    assert_int_equal(call.ntypes, 0);
    assert_int_equal(call.nparams, 2);

    /* not one call: no Sync; a second Execute; a row limit; a Query after a Parse */
    assert_int_equal(pgw_call_decode(u, bind_at, &call), PGW_ERROR);
    n = bind_at;
    msg(u, &n, 'E', execute, sizeof(execute));
    msg(u, &n, 'E', execute, sizeof(execute));
    msg(u, &n, 'S', "", 0);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_ERROR);
    static const uint8_t execute_some[] = {0, 0, 0, 0, 10};
    n = bind_at;
    msg(u, &n, 'E', execute_some, sizeof(execute_some));
    msg(u, &n, 'S', "", 0);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_ERROR);
    n = 0;
    msg(u, &n, 'P', parse, sizeof(parse) - 1);
    msg(u, &n, 'Q', "SELECT 1", 9);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_ERROR);

    /* malformed: a value longer than the message, a named portal, a length past the end */
    static const uint8_t bind_long[] = {0, 0, 0, 0, 0, 1, 0, 0, 0, 9, 'x', 0, 0};
    n = 0;
    msg(u, &n, 'B', bind_long, sizeof(bind_long));
    msg(u, &n, 'E', execute, sizeof(execute));
    msg(u, &n, 'S', "", 0);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_ERROR);
    static const uint8_t bind_portal[] = {'p', 0, 0, 0, 0, 0, 0, 0};
    n = 0;
    msg(u, &n, 'B', bind_portal, sizeof(bind_portal));
    msg(u, &n, 'E', "p\0\0\0\0", 6);
    msg(u, &n, 'S', "", 0);
    assert_int_equal(pgw_call_decode(u, n, &call), PGW_ERROR);
    n = 0;
    msg(u, &n, 'Q', "SELECT 1", 9);
    assert_int_equal(pgw_call_decode(u, n - 1, &call), PGW_ERROR);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_startup_message),  cmocka_unit_test(test_startup_limits),
        cmocka_unit_test(test_startup_special),  cmocka_unit_test(test_startup_invalid),
        cmocka_unit_test(test_header),           cmocka_unit_test(test_types),
        cmocka_unit_test(test_backend_lengths),
        cmocka_unit_test(test_stream_split),     cmocka_unit_test(test_error_parse),
        cmocka_unit_test(test_small_bodies),     cmocka_unit_test(test_auth_parse),
        cmocka_unit_test(test_command_complete), cmocka_unit_test(test_sasl_strip_plus),
        cmocka_unit_test(test_build_error),      cmocka_unit_test(test_build_negotiate),
        cmocka_unit_test(test_sqlstate_is_denial), cmocka_unit_test(test_build_query),
        cmocka_unit_test(test_build_fixed),      cmocka_unit_test(test_build_startup),
        cmocka_unit_test(test_call_decode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
