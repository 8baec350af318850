/*
 * session.c - the process-wide mirror queue count (see session.h).
 */
#include "proxy/session.h"

#include "proxy/pg_session.h"

static uint64_t queue_bytes;

void
session_queue_account(int64_t delta)
{
    if (delta >= 0)
        __atomic_add_fetch(&queue_bytes, (uint64_t)delta, __ATOMIC_RELAXED);
    else
        __atomic_sub_fetch(&queue_bytes, (uint64_t)-delta, __ATOMIC_RELAXED);
}

uint64_t
session_queue_total(void)
{
    return __atomic_load_n(&queue_bytes, __ATOMIC_RELAXED) + pg_session_queue_total();
}
