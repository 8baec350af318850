/*
 * test_route.c - the read-routing decision: weights, every fallback reason,
 * canary and hint precedence, and who gets the comparison mirror.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "protocol/pgclass.h"
#include "routing/route.h"

_Static_assert(ROUTE_HINT_PRIMARY == PGCLASS_HINT_PRIMARY, "hint bits mirror pgclass");
_Static_assert(ROUTE_HINT_SHADOW == PGCLASS_HINT_SHADOW, "hint bits mirror pgclass");
_Static_assert(ROUTE_HINT_NOSHADOW == PGCLASS_HINT_NOSHADOW, "hint bits mirror pgclass");

enum { BLUE, GREEN, RED }; /* blue is the primary, green the shadow */

struct fixture {
    struct route_backend backends[3];
    struct route_input in;
    struct wrr wrr;
};

/* setup - a healthy listener: blue primary, green shadow, weights given. */
static void
setup(struct fixture *f, int wblue, int wgreen, int wred)
{
    int weights[3] = {wblue, wgreen, wred};
    memset(f, 0, sizeof(*f));
    for (int i = 0; i < 3; i++)
        f->backends[i] = (struct route_backend){.healthy = true, .lag_ms = 0};
    f->in = (struct route_input){
        .kind = REQ_KIND_READ,
        .ms_since_write = UINT64_MAX,
        .read_your_writes_ms = 1000,
        .max_lag_ms = 1000,
        .primary = BLUE,
        .shadow = GREEN,
        .backends = f->backends,
        .nbackends = 3,
    };
    wrr_init(&f->wrr, weights, 3);
}

static struct route_decision
decide(struct fixture *f)
{
    return route_decide(&f->in, &f->wrr);
}

static void
expect(struct route_decision d, int answer, int compare, enum route_reason reason)
{
    if (d.answer != answer || d.compare != compare || d.reason != reason)
        fail_msg("got answer %d compare %d reason %s, want %d %d %s", d.answer, d.compare,
                 route_reason_name(d.reason), answer, compare, route_reason_name(reason));
}

static void
test_weights_70_30(void **state)
{
    (void)state;
    struct fixture f;
    int count[3] = {0};
    setup(&f, 70, 30, 0);
    for (int i = 0; i < 10000; i++) {
        struct route_decision d = decide(&f);
        assert_int_equal(d.reason, ROUTE_REASON_NONE);
        /* the other side of the pair gets the comparison */
        assert_int_equal(d.compare, d.answer == BLUE ? GREEN : BLUE);
        count[d.answer]++;
    }
    /* smooth WRR is exact: 7 of every 10 */
    assert_int_equal(count[BLUE], 7000);
    assert_int_equal(count[GREEN], 3000);
    assert_int_equal(count[RED], 0); /* weight 0: never */
}

static void
test_all_to_shadow_and_zero_weight(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, 0, 100, 0);
    for (int i = 0; i < 100; i++)
        expect(decide(&f), GREEN, BLUE, ROUTE_REASON_NONE);
    setup(&f, 0, 0, 0);
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_NO_WEIGHT);
    f.in.nbackends = 0; /* no backends described at all */
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_NO_WEIGHT);
}

static void
test_not_read(void **state)
{
    (void)state;
    static const enum req_kind kinds[] = {REQ_KIND_WRITE, REQ_KIND_SESSION, REQ_KIND_TX,
                                          REQ_KIND_ADMIN};
    struct fixture f;
    setup(&f, 0, 100, 0);
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        f.in.kind = kinds[i];
        /* not even a hint or a canary moves a write */
        struct canary_rule r = {.action = CANARY_ROUTE, .backend = GREEN};
        f.in.canary = &r;
        f.in.hint = ROUTE_HINT_SHADOW;
        expect(decide(&f), BLUE, -1, ROUTE_REASON_NOT_READ);
    }
}

static void
test_in_transaction(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, 0, 100, 0);
    f.in.in_transaction = true;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_IN_TRANSACTION);
    f.in.hint = ROUTE_HINT_SHADOW; /* stronger than the hint */
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_IN_TRANSACTION);
}

static void
test_read_your_writes(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, 0, 100, 0);
    f.in.ms_since_write = 0;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_READ_YOUR_WRITES);
    f.in.ms_since_write = 999;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_READ_YOUR_WRITES);
    f.in.ms_since_write = 1000; /* "within 1 s" ends at 1 s */
    expect(decide(&f), GREEN, BLUE, ROUTE_REASON_NONE);
    f.in.ms_since_write = UINT64_MAX; /* never wrote */
    expect(decide(&f), GREEN, BLUE, ROUTE_REASON_NONE);
    f.in.ms_since_write = 0;
    f.in.read_your_writes_ms = 0; /* off */
    expect(decide(&f), GREEN, BLUE, ROUTE_REASON_NONE);
}

static void
test_hints(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, 0, 100, 0);
    f.in.hint = ROUTE_HINT_PRIMARY;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_HINT_PRIMARY);
    f.in.hint = ROUTE_HINT_PRIMARY | ROUTE_HINT_NOSHADOW;
    expect(decide(&f), BLUE, -1, ROUTE_REASON_HINT_PRIMARY);
    f.in.hint = ROUTE_HINT_NOSHADOW; /* kept off the shadow, answer included */
    expect(decide(&f), BLUE, -1, ROUTE_REASON_HINT_NOSHADOW);

    /* tandem:shadow sends the read to the shadow whatever the weights */
    setup(&f, 100, 0, 0);
    f.in.hint = ROUTE_HINT_SHADOW;
    for (int i = 0; i < 10; i++)
        expect(decide(&f), GREEN, BLUE, ROUTE_REASON_NONE);
    f.backends[GREEN].healthy = false;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_UNHEALTHY);
    f.backends[GREEN].healthy = true;
    f.backends[GREEN].lag_ms = 1001;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_LAGGING);
    /* no shadow on this listener: the hint has nothing to say, weights decide */
    f.in.shadow = -1;
    expect(decide(&f), BLUE, -1, ROUTE_REASON_NONE);
}

static void
test_unhealthy_and_lagging(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, 70, 30, 0);
    f.backends[GREEN].healthy = false;
    int count[ROUTE_REASON__COUNT] = {0};
    for (int i = 0; i < 1000; i++) {
        struct route_decision d = decide(&f);
        assert_int_equal(d.answer, BLUE);
        count[d.reason]++;
    }
    /* exactly green's share falls back, each counted once */
    assert_int_equal(count[ROUTE_REASON_UNHEALTHY], 300);
    assert_int_equal(count[ROUTE_REASON_NONE], 700);

    setup(&f, 0, 100, 0);
    f.backends[GREEN].lag_ms = 1000; /* at the bound: still usable */
    expect(decide(&f), GREEN, BLUE, ROUTE_REASON_NONE);
    f.backends[GREEN].lag_ms = 1001;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_LAGGING);
    f.backends[GREEN].healthy = false; /* unhealthy is said first */
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_UNHEALTHY);

    /* the primary is always usable: its flags do not move its reads */
    setup(&f, 100, 0, 0);
    f.backends[BLUE].healthy = false;
    f.backends[BLUE].lag_ms = 99999;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_NONE);

    /* recovered: the share comes back */
    setup(&f, 50, 50, 0);
    f.backends[GREEN].healthy = false;
    for (int i = 0; i < 10; i++)
        assert_int_equal(decide(&f).answer, BLUE);
    f.backends[GREEN].healthy = true;
    int green = 0;
    for (int i = 0; i < 100; i++)
        green += decide(&f).answer == GREEN;
    assert_int_equal(green, 50);
}

static void
test_third_backend_falls_back_to_primary(void **state)
{
    (void)state;
    struct fixture f;
    setup(&f, 80, 10, 10);
    f.backends[RED].lag_ms = 5000;
    int count[3] = {0}, lagging = 0;
    for (int i = 0; i < 1000; i++) {
        struct route_decision d = decide(&f);
        count[d.answer]++;
        lagging += d.reason == ROUTE_REASON_LAGGING;
        if (d.answer == RED)
            fail_msg("lagging backend answered");
        /* a read answered by green is compared against the primary */
        if (d.answer == GREEN)
            assert_int_equal(d.compare, BLUE);
    }
    /* red's share goes to the primary, not to green */
    assert_int_equal(count[BLUE], 900);
    assert_int_equal(count[GREEN], 100);
    assert_int_equal(lagging, 100);
}

static void
test_canary_precedence(void **state)
{
    (void)state;
    struct fixture f;
    struct canary_rule route_red = {.action = CANARY_ROUTE, .backend = RED};
    struct canary_rule pin = {.action = CANARY_PRIMARY};
    struct canary_rule nomirror = {.action = CANARY_NO_MIRROR};

    /* ROUTE: 100% to its backend whatever the weights and the shadow hint */
    setup(&f, 100, 0, 0);
    f.in.canary = &route_red;
    for (int i = 0; i < 100; i++)
        expect(decide(&f), RED, BLUE, ROUTE_REASON_NONE);
    f.in.hint = ROUTE_HINT_SHADOW;
    expect(decide(&f), RED, BLUE, ROUTE_REASON_NONE);
    f.in.hint = 0;
    f.backends[RED].healthy = false; /* not to the weights: to the primary */
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_UNHEALTHY);
    f.backends[RED].healthy = true;
    f.backends[RED].lag_ms = 2000;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_LAGGING);
    struct canary_rule route_nowhere = {.action = CANARY_ROUTE, .backend = 7};
    f.in.canary = &route_nowhere;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_UNHEALTHY);
    struct canary_rule route_primary = {.action = CANARY_ROUTE, .backend = BLUE};
    f.in.canary = &route_primary;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_NONE);

    /* consistency comes before any canary */
    f.in.canary = &route_red;
    f.backends[RED].lag_ms = 0;
    f.in.in_transaction = true;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_IN_TRANSACTION);
    f.in.in_transaction = false;
    f.in.ms_since_write = 10;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_READ_YOUR_WRITES);
    f.in.ms_since_write = UINT64_MAX;
    f.in.hint = ROUTE_HINT_PRIMARY;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_HINT_PRIMARY);
    f.in.hint = 0;

    /* PRIMARY: 100% to the primary, over weights and the shadow hint */
    setup(&f, 0, 100, 0);
    f.in.canary = &pin;
    for (int i = 0; i < 100; i++)
        expect(decide(&f), BLUE, GREEN, ROUTE_REASON_CANARY_PRIMARY);
    f.in.hint = ROUTE_HINT_SHADOW;
    expect(decide(&f), BLUE, GREEN, ROUTE_REASON_CANARY_PRIMARY);

    /* NO_MIRROR: routed by the weights, never compared on the shadow */
    setup(&f, 50, 50, 0);
    f.in.canary = &nomirror;
    expect(decide(&f), BLUE, -1, ROUTE_REASON_NONE);
    expect(decide(&f), GREEN, BLUE, ROUTE_REASON_NONE);
}

/* With canary_match_session in front: matching sessions 100%, others 0%. */
static void
test_canary_end_to_end(void **state)
{
    (void)state;
    struct canary_rule rules[] = {
        {.application_name = "billing-canary", .action = CANARY_ROUTE, .backend = GREEN},
    };
    struct fixture f;
    setup(&f, 100, 0, 0);
    int green_match = 0, green_other = 0;
    for (int i = 0; i < 1000; i++) {
        struct canary_session s = {.user = "u",
                                   .application_name = i % 2 ? "billing-canary" : "billing"};
        int m = canary_match_session(rules, 1, &s, false);
        f.in.canary = m >= 0 ? &rules[m] : NULL;
        struct route_decision d = decide(&f);
        if (i % 2)
            green_match += d.answer == GREEN;
        else
            green_other += d.answer == GREEN;
    }
    assert_int_equal(green_match, 500);
    assert_int_equal(green_other, 0);
}

static void
test_reason_names(void **state)
{
    (void)state;
    assert_string_equal(route_reason_name(ROUTE_REASON_NONE), "none");
    assert_string_equal(route_reason_name(ROUTE_REASON_IN_TRANSACTION), "in_transaction");
    assert_string_equal(route_reason_name(ROUTE_REASON_READ_YOUR_WRITES), "read_your_writes");
    assert_string_equal(route_reason_name(ROUTE_REASON_NO_WEIGHT), "no_weight");
    assert_string_equal(route_reason_name(ROUTE_REASON__COUNT), "unknown");
    for (int r = 0; r < ROUTE_REASON__COUNT; r++) {
        const char *n = route_reason_name((enum route_reason)r);
        assert_true(n[0] != '\0');
        for (const char *p = n; *p; p++) /* a valid Prometheus label value, lowercase */
            assert_true((*p >= 'a' && *p <= 'z') || *p == '_');
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_weights_70_30),
        cmocka_unit_test(test_all_to_shadow_and_zero_weight),
        cmocka_unit_test(test_not_read),
        cmocka_unit_test(test_in_transaction),
        cmocka_unit_test(test_read_your_writes),
        cmocka_unit_test(test_hints),
        cmocka_unit_test(test_unhealthy_and_lagging),
        cmocka_unit_test(test_third_backend_falls_back_to_primary),
        cmocka_unit_test(test_canary_precedence),
        cmocka_unit_test(test_canary_end_to_end),
        cmocka_unit_test(test_reason_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
