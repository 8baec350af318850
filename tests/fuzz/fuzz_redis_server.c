/*
 * fuzz_redis_server.c - libFuzzer harness for the Redis reply path, fed by a
 * malicious server (primary or shadow).
 *
 * Input:  byte flags | byte seed | reply stream
 *   flags  bits 0-2: digest mode (% 6), bits 3-7: which rediscmd flags the
 *          command had (NONDET, TTL_REPLY ... as in rediscmd.h)
 *
 * The stream is read as redis_session.c reads a backend's replies: by one
 * resp_reader that is fed whatever arrived, here in pieces of 1..64 bytes
 * (seeded) each an exact-size heap copy, so a read past a piece is caught.
 * Checked: every reply's info equals what resp_reply_scan() says of the
 * same bytes held whole (boundaries and digest do not depend on how the
 * bytes arrived); each reply is rendered for the report (rediscmp_render,
 * always NUL-terminated within its cap) and compared with the one before it
 * as primary and shadow answers (rediscmp_outcome): a reply compared with
 * itself matches, and the outcome of (a, b) and (b, a) agree on match.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/outcome.h"
#include "protocol/rediscmd.h"
#include "protocol/rediscmp.h"
#include "protocol/resp.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

#define MAX_REPLIES 256

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    enum resp_digest_mode mode = (enum resp_digest_mode)(data[0] % 6);
    uint32_t cmdflags = (uint32_t)(data[0] >> 3) << 8; /* UNORDERED, NONDET, TTL_REPLY... */
    uint32_t x = data[1] | 1u;
    const uint8_t *stream = data + 2;
    size_t len = size - 2;

    struct resp_reader r;
    resp_reader_init(&r, mode);
    size_t off = 0, start = 0, nreplies = 0;
    struct resp_reply_info prev = {0};
    int have_prev = 0;

    while (off < len && nreplies < MAX_REPLIES) {
        x = x * 1103515245u + 12345u;
        size_t n = 1 + (x >> 16) % 64;
        if (n > len - off)
            n = len - off;
        uint8_t *piece = malloc(n);
        CHECK(piece != NULL);
        memcpy(piece, stream + off, n);
        size_t at = 0;
        int dead = 0;
        while (at < n) {
            size_t used = 0;
            struct resp_reply_info info;
            const char *err = NULL;
            enum resp_status st = resp_reader_feed(&r, piece + at, n - at, &used, &info, &err);
            CHECK(used <= n - at);
            if (st == RESP_ERROR) {
                CHECK(err != NULL);
                dead = 1; /* the session closes the backend connection */
                break;
            }
            at += used;
            if (st == RESP_NEED_MORE) {
                CHECK(at == n);
                break;
            }
            CHECK(st == RESP_OK);
            size_t end = off + at;
            CHECK(info.size == end - start);

            /* the same reply held whole says the same */
            uint8_t *whole = malloc(end - start);
            CHECK(whole != NULL);
            memcpy(whole, stream + start, end - start);
            size_t sused = 0;
            struct resp_reply_info sinfo;
            const char *serr = NULL;
            CHECK(resp_reply_scan(whole, end - start, mode, &sused, &sinfo, &serr) == RESP_OK);
            CHECK(sused == end - start && sinfo.type == info.type && sinfo.null == info.null &&
                  sinfo.count == info.count && sinfo.digest == info.digest);

            char out[97];
            size_t cap = 1 + (x >> 8) % sizeof(out);
            size_t w = rediscmp_render(whole, end - start, info.size, out, cap);
            CHECK(w < cap && out[w] == '\0');
            free(whole);

            CHECK(rediscmp_outcome(cmdflags, &info, &info, 0) == SHADOW_MATCH);
            if (have_prev) {
                enum shadow_outcome ab = rediscmp_outcome(cmdflags, &prev, &info, 2);
                enum shadow_outcome ba = rediscmp_outcome(cmdflags, &info, &prev, 2);
                CHECK((ab == SHADOW_MATCH) == (ba == SHADOW_MATCH));
            }
            prev = info;
            have_prev = 1;
            start = end;
            nreplies++;
        }
        free(piece);
        off += n;
        if (dead)
            break;
    }
    return 0;
}
