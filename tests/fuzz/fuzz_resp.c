/*
 * fuzz_resp.c - libFuzzer harness for the RESP2 codec and the command table.
 *
 * One call per input, three uses of it:
 *   1. a request pipeline, under the default limits and under tight pre-auth
 *      limits: each command framed in turn, its arguments decoded, looked up
 *      and classified; every strict prefix of a framed command must be
 *      NEED_MORE (a prefix can never be "invalid");
 *   2. a reply stream fed whole to a reader in the digest mode size % 6;
 *   3. the same stream fed in two pieces split where the last byte says: the
 *      replies, their ends and digests must be identical to (2).
 * Invariants are checked with abort() so a violation is a crash.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/rediscmd.h"
#include "protocol/resp.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond))                                                                         \
            abort();                                                                         \
    } while (0)

static void
one_command(const uint8_t *cmd, size_t used, const struct resp_request *req)
{
    CHECK(req->nargv <= RESP_MAX_ARGS && req->nargv <= req->argc);
    CHECK(req->nargv == (req->argc < RESP_MAX_ARGS ? req->argc : RESP_MAX_ARGS));
    CHECK(req->wire_len == used);
    for (size_t i = 0; i < req->nargv; i++) {
        const struct resp_arg *a = &req->argv[i];
        CHECK(a->ptr >= cmd && a->ptr + a->len <= cmd + used);
        uint8_t val[64];
        size_t n = resp_arg_decode(a, val, sizeof(val));
        CHECK(n <= a->len);
        CHECK(a->quoted || n == a->len);
        (void)resp_arg_equal_ci(a, "block");
    }
    const struct rediscmd *rc = rediscmd_lookup(req->argc, req->argv);
    enum req_kind kind = rediscmd_kind(rc, req->argc, req->argv);
    CHECK((unsigned)kind < REQ_KIND__COUNT);
    int fk = rediscmd_first_key(rc, req->argc, req->argv);
    CHECK(fk == -1 || (fk > 0 && (size_t)fk < req->nargv));
    enum resp_digest_mode mode = rediscmd_digest_mode(rc, req->argc, req->argv);
    CHECK(mode >= RESP_DIGEST_NONE && mode <= RESP_DIGEST_SCAN_PAIRS);
    if (rc != NULL)
        (void)rediscmd_arity_ok(rc, req->argc);
}

static void
requests(const uint8_t *data, size_t size, const struct resp_limits *lim)
{
    size_t off = 0;
    for (int guard = 0; off < size && guard < 4096; guard++) {
        struct resp_request req;
        size_t used = 0;
        const char *err = NULL;
        enum resp_status st = resp_request_parse(data + off, size - off, lim, &used, &req, &err);
        if (st == RESP_NEED_MORE) {
            CHECK(used > size - off);
            return;
        }
        if (st == RESP_ERROR) {
            CHECK(err != NULL && err[0] != '\0');
            uint8_t out[128];
            CHECK(resp_build_protocol_error(out, sizeof(out), err) > 0);
            return;
        }
        CHECK(st == RESP_OK && used > 0 && used <= size - off);
        one_command(data + off, used, &req);
        /* a strict prefix: incomplete, never an error */
        if (guard < 8) {
            size_t cut = used - 1 - (used > 1 ? data[off] % (used - 1) : 0);
            struct resp_request pre;
            size_t pused;
            CHECK(resp_request_parse(data + off, cut, lim, &pused, &pre, &err) == RESP_NEED_MORE);
            CHECK(pused > cut);
        }
        off += used;
    }
}

#define MAX_REPLIES 64

struct replies {
    size_t n;
    size_t end[MAX_REPLIES];
    uint64_t digest[MAX_REPLIES];
    uint64_t size[MAX_REPLIES];
    enum resp_status last;
};

/* Feed data in pieces cut at the given offsets; record every reply. */
static void
read_replies(const uint8_t *data, size_t size, enum resp_digest_mode mode, const size_t *cuts,
             size_t ncuts, struct replies *out)
{
    struct resp_reader r;
    resp_reader_init(&r, mode);
    out->n = 0;
    out->last = RESP_NEED_MORE;
    size_t pos = 0;
    for (size_t c = 0; c <= ncuts; c++) {
        size_t stop = c < ncuts ? cuts[c] : size;
        while (pos < stop) {
            struct resp_reply_info info;
            size_t used = 0;
            const char *err = NULL;
            enum resp_status st = resp_reader_feed(&r, data + pos, stop - pos, &used, &info, &err);
            CHECK(used <= stop - pos);
            out->last = st;
            if (st == RESP_ERROR) {
                CHECK(err != NULL);
                return;
            }
            pos += used;
            if (st == RESP_NEED_MORE) {
                CHECK(pos == stop);
                break;
            }
            CHECK(used > 0 && info.size > 0);
            CHECK(mode != RESP_DIGEST_NONE || info.digest == 0);
            if (out->n == MAX_REPLIES)
                return;
            out->end[out->n] = pos;
            out->digest[out->n] = info.digest;
            out->size[out->n] = info.size;
            out->n++;
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct resp_limits lim;
    resp_limits_init(&lim);
    requests(data, size, &lim);
    lim.pre_auth = true;
    lim.max_inline_len = 64;
    lim.max_bulk_len = 4096;
    lim.unauth_max_bulk_len = 32;
    lim.unauth_max_mbulk_len = 4;
    requests(data, size, &lim);

    enum resp_digest_mode mode = (enum resp_digest_mode)(size % 6);
    struct replies whole, split;
    read_replies(data, size, mode, NULL, 0, &whole);
    size_t cut = size > 0 ? data[size - 1] % (size + 1) : 0;
    read_replies(data, size, mode, &cut, 1, &split);
    CHECK(whole.n == split.n && whole.last == split.last);
    for (size_t i = 0; i < whole.n; i++) {
        CHECK(whole.end[i] == split.end[i]);
        CHECK(whole.digest[i] == split.digest[i]);
        CHECK(whole.size[i] == split.size[i]);
        CHECK(whole.size[i] == whole.end[i] - (i > 0 ? whole.end[i - 1] : 0));
    }

    /* the stateless scan agrees with the reader on the first reply */
    struct resp_reply_info info;
    size_t used;
    const char *err;
    enum resp_status st = resp_reply_scan(data, size, mode, &used, &info, &err);
    if (whole.n > 0) {
        CHECK(st == RESP_OK && used == whole.end[0] && info.digest == whole.digest[0]);
    } else if (st == RESP_NEED_MORE) {
        CHECK(used > size);
    }
    return 0;
}
