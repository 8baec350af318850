/*
 * fuzz_pg_backend.c - libFuzzer harness for the PostgreSQL backend-message
 * path, fed by a malicious server.
 *
 * Input:  byte seed | stream
 *   The stream is what a primary sends once logged in.  It is framed the
 *   way pg_session.c's server_active() frames it: pg_frame_step() over an
 *   evbuffer (tandem's own framing step, built in from pg/pg_frame.c) with
 *   the backend-side checks, a header's message then passed by `skip`.
 *   Every message that is whole in the buffer goes to the body parser of
 *   its type, as the session and the shadow's comparison read them.
 *
 *   The stream is framed twice: whole, and arriving in pieces whose sizes
 *   come from seed (1..16 bytes, or the rest): the headers seen, the bytes
 *   passed and where it stopped (a bad header, or input exhausted) must be
 *   identical.  No read past the input (the pieces are exact-size heap
 *   copies added by reference), every byte is passed exactly once.
 */
#include <event2/buffer.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pg/pg_frame.h"
#include "protocol/pgw.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAX_LEN 4096 /* small, so "message too large" is reachable */
#define MAX_SEEN 512

struct trace {
    uint8_t type[MAX_SEEN];
    uint32_t len[MAX_SEEN];
    size_t nseen;
    size_t passed;
    int bad;
};

/* One whole message's body, parsed as the session or the comparison would. */
static void
parse_body(uint8_t type, const uint8_t *body, size_t blen)
{
    struct pgw_error_fields ef;
    uint32_t a, b, n;
    uint8_t status, out[MAX_LEN + 16];
    const char *name, *value, *first;

    switch (type) {
    case 'E':
    case 'N':
        if (pgw_error_parse(body, blen, &ef) == PGW_OK && ef.sqlstate[0] != '\0')
            (void)pgw_sqlstate_is_denial(ef.sqlstate);
        break;
    case 'Z':
        if (pgw_ready_parse(body, blen, &status) == PGW_OK) {
            size_t m = pgw_build_ready(out, sizeof(out), status);
            CHECK(m == 6 && memcmp(out + 5, body, 1) == 0);
        }
        break;
    case 'K':
        if (pgw_backend_key_parse(body, blen, &a, &b) == PGW_OK) {
            size_t m = pgw_build_backend_key(out, sizeof(out), a, b);
            CHECK(m == 13 && memcmp(out + 5, body, 8) == 0);
        }
        break;
    case 'R':
        if (pgw_auth_parse(body, blen, &a) == PGW_OK && a == PGW_AUTH_SASL) {
            size_t m = pgw_sasl_strip_plus(body, blen, out, sizeof(out));
            CHECK(m <= sizeof(out));
        }
        break;
    case 'S':
        (void)pgw_parameter_status_parse(body, blen, &name, &value);
        break;
    case 'C': {
        struct pgw_command_tag tag;
        (void)pgw_command_complete_parse(body, blen, &tag);
        break;
    }
    case 'v':
        if (pgw_negotiate_parse(body, blen, &a, &n, &first) == PGW_OK)
            CHECK(n == 0 || first != NULL);
        break;
    default:
        break;
    }
}

static void
free_piece(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

/* Add n bytes as their own exact-size heap block, so ASan sees a read past them. */
static void
add_piece(struct evbuffer *in, const uint8_t *p, size_t n)
{
    uint8_t *q = malloc(n);
    CHECK(q != NULL);
    memcpy(q, p, n);
    CHECK(evbuffer_add_reference(in, q, n, free_piece, NULL) == 0);
}

/* Frame what is in `in`, passing bytes out as server_active() does. */
static void
frame(struct pg_frame *f, struct evbuffer *in, struct trace *t)
{
    size_t avail = evbuffer_get_length(in), run = 0;
    struct pg_frame_view view; /* as passthrough's server_active: nothing moves until the end */
    pg_frame_view_of(&view, in);

    while (!t->bad && run < avail) {
        struct pgw_header h;
        const char *err = NULL;
        size_t n = 0;
        enum pg_frame_result fr =
            pg_frame_step(f, in, &view, run, avail - run, PG_FRAME_BACKEND, MAX_LEN, &h, &n, &err);
        if (fr == PG_FRAME_PASS) {
            CHECK(n > 0 && n <= avail - run);
            run += n;
            continue;
        }
        if (fr == PG_FRAME_MORE) {
            CHECK(avail - run < PGW_HEADER_LEN);
            break;
        }
        if (fr == PG_FRAME_BAD) {
            CHECK(err != NULL && err[0] != '\0');
            t->bad = 1;
            break;
        }
        CHECK(fr == PG_FRAME_HEADER);
        CHECK(h.len >= 4 && h.len <= MAX_LEN);
        CHECK(pgw_backend_type_valid(h.type) && pgw_backend_len_valid(h.type, h.len));
        size_t total = pgw_header_total(&h);
        if (t->nseen < MAX_SEEN) {
            t->type[t->nseen] = h.type;
            t->len[t->nseen] = h.len;
        }
        t->nseen++;
        if (avail - run >= total) {
            uint8_t *msg = malloc(total);
            struct evbuffer_ptr pos;
            CHECK(msg != NULL);
            evbuffer_ptr_set(in, &pos, run, EVBUFFER_PTR_SET);
            CHECK(evbuffer_copyout_from(in, &pos, msg, total) == (ev_ssize_t)total);
            parse_body(h.type, msg + PGW_HEADER_LEN, total - PGW_HEADER_LEN);
            free(msg);
        }
        f->skip = total; /* passed by the next steps */
    }
    /* the run goes to the client */
    CHECK(evbuffer_drain(in, run) == 0);
    t->passed += run;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t seed = data[0];
    const uint8_t *stream = data + 1;
    size_t len = size - 1;
    struct trace whole = {0}, pieces = {0};
    struct pg_frame f;

    struct evbuffer *in = evbuffer_new();
    CHECK(in != NULL);
    memset(&f, 0, sizeof(f));
    if (len > 0)
        add_piece(in, stream, len);
    frame(&f, in, &whole);
    CHECK(whole.passed + evbuffer_get_length(in) == len);
    CHECK(whole.bad || evbuffer_get_length(in) < PGW_HEADER_LEN);
    evbuffer_free(in);

    in = evbuffer_new();
    CHECK(in != NULL);
    memset(&f, 0, sizeof(f));
    size_t off = 0;
    uint32_t x = seed | 1u;
    while (off < len && !pieces.bad) {
        x = x * 1103515245u + 12345u;
        size_t n = (x >> 16) % 17;
        if (n == 0 || n > len - off)
            n = len - off;
        add_piece(in, stream + off, n);
        off += n;
        frame(&f, in, &pieces);
    }
    /* what whole framing saw, piecewise framing saw too, in the same order */
    CHECK(pieces.bad == whole.bad);
    CHECK(pieces.nseen == whole.nseen);
    for (size_t i = 0; i < whole.nseen && i < MAX_SEEN; i++)
        CHECK(pieces.type[i] == whole.type[i] && pieces.len[i] == whole.len[i]);
    CHECK(pieces.passed == whole.passed);
    evbuffer_free(in);
    return 0;
}
