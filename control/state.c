/*
 * state.c - the state file on the main thread (see state.h).
 */
#include "control/state.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "control/control.h"
#include "control/replica.h"
#include "control/state_file.h"
#include "metrics/log.h"
#include "metrics/metric.h"
#include "metrics/shadow.h"

#define RETRY_MS 5000
#define DIVERGED_POLL_MS 500 /* how soon a lost write noted by a worker reaches the file */

struct state {
    struct event *write_ev; /* active: write now; pending with a timeout: retry */
    const struct runtime *rt;
    struct cutover *cutover;
    struct guards *guards;
    struct event *diverged_ev; /* persistent: the workers' diverged flags, written when they change */
    uint64_t diverged_written;  /* diverged_signature() of the last document built */
    char path[CONF_PATH_MAX];   /* "" when no state file */
    int failing;                /* the last write failed (log the recovery) */
    int running;                /* 0 only for the last write of a clean stop */
};

static int64_t
wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the file ------------------------------------------------------------- */

/*
 * read_all - the file's bytes (a new buffer) in *buf.  0; 1 when it does
 * not exist; -1 with err otherwise.
 */
static int
read_all(const char *path, char **buf, size_t *len, char *err, size_t errlen)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 1;
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return -1;
    }
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "not a regular file");
        goto out_close;
    }
    if ((uint64_t)st.st_size > STATE_FILE_MAX_BYTES) {
        snprintf(err, errlen, "longer than %u bytes", STATE_FILE_MAX_BYTES);
        goto out_close;
    }
    *buf = malloc((size_t)st.st_size + 1);
    if (*buf == NULL) {
        snprintf(err, errlen, "out of memory");
        goto out_close;
    }
    *len = 0;
    while (*len < (size_t)st.st_size) {
        ssize_t n = read(fd, *buf + *len, (size_t)st.st_size - *len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "cannot read: %s", n < 0 ? strerror(errno) : "cut short");
            goto out_free;
        }
        *len += (size_t)n;
    }
    close(fd);
    return 0;

out_free:
    free(*buf);
    *buf = NULL;
out_close:
    close(fd);
    return -1;
}

/* write_atomic - PATH.tmp, fsync, rename over PATH, fsync the directory. */
static int
write_atomic(const char *path, const char *text, char *err, size_t errlen)
{
    char tmp[CONF_PATH_MAX + 8], dir[CONF_PATH_MAX];
    size_t len = strlen(text), done = 0;

    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "cannot create \"%s\": %s", tmp, strerror(errno));
        return -1;
    }
    while (done < len) {
        ssize_t n = write(fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            snprintf(err, errlen, "cannot write \"%s\": %s", tmp, strerror(errno));
            goto out_unlink;
        }
        done += (size_t)n;
    }
    if (fsync(fd) != 0) {
        snprintf(err, errlen, "cannot fsync \"%s\": %s", tmp, strerror(errno));
        goto out_unlink;
    }
    if (close(fd) != 0) {
        fd = -1;
        snprintf(err, errlen, "cannot close \"%s\": %s", tmp, strerror(errno));
        goto out_unlink;
    }
    fd = -1;
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot rename \"%s\": %s", tmp, strerror(errno));
        goto out_unlink;
    }
    /* the rename is durable once the directory is */
    snprintf(dir, sizeof(dir), "%s", path);
    int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0 || fsync(dfd) != 0) {
        snprintf(err, errlen, "cannot fsync the directory of \"%s\": %s", path, strerror(errno));
        if (dfd >= 0)
            close(dfd);
        return -1;
    }
    close(dfd);
    return 0;

out_unlink:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
    return -1;
}

/* read_doc - 0 with doc; 1 when there is no file yet; -1 with err ("message", no path). */
static int
read_doc(const char *path, struct state_doc *doc, char *err, size_t errlen)
{
    char *buf = NULL;
    size_t len = 0;
    int rc = read_all(path, &buf, &len, err, errlen);
    if (rc != 0)
        return rc;
    rc = state_file_decode(buf, len, doc, err, errlen);
    free(buf);
    return rc;
}

/* ---- the document of the running state ------------------------------------ */

static int
flipping(const int *slots, int n, int slot)
{
    for (int i = 0; i < n; i++)
        if (slots[i] == slot)
            return 1;
    return 0;
}

static void
put_weight(struct state_weight *w, size_t *n, const struct rt_listener *l,
           const struct rt_backend *b)
{
    if (b == NULL || *n == STATE_WEIGHTS_MAX)
        return;
    snprintf(w[*n].backend, sizeof(w[*n].backend), "%s", b->conf->name);
    w[(*n)++].weight = (uint32_t)control_weight(l->metric_slot, b->metric_slot);
}

/*
 * diverged_signature - changes whenever a listener becomes diverged, notes
 * another lost write, or is cleared: the workers set the flags, the main
 * thread polls this to know the file is behind.
 */
static uint64_t
diverged_signature(const struct runtime *rt)
{
    uint64_t sig = 0;
    for (size_t i = 0; i < rt->nlisteners; i++) {
        int slot = rt->listeners[i].metric_slot;
        struct shadow_divergence dv;
        shadow_divergence(slot, &dv);
        sig = sig * 1000003u + (uint64_t)shadow_diverged(slot) * (dv.count + 1);
    }
    return sig;
}

static void
put_diverged(struct state_listener *sl, const struct rt_listener *l)
{
    struct shadow_divergence dv;
    if (l->shadow == NULL || !shadow_diverged(l->metric_slot))
        return;
    shadow_divergence(l->metric_slot, &dv);
    sl->diverged = 1;
    snprintf(sl->diverged_reason, sizeof(sl->diverged_reason), "%s", dv.reason);
    snprintf(sl->diverged_statement, sizeof(sl->diverged_statement), "%s", dv.statement);
}

/*
 * build - the running state as a document; the listeners of flip[] as
 * they will be once flipped to target (state.c's commit).
 */
static int
build(const struct state *s, const int *flip, int nflip, int target, struct state_doc *doc)
{
    size_t maxrecords = (s->rt->nlisteners + 1) * STATE_GUARDS_MAX;
    struct guard_record *records = malloc(maxrecords * sizeof(*records));
    size_t nrecords = records ? guards_records(s->guards, records, maxrecords) : 0;

    memset(doc, 0, sizeof(*doc));
    if (records == NULL)
        return -1;
    doc->written_ms = wall_ms();
    for (size_t i = 0; i < s->rt->nlisteners; i++) {
        const struct rt_listener *l = &s->rt->listeners[i];
        const struct conf_listener *cl = l->conf;
        struct state_listener *sl = state_doc_add_listener(doc, cl->name);
        if (sl == NULL) {
            state_doc_release(doc);
            free(records);
            return -1;
        }
        int swapped = control_roles_swapped(l->metric_slot);
        sl->epoch = control_epoch(l->metric_slot);
        if (flipping(flip, nflip, l->metric_slot)) {
            swapped = target;
            sl->epoch++;
        }
        swapped = swapped && l->shadow != NULL;
        const struct rt_backend *primary = swapped ? l->shadow : l->primary;
        const struct rt_backend *shadow = swapped ? l->primary : l->shadow;
        snprintf(sl->primary, sizeof(sl->primary), "%s", primary->conf->name);
        snprintf(sl->shadow, sizeof(sl->shadow), "%s", shadow ? shadow->conf->name : "");
        sl->mode = (enum conf_mode)control_mode(l->metric_slot, (int)cl->mode);
        sl->configured_mode = cl->mode;
        put_weight(sl->weights, &sl->nweights, l, l->primary);
        put_weight(sl->weights, &sl->nweights, l, l->shadow);
        for (size_t k = 0; k < cl->nread_weights && k < STATE_WEIGHTS_MAX; k++) {
            struct state_weight *w = &sl->configured_weights[sl->nconfigured_weights++];
            snprintf(w->backend, sizeof(w->backend), "%s",
                     s->rt->conf->backends[cl->read_weights[k].backend].name);
            w->weight = cl->read_weights[k].weight;
        }
        for (size_t k = 0; k < nrecords && sl->nguards < STATE_GUARDS_MAX; k++) {
            const struct guard_record *r = &records[k];
            if (r->listener_slot != l->metric_slot)
                continue;
            struct state_guard *g = &sl->guards[sl->nguards++];
            snprintf(g->name, sizeof(g->name), "%s", r->name);
            g->trips = r->trips;
            g->last_trip_ms = r->last_trip_ms;
            g->cooldown_until_ms = r->cooldown_until_ms;
            snprintf(g->reason, sizeof(g->reason), "%s", r->reason);
        }
        put_diverged(sl, l);
    }
    doc->running = s->running;
    doc->nops = cutover_records(s->cutover, doc->ops, STATE_OPS_MAX, &doc->next_op_id);
    for (size_t k = 0; nflip > 0 && k < doc->nops; k++) {
        /* this write is the flip's commit point: a restart that reads it finds the new
         * roles, so the operation that flips them is done, whatever happens after */
        struct state_op *op = &doc->ops[k];
        if (op->state != STATE_OP_IN_PROGRESS)
            continue;
        op->state = STATE_OP_COMPLETED;
        op->finished_ms = doc->written_ms;
        snprintf(op->reason, sizeof(op->reason), "committed: the new roles were recorded");
    }
    free(records);
    return 0;
}

/* save - build and write; 0, or -1 logged, counted and with err. */
static int
save(struct state *s, const int *flip, int nflip, int target, char *err, size_t errlen)
{
    struct state_doc doc;
    char *text = NULL;
    int rc = -1;

    s->diverged_written = diverged_signature(s->rt); /* before build: a later change is seen */
    if (build(s, flip, nflip, target, &doc) != 0 || (text = state_file_encode(&doc)) == NULL)
        snprintf(err, errlen, "out of memory");
    else
        rc = write_atomic(s->path, text, err, errlen);
    free(text);
    state_doc_release(&doc);
    metric_count_state_write(rc == 0);
    if (rc != 0) {
        log_error("state file \"%s\" not written: %s", s->path, err);
        s->failing = 1;
    } else if (s->failing) {
        log_info("state file \"%s\" written again", s->path);
        s->failing = 0;
    }
    return rc;
}

static void
on_write(evutil_socket_t fd, short what, void *arg)
{
    struct state *s = arg;
    char err[300];
    (void)fd;
    (void)what;
    if (s->path[0] == '\0')
        return;
    if (save(s, NULL, 0, 0, err, sizeof(err)) != 0) {
        struct timeval tv = {.tv_sec = RETRY_MS / 1000, .tv_usec = 0};
        event_add(s->write_ev, &tv);
    }
}

/* Every DIVERGED_POLL_MS: a worker noted a lost write (or it was cleared) since the last write. */
static void
on_diverged_poll(evutil_socket_t fd, short what, void *arg)
{
    struct state *s = arg;
    (void)fd;
    (void)what;
    if (s->path[0] && diverged_signature(s->rt) != s->diverged_written)
        event_active(s->write_ev, 0, 0);
}

/* control_changed()'s listener: write once the current callback is done (changes coalesce). */
static void
on_change(void *arg)
{
    struct state *s = arg;
    if (s->path[0])
        event_active(s->write_ev, 0, 0);
}

/* cutover_on_commit()'s hook: the new roles are on disk before anyone uses them. */
static int
commit(void *arg, const int *slots, int nslots, int target, char *err, size_t errlen)
{
    struct state *s = arg;
    char why[300];
    if (s->path[0] == '\0')
        return 0;
    if (save(s, slots, nslots, target, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "the state file \"%s\" could not record the new roles (%s)",
                 s->path, why);
        return -1;
    }
    return 0;
}

/* ---- start ---------------------------------------------------------------- */

static const struct rt_backend *
backend_named(const struct runtime *rt, const char *name)
{
    for (size_t i = 0; i < rt->nbackends; i++)
        if (strcmp(rt->backends[i].conf->name, name) == 0)
            return &rt->backends[i];
    return NULL;
}

/*
 * apply - what plan says, to the control state of rt's listeners.  roles:
 * 0 never changes roles and epochs; 1 takes them where the document's
 * epoch is higher; 2 takes them always (start).  Returns how many
 * listeners changed roles.
 */
static int
apply_plan(struct state *s, const struct state_doc *doc, const struct state_plan_listener *plan,
           int roles, const char *from)
{
    int flipped = 0;
    for (size_t i = 0; i < s->rt->nlisteners; i++) {
        const struct rt_listener *l = &s->rt->listeners[i];
        const struct state_plan_listener *p = &plan[i];
        const struct state_listener *r = p->recorded;
        if (r == NULL || l->metric_slot < 0)
            continue;
        if (roles == 2 || (roles == 1 && p->epoch > control_epoch(l->metric_slot))) {
            if (control_roles_swapped(l->metric_slot) != p->swapped) {
                flipped++;
                log_warn("listener \"%s\": primary \"%s\", shadow \"%s\", epoch %llu (%s)",
                         l->conf->name, r->primary, r->shadow[0] ? r->shadow : "(none)",
                         (unsigned long long)p->epoch, from);
            }
            control_set_epoch(l->metric_slot, p->epoch);
            control_set_roles_swapped(l->metric_slot, p->swapped);
        }
        if (p->restore_mode)
            control_set_mode(l->metric_slot, (int)r->mode);
        for (size_t k = 0; p->restore_weights && k < r->nweights; k++) {
            const struct rt_backend *b = backend_named(s->rt, r->weights[k].backend);
            if (b != NULL)
                control_set_weight(l->metric_slot, b->metric_slot, (int)r->weights[k].weight);
        }
        for (size_t k = 0; k < r->nguards; k++) {
            struct guard_record g = {.listener_slot = l->metric_slot,
                                     .trips = r->guards[k].trips,
                                     .last_trip_ms = r->guards[k].last_trip_ms,
                                     .cooldown_until_ms = r->guards[k].cooldown_until_ms};
            snprintf(g.name, sizeof(g.name), "%s", r->guards[k].name);
            snprintf(g.reason, sizeof(g.reason), "%s", r->guards[k].reason);
            if (guards_restore(s->guards, &g) != 0 && roles == 2)
                log_info("%s: guard \"%s\" of listener \"%s\" is no longer "
                         "configured: its trips are forgotten",
                         from, g.name, l->conf->name);
        }
        if (roles == 2) {
            if (p->note[0])
                log_warn("%s: %s", from, p->note);
            log_info("listener \"%s\": primary \"%s\", shadow \"%s\", epoch %llu (%s)",
                     l->conf->name, r->primary, r->shadow[0] ? r->shadow : "(none)",
                     (unsigned long long)p->epoch, from);
        }
    }
    return flipped;
}

#define UNCLEAN_STOP_REASON "tandem stopped without draining"
#define UNCLEAN_STOP_TEXT                                                                  \
    "the previous tandem was killed or crashed: mirrored writes in flight may never have " \
    "reached the shadow"

/*
 * restore_diverged - a shadow that lost writes before the restart still
 * misses them; and after a stop that was not clean (the file says running)
 * any listener that mirrored writes may have lost those in flight.  Start
 * only: a fleet document never carries a member's divergence.
 */
static void
restore_diverged(struct state *s, const struct state_doc *doc,
                 const struct state_plan_listener *plan)
{
    for (size_t i = 0; i < s->rt->nlisteners; i++) {
        const struct rt_listener *l = &s->rt->listeners[i];
        const struct state_listener *r = plan[i].recorded;
        if (r == NULL || l->shadow == NULL || l->metric_slot < 0)
            continue;
        if (r->diverged) {
            shadow_note_divergence(l->metric_slot, r->diverged_reason, r->diverged_statement,
                                   strlen(r->diverged_statement));
            log_warn("listener \"%s\": the shadow is still diverged (%s%s%s), as the state file "
                     "says: resynchronize it, then POST /api/shadow/resynced",
                     l->conf->name, r->diverged_reason[0] ? r->diverged_reason : "a lost write",
                     r->diverged_statement[0] ? ": " : "", r->diverged_statement);
        } else if (doc->running && r->mode != CONF_MODE_PASSTHROUGH &&
                   !replica_enabled(l->metric_slot)) {
            shadow_note_divergence(l->metric_slot, UNCLEAN_STOP_REASON, UNCLEAN_STOP_TEXT,
                                   strlen(UNCLEAN_STOP_TEXT));
            log_warn("listener \"%s\": %s; the shadow \"%s\" is marked diverged until it is "
                     "resynchronized (then POST /api/shadow/resynced) or a cutover is forced",
                     l->conf->name, UNCLEAN_STOP_TEXT, r->shadow);
        }
    }
}

static void
apply(struct state *s, const struct state_doc *doc, const struct state_plan_listener *plan)
{
    char from[CONF_PATH_MAX + 16];
    snprintf(from, sizeof(from), "state file \"%s\"", s->path);
    apply_plan(s, doc, plan, 2, from);
    restore_diverged(s, doc, plan);
    cutover_restore(s->cutover, doc->ops, doc->nops, doc->next_op_id);
}

int
state_build_doc(const struct state *s, const int *flip, int nflip, int target,
                struct state_doc *doc)
{
    if (build(s, flip, nflip, target, doc) != 0)
        return -1;
    doc->nops = 0;
    doc->next_op_id = 1;
    return 0;
}

int
state_apply_doc(struct state *s, const struct state_doc *doc, const char *from, char *err,
                size_t errlen)
{
    struct state_plan_listener *plan = calloc(s->rt->nlisteners + 1, sizeof(*plan));
    if (plan == NULL) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (state_file_plan(doc, s->rt->conf, plan, err, errlen) != 0) {
        free(plan);
        return -1;
    }
    int flipped = apply_plan(s, doc, plan, 1, from);
    free(plan);
    return flipped;
}

uint64_t
state_epoch_sum(const struct state_doc *doc)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < doc->nlisteners; i++)
        sum += doc->listeners[i].epoch;
    return sum;
}

/* load - read, plan and apply the file; -1 (logged) when tandem must not start. */
static int
load(struct state *s)
{
    struct state_doc doc;
    char err[600];
    struct state_plan_listener *plan = calloc(s->rt->nlisteners + 1, sizeof(*plan));
    int rc = -1;

    if (plan == NULL)
        return -1;
    int found = read_doc(s->path, &doc, err, sizeof(err));
    if (found == 1) {
        log_info("state file \"%s\" does not exist yet: roles as configured", s->path);
        rc = 0;
        goto out_plan;
    }
    if (found < 0) {
        log_error("%s: %s; refusing to start (fix or remove the file, knowing that without it "
                  "the configuration's primary answers)",
                  s->path, err);
        goto out_plan;
    }
    if (state_file_plan(&doc, s->rt->conf, plan, err, sizeof(err)) != 0) {
        log_error("%s: %s; refusing to start", s->path, err);
        goto out_doc;
    }
    apply(s, &doc, plan);
    rc = 0;
out_doc:
    state_doc_release(&doc);
out_plan:
    free(plan);
    return rc;
}

struct state *
state_open(struct event_base *base, const struct runtime *rt, struct cutover *c, struct guards *g)
{
    struct state *s = calloc(1, sizeof(*s));
    char err[300];
    if (s == NULL)
        return NULL;
    s->rt = rt;
    s->cutover = c;
    s->guards = g;
    s->running = 1;
    snprintf(s->path, sizeof(s->path), "%s", rt->conf->control.state_file);
    s->write_ev = event_new(base, -1, 0, on_write, s);
    s->diverged_ev = event_new(base, -1, EV_PERSIST, on_diverged_poll, s);
    if (s->write_ev == NULL || s->diverged_ev == NULL)
        goto out_free;
    if (s->path[0]) {
        if (load(s) != 0)
            goto out_free;
        save(s, NULL, 0, 0, err, sizeof(err)); /* a failure is logged and retried */
        if (s->failing) {
            struct timeval tv = {.tv_sec = RETRY_MS / 1000, .tv_usec = 0};
            event_add(s->write_ev, &tv);
        }
    }
    struct timeval poll = {.tv_sec = 0, .tv_usec = DIVERGED_POLL_MS * 1000};
    event_add(s->diverged_ev, &poll);
    control_on_change(on_change, s);
    cutover_on_commit(c, commit, s);
    return s;

out_free:
    if (s->write_ev)
        event_free(s->write_ev);
    if (s->diverged_ev)
        event_free(s->diverged_ev);
    free(s);
    return NULL;
}

/* Who answers and who is mirrored on l, under roles_swapped = swapped. */
static void
roles_of(const struct rt_listener *l, int swapped, const char **primary, const char **shadow)
{
    swapped = swapped && l->shadow != NULL;
    *primary = (swapped ? l->shadow : l->primary)->conf->name;
    *shadow = swapped ? l->primary->conf->name : l->shadow ? l->shadow->conf->name : "";
}

int
state_set_runtime(struct state *s, const struct runtime *rt)
{
    for (size_t i = 0; i < rt->nlisteners; i++) {
        const struct rt_listener *l = &rt->listeners[i];
        int swapped = control_roles_swapped(l->metric_slot);
        if (!swapped)
            continue;
        for (size_t k = 0; k < s->rt->nlisteners; k++) {
            const struct rt_listener *old = &s->rt->listeners[k];
            const char *p0, *s0, *p1, *s1;
            if (strcmp(old->conf->name, l->conf->name) != 0)
                continue;
            roles_of(old, swapped, &p0, &s0);
            roles_of(l, swapped, &p1, &s1);
            if (strcmp(p0, p1) == 0)
                continue; /* another shadow, or none: the operator's to change */
            log_error("reload refused: listener \"%s\" is cut over (primary \"%s\", shadow "
                      "\"%s\", epoch %llu) and the new file would make \"%s\" its primary; a "
                      "reload never changes roles: restart to take the file's primary/shadow%s",
                      l->conf->name, p0, s0[0] ? s0 : "(none)",
                      (unsigned long long)control_epoch(l->metric_slot), p1,
                      s->path[0] ? " (the state file keeps the roles by name)" : "");
            return -1;
        }
    }
    if (strcmp(s->path, rt->conf->control.state_file) != 0)
        log_info("state file: now \"%s\" (was \"%s\")", rt->conf->control.state_file, s->path);
    s->rt = rt;
    snprintf(s->path, sizeof(s->path), "%s", rt->conf->control.state_file);
    return 0;
}

void
state_stopped(struct state *s, int clean)
{
    char err[300];
    if (s == NULL || s->path[0] == '\0')
        return;
    s->running = !clean;
    save(s, NULL, 0, 0, err, sizeof(err)); /* a failure is logged; the next start is cautious */
}

void
state_free(struct state *s)
{
    if (s == NULL)
        return;
    control_off_change(on_change, s);
    event_free(s->write_ev);
    event_free(s->diverged_ev);
    free(s);
}

/* ---- tandem -t ------------------------------------------------------------ */

int
state_check(const struct conf *conf, FILE *out, FILE *err)
{
    const char *path = conf->control.state_file;
    struct state_doc doc;
    char why[600];
    int rc = -1;

    if (path[0] == '\0')
        return 0;
    struct state_plan_listener *plan = calloc(conf->nlisteners + 1, sizeof(*plan));
    if (plan == NULL)
        return -1;
    int found = read_doc(path, &doc, why, sizeof(why));
    if (found == 1) {
        fprintf(out, "%s: no state file yet: a start takes the configuration's roles\n", path);
        rc = 0;
        goto out_plan;
    }
    if (found < 0) {
        fprintf(err, "%s: %s: tandem would refuse to start\n", path, why);
        goto out_plan;
    }
    if (state_file_plan(&doc, conf, plan, why, sizeof(why)) != 0) {
        fprintf(err, "%s: %s: tandem would refuse to start\n", path, why);
        goto out_doc;
    }
    for (size_t i = 0; i < conf->nlisteners; i++) {
        const struct state_listener *r = plan[i].recorded;
        if (plan[i].note[0])
            fprintf(out, "%s: %s\n", path, plan[i].note);
        if (r == NULL || r->shadow[0] == '\0')
            continue;
        if (r->diverged)
            fprintf(out, "%s: listener \"%s\": the shadow \"%s\" is diverged (%s): a cutover "
                    "or rollback onto it is refused until POST /api/shadow/resynced\n",
                    path, r->name, r->shadow, r->diverged_reason[0] ? r->diverged_reason : "a lost write");
        else if (doc.running && r->mode != CONF_MODE_PASSTHROUGH &&
                 conf->listeners[i].shadow_source != CONF_SHADOW_REPLICATION)
            fprintf(out, "%s: listener \"%s\": the last tandem did not stop cleanly: a start "
                    "marks the shadow \"%s\" diverged (%s)\n",
                    path, r->name, r->shadow, UNCLEAN_STOP_REASON);
    }
    rc = 0;
out_doc:
    state_doc_release(&doc);
out_plan:
    free(plan);
    return rc;
}
