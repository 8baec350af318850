/* conf_value.c - the value syntaxes of the configuration; see conf_value.h. */
#include <stddef.h>
#include <string.h>
#include <strings.h>

#include "conf/conf_value.h"

/*
 * Leading decimal digits of S into *out; *end is where they stopped.
 * BAD without a digit, RANGE past UINT64_MAX.
 */
static enum conf_value_rc
value_digits(const char *s, uint64_t *out, const char **end)
{
    uint64_t n = 0;
    const char *p = s;

    *end = s;
    if (*p < '0' || *p > '9')
        return CONF_VALUE_BAD;
    for (; *p >= '0' && *p <= '9'; p++) {
        unsigned d = (unsigned)(*p - '0');
        if (n > (UINT64_MAX - d) / 10) {
            /* Still a number, just too big: skip the rest of its digits. */
            while (*p >= '0' && *p <= '9')
                p++;
            *end = p;
            return CONF_VALUE_RANGE;
        }
        n = n * 10 + d;
    }
    *out = n;
    *end = p;
    return CONF_VALUE_OK;
}

/* N * MULT into *out, or RANGE. */
static enum conf_value_rc
value_scale(uint64_t n, uint64_t mult, uint64_t *out)
{
    if (mult != 0 && n > UINT64_MAX / mult)
        return CONF_VALUE_RANGE;
    *out = n * mult;
    return CONF_VALUE_OK;
}

enum conf_value_rc
conf_value_number(const char *s, uint64_t *out)
{
    const char *end;
    uint64_t n;
    enum conf_value_rc rc = value_digits(s, &n, &end);

    if (*end != '\0')
        return CONF_VALUE_BAD;
    if (rc == CONF_VALUE_OK)
        *out = n;
    return rc;
}

struct value_unit {
    const char *suffix;
    uint64_t mult;
};

/* Suffix after the digits -> multiplier, or BAD. */
static enum conf_value_rc
value_with_unit(const char *s, const struct value_unit *units, uint64_t *out)
{
    const char *end;
    uint64_t n = 0;
    enum conf_value_rc rc = value_digits(s, &n, &end);

    if (rc == CONF_VALUE_BAD)
        return rc;
    for (const struct value_unit *u = units; u->suffix != NULL; u++) {
        if (strcasecmp(end, u->suffix) != 0)
            continue;
        if (rc != CONF_VALUE_OK)
            return rc;
        return value_scale(n, u->mult, out);
    }
    return CONF_VALUE_BAD;
}

enum conf_value_rc
conf_value_size(const char *s, uint64_t *out)
{
    /* clang-format off */
    static const struct value_unit units[] = {
        {"", 1},
        {"b", 1},
        {"k", 1ull << 10},
        {"kb", 1ull << 10},
        {"m", 1ull << 20},
        {"mb", 1ull << 20},
        {"g", 1ull << 30},
        {"gb", 1ull << 30},
        {NULL, 0},
    };
    /* clang-format on */
    return value_with_unit(s, units, out);
}

enum conf_value_rc
conf_value_duration_ms(const char *s, uint64_t *out)
{
    /* clang-format off */
    static const struct value_unit units[] = {
        {"ms", 1},
        {"s", 1000},
        {"m", 60 * 1000},
        {"h", 60 * 60 * 1000},
        {NULL, 0},
    };
    /* clang-format on */
    if (strcmp(s, "0") == 0) {
        *out = 0; /* zero is zero in any unit: "read_your_writes 0;" */
        return CONF_VALUE_OK;
    }
    return value_with_unit(s, units, out);
}

enum conf_value_rc
conf_value_percent(const char *s, uint32_t *basis_points)
{
    const char *p;
    uint64_t whole = 0, frac = 0;
    enum conf_value_rc rc = value_digits(s, &whole, &p);

    if (rc == CONF_VALUE_BAD)
        return rc;
    if (*p == '.') {
        p++;
        /* One or two decimals: basis points are the finest grain kept. */
        if (*p < '0' || *p > '9')
            return CONF_VALUE_BAD;
        frac = (uint64_t)(*p++ - '0') * 10;
        if (*p >= '0' && *p <= '9')
            frac += (uint64_t)(*p++ - '0');
    }
    if (p[0] != '%' || p[1] != '\0')
        return CONF_VALUE_BAD;
    if (rc != CONF_VALUE_OK || whole > 100 || (whole == 100 && frac > 0))
        return CONF_VALUE_RANGE;
    *basis_points = (uint32_t)(whole * 100 + frac);
    return CONF_VALUE_OK;
}

enum conf_value_rc
conf_value_bool(const char *s, int *out)
{
    if (strcmp(s, "on") == 0) {
        *out = 1;
        return CONF_VALUE_OK;
    }
    if (strcmp(s, "off") == 0) {
        *out = 0;
        return CONF_VALUE_OK;
    }
    return CONF_VALUE_BAD;
}

static int
value_host_byte(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

static int
value_v6_byte(char c)
{
    /* Hex digits, ':' and '.' (embedded IPv4); after '%' a zone name. */
    return value_host_byte(c) || c == ':' || c == '%';
}

enum conf_value_rc
conf_value_addr(const char *s, struct conf_addr *out)
{
    const char *host, *colon;
    size_t hostlen;
    uint64_t port;

    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':')
            return CONF_VALUE_BAD;
        host = s + 1;
        hostlen = (size_t)(close - host);
        colon = close + 1;
        for (size_t i = 0; i < hostlen; i++)
            if (!value_v6_byte(host[i]))
                return CONF_VALUE_BAD;
        /* A bracket is for an IPv6 literal; it has at least one ':'. */
        if (memchr(host, ':', hostlen) == NULL)
            return CONF_VALUE_BAD;
    } else {
        /* Unbracketed, the host has no ':' - "::1:80" is ambiguous. */
        colon = strchr(s, ':');
        if (colon == NULL || strchr(colon + 1, ':') != NULL)
            return CONF_VALUE_BAD;
        host = s;
        hostlen = (size_t)(colon - s);
        for (size_t i = 0; i < hostlen; i++)
            if (!value_host_byte(host[i]))
                return CONF_VALUE_BAD;
    }
    if (hostlen == 0 || hostlen >= sizeof(out->host))
        return CONF_VALUE_BAD;
    if (conf_value_number(colon + 1, &port) != CONF_VALUE_OK || port < 1 || port > 65535)
        return CONF_VALUE_BAD;
    memset(out->host, 0, sizeof(out->host));
    memcpy(out->host, host, hostlen);
    out->port = (uint16_t)port;
    return CONF_VALUE_OK;
}

enum conf_value_rc
conf_value_name(const char *s)
{
    size_t len = strlen(s);

    if (len == 0 || len >= CONF_NAME_MAX)
        return CONF_VALUE_BAD;
    for (size_t i = 0; i < len; i++)
        if (!value_host_byte(s[i]))
            return CONF_VALUE_BAD;
    return CONF_VALUE_OK;
}

int
conf_addr_is_loopback(const struct conf_addr *a)
{
    return strcmp(a->host, "localhost") == 0 || strncmp(a->host, "127.", 4) == 0 ||
           strcmp(a->host, "::1") == 0;
}

enum conf_value_rc
conf_value_redis_url(const char *s, struct conf_addr *addr, uint32_t *db, int *tls)
{
    static const char scheme[] = "redis://", tls_scheme[] = "rediss://";
    char hostport[CONF_HOST_MAX + 16];
    const char *rest, *slash;
    uint64_t n = 0;

    if (strncmp(s, scheme, sizeof(scheme) - 1) == 0) {
        rest = s + sizeof(scheme) - 1;
        *tls = 0;
    } else if (strncmp(s, tls_scheme, sizeof(tls_scheme) - 1) == 0) {
        rest = s + sizeof(tls_scheme) - 1;
        *tls = 1;
    } else {
        return CONF_VALUE_BAD;
    }
    /* user:password@ would put a secret where logs and ps can see it */
    if (strchr(rest, '@') != NULL)
        return CONF_VALUE_BAD;
    slash = strchr(rest, '/');
    size_t len = slash ? (size_t)(slash - rest) : strlen(rest);
    if (len == 0 || len >= sizeof(hostport))
        return CONF_VALUE_BAD;
    memcpy(hostport, rest, len);
    hostport[len] = '\0';
    if (slash != NULL && (conf_value_number(slash + 1, &n) != CONF_VALUE_OK || n > 15))
        return CONF_VALUE_BAD;
    if (conf_value_addr(hostport, addr) != CONF_VALUE_OK)
        return CONF_VALUE_BAD;
    *db = (uint32_t)n;
    return CONF_VALUE_OK;
}
