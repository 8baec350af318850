/*
 * canary.h - canary rules: which sessions' reads go somewhere special.
 *
 * A rule is a conjunction of conditions; a condition left empty ("" / NULL /
 * 0) is not used.  Rules are tried in order and the first whose every given
 * condition holds wins:
 *
 *   user              exact, case-sensitive
 *   database          exact, case-sensitive
 *   application_name  fnmatch(3) glob, flags 0 ("billing-*", "web-[ab]");
 *                     for Redis the client name (CLIENT SETNAME, HELLO SETNAME)
 *   client            CIDR; IPv4 or IPv6 (see struct canary_addr)
 *   hint_shadow       the unit carries the tandem:shadow hint comment
 *   key_prefix        the unit's first key starts with it (Redis: "user:")
 *   percent_bp        a stable share of sessions, in basis points (500 = 5%)
 *
 * Percentage: bucket = XXH3_64bits_withSeed(key, CANARY_HASH_SEED) % 10000,
 * and the session matches when bucket < percent_bp.  The key is the user,
 * the application_name or the client address (the 16-byte IPv4-mapped form,
 * so a client hashes the same however its address was written).  The seed
 * is fixed and the same for every rule, so:
 *   - a given key lands on the same side on every connection, every worker,
 *     every tandem process and after every restart or reload;
 *   - raising a rule from 5% to 25% keeps the first 5% on the canary (the
 *     buckets below 500 are also below 2500): a migration only ever adds
 *     sessions to the canary, it never shuffles them.
 * A session that lacks the key (no application_name, a unix-socket client)
 * does not match a percentage rule: canaries are opt-in.
 *
 * Pure: no allocation, no I/O.  Rules borrow their strings (point them into
 * the configuration snapshot they were built from, which must outlive them).
 */
#ifndef TANDEM_CANARY_H
#define TANDEM_CANARY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CANARY_HASH_SEED 0x74616e64656d0001ULL /* "tandem" 1: never change it */
#define CANARY_BUCKETS 10000                   /* percent_bp is out of this */

/* What a matching rule does with the session's reads. */
enum canary_action {
    CANARY_ROUTE,     /* answer reads from rule->backend */
    CANARY_PRIMARY,   /* answer reads from the primary */
    CANARY_NO_MIRROR, /* leave the session's units off the shadow */
};

/* Which session attribute a percentage rule hashes. */
enum canary_key { CANARY_KEY_USER, CANARY_KEY_APPLICATION, CANARY_KEY_CLIENT };

/*
 * An address without struct sockaddr.  family 0: none (a unix-socket client,
 * or a rule without a client condition).  family 6: bytes holds 16 bytes of
 * IPv6.  family 4: bytes[0..3] holds the IPv4 address and the rest is zero,
 * or bytes holds it IPv4-mapped (::ffff:a.b.c.d) - both are accepted.  An
 * IPv4-mapped IPv6 address (family 6, ::ffff:a.b.c.d) is an IPv4 address:
 * it matches IPv4 CIDRs exactly as the 4-byte form does.
 */
struct canary_addr {
    int family; /* 0, 4 or 6 */
    uint8_t bytes[16];
};

struct canary_rule {
    const char *user;             /* NULL or "": any */
    const char *database;         /* NULL or "": any */
    const char *application_name; /* glob; NULL or "": any */
    struct canary_addr client;    /* network; family 0: any client */
    int client_prefix;            /* bits of client.family: 0..32 or 0..128 */
    bool hint_shadow;             /* only units with the tandem:shadow hint */
    const char *key_prefix;       /* only units whose first key starts with it; NULL or "": any */
    uint32_t percent_bp;          /* 1..10000; 0: no percentage condition */
    enum canary_key percent_key;
    enum canary_action action;
    int backend; /* CANARY_ROUTE: the backend index (route.h's index space) */
};

/* What is known of a session once its startup is done. */
struct canary_session {
    const char *user;             /* NULL: unknown, matches no user rule */
    const char *database;
    const char *application_name; /* NULL: not sent */
    struct canary_addr client;     /* family 0: unix socket */
};

/* What is known of one unit, for the rules that look at units (hint, key prefix). */
struct canary_unit {
    bool shadow_hint;   /* carries the tandem:shadow hint */
    const uint8_t *key; /* its first key (NULL: it has none); only a prefix is needed */
    size_t key_len;
};

/*
 * canary_match_unit - index of the first rule in rules[0..n) whose every
 * given condition holds for session s and unit u; -1 when none does.  A
 * rule with a key_prefix matches no unit without a key.  Use it when
 * canary_rules_use_unit() says the answer depends on the unit.
 */
int canary_match_unit(const struct canary_rule *rules, size_t n, const struct canary_session *s,
                      const struct canary_unit *u);

/* canary_rules_use_key - whether any rule has a key_prefix condition. */
bool canary_rules_use_key(const struct canary_rule *rules, size_t n);

/*
 * canary_match_session - index of the first rule in rules[0..n) whose every
 * given condition holds for session s and a unit that does (or does not)
 * carry the tandem:shadow hint; -1 when none does.
 *
 * A rule with an invalid client condition (family not 0/4/6, prefix out of
 * range) matches nothing.
 *
 * It is canary_match_unit() for a unit without a key: a key_prefix rule
 * never matches here.
 *
 * How to call it: if !canary_rules_use_hint(rules, n), the answer depends on
 * the session alone: compute it once after startup (with hint false) and
 * keep it.  Otherwise call it per unit with the unit's hint: that is cheap
 * enough (measured, -O2, one core: 5 mixed rules 48 ns, 2 exact-name rules
 * 19 ns, one percentage rule 14-23 ns, one glob rule 60-80 ns - fnmatch is
 * the dearest condition and is tried last).  Either way, match again after
 * a reload: the rules changed.
 */
int canary_match_session(const struct canary_rule *rules, size_t n,
                         const struct canary_session *s, bool unit_has_shadow_hint);

/* canary_rules_use_hint - whether any rule has a hint_shadow condition. */
bool canary_rules_use_hint(const struct canary_rule *rules, size_t n);

/*
 * canary_bucket - the session's percentage bucket 0..9999 for key, or -1
 * when the session lacks that key.  Stable as described above.
 */
int canary_bucket(const struct canary_session *s, enum canary_key key);

/*
 * canary_addr_match - whether addr lies in network/prefix (both as in
 * struct canary_addr).  An IPv6 network ::ffff:0:0/96 contains every IPv4
 * address; an IPv4 network contains no non-mapped IPv6 address.
 */
bool canary_addr_match(const struct canary_addr *addr, const struct canary_addr *network,
                       int prefix);

#endif /* TANDEM_CANARY_H */
