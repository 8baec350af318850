/*
 * fuzz_pgw.c - libFuzzer harness for the PostgreSQL wire codec.
 *
 * One input is one connection's bytes: first the untyped startup packet,
 * then (after it, or from the start when it does not parse) a stream of
 * typed messages, each complete one handed to its body parser.  Besides "no
 * crash, no read past len", it checks what must hold: parsed values rebuild
 * into the same bytes, and rewritten SASL lists parse again.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pgw.h"

#define STREAM_MAX_LEN 2048 /* small, so "message too large" is reachable */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static int
inside(const void *p, size_t n, const uint8_t *buf, size_t len)
{
    const uint8_t *q = p;
    return q >= buf && q <= buf + len && n <= (size_t)(buf + len - q);
}

/*
 * Call a builder again with a smaller cap (derived from the input) over a
 * canary-filled buffer: it answers 0 or at most cap, and writes nothing at
 * or past cap.  Answers what it wrote.
 */
#define CANARY 0xa5
#define SHORT_CAP(out, full, seed, call)                                                           \
    ({                                                                                             \
        size_t cap_ = (full) ? (seed) % (full) : 0;                                                \
        memset((out), CANARY, (full) + 16);                                                        \
        size_t got_ = call;                                                                        \
        CHECK(got_ <= cap_);                                                                       \
        for (size_t i_ = cap_; i_ < (full) + 16; i_++)                                             \
            CHECK((out)[i_] == CANARY);                                                            \
        got_;                                                                                      \
    })

static void
check_startup(const uint8_t *data, size_t used, const struct pgw_startup *st)
{
    uint8_t out[PGW_STARTUP_MAX_LEN + 16];
    size_t n;

    switch (st->kind) {
    case PGW_STARTUP_CANCEL:
        CHECK(used == 16);
        n = pgw_build_cancel(out, sizeof(out), st->cancel_pid, st->cancel_key);
        CHECK(n == 16 && memcmp(out, data, 16) == 0);
        break;
    case PGW_STARTUP_SSL:
        CHECK(used == 8);
        n = pgw_build_ssl_request(out, sizeof(out));
        CHECK(n == 8 && memcmp(out, data, 8) == 0);
        break;
    case PGW_STARTUP_GSSENC:
        CHECK(used == 8);
        break;
    case PGW_STARTUP_MESSAGE: {
        CHECK(PGW_PROTO_MAJOR(st->version) == 3);
        CHECK(st->nparams <= PGW_STARTUP_MAX_PARAMS);
        for (size_t i = 0; i < st->nparams; i++) {
            const char *name = st->params[i].name, *value = st->params[i].value;
            CHECK(inside(name, 1, data, used) && name[0] != '\0');
            CHECK(inside(name, strlen(name) + 1, data, used));
            CHECK(inside(value, strlen(value) + 1, data, used));
        }
        const char *user = pgw_startup_param(st, "user");
        CHECK(user != NULL && user[0] != '\0');
        pgw_startup_param(st, "database");

        /* Rebuilt as 3.0 without _pq_. options, it parses with the same user. */
        n = pgw_build_startup(out, sizeof(out), st->params, st->nparams);
        CHECK(n > 0 && n <= used);
        struct pgw_startup again;
        size_t used2 = 0;
        const char *err = NULL;
        CHECK(pgw_startup_parse(out, n, &used2, &again, &err) == PGW_OK);
        CHECK(used2 == n && again.version == PGW_PROTO_30);
        CHECK(strcmp(pgw_startup_param(&again, "user"), user) == 0);
        CHECK(SHORT_CAP(out, n, used, pgw_build_startup(out, cap_, st->params, st->nparams)) == 0);
        break;
    }
    }
}

static void
check_error(const uint8_t *body, size_t len)
{
    struct pgw_error_fields ef;
    if (pgw_error_parse(body, len, &ef) != PGW_OK)
        return;
    size_t sev_len = strnlen(ef.severity, sizeof(ef.severity));
    CHECK(sev_len < sizeof(ef.severity));
    size_t state_len = strnlen(ef.sqlstate, sizeof(ef.sqlstate));
    CHECK(state_len == 0 || state_len == 5);
    if (ef.message) {
        CHECK(inside(ef.message, ef.message_len + 1, body, len));
        CHECK(ef.message[ef.message_len] == '\0');
    }

    /* Its fields rebuild into an ErrorResponse that parses back the same. */
    if (state_len != 5)
        return;
    uint8_t out[STREAM_MAX_LEN + 128];
    size_t n = pgw_build_error(out, sizeof(out), ef.severity, ef.sqlstate, ef.message);
    CHECK(n > PGW_HEADER_LEN);
    struct pgw_error_fields back;
    CHECK(pgw_error_parse(out + PGW_HEADER_LEN, n - PGW_HEADER_LEN, &back) == PGW_OK);
    CHECK(strcmp(back.severity, ef.severity) == 0);
    CHECK(strcmp(back.sqlstate, ef.sqlstate) == 0);
    CHECK(back.message_len == ef.message_len);
    CHECK(ef.message_len == 0 || memcmp(back.message, ef.message, ef.message_len) == 0);

    /* Short of room, the message is cut and the rest still parses. */
    size_t cut =
        SHORT_CAP(out, n, len, pgw_build_error(out, cap_, ef.severity, ef.sqlstate, ef.message));
    if (cut > 0)
        CHECK(pgw_error_parse(out + PGW_HEADER_LEN, cut - PGW_HEADER_LEN, &back) == PGW_OK);
}

static void
check_auth(const uint8_t *body, size_t len)
{
    uint32_t code = 0;
    enum pgw_status r = pgw_auth_parse(body, len, &code);
    uint8_t out[STREAM_MAX_LEN + 128];
    size_t n = pgw_sasl_strip_plus(body, len, out, sizeof(out));
    if (n == 0)
        return;
    /* A rewrite only comes from a valid SASL list, and is one itself. */
    CHECK(r == PGW_OK && code == PGW_AUTH_SASL);
    CHECK(n <= len + PGW_HEADER_LEN);
    struct pgw_header h;
    const char *err = NULL;
    CHECK(pgw_header_parse(out, n, STREAM_MAX_LEN, &h, &err) == PGW_OK);
    CHECK(h.type == 'R' && pgw_header_total(&h) == n);
    CHECK(pgw_auth_parse(out + PGW_HEADER_LEN, n - PGW_HEADER_LEN, &code) == PGW_OK);
    CHECK(code == PGW_AUTH_SASL);
    /* Nothing left to strip: a second pass is the identity. */
    uint8_t again[STREAM_MAX_LEN + 128];
    size_t n2 = pgw_sasl_strip_plus(out + PGW_HEADER_LEN, n - PGW_HEADER_LEN, again, sizeof(again));
    CHECK(n2 == n && memcmp(again, out, n) == 0);
    CHECK(SHORT_CAP(again, n, len, pgw_sasl_strip_plus(body, len, again, cap_)) == 0);
}

static void
check_body(uint8_t type, const uint8_t *msg, const uint8_t *body, size_t len)
{
    uint8_t out[64];
    const char *a, *b;
    uint32_t u, v;
    uint8_t z;
    size_t sz;
    struct pgw_command_tag tag;

    switch (type) {
    case 'E':
    case 'N':
        check_error(body, len);
        break;
    case 'Z':
        if (pgw_ready_parse(body, len, &z) == PGW_OK)
            CHECK(pgw_build_ready(out, sizeof(out), z) == 6 && memcmp(out, msg, 6) == 0);
        break;
    case 'K':
        if (pgw_backend_key_parse(body, len, &u, &v) == PGW_OK)
            CHECK(pgw_build_backend_key(out, sizeof(out), u, v) == 13 && memcmp(out, msg, 13) == 0);
        break;
    case 'R':
        check_auth(body, len);
        break;
    case 'S':
        if (pgw_parameter_status_parse(body, len, &a, &b) == PGW_OK)
            CHECK(strlen(a) + strlen(b) + 2 == len && a[0] != '\0');
        break;
    case 'Q':
        if (pgw_query_parse(body, len, &a, &sz) == PGW_OK)
            CHECK(sz + 1 == len && strlen(a) == sz);
        break;
    case 'C':
        if (pgw_command_complete_parse(body, len, &tag) == PGW_OK)
            CHECK(tag.tag_len + 1 == len && tag.verb_len <= tag.tag_len);
        break;
    case 'v':
        if (pgw_negotiate_parse(body, len, &u, &v, &a) == PGW_OK) {
            CHECK((v == 0) == (a == NULL));
            for (uint32_t i = 0; i < v; i++) {
                CHECK(inside(a, strlen(a) + 1, body, len));
                a += strlen(a) + 1;
            }
            CHECK(a == NULL || a == (const char *)body + len);
        }
        break;
    case 'X':
        if (len == 0)
            CHECK(pgw_build_terminate(out, sizeof(out)) == 5 && memcmp(out, msg, 5) == 0);
        break;
    default:
        break;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct pgw_startup st;
    size_t used = 0, off = 0;
    const char *err = NULL;

    enum pgw_status r = pgw_startup_parse(data, size, &used, &st, &err);
    CHECK((r == PGW_ERROR) == (err != NULL));
    if (r == PGW_OK) {
        CHECK(used >= 8 && used <= size);
        check_startup(data, used, &st);
        off = used;
    }

    while (off < size) {
        struct pgw_header h;
        err = NULL;
        r = pgw_header_parse(data + off, size - off, STREAM_MAX_LEN, &h, &err);
        CHECK((r == PGW_ERROR) == (err != NULL));
        CHECK(r != PGW_NEED_MORE || size - off < PGW_HEADER_LEN);
        if (r != PGW_OK)
            break;
        CHECK(h.len >= 4 && h.len <= STREAM_MAX_LEN);
        size_t total = pgw_header_total(&h);
        if (total > size - off)
            break;
        (void)pgw_frontend_type_valid(h.type);
        (void)pgw_backend_type_valid(h.type);
        check_body(h.type, data + off, data + off + PGW_HEADER_LEN, h.len - 4);
        off += total;
    }

    /* the whole input as a unit's messages to run again: pointers stay inside it */
    static struct pgw_call call;
    if (pgw_call_decode(data, size, &call) == PGW_OK) {
        CHECK(call.sql != NULL || !call.simple);
        CHECK(call.nparams <= PGW_CALL_MAX_PARAMS && call.ntypes <= PGW_CALL_MAX_PARAMS);
        for (unsigned i = 0; i < call.nparams; i++) {
            CHECK(call.param_formats[i] == 0 || call.param_formats[i] == 1);
            if (call.values[i] != NULL)
                CHECK((const uint8_t *)call.values[i] >= data &&
                      (const uint8_t *)call.values[i] + call.lengths[i] <= data + size);
        }
    }
    return 0;
}
