/*
 * proxy.h - the process: configuration, workers, signals, admin server.
 *
 * Runs on the main thread.  proxy_run() returns the process exit status.
 */
#ifndef TANDEM_PROXY_H
#define TANDEM_PROXY_H

#include "conf/conf.h"

/*
 * proxy_run - serve conf until SIGTERM (drain, exit 0) or SIGINT (exit 0 at
 * once).  conf_path is the file to re-read on SIGHUP, or NULL when conf
 * came from the command line (SIGHUP then only logs).  Takes ownership of
 * conf.  Returns 0, or 1 when startup failed (the reason is logged).
 */
int proxy_run(struct conf *conf, const char *conf_path);

/*
 * proxy_fd_check - can the file descriptor limit (RLIMIT_NOFILE) carry
 * limits.max_client_conn clients?  Each takes its own socket, the
 * primary's and, when its listener has a shadow, the shadow's; a reserve
 * covers listening sockets, the admin server's connections, probes,
 * forwarded cancels and logs.  With raise, the soft limit is first raised
 * towards the hard one as far as needed (at startup); without, the hard
 * limit is what is compared (tandem -t: what a start could reach).
 * 0 when enough; 1 with a warning in msg (the clients beyond it would get
 * accept errors instead of 53300 / -ERR max clients).
 */
int proxy_fd_check(const struct conf *conf, int raise, char *msg, size_t msglen);

#endif /* TANDEM_PROXY_H */
