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
