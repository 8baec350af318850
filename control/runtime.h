/*
 * runtime.h - a configuration snapshot made ready to use: addresses
 * resolved, TLS contexts loaded, metric slots assigned.
 *
 * Built on the main thread (at boot and on every reload) and never changed
 * afterwards, so workers read it without locks.  Reference counted: each
 * worker holds one reference to the runtime it uses for new sessions, and
 * each session holds one to the runtime it started with, so a reload never
 * pulls a backend out from under a live session.
 */
#ifndef TANDEM_RUNTIME_H
#define TANDEM_RUNTIME_H

#include <openssl/ssl.h>
#include <sys/socket.h>

#include "conf/conf.h"
#include "conf/conf_login.h"
#include "protocol/pgclass.h"
#include "protocol/scram.h"
#include "routing/canary.h"

struct rt_backend {
    const struct conf_backend *conf;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char addr_text[CONF_HOST_MAX + 16]; /* "host:port", for messages */
    SSL_CTX *tls;                       /* NULL when tls disable */
    int metric_slot;
    char password[256];                 /* tandem's own login: from password or password_file */
};

/* A user of a listener's auth source (auth_file), sorted by name for lookup. */
struct rt_auth_user {
    char user[64];                /* NAMEDATALEN */
    struct pgauth_secret secret;
};

struct rt_listener {
    const struct conf_listener *conf;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char addr_text[CONF_HOST_MAX + 16];
    SSL_CTX *tls; /* offered to clients; NULL when no certificate */
    int metric_slot;
    struct rt_backend *primary;
    struct rt_backend *shadow; /* NULL when none */
    const char **ignore_columns; /* compare.ignore_columns as a pointer array */
    /* canary rules in routing/'s form; backend 0 is the primary, 1 the shadow */
    struct canary_rule *canary;
    size_t ncanary;
    int canary_uses_hint;        /* some rule needs each unit's tandem:shadow hint */
    int canary_uses_key;         /* some rule needs each unit's first key (Redis key_prefix) */
    /* auth_file: tandem authenticates the clients (pg/pg_auth.c); auth NULL relays */
    struct rt_auth_user *auth;
    size_t nauth;
    /* tls-server-end-point channel binding: the hash of the listener's certificate */
    uint8_t cbind[64];
    size_t cbind_len;            /* 0: no TLS, or a certificate without a usable hash */
};

struct runtime {
    int refs;
    struct conf *conf;
    struct rt_backend *backends;
    size_t nbackends;
    struct rt_listener *listeners;
    size_t nlisteners;
    struct pgclass_opts classify;     /* write functions for the classifier */
    const char **write_fns;
};

/*
 * runtime_new - make conf ready: resolve every address (blocking
 * getaddrinfo: call on the main thread only), load TLS files.  Takes
 * ownership of conf.  On failure returns NULL, frees conf, and writes the
 * reason to err.
 */
struct runtime *runtime_new(struct conf *conf, char *err, size_t errlen);

/*
 * runtime_check_auth_files - read every listener's auth_file as a start
 * would (for tandem -t): 0, or -1 with err naming the listener, file and line.
 */
int runtime_check_auth_files(const struct conf *conf, char *err, size_t errlen);

/*
 * runtime_client_tls - a client TLS context for tls (require or
 * verify-full): verify-full checks the peer against ca_file, or the
 * system's CAs when ca_file is ""; cert and key ("" none) are shown to a
 * server that asks.  NULL with err filled.  Backends and the fleet's store.
 */
SSL_CTX *runtime_client_tls(enum conf_tls tls, const char *ca_file, const char *cert,
                            const char *key, char *err, size_t errlen);

void runtime_ref(struct runtime *rt);
void runtime_unref(struct runtime *rt);

/* runtime_listener_find - the listener bound to the same address, or NULL. */
const struct rt_listener *runtime_listener_find(const struct runtime *rt,
                                                const struct sockaddr_storage *addr);

/* Format an address as "host:port" / "[v6]:port". */
void runtime_format_addr(const struct sockaddr *sa, char *out, size_t len);

/* Format only the IP of an address ("127.0.0.1", "::1"). */
void runtime_format_host(const struct sockaddr_storage *ss, char *out, size_t len);

/* runtime_login - how tandem itself logs in to b, copied (conf/conf_login.h). */
void runtime_login(const struct rt_backend *b, struct conf_login *out);

/* runtime_auth_lookup - user's secret in l's auth source, or NULL (also without a source). */
const struct pgauth_secret *runtime_auth_lookup(const struct rt_listener *l, const char *user);

#endif /* TANDEM_RUNTIME_H */
