/*
 * pg_login.c - logins of tandem's own to a backend, as the client: the
 * shadow session's (pg_shadow.c) and the re-checks' (pg_recheck.c).
 *
 * libpq does the logging in (every authentication method and TLS mode),
 * with the credentials configured for the backend: its user acting as the
 * client's role, or the client's own user with the backend's password or
 * passfile, since a client's SCRAM exchange cannot be replayed.  The
 * client's database and startup parameters go along.
 */
#include <stdio.h>
#include <string.h>

#include "control/runtime.h"
#include "pg/pg_session_int.h"
#include "protocol/pgw.h"

/* Append "-c name=value" to options, escaping as libpq's option splitter expects. */
static void
add_option(char *opts, size_t cap, const char *name, const char *value)
{
    size_t n = strlen(opts);
    n += (size_t)snprintf(opts + n, n < cap ? cap - n : 0, "%s-c %s=", n ? " " : "", name);
    for (const char *p = value; *p && n + 2 < cap; p++) {
        if (*p == ' ' || *p == '\\')
            opts[n++] = '\\';
        opts[n++] = *p;
    }
    if (n < cap)
        opts[n] = '\0';
}

/*
 * A login of tandem's to a backend as the client: the client's startup
 * parameters as -c settings, its own options, and, when tandem logs in
 * with a user of its own, the client's role last (no option of the
 * client's overrides it: RESET ROLE and DISCARD ALL return to it; the
 * login fails when that user may not act as the role).  1 when it acts as
 * the client's role, 0 when it logs in as the client's user, -1 when that
 * role cannot be set (the session is then not mirrored).
 */
static int
login_options(const struct pgw_startup *st, const char *user, char *options, size_t cap)
{
    for (size_t i = 0; i < st->nparams; i++) {
        const char *name = st->params[i].name;
        if (strcmp(name, "user") == 0 || strcmp(name, "database") == 0 ||
            strcmp(name, "application_name") == 0 || strcmp(name, "options") == 0 ||
            strcmp(name, "client_encoding") == 0 || strncmp(name, "_pq_.", 5) == 0)
            continue;
        add_option(options, cap, name, st->params[i].value);
    }
    const char *client_opts = pgw_startup_param(st, "options");
    if (client_opts && client_opts[0]) {
        size_t n = strlen(options);
        snprintf(options + n, cap - n, "%s%s", n ? " " : "", client_opts);
    }
    const char *client_user = pgw_startup_param(st, "user");
    if (client_user == NULL || user == NULL || strcmp(user, client_user) == 0)
        return 0;
    /* room for " -c role=" and the name with every byte escaped, or no login at all */
    if (strlen(client_user) >= sizeof(((struct pg_shadow *)0)->client_role) ||
        strlen(options) + 10 + 2 * strlen(client_user) >= cap)
        return -1;
    add_option(options, cap, "role", client_user);
    return 1;
}

/* libpq's parameters for a login of tandem's (keys/vals hold 24, NULL-terminated). */
struct login_params {
    const char *keys[24], *vals[24];
    char port[8], hostaddr[64], timeout[16], ka_idle[16], ka_intvl[16], user_timeout[16];
};

static void
login_params(const struct pg_session *s, const struct rt_backend *b, const struct pgw_startup *st,
             const char *user, const char *options, struct login_params *lp)
{
    const char *db = pgw_startup_param(st, "database");
    int k = 0;

    snprintf(lp->port, sizeof(lp->port), "%u", b->conf->addr.port);
    runtime_format_host(&b->addr, lp->hostaddr, sizeof(lp->hostaddr));
    snprintf(lp->timeout, sizeof(lp->timeout), "%u",
             (s->base.rt->conf->limits.connect_timeout_ms + 999) / 1000);
#define PARAM(key, value) (lp->keys[k] = (key), lp->vals[k++] = (value))
    PARAM("host", b->conf->tls_server_name[0] ? b->conf->tls_server_name : b->conf->addr.host);
    PARAM("hostaddr", lp->hostaddr);
    PARAM("port", lp->port);
    PARAM("user", user ? user : "");
    PARAM("dbname", db ? db : (user ? user : ""));
    if (b->password[0])
        PARAM("password", b->password);
    /* per client user: libpq picks the line for this host, port, database and user */
    if (b->conf->passfile[0])
        PARAM("passfile", b->conf->passfile);
    if (pgw_startup_param(st, "application_name"))
        PARAM("application_name", pgw_startup_param(st, "application_name"));
    if (pgw_startup_param(st, "client_encoding"))
        PARAM("client_encoding", pgw_startup_param(st, "client_encoding"));
    if (options[0])
        PARAM("options", options);
    PARAM("sslmode", b->conf->tls == CONF_TLS_VERIFY_FULL ? "verify-full"
                     : b->conf->tls == CONF_TLS_REQUIRE   ? "require"
                                                          : "disable");
    if (b->conf->tls_ca_file[0])
        PARAM("sslrootcert", b->conf->tls_ca_file);
    if (b->conf->tls_cert[0]) {
        PARAM("sslcert", b->conf->tls_cert);
        PARAM("sslkey", b->conf->tls_key);
    }
    PARAM("gssencmode", "disable");
    PARAM("connect_timeout", lp->timeout);
    /* the same keepalive and user timeout as tandem's own sockets (conn_tune_socket) */
    const struct conf_limits *lim = &s->base.rt->conf->limits;
    if (lim->tcp_keepalive_ms > 0) {
        unsigned idle = (lim->tcp_keepalive_ms + 999) / 1000;
        snprintf(lp->ka_idle, sizeof(lp->ka_idle), "%u", idle);
        snprintf(lp->ka_intvl, sizeof(lp->ka_intvl), "%u", idle / 3 ? idle / 3 : 1);
        PARAM("keepalives_idle", lp->ka_idle);
        PARAM("keepalives_interval", lp->ka_intvl);
        PARAM("keepalives_count", "3");
    }
    if (lim->tcp_user_timeout_ms > 0) {
        snprintf(lp->user_timeout, sizeof(lp->user_timeout), "%u", lim->tcp_user_timeout_ms);
        PARAM("tcp_user_timeout", lp->user_timeout);
    }
#undef PARAM
    lp->keys[k] = NULL, lp->vals[k] = NULL;
}

PGconn *
pg_login_start(const struct pg_session *s, const struct rt_backend *b)
{
    struct pgw_startup st;
    struct login_params lp;
    char options[2048] = "";
    const char *err;
    size_t used;

    if (pgw_startup_parse(s->startup, s->startup_len, &used, &st, &err) != PGW_OK)
        return NULL;
    const char *user = b->conf->user[0] ? b->conf->user : pgw_startup_param(&st, "user");
    if (login_options(&st, user, options, sizeof(options)) < 0)
        return NULL;
    login_params(s, b, &st, user, options, &lp);
    return PQconnectStartParams(lp.keys, lp.vals, 0);
}

int
pg_login_as_role(const struct pg_session *s, const struct rt_backend *b)
{
    struct pgw_startup st;
    char options[2048] = "";
    const char *err;
    size_t used;

    if (pgw_startup_parse(s->startup, s->startup_len, &used, &st, &err) != PGW_OK)
        return -1;
    const char *user = b->conf->user[0] ? b->conf->user : pgw_startup_param(&st, "user");
    return login_options(&st, user, options, sizeof(options));
}

PGconn *
pg_login_start_own(const struct pg_session *s, const struct rt_backend *b, const char *dbname)
{
    struct login_params lp;
    struct pgw_startup st;
    memset(&st, 0, sizeof(st));
    st.params[0].name = "database";
    st.params[0].value = dbname;
    st.params[1].name = "application_name";
    st.params[1].value = "tandem";
    st.nparams = 2;
    login_params(s, b, &st, b->conf->user, "", &lp);
    return PQconnectStartParams(lp.keys, lp.vals, 0);
}
