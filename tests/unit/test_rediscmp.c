/*
 * test_rediscmp.c - Redis reply comparison outcomes and the report's rendering.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "protocol/rediscmd.h"
#include "protocol/rediscmp.h"

static struct resp_reply_info
scan(const char *reply, enum resp_digest_mode mode)
{
    struct resp_reply_info info;
    size_t used;
    const char *err;
    assert_int_equal(resp_reply_scan((const uint8_t *)reply, strlen(reply), mode, &used, &info,
                                     &err),
                     RESP_OK);
    return info;
}

static enum shadow_outcome
outcome(uint32_t flags, const char *p, const char *s, enum resp_digest_mode mode)
{
    struct resp_reply_info pi = scan(p, mode), si = scan(s, mode);
    return rediscmp_outcome(flags, &pi, &si, 2);
}

static void
test_outcomes(void **state)
{
    (void)state;
    enum resp_digest_mode O = RESP_DIGEST_ORDERED;
    assert_int_equal(outcome(REDISCMD_READ, "$3\r\nbar\r\n", "$3\r\nbar\r\n", O), SHADOW_MATCH);
    assert_int_equal(outcome(REDISCMD_READ, "$3\r\nbar\r\n", "$3\r\nbaz\r\n", O), SHADOW_MISMATCH);
    assert_int_equal(outcome(REDISCMD_READ, "$3\r\nbar\r\n", "$-1\r\n", O), SHADOW_MISMATCH);
    assert_int_equal(outcome(REDISCMD_READ, ":1\r\n", "$1\r\n1\r\n", O), SHADOW_MISMATCH);
    assert_int_equal(outcome(REDISCMD_READ | REDISCMD_NONDET, "$1\r\na\r\n", "$1\r\nb\r\n", O),
                     SHADOW_NOISE);
    assert_int_equal(outcome(REDISCMD_WRITE, "-ERR x\r\n", ":1\r\n", O), SHADOW_PRIMARY_ERROR);
    assert_int_equal(outcome(REDISCMD_WRITE, ":1\r\n", "-ERR x\r\n", O), SHADOW_SHADOW_ERROR);
    assert_int_equal(outcome(REDISCMD_WRITE, "-WRONGTYPE a\r\n", "-WRONGTYPE a\r\n", O),
                     SHADOW_MATCH);
    assert_int_equal(outcome(REDISCMD_WRITE, "-WRONGTYPE a\r\n", "-ERR b\r\n", O),
                     SHADOW_MISMATCH);
    /* TTL drift within the tolerance; the special values exactly */
    uint32_t ttl = REDISCMD_READ | REDISCMD_TTL_REPLY;
    assert_int_equal(outcome(ttl, ":100\r\n", ":98\r\n", O), SHADOW_MATCH);
    assert_int_equal(outcome(ttl, ":100\r\n", ":97\r\n", O), SHADOW_MISMATCH);
    assert_int_equal(outcome(ttl, ":-1\r\n", ":1\r\n", O), SHADOW_MISMATCH);
    assert_int_equal(outcome(ttl, ":-2\r\n", ":-2\r\n", O), SHADOW_MATCH);
    /* unordered replies: element order does not matter */
    assert_int_equal(outcome(REDISCMD_READ, "*2\r\n$1\r\na\r\n$1\r\nb\r\n",
                             "*2\r\n$1\r\nb\r\n$1\r\na\r\n", RESP_DIGEST_SET),
                     SHADOW_MATCH);
    assert_int_equal(outcome(REDISCMD_READ, "*2\r\n$1\r\na\r\n$1\r\nb\r\n",
                             "*2\r\n$1\r\nb\r\n$1\r\na\r\n", O),
                     SHADOW_MISMATCH);
    /* RESP3: a map compared as pairs, a set as a set, a blob error is an error */
    assert_int_equal(outcome(REDISCMD_READ, "%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n",
                             "%2\r\n$1\r\nb\r\n:2\r\n$1\r\na\r\n:1\r\n", RESP_DIGEST_PAIRS),
                     SHADOW_MATCH);
    assert_int_equal(outcome(REDISCMD_READ, "%2\r\n$1\r\na\r\n:1\r\n$1\r\nb\r\n:2\r\n",
                             "%2\r\n$1\r\na\r\n:2\r\n$1\r\nb\r\n:1\r\n", RESP_DIGEST_PAIRS),
                     SHADOW_MISMATCH);
    assert_int_equal(outcome(REDISCMD_READ, "~2\r\n$1\r\na\r\n$1\r\nb\r\n",
                             "~2\r\n$1\r\nb\r\n$1\r\na\r\n", RESP_DIGEST_SET),
                     SHADOW_MATCH);
    assert_int_equal(outcome(REDISCMD_READ, "_\r\n", "$-1\r\n", O), SHADOW_MISMATCH);
    assert_int_equal(outcome(REDISCMD_WRITE, ":1\r\n", "!5\r\nERR x\r\n", O),
                     SHADOW_SHADOW_ERROR);
    assert_int_equal(rediscmp_ttl_tolerance("pttl"), REDISCMP_TTL_TOLERANCE_MS);
    assert_int_equal(rediscmp_ttl_tolerance("ttl"), REDISCMP_TTL_TOLERANCE_S);
}

static void
check_render(const char *reply, size_t len, uint64_t total, size_t cap, const char *want)
{
    char out[256];
    assert_true(cap <= sizeof(out));
    size_t n = rediscmp_render((const uint8_t *)reply, len, total, out, cap);
    assert_string_equal(out, want);
    assert_int_equal(n, strlen(want));
}

static void
test_render(void **state)
{
    (void)state;
    const char *r;
    check_render("+OK\r\n", 5, 5, 64, "OK");
    check_render("-ERR no\r\n", 9, 9, 64, "(error) ERR no");
    check_render(":42\r\n", 5, 5, 64, "(integer) 42");
    check_render("$-1\r\n", 5, 5, 64, "(nil)");
    check_render("$3\r\nb\"\x01\r\n", 9, 9, 64, "\"b\\\"\\x01\"");
    r = "*3\r\n$1\r\na\r\n*2\r\n:1\r\n:2\r\n*0\r\n";
    check_render(r, strlen(r), strlen(r), 64, "[\"a\", [(integer) 1, (integer) 2], []]");
    r = "*2\r\n*1\r\n$1\r\nx\r\n$1\r\ny\r\n";
    check_render(r, strlen(r), strlen(r), 64, "[[\"x\"], \"y\"]");
    /* a prefix of a longer reply, and a small output */
    r = "*3\r\n$1\r\na\r\n$5\r\nhel";
    check_render(r, strlen(r), 100, 64, "[\"a\", \"hel...");
    check_render("$10\r\n0123456789\r\n", 17, 17, 8, "\"012...");
    check_render("garbage", 7, 7, 64, "...");
    /* RESP3 */
    r = "%2\r\n$1\r\na\r\n_\r\n$1\r\nb\r\n~1\r\n#t\r\n";
    check_render(r, strlen(r), strlen(r), 64, "{\"a\", (nil), \"b\", (set) [(true)]}");
    r = ">2\r\n,1.5\r\n(12345678901234567890\r\n";
    check_render(r, strlen(r), strlen(r), 64, "(push) [(double) 1.5, (big number) 12345678901234567890]");
    check_render("=7\r\ntxt:abc\r\n", 13, 13, 64, "\"txt:abc\"");
    check_render("!5\r\nERR x\r\n", 11, 11, 64, "(error) \"ERR x\"");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outcomes),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
