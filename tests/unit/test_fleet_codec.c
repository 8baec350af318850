/*
 * test_fleet_codec.c - the fleet's records in the store (control/fleet_codec.h):
 * member records round-trip and refuse nonsense, log entries are checked
 * field by field, an operation's hash becomes the record /api/fleet shows.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control/fleet_codec.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static void
test_keys(void **state)
{
    (void)state;
    struct fleet_keys k;
    fleet_keys_init(&k, "pay", "pod-a");
    assert_string_equal(k.state, "fleet:pay:state");
    assert_string_equal(k.log, "fleet:pay:log");
    assert_string_equal(k.op, "fleet:pay:op");
    assert_string_equal(k.op_archive_prefix, "fleet:pay:op:");
    assert_string_equal(k.members, "fleet:pay:members");
    assert_string_equal(k.member, "fleet:pay:member:pod-a");
}

static void
test_member_round_trip(void **state)
{
    (void)state;
    struct fleet_member m, back;
    char err[200];
    memset(&m, 0, sizeof(m));
    memset(&back, 0, sizeof(back));
    snprintf(m.id, sizeof(m.id), "pod-a");
    snprintf(m.admin, sizeof(m.admin), "127.0.0.1:9090");
    m.pid = 42;
    m.started_ms = 1700000000000;
    m.heartbeat_ms = 1700000001000;
    m.epoch = 3;
    m.version = 12;
    m.sessions = 7;
    snprintf(m.operation, sizeof(m.operation), "fleet-op-2");
    m.nroles = 2;
    snprintf(m.roles[0].listener, sizeof(m.roles[0].listener), "pg");
    snprintf(m.roles[0].primary, sizeof(m.roles[0].primary), "green");
    snprintf(m.roles[0].shadow, sizeof(m.roles[0].shadow), "blue");
    m.roles[0].epoch = 3;
    m.roles[0].paused = 1;
    snprintf(m.roles[1].listener, sizeof(m.roles[1].listener), "cache");
    snprintf(m.roles[1].primary, sizeof(m.roles[1].primary), "r1");

    char *text = fleet_member_encode(&m);
    assert_non_null(text);
    assert_int_equal(fleet_member_decode(text, strlen(text), &back, err, sizeof(err)), 0);
    assert_memory_equal(&m, &back, sizeof(m));

    /* every split of the text is refused, never half-read */
    for (size_t cut = 0; cut < strlen(text); cut++) {
        struct fleet_member part;
        memset(&part, 0, sizeof(part));
        assert_int_equal(fleet_member_decode(text, cut, &part, err, sizeof(err)), -1);
    }
    free(text);

    json_t *o = fleet_member_json(&m);
    assert_string_equal(json_string_value(json_object_get(o, "last_heartbeat")),
                        "2023-11-14T22:13:21.000Z");
    assert_true(json_is_null(json_object_get(json_array_get(json_object_get(o, "roles"), 1),
                                             "shadow")));
    json_decref(o);
}

static void
test_member_refused(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[]",
        "{}",
        "{\"id\":\"\",\"pid\":1,\"started_ms\":1,\"heartbeat_ms\":1,\"epoch\":0,\"version\":0,"
        "\"sessions\":0,\"roles\":[]}",
        "{\"id\":\"a\",\"pid\":-1,\"started_ms\":1,\"heartbeat_ms\":1,\"epoch\":0,\"version\":0,"
        "\"sessions\":0,\"roles\":[]}",
        "{\"id\":\"a\",\"pid\":1,\"started_ms\":1,\"heartbeat_ms\":1,\"epoch\":\"1\",\"version\":0,"
        "\"sessions\":0,\"roles\":[]}",
        "{\"id\":\"a\",\"pid\":1,\"started_ms\":1,\"heartbeat_ms\":1,\"epoch\":0,\"version\":0,"
        "\"sessions\":0,\"roles\":[{\"listener\":\"pg\"}]}",
        "{\"id\":\"a\",\"pid\":1,\"started_ms\":1,\"heartbeat_ms\":1,\"epoch\":0,\"version\":0,"
        "\"sessions\":0,\"roles\":{}}",
        /* an id longer than any name */
        "{\"id\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\","
        "\"pid\":1,\"started_ms\":1,\"heartbeat_ms\":1,\"epoch\":0,\"version\":0,\"sessions\":0,"
        "\"roles\":[]}",
        /* a NUL inside a string */
        "{\"id\":\"a\\u0000b\",\"pid\":1,\"started_ms\":1,\"heartbeat_ms\":1,\"epoch\":0,"
        "\"version\":0,\"sessions\":0,\"roles\":[]}",
    };
    for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
        struct fleet_member m;
        char err[200] = "";
        memset(&m, 0, sizeof(m));
        assert_int_equal(fleet_member_decode(bad[i], strlen(bad[i]), &m, err, sizeof(err)), -1);
        assert_true(err[0] != '\0');
    }
}

static int
parse(const char *const *kv, size_t npairs, struct fleet_entry *e, char *err, size_t errlen)
{
    const char *fields[32], *values[32];
    size_t lens[32];
    for (size_t i = 0; i < npairs; i++) {
        fields[i] = kv[2 * i];
        values[i] = kv[2 * i + 1];
        lens[i] = strlen(values[i]);
    }
    return fleet_entry_parse(fields, values, lens, npairs, e, err, errlen);
}

#define PARSE(e, err, ...)                                                                         \
    ({                                                                                             \
        static const char *const kv_[] = {__VA_ARGS__};                                            \
        parse(kv_, ARRAY_SIZE(kv_) / 2, e, err, sizeof(err));                                      \
    })

static void
test_entries(void **state)
{
    (void)state;
    struct fleet_entry e;
    char err[200];

    assert_int_equal(PARSE(&e, err, "type", "state", "version", "7", "member", "m1", "doc", "{}"),
                     0);
    assert_int_equal(e.type, FLEET_ENTRY_STATE);
    assert_int_equal(e.version, 7);
    assert_string_equal(e.member, "m1");
    assert_int_equal(e.doc_len, 2);

    assert_int_equal(PARSE(&e, err, "type", "op", "id", "3", "kind", "rollback", "max_pause_ms",
                           "2000", "force", "1", "asked_by", "m2", "members", "m1 m2", "later",
                           "ignored"),
                     0);
    assert_string_equal(e.members, "m1 m2");
    assert_int_equal(e.type, FLEET_ENTRY_OP);
    assert_int_equal(e.op_id, 3);
    assert_true(e.rollback);
    assert_int_equal(e.max_pause_ms, 2000);
    assert_int_equal(e.force, 1);
    assert_string_equal(e.member, "m2");

    assert_int_equal(PARSE(&e, err, "type", "commit", "id", "3", "version", "8", "doc", "{}"), 0);
    assert_int_equal(e.type, FLEET_ENTRY_COMMIT);
    assert_int_equal(PARSE(&e, err, "type", "abort", "id", "3", "reason", "late"), 0);
    assert_string_equal(e.reason, "late");
    assert_int_equal(PARSE(&e, err, "type", "abort", "id", "3"), 0);
    assert_string_equal(e.reason, "");

    /* refused, each with what is wrong */
    assert_int_equal(PARSE(&e, err, "version", "1"), -1);
    assert_string_equal(err, "type: missing");
    assert_int_equal(PARSE(&e, err, "type", "gossip"), -1);
    assert_string_equal(err, "type: unknown \"gossip\"");
    assert_int_equal(PARSE(&e, err, "type", "state", "version", "x", "doc", "{}"), -1);
    assert_string_equal(err, "state entry: version missing or malformed");
    assert_int_equal(PARSE(&e, err, "type", "state", "version", "1"), -1);
    assert_string_equal(err, "state entry: doc missing or malformed");
    assert_int_equal(PARSE(&e, err, "type", "op", "id", "1", "kind", "flip", "max_pause_ms", "1",
                           "force", "0"),
                     -1);
    assert_string_equal(err, "op entry: kind missing or malformed");
    assert_int_equal(PARSE(&e, err, "type", "op", "id", "1", "kind", "cutover", "max_pause_ms",
                           "0", "force", "0"),
                     -1);
    assert_string_equal(err, "op entry: max_pause_ms missing or malformed");
    assert_int_equal(PARSE(&e, err, "type", "op", "id", "1", "kind", "cutover", "max_pause_ms",
                           "10", "force", "2"),
                     -1);
    assert_string_equal(err, "op entry: force missing or malformed");
    assert_int_equal(PARSE(&e, err, "type", "abort", "id", "-1"), -1);
    assert_int_equal(PARSE(&e, err, "type", "commit", "id", "99999999999999999999", "version",
                           "1", "doc", "{}"),
                     -1);
    assert_int_equal(PARSE(&e, err, "type", "report", "id", "1"), -1);
    assert_string_equal(err, "report entry: step missing or malformed");
}

static void
test_op_record(void **state)
{
    (void)state;
    static const char *const fields[] = {"id",        "kind",     "state",   "asked_by",
                                         "members",   "epoch",    "step:m1", "ms:m1",
                                         "step:m2",   "step:m3",  "ms:m3",   "created_ms"};
    static const char *const values[] = {"4",       "cutover", "aborted", "m1",
                                         "m1 m2",   "2",       "resumed", "1510",
                                         "pausing", "drained", "5",       "1700000000000"};
    json_t *o = fleet_op_json(fields, values, ARRAY_SIZE(fields));
    assert_non_null(o);
    assert_string_equal(json_string_value(json_object_get(o, "id")), "fleet-op-4");
    assert_string_equal(json_string_value(json_object_get(o, "state")), "aborted");
    assert_int_equal(json_integer_value(json_object_get(o, "epoch")), 2);
    assert_true(json_is_null(json_object_get(o, "reason")));
    json_t *members = json_object_get(o, "members");
    assert_int_equal(json_array_size(members), 3);
    json_t *m1 = json_array_get(members, 0), *m2 = json_array_get(members, 1),
           *m3 = json_array_get(members, 2);
    assert_string_equal(json_string_value(json_object_get(m1, "step")), "resumed");
    assert_int_equal(json_integer_value(json_object_get(m1, "ms")), 1510);
    assert_string_equal(json_string_value(json_object_get(m2, "step")), "pausing");
    assert_null(json_object_get(m2, "ms"));
    /* joined during the operation: shown, not counted */
    assert_string_equal(json_string_value(json_object_get(m3, "id")), "m3");
    assert_false(json_is_true(json_object_get(m3, "counted")));
    json_decref(o);

    /* no id: no operation */
    static const char *const f2[] = {"state"};
    static const char *const v2[] = {"in_progress"};
    assert_null(fleet_op_json(f2, v2, 1));
    assert_null(fleet_op_json(NULL, NULL, 0));
}

static json_t *
load(const char *text)
{
    json_error_t e;
    json_t *o = json_loads(text, 0, &e);
    if (o == NULL)
        print_error("bad JSON in the test: %s\n", e.text);
    assert_non_null(o);
    return o;
}

static void
test_report_merge(void **state)
{
    (void)state;
    json_t *r[3];
    r[0] = load("{\"window_seconds\": 300,"
                " \"listeners\": [{\"name\": \"pg\", \"outcomes\": {\"match\": 10, \"mismatch\": 1},"
                "   \"noise\": {}, \"detached_sessions\": 1, \"lag_seconds\": 0.5,"
                "   \"validation_success_ratio\": 0.9, \"diverged\": false,"
                "   \"diverged_reason\": null, \"primary_p50_ms\": 1.0}],"
                " \"statements\": [{\"listener\": \"pg\", \"fingerprint\": \"aa\", \"statement\": \"SELECT 1\","
                "   \"count\": {\"match\": 10, \"mismatch\": 1, \"total\": 11}, \"noise\": {},"
                "   \"primary_p99_ms\": 2.0, \"latency_ratio\": 1.5}],"
                " \"slowest\": [],"
                " \"samples\": [{\"time\": \"2026-01-01T00:00:01.000Z\", \"outcome\": \"mismatch\"}]}");
    r[1] = load("{\"window_seconds\": 300,"
                " \"listeners\": [{\"name\": \"pg\", \"outcomes\": {\"match\": 5, \"shadow_error\": 2},"
                "   \"detached_sessions\": 2, \"lag_seconds\": 0.1, \"validation_success_ratio\": 0.7,"
                "   \"diverged\": true, \"diverged_reason\": {\"reason\": \"lost\", \"count\": 1},"
                "   \"primary_p50_ms\": null}],"
                " \"statements\": [{\"listener\": \"pg\", \"fingerprint\": \"aa\", \"statement\": \"SELECT 1\","
                "   \"count\": {\"match\": 5, \"total\": 5}, \"primary_p99_ms\": 9.0,"
                "   \"latency_ratio\": 1.1},"
                "  {\"listener\": \"pg\", \"fingerprint\": \"bb\", \"statement\": \"UPDATE t\","
                "   \"count\": {\"mismatch\": 3, \"total\": 3}}],"
                " \"samples\": [{\"time\": \"2026-01-01T00:00:02.000Z\", \"outcome\": \"mismatch\"}]}");
    r[2] = json_string("not a report");
    const char *const members[] = {"m1", "m2", "m3"};

    json_t *m = fleet_report_merge(r, members, 3, 0, "2026-01-01T00:00:03.000Z");
    assert_non_null(m);
    assert_string_equal(json_string_value(json_object_get(m, "scope")), "fleet");
    assert_int_equal(json_integer_value(json_object_get(m, "window_seconds")), 300);
    assert_int_equal(json_array_size(json_object_get(m, "members")), 2);

    json_t *l = json_array_get(json_object_get(m, "listeners"), 0);
    json_t *outcomes = json_object_get(l, "outcomes");
    assert_int_equal(json_integer_value(json_object_get(outcomes, "match")), 15);
    assert_int_equal(json_integer_value(json_object_get(outcomes, "mismatch")), 1);
    assert_int_equal(json_integer_value(json_object_get(outcomes, "shadow_error")), 2);
    assert_int_equal(json_integer_value(json_object_get(l, "detached_sessions")), 3);
    assert_true(json_real_value(json_object_get(l, "lag_seconds")) == 0.5);
    assert_true(json_real_value(json_object_get(l, "validation_success_ratio")) == 0.7);
    assert_true(json_real_value(json_object_get(l, "primary_p50_ms")) == 1.0);
    assert_true(json_is_true(json_object_get(l, "diverged")));
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(l, "diverged_reason"), "member")), "m2");

    /* by mismatches: UPDATE (3) before SELECT (1); SELECT seen by both, counts summed */
    json_t *sts = json_object_get(m, "statements");
    assert_int_equal(json_array_size(sts), 2);
    json_t *upd = json_array_get(sts, 0), *sel = json_array_get(sts, 1);
    assert_string_equal(json_string_value(json_object_get(upd, "fingerprint")), "bb");
    assert_int_equal(json_array_size(json_object_get(upd, "members")), 1);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(sel, "count"), "total")),
                     16);
    assert_true(json_real_value(json_object_get(sel, "primary_p99_ms")) == 9.0);
    assert_true(json_real_value(json_object_get(sel, "latency_ratio")) == 1.5);
    assert_int_equal(json_array_size(json_object_get(sel, "members")), 2);

    /* samples: newest first, each with its member */
    json_t *samples = json_object_get(m, "samples");
    assert_int_equal(json_array_size(samples), 2);
    assert_string_equal(json_string_value(json_object_get(json_array_get(samples, 0), "member")),
                        "m2");
    json_decref(m);

    /* top_n */
    m = fleet_report_merge(r, members, 3, 1, "2026-01-01T00:00:03.000Z");
    assert_int_equal(json_array_size(json_object_get(m, "statements")), 1);
    json_decref(m);
    /* nobody's report yet */
    m = fleet_report_merge(NULL, NULL, 0, 0, "2026-01-01T00:00:03.000Z");
    assert_non_null(m);
    assert_int_equal(json_array_size(json_object_get(m, "listeners")), 0);
    json_decref(m);
    for (int i = 0; i < 3; i++)
        json_decref(r[i]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_member_round_trip),
        cmocka_unit_test(test_member_refused),
        cmocka_unit_test(test_entries),
        cmocka_unit_test(test_op_record),
        cmocka_unit_test(test_report_merge),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
