/*
 * redis_link.h - a blocking Redis connection of tandem's own, plain or TLS.
 *
 * For the threads that log in to a Redis backend with tandem's credentials
 * (verify, the replica watch and its steps).  hiredis 0.14 cannot speak
 * TLS, so the socket and the TLS session are ours (OpenSSL, as the
 * backend's settings say: verify-full checks the certificate against
 * tls_ca_file and the name against tls_server_name, else the configured
 * host, before a byte of the login is sent; a client certificate when the
 * backend has tls_cert), and hiredis does the rest: redisFormatCommand
 * builds each command, its redisReader parses each reply into a redisReply
 * (freed with freeReplyObject).
 *
 * Every call blocks for at most the timeout given at open.  After a
 * failure (I/O, timeout, a reply hiredis cannot parse) the link answers
 * NULL to every command and redis_link_error() says why.  Not for an event
 * loop: the proxy's own loops use engine/conn.h.
 */
#ifndef TANDEM_REDIS_LINK_H
#define TANDEM_REDIS_LINK_H

#include <hiredis/hiredis.h>
#include <stddef.h>

#include "conf/conf_login.h"

struct redis_link;

/*
 * redis_link_open - connect to l->hostaddr (an address or a name) port
 * l->port, with TLS when l->sslmode is require or verify-full.  NULL on a
 * failure, err says why (a certificate the CA did not sign, a name that
 * does not match ...).  Nothing is sent: the caller logs in (AUTH).
 */
struct redis_link *redis_link_open(const struct conf_login *l, int timeout_ms, char *err,
                                   size_t errlen);

/* redis_link_command - a command as redisCommand() formats it; its reply, or NULL. */
redisReply *redis_link_command(struct redis_link *k, const char *fmt, ...);

/* redis_link_command_argv - a command of argc arguments; its reply, or NULL. */
redisReply *redis_link_command_argv(struct redis_link *k, int argc, const char **argv,
                                    const size_t *lens);

/* redis_link_error - why the last command answered NULL ("" when none failed). */
const char *redis_link_error(const struct redis_link *k);

/* redis_link_free - close the connection.  NULL is fine. */
void redis_link_free(struct redis_link *k);

#endif /* TANDEM_REDIS_LINK_H */
