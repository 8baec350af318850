/*
 * recheck.c - the schedule a re-check follows, whatever the protocol
 * (recheck.h says what is here and what is the plug-in's).
 */
#include <stdio.h>
#include <string.h>

#include "control/replica.h"
#include "engine/recheck.h"
#include "engine/session.h"
#include "metrics/log.h"

const char *const recheck_backend_names[2] = {"primary", "shadow"};

/* pauses before attempts 2, 3, 4: the shadow's mirrors of concurrent writes arrive */
static const uint32_t pause_ms[RECHECK_ATTEMPTS] = {0, 250, 1000, 2000};

/* A replicated shadow's catch-up is looked at this often while an attempt waits for it. */
#define REPLICA_LOOK_MS 20

static void
arm_ms(struct event *ev, uint32_t ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    evtimer_add(ev, &tv);
}

int
recheck_take(struct shadow_shard *shard, int slot, uint32_t per_second)
{
    if (shadow_recheck_take(slot, per_second, session_now_ns() / 1000000000ull))
        return 1;
    shadow_count_recheck(shard, slot, SHADOW_RECHECK_BUSY);
    return 0;
}

/*
 * The timer: either the pause before the next attempt is over (the
 * primary runs it), or an attempt waits for a replicated shadow to apply
 * what the primary had when it answered (the deadline bounds the wait).
 */
static void
on_timer(evutil_socket_t fd, short what, void *arg)
{
    struct recheck *r = arg;
    (void)fd;
    (void)what;
    if (!r->awaiting_replica) {
        r->ops->run(r, RECHECK_PRIMARY);
        return;
    }
    if (replica_caught_up_ns(r->slot) > r->answered_ns) {
        r->awaiting_replica = 0;
        r->ops->run(r, RECHECK_SHADOW);
        return;
    }
    arm_ms(&r->timer, REPLICA_LOOK_MS);
}

static void
on_deadline(evutil_socket_t fd, short what, void *arg)
{
    struct recheck *r = arg;
    (void)fd;
    (void)what;
    r->ops->expired(r);
}

void
recheck_begin(struct recheck *r, const struct recheck_ops *ops, struct worker *w, int slot,
              uint64_t session_id, const char *peer)
{
    r->ops = ops;
    r->w = w;
    r->slot = slot;
    r->session_id = session_id;
    snprintf(r->peer, sizeof(r->peer), "%s", peer);
    r->attempt = 1;
    evtimer_assign(&r->timer, w->base, on_timer, r);
    evtimer_assign(&r->deadline, w->base, on_deadline, r);
    worker_job_add(w, &r->job);
    arm_ms(&r->deadline, RECHECK_DEADLINE_MS);
}

void
recheck_primary_answered(struct recheck *r)
{
    if (!replica_enabled(r->slot)) {
        r->ops->run(r, RECHECK_SHADOW);
        return;
    }
    r->awaiting_replica = 1;
    r->answered_ns = session_now_ns();
    on_timer(-1, 0, r);
}

int
recheck_again(struct recheck *r)
{
    if (r->attempt >= RECHECK_ATTEMPTS)
        return 0;
    arm_ms(&r->timer, pause_ms[r->attempt++]); /* the pause before the next one */
    return 1;
}

void
recheck_verdict(struct recheck *r, enum shadow_recheck_result result, const char *key_text,
                const char *psample, const char *ssample, const char *why)
{
    enum shadow_outcome outcome =
        result == SHADOW_RECHECK_TRANSIENT ? SHADOW_TRANSIENT : SHADOW_MISMATCH;

    shadow_count_recheck(r->w->shadow, r->slot, result);
    shadow_record(r->w->shadow, r->slot, r->key_id, key_text, outcome, SHADOW_NOISE_NONE,
                  r->primary_ns, r->shadow_ns, psample, ssample);
    log_at(result == SHADOW_RECHECK_FAILED ? CONF_LOG_INFO : CONF_LOG_DEBUG, r->session_id,
           r->peer, "shadow re-check of a mismatching read%s%.80s%s: %s after %d attempt%s%s%s",
           key_text ? " \"" : "", key_text ? key_text : "", key_text ? "\"" : "",
           result == SHADOW_RECHECK_TRANSIENT   ? "transient"
           : result == SHADOW_RECHECK_CONFIRMED ? "mismatch confirmed"
                                                : "not confirmed",
           r->attempt, r->attempt == 1 ? "" : "s", why ? ": " : "", why ? why : "");
}

void
recheck_stop_timers(struct recheck *r)
{
    event_del(&r->timer);
    event_del(&r->deadline);
}

void
recheck_end(struct recheck *r)
{
    worker_job_remove(r->w, &r->job);
    recheck_stop_timers(r);
    shadow_recheck_give(r->slot);
}
