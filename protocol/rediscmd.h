/*
 * rediscmd.h - the Redis command table: how tandem classifies, routes,
 * mirrors and compares each command (pure).
 *
 * One static table, sorted by name, covering every command and subcommand
 * of Redis 7.0 (checked name by name against a live redis-server 7.0's
 * COMMAND LIST, see rediscmd.c) plus the few newer ones clients send
 * (CLIENT SETINFO, CLIENT NO-TOUCH, WAITAOF, the 7.4 hash-field TTL
 * commands).  Subcommands are entries of their own, named as COMMAND LIST
 * prints them ("client|setname"); rediscmd_lookup() resolves them from the
 * arguments.  An unknown command is NULL: the caller treats it as a write
 * answered by the primary (rediscmd_kind(NULL, ...) says so).
 *
 * Functions taking (argc, argv) take a parsed request's argc and argv (see
 * resp.h): argc counts every argument, argv holds the first
 * min(argc, RESP_MAX_ARGS).  Where an answer depends on an argument that was
 * not kept, they give the conservative answer (blocking, write).
 */
#ifndef TANDEM_REDISCMD_H
#define TANDEM_REDISCMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/kind.h"
#include "protocol/outcome.h"
#include "protocol/resp.h"

/*
 * Flags.  Every entry has exactly one of READ, WRITE, ADMIN, SESSION, TX,
 * which is its req_kind; the others qualify it.
 */
#define REDISCMD_FLAGS(X)                                                                     \
    X(READ, 0, "read")             /* reads data: may be answered by either backend */        \
    X(WRITE, 1, "write")           /* changes data: the primary answers, mirrored */          \
    X(ADMIN, 2, "admin")           /* server administration/introspection: primary only */    \
    X(SESSION, 3, "session")       /* changes connection state: SELECT, AUTH, SUBSCRIBE */     \
    X(TX, 4, "tx")                 /* MULTI EXEC DISCARD WATCH UNWATCH */                     \
    X(BLOCKING, 5, "blocking")     /* may block the connection: BLPOP, WAIT, XREAD BLOCK */   \
    X(PUBSUB, 6, "pubsub")         /* pub/sub: SUBSCRIBE puts the connection in push mode */  \
    X(NO_MIRROR, 7, "no_mirror")   /* never sent to the shadow, whatever the mode */          \
    X(UNORDERED, 8, "unordered_reply") /* element order is the server's: digest as a set */ \
    X(NONDET, 9, "nondeterministic") /* output differs between equal servers: noise */       \
    X(TTL_REPLY, 10, "ttl_reply")  /* a time left / expiry that drifts: compare loosely */     \
    X(MOVABLE_KEYS, 11, "movablekeys") /* key positions depend on arguments */                \
    X(NO_AUTH, 12, "no_auth")      /* allowed before authentication */                        \
    X(CONTAINER, 13, "container")  /* has subcommands; this entry is the fallback */          \
    X(BLOCK_OPT, 14, "block_opt")  /* blocking only with a BLOCK option: XREAD(GROUP) */      \
    X(STORE_OPT, 15, "store_opt")  /* a write only with STORE/STOREDIST, else a read */ \
    X(LOCAL, 16, "server_local")   /* NONDET because of the server's identity: noise server_local */ \
    X(PHYSICAL, 17, "physical")    /* NONDET because of its memory layout, stats: noise physical */

enum rediscmd_flag {
#define X(id, bit, name) REDISCMD_##id = 1u << (bit),
    REDISCMD_FLAGS(X)
#undef X
};

/* Where the keys are, beyond Redis's legacy first/last/step triple. */
enum rediscmd_keys {
    REDISCMD_KEYS_FIXED,      /* first_key / last_key / key_step */
    REDISCMD_KEYS_NUMKEYS_1,  /* numkeys at argv[1], keys from argv[2]: ZUNION, LMPOP, SINTERCARD */
    REDISCMD_KEYS_NUMKEYS_2,  /* numkeys at argv[2], keys from argv[3]: EVAL, FCALL, BLMPOP */
    REDISCMD_KEYS_STREAMS,    /* after the STREAMS keyword: XREAD, XREADGROUP */
    REDISCMD_KEYS_MIGRATE,    /* argv[3], or after KEYS when argv[3] is empty */
};

/* The shape of the reply, for rediscmd_digest_mode(). */
enum rediscmd_reply {
    REDISCMD_REPLY_ORDERED,
    REDISCMD_REPLY_SET,           /* SMEMBERS, KEYS, HKEYS, HVALS, SINTER ... */
    REDISCMD_REPLY_PAIRS,         /* HGETALL, CONFIG GET, COMMAND DOCS */
    REDISCMD_REPLY_SCAN_SET,      /* SCAN, SSCAN: [cursor, [elements]] */
    REDISCMD_REPLY_SCAN_PAIRS,    /* HSCAN, ZSCAN: [cursor, [field, value, ...]] */
    REDISCMD_REPLY_SET_IF_COUNT,  /* SRANDMEMBER, SPOP: a set with a count argument */
    REDISCMD_REPLY_RANDOM_FIELDS, /* HRANDFIELD, ZRANDMEMBER: set with count, pairs WITH... */
};

struct rediscmd {
    const char *name;   /* lowercase; "parent|sub" for a subcommand */
    int16_t arity;      /* Redis's: n arguments exactly, -n at least n (name included) */
    int8_t first_key;   /* Redis's legacy key triple; first_key 0: none fixed */
    int8_t last_key;    /* negative: from the end (-1 the last argument) */
    int8_t key_step;
    uint8_t keys;       /* enum rediscmd_keys */
    uint8_t reply;      /* enum rediscmd_reply */
    uint32_t flags;     /* enum rediscmd_flag */
};

/* rediscmd_table - the whole table, sorted by name; *count entries. */
const struct rediscmd *rediscmd_table(size_t *count);

/*
 * rediscmd_find - the entry named exactly name[0, len), ASCII
 * case-insensitively ("GET", "client|SETNAME"), or NULL.  Mostly one hash
 * probe (an index built at the first call, thread-safe).
 */
const struct rediscmd *rediscmd_find(const char *name, size_t len);

/*
 * rediscmd_lookup - the entry for a parsed request: argv[0] is the command;
 * for a container (CLIENT, CONFIG, XGROUP ...) argv[1] picks the subcommand
 * entry.  A container with no or an unknown subcommand gives the
 * container's own entry (a conservative fallback: admin, or write for
 * XGROUP/SCRIPT/FUNCTION).  NULL for an unknown command or argc 0.
 */
const struct rediscmd *rediscmd_lookup(size_t argc, const struct resp_arg *argv);

/*
 * rediscmd_flags - cmd's flags for these arguments: XREAD/XREADGROUP gain
 * BLOCKING | NO_MIRROR with a BLOCK option; SORT/GEORADIUS* are READ instead
 * of WRITE without STORE/STOREDIST; SRANDMEMBER & co lose UNORDERED without
 * a count.  cmd NULL (unknown) gives REDISCMD_WRITE.
 */
uint32_t rediscmd_flags(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv);

/* rediscmd_kind - the req_kind of cmd with these arguments; NULL is a write. */
enum req_kind rediscmd_kind(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv);

/* rediscmd_is_blocking - rediscmd_flags() has REDISCMD_BLOCKING. */
bool rediscmd_is_blocking(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv);

/*
 * rediscmd_first_key - index in argv of the first key, for key-prefix
 * canary rules; -1 when the command has no key (EVAL with numkeys 0) or it
 * is not among the kept arguments.  Further keys follow every key_step
 * arguments up to last_key (FIXED), or are consecutive (the others).
 */
int rediscmd_first_key(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv);

/* rediscmd_digest_mode - how to digest the reply of cmd with these arguments. */
enum resp_digest_mode rediscmd_digest_mode(const struct rediscmd *cmd, size_t argc,
                                           const struct resp_arg *argv);

/* rediscmd_arity_ok - argc (name included) fits cmd's arity. */
bool rediscmd_arity_ok(const struct rediscmd *cmd, size_t argc);

/*
 * rediscmd_noise_reason - why a difference in the reply of a command with
 * these flags (rediscmd_flags) is noise: SHADOW_NOISE_NONE without NONDET
 * (a difference is a mismatch); else server_local with LOCAL (INFO, CLIENT
 * ID/LIST/INFO, LASTSAVE, WAIT, PUBLISH's receiver count), physical with
 * PHYSICAL (OBJECT, MEMORY USAGE, DEBUG, DUMP, SCAN cursors), volatile
 * otherwise (RANDOMKEY, SRANDMEMBER, SPOP, TIME, XADD '*').
 */
enum shadow_noise_reason rediscmd_noise_reason(uint32_t flags);

/* rediscmd_flag_name - "read", "no_mirror" ... for one flag bit; NULL if none. */
const char *rediscmd_flag_name(uint32_t flag);

#endif /* TANDEM_REDISCMD_H */
