/*
 * conf_value.h - the value syntaxes of the configuration (private to conf/).
 *
 * Each parser takes one whole NUL-terminated word and either fills *out and
 * returns CONF_VALUE_OK, or leaves *out alone and says why it refused:
 * CONF_VALUE_BAD for text that is not of the syntax at all, CONF_VALUE_RANGE
 * for well-formed text whose value overflows (99999999999GB is refused, it
 * never wraps).  Callers check their own, narrower ranges on top.
 *
 *   number      decimal digits only: 0, 42, 007 (no sign, no spaces)
 *   size        NUMBER[B|K|KB|M|MB|G|GB], case-insensitive, powers of 2
 *   duration    NUMBER(ms|s|m|h): 500ms, 10s, 5m, 1h; a bare number is refused
 *               because "10" could mean seconds or milliseconds
 *   percent     NUMBER[.D[D]]%: 10%, 0.5%, 100% -> basis points (1% = 100)
 *   boolean     on | off
 *   address     HOST:PORT or [IPV6]:PORT, port 1..65535
 *   name        1..63 of [A-Za-z0-9_.-] (backend and listener names)
 *   redis url   redis://HOST:PORT[/DB], DB 0..15 (the fleet's store); no
 *               user or password in it: a password belongs in a file
 */
#ifndef TANDEM_CONF_VALUE_H
#define TANDEM_CONF_VALUE_H

#include <stdint.h>

#include "conf/conf.h"

enum conf_value_rc {
    CONF_VALUE_OK = 0,
    CONF_VALUE_BAD = -1,
    CONF_VALUE_RANGE = -2,
};

enum conf_value_rc conf_value_number(const char *s, uint64_t *out);
enum conf_value_rc conf_value_size(const char *s, uint64_t *out);
enum conf_value_rc conf_value_duration_ms(const char *s, uint64_t *out);
enum conf_value_rc conf_value_percent(const char *s, uint32_t *basis_points);
enum conf_value_rc conf_value_bool(const char *s, int *out);
enum conf_value_rc conf_value_addr(const char *s, struct conf_addr *out);
enum conf_value_rc conf_value_name(const char *s);
/* redis://HOST:PORT[/DB] (*tls 0) or rediss://... (*tls 1); a password in the URL is refused. */
enum conf_value_rc conf_value_redis_url(const char *s, struct conf_addr *addr, uint32_t *db,
                                        int *tls);

#endif /* TANDEM_CONF_VALUE_H */
