/*
 * runtime.c - resolve and load a configuration snapshot (see runtime.h).
 */
#include "control/runtime.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "metrics/metric.h"

static int
resolve(const struct conf_addr *a, struct sockaddr_storage *out, socklen_t *outlen, int passive,
        char *err, size_t errlen)
{
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = passive ? AI_PASSIVE : 0};
    struct addrinfo *res = NULL;
    char port[8];
    snprintf(port, sizeof(port), "%u", a->port);
    int rc = getaddrinfo(a->host[0] ? a->host : NULL, port, &hints, &res);
    if (rc != 0 || res == NULL) {
        snprintf(err, errlen, "cannot resolve \"%s\": %s", a->host, gai_strerror(rc));
        return -1;
    }
    memcpy(out, res->ai_addr, res->ai_addrlen);
    *outlen = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

void
runtime_format_addr(const struct sockaddr *sa, char *out, size_t len)
{
    char host[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
        snprintf(out, len, "%s:%u", host, port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
        snprintf(out, len, "[%s]:%u", host, port);
    } else {
        snprintf(out, len, "unix");
    }
}

void
runtime_format_host(const struct sockaddr_storage *ss, char *out, size_t len)
{
    const void *a = ss->ss_family == AF_INET6 ? (const void *)&((const struct sockaddr_in6 *)ss)->sin6_addr
                                              : (const void *)&((const struct sockaddr_in *)ss)->sin_addr;
    if (inet_ntop(ss->ss_family, a, out, (socklen_t)len) == NULL)
        snprintf(out, len, "invalid");
}

void
runtime_login(const struct rt_backend *b, struct conf_login *out)
{
    char hostaddr[CONF_HOST_MAX];
    runtime_format_host(&b->addr, hostaddr, sizeof(hostaddr));
    conf_login_set(out, b->conf, hostaddr, b->password);
}

/* The password tandem logs in to a backend with: inline, or the file's first line. */
static int
load_password(const struct conf_backend *cb, char *out, size_t len, char *err, size_t errlen)
{
    out[0] = '\0';
    if (cb->password[0]) {
        snprintf(out, len, "%s", cb->password);
        return 0;
    }
    if (!cb->password_file[0])
        return 0;
    FILE *f = fopen(cb->password_file, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read password_file \"%s\": %s", cb->password_file,
                 strerror(errno));
        return -1;
    }
    if (fgets(out, (int)len, f) == NULL)
        out[0] = '\0';
    fclose(f);
    out[strcspn(out, "\r\n")] = '\0';
    return 0;
}

static void
tls_reason(char *err, size_t errlen, const char *what, const char *path)
{
    char buf[160] = "";
    unsigned long e = ERR_get_error();
    if (e)
        ERR_error_string_n(e, buf, sizeof(buf));
    ERR_clear_error();
    snprintf(err, errlen, "%s \"%s\": %s", what, path, buf);
}

static SSL_CTX *
server_tls(const struct conf_listener *l, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL)
        goto fail;
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, l->tls_cert) != 1) {
        tls_reason(err, errlen, "cannot load certificate", l->tls_cert);
        goto fail_free;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, l->tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        tls_reason(err, errlen, "cannot load key", l->tls_key);
        goto fail_free;
    }
    return ctx;
fail_free:
    SSL_CTX_free(ctx);
    return NULL;
fail:
    snprintf(err, errlen, "cannot create a TLS context");
    return NULL;
}

SSL_CTX *
runtime_client_tls(enum conf_tls tls, const char *ca_file, const char *cert, const char *key,
                   char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (tls == CONF_TLS_VERIFY_FULL) {
        if (ca_file[0] == '\0') {
            if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
                tls_reason(err, errlen, "cannot load the system's CA certificates", "default");
                goto fail_free;
            }
        } else if (SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
            tls_reason(err, errlen, "cannot load CA file", ca_file);
            goto fail_free;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        /* require: encrypted, peer not verified (libpq's sslmode=require) */
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    /* a client certificate, for a server that asks for one (Redis tls-auth-clients) */
    if (cert[0] && SSL_CTX_use_certificate_chain_file(ctx, cert) != 1) {
        tls_reason(err, errlen, "cannot load client certificate", cert);
        goto fail_free;
    }
    if (key[0] && (SSL_CTX_use_PrivateKey_file(ctx, key, SSL_FILETYPE_PEM) != 1 ||
                   SSL_CTX_check_private_key(ctx) != 1)) {
        tls_reason(err, errlen, "cannot load client key", key);
        goto fail_free;
    }
    return ctx;
fail_free:
    SSL_CTX_free(ctx);
    return NULL;
}

/* The listener's canary rules for routing/canary.c; strings point into conf. */
static int
make_canary(struct runtime *rt, struct rt_listener *l)
{
    const struct conf_listener *cl = l->conf;
    if (cl->ncanaries == 0)
        return 0;
    l->canary = calloc(cl->ncanaries, sizeof(*l->canary));
    if (l->canary == NULL)
        return -1;
    for (size_t i = 0; i < cl->ncanaries; i++) {
        const struct conf_canary *c = &cl->canaries[i];
        struct canary_rule *r = &l->canary[i];
        r->user = c->user;
        r->database = c->database;
        /* the Redis client name plays application_name's part (conf allows one of them) */
        r->application_name = cl->proto == CONF_PROTO_REDIS ? c->client_name : c->application_name;
        r->key_prefix = c->key_prefix;
        if (c->has_client) {
            r->client.family = c->client_family;
            memcpy(r->client.bytes, c->client_addr, sizeof(r->client.bytes));
            r->client_prefix = c->client_prefix;
        }
        r->hint_shadow = c->hint_shadow != 0;
        r->percent_bp = c->percent_bp;
        r->percent_key = c->percent_key == CONF_CANARY_KEY_CLIENT ? CANARY_KEY_CLIENT
                         : c->percent_key == CONF_CANARY_KEY_USER ? CANARY_KEY_USER
                                                                  : CANARY_KEY_APPLICATION;
        r->action = c->action == CONF_CANARY_PRIMARY     ? CANARY_PRIMARY
                    : c->action == CONF_CANARY_NO_MIRROR ? CANARY_NO_MIRROR
                                                         : CANARY_ROUTE;
        r->backend = &rt->backends[c->backend] == l->primary  ? 0
                     : &rt->backends[c->backend] == l->shadow ? 1
                                                              : 2;
    }
    l->ncanary = cl->ncanaries;
    l->canary_uses_hint = canary_rules_use_hint(l->canary, l->ncanary);
    l->canary_uses_key = canary_rules_use_key(l->canary, l->ncanary);
    return 0;
}

static int
auth_user_cmp(const void *a, const void *b)
{
    return strcmp(((const struct rt_auth_user *)a)->user, ((const struct rt_auth_user *)b)->user);
}

static int load_auth_file(struct rt_listener *l, char *err, size_t errlen);

int
runtime_check_auth_files(const struct conf *conf, char *err, size_t errlen)
{
    for (size_t i = 0; i < conf->nlisteners; i++) {
        const struct conf_listener *cl = &conf->listeners[i];
        struct rt_listener l = {.conf = cl};
        char why[400];
        if (cl->auth_file[0] == '\0')
            continue;
        int rc = load_auth_file(&l, why, sizeof(why));
        if (l.auth != NULL) {
            OPENSSL_cleanse(l.auth, l.nauth * sizeof(*l.auth));
            free(l.auth);
        }
        if (rc != 0) {
            snprintf(err, errlen, "listener \"%s\": %s", cl->name, why);
            return -1;
        }
    }
    return 0;
}

/*
 * Read a listener's auth_file (userlist format: `"user" "secret"` a line).
 * The file is read whole at load and reload, so a SIGHUP refreshes it.
 * Errors name the file and line, never the secret.
 */
static int
load_auth_file(struct rt_listener *l, char *err, size_t errlen)
{
    const char *path = l->conf->auth_file;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        snprintf(err, errlen, "cannot read auth_file \"%s\": %s", path, strerror(errno));
        return -1;
    }
    char line[1024], user[sizeof(l->auth->user)], secret[PGAUTH_PASSWORD_MAX + 256];
    size_t cap = 0;
    int lineno = 0, rc = 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            snprintf(err, errlen, "auth_file \"%s\" line %d: too long", path, lineno);
            rc = -1;
            break;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            len--;
        int got = pgauth_userlist_line(line, len, user, sizeof(user), secret, sizeof(secret));
        if (got == 0)
            continue;
        if (got < 0) {
            snprintf(err, errlen, "auth_file \"%s\" line %d: expected \"user\" \"secret\"", path,
                     lineno);
            rc = -1;
            break;
        }
        if (l->nauth == cap) {
            size_t ncap = cap ? cap * 2 : 16;
            struct rt_auth_user *n = realloc(l->auth, ncap * sizeof(*n));
            if (n == NULL) {
                snprintf(err, errlen, "out of memory");
                rc = -1;
                break;
            }
            l->auth = n, cap = ncap;
        }
        struct rt_auth_user *u = &l->auth[l->nauth];
        snprintf(u->user, sizeof(u->user), "%s", user);
        if (pgauth_secret_parse(secret, strlen(secret), &u->secret) != 0) {
            snprintf(err, errlen, "auth_file \"%s\" line %d: the secret of \"%s\" is no valid "
                     "SCRAM-SHA-256 verifier, md5 hash or password", path, lineno, user);
            rc = -1;
            break;
        }
        l->nauth++;
    }
    OPENSSL_cleanse(line, sizeof(line));
    OPENSSL_cleanse(secret, sizeof(secret));
    fclose(f);
    if (rc == 0 && l->auth == NULL && (l->auth = calloc(1, sizeof(*l->auth))) == NULL) {
        snprintf(err, errlen, "out of memory"); /* an empty file still means "authenticate here" */
        rc = -1;
    }
    if (rc == 0)
        qsort(l->auth, l->nauth, sizeof(*l->auth), auth_user_cmp);
    return rc;
}

const struct pgauth_secret *
runtime_auth_lookup(const struct rt_listener *l, const char *user)
{
    if (l->auth == NULL || user == NULL)
        return NULL;
    struct rt_auth_user key;
    if (strlen(user) >= sizeof(key.user))
        return NULL;
    snprintf(key.user, sizeof(key.user), "%s", user);
    const struct rt_auth_user *u = bsearch(&key, l->auth, l->nauth, sizeof(*l->auth), auth_user_cmp);
    return u ? &u->secret : NULL;
}

/*
 * tls-server-end-point (RFC 5929): the hash of the listener's certificate,
 * with its signature's hash, SHA-256 in place of MD5 and SHA-1.
 */
static void
listener_cbind(struct rt_listener *l)
{
    X509 *cert = SSL_CTX_get0_certificate(l->tls);
    int md_nid = NID_undef;
    unsigned int n = 0;
    if (cert == NULL || !OBJ_find_sigid_algs(X509_get_signature_nid(cert), &md_nid, NULL))
        return;
    if (md_nid == NID_md5 || md_nid == NID_sha1)
        md_nid = NID_sha256;
    const EVP_MD *md = EVP_get_digestbynid(md_nid);
    if (md == NULL || (size_t)EVP_MD_get_size(md) > sizeof(l->cbind) ||
        X509_digest(cert, md, l->cbind, &n) != 1)
        return;
    l->cbind_len = n;
}

struct runtime *
runtime_new(struct conf *conf, char *err, size_t errlen)
{
    struct runtime *rt = calloc(1, sizeof(*rt));
    if (rt == NULL)
        goto out_conf;
    rt->refs = 1;
    rt->conf = conf;
    rt->nbackends = conf->nbackends;
    rt->nlisteners = conf->nlisteners;
    rt->backends = calloc(conf->nbackends ? conf->nbackends : 1, sizeof(*rt->backends));
    rt->listeners = calloc(conf->nlisteners ? conf->nlisteners : 1, sizeof(*rt->listeners));
    if (rt->backends == NULL || rt->listeners == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out_rt;
    }

    for (size_t i = 0; i < conf->nbackends; i++) {
        const struct conf_backend *cb = &conf->backends[i];
        struct rt_backend *b = &rt->backends[i];
        char why[300];
        b->conf = cb;
        if (resolve(&cb->addr, &b->addr, &b->addrlen, 0, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "backend \"%s\": %s", cb->name, why);
            goto out_rt;
        }
        snprintf(b->addr_text, sizeof(b->addr_text), "%s:%u", cb->addr.host, cb->addr.port);
        if (cb->tls != CONF_TLS_DISABLE &&
            (b->tls = runtime_client_tls(cb->tls, cb->tls_ca_file, cb->tls_cert, cb->tls_key, why,
                                         sizeof(why))) == NULL) {
            snprintf(err, errlen, "backend \"%s\": %s", cb->name, why);
            goto out_rt;
        }
        b->metric_slot = metric_slot_backend(cb->name);
        if (load_password(cb, b->password, sizeof(b->password), why, sizeof(why)) != 0) {
            snprintf(err, errlen, "backend \"%s\": %s", cb->name, why);
            goto out_rt;
        }
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        struct conf_listener *cl = &conf->listeners[i]; /* ours until returned */
        struct rt_listener *l = &rt->listeners[i];
        char why[300];
        l->conf = cl;
        if (resolve(&cl->addr, &l->addr, &l->addrlen, 1, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "listener \"%s\": %s", cl->name, why);
            goto out_rt;
        }
        runtime_format_addr((struct sockaddr *)&l->addr, l->addr_text, sizeof(l->addr_text));
        if (cl->tls_cert[0] && (l->tls = server_tls(cl, why, sizeof(why))) == NULL) {
            snprintf(err, errlen, "listener \"%s\": %s", cl->name, why);
            goto out_rt;
        }
        if (l->tls != NULL)
            listener_cbind(l);
        if (cl->auth_file[0] && load_auth_file(l, why, sizeof(why)) != 0) {
            snprintf(err, errlen, "listener \"%s\": %s", cl->name, why);
            goto out_rt;
        }
        l->metric_slot = metric_slot_listener(cl->name);
        l->primary = &rt->backends[cl->primary];
        l->shadow = cl->shadow >= 0 ? &rt->backends[cl->shadow] : NULL;
        l->ignore_columns = calloc(cl->compare.nignore_columns + 1, sizeof(*l->ignore_columns));
        if (l->ignore_columns == NULL)
            goto out_oom;
        for (size_t c = 0; c < cl->compare.nignore_columns; c++)
            l->ignore_columns[c] = cl->compare.ignore_columns[c];
        if (make_canary(rt, l) != 0)
            goto out_oom;
        /* "0 means the default" for sizes the parser may leave unset */
        if (cl->mirror.queue_bytes == 0)
            cl->mirror.queue_bytes = 4u << 20;
        if (cl->mirror.timeout_ms == 0)
            cl->mirror.timeout_ms = 5000;
    }
    if (conf->limits.mirror_queue_total == 0)
        conf->limits.mirror_queue_total = 256ull << 20;
    rt->write_fns = calloc(conf->nwrite_functions + 1, sizeof(*rt->write_fns));
    if (rt->write_fns == NULL)
        goto out_oom;
    for (size_t i = 0; i < conf->nwrite_functions; i++)
        rt->write_fns[i] = conf->write_functions[i];
    rt->classify.write_fns = rt->write_fns;
    rt->classify.nwrite_fns = conf->nwrite_functions;
    return rt;

out_oom:
    snprintf(err, errlen, "out of memory");

out_rt:
    runtime_unref(rt);
    return NULL;
out_conf:
    snprintf(err, errlen, "out of memory");
    conf_free(conf);
    return NULL;
}

void
runtime_ref(struct runtime *rt)
{
    __atomic_fetch_add(&rt->refs, 1, __ATOMIC_RELAXED);
}

void
runtime_unref(struct runtime *rt)
{
    if (rt == NULL || __atomic_sub_fetch(&rt->refs, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; rt->backends && i < rt->nbackends; i++)
        SSL_CTX_free(rt->backends[i].tls);
    for (size_t i = 0; rt->listeners && i < rt->nlisteners; i++) {
        SSL_CTX_free(rt->listeners[i].tls);
        free(rt->listeners[i].ignore_columns);
        free(rt->listeners[i].canary);
        if (rt->listeners[i].auth != NULL) {
            OPENSSL_cleanse(rt->listeners[i].auth, rt->listeners[i].nauth * sizeof(*rt->listeners[i].auth));
            free(rt->listeners[i].auth);
        }
    }
    free(rt->write_fns);
    if (rt->backends)
        for (size_t i = 0; i < rt->nbackends; i++)
            OPENSSL_cleanse(rt->backends[i].password, sizeof(rt->backends[i].password));
    free(rt->backends);
    free(rt->listeners);
    conf_free(rt->conf);
    free(rt);
}

static int
same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->ss_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port &&
               memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

const struct rt_listener *
runtime_listener_find(const struct runtime *rt, const struct sockaddr_storage *addr)
{
    for (size_t i = 0; i < rt->nlisteners; i++)
        if (same_addr(&rt->listeners[i].addr, addr))
            return &rt->listeners[i];
    return NULL;
}
