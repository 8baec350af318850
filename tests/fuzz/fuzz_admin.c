/*
 * fuzz_admin.c - libFuzzer harness for the admin API's request checks and
 * JSON bodies (admin/admin_req.h): what anyone who reaches the admin port
 * controls, past evhttp's own parsing.
 *
 * Input:  byte selector | text
 *   The text is split at NUL bytes into up to four fields: Host, Origin,
 *   Content-Type, query string (a missing field is an absent header).  Then
 *   the whole text is parsed by jansson as a request body and handed to the
 *   three body readers (weights, mode, cutover/rollback), as the server
 *   does with a PUT or POST.  The selector picks the admin listen address
 *   (loopback, any, a LAN address, a name) and whether server names exist.
 *
 * Checked: no crash or read past the input (every field is an exact-size
 * heap copy); answers are 0/1 or a static reason; an accepted weights body
 * has 1..32 entries with names from the body; an accepted mode is a mode;
 * an accepted operation body has max_pause_ms <= 600000.  A Host accepted
 * as an IP literal must round-trip through admin_req_host_of.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "admin/admin_req.h"
#include "conf/conf.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static char *
field(const uint8_t **p, const uint8_t *end)
{
    if (*p >= end)
        return NULL;
    const uint8_t *nul = memchr(*p, '\0', (size_t)(end - *p));
    size_t n = nul ? (size_t)(nul - *p) : (size_t)(end - *p);
    char *s = malloc(n + 1);
    CHECK(s != NULL);
    memcpy(s, *p, n);
    s[n] = '\0';
    *p += n + (nul != NULL);
    return s;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const listens[] = {"127.0.0.1", "0.0.0.0", "10.1.2.3", "::",
                                          "tandem.internal", ""};
    static const char names[2][CONF_HOST_MAX] = {"tandem.internal", "admin.example"};
    if (size < 1)
        return 0;
    struct conf_addr listen;
    memset(&listen, 0, sizeof(listen));
    strncpy(listen.host, listens[data[0] % 6], sizeof(listen.host) - 1);
    listen.port = 9090;
    size_t nnames = (data[0] >> 3) & 1 ? 2 : 0;

    const uint8_t *p = data + 1, *end = data + size;
    char *host = field(&p, end), *origin = field(&p, end), *ctype = field(&p, end),
         *query = field(&p, end);

    /* Host and Origin */
    const char *why = admin_req_same_site(&listen, names, nnames, host, origin);
    CHECK(why == NULL || why[0] != '\0');
    if (host != NULL) {
        char out[CONF_HOST_MAX];
        size_t hl = strlen(host);
        char *exact = malloc(hl ? hl : 1);
        CHECK(exact != NULL);
        memcpy(exact, host, hl);
        if (admin_req_host_of(exact, hl, out, sizeof(out)) == 0) {
            size_t ol = strlen(out);
            CHECK(ol > 0 && ol < sizeof(out) && ol <= hl);
        }
        free(exact);
    }
    if (why == NULL && origin != NULL)
        CHECK(host != NULL);

    /* Content-Type */
    int js = admin_req_json_type(ctype);
    CHECK(js == 0 || js == 1);
    CHECK(js == 0 || ctype != NULL);

    /* GET /api/shadow/report?... */
    size_t top = 7;
    int fleet = 7;
    const char *qerr = NULL;
    if (admin_req_report_query(query, &top, &fleet, &qerr) == 0)
        CHECK(top <= 100000 && (fleet == 0 || fleet == 1));
    else
        CHECK(qerr != NULL);
    free(host);
    free(origin);
    free(ctype);
    free(query);

    /* the bodies */
    json_error_t jerr;
    char *text = malloc(size - 1 ? size - 1 : 1);
    CHECK(text != NULL);
    memcpy(text, data + 1, size - 1);
    json_t *body = json_loadb(text, size - 1, JSON_DECODE_ANY, &jerr);
    free(text);
    char err[200];
    const char *wnames[ADMIN_REQ_MAX_WEIGHTS];
    long weights[ADMIN_REQ_MAX_WEIGHTS];
    size_t n = 99;
    if (admin_req_weights_body(body, wnames, weights, ADMIN_REQ_MAX_WEIGHTS, &n, err,
                               sizeof(err)) == 0) {
        CHECK(n >= 1 && n <= ADMIN_REQ_MAX_WEIGHTS);
        for (size_t i = 0; i < n; i++)
            CHECK(wnames[i] != NULL && weights[i] <= 1000001 &&
                  json_object_get(body, wnames[i]) != NULL);
    } else {
        CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    }
    int mode = 9;
    if (admin_req_mode_body(body, &mode, err, sizeof(err)) == 0)
        CHECK(mode >= CONF_MODE_PASSTHROUGH && mode <= CONF_MODE_SPLIT);
    uint32_t max_pause = 1;
    int force = 9;
    if (admin_req_operation_body(body, &max_pause, &force, err, sizeof(err)) == 0)
        CHECK(max_pause <= 600000 && (force == 0 || force == 1));
    struct admin_req_verify rv;
    if (admin_req_verify_body(body, &rv, err, sizeof(err)) == 0) {
        CHECK(rv.listener != NULL && strlen(rv.listener) < CONF_NAME_MAX);
        CHECK(rv.dbname == NULL || strlen(rv.dbname) < CONF_NAME_MAX);
        CHECK(rv.ninclude <= ADMIN_REQ_VERIFY_GLOBS && rv.nexclude <= ADMIN_REQ_VERIFY_GLOBS);
        for (size_t i = 0; i < rv.ninclude; i++)
            CHECK(strlen(rv.include[i]) >= 1 && strlen(rv.include[i]) <= ADMIN_REQ_VERIFY_GLOB_MAX);
        for (size_t i = 0; i < rv.nexclude; i++)
            CHECK(strlen(rv.exclude[i]) >= 1 && strlen(rv.exclude[i]) <= ADMIN_REQ_VERIFY_GLOB_MAX);
        CHECK(rv.sample_rate > 0 && rv.sample_rate <= 1 && rv.max_rate >= 0 && rv.max_rate <= 1e9);
        CHECK(rv.chunk <= 10000000 && rv.settle_ms <= 600000 && rv.db <= 1000000);
    } else {
        CHECK(memchr(err, '\0', sizeof(err)) != NULL);
    }
    CHECK(admin_req_verify_body(NULL, &rv, err, sizeof(err)) == 400);
    /* an empty body is no body */
    CHECK(admin_req_operation_body(NULL, &max_pause, &force, err, sizeof(err)) == 0);
    json_decref(body);
    return 0;
}
