/* test_wrr.c - smooth weighted round robin against nginx's known sequences. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "routing/wrr.h"

static void
test_nginx_sequence(void **state)
{
    (void)state;
    int weights[] = {5, 1, 1};
    struct wrr w;
    wrr_init(&w, weights, 3);
    /* nginx's documented order is a a b a c a a for the first 7 picks */
    char got[8] = {0};
    for (int i = 0; i < 7; i++)
        got[i] = (char)('a' + wrr_pick(&w, ~0u));
    assert_string_equal(got, "aabacaa");
}

static void
test_proportions_and_zero_weight(void **state)
{
    (void)state;
    int weights[] = {70, 30, 0};
    int count[3] = {0};
    struct wrr w;
    wrr_init(&w, weights, 3);
    for (int i = 0; i < 1000; i++)
        count[wrr_pick(&w, ~0u)]++;
    assert_int_equal(count[0], 700);
    assert_int_equal(count[1], 300);
    assert_int_equal(count[2], 0);
}

static void
test_eligibility_mask(void **state)
{
    (void)state;
    int weights[] = {1, 1};
    struct wrr w;
    wrr_init(&w, weights, 2);
    for (int i = 0; i < 10; i++)
        assert_int_equal(wrr_pick(&w, 1u << 1), 1);
    assert_int_equal(wrr_pick(&w, 0), -1);
    int zero[] = {0, 0};
    wrr_init(&w, zero, 2);
    assert_int_equal(wrr_pick(&w, ~0u), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_nginx_sequence),
        cmocka_unit_test(test_proportions_and_zero_weight),
        cmocka_unit_test(test_eligibility_mask),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
