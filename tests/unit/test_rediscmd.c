/* test_rediscmd.c - the Redis command table: shape, lookup, flags, kinds, keys. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "protocol/rediscmd.h"

/* Parse one inline command line ("XREAD COUNT 1 STREAMS s 0") into req. */
static void
parse(const char *line, struct resp_request *req)
{
    static char buf[512];
    size_t n = strlen(line);
    assert_true(n + 2 < sizeof(buf));
    memcpy(buf, line, n);
    memcpy(buf + n, "\r\n", 2);
    struct resp_limits lim;
    resp_limits_init(&lim);
    size_t used;
    const char *err = NULL;
    assert_int_equal(resp_request_parse((const uint8_t *)buf, n + 2, &lim, &used, req, &err), RESP_OK);
}

static const struct rediscmd *
lookup(const char *line, struct resp_request *req)
{
    parse(line, req);
    return rediscmd_lookup(req->argc, req->argv);
}

static uint32_t
flags_of(const char *line)
{
    struct resp_request req;
    const struct rediscmd *cmd = lookup(line, &req);
    assert_non_null(cmd);
    return rediscmd_flags(cmd, req.argc, req.argv);
}

static enum req_kind
kind_of(const char *line)
{
    struct resp_request req;
    const struct rediscmd *cmd = lookup(line, &req);
    return rediscmd_kind(cmd, req.argc, req.argv);
}

#define KINDS (REDISCMD_READ | REDISCMD_WRITE | REDISCMD_ADMIN | REDISCMD_SESSION | REDISCMD_TX)

static void
test_table_shape(void **state)
{
    (void)state;
    size_t n;
    const struct rediscmd *t = rediscmd_table(&n);
    assert_true(n >= 366); /* Redis 7.0.15's COMMAND LIST has 366 entries */
    for (size_t i = 0; i < n; i++) {
        /* sorted, unique: the binary search depends on it */
        if (i > 0 && strcmp(t[i - 1].name, t[i].name) >= 0)
            fail_msg("not sorted: %s, %s", t[i - 1].name, t[i].name);
        /* lowercase */
        for (const char *c = t[i].name; *c; c++)
            assert_false(*c >= 'A' && *c <= 'Z');
        /* exactly one kind */
        uint32_t k = t[i].flags & KINDS;
        if (k == 0 || (k & (k - 1)) != 0)
            fail_msg("%s: %#x has not exactly one kind flag", t[i].name, t[i].flags);
        /* admin is never mirrored, nor is anything that may block */
        if ((t[i].flags & (REDISCMD_ADMIN | REDISCMD_BLOCKING)) && !(t[i].flags & REDISCMD_NO_MIRROR))
            fail_msg("%s: admin/blocking without no_mirror", t[i].name);
        /* a subcommand's parent is a container */
        const char *bar = strchr(t[i].name, '|');
        if (bar != NULL) {
            const struct rediscmd *parent = rediscmd_find(t[i].name, (size_t)(bar - t[i].name));
            assert_non_null(parent);
            assert_true(parent->flags & REDISCMD_CONTAINER);
        }
        /* an unordered reply shape comes with the flag */
        if (t[i].reply != REDISCMD_REPLY_ORDERED && !(t[i].flags & REDISCMD_UNORDERED))
            fail_msg("%s: unordered reply shape without the flag", t[i].name);
        /* each finds itself */
        assert_ptr_equal(rediscmd_find(t[i].name, strlen(t[i].name)), &t[i]);
    }
}

struct sample {
    const char *line;
    enum req_kind kind;
    uint32_t has;   /* all of these */
    uint32_t hasnt; /* none of these */
};

static void
test_flags_sample(void **state)
{
    (void)state;
    static const struct sample samples[] = {
        /* strings */
        {"GET k", REQ_KIND_READ, REDISCMD_READ, REDISCMD_WRITE | REDISCMD_NO_MIRROR | REDISCMD_UNORDERED},
        {"SET k v", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_READ | REDISCMD_NO_MIRROR},
        {"MGET a b", REQ_KIND_READ, REDISCMD_READ, 0},
        {"MSET a 1 b 2", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"INCR n", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"GETEX k PERSIST", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"STRLEN k", REQ_KIND_READ, REDISCMD_READ, 0},
        {"LCS a b", REQ_KIND_READ, REDISCMD_READ, 0},
        /* hashes */
        {"HGETALL h", REQ_KIND_READ, REDISCMD_READ | REDISCMD_UNORDERED, REDISCMD_NONDET},
        {"HKEYS h", REQ_KIND_READ, REDISCMD_UNORDERED, 0},
        {"HVALS h", REQ_KIND_READ, REDISCMD_UNORDERED, 0},
        {"HSET h f v", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"HRANDFIELD h 2", REQ_KIND_READ, REDISCMD_NONDET | REDISCMD_UNORDERED, 0},
        {"HSCAN h 0", REQ_KIND_READ, REDISCMD_UNORDERED | REDISCMD_NONDET, 0},
        /* lists */
        {"LPUSH l a", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"LRANGE l 0 -1", REQ_KIND_READ, REDISCMD_READ, REDISCMD_UNORDERED},
        {"BLPOP l 0", REQ_KIND_WRITE, REDISCMD_BLOCKING | REDISCMD_NO_MIRROR | REDISCMD_WRITE, 0},
        {"BRPOP l 0", REQ_KIND_WRITE, REDISCMD_BLOCKING | REDISCMD_NO_MIRROR, 0},
        {"BLMOVE a b LEFT RIGHT 0", REQ_KIND_WRITE, REDISCMD_BLOCKING, 0},
        {"BLMPOP 0 1 l LEFT", REQ_KIND_WRITE, REDISCMD_BLOCKING | REDISCMD_MOVABLE_KEYS, 0},
        {"LMOVE a b LEFT RIGHT", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_BLOCKING},
        /* sets */
        {"SMEMBERS s", REQ_KIND_READ, REDISCMD_UNORDERED, REDISCMD_NONDET},
        {"SINTER a b", REQ_KIND_READ, REDISCMD_UNORDERED, 0},
        {"SUNION a b", REQ_KIND_READ, REDISCMD_UNORDERED, 0},
        {"SDIFF a b", REQ_KIND_READ, REDISCMD_UNORDERED, 0},
        {"SADD s a", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_UNORDERED},
        {"SPOP s", REQ_KIND_WRITE, REDISCMD_NONDET, REDISCMD_UNORDERED},
        {"SPOP s 3", REQ_KIND_WRITE, REDISCMD_NONDET | REDISCMD_UNORDERED, 0},
        {"SRANDMEMBER s", REQ_KIND_READ, REDISCMD_NONDET, REDISCMD_UNORDERED},
        {"SRANDMEMBER s 2", REQ_KIND_READ, REDISCMD_NONDET | REDISCMD_UNORDERED, 0},
        {"SISMEMBER s a", REQ_KIND_READ, REDISCMD_READ, 0},
        /* sorted sets */
        {"ZADD z 1 a", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"ZRANGE z 0 -1", REQ_KIND_READ, REDISCMD_READ, REDISCMD_UNORDERED},
        {"BZPOPMIN z 0", REQ_KIND_WRITE, REDISCMD_BLOCKING | REDISCMD_NO_MIRROR, 0},
        {"BZPOPMAX z 0", REQ_KIND_WRITE, REDISCMD_BLOCKING, 0},
        {"ZRANDMEMBER z", REQ_KIND_READ, REDISCMD_NONDET, REDISCMD_UNORDERED},
        {"ZUNIONSTORE d 2 a b", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        /* streams */
        {"XADD s * f v", REQ_KIND_WRITE, REDISCMD_WRITE | REDISCMD_NONDET, 0},
        {"XRANGE s - +", REQ_KIND_READ, REDISCMD_READ, 0},
        {"XGROUP CREATE s g $", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_CONTAINER},
        {"XINFO STREAM s", REQ_KIND_READ, REDISCMD_READ, 0},
        /* keys */
        {"DEL a b", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"EXISTS a", REQ_KIND_READ, REDISCMD_READ, 0},
        {"KEYS *", REQ_KIND_READ, REDISCMD_UNORDERED, 0},
        {"SCAN 0", REQ_KIND_READ, REDISCMD_UNORDERED | REDISCMD_NONDET, 0},
        {"RANDOMKEY", REQ_KIND_READ, REDISCMD_NONDET, 0},
        {"TTL k", REQ_KIND_READ, REDISCMD_TTL_REPLY, REDISCMD_NONDET},
        {"PTTL k", REQ_KIND_READ, REDISCMD_TTL_REPLY, 0},
        {"EXPIRE k 10", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_TTL_REPLY},
        {"OBJECT ENCODING k", REQ_KIND_READ, REDISCMD_READ | REDISCMD_NONDET, 0},
        {"MIGRATE h 6379 k 0 100", REQ_KIND_WRITE, REDISCMD_NO_MIRROR, 0},
        /* geo, hyperloglog, bitmaps */
        {"GEOADD g 1 2 m", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"GEOSEARCH g FROMMEMBER m BYRADIUS 1 km", REQ_KIND_READ, REDISCMD_READ, 0},
        {"PFADD h a", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"PFCOUNT h", REQ_KIND_READ, REDISCMD_READ, 0},
        {"SETBIT b 1 1", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"BITCOUNT b", REQ_KIND_READ, REDISCMD_READ, 0},
        /* scripting */
        {"EVAL s 0", REQ_KIND_WRITE, REDISCMD_WRITE | REDISCMD_MOVABLE_KEYS, 0},
        {"EVALSHA abc 0", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"FCALL f 0", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        {"EVAL_RO s 0", REQ_KIND_READ, REDISCMD_READ, 0},
        {"FCALL_RO f 0", REQ_KIND_READ, REDISCMD_READ, 0},
        {"SCRIPT LOAD s", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_NO_MIRROR},
        {"SCRIPT KILL", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"FUNCTION LOAD code", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
        /* pub/sub */
        {"SUBSCRIBE c", REQ_KIND_SESSION, REDISCMD_PUBSUB | REDISCMD_NO_MIRROR, 0},
        {"PSUBSCRIBE c*", REQ_KIND_SESSION, REDISCMD_PUBSUB | REDISCMD_NO_MIRROR, 0},
        {"UNSUBSCRIBE", REQ_KIND_SESSION, REDISCMD_PUBSUB, 0},
        {"PUBLISH c m", REQ_KIND_WRITE, REDISCMD_PUBSUB | REDISCMD_NONDET, REDISCMD_NO_MIRROR},
        {"PUBSUB CHANNELS", REQ_KIND_ADMIN, REDISCMD_PUBSUB | REDISCMD_UNORDERED, 0},
        /* transactions */
        {"MULTI", REQ_KIND_TX, REDISCMD_TX, 0},
        {"EXEC", REQ_KIND_TX, REDISCMD_TX, 0},
        {"DISCARD", REQ_KIND_TX, REDISCMD_TX, 0},
        {"WATCH a b", REQ_KIND_TX, REDISCMD_TX, 0},
        {"UNWATCH", REQ_KIND_TX, REDISCMD_TX, 0},
        /* connection */
        {"AUTH pw", REQ_KIND_SESSION, REDISCMD_NO_AUTH | REDISCMD_NO_MIRROR, 0},
        {"HELLO 2", REQ_KIND_SESSION, REDISCMD_NO_AUTH, 0},
        {"SELECT 1", REQ_KIND_SESSION, REDISCMD_SESSION, REDISCMD_NO_MIRROR},
        {"CLIENT SETNAME app", REQ_KIND_SESSION, REDISCMD_SESSION, REDISCMD_NO_MIRROR | REDISCMD_CONTAINER},
        {"CLIENT SETINFO lib-name redis-py", REQ_KIND_SESSION, REDISCMD_SESSION, 0},
        {"CLIENT REPLY OFF", REQ_KIND_SESSION, REDISCMD_NO_MIRROR, 0},
        {"CLIENT LIST", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR | REDISCMD_NONDET, 0},
        {"CLIENT KILL ID 3", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"CLIENT ID", REQ_KIND_ADMIN, 0, 0},
        {"PING", REQ_KIND_READ, REDISCMD_READ, 0},
        {"ECHO x", REQ_KIND_READ, REDISCMD_READ, 0},
        {"QUIT", REQ_KIND_SESSION, REDISCMD_NO_AUTH | REDISCMD_NO_MIRROR, 0},
        {"RESET", REQ_KIND_SESSION, REDISCMD_NO_AUTH | REDISCMD_NO_MIRROR, 0},
        /* server */
        {"CONFIG GET maxmemory", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR | REDISCMD_UNORDERED, 0},
        {"CONFIG SET maxmemory 1", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"DEBUG SLEEP 0", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"FLUSHALL", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_NO_MIRROR},
        {"FLUSHDB ASYNC", REQ_KIND_WRITE, REDISCMD_WRITE, REDISCMD_NO_MIRROR},
        {"INFO", REQ_KIND_ADMIN, REDISCMD_NONDET, 0},
        {"SLOWLOG GET 10", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"MONITOR", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"SHUTDOWN", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"TIME", REQ_KIND_READ, REDISCMD_NONDET, 0},
        {"DBSIZE", REQ_KIND_READ, REDISCMD_READ, REDISCMD_NONDET},
        {"WAIT 1 0", REQ_KIND_ADMIN, REDISCMD_BLOCKING | REDISCMD_NO_MIRROR, 0},
        {"COMMAND DOCS get", REQ_KIND_ADMIN, REDISCMD_UNORDERED, 0},
        {"CLUSTER INFO", REQ_KIND_ADMIN, REDISCMD_NO_MIRROR, 0},
        {"SWAPDB 0 1", REQ_KIND_WRITE, REDISCMD_WRITE, 0},
    };
    for (size_t i = 0; i < sizeof(samples) / sizeof(samples[0]); i++) {
        const struct sample *s = &samples[i];
        uint32_t f = flags_of(s->line);
        enum req_kind k = kind_of(s->line);
        if (k != s->kind)
            fail_msg("%s: kind %s, want %s", s->line, req_kind_name(k), req_kind_name(s->kind));
        if ((f & s->has) != s->has)
            fail_msg("%s: flags %#x lack %#x", s->line, f, s->has & ~f);
        if (f & s->hasnt)
            fail_msg("%s: flags %#x have %#x", s->line, f, f & s->hasnt);
    }
    assert_true(sizeof(samples) / sizeof(samples[0]) >= 40);
}

static void
test_xread_block(void **state)
{
    (void)state;
    struct resp_request req;
    const struct rediscmd *cmd;

    cmd = lookup("XREAD COUNT 2 STREAMS s 0", &req);
    assert_non_null(cmd);
    assert_false(rediscmd_is_blocking(cmd, req.argc, req.argv));
    assert_int_equal(rediscmd_kind(cmd, req.argc, req.argv), REQ_KIND_READ);
    assert_false(rediscmd_flags(cmd, req.argc, req.argv) & REDISCMD_NO_MIRROR);

    cmd = lookup("XREAD COUNT 2 BLOCK 1000 STREAMS s $", &req);
    assert_true(rediscmd_is_blocking(cmd, req.argc, req.argv));
    assert_true(rediscmd_flags(cmd, req.argc, req.argv) & REDISCMD_NO_MIRROR);
    assert_int_equal(rediscmd_kind(cmd, req.argc, req.argv), REQ_KIND_READ);

    cmd = lookup("xread block 0 streams s $", &req);
    assert_true(rediscmd_is_blocking(cmd, req.argc, req.argv));

    /* a stream key named "block" after STREAMS is a key, not the option */
    cmd = lookup("XREAD STREAMS block 0", &req);
    assert_false(rediscmd_is_blocking(cmd, req.argc, req.argv));
    /* nor is a COUNT value */
    cmd = lookup("XREAD COUNT block STREAMS s 0", &req);
    assert_false(rediscmd_is_blocking(cmd, req.argc, req.argv));

    cmd = lookup("XREADGROUP GROUP g c COUNT 1 STREAMS s >", &req);
    assert_false(rediscmd_is_blocking(cmd, req.argc, req.argv));
    assert_int_equal(rediscmd_kind(cmd, req.argc, req.argv), REQ_KIND_WRITE);
    cmd = lookup("XREADGROUP GROUP block block BLOCK 5 NOACK STREAMS s >", &req);
    assert_true(rediscmd_is_blocking(cmd, req.argc, req.argv));
    assert_int_equal(rediscmd_kind(cmd, req.argc, req.argv), REQ_KIND_WRITE);

    /* options beyond the kept arguments: assume the worst */
    cmd = lookup("XREAD COUNT 1 COUNT 1 COUNT 1 COUNT 1 COUNT 1 COUNT 1 COUNT 1 COUNT 1 STREAMS s 0", &req);
    assert_true(req.argc > RESP_MAX_ARGS);
    assert_true(rediscmd_is_blocking(cmd, req.argc, req.argv));

    /* always-blocking commands */
    cmd = lookup("BLPOP a b 0", &req);
    assert_true(rediscmd_is_blocking(cmd, req.argc, req.argv));
    cmd = lookup("LPOP a", &req);
    assert_false(rediscmd_is_blocking(cmd, req.argc, req.argv));
}

static void
test_store_option(void **state)
{
    (void)state;
    assert_int_equal(kind_of("SORT k"), REQ_KIND_READ);
    assert_int_equal(kind_of("SORT k LIMIT 0 10 ALPHA"), REQ_KIND_READ);
    assert_int_equal(kind_of("SORT k STORE d"), REQ_KIND_WRITE);
    assert_int_equal(kind_of("sort k by w_* get # store d"), REQ_KIND_WRITE);
    /* "store" as a pattern value is not the option */
    assert_int_equal(kind_of("SORT k BY store"), REQ_KIND_READ);
    assert_int_equal(kind_of("SORT k GET store DESC"), REQ_KIND_READ);
    assert_int_equal(kind_of("SORT_RO k"), REQ_KIND_READ);
    assert_int_equal(kind_of("GEORADIUS g 1 2 3 km"), REQ_KIND_READ);
    assert_int_equal(kind_of("GEORADIUS g 1 2 3 km WITHDIST STORE d"), REQ_KIND_WRITE);
    assert_int_equal(kind_of("GEORADIUSBYMEMBER g m 3 km STOREDIST d"), REQ_KIND_WRITE);
    assert_int_equal(kind_of("GEORADIUSBYMEMBER g m 3 km COUNT 5"), REQ_KIND_READ);
    /* unknown because not kept: a write */
    assert_int_equal(kind_of("SORT k GET a GET b GET c GET d GET e GET f GET g GET h"), REQ_KIND_WRITE);
}

static void
test_unknown(void **state)
{
    (void)state;
    struct resp_request req;
    assert_null(lookup("NOSUCHCOMMAND a b", &req));
    assert_null(lookup("GETT k", &req));
    assert_null(lookup("GE k", &req));
    assert_null(lookup("CLIENT|SETNAME x", &req));
    assert_null(rediscmd_lookup(0, NULL));
    assert_int_equal(rediscmd_kind(NULL, req.argc, req.argv), REQ_KIND_WRITE);
    assert_int_equal(rediscmd_flags(NULL, req.argc, req.argv), REDISCMD_WRITE);
    assert_int_equal(rediscmd_first_key(NULL, req.argc, req.argv), -1);
    assert_int_equal(rediscmd_digest_mode(NULL, req.argc, req.argv), RESP_DIGEST_ORDERED);
    assert_null(rediscmd_find("", 0));
    assert_null(rediscmd_find("getx", 4));

    /* unknown subcommand: the container, conservatively */
    const struct rediscmd *cmd = lookup("CLIENT FROBNICATE", &req);
    assert_non_null(cmd);
    assert_string_equal(cmd->name, "client");
    assert_int_equal(rediscmd_kind(cmd, req.argc, req.argv), REQ_KIND_ADMIN);
    cmd = lookup("CLIENT", &req);
    assert_string_equal(cmd->name, "client");
    /* a subcommand too long for any entry: still the container */
    cmd = lookup("CONFIG AVERYLONGSUBCOMMANDNAMETHATNOREDISVERSIONHASEVERHAD x", &req);
    assert_non_null(cmd);
    assert_string_equal(cmd->name, "config");
    cmd = lookup("XGROUP NEWTHING s", &req);
    assert_string_equal(cmd->name, "xgroup");
    assert_int_equal(rediscmd_kind(cmd, req.argc, req.argv), REQ_KIND_WRITE);
}

static void
test_case_insensitive(void **state)
{
    (void)state;
    struct resp_request req;
    const struct rediscmd *get = rediscmd_find("get", 3);
    assert_non_null(get);
    assert_ptr_equal(lookup("GET k", &req), get);
    assert_ptr_equal(lookup("gEt k", &req), get);
    assert_ptr_equal(lookup("\"GeT\" k", &req), get);
    assert_ptr_equal(lookup("'get' k", &req), get);
    assert_ptr_equal(rediscmd_find("GET", 3), get);
    assert_ptr_equal(rediscmd_find("getxyz", 3), get);

    const struct rediscmd *setname = rediscmd_find("client|setname", 14);
    assert_non_null(setname);
    assert_ptr_equal(lookup("client setname x", &req), setname);
    assert_ptr_equal(lookup("CLIENT SetName x", &req), setname);
    assert_ptr_equal(lookup("Client \"SETNAME\" x", &req), setname);
    assert_ptr_equal(rediscmd_find("CLIENT|SETNAME", 14), setname);
    assert_non_null(lookup("CLUSTER COUNT-FAILURE-REPORTS n", &req));
    assert_string_equal(lookup("restore-ASKING k 0 v", &req)->name, "restore-asking");
    assert_string_equal(lookup("GEORADIUSBYMEMBER_RO g m 1 km", &req)->name, "georadiusbymember_ro");
    assert_string_equal(lookup("EVAL_RO s 0", &req)->name, "eval_ro");
    assert_string_equal(lookup("EVALSHA s 0", &req)->name, "evalsha");
}

static int
first_key(const char *line)
{
    struct resp_request req;
    const struct rediscmd *cmd = lookup(line, &req);
    assert_non_null(cmd);
    return rediscmd_first_key(cmd, req.argc, req.argv);
}

static void
test_first_key(void **state)
{
    (void)state;
    assert_int_equal(first_key("GET k"), 1);
    assert_int_equal(first_key("MSET a 1 b 2"), 1);
    assert_int_equal(first_key("BITOP AND d a b"), 2);
    assert_int_equal(first_key("OBJECT ENCODING k"), 2);
    assert_int_equal(first_key("XINFO STREAM s"), 2);
    assert_int_equal(first_key("PING"), -1);
    assert_int_equal(first_key("CLIENT SETNAME x"), -1);
    assert_int_equal(first_key("EVAL s 2 k1 k2 a"), 3);
    assert_int_equal(first_key("EVAL s 0 a"), -1);
    assert_int_equal(first_key("EVAL s x a"), -1);
    assert_int_equal(first_key("FCALL f 1 k"), 3);
    assert_int_equal(first_key("ZUNION 2 a b"), 2);
    assert_int_equal(first_key("LMPOP 1 l LEFT"), 2);
    assert_int_equal(first_key("BLMPOP 0 1 l LEFT"), 3);
    assert_int_equal(first_key("ZUNIONSTORE d 2 a b"), 1);
    assert_int_equal(first_key("XREAD COUNT 2 STREAMS s1 s2 0 0"), 4);
    assert_int_equal(first_key("XREAD BLOCK 0 STREAMS s 0"), 4);
    assert_int_equal(first_key("XREADGROUP GROUP g c STREAMS s >"), 5);
    assert_int_equal(first_key("MIGRATE h 6379 k 0 100"), 3);
    assert_int_equal(first_key("MIGRATE h 6379 \"\" 0 100 COPY AUTH pw KEYS a b"), 10);
    assert_int_equal(first_key("MIGRATE h 6379 \"\" 0 100 AUTH2 u pw KEYS a"), 10);
    assert_int_equal(first_key("SORT k BY x STORE d"), 1);
}

static enum resp_digest_mode
mode_of(const char *line)
{
    struct resp_request req;
    const struct rediscmd *cmd = lookup(line, &req);
    assert_non_null(cmd);
    return rediscmd_digest_mode(cmd, req.argc, req.argv);
}

static void
test_digest_modes(void **state)
{
    (void)state;
    assert_int_equal(mode_of("GET k"), RESP_DIGEST_ORDERED);
    assert_int_equal(mode_of("LRANGE l 0 -1"), RESP_DIGEST_ORDERED);
    assert_int_equal(mode_of("SMEMBERS s"), RESP_DIGEST_SET);
    assert_int_equal(mode_of("SUNION a b"), RESP_DIGEST_SET);
    assert_int_equal(mode_of("KEYS *"), RESP_DIGEST_SET);
    assert_int_equal(mode_of("HKEYS h"), RESP_DIGEST_SET);
    assert_int_equal(mode_of("HGETALL h"), RESP_DIGEST_PAIRS);
    assert_int_equal(mode_of("CONFIG GET *"), RESP_DIGEST_PAIRS);
    assert_int_equal(mode_of("SCAN 0 MATCH a*"), RESP_DIGEST_SCAN_SET);
    assert_int_equal(mode_of("SSCAN s 0"), RESP_DIGEST_SCAN_SET);
    assert_int_equal(mode_of("HSCAN h 0"), RESP_DIGEST_SCAN_PAIRS);
    assert_int_equal(mode_of("ZSCAN z 0"), RESP_DIGEST_SCAN_PAIRS);
    assert_int_equal(mode_of("SRANDMEMBER s"), RESP_DIGEST_ORDERED);
    assert_int_equal(mode_of("SRANDMEMBER s 3"), RESP_DIGEST_SET);
    assert_int_equal(mode_of("SPOP s 3"), RESP_DIGEST_SET);
    assert_int_equal(mode_of("HRANDFIELD h"), RESP_DIGEST_ORDERED);
    assert_int_equal(mode_of("HRANDFIELD h 2"), RESP_DIGEST_SET);
    assert_int_equal(mode_of("HRANDFIELD h 2 WITHVALUES"), RESP_DIGEST_PAIRS);
    assert_int_equal(mode_of("ZRANDMEMBER z -5 withscores"), RESP_DIGEST_PAIRS);
}

static void
test_arity(void **state)
{
    (void)state;
    const struct rediscmd *get = rediscmd_find("get", 3);
    assert_true(rediscmd_arity_ok(get, 2));
    assert_false(rediscmd_arity_ok(get, 1));
    assert_false(rediscmd_arity_ok(get, 3));
    const struct rediscmd *set = rediscmd_find("set", 3);
    assert_false(rediscmd_arity_ok(set, 2));
    assert_true(rediscmd_arity_ok(set, 3));
    assert_true(rediscmd_arity_ok(set, 7));
    const struct rediscmd *ping = rediscmd_find("ping", 4);
    assert_true(rediscmd_arity_ok(ping, 1));
    assert_true(rediscmd_arity_ok(ping, 2));
}

/* Why a differing reply is noise, command by command. */
static void
test_noise_reasons(void **state)
{
    (void)state;
    static const struct {
        const char *line;
        enum shadow_noise_reason reason;
    } rows[] = {
        {"GET k", SHADOW_NOISE_NONE},
        {"HGETALL h", SHADOW_NOISE_NONE},
        {"DBSIZE", SHADOW_NOISE_NONE}, /* compared: a different key count is news */
        {"TTL k", SHADOW_NOISE_NONE},  /* compared loosely instead */
        {"RANDOMKEY", SHADOW_NOISE_VOLATILE},
        {"SRANDMEMBER s 2", SHADOW_NOISE_VOLATILE},
        {"SPOP s", SHADOW_NOISE_VOLATILE},
        {"HRANDFIELD h", SHADOW_NOISE_VOLATILE},
        {"TIME", SHADOW_NOISE_VOLATILE},
        {"XADD s * f v", SHADOW_NOISE_VOLATILE},
        {"OBJECT ENCODING k", SHADOW_NOISE_PHYSICAL},
        {"object idletime k", SHADOW_NOISE_PHYSICAL},
        {"OBJECT FREQ k", SHADOW_NOISE_PHYSICAL},
        {"MEMORY USAGE k", SHADOW_NOISE_PHYSICAL},
        {"DEBUG OBJECT k", SHADOW_NOISE_PHYSICAL},
        {"DUMP k", SHADOW_NOISE_PHYSICAL},
        {"SCAN 0", SHADOW_NOISE_PHYSICAL},
        {"SSCAN s 0", SHADOW_NOISE_PHYSICAL},
        {"HSCAN h 0 COUNT 10", SHADOW_NOISE_PHYSICAL},
        {"ZSCAN z 0", SHADOW_NOISE_PHYSICAL},
        {"INFO", SHADOW_NOISE_SERVER_LOCAL},
        {"INFO memory", SHADOW_NOISE_SERVER_LOCAL},
        {"CLIENT ID", SHADOW_NOISE_SERVER_LOCAL},
        {"CLIENT LIST", SHADOW_NOISE_SERVER_LOCAL},
        {"CLIENT INFO", SHADOW_NOISE_SERVER_LOCAL},
        {"LASTSAVE", SHADOW_NOISE_SERVER_LOCAL},
        {"WAIT 1 0", SHADOW_NOISE_SERVER_LOCAL},
        {"PUBLISH c m", SHADOW_NOISE_SERVER_LOCAL},
    };
    for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
        enum shadow_noise_reason r = rediscmd_noise_reason(flags_of(rows[i].line));
        if (r != rows[i].reason)
            fail_msg("%s: %s, want %s", rows[i].line, shadow_noise_reason_name(r),
                     shadow_noise_reason_name(rows[i].reason));
    }
    /* a reason flag never comes without NONDET: the table says why, not whether */
    size_t n;
    const struct rediscmd *t = rediscmd_table(&n);
    for (size_t i = 0; i < n; i++)
        if ((t[i].flags & (REDISCMD_LOCAL | REDISCMD_PHYSICAL)) && !(t[i].flags & REDISCMD_NONDET))
            fail_msg("%s: a reason without nondeterministic", t[i].name);
    assert_int_equal(rediscmd_noise_reason(0), SHADOW_NOISE_NONE);
}

static void
test_flag_names(void **state)
{
    (void)state;
    assert_string_equal(rediscmd_flag_name(REDISCMD_READ), "read");
    assert_string_equal(rediscmd_flag_name(REDISCMD_NO_MIRROR), "no_mirror");
    assert_string_equal(rediscmd_flag_name(REDISCMD_UNORDERED), "unordered_reply");
    assert_string_equal(rediscmd_flag_name(REDISCMD_TTL_REPLY), "ttl_reply");
    assert_string_equal(rediscmd_flag_name(REDISCMD_LOCAL), "server_local");
    assert_string_equal(rediscmd_flag_name(REDISCMD_PHYSICAL), "physical");
    assert_null(rediscmd_flag_name(0));
    assert_null(rediscmd_flag_name(REDISCMD_READ | REDISCMD_WRITE));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_shape),
        cmocka_unit_test(test_flags_sample),
        cmocka_unit_test(test_xread_block),
        cmocka_unit_test(test_store_option),
        cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_case_insensitive),
        cmocka_unit_test(test_first_key),
        cmocka_unit_test(test_digest_modes),
        cmocka_unit_test(test_arity),
        cmocka_unit_test(test_flag_names),
        cmocka_unit_test(test_noise_reasons),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
