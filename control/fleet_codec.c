/*
 * fleet_codec.c - the fleet's records in the store (see fleet_codec.h).
 */
#include "control/fleet_codec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/state_file.h"

void
fleet_keys_init(struct fleet_keys *k, const char *fleet, const char *member)
{
    snprintf(k->state, sizeof(k->state), "fleet:%s:state", fleet);
    snprintf(k->log, sizeof(k->log), "fleet:%s:log", fleet);
    snprintf(k->op, sizeof(k->op), "fleet:%s:op", fleet);
    snprintf(k->op_counter, sizeof(k->op_counter), "fleet:%s:op_counter", fleet);
    snprintf(k->op_archive_prefix, sizeof(k->op_archive_prefix), "fleet:%s:op:", fleet);
    snprintf(k->members, sizeof(k->members), "fleet:%s:members", fleet);
    snprintf(k->member_prefix, sizeof(k->member_prefix), "fleet:%s:member:", fleet);
    snprintf(k->member, sizeof(k->member), "fleet:%s:member:%s", fleet, member);
    snprintf(k->report_prefix, sizeof(k->report_prefix), "fleet:%s:report:", fleet);
    snprintf(k->report, sizeof(k->report), "fleet:%s:report:%s", fleet, member);
}

/* ---- member records ------------------------------------------------------- */

static json_t *
roles_json(const struct fleet_member *m)
{
    json_t *roles = json_array();
    for (size_t i = 0; roles && i < m->nroles; i++) {
        const struct fleet_role *r = &m->roles[i];
        json_array_append_new(
            roles, json_pack("{s:s, s:s, s:o, s:I, s:b}", "listener", r->listener, "primary",
                             r->primary, "shadow", r->shadow[0] ? json_string(r->shadow)
                                                                : json_null(),
                             "epoch", (json_int_t)r->epoch, "writes_paused", r->paused));
    }
    return roles;
}

char *
fleet_member_encode(const struct fleet_member *m)
{
    json_t *o = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "id", m->id,
                          "admin", m->admin, "pid", (json_int_t)m->pid, "started_ms",
                          (json_int_t)m->started_ms, "heartbeat_ms", (json_int_t)m->heartbeat_ms,
                          "epoch", (json_int_t)m->epoch, "version", (json_int_t)m->version,
                          "sessions", (json_int_t)m->sessions, "operation",
                          m->operation[0] ? json_string(m->operation) : json_null(), "roles",
                          roles_json(m));
    if (o == NULL)
        return NULL;
    char *text = json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(o);
    return text;
}

json_t *
fleet_member_json(const struct fleet_member *m)
{
    return json_pack("{s:s, s:o, s:I, s:o, s:o, s:I, s:I, s:I, s:o, s:o}", "id", m->id, "admin",
                     m->admin[0] ? json_string(m->admin) : json_null(), "pid", (json_int_t)m->pid,
                     "started", state_file_time_json(m->started_ms), "last_heartbeat",
                     state_file_time_json(m->heartbeat_ms), "epoch", (json_int_t)m->epoch,
                     "version", (json_int_t)m->version, "sessions", (json_int_t)m->sessions,
                     "operation", m->operation[0] ? json_string(m->operation) : json_null(),
                     "roles", roles_json(m));
}

/* copy - a JSON string of at most outlen-1 bytes; -1 when it is not one. */
static int
copy(json_t *v, char *out, size_t outlen, int optional)
{
    if (optional && (v == NULL || json_is_null(v))) {
        out[0] = '\0';
        return 0;
    }
    if (!json_is_string(v) || json_string_length(v) >= outlen ||
        strlen(json_string_value(v)) != json_string_length(v))
        return -1;
    memcpy(out, json_string_value(v), json_string_length(v) + 1);
    return 0;
}

static int
integer(json_t *v, int64_t *out)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = json_integer_value(v);
    return 0;
}

int
fleet_member_decode(const char *buf, size_t len, struct fleet_member *m, char *err,
                    size_t errlen)
{
    json_error_t je;
    int64_t n;
    const char *bad = NULL;

    if (len > FLEET_MEMBER_MAX_BYTES) {
        snprintf(err, errlen, "longer than %u bytes", FLEET_MEMBER_MAX_BYTES);
        return -1;
    }
    json_t *o = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(o)) {
        snprintf(err, errlen, "not a JSON object%s%s", o ? "" : ": ", o ? "" : je.text);
        json_decref(o);
        return -1;
    }
    if (copy(json_object_get(o, "id"), m->id, sizeof(m->id), 0) != 0 || m->id[0] == '\0')
        bad = "id";
    else if (copy(json_object_get(o, "admin"), m->admin, sizeof(m->admin), 1) != 0)
        bad = "admin";
    else if (copy(json_object_get(o, "operation"), m->operation, sizeof(m->operation), 1) != 0)
        bad = "operation";
    else if (integer(json_object_get(o, "pid"), &m->pid) != 0)
        bad = "pid";
    else if (integer(json_object_get(o, "started_ms"), &m->started_ms) != 0)
        bad = "started_ms";
    else if (integer(json_object_get(o, "heartbeat_ms"), &m->heartbeat_ms) != 0)
        bad = "heartbeat_ms";
    else if (integer(json_object_get(o, "epoch"), &n) != 0 || !(m->epoch = (uint64_t)n, 1))
        bad = "epoch";
    else if (integer(json_object_get(o, "version"), &n) != 0 || !(m->version = (uint64_t)n, 1))
        bad = "version";
    else if (integer(json_object_get(o, "sessions"), &n) != 0 || !(m->sessions = (uint64_t)n, 1))
        bad = "sessions";
    if (bad) {
        snprintf(err, errlen, "%s: missing or malformed", bad);
        json_decref(o);
        return -1;
    }
    json_t *roles = json_object_get(o, "roles");
    if (!json_is_array(roles) || json_array_size(roles) > FLEET_ROLES_MAX) {
        snprintf(err, errlen, "roles: expected an array of at most %d", FLEET_ROLES_MAX);
        json_decref(o);
        return -1;
    }
    for (size_t i = 0; i < json_array_size(roles); i++) {
        json_t *r = json_array_get(roles, i);
        struct fleet_role *fr = &m->roles[i];
        if (!json_is_object(r) ||
            copy(json_object_get(r, "listener"), fr->listener, sizeof(fr->listener), 0) != 0 ||
            copy(json_object_get(r, "primary"), fr->primary, sizeof(fr->primary), 0) != 0 ||
            copy(json_object_get(r, "shadow"), fr->shadow, sizeof(fr->shadow), 1) != 0 ||
            integer(json_object_get(r, "epoch"), &n) != 0) {
            snprintf(err, errlen, "roles[%zu]: missing or malformed", i);
            json_decref(o);
            return -1;
        }
        fr->epoch = (uint64_t)n;
        fr->paused = json_is_true(json_object_get(r, "writes_paused"));
        m->nroles = i + 1;
    }
    json_decref(o);
    return 0;
}

/* ---- log entries ---------------------------------------------------------- */

static const char *
field(const char *const *fields, const char *const *values, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(fields[i], name) == 0)
            return values[i];
    return NULL;
}

/* number - decimal digits only, at most 19 of them; -1 otherwise. */
static int
number(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    size_t i = 0;
    if (s == NULL || s[0] == '\0')
        return -1;
    for (; s[i]; i++) {
        if (s[i] < '0' || s[i] > '9' || i >= 19)
            return -1;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return 0;
}

int
fleet_entry_parse(const char *const *fields, const char *const *values, const size_t *lens,
                  size_t n, struct fleet_entry *e, char *err, size_t errlen)
{
    const char *type = field(fields, values, n, "type");
    const char *bad = NULL;
    uint64_t v;

    memset(e, 0, sizeof(*e));
    e->member = field(fields, values, n, "member");
    e->reason = field(fields, values, n, "reason");
    e->members = field(fields, values, n, "members");
    if (e->members == NULL)
        e->members = "";
    if (e->member == NULL)
        e->member = "";
    if (e->reason == NULL)
        e->reason = "";
    if (type == NULL) {
        snprintf(err, errlen, "type: missing");
        return -1;
    }
    if (strcmp(type, "state") == 0)
        e->type = FLEET_ENTRY_STATE;
    else if (strcmp(type, "op") == 0)
        e->type = FLEET_ENTRY_OP;
    else if (strcmp(type, "commit") == 0)
        e->type = FLEET_ENTRY_COMMIT;
    else if (strcmp(type, "abort") == 0)
        e->type = FLEET_ENTRY_ABORT;
    else if (strcmp(type, "report") == 0)
        e->type = FLEET_ENTRY_REPORT;
    else {
        snprintf(err, errlen, "type: unknown \"%.32s\"", type);
        return -1;
    }
    if (e->type != FLEET_ENTRY_STATE &&
        number(field(fields, values, n, "id"), &e->op_id) != 0)
        bad = "id";
    if (!bad && (e->type == FLEET_ENTRY_STATE || e->type == FLEET_ENTRY_COMMIT)) {
        if (number(field(fields, values, n, "version"), &e->version) != 0)
            bad = "version";
        for (size_t i = 0; !bad && i < n; i++)
            if (strcmp(fields[i], "doc") == 0) {
                e->doc = values[i];
                e->doc_len = lens[i];
            }
        if (!bad && (e->doc == NULL || e->doc_len > STATE_FILE_MAX_BYTES))
            bad = "doc";
    }
    if (!bad && e->type == FLEET_ENTRY_OP) {
        const char *kind = field(fields, values, n, "kind");
        if (kind == NULL || (strcmp(kind, "cutover") != 0 && strcmp(kind, "rollback") != 0))
            bad = "kind";
        else
            e->rollback = strcmp(kind, "rollback") == 0;
        if (!bad && (number(field(fields, values, n, "max_pause_ms"), &v) != 0 || v == 0 ||
                     v > 600000))
            bad = "max_pause_ms";
        if (!bad)
            e->max_pause_ms = (uint32_t)v;
        if (!bad && (number(field(fields, values, n, "force"), &v) != 0 || v > 1))
            bad = "force";
        if (!bad)
            e->force = (int)v;
        if (!bad)
            e->member = field(fields, values, n, "asked_by") ? field(fields, values, n,
                                                                     "asked_by")
                                                            : "";
    }
    if (!bad && e->type == FLEET_ENTRY_REPORT) {
        e->step = field(fields, values, n, "step");
        if (e->step == NULL)
            bad = "step";
    }
    if (bad) {
        snprintf(err, errlen, "%s entry: %s missing or malformed", type, bad);
        return -1;
    }
    return 0;
}

/* ---- operation records ---------------------------------------------------- */

json_t *
fleet_op_json(const char *const *fields, const char *const *values, size_t n)
{
    uint64_t id, v;
    char idtext[32];
    if (number(field(fields, values, n, "id"), &id) != 0)
        return NULL;
    snprintf(idtext, sizeof(idtext), "fleet-op-%llu", (unsigned long long)id);
    const char *kind = field(fields, values, n, "kind");
    const char *state = field(fields, values, n, "state");
    const char *asked = field(fields, values, n, "asked_by");
    const char *reason = field(fields, values, n, "reason");
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o}", "id", idtext, "type",
                          kind ? kind : "unknown", "state", state ? state : "unknown",
                          "asked_by", asked ? json_string(asked) : json_null(), "reason",
                          reason && reason[0] ? json_string(reason) : json_null());
    if (o == NULL)
        return NULL;
    if (number(field(fields, values, n, "epoch"), &v) == 0)
        json_object_set_new(o, "epoch", json_integer((json_int_t)v));
    if (number(field(fields, values, n, "max_pause_ms"), &v) == 0)
        json_object_set_new(o, "max_pause_ms", json_integer((json_int_t)v));
    if (number(field(fields, values, n, "created_ms"), &v) == 0)
        json_object_set_new(o, "created", state_file_time_json((int64_t)v));

    /* members in the order the operation listed them; then any other that reported */
    json_t *members = json_array();
    const char *list = field(fields, values, n, "members");
    char key[CONF_NAME_MAX + 8];
    size_t count = 0;
    for (const char *p = list ? list : ""; *p && count < FLEET_OP_MEMBERS_MAX;) {
        size_t len = strcspn(p, " ");
        if (len > 0 && len < CONF_NAME_MAX) {
            char mid[CONF_NAME_MAX];
            memcpy(mid, p, len);
            mid[len] = '\0';
            snprintf(key, sizeof(key), "step:%s", mid);
            const char *step = field(fields, values, n, key);
            snprintf(key, sizeof(key), "ms:%s", mid);
            json_t *m = json_pack("{s:s, s:s, s:b}", "id", mid, "step", step ? step : "waiting",
                                  "counted", 1);
            if (number(field(fields, values, n, key), &v) == 0)
                json_object_set_new(m, "ms", json_integer((json_int_t)v));
            json_array_append_new(members, m);
            count++;
        }
        p += len;
        p += strspn(p, " ");
    }
    for (size_t i = 0; i < n && count < FLEET_OP_MEMBERS_MAX; i++) {
        const char *mid = fields[i];
        if (strncmp(mid, "step:", 5) != 0)
            continue;
        mid += 5;
        int listed = 0;
        for (size_t k = 0; k < json_array_size(members); k++)
            if (strcmp(json_string_value(json_object_get(json_array_get(members, k), "id")),
                       mid) == 0)
                listed = 1;
        if (listed)
            continue;
        /* joined after the operation began: paused with the others, not waited for */
        json_t *m = json_pack("{s:s, s:s, s:b}", "id", mid, "step", values[i], "counted", 0);
        snprintf(key, sizeof(key), "ms:%s", mid);
        if (number(field(fields, values, n, key), &v) == 0)
            json_object_set_new(m, "ms", json_integer((json_int_t)v));
        json_array_append_new(members, m);
        count++;
    }
    json_object_set_new(o, "members", members);
    return o;
}

/* ---- the fleet's shadow report --------------------------------------------- */

/* sum_maps - dst[k] += src[k] for every integer of src (dst an object; missing keys start at 0). */
static void
sum_maps(json_t *dst, json_t *src)
{
    const char *k;
    json_t *v;
    if (!json_is_object(dst) || !json_is_object(src))
        return;
    json_object_foreach(src, k, v) {
        if (!json_is_integer(v))
            continue;
        json_t *d = json_object_get(dst, k);
        json_int_t base = json_is_integer(d) ? json_integer_value(d) : 0;
        json_object_set_new(dst, k, json_integer(base + json_integer_value(v)));
    }
}

/* sum_field - dst[k] += src[k], both integers (a map when they are objects). */
static void
sum_field(json_t *dst, json_t *src, const char *k)
{
    json_t *d = json_object_get(dst, k), *s = json_object_get(src, k);
    if (json_is_object(s)) {
        if (!json_is_object(d)) {
            d = json_object();
            json_object_set_new(dst, k, d);
        }
        sum_maps(d, s);
    } else if (json_is_integer(s)) {
        json_int_t base = json_is_integer(d) ? json_integer_value(d) : 0;
        json_object_set_new(dst, k, json_integer(base + json_integer_value(s)));
    }
}

/* keep - dst[k] becomes src[k] when src's is a number and worse (higher, or lower when low). */
static void
keep(json_t *dst, json_t *src, const char *k, int low)
{
    json_t *d = json_object_get(dst, k), *s = json_object_get(src, k);
    if (!json_is_number(s))
        return;
    if (!json_is_number(d) || (low ? json_number_value(s) < json_number_value(d)
                                   : json_number_value(s) > json_number_value(d)))
        json_object_set(dst, k, s);
}

static void
add_member(json_t *o, const char *member)
{
    json_t *list = json_object_get(o, "members");
    size_t i;
    json_t *v;
    if (!json_is_array(list)) {
        list = json_array();
        json_object_set_new(o, "members", list);
    }
    json_array_foreach(list, i, v) {
        if (json_is_string(v) && strcmp(json_string_value(v), member) == 0)
            return;
    }
    json_array_append_new(list, json_string(member));
}

static const char *const listener_sums[] = {"outcomes", "window_outcomes", "noise",
                                            "window_noise", "dropped", "detached_sessions",
                                            "statements_evicted", "statements_undescribed"};
static const char *const listener_worst[] = {"lag_seconds", "performance_ratio",
                                             "primary_p50_ms", "shadow_p50_ms"};
static const char *const statement_worst[] = {"primary_p50_ms", "shadow_p50_ms",
                                              "primary_p99_ms", "shadow_p99_ms", "latency_ratio"};

static void
merge_listener(json_t *into, json_t *l, const char *member)
{
    for (size_t i = 0; i < sizeof(listener_sums) / sizeof(listener_sums[0]); i++)
        sum_field(into, l, listener_sums[i]);
    for (size_t i = 0; i < sizeof(listener_worst) / sizeof(listener_worst[0]); i++)
        keep(into, l, listener_worst[i], 0);
    keep(into, l, "validation_success_ratio", 1);
    if (json_is_true(json_object_get(l, "diverged")) &&
        !json_is_true(json_object_get(into, "diverged"))) {
        json_object_set_new(into, "diverged", json_true());
        json_t *why = json_object_get(l, "diverged_reason");
        if (json_is_object(why)) {
            json_t *copy = json_deep_copy(why);
            json_object_set_new(copy, "member", json_string(member));
            json_object_set_new(into, "diverged_reason", copy);
        }
    }
    add_member(into, member);
}

static void
merge_statement(json_t *into, json_t *st, const char *member)
{
    sum_field(into, st, "count");
    sum_field(into, st, "noise");
    for (size_t i = 0; i < sizeof(statement_worst) / sizeof(statement_worst[0]); i++)
        keep(into, st, statement_worst[i], 0);
    add_member(into, member);
}

/*
 * merge_list - the objects of every report's list NAME merged into one per
 * listener (by_fingerprint 0: by "name") or per listener and fingerprint.
 */
static json_t *
merge_list(json_t *const *reports, const char *const *members, size_t n, const char *name,
           void (*merge)(json_t *, json_t *, const char *), int by_fingerprint)
{
    json_t *out = json_array(), *index = json_object();
    char key[CONF_NAME_MAX + 64];
    for (size_t r = 0; r < n; r++) {
        size_t i;
        json_t *o;
        if (!json_is_object(reports[r]))
            continue;
        json_array_foreach(json_object_get(reports[r], name), i, o) {
            const char *a = json_string_value(json_object_get(o, by_fingerprint ? "listener"
                                                                                : "name"));
            const char *b = by_fingerprint ? json_string_value(json_object_get(o, "fingerprint"))
                                           : "";
            if (!json_is_object(o) || a == NULL || b == NULL)
                continue;
            snprintf(key, sizeof(key), "%.63s\x1f%.40s", a, b);
            json_t *into = json_object_get(index, key);
            if (into == NULL) {
                /* the first member's copy, its counts taken out: merge() adds everyone's */
                into = json_deep_copy(o);
                for (size_t k = 0; k < sizeof(listener_sums) / sizeof(listener_sums[0]); k++)
                    json_object_del(into, listener_sums[k]);
                json_object_del(into, "count");
                json_object_del(into, "noise");
                json_object_del(into, "members");
                if (!by_fingerprint) {
                    json_object_set_new(into, "diverged", json_false());
                    json_object_set_new(into, "diverged_reason", json_null());
                }
                json_object_set(index, key, into);
                json_array_append_new(out, into);
            }
            merge(into, o, members[r]);
        }
    }
    json_decref(index);
    return out;
}

static json_int_t
count_of(json_t *st, const char *outcome)
{
    json_t *v = json_object_get(json_object_get(st, "count"), outcome);
    return json_is_integer(v) ? json_integer_value(v) : 0;
}

static int
by_mismatches(const void *a, const void *b)
{
    json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    json_int_t mx = count_of(x, "mismatch"), my = count_of(y, "mismatch");
    if (mx != my)
        return mx > my ? -1 : 1;
    json_int_t tx = count_of(x, "total"), ty = count_of(y, "total");
    return tx > ty ? -1 : tx < ty;
}

static int
by_ratio(const void *a, const void *b)
{
    json_t *x = json_object_get(*(json_t *const *)a, "latency_ratio");
    json_t *y = json_object_get(*(json_t *const *)b, "latency_ratio");
    double rx = json_is_number(x) ? json_number_value(x) : -1;
    double ry = json_is_number(y) ? json_number_value(y) : -1;
    return rx > ry ? -1 : rx < ry;
}

static int
by_time_desc(const void *a, const void *b)
{
    const char *x = json_string_value(json_object_get(*(json_t *const *)a, "time"));
    const char *y = json_string_value(json_object_get(*(json_t *const *)b, "time"));
    return -strcmp(x ? x : "", y ? y : "");
}

/* sorted - list sorted by cmp, the first top_n (0: all); list is taken. */
static json_t *
sorted(json_t *list, int (*cmp)(const void *, const void *), size_t top_n)
{
    size_t n = json_array_size(list);
    json_t **items = calloc(n ? n : 1, sizeof(*items));
    json_t *out = json_array();
    if (items == NULL || out == NULL) {
        free(items);
        json_decref(out);
        json_decref(list);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        items[i] = json_array_get(list, i);
    qsort(items, n, sizeof(*items), cmp);
    for (size_t i = 0; i < n && (top_n == 0 || i < top_n); i++)
        json_array_append(out, items[i]);
    free(items);
    json_decref(list);
    return out;
}

json_t *
fleet_report_merge(json_t *const *reports, const char *const *members, size_t n, size_t top_n,
                   const char *generated_at)
{
    json_t *window = NULL, *samples = json_array();
    for (size_t r = 0; r < n && window == NULL; r++)
        if (json_is_object(reports[r]))
            window = json_object_get(reports[r], "window_seconds");
    for (size_t r = 0; r < n; r++) {
        size_t i;
        json_t *s;
        if (!json_is_object(reports[r]))
            continue;
        json_array_foreach(json_object_get(reports[r], "samples"), i, s) {
            if (!json_is_object(s))
                continue;
            json_t *copy = json_deep_copy(s);
            json_object_set_new(copy, "member", json_string(members[r]));
            json_array_append_new(samples, copy);
        }
    }
    json_t *statements = merge_list(reports, members, n, "statements", merge_statement, 1);
    json_t *slowest = merge_list(reports, members, n, "slowest", merge_statement, 1);
    json_t *listeners = merge_list(reports, members, n, "listeners", merge_listener, 0);
    json_t *names = json_array();
    for (size_t r = 0; r < n; r++)
        if (json_is_object(reports[r]))
            json_array_append_new(names, json_string(members[r]));
    return json_pack("{s:s, s:s, s:O*, s:o, s:o*, s:o*, s:o*, s:o*}", "scope", "fleet",
                     "generated_at", generated_at, "window_seconds", window, "members", names,
                     "listeners", listeners, "statements",
                     sorted(statements, by_mismatches, top_n), "slowest",
                     sorted(slowest, by_ratio, top_n), "samples",
                     sorted(samples, by_time_desc, 0));
}
