/*
 * conf.c - the public entry points of conf.h: loading a file or a buffer,
 * freeing, formatting errors, enum names.
 *
 * A load is three passes over plain memory, each appending to the same
 * error list:  bytes ─► conf_tree_parse() ─► tree ─► conf_parse_tree() ─► conf
 * A tree cut short by a syntax error is not applied: what a truncated file
 * would be missing is noise, not news.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "conf/conf.h"
#include "conf/conf_err.h"
#include "conf/conf_parse.h"
#include "conf/conf_tree.h"

/* The largest file conf_load_file() reads: configurations are small. */
#define CONF_FILE_MAX (1 << 20)

struct conf *
conf_load_buffer(const char *name, const char *buf, size_t len, struct conf_errors *errs)
{
    struct conf_errors scratch;
    struct conf_tree tree;
    struct conf *conf = NULL;

    if (errs == NULL) {
        memset(&scratch, 0, sizeof(scratch));
        errs = &scratch;
    }
    if (buf == NULL)
        len = 0;
    if (len > CONF_FILE_MAX) {
        conf_err_add(errs, 0, "configuration too large (max %d bytes)", CONF_FILE_MAX);
        return NULL;
    }
    size_t before = errs->count + errs->dropped;
    conf_tree_init(&tree);
    conf_tree_parse(&tree, buf != NULL ? buf : "", len, errs);
    if (!tree.fatal)
        conf = conf_parse_tree(&tree, name, errs);
    conf_tree_release(&tree);
    if (conf != NULL && errs->count + errs->dropped != before) {
        /* Recoverable syntax errors: the values were read, but the file is wrong. */
        conf_free(conf);
        conf = NULL;
    }
    return conf;
}

static void
read_error(struct conf_errors *errs, const char *path, int err)
{
    char ebuf[128];
    /* GNU strerror_r: thread-safe, and returns the message to use. */
    const char *e = strerror_r(err, ebuf, sizeof(ebuf));

    conf_err_add(errs, 0, "cannot read \"%s\": %s", path, e);
}

struct conf *
conf_load_file(const char *path, struct conf_errors *errs)
{
    struct conf_errors scratch;
    char *buf = NULL;
    size_t len = 0;
    struct conf *conf = NULL;
    int fd;

    if (errs == NULL) {
        memset(&scratch, 0, sizeof(scratch));
        errs = &scratch;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        goto out_errno;
    /* One byte more than allowed tells "too large" from "exactly the limit". */
    buf = malloc(CONF_FILE_MAX + 1);
    if (buf == NULL) {
        conf_err_add(errs, 0, "out of memory");
        goto out_close;
    }
    while (len < CONF_FILE_MAX + 1) {
        ssize_t n = read(fd, buf + len, CONF_FILE_MAX + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            goto out_errno;
        if (n == 0)
            break;
        len += (size_t)n;
    }
    if (len > CONF_FILE_MAX) {
        conf_err_add(errs, 0, "cannot read \"%s\": larger than %d bytes", path, CONF_FILE_MAX);
        goto out_close;
    }
    conf = conf_load_buffer(path, buf, len, errs);
    goto out_close;

out_errno:
    read_error(errs, path, errno);
out_close:
    if (fd >= 0)
        close(fd);
    free(buf);
    return conf;
}

void
conf_free(struct conf *conf)
{
    if (conf == NULL)
        return;
    for (size_t i = 0; i < conf->nlisteners; i++) {
        free(conf->listeners[i].compare.ignore_columns);
        free(conf->listeners[i].compare.ignore_fingerprints);
        free(conf->listeners[i].read_weights);
        free(conf->listeners[i].canaries);
        free(conf->listeners[i].guards);
    }
    free(conf->listeners);
    free(conf->backends);
    free(conf->write_functions);
    free(conf->admin.server_names);
    free(conf);
}

void
conf_format_error(const struct conf *conf_or_null, const char *name, const struct conf_error *err,
                  char *out, size_t outlen)
{
    if (out == NULL || outlen == 0)
        return;
    if ((name == NULL || name[0] == '\0') && conf_or_null != NULL)
        name = conf_or_null->file;
    if (err->line > 0 && name != NULL && name[0] != '\0')
        snprintf(out, outlen, "%s:%d: %s", name, err->line, err->msg);
    else
        snprintf(out, outlen, "tandem: %s", err->msg);
}

static const char *
enum_name(const char *const *names, size_t count, int value)
{
    if (value < 0 || (size_t)value >= count)
        return "unknown";
    return names[value];
}

const char *
conf_mode_name(enum conf_mode mode)
{
    return enum_name(conf_mode_names, 3, (int)mode);
}

const char *
conf_repl_kind_name(enum conf_repl_kind kind)
{
    return enum_name(conf_repl_kind_names, 3, (int)kind);
}

const char *
conf_guard_metric_name(enum conf_guard_metric m)
{
    return enum_name(conf_guard_metric_names, 6, (int)m);
}

const char *
conf_guard_action_name(enum conf_guard_action a)
{
    return enum_name(conf_guard_action_names, 3, (int)a);
}

const char *
conf_proto_name(enum conf_proto proto)
{
    return enum_name(conf_proto_names, 2, (int)proto);
}

const char *
conf_tls_name(enum conf_tls tls)
{
    return enum_name(conf_tls_names, 3, (int)tls);
}

int
conf_backend_find(const struct conf *conf, const char *name)
{
    if (conf == NULL || name == NULL)
        return -1;
    for (size_t i = 0; i < conf->nbackends; i++)
        if (strcmp(conf->backends[i].name, name) == 0)
            return (int)i;
    return -1;
}

void
conf_addr_format(const struct conf_addr *addr, char *out, size_t outlen)
{
    if (out == NULL || outlen == 0)
        return;
    /* A ':' in the host is an IPv6 literal: bracket it so the port stays readable. */
    if (strchr(addr->host, ':') != NULL)
        snprintf(out, outlen, "[%s]:%u", addr->host, (unsigned)addr->port);
    else
        snprintf(out, outlen, "%s:%u", addr->host, (unsigned)addr->port);
}
