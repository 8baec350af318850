/*
 * redis_link.c - a blocking Redis connection of tandem's own, plain or TLS
 * (redis_link.h).
 *
 *   open:    getaddrinfo -> non-blocking connect (poll) -> [TLS handshake]
 *   command: redisFormatCommand -> write all -> read and feed the
 *            redisReader until it has a reply
 *
 * The socket stays non-blocking: every wait is a poll() bounded by the
 * link's timeout, so a server that stops answering costs a timeout, not a
 * thread.
 */
#include "verify/redis_link.h"
#include "protocol/tls_peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct redis_link {
    int fd;
    SSL_CTX *ctx;       /* NULL for plain text */
    SSL *ssl;
    redisReader *reader;
    int timeout_ms;
    char error[256];    /* "" until something failed; then every command answers NULL */
};

static void
fail(struct redis_link *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void
fail(struct redis_link *k, const char *fmt, ...)
{
    va_list ap;
    if (k->error[0])
        return; /* the first reason is the one that matters */
    va_start(ap, fmt);
    vsnprintf(k->error, sizeof(k->error), fmt, ap);
    va_end(ap);
}

/* Wait until fd is ready for `events`: 0 ready, -1 timeout or error (k->error says). */
static int
wait_ready(struct redis_link *k, short events)
{
    struct pollfd p = {.fd = k->fd, .events = events};
    for (;;) {
        int n = poll(&p, 1, k->timeout_ms);
        if (n > 0)
            return 0;
        if (n == 0) {
            fail(k, "timeout after %d ms", k->timeout_ms);
            return -1;
        }
        if (errno != EINTR) {
            fail(k, "poll: %s", strerror(errno));
            return -1;
        }
    }
}

/* The OpenSSL failure of the last call, with the verification result when that was it. */
static void
fail_tls(struct redis_link *k, const char *what)
{
    char buf[160];
    tls_peer_failure(k->ssl, errno ? strerror(errno) : "connection closed", buf, sizeof(buf));
    fail(k, "TLS %s: %s", what, buf);
}

/*
 * One step of an OpenSSL call that returned rc: 1 to call again (after the
 * wait it asked for), 0 the peer closed, -1 failed.
 */
static int
tls_again(struct redis_link *k, int rc, const char *what)
{
    int e = SSL_get_error(k->ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return wait_ready(k, POLLIN) == 0 ? 1 : -1;
    if (e == SSL_ERROR_WANT_WRITE)
        return wait_ready(k, POLLOUT) == 0 ? 1 : -1;
    if (e == SSL_ERROR_ZERO_RETURN)
        return 0;
    fail_tls(k, what);
    return -1;
}

static int
connect_tcp(struct redis_link *k, const struct conf_login *l)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int rc = getaddrinfo(l->hostaddr, l->port, &hints, &res);
    if (rc != 0) {
        fail(k, "cannot resolve %s: %s", l->hostaddr, gai_strerror(rc));
        return -1;
    }
    for (struct addrinfo *ai = res; ai != NULL && k->fd < 0; ai = ai->ai_next) {
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0)
            continue;
        k->fd = fd;
        int err = connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 ? 0 : errno;
        socklen_t len = sizeof(err);
        if (err == EINPROGRESS) {
            if (wait_ready(k, POLLOUT) != 0)
                err = ETIMEDOUT;
            else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
                err = errno;
        }
        if (err != 0) {
            fail(k, "connect: %s", strerror(err));
            close(fd);
            k->fd = -1;
        }
    }
    freeaddrinfo(res);
    if (k->fd < 0)
        return -1;
    k->error[0] = '\0'; /* an address that failed before one that worked */
    int one = 1;
    setsockopt(k->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return 0;
}

/* The TLS context as the backend's settings say (control/runtime.c makes the proxy's the same way). */
static int
make_ctx(struct redis_link *k, const struct conf_login *l)
{
    int verify = strcmp(l->sslmode, "verify-full") == 0;
    k->ctx = SSL_CTX_new(TLS_client_method());
    if (k->ctx == NULL) {
        fail(k, "cannot create a TLS context");
        return -1;
    }
    SSL_CTX_set_min_proto_version(k->ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(k->ctx, verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    if (verify && SSL_CTX_load_verify_locations(k->ctx, l->ca_file, NULL) != 1) {
        fail_tls(k, "CA file");
        return -1;
    }
    if (l->cert_file[0] &&
        (SSL_CTX_use_certificate_chain_file(k->ctx, l->cert_file) != 1 ||
         SSL_CTX_use_PrivateKey_file(k->ctx, l->key_file, SSL_FILETYPE_PEM) != 1)) {
        fail_tls(k, "client certificate");
        return -1;
    }
    return 0;
}

/* The handshake; with verify-full the certificate and its name are checked before it returns. */
static int
handshake(struct redis_link *k, const struct conf_login *l)
{
    if (make_ctx(k, l) != 0)
        return -1;
    k->ssl = SSL_new(k->ctx);
    if (k->ssl == NULL || SSL_set_fd(k->ssl, k->fd) != 1) {
        fail(k, "cannot create TLS state");
        return -1;
    }
    SSL_set_connect_state(k->ssl);
    if (tls_peer_expect(k->ssl, l->host, strcmp(l->sslmode, "verify-full") == 0) != 0) {
        fail(k, "cannot set the host name to verify");
        return -1;
    }
    for (;;) {
        ERR_clear_error();
        int rc = SSL_connect(k->ssl);
        if (rc == 1)
            return 0;
        if (tls_again(k, rc, "handshake") <= 0) {
            fail(k, "TLS handshake: the server closed the connection");
            return -1;
        }
    }
}

struct redis_link *
redis_link_open(const struct conf_login *l, int timeout_ms, char *err, size_t errlen)
{
    struct redis_link *k = calloc(1, sizeof(*k));
    if (k == NULL) {
        snprintf(err, errlen, "%s: out of memory", l->name);
        return NULL;
    }
    k->fd = -1;
    k->timeout_ms = timeout_ms;
    k->reader = redisReaderCreate();
    if (k->reader == NULL)
        fail(k, "out of memory");
    else if (connect_tcp(k, l) == 0 && strcmp(l->sslmode, "disable") != 0)
        handshake(k, l);
    if (k->error[0] == '\0')
        return k;
    snprintf(err, errlen, "%s: %s", l->name, k->error);
    redis_link_free(k);
    return NULL;
}

static int
send_all(struct redis_link *k, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n;
        if (k->ssl) {
            ERR_clear_error();
            int rc = SSL_write(k->ssl, p, len > (1u << 30) ? 1 << 30 : (int)len);
            if (rc <= 0) {
                if (tls_again(k, rc, "write") <= 0)
                    return -1;
                continue;
            }
            n = rc;
        } else {
            n = write(k->fd, p, len);
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_ready(k, POLLOUT) != 0)
                    return -1;
                continue;
            }
            if (n < 0) {
                fail(k, "write: %s", strerror(errno));
                return -1;
            }
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Read what the server sent into the reader: 0 some bytes, -1 closed or failed. */
static int
receive(struct redis_link *k)
{
    char buf[16384];
    for (;;) {
        ssize_t n;
        if (k->ssl) {
            ERR_clear_error();
            int rc = SSL_read(k->ssl, buf, sizeof(buf));
            if (rc <= 0) {
                int again = tls_again(k, rc, "read");
                if (again == 0)
                    fail(k, "the server closed the connection");
                if (again <= 0)
                    return -1;
                continue;
            }
            n = rc;
        } else {
            n = read(k->fd, buf, sizeof(buf));
            if (n < 0 && (errno == EAGAIN || errno == EINTR)) {
                if (wait_ready(k, POLLIN) != 0)
                    return -1;
                continue;
            }
            if (n <= 0) {
                fail(k, "read: %s", n == 0 ? "the server closed the connection" : strerror(errno));
                return -1;
            }
        }
        if (redisReaderFeed(k->reader, buf, (size_t)n) != REDIS_OK) {
            fail(k, "out of memory");
            return -1;
        }
        return 0;
    }
}

/* Send the formatted command cmd (len bytes, freed here) and wait for its reply. */
static redisReply *
roundtrip(struct redis_link *k, char *cmd, int len)
{
    void *reply = NULL;
    if (len < 0) {
        fail(k, "cannot format the command");
        return NULL;
    }
    int sent = send_all(k, cmd, (size_t)len);
    redisFreeCommand(cmd);
    if (sent != 0)
        return NULL;
    while (reply == NULL) {
        if (redisReaderGetReply(k->reader, &reply) != REDIS_OK) {
            fail(k, "invalid reply: %s", k->reader->errstr);
            return NULL;
        }
        if (reply == NULL && receive(k) != 0)
            return NULL;
    }
    return reply;
}

redisReply *
redis_link_command(struct redis_link *k, const char *fmt, ...)
{
    char *cmd = NULL;
    va_list ap;
    if (k->error[0])
        return NULL;
    va_start(ap, fmt);
    int len = redisvFormatCommand(&cmd, fmt, ap);
    va_end(ap);
    return roundtrip(k, cmd, len);
}

redisReply *
redis_link_command_argv(struct redis_link *k, int argc, const char **argv, const size_t *lens)
{
    char *cmd = NULL;
    if (k->error[0])
        return NULL;
    int len = redisFormatCommandArgv(&cmd, argc, argv, lens);
    return roundtrip(k, cmd, len);
}

const char *
redis_link_error(const struct redis_link *k)
{
    return k->error;
}

void
redis_link_free(struct redis_link *k)
{
    if (k == NULL)
        return;
    if (k->ssl) {
        if (k->error[0] == '\0')
            SSL_shutdown(k->ssl); /* close_notify, best effort: never waited for */
        SSL_free(k->ssl);
    }
    SSL_CTX_free(k->ctx);
    if (k->fd >= 0)
        close(k->fd);
    if (k->reader)
        redisReaderFree(k->reader);
    free(k);
}
