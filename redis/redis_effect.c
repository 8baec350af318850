/*
 * redis_effect.c - writes whose effect the server chooses are mirrored as
 * the effect the primary chose, as Redis's own replication does:
 *
 *   XADD key ... * field value ...   the primary returned id 1700000000000-0
 *     ─► XADD key ... 1700000000000-0 field value ...   (the same entry)
 *   SPOP key [count]                 the primary popped a, b
 *     ─► SREM key a b                                   (the same members)
 *
 * Sent verbatim, the shadow would make its own stream id or pop other
 * members, and diverge.  A unit is rewritten when it is released to the
 * shadow (the primary has answered it: engine/mirror.c's MIRROR_REPLACE).
 * The primary's answer is read from the unit's sample (RS_SAMPLE_BYTES):
 * an answer longer than that (SPOP of many members) cannot be rewritten;
 * it is sent verbatim and the listener's shadow is marked diverged, said
 * and counted, never silently.
 *
 * Inside MULTI the answers are the elements of EXEC's reply: an EXEC whose
 * transaction holds XADD * or SPOP keeps that reply whole (bounded by the
 * session's mirror queue) and the transaction is rewritten from it, command
 * by command, when it is released.  In a script the commands go as they are
 * (README, Known limits).
 */
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "redis/redis_session_int.h"

#define EFFECT_MEMBERS_MAX 64

static int
arg_is(const struct resp_arg *a, const char *word)
{
    size_t n = strlen(word);
    return a->len == n && strncasecmp((const char *)a->ptr, word, n) == 0;
}

uint8_t
redis_effect_of(const struct redis_unit *u)
{
    if (u->cmd == NULL || u->base.kind != REQ_KIND_WRITE)
        return RS_EFFECT_NONE;
    if (strcmp(u->cmd->name, "xadd") == 0)
        return RS_EFFECT_XADD;
    if (strcmp(u->cmd->name, "spop") == 0)
        return RS_EFFECT_SPOP;
    return RS_EFFECT_NONE;
}

/*
 * The index of XADD's id argument:
 *   XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] id ...
 * 0 when it is past what the parse kept.
 */
static size_t
xadd_id_index(const struct resp_request *req)
{
    size_t i = 2;
    if (i < req->nargv && arg_is(&req->argv[i], "nomkstream"))
        i++;
    if (i < req->nargv && (arg_is(&req->argv[i], "maxlen") || arg_is(&req->argv[i], "minid"))) {
        i++;
        if (i < req->nargv && (arg_is(&req->argv[i], "=") || arg_is(&req->argv[i], "~")))
            i++;
        i++; /* the threshold */
        if (i < req->nargv && arg_is(&req->argv[i], "limit"))
            i += 2;
    }
    return i < req->nargv ? i : 0;
}

/* Is id one the server completes ("*", or "<ms>-*")? */
static int
id_is_auto(const struct resp_arg *id)
{
    return id->len >= 1 && id->ptr[id->len - 1] == '*';
}

/*
 * XADD with the primary's id in place of "*": the request's bytes with that
 * one argument (a multibulk "$1\r\n*\r\n") spliced.  An explicit id leaves
 * nothing to choose: verbatim.
 */
static enum redis_effect_result
xadd_effect(const uint8_t *req_bytes, const struct resp_request *req, const struct resp_arg *id,
            struct evbuffer *out)
{
    size_t i = xadd_id_index(req);
    if (i == 0 || req->form != RESP_FORM_MULTIBULK)
        return REDIS_EFFECT_LOST; /* which argument is the id: past what the parse kept */
    if (!id_is_auto(&req->argv[i]))
        return REDIS_EFFECT_VERBATIM;
    const uint8_t *arg = req->argv[i].ptr, *head = arg - 1;
    while (head > req_bytes && *head != '$') /* back over "$<len>\r\n" */
        head--;
    if (*head != '$')
        return REDIS_EFFECT_LOST;
    char len[24];
    int n = snprintf(len, sizeof(len), "$%zu\r\n", id->len);
    evbuffer_add(out, req_bytes, (size_t)(head - req_bytes));
    evbuffer_add(out, len, (size_t)n);
    evbuffer_add(out, id->ptr, id->len);
    evbuffer_add(out, "\r\n", 2);
    size_t after = (size_t)(arg + req->argv[i].len + 2 - req_bytes);
    evbuffer_add(out, req_bytes + after, req->wire_len - after);
    return REDIS_EFFECT_BUILT;
}

/* SREM key <each member the primary popped>; -1 when it popped none (SPOP runs as it is). */
static int
spop_effect(const struct resp_request *req, const struct resp_arg *members, size_t n,
            struct evbuffer *out)
{
    uint8_t head[32];
    if (n == 0 || req->nargv < 2)
        return -1;
    size_t h = resp_build_array_header(head, sizeof(head), (int64_t)n + 2);
    evbuffer_add(out, head, h);
    const struct resp_arg words[2] = {{(const uint8_t *)"SREM", 4, false}, req->argv[1]};
    for (size_t i = 0; i < n + 2; i++) {
        const struct resp_arg *a = i < 2 ? &words[i] : &members[i - 2];
        char len[24];
        int k = snprintf(len, sizeof(len), "$%zu\r\n", a->len);
        evbuffer_add(out, len, (size_t)k);
        evbuffer_add(out, a->ptr, a->len);
        evbuffer_add(out, "\r\n", 2);
    }
    return 0;
}

/* "*<n>\r\n" at the start of buf: n and the header's length; -1 when it is not one. */
static int
array_header(const uint8_t *buf, size_t len, int64_t *count, size_t *hlen)
{
    size_t i = 1;
    int64_t v = 0;
    if (len < 4 || buf[0] != '*')
        return -1;
    for (; i < len && i < 20 && buf[i] >= '0' && buf[i] <= '9'; i++)
        v = v * 10 + (buf[i] - '0');
    if (i == 1 || i + 1 >= len || buf[i] != '\r' || buf[i + 1] != '\n')
        return -1;
    *count = v;
    *hlen = i + 2;
    return 0;
}

/*
 * The effect of one command (req_bytes[0..req_len)) from its whole reply
 * reply[0..reply_len): what the primary chose.
 */
static enum redis_effect_result
command_effect(const struct redis_session *s, enum rs_effect what, const uint8_t *req_bytes,
               size_t req_len, const uint8_t *reply, size_t reply_len, struct evbuffer *out)
{
    struct resp_arg few[EFFECT_MEMBERS_MAX], *got = few;
    struct resp_request req;
    const char *err = NULL;
    size_t used = 0, n = 0, hlen = 0, max = EFFECT_MEMBERS_MAX;
    int64_t count = 0;
    enum redis_effect_result r = REDIS_EFFECT_VERBATIM;

    if (reply_len > 0 && (reply[0] == '-' || reply[0] == '!'))
        return REDIS_EFFECT_VERBATIM; /* refused: it changes nothing on either side */
    if (array_header(reply, reply_len, &count, &hlen) == 0 && count > EFFECT_MEMBERS_MAX) {
        /* SPOP of many: the reply is whole in memory already (EXEC's), so are its members */
        if ((got = malloc((size_t)count * sizeof(*got))) == NULL)
            return REDIS_EFFECT_LOST;
        max = (size_t)count;
    }
    if (resp_reply_strings(reply, reply_len, got, max, &n) != 0 ||
        resp_request_parse(req_bytes, req_len, &s->limits, &used, &req, &err) != RESP_OK ||
        used != req_len) {
        r = REDIS_EFFECT_LOST;
    } else if (what == RS_EFFECT_XADD) {
        /* n 0: NOMKSTREAM and no stream, nothing was added on the primary */
        r = n == 0 ? REDIS_EFFECT_VERBATIM : xadd_effect(req_bytes, &req, &got[0], out);
    } else if (what == RS_EFFECT_SPOP) {
        r = spop_effect(&req, got, n, out) == 0 ? REDIS_EFFECT_BUILT : REDIS_EFFECT_VERBATIM;
    }
    if (got != few)
        free(got);
    return r;
}

enum redis_effect_result
redis_effect_build(const struct redis_session *s, const struct redis_unit *u,
                   const uint8_t *req_bytes, size_t req_len, struct evbuffer *out)
{
    const struct redis_compare *c = u->cmp;

    if (c == NULL || !u->base.primary_done)
        return REDIS_EFFECT_LOST;
    if (c->pinfo.type == '-' || c->pinfo.type == '!')
        return REDIS_EFFECT_VERBATIM;
    if (c->pinfo.size > c->plen)
        return REDIS_EFFECT_LOST; /* longer than the sample kept */
    return command_effect(s, (enum rs_effect)u->effect, req_bytes, req_len, c->psample, c->plen,
                          out);
}

/* The effect command (req) needs, from its name; NONE for any other. */
static enum rs_effect
effect_by_name(const struct resp_request *req)
{
    if (req->nargv == 0)
        return RS_EFFECT_NONE;
    if (arg_is(&req->argv[0], "xadd"))
        return RS_EFFECT_XADD;
    if (arg_is(&req->argv[0], "spop"))
        return RS_EFFECT_SPOP;
    return RS_EFFECT_NONE;
}

int
redis_effect_wanted(const struct redis_session *s, const struct redis_unit *u, const uint8_t *bytes,
                    size_t len)
{
    struct resp_request req;
    const char *err = NULL;
    size_t used = 0, i;

    switch ((enum rs_effect)redis_effect_of(u)) {
    case RS_EFFECT_SPOP:
        return 1;
    case RS_EFFECT_XADD:
        if (resp_request_parse(bytes, len, &s->limits, &used, &req, &err) != RESP_OK)
            return 1; /* cannot tell: read the reply */
        i = xadd_id_index(&req);
        return i == 0 || id_is_auto(&req.argv[i]);
    default:
        return 0;
    }
}

/*
 * Commands inside MULTI that Redis runs at once rather than queueing
 * (WATCH and a nested MULTI are refused there): no element of EXEC's reply.
 */
static int
runs_unqueued(const struct resp_request *req)
{
    return req->nargv > 0 && (arg_is(&req->argv[0], "multi") || arg_is(&req->argv[0], "watch"));
}

/*
 * MULTI, the queued commands, EXEC: element k of EXEC's reply answers the
 * k-th command queued.  Each command is copied, or its effect built in its
 * place.  A reply whose element count is not the number of queued commands
 * leaves the whole transaction verbatim (LOST).
 */
enum redis_effect_result
redis_effect_build_tx(const struct redis_session *s, const struct redis_unit *u, const uint8_t *tx,
                      size_t tx_len, struct evbuffer *out, unsigned *lost)
{
    size_t rlen = u->exec_reply ? evbuffer_get_length(u->exec_reply) : 0;
    const uint8_t *reply = rlen ? evbuffer_pullup(u->exec_reply, -1) : NULL;
    size_t off = 0, roff = 0, hlen = 0, queued = 0;
    int64_t count = 0;

    *lost = 0;
    if (reply == NULL || array_header(reply, rlen, &count, &hlen) != 0)
        return REDIS_EFFECT_LOST;
    roff = hlen;
    while (off < tx_len) {
        struct resp_request req;
        const char *err = NULL;
        size_t used = 0;
        if (resp_request_parse(tx + off, tx_len - off, &s->limits, &used, &req, &err) != RESP_OK)
            return REDIS_EFFECT_LOST;
        int last = off + used == tx_len; /* EXEC */
        enum rs_effect what = effect_by_name(&req);
        const uint8_t *elem = reply + roff;
        size_t elen = 0;
        if (off > 0 && !last && !runs_unqueued(&req)) {
            struct resp_reply_info info;
            if ((int64_t)queued >= count ||
                resp_reply_scan(elem, rlen - roff, RESP_DIGEST_NONE, &elen, &info, &err) != RESP_OK)
                return REDIS_EFFECT_LOST;
            roff += elen;
            queued++;
        } else {
            what = RS_EFFECT_NONE;
        }
        enum redis_effect_result r = what == RS_EFFECT_NONE
                                         ? REDIS_EFFECT_VERBATIM
                                         : command_effect(s, what, tx + off, used, elem, elen, out);
        if (r != REDIS_EFFECT_BUILT) { /* nothing of it was written: the command as it is */
            evbuffer_add(out, tx + off, used);
            *lost += r == REDIS_EFFECT_LOST;
        }
        off += used;
    }
    return (int64_t)queued == count && roff == rlen ? REDIS_EFFECT_BUILT : REDIS_EFFECT_LOST;
}
