/*
 * fuzz_pgdigest.c - libFuzzer harness for the answer digest.
 *
 * Input:  byte flags | messages...
 *   flags    bit 0 ordered, bit 1 ignore columns "a" and "updated_at",
 *            bit 2 unstable, bits 3-7 sample capacity / 9 (0..279 bytes)
 *   message  byte type | int32 len (body + 4, big-endian) | uint16 split | body
 *            (a body longer than what is left is cut to what is left)
 *
 * Each body is fed three times, into three digests: cut in two at split %
 * (len + 1), whole, and cut in 1-byte pieces (3 pieces when long); every
 * piece is its own exact-size heap copy, so a read past a piece is caught by
 * ASan even where the input continues.  Besides "no crash, no read out of
 * bounds", what must hold: the three results and samples are identical, a
 * sample is NUL-terminated within its capacity and valid UTF-8, final does
 * not change the digest, and an answer compared with itself matches (or is a
 * primary error when malformed).
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/pgdigest.h"

#define CHECK(cond)                                                                           \
    do {                                                                                      \
        if (!(cond))                                                                          \
            abort();                                                                          \
    } while (0)

#define MAX_PIECES 260
#define SAMPLE_MAX 280

static void *
copy_exact(const uint8_t *p, size_t n)
{
    void *q = malloc(n ? n : 1);
    CHECK(q != NULL);
    if (n)
        memcpy(q, p, n);
    return q;
}

/* Feed body as the pieces cut at cuts[0 .. ncuts) (ascending, <= len). */
static void
feed_cut(struct pgdigest *d, uint8_t type, const uint8_t *body, size_t len, const size_t *cuts,
         int ncuts)
{
    struct iovec iov[MAX_PIECES];
    size_t from = 0;
    int n = 0;

    for (int i = 0; i <= ncuts; i++) {
        size_t to = i < ncuts ? cuts[i] : len;
        iov[n].iov_base = copy_exact(body + from, to - from);
        iov[n++].iov_len = to - from;
        from = to;
    }
    pgdigest_feed(d, type, iov, n, len);
    for (int i = 0; i < n; i++)
        free(iov[i].iov_base);
}

static bool
utf8_valid(const char *str)
{
    const uint8_t *s = (const uint8_t *)str;
    while (*s) {
        size_t len;
        uint8_t lo = 0x80, hi = 0xbf;
        if (*s < 0x80)
            len = 1;
        else if (*s >= 0xc2 && *s <= 0xdf)
            len = 2;
        else if (*s >= 0xe0 && *s <= 0xef) {
            len = 3;
            lo = *s == 0xe0 ? 0xa0 : 0x80;
            hi = *s == 0xed ? 0x9f : 0xbf;
        } else if (*s >= 0xf0 && *s <= 0xf4) {
            len = 4;
            lo = *s == 0xf0 ? 0x90 : 0x80;
            hi = *s == 0xf4 ? 0x8f : 0xbf;
        } else
            return false;
        if (len > 1 && (s[1] < lo || s[1] > hi))
            return false;
        for (size_t i = 2; i < len; i++)
            if (s[i] < 0x80 || s[i] > 0xbf)
                return false;
        s += len;
    }
    return true;
}

static void
check_same(const struct pgdigest_result *a, const struct pgdigest_result *b)
{
    CHECK(a->hash == b->hash && a->rows == b->rows && a->error == b->error);
    CHECK(a->malformed == b->malformed);
    CHECK(memcmp(a->sqlstate, b->sqlstate, sizeof(a->sqlstate)) == 0);
    CHECK(memcmp(a->tag, b->tag, sizeof(a->tag)) == 0);
}

static void
check_result(const struct pgdigest_result *r)
{
    size_t state = strnlen(r->sqlstate, sizeof(r->sqlstate));
    CHECK(state == 0 || state == 5);
    CHECK(r->error || state == 0);
    CHECK(strnlen(r->tag, sizeof(r->tag)) < sizeof(r->tag));
    CHECK(utf8_valid(r->tag));
}

static void
check_sample(const char *sample, size_t cap)
{
    if (cap == 0)
        return;
    CHECK(strnlen(sample, cap) < cap);
    CHECK(utf8_valid(sample));
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const ign[] = {"a", "updated_at"};
    char sample[3][SAMPLE_MAX + 1];
    struct pgdigest d[3], half;
    struct pgdigest_result r[3], again, rh;

    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    struct pgdigest_opts opts = {
        .ordered = flags & 1,
        .ignore_columns = (flags & 2) ? ign : NULL,
        .nignore = (flags & 2) ? 2 : 0,
    };
    bool unstable = flags & 4;
    size_t cap = (size_t)(flags >> 3) * 9;

    for (int i = 0; i < 3; i++) {
        memset(sample[i], 0x5a, sizeof(sample[i]));
        pgdigest_init(&d[i], &opts, cap ? sample[i] : NULL, cap);
    }
    pgdigest_init(&half, &opts, NULL, 0);

    size_t off = 1, nmsg = 0;
    while (size - off >= 7) {
        uint8_t type = data[off];
        uint32_t wire = (uint32_t)data[off + 1] << 24 | (uint32_t)data[off + 2] << 16
                        | (uint32_t)data[off + 3] << 8 | data[off + 4];
        size_t split = (size_t)data[off + 5] << 8 | data[off + 6];
        off += 7;
        size_t len = wire < 4 ? 0 : wire - 4;
        if (len > size - off)
            len = size - off;
        const uint8_t *body = data + off;
        off += len;

        size_t cuts[MAX_PIECES];
        cuts[0] = split % (len + 1);
        feed_cut(&d[0], type, body, len, cuts, 1);
        feed_cut(&d[1], type, body, len, cuts, 0);
        if (len < MAX_PIECES - 1) {
            for (size_t i = 1; i < len; i++)
                cuts[i - 1] = i;
            feed_cut(&d[2], type, body, len, cuts, len > 1 ? (int)len - 1 : 0);
        } else {
            cuts[1] = cuts[0] + (len - cuts[0]) / 2;
            feed_cut(&d[2], type, body, len, cuts, 2);
        }
        if (nmsg++ % 2 == 0)
            feed_cut(&half, type, body, len, cuts, 0);
    }

    for (int i = 0; i < 3; i++) {
        pgdigest_final(&d[i], &r[i]);
        pgdigest_final(&d[i], &again);
        check_same(&r[i], &again);
        check_result(&r[i]);
        check_sample(sample[i], cap);
        for (size_t j = cap; j < sizeof(sample[i]); j++)
            CHECK(sample[i][j] == 0x5a);
    }
    check_same(&r[0], &r[1]);
    check_same(&r[0], &r[2]);
    if (cap) {
        CHECK(strcmp(sample[0], sample[1]) == 0);
        CHECK(strcmp(sample[0], sample[2]) == 0);
    }

    enum shadow_outcome o = pgdigest_compare(&r[0], &r[1], unstable);
    CHECK(o == (r[0].malformed ? SHADOW_PRIMARY_ERROR : SHADOW_MATCH));
    pgdigest_final(&half, &rh);
    o = pgdigest_compare(&r[0], &rh, unstable);
    CHECK((unsigned)o < SHADOW__COUNT);
    CHECK(o != SHADOW_SHADOW_TIMEOUT && o != SHADOW_DROPPED);
    if (unstable)
        CHECK(o != SHADOW_MISMATCH);
    return 0;
}
