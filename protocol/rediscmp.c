/*
 * rediscmp.c - Redis reply comparison and display (see rediscmp.h).
 */
#include "protocol/rediscmp.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/rediscmd.h"

static enum shadow_outcome
differ(uint32_t flags)
{
    return (flags & REDISCMD_NONDET) ? SHADOW_NOISE : SHADOW_MISMATCH;
}

enum shadow_outcome
rediscmp_outcome(uint32_t flags, const struct resp_reply_info *p, const struct resp_reply_info *s,
                 int64_t ttl_tolerance)
{
    bool perr = p->type == '-' || p->type == '!', serr = s->type == '-' || s->type == '!';
    if (perr && !serr)
        return SHADOW_PRIMARY_ERROR;
    if (serr && !perr)
        return SHADOW_SHADOW_ERROR;
    if (p->type != s->type || p->null != s->null)
        return differ(flags);
    if ((flags & REDISCMD_TTL_REPLY) && p->type == ':') {
        if (p->count < 0 || s->count < 0)
            return p->count == s->count ? SHADOW_MATCH : differ(flags);
        int64_t d = p->count > s->count ? p->count - s->count : s->count - p->count;
        return d <= ttl_tolerance ? SHADOW_MATCH : differ(flags);
    }
    return p->digest == s->digest ? SHADOW_MATCH : differ(flags);
}

int64_t
rediscmp_ttl_tolerance(const char *name)
{
    return (name != NULL && (name[0] == 'p' || name[0] == 'P')) ? REDISCMP_TTL_TOLERANCE_MS
                                                                 : REDISCMP_TTL_TOLERANCE_S;
}

/* A bounded writer: once full, everything further is dropped and cut is set. */
struct out {
    char *buf;
    size_t cap, len;
    bool cut;
};

static void
put(struct out *o, const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (o->len + 4 >= o->cap) { /* room for "..." and the NUL */
            o->cut = true;
            return;
        }
        o->buf[o->len++] = s[i];
    }
}

static void
puts_(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Bytes shown as redis-cli does: printable as is, the rest \xHH, quotes escaped. */
static void
put_escaped(struct out *o, const uint8_t *p, size_t n)
{
    char hex[8];
    for (size_t i = 0; i < n && !o->cut; i++) {
        if (p[i] == '"' || p[i] == '\\') {
            char e[2] = {'\\', (char)p[i]};
            put(o, e, 2);
        } else if (p[i] >= 0x20 && p[i] < 0x7f) {
            put(o, (const char *)&p[i], 1);
        } else {
            snprintf(hex, sizeof(hex), "\\x%02x", p[i]);
            puts_(o, hex);
        }
    }
}

/* The line at p (up to CRLF within len): its length, or -1 when it is not all there. */
static long
line_len(const uint8_t *p, size_t len)
{
    for (size_t i = 0; i + 1 < len; i++)
        if (p[i] == '\r' && p[i + 1] == '\n')
            return (long)i;
    return -1;
}

/* Arrays shown open at once; deeper is cut ("..."): a sample is a few hundred bytes. */
#define RENDER_MAX_DEPTH 128

size_t
rediscmp_render(const uint8_t *buf, size_t len, uint64_t total, char *outbuf, size_t cap)
{
    struct out o = {.buf = outbuf, .cap = cap, .len = 0, .cut = false};
    int64_t left[RENDER_MAX_DEPTH]; /* elements still to show, per open array */
    size_t depth = 0, at = 0;
    bool first[RENDER_MAX_DEPTH];
    bool map[RENDER_MAX_DEPTH]; /* closed with '}' */

    if (cap == 0)
        return 0;
    if (cap < 8) {
        outbuf[0] = '\0';
        return 0;
    }
    while (at < len && !o.cut) {
        if (depth > 0) {
            if (!first[depth - 1])
                puts_(&o, ", ");
            first[depth - 1] = false;
        }
        long n = line_len(buf + at, len - at);
        if (n < 1) {
            o.cut = true;
            break;
        }
        const uint8_t *body = buf + at + 1;
        size_t blen = (size_t)n - 1;
        uint8_t type = buf[at];
        at += (size_t)n + 2;
        long long v = 0;
        if (type == '$' || type == '*' || type == ':' || type == '=' || type == '!' ||
            type == '%' || type == '~' || type == '>') {
            char num[24];
            size_t k = blen < sizeof(num) - 1 ? blen : sizeof(num) - 1;
            memcpy(num, body, k);
            num[k] = '\0';
            v = strtoll(num, NULL, 10);
        }
        switch (type) {
        case '+':
            put_escaped(&o, body, blen);
            break;
        case '-':
            puts_(&o, "(error) ");
            put_escaped(&o, body, blen);
            break;
        case '_':
            puts_(&o, "(nil)");
            break;
        case '#':
            puts_(&o, blen == 1 && body[0] == 't' ? "(true)" : "(false)");
            break;
        case ',':
            puts_(&o, "(double) ");
            put_escaped(&o, body, blen);
            break;
        case '(':
            puts_(&o, "(big number) ");
            put_escaped(&o, body, blen);
            break;
        case ':':
            puts_(&o, "(integer) ");
            put(&o, (const char *)body, blen);
            break;
        case '$':
        case '=':
        case '!':
            if (v < 0) {
                puts_(&o, "(nil)");
                break;
            }
            if (type == '!')
                puts_(&o, "(error) ");
            puts_(&o, "\"");
            size_t have = len - at < (size_t)v ? len - at : (size_t)v;
            put_escaped(&o, buf + at, have);
            if (have < (size_t)v) {
                o.cut = true;
                break;
            }
            puts_(&o, "\"");
            at += (size_t)v + 2;
            break;
        case '*':
        case '%':
        case '~':
        case '>':
            if (v < 0) {
                puts_(&o, "(nil)");
                break;
            }
            if (v == 0) {
                puts_(&o, "[]");
                break;
            }
            if (depth == RENDER_MAX_DEPTH) {
                o.cut = true;
                break;
            }
            puts_(&o, type == '%' ? "{" : type == '~' ? "(set) [" : type == '>' ? "(push) [" : "[");
            if (type == '%')
                v = v > INT64_MAX / 2 ? INT64_MAX : v * 2; /* a key and a value each */
            left[depth] = v;
            first[depth] = true;
            map[depth] = type == '%';
            depth++;
            continue; /* the array is open: not an element done yet */
        default:
            o.cut = true;
            break;
        }
        /* one element done: close every array it completes */
        while (depth > 0 && !o.cut && --left[depth - 1] == 0) {
            puts_(&o, map[depth - 1] ? "}" : "]");
            depth--;
        }
    }
    if (o.cut || (uint64_t)len < total)
        memcpy(o.buf + o.len, "...", 3), o.len += 3;
    o.buf[o.len] = '\0';
    return o.len;
}
