/*
 * redis_shadow.c - the shadow side of a Redis session: mirror commands to
 * the shadow, frame and digest its replies, compare, record.
 *
 * The shadow can never hurt the client.  Nothing here blocks, nothing here
 * writes to the client or the primary, and every failure ends in detach():
 * the shadow connection is dropped, the units it owed are counted with an
 * outcome (dropped, shadow_error, shadow_timeout), a lost write marks the
 * listener diverged, and the session goes on with the primary alone.  At
 * its next idle point (no reply owed, no MULTI open, not subscribed) the
 * session tries again, with a back-off of 1 s doubling to 60 s, on a new
 * connection that first logs in and replays the session state (SELECT,
 * CLIENT SETNAME).
 *
 * Login: as the client.  Its AUTH (or HELLO ... AUTH) is mirrored like any
 * command, in its turn, once the primary accepted it (refused, the shadow
 * never sees it); a new connection replays the identity the primary last
 * accepted.  Only a client that never logged in has the shadow connection
 * log in with the shadow backend's own credentials, if any.  A shadow that
 * refuses the client's identity ends the session's mirroring for good
 * (reason `identity`): re-attaching would only be refused again, and
 * anything else would run the client's commands with rights not its own.
 *
 * Mirror order: a mirrored command waits in shadow.held until the primary
 * has answered it, and only then goes to the shadow, so the shadow applies
 * writes in the order the primary acknowledged them (see pg_shadow.c for
 * why that order is the one that matters across sessions).  A transaction
 * is one unit: MULTI and its queued commands collect in tx_buf and go to
 * the shadow, whole, only when the primary's EXEC succeeded (an array, not
 * the null of an aborted WATCH nor an EXECABORT error).  WATCH itself is
 * never mirrored: the shadow gets only transactions that did commit.
 */
#include <errno.h>
#include <pthread.h>
#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "protocol/rediscmp.h"
#include "metrics/log.h"
#include "redis/redis_pool.h"
#include "redis/redis_session_int.h"
#include "control/runtime.h"
#include "engine/worker.h"

/* The report's text of one side's reply. */
#define SUMMARY_MAX 512

#define slog(s, level, ...) log_at(level, (s)->base.id, (s)->base.peer, __VA_ARGS__)

static void detach(struct redis_session *s, enum shadow_outcome why, const char *reason);
static void identity_refused(struct redis_session *s, const char *why);

static const struct conf_mirror *
mirror_conf(const struct redis_session *s)
{
    return &s->base.lis->conf->mirror;
}

static void
count_shadow(struct redis_session *s, enum metric_backend_counter c, uint64_t n)
{
    redis_count_backend(s, s->base.shadow_be, c, n);
}

/* Is a command outside MULTI sent to the shadow? */
static int
wanted(struct redis_session *s, const struct redis_unit *u)
{
    if (u->flags & (REDISCMD_NO_MIRROR | REDISCMD_BLOCKING | REDISCMD_PUBSUB))
        return 0;
    switch (u->base.kind) {
    case REQ_KIND_WRITE:
        /* a replica has the write from its primary already: only compare reads */
        return !s->base.mirror.gated;
    case REQ_KIND_SESSION:
        return 1;
    case REQ_KIND_READ:
        return mirror_sample(&s->base.mirror, mirror_conf(s)->reads);
    default:
        return 0; /* admin; WATCH, UNWATCH, a stray EXEC or DISCARD */
    }
}

/* redis_keep_sample - keep the first bytes of a reply for the report. */
void
redis_keep_sample(uint8_t *sample, uint16_t *have, const uint8_t *p, size_t n)
{
    size_t room = RS_SAMPLE_BYTES - *have;
    if (n > room)
        n = room;
    memcpy(sample + *have, p, n);
    *have = (uint16_t)(*have + n);
}

/*
 * Write what conn.out holds; what left it leaves the queue too (-1:
 * detached).  Pooled, nothing: the pool writes what every session sent
 * during the loop turn at its end.
 */
static int
flush_shadow(struct redis_session *s)
{
    if (!s->base.shadow_open || evbuffer_get_length(s->base.shadow_conn->out) == 0)
        return 0;
    return session_shadow_flush(&s->base);
}

/*
 * shadow_out - u's len bytes (the front of src; src NULL: bytes) go to the
 * shadow: pooled, to the shared connection, and they leave the session's
 * queue for the pool's; else to its own connection, or, while the shared
 * one still owes it replies, to after_pool (redis_shadow_dedicate).  0, or
 * -1 after a detach (nothing of src consumed).
 */
static int
shadow_out(struct redis_session *s, const struct redis_unit *u, struct evbuffer *src,
           const uint8_t *bytes, size_t len)
{
    struct redis_shadow *sh = s->shadow;
    /* a pooled session may have no connection of its own: dst is read past that branch */
    struct evbuffer *dst = NULL;

    if (sh->pooled) {
        if (src == NULL) {
            if (sh->effect == NULL && (sh->effect = evbuffer_new()) == NULL)
                goto out_of_memory;
            src = sh->effect; /* empty between releasing and replace */
            if (evbuffer_add(src, bytes, len) != 0)
                goto out_of_memory;
        }
        if (redis_pool_send(s, REDIS_ROLE_SHADOW, src, len, u->sreplies,
                            u->base.kind != REQ_KIND_READ) != 0) {
            int full = errno == ENOBUFS;
            char why[200];
            if (bytes != NULL)
                evbuffer_drain(src, len);
            snprintf(why, sizeof(why), "shared shadow connection: %s",
                     full ? "its unsent bytes are over the mirror queue" : strerror(errno));
            if (full)
                mirror_detach(&s->base.mirror, SHADOW_DROPPED, SHADOW_DROP_QUEUE_FULL, why,
                              session_clock(&s->base));
            else
                detach(s, SHADOW_SHADOW_ERROR, why);
            return -1;
        }
        mirror_hand_over(&s->base.mirror, len); /* the pool's now (redis_pool.h) */
        return 0;
    }
    dst = s->base.shadow_conn->out;
    if (sh->leg.mux != NULL) {
        if (sh->after_pool == NULL && (sh->after_pool = evbuffer_new()) == NULL)
            goto out_of_memory;
        dst = sh->after_pool;
    }
    if (src != NULL) {
        evbuffer_remove_buffer(src, dst, len);
        return 0;
    }
    if (evbuffer_add(dst, bytes, len) != 0)
        goto out_of_memory;
    return 0;

out_of_memory:
    detach(s, SHADOW_SHADOW_ERROR, "out of memory");
    return -1;
}

/*
 * queue_unit - unit u goes to the shadow once the primary has answered it:
 * its request (bytes, or the first len bytes of src) waits in the mirror
 * queue.  A detached shadow or a full queue makes it `dropped`.
 */
static void
queue_unit(struct redis_session *s, struct redis_unit *u, const uint8_t *bytes,
           struct evbuffer *src, size_t len)
{
    u->base.mirrored = 1;
    if (s->base.mirror.state == MIRROR_DETACHED) {
        mirror_drop(&s->base.mirror, &u->base);
        if (mirror_changes_data(&u->base))
            shadow_note_divergence(s->base.lis->metric_slot,
                                   s->base.mirror.identity_refused
                                       ? "dropped: the shadow refused the client's login"
                                       : "dropped: the session's shadow is detached",
                                   u->cmd ? u->cmd->name : "", u->cmd ? strlen(u->cmd->name) : 0);
        return;
    }
    u->cmp = redis_cmp_new(s); /* NULL: mirrored, not compared */
    if (bytes != NULL)
        redis_recheck_keep(s, u, bytes, len);
    mirror_hold(&s->base.mirror, &u->base, src, bytes, len); /* full: detached, counted */
}

/*
 * A transaction collects in tx_buf: every queued command, MULTI included.
 * At EXEC it becomes one unit of the mirror queue, so a transaction larger
 * than the session's queue bound (mirror { queue }) could never be admitted:
 * collecting stops there instead of copying without bound until EXEC, and
 * the shadow is detached now, as a full queue detaches it (counted; a write
 * in it marks the shadow diverged when EXEC drops it).
 */
/*
 * A server command queued in MULTI (REPLICAOF, CONFIG SET, DEBUG, SHUTDOWN,
 * CLIENT KILL ...) is never mirrored outside one, and must not be inside:
 * REPLICAOF would turn the shadow into a replica of whatever the client
 * named.  It goes as PING, so EXEC's reply keeps its length; that EXEC is
 * then compared as noise (server_local).
 */
static const uint8_t tx_ping[] = "*1\r\n$4\r\nPING\r\n";

static void
tx_add(struct redis_session *s, const struct redis_unit *u, const uint8_t *bytes, size_t len)
{
    struct redis_shadow *sh = s->shadow;
    sh->tx_cmds++;
    if ((u->flags & REDISCMD_ADMIN) && (u->flags & REDISCMD_NO_MIRROR)) {
        sh->tx_local = 1;
        bytes = tx_ping;
        len = sizeof(tx_ping) - 1;
    }
    if ((u->base.kind == REQ_KIND_WRITE || u->base.kind == REQ_KIND_SESSION) &&
        !s->base.mirror.gated) /* a replica gets the transaction from its primary */
        sh->tx_wanted = 1;
    if (!s->base.mirror.gated && redis_effect_wanted(s, u, bytes, len)) {
        sh->tx_effects = 1;
        /* SPOP mirrored as SREM answers otherwise; XADD with the primary's id answers the same */
        if (redis_effect_of(u) == RS_EFFECT_SPOP)
            sh->tx_nondet = 1;
    } else if (u->flags & REDISCMD_NONDET) {
        sh->tx_nondet = 1; /* SRANDMEMBER, TIME ...: EXEC's reply differs as theirs does */
    }
    if (sh->tx_overflow)
        return;
    if (evbuffer_get_length(sh->tx_buf) + len > s->base.mirror.queue_bytes) {
        evbuffer_drain(sh->tx_buf, evbuffer_get_length(sh->tx_buf));
        sh->tx_overflow = 1;
        mirror_detach(&s->base.mirror, SHADOW_DROPPED, SHADOW_DROP_QUEUE_FULL,
                      "MULTI larger than the mirror queue", session_clock(&s->base));
        return;
    }
    evbuffer_add(sh->tx_buf, bytes, len);
}

/* The open MULTI is over (EXEC, DISCARD, RESET, the client gone). */
static void
tx_reset(struct redis_shadow *sh)
{
    if (sh == NULL)
        return; /* the session never mirrored */
    if (sh->tx_buf)
        evbuffer_drain(sh->tx_buf, evbuffer_get_length(sh->tx_buf));
    sh->tx_cmds = 0;
    sh->tx_overflow = 0;
    sh->tx_local = 0;
    sh->tx_effects = 0;
    sh->tx_nondet = 0;
}

/* Room for AUTH user pass of the longest identity tandem keeps, and RESET before it. */
#define LOGIN_BUF (RS_IDENT_USER_MAX + RS_IDENT_PASS_MAX + 64)

/* AUTH with the shadow backend's own credentials into out; 0 when it has none. */
static size_t
build_tandem_auth(const struct rt_backend *b, uint8_t *out, size_t cap)
{
    if (!b->password[0])
        return 0;
    if (b->conf->user[0])
        return resp_build_command(out, cap, 3,
                                  (const char *const[]){"AUTH", b->conf->user, b->password}, NULL);
    return resp_build_command(out, cap, 2, (const char *const[]){"AUTH", b->password}, NULL);
}

/*
 * A shadow backend with fence commands is, once a fleet flipped away from
 * it, the old primary that refuses the application's user: the mirror logs
 * in there with tandem's own login, never as the client, so the writes it
 * mirrors still land and a rollback loses none.  Such a connection does
 * not answer the client's reads (redis_shadow_login_ok: other rights than
 * the client's), and a client that logged in is asked to reconnect when a
 * flip would make it the primary connection (login_lost).
 */
int
redis_shadow_fenced(const struct redis_session *s)
{
    const struct rt_backend *b = s->base.shadow_be;
    return b != NULL && b->conf->nfence > 0 && b->password[0] != '\0';
}

/* AUTH as the client's identity, in the form it used, into out; 0 when out is too small. */
static size_t
build_ident_auth(const struct redis_ident *id, uint8_t *out, size_t cap)
{
    if (id->has_user)
        return resp_build_command(out, cap, 3, (const char *const[]){"AUTH", id->user, id->pass},
                                  (const size_t[]){4, id->user_len, id->pass_len});
    return resp_build_command(out, cap, 2, (const char *const[]){"AUTH", id->pass},
                              (const size_t[]){4, id->pass_len});
}

/* HELLO proto into out; 0 when out is too small. */
static size_t
build_hello(uint8_t proto, uint8_t *out, size_t cap)
{
    return resp_build_command(out, cap, 2, (const char *const[]){"HELLO", proto == 3 ? "3" : "2"},
                              NULL);
}

/*
 * mirror_hello - the client's HELLO with a protocol version (unit u): once
 * the primary accepted it, the shadow gets HELLO with that version alone
 * (not the rest: its answer describes the server, SETNAME follows the
 * client's name), so both answer in the same protocol and compare.
 */
static void
mirror_hello(struct redis_session *s, struct redis_unit *u)
{
    uint8_t buf[64];
    size_t n = build_hello(u->proto, buf, sizeof(buf));
    if (s->base.mirror.state == MIRROR_DETACHED || n == 0)
        return; /* re-attaching replays the protocol the primary speaks */
    u->base.replay = 1; /* the session's state, not a comparison */
    u->if_accepted = 1;
    u->mode = RESP_DIGEST_NONE;
    queue_unit(s, u, buf, NULL, n);
}

/*
 * mirror_login - the client's AUTH or HELLO ... AUTH (unit u): the shadow
 * gets AUTH with the same identity, in its turn, once the primary accepted
 * it (drop_instead).  Not HELLO itself: its answer describes the server.
 * A detached shadow needs nothing: re-attaching replays what the primary
 * accepted.  An identity tandem could not keep (too long, out of memory)
 * ends the mirroring: the shadow would go on as someone else.
 */
static void
mirror_login(struct redis_session *s, struct redis_unit *u)
{
    uint8_t buf[LOGIN_BUF];
    size_t n;

    if (redis_shadow_fenced(s))
        return; /* the shadow stays logged in as tandem (see redis_shadow_fenced) */
    if (u->ident == NULL || (n = build_ident_auth(u->ident, buf, sizeof(buf))) == 0) {
        redis_shadow_identity_lost(s, "the client's login is longer than tandem keeps");
        return;
    }
    if (u->proto != 0) {
        /* HELLO 3 AUTH ...: the shadow speaks the same protocol after the login */
        size_t h = build_hello(u->proto, buf + n, sizeof(buf) - n);
        n += h;
        u->sreplies = h > 0 ? 2 : 1;
    }
    if (s->base.mirror.state == MIRROR_DETACHED) {
        OPENSSL_cleanse(buf, n);
        return;
    }
    u->base.replay = 1; /* the session's state, not a comparison */
    u->base.barrier = 1; /* what follows runs only once the shadow accepted it */
    u->identity = 1;
    u->sets_login = 1;
    u->login = RL_CLIENT;
    u->mode = RESP_DIGEST_NONE;
    queue_unit(s, u, buf, NULL, n);
    OPENSSL_cleanse(buf, n);
}

/*
 * redis_shadow_command - command u (request bytes[0..len)) was read and
 * appended; s->in_multi is already 1 for MULTI and still 1 for its EXEC or
 * DISCARD.  Decide what the shadow gets of it.
 */
void
redis_shadow_command(struct redis_session *s, struct redis_unit *u, const uint8_t *bytes,
                     size_t len)
{
    struct redis_shadow *sh = s->shadow;
    enum rs_cmd which = (enum rs_cmd)u->which;

    if (sh == NULL || sh->tx_buf == NULL)
        return;
    if (u->track == RT_AUTH) {
        if (s->in_multi) {
            /* run by EXEC, its answer one of many: tandem cannot tell who the client is after */
            redis_ident_free(u->ident);
            u->ident = NULL;
            redis_shadow_identity_lost(s, "the client logged in inside MULTI");
            return;
        }
        mirror_login(s, u);
        return;
    }
    if (which == RC_HELLO && u->proto != 0 && !s->in_multi) {
        mirror_hello(s, u);
        return;
    }
    if (which == RC_MULTI && evbuffer_get_length(sh->tx_buf) == 0 && sh->tx_cmds == 0) {
        sh->tx_wanted = 0;
        tx_add(s, u, bytes, len);
        return;
    }
    if (s->in_multi && which == RC_EXEC) {
        tx_add(s, u, bytes, len);
        u->tx = 1;
        u->sreplies = sh->tx_cmds;
        u->mode = RESP_DIGEST_ORDERED;
        if (sh->tx_local)
            u->flags |= REDISCMD_NONDET | REDISCMD_LOCAL; /* a PING stood in for a server command */
        else if (sh->tx_nondet)
            u->flags |= REDISCMD_NONDET;
        size_t txlen = evbuffer_get_length(sh->tx_buf);
        if (sh->tx_wanted && sh->tx_overflow) {
            /* what the queue could not take: counted as such, the shadow misses its writes */
            mirror_drop_as(&s->base.mirror, &u->base, SHADOW_DROP_QUEUE_FULL);
            shadow_note_divergence(s->base.lis->metric_slot,
                                   "dropped: MULTI larger than the mirror queue", "multi/exec",
                                   strlen("multi/exec"));
        } else if (sh->tx_wanted) {
            queue_unit(s, u, NULL, sh->tx_buf, txlen);
            if (sh->tx_effects && u->base.held) {
                /* rewritten from EXEC's reply (redis_effect_build_tx): kept as it is read */
                u->effect = RS_EFFECT_TX;
                u->exec_reply = evbuffer_new(); /* NULL: the choice is lost, said at release */
            }
        }
        tx_reset(sh);
        return;
    }
    if ((s->in_multi && which == RC_DISCARD) || which == RC_RESET) {
        tx_reset(sh);
        if (which == RC_RESET) {
            /*
             * RESET logs the primary's connection out: the shadow's too, then
             * it logs in as a new connection of a client that never did would
             */
            uint8_t buf[LOGIN_BUF];
            size_t n = resp_build_command(buf, sizeof(buf), 1, (const char *const[]){"RESET"},
                                          NULL);
            size_t a = build_tandem_auth(s->base.shadow_be, buf + n, sizeof(buf) - n);
            u->base.replay = 1;
            u->sreplies = a > 0 ? 2 : 1;
            u->sets_login = 1;
            u->login = a > 0 ? RL_TANDEM : RL_DEFAULT;
            queue_unit(s, u, buf, NULL, n + a);
            OPENSSL_cleanse(buf, n + a);
        }
        return;
    }
    if (s->in_multi) {
        tx_add(s, u, bytes, len);
        return;
    }
    if (wanted(s, u)) {
        u->effect = redis_effect_of(u);
        queue_unit(s, u, bytes, NULL, len);
    }
}

/*
 * SCRIPT KILL or FUNCTION KILL stopped the script on the primary.  Redis
 * kills only a script that has not written yet, so the shadow needs none
 * of it; mirrored, it would run there with no one to kill it, and keep
 * the shadow busy (every other client answered BUSY) for as long as it runs.
 */
static int
script_killed(const struct redis_compare *c)
{
    static const char killed[] = "Script killed by user";
    return c->pinfo.type == '-' &&
           memmem(c->psample, c->plen, killed, sizeof(killed) - 1) != NULL;
}

/* A mirrored unit whose primary answer says the shadow must not run it. */
static int
drop_instead(const struct redis_unit *u)
{
    const struct redis_compare *c = u->cmp;
    if (u->identity || u->if_accepted)
        return u->refused; /* a login (or HELLO) the primary refused changes nothing */
    if (!u->base.primary_done || c == NULL || c->plen == 0)
        return 0;
    if (u->tx)
        return c->pinfo.type != '*' || c->pinfo.null; /* aborted: nothing committed */
    if (script_killed(c))
        return 1;
    /* refused for the client's credentials, which the shadow does not share */
    return c->pinfo.type == '-' && ((c->plen >= 7 && memcmp(c->psample, "-NOAUTH", 7) == 0) ||
                                    (c->plen >= 7 && memcmp(c->psample, "-NOPERM", 7) == 0));
}

/* The primary's choice of u's effect was not kept: the shadow does its own, and diverges. */
static void
effect_lost(struct redis_session *s, const struct redis_unit *u)
{
    static const char why[] = "a write whose effect the server chooses mirrored verbatim: "
                              "the primary's choice was not kept";
    const char *name = u->tx ? "multi/exec" : u->cmd->name;
    shadow_note_divergence(s->base.lis->metric_slot, why, name, strlen(name));
    log_at(CONF_LOG_INFO, s->base.id, s->base.peer, "%s (%s)", why, name);
}

/*
 * XADD *, SPOP (alone, or in a transaction: RS_EFFECT_TX): the shadow gets
 * the effect the primary chose (redis_effect.c),
 * built into shadow.effect for on_replace.  u's bytes are the front of the
 * queue's held buffer: units are released in order.
 */
static enum mirror_verdict
effect_verdict(struct redis_session *s, struct redis_unit *u)
{
    struct redis_shadow *sh = s->shadow;
    const uint8_t *req = evbuffer_pullup(s->base.mirror.held, (ev_ssize_t)u->base.held_len);
    enum redis_effect_result r = REDIS_EFFECT_LOST;
    unsigned lost = 0; /* commands of a transaction mirrored verbatim for want of the choice */

    if (sh->effect == NULL)
        sh->effect = evbuffer_new();
    if (req != NULL && sh->effect != NULL)
        r = u->effect == RS_EFFECT_TX
                ? redis_effect_build_tx(s, u, req, u->base.held_len, sh->effect, &lost)
                : redis_effect_build(s, u, req, u->base.held_len, sh->effect);
    if (u->exec_reply != NULL) { /* read: its memory is not kept until the shadow answers */
        evbuffer_free(u->exec_reply);
        u->exec_reply = NULL;
    }
    if (lost > 0 && r == REDIS_EFFECT_BUILT)
        effect_lost(s, u);
    if (r == REDIS_EFFECT_BUILT)
        return MIRROR_REPLACE;
    if (sh->effect != NULL)
        evbuffer_drain(sh->effect, evbuffer_get_length(sh->effect));
    if (r == REDIS_EFFECT_LOST)
        effect_lost(s, u);
    return MIRROR_SEND;
}

/* The mirror queue's hooks (engine/mirror.h). */
static enum mirror_verdict
on_releasing(void *owner, struct mirror_unit *mu)
{
    struct redis_unit *u = redis_unit_of(mu);
    if (drop_instead(u))
        return MIRROR_DROP;
    return u->effect != RS_EFFECT_NONE ? effect_verdict(owner, u) : MIRROR_SEND;
}

/* MIRROR_REPLACE: u's bytes left the queue; its effect, admitted, goes in their place. */
static int
on_replace(void *owner, struct mirror_unit *mu)
{
    struct redis_session *s = owner;
    struct evbuffer *e = s->shadow->effect;
    size_t len = evbuffer_get_length(e);
    if (mirror_admit(&s->base.mirror, len) != 0) {
        evbuffer_drain(e, len); /* full: detached, counted */
        return -1;
    }
    if (shadow_out(s, redis_unit_of(mu), e, NULL, len) != 0) {
        evbuffer_drain(e, len);
        return -1;
    }
    return 0;
}

/* Released bytes join conn.out (or the shared connection's); one write per batch. */
static int
on_send(void *owner, struct mirror_unit *mu, struct evbuffer *src, size_t len)
{
    return shadow_out(owner, redis_unit_of(mu), src, NULL, len);
}

static void
on_sent(void *owner, struct mirror_unit *mu)
{
    struct redis_session *s = owner;
    struct redis_unit *u = redis_unit_of(mu);
    if (u->sets_login)
        s->shadow->login = (enum rs_login)u->login;
}

static void
on_record(void *owner, struct mirror_unit *mu)
{
    redis_shadow_record(owner, redis_unit_of(mu));
}

static void shadow_close(void *owner);
static void on_detached(void *owner, enum shadow_outcome why, const char *reason,
                        const struct mirror_unit *lost, uint64_t owed);

const struct mirror_ops redis_mirror_ops = {
    .send = on_send,
    .releasing = on_releasing,
    .replace = on_replace,
    .sent = on_sent,
    .record = on_record,
    .free_unit = redis_unit_release,
    .close = shadow_close,
    .detached = on_detached,
};

/*
 * redis_shadow_flush - after a batch of primary replies: the held units
 * they answered go to the shadow, in order, and are sent, one pass over the
 * units and one write per batch.  (Releasing per reply walked the list from
 * its head every time: quadratic in the pipeline's depth.)
 */
void
redis_shadow_flush(struct redis_session *s)
{
    if (s->base.mirror.state == MIRROR_OFF)
        return;
    if (s->base.mirror.nheld > 0) {
        mirror_release(&s->base.mirror, 0, session_clock(&s->base));
        mirror_complete(&s->base.mirror); /* those dropped instead of sent */
    }
    if (s->base.mirror.state == MIRROR_READY)
        flush_shadow(s);
}

void
redis_shadow_release_gated(struct session *base)
{
    redis_shadow_flush((struct redis_session *)base);
}

/* ------------------------------------------------------------------ */
/* Recording.                                                          */

/* "SET", "CLIENT SETNAME", "MULTI/EXEC": what the report groups by. */
static void
unit_key(const struct redis_unit *u, char *out, size_t cap)
{
    const char *name = u->tx ? "multi/exec" : u->cmd ? u->cmd->name : "(unknown command)";
    size_t i = 0;
    for (; name[i] && i + 1 < cap; i++) {
        char c = name[i] == '|' ? ' ' : name[i];
        out[i] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
    }
    out[i] = '\0';
}

/* FNV-1a, salted so a Redis key never meets a PostgreSQL fingerprint. */
static uint64_t
key_id(const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull ^ 0x7265646973ull; /* "redis" */
    for (const char *p = key; *p; p++)
        h = (h ^ (uint8_t)*p) * 0x100000001b3ull;
    return h;
}

/*
 * The report's key and its id for each command of the table, built once
 * for the process: spelling and hashing the name again for every recorded
 * command cost more than the comparison.  NULL (out of memory): computed
 * each time.
 */
struct cmd_key {
    char text[48]; /* the longest name is 29 bytes */
    uint64_t id;
};
static struct cmd_key *cmd_keys;
static const struct rediscmd *cmd_table;
static size_t cmd_count;
static pthread_once_t cmd_keys_once = PTHREAD_ONCE_INIT;

static void
cmd_keys_build(void)
{
    const struct rediscmd *t = rediscmd_table(&cmd_count);
    struct cmd_key *k = calloc(cmd_count, sizeof(*k));
    if (k == NULL)
        return;
    for (size_t i = 0; i < cmd_count; i++) {
        struct redis_unit u = {.cmd = &t[i]};
        unit_key(&u, k[i].text, sizeof(k[i].text));
        k[i].id = key_id(k[i].text);
    }
    cmd_table = t;
    cmd_keys = k;
}

/* The key of u: its command's precomputed one, or spelled into buf. */
static const struct cmd_key *
record_key(const struct redis_unit *u, struct cmd_key *buf)
{
    pthread_once(&cmd_keys_once, cmd_keys_build);
    if (!u->tx && u->cmd != NULL && cmd_keys != NULL && u->cmd >= cmd_table &&
        u->cmd < cmd_table + cmd_count)
        return &cmd_keys[u->cmd - cmd_table];
    unit_key(u, buf->text, sizeof(buf->text));
    buf->id = key_id(buf->text);
    return buf;
}

void
redis_shadow_record(struct redis_session *s, struct redis_unit *u)
{
    enum shadow_outcome outcome;
    struct cmd_key kbuf;
    char psum[SUMMARY_MAX], ssum[SUMMARY_MAX];
    const struct redis_compare *c = u->cmp;

    psum[0] = ssum[0] = '\0'; /* not "" initializers: those clear 1 KiB per command */
    if (u->base.forced >= 0)
        outcome = (enum shadow_outcome)u->base.forced;
    else if (c != NULL)
        outcome = rediscmp_outcome(u->flags, &c->pinfo, &c->sinfo,
                                   rediscmp_ttl_tolerance(u->cmd ? u->cmd->name : ""));
    else
        return; /* mirrored, not compared (orphaned, or out of memory) */
    if (outcome != SHADOW_MATCH && c != NULL) {
        rediscmp_render(c->psample, c->plen, c->pinfo.size, psum, sizeof(psum));
        if (u->base.forced < 0)
            rediscmp_render(c->ssample, c->slen, c->sinfo.size, ssum, sizeof(ssum));
    }
    const struct cmd_key *key = record_key(u, &kbuf);
    enum shadow_noise_reason reason = rediscmd_noise_reason(u->flags);
    if (outcome == SHADOW_MISMATCH && mirror_doubtful(&s->base.mirror, &u->base)) {
        outcome = SHADOW_NOISE;
        reason = SHADOW_NOISE_REPLICATION;
    }
    /* a read's mismatch is a claim: confirmed first, the re-check records it */
    if (outcome == SHADOW_MISMATCH && u->base.forced < 0 &&
        redis_recheck_start(s, u, key->id, key->text, psum, ssum) == 0)
        return;
    shadow_record(s->base.w->shadow, s->base.lis->metric_slot, key->id, key->text, outcome,
                  reason, u->base.primary_ns,
                  u->base.shadow_done && u->base.forced < 0 ? u->base.shadow_ns : 0, psum, ssum);
    /*
     * A write only one side failed: its data may differ from now on (forced
     * outcomes, drops and detaches, were noted where decided).  A write whose
     * reply differs in value is no proof: INCR, LPUSH ... answer what other
     * sessions' writes made of the key, and those interleave across sessions.
     */
    if (u->base.forced < 0 && mirror_changes_data(&u->base) && !u->base.replay &&
        (outcome == SHADOW_SHADOW_ERROR || outcome == SHADOW_PRIMARY_ERROR))
        shadow_note_divergence(s->base.lis->metric_slot, shadow_outcome_name(outcome), key->text,
                               strlen(key->text));
    if (outcome == SHADOW_MISMATCH)
        slog(s, CONF_LOG_DEBUG, "shadow mismatch: %s: primary %s, shadow %s", key->text, psum,
             ssum);
}

/* ------------------------------------------------------------------ */
/* The shadow connection.                                              */

/* The queue's close hook: the shadow connection goes (the queue empties itself). */
static void
shadow_close(void *owner)
{
    struct redis_session *s = owner;
    struct redis_shadow *sh = s->shadow;
    if (sh == NULL)
        return; /* never opened (redis_shadow_restart of a session that does not mirror) */
    redis_pool_leave(s, REDIS_ROLE_SHADOW); /* its replies owed there are dropped */
    if (sh->after_pool) /* counted in mirror.queued, which the queue zeroes */
        evbuffer_drain(sh->after_pool, evbuffer_get_length(sh->after_pool));
    if (s->base.shadow_open) {
        size_t unsent = evbuffer_get_length(s->base.shadow_conn->out);
        conn_release(s->base.shadow_conn);
        s->base.shadow_open = 0;
        if (s->base.mirror.state == MIRROR_READY)
            count_shadow(s, METRIC_B_SERVER_CLOSED, 1);
        (void)unsent; /* counted in mirror.queued, which the queue zeroes */
    }
    sh->reply_open = 0;
    sh->push_open = 0;
    sh->replies_left = 0;
}

/* The queue's detached hook: say why, note a lost write, mend a routed read. */
static void
on_detached(void *owner, enum shadow_outcome why, const char *reason,
            const struct mirror_unit *lost, uint64_t owed)
{
    struct redis_session *s = owner;
    (void)owed;
    if (lost != NULL) {
        const struct redis_unit *u = (const struct redis_unit *)lost;
        char text[64];
        snprintf(text, sizeof(text), "%s: the shadow was detached", shadow_outcome_name(why));
        shadow_note_divergence(s->base.lis->metric_slot, text, u->cmd ? u->cmd->name : "",
                               u->cmd ? strlen(u->cmd->name) : 0);
    }
    log_at(why == SHADOW_DROPPED && !s->base.mirror.identity_refused ? CONF_LOG_INFO : CONF_LOG_WARN,
           s->base.id, s->base.peer, "shadow \"%s\" at %s detached: %s%s", s->base.shadow_be->conf->name,
           s->base.shadow_be->addr_text, reason, lost ? " (a write was lost: diverged)" : "");
    redis_session_route_lost(s); /* before the routed unit is recorded and freed */
    session_shadow_progress(&s->base);
}

/* detach - give up on the shadow connection (engine/mirror.h, mirror_detach). */
static void
detach(struct redis_session *s, enum shadow_outcome why, const char *reason)
{
    mirror_detach(&s->base.mirror, why, mirror_drop_reason(why), reason, session_clock(&s->base));
}

/*
 * The user name of the client's identity for the log (never the password):
 * printable bytes only, and short, since the client chose it.
 */
static void
ident_user_text(const struct redis_ident *id, char *out, size_t cap)
{
    size_t i = 0;
    if (id == NULL || !id->has_user) {
        snprintf(out, cap, "default");
        return;
    }
    for (; i < id->user_len && i + 1 < cap; i++) {
        char c = id->user[i];
        out[i] = c >= 0x20 && c < 0x7f && c != '"' ? c : '?';
    }
    out[i] = '\0';
}

/*
 * identity_refused - the shadow will not act as the client (or tandem
 * cannot tell it who the client is): detach for the rest of the session,
 * counted as `identity`, logged once (the session never re-attaches).  The
 * session's later mirrors are dropped (`identity`), a write among them
 * marks the shadow diverged, and a cutover closes the session.
 */
static void
identity_refused(struct redis_session *s, const char *why)
{
    char text[512];

    if (s->base.mirror.identity_refused || s->base.mirror.state == MIRROR_OFF)
        return;
    s->base.mirror.identity_refused = 1;
    snprintf(text, sizeof(text),
             "%s; this session is not mirrored any more (the shadow needs the primary's ACL "
             "users)",
             why);
    if (s->base.mirror.state == MIRROR_DETACHED) {
        /* detached already (a failure, and no connection now): no more attempts */
        log_at(CONF_LOG_WARN, s->base.id, s->base.peer, "shadow \"%s\" at %s: %s", s->base.shadow_be->conf->name,
               s->base.shadow_be->addr_text, text);
        return;
    }
    mirror_detach(&s->base.mirror, SHADOW_DROPPED, SHADOW_DROP_IDENTITY, text, session_clock(&s->base));
}

void
redis_shadow_identity_lost(struct redis_session *s, const char *why)
{
    identity_refused(s, why);
}

/*
 * Queue one command of the login or the session state (bytes[0..n)),
 * answered before any mirror.  Its unit, or NULL when out of memory.
 */
static struct redis_unit *
replay_bytes(struct redis_session *s, const uint8_t *buf, size_t n)
{
    struct redis_unit *u = n > 0 ? redis_unit_new(s) : NULL;
    if (u == NULL)
        return NULL;
    u->base.kind = REQ_KIND_SESSION;
    u->base.replay = u->base.mirrored = u->base.primary_done = 1;
    u->base.closed_ns = session_clock(&s->base);
    u->mode = RESP_DIGEST_NONE;
    u->cmp = redis_cmp_new(s); /* for the error text, should it fail */
    mirror_append(&s->base.mirror, &u->base);
    if (s->base.mirror.scur == NULL)
        s->base.mirror.scur = &u->base;
    evbuffer_add(s->base.shadow_conn->out, buf, n);
    mirror_account(&s->base.mirror, (int64_t)n);
    return u;
}

static void
replay(struct redis_session *s, size_t argc, const char *const *argv)
{
    uint8_t buf[2048];
    replay_bytes(s, buf, resp_build_command(buf, sizeof(buf), argc, argv, NULL));
}

/*
 * replay_login - the new connection logs in: as the client's identity when
 * the primary accepted one, else with the shadow backend's credentials, if
 * any.  -1 when out of memory.
 */
static int
replay_login(struct redis_session *s)
{
    struct redis_shadow *sh = s->shadow;
    uint8_t buf[LOGIN_BUF];
    size_t n;
    struct redis_unit *u = NULL;
    enum rs_login login;

    if (s->ident != NULL && !redis_shadow_fenced(s)) {
        n = build_ident_auth(s->ident, buf, sizeof(buf));
        login = RL_CLIENT;
    } else {
        n = build_tandem_auth(s->base.shadow_be, buf, sizeof(buf));
        login = RL_TANDEM;
    }
    sh->login = RL_DEFAULT;
    if (n == 0)
        return 0; /* nobody to log in as: the default user, like the client on the primary */
    u = replay_bytes(s, buf, n);
    OPENSSL_cleanse(buf, n);
    if (u == NULL)
        return -1;
    u->identity = login == RL_CLIENT;
    u->sets_login = 1;
    s->base.mirror.barrier = &u->base; /* no mirror goes out before the login is answered */
    u->login = (uint8_t)login;
    sh->login = login;
    return 0;
}

/*
 * May s mirror on the shared shadow connections (redis_pool.h)?  While it
 * shares the primary's (no connection state at all), and when the shadow
 * backend wants no login of tandem's (nor fences: that needs one) and no
 * TLS, as for the primary's.
 */
static int
may_pool(const struct redis_session *s)
{
    const struct rt_backend *b = s->base.shadow_be;
    return s->shared && b->tls == NULL && b->password[0] == '\0';
}

/*
 * redis_shadow_start - the shadow for s: pooled, the shared connections
 * (nothing to open, nothing to replay: the session has no state);
 * else open a connection of its own: log in (as the client, or with the
 * shadow backend's credentials for a client that never logged in:
 * replay_login), replay the session's db and name.  Never waits: mirrors
 * queue up in conn.out behind the login until the connect completes.
 */
void
redis_shadow_start(struct redis_session *s)
{
    /* out of line, and only for sessions that mirror: most of a passthrough session's size */
    if (s->shadow == NULL && (s->shadow = calloc(1, sizeof(*s->shadow))) == NULL)
        return; /* the session runs without a shadow */
    struct redis_shadow *sh = s->shadow;

    if (s->base.mirror.state == MIRROR_OFF) {
        if (sh->tx_buf == NULL && (sh->tx_buf = evbuffer_new()) == NULL)
            return; /* stays OFF: the session runs without a shadow */
        if (session_mirror_open(&s->base) != 0)
            return;
    }
    sh->reply_open = 0;
    sh->push_open = 0;
    sh->replies_left = 0;
    sh->pooled = may_pool(s);
    s->base.shadow_shared = sh->pooled;
    if (sh->pooled) {
        sh->login = RL_DEFAULT;
        s->base.mirror.state = MIRROR_READY; /* mirror_attached once the shadow answers */
        return;
    }
    int rc = session_connect_shadow(&s->base);
    if (rc < 0)
        return;

    if (replay_login(s) != 0) {
        detach(s, SHADOW_SHADOW_ERROR, "out of memory");
        return;
    }
    if (s->proto == 3)
        replay(s, 2, (const char *const[]){"HELLO", "3"});
    if (s->db != 0) {
        char db[24];
        snprintf(db, sizeof(db), "%lld", (long long)s->db);
        replay(s, 2, (const char *const[]){"SELECT", db});
    }
    if (s->client_name != NULL)
        replay(s, 3, (const char *const[]){"CLIENT", "SETNAME", s->client_name});

    if (rc == 0)
        redis_shadow_connected(&s->base);
}

/*
 * shadow_tls - advance the shadow's TLS handshake (the engine calls
 * redis_shadow_connected on each event while the mirror is connecting,
 * and its connect deadline covers the handshake).  1 done, 0 in progress,
 * -1 failed: the shadow is detached, the client never notices.
 */
static int
shadow_tls(struct redis_session *s)
{
    struct conn *c = s->base.shadow_conn;
    char why[200];
    enum conn_io io = session_backend_tls(c, s->base.shadow_be);
    if (io == CONN_AGAIN)
        return 0;
    if (io == CONN_OK)
        return 1;
    snprintf(why, sizeof(why), "TLS: %s", conn_tls_error(c, "handshake failed"));
    count_shadow(s, METRIC_B_CONNECT_FAILURES, 1);
    detach(s, SHADOW_SHADOW_ERROR, why);
    return -1;
}

/*
 * redis_shadow_dedicate - s has connection state from now on (its first
 * stateful command was read, before it is mirrored): its shadow leg takes
 * a connection of its own, as the primary leg does.  Nothing is replayed
 * (a pooled session never changed the state of the shared connections),
 * and nothing is sent on it before the shared connection's replies owed
 * are in: the commands that reach the shadow first answer first
 * (after_pool).  A detached shadow opens its own when it re-attaches.
 */
void
redis_shadow_dedicate(struct redis_session *s)
{
    struct redis_shadow *sh = s->shadow;
    if (sh == NULL || !sh->pooled)
        return; /* never mirrored (a passthrough session), or already its own */
    sh->pooled = 0;
    s->base.shadow_shared = 0;
    if (s->base.mirror.state != MIRROR_READY)
        return;
    slog(s, CONF_LOG_DEBUG, "a shadow connection of its own to \"%s\" (connection state)",
         s->base.shadow_be->conf->name);
    int rc = session_connect_shadow(&s->base); /* a failure detaches: the pool's replies too */
    if (rc == 0)
        redis_shadow_connected(&s->base);
}

/* redis_shadow_connected - the connect (and TLS) is done: send what waited for it. */
void
redis_shadow_connected(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    uint64_t now = session_now_ns();

    if (s->base.shadow_be->tls != NULL && shadow_tls(s) <= 0)
        return;
    s->base.mirror.state = MIRROR_READY;
    mirror_attached(&s->base.mirror);
    count_shadow(s, METRIC_B_SERVER_OPENED, 1);
    slog(s, CONF_LOG_DEBUG, "shadow \"%s\" connected", s->base.shadow_be->conf->name);
    for (struct mirror_unit *u = s->base.mirror.head; u; u = u->next)
        if (u->mirrored && !u->shadow_done && !u->held && u->shadow_sent_ns == 0)
            u->shadow_sent_ns = now;
    conn_want_read(s->base.shadow_conn, 1);
    flush_shadow(s);
}

/* A replayed login or state the shadow refused: the client's identity, or a login of tandem's. */
static void
replay_refused(struct redis_session *s, const struct redis_unit *u,
               const struct resp_reply_info *info)
{
    char why[300], text[200] = "";
    if (u->cmp)
        rediscmp_render(u->cmp->ssample, u->cmp->slen, info->size, text, sizeof(text));
    if (u->identity) {
        char user[64];
        ident_user_text(s->ident, user, sizeof(user));
        snprintf(why, sizeof(why), "the shadow refused the client's login as \"%s\": %s", user,
                 text);
        identity_refused(s, why);
    } else {
        snprintf(why, sizeof(why), "login failed: %s", text);
        detach(s, SHADOW_SHADOW_ERROR, why);
    }
}

/* A RESP3 push starts the shadow's input, and unit u (scur, or NULL) expects none. */
static int
shadow_push_starts(struct evbuffer *in, const struct redis_unit *u)
{
    uint8_t c;
    return evbuffer_copyout(in, &c, 1) == 1 && c == '>' && (u == NULL || !u->pushes);
}

/* A RESP3 push of the shadow's own answers nothing of ours: dropped.  -1: stop reading. */
static int
shadow_push(struct redis_session *s, struct evbuffer *in)
{
    struct redis_shadow *sh = s->shadow;
    struct evbuffer_iovec v;

    if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
        return -1;
    if (!sh->push_open) {
        resp_reader_init(&sh->reader, RESP_DIGEST_NONE);
        sh->push_open = 1;
    }
    size_t used = 0;
    struct resp_reply_info info;
    const char *err = NULL;
    enum resp_status st = resp_reader_feed(&sh->reader, v.iov_base, v.iov_len, &used, &info, &err);
    if (st == RESP_ERROR) {
        detach(s, SHADOW_SHADOW_ERROR, "the shadow sent an invalid reply");
        return -1;
    }
    evbuffer_drain(in, used);
    if (st == RESP_OK)
        sh->push_open = 0;
    return 0;
}

/*
 * The shadow's last reply to unit u is whole (info): the unit is answered
 * on both sides, a login it held back may release what waited behind it,
 * a routed read is done.
 */
static void
shadow_answered(struct redis_session *s, struct redis_unit *u, const struct resp_reply_info *info,
                int routed)
{
    if (u->cmp)
        u->cmp->sinfo = *info;
    int was_barrier = s->base.mirror.barrier == &u->base;
    mirror_shadow_answered(&s->base.mirror, &u->base, session_clock(&s->base));
    mirror_complete(&s->base.mirror);
    if (was_barrier)
        redis_shadow_flush(s); /* the login was accepted: what waited behind it goes */
    if (routed)
        redis_session_route_done(s);
    session_shadow_progress(&s->base);
}

/*
 * shadow_read - the shadow's replies in `in`, in the order of the mirrored
 * units: each digested for the comparison (a replayed login's or state's
 * reply checked), a routed read's relayed to the client.  limit NULL:
 * every byte of in is the session's (its own connection); else in is a
 * shared connection's and at most *limit whole replies (and the start of
 * the next) are, counted down as they complete.  -1 when the bytes are
 * not the replies the session awaits (its mirror is detached).
 */
static int
shadow_read(struct redis_session *s, struct evbuffer *in, uint32_t *limit)
{
    struct redis_shadow *sh = s->shadow;

    /* from the shared connection while its own one opens: redis_shadow_dedicate */
    while ((s->base.mirror.state == MIRROR_READY ||
            (limit != NULL && s->base.mirror.state == MIRROR_CONNECTING)) &&
           evbuffer_get_length(in) > 0 && (limit == NULL || *limit > 0)) {
        struct redis_unit *u = redis_unit_of(s->base.mirror.scur);
        struct evbuffer_iovec v;
        if (!sh->reply_open && (sh->push_open || shadow_push_starts(in, u))) {
            if (shadow_push(s, in) != 0)
                return -1;
            continue;
        }
        if (u == NULL || u->base.held) {
            detach(s, SHADOW_SHADOW_ERROR, "the shadow sent a reply to no request");
            return -1;
        }
        if (evbuffer_peek(in, -1, NULL, &v, 1) < 1)
            return 0;
        if (sh->replies_left == 0)
            sh->replies_left = u->sreplies;
        int last = sh->replies_left == 1;
        /* a replayed login or state: each of its replies is checked (RESET, then AUTH) */
        int keep = (last || u->base.replay) && u->cmp;
        if (!sh->reply_open) {
            resp_reader_init(&sh->reader, last && u->cmp ? (enum resp_digest_mode)u->mode
                                                         : RESP_DIGEST_NONE);
            sh->reply_open = 1;
            if (keep)
                u->cmp->slen = 0;
        }
        size_t used = 0;
        struct resp_reply_info info;
        const char *err = NULL;
        enum resp_status st = resp_reader_feed(&sh->reader, v.iov_base, v.iov_len, &used, &info,
                                               &err);
        if (st == RESP_ERROR) {
            detach(s, SHADOW_SHADOW_ERROR, "the shadow sent an invalid reply");
            return -1;
        }
        if (keep)
            redis_keep_sample(u->cmp->ssample, &u->cmp->slen, v.iov_base, used);
        int routed = &u->base == s->base.routed;
        if (routed)
            redis_session_forward(s, in, used); /* the client's answer */
        else
            evbuffer_drain(in, used);
        if (st != RESP_OK)
            continue;
        sh->reply_open = 0;
        if (limit != NULL)
            (*limit)--;
        if (u->base.replay && (info.type == '-' || info.type == '!')) {
            replay_refused(s, u, &info);
            return 0;
        }
        if (--sh->replies_left == 0)
            shadow_answered(s, u, &info, routed);
    }
    return 0;
}

/* The shadow's replies on the session's own connection. */
void
redis_shadow_input(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    shadow_read(s, s->base.shadow_conn->in, NULL);
}

/*
 * The shared connection owes the session nothing any more: what waited in
 * after_pool for that goes to its own connection now (redis_shadow_dedicate).
 */
static void
after_pool_release(struct redis_session *s)
{
    struct redis_shadow *sh = s->shadow;
    if (sh->pooled || !s->base.shadow_open || sh->after_pool == NULL ||
        evbuffer_get_length(sh->after_pool) == 0)
        return;
    evbuffer_add_buffer(s->base.shadow_conn->out, sh->after_pool);
    if (s->base.mirror.state == MIRROR_READY)
        flush_shadow(s); /* else redis_shadow_connected does */
}

int
redis_shadow_shared_input(struct redis_session *s, struct evbuffer *in, uint32_t *replies)
{
    uint32_t before = *replies;
    enum mirror_state st = s->base.mirror.state;

    s->base.now_ns = 0; /* an entry point: the shared connection's event */
    if (st != MIRROR_READY && st != MIRROR_CONNECTING) {
        redis_pool_leave(s, REDIS_ROLE_SHADOW); /* never here: a detach leaves */
        return 0;
    }
    int rc = shadow_read(s, in, replies);
    if (before != *replies && s->base.mirror.failures > 0)
        mirror_attached(&s->base.mirror); /* answered: the back-off starts over */
    if (redis_leg_took(&s->shadow->leg, before - *replies))
        after_pool_release(s);
    return rc;
}

void
redis_shadow_shared_lost(struct redis_session *s, const char *msg, enum redis_shared_loss loss)
{
    static const char prefix[] = "ERR tandem: ";
    s->base.now_ns = 0;
    s->shadow->reply_open = 0;
    if (strncmp(msg, prefix, sizeof(prefix) - 1) == 0)
        msg += sizeof(prefix) - 1; /* the primary's wording, for a client; this is for the log */
    detach(s, loss == REDIS_SHARED_TIMEOUT ? SHADOW_SHADOW_TIMEOUT : SHADOW_SHADOW_ERROR, msg);
    session_settle_soon(&s->base); /* a routed read lost may have ended it: from its own event */
}

/* redis_shadow_idle - an idle point: a detached shadow may come back. */
void
redis_shadow_idle(struct redis_session *s)
{
    if (mirror_may_reattach(&s->base.mirror, session_clock(&s->base)))
        redis_shadow_start(s);
}

/*
 * redis_shadow_route - mode split: the shadow answers u, a read just
 * appended while the client awaits nothing else.  Its request joins the
 * shadow's queue (sent by the next redis_shadow_flush); at the read sample
 * rate the primary gets it too, for the comparison: u->base.primary_done
 * is 0 then and the caller forwards it.  -1, nothing done, when the shadow
 * cannot take it now (detached, or its queue is full).
 */
int
redis_shadow_route(struct redis_session *s, struct redis_unit *u, const uint8_t *bytes,
                   size_t len)
{
    struct mirror *m = &s->base.mirror;

    if ((m->state != MIRROR_READY && m->state != MIRROR_CONNECTING) || m->nheld > 0 ||
        !mirror_fits(m, len))
        return -1;
    mirror_account(m, (int64_t)len);
    if (shadow_out(s, u, NULL, bytes, len) != 0)
        return -1; /* detached (its queue zeroed): the primary answers */
    u->base.routed = 1;
    u->base.mirrored = 1;
    if (mirror_sample(m, mirror_conf(s)->reads)) {
        u->cmp = redis_cmp_new(s); /* NULL: answered, not compared */
        redis_recheck_keep(s, u, bytes, len);
    } else {
        mirror_primary_answered(m, &u->base, 0); /* the primary never sees it */
    }
    u->base.shadow_sent_ns = m->state == MIRROR_READY ? session_clock(&s->base) : 0;
    if (m->scur == NULL)
        m->scur = &u->base;
    return 0;
}

/* redis_shadow_writes_owed - a unit other than a read is unanswered by either side. */
int
redis_shadow_writes_owed(const struct redis_session *s)
{
    return mirror_writes_owed(&s->base.mirror);
}

/*
 * redis_shadow_swap_ready - 1 when the shadow connection may become the
 * primary's (the engine found it idle, owing nothing): no reply half read
 * and no replayed state waiting to be sent.
 */
int
redis_shadow_swap_ready(const struct redis_session *s)
{
    const struct redis_shadow *sh = s->shadow;
    return !sh->reply_open && evbuffer_get_length(sh->tx_buf) == 0 && sh->leg.mux == NULL &&
           (sh->after_pool == NULL || evbuffer_get_length(sh->after_pool) == 0);
}

/*
 * redis_shadow_swap - the roles swap: the engine traded the two
 * connections; the shadow side's reply framing starts afresh.
 */
void
redis_shadow_swap(struct redis_session *s)
{
    struct redis_shadow *sh = s->shadow;
    sh->reply_open = 0;
    sh->push_open = 0;
    sh->replies_left = 0;
    mirror_attached(&s->base.mirror);
}

/*
 * redis_shadow_fence_login - the roles swapped and the connection now
 * mirrored is the old primary's, logged in as the client: on a fenced
 * backend it logs in again with tandem's login before any mirror goes out.
 */
void
redis_shadow_fence_login(struct redis_session *s)
{
    struct redis_shadow *sh = s->shadow;
    uint8_t buf[LOGIN_BUF];
    if (!redis_shadow_fenced(s) || sh->login == RL_TANDEM || s->base.mirror.state != MIRROR_READY)
        return;
    size_t n = build_tandem_auth(s->base.shadow_be, buf, sizeof(buf));
    struct redis_unit *u = replay_bytes(s, buf, n);
    OPENSSL_cleanse(buf, n);
    if (u == NULL) {
        detach(s, SHADOW_SHADOW_ERROR, "out of memory");
        return;
    }
    u->sets_login = 1;
    u->login = RL_TANDEM;
    s->base.mirror.barrier = &u->base; /* no mirror goes out before the login is answered */
    sh->login = RL_TANDEM;
    redis_shadow_flush(s);
}

/*
 * redis_shadow_restart - a shared session's roles swapped (it has no
 * primary connection of its own to trade): the shadow connection, which
 * reaches the new primary, goes, and a new one opens to the old, logged in
 * as a new connection of a stateless session is.  Only at an idle point:
 * the queue is empty.
 */
void
redis_shadow_restart(struct redis_session *s)
{
    shadow_close(s);
    redis_shadow_start(s);
}

/*
 * redis_shadow_orphan - the client left: no primary answer will come for
 * units still waiting on it.  The primary may have run them anyway, so
 * their mirrors are sent (not compared); an open MULTI never ran.
 */
void
redis_shadow_orphan(struct session *base)
{
    struct redis_session *s = (struct redis_session *)base;
    for (struct mirror_unit *mu = s->base.mirror.head; mu; mu = mu->next) {
        struct redis_unit *u = redis_unit_of(mu);
        if (!mu->primary_done) {
            redis_cmp_free(s, u->cmp);
            u->cmp = NULL;
        }
    }
    s->base.outstanding = 0;
    tx_reset(s->shadow);
    mirror_orphan(&s->base.mirror, session_clock(&s->base));
    if (s->base.mirror.state == MIRROR_READY)
        flush_shadow(s);
}

/* redis_shadow_release - at session end: close the shadow, free every unit and buffer. */
void
redis_shadow_release(struct redis_session *s)
{
    struct redis_shadow *sh = s->shadow;
    mirror_release_all(&s->base.mirror);
    if (sh == NULL)
        return;
    if (sh->tx_buf)
        evbuffer_free(sh->tx_buf);
    if (sh->effect)
        evbuffer_free(sh->effect);
    if (sh->after_pool)
        evbuffer_free(sh->after_pool);
    free(sh);
    s->shadow = NULL;
}
