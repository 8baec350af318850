/*
 * resp.c - Redis protocol (RESP2) codec: request framing, reply scanning
 * and digests, builders.  See resp.h for the contract.
 *
 * The request parser follows Redis 7.0's processMultibulkBuffer() and
 * processInlineBuffer() (networking.c) check for check, so that a client
 * gets from tandem the same "Protocol error: ..." Redis would have sent, at
 * the same point of the byte stream.  It is stateless: each call starts again
 * at buf[0].  Headers are short and bulk payloads are skipped by length, not
 * scanned, so re-framing a growing prefix is cheap; *used on NEED_MORE tells
 * the caller how long it may wait before trying again.
 */
#include "protocol/resp.h"

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

void
resp_limits_init(struct resp_limits *lim)
{
    lim->max_bulk_len = RESP_DEFAULT_MAX_BULK_LEN;
    lim->max_mbulk_len = RESP_DEFAULT_MAX_MBULK_LEN;
    lim->max_inline_len = RESP_DEFAULT_MAX_INLINE_LEN;
    lim->unauth_max_bulk_len = RESP_UNAUTH_MAX_BULK_LEN;
    lim->unauth_max_mbulk_len = RESP_UNAUTH_MAX_MBULK_LEN;
    lim->pre_auth = false;
}

/* ------------------------------------------------------------------ */
/* Requests.                                                          */

/*
 * parse_ll - Redis's string2ll(): a decimal that is exactly "0" or an
 * optional '-' and digits not starting with 0, fewer than 21 bytes, in the
 * range of long long.  Refuses "+1", "01", "-0", "", " 1".
 */
static bool
parse_ll(const uint8_t *s, size_t slen, int64_t *value)
{
    if (slen == 0 || slen >= 21)
        return false;
    if (slen == 1 && s[0] == '0') {
        *value = 0;
        return true;
    }
    size_t i = 0;
    bool neg = false;
    if (s[0] == '-') {
        neg = true;
        if (++i == slen)
            return false;
    }
    if (s[i] < '1' || s[i] > '9')
        return false;
    uint64_t v = (uint64_t)(s[i++] - '0');
    for (; i < slen; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > UINT64_MAX / 10 || v * 10 > UINT64_MAX - d)
            return false;
        v = v * 10 + d;
    }
    if (neg) {
        if (v > (uint64_t)INT64_MAX + 1)
            return false;
        *value = v == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)v;
    } else {
        if (v > (uint64_t)INT64_MAX)
            return false;
        *value = (int64_t)v;
    }
    return true;
}

/*
 * find_eol - where the line starting at p ends (the first byte ch), the way
 * Redis finds it: strchr() over at most max + 1 bytes.
 *
 * Returns 1 with *off when found, 0 when more bytes may still bring it, -1
 * when it never can: more than max bytes without ch (Redis's "too big ..."),
 * or a NUL byte first (strchr would stop there, and Redis would wait until
 * the limit is crossed; we say so at once).
 */
static int
find_eol(const uint8_t *p, size_t avail, size_t max, uint8_t ch, size_t *off)
{
    size_t win = avail;
    if (max < SIZE_MAX && win > max + 1)
        win = max + 1;
    /*
     * Headers ("*3", "$5") end within a few bytes: look at those inline
     * (the same answer, ch is never NUL) before two calls to memchr, which
     * were the parser's largest cost.
     */
    size_t quick = win < 24 ? win : 24;
    for (size_t i = 0; i < quick; i++) {
        if (p[i] == ch) {
            *off = i;
            return 1;
        }
        if (p[i] == 0)
            return -1;
    }
    const uint8_t *e = memchr(p, ch, win);
    size_t n = e != NULL ? (size_t)(e - p) : win;
    if (memchr(p, 0, n) != NULL)
        return -1;
    if (e == NULL)
        return avail > max ? -1 : 0;
    *off = n;
    return 1;
}

static size_t
sat_add(size_t a, uint64_t b)
{
    return b > SIZE_MAX - a ? SIZE_MAX : a + (size_t)b;
}

static void
keep_arg(struct resp_request *out, const uint8_t *ptr, size_t len, bool quoted)
{
    if (out->nargv < RESP_MAX_ARGS) {
        struct resp_arg *a = &out->argv[out->nargv++];
        a->ptr = ptr;
        a->len = len;
        a->quoted = quoted;
    }
    out->argc++;
    out->args_len += len;
}

static enum resp_status
need_more(size_t *used, size_t at_least)
{
    *used = at_least;
    return RESP_NEED_MORE;
}

static enum resp_status
fail(const char **err, const char *why)
{
    *err = why;
    return RESP_ERROR;
}

/* The shortest argument on the wire: "$0\r\n\r\n". */
#define MIN_BULK_WIRE 6

/*
 *   *<count>\r\n  ( $<len>\r\n <len bytes>\r\n ){count}
 *
 * count <= 0 is an empty command.  Each length is judged when its CRLF is
 * seen, before its payload is waited for.  On NEED_MORE the arguments not
 * yet begun count MIN_BULK_WIRE bytes each: a command of millions of small
 * arguments arriving in many reads is then parsed again only when enough
 * has arrived to possibly complete it, not at every read.
 */
static enum resp_status
parse_multibulk(const uint8_t *buf, size_t len, const struct resp_limits *lim, size_t *used,
                struct resp_request *out, const char **err)
{
    size_t off;
    int f = find_eol(buf, len, lim->max_inline_len, '\r', &off);
    if (f < 0)
        return fail(err, "too big mbulk count string");
    if (f == 0 || off + 1 >= len)
        return need_more(used, sat_add(len, 1));
    int64_t count;
    if (!parse_ll(buf + 1, off - 1, &count) || (count > 0 && (uint64_t)count > lim->max_mbulk_len) ||
        buf[off + 1] != '\n')
        return fail(err, "invalid multibulk length");
    if (lim->pre_auth && count > 0 && (uint64_t)count > lim->unauth_max_mbulk_len)
        return fail(err, "unauthenticated multibulk length");

    size_t pos = off + 2;
    for (int64_t i = 0; i < count; i++) {
        /* the arguments after this one: at least MIN_BULK_WIRE bytes each */
        uint64_t rest = (uint64_t)(count - i - 1) * MIN_BULK_WIRE;
        if (pos >= len)
            return need_more(used, sat_add(pos, rest + MIN_BULK_WIRE));
        f = find_eol(buf + pos, len - pos, lim->max_inline_len, '\r', &off);
        if (f < 0)
            return fail(err, "too big bulk count string");
        if (f == 0 || pos + off + 1 >= len) {
            size_t at_least = sat_add(pos, rest + MIN_BULK_WIRE);
            return need_more(used, at_least > len ? at_least : sat_add(len, 1));
        }
        if (buf[pos] != '$') {
            /* Redis prints the byte with %c, its error replies map CR/LF to spaces. */
            uint8_t c = buf[pos] == '\r' || buf[pos] == '\n' ? ' ' : buf[pos];
            snprintf(out->errbuf, sizeof(out->errbuf), "expected '$', got '%c'", c);
            return fail(err, out->errbuf);
        }
        int64_t blen;
        if (!parse_ll(buf + pos + 1, off - 1, &blen) || blen < 0 ||
            (uint64_t)blen > lim->max_bulk_len || buf[pos + off + 1] != '\n')
            return fail(err, "invalid bulk length");
        if (lim->pre_auth && (uint64_t)blen > lim->unauth_max_bulk_len)
            return fail(err, "unauthenticated bulk length");
        pos += off + 2;
        if ((uint64_t)(len - pos) < (uint64_t)blen + 2)
            return need_more(used, sat_add(pos, (uint64_t)blen + 2 + rest));
        if (buf[pos + blen] != '\r' || buf[pos + blen + 1] != '\n')
            return fail(err, "bulk not terminated by CRLF");
        keep_arg(out, buf + pos, (size_t)blen, false);
        pos += (size_t)blen + 2;
    }
    out->wire_len = pos;
    *used = pos;
    return RESP_OK;
}

/* isspace() in the C locale, which is what sdssplitargs() runs under. */
static bool
is_blank(uint8_t c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static bool
is_hex(uint8_t c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static uint8_t
hex_val(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return (uint8_t)(c - '0');
    if (c >= 'a' && c <= 'f')
        return (uint8_t)(c - 'a' + 10);
    return (uint8_t)(c - 'A' + 10);
}

/*
 * tokenize - sdssplitargs() over line[0, end), recording each token's raw
 * span.  Returns false on unbalanced quotes.  Between tokens any isspace()
 * byte is skipped; an unquoted token ends only at space, \t, \r, \n or the
 * end of the line (so \v inside a token is kept, as Redis does).
 */
static bool
tokenize(const uint8_t *line, size_t end, struct resp_request *out)
{
    size_t p = 0;
    for (;;) {
        while (p < end && is_blank(line[p]))
            p++;
        if (p == end)
            return true;
        size_t start = p, tok_end = 0;
        bool quoted = false, done = false;
        uint8_t q = 0; /* 0, '"' or '\'' */
        while (!done) {
            uint8_t c = p < end ? line[p] : 0;
            if (q == '"') {
                if (c == '\\' && p + 3 < end && line[p + 1] == 'x' && is_hex(line[p + 2]) &&
                    is_hex(line[p + 3])) {
                    p += 3;
                } else if (c == '\\' && p + 1 < end) {
                    p++;
                } else if (c == '"') {
                    if (p + 1 < end && !is_blank(line[p + 1]))
                        return false;
                    done = true;
                    tok_end = p + 1;
                } else if (p == end) {
                    return false;
                }
            } else if (q == '\'') {
                if (c == '\\' && p + 1 < end && line[p + 1] == '\'') {
                    p++;
                } else if (c == '\'') {
                    if (p + 1 < end && !is_blank(line[p + 1]))
                        return false;
                    done = true;
                    tok_end = p + 1;
                } else if (p == end) {
                    return false;
                }
            } else if (p == end || c == ' ' || c == '\n' || c == '\r' || c == '\t') {
                done = true;
                tok_end = p;
            } else if (c == '"' || c == '\'') {
                q = c;
                quoted = true;
            }
            if (p < end)
                p++;
        }
        keep_arg(out, line + start, tok_end - start, quoted);
    }
}

/* One line ended by LF (a CR before it is dropped), split by tokenize(). */
static enum resp_status
parse_inline(const uint8_t *buf, size_t len, const struct resp_limits *lim, size_t *used,
             struct resp_request *out, const char **err)
{
    size_t nl;
    int f = find_eol(buf, len, lim->max_inline_len, '\n', &nl);
    if (f < 0)
        return fail(err, "too big inline request");
    if (f == 0)
        return need_more(used, sat_add(len, 1));
    size_t end = nl > 0 && buf[nl - 1] == '\r' ? nl - 1 : nl;
    if (!tokenize(buf, end, out))
        return fail(err, "unbalanced quotes in request");
    out->wire_len = nl + 1;
    *used = nl + 1;
    return RESP_OK;
}

enum resp_status
resp_request_parse(const uint8_t *buf, size_t len, const struct resp_limits *lim, size_t *used,
                   struct resp_request *out, const char **err)
{
    out->argc = 0;
    out->nargv = 0;
    out->wire_len = 0;
    out->args_len = 0;
    out->errbuf[0] = '\0';
    if (len == 0)
        return need_more(used, 1);
    if (buf[0] == '*') {
        out->form = RESP_FORM_MULTIBULK;
        return parse_multibulk(buf, len, lim, used, out, err);
    }
    out->form = RESP_FORM_INLINE;
    return parse_inline(buf, len, lim, used, out, err);
}

/*
 * The value of a quoted inline token, one byte at a time.  The span was
 * checked by tokenize(), so it holds at most one quoted section, ending at
 * its last byte; the escapes are decoded exactly as tokenize() skipped them.
 */
struct arg_reader {
    const uint8_t *p, *end;
    uint8_t q;
};

static int
arg_next(struct arg_reader *ar)
{
    while (ar->p < ar->end) {
        const uint8_t *p = ar->p;
        uint8_t c = *p;
        if (ar->q == 0) {
            ar->p++;
            if (c == '"' || c == '\'') {
                ar->q = c;
                continue;
            }
            return c;
        }
        if (ar->q == '"') {
            if (c == '\\' && p + 3 < ar->end && p[1] == 'x' && is_hex(p[2]) && is_hex(p[3])) {
                ar->p += 4;
                return hex_val(p[2]) * 16 + hex_val(p[3]);
            }
            if (c == '\\' && p + 1 < ar->end) {
                ar->p += 2;
                switch (p[1]) {
                case 'n': return '\n';
                case 'r': return '\r';
                case 't': return '\t';
                case 'b': return '\b';
                case 'a': return '\a';
                default: return p[1];
                }
            }
        } else if (c == '\\' && p + 1 < ar->end && p[1] == '\'') {
            ar->p += 2;
            return '\'';
        }
        if (c == ar->q) {
            ar->p = ar->end;
            return -1;
        }
        ar->p++;
        return c;
    }
    return -1;
}

size_t
resp_arg_decode(const struct resp_arg *arg, uint8_t *out, size_t cap)
{
    if (!arg->quoted) {
        if (cap > 0)
            memcpy(out, arg->ptr, arg->len < cap ? arg->len : cap);
        return arg->len;
    }
    struct arg_reader ar = {arg->ptr, arg->ptr + arg->len, 0};
    size_t n = 0;
    int c;
    while ((c = arg_next(&ar)) >= 0) {
        if (n < cap)
            out[n] = (uint8_t)c;
        n++;
    }
    return n;
}

static uint8_t
ascii_lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

bool
resp_arg_equal_ci(const struct resp_arg *arg, const char *lit)
{
    const uint8_t *l = (const uint8_t *)lit;
    if (!arg->quoted) {
        size_t n = strlen(lit);
        if (n != arg->len)
            return false;
        for (size_t i = 0; i < n; i++)
            if (ascii_lower(arg->ptr[i]) != ascii_lower(l[i]))
                return false;
        return true;
    }
    struct arg_reader ar = {arg->ptr, arg->ptr + arg->len, 0};
    int c;
    while ((c = arg_next(&ar)) >= 0) {
        if (*l == '\0' || ascii_lower((uint8_t)c) != ascii_lower(*l))
            return false;
        l++;
    }
    return *l == '\0';
}

/* ------------------------------------------------------------------ */
/* Reply digests.                                                     */

/*
 * XXH3 chained over fixed blocks: h' = XXH3(block, seed = h).  The same
 * bytes give the same digest however they were split across feeds.  Not
 * XXH3's own streaming state: XXH3_state_t needs 64-byte alignment, which a
 * reader embedded in a malloc()ed connection does not get.  Blocks of 240
 * bytes stay on XXH3's short-input path, where a seed costs nothing.
 */
#define HASH_BLOCK 240
_Static_assert(HASH_BLOCK <= RESP_HASH_BLOCK, "block buffer");

static void
hash_init(struct resp_hash *s)
{
    s->h = 0;
    s->total = 0;
    s->fill = 0;
}

static void
hash_update(struct resp_hash *s, const uint8_t *p, size_t n)
{
    s->total += n;
    if (s->fill > 0) {
        size_t take = HASH_BLOCK - s->fill < n ? HASH_BLOCK - s->fill : n;
        memcpy(s->block + s->fill, p, take);
        s->fill += take;
        p += take;
        n -= take;
        if (s->fill < HASH_BLOCK)
            return;
        s->h = XXH3_64bits_withSeed(s->block, HASH_BLOCK, s->h);
        s->fill = 0;
    }
    for (; n >= HASH_BLOCK; p += HASH_BLOCK, n -= HASH_BLOCK)
        s->h = XXH3_64bits_withSeed(p, HASH_BLOCK, s->h);
    if (n > 0) {
        memcpy(s->block, p, n);
        s->fill = n;
    }
}

static uint64_t
hash_final(const struct resp_hash *s)
{
    return XXH3_64bits_withSeed(s->block, s->fill, s->h ^ (s->total * 0x9E3779B97F4A7C15ull));
}

/* ------------------------------------------------------------------ */
/* Replies.                                                           */

enum {
    RS_TYPE,      /* expecting a type byte */
    RS_NUM,       /* digits after ':', '$' or '*' */
    RS_SIMPLE,    /* text after '+' or '-' */
    RS_LF,        /* a line's CR was seen */
    RS_BULK,      /* bulk payload */
    RS_BULK_CR,   /* CRLF after the payload */
    RS_BULK_LF,
};

static void
reader_reset(struct resp_reader *r)
{
    r->state = RS_TYPE;
    r->size = 0;
    r->depth = 0;
    r->nruns = 0;
    memset(&r->info, 0, sizeof(r->info));
    r->unit_depth = 0;
    r->in_unit = false;
    r->unit_elems = 0;
    r->scan_shape = false;
    r->unit_sum = 0;
    r->unit_count = 0;
    hash_init(&r->outer);
    hash_init(&r->unit);
}

void
resp_reader_init(struct resp_reader *r, enum resp_digest_mode mode)
{
    r->mode = mode;
    reader_reset(r);
}

static bool
mode_pairs(enum resp_digest_mode m)
{
    return m == RESP_DIGEST_PAIRS || m == RESP_DIGEST_SCAN_PAIRS;
}

/* Hash the bytes [*mark, p) into the current sink, outer or unit. */
static void
sink(struct resp_reader *r, const uint8_t **mark, const uint8_t *p)
{
    if (r->mode != RESP_DIGEST_NONE && p > *mark)
        hash_update(r->in_unit ? &r->unit : &r->outer, *mark, (size_t)(p - *mark));
    *mark = p;
}

/* An element starts at the current depth: open a unit if it is one. */
static void
element_start(struct resp_reader *r, const uint8_t **mark, const uint8_t *p)
{
    if (r->unit_depth != 0 && r->depth == r->unit_depth && !r->in_unit) {
        sink(r, mark, p);
        r->in_unit = true;
        r->unit_elems = 0;
        hash_init(&r->unit);
    }
}

/* Elements the innermost open array still awaits (depth > 0). */
static int64_t
top_left(const struct resp_reader *r)
{
    return r->run_left[r->nruns - 1];
}

/* One element of the innermost array is done: 1 when that array is done too, -1 out of runs. */
static int
level_consume(struct resp_reader *r)
{
    uint32_t t = r->nruns - 1;
    int64_t left = r->run_left[t] - 1;
    if (left == 0) {
        /* the array closes: its level leaves the run */
        if (--r->run_levels[t] == 0)
            r->nruns--;
        r->depth--;
        return 1;
    }
    if (r->run_levels[t] > 1) {
        /* the innermost level leaves its run for one of its own */
        if (r->nruns == RESP_REPLY_MAX_RUNS)
            return -1;
        r->run_levels[t]--;
        r->run_left[t + 1] = left;
        r->run_levels[t + 1] = 1;
        r->nruns++;
        return 0;
    }
    r->run_left[t] = left;
    if (t > 0 && r->run_left[t - 1] == left) {
        /* it now awaits what the run below does: one run */
        r->run_levels[t - 1]++;
        r->nruns--;
    }
    return 0;
}

/*
 * An element ended at p (exclusive).  Walk up through every array it
 * completes: 1 when the whole reply is complete, 0 when not, -1 when the
 * nesting no longer fits the reader (see RESP_REPLY_MAX_RUNS).
 */
static int
element_done(struct resp_reader *r, const uint8_t **mark, const uint8_t *p)
{
    r->state = RS_TYPE;
    for (;;) {
        size_t d = r->depth;
        if (d == 0)
            return 1;
        if (r->in_unit && d == r->unit_depth) {
            r->unit_elems++;
            if (!mode_pairs(r->mode) || r->unit_elems == 2 || top_left(r) == 1) {
                sink(r, mark, p);
                r->unit_sum += hash_final(&r->unit);
                r->unit_count++;
                r->in_unit = false;
            }
        }
        int closed = level_consume(r);
        if (closed <= 0)
            return closed;
        if (r->unit_depth == d)
            r->unit_depth = 0;
    }
}

/* An array of n > 0 elements opens at the current depth. */
static bool
array_open(struct resp_reader *r, int64_t n)
{
    if (r->nruns == RESP_REPLY_MAX_RUNS && top_left(r) != n)
        return false;
    switch (r->mode) {
    case RESP_DIGEST_SET:
    case RESP_DIGEST_PAIRS:
        if (r->depth == 0)
            r->unit_depth = 1;
        break;
    case RESP_DIGEST_SCAN_SET:
    case RESP_DIGEST_SCAN_PAIRS:
        if (r->depth == 0)
            r->scan_shape = n == 2;
        else if (r->depth == 1 && r->scan_shape && top_left(r) == 1)
            r->unit_depth = 2;
        break;
    default:
        break;
    }
    if (r->nruns > 0 && top_left(r) == n) {
        r->run_levels[r->nruns - 1]++;
    } else {
        r->run_left[r->nruns] = n;
        r->run_levels[r->nruns] = 1;
        r->nruns++;
    }
    r->depth++;
    return true;
}

static enum resp_status
reader_fail(struct resp_reader *r, const char **err, const char *why)
{
    r->state = RS_TYPE;
    r->depth = 0;
    r->nruns = 0;
    *err = why;
    return RESP_ERROR;
}

/*
 * A header line is complete: act on r->type and the number read.  Returns
 * -1 on a protocol error (*err set), 1 when the element is complete, 0 when
 * more of it follows (bulk payload, array elements).
 */
/* RESP3's one-line types besides + and -: null, boolean, double, big number. */
static bool
line_type(uint8_t c)
{
    return c == '+' || c == '-' || c == '_' || c == '#' || c == ',' || c == '(';
}

/* Aggregates: array, and RESP3's map (pairs), set and push. */
static bool
aggregate_type(uint8_t c)
{
    return c == '*' || c == '%' || c == '~' || c == '>';
}

static int
line_done(struct resp_reader *r, const char **err)
{
    if (line_type(r->type)) {
        if (r->type == '_' && r->depth == 0)
            r->info.null = true;
        return 1;
    }
    int64_t v;
    if (!r->neg)
        v = (int64_t)r->num;
    else if (r->num == (uint64_t)INT64_MAX + 1)
        v = INT64_MIN;
    else
        v = -(int64_t)r->num;
    if (r->depth == 0)
        r->info.count = v;
    if (r->type == ':')
        return 1;
    if (v < -1 || (r->neg && v != -1)) {
        *err = "invalid reply length";
        return -1;
    }
    if (v == -1) {
        if (r->depth == 0)
            r->info.null = true;
        return 1;
    }
    if (!aggregate_type(r->type) && r->type != '|') {
        /* a bulk string, RESP3's verbatim string or blob error */
        r->bulk_left = (uint64_t)v;
        r->state = RS_BULK;
        return 0;
    }
    if (r->type == '|') {
        /* an attribute of v pairs comes before the element it describes:
         * together one element of 2v + 1 (DEBUG PROTOCOL attrib sends one) */
        if (v > INT64_MAX / 2 - 1) {
            *err = "invalid reply length";
            return -1;
        }
        v = v * 2 + 1;
    }
    if (v == 0)
        return 1;
    if (r->type == '%') {
        /* a map of v pairs: 2v elements */
        if (v > INT64_MAX / 2) {
            *err = "invalid reply length";
            return -1;
        }
        v *= 2;
    }
    if (!array_open(r, v)) {
        *err = "reply nesting too deep";
        return -1;
    }
    r->state = RS_TYPE;
    return 0;
}

enum resp_status
resp_reader_feed(struct resp_reader *r, const uint8_t *buf, size_t len, size_t *used,
                 struct resp_reply_info *info, const char **err)
{
    const uint8_t *p = buf, *end = buf + len, *mark = buf;
    while (p < end) {
        bool complete = false;
        switch (r->state) {
        case RS_TYPE: {
            uint8_t c = *p;
            if (!line_type(c) && !aggregate_type(c) && c != ':' && c != '$' && c != '=' &&
                c != '!' && c != '|')
                return reader_fail(r, err, "invalid reply type byte");
            element_start(r, &mark, p);
            if (r->depth == 0)
                r->info.type = c;
            r->type = c;
            r->neg = false;
            r->ndigits = 0;
            r->num = 0;
            r->state = line_type(c) ? RS_SIMPLE : RS_NUM;
            p++;
            break;
        }
        case RS_SIMPLE: {
            const uint8_t *cr = memchr(p, '\r', (size_t)(end - p));
            const uint8_t *stop = cr != NULL ? cr : end;
            if (memchr(p, '\n', (size_t)(stop - p)) != NULL)
                return reader_fail(r, err, "newline in simple reply");
            p = stop;
            if (cr != NULL) {
                p++;
                r->state = RS_LF;
            }
            break;
        }
        case RS_NUM: {
            uint8_t c = *p;
            if (c == '-' && !r->neg && r->ndigits == 0) {
                r->neg = true;
            } else if (c >= '0' && c <= '9' && r->ndigits < 20) {
                unsigned d = (unsigned)(c - '0');
                uint64_t max = r->neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
                if (r->num > (max - d) / 10)
                    return reader_fail(r, err, "invalid number in reply");
                r->num = r->num * 10 + d;
                r->ndigits++;
            } else if (c == '\r' && r->ndigits > 0) {
                r->state = RS_LF;
            } else {
                return reader_fail(r, err, "invalid number in reply");
            }
            p++;
            break;
        }
        case RS_LF: {
            if (*p++ != '\n')
                return reader_fail(r, err, "CR without LF in reply");
            const char *why = NULL;
            int done = line_done(r, &why);
            if (done < 0)
                return reader_fail(r, err, why);
            complete = done == 1;
            break;
        }
        case RS_BULK: {
            size_t avail = (size_t)(end - p);
            size_t n = r->bulk_left < avail ? (size_t)r->bulk_left : avail;
            p += n;
            r->bulk_left -= n;
            if (r->bulk_left == 0)
                r->state = RS_BULK_CR;
            break;
        }
        case RS_BULK_CR:
            if (*p++ != '\r')
                return reader_fail(r, err, "bulk reply not terminated by CRLF");
            r->state = RS_BULK_LF;
            break;
        case RS_BULK_LF:
            if (*p++ != '\n')
                return reader_fail(r, err, "bulk reply not terminated by CRLF");
            complete = true;
            break;
        }
        int whole = complete ? element_done(r, &mark, p) : 0;
        if (whole < 0)
            return reader_fail(r, err, "reply nesting too deep");
        if (whole) {
            sink(r, &mark, p);
            *info = r->info;
            info->size = r->size + (uint64_t)(p - buf);
            info->digest = 0;
            if (r->mode != RESP_DIGEST_NONE) {
                if (r->mode != RESP_DIGEST_ORDERED) {
                    uint8_t fold[16];
                    memcpy(fold, &r->unit_sum, 8);
                    memcpy(fold + 8, &r->unit_count, 8);
                    hash_update(&r->outer, fold, sizeof(fold));
                }
                info->digest = hash_final(&r->outer);
            }
            *used = (size_t)(p - buf);
            reader_reset(r);
            return RESP_OK;
        }
    }
    sink(r, &mark, p);
    r->size += len;
    *used = len;
    return RESP_NEED_MORE;
}

enum resp_status
resp_reply_scan(const uint8_t *buf, size_t len, enum resp_digest_mode mode, size_t *used,
                struct resp_reply_info *info, const char **err)
{
    struct resp_reader r;
    resp_reader_init(&r, mode);
    enum resp_status st = resp_reader_feed(&r, buf, len, used, info, err);
    if (st == RESP_NEED_MORE) {
        uint64_t more = 1;
        if (r.state == RS_BULK)
            more = r.bulk_left + 2;
        else if (r.state == RS_BULK_CR)
            more = 2;
        *used = sat_add(len, more);
    }
    return st;
}

/* ------------------------------------------------------------------ */
/* Builders.                                                          */

struct wbuf {
    uint8_t *p;
    size_t cap, len;
    bool failed;      /* sticky: once set, nothing more is written */
};

static void
w_bytes(struct wbuf *w, const void *d, size_t n)
{
    if (w->failed || n > w->cap - w->len) {
        w->failed = true;
        return;
    }
    if (n > 0)
        memcpy(w->p + w->len, d, n);
    w->len += n;
}

/* Text for a one-line reply: CR and LF become spaces, as Redis does. */
static void
w_line(struct wbuf *w, const char *s)
{
    size_t n = strlen(s);
    size_t at = w->len;
    w_bytes(w, s, n);
    if (w->failed)
        return;
    for (size_t i = at; i < at + n; i++)
        if (w->p[i] == '\r' || w->p[i] == '\n')
            w->p[i] = ' ';
}

static void
w_i64(struct wbuf *w, int64_t v)
{
    char tmp[24];
    size_t n = 0;
    uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + u % 10);
        u /= 10;
    } while (u != 0);
    if (v < 0)
        tmp[sizeof(tmp) - 1 - n++] = '-';
    w_bytes(w, tmp + sizeof(tmp) - n, n);
}

static size_t
w_done(const struct wbuf *w)
{
    return w->failed ? 0 : w->len;
}

/* PREFIX, then TEXT as one line, then CRLF: every line-shaped reply. */
static size_t
build_line(uint8_t *out, size_t cap, const char *prefix, const char *text)
{
    struct wbuf w = {out, cap, 0, false};
    w_bytes(&w, prefix, strlen(prefix));
    w_line(&w, text);
    w_bytes(&w, "\r\n", 2);
    return w_done(&w);
}

size_t
resp_build_error(uint8_t *out, size_t cap, const char *msg)
{
    return build_line(out, cap, "-", msg);
}

size_t
resp_build_protocol_error(uint8_t *out, size_t cap, const char *err)
{
    return build_line(out, cap, "-ERR Protocol error: ", err);
}

size_t
resp_build_simple(uint8_t *out, size_t cap, const char *s)
{
    return build_line(out, cap, "+", s);
}

size_t
resp_build_integer(uint8_t *out, size_t cap, int64_t v)
{
    struct wbuf w = {out, cap, 0, false};
    w_bytes(&w, ":", 1);
    w_i64(&w, v);
    w_bytes(&w, "\r\n", 2);
    return w_done(&w);
}

static void
w_bulk(struct wbuf *w, const void *data, size_t len)
{
    w_bytes(w, "$", 1);
    if (data == NULL) {
        w_bytes(w, "-1\r\n", 4);
        return;
    }
    w_i64(w, (int64_t)len);
    w_bytes(w, "\r\n", 2);
    w_bytes(w, data, len);
    w_bytes(w, "\r\n", 2);
}

size_t
resp_build_bulk(uint8_t *out, size_t cap, const void *data, size_t len)
{
    struct wbuf w = {out, cap, 0, false};
    w_bulk(&w, data, len);
    return w_done(&w);
}

size_t
resp_build_array_header(uint8_t *out, size_t cap, int64_t n)
{
    struct wbuf w = {out, cap, 0, false};
    w_bytes(&w, "*", 1);
    w_i64(&w, n < 0 ? -1 : n);
    w_bytes(&w, "\r\n", 2);
    return w_done(&w);
}

/* The number on the line at *p ("123\r\n"), *p moved past it; -1 when not one. */
static int
line_number(const uint8_t **p, const uint8_t *end, int64_t *out)
{
    const uint8_t *q = *p;
    int neg = q < end && *q == '-';
    int64_t v = 0;
    if (neg)
        q++;
    const uint8_t *digits = q;
    while (q < end && *q >= '0' && *q <= '9' && v < INT32_MAX)
        v = v * 10 + (*q++ - '0');
    if (q == digits || end - q < 2 || q[0] != '\r' || q[1] != '\n')
        return -1;
    *out = neg ? -v : v;
    *p = q + 2;
    return 0;
}

/* One bulk ("$n\r\n...\r\n"), simple string or null at *p into *out (NULL ptr: null). */
static int
one_string(const uint8_t **p, const uint8_t *end, struct resp_arg *out)
{
    const uint8_t *q = *p;
    int64_t n;
    if (q >= end)
        return -1;
    uint8_t type = *q++;
    out->quoted = false;
    if (type == '_' && end - q >= 2 && q[0] == '\r' && q[1] == '\n') {
        out->ptr = NULL;
        out->len = 0;
        *p = q + 2;
        return 0;
    }
    if (type == '+') {
        const uint8_t *cr = memchr(q, '\r', (size_t)(end - q));
        if (cr == NULL || end - cr < 2 || cr[1] != '\n')
            return -1;
        out->ptr = q;
        out->len = (size_t)(cr - q);
        *p = cr + 2;
        return 0;
    }
    if (type != '$' || line_number(&q, end, &n) != 0 || n < -1)
        return -1;
    if (n == -1) {
        out->ptr = NULL;
        out->len = 0;
        *p = q;
        return 0;
    }
    if (end - q < n + 2 || q[n] != '\r' || q[n + 1] != '\n')
        return -1;
    out->ptr = q;
    out->len = (size_t)n;
    *p = q + n + 2;
    return 0;
}

int
resp_reply_strings(const uint8_t *buf, size_t len, struct resp_arg *out, size_t max, size_t *n)
{
    const uint8_t *p = buf, *end = buf + len;
    struct resp_arg one;
    int64_t count;

    *n = 0;
    if (len == 0)
        return -1;
    if (buf[0] != '*' && buf[0] != '~') {
        if (one_string(&p, end, &one) != 0 || p != end)
            return -1;
        if (one.ptr != NULL) {
            if (max == 0)
                return -1;
            out[(*n)++] = one;
        }
        return 0;
    }
    p++;
    if (line_number(&p, end, &count) != 0 || count < -1 || count > (int64_t)max)
        return -1;
    for (int64_t i = 0; i < count; i++) {
        if (p >= end || *p != '$' || one_string(&p, end, &one) != 0 || one.ptr == NULL)
            return -1;
        out[(*n)++] = one;
    }
    return p == end ? 0 : -1;
}

size_t
resp_build_command(uint8_t *out, size_t cap, size_t argc, const char *const *argv,
                   const size_t *lens)
{
    struct wbuf w = {out, cap, 0, false};
    w_bytes(&w, "*", 1);
    w_i64(&w, (int64_t)argc);
    w_bytes(&w, "\r\n", 2);
    for (size_t i = 0; i < argc; i++)
        w_bulk(&w, argv[i], lens != NULL ? lens[i] : strlen(argv[i]));
    return w_done(&w);
}
