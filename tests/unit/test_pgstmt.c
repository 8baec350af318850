/* test_pgstmt.c - the per-session prepared statement table and message helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "protocol/pgstmt.h"

static const struct pgclass_result read_cls = {.kind = REQ_KIND_READ};
static const struct pgclass_result write_cls = {.kind = REQ_KIND_WRITE};

static void
test_put_get_replace(void **state)
{
    (void)state;
    struct pgstmt_table *t = pgstmt_table_new();
    const uint8_t msg[] = "Pabc";
    struct pgstmt *e = pgstmt_put(t, "s1", 2, msg, 4, &read_cls);
    assert_non_null(e);
    e->epoch = 7;
    assert_ptr_equal(pgstmt_get(t, "s1", 2), e);
    assert_null(pgstmt_get(t, "s2", 2));
    assert_null(pgstmt_get(t, "s", 1));
    /* a new Parse of the same name replaces it and exists on no shadow yet */
    e = pgstmt_put(t, "s1", 2, msg, 3, &write_cls);
    assert_int_equal(e->cls.kind, REQ_KIND_WRITE);
    assert_int_equal(e->parse_len, 3);
    assert_int_equal(e->epoch, 0);
    assert_int_equal(pgstmt_count(t), 1);
    /* classification only (no shadow): no bytes kept */
    e = pgstmt_put(t, "s1", 2, NULL, 0, &read_cls);
    assert_non_null(e);
    assert_null(e->parse);
    assert_int_equal(e->parse_len, 0);
    assert_int_equal(e->cls.kind, REQ_KIND_READ);
    /* the unnamed statement is a name like any other */
    assert_non_null(pgstmt_put(t, "", 0, msg, 4, &read_cls));
    assert_non_null(pgstmt_get(t, "", 0));
    assert_int_equal(pgstmt_count(t), 2);
    pgstmt_table_free(t);
}

static void
count_visit(struct pgstmt *st, void *arg)
{
    (void)st;
    (*(int *)arg)++;
}

static void
test_foreach_visits_each_once(void **state)
{
    (void)state;
    struct pgstmt_table *t = pgstmt_table_new();
    char name[32];
    int visits = 0;
    for (int i = 0; i < 100; i++) {
        int n = snprintf(name, sizeof(name), "q%d", i);
        assert_non_null(pgstmt_put(t, name, (size_t)n, NULL, 0, &read_cls));
    }
    pgstmt_remove(t, "q7", 2);
    pgstmt_foreach(t, count_visit, &visits);
    assert_int_equal(visits, 99);
    pgstmt_table_free(t);
}

static void
test_many_and_remove(void **state)
{
    (void)state;
    struct pgstmt_table *t = pgstmt_table_new();
    char name[32];
    const uint8_t msg[] = "P";
    for (int i = 0; i < PGSTMT_MAX; i++) {
        int n = snprintf(name, sizeof(name), "stmt_%d", i);
        assert_non_null(pgstmt_put(t, name, (size_t)n, msg, 1, &read_cls));
    }
    assert_null(pgstmt_put(t, "one_too_many", 12, msg, 1, &read_cls));
    /* remove every third; the others stay findable across the shifted runs */
    for (int i = 0; i < PGSTMT_MAX; i += 3) {
        int n = snprintf(name, sizeof(name), "stmt_%d", i);
        pgstmt_remove(t, name, (size_t)n);
    }
    for (int i = 0; i < PGSTMT_MAX; i++) {
        int n = snprintf(name, sizeof(name), "stmt_%d", i);
        if (i % 3 == 0)
            assert_null(pgstmt_get(t, name, (size_t)n));
        else
            assert_non_null(pgstmt_get(t, name, (size_t)n));
    }
    assert_int_equal(pgstmt_count(t), PGSTMT_MAX - (PGSTMT_MAX + 2) / 3);
    pgstmt_clear(t);
    assert_int_equal(pgstmt_count(t), 0);
    assert_null(pgstmt_get(t, "stmt_1", 6));
    pgstmt_table_free(t);
}

static void
test_refuses_bad_names(void **state)
{
    (void)state;
    struct pgstmt_table *t = pgstmt_table_new();
    char longname[PGSTMT_NAME_MAX + 2];
    memset(longname, 'x', sizeof(longname));
    assert_null(pgstmt_put(t, longname, sizeof(longname), (const uint8_t *)"P", 1, &read_cls));
    assert_null(pgstmt_put(t, "a\0b", 3, (const uint8_t *)"P", 1, &read_cls));
    pgstmt_table_free(t);
}

/*
 * Parse messages kept are bounded all together: past the budget a statement
 * keeps its classification alone (the map used to keep every Parse whole,
 * up to 4096 x max_packet_size per session).
 */
static void
test_parse_budget(void **state)
{
    (void)state;
    struct pgstmt_table *t = pgstmt_table_new();
    uint8_t p100[100], p60[60];
    memset(p100, 'P', sizeof(p100));
    memset(p60, 'Q', sizeof(p60));
    pgstmt_set_parse_budget(t, 200);

    struct pgstmt *a = pgstmt_put(t, "a", 1, p100, 100, &read_cls);
    struct pgstmt *b = pgstmt_put(t, "b", 1, p100, 100, &write_cls);
    assert_non_null(a->parse);
    assert_non_null(b->parse);
    assert_int_equal(pgstmt_parse_bytes(t), 200);
    /* over: recorded, classified, no bytes */
    struct pgstmt *c = pgstmt_put(t, "c", 1, p60, 60, &write_cls);
    assert_non_null(c);
    assert_null(c->parse);
    assert_int_equal(c->parse_len, 0);
    assert_int_equal(c->cls.kind, write_cls.kind);
    assert_int_equal(pgstmt_parse_bytes(t), 200);
    /* replacing a kept one counts the difference */
    a = pgstmt_put(t, "a", 1, p60, 60, &read_cls);
    assert_non_null(a->parse);
    assert_int_equal(pgstmt_parse_bytes(t), 160);
    /* removing and clearing give it back */
    pgstmt_remove(t, "b", 1);
    assert_int_equal(pgstmt_parse_bytes(t), 60);
    c = pgstmt_put(t, "c", 1, p100, 100, &write_cls);
    assert_non_null(c->parse);
    assert_int_equal(pgstmt_parse_bytes(t), 160);
    /* one message larger than the whole budget */
    uint8_t big[300];
    memset(big, 'B', sizeof(big));
    struct pgstmt *d = pgstmt_put(t, "d", 1, big, sizeof(big), &read_cls);
    assert_null(d->parse);
    pgstmt_clear(t);
    assert_int_equal(pgstmt_parse_bytes(t), 0);
    pgstmt_table_free(t);
}

static void
test_message_helpers(void **state)
{
    (void)state;
    const char *name, *query;
    size_t nlen, qlen;
    const uint8_t parse[] = "s1\0select 1\0\0\0";
    assert_int_equal(pgstmt_parse_msg(parse, sizeof(parse) - 1, &name, &nlen, &query, &qlen), 0);
    assert_int_equal(nlen, 2);
    assert_memory_equal(name, "s1", 2);
    assert_int_equal(qlen, 8);
    assert_memory_equal(query, "select 1", 8);
    /* every truncation of the two strings is refused, never overread */
    for (size_t cut = 0; cut < 12; cut++)
        assert_int_equal(pgstmt_parse_msg(parse, cut, &name, &nlen, &query, &qlen), -1);

    const uint8_t bind[] = "portal\0stmt\0\0\0\0\0";
    assert_int_equal(pgstmt_bind_msg(bind, sizeof(bind) - 1, &name, &nlen), 0);
    assert_int_equal(nlen, 4);
    assert_memory_equal(name, "stmt", 4);
    for (size_t cut = 0; cut < 12; cut++)
        assert_int_equal(pgstmt_bind_msg(bind, cut, &name, &nlen), -1);

    const uint8_t close_s[] = "Sfoo";
    const uint8_t close_p[] = "Pfoo";
    assert_int_equal(pgstmt_target_msg(close_s, sizeof(close_s), &name, &nlen), 0);
    assert_int_equal(nlen, 3);
    assert_int_equal(pgstmt_target_msg(close_p, sizeof(close_p), &name, &nlen), -1);
    assert_int_equal(pgstmt_target_msg(close_s, 4, &name, &nlen), -1);
    assert_int_equal(pgstmt_target_msg(close_s, 0, &name, &nlen), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_replace),
        cmocka_unit_test(test_many_and_remove),
        cmocka_unit_test(test_foreach_visits_each_once),
        cmocka_unit_test(test_refuses_bad_names),
        cmocka_unit_test(test_parse_budget),
        cmocka_unit_test(test_message_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
