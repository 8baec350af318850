/*
 * state_file.h - the control state as a JSON document: what control/state.c
 * writes to `control { state_file PATH; }` and reads back at start.
 *
 * Pure: no file, no socket, no log.  Encode and decode a struct state_doc;
 * state_file_plan() compares a decoded document with a configuration and
 * says, per listener, what a start would take from each.
 *
 *   {
 *     "version": 1,
 *     "written": "2025-01-01T12:00:00.000Z",
 *     "listeners": {
 *       "pg": {
 *         "primary": "green", "shadow": "blue", "epoch": 1,
 *         "mode": "split",       "configured_mode": "shadow",
 *         "weights": {"blue": 50, "green": 50},
 *         "configured_weights": {"blue": 1, "green": 0},
 *         "guards": [{"name": "errors", "trips": 1, "last_trip": "...Z",
 *                     "cooldown_until": "...Z" | null, "reason": "..." | null}],
 *         "diverged": null | {"reason": "...", "statement": "..."}
 *       }
 *     },
 *     "running": true,
 *     "next_operation": 4,
 *     "operations": [{"id": "op-3", "type": "cutover", "state": "completed",
 *                     "reason": null, "created": "...Z", "started": "...Z",
 *                     "finished": "...Z", "pause_ms": 12, "max_pause_ms": 2000,
 *                     "force": false}]
 *   }
 *
 * Roles are backend names, never "swapped": a file stays right when the
 * operator writes the new roles into the configuration.  The epoch grows by
 * one at every flip (cutover, rollback) and never goes back.  Times are
 * wall-clock UTC with milliseconds, so a cooldown still means something
 * after a restart.  Operations are the process's (an operation covers
 * every listener), hence at top level.
 *
 * "diverged" keeps a shadow's lost writes across a restart (the flag is
 * what refuses a cutover onto a shadow that misses rows).  "running" is
 * true in every file a live tandem writes and false only in the last one
 * of a clean stop: a start that reads true follows a kill or a crash,
 * when mirrored writes in flight may never have reached the shadow.
 * Both are optional (a file without them: not diverged, stopped cleanly).
 */
#ifndef TANDEM_STATE_FILE_H
#define TANDEM_STATE_FILE_H

#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "conf/conf.h"

#define STATE_FILE_VERSION 1
#define STATE_FILE_MAX_BYTES (4u << 20) /* a longer file is refused as corrupt */
#define STATE_WEIGHTS_MAX 2             /* a listener reads from its primary and its shadow */
#define STATE_GUARDS_MAX 32
#define STATE_OPS_MAX 16                /* the last operations kept in the file */

struct state_weight {
    char backend[CONF_NAME_MAX];
    uint32_t weight;
};

struct state_guard {
    char name[CONF_NAME_MAX];
    uint64_t trips;
    int64_t last_trip_ms;      /* unix ms; 0: never */
    int64_t cooldown_until_ms; /* unix ms; 0: no cooldown */
    char reason[256];
};

struct state_listener {
    char name[CONF_NAME_MAX];
    char primary[CONF_NAME_MAX];
    char shadow[CONF_NAME_MAX]; /* "" when the listener has none */
    uint64_t epoch;
    enum conf_mode mode;            /* in force */
    enum conf_mode configured_mode; /* the configuration's, when written */
    struct state_weight weights[STATE_WEIGHTS_MAX];
    size_t nweights;
    struct state_weight configured_weights[STATE_WEIGHTS_MAX];
    size_t nconfigured_weights;
    struct state_guard guards[STATE_GUARDS_MAX];
    size_t nguards;
    int diverged;                 /* the shadow lost a write (metrics/shadow.h) */
    char diverged_reason[64];     /* the first one's: "" when none was noted */
    char diverged_statement[256];
};

enum state_op_type { STATE_OP_CUTOVER, STATE_OP_ROLLBACK };
enum state_op_state { STATE_OP_PENDING, STATE_OP_IN_PROGRESS, STATE_OP_COMPLETED, STATE_OP_FAILED };

struct state_op {
    unsigned id; /* "op-<id>" */
    enum state_op_type type;
    enum state_op_state state;
    char reason[256];
    int64_t created_ms, started_ms, finished_ms; /* unix ms; 0: null */
    uint64_t pause_ms;
    uint32_t max_pause_ms;
    int force;
};

struct state_doc {
    int64_t written_ms;
    struct state_listener *listeners; /* owned; state_doc_release() frees */
    size_t nlisteners;
    struct state_op ops[STATE_OPS_MAX]; /* oldest first */
    size_t nops;
    unsigned next_op_id;                /* 1 when none was ever started */
    int running;                        /* written by a live tandem (not its clean stop) */
};

/* state_doc_add_listener - a zeroed listener appended to doc; NULL on out of memory. */
struct state_listener *state_doc_add_listener(struct state_doc *doc, const char *name);
/* state_doc_listener - the listener named NAME, or NULL. */
const struct state_listener *state_doc_listener(const struct state_doc *doc, const char *name);
/* state_doc_release - free what doc owns (not doc itself); doc is then empty. */
void state_doc_release(struct state_doc *doc);

/*
 * state_file_encode - the document as JSON text (a new NUL-terminated
 * string the caller frees), or NULL when memory ran out.
 */
char *state_file_encode(const struct state_doc *doc);

/*
 * state_file_decode - fill doc (zeroed by the caller) from len bytes of
 * JSON.  Returns 0, or -1 with a message in err naming what is wrong
 * ("listeners.pg.epoch: expected an integer >= 0"), doc then released.
 * Refuses a version newer than STATE_FILE_VERSION, unknown names for
 * modes, operation types and states, and anything over the limits above.
 * Unknown keys are ignored (a newer minor writer may add some).
 */
int state_file_decode(const char *buf, size_t len, struct state_doc *doc, char *err,
                      size_t errlen);

/*
 * What a start takes for one configured listener.
 *
 * Roles: the recorded primary and shadow against the configuration's:
 *   the same                          -> as configured (swapped 0)
 *   the configuration's, exchanged    -> the file's (swapped 1, a note says both)
 *   the same primary, another shadow  -> as configured (the operator changed the shadow)
 *   anything else                     -> refused: tandem must not go back to
 *                                        an old primary on its own
 * Mode and weights: the recorded ones when the configuration still says
 * what it said when they were recorded (they were set through the API or
 * by a guard since); otherwise the configuration's (it was edited since).
 */
struct state_plan_listener {
    const struct state_listener *recorded; /* NULL: not in the file; all as configured */
    int swapped;          /* the configuration's shadow answers */
    uint64_t epoch;
    int restore_mode;     /* recorded->mode replaces the configuration's */
    int restore_weights;  /* recorded->weights replace the configuration's */
    char note[512];       /* "" or what differs from the configuration, for the log and -t */
};

/*
 * state_file_plan - plan[i] for conf->listeners[i] (plan has
 * conf->nlisteners entries).  Returns 0, or -1 with err when tandem must
 * refuse to start: a listener or backend of the file the configuration
 * does not have, or roles it cannot reconcile (see above).
 */
int state_file_plan(const struct state_doc *doc, const struct conf *conf,
                    struct state_plan_listener *plan, char *err, size_t errlen);

/* state_file_time_json - the same as a JSON string; null for 0 (never). */
json_t *state_file_time_json(int64_t ms);

#endif /* TANDEM_STATE_FILE_H */
