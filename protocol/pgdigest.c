/*
 * pgdigest.c - the digest of one side's answer to one request unit.
 *
 * Two hashes are built, both over byte strings defined by content alone, never
 * by how the bytes were split across iovecs:
 *
 *   the unit hash   over a canonical "event" string: for each message that
 *                   counts, its type byte and the fields that count (names,
 *                   OIDs, tags, SQLSTATEs...), and for each result set that
 *                   had rows, an 'r' event with its row combination.
 *   a row hash      per DataRow, over the body with ignored columns cut out:
 *                   int16 ncols, then for each kept column int32 len and its
 *                   bytes.  With no ignored column that is the body itself, so
 *                   a body in one piece is hashed in place (the hot path);
 *                   otherwise it is streamed through a block buffer.
 *
 * Both use one construction over XXH3 (hasher_* and hash_contig below): the
 * string is cut in blocks of PGDIGEST_BLOCK bytes, each block but the last
 * hashed with the previous block's hash as seed, the last (1..BLOCK bytes, or
 * none) with seed ^ total length.  A streaming hasher only needs one block of
 * buffer and no alignment, which keeps struct pgdigest a small, plain,
 * copyable value (XXH3_state_t wants 64-byte alignment and 576 bytes).
 * Blocks of 240 bytes stay on XXH3's mid-size path: past 240 a seeded XXH3
 * derives a fresh secret per call (measured: 4 KB values hashed at 7 GB/s
 * with 256-byte blocks, 12 GB/s with 240).
 *
 *   message ──► type switch ──► 'D' in one piece, no ignored column?
 *                   │               yes: check lengths, XXH3(body) ──┐
 *                   │               no:  cursor over iovecs ─► block hasher ─┤
 *                   │                                                       ▼
 *                   │                                       add_row: ordered chain
 *                   │                                       or multiset sum/xor/count
 *                   │                                                       │
 *                   └─ T C E I s ... ─► unit events ◄── 'r' fold at set end ─┘
 */
#include "protocol/pgdigest.h"

#include <stddef.h>
#include <string.h>

#define XXH_INLINE_ALL /* short rows: inlined XXH3 saves a call per row */
#include <xxhash.h>

#define UNIT_SEED 0x74616e64656d3031ull /* "tandem01" */
#define SAMPLE_VALUE_MAX 48             /* bytes of one value shown in the sample */
#define SAMPLE_RESERVE_MAX 64           /* sample bytes kept back from rows for a tag */
#define NAME_SCRATCH 128                /* column names compared and shown (NAMEDATALEN is 64) */
#define MESSAGE_SCRATCH 160             /* error message bytes shown */

/* ------------------------------------------------------------------ */
/* Hashing.                                                           */

static inline uint64_t
hash_contig(uint64_t seed, const uint8_t *p, size_t n)
{
    uint64_t h = seed;
    size_t total = n;

    while (n > PGDIGEST_BLOCK) {
        h = XXH3_64bits_withSeed(p, PGDIGEST_BLOCK, h);
        p += PGDIGEST_BLOCK;
        n -= PGDIGEST_BLOCK;
    }
    return XXH3_64bits_withSeed(p, n, h ^ (uint64_t)total);
}

static void
hasher_reset(struct pgdigest_hasher *hs, uint64_t seed)
{
    hs->h = seed;
    hs->total = 0;
    hs->fill = 0;
}

static void
hasher_put_slow(struct pgdigest_hasher *hs, const uint8_t *p, size_t n)
{
    while (n > 0) {
        /* A full buffer is hashed only once more bytes come: the last
         * block is hashed differently. */
        if (hs->fill == PGDIGEST_BLOCK) {
            hs->h = XXH3_64bits_withSeed(hs->buf, PGDIGEST_BLOCK, hs->h);
            hs->fill = 0;
        }
        if (hs->fill == 0) {
            while (n > PGDIGEST_BLOCK) {
                hs->h = XXH3_64bits_withSeed(p, PGDIGEST_BLOCK, hs->h);
                p += PGDIGEST_BLOCK;
                n -= PGDIGEST_BLOCK;
            }
        }
        size_t k = PGDIGEST_BLOCK - hs->fill;
        if (k > n)
            k = n;
        memcpy(hs->buf + hs->fill, p, k);
        hs->fill += k;
        p += k;
        n -= k;
    }
}

/* Same value as hash_contig over the concatenation of every piece put. */
static inline void
hasher_put(struct pgdigest_hasher *hs, const void *data, size_t n)
{
    hs->total += n;
    if (n <= PGDIGEST_BLOCK - hs->fill) {
        memcpy(hs->buf + hs->fill, data, n);
        hs->fill += n;
        return;
    }
    hasher_put_slow(hs, data, n);
}

static uint64_t
hasher_digest(const struct pgdigest_hasher *hs)
{
    return XXH3_64bits_withSeed(hs->buf, hs->fill, hs->h ^ hs->total);
}

static void
hasher_u8(struct pgdigest_hasher *hs, uint8_t v)
{
    hasher_put(hs, &v, 1);
}

static void
hasher_u32(struct pgdigest_hasher *hs, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    hasher_put(hs, b, 4);
}

static void
hasher_u64(struct pgdigest_hasher *hs, uint64_t v)
{
    hasher_u32(hs, (uint32_t)(v >> 32));
    hasher_u32(hs, (uint32_t)v);
}

/* splitmix64's finalizer: a bijection that spreads every input bit. */
static inline uint64_t
mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    x ^= x >> 31;
    return x;
}

static inline uint32_t
be16(const uint8_t *p)
{
    return (uint32_t)p[0] << 8 | p[1];
}

static inline uint32_t
be32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return __builtin_bswap32(v);
}

/* Server-assigned OIDs differ between servers; built-in ones do not. */
static inline uint32_t
oid_class(uint32_t oid)
{
    return oid >= PGDIGEST_FIRST_USER_OID ? PGDIGEST_FIRST_USER_OID : oid;
}

/* ------------------------------------------------------------------ */
/* A read cursor over a body given as iovecs (lengths already checked   */
/* to add up to the body length).                                     */

struct cur {
    const struct iovec *iov;
    int cnt;
    int i;
    size_t off;  /* into iov[i] */
    size_t left; /* body bytes not consumed */
};

static void
cur_init(struct cur *c, const struct iovec *iov, int cnt, size_t len)
{
    c->iov = iov;
    c->cnt = cnt;
    c->i = 0;
    c->off = 0;
    c->left = len;
}

/* The next contiguous run of unconsumed bytes; 0 at the end. */
static size_t
cur_run(struct cur *c, const uint8_t **p)
{
    while (c->i < c->cnt && c->off >= c->iov[c->i].iov_len) {
        c->i++;
        c->off = 0;
    }
    if (c->i >= c->cnt || c->left == 0)
        return 0;
    size_t n = c->iov[c->i].iov_len - c->off;
    *p = (const uint8_t *)c->iov[c->i].iov_base + c->off;
    return n < c->left ? n : c->left;
}

static void
cur_adv(struct cur *c, size_t n)
{
    c->off += n;
    c->left -= n;
}

/* Copy n bytes to dst (dst may be NULL: skip), hash them into hs (may be
 * NULL).  false, consuming nothing, if fewer than n bytes are left. */
static bool
cur_take(struct cur *c, void *dst, size_t n, struct pgdigest_hasher *hs)
{
    uint8_t *out = dst;

    if (n > c->left)
        return false;
    while (n > 0) {
        const uint8_t *p = NULL;
        size_t k = cur_run(c, &p);
        if (k == 0)
            return false; /* unreachable: lengths were checked */
        if (k > n)
            k = n;
        if (out) {
            memcpy(out, p, k);
            out += k;
        }
        if (hs)
            hasher_put(hs, p, k);
        cur_adv(c, k);
        n -= k;
    }
    return true;
}

static bool
cur_u8(struct cur *c, uint8_t *v)
{
    return cur_take(c, v, 1, NULL);
}

static bool
cur_u16(struct cur *c, uint32_t *v)
{
    uint8_t b[2];
    if (!cur_take(c, b, 2, NULL))
        return false;
    *v = be16(b);
    return true;
}

static bool
cur_u32(struct cur *c, uint32_t *v)
{
    uint8_t b[4];
    if (!cur_take(c, b, 4, NULL))
        return false;
    *v = be32(b);
    return true;
}

/*
 * A NUL-terminated string: its bytes (not the NUL) are hashed into hs (may be
 * NULL) and the first cap - 1 of them copied to copy (may be NULL), which is
 * NUL-terminated; *len is the full length.  false if no NUL is left.
 */
static bool
cur_string(struct cur *c, struct pgdigest_hasher *hs, char *copy, size_t cap, size_t *len)
{
    size_t n = 0, kept = 0;

    for (;;) {
        const uint8_t *p = NULL;
        size_t k = cur_run(c, &p);
        if (k == 0)
            return false;
        const uint8_t *nul = memchr(p, 0, k);
        size_t take = nul ? (size_t)(nul - p) : k;
        if (hs)
            hasher_put(hs, p, take);
        if (copy && kept + 1 < cap) {
            size_t m = cap - 1 - kept;
            if (m > take)
                m = take;
            memcpy(copy + kept, p, m);
            kept += m;
        }
        n += take;
        cur_adv(c, take + (nul != NULL));
        if (nul)
            break;
    }
    if (copy && cap > 0)
        copy[kept] = '\0';
    if (len)
        *len = n;
    return true;
}

/* ------------------------------------------------------------------ */
/* The sample.                                                        */

/*
 * Content may fill the sample up to this length, keeping room for "..." and
 * the NUL after it; rows also keep back a reserve for a tag that follows.
 */
static size_t
sample_limit(const struct pgdigest *d, bool row)
{
    size_t lim = d->sample_cap - 1;
    if (row) {
        size_t reserve = d->sample_cap / 4;
        lim -= reserve < SAMPLE_RESERVE_MAX ? reserve : SAMPLE_RESERVE_MAX;
    }
    return lim > 3 ? lim - 3 : 0;
}

static bool
sample_ascii(struct pgdigest *d, const char *s, size_t n, size_t lim)
{
    if (d->sample_len + n > lim)
        return false;
    memcpy(d->sample + d->sample_len, s, n);
    d->sample_len += n;
    d->sample[d->sample_len] = '\0';
    return true;
}

#define SAMPLE_LIT(d, s, lim) sample_ascii((d), (s), sizeof(s) - 1, (lim))

/* Length of the valid UTF-8 sequence at p (n bytes available), or 0. */
static size_t
utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t b = p[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xbf;

    if (b < 0x80)
        return 1;
    if (b >= 0xc2 && b <= 0xdf)
        len = 2;
    else if (b >= 0xe0 && b <= 0xef) {
        len = 3;
        if (b == 0xe0)
            lo = 0xa0;
        else if (b == 0xed)
            hi = 0x9f;
    } else if (b >= 0xf0 && b <= 0xf4) {
        len = 4;
        if (b == 0xf0)
            lo = 0x90;
        else if (b == 0xf4)
            hi = 0x8f;
    } else
        return 0;
    if (n < len || p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/* Arbitrary bytes as one line of valid UTF-8: whole characters only, control
 * characters and stray bytes escaped.  false when it did not all fit. */
static bool
sample_text(struct pgdigest *d, const uint8_t *s, size_t n, size_t lim)
{
    static const char hex[] = "0123456789abcdef";

    for (size_t i = 0; i < n;) {
        /* a run of printable ASCII (tags, numbers, most values) in one copy */
        size_t run = 0;
        while (i + run < n && s[i + run] >= 0x20 && s[i + run] < 0x7f)
            run++;
        if (run > 0) {
            size_t room = lim > d->sample_len ? lim - d->sample_len : 0;
            /* what fits, as the character-wise copy would have kept */
            sample_ascii(d, (const char *)s + i, run < room ? run : room, lim);
            if (run > room)
                return false;
            i += run;
            continue;
        }
        size_t len = utf8_seq(s + i, n - i);
        char esc[4];
        const char *out = (const char *)s + i;
        size_t outlen = len;

        if (len == 0 || (len == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
            out = esc;
            esc[0] = '\\';
            if (s[i] == '\n' || s[i] == '\t' || s[i] == '\r') {
                esc[1] = s[i] == '\n' ? 'n' : s[i] == '\t' ? 't' : 'r';
                outlen = 2;
            } else {
                esc[1] = 'x';
                esc[2] = hex[s[i] >> 4];
                esc[3] = hex[s[i] & 15];
                outlen = 4;
            }
            len = 1;
        }
        if (!sample_ascii(d, out, outlen, lim))
            return false;
        i += len;
    }
    return true;
}

/* Starts an item: " | " unless it is the first. */
static bool
sample_item(struct pgdigest *d, size_t lim)
{
    return d->sample_len == 0 || SAMPLE_LIT(d, " | ", lim);
}

/* Something did not fit: mark the cut, stop rows (and all, for a tag). */
static void
sample_overflow(struct pgdigest *d, bool row)
{
    if (d->sample_len + 3 < d->sample_cap)
        sample_ascii(d, "...", 3, d->sample_cap - 1);
    d->sample_rows_full = true;
    if (!row)
        d->sample_full = true;
}

/* At most SAMPLE_VALUE_MAX bytes of the next vlen bytes of c, cut on a
 * character boundary; consumes all vlen. */
static bool
sample_value(struct pgdigest *d, struct cur *c, size_t vlen, size_t lim)
{
    uint8_t tmp[SAMPLE_VALUE_MAX + 3];
    size_t got = vlen < sizeof(tmp) ? vlen : sizeof(tmp);
    size_t cut = got;

    cur_take(c, tmp, got, NULL);
    cur_take(c, NULL, vlen - got, NULL);
    if (vlen > SAMPLE_VALUE_MAX) {
        cut = SAMPLE_VALUE_MAX;
        for (int back = 0; back < 3 && cut > 0 && (tmp[cut] & 0xc0) == 0x80; back++)
            cut--;
    }
    return sample_text(d, tmp, cut, lim) && (cut == vlen || SAMPLE_LIT(d, "...", lim));
}

/* A DataRow already found valid: "v1, v2, NULL". */
static void
sample_datarow(struct pgdigest *d, const struct iovec *iov, int iovcnt, size_t body_len)
{
    size_t lim = sample_limit(d, true);
    struct cur c;
    uint32_t ncols, len;

    cur_init(&c, iov, iovcnt, body_len);
    if (!cur_u16(&c, &ncols) || !sample_item(d, lim))
        goto overflow;
    for (uint32_t i = 0; i < ncols; i++) {
        if (!cur_u32(&c, &len))
            return;
        if (i > 0 && !SAMPLE_LIT(d, ", ", lim))
            goto overflow;
        if ((int32_t)len < 0) {
            if (!SAMPLE_LIT(d, "NULL", lim))
                goto overflow;
        } else if (!sample_value(d, &c, len, lim))
            goto overflow;
    }
    return;
overflow:
    sample_overflow(d, true);
}

/* One tag-level item (command tag, error, marker). */
static void
sample_tag_item(struct pgdigest *d, const char *a, size_t alen, const char *b, size_t blen)
{
    size_t lim = sample_limit(d, false);

    if (d->sample_full)
        return;
    if (!sample_item(d, lim) || !sample_text(d, (const uint8_t *)a, alen, lim)
        || !sample_text(d, (const uint8_t *)b, blen, lim))
        sample_overflow(d, false);
}

/*
 * sample_tag_item for text that needs no escaping (a tag copy_text made):
 * copied whole when it fits, as sample_text would have copied it.
 */
static void
sample_clean_item(struct pgdigest *d, const char *a, size_t alen)
{
    size_t lim, sep;

    if (d->sample_full)
        return;
    lim = sample_limit(d, false);
    sep = d->sample_len == 0 ? 0 : 3;
    if (d->sample_len + sep + alen > lim) {
        sample_tag_item(d, a, alen, "", 0); /* cut on a character boundary there */
        return;
    }
    memcpy(d->sample + d->sample_len, " | ", sep);
    memcpy(d->sample + d->sample_len + sep, a, alen);
    d->sample_len += sep + alen;
    d->sample[d->sample_len] = '\0';
}

/* ------------------------------------------------------------------ */
/* Result sets and rows.                                              */

/*
 * Rows of a result set are combined as they come, so nothing but three words
 * is kept however many there are.
 *
 * In order: chain = mix64(chain + h + K) per row.  mix64 is a bijection, so a
 * different row at any position (or a different order) changes every later
 * chain value unless the 64-bit row hashes themselves collide.
 *
 * As a multiset: sum += h, xor ^= mix64(h ^ K), and the count.  The sum is the
 * additive multiset hash (MSet-Add-Hash, Clarke et al. 2003): order-free, and
 * two different multisets of rows with pseudo-random 64-bit hashes collide
 * with probability about 2^-64, the same as two single row hashes; weaker
 * only when every multiplicity differs by a multiple of 2^k (then 2^-(64-k)).
 * The xor, over an independent-looking remix of h, is order-free too and
 * fails differently: it only sees multiplicities mod 2, but is unmoved by
 * the carries that a sum collision relies on.  A difference has to fool both
 * and keep the count, and the three words are then hashed together.  None of
 * this resists a crafted collision (XXH3 is not a cryptographic hash); it
 * does not need to: both sides answer the same statement on their own data.
 */
#define ORDER_K 0x9e3779b97f4a7c15ull
#define XOR_K 0xd6e8feb86659fd93ull

static inline void
add_row(struct pgdigest *d, uint64_t h)
{
    d->rows++;
    d->set_rows++;
    if (d->opts.ordered) {
        d->set_chain = mix64(d->set_chain + h + ORDER_K);
    } else {
        d->set_sum += h;
        d->set_xor ^= mix64(h ^ XOR_K);
    }
}

static void
fold_set(const struct pgdigest *d, struct pgdigest_hasher *hs)
{
    hasher_u8(hs, 'r');
    hasher_u8(hs, d->opts.ordered);
    hasher_u64(hs, d->set_rows);
    hasher_u64(hs, d->opts.ordered ? d->set_chain : d->set_sum);
    hasher_u64(hs, d->opts.ordered ? 0 : d->set_xor);
}

/* A result set ends: fold its rows (if any) into the unit. */
static void
end_set(struct pgdigest *d)
{
    if (d->set_rows == 0)
        return;
    fold_set(d, &d->unit);
    d->set_rows = d->set_sum = d->set_xor = d->set_chain = 0;
}

/* The column layout (from 'T') no longer applies. */
static void
reset_layout(struct pgdigest *d)
{
    d->set_ncols = -1;
    d->nign = 0;
}

/*
 * A DataRow in one piece: walk the column lengths.  Accepts exactly an int16
 * count (not negative) followed by that many int32 length + bytes, length -1
 * meaning NULL, nothing after.
 */
static inline bool
datarow_check(const uint8_t *p, size_t n, uint32_t *ncols)
{
    if (n < 2)
        return false;
    uint32_t cols = be16(p);
    size_t off = 2;
    if (cols & 0x8000)
        return false;
    for (uint32_t i = 0; i < cols; i++) {
        if (n - off < 4)
            return false;
        int32_t len = (int32_t)be32(p + off);
        off += 4;
        if (len < 0) {
            if (len != -1)
                return false;
            continue;
        }
        if ((size_t)len > n - off)
            return false;
        off += (size_t)len;
    }
    *ncols = cols;
    return off == n;
}

/*
 * The DataRow walker for bodies in pieces or with ignored columns: an
 * incremental cursor over the iovecs that hashes the kept bytes as runs, so
 * a body in one piece with one ignored column costs two hasher_put calls,
 * not one per field.  [run, p) is always kept bytes not yet hashed; a run is
 * flushed at each piece boundary and before an ignored column, whose bytes
 * are then dropped.
 */
struct rowwalk {
    const struct iovec *iov;
    int cnt;
    int i;             /* the piece p is in */
    const uint8_t *p;
    const uint8_t *end;
    const uint8_t *run;
    size_t left;       /* body bytes from p on */
    struct pgdigest_hasher *hs;
};

static const uint8_t rw_nothing[1];

static void
rw_piece(struct rowwalk *w, int i)
{
    while (i < w->cnt && w->iov[i].iov_len == 0)
        i++;
    w->i = i;
    if (i < w->cnt) {
        w->p = w->iov[i].iov_base;
        w->end = w->p + w->iov[i].iov_len;
    } else {
        w->p = w->end = rw_nothing;
    }
    w->run = w->p;
}

static void
rw_flush(struct rowwalk *w)
{
    if (w->p > w->run)
        hasher_put(w->hs, w->run, (size_t)(w->p - w->run));
    w->run = w->p;
}

static bool
rw_take_slow(struct rowwalk *w, uint8_t *dst, size_t n, bool keep)
{
    for (;;) {
        size_t avail = (size_t)(w->end - w->p);
        if (n <= avail) {
            if (dst)
                memcpy(dst, w->p, n);
            w->p += n;
            return true;
        }
        if (dst) {
            memcpy(dst, w->p, avail);
            dst += avail;
        }
        w->p = w->end;
        n -= avail;
        if (keep)
            rw_flush(w);
        if (w->i >= w->cnt)
            return false; /* unreachable: the piece lengths add up to left */
        rw_piece(w, w->i + 1);
    }
}

/* Consume n bytes, copied to dst (may be NULL); false, consuming nothing,
 * when fewer are left.  keep: crossing a piece boundary hashes the run. */
static inline bool
rw_take(struct rowwalk *w, uint8_t *dst, size_t n, bool keep)
{
    if (n > w->left)
        return false;
    w->left -= n;
    if (n <= (size_t)(w->end - w->p)) {
        if (dst)
            memcpy(dst, w->p, n);
        w->p += n;
        return true;
    }
    return rw_take_slow(w, dst, n, keep);
}

/* Checks as datarow_check, plus the column count against the 'T' of the
 * result set; hashes the body without its ignored columns. */
static bool
datarow_hash_walk(const struct pgdigest *d, const struct iovec *iov, int iovcnt,
                  size_t body_len, uint64_t *h)
{
    struct pgdigest_hasher hs;
    struct rowwalk w = {.iov = iov, .cnt = iovcnt, .left = body_len, .hs = &hs};
    uint8_t b[4];
    uint32_t ncols, k = 0;

    hasher_reset(&hs, 'D');
    rw_piece(&w, 0);
    if (!rw_take(&w, b, 2, true))
        return false;
    ncols = be16(b);
    if ((ncols & 0x8000) || (d->set_ncols >= 0 && ncols != (uint32_t)d->set_ncols))
        return false;
    for (uint32_t i = 0; i < ncols; i++) {
        bool keep = !(k < d->nign && d->ign[k] == i);
        if (!keep) {
            k++;
            rw_flush(&w);
        }
        if (!rw_take(&w, b, 4, keep))
            return false;
        int32_t len = (int32_t)be32(b);
        if (len < -1 || (len > 0 && !rw_take(&w, NULL, (size_t)len, keep)))
            return false;
        if (!keep)
            w.run = w.p;
    }
    if (w.left != 0)
        return false;
    rw_flush(&w);
    *h = hasher_digest(&hs);
    return true;
}

/* ------------------------------------------------------------------ */
/* Messages other than rows.                                          */

static bool
column_ignored(const struct pgdigest *d, const char *name, size_t len)
{
    for (size_t j = 0; j < d->opts.nignore; j++) {
        const char *ig = d->opts.ignore_columns[j];
        if (ig && strlen(ig) == len && memcmp(ig, name, len) == 0)
            return true;
    }
    return false;
}

/* 'T': int16 n, then n x (name NUL, int32 table, int16 attnum, int32 type,
 * int16 typlen, int32 typmod, int16 format). */
static bool
feed_rowdesc(struct pgdigest *d, struct cur *c)
{
    uint32_t n;
    size_t lim = sample_limit(d, true);
    bool show = !d->sample_rows_full;

    end_set(d);
    reset_layout(d);
    if (!cur_u16(c, &n) || (n & 0x8000))
        return false;
    hasher_u8(&d->unit, 'T');
    hasher_u32(&d->unit, n);
    if (show && (!sample_item(d, lim) || !SAMPLE_LIT(d, "(", lim))) {
        sample_overflow(d, true);
        show = false;
    }
    for (uint32_t i = 0; i < n; i++) {
        char name[NAME_SCRATCH];
        uint8_t f[18];
        size_t len;

        if (!cur_string(c, &d->unit, name, sizeof(name), &len) || !cur_take(c, f, 18, NULL))
            return false;
        hasher_u8(&d->unit, 0);
        hasher_u32(&d->unit, oid_class(be32(f + 6)));
        if (len < sizeof(name) && d->nign < PGDIGEST_MAX_IGNORED
            && column_ignored(d, name, len))
            d->ign[d->nign++] = (uint16_t)i;
        if (show && ((i > 0 && !SAMPLE_LIT(d, ", ", lim))
                     || !sample_text(d, (const uint8_t *)name, strlen(name), lim))) {
            sample_overflow(d, true);
            show = false;
        }
    }
    if (c->left != 0)
        return false;
    if (show && !SAMPLE_LIT(d, ")", lim))
        sample_overflow(d, true);
    d->set_ncols = (int32_t)n;
    return true;
}

/* Copy the first cap - 1 bytes of s (len bytes) cut on a UTF-8 boundary. */
static void
copy_cut(char *dst, size_t cap, const char *s, size_t len)
{
    if (len >= cap) {
        len = cap - 1;
        while (len > 0 && ((uint8_t)s[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
}

/* The first whole characters of s (len bytes) that fit in cap - 1, as valid
 * UTF-8 text: control characters and bytes that are not UTF-8 become '?'. */
static size_t
copy_text(char *dst, size_t cap, const char *s, size_t len)
{
    const uint8_t *p = (const uint8_t *)s;
    size_t out = 0;

    for (size_t i = 0; i < len;) {
        /* a run of printable ASCII (every tag PostgreSQL sends) in one copy */
        size_t run = 0;
        while (i + run < len && p[i + run] >= 0x20 && p[i + run] < 0x7f)
            run++;
        if (run > 0) {
            if (run > cap - 1 - out)
                run = cap - 1 - out;
            memcpy(dst + out, p + i, run);
            out += run;
            i += run;
            if (out == cap - 1)
                break;
            continue;
        }
        size_t n = utf8_seq(p + i, len - i);
        bool bad = n == 0 || (n == 1 && (p[i] < 0x20 || p[i] == 0x7f));
        size_t w = bad ? 1 : n;
        if (out + w > cap - 1)
            break;
        if (bad)
            dst[out] = '?';
        else
            memcpy(dst + out, p + i, n);
        out += w;
        i += bad ? 1 : n;
    }
    dst[out] = '\0';
    return out;
}

/* 'C': the tag, NUL-terminated, filling the body. */
static bool
feed_complete(struct pgdigest *d, struct cur *c)
{
    char scratch[PGDIGEST_TAG_MAX + 3];
    const char *tag = scratch;
    const uint8_t *p = NULL;
    size_t len, run = cur_run(c, &p);

    end_set(d);
    reset_layout(d);
    hasher_u8(&d->unit, 'C');
    if (run > 0 && run == c->left && p[run - 1] == 0 && memchr(p, 0, run) == p + run - 1) {
        /* the body in one piece (as it nearly always is): read the tag in place */
        len = run - 1;
        hasher_put(&d->unit, p, len);
        cur_adv(c, run);
        tag = (const char *)p;
    } else if (!cur_string(c, &d->unit, scratch, sizeof(scratch), &len) || c->left != 0) {
        return false;
    }
    hasher_u8(&d->unit, 0);
    /* as much of the tag as the scratch copy keeps, whichever way it was read */
    len = copy_text(d->tag, sizeof(d->tag), tag, len < sizeof(scratch) ? len : sizeof(scratch) - 1);
    sample_clean_item(d, d->tag, len);
    return true;
}

/* 'E': fields (byte code, string NUL) ended by a 0 byte filling the body. */
static bool
feed_error(struct pgdigest *d, struct cur *c)
{
    char code[8] = "", severity[16] = "", message[MESSAGE_SCRATCH] = "", head[32];
    size_t code_len = 0, msg_len = 0, len;
    bool have_v = false;

    end_set(d);
    reset_layout(d);
    for (;;) {
        uint8_t f;
        if (!cur_u8(c, &f))
            return false;
        if (f == 0)
            break;
        switch (f) {
        case 'C':
            if (!cur_string(c, NULL, code, sizeof(code), &code_len))
                return false;
            break;
        case 'M':
            if (!cur_string(c, NULL, message, sizeof(message), &msg_len))
                return false;
            break;
        case 'V': /* not localized, unlike 'S' */
        case 'S':
            if (have_v && f == 'S') {
                if (!cur_string(c, NULL, NULL, 0, &len))
                    return false;
                break;
            }
            if (!cur_string(c, NULL, severity, sizeof(severity), &len))
                return false;
            have_v |= f == 'V';
            break;
        default:
            if (!cur_string(c, NULL, NULL, 0, &len))
                return false;
            break;
        }
    }
    if (c->left != 0)
        return false;
    if (code_len != 5)
        memset(code, 0, sizeof(code));
    hasher_u8(&d->unit, 'E');
    hasher_put(&d->unit, code, strlen(code));
    hasher_u8(&d->unit, 0);
    if (!d->error) {
        d->error = true;
        memcpy(d->sqlstate, code, sizeof(d->sqlstate));
    }

    if (d->sample_full)
        return true;
    size_t sev = strlen(severity);
    size_t hl = 0;
    memcpy(head, sev ? severity : "ERROR", sev ? sev : 5);
    hl = sev ? sev : 5;
    head[hl++] = ' ';
    memcpy(head + hl, code[0] ? code : "?????", 5);
    hl += 5;
    head[hl++] = ':';
    head[hl++] = ' ';
    size_t shown = msg_len < sizeof(message) ? msg_len : sizeof(message) - 1;
    char cut[MESSAGE_SCRATCH];
    /* A message cut by the scratch is cut again on a character boundary. */
    copy_cut(cut, shown < msg_len ? shown : sizeof(cut), message, shown);
    sample_tag_item(d, head, hl, cut, strlen(cut));
    if (shown < msg_len && !d->sample_full && !SAMPLE_LIT(d, "...", sample_limit(d, false)))
        sample_overflow(d, false);
    return true;
}

/* 't': int16 n, n x int32 OID. */
static bool
feed_paramdesc(struct pgdigest *d, struct cur *c)
{
    uint32_t n, oid = 0;

    if (!cur_u16(c, &n) || (n & 0x8000) || c->left != (size_t)n * 4)
        return false;
    hasher_u8(&d->unit, 't');
    hasher_u32(&d->unit, n);
    for (uint32_t i = 0; i < n; i++) {
        cur_u32(c, &oid);
        hasher_u32(&d->unit, oid_class(oid));
    }
    return true;
}

/* 'G' 'H' 'W': int8 format, int16 n, n x int16 format. */
static bool
feed_copyresp(struct pgdigest *d, uint8_t type, struct cur *c)
{
    uint8_t fmt;
    uint32_t n, f = 0;

    end_set(d);
    reset_layout(d);
    if (!cur_u8(c, &fmt) || !cur_u16(c, &n) || (n & 0x8000) || c->left != (size_t)n * 2)
        return false;
    hasher_u8(&d->unit, type);
    hasher_u8(&d->unit, fmt);
    hasher_u32(&d->unit, n);
    for (uint32_t i = 0; i < n; i++) {
        cur_u16(c, &f);
        hasher_u32(&d->unit, f);
    }
    if (!d->sample_rows_full) {
        const char *what = type == 'H' ? "COPY OUT" : type == 'G' ? "COPY IN" : "COPY BOTH";
        size_t lim = sample_limit(d, true);
        if (!sample_item(d, lim) || !sample_ascii(d, what, strlen(what), lim))
            sample_overflow(d, true);
    }
    return true;
}

/* 'd': one row of COPY TO output. */
static void
feed_copydata(struct pgdigest *d, const uint8_t *one, const struct iovec *iov, int iovcnt,
              size_t body_len)
{
    uint64_t h;

    if (one != NULL || body_len == 0) {
        h = hash_contig('d', one, body_len);
    } else {
        struct pgdigest_hasher hs;
        struct cur c;
        hasher_reset(&hs, 'd');
        cur_init(&c, iov, iovcnt, body_len);
        cur_take(&c, NULL, body_len, &hs);
        h = hasher_digest(&hs);
    }
    add_row(d, h);
    if (!d->sample_rows_full) {
        size_t lim = sample_limit(d, true);
        struct cur c;
        cur_init(&c, iov, iovcnt, body_len);
        if (!sample_item(d, lim) || !sample_value(d, &c, body_len, lim))
            sample_overflow(d, true);
    }
}

/* ------------------------------------------------------------------ */
/* API.                                                               */

void
pgdigest_init(struct pgdigest *d, const struct pgdigest_opts *opts, char *sample,
              size_t sample_cap)
{
    /* all but the ignored positions (nign says how many are set) and the
     * hasher's block (its fill says how much is), 300 bytes never read */
    memset(d, 0, offsetof(struct pgdigest, ign));
    if (opts) {
        d->opts = *opts;
        if (d->opts.ignore_columns == NULL)
            d->opts.nignore = 0;
    }
    d->sample = sample;
    d->sample_cap = sample ? sample_cap : 0;
    if (d->sample_cap > 0)
        sample[0] = '\0';
    else
        d->sample_rows_full = d->sample_full = true;
    d->set_ncols = -1;
    hasher_reset(&d->unit, UNIT_SEED);
}

void
pgdigest_feed(struct pgdigest *d, uint8_t type, const struct iovec *iov, int iovcnt,
              size_t body_len)
{
    const uint8_t *one = NULL; /* the body, when it is in one piece */
    size_t sum = 0;
    struct cur c;
    bool ok = true;

    if (d->malformed)
        return;
    if (iovcnt < 0 || (iovcnt > 0 && iov == NULL)) {
        d->malformed = true;
        return;
    }
    for (int i = 0; i < iovcnt; i++) {
        size_t n = iov[i].iov_len;
        if (n == 0)
            continue;
        if (n > body_len - sum || iov[i].iov_base == NULL) {
            d->malformed = true;
            return;
        }
        if (n == body_len)
            one = iov[i].iov_base;
        sum += n;
    }
    if (sum != body_len) {
        d->malformed = true;
        return;
    }

    if (type == 'D') {
        uint64_t h;
        uint32_t ncols;
        if (one && d->nign == 0) {
            /* The hot path: the canonical row is the body itself. */
            ok = datarow_check(one, body_len, &ncols)
                 && (d->set_ncols < 0 || ncols == (uint32_t)d->set_ncols);
            if (ok)
                h = hash_contig('D', one, body_len);
        } else {
            ok = datarow_hash_walk(d, iov, iovcnt, body_len, &h);
        }
        if (!ok) {
            d->malformed = true;
            return;
        }
        add_row(d, h);
        if (!d->sample_rows_full)
            sample_datarow(d, iov, iovcnt, body_len);
        return;
    }

    cur_init(&c, iov, iovcnt, body_len);
    switch (type) {
    case 'T':
        ok = feed_rowdesc(d, &c);
        break;
    case 'C':
        ok = feed_complete(d, &c);
        break;
    case 'E':
        ok = feed_error(d, &c);
        break;
    case 'd':
        feed_copydata(d, one, iov, iovcnt, body_len);
        break;
    case 't':
        ok = feed_paramdesc(d, &c);
        break;
    case 'G':
    case 'H':
    case 'W':
        ok = feed_copyresp(d, type, &c);
        break;
    case 'I': /* EmptyQueryResponse: ends a (row-less) result */
    case 's': /* PortalSuspended: ends this Execute's rows, the portal goes on */
    case 'n': /* NoData: no row layout */
    case '1':
    case '2':
    case '3':
    case 'c':
        if (body_len != 0) {
            ok = false;
            break;
        }
        if (type == 'I' || type == 's')
            end_set(d);
        if (type == 'I' || type == 'n')
            reset_layout(d);
        hasher_u8(&d->unit, type);
        if (type == 'I')
            sample_tag_item(d, "EMPTY", 5, "", 0);
        else if (type == 's')
            sample_tag_item(d, "SUSPENDED", 9, "", 0);
        break;
    case 'N': /* notices, settings, notifications, keys, ready: not the answer */
    case 'S':
    case 'A':
    case 'K':
    case 'Z':
    case 'R':
    case 'v':
        break;
    default: /* FunctionCallResponse and anything new: all of it counts */
        hasher_u8(&d->unit, type);
        hasher_u64(&d->unit, body_len);
        cur_take(&c, NULL, body_len, &d->unit);
        break;
    }
    if (!ok)
        d->malformed = true;
}

void
pgdigest_final(const struct pgdigest *d, struct pgdigest_result *out)
{
    struct pgdigest_hasher hs;

    memset(out, 0, sizeof(*out));
    if (d->set_rows > 0) {
        /* rows not closed by a tag: folded into a copy, d stays as it is */
        hs = d->unit;
        fold_set(d, &hs);
        out->hash = hasher_digest(&hs);
    } else {
        out->hash = hasher_digest(&d->unit);
    }
    out->rows = d->rows;
    out->error = d->error;
    memcpy(out->sqlstate, d->sqlstate, sizeof(out->sqlstate));
    memcpy(out->tag, d->tag, sizeof(out->tag));
    out->malformed = d->malformed;
}

/* A failure the shadow may have because a server-local value did not travel. */
static bool
local_failure(const char *sqlstate)
{
    return strncmp(sqlstate, "58", 2) == 0 || strncmp(sqlstate, "42704", 5) == 0 ||
           strncmp(sqlstate, "22023", 5) == 0 || strncmp(sqlstate, "55000", 5) == 0;
}

enum shadow_outcome
pgdigest_judge(const struct pgdigest_result *primary, const struct pgdigest_result *shadow,
               enum shadow_noise_reason reason, bool local_input, enum shadow_noise_reason *why)
{
    enum shadow_outcome differ = reason != SHADOW_NOISE_NONE ? SHADOW_NOISE : SHADOW_MISMATCH;
    enum shadow_outcome o;

    *why = SHADOW_NOISE_NONE;
    if (primary->malformed)
        return SHADOW_PRIMARY_ERROR;
    if (shadow->malformed)
        return SHADOW_SHADOW_ERROR;
    if (primary->error && shadow->error)
        o = strncmp(primary->sqlstate, shadow->sqlstate, sizeof(primary->sqlstate)) == 0
                ? SHADOW_MATCH
                : differ;
    else if (primary->error)
        return SHADOW_PRIMARY_ERROR;
    else if (shadow->error && !(local_input && local_failure(shadow->sqlstate)))
        return SHADOW_SHADOW_ERROR;
    else if (shadow->error)
        o = SHADOW_NOISE, reason = SHADOW_NOISE_SERVER_LOCAL;
    else
        o = primary->hash == shadow->hash ? SHADOW_MATCH : differ;
    if (o == SHADOW_NOISE)
        *why = reason;
    return o;
}

enum shadow_outcome
pgdigest_compare(const struct pgdigest_result *primary, const struct pgdigest_result *shadow,
                 bool unstable)
{
    enum shadow_noise_reason why;

    return pgdigest_judge(primary, shadow, unstable ? SHADOW_NOISE_VOLATILE : SHADOW_NOISE_NONE,
                          false, &why);
}
