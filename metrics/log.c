/*
 * log.c - text or JSON log lines (see log.h).
 *
 * Each line is formatted into a local buffer and written with one write(2),
 * so lines from different workers never interleave.
 */
#include "metrics/log.h"

#include <jansson.h>
#include <stdlib.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

int log_min_level = CONF_LOG_INFO;
static int log_json;
static __thread int log_worker = -1;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void
log_setup(enum conf_log_format format, enum conf_log_level level)
{
    __atomic_store_n(&log_json, format == CONF_LOG_JSON, __ATOMIC_RELAXED);
    __atomic_store_n(&log_min_level, (int)level, __ATOMIC_RELAXED);
}

void
log_set_worker(int worker)
{
    log_worker = worker;
}

void
log_format_time(int64_t unix_ms, char *out, size_t len)
{
    struct tm tm;
    time_t sec = (time_t)(unix_ms / 1000);

    if (gmtime_r(&sec, &tm) == NULL) {
        snprintf(out, len, "?");
        return;
    }
    size_t n = strftime(out, len, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out + n, len - n, ".%03dZ", (int)(unix_ms % 1000));
}

static void
format_time(char *out, size_t len)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    log_format_time((int64_t)tv.tv_sec * 1000 + tv.tv_usec / 1000, out, len);
}

static void
write_line(const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, line, len);
        if (n <= 0)
            return; /* nowhere else to report it */
        line += n;
        len -= (size_t)n;
    }
}

/* Length of the valid UTF-8 sequence at s (not a C1 control), or 0. */
static size_t
utf8_len(const unsigned char *s)
{
    size_t n;
    unsigned cp;
    if (s[0] >= 0xc2 && s[0] <= 0xdf)
        n = 2, cp = s[0] & 0x1f;
    else if (s[0] >= 0xe0 && s[0] <= 0xef)
        n = 3, cp = s[0] & 0x0f;
    else if (s[0] >= 0xf0 && s[0] <= 0xf4)
        n = 4, cp = s[0] & 0x07;
    else
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80) /* also stops at the terminating NUL */
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
        (cp >= 0xd800 && cp <= 0xdfff) || (cp >= 0x80 && cp <= 0x9f))
        return 0;
    return n;
}

size_t
log_escape(const char *in, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)in;
    size_t o = 0;

    if (outlen == 0)
        return 0;
    while (*s) {
        char esc[4];
        size_t n = 0, u = *s >= 0x80 ? utf8_len(s) : 0;
        if (u > 0) {
            if (o + u >= outlen)
                break;
            memcpy(out + o, s, u);
            o += u;
            s += u;
            continue;
        }
        if (*s >= 0x20 && *s < 0x7f) {
            esc[n++] = (char)*s;
        } else {
            esc[n++] = '\\';
            switch (*s) {
            case '\n': esc[n++] = 'n'; break;
            case '\r': esc[n++] = 'r'; break;
            case '\t': esc[n++] = 't'; break;
            default:
                esc[n++] = 'x';
                esc[n++] = hex[*s >> 4];
                esc[n++] = hex[*s & 15];
            }
        }
        if (o + n >= outlen)
            break; /* never half an escape */
        memcpy(out + o, esc, n);
        o += n;
        s++;
    }
    out[o] = '\0';
    return o;
}

/*
 * Messages quote what clients sent (request URIs, names, server errors):
 * a CR or LF would forge a line of its own, an ESC sequence would reach
 * the operator's terminal.  Every line is escaped here, whatever the
 * caller formatted, so no call site can forget.
 */
void
log_write(enum conf_log_level level, uint64_t conn_id, const char *peer, const char *fmt, ...)
{
    char ts[40], raw[1024], msg[1024], line[2048];
    va_list ap;
    int n;

    va_start(ap, fmt);
    vsnprintf(raw, sizeof(raw), fmt, ap);
    va_end(ap);
    log_escape(raw, msg, sizeof(msg));
    format_time(ts, sizeof(ts));
    if ((unsigned)level > CONF_LOG_ERROR)
        level = CONF_LOG_ERROR;

    if (__atomic_load_n(&log_json, __ATOMIC_RELAXED)) {
        json_t *obj = json_object();
        json_object_set_new(obj, "ts", json_string(ts));
        json_object_set_new(obj, "level", json_string(level_names[level]));
        if (log_worker >= 0)
            json_object_set_new(obj, "worker", json_integer(log_worker));
        if (conn_id != 0)
            json_object_set_new(obj, "conn", json_integer((json_int_t)conn_id));
        if (peer != NULL)
            json_object_set_new(obj, "peer", json_string(peer));
        /* json_string refuses invalid UTF-8; never lose a line for that */
        json_t *m = json_string(msg);
        json_object_set_new(obj, "msg", m ? m : json_string("(message was not valid UTF-8)"));
        char *text = json_dumps(obj, JSON_COMPACT);
        json_decref(obj);
        if (text == NULL)
            return;
        n = snprintf(line, sizeof(line), "%s\n", text);
        free(text);
    } else if (conn_id != 0) {
        n = snprintf(line, sizeof(line), "%s %-5s [w%d c%llu %s] %s\n", ts, level_names[level],
                     log_worker, (unsigned long long)conn_id, peer ? peer : "-", msg);
    } else if (log_worker >= 0) {
        n = snprintf(line, sizeof(line), "%s %-5s [w%d] %s\n", ts, level_names[level], log_worker,
                     msg);
    } else {
        n = snprintf(line, sizeof(line), "%s %-5s %s\n", ts, level_names[level], msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof(line)) {
        n = sizeof(line) - 1;
        line[n - 1] = '\n';
    }
    write_line(line, (size_t)n);
}
