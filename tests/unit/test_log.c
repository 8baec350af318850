/*
 * test_log.c - log_escape (metrics/log.h): what clients send reaches a log
 * line as printable text, never as a line break or a terminal escape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "metrics/log.h"

static void
check(const char *in, const char *want)
{
    char out[256];
    size_t n = log_escape(in, out, sizeof(out));
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void
test_controls_escaped(void **state)
{
    (void)state;
    check("plain text, \"quoted\"", "plain text, \"quoted\"");
    check("/api\r2026-01-01T00:00:00.000Z error forged", "/api\\r2026-01-01T00:00:00.000Z error forged");
    check("a\nb\tc", "a\\nb\\tc");
    check("\x1b[2J\x1b]0;title\x07", "\\x1b[2J\\x1b]0;title\\x07");
    check("del\x7f", "del\\x7f");
    check("\x01\x1f", "\\x01\\x1f");
}

static void
test_utf8(void **state)
{
    (void)state;
    check("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    /* C1 controls, as UTF-8 (U+009B CSI) and as a raw byte */
    check("\xc2\x9b" "31m", "\\xc2\\x9b31m");
    check("\x9b" "31m", "\\x9b31m");
    /* invalid: truncated, overlong, surrogate, beyond U+10FFFF, lone continuation */
    check("\xc3", "\\xc3");
    check("\xe2\x82", "\\xe2\\x82");
    check("\xc0\xaf", "\\xc0\\xaf");
    check("\xe0\x80\xaf", "\\xe0\\x80\\xaf");
    check("\xed\xa0\x80", "\\xed\\xa0\\x80");
    check("\xf4\x90\x80\x80", "\\xf4\\x90\\x80\\x80");
    check("\x80", "\\x80");
}

static void
test_cut_never_inside_an_escape(void **state)
{
    (void)state;
    char out[6];
    assert_int_equal(log_escape("ab\r\n", out, sizeof(out)), 4);
    assert_string_equal(out, "ab\\r");
    assert_int_equal(log_escape("abcd\x1b", out, sizeof(out)), 4);
    assert_string_equal(out, "abcd");
    assert_int_equal(log_escape("abc\xe2\x82\xac", out, sizeof(out)), 3);
    assert_string_equal(out, "abc");
    assert_int_equal(log_escape("abcdefgh", out, sizeof(out)), 5);
    assert_string_equal(out, "abcde");
    assert_int_equal(log_escape("x", out, 1), 0);
    assert_string_equal(out, "");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_controls_escaped),
        cmocka_unit_test(test_utf8),
        cmocka_unit_test(test_cut_never_inside_an_escape),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
