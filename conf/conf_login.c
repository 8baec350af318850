/*
 * conf_login.c - how tandem itself logs in to a backend (conf_login.h).
 */
#include <stdio.h>
#include <string.h>

#include "conf/conf_login.h"

void
conf_login_set(struct conf_login *l, const struct conf_backend *cb, const char *hostaddr,
               const char *password)
{
    memset(l, 0, sizeof(*l));
    snprintf(l->name, sizeof(l->name), "%s", cb->name);
    snprintf(l->host, sizeof(l->host), "%s",
             cb->tls_server_name[0] ? cb->tls_server_name : cb->addr.host);
    snprintf(l->hostaddr, sizeof(l->hostaddr), "%s", hostaddr);
    snprintf(l->port, sizeof(l->port), "%u", cb->addr.port);
    snprintf(l->user, sizeof(l->user), "%s", cb->user);
    snprintf(l->password, sizeof(l->password), "%s", password);
    snprintf(l->sslmode, sizeof(l->sslmode), "%s",
             cb->tls == CONF_TLS_VERIFY_FULL ? "verify-full"
             : cb->tls == CONF_TLS_REQUIRE   ? "require"
                                             : "disable");
    snprintf(l->ca_file, sizeof(l->ca_file), "%s", cb->tls_ca_file);
    snprintf(l->cert_file, sizeof(l->cert_file), "%s", cb->tls_cert);
    snprintf(l->key_file, sizeof(l->key_file), "%s", cb->tls_key);
}

int
conf_login_params(const struct conf_login *l, const char *dbname, const char *app,
                  const char **keys, const char **vals)
{
    int k = 0;
#define PARAM(key, value) (keys[k] = (key), vals[k++] = (value))
    PARAM("host", l->host);
    PARAM("hostaddr", l->hostaddr);
    PARAM("port", l->port);
    if (l->user[0]) /* else libpq's default: the operating system user */
        PARAM("user", l->user);
    if (l->password[0])
        PARAM("password", l->password);
    PARAM("dbname", dbname);
    PARAM("sslmode", l->sslmode);
    if (l->ca_file[0])
        PARAM("sslrootcert", l->ca_file);
    if (l->cert_file[0]) {
        PARAM("sslcert", l->cert_file);
        PARAM("sslkey", l->key_file);
    }
    PARAM("gssencmode", "disable"); /* never a Kerberos round trip tandem did not ask for */
    PARAM("application_name", app);
#undef PARAM
    return k;
}

void
conf_login_wipe(struct conf_login *l)
{
    explicit_bzero(l->password, sizeof(l->password));
}
