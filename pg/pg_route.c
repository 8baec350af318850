/*
 * pg_route.c - mode split: who answers a PostgreSQL read (see the "Read
 * routing" comment in pg_session_int.h for how the bytes move).
 *
 * The decision itself is routing/route.c's, pure; this file fills the
 * session's part of its input (transaction, last write, canary rule) and
 * session_route_read() (engine/session.c, shared with Redis) the rest:
 * the listener's bounds, weights, health and lag.
 */
#include <sys/socket.h>

#include "pg/pg_session_int.h"
#include "control/runtime.h"
#include "routing/route.h"

void
pg_route_accept(struct pg_session *s, const struct sockaddr *peer)
{
    s->route.canary = s->route.canary_hint = -1;
    session_route_client(peer, &s->route.client);
}

/*
 * pg_route_login - match the canary rules once, from the startup packet.
 * A rule that needs the tandem:shadow hint can only match unit by unit, so
 * the match with the hint is kept beside the one without.
 */
void
pg_route_login(struct pg_session *s, const char *user, const char *database,
               const char *application_name)
{
    const struct rt_listener *l = s->base.lis;
    struct canary_session cs = {
        .user = user,
        .database = database ? database : user,
        .application_name = application_name,
        .client = s->route.client,
    };
    if (l->ncanary == 0)
        return;
    s->route.canary = canary_match_session(l->canary, l->ncanary, &cs, false);
    s->route.canary_hint =
        l->canary_uses_hint ? canary_match_session(l->canary, l->ncanary, &cs, true) : s->route.canary;
    s->route.no_mirror =
        s->route.canary >= 0 && l->canary[s->route.canary].action == CANARY_NO_MIRROR;
}

static int
split_mode(const struct pg_session *s)
{
    return s->base.shadow_be != NULL && session_split_mode(s->base.lis);
}

/*
 * pg_route_may_start - can a unit starting with cls be answered by the
 * shadow?  Only from an idle session (nothing unanswered, no transaction,
 * nothing held for the shadow) whose shadow is attached: then the answer
 * order is the client's order whoever answers.  A read that cannot is
 * counted with the reason.
 */
int
pg_route_may_start(struct pg_session *s, const struct pgclass_result *cls)
{
    if (!split_mode(s) || cls == NULL || cls->kind != REQ_KIND_READ)
        return 0;
    if (s->tx_open || s->tx_status != 'I') {
        pg_route_fallback(s, ROUTE_REASON_IN_TRANSACTION);
        return 0;
    }
    /* still logging in is fine: the read waits in the shadow's queue, and
     * a login that fails retries it on the primary */
    if (s->base.mirror.state != MIRROR_READY && s->base.mirror.state != MIRROR_CONNECTING) {
        pg_route_fallback(s, ROUTE_REASON_UNHEALTHY); /* detached */
        return 0;
    }
    if (s->base.mirror.nheld > 0 || s->base.outstanding > 0 || s->base.routed != NULL) {
        pg_route_fallback(s, ROUTE_REASON_UNROUTABLE); /* pipelined behind other units */
        return 0;
    }
    return 1;
}

void
pg_route_fallback(struct pg_session *s, int reason)
{
    session_route_fallback(s->base.w, s->base.lis, reason);
}

/* pg_route_decide - 1 when the shadow answers the closed candidate u, else 0 (counted). */
int
pg_route_decide(struct pg_session *s, const struct pg_unit *u)
{
    int rule = (u->hint & PGCLASS_HINT_SHADOW) ? s->route.canary_hint : s->route.canary;
    struct route_input in = {
        .kind = u->base.kind,
        .in_transaction = s->tx_open || s->tx_status != 'I',
        .hint = u->hint,
        .ms_since_write = s->route.last_write_ns == 0
                              ? UINT64_MAX
                              : (session_now_ns() - s->route.last_write_ns) / 1000000,
    };
    return session_route_read(s->base.w, s->base.lis, s->base.be, s->base.shadow_be,
                              rule >= 0 ? &s->base.lis->canary[rule] : NULL, &in);
}
