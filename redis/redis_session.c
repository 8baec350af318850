/*
 * redis_session.c - a Redis client session relayed to the primary.
 *
 *   client ──requests──► frame (resp_request_parse) ──batch──► primary
 *      ▲                    │ classify (rediscmd), one unit per command
 *      │                    └─► redis_shadow_command (mirror decision)
 *      └──replies── frame (resp_reader) ◄── primary, in order, unit by unit
 *
 * Requests are framed, not decoded: every command whole in client.in is
 * parsed in place, and the run of commands read in one go is moved to the
 * primary with one evbuffer_remove_buffer() and one send (pipelining costs
 * one syscall per batch, not per command).  Replies are framed on the fly
 * by a resumable reader and streamed to the client as they arrive: a large
 * reply is never held whole.  Only what tandem answers itself (HELLO 3,
 * protocol errors, an unreachable primary) is built here.
 *
 * The sockets are the engine's (engine/session.c): its handlers read and
 * write them, call the op_* hooks here with what arrived, and then
 * session_settle(), the one place that frees a session, so nothing here
 * ever frees the session it is running for.
 */
#include "redis/redis_session.h"

#include <errno.h>
#include <stddef.h>
#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "metrics/metric.h"
#include "control/control.h"
#include "metrics/log.h"
#include "redis/redis_pool.h"
#include "redis/redis_session_int.h"
#include "control/runtime.h"
#include "engine/worker.h"
#include "routing/route.h"

/* Stop reading the client while this many of its commands await the primary. */
#define MAX_OUTSTANDING 65536
/*
 * A shared server connection carries every sharing client's commands: its
 * unsent bytes stop a client's reading at this mark (one loop turn of 50
 * clients pipelining 16 MSETs is already 300 KB).
 */
#define SHARED_BACKPRESSURE_BYTES (8 * SESSION_BACKPRESSURE_BYTES)
/* Recycled units kept per session. */
#define SPARE_UNITS 64
/* CLIENT SETNAME values kept for the shadow (Redis refuses none, but names are short). */
#define CLIENT_NAME_MAX 512


/*
 * Does the primary want AUTH before anything else?  Learned per backend
 * (metric slot) from its -NOAUTH answers, or known when tandem itself has a
 * password for it; until then a session is not held to the pre-auth limits,
 * so the first client of a password-less server is never refused.
 */
static int auth_required[METRIC_MAX_BACKENDS];

static const struct session_ops redis_session_ops;

#define slog(s, level, ...) log_at(level, (s)->base.id, (s)->base.peer, __VA_ARGS__)

void
redis_count_backend(struct redis_session *s, const struct rt_backend *b,
                    enum metric_backend_counter c, uint64_t n)
{
    session_count_backend(&s->base, b, c, n);
}

/* A request answered by backend b (the primary, or the shadow for a routed read). */
static void
count_request(struct redis_session *s, const struct rt_backend *b, enum req_kind kind)
{
    if (s->base.lis->metric_slot >= 0 && b->metric_slot >= 0 && b->metric_slot < METRIC_MAX_BACKENDS)
        metric_add(&s->base.w->metrics->requests[s->base.lis->metric_slot][b->metric_slot][kind], 1);
}

static int
backend_wants_auth(const struct redis_session *s)
{
    int slot = s->base.be->metric_slot;
    if (s->base.be->password[0])
        return 1;
    return slot >= 0 && slot < METRIC_MAX_BACKENDS &&
           __atomic_load_n(&auth_required[slot], __ATOMIC_RELAXED);
}

/* The client goes: nothing more is read from it, nor for it from a shared connection. */
static void
op_leaving(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    s->input_closed = 1;
    redis_pool_leave(s, REDIS_ROLE_PRIMARY);
}

/* ------------------------------------------------------------------ */
/* Units.                                                              */

struct redis_unit *
redis_unit_new(struct redis_session *s)
{
    struct redis_unit *u = s->spare;
    if (u != NULL) {
        s->spare = redis_unit_of(u->base.next);
        s->nspare--;
    } else if ((u = malloc(sizeof(*u))) == NULL) {
        return NULL;
    }
    memset(u, 0, sizeof(*u));
    u->base.forced = -1;
    u->base.closed = 1; /* one command: whole once read */
    u->preplies = 1;
    u->sreplies = 1;
    return u;
}

/*
 * Comparisons are recycled like units: a mirrored command's comparison is
 * two samples of 256 bytes, and calloc/free of it for every write cost more
 * (5% of tandem's CPU in shadow mode) than the rest of its bookkeeping.
 */
struct redis_compare *
redis_cmp_new(struct redis_session *s)
{
    struct redis_compare *c = s->spare_cmp;
    if (c != NULL) {
        s->spare_cmp = c->next;
        s->nspare_cmp--;
    } else if ((c = malloc(sizeof(*c))) == NULL) {
        return NULL;
    }
    memset(c, 0, offsetof(struct redis_compare, psample));
    return c;
}

void
redis_cmp_free(struct redis_session *s, struct redis_compare *c)
{
    if (c == NULL)
        return;
    free(c->req);
    c->req = NULL;
    if (s->nspare_cmp < SPARE_UNITS) {
        c->next = s->spare_cmp;
        s->spare_cmp = c;
        s->nspare_cmp++;
    } else {
        free(c);
    }
}

/* ------------------------------------------------------------------ */
/* The client's identity (redis_session_int.h, "Identity").            */

void
redis_ident_free(struct redis_ident *id)
{
    if (id == NULL)
        return;
    OPENSSL_cleanse(id, sizeof(*id) + id->user_len + id->pass_len + 2);
    free(id);
}

/*
 * ident_new - a copy of the login a client asks for: user (NULL: AUTH with
 * the password alone) and pass.  NULL when a value is longer than tandem
 * keeps (RS_IDENT_*_MAX) or out of memory.
 */
static struct redis_ident *
ident_new(const struct resp_arg *user, const struct resp_arg *pass)
{
    size_t ulen = user ? resp_arg_decode(user, NULL, 0) : 0;
    size_t plen = resp_arg_decode(pass, NULL, 0);
    if (ulen > RS_IDENT_USER_MAX || plen > RS_IDENT_PASS_MAX)
        return NULL;
    struct redis_ident *id = malloc(sizeof(*id) + ulen + plen + 2);
    if (id == NULL)
        return NULL;
    id->has_user = user != NULL;
    id->user_len = ulen;
    id->pass_len = plen;
    id->user = id->buf;
    id->pass = id->buf + ulen + 1;
    if (user)
        resp_arg_decode(user, (uint8_t *)id->user, ulen);
    id->user[ulen] = '\0';
    resp_arg_decode(pass, (uint8_t *)id->pass, plen);
    id->pass[plen] = '\0';
    return id;
}

/*
 * redis_shadow_login_ok - may the shadow connection act for the client?
 * As the client's own identity, yes.  A client that never logged in is the
 * primary's default user: the shadow's default user, or tandem's own login
 * there when the operator configured one (their choice for an open
 * primary), but tandem's login only once the primary has shown it runs
 * this session's commands without a login (default_open), or when the
 * primary connection is tandem's own login too (handed over by an earlier
 * cutover).  Anything else would give the client rights it does not have.
 */
int
redis_shadow_login_ok(const struct redis_session *s)
{
    /* a session that never mirrored has no shadow login: the default user's */
    switch (s->shadow != NULL ? s->shadow->login : RL_DEFAULT) {
    case RL_CLIENT:
        return s->ident != NULL;
    case RL_DEFAULT:
        return s->ident == NULL;
    case RL_TANDEM:
        return s->ident == NULL && (s->primary_login == RL_TANDEM ||
                                    (s->primary_login == RL_DEFAULT && s->default_open));
    }
    return 0;
}

static void
unit_free(struct redis_session *s, struct redis_unit *u)
{
    redis_cmp_free(s, u->cmp);
    if (u->exec_reply != NULL)
        evbuffer_free(u->exec_reply);
    free(u->name);
    free(u->local);
    redis_ident_free(u->ident);
    if (s->nspare < SPARE_UNITS) {
        u->base.next = s->spare ? &s->spare->base : NULL;
        s->spare = u;
        s->nspare++;
    } else {
        free(u);
    }
}

/* The mirror queue's hook: u leaves the list for good (mirror_complete, mirror_release_all). */
void
redis_unit_release(void *owner, struct mirror_unit *u)
{
    unit_free(owner, redis_unit_of(u));
}

/* The unit awaiting the primary's reply (units tandem answers itself included), or NULL. */
static struct redis_unit *
pcur(const struct redis_session *s)
{
    return redis_unit_of(s->base.mirror.pcur);
}

/* ------------------------------------------------------------------ */
/* Ending a session.                                                   */

/* Queue "-<msg>" for the client. */
static void
send_error(struct redis_session *s, const char *msg)
{
    uint8_t buf[600];
    size_t n = resp_build_error(buf, sizeof(buf), msg);
    if (n > 0)
        evbuffer_add(s->base.client.out, buf, n);
}

/*
 * fail_all - every command still awaiting an answer gets msg as its reply
 * (a client counting replies must not hang), at least one is sent, and the
 * session closes.  For an unreachable or lost primary.
 */
static void
fail_all(struct redis_session *s, enum metric_client_error reason, const char *msg)
{
    unsigned sent = 0;
    if (s->base.state == SESSION_LINGER || s->base.state == SESSION_DEAD || s->base.state == SESSION_SHADOW_DRAIN)
        return;
    slog(s, reason == METRIC_ERR_SHUTDOWN ? CONF_LOG_INFO : CONF_LOG_WARN, "closing: %s", msg);
    session_count_client_error(&s->base, reason);
    for (struct redis_unit *u = pcur(s); u; u = redis_unit_of(u->base.next)) {
        if (u->base.primary_done || u->base.routed)
            continue; /* a routed read's answer is the shadow's: see below */
        if (u->local)
            evbuffer_add(s->base.client.out, u->local, u->local_len);
        else
            for (uint32_t i = 0; i < (u->preplies ? u->preplies : 1); i++)
                send_error(s, msg);
        sent++;
    }
    /* the routed read is the last the client awaits; half answered, it cannot be mended */
    if (s->base.routed != NULL && s->route.forwarded == 0) {
        send_error(s, msg);
        sent++;
    }
    if (sent == 0)
        send_error(s, msg);
    session_set_state(&s->base, SESSION_LINGER);
}

/* The plug-in's parts at the very end (engine/session.c frees the rest first). */
static void
op_destroy(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    redis_shadow_release(s);
    session_shadow_conn_free(base);
    if (s->route.buf)
        evbuffer_free(s->route.buf);
    while (s->spare) {
        struct redis_unit *u = s->spare;
        s->spare = redis_unit_of(u->base.next);
        free(u);
    }
    while (s->spare_cmp) {
        struct redis_compare *c = s->spare_cmp;
        s->spare_cmp = c->next;
        free(c);
    }
    free(s->client_name);
    redis_ident_free(s->ident);
    free(s->reader);
    free(s);
}

/*
 * Requests wait after a protocol error, and while too many answers are
 * owed.  A shared session also waits while a stateful command waits for
 * its shared connection, and while its client does not take its replies
 * or the shared connection has a backlog: the engine cannot stop reading
 * a connection others share, so the client's own commands stop instead
 * (its replies, or the settle after them, start it again).
 */
static int
op_client_wanted(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    if (s->shared && (s->mux_hold ||
                      evbuffer_get_length(s->base.client.out) >= SESSION_BACKPRESSURE_BYTES ||
                      redis_pool_backlog(s, REDIS_ROLE_PRIMARY) >= SHARED_BACKPRESSURE_BYTES))
        return 0;
    return !s->input_closed && s->base.outstanding < MAX_OUTSTANDING;
}

/* ------------------------------------------------------------------ */
/* Connecting to the primary.                                          */

/* The primary could not be reached: every request waiting gets the error. */
static void
backend_failed(struct session *base, const char *why)
{
    struct redis_session *s = (struct redis_session *)base;
    char msg[512];
    snprintf(msg, sizeof(msg), "ERR tandem: could not connect to backend \"%s\" at %s: %s",
             s->base.be->conf->name, s->base.be->addr_text, why);
    redis_count_backend(s, s->base.be, METRIC_B_CONNECT_FAILURES, 1);
    fail_all(s, METRIC_ERR_BACKEND_UNREACHABLE, msg);
}

static void client_input(struct session *base);
static void primary_ready(struct redis_session *s);

/*
 * server_tls - advance the primary's TLS handshake (a backend with tls
 * require or verify-full: Redis speaks TLS from the first byte).  1 once
 * done, 0 in progress, -1 failed: the client has its -ERR and the log
 * says why (a certificate the CA did not sign, a name that does not match).
 */
static int
server_tls(struct redis_session *s)
{
    struct conn *c = &s->base.server;
    const struct conf_backend *cb = s->base.be->conf;
    enum conn_io io = session_backend_tls(c, s->base.be);
    if (io == CONN_AGAIN)
        return 0;
    if (io == CONN_OK)
        return 1;
    slog(s, CONF_LOG_WARN, "TLS with backend \"%s\" failed: %s", cb->name,
         conn_tls_error(c, "handshake failed"));
    backend_failed(&s->base, conn_tls_error(c, "TLS handshake failed"));
    return -1;
}

static void
op_server_connected(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    if (s->base.be->tls != NULL && server_tls(s) <= 0)
        return; /* op_server_handshake carries on */
    primary_ready(s);
}

/* The primary's TLS handshake: 1 none under way, 0 it just completed, -1 stop here. */
static int
op_server_handshake(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    if (s->base.server_ready || s->base.be->tls == NULL)
        return 1;
    if (server_tls(s) <= 0)
        return -1;
    primary_ready(s);
    return s->base.state < SESSION_LINGER ? 0 : -1;
}

/* The connection to the primary carries RESP now: what the client sent goes. */
static void
primary_ready(struct redis_session *s)
{
    struct session *base = &s->base;
    redis_count_backend(s, s->base.be, METRIC_B_SERVER_OPENED, 1);
    s->base.server_ready = 1;
    slog(s, CONF_LOG_DEBUG, "connected to \"%s\"", s->base.be->conf->name);
    /* a shared session taking its own connection is active already: what it sent waits in server.out */
    if (s->base.state == SESSION_ACTIVE)
        return;
    session_set_state(&s->base, SESSION_ACTIVE);
    client_input(base); /* bytes that arrived while connecting were framed already */
}

/* ------------------------------------------------------------------ */
/* Client input.                                                       */

/*
 * CLIENT REPLY (redis_session_int.h): does the reply to u that starts now,
 * with type byte `first`, reach the client?  OFF and SKIP accepted answer
 * nothing; ON accepted answers whatever the mode was.
 */
static int
client_reply_silent(struct redis_session *s, const struct redis_unit *u, uint8_t first)
{
    if (u->skip_reset)
        s->reply_skip = 0;
    if (u->reply_mode != RR_NONE && first == '+')
        return u->reply_mode != RR_ON;
    return !u->pushes && (s->reply_off || s->reply_skip);
}

/* u is answered (accepted: ok): a SKIP ends with it, a CLIENT REPLY takes effect. */
static void
client_reply_done(struct redis_session *s, const struct redis_unit *u, int ok)
{
    s->reply_skip = 0;
    if (!ok)
        return;
    switch ((enum rs_reply)u->reply_mode) {
    case RR_ON:
        s->reply_off = 0;
        break;
    case RR_OFF:
        s->reply_off = 1;
        break;
    case RR_SKIP:
        s->reply_skip = !s->reply_off;
        break;
    case RR_NONE:
        break;
    }
}

/* A unit tandem answers itself: its reply is ready now, in its turn. */
static int
answered_here(const struct redis_unit *u)
{
    return u != NULL && u->local != NULL;
}

/* Answer units tandem answers itself, when their turn comes. */
static void
emit_local_replies(struct redis_session *s)
{
    struct redis_unit *u;
    while (answered_here(u = pcur(s))) {
        /* a protocol error is said whatever the client asked: the connection ends */
        if (!client_reply_silent(s, u, (uint8_t)u->local[0]) || u->close_after)
            evbuffer_add(s->base.client.out, u->local, u->local_len);
        client_reply_done(s, u, 0);
        s->base.outstanding--;
        mirror_primary_answered(&s->base.mirror, &u->base, 0);
        if (u->close_after)
            session_close(&s->base);
    }
    mirror_complete(&s->base.mirror);
}

/* A unit tandem answers itself with these n bytes (a whole reply), in its turn. */
static int
add_local_reply(struct redis_session *s, const uint8_t *buf, size_t n, int close_after)
{
    struct redis_unit *u = redis_unit_new(s);
    if (u == NULL || n == 0 || (u->local = malloc(n)) == NULL) {
        if (u)
            unit_free(s, u);
        return -1;
    }
    memcpy(u->local, buf, n);
    u->local_len = n;
    u->close_after = close_after != 0;
    u->base.kind = REQ_KIND_SESSION;
    s->base.outstanding++;
    mirror_append(&s->base.mirror, &u->base);
    emit_local_replies(s);
    return 0;
}

/* A unit tandem answers with text (a RESP error line, built here). */
static int
add_local_unit(struct redis_session *s, const char *msg, int close_after)
{
    uint8_t buf[600];
    size_t n = resp_build_error(buf, sizeof(buf), msg);
    return add_local_reply(s, buf, n, close_after);
}

/* Redis's own answer to bytes it cannot parse: the error, then the connection closes. */
static void
protocol_error(struct redis_session *s, const char *err)
{
    char msg[200];
    snprintf(msg, sizeof(msg), "ERR Protocol error: %s", err);
    slog(s, CONF_LOG_INFO, "closing: protocol error: %s", err);
    session_count_client_error(&s->base, METRIC_ERR_PROTOCOL);
    s->input_closed = 1;
    evbuffer_drain(s->base.client.in, evbuffer_get_length(s->base.client.in));
    if (add_local_unit(s, msg, 1) != 0)
        session_close(&s->base);
}

/* A command longer than limits.max_command_size: refused as Redis refuses a bad length. */
static void
too_large(struct redis_session *s)
{
    char err[120];
    snprintf(err, sizeof(err), "command longer than tandem's max_command_size (%u bytes)",
             s->base.rt->conf->limits.max_command_size);
    protocol_error(s, err);
}

static int
arg_is(const struct resp_request *req, size_t i, const char *lit)
{
    return i < req->nargv && resp_arg_equal_ci(&req->argv[i], lit);
}

/* redis_cmd_which - which of the commands the session acts on cmd is (see enum rs_cmd). */
enum rs_cmd
redis_cmd_which(const struct rediscmd *cmd)
{
    static const struct {
        const char *name;
        enum rs_cmd which;
    } names[] = {
        {"hello", RC_HELLO},     {"auth", RC_AUTH},           {"select", RC_SELECT},
        {"client|setname", RC_SETNAME}, {"reset", RC_RESET},  {"multi", RC_MULTI},
        {"exec", RC_EXEC},       {"discard", RC_DISCARD},     {"watch", RC_WATCH},
        {"unwatch", RC_UNWATCH}, {"subscribe", RC_SUBSCRIBE}, {"psubscribe", RC_SUBSCRIBE},
        {"ssubscribe", RC_SUBSCRIBE}, {"unsubscribe", RC_UNSUBSCRIBE},
        {"punsubscribe", RC_UNSUBSCRIBE}, {"sunsubscribe", RC_UNSUBSCRIBE},
        {"client|reply", RC_CLIENT_REPLY}, {"quit", RC_QUIT},
    };
    if (cmd == NULL)
        return RC_OTHER;
    if (!(cmd->flags & (REDISCMD_SESSION | REDISCMD_TX)))
        /* GET, SET ...: no name to compare; of the others only those a
         * stream follows matter: MONITOR, and SYNC/PSYNC (the replication
         * stream: an RDB payload without CRLF, then the write commands) */
        return (cmd->flags & REDISCMD_ADMIN) &&
                       (strcmp(cmd->name, "monitor") == 0 || strcmp(cmd->name, "sync") == 0 ||
                        strcmp(cmd->name, "psync") == 0)
                   ? RC_MONITOR
                   : RC_OTHER;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (strcmp(cmd->name, names[i].name) == 0)
            return names[i].which;
    return RC_OTHER;
}

/* A client name argument as a C string (heap), or NULL when too long or out of memory. */
static char *
arg_string(const struct resp_arg *arg)
{
    size_t n = resp_arg_decode(arg, NULL, 0);
    char *p = n <= CLIENT_NAME_MAX ? malloc(n + 1) : NULL;
    if (p != NULL) {
        resp_arg_decode(arg, (uint8_t *)p, n);
        p[n] = '\0';
    }
    return p;
}

/*
 * Remember what a successful reply to this command will change in the
 * session: track, and u->name for CLIENT SETNAME and HELLO ... SETNAME.
 */
static void
note_session_change(struct redis_session *s, struct redis_unit *u, const struct resp_request *req)
{
    /* the identity matters to the shadow only; a session without one keeps no secret */
    int keep = s->base.mirror.state != MIRROR_OFF;

    switch ((enum rs_cmd)u->which) {
    case RC_HELLO:
        /* HELLO [protover [AUTH user pass] [SETNAME name]] */
        if (arg_is(req, 1, "2") || arg_is(req, 1, "3"))
            u->proto = arg_is(req, 1, "3") ? 3 : 2;
        for (size_t i = 2; i < req->nargv; i++) {
            if (arg_is(req, i, "auth")) {
                if (i + 2 < req->nargv) {
                    u->track = RT_AUTH;
                    redis_ident_free(u->ident); /* HELLO ... AUTH a b AUTH c d: the last */
                    u->ident = keep ? ident_new(&req->argv[i + 1], &req->argv[i + 2]) : NULL;
                }
                i += 2;
            } else if (arg_is(req, i, "setname") && i + 1 < req->nargv) {
                u->name = arg_string(&req->argv[i + 1]);
                i++;
            }
        }
        break;
    case RC_AUTH:
        /* AUTH pass, AUTH user pass; any other arity the primary refuses */
        if (req->argc == 2 || req->argc == 3) {
            u->track = RT_AUTH;
            if (keep)
                u->ident = req->argc == 2 ? ident_new(NULL, &req->argv[1])
                                          : ident_new(&req->argv[1], &req->argv[2]);
        }
        break;
    case RC_SELECT:
        if (req->nargv >= 2) {
            char num[24];
            size_t n = resp_arg_decode(&req->argv[1], (uint8_t *)num, sizeof(num) - 1);
            num[n < sizeof(num) - 1 ? n : sizeof(num) - 1] = '\0';
            u->db = strtoll(num, NULL, 10);
            u->track = RT_SELECT;
        }
        break;
    case RC_SETNAME:
        if (req->nargv >= 3)
            u->name = arg_string(&req->argv[2]);
        break;
    case RC_RESET:
        u->track = RT_RESET;
        break;
    default:
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Read routing, mode split (see redis_session_int.h).                 */

/* Nothing owed to the client, nothing of it waiting: a draining session may close. */
static int
idle(const struct redis_session *s)
{
    return s->base.outstanding == 0 && !s->in_multi && s->base.routed == NULL &&
           evbuffer_get_length(s->base.client.in) == 0;
}

/* The canary rule the session matches by itself (client address, name); at login and on a rename. */
static void
route_match_session(struct redis_session *s)
{
    const struct rt_listener *l = s->base.lis;
    struct canary_session cs = {.application_name = s->client_name, .client = s->route.client};
    s->route.canary = l->ncanary > 0 ? canary_match_session(l->canary, l->ncanary, &cs, false) : -1;
}

/* The rule for one read: the session's, or, with key_prefix rules, matched with its first key. */
static const struct canary_rule *
route_rule(struct redis_session *s, const struct redis_unit *u, const struct resp_request *req)
{
    const struct rt_listener *l = s->base.lis;
    int rule = s->route.canary;
    if (l->canary_uses_key) {
        uint8_t key[CONF_NAME_MAX]; /* a key_prefix is shorter */
        struct canary_session cs = {.application_name = s->client_name, .client = s->route.client};
        struct canary_unit cu = {0};
        int i = rediscmd_first_key(u->cmd, req->argc, req->argv);
        if (i >= 0) {
            size_t n = resp_arg_decode(&req->argv[i], key, sizeof(key));
            cu.key = key;
            cu.key_len = n < sizeof(key) ? n : sizeof(key);
        }
        rule = canary_match_unit(l->canary, l->ncanary, &cs, &cu);
    }
    return rule >= 0 ? &l->canary[rule] : NULL;
}

/*
 * route_read - mode split: is read u (just appended, request bytes[0..len))
 * answered by the shadow?  Only while the client awaits no other reply, so
 * whoever answers, replies keep the client's order; a read that cannot be
 * routed is counted with the reason.  1: routed (base.routed is u, its
 * request queued to the shadow and kept in route.buf).
 */
static int
route_read(struct redis_session *s, struct redis_unit *u, const struct resp_request *req,
           const uint8_t *bytes, size_t len)
{
    if (s->base.shadow_be == NULL || !session_split_mode(s->base.lis))
        return 0;
    enum route_reason why = ROUTE_REASON_NONE;
    if (s->in_multi || s->watching)
        why = ROUTE_REASON_IN_TRANSACTION; /* WATCH pins to the primary too */
    else if (s->reply_off || s->reply_skip)
        why = ROUTE_REASON_UNROUTABLE; /* CLIENT REPLY: the reply may not be the client's */
    else if (s->base.mirror.state != MIRROR_READY && s->base.mirror.state != MIRROR_CONNECTING)
        why = ROUTE_REASON_UNHEALTHY; /* detached */
    else if ((u->flags & (REDISCMD_BLOCKING | REDISCMD_PUBSUB | REDISCMD_NO_MIRROR)) ||
             s->base.outstanding > 0 || s->base.routed != NULL || s->base.state != SESSION_ACTIVE ||
             s->base.mirror.nheld > 0)
        why = ROUTE_REASON_UNROUTABLE; /* pipelined behind other commands, or pinned */
    else if (!redis_shadow_login_ok(s))
        why = ROUTE_REASON_UNROUTABLE; /* the shadow would read with rights the client lacks */
    if (why != ROUTE_REASON_NONE) {
        session_route_fallback(s->base.w, s->base.lis, (int)why);
        return 0;
    }
    struct route_input in = {
        .kind = REQ_KIND_READ,
        .ms_since_write = s->route.last_write_ns == 0
                              ? UINT64_MAX
                              : (session_clock(&s->base) - s->route.last_write_ns) / 1000000,
    };
    if (!session_route_read(s->base.w, s->base.lis, s->base.be, s->base.shadow_be, route_rule(s, u, req), &in))
        return 0;
    if ((s->route.buf == NULL && (s->route.buf = evbuffer_new()) == NULL) ||
        redis_shadow_route(s, u, bytes, len) != 0) {
        session_route_fallback(s->base.w, s->base.lis, ROUTE_REASON_UNROUTABLE);
        return 0;
    }
    evbuffer_add(s->route.buf, bytes, len);
    s->base.routed = &u->base;
    s->route.forwarded = 0;
    return 1;
}

void
redis_session_forward(struct redis_session *s, struct evbuffer *in, size_t n)
{
    if (s->base.state != SESSION_ACTIVE) {
        evbuffer_drain(in, n); /* the client is gone */
        return;
    }
    evbuffer_remove_buffer(in, s->base.client.out, n);
    session_count_listener(&s->base, METRIC_L_BYTES_SENT, n);
    s->route.forwarded += n;
    /* errors show on the client's own events; a slow client stops the shadow's reads */
    conn_flush(&s->base.client);
    if (s->base.shadow_open &&
        evbuffer_get_length(s->base.client.out) >= SESSION_BACKPRESSURE_BYTES)
        conn_want_read(s->base.shadow_conn, 0);
}

void
redis_session_route_done(struct redis_session *s)
{
    s->base.routed = NULL;
    s->route.forwarded = 0;
    evbuffer_drain(s->route.buf, evbuffer_get_length(s->route.buf));
    session_wake(&s->base); /* the client's next commands may go */
}

/*
 * redis_session_route_lost - the shadow is gone while answering the
 * routed read.  Nothing of its reply reached the client yet: the read goes
 * to the primary as a unit of its own (retried, counted; the routed unit
 * keeps its outcome).  Part of it did: the client's stream cannot be
 * mended, the session ends.
 */
void
redis_session_route_lost(struct redis_session *s)
{
    struct redis_unit *u = redis_unit_of(s->base.routed), *r;
    if (u == NULL)
        return;
    s->base.routed = NULL;
    if (s->base.state != SESSION_ACTIVE)
        return; /* closing already */
    if (s->route.forwarded > 0 || (r = redis_unit_new(s)) == NULL) {
        slog(s, CONF_LOG_WARN, "closing: lost the shadow in the middle of a routed reply");
        session_count_client_error(&s->base, METRIC_ERR_BACKEND_LOST);
        session_close(&s->base);
        return;
    }
    r->cmd = u->cmd;
    r->flags = u->flags;
    r->base.kind = u->base.kind;
    r->which = u->which;
    s->base.outstanding++;
    mirror_append(&s->base.mirror, &r->base);
    s->route.forwarded = 0;
    session_route_fallback(s->base.w, s->base.lis, ROUTE_REASON_RETRIED);
    count_request(s, s->base.be, (enum req_kind)r->base.kind);
    if (s->shared) {
        if (redis_pool_send(s, REDIS_ROLE_PRIMARY, s->route.buf, evbuffer_get_length(s->route.buf),
                            1, 0) != 0) {
            fail_all(s, METRIC_ERR_BACKEND_UNREACHABLE,
                     "ERR tandem: could not connect to the backend");
            return;
        }
    } else {
        evbuffer_add_buffer(s->base.server.out, s->route.buf);
        if (conn_flush(&s->base.server) == CONN_ERROR) {
            fail_all(s, METRIC_ERR_BACKEND_LOST, "ERR tandem: lost the connection to the backend");
            return;
        }
    }
    session_wake(&s->base);
}

/* ------------------------------------------------------------------ */
/* Commands.                                                           */

/* What client_input does with a command after command() saw it. */
enum cmd_fate {
    CMD_FORWARD,  /* to the primary, with the batch */
    CMD_ANSWERED, /* answered by tandem: skip its bytes */
    CMD_ROUTED,   /* the shadow answers it: skip (or compare on the primary), read no further */
    CMD_WAIT,     /* a cutover holds it: leave it, and what follows, in client.in */
    CMD_REPLY_ON, /* CLIENT REPLY ON|OFF|SKIP: CLIENT REPLY ON goes in its place */
    CMD_HOLD,     /* stateful, the shared connection owes replies: leave it, and what follows */
    CMD_CLOSED,   /* the session ended (no connection of its own could be opened): stop */
};

/* What the servers get for a client's CLIENT REPLY ON|OFF|SKIP. */
static const uint8_t client_reply_on[] = "*3\r\n$6\r\nCLIENT\r\n$5\r\nREPLY\r\n$2\r\nON\r\n";
#define CLIENT_REPLY_ON_LEN (sizeof(client_reply_on) - 1)

/*
 * Cutover: does a command of this kind wait in client.in?  Every command
 * but a read does, outside MULTI, while the listener is paused or this
 * session has not yet swapped to the listener's roles.
 */
static int
write_must_wait(struct redis_session *s, enum req_kind kind)
{
    int slot = s->base.lis->metric_slot;
    if (kind == REQ_KIND_READ || s->in_multi || s->pubsub || s->base.shadow_be == NULL ||
        (!control_paused(slot) && s->base.swapped == (unsigned)control_roles_swapped(slot)))
        return 0;
    s->base.writes_waiting = 1;
    return 1;
}

/* ------------------------------------------------------------------ */
/* Shared server connections (redis_pool.h).                           */

/*
 * Does this command need a server connection of the session's own?  The
 * command table's classification decides: a command that changes the
 * connection's state (SESSION: SELECT, AUTH, HELLO, CLIENT SETNAME|REPLY|
 * TRACKING..., READONLY, RESET, QUIT), a transaction (TX: MULTI, WATCH),
 * one that may block the connection (BLOCKING: BLPOP, WAIT, XREAD BLOCK),
 * pub/sub, and administration (ADMIN: MONITOR, CLIENT KILL|LIST|ID, DEBUG,
 * CONFIG: what they see or do is the connection's or the server's) all do,
 * and so does a command the table does not know.  SELECT 0 does not: db 0
 * is where every shared connection is; nor does PUBLISH.
 */
static int
needs_own_connection(const struct rediscmd *cmd, uint32_t flags, enum rs_cmd which,
                     const struct resp_request *req)
{
    if (cmd == NULL)
        return 1;
    if (which == RC_SELECT && req->argc == 2 && arg_is(req, 1, "0"))
        return 0;
    /* PUBLISH, SPUBLISH: pub/sub, but one reply like any write, and no state */
    if (which == RC_OTHER && (flags & REDISCMD_PUBSUB) && (flags & REDISCMD_WRITE))
        flags &= ~(uint32_t)REDISCMD_PUBSUB;
    return which != RC_OTHER || (flags & (REDISCMD_SESSION | REDISCMD_TX | REDISCMD_BLOCKING |
                                          REDISCMD_PUBSUB | REDISCMD_ADMIN)) != 0;
}

/*
 * own_connection - a shared session owing nothing on its shared connection
 * opens one of its own, for good.  Nothing is replayed: a shared session
 * never changed its connection's state.  Commands framed before this one
 * and not yet forwarded go to the new connection, in order, ahead of it.
 * -1 when the session ended (the connect failed at once).
 */
static int
own_connection(struct redis_session *s)
{
    s->shared = 0;
    slog(s, CONF_LOG_DEBUG, "a connection of its own to \"%s\" (connection state)",
         s->base.be->conf->name);
    redis_shadow_dedicate(s);
    session_connect_backend(&s->base);
    return s->base.state == SESSION_ACTIVE ? 0 : -1;
}

/* command - one whole request (bytes[0..len)) read from the client: its enum cmd_fate. */
static enum cmd_fate
command(struct redis_session *s, const struct resp_request *req, const uint8_t *bytes, size_t len)
{
    const struct rediscmd *cmd = rediscmd_lookup(req->argc, req->argv);
    uint32_t flags = rediscmd_flags(cmd, req->argc, req->argv);
    enum req_kind kind = rediscmd_kind(cmd, req->argc, req->argv);
    enum rs_cmd which = redis_cmd_which(cmd);

    if (s->pubsub) {
        count_request(s, s->base.be, kind);
        return CMD_FORWARD; /* a plain relay now */
    }
    if (which == RC_QUIT) {
        /*
         * Redis answers +OK and runs nothing the client sent after it (in
         * MULTI too): tandem answers it in its turn and reads no further,
         * so neither the primary nor the shadow sees what followed.
         */
        static const uint8_t ok[] = "+OK\r\n";
        count_request(s, s->base.be, kind);
        s->input_closed = 1;
        if (add_local_reply(s, ok, sizeof(ok) - 1, 1) != 0)
            session_close(&s->base);
        return CMD_ANSWERED;
    }
    if (s->shared && needs_own_connection(cmd, flags, which, req)) {
        if (s->leg.owed > 0) {
            s->mux_hold = 1; /* its replies wake us: redis_session_shared_input */
            return CMD_HOLD;
        }
        if (own_connection(s) != 0)
            return CMD_CLOSED;
    }
    if (write_must_wait(s, kind))
        return CMD_WAIT;
    if (which == RC_SUBSCRIBE || (which == RC_MONITOR && !s->in_multi)) {
        /* MONITOR's stream, like pushes, answers no request (queued in MULTI, it is one) */
        count_request(s, s->base.be, kind);
        s->pubsub = 1;
        return CMD_FORWARD;
    }
    enum rs_reply reply_mode = RR_NONE;
    if (which == RC_CLIENT_REPLY && req->argc == 3)
        reply_mode = arg_is(req, 2, "on")    ? RR_ON
                     : arg_is(req, 2, "off")  ? RR_OFF
                     : arg_is(req, 2, "skip") ? RR_SKIP
                                              : RR_NONE;
    struct redis_unit *u = redis_unit_new(s);
    if (u == NULL) {
        /* no unit, no way to keep replies in order: give up on this client */
        s->input_closed = 1;
        session_close(&s->base);
        return CMD_ANSWERED;
    }
    u->cmd = cmd;
    u->flags = flags;
    u->base.kind = (uint8_t)kind;
    u->which = (uint8_t)which;
    u->skip_reset = s->empty_pending;
    s->empty_pending = 0;
    if (which == RC_UNSUBSCRIBE && !s->in_multi) {
        u->pushes = 1;
        if (req->argc > 2)
            u->preplies = req->argc - 1 > UINT32_MAX ? UINT32_MAX : (uint32_t)(req->argc - 1);
    }
    if (reply_mode != RR_NONE) {
        /* queued in MULTI it changes nothing tandem sees: EXEC's reply stays whole */
        u->reply_mode = (uint8_t)(s->in_multi ? RR_NONE : reply_mode);
        bytes = client_reply_on;
        len = CLIENT_REPLY_ON_LEN;
    }
    note_session_change(s, u, req);
    mirror_append(&s->base.mirror, &u->base);
    if (which == RC_MULTI)
        s->in_multi = 1;
    if (s->base.mirror.state != MIRROR_OFF) {
        u->base.closed_ns = session_clock(&s->base);
        u->mode = (uint8_t)rediscmd_digest_mode(cmd, req->argc, req->argv);
        if (kind != REQ_KIND_READ || !route_read(s, u, req, bytes, len))
            redis_shadow_command(s, u, bytes, len);
    }
    if (which == RC_WATCH)
        s->watching = 1;
    if (which == RC_EXEC || which == RC_DISCARD || which == RC_RESET)
        s->in_multi = s->watching = 0;
    else if (which == RC_UNWATCH && !s->in_multi)
        s->watching = 0;
    count_request(s, u->base.routed ? s->base.shadow_be : s->base.be, kind);
    if (u->base.routed)
        return CMD_ROUTED;
    s->base.outstanding++;
    return reply_mode != RR_NONE ? CMD_REPLY_ON : CMD_FORWARD;
}

/*
 * Hand n bytes at the start of client.in, commands that await `replies`
 * replies, to the primary: its connection, or the shared one.  -1 when no
 * shared connection could be opened: every command waiting is answered
 * with the error and the session ends.
 */
static int
forward(struct redis_session *s, size_t n, uint32_t replies)
{
    if (n == 0)
        return 0;
    if (!s->shared) {
        evbuffer_remove_buffer(s->base.client.in, s->base.server.out, n);
        return 0;
    }
    if (redis_pool_send(s, REDIS_ROLE_PRIMARY, s->base.client.in, n, replies, 0) == 0)
        return 0;
    char msg[512];
    snprintf(msg, sizeof(msg), "ERR tandem: could not connect to backend \"%s\" at %s: %s",
             s->base.be->conf->name, s->base.be->addr_text, strerror(errno));
    fail_all(s, METRIC_ERR_BACKEND_UNREACHABLE, msg);
    return -1;
}

enum batch_next {
    BATCH_ON,    /* the command joins the batch: frame the next one */
    BATCH_AGAIN, /* the batch so far is forwarded and the command consumed: start a new one */
    BATCH_STOP,  /* read no further now (the session ended, or something must be answered) */
};

/*
 * What a command's fate does to the batch: unless it simply joins it, the
 * commands before it ([0, off), owing `owed` replies) are forwarded first,
 * so the client's order holds; then the command's own `used` bytes.
 */
static enum batch_next
batch_fate(struct redis_session *s, enum cmd_fate fate, size_t off, uint32_t owed, size_t used)
{
    struct evbuffer *in = s->base.client.in;

    switch (fate) {
    case CMD_FORWARD:
        return BATCH_ON;
    case CMD_CLOSED:
        return BATCH_STOP;
    case CMD_REPLY_ON:
    case CMD_ANSWERED:
        if (forward(s, off, owed) != 0)
            return BATCH_STOP;
        evbuffer_drain(in, used); /* answered here, or replaced by CLIENT REPLY ON */
        if (fate == CMD_REPLY_ON)
            evbuffer_add(s->base.server.out, client_reply_on, CLIENT_REPLY_ON_LEN);
        return BATCH_AGAIN;
    case CMD_WAIT:
    case CMD_HOLD:
        forward(s, off, owed);
        return BATCH_STOP;
    case CMD_ROUTED:
        if (forward(s, off, owed) != 0)
            return BATCH_STOP;
        if (!redis_unit_of(s->base.routed)->base.primary_done) {
            if (forward(s, used, 1) != 0) /* the comparison */
                return BATCH_STOP;
        } else {
            evbuffer_drain(in, used);
        }
        redis_shadow_flush(s); /* a failure retries it on the primary */
        return BATCH_STOP;
    }
    return BATCH_STOP;
}

/*
 * Frame the commands of one batch from buf (avail bytes, client.in pulled
 * up) and forward them.  A partial command stays in client.in; client_need
 * says how many bytes it takes at least, so a large value arriving in many
 * reads is parsed once.
 */
static enum batch_next
client_batch(struct redis_session *s, const uint8_t *buf, size_t avail)
{
    size_t off = 0;
    uint32_t owed = 0; /* replies the commands in [0, off) await */

    while (off < avail) {
        struct resp_request req;
        const char *err = NULL;
        size_t used = 0;
        enum resp_status st = resp_request_parse(buf + off, avail - off, &s->limits, &used, &req, &err);
        if (st == RESP_NEED_MORE) {
            /*
             * used is a lower bound of the whole command: past the limit it
             * is refused now, before its bytes are buffered (a 300 MB bulk,
             * a multibulk of millions of arguments).
             */
            if (used > s->base.rt->conf->limits.max_command_size) {
                if (forward(s, off, owed) == 0)
                    too_large(s);
                return BATCH_STOP;
            }
            s->client_need = used;
            break;
        }
        if (st == RESP_ERROR) {
            if (forward(s, off, owed) == 0)
                protocol_error(s, err);
            return BATCH_STOP;
        }
        if (req.argc == 0)
            s->empty_pending = 1; /* the server runs nothing, but a SKIP ends */
        enum cmd_fate fate = req.argc > 0 ? command(s, &req, buf + off, used) : CMD_FORWARD;
        enum batch_next next = batch_fate(s, fate, off, owed, used);
        if (next != BATCH_ON)
            return next;
        off += used;
        if (req.argc > 0)
            owed++;
        if (s->base.outstanding >= MAX_OUTSTANDING)
            break; /* session_settle() stops reading; replies call us again */
    }
    forward(s, off, owed);
    return BATCH_STOP;
}

/*
 * Forward every whole command in client.in, batch by batch.  A routed
 * read, or a command a cutover holds, ends it: what follows stays in
 * client.in until the read is answered or the cutover is over.
 */
static void
client_input(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    struct evbuffer *in = s->base.client.in;

    s->mux_hold = 0; /* set again below while it still holds */
    for (;;) {
        size_t avail = evbuffer_get_length(in);
        if (s->input_closed || avail == 0 || avail < s->client_need ||
            s->base.routed != NULL || s->base.writes_waiting ||
            (s->base.state != SESSION_ACTIVE && s->base.state != RS_CONNECTING))
            return;
        const uint8_t *buf = evbuffer_pullup(in, (ev_ssize_t)avail);
        if (buf == NULL) {
            session_close(&s->base);
            return;
        }
        s->client_need = 0;
        if (client_batch(s, buf, avail) != BATCH_AGAIN)
            return;
    }
}

/* ------------------------------------------------------------------ */
/* Primary replies.                                                    */

static void
backend_protocol_error(struct redis_session *s, const char *what)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "ERR tandem: backend \"%s\" sent %s", s->base.be->conf->name, what);
    fail_all(s, METRIC_ERR_BACKEND_LOST, msg);
}

/* The reply to unit u is whole; info describes it, head is its first bytes. */
static void
primary_reply(struct redis_session *s, struct redis_unit *u, const struct resp_reply_info *info,
              const uint8_t *head, size_t headlen)
{
    if (!u->base.routed)
        s->base.outstanding--;
    int refused = info->type == '-' || info->type == '!';
    client_reply_done(s, u, !refused);
    if (u->base.kind == REQ_KIND_WRITE || u->which == RC_EXEC)
        s->route.last_write_ns = session_clock(&s->base); /* read_your_writes counts from here */
    if (refused) {
        u->refused = 1;
        if (headlen >= 7 && memcmp(head, "-NOAUTH", 7) == 0) {
            int slot = s->base.be->metric_slot;
            if (slot >= 0 && slot < METRIC_MAX_BACKENDS)
                __atomic_store_n(&auth_required[slot], 1, __ATOMIC_RELAXED);
            if (!s->authed)
                s->limits.pre_auth = true;
        }
    } else {
        /* the default user ran it: no login needed on this primary (AUTH & co. prove nothing) */
        if (s->primary_login == RL_DEFAULT && u->cmd != NULL && !(u->flags & REDISCMD_NO_AUTH))
            s->default_open = 1;
        switch (u->track) {
        case RT_AUTH:
            s->authed = 1;
            s->limits.pre_auth = false;
            s->primary_login = RL_CLIENT;
            /* the shadow's login from now on (NULL: none kept, see redis_shadow_command) */
            redis_ident_free(s->ident);
            s->ident = u->ident;
            u->ident = NULL;
            break;
        case RT_SELECT:
            s->db = u->db;
            break;
        case RT_RESET:
            /* RESET logs the connection in as the default user again */
            s->db = 0;
            free(s->client_name);
            s->client_name = NULL;
            s->authed = 0;
            redis_ident_free(s->ident);
            s->ident = NULL;
            s->primary_login = RL_DEFAULT;
            s->limits.pre_auth = backend_wants_auth(s);
            s->proto = 2; /* and RESP2 again */
            route_match_session(s);
            break;
        default:
            break;
        }
        if (u->proto != 0)
            s->proto = u->proto;
        if (u->name != NULL) {
            /* CLIENT SETNAME, HELLO ... SETNAME; "" takes the name away */
            free(s->client_name);
            s->client_name = u->name[0] ? u->name : NULL;
            if (s->client_name == NULL)
                free(u->name);
            u->name = NULL;
            route_match_session(s);
        }
    }
    mirror_primary_answered(&s->base.mirror, &u->base, 0);
    /* a held mirror of u goes to the shadow with the batch: redis_shadow_flush() */
    if (s->base.mirror.state != MIRROR_OFF && u->cmp != NULL) {
        u->cmp->pinfo = *info;
        u->base.primary_ns = session_clock(&s->base) - u->base.closed_ns;
    }
    mirror_complete(&s->base.mirror);
    if (s->base.outstanding == 0 && !s->in_multi && !s->pubsub && s->base.mirror.state == MIRROR_DETACHED)
        redis_shadow_idle(s);
}

/* What server_input has framed of its buffer so far. */
struct reply_run {
    struct evbuffer *in;
    size_t avail;     /* bytes left in `in` */
    size_t run;       /* framed bytes at its start, the client's, not yet moved */
    uint32_t *limit;  /* see server_input */
    uint8_t head[8];  /* the start of the current unit's reply (primary_reply) */
    size_t headlen;
};

/* The framed run goes to the client now: what follows is not to join it. */
static void
run_flush(struct redis_session *s, struct reply_run *r)
{
    evbuffer_remove_buffer(r->in, s->base.client.out, r->run);
    session_count_listener(&s->base, METRIC_L_BYTES_SENT, r->run);
    r->avail -= r->run;
    r->run = 0;
}

/*
 * The worker's reader of primary replies: a reply that arrives whole in one
 * read (most do) is framed here and no session keeps a reader for it.
 * Worker threads only; each server_input uses it for one session at a time.
 */
static _Thread_local struct resp_reader reply_scratch;

struct resp_reader *
redis_reply_reader(struct redis_session *s)
{
    return s->reader != NULL ? s->reader : &reply_scratch;
}

/*
 * After a read: a reply (or push) still open moves into a reader of the
 * session's own, for the next read; none open, the session's own goes.
 * -1 when out of memory (the session is failed).
 */
static int
park_reader(struct redis_session *s)
{
    if (!s->reply_open && !s->push_open) {
        free(s->reader);
        s->reader = NULL;
        return 0;
    }
    if (s->reader != NULL)
        return 0;
    if ((s->reader = malloc(sizeof(*s->reader))) == NULL) {
        fail_all(s, METRIC_ERR_BACKEND_LOST, "ERR tandem: out of memory reading a reply");
        return -1;
    }
    *s->reader = reply_scratch;
    return 0;
}

/* The reader takes what it can of p; RESP_ERROR has failed the session (not RESP). */
static enum resp_status
feed_reader(struct redis_session *s, const uint8_t *p, size_t len, size_t *used,
            struct resp_reply_info *info)
{
    const char *err = NULL;
    enum resp_status st = resp_reader_feed(redis_reply_reader(s), p, len, used, info, &err);
    if (st == RESP_ERROR)
        backend_protocol_error(s, "an invalid reply");
    return st;
}

/* A RESP3 push between replies (CLIENT TRACKING): relayed in its place, answering no request. */
static int
push_frame(struct redis_session *s, struct reply_run *r, const uint8_t *p, size_t len)
{
    size_t used = 0;
    struct resp_reply_info info;
    enum resp_status st = feed_reader(s, p, len, &used, &info);
    if (st == RESP_ERROR)
        return -1;
    r->run += used;
    if (st == RESP_OK)
        s->push_open = 0;
    return 0;
}

/*
 * An EXEC whose transaction is rewritten from its reply (redis_effect.c)
 * keeps the reply whole until it is released, within the session's mirror
 * queue bound: one larger is let go, and the rewrite is said to be lost.
 */
static void
keep_exec_reply(struct redis_session *s, struct redis_unit *u, const uint8_t *p, size_t n)
{
    if (evbuffer_get_length(u->exec_reply) + n > s->base.mirror.queue_bytes ||
        evbuffer_add(u->exec_reply, p, n) != 0) {
        evbuffer_free(u->exec_reply);
        u->exec_reply = NULL;
    }
}

/*
 * Bytes of unit u's reply: digested and sampled for the comparison, and
 * the client's unless the shadow answered u (a routed read) or the client
 * turned replies off (CLIENT REPLY).  A whole reply completes u, or one of
 * its several replies (UNSUBSCRIBE a b c: one per channel).
 */
static int
reply_frame(struct redis_session *s, struct reply_run *r, struct redis_unit *u, const uint8_t *p,
            size_t len)
{
    if (!s->reply_open) {
        resp_reader_init(redis_reply_reader(s),
                         u->cmp ? (enum resp_digest_mode)u->mode : RESP_DIGEST_NONE);
        s->reply_open = 1;
        if (!u->reply_started) {
            u->reply_started = 1;
            s->reply_silent = client_reply_silent(s, u, p[0]) != 0;
            r->headlen = len < sizeof(r->head) ? len : sizeof(r->head);
            memcpy(r->head, p, r->headlen);
        }
    }
    size_t used = 0;
    struct resp_reply_info info;
    enum resp_status st = feed_reader(s, p, len, &used, &info);
    if (st == RESP_ERROR)
        return -1;
    if (u->cmp)
        redis_keep_sample(u->cmp->psample, &u->cmp->plen, p, used);
    if (u->exec_reply != NULL)
        keep_exec_reply(s, u, p, used);
    if (u->base.routed || s->reply_silent) {
        run_flush(s, r); /* what came before is the client's; this is not */
        evbuffer_drain(r->in, used);
        r->avail -= used;
    } else {
        r->run += used;
    }
    if (st != RESP_OK)
        return 0;
    s->reply_open = 0;
    if (r->limit != NULL)
        (*r->limit)--;
    if (u->preplies > 1) {
        u->preplies--;
        return 0;
    }
    u->preplies = 0;
    s->reply_silent = 0;
    primary_reply(s, u, &info, r->head, r->headlen);
    r->headlen = 0;
    return 0;
}

/*
 * server_frames - frame the primary's replies in `in` and move them to the client: each
 * whole reply completes the current unit.  The bytes move in one run at
 * the end; a unit tandem answers itself cuts the run so the order holds.
 * limit NULL: every reply in `in` is the session's (its own connection);
 * else `in` is a shared connection's and at most *limit whole replies (and
 * the start of the next) are, counted down as they complete.  -1 when the
 * bytes are not replies (the session is failed).
 */
static int server_frames(struct redis_session *s, struct evbuffer *in, uint32_t *limit);

/* server_frames, then a reply left open keeps its reader in the session (park_reader). */
static int
server_input(struct redis_session *s, struct evbuffer *in, uint32_t *limit)
{
    int rc = server_frames(s, in, limit);
    if (park_reader(s) != 0)
        return -1;
    return rc;
}

static int
server_frames(struct redis_session *s, struct evbuffer *in, uint32_t *limit)
{
    struct reply_run r = {.in = in, .avail = evbuffer_get_length(in), .limit = limit};

    while (r.run < r.avail && s->base.state == SESSION_ACTIVE && (limit == NULL || *limit > 0)) {
        struct redis_unit *u = pcur(s);
        if (answered_here(u)) {
            run_flush(s, &r);
            emit_local_replies(s);
            continue;
        }
        if (u == NULL && s->pubsub) {
            r.run = r.avail; /* pushes: relayed as they come */
            break;
        }
        struct evbuffer_ptr pos;
        struct evbuffer_iovec v;
        evbuffer_ptr_set(in, &pos, r.run, EVBUFFER_PTR_SET);
        if (evbuffer_peek(in, (ev_ssize_t)(r.avail - r.run), &pos, &v, 1) < 1)
            break;
        size_t len = v.iov_len < r.avail - r.run ? v.iov_len : r.avail - r.run;
        const uint8_t *p = v.iov_base;
        if (!s->reply_open && !s->push_open && p[0] == '>' && (u == NULL || !u->pushes)) {
            s->push_open = 1;
            resp_reader_init(redis_reply_reader(s), RESP_DIGEST_NONE);
        }
        if (!s->push_open && u == NULL) {
            backend_protocol_error(s, "a reply to no request");
            return -1;
        }
        if ((s->push_open ? push_frame(s, &r, p, len) : reply_frame(s, &r, u, p, len)) != 0)
            return -1;
    }
    if (r.run > 0 && s->base.state == SESSION_ACTIVE)
        run_flush(s, &r);
    if (answered_here(pcur(s)))
        emit_local_replies(s);
    if (s->base.mirror.state != MIRROR_OFF)
        redis_shadow_flush(s);
    if (s->base.draining && idle(s))
        session_close(&s->base);
    return 0;
}

/* ------------------------------------------------------------------ */
/* The connections' events (the engine reads and writes the sockets).  */

static void
op_server_input(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    server_input(s, s->base.server.in, NULL);
    /* replies drained the backlog: requests held back may go now */
    if (s->base.state == SESSION_ACTIVE && evbuffer_get_length(s->base.client.in) >= s->client_need)
        client_input(base);
}

static void
op_server_lost(struct session *base, enum conn_io io)
{
    struct redis_session *s = (struct redis_session *)base;
    if (s->base.outstanding == 0 || s->pubsub) {
        /* QUIT, or the server closed an idle connection: the client sees the close */
        slog(s, CONF_LOG_INFO, "backend \"%s\" closed the connection", s->base.be->conf->name);
        if (s->base.outstanding > 0)
            session_count_client_error(&s->base, METRIC_ERR_BACKEND_LOST);
        session_close(&s->base);
        return;
    }
    fail_all(s, METRIC_ERR_BACKEND_LOST,
             io == CONN_EOF ? "ERR tandem: the backend closed the connection"
                            : "ERR tandem: lost the connection to the backend");
}

int
redis_session_shared_input(struct redis_session *s, struct evbuffer *in, uint32_t *replies)
{
    uint32_t before = *replies;

    s->base.now_ns = 0; /* an entry point: the shared connection's event */
    if (s->base.state != SESSION_ACTIVE) {
        redis_pool_leave(s, REDIS_ROLE_PRIMARY); /* it is going: its replies are dropped */
        return 0;
    }
    int rc = server_input(s, in, replies);
    redis_leg_took(&s->leg, before - *replies);
    /* replies drained the backlog, or a held stateful command may take its own connection */
    if (rc == 0 && s->base.state == SESSION_ACTIVE &&
        evbuffer_get_length(s->base.client.in) >= s->client_need)
        client_input(&s->base);
    return rc;
}

void
redis_session_shared_settle(struct redis_session *s)
{
    session_deliver_done(&s->base);
}

void
redis_session_shared_lost(struct redis_session *s, const char *msg, enum redis_shared_loss loss)
{
    s->base.now_ns = 0;
    s->reply_open = 0;
    fail_all(s, loss == REDIS_SHARED_UNREACHABLE ? METRIC_ERR_BACKEND_UNREACHABLE
                                                 : METRIC_ERR_BACKEND_LOST,
             msg);
    session_deliver_done(&s->base);
}

/* The session's timer, while connecting: the connect deadline. */
static void
op_timer(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    if (s->base.state == RS_CLIENT_TLS) {
        slog(s, CONF_LOG_INFO, "client TLS handshake not done within startup_timeout");
        session_count_client_error(&s->base, METRIC_ERR_TLS);
        s->base.state = SESSION_DEAD; /* no protocol to say it in */
        return;
    }
    backend_failed(base, "timeout");
}

/*
 * open_backends - the client may speak now (plain text, or TLS done):
 * its connection to the primary (its own, or the shared ones) and to the
 * shadow.
 */
static void
open_backends(struct redis_session *s)
{
    const struct conf_listener *cl = s->base.lis->conf;
    if (s->shared) {
        session_set_state(&s->base, SESSION_ACTIVE); /* nothing to open: redis_pool_send */
    } else {
        session_set_state(&s->base, RS_CONNECTING);
        session_connect_backend(&s->base);
    }
    /* now, not once connected: commands read meanwhile must be mirrored too */
    if (s->base.state == RS_CONNECTING || s->base.state == SESSION_ACTIVE)
        if (cl->mode != CONF_MODE_PASSTHROUGH && s->base.lis->shadow != NULL)
            redis_shadow_start(s);
}

/*
 * The client's TLS handshake (a listener with tls_cert: TLS from the first
 * byte, Redis has no request for it).  A client that speaks plain text, or
 * a certificate it refuses, costs that one connection: nothing was opened
 * to a backend yet.
 */
static int
op_client_handshake(struct session *base, short *what)
{
    struct redis_session *s = (struct redis_session *)base;
    if (s->base.state != RS_CLIENT_TLS)
        return 1;
    enum conn_io io = conn_handshake(&s->base.client);
    if (io == CONN_AGAIN)
        return 0;
    if (io != CONN_OK) {
        slog(s, CONF_LOG_INFO, "client TLS handshake failed: %s",
             conn_tls_error(&s->base.client, "the client left"));
        session_count_client_error(&s->base, METRIC_ERR_TLS);
        s->base.state = SESSION_DEAD;
        return 0;
    }
    open_backends(s);
    *what |= EV_READ; /* the first command may already sit inside OpenSSL */
    return s->base.state < SESSION_LINGER;
}

/* ------------------------------------------------------------------ */
/* Life cycle.                                                         */

static void
redis_session_accept(struct worker *w, const struct rt_listener *l, int fd,
                     const struct sockaddr *peer, int over_limit)
{
    struct redis_session *s =
        (struct redis_session *)session_new(sizeof(*s), &redis_session_ops, &redis_mirror_ops, w, l, fd, peer);
    if (s == NULL)
        return;
    session_route_client(peer, &s->route.client);
    route_match_session(s);
    resp_limits_init(&s->limits);
    s->limits.pre_auth = backend_wants_auth(s);
    s->proto = 2;
    /*
     * A backend that wants AUTH, or TLS (either of the listener's: a
     * cutover makes the shadow the primary), gets connections of the
     * session's own: the shared ones are plain text.
     */
    s->shared = l->conf->server_conns == CONF_SERVER_CONNS_SHARED && !s->limits.pre_auth &&
                l->primary->tls == NULL && (l->shadow == NULL || l->shadow->tls == NULL);
    worker_session_added(w, &s->base);
    if (over_limit) {
        session_count_client_error(&s->base, METRIC_ERR_TOO_MANY_CLIENTS);
        worker_note_refused(w, l->metric_slot, WORKER_REFUSED_OVER_LIMIT);
        if (l->tls != NULL) {
            s->base.state = SESSION_DEAD; /* no TLS spent on it: the connection just closes */
        } else {
            send_error(s, "ERR max number of clients reached");
            session_set_state(&s->base, SESSION_LINGER);
        }
    } else if (l->tls != NULL) {
        if (conn_start_tls(&s->base.client, l->tls, 1, NULL, NULL) != 0) {
            slog(s, CONF_LOG_WARN, "client TLS: %s", conn_tls_error(&s->base.client, "failed"));
            s->base.state = SESSION_DEAD;
        } else {
            session_arm_timer(&s->base, s->base.rt->conf->limits.startup_timeout_ms);
        }
    } else {
        open_backends(s);
    }
    session_settle(&s->base);
}

/* ------------------------------------------------------------------ */
/* The engine's hooks (engine/session.h).                              */

static const char *
op_phase_name(int phase)
{
    return phase == RS_CONNECTING ? "connecting" : phase == RS_CLIENT_TLS ? "client_tls" : "opening";
}

/* No reply owed, no MULTI open: it may close (drain) or swap its roles (cutover). */
static int
op_idle(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    if (s->base.state < SESSION_ACTIVE)
        return 1;
    /* subscribed: nothing is ever owed, and it cannot follow a cutover anyway */
    return s->pubsub || (s->base.outstanding == 0 && s->base.routed == NULL && !s->in_multi);
}

/* Its shadow connection would give the client other rights than its own. */
static int
login_lost(const struct redis_session *s)
{
    return s->base.mirror.identity_refused ||
           ((s->base.mirror.state == MIRROR_READY || s->base.mirror.state == MIRROR_CONNECTING) &&
            !redis_shadow_login_ok(s));
}

/*
 * Redis has no way to say "shutting down": the connection just closes.  At
 * a cutover a client whose login cannot be carried over is told why.
 */
static void
op_close_with(struct session *base, enum session_close why, const char *msg)
{
    struct redis_session *s = (struct redis_session *)base;
    if (why == SESSION_CLOSE_CUTOVER && !s->pubsub && login_lost(s)) {
        char text[300];
        snprintf(text, sizeof(text),
                 "ERR tandem: the primary changed (cutover) and this connection's login "
                 "cannot be carried over to backend \"%s\": reconnect",
                 s->base.shadow_be->conf->name);
        fail_all(s, METRIC_ERR_SHUTDOWN, text);
        return;
    }
    if (why == SESSION_CLOSE_CUTOVER)
        slog(s, CONF_LOG_INFO, "closing: %s", msg);
    session_close(&s->base);
}

/* Cutover: a write unanswered by either side, or a MULTI open. */
static int
op_writes_owed(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    return s->in_multi || redis_shadow_writes_owed(s);
}

/* Subscriptions live on the old primary, where nothing is published any more. */
static int
op_pinned(struct session *base)
{
    return ((struct redis_session *)base)->pubsub;
}

/*
 * 1: idle, and the shadow connection may take over; 0: not yet; -1: never
 * (no shadow connection, or one logged in as someone else than the client).
 */
static int
op_swap_ready(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    /*
     * A shared session keeps no connection to hand over: it will share the
     * new primary's, as a new client would (no login, db 0), so its shadow
     * connection's login does not matter here (redis_shadow_restart).
     */
    if (s->shared)
        return s->leg.owed == 0 && redis_shadow_swap_ready(s);
    if (login_lost(s))
        return -1;
    if (s->in_multi || s->watching || s->reply_open || s->push_open)
        return 0;
    return redis_shadow_swap_ready(s);
}

/*
 * The cutover's swap (engine/session.h).  Both connections are in the
 * client's db under its name, logged in as the client (or, for a client
 * that never logged in, as the shadow's default user or tandem's login
 * there: login_ok() was asked first), so only the logins trade places.
 */
static void
op_swap(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    enum rs_login login = s->primary_login;

    if (s->shared) {
        /* its commands now go to be's shared connections; its shadow must reach the old primary */
        redis_shadow_restart(s);
        s->default_open = 0;
        s->route.last_write_ns = 0;
        return;
    }
    redis_shadow_swap(s);
    s->primary_login = s->shadow->login;
    s->shadow->login = login;
    redis_shadow_fence_login(s);
    s->default_open = 0; /* learned again from the new primary's answers */
    s->route.last_write_ns = 0;
}

static const struct session_ops redis_session_ops = {
    .protocol = "redis",
    .idle_timeout = 1,
    .phase_name = op_phase_name,
    .client_handshake = op_client_handshake,
    .client_input = client_input,
    .connect_failed = backend_failed,
    .server_connected = op_server_connected,
    .server_handshake = op_server_handshake,
    .server_input = op_server_input,
    .server_lost = op_server_lost,
    .shadow_connected = redis_shadow_connected,
    .shadow_input = redis_shadow_input,
    .shadow_release = redis_shadow_release_gated,
    .timer = op_timer,
    .client_wanted = op_client_wanted,
    .leaving = op_leaving,
    .orphan = redis_shadow_orphan,
    .destroy = op_destroy,
    .idle = op_idle,
    .close_with = op_close_with,
    .writes_owed = op_writes_owed,
    .swap_ready = op_swap_ready,
    .swap = op_swap,
    .pinned = op_pinned,
};

const struct session_protocol redis_protocol = {
    .name = "redis",
    .conf_proto = CONF_PROTO_REDIS,
    .accept = redis_session_accept,
    .writes_owed = redis_pool_writes_owed,
};
