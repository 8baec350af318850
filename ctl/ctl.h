/*
 * ctl.h - `tandem ctl`: the admin API from a shell.
 *
 *   tandem ctl [--admin HOST:PORT] [--token-file F] [--json] [--timeout DUR] COMMAND
 *
 *   status                          GET  /api/status
 *   weights NAME=W [NAME=W ...]     PUT  /api/weights    {"NAME":W,...}
 *   mode passthrough|shadow|split   PUT  /api/mode       {"mode":...}
 *   cutover [--max-pause DUR] [--force] [--no-wait]
 *                                   POST /api/cutover    {"max_pause_ms":N,"force":B}
 *   rollback [--no-wait]            POST /api/rollback   {}
 *   operation ID                    GET  /api/operations/ID
 *   report [--top N]                GET  /api/shadow/report?top=N
 *
 * The admin address defaults to $TANDEM_ADMIN, else 127.0.0.1:9090; the
 * token file to $TANDEM_TOKEN_FILE.  Tables for people, --json for scripts
 * (the server's JSON as it came).  cutover and rollback wait until the
 * operation completed or failed unless --no-wait.
 *
 * Exit status: 0 done; 1 the server refused (its message on stderr), the
 * operation failed, or the admin API could not be reached; 2 bad usage.
 */
#ifndef TANDEM_CTL_H
#define TANDEM_CTL_H

/* ctl_main - argv[0] is "ctl"; returns the exit status. */
int ctl_main(int argc, char **argv);

#endif /* TANDEM_CTL_H */
