/*
 * fleet_codec.h - what a fleet's members write to and read from the store
 * (control/fleet.h), as plain values.
 *
 * Pure: no socket, no log.  The store's replies arrive as arrays of
 * strings (a stream entry's fields, a hash's HGETALL); these functions
 * check and convert them, refusing anything over the limits below: the
 * store is shared, so what another member (or anyone with access to it)
 * wrote is input, not trust.
 *
 *   fleet:NAME:state          hash  doc (control/state_file.h's JSON), version,
 *                                   epoch (sum of the listeners'), log_id, member
 *   fleet:NAME:log            stream, one entry per change, in order:
 *       type=state   version=V member=ID doc=JSON       mode, weights, guards changed
 *       type=op      id=K kind=cutover|rollback max_pause_ms=N force=0|1 asked_by=ID
 *                    members="ID ID ..."          the live members it waits for
 *       type=commit  id=K version=V doc=JSON            the flip, with the new state
 *       type=abort   id=K reason=TEXT                   nothing swapped anywhere
 *       type=report  id=K member=ID step=STEP           a member's step (for watchers)
 *   fleet:NAME:op             hash  the running (or last) operation: id, kind, state
 *                                   (in_progress|committed|completed|aborted), members,
 *                                   asked_by, epoch, max_pause_ms, created_ms, reason,
 *                                   step:ID and ms:ID per member
 *   fleet:NAME:op:K           a finished operation's hash, kept 7 days
 *   fleet:NAME:member:ID      string with a TTL: the member's record (JSON below)
 *   fleet:NAME:members        sorted set: every id seen, by last heartbeat (an index)
 *   fleet:NAME:report:ID      string with a TTL: the member's shadow report (its top statements)
 */
#ifndef TANDEM_FLEET_CODEC_H
#define TANDEM_FLEET_CODEC_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#include "conf/conf.h"

#define FLEET_KEY_MAX (CONF_NAME_MAX + 96)
#define FLEET_MEMBER_MAX_BYTES (64u << 10) /* a longer member record is refused */
#define FLEET_ROLES_MAX 32                 /* listeners shown in a member's record */
#define FLEET_OP_MEMBERS_MAX 256           /* members one operation waits for */

struct fleet_keys {
    char state[FLEET_KEY_MAX];
    char log[FLEET_KEY_MAX];
    char op[FLEET_KEY_MAX];
    char op_counter[FLEET_KEY_MAX];
    char op_archive_prefix[FLEET_KEY_MAX]; /* + id */
    char members[FLEET_KEY_MAX];
    char member_prefix[FLEET_KEY_MAX];     /* + member id */
    char member[FLEET_KEY_MAX];            /* this member's */
    char report_prefix[FLEET_KEY_MAX];     /* + member id */
    char report[FLEET_KEY_MAX];            /* this member's */
};

/* fleet_keys_init - the key names of fleet FLEET for member MEMBER. */
void fleet_keys_init(struct fleet_keys *k, const char *fleet, const char *member);

/* A member's view of one listener's roles. */
struct fleet_role {
    char listener[CONF_NAME_MAX];
    char primary[CONF_NAME_MAX];
    char shadow[CONF_NAME_MAX]; /* "" when none */
    uint64_t epoch;
    int paused;                 /* writes wait for an operation */
};

/*
 *   {"id": "pod-a", "admin": "127.0.0.1:9090", "pid": 42, "started_ms": ...,
 *    "heartbeat_ms": ..., "epoch": 3, "version": 12, "sessions": 7,
 *    "operation": "fleet-op-2" | null,
 *    "roles": [{"listener": "pg", "primary": "green", "shadow": "blue",
 *               "epoch": 1, "writes_paused": false}]}
 */
struct fleet_member {
    char id[CONF_NAME_MAX];
    char admin[CONF_HOST_MAX + 16]; /* "" when no admin server */
    int64_t pid;
    int64_t started_ms, heartbeat_ms; /* unix ms */
    uint64_t epoch;                   /* sum of the listeners' epochs applied */
    uint64_t version;                 /* the store's state version applied */
    uint64_t sessions;
    char operation[32];               /* "" when none */
    struct fleet_role roles[FLEET_ROLES_MAX];
    size_t nroles;
};

/* fleet_member_encode - m as JSON (new string, caller frees), NULL on out of memory. */
char *fleet_member_encode(const struct fleet_member *m);
/* fleet_member_decode - m (zeroed by the caller) from len bytes; 0, or -1 with err. */
int fleet_member_decode(const char *buf, size_t len, struct fleet_member *m, char *err,
                        size_t errlen);
/* fleet_member_json - m as a JSON object for GET /api/fleet (new reference). */
json_t *fleet_member_json(const struct fleet_member *m);

enum fleet_entry_type {
    FLEET_ENTRY_STATE,
    FLEET_ENTRY_OP,
    FLEET_ENTRY_COMMIT,
    FLEET_ENTRY_ABORT,
    FLEET_ENTRY_REPORT,
};

/* One log entry.  Strings point into the caller's reply: valid while it is. */
struct fleet_entry {
    enum fleet_entry_type type;
    uint64_t op_id;       /* op, commit, abort, report */
    uint64_t version;     /* state, commit */
    const char *doc;      /* state, commit: the state document */
    size_t doc_len;
    int rollback;         /* op: kind=rollback */
    uint32_t max_pause_ms;
    int force;
    const char *member;   /* state, report: who wrote it; op: who asked ("" when absent) */
    const char *reason;   /* abort ("" when absent) */
    const char *step;     /* report */
    const char *members;  /* op: the live members it waits for, space-separated ("" absent) */
};

/*
 * fleet_entry_parse - the entry of n field/value strings (fields[i],
 * values[i], lens[i] the value's length).  0, or -1 with err: an unknown
 * type, a field missing or malformed.  Unknown fields are ignored (a newer
 * member may add some).
 */
int fleet_entry_parse(const char *const *fields, const char *const *values, const size_t *lens,
                      size_t n, struct fleet_entry *e, char *err, size_t errlen);

/*
 * fleet_op_json - an operation's hash (HGETALL: n field/value pairs) as
 * the record GET /api/fleet shows:
 *   {"id": "fleet-op-2", "type": "cutover", "state": "committed", "asked_by": "pod-a",
 *    "reason": null, "epoch": 3, "max_pause_ms": 2000, "created": "...Z",
 *    "members": [{"id": "pod-a", "step": "swapped", "ms": 14}, ...]}
 * "ms": milliseconds from the member seeing the operation to its step.
 * NULL when the hash is empty or has no id.
 */
json_t *fleet_op_json(const char *const *fields, const char *const *values, size_t n);

/*
 * fleet_report_merge - the members' shadow reports (metrics/shadow.h's
 * shadow_report_json, reports[i] from members[i]) as one, for GET
 * /api/shadow/report?scope=fleet:
 *
 *   counts (outcomes, noise, dropped; since boot and over the window),
 *   detached sessions, evicted and undescribed statements: summed;
 *   diverged: any member's (diverged_reason names the member);
 *   lag, p50/p99, latency and performance ratios: the worst member's
 *   (percentiles cannot be added; the worst is what a guard would see);
 *   validation_success_ratio: the lowest member's;
 *   statements and slowest: merged by listener and fingerprint, each with
 *   "members" (who saw it), sorted as one member's are, the first top_n
 *   (0: all); samples: every member's, newest first, each with "member".
 *
 * Pure: reports are only read; a report that is not an object is skipped.
 * Returns a new object, NULL when memory ran out.
 */
json_t *fleet_report_merge(json_t *const *reports, const char *const *members, size_t n,
                           size_t top_n, const char *generated_at);

#endif /* TANDEM_FLEET_CODEC_H */
