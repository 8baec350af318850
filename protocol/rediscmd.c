/*
 * rediscmd.c - the Redis command table and the argument checks that refine
 * it.  See rediscmd.h.
 *
 * The table started from a live redis-server 7.0's COMMAND output (arity,
 * legacy key positions, flags, ACL categories, the nondeterministic_output
 * and nondeterministic_output_order tips) and then got tandem's policy:
 *
 *   readonly -> READ, write -> WRITE; admin/introspection (CONFIG, INFO,
 *   CLIENT LIST, COMMAND, SLOWLOG, CLUSTER, *|HELP ...) -> ADMIN | NO_MIRROR:
 *   the primary answers, the shadow's configuration is not tandem's to change;
 *   blocking commands -> BLOCKING | NO_MIRROR (DESIGN: pinned to the primary,
 *   unmirrored; note BLPOP & co. pop on the primary only, so the shadow's list
 *   keeps the element: mirroring the reply-derived LPOP would fix that);
 *   SELECT, CLIENT SETNAME/SETINFO -> SESSION, mirrored (replayed on re-attach);
 *   AUTH, HELLO, QUIT, RESET, CLIENT REPLY/TRACKING/CACHING -> SESSION |
 *   NO_MIRROR (tandem logs in to the shadow itself; CLIENT REPLY OFF/SKIP
 *   means the primary sends no reply, which the session must account for);
 *   SUBSCRIBE & co. -> SESSION | PUBSUB | NO_MIRROR;
 *   PUBLISH/SPUBLISH -> WRITE | PUBSUB | NONDET, mirrored: subscribers
 *   pinned to the old primary keep receiving after a cutover, and the
 *   receiver count in the reply naturally differs;
 *   EVAL/EVALSHA/FCALL -> WRITE, the _RO forms READ; SCRIPT LOAD/FLUSH and
 *   FUNCTION LOAD/DELETE/FLUSH/RESTORE -> WRITE so EVALSHA/FCALL work on the
 *   shadow; FLUSHALL/FLUSHDB/SWAPDB -> WRITE;
 *   MIGRATE -> WRITE | NO_MIRROR (the shadow must not push keys to the
 *   primary's target; it keeps them);
 *   TTL/PTTL/EXPIRETIME/PEXPIRETIME (and 7.4 HTTL...) -> TTL_REPLY instead
 *   of NONDET: equal up to drift;
 *   SPOP, XADD '*' -> WRITE | NONDET: mirrored, they pick different members /
 *   IDs on the shadow (rewriting the mirror from the primary's reply is the
 *   caller's business);
 *   NONDET says why (the noise reason, rediscmd_noise_reason): LOC for the
 *   server's identity (INFO, CLIENT ID/INFO/LIST, LASTSAVE, WAIT, PUBLISH's
 *   receivers, CLUSTER), PHY for its memory layout and statistics (OBJECT,
 *   MEMORY, DEBUG, DUMP, LATENCY, SLOWLOG, SCAN cursors, XTRIM's ~), plain
 *   ND for chance and clocks (RANDOMKEY, SRANDMEMBER, SPOP, TIME, XADD);
 *   DBSIZE stays compared: on equal data it is equal, and a different key
 *   count is the plainest sign of lost writes (keys expiring at different
 *   moments can make it differ briefly; that is what re-checks are for).
 *
 * Coverage check against the real server (run by hand; no unit test needs
 * a server):
 *   redis-server --port 0 --unixsocket /tmp/r.sock --save '' &
 *   redis-cli -s /tmp/r.sock COMMAND LIST | sort > /tmp/server.txt
 *   grep -o '^ *CMDX\?("[^"]*"' protocol/rediscmd.c | cut -d'"' -f2 | sort > /tmp/table.txt
 *   comm -23 /tmp/server.txt /tmp/table.txt     # must print nothing
 */
#include "protocol/rediscmd.h"

#include <pthread.h>
#include <string.h>

#define R REDISCMD_READ
#define W REDISCMD_WRITE
#define A REDISCMD_ADMIN
#define S REDISCMD_SESSION
#define T REDISCMD_TX
#define BLK REDISCMD_BLOCKING
#define PS REDISCMD_PUBSUB
#define NOM REDISCMD_NO_MIRROR
#define UNO REDISCMD_UNORDERED
#define ND REDISCMD_NONDET
#define TTL REDISCMD_TTL_REPLY
#define MK REDISCMD_MOVABLE_KEYS
#define NA REDISCMD_NO_AUTH
#define SUB REDISCMD_CONTAINER
#define BOPT REDISCMD_BLOCK_OPT
#define SOPT REDISCMD_STORE_OPT
#define LOC (REDISCMD_NONDET | REDISCMD_LOCAL)
#define PHY (REDISCMD_NONDET | REDISCMD_PHYSICAL)

#define CMD(name, arity, fk, lk, st, fl)                                                     \
    {name, arity, fk, lk, st, REDISCMD_KEYS_FIXED, REDISCMD_REPLY_ORDERED, fl}
#define CMDX(name, arity, fk, lk, st, fl, keys, reply)                                       \
    {name, arity, fk, lk, st, REDISCMD_KEYS_##keys, REDISCMD_REPLY_##reply, fl}

/* Sorted by name, bytewise (the unit test checks). */
static const struct rediscmd table[] = {
    CMD("acl",                      -2,  0,  0, 0, A | NOM | SUB),
    CMD("acl|cat",                  -2,  0,  0, 0, A | NOM),
    CMD("acl|deluser",              -3,  0,  0, 0, A | NOM),
    CMD("acl|dryrun",               -4,  0,  0, 0, A | NOM),
    CMD("acl|genpass",              -2,  0,  0, 0, A | NOM),
    CMD("acl|getuser",               3,  0,  0, 0, A | NOM),
    CMD("acl|help",                  2,  0,  0, 0, A | NOM),
    CMD("acl|list",                  2,  0,  0, 0, A | NOM),
    CMD("acl|load",                  2,  0,  0, 0, A | NOM),
    CMD("acl|log",                  -2,  0,  0, 0, A | NOM),
    CMD("acl|save",                  2,  0,  0, 0, A | NOM),
    CMD("acl|setuser",              -3,  0,  0, 0, A | NOM),
    CMD("acl|users",                 2,  0,  0, 0, A | NOM),
    CMD("acl|whoami",                2,  0,  0, 0, A | NOM),
    CMD("append",                    3,  1,  1, 1, W),
    CMD("asking",                    1,  0,  0, 0, S | NOM),
    CMD("auth",                     -2,  0,  0, 0, S | NOM | NA),
    CMD("bgrewriteaof",              1,  0,  0, 0, A | NOM),
    CMD("bgsave",                   -1,  0,  0, 0, A | NOM),
    CMD("bitcount",                 -2,  1,  1, 1, R),
    CMD("bitfield",                 -2,  1,  1, 1, W),
    CMD("bitfield_ro",              -2,  1,  1, 1, R),
    CMD("bitop",                    -4,  2, -1, 1, W),
    CMD("bitpos",                   -3,  1,  1, 1, R),
    CMD("blmove",                    6,  1,  2, 1, W | BLK | NOM),
    CMDX("blmpop",                   -5,  0,  0, 0, W | BLK | NOM | MK, NUMKEYS_2, ORDERED),
    CMD("blpop",                    -3,  1, -2, 1, W | BLK | NOM),
    CMD("brpop",                    -3,  1, -2, 1, W | BLK | NOM),
    CMD("brpoplpush",                4,  1,  2, 1, W | BLK | NOM),
    CMDX("bzmpop",                   -5,  0,  0, 0, W | BLK | NOM | MK, NUMKEYS_2, ORDERED),
    CMD("bzpopmax",                 -3,  1, -2, 1, W | BLK | NOM),
    CMD("bzpopmin",                 -3,  1, -2, 1, W | BLK | NOM),
    CMD("client",                   -2,  0,  0, 0, A | NOM | SUB),
    CMD("client|caching",            3,  0,  0, 0, S | NOM),
    CMD("client|getname",            2,  0,  0, 0, A | NOM),
    CMD("client|getredir",           2,  0,  0, 0, A | NOM),
    CMD("client|help",               2,  0,  0, 0, A | NOM),
    CMD("client|id",                 2,  0,  0, 0, A | NOM | LOC),
    CMD("client|info",               2,  0,  0, 0, A | NOM | LOC),
    CMD("client|kill",              -3,  0,  0, 0, A | NOM),
    CMD("client|list",              -2,  0,  0, 0, A | NOM | LOC),
    CMD("client|no-evict",           3,  0,  0, 0, S | NOM),
    CMD("client|no-touch",           3,  0,  0, 0, S),
    CMD("client|pause",             -3,  0,  0, 0, A | NOM),
    CMD("client|reply",              3,  0,  0, 0, S | NOM),
    CMD("client|setinfo",            4,  0,  0, 0, S),
    CMD("client|setname",            3,  0,  0, 0, S),
    CMD("client|tracking",          -3,  0,  0, 0, S | NOM),
    CMD("client|trackinginfo",       2,  0,  0, 0, A | NOM),
    CMD("client|unblock",           -3,  0,  0, 0, A | NOM),
    CMD("client|unpause",            2,  0,  0, 0, A | NOM),
    CMD("cluster",                  -2,  0,  0, 0, A | NOM | SUB),
    CMD("cluster|addslots",         -3,  0,  0, 0, A | NOM),
    CMD("cluster|addslotsrange",    -4,  0,  0, 0, A | NOM),
    CMD("cluster|bumpepoch",         2,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|count-failure-reports",   3,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|countkeysinslot",   3,  0,  0, 0, A | NOM),
    CMD("cluster|delslots",         -3,  0,  0, 0, A | NOM),
    CMD("cluster|delslotsrange",    -4,  0,  0, 0, A | NOM),
    CMD("cluster|failover",         -2,  0,  0, 0, A | NOM),
    CMD("cluster|flushslots",        2,  0,  0, 0, A | NOM),
    CMD("cluster|forget",            3,  0,  0, 0, A | NOM),
    CMD("cluster|getkeysinslot",     4,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|help",              2,  0,  0, 0, A | NOM),
    CMD("cluster|info",              2,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|keyslot",           3,  0,  0, 0, A | NOM),
    CMD("cluster|links",             2,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|meet",             -4,  0,  0, 0, A | NOM),
    CMD("cluster|myid",              2,  0,  0, 0, A | NOM),
    CMD("cluster|myshardid",         2,  0,  0, 0, A | NOM),
    CMD("cluster|nodes",             2,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|replicas",          3,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|replicate",         3,  0,  0, 0, A | NOM),
    CMD("cluster|reset",            -2,  0,  0, 0, A | NOM),
    CMD("cluster|saveconfig",        2,  0,  0, 0, A | NOM),
    CMD("cluster|set-config-epoch",   3,  0,  0, 0, A | NOM),
    CMD("cluster|setslot",          -4,  0,  0, 0, A | NOM),
    CMD("cluster|shards",            2,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|slaves",            3,  0,  0, 0, A | NOM | LOC),
    CMD("cluster|slots",             2,  0,  0, 0, A | NOM | LOC),
    CMDX("command",                  -1,  0,  0, 0, A | NOM | UNO | SUB, FIXED, SET),
    CMD("command|count",             2,  0,  0, 0, A | NOM),
    CMDX("command|docs",             -2,  0,  0, 0, A | NOM | UNO, FIXED, PAIRS),
    CMD("command|getkeys",          -4,  0,  0, 0, A | NOM),
    CMD("command|getkeysandflags",  -4,  0,  0, 0, A | NOM),
    CMD("command|help",              2,  0,  0, 0, A | NOM),
    CMDX("command|info",             -2,  0,  0, 0, A | NOM | UNO, FIXED, SET),
    CMDX("command|list",             -2,  0,  0, 0, A | NOM | UNO, FIXED, SET),
    CMD("config",                   -2,  0,  0, 0, A | NOM | SUB),
    CMDX("config|get",               -3,  0,  0, 0, A | NOM | UNO, FIXED, PAIRS),
    CMD("config|help",               2,  0,  0, 0, A | NOM),
    CMD("config|resetstat",          2,  0,  0, 0, A | NOM),
    CMD("config|rewrite",            2,  0,  0, 0, A | NOM),
    CMD("config|set",               -4,  0,  0, 0, A | NOM),
    CMD("copy",                     -3,  1,  2, 1, W),
    CMD("dbsize",                    1,  0,  0, 0, R),
    CMD("debug",                    -2,  0,  0, 0, A | NOM | PHY),
    CMD("decr",                      2,  1,  1, 1, W),
    CMD("decrby",                    3,  1,  1, 1, W),
    CMD("del",                      -2,  1, -1, 1, W),
    CMD("discard",                   1,  0,  0, 0, T),
    CMD("dump",                      2,  1,  1, 1, R | PHY),
    CMD("echo",                      2,  0,  0, 0, R),
    CMDX("eval",                     -3,  0,  0, 0, W | MK, NUMKEYS_2, ORDERED),
    CMDX("eval_ro",                  -3,  0,  0, 0, R | MK, NUMKEYS_2, ORDERED),
    CMDX("evalsha",                  -3,  0,  0, 0, W | MK, NUMKEYS_2, ORDERED),
    CMDX("evalsha_ro",               -3,  0,  0, 0, R | MK, NUMKEYS_2, ORDERED),
    CMD("exec",                      1,  0,  0, 0, T),
    CMD("exists",                   -2,  1, -1, 1, R),
    CMD("expire",                   -3,  1,  1, 1, W),
    CMD("expireat",                 -3,  1,  1, 1, W),
    CMD("expiretime",                2,  1,  1, 1, R | TTL),
    CMD("failover",                 -1,  0,  0, 0, A | NOM),
    CMDX("fcall",                    -3,  0,  0, 0, W | MK, NUMKEYS_2, ORDERED),
    CMDX("fcall_ro",                 -3,  0,  0, 0, R | MK, NUMKEYS_2, ORDERED),
    CMD("flushall",                 -1,  0,  0, 0, W),
    CMD("flushdb",                  -1,  0,  0, 0, W),
    CMD("function",                 -2,  0,  0, 0, W | SUB),
    CMD("function|delete",           3,  0,  0, 0, W),
    CMD("function|dump",             2,  0,  0, 0, R | PHY),
    CMD("function|flush",           -2,  0,  0, 0, W),
    CMD("function|help",             2,  0,  0, 0, A | NOM),
    CMD("function|kill",             2,  0,  0, 0, A | NOM),
    CMDX("function|list",            -2,  0,  0, 0, R | UNO, FIXED, SET),
    CMD("function|load",            -3,  0,  0, 0, W),
    CMD("function|restore",         -3,  0,  0, 0, W),
    CMD("function|stats",            2,  0,  0, 0, A | NOM | LOC),
    CMD("geoadd",                   -5,  1,  1, 1, W),
    CMD("geodist",                  -4,  1,  1, 1, R),
    CMD("geohash",                  -2,  1,  1, 1, R),
    CMD("geopos",                   -2,  1,  1, 1, R),
    CMD("georadius",                -6,  1,  1, 1, W | MK | SOPT),
    CMD("georadius_ro",             -6,  1,  1, 1, R),
    CMD("georadiusbymember",        -5,  1,  1, 1, W | MK | SOPT),
    CMD("georadiusbymember_ro",     -5,  1,  1, 1, R),
    CMD("geosearch",                -7,  1,  1, 1, R),
    CMD("geosearchstore",           -8,  1,  2, 1, W),
    CMD("get",                       2,  1,  1, 1, R),
    CMD("getbit",                    3,  1,  1, 1, R),
    CMD("getdel",                    2,  1,  1, 1, W),
    CMD("getex",                    -2,  1,  1, 1, W),
    CMD("getrange",                  4,  1,  1, 1, R),
    CMD("getset",                    3,  1,  1, 1, W),
    CMD("hdel",                     -3,  1,  1, 1, W),
    CMD("hello",                    -1,  0,  0, 0, S | NOM | NA),
    CMD("hexists",                   3,  1,  1, 1, R),
    CMD("hexpire",                  -6,  1,  1, 1, W),
    CMD("hexpireat",                -6,  1,  1, 1, W),
    CMD("hexpiretime",              -5,  1,  1, 1, R | TTL),
    CMD("hget",                      3,  1,  1, 1, R),
    CMDX("hgetall",                   2,  1,  1, 1, R | UNO, FIXED, PAIRS),
    CMD("hincrby",                   4,  1,  1, 1, W),
    CMD("hincrbyfloat",              4,  1,  1, 1, W),
    CMDX("hkeys",                     2,  1,  1, 1, R | UNO, FIXED, SET),
    CMD("hlen",                      2,  1,  1, 1, R),
    CMD("hmget",                    -3,  1,  1, 1, R),
    CMD("hmset",                    -4,  1,  1, 1, W),
    CMD("hpersist",                 -5,  1,  1, 1, W),
    CMD("hpexpire",                 -6,  1,  1, 1, W),
    CMD("hpexpireat",               -6,  1,  1, 1, W),
    CMD("hpexpiretime",             -5,  1,  1, 1, R | TTL),
    CMD("hpttl",                    -5,  1,  1, 1, R | TTL),
    CMDX("hrandfield",               -2,  1,  1, 1, R | UNO | ND, FIXED, RANDOM_FIELDS),
    CMDX("hscan",                    -3,  1,  1, 1, R | UNO | PHY, FIXED, SCAN_PAIRS),
    CMD("hset",                     -4,  1,  1, 1, W),
    CMD("hsetnx",                    4,  1,  1, 1, W),
    CMD("hstrlen",                   3,  1,  1, 1, R),
    CMD("httl",                     -5,  1,  1, 1, R | TTL),
    CMDX("hvals",                     2,  1,  1, 1, R | UNO, FIXED, SET),
    CMD("incr",                      2,  1,  1, 1, W),
    CMD("incrby",                    3,  1,  1, 1, W),
    CMD("incrbyfloat",               3,  1,  1, 1, W),
    CMD("info",                     -1,  0,  0, 0, A | NOM | LOC),
    CMDX("keys",                      2,  0,  0, 0, R | UNO, FIXED, SET),
    CMD("lastsave",                  1,  0,  0, 0, A | NOM | LOC),
    CMD("latency",                  -2,  0,  0, 0, A | NOM | SUB),
    CMD("latency|doctor",            2,  0,  0, 0, A | NOM | PHY),
    CMD("latency|graph",             3,  0,  0, 0, A | NOM | PHY),
    CMD("latency|help",              2,  0,  0, 0, A | NOM),
    CMD("latency|histogram",        -2,  0,  0, 0, A | NOM | PHY),
    CMD("latency|history",           3,  0,  0, 0, A | NOM | PHY),
    CMD("latency|latest",            2,  0,  0, 0, A | NOM | PHY),
    CMD("latency|reset",            -2,  0,  0, 0, A | NOM),
    CMD("lcs",                      -3,  1,  2, 1, R),
    CMD("lindex",                    3,  1,  1, 1, R),
    CMD("linsert",                   5,  1,  1, 1, W),
    CMD("llen",                      2,  1,  1, 1, R),
    CMD("lmove",                     5,  1,  2, 1, W),
    CMDX("lmpop",                    -4,  0,  0, 0, W | MK, NUMKEYS_1, ORDERED),
    CMD("lolwut",                   -1,  0,  0, 0, R | LOC),
    CMD("lpop",                     -2,  1,  1, 1, W),
    CMD("lpos",                     -3,  1,  1, 1, R),
    CMD("lpush",                    -3,  1,  1, 1, W),
    CMD("lpushx",                   -3,  1,  1, 1, W),
    CMD("lrange",                    4,  1,  1, 1, R),
    CMD("lrem",                      4,  1,  1, 1, W),
    CMD("lset",                      4,  1,  1, 1, W),
    CMD("ltrim",                     4,  1,  1, 1, W),
    CMD("memory",                   -2,  0,  0, 0, A | NOM | SUB),
    CMD("memory|doctor",             2,  0,  0, 0, A | NOM | PHY),
    CMD("memory|help",               2,  0,  0, 0, A | NOM),
    CMD("memory|malloc-stats",       2,  0,  0, 0, A | NOM | PHY),
    CMD("memory|purge",              2,  0,  0, 0, A | NOM),
    CMD("memory|stats",              2,  0,  0, 0, A | NOM | PHY),
    CMD("memory|usage",             -3,  2,  2, 1, R | PHY),
    CMD("mget",                     -2,  1, -1, 1, R),
    CMDX("migrate",                  -6,  3,  3, 1, W | NOM | ND | MK, MIGRATE, ORDERED),
    CMD("module",                   -2,  0,  0, 0, A | NOM | SUB),
    CMD("module|help",               2,  0,  0, 0, A | NOM),
    CMDX("module|list",               2,  0,  0, 0, A | NOM | UNO, FIXED, SET),
    CMD("module|load",              -3,  0,  0, 0, A | NOM),
    CMD("module|loadex",            -3,  0,  0, 0, A | NOM),
    CMD("module|unload",             3,  0,  0, 0, A | NOM),
    CMD("monitor",                   1,  0,  0, 0, A | NOM),
    CMD("move",                      3,  1,  1, 1, W),
    CMD("mset",                     -3,  1, -1, 2, W),
    CMD("msetnx",                   -3,  1, -1, 2, W),
    CMD("multi",                     1,  0,  0, 0, T),
    CMD("object",                   -2,  0,  0, 0, A | NOM | SUB),
    CMD("object|encoding",           3,  2,  2, 1, R | PHY),
    CMD("object|freq",               3,  2,  2, 1, R | PHY),
    CMD("object|help",               2,  0,  0, 0, A | NOM),
    CMD("object|idletime",           3,  2,  2, 1, R | PHY),
    CMD("object|refcount",           3,  2,  2, 1, R | PHY),
    CMD("persist",                   2,  1,  1, 1, W),
    CMD("pexpire",                  -3,  1,  1, 1, W),
    CMD("pexpireat",                -3,  1,  1, 1, W),
    CMD("pexpiretime",               2,  1,  1, 1, R | TTL),
    CMD("pfadd",                    -2,  1,  1, 1, W),
    CMD("pfcount",                  -2,  1, -1, 1, R),
    CMD("pfdebug",                   3,  2,  2, 1, A | NOM),
    CMD("pfmerge",                  -2,  1, -1, 1, W),
    CMD("pfselftest",                1,  0,  0, 0, A | NOM),
    CMD("ping",                     -1,  0,  0, 0, R),
    CMD("psetex",                    4,  1,  1, 1, W),
    CMD("psubscribe",               -2,  0,  0, 0, S | PS | NOM),
    CMD("psync",                    -3,  0,  0, 0, A | NOM),
    CMD("pttl",                      2,  1,  1, 1, R | TTL),
    CMD("publish",                   3,  0,  0, 0, W | PS | LOC),
    CMD("pubsub",                   -2,  0,  0, 0, A | NOM | SUB),
    CMDX("pubsub|channels",          -2,  0,  0, 0, A | PS | NOM | UNO, FIXED, SET),
    CMD("pubsub|help",               2,  0,  0, 0, A | PS | NOM),
    CMD("pubsub|numpat",             2,  0,  0, 0, A | PS | NOM),
    CMD("pubsub|numsub",            -2,  0,  0, 0, A | PS | NOM),
    CMDX("pubsub|shardchannels",     -2,  0,  0, 0, A | PS | NOM | UNO, FIXED, SET),
    CMD("pubsub|shardnumsub",       -2,  0,  0, 0, A | PS | NOM),
    CMD("punsubscribe",             -1,  0,  0, 0, S | PS | NOM),
    CMD("quit",                     -1,  0,  0, 0, S | NOM | NA),
    CMD("randomkey",                 1,  0,  0, 0, R | ND),
    CMD("readonly",                  1,  0,  0, 0, S | NOM),
    CMD("readwrite",                 1,  0,  0, 0, S | NOM),
    CMD("rename",                    3,  1,  2, 1, W),
    CMD("renamenx",                  3,  1,  2, 1, W),
    CMD("replconf",                 -1,  0,  0, 0, A | NOM),
    CMD("replicaof",                 3,  0,  0, 0, A | NOM),
    CMD("reset",                     1,  0,  0, 0, S | NOM | NA),
    CMD("restore",                  -4,  1,  1, 1, W),
    CMD("restore-asking",           -4,  1,  1, 1, W),
    CMD("role",                      1,  0,  0, 0, A | NOM),
    CMD("rpop",                     -2,  1,  1, 1, W),
    CMD("rpoplpush",                 3,  1,  2, 1, W),
    CMD("rpush",                    -3,  1,  1, 1, W),
    CMD("rpushx",                   -3,  1,  1, 1, W),
    CMD("sadd",                     -3,  1,  1, 1, W),
    CMD("save",                      1,  0,  0, 0, A | NOM),
    CMDX("scan",                     -2,  0,  0, 0, R | UNO | PHY, FIXED, SCAN_SET),
    CMD("scard",                     2,  1,  1, 1, R),
    CMD("script",                   -2,  0,  0, 0, W | SUB),
    CMD("script|debug",              3,  0,  0, 0, A | NOM),
    CMD("script|exists",            -3,  0,  0, 0, R),
    CMD("script|flush",             -2,  0,  0, 0, W),
    CMD("script|help",               2,  0,  0, 0, A | NOM),
    CMD("script|kill",               2,  0,  0, 0, A | NOM),
    CMD("script|load",               3,  0,  0, 0, W),
    CMDX("sdiff",                    -2,  1, -1, 1, R | UNO, FIXED, SET),
    CMD("sdiffstore",               -3,  1, -1, 1, W),
    CMD("select",                    2,  0,  0, 0, S),
    CMD("set",                      -3,  1,  1, 1, W),
    CMD("setbit",                    4,  1,  1, 1, W),
    CMD("setex",                     4,  1,  1, 1, W),
    CMD("setnx",                     3,  1,  1, 1, W),
    CMD("setrange",                  4,  1,  1, 1, W),
    CMD("shutdown",                 -1,  0,  0, 0, A | NOM),
    CMDX("sinter",                   -2,  1, -1, 1, R | UNO, FIXED, SET),
    CMDX("sintercard",               -3,  0,  0, 0, R | MK, NUMKEYS_1, ORDERED),
    CMD("sinterstore",              -3,  1, -1, 1, W),
    CMD("sismember",                 3,  1,  1, 1, R),
    CMD("slaveof",                   3,  0,  0, 0, A | NOM),
    CMD("slowlog",                  -2,  0,  0, 0, A | NOM | SUB),
    CMD("slowlog|get",              -2,  0,  0, 0, A | NOM | PHY),
    CMD("slowlog|help",              2,  0,  0, 0, A | NOM),
    CMD("slowlog|len",               2,  0,  0, 0, A | NOM | PHY),
    CMD("slowlog|reset",             2,  0,  0, 0, A | NOM),
    CMDX("smembers",                  2,  1,  1, 1, R | UNO, FIXED, SET),
    CMD("smismember",               -3,  1,  1, 1, R),
    CMD("smove",                     4,  1,  2, 1, W),
    CMD("sort",                     -2,  1,  1, 1, W | MK | SOPT),
    CMD("sort_ro",                  -2,  1,  1, 1, R | MK),
    CMDX("spop",                     -2,  1,  1, 1, W | UNO | ND, FIXED, SET_IF_COUNT),
    CMD("spublish",                  3,  1,  1, 1, W | PS | LOC),
    CMDX("srandmember",              -2,  1,  1, 1, R | UNO | ND, FIXED, SET_IF_COUNT),
    CMD("srem",                     -3,  1,  1, 1, W),
    CMDX("sscan",                    -3,  1,  1, 1, R | UNO | PHY, FIXED, SCAN_SET),
    CMD("ssubscribe",               -2,  1, -1, 1, S | PS | NOM),
    CMD("strlen",                    2,  1,  1, 1, R),
    CMD("subscribe",                -2,  0,  0, 0, S | PS | NOM),
    CMD("substr",                    4,  1,  1, 1, R),
    CMDX("sunion",                   -2,  1, -1, 1, R | UNO, FIXED, SET),
    CMD("sunionstore",              -3,  1, -1, 1, W),
    CMD("sunsubscribe",             -1,  1, -1, 1, S | PS | NOM),
    CMD("swapdb",                    3,  0,  0, 0, W),
    CMD("sync",                      1,  0,  0, 0, A | NOM),
    CMD("time",                      1,  0,  0, 0, R | ND),
    CMD("touch",                    -2,  1, -1, 1, R),
    CMD("ttl",                       2,  1,  1, 1, R | TTL),
    CMD("type",                      2,  1,  1, 1, R),
    CMD("unlink",                   -2,  1, -1, 1, W),
    CMD("unsubscribe",              -1,  0,  0, 0, S | PS | NOM),
    CMD("unwatch",                   1,  0,  0, 0, T),
    CMD("wait",                      3,  0,  0, 0, A | BLK | NOM | LOC),
    CMD("waitaof",                   4,  0,  0, 0, A | BLK | NOM | LOC),
    CMD("watch",                    -2,  1, -1, 1, T),
    CMD("xack",                     -4,  1,  1, 1, W),
    CMD("xadd",                     -5,  1,  1, 1, W | ND),
    CMD("xautoclaim",               -6,  1,  1, 1, W | ND),
    CMD("xclaim",                   -6,  1,  1, 1, W | ND),
    CMD("xdel",                     -3,  1,  1, 1, W),
    CMD("xgroup",                   -2,  0,  0, 0, W | SUB),
    CMD("xgroup|create",            -5,  2,  2, 1, W),
    CMD("xgroup|createconsumer",     5,  2,  2, 1, W),
    CMD("xgroup|delconsumer",        5,  2,  2, 1, W),
    CMD("xgroup|destroy",            4,  2,  2, 1, W),
    CMD("xgroup|help",               2,  0,  0, 0, A | NOM),
    CMD("xgroup|setid",             -5,  2,  2, 1, W),
    CMD("xinfo",                    -2,  0,  0, 0, A | NOM | SUB),
    CMD("xinfo|consumers",           4,  2,  2, 1, R | ND),
    CMD("xinfo|groups",              3,  2,  2, 1, R),
    CMD("xinfo|help",                2,  0,  0, 0, A | NOM),
    CMD("xinfo|stream",             -3,  2,  2, 1, R),
    CMD("xlen",                      2,  1,  1, 1, R),
    CMD("xpending",                 -3,  1,  1, 1, R | ND),
    CMD("xrange",                   -4,  1,  1, 1, R),
    CMDX("xread",                    -4,  0,  0, 0, R | MK | BOPT, STREAMS, ORDERED),
    CMDX("xreadgroup",               -7,  0,  0, 0, W | MK | BOPT, STREAMS, ORDERED),
    CMD("xrevrange",                -4,  1,  1, 1, R),
    CMD("xsetid",                   -3,  1,  1, 1, W),
    CMD("xtrim",                    -4,  1,  1, 1, W | PHY),
    CMD("zadd",                     -4,  1,  1, 1, W),
    CMD("zcard",                     2,  1,  1, 1, R),
    CMD("zcount",                    4,  1,  1, 1, R),
    CMDX("zdiff",                    -3,  0,  0, 0, R | MK, NUMKEYS_1, ORDERED),
    CMD("zdiffstore",               -4,  1,  1, 1, W | MK),
    CMD("zincrby",                   4,  1,  1, 1, W),
    CMDX("zinter",                   -3,  0,  0, 0, R | MK, NUMKEYS_1, ORDERED),
    CMDX("zintercard",               -3,  0,  0, 0, R | MK, NUMKEYS_1, ORDERED),
    CMD("zinterstore",              -4,  1,  1, 1, W | MK),
    CMD("zlexcount",                 4,  1,  1, 1, R),
    CMDX("zmpop",                    -4,  0,  0, 0, W | MK, NUMKEYS_1, ORDERED),
    CMD("zmscore",                  -3,  1,  1, 1, R),
    CMD("zpopmax",                  -2,  1,  1, 1, W),
    CMD("zpopmin",                  -2,  1,  1, 1, W),
    CMDX("zrandmember",              -2,  1,  1, 1, R | UNO | ND, FIXED, RANDOM_FIELDS),
    CMD("zrange",                   -4,  1,  1, 1, R),
    CMD("zrangebylex",              -4,  1,  1, 1, R),
    CMD("zrangebyscore",            -4,  1,  1, 1, R),
    CMD("zrangestore",              -5,  1,  2, 1, W),
    CMD("zrank",                     3,  1,  1, 1, R),
    CMD("zrem",                     -3,  1,  1, 1, W),
    CMD("zremrangebylex",            4,  1,  1, 1, W),
    CMD("zremrangebyrank",           4,  1,  1, 1, W),
    CMD("zremrangebyscore",          4,  1,  1, 1, W),
    CMD("zrevrange",                -4,  1,  1, 1, R),
    CMD("zrevrangebylex",           -4,  1,  1, 1, R),
    CMD("zrevrangebyscore",         -4,  1,  1, 1, R),
    CMD("zrevrank",                  3,  1,  1, 1, R),
    CMDX("zscan",                    -3,  1,  1, 1, R | UNO | PHY, FIXED, SCAN_PAIRS),
    CMD("zscore",                    3,  1,  1, 1, R),
    CMDX("zunion",                   -3,  0,  0, 0, R | MK, NUMKEYS_1, ORDERED),
    CMD("zunionstore",              -4,  1,  1, 1, W | MK),
};

#undef R
#undef W
#undef A
#undef S
#undef T
#undef BLK
#undef PS
#undef NOM
#undef UNO
#undef ND
#undef TTL
#undef MK
#undef NA
#undef SUB
#undef BOPT
#undef SOPT
#undef CMD
#undef CMDX

#define TABLE_LEN (sizeof(table) / sizeof(table[0]))

/* Longest name, "cluster|count-failure-reports", is 29 bytes. */
#define NAME_MAX_LEN 48

const struct rediscmd *
rediscmd_table(size_t *count)
{
    *count = TABLE_LEN;
    return table;
}

static uint8_t
lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? (uint8_t)(c + 32) : c;
}

/* Compare the (lowercased) query with a table name, bytewise. */
static int
name_cmp(const uint8_t *q, size_t qlen, const char *name)
{
    const uint8_t *n = (const uint8_t *)name;
    size_t i = 0;
    for (; i < qlen && n[i] != '\0'; i++) {
        uint8_t c = lower(q[i]);
        if (c != n[i])
            return c < n[i] ? -1 : 1;
    }
    if (i == qlen)
        return n[i] == '\0' ? 0 : -1;
    return 1;
}

/*
 * A hash index over the table, built once per process: a lookup is one
 * FNV-1a of the lowercased name and mostly one comparison, where a binary
 * search made eight (it was the request path's largest cost after framing).
 * Open addressing, linear probing, at most half full.
 */
#define INDEX_SLOTS 1024
_Static_assert(TABLE_LEN * 2 <= INDEX_SLOTS, "the command index is too small");
static uint16_t index_slots[INDEX_SLOTS]; /* table position + 1; 0: empty */
static pthread_once_t index_once = PTHREAD_ONCE_INIT;

static uint32_t
name_hash(const uint8_t *q, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++)
        h = (h ^ lower(q[i])) * 16777619u;
    return h & (INDEX_SLOTS - 1);
}

static void
index_build(void)
{
    for (size_t i = 0; i < TABLE_LEN; i++) {
        uint32_t h = name_hash((const uint8_t *)table[i].name, strlen(table[i].name));
        while (index_slots[h] != 0)
            h = (h + 1) & (INDEX_SLOTS - 1);
        index_slots[h] = (uint16_t)(i + 1);
    }
}

static const struct rediscmd *
find(const uint8_t *name, size_t len)
{
    pthread_once(&index_once, index_build);
    for (uint32_t h = name_hash(name, len); index_slots[h] != 0; h = (h + 1) & (INDEX_SLOTS - 1)) {
        const struct rediscmd *c = &table[index_slots[h] - 1];
        if (name_cmp(name, len, c->name) == 0)
            return c;
    }
    return NULL;
}

const struct rediscmd *
rediscmd_find(const char *name, size_t len)
{
    return find((const uint8_t *)name, len);
}

const struct rediscmd *
rediscmd_lookup(size_t argc, const struct resp_arg *argv)
{
    if (argc == 0)
        return NULL;
    uint8_t name[NAME_MAX_LEN + 1];
    size_t n = resp_arg_decode(&argv[0], name, NAME_MAX_LEN);
    /* "client|setname" names a table entry, but Redis knows no such command */
    if (n > NAME_MAX_LEN || memchr(name, '|', n) != NULL)
        return NULL;
    const struct rediscmd *cmd = find(name, n);
    if (cmd == NULL || !(cmd->flags & REDISCMD_CONTAINER) || argc < 2)
        return cmd;
    name[n] = '|';
    size_t room = NAME_MAX_LEN - (n + 1);
    size_t m = resp_arg_decode(&argv[1], name + n + 1, room);
    if (m > room)
        return cmd;
    const struct rediscmd *sub = find(name, n + 1 + m);
    return sub != NULL ? sub : cmd;
}

/*
 * Options of SORT, GEORADIUS and XREAD/XREADGROUP.  scan_opts() walks
 * argv[from ...] skipping each known option's values and stops at the first
 * "stop" keyword, returning its index; -1 when there is none among all the
 * arguments, -2 when the walk ran past the kept arguments (unknown).
 */
struct opt {
    const char *word;
    int nvalues;    /* values after the keyword; -1 marks a stop keyword */
};

static long
scan_opts(size_t argc, const struct resp_arg *argv, size_t from, const struct opt *opts)
{
    size_t kept = argc < RESP_MAX_ARGS ? argc : RESP_MAX_ARGS;
    size_t i = from;
    while (i < argc) {
        if (i >= kept)
            return -2;
        size_t step = 1;
        for (const struct opt *o = opts; o->word != NULL; o++) {
            if (!resp_arg_equal_ci(&argv[i], o->word))
                continue;
            if (o->nvalues < 0)
                return (long)i;
            step += (size_t)o->nvalues;
            break;
        }
        i += step;
    }
    return -1;
}

static const struct opt sort_opts[] = {
    {"store", -1}, {"by", 1}, {"limit", 2}, {"get", 1}, {NULL, 0},
};
static const struct opt georadius_opts[] = {
    {"store", -1}, {"storedist", -1}, {"count", 1}, {NULL, 0},
};
static const struct opt block_opts[] = {
    {"block", -1}, {"streams", -1}, {"count", 1}, {"group", 2}, {NULL, 0},
};
static const struct opt streams_opts[] = {
    {"streams", -1}, {"count", 1}, {"block", 1}, {"group", 2}, {NULL, 0},
};
static const struct opt migrate_opts[] = {
    {"keys", -1}, {"auth", 1}, {"auth2", 2}, {NULL, 0},
};

/* Where SORT's / GEORADIUS's options start. */
static size_t
store_opts_from(const struct rediscmd *cmd)
{
    if (strcmp(cmd->name, "georadius") == 0)
        return 6;
    if (strcmp(cmd->name, "georadiusbymember") == 0)
        return 5;
    return 2;
}

static bool
has_block_option(size_t argc, const struct resp_arg *argv)
{
    long at = scan_opts(argc, argv, 1, block_opts);
    if (at == -2)
        return true;
    return at >= 0 && resp_arg_equal_ci(&argv[at], "block");
}

uint32_t
rediscmd_flags(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv)
{
    if (cmd == NULL)
        return REDISCMD_WRITE;
    uint32_t f = cmd->flags;
    if ((f & REDISCMD_BLOCK_OPT) && has_block_option(argc, argv))
        f |= REDISCMD_BLOCKING | REDISCMD_NO_MIRROR;
    if ((f & REDISCMD_STORE_OPT) &&
        scan_opts(argc, argv, store_opts_from(cmd),
                  strcmp(cmd->name, "sort") == 0 ? sort_opts : georadius_opts) == -1)
        f = (f & ~(uint32_t)REDISCMD_WRITE) | REDISCMD_READ;
    if ((cmd->reply == REDISCMD_REPLY_SET_IF_COUNT || cmd->reply == REDISCMD_REPLY_RANDOM_FIELDS) &&
        argc < 3)
        f &= ~(uint32_t)REDISCMD_UNORDERED;
    return f;
}

enum req_kind
rediscmd_kind(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv)
{
    uint32_t f = rediscmd_flags(cmd, argc, argv);
    if (f & REDISCMD_TX)
        return REQ_KIND_TX;
    if (f & REDISCMD_SESSION)
        return REQ_KIND_SESSION;
    if (f & REDISCMD_ADMIN)
        return REQ_KIND_ADMIN;
    if (f & REDISCMD_WRITE)
        return REQ_KIND_WRITE;
    if (f & REDISCMD_READ)
        return REQ_KIND_READ;
    return REQ_KIND_WRITE;
}

bool
rediscmd_is_blocking(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv)
{
    return (rediscmd_flags(cmd, argc, argv) & REDISCMD_BLOCKING) != 0;
}

/* A kept argument as a non-negative integer; -1 if it is not one. */
static long long
arg_count(size_t argc, const struct resp_arg *argv, size_t i)
{
    if (i >= argc || i >= RESP_MAX_ARGS)
        return -1;
    uint8_t buf[24];
    size_t n = resp_arg_decode(&argv[i], buf, sizeof(buf));
    if (n == 0 || n > 18)
        return -1;
    long long v = 0;
    for (size_t k = 0; k < n; k++) {
        if (buf[k] < '0' || buf[k] > '9')
            return -1;
        v = v * 10 + (buf[k] - '0');
    }
    return v;
}

/* i if it is a kept argument, else -1. */
static int
kept_index(size_t argc, long long i)
{
    size_t kept = argc < RESP_MAX_ARGS ? argc : RESP_MAX_ARGS;
    return i > 0 && (size_t)i < kept ? (int)i : -1;
}

int
rediscmd_first_key(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv)
{
    if (cmd == NULL)
        return -1;
    long at;
    switch (cmd->keys) {
    case REDISCMD_KEYS_NUMKEYS_1:
        return arg_count(argc, argv, 1) >= 1 ? kept_index(argc, 2) : -1;
    case REDISCMD_KEYS_NUMKEYS_2:
        return arg_count(argc, argv, 2) >= 1 ? kept_index(argc, 3) : -1;
    case REDISCMD_KEYS_STREAMS:
        at = scan_opts(argc, argv, 1, streams_opts);
        return at >= 0 ? kept_index(argc, at + 1) : -1;
    case REDISCMD_KEYS_MIGRATE:
        if (argc > 3 && argv[3].len > 0 && !(argv[3].quoted && resp_arg_decode(&argv[3], NULL, 0) == 0))
            return 3;
        at = scan_opts(argc, argv, 6, migrate_opts);
        return at >= 0 ? kept_index(argc, at + 1) : -1;
    default:
        return cmd->first_key > 0 ? kept_index(argc, cmd->first_key) : -1;
    }
}

enum resp_digest_mode
rediscmd_digest_mode(const struct rediscmd *cmd, size_t argc, const struct resp_arg *argv)
{
    if (cmd == NULL)
        return RESP_DIGEST_ORDERED;
    switch (cmd->reply) {
    case REDISCMD_REPLY_SET:
        return RESP_DIGEST_SET;
    case REDISCMD_REPLY_PAIRS:
        return RESP_DIGEST_PAIRS;
    case REDISCMD_REPLY_SCAN_SET:
        return RESP_DIGEST_SCAN_SET;
    case REDISCMD_REPLY_SCAN_PAIRS:
        return RESP_DIGEST_SCAN_PAIRS;
    case REDISCMD_REPLY_SET_IF_COUNT:
        return argc >= 3 ? RESP_DIGEST_SET : RESP_DIGEST_ORDERED;
    case REDISCMD_REPLY_RANDOM_FIELDS:
        if (argc >= 4 && argc <= RESP_MAX_ARGS &&
            (resp_arg_equal_ci(&argv[3], "withvalues") || resp_arg_equal_ci(&argv[3], "withscores")))
            return RESP_DIGEST_PAIRS;
        return argc >= 3 ? RESP_DIGEST_SET : RESP_DIGEST_ORDERED;
    default:
        return RESP_DIGEST_ORDERED;
    }
}

enum shadow_noise_reason
rediscmd_noise_reason(uint32_t flags)
{
    if (!(flags & REDISCMD_NONDET))
        return SHADOW_NOISE_NONE;
    if (flags & REDISCMD_LOCAL)
        return SHADOW_NOISE_SERVER_LOCAL;
    if (flags & REDISCMD_PHYSICAL)
        return SHADOW_NOISE_PHYSICAL;
    return SHADOW_NOISE_VOLATILE;
}

bool
rediscmd_arity_ok(const struct rediscmd *cmd, size_t argc)
{
    if (cmd->arity >= 0)
        return argc == (size_t)cmd->arity;
    return argc >= (size_t)-cmd->arity;
}

const char *
rediscmd_flag_name(uint32_t flag)
{
    switch (flag) {
#define X(id, bit, name)                                                                     \
    case REDISCMD_##id:                                                                      \
        return name;
        REDISCMD_FLAGS(X)
#undef X
    default:
        return NULL;
    }
}
