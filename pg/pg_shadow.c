/*
 * pg_shadow.c - the shadow side of a PostgreSQL session: mirror request
 * units to the shadow, digest both answers, compare, record.
 *
 * The shadow can never hurt the client.  Nothing here blocks, nothing here
 * writes to the client or the primary, and every failure ends in detach():
 * the shadow connection is dropped, the units it owed are counted with an
 * outcome (dropped, shadow_error, shadow_timeout), and the session goes on
 * with the primary alone.  At its next idle point the session tries again,
 * with a growing back-off, on a new connection that first replays the
 * session state tandem recorded (SET, PREPARE ...).
 *
 * When tandem authenticated the client (an auth source) it logs in to the
 * shadow as the client itself, with the ClientKey (pg_shadow_login.c).
 * Otherwise, and when the shadow refuses that, logging in is libpq's job
 * (PQconnectStartParams and PQconnectPoll, non-blocking): it speaks every
 * authentication method and TLS mode, with the credentials configured for
 * the shadow backend, since a client's SCRAM exchange with the primary
 * cannot be replayed.  Once logged
 * in, tandem takes the socket (and libpq's SSL object) over and speaks the
 * protocol itself; libpq only closes them at the end (PQfinish, made
 * non-blocking first so a stalled shadow cannot stall the worker).
 */
#include <errno.h>
#include <fcntl.h>
#include <event2/buffer.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "metrics/metric.h"
#include "metrics/shadow.h"
#include "protocol/pgdesc.h"
#include "protocol/pgw.h"
#include "control/control.h"
#include "metrics/log.h"
#include "pg/pg_session_int.h"
#include "control/runtime.h"
#include "engine/worker.h"

/* A message the digest reads must be whole in memory; larger ones are not compared. */
#define DIGEST_MAX_MESSAGE (1u << 20)
/* The statement text kept for the report. */
#define UNIT_SQL_MAX 8192
/* A compared read's messages kept to run it again (pg_recheck.c). */
#define RECHECK_CALL_MAX (16 * 1024)
/* An ErrorResponse of the primary read to learn whether it refuses a held unit. */
#define REFUSAL_MAX_MESSAGE (64 * 1024)
/* Session state replayed on a new shadow connection. */
#define STATE_LOG_MAX_BYTES (64 * 1024)
#define STATE_LOG_MAX_UNITS 256

#define slog(s, level, ...) log_at(level, (s)->base.id, (s)->base.peer, __VA_ARGS__)

static const struct conf_mirror *
mirror_conf(const struct pg_session *s)
{
    return &s->base.lis->conf->mirror;
}

/* ------------------------------------------------------------------ */
/* Units.                                                              */

/*
 * Every mirrored statement takes a unit and, when compared, a comparison
 * block (two digests and their samples, about 2 KB): a worker keeps up to
 * UNIT_POOL_MAX of each that units left behind, for the next ones, rather
 * than a malloc and a free of each per statement.  (Units live until the
 * shadow has answered too: a shadow a few statements behind keeps tens of
 * them per busy worker.  At most about 160 KB stay with an idle worker.)
 * The pool is made by the first unit that wants one and freed with the
 * worker (its job's cancel); a unit that ends when there is no pool (the
 * worker going away) is freed.
 */
#define UNIT_POOL_MAX 64

struct unit_pool {
    struct worker_job job; /* first: the worker frees the pool through it */
    struct worker *w;
    struct pg_unit *units; /* spare units, through base.next */
    struct pg_compare *cmps[UNIT_POOL_MAX];
    unsigned nunits, ncmps;
};

static void
unit_pool_cancel(struct worker_job *job)
{
    struct unit_pool *p = (struct unit_pool *)job;
    worker_job_remove(p->w, job);
    while (p->units) {
        struct pg_unit *u = p->units;
        p->units = pg_unit_of(u->base.next);
        free(u);
    }
    while (p->ncmps > 0)
        free(p->cmps[--p->ncmps]);
    p->w->pg_unit_pool = NULL;
    free(p);
}

/* The worker's pool, made now if need be (NULL: out of memory, go without). */
static struct unit_pool *
unit_pool_of(struct worker *w)
{
    struct unit_pool *p = w->pg_unit_pool;
    if (p != NULL || (p = calloc(1, sizeof(*p))) == NULL)
        return p;
    p->w = w;
    p->job.cancel = unit_pool_cancel;
    worker_job_add(w, &p->job);
    w->pg_unit_pool = p;
    return p;
}

/* A cleared unit: a spare one, else a new one.  NULL: out of memory. */
static struct pg_unit *
unit_new(struct pg_session *s)
{
    struct unit_pool *p = unit_pool_of(s->base.w);
    struct pg_unit *u;

    if (p == NULL || p->units == NULL)
        return calloc(1, sizeof(*u));
    u = p->units;
    p->units = pg_unit_of(u->base.next);
    p->nunits--;
    memset(u, 0, offsetof(struct pg_unit, sql_inline));
    return u;
}

/* A comparison block, not initialized: a spare one, else a new one. */
static struct pg_compare *
cmp_new(struct pg_session *s)
{
    struct unit_pool *p = s->base.w->pg_unit_pool;
    if (p != NULL && p->ncmps > 0)
        return p->cmps[--p->ncmps];
    return malloc(sizeof(struct pg_compare));
}

/* u and its comparison block are done with: kept for reuse while the pool has room. */
static void
unit_free(struct pg_session *s, struct pg_unit *u)
{
    struct unit_pool *p = s->base.w->pg_unit_pool;

    if (u == NULL)
        return;
    if (u->cmp != NULL && p != NULL && p->ncmps < UNIT_POOL_MAX)
        p->cmps[p->ncmps++] = u->cmp;
    else
        free(u->cmp);
    if (u->sql != u->sql_inline)
        free(u->sql);
    free(u->call);
    for (unsigned i = 0; i < u->nnames; i++)
        free(u->names[i]);
    free(u->names);
    if (p != NULL && p->nunits < UNIT_POOL_MAX) {
        u->base.next = p->units != NULL ? &p->units->base : NULL;
        p->units = u;
        p->nunits++;
        return;
    }
    free(u);
}

/*
 * Remember that the unit parses (or re-parses) statement NAME for the
 * shadow; each name once.  Returns 0, or -1 when the unit cannot track it
 * (then it cannot be mirrored faithfully).
 */
static int
unit_add_name(struct pg_unit *u, const char *name)
{
    for (unsigned i = 0; i < u->nnames; i++)
        if (strcmp(u->names[i], name) == 0)
            return 0;
    if (u->nnames == u->names_cap) {
        unsigned cap = u->names_cap ? u->names_cap * 2u : 4u;
        if (cap > PG_UNIT_NAMES_MAX)
            return -1;
        char **names = realloc(u->names, cap * sizeof(*names));
        if (names == NULL)
            return -1;
        u->names = names;
        u->names_cap = (uint16_t)cap;
    }
    if ((u->names[u->nnames] = strdup(name)) == NULL)
        return -1;
    u->nnames++;
    return 0;
}


/*
 * lost_write - the shadow did not apply write unit u as the primary did (it
 * never saw it, failed it, timed out, or answered otherwise): from now on
 * its data may differ, and a cutover onto it would lose acknowledged writes.
 */
static void
lost_write(struct pg_session *s, const struct pg_unit *u, const char *why)
{
    shadow_note_divergence(s->base.lis->metric_slot, why, u->sql, u->sql ? u->sqllen : 0);
}

/* Outcomes of a write unit that leave the shadow's data unlike the primary's. */
static int
outcome_loses_write(enum shadow_outcome o)
{
    return o == SHADOW_MISMATCH || o == SHADOW_SHADOW_ERROR || o == SHADOW_PRIMARY_ERROR ||
           o == SHADOW_SHADOW_TIMEOUT || o == SHADOW_DROPPED;
}

/* compare { ignore_fingerprints ...; }: a mismatch of a listed statement is noise. */
static int
fingerprint_ignored(const struct pg_session *s, const struct pg_unit *u,
                    const struct pgdesc_key *key)
{
    const struct conf_compare *cc = &s->base.lis->conf->compare;
    struct pgclass_desc desc;

    if (cc->nignore_fingerprints == 0 || u->sql == NULL)
        return 0;
    if (key->text != NULL) /* described already: the fingerprint the report shows */
        snprintf(desc.fingerprint_hex, sizeof(desc.fingerprint_hex), "%016" PRIx64,
                 key->fingerprint);
    else
        pgclass_describe(u->sql, &desc); /* two parses: only ever on a mismatch */
    for (size_t i = 0; i < cc->nignore_fingerprints; i++)
        if (strcmp(cc->ignore_fingerprints[i], desc.fingerprint_hex) == 0)
            return 1;
    return 0;
}

/*
 * record - count unit u's outcome, with the reason when it is noise.  A
 * write the shadow failed, or answered otherwise when no reason excuses
 * it, is a lost write.  One whose failure is excused (a COPY FROM a file
 * only the primary's host has: noise server_local) is lost all the same:
 * the shadow does not have those rows, so it is noted as a divergence too.
 */
static void
record(struct pg_session *s, struct pg_unit *u, enum shadow_outcome outcome,
       enum shadow_noise_reason reason)
{
    struct pgdesc_key key;
    int shadow_failed = u->cmp != NULL && u->cmp->sres.error && !u->cmp->pres.error;

    _Static_assert(PGCLASS_NORMALIZED_MAX <= SHADOW_KEY_TEXT_MAX,
                   "a normalized statement fits the report unchanged");
    /* the report groups units by fingerprint; key.text NULL (over this worker's
     * describe budget) counts the unit under "other" */
    pgdesc_describe(s->base.w->desc_cache, u->sql, u->sql ? u->sqllen : 0, session_now_ns(), &key);
    if (outcome == SHADOW_MISMATCH && fingerprint_ignored(s, u, &key)) {
        outcome = SHADOW_NOISE;
        reason = SHADOW_NOISE_IGNORED;
    }
    if (outcome == SHADOW_MISMATCH && mirror_doubtful(&s->base.mirror, &u->base)) {
        outcome = SHADOW_NOISE;
        reason = SHADOW_NOISE_REPLICATION;
    }
    /* a claim is confirmed before it is made: the re-check records it */
    if (outcome == SHADOW_MISMATCH && pg_recheck_start(s, u, &key) == 0)
        return;
    /* a write (or COMMIT) the shadow answered otherwise (forced outcomes, drops and
     * detaches, were noted where they were decided) */
    if (u->base.forced < 0 && (u->base.kind == REQ_KIND_WRITE || u->base.kind == REQ_KIND_TX)) {
        if (outcome_loses_write(outcome))
            lost_write(s, u, shadow_outcome_name(outcome));
        else if (outcome == SHADOW_NOISE && shadow_failed)
            lost_write(s, u, "shadow_error (server_local input)");
    }
    const char *psum = "", *ssum = "";
    if (u->cmp) {
        psum = u->cmp->psample;
        ssum = u->cmp->ssample;
    }
    /* slower on the shadow: why, in the two plans (asked only where they can be fetched) */
    /* plans show the parameters' values: fetched only when samples keep values */
    unsigned plan_ratio = u->call != NULL && s->base.lis->conf->compare.samples == CONF_SAMPLES_VALUES
                              ? s->base.lis->conf->compare.explain_when_slower
                              : 0;
    if (shadow_record_slower(s->base.w->shadow, s->base.lis->metric_slot, key.fingerprint,
                             key.text, outcome, reason, u->base.primary_ns,
                             u->base.shadow_done && u->base.forced < 0 ? u->base.shadow_ns : 0,
                             psum, ssum, plan_ratio))
        pg_explain_start(s, u, key.fingerprint);
    if (outcome == SHADOW_MISMATCH)
        slog(s, CONF_LOG_DEBUG, "shadow mismatch: %.200s", u->sql ? u->sql : "");
}

/* The mirror queue's record hook: both sides are done with mirrored unit u. */
static void
on_record(void *owner, struct mirror_unit *mu)
{
    struct pg_session *s = owner;
    struct pg_unit *u = pg_unit_of(mu);
    enum shadow_noise_reason reason = SHADOW_NOISE_NONE;
    if (u->base.forced >= 0) {
        record(s, u, (enum shadow_outcome)u->base.forced, reason);
    } else if (u->cmp) {
        enum shadow_outcome o = pgdigest_judge(&u->cmp->pres, &u->cmp->sres,
                                               (enum shadow_noise_reason)u->noise_reason,
                                               u->local_input, &reason);
        record(s, u, o, reason);
    }
}

static void
on_free_unit(void *owner, struct mirror_unit *mu)
{
    unit_free(owner, pg_unit_of(mu));
}

/* Record and free the units both sides are done with, oldest first. */
static void
complete_units(struct pg_session *s)
{
    mirror_complete(&s->base.mirror);
}

static void
start_compare(struct pg_session *s, struct pg_unit *u)
{
    const struct conf_compare *cc = &s->base.lis->conf->compare;
    u->cmp = cmp_new(s);
    if (u->cmp == NULL)
        return;
    struct pgdigest_opts opts = {
        .ordered = u->ordered,
        .ignore_columns = s->base.lis->ignore_columns,
        .nignore = cc->nignore_columns,
    };
    u->cmp->psample[0] = u->cmp->ssample[0] = '\0';
    /* a side that never answers (a dropped unit) is read as no result, not garbage */
    memset(&u->cmp->pres, 0, sizeof(u->cmp->pres));
    memset(&u->cmp->sres, 0, sizeof(u->cmp->sres));
    pgdigest_init(&u->cmp->primary, &opts, u->cmp->psample, sizeof(u->cmp->psample));
    pgdigest_init(&u->cmp->shadow, &opts, u->cmp->ssample, sizeof(u->cmp->ssample));
}

/* mirror { reads N%; }: a read picked for comparison (the session's own sampler). */
static int
sample_read(struct pg_session *s)
{
    return mirror_sample(&s->base.mirror, mirror_conf(s)->reads);
}

/*
 * pg_unit_begin - a new unit starts with its first message.  Decides now
 * whether the primary's answer is digested: always when the unit may be
 * mirrored, never for a read outside a transaction that the sample left out.
 */
struct pg_unit *
pg_unit_begin(struct pg_session *s, const struct pgclass_result *first)
{
    struct pg_unit *u = unit_new(s);
    if (u == NULL)
        return NULL;
    u->base.forced = -1;
    u->base.kind = first ? first->kind : REQ_KIND_READ;
    u->hint = first ? first->hint : 0;
    u->noise_reason = first ? first->noise_reason : SHADOW_NOISE_NONE;
    u->local_input = first ? first->local_input : 0;
    u->ordered = first ? first->has_order_by : 0;
    u->no_mirror = first ? (first->no_mirror || first->kind == REQ_KIND_ADMIN) : 0;
    u->ddl = first ? first->ddl : 0;
    u->sampled = u->base.kind == REQ_KIND_READ && !s->tx_open && sample_read(s);
    if (s->base.mirror.state != MIRROR_DETACHED && !(u->hint & PGCLASS_HINT_NOSHADOW) && !u->no_mirror &&
        (u->base.kind != REQ_KIND_READ || s->tx_open || u->sampled))
        start_compare(s, u);
    mirror_append(&s->base.mirror, &u->base);
    s->building = u;
    return u;
}

void
pg_unit_add(struct pg_session *s, const struct pgclass_result *cls)
{
    struct pg_unit *u = s->building;
    if (u == NULL || cls == NULL)
        return;
    u->base.kind = req_kind_strongest(u->base.kind, cls->kind);
    u->hint |= cls->hint;
    u->noise_reason = (uint8_t)shadow_noise_strongest((enum shadow_noise_reason)u->noise_reason,
                                                      (enum shadow_noise_reason)cls->noise_reason);
    u->local_input |= cls->local_input;
    u->ddl |= cls->ddl;
    if (!(cls->no_mirror || cls->kind == REQ_KIND_ADMIN))
        u->no_mirror = 0;
}

void
pg_unit_set_sql(struct pg_unit *u, const char *sql, size_t len)
{
    if (u == NULL || u->sql != NULL)
        return;
    /* the text is for the report: a read the sample left out is never in it
     * (should a later statement make the unit a write, its text is kept then) */
    if (u->cmp == NULL && u->base.kind == REQ_KIND_READ && !u->sampled)
        return;
    if (len > UNIT_SQL_MAX) {
        len = UNIT_SQL_MAX;
        u->sql_truncated = 1;
    }
    u->sql = len < sizeof(u->sql_inline) ? u->sql_inline : malloc(len + 1);
    if (u->sql == NULL)
        return;
    memcpy(u->sql, sql, len);
    u->sql[len] = '\0';
    u->sqllen = len;
}

/* Copy the first len bytes of src to the end of dst (src is not changed). */
static void
copy_prefix(struct evbuffer *dst, struct evbuffer *src, size_t len)
{
    struct evbuffer_iovec vec[16];
    struct evbuffer_ptr pos;
    size_t done = 0;

    if (len > 0 && evbuffer_get_contiguous_space(src) >= len) {
        /* in the first chain (a read's bytes usually are): one copy, no walk */
        evbuffer_add(dst, evbuffer_pullup(src, (ev_ssize_t)len), len);
        return;
    }
    evbuffer_ptr_set(src, &pos, 0, EVBUFFER_PTR_SET);
    while (done < len) {
        int n = evbuffer_peek(src, (ev_ssize_t)(len - done), &pos, vec, 16);
        if (n <= 0)
            return;
        for (int i = 0; i < n && i < 16 && done < len; i++) {
            size_t take = vec[i].iov_len < len - done ? vec[i].iov_len : len - done;
            evbuffer_add(dst, vec[i].iov_base, take);
            done += take;
        }
        evbuffer_ptr_set(src, &pos, done, EVBUFFER_PTR_SET);
    }
}

/*
 * pg_shadow_collect - the next len bytes of the client's input belong to
 * the building unit.  The copy is bounded by the session's mirror queue: a
 * unit larger than the whole queue could never be admitted, so its copy
 * stops (and is freed) as soon as it outgrows it; the unit is dropped for
 * the shadow when it closes, while the client's bytes stream on.
 */
void
pg_shadow_collect(struct pg_session *s, size_t len)
{
    struct pg_unit *u = s->building;
    if (s->unit_buf == NULL || (u != NULL && u->too_large))
        return;
    if (evbuffer_get_length(s->unit_buf) + len > s->base.mirror.queue_bytes) {
        if (u != NULL)
            u->too_large = 1;
        evbuffer_drain(s->unit_buf, evbuffer_get_length(s->unit_buf));
        return;
    }
    copy_prefix(s->unit_buf, s->base.client.in, len);
}

/* The shadow connection's statement epoch; 0 (no statement carries it) before any shadow. */
static uint32_t
shadow_epoch(const struct pg_session *s)
{
    return s->shadow ? s->shadow->epoch : 0;
}

/*
 * pg_unit_note_statement - the building unit uses statement st (Bind,
 * Describe or Close).  If it does not exist on the current shadow
 * connection, its recorded Parse goes into the unit first.  The caller has
 * moved every earlier byte of the unit into unit_buf.
 */
int
pg_unit_note_statement(struct pg_session *s, struct pgstmt *st)
{
    struct pg_unit *u = s->building;
    if (u == NULL || st == NULL || s->unit_buf == NULL)
        return 0;
    /* present, or already re-parsed earlier in this unit (epoch | pending bit) */
    if (st->epoch == shadow_epoch(s) || st->epoch == (shadow_epoch(s) | 0x80000000u))
        return 0;
    /* no Parse kept (the table was full, or memory ran out): cannot re-create it */
    if (st->parse == NULL || unit_add_name(u, st->name) != 0) {
        u->unmirrorable = 1;
        return 0;
    }
    evbuffer_add(s->unit_buf, st->parse, st->parse_len);
    st->epoch = shadow_epoch(s) | 0x80000000u;
    return 1;
}

/* pg_shadow_parsed - a Parse of statement st is part of the building unit. */
void
pg_shadow_parsed(struct pg_session *s, struct pgstmt *st)
{
    struct pg_unit *u = s->building;
    if (u == NULL || st == NULL)
        return;
    if (unit_add_name(u, st->name) != 0) {
        u->unmirrorable = 1;
        return;
    }
    st->epoch = shadow_epoch(s) | 0x80000000u;
}

/* After the decision: statements of the unit now exist on the shadow, or not. */
static void
settle_names(struct pg_session *s, struct pg_unit *u, int mirrored)
{
    for (unsigned i = 0; i < u->nnames; i++) {
        struct pgstmt *st = s->stmts ? pgstmt_get(s->stmts, u->names[i], strlen(u->names[i])) : NULL;
        if (st && (st->epoch & 0x80000000u))
            st->epoch = mirrored ? shadow_epoch(s) : 0;
        free(u->names[i]);
        u->names[i] = NULL;
    }
    u->nnames = 0;
}

static void detach(struct pg_session *s, enum shadow_outcome why, const char *reason);

/*
 * admit - len more bytes join this session's mirror queue: counted against
 * the session's and the process's bounds once, here.  Over a bound the
 * shadow is detached (-1): it can fall behind, the client cannot.
 */
static int
admit(struct pg_session *s, size_t len)
{
    return mirror_admit(&s->base.mirror, len);
}

/* Send admitted bytes: now when logged in, else kept for the login. */
static int
send_admitted(struct pg_session *s, struct evbuffer *src, size_t len)
{
    if (s->base.mirror.state == MIRROR_READY) {
        evbuffer_remove_buffer(src, s->base.shadow_conn->out, len);
        return session_shadow_flush(&s->base);
    } else {
        evbuffer_remove_buffer(src, s->shadow->pending, len);
    }
    return 0;
}

/*
 * Mirror order
 * ------------
 * A mirrored unit waits in shadow.held until the primary has answered it
 * (or, for COPY FROM STDIN, has accepted the copy), and only then goes to
 * the shadow.  So the shadow receives units in the order the primary
 * acknowledged them, which is the order that matters between sessions: a
 * statement that had to wait for another transaction's lock is answered
 * after that transaction's commit, and reaches the shadow after it too.
 * Sending earlier would let two sessions' conflicting statements take their
 * locks in the other order on the shadow, and reads inside a transaction
 * would then see other intermediate values there: false mismatches.
 * Across workers the order is as close as the workers' clocks of work; the
 * cost is that the shadow does not see a session's pipeline early.
 */
static void
hold(struct pg_session *s, struct pg_unit *u, size_t len)
{
    /* full: detached (counted); its COPY data, if any, is not mirrored either */
    s->copy_mirror = mirror_hold(&s->base.mirror, &u->base, s->unit_buf, NULL, len) == 0;
}

/*
 * Rights
 * ------
 * The shadow never runs anything with more rights than the client has on
 * the primary.  A unit waits in held until the primary answered it; one
 * the primary refused for the client's rights or identity (42501, class
 * 28, ...) never reaches the shadow, where tandem may be logged in with
 * other rights: a statement failing the same way takes its place.  And
 * when tandem logs in to the shadow with a user of its own, that session
 * acts as the client's role (pg_shadow_start: `-c role=...` at login,
 * which is also where RESET ROLE and DISCARD ALL return to).
 */

/* Watch the primary's answer to held unit u: does it refuse it for the client's rights? */
static void
watch_refusal(struct pg_unit *u, uint8_t type, struct evbuffer *in, size_t offset,
              size_t body_len)
{
    uint8_t stackbuf[1024], *body = stackbuf;
    struct pgw_error_fields f;
    struct evbuffer_ptr pos;

    if (type == 'C' && !u->refused) {
        u->primary_effect = 1; /* a statement of it ran before any refusal */
        return;
    }
    if (type != 'E' || u->refused)
        return;
    /* an error tandem cannot read is taken as a refusal: never mirror blind */
    if (body_len > REFUSAL_MAX_MESSAGE ||
        (body_len > sizeof(stackbuf) && (body = malloc(body_len)) == NULL)) {
        u->refused = 1;
        return;
    }
    evbuffer_ptr_set(in, &pos, offset + PGW_HEADER_LEN, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(in, &pos, body, body_len);
    if (pgw_error_parse(body, body_len, &f) != PGW_OK || pgw_sqlstate_is_denial(f.sqlstate))
        u->refused = 1;
    if (body != stackbuf)
        free(body);
}

/* Queue one statement of ours for the shadow (counted against the mirror queue). */
static int
send_query(struct pg_session *s, const char *sql)
{
    uint8_t msg[512];
    size_t n = pgw_build_query(msg, sizeof(msg), sql);
    struct evbuffer *tmp;

    if (n == 0 || (tmp = evbuffer_new()) == NULL) {
        detach(s, SHADOW_DROPPED, "out of memory");
        return -1;
    }
    evbuffer_add(tmp, msg, n);
    int rc = admit(s, n) == 0 ? send_admitted(s, tmp, n) : -1;
    evbuffer_free(tmp);
    return rc;
}

/*
 * The primary refused u for the client's rights: its bytes leave the queue
 * unsent.  In their place a statement that fails the same way, so that a
 * transaction the refusal aborted on the primary is aborted on the shadow
 * too (its COMMIT then rolls back on both).  Recorded as primary_error.
 */
static int
send_refusal(struct pg_session *s, struct pg_unit *u)
{
    static const char sql[] =
        "DO $tandem$BEGIN RAISE EXCEPTION 'tandem: refused on the primary, not run on the "
        "shadow' USING ERRCODE = 'insufficient_privilege'; END$tandem$";

    u->base.forced = SHADOW_PRIMARY_ERROR;
    if (u->primary_effect && mirror_changes_data(&u->base))
        lost_write(s, u, "refused on the primary after part of it ran");
    return send_query(s, sql);
}

/* SET ROLE NONE (or set_config('role', 'none', ...)) may be in u: the login's own rights. */
static int
may_leave_role(const struct pg_unit *u)
{
    return u->sql != NULL && strcasestr(u->sql, "role") != NULL &&
           strcasestr(u->sql, "none") != NULL;
}

/* Quote name as an SQL identifier into out ("" when it does not fit). */
static void
quote_ident(char *out, size_t cap, const char *name)
{
    size_t o = 0;
    if (cap < 3)
        goto too_long;
    out[o++] = '"';
    for (const char *p = name; *p; p++) {
        if (o + (*p == '"' ? 2 : 1) + 2 > cap)
            goto too_long;
        if (*p == '"')
            out[o++] = '"';
        out[o++] = *p;
    }
    out[o++] = '"';
    out[o] = '\0';
    return;
too_long:
    out[0] = '\0';
}

/*
 * After u, which may have left the client's role on the shadow, a unit of
 * ours puts the session back in it, right behind u (nothing else of the
 * client's can run in between).
 */
static int
relock_after(struct pg_session *s, struct pg_unit *u)
{
    struct pg_shadow *sh = s->shadow;
    char ident[2 * sizeof(sh->client_role) + 3], sql[sizeof(ident) + 16];
    struct pg_unit *r = calloc(1, sizeof(*r));

    quote_ident(ident, sizeof(ident), sh->client_role);
    if (r == NULL || ident[0] == '\0') {
        free(r);
        detach(s, SHADOW_DROPPED, "cannot put the shadow session back in the client's role");
        return -1;
    }
    snprintf(sql, sizeof(sql), "SET ROLE %s", ident);
    r->base.forced = -1;
    r->base.kind = REQ_KIND_SESSION;
    r->base.closed = r->base.mirrored = r->base.primary_done = r->base.replay = r->relock = 1;
    r->base.closed_ns = r->base.shadow_sent_ns = session_now_ns();
    mirror_insert_after(&s->base.mirror, &u->base, &r->base);
    sh->relocks_pending++;
    return send_query(s, sql);
}

/* The mirror queue's hooks (engine/mirror.h). */
static enum mirror_verdict
on_releasing(void *owner, struct mirror_unit *mu)
{
    (void)owner;
    return pg_unit_of(mu)->refused ? MIRROR_REPLACE : MIRROR_SEND;
}

static int
on_replace(void *owner, struct mirror_unit *mu)
{
    return send_refusal(owner, pg_unit_of(mu));
}

static int
on_send(void *owner, struct mirror_unit *u, struct evbuffer *src, size_t len)
{
    return send_admitted(owner, src, len);
}

static void
on_sent(void *owner, struct mirror_unit *mu)
{
    struct pg_session *s = owner;
    struct pg_unit *u = pg_unit_of(mu);
    if (s->shadow->as_role && may_leave_role(u))
        relock_after(s, u); /* a failure detaches */
}

/* Send, in order, the held units the primary has answered (all of them when force). */
static void
release_held(struct pg_session *s, int force)
{
    mirror_release(&s->base.mirror, force, session_now_ns());
}

/* pg_shadow_release_gated - the engine's tick: gated reads may go now (engine/mirror.h). */
void
pg_shadow_release_gated(struct session *base)
{
    release_held((struct pg_session *)base, 0);
}

/* pg_shadow_primary_copy_in - the primary accepted COPY ... FROM STDIN: its data may flow. */
void
pg_shadow_primary_copy_in(struct pg_session *s)
{
    if (s->base.mirror.pcur != NULL) {
        s->base.mirror.pcur->release_early = 1;
        release_held(s, 0);
    }
}

/* Session-kind units are replayed on a new shadow connection (SET, PREPARE ...). */
static void
log_state(struct pg_session *s, struct pg_unit *u, struct evbuffer *bytes)
{
    struct pg_shadow *sh = s->shadow;
    size_t len = evbuffer_get_length(bytes);
    if (u->base.kind != REQ_KIND_SESSION || s->tx_open)
        return;
    if (sh->state_units >= STATE_LOG_MAX_UNITS ||
        evbuffer_get_length(sh->state_log) + len > STATE_LOG_MAX_BYTES) {
        sh->replay_incomplete = 1;
        return;
    }
    copy_prefix(sh->state_log, bytes, len);
    sh->state_units++;
}

/*
 * mirror { level dml | ddl; } leaves schema changes, or data changes, off
 * the shadow.  Session state and transaction control always go: without
 * them the shadow's session would not be the client's.
 */
static int
level_allows(const struct pg_session *s, const struct pg_unit *u)
{
    if (u->base.kind != REQ_KIND_WRITE)
        return 1;
    switch (mirror_conf(s)->level) {
    case CONF_MIRROR_DML:
        return !u->ddl;
    case CONF_MIRROR_DDL:
        return u->ddl;
    default:
        return 1;
    }
}

/*
 * shadow_source replication: the shadow has every write from the primary
 * already, so only what a compared read needs goes to it: the sampled read
 * itself and the session's state (SET, PREPARE), outside transactions.
 */
static int
source_allows(const struct pg_session *s, const struct pg_unit *u)
{
    if (!s->base.mirror.gated)
        return 1;
    if (s->tx_open)
        return 0;
    return (u->base.kind == REQ_KIND_READ && u->sampled) || u->base.kind == REQ_KIND_SESSION;
}

/*
 * A compared read keeps a copy of its own messages, in case its answers
 * differ and it is run again to confirm it (pg_recheck.c): small ones
 * only, and only where confirmation is on.
 */
static void
keep_call(struct pg_session *s, struct pg_unit *u, size_t len)
{
    const struct pgstmt *st = NULL;
    uint8_t head[NAME_PREFIX_MAX];
    const char *name;
    size_t namelen, n;

    const struct conf_compare *cc = &s->base.lis->conf->compare;
    if (u->cmp == NULL || u->base.kind != REQ_KIND_READ || len > RECHECK_CALL_MAX ||
        (cc->confirm_per_second == 0 && cc->explain_when_slower == 0))
        return;
    /* a Bind of a statement prepared earlier: its Parse goes first (text, declared types) */
    n = evbuffer_copyout(s->unit_buf, head, sizeof(head));
    if (n > PGW_HEADER_LEN && head[0] == 'B' && s->stmts &&
        pgstmt_bind_msg(head + PGW_HEADER_LEN, n - PGW_HEADER_LEN, &name, &namelen) == 0 &&
        namelen > 0 && (st = pgstmt_get(s->stmts, name, namelen)) != NULL && st->parse == NULL)
        st = NULL;
    size_t pre = st ? st->parse_len : 0;
    if ((u->call = malloc(pre + len)) == NULL)
        return;
    if (st)
        memcpy(u->call, st->parse, pre);
    evbuffer_copyout(s->unit_buf, u->call + pre, len);
    u->call_len = (uint32_t)(pre + len);
}

/*
 * pg_unit_close - the unit's last message (Sync, Query, FunctionCall) was
 * read and is in unit_buf.  Decide: mirror it, or count it dropped, or
 * leave the shadow out of it.
 */
void
pg_unit_close(struct pg_session *s)
{
    struct pg_unit *u = s->building;
    size_t len = s->unit_buf ? evbuffer_get_length(s->unit_buf) : 0;

    s->building = NULL;
    if (u == NULL)
        return;
    u->base.closed = 1;
    u->base.closed_ns = session_now_ns();
    if (u->base.kind == REQ_KIND_TX)
        s->tx_open = 1;

    int wanted = !(u->hint & PGCLASS_HINT_NOSHADOW) && !u->no_mirror &&
                 (u->base.kind != REQ_KIND_READ || s->tx_open || u->sampled) && level_allows(s, u) &&
                 source_allows(s, u);
    if (wanted &&
        control_mode(s->base.lis->metric_slot, (int)s->base.lis->conf->mode) == CONF_MODE_PASSTHROUGH) {
        /* mirroring turned off while the session runs: its writes are lost to the shadow */
        shadow_count_dropped(s->base.w->shadow, s->base.lis->metric_slot, SHADOW_DROP_MIRRORING_OFF, 1);
        if (mirror_changes_data(&u->base))
            lost_write(s, u, "dropped: mirroring turned off");
        wanted = 0;
    }
    if (!wanted) {
        u->base.shadow_done = 1;
        settle_names(s, u, 0);
        if (s->unit_buf)
            evbuffer_drain(s->unit_buf, len);
        s->copy_mirror = 0;
        return;
    }
    u->base.mirrored = 1;
    if (s->base.mirror.state == MIRROR_DETACHED || u->unmirrorable || u->too_large || len == 0) {
        /* a write the shadow will never see: from now on its data may differ */
        if (s->base.mirror.state == MIRROR_DETACHED) {
            mirror_drop(&s->base.mirror, &u->base);
            if (mirror_changes_data(&u->base))
                lost_write(s, u, s->base.mirror.identity_refused
                                     ? "dropped: the shadow cannot act as the client's role"
                                     : "dropped: the session's shadow is detached");
        } else if (u->too_large) {
            /* the shadow session misses it (a Parse, a SET ...): start afresh at an idle
             * point; counted dropped, a write among it marks the shadow diverged */
            mirror_detach(&s->base.mirror, SHADOW_DROPPED, SHADOW_DROP_TOO_LARGE,
                          "a unit larger than the session's mirror queue", session_now_ns());
        } else if (u->unmirrorable) {
            detach(s, SHADOW_DROPPED, "unit references too many statements");
        }
        u->base.forced = SHADOW_DROPPED;
        u->base.shadow_done = 1;
        settle_names(s, u, 0);
        if (s->unit_buf)
            evbuffer_drain(s->unit_buf, evbuffer_get_length(s->unit_buf));
        s->copy_mirror = 0;
        return;
    }
    keep_call(s, u, len);
    log_state(s, u, s->unit_buf);
    settle_names(s, u, 1);
    hold(s, u, len);
}

/*
 * pg_unit_route - mode split: the shadow answers the building unit (a read
 * that pg_route_decide gave it).  Its bytes, with any Parse the shadow
 * lacks, go now, not held: the session is idle, so nothing of the client's
 * is waiting for the primary ahead of it.  A sampled read also goes to the
 * primary, whose answer is digested and dropped.  -1 (nothing done) when
 * the shadow cannot take it now: the caller gives it to the primary.
 */
int
pg_unit_route(struct pg_session *s)
{
    struct pg_unit *u = s->building;
    size_t len = s->unit_buf ? evbuffer_get_length(s->unit_buf) : 0;

    if (u == NULL || (s->base.mirror.state != MIRROR_READY && s->base.mirror.state != MIRROR_CONNECTING) ||
        u->unmirrorable || u->too_large || len == 0 || !mirror_fits(&s->base.mirror, len))
        return -1;
    s->building = NULL;
    u->base.closed = 1;
    u->base.closed_ns = u->base.shadow_sent_ns = session_now_ns();
    u->base.routed = 1;
    u->base.mirrored = 1;
    settle_names(s, u, 1);
    if (s->base.mirror.scur == NULL)
        s->base.mirror.scur = &u->base;
    s->base.routed = &u->base;
    s->route.forwarded = 0;
    if (u->cmp != NULL)
        copy_prefix(s->base.server.out, s->route.buf, evbuffer_get_length(s->route.buf));
    else
        mirror_primary_answered(&s->base.mirror, &u->base, 0); /* the primary never sees it */
    mirror_account(&s->base.mirror, (int64_t)len);
    send_admitted(s, s->unit_buf, len); /* a failure detaches: the read is retried */
    return 0;
}

/*
 * The shadow failed while answering the routed read.  Before any of its
 * answer reached the client, the read is retried on the primary as a unit
 * of its own (the routed one keeps its outcome, shadow_error).
 */
static void
route_lost(struct pg_session *s)
{
    struct pg_unit *r;
    if (s->base.routed == NULL)
        return;
    if (s->route.forwarded > 0 || (r = calloc(1, sizeof(*r))) == NULL) {
        pg_session_route_failed(s, 0);
        return;
    }
    r->base.forced = -1;
    r->base.kind = REQ_KIND_READ;
    r->base.closed = r->base.shadow_done = 1;
    r->base.closed_ns = session_now_ns();
    mirror_append(&s->base.mirror, &r->base);
    pg_session_route_failed(s, 1);
}

/* CopyData/CopyDone/CopyFail that follow a mirrored COPY ... FROM STDIN. */
void
pg_shadow_copy_data(struct pg_session *s, size_t len)
{
    struct evbuffer *tmp;
    if (!s->copy_mirror || s->base.mirror.state == MIRROR_DETACHED || s->base.mirror.state == MIRROR_OFF)
        return;
    tmp = evbuffer_new();
    if (tmp == NULL) {
        detach(s, SHADOW_DROPPED, "out of memory");
        return;
    }
    copy_prefix(tmp, s->base.client.in, len);
    if (s->base.mirror.nheld > 0 && s->base.mirror.last_held != NULL)
        mirror_hold_more(&s->base.mirror, tmp, len); /* behind its COPY statement, still held */
    else if (admit(s, len) == 0)
        send_admitted(s, tmp, len);
    evbuffer_free(tmp);
}

/* ------------------------------------------------------------------ */
/* Digesting.                                                          */

/* Feed the body of the message at offset (header excluded) to d. */
static void
feed(struct pgdigest *d, uint8_t type, struct evbuffer *in, size_t offset, size_t body_len)
{
    struct evbuffer_iovec stackvec[16], *vec = stackvec;
    struct evbuffer_ptr pos;
    int n = 0;

    if (!pgdigest_counts(type))
        return; /* nothing of it is in the digest: no need to find its bytes */
    if (body_len > 0 && evbuffer_get_contiguous_space(in) >= offset + PGW_HEADER_LEN + body_len) {
        /* in the first chain (as a read's bytes usually are): read in place */
        struct iovec one = {
            evbuffer_pullup(in, (ev_ssize_t)(offset + PGW_HEADER_LEN + body_len)) + offset +
                PGW_HEADER_LEN,
            body_len};
        pgdigest_feed(d, type, &one, 1, body_len);
        return;
    }
    if (body_len > 0) {
        evbuffer_ptr_set(in, &pos, offset + PGW_HEADER_LEN, EVBUFFER_PTR_SET);
        /* one look, nearly always enough: it says how many vectors it needs */
        n = evbuffer_peek(in, (ev_ssize_t)body_len, &pos, vec, 16);
        if (n > 16) {
            if ((vec = malloc(sizeof(*vec) * (size_t)n)) == NULL)
                return;
            n = evbuffer_peek(in, (ev_ssize_t)body_len, &pos, vec, n);
        }
        /* the last vector may reach past the message: trim it */
        size_t total = 0;
        for (int i = 0; i < n; i++) {
            if (total + vec[i].iov_len > body_len)
                vec[i].iov_len = body_len - total;
            total += vec[i].iov_len;
        }
    }
    pgdigest_feed(d, type, n > 0 ? (const struct iovec *)vec : NULL, n > 0 ? n : 0, body_len);
    if (vec != stackvec)
        free(vec);
}

/* Does the primary's current message have to be whole before it moves on? */
int
pg_shadow_wants_whole(const struct pg_session *s)
{
    /* digested, or held for the shadow until the primary says it ran */
    const struct pg_unit *u = pg_unit_of(s->base.mirror.pcur);
    return u != NULL && (u->cmp != NULL || u->base.held);
}

void
pg_shadow_primary_message(struct pg_session *s, uint8_t type, struct evbuffer *in, size_t offset,
                          size_t body_len)
{
    struct pg_unit *u = pg_unit_of(s->base.mirror.pcur);
    if (u == NULL)
        return;
    if (u->base.held)
        watch_refusal(u, type, in, offset, body_len);
    if (u->cmp == NULL)
        return;
    if (body_len > DIGEST_MAX_MESSAGE) {
        /* too large to digest whole: this unit is mirrored but not compared */
        free(u->cmp);
        u->cmp = NULL;
        return;
    }
    feed(&u->cmp->primary, type, in, offset, body_len);
}

/* The primary answered its current unit (ReadyForQuery). */
void
pg_shadow_primary_ready(struct pg_session *s)
{
    struct pg_unit *u = pg_unit_of(s->base.mirror.pcur);
    if (u != NULL) {
        uint64_t now = session_now_ns();
        u->base.primary_ns = now - u->base.closed_ns;
        if (u->base.kind == REQ_KIND_WRITE || u->base.kind == REQ_KIND_TX)
            s->route.last_write_ns = now; /* read_your_writes counts from here */
        if (u->cmp)
            pgdigest_final(&u->cmp->primary, &u->cmp->pres);
        mirror_primary_answered(&s->base.mirror, &u->base, now);
        if (s->base.mirror.nheld > 0)
            release_held(s, 0);
    }
    if (s->tx_status == 'I' && s->base.outstanding == 0)
        s->tx_open = 0;
    complete_units(s);

    /* an idle point: a detached shadow may come back */
    if (s->tx_status == 'I' && s->base.outstanding == 0 && !s->unit_open &&
        mirror_may_reattach(&s->base.mirror, session_now_ns()))
        pg_shadow_start(s);
}

/* ------------------------------------------------------------------ */
/* The shadow connection.                                              */

/* The shadow backend's connection counters (tandem_server_connections{backend}). */
static void
count_shadow(struct pg_session *s, enum metric_backend_counter c, uint64_t n)
{
    pg_count_backend(s, s->base.shadow_be, c, n);
}

static void key_trace_stop(struct pg_session *s);

void
pg_shadow_conn_close(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    if (sh == NULL)
        return;
    if (sh->login_ev_added) {
        event_del(&sh->login_ev);
        sh->login_ev_added = 0;
    }
    if (s->base.shadow_open) {
        conn_release(s->base.shadow_conn);
        s->base.shadow_open = 0;
        count_shadow(s, METRIC_B_SERVER_CLOSED, 1);
    }
}

/* The queue's close hook: the shadow connection goes (the queue empties held itself). */
static void
shadow_close(void *owner)
{
    struct pg_session *s = owner;
    struct pg_shadow *sh = s->shadow;
    if (sh == NULL)
        return;
    pg_shadow_conn_close(s);
    key_trace_stop(s);
    pg_shadow_login_free(s);
    sh->as_client = 0;
    memset(&sh->key, 0, sizeof(sh->key));
    if (sh->pq) {
        /* PQfinish may try to send Terminate: never let it wait for a stalled shadow */
        PQsetnonblocking(sh->pq, 1);
        PQfinish(sh->pq);
        sh->pq = NULL;
    }
    if (sh->pending)
        evbuffer_drain(sh->pending, evbuffer_get_length(sh->pending));
    sh->frame.skip = 0;
    sh->relocks_pending = 0;
    s->copy_mirror = 0;
}

/* The queue's detached hook: say why, note a lost write, mend a routed read. */
static void
on_detached(void *owner, enum shadow_outcome why, const char *reason,
            const struct mirror_unit *lost, uint64_t owed)
{
    struct pg_session *s = owner;
    (void)owed;
    route_lost(s);
    if (lost != NULL) {
        char why_text[64];
        snprintf(why_text, sizeof(why_text), "%s: the shadow was detached",
                 shadow_outcome_name(why));
        lost_write(s, (const struct pg_unit *)lost, why_text);
    }
    log_at(why == SHADOW_DROPPED && !s->base.mirror.identity_refused ? CONF_LOG_INFO : CONF_LOG_WARN,
           s->base.id, s->base.peer, "shadow \"%s\" at %s detached: %s%s", s->base.shadow_be->conf->name,
           s->base.shadow_be->addr_text, reason, lost ? " (a write was lost: diverged)" : "");
    session_shadow_progress(&s->base);
}

/*
 * detach - give up on this shadow connection (engine/mirror.h,
 * mirror_detach): every unit it still owed gets `why` as its outcome; a
 * write among them makes the shadow diverged.
 */
static void
detach(struct pg_session *s, enum shadow_outcome why, const char *reason)
{
    mirror_detach(&s->base.mirror, why, mirror_drop_reason(why), reason, session_now_ns());
}

const struct mirror_ops pg_mirror_ops = {
    .send = on_send,
    .releasing = on_releasing,
    .replace = on_replace,
    .sent = on_sent,
    .record = on_record,
    .free_unit = on_free_unit,
    .close = shadow_close,
    .detached = on_detached,
};

static void on_shadow_login(evutil_socket_t fd, short what, void *arg);
static int login_begin(struct pg_session *s);

/*
 * The shadow connection's cancel key.  libpq's trace of the login prints
 * the BackendKeyData as a line "B<TAB>12<TAB>BackendKeyData<TAB> pid key"
 * (the key as a signed 32-bit number); pg_shadow_key_line reads one such
 * line, 0 when it is one.
 */
int
pg_shadow_key_line(const char *line, size_t len, uint32_t *pid, uint32_t *key)
{
    static const char tag[] = "\tBackendKeyData\t";
    char copy[128];
    long long p, k;
    char end;

    if (len < 2 || len >= sizeof(copy) || line[0] != 'B' || line[1] != '\t')
        return -1;
    memcpy(copy, line, len);
    copy[len] = '\0';
    const char *at = strstr(copy, tag);
    if (at == NULL || sscanf(at + sizeof(tag) - 1, " %lld %lld%c", &p, &k, &end) != 2 ||
        p <= 0 || p > UINT32_MAX || k < INT32_MIN || k > UINT32_MAX)
        return -1;
    *pid = (uint32_t)p;
    *key = (uint32_t)k;
    return 0;
}

/* The trace stream's write: assemble lines, keep none but the key's. */
static ssize_t
key_trace_write(void *cookie, const char *buf, size_t size)
{
    struct pg_session *s = cookie;
    struct pg_shadow *sh = s->shadow;
    for (size_t i = 0; i < size; i++) {
        if (buf[i] != '\n') {
            if (sh->key_line_len < sizeof(sh->key_line))
                sh->key_line[sh->key_line_len++] = buf[i];
            continue;
        }
        uint32_t pid, key;
        if (sh->key_line_len < sizeof(sh->key_line) &&
            pg_shadow_key_line(sh->key_line, sh->key_line_len, &pid, &key) == 0) {
            sh->key.be_pid = pid;
            sh->key.be_key = key;
            cancel_target_set_addr(&sh->key, (const struct sockaddr *)&s->base.shadow_be->addr,
                                   s->base.shadow_be->addrlen);
        }
        /* nothing of the login (a password message) stays behind */
        explicit_bzero(sh->key_line, sh->key_line_len);
        sh->key_line_len = 0;
    }
    return (ssize_t)size;
}

/* Trace the login (libpq's own stream of it) to learn the key; without it, no key. */
static void
key_trace_start(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    cookie_io_functions_t io = {.write = key_trace_write};
    memset(&sh->key, 0, sizeof(sh->key));
    sh->key_line_len = 0;
    sh->key_trace = fopencookie(s, "w", io);
    if (sh->key_trace == NULL)
        return;
    PQtrace(sh->pq, sh->key_trace);
    PQsetTraceFlags(sh->pq, PQTRACE_SUPPRESS_TIMESTAMPS);
}

static void
key_trace_stop(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    if (sh->key_trace == NULL)
        return;
    if (sh->pq)
        PQuntrace(sh->pq);
    fclose(sh->key_trace); /* flushes: the last lines are scanned now */
    sh->key_trace = NULL;
    explicit_bzero(sh->key_line, sizeof(sh->key_line));
    sh->key_line_len = 0;
}

/*
 * take_socket - the logged-in socket of a plain TCP login becomes tandem's
 * own descriptor and the PGconn is freed: an idle shadow session then
 * holds no libpq memory (its two 16 KiB buffers and connection options
 * were most of it).  PQfinish would send Terminate on the socket and
 * close it, so libpq's descriptor number is pointed at /dev/null first
 * (dup2: the number stays taken, no other thread can be handed it
 * meanwhile): libpq's Terminate fails on a non-socket and it closes only
 * that.  Nothing of the login waits in libpq's input (the shadow sends
 * nothing after ReadyForQuery unasked).  Returns the new descriptor, or -1
 * with pq untouched (the caller borrows libpq's socket then, as for TLS).
 */
static int
take_socket(PGconn *pq)
{
    int fd = PQsocket(pq);
    int mine = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (mine < 0)
        return -1;
    int sink = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (sink < 0 || dup2(sink, fd) < 0) {
        if (sink >= 0)
            close(sink);
        close(mine);
        return -1;
    }
    close(sink);
    PQsetnonblocking(pq, 1);
    PQfinish(pq);
    return mine;
}

/*
 * Logged in through libpq: take the socket over and send what waited.  A
 * TLS connection stays libpq's (borrowed): its SSL object writes through
 * libpq's own BIO, so the PGconn lives as long as the connection.
 */
static void
shadow_ready(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    int fd = PQsocket(sh->pq), own = -1;

    key_trace_stop(s);
    if (sh->key.addrlen == 0)
        slog(s, CONF_LOG_WARN, "shadow \"%s\": its cancel key could not be read; after a cutover "
             "this session's cancel requests are ignored", s->base.shadow_be->conf->name);
    const char *super = PQparameterStatus(sh->pq, "is_superuser");
    sh->super_at_login = super != NULL && strcmp(super, "on") == 0;
    if (!PQsslInUse(sh->pq) && (own = take_socket(sh->pq)) >= 0) {
        sh->pq = NULL;
        fd = own;
    }
    if (conn_init(s->base.shadow_conn, s->base.w->base, fd, session_on_shadow, &s->base) != 0) {
        if (own >= 0)
            close(own);
        detach(s, SHADOW_SHADOW_ERROR, "out of memory");
        return;
    }
    s->base.shadow_conn->borrowed = sh->pq != NULL;
    s->base.shadow_open = 1;
    count_shadow(s, METRIC_B_SERVER_OPENED, 1);
    if (sh->pq != NULL && PQsslInUse(sh->pq)) {
        s->base.shadow_conn->ssl = PQsslStruct(sh->pq, "OpenSSL");
        s->base.shadow_conn->tls_done = 1;
    }
    pg_shadow_attached(s);
}

/* Logged in (libpq's login or tandem's own on shadow_conn): the mirror runs, what waited goes. */
void
pg_shadow_attached(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    s->base.mirror.state = MIRROR_READY;
    mirror_attached(&s->base.mirror);
    slog(s, CONF_LOG_DEBUG, "shadow \"%s\" logged in%s", s->base.shadow_be->conf->name,
         sh->as_client ? " as the client" : "");

    uint64_t now = session_now_ns();
    for (struct mirror_unit *u = s->base.mirror.head; u; u = u->next)
        if (u->mirrored && !u->shadow_done && u->shadow_sent_ns == 0)
            u->shadow_sent_ns = now;
    evbuffer_add_buffer(s->base.shadow_conn->out, sh->pending);
    if (session_shadow_flush(&s->base) == 0)
        conn_want_read(s->base.shadow_conn, 1);
}

void
pg_shadow_login_failed(struct pg_session *s, const char *why)
{
    char msg[300];
    snprintf(msg, sizeof(msg), "login failed: %s", why);
    detach(s, SHADOW_SHADOW_ERROR, msg);
}

/*
 * The shadow refused the login for a database or role that is not there:
 * it may not be there *yet*, when the CREATE that makes it (another
 * session's, acknowledged by the primary) is still on its way to the
 * shadow.  The login is tried again, with a growing pause, until the
 * mirror timeout from the first attempt; the session's units wait in
 * pending meanwhile, as they do during any login.  1 when it will be.
 */
static int
login_may_wait(struct pg_session *s, const char *msg)
{
    struct pg_shadow *sh = s->shadow;
    uint64_t timeout_ns = (uint64_t)mirror_conf(s)->timeout_ms * 1000000ull;
    uint32_t ms = 20u << (sh->login_retries < 5 ? sh->login_retries : 5);

    if (strstr(msg, "does not exist") == NULL ||
        session_now_ns() + (uint64_t)ms * 1000000ull - sh->login_started_ns > timeout_ns)
        return 0;
    sh->login_retries++;
    PQfinish(sh->pq);
    sh->pq = NULL;
    /* the login event is a plain timer while pq is NULL: on_shadow_login tries again */
    struct timeval tv = {.tv_sec = 0, .tv_usec = ms * 1000};
    evtimer_assign(&sh->login_ev, s->base.w->base, on_shadow_login, s);
    evtimer_add(&sh->login_ev, &tv);
    sh->login_ev_added = 1;
    slog(s, CONF_LOG_DEBUG, "shadow login refused (%.*s): trying again in %u ms",
         (int)strcspn(msg, "\n"), msg, ms);
    return 1;
}

static void
login_step(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    PostgresPollingStatusType st = PQconnectPoll(sh->pq);
    short what;

    switch (st) {
    case PGRES_POLLING_OK:
        sh->login_ev_added = 0;
        shadow_ready(s);
        return;
    case PGRES_POLLING_READING:
        what = EV_READ;
        break;
    case PGRES_POLLING_WRITING:
        what = EV_WRITE;
        break;
    default: {
        char why[400];
        const char *msg = PQerrorMessage(sh->pq);
        count_shadow(s, METRIC_B_CONNECT_FAILURES, 1);
        sh->login_ev_added = 0;
        if (sh->as_role && strstr(msg, "set role") != NULL) {
            /* the shadow user may not act as the client: never mirror with its own rights */
            s->base.mirror.identity_refused = 1;
            snprintf(why, sizeof(why),
                     "cannot act as role \"%s\" on the shadow (grant that role to the shadow's "
                     "user, or give per-user credentials): this session is not mirrored",
                     sh->client_role);
            detach(s, SHADOW_DROPPED, why);
            return;
        }
        if (login_may_wait(s, msg))
            return;
        /* libpq's message never holds the password */
        snprintf(why, sizeof(why), "login failed: %s", msg);
        why[strcspn(why, "\n")] = '\0';
        detach(s, SHADOW_SHADOW_ERROR, why);
        return;
    }
    }
    /* libpq may have opened a new socket (another address): watch the current one */
    uint32_t ms = s->base.rt->conf->limits.connect_timeout_ms;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    event_assign(&sh->login_ev, s->base.w->base, PQsocket(sh->pq), what, on_shadow_login, s);
    event_add(&sh->login_ev, &tv);
    sh->login_ev_added = 1;
}

static void
on_shadow_login(evutil_socket_t fd, short what, void *arg)
{
    struct pg_session *s = arg;
    (void)fd;
    s->shadow->login_ev_added = 0;
    if (s->shadow->pq == NULL) {
        /* login_may_wait's pause is over */
        if (login_begin(s) == 0)
            login_step(s);
        return;
    }
    if (what & EV_TIMEOUT) {
        detach(s, SHADOW_SHADOW_ERROR, "login timeout");
        return;
    }
    login_step(s);
}

/* The recorded session state goes to the new connection first, as units of its own. */
static void
queue_state_replay(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    if (sh->state_units == 0)
        return;
    for (unsigned i = 0; i < sh->state_units; i++) {
        struct pg_unit *u = calloc(1, sizeof(*u));
        if (u == NULL)
            break;
        u->base.forced = -1;
        u->base.kind = REQ_KIND_SESSION;
        u->base.closed = u->base.mirrored = u->base.primary_done = u->base.replay = 1;
        mirror_append(&s->base.mirror, &u->base);
        if (s->base.mirror.scur == NULL)
            s->base.mirror.scur = &u->base;
    }
    size_t len = evbuffer_get_length(sh->state_log);
    copy_prefix(sh->pending, sh->state_log, len);
    mirror_account(&s->base.mirror, (int64_t)len);
    if (sh->replay_incomplete)
        slog(s, CONF_LOG_WARN, "session state too large to replay in full on the shadow");
}

/* libpq's login to the shadow starts: 0, or -1 with the shadow detached. */
static int
login_begin(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    sh->pq = pg_login_start(s, s->base.shadow_be);
    if (sh->pq == NULL || PQstatus(sh->pq) == CONNECTION_BAD) {
        char why[300];
        snprintf(why, sizeof(why), "login failed: %s",
                 sh->pq ? PQerrorMessage(sh->pq) : "out of memory");
        why[strcspn(why, "\n")] = '\0';
        detach(s, SHADOW_SHADOW_ERROR, why);
        return -1;
    }
    return 0;
}

/* A new attach: statements present on the shadow carry its epoch. */
static void
next_attach(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    sh->epoch = (sh->epoch + 1) & 0x7fffffffu;
    if (sh->epoch == 0)
        sh->epoch = 1;
    sh->login_started_ns = session_now_ns();
    sh->login_retries = 0;
}

/* libpq logs in with the shadow backend's credentials: 0, or -1 with the shadow detached. */
static int
libpq_login_begin(struct pg_session *s, const struct pgw_startup *st)
{
    struct pg_shadow *sh = s->shadow;
    int as_role = pg_login_as_role(s, s->base.shadow_be);
    if (as_role < 0) {
        s->base.mirror.identity_refused = 1;
        detach(s, SHADOW_DROPPED, "the client's role name or options are too long to act "
                                  "as it on the shadow: this session is not mirrored");
        return -1;
    }
    sh->as_role = as_role;
    if (as_role)
        snprintf(sh->client_role, sizeof(sh->client_role), "%s", pgw_startup_param(st, "user"));
    if (login_begin(s) != 0)
        return -1;
    key_trace_start(s);
    return 0;
}

/*
 * pg_shadow_start - open a shadow session for s: as the client's role
 * itself when tandem authenticated the client (pg_shadow_login.c, with its
 * ClientKey), else logged in by libpq as the shadow backend's configured
 * user (acting as the client's role) or as the client's own user; with the
 * client's database and startup parameters.  Never waits.
 */
void
pg_shadow_start(struct pg_session *s)
{
    struct pgw_startup st;
    const char *err;
    size_t used;

    /* out of line, and only for sessions that mirror: most of a passthrough session's size */
    if (s->shadow == NULL && (s->shadow = calloc(1, sizeof(*s->shadow))) == NULL)
        return; /* the session runs without a shadow */
    struct pg_shadow *sh = s->shadow;
    if (s->base.mirror.state == MIRROR_OFF) {
        if (sh->pending == NULL)
            sh->pending = evbuffer_new();
        if (sh->state_log == NULL)
            sh->state_log = evbuffer_new();
        if (s->unit_buf == NULL)
            s->unit_buf = evbuffer_new();
        if (!sh->pending || !sh->state_log || !s->unit_buf ||
            session_mirror_open(&s->base) != 0)
            return; /* stays OFF: the session runs without a shadow */
    }
    if (pgw_startup_parse(s->startup, s->startup_len, &used, &st, &err) != PGW_OK)
        return;
    if (pgw_startup_param(&st, "replication") != NULL)
        return; /* replication connections are the primary's business only */

    s->base.mirror.state = MIRROR_CONNECTING; /* so a failure here is counted */
    if (pg_shadow_login_start(s) == 0) {
        /* tandem logs in as the client itself (it authenticated it): the state waits for it */
        next_attach(s);
        queue_state_replay(s);
        return;
    }
    if (libpq_login_begin(s, &st) != 0)
        return;
    next_attach(s);
    queue_state_replay(s);
    login_step(s);
}

void
pg_shadow_login_fallback(struct pg_session *s, const char *why)
{
    struct pgw_startup st;
    const char *err;
    size_t used;

    pg_count_backend(s, s->base.shadow_be, METRIC_B_LOGIN_FALLBACKS, 1);
    slog(s, CONF_LOG_WARN, "shadow \"%s\": logging in as the client failed (%s): logging in "
         "with the shadow backend's own credentials instead", s->base.shadow_be->conf->name, why);
    if (pgw_startup_parse(s->startup, s->startup_len, &used, &st, &err) != PGW_OK) {
        detach(s, SHADOW_SHADOW_ERROR, "invalid startup packet");
        return;
    }
    if (libpq_login_begin(s, &st) != 0)
        return;
    login_step(s); /* the state replay waits in pending already */
}

/* A ParameterStatus (at the front of in) saying is_superuser is on. */
static int
superuser_again(struct evbuffer *in, size_t body_len)
{
    uint8_t buf[64];
    const char *name, *value;
    if (body_len > sizeof(buf))
        return 0; /* not "is_superuser\0on\0" */
    struct evbuffer_ptr pos;
    evbuffer_ptr_set(in, &pos, PGW_HEADER_LEN, EVBUFFER_PTR_SET);
    evbuffer_copyout_from(in, &pos, buf, body_len);
    return pgw_parameter_status_parse(buf, body_len, &name, &value) == PGW_OK &&
           strcmp(name, "is_superuser") == 0 && strcmp(value, "on") == 0;
}

/*
 * A routed read's answer is the client's, but for the ParseCompletes of
 * the Parses tandem added (the statement was not prepared on the shadow).
 */
static int
forwards_message(struct pg_session *s, struct pg_unit *u, uint8_t type)
{
    if (u == NULL || !u->base.routed || &u->base != s->base.routed)
        return 0;
    /* the guards count a routed read the shadow failed, compared or not */
    if (type == 'E' && u->cmp == NULL && u->base.forced < 0)
        u->base.forced = SHADOW_SHADOW_ERROR;
    if (type == '1') {
        unsigned i = u->parse_seen++;
        if (i < 64 && (u->parse_injected >> i) & 1)
            return 0;
    }
    return 1;
}

/* The shadow's ReadyForQuery for unit u: its digest is final. */
static void
shadow_answered(struct pg_session *s, struct pg_unit *u)
{
    struct pg_shadow *sh = s->shadow;
    if (u->relock && sh->relocks_pending > 0)
        sh->relocks_pending--;
    if (u->cmp)
        pgdigest_final(&u->cmp->shadow, &u->cmp->sres);
    mirror_shadow_answered(&s->base.mirror, &u->base, session_clock(&s->base));
}

/*
 * The message whose header h is at the front of the shadow's input (avail
 * bytes there): digest it for the current unit's comparison, or watch it.
 * Returns 0 to wait for more of it (or stop: detached), 1 once begun.
 */
static int
shadow_message(struct pg_session *s, const struct pgw_header *h, size_t avail)
{
    struct pg_shadow *sh = s->shadow;
    struct evbuffer *in = s->base.shadow_conn->in;
    size_t total = pgw_header_total(h), body = h->len - 4;
    struct pg_unit *u = pg_unit_of(s->base.mirror.scur);
    int whole = avail >= total;

    if (h->type == 'S' && sh->as_role && !sh->super_at_login && sh->relocks_pending == 0) {
        if (!whole)
            return 0;
        if (superuser_again(in, body)) {
            /* the session left the client's role for the login's own rights */
            detach(s, SHADOW_DROPPED, "the shadow session left the client's role");
            return 0;
        }
    }
    int forward = forwards_message(s, u, h->type);
    if (u && u->cmp && h->type != 'Z' && total <= DIGEST_MAX_MESSAGE) {
        if (!whole)
            return 0; /* wait for the whole message */
        feed(&u->cmp->shadow, h->type, in, 0, body);
    } else if (h->type == 'Z') {
        if (!whole)
            return 0;
    } else if (u && u->cmp && total > DIGEST_MAX_MESSAGE) {
        free(u->cmp);
        u->cmp = NULL; /* mirrored, not compared */
    }
    if (h->type == 'Z' && u != NULL)
        shadow_answered(s, u);
    size_t take = pg_frame_begin(&sh->frame, h, avail);
    sh->frame.target = (uint8_t)forward;
    if (forward)
        pg_session_forward(s, in, take);
    else
        evbuffer_drain(in, take);
    if (h->type == 'Z') {
        if (forward)
            pg_session_route_done(s);
        complete_units(s);
        session_shadow_progress(&s->base);
    }
    return 1;
}

/*
 * shadow_run - the whole messages that lie in the first chain of the
 * shadow's input (a read's bytes usually are one), read in place: framed,
 * digested and drained together, up to and including a ReadyForQuery.
 * shadow_message, one at a time, takes what is not that plain: a message
 * cut by the chain's end, one to check or forward (a routed answer, a
 * ParameterStatus watched for the role), one not valid (it says why).
 * Returns the bytes consumed; 0: none here, the caller goes one at a time.
 */
static size_t
shadow_run(struct pg_session *s, struct evbuffer *in)
{
    struct pg_shadow *sh = s->shadow;
    struct pg_unit *u = pg_unit_of(s->base.mirror.scur);
    size_t contig = evbuffer_get_contiguous_space(in), at = 0;
    const uint8_t *p;
    struct pgw_header h;
    const char *err;
    int ready = 0;

    if (contig < PGW_HEADER_LEN || (u != NULL && u->base.routed && &u->base == s->base.routed))
        return 0;
    p = evbuffer_pullup(in, (ev_ssize_t)contig); /* in one chain already: no copy */
    while (!ready && contig - at >= PGW_HEADER_LEN) {
        if (pgw_header_parse(p + at, PGW_HEADER_LEN, 0x40000000u, &h, &err) != PGW_OK ||
            !pgw_backend_type_valid(h.type) || !pgw_backend_len_valid(h.type, h.len))
            break;
        size_t total = pgw_header_total(&h);
        if (total > contig - at ||
            (h.type == 'S' && sh->as_role && !sh->super_at_login && sh->relocks_pending == 0))
            break;
        if (u && u->cmp && h.type != 'Z') {
            if (total <= DIGEST_MAX_MESSAGE && pgdigest_counts(h.type)) {
                struct iovec body = {(void *)(p + at + PGW_HEADER_LEN), h.len - 4};
                pgdigest_feed(&u->cmp->shadow, h.type, &body, body.iov_len > 0, body.iov_len);
            } else if (total > DIGEST_MAX_MESSAGE) {
                free(u->cmp);
                u->cmp = NULL; /* mirrored, not compared */
            }
        }
        ready = h.type == 'Z';
        at += total;
    }
    if (at > 0)
        evbuffer_drain(in, at);
    if (ready) {
        if (u != NULL)
            shadow_answered(s, u);
        complete_units(s);
        session_shadow_progress(&s->base);
    }
    return at;
}

/* pg_shadow_input - read the shadow's answers: digest the current unit's, count ReadyForQuery. */
void
pg_shadow_input(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;
    struct pg_shadow *sh = s->shadow;
    struct evbuffer *in = s->base.shadow_conn->in;
    struct pgw_header h;
    const char *err;

    while (s->base.mirror.state == MIRROR_READY) {
        if (sh->frame.skip == 0 && shadow_run(s, in) > 0)
            continue;
        size_t avail = evbuffer_get_length(in), take;
        enum pg_frame_result fr = pg_frame_step(&sh->frame, in, NULL, 0, avail, PG_FRAME_BACKEND,
                                                0x40000000u, &h, &take, &err);
        if (fr == PG_FRAME_PASS) {
            if (sh->frame.target) /* the rest of a routed answer: the client's */
                pg_session_forward(s, in, take);
            else
                evbuffer_drain(in, take);
            if (sh->frame.skip > 0)
                return;
            continue;
        }
        if (fr == PG_FRAME_MORE)
            return;
        if (fr == PG_FRAME_BAD) {
            detach(s, SHADOW_SHADOW_ERROR, "the shadow sent an invalid message");
            return;
        }
        if (!shadow_message(s, &h, avail))
            return;
    }
}

/* pg_shadow_release - at session end: close the shadow, forget every unit. */
void
pg_shadow_release(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    mirror_release_all(&s->base.mirror);
    s->building = NULL;
    if (s->unit_buf)
        evbuffer_free(s->unit_buf);
    s->unit_buf = NULL;
    if (sh == NULL)
        return;
    if (sh->pending)
        evbuffer_free(sh->pending);
    if (sh->state_log)
        evbuffer_free(sh->state_log);
    free(sh);
    s->shadow = NULL;
}

/* A statement the new primary must have before the roles swap. */
struct sync_ctx {
    struct pg_session *s;
    struct evbuffer *out;
    unsigned n;
};

static void
mark_present(struct pgstmt *st, void *arg)
{
    struct sync_ctx *ctx = arg;
    st->epoch = st->name[0] != '\0' ? ctx->s->shadow->epoch : 0;
}


/* A statement the new primary must have before the roles swap. */
static void
sync_one(struct pgstmt *st, void *arg)
{
    struct sync_ctx *ctx = arg;
    if (st->name[0] == '\0' || st->parse == NULL || st->epoch == ctx->s->shadow->epoch)
        return;
    evbuffer_add(ctx->out, st->parse, st->parse_len);
    st->epoch = ctx->s->shadow->epoch;
    ctx->n++;
}

/*
 * pg_shadow_swap_ready - 1 when the shadow may become the primary now (the
 * engine found it idle, owing nothing): logged in as the client, and
 * holding every statement the client prepared.  Statements it lacks
 * (prepared in units it never saw) are sent now, as a unit of ours; then 0
 * until it answered.  -1: logged in as tandem's user instead.
 */
int
pg_shadow_swap_ready(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    /* logged in as tandem's user: the client would get that login's rights (SET ROLE NONE) */
    if (sh == NULL || sh->as_role)
        return -1;
    if (sh->frame.skip > 0)
        return 0;
    struct sync_ctx ctx = {.s = s, .out = evbuffer_new()};
    if (ctx.out == NULL)
        return 0;
    pgstmt_foreach(s->stmts, sync_one, &ctx);
    if (ctx.n == 0) {
        evbuffer_free(ctx.out);
        return 1;
    }
    uint8_t sync[5] = {'S', 0, 0, 0, 4};
    evbuffer_add(ctx.out, sync, sizeof(sync));
    struct pg_unit *u = calloc(1, sizeof(*u));
    size_t len = evbuffer_get_length(ctx.out);
    if (u != NULL && admit(s, len) == 0) {
        u->base.forced = -1;
        u->base.kind = REQ_KIND_SESSION;
        u->base.closed = u->base.mirrored = u->base.primary_done = u->base.replay = 1;
        u->base.closed_ns = u->base.shadow_sent_ns = session_now_ns();
        mirror_append(&s->base.mirror, &u->base);
        if (s->base.mirror.scur == NULL)
            s->base.mirror.scur = &u->base;
        send_admitted(s, ctx.out, len);
    } else {
        free(u);
    }
    evbuffer_free(ctx.out);
    return 0;
}

/*
 * pg_shadow_swap - the roles swap: the engine traded the two connections;
 * here the libpq handles follow them.  The old primary has every statement
 * the client prepared.
 */
void
pg_shadow_swap(struct pg_session *s)
{
    struct pg_shadow *sh = s->shadow;
    PGconn *pq = sh->pq;
    sh->pq = s->server_pq;
    s->server_pq = pq;
    s->base.shadow_conn->borrowed = sh->pq != NULL;
    s->base.server.borrowed = s->server_pq != NULL;
    /* the client's cancel key now cancels on the connection that answers it */
    struct cancel_target answering = sh->key;
    sh->key = s->cancel.to;
    cancel_retarget(&s->cancel, &answering);
    sh->epoch = (sh->epoch + 1) & 0x7fffffffu;
    if (sh->epoch == 0)
        sh->epoch = 1;
    struct sync_ctx ctx = {.s = s};
    pgstmt_foreach(s->stmts, mark_present, &ctx);
    mirror_attached(&s->base.mirror);
}

/* pg_shadow_writes_owed - a unit that is no read is unanswered by the primary or the shadow. */
int
pg_shadow_writes_owed(const struct pg_session *s)
{
    return mirror_writes_owed(&s->base.mirror);
}

/*
 * pg_shadow_orphan - the client left: no primary answer will come for
 * units still waiting on it, and the unit being built will never close.
 * Their shadow answers are still read (a transaction must end there as it
 * ended on the primary) but not compared.
 */
void
pg_shadow_orphan(struct session *base)
{
    struct pg_session *s = (struct pg_session *)base;

    if (s->building) {
        s->building->base.closed = 1;
        s->building->base.shadow_done = 1;
        s->building->base.mirrored = 0;
        s->building = NULL;
    }
    for (struct mirror_unit *mu = s->base.mirror.head; mu; mu = mu->next) {
        struct pg_unit *u = pg_unit_of(mu);
        if (!mu->primary_done) {
            free(u->cmp); /* not compared */
            u->cmp = NULL;
        }
    }
    s->copy_mirror = 0;
    /* the primary may have run them before the client left: best keep the shadow alike */
    mirror_orphan(&s->base.mirror, session_now_ns());
}
