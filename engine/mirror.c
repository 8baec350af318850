/*
 * mirror.c - a session's mirror queue, for every protocol (mirror.h).
 */
#include "engine/mirror.h"

#include <event2/buffer.h>
#include <string.h>

#include "control/replica.h"
#include "engine/session.h"
#include "protocol/kind.h"

void
mirror_init(struct mirror *m, const struct mirror_ops *ops, void *owner,
            struct shadow_shard *shard, int slot, size_t queue_bytes, uint64_t queue_total,
            uint64_t seed)
{
    memset(m, 0, sizeof(*m));
    m->state = MIRROR_OFF;
    m->ops = ops;
    m->owner = owner;
    m->shard = shard;
    m->slot = slot;
    m->queue_bytes = queue_bytes;
    m->queue_total = queue_total;
    m->rng = seed ? seed : 0x9e3779b97f4a7c15ull;
}

int
mirror_open(struct mirror *m)
{
    if (m->state != MIRROR_OFF)
        return 0;
    if ((m->held = evbuffer_new()) == NULL)
        return -1;
    m->state = MIRROR_DETACHED;
    return 0;
}

void
mirror_release_all(struct mirror *m)
{
    if (m->state != MIRROR_OFF && m->state != MIRROR_DETACHED)
        m->ops->close(m->owner);
    while (m->head) {
        struct mirror_unit *u = m->head;
        m->head = u->next;
        shadow_units_open(m->shard, m->slot, -1);
        m->ops->free_unit(m->owner, u);
    }
    m->tail = m->pcur = m->scur = m->first_held = m->last_held = m->barrier = NULL;
    m->nheld = 0;
    mirror_account(m, -(int64_t)m->queued);
    if (m->held)
        evbuffer_free(m->held);
    m->held = NULL;
    m->state = MIRROR_OFF;
}

void
mirror_append(struct mirror *m, struct mirror_unit *u)
{
    u->next = NULL;
    if (m->tail)
        m->tail->next = u;
    else
        m->head = u;
    m->tail = u;
    if (!u->primary_done && m->pcur == NULL)
        m->pcur = u;
    shadow_units_open(m->shard, m->slot, 1);
}

void
mirror_insert_after(struct mirror *m, struct mirror_unit *after, struct mirror_unit *u)
{
    u->next = after->next;
    after->next = u;
    if (m->tail == after)
        m->tail = u;
    shadow_units_open(m->shard, m->slot, 1);
}

void
mirror_account(struct mirror *m, int64_t delta)
{
    m->queued = (size_t)((int64_t)m->queued + delta);
    session_queue_account(delta); /* one bound for every protocol's shadows */
}

void
mirror_hand_over(struct mirror *m, size_t len)
{
    m->queued -= len;
}

int
mirror_fits(const struct mirror *m, size_t len)
{
    return m->queued + len <= m->queue_bytes && session_queue_total() + len <= m->queue_total;
}

int
mirror_admit(struct mirror *m, size_t len)
{
    if (!mirror_fits(m, len)) {
        mirror_detach(m, SHADOW_DROPPED, SHADOW_DROP_QUEUE_FULL, "mirror queue full", 0);
        return -1;
    }
    mirror_account(m, (int64_t)len);
    return 0;
}

int
mirror_hold(struct mirror *m, struct mirror_unit *u, struct evbuffer *src, const void *bytes,
            size_t len)
{
    if (mirror_admit(m, len) != 0) {
        /* the unit is dropped: its bytes too, or they would go out with the next unit */
        if (src != NULL)
            evbuffer_drain(src, len);
        return -1;
    }
    if (src != NULL)
        evbuffer_remove_buffer(src, m->held, len);
    else
        evbuffer_add(m->held, bytes, len);
    u->held = 1;
    u->held_len = len;
    u->shadow_sent_ns = 0;
    m->nheld++;
    if (m->first_held == NULL)
        m->first_held = u; /* u is the list's newest: held units stay in list order */
    m->last_held = u;
    if (m->scur == NULL)
        m->scur = u;
    return 0;
}

int
mirror_hold_more(struct mirror *m, struct evbuffer *src, size_t len)
{
    if (m->last_held == NULL || mirror_admit(m, len) != 0) {
        evbuffer_drain(src, len);
        return -1;
    }
    evbuffer_remove_buffer(src, m->held, len);
    m->last_held->held_len += len;
    return 0;
}

struct mirror_unit *
mirror_next_for_shadow(struct mirror_unit *from)
{
    while (from && (!from->mirrored || from->shadow_done || !from->closed))
        from = from->next;
    return from;
}

/*
 * unhold - u's bytes leave held (sent, dropped or skipped by the caller).
 * The shadow may be many units behind the primary, all still in the list:
 * first_held moves on to the next held unit so the next release does not
 * walk them again.
 */
static void
unhold(struct mirror *m, struct mirror_unit *u)
{
    u->held = 0;
    m->nheld--;
    if (m->last_held == u)
        m->last_held = NULL;
    if (m->first_held == u) {
        struct mirror_unit *n = m->nheld > 0 ? u->next : NULL;
        while (n && !n->held)
            n = n->next;
        m->first_held = n;
    }
}

void
mirror_release(struct mirror *m, int force, uint64_t now)
{
    for (struct mirror_unit *u = m->first_held; u && m->nheld > 0; u = u->next) {
        if (!u->held)
            continue;
        /* a login the shadow has not answered yet: what follows must not run as someone else */
        if (m->barrier != NULL)
            return;
        if (!force && !u->primary_done && !u->release_early)
            break;
        int skip = 0;
        if (m->gated && u->kind == REQ_KIND_READ && u->primary_done &&
            replica_caught_up_ns(m->slot) <= u->answered_ns) {
            /* the shadow has not applied what the primary had when it answered; a client
             * that left does not change that: its session drains the shadow, waiting */
            if (now - u->answered_ns < m->gate_wait_ns)
                break; /* later units wait too: the order stays the primary's */
            skip = 1;
        }
        unhold(m, u);
        if (skip) {
            evbuffer_drain(m->held, u->held_len);
            mirror_account(m, -(int64_t)u->held_len);
            u->held_len = 0;
            u->forced = SHADOW_SKIPPED_LAG;
            u->shadow_done = 1;
            if (m->scur == u)
                m->scur = mirror_next_for_shadow(u->next);
            continue;
        }
        enum mirror_verdict v = m->ops->releasing ? m->ops->releasing(m->owner, u) : MIRROR_SEND;
        if (m->state == MIRROR_DETACHED || m->state == MIRROR_OFF)
            return; /* the hook detached: the queue is empty and accounted already */
        if (v != MIRROR_SEND) {
            evbuffer_drain(m->held, u->held_len);
            mirror_account(m, -(int64_t)u->held_len);
            u->held_len = 0;
        }
        if (v == MIRROR_DROP) {
            /* never run on the shadow, nothing awaited from it */
            u->mirrored = 0;
            u->shadow_done = 1;
            if (m->scur == u)
                m->scur = mirror_next_for_shadow(u->next);
            continue;
        }
        u->shadow_sent_ns = m->state == MIRROR_READY ? now : 0;
        if (v == MIRROR_REPLACE) {
            if (m->ops->replace(m->owner, u) != 0)
                return; /* detached */
            continue;
        }
        if (m->ops->send(m->owner, u, m->held, u->held_len) != 0)
            return; /* detached */
        if (m->ops->sent)
            m->ops->sent(m->owner, u);
        if (m->state == MIRROR_DETACHED || m->state == MIRROR_OFF)
            return;
        if (u->barrier)
            m->barrier = u;
    }
}

void
mirror_drop(struct mirror *m, struct mirror_unit *u)
{
    mirror_drop_as(m, u, m->identity_refused ? SHADOW_DROP_IDENTITY : SHADOW_DROP_DETACHED);
}

void
mirror_drop_as(struct mirror *m, struct mirror_unit *u, enum shadow_drop_reason reason)
{
    u->mirrored = 1;
    u->forced = SHADOW_DROPPED;
    u->shadow_done = 1;
    shadow_count_dropped(m->shard, m->slot, reason, 1);
}

void
mirror_primary_answered(struct mirror *m, struct mirror_unit *u, uint64_t now)
{
    u->primary_done = 1;
    u->answered_ns = now ? now : session_now_ns();
    if (m->pcur == u) {
        struct mirror_unit *n = u->next;
        while (n && n->primary_done)
            n = n->next;
        m->pcur = n;
    }
}

void
mirror_shadow_answered(struct mirror *m, struct mirror_unit *u, uint64_t now)
{
    uint64_t since = u->shadow_sent_ns ? u->shadow_sent_ns : u->closed_ns;
    u->shadow_done = 1;
    u->shadow_ns = now > since ? now - since : 0;
    if (m->barrier == u)
        m->barrier = NULL;
    if (m->scur == u)
        m->scur = mirror_next_for_shadow(u->next);
}

void
mirror_complete(struct mirror *m)
{
    struct mirror_unit *u;
    while ((u = m->head) != NULL && u->closed && u->primary_done &&
           (u->shadow_done || !u->mirrored)) {
        if (u->mirrored && !u->replay)
            m->ops->record(m->owner, u);
        m->head = u->next;
        if (m->tail == u)
            m->tail = NULL;
        if (m->scur == u)
            m->scur = NULL;
        if (m->pcur == u)
            m->pcur = u->next;
        shadow_units_open(m->shard, m->slot, -1);
        m->ops->free_unit(m->owner, u);
    }
}

enum shadow_drop_reason
mirror_drop_reason(enum shadow_outcome why)
{
    return why == SHADOW_SHADOW_TIMEOUT ? SHADOW_DROP_SHADOW_TIMEOUT
           : why == SHADOW_SHADOW_ERROR ? SHADOW_DROP_SHADOW_ERROR
                                        : SHADOW_DROP_QUEUE_FULL;
}

void
mirror_skip_gated(struct mirror *m)
{
    if (!m->gated || m->nheld == 0)
        return;
    for (struct mirror_unit *u = m->first_held; u && m->nheld > 0; u = u->next) {
        if (!u->held)
            continue;
        if (u->kind != REQ_KIND_READ || !u->primary_done)
            break; /* held bytes are in unit order: only a leading run can be taken out */
        evbuffer_drain(m->held, u->held_len);
        mirror_account(m, -(int64_t)u->held_len);
        unhold(m, u);
        u->held_len = 0;
        u->forced = SHADOW_SKIPPED_LAG;
        u->shadow_done = 1;
        if (m->scur == u)
            m->scur = mirror_next_for_shadow(u->next);
    }
    mirror_complete(m);
}

int
mirror_doubtful(const struct mirror *m, const struct mirror_unit *u)
{
    return m->gated && replica_last_move_ns(m->slot) > u->answered_ns;
}

int
mirror_changes_data(const struct mirror_unit *u)
{
    return u->kind == REQ_KIND_WRITE || u->kind == REQ_KIND_TX;
}

void
mirror_detach(struct mirror *m, enum shadow_outcome why, enum shadow_drop_reason reason_id,
              const char *reason, uint64_t now)
{
    const struct mirror_unit *lost = NULL;
    uint64_t owed = 0;

    if (m->state == MIRROR_DETACHED || m->state == MIRROR_OFF)
        return;
    for (struct mirror_unit *u = m->head; u; u = u->next) {
        if (!u->mirrored || u->shadow_done || !u->closed)
            continue;
        u->forced = (int8_t)why;
        u->shadow_done = 1;
        u->held = 0;
        if (lost == NULL && mirror_changes_data(u) && !u->replay)
            lost = u;
        owed++;
    }
    m->scur = NULL;
    m->barrier = NULL;
    m->ops->close(m->owner);
    evbuffer_drain(m->held, evbuffer_get_length(m->held));
    m->nheld = 0;
    m->first_held = m->last_held = NULL;
    mirror_account(m, -(int64_t)m->queued);
    m->state = MIRROR_DETACHED;
    m->failures++;
    m->retry_at_ns = (now ? now : session_now_ns()) + session_retry_backoff_ns(m->failures);
    if (m->identity_refused)
        reason_id = SHADOW_DROP_IDENTITY;
    if (owed > 0)
        shadow_count_dropped(m->shard, m->slot, reason_id, owed);
    m->ops->detached(m->owner, why, reason, lost, owed);
    mirror_complete(m);
}

int
mirror_tick(struct mirror *m, uint64_t now, uint64_t timeout_ns, uint64_t *lag_ns)
{
    struct mirror_unit *u = m->scur;
    *lag_ns = 0;
    /* a unit still held waits for the primary, not the shadow: no lag of the shadow's (and
     * units are released in order, so nothing after it was sent either) */
    if ((m->state == MIRROR_READY || m->state == MIRROR_CONNECTING) && u != NULL && !u->held) {
        uint64_t since = u->shadow_sent_ns ? u->shadow_sent_ns : u->closed_ns;
        *lag_ns = now > since ? now - since : 0;
        if (*lag_ns > timeout_ns)
            mirror_detach(m, SHADOW_SHADOW_TIMEOUT, SHADOW_DROP_SHADOW_TIMEOUT,
                          "no answer within the shadow timeout", now);
    }
    return m->state == MIRROR_DETACHED;
}

int
mirror_busy(const struct mirror *m)
{
    if (m->state != MIRROR_READY && m->state != MIRROR_CONNECTING)
        return 0;
    if (m->scur != NULL || m->queued > 0)
        return 1;
    for (const struct mirror_unit *u = m->head; u; u = u->next)
        if (u->mirrored && u->closed && !u->shadow_done)
            return 1;
    return 0;
}

int
mirror_writes_owed(const struct mirror *m)
{
    for (const struct mirror_unit *u = m->head; u; u = u->next)
        if (u->kind != REQ_KIND_READ && !u->replay &&
            (!u->primary_done || (u->mirrored && !u->shadow_done)))
            return 1;
    return 0;
}

void
mirror_orphan(struct mirror *m, uint64_t now)
{
    for (struct mirror_unit *u = m->head; u; u = u->next)
        u->primary_done = 1;
    m->pcur = NULL;
    mirror_release(m, 1, now);
    mirror_complete(m);
}

int
mirror_may_reattach(const struct mirror *m, uint64_t now)
{
    return m->state == MIRROR_DETACHED && !m->identity_refused && m->head == NULL &&
           now >= m->retry_at_ns;
}

void
mirror_attached(struct mirror *m)
{
    m->failures = 0;
}

int
mirror_sample(struct mirror *m, double p)
{
    if (p <= 0)
        return 0;
    if (p >= 1)
        return 1;
    uint64_t x = m->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    m->rng = x;
    return (double)(x >> 11) / 9007199254740992.0 < p;
}
