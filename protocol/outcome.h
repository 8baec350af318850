/*
 * outcome.h - what comparing one mirrored request unit concluded.
 */
#ifndef TANDEM_OUTCOME_H
#define TANDEM_OUTCOME_H

#define SHADOW_OUTCOMES(X)                                                                     \
    X(MATCH, "match")                   /* same answer */                                     \
    X(MISMATCH, "mismatch")             /* different answer: a finding */                     \
    X(NOISE, "noise")                   /* different, and not the shadow's fault: a reason says why */ \
    X(SHADOW_ERROR, "shadow_error")     /* the shadow failed (or its connection did) */       \
    X(PRIMARY_ERROR, "primary_error")   /* the primary failed and the shadow did not */       \
    X(SHADOW_TIMEOUT, "shadow_timeout") /* no answer within the shadow timeout */             \
    X(DROPPED, "dropped")               /* never reached the shadow: queue full, detached */ \
    X(TRANSIENT, "transient")           /* differed, agreed when run again: concurrency */ \
    X(SKIPPED_LAG, "skipped_lag")       /* a replicated shadow did not catch up in time */

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

/*
 * Why a difference is noise rather than a finding.  Ordered by precedence:
 * a unit with several reasons is counted under the highest one (the most
 * specific explanation; the configuration's word above all).
 *
 *   volatile      the value is not a function of the data: clocks, random(),
 *                 sequences, RANDOMKEY, SPOP, TIME, TABLESAMPLE
 *   physical      the server's physical state: sizes, statistics, plans,
 *                 maintenance functions (brin_summarize_*, ...), row choice
 *                 under LIMIT without ORDER BY, OBJECT ENCODING, MEMORY
 *                 USAGE, SCAN cursors
 *   server_local  per-server identity: OIDs and reg* values, system columns,
 *                 transaction ids, LSNs, pids, settings, the catalogs,
 *                 files on the server's host, CLIENT ID, INFO
 *   ignored       the configuration says so (compare { ignore_fingerprints })
 *   replication   a shadow fed by replication answered after the primary had
 *                 written again: it may hold newer data than the primary's
 *                 answer saw (shadow_source replication)
 */
#define SHADOW_NOISE_REASONS(X)                                                                \
    X(VOLATILE, "volatile")                                                                    \
    X(PHYSICAL, "physical")                                                                    \
    X(SERVER_LOCAL, "server_local")                                                            \
    X(IGNORED, "ignored")                                                                      \
    X(REPLICATION, "replication")

enum shadow_noise_reason {
    SHADOW_NOISE_NONE = 0, /* not noise: a difference is a mismatch */
#define X(id, name) SHADOW_NOISE_##id,
    SHADOW_NOISE_REASONS(X)
#undef X
    SHADOW_NOISE__COUNT
};

/* "volatile", "server_local" ...; "none" for SHADOW_NOISE_NONE and out of range. */
static inline const char *
shadow_noise_reason_name(enum shadow_noise_reason r)
{
    static const char *const names[] = {
        "none",
#define X(id, name) name,
        SHADOW_NOISE_REASONS(X)
#undef X
    };
    return (unsigned)r < SHADOW_NOISE__COUNT ? names[r] : "none";
}

/* The reason that wins when a unit has both a and b. */
static inline enum shadow_noise_reason
shadow_noise_strongest(enum shadow_noise_reason a, enum shadow_noise_reason b)
{
    return a > b ? a : b;
}

#endif /* TANDEM_OUTCOME_H */
