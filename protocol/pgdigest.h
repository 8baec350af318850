/*
 * pgdigest.h - the digest of one side's answer to one PostgreSQL request unit.
 *
 * In shadow mode the same request unit (a simple Query up to ReadyForQuery, or
 * an extended-protocol batch up to Sync/ReadyForQuery) goes to the primary and
 * to the shadow.  Each side's backend messages stream past once: the
 * primary's on their way to the client, the shadow's on their way to nowhere.
 * A struct pgdigest folds one side's messages into a fixed-size value as they
 * pass, so no result is ever held whole; at the end of the unit the two
 * digests are finalized and compared.
 *
 *   pgdigest_init(&d, &opts, sample, cap)       once per side per unit
 *   pgdigest_feed(&d, type, iov, iovcnt, len)   every backend message of the unit
 *   pgdigest_final(&d, &result)                 at ReadyForQuery (or timeout)
 *   pgdigest_compare(&primary, &shadow, unstable) -> enum shadow_outcome
 *
 * Pure: no socket, no log, no malloc, no global state; a digest is a plain
 * value the caller places where it likes (8-byte alignment suffices).  Any
 * number of digests may be used on any threads at once.
 *
 * What is compared (DESIGN.md, "Comparison"):
 *
 *   'T' RowDescription     column count; each column's name and type OID.
 *                          Not table OID, attnum, typmod, typlen or format,
 *                          which legitimately differ between servers.  Type
 *                          OIDs >= PGDIGEST_FIRST_USER_OID (enums, domains,
 *                          composites created by DDL) are assigned per server,
 *                          so they all count as one "user type".
 *   'D' DataRow            a hash per row of the values (length and bytes; NULL
 *                          is not the empty string), columns named in
 *                          opts->ignore_columns left out.  A result set's rows
 *                          are combined in order when opts->ordered, else as a
 *                          multiset (order-independent), together with their
 *                          count; the combination is folded into the digest
 *                          where the result set ends (CommandComplete,
 *                          PortalSuspended, ErrorResponse, EmptyQueryResponse).
 *   'd' CopyData           (COPY TO, server to client) like rows: one per row.
 *   'C' CommandComplete    the tag text ("UPDATE 1" differs from "UPDATE 2").
 *   'E' ErrorResponse      the SQLSTATE only (messages change between
 *                          versions); the first error of the unit is kept in
 *                          the result.
 *   'I' '1' '2' '3' 'n' 's' 'c'   (EmptyQuery, ParseComplete, BindComplete,
 *                          CloseComplete, NoData, PortalSuspended, CopyDone)
 *                          the type byte.
 *   't' ParameterDescription  the parameter type OIDs (user types as above).
 *   'G' 'H' 'W' Copy*Response the type, overall format and column formats.
 *   'N' 'S' 'A' 'K' 'Z' 'R' 'v'  ignored: not part of the answer.
 *   any other type byte    the type and the whole body.
 *
 * Ignored columns are found by name in the RowDescription of the result set,
 * so they apply only to rows that follow a 'T' in the same unit.  (A unit that
 * only Binds and Executes a statement described earlier has no 'T': its rows
 * are hashed whole.)  A name matches exactly, bytes as sent; at most
 * PGDIGEST_MAX_IGNORED columns of one result set are left out.
 *
 * Never trusts its input: a body that does not parse as its type says (a
 * column length past the end or negative other than -1, a DataRow whose
 * column count differs from its RowDescription, a string without its NUL,
 * trailing bytes, an empty-bodied type with a body) marks the digest
 * malformed; later messages are then ignored.  Nothing is read outside the
 * iovecs, whatever the bytes.
 */
#ifndef TANDEM_PGDIGEST_H
#define TANDEM_PGDIGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "protocol/outcome.h"

#define PGDIGEST_FIRST_USER_OID 16384u /* FirstNormalObjectId */
#define PGDIGEST_MAX_IGNORED 32        /* ignored column positions per result set */
#define PGDIGEST_TAG_MAX 64            /* pgdigest_result.tag, NUL included */
#define PGDIGEST_BLOCK 240             /* internal: hashing block, XXH3's mid-size limit */

struct pgdigest_opts {
    /* The statement has a top-level ORDER BY (pgclass_result.has_order_by):
     * rows are compared in order, else as a multiset. */
    bool ordered;
    /* Column names (as in RowDescription) whose values are left out of row
     * hashing, e.g. "updated_at".  Borrowed: the array and its strings must
     * outlive the digest.  NULL entries are skipped. */
    const char *const *ignore_columns;
    size_t nignore;
};

/* Internal: a hash of a byte string fed in pieces, equal for every split. */
struct pgdigest_hasher {
    uint64_t h;
    uint64_t total;
    size_t fill;
    uint8_t buf[PGDIGEST_BLOCK];
};

/*
 * One side of one unit.  A fixed-size value (504 bytes on LP64); every field is
 * private to pgdigest.c.  It may be copied between calls.
 */
struct pgdigest {
    struct pgdigest_opts opts;
    char *sample;                  /* caller's, or NULL */
    size_t sample_cap;
    size_t sample_len;
    bool sample_rows_full;         /* no more row content fits */
    bool sample_full;              /* nothing more fits */
    bool malformed;
    bool error;
    char sqlstate[6];
    char tag[PGDIGEST_TAG_MAX];
    uint64_t rows;                 /* DataRow + CopyData messages, whole unit */
    /* The result set in progress. */
    uint64_t set_rows;
    uint64_t set_sum;              /* multiset: sum of row hashes */
    uint64_t set_xor;              /* multiset: xor of remixed row hashes */
    uint64_t set_chain;            /* ordered: chained row hashes */
    int32_t set_ncols;             /* from 'T', -1 when none was seen */
    uint16_t nign;                 /* ignored positions, ascending */
    uint16_t ign[PGDIGEST_MAX_IGNORED];
    struct pgdigest_hasher unit;   /* everything but the rows */
};

struct pgdigest_result {
    uint64_t hash;                 /* the whole answer, as described above */
    uint64_t rows;                 /* DataRow + CopyData messages */
    bool error;                    /* an ErrorResponse was seen */
    char sqlstate[6];              /* the first error's SQLSTATE, "" if none or absent */
    char tag[PGDIGEST_TAG_MAX];    /* the last command tag, "" if none: valid UTF-8,
                                    * cut to fit on a character boundary, control
                                    * characters and stray bytes shown as '?' */
    bool malformed;                /* a message did not parse: hash means nothing */
};

/*
 * pgdigest_init - start digesting one side of one unit.
 *
 * opts may be NULL (unordered, no ignored columns); it is copied, but the
 * ignore_columns array it points to is borrowed.  sample/sample_cap is a
 * caller buffer (NULL or 0: no sample) that receives, always NUL-terminated,
 * a bounded human-readable prefix of this side's answer for the shadow-diff
 * report, items in arrival order separated by " | ":
 *
 *   (id, name) | 1, alice | 2, NULL | SELECT 2
 *   ERROR 23505: duplicate key value violates unique constraint "t_pkey"
 *
 * Column names in parentheses, row values as text (each cut to 48 bytes,
 * NULL as NULL, control characters and bytes that are not UTF-8 escaped as
 * \n \t \r \xNN), command tags, errors as "SEVERITY sqlstate: message" (the
 * message cut to 159 bytes), "COPY OUT"/"COPY IN"/"COPY BOTH" and each CopyData
 * row as a value, "EMPTY" for an empty query, "SUSPENDED" for a suspended
 * portal.  Rows stop early enough to leave room for a tag that follows;
 * whatever does not fit is cut on a UTF-8 character boundary and marked
 * "...".  The buffer must stay valid until the last pgdigest_feed.
 */
void pgdigest_init(struct pgdigest *d, const struct pgdigest_opts *opts, char *sample,
                   size_t sample_cap);

/*
 * pgdigest_feed - digest one whole backend message.
 *
 * type is the message type byte; the body (without type and length) is the
 * concatenation of iov[0 .. iovcnt), split anywhere (empty pieces allowed),
 * and body_len is its length.  Every split of the same bytes gives the same
 * digest.  If the iovec lengths do not add up to body_len the digest is
 * marked malformed.  Only reads the iovecs; they need not outlive the call.
 *
 * Cost: for a DataRow in one piece, with no ignored column in its result
 * set, one pass over the column lengths and one XXH3 over the body; pieces
 * or ignored columns add a copy through a 240-byte block.  While the sample
 * is not full, rows are also rendered into it.
 */
void pgdigest_feed(struct pgdigest *d, uint8_t type, const struct iovec *iov, int iovcnt,
                   size_t body_len);

/*
 * pgdigest_counts - false for a message type the digest ignores whatever
 * its body ('N' 'S' 'A' 'K' 'Z' 'R' 'v'): a caller may skip feeding it.
 */
static inline bool
pgdigest_counts(uint8_t type)
{
    return type != 'N' && type != 'S' && type != 'A' && type != 'K' && type != 'Z' &&
           type != 'R' && type != 'v';
}

/*
 * pgdigest_final - the result so far: folds the result set in progress (rows
 * not yet closed by a CommandComplete) into a copy, so d is not changed and
 * may be fed further or finalized again.
 */
void pgdigest_final(const struct pgdigest *d, struct pgdigest_result *out);

/*
 * pgdigest_compare - the outcome of comparing the primary's answer with the
 * shadow's.  unstable (pgclass_result.unstable) turns a difference into noise.
 *
 *   primary malformed                     SHADOW_PRIMARY_ERROR
 *   shadow malformed                      SHADOW_SHADOW_ERROR
 *   both errors, same SQLSTATE            SHADOW_MATCH
 *   both errors, different SQLSTATE       unstable ? SHADOW_NOISE : SHADOW_MISMATCH
 *   primary error only                    SHADOW_PRIMARY_ERROR
 *   shadow error only                     SHADOW_SHADOW_ERROR
 *   equal hashes                          SHADOW_MATCH
 *   different hashes                      unstable ? SHADOW_NOISE : SHADOW_MISMATCH
 *
 * (Rows digested before an error do not matter when both sides failed alike.)
 */
enum shadow_outcome pgdigest_compare(const struct pgdigest_result *primary,
                                     const struct pgdigest_result *shadow, bool unstable);

/*
 * pgdigest_judge - pgdigest_compare with the reason a difference is noise.
 *
 * reason: the statement's (pgclass_result.noise_reason); SHADOW_NOISE_NONE
 * makes a difference a MISMATCH.  local_input (pgclass_result.local_input):
 * a server file or an identifier of the primary's goes in, so the shadow may
 * fail where the primary did not; such a failure is NOISE server_local when
 * its SQLSTATE is one that input causes:
 *   class 58   (58P01 undefined_file, 58030 io_error ...: the file is not there)
 *   42704      undefined_object (an OID naming nothing there: a large object)
 *   22023      invalid_parameter_value (a transaction id "in the future")
 *   55000      object_not_in_prerequisite_state (WAL functions on a standby)
 * Any other shadow failure (a missing table, a permission, a constraint)
 * stays SHADOW_ERROR.  *why gets the reason of a NOISE, SHADOW_NOISE_NONE
 * for any other outcome.
 */
enum shadow_outcome pgdigest_judge(const struct pgdigest_result *primary,
                                   const struct pgdigest_result *shadow,
                                   enum shadow_noise_reason reason, bool local_input,
                                   enum shadow_noise_reason *why);

#endif /* TANDEM_PGDIGEST_H */
