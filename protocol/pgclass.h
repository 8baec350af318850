/*
 * pgclass.h - classify PostgreSQL statement text for routing, mirroring and
 * comparison.
 *
 * One call classifies one Query string (possibly several statements) with
 * libpg_query, the real PostgreSQL 15 parser, and answers a small value
 * (struct pgclass_result) that owns nothing: copy it, cache it, compare it.
 *
 *   pgclass_classify()  hot path: kind and flags.  Parses once; no
 *                       fingerprint, no normalization.
 *   pgclass_describe()  report path: fingerprint and normalized text, into
 *                       caller storage.  Parses again; call it only for the
 *                       few statements that reach the shadow-diff report.
 *
 * Threads: called on the worker threads.  libpg_query keeps its memory
 * contexts per thread, so both calls are safe on any number of threads at
 * once with no lock; memory a call allocates is freed before it returns
 * (libpg_query's top-level context of a thread is released when the thread
 * exits).  Neither call logs, touches a socket or keeps state between
 * calls.  Stack: up to ~200 KiB for the most deeply nested text accepted.
 *
 * Cost (-O2, one core, best of runs): 2.4 us for "SELECT 1", 8 us for a
 * 90-byte SELECT, 37 us for a 300-byte three-way join; libpg_query's parse
 * is 60-95% of it.  A pgcache hit costs 15-55 ns (hash and compare the text).
 *
 * Never trusts its input: any byte string, of any length, gets an answer.
 * Text that does not parse, is longer than opts->max_len, or nests deeper
 * than the walk goes (~300 levels of expression) is a WRITE with
 * parse_error set: answered by the primary, which then reports any error.
 *
 * Kinds (enum req_kind, protocol/kind.h).  Multi-statement strings take
 * req_kind_strongest() over their statements.
 *
 *   READ     SELECT / TABLE / VALUES with no locking clause, no INTO, no
 *            data-modifying CTE and no write function anywhere in the tree;
 *            SHOW; EXPLAIN (without ANALYZE, whatever it explains; with
 *            ANALYZE, as the statement it runs); COPY ... TO STDOUT.
 *   WRITE    INSERT, UPDATE, DELETE, MERGE, every DDL statement, COPY ...
 *            FROM, CALL, DO, TRUNCATE, LOCK, SELECT ... FOR UPDATE/SHARE
 *            (also in a subquery), SELECT INTO, any statement calling a write
 *            function (nextval, setval, pg_advisory_*, pg_try_advisory_*,
 *            large-object writers, and opts->write_fns).  Also EXECUTE of
 *            an SQL-level prepared statement: its text is not in the string,
 *            so it is treated as a write; a session that recorded the PREPARE
 *            may do better.  Every statement type not named in this list is
 *            a write too: new PostgreSQL syntax errs on the safe side.
 *   SESSION  SET, RESET, SET SESSION CHARACTERISTICS, DISCARD, PREPARE,
 *            DEALLOCATE, LISTEN, UNLISTEN, NOTIFY, LOAD, and cursors:
 *            DECLARE, FETCH, MOVE, CLOSE.  Cursors are session state that
 *            lives in one backend, so they must follow the session (answered
 *            by the primary, mirrored in order) and never be routed one by
 *            one; DECLARE of a writing query is a write.  Calls to
 *            set_config() and pg_notify() make a statement at least SESSION.
 *   TX       BEGIN, START TRANSACTION, COMMIT, ROLLBACK, SAVEPOINT, RELEASE,
 *            ROLLBACK TO, PREPARE TRANSACTION, COMMIT/ROLLBACK PREPARED,
 *            SET TRANSACTION.
 *   ADMIN    one server's own administration, never mirrored: CHECKPOINT,
 *            VACUUM, ANALYZE, CLUSTER, REINDEX, ALTER SYSTEM, COPY ... TO a
 *            server file or program, and calls to server-control functions
 *            (pg_terminate_backend, pg_cancel_backend, pg_reload_conf,
 *            pg_switch_wal, pg_promote, replication-slot and backup control,
 *            pg_stat_reset*).  Such calls inside a string that also writes
 *            make it a WRITE, which is mirrored: mixing the two is the
 *            client's problem, tandem does not split strings.
 */
#ifndef TANDEM_PGCLASS_H
#define TANDEM_PGCLASS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "protocol/kind.h"
#include "protocol/outcome.h"

/* Comment hints, as bits in pgclass_result.hint: "tandem:primary",
 * "tandem:shadow", "tandem:noshadow" (lower case) inside a block or line
 * comment anywhere in the text; text inside string literals, quoted
 * identifiers or dollar quotes does not count.  Read from the text even when
 * it does not parse.  SHADOW is dropped when PRIMARY or NOSHADOW is also
 * present, so callers never see a contradiction; PRIMARY|NOSHADOW is
 * meaningful. */
enum pgclass_hint {
    PGCLASS_HINT_PRIMARY = 1 << 0,  /* answer from the primary, never route */
    PGCLASS_HINT_SHADOW = 1 << 1,   /* a read: answer from the shadow if the mode allows */
    PGCLASS_HINT_NOSHADOW = 1 << 2, /* do not mirror this unit to the shadow */
};

/* The answer.  A plain value: owns no memory, safe to copy and cache. */
struct pgclass_result {
    enum req_kind kind;
    uint16_t nstatements;   /* statements parsed (saturates); 0 for empty text or parse error */
    uint8_t hint;           /* PGCLASS_HINT_* bits */
    bool parse_error;       /* did not parse, or too long to try: kind is WRITE */
    bool too_long;          /* longer than max_len: not parsed at all */
    bool locking;           /* FOR UPDATE/SHARE anywhere, LOCK, functions taking advisory locks */
    bool ddl;               /* a schema change: a WRITE statement that is not INSERT,
                             * UPDATE, DELETE, MERGE, TRUNCATE, COPY, CALL or DO */
    bool no_mirror;         /* every statement is NOTIFY/LISTEN/UNLISTEN/pg_notify():
                             * nothing the shadow needs to see (kind is SESSION) */
    /*
     * has_order_by: the rows come in an order the statement defines, so
     * compare them in order; otherwise compare them as a multiset.  True
     * when the final result of every row-returning statement is ordered: a
     * top-level ORDER BY (a subquery's does not count), EXPLAIN output, SHOW.
     * False when no statement returns rows.
     */
    bool has_order_by;
    /*
     * volatile_fn: calls a function whose value is not a function of the
     * data: now() and every other clock, CURRENT_TIMESTAMP and the other
     * SQL value functions (CURRENT_USER...), random(), gen_random_uuid(),
     * uuid_generate_*, sequences, txid_current(), pg_backend_pid(),
     * inet_server_*(), version(), current_setting(), 'now'::timestamp...
     */
    bool volatile_fn;
    /*
     * unstable: the answer may differ between two correct backends, so a
     * mismatch is noise, not a finding.  volatile_fn, plus EXPLAIN (plans
     * and costs), SHOW (server settings), LIMIT/OFFSET without ORDER BY on
     * a FROM clause or set operation, TABLESAMPLE, and reads of the system
     * catalogs (pg_* relations, pg_catalog and information_schema: oids and
     * statistics are per server) -- counted only in statements that return
     * rows: a command tag such as "UPDATE 3" does not depend on now().
     * Comparison should use this flag.  FETCH cannot know what its cursor's
     * query calls: it is never unstable.  Also set (with noise_reason) for
     * the server-local and physical values below, and for a COPY to or from
     * a server file or program, whose row count is the file's.
     */
    bool unstable;
    /*
     * noise_reason: why a difference is noise (enum shadow_noise_reason,
     * protocol/outcome.h); SHADOW_NOISE_NONE exactly when unstable is
     * false.  The strongest over the statements that count (see unstable):
     *   volatile      volatile_fn's clocks, random, sequences; TABLESAMPLE
     *   physical      sizes and statistics (pg_relation_size,
     *                 pg_database_size, pg_stat_* functions and views),
     *                 maintenance (brin_summarize_*, gin_clean_pending_list),
     *                 EXPLAIN, LIMIT/OFFSET without ORDER BY
     *   server_local  OIDs and reg* values the client passes (the rule is in
     *                 pgclass.c, above fn_exact), casts to oid/xid/tid/
     *                 pg_lsn, system columns (ctid, xmin, xmax, cmin, cmax,
     *                 tableoid but as ::regclass), txids and snapshots,
     *                 LSNs, pids, settings (SHOW, current_setting), the
     *                 catalogs, server files (COPY ... FROM/TO '<file>',
     *                 pg_read_file, lo_import, pg_ls_dir)
     */
    uint8_t noise_reason;
    /*
     * local_input: something only the primary's server has goes in: a
     * server file, or an identifier (OID, xid, LSN) the client passes.  The
     * shadow failing such a statement with a file error, an unknown object
     * or a transaction id "in the future" is then server_local noise, not a
     * shadow error (pgdigest_judge).  Set whether or not rows come back.
     */
    bool local_input;
};

/*
 * Options, built once from the configuration and shared read-only by all
 * threads.  NULL means all defaults.  Cached results depend on them: clear
 * the caches (pgcache_clear) when they change.
 */
struct pgclass_opts {
    /* Extra write functions, as the parser reports names: lower case unless
     * they were quoted.  "name" matches in any schema, "schema.name" only
     * there.  Borrowed: must outlive every call that uses these options. */
    const char *const *write_fns;
    size_t nwrite_fns;
    size_t max_len;         /* longer text is not parsed; 0: PGCLASS_DEFAULT_MAX_LEN */
};

#define PGCLASS_DEFAULT_MAX_LEN (1u << 20)

/*
 * pgclass_classify - classify the NUL-terminated text sql into *out.
 *
 * sql may be anything; it is only read.  opts may be NULL.  Always fills
 * *out and never fails: an allocation failure inside libpg_query, or a tree
 * too deep to walk, is reported like a parse error.
 */
void pgclass_classify(const char *sql, const struct pgclass_opts *opts,
                      struct pgclass_result *out);

/* Bytes of normalized text kept by pgclass_describe, NUL included. */
#define PGCLASS_NORMALIZED_MAX 1024

/* What the shadow-diff report shows of a statement.  Fixed size, owns
 * nothing. */
struct pgclass_desc {
    uint64_t fingerprint;   /* pg_query_fingerprint, or XXH3 of the text when it does not parse */
    char fingerprint_hex[17];   /* 16 lower-case hex digits */
    bool fingerprint_fallback;  /* the text did not parse: fingerprint is a hash of the text */
    bool normalized_truncated;  /* normalized was cut (on a UTF-8 boundary) */
    /* pg_query_normalize's text (literals replaced by $n), or the raw text
     * when it cannot be normalized; NUL-terminated, valid UTF-8 (a byte
     * that is not becomes '?'), so it can go into JSON as it is. */
    char normalized[PGCLASS_NORMALIZED_MAX];
};

/*
 * pgclass_describe - fingerprint and normalize the NUL-terminated text sql.
 *
 * Costs a parse and a scan (~17 us for a 90-byte SELECT): meant for the
 * statements that reach the report (mismatches, samples), not for every
 * request.  Always fills *out.  Returns 0, or -1 when
 * the text does not parse or is longer than PGCLASS_DEFAULT_MAX_LEN (then
 * fingerprint_fallback is set and normalized holds the raw text, cut).
 */
int pgclass_describe(const char *sql, struct pgclass_desc *out);

#endif /* TANDEM_PGCLASS_H */
