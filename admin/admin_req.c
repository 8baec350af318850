/*
 * admin_req.c - the admin API's request checks and bodies (admin_req.h).
 */
#include "admin/admin_req.h"

#include <arpa/inet.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
admin_req_host_of(const char *auth, size_t len, char *out, size_t outlen)
{
    const char *host = auth, *end;
    if (len > 0 && auth[0] == '[') {
        end = memchr(auth, ']', len);
        if (end == NULL)
            return -1;
        host = auth + 1;
        if (end + 1 < auth + len && end[1] != ':')
            return -1;
    } else {
        end = memchr(auth, ':', len);
        if (end == NULL)
            end = auth + len;
    }
    /* end is at ']' (bracketed), at ':' or one past the last byte */
    const char *port = end < auth + len && *end == ']' ? end + 1 : end;
    if (port < auth + len) { /* ":digits" */
        if (*port != ':' || port + 1 == auth + len)
            return -1;
        for (const char *c = port + 1; c < auth + len; c++)
            if (*c < '0' || *c > '9')
                return -1;
    }
    size_t hlen = (size_t)(end - host);
    if (hlen > 1 && host[hlen - 1] == '.' && auth[0] != '[')
        hlen--;
    if (hlen == 0 || hlen >= outlen || memchr(host, '\0', hlen) != NULL)
        return -1;
    memcpy(out, host, hlen);
    out[hlen] = '\0';
    return 0;
}

/* An IP literal cannot be rebound; a name must be one this server knows. */
static int
host_allowed(const struct conf_addr *listen, const char (*names)[CONF_HOST_MAX], size_t nnames,
             const char *host)
{
    unsigned char ip[16], lip[16];
    int family = strchr(host, ':') ? AF_INET6 : AF_INET;

    if (strcasecmp(host, "localhost") == 0 || strcasecmp(host, listen->host) == 0)
        return 1;
    if (inet_pton(family, host, ip) == 1) {
        if (family == AF_INET ? ip[0] == 127 : memcmp(ip, &in6addr_loopback, 16) == 0)
            return 1;
        if (strcmp(listen->host, "0.0.0.0") == 0 || strcmp(listen->host, "::") == 0 ||
            listen->host[0] == '\0')
            return 1;
        return inet_pton(family, listen->host, lip) == 1 &&
               memcmp(ip, lip, family == AF_INET ? 4 : 16) == 0;
    }
    for (size_t i = 0; i < nnames; i++)
        if (strcasecmp(host, names[i]) == 0)
            return 1;
    return 0;
}

const char *
admin_req_same_site(const struct conf_addr *listen, const char (*names)[CONF_HOST_MAX],
                    size_t nnames, const char *host, const char *origin)
{
    char name[CONF_HOST_MAX];

    if (host != NULL && (admin_req_host_of(host, strlen(host), name, sizeof(name)) != 0 ||
                         !host_allowed(listen, names, nnames, name)))
        return "Host is not an address or name of this admin server (admin server_name)";
    if (origin != NULL) {
        const char *auth = strncasecmp(origin, "http://", 7) == 0    ? origin + 7
                           : strncasecmp(origin, "https://", 8) == 0 ? origin + 8
                                                                      : NULL;
        if (host == NULL || auth == NULL || strcasecmp(auth, host) != 0)
            return "cross-origin requests are refused";
    }
    return NULL;
}

int
admin_req_json_type(const char *ct)
{
    size_t n = strlen("application/json");

    while (ct != NULL && (*ct == ' ' || *ct == '\t'))
        ct++;
    return ct != NULL && strncasecmp(ct, "application/json", n) == 0 &&
           (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ' || ct[n] == '\t');
}

int
admin_req_report_query(const char *q, size_t *top, int *fleet, const char **err)
{
    struct evkeyvalq query;
    int rc = 0;

    *top = 0;
    *fleet = 0;
    if (q == NULL || evhttp_parse_query_str(q, &query) != 0)
        return 0;
    const char *v = evhttp_find_header(&query, "top");
    const char *scope = evhttp_find_header(&query, "scope");
    char *end = NULL;
    if (scope != NULL && strcmp(scope, "fleet") != 0 && strcmp(scope, "member") != 0) {
        *err = "scope: expected fleet or member";
        rc = -1;
    } else {
        *fleet = scope != NULL && strcmp(scope, "fleet") == 0;
        if (v != NULL) {
            unsigned long n = strtoul(v, &end, 10);
            if (end == v || *end != '\0' || n > 100000) {
                *err = "top: expected a number 0..100000";
                rc = -1;
            } else {
                *top = n;
            }
        }
    }
    evhttp_clear_headers(&query);
    return rc;
}

int
admin_req_mode_body(const json_t *body, int *mode, char *err, size_t errlen)
{
    const char *name = json_is_object(body) ? json_string_value(json_object_get(body, "mode"))
                                            : NULL;
    *mode = -1;
    for (int m = CONF_MODE_PASSTHROUGH; name && m <= CONF_MODE_SPLIT; m++)
        if (strcmp(name, conf_mode_name((enum conf_mode)m)) == 0)
            *mode = m;
    if (*mode < 0) {
        snprintf(err, errlen, "body: expected {\"mode\": \"passthrough\" | \"shadow\" | \"split\"}");
        return 400;
    }
    return 0;
}

int
admin_req_operation_body(const json_t *body, uint32_t *max_pause_ms, int *force, char *err,
                         size_t errlen)
{
    *max_pause_ms = 0;
    *force = 0;
    if (body == NULL)
        return 0;
    json_t *mp = json_object_get(body, "max_pause_ms"), *f = json_object_get(body, "force");
    if (!json_is_object(body) || (mp && !json_is_integer(mp)) || (f && !json_is_boolean(f))) {
        snprintf(err, errlen, "body: expected {\"max_pause_ms\": integer, \"force\": boolean}");
        return 400;
    }
    json_int_t max_pause = mp ? json_integer_value(mp) : 0;
    if (max_pause < 0 || max_pause > 600000) {
        snprintf(err, errlen, "max_pause_ms: expected 1..600000");
        return 400;
    }
    *max_pause_ms = (uint32_t)max_pause;
    *force = f ? json_is_true(f) : 0;
    return 0;
}

int
admin_req_weights_body(json_t *body, const char **names, long *weights, size_t cap, size_t *n,
                       char *err, size_t errlen)
{
    const char *key;
    json_t *value;

    *n = 0;
    if (!json_is_object(body) || json_object_size(body) == 0) {
        snprintf(err, errlen, "body: expected a JSON object of backend weights, "
                              "like {\"blue\":90,\"green\":10}");
        return 400;
    }
    json_object_foreach(body, key, value) {
        if (*n == cap) {
            snprintf(err, errlen, "body: too many backends");
            return 400;
        }
        if (!json_is_integer(value)) {
            snprintf(err, errlen, "weight of \"%.63s\": expected an integer", key);
            return 400;
        }
        json_int_t w = json_integer_value(value);
        names[*n] = key;
        weights[(*n)++] = w > 1000000 ? 1000001 : (long)w;
    }
    return 0;
}

/* A list of globs: an array of 1..255-character strings, at most ADMIN_REQ_VERIFY_GLOBS. */
static int
verify_globs(const json_t *v, const char *name, const char **out, size_t *n, char *err,
             size_t errlen)
{
    size_t i;
    json_t *g;

    if (!json_is_array(v) || json_array_size(v) > ADMIN_REQ_VERIFY_GLOBS) {
        snprintf(err, errlen, "%s: expected an array of at most %d globs", name,
                 ADMIN_REQ_VERIFY_GLOBS);
        return 400;
    }
    json_array_foreach(v, i, g) {
        size_t len = json_is_string(g) ? json_string_length(g) : 0;
        if (len == 0 || len > ADMIN_REQ_VERIFY_GLOB_MAX ||
            strlen(json_string_value(g)) != len) {
            snprintf(err, errlen, "%s[%zu]: expected a glob of 1..%d characters", name, i,
                     ADMIN_REQ_VERIFY_GLOB_MAX);
            return 400;
        }
        out[(*n)++] = json_string_value(g);
    }
    return 0;
}

/* An integer member in lo..hi into *out; absent leaves *out. */
static int
verify_int(const json_t *v, const char *name, int64_t lo, int64_t hi, int64_t *out, char *err,
           size_t errlen)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi) {
        snprintf(err, errlen, "%s: expected an integer %lld..%lld", name, (long long)lo,
                 (long long)hi);
        return 400;
    }
    *out = json_integer_value(v);
    return 0;
}

/* A name: a string of 1..CONF_NAME_MAX-1 characters without NUL. */
static int
verify_name(const json_t *v, const char *name, const char **out, char *err, size_t errlen)
{
    size_t len = json_is_string(v) ? json_string_length(v) : 0;
    if (len == 0 || len >= CONF_NAME_MAX || strlen(json_string_value(v)) != len) {
        snprintf(err, errlen, "%s: expected a string of 1..%d characters", name,
                 CONF_NAME_MAX - 1);
        return 400;
    }
    *out = json_string_value(v);
    return 0;
}

int
admin_req_verify_body(const json_t *body, struct admin_req_verify *out, char *err,
                      size_t errlen)
{
    const char *key;
    json_t *v;
    int64_t n;

    memset(out, 0, sizeof(*out));
    out->db = -1;
    out->sample_rate = 1.0;
    out->settle_ms = out->ttl_tolerance_ms = -1;
    if (!json_is_object(body)) {
        snprintf(err, errlen, "body: expected a JSON object like {\"listener\": \"pg\", "
                              "\"dbname\": \"app\"}");
        return 400;
    }
    json_object_foreach((json_t *)body, key, v) {
        int rc = 0;
        if (strcmp(key, "listener") == 0) {
            rc = verify_name(v, key, &out->listener, err, errlen);
        } else if (strcmp(key, "dbname") == 0) {
            rc = verify_name(v, key, &out->dbname, err, errlen);
        } else if (strcmp(key, "db") == 0) {
            if ((rc = verify_int(v, key, 0, 1000000, &n, err, errlen)) == 0)
                out->db = (long)n;
        } else if (strcmp(key, "tables") == 0) {
            rc = verify_globs(v, key, out->include, &out->ninclude, err, errlen);
        } else if (strcmp(key, "exclude") == 0) {
            rc = verify_globs(v, key, out->exclude, &out->nexclude, err, errlen);
        } else if (strcmp(key, "sample_rate") == 0) {
            double r = json_is_number(v) ? json_number_value(v) : -1;
            if (!(r > 0 && r <= 1)) {
                snprintf(err, errlen, "sample_rate: expected a number in (0, 1], e.g. 0.1");
                rc = 400;
            }
            out->sample_rate = r;
        } else if (strcmp(key, "max_rate") == 0) {
            double r = json_is_number(v) ? json_number_value(v) : -1;
            if (!(r >= 0 && r <= 1e9)) {
                snprintf(err, errlen, "max_rate: expected rows per second, 0..1000000000 "
                                      "(0: unbounded)");
                rc = 400;
            }
            out->max_rate = r;
        } else if (strcmp(key, "chunk") == 0) {
            if ((rc = verify_int(v, key, 1, 10000000, &n, err, errlen)) == 0)
                out->chunk = (uint64_t)n;
        } else if (strcmp(key, "settle_ms") == 0) {
            rc = verify_int(v, key, 0, 600000, &out->settle_ms, err, errlen);
        } else if (strcmp(key, "ttl_tolerance_ms") == 0) {
            rc = verify_int(v, key, 0, 86400000, &out->ttl_tolerance_ms, err, errlen);
        } else {
            snprintf(err, errlen, "body: unknown key \"%.64s\"", key);
            rc = 400;
        }
        if (rc != 0)
            return rc;
    }
    if (out->listener == NULL) {
        snprintf(err, errlen, "listener: required (the listener whose primary and shadow are "
                              "compared)");
        return 400;
    }
    return 0;
}
