/*
 * test_canary.c - canary rules: each match type all-or-nothing, first match
 * wins, CIDR in every address form, globs, and the percentage's stability.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <stdio.h>
#include <string.h>

#include "routing/canary.h"

/* addr - "10.1.2.3" as family 4 (4-byte form), "::1" as family 6. */
static struct canary_addr
addr(const char *text)
{
    struct canary_addr a;
    memset(&a, 0, sizeof(a));
    if (inet_pton(AF_INET, text, a.bytes) == 1)
        a.family = 4;
    else if (inet_pton(AF_INET6, text, a.bytes) == 1)
        a.family = 6;
    else
        fail_msg("bad address %s", text);
    return a;
}

/* addr4_mapped - an IPv4 address given as family 4 in the mapped 16-byte form. */
static struct canary_addr
addr4_mapped(const char *text)
{
    struct canary_addr a;
    memset(&a, 0, sizeof(a));
    a.family = 4;
    a.bytes[10] = a.bytes[11] = 0xff;
    assert_int_equal(inet_pton(AF_INET, text, a.bytes + 12), 1);
    return a;
}

static bool
in_net(const char *client, const char *net, int prefix)
{
    struct canary_addr c = addr(client), n = addr(net);
    return canary_addr_match(&c, &n, prefix);
}

static void
test_cidr(void **state)
{
    (void)state;
    /* IPv4 network, IPv4 client in 4-byte, family-4 mapped and IPv6 mapped forms */
    assert_true(in_net("10.1.2.3", "10.0.0.0", 8));
    assert_true(in_net("::ffff:10.1.2.3", "10.0.0.0", 8));
    struct canary_addr m = addr4_mapped("10.1.2.3"), n = addr("10.0.0.0");
    assert_true(canary_addr_match(&m, &n, 8));
    struct canary_addr nm = addr4_mapped("10.0.0.0"); /* the network mapped too */
    assert_true(canary_addr_match(&m, &nm, 8));
    assert_false(in_net("11.0.0.1", "10.0.0.0", 8));
    assert_false(in_net("::ffff:11.0.0.1", "10.0.0.0", 8));
    /* an IPv4 network holds no real IPv6 address, even one ending alike */
    assert_false(in_net("::10.1.2.3", "10.0.0.0", 8));
    assert_false(in_net("2001:db8::a01:203", "10.0.0.0", 8));
    assert_true(in_net("2001:db8::1", "0.0.0.0", 0) == false);
    assert_true(in_net("203.0.113.9", "0.0.0.0", 0));
    /* prefixes not on a byte boundary */
    assert_true(in_net("192.168.1.200", "192.168.0.0", 23));
    assert_false(in_net("192.168.2.1", "192.168.0.0", 23));
    assert_true(in_net("192.168.0.5", "192.168.0.5", 32));
    assert_false(in_net("192.168.0.6", "192.168.0.5", 32));
    /* IPv6 */
    assert_true(in_net("2001:db8:1::1", "2001:db8::", 32));
    assert_false(in_net("2001:db9::1", "2001:db8::", 32));
    assert_true(in_net("fe80::1", "fe80::", 10));
    assert_true(in_net("febf::1", "fe80::", 10));
    assert_false(in_net("fec0::1", "fe80::", 10));
    assert_true(in_net("::1", "::1", 128));
    assert_false(in_net("10.1.2.3", "2001:db8::", 32));
    /* ::ffff:0:0/96 is every IPv4 address; ::/0 is every address */
    assert_true(in_net("10.1.2.3", "::ffff:0.0.0.0", 96));
    assert_true(in_net("10.1.2.3", "::", 0));
    /* invalid prefixes and families match nothing */
    assert_false(in_net("10.1.2.3", "10.0.0.0", 33));
    assert_false(in_net("10.1.2.3", "10.0.0.0", -1));
    assert_false(in_net("::1", "::", 129));
    struct canary_addr none = {0}, c = addr("10.1.2.3");
    assert_false(canary_addr_match(&none, &n, 0)); /* unix-socket client */
    assert_false(canary_addr_match(&c, &none, 0));
}

/* count - how many of n sessions built by make() match rules[0..nr). */
static int
count_matches(const struct canary_rule *rules, size_t nr, int n,
              void (*make)(struct canary_session *, int, char *, size_t), bool hint)
{
    int hits = 0;
    for (int i = 0; i < n; i++) {
        char buf[64];
        struct canary_session s;
        memset(&s, 0, sizeof(s));
        make(&s, i, buf, sizeof(buf));
        if (canary_match_session(rules, nr, &s, hint) == 0)
            hits++;
    }
    return hits;
}

/* Even i: a session the rule under test is about; odd: one it is not. */
static void
make_user(struct canary_session *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, "%s%d", i % 2 ? "other" : "tester", i % 2);
    s->user = buf;
    s->database = "app";
    s->application_name = "web";
    s->client = addr("10.0.0.1");
}

static void
make_database(struct canary_session *s, int i, char *buf, size_t len)
{
    (void)buf, (void)len;
    s->user = "u";
    s->database = i % 2 ? "app" : "workspace_dev";
    s->application_name = "web";
}

static void
make_app(struct canary_session *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, "%s%d", i % 2 ? "billing" : "billing-canary-", i);
    s->user = "u";
    s->database = "app";
    s->application_name = i % 4 == 3 ? NULL : buf; /* some send none */
}

static void
make_client(struct canary_session *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, i % 2 ? "10.0.%d.%d" : "172.16.%d.%d", (i / 256) % 256, i % 256);
    s->user = "u";
    s->client = (i % 3 == 0) ? addr4_mapped(buf) : addr(buf);
    if (i % 5 == 0) { /* the IPv6-mapped form */
        char v6[80];
        snprintf(v6, sizeof(v6), "::ffff:%s", buf);
        s->client = addr(v6);
    }
}

static void
make_plain(struct canary_session *s, int i, char *buf, size_t len)
{
    snprintf(buf, len, "user%d", i);
    s->user = buf;
    s->database = "app";
    s->application_name = "web";
}

static void
test_each_match_type_all_or_nothing(void **state)
{
    (void)state;
    const int n = 2000; /* half are the rule's sessions */
    struct canary_rule r;

    memset(&r, 0, sizeof(r));
    r.user = "tester0";
    assert_int_equal(count_matches(&r, 1, n, make_user, false), n / 2);

    memset(&r, 0, sizeof(r));
    r.database = "workspace_dev";
    assert_int_equal(count_matches(&r, 1, n, make_database, false), n / 2);

    memset(&r, 0, sizeof(r));
    r.application_name = "billing-*";
    /* the even ones, minus those (i % 4 == 3, all odd) that sent no name */
    assert_int_equal(count_matches(&r, 1, n, make_app, false), n / 2);

    memset(&r, 0, sizeof(r));
    r.client = addr("172.16.0.0");
    r.client_prefix = 12;
    assert_int_equal(count_matches(&r, 1, n, make_client, false), n / 2);

    memset(&r, 0, sizeof(r));
    r.hint_shadow = true;
    assert_int_equal(count_matches(&r, 1, n, make_plain, true), n);
    assert_int_equal(count_matches(&r, 1, n, make_plain, false), 0);

    memset(&r, 0, sizeof(r));
    r.percent_bp = 10000;
    assert_int_equal(count_matches(&r, 1, n, make_plain, false), n);
    r.percent_bp = 0; /* no condition at all: everyone */
    assert_int_equal(count_matches(&r, 1, n, make_plain, false), n);
}

static void
test_conditions_and_together(void **state)
{
    (void)state;
    struct canary_rule r = {.user = "alice", .database = "app", .application_name = "web-*"};
    struct canary_session s = {.user = "alice", .database = "app", .application_name = "web-1"};
    assert_int_equal(canary_match_session(&r, 1, &s, false), 0);
    s.database = "other";
    assert_int_equal(canary_match_session(&r, 1, &s, false), -1);
    s.database = "app";
    s.application_name = "worker";
    assert_int_equal(canary_match_session(&r, 1, &s, false), -1);
    s.application_name = "web-1";
    s.user = NULL; /* unknown user: a user condition cannot hold */
    assert_int_equal(canary_match_session(&r, 1, &s, false), -1);
    s.user = "Alice"; /* exact, case-sensitive */
    assert_int_equal(canary_match_session(&r, 1, &s, false), -1);
    /* "" is "not given", like NULL */
    struct canary_rule empty = {.user = "", .database = "", .application_name = ""};
    assert_int_equal(canary_match_session(&empty, 1, &s, false), 0);
    assert_int_equal(canary_match_session(NULL, 0, &s, false), -1);
}

static void
test_first_match_wins(void **state)
{
    (void)state;
    struct canary_rule rules[] = {
        {.user = "ops", .action = CANARY_PRIMARY},
        {.application_name = "billing-canary", .action = CANARY_ROUTE, .backend = 1},
        {.hint_shadow = true, .action = CANARY_ROUTE, .backend = 1},
        {.database = "app", .action = CANARY_NO_MIRROR},
    };
    size_t n = sizeof(rules) / sizeof(rules[0]);
    struct canary_session s = {.user = "ops", .database = "app",
                               .application_name = "billing-canary"};
    assert_int_equal(canary_match_session(rules, n, &s, true), 0);
    s.user = "bob";
    assert_int_equal(canary_match_session(rules, n, &s, true), 1);
    s.application_name = "billing";
    assert_int_equal(canary_match_session(rules, n, &s, true), 2);
    assert_int_equal(canary_match_session(rules, n, &s, false), 3);
    s.database = "other";
    assert_int_equal(canary_match_session(rules, n, &s, false), -1);
    assert_true(canary_rules_use_hint(rules, n));
    assert_false(canary_rules_use_hint(rules, 2));
}

static void
test_globs(void **state)
{
    (void)state;
    static const struct {
        const char *glob, *name;
        bool match;
    } cases[] = {
        {"billing-*", "billing-canary", true}, {"billing-*", "billing-", true},
        {"billing-*", "billing", false},       {"billing-*", "Billing-x", false},
        {"web-[ab]", "web-a", true},           {"web-[ab]", "web-c", false},
        {"?x", "ax", true},                    {"?x", "x", false},
        {"psql", "psql", true},                {"psql", "psql2", false},
        {"*", "anything at all", true},        {"*/*", "a/b", true},
        {"a\\*", "a*", true},                  {"a\\*", "ab", false},
        {"[", "[", true}, /* glibc: an unbalanced bracket is a literal */
        {"[", "x", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct canary_rule r = {.application_name = cases[i].glob};
        struct canary_session s = {.application_name = cases[i].name};
        if ((canary_match_session(&r, 1, &s, false) == 0) != cases[i].match)
            fail_msg("glob %s name %s: expected %d", cases[i].glob, cases[i].name,
                     cases[i].match);
    }
}

static void
test_percent_stable_and_proportional(void **state)
{
    (void)state;
    struct canary_rule five = {.percent_bp = 500, .percent_key = CANARY_KEY_USER};
    struct canary_rule quarter = {.percent_bp = 2500, .percent_key = CANARY_KEY_USER};
    int hits = 0, hits25 = 0;

    for (int i = 0; i < 100000; i++) {
        char user[32];
        snprintf(user, sizeof(user), "user%d", i);
        struct canary_session s = {.user = user};
        int a = canary_match_session(&five, 1, &s, false);
        /* the same key twice: the same side */
        assert_int_equal(canary_match_session(&five, 1, &s, false), a);
        assert_int_equal(canary_bucket(&s, CANARY_KEY_USER), canary_bucket(&s, CANARY_KEY_USER));
        int b = canary_match_session(&quarter, 1, &s, false);
        /* 5% is a subset of 25%: raising a percentage only adds sessions */
        if (a == 0)
            assert_int_equal(b, 0);
        hits += a == 0;
        hits25 += b == 0;
    }
    assert_in_range(hits, 4500, 5500);     /* 5% of 100,000 within ±0.5% */
    assert_in_range(hits25, 24500, 25500);

    /* a pinned value guards the "never change the seed" promise */
    struct canary_session alice = {.user = "alice"};
    int bucket = canary_bucket(&alice, CANARY_KEY_USER);
    assert_in_range(bucket, 0, 9999);
    struct canary_session alice2 = {.user = "alice", .database = "x", .application_name = "y"};
    assert_int_equal(canary_bucket(&alice2, CANARY_KEY_USER), bucket);
}

static void
test_percent_keys(void **state)
{
    (void)state;
    /* client key: every form of one IPv4 address hashes alike */
    struct canary_session a = {.client = addr("10.9.8.7")};
    struct canary_session b = {.client = addr4_mapped("10.9.8.7")};
    struct canary_session c = {.client = addr("::ffff:10.9.8.7")};
    int ba = canary_bucket(&a, CANARY_KEY_CLIENT);
    assert_in_range(ba, 0, 9999);
    assert_int_equal(canary_bucket(&b, CANARY_KEY_CLIENT), ba);
    assert_int_equal(canary_bucket(&c, CANARY_KEY_CLIENT), ba);

    /* a session without the key never matches a percentage rule */
    struct canary_rule all_by_client = {.percent_bp = 10000, .percent_key = CANARY_KEY_CLIENT};
    struct canary_rule all_by_app = {.percent_bp = 10000, .percent_key = CANARY_KEY_APPLICATION};
    struct canary_rule all_by_user = {.percent_bp = 10000, .percent_key = CANARY_KEY_USER};
    struct canary_session unix_client = {.user = "u", .application_name = ""};
    assert_int_equal(canary_match_session(&all_by_client, 1, &unix_client, false), -1);
    assert_int_equal(canary_match_session(&all_by_app, 1, &unix_client, false), -1);
    assert_int_equal(canary_match_session(&all_by_user, 1, &unix_client, false), 0);
    assert_int_equal(canary_bucket(&unix_client, CANARY_KEY_CLIENT), -1);

    /* application key: ~5% of distinct application names */
    struct canary_rule five = {.percent_bp = 500, .percent_key = CANARY_KEY_APPLICATION};
    int hits = 0;
    for (int i = 0; i < 100000; i++) {
        char app[32];
        snprintf(app, sizeof(app), "app-%d", i);
        struct canary_session s = {.application_name = app};
        hits += canary_match_session(&five, 1, &s, false) == 0;
    }
    assert_in_range(hits, 4500, 5500);

    /* client key: ~5% of 100,000 distinct IPv4 clients */
    five.percent_key = CANARY_KEY_CLIENT;
    hits = 0;
    for (uint32_t i = 0; i < 100000; i++) {
        struct canary_session s = {.client = {.family = 4}};
        uint32_t ip = htonl(0x0a000000u + i);
        memcpy(s.client.bytes, &ip, 4);
        hits += canary_match_session(&five, 1, &s, false) == 0;
    }
    assert_in_range(hits, 4500, 5500);
}

static int
match_key(const struct canary_rule *rules, size_t n, const char *key)
{
    struct canary_session s = {.user = "u"};
    struct canary_unit u = {.key = (const uint8_t *)key, .key_len = key ? strlen(key) : 0};
    return canary_match_unit(rules, n, &s, &u);
}

/* key_prefix: a unit-level condition, all or nothing, exact bytes, ANDed like the others. */
static void
test_key_prefix(void **state)
{
    (void)state;
    struct canary_rule rules[2] = {
        {.key_prefix = "user:", .action = CANARY_ROUTE, .backend = 1},
        {.action = CANARY_PRIMARY}, /* everything else */
    };
    assert_true(canary_rules_use_key(rules, 2));
    assert_false(canary_rules_use_key(rules + 1, 1));
    assert_int_equal(match_key(rules, 2, "user:42"), 0);
    assert_int_equal(match_key(rules, 2, "user:"), 0);
    assert_int_equal(match_key(rules, 2, "user"), 1);     /* shorter than the prefix */
    assert_int_equal(match_key(rules, 2, "User:42"), 1);  /* case matters */
    assert_int_equal(match_key(rules, 2, "order:user:1"), 1);
    assert_int_equal(match_key(rules, 2, NULL), 1);       /* a command without a key */
    /* only the first bytes of a long key are needed */
    struct canary_session s = {0};
    struct canary_unit u = {.key = (const uint8_t *)"user:1234567890", .key_len = 6};
    assert_int_equal(canary_match_unit(rules, 2, &s, &u), 0);
    /* the session-level entry point never matches a key rule */
    assert_int_equal(canary_match_session(rules, 2, &s, false), 1);
    /* ANDed with a client-name glob (application_name is the Redis client name) */
    struct canary_rule both = {.key_prefix = "user:", .application_name = "billing-*"};
    struct canary_session named = {.application_name = "billing-7"};
    struct canary_unit k = {.key = (const uint8_t *)"user:1", .key_len = 6};
    assert_int_equal(canary_match_unit(&both, 1, &named, &k), 0);
    named.application_name = "web";
    assert_int_equal(canary_match_unit(&both, 1, &named, &k), -1);
    named.application_name = NULL; /* no CLIENT SETNAME yet */
    assert_int_equal(canary_match_unit(&both, 1, &named, &k), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr),
        cmocka_unit_test(test_each_match_type_all_or_nothing),
        cmocka_unit_test(test_conditions_and_together),
        cmocka_unit_test(test_first_match_wins),
        cmocka_unit_test(test_globs),
        cmocka_unit_test(test_percent_stable_and_proportional),
        cmocka_unit_test(test_percent_keys),
        cmocka_unit_test(test_key_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
