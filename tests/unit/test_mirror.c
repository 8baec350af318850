/*
 * test_mirror.c - the engine's mirror queue (engine/mirror.h) driven by a
 * stub protocol: no sockets, no event loop, no servers.
 *
 * The stub's hooks write down what the queue asked of them: bytes "sent to
 * the shadow" land in an evbuffer, closes, detaches, records and frees are
 * noted in order.  A unit is named by a letter and holds that letter's
 * bytes ("aaa"), so the shadow's stream shows the order units reached it.
 *
 * The process-wide queue byte count (session_queue_total) and the drop
 * counters (one shard, one listener slot) are shared by every test: each
 * compares with what it read at its start, and the teardown checks that
 * the count is back where the test found it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "engine/mirror.h"
#include "engine/session.h"
#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "protocol/kind.h"

#define SEC 1000000000ull
#define T0 (1000 * SEC) /* a session's clock: any origin will do */
#define LOG_MAX 32

struct stub_unit {
    struct mirror_unit base;     /* first: the queue's pointers are ours */
    char name;                   /* its bytes are this letter */
    enum mirror_verdict verdict; /* what releasing answers for it */
};

/* What record saw of a unit: it is freed right after. */
struct stub_record {
    char name;
    int8_t forced;
    uint64_t primary_ns;
    uint64_t shadow_ns;
};

struct stub {
    struct mirror m;
    struct evbuffer *shadow; /* what send() delivered, in order */
    char sent[LOG_MAX];      /* sent hook: unit names */
    char replaced[LOG_MAX];  /* replace hook: unit names */
    char freed[LOG_MAX];     /* free_unit hook: unit names */
    struct stub_record recorded[LOG_MAX];
    int nrecorded;
    int nunits; /* made by unit_new() */
    int closes;
    int detaches;
    int closes_at_detach; /* close had been called when detached ran */
    enum shadow_outcome why;
    char reason[64];
    char lost; /* the first lost write's name, 0 for none */
    uint64_t owed;
    int fail_send; /* send: the write fails (the hook detaches, -1) */
    /* releasing detaches first, as mirror.h allows any hook to; no test sets
     * it yet: mirror_release then sends or un-counts bytes it no longer holds */
    int detach_in_releasing;
    uint64_t total_at_start; /* session_queue_total() when the test began */
};

static struct shadow_shard *shard;
static int slot;

static char
name_of(const struct mirror_unit *u)
{
    return ((const struct stub_unit *)u)->name;
}

static void
note(char *log, char c)
{
    size_t n = strlen(log);
    assert_true(n + 1 < LOG_MAX);
    log[n] = c;
    log[n + 1] = '\0';
}

/* The stub protocol's hooks. */

static int
stub_send(void *owner, struct mirror_unit *mu, struct evbuffer *src, size_t len)
{
    struct stub *st = owner;
    /* the unit's bytes are at the front of src, all of them */
    assert_true(evbuffer_get_length(src) >= len);
    if (st->fail_send) {
        mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR,
                      "write to the shadow failed", T0);
        return -1;
    }
    evbuffer_remove_buffer(src, st->shadow, len);
    return 0;
}

static enum mirror_verdict
stub_releasing(void *owner, struct mirror_unit *u)
{
    struct stub *st = owner;
    enum mirror_verdict v = ((struct stub_unit *)u)->verdict;
    /* a detach may complete and free u: it is not touched after */
    if (st->detach_in_releasing)
        mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "gave up", T0);
    return v;
}

/* A refused unit's stand-in: one byte 'X', admitted then sent. */
static int
stub_replace(void *owner, struct mirror_unit *u)
{
    struct stub *st = owner;
    note(st->replaced, name_of(u));
    if (mirror_admit(&st->m, 1) != 0)
        return -1;
    evbuffer_add(st->shadow, "X", 1);
    return 0;
}

static void
stub_sent(void *owner, struct mirror_unit *u)
{
    struct stub *st = owner;
    note(st->sent, name_of(u));
}

static void
stub_record(void *owner, struct mirror_unit *u)
{
    struct stub *st = owner;
    /* the contract: both sides done, wanted, not ours */
    assert_true(u->closed && u->primary_done && u->shadow_done && u->mirrored && !u->replay);
    assert_true(st->nrecorded < LOG_MAX);
    st->recorded[st->nrecorded++] = (struct stub_record){
        .name = name_of(u),
        .forced = u->forced,
        .primary_ns = u->primary_ns,
        .shadow_ns = u->shadow_ns,
    };
}

static void
stub_free_unit(void *owner, struct mirror_unit *u)
{
    struct stub *st = owner;
    note(st->freed, name_of(u));
    free(u);
}

static void
stub_close(void *owner)
{
    struct stub *st = owner;
    st->closes++;
}

static void
stub_detached(void *owner, enum shadow_outcome why, const char *reason,
              const struct mirror_unit *lost, uint64_t owed)
{
    struct stub *st = owner;
    assert_int_equal(st->m.state, MIRROR_DETACHED);
    st->detaches++;
    st->closes_at_detach = st->closes;
    st->why = why;
    strncpy(st->reason, reason, sizeof(st->reason) - 1);
    st->lost = lost ? name_of(lost) : 0;
    st->owed = owed;
}

static const struct mirror_ops stub_ops = {
    .send = stub_send,
    .releasing = stub_releasing,
    .replace = stub_replace,
    .sent = stub_sent,
    .record = stub_record,
    .free_unit = stub_free_unit,
    .close = stub_close,
    .detached = stub_detached,
};

/* Helpers: units, holding, answers, what the shadow got. */

/* unit_new - a closed unit of kind, not yet in the list. */
static struct stub_unit *
unit_new(struct stub *st, enum req_kind kind, char name)
{
    struct stub_unit *u = calloc(1, sizeof(*u));
    assert_non_null(u);
    u->base.forced = -1;
    u->base.kind = (uint8_t)kind;
    u->base.closed = 1;
    u->base.closed_ns = T0;
    u->name = name;
    st->nunits++;
    return u;
}

/* unit - the client's next unit. */
static struct stub_unit *
unit(struct stub *st, enum req_kind kind, char name)
{
    struct stub_unit *u = unit_new(st, kind, name);
    mirror_append(&st->m, &u->base);
    return u;
}

/* hold - u is mirrored: n bytes of its letter wait for the primary.  mirror_hold's result. */
static int
hold(struct stub *st, struct stub_unit *u, size_t n)
{
    char bytes[64];
    assert_true(n <= sizeof(bytes));
    memset(bytes, u->name, n);
    u->base.mirrored = 1;
    return mirror_hold(&st->m, &u->base, NULL, bytes, n);
}

/* primary - the primary answered u at now (the caller times it, as a protocol does). */
static void
primary(struct stub *st, struct stub_unit *u, uint64_t now)
{
    u->base.primary_ns = now - u->base.closed_ns;
    mirror_primary_answered(&st->m, &u->base, now);
}

static void
shadow(struct stub *st, struct stub_unit *u, uint64_t now)
{
    mirror_shadow_answered(&st->m, &u->base, now);
}

/* What send() delivered so far, as a string. */
static const char *
shadow_got(struct stub *st)
{
    static char buf[256];
    size_t n = evbuffer_copyout(st->shadow, buf, sizeof(buf) - 1);
    buf[n] = '\0';
    return buf;
}

static const char *
recorded_names(struct stub *st)
{
    static char buf[LOG_MAX + 1];
    for (int i = 0; i < st->nrecorded; i++)
        buf[i] = st->recorded[i].name;
    buf[st->nrecorded] = '\0';
    return buf;
}

static uint64_t
dropped(enum shadow_drop_reason r)
{
    struct shadow_listener_stats s;
    assert_int_equal(shadow_listener_stats(slot, 0, &s), 0);
    return s.dropped[r];
}

/* Each test: a logged-in session (READY), session bound 100 bytes, no process bound. */
static int
setup(void **state)
{
    struct stub *st = calloc(1, sizeof(*st));
    if (st == NULL || (st->shadow = evbuffer_new()) == NULL)
        return -1;
    mirror_init(&st->m, &stub_ops, st, shard, slot, 100, UINT64_MAX, 42);
    if (mirror_open(&st->m) != 0)
        return -1;
    st->m.state = MIRROR_READY;
    st->total_at_start = session_queue_total();
    *state = st;
    return 0;
}

static int
teardown(void **state)
{
    struct stub *st = *state;
    mirror_release_all(&st->m);
    /* every unit made left through free_unit, once (ASan catches a second free) */
    assert_int_equal(strlen(st->freed), st->nunits);
    assert_int_equal(session_queue_total(), st->total_at_start);
    evbuffer_free(st->shadow);
    free(st);
    return 0;
}

/* 1. Bounds and accounting */

static void
test_admit_within_bounds_counts_bytes(void **state)
{
    struct stub *st = *state;
    uint64_t base = session_queue_total();
    st->m.queue_bytes = 10;

    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'), *b = unit(st, REQ_KIND_READ, 'b');
    assert_int_equal(hold(st, a, 4), 0);
    assert_int_equal(st->m.queued, 4);
    assert_int_equal(session_queue_total(), base + 4);

    /* fits answers without admitting anything */
    assert_true(mirror_fits(&st->m, 6));
    assert_false(mirror_fits(&st->m, 7));
    assert_int_equal(st->m.queued, 4);
    assert_int_equal(session_queue_total(), base + 4);
    assert_int_equal(st->m.state, MIRROR_READY);
    assert_int_equal(st->detaches, 0);

    assert_int_equal(hold(st, b, 6), 0); /* exactly the bound */
    assert_int_equal(st->m.queued, 10);
    assert_int_equal(st->m.nheld, 2);

    /* sent bytes stay counted until the protocol has written them */
    primary(st, a, T0 + 1);
    primary(st, b, T0 + 1);
    mirror_release(&st->m, 0, T0 + 1);
    assert_string_equal(shadow_got(st), "aaaabbbbbb");
    assert_int_equal(st->m.queued, 10);
    mirror_account(&st->m, -10);
    assert_int_equal(st->m.queued, 0);
    assert_int_equal(session_queue_total(), base);

    shadow(st, a, T0 + 2);
    shadow(st, b, T0 + 2);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "ab");
    assert_int_equal(st->recorded[0].forced, -1);
    assert_int_equal(st->recorded[1].forced, -1);
}

static void
test_session_bound_detaches_dropped(void **state)
{
    struct stub *st = *state;
    uint64_t base = session_queue_total();
    uint64_t full = dropped(SHADOW_DROP_QUEUE_FULL);
    st->m.queue_bytes = 10;

    struct stub_unit *a = unit(st, REQ_KIND_READ, 'a'), *b = unit(st, REQ_KIND_WRITE, 'b'),
                     *c = unit(st, REQ_KIND_WRITE, 'c');
    assert_int_equal(hold(st, a, 4), 0);
    assert_int_equal(hold(st, b, 4), 0);
    assert_int_equal(hold(st, c, 3), -1); /* 11 > 10: the shadow falls behind, not the client */

    assert_int_equal(st->m.state, MIRROR_DETACHED);
    assert_int_equal(st->closes, 1);
    assert_int_equal(st->detaches, 1);
    assert_int_equal(st->closes_at_detach, 1);
    assert_int_equal(st->why, SHADOW_DROPPED);
    assert_string_equal(st->reason, "mirror queue full");
    assert_int_equal(st->lost, 'b'); /* the first write; a is a read */
    assert_int_equal(st->owed, 3);   /* c too: it was the unit that did not fit */
    for (struct stub_unit *const *u = (struct stub_unit *const[]){a, b, c, NULL}; *u; u++) {
        assert_int_equal((*u)->base.forced, SHADOW_DROPPED);
        assert_true((*u)->base.shadow_done);
        assert_false((*u)->base.held);
    }
    assert_int_equal(st->m.nheld, 0);
    assert_int_equal(evbuffer_get_length(st->m.held), 0);
    assert_int_equal(st->m.queued, 0);
    assert_int_equal(session_queue_total(), base);
    assert_int_equal(dropped(SHADOW_DROP_QUEUE_FULL), full + 3);
    assert_string_equal(shadow_got(st), "");

    /* a refused unit's bytes leave their source all the same: none is sent with a later unit */
    struct evbuffer *src = evbuffer_new();
    evbuffer_add(src, "dddddEE", 7);
    struct stub_unit *d = unit(st, REQ_KIND_WRITE, 'd');
    d->base.mirrored = 1;
    st->m.state = MIRROR_READY;
    st->m.queue_bytes = 4;
    assert_int_equal(mirror_hold(&st->m, &d->base, src, NULL, 5), -1);
    assert_int_equal(evbuffer_get_length(src), 2);
    assert_int_equal(mirror_hold_more(&st->m, src, 2), -1); /* nothing held to add to */
    assert_int_equal(evbuffer_get_length(src), 0);
    evbuffer_free(src);
    primary(st, d, T0 + 1);

    /* recorded once the primary is done with them, not before */
    assert_int_equal(st->nrecorded, 0);
    primary(st, a, T0 + 1);
    primary(st, b, T0 + 1);
    primary(st, c, T0 + 1);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "abcd");
    for (int i = 0; i < 4; i++)
        assert_int_equal(st->recorded[i].forced, SHADOW_DROPPED);
}

static void
test_process_bound_detaches_dropped(void **state)
{
    struct stub *st = *state;
    uint64_t base = session_queue_total();
    uint64_t full = dropped(SHADOW_DROP_QUEUE_FULL);
    st->m.queue_total = base + 8; /* the session's own bound (100) is far away */

    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'), *b = unit(st, REQ_KIND_WRITE, 'b');
    assert_int_equal(hold(st, a, 3), 0);
    assert_true(mirror_fits(&st->m, 5));

    /* another session's 5 bytes fill the process's bound */
    session_queue_account(5);
    assert_false(mirror_fits(&st->m, 1));
    assert_int_equal(st->m.state, MIRROR_READY);
    assert_int_equal(hold(st, b, 1), -1);

    assert_int_equal(st->m.state, MIRROR_DETACHED);
    assert_int_equal(st->why, SHADOW_DROPPED);
    assert_int_equal(st->owed, 2);
    assert_int_equal(a->base.forced, SHADOW_DROPPED);
    assert_int_equal(b->base.forced, SHADOW_DROPPED);
    assert_int_equal(st->m.queued, 0);
    assert_int_equal(session_queue_total(), base + 5); /* only this session's bytes left */
    assert_int_equal(dropped(SHADOW_DROP_QUEUE_FULL), full + 2);
    session_queue_account(-5);
    assert_int_equal(session_queue_total(), base);
}

/* 2. Hold and release order */

static void
test_release_follows_primary_answers_in_client_order(void **state)
{
    struct stub *st = *state;
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'), *b = unit(st, REQ_KIND_WRITE, 'b'),
                     *c = unit(st, REQ_KIND_WRITE, 'c');
    assert_int_equal(hold(st, a, 2), 0);
    assert_int_equal(hold(st, b, 3), 0);
    assert_int_equal(hold(st, c, 1), 0);
    assert_ptr_equal(st->m.pcur, &a->base);
    assert_ptr_equal(st->m.scur, &a->base);
    assert_ptr_equal(st->m.last_held, &c->base);

    mirror_release(&st->m, 0, T0); /* nothing answered: nothing goes */
    assert_string_equal(shadow_got(st), "");

    primary(st, a, T0 + 1);
    primary(st, c, T0 + 1);
    assert_ptr_equal(st->m.pcur, &b->base);
    mirror_release(&st->m, 0, T0 + 1);
    assert_string_equal(shadow_got(st), "aa"); /* b blocks the walk */
    assert_string_equal(st->sent, "a");
    assert_false(a->base.held);
    assert_true(c->base.held);
    assert_int_equal(a->base.shadow_sent_ns, T0 + 1);
    assert_int_equal(st->m.nheld, 2);
    mirror_release(&st->m, 0, T0 + 1);
    assert_string_equal(shadow_got(st), "aa");

    primary(st, b, T0 + 2);
    assert_null(st->m.pcur); /* c was answered already */
    mirror_release(&st->m, 0, T0 + 2);
    assert_string_equal(shadow_got(st), "aabbbc");
    assert_string_equal(st->sent, "abc");
    assert_int_equal(b->base.shadow_sent_ns, T0 + 2);
    assert_int_equal(c->base.shadow_sent_ns, T0 + 2);
    assert_int_equal(st->m.nheld, 0);
    assert_null(st->m.last_held);
    assert_int_equal(evbuffer_get_length(st->m.held), 0);

    /* the shadow answers in order; scur follows */
    assert_true(mirror_busy(&st->m));
    shadow(st, a, T0 + 3);
    assert_ptr_equal(st->m.scur, &b->base);
    shadow(st, b, T0 + 3);
    shadow(st, c, T0 + 3);
    assert_null(st->m.scur);
    assert_true(mirror_busy(&st->m)); /* 6 bytes not yet written */
    mirror_account(&st->m, -6);
    assert_false(mirror_busy(&st->m));
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "abc");
    assert_null(st->m.head);
}

/*
 * Releases start at the oldest held unit (first_held), past the units the
 * shadow still owes: it moves over units that are not held (a read left
 * out of the mirror, a unit sent already) to the next held one, and is
 * NULL once nothing is held, however the units ahead of it stand.
 */
static void
test_release_starts_at_oldest_held_unit(void **state)
{
    struct stub *st = *state;
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a');
    assert_int_equal(hold(st, a, 1), 0);
    primary(st, a, T0 + 1);
    mirror_release(&st->m, 0, T0 + 1); /* sent: the shadow owes it, it stays at the head */
    assert_null(st->m.first_held);

    struct stub_unit *b = unit(st, REQ_KIND_WRITE, 'b');
    struct stub_unit *r = unit(st, REQ_KIND_READ, 'r'); /* not mirrored: never held */
    struct stub_unit *c = unit(st, REQ_KIND_WRITE, 'c');
    r->base.shadow_done = 1;
    assert_int_equal(hold(st, b, 2), 0);
    assert_int_equal(hold(st, c, 3), 0);
    assert_ptr_equal(st->m.first_held, &b->base);
    assert_ptr_equal(st->m.head, &a->base);

    primary(st, b, T0 + 2);
    primary(st, r, T0 + 2);
    mirror_release(&st->m, 0, T0 + 2);
    assert_string_equal(shadow_got(st), "abb");
    assert_ptr_equal(st->m.first_held, &c->base); /* past r, which was never held */

    struct stub_unit *d = unit(st, REQ_KIND_WRITE, 'd');
    assert_int_equal(hold(st, d, 1), 0);
    assert_ptr_equal(st->m.first_held, &c->base); /* a newer unit does not move it */
    primary(st, c, T0 + 3);
    primary(st, d, T0 + 3);
    mirror_release(&st->m, 0, T0 + 3);
    assert_string_equal(shadow_got(st), "abbcccd");
    assert_string_equal(st->sent, "abcd");
    assert_int_equal(st->m.nheld, 0);
    assert_null(st->m.first_held);

    shadow(st, a, T0 + 4);
    shadow(st, b, T0 + 4);
    shadow(st, c, T0 + 4);
    shadow(st, d, T0 + 4);
    mirror_account(&st->m, -7);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "abcd");
    assert_null(st->m.head);

    /* held again after all that: it starts there */
    struct stub_unit *e = unit(st, REQ_KIND_WRITE, 'e');
    assert_int_equal(hold(st, e, 1), 0);
    assert_ptr_equal(st->m.first_held, &e->base);
}

static void
test_release_early_and_force(void **state)
{
    struct stub *st = *state;
    struct evbuffer *in = evbuffer_new();

    /* COPY ... FROM STDIN: the statement, then its data behind it */
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a');
    a->base.mirrored = 1;
    evbuffer_add(in, "aaAAA", 5);
    assert_int_equal(mirror_hold(&st->m, &a->base, in, NULL, 2), 0);
    assert_int_equal(mirror_hold_more(&st->m, in, 3), 0);
    assert_int_equal(evbuffer_get_length(in), 0); /* moved, not copied */
    assert_int_equal(a->base.held_len, 5);
    assert_int_equal(st->m.queued, 5);

    mirror_release(&st->m, 0, T0);
    assert_string_equal(shadow_got(st), "");
    a->base.release_early = 1; /* the primary accepted the copy */
    mirror_release(&st->m, 0, T0);
    assert_string_equal(shadow_got(st), "aaAAA");
    assert_false(a->base.primary_done);
    assert_null(st->m.last_held);
    evbuffer_add(in, "A", 1);
    assert_int_equal(mirror_hold_more(&st->m, in, 1), -1); /* nothing held to extend */
    assert_int_equal(st->m.state, MIRROR_READY);
    evbuffer_free(in);

    struct stub_unit *b = unit(st, REQ_KIND_WRITE, 'b'), *c = unit(st, REQ_KIND_READ, 'c');
    assert_int_equal(hold(st, b, 1), 0);
    assert_int_equal(hold(st, c, 1), 0);
    mirror_release(&st->m, 0, T0);
    assert_string_equal(shadow_got(st), "aaAAA");

    /* force: the client left, the primary may have run them */
    mirror_release(&st->m, 1, T0);
    assert_string_equal(shadow_got(st), "aaAAAbc");
    assert_string_equal(st->sent, "abc");
    assert_int_equal(st->m.nheld, 0);
    mirror_account(&st->m, -7); /* written */
}

/* 3. Verdicts */

static void
test_verdict_drop_never_reaches_shadow(void **state)
{
    struct stub *st = *state;
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'), *b = unit(st, REQ_KIND_READ, 'b');
    assert_int_equal(hold(st, a, 2), 0);
    assert_int_equal(hold(st, b, 3), 0);
    a->verdict = MIRROR_DROP;

    primary(st, a, T0 + 1);
    primary(st, b, T0 + 1);
    mirror_release(&st->m, 0, T0 + 1);
    assert_string_equal(shadow_got(st), "bbb");
    assert_string_equal(st->sent, "b");
    assert_false(a->base.mirrored);
    assert_true(a->base.shadow_done);
    assert_int_equal(a->base.forced, -1);
    assert_int_equal(st->m.queued, 3); /* a's bytes left the queue */
    assert_ptr_equal(st->m.scur, &b->base);
    assert_int_equal(st->detaches, 0);

    shadow(st, b, T0 + 2);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "b"); /* a is not recorded */
    assert_string_equal(st->freed, "ab");
    mirror_account(&st->m, -3);
}

static void
test_verdict_replace_awaits_shadow(void **state)
{
    struct stub *st = *state;
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'), *b = unit(st, REQ_KIND_READ, 'b');
    assert_int_equal(hold(st, a, 2), 0);
    assert_int_equal(hold(st, b, 1), 0);
    a->verdict = MIRROR_REPLACE; /* say the primary refused it for the client's rights */

    primary(st, a, T0 + 1);
    primary(st, b, T0 + 1);
    mirror_release(&st->m, 0, T0 + 1);
    assert_string_equal(st->replaced, "a");
    assert_string_equal(shadow_got(st), "Xb"); /* the stand-in, in a's place */
    assert_string_equal(st->sent, "b");
    assert_true(a->base.mirrored);
    assert_false(a->base.shadow_done);
    assert_int_equal(a->base.shadow_sent_ns, T0 + 1);
    assert_ptr_equal(st->m.scur, &a->base);
    assert_int_equal(st->m.queued, 2); /* a's 2 out, X's 1 and b's 1 in */

    mirror_complete(&st->m);
    assert_int_equal(st->nrecorded, 0); /* a awaits the shadow's answer to its stand-in */
    shadow(st, a, T0 + 2);
    shadow(st, b, T0 + 2);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "ab");
    mirror_account(&st->m, -2);
}

static void
test_send_failure_detaches_and_stops_walk(void **state)
{
    struct stub *st = *state;
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'), *b = unit(st, REQ_KIND_WRITE, 'b');
    assert_int_equal(hold(st, a, 1), 0);
    assert_int_equal(hold(st, b, 1), 0);
    primary(st, a, T0 + 1);
    primary(st, b, T0 + 1);
    st->fail_send = 1;
    mirror_release(&st->m, 0, T0 + 1);

    assert_int_equal(st->m.state, MIRROR_DETACHED);
    assert_int_equal(st->closes, 1);
    assert_int_equal(st->detaches, 1);
    assert_int_equal(st->why, SHADOW_SHADOW_ERROR);
    assert_int_equal(st->owed, 2); /* a, whose write failed, and b behind it */
    assert_int_equal(st->lost, 'a');
    assert_string_equal(st->sent, ""); /* no sent hook for a failed send */
    assert_string_equal(shadow_got(st), "");
    assert_int_equal(st->m.queued, 0);
    assert_int_equal(st->m.nheld, 0);
    /* the primary was done with both: recorded by the detach */
    assert_string_equal(recorded_names(st), "ab");
    assert_int_equal(st->recorded[0].forced, SHADOW_SHADOW_ERROR);
    assert_int_equal(st->recorded[1].forced, SHADOW_SHADOW_ERROR);
}

/* 4. Detach and re-attach */

static void
test_detach_forces_owed_units_and_names_lost_write(void **state)
{
    struct stub *st = *state;
    uint64_t errors = dropped(SHADOW_DROP_SHADOW_ERROR);

    /* r: a read sent, unanswered by the shadow */
    struct stub_unit *r = unit(st, REQ_KIND_READ, 'r');
    assert_int_equal(hold(st, r, 1), 0);
    primary(st, r, T0 + 1);
    mirror_release(&st->m, 0, T0 + 1);
    /* p: ours, right behind r (a replay the shadow owes) */
    struct stub_unit *p = unit_new(st, REQ_KIND_WRITE, 'p');
    p->base.mirrored = p->base.primary_done = p->base.replay = 1;
    mirror_insert_after(&st->m, &r->base, &p->base);
    /* w, x: writes held; n: never mirrored */
    struct stub_unit *w = unit(st, REQ_KIND_WRITE, 'w'), *x = unit(st, REQ_KIND_TX, 'x'),
                     *n = unit(st, REQ_KIND_ADMIN, 'n');
    assert_int_equal(hold(st, w, 2), 0);
    assert_int_equal(hold(st, x, 1), 0);
    assert_ptr_equal(st->m.tail, &n->base);

    mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "shadow connection lost",
                  T0 + 5 * SEC);
    assert_int_equal(st->m.state, MIRROR_DETACHED);
    assert_int_equal(st->closes, 1);
    assert_int_equal(st->closes_at_detach, 1);
    assert_int_equal(st->detaches, 1);
    assert_int_equal(st->why, SHADOW_SHADOW_ERROR);
    assert_string_equal(st->reason, "shadow connection lost");
    assert_int_equal(st->lost, 'w'); /* not r (a read), not p (ours) */
    assert_int_equal(st->owed, 4);
    assert_int_equal(dropped(SHADOW_DROP_SHADOW_ERROR), errors + 4);
    assert_int_equal(w->base.forced, SHADOW_SHADOW_ERROR);
    assert_int_equal(x->base.forced, SHADOW_SHADOW_ERROR);
    assert_int_equal(n->base.forced, -1);
    assert_int_equal(st->m.nheld, 0);
    assert_int_equal(evbuffer_get_length(st->m.held), 0);
    assert_int_equal(st->m.queued, 0);
    assert_null(st->m.scur);
    assert_string_equal(shadow_got(st), "r");

    /* what the primary was done with is recorded at once; p is ours */
    assert_string_equal(recorded_names(st), "r");
    assert_int_equal(st->recorded[0].forced, SHADOW_SHADOW_ERROR);
    assert_string_equal(st->freed, "rp");
    assert_ptr_equal(st->m.head, &w->base);

    /* once only */
    mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "again", T0 + 6 * SEC);
    assert_int_equal(st->closes, 1);
    assert_int_equal(st->detaches, 1);

    /* not while the session still has units */
    assert_false(mirror_may_reattach(&st->m, T0 + 100 * SEC));
    primary(st, w, T0 + 7 * SEC);
    primary(st, x, T0 + 7 * SEC);
    primary(st, n, T0 + 7 * SEC);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "rwx");
    assert_int_equal(st->recorded[1].forced, SHADOW_SHADOW_ERROR);
    assert_int_equal(st->recorded[2].forced, SHADOW_SHADOW_ERROR);
    assert_string_equal(st->freed, "rpwxn");
    assert_null(st->m.head);

    /* idle: after the first failure's second */
    assert_false(mirror_may_reattach(&st->m, T0 + 6 * SEC - 1));
    assert_true(mirror_may_reattach(&st->m, T0 + 6 * SEC));
}

static void
test_reattach_backoff_doubles_to_a_minute(void **state)
{
    struct stub *st = *state;
    static const uint64_t backoff_s[] = {1, 2, 4, 8, 16, 32, 60, 60, 60};
    uint64_t now = T0;

    for (unsigned i = 0; i < sizeof(backoff_s) / sizeof(backoff_s[0]); i++) {
        st->m.state = MIRROR_READY; /* logged in again, but never confirmed: consecutive */
        mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "refused", now);
        assert_int_equal(st->m.failures, i + 1);
        assert_false(mirror_may_reattach(&st->m, now + backoff_s[i] * SEC - 1));
        assert_true(mirror_may_reattach(&st->m, now + backoff_s[i] * SEC));
        now += backoff_s[i] * SEC;
    }

    /* a good login starts the back-off over */
    st->m.state = MIRROR_READY;
    mirror_attached(&st->m);
    assert_int_equal(st->m.failures, 0);
    mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "lost", now);
    assert_false(mirror_may_reattach(&st->m, now + SEC - 1));
    assert_true(mirror_may_reattach(&st->m, now + SEC));

    /* the shadow refused the client's identity: never again */
    st->m.identity_refused = 1;
    assert_false(mirror_may_reattach(&st->m, now + 3600 * SEC));
    assert_false(mirror_may_reattach(&st->m, UINT64_MAX));
}

static void
test_drop_while_detached_counts_reason(void **state)
{
    struct stub *st = *state;
    uint64_t detached = dropped(SHADOW_DROP_DETACHED), identity = dropped(SHADOW_DROP_IDENTITY);
    st->m.state = MIRROR_DETACHED;

    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a');
    mirror_drop(&st->m, &a->base);
    assert_true(a->base.mirrored);
    assert_true(a->base.shadow_done);
    assert_int_equal(a->base.forced, SHADOW_DROPPED);
    assert_int_equal(dropped(SHADOW_DROP_DETACHED), detached + 1);
    assert_int_equal(st->m.queued, 0);

    st->m.identity_refused = 1;
    struct stub_unit *b = unit(st, REQ_KIND_READ, 'b');
    mirror_drop(&st->m, &b->base);
    assert_int_equal(dropped(SHADOW_DROP_IDENTITY), identity + 1);
    assert_int_equal(dropped(SHADOW_DROP_DETACHED), detached + 1);

    primary(st, a, T0 + 1);
    primary(st, b, T0 + 1);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "ab");
    assert_int_equal(st->recorded[0].forced, SHADOW_DROPPED);
    assert_string_equal(shadow_got(st), "");

    /* a detach of a refused identity counts its owed units as identity */
    st->m.state = MIRROR_READY;
    struct stub_unit *c = unit(st, REQ_KIND_WRITE, 'c');
    assert_int_equal(hold(st, c, 1), 0);
    mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "no such role", T0);
    assert_int_equal(dropped(SHADOW_DROP_IDENTITY), identity + 2);
}

/* 5. Tick */

static void
test_tick_reports_lag_and_times_out(void **state)
{
    struct stub *st = *state;
    const uint64_t timeout = 5 * SEC;
    uint64_t lag = 123, timeouts = dropped(SHADOW_DROP_SHADOW_TIMEOUT);

    assert_int_equal(mirror_tick(&st->m, T0, timeout, &lag), 0);
    assert_int_equal(lag, 0); /* nothing owed */

    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a');
    struct stub_unit *n = unit(st, REQ_KIND_ADMIN, 'n'); /* never mirrored: no lag of its own */
    struct stub_unit *b = unit(st, REQ_KIND_READ, 'b');
    assert_int_equal(hold(st, a, 1), 0);
    assert_int_equal(hold(st, b, 1), 0);
    primary(st, a, T0 + 1 * SEC);
    mirror_release(&st->m, 0, T0 + 1 * SEC);
    primary(st, n, T0 + 2 * SEC);
    primary(st, b, T0 + 2 * SEC);
    mirror_release(&st->m, 0, T0 + 2 * SEC);

    assert_int_equal(mirror_tick(&st->m, T0 + 3 * SEC, timeout, &lag), 0);
    assert_int_equal(lag, 2 * SEC); /* a, sent at 1 s */
    shadow(st, a, T0 + 4 * SEC);
    assert_int_equal(mirror_tick(&st->m, T0 + 4 * SEC, timeout, &lag), 0);
    assert_ptr_equal(st->m.scur, &b->base);
    assert_int_equal(lag, 2 * SEC); /* b, sent at 2 s */
    assert_int_equal(mirror_tick(&st->m, T0 + 7 * SEC, timeout, &lag), 0);
    assert_int_equal(lag, timeout); /* at the timeout, not past it */
    assert_int_equal(st->m.state, MIRROR_READY);

    assert_int_equal(mirror_tick(&st->m, T0 + 7 * SEC + 1, timeout, &lag), 1);
    assert_int_equal(lag, timeout + 1);
    assert_int_equal(st->m.state, MIRROR_DETACHED);
    assert_int_equal(st->detaches, 1);
    assert_int_equal(st->why, SHADOW_SHADOW_TIMEOUT);
    assert_int_equal(st->owed, 1);
    assert_int_equal(st->lost, 0); /* b is a read */
    assert_int_equal(dropped(SHADOW_DROP_SHADOW_TIMEOUT), timeouts + 1);
    assert_int_equal(st->m.retry_at_ns, T0 + 7 * SEC + 1 + SEC);

    assert_int_equal(mirror_tick(&st->m, T0 + 8 * SEC, timeout, &lag), 1);
    assert_int_equal(lag, 0);

    assert_string_equal(recorded_names(st), "ab");
    assert_int_equal(st->recorded[0].forced, -1);
    assert_int_equal(st->recorded[0].shadow_ns, 3 * SEC);
    assert_int_equal(st->recorded[1].forced, SHADOW_SHADOW_TIMEOUT);
}

/* 6. The cutover invariant */

static void
test_held_write_never_sent_before_primary_answer(void **state)
{
    struct stub *st = *state;
    struct stub_unit *w = unit(st, REQ_KIND_WRITE, 'w');
    assert_int_equal(hold(st, w, 3), 0);
    assert_true(mirror_writes_owed(&st->m));

    mirror_release(&st->m, 0, T0);
    assert_string_equal(shadow_got(st), "");

    /* the swap abandons the shadow: the write must not leak to it now */
    mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "abandoned at cutover",
                  T0);
    mirror_release(&st->m, 1, T0);
    assert_string_equal(shadow_got(st), "");
    assert_string_equal(st->sent, "");
    assert_int_equal(st->lost, 'w');
    assert_true(mirror_writes_owed(&st->m)); /* the primary still owes it */

    primary(st, w, T0 + 1);
    assert_false(mirror_writes_owed(&st->m));
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "w");
    assert_int_equal(st->recorded[0].forced, SHADOW_SHADOW_ERROR);
    assert_string_equal(shadow_got(st), "");

    /* logged in again: a write is owed until both sides answered it */
    st->m.state = MIRROR_READY;
    struct stub_unit *v = unit(st, REQ_KIND_WRITE, 'v');
    assert_int_equal(hold(st, v, 2), 0);
    unit(st, REQ_KIND_READ, 'r');                            /* a read the primary owes */
    struct stub_unit *p = unit_new(st, REQ_KIND_WRITE, 'p'); /* ours, the shadow owes */
    p->base.mirrored = p->base.primary_done = p->base.replay = 1;
    mirror_insert_after(&st->m, &v->base, &p->base);
    assert_true(mirror_writes_owed(&st->m));
    mirror_release(&st->m, 0, T0 + 2);
    assert_string_equal(shadow_got(st), "");

    primary(st, v, T0 + 3);
    assert_true(mirror_writes_owed(&st->m)); /* the shadow has not answered */
    mirror_release(&st->m, 0, T0 + 3);
    assert_string_equal(shadow_got(st), "vv");
    shadow(st, v, T0 + 4);
    assert_false(mirror_writes_owed(&st->m)); /* neither r (a read) nor p (ours) count */
    mirror_account(&st->m, -2);
}

/* 7. Teardown */

static void
test_release_all_frees_every_unit_once(void **state)
{
    struct stub *st = *state;
    uint64_t base = session_queue_total();

    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'); /* sent, unanswered by the shadow */
    struct stub_unit *b = unit(st, REQ_KIND_READ, 'b');  /* sent and answered */
    struct stub_unit *c = unit(st, REQ_KIND_WRITE, 'c'); /* held */
    unit(st, REQ_KIND_ADMIN, 'd');                       /* never mirrored, unanswered */
    struct stub_unit *e = unit(st, REQ_KIND_WRITE, 'e'); /* still being read */
    e->base.closed = 0;
    assert_int_equal(hold(st, a, 2), 0);
    assert_int_equal(hold(st, b, 1), 0);
    primary(st, a, T0 + 1);
    primary(st, b, T0 + 1);
    mirror_release(&st->m, 0, T0 + 1);
    shadow(st, b, T0 + 2); /* a still owed */
    assert_int_equal(hold(st, c, 3), 0);
    assert_int_equal(st->m.queued, 6);
    assert_int_equal(session_queue_total(), base + 6);

    mirror_release_all(&st->m);
    assert_string_equal(st->freed, "abcde");
    assert_int_equal(st->closes, 1);
    assert_int_equal(st->nrecorded, 0);
    assert_int_equal(st->detaches, 0);
    assert_string_equal(shadow_got(st), "aab"); /* c never went */
    assert_int_equal(st->m.state, MIRROR_OFF);
    assert_int_equal(st->m.queued, 0);
    assert_int_equal(session_queue_total(), base);
    assert_null(st->m.head);
    assert_null(st->m.tail);
    assert_null(st->m.pcur);
    assert_null(st->m.scur);
    assert_null(st->m.last_held);
    assert_null(st->m.held);
    assert_int_equal(st->m.nheld, 0);

    /* again: nothing to do */
    mirror_release_all(&st->m);
    assert_string_equal(st->freed, "abcde");
    assert_int_equal(st->closes, 1);

    /* from DETACHED the connection is closed already */
    assert_int_equal(mirror_open(&st->m), 0);
    st->m.state = MIRROR_READY;
    struct stub_unit *f = unit(st, REQ_KIND_WRITE, 'f');
    assert_int_equal(hold(st, f, 1), 0);
    mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "lost", T0);
    assert_int_equal(st->closes, 2);
    mirror_release_all(&st->m);
    assert_int_equal(st->closes, 2);
    assert_string_equal(st->freed, "abcdef");
    assert_int_equal(session_queue_total(), base);
}

/* 8. Orphan */

static void
test_orphan_releases_held_and_completes(void **state)
{
    struct stub *st = *state;
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a'), *b = unit(st, REQ_KIND_WRITE, 'b'),
                     *c = unit(st, REQ_KIND_READ, 'c');
    unit(st, REQ_KIND_ADMIN, 'd'); /* never mirrored */
    assert_int_equal(hold(st, a, 1), 0);
    assert_int_equal(hold(st, b, 2), 0);
    assert_int_equal(hold(st, c, 1), 0);
    primary(st, a, T0 + 1 * SEC);
    mirror_release(&st->m, 0, T0 + 1 * SEC);
    assert_string_equal(shadow_got(st), "a");

    /* the client left: b, c and d will never be answered by the primary */
    mirror_orphan(&st->m, T0 + 2 * SEC);
    assert_null(st->m.pcur);
    assert_true(b->base.primary_done && c->base.primary_done);
    assert_string_equal(shadow_got(st), "abbc"); /* the primary may have run them */
    assert_string_equal(st->sent, "abc");
    assert_int_equal(b->base.shadow_sent_ns, T0 + 2 * SEC);
    assert_int_equal(st->m.nheld, 0);
    assert_int_equal(st->nrecorded, 0); /* all await the shadow */

    shadow(st, a, T0 + 3 * SEC);
    shadow(st, b, T0 + 3 * SEC);
    shadow(st, c, T0 + 3 * SEC);
    mirror_complete(&st->m);
    assert_string_equal(recorded_names(st), "abc");
    assert_int_equal(st->recorded[0].primary_ns, 1 * SEC);
    assert_int_equal(st->recorded[1].primary_ns, 0); /* not compared */
    assert_int_equal(st->recorded[2].primary_ns, 0);
    assert_string_equal(st->freed, "abcd");
    mirror_account(&st->m, -4);

    /* orphaned while detached: nothing goes out, everything completes */
    struct stub_unit *e = unit(st, REQ_KIND_WRITE, 'e');
    assert_int_equal(hold(st, e, 1), 0);
    mirror_detach(&st->m, SHADOW_SHADOW_ERROR, SHADOW_DROP_SHADOW_ERROR, "lost", T0 + 4 * SEC);
    mirror_orphan(&st->m, T0 + 5 * SEC);
    assert_string_equal(shadow_got(st), "abbc");
    assert_string_equal(recorded_names(st), "abce");
    assert_int_equal(st->recorded[3].forced, SHADOW_SHADOW_ERROR);
    assert_null(st->m.head);
}

/* 9. Sampler */

static void
test_sampler_rates_are_deterministic(void **state)
{
    (void)state;
    struct mirror a, b, z;
    mirror_init(&a, &stub_ops, NULL, NULL, 0, 0, 0, 7);
    mirror_init(&b, &stub_ops, NULL, NULL, 0, 0, 0, 7);
    mirror_init(&z, &stub_ops, NULL, NULL, 0, 0, 0, 0); /* 0 is replaced */

    for (int i = 0; i < 1000; i++) {
        assert_false(mirror_sample(&a, 0));
        assert_false(mirror_sample(&a, -1));
        assert_true(mirror_sample(&a, 1));
        assert_true(mirror_sample(&a, 2));
    }
    int hits_a = 0, hits_b = 0, hits_z = 0;
    for (int i = 0; i < 100000; i++) {
        hits_a += mirror_sample(&a, 0.25);
        hits_b += mirror_sample(&b, 0.25);
        hits_z += mirror_sample(&z, 0.25);
    }
    assert_int_equal(hits_a, hits_b); /* same seed, same draws */
    assert_in_range(hits_a, 24000, 26000);
    assert_in_range(hits_z, 24000, 26000);
}

/* A releasing hook that detaches: the queue was emptied and accounted once, not twice. */
static void
test_releasing_hook_detaches_then_drop(void **state)
{
    struct stub *st = *state;
    uint64_t base = session_queue_total();
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a');
    assert_int_equal(hold(st, a, 2), 0);
    a->verdict = MIRROR_DROP;
    primary(st, a, T0 + 1);
    st->detach_in_releasing = 1;
    mirror_release(&st->m, 0, T0 + 1);
    assert_int_equal(st->m.state, MIRROR_DETACHED);
    assert_int_equal(st->m.queued, 0);
    assert_int_equal(session_queue_total(), base);
}

/* A releasing hook that detaches and says send: nothing is sent from the emptied queue. */
static void
test_releasing_hook_detaches_then_send(void **state)
{
    struct stub *st = *state;
    struct stub_unit *a = unit(st, REQ_KIND_WRITE, 'a');
    assert_int_equal(hold(st, a, 2), 0);
    primary(st, a, T0 + 1);
    st->detach_in_releasing = 1;
    mirror_release(&st->m, 0, T0 + 1); /* stub_send asserts its len bytes are there */
    assert_string_equal(st->sent, "");
}

/* A write waiting for a slow primary is not the shadow's lag: no timeout detach. */
static void
test_tick_held_unit_is_not_shadow_lag(void **state)
{
    struct stub *st = *state;
    uint64_t lag;
    struct stub_unit *w = unit(st, REQ_KIND_WRITE, 'w');
    assert_int_equal(hold(st, w, 2), 0);
    /* the primary takes 40 s over it; the shadow has not even received it */
    assert_int_equal(mirror_tick(&st->m, T0 + 40 * SEC, 30 * SEC, &lag), 0);
    assert_int_equal(st->m.state, MIRROR_READY);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_admit_within_bounds_counts_bytes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_session_bound_detaches_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_process_bound_detaches_dropped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_follows_primary_answers_in_client_order, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_release_starts_at_oldest_held_unit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_release_early_and_force, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verdict_drop_never_reaches_shadow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_verdict_replace_awaits_shadow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_failure_detaches_and_stops_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_detach_forces_owed_units_and_names_lost_write, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_reattach_backoff_doubles_to_a_minute, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_while_detached_counts_reason, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tick_reports_lag_and_times_out, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tick_held_unit_is_not_shadow_lag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_releasing_hook_detaches_then_drop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_releasing_hook_detaches_then_send, setup, teardown),
        cmocka_unit_test_setup_teardown(test_held_write_never_sent_before_primary_answer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_release_all_frees_every_unit_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_orphan_releases_held_and_completes, setup, teardown),
        cmocka_unit_test(test_sampler_rates_are_deterministic),
    };
    shard = shadow_shard_new();
    slot = metric_slot_listener("mirror_test");
    if (shard == NULL || slot < 0)
        return 1;
    return cmocka_run_group_tests(tests, NULL, NULL);
}
