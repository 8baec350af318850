/*
 * test_state_file.c - the state file's codec (control/state_file.c): a
 * document survives encode + decode field by field; every kind of damage
 * is refused with a message naming where; state_file_plan() against a
 * configuration takes the file's roles when they are the configuration's
 * exchanged, refuses what it cannot reconcile, and restores mode and
 * weights only when the configuration did not change since.  Also the
 * control { state_file } directive and --state-file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "control/state_file.h"

#define CONF_TEXT(primary, shadow, extra)                                                          \
    "control { state_file /var/lib/tandem/state.json; }\n"                                        \
    "backend blue { address 127.0.0.1:5432; }\n"                                                   \
    "backend green { address 127.0.0.1:5433; }\n"                                                  \
    "backend red { address 127.0.0.1:5434; }\n"                                                    \
    "listener pg { listen 127.0.0.1:6432; primary " primary "; shadow " shadow "; mode shadow;\n" \
    "              " extra " }\n"

static struct conf *
conf_of(const char *text)
{
    struct conf_errors errs;
    memset(&errs, 0, sizeof(errs));
    struct conf *c = conf_load_buffer("t.conf", text, strlen(text), &errs);
    if (c == NULL)
        print_error("conf: %s\n", errs.list[0].msg);
    assert_non_null(c);
    return c;
}

/* A document with every field set. */
static void
full_doc(struct state_doc *doc)
{
    memset(doc, 0, sizeof(*doc));
    doc->written_ms = 1735732800123; /* 2025-01-01T12:00:00.123Z */
    struct state_listener *l = state_doc_add_listener(doc, "pg");
    assert_non_null(l);
    strcpy(l->primary, "green");
    strcpy(l->shadow, "blue");
    l->epoch = 3;
    l->mode = CONF_MODE_SPLIT;
    l->configured_mode = CONF_MODE_SHADOW;
    l->nweights = 2;
    strcpy(l->weights[0].backend, "blue");
    l->weights[0].weight = 50;
    strcpy(l->weights[1].backend, "green");
    l->weights[1].weight = 50;
    l->nconfigured_weights = 2;
    strcpy(l->configured_weights[0].backend, "blue");
    l->configured_weights[0].weight = 1;
    strcpy(l->configured_weights[1].backend, "green");
    l->configured_weights[1].weight = 0;
    l->nguards = 1;
    strcpy(l->guards[0].name, "errors");
    l->guards[0].trips = 2;
    l->guards[0].last_trip_ms = 1735732000000;
    l->guards[0].cooldown_until_ms = 1735733000500;
    strcpy(l->guards[0].reason, "shadow_error_rate 0.2 above 0.05");
    l->diverged = 1;
    strcpy(l->diverged_reason, "shadow_timeout: the shadow was detached");
    strcpy(l->diverged_statement, "INSERT INTO t VALUES ('\"quoted\"')");
    doc->running = 1;
    struct state_listener *c = state_doc_add_listener(doc, "cache");
    assert_non_null(c);
    strcpy(c->primary, "blue");
    c->mode = CONF_MODE_PASSTHROUGH;
    c->configured_mode = CONF_MODE_PASSTHROUGH;
    doc->nops = 2;
    doc->ops[0] = (struct state_op){.id = 4, .type = STATE_OP_CUTOVER, .state = STATE_OP_FAILED,
                                    .created_ms = 1735732700000, .started_ms = 1735732700001,
                                    .finished_ms = 1735732702001, .pause_ms = 2000,
                                    .max_pause_ms = 2000};
    strcpy(doc->ops[0].reason, "abandoned: the drain did not finish");
    doc->ops[1] = (struct state_op){.id = 5, .type = STATE_OP_ROLLBACK,
                                    .state = STATE_OP_COMPLETED, .created_ms = 1735732800000,
                                    .started_ms = 1735732800000, .finished_ms = 1735732800042,
                                    .pause_ms = 42, .max_pause_ms = 8000, .force = 1};
    doc->next_op_id = 6;
}

static void
test_roundtrip(void **unused)
{
    struct state_doc in, out;
    char err[256];
    (void)unused;

    full_doc(&in);
    char *text = state_file_encode(&in);
    assert_non_null(text);
    assert_non_null(strstr(text, "\"version\": 1"));
    assert_non_null(strstr(text, "\"written\": \"2025-01-01T12:00:00.123Z\""));
    assert_int_equal(state_file_decode(text, strlen(text), &out, err, sizeof(err)), 0);

    assert_int_equal(out.written_ms, in.written_ms);
    assert_int_equal(out.nlisteners, 2);
    const struct state_listener *a = state_doc_listener(&in, "pg");
    const struct state_listener *b = state_doc_listener(&out, "pg");
    assert_non_null(b);
    assert_string_equal(b->primary, "green");
    assert_string_equal(b->shadow, "blue");
    assert_int_equal(b->epoch, 3);
    assert_int_equal(b->mode, CONF_MODE_SPLIT);
    assert_int_equal(b->configured_mode, CONF_MODE_SHADOW);
    assert_int_equal(b->nweights, 2);
    assert_memory_equal(b->weights, a->weights, sizeof(a->weights));
    assert_memory_equal(b->configured_weights, a->configured_weights,
                        sizeof(a->configured_weights));
    assert_int_equal(b->nguards, 1);
    assert_string_equal(b->guards[0].name, "errors");
    assert_int_equal(b->guards[0].trips, 2);
    assert_int_equal(b->guards[0].last_trip_ms, a->guards[0].last_trip_ms);
    assert_int_equal(b->guards[0].cooldown_until_ms, a->guards[0].cooldown_until_ms);
    assert_string_equal(b->guards[0].reason, a->guards[0].reason);
    assert_int_equal(b->diverged, 1);
    assert_string_equal(b->diverged_reason, a->diverged_reason);
    assert_string_equal(b->diverged_statement, a->diverged_statement);
    assert_int_equal(out.running, 1);
    const struct state_listener *c = state_doc_listener(&out, "cache");
    assert_non_null(c);
    assert_string_equal(c->shadow, "");
    assert_int_equal(c->epoch, 0);
    assert_int_equal(c->diverged, 0);
    assert_non_null(strstr(text, "\"diverged\": null")); /* the cache listener's */

    assert_int_equal(out.nops, 2);
    assert_int_equal(out.next_op_id, 6);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(out.ops[i].id, in.ops[i].id);
        assert_int_equal(out.ops[i].type, in.ops[i].type);
        assert_int_equal(out.ops[i].state, in.ops[i].state);
        assert_string_equal(out.ops[i].reason, in.ops[i].reason);
        assert_int_equal(out.ops[i].created_ms, in.ops[i].created_ms);
        assert_int_equal(out.ops[i].started_ms, in.ops[i].started_ms);
        assert_int_equal(out.ops[i].finished_ms, in.ops[i].finished_ms);
        assert_int_equal(out.ops[i].pause_ms, in.ops[i].pause_ms);
        assert_int_equal(out.ops[i].max_pause_ms, in.ops[i].max_pause_ms);
        assert_int_equal(out.ops[i].force, in.ops[i].force);
    }

    /* encoding the decoded document gives the same text */
    char *again = state_file_encode(&out);
    assert_string_equal(again, text);
    free(again);
    free(text);
    state_doc_release(&in);
    state_doc_release(&out);
}

/* The minimal file a person could write by hand. */
static void
test_minimal(void **unused)
{
    const char *text = "{\"version\":1,\"listeners\":{\"pg\":{\"primary\":\"green\","
                       "\"shadow\":\"blue\",\"epoch\":1,\"mode\":\"shadow\","
                       "\"configured_mode\":\"shadow\",\"weights\":{},"
                       "\"configured_weights\":{}}}, \"later\": [1, 2]}";
    struct state_doc doc;
    char err[256];
    (void)unused;
    assert_int_equal(state_file_decode(text, strlen(text), &doc, err, sizeof(err)), 0);
    assert_int_equal(doc.nlisteners, 1);
    assert_int_equal(doc.nops, 0);
    assert_int_equal(doc.next_op_id, 1);
    assert_int_equal(doc.written_ms, 0);
    /* a file from before these keys: stopped cleanly, not diverged */
    assert_int_equal(doc.running, 0);
    assert_int_equal(doc.listeners[0].diverged, 0);
    state_doc_release(&doc);
}

static void
refused(const char *text, const char *want)
{
    struct state_doc doc;
    char err[256] = "";
    if (state_file_decode(text, strlen(text), &doc, err, sizeof(err)) == 0) {
        state_doc_release(&doc);
        fail_msg("accepted: %s", text);
    }
    if (strstr(err, want) == NULL)
        fail_msg("for %s\n  got:  %s\n  want: ...%s...", text, err, want);
    assert_null(doc.listeners);
}

#define L(body)                                                                                    \
    "{\"version\":1,\"listeners\":{\"pg\":{\"primary\":\"green\",\"shadow\":\"blue\","           \
    "\"epoch\":1,\"mode\":\"shadow\",\"configured_mode\":\"shadow\",\"weights\":{},"              \
    "\"configured_weights\":{}" body "}}}"

static void
test_damage(void **unused)
{
    (void)unused;
    refused("", "empty");
    refused("{\"version\":1,\"listeners\":{\"pg\":{\"prim", "not JSON (line 1");
    refused("[1]", "expected a JSON object");
    refused("{\"listeners\":{}}", "version: expected an integer");
    refused("{\"version\":2,\"listeners\":{}}", "version: 2 is not a version this tandem reads");
    refused("{\"version\":0,\"listeners\":{}}", "version: 0 is not a version");
    refused("{\"version\":1}", "listeners: expected an object");
    refused("{\"version\":1,\"version\":1,\"listeners\":{}}", "not JSON");
    refused("{\"version\":1,\"listeners\":{\"pg\":[]}}", "listeners.pg: expected an object");
    refused("{\"version\":1,\"listeners\":{\"pg\":{\"shadow\":\"blue\"}}}",
            "listeners.pg.primary: expected a name");
    refused(L(", \"epoch\": -1"), "not JSON"); /* a duplicate key */
    refused("{\"version\":1,\"listeners\":{\"pg\":{\"primary\":\"green\",\"shadow\":\"blue\","
            "\"epoch\":-1}}}",
            "listeners.pg.epoch: expected an integer 0..");
    refused("{\"version\":1,\"listeners\":{\"pg\":{\"primary\":\"green\",\"shadow\":\"green\","
            "\"epoch\":1,\"mode\":\"shadow\",\"configured_mode\":\"shadow\",\"weights\":{},"
            "\"configured_weights\":{}}}}",
            "listeners.pg: primary and shadow are the same backend \"green\"");
    refused("{\"version\":1,\"listeners\":{\"pg\":{\"primary\":\"green\",\"shadow\":\"blue\","
            "\"epoch\":1,\"mode\":\"mirror\"}}}",
            "listeners.pg.mode: expected passthrough|shadow|split");
    refused("{\"version\":1,\"listeners\":{\"pg\":{\"primary\":\"green\",\"shadow\":\"blue\","
            "\"epoch\":1,\"mode\":\"shadow\",\"configured_mode\":\"shadow\","
            "\"weights\":{\"blue\":\"x\"},\"configured_weights\":{}}}}",
            "listeners.pg.weights.blue: expected an integer 0..1000000");
    refused("{\"version\":1,\"listeners\":{\"pg\":{\"primary\":\"green\",\"shadow\":\"blue\","
            "\"epoch\":1,\"mode\":\"shadow\",\"configured_mode\":\"shadow\","
            "\"weights\":{\"a\":1,\"b\":2,\"c\":3},\"configured_weights\":{}}}}",
            "listeners.pg.weights.c: at most 2 backends");
    refused(L(", \"guards\": [{\"name\": \"g\", \"trips\": 1, \"cooldown_until\": \"soon\"}]"),
            "listeners.pg.guards[0].cooldown_until: expected a UTC time");
    refused(L(", \"guards\": [{\"name\": \"g\", \"trips\": 1, "
              "\"last_trip\": \"2025-13-01T00:00:00Z\"}]"),
            "listeners.pg.guards[0].last_trip: expected a UTC time");
    refused(L(", \"guards\": {}"), "listeners.pg.guards: expected an array");
    refused(L(", \"diverged\": true"), "listeners.pg.diverged: expected null or an object");
    refused(L(", \"diverged\": {\"reason\": 3}"),
            "listeners.pg.diverged.reason: expected a string or null");
    refused("{\"version\":1,\"running\":\"yes\",\"listeners\":{}}",
            "running: expected true or false");
    refused("{\"version\":1,\"listeners\":{},\"operations\":[{\"id\":\"3\"}]}",
            "operations[0].id: expected \"op-N\"");
    refused("{\"version\":1,\"listeners\":{},\"operations\":[{\"id\":\"op-3\",\"type\":\"flip\"}]}",
            "operations[0].type: expected cutover|rollback");
    refused("{\"version\":1,\"listeners\":{},\"operations\":[{\"id\":\"op-3\",\"type\":\"cutover\","
            "\"state\":\"done\"}]}",
            "operations[0].state: expected pending|in_progress|completed|failed");
}

/* Every prefix of a valid file is refused (a write cut short), never half taken. */
static void
test_every_prefix(void **unused)
{
    struct state_doc in, out;
    char err[256];
    (void)unused;
    full_doc(&in);
    char *text = state_file_encode(&in);
    size_t len = strlen(text);
    for (size_t n = 0; n < len - 1; n++) {
        if (state_file_decode(text, n, &out, err, sizeof(err)) == 0) {
            state_doc_release(&out);
            fail_msg("a prefix of %zu bytes was accepted", n);
        }
    }
    free(text);
    state_doc_release(&in);
}

/* ---- plan ------------------------------------------------------------------ */

static int
plan_of(const char *conf_text, const struct state_doc *doc, struct state_plan_listener *plan,
        char *err, size_t errlen)
{
    struct conf *c = conf_of(conf_text);
    int rc = state_file_plan(doc, c, plan, err, errlen);
    conf_free(c);
    return rc;
}

static void
one_listener(struct state_doc *doc, const char *primary, const char *shadow, uint64_t epoch)
{
    memset(doc, 0, sizeof(*doc));
    struct state_listener *l = state_doc_add_listener(doc, "pg");
    strcpy(l->primary, primary);
    strcpy(l->shadow, shadow);
    l->epoch = epoch;
    l->mode = l->configured_mode = CONF_MODE_SHADOW;
    l->nweights = l->nconfigured_weights = 2;
    strcpy(l->weights[0].backend, "blue");
    l->weights[0].weight = 1;
    strcpy(l->weights[1].backend, "green");
    l->weights[1].weight = 0;
    memcpy(l->configured_weights, l->weights, sizeof(l->weights));
}

static void
test_plan_roles(void **unused)
{
    struct state_doc doc;
    struct state_plan_listener plan[1];
    char err[600];
    (void)unused;

    /* the same roles: nothing to say */
    one_listener(&doc, "blue", "green", 2);
    assert_int_equal(plan_of(CONF_TEXT("blue", "green", ""), &doc, plan, err, sizeof(err)), 0);
    assert_int_equal(plan[0].swapped, 0);
    assert_int_equal(plan[0].epoch, 2);
    assert_string_equal(plan[0].note, "");
    state_doc_release(&doc);

    /* after a cutover: the file's roles, both named with the epoch */
    one_listener(&doc, "green", "blue", 1);
    assert_int_equal(plan_of(CONF_TEXT("blue", "green", ""), &doc, plan, err, sizeof(err)), 0);
    assert_int_equal(plan[0].swapped, 1);
    assert_int_equal(plan[0].epoch, 1);
    assert_string_equal(plan[0].note,
                        "listener \"pg\": the configuration says primary \"blue\", shadow "
                        "\"green\"; the state file says primary \"green\", shadow \"blue\" "
                        "(epoch 1): taking the state file's roles");

    /* the operator wrote the new roles into the configuration: they agree */
    assert_int_equal(plan_of(CONF_TEXT("green", "blue", ""), &doc, plan, err, sizeof(err)), 0);
    assert_int_equal(plan[0].swapped, 0);
    assert_int_equal(plan[0].epoch, 1);
    assert_string_equal(plan[0].note, "");

    /* the same primary with another shadow: the operator's change */
    assert_int_equal(plan_of(CONF_TEXT("green", "red", ""), &doc, plan, err, sizeof(err)), 0);
    assert_int_equal(plan[0].swapped, 0);

    /* a primary the configuration does not have in those roles: refused */
    assert_int_equal(plan_of(CONF_TEXT("blue", "red", ""), &doc, plan, err, sizeof(err)), -1);
    assert_string_equal(err, "listener \"pg\": the state file says primary \"green\", shadow "
                             "\"blue\" (epoch 1), the configuration primary \"blue\", shadow "
                             "\"red\": tandem will not pick a primary on its own; write the "
                             "state file's primary into the configuration, or remove the "
                             "listener from the state file");
    assert_int_equal(plan_of(CONF_TEXT("red", "green", ""), &doc, plan, err, sizeof(err)), -1);
    state_doc_release(&doc);

    /* a backend the configuration does not have */
    one_listener(&doc, "purple", "blue", 5);
    assert_int_equal(plan_of(CONF_TEXT("blue", "green", ""), &doc, plan, err, sizeof(err)), -1);
    assert_string_equal(err, "listener \"pg\": the primary \"purple\" (epoch 5) is not a backend "
                             "of the configuration");
    state_doc_release(&doc);

    /* a listener the configuration does not have */
    one_listener(&doc, "blue", "green", 0);
    strcpy(doc.listeners[0].name, "old");
    assert_int_equal(plan_of(CONF_TEXT("blue", "green", ""), &doc, plan, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "listener \"old\" is not in the configuration"));
    state_doc_release(&doc);

    /* a listener not in the file: as configured */
    memset(&doc, 0, sizeof(doc));
    assert_int_equal(plan_of(CONF_TEXT("blue", "green", ""), &doc, plan, err, sizeof(err)), 0);
    assert_null(plan[0].recorded);
    assert_int_equal(plan[0].swapped, 0);
}

static void
test_plan_mode_and_weights(void **unused)
{
    struct state_doc doc;
    struct state_plan_listener plan[1];
    char err[600];
    (void)unused;

    /* set through the API since: restored */
    one_listener(&doc, "blue", "green", 0);
    doc.listeners[0].mode = CONF_MODE_SPLIT;
    doc.listeners[0].weights[0].weight = 60;
    doc.listeners[0].weights[1].weight = 40;
    assert_int_equal(plan_of(CONF_TEXT("blue", "green", ""), &doc, plan, err, sizeof(err)), 0);
    assert_int_equal(plan[0].restore_mode, 1);
    assert_int_equal(plan[0].restore_weights, 1);
    assert_non_null(strstr(plan[0].note, "mode split (set while running"));
    state_doc_release(&doc);

    /*
     * the configured mode and weights, recorded after a change back (a
     * fleet member that applied split must return to shadow): taken, and
     * nothing worth a note
     */
    one_listener(&doc, "blue", "green", 0);
    assert_int_equal(plan_of(CONF_TEXT("blue", "green", ""), &doc, plan, err, sizeof(err)), 0);
    assert_int_equal(plan[0].restore_mode, 1);
    assert_int_equal(plan[0].restore_weights, 1);
    assert_string_equal(plan[0].note, "");
    state_doc_release(&doc);

    /* the configuration changed since: it wins */
    one_listener(&doc, "blue", "green", 0);
    doc.listeners[0].mode = CONF_MODE_SPLIT;
    doc.listeners[0].weights[0].weight = 60;
    doc.listeners[0].weights[1].weight = 40;
    assert_int_equal(plan_of("control { state_file s.json; }\n"
                             "backend blue { address 127.0.0.1:5432; }\n"
                             "backend green { address 127.0.0.1:5433; }\n"
                             "listener pg { listen 127.0.0.1:6432; primary blue; shadow green;\n"
                             "  mode split; reads { blue weight=9; green weight=1; } }\n",
                             &doc, plan, err, sizeof(err)),
                     0);
    assert_int_equal(plan[0].restore_mode, 0);
    assert_int_equal(plan[0].restore_weights, 0);
    state_doc_release(&doc);
}

static void
test_conf_directive(void **unused)
{
    struct conf_errors errs;
    (void)unused;
    struct conf *c = conf_of(CONF_TEXT("blue", "green", ""));
    assert_string_equal(c->control.state_file, "/var/lib/tandem/state.json");
    conf_free(c);

    const char *bad = "control { state_file \"\"; gossip x; }\n"
                      "backend blue { address 127.0.0.1:5432; }\n"
                      "listener pg { listen 127.0.0.1:6432; primary blue; }\n";
    memset(&errs, 0, sizeof(errs));
    assert_null(conf_load_buffer("t.conf", bad, strlen(bad), &errs));
    assert_int_equal(errs.count, 2);
    assert_string_equal(errs.list[0].msg, "state_file: empty value");
    assert_string_equal(errs.list[1].msg, "unknown directive \"gossip\"");

    char *argv[] = {"--listen", "127.0.0.1:6432", "--primary", "127.0.0.1:5432",
                    "--state-file", "/tmp/s.json"};
    memset(&errs, 0, sizeof(errs));
    c = conf_load_args("postgres", 6, argv, &errs);
    assert_non_null(c);
    assert_string_equal(c->control.state_file, "/tmp/s.json");
    conf_free(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_minimal),
        cmocka_unit_test(test_damage),
        cmocka_unit_test(test_every_prefix),
        cmocka_unit_test(test_plan_roles),
        cmocka_unit_test(test_plan_mode_and_weights),
        cmocka_unit_test(test_conf_directive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
