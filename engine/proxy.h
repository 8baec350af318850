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

#endif /* TANDEM_PROXY_H */
