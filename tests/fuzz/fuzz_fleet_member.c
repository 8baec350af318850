/*
 * fuzz_fleet_member.c - libFuzzer harness for what a fleet member reads
 * back from the store (control/fleet_codec.c): another member's record,
 * a log entry, an operation's hash.
 *
 * One call per input.  The whole input is a member record: when accepted,
 * it must encode and decode again to the same record.  Split at NUL bytes,
 * it is also a list of field/value pairs, fed to the log entry parser and
 * to the operation record builder, which must never crash.  Invariants are
 * checked with abort() so a violation is a crash.
 */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "control/fleet_codec.h"

#define CHECK(cond)                                                                          \
    do {                                                                                     \
        if (!(cond))                                                                         \
            abort();                                                                         \
    } while (0)

#define PAIRS_MAX 32

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fleet_member m, again;
    char err[300];

    memset(&m, 0, sizeof(m));
    if (fleet_member_decode((const char *)data, size, &m, err, sizeof(err)) == 0) {
        char *text = fleet_member_encode(&m);
        CHECK(text != NULL);
        memset(&again, 0, sizeof(again));
        CHECK(fleet_member_decode(text, strlen(text), &again, err, sizeof(err)) == 0);
        CHECK(memcmp(&m, &again, sizeof(m)) == 0);
        free(text);
        json_decref(fleet_member_json(&m));
    }

    /* the same bytes as NUL-separated strings: field, value, field, value... */
    char *copy = malloc(size + 1);
    const char *strs[2 * PAIRS_MAX];
    size_t lens[PAIRS_MAX], n = 0;
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';
    for (size_t at = 0; at <= size && n < 2 * PAIRS_MAX;) {
        strs[n++] = copy + at;
        at += strlen(copy + at) + 1;
    }
    const char *fields[PAIRS_MAX], *values[PAIRS_MAX];
    size_t npairs = n / 2;
    for (size_t i = 0; i < npairs; i++) {
        fields[i] = strs[2 * i];
        values[i] = strs[2 * i + 1];
        lens[i] = strlen(values[i]);
    }
    struct fleet_entry e;
    if (fleet_entry_parse(fields, values, lens, npairs, &e, err, sizeof(err)) == 0)
        CHECK(e.member != NULL && e.reason != NULL && e.members != NULL);
    json_decref(fleet_op_json(fields, values, npairs));
    free(copy);
    return 0;
}
