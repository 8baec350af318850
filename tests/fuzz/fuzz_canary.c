/*
 * fuzz_canary.c - libFuzzer harness for canary matching and the route decision.
 *
 * One call per input.  The input is read as a little program of bytes:
 *
 *   nrules(1) { rule }*  session  route
 *   rule    = conds(1) user db app(str) family(1) prefix(1) addr(16)
 *             percent(2) key(1) action(1) backend(1)
 *   session = user db app(str) family(1) addr(16)
 *   route   = kind(1) flags(1) hint(1) since(2) ryw(2) maxlag(2)
 *             nbackends(1) primary(1) shadow(1) { health(1) lag(2) }* wrr_seed(1)
 *   str     = len(1) bytes (len % 24)
 *
 * Missing bytes read as 0.  Invariants are checked with abort():
 *   - the match is -1 or the first rule that matches on its own;
 *   - without hint rules, the hint does not change the match;
 *   - buckets are in 0..9999 (or -1), the same twice, and the same for a
 *     4-byte IPv4 client and its mapped forms;
 *   - a decision answers from the primary or a usable backend, names a
 *     reason only when the primary answers, never compares a unit with the
 *     backend that answered it, and gives non-reads NOT_READ and no compare.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "routing/canary.h"
#include "routing/route.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond))                                                                         \
            abort();                                                                         \
    } while (0)

#define MAX_RULES 8
#define STR_MAX 24

struct reader {
    const uint8_t *p;
    size_t left;
};

static uint8_t
u8(struct reader *r)
{
    if (r->left == 0)
        return 0;
    r->left--;
    return *r->p++;
}

static uint16_t
u16(struct reader *r)
{
    uint16_t lo = u8(r);
    return (uint16_t)(lo | (uint16_t)u8(r) << 8);
}

/* str - a NUL-terminated copy in buf; NULL when the length byte is 255. */
static const char *
str(struct reader *r, char buf[STR_MAX + 1])
{
    uint8_t len = u8(r);
    if (len == 255)
        return NULL;
    len %= STR_MAX;
    for (uint8_t i = 0; i < len; i++)
        buf[i] = (char)u8(r);
    buf[len] = '\0';
    return buf;
}

static void
addr(struct reader *r, struct canary_addr *a, uint8_t family)
{
    static const int families[] = {0, 4, 6, 5};
    a->family = families[family % 4];
    for (int i = 0; i < 16; i++)
        a->bytes[i] = u8(r);
}

static void
check_buckets(const struct canary_session *s)
{
    for (int k = CANARY_KEY_USER; k <= CANARY_KEY_CLIENT; k++) {
        int b = canary_bucket(s, (enum canary_key)k);
        CHECK(b >= -1 && b < CANARY_BUCKETS);
        CHECK(canary_bucket(s, (enum canary_key)k) == b);
    }
    if (s->client.family == 4 || s->client.family == 6) {
        struct canary_session m = *s;
        int b = canary_bucket(s, CANARY_KEY_CLIENT);
        const uint8_t *v4 = s->client.bytes;
        static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        if (s->client.family == 4 && memcmp(v4, mapped, 12) != 0) {
            /* the 4-byte form and the IPv6-mapped form of one address */
            memcpy(m.client.bytes, mapped, 12);
            memcpy(m.client.bytes + 12, v4, 4);
            m.client.family = 6;
            CHECK(canary_bucket(&m, CANARY_KEY_CLIENT) == b);
            m.client.family = 4;
            CHECK(canary_bucket(&m, CANARY_KEY_CLIENT) == b);
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct reader r = {data, size};
    struct canary_rule rules[MAX_RULES];
    char rstr[MAX_RULES][3][STR_MAX + 1];
    size_t n = u8(&r) % (MAX_RULES + 1);

    memset(rules, 0, sizeof(rules));
    for (size_t i = 0; i < n; i++) {
        struct canary_rule *c = &rules[i];
        uint8_t conds = u8(&r);
        c->user = str(&r, rstr[i][0]);
        c->database = str(&r, rstr[i][1]);
        c->application_name = str(&r, rstr[i][2]);
        addr(&r, &c->client, u8(&r));
        c->client_prefix = (int8_t)u8(&r);
        c->hint_shadow = conds & 1;
        c->percent_bp = u16(&r);
        c->percent_key = (enum canary_key)(u8(&r) % 3);
        c->action = (enum canary_action)(u8(&r) % 3);
        c->backend = (int8_t)u8(&r);
    }

    char sstr[3][STR_MAX + 1];
    struct canary_session s;
    memset(&s, 0, sizeof(s));
    s.user = str(&r, sstr[0]);
    s.database = str(&r, sstr[1]);
    s.application_name = str(&r, sstr[2]);
    addr(&r, &s.client, u8(&r));

    /* canary */
    check_buckets(&s);
    for (int hint = 0; hint < 2; hint++) {
        int m = canary_match_session(rules, n, &s, hint);
        CHECK(m >= -1 && m < (int)n);
        for (int i = 0; i < (m < 0 ? (int)n : m); i++)
            CHECK(canary_match_session(&rules[i], 1, &s, hint) == -1);
        if (m >= 0)
            CHECK(canary_match_session(&rules[m], 1, &s, hint) == 0);
        if (!canary_rules_use_hint(rules, n))
            CHECK(canary_match_session(rules, n, &s, !hint) == m);
    }
    int m = canary_match_session(rules, n, &s, false);

    /* route */
    struct route_backend backends[ROUTE_MAX_BACKENDS];
    struct route_input in;
    memset(&in, 0, sizeof(in));
    in.kind = (enum req_kind)(u8(&r) % REQ_KIND__COUNT);
    uint8_t flags = u8(&r);
    in.in_transaction = flags & 1;
    in.hint = u8(&r) & 7;
    uint16_t since = u16(&r);
    in.ms_since_write = since == 0xffff ? UINT64_MAX : since;
    in.read_your_writes_ms = u16(&r);
    in.max_lag_ms = u16(&r);
    in.canary = m >= 0 ? &rules[m] : NULL;
    in.nbackends = 1 + u8(&r) % ROUTE_MAX_BACKENDS;
    in.primary = u8(&r) % in.nbackends;
    in.shadow = (int)(u8(&r) % (in.nbackends + 1)) - 1;
    int weights[ROUTE_MAX_BACKENDS];
    for (int i = 0; i < in.nbackends; i++) {
        uint8_t h = u8(&r);
        backends[i].healthy = h & 1;
        weights[i] = h >> 1;
        backends[i].lag_ms = u16(&r);
    }
    in.backends = backends;
    struct wrr w;
    wrr_init(&w, weights, in.nbackends);
    for (uint8_t i = u8(&r) % 16; i > 0; i--) /* start somewhere in the rotation */
        (void)wrr_pick(&w, ~0u);

    struct route_decision d = route_decide(&in, &w);
    CHECK(d.answer >= 0 && d.answer < in.nbackends);
    CHECK((unsigned)d.reason < ROUTE_REASON__COUNT);
    CHECK(d.compare >= -1 && d.compare < in.nbackends && d.compare != d.answer);
    if (d.reason != ROUTE_REASON_NONE)
        CHECK(d.answer == in.primary);
    if (d.answer != in.primary) {
        CHECK(backends[d.answer].healthy && backends[d.answer].lag_ms <= in.max_lag_ms);
        CHECK(d.compare == in.primary);
    }
    if (in.kind != REQ_KIND_READ)
        CHECK(d.reason == ROUTE_REASON_NOT_READ && d.compare == -1);
    return 0;
}
