/*
 * test_conf.c - the configuration: every field of a full file, the
 * defaults, each error with its exact text and line, the command line form
 * against the file form, and the value syntaxes at their edges.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/conf_value.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* The smallest valid configuration: two lines, so an appended error is on line 3. */
#define MIN                                                                                        \
    "backend blue { address 127.0.0.1:5432; }\n"                                                   \
    "listener pg { listen 127.0.0.1:6432; primary blue; }\n"

static struct conf *
load(const char *text, struct conf_errors *errs)
{
    memset(errs, 0, sizeof(*errs));
    return conf_load_buffer("t.conf", text, strlen(text), errs);
}

static struct conf *
load_ok(const char *text)
{
    struct conf_errors errs;
    struct conf *c = load(text, &errs);
    char line[512];

    for (size_t i = 0; i < errs.count; i++) {
        conf_format_error(NULL, "t.conf", &errs.list[i], line, sizeof(line));
        print_error("unexpected error: %s\n", line);
    }
    assert_int_equal(errs.count, 0);
    assert_non_null(c);
    return c;
}

/* ERRS formatted must be exactly WANT[0..NWANT), in order. */
static void
check_errs(const char *name, const struct conf_errors *errs, const char *const *want, size_t nwant)
{
    char got[CONF_MAX_ERRORS][512];

    for (size_t i = 0; i < errs->count; i++)
        conf_format_error(NULL, name, &errs->list[i], got[i], sizeof(got[i]));
    if (errs->count != nwant) {
        for (size_t i = 0; i < errs->count; i++)
            print_error("got:  %s\n", got[i]);
        for (size_t i = 0; i < nwant; i++)
            print_error("want: %s\n", want[i]);
    }
    assert_int_equal(errs->count, nwant);
    for (size_t i = 0; i < nwant; i++)
        assert_string_equal(got[i], want[i]);
}

static void
expect_errors(const char *text, const char *const *want, size_t nwant)
{
    struct conf_errors errs;
    struct conf *c = load(text, &errs);

    check_errs("t.conf", &errs, want, nwant);
    assert_null(c);
}

#define EXPECT_ERRORS(text, ...)                                                                   \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        expect_errors(text, want_, ARRAY_SIZE(want_));                                             \
    } while (0)

static int
expected_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 4 ? 4 : (int)n;
}

/* ---- a full file --------------------------------------------------------- */

static const char full_conf[] =
    "# every directive once\n"                                               /* 1 */
    "workers 3;\n"                                                           /* 2 */
    "log_format json;\n"                                                     /* 3 */
    "log_level debug;\n"                                                     /* 4 */
    "limits {\n"                                                             /* 5 */
    "    max_client_conn 500;\n"                                             /* 6 */
    "    max_packet_size 64KB;\n"                                            /* 7 */
    "    startup_timeout 1500ms;\n"                                          /* 8 */
    "    connect_timeout 2s;\n"                                              /* 9 */
    "    shutdown_timeout 1m;\n"                                             /* 10 */
    "}\n"                                                                    /* 11 */
    "admin { listen [::1]:9191; token_file \"/etc/tandem/token\"; }\n"       /* 12 */
    "backend blue {\n"                                                       /* 13 */
    "    address db1.internal:5432;\n"                                       /* 14 */
    "    tls verify-full;\n"                                                 /* 15 */
    "    tls_ca_file /etc/ssl/ca.pem;\n"                                     /* 16 */
    "    tls_server_name db.internal;\n"                                     /* 17 */
    "    user tandem;\n"                                                     /* 18 */
    "    password_file /etc/tandem/blue.pw;\n"                               /* 19 */
    "}\n"                                                                    /* 20 */
    "backend green {\n"                                                      /* 21 */
    "    address 10.0.0.2:5433;   # the new system\n"                        /* 22 */
    "    tls require;\n"                                                     /* 23 */
    "    user \"shadow user\";\n"                                            /* 24 */
    "    password \"s3\\\"cr\\\\t\";\n"                                      /* 25 */
    "}\n"                                                                    /* 26 */
    "listener pg {\n"                                                        /* 27 */
    "    listen 0.0.0.0:6432;\n"                                             /* 28 */
    "    protocol postgres;\n"                                               /* 29 */
    "    tls_cert /etc/tandem/cert.pem;\n"                                   /* 30 */
    "    tls_key /etc/tandem/key.pem;\n"                                     /* 31 */
    "    primary blue;\n"                                                    /* 32 */
    "    shadow green;\n"                                                    /* 33 */
    "    mode split;\n"                                                      /* 34 */
    "}\n"                                                                    /* 35 */
    "listener cache { listen [::]:6380; protocol redis; primary green; }\n"; /* 36 */

static void
test_full_file(void **state)
{
    (void)state;
    struct conf *c = load_ok(full_conf);

    assert_string_equal(c->file, "t.conf");
    assert_int_equal(c->workers, 3);
    assert_int_equal(c->log_format, CONF_LOG_JSON);
    assert_int_equal(c->log_level, CONF_LOG_DEBUG);
    assert_int_equal(c->limits.max_client_conn, 500);
    assert_int_equal(c->limits.max_packet_size, 64 * 1024);
    assert_int_equal(c->limits.startup_timeout_ms, 1500);
    assert_int_equal(c->limits.connect_timeout_ms, 2000);
    assert_int_equal(c->limits.shutdown_timeout_ms, 60000);
    assert_int_equal(c->admin.enabled, 1);
    assert_string_equal(c->admin.addr.host, "::1");
    assert_int_equal(c->admin.addr.port, 9191);
    assert_string_equal(c->admin.token_file, "/etc/tandem/token");

    assert_int_equal(c->nbackends, 2);
    const struct conf_backend *blue = &c->backends[0], *green = &c->backends[1];
    assert_string_equal(blue->name, "blue");
    assert_string_equal(blue->addr.host, "db1.internal");
    assert_int_equal(blue->addr.port, 5432);
    assert_int_equal(blue->tls, CONF_TLS_VERIFY_FULL);
    assert_string_equal(blue->tls_ca_file, "/etc/ssl/ca.pem");
    assert_string_equal(blue->tls_server_name, "db.internal");
    assert_string_equal(blue->user, "tandem");
    assert_string_equal(blue->password, "");
    assert_string_equal(blue->password_file, "/etc/tandem/blue.pw");
    assert_int_equal(blue->line, 13);
    assert_string_equal(green->name, "green");
    assert_string_equal(green->addr.host, "10.0.0.2");
    assert_int_equal(green->addr.port, 5433);
    assert_int_equal(green->tls, CONF_TLS_REQUIRE);
    assert_string_equal(green->tls_ca_file, "");
    assert_string_equal(green->tls_server_name, "");
    assert_string_equal(green->user, "shadow user");
    assert_string_equal(green->password, "s3\"cr\\t");
    assert_string_equal(green->password_file, "");
    assert_int_equal(green->line, 21);

    assert_int_equal(c->nlisteners, 2);
    const struct conf_listener *pg = &c->listeners[0], *cache = &c->listeners[1];
    assert_string_equal(pg->name, "pg");
    assert_string_equal(pg->addr.host, "0.0.0.0");
    assert_int_equal(pg->addr.port, 6432);
    assert_int_equal(pg->proto, CONF_PROTO_POSTGRES);
    assert_string_equal(pg->tls_cert, "/etc/tandem/cert.pem");
    assert_string_equal(pg->tls_key, "/etc/tandem/key.pem");
    assert_int_equal(pg->primary, 0);
    assert_int_equal(pg->shadow, 1);
    assert_int_equal(pg->mode, CONF_MODE_SPLIT);
    assert_int_equal(pg->line, 27);
    assert_string_equal(cache->name, "cache");
    assert_string_equal(cache->addr.host, "::");
    assert_int_equal(cache->addr.port, 6380);
    assert_int_equal(cache->proto, CONF_PROTO_REDIS);
    assert_string_equal(cache->tls_cert, "");
    assert_int_equal(cache->primary, 1);
    assert_int_equal(cache->shadow, -1);
    assert_int_equal(cache->mode, CONF_MODE_PASSTHROUGH);
    assert_int_equal(cache->line, 36);

    assert_int_equal(conf_backend_find(c, "green"), 1);
    assert_int_equal(conf_backend_find(c, "nope"), -1);
    assert_int_equal(conf_backend_find(NULL, "green"), -1);
    conf_free(c);
}

static void
test_defaults(void **state)
{
    (void)state;
    struct conf *c = load_ok(MIN);

    assert_int_equal(c->workers, expected_workers());
    assert_int_equal(c->log_format, CONF_LOG_TEXT);
    assert_int_equal(c->log_level, CONF_LOG_INFO);
    assert_int_equal(c->limits.max_client_conn, 10000);
    assert_int_equal(c->limits.max_packet_size, 1 << 20);
    assert_int_equal(c->limits.startup_timeout_ms, 10000);
    assert_int_equal(c->limits.connect_timeout_ms, 5000);
    assert_int_equal(c->limits.shutdown_timeout_ms, 30000);
    assert_int_equal(c->limits.client_idle_timeout_ms, 3600000);
    assert_int_equal(c->limits.tcp_keepalive_ms, 60000);
    assert_int_equal(c->limits.tcp_user_timeout_ms, 30000);
    assert_int_equal(c->limits.max_command_size, 64u << 20);
    assert_int_equal(c->limits.max_prepared_bytes, 8u << 20);
    assert_int_equal(c->admin.enabled, 0);
    assert_int_equal(c->backends[0].tls, CONF_TLS_DISABLE);
    assert_string_equal(c->backends[0].user, "");
    assert_int_equal(c->listeners[0].proto, CONF_PROTO_POSTGRES);
    assert_int_equal(c->listeners[0].primary, 0);
    assert_int_equal(c->listeners[0].shadow, -1);
    assert_int_equal(c->listeners[0].mode, CONF_MODE_PASSTHROUGH);
    assert_true(c->listeners[0].mirror.reads == 0.10);
    assert_int_equal(c->listeners[0].mirror.level, CONF_MIRROR_ALL);
    assert_int_equal(c->listeners[0].mirror.queue_bytes, 0);
    assert_int_equal(c->listeners[0].mirror.timeout_ms, 0);
    assert_int_equal(c->listeners[0].compare.nignore_columns, 0);
    assert_int_equal(c->nwrite_functions, 0);
    conf_free(c);

    /* admin { } alone: on, at the default address. */
    c = load_ok(MIN "admin { }\n");
    assert_int_equal(c->admin.enabled, 1);
    assert_string_equal(c->admin.addr.host, "127.0.0.1");
    assert_int_equal(c->admin.addr.port, 9090);
    assert_string_equal(c->admin.token_file, "");
    assert_int_equal(c->admin.nserver_names, 0);
    conf_free(c);

    /* server_name: the names the Host header may carry */
    c = load_ok(MIN "admin { server_name tandem.internal Ops-1.example; }\n");
    assert_int_equal(c->admin.nserver_names, 2);
    assert_string_equal(c->admin.server_names[0], "tandem.internal");
    assert_string_equal(c->admin.server_names[1], "Ops-1.example");
    conf_free(c);
}

/*
 * Redis listeners: shared server connections by default, one per worker.
 * PostgreSQL listeners: dedicated by default, or reuse (16 kept per worker).
 */
static void
test_server_connections(void **state)
{
    (void)state;
    struct conf *c = load_ok("backend blue { address a:1; }\n"
                             "listener r { listen d:1; protocol redis; primary blue; }\n"
                             "listener s { listen e:1; protocol redis; primary blue;\n"
                             "             server_connections dedicated; server_pool 8; }\n");
    assert_int_equal(c->listeners[0].server_conns, CONF_SERVER_CONNS_SHARED);
    assert_int_equal(c->listeners[0].server_pool, 1);
    assert_int_equal(c->listeners[1].server_conns, CONF_SERVER_CONNS_DEDICATED);
    assert_int_equal(c->listeners[1].server_pool, 8);
    conf_free(c);
    c = load_ok("backend blue { address a:1; }\n"
                "listener a { listen d:1; primary blue; }\n"
                "listener b { listen e:1; primary blue; server_connections reuse;\n"
                "             auth_file /etc/u.txt;\n"
                "             server_idle_timeout 5s; server_lifetime 10m;\n"
                "             server_reset_query \"RESET ALL\"; }\n");
    assert_int_equal(c->listeners[0].server_conns, CONF_SERVER_CONNS_DEDICATED);
    assert_int_equal(c->listeners[0].server_pool, 16);
    assert_int_equal(c->listeners[0].server_idle_timeout_ms, 60000);
    assert_int_equal(c->listeners[0].server_lifetime_ms, 3600000);
    assert_string_equal(c->listeners[0].server_reset_query, "DISCARD ALL");
    assert_int_equal(c->listeners[1].server_conns, CONF_SERVER_CONNS_REUSE);
    assert_int_equal(c->listeners[1].server_idle_timeout_ms, 5000);
    assert_int_equal(c->listeners[1].server_lifetime_ms, 600000);
    assert_string_equal(c->listeners[1].server_reset_query, "RESET ALL");
    conf_free(c);
    EXPECT_ERRORS("backend blue { address a:1; }\n"
                  "listener pg { listen d:1; primary blue;\n"
                  "              server_connections shared; }\n",
                  "t.conf:3: listener \"pg\": server_connections shared applies to protocol "
                  "redis only (postgres: dedicated | reuse)");
    EXPECT_ERRORS("backend blue { address a:1; }\n"
                  "listener r { listen d:1; protocol redis; primary blue;\n"
                  "             server_connections reuse; }\n",
                  "t.conf:3: listener \"r\": server_connections reuse applies to protocol "
                  "postgres only");
    EXPECT_ERRORS("backend blue { address a:1; }\n"
                  "listener pg { listen d:1; primary blue;\n"
                  "              server_connections reuse; }\n",
                  "t.conf:3: listener \"pg\": server_connections reuse needs auth_file or "
                  "auth_query (with relayed authentication the server checks every password)");
    /* a top-level auth_file is the listener's */
    c = load_ok("auth_file /etc/u.txt;\nbackend blue { address a:1; }\n"
                "listener pg { listen d:1; primary blue; server_connections reuse; }\n");
    assert_int_equal(c->listeners[0].server_conns, CONF_SERVER_CONNS_REUSE);
    conf_free(c);
    EXPECT_ERRORS("backend blue { address a:1; }\n"
                  "listener r { listen d:1; protocol redis; primary blue;\n"
                  "             server_lifetime 1h; }\n",
                  "t.conf:3: listener \"r\": server_lifetime applies to protocol postgres only");
    EXPECT_ERRORS("backend blue { address a:1; }\n"
                  "listener r { listen d:1; protocol redis; primary blue; server_pool 0; }\n",
                  "t.conf:2: server_pool: \"0\" out of range 1..64");
}

static void
test_auth_sources(void **state)
{
    (void)state;
    /* a top-level auth_file serves every postgres listener without its own */
    struct conf *c = load_ok("auth_file /etc/u.txt;\n"
                             "backend blue { address a:1; user t; }\n"
                             "listener a { listen d:1; primary blue; }\n"
                             "listener b { listen e:1; primary blue; auth_file /etc/b.txt;\n"
                             "             auth_query default; auth_query_refresh 5s; }\n"
                             "listener r { listen f:1; protocol redis; primary blue; }\n");
    assert_string_equal(c->listeners[0].auth_file, "/etc/u.txt");
    assert_string_equal(c->listeners[1].auth_file, "/etc/b.txt");
    assert_string_equal(c->listeners[2].auth_file, "");
    assert_string_equal(c->listeners[0].auth_query, "");
    assert_string_equal(c->listeners[1].auth_query, CONF_AUTH_QUERY_DEFAULT);
    assert_int_equal(c->listeners[1].auth_query_refresh_ms, 5000);
    assert_int_equal(c->listeners[0].auth_query_refresh_ms, 60000);
    conf_free(c);
    EXPECT_ERRORS("backend blue { address a:1; }\nbackend green { address b:1; user t; }\n"
                  "listener pg { listen d:1; primary blue; shadow green;\n"
                  "              auth_query default; }\n",
                  "t.conf:4: listener \"pg\": auth_query runs as tandem's own login: backend "
                  "\"blue\" needs a user (and password or password_file)");
    EXPECT_ERRORS("backend blue { address a:1; user t; }\n"
                  "listener pg { listen d:1; primary blue;\n"
                  "              auth_query \"SELECT 1, 2\"; auth_query_refresh 0s; }\n",
                  "t.conf:3: auth_query_refresh: \"0s\" out of range 1s..24h",
                  "t.conf:3: listener \"pg\": auth_query must take the user name as $1");
    EXPECT_ERRORS("backend blue { address a:1; }\n"
                  "listener r { listen d:1; protocol redis; primary blue; auth_query default;\n"
                  "             auth_query_refresh 1m; }\n"
                  "listener p { listen e:1; primary blue; auth_query_refresh 1m; }\n",
                  "t.conf:2: listener \"r\": auth_query applies to protocol postgres only",
                  "t.conf:4: listener \"p\": auth_query_refresh needs auth_query");
}

static void
test_defaults_shadow_mode(void **state)
{
    (void)state;
    struct conf *c = load_ok("backend blue { address a:1; }\nbackend green { address b:2; }\n"
                             "listener pg { listen c:3; primary blue; shadow green; }\n");
    assert_int_equal(c->listeners[0].shadow, 1);
    assert_int_equal(c->listeners[0].mode, CONF_MODE_SHADOW);
    conf_free(c);
}

#define GUARD_CONF(body)                                                                           \
    "backend blue { address a:1; }\nbackend green { address b:2; }\n"                             \
    "listener pg { listen c:3; primary blue; shadow green; mode split;\n" body "}\n"

static void
test_guards(void **state)
{
    (void)state;
    struct conf *c = load_ok(GUARD_CONF(
        "guard e { metric shadow_error_rate; above 2.5%; window 30s; min_samples 10;\n"
        "          action rollback; cooldown 1m; }\n"
        "guard p { metric latency_ratio_p99; above 3; }\n"
        "guard l { metric lag; above 1500ms; action stop-mirroring; }\n"
        "guard d { metric backend_down; }\n"));
    const struct conf_listener *l = &c->listeners[0];
    assert_int_equal(l->nguards, 4);
    assert_int_equal(l->guards[0].metric, CONF_GUARD_SHADOW_ERROR_RATE);
    assert_true(l->guards[0].above > 0.0249 && l->guards[0].above < 0.0251);
    assert_int_equal(l->guards[0].window_ms, 30000);
    assert_int_equal(l->guards[0].min_samples, 10);
    assert_int_equal(l->guards[0].action, CONF_GUARD_ROLLBACK);
    assert_int_equal(l->guards[0].cooldown_ms, 60000);
    /* defaults: 60 s, 100 samples, reads to the primary, 5 min */
    assert_true(l->guards[1].above == 3.0);
    assert_int_equal(l->guards[1].window_ms, 60000);
    assert_int_equal(l->guards[1].min_samples, 100);
    assert_int_equal(l->guards[1].action, CONF_GUARD_READS_TO_PRIMARY);
    assert_int_equal(l->guards[1].cooldown_ms, 300000);
    assert_true(l->guards[2].above == 1.5);
    assert_int_equal(l->guards[2].action, CONF_GUARD_STOP_MIRRORING);
    assert_int_equal(l->guards[3].metric, CONF_GUARD_BACKEND_DOWN);
    conf_free(c);

    EXPECT_ERRORS(GUARD_CONF("guard x { metric latency_ratio_p50; above fast; }\n"),
                  "t.conf:4: guard \"x\": above: bad ratio \"fast\" (expected a number like 2.0)");
    EXPECT_ERRORS(GUARD_CONF("guard x { metric mismatch_rate; above 120%; }\n"),
                  "t.conf:4: guard \"x\": above: bad percentage \"120%\" (expected 0%..100%)");
    EXPECT_ERRORS(GUARD_CONF("guard x { metric backend_down; above 1; }\n"),
                  "t.conf:4: guard \"x\": above: backend_down takes no threshold");
    EXPECT_ERRORS(GUARD_CONF("guard x { metric lag; action panic; }\n"),
                  "t.conf:4: action: bad value \"panic\" (expected "
                  "reads-to-primary|stop-mirroring|rollback)");
}

/* ---- syntax -------------------------------------------------------------- */

static void
test_syntax_accepted(void **state)
{
    (void)state;
    /* Comments anywhere, '#' inside a word, quoted names, strings over lines. */
    struct conf *c = load_ok("#top\n"
                             "\"backend\" blue{address 127.0.0.1:5432;}# trailing\n"
                             "listener pg {\n"
                             "  listen \"127.0.0.1:6432\" ; primary blue;\n"
                             "}\n"
                             "admin { token_file /a#b; listen \"[fe80::1%eth0]:9\";\n"
                             "        read_token_file /r#c; }\n");
    assert_string_equal(c->admin.token_file, "/a#b");
    assert_string_equal(c->admin.read_token_file, "/r#c");
    assert_string_equal(c->admin.addr.host, "fe80::1%eth0");
    conf_free(c);

    /* Line numbers count the newlines inside strings. */
    struct conf_errors errs;
    c = load(MIN "user \"a\nb\"; foo;\n", &errs);
    assert_null(c);
    assert_int_equal(errs.count, 2);
    assert_int_equal(errs.list[0].line, 3);
    assert_int_equal(errs.list[1].line, 4);
}

/* ---- errors: one per case, exact text and line --------------------------- */

struct error_case {
    const char *text;
    const char *want;
};

static const struct error_case error_cases[] = {
    /* unknown and misplaced directives */
    {MIN "foo 1;\n", "t.conf:3: unknown directive \"foo\""},
    {MIN "\n\nfoo { bar; }\n", "t.conf:5: unknown directive \"foo\""},
    {"backend blue { address a:1; }\n"
     "listener pg { listen b:2; primary blue; canary { } }\n",
     "t.conf:2: missing name for \"canary\""},
    {MIN "mirror { }\n", "t.conf:3: directive \"mirror\" is not allowed at top level"},
    {MIN "write_functions;\n", "t.conf:3: missing value for \"write_functions\""},
    {MIN "guard g { }\n", "t.conf:3: directive \"guard\" is not allowed at top level"},
    {MIN "galaxy { }\n", "t.conf:3: unknown directive \"galaxy\""},
    {MIN "listen 1.2.3.4:5;\n", "t.conf:3: directive \"listen\" is not allowed at top level"},
    {MIN "limits { workers 2; }\n", "t.conf:3: directive \"workers\" is not allowed in limits"},
    {"backend blue { address a:1; listen b:2; }\n"
     "listener pg { listen c:3; primary blue; }\n",
     "t.conf:1: directive \"listen\" is not allowed in backend"},
    {MIN "admin { address a:1; }\n", "t.conf:3: directive \"address\" is not allowed in admin"},
    /* argument counts */
    {MIN "workers 1 2;\n", "t.conf:3: \"workers\" takes 1 argument, got 2"},
    {MIN "workers;\n", "t.conf:3: missing value for \"workers\""},
    {MIN "limits x { }\n", "t.conf:3: \"limits\" takes no arguments, got 1"},
    {MIN "backend { address a:1; }\n", "t.conf:3: missing name for \"backend\""},
    {MIN "backend a b { address a:1; }\n", "t.conf:3: \"backend\" takes 1 argument, got 2"},
    /* block vs simple */
    {MIN "limits;\n", "t.conf:3: directive \"limits\" needs a { } block"},
    {MIN "backend green;\n", "t.conf:3: directive \"backend\" needs a { } block"},
    {MIN "workers 2 { }\n", "t.conf:3: directive \"workers\" does not take a { } block"},
    /* duplicates in a block */
    {MIN "workers 1;\nworkers 2;\n", "t.conf:4: duplicate directive \"workers\""},
    {MIN "limits { }\nlimits { }\n", "t.conf:4: duplicate directive \"limits\""},
    {"backend blue { address a:1;\n address b:2; }\n"
     "listener pg { listen c:3; primary blue; }\n",
     "t.conf:2: duplicate directive \"address\""},
    /* numbers and ranges */
    {MIN "workers 0;\n", "t.conf:3: workers: \"0\" out of range 1..64"},
    {MIN "workers 65;\n", "t.conf:3: workers: \"65\" out of range 1..64"},
    {MIN "workers x;\n", "t.conf:3: workers: bad number \"x\""},
    {MIN "workers -1;\n", "t.conf:3: workers: bad number \"-1\""},
    {MIN "workers 99999999999999999999999;\n",
     "t.conf:3: workers: \"99999999999999999999999\" out of range 1..64"},
    {MIN "limits { max_client_conn 0; }\n",
     "t.conf:3: max_client_conn: \"0\" out of range 1..1000000"},
    {MIN "limits { max_client_conn 1000001; }\n",
     "t.conf:3: max_client_conn: \"1000001\" out of range 1..1000000"},
    {MIN "limits { max_packet_size 1023; }\n",
     "t.conf:3: max_packet_size: \"1023\" out of range 1KB..1GB"},
    {MIN "limits { max_packet_size 1025MB; }\n",
     "t.conf:3: max_packet_size: \"1025MB\" out of range 1KB..1GB"},
    {MIN "limits { max_packet_size 99999999999GB; }\n",
     "t.conf:3: max_packet_size: \"99999999999GB\" out of range 1KB..1GB"},
    {MIN "limits { max_packet_size 12XB; }\n", "t.conf:3: max_packet_size: bad size \"12XB\""},
    {MIN "limits { max_packet_size 1.5MB; }\n", "t.conf:3: max_packet_size: bad size \"1.5MB\""},
    {MIN "limits { startup_timeout 0ms; }\n",
     "t.conf:3: startup_timeout: \"0ms\" out of range 1ms..1h"},
    {MIN "limits { tcp_keepalive 61m; }\n",
     "t.conf:3: tcp_keepalive: \"61m\" out of range 0s..1h"},
    {MIN "limits { client_idle_timeout 169h; }\n",
     "t.conf:3: client_idle_timeout: \"169h\" out of range 0s..168h"},
    {MIN "limits { connect_timeout 3601s; }\n",
     "t.conf:3: connect_timeout: \"3601s\" out of range 1ms..1h"},
    {MIN "limits { shutdown_timeout 2h; }\n",
     "t.conf:3: shutdown_timeout: \"2h\" out of range 1ms..1h"},
    {MIN "limits { shutdown_timeout 10; }\n", "t.conf:3: shutdown_timeout: bad duration \"10\""},
    {MIN "limits { shutdown_timeout 10d; }\n", "t.conf:3: shutdown_timeout: bad duration \"10d\""},
    /* enums */
    {MIN "log_format xml;\n", "t.conf:3: log_format: bad value \"xml\" (expected text|json)"},
    {MIN "log_level trace;\n",
     "t.conf:3: log_level: bad value \"trace\" (expected debug|info|warn|error)"},
    {"backend blue { address a:1; tls maybe; }\nlistener pg { listen c:3; primary blue; }\n",
     "t.conf:1: tls: bad value \"maybe\" (expected disable|require|verify-full)"},
    {"backend blue { address a:1; }\nlistener pg { listen c:3; primary blue; protocol mysql; }\n",
     "t.conf:2: protocol: bad value \"mysql\" (expected postgres|redis)"},
    {"backend blue { address a:1; }\nlistener pg { listen c:3; primary blue; mode on; }\n",
     "t.conf:2: mode: bad value \"on\" (expected passthrough|shadow|split)"},
    /* addresses */
    {MIN "admin { server_name 10.0.0.1; }\n", "t.conf:3: server_name: bad value \"10.0.0.1\""},
    {MIN "admin { server_name a:80; }\n", "t.conf:3: server_name: bad value \"a:80\""},
    {MIN "admin { server_name \"\"; }\n", "t.conf:3: server_name: bad value \"\""},
    {MIN "admin { listen x; }\n", "t.conf:3: listen: bad address \"x\""},
    {MIN "admin { listen h:0; }\n", "t.conf:3: listen: bad address \"h:0\""},
    {MIN "admin { listen h:65536; }\n", "t.conf:3: listen: bad address \"h:65536\""},
    {MIN "admin { listen h:; }\n", "t.conf:3: listen: bad address \"h:\""},
    {MIN "admin { listen :80; }\n", "t.conf:3: listen: bad address \":80\""},
    {MIN "admin { listen ::1:80; }\n", "t.conf:3: listen: bad address \"::1:80\""},
    {MIN "admin { listen [::1]; }\n", "t.conf:3: listen: bad address \"[::1]\""},
    {MIN "admin { listen []:80; }\n", "t.conf:3: listen: bad address \"[]:80\""},
    {MIN "admin { listen [1.2.3.4]:80; }\n", "t.conf:3: listen: bad address \"[1.2.3.4]:80\""},
    {MIN "admin { listen \"a b:80\"; }\n", "t.conf:3: listen: bad address \"a b:80\""},
    {MIN "admin { listen h:+80; }\n", "t.conf:3: listen: bad address \"h:+80\""},
    /* strings and names */
    {MIN "admin { token_file \"\"; }\n", "t.conf:3: token_file: empty value"},
    {MIN "admin {\n read_token_file /r; }\n",
     "t.conf:4: admin: read_token_file needs token_file (the token of the mutating calls)"},
    {MIN "backend \"a b\" { address a:1; }\n", "t.conf:3: backend: bad name \"a b\""},
    {MIN "listener \"\" { listen c:9; primary blue; }\n", "t.conf:3: listener: bad name \"\""},
    {"backend blue { address a:1; }\nlistener pg { listen c:3; primary \"b\\tl\"; }\n",
     "t.conf:2: primary: bad name \"b\\x09l\""},
    /* duplicates across blocks */
    {MIN "backend blue { address x:1; }\n", "t.conf:3: duplicate backend \"blue\""},
    {MIN "listener pg { listen x:1; primary blue; }\n", "t.conf:3: duplicate listener \"pg\""},
    {MIN "listener pg2 {\n primary blue;\n listen 127.0.0.1:6432; }\n",
     "t.conf:5: listener \"pg2\": address 127.0.0.1:6432 already used by listener \"pg\""},
    {MIN "admin {\n listen 127.0.0.1:6432; }\n",
     "t.conf:4: admin: address 127.0.0.1:6432 already used by listener \"pg\""},
    /* listener completeness and references */
    {"backend blue { address a:1; }\nlistener pg { primary blue; }\n",
     "t.conf:2: listener \"pg\": missing \"listen\""},
    {"backend blue { address a:1; }\nlistener pg { listen c:3; }\n",
     "t.conf:2: listener \"pg\": missing \"primary\""},
    {"backend blue { }\nlistener pg { listen c:3; primary blue; }\n",
     "t.conf:1: backend \"blue\": missing \"address\""},
    {"backend blue { address a:1; }\nlistener pg {\n listen c:3;\n primary bleu;\n}\n",
     "t.conf:4: listener \"pg\": unknown backend \"bleu\""},
    {"backend blue { address a:1; }\nlistener pg {\n listen c:3;\n primary blue;\n"
     " shadow green; }\n",
     "t.conf:5: listener \"pg\": unknown backend \"green\""},
    {"backend blue { address a:1; }\nlistener pg {\n listen c:3;\n primary blue;\n"
     " shadow blue; }\n",
     "t.conf:5: listener \"pg\": shadow is the same backend as primary"},
    {"backend blue { address a:1; }\nlistener pg {\n listen c:3;\n mode shadow;\n"
     " primary blue; }\n",
     "t.conf:4: listener \"pg\": mode shadow needs a shadow backend"},
    {"backend blue { address a:1; }\nlistener pg { listen c:3;\n mode split; primary blue; }\n",
     "t.conf:3: listener \"pg\": mode split needs a shadow backend"},
    /* TLS pairs */
    {"backend blue { address a:1; }\nlistener pg { listen c:3; primary blue;\n"
     " tls_cert /c.pem; }\n",
     "t.conf:3: listener \"pg\": tls_cert without tls_key"},
    {"backend blue { address a:1; }\nlistener pg { listen c:3; primary blue;\n"
     " tls_key /k.pem; }\n",
     "t.conf:3: listener \"pg\": tls_key without tls_cert"},
    {"backend blue {\n address a:1;\n tls verify-full; }\nlistener pg { listen c:3; primary blue; "
     "}\n",
     "t.conf:3: backend \"blue\": tls verify-full needs tls_ca_file"},
    /* a backend's client certificate: both files, over TLS only */
    {"backend blue {\n address a:1;\n tls require;\n tls_cert /c.pem; }\n"
     "listener pg { listen c:3; primary blue; }\n",
     "t.conf:4: backend \"blue\": tls_cert without tls_key"},
    {"backend blue {\n address a:1;\n tls require;\n tls_key /k.pem; }\n"
     "listener pg { listen c:3; primary blue; }\n",
     "t.conf:4: backend \"blue\": tls_key without tls_cert"},
    {"backend blue {\n address a:1;\n tls_cert /c.pem;\n tls_key /k.pem; }\n"
     "listener pg { listen c:3; primary blue; }\n",
     "t.conf:3: backend \"blue\": tls_cert is shown over TLS only: set tls require or "
     "verify-full"},
    /* a Redis listener is TLS from the first byte or not at all */
    {"backend blue { address a:1; }\nlistener r { listen c:3; protocol redis; primary blue;\n"
     " tls optional; }\n",
     "t.conf:3: listener \"r\": tls optional is for postgres listeners (a redis listener with "
     "tls_cert is TLS from the first byte: tls required)"},
    {"backend blue {\n address a:1;\n password x;\n password_file /p; }\n"
     "listener pg { listen c:3; primary blue; }\n",
     "t.conf:4: backend \"blue\": password and password_file are mutually exclusive"},
    /* the configuration as a whole */
    {"backend blue { address a:1; }\n", "tandem: no listener defined"},
    {"", "tandem: no listener defined"},
    /* recoverable syntax slips */
    {MIN "}\n", "t.conf:3: unexpected \"}\""},
    {MIN ";\n", "t.conf:3: unexpected \";\""},
    {MIN "{ workers 1; }\n", "t.conf:3: unexpected \"{\""},
    {MIN "workers 2\n", "t.conf:3: missing \";\" after \"workers\""},
    {"backend blue { address a:1 }\nlistener pg { listen c:3; primary blue; }\n",
     "t.conf:1: missing \";\" after \"address\""},
    /* fatal syntax errors */
    {MIN "backend green {\n address b:2;\n", "t.conf:3: unterminated block \"backend\""},
    {MIN "admin { token_file \"abc;\n}\n", "t.conf:3: unterminated string"},
    {MIN "admin { token_file \"a\\qb\"; }\n", "t.conf:3: bad escape \"\\q\" in string"},
    {MIN "admin { token_file \"a\\", "t.conf:3: unterminated string"},
};

static void
test_error_cases(void **state)
{
    (void)state;
    for (size_t i = 0; i < ARRAY_SIZE(error_cases); i++) {
        print_message("case %zu: %s\n", i, error_cases[i].want);
        expect_errors(error_cases[i].text, &error_cases[i].want, 1);
    }
}

/* A missing "primary" and "listen" and an unknown backend: all named, in order. */
static void
test_multiple_errors(void **state)
{
    (void)state;
    /* clang-format off */
    EXPECT_ERRORS("workers 0;\n"                                          /* 1 */
                  "frobnicate;\n"                                         /* 2 */
                  "limits { max_packet_size 1KiB; }\n"                    /* 3 */
                  "backend blue { address nope; }\n"                      /* 4 */
                  "backend blue { address a:1; }\n"                       /* 5 */
                  "listener pg {\n"                                       /* 6 */
                  "  primary green;\n"                                    /* 7 */
                  "  mode split;\n"                                       /* 8 */
                  "}\n"                                                   /* 9 */
                  "listener redis { primary blue; listen a:1; tls_key /k; }\n", /* 10 */
                  "t.conf:1: workers: \"0\" out of range 1..64",
                  "t.conf:2: unknown directive \"frobnicate\"",
                  "t.conf:3: max_packet_size: bad size \"1KiB\"",
                  "t.conf:4: address: bad address \"nope\"",
                  "t.conf:5: duplicate backend \"blue\"",
                  "t.conf:6: listener \"pg\": missing \"listen\"",
                  "t.conf:8: listener \"pg\": mode split needs a shadow backend",
                  "t.conf:10: listener \"redis\": tls_key without tls_cert",
                  /* references are resolved once every backend is known */
                  "t.conf:7: listener \"pg\": unknown backend \"green\"");
    /* clang-format on */

    /* Slips that do not hide the structure still let the directives be checked. */
    EXPECT_ERRORS(MIN "workers 2\n}\nlog_level loud;\n",
                  "t.conf:3: missing \";\" after \"workers\"", "t.conf:4: unexpected \"}\"",
                  "t.conf:5: log_level: bad value \"loud\" (expected debug|info|warn|error)");

    /* A fatal one stops there: no noise about what the rest would have held. */
    EXPECT_ERRORS("workers 2 }\n;\nlistener pg {\n", "t.conf:1: missing \";\" after \"workers\"",
                  "t.conf:1: unexpected \"}\"", "t.conf:2: unexpected \";\"",
                  "t.conf:3: unterminated block \"listener\"");
}

static void
test_error_overflow(void **state)
{
    (void)state;
    char text[4096];
    size_t used = snprintf(text, sizeof(text), "%s", MIN);
    struct conf_errors errs;

    for (int i = 0; i < CONF_MAX_ERRORS + 10; i++)
        used += snprintf(text + used, sizeof(text) - used, "x%d;\n", i);
    assert_null(load(text, &errs));
    assert_int_equal(errs.count, CONF_MAX_ERRORS);
    assert_int_equal(errs.dropped, 10);
    assert_int_equal(errs.list[CONF_MAX_ERRORS - 1].line, CONF_MAX_ERRORS + 2);
}

static void
test_bounds(void **state)
{
    (void)state;
    struct conf_errors errs;
    size_t big = (1 << 20) + 1;
    char *buf = malloc(big);

    assert_non_null(buf);
    memset(buf, ' ', big);
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_buffer("t.conf", buf, big, &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.list[0].msg, "configuration too large (max 1048576 bytes)");
    assert_int_equal(errs.list[0].line, 0);

    /* No buffer at all is an empty file. */
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_buffer(NULL, NULL, 0, &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.list[0].msg, "no listener defined");

    /* A long token: refused with its line, not truncated or overflowed. */
    memset(buf, 'a', 5000);
    memcpy(buf, "\n\nworkers ", 10);
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_buffer("t.conf", buf, 5000, &errs));
    assert_int_equal(errs.count, 1);
    assert_int_equal(errs.list[0].line, 3);
    assert_string_equal(errs.list[0].msg, "token too long (max 4096 bytes)");

    /* A value longer than its field. */
    char *text = malloc(2048);
    assert_non_null(text);
    snprintf(text, 2048, "%sadmin { token_file /%01100d; }\n", MIN, 0);
    assert_null(load(text, &errs));
    assert_int_equal(errs.count, 1);
    assert_string_equal(errs.list[0].msg, "token_file: value too long (max 1023 bytes)");
    free(text);

    /* Nesting: 8 levels are read (and refused as unknown), 9 are not read. */
    EXPECT_ERRORS(MIN "a { a { a { a { a { a { a { a { } } } } } } } }\n",
                  "t.conf:3: unknown directive \"a\"");
    EXPECT_ERRORS(MIN "a { a { a { a { a { a { a { a {\n a { } } } } } } } } }\n",
                  "t.conf:4: blocks nested too deeply (max 8)");

    /* A NUL byte is refused, even inside the buffer's length. */
    memcpy(buf, "workers 1;\nwork\0ers 2;\n", 23);
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_buffer("t.conf", buf, 23, &errs));
    assert_int_equal(errs.count, 1);
    assert_int_equal(errs.list[0].line, 2);
    assert_string_equal(errs.list[0].msg, "NUL byte in configuration");

    /* Too many arguments for the tree. */
    EXPECT_ERRORS(MIN "workers 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17;\n",
                  "t.conf:3: too many arguments (max 16) for \"workers\"");

    /* Too many backends. */
    size_t cap = 128 * 64;
    text = malloc(cap);
    assert_non_null(text);
    size_t used = snprintf(text, cap, "%s", MIN);
    for (int i = 0; i < 64; i++)
        used += snprintf(text + used, cap - used, "backend b%d { address a:%d; }\n", i, i + 1);
    EXPECT_ERRORS(text, "t.conf:66: too many backends (max 64)");
    free(text);
    free(buf);
}

/* ---- files --------------------------------------------------------------- */

static void
test_load_file(void **state)
{
    (void)state;
    char path[] = "/tmp/test_conf_XXXXXX";
    int fd = mkstemp(path);
    struct conf_errors errs;
    char line[512];

    assert_true(fd >= 0);
    assert_int_equal(write(fd, full_conf, strlen(full_conf)), (ssize_t)strlen(full_conf));
    memset(&errs, 0, sizeof(errs));
    struct conf *c = conf_load_file(path, &errs);
    assert_non_null(c);
    assert_string_equal(c->file, path);
    assert_int_equal(c->nlisteners, 2);

    /* conf_format_error falls back to the snapshot's file name. */
    struct conf_error e = {.line = 7, .msg = "something"};
    char want[512];
    conf_format_error(c, NULL, &e, line, sizeof(line));
    snprintf(want, sizeof(want), "%s:7: something", path);
    assert_string_equal(line, want);
    conf_free(c);

    /* Errors carry the path given. */
    assert_int_equal(ftruncate(fd, 0), 0);
    assert_int_equal(pwrite(fd, "workers 0;\n", 11, 0), 11);
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_file(path, &errs));
    assert_int_equal(errs.count, 2);
    conf_format_error(NULL, path, &errs.list[0], line, sizeof(line));
    snprintf(want, sizeof(want), "%s:1: workers: \"0\" out of range 1..64", path);
    assert_string_equal(line, want);

    /*
     * Exactly 1 MiB is read (to the NUL padding on line 2, a fatal error, so
     * the "workers 0" before it is not checked); one byte more is refused.
     */
    assert_int_equal(ftruncate(fd, 1 << 20), 0);
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_file(path, &errs));
    assert_int_equal(errs.count, 1);
    assert_int_equal(errs.list[0].line, 2);
    assert_string_equal(errs.list[0].msg, "NUL byte in configuration");
    assert_int_equal(ftruncate(fd, (1 << 20) + 1), 0);
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_file(path, &errs));
    assert_int_equal(errs.count, 1);
    snprintf(want, sizeof(want), "cannot read \"%s\": larger than 1048576 bytes", path);
    assert_string_equal(errs.list[0].msg, want);
    close(fd);
    unlink(path);

    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_file("/nonexistent/tandem.conf", &errs));
    assert_int_equal(errs.count, 1);
    conf_format_error(NULL, "/nonexistent/tandem.conf", &errs.list[0], line, sizeof(line));
    assert_string_equal(
        line, "tandem: cannot read \"/nonexistent/tandem.conf\": No such file or directory");
}

/* ---- the command line ---------------------------------------------------- */

static struct conf *
load_args(const char *proto, struct conf_errors *errs, ...)
{
    char *argv[64];
    int argc = 0;
    va_list ap;

    va_start(ap, errs);
    for (const char *a; (a = va_arg(ap, const char *)) != NULL && argc < 64;)
        argv[argc++] = (char *)a;
    va_end(ap);
    memset(errs, 0, sizeof(*errs));
    return conf_load_args(proto, argc, argv, errs);
}

static void
assert_addr_equal(const struct conf_addr *x, const struct conf_addr *y)
{
    assert_string_equal(x->host, y->host);
    assert_int_equal(x->port, y->port);
}

/* Every field but the lines and the file name, which say where it came from. */
static void
assert_conf_equal(const struct conf *x, const struct conf *y)
{
    assert_int_equal(x->workers, y->workers);
    assert_int_equal(x->log_format, y->log_format);
    assert_int_equal(x->log_level, y->log_level);
    assert_memory_equal(&x->limits, &y->limits, sizeof(x->limits));
    assert_int_equal(x->admin.enabled, y->admin.enabled);
    assert_addr_equal(&x->admin.addr, &y->admin.addr);
    assert_string_equal(x->admin.token_file, y->admin.token_file);
    assert_string_equal(x->admin.read_token_file, y->admin.read_token_file);
    assert_int_equal(x->nbackends, y->nbackends);
    for (size_t i = 0; i < x->nbackends; i++) {
        const struct conf_backend *a = &x->backends[i], *b = &y->backends[i];
        assert_string_equal(a->name, b->name);
        assert_addr_equal(&a->addr, &b->addr);
        assert_int_equal(a->tls, b->tls);
        assert_string_equal(a->tls_ca_file, b->tls_ca_file);
        assert_string_equal(a->tls_server_name, b->tls_server_name);
        assert_string_equal(a->user, b->user);
        assert_string_equal(a->password, b->password);
        assert_string_equal(a->password_file, b->password_file);
    }
    assert_int_equal(x->nlisteners, y->nlisteners);
    for (size_t i = 0; i < x->nlisteners; i++) {
        const struct conf_listener *a = &x->listeners[i], *b = &y->listeners[i];
        assert_string_equal(a->name, b->name);
        assert_addr_equal(&a->addr, &b->addr);
        assert_int_equal(a->proto, b->proto);
        assert_string_equal(a->tls_cert, b->tls_cert);
        assert_string_equal(a->tls_key, b->tls_key);
        assert_int_equal(a->primary, b->primary);
        assert_int_equal(a->shadow, b->shadow);
        assert_int_equal(a->mode, b->mode);
        assert_memory_equal(&a->mirror, &b->mirror, sizeof(a->mirror));
        assert_int_equal(a->compare.nignore_columns, b->compare.nignore_columns);
        assert_int_equal(a->nread_weights, b->nread_weights);
        if (a->nread_weights > 0)
            assert_memory_equal(a->read_weights, b->read_weights,
                                a->nread_weights * sizeof(a->read_weights[0]));
        assert_int_equal(a->read_your_writes_ms, b->read_your_writes_ms);
        assert_int_equal(a->max_lag_ms, b->max_lag_ms);
        assert_int_equal(a->ncanaries, b->ncanaries);
    }
}

/* passfile: per-client-user shadow credentials, exclusive with a single password. */
static void
test_passfile(void **state)
{
    (void)state;
    struct conf *c = load_ok("backend blue { address a:1; }\n"
                             "backend green { address b:1; passfile /etc/tandem/green.pgpass; }\n"
                             "listener pg { listen c:1; primary blue; shadow green; }\n");
    assert_string_equal(c->backends[1].passfile, "/etc/tandem/green.pgpass");
    conf_free(c);
    struct conf_errors errs;
    c = load("backend blue { address a:1; }\n"
             "backend green { address b:1; password_file /p;\n"
             "  passfile /q; }\n"
             "listener pg { listen c:1; primary blue; shadow green; }\n",
             &errs);
    assert_null(c);
    assert_int_equal(errs.count, 1);
    assert_int_equal(errs.list[0].line, 3);
    assert_string_equal(errs.list[0].msg,
                        "backend \"green\": passfile and password/password_file are mutually "
                        "exclusive");
}

/* mirror { }, compare { } and write_functions: values, lists, bounds. */
static void
test_mirror_compare(void **state)
{
    (void)state;
    struct conf *c = load_ok(
        "write_functions audit_log billing.charge;\n"
        "limits { mirror_queue_total 512MB; }\n"
        "backend blue { address a:1; }\nbackend green { address b:1; }\n"
        "listener pg { listen c:1; primary blue; shadow green;\n"
        "  mirror { reads 0.5%; level ddl; queue 64KB; timeout 250ms; }\n"
        "  compare { ignore_columns updated_at created_at; ignore_fingerprints 0123456789abcdef; }\n"
        "}\n"
        "listener other { listen d:1; primary blue; }\n");
    assert_int_equal(c->nwrite_functions, 2);
    assert_string_equal(c->write_functions[0], "audit_log");
    assert_string_equal(c->write_functions[1], "billing.charge");
    assert_int_equal(c->limits.mirror_queue_total, 512ull << 20);
    const struct conf_listener *l = &c->listeners[0];
    assert_true(l->mirror.reads > 0.00499 && l->mirror.reads < 0.00501);
    assert_int_equal(l->mirror.level, CONF_MIRROR_DDL);
    assert_int_equal(l->mirror.queue_bytes, 64u << 10);
    assert_int_equal(l->mirror.timeout_ms, 250);
    assert_int_equal(l->compare.nignore_columns, 2);
    assert_string_equal(l->compare.ignore_columns[1], "created_at");
    assert_int_equal(l->compare.nignore_fingerprints, 1);
    assert_string_equal(l->compare.ignore_fingerprints[0], "0123456789abcdef");
    /* the default: 10% of reads, every kind of write */
    assert_true(c->listeners[1].mirror.reads > 0.0999 && c->listeners[1].mirror.reads < 0.1001);
    assert_int_equal(c->listeners[1].mirror.level, CONF_MIRROR_ALL);
    assert_int_equal(c->listeners[1].compare.nignore_columns, 0);
    conf_free(c);

    struct conf_errors errs;
    c = load("backend blue { address a:1; }\n"
             "listener pg { listen c:1; primary blue;\n"
             "  mirror { reads 101%; level some; queue 1KB; timeout 0ms; }\n"
             "  compare { ignore_fingerprints ABC; }\n"
             "}\nwrite_functions a..b;\n",
             &errs);
    assert_null(c);
    assert_int_equal(errs.count, 6);
    assert_string_equal(errs.list[0].msg, "reads: bad percentage \"101%\" (expected 0%..100%)");
    assert_string_equal(errs.list[1].msg, "level: bad value \"some\" (expected all|dml|ddl)");
    assert_string_equal(errs.list[2].msg, "queue: \"1KB\" out of range 64KB..1GB");
    assert_int_equal(errs.list[4].line, 4);
    assert_string_equal(errs.list[5].msg, "write_functions: bad value \"a..b\"");
}

static void
test_cli_equals_file(void **state)
{
    (void)state;
    struct conf_errors errs;
    struct conf *cli = load_args(
        "redis", &errs, "--listen", "0.0.0.0:6380", "--primary=old=10.0.0.1:6379", "--shadow",
        "[fd00::2]:6379", "--admin", "127.0.0.1:9191", "--workers", "2", "--mode=split",
        "--log-format", "json", "--log-level", "warn", "--max-client-conn", "200",
        "--max-packet-size", "512KB", "--startup-timeout", "3s", "--connect-timeout", "250ms",
        "--shutdown-timeout", "2m", "--tls-cert", "/c.pem", "--tls-key", "/k.pem", "--primary-tls",
        "verify-full", "--primary-ca", "/ca.pem", "--shadow-tls", "require", "--shadow-ca",
        "/ca2.pem", "--shadow-user", "mig", "--shadow-password-file", "/pw", "--admin-token-file",
        "/tok", "--admin-read-token-file", "/rtok", "--primary-user", "u1", "--primary-password-file", "/pw1", "--mirror-reads", "12.5%",
        "--mirror-level", "dml", "--mirror-queue", "8MB", "--mirror-timeout", "2s", NULL);
    assert_int_equal(errs.count, 0);
    assert_non_null(cli);

    struct conf *file =
        load_ok("workers 2; log_format json; log_level warn;\n"
                "limits { max_client_conn 200; max_packet_size 512KB;\n"
                "  startup_timeout 3s; connect_timeout 250ms; shutdown_timeout 2m; }\n"
                "admin { listen 127.0.0.1:9191; token_file /tok; read_token_file /rtok; }\n"
                "backend old { address 10.0.0.1:6379; tls verify-full;\n"
                "  tls_ca_file /ca.pem; user u1; password_file /pw1; }\n"
                "backend green { address [fd00::2]:6379; tls require;\n"
                "  tls_ca_file /ca2.pem; user mig; password_file /pw; }\n"
                "listener redis { listen 0.0.0.0:6380; protocol redis;\n"
                "  tls_cert /c.pem; tls_key /k.pem; primary old; shadow green;\n"
                "  mode split; mirror { reads 12.5%; level dml; queue 8MB; timeout 2s; } }\n");
    assert_conf_equal(cli, file);
    assert_string_equal(cli->file, "");
    assert_int_equal(cli->backends[0].line, 0);
    assert_int_equal(cli->listeners[0].line, 0);
    assert_string_equal(cli->backends[0].name, "old");
    assert_string_equal(cli->backends[1].name, "green");
    conf_free(cli);
    conf_free(file);

    /* The minimal forms, with default names and defaults everywhere else. */
    cli = load_args("postgres", &errs, "--listen", "127.0.0.1:6432", "--primary", "db:5432",
                    "--shadow", "db2:5432", NULL);
    assert_non_null(cli);
    file = load_ok("backend blue { address db:5432; }\nbackend green { address db2:5432; }\n"
                   "listener postgres { listen 127.0.0.1:6432; primary blue; shadow green; }\n");
    assert_conf_equal(cli, file);
    assert_int_equal(cli->listeners[0].mode, CONF_MODE_SHADOW);
    assert_int_equal(cli->admin.enabled, 0);
    assert_int_equal(cli->workers, expected_workers());
    conf_free(cli);
    conf_free(file);
}

static void
expect_args_errors(const char *proto, char **argv, int argc, const char *const *want, size_t nwant)
{
    struct conf_errors errs;

    memset(&errs, 0, sizeof(errs));
    struct conf *c = conf_load_args(proto, argc, argv, &errs);
    check_errs(NULL, &errs, want, nwant);
    assert_null(c);
}

#define EXPECT_ARGS_ERRORS(proto, argv_list, ...)                                                  \
    do {                                                                                           \
        char *argv_[] = {argv_list};                                                               \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        expect_args_errors(proto, argv_, (int)ARRAY_SIZE(argv_), want_, ARRAY_SIZE(want_));        \
    } while (0)

#define A(...) __VA_ARGS__
#define BASE "--listen", "127.0.0.1:6432", "--primary", "db:1"

static void
test_cli_errors(void **state)
{
    (void)state;
    EXPECT_ARGS_ERRORS("postgres", A("--listen", "x", "--primary", "db:1"),
                       "tandem: --listen: bad address \"x\"");
    EXPECT_ARGS_ERRORS("postgres", A("--listen=x:0", "--primary", "db:1"),
                       "tandem: --listen: bad address \"x:0\"");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--frob", "1", "--workers", "0"),
                       "tandem: unknown option \"--frob\"",
                       "tandem: --workers: \"0\" out of range 1..64");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--frob=1", "stray"),
                       "tandem: unknown option \"--frob\"",
                       "tandem: unexpected argument \"stray\"");
    EXPECT_ARGS_ERRORS("postgres", A("--primary", "db:1"), "tandem: --listen is required");
    EXPECT_ARGS_ERRORS("redis", A("--listen", "a:1", "--workers"),
                       "tandem: --workers: missing value", "tandem: --primary is required");
    EXPECT_ARGS_ERRORS("postgres", A("--listen", "--primary", "db:1"),
                       "tandem: --listen: missing value", "tandem: --listen is required");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--workers", "2", "--workers=3"),
                       "tandem: --workers: given more than once");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--shadow-user", "u"),
                       "tandem: --shadow-user: needs --shadow");
    EXPECT_ARGS_ERRORS("mysql", A(BASE),
                       "tandem: unknown protocol \"mysql\" (expected postgres|redis)");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--mode", "shadow"),
                       "tandem: listener \"postgres\": mode shadow needs a shadow backend");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--shadow", "blue=db:2"),
                       "tandem: duplicate backend \"blue\"",
                       "tandem: listener \"postgres\": shadow is the same backend as primary");
    EXPECT_ARGS_ERRORS("postgres", A("--listen", "127.0.0.1:6432", "--primary", "a b=db:1"),
                       "tandem: --primary: bad name \"a b\"");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--primary-tls", "verify-full"),
                       "tandem: backend \"blue\": tls verify-full needs tls_ca_file");
    EXPECT_ARGS_ERRORS("postgres",
                       A(BASE, "--max-packet-size", "99999999999GB", "--tls-cert", "/c"),
                       "tandem: --max-packet-size: \"99999999999GB\" out of range 1KB..1GB",
                       "tandem: listener \"postgres\": tls_cert without tls_key");
    EXPECT_ARGS_ERRORS(
        "postgres", A(BASE, "--admin", "127.0.0.1:6432"),
        "tandem: admin: address 127.0.0.1:6432 already used by listener \"postgres\"");
}

/* ---- read routing: reads { }, read_your_writes, max_lag, canary { } ----- */

static const char routing_conf[] =
    "backend blue { address a:1; }\n"                                         /* 1 */
    "backend green { address b:1; }\n"                                        /* 2 */
    "backend red { address c:1; }\n"                                          /* 3 */
    "listener pg {\n"                                                         /* 4 */
    "  listen d:1; primary blue; shadow green; mode split;\n"                 /* 5 */
    "  reads { green weight=10; blue weight=1000000; }\n"                     /* 6 */
    "  read_your_writes 0ms;\n"                                               /* 7 */
    "  max_lag 250ms;\n"                                                      /* 8 */
    "  canary billing {\n"                                                    /* 9 */
    "    application_name \"billing-*\";\n"                                   /* 10 */
    "    user alice; database app;\n"                                         /* 11 */
    "    client 10.0.0.0/8;\n"                                                /* 12 */
    "    hint shadow;\n"                                                      /* 13 */
    "    percent 5% by user;\n"                                               /* 14 */
    "    route green;\n"                                                      /* 15 */
    "  }\n"                                                                   /* 16 */
    "  canary ops { client [fd00::]/8; percent 0.01% by client; primary; }\n" /* 17 */
    "  canary quiet { percent 100% by application_name; no_mirror; }\n"       /* 18 */
    "  canary all { route blue; }\n"                                          /* 19 */
    "}\n";                                                                    /* 20 */

static void
test_routing_fields(void **state)
{
    (void)state;
    struct conf *c = load_ok(routing_conf);
    const struct conf_listener *l = &c->listeners[0];

    assert_int_equal(l->nread_weights, 2);
    assert_int_equal(l->read_weights[0].backend, 1); /* in the order written */
    assert_int_equal(l->read_weights[0].weight, 10);
    assert_int_equal(l->read_weights[1].backend, 0);
    assert_int_equal(l->read_weights[1].weight, 1000000);
    assert_int_equal(l->read_your_writes_ms, 0);
    assert_int_equal(l->max_lag_ms, 250);
    assert_int_equal(l->ncanaries, 4);

    const struct conf_canary *k = &l->canaries[0];
    static const uint8_t net10[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 0, 0, 0};
    assert_string_equal(k->name, "billing");
    assert_string_equal(k->application_name, "billing-*");
    assert_string_equal(k->user, "alice");
    assert_string_equal(k->database, "app");
    assert_int_equal(k->has_client, 1);
    assert_int_equal(k->client_family, 4);
    assert_int_equal(k->client_prefix, 8);
    assert_memory_equal(k->client_addr, net10, 16);
    assert_int_equal(k->hint_shadow, 1);
    assert_int_equal(k->percent_bp, 500);
    assert_int_equal(k->percent_key, CONF_CANARY_KEY_USER);
    assert_int_equal(k->action, CONF_CANARY_ROUTE);
    assert_int_equal(k->backend, 1);
    assert_int_equal(k->line, 9);

    k = &l->canaries[1];
    static const uint8_t fd00[16] = {0xfd};
    assert_string_equal(k->name, "ops");
    assert_string_equal(k->user, "");
    assert_string_equal(k->application_name, "");
    assert_int_equal(k->client_family, 6);
    assert_int_equal(k->client_prefix, 8);
    assert_memory_equal(k->client_addr, fd00, 16);
    assert_int_equal(k->hint_shadow, 0);
    assert_int_equal(k->percent_bp, 1);
    assert_int_equal(k->percent_key, CONF_CANARY_KEY_CLIENT);
    assert_int_equal(k->action, CONF_CANARY_PRIMARY);
    assert_int_equal(k->backend, -1);
    assert_int_equal(k->line, 17);

    k = &l->canaries[2];
    assert_string_equal(k->name, "quiet");
    assert_int_equal(k->has_client, 0);
    assert_int_equal(k->percent_bp, 10000);
    assert_int_equal(k->percent_key, CONF_CANARY_KEY_APPLICATION);
    assert_int_equal(k->action, CONF_CANARY_NO_MIRROR);
    assert_int_equal(k->backend, -1);

    /* no match at all: every session; a route to the primary is allowed */
    k = &l->canaries[3];
    assert_int_equal(k->percent_bp, 0);
    assert_int_equal(k->action, CONF_CANARY_ROUTE);
    assert_int_equal(k->backend, 0);
    conf_free(c);
}

static void
test_routing_defaults(void **state)
{
    (void)state;
    /* No reads { }: the primary answers every read. */
    struct conf *c = load_ok("backend blue { address a:1; }\nbackend green { address b:1; }\n"
                             "listener pg { listen d:1; primary blue; shadow green; mode split; }\n"
                             "listener solo { listen e:1; primary green; }\n");
    const struct conf_listener *l = &c->listeners[0];
    assert_int_equal(l->nread_weights, 2);
    assert_int_equal(l->read_weights[0].backend, 0);
    assert_int_equal(l->read_weights[0].weight, 1);
    assert_int_equal(l->read_weights[1].backend, 1);
    assert_int_equal(l->read_weights[1].weight, 0);
    assert_int_equal(l->read_your_writes_ms, 1000);
    assert_int_equal(l->max_lag_ms, 1000);
    assert_int_equal(l->ncanaries, 0);
    assert_null(l->canaries);
    l = &c->listeners[1];
    assert_int_equal(l->nread_weights, 1);
    assert_int_equal(l->read_weights[0].backend, 1);
    assert_int_equal(l->read_weights[0].weight, 1);
    conf_free(c);

    /* reads { } naming one role: the other is added with weight 0; all 0 is allowed. */
    c = load_ok("backend blue { address a:1; }\nbackend green { address b:1; }\n"
                "listener pg { listen d:1; primary blue; shadow green; mode split;\n"
                "  reads { green weight=0; } }\n");
    l = &c->listeners[0];
    assert_int_equal(l->nread_weights, 2);
    assert_int_equal(l->read_weights[0].backend, 1);
    assert_int_equal(l->read_weights[0].weight, 0);
    assert_int_equal(l->read_weights[1].backend, 0);
    assert_int_equal(l->read_weights[1].weight, 0);
    conf_free(c);

    /* An empty reads { }: every weight 0, reads go to the primary. */
    c = load_ok(MIN "listener x { listen e:1; primary blue; reads { } }\n");
    assert_int_equal(c->listeners[1].nread_weights, 1);
    assert_int_equal(c->listeners[1].read_weights[0].weight, 0);
    conf_free(c);
}

/* A listener with blue primary, green shadow and red unused; BODY on line 4. */
#define RT(body)                                                                                   \
    "backend blue { address a:1; }\nbackend green { address b:1; }\n"                              \
    "backend red { address c:1; }\n"                                                               \
    "listener pg { listen d:1; primary blue; shadow green; mode split; " body "\n}\n"

/* canary rules of a redis listener: client name glob, key prefix, percentages. */
static void
test_redis_canaries(void **state)
{
    (void)state;
    struct conf *c = load_ok("backend blue { address a:1; }\nbackend green { address b:1; }\n"
                             "listener r { listen d:1; protocol redis; primary blue; shadow green;\n"
                             "  mode split;\n"
                             "  canary cart { client_name \"cart-*\"; key_prefix \"user:\"; "
                             "route green; }\n"
                             "  canary some { percent 5% by client_name; route green; }\n"
                             "  canary near { client 10.0.0.0/8; percent 50% by client; primary; }\n"
                             "}\n");
    const struct conf_listener *l = &c->listeners[0];
    assert_int_equal(l->ncanaries, 3);
    assert_string_equal(l->canaries[0].client_name, "cart-*");
    assert_string_equal(l->canaries[0].key_prefix, "user:");
    assert_string_equal(l->canaries[0].application_name, "");
    assert_int_equal(l->canaries[0].backend, 1);
    assert_int_equal(l->canaries[1].percent_key, CONF_CANARY_KEY_CLIENT_NAME);
    assert_int_equal(l->canaries[1].percent_bp, 500);
    assert_string_equal(l->canaries[1].key_prefix, "");
    assert_int_equal(l->canaries[2].percent_key, CONF_CANARY_KEY_CLIENT);
    conf_free(c);
}

#define RR(body)                                                                                   \
    "backend blue { address a:1; }\nbackend green { address b:1; }\n"                              \
    "listener r { listen d:1; protocol redis; primary blue; shadow green; " body "\n}\n"

static void
test_canary_protocol_errors(void **state)
{
    (void)state;
    EXPECT_ERRORS(RR("canary a { user alice; primary; }"),
                  "t.conf:3: listener \"r\": canary \"a\": user is not for a redis listener");
    EXPECT_ERRORS(RR("canary a { application_name \"x*\"; primary; }"),
                  "t.conf:3: listener \"r\": canary \"a\": application_name (use client_name) "
                  "is not for a redis listener");
    EXPECT_ERRORS(RR("canary a { hint shadow; primary; }"),
                  "t.conf:3: listener \"r\": canary \"a\": hint is not for a redis listener");
    EXPECT_ERRORS(RR("canary a { percent 5% by user; primary; }"),
                  "t.conf:3: listener \"r\": canary \"a\": percent by user or application_name "
                  "(use client_name or client) is not for a redis listener");
    EXPECT_ERRORS(RT("canary a { client_name \"x*\"; primary; }"),
                  "t.conf:4: listener \"pg\": canary \"a\": client_name (use application_name) "
                  "is not for a postgres listener");
    EXPECT_ERRORS(RT("canary a { key_prefix \"user:\"; primary; }"),
                  "t.conf:4: listener \"pg\": canary \"a\": key_prefix is not for a postgres "
                  "listener");
    EXPECT_ERRORS(RT("canary a { percent 5% by client_name; primary; }"),
                  "t.conf:4: listener \"pg\": canary \"a\": percent by client_name (use "
                  "application_name) is not for a postgres listener");
    EXPECT_ERRORS(RR("canary a { key_prefix \"\"; primary; }"), "t.conf:3: key_prefix: empty value");
}

static void
test_routing_errors(void **state)
{
    (void)state;
    /* reads { } */
    EXPECT_ERRORS(RT("reads { nope weight=1; }"),
                  "t.conf:4: listener \"pg\": reads: unknown backend \"nope\"");
    EXPECT_ERRORS(
        RT("reads { red weight=1; }"),
        "t.conf:4: listener \"pg\": reads: backend \"red\" is neither primary nor shadow");
    EXPECT_ERRORS(RT("reads { blue weight=1;\n blue weight=2; }"),
                  "t.conf:5: reads: duplicate backend \"blue\"");
    EXPECT_ERRORS(RT("reads { blue weight=x; blue weight=2; }"),
                  "t.conf:4: reads: \"blue\": bad weight \"weight=x\" (expected weight=0..1000000)",
                  "t.conf:4: reads: duplicate backend \"blue\"");
    EXPECT_ERRORS(RT("reads { blue weight=1000001; green weight=-1; }"),
                  "t.conf:4: reads: \"blue\": bad weight \"weight=1000001\" (expected "
                  "weight=0..1000000)",
                  "t.conf:4: reads: \"green\": bad weight \"weight=-1\" (expected "
                  "weight=0..1000000)");
    EXPECT_ERRORS(RT("reads { blue 90; green; }"),
                  "t.conf:4: reads: \"blue\": bad weight \"90\" (expected weight=0..1000000)",
                  "t.conf:4: reads: \"green\" takes 1 argument (weight=N), got 0");
    EXPECT_ERRORS(RT("reads { blue { } \"a b\" weight=1; }"),
                  "t.conf:4: reads: \"blue\" does not take a { } block",
                  "t.conf:4: reads: bad backend name \"a b\"");
    EXPECT_ERRORS(RT("reads { }\nreads { }"), "t.conf:5: duplicate directive \"reads\"");
    EXPECT_ERRORS(RT("reads blue;"), "t.conf:4: directive \"reads\" needs a { } block");
    EXPECT_ERRORS(MIN "reads { }\n", "t.conf:3: directive \"reads\" is not allowed at top level");

    /* durations */
    EXPECT_ERRORS(RT("read_your_writes 1;"), "t.conf:4: read_your_writes: bad duration \"1\"");
    EXPECT_ERRORS(RT("read_your_writes 2h;"),
                  "t.conf:4: read_your_writes: \"2h\" out of range 0ms..1h");
    EXPECT_ERRORS(RT("max_lag 0ms;"), "t.conf:4: max_lag: \"0ms\" out of range 1ms..1h");

    /* canary { }: actions */
    EXPECT_ERRORS(RT("canary a { user x; }"),
                  "t.conf:4: canary \"a\": no action (expected route BACKEND, primary or "
                  "no_mirror)");
    EXPECT_ERRORS(RT("canary a { route green;\n primary; }"),
                  "t.conf:5: canary \"a\": more than one action (route, primary)");
    EXPECT_ERRORS(RT("canary a { no_mirror; primary; route blue; }"),
                  "t.conf:4: canary \"a\": more than one action (route, primary, no_mirror)");
    EXPECT_ERRORS(RT("canary a { primary; primary; }"),
                  "t.conf:4: duplicate directive \"primary\"");
    /* a refused action still counts as the rule's action: one error, not two */
    EXPECT_ERRORS(RT("canary a { primary blue; }"),
                  "t.conf:4: \"primary\" takes no arguments, got 1");
    EXPECT_ERRORS(RT("canary a {\n route nope; }"),
                  "t.conf:5: listener \"pg\": canary \"a\": route: unknown backend \"nope\"");
    EXPECT_ERRORS(RT("canary a { route red; }"),
                  "t.conf:4: listener \"pg\": canary \"a\": route: backend \"red\" is neither "
                  "primary nor shadow");
    EXPECT_ERRORS(RT("canary a { route \"x y\"; }"), "t.conf:4: route: bad name \"x y\"");
    /* names */
    EXPECT_ERRORS(RT("canary a { primary; }\ncanary a { primary; }"),
                  "t.conf:5: duplicate canary \"a\"");
    EXPECT_ERRORS(RT("canary { primary; }"), "t.conf:4: missing name for \"canary\"");
    EXPECT_ERRORS(RT("canary \"a/b\" { primary; }"), "t.conf:4: canary: bad name \"a/b\"");
    EXPECT_ERRORS(RT("canary a { listen x:1; primary; }"),
                  "t.conf:4: directive \"listen\" is not allowed in canary");
    /* matches */
    EXPECT_ERRORS(RT("canary a { hint primary; primary; }"),
                  "t.conf:4: hint: bad value \"primary\" (expected shadow)");
    EXPECT_ERRORS(RT("canary a { percent 0% by user; primary; }"),
                  "t.conf:4: percent: bad percentage \"0%\" (expected 0.01%..100%)");
    EXPECT_ERRORS(RT("canary a { percent 100.01% by user; primary; }"),
                  "t.conf:4: percent: bad percentage \"100.01%\" (expected 0.01%..100%)");
    EXPECT_ERRORS(RT("canary a { percent 5 by user; primary; }"),
                  "t.conf:4: percent: bad percentage \"5\" (expected 0.01%..100%)");
    EXPECT_ERRORS(RT("canary a { percent 5% per user; primary; }"),
                  "t.conf:4: percent: expected \"by\" after the percentage, got \"per\"");
    EXPECT_ERRORS(RT("canary a { percent 5% by database; primary; }"),
                  "t.conf:4: percent: bad key \"database\" (expected "
                  "user|application_name|client|client_name)");
    EXPECT_ERRORS(RT("canary a { percent 5%; primary; }"),
                  "t.conf:4: \"percent\" takes 3 arguments, got 1");
    EXPECT_ERRORS(RT("canary a { user \"\"; primary; }"), "t.conf:4: user: empty value");

    /* Every error of a file in one run, with its line. */
    EXPECT_ERRORS(RT("reads { red weight=1; blue weight=x; }\n"
                     "canary a { client 10.0.0.1/8; route red; }\n"
                     "canary b { }"),
                  "t.conf:4: reads: \"blue\": bad weight \"weight=x\" (expected weight=0..1000000)",
                  "t.conf:5: client: \"10.0.0.1/8\" has host bits set",
                  "t.conf:6: canary \"b\": no action (expected route BACKEND, primary or "
                  "no_mirror)",
                  "t.conf:4: listener \"pg\": reads: backend \"red\" is neither primary nor shadow",
                  "t.conf:5: listener \"pg\": canary \"a\": route: backend \"red\" is neither "
                  "primary nor shadow");
}

/* client CIDR: what is accepted and what it stores; every refusal's text. */
static void
test_canary_cidr(void **state)
{
    (void)state;
    static const struct {
        const char *cidr;
        int family, prefix;
        uint8_t addr[16];
    } ok[] = {
        {"0.0.0.0/0", 4, 0, {[10] = 0xff, [11] = 0xff}},
        {"10.1.2.3/32", 4, 32, {[10] = 0xff, [11] = 0xff, 10, 1, 2, 3}},
        {"10.1.2.3", 4, 32, {[10] = 0xff, [11] = 0xff, 10, 1, 2, 3}},
        {"192.168.0.0/16", 4, 16, {[10] = 0xff, [11] = 0xff, 192, 168}},
        {"172.16.0.0/12", 4, 12, {[10] = 0xff, [11] = 0xff, 172, 16}},
        {"::/0", 6, 0, {0}},
        {"[::]/0", 6, 0, {0}},
        {"::1/128", 6, 128, {[15] = 1}},
        {"[::1]/128", 6, 128, {[15] = 1}},
        {"::1", 6, 128, {[15] = 1}},
        {"fe80::/10", 6, 10, {0xfe, 0x80}},
        {"2001:db8::/32", 6, 32, {0x20, 0x01, 0x0d, 0xb8}},
        {"::ffff:10.0.0.0/104", 6, 104, {[10] = 0xff, [11] = 0xff, 10}},
    };
    char text[512];

    for (size_t i = 0; i < ARRAY_SIZE(ok); i++) {
        snprintf(text, sizeof(text),
                 MIN "listener x { listen e:1; primary blue;\n"
                     "  canary a { client \"%s\"; primary; } }\n",
                 ok[i].cidr);
        print_message("client %s\n", ok[i].cidr);
        struct conf *c = load_ok(text);
        const struct conf_canary *k = &c->listeners[1].canaries[0];
        assert_int_equal(k->has_client, 1);
        assert_int_equal(k->client_family, ok[i].family);
        assert_int_equal(k->client_prefix, ok[i].prefix);
        assert_memory_equal(k->client_addr, ok[i].addr, 16);
        conf_free(c);
    }

    static const struct {
        const char *cidr, *want;
    } bad[] = {
        {"10.0.0.1/8", "client: \"10.0.0.1/8\" has host bits set"},
        {"11.0.0.0/7", "client: \"11.0.0.0/7\" has host bits set"},
        {"10.0.0.0/7", NULL}, /* 10 is even: a valid /7 */
        {"0.0.0.1/0", "client: \"0.0.0.1/0\" has host bits set"},
        {"::1/127", "client: \"::1/127\" has host bits set"},
        {"[::1]/0", "client: \"[::1]/0\" has host bits set"},
        {"10.0.0.0/33", "client: bad prefix in \"10.0.0.0/33\" (expected /0../32)"},
        {"::/129", "client: bad prefix in \"::/129\" (expected /0../128)"},
        {"10.0.0.0/", "client: bad prefix in \"10.0.0.0/\" (expected /0../32)"},
        {"10.0.0.0/-1", "client: bad prefix in \"10.0.0.0/-1\" (expected /0../32)"},
        {"10.0.0.0/0008", "client: bad prefix in \"10.0.0.0/0008\" (expected /0../32)"},
        {"10.0.0.0/8/8", "client: bad prefix in \"10.0.0.0/8/8\" (expected /0../32)"},
        {"10.0.0/8", "client: bad address \"10.0.0/8\" (expected ADDRESS[/PREFIX])"},
        {"[10.0.0.0]/8", "client: bad address \"[10.0.0.0]/8\" (expected ADDRESS[/PREFIX])"},
        {"[::1/128", "client: bad address \"[::1/128\" (expected ADDRESS[/PREFIX])"},
        {"fe80::1%eth0/128",
         "client: bad address \"fe80::1%eth0/128\" (expected ADDRESS[/PREFIX])"},
        {"/8", "client: bad address \"/8\" (expected ADDRESS[/PREFIX])"},
        {"[]/8", "client: bad address \"[]/8\" (expected ADDRESS[/PREFIX])"},
        {"localhost", "client: bad address \"localhost\" (expected ADDRESS[/PREFIX])"},
        {"", "client: bad address \"\" (expected ADDRESS[/PREFIX])"},
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct conf_errors errs;
        snprintf(text, sizeof(text),
                 MIN "listener x { listen e:1; primary blue;\n"
                     "  canary a { client \"%s\"; primary; } }\n",
                 bad[i].cidr);
        print_message("client %s\n", bad[i].cidr);
        struct conf *c = load(text, &errs);
        if (bad[i].want == NULL) {
            assert_non_null(c);
            conf_free(c);
            continue;
        }
        assert_null(c);
        assert_int_equal(errs.count, 1);
        assert_int_equal(errs.list[0].line, 4);
        assert_string_equal(errs.list[0].msg, bad[i].want);
    }
}

static void
test_routing_cli(void **state)
{
    (void)state;
    struct conf_errors errs;
    struct conf *cli =
        load_args("postgres", &errs, "--listen", "127.0.0.1:6432", "--primary", "db:1", "--shadow",
                  "db:2", "--mode", "split", "--read-weights", "green=10,blue=90",
                  "--read-your-writes", "0ms", "--max-lag", "2s", NULL);
    assert_int_equal(errs.count, 0);
    assert_non_null(cli);
    struct conf *file = load_ok("backend blue { address db:1; }\nbackend green { address db:2; }\n"
                                "listener postgres { listen 127.0.0.1:6432; primary blue;\n"
                                "  shadow green; mode split; reads { green weight=10;\n"
                                "  blue weight=90; } read_your_writes 0ms; max_lag 2s; }\n");
    assert_conf_equal(cli, file);
    assert_int_equal(cli->listeners[0].read_weights[0].backend, 1);
    assert_int_equal(cli->listeners[0].read_weights[0].weight, 10);
    assert_int_equal(cli->listeners[0].max_lag_ms, 2000);
    conf_free(cli);
    conf_free(file);

    /* Without the flags: the defaults of a file without the directives. */
    cli = load_args("postgres", &errs, "--listen", "127.0.0.1:6432", "--primary", "db:1",
                    "--shadow", "new=db:2", NULL);
    file = load_ok("backend blue { address db:1; }\nbackend new { address db:2; }\n"
                   "listener postgres { listen 127.0.0.1:6432; primary blue; shadow new; }\n");
    assert_conf_equal(cli, file);
    conf_free(cli);
    conf_free(file);

    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--read-weights", "blue=90,green=10"),
                       "tandem: listener \"postgres\": --read-weights: unknown backend \"green\"");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--read-weights", "blue=x,,=3,blue"),
                       "tandem: --read-weights: bad value \"\" (expected NAME=WEIGHT,...)",
                       "tandem: --read-weights: bad value \"=3\" (expected NAME=WEIGHT,...)",
                       "tandem: --read-weights: bad value \"blue\" (expected NAME=WEIGHT,...)",
                       "tandem: --read-weights: \"blue\": bad weight \"weight=x\" (expected "
                       "weight=0..1000000)");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--read-weights", "blue=1,blue=2"),
                       "tandem: --read-weights: duplicate backend \"blue\"");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--read-weights=blue=1,"),
                       "tandem: --read-weights: bad value \"\" (expected NAME=WEIGHT,...)");
    EXPECT_ARGS_ERRORS("postgres", A(BASE, "--max-lag", "0ms", "--read-your-writes", "1"),
                       "tandem: --read-your-writes: bad duration \"1\"",
                       "tandem: --max-lag: \"0ms\" out of range 1ms..1h");
    EXPECT_ARGS_ERRORS(
        "postgres",
        A(BASE, "--read-weights",
          "blue=000000000000000000000000000000000000000000000000000000000000000000000000000000001"),
        "tandem: --read-weights: \"blue\": bad weight "
        "\"weight=00000000000000000000000000000000000000000...\" (expected weight=0..1000000)");
}

/* ---- values -------------------------------------------------------------- */

static void
test_values(void **state)
{
    (void)state;
    uint64_t v;
    uint32_t bp;
    int b;
    struct conf_addr a;

    static const struct {
        const char *s;
        enum conf_value_rc rc;
        uint64_t v;
    } sizes[] = {
        {"0", CONF_VALUE_OK, 0},
        {"512", CONF_VALUE_OK, 512},
        {"512B", CONF_VALUE_OK, 512},
        {"64KB", CONF_VALUE_OK, 64 << 10},
        {"64kb", CONF_VALUE_OK, 64 << 10},
        {"64k", CONF_VALUE_OK, 64 << 10},
        {"1MB", CONF_VALUE_OK, 1 << 20},
        {"1GB", CONF_VALUE_OK, 1ull << 30},
        {"17179869183GB", CONF_VALUE_OK, 17179869183ull << 30},
        {"17179869184GB", CONF_VALUE_RANGE, 0},
        {"99999999999GB", CONF_VALUE_RANGE, 0},
        {"18446744073709551615", CONF_VALUE_OK, UINT64_MAX},
        {"18446744073709551616", CONF_VALUE_RANGE, 0},
        {"99999999999999999999999999KB", CONF_VALUE_RANGE, 0},
        {"", CONF_VALUE_BAD, 0},
        {"KB", CONF_VALUE_BAD, 0},
        {"1 KB", CONF_VALUE_BAD, 0},
        {"1TB", CONF_VALUE_BAD, 0},
        {"-1", CONF_VALUE_BAD, 0},
        {"1KBB", CONF_VALUE_BAD, 0},
        {"99999999999999999999999XB", CONF_VALUE_BAD, 0},
    };
    for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
        v = 12345;
        print_message("size %s\n", sizes[i].s);
        assert_int_equal(conf_value_size(sizes[i].s, &v), sizes[i].rc);
        assert_int_equal(v, sizes[i].rc == CONF_VALUE_OK ? sizes[i].v : 12345);
    }

    static const struct {
        const char *s;
        enum conf_value_rc rc;
        uint64_t ms;
    } durations[] = {
        {"500ms", CONF_VALUE_OK, 500},
        {"10s", CONF_VALUE_OK, 10000},
        {"5m", CONF_VALUE_OK, 300000},
        {"1h", CONF_VALUE_OK, 3600000},
        {"0s", CONF_VALUE_OK, 0},
        {"10", CONF_VALUE_BAD, 0},
        {"ms", CONF_VALUE_BAD, 0},
        {"1.5s", CONF_VALUE_BAD, 0},
        {"1d", CONF_VALUE_BAD, 0},
        {"5124095576031h", CONF_VALUE_RANGE, 0},
        {"5124095576030h", CONF_VALUE_OK, 5124095576030ull * 3600000},
    };
    for (size_t i = 0; i < ARRAY_SIZE(durations); i++) {
        v = 0;
        print_message("duration %s\n", durations[i].s);
        assert_int_equal(conf_value_duration_ms(durations[i].s, &v), durations[i].rc);
        if (durations[i].rc == CONF_VALUE_OK)
            assert_int_equal(v, durations[i].ms);
    }

    assert_int_equal(conf_value_percent("10%", &bp), CONF_VALUE_OK);
    assert_int_equal(bp, 1000);
    assert_int_equal(conf_value_percent("0.5%", &bp), CONF_VALUE_OK);
    assert_int_equal(bp, 50);
    assert_int_equal(conf_value_percent("12.34%", &bp), CONF_VALUE_OK);
    assert_int_equal(bp, 1234);
    assert_int_equal(conf_value_percent("100%", &bp), CONF_VALUE_OK);
    assert_int_equal(bp, 10000);
    assert_int_equal(conf_value_percent("100.01%", &bp), CONF_VALUE_RANGE);
    assert_int_equal(conf_value_percent("101%", &bp), CONF_VALUE_RANGE);
    assert_int_equal(conf_value_percent("99999999999999999999999%", &bp), CONF_VALUE_RANGE);
    assert_int_equal(conf_value_percent("10", &bp), CONF_VALUE_BAD);
    assert_int_equal(conf_value_percent("1.234%", &bp), CONF_VALUE_BAD);
    assert_int_equal(conf_value_percent("1.%", &bp), CONF_VALUE_BAD);
    assert_int_equal(conf_value_percent("%", &bp), CONF_VALUE_BAD);
    assert_int_equal(conf_value_percent("10%%", &bp), CONF_VALUE_BAD);

    /* An empty digit run (the fuzzer's "host:" with nothing after it). */
    assert_int_equal(conf_value_number("", &v), CONF_VALUE_BAD);
    assert_int_equal(conf_value_addr("h:", &a), CONF_VALUE_BAD);
    assert_int_equal(conf_value_number("007", &v), CONF_VALUE_OK);
    assert_int_equal(v, 7);

    assert_int_equal(conf_value_bool("on", &b), CONF_VALUE_OK);
    assert_int_equal(b, 1);
    assert_int_equal(conf_value_bool("off", &b), CONF_VALUE_OK);
    assert_int_equal(b, 0);
    assert_int_equal(conf_value_bool("yes", &b), CONF_VALUE_BAD);
    assert_int_equal(conf_value_bool("On", &b), CONF_VALUE_BAD);

    assert_int_equal(conf_value_addr("localhost:1", &a), CONF_VALUE_OK);
    assert_string_equal(a.host, "localhost");
    assert_int_equal(a.port, 1);
    assert_int_equal(conf_value_addr("[::1]:65535", &a), CONF_VALUE_OK);
    assert_string_equal(a.host, "::1");
    assert_int_equal(a.port, 65535);
    assert_int_equal(conf_value_addr("h:65536", &a), CONF_VALUE_BAD);
    assert_int_equal(conf_value_addr("h:99999999999999999999999", &a), CONF_VALUE_BAD);
    assert_int_equal(conf_value_addr("[::1]x:1", &a), CONF_VALUE_BAD);
    assert_int_equal(conf_value_addr("[::1", &a), CONF_VALUE_BAD);
    char longhost[CONF_HOST_MAX + 8];
    memset(longhost, 'h', sizeof(longhost));
    memcpy(longhost + CONF_HOST_MAX - 1, ":1", 3); /* 255 bytes of host: fits */
    assert_int_equal(conf_value_addr(longhost, &a), CONF_VALUE_OK);
    memset(longhost, 'h', sizeof(longhost));
    memcpy(longhost + CONF_HOST_MAX, ":1", 3); /* 256: does not */
    assert_int_equal(conf_value_addr(longhost, &a), CONF_VALUE_BAD);

    char addr[64];
    struct conf_addr v6 = {.host = "fd00::1", .port = 80};
    conf_addr_format(&v6, addr, sizeof(addr));
    assert_string_equal(addr, "[fd00::1]:80");
    struct conf_addr v4 = {.host = "10.1.2.3", .port = 5432};
    conf_addr_format(&v4, addr, sizeof(addr));
    assert_string_equal(addr, "10.1.2.3:5432");

    assert_int_equal(conf_value_name("blue-1.a_b"), CONF_VALUE_OK);
    assert_int_equal(conf_value_name(""), CONF_VALUE_BAD);
    assert_int_equal(conf_value_name("a/b"), CONF_VALUE_BAD);
    char longname[CONF_NAME_MAX + 1];
    memset(longname, 'n', sizeof(longname));
    longname[CONF_NAME_MAX - 1] = '\0';
    assert_int_equal(conf_value_name(longname), CONF_VALUE_OK);
    longname[CONF_NAME_MAX - 1] = 'n';
    longname[CONF_NAME_MAX] = '\0';
    assert_int_equal(conf_value_name(longname), CONF_VALUE_BAD);
}

/* Range edges through the directives: both ends accepted. */
static void
test_range_edges(void **state)
{
    (void)state;
    struct conf *c = load_ok(MIN "workers 64;\nlimits { max_client_conn 1000000;\n"
                                 "max_packet_size 1GB; startup_timeout 1ms; connect_timeout 1h;\n"
                                 "shutdown_timeout 3600000ms; }\n");
    assert_int_equal(c->workers, 64);
    assert_int_equal(c->limits.max_client_conn, 1000000);
    assert_int_equal(c->limits.max_packet_size, 1u << 30);
    assert_int_equal(c->limits.startup_timeout_ms, 1);
    assert_int_equal(c->limits.connect_timeout_ms, 3600000);
    assert_int_equal(c->limits.shutdown_timeout_ms, 3600000);
    conf_free(c);
    c = load_ok(MIN "limits { max_prepared_bytes 0B; }\n");
    assert_int_equal(c->limits.max_prepared_bytes, 0);
    conf_free(c);
    c = load_ok(MIN "limits { max_command_size 1KB; }\n");
    assert_int_equal(c->limits.max_command_size, 1024);
    conf_free(c);
    c = load_ok(MIN "limits { max_command_size 1GB; }\n");
    assert_int_equal(c->limits.max_command_size, 1u << 30);
    conf_free(c);
    c = load_ok(MIN "limits { client_idle_timeout 0s; }\n");
    assert_int_equal(c->limits.client_idle_timeout_ms, 0);
    conf_free(c);
    c = load_ok(MIN "limits { tcp_keepalive 0s; tcp_user_timeout 1h; }\n");
    assert_int_equal(c->limits.tcp_keepalive_ms, 0);
    assert_int_equal(c->limits.tcp_user_timeout_ms, 3600000);
    conf_free(c);
    c = load_ok(MIN "limits { client_idle_timeout 168h; }\n");
    assert_int_equal(c->limits.client_idle_timeout_ms, 168u * 3600000u);
    conf_free(c);
    c = load_ok(MIN "workers 1;\nlimits { max_client_conn 1; max_packet_size 1KB; }\n");
    assert_int_equal(c->workers, 1);
    assert_int_equal(c->limits.max_packet_size, 1024);
    conf_free(c);
}

static void
test_names_and_format(void **state)
{
    (void)state;
    char out[64];

    assert_string_equal(conf_mode_name(CONF_MODE_PASSTHROUGH), "passthrough");
    assert_string_equal(conf_mode_name(CONF_MODE_SHADOW), "shadow");
    assert_string_equal(conf_mode_name(CONF_MODE_SPLIT), "split");
    assert_string_equal(conf_mode_name((enum conf_mode)42), "unknown");
    assert_string_equal(conf_proto_name(CONF_PROTO_POSTGRES), "postgres");
    assert_string_equal(conf_proto_name(CONF_PROTO_REDIS), "redis");
    assert_string_equal(conf_tls_name(CONF_TLS_DISABLE), "disable");
    assert_string_equal(conf_tls_name(CONF_TLS_REQUIRE), "require");
    assert_string_equal(conf_tls_name(CONF_TLS_VERIFY_FULL), "verify-full");

    struct conf_error e = {.line = 3, .msg = "boom"};
    conf_format_error(NULL, "x.conf", &e, out, sizeof(out));
    assert_string_equal(out, "x.conf:3: boom");
    conf_format_error(NULL, NULL, &e, out, sizeof(out));
    assert_string_equal(out, "tandem: boom");
    e.line = 0;
    conf_format_error(NULL, "x.conf", &e, out, sizeof(out));
    assert_string_equal(out, "tandem: boom");
    conf_format_error(NULL, "x.conf", &e, out, 5);
    assert_string_equal(out, "tand");
    conf_free(NULL);

    /* Control bytes in user text never reach a message raw. */
    EXPECT_ERRORS(MIN "\"\\x1b[31m\" 1;\n", "t.conf:3: bad escape \"\\x\" in string");
    EXPECT_ERRORS(MIN "\"a\\tb\\n\" 1;\n", "t.conf:3: unknown directive \"a\\x09b\\x0a\"");
}

/* backend { fence "SQL"; unfence "SQL"; }: in order, with tandem's own login only */
static void
test_fence(void **state)
{
    (void)state;
    struct conf *c = load_ok("backend blue {\n address 127.0.0.1:5432;\n user tandem;\n"
                             " fence \"ALTER ROLE app SET default_transaction_read_only = on\";\n"
                             " fence \"SELECT 1\";\n unfence \"ALTER ROLE app RESET ALL\";\n}\n"
                             "listener pg { listen 127.0.0.1:6432; primary blue; }\n");
    assert_int_equal(c->backends[0].nfence, 2);
    assert_string_equal(c->backends[0].fence[0],
                        "ALTER ROLE app SET default_transaction_read_only = on");
    assert_string_equal(c->backends[0].fence[1], "SELECT 1");
    assert_int_equal(c->backends[0].nunfence, 1);
    conf_free(c);

    EXPECT_ERRORS("backend blue {\n address 127.0.0.1:5432;\n fence \"SELECT 1\";\n}\n"
                  "listener pg { listen 127.0.0.1:6432; primary blue; }\n",
                  "t.conf:3: backend \"blue\": fence and unfence run with tandem's own login: "
                  "they need user");
    EXPECT_ERRORS("backend blue {\n address 127.0.0.1:5432;\n user t;\n fence \"\";\n}\n"
                  "listener pg { listen 127.0.0.1:6432; primary blue; }\n",
                  "t.conf:4: fence: expected a statement of 1..511 bytes");
    EXPECT_ERRORS("backend blue {\n address 127.0.0.1:5432;\n user t;\n"
                  " fence a;\n fence a;\n fence a;\n fence a;\n fence a;\n fence a;\n fence a;\n"
                  " fence a;\n fence a;\n}\n"
                  "listener pg { listen 127.0.0.1:6432; primary blue; }\n",
                  "t.conf:12: fence: too many statements (max 8)");
}

/* A Redis listener's backend: fence commands split as redis-cli does, a password */
static void
test_fence_redis(void **state)
{
    (void)state;
    struct conf *c =
        load_ok("backend blue {\n address 127.0.0.1:6379;\n user tandem;\n"
                " password p;\n fence \"ACL SETUSER app -@write\";\n"
                " unfence \"ACL SETUSER 'app' +@write\";\n}\n"
                "listener r { listen 127.0.0.1:6380; protocol redis; primary blue; }\n");
    assert_int_equal(c->backends[0].nfence, 1);
    assert_int_equal(c->backends[0].fence_line, 5);
    conf_free(c);

    EXPECT_ERRORS("backend blue {\n address 127.0.0.1:6379;\n user t;\n password p;\n"
                  " fence \"ACL SETUSER \\\"app\";\n}\n"
                  "listener r { listen 127.0.0.1:6380; protocol redis; primary blue; }\n",
                  "t.conf:5: backend \"blue\": fence 1 is not a Redis command (unbalanced quotes "
                  "or empty)");
    EXPECT_ERRORS("backend blue {\n address 127.0.0.1:6379;\n user t;\n"
                  " fence \"ACL SETUSER app off\";\n}\n"
                  "listener r { listen 127.0.0.1:6380; protocol redis; primary blue; }\n",
                  "t.conf:4: backend \"blue\": a Redis backend's fence needs password or "
                  "password_file (tandem's mirror logs in there with user and it)");
    /* over TLS, as the backend's settings say (verify/redis_link.h) */
    c = load_ok("backend blue {\n address 127.0.0.1:6379;\n user t;\n password p;\n"
                " tls require;\n unfence \"ACL SETUSER app on\";\n}\n"
                "listener r { listen 127.0.0.1:6380; protocol redis; primary blue; }\n");
    conf_free(c);
}

/* control { store; fleet; password_file; member; join_timeout; } */
static void
test_fleet(void **state)
{
    (void)state;
    struct conf *c = load_ok(MIN "control {\n store redis://10.0.0.5:6380/3;\n fleet pay-1;\n"
                                 " password_file /run/s.pw;\n member pod.a;\n"
                                 " join_timeout 2s;\n}\n");
    assert_int_equal(c->control.store_enabled, 1);
    assert_string_equal(c->control.store.host, "10.0.0.5");
    assert_int_equal(c->control.store.port, 6380);
    assert_int_equal(c->control.store_db, 3);
    assert_string_equal(c->control.fleet, "pay-1");
    assert_string_equal(c->control.store_password_file, "/run/s.pw");
    assert_string_equal(c->control.member, "pod.a");
    assert_int_equal(c->control.join_timeout_ms, 2000);
    conf_free(c);

    c = load_ok(MIN "control { store redis://[::1]:6379; fleet f; }\n");
    assert_string_equal(c->control.store.host, "::1");
    assert_int_equal(c->control.store_db, 0);
    assert_int_equal(c->control.join_timeout_ms, 10000);
    conf_free(c);

    c = load_ok(MIN);
    assert_int_equal(c->control.store_enabled, 0);
    conf_free(c);

    /* a password in the URL would reach logs and ps: refused */
    EXPECT_ERRORS(MIN "control {\n store redis://u:secret@h:1;\n fleet f;\n}\n",
                  "t.conf:4: store: bad store \"redis://u:secret@h:1\" (expected "
                  "redis://HOST:PORT[/DB] or rediss://... for TLS, DB 0..15, no password: use "
                  "password_file)");
    EXPECT_ERRORS(MIN "control {\n store redis://h:1/16;\n fleet f;\n}\n",
                  "t.conf:4: store: bad store \"redis://h:1/16\" (expected "
                  "redis://HOST:PORT[/DB] or rediss://... for TLS, DB 0..15, no password: use "
                  "password_file)");
    EXPECT_ERRORS(MIN "control {\n store http://h:1;\n fleet f;\n}\n",
                  "t.conf:4: store: bad store \"http://h:1\" (expected "
                  "redis://HOST:PORT[/DB] or rediss://... for TLS, DB 0..15, no password: use "
                  "password_file)");
    EXPECT_ERRORS(MIN "control {\n store redis://h:1;\n}\n",
                  "t.conf:4: control: a store needs a fleet name (fleet NAME;): members share "
                  "a fleet's state");
    EXPECT_ERRORS(MIN "control {\n fleet f;\n}\n",
                  "t.conf:4: control: fleet needs a store (store redis://HOST:PORT[/DB];)");
    /* rediss://: TLS, verified unless tls require; the TLS words need it */
    c = load_ok(MIN "control { store rediss://store.internal:6380; fleet f;\n"
                    " tls_ca_file /etc/ca.pem; tls_cert /c.pem; tls_key /k.pem; }\n");
    assert_int_equal(c->control.store_tls, CONF_TLS_VERIFY_FULL);
    assert_string_equal(c->control.store.host, "store.internal");
    assert_string_equal(c->control.store_tls_ca_file, "/etc/ca.pem");
    assert_string_equal(c->control.store_tls_cert, "/c.pem");
    conf_free(c);
    c = load_ok(MIN "control { tls require; store rediss://h:1; fleet f; }\n");
    assert_int_equal(c->control.store_tls, CONF_TLS_REQUIRE);
    conf_free(c);
    c = load_ok(MIN "control { store redis://h:1; fleet f; }\n");
    assert_int_equal(c->control.store_tls, CONF_TLS_DISABLE);
    conf_free(c);
    EXPECT_ERRORS(MIN "control {\n store redis://h:1;\n fleet f;\n tls_ca_file /ca.pem;\n}\n",
                  "t.conf:6: control: tls_ca_file is the store's TLS: it needs a rediss:// store");
    EXPECT_ERRORS(MIN "control {\n store rediss://h:1;\n fleet f;\n tls disable;\n}\n",
                  "t.conf:6: control: a rediss:// store is reached over TLS: tls require or "
                  "verify-full (or a redis:// store)");
    EXPECT_ERRORS(MIN "control {\n store rediss://h:1;\n fleet f;\n tls_key /k.pem;\n}\n",
                  "t.conf:6: control: tls_key without tls_cert");
    EXPECT_ERRORS(MIN "control {\n store redis://h:1;\n fleet \"a b\";\n}\n",
                  "t.conf:5: fleet: bad name \"a b\" (1..63 of A-Z a-z 0-9 _ . -)",
                  "t.conf:4: control: a store needs a fleet name (fleet NAME;): members share "
                  "a fleet's state");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_defaults_shadow_mode),
        cmocka_unit_test(test_server_connections),
        cmocka_unit_test(test_auth_sources),
        cmocka_unit_test(test_syntax_accepted),
        cmocka_unit_test(test_error_cases),
        cmocka_unit_test(test_multiple_errors),
        cmocka_unit_test(test_error_overflow),
        cmocka_unit_test(test_bounds),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_cli_equals_file),
        cmocka_unit_test(test_mirror_compare),
        cmocka_unit_test(test_passfile),
        cmocka_unit_test(test_cli_errors),
        cmocka_unit_test(test_values),
        cmocka_unit_test(test_range_edges),
        cmocka_unit_test(test_names_and_format),
        cmocka_unit_test(test_routing_fields),
        cmocka_unit_test(test_routing_defaults),
        cmocka_unit_test(test_routing_errors),
        cmocka_unit_test(test_redis_canaries),
        cmocka_unit_test(test_canary_protocol_errors),
        cmocka_unit_test(test_canary_cidr),
        cmocka_unit_test(test_guards),
        cmocka_unit_test(test_routing_cli),
        cmocka_unit_test(test_fleet),
        cmocka_unit_test(test_fence),
        cmocka_unit_test(test_fence_redis),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
