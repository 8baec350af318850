/*
 * pgstmt.h - a session's prepared statements (extended protocol), by name.
 *
 * The client prepares a statement once (Parse) and uses it many times
 * (Bind/Execute).  tandem keeps, per statement: its classification, so a
 * later Bind can be routed and mirrored by kind without parsing again; and
 * the Parse message itself, so the statement can be made to exist on a
 * backend that has not seen it (a shadow that joined later, or skipped the
 * unit that prepared it).  `epoch` records on which shadow connection the
 * statement exists: each new shadow connection has a new epoch, so a
 * reconnect makes every statement "absent" without touching the table.
 *
 * The unnamed statement ("") is kept like any other: it is replaced by each
 * unnamed Parse.  Pure: malloc only, no I/O, single-threaded (one session).
 */
#ifndef TANDEM_PGSTMT_H
#define TANDEM_PGSTMT_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/pgclass.h"

#define PGSTMT_MAX 4096        /* statements per session; more are not tracked */
#define PGSTMT_NAME_MAX 256    /* longer names are not tracked */

struct pgstmt {
    char *name;
    struct pgclass_result cls;
    uint8_t *parse;            /* the whole Parse message, type byte included */
    size_t parse_len;
    uint32_t epoch;            /* the shadow connection it exists on; 0 = none */
};

struct pgstmt_table;

struct pgstmt_table *pgstmt_table_new(void);
void pgstmt_table_free(struct pgstmt_table *t);

/*
 * pgstmt_put - record (or replace) statement NAME with its Parse message
 * (copied; parse_len 0 keeps the classification only, allocating nothing
 * when the name is already there) and classification.  Returns the entry, or NULL when the table
 * is full, the name too long, or memory ran out (the caller then treats
 * later uses of the name as unknown: a write answered by the primary).
 */
struct pgstmt *pgstmt_put(struct pgstmt_table *t, const char *name, size_t namelen,
                          const uint8_t *parse, size_t parse_len,
                          const struct pgclass_result *cls);

/* pgstmt_get - the entry for NAME, or NULL. */
struct pgstmt *pgstmt_get(struct pgstmt_table *t, const char *name, size_t namelen);

/* pgstmt_remove - forget NAME (Close of a statement, DEALLOCATE). */
void pgstmt_remove(struct pgstmt_table *t, const char *name, size_t namelen);

/* pgstmt_clear - forget every statement (DISCARD ALL, DEALLOCATE ALL). */
void pgstmt_clear(struct pgstmt_table *t);

size_t pgstmt_count(const struct pgstmt_table *t);

/*
 * pgstmt_set_parse_budget - keep at most bytes of Parse messages, all
 * statements together (default: no bound).  A Parse that would pass it is
 * recorded with its classification alone (parse NULL), as when nothing is
 * to be kept: such a statement cannot be re-created on a shadow that lacks
 * it.  pgstmt_parse_bytes - what is kept now.
 */
void pgstmt_set_parse_budget(struct pgstmt_table *t, size_t bytes);
size_t pgstmt_parse_bytes(const struct pgstmt_table *t);

/* pgstmt_foreach - call fn on every statement (fn must not add or remove any). */
void pgstmt_foreach(struct pgstmt_table *t, void (*fn)(struct pgstmt *st, void *arg), void *arg);

/*
 * Message helpers: the statement name a message refers to, read from its
 * body (type byte and length excluded).  They return 0 and set *name and *len,
 * or -1 when the body is malformed or the message names no statement.
 *   Parse 'P':    statement name, then *query points at the query text
 *   Bind 'B':     portal name, statement name -> the statement name
 *   Describe 'D' / Close 'C' with kind 'S' -> the statement name
 */
int pgstmt_parse_msg(const uint8_t *body, size_t len, const char **name, size_t *namelen,
                     const char **query, size_t *querylen);
int pgstmt_bind_msg(const uint8_t *body, size_t len, const char **name, size_t *namelen);
int pgstmt_target_msg(const uint8_t *body, size_t len, const char **name, size_t *namelen);

#endif /* TANDEM_PGSTMT_H */
