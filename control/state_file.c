/*
 * state_file.c - the control state as JSON (see state_file.h).
 */
#include "control/state_file.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "metrics/log.h"

static const char *const op_type_names[] = {"cutover", "rollback", NULL};
static const char *const op_state_names[] = {"pending", "in_progress", "completed", "failed",
                                             NULL};
static const char *const mode_names[] = {"passthrough", "shadow", "split", NULL};

struct state_listener *
state_doc_add_listener(struct state_doc *doc, const char *name)
{
    struct state_listener *bigger =
        realloc(doc->listeners, (doc->nlisteners + 1) * sizeof(*doc->listeners));
    if (bigger == NULL)
        return NULL;
    doc->listeners = bigger;
    struct state_listener *l = &doc->listeners[doc->nlisteners++];
    memset(l, 0, sizeof(*l));
    snprintf(l->name, sizeof(l->name), "%s", name);
    return l;
}

const struct state_listener *
state_doc_listener(const struct state_doc *doc, const char *name)
{
    for (size_t i = 0; i < doc->nlisteners; i++)
        if (strcmp(doc->listeners[i].name, name) == 0)
            return &doc->listeners[i];
    return NULL;
}

void
state_doc_release(struct state_doc *doc)
{
    free(doc->listeners);
    memset(doc, 0, sizeof(*doc));
}

/* "2025-01-01T12:00:00.000Z" (milliseconds optional) -> unix ms; -1 when not that. */
static int64_t
parse_time(const char *s)
{
    struct tm tm;
    int ms = 0, used = 0;
    memset(&tm, 0, sizeof(tm));
    if (sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
               &tm.tm_min, &tm.tm_sec, &used) != 6)
        return -1;
    s += used;
    if (*s == '.') {
        if (sscanf(s, ".%3d%n", &ms, &used) != 1 || used != 4)
            return -1;
        s += used;
    }
    if (strcmp(s, "Z") != 0 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 ||
        tm.tm_mday > 31 || tm.tm_hour > 23 || tm.tm_min > 59 || tm.tm_sec > 60 || ms < 0)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    time_t t = timegm(&tm);
    if (t < 0)
        return -1;
    return (int64_t)t * 1000 + ms;
}

/* ---- encode --------------------------------------------------------------- */

json_t *
state_file_time_json(int64_t ms)
{
    char buf[40];
    if (ms <= 0)
        return json_null();
    log_format_time(ms, buf, sizeof(buf));
    return json_string(buf);
}

static json_t *
text_json(const char *s)
{
    return s[0] ? json_string(s) : json_null();
}

static json_t *
weights_json(const struct state_weight *w, size_t n)
{
    json_t *o = json_object();
    for (size_t i = 0; o && i < n; i++)
        json_object_set_new(o, w[i].backend, json_integer(w[i].weight));
    return o;
}

static json_t *
listener_json(const struct state_listener *l)
{
    json_t *guards = json_array();
    for (size_t i = 0; guards && i < l->nguards; i++) {
        const struct state_guard *g = &l->guards[i];
        json_array_append_new(guards,
                              json_pack("{s:s, s:I, s:o, s:o, s:o}", "name", g->name, "trips",
                                        (json_int_t)g->trips, "last_trip",
                                        state_file_time_json(g->last_trip_ms), "cooldown_until",
                                        state_file_time_json(g->cooldown_until_ms), "reason",
                                        text_json(g->reason)));
    }
    json_t *diverged = l->diverged ? json_pack("{s:o, s:o}", "reason", text_json(l->diverged_reason),
                                               "statement", text_json(l->diverged_statement))
                                   : json_null();
    return json_pack("{s:s, s:o, s:I, s:s, s:s, s:o, s:o, s:o, s:o}", "primary", l->primary,
                     "shadow", text_json(l->shadow), "epoch", (json_int_t)l->epoch, "mode",
                     mode_names[l->mode], "configured_mode", mode_names[l->configured_mode],
                     "weights", weights_json(l->weights, l->nweights), "configured_weights",
                     weights_json(l->configured_weights, l->nconfigured_weights), "guards",
                     guards, "diverged", diverged);
}

static json_t *
op_json(const struct state_op *op)
{
    char id[16];
    snprintf(id, sizeof(id), "op-%u", op->id);
    return json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:o, s:I, s:I, s:b}", "id", id, "type",
                     op_type_names[op->type], "state", op_state_names[op->state], "reason",
                     text_json(op->reason), "created", state_file_time_json(op->created_ms),
                     "started", state_file_time_json(op->started_ms), "finished",
                     state_file_time_json(op->finished_ms), "pause_ms", (json_int_t)op->pause_ms,
                     "max_pause_ms", (json_int_t)op->max_pause_ms, "force", op->force);
}

char *
state_file_encode(const struct state_doc *doc)
{
    json_t *listeners = json_object(), *ops = json_array();
    for (size_t i = 0; listeners && i < doc->nlisteners; i++)
        json_object_set_new(listeners, doc->listeners[i].name, listener_json(&doc->listeners[i]));
    for (size_t i = 0; ops && i < doc->nops; i++)
        json_array_append_new(ops, op_json(&doc->ops[i]));
    json_t *root = json_pack("{s:i, s:o, s:b, s:o, s:I, s:o}", "version", STATE_FILE_VERSION,
                             "written", state_file_time_json(doc->written_ms), "running",
                             doc->running, "listeners", listeners, "next_operation",
                             (json_int_t)doc->next_op_id, "operations", ops);
    if (root == NULL)
        return NULL;
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(root);
    return text;
}

/* ---- decode --------------------------------------------------------------- */

/* Decoding state: the path of the value being read, for messages. */
struct dec {
    char *err;
    size_t errlen;
    char path[160];
};

static int
fail(struct dec *d, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    if (d->path[0])
        snprintf(d->err, d->errlen, "%s: %s", d->path, what);
    else
        snprintf(d->err, d->errlen, "%s", what);
    return -1;
}

/* The member KEY of O; path becomes BASE.KEY for messages.  NULL when absent. */
static json_t *
member(struct dec *d, json_t *o, const char *base, const char *key)
{
    snprintf(d->path, sizeof(d->path), "%s%s%.63s", base, base[0] ? "." : "", key);
    return json_object_get(o, key);
}

static int
get_uint(struct dec *d, json_t *v, uint64_t max, uint64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 ||
        (uint64_t)json_integer_value(v) > max)
        return fail(d, "expected an integer 0..%llu", (unsigned long long)max);
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* A name as the configuration spells them: 1..63 bytes. */
static int
get_name(struct dec *d, json_t *v, char *out, size_t outlen, int nullable)
{
    if (nullable && (v == NULL || json_is_null(v))) {
        out[0] = '\0';
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) == 0 || json_string_length(v) >= outlen ||
        strlen(json_string_value(v)) != json_string_length(v))
        return fail(d, "expected a name of 1..%zu characters", outlen - 1);
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

/* Free text (a reason): null or a string, cut to outlen. */
static int
get_text(struct dec *d, json_t *v, char *out, size_t outlen)
{
    out[0] = '\0';
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return fail(d, "expected a string or null");
    snprintf(out, outlen, "%s", json_string_value(v));
    return 0;
}

static int
get_time(struct dec *d, json_t *v, int64_t *out)
{
    *out = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_string(v) || (*out = parse_time(json_string_value(v))) < 0)
        return fail(d, "expected a UTC time like \"2025-01-01T12:00:00.000Z\" or null");
    return 0;
}

static int
get_enum(struct dec *d, json_t *v, const char *const *names, int *out)
{
    const char *s = json_string_value(v);
    for (int i = 0; s && names[i]; i++) {
        if (strcmp(s, names[i]) == 0) {
            *out = i;
            return 0;
        }
    }
    char expected[96] = "";
    size_t used = 0;
    for (int i = 0; names[i] && used < sizeof(expected); i++)
        used += (size_t)snprintf(expected + used, sizeof(expected) - used, "%s%s", i ? "|" : "",
                                 names[i]);
    return fail(d, "expected %s", expected);
}

static int
get_weights(struct dec *d, json_t *o, struct state_weight *w, size_t *n)
{
    char base[160];
    const char *key;
    json_t *v;
    snprintf(base, sizeof(base), "%s", d->path);
    if (!json_is_object(o))
        return fail(d, "expected an object of backend weights");
    *n = 0;
    json_object_foreach(o, key, v) {
        uint64_t x;
        snprintf(d->path, sizeof(d->path), "%s.%.63s", base, key);
        if (*n == STATE_WEIGHTS_MAX)
            return fail(d, "at most %d backends (the primary and the shadow)", STATE_WEIGHTS_MAX);
        if (strlen(key) == 0 || strlen(key) >= CONF_NAME_MAX)
            return fail(d, "bad backend name");
        if (get_uint(d, v, 1000000, &x) != 0)
            return -1;
        snprintf(w[*n].backend, sizeof(w[*n].backend), "%s", key);
        w[(*n)++].weight = (uint32_t)x;
    }
    return 0;
}

static int
get_guard(struct dec *d, json_t *o, const char *base, struct state_guard *g)
{
    uint64_t trips;
    if (!json_is_object(o)) {
        snprintf(d->path, sizeof(d->path), "%s", base);
        return fail(d, "expected an object");
    }
    if (get_name(d, member(d, o, base, "name"), g->name, sizeof(g->name), 0) != 0 ||
        get_uint(d, member(d, o, base, "trips"), UINT64_MAX >> 1, &trips) != 0 ||
        get_time(d, member(d, o, base, "last_trip"), &g->last_trip_ms) != 0 ||
        get_time(d, member(d, o, base, "cooldown_until"), &g->cooldown_until_ms) != 0 ||
        get_text(d, member(d, o, base, "reason"), g->reason, sizeof(g->reason)) != 0)
        return -1;
    g->trips = trips;
    return 0;
}

/* "diverged": absent or null (not diverged), or {"reason", "statement"}. */
static int
get_diverged(struct dec *d, json_t *v, const char *listener_base, struct state_listener *l)
{
    char base[180];
    l->diverged = 0;
    if (v == NULL || json_is_null(v))
        return 0;
    if (!json_is_object(v))
        return fail(d, "expected null or an object {\"reason\", \"statement\"}");
    snprintf(base, sizeof(base), "%s.diverged", listener_base);
    if (get_text(d, member(d, v, base, "reason"), l->diverged_reason,
                 sizeof(l->diverged_reason)) != 0 ||
        get_text(d, member(d, v, base, "statement"), l->diverged_statement,
                 sizeof(l->diverged_statement)) != 0)
        return -1;
    l->diverged = 1;
    return 0;
}

static int
get_listener(struct dec *d, json_t *o, struct state_listener *l)
{
    char base[160];
    int mode, configured;
    json_t *guards;
    size_t i;
    json_t *g;

    snprintf(base, sizeof(base), "listeners.%s", l->name);
    if (!json_is_object(o)) {
        snprintf(d->path, sizeof(d->path), "%s", base);
        return fail(d, "expected an object");
    }
    if (get_name(d, member(d, o, base, "primary"), l->primary, sizeof(l->primary), 0) != 0 ||
        get_name(d, member(d, o, base, "shadow"), l->shadow, sizeof(l->shadow), 1) != 0 ||
        get_uint(d, member(d, o, base, "epoch"), UINT64_MAX >> 1, &l->epoch) != 0 ||
        get_enum(d, member(d, o, base, "mode"), mode_names, &mode) != 0 ||
        get_enum(d, member(d, o, base, "configured_mode"), mode_names, &configured) != 0 ||
        get_weights(d, member(d, o, base, "weights"), l->weights, &l->nweights) != 0 ||
        get_weights(d, member(d, o, base, "configured_weights"), l->configured_weights,
                    &l->nconfigured_weights) != 0)
        return -1;
    if (strcmp(l->primary, l->shadow) == 0) {
        snprintf(d->path, sizeof(d->path), "%s", base);
        return fail(d, "primary and shadow are the same backend \"%s\"", l->primary);
    }
    l->mode = (enum conf_mode)mode;
    l->configured_mode = (enum conf_mode)configured;
    if (get_diverged(d, member(d, o, base, "diverged"), base, l) != 0)
        return -1;
    guards = member(d, o, base, "guards");
    if (guards == NULL)
        return 0;
    if (!json_is_array(guards) || json_array_size(guards) > STATE_GUARDS_MAX)
        return fail(d, "expected an array of at most %d guards", STATE_GUARDS_MAX);
    json_array_foreach(guards, i, g) {
        char gbase[180];
        snprintf(gbase, sizeof(gbase), "%s.guards[%zu]", base, i);
        if (get_guard(d, g, gbase, &l->guards[l->nguards++]) != 0)
            return -1;
    }
    return 0;
}

static int
get_op(struct dec *d, json_t *o, const char *base, struct state_op *op)
{
    char id[32];
    char *end;
    int type, state;
    uint64_t pause, max_pause;
    json_t *force;

    if (!json_is_object(o)) {
        snprintf(d->path, sizeof(d->path), "%s", base);
        return fail(d, "expected an object");
    }
    if (get_name(d, member(d, o, base, "id"), id, sizeof(id), 0) != 0)
        return -1;
    unsigned long n = strncmp(id, "op-", 3) == 0 ? strtoul(id + 3, &end, 10) : 0;
    if (n == 0 || n > 0x7fffffff || *end != '\0')
        return fail(d, "expected \"op-N\"");
    op->id = (unsigned)n;
    if (get_enum(d, member(d, o, base, "type"), op_type_names, &type) != 0 ||
        get_enum(d, member(d, o, base, "state"), op_state_names, &state) != 0 ||
        get_text(d, member(d, o, base, "reason"), op->reason, sizeof(op->reason)) != 0 ||
        get_time(d, member(d, o, base, "created"), &op->created_ms) != 0 ||
        get_time(d, member(d, o, base, "started"), &op->started_ms) != 0 ||
        get_time(d, member(d, o, base, "finished"), &op->finished_ms) != 0 ||
        get_uint(d, member(d, o, base, "pause_ms"), UINT64_MAX >> 1, &pause) != 0 ||
        get_uint(d, member(d, o, base, "max_pause_ms"), UINT32_MAX, &max_pause) != 0)
        return -1;
    force = member(d, o, base, "force");
    if (force != NULL && !json_is_boolean(force))
        return fail(d, "expected true or false");
    op->type = (enum state_op_type)type;
    op->state = (enum state_op_state)state;
    op->pause_ms = pause;
    op->max_pause_ms = (uint32_t)max_pause;
    op->force = force != NULL && json_is_true(force);
    return 0;
}

static int
decode(struct dec *d, json_t *root, struct state_doc *doc)
{
    uint64_t version, next = 1;
    const char *name;
    json_t *v, *listeners, *ops, *o;
    size_t i;

    if (!json_is_object(root))
        return fail(d, "expected a JSON object");
    v = member(d, root, "", "version");
    if (get_uint(d, v, UINT32_MAX, &version) != 0)
        return -1;
    if (version == 0 || version > STATE_FILE_VERSION)
        return fail(d, "%llu is not a version this tandem reads (it reads 1..%d): written by a "
                       "newer tandem?",
                    (unsigned long long)version, STATE_FILE_VERSION);
    if (get_time(d, member(d, root, "", "written"), &doc->written_ms) != 0)
        return -1;
    v = member(d, root, "", "running");
    if (v != NULL && !json_is_boolean(v))
        return fail(d, "expected true or false");
    doc->running = v != NULL && json_is_true(v);
    listeners = member(d, root, "", "listeners");
    if (!json_is_object(listeners))
        return fail(d, "expected an object of listeners by name");
    json_object_foreach(listeners, name, v) {
        if (strlen(name) == 0 || strlen(name) >= CONF_NAME_MAX) {
            snprintf(d->path, sizeof(d->path), "listeners");
            return fail(d, "bad listener name \"%.63s\"", name);
        }
        struct state_listener *l = state_doc_add_listener(doc, name);
        if (l == NULL)
            return fail(d, "out of memory");
        if (get_listener(d, v, l) != 0)
            return -1;
    }
    v = member(d, root, "", "next_operation");
    if (v != NULL && get_uint(d, v, 0x7fffffff, &next) != 0)
        return -1;
    doc->next_op_id = next ? (unsigned)next : 1;
    ops = member(d, root, "", "operations");
    if (ops == NULL)
        return 0;
    if (!json_is_array(ops) || json_array_size(ops) > STATE_OPS_MAX)
        return fail(d, "expected an array of at most %d operations", STATE_OPS_MAX);
    json_array_foreach(ops, i, o) {
        char base[32];
        snprintf(base, sizeof(base), "operations[%zu]", i);
        if (get_op(d, o, base, &doc->ops[doc->nops]) != 0)
            return -1;
        if (doc->ops[doc->nops].id >= doc->next_op_id)
            doc->next_op_id = doc->ops[doc->nops].id + 1;
        doc->nops++;
    }
    return 0;
}

int
state_file_decode(const char *buf, size_t len, struct state_doc *doc, char *err, size_t errlen)
{
    struct dec d = {.err = err, .errlen = errlen};
    json_error_t jerr;

    memset(doc, 0, sizeof(*doc));
    if (len > STATE_FILE_MAX_BYTES) {
        snprintf(err, errlen, "longer than %u bytes", STATE_FILE_MAX_BYTES);
        return -1;
    }
    if (len == 0) {
        snprintf(err, errlen, "empty (a state file is never written empty: it was cut short?)");
        return -1;
    }
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "not JSON (line %d, column %d: %s)", jerr.line, jerr.column,
                 jerr.text);
        return -1;
    }
    int rc = decode(&d, root, doc);
    json_decref(root);
    if (rc != 0)
        state_doc_release(doc);
    return rc;
}

/* ---- plan ----------------------------------------------------------------- */

/* The configuration's weights of l in the file's form (primary, then shadow). */
static size_t
configured_weights(const struct conf *conf, const struct conf_listener *l,
                   struct state_weight *out)
{
    size_t n = 0;
    for (size_t k = 0; k < l->nread_weights && n < STATE_WEIGHTS_MAX; k++) {
        snprintf(out[n].backend, sizeof(out[n].backend), "%s",
                 conf->backends[l->read_weights[k].backend].name);
        out[n++].weight = l->read_weights[k].weight;
    }
    return n;
}

static int
same_weights(const struct state_weight *a, size_t na, const struct state_weight *b, size_t nb)
{
    if (na != nb)
        return 0;
    for (size_t i = 0; i < na; i++) {
        size_t k = 0;
        while (k < nb && strcmp(a[i].backend, b[k].backend) != 0)
            k++;
        if (k == nb || a[i].weight != b[k].weight)
            return 0;
    }
    return 1;
}

/* Every recorded weight names the listener's primary or shadow. */
static int
weights_fit(const struct state_weight *w, size_t n, const char *primary, const char *shadow)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(w[i].backend, primary) != 0 && strcmp(w[i].backend, shadow) != 0)
            return 0;
    return 1;
}

static void
plan_listener(const struct conf *conf, const struct conf_listener *cl,
              const struct state_listener *r, struct state_plan_listener *p)
{
    const char *primary = conf->backends[cl->primary].name;
    const char *shadow = cl->shadow >= 0 ? conf->backends[cl->shadow].name : "";
    struct state_weight cw[STATE_WEIGHTS_MAX];
    size_t ncw = configured_weights(conf, cl, cw);
    size_t used = 0;

    if (strcmp(r->primary, primary) != 0) {
        p->swapped = 1;
        used += (size_t)snprintf(p->note, sizeof(p->note),
                                 "listener \"%s\": the configuration says primary \"%s\", shadow "
                                 "\"%s\"; the state file says primary \"%s\", shadow \"%s\" "
                                 "(epoch %llu): taking the state file's roles",
                                 cl->name, primary, shadow, r->primary, r->shadow,
                                 (unsigned long long)r->epoch);
    }
    /*
     * The recorded mode and weights are taken whenever they were set over
     * this same configuration, also when they equal it: a fleet member
     * whose mode was changed is brought back by a document that records
     * the configured one.  Only a difference is worth a note at start.
     */
    p->restore_mode = r->configured_mode == cl->mode;
    if (p->restore_mode && r->mode != cl->mode) {
        if (used < sizeof(p->note))
            used += (size_t)snprintf(p->note + used, sizeof(p->note) - used,
                                     "%slistener \"%s\": mode %s (set while running; the "
                                     "configuration says %s)",
                                     used ? "; " : "", cl->name, mode_names[r->mode],
                                     mode_names[cl->mode]);
    }
    p->restore_weights = same_weights(r->configured_weights, r->nconfigured_weights, cw, ncw) &&
                         weights_fit(r->weights, r->nweights, primary, shadow);
    if (p->restore_weights && !same_weights(r->weights, r->nweights, cw, ncw)) {
        if (used < sizeof(p->note))
            snprintf(p->note + used, sizeof(p->note) - used,
                     "%slistener \"%s\": read weights as set while running", used ? "; " : "",
                     cl->name);
    }
}

int
state_file_plan(const struct state_doc *doc, const struct conf *conf,
                struct state_plan_listener *plan, char *err, size_t errlen)
{
    for (size_t i = 0; i < doc->nlisteners; i++) {
        int found = 0;
        for (size_t k = 0; k < conf->nlisteners; k++)
            found |= strcmp(conf->listeners[k].name, doc->listeners[i].name) == 0;
        if (!found) {
            snprintf(err, errlen,
                     "listener \"%s\" is not in the configuration (renamed or removed?): its "
                     "roles cannot be checked; put it back, or remove it from the state file",
                     doc->listeners[i].name);
            return -1;
        }
    }
    for (size_t k = 0; k < conf->nlisteners; k++) {
        const struct conf_listener *cl = &conf->listeners[k];
        struct state_plan_listener *p = &plan[k];
        const struct state_listener *r = state_doc_listener(doc, cl->name);
        const char *primary = conf->backends[cl->primary].name;
        const char *shadow = cl->shadow >= 0 ? conf->backends[cl->shadow].name : "";

        memset(p, 0, sizeof(*p));
        p->recorded = r;
        if (r == NULL)
            continue;
        p->epoch = r->epoch;
        if (conf_backend_find(conf, r->primary) < 0) {
            snprintf(err, errlen,
                     "listener \"%s\": the primary \"%s\" (epoch %llu) is not a backend of the "
                     "configuration",
                     cl->name, r->primary, (unsigned long long)r->epoch);
            return -1;
        }
        /* the same primary, or the two exchanged: anything else is not ours to decide */
        if (strcmp(r->primary, primary) != 0 &&
            !(shadow[0] && strcmp(r->primary, shadow) == 0 && strcmp(r->shadow, primary) == 0)) {
            snprintf(err, errlen,
                     "listener \"%s\": the state file says primary \"%s\", shadow \"%s\" "
                     "(epoch %llu), the configuration primary \"%s\", shadow \"%s\": tandem will "
                     "not pick a primary on its own; write the state file's primary into the "
                     "configuration, or remove the listener from the state file",
                     cl->name, r->primary, r->shadow[0] ? r->shadow : "(none)",
                     (unsigned long long)r->epoch, primary, shadow[0] ? shadow : "(none)");
            return -1;
        }
        plan_listener(conf, cl, r, p);
    }
    return 0;
}
