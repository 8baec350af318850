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
 * and counted, never silently.  Inside MULTI or a script the commands go
 * as they are (README, Known limits).
 */
#include <event2/buffer.h>
#include <stdio.h>
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

enum redis_effect_result
redis_effect_build(const struct redis_session *s, const struct redis_unit *u,
                   const uint8_t *req_bytes, size_t req_len, struct evbuffer *out)
{
    const struct redis_compare *c = u->cmp;
    struct resp_arg got[EFFECT_MEMBERS_MAX];
    struct resp_request req;
    const char *err = NULL;
    size_t used = 0, n = 0;

    if (c == NULL || !u->base.primary_done)
        return REDIS_EFFECT_LOST;
    if (c->pinfo.type == '-' || c->pinfo.type == '!')
        return REDIS_EFFECT_VERBATIM; /* refused: it changes nothing on either side */
    if (c->pinfo.size > c->plen ||
        resp_reply_strings(c->psample, c->plen, got, EFFECT_MEMBERS_MAX, &n) != 0)
        return REDIS_EFFECT_LOST;
    if (resp_request_parse(req_bytes, req_len, &s->limits, &used, &req, &err) != RESP_OK ||
        used != req_len)
        return REDIS_EFFECT_LOST;
    switch ((enum rs_effect)u->effect) {
    case RS_EFFECT_XADD:
        if (n == 0) /* NOMKSTREAM and no stream: nothing was added on the primary */
            return REDIS_EFFECT_VERBATIM;
        return xadd_effect(req_bytes, &req, &got[0], out);
    case RS_EFFECT_SPOP:
        return spop_effect(&req, got, n, out) == 0 ? REDIS_EFFECT_BUILT : REDIS_EFFECT_VERBATIM;
    case RS_EFFECT_NONE:
        break;
    }
    return REDIS_EFFECT_VERBATIM;
}
