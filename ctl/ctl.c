/*
 * ctl.c - `tandem ctl` (see ctl.h).
 *
 * A command line tool, not part of the proxy's event loop: it speaks
 * HTTP/1.1 over one blocking socket per call (Connection: close, bounded by
 * a timeout), and formats the JSON answers with jansson.
 */
#include "ctl/ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/conf_value.h"
#include "admin/admin_token.h"

#define CTL_DEFAULT_ADMIN "127.0.0.1:9090"
#define CTL_REPLY_MAX (64u << 20)  /* a report of every statement stays far below */
#define CTL_DEFAULT_TOP 20         /* statements in the report's table */
#define CTL_STATEMENT_WIDTH 70     /* statement text in tables */
#define CTL_POLL_MS 200            /* while waiting for an operation */

struct ctl {
    struct conf_addr admin;
    char admin_text[CONF_HOST_MAX + 16];
    char token[ADMIN_TOKEN_MAX + 1]; /* "" without a token file */
    int json;
    uint64_t timeout_ms;
};

struct http_reply {
    int status;
    char *body; /* NUL-terminated; owned */
    size_t len;
};

static void
usage(FILE *out)
{
    fputs("usage: tandem ctl [--admin HOST:PORT] [--token-file F] [--json] [--timeout DUR] COMMAND\n"
          "\n"
          "  status                          roles, mode, weights, backends, guards, operation\n"
          "  weights NAME=W [NAME=W ...]     read weights, e.g. weights blue=90 green=10\n"
          "  mode passthrough|shadow|split   switch the mode\n"
          "  cutover [--max-pause DUR] [--force] [--no-wait]\n"
          "                                  swap primary and shadow with no lost write\n"
          "  rollback [--max-pause DUR] [--force] [--no-wait]\n"
          "                                  reads back to the primary; undo a cutover\n"
          "  operation ID                    one cutover or rollback operation\n"
          "  report [--top N] [--fleet]      the shadow-diff report (N statements, default 20);\n"
          "                                  --fleet: every member's of the fleet, merged\n"
          "  fleet                           the fleet's members and its operation\n"
          "  verify --listener L [--dbname D | --db N] [--table GLOB]... [--exclude GLOB]...\n"
          "         [--sample-rate PCT] [--max-rate N] [--chunk N] [--settle DUR] [--wait]\n"
          "                                  compare the primary's and the shadow's data, run\n"
          "                                  inside tandem; --wait: follow it (exit 0 equal,\n"
          "                                  1 different, 2 error or cancelled)\n"
          "  verify ID [--cancel]            one verify run (the latest is kept); cancel it\n"
          "  resynced LISTENER               the shadow of LISTENER was resynchronized: clear\n"
          "                                  its diverged flag (kept across restarts)\n"
          "\n"
          "The admin address defaults to $TANDEM_ADMIN, else " CTL_DEFAULT_ADMIN "; the token\n"
          "file to $TANDEM_TOKEN_FILE (sent on every call: a tandem with a token_file wants\n"
          "one for reads too, its read_token_file's being enough for them).  --json prints\n"
          "the server's JSON.  Exit status: 0 done,\n"
          "1 refused, failed or unreachable, 2 bad usage.\n",
          out);
}

static void
vsay(const char *fmt, va_list ap)
{
    fputs("tandem ctl: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}

/* fail - print "tandem ctl: MESSAGE"; the exit status 1 (refused, failed, unreachable). */
static int fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* bad_usage - the same, for a command line we cannot use: exit status 2. */
static int bad_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int
fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    return 1;
}

static int
bad_usage(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsay(fmt, ap);
    va_end(ap);
    return 2;
}

/* ---- HTTP over one blocking socket ------------------------------------ */

/* connect_timeout - a connected socket, or -1 with the reason in err. */
static int
connect_timeout(const struct ctl *c, char *err, size_t errlen)
{
    char port[8];
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int fd = -1, rc;

    snprintf(port, sizeof(port), "%u", c->admin.port);
    rc = getaddrinfo(c->admin.host, port, &hints, &res);
    if (rc != 0) {
        snprintf(err, errlen, "%s", gai_strerror(rc));
        return -1;
    }
    snprintf(err, errlen, "no address");
    for (ai = res; ai != NULL; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            snprintf(err, errlen, "%s", strerror(errno));
            continue;
        }
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_NONBLOCK);
        rc = connect(fd, ai->ai_addr, ai->ai_addrlen);
        if (rc != 0 && errno == EINPROGRESS) {
            struct pollfd p = {.fd = fd, .events = POLLOUT};
            int soerr = 0;
            socklen_t slen = sizeof(soerr);
            rc = poll(&p, 1, (int)c->timeout_ms);
            if (rc == 0)
                errno = ETIMEDOUT;
            else if (rc > 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &slen) == 0)
                errno = soerr;
            rc = (rc > 0 && soerr == 0) ? 0 : -1;
        }
        if (rc == 0) {
            struct timeval tv = {.tv_sec = (time_t)(c->timeout_ms / 1000),
                                 .tv_usec = (suseconds_t)(c->timeout_ms % 1000) * 1000};
            fcntl(fd, F_SETFL, flags);
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
            break;
        }
        snprintf(err, errlen, "%s", strerror(errno));
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int
write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * parse_reply - split RAW[0..len) (a whole HTTP/1.x answer) into status and
 * body (moved to the front of raw).  -1 when it is not an HTTP answer.
 */
static int
parse_reply(char *raw, size_t len, struct http_reply *r)
{
    char *end = memmem(raw, len, "\r\n\r\n", 4);
    int status;

    if (end == NULL || sscanf(raw, "HTTP/1.%*d %3d", &status) != 1)
        return -1;
    *end = '\0';
    size_t body_len = len - (size_t)(end + 4 - raw);
    /* headers: only Content-Length matters (evhttp never chunks these answers) */
    for (char *h = strstr(raw, "\r\n"); h != NULL; h = strstr(h + 2, "\r\n")) {
        if (strncasecmp(h + 2, "Content-Length:", 15) == 0) {
            unsigned long long n = strtoull(h + 17, NULL, 10);
            if (n < body_len)
                body_len = (size_t)n;
        } else if (strncasecmp(h + 2, "Transfer-Encoding:", 18) == 0) {
            return -1;
        }
    }
    memmove(raw, end + 4, body_len);
    raw[body_len] = '\0';
    r->status = status;
    r->body = raw;
    r->len = body_len;
    return 0;
}

/*
 * http_call - METHOD PATH with BODY (NULL: none) to the admin API.  0 with
 * the answer in *r (whatever its status; the caller frees r->body); -1 with
 * a message printed when there is no HTTP answer.
 */
static int
http_call(const struct ctl *c, const char *method, const char *path, const char *body,
          struct http_reply *r)
{
    char err[256], *req = NULL, *raw = NULL;
    size_t reqlen = 0, len = 0, cap = 0;
    int fd = connect_timeout(c, err, sizeof(err));

    if (fd < 0) {
        fail("cannot reach the admin API at %s: %s (is tandem running with admin { listen ...; }?"
             " set --admin HOST:PORT or TANDEM_ADMIN)",
             c->admin_text, err);
        return -1;
    }
    FILE *out = open_memstream(&req, &reqlen);
    if (out == NULL)
        goto out_oom;
    fprintf(out, "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tandem-ctl/%s\r\n"
                 "Accept: application/json\r\nConnection: close\r\n",
            method, path, c->admin_text, TANDEM_VERSION);
    if (c->token[0] != '\0')
        fprintf(out, "Authorization: Bearer %s\r\n", c->token);
    if (body != NULL)
        fprintf(out, "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                strlen(body), body);
    else
        fputs("\r\n", out);
    if (fclose(out) != 0)
        goto out_oom;
    if (write_all(fd, req, reqlen) != 0) {
        fail("%s %s: cannot send to %s: %s", method, path, c->admin_text, strerror(errno));
        goto out_close;
    }
    for (;;) {
        if (cap - len < 4096) {
            cap = cap ? cap * 2 : 16384;
            char *bigger = cap <= CTL_REPLY_MAX ? realloc(raw, cap + 1) : NULL;
            if (bigger == NULL) {
                fail("%s %s: answer too large", method, path);
                goto out_close;
            }
            raw = bigger;
        }
        ssize_t n = recv(fd, raw + len, cap - len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            fail("%s %s: no answer from %s: %s", method, path, c->admin_text,
                 errno == EAGAIN ? "timed out" : strerror(errno));
            goto out_close;
        }
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (raw == NULL || parse_reply(raw, len, r) != 0) {
        fail("%s %s: %s did not answer in HTTP", method, path, c->admin_text);
        goto out_close;
    }
    free(req);
    close(fd);
    return 0;

out_oom:
    fail("out of memory");
out_close:
    free(req);
    free(raw);
    close(fd);
    return -1;
}

/*
 * api - call and parse: the JSON answer of a 2xx into *doc (the caller
 * decrefs), and the raw text printed first with --json.  1 (exit status)
 * with the server's message when it refused.
 */
static int
api(const struct ctl *c, const char *method, const char *path, const char *body, json_t **doc)
{
    struct http_reply r = {0};
    json_error_t jerr;

    *doc = NULL;
    if (http_call(c, method, path, body, &r) != 0)
        return 1;
    json_t *parsed = json_loadb(r.body, r.len, 0, &jerr);
    if (r.status < 200 || r.status > 299) {
        const char *msg = json_string_value(json_object_get(parsed, "error"));
        if (r.status == 401 && msg == NULL)
            msg = "a token is needed";
        fail("%s %s: %d %s%s", method, path, r.status, msg ? msg : r.body,
             r.status == 401   ? " (give it with --token-file F or TANDEM_TOKEN_FILE)"
             : r.status == 404 ? " (does this tandem's version have it? tandem --version)"
                               : "");
        json_decref(parsed);
        free(r.body);
        return 1;
    }
    if (parsed == NULL) {
        fail("%s %s: the answer is not JSON: %s", method, path, jerr.text);
        free(r.body);
        return 1;
    }
    if (c->json)
        printf("%s%s", r.body, r.len > 0 && r.body[r.len - 1] == '\n' ? "" : "\n");
    free(r.body);
    *doc = parsed;
    return 0;
}

/* api_json - api() with a JSON body (taken, NULL: out of memory), sent compact. */
static int
api_json(const struct ctl *c, const char *method, const char *path, json_t *body, json_t **doc)
{
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    int rc = text ? api(c, method, path, text, doc) : fail("out of memory");
    free(text);
    return rc;
}

/* ---- tables ------------------------------------------------------------- */

#define TABLE_COLS_MAX 16

struct table {
    size_t ncols, nrows, cap;
    char **cells; /* nrows * ncols, owned */
};

/* table_add - one row of t->ncols cells (NULL prints as "-"). */
static void
table_add(struct table *t, ...)
{
    va_list ap;

    if (t->nrows == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        char **bigger = realloc(t->cells, cap * t->ncols * sizeof(*bigger));
        if (bigger == NULL)
            return; /* a row short on out of memory: this is a display */
        t->cells = bigger;
        t->cap = cap;
    }
    va_start(ap, t);
    for (size_t i = 0; i < t->ncols; i++) {
        const char *s = va_arg(ap, const char *);
        t->cells[t->nrows * t->ncols + i] = strdup(s ? s : "-");
    }
    va_end(ap);
    t->nrows++;
}

static void
table_free(struct table *t)
{
    for (size_t k = 0; k < t->nrows * t->ncols; k++)
        free(t->cells[k]);
    free(t->cells);
    t->cells = NULL;
    t->nrows = t->cap = 0;
}

/* table_print - columns padded to their widest cell; frees the table. */
static void
table_print(struct table *t)
{
    size_t width[TABLE_COLS_MAX] = {0};

    for (size_t r = 0; r < t->nrows; r++)
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            size_t w = s ? strlen(s) : 0;
            if (w > width[i])
                width[i] = w;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t i = 0; i < t->ncols; i++) {
            const char *s = t->cells[r * t->ncols + i];
            if (i + 1 < t->ncols)
                printf("%-*s  ", (int)width[i], s ? s : "");
            else
                printf("%s\n", s ? s : "");
        }
    }
    table_free(t);
}

/* ---- JSON fields, tolerant of what an older or newer server leaves out ---- */

/* jtext - a field as text into buf: strings as they are, numbers, booleans yes/no, else "-". */
static const char *
jtext(json_t *obj, const char *key, char *buf, size_t len)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_string(v))
        return json_string_value(v);
    if (json_is_integer(v))
        snprintf(buf, len, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
    else if (json_is_real(v))
        snprintf(buf, len, "%.3g", json_real_value(v));
    else if (json_is_boolean(v))
        snprintf(buf, len, "%s", json_is_true(v) ? "yes" : "no");
    else
        return "-";
    return buf;
}

/* jfmt - a number field through fmt (times scale), "-" when absent or null. */
static const char *
jfmt(json_t *obj, const char *key, const char *fmt, double scale, char *buf, size_t len)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_number(v))
        return "-";
    snprintf(buf, len, fmt, json_number_value(v) * scale);
    return buf;
}

static json_int_t
jint(json_t *obj, const char *key)
{
    json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? (json_int_t)json_number_value(v) : 0;
}

/* clip - s cut to width characters (bytes; the statements are mostly ASCII) with "...". */
static const char *
clip(const char *s, size_t width, char *buf, size_t len)
{
    if (s == NULL)
        return "-";
    size_t n = strlen(s);
    if (n <= width || width < 4 || len <= width)
        return s;
    snprintf(buf, len, "%.*s...", (int)(width - 3), s);
    for (char *p = buf; *p; p++)
        if (*p == '\n' || *p == '\t')
            *p = ' ';
    return buf;
}

static void
print_duration(const char *label, json_int_t s)
{
    if (s >= 3600)
        printf("%s%lldh%02lldm", label, (long long)(s / 3600), (long long)(s % 3600 / 60));
    else if (s >= 60)
        printf("%s%lldm%02llds", label, (long long)(s / 60), (long long)(s % 60));
    else
        printf("%s%llds", label, (long long)s);
}

static void
print_operation(json_t *op)
{
    char b[4][64];
    const char *reason = json_string_value(json_object_get(op, "reason"));

    if (!json_is_object(op)) {
        printf("operation: none\n");
        return;
    }
    printf("operation %s: %s %s", jtext(op, "id", b[0], 64), jtext(op, "type", b[1], 64),
           jtext(op, "state", b[2], 64));
    if (reason != NULL && reason[0] != '\0')
        printf(" (%s)", reason);
    printf("\n  created %s", jtext(op, "created", b[3], 64));
    if (json_is_string(json_object_get(op, "started")))
        printf("  started %s", json_string_value(json_object_get(op, "started")));
    if (json_is_string(json_object_get(op, "finished")))
        printf("  finished %s", json_string_value(json_object_get(op, "finished")));
    printf("\n");
}

/* ---- commands ----------------------------------------------------------- */

/* role_of - "primary" / "shadow" of backend NAME from the status, or NULL. */
static const char *
role_of(json_t *st, const char *name)
{
    json_t *roles = json_object_get(st, "roles"), *l;
    const char *key;
    json_t *v;
    size_t i;

    json_object_foreach(roles, key, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), name) == 0)
            return key;
    }
    json_array_foreach(json_object_get(st, "listeners"), i, l) {
        if (json_is_string(json_object_get(l, "primary")) &&
            strcmp(json_string_value(json_object_get(l, "primary")), name) == 0)
            return "primary";
        if (json_is_string(json_object_get(l, "shadow")) &&
            strcmp(json_string_value(json_object_get(l, "shadow")), name) == 0)
            return "shadow";
    }
    return NULL;
}

static void
add_guards(struct table *t, json_t *guards, const char *listener)
{
    char b[3][64];
    size_t i;
    json_t *g;

    json_array_foreach(guards, i, g) {
        table_add(t, jtext(g, "name", b[0], 64), listener, jtext(g, "state", b[1], 64),
                  jtext(g, "trips", b[2], 64), json_string_value(json_object_get(g, "reason")));
    }
}

static void
print_status(json_t *st)
{
    char b[12][64];
    json_t *l, *be, *weights = json_object_get(st, "weights");
    size_t i, k;

    printf("tandem %s", jtext(st, "version", b[0], 64));
    print_duration(", up ", jint(st, "uptime_seconds"));
    printf(", %s workers", jtext(st, "workers", b[1], 64));
    if (json_is_true(json_object_get(st, "draining")))
        printf(", DRAINING");
    printf("\n");
    if (json_is_string(json_object_get(st, "mode")))
        printf("mode %s", json_string_value(json_object_get(st, "mode")));
    json_t *roles = json_object_get(st, "roles");
    if (json_is_object(roles)) {
        printf("%sprimary %s, shadow %s", json_is_string(json_object_get(st, "mode")) ? "; " : "",
               jtext(roles, "primary", b[2], 64), jtext(roles, "shadow", b[3], 64));
        /* the epoch of the listener those roles are (the first with a shadow) */
        json_array_foreach(json_object_get(st, "listeners"), i, l) {
            if (!json_is_string(json_object_get(l, "shadow")))
                continue;
            if (json_is_integer(json_object_get(l, "epoch")))
                printf(" (epoch %s)", jtext(l, "epoch", b[4], 64));
            break;
        }
    }
    if (json_is_string(json_object_get(st, "mode")) || json_is_object(roles))
        printf("\n");
    if (json_object_get(st, "operation") != NULL)
        print_operation(json_object_get(st, "operation"));

    struct table t = {.ncols = 10};
    table_add(&t, "LISTENER", "LISTEN", "MODE", "PRIMARY", "SHADOW", "CLIENTS", "VALIDATION",
              "SHADOW/PRIMARY", "LAG", "DETACHED");
    json_array_foreach(json_object_get(st, "listeners"), i, l) {
        json_t *sh = json_object_get(l, "shadow_state");
        table_add(&t, jtext(l, "name", b[0], 64), jtext(l, "listen", b[1], 64),
                  jtext(l, "mode", b[2], 64), jtext(l, "primary", b[3], 64),
                  jtext(l, "shadow", b[4], 64), jtext(l, "clients", b[5], 64),
                  jfmt(sh, "validation_success_ratio", "%.2f%%", 100, b[6], 64),
                  jfmt(sh, "performance_ratio", "%.2fx", 1, b[7], 64),
                  jfmt(sh, "lag_seconds", "%.3fs", 1, b[8], 64),
                  jtext(sh, "detached_sessions", b[9], 64));
    }
    printf("\n");
    table_print(&t);

    t.ncols = 7;
    table_add(&t, "BACKEND", "ROLE", "ADDRESS", "UP", "LAG", "WEIGHT", "TLS");
    json_array_foreach(json_object_get(st, "backends"), i, be) {
        const char *name = json_string_value(json_object_get(be, "name"));
        const char *role = json_string_value(json_object_get(be, "role"));
        const char *weight = jtext(be, "weight", b[5], 64);
        if (role == NULL && name != NULL)
            role = role_of(st, name);
        if (strcmp(weight, "-") == 0 && name != NULL)
            weight = jtext(weights, name, b[5], 64);
        /* per listener (this build): the first listener that reads from it */
        json_array_foreach(json_object_get(st, "listeners"), k, l) {
            if (strcmp(weight, "-") != 0 || name == NULL)
                break;
            weight = jtext(json_object_get(l, "weights"), name, b[5], 64);
        }
        table_add(&t, name, role, jtext(be, "address", b[2], 64), jtext(be, "up", b[3], 64),
                  jfmt(be, "lag_ms", "%.0fms", 1, b[4], 64), weight, jtext(be, "tls", b[6], 64));
    }
    printf("\n");
    table_print(&t);

    /* shadows fed by replication: how far they have applied the primary's writes */
    t.ncols = 7;
    table_add(&t, "REPLICATION", "KIND", "PRIMARY@POSITION", "SHADOW@POSITION", "LAG", "LAG_BYTES",
              "ERROR");
    json_array_foreach(json_object_get(st, "listeners"), i, l) {
        json_t *r = json_object_get(l, "replication");
        char pp[160], sp[160];
        if (!json_is_object(r))
            continue;
        snprintf(pp, sizeof(pp), "%s@%s", jtext(r, "primary", b[2], 64),
                 jtext(r, "primary_position", b[3], 64));
        snprintf(sp, sizeof(sp), "%s@%s", jtext(r, "shadow", b[2], 64),
                 jtext(r, "shadow_position", b[3], 64));
        table_add(&t, jtext(l, "name", b[0], 64), jtext(r, "kind", b[1], 64), pp, sp,
                  jfmt(r, "lag_seconds", "%.3fs", 1, b[4], 64), jtext(r, "lag_bytes", b[5], 64),
                  jtext(r, "error", b[6], 64));
    }
    if (t.nrows > 1) {
        printf("\n");
        table_print(&t);
    } else {
        table_free(&t);
    }

    t.ncols = 5;
    table_add(&t, "GUARD", "LISTENER", "STATE", "TRIPS", "REASON");
    add_guards(&t, json_object_get(st, "guards"), NULL);
    json_array_foreach(json_object_get(st, "listeners"), i, l) {
        add_guards(&t, json_object_get(l, "guards"), json_string_value(json_object_get(l, "name")));
    }
    if (t.nrows > 1) {
        printf("\n");
        table_print(&t);
    } else {
        table_free(&t); /* no guards: not even the header */
    }
}

static void
add_statement(struct table *t, json_t *s)
{
    char b[8][64], text[CTL_STATEMENT_WIDTH + 8];
    json_t *count = json_object_get(s, "count");
    json_int_t errors = jint(count, "shadow_error") + jint(count, "shadow_timeout") +
                        jint(count, "primary_error");

    snprintf(b[2], 64, "%lld", (long long)errors);
    table_add(t, jtext(s, "fingerprint", b[0], 64), jtext(count, "total", b[1], 64),
              jtext(count, "mismatch", b[3], 64), b[2],
              jfmt(s, "primary_p50_ms", "%.2fms", 1, b[4], 64),
              jfmt(s, "shadow_p50_ms", "%.2fms", 1, b[5], 64),
              jfmt(s, "latency_ratio", "%.2fx", 1, b[6], 64),
              clip(json_string_value(json_object_get(s, "statement")), CTL_STATEMENT_WIDTH, text,
                   sizeof(text)));
}

static void
print_report(json_t *rep)
{
    char b[13][64];
    json_t *l, *s;
    size_t i;

    printf("shadow-diff report, %s, window %ss\n\n", jtext(rep, "generated_at", b[0], 64),
           jtext(rep, "window_seconds", b[1], 64));
    struct table t = {.ncols = 13};
    table_add(&t, "LISTENER", "MATCH", "MISMATCH", "TRANSIENT", "NOISE", "SHADOW_ERR",
              "PRIMARY_ERR", "TIMEOUT", "DROPPED", "SKIPPED_LAG", "VALIDATION", "SHADOW/PRIMARY",
              "LAG");
    json_array_foreach(json_object_get(rep, "listeners"), i, l) {
        json_t *o = json_object_get(l, "outcomes");
        table_add(&t, jtext(l, "name", b[0], 64), jtext(o, "match", b[1], 64),
                  jtext(o, "mismatch", b[2], 64), jtext(o, "transient", b[11], 64),
                  jtext(o, "noise", b[3], 64),
                  jtext(o, "shadow_error", b[4], 64), jtext(o, "primary_error", b[5], 64),
                  jtext(o, "shadow_timeout", b[6], 64), jtext(o, "dropped", b[7], 64),
                  jtext(o, "skipped_lag", b[12], 64),
                  jfmt(l, "validation_success_ratio", "%.2f%%", 100, b[8], 64),
                  jfmt(l, "performance_ratio", "%.2fx", 1, b[9], 64),
                  jfmt(l, "lag_seconds", "%.3fs", 1, b[10], 64));
    }
    table_print(&t);

    const char *heads[] = {"FINGERPRINT", "TOTAL", "MISMATCH", "ERRORS", "P50 PRIMARY",
                           "P50 SHADOW", "RATIO", "STATEMENT"};
    const struct {
        const char *key, *title;
    } lists[] = {{"statements", "statements"}, {"slowest", "slower on the shadow"}};
    for (size_t k = 0; k < sizeof(lists) / sizeof(lists[0]); k++) {
        json_t *arr = json_object_get(rep, lists[k].key);
        printf("\n%s (%zu)\n", lists[k].title, json_array_size(arr));
        if (json_array_size(arr) == 0)
            continue;
        t.ncols = 8;
        table_add(&t, heads[0], heads[1], heads[2], heads[3], heads[4], heads[5], heads[6],
                  heads[7]);
        json_array_foreach(arr, i, s) {
            add_statement(&t, s);
        }
        table_print(&t);
    }

    json_t *samples = json_object_get(rep, "samples");
    printf("\nmismatch samples (%zu)\n", json_array_size(samples));
    json_array_foreach(samples, i, s) {
        printf("%s  %s  %s  %s\n  %s\n  primary: %s\n  shadow:  %s\n",
               jtext(s, "time", b[0], 64), jtext(s, "listener", b[1], 64),
               jtext(s, "fingerprint", b[2], 64), jtext(s, "outcome", b[3], 64),
               jtext(s, "statement", b[4], 64), jtext(s, "primary", b[5], 64),
               jtext(s, "shadow", b[6], 64));
    }
}

/*
 * wait_operation - poll the operation until completed or failed, for at most
 * the timeout plus extra_ms (its own pause bound); the exit status.
 */
static int
wait_operation(const struct ctl *c, json_t *op, uint64_t extra_ms)
{
    char path[160];
    const char *id = json_string_value(json_object_get(op, "id"));
    struct ctl quiet = *c;
    struct timespec start, now;

    if (id == NULL)
        return fail("the server's answer has no operation id");
    snprintf(path, sizeof(path), "/api/operations/%s", id);
    quiet.json = 0;
    clock_gettime(CLOCK_MONOTONIC, &start);
    json_incref(op);
    for (;;) {
        const char *state = json_string_value(json_object_get(op, "state"));
        if (state != NULL && (strcmp(state, "completed") == 0 || strcmp(state, "failed") == 0)) {
            int rc = strcmp(state, "completed") == 0 ? 0 : 1;
            if (c->json) {
                json_t *doc = json_pack("{s:O}", "operation", op);
                char *text = doc ? json_dumps(doc, JSON_INDENT(1)) : NULL;
                printf("%s\n", text ? text : "{}");
                free(text);
                json_decref(doc);
            } else {
                print_operation(op);
            }
            json_decref(op);
            return rc;
        }
        clock_gettime(CLOCK_MONOTONIC, &now);
        uint64_t spent = (uint64_t)(now.tv_sec - start.tv_sec) * 1000 +
                         (uint64_t)((now.tv_nsec - start.tv_nsec) / 1000000);
        if (spent > c->timeout_ms + extra_ms) {
            json_decref(op);
            return fail("operation %s still %s after %llu ms; follow it with `tandem ctl "
                        "operation %s`",
                        id, state ? state : "?", (unsigned long long)spent, id);
        }
        usleep(CTL_POLL_MS * 1000);
        json_t *doc;
        if (api(&quiet, "GET", path, NULL, &doc) != 0) {
            json_decref(op);
            return 1;
        }
        json_decref(op);
        op = json_incref(json_object_get(doc, "operation"));
        json_decref(doc);
    }
}

/* start_operation - POST PATH with BODY (taken); then wait for it unless no_wait. */
static int
start_operation(const struct ctl *c, const char *path, json_t *body, int no_wait)
{
    uint64_t pause_ms = (uint64_t)jint(body, "max_pause_ms");
    char *text = json_dumps(body, JSON_COMPACT);
    json_t *doc;
    struct ctl quiet = *c;
    int rc;

    json_decref(body);
    if (text == NULL)
        return fail("out of memory");
    /* with --json and waiting, only the final operation is printed */
    quiet.json = c->json && no_wait;
    rc = api(&quiet, "POST", path, text, &doc);
    free(text);
    if (rc != 0)
        return rc;
    json_t *op = json_object_get(doc, "operation");
    if (no_wait) {
        if (!c->json)
            print_operation(op);
        rc = 0;
    } else {
        rc = wait_operation(c, op, pause_ms);
    }
    json_decref(doc);
    return rc;
}

static int
cmd_weights(const struct ctl *c, int argc, char **argv)
{
    json_t *body = json_object(), *doc;
    const char *key;
    json_t *v;

    if (argc == 0) {
        json_decref(body);
        return bad_usage("weights: expected NAME=WEIGHT ..., e.g. weights blue=90 green=10");
    }
    for (int i = 0; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        uint64_t w;
        if (eq == NULL || eq == argv[i] || conf_value_number(eq + 1, &w) != CONF_VALUE_OK ||
            w > 1000000) {
            json_decref(body);
            return bad_usage("weights: \"%s\": expected NAME=WEIGHT, a whole number", argv[i]);
        }
        *eq = '\0';
        json_object_set_new(body, argv[i], json_integer((json_int_t)w));
        *eq = '=';
    }
    int rc = api_json(c, "PUT", "/api/weights", body, &doc);
    if (rc != 0)
        return rc;
    if (!c->json) {
        printf("weights:");
        json_object_foreach(json_object_get(doc, "weights"), key, v) {
            printf(" %s=%" JSON_INTEGER_FORMAT, key, json_integer_value(v));
        }
        printf("\n");
    }
    json_decref(doc);
    return 0;
}

static int
cmd_mode(const struct ctl *c, int argc, char **argv)
{
    json_t *doc;

    if (argc != 1)
        return bad_usage("mode: expected one of passthrough, shadow, split");
    int rc = api_json(c, "PUT", "/api/mode", json_pack("{s:s}", "mode", argv[0]), &doc);
    if (rc != 0)
        return rc;
    if (!c->json)
        printf("mode: %s\n", json_string_value(json_object_get(doc, "mode")) ?: argv[0]);
    json_decref(doc);
    return 0;
}

/* resynced LISTENER: POST /api/shadow/resynced once the operator copied the data again. */
static int
cmd_resynced(const struct ctl *c, int argc, char **argv)
{
    json_t *doc;

    if (argc != 1)
        return bad_usage("resynced: expected one listener name, e.g. resynced pg");
    int rc = api_json(c, "POST", "/api/shadow/resynced", json_pack("{s:s}", "listener", argv[0]),
                      &doc);
    if (rc != 0)
        return rc;
    if (!c->json)
        printf("listener %s: shadow resynchronized (%s)\n", argv[0],
               json_is_true(json_object_get(doc, "was_diverged")) ? "it was diverged"
                                                                   : "it was not diverged");
    json_decref(doc);
    return 0;
}

static int
cmd_cutover(const struct ctl *c, int argc, char **argv, int is_rollback)
{
    json_t *body = json_object();
    int no_wait = 0;

    for (int i = 0; i < argc; i++) {
        uint64_t ms;
        if (strcmp(argv[i], "--no-wait") == 0) {
            no_wait = 1;
        } else if (strcmp(argv[i], "--force") == 0) {
            json_object_set_new(body, "force", json_true());
        } else if (strcmp(argv[i], "--max-pause") == 0 && i + 1 < argc) {
            if (conf_value_duration_ms(argv[++i], &ms) != CONF_VALUE_OK) {
                json_decref(body);
                return bad_usage("%s: --max-pause \"%s\": expected a duration like 2s or 500ms",
                                 is_rollback ? "rollback" : "cutover", argv[i]);
            }
            json_object_set_new(body, "max_pause_ms", json_integer((json_int_t)ms));
        } else {
            json_decref(body);
            return bad_usage("%s: unknown argument \"%s\"", is_rollback ? "rollback" : "cutover",
                        argv[i]);
        }
    }
    return start_operation(c, is_rollback ? "/api/rollback" : "/api/cutover", body, no_wait);
}

static int
cmd_simple_get(const struct ctl *c, const char *path, void (*print)(json_t *))
{
    json_t *doc;
    int rc = api(c, "GET", path, NULL, &doc);
    if (rc == 0 && !c->json)
        print(doc);
    json_decref(doc);
    return rc;
}

static void
print_operation_doc(json_t *doc)
{
    print_operation(json_object_get(doc, "operation"));
}

static int
cmd_operation(const struct ctl *c, int argc, char **argv)
{
    char path[160];

    if (argc != 1 || strlen(argv[0]) > 64 || strcspn(argv[0], "/?#% ") != strlen(argv[0]))
        return bad_usage("operation: expected one operation id, e.g. operation op-1");
    snprintf(path, sizeof(path), "/api/operations/%s", argv[0]);
    return cmd_simple_get(c, path, print_operation_doc);
}

/* ---- verify --------------------------------------------------------------- */

#define CTL_VERIFY_POLL_MS 500

/* The run's result: a row per table, then the differing keys and the state. */
static void
print_verify(json_t *v)
{
    struct table t = {.ncols = 6};
    char b[6][32];
    size_t i;
    json_t *x;

    table_add(&t, "TABLE", "CHECKED", "CHANGED", "NOT_SHADOW", "NOT_PRIMARY", "UNSETTLED");
    json_array_foreach(json_object_get(v, "tables"), i, x) {
        table_add(&t, jtext(x, "name", b[0], 32), jtext(x, "rows_checked", b[1], 32),
                  jtext(x, "changed", b[2], 32), jtext(x, "missing_on_shadow", b[3], 32),
                  jtext(x, "missing_on_primary", b[4], 32), jtext(x, "unsettled", b[5], 32));
    }
    if (t.nrows > 1)
        table_print(&t);
    else
        table_free(&t);
    json_array_foreach(json_object_get(v, "differences"), i, x) {
        printf("%s %s: %s\n", jtext(x, "table", b[0], 32), jtext(x, "key", b[1], 32),
               jtext(x, "kind", b[2], 32));
    }
    json_t *p = json_object_get(v, "progress");
    printf("%s: %s (%s of %s tables, %s rows checked%s%s)\n", jtext(v, "id", b[0], 32),
           jtext(v, "state", b[1], 32), jtext(p, "tables_done", b[2], 32),
           jtext(p, "tables_total", b[3], 32), jtext(p, "rows_checked", b[4], 32),
           json_is_string(json_object_get(v, "error")) ? ": " : "",
           json_is_string(json_object_get(v, "error"))
               ? json_string_value(json_object_get(v, "error"))
               : "");
}

/* 0 equal, 1 different, 2 error or cancelled; -1 while running. */
static int
verify_exit(json_t *v)
{
    const char *state = json_string_value(json_object_get(v, "state"));
    if (state == NULL || strcmp(state, "running") == 0)
        return -1;
    return strcmp(state, "equal") == 0 ? 0 : strcmp(state, "different") == 0 ? 1 : 2;
}

/* Poll the run until it ended: a progress line on a terminal, the result at the end. */
static int
wait_verify(const struct ctl *c, json_t *v)
{
    char path[96];
    const char *id = json_string_value(json_object_get(v, "id"));
    struct ctl quiet = *c;
    int tty = isatty(STDERR_FILENO), rc;

    if (id == NULL || strlen(id) > 32)
        return 2;
    snprintf(path, sizeof(path), "/api/verify/%s", id);
    quiet.json = 0;
    json_incref(v);
    while ((rc = verify_exit(v)) < 0) {
        json_t *p = json_object_get(v, "progress");
        if (tty) {
            char b[3][32];
            fprintf(stderr, "\r\033[K%s: %s/%s tables, %s rows checked%s%s", id,
                    jtext(p, "tables_done", b[0], 32), jtext(p, "tables_total", b[1], 32),
                    jtext(p, "rows_checked", b[2], 32),
                    json_is_string(json_object_get(p, "current_table")) ? ", now " : "",
                    json_is_string(json_object_get(p, "current_table"))
                        ? json_string_value(json_object_get(p, "current_table"))
                        : "");
            fflush(stderr);
        }
        usleep(CTL_VERIFY_POLL_MS * 1000);
        json_t *doc;
        if (api(&quiet, "GET", path, NULL, &doc) != 0) {
            json_decref(v);
            return 2;
        }
        json_decref(v);
        v = json_incref(json_object_get(doc, "verify"));
        json_decref(doc);
    }
    if (tty)
        fputs("\r\033[K", stderr);
    if (c->json) {
        json_t *doc = json_pack("{s:O}", "verify", v);
        char *text = doc ? json_dumps(doc, JSON_INDENT(1)) : NULL;
        printf("%s\n", text ? text : "{}");
        free(text);
        json_decref(doc);
    } else {
        print_verify(v);
    }
    json_decref(v);
    return rc;
}

static int
cmd_verify(const struct ctl *c, int argc, char **argv)
{
    json_t *body = json_object(), *tables = json_array(), *exclude = json_array(), *doc;
    int wait = 0, cancel = 0, rc;
    const char *id = NULL;

    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        uint32_t bp;
        int bad = 0;
        if (strcmp(a, "--wait") == 0) {
            wait = 1;
            continue;
        } else if (strcmp(a, "--cancel") == 0) {
            cancel = 1;
            continue;
        } else if (a[0] != '-' && id == NULL && i == 0) {
            id = a;
            continue;
        } else if (val == NULL) {
            bad = 1;
        } else if (strcmp(a, "--listener") == 0) {
            json_object_set_new(body, "listener", json_string(val));
        } else if (strcmp(a, "--dbname") == 0) {
            json_object_set_new(body, "dbname", json_string(val));
        } else if (strcmp(a, "--db") == 0 && conf_value_number(val, &n) == CONF_VALUE_OK) {
            json_object_set_new(body, "db", json_integer((json_int_t)n));
        } else if (strcmp(a, "--table") == 0) {
            json_array_append_new(tables, json_string(val));
        } else if (strcmp(a, "--exclude") == 0) {
            json_array_append_new(exclude, json_string(val));
        } else if (strcmp(a, "--sample-rate") == 0 &&
                   conf_value_percent(val, &bp) == CONF_VALUE_OK && bp > 0 && bp <= 10000) {
            json_object_set_new(body, "sample_rate", json_real(bp / 10000.0));
        } else if (strcmp(a, "--max-rate") == 0 && conf_value_number(val, &n) == CONF_VALUE_OK) {
            json_object_set_new(body, "max_rate", json_integer((json_int_t)n));
        } else if (strcmp(a, "--chunk") == 0 && conf_value_number(val, &n) == CONF_VALUE_OK) {
            json_object_set_new(body, "chunk", json_integer((json_int_t)n));
        } else if (strcmp(a, "--settle") == 0 && conf_value_duration_ms(val, &n) == CONF_VALUE_OK) {
            json_object_set_new(body, "settle_ms", json_integer((json_int_t)n));
        } else if (strcmp(a, "--ttl-tolerance") == 0 &&
                   conf_value_duration_ms(val, &n) == CONF_VALUE_OK) {
            json_object_set_new(body, "ttl_tolerance_ms", json_integer((json_int_t)n));
        } else {
            bad = 1;
        }
        if (bad) {
            json_decref(body);
            json_decref(tables);
            json_decref(exclude);
            return bad_usage("verify: bad argument \"%s\"%s", a, val ? "" : " (needs a value)");
        }
        i++;
    }
    if (id != NULL) {
        char path[96];
        json_decref(body);
        json_decref(tables);
        json_decref(exclude);
        if (strlen(id) > 32 || strcspn(id, "/?#% ") != strlen(id))
            return bad_usage("verify: expected a run id, e.g. verify verify-1");
        snprintf(path, sizeof(path), cancel ? "/api/verify/%s/cancel" : "/api/verify/%s", id);
        struct ctl quiet = *c;
        quiet.json = c->json && !wait;
        if (api(&quiet, cancel ? "POST" : "GET", path, cancel ? "{}" : NULL, &doc) != 0)
            return 2;
        json_t *v = json_object_get(doc, "verify");
        if (!c->json && !wait)
            print_verify(v);
        rc = wait ? wait_verify(c, v) : cancel ? 0 : verify_exit(v) < 0 ? 0 : verify_exit(v);
        json_decref(doc);
        return rc;
    }
    if (json_array_size(tables))
        json_object_set(body, "tables", tables);
    if (json_array_size(exclude))
        json_object_set(body, "exclude", exclude);
    json_decref(tables);
    json_decref(exclude);
    if (json_object_get(body, "listener") == NULL || cancel) {
        json_decref(body);
        return bad_usage("verify: expected --listener L (and --dbname D for PostgreSQL)");
    }
    struct ctl quiet = *c;
    quiet.json = c->json && !wait; /* waiting with --json: only the final run is printed */
    rc = api_json(&quiet, "POST", "/api/verify", body, &doc);
    if (rc != 0)
        return 2;
    json_t *v = json_object_get(doc, "verify");
    if (wait) {
        rc = wait_verify(c, v);
    } else {
        if (!c->json)
            printf("%s: %s; follow it with `tandem ctl verify %s --wait`\n",
                   json_string_value(json_object_get(v, "id")) ?: "?",
                   json_string_value(json_object_get(v, "state")) ?: "?",
                   json_string_value(json_object_get(v, "id")) ?: "?");
        rc = 0;
    }
    json_decref(doc);
    return rc;
}

static int
cmd_report(const struct ctl *c, int argc, char **argv)
{
    char path[80] = "/api/shadow/report";
    uint64_t top = c->json ? 0 : CTL_DEFAULT_TOP;
    int fleet = 0;

    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--fleet") == 0) {
            fleet = 1;
        } else if (strcmp(argv[i], "--top") == 0 && i + 1 < argc) {
            if (conf_value_number(argv[++i], &top) != CONF_VALUE_OK || top > 100000)
                return bad_usage("report: --top \"%s\": expected a number 0..100000", argv[i]);
        } else {
            return bad_usage("report: unknown argument \"%s\"", argv[i]);
        }
    }
    if (top > 0)
        snprintf(path, sizeof(path), "/api/shadow/report?top=%llu%s", (unsigned long long)top,
                 fleet ? "&scope=fleet" : "");
    else if (fleet)
        snprintf(path, sizeof(path), "/api/shadow/report?scope=fleet");
    return cmd_simple_get(c, path, print_report);
}

/*
 * print_fleet - GET /api/fleet as text:
 *   fleet demo, member m1, store 127.0.0.1:6379/0 connected, state version 6
 *   MEMBER  ADMIN            EPOCH  VERSION  SESSIONS  LAST HEARTBEAT            ROLES
 *   m1      127.0.0.1:9090       1        6         3  2026-...Z                 pg: green (shadow blue)
 *   operation fleet-op-1 cutover completed (asked by m2)
 *     m1 swapped after 12 ms
 */
static void
print_fleet(json_t *doc)
{
    char b[8][128];
    size_t i, k;
    json_t *m, *r, *store = json_object_get(doc, "store");

    printf("fleet %s, member %s, store %s %s, state version %s\n", jtext(doc, "fleet", b[0], 128),
           jtext(doc, "member", b[1], 128), jtext(store, "address", b[2], 128),
           json_is_true(json_object_get(store, "connected")) ? "connected" : "UNREACHABLE",
           jtext(doc, "version", b[3], 128));
    if (json_is_string(json_object_get(store, "last_error")))
        printf("  last store error: %s (%s)\n", jtext(store, "last_error", b[0], 128),
               jtext(store, "last_error_at", b[1], 128));
    printf("%-20s %-22s %6s %8s %9s  %-25s %s\n", "MEMBER", "ADMIN", "EPOCH", "VERSION",
           "SESSIONS", "LAST HEARTBEAT", "ROLES");
    json_array_foreach(json_object_get(doc, "members"), i, m) {
        printf("%-20s %-22s %6s %8s %9s  %-25s", jtext(m, "id", b[0], 128),
               jtext(m, "admin", b[1], 128), jtext(m, "epoch", b[2], 128),
               jtext(m, "version", b[3], 128), jtext(m, "sessions", b[4], 128),
               jtext(m, "last_heartbeat", b[5], 128));
        json_array_foreach(json_object_get(m, "roles"), k, r) {
            printf("%s%s: %s (shadow %s)%s", k ? ", " : " ", jtext(r, "listener", b[0], 128),
                   jtext(r, "primary", b[1], 128), jtext(r, "shadow", b[2], 128),
                   json_is_true(json_object_get(r, "writes_paused")) ? " WRITES PAUSED" : "");
        }
        printf("\n");
    }
    json_t *op = json_object_get(doc, "operation");
    if (!json_is_object(op))
        return;
    printf("operation %s %s %s (asked by %s)", jtext(op, "id", b[0], 128),
           jtext(op, "type", b[1], 128), jtext(op, "state", b[2], 128),
           jtext(op, "asked_by", b[3], 128));
    if (json_is_string(json_object_get(op, "reason")))
        printf(": %s", jtext(op, "reason", b[4], 128));
    printf("\n");
    json_array_foreach(json_object_get(op, "members"), i, m) {
        printf("  %s %s", jtext(m, "id", b[0], 128), jtext(m, "step", b[1], 128));
        if (json_is_integer(json_object_get(m, "ms")))
            printf(" after %s ms", jtext(m, "ms", b[2], 128));
        if (!json_is_true(json_object_get(m, "counted")))
            printf(" (joined during the operation; not waited for)");
        printf("\n");
    }
}

/* ---- options ------------------------------------------------------------- */

static int
set_admin(struct ctl *c, const char *text)
{
    if (strncmp(text, "http://", 7) == 0)
        text += 7;
    snprintf(c->admin_text, sizeof(c->admin_text), "%s", text);
    size_t n = strlen(c->admin_text);
    if (n > 0 && c->admin_text[n - 1] == '/')
        c->admin_text[n - 1] = '\0';
    if (conf_value_addr(c->admin_text, &c->admin) != CONF_VALUE_OK)
        return bad_usage("--admin \"%s\": expected HOST:PORT or [IPV6]:PORT", text);
    return 0;
}

static int
set_token_file(struct ctl *c, const char *path)
{
    char err[CONF_PATH_MAX + 100];
    if (admin_token_read(path, c->token, sizeof(c->token), err, sizeof(err)) != 0)
        return bad_usage("%s", err);
    return 0;
}

int
ctl_main(int argc, char **argv)
{
    struct ctl c = {.timeout_ms = 10000};
    const char *admin = getenv("TANDEM_ADMIN"), *token_file = getenv("TANDEM_TOKEN_FILE");
    char *rest[64];
    int nrest = 0, rc;

    /* global options anywhere; the rest (command and its arguments) in order */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "--json") == 0) {
            c.json = 1;
        } else if (strcmp(a, "--admin") == 0 && i + 1 < argc) {
            admin = argv[++i];
        } else if (strcmp(a, "--token-file") == 0 && i + 1 < argc) {
            token_file = argv[++i];
        } else if (strcmp(a, "--timeout") == 0 && i + 1 < argc) {
            if (conf_value_duration_ms(argv[++i], &c.timeout_ms) != CONF_VALUE_OK ||
                c.timeout_ms == 0 || c.timeout_ms > 3600000)
                return bad_usage("--timeout \"%s\": expected a duration like 10s", argv[i]);
        } else if (nrest < (int)(sizeof(rest) / sizeof(rest[0]))) {
            rest[nrest++] = argv[i];
        } else {
            return bad_usage("too many arguments");
        }
    }
    if (nrest == 0) {
        usage(stderr);
        return 2;
    }
    if ((rc = set_admin(&c, admin && admin[0] ? admin : CTL_DEFAULT_ADMIN)) != 0)
        return rc;
    if (token_file != NULL && token_file[0] != '\0' && (rc = set_token_file(&c, token_file)) != 0)
        return rc;

    const char *cmd = rest[0];
    int n = nrest - 1;
    char **args = rest + 1;
    if (strcmp(cmd, "status") == 0 && n == 0)
        return cmd_simple_get(&c, "/api/status", print_status);
    if (strcmp(cmd, "weights") == 0)
        return cmd_weights(&c, n, args);
    if (strcmp(cmd, "mode") == 0)
        return cmd_mode(&c, n, args);
    if (strcmp(cmd, "cutover") == 0)
        return cmd_cutover(&c, n, args, 0);
    if (strcmp(cmd, "rollback") == 0)
        return cmd_cutover(&c, n, args, 1);
    if (strcmp(cmd, "operation") == 0)
        return cmd_operation(&c, n, args);
    if (strcmp(cmd, "report") == 0)
        return cmd_report(&c, n, args);
    if (strcmp(cmd, "fleet") == 0 && n == 0)
        return cmd_simple_get(&c, "/api/fleet", print_fleet);
    if (strcmp(cmd, "verify") == 0)
        return cmd_verify(&c, n, args);
    if (strcmp(cmd, "resynced") == 0)
        return cmd_resynced(&c, n, args);
    usage(stderr);
    return bad_usage("unknown command \"%s\"%s", cmd,
                     strcmp(cmd, "status") == 0 ? ": status takes no arguments" : "");
}
