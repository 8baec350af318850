/*
 * route.h - which backend answers one request unit, in mode split.
 *
 * Pure: the proxy fills a struct route_input per unit from the session, the
 * listener's configuration and the backends' health and lag, and gets back
 * a struct route_decision.  Nothing here knows of sockets, clocks or conf/.
 *
 * Backends are named by an index in [0, nbackends), nbackends at most
 * ROUTE_MAX_BACKENDS; the same index space is used by input->backends[],
 * primary, shadow, canary_rule.backend and the struct wrr's peers (peer i is
 * backend i; a backend not in the listener's reads { } gets weight 0).
 *
 * Precedence, first that applies wins (reason is what the metric counts):
 *
 *   1. not a read (write, session, tx, admin)      primary   NOT_READ
 *   2. read inside a transaction                   primary   IN_TRANSACTION
 *   3. session wrote < read_your_writes_ms ago     primary   READ_YOUR_WRITES
 *   4. hint tandem:primary                         primary   HINT_PRIMARY
 *   5. hint tandem:noshadow (the shadow may not    primary   HINT_NOSHADOW
 *      be able to run it: it is kept off it)
 *   6. canary PRIMARY                              primary   CANARY_PRIMARY
 *   7. canary ROUTE b: b if usable                 b         NONE
 *                      else                        primary   UNHEALTHY|LAGGING
 *   8. hint tandem:shadow and a shadow: if usable  shadow    NONE
 *                      else                        primary   UNHEALTHY|LAGGING
 *   9. smooth WRR over the weights (canary NO_MIRROR routes like no canary):
 *        nothing has a weight                      primary   NO_WEIGHT
 *        the pick is usable                        pick      NONE
 *        the pick is not                           primary   UNHEALTHY|LAGGING
 *
 * Two reasons come from the proxy, not from route_decide: RETRIED (the
 * chosen backend failed before answering and the primary answered instead)
 * and UNROUTABLE (the unit could not be moved whole: a named Parse, a
 * Close, a Flush waiting for answers, or more than fits the route buffer).
 *
 * "Usable": healthy and lag_ms <= max_lag_ms.  The primary is always usable:
 * it is where every fallback goes, and its lag is 0 by definition.
 *
 * Step 9 picks among all weighted backends and then falls back to the
 * primary when the pick is not usable, rather than re-picking among the
 * usable ones: a sick backend's share goes to the primary (DESIGN.md: "they
 * fall back to the primary"), never piles onto another non-primary backend,
 * every such read is counted once with its reason, and the rotation keeps
 * its shape so a recovered backend gets its share back smoothly.
 *
 * Comparison: for a read answered by a backend other than the primary,
 * compare is the primary (the caller applies the read sample rate).  For a
 * read answered by the primary, compare is the shadow (-1 when there is
 * none, or with the noshadow hint or a canary NO_MIRROR).  Units that are
 * not reads get compare -1: mirroring them is the mirror path's business.
 */
#ifndef TANDEM_ROUTE_H
#define TANDEM_ROUTE_H

#include <stdbool.h>
#include <stdint.h>

#include "protocol/kind.h"
#include "routing/canary.h"
#include "routing/wrr.h"

#define ROUTE_MAX_BACKENDS WRR_MAX_PEERS

/* Hint bits: the same values as protocol/pgclass.h PGCLASS_HINT_* (tested). */
#define ROUTE_HINT_PRIMARY (1u << 0)
#define ROUTE_HINT_SHADOW (1u << 1)
#define ROUTE_HINT_NOSHADOW (1u << 2)

/* Why a read was answered by the primary; names are the metric's label values. */
#define ROUTE_REASONS(X)                             \
    X(NONE, "none")                                  \
    X(NOT_READ, "not_read")                          \
    X(IN_TRANSACTION, "in_transaction")              \
    X(READ_YOUR_WRITES, "read_your_writes")          \
    X(HINT_PRIMARY, "hint_primary")                  \
    X(HINT_NOSHADOW, "hint_noshadow")                \
    X(CANARY_PRIMARY, "canary_primary")              \
    X(UNHEALTHY, "unhealthy")                        \
    X(LAGGING, "lagging")                            \
    X(NO_WEIGHT, "no_weight")                        \
    X(RETRIED, "retried")                            \
    X(UNROUTABLE, "unroutable")

enum route_reason {
#define X(id, name) ROUTE_REASON_##id,
    ROUTE_REASONS(X)
#undef X
    ROUTE_REASON__COUNT
};

/* route_reason_name - "in_transaction", ...; "unknown" out of range. */
const char *route_reason_name(enum route_reason reason);

struct route_backend {
    bool healthy;   /* the health probe's verdict */
    uint64_t lag_ms; /* how far its mirror queue is behind; 0 for the primary */
};

struct route_input {
    enum req_kind kind;
    bool in_transaction;
    unsigned hint;                      /* ROUTE_HINT_* bits */
    uint64_t ms_since_write;            /* UINT64_MAX: the session never wrote */
    uint32_t read_your_writes_ms;       /* 0: off */
    uint32_t max_lag_ms;                /* a backend lagging more is not usable */
    const struct canary_rule *canary;   /* the matched rule, NULL for none */
    int primary;                        /* always answers when nothing else may */
    int shadow;                         /* for the shadow hint and compare; -1: none */
    const struct route_backend *backends; /* [nbackends] */
    int nbackends;
};

struct route_decision {
    int answer;              /* the backend that answers the unit */
    int compare;             /* the backend that gets the comparison mirror, -1 none */
    enum route_reason reason; /* NONE unless a read went to the primary for a reason */
};

/*
 * route_decide - the decision for one unit, by the precedence above.
 * wrr is the calling worker's own rotation for this listener (step 9
 * advances it; nothing else touches it); weights change by wrr_init.
 * in->primary must be a valid index; any other out-of-range index (a canary
 * backend, the shadow) is treated as an unhealthy backend.  Cost: ~25 ns on
 * the WRR path (measured, -O2, three backends).
 */
struct route_decision route_decide(const struct route_input *in, struct wrr *wrr);

#endif /* TANDEM_ROUTE_H */
