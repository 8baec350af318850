/*
 * kind.h - what a request unit is, as the classifiers (PostgreSQL, Redis)
 * decide and as routing, mirroring and metrics use it.
 */
#ifndef TANDEM_KIND_H
#define TANDEM_KIND_H

#define REQ_KINDS(X)                                                                   \
    X(READ, "read")       /* may be answered by any backend */                         \
    X(WRITE, "write")     /* answered by the primary, mirrored */                      \
    X(SESSION, "session") /* changes session state: SET, PREPARE, LISTEN, SELECT db */ \
    X(TX, "tx")           /* BEGIN, COMMIT, MULTI, EXEC ... */                         \
    X(ADMIN, "admin")     /* server administration: never mirrored, never routed */

enum req_kind {
#define X(id, name) REQ_KIND_##id,
    REQ_KINDS(X)
#undef X
    REQ_KIND__COUNT
};

static inline const char *
req_kind_name(enum req_kind kind)
{
    static const char *const names[] = {
#define X(id, name) name,
        REQ_KINDS(X)
#undef X
    };
    return (unsigned)kind < REQ_KIND__COUNT ? names[kind] : "unknown";
}

/* The stronger of two kinds, for multi-statement strings: write > session > tx > admin > read. */
static inline enum req_kind
req_kind_strongest(enum req_kind a, enum req_kind b)
{
    static const int rank[REQ_KIND__COUNT] = {
        [REQ_KIND_READ] = 0, [REQ_KIND_ADMIN] = 1, [REQ_KIND_TX] = 2,
        [REQ_KIND_SESSION] = 3, [REQ_KIND_WRITE] = 4,
    };
    return rank[a] >= rank[b] ? a : b;
}

#endif /* TANDEM_KIND_H */
