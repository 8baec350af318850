/*
 * admin_req.h - what the admin API checks in a request and reads from its
 * body, as pure functions: no socket, no evhttp request, no log, so the
 * same code the server runs is unit-tested and fuzzed (tests/fuzz/fuzz_admin.c).
 *
 * Every input here comes from whoever reached the admin port: a header's
 * value, a query string, a JSON body already parsed by jansson.  None is
 * trusted; each function answers "accepted" or says why not.
 */
#ifndef TANDEM_ADMIN_REQ_H
#define TANDEM_ADMIN_REQ_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

/* Longest backend name list a weights body may carry (one per backend). */
#define ADMIN_REQ_MAX_WEIGHTS 32

/*
 * admin_req_host_of - the host of an authority "host[:port]" or
 * "[v6][:port]" (AUTH, LEN bytes, no NUL needed) into out (NUL-terminated),
 * brackets and port cut, one trailing dot of a name dropped.  0, or -1 when
 * it is empty, too long for outlen, or not of that shape.
 */
int admin_req_host_of(const char *auth, size_t len, char *out, size_t outlen);

/*
 * admin_req_same_site - may a browser's request with these Host and Origin
 * headers (either NULL when absent) go on?  Host must name this server: an
 * IP literal that is loopback or the listen address (any IP when it listens
 * on every address), "localhost", the listen host, or one of names (a DNS
 * rebinding attack arrives under a name of the attacker's).  Origin, when
 * present, must be http:// or https:// followed by exactly the Host.
 * NULL when it may; else the reason (a static string).
 */
const char *admin_req_same_site(const struct conf_addr *listen, const char (*names)[CONF_HOST_MAX],
                                size_t nnames, const char *host, const char *origin);

/*
 * admin_req_json_type - 1 when a Content-Type value (NULL: absent) is
 * application/json, parameters allowed after ';' or blanks, else 0.
 */
int admin_req_json_type(const char *content_type);

/*
 * admin_req_report_query - GET /api/shadow/report's query string (NULL:
 * none): top=N (0..100000; 0 when absent) and scope=fleet|member.  0, or -1
 * with *err set to the message for a 400.
 */
int admin_req_report_query(const char *query, size_t *top, int *fleet, const char **err);

/*
 * The bodies of the mutations, parsed by jansson (NULL: an empty body).
 * Each returns 0 with its values, or 400 with err filled for the reply.
 */
/* {"mode": "passthrough" | "shadow" | "split"} -> *mode (enum conf_mode) */
int admin_req_mode_body(const json_t *body, int *mode, char *err, size_t errlen);
/* {"max_pause_ms": 0..600000, "force": bool}, both optional; absent: 0 and 0 */
int admin_req_operation_body(const json_t *body, uint32_t *max_pause_ms, int *force, char *err,
                             size_t errlen);
/*
 * {"blue": 90, "green": 10}: names[i] point into body (valid while it
 * lives), weights above 1000000 become 1000001 so the range check that
 * follows refuses them without overflow.  At most cap entries.
 */
int admin_req_weights_body(json_t *body, const char **names, long *weights, size_t cap, size_t *n,
                           char *err, size_t errlen);

/* POST /api/verify's body (admin_req_verify_body). */
#define ADMIN_REQ_VERIFY_GLOBS 64   /* tables, exclude: entries each */
#define ADMIN_REQ_VERIFY_GLOB_MAX 255

struct admin_req_verify {
    const char *listener;          /* required; points into the body */
    const char *dbname;            /* NULL when absent (required for a postgres listener) */
    long db;                       /* Redis database number; -1 when absent */
    const char *include[ADMIN_REQ_VERIFY_GLOBS], *exclude[ADMIN_REQ_VERIFY_GLOBS];
    size_t ninclude, nexclude;
    double sample_rate;            /* (0, 1]; 1 when absent */
    double max_rate;               /* rows (keys) per second, 0..1e9; 0 (unbounded) when absent */
    uint64_t chunk;                /* 1..10000000; 0 (the default) when absent */
    int64_t settle_ms;             /* 0..600000; -1 when absent */
    int64_t ttl_tolerance_ms;      /* 0..86400000; -1 when absent */
};

/*
 * {"listener": "pg", "dbname": "app", "db": 0, "tables": ["orders*"],
 *  "exclude": [...], "sample_rate": 0.1, "max_rate": 50000, "chunk": 10000,
 *  "settle_ms": 1000, "ttl_tolerance_ms": 2000}: only "listener" required,
 * no other key accepted.  Strings point into body.
 */
int admin_req_verify_body(const json_t *body, struct admin_req_verify *out, char *err,
                          size_t errlen);

#endif
