/*
 * pgclass.c - PostgreSQL statement classification over libpg_query's JSON
 * parse tree.
 *
 *   sql ──► hint scan over the text (comments are not in the tree)
 *     └───► pg_query_parse ──► JSON text ──► tokens ──► walk each statement:
 *                                                      a rule by node type
 *                                                      + what the walk found
 *
 * libpg_query's JSON writes every Node * field as {"TypeName": {fields}}
 * and typed struct fields (a SelectStmt's larg, a DeleteStmt's relation)
 * without the wrapper.  Node type names begin with an upper-case letter,
 * field names never do: that is how the walk tells a node from a field.
 *
 * Why JSON, and why not jansson: for a 90-byte SELECT, pg_query_parse
 * (JSON out) takes ~13 us, pg_query_parse_protobuf ~55 us (and its tree
 * needs protobuf-c headers), and loading the JSON into jansson ~26 us more.
 * The JSON is machine-written, so a flat token array (one pass, no
 * allocation for short statements, every container knowing where it ends)
 * is all the walk needs.  The tokenizer still checks the structure fully:
 * the walk can then index tokens without bounds doubts.
 */
#include "protocol/pgclass.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pg_query.h>
#include <xxhash.h>

/* Nesting deeper than this in the JSON is not walked, and the text is
 * treated as unparseable (a write).  PostgreSQL's own parser gives up on
 * deep nesting first; this bounds our recursion and tokenizer stack. */
#define JSON_MAX_DEPTH 1000

/* ------------------------------------------------------------------ */
/* Comment hints                                                      */

static bool
is_ident_byte(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '_' || c >= 0x80;
}

static uint8_t
hints_in_comment(const char *s, size_t n)
{
    static const struct {
        const char *word;
        uint8_t bit;
    } words[] = {
        {"primary", PGCLASS_HINT_PRIMARY},
        {"shadow", PGCLASS_HINT_SHADOW},
        {"noshadow", PGCLASS_HINT_NOSHADOW},
    };
    uint8_t hint = 0;
    const char *end = s + n;
    const char *p;

    while ((p = memmem(s, (size_t)(end - s), "tandem:", 7)) != NULL) {
        const char *w = p + 7;
        const char *we = w;
        while (we < end && *we >= 'a' && *we <= 'z')
            we++;
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
            size_t wl = strlen(words[i].word);
            if ((size_t)(we - w) == wl && memcmp(w, words[i].word, wl) == 0)
                hint |= words[i].bit;
        }
        s = we;
    }
    return hint;
}

/*
 * scan_hints - the hint bits of every comment in s[0..n).  A small lexer
 * that knows what PostgreSQL's does about where comments cannot be: string
 * literals ('', E'' with backslashes), quoted identifiers and dollar quotes.
 * Block comments nest, as in PostgreSQL.  Text cut short anywhere is fine.
 */
static uint8_t
scan_hints(const char *s, size_t n)
{
    uint8_t hint = 0;
    size_t i = 0;

    if (memmem(s, n, "tandem:", 7) == NULL)
        return 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c == '-' && i + 1 < n && s[i + 1] == '-') {
            size_t start = i + 2;
            const char *nl = memchr(s + start, '\n', n - start);
            i = nl != NULL ? (size_t)(nl - s) + 1 : n;
            hint |= hints_in_comment(s + start, i - start);
        } else if (c == '/' && i + 1 < n && s[i + 1] == '*') {
            size_t start = i + 2;
            int depth = 1;
            i += 2;
            while (i < n && depth > 0) {
                if (s[i] == '/' && i + 1 < n && s[i + 1] == '*') {
                    depth++;
                    i += 2;
                } else if (s[i] == '*' && i + 1 < n && s[i + 1] == '/') {
                    depth--;
                    i += 2;
                } else {
                    i++;
                }
            }
            hint |= hints_in_comment(s + start, i - start);
        } else if (c == '\'') {
            bool backslash = i > 0 && (s[i - 1] == 'e' || s[i - 1] == 'E') &&
                             (i < 2 || !is_ident_byte((unsigned char)s[i - 2]));
            i++;
            while (i < n) {
                if (backslash && s[i] == '\\') {
                    i += 2;
                } else if (s[i] == '\'') {
                    if (i + 1 < n && s[i + 1] == '\'') {
                        i += 2;
                    } else {
                        i++;
                        break;
                    }
                } else {
                    i++;
                }
            }
        } else if (c == '"') {
            i++;
            while (i < n) {
                if (s[i] == '"') {
                    if (i + 1 < n && s[i + 1] == '"') {
                        i += 2;
                    } else {
                        i++;
                        break;
                    }
                } else {
                    i++;
                }
            }
        } else if (c == '$' && (i == 0 || !is_ident_byte((unsigned char)s[i - 1]))) {
            /* $tag$ ... $tag$; $1 is a parameter, not a quote */
            size_t t = i + 1;
            if (t < n && is_ident_byte((unsigned char)s[t]) && !(s[t] >= '0' && s[t] <= '9')) {
                while (t < n && (is_ident_byte((unsigned char)s[t])))
                    t++;
            }
            if (t < n && s[t] == '$') {
                size_t taglen = t + 1 - i;
                const char *close = memmem(s + t + 1, n - (t + 1), s + i, taglen);
                i = close != NULL ? (size_t)(close - s) + taglen : n;
            } else {
                i++;
            }
        } else if (is_ident_byte(c)) {
            /* skip a whole word, so the '$' inside one is seen as such */
            while (i < n && (is_ident_byte((unsigned char)s[i]) || s[i] == '$'))
                i++;
        } else {
            i++;
        }
    }
    if (hint & (PGCLASS_HINT_PRIMARY | PGCLASS_HINT_NOSHADOW))
        hint &= (uint8_t)~PGCLASS_HINT_SHADOW;
    return hint;
}

/* ------------------------------------------------------------------ */
/* Functions                                                          */

enum fn_flag {
    FN_WRITE = 1 << 0,    /* changes data or takes a lock: WRITE */
    FN_VOLATILE = 1 << 1, /* value not determined by the data */
    FN_LOCK = 1 << 2,     /* takes a lock */
    FN_SESSION = 1 << 3,  /* changes session state: at least SESSION */
    FN_NOTIFY = 1 << 4,   /* pg_notify: SESSION, nothing for the shadow */
    FN_ADMIN = 1 << 5,    /* controls the server: at least ADMIN */
    FN_LOCAL = 1 << 6,    /* answers per-server identity (an OID, xid, LSN, pid,
                           * setting, file): noise server_local */
    FN_PHYSICAL = 1 << 7, /* answers physical state (sizes, statistics) or does
                           * maintenance on it: noise physical */
    FN_OID_ARG = 1 << 8,  /* takes an object identifier (OID, xid, LSN): server_local
                           * when an argument is a value the client brought */
    FN_FILE = 1 << 9,     /* reads or writes a file on the server's host: server_local,
                           * and the shadow's host may not have it */
};

/*
 * Server-local values, the rule (noise server_local, pgclass.h):
 *
 * A client that fetched an OID (or an xid, an LSN) from the primary and
 * sends it back -- psql's \d sends "WHERE c.oid = '16384'", drivers send
 * pg_get_viewdef($1) -- names another object, or none, on the shadow.  Such
 * a value is recognized where it is used, never guessed from a column name:
 *   - an FN_OID_ARG function (pg_get_viewdef, pg_get_partkeydef,
 *     format_type, has_*_privilege, lo_get, txid_status ...) with an
 *     argument that is a number, a string of digits or a parameter, alone
 *     or under casts: pg_get_viewdef('v'::regclass) resolves the name on
 *     each server and stays compared;
 *   - a cast to a reg* type of such a value ('16384'::regclass, $1::regclass);
 *   - a cast to oid, xid, xid8, cid, tid or pg_lsn of anything: the value
 *     is an identifier of this server;
 *   - a read of the catalogs, where OIDs live ("c.oid = $1" is always on a
 *     pg_* relation: a user table has no oid column since PostgreSQL 12).
 * A value compared with a column of an ordinary table is data: a real
 * difference there stays a mismatch.
 */
struct fn_rule {
    const char *name;
    unsigned flags;
};

/* Sorted by name (strcmp), for bsearch.  Names not here go through fn_prefix. */
static const struct fn_rule fn_exact[] = {
    {"brin_desummarize_range", FN_PHYSICAL},
    {"brin_summarize_new_values", FN_PHYSICAL},
    {"brin_summarize_range", FN_PHYSICAL},
    {"clock_timestamp", FN_VOLATILE},
    {"col_description", FN_OID_ARG},
    {"current_database", FN_VOLATILE | FN_LOCAL},
    {"current_setting", FN_VOLATILE | FN_LOCAL},
    {"currval", FN_VOLATILE},
    {"format_type", FN_OID_ARG},
    {"gen_random_uuid", FN_VOLATILE},
    {"gin_clean_pending_list", FN_PHYSICAL},
    {"has_any_column_privilege", FN_OID_ARG},
    {"has_column_privilege", FN_OID_ARG},
    {"has_database_privilege", FN_OID_ARG},
    {"has_foreign_data_wrapper_privilege", FN_OID_ARG},
    {"has_function_privilege", FN_OID_ARG},
    {"has_language_privilege", FN_OID_ARG},
    {"has_parameter_privilege", FN_OID_ARG},
    {"has_schema_privilege", FN_OID_ARG},
    {"has_sequence_privilege", FN_OID_ARG},
    {"has_server_privilege", FN_OID_ARG},
    {"has_table_privilege", FN_OID_ARG},
    {"has_tablespace_privilege", FN_OID_ARG},
    {"has_type_privilege", FN_OID_ARG},
    {"inet_client_addr", FN_VOLATILE | FN_LOCAL},
    {"inet_client_port", FN_VOLATILE | FN_LOCAL},
    {"inet_server_addr", FN_VOLATILE | FN_LOCAL},
    {"inet_server_port", FN_VOLATILE | FN_LOCAL},
    {"lastval", FN_VOLATILE},
    {"lo_close", FN_WRITE},
    {"lo_creat", FN_WRITE | FN_LOCAL},
    {"lo_create", FN_WRITE | FN_LOCAL},
    {"lo_export", FN_WRITE | FN_OID_ARG | FN_FILE},
    {"lo_from_bytea", FN_WRITE | FN_LOCAL},
    {"lo_get", FN_OID_ARG},
    {"lo_import", FN_WRITE | FN_FILE},
    {"lo_lseek", FN_WRITE},
    {"lo_lseek64", FN_WRITE},
    {"lo_open", FN_WRITE | FN_OID_ARG},
    {"lo_put", FN_WRITE | FN_OID_ARG},
    {"lo_truncate", FN_WRITE},
    {"lo_truncate64", FN_WRITE},
    {"lo_unlink", FN_WRITE | FN_OID_ARG},
    {"lowrite", FN_WRITE},
    {"mxid_age", FN_OID_ARG},
    {"nextval", FN_WRITE | FN_VOLATILE},
    {"now", FN_VOLATILE},
    {"obj_description", FN_OID_ARG},
    {"pg_backend_pid", FN_VOLATILE | FN_LOCAL},
    {"pg_backup_start", FN_ADMIN},
    {"pg_backup_stop", FN_ADMIN},
    {"pg_blocking_pids", FN_LOCAL | FN_OID_ARG},
    {"pg_cancel_backend", FN_ADMIN},
    {"pg_collation_is_visible", FN_OID_ARG},
    {"pg_column_compression", FN_PHYSICAL},
    {"pg_column_size", FN_PHYSICAL},
    {"pg_conf_load_time", FN_VOLATILE | FN_LOCAL},
    {"pg_conversion_is_visible", FN_OID_ARG},
    {"pg_create_logical_replication_slot", FN_ADMIN},
    {"pg_create_physical_replication_slot", FN_ADMIN},
    {"pg_create_restore_point", FN_ADMIN},
    {"pg_current_logfile", FN_LOCAL},
    {"pg_current_snapshot", FN_VOLATILE | FN_LOCAL},
    {"pg_current_wal_flush_lsn", FN_VOLATILE | FN_LOCAL},
    {"pg_current_wal_insert_lsn", FN_VOLATILE | FN_LOCAL},
    {"pg_current_wal_lsn", FN_VOLATILE | FN_LOCAL},
    {"pg_current_xact_id", FN_VOLATILE | FN_LOCAL},
    {"pg_current_xact_id_if_assigned", FN_VOLATILE | FN_LOCAL},
    {"pg_database_size", FN_PHYSICAL},
    {"pg_describe_object", FN_OID_ARG},
    {"pg_drop_replication_slot", FN_ADMIN},
    {"pg_export_snapshot", FN_LOCAL},
    {"pg_filenode_relation", FN_OID_ARG},
    {"pg_function_is_visible", FN_OID_ARG},
    {"pg_has_role", FN_OID_ARG},
    {"pg_indexes_size", FN_PHYSICAL},
    {"pg_is_in_recovery", FN_LOCAL},
    {"pg_log_backend_memory_contexts", FN_ADMIN},
    {"pg_my_temp_schema", FN_LOCAL},
    {"pg_notification_queue_usage", FN_PHYSICAL},
    {"pg_notify", FN_NOTIFY},
    {"pg_opclass_is_visible", FN_OID_ARG},
    {"pg_operator_is_visible", FN_OID_ARG},
    {"pg_opfamily_is_visible", FN_OID_ARG},
    {"pg_postmaster_start_time", FN_VOLATILE | FN_LOCAL},
    {"pg_promote", FN_ADMIN},
    {"pg_read_binary_file", FN_FILE},
    {"pg_read_file", FN_FILE},
    {"pg_relation_filenode", FN_LOCAL},
    {"pg_relation_filepath", FN_LOCAL},
    {"pg_relation_size", FN_PHYSICAL},
    {"pg_reload_conf", FN_ADMIN},
    {"pg_rotate_logfile", FN_ADMIN},
    {"pg_start_backup", FN_ADMIN},
    {"pg_stat_file", FN_FILE},
    {"pg_statistics_obj_is_visible", FN_OID_ARG},
    {"pg_stop_backup", FN_ADMIN},
    {"pg_switch_wal", FN_ADMIN},
    {"pg_table_is_visible", FN_OID_ARG},
    {"pg_table_size", FN_PHYSICAL},
    {"pg_tablespace_databases", FN_OID_ARG},
    {"pg_tablespace_location", FN_OID_ARG},
    {"pg_tablespace_size", FN_PHYSICAL},
    {"pg_terminate_backend", FN_ADMIN},
    {"pg_total_relation_size", FN_PHYSICAL},
    {"pg_ts_config_is_visible", FN_OID_ARG},
    {"pg_ts_dict_is_visible", FN_OID_ARG},
    {"pg_ts_parser_is_visible", FN_OID_ARG},
    {"pg_ts_template_is_visible", FN_OID_ARG},
    {"pg_type_is_visible", FN_OID_ARG},
    {"pg_visible_in_snapshot", FN_OID_ARG},
    {"pg_wal_replay_pause", FN_ADMIN},
    {"pg_wal_replay_resume", FN_ADMIN},
    {"pg_xact_commit_timestamp", FN_OID_ARG},
    {"pg_xact_commit_timestamp_origin", FN_OID_ARG},
    {"pg_xact_status", FN_OID_ARG},
    {"random", FN_VOLATILE},
    {"random_normal", FN_VOLATILE},
    {"set_config", FN_SESSION},
    {"setseed", FN_VOLATILE},
    {"setval", FN_WRITE | FN_VOLATILE},
    {"shobj_description", FN_OID_ARG},
    {"statement_timestamp", FN_VOLATILE},
    {"timeofday", FN_VOLATILE},
    {"transaction_timestamp", FN_VOLATILE},
    {"txid_current", FN_VOLATILE | FN_LOCAL},
    {"txid_current_if_assigned", FN_VOLATILE | FN_LOCAL},
    {"txid_current_snapshot", FN_VOLATILE | FN_LOCAL},
    {"txid_status", FN_OID_ARG},
    {"txid_visible_in_snapshot", FN_OID_ARG},
    {"version", FN_VOLATILE | FN_LOCAL},
};

/* Tried in order, the first that matches wins. */
static const struct fn_rule fn_prefix[] = {
    {"pg_advisory_unlock", FN_WRITE},
    {"pg_advisory_", FN_WRITE | FN_LOCK},
    {"pg_try_advisory_", FN_WRITE | FN_LOCK},
    {"pg_stat_reset", FN_ADMIN | FN_PHYSICAL},
    {"pg_stat_", FN_PHYSICAL},          /* pg_stat_get_*, pg_stat_statements_reset ... */
    {"pg_statio_", FN_PHYSICAL},
    {"pgstat", FN_PHYSICAL},            /* pgstattuple, pgstatindex ... */
    {"pg_visibility", FN_PHYSICAL},
    {"brin_", FN_PHYSICAL},             /* brin_summarize_*, pageinspect's brin_page_items */
    {"pg_ls_", FN_FILE},                /* pg_ls_dir, pg_ls_waldir ... */
    {"pg_current_", FN_LOCAL},          /* WAL positions, xids not listed above */
    {"pg_last_", FN_LOCAL},             /* pg_last_wal_replay_lsn ... */
    {"pg_wal", FN_LOCAL | FN_OID_ARG},  /* pg_walfile_name, pg_wal_lsn_diff ... */
    {"pg_control_", FN_LOCAL},
    {"pg_snapshot_", FN_LOCAL},
    {"txid_", FN_LOCAL | FN_OID_ARG},
    {"pg_get_", FN_OID_ARG},            /* pg_get_viewdef, pg_get_partkeydef, pg_get_expr ... */
    {"pg_identify_object", FN_OID_ARG},
    {"pg_partition_", FN_OID_ARG},
    {"pg_index", FN_OID_ARG},           /* pg_index_has_property, pg_indexam_has_property */
    {"uuid_generate_", FN_VOLATILE},
};

static int
fn_rule_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct fn_rule *)elem)->name);
}

static bool
user_fn_match(const struct pgclass_opts *opts, const char *schema, const char *name)
{
    if (opts == NULL)
        return false;
    for (size_t i = 0; i < opts->nwrite_fns; i++) {
        const char *want = opts->write_fns[i];
        const char *dot;
        if (want == NULL)
            continue;
        dot = strchr(want, '.');
        if (dot == NULL) {
            if (strcmp(want, name) == 0)
                return true;
        } else if (schema != NULL && strlen(schema) == (size_t)(dot - want) &&
                   memcmp(want, schema, (size_t)(dot - want)) == 0 && strcmp(dot + 1, name) == 0) {
            return true;
        }
    }
    return false;
}

static unsigned
fn_flags(const struct pgclass_opts *opts, const char *schema, const char *name)
{
    const struct fn_rule *r;
    unsigned flags = 0;

    r = bsearch(name, fn_exact, sizeof(fn_exact) / sizeof(fn_exact[0]), sizeof(fn_exact[0]),
                fn_rule_cmp);
    if (r != NULL) {
        flags = r->flags;
    } else {
        for (size_t i = 0; i < sizeof(fn_prefix) / sizeof(fn_prefix[0]); i++) {
            if (strncmp(name, fn_prefix[i].name, strlen(fn_prefix[i].name)) == 0) {
                flags = fn_prefix[i].flags;
                break;
            }
        }
    }
    if (user_fn_match(opts, schema, name))
        flags |= FN_WRITE;
    return flags;
}

/* ------------------------------------------------------------------ */
/* JSON tokens                                                        */

enum jtype { J_OBJ, J_ARR, J_STR, J_PRIM };

struct jtok {
    uint32_t start;     /* J_STR: first byte inside the quotes; else first byte */
    uint32_t len;       /* J_STR: raw bytes inside the quotes, escapes undecoded */
    uint32_t end;       /* index of the first token after this one's descendants */
    uint8_t type;
};

#define JDOC_INLINE 512

struct jdoc {
    const char *js;
    struct jtok *tok;
    uint32_t n;
    uint32_t cap;
    struct jtok inline_tok[JDOC_INLINE];
};

static struct jtok *
jdoc_push(struct jdoc *d, enum jtype type, uint32_t start)
{
    struct jtok *t;

    if (d->n == d->cap) {
        uint32_t cap = d->cap * 2;
        struct jtok *nt;
        if (cap > UINT32_MAX / 2)
            return NULL;
        if (d->tok == d->inline_tok) {
            nt = malloc(cap * sizeof(*nt));
            if (nt != NULL)
                memcpy(nt, d->tok, d->n * sizeof(*nt));
        } else {
            nt = realloc(d->tok, cap * sizeof(*nt));
        }
        if (nt == NULL)
            return NULL;
        d->tok = nt;
        d->cap = cap;
    }
    t = &d->tok[d->n++];
    t->type = (uint8_t)type;
    t->start = start;
    t->len = 0;
    t->end = d->n;
    return t;
}

static void
jdoc_release(struct jdoc *d)
{
    if (d->tok != d->inline_tok)
        free(d->tok);
}

/*
 * jdoc_parse - tokenize js[0..len) into d (d->tok must be set up).
 * Returns 0 when js is one object whose every object alternates string keys
 * and values, -1 otherwise (or when out of memory or nested too deep).
 */
static int
jdoc_parse(struct jdoc *d, const char *js, size_t len)
{
    uint32_t stack[JSON_MAX_DEPTH];
    uint32_t nchild[JSON_MAX_DEPTH];
    int sp = 0;
    size_t i = 0;

    d->js = js;
    if (len >= UINT32_MAX)
        return -1;
    while (i < len) {
        char c = js[i];
        struct jtok *t;
        enum jtype type;

        if (c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == ',' || c == ':') {
            i++;
            continue;
        }
        if (c == '}' || c == ']') {
            struct jtok *open;
            if (sp == 0)
                return -1;
            open = &d->tok[stack[sp - 1]];
            if (open->type != (c == '}' ? J_OBJ : J_ARR) ||
                (open->type == J_OBJ && nchild[sp - 1] % 2 != 0))
                return -1;
            open->end = d->n;
            sp--;
            i++;
            continue;
        }
        if (sp == 0 && d->n != 0)
            return -1;  /* a second top-level value */
        if (c == '{' || c == '[')
            type = c == '{' ? J_OBJ : J_ARR;
        else if (c == '"')
            type = J_STR;
        else
            type = J_PRIM;
        if (sp > 0) {
            /* in an object, every even child is a key and must be a string */
            if (d->tok[stack[sp - 1]].type == J_OBJ && nchild[sp - 1] % 2 == 0 && type != J_STR)
                return -1;
            nchild[sp - 1]++;
        } else if (type != J_OBJ) {
            return -1;
        }
        t = jdoc_push(d, type, (uint32_t)i);
        if (t == NULL)
            return -1;
        if (type == J_OBJ || type == J_ARR) {
            if (sp == JSON_MAX_DEPTH)
                return -1;
            stack[sp] = d->n - 1;
            nchild[sp] = 0;
            sp++;
            i++;
        } else if (type == J_STR) {
            /* the closing quote: the first one after an even run of backslashes */
            size_t j = i + 1;
            for (;;) {
                const char *q = memchr(js + j, '"', len - j);
                size_t bs = 0;
                if (q == NULL)
                    return -1;
                j = (size_t)(q - js);
                while (j - bs > i + 1 && js[j - bs - 1] == '\\')
                    bs++;
                if (bs % 2 == 0)
                    break;
                j++;
            }
            t->start = (uint32_t)(i + 1);
            t->len = (uint32_t)(j - i - 1);
            i = j + 1;
        } else {
            size_t j = i;
            while (j < len && js[j] != ',' && js[j] != '}' && js[j] != ']' && js[j] != ' ' &&
                   js[j] != '\n' && js[j] != ':' && js[j] != '"' && js[j] != '{' && js[j] != '[')
                j++;
            t->len = (uint32_t)(j - i);
            i = j;
        }
    }
    return sp == 0 && d->n > 0 ? 0 : -1;
}

/*
 * Comparisons take the literal's length at compile time (the macros below):
 * most keys differ in length, and a strlen per compare showed in profiles.
 */

/* The value of key in object o, or -1 (also when o is -1 or not an object). */
static int
j_getn(const struct jdoc *d, int o, const char *key, size_t kl)
{
    uint32_t k;

    if (o < 0 || d->tok[o].type != J_OBJ)
        return -1;
    for (k = (uint32_t)o + 1; k < d->tok[o].end; k = d->tok[k + 1].end) {
        const struct jtok *kt = &d->tok[k];
        if (kt->len == kl && memcmp(d->js + kt->start, key, kl) == 0)
            return (int)k + 1;
    }
    return -1;
}

static bool
j_is(const struct jdoc *d, int i, enum jtype type)
{
    return i >= 0 && d->tok[i].type == type;
}

/* A raw comparison: right for keys and enum names, which have no escapes. */
static bool
j_streqn(const struct jdoc *d, int i, const char *s, size_t l)
{
    return j_is(d, i, J_STR) && d->tok[i].len == l && memcmp(d->js + d->tok[i].start, s, l) == 0;
}

static bool
j_prim_isn(const struct jdoc *d, int i, const char *s, size_t l)
{
    return j_is(d, i, J_PRIM) && d->tok[i].len == l && memcmp(d->js + d->tok[i].start, s, l) == 0;
}

#define j_get(d, o, lit) j_getn((d), (o), "" lit, sizeof(lit) - 1)
#define j_streq(d, i, lit) j_streqn((d), (i), "" lit, sizeof(lit) - 1)
#define j_prim_is(d, i, lit) j_prim_isn((d), (i), "" lit, sizeof(lit) - 1)

/* Present, not null, not an empty array. */
static bool
j_nonempty(const struct jdoc *d, int i)
{
    if (i < 0 || j_prim_is(d, i, "null"))
        return false;
    return !(d->tok[i].type == J_ARR && d->tok[i].end == (uint32_t)i + 1);
}

static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * j_str - string token i decoded into buf (NUL-terminated), or NULL when i
 * is not a string or does not fit in cap bytes.  \uXXXX outside ASCII is
 * kept only for what PostgreSQL names can hold; a surrogate becomes '?'.
 */
static const char *
j_str(const struct jdoc *d, int i, char *buf, size_t cap)
{
    const char *s, *e;
    size_t o = 0;

    if (!j_is(d, i, J_STR))
        return NULL;
    s = d->js + d->tok[i].start;
    e = s + d->tok[i].len;
    while (s < e) {
        char c = *s++;
        char enc[4];
        size_t el = 1;
        if (c == '\\' && s < e) {
            c = *s++;
            switch (c) {
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'u': {
                unsigned cp = 0;
                for (int k = 0; k < 4; k++) {
                    int h = s < e ? hexval(*s) : -1;
                    if (h < 0)
                        return NULL;
                    cp = cp << 4 | (unsigned)h;
                    s++;
                }
                if (cp == 0 || (cp >= 0xd800 && cp <= 0xdfff))
                    cp = '?';
                if (cp < 0x80) {
                    enc[0] = (char)cp;
                } else if (cp < 0x800) {
                    enc[0] = (char)(0xc0 | cp >> 6);
                    enc[1] = (char)(0x80 | (cp & 0x3f));
                    el = 2;
                } else {
                    enc[0] = (char)(0xe0 | cp >> 12);
                    enc[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
                    enc[2] = (char)(0x80 | (cp & 0x3f));
                    el = 3;
                }
                if (o + el >= cap)
                    return NULL;
                memcpy(buf + o, enc, el);
                o += el;
                continue;
            }
            default: break;   /* \" \\ \/ */
            }
        }
        if (o + 1 >= cap)
            return NULL;
        buf[o++] = c;
    }
    buf[o] = '\0';
    return buf;
}

/* The sval of a {"String": {"sval": ...}} node, decoded into buf, or NULL. */
static const char *
j_node_sval(const struct jdoc *d, int node, char *buf, size_t cap)
{
    return j_str(d, j_get(d, j_get(d, node, "String"), "sval"), buf, cap);
}

/* The n-th element of array a, or -1. */
static int
j_at(const struct jdoc *d, int a, size_t n)
{
    uint32_t e;

    if (!j_is(d, a, J_ARR))
        return -1;
    for (e = (uint32_t)a + 1; e < d->tok[a].end; e = d->tok[e].end)
        if (n-- == 0)
            return (int)e;
    return -1;
}

static size_t
j_count(const struct jdoc *d, int a)
{
    size_t n = 0;
    uint32_t e;

    if (!j_is(d, a, J_ARR))
        return 0;
    for (e = (uint32_t)a + 1; e < d->tok[a].end; e = d->tok[e].end)
        n++;
    return n;
}

/* ------------------------------------------------------------------ */
/* The tree walk                                                      */

/* Long enough for any PostgreSQL name (NAMEDATALEN 64, in UTF-8). */
#define NAME_BUF 256

/* What a walk over (part of) one statement found. */
struct walk {
    const struct jdoc *d;
    const struct pgclass_opts *opts;
    bool write;       /* a DML node, INTO, locking clause or write function */
    bool session;     /* a session-changing function */
    bool notify;      /* pg_notify */
    bool admin;       /* a server-control function */
    bool locking;
    bool volatile_fn;
    bool unstable;
    bool too_deep;
    bool local_input;   /* a server-local value or file goes in (pgclass.h) */
    uint8_t reason;     /* enum shadow_noise_reason: the strongest found */
    uint8_t sys_ref;    /* system columns referenced, SYSCOL_* bits */
    uint8_t sys_alias;  /* names of system columns given to something else here */
};

/* w found a reason a difference would be noise. */
static void
raise_noise(struct walk *w, enum shadow_noise_reason r)
{
    w->unstable = true;
    w->reason = (uint8_t)shadow_noise_strongest((enum shadow_noise_reason)w->reason, r);
}

/* System columns: per-server identity (a tuple's place, its transaction ids,
 * its table's OID).  No table can have a column of these names; a view, a
 * subquery or a function's result can, which is why a name given in the
 * statement itself (AS xmin, s(xmin), WITH c(xmin)) cancels it. */
static const char *const syscols[] = {"ctid", "xmin", "xmax", "cmin", "cmax", "tableoid"};

/* The SYSCOL_* bit of a column name, or 0. */
static uint8_t
syscol_bit(const char *name)
{
    for (size_t i = 0; i < sizeof(syscols) / sizeof(syscols[0]); i++)
        if (strcmp(name, syscols[i]) == 0)
            return (uint8_t)(1u << i);
    return 0;
}

#define SYSCOL_TABLEOID (1u << 5)

static void walk(struct walk *w, int v, int depth);

/*
 * client_value - node is a value the client brought, which may be an
 * identifier it fetched from the primary: a parameter, an integer, or a
 * string of digits (psql writes c.oid = '16384'), alone or under casts
 * (bounded: casts nest only so deep in practice).
 */
static bool
client_value(const struct jdoc *d, int node)
{
    char buf[32];

    for (int i = 0; i < 8 && node >= 0; i++) {
        int tc = j_get(d, node, "TypeCast");
        int ac = j_get(d, node, "A_Const");
        if (j_get(d, node, "ParamRef") >= 0)
            return true;
        if (ac >= 0) {
            const char *sv = j_str(d, j_get(d, j_get(d, ac, "sval"), "sval"), buf, sizeof(buf));
            if (j_get(d, ac, "ival") >= 0)
                return true;
            if (sv == NULL || *sv == '\0')
                return false;
            for (; *sv != '\0'; sv++)
                if (*sv < '0' || *sv > '9')
                    return false;
            return true;
        }
        if (tc < 0)
            return false;
        node = j_get(d, tc, "arg");
    }
    return false;
}

/* Some element of the argument list args is a client_value. */
static bool
any_client_value(const struct jdoc *d, int args)
{
    uint32_t e;

    if (!j_is(d, args, J_ARR))
        return false;
    for (e = (uint32_t)args + 1; e < d->tok[args].end; e = d->tok[e].end)
        if (client_value(d, (int)e))
            return true;
    return false;
}

/* The last name of a TypeCast's typeName ("regclass" of pg_catalog.regclass), or NULL. */
static const char *
cast_type(const struct jdoc *d, int tc, char *buf, size_t cap)
{
    int names = j_get(d, j_get(d, tc, "typeName"), "names");
    size_t n = j_count(d, names);

    return n == 0 ? NULL : j_node_sval(d, j_at(d, names, n - 1), buf, cap);
}

/* The last field of a ColumnRef ("xmin" of t.xmin), or NULL (also for t.*). */
static const char *
column_name(const struct jdoc *d, int cr, char *buf, size_t cap)
{
    int fields = j_get(d, cr, "fields");
    size_t n = j_count(d, fields);

    return n == 0 ? NULL : j_node_sval(d, j_at(d, fields, n - 1), buf, cap);
}

/* Names given in the statement (colnames, aliascolnames): they may shadow system columns. */
static void
note_aliases(struct walk *w, int arr)
{
    char buf[NAME_BUF];
    uint32_t e;

    if (!j_is(w->d, arr, J_ARR))
        return;
    for (e = (uint32_t)arr + 1; e < w->d->tok[arr].end; e = w->d->tok[e].end) {
        const char *name = j_node_sval(w->d, (int)e, buf, sizeof(buf));
        if (name != NULL)
            w->sys_alias |= syscol_bit(name);
    }
}

static void
visit_funccall(struct walk *w, int fc)
{
    char namebuf[NAME_BUF], schemabuf[NAME_BUF];
    int names = j_get(w->d, fc, "funcname");
    size_t n = j_count(w->d, names);
    const char *name, *schema = NULL;
    unsigned flags;

    if (n == 0)
        return;
    name = j_node_sval(w->d, j_at(w->d, names, n - 1), namebuf, sizeof(namebuf));
    if (name == NULL)
        return;
    if (n >= 2)
        schema = j_node_sval(w->d, j_at(w->d, names, n - 2), schemabuf, sizeof(schemabuf));
    flags = fn_flags(w->opts, schema, name);
    if (flags & FN_LOCAL)
        raise_noise(w, SHADOW_NOISE_SERVER_LOCAL);
    else if (flags & FN_PHYSICAL)
        raise_noise(w, SHADOW_NOISE_PHYSICAL);
    else if (flags & FN_VOLATILE)
        raise_noise(w, SHADOW_NOISE_VOLATILE);
    if (flags & FN_FILE) {
        raise_noise(w, SHADOW_NOISE_SERVER_LOCAL);
        w->local_input = true;
    }
    if ((flags & FN_OID_ARG) && any_client_value(w->d, j_get(w->d, fc, "args"))) {
        raise_noise(w, SHADOW_NOISE_SERVER_LOCAL);
        w->local_input = true;
    }
    w->write |= (flags & FN_WRITE) != 0;
    w->volatile_fn |= (flags & FN_VOLATILE) != 0;
    w->locking |= (flags & FN_LOCK) != 0;
    w->session |= (flags & FN_SESSION) != 0;
    w->notify |= (flags & FN_NOTIFY) != 0;
    w->admin |= (flags & FN_ADMIN) != 0;
}

/*
 * A cast.  'now'::timestamptz and friends: a literal the input function
 * reads the clock for.  To oid, xid, xid8, cid, tid, pg_lsn: an identifier
 * of this server, whatever goes in.  To a reg* type: an identifier when
 * what goes in is a client_value ('16384'::regclass); a name
 * ('t'::regclass) is resolved on each server and shown as a name.
 * Returns false when the cast's argument must not be walked:
 * tableoid::regclass shows the table's name, not its OID.
 */
static bool
visit_typecast(struct walk *w, int tc)
{
    static const char *const words[] = {"now", "today", "tomorrow", "yesterday"};
    static const char *const ids[] = {"oid", "xid", "xid8", "cid", "tid", "pg_lsn"};
    char buf[32], tbuf[NAME_BUF], cbuf[NAME_BUF];
    int arg = j_get(w->d, tc, "arg");
    int aconst = j_get(w->d, arg, "A_Const");
    const char *type = cast_type(w->d, tc, tbuf, sizeof(tbuf));
    const char *s = j_str(w->d, j_get(w->d, j_get(w->d, aconst, "sval"), "sval"), buf,
                          sizeof(buf));

    if (type != NULL && strncmp(type, "reg", 3) == 0) {
        const char *col = column_name(w->d, j_get(w->d, arg, "ColumnRef"), cbuf, sizeof(cbuf));
        if (col != NULL && strcmp(col, "tableoid") == 0 && strcmp(type, "regclass") == 0)
            return false;
        if (client_value(w->d, arg)) {
            raise_noise(w, SHADOW_NOISE_SERVER_LOCAL);
            w->local_input = true;
        }
    }
    for (size_t i = 0; type != NULL && i < sizeof(ids) / sizeof(ids[0]); i++) {
        if (strcmp(type, ids[i]) == 0) {
            raise_noise(w, SHADOW_NOISE_SERVER_LOCAL);
            w->local_input |= client_value(w->d, arg);
        }
    }
    if (s == NULL)
        return true;
    while (*s == ' ')
        s++;
    for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
        size_t l = strlen(words[i]);
        if (strncasecmp(s, words[i], l) == 0 && (s[l] == '\0' || s[l] == ' ')) {
            w->volatile_fn = true;
            raise_noise(w, SHADOW_NOISE_VOLATILE);
        }
    }
    return true;
}

/* A relation of the system catalogs: its content is per server. */
static void
visit_relation(struct walk *w, int rv)
{
    char relbuf[NAME_BUF], schemabuf[NAME_BUF];
    const char *rel = j_str(w->d, j_get(w->d, rv, "relname"), relbuf, sizeof(relbuf));
    const char *schema = j_str(w->d, j_get(w->d, rv, "schemaname"), schemabuf,
                               sizeof(schemabuf));

    if ((rel != NULL && strncmp(rel, "pg_", 3) == 0) ||
        (schema != NULL &&
         (strcmp(schema, "pg_catalog") == 0 || strcmp(schema, "information_schema") == 0))) {
        /* the statistics views count what each server did; the rest holds OIDs */
        bool stats = rel != NULL && (strncmp(rel, "pg_stat", 7) == 0 ||
                                     strncmp(rel, "pg_statio_", 10) == 0);
        raise_noise(w, stats ? SHADOW_NOISE_PHYSICAL : SHADOW_NOISE_SERVER_LOCAL);
    }
}

/* A SelectStmt's own fields; called wrapped or not (larg, rarg). */
static void
visit_select(struct walk *w, int sel, int depth)
{
    const struct jdoc *d = w->d;
    int op = j_get(d, sel, "op");
    bool setop = op >= 0 && !j_streq(d, op, "SETOP_NONE");

    if ((j_nonempty(d, j_get(d, sel, "limitCount")) ||
         j_nonempty(d, j_get(d, sel, "limitOffset"))) &&
        !j_nonempty(d, j_get(d, sel, "sortClause")) &&
        (setop || j_nonempty(d, j_get(d, sel, "fromClause"))))
        raise_noise(w, SHADOW_NOISE_PHYSICAL); /* which rows: the physical order decides */
    if (j_nonempty(d, j_get(d, sel, "intoClause")))
        w->write = true;
    if (j_nonempty(d, j_get(d, sel, "lockingClause"))) {
        w->write = true;
        w->locking = true;
    }
    walk(w, sel, depth + 1);
}

#define key_is(d, k, lit) j_streq((d), (int)(k), lit)

/* A node {"Type": obj}: k is the key token.  Dispatch on the first letter
 * first: most nodes (ColumnRef, A_Const, ResTarget...) need nothing. */
static void
visit_node(struct walk *w, uint32_t k, int obj, int depth)
{
    const struct jdoc *d = w->d;

    switch (d->js[d->tok[k].start]) {
    case 'D':
    case 'I':
    case 'M':
    case 'U':
        if (key_is(d, k, "InsertStmt") || key_is(d, k, "UpdateStmt") ||
            key_is(d, k, "DeleteStmt") || key_is(d, k, "MergeStmt"))
            w->write = true;
        break;
    case 'F':
        if (key_is(d, k, "FuncCall"))
            visit_funccall(w, obj);
        break;
    case 'R':
        if (key_is(d, k, "RangeVar"))
            visit_relation(w, obj);
        else if (key_is(d, k, "RangeTableSample"))
            raise_noise(w, SHADOW_NOISE_VOLATILE);
        else if (key_is(d, k, "ResTarget") && j_is(d, j_get(d, obj, "name"), J_STR)) {
            char buf[NAME_BUF];
            const char *name = j_str(d, j_get(d, obj, "name"), buf, sizeof(buf));
            if (name != NULL)
                w->sys_alias |= syscol_bit(name);
        }
        break;
    case 'S':
        if (key_is(d, k, "SelectStmt")) {
            visit_select(w, obj, depth);
            return;
        }
        if (key_is(d, k, "SQLValueFunction")) {
            w->volatile_fn = true;
            raise_noise(w, SHADOW_NOISE_VOLATILE);
        }
        break;
    case 'T':
        if (key_is(d, k, "TypeCast") && !visit_typecast(w, obj))
            return;
        break;
    case 'C':
        if (key_is(d, k, "ColumnRef")) {
            char buf[NAME_BUF];
            const char *name = column_name(d, obj, buf, sizeof(buf));
            if (name != NULL)
                w->sys_ref |= syscol_bit(name);
        }
        break;
    }
    walk(w, obj, depth + 1);
}

/*
 * walk - everything below token v.  Recursion depth is bounded by
 * JSON_MAX_DEPTH (the tokenizer refused anything deeper); the check here
 * guards the walk's own extra levels.
 */
static void
walk(struct walk *w, int v, int depth)
{
    const struct jdoc *d = w->d;
    const struct jtok *t = &d->tok[v];
    uint32_t i;

    if (depth > 2 * JSON_MAX_DEPTH) {
        w->too_deep = true;
        return;
    }
    if (t->type == J_ARR) {
        for (i = (uint32_t)v + 1; i < t->end; i = d->tok[i].end)
            walk(w, (int)i, depth + 1);
        return;
    }
    if (t->type != J_OBJ)
        return;
    for (i = (uint32_t)v + 1; i < t->end; i = d->tok[i + 1].end) {
        const struct jtok *kt = &d->tok[i];
        int val = (int)i + 1;
        char first = d->js[kt->start];
        if (d->tok[val].type != J_OBJ && d->tok[val].type != J_ARR)
            continue;
        if (kt->len > 0 && first >= 'A' && first <= 'Z' && d->tok[val].type == J_OBJ)
            visit_node(w, i, val, depth + 1);
        else if ((key_is(d, i, "larg") || key_is(d, i, "rarg")) && d->tok[val].type == J_OBJ)
            visit_select(w, val, depth + 1);
        else if (key_is(d, i, "relation") && j_get(d, val, "relname") >= 0)
            visit_relation(w, val);
        else if (key_is(d, i, "colnames") || key_is(d, i, "aliascolnames"))
            note_aliases(w, val);
        else
            walk(w, val, depth + 1);
    }
}

/* ------------------------------------------------------------------ */
/* Statements                                                         */

enum rule {
    RULE_WRITE,     /* the default for any statement not listed */
    RULE_SELECT,
    RULE_EXPLAIN,
    RULE_SHOW,
    RULE_COPY,
    RULE_SET,
    RULE_SESSION,   /* not walked: PREPARE's query does not run */
    RULE_DECLARE,   /* SESSION, walked: a writing query makes it a WRITE */
    RULE_FETCH,
    RULE_NOTIFY,    /* SESSION, nothing for the shadow */
    RULE_TX,
    RULE_ADMIN,
    RULE_LOCK,
};

struct stmt_rule {
    const char *type;
    enum rule rule;
};

/* Sorted by type (strcmp), for bsearch. */
static const struct stmt_rule stmt_rules[] = {
    {"AlterSystemStmt", RULE_ADMIN},
    {"CheckPointStmt", RULE_ADMIN},
    {"ClosePortalStmt", RULE_SESSION},
    {"ClusterStmt", RULE_ADMIN},
    {"CopyStmt", RULE_COPY},
    {"DeallocateStmt", RULE_SESSION},
    {"DeclareCursorStmt", RULE_DECLARE},
    {"DiscardStmt", RULE_SESSION},
    {"ExplainStmt", RULE_EXPLAIN},
    {"FetchStmt", RULE_FETCH},
    {"ListenStmt", RULE_NOTIFY},
    {"LoadStmt", RULE_SESSION},
    {"LockStmt", RULE_LOCK},
    {"NotifyStmt", RULE_NOTIFY},
    {"PrepareStmt", RULE_SESSION},
    {"ReindexStmt", RULE_ADMIN},
    {"SelectStmt", RULE_SELECT},
    {"TransactionStmt", RULE_TX},
    {"UnlistenStmt", RULE_NOTIFY},
    {"VacuumStmt", RULE_ADMIN},
    {"VariableSetStmt", RULE_SET},
    {"VariableShowStmt", RULE_SHOW},
};

static int
stmt_rule_cmp(const void *key, const void *elem)
{
    return strcmp(key, ((const struct stmt_rule *)elem)->type);
}

/* One statement's answer, before the string's statements are combined. */
struct stmt_class {
    enum req_kind kind;
    bool returns_rows;
    bool ordered;
    bool notify_only;
    bool ddl;
    bool files;     /* COPY to or from a server file or program */
};

/* defGetBoolean's reading of an option value: no value means true; a
 * string false/off/no/0 or the integer 0 means false. */
static bool
defelem_true(const struct jdoc *d, int defelem)
{
    char buf[16];
    int arg = j_get(d, defelem, "arg");
    int aconst = j_get(d, arg, "A_Const");
    const char *s;
    int in;

    if (arg < 0)
        return true;
    s = j_node_sval(d, arg, buf, sizeof(buf));
    if (s == NULL)
        s = j_str(d, j_get(d, j_get(d, aconst, "sval"), "sval"), buf, sizeof(buf));
    if (s != NULL)
        return !(strcasecmp(s, "false") == 0 || strcasecmp(s, "off") == 0 ||
                 strcasecmp(s, "no") == 0 || strcmp(s, "0") == 0);
    /* {"Integer": {"ival": n}} or {"A_Const": {"ival": {"ival": n}}}; 0 omits ival */
    in = j_get(d, arg, "Integer");
    if (in < 0)
        in = j_get(d, aconst, "ival");
    if (in >= 0) {
        int v = j_get(d, in, "ival");
        return v >= 0 && !j_prim_is(d, v, "0");
    }
    return true;
}

static bool
explain_analyzes(const struct jdoc *d, int explain)
{
    int opts = j_get(d, explain, "options");
    bool analyze = false;
    uint32_t e;

    if (!j_is(d, opts, J_ARR))
        return false;
    for (e = (uint32_t)opts + 1; e < d->tok[opts].end; e = d->tok[e].end) {
        int de = j_get(d, (int)e, "DefElem");
        if (j_streq(d, j_get(d, de, "defname"), "analyze"))
            analyze = defelem_true(d, de);
    }
    return analyze;
}

/* The kind the walk's findings impose, at least base. */
static enum req_kind
walk_kind(const struct walk *w, enum req_kind base)
{
    enum req_kind k = base;
    if (w->admin)
        k = req_kind_strongest(k, REQ_KIND_ADMIN);
    if (w->session || w->notify)
        k = req_kind_strongest(k, REQ_KIND_SESSION);
    if (w->write)
        k = req_kind_strongest(k, REQ_KIND_WRITE);
    return k;
}

/* classify_stmt - one statement: wrapper is {"TypeName": {fields}}. */
static void
classify_stmt(struct walk *w, int wrapper, struct stmt_class *sc)
{
    const struct jdoc *d = w->d;
    const struct stmt_rule *r;
    enum rule rule = RULE_WRITE;
    char type[64];
    int stmt, q;

    memset(sc, 0, sizeof(*sc));
    sc->kind = REQ_KIND_WRITE;
    if (!j_is(d, wrapper, J_OBJ) || d->tok[wrapper].end == (uint32_t)wrapper + 1 ||
        j_str(d, wrapper + 1, type, sizeof(type)) == NULL) {
        w->too_deep = true;     /* not a statement: treat as unparseable */
        return;
    }
    stmt = wrapper + 2;
    r = bsearch(type, stmt_rules, sizeof(stmt_rules) / sizeof(stmt_rules[0]),
                sizeof(stmt_rules[0]), stmt_rule_cmp);
    if (r != NULL)
        rule = r->rule;

    switch (rule) {
    case RULE_SELECT:
        visit_select(w, stmt, 0);
        sc->kind = walk_kind(w, REQ_KIND_READ);
        sc->returns_rows = !j_nonempty(d, j_get(d, stmt, "intoClause"));
        sc->ordered = j_nonempty(d, j_get(d, stmt, "sortClause"));
        sc->notify_only = w->notify && sc->kind == REQ_KIND_SESSION && !w->session && !w->admin;
        break;
    case RULE_EXPLAIN:
        raise_noise(w, SHADOW_NOISE_PHYSICAL); /* plans and costs follow the statistics */
        sc->kind = REQ_KIND_READ;
        if (explain_analyzes(d, stmt)) {
            struct stmt_class inner;
            classify_stmt(w, j_get(d, stmt, "query"), &inner);
            sc->kind = inner.kind;
        }
        sc->returns_rows = sc->ordered = true;
        break;
    case RULE_SHOW:
        raise_noise(w, SHADOW_NOISE_SERVER_LOCAL); /* each server's own settings */
        sc->kind = REQ_KIND_READ;
        sc->returns_rows = sc->ordered = true;
        break;
    case RULE_COPY:
        q = j_get(d, stmt, "query");
        /* a file (or program) on the server's host: the shadow's host is another */
        sc->files = j_get(d, stmt, "filename") >= 0 ||
                    j_prim_is(d, j_get(d, stmt, "is_program"), "true");
        if (sc->files) {
            raise_noise(w, SHADOW_NOISE_SERVER_LOCAL);
            w->local_input = true;
        }
        if (j_prim_is(d, j_get(d, stmt, "is_from"), "true")) {
            sc->kind = REQ_KIND_WRITE;
        } else if (j_get(d, stmt, "filename") >= 0 ||
                   j_prim_is(d, j_get(d, stmt, "is_program"), "true")) {
            sc->kind = REQ_KIND_ADMIN;
        } else {
            sc->kind = REQ_KIND_READ;
            sc->returns_rows = true;
            sc->ordered = j_nonempty(d, j_get(d, j_get(d, q, "SelectStmt"), "sortClause"));
        }
        walk(w, stmt, 1);
        sc->kind = walk_kind(w, sc->kind);
        break;
    case RULE_SET:
        /* SET TRANSACTION: this transaction only; SET SESSION
         * CHARACTERISTICS AS TRANSACTION is session state */
        sc->kind = j_streq(d, j_get(d, stmt, "name"), "TRANSACTION") ? REQ_KIND_TX
                                                                     : REQ_KIND_SESSION;
        break;
    case RULE_SESSION:
        sc->kind = REQ_KIND_SESSION;
        break;
    case RULE_DECLARE:
        walk(w, stmt, 1);
        sc->kind = walk_kind(w, REQ_KIND_SESSION);
        break;
    case RULE_FETCH:
        sc->kind = REQ_KIND_SESSION;
        sc->returns_rows = !j_prim_is(d, j_get(d, stmt, "ismove"), "true");
        break;
    case RULE_NOTIFY:
        sc->kind = REQ_KIND_SESSION;
        sc->notify_only = true;
        break;
    case RULE_TX:
        sc->kind = REQ_KIND_TX;
        break;
    case RULE_ADMIN:
        sc->kind = REQ_KIND_ADMIN;
        /* ANALYZE (a VacuumStmt that is no VACUUM) changes no row but the statistics
         * the planner reads: mirrored, or the shadow plans blind and looks slower */
        if (strcmp(type, "VacuumStmt") == 0 &&
            !j_prim_is(d, j_get(d, stmt, "is_vacuumcmd"), "true")) {
            sc->kind = REQ_KIND_WRITE;
            sc->ddl = true;
        }
        break;
    case RULE_LOCK:
        w->locking = true;
        sc->kind = REQ_KIND_WRITE;
        break;
    case RULE_WRITE:
        walk(w, stmt, 1);
        sc->kind = REQ_KIND_WRITE;
        sc->returns_rows = j_nonempty(d, j_get(d, stmt, "returningList"));
        /* every statement type not listed as data or procedure is schema */
        sc->ddl = strcmp(type, "InsertStmt") != 0 && strcmp(type, "UpdateStmt") != 0 &&
                  strcmp(type, "DeleteStmt") != 0 && strcmp(type, "MergeStmt") != 0 &&
                  strcmp(type, "TruncateStmt") != 0 && strcmp(type, "CallStmt") != 0 &&
                  strcmp(type, "DoStmt") != 0;
        break;
    }
}

/* ------------------------------------------------------------------ */
/* Entry points                                                       */

/* Length of the valid UTF-8 sequence at s (strict: no overlongs, no
 * surrogates, nothing past U+10FFFF: what jansson accepts), or 0. */
static size_t
utf8_seq_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return n >= 2 && (s[1] & 0xc0) == 0x80 ? 2 : 0;
    if (c >= 0xe0 && c <= 0xef) {
        unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;
        return n >= 3 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 ? 3 : 0;
    }
    if (c >= 0xf0 && c <= 0xf4) {
        unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
        return n >= 4 && s[1] >= lo && s[1] <= hi && (s[2] & 0xc0) == 0x80 &&
                       (s[3] & 0xc0) == 0x80
                   ? 4
                   : 0;
    }
    return 0;
}

void
pgclass_classify(const char *sql, const struct pgclass_opts *opts, struct pgclass_result *out)
{
    size_t max_len = opts != NULL && opts->max_len != 0 ? opts->max_len : PGCLASS_DEFAULT_MAX_LEN;
    size_t len = strnlen(sql, max_len + 1);
    PgQueryParseResult pr;
    struct jdoc *d;
    int stmts;
    uint32_t e;
    size_t nstmts = 0, nrows = 0, nordered = 0, nnotify = 0;
    bool failed = false;
    uint8_t hint;

    memset(out, 0, sizeof(*out));
    out->kind = REQ_KIND_WRITE;
    out->parse_error = true;
    if (len > max_len) {
        out->hint = scan_hints(sql, strlen(sql));
        out->too_long = true;
        return;
    }
    hint = out->hint = scan_hints(sql, len);

    pr = pg_query_parse(sql);
    if (pr.error != NULL || pr.parse_tree == NULL) {
        pg_query_free_parse_result(pr);
        return;
    }
    d = malloc(sizeof(*d));
    if (d == NULL) {
        pg_query_free_parse_result(pr);
        return;
    }
    d->tok = d->inline_tok;
    d->cap = JDOC_INLINE;
    d->n = 0;
    if (jdoc_parse(d, pr.parse_tree, strlen(pr.parse_tree)) != 0 ||
        !j_is(d, stmts = j_get(d, 0, "stmts"), J_ARR)) {
        failed = true;
        goto out_free;
    }

    out->kind = REQ_KIND_READ;
    for (e = (uint32_t)stmts + 1; e < d->tok[stmts].end; e = d->tok[e].end) {
        struct walk w = {.d = d, .opts = opts};
        struct stmt_class sc;

        classify_stmt(&w, j_get(d, (int)e, "stmt"), &sc);
        if (w.too_deep) {
            failed = true;
            goto out_free;
        }
        nstmts++;
        out->kind = req_kind_strongest(out->kind, sc.kind);
        out->locking |= w.locking;
        out->volatile_fn |= w.volatile_fn;
        if (w.sys_ref & ~w.sys_alias)
            raise_noise(&w, SHADOW_NOISE_SERVER_LOCAL);
        if (w.volatile_fn && w.reason == SHADOW_NOISE_NONE)
            raise_noise(&w, SHADOW_NOISE_VOLATILE);
        /* only answers with rows can mismatch on a row value; a COPY of a
         * server file differs in its row count too */
        if ((sc.returns_rows || sc.files) && w.unstable) {
            out->unstable = true;
            out->noise_reason = (uint8_t)shadow_noise_strongest(
                (enum shadow_noise_reason)out->noise_reason, (enum shadow_noise_reason)w.reason);
        }
        out->local_input |= w.local_input;
        nrows += sc.returns_rows;
        nordered += sc.returns_rows && sc.ordered;
        nnotify += sc.notify_only;
        out->ddl |= sc.ddl;
    }
    out->parse_error = false;
    out->nstatements = nstmts > UINT16_MAX ? UINT16_MAX : (uint16_t)nstmts;
    out->has_order_by = nrows > 0 && nordered == nrows;
    out->no_mirror = nstmts > 0 && nnotify == nstmts;

out_free:
    jdoc_release(d);
    free(d);
    pg_query_free_parse_result(pr);
    if (failed) {
        memset(out, 0, sizeof(*out));
        out->kind = REQ_KIND_WRITE;
        out->parse_error = true;
        out->hint = hint;
    }
}

/* Copy at most cap-1 bytes of src[0..n) into dst, as valid UTF-8 ('?' for
 * invalid bytes), cut before a character that does not fit; NUL-terminate.
 * Returns whether anything was left out. */
static bool
copy_utf8_cut(char *dst, size_t cap, const char *src, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t l = utf8_seq_len((const unsigned char *)src + i, n - i);
        if (l == 0) {
            if (i + 1 > cap - 1)
                break;
            dst[i++] = '?';
            continue;
        }
        if (i + l > cap - 1)
            break;
        memcpy(dst + i, src + i, l);
        i += l;
    }
    dst[i] = '\0';
    return i < n;
}

int
pgclass_describe(const char *sql, struct pgclass_desc *out)
{
    size_t len = strnlen(sql, PGCLASS_DEFAULT_MAX_LEN + 1);
    bool parsed = false;

    memset(out, 0, sizeof(*out));
    if (len <= PGCLASS_DEFAULT_MAX_LEN) {
        PgQueryFingerprintResult fr = pg_query_fingerprint(sql);
        if (fr.error == NULL) {
            out->fingerprint = fr.fingerprint;
            parsed = true;
        }
        pg_query_free_fingerprint_result(fr);
    }
    if (parsed) {
        PgQueryNormalizeResult nr = pg_query_normalize(sql);
        if (nr.error == NULL && nr.normalized_query != NULL)
            out->normalized_truncated = copy_utf8_cut(out->normalized, sizeof(out->normalized),
                                                      nr.normalized_query,
                                                      strlen(nr.normalized_query));
        else
            parsed = false;
        pg_query_free_normalize_result(nr);
    }
    if (!parsed) {
        out->fingerprint = XXH3_64bits(sql, len);
        out->fingerprint_fallback = true;
        out->normalized_truncated =
            copy_utf8_cut(out->normalized, sizeof(out->normalized), sql, len);
    }
    snprintf(out->fingerprint_hex, sizeof(out->fingerprint_hex), "%016" PRIx64,
             out->fingerprint);
    return parsed ? 0 : -1;
}
