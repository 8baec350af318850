/*
 * log.h - one line per event, text or JSON lines, on stderr.
 *
 * The macros test the level before evaluating their arguments, so a debug
 * line costs one compare when debug is off.  Messages are lowercase, with no
 * trailing period, and quote their subject: connecting to "blue" failed.
 * Secrets (passwords, tokens) are never passed to these functions.
 */
#ifndef TANDEM_LOG_H
#define TANDEM_LOG_H

#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

extern int log_min_level;          /* enum conf_log_level */

/*
 * log_format_time - unix_ms as "2026-12-07T17:42:57.123Z": the one way
 * tandem writes a wall-clock time (log lines, the state file, the JSON of
 * the report, operations and verify runs).
 */
void log_format_time(int64_t unix_ms, char *out, size_t len);

/* log_setup - choose format and level; safe to call again on reload. */
void log_setup(enum conf_log_format format, enum conf_log_level level);

/* log_set_worker - tag this thread's lines with worker N (-1: main thread). */
void log_set_worker(int worker);

/*
 * log_escape - in as one printable line into out (outlen > 0, always
 * terminated): CR, LF and TAB as \r \n \t, other control bytes (C0, DEL,
 * C1) and bytes that are not valid UTF-8 as \xNN; valid UTF-8 kept.  Cut
 * at outlen, never inside an escape.  Returns the length written.
 * log_write applies it to every message.
 */
size_t log_escape(const char *in, char *out, size_t outlen);

/* conn_id 0 and peer NULL when the line is not about a connection. */
void log_write(enum conf_log_level level, uint64_t conn_id, const char *peer, const char *fmt,
               ...) __attribute__((format(printf, 4, 5)));

#define log_at(level, id, peer, ...)                                                           \
    do {                                                                                       \
        if ((int)(level) >= log_min_level)                                                     \
            log_write((level), (id), (peer), __VA_ARGS__);                                     \
    } while (0)

#define log_debug(...) log_at(CONF_LOG_DEBUG, 0, NULL, __VA_ARGS__)
#define log_info(...) log_at(CONF_LOG_INFO, 0, NULL, __VA_ARGS__)
#define log_warn(...) log_at(CONF_LOG_WARN, 0, NULL, __VA_ARGS__)
#define log_error(...) log_at(CONF_LOG_ERROR, 0, NULL, __VA_ARGS__)

#endif /* TANDEM_LOG_H */
