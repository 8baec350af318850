/*
 * conf_parse.h - syntax tree to struct conf, through the directive table
 * (private to conf/).
 */
#ifndef TANDEM_CONF_PARSE_H
#define TANDEM_CONF_PARSE_H

#include "conf/conf.h"
#include "conf/conf_tree.h"

/* Most backends and listeners one configuration may declare. */
#define CONF_MAX_BACKENDS 64
#define CONF_MAX_LISTENERS 64

/* Words of each enum, indexed by value, NULL-terminated. */
extern const char *const conf_proto_names[];
extern const char *const conf_mode_names[];
extern const char *const conf_server_conns_names[];
extern const char *const conf_guard_metric_names[];
extern const char *const conf_guard_action_names[];
extern const char *const conf_tls_names[];
extern const char *const conf_log_format_names[];
extern const char *const conf_log_level_names[];
extern const char *const conf_mirror_level_names[];
extern const char *const conf_mirror_order_names[];
extern const char *const conf_shadow_source_names[];
extern const char *const conf_repl_kind_names[];

/*
 * conf_parse_tree - a new struct conf: defaults, then every directive of T
 * applied and checked, then the checks that span blocks (references between
 * listeners and backends, duplicate addresses, at least one listener).
 * FILE (may be "") is recorded in conf->file.  Every problem is appended to
 * ERRS; returns NULL when there was any, or when memory ran out.
 */
struct conf *conf_parse_tree(const struct conf_tree *t, const char *file, struct conf_errors *errs);

#endif /* TANDEM_CONF_PARSE_H */
