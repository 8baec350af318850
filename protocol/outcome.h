/*
 * outcome.h - what comparing one mirrored request unit concluded.
 */
#ifndef TANDEM_OUTCOME_H
#define TANDEM_OUTCOME_H

#define SHADOW_OUTCOMES(X)                                                                     \
    X(MATCH, "match")                   /* same answer */                                     \
    X(MISMATCH, "mismatch")             /* different answer: a finding */                     \
    X(NOISE, "noise")                   /* different, but the statement is not deterministic */ \
    X(SHADOW_ERROR, "shadow_error")     /* the shadow failed (or its connection did) */       \
    X(PRIMARY_ERROR, "primary_error")   /* the primary failed and the shadow did not */       \
    X(SHADOW_TIMEOUT, "shadow_timeout") /* no answer within the shadow timeout */             \
    X(DROPPED, "dropped")               /* never reached the shadow: queue full, detached */

enum shadow_outcome {
#define X(id, name) SHADOW_##id,
    SHADOW_OUTCOMES(X)
#undef X
    SHADOW__COUNT
};

static inline const char *
shadow_outcome_name(enum shadow_outcome o)
{
    static const char *const names[] = {
#define X(id, name) name,
        SHADOW_OUTCOMES(X)
#undef X
    };
    return (unsigned)o < SHADOW__COUNT ? names[o] : "unknown";
}

#endif /* TANDEM_OUTCOME_H */
