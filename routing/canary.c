/*
 * canary.c - canary rule matching (see canary.h).
 *
 * Addresses are compared in one form: 16 bytes, IPv4 as IPv4-mapped IPv6,
 * with an IPv4 prefix p becoming 96 + p.  That makes 4-byte IPv4, mapped
 * IPv4 and IPv6 a single case.
 */
#include "routing/canary.h"

#include <fnmatch.h>
#include <string.h>
#include <xxhash.h>

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/*
 * canon - addr in the 16-byte mapped form; false for a family we don't know
 * (0 included: nothing to compare).
 */
static bool
canon(const struct canary_addr *a, uint8_t out[16])
{
    switch (a->family) {
    case 4:
        if (memcmp(a->bytes, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
            memcpy(out, a->bytes, 16);
        } else {
            memcpy(out, v4mapped_prefix, sizeof(v4mapped_prefix));
            memcpy(out + 12, a->bytes, 4);
        }
        return true;
    case 6:
        memcpy(out, a->bytes, 16);
        return true;
    default:
        return false;
    }
}

bool
canary_addr_match(const struct canary_addr *addr, const struct canary_addr *network, int prefix)
{
    uint8_t a[16], net[16];

    if (!canon(addr, a) || !canon(network, net))
        return false;
    if (prefix < 0 || prefix > (network->family == 4 ? 32 : 128))
        return false;
    if (network->family == 4)
        prefix += 96;

    int whole = prefix / 8, rest = prefix % 8;
    if (memcmp(a, net, (size_t)whole) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xff << (8 - rest));
    return (a[whole] & mask) == (net[whole] & mask);
}

static bool
given(const char *cond)
{
    return cond && cond[0];
}

int
canary_bucket(const struct canary_session *s, enum canary_key key)
{
    uint8_t a[16];
    XXH64_hash_t h;

    switch (key) {
    case CANARY_KEY_USER:
        if (!given(s->user))
            return -1;
        h = XXH3_64bits_withSeed(s->user, strlen(s->user), CANARY_HASH_SEED);
        break;
    case CANARY_KEY_APPLICATION:
        if (!given(s->application_name))
            return -1;
        h = XXH3_64bits_withSeed(s->application_name, strlen(s->application_name),
                                 CANARY_HASH_SEED);
        break;
    case CANARY_KEY_CLIENT:
        if (!canon(&s->client, a))
            return -1;
        h = XXH3_64bits_withSeed(a, sizeof(a), CANARY_HASH_SEED);
        break;
    default:
        return -1;
    }
    return (int)(h % CANARY_BUCKETS);
}

/* prefix_of - the key starts with prefix (the key may hold only its first bytes). */
static bool
prefix_of(const char *prefix, const struct canary_unit *u)
{
    size_t n = strlen(prefix);
    return u->key != NULL && u->key_len >= n && memcmp(u->key, prefix, n) == 0;
}

/* rule_matches - every given condition of r holds; cheapest checks first. */
static bool
rule_matches(const struct canary_rule *r, const struct canary_session *s,
             const struct canary_unit *u)
{
    if (r->hint_shadow && !u->shadow_hint)
        return false;
    if (given(r->key_prefix) && !prefix_of(r->key_prefix, u))
        return false;
    if (given(r->user) && !(s->user && strcmp(r->user, s->user) == 0))
        return false;
    if (given(r->database) && !(s->database && strcmp(r->database, s->database) == 0))
        return false;
    if (r->client.family != 0 && !canary_addr_match(&s->client, &r->client, r->client_prefix))
        return false;
    if (given(r->application_name) &&
        !(s->application_name && fnmatch(r->application_name, s->application_name, 0) == 0))
        return false;
    if (r->percent_bp > 0) {
        int b = canary_bucket(s, r->percent_key);
        if (b < 0 || (uint32_t)b >= r->percent_bp)
            return false;
    }
    return true;
}

int
canary_match_unit(const struct canary_rule *rules, size_t n, const struct canary_session *s,
                  const struct canary_unit *u)
{
    for (size_t i = 0; i < n; i++)
        if (rule_matches(&rules[i], s, u))
            return (int)i;
    return -1;
}

int
canary_match_session(const struct canary_rule *rules, size_t n, const struct canary_session *s,
                     bool unit_has_shadow_hint)
{
    struct canary_unit u = {.shadow_hint = unit_has_shadow_hint};
    return canary_match_unit(rules, n, s, &u);
}

bool
canary_rules_use_key(const struct canary_rule *rules, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (given(rules[i].key_prefix))
            return true;
    return false;
}

bool
canary_rules_use_hint(const struct canary_rule *rules, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (rules[i].hint_shadow)
            return true;
    return false;
}
