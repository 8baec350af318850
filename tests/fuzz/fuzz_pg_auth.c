/*
 * fuzz_pg_auth.c - libFuzzer harness for the startup and authentication
 * exchange, both sides hostile.
 *
 * Input:  uint16 split (big-endian) | client bytes [split] | server bytes
 *
 * Client side, as pg_session.c's client_startup() and startup_negotiate()
 * use them: the startup packet parsed; a StartupMessage rebuilt from its
 * parameters (what tandem sends the primary) parses again to the same
 * parameters; its "_pq_." options answered with NegotiateProtocolVersion,
 * which must parse back to the same option list.
 *
 * Server side, as server_auth() reads it: messages read whole up to 64 KiB
 * (INSPECT_MAX_MESSAGE); AuthenticationSASL loses its -PLUS mechanisms and
 * the rewritten message must be a valid SASL offer again, unchanged by a
 * second strip; BackendKeyData rebuilt from its values is the same bytes;
 * ReadyForQuery, ErrorResponse and ParameterStatus parsed.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pgw.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define INSPECT_MAX_MESSAGE 65536

static void *
copy_exact(const uint8_t *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    CHECK(q != NULL);
    if (n)
        memcpy(q, p, n);
    return q;
}

static void
client_side(const uint8_t *buf, size_t len)
{
    struct pgw_startup st, again;
    const char *err = NULL;
    size_t used = 0;
    static uint8_t out[PGW_STARTUP_MAX_LEN + 16], v[PGW_STARTUP_MAX_LEN + 16];

    enum pgw_status rc = pgw_startup_parse(buf, len, &used, &st, &err);
    if (rc == PGW_ERROR)
        CHECK(err != NULL);
    if (rc != PGW_OK || st.kind != PGW_STARTUP_MESSAGE)
        return;
    CHECK(used <= len);
    size_t n = pgw_build_startup(out, sizeof(out), st.params, st.nparams);
    if (n == 0)
        return;
    CHECK(n <= sizeof(out));
    uint8_t *copy = copy_exact(out, n);
    CHECK(pgw_startup_parse(copy, n, &used, &again, &err) == PGW_OK && used == n);
    /* the same parameters, less the "_pq_." options tandem answers itself */
    CHECK(again.kind == PGW_STARTUP_MESSAGE && PGW_PROTO_MINOR(again.version) == 0);
    size_t k = 0;
    for (size_t i = 0; i < st.nparams; i++) {
        if (strncmp(st.params[i].name, "_pq_.", 5) == 0)
            continue;
        CHECK(k < again.nparams);
        CHECK(strcmp(again.params[k].name, st.params[i].name) == 0);
        CHECK(strcmp(again.params[k].value, st.params[i].value) == 0);
        k++;
    }
    CHECK(k == again.nparams);
    free(copy);

    const char *unknown[PGW_STARTUP_MAX_PARAMS];
    size_t nunknown = 0;
    for (size_t i = 0; i < st.nparams; i++)
        if (strncmp(st.params[i].name, "_pq_.", 5) == 0)
            unknown[nunknown++] = st.params[i].name;
    n = pgw_build_negotiate(v, sizeof(v), 0, unknown, nunknown);
    /* tandem refuses the client when it cannot answer (startup_negotiate) */
    if (n == 0)
        return;
    struct pgw_header h;
    CHECK(pgw_header_parse(v, n, PGW_STARTUP_MAX_LEN + 16, &h, &err) == PGW_OK);
    CHECK(h.type == 'v' && pgw_header_total(&h) == n);
    uint32_t minor, nopt;
    const char *first;
    copy = copy_exact(v + PGW_HEADER_LEN, n - PGW_HEADER_LEN);
    CHECK(pgw_negotiate_parse(copy, n - PGW_HEADER_LEN, &minor, &nopt, &first) == PGW_OK);
    CHECK(minor == 0 && nopt == nunknown);
    const char *p = first;
    for (size_t i = 0; i < nunknown; i++) {
        CHECK(strcmp(p, unknown[i]) == 0);
        p += strlen(p) + 1;
    }
    free(copy);
}

static void
server_message(uint8_t type, const uint8_t *body, size_t blen)
{
    static uint8_t out[INSPECT_MAX_MESSAGE], out2[INSPECT_MAX_MESSAGE];
    uint32_t code, pid, key;
    uint8_t status;
    struct pgw_error_fields ef;
    const char *name, *value, *err;

    switch (type) {
    case 'R':
        if (pgw_auth_parse(body, blen, &code) != PGW_OK || code != PGW_AUTH_SASL)
            return;
        size_t n = pgw_sasl_strip_plus(body, blen, out, sizeof(out));
        if (n == 0)
            return;
        struct pgw_header h;
        CHECK(pgw_header_parse(out, n, INSPECT_MAX_MESSAGE, &h, &err) == PGW_OK);
        CHECK(h.type == 'R' && pgw_header_total(&h) == n && n <= blen + PGW_HEADER_LEN);
        uint8_t *copy = copy_exact(out + PGW_HEADER_LEN, n - PGW_HEADER_LEN);
        CHECK(pgw_auth_parse(copy, n - PGW_HEADER_LEN, &code) == PGW_OK && code == PGW_AUTH_SASL);
        size_t n2 = pgw_sasl_strip_plus(copy, n - PGW_HEADER_LEN, out2, sizeof(out2));
        CHECK(n2 == n && memcmp(out2, out, n) == 0); /* nothing -PLUS is left */
        free(copy);
        break;
    case 'K':
        if (pgw_backend_key_parse(body, blen, &pid, &key) == PGW_OK) {
            CHECK(pgw_build_backend_key(out, sizeof(out), pid, key) == 13);
            CHECK(blen == 8 && memcmp(out + PGW_HEADER_LEN, body, 8) == 0);
        }
        break;
    case 'Z':
        if (pgw_ready_parse(body, blen, &status) == PGW_OK)
            CHECK(blen == 1 && (status == 'I' || status == 'T' || status == 'E'));
        break;
    case 'E':
        (void)pgw_error_parse(body, blen, &ef);
        break;
    case 'S':
        if (pgw_parameter_status_parse(body, blen, &name, &value) == PGW_OK)
            CHECK(name != NULL && value != NULL);
        break;
    default:
        break;
    }
}

static void
server_side(const uint8_t *buf, size_t len)
{
    size_t off = 0;
    while (len - off >= PGW_HEADER_LEN) {
        struct pgw_header h;
        const char *err = NULL;
        if (pgw_header_parse(buf + off, PGW_HEADER_LEN, INSPECT_MAX_MESSAGE, &h, &err) != PGW_OK) {
            CHECK(err != NULL);
            return; /* "an oversized message during authentication": the session ends */
        }
        size_t total = pgw_header_total(&h);
        if (len - off < total)
            return;
        uint8_t *body = copy_exact(buf + off + PGW_HEADER_LEN, total - PGW_HEADER_LEN);
        server_message(h.type, body, total - PGW_HEADER_LEN);
        free(body);
        off += total;
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t split = ((size_t)data[0] << 8 | data[1]) % (size - 1);
    uint8_t *client = copy_exact(data + 2, split);
    uint8_t *server = copy_exact(data + 2 + split, size - 2 - split);
    client_side(client, split);
    server_side(server, size - 2 - split);
    free(client);
    free(server);
    return 0;
}
