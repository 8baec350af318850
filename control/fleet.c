/*
 * fleet.c - the fleet's store on the main thread (see fleet.h, and
 * fleet_codec.h for the keys).
 *
 * One teardown path: whatever goes wrong with either connection calls
 * lost(), which only marks the link down and activates teardown_ev; the
 * contexts are freed there, outside any hiredis callback, and a reconnect
 * is scheduled.  Reply callbacks get NULL replies while a context is
 * freed and simply return.
 */
#include "control/fleet.h"

#include <errno.h>
#include <fcntl.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "control/fence.h"
#include "control/fence_redis.h"
#include "control/fleet_codec.h"
#include "control/runtime.h"
#include "control/state_file.h"
#include "control/tls_tunnel.h"
#include "metrics/log.h"
#include "metrics/metric.h"
#include "metrics/shadow.h"

#define HEARTBEAT_MS 1000
#define MEMBER_TTL_MS 5000     /* a member silent this long is no longer live */
#define STORE_SILENCE_MS 5000  /* no reply for this long: the store is lost */
#define XREAD_BLOCK_MS "1000"
#define XREAD_COUNT "100"
#define LOG_MAXLEN "10000"     /* approximate: entries kept in the stream */
#define BACKOFF_FIRST_MS 100
#define BACKOFF_MAX_MS 5000
#define PASSWORD_MAX 512
#define LEASE_MS 3000          /* new writes go on this long after the last renewal */
#define REPORT_EVERY 5         /* heartbeats between two publications of the shadow report */
#define REPORT_TOP "200"       /* statements a member publishes (the most mismatched) */
#define REPORT_TOP_N 200
#define REPORT_TTL_MS "15000"

enum link { LINK_DOWN, LINK_CONNECTING, LINK_UP };

/* The fleet's counters: one row each, name and help (tandem_fleet_<name>_total). */
#define FLEET_COUNTS(X)                                                                            \
    X(STORE_LOST, "store_lost", "Connections to the store lost (or never made), each retried")    \
    X(JOINED, "joins", "Times the member read the fleet's state (start and every reconnect)")      \
    X(APPLIED, "states_applied", "State versions of other members applied here")                  \
    X(PUBLISHED, "states_published", "This member's state changes sent to the store")            \
    X(REFUSED, "changes_refused", "Changes refused while the store was unreachable")              \
    X(COMMITTED, "operations_committed", "Fleet operations that flipped this member's roles")     \
    X(ABORTED, "operations_aborted", "Fleet operations aborted here, nothing swapped")            \
    X(FENCED, "fences", "Old primaries fenced by this member before a commit")                    \
    X(FENCE_FAILED, "fences_failed", "Fences that failed (the operation aborted)")                \
    X(UNFENCED, "fences_undone", "Fences undone after an operation aborted")

enum fleet_count {
#define FLEET_COUNT_ENUM(id, name, help) FLEET_COUNT_##id,
    FLEET_COUNTS(FLEET_COUNT_ENUM)
#undef FLEET_COUNT_ENUM
    FLEET_COUNT_MAX
};

struct fleet {
    struct event_base *base;
    const struct runtime *rt;
    struct state *state;
    struct cutover *cutover;
    struct conf_control conf; /* the store's address and names, as at start */
    struct fleet_keys keys;
    char id[CONF_NAME_MAX];
    char admin[CONF_HOST_MAX + 16];
    int64_t started_ms;

    redisAsyncContext *cmd, *sub;
    SSL_CTX *store_tls;        /* a rediss:// store: hiredis reaches it through tunnel */
    struct tls_tunnel *tunnel;
    enum link link;
    uint64_t connect_started_ms, last_cmd_reply_ms, last_sub_reply_ms;
    uint64_t last_tick_ms;    /* a tick long after the last one: this process was frozen */
    int catching_up;          /* frozen: the lease waits for a fresh read of the log */
    uint64_t catchup_since_ms, xread_sent_ms;
    uint32_t backoff_ms;
    int reading;              /* an XREAD is outstanding on sub */
    char lost_reason[256];    /* why the last connection ended ("" none) */
    int64_t lost_at_ms;

    uint64_t version;         /* the store's state version applied here */
    char last_id[64];         /* the log entry applied last */
    char *last_text;          /* the document as last published or applied (no time) */
    int applying;             /* changes made by applying the store's state: not republished */
    int reloaded;             /* SIGHUP reset weights to the file's: the store's state wins */

    struct event *tick_ev, *retry_ev, *teardown_ev, *publish_ev, *join_ev;
    int ready_called;
    void (*ready)(void *arg);
    void *ready_arg;

    /* the fleet operation this member takes part in */
    struct {
        int active;
        uint64_t id;
        int member;           /* listed by the store: the commit waits for its report */
        int reported;         /* "drained" sent (the others may have flipped since) */
        uint64_t seen_ms;     /* monotonic: when this member joined it */
        uint32_t max_pause_ms;
    } op;

    /*
     * The fence this member runs for the operation (the store chose it:
     * the last to drain): steps in order, old primaries' fence statements
     * and new primaries' unfence ones.  The runtime is held while a fence
     * may still need undoing.
     */
    struct {
        struct runtime *rt;
        struct fence_step {
            const struct rt_backend *b;
            int unfence;      /* run b's unfence statements, else its fence ones */
            int redis;        /* b is a Redis listener's: commands, not SQL */
        } steps[2 * METRIC_MAX_LISTENERS];
        size_t n, next;
        struct fence_job *job;        /* the step running on a PostgreSQL backend */
        struct fence_redis_job *rjob; /* or on a Redis one */
        int undoing;
        int undo_pending;     /* aborted while a statement ran: undo once it ended */
        size_t with;          /* steps that have statements to run */
        int stepping;         /* the replicated listeners' steps run (cutover_fleet_run_steps) */
        int done;             /* fenced and stepped: the commit may be asked */
        uint64_t op_id;
    } fence;
    unsigned asked_local;     /* a pending operation asked here, 0 when none */

    /* counted for /metrics (fleet_render_prometheus) */
    uint64_t counts[FLEET_COUNT_MAX];

    unsigned ticks;
    json_t *view_reports;     /* {member id: its shadow report}, refreshed every REPORT_EVERY */
    json_t *view_members;     /* GET /api/fleet, refreshed every heartbeat */
    json_t *view_op;
    int64_t view_ms;
};

/* ---- Lua: every decision in the store is one script ----------------------- */

/* KEYS: state, log; ARGV: doc, epoch, member, maxlen -> {version, epoch} ({-1, e}: stale) */
static const char lua_publish[] =
    "local e = tonumber(redis.call('HGET', KEYS[1], 'epoch') or '0')\n"
    "if tonumber(ARGV[2]) < e then return {-1, e} end\n"
    "local v = redis.call('HINCRBY', KEYS[1], 'version', 1)\n"
    "local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'state',\n"
    "  'version', v, 'member', ARGV[3], 'doc', ARGV[1])\n"
    "redis.call('HSET', KEYS[1], 'doc', ARGV[1], 'epoch', ARGV[2], 'log_id', id,\n"
    "  'member', ARGV[3])\n"
    "return {v, tonumber(ARGV[2])}\n";

/* KEYS: state, op -> {doc, version, log_id, {op hash}} */
static const char lua_join[] =
    "local s = redis.call('HMGET', KEYS[1], 'doc', 'version', 'log_id')\n"
    "return {s[1], s[2], s[3], redis.call('HGETALL', KEYS[2])}\n";

/*
 * KEYS: op, log, members, op_counter, state
 * ARGV: kind, max_pause_ms, force, asked_by, now_ms, member_prefix, archive_prefix, maxlen
 * -> {1, id} opened; {0, id} another one is in progress
 */
static const char lua_op_start[] =
    "if redis.call('HGET', KEYS[1], 'state') == 'in_progress' then\n"
    "  return {0, tonumber(redis.call('HGET', KEYS[1], 'id'))}\n"
    "end\n"
    "local old = redis.call('HGET', KEYS[1], 'id')\n"
    "if old then\n"
    "  redis.call('COPY', KEYS[1], ARGV[7] .. old, 'REPLACE')\n"
    "  redis.call('PEXPIRE', ARGV[7] .. old, 604800000)\n"
    "end\n"
    "local id = redis.call('INCR', KEYS[4])\n"
    "local live = {}\n"
    "for _, m in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do\n"
    "  if redis.call('EXISTS', ARGV[6] .. m) == 1 then table.insert(live, m) end\n"
    "end\n"
    "local epoch = redis.call('HGET', KEYS[5], 'epoch') or '0'\n"
    "redis.call('DEL', KEYS[1])\n"
    "redis.call('HSET', KEYS[1], 'id', id, 'kind', ARGV[1], 'state', 'in_progress',\n"
    "  'max_pause_ms', ARGV[2], 'force', ARGV[3], 'asked_by', ARGV[4], 'created_ms', ARGV[5],\n"
    "  'epoch', epoch, 'members', table.concat(live, ' '))\n"
    "for _, m in ipairs(live) do redis.call('HSET', KEYS[1], 'step:' .. m, 'pausing') end\n"
    "redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'type', 'op', 'id', id,\n"
    "  'kind', ARGV[1], 'max_pause_ms', ARGV[2], 'force', ARGV[3], 'asked_by', ARGV[4],\n"
    "  'members', table.concat(live, ' '))\n"
    "return {1, id}\n";

/*
 * KEYS: op, log, state
 * ARGV: id, member, step (pausing|drained|refused|late|fenced|fence_failed|swapped|resumed),
 *       ms, epoch before the flip, doc after the flip, epoch after, maxlen, reason,
 *       fence (1: this member's flip has fence statements or replication steps to run
 *       before the commit)
 * -> the operation's state after the report ("gone": not the running operation;
 *    "fence": every member drained, this one must fence the old primary and run
 *    the steps, then report fenced to commit)
 */
static const char lua_report[] =
    "if redis.call('HGET', KEYS[1], 'id') ~= ARGV[1] then return 'gone' end\n"
    "local st = redis.call('HGET', KEYS[1], 'state')\n"
    "local function members()\n"
    "  return string.gmatch(redis.call('HGET', KEYS[1], 'members') or '', '%S+')\n"
    "end\n"
    "if ARGV[3] ~= 'late' then\n"
    "  redis.call('HSET', KEYS[1], 'step:' .. ARGV[2], ARGV[3], 'ms:' .. ARGV[2], ARGV[4])\n"
    "end\n"
    "if st == 'committed' and ARGV[3] == 'swapped' then\n"
    "  for m in members() do\n"
    "    if redis.call('HGET', KEYS[1], 'step:' .. m) ~= 'swapped' then return st end\n"
    "  end\n"
    "  redis.call('HSET', KEYS[1], 'state', 'completed')\n"
    "  return 'completed'\n"
    "end\n"
    "if st ~= 'in_progress' and st ~= 'fencing' then return st end\n"
    "local function abort(reason)\n"
    "  redis.call('HSET', KEYS[1], 'state', 'aborted', 'reason', reason)\n"
    "  redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'type', 'abort', 'id', ARGV[1],\n"
    "    'reason', reason)\n"
    "  return 'aborted'\n"
    "end\n"
    "local function commit()\n"
    "  local v = redis.call('HINCRBY', KEYS[3], 'version', 1)\n"
    "  local lid = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[8], '*', 'type', 'commit',\n"
    "    'id', ARGV[1], 'version', v, 'member', ARGV[2], 'doc', ARGV[6])\n"
    "  redis.call('HSET', KEYS[3], 'doc', ARGV[6], 'epoch', ARGV[7], 'log_id', lid,\n"
    "    'member', ARGV[2])\n"
    "  redis.call('HSET', KEYS[1], 'state', 'committed', 'committed_epoch', ARGV[7])\n"
    "  return 'committed'\n"
    "end\n"
    "if ARGV[3] == 'refused' then\n"
    "  return abort('member ' .. ARGV[2] .. ' refused: ' .. ARGV[9])\n"
    "end\n"
    "if ARGV[3] == 'late' then\n"
    "  if st == 'fencing' then\n"
    "    return abort('member ' .. ARGV[2] .. ': no decision within max_pause; the fence of ' ..\n"
    "      'the old primary (and the steps) by ' .. redis.call('HGET', KEYS[1], 'fencer') ..\n"
    "      ' did not finish')\n"
    "  end\n"
    "  local waiting = {}\n"
    "  for m in members() do\n"
    "    if redis.call('HGET', KEYS[1], 'step:' .. m) ~= 'drained' then\n"
    "      table.insert(waiting, m)\n"
    "    end\n"
    "  end\n"
    "  return abort('member ' .. ARGV[2] .. ': no decision within max_pause; not drained: ' ..\n"
    "    table.concat(waiting, ' '))\n"
    "end\n"
    "if ARGV[3] == 'fence_failed' then\n"
    "  return abort('member ' .. ARGV[2] .. ': ' .. ARGV[9])\n"
    "end\n"
    "if ARGV[3] == 'fenced' then\n"
    "  if st ~= 'fencing' or redis.call('HGET', KEYS[1], 'fencer') ~= ARGV[2] then return st end\n"
    "  return commit()\n"
    "end\n"
    "if ARGV[3] ~= 'drained' or st ~= 'in_progress' then return st end\n"
    "local e = redis.call('HGET', KEYS[1], 'epoch') or '0'\n"
    "if ARGV[5] ~= e then\n"
    "  return abort('member ' .. ARGV[2] .. ' drained at epoch ' .. ARGV[5] ..\n"
    "    ', the fleet was at ' .. e)\n"
    "end\n"
    "for m in members() do\n"
    "  if redis.call('HGET', KEYS[1], 'step:' .. m) ~= 'drained' then return st end\n"
    "end\n"
    "if ARGV[10] == '1' then\n"
    "  redis.call('HSET', KEYS[1], 'state', 'fencing', 'fencer', ARGV[2])\n"
    "  return 'fence'\n"
    "end\n"
    "return commit()\n";

/* KEYS: members; ARGV: report_prefix -> {id, report, id, report, ...} of the members that have one */
static const char lua_reports[] =
    "local out = {}\n"
    "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  local v = redis.call('GET', ARGV[1] .. m)\n"
    "  if v then table.insert(out, m); table.insert(out, v) end\n"
    "end\n"
    "return out\n";

/* KEYS: members, op; ARGV: member_prefix -> {{member records}, {op hash}} */
static const char lua_view[] =
    "local out = {}\n"
    "for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do\n"
    "  local v = redis.call('GET', ARGV[1] .. m)\n"
    "  if v then table.insert(out, v) end\n"
    "end\n"
    "return {out, redis.call('HGETALL', KEYS[2])}\n";

/* ---- small things ---------------------------------------------------------- */

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* command - argv of NUL-terminated strings sent on ac; -1 when it could not be queued. */
static int
command(redisAsyncContext *ac, redisCallbackFn *fn, void *priv, int argc, const char **argv)
{
    size_t lens[16];
    if (ac == NULL || argc > 16)
        return -1;
    for (int i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return redisAsyncCommandArgv(ac, fn, priv, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

static int
reply_error(const redisReply *r, char *err, size_t errlen)
{
    if (r == NULL) {
        snprintf(err, errlen, "no reply");
        return 1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%.200s", r->str);
        return 1;
    }
    return 0;
}

/* read_password - the first line of PATH; -1 with err (never the content). */
static int
read_password(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "password_file \"%s\": %s", path, strerror(errno));
        return -1;
    }
    ssize_t n = read(fd, out, outlen - 1);
    close(fd);
    if (n < 0) {
        snprintf(err, errlen, "password_file \"%s\": %s", path, strerror(errno));
        return -1;
    }
    out[n] = '\0';
    out[strcspn(out, "\r\n")] = '\0';
    if (out[0] == '\0') {
        snprintf(err, errlen, "password_file \"%s\" is empty", path);
        return -1;
    }
    return 0;
}

static void
call_ready(struct fleet *f)
{
    if (f->ready_called)
        return;
    f->ready_called = 1;
    event_del(f->join_ev);
    f->ready(f->ready_arg);
}

/* abort_here - this member's part of the fleet operation ends, nothing swapped here. */
static void
abort_here(struct fleet *f, const char *reason)
{
    f->counts[FLEET_COUNT_ABORTED]++;
    cutover_decide(f->cutover, 0, reason);
}

/* ---- teardown and reconnect --------------------------------------------- */

static void
lost(struct fleet *f, const char *why)
{
    if (f->link == LINK_DOWN)
        return;
    int was_up = f->link == LINK_UP;
    f->link = LINK_DOWN;
    f->counts[FLEET_COUNT_STORE_LOST]++;
    snprintf(f->lost_reason, sizeof(f->lost_reason), "%s", why);
    f->lost_at_ms = wall_ms();
    if (was_up)
        log_error("fleet \"%s\": store %s:%u lost (%s): serving with the last state known "
                  "(version %llu); no operation can start or commit until it is back",
                  f->conf.fleet, f->conf.store.host, f->conf.store.port, why,
                  (unsigned long long)f->version);
    else
        log_warn("fleet \"%s\": store %s:%u: %s; retrying in %u ms", f->conf.fleet,
                 f->conf.store.host, f->conf.store.port, why, f->backoff_ms);
    event_active(f->teardown_ev, 0, 0);
}

static void
on_teardown(evutil_socket_t fd, short what, void *arg)
{
    struct fleet *f = arg;
    (void)fd;
    (void)what;
    redisAsyncContext *cmd = f->cmd, *sub = f->sub;
    f->cmd = f->sub = NULL; /* first: their disconnect callbacks find nothing of ours */
    f->reading = 0;
    if (cmd)
        redisAsyncFree(cmd);
    if (sub)
        redisAsyncFree(sub);
    if (f->asked_local) {
        cutover_fail_pending(f->cutover, f->asked_local,
                             "refused: the store was lost before the operation began");
        f->asked_local = 0;
    }
    if (f->op.active && !f->op.reported && f->op.member) {
        /* the fleet cannot commit without this member's report: safe to resume here */
        abort_here(f,
                       "aborted: the store was lost before this member reported drained; "
                       "nothing swapped here, writes resumed on the old primary");
        f->op.active = 0;
    } else if (f->op.active) {
        log_error("fleet-op-%llu: the store was lost after this member reported: writes stay "
                  "paused until the store says whether the flip committed",
                  (unsigned long long)f->op.id);
    }
    struct timeval tv = {.tv_sec = f->backoff_ms / 1000,
                         .tv_usec = (suseconds_t)(f->backoff_ms % 1000) * 1000};
    event_add(f->retry_ev, &tv);
    f->backoff_ms = f->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : f->backoff_ms * 2;
}

static void
on_connect(const redisAsyncContext *ac, int status)
{
    struct fleet *f = ac->data;
    if (status == REDIS_OK)
        return;
    /* hiredis frees ac after this callback */
    if (ac == f->cmd)
        f->cmd = NULL;
    else if (ac == f->sub)
        f->sub = NULL;
    else
        return;
    char why[300];
    if (f->tunnel && tls_tunnel_last_error(f->tunnel)[0])
        snprintf(why, sizeof(why), "TLS: %.250s", tls_tunnel_last_error(f->tunnel));
    else
        snprintf(why, sizeof(why), "cannot connect: %.150s", ac->errstr);
    lost(f, why);
}

static void
on_disconnect(const redisAsyncContext *ac, int status)
{
    struct fleet *f = ac->data;
    (void)status;
    if (ac == f->cmd)
        f->cmd = NULL;
    else if (ac == f->sub)
        f->sub = NULL;
    else
        return; /* freed by on_teardown */
    char why[300];
    /* through the tunnel, the close hiredis saw is the TLS side's: say why that ended */
    if (f->tunnel && tls_tunnel_last_error(f->tunnel)[0])
        snprintf(why, sizeof(why), "TLS: %.250s", tls_tunnel_last_error(f->tunnel));
    else
        snprintf(why, sizeof(why), "%.250s", ac->err ? ac->errstr : "connection closed");
    lost(f, why);
}

static redisAsyncContext *
open_context(struct fleet *f, char *err, size_t errlen)
{
    redisAsyncContext *ac = f->tunnel ? redisAsyncConnectUnix(tls_tunnel_path(f->tunnel))
                                      : redisAsyncConnect(f->conf.store.host, f->conf.store.port);
    if (ac == NULL || ac->err) {
        snprintf(err, errlen, "cannot connect: %s", ac ? ac->errstr : "out of memory");
        if (ac)
            redisAsyncFree(ac);
        return NULL;
    }
    ac->data = f;
    redisLibeventAttach(ac, f->base);
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    return ac;
}

static void on_join(redisAsyncContext *ac, void *reply, void *priv);

/* on_setup - AUTH and SELECT: an error refuses the connection (the message, never the password). */
static void
on_setup(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    char why[256];
    if (reply == NULL || (ac != f->cmd && ac != f->sub))
        return;
    if (reply_error(reply, why, sizeof(why))) {
        char msg[300];
        snprintf(msg, sizeof(msg), "the store refused AUTH or SELECT: %s", why);
        lost(f, msg);
    }
}

static void
do_connect(struct fleet *f)
{
    char err[300], password[PASSWORD_MAX], db[16];
    f->connect_started_ms = mono_ms();
    f->link = LINK_CONNECTING;
    if (f->conf.store_password_file[0] &&
        read_password(f->conf.store_password_file, password, sizeof(password), err,
                      sizeof(err)) != 0) {
        lost(f, err);
        return;
    }
    f->cmd = open_context(f, err, sizeof(err));
    f->sub = f->cmd ? open_context(f, err, sizeof(err)) : NULL;
    if (f->cmd == NULL || f->sub == NULL) {
        lost(f, err);
        return;
    }
    snprintf(db, sizeof(db), "%u", f->conf.store_db);
    /* queued now, sent once connected; pipelined in order on each connection */
    for (int i = 0; i < 2; i++) {
        redisAsyncContext *ac = i == 0 ? f->cmd : f->sub;
        if (f->conf.store_password_file[0]) {
            const char *auth[] = {"AUTH", password};
            command(ac, on_setup, f, 2, auth);
        }
        const char *sel[] = {"SELECT", db};
        command(ac, on_setup, f, 2, sel);
    }
    explicit_bzero(password, sizeof(password));
    const char *join[] = {"EVAL", lua_join, "2", f->keys.state, f->keys.op};
    command(f->cmd, on_join, f, 5, join);
}

static void
on_retry(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    do_connect(arg);
}

/* ---- applying the store's state ------------------------------------------ */

/*
 * local_text - the running state, as compared with what was last published
 * or applied: without its time, guard times to the second (a cooldown is
 * kept on the monotonic clock and read back through the wall clock, which
 * moves it by a millisecond; that is no change worth sending the fleet).
 */
static char *
local_text(struct fleet *f)
{
    struct state_doc doc;
    if (state_build_doc(f->state, NULL, 0, 0, &doc) != 0)
        return NULL;
    doc.written_ms = 0;
    for (size_t i = 0; i < doc.nlisteners; i++)
        for (size_t k = 0; k < doc.listeners[i].nguards; k++) {
            struct state_guard *g = &doc.listeners[i].guards[k];
            g->last_trip_ms -= g->last_trip_ms % 1000;
            g->cooldown_until_ms -= g->cooldown_until_ms % 1000;
        }
    char *text = state_file_encode(&doc);
    state_doc_release(&doc);
    return text;
}

static void
remember_local(struct fleet *f)
{
    free(f->last_text);
    f->last_text = local_text(f);
}

/* apply_doc - the store's document (version v) to this member; from names it in logs. */
static void
apply_doc(struct fleet *f, const char *text, size_t len, uint64_t v, const char *from)
{
    struct state_doc doc = {0};
    char err[300], where[120];
    if (state_file_decode(text, len, &doc, err, sizeof(err)) != 0) {
        log_error("fleet \"%s\": %s: the store's state version %llu is unreadable (%s); "
                  "keeping this member's",
                  f->conf.fleet, from, (unsigned long long)v, err);
        return;
    }
    snprintf(where, sizeof(where), "fleet \"%s\" state version %llu", f->conf.fleet,
             (unsigned long long)v);
    f->applying = 1;
    int flipped = state_apply_doc(f->state, &doc, where, err, sizeof(err));
    f->applying = 0;
    state_doc_release(&doc);
    if (flipped < 0) {
        log_error("fleet \"%s\": state version %llu does not fit this configuration (%s); "
                  "keeping this member's",
                  f->conf.fleet, (unsigned long long)v, err);
        return;
    }
    if (flipped > 0)
        cutover_kick(f->cutover); /* sessions swap at their idle points */
    f->counts[FLEET_COUNT_APPLIED]++;
    f->version = v;
    remember_local(f);
}

/* ---- operations ------------------------------------------------------------ */

static void on_report(redisAsyncContext *ac, void *reply, void *priv);

/*
 * fence_plan - the fence steps of the joined operation's flip: for each
 * listener it flips, the backend that stops answering runs its fence
 * statements, the one that starts answering its unfence statements (a
 * rollback unfences what the cutover fenced).  Returns how many steps
 * have statements to run.
 */
static size_t
fence_plan(const struct fleet *f, struct fence_step *steps, size_t max, size_t *nsteps)
{
    int slots[METRIC_MAX_LISTENERS], target = 0;
    int n = cutover_flip_slots(f->cutover, slots, METRIC_MAX_LISTENERS, &target);
    size_t k = 0, with = 0;
    for (int i = 0; i < n; i++) {
        for (size_t j = 0; j < f->rt->nlisteners; j++) {
            const struct rt_listener *l = &f->rt->listeners[j];
            if (l->metric_slot != slots[i] || l->shadow == NULL || k + 2 > max)
                continue;
            const struct rt_backend *old = target ? l->primary : l->shadow;
            const struct rt_backend *now = target ? l->shadow : l->primary;
            int redis = l->conf->proto == CONF_PROTO_REDIS;
            steps[k++] = (struct fence_step){.b = old, .unfence = 0, .redis = redis};
            steps[k++] = (struct fence_step){.b = now, .unfence = 1, .redis = redis};
            with += old->conf->nfence > 0;
            with += now->conf->nunfence > 0;
        }
    }
    *nsteps = k;
    return with;
}

/* report - this member's step of the running operation (step "drained" carries the flip). */
static void
report(struct fleet *f, const char *step, const char *reason)
{
    char id[24], ms[24], before[24], after[24];
    char *doc_text = NULL;
    struct state_doc doc;
    snprintf(id, sizeof(id), "%llu", (unsigned long long)f->op.id);
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)(mono_ms() - f->op.seen_ms));
    snprintf(before, sizeof(before), "0");
    snprintf(after, sizeof(after), "0");
    const char *fence = "0";
    if (strcmp(step, "drained") == 0 || strcmp(step, "fenced") == 0) {
        struct fence_step steps[2 * METRIC_MAX_LISTENERS];
        size_t nsteps;
        if (fence_plan(f, steps, 2 * METRIC_MAX_LISTENERS, &nsteps) > 0 ||
            cutover_fleet_has_steps(f->cutover))
            fence = "1"; /* the old primary is fenced, the steps run, before anyone flips */
        int slots[METRIC_MAX_LISTENERS], target = 0;
        int n = cutover_flip_slots(f->cutover, slots, METRIC_MAX_LISTENERS, &target);
        if (state_build_doc(f->state, NULL, 0, 0, &doc) == 0) {
            snprintf(before, sizeof(before), "%llu", (unsigned long long)state_epoch_sum(&doc));
            state_doc_release(&doc);
        }
        if (state_build_doc(f->state, slots, n, target, &doc) == 0) {
            snprintf(after, sizeof(after), "%llu", (unsigned long long)state_epoch_sum(&doc));
            doc_text = state_file_encode(&doc);
            state_doc_release(&doc);
        }
        if (doc_text == NULL) {
            log_error("fleet-op-%s: out of memory building the report", id);
            return;
        }
    }
    const char *argv[] = {"EVAL",    lua_report,  "3",         f->keys.op, f->keys.log,
                          f->keys.state, id,      f->id,       step,       ms,
                          before,  doc_text ? doc_text : "", after, LOG_MAXLEN,
                          reason ? reason : "", fence};
    if (command(f->cmd, on_report, f, 16, argv) != 0)
        log_warn("fleet-op-%s: report \"%s\" not sent: the store is not connected", id, step);
    free(doc_text);
}

/* ---- the fence ------------------------------------------------------------- */

static void fence_next(struct fleet *f);

static void
fence_release(struct fleet *f)
{
    fence_cancel(f->fence.job);
    f->fence.job = NULL;
    fence_redis_cancel(f->fence.rjob);
    f->fence.rjob = NULL;
    if (f->fence.rt)
        runtime_unref(f->fence.rt);
    f->fence.rt = NULL;
    f->fence.n = f->fence.next = f->fence.with = 0;
    f->fence.undoing = f->fence.undo_pending = f->fence.stepping = f->fence.done = 0;
}

static void
fence_step_done(void *arg, int ok, const char *err)
{
    struct fleet *f = arg;
    const struct fence_step *st = &f->fence.steps[f->fence.next];
    f->fence.job = NULL;
    f->fence.rjob = NULL;
    if (f->fence.undoing) {
        if (!ok)
            log_error("fleet-op-%llu: undoing the fence of \"%s\" failed: %s; run its unfence "
                      "statements by hand",
                      (unsigned long long)f->fence.op_id, st->b->conf->name, err);
        else
            log_warn("fleet-op-%llu: \"%s\" unfenced again (the operation aborted)",
                     (unsigned long long)f->fence.op_id, st->b->conf->name);
        f->fence.next++;
        fence_next(f);
        return;
    }
    if (f->fence.undo_pending) {
        /* the operation aborted while this statement ran: now undo, after it */
        f->fence.undo_pending = 0;
        f->fence.undoing = 1;
        f->fence.next = 0;
        fence_next(f);
        return;
    }
    if (!ok) {
        char why[600];
        snprintf(why, sizeof(why), "%s \"%s\": %s", st->unfence ? "unfence" : "fence",
                 st->b->conf->name, err);
        log_error("fleet-op-%llu: %s; the operation aborts", (unsigned long long)f->fence.op_id,
                  why);
        f->counts[FLEET_COUNT_FENCE_FAILED]++;
        if (f->op.active && f->op.id == f->fence.op_id) {
            char reason[640];
            snprintf(reason, sizeof(reason), "could not fence the old primary: %s", why);
            report(f, "fence_failed", reason);
        }
        return; /* the abort undoes what was fenced */
    }
    log_info("fleet-op-%llu: \"%s\" %s", (unsigned long long)f->fence.op_id, st->b->conf->name,
             st->unfence ? "unfenced (it answers from now on)"
                         : "fenced (application writes refused there)");
    f->fence.next++;
    fence_next(f);
}

/* fence_next - run the next step with statements; all done: report fenced (the commit). */
static void
fence_next(struct fleet *f)
{
    while (f->fence.next < f->fence.n) {
        const struct fence_step *st = &f->fence.steps[f->fence.next];
        /* undoing: only the old primaries' fences, with their unfence statements */
        int unfence = f->fence.undoing ? 1 : st->unfence;
        size_t n = unfence ? st->b->conf->nunfence : st->b->conf->nfence;
        if ((f->fence.undoing && st->unfence) || n == 0) {
            f->fence.next++;
            continue;
        }
        uint32_t timeout = f->op.max_pause_ms ? f->op.max_pause_ms : 2000;
        const char(*stmts)[CONF_STATEMENT_MAX] =
            unfence ? st->b->conf->unfence : st->b->conf->fence;
        if (st->redis)
            f->fence.rjob = fence_redis_run(f->base, st->b, stmts, n, timeout, fence_step_done, f);
        else
            f->fence.job = fence_run(f->base, st->b, stmts, n, timeout, fence_step_done, f);
        if (f->fence.job == NULL && f->fence.rjob == NULL) {
            fence_step_done(f, 0, "out of memory");
        }
        return;
    }
    if (f->fence.undoing) {
        if (f->fence.with > 0)
            f->counts[FLEET_COUNT_UNFENCED]++;
        fence_release(f);
        return;
    }
    if (f->fence.with > 0)
        f->counts[FLEET_COUNT_FENCED]++;
    if (!f->op.active || f->op.id != f->fence.op_id)
        return;
    if (cutover_fleet_run_steps(f->cutover) == 0) {
        f->fence.stepping = 1; /* fleet_stepped reports */
        return;
    }
    f->fence.done = 1;
    report(f, "fenced", NULL);
}

/* fleet_stepped - the replicated listeners' steps ran here (the commit waits for them). */
static void
fleet_stepped(void *arg, int ok, const char *why)
{
    struct fleet *f = arg;
    char reason[400];
    if (!f->fence.stepping)
        return;
    f->fence.stepping = 0;
    if (!f->op.active || f->op.id != f->fence.op_id)
        return;
    if (!ok) {
        snprintf(reason, sizeof(reason), "%s; nothing was swapped", why);
        log_error("fleet-op-%llu: %s; the operation aborts", (unsigned long long)f->op.id, reason);
        report(f, "fence_failed", reason);
        return;
    }
    f->fence.done = 1;
    report(f, "fenced", NULL);
}

/* fence_begin - the store chose this member to fence the old primary before the commit. */
static void
fence_begin(struct fleet *f)
{
    if (!f->op.active || f->fence.rt != NULL)
        return;
    f->fence.with = fence_plan(f, f->fence.steps, 2 * METRIC_MAX_LISTENERS, &f->fence.n);
    f->fence.next = 0;
    f->fence.undoing = f->fence.stepping = f->fence.done = 0;
    f->fence.op_id = f->op.id;
    f->fence.rt = (struct runtime *)f->rt;
    runtime_ref(f->fence.rt);
    log_info("fleet-op-%llu: every member drained; %s before the commit",
             (unsigned long long)f->op.id,
             f->fence.with > 0 ? "fencing the old primary" : "running the steps");
    fence_next(f);
}

/* fence_undo - the operation aborted after this member began fencing: unfence the old primaries. */
static void
fence_undo(struct fleet *f)
{
    if (f->fence.rt == NULL || f->fence.undoing)
        return;
    if (f->fence.job != NULL || f->fence.rjob != NULL) {
        /* a statement cut short could still commit after the undo: let it end first */
        f->fence.undo_pending = 1;
        return;
    }
    f->fence.undoing = 1;
    f->fence.next = 0;
    fence_next(f);
}

static void
on_report(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    char why[256];
    if (reply == NULL)
        return;
    f->last_cmd_reply_ms = mono_ms();
    if (reply_error(reply, why, sizeof(why))) {
        log_error("fleet \"%s\": a report was refused by the store: %s", f->conf.fleet, why);
        return;
    }
    const redisReply *r = reply;
    if (r->type == REDIS_REPLY_STRING && strcmp(r->str, "fence") == 0) {
        fence_begin(f);
        return;
    }
    if (r->type == REDIS_REPLY_STRING && strcmp(r->str, "gone") == 0 && f->op.active) {
        /* the store no longer runs it (a newer one replaced it): nothing was committed for us */
        abort_here(f, "aborted: the operation is no longer the fleet's");
        f->op.active = 0;
    }
    (void)ac;
}

/* participate - the store opened operation id: this member's part. */
static void
participate(struct fleet *f, uint64_t id, int rollback, uint32_t max_pause_ms, int force,
            const char *asked_by, int member)
{
    char fid[32], err[300];
    if (f->op.active && f->op.id == id)
        return;
    snprintf(fid, sizeof(fid), "fleet-op-%llu", (unsigned long long)id);
    unsigned local = strcmp(asked_by, f->id) == 0 ? f->asked_local : 0;
    if (local)
        f->asked_local = 0;
    f->op.active = 1;
    f->op.id = id;
    f->op.member = member;
    f->op.reported = 0;
    f->op.seen_ms = mono_ms();
    f->op.max_pause_ms = max_pause_ms;
    if (cutover_join(f->cutover, f->rt, local, rollback ? CUTOVER_ROLLBACK : CUTOVER_FORWARD,
                     max_pause_ms, force, fid, err, sizeof(err)) != 0) {
        log_warn("%s: this member refuses: %s", fid, err);
        report(f, "refused", err);
        f->op.active = 0;
        return;
    }
    log_info("%s: %s asked by %s: writes paused here", fid, rollback ? "rollback" : "cutover",
             asked_by[0] ? asked_by : "(unknown)");
}

/* the cutover's hooks */
static int
fleet_ask(void *arg, unsigned local_id, enum cutover_kind kind, uint32_t max_pause_ms, int force,
          char *err, size_t errlen);

static void
fleet_drained(void *arg)
{
    struct fleet *f = arg;
    if (!f->op.active)
        return;
    if (f->link != LINK_UP && f->op.member) {
        /* never reported: the fleet cannot commit without it */
        abort_here(f,
                       "aborted: drained while the store was unreachable; nothing swapped "
                       "here, writes resumed on the old primary");
        f->op.active = 0;
        return;
    }
    /* a member that joined during the operation is not waited for: it holds until told */
    f->op.reported = 1;
    if (f->link == LINK_UP)
        report(f, "drained", NULL);
}

static void
fleet_late(void *arg)
{
    struct fleet *f = arg;
    if (!f->op.active)
        return;
    if (f->link == LINK_UP) {
        report(f, "late", NULL); /* the store aborts, unless the commit came first */
        return;
    }
    if (!f->op.reported && f->op.member) {
        abort_here(f,
                       "aborted: max_pause passed while the store was unreachable; nothing "
                       "swapped here, writes resumed on the old primary");
        f->op.active = 0;
    }
}

/* decided - the store's decision on operation id reached this member. */
static void
decided(struct fleet *f, uint64_t id, int commit, const char *reason)
{
    char why[400];
    if (!f->op.active || f->op.id != id)
        return;
    if (f->fence.rt != NULL && f->fence.op_id == id) {
        if (commit)
            fence_release(f);
        else
            fence_undo(f);
    }
    if (commit) {
        f->counts[FLEET_COUNT_COMMITTED]++;
        cutover_decide(f->cutover, 1, NULL);
        f->op.active = 0;
        report(f, "swapped", NULL);
        return;
    }
    snprintf(why, sizeof(why), "aborted by the fleet: %s; nothing swapped, writes resumed on "
                               "the old primary", reason[0] ? reason : "(no reason given)");
    abort_here(f, why);
    f->op.active = 0;
    report(f, "resumed", NULL);
}

/* ---- the log --------------------------------------------------------------- */

/* ---- the write lease (control.h) ----------------------------------------- */

static void
lease_renew(struct fleet *f)
{
    int expired = control_write_lease_expired();
    control_set_write_lease(mono_ms() + LEASE_MS);
    if (expired)
        cutover_kick(f->cutover); /* the writes that waited go now */
}

/*
 * frozen - this process did not run for a while: what the store said since
 * is unknown, so the lease (likely expired already) waits for a read of the
 * log sent from now on.
 */
static int
frozen(struct fleet *f, uint64_t now)
{
    if (now - f->last_tick_ms <= 2 * HEARTBEAT_MS)
        return 0;
    if (!f->catching_up)
        log_warn("fleet \"%s\": this process did not run for %llu ms: new writes wait until "
                 "it has read the fleet's log again",
                 f->conf.fleet, (unsigned long long)(now - f->last_tick_ms));
    f->catching_up = 1;
    f->catchup_since_ms = now;
    f->last_cmd_reply_ms = f->last_sub_reply_ms = f->connect_started_ms = now;
    f->last_tick_ms = now;
    return 1;
}

static void on_xread(redisAsyncContext *ac, void *reply, void *priv);

static void
read_log(struct fleet *f)
{
    if (f->reading || f->sub == NULL || f->link != LINK_UP)
        return;
    const char *argv[] = {"XREAD", "COUNT", XREAD_COUNT, "BLOCK",  XREAD_BLOCK_MS,
                          "STREAMS", f->keys.log, f->last_id};
    if (command(f->sub, on_xread, f, 8, argv) == 0) {
        f->reading = 1;
        f->xread_sent_ms = mono_ms();
    }
}

/* is_listed - ID among the space-separated members. */
static int
is_listed(const char *members, const char *id)
{
    size_t len = strlen(id);
    for (const char *p = members ? members : ""; *p;) {
        size_t n = strcspn(p, " ");
        if (n == len && strncmp(p, id, n) == 0)
            return 1;
        p += n;
        p += strspn(p, " ");
    }
    return 0;
}

static void
apply_entry(struct fleet *f, const char *id, const redisReply *kv)
{
    const char *fields[64], *values[64];
    size_t lens[64], n = 0;
    struct fleet_entry e;
    char err[200];
    for (size_t i = 0; i + 1 < kv->elements && n < 64; i += 2) {
        if (kv->element[i]->type != REDIS_REPLY_STRING ||
            kv->element[i + 1]->type != REDIS_REPLY_STRING)
            continue;
        fields[n] = kv->element[i]->str;
        values[n] = kv->element[i + 1]->str;
        lens[n++] = kv->element[i + 1]->len;
    }
    if (fleet_entry_parse(fields, values, lens, n, &e, err, sizeof(err)) != 0) {
        log_warn("fleet \"%s\": log entry %s skipped: %s", f->conf.fleet, id, err);
        return;
    }
    switch (e.type) {
    case FLEET_ENTRY_STATE:
        if (e.version <= f->version)
            break;
        if (strcmp(e.member, f->id) == 0) {
            f->version = e.version; /* this member's own change, already in force */
            break;
        }
        apply_doc(f, e.doc, e.doc_len, e.version, id);
        break;
    case FLEET_ENTRY_OP:
        participate(f, e.op_id, e.rollback, e.max_pause_ms, e.force, e.member,
                    is_listed(e.members, f->id));
        break;
    case FLEET_ENTRY_COMMIT:
        decided(f, e.op_id, 1, "");
        if (e.version > f->version)
            apply_doc(f, e.doc, e.doc_len, e.version, id);
        break;
    case FLEET_ENTRY_ABORT:
        decided(f, e.op_id, 0, e.reason);
        break;
    case FLEET_ENTRY_REPORT:
        break;
    }
}

static void
on_xread(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    const redisReply *r = reply;
    char why[256];
    if (r == NULL || ac != f->sub)
        return;
    f->reading = 0;
    uint64_t sent = f->xread_sent_ms;
    frozen(f, mono_ms()); /* a reply read after a freeze may be older than the freeze */
    f->last_sub_reply_ms = mono_ms();
    if (reply_error(r, why, sizeof(why))) {
        char msg[300];
        snprintf(msg, sizeof(msg), "XREAD refused: %s", why);
        lost(f, msg);
        return;
    }
    /* nil: nothing new within the block time */
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
        r->element[0]->type == REDIS_REPLY_ARRAY && r->element[0]->elements == 2) {
        const redisReply *entries = r->element[0]->element[1];
        for (size_t i = 0; entries->type == REDIS_REPLY_ARRAY && i < entries->elements; i++) {
            const redisReply *en = entries->element[i];
            if (en->type != REDIS_REPLY_ARRAY || en->elements != 2 ||
                en->element[0]->type != REDIS_REPLY_STRING ||
                en->element[1]->type != REDIS_REPLY_ARRAY)
                continue;
            snprintf(f->last_id, sizeof(f->last_id), "%s", en->element[0]->str);
            apply_entry(f, en->element[0]->str, en->element[1]);
            if (f->link != LINK_UP)
                return;
        }
    }
    /* caught up with the log as of a read sent after any freeze: writes may go on */
    if (f->catching_up && sent > f->catchup_since_ms) {
        f->catching_up = 0;
        log_info("fleet \"%s\": caught up with the fleet's log: writes go on", f->conf.fleet);
    }
    if (!f->catching_up)
        lease_renew(f);
    read_log(f);
}

/* ---- join ------------------------------------------------------------------ */

static void publish(struct fleet *f);
static void heartbeat(struct fleet *f);

/* the operation hash's field NAME, or NULL */
static const char *
op_field(const redisReply *op, const char *name)
{
    for (size_t i = 0; op && op->type == REDIS_REPLY_ARRAY && i + 1 < op->elements; i += 2)
        if (op->element[i]->type == REDIS_REPLY_STRING &&
            op->element[i + 1]->type == REDIS_REPLY_STRING && strcmp(op->element[i]->str, name) == 0)
            return op->element[i + 1]->str;
    return NULL;
}

/* resume_operation - after a reconnect: what became of the operation this member took part in. */
static void
resume_operation(struct fleet *f, const redisReply *op, uint64_t store_epoch)
{
    const char *id = op_field(op, "id"), *st = op_field(op, "state");
    if (!f->op.active)
        return;
    if (id != NULL && strtoull(id, NULL, 10) == f->op.id && st != NULL) {
        if (strcmp(st, "committed") == 0 || strcmp(st, "completed") == 0)
            decided(f, f->op.id, 1, "");
        else if (strcmp(st, "aborted") == 0)
            decided(f, f->op.id, 0, op_field(op, "reason") ? op_field(op, "reason") : "");
        else if (strcmp(st, "fencing") == 0 && f->fence.rt && f->fence.done && !f->fence.undoing)
            report(f, "fenced", NULL); /* fenced (and stepped) while the store was away */
        else if (f->op.reported)
            report(f, "drained", NULL); /* the reply may have been lost: reports are idempotent */
        return;
    }
    /* a newer operation replaced it: the store's epoch says whether it flipped */
    struct state_doc doc;
    uint64_t here = 0;
    if (state_build_doc(f->state, NULL, 0, 0, &doc) == 0) {
        here = state_epoch_sum(&doc);
        state_doc_release(&doc);
    }
    decided(f, f->op.id, store_epoch > here, "the operation ended while this member was away");
}

static void
on_join(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    const redisReply *r = reply;
    char why[256];
    if (r == NULL || ac != f->cmd)
        return;
    f->last_cmd_reply_ms = mono_ms();
    if (reply_error(r, why, sizeof(why)) || r->type != REDIS_REPLY_ARRAY || r->elements != 4) {
        char msg[300];
        snprintf(msg, sizeof(msg), "cannot read the fleet's state: %s",
                 r->type == REDIS_REPLY_ERROR ? why : "unexpected reply");
        lost(f, msg);
        return;
    }
    const redisReply *doc = r->element[0], *ver = r->element[1], *lid = r->element[2],
                     *op = r->element[3];
    uint64_t v = ver->type == REDIS_REPLY_STRING ? strtoull(ver->str, NULL, 10) : 0;
    if (f->reloaded) {
        f->reloaded = 0;
        f->version = 0; /* apply the store's state over the file's weights and mode */
    }
    f->link = LINK_UP;
    f->counts[FLEET_COUNT_JOINED]++;
    f->backoff_ms = BACKOFF_FIRST_MS;
    f->last_sub_reply_ms = mono_ms();
    if (f->lost_reason[0])
        log_info("fleet \"%s\": store %s:%u back; state version %llu", f->conf.fleet,
                 f->conf.store.host, f->conf.store.port, (unsigned long long)v);
    else
        log_info("fleet \"%s\": member \"%s\" joined through store %s:%u; state version %llu",
                 f->conf.fleet, f->id, f->conf.store.host, f->conf.store.port,
                 (unsigned long long)v);
    f->lost_reason[0] = '\0';

    /* the operation first: it may flip roles the state document already shows flipped */
    uint64_t store_epoch = 0;
    if (doc->type == REDIS_REPLY_STRING) {
        struct state_doc d = {0};
        char err[200];
        if (state_file_decode(doc->str, doc->len, &d, err, sizeof(err)) == 0) {
            store_epoch = state_epoch_sum(&d);
            state_doc_release(&d);
        }
    }
    resume_operation(f, op, store_epoch);
    if (v < f->version) {
        log_warn("fleet \"%s\": the store's state went back from version %llu to %llu: it lost "
                 "data; taking what it has (roles still only move to a higher epoch)",
                 f->conf.fleet, (unsigned long long)f->version, (unsigned long long)v);
        f->version = 0;
    }
    if (doc->type == REDIS_REPLY_STRING && v > f->version)
        apply_doc(f, doc->str, doc->len, v, "join");
    snprintf(f->last_id, sizeof(f->last_id), "%s",
             lid->type == REDIS_REPLY_STRING ? lid->str : "0-0");
    if (doc->type != REDIS_REPLY_STRING) {
        log_info("fleet \"%s\": the store has no state yet: this member's is the fleet's",
                 f->conf.fleet);
        free(f->last_text);
        f->last_text = NULL;
        publish(f);
    } else {
        /* a state file ahead of the store (the store lost its data): the higher epoch wins */
        struct state_doc d;
        int ahead = 0;
        if (state_build_doc(f->state, NULL, 0, 0, &d) == 0) {
            ahead = state_epoch_sum(&d) > store_epoch;
            state_doc_release(&d);
        }
        if (ahead) {
            log_warn("fleet \"%s\": this member's epoch is ahead of the store's: publishing it",
                     f->conf.fleet);
            free(f->last_text);
            f->last_text = NULL;
            publish(f);
        } else {
            remember_local(f);
        }
    }
    /* an operation running now: pause with the others (the commit does not wait for us) */
    const char *id = op_field(op, "id"), *st = op_field(op, "state");
    if (id && st && (strcmp(st, "in_progress") == 0 || strcmp(st, "fencing") == 0) &&
        !f->op.active) {
        const char *kind = op_field(op, "kind"), *mp = op_field(op, "max_pause_ms"),
                   *force = op_field(op, "force"), *asked = op_field(op, "asked_by");
        participate(f, strtoull(id, NULL, 10), kind && strcmp(kind, "rollback") == 0,
                    mp ? (uint32_t)strtoul(mp, NULL, 10) : 0, force && strcmp(force, "1") == 0,
                    asked ? asked : "", is_listed(op_field(op, "members"), f->id));
    }
    heartbeat(f);
    f->catching_up = 0; /* the state was just read */
    lease_renew(f);
    read_log(f);
    call_ready(f);
}

/* ---- publishing this member's changes ------------------------------------ */

static void
on_publish(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    const redisReply *r = reply;
    char why[256];
    if (r == NULL)
        return;
    f->last_cmd_reply_ms = mono_ms();
    if (reply_error(r, why, sizeof(why))) {
        log_error("fleet \"%s\": state not published: %s", f->conf.fleet, why);
        return;
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER && r->element[0]->integer < 0)
        log_warn("fleet \"%s\": state not published: the store is at epoch %lld, ahead of this "
                 "member; catching up",
                 f->conf.fleet, r->element[1]->integer);
    (void)ac;
}

static void
publish(struct fleet *f)
{
    struct state_doc doc;
    char epoch[24];
    if (f->link != LINK_UP || f->reloaded)
        return; /* the store's state wins on reconnect, and after a reload */
    char *cmp = local_text(f);
    if (cmp == NULL)
        return;
    if (f->last_text && strcmp(cmp, f->last_text) == 0) {
        free(cmp);
        return;
    }
    free(f->last_text);
    f->last_text = cmp;
    if (state_build_doc(f->state, NULL, 0, 0, &doc) != 0)
        return;
    snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)state_epoch_sum(&doc));
    char *text = state_file_encode(&doc);
    state_doc_release(&doc);
    if (text == NULL)
        return;
    const char *argv[] = {"EVAL", lua_publish, "2",   f->keys.state, f->keys.log,
                          text,   epoch,       f->id, LOG_MAXLEN};
    if (command(f->cmd, on_publish, f, 9, argv) == 0)
        f->counts[FLEET_COUNT_PUBLISHED]++;
    free(text);
}

static void
on_publish_ev(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    publish(arg);
}

/* control_changed()'s listener: changes the store's state made are not sent back */
static void
on_change(void *arg)
{
    struct fleet *f = arg;
    if (!f->applying)
        event_active(f->publish_ev, 0, 0);
}

/* ---- membership ---------------------------------------------------------- */

static void
on_simple(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    char why[256];
    if (reply == NULL)
        return;
    f->last_cmd_reply_ms = mono_ms();
    if (reply_error(reply, why, sizeof(why)))
        log_warn("fleet \"%s\": the store refused a heartbeat: %s", f->conf.fleet, why);
    (void)ac;
}

static void
on_view(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    const redisReply *r = reply;
    if (r == NULL)
        return;
    f->last_cmd_reply_ms = mono_ms();
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_ARRAY || r->element[1]->type != REDIS_REPLY_ARRAY)
        return;
    json_t *members = json_array();
    for (size_t i = 0; i < r->element[0]->elements; i++) {
        const redisReply *m = r->element[0]->element[i];
        struct fleet_member rec;
        char err[200];
        memset(&rec, 0, sizeof(rec));
        if (m->type != REDIS_REPLY_STRING ||
            fleet_member_decode(m->str, m->len, &rec, err, sizeof(err)) != 0)
            continue;
        json_array_append_new(members, fleet_member_json(&rec));
    }
    const redisReply *op = r->element[1];
    const char *fields[2 * FLEET_OP_MEMBERS_MAX + 32], *values[2 * FLEET_OP_MEMBERS_MAX + 32];
    size_t n = 0;
    for (size_t i = 0; i + 1 < op->elements && n < sizeof(fields) / sizeof(fields[0]); i += 2) {
        if (op->element[i]->type != REDIS_REPLY_STRING ||
            op->element[i + 1]->type != REDIS_REPLY_STRING)
            continue;
        fields[n] = op->element[i]->str;
        values[n++] = op->element[i + 1]->str;
    }
    json_decref(f->view_members);
    json_decref(f->view_op);
    f->view_members = members;
    f->view_op = fleet_op_json(fields, values, n);
    f->view_ms = wall_ms();
    (void)ac;
}

static void
member_record(const struct fleet *f, struct fleet_member *m)
{
    memset(m, 0, sizeof(*m));
    snprintf(m->id, sizeof(m->id), "%s", f->id);
    snprintf(m->admin, sizeof(m->admin), "%s", f->admin);
    m->pid = getpid();
    m->started_ms = f->started_ms;
    m->heartbeat_ms = wall_ms();
    m->version = f->version;
    if (f->op.active)
        snprintf(m->operation, sizeof(m->operation), "fleet-op-%llu",
                 (unsigned long long)f->op.id);
    for (size_t i = 0; i < f->rt->nlisteners; i++) {
        const struct rt_listener *l = &f->rt->listeners[i];
        if (l->metric_slot < 0)
            continue;
        m->sessions += metric_sum_listener(l->metric_slot, METRIC_L_CLIENT_ACCEPTED) -
                       metric_sum_listener(l->metric_slot, METRIC_L_CLIENT_CLOSED);
        m->epoch += control_epoch(l->metric_slot);
        if (m->nroles == FLEET_ROLES_MAX)
            continue;
        struct fleet_role *r = &m->roles[m->nroles++];
        int swapped = l->shadow != NULL && control_roles_swapped(l->metric_slot);
        const struct rt_backend *p = swapped ? l->shadow : l->primary;
        const struct rt_backend *s = swapped ? l->primary : l->shadow;
        snprintf(r->listener, sizeof(r->listener), "%s", l->conf->name);
        snprintf(r->primary, sizeof(r->primary), "%s", p->conf->name);
        snprintf(r->shadow, sizeof(r->shadow), "%s", s ? s->conf->name : "");
        r->epoch = control_epoch(l->metric_slot);
        r->paused = control_paused(l->metric_slot);
    }
}

static void
on_reports(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    const redisReply *r = reply;
    (void)ac;
    if (r == NULL)
        return;
    f->last_cmd_reply_ms = mono_ms();
    if (r->type != REDIS_REPLY_ARRAY)
        return;
    json_t *all = json_object();
    for (size_t i = 0; i + 1 < r->elements; i += 2) {
        const redisReply *id = r->element[i], *text = r->element[i + 1];
        if (id->type != REDIS_REPLY_STRING || text->type != REDIS_REPLY_STRING ||
            text->len > STATE_FILE_MAX_BYTES || id->len >= CONF_NAME_MAX)
            continue;
        json_t *rep = json_loadb(text->str, text->len, 0, NULL);
        if (json_is_object(rep))
            json_object_set_new(all, id->str, rep);
        else
            json_decref(rep);
    }
    json_decref(f->view_reports);
    f->view_reports = all;
}

/* publish_report - this member's shadow report for the fleet's (GET ...?scope=fleet) */
static void
publish_report(struct fleet *f)
{
    json_t *rep = shadow_report_json(REPORT_TOP_N);
    char *text = rep ? json_dumps(rep, JSON_COMPACT) : NULL;
    json_decref(rep);
    if (text != NULL) {
        const char *set[] = {"SET", f->keys.report, text, "PX", REPORT_TTL_MS};
        command(f->cmd, on_simple, f, 5, set);
        free(text);
    }
    const char *get[] = {"EVAL", lua_reports, "1", f->keys.members, f->keys.report_prefix};
    command(f->cmd, on_reports, f, 5, get);
}

static void
heartbeat(struct fleet *f)
{
    struct fleet_member m;
    char ttl[16], score[24], old[24];
    if (f->link != LINK_UP)
        return;
    member_record(f, &m);
    char *text = fleet_member_encode(&m);
    if (text == NULL)
        return;
    snprintf(ttl, sizeof(ttl), "%d", MEMBER_TTL_MS);
    snprintf(score, sizeof(score), "%lld", (long long)m.heartbeat_ms);
    snprintf(old, sizeof(old), "%lld", (long long)(m.heartbeat_ms - 3600 * 1000));
    const char *set[] = {"SET", f->keys.member, text, "PX", ttl};
    const char *zadd[] = {"ZADD", f->keys.members, score, f->id};
    const char *trim[] = {"ZREMRANGEBYSCORE", f->keys.members, "-inf", old};
    const char *view[] = {"EVAL", lua_view, "2", f->keys.members, f->keys.op,
                          f->keys.member_prefix};
    command(f->cmd, on_simple, f, 5, set);
    command(f->cmd, on_simple, f, 4, zadd);
    command(f->cmd, on_simple, f, 4, trim);
    command(f->cmd, on_view, f, 6, view);
    free(text);
    if (f->ticks++ % REPORT_EVERY == 0)
        publish_report(f);
}

/* every second: heartbeat, and the watchdog of a store that stopped answering */
static void
on_tick(evutil_socket_t fd, short what, void *arg)
{
    struct fleet *f = arg;
    uint64_t now = mono_ms();
    (void)fd;
    (void)what;
    frozen(f, now);
    f->last_tick_ms = now;
    /* without the store there is nothing to catch up with: serve with the last state known */
    if (!f->catching_up || f->link != LINK_UP) {
        f->catching_up = f->catching_up && f->link == LINK_UP;
        lease_renew(f);
    }
    if (f->link == LINK_CONNECTING && now - f->connect_started_ms > STORE_SILENCE_MS) {
        lost(f, "no answer within 5 s of connecting");
        return;
    }
    if (f->link != LINK_UP)
        return;
    if (now - f->last_cmd_reply_ms > STORE_SILENCE_MS ||
        now - f->last_sub_reply_ms > STORE_SILENCE_MS) {
        lost(f, "no answer for 5 s");
        return;
    }
    heartbeat(f);
}

/* join_timeout passed without the store: start with what this member has */
static void
on_join_timeout(evutil_socket_t fd, short what, void *arg)
{
    struct fleet *f = arg;
    (void)fd;
    (void)what;
    if (f->ready_called)
        return;
    log_error("fleet \"%s\": store %s:%u unreachable for %u ms at start (%s): accepting "
              "clients with %s; the store's state is applied as soon as it answers",
              f->conf.fleet, f->conf.store.host, f->conf.store.port, f->conf.join_timeout_ms,
              f->lost_reason[0] ? f->lost_reason : "no answer",
              f->rt->conf->control.state_file[0] ? "the state file's roles"
                                                 : "the configuration's roles (no state_file: "
                                                   "configure one so a restart after a cutover "
                                                   "never depends on the store)");
    call_ready(f);
}

/* ---- the cutover's ask --------------------------------------------------- */

static void
on_op_start(redisAsyncContext *ac, void *reply, void *priv)
{
    struct fleet *f = priv;
    const redisReply *r = reply;
    char why[300];
    if (r == NULL)
        return;
    f->last_cmd_reply_ms = mono_ms();
    if (reply_error(r, why, sizeof(why)) || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
        char msg[400];
        snprintf(msg, sizeof(msg), "refused: the store could not open the operation (%s)",
                 r->type == REDIS_REPLY_ERROR ? why : "unexpected reply");
        if (f->asked_local)
            cutover_fail_pending(f->cutover, f->asked_local, msg);
        f->asked_local = 0;
        return;
    }
    if (r->element[0]->integer == 0) {
        snprintf(why, sizeof(why), "refused: fleet-op-%lld is in progress in the fleet",
                 r->element[1]->integer);
        if (f->asked_local)
            cutover_fail_pending(f->cutover, f->asked_local, why);
        f->asked_local = 0;
    }
    /* opened: the log's "op" entry makes every member, this one too, join it */
    (void)ac;
}

static int
fleet_ask(void *arg, unsigned local_id, enum cutover_kind kind, uint32_t max_pause_ms, int force,
          char *err, size_t errlen)
{
    struct fleet *f = arg;
    char mp[16], now[24];
    if (f->link != LINK_UP) {
        snprintf(err, errlen, "the fleet's store is unreachable: no member starts a flip on its "
                              "own");
        f->counts[FLEET_COUNT_REFUSED]++;
        return -1;
    }
    if (f->op.active) {
        snprintf(err, errlen, "fleet-op-%llu is in progress", (unsigned long long)f->op.id);
        return -1;
    }
    snprintf(mp, sizeof(mp), "%u", max_pause_ms);
    snprintf(now, sizeof(now), "%lld", (long long)wall_ms());
    const char *argv[] = {"EVAL",
                          lua_op_start,
                          "5",
                          f->keys.op,
                          f->keys.log,
                          f->keys.members,
                          f->keys.op_counter,
                          f->keys.state,
                          kind == CUTOVER_FORWARD ? "cutover" : "rollback",
                          mp,
                          force ? "1" : "0",
                          f->id,
                          now,
                          f->keys.member_prefix,
                          f->keys.op_archive_prefix,
                          LOG_MAXLEN};
    if (command(f->cmd, on_op_start, f, 16, argv) != 0) {
        snprintf(err, errlen, "the fleet's store is unreachable");
        return -1;
    }
    f->asked_local = local_id;
    return 0;
}

/* ---- life ------------------------------------------------------------------ */

static void
member_id(const struct runtime *rt, char *out, size_t outlen)
{
    char host[CONF_NAME_MAX] = "tandem";
    const struct conf *c = rt->conf;
    if (c->control.member[0]) {
        snprintf(out, outlen, "%s", c->control.member);
        return;
    }
    gethostname(host, sizeof(host) - 1);
    host[strcspn(host, ".")] = '\0';
    if (c->admin.enabled)
        snprintf(out, outlen, "%.40s-%u", host, c->admin.addr.port);
    else
        snprintf(out, outlen, "%.40s-%ld", host, (long)getpid());
}

/* store_tls_ctx - the client TLS context of a rediss:// store; NULL with err filled. */
static SSL_CTX *
store_tls_ctx(const struct conf_control *c, char *err, size_t errlen)
{
    return runtime_client_tls(c->store_tls, c->store_tls_ca_file, c->store_tls_cert,
                              c->store_tls_key, err, errlen);
}

/* A rediss:// store: the TLS context and the tunnel hiredis connects through. */
static int
open_tunnel(struct fleet *f)
{
    const struct conf_control *c = &f->conf;
    char err[CONF_PATH_MAX + 200];
    f->store_tls = store_tls_ctx(c, err, sizeof(err));
    if (f->store_tls != NULL)
        f->tunnel = tls_tunnel_new(f->base, f->store_tls, c->store.host, c->store.port,
                                   c->store_tls_server_name[0] ? c->store_tls_server_name
                                                               : c->store.host,
                                   c->store_tls == CONF_TLS_VERIFY_FULL, err, sizeof(err));
    if (f->tunnel == NULL) {
        log_error("fleet \"%s\": store rediss://%s:%u: %s", c->fleet, c->store.host, c->store.port,
                  err);
        return -1;
    }
    return 0;
}

struct fleet *
fleet_open(struct event_base *base, const struct runtime *rt, struct state *st,
           struct cutover *c, void (*ready)(void *arg), void *arg)
{
    struct fleet *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->base = base;
    f->rt = rt;
    f->state = st;
    f->cutover = c;
    f->conf = rt->conf->control;
    f->ready = ready;
    f->ready_arg = arg;
    f->started_ms = wall_ms();
    f->backoff_ms = BACKOFF_FIRST_MS;
    f->last_tick_ms = mono_ms();
    snprintf(f->last_id, sizeof(f->last_id), "0-0");
    member_id(rt, f->id, sizeof(f->id));
    if (rt->conf->admin.enabled)
        snprintf(f->admin, sizeof(f->admin), "%s:%u", rt->conf->admin.addr.host,
                 rt->conf->admin.addr.port);
    fleet_keys_init(&f->keys, f->conf.fleet, f->id);
    if (f->conf.store_tls != CONF_TLS_DISABLE && open_tunnel(f) != 0) {
        fleet_free(f);
        return NULL;
    }
    f->tick_ev = event_new(base, -1, EV_PERSIST, on_tick, f);
    f->retry_ev = event_new(base, -1, 0, on_retry, f);
    f->teardown_ev = event_new(base, -1, 0, on_teardown, f);
    f->publish_ev = event_new(base, -1, 0, on_publish_ev, f);
    f->join_ev = event_new(base, -1, 0, on_join_timeout, f);
    if (!f->tick_ev || !f->retry_ev || !f->teardown_ev || !f->publish_ev || !f->join_ev) {
        fleet_free(f);
        return NULL;
    }
    struct timeval tick = {.tv_sec = HEARTBEAT_MS / 1000, .tv_usec = 0};
    struct timeval join = {.tv_sec = f->conf.join_timeout_ms / 1000,
                           .tv_usec = (suseconds_t)(f->conf.join_timeout_ms % 1000) * 1000};
    event_add(f->tick_ev, &tick);
    event_add(f->join_ev, &join);
    struct cutover_fleet hooks = {.ask = fleet_ask,
                                  .drained = fleet_drained,
                                  .late = fleet_late,
                                  .stepped = fleet_stepped,
                                  .arg = f};
    cutover_set_fleet(c, &hooks);
    control_on_change(on_change, f);
    log_info("fleet \"%s\": member \"%s\", store %s:%u/%u%s", f->conf.fleet, f->id,
             f->conf.store.host, f->conf.store.port, f->conf.store_db,
             f->conf.store_password_file[0] ? " (AUTH from password_file)" : "");
    do_connect(f);
    return f;
}

void
fleet_set_runtime(struct fleet *f, const struct runtime *rt)
{
    const struct conf_control *n = &rt->conf->control;
    if (!n->store_enabled || strcmp(n->fleet, f->conf.fleet) != 0 ||
        strcmp(n->store.host, f->conf.store.host) != 0 || n->store.port != f->conf.store.port ||
        n->store_db != f->conf.store_db)
        log_warn("fleet: the store or the fleet's name changed: takes effect at the next "
                 "restart");
    f->rt = rt;
    /*
     * control_load() just put the file's weights and mode in force on this
     * member only: the fleet's state is read again and applied over them
     * rather than the file's being published to every member.
     */
    f->reloaded = 1;
    if (f->link == LINK_UP) {
        const char *join[] = {"EVAL", lua_join, "2", f->keys.state, f->keys.op};
        if (command(f->cmd, on_join, f, 5, join) != 0)
            f->reloaded = 0;
    }
}

json_t *
fleet_report_json(const struct fleet *f, size_t top_n)
{
    char now[40];
    size_t n = 0, cap = (f->view_reports ? json_object_size(f->view_reports) : 0) + 1;
    json_t **reports = calloc(cap, sizeof(*reports));
    const char **members = calloc(cap, sizeof(*members));
    json_t *own = shadow_report_json(0), *merged = NULL;
    const char *id;
    json_t *rep;
    if (reports == NULL || members == NULL || own == NULL)
        goto out;
    /* this member's as it is now; the others' as last published (at most REPORT_EVERY s old) */
    reports[n] = own;
    members[n++] = f->id;
    if (f->view_reports) {
        json_object_foreach(f->view_reports, id, rep) {
            if (strcmp(id, f->id) == 0 || n == cap)
                continue;
            reports[n] = rep;
            members[n++] = id;
        }
    }
    log_format_time(wall_ms(), now, sizeof(now));
    merged = fleet_report_merge(reports, members, n, top_n, now);
out:
    json_decref(own);
    free(reports);
    free(members);
    return merged;
}

int
fleet_connected(const struct fleet *f)
{
    return f != NULL && f->link == LINK_UP;
}

void
fleet_count_refused(struct fleet *f)
{
    f->counts[FLEET_COUNT_REFUSED]++;
}

void
fleet_render_prometheus(const struct fleet *f, FILE *out)
{
#define FLEET_COUNT_RENDER(id, name, help)                                                        \
    fprintf(out,                                                                                   \
            "# HELP tandem_fleet_" name "_total " help "\n"                                        \
            "# TYPE tandem_fleet_" name "_total counter\n"                                         \
            "tandem_fleet_" name "_total %llu\n",                                                  \
            (unsigned long long)f->counts[FLEET_COUNT_##id]);
    FLEET_COUNTS(FLEET_COUNT_RENDER)
#undef FLEET_COUNT_RENDER
    fprintf(out,
            "# HELP tandem_fleet_store_up 1 while the store answers and its state is applied\n"
            "# TYPE tandem_fleet_store_up gauge\n"
            "tandem_fleet_store_up %d\n"
            "# HELP tandem_fleet_state_version The fleet's state version applied here\n"
            "# TYPE tandem_fleet_state_version gauge\n"
            "tandem_fleet_state_version %llu\n"
            "# HELP tandem_fleet_members Live members in the last view of the store\n"
            "# TYPE tandem_fleet_members gauge\n"
            "tandem_fleet_members %zu\n",
            f->link == LINK_UP, (unsigned long long)f->version,
            f->view_members ? json_array_size(f->view_members) : (size_t)0);
}

json_t *
fleet_json(const struct fleet *f)
{
    char addr[CONF_HOST_MAX + 16], when[40];
    snprintf(addr, sizeof(addr), "%s:%u/%u", f->conf.store.host, f->conf.store.port,
             f->conf.store_db);
    json_t *store = json_pack("{s:s, s:b}", "address", addr, "connected", f->link == LINK_UP);
    if (f->lost_reason[0]) {
        log_format_time(f->lost_at_ms, when, sizeof(when));
        json_object_set_new(store, "last_error", json_string(f->lost_reason));
        json_object_set_new(store, "last_error_at", json_string(when));
    }
    json_t *o = json_pack("{s:s, s:s, s:o, s:I}", "fleet", f->conf.fleet, "member", f->id,
                          "store", store, "version", (json_int_t)f->version);
    json_object_set_new(o, "members", f->view_members ? json_incref(f->view_members)
                                                      : json_array());
    json_object_set_new(o, "operation", f->view_op ? json_incref(f->view_op) : json_null());
    if (f->view_ms) {
        log_format_time(f->view_ms, when, sizeof(when));
        json_object_set_new(o, "as_of", json_string(when));
    } else {
        json_object_set_new(o, "as_of", json_null());
    }
    return o;
}

void
fleet_free(struct fleet *f)
{
    if (f == NULL)
        return;
    control_off_change(on_change, f);
    cutover_set_fleet(f->cutover, NULL);
    control_set_write_lease(0);
    fence_release(f);
    redisAsyncContext *cmd = f->cmd, *sub = f->sub;
    f->cmd = f->sub = NULL;
    f->link = LINK_DOWN; /* lost() from the disconnect callbacks: nothing to do */
    if (cmd)
        redisAsyncFree(cmd);
    if (sub)
        redisAsyncFree(sub);
    tls_tunnel_free(f->tunnel);
    if (f->store_tls)
        SSL_CTX_free(f->store_tls);
    if (f->tick_ev)
        event_free(f->tick_ev);
    if (f->retry_ev)
        event_free(f->retry_ev);
    if (f->teardown_ev)
        event_free(f->teardown_ev);
    if (f->publish_ev)
        event_free(f->publish_ev);
    if (f->join_ev)
        event_free(f->join_ev);
    json_decref(f->view_members);
    json_decref(f->view_op);
    json_decref(f->view_reports);
    free(f->last_text);
    free(f);
}

int
fleet_check(const struct conf *conf, FILE *out, FILE *err)
{
    char password[PASSWORD_MAX], why[CONF_PATH_MAX + 100];
    const struct conf_control *c = &conf->control;
    (void)out;
    if (c->store_enabled && c->store_tls != CONF_TLS_DISABLE) {
        /* the CA, certificate and key files load */
        SSL_CTX *ctx = store_tls_ctx(c, why, sizeof(why));
        if (ctx == NULL) {
            fprintf(err, "%s: control: store: %s\n", conf->file[0] ? conf->file : "tandem", why);
            return -1;
        }
        SSL_CTX_free(ctx);
    }
    if (!c->store_enabled || c->store_password_file[0] == '\0')
        return 0;
    int rc = read_password(c->store_password_file, password, sizeof(password), why, sizeof(why));
    explicit_bzero(password, sizeof(password));
    if (rc != 0) {
        fprintf(err, "%s: %s\n", conf->file[0] ? conf->file : "tandem", why);
        return -1;
    }
    return 0;
}
