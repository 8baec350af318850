/*
 * route.c - the read-routing decision (see route.h for the precedence).
 */
#include "routing/route.h"

const char *
route_reason_name(enum route_reason reason)
{
    static const char *const names[] = {
#define X(id, name) name,
        ROUTE_REASONS(X)
#undef X
    };
    return (unsigned)reason < ROUTE_REASON__COUNT ? names[reason] : "unknown";
}

/* usable - NONE when backend b may answer a routed read, else why not. */
static enum route_reason
usable(const struct route_input *in, int b)
{
    if (b == in->primary)
        return ROUTE_REASON_NONE;
    if (b < 0 || b >= in->nbackends || !in->backends[b].healthy)
        return ROUTE_REASON_UNHEALTHY;
    if (in->backends[b].lag_ms > in->max_lag_ms)
        return ROUTE_REASON_LAGGING;
    return ROUTE_REASON_NONE;
}

/* to - answer from b if usable, else from the primary with the reason. */
static struct route_decision
to(const struct route_input *in, int b)
{
    enum route_reason why = usable(in, b);
    struct route_decision d = {.answer = in->primary, .compare = -1, .reason = why};

    if (why == ROUTE_REASON_NONE)
        d.answer = b;
    return d;
}

static struct route_decision
primary(const struct route_input *in, enum route_reason why)
{
    return (struct route_decision){.answer = in->primary, .compare = -1, .reason = why};
}

static struct route_decision
pick(const struct route_input *in, struct wrr *wrr)
{
    const struct canary_rule *c = in->canary;

    if (in->kind != REQ_KIND_READ)
        return primary(in, ROUTE_REASON_NOT_READ);
    if (in->in_transaction)
        return primary(in, ROUTE_REASON_IN_TRANSACTION);
    if (in->read_your_writes_ms > 0 && in->ms_since_write < in->read_your_writes_ms)
        return primary(in, ROUTE_REASON_READ_YOUR_WRITES);
    if (in->hint & ROUTE_HINT_PRIMARY)
        return primary(in, ROUTE_REASON_HINT_PRIMARY);
    if (in->hint & ROUTE_HINT_NOSHADOW)
        return primary(in, ROUTE_REASON_HINT_NOSHADOW);
    if (c && c->action == CANARY_PRIMARY)
        return primary(in, ROUTE_REASON_CANARY_PRIMARY);
    if (c && c->action == CANARY_ROUTE)
        return to(in, c->backend);
    if ((in->hint & ROUTE_HINT_SHADOW) && in->shadow >= 0)
        return to(in, in->shadow);

    unsigned all = in->nbackends >= 32 ? ~0u : (1u << in->nbackends) - 1;
    int b = wrr_pick(wrr, all);
    if (b < 0)
        return primary(in, ROUTE_REASON_NO_WEIGHT);
    return to(in, b);
}

struct route_decision
route_decide(const struct route_input *in, struct wrr *wrr)
{
    struct route_decision d = pick(in, wrr);
    bool no_mirror = (in->hint & ROUTE_HINT_NOSHADOW) ||
                     (in->canary && in->canary->action == CANARY_NO_MIRROR);

    if (in->kind != REQ_KIND_READ)
        d.compare = -1;
    else if (d.answer != in->primary)
        d.compare = in->primary;
    else if (in->shadow >= 0 && in->shadow != in->primary && !no_mirror)
        d.compare = in->shadow;
    return d;
}
