/*
 * conf_login.h - how tandem itself logs in to a backend, as the strings
 * libpq and hiredis take.
 *
 * Every login of tandem's own (the health probe, the fence, the replica
 * watch and its steps, verify, the re-checks' templates) connects exactly
 * as the backend's settings say: the address resolved at load, its user
 * and password, and its TLS: verify-full checks the certificate against
 * tls_ca_file and the name against tls_server_name (else the configured
 * host), so a server that cannot prove it is the backend never sees the
 * password.  A copy, so a thread of its own can keep it past a reload.
 */
#ifndef TANDEM_CONF_LOGIN_H
#define TANDEM_CONF_LOGIN_H

#include "conf/conf.h"

struct conf_login {
    char name[CONF_NAME_MAX];     /* the backend's, for messages */
    char host[CONF_HOST_MAX];     /* TLS server name, else the configured host */
    char hostaddr[CONF_HOST_MAX]; /* the address resolved at load */
    char port[8];
    char user[CONF_NAME_MAX];
    char password[256];
    char sslmode[16];             /* disable | require | verify-full */
    char ca_file[CONF_PATH_MAX];
    char cert_file[CONF_PATH_MAX];  /* client certificate, "" none */
    char key_file[CONF_PATH_MAX];
};

/* conf_login_set - l from backend cb, its resolved address and its password (may be ""). */
void conf_login_set(struct conf_login *l, const struct conf_backend *cb, const char *hostaddr,
                    const char *password);

/* The most conf_login_params writes (without the terminating NULL). */
#define CONF_LOGIN_PARAMS 12

/*
 * conf_login_params - libpq's keywords and values for a login as l to
 * database dbname, named app in pg_stat_activity: written to keys/vals
 * from index 0, at most CONF_LOGIN_PARAMS, not terminated (the caller
 * adds its own timeouts, then NULL).  Returns how many were written.
 */
int conf_login_params(const struct conf_login *l, const char *dbname, const char *app,
                      const char **keys, const char **vals);

/* conf_login_wipe - the password is gone from l. */
void conf_login_wipe(struct conf_login *l);

#endif
