/*
 * pg_route.c - mode split: who answers a PostgreSQL read (see the "Read
 * routing" comment in pg_session_int.h for how the bytes move).
 *
 * The decision itself is routing/route.c's, pure; this file fills its
 * input from the session (transaction, last write, canary rule), the
 * listener (read_your_writes, max_lag, canary rules) and the process's run-
 * time state (weights, health, lag: proxy/control.c), and keeps one smooth
 * weighted rotation per listener per worker, rebuilt when the weights move.
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "metrics/metric.h"
#include "proxy/control.h"
#include "proxy/pg_session_int.h"
#include "proxy/runtime.h"
#include "proxy/worker.h"
#include "routing/route.h"

/* Route indexes of the listener's two backends (route.h's index space). */
enum { ROUTE_PRIMARY = 0, ROUTE_SHADOW = 1 };

void
pg_route_accept(struct pg_session *s, const struct sockaddr *peer)
{
    struct canary_addr *a = &s->route.client;
    s->route.canary = s->route.canary_hint = -1;
    if (peer->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)peer;
        a->family = 4;
        memcpy(a->bytes, &in->sin_addr, 4);
    } else if (peer->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)peer;
        a->family = 6;
        memcpy(a->bytes, &in6->sin6_addr, 16);
    }
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
    const struct rt_listener *l = s->lis;
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
    return s->lis->conf->mode == CONF_MODE_SPLIT && s->lis->shadow != NULL;
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
    if (s->shadow.state != PGSH_READY && s->shadow.state != PGSH_CONNECTING) {
        pg_route_fallback(s, ROUTE_REASON_UNHEALTHY); /* detached */
        return 0;
    }
    if (s->shadow.nheld > 0 || s->outstanding > 0 || s->route.unit != NULL) {
        pg_route_fallback(s, ROUTE_REASON_UNROUTABLE); /* pipelined behind other units */
        return 0;
    }
    return 1;
}

/* The worker's rotation for this listener, rebuilt when the weights changed. */
static struct wrr *
rotation(struct pg_session *s)
{
    int slot = s->lis->metric_slot;
    if (slot < 0 || slot >= METRIC_MAX_LISTENERS)
        return NULL;
    struct worker_wrr *ww = &s->w->wrr[slot];
    uint32_t version = control_weights_version(slot);
    if (!ww->built || ww->version != version) {
        int weights[2] = {control_weight(slot, s->lis->primary->metric_slot),
                          control_weight(slot, s->lis->shadow->metric_slot)};
        wrr_init(&ww->wrr, weights, 2);
        ww->version = version;
        ww->built = 1;
    }
    return &ww->wrr;
}

void
pg_route_fallback(struct pg_session *s, int reason)
{
    int slot = s->lis->metric_slot;
    if (slot >= 0 && slot < METRIC_MAX_LISTENERS && reason > ROUTE_REASON_NOT_READ &&
        reason < ROUTE_REASON__COUNT)
        metric_add(&s->w->metrics->route_fallbacks[slot][reason], 1);
}

/* pg_route_decide - 1 when the shadow answers the closed candidate u, else 0 (counted). */
int
pg_route_decide(struct pg_session *s, const struct pg_unit *u)
{
    const struct conf_listener *cl = s->lis->conf;
    struct wrr *wrr = rotation(s);
    uint64_t now = pg_now_ns();
    struct route_backend backends[2] = {
        {.healthy = true, .lag_ms = 0},
        {.healthy = control_backend_up(s->lis->shadow->metric_slot) != 0,
         .lag_ms = control_lag_ms(s->lis->shadow->metric_slot)},
    };
    int rule = (u->hint & PGCLASS_HINT_SHADOW) ? s->route.canary_hint : s->route.canary;
    struct route_input in = {
        .kind = u->kind,
        .in_transaction = s->tx_open || s->tx_status != 'I',
        .hint = u->hint,
        .ms_since_write = s->route.last_write_ns == 0 ? UINT64_MAX
                                                      : (now - s->route.last_write_ns) / 1000000,
        .read_your_writes_ms = cl->read_your_writes_ms,
        .max_lag_ms = cl->max_lag_ms,
        .canary = rule >= 0 ? &s->lis->canary[rule] : NULL,
        .primary = ROUTE_PRIMARY,
        .shadow = ROUTE_SHADOW,
        .backends = backends,
        .nbackends = 2,
    };
    if (wrr == NULL)
        return 0;
    struct route_decision d = route_decide(&in, wrr);
    if (d.answer == ROUTE_SHADOW)
        return 1;
    pg_route_fallback(s, (int)d.reason);
    return 0;
}
