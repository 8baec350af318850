/*
 * test_session.c - the engine's session core (engine/session.h) driven by
 * a stub protocol over real sockets on a real event loop.
 *
 *   test (client) ══socketpair══► engine ──TCP──► test (primary server)
 *                                   │
 *                                   └────TCP──► test (shadow server)
 *
 * The stub protocol: a unit is one line of text, answered by one line; a
 * line starting with 'W' is a write (held, then mirrored to the shadow in
 * the primary's acknowledgement order), anything else a read (primary
 * only).  A new shadow connection first gets "LOGIN\n", a barrier: nothing
 * is released to the shadow until the shadow answered it, which lets a
 * test keep a write answered by the primary *held*.
 *
 * The test plays all three peers on one thread: it pumps the worker's
 * event_base (EVLOOP_NONBLOCK) between reads and writes of its own
 * non-blocking sockets.  The runtime is built from a configuration text
 * whose backends are the test's listening sockets; the worker comes from
 * worker_init() (no thread), with its periodic tick removed so that each
 * test decides when session_cutover_check() runs.
 *
 * Every test ends with its session freed; the teardown checks that the
 * stub's destroy hook ran exactly once per session, and that the client
 * count, the shadow-drain count and the process-wide mirror queue bytes
 * are back to zero.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "conf/conf.h"
#include "control/control.h"
#include "control/runtime.h"
#include "engine/mirror.h"
#include "engine/session.h"
#include "engine/worker.h"
#include "metrics/log.h"
#include "protocol/kind.h"

#define LINE_MAX_LEN 256
#define WAIT_MS 3000 /* how long a test waits for something that must happen */
#define QUIET_MS 50  /* how long it listens for something that must not */

/* ------------------------------------------------------------------ */
/* The stub protocol plug-in.                                          */

struct stub_unit {
    struct mirror_unit base; /* first: the queue's pointers are ours */
};

struct stub_session {
    struct session base; /* first: the engine's pointers are ours */
    unsigned input_closed : 1;
};

/* What the hooks saw: kept outside the session, which destroy frees. */
static struct tally {
    int destroyed;
    int close_with[2]; /* by enum session_close */
    int swaps;
    int orphans;
    int detaches;
    uint64_t owed; /* units the shadow owed at its detaches */
    int records;
    int units; /* allocated, minus freed */
} tally;

/* The session of the running test; NULL once destroy ran. */
static struct stub_session *cur;

static struct worker *w;
static struct runtime *rt;
static const struct rt_listener *lis;
static int slot;

static struct stub_unit *
unit_new(enum req_kind kind)
{
    struct stub_unit *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->base.forced = -1;
    u->base.closed = 1; /* one line: whole once read */
    u->base.kind = (uint8_t)kind;
    tally.units++;
    return u;
}

/* The length of the first line of buf (its '\n' included), 0 when none is whole. */
static size_t
line_len(struct evbuffer *buf)
{
    size_t eol_len = 0;
    struct evbuffer_ptr p = evbuffer_search_eol(buf, NULL, &eol_len, EVBUFFER_EOL_LF);
    return p.pos < 0 ? 0 : (size_t)p.pos + eol_len;
}

/* Write what waits for the shadow, if it is logged in. */
static void
shadow_flush(struct session *s)
{
    if (s->mirror.state == MIRROR_READY && evbuffer_get_length(s->shadow_conn->out) > 0)
        session_shadow_flush(s);
}

/* Release the held units the primary answered, in order, and send them. */
static void
shadow_release(struct session *s)
{
    if (s->mirror.state == MIRROR_OFF)
        return;
    mirror_release(&s->mirror, 0, session_clock(s));
    mirror_complete(&s->mirror);
    shadow_flush(s);
}

/* A cutover holds writes: paused, or this session not yet on the listener's roles. */
static int
write_must_wait(struct session *s)
{
    int sl = s->lis->metric_slot;
    return s->shadow_be != NULL &&
           (control_paused(sl) || s->swapped != (unsigned)control_roles_swapped(sl));
}

/* The mirror queue's hooks (engine/mirror.h). */

static int
stub_send(void *owner, struct mirror_unit *mu, struct evbuffer *src, size_t len)
{
    struct session *s = owner;
    evbuffer_remove_buffer(src, s->shadow_conn->out, len);
    return 0;
}

static void
stub_record(void *owner, struct mirror_unit *u)
{
    (void)owner;
    (void)u;
    tally.records++;
}

static void
stub_free_unit(void *owner, struct mirror_unit *u)
{
    (void)owner;
    tally.units--;
    free(u);
}

static void
stub_close(void *owner)
{
    struct session *s = owner;
    if (s->shadow_open) {
        conn_release(s->shadow_conn);
        s->shadow_open = 0;
    }
}

static void
stub_detached(void *owner, enum shadow_outcome why, const char *reason,
              const struct mirror_unit *lost, uint64_t owed)
{
    (void)why;
    (void)reason;
    (void)lost;
    tally.detaches++;
    tally.owed += owed;
    session_shadow_progress(owner);
}

static const struct mirror_ops stub_mirror_ops = {
    .send = stub_send,
    .record = stub_record,
    .free_unit = stub_free_unit,
    .close = stub_close,
    .detached = stub_detached,
};

/* The session's hooks (engine/session.h). */

static void
stub_client_input(struct session *s)
{
    struct stub_session *ss = (struct stub_session *)s;
    size_t len;
    char line[LINE_MAX_LEN];

    if (s->state != SESSION_ACTIVE || ss->input_closed)
        return;
    while ((len = line_len(s->client.in)) > 0) {
        if (len > sizeof(line)) {
            session_close(s);
            return;
        }
        evbuffer_copyout(s->client.in, line, len);
        int write = line[0] == 'W';
        if (write && write_must_wait(s)) {
            s->writes_waiting = 1; /* it, and what follows, stay in client.in */
            return;
        }
        struct stub_unit *u = unit_new(write ? REQ_KIND_WRITE : REQ_KIND_READ);
        if (u == NULL) {
            session_close(s);
            return;
        }
        u->base.closed_ns = session_clock(s);
        mirror_append(&s->mirror, &u->base);
        if (write && s->mirror.state != MIRROR_OFF) {
            u->base.mirrored = 1;
            if (s->mirror.state == MIRROR_DETACHED)
                mirror_drop(&s->mirror, &u->base);
            else
                mirror_hold(&s->mirror, &u->base, NULL, line, len); /* full: detached */
        }
        evbuffer_remove_buffer(s->client.in, s->server.out, len);
        s->outstanding++;
    }
}

static void
stub_server_connected(struct session *s)
{
    s->server_ready = 1;
    session_set_state(s, SESSION_ACTIVE);
    stub_client_input(s);
}

static void
stub_connect_failed(struct session *s, const char *why)
{
    (void)why;
    session_close(s);
}

/* Each whole line from the primary answers the unit awaiting it; it goes to the client. */
static void
stub_server_input(struct session *s)
{
    size_t len;
    while (s->state == SESSION_ACTIVE && (len = line_len(s->server.in)) > 0) {
        struct mirror_unit *u = s->mirror.pcur;
        if (u == NULL) {
            session_close(s); /* an answer to nothing */
            return;
        }
        evbuffer_remove_buffer(s->server.in, s->client.out, len);
        s->outstanding--;
        mirror_primary_answered(&s->mirror, u, session_clock(s));
    }
    mirror_complete(&s->mirror);
    shadow_release(s);
    stub_client_input(s); /* answers made room: requests held back may go */
}

static void
stub_server_lost(struct session *s, enum conn_io io)
{
    (void)io;
    session_close(s);
}

static void
stub_shadow_connected(struct session *s)
{
    s->mirror.state = MIRROR_READY;
    mirror_attached(&s->mirror);
    conn_want_read(s->shadow_conn, 1);
    session_shadow_flush(s);
}

/* Each whole line from the shadow answers its oldest unit owed; the login opens the barrier. */
static void
stub_shadow_input(struct session *s)
{
    struct mirror *m = &s->mirror;
    size_t len;
    while (m->state == MIRROR_READY && (len = line_len(s->shadow_conn->in)) > 0) {
        struct mirror_unit *u = m->scur;
        if (u == NULL || u->held) {
            mirror_detach(m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR,
                          "the shadow sent a reply to no request", session_clock(s));
            return;
        }
        evbuffer_drain(s->shadow_conn->in, len);
        int was_barrier = m->barrier == u;
        mirror_shadow_answered(m, u, session_clock(s));
        mirror_complete(m);
        if (was_barrier)
            shadow_release(s);
        session_shadow_progress(s);
    }
}

static void
stub_timer(struct session *s)
{
    session_close(s); /* the connect deadline */
}

static int
stub_client_wanted(struct session *s)
{
    return !((struct stub_session *)s)->input_closed && s->outstanding < 1000;
}

static void
stub_leaving(struct session *s)
{
    ((struct stub_session *)s)->input_closed = 1;
}

static void
stub_orphan(struct session *s)
{
    tally.orphans++;
    s->outstanding = 0;
    mirror_orphan(&s->mirror, session_clock(s));
    shadow_flush(s);
}

static void
stub_destroy(struct session *s)
{
    mirror_release_all(&s->mirror);
    session_shadow_conn_free(s);
    tally.destroyed++;
    if (cur != NULL && &cur->base == s)
        cur = NULL;
    free(s);
}

static int
stub_idle(struct session *s)
{
    if (s->state < SESSION_ACTIVE)
        return 1;
    return s->outstanding == 0 && evbuffer_get_length(s->server.in) == 0;
}

static void
stub_close_with(struct session *s, enum session_close why, const char *msg)
{
    (void)msg;
    tally.close_with[why]++;
    if (s->client.fd >= 0)
        evbuffer_add_printf(s->client.out, "BYE %s\n",
                            why == SESSION_CLOSE_CUTOVER ? "cutover" : "shutdown");
    session_close(s);
}

static int
stub_writes_owed(struct session *s)
{
    return mirror_writes_owed(&s->mirror);
}

/*
 * As the real plug-ins answer: never without a shadow connection; not
 * while anything is owed by either side, held, queued or half read.
 */
static int
stub_swap_ready(struct session *s)
{
    (void)s; /* the line protocol keeps nothing per side: the engine's idle checks decide */
    return 1;
}

static void
stub_swap(struct session *s)
{
    tally.swaps++;
    mirror_attached(&s->mirror);
}

static const char *
stub_phase_name(int phase)
{
    (void)phase;
    return "connecting";
}

static const struct session_ops stub_ops = {
    .protocol = "stub",
    .phase_name = stub_phase_name,
    .client_input = stub_client_input,
    .connect_failed = stub_connect_failed,
    .server_connected = stub_server_connected,
    .server_input = stub_server_input,
    .server_lost = stub_server_lost,
    .shadow_connected = stub_shadow_connected,
    .shadow_input = stub_shadow_input,
    .timer = stub_timer,
    .client_wanted = stub_client_wanted,
    .leaving = stub_leaving,
    .orphan = stub_orphan,
    .destroy = stub_destroy,
    .idle = stub_idle,
    .close_with = stub_close_with,
    .writes_owed = stub_writes_owed,
    .swap_ready = stub_swap_ready,
    .swap = stub_swap,
};

/* The shadow connection: connect, and queue the login (a barrier) ahead of every mirror. */
static void
stub_shadow_start(struct session *s)
{
    struct mirror *m = &s->mirror;
    if (session_mirror_open(s) != 0)
        return;
    int rc = session_connect_shadow(s);
    if (rc < 0)
        return;
    struct stub_unit *u = unit_new(REQ_KIND_SESSION);
    if (u == NULL) {
        mirror_detach(m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "out of memory", 0);
        return;
    }
    u->base.replay = u->base.mirrored = u->base.primary_done = u->base.barrier = 1;
    u->base.closed_ns = session_clock(s);
    mirror_append(m, &u->base);
    if (m->scur == NULL)
        m->scur = &u->base;
    evbuffer_add(s->shadow_conn->out, "LOGIN\n", 6);
    mirror_account(m, 6);
    m->barrier = &u->base;
    if (rc == 0)
        stub_shadow_connected(s);
}

/* What the worker's accept does with a protocol's accept hook. */
static void
stub_accept(int fd)
{
    struct sockaddr_in peer = {.sin_family = AF_INET, .sin_port = htons(40000)};
    peer.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    __atomic_add_fetch(&proxy_client_count, 1, __ATOMIC_RELAXED);
    struct session *s = session_new(sizeof(struct stub_session), &stub_ops, &stub_mirror_ops, w,
                                    lis, fd, (const struct sockaddr *)&peer);
    assert_non_null(s);
    cur = (struct stub_session *)s;
    worker_session_added(w, s);
    session_connect_backend(s);
    if (s->state < SESSION_LINGER && lis->conf->mode != CONF_MODE_PASSTHROUGH && lis->shadow)
        stub_shadow_start(s);
    session_settle(s);
}

/* ------------------------------------------------------------------ */
/* The test's side: three peers and a loop pump.                       */

struct peer {
    const char *name;
    int fd;
    struct evbuffer *got; /* read, not yet taken */
    int eof;
    int deaf; /* the test does not read this peer's socket for now */
};

static int primary_lfd = -1, shadow_lfd = -1;
static struct peer client, primary, shadow;

static uint64_t
ms_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
peer_poll(struct peer *p)
{
    char buf[16384];
    ssize_t n;
    if (p->fd < 0 || p->deaf)
        return;
    while ((n = recv(p->fd, buf, sizeof(buf), MSG_DONTWAIT)) > 0)
        evbuffer_add(p->got, buf, (size_t)n);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
        p->eof = 1;
}

/*
 * One turn: the engine runs what is ready, the peers read what reached
 * them.  EVLOOP_ONCE bounds each pass (EVLOOP_NONBLOCK alone loops while
 * events keep becoming active: an engine bug leaving a dead socket's read
 * event on would hang the test instead of failing it).
 */
static void
pump(void)
{
    for (int i = 0; i < 4; i++)
        event_base_loop(w->base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
    peer_poll(&client);
    peer_poll(&primary);
    peer_poll(&shadow);
}

/* Pump until cond holds (then 1), or WAIT_MS passed (then 0). */
#define WAIT_FOR(cond)                                                                             \
    ({                                                                                             \
        uint64_t deadline_ = ms_now() + WAIT_MS;                                                   \
        int ok_;                                                                                   \
        while (!(ok_ = !!(cond)) && ms_now() < deadline_) {                                        \
            pump();                                                                                \
            usleep(500);                                                                           \
        }                                                                                          \
        ok_;                                                                                       \
    })

/* Pump for QUIET_MS: what must not happen has had its chance. */
static void
settle_a_while(void)
{
    uint64_t until = ms_now() + QUIET_MS;
    while (ms_now() < until) {
        pump();
        usleep(500);
    }
}

static void
peer_send(struct peer *p, const char *text)
{
    size_t len = strlen(text);
    assert_int_equal(send(p->fd, text, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* p receives exactly `want` next (and it is taken). */
static void
peer_expect(struct peer *p, const char *want)
{
    size_t len = strlen(want);
    if (!WAIT_FOR(evbuffer_get_length(p->got) >= len)) {
        print_error("%s: waited for \"%s\", have %zu bytes\n", p->name, want,
                    evbuffer_get_length(p->got));
        fail();
    }
    char *have = (char *)evbuffer_pullup(p->got, (ev_ssize_t)len);
    if (memcmp(have, want, len) != 0) {
        print_error("%s: want \"%s\", got \"%.*s\"\n", p->name, want, (int)len, have);
        fail();
    }
    evbuffer_drain(p->got, len);
}

/* p receives nothing more for a while. */
static void
peer_quiet(struct peer *p)
{
    settle_a_while();
    if (evbuffer_get_length(p->got) > 0) {
        size_t n = evbuffer_get_length(p->got);
        print_error("%s: unexpected \"%.*s\"\n", p->name, (int)n,
                    (char *)evbuffer_pullup(p->got, -1));
        fail();
    }
}

/* p's connection is closed by the engine (after what it already received). */
static void
peer_expect_eof(struct peer *p)
{
    if (!WAIT_FOR(p->eof)) {
        print_error("%s: still open\n", p->name);
        fail();
    }
}

static int
listen_any(struct sockaddr_in *addr)
{
    socklen_t len = sizeof(*addr);
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    memset(addr, 0, sizeof(*addr));
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)addr, sizeof(*addr)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)addr, &len), 0);
    return fd;
}

static void
peer_accept(struct peer *p, int lfd)
{
    assert_true(WAIT_FOR((p->fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0));
}

static void
peer_close(struct peer *p)
{
    if (p->fd >= 0)
        close(p->fd);
    p->fd = -1;
    p->eof = p->deaf = 0;
    evbuffer_drain(p->got, evbuffer_get_length(p->got));
}

/*
 * A new session: the client connects (socketpair), the engine connects to
 * both servers, the shadow gets the login; login_ok answers it (else the
 * barrier stays: nothing is released to the shadow until the test answers).
 * client_sndbuf: the engine's side of the client socket, 0 for the default.
 */
static void
open_session(int login_ok, int client_sndbuf)
{
    int sv[2];
    /* both ends non-blocking: the worker's accept hands the engine such a socket */
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    if (client_sndbuf > 0)
        assert_int_equal(
            setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &client_sndbuf, sizeof(client_sndbuf)), 0);
    client.fd = sv[0];
    stub_accept(sv[1]);
    peer_accept(&primary, primary_lfd);
    peer_accept(&shadow, shadow_lfd);
    assert_true(WAIT_FOR(cur != NULL && cur->base.state == SESSION_ACTIVE &&
                         cur->base.mirror.state == MIRROR_READY));
    peer_expect(&shadow, "LOGIN\n");
    if (login_ok) {
        peer_send(&shadow, "OK\n");
        assert_true(WAIT_FOR(cur->base.mirror.barrier == NULL));
    }
}

/* session_cutover_check as the worker's look calls it. */
static int
cutover_check(void)
{
    int sl = -1;
    int rc = session_cutover_check(&cur->base, &sl);
    assert_int_equal(sl, slot);
    return rc;
}

/* ------------------------------------------------------------------ */
/* Setup.                                                              */

static int
group_setup(void **state)
{
    (void)state;
    struct sockaddr_in pa, sa;
    char text[512], err[512];
    struct conf_errors errs;

    log_setup(CONF_LOG_TEXT, getenv("TEST_SESSION_DEBUG") ? CONF_LOG_DEBUG : CONF_LOG_ERROR);
    primary_lfd = listen_any(&pa);
    shadow_lfd = listen_any(&sa);
    snprintf(text, sizeof(text),
             /* a connect deadline apart from the mirror timeout (5 s), so a test can tell them */
             "limits { connect_timeout 2s; }\n"
             "backend blue { address 127.0.0.1:%d; }\n"
             "backend green { address 127.0.0.1:%d; }\n"
             "listener stub { listen 127.0.0.1:1; protocol redis; primary blue; shadow green;\n"
             "  mode shadow; }\n",
             ntohs(pa.sin_port), ntohs(sa.sin_port));
    memset(&errs, 0, sizeof(errs));
    struct conf *c = conf_load_buffer("t.conf", text, strlen(text), &errs);
    if (c == NULL || errs.count > 0)
        return -1;
    rt = runtime_new(c, err, sizeof(err));
    if (rt == NULL) {
        print_error("runtime_new: %s\n", err);
        return -1;
    }
    control_load(rt);
    lis = &rt->listeners[0];
    slot = lis->metric_slot;
    if ((w = malloc(sizeof(*w))) == NULL || worker_init(w, 0, rt) != 0)
        return -1;
    /* the periodic look (cutover_check, shadow_tick) runs when a test says so */
    event_del(w->tick);
    client.got = evbuffer_new();
    primary.got = evbuffer_new();
    shadow.got = evbuffer_new();
    client.fd = primary.fd = shadow.fd = -1;
    client.name = "client";
    primary.name = "primary";
    shadow.name = "shadow";
    return 0;
}

static int
group_teardown(void **state)
{
    (void)state;
    worker_release(w);
    free(w);
    runtime_unref(rt);
    close(primary_lfd);
    close(shadow_lfd);
    evbuffer_free(client.got);
    evbuffer_free(primary.got);
    evbuffer_free(shadow.got);
    return 0;
}

static int
setup(void **state)
{
    (void)state;
    memset(&tally, 0, sizeof(tally));
    control_set_roles_swapped(slot, 0);
    control_set_paused(slot, 0, 0);
    return 0;
}

static int
teardown(void **state)
{
    (void)state;
    int leftover = cur != NULL;
    if (leftover)
        session_kill(&cur->base); /* a failed test's session: do not leak into the next */
    peer_close(&client);
    peer_close(&primary);
    peer_close(&shadow);
    assert_false(leftover);
    assert_int_equal(tally.destroyed, 1);
    assert_int_equal(tally.units, 0);
    assert_int_equal(w->nsessions, 0);
    assert_int_equal(proxy_client_count, 0);
    assert_int_equal(proxy_shadow_drains, 0);
    assert_int_equal(session_queue_total(), 0);
    return 0;
}

/* ------------------------------------------------------------------ */
/* Tests.                                                              */

/*
 * A write the primary answered but the shadow has not received (held
 * behind the shadow's login) when the roles flip: the session does not
 * swap while it is held; the write reaches the shadow once released; after
 * the swap the former shadow answers, and the old primary, now mirrored,
 * never receives that write again.  A write sent after the flip waits
 * until the session has swapped, then goes to the new primary.
 */
static void
test_cutover_waits_for_held_write(void **state)
{
    (void)state;
    open_session(0, 0); /* the shadow's login stays unanswered: releases wait */

    peer_send(&client, "W1\n");
    peer_expect(&primary, "W1\n");
    peer_send(&primary, "OK W1\n");
    peer_expect(&client, "OK W1\n");
    assert_int_equal(cur->base.mirror.nheld, 1); /* answered by the primary, still held */
    peer_quiet(&shadow);

    control_set_roles_swapped(slot, 1);
    assert_int_equal(cutover_check(), 1); /* keeps the cutover waiting */
    assert_false(cur->base.swapped);
    assert_ptr_equal(cur->base.be, lis->primary);
    assert_int_equal(tally.swaps, 0);

    /* a write after the flip waits: neither side gets it while the session is not swapped */
    peer_send(&client, "W2\n");
    settle_a_while();
    assert_true(cur->base.writes_waiting);
    peer_quiet(&primary);
    peer_quiet(&shadow);

    /* the login is answered: the held write goes to the shadow, which still owes it */
    peer_send(&shadow, "OK\n");
    peer_expect(&shadow, "W1\n");
    assert_int_equal(cur->base.mirror.nheld, 0);
    assert_int_equal(cutover_check(), 1);
    assert_int_equal(tally.swaps, 0);

    peer_send(&shadow, "OK W1\n");
    assert_true(WAIT_FOR(cur->base.mirror.head == NULL));
    assert_int_equal(cutover_check(), 0);
    assert_int_equal(tally.swaps, 1);
    assert_true(cur->base.swapped);
    assert_ptr_equal(cur->base.be, lis->shadow);
    assert_ptr_equal(cur->base.shadow_be, lis->primary);

    /* the waiting write goes to the new primary (the former shadow), then is mirrored */
    peer_expect(&shadow, "W2\n");
    peer_quiet(&primary);
    peer_send(&shadow, "OK W2\n");
    peer_expect(&client, "OK W2\n");
    peer_expect(&primary, "W2\n"); /* the old primary gets the mirror of W2, never W1 again */
    peer_send(&primary, "OK W2\n");

    /* reads go to the new primary alone */
    peer_send(&client, "R3\n");
    peer_expect(&shadow, "R3\n");
    peer_send(&shadow, "OK R3\n");
    peer_expect(&client, "OK R3\n");
    assert_true(WAIT_FOR(cur->base.mirror.head == NULL));
    peer_quiet(&primary);
    assert_int_equal(tally.records, 2); /* W1 and W2 compared */

    session_kill(&cur->base);
    assert_null(cur);
}

/*
 * Paused: the session keeps the cutover waiting while a write of it is
 * unacknowledged by the primary, then by the shadow; 0 once both
 * acknowledged.  A write sent while paused waits in tandem (it is owed to
 * nobody yet) and goes once the pause ends.
 */
static void
test_paused_reports_writes_owed(void **state)
{
    (void)state;
    open_session(1, 0);

    assert_int_equal(cutover_check(), 0); /* not paused, not flipped: nothing to say */
    peer_send(&client, "W1\n");
    peer_expect(&primary, "W1\n");
    control_set_paused(slot, 1, 1);
    assert_int_equal(cutover_check(), 1); /* the primary owes W1 */

    peer_send(&client, "W2\n");
    settle_a_while();
    assert_true(cur->base.writes_waiting);
    peer_quiet(&primary);

    peer_send(&primary, "OK W1\n");
    peer_expect(&client, "OK W1\n");
    peer_expect(&shadow, "W1\n");
    assert_int_equal(cutover_check(), 1); /* the shadow owes W1 */

    peer_send(&shadow, "OK W1\n");
    assert_true(WAIT_FOR(cur->base.mirror.head == NULL));
    assert_int_equal(cutover_check(), 0); /* drained: W2 waits in tandem, owed to nobody */
    peer_quiet(&primary);

    control_set_paused(slot, 0, 1);
    assert_int_equal(cutover_check(), 0);
    peer_expect(&primary, "W2\n");
    peer_send(&primary, "OK W2\n");
    peer_expect(&client, "OK W2\n");
    peer_expect(&shadow, "W2\n");
    peer_send(&shadow, "OK W2\n");
    assert_true(WAIT_FOR(cur->base.mirror.head == NULL));
    assert_int_equal(tally.swaps, 0);

    session_kill(&cur->base);
    assert_null(cur);
}

/*
 * A session whose shadow connection is gone (DETACHED) when the roles flip
 * cannot follow: it keeps the cutover waiting while it owes its client an
 * answer, then is closed with SESSION_CLOSE_CUTOVER at its idle point,
 * never swapped.
 */
static void
test_detached_session_closed_at_flip(void **state)
{
    (void)state;
    open_session(1, 0);

    peer_close(&shadow); /* the shadow server goes away */
    assert_true(WAIT_FOR(cur->base.mirror.state == MIRROR_DETACHED));
    assert_int_equal(tally.detaches, 1);

    peer_send(&client, "W1\n");
    peer_expect(&primary, "W1\n");
    control_set_roles_swapped(slot, 1);
    assert_int_equal(cutover_check(), 1); /* W1 unanswered: not idle yet */
    assert_int_equal(tally.close_with[SESSION_CLOSE_CUTOVER], 0);

    peer_send(&primary, "OK W1\n");
    peer_expect(&client, "OK W1\n");
    assert_int_equal(cutover_check(), 0);
    assert_int_equal(tally.close_with[SESSION_CLOSE_CUTOVER], 1);
    assert_int_equal(tally.close_with[SESSION_CLOSE_SHUTDOWN], 0);
    assert_int_equal(tally.swaps, 0);
    assert_non_null(cur); /* never freed inside the check: from its own settle event */
    assert_ptr_equal(cur->base.be, lis->primary);

    assert_true(WAIT_FOR(cur == NULL));
    peer_expect(&client, "BYE cutover\n");
    peer_expect_eof(&client);
    peer_expect_eof(&primary);
    assert_int_equal(tally.swaps, 0);
}

/* The client leaves while the shadow owes W1: the session drains its shadow. */
static void
leave_with_shadow_owing(void)
{
    open_session(1, 0);
    peer_send(&client, "W1\n");
    peer_expect(&primary, "W1\n");
    peer_send(&primary, "OK W1\n");
    peer_expect(&client, "OK W1\n");
    peer_expect(&shadow, "W1\n");

    peer_close(&client);
    assert_true(WAIT_FOR(cur == NULL || cur->base.state == SESSION_SHADOW_DRAIN));
    assert_non_null(cur);
    assert_int_equal(cur->base.state, SESSION_SHADOW_DRAIN);
    assert_int_equal(cur->base.client.fd, -1); /* the client's socket is released */
    assert_false(cur->base.server_open);
    assert_int_equal(tally.orphans, 1);
    assert_int_equal(tally.destroyed, 0);
    assert_int_equal(proxy_client_count, 0); /* the client is counted out already */
    assert_int_equal(proxy_shadow_drains, 1);
    peer_expect_eof(&primary);
    assert_false(shadow.eof);
}

/* ... and is freed once the shadow answered what it owed. */
static void
test_teardown_drains_shadow(void **state)
{
    (void)state;
    leave_with_shadow_owing();

    settle_a_while();
    assert_non_null(cur); /* still owed: kept */
    peer_send(&shadow, "OK W1\n");
    assert_true(WAIT_FOR(cur == NULL));
    assert_int_equal(tally.destroyed, 1);
    assert_int_equal(tally.records, 1);
    assert_int_equal(tally.owed, 0);
    peer_expect_eof(&shadow);
}

/* ... or at once on session_kill, what the shadow owed counted as dropped. */
static void
test_teardown_kill_while_draining(void **state)
{
    (void)state;
    leave_with_shadow_owing();

    session_kill(&cur->base);
    assert_null(cur);
    assert_int_equal(tally.destroyed, 1);
    assert_int_equal(tally.detaches, 1);
    assert_int_equal(tally.owed, 1);
    assert_int_equal(tally.close_with[SESSION_CLOSE_SHUTDOWN], 0); /* its client is gone */
    peer_expect_eof(&shadow);
}

/*
 * The client leaves while its write is still held (the primary has not
 * answered): the primary may have run it, so it goes to the shadow anyway
 * (orphan: released by force), and the session drains until the shadow
 * answered it.
 */
static void
test_teardown_releases_held_write(void **state)
{
    (void)state;
    open_session(1, 0);
    peer_send(&client, "W1\n");
    peer_expect(&primary, "W1\n");
    assert_int_equal(cur->base.mirror.nheld, 1);
    peer_quiet(&shadow);

    peer_close(&client);
    peer_expect(&shadow, "W1\n");
    assert_non_null(cur);
    assert_int_equal(cur->base.state, SESSION_SHADOW_DRAIN);
    assert_int_equal(cur->base.mirror.nheld, 0);
    peer_expect_eof(&primary);

    peer_send(&shadow, "OK W1\n");
    assert_true(WAIT_FOR(cur == NULL));
    assert_int_equal(tally.records, 1);
    assert_int_equal(tally.owed, 0);
    peer_expect_eof(&shadow);
}

/* session_kill of an active session: told why (close_with SHUTDOWN), freed at once. */
static void
test_kill_active_session(void **state)
{
    (void)state;
    open_session(1, 0);
    peer_send(&client, "R1\n");
    peer_expect(&primary, "R1\n"); /* unanswered: the session is busy */

    session_kill(&cur->base);
    assert_null(cur);
    assert_int_equal(tally.close_with[SESSION_CLOSE_SHUTDOWN], 1);
    assert_int_equal(tally.close_with[SESSION_CLOSE_CUTOVER], 0);
    peer_expect(&client, "BYE shutdown\n");
    peer_expect_eof(&client);
    peer_expect_eof(&primary);
    peer_expect_eof(&shadow);
}

/*
 * Backpressure: while client.out holds SESSION_BACKPRESSURE_BYTES or more
 * (the client does not read), the primary's connection is not read; once
 * the client reads, everything arrives, in order.
 */
#define BP_UNITS 64
#define BP_LINE 8192

static void
test_backpressure_stops_reading_primary(void **state)
{
    (void)state;
    static char answers[BP_UNITS * BP_LINE];
    size_t total = sizeof(answers), sent = 0;

    open_session(1, 4096); /* the kernel holds little of what goes to the client */
    for (int i = 0; i < BP_UNITS; i++) {
        char *line = answers + (size_t)i * BP_LINE;
        memset(line, 'a' + i % 26, BP_LINE - 1);
        line[BP_LINE - 1] = '\n';
        peer_send(&client, "R\n");
    }
    assert_true(WAIT_FOR(cur->base.outstanding == BP_UNITS));

    /* the primary answers everything; the client reads nothing */
    client.deaf = 1;
    int stopped = WAIT_FOR(({
        ssize_t n = sent < total ? send(primary.fd, answers + sent, total - sent,
                                        MSG_DONTWAIT | MSG_NOSIGNAL)
                                 : 0;
        if (n > 0)
            sent += (size_t)n;
        evbuffer_get_length(cur->base.client.out) >= SESSION_BACKPRESSURE_BYTES &&
            !cur->base.server.reading;
    }));
    assert_true(stopped);
    assert_non_null(cur->base.client.ev_write); /* a write would block: its event exists */
    size_t backlog = evbuffer_get_length(cur->base.client.out);
    settle_a_while();
    assert_false(cur->base.server.reading);
    assert_int_equal(evbuffer_get_length(cur->base.client.out), backlog); /* nothing more read */
    assert_true(cur->base.outstanding > 0);

    /* the client reads: the primary is read again and every answer arrives */
    client.deaf = 0;
    size_t want = total;
    assert_true(WAIT_FOR(({
        if (sent < total) {
            ssize_t n = send(primary.fd, answers + sent, total - sent, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
        }
        evbuffer_get_length(client.got) >= want;
    })));
    assert_int_equal(evbuffer_get_length(client.got), want);
    assert_memory_equal(evbuffer_pullup(client.got, -1), answers, want);
    evbuffer_drain(client.got, want);
    assert_int_equal(cur->base.outstanding, 0);
    assert_true(cur->base.server.reading);
    assert_true(WAIT_FOR(cur->base.client.ev_write == NULL)); /* all written: the event went */

    session_kill(&cur->base);
    assert_null(cur);
}

/*
 * The worker's periodic look (session_shadow_tick): a shadow that has not
 * answered a mirror within the listener's mirror timeout is detached, what
 * it owed counted as dropped; the lag it reports is that mirror's age.  The
 * client never notices: its next request is answered by the primary alone.
 */
static void
test_shadow_timeout_detaches(void **state)
{
    (void)state;
    uint64_t lag = 0, timeout_ns = (uint64_t)lis->conf->mirror.timeout_ms * 1000000ull;

    open_session(1, 0);
    peer_send(&client, "W1\n");
    peer_expect(&primary, "W1\n");
    peer_send(&primary, "OK W1\n");
    peer_expect(&client, "OK W1\n");
    peer_expect(&shadow, "W1\n"); /* and the shadow never answers */

    uint64_t sent = cur->base.mirror.scur->shadow_sent_ns;
    assert_int_equal(session_shadow_tick(&cur->base, sent + timeout_ns / 2, &lag), 0);
    assert_int_equal(lag, timeout_ns / 2);
    assert_int_equal(tally.detaches, 0);

    assert_int_equal(session_shadow_tick(&cur->base, sent + timeout_ns + 1, &lag), 1);
    assert_int_equal(cur->base.mirror.state, MIRROR_DETACHED);
    assert_int_equal(tally.detaches, 1);
    assert_int_equal(tally.owed, 1);
    peer_expect_eof(&shadow);

    /* detached, the session goes on with the primary; the tick reports no lag */
    peer_send(&client, "W2\n");
    peer_expect(&primary, "W2\n");
    peer_send(&primary, "OK W2\n");
    peer_expect(&client, "OK W2\n");
    assert_int_equal(session_shadow_tick(&cur->base, sent + 2 * timeout_ns, &lag), 1);
    assert_int_equal(lag, 0);

    session_kill(&cur->base);
    assert_null(cur);
}

/*
 * An idle session holds only what every session needs: no write event on
 * any connection (they exist while a write would block), no timer (while
 * a deadline is due).  A session queued for settling and then freed
 * leaves its worker's settle queue: the queue's event finds nothing.
 */
static void
test_idle_session_holds_no_events(void **state)
{
    (void)state;
    open_session(1, 0);
    peer_send(&client, "R1\n");
    peer_expect(&primary, "R1\n");
    peer_send(&primary, "OK R1\n");
    peer_expect(&client, "OK R1\n");
    assert_true(WAIT_FOR(cur->base.outstanding == 0));
    assert_null(cur->base.client.ev_write);
    assert_null(cur->base.server.ev_write);
    assert_non_null(cur->base.shadow_conn);
    assert_null(cur->base.shadow_conn->ev_write);
    assert_null(cur->base.timer);
    assert_null(cur->base.client.tls_error);

    /* a wake-up allocates the timer; once it fired, it is gone again */
    session_wake(&cur->base);
    assert_non_null(cur->base.timer);
    assert_true(WAIT_FOR(cur->base.timer == NULL));

    session_settle_soon(&cur->base);
    session_settle_soon(&cur->base); /* queued once */
    assert_ptr_equal(w->settle_head, &cur->base);
    assert_null(cur->base.settle_next);
    session_kill(&cur->base);
    assert_null(cur);
    assert_null(w->settle_head);
    pump(); /* the settle event, with nothing queued */
}

/*
 * A shadow connect still in flight past connect_timeout is given up by
 * the same look (counted as a connect failure, the shadow detached); the
 * session keeps its primary and serves the client.
 */
static void
test_shadow_connect_deadline(void **state)
{
    (void)state;
    int sv[2];
    uint64_t lag;

    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
    client.fd = sv[0];
    stub_accept(sv[1]); /* nothing pumped yet: both connects are in flight */
    assert_int_equal(cur->base.mirror.state, MIRROR_CONNECTING);
    uint64_t started = cur->base.shadow_connect_ns;
    assert_true(started != 0);
    uint64_t deadline = started + (uint64_t)rt->conf->limits.connect_timeout_ms * 1000000ull;

    assert_int_equal(session_shadow_tick(&cur->base, deadline, &lag), 0);
    assert_int_equal(cur->base.mirror.state, MIRROR_CONNECTING);
    assert_int_equal(session_shadow_tick(&cur->base, deadline + 1, &lag), 1);
    assert_int_equal(cur->base.mirror.state, MIRROR_DETACHED);
    assert_int_equal(tally.detaches, 1);
    assert_false(cur->base.shadow_open);

    peer_accept(&primary, primary_lfd);
    assert_true(WAIT_FOR(cur->base.state == SESSION_ACTIVE));
    peer_send(&client, "W1\n");
    peer_expect(&primary, "W1\n");
    peer_send(&primary, "OK W1\n");
    peer_expect(&client, "OK W1\n");
    /* the shadow's listener may hold the abandoned connect in its backlog: take and drop it */
    int fd = accept4(shadow_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0)
        close(fd);

    session_kill(&cur->base);
    assert_null(cur);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_cutover_waits_for_held_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paused_reports_writes_owed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detached_session_closed_at_flip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_teardown_drains_shadow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_teardown_kill_while_draining, setup, teardown),
        cmocka_unit_test_setup_teardown(test_teardown_releases_held_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_active_session, setup, teardown),
        cmocka_unit_test_setup_teardown(test_backpressure_stops_reading_primary, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shadow_timeout_detaches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shadow_connect_deadline, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_session_holds_no_events, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
