/*
 * conf_cli.c - the file-less command line, as a syntax tree.
 *
 *   tandem postgres --listen 0.0.0.0:6432 --primary db1:5432 --shadow new=db2:5432
 *
 * becomes exactly the tree of
 *
 *   backend blue { address db1:5432; }
 *   backend new { address db2:5432; }
 *   listener postgres { listen 0.0.0.0:6432; protocol postgres; primary blue; shadow new; }
 *
 * and goes through conf_parse_tree() like a file does: one directive table,
 * one set of value parsers and checks, so the two forms cannot drift.  Each
 * node is labelled with its flag, so a refused value reads
 * "--listen: bad address "x"".  Every flag takes a value.
 */
#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "conf/conf_err.h"
#include "conf/conf_parse.h"
#include "conf/conf_tree.h"
#include "conf/conf_value.h"

/* The blocks a flag can land in, in the order the tree lists them. */
enum cli_dest {
    CLI_TOP,
    CLI_LIMITS,
    CLI_ADMIN,
    CLI_PRIMARY,  /* backend blue { } */
    CLI_SHADOW,   /* backend green { } */
    CLI_LISTENER, /* listener PROTO { } */
    CLI_MIRROR,   /* listener PROTO { mirror { } } */
    CLI_READS,    /* listener PROTO { reads { } }: one directive per NAME=WEIGHT */
    CLI_CONTROL,  /* control { } */
    CLI_NDEST,
};

struct cli_flag {
    const char *flag; /* without "--" */
    enum cli_dest dest;
    const char *directive; /* what it is in the file form */
};

/* One row per flag.  --primary and --shadow also name their backend. */
static const struct cli_flag cli_flags[] = {
    {"workers", CLI_TOP, "workers"},
    {"log-format", CLI_TOP, "log_format"},
    {"log-level", CLI_TOP, "log_level"},
    {"max-client-conn", CLI_LIMITS, "max_client_conn"},
    {"max-packet-size", CLI_LIMITS, "max_packet_size"},
    {"startup-timeout", CLI_LIMITS, "startup_timeout"},
    {"connect-timeout", CLI_LIMITS, "connect_timeout"},
    {"shutdown-timeout", CLI_LIMITS, "shutdown_timeout"},
    {"client-idle-timeout", CLI_LIMITS, "client_idle_timeout"},
    {"tcp-keepalive", CLI_LIMITS, "tcp_keepalive"},
    {"tcp-user-timeout", CLI_LIMITS, "tcp_user_timeout"},
    {"max-command-size", CLI_LIMITS, "max_command_size"},
    {"max-prepared-bytes", CLI_LIMITS, "max_prepared_bytes"},
    {"admin", CLI_ADMIN, "listen"},
    {"admin-token-file", CLI_ADMIN, "token_file"},
    {"admin-read-token-file", CLI_ADMIN, "read_token_file"},
    {"primary", CLI_PRIMARY, "address"},
    {"primary-tls", CLI_PRIMARY, "tls"},
    {"primary-ca", CLI_PRIMARY, "tls_ca_file"},
    {"primary-cert", CLI_PRIMARY, "tls_cert"},
    {"primary-key", CLI_PRIMARY, "tls_key"},
    {"primary-user", CLI_PRIMARY, "user"},
    {"primary-password-file", CLI_PRIMARY, "password_file"},
    {"shadow", CLI_SHADOW, "address"},
    {"shadow-tls", CLI_SHADOW, "tls"},
    {"shadow-ca", CLI_SHADOW, "tls_ca_file"},
    {"shadow-cert", CLI_SHADOW, "tls_cert"},
    {"shadow-key", CLI_SHADOW, "tls_key"},
    {"shadow-user", CLI_SHADOW, "user"},
    {"shadow-password-file", CLI_SHADOW, "password_file"},
    {"shadow-passfile", CLI_SHADOW, "passfile"},
    {"listen", CLI_LISTENER, "listen"},
    {"tls-cert", CLI_LISTENER, "tls_cert"},
    {"tls-key", CLI_LISTENER, "tls_key"},
    {"mode", CLI_LISTENER, "mode"},
    {"mirror-reads", CLI_MIRROR, "reads"},
    {"mirror-level", CLI_MIRROR, "level"},
    {"mirror-queue", CLI_MIRROR, "queue"},
    {"mirror-timeout", CLI_MIRROR, "timeout"},
    {"read-your-writes", CLI_LISTENER, "read_your_writes"},
    {"max-lag", CLI_LISTENER, "max_lag"},
    {"auth-file", CLI_LISTENER, "auth_file"},
    {"server-connections", CLI_LISTENER, "server_connections"},
    {"server-pool", CLI_LISTENER, "server_pool"},
    {"server-idle-timeout", CLI_LISTENER, "server_idle_timeout"},
    {"server-lifetime", CLI_LISTENER, "server_lifetime"},
    {"server-reset-query", CLI_LISTENER, "server_reset_query"},
    {"read-weights", CLI_READS, NULL},
    {"state-file", CLI_CONTROL, "state_file"},
};

#define NFLAGS (sizeof(cli_flags) / sizeof(cli_flags[0]))
/*
 * Rows the code reads by name.  Each must be the first row of its
 * destination: the flag that opens a block labels it.
 */
#define FLAG_PRIMARY cli_index("primary")
#define FLAG_SHADOW cli_index("shadow")
#define FLAG_LISTEN cli_index("listen")

struct cli {
    const char *proto;
    const char *value[NFLAGS]; /* NULL when not given */
    const char *primary_name;  /* backend names, in the tree's arena */
    const char *shadow_name;
    struct conf_tree tree;
    struct conf_errors *errs;
};

static int
cli_flag_find(const char *name, size_t len)
{
    for (size_t i = 0; i < NFLAGS; i++)
        if (strlen(cli_flags[i].flag) == len && memcmp(cli_flags[i].flag, name, len) == 0)
            return (int)i;
    return -1;
}

static size_t
cli_index(const char *flag)
{
    int i = cli_flag_find(flag, strlen(flag));

    assert(i >= 0);
    return (size_t)i;
}

/* Read argv into cli->value[].  Reports shape errors: unknown, repeated, missing value. */
static void
cli_read(struct cli *cli, int argc, char **argv)
{
    char q[CONF_QUOTE_MAX];

    for (int i = 0; i < argc; i++) {
        const char *arg = argv[i];

        if (arg == NULL)
            break;
        if (strncmp(arg, "--", 2) != 0 || arg[2] == '\0') {
            conf_err_add(cli->errs, 0, "unexpected argument %s", conf_err_quote(arg, q, sizeof(q)));
            continue;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const char *value = NULL;
        int k = cli_flag_find(name, len);

        if (eq != NULL)
            value = eq + 1;
        else if (i + 1 < argc && argv[i + 1] != NULL && strncmp(argv[i + 1], "--", 2) != 0)
            value = argv[++i]; /* every flag takes a value, an unknown one too */
        if (k < 0) {
            char flag[CONF_QUOTE_MAX];
            snprintf(flag, sizeof(flag), "--%.*s", (int)(len < 64 ? len : 64), name);
            conf_err_add(cli->errs, 0, "unknown option %s", conf_err_quote(flag, q, sizeof(q)));
            continue;
        }
        if (value == NULL) {
            conf_err_add(cli->errs, 0, "--%s: missing value", cli_flags[k].flag);
            continue;
        }
        if (cli->value[k] != NULL) {
            conf_err_add(cli->errs, 0, "--%s: given more than once", cli_flags[k].flag);
            continue;
        }
        cli->value[k] = value;
    }
}

/*
 * "[NAME=]HOST:PORT" of flag K: split off the name (an address never holds
 * '=').  A bad name is reported here and replaced by DFLT, so the listener's
 * reference to it does not report it again.  Stores the name in the arena
 * and returns the address part, or NULL when memory ran out.
 */
static const char *
cli_split_name(struct cli *cli, size_t k, const char *value, const char *dflt, const char **name)
{
    const char *eq = strchr(value, '=');
    char q[CONF_QUOTE_MAX];

    *name = dflt;
    if (eq == NULL)
        return value;
    char *n = conf_tree_strndup(&cli->tree, value, (size_t)(eq - value));
    if (n == NULL)
        return NULL;
    if (conf_value_name(n) == CONF_VALUE_OK)
        *name = n;
    else
        conf_err_add(cli->errs, 0, "--%s: bad name %s", cli_flags[k].flag,
                     conf_err_quote(n, q, sizeof(q)));
    return eq + 1;
}

static struct conf_node *
cli_node(struct cli *cli, struct conf_node *parent, const char *directive, const char *label,
         int block, const char *arg)
{
    const char *args[1] = {arg};

    return conf_tree_add(&cli->tree, parent, directive, label, 0, block, args, arg != NULL);
}

/*
 * --read-weights blue=90,green=10 as the children of reads { }:
 * blue weight=90; green weight=10;  The names and weights are checked by
 * the reads { } code itself; only the list's shape is checked here.
 */
static int
cli_reads(struct cli *cli, struct conf_node *reads, const char *label, const char *value)
{
    char q[CONF_QUOTE_MAX];
    const char *p = value;

    for (;;) {
        size_t len = strcspn(p, ",");
        const char *eq = memchr(p, '=', len);
        if (eq == NULL || eq == p) {
            char *item = conf_tree_strndup(&cli->tree, p, len);
            if (item == NULL)
                return -1;
            conf_err_add(cli->errs, 0, "%s: bad value %s (expected NAME=WEIGHT,...)", label,
                         conf_err_quote(item, q, sizeof(q)));
        } else {
            char *name = conf_tree_strndup(&cli->tree, p, (size_t)(eq - p));
            char buf[96];
            /* a longer weight is cut and marked, so reads { } refuses it rather than a prefix */
            int wlen = (int)(len - (size_t)(eq + 1 - p));
            snprintf(buf, sizeof(buf), "weight=%.*s%s", wlen > 80 ? 80 : wlen, eq + 1,
                     wlen > 80 ? "..." : "");
            char *arg = conf_tree_strndup(&cli->tree, buf, strlen(buf));
            if (name == NULL)
                return -1;
            if (arg == NULL || cli_node(cli, reads, name, label, 0, arg) == NULL)
                return -1;
        }
        if (p[len] == '\0')
            return 0;
        p += len + 1;
    }
}

/* The tree of the equivalent file; 0 on success, -1 when memory ran out. */
static int
cli_build(struct cli *cli)
{
    static const char *const block_name[CLI_NDEST] = {
        [CLI_LIMITS] = "limits",  [CLI_ADMIN] = "admin",       [CLI_PRIMARY] = "backend",
        [CLI_SHADOW] = "backend", [CLI_LISTENER] = "listener", [CLI_MIRROR] = "mirror",
        [CLI_READS] = "reads",    [CLI_CONTROL] = "control",
    };
    struct conf_node *block[CLI_NDEST] = {NULL};
    const char *value[NFLAGS];
    char label[64];

    memcpy(value, cli->value, sizeof(value));
    value[FLAG_PRIMARY] =
        cli_split_name(cli, FLAG_PRIMARY, value[FLAG_PRIMARY], "blue", &cli->primary_name);
    if (value[FLAG_PRIMARY] == NULL)
        return -1;
    if (value[FLAG_SHADOW] != NULL) {
        value[FLAG_SHADOW] =
            cli_split_name(cli, FLAG_SHADOW, value[FLAG_SHADOW], "green", &cli->shadow_name);
        if (value[FLAG_SHADOW] == NULL)
            return -1;
    }

    /*
     * Open each block a given flag lands in.  Table order makes --primary,
     * --shadow and --listen open theirs; the listener is always opened.
     */
    for (size_t i = 0; i < NFLAGS; i++) {
        enum cli_dest d = cli_flags[i].dest;
        if (value[i] == NULL || d == CLI_TOP || block[d] != NULL)
            continue;
        const char *arg = NULL;
        if (d == CLI_PRIMARY)
            arg = cli->primary_name;
        else if (d == CLI_SHADOW)
            arg = cli->shadow_name;
        else if (d == CLI_LISTENER)
            arg = cli->proto;
        /* The opening flag is --primary, --shadow or --listen where those apply. */
        snprintf(label, sizeof(label), "--%s", cli_flags[i].flag);
        /*
         * mirror { } and reads { } sit inside the listener, which --listen
         * (earlier in the table) opened
         */
        block[d] = cli_node(cli, d == CLI_MIRROR || d == CLI_READS ? block[CLI_LISTENER] : NULL,
                            block_name[d], label, 1, arg);
        if (block[d] == NULL)
            return -1;
    }

    for (size_t i = 0; i < NFLAGS; i++) {
        if (value[i] == NULL)
            continue;
        snprintf(label, sizeof(label), "--%s", cli_flags[i].flag);
        if (cli_flags[i].dest == CLI_READS) {
            if (cli_reads(cli, block[CLI_READS], label, value[i]) != 0)
                return -1;
            continue;
        }
        if (cli_node(cli, block[cli_flags[i].dest], cli_flags[i].directive, label, 0, value[i]) ==
            NULL)
            return -1;
    }

    /* What the file form would spell out inside the listener. */
    struct conf_node *l = block[CLI_LISTENER];
    if (cli_node(cli, l, "protocol", "protocol", 0, cli->proto) == NULL ||
        cli_node(cli, l, "primary", "--primary", 0, cli->primary_name) == NULL)
        return -1;
    if (cli->shadow_name != NULL &&
        cli_node(cli, l, "shadow", "--shadow", 0, cli->shadow_name) == NULL)
        return -1;
    return 0;
}

struct conf *
conf_load_args(const char *proto, int argc, char **argv, struct conf_errors *errs)
{
    struct conf_errors scratch;
    struct cli cli;
    struct conf *conf = NULL;
    char q[CONF_QUOTE_MAX];

    if (errs == NULL) {
        memset(&scratch, 0, sizeof(scratch));
        errs = &scratch;
    }
    size_t before = errs->count + errs->dropped;
    memset(&cli, 0, sizeof(cli));
    cli.errs = errs;
    cli.proto = proto;
    conf_tree_init(&cli.tree);

    if (proto == NULL || (strcmp(proto, "postgres") != 0 && strcmp(proto, "redis") != 0)) {
        conf_err_add(errs, 0, "unknown protocol %s (expected postgres|redis)",
                     conf_err_quote(proto != NULL ? proto : "", q, sizeof(q)));
        cli.proto = NULL;
    }
    if (argc > 0 && argv != NULL)
        cli_read(&cli, argc, argv);
    if (cli.value[FLAG_LISTEN] == NULL)
        conf_err_add(errs, 0, "--listen is required");
    if (cli.value[FLAG_PRIMARY] == NULL)
        conf_err_add(errs, 0, "--primary is required");
    if (cli.value[FLAG_SHADOW] == NULL) {
        for (size_t i = 0; i < NFLAGS; i++)
            if (cli_flags[i].dest == CLI_SHADOW && i != FLAG_SHADOW && cli.value[i] != NULL) {
                conf_err_add(errs, 0, "--%s: needs --shadow", cli_flags[i].flag);
                cli.value[i] = NULL; /* no nameless backend block */
            }
    }

    /*
     * Without a listener or a primary the tree would only repeat that they
     * are missing; otherwise build it even after other errors, so the
     * values' own errors are reported in the same run.
     */
    if (cli.proto != NULL && cli.value[FLAG_LISTEN] != NULL && cli.value[FLAG_PRIMARY] != NULL) {
        if (cli_build(&cli) != 0)
            conf_err_add(errs, 0, "out of memory");
        else
            conf = conf_parse_tree(&cli.tree, "", errs);
    }
    conf_tree_release(&cli.tree);
    if (conf != NULL && errs->count + errs->dropped != before) {
        conf_free(conf);
        conf = NULL;
    }
    return conf;
}
