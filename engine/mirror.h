/*
 * mirror.h - a session's mirror queue, for every protocol.
 *
 * A session's request units form one list, in the client's order.  Each
 * unit waits for the primary's answer (pcur points at the first that
 * does); a unit that is mirrored also waits for the shadow's (scur).  Its
 * bytes wait in `held` until the primary has answered it, and only then go
 * to the shadow, in order: the shadow receives units in the order the
 * primary acknowledged them, which carries the primary's lock order
 * between sessions.
 *
 *   head -> [u1 done] -> [u2 primary done, sent] -> [u3 held] -> [u4 building] -> NULL
 *                         ^ scur                                   ^ pcur ...
 *
 * The shadow can never hurt the client: every byte that enters the queue
 * is admitted against the session's bound (mirror { queue }) and the
 * process's (limits { mirror_queue_total }); over either, or on a shadow
 * error or timeout, the shadow is *detached*: every unit it owed gets an
 * outcome (dropped, shadow_error, shadow_timeout), the drop is counted, a
 * lost write marks the listener diverged, and the session goes on with the
 * primary alone.  It may re-attach at its next idle point, after a back-off
 * (1 s doubling to 60 s), unless the shadow refused the client's identity.
 *
 * What is protocol business (framing, what a unit is, logging in, digests,
 * what replaces a refused unit) reaches the queue through struct
 * mirror_ops; the queue itself holds no socket and reads no clock: callers
 * pass `now`.  A protocol's unit embeds struct mirror_unit as its FIRST
 * member, so the queue's pointers are the protocol's units.
 */
#ifndef TANDEM_ENGINE_MIRROR_H
#define TANDEM_ENGINE_MIRROR_H

#include <stddef.h>
#include <stdint.h>

#include "metrics/shadow.h"
#include "protocol/outcome.h"

struct evbuffer;

enum mirror_state {
    MIRROR_OFF,        /* the session has no shadow */
    MIRROR_CONNECTING, /* logging in; released bytes wait for the login */
    MIRROR_READY,      /* mirrors flow */
    MIRROR_DETACHED,   /* failed or overflowed; re-attach at an idle point */
};

struct mirror_unit {
    struct mirror_unit *next;
    uint8_t kind;               /* enum req_kind of its statements or command */
    int8_t forced;              /* an outcome decided without an answer, or -1 */
    unsigned closed : 1;        /* its last message was read: whole */
    unsigned mirrored : 1;      /* its outcome is wanted (queued to the shadow, or dropped) */
    unsigned primary_done : 1;  /* the primary answered it (or never will) */
    unsigned shadow_done : 1;   /* the shadow answered it (or never will) */
    unsigned held : 1;          /* its bytes wait in held for the primary's answer */
    unsigned replay : 1;        /* ours (state replay, a login): never recorded */
    unsigned routed : 1;        /* mode split: the shadow answers the client */
    unsigned release_early : 1; /* the primary accepted enough of it to send it (COPY FROM STDIN) */
    unsigned barrier : 1;       /* a login: nothing after it is sent until the shadow answered it */
    size_t held_len;            /* its bytes in held */
    uint64_t closed_ns;         /* handed to the primary (and queued for the shadow) */
    uint64_t primary_ns;        /* primary latency */
    uint64_t shadow_sent_ns;    /* 0 until sent on a logged-in connection */
    uint64_t shadow_ns;         /* shadow latency */
    uint64_t answered_ns;       /* when the primary answered (a gated read waits past it) */
};

/* What a unit leaving held becomes (mirror_ops.releasing). */
enum mirror_verdict {
    MIRROR_SEND,    /* its bytes go to the shadow */
    MIRROR_DROP,    /* its bytes never reach the shadow; no answer is awaited */
    MIRROR_REPLACE, /* its bytes never reach the shadow; the hook queued others in their place */
};

struct mirror;

/*
 * The protocol's side of the queue.  owner is the session given to
 * mirror_init.  Hooks may detach (mirror_detach) but never free the
 * session or the mirror; a hook that detached must not touch the unit it
 * was given afterwards (the detach may have completed and freed it).
 */
struct mirror_ops {
    /*
     * send - u's len bytes at the front of src go to the shadow: its
     * connection when logged in, else what waits for the login.  0, or -1
     * after the hook detached (a write failed).  Admission was done by the
     * caller.
     */
    int (*send)(void *owner, struct mirror_unit *u, struct evbuffer *src, size_t len);
    /* releasing - u leaves held: send it, or not (NULL: always MIRROR_SEND) */
    enum mirror_verdict (*releasing)(void *owner, struct mirror_unit *u);
    /*
     * replace - MIRROR_REPLACE: u's bytes are gone from the queue; queue what
     * takes their place (mirror_admit, then send).  0, or -1 after a detach.
     */
    int (*replace)(void *owner, struct mirror_unit *u);
    /* sent - u's bytes were handed to send() (NULL: nothing to do) */
    void (*sent)(void *owner, struct mirror_unit *u);
    /* record - both sides are done with mirrored u (not a replay): its outcome */
    void (*record)(void *owner, struct mirror_unit *u);
    /* free_unit - u leaves the list for good */
    void (*free_unit)(void *owner, struct mirror_unit *u);
    /* close - detach: close the shadow connection (the queue empties held itself) */
    void (*close)(void *owner);
    /*
     * detached - after a detach: log it (reason), note the first lost write
     * (lost, NULL when none) as the listener's divergence, and whatever the
     * protocol must do then (a routed read lost).  owed units were counted.
     */
    void (*detached)(void *owner, enum shadow_outcome why, const char *reason,
                     const struct mirror_unit *lost, uint64_t owed);
};

struct mirror {
    enum mirror_state state;
    unsigned identity_refused : 1; /* the shadow cannot act as the client: never re-attach */
    struct mirror_unit *head, *tail;
    struct mirror_unit *pcur;      /* first unit awaiting the primary's answer */
    struct mirror_unit *scur;      /* first mirrored unit awaiting the shadow's */
    struct evbuffer *held;         /* mirrored units the primary has not answered yet */
    unsigned nheld;
    struct mirror_unit *first_held; /* the oldest unit in held: releases start there, not at head */
    struct mirror_unit *last_held;
    struct mirror_unit *barrier;   /* a login sent and unanswered: releases wait for its answer */
    size_t queued;                 /* this session's bytes in held and unsent to the shadow */
    size_t queue_bytes;            /* the session's bound (mirror { queue }) */
    uint64_t queue_total;          /* the process's bound (limits { mirror_queue_total }) */
    uint64_t retry_at_ns;          /* earliest re-attach */
    unsigned failures;             /* consecutive, for the back-off */
    uint64_t rng;                  /* read sampling: per session, no lock */
    struct shadow_shard *shard;    /* where drops are counted */
    int slot;                      /* the listener's metric slot */
    /*
     * gated: the shadow is fed by replication (control/replica.h).  A read
     * is sent to it only once it has applied what the primary had when it
     * answered; one that waited gate_wait_ns without that is recorded as
     * skipped_lag, never compared.
     */
    unsigned gated : 1;
    uint64_t gate_wait_ns;
    const struct mirror_ops *ops;
    void *owner;
};

/*
 * mirror_skip_gated - the roles are about to change: gated reads still
 * held (waiting for the shadow to catch up) are recorded skipped_lag now.
 * Sent to the other side after the swap they would be compared with a
 * server that never had to catch up with their answer.
 */
void mirror_skip_gated(struct mirror *m);

/*
 * mirror_doubtful - a gated read whose answers differ proves nothing when
 * the primary wrote again after answering it: the shadow, caught up, may
 * hold the newer data.  1 then: record noise "replication", not a mismatch.
 */
int mirror_doubtful(const struct mirror *m, const struct mirror_unit *u);

/*
 * mirror_init - an empty queue, state OFF.  seed starts the read sampler
 * (any value; 0 is replaced).  Nothing is allocated until mirror_open().
 */
void mirror_init(struct mirror *m, const struct mirror_ops *ops, void *owner,
                 struct shadow_shard *shard, int slot, size_t queue_bytes,
                 uint64_t queue_total, uint64_t seed);

/* mirror_open - from OFF: allocate the queue, state DETACHED (the caller logs in next).  -1: OOM */
int mirror_open(struct mirror *m);

/* mirror_release_all - at session end: every unit freed, the queue closed, state OFF. */
void mirror_release_all(struct mirror *m);

/* mirror_append - u (cleared, forced -1) joins the list's end. */
void mirror_append(struct mirror *m, struct mirror_unit *u);

/* mirror_insert_after - u (ours, a replay) goes right behind `after` in the list. */
void mirror_insert_after(struct mirror *m, struct mirror_unit *after, struct mirror_unit *u);

/*
 * mirror_admit - len more bytes join the queue, counted against both bounds.
 * Over one the shadow is detached (dropped, "mirror queue full") and -1
 * returned: it may fall behind, the client may not.
 */
int mirror_admit(struct mirror *m, size_t len);

/* mirror_account - bytes left the queue (negative) or joined it without admission. */
void mirror_account(struct mirror *m, int64_t delta);

/*
 * mirror_hand_over - len bytes left the session's queue, unsent, for a
 * connection the session shares with others: they no longer count against
 * the session's bound, but still against the process's until that
 * connection's owner has written them (session_queue_account).
 */
void mirror_hand_over(struct mirror *m, size_t len);

/*
 * mirror_hold - u (mirrored set by the caller) joins the queue: its len bytes (the front of src, moved;
 * else bytes, copied) are admitted and wait in held for the primary's
 * answer.  -1 when admission detached the shadow (u then has its outcome);
 * src's len bytes are consumed all the same (dropped).
 */
int mirror_hold(struct mirror *m, struct mirror_unit *u, struct evbuffer *src, const void *bytes,
                size_t len);

/* mirror_hold_more - len more bytes for the last held unit (COPY data behind its statement);
 * src's len bytes are consumed, held or, on -1, dropped. */
int mirror_hold_more(struct mirror *m, struct evbuffer *src, size_t len);

/*
 * mirror_release - send, in order, the held units the primary answered
 * (or accepted: release_early), all of them when force (the client left;
 * the primary may have run them).  The first unanswered one stops the walk.
 */
void mirror_release(struct mirror *m, int force, uint64_t now);

/* mirror_fits - len more bytes would be within both bounds (nothing admitted). */
int mirror_fits(const struct mirror *m, size_t len);

/*
 * mirror_drop - a unit to mirror while detached: its outcome is dropped and
 * the drop counted (the caller notes a lost write as the divergence).
 */
void mirror_drop(struct mirror *m, struct mirror_unit *u);

/* mirror_drop_as - the same, counted for a reason of the caller's (a unit too large to queue). */
void mirror_drop_as(struct mirror *m, struct mirror_unit *u, enum shadow_drop_reason reason);

/* mirror_primary_answered - the primary answered u: pcur moves on (the caller times it). */
void mirror_primary_answered(struct mirror *m, struct mirror_unit *u, uint64_t now);

/* mirror_shadow_answered - the shadow answered u (scur): scur moves on. */
void mirror_shadow_answered(struct mirror *m, struct mirror_unit *u, uint64_t now);

/* mirror_next_for_shadow - the first unit from `from` on that the shadow still owes. */
struct mirror_unit *mirror_next_for_shadow(struct mirror_unit *from);

/* mirror_complete - record and free the units both sides are done with, oldest first. */
void mirror_complete(struct mirror *m);

/*
 * mirror_detach - give up on this shadow connection: every unit it owed
 * gets `why`, counted as dropped for reason_id; ops->close, then
 * ops->detached; completed units are recorded.  Nothing when OFF or
 * DETACHED already.
 */
void mirror_detach(struct mirror *m, enum shadow_outcome why, enum shadow_drop_reason reason_id,
                   const char *reason, uint64_t now);

/* The drop reason that goes with an outcome of detach (timeout, error, else queue full). */
enum shadow_drop_reason mirror_drop_reason(enum shadow_outcome why);

/*
 * mirror_tick - the worker's periodic look: *lag_ns gets the age of the
 * oldest mirror sent and unanswered (one still held waits for the primary,
 * not the shadow); past timeout_ns the shadow is detached
 * (shadow_timeout).  Returns 1 when the session's shadow is detached.
 */
int mirror_tick(struct mirror *m, uint64_t now, uint64_t timeout_ns, uint64_t *lag_ns);

/* mirror_busy - the shadow still owes answers, or bytes wait to be sent to it. */
int mirror_busy(const struct mirror *m);

/* mirror_writes_owed - a unit other than a read is unanswered by the primary or its shadow. */
int mirror_writes_owed(const struct mirror *m);

/*
 * mirror_orphan - the client left: no primary answer will come.  Units
 * still waiting for one are marked answered (not compared: ops->record sees
 * primary_ns 0), and what is held goes to the shadow, since the primary may
 * have run it before the client left.
 */
void mirror_orphan(struct mirror *m, uint64_t now);

/* mirror_may_reattach - detached, idle, not refused, and the back-off has passed. */
int mirror_may_reattach(const struct mirror *m, uint64_t now);

/* mirror_attached - logged in: the back-off starts over. */
void mirror_attached(struct mirror *m);

/* mirror_sample - 1 with probability p (mirror { reads }): xorshift64, per session. */
int mirror_sample(struct mirror *m, double p);

/* mirror_changes_data - losing u leaves the shadow's data behind the primary's. */
int mirror_changes_data(const struct mirror_unit *u);

#endif /* TANDEM_ENGINE_MIRROR_H */
