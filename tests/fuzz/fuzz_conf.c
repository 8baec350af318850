/*
 * fuzz_conf.c - libFuzzer harness for the configuration loader.
 *
 * One input is one configuration file, loaded once.  Besides "no crash, no
 * read past len, no leak", it checks what a caller relies on: a load
 * either returns a configuration or reports at least one error, never both;
 * a returned configuration satisfies every rule the loader promises (so a
 * check that silently stopped firing shows up as a crash); every message is
 * terminated and names a line that exists.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static void
check_addr(const struct conf_addr *a)
{
    CHECK(memchr(a->host, '\0', sizeof(a->host)) != NULL);
    CHECK(a->host[0] != '\0');
    CHECK(a->port != 0);
}

#define TERMINATED(field) CHECK(memchr((field), '\0', sizeof(field)) != NULL)

static void
check_conf(const struct conf *c)
{
    CHECK(c->workers >= 1 && c->workers <= 64);
    CHECK(c->limits.max_client_conn >= 1 && c->limits.max_client_conn <= 1000000);
    CHECK(c->limits.max_packet_size >= 1024 && c->limits.max_packet_size <= (1u << 30));
    CHECK(c->limits.startup_timeout_ms >= 1 && c->limits.startup_timeout_ms <= 3600000);
    CHECK(c->limits.connect_timeout_ms >= 1 && c->limits.connect_timeout_ms <= 3600000);
    CHECK(c->limits.shutdown_timeout_ms >= 1 && c->limits.shutdown_timeout_ms <= 3600000);
    if (c->admin.enabled)
        check_addr(&c->admin.addr);
    TERMINATED(c->admin.token_file);
    TERMINATED(c->admin.read_token_file);
    CHECK(c->nlisteners >= 1);
    for (size_t k = 0; k < c->nwrite_functions; k++)
        TERMINATED(c->write_functions[k]);
    for (size_t i = 0; i < c->nbackends; i++) {
        const struct conf_backend *b = &c->backends[i];
        CHECK(b->name[0] != '\0');
        TERMINATED(b->name);
        CHECK(conf_backend_find(c, b->name) == (int)i); /* names are unique */
        check_addr(&b->addr);
        TERMINATED(b->tls_ca_file);
        TERMINATED(b->tls_server_name);
        TERMINATED(b->user);
        TERMINATED(b->password);
        TERMINATED(b->password_file);
        CHECK(b->tls != CONF_TLS_VERIFY_FULL || b->tls_ca_file[0] != '\0');
        CHECK(b->password[0] == '\0' || b->password_file[0] == '\0');
    }
    for (size_t i = 0; i < c->nlisteners; i++) {
        const struct conf_listener *l = &c->listeners[i];
        CHECK(l->name[0] != '\0');
        TERMINATED(l->name);
        check_addr(&l->addr);
        TERMINATED(l->tls_cert);
        TERMINATED(l->tls_key);
        CHECK((l->tls_cert[0] == '\0') == (l->tls_key[0] == '\0'));
        CHECK(l->primary >= 0 && (size_t)l->primary < c->nbackends);
        CHECK(l->shadow == -1 || (l->shadow >= 0 && (size_t)l->shadow < c->nbackends));
        CHECK(l->shadow != l->primary);
        CHECK(l->mode == CONF_MODE_PASSTHROUGH || l->shadow >= 0);
        /* mirror, compare and read routing */
        CHECK(l->mirror.reads >= 0.0 && l->mirror.reads <= 1.0);
        CHECK(l->mirror.level <= CONF_MIRROR_DDL);
        for (size_t k = 0; k < l->compare.nignore_columns; k++)
            TERMINATED(l->compare.ignore_columns[k]);
        for (size_t k = 0; k < l->compare.nignore_fingerprints; k++)
            CHECK(strlen(l->compare.ignore_fingerprints[k]) == 16);
        for (size_t k = 0; k < l->nread_weights; k++) {
            const struct conf_read_weight *w = &l->read_weights[k];
            CHECK(w->backend == l->primary || w->backend == l->shadow);
            CHECK(w->weight <= 1000000);
            for (size_t m = 0; m < k; m++)
                CHECK(l->read_weights[m].backend != w->backend);
        }
        CHECK(l->read_your_writes_ms <= 3600000 && l->max_lag_ms <= 3600000);
        for (size_t k = 0; k < l->ncanaries; k++) {
            const struct conf_canary *cn = &l->canaries[k];
            TERMINATED(cn->name);
            CHECK(cn->percent_bp <= 10000);
            if (cn->action == CONF_CANARY_ROUTE)
                CHECK(cn->backend == l->primary || cn->backend == l->shadow);
            else
                CHECK(cn->backend == -1);
            if (cn->has_client)
                CHECK(cn->client_prefix >= 0 &&
                      cn->client_prefix <= (cn->client_family == 4 ? 32 : 128));
        }
        for (size_t j = 0; j < i; j++) {
            CHECK(strcmp(c->listeners[j].name, l->name) != 0);
            CHECK(c->listeners[j].addr.port != l->addr.port ||
                  strcasecmp(c->listeners[j].addr.host, l->addr.host) != 0);
        }
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct conf_errors errs;
    size_t lines = 1;

    memset(&errs, 0, sizeof(errs));
    struct conf *c = conf_load_buffer("fuzz.conf", (const char *)data, size, &errs);
    if (c != NULL) {
        CHECK(errs.count == 0 && errs.dropped == 0);
        check_conf(c);
    } else {
        CHECK(errs.count > 0);
    }
    for (size_t i = 0; i < size; i++)
        lines += data[i] == '\n';
    for (size_t i = 0; i < errs.count; i++) {
        TERMINATED(errs.list[i].msg);
        CHECK(errs.list[i].msg[0] != '\0');
        CHECK(errs.list[i].line >= 0 && (size_t)errs.list[i].line <= lines);
    }
    CHECK(errs.count == CONF_MAX_ERRORS || errs.dropped == 0);
    conf_free(c);
    return 0;
}
