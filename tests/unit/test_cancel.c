/*
 * test_cancel.c - the process-wide cancel table (engine/cancel.h).
 *
 * The table is one global: every test unregisters what it registered, so
 * the next one finds it empty of its keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <string.h>

#include "engine/cancel.h"

static struct sockaddr_in
addr_of(uint16_t port)
{
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons(port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return sin;
}

static void
test_register_lookup_unregister(void **state)
{
    (void)state;
    struct cancel_entry e = {.pid = 101, .key = 0xabcdef01};
    struct cancel_target out;
    struct sockaddr_in a = addr_of(5432);

    assert_int_equal(cancel_lookup(101, 0xabcdef01, &out), -1);
    cancel_register(&e, 7, 8, (struct sockaddr *)&a, sizeof(a));
    assert_int_equal(cancel_lookup(101, 0xabcdef01, &out), 0);
    assert_int_equal(out.be_pid, 7);
    assert_int_equal(out.be_key, 8);
    assert_int_equal(out.addrlen, sizeof(a));
    assert_memory_equal(&out.addr, &a, sizeof(a));
    assert_int_equal(cancel_lookup(101, 0xabcdef02, &out), -1);
    cancel_unregister(&e);
    assert_int_equal(cancel_lookup(101, 0xabcdef01, &out), -1);
    cancel_unregister(&e); /* twice: harmless */
}

/*
 * A primary that sends BackendKeyData twice: the second registration
 * replaces the first.  Before the fix the entry was linked twice (pointing
 * at itself), unregister unlinked it once and the bucket kept a pointer to
 * a freed session: this test's second entry would then be unreachable or
 * the lookup would loop for ever.
 */
static void
test_register_twice_replaces(void **state)
{
    (void)state;
    /* same pid and key: same bucket, so the neighbours show a broken chain */
    struct cancel_entry before = {.pid = 202, .key = 1};
    struct cancel_entry e = {.pid = 202, .key = 2};
    struct cancel_entry after = {.pid = 202, .key = 3};
    struct cancel_target out;
    struct sockaddr_in a1 = addr_of(1111), a2 = addr_of(2222);

    cancel_register(&before, 1, 1, (struct sockaddr *)&a1, sizeof(a1));
    cancel_register(&e, 10, 11, (struct sockaddr *)&a1, sizeof(a1));
    cancel_register(&e, 20, 21, (struct sockaddr *)&a2, sizeof(a2));
    assert_ptr_not_equal(e.next, &e);
    assert_int_equal(cancel_lookup(202, 2, &out), 0);
    assert_int_equal(out.be_pid, 20);
    assert_int_equal(out.be_key, 21);
    assert_memory_equal(&out.addr, &a2, sizeof(a2));
    cancel_register(&after, 3, 3, (struct sockaddr *)&a1, sizeof(a1));

    /* the session ends: nothing of it stays reachable */
    cancel_unregister(&e);
    memset(&e, 0x5a, sizeof(e)); /* what a freed session's memory may hold */
    e.registered = 0;
    assert_int_equal(cancel_lookup(202, 2, &out), -1);
    assert_int_equal(cancel_lookup(202, 1, &out), 0);
    assert_int_equal(out.be_pid, 1);
    assert_int_equal(cancel_lookup(202, 3, &out), 0);
    assert_int_equal(out.be_pid, 3);
    cancel_unregister(&after);
    cancel_unregister(&before);
    assert_int_equal(cancel_lookup(202, 1, &out), -1);
    assert_int_equal(cancel_lookup(202, 3, &out), -1);
}

/* An address longer than the entry holds is cut, never copied past it. */
static void
test_register_long_addr_cut(void **state)
{
    (void)state;
    struct cancel_entry e = {.pid = 303, .key = 3};
    struct cancel_target out;
    unsigned char big[sizeof(struct sockaddr_storage) + 16];
    memset(big, 0, sizeof(big));
    ((struct sockaddr *)big)->sa_family = AF_INET;
    cancel_register(&e, 1, 2, (struct sockaddr *)big, (socklen_t)sizeof(big));
    assert_int_equal(cancel_lookup(303, 3, &out), 0);
    assert_int_equal(out.addrlen, sizeof(out.addr)); /* room for an IPv6 address */
    cancel_unregister(&e);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_register_lookup_unregister),
        cmocka_unit_test(test_register_twice_replaces),
        cmocka_unit_test(test_register_long_addr_cut),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
