/*
 * resp.h - Redis protocol (RESP2, and RESP3 replies) codec (pure).
 *
 * Nothing here touches a socket, logs, or allocates.  Three pieces:
 *
 *   requests (client -> server)   resp_request_parse(): one whole command at a
 *                                 time, multibulk or inline, checked against
 *                                 limits exactly where Redis checks them.
 *   replies  (server -> client)   struct resp_reader: a resumable scanner that
 *                                 says where one reply ends and digests it on
 *                                 the fly, so replies can be streamed to the
 *                                 client without being held whole in memory.
 *   builders                      replies and commands tandem sends itself.
 *
 * Parsers answer RESP_OK (parsed, *used bytes consumed), RESP_NEED_MORE (the
 * bytes are a valid prefix; call again with more) or RESP_ERROR (the bytes can
 * never become valid; *err says why).  "Is it complete?" and "is it valid?"
 * are separate answers: a length out of range is an error as soon as its
 * digits and CRLF are seen, before any of the payload has arrived.
 *
 * Builders write into a caller buffer of cap bytes and return the length
 * written, or 0 if cap was too small (nothing useful written).
 */
#ifndef TANDEM_RESP_H
#define TANDEM_RESP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum resp_status { RESP_OK = 0, RESP_NEED_MORE = 1, RESP_ERROR = -1 };

/* ------------------------------------------------------------------ */
/* Requests.                                                          */

/*
 * Limits.  Defaults are Redis 7.0's, measured against redis-server 7.0.15:
 *   max_bulk_len        proto-max-bulk-len, 512 MiB   ("invalid bulk length")
 *   max_mbulk_len       INT_MAX elements              ("invalid multibulk length")
 *   max_inline_len      PROTO_INLINE_MAX_SIZE, 64 KiB  (inline line, and the
 *                       most bytes Redis waits for a count line's CR:
 *                       "too big inline request", "too big mbulk count
 *                       string", "too big bulk count string")
 *   unauth_max_bulk_len 16384 ("unauthenticated bulk length")
 *   unauth_max_mbulk_len 10   ("unauthenticated multibulk length")
 * The unauth_* limits apply only while pre_auth is true: the session sets it
 * while its client must still authenticate (Redis: authRequired()), and keeps
 * two copies of the struct, or flips the flag, on a successful AUTH/HELLO.
 * Inline requests have no separate pre-auth limit, as in Redis.
 */
#define RESP_DEFAULT_MAX_BULK_LEN (512ull * 1024 * 1024)
#define RESP_DEFAULT_MAX_MBULK_LEN 2147483647ull
#define RESP_DEFAULT_MAX_INLINE_LEN (64u * 1024)
#define RESP_UNAUTH_MAX_BULK_LEN 16384u
#define RESP_UNAUTH_MAX_MBULK_LEN 10u

struct resp_limits {
    uint64_t max_bulk_len;
    uint64_t max_mbulk_len;
    size_t max_inline_len;
    uint64_t unauth_max_bulk_len;
    uint64_t unauth_max_mbulk_len;
    bool pre_auth;             /* true: the unauth_* limits apply too */
};

/* resp_limits_init - Redis's defaults, pre_auth false. */
void resp_limits_init(struct resp_limits *lim);

/* How many arguments a parsed request keeps; argc still counts them all. */
#define RESP_MAX_ARGS 16

enum resp_form { RESP_FORM_MULTIBULK, RESP_FORM_INLINE };

/*
 * One argument, pointing into the parsed buffer.  For multibulk requests and
 * for inline tokens without quotes, ptr/len is the value itself.  An inline
 * token that uses quotes ("a b", 'x', "\x41") has quoted set, and ptr/len is
 * the raw token as written, quotes and escapes included: read its value with
 * resp_arg_decode() / resp_arg_equal_ci().  Forwarding never needs the value:
 * the raw request bytes go to the backends unchanged.
 */
struct resp_arg {
    const uint8_t *ptr;
    size_t len;
    bool quoted;
};

struct resp_request {
    enum resp_form form;
    size_t argc;               /* every argument; 0 = empty request (see below) */
    size_t nargv;              /* argv entries filled: min(argc, RESP_MAX_ARGS) */
    struct resp_arg argv[RESP_MAX_ARGS];
    size_t wire_len;           /* bytes of the whole command, == *used */
    uint64_t args_len;         /* sum of argument lengths (raw tokens for inline) */
    char errbuf[40];           /* backs *err for "expected '$', got 'x'" */
};

/*
 * resp_request_parse - frame one client command at the start of buf.
 *
 * buf[0] == '*' selects multibulk (*N CRLF, then N times $len CRLF bytes
 * CRLF); anything else is an inline command (one line ended by LF or CRLF,
 * split on blanks with Redis's sdssplitargs() quoting: "..." with \xHH \n \r
 * \t \b \a \" \\ escapes, '...' with \' only; a closing quote must be
 * followed by a blank or the end of the line).
 *
 * RESP_OK: *used bytes form one command; out describes it and points into
 *   buf, so buf must outlive out.  argc may be 0 ("*0", "*-1", a blank line):
 *   Redis runs nothing and sends no reply for those, so the caller skips
 *   *used bytes and expects no reply.  A pipeline is parsed by calling again
 *   at buf + *used.
 * RESP_NEED_MORE: buf is a valid prefix.  *used is a lower bound of the
 *   command's total length (always > len; arguments not yet begun count 6
 *   bytes each, the shortest "$0\r\n\r\n"), exact while inside the last
 *   bulk: a caller may wait for that many bytes before calling again, and
 *   refuse the command at once when that is more than it will buffer.
 * RESP_ERROR: *err is the text Redis puts after "Protocol error: "
 *   ("invalid multibulk length", "invalid bulk length", "expected '$', got
 *   'x'", "unbalanced quotes in request", "too big inline request", "too big
 *   mbulk count string", "too big bulk count string", "unauthenticated
 *   multibulk length", "unauthenticated bulk length"); it is a literal or
 *   points into out->errbuf.  Send it with resp_build_protocol_error(), then
 *   close the connection, as Redis does.
 *
 * Deliberately stricter than Redis, which assumes the two bytes after a CR
 * and after a bulk payload are CRLF without looking: a count line whose CR
 * is not followed by LF is "invalid multibulk length" / "invalid bulk
 * length", and a bulk not followed by CRLF is "bulk not terminated by CRLF".
 * A NUL byte in an inline line or before a count line's CR makes Redis wait
 * forever (it searches with strchr) until the limit is crossed; tandem
 * answers right away with the same "too big ..." text.
 * Never reads past len; no allocation; lim may not be NULL.
 */
enum resp_status resp_request_parse(const uint8_t *buf, size_t len, const struct resp_limits *lim,
                                    size_t *used, struct resp_request *out, const char **err);

/*
 * resp_arg_decode - the value of an argument: copies min(value length, cap)
 * bytes to out and returns the whole value length.  out may be NULL if cap is 0.
 */
size_t resp_arg_decode(const struct resp_arg *arg, uint8_t *out, size_t cap);

/* resp_arg_equal_ci - the argument's value equals lit, ASCII case-insensitively. */
bool resp_arg_equal_ci(const struct resp_arg *arg, const char *lit);

/* ------------------------------------------------------------------ */
/* Replies.                                                           */

/*
 * How a reply is digested.  ORDERED hashes the reply's bytes as they are.
 * The others treat the top-level array as a multiset, for replies whose
 * element order is the server's hash-table order (SMEMBERS, HGETALL, KEYS...):
 *   SET         each element of the top-level array is one unit
 *   PAIRS       each two consecutive elements are one unit (field/value,
 *               member/score: HGETALL, CONFIG GET, ZRANDMEMBER WITHSCORES)
 *   SCAN_SET    reply is [cursor, [elements]]: the cursor is hashed in
 *   SCAN_PAIRS  order, the inner array's elements (or pairs) as a multiset
 * Unit hashes are summed (commutative) and folded with the ordered hash of
 * everything outside the units, which includes the array headers and so the
 * element counts.  A reply that does not have the expected shape (an error,
 * a null, a SCAN reply that is not a 2-element array) is hashed as ORDERED
 * bytes, so both sides of a comparison still agree.  NONE only frames.
 */
enum resp_digest_mode {
    RESP_DIGEST_NONE,
    RESP_DIGEST_ORDERED,
    RESP_DIGEST_SET,
    RESP_DIGEST_PAIRS,
    RESP_DIGEST_SCAN_SET,
    RESP_DIGEST_SCAN_PAIRS,
};

/*
 * Array nesting.  Redis puts no limit of its own on a reply's depth (a Lua
 * script returning a recursive table nests until Lua's stack gives out,
 * thousands of levels deep), so the reader bounds its memory instead: the
 * open arrays are kept as runs of consecutive levels that each await the
 * same number of elements.  A chain of "*1" (or "*2" ...) levels is one
 * run however deep; only a reply with more than RESP_REPLY_MAX_RUNS
 * distinct runs open at once is refused ("reply nesting too deep").
 */
#define RESP_REPLY_MAX_RUNS 128

/* What resp_reader_feed() / resp_reply_scan() report about a whole reply. */
struct resp_reply_info {
    uint8_t type;              /* the type byte: '+', '-', ':', '$', '*', or RESP3's */
    bool null;                 /* "$-1", "*-1" or RESP3's "_" */
    int64_t count;             /* '*' '~' '>': elements, '%': pairs, '$': length, ':': the value */
    uint64_t size;             /* bytes of the whole reply */
    uint64_t digest;           /* 0 with RESP_DIGEST_NONE */
};

/* Digest state: XXH3 chained over fixed blocks (see resp.c for why). */
#define RESP_HASH_BLOCK 256
struct resp_hash {
    uint64_t h;
    uint64_t total;
    size_t fill;
    uint8_t block[RESP_HASH_BLOCK];
};

/*
 * The reply reader.  Embed it (e.g. in a backend connection) and treat every
 * field as private: it is in the header only so that no allocation is needed.
 * It is plain data: it may be copied or moved between calls.
 */
struct resp_reader {
    enum resp_digest_mode mode;
    uint8_t state;
    uint8_t type;              /* type byte of the element being read */
    bool neg;
    uint8_t ndigits;
    uint64_t num;
    uint64_t bulk_left;
    uint64_t size;
    size_t depth;              /* open arrays */
    uint32_t nruns;            /* runs[0] is the outermost */
    int64_t run_left[RESP_REPLY_MAX_RUNS];   /* elements each level of the run still awaits */
    uint32_t run_levels[RESP_REPLY_MAX_RUNS]; /* levels in the run */
    struct resp_reply_info info;
    size_t unit_depth;         /* direct children of this level are units; 0 none */
    bool in_unit;
    uint8_t unit_elems;
    bool scan_shape;
    uint64_t unit_sum;
    uint64_t unit_count;
    struct resp_hash outer;
    struct resp_hash unit;
};

/* resp_reader_init - start reading a reply digested per mode. */
void resp_reader_init(struct resp_reader *r, enum resp_digest_mode mode);

/*
 * resp_reader_feed - consume reply bytes; they may be split anywhere.
 *
 * RESP_OK: a reply ended at buf + *used; *info describes it.  The reader is
 *   ready for the next reply, same mode (resp_reader_init() to change it).
 * RESP_NEED_MORE: all len bytes consumed (*used == len); feed the next bytes.
 * RESP_ERROR: the bytes are not RESP (*err says why); the reader is dead
 *   until resp_reader_init() and the connection should be closed.
 * RESP2 and RESP3: RESP3's null (_), boolean (#), double (,) and big number
 * (() are one-line replies, its verbatim string (=) and blob error (!)
 * read as bulk strings, its map (%, n pairs: 2n elements, so PAIRS digests
 * it unordered), set (~) and push (>) as arrays; info.type is the type
 * byte as sent.  Attributes (|), which Redis itself does not send, and
 * streamed strings and aggregates (?) are errors.  Never reads past len.
 *
 * Hand-written rather than hiredis's redisReader: we need only boundaries
 * and a digest, and hiredis buffers (copies) the input and builds objects,
 * which would hold large replies whole in memory instead of streaming them.
 */
enum resp_status resp_reader_feed(struct resp_reader *r, const uint8_t *buf, size_t len,
                                  size_t *used, struct resp_reply_info *info, const char **err);

/*
 * resp_reply_scan - the same for a reply held in one buffer, stateless.
 * On RESP_NEED_MORE, *used is a lower bound of the reply's length (> len).
 */
enum resp_status resp_reply_scan(const uint8_t *buf, size_t len, enum resp_digest_mode mode,
                                 size_t *used, struct resp_reply_info *info, const char **err);

/* ------------------------------------------------------------------ */
/* Builders.                                                          */

/* "-" msg CRLF; msg starts with the error code ("ERR ...").  CR/LF become spaces. */
size_t resp_build_error(uint8_t *out, size_t cap, const char *msg);

/* "-ERR Protocol error: " err CRLF, what Redis sends before closing. */
size_t resp_build_protocol_error(uint8_t *out, size_t cap, const char *err);

/* "+" s CRLF; CR/LF in s become spaces. */
size_t resp_build_simple(uint8_t *out, size_t cap, const char *s);

/* ":" v CRLF */
size_t resp_build_integer(uint8_t *out, size_t cap, int64_t v);

/* "$" len CRLF data CRLF; data NULL gives the null bulk "$-1" CRLF. */
size_t resp_build_bulk(uint8_t *out, size_t cap, const void *data, size_t len);

/* "*" n CRLF; n < 0 gives the null array "*-1" CRLF.  Elements follow. */
size_t resp_build_array_header(uint8_t *out, size_t cap, int64_t n);

/*
 * resp_reply_strings - the strings of the whole reply at buf[0..len): one
 * for a bulk or simple string, none for a null or an empty array, each
 * element of an array or set of bulk strings.  out[] points into buf.
 * -1 when the reply is anything else, not whole, or has more than max.
 */
int resp_reply_strings(const uint8_t *buf, size_t len, struct resp_arg *out, size_t max,
                       size_t *n);

/* A multibulk command; lens NULL means each argv[i] is NUL-terminated. */
size_t resp_build_command(uint8_t *out, size_t cap, size_t argc, const char *const *argv,
                          const size_t *lens);

#endif /* TANDEM_RESP_H */
