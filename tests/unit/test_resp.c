/*
 * test_resp.c - RESP2 request framing, reply scanning and digests.
 *
 * Every valid case is also fed as each of its prefixes, each copied into a
 * heap block of exactly that size so ASan catches a read past len: a prefix
 * must be NEED_MORE (with *used beyond it), the whole input OK with the same
 * result.  Error texts are Redis 7.0's, as measured against redis-server.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol/resp.h"

#define S(lit) (const uint8_t *)(lit), sizeof(lit) - 1

static uint8_t *
dup_exact(const uint8_t *p, size_t n)
{
    uint8_t *d = malloc(n > 0 ? n : 1);
    assert_non_null(d);
    if (n > 0)
        memcpy(d, p, n);
    return d;
}

static struct resp_limits
limits(bool pre_auth)
{
    struct resp_limits lim;
    resp_limits_init(&lim);
    lim.pre_auth = pre_auth;
    return lim;
}

/* Compare a parsed request's argument values with want[0..nwant). */
static void
assert_args(const struct resp_request *req, const char *const *want, const size_t *wlen,
            size_t nwant)
{
    assert_int_equal(req->argc, nwant);
    assert_int_equal(req->nargv, nwant < RESP_MAX_ARGS ? nwant : RESP_MAX_ARGS);
    for (size_t i = 0; i < req->nargv; i++) {
        uint8_t val[256];
        size_t n = resp_arg_decode(&req->argv[i], val, sizeof(val));
        size_t wl = wlen != NULL ? wlen[i] : strlen(want[i]);
        assert_int_equal(n, wl);
        assert_memory_equal(val, want[i], wl);
    }
}

/*
 * One valid command: the whole of buf parses OK with these arguments, and
 * every strict prefix is NEED_MORE.
 */
static void
check_command(const uint8_t *buf, size_t len, const struct resp_limits *lim, enum resp_form form,
              const char *const *want, const size_t *wlen, size_t nwant)
{
    for (size_t k = 0; k <= len; k++) {
        uint8_t *d = dup_exact(buf, k);
        struct resp_request req;
        size_t used = 0;
        const char *err = NULL;
        enum resp_status st = resp_request_parse(d, k, lim, &used, &req, &err);
        if (k < len) {
            if (st != RESP_NEED_MORE)
                fail_msg("prefix %zu of %zu: status %d (%s)", k, len, st, err ? err : "");
            assert_true(used > k);
            /* a lower bound: a caller waiting for `used` bytes never waits past the command */
            if (used > len)
                fail_msg("prefix %zu of %zu: used %zu beyond the command", k, len, used);
        } else {
            if (st != RESP_OK)
                fail_msg("whole input: status %d (%s)", st, err ? err : "");
            assert_int_equal(used, len);
            assert_int_equal(req.wire_len, len);
            assert_int_equal(req.form, form);
            assert_args(&req, want, wlen, nwant);
        }
        free(d);
    }
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__})
#define NARGS(...) (sizeof((const char *const[]){__VA_ARGS__}) / sizeof(const char *))
#define CHECK(lit, form, ...)                                                                 \
    check_command(S(lit), &lim, form, ARGS(__VA_ARGS__), NULL, NARGS(__VA_ARGS__))

/*
 * One invalid input: the whole of it is RESP_ERROR with exactly this text;
 * its prefixes are NEED_MORE until the error shows, then stay that error.
 */
static void
check_error(const uint8_t *buf, size_t len, const struct resp_limits *lim, const char *want)
{
    bool seen = false;
    for (size_t k = 0; k <= len; k++) {
        uint8_t *d = dup_exact(buf, k);
        struct resp_request req;
        size_t used = 0;
        const char *err = NULL;
        enum resp_status st = resp_request_parse(d, k, lim, &used, &req, &err);
        if (st == RESP_ERROR) {
            assert_non_null(err);
            if (strcmp(err, want) != 0)
                fail_msg("prefix %zu: error \"%s\", want \"%s\"", k, err, want);
            seen = true;
        } else {
            if (seen)
                fail_msg("prefix %zu: error went away", k);
            assert_int_equal(st, RESP_NEED_MORE);
            assert_true(used > k);
        }
        free(d);
    }
    if (!seen)
        fail_msg("no error, want \"%s\"", want);
}

#define CHECK_ERROR(lit, want) check_error(S(lit), &lim, want)

/* ------------------------------------------------------------------ */

static void
test_multibulk(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    CHECK("*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n", RESP_FORM_MULTIBULK, "SET", "a", "b");
    CHECK("*1\r\n$4\r\nPING\r\n", RESP_FORM_MULTIBULK, "PING");
    CHECK("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n", RESP_FORM_MULTIBULK, "ECHO", "");
    CHECK("*2\r\n$3\r\nGET\r\n$10\r\n0123456789\r\n", RESP_FORM_MULTIBULK, "GET", "0123456789");

    /* binary safe: CR, LF, NUL, '*' and '$' inside payloads */
    static const char bin[] = "*2\r\n$4\r\nECHO\r\n$7\r\n\r\n\0*$\r\n\r\n";
    const char *want[] = {"ECHO", "\r\n\0*$\r\n"};
    size_t wlen[] = {4, 7};
    check_command((const uint8_t *)bin, sizeof(bin) - 1, &lim, RESP_FORM_MULTIBULK, want, wlen, 2);
}

static void
test_empty_requests(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    /* Redis runs nothing and replies nothing for these; we frame them with argc 0. */
    check_command(S("*0\r\n"), &lim, RESP_FORM_MULTIBULK, NULL, NULL, 0);
    check_command(S("*-1\r\n"), &lim, RESP_FORM_MULTIBULK, NULL, NULL, 0);
    check_command(S("*-5\r\n"), &lim, RESP_FORM_MULTIBULK, NULL, NULL, 0);
    check_command(S("\r\n"), &lim, RESP_FORM_INLINE, NULL, NULL, 0);
    check_command(S("\n"), &lim, RESP_FORM_INLINE, NULL, NULL, 0);
    check_command(S("   \t \r\n"), &lim, RESP_FORM_INLINE, NULL, NULL, 0);
}

static void
test_many_args(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    char buf[1024];
    size_t n = (size_t)snprintf(buf, sizeof(buf), "*40\r\n$4\r\nMSET\r\n");
    const char *want[40];
    char vals[40][16];
    want[0] = "MSET";
    for (unsigned i = 1; i < 40; i++) {
        snprintf(vals[i], sizeof(vals[i]), "k%02u", i);
        want[i] = vals[i];
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "$3\r\n%s\r\n", vals[i]);
    }
    check_command((const uint8_t *)buf, n, &lim, RESP_FORM_MULTIBULK, want, NULL, 40);

    struct resp_request req;
    size_t used;
    const char *err;
    assert_int_equal(resp_request_parse((const uint8_t *)buf, n, &lim, &used, &req, &err), RESP_OK);
    assert_int_equal(req.argc, 40);
    assert_int_equal(req.nargv, RESP_MAX_ARGS);
    assert_int_equal(req.args_len, 4 + 39 * 3);
    assert_int_equal(req.wire_len, n);

    /* inline too */
    const char line[] = "DEL a b c d e f g h i j k l m n o p q r s t\r\n";
    assert_int_equal(resp_request_parse((const uint8_t *)line, sizeof(line) - 1, &lim, &used, &req, &err),
                     RESP_OK);
    assert_int_equal(req.argc, 21);
    assert_int_equal(req.nargv, RESP_MAX_ARGS);
    assert_true(resp_arg_equal_ci(&req.argv[15], "o"));
}

static void
test_inline(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    CHECK("SET a b\r\n", RESP_FORM_INLINE, "SET", "a", "b");
    CHECK("PING\n", RESP_FORM_INLINE, "PING");
    CHECK("  GET   key  \r\n", RESP_FORM_INLINE, "GET", "key");
    CHECK("SET\ta\tb\n", RESP_FORM_INLINE, "SET", "a", "b");
    /* a CR inside the line splits tokens (Redis answers "PING\rPING" as PING PING) */
    CHECK("PING\rPING\r\n", RESP_FORM_INLINE, "PING", "PING");
    /* between tokens any isspace() is skipped, inside one only space \t \r \n end it */
    CHECK("ECHO a\vb\r\n", RESP_FORM_INLINE, "ECHO", "a\vb");
    CHECK("ECHO \v\fb\r\n", RESP_FORM_INLINE, "ECHO", "b");
    /* a backslash outside quotes is just a byte */
    CHECK("ECHO a\\nb\r\n", RESP_FORM_INLINE, "ECHO", "a\\nb");
}

static void
test_inline_quotes(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    /* checked against redis-server 7.0: ECHO "a\x41\n\q" answers "aA\nq" */
    CHECK("ECHO \"a\\x41\\n\\q\"\r\n", RESP_FORM_INLINE, "ECHO", "aA\nq");
    CHECK("ECHO 'a\\'b'\r\n", RESP_FORM_INLINE, "ECHO", "a'b");
    CHECK("SET \"a b\" 'c d'\r\n", RESP_FORM_INLINE, "SET", "a b", "c d");
    CHECK("ECHO a\"b c\"\r\n", RESP_FORM_INLINE, "ECHO", "ab c");
    CHECK("ECHO \"\"\r\n", RESP_FORM_INLINE, "ECHO", "");
    CHECK("ECHO ''\n", RESP_FORM_INLINE, "ECHO", "");
    CHECK("ECHO \"\\x4\"\r\n", RESP_FORM_INLINE, "ECHO", "x4");
    CHECK("ECHO \"\\r\\t\\b\\a\\\\\\\"\"\r\n", RESP_FORM_INLINE, "ECHO", "\r\t\b\a\\\"");
    CHECK("ECHO \"\\xfF\"\r\n", RESP_FORM_INLINE, "ECHO", "\xff");
    CHECK("ECHO 'a\\b'\r\n", RESP_FORM_INLINE, "ECHO", "a\\b");
    /* in single quotes only \' is an escape: 'a\\' b' is "a\' b" (redis-server agrees) */
    CHECK("ECHO 'a\\\\' b'\r\n", RESP_FORM_INLINE, "ECHO", "a\\' b");
    CHECK("ECHO \"a\\\\\"\r\n", RESP_FORM_INLINE, "ECHO", "a\\");
    CHECK("ECHO \"x\"\v'y'\r\n", RESP_FORM_INLINE, "ECHO", "x", "y");

    /* \x00 decodes to a NUL byte: compare with an explicit length */
    static const char nul[] = "ECHO \"a\\x00b\"\n";
    const char *want[] = {"ECHO", "a\0b"};
    size_t wlen[] = {4, 3};
    check_command((const uint8_t *)nul, sizeof(nul) - 1, &lim, RESP_FORM_INLINE, want, wlen, 2);

    /* raw spans point at the token as written, quoted flags it */
    struct resp_request req;
    size_t used;
    const char *err;
    const char line[] = "\"GeT\" plain\r\n";
    assert_int_equal(resp_request_parse((const uint8_t *)line, sizeof(line) - 1, &lim, &used, &req, &err),
                     RESP_OK);
    assert_true(req.argv[0].quoted);
    assert_int_equal(req.argv[0].len, 5);
    assert_memory_equal(req.argv[0].ptr, "\"GeT\"", 5);
    assert_false(req.argv[1].quoted);
    assert_true(resp_arg_equal_ci(&req.argv[0], "get"));
    assert_false(resp_arg_equal_ci(&req.argv[0], "ge"));
    assert_false(resp_arg_equal_ci(&req.argv[0], "gets"));
    assert_true(resp_arg_equal_ci(&req.argv[1], "PLAIN"));
    uint8_t small[2];
    assert_int_equal(resp_arg_decode(&req.argv[0], small, sizeof(small)), 3);
    assert_memory_equal(small, "Ge", 2);
}

/* Parse a pipeline out of buf[0, k): how many commands come out whole. */
static size_t
pipeline_count(const uint8_t *buf, size_t k, const struct resp_limits *lim, const char *const *want,
               size_t nwant)
{
    uint8_t *d = dup_exact(buf, k);
    size_t off = 0, count = 0;
    for (;;) {
        struct resp_request req;
        size_t used = 0;
        const char *err = NULL;
        enum resp_status st = resp_request_parse(d + off, k - off, lim, &used, &req, &err);
        if (st == RESP_NEED_MORE) {
            assert_true(used > k - off);
            break;
        }
        assert_int_equal(st, RESP_OK);
        assert_true(count < nwant);
        assert_true(req.argc >= 1);
        assert_true(resp_arg_equal_ci(&req.argv[req.argc - 1], want[count]));
        off += used;
        count++;
    }
    free(d);
    return count;
}

static void
test_pipeline(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    static const char pipe[] = "PING\r\n"
                               "*2\r\n$4\r\nECHO\r\n$3\r\none\r\n"
                               "ECHO two\n"
                               "*0\r\n"
                               "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nthree\r\n"
                               "ECHO 'four'\r\n";
    const char *want[] = {"ping", "one", "two", "", "three", "four"};
    /* where each command ends */
    size_t ends[6];
    size_t off = 0;
    for (int i = 0; i < 6; i++) {
        struct resp_request req;
        size_t used;
        const char *err;
        assert_int_equal(resp_request_parse((const uint8_t *)pipe + off, sizeof(pipe) - 1 - off, &lim,
                                            &used, &req, &err),
                         RESP_OK);
        off += used;
        ends[i] = off;
    }
    assert_int_equal(off, sizeof(pipe) - 1);
    /* split at every byte: exactly the commands wholly inside the prefix come out */
    const char *nonempty[] = {"ping", "one", "two", "three", "four"};
    for (size_t k = 0; k <= sizeof(pipe) - 1; k++) {
        size_t expect = 0, expect_nonempty = 0;
        for (int i = 0; i < 6; i++)
            if (ends[i] <= k) {
                expect++;
                expect_nonempty += want[i][0] != '\0';
            }
        /* pipeline_count() checks arguments of non-empty commands only */
        uint8_t *d = dup_exact((const uint8_t *)pipe, k);
        size_t o = 0, got = 0, got_nonempty = 0;
        for (;;) {
            struct resp_request req;
            size_t used;
            const char *err;
            enum resp_status st = resp_request_parse(d + o, k - o, &lim, &used, &req, &err);
            if (st != RESP_OK) {
                assert_int_equal(st, RESP_NEED_MORE);
                break;
            }
            if (req.argc > 0)
                assert_true(resp_arg_equal_ci(&req.argv[req.argc - 1], nonempty[got_nonempty++]));
            o += used;
            got++;
        }
        free(d);
        assert_int_equal(got, expect);
        assert_int_equal(got_nonempty, expect_nonempty);
    }
    /* a pipeline of only non-empty commands through the helper */
    static const char pipe2[] = "GET a\r\n*2\r\n$3\r\nGET\r\n$1\r\nb\r\nGET c\n";
    const char *w2[] = {"a", "b", "c"};
    assert_int_equal(pipeline_count((const uint8_t *)pipe2, sizeof(pipe2) - 1, &lim, w2, 3), 3);
    assert_int_equal(pipeline_count((const uint8_t *)pipe2, sizeof(pipe2) - 2, &lim, w2, 3), 2);
}

static void
test_need_more_hint(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    struct resp_request req;
    size_t used;
    const char *err;
    /* inside a bulk the total is known exactly: 4 + 5 + 10 + 2 */
    assert_int_equal(resp_request_parse(S("*1\r\n$10\r\nab"), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(used, 21);
    assert_int_equal(resp_request_parse(S(""), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(used, 1);
    /* arguments still to come count 6 bytes each ("$0\r\n\r\n") */
    assert_int_equal(resp_request_parse(S("*3\r\n"), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(used, 4 + 3 * 6);
    assert_int_equal(resp_request_parse(S("*3\r\n$1\r\na"), &lim, &used, &req, &err),
                     RESP_NEED_MORE);
    assert_int_equal(used, 4 + 4 + 1 + 2 + 2 * 6);
    assert_int_equal(resp_request_parse(S("*3\r\n$1\r\na\r\n$"), &lim, &used, &req, &err),
                     RESP_NEED_MORE);
    assert_int_equal(used, 4 + 7 + 2 * 6);
    /* eight million arguments: 48 MB at least before it can be whole */
    assert_int_equal(resp_request_parse(S("*8000000\r\n$1\r\na\r\n"), &lim, &used, &req, &err),
                     RESP_NEED_MORE);
    assert_int_equal(used, 10 + 7 + 7999999ull * 6);
}

static void
test_errors(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    CHECK_ERROR("*abc\r\n", "invalid multibulk length");
    CHECK_ERROR("*\r\n", "invalid multibulk length");
    CHECK_ERROR("*01\r\n", "invalid multibulk length");
    CHECK_ERROR("*+1\r\n", "invalid multibulk length");
    CHECK_ERROR("*-0\r\n", "invalid multibulk length");
    CHECK_ERROR("*2147483648\r\n", "invalid multibulk length");
    CHECK_ERROR("*99999999999999999999\r\n", "invalid multibulk length");
    CHECK_ERROR("*1\r\nx\r\n", "expected '$', got 'x'");
    CHECK_ERROR("*1\r\n\r\n", "expected '$', got ' '");
    CHECK_ERROR("*2\r\n$1\r\na\r\n:1\r\n", "expected '$', got ':'");
    CHECK_ERROR("*1\r\n$-1\r\n", "invalid bulk length");
    CHECK_ERROR("*1\r\n$\r\n", "invalid bulk length");
    CHECK_ERROR("*1\r\n$04\r\nPING\r\n", "invalid bulk length");
    CHECK_ERROR("*1\r\n$3x\r\n", "invalid bulk length");
    /* an oversized length is refused before any payload arrives */
    CHECK_ERROR("*1\r\n$536870913\r\n", "invalid bulk length");
    CHECK_ERROR("SET a \"b\r\n", "unbalanced quotes in request");
    CHECK_ERROR("SET a \"b\"c\r\n", "unbalanced quotes in request");
    CHECK_ERROR("SET a 'b\r\n", "unbalanced quotes in request");
    CHECK_ERROR("ECHO a\"b c\"d\r\n", "unbalanced quotes in request");
    CHECK_ERROR("ECHO ''x\r\n", "unbalanced quotes in request");
    CHECK_ERROR("ECHO \"a\\\"\r\n", "unbalanced quotes in request");
    CHECK_ERROR("ECHO 'a\\\\'\r\n", "unbalanced quotes in request");
    /* tandem is stricter than Redis about CRLF (Redis skips two bytes unseen) */
    CHECK_ERROR("*1\rX$4\r\nPING\r\n", "invalid multibulk length");
    CHECK_ERROR("*1\r\n$4\rXPING\r\n", "invalid bulk length");
    CHECK_ERROR("*1\r\n$4\r\nPINGXY", "bulk not terminated by CRLF");
    /* NUL before the line end: Redis would wait for the limit, we say it now */
    static const char nul_inline[] = "PI\0NG\r\n";
    check_error((const uint8_t *)nul_inline, sizeof(nul_inline) - 1, &lim, "too big inline request");
    static const char nul_count[] = "*1\0\r\n";
    check_error((const uint8_t *)nul_count, sizeof(nul_count) - 1, &lim, "too big mbulk count string");
    static const char nul_bulk[] = "*1\r\n\0$1\r\n";
    check_error((const uint8_t *)nul_bulk, sizeof(nul_bulk) - 1, &lim, "too big bulk count string");
}

static void
test_limits_inline(void **state)
{
    (void)state;
    struct resp_limits lim = limits(false);
    lim.max_inline_len = 16;
    /* 16 bytes then LF: fine; 17 bytes without LF: too big */
    CHECK("ECHO 0123456789A\n", RESP_FORM_INLINE, "ECHO", "0123456789A");
    {
        /* the same with the next command already buffered behind it */
        struct resp_request req;
        size_t used;
        const char *err;
        assert_int_equal(resp_request_parse(S("ECHO 0123456789A\nPING\r\n"), &lim, &used, &req, &err),
                         RESP_OK);
        assert_int_equal(used, 17);
        assert_int_equal(resp_request_parse(S("ECHO 0123456789AB\nPING\r\n"), &lim, &used, &req, &err),
                         RESP_ERROR);
    }
    CHECK_ERROR("ECHO 0123456789AB", "too big inline request");
    CHECK_ERROR("ECHO 0123456789AB\n", "too big inline request");
    CHECK_ERROR("*11111111111111111", "too big mbulk count string");
    CHECK_ERROR("*1\r\n$11111111111111111", "too big bulk count string");

    /* the default, 64 KiB, with Redis's own inputs */
    struct resp_limits def = limits(false);
    size_t n = 70000;
    uint8_t *big = malloc(n);
    assert_non_null(big);
    memcpy(big, "ECHO ", 5);
    memset(big + 5, 'a', n - 5);
    struct resp_request req;
    size_t used;
    const char *err;
    assert_int_equal(resp_request_parse(big, 65536, &def, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(resp_request_parse(big, 65537, &def, &used, &req, &err), RESP_ERROR);
    assert_string_equal(err, "too big inline request");
    big[65536] = '\n';
    assert_int_equal(resp_request_parse(big, 65537, &def, &used, &req, &err), RESP_OK);
    assert_int_equal(req.argc, 2);
    assert_int_equal(req.argv[1].len, 65536 - 5);
    big[0] = '*';
    memset(big + 1, '1', n - 1);
    assert_int_equal(resp_request_parse(big, n, &def, &used, &req, &err), RESP_ERROR);
    assert_string_equal(err, "too big mbulk count string");
    free(big);
}

static void
test_limits_auth(void **state)
{
    (void)state;
    struct resp_limits lim = limits(true);
    /* before authentication: Redis's unauthenticated limits, its texts */
    CHECK_ERROR("*11\r\n", "unauthenticated multibulk length");
    CHECK_ERROR("*1\r\n$16385\r\n", "unauthenticated bulk length");
    CHECK_ERROR("*2147483648\r\n", "invalid multibulk length");
    CHECK_ERROR("*1\r\n$536870913\r\n", "invalid bulk length");
    CHECK("*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n", RESP_FORM_MULTIBULK, "AUTH", "pw");
    /* inline has no pre-auth argument limit in Redis */
    CHECK("PING a b c d e f g h i j k l\r\n", RESP_FORM_INLINE, "PING", "a", "b", "c", "d", "e", "f", "g",
          "h", "i", "j", "k", "l");

    struct resp_request req;
    size_t used;
    const char *err;
    assert_int_equal(resp_request_parse(S("*10\r\n"), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(resp_request_parse(S("*1\r\n$16384\r\n"), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(used, 4 + 8 + 16384 + 2);

    /* after authentication the same inputs are only incomplete */
    lim.pre_auth = false;
    assert_int_equal(resp_request_parse(S("*11\r\n"), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(resp_request_parse(S("*1\r\n$16385\r\n"), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(resp_request_parse(S("*2147483647\r\n"), &lim, &used, &req, &err), RESP_NEED_MORE);
    assert_int_equal(resp_request_parse(S("*1\r\n$536870912\r\n"), &lim, &used, &req, &err),
                     RESP_NEED_MORE);

    /* configured limits */
    lim.max_bulk_len = 3;
    lim.max_mbulk_len = 2;
    CHECK("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n", RESP_FORM_MULTIBULK, "GET", "key");
    CHECK_ERROR("*3\r\n", "invalid multibulk length");
    CHECK_ERROR("*1\r\n$4\r\n", "invalid bulk length");
}

/* ------------------------------------------------------------------ */
/* Replies.                                                           */

struct reply_result {
    enum resp_status st;
    size_t used;
    struct resp_reply_info info;
};

/* Feed buf to a reader in the given chunks; the status of the last feed. */
static struct reply_result
feed_split(const uint8_t *buf, size_t len, enum resp_digest_mode mode, size_t split)
{
    struct resp_reader r;
    resp_reader_init(&r, mode);
    struct reply_result res = {RESP_NEED_MORE, 0, {0}};
    const char *err = NULL;
    size_t pieces[2][2] = {{0, split}, {split, len}};
    for (int i = 0; i < 2; i++) {
        size_t a = pieces[i][0], b = pieces[i][1];
        uint8_t *d = dup_exact(buf + a, b - a);
        size_t used = 0;
        res.st = resp_reader_feed(&r, d, b - a, &used, &res.info, &err);
        free(d);
        if (res.st != RESP_NEED_MORE) {
            res.used = a + used;
            break;
        }
        assert_int_equal(used, b - a);
    }
    return res;
}

/*
 * One whole reply: scanned OK at once with the expected info; every prefix
 * is NEED_MORE; fed split at every byte (and one byte at a time) the reader
 * gives the same size and digest in every digest mode.
 */
static struct resp_reply_info
check_reply(const uint8_t *buf, size_t len, uint8_t type, bool null, int64_t count)
{
    struct resp_reply_info first = {0};
    for (int mode = RESP_DIGEST_NONE; mode <= RESP_DIGEST_SCAN_PAIRS; mode++) {
        struct resp_reply_info whole;
        size_t used;
        const char *err = NULL;
        uint8_t *d = dup_exact(buf, len);
        assert_int_equal(resp_reply_scan(d, len, (enum resp_digest_mode)mode, &used, &whole, &err), RESP_OK);
        free(d);
        assert_int_equal(used, len);
        assert_int_equal(whole.type, type);
        assert_int_equal(whole.null, null);
        assert_int_equal(whole.count, count);
        assert_int_equal(whole.size, len);
        if (mode == RESP_DIGEST_NONE)
            assert_int_equal(whole.digest, 0);
        if (mode == RESP_DIGEST_ORDERED)
            first = whole;
        for (size_t k = 0; k < len; k++) {
            d = dup_exact(buf, k);
            struct resp_reply_info info;
            assert_int_equal(resp_reply_scan(d, k, (enum resp_digest_mode)mode, &used, &info, &err),
                             RESP_NEED_MORE);
            assert_true(used > k);
            free(d);
        }
        for (size_t k = 0; k <= len; k++) {
            struct reply_result res = feed_split(buf, len, (enum resp_digest_mode)mode, k);
            assert_int_equal(res.st, RESP_OK);
            assert_int_equal(res.used, len);
            assert_int_equal(res.info.size, len);
            assert_int_equal(res.info.type, type);
            assert_true(res.info.digest == whole.digest);
        }
        struct resp_reader r;
        resp_reader_init(&r, (enum resp_digest_mode)mode);
        for (size_t k = 0; k < len; k++) {
            struct resp_reply_info info;
            enum resp_status st = resp_reader_feed(&r, buf + k, 1, &used, &info, &err);
            assert_int_equal(used, 1);
            if (k + 1 < len) {
                assert_int_equal(st, RESP_NEED_MORE);
            } else {
                assert_int_equal(st, RESP_OK);
                assert_true(info.digest == whole.digest);
            }
        }
    }
    return first;
}

#define CHECK_REPLY(lit, type, null, count) check_reply(S(lit), type, null, count)

static void
test_reply_types(void **state)
{
    (void)state;
    CHECK_REPLY("+OK\r\n", '+', false, 0);
    CHECK_REPLY("+\r\n", '+', false, 0);
    CHECK_REPLY("-ERR unknown command 'x'\r\n", '-', false, 0);
    CHECK_REPLY(":123\r\n", ':', false, 123);
    CHECK_REPLY(":-5\r\n", ':', false, -5);
    CHECK_REPLY(":-9223372036854775808\r\n", ':', false, INT64_MIN);
    CHECK_REPLY(":9223372036854775807\r\n", ':', false, INT64_MAX);
    CHECK_REPLY("$3\r\nfoo\r\n", '$', false, 3);
    CHECK_REPLY("$0\r\n\r\n", '$', false, 0);
    CHECK_REPLY("$-1\r\n", '$', true, -1);
    CHECK_REPLY("*-1\r\n", '*', true, -1);
    CHECK_REPLY("*0\r\n", '*', false, 0);
    CHECK_REPLY("$6\r\n\r\n\0*\r\n\r\n", '$', false, 6);
    CHECK_REPLY("*3\r\n$1\r\na\r\n:1\r\n$-1\r\n", '*', false, 3);
    CHECK_REPLY("*2\r\n*2\r\n:1\r\n:2\r\n*1\r\n*1\r\n+x\r\n", '*', false, 2);
    CHECK_REPLY("*3\r\n*0\r\n*-1\r\n-ERR in exec\r\n", '*', false, 3);
    /* an XREAD-like reply: [[key, [[id, [f, v]]]]] */
    CHECK_REPLY("*1\r\n*2\r\n$1\r\ns\r\n*1\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n", '*',
                false, 1);
    CHECK_REPLY("*2\r\n$1\r\n0\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n", '*', false, 2);

    /* a bulk longer than the hash block, split everywhere */
    size_t n = 1000;
    uint8_t *big = malloc(n + 16);
    assert_non_null(big);
    int h = snprintf((char *)big, 16, "$%zu\r\n", n - 8); /* "$992\r\n" is 6 bytes */
    for (size_t i = (size_t)h; i < n - 2; i++)
        big[i] = (uint8_t)(i * 7);
    memcpy(big + n - 2, "\r\n", 2);
    check_reply(big, n, '$', false, (int64_t)(n - 8));
    free(big);
}

/* n copies of the 4-byte header h, then tail: one buffer (heap). */
static uint8_t *
nested(const char *h, size_t n, const char *tail, size_t *len)
{
    size_t tl = strlen(tail);
    uint8_t *buf = malloc(n * 4 + tl);
    assert_non_null(buf);
    for (size_t i = 0; i < n; i++)
        memcpy(buf + i * 4, h, 4);
    memcpy(buf + n * 4, tail, tl);
    *len = n * 4 + tl;
    return buf;
}

static void
test_reply_resp3(void **state)
{
    (void)state;
    CHECK_REPLY("_\r\n", '_', true, 0);
    CHECK_REPLY("#t\r\n", '#', false, 0);
    CHECK_REPLY(",3.14\r\n", ',', false, 0);
    CHECK_REPLY(",-inf\r\n", ',', false, 0);
    CHECK_REPLY("(3492890328409238509324850943850943825024385\r\n", '(', false, 0);
    CHECK_REPLY("=15\r\ntxt:Some string\r\n", '=', false, 15);
    CHECK_REPLY("!21\r\nSYNTAX invalid syntax\r\n", '!', false, 21);
    CHECK_REPLY("%2\r\n+first\r\n:1\r\n+second\r\n:2\r\n", '%', false, 2);
    CHECK_REPLY("~3\r\n$1\r\na\r\n$1\r\nb\r\n#f\r\n", '~', false, 3);
    CHECK_REPLY(">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n", '>', false, 3);
    CHECK_REPLY("%0\r\n", '%', false, 0);
    /* HELLO's answer: a map holding an array of maps */
    CHECK_REPLY("%2\r\n$5\r\nproto\r\n:3\r\n$7\r\nmodules\r\n*1\r\n%1\r\n$4\r\nname\r\n"
                "_\r\n",
                '%', false, 2);
    /* a map's pairs are units: any order of pairs, one digest */
    struct reply_result a = feed_split(S("%2\r\n$1\r\nk\r\n:1\r\n$1\r\nj\r\n:2\r\n"),
                                       RESP_DIGEST_PAIRS, 3);
    struct reply_result b = feed_split(S("%2\r\n$1\r\nj\r\n:2\r\n$1\r\nk\r\n:1\r\n"),
                                       RESP_DIGEST_PAIRS, 7);
    assert_int_equal(a.st, RESP_OK);
    assert_int_equal(b.st, RESP_OK);
    assert_true(a.info.digest == b.info.digest);
    /* an attribute travels with the element it describes (DEBUG PROTOCOL attrib) */
    struct resp_reply_info info;
    size_t used;
    const char *err;
    static const char attrib[] = "|1\r\n$14\r\nkey-popularity\r\n*2\r\n$7\r\nkey:123\r\n:90\r\n"
                                 "$39\r\nSome real reply following the attribute\r\n";
    assert_int_equal(resp_reply_scan(S(attrib), RESP_DIGEST_ORDERED, &used, &info, &err), RESP_OK);
    assert_int_equal(used, sizeof(attrib) - 1);
    static const char inner[] = "*2\r\n|0\r\n:1\r\n|1\r\n+a\r\n+b\r\n:2\r\n+next\r\n";
    assert_int_equal(resp_reply_scan(S(inner), RESP_DIGEST_ORDERED, &used, &info, &err), RESP_OK);
    assert_int_equal(used, sizeof(inner) - 1 - strlen("+next\r\n"));
    /* streamed types are refused */
    assert_int_equal(resp_reply_scan(S("$?\r\n;4\r\nabcd\r\n;0\r\n"), RESP_DIGEST_ORDERED,
                                     &used, &info, &err),
                     RESP_ERROR);
}

static void
test_reply_depth(void **state)
{
    (void)state;
    struct resp_reply_info info;
    size_t used, len;
    const char *err;

    /* what a Lua script returning a recursive table sends: no depth limit of tandem's */
    uint8_t *buf = nested("*1\r\n", 100000, "-ERR reached lua stack limit\r\n", &len);
    assert_int_equal(resp_reply_scan(buf, len, RESP_DIGEST_ORDERED, &used, &info, &err), RESP_OK);
    assert_int_equal(used, len);
    assert_int_equal(info.type, '*');
    free(buf);
    buf = nested("*1\r\n", 300, ":1\r\n", &len); /* every split, every mode: a shorter one */
    check_reply(buf, len, '*', false, 1);
    free(buf);

    /* {x, {x, {x, ... {x, y}}}}: each level waits one element more after its first */
    for (size_t n = 300; n <= 30000; n *= 100) {
        buf = malloc(n * 8 + 8);
        assert_non_null(buf);
        len = 0;
        for (size_t i = 0; i < n; i++, len += 8)
            memcpy(buf + len, "*2\r\n:7\r\n", 8);
        memcpy(buf + len, ":8\r\n", 4);
        len += 4;
        assert_int_equal(resp_reply_scan(buf, len, RESP_DIGEST_ORDERED, &used, &info, &err),
                         RESP_OK);
        assert_int_equal(used, len);
        if (n == 300)
            check_reply(buf, len, '*', false, 2);
        free(buf);
    }

    /* RESP_REPLY_MAX_RUNS distinct runs open at once are fine; one more is refused */
    char hdr[RESP_REPLY_MAX_RUNS + 2][8];
    size_t off = 0;
    buf = malloc((RESP_REPLY_MAX_RUNS + 2) * 8 + 8);
    assert_non_null(buf);
    for (size_t i = 0; i < RESP_REPLY_MAX_RUNS; i++) {
        int k = snprintf(hdr[i], sizeof(hdr[i]), "*%zu\r\n", i % 2 + 1);
        memcpy(buf + off, hdr[i], (size_t)k);
        off += (size_t)k;
    }
    assert_int_equal(resp_reply_scan(buf, off, RESP_DIGEST_ORDERED, &used, &info, &err),
                     RESP_NEED_MORE);
    memcpy(buf + off, "*3\r\n", 4);
    assert_int_equal(resp_reply_scan(buf, off + 4, RESP_DIGEST_ORDERED, &used, &info, &err),
                     RESP_ERROR);
    assert_string_equal(err, "reply nesting too deep");
    /* the same count as the innermost joins its run */
    memcpy(buf + off, "*2\r\n", 4);
    assert_int_equal(resp_reply_scan(buf, off + 4, RESP_DIGEST_ORDERED, &used, &info, &err),
                     RESP_NEED_MORE);
    /* but an element of the innermost then needs a run of its own: refused as well */
    memcpy(buf + off + 4, ":1\r\n", 4);
    assert_int_equal(resp_reply_scan(buf, off + 8, RESP_DIGEST_ORDERED, &used, &info, &err),
                     RESP_ERROR);
    assert_string_equal(err, "reply nesting too deep");
    free(buf);
}

static void
check_reply_error(const uint8_t *buf, size_t len)
{
    struct resp_reply_info info;
    size_t used;
    const char *err = NULL;
    uint8_t *d = dup_exact(buf, len);
    assert_int_equal(resp_reply_scan(d, len, RESP_DIGEST_SET, &used, &info, &err), RESP_ERROR);
    assert_non_null(err);
    free(d);
}

static void
test_reply_errors(void **state)
{
    (void)state;
    check_reply_error(S("x\r\n"));
    check_reply_error(S("*?\r\n"));           /* RESP3 streamed aggregate */
    check_reply_error(S("$-2\r\n"));
    check_reply_error(S("*-2\r\n"));
    check_reply_error(S("$-0\r\n"));
    check_reply_error(S(":abc\r\n"));
    check_reply_error(S(":\r\n"));
    check_reply_error(S(":1-\r\n"));
    check_reply_error(S(":9223372036854775808\r\n"));
    check_reply_error(S("$1x\r\n"));
    check_reply_error(S("+a\nb\r\n"));
    check_reply_error(S("+ab\rc\n"));
    check_reply_error(S("$3\r\nfooX\r\n"));
    check_reply_error(S("$3\r\nfoo\rX"));
    check_reply_error(S("$3\r\nfooX\n"));
    check_reply_error(S("*2\r\n:1\r\n?\r\n"));
}

static void
test_reply_stream(void **state)
{
    (void)state;
    static const char stream[] = "+OK\r\n*2\r\n$1\r\na\r\n:2\r\n$-1\r\n-ERR x\r\n";
    size_t ends[] = {5, 20, 25, 33};
    uint8_t types[] = {'+', '*', '$', '-'};
    size_t len = sizeof(stream) - 1;
    for (size_t split = 0; split <= len; split++) {
        struct resp_reader r;
        resp_reader_init(&r, RESP_DIGEST_ORDERED);
        size_t got = 0, base = 0, consumed = 0;
        size_t chunk_end[2] = {split, len};
        for (int c = 0; c < 2; c++) {
            while (consumed < chunk_end[c]) {
                struct resp_reply_info info;
                size_t used;
                const char *err;
                enum resp_status st = resp_reader_feed(&r, (const uint8_t *)stream + consumed,
                                                       chunk_end[c] - consumed, &used, &info, &err);
                consumed += used;
                if (st == RESP_NEED_MORE)
                    break;
                assert_int_equal(st, RESP_OK);
                assert_int_equal(consumed, ends[got]);
                assert_int_equal(info.type, types[got]);
                assert_int_equal(info.size, ends[got] - base);
                base = consumed;
                got++;
            }
        }
        assert_int_equal(got, 4);
    }
}

static uint64_t
digest_of(const char *reply, enum resp_digest_mode mode)
{
    struct resp_reply_info info;
    size_t used;
    const char *err;
    size_t len = strlen(reply);
    assert_int_equal(resp_reply_scan((const uint8_t *)reply, len, mode, &used, &info, &err), RESP_OK);
    assert_int_equal(used, len);
    /* and the same however it is split */
    for (size_t k = 0; k <= len; k++) {
        struct reply_result res = feed_split((const uint8_t *)reply, len, mode, k);
        assert_int_equal(res.st, RESP_OK);
        assert_true(res.info.digest == info.digest);
    }
    return info.digest;
}

static void
test_digest_set(void **state)
{
    (void)state;
    const char *abc = "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n";
    const char *cab = "*3\r\n$1\r\nc\r\n$1\r\na\r\n$1\r\nb\r\n";
    const char *bca = "*3\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\na\r\n";
    const char *abd = "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nd\r\n";
    const char *ab = "*2\r\n$1\r\na\r\n$1\r\nb\r\n";
    const char *abb = "*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nb\r\n";
    const char *aab = "*3\r\n$1\r\na\r\n$1\r\na\r\n$1\r\nb\r\n";
    /* SMEMBERS in any order: the same set */
    assert_true(digest_of(abc, RESP_DIGEST_SET) == digest_of(cab, RESP_DIGEST_SET));
    assert_true(digest_of(abc, RESP_DIGEST_SET) == digest_of(bca, RESP_DIGEST_SET));
    /* different content, size or multiplicity: different */
    assert_true(digest_of(abc, RESP_DIGEST_SET) != digest_of(abd, RESP_DIGEST_SET));
    assert_true(digest_of(abc, RESP_DIGEST_SET) != digest_of(ab, RESP_DIGEST_SET));
    assert_true(digest_of(abb, RESP_DIGEST_SET) != digest_of(aab, RESP_DIGEST_SET));
    /* ordered: a permutation differs */
    assert_true(digest_of(abc, RESP_DIGEST_ORDERED) != digest_of(cab, RESP_DIGEST_ORDERED));
    assert_true(digest_of(abc, RESP_DIGEST_ORDERED) == digest_of(abc, RESP_DIGEST_ORDERED));
    /* nested elements are units whole: their inner order still counts */
    const char *n1 = "*2\r\n*2\r\n:1\r\n:2\r\n*2\r\n:3\r\n:4\r\n";
    const char *n2 = "*2\r\n*2\r\n:3\r\n:4\r\n*2\r\n:1\r\n:2\r\n";
    const char *n3 = "*2\r\n*2\r\n:2\r\n:1\r\n*2\r\n:3\r\n:4\r\n";
    assert_true(digest_of(n1, RESP_DIGEST_SET) == digest_of(n2, RESP_DIGEST_SET));
    assert_true(digest_of(n1, RESP_DIGEST_SET) != digest_of(n3, RESP_DIGEST_SET));
    /* not an array: hashed as it is, still deterministic and content-sensitive */
    assert_true(digest_of("-ERR x\r\n", RESP_DIGEST_SET) == digest_of("-ERR x\r\n", RESP_DIGEST_SET));
    assert_true(digest_of("-ERR x\r\n", RESP_DIGEST_SET) != digest_of("-ERR y\r\n", RESP_DIGEST_SET));
    assert_true(digest_of("*0\r\n", RESP_DIGEST_SET) != digest_of("*-1\r\n", RESP_DIGEST_SET));
}

static void
test_digest_pairs(void **state)
{
    (void)state;
    /* HGETALL: field/value pairs are the units */
    const char *h1 = "*4\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n$2\r\nv2\r\n";
    const char *h2 = "*4\r\n$2\r\nf2\r\n$2\r\nv2\r\n$2\r\nf1\r\n$2\r\nv1\r\n";
    const char *h3 = "*4\r\n$2\r\nf1\r\n$2\r\nv2\r\n$2\r\nf2\r\n$2\r\nv1\r\n";
    assert_true(digest_of(h1, RESP_DIGEST_PAIRS) == digest_of(h2, RESP_DIGEST_PAIRS));
    assert_true(digest_of(h1, RESP_DIGEST_PAIRS) != digest_of(h3, RESP_DIGEST_PAIRS));
    /* as a plain set the swapped values would go unnoticed */
    assert_true(digest_of(h1, RESP_DIGEST_SET) == digest_of(h3, RESP_DIGEST_SET));
    /* an odd element count: the last element is a unit of its own */
    assert_true(digest_of("*3\r\n:1\r\n:2\r\n:3\r\n", RESP_DIGEST_PAIRS) !=
                digest_of("*3\r\n:1\r\n:2\r\n:4\r\n", RESP_DIGEST_PAIRS));
    assert_true(digest_of("*3\r\n:1\r\n:2\r\n:3\r\n", RESP_DIGEST_PAIRS) !=
                digest_of("*3\r\n:3\r\n:1\r\n:2\r\n", RESP_DIGEST_PAIRS));
}

static void
test_digest_scan(void **state)
{
    (void)state;
    const char *s1 = "*2\r\n$1\r\n0\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n";
    const char *s2 = "*2\r\n$1\r\n0\r\n*3\r\n$1\r\nc\r\n$1\r\na\r\n$1\r\nb\r\n";
    const char *s3 = "*2\r\n$2\r\n17\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n";
    const char *s4 = "*2\r\n$1\r\n0\r\n*3\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nd\r\n";
    assert_true(digest_of(s1, RESP_DIGEST_SCAN_SET) == digest_of(s2, RESP_DIGEST_SCAN_SET));
    assert_true(digest_of(s1, RESP_DIGEST_SCAN_SET) != digest_of(s3, RESP_DIGEST_SCAN_SET));
    assert_true(digest_of(s1, RESP_DIGEST_SCAN_SET) != digest_of(s4, RESP_DIGEST_SCAN_SET));
    assert_true(digest_of(s1, RESP_DIGEST_ORDERED) != digest_of(s2, RESP_DIGEST_ORDERED));
    /* HSCAN: pairs inside the page */
    const char *p1 = "*2\r\n$1\r\n0\r\n*4\r\n$1\r\nf\r\n$1\r\n1\r\n$1\r\ng\r\n$1\r\n2\r\n";
    const char *p2 = "*2\r\n$1\r\n0\r\n*4\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nf\r\n$1\r\n1\r\n";
    const char *p3 = "*2\r\n$1\r\n0\r\n*4\r\n$1\r\nf\r\n$1\r\n2\r\n$1\r\ng\r\n$1\r\n1\r\n";
    assert_true(digest_of(p1, RESP_DIGEST_SCAN_PAIRS) == digest_of(p2, RESP_DIGEST_SCAN_PAIRS));
    assert_true(digest_of(p1, RESP_DIGEST_SCAN_PAIRS) != digest_of(p3, RESP_DIGEST_SCAN_PAIRS));
    /* not the [cursor, [..]] shape: hashed in order */
    const char *t1 = "*3\r\n:1\r\n*1\r\n:2\r\n:3\r\n";
    const char *t2 = "*3\r\n:3\r\n*1\r\n:2\r\n:1\r\n";
    assert_true(digest_of(t1, RESP_DIGEST_SCAN_SET) != digest_of(t2, RESP_DIGEST_SCAN_SET));
    const char *t3 = "*3\r\n:1\r\n:2\r\n*2\r\n:5\r\n:6\r\n";
    const char *t4 = "*3\r\n:1\r\n:2\r\n*2\r\n:6\r\n:5\r\n";
    assert_true(digest_of(t3, RESP_DIGEST_SCAN_SET) != digest_of(t4, RESP_DIGEST_SCAN_SET));
    digest_of("*2\r\n$1\r\n0\r\n*0\r\n", RESP_DIGEST_SCAN_SET);
}

/* ------------------------------------------------------------------ */
/* Builders.                                                          */

static void
test_builders(void **state)
{
    (void)state;
    uint8_t out[128];
    size_t n = resp_build_error(out, sizeof(out), "ERR bad\r\nthing");
    assert_int_equal(n, 17);
    assert_memory_equal(out, "-ERR bad  thing\r\n", n);
    n = resp_build_protocol_error(out, sizeof(out), "invalid bulk length");
    assert_memory_equal(out, "-ERR Protocol error: invalid bulk length\r\n", n);
    assert_int_equal(n, strlen("-ERR Protocol error: invalid bulk length\r\n"));
    n = resp_build_simple(out, sizeof(out), "OK");
    assert_memory_equal(out, "+OK\r\n", n);
    n = resp_build_integer(out, sizeof(out), -42);
    assert_memory_equal(out, ":-42\r\n", n);
    n = resp_build_integer(out, sizeof(out), INT64_MIN);
    assert_memory_equal(out, ":-9223372036854775808\r\n", n);
    n = resp_build_integer(out, sizeof(out), 0);
    assert_memory_equal(out, ":0\r\n", n);
    n = resp_build_bulk(out, sizeof(out), "a\r\nb", 4);
    assert_memory_equal(out, "$4\r\na\r\nb\r\n", n);
    n = resp_build_bulk(out, sizeof(out), NULL, 0);
    assert_memory_equal(out, "$-1\r\n", n);
    n = resp_build_array_header(out, sizeof(out), 3);
    assert_memory_equal(out, "*3\r\n", n);
    n = resp_build_array_header(out, sizeof(out), -7);
    assert_memory_equal(out, "*-1\r\n", n);

    /* a command tandem sends, framed back by the request parser */
    const char *argv[] = {"SELECT", "3"};
    n = resp_build_command(out, sizeof(out), 2, argv, NULL);
    assert_memory_equal(out, "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n", n);
    struct resp_limits lim = limits(false);
    struct resp_request req;
    size_t used;
    const char *err;
    assert_int_equal(resp_request_parse(out, n, &lim, &used, &req, &err), RESP_OK);
    assert_int_equal(used, n);
    assert_true(resp_arg_equal_ci(&req.argv[0], "select"));

    /* too small: 0, whatever the cut */
    for (size_t cap = 0; cap < n; cap++)
        assert_int_equal(resp_build_command(out, cap, 2, argv, NULL), 0);
    assert_int_equal(resp_build_error(out, 3, "ERR x"), 0);
    assert_int_equal(resp_build_integer(out, 3, 100), 0);
}

/* The strings of a whole reply: what a mirrored effect is built from (XADD's id, SPOP's members). */
static void
test_reply_strings(void **state)
{
    (void)state;
    struct resp_arg a[4];
    size_t n;
#define STR(lit) (const uint8_t *)(lit), sizeof(lit) - 1
    assert_int_equal(resp_reply_strings(STR("$15\r\n1700000000000-0\r\n"), a, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(a[0].len, 15);
    assert_memory_equal(a[0].ptr, "1700000000000-0", 15);
    assert_int_equal(resp_reply_strings(STR("$-1\r\n"), a, 4, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(resp_reply_strings(STR("_\r\n"), a, 4, &n), 0);
    assert_int_equal(n, 0);
    assert_int_equal(resp_reply_strings(STR("*2\r\n$1\r\na\r\n$0\r\n\r\n"), a, 4, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(a[1].len, 0);
    assert_int_equal(resp_reply_strings(STR("~1\r\n$2\r\nbc\r\n"), a, 4, &n), 0);
    assert_int_equal(n, 1);
    assert_memory_equal(a[0].ptr, "bc", 2);
    assert_int_equal(resp_reply_strings(STR("*0\r\n"), a, 4, &n), 0);
    assert_int_equal(n, 0);
    /* not whole, too many, not strings, trailing bytes, a lying length */
    assert_int_equal(resp_reply_strings(STR("$15\r\n1700000"), a, 4, &n), -1);
    assert_int_equal(resp_reply_strings(STR("*5\r\n"), a, 4, &n), -1);
    assert_int_equal(resp_reply_strings(STR("*1\r\n:1\r\n"), a, 4, &n), -1);
    assert_int_equal(resp_reply_strings(STR(":1\r\n"), a, 4, &n), -1);
    assert_int_equal(resp_reply_strings(STR("-ERR x\r\n"), a, 4, &n), -1);
    assert_int_equal(resp_reply_strings(STR("$1\r\nab\r\n"), a, 4, &n), -1);
    assert_int_equal(resp_reply_strings(STR("$1\r\na\r\n+x"), a, 4, &n), -1);
    assert_int_equal(resp_reply_strings(STR("*1\r\n$-1\r\n"), a, 4, &n), -1);
#undef STR
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_multibulk),
        cmocka_unit_test(test_empty_requests),
        cmocka_unit_test(test_many_args),
        cmocka_unit_test(test_inline),
        cmocka_unit_test(test_inline_quotes),
        cmocka_unit_test(test_pipeline),
        cmocka_unit_test(test_need_more_hint),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_limits_inline),
        cmocka_unit_test(test_limits_auth),
        cmocka_unit_test(test_reply_types),
        cmocka_unit_test(test_reply_resp3),
        cmocka_unit_test(test_reply_depth),
        cmocka_unit_test(test_reply_errors),
        cmocka_unit_test(test_reply_stream),
        cmocka_unit_test(test_digest_set),
        cmocka_unit_test(test_digest_pairs),
        cmocka_unit_test(test_digest_scan),
        cmocka_unit_test(test_builders),
        cmocka_unit_test(test_reply_strings),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
