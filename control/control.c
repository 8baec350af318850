/*
 * control.c - run-time routing state (see control.h).
 */
#include "control/control.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"

#define WEIGHT_MAX 1000000

static int weights[METRIC_MAX_LISTENERS][METRIC_MAX_BACKENDS];
static uint32_t versions[METRIC_MAX_LISTENERS];
static int down[METRIC_MAX_BACKENDS]; /* 0: up or never probed */
static uint64_t lag[METRIC_MAX_SHARDS][METRIC_MAX_BACKENDS];
static int modes[METRIC_MAX_LISTENERS];   /* mode + 1; 0: the file's */
static int swapped[METRIC_MAX_LISTENERS];
static uint64_t epochs[METRIC_MAX_LISTENERS];
/* control_changed()'s listeners: the state file, the fleet (set and cleared on the main thread) */
#define CHANGE_LISTENERS_MAX 4
static struct {
    void (*fn)(void *arg);
    void *arg;
} change_listeners[CHANGE_LISTENERS_MAX];
static int paused[METRIC_MAX_LISTENERS];
/* a fleet member's write lease: monotonic ms it holds until; 0 when there is none */
static uint64_t write_lease_until_ms;
static int forced[METRIC_MAX_LISTENERS];
static uint32_t pause_gen[METRIC_MAX_LISTENERS];
/* per worker and listener: generation << 32 | sessions not ready */
static uint64_t unready[METRIC_MAX_SHARDS][METRIC_MAX_LISTENERS];

static int
slot_ok(int slot, int max)
{
    return slot >= 0 && slot < max;
}

static void
store_weight(int l, int b, int w)
{
    __atomic_store_n(&weights[l][b], w, __ATOMIC_RELAXED);
    metric_set_route_weight(l, b, w);
}

static void
bump(int l)
{
    __atomic_add_fetch(&versions[l], 1, __ATOMIC_RELEASE);
}

void
control_load(const struct runtime *rt)
{
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        if (!slot_ok(l->metric_slot, METRIC_MAX_LISTENERS))
            continue;
        for (int b = 0; b < METRIC_MAX_BACKENDS; b++)
            __atomic_store_n(&weights[l->metric_slot][b], 0, __ATOMIC_RELAXED);
        for (size_t k = 0; k < l->conf->nread_weights; k++) {
            const struct rt_backend *be = &rt->backends[l->conf->read_weights[k].backend];
            if (slot_ok(be->metric_slot, METRIC_MAX_BACKENDS))
                store_weight(l->metric_slot, be->metric_slot,
                             (int)l->conf->read_weights[k].weight);
        }
        bump(l->metric_slot);
        __atomic_store_n(&modes[l->metric_slot], 0, __ATOMIC_RELAXED);
        shadow_set_samples(l->metric_slot, (int)l->conf->compare.samples);
    }
    control_changed();
}

/* Does listener l read from backend b (its primary or its shadow)? */
static int
reads_from(const struct rt_listener *l, const struct rt_backend *b)
{
    return l->primary == b || l->shadow == b;
}

int
control_set_weights(const struct runtime *rt, const char *const *names, const long *w, size_t n,
                    char *err, size_t errlen)
{
    const struct rt_backend *found[METRIC_MAX_BACKENDS];

    if (n == 0 || n > METRIC_MAX_BACKENDS) {
        snprintf(err, errlen, "expected an object of 1..%d backend weights", METRIC_MAX_BACKENDS);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        found[i] = NULL;
        for (size_t k = 0; k < rt->nbackends; k++)
            if (strcmp(rt->backends[k].conf->name, names[i]) == 0)
                found[i] = &rt->backends[k];
        int used = 0;
        for (size_t k = 0; found[i] && k < rt->nlisteners; k++)
            used |= reads_from(&rt->listeners[k], found[i]);
        if (!used) {
            snprintf(err, errlen, "\"%.63s\" is not a backend any listener reads from", names[i]);
            return -1;
        }
        if (w[i] < 0 || w[i] > WEIGHT_MAX) {
            snprintf(err, errlen, "weight of \"%.63s\": expected an integer 0..%d", names[i],
                     WEIGHT_MAX);
            return -1;
        }
    }
    for (size_t k = 0; k < rt->nlisteners; k++) {
        const struct rt_listener *l = &rt->listeners[k];
        int changed = 0;
        for (size_t i = 0; i < n; i++) {
            if (!reads_from(l, found[i]) || !slot_ok(l->metric_slot, METRIC_MAX_LISTENERS) ||
                !slot_ok(found[i]->metric_slot, METRIC_MAX_BACKENDS))
                continue;
            store_weight(l->metric_slot, found[i]->metric_slot, (int)w[i]);
            changed = 1;
        }
        if (changed)
            bump(l->metric_slot);
    }
    control_changed();
    return 0;
}

void
control_set_weight(int listener_slot, int backend_slot, int weight)
{
    if (!slot_ok(listener_slot, METRIC_MAX_LISTENERS) || !slot_ok(backend_slot, METRIC_MAX_BACKENDS))
        return;
    store_weight(listener_slot, backend_slot, weight);
    bump(listener_slot);
    control_changed();
}

int
control_weight(int listener_slot, int backend_slot)
{
    if (!slot_ok(listener_slot, METRIC_MAX_LISTENERS) || !slot_ok(backend_slot, METRIC_MAX_BACKENDS))
        return 0;
    return __atomic_load_n(&weights[listener_slot][backend_slot], __ATOMIC_RELAXED);
}

uint32_t
control_weights_version(int listener_slot)
{
    if (!slot_ok(listener_slot, METRIC_MAX_LISTENERS))
        return 0;
    return __atomic_load_n(&versions[listener_slot], __ATOMIC_ACQUIRE);
}

void
control_set_backend_up(int backend_slot, int up)
{
    if (slot_ok(backend_slot, METRIC_MAX_BACKENDS))
        __atomic_store_n(&down[backend_slot], !up, __ATOMIC_RELAXED);
}

int
control_backend_up(int backend_slot)
{
    if (!slot_ok(backend_slot, METRIC_MAX_BACKENDS))
        return 0;
    return !__atomic_load_n(&down[backend_slot], __ATOMIC_RELAXED);
}

void
control_set_lag(int worker, int backend_slot, uint64_t lag_ms)
{
    if (slot_ok(worker, METRIC_MAX_SHARDS) && slot_ok(backend_slot, METRIC_MAX_BACKENDS))
        __atomic_store_n(&lag[worker][backend_slot], lag_ms, __ATOMIC_RELAXED);
}

uint64_t
control_lag_ms(int backend_slot)
{
    uint64_t max = 0;
    if (!slot_ok(backend_slot, METRIC_MAX_BACKENDS))
        return 0;
    for (int w = 0; w < METRIC_MAX_SHARDS; w++) {
        uint64_t v = __atomic_load_n(&lag[w][backend_slot], __ATOMIC_RELAXED);
        if (v > max)
            max = v;
    }
    return max;
}

void
control_set_mode(int slot, int mode)
{
    if (slot_ok(slot, METRIC_MAX_LISTENERS))
        __atomic_store_n(&modes[slot], mode + 1, __ATOMIC_RELEASE);
    control_changed();
}

int
control_mode(int slot, int configured)
{
    int m = slot_ok(slot, METRIC_MAX_LISTENERS) ? __atomic_load_n(&modes[slot], __ATOMIC_ACQUIRE)
                                                : 0;
    return m > 0 ? m - 1 : configured;
}

void
control_set_roles_swapped(int slot, int on)
{
    if (slot_ok(slot, METRIC_MAX_LISTENERS))
        __atomic_store_n(&swapped[slot], on, __ATOMIC_RELEASE);
}

int
control_roles_swapped(int slot)
{
    return slot_ok(slot, METRIC_MAX_LISTENERS) && __atomic_load_n(&swapped[slot], __ATOMIC_ACQUIRE);
}

void
control_flip(int slot, int on)
{
    if (!slot_ok(slot, METRIC_MAX_LISTENERS))
        return;
    __atomic_add_fetch(&epochs[slot], 1, __ATOMIC_RELEASE);
    control_set_roles_swapped(slot, on);
    control_changed();
}

uint64_t
control_epoch(int slot)
{
    return slot_ok(slot, METRIC_MAX_LISTENERS) ? __atomic_load_n(&epochs[slot], __ATOMIC_ACQUIRE)
                                               : 0;
}

void
control_set_epoch(int slot, uint64_t epoch)
{
    if (slot_ok(slot, METRIC_MAX_LISTENERS))
        __atomic_store_n(&epochs[slot], epoch, __ATOMIC_RELEASE);
}

void
control_on_change(void (*fn)(void *arg), void *arg)
{
    for (int i = 0; i < CHANGE_LISTENERS_MAX; i++)
        if (change_listeners[i].fn == NULL) {
            change_listeners[i].arg = arg;
            change_listeners[i].fn = fn;
            return;
        }
}

void
control_off_change(void (*fn)(void *arg), void *arg)
{
    for (int i = 0; i < CHANGE_LISTENERS_MAX; i++)
        if (change_listeners[i].fn == fn && change_listeners[i].arg == arg)
            change_listeners[i].fn = NULL;
}

void
control_changed(void)
{
    for (int i = 0; i < CHANGE_LISTENERS_MAX; i++)
        if (change_listeners[i].fn != NULL)
            change_listeners[i].fn(change_listeners[i].arg);
}

void
control_set_paused(int slot, int on, uint32_t generation)
{
    if (!slot_ok(slot, METRIC_MAX_LISTENERS))
        return;
    /* the flag first: a worker that saw the new generation then sees the flag too */
    __atomic_store_n(&paused[slot], on, __ATOMIC_RELEASE);
    __atomic_store_n(&pause_gen[slot], generation, __ATOMIC_RELEASE);
}

void
control_set_write_lease(uint64_t until_ms)
{
    __atomic_store_n(&write_lease_until_ms, until_ms, __ATOMIC_RELEASE);
}

int
control_write_lease_expired(void)
{
    uint64_t until = __atomic_load_n(&write_lease_until_ms, __ATOMIC_ACQUIRE);
    if (until == 0)
        return 0;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000 > until;
}

int
control_paused(int slot)
{
    if (!slot_ok(slot, METRIC_MAX_LISTENERS))
        return 0;
    return __atomic_load_n(&paused[slot], __ATOMIC_ACQUIRE) || control_write_lease_expired();
}

uint32_t
control_pause_generation(int slot)
{
    return slot_ok(slot, METRIC_MAX_LISTENERS) ? __atomic_load_n(&pause_gen[slot], __ATOMIC_ACQUIRE)
                                               : 0;
}

void
control_set_force(int slot, int on)
{
    if (slot_ok(slot, METRIC_MAX_LISTENERS))
        __atomic_store_n(&forced[slot], on, __ATOMIC_RELEASE);
}

int
control_force(int slot)
{
    return slot_ok(slot, METRIC_MAX_LISTENERS) && __atomic_load_n(&forced[slot], __ATOMIC_ACQUIRE);
}

void
control_report_unready(int worker, int slot, uint32_t generation, unsigned n)
{
    if (slot_ok(worker, METRIC_MAX_SHARDS) && slot_ok(slot, METRIC_MAX_LISTENERS))
        __atomic_store_n(&unready[worker][slot], (uint64_t)generation << 32 | n, __ATOMIC_RELEASE);
}

long
control_unready(int slot, int nworkers)
{
    long sum = 0;
    uint32_t gen = control_pause_generation(slot);
    if (!slot_ok(slot, METRIC_MAX_LISTENERS))
        return 0;
    for (int w = 0; w < nworkers && w < METRIC_MAX_SHARDS; w++) {
        uint64_t v = __atomic_load_n(&unready[w][slot], __ATOMIC_ACQUIRE);
        if ((uint32_t)(v >> 32) != gen)
            return -1;
        sum += (long)(uint32_t)v;
    }
    return sum;
}
