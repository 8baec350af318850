/*
 * main.c - tandem's command line.
 *
 *   tandem -c FILE              run from a configuration file
 *   tandem -t -c FILE           check the file; every error as FILE:LINE: message
 *   tandem postgres --listen HOST:PORT --primary [NAME=]HOST:PORT [...]
 *   tandem ctl [--admin HOST:PORT] [--token-file F] [--json] COMMAND   (see ctl.h)
 *   tandem verify --primary WHERE --shadow WHERE [...]                  (see verify.h)
 *   tandem --version | --help
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "control/fleet.h"
#include "control/runtime.h"
#include "control/state.h"
#include "ctl/ctl.h"
#include "engine/proxy.h"
#include "engine/session.h"
#include "pg/pg_session.h"
#include "redis/redis_session.h"
#include "verify/verify.h"

/* The protocol plug-ins of this binary: the engine itself names none. */
static const struct session_protocol *const protocols[] = {&pg_protocol, &redis_protocol};

static void
usage(FILE *out)
{
    fputs("usage: tandem -c FILE            run from a configuration file\n"
          "       tandem -t -c FILE         check a configuration file and exit\n"
          "       tandem postgres|redis --listen HOST:PORT --primary [NAME=]HOST:PORT\n"
          "                       [--shadow [NAME=]HOST:PORT] [--admin HOST:PORT]\n"
          "                       [--workers N] [--mode passthrough|shadow|split]\n"
          "                       [--log-format text|json] [--log-level LEVEL]\n"
          "                       [--max-client-conn N] [--max-packet-size SIZE]\n"
          "                       [--startup-timeout DUR] [--connect-timeout DUR]\n"
          "                       [--shutdown-timeout DUR] [--client-idle-timeout DUR]\n"
          "                       [--max-command-size SIZE]\n"
          "                       [--tls-cert F --tls-key F] [--auth-file F]\n"
          "                       [--server-connections shared|dedicated|reuse] [--server-pool N]\n"
          "                       [--server-idle-timeout DUR] [--server-lifetime DUR]\n"
          "                       [--server-reset-query SQL]\n"
          "                       [--primary-tls disable|require|verify-full] [--primary-ca F]\n"
          "                       [--primary-cert F --primary-key F] (--shadow-... likewise)\n"
          "       tandem ctl [--admin HOST:PORT] [--token-file F] [--json] COMMAND\n"
          "                  status | weights NAME=W ... | mode MODE | cutover | rollback |\n"
          "                  operation ID | report      (tandem ctl --help)\n"
          "       tandem verify --primary WHERE --shadow WHERE [--table GLOB] [--json] ...\n"
          "                  compare the two backends' data   (tandem verify --help)\n"
          "       tandem --version\n"
          "\n"
          "tandem stands in front of a primary database and a shadow during a migration.\n"
          "Signals: SIGHUP reloads the file, SIGTERM drains and exits, SIGINT exits at once.\n",
          out);
}

static void
print_errors(const char *name, const struct conf_errors *errs)
{
    char line[CONF_PATH_MAX + 300];
    for (size_t i = 0; i < errs->count; i++) {
        conf_format_error(NULL, name, &errs->list[i], line, sizeof(line));
        fprintf(stderr, "%s\n", line);
    }
    if (errs->dropped)
        fprintf(stderr, "%s: %zu more errors\n", name, errs->dropped);
}

int
main(int argc, char **argv)
{
    const char *file = NULL;
    int test_only = 0;
    struct conf_errors errs;

    memset(&errs, 0, sizeof(errs));
    session_protocols_register(protocols, sizeof(protocols) / sizeof(protocols[0]));
    if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
        return ctl_main(argc - 1, argv + 1);
    if (argc >= 2 && strcmp(argv[1], "verify") == 0)
        return verify_main(argc - 1, argv + 1);
    if (argc >= 2 && (strcmp(argv[1], "postgres") == 0 || strcmp(argv[1], "redis") == 0)) {
        struct conf *conf = conf_load_args(argv[1], argc - 2, argv + 2, &errs);
        if (conf == NULL) {
            print_errors("tandem", &errs);
            return 1;
        }
        return proxy_run(conf, NULL);
    }

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--version") == 0 || strcmp(a, "-V") == 0) {
            printf("tandem %s\n", TANDEM_VERSION);
            return 0;
        } else if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(a, "-t") == 0) {
            test_only = 1;
        } else if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            file = argv[++i];
        } else {
            fprintf(stderr, "tandem: unknown argument \"%s\"\n", a);
            usage(stderr);
            return 1;
        }
    }
    if (file == NULL) {
        usage(stderr);
        return 1;
    }
    struct conf *conf = conf_load_file(file, &errs);
    if (conf == NULL) {
        print_errors(file, &errs);
        return 1;
    }
    if (test_only) {
        char warning[512];
        if (proxy_fd_check(conf, 0, warning, sizeof(warning)) != 0)
            fprintf(stderr, "%s: warning: %s\n", file, warning);
        int rc = state_check(conf, stdout, stderr); /* a state file that contradicts the file */
        if (fleet_check(conf, stdout, stderr) != 0)  /* the store's password file */
            rc = -1;
        char why[512];
        if (runtime_check_auth_files(conf, why, sizeof(why)) != 0) { /* as a start reads them */
            fprintf(stderr, "%s: %s\n", file, why);
            rc = -1;
        }
        if (rc == 0)
            printf("%s: configuration is valid\n", file);
        conf_free(conf);
        return rc == 0 ? 0 : 1;
    }
    return proxy_run(conf, file);
}
