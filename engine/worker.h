/*
 * worker.h - one thread, one event_base, its own listening sockets.
 *
 * Every session and all of its backend connections live on the worker that
 * accepted the client, so the request path takes no lock.  The main thread
 * talks to a worker only through worker_post_*(), which set a field under
 * the worker's mutex and wake its loop; the worker acts on it in its own
 * thread.
 *
 *   main thread                         worker thread
 *   -----------                         -------------
 *   reload: runtime_new() ---post----->  adopt runtime, open/close listeners
 *   SIGTERM ----------------post----->  stop accepting, drain sessions
 *   SIGINT / drain timeout -post----->  close everything, leave the loop
 */
#ifndef TANDEM_WORKER_H
#define TANDEM_WORKER_H

#include <event2/event.h>
#include <pthread.h>
#include <stdint.h>

#include "metrics/metric.h"
#include "control/runtime.h"
#include "routing/wrr.h"

/* What a client flood is refused for: summarized in the log (worker_note_refused). */
enum worker_refusal {
    WORKER_REFUSED_OVER_LIMIT,      /* over max_client_conn: answered "too many clients" */
    WORKER_REFUSED_OVER_GRACE,      /* far over it: closed at once, no answer */
    WORKER_REFUSED_STARTUP_TIMEOUT, /* no login within startup_timeout (sent nothing, or too little) */
    WORKER_REFUSED_CANCEL_UNKNOWN,  /* a CancelRequest whose key matches no session */
    WORKER_REFUSED_TLS_REQUIRED,    /* a plain-text login on a `tls required` listener */
    WORKER_REFUSED__COUNT
};
#define WORKER_REFUSED_LOG_MS 10000

#define WORKER_SCRATCH_SIZE (64 * 1024)

struct wlistener;
struct session;
struct pgcache;
struct pgdesc;
struct shadow_shard;

/*
 * Work of a plug-in's that outlives the session it came from (a re-check
 * of a comparison), on the worker's event base: the worker cancels what is
 * left of it when it ends.  cancel frees the job (worker_job_remove first).
 */
struct worker_job {
    struct worker_job *prev, *next;
    void (*cancel)(struct worker_job *job);
};

/* protocol_state's slot for pg/pg_park.c (the first two are by enum conf_proto). */
#define WORKER_STATE_PG_PARK 2

struct worker {
    int id;
    pthread_t thread;
    struct event_base *base;
    struct event *notify;        /* on notify_fd, an eventfd: the other threads' posts */
    int notify_fd;
    struct metric_shard *metrics;
    struct shadow_shard *shadow;  /* comparison outcomes recorded by this worker */
    struct pgcache *cls_cache;    /* statement classifications, by text */
    struct pgdesc *desc_cache;    /* statement fingerprints for the shadow report, by text */
    void *pg_unit_pool;           /* pg_shadow.c's mirror units kept for reuse (its own job frees it) */
    struct event *tick;           /* shadow timeouts, lag and detached gauges */
    struct event *settle;         /* settles the sessions queued by session_settle_soon */
    struct session *settle_head;  /* those sessions, singly linked (session.settle_next) */
    struct runtime *rt;          /* for new sessions; one reference held */
    struct wlistener *listeners; /* open listening sockets, by address */
    struct session *sessions;    /* every protocol's, doubly linked, for drain and quit */
    unsigned nsessions;
    struct worker_job *jobs;     /* doubly linked */
    /*
     * What a protocol plug-in keeps per worker, by enum conf_proto (the
     * Redis plug-in's shared server connections, the PostgreSQL plug-in's
     * auth_query cache), and from WORKER_STATE_PG_PARK on a plug-in's
     * second kind (the PostgreSQL server connections kept for reuse),
     * NULL until it needs it; the plug-in frees it through a worker_job of
     * its own.
     */
    void *protocol_state[4];
    uint64_t next_conn_id;
    uint8_t random_pool[256];    /* OpenSSL's random bytes, drawn ahead (worker_random) */
    size_t random_left;          /* unused at the pool's end */
    struct worker_wrr {           /* this worker's read rotation per listener slot */
        uint32_t version;         /* control_weights_version() it was built from */
        int built;
        struct wrr wrr;
    } wrr[METRIC_MAX_LISTENERS];
    int draining;
    int started;                 /* listeners opened at least once */
    uint64_t accept_failures;    /* since the last report (on_accept_error) */
    uint64_t accept_logged_ns;   /* when it was last reported; 0: never */
    uint64_t refused[METRIC_MAX_LISTENERS][WORKER_REFUSED__COUNT]; /* since the last report */
    uint64_t refused_logged_ns;  /* when refusals were last reported; 0: never */

    pthread_mutex_t lock;        /* guards the posted fields below */
    struct runtime *posted_rt;
    int posted_drain;
    int posted_quit;
    int posted_kick;             /* a cutover or rollback moved: look at the sessions now */

    uint8_t scratch[WORKER_SCRATCH_SIZE];
};

/*
 * worker_random - n bytes (at most 256) from OpenSSL's generator, drawn
 * ahead in blocks: one RAND_bytes call costs about as much as the rest of
 * accepting a session.  Worker thread only.  0, or -1 when the generator
 * failed (nothing written).
 */
int worker_random(struct worker *w, void *out, size_t n);

void worker_job_add(struct worker *w, struct worker_job *job);
void worker_job_remove(struct worker *w, struct worker_job *job);

/* worker_init - create the base and notify event; no thread yet. */
int worker_init(struct worker *w, int id, struct runtime *rt);

/*
 * worker_open_listeners - open this worker's SO_REUSEPORT sockets for every
 * listener of w->rt.  Called before the thread starts, so bind errors reach
 * the main thread: returns -1 with err filled.
 */
int worker_open_listeners(struct worker *w, char *err, size_t errlen);

int worker_start(struct worker *w);
void worker_join(struct worker *w);
void worker_release(struct worker *w);

/* Messages from the main thread.  worker_post_runtime takes a reference. */
void worker_post_runtime(struct worker *w, struct runtime *rt);
void worker_post_drain(struct worker *w);
void worker_post_quit(struct worker *w);
void worker_post_kick(struct worker *w);

/* Sessions call these to link/unlink themselves. */
void worker_session_added(struct worker *w, struct session *s);

/*
 * worker_note_refused - a client (or a cancel request) refused on the
 * listener of metric slot `slot`.  A flood must not flood the log: the
 * first refusal is logged at once, the next ones are summed and logged
 * as one line per listener at most every WORKER_REFUSED_LOG_MS (by the
 * worker's tick, so the last counts are not left unsaid).  The caller
 * counts the refusal in its metric.
 */
void worker_note_refused(struct worker *w, int slot, enum worker_refusal r);
void worker_session_removed(struct worker *w, struct session *s);

/* The process-wide count of client connections, against max_client_conn. */
extern unsigned proxy_client_count;
/* Sessions whose client left while their shadow still owed answers. */
extern unsigned proxy_shadow_drains;

/*
 * A client whose socket's number is at or above this is closed at once and
 * the listener pauses as on an accept failure: descriptors are allocated
 * lowest first, so that number means fewer than WORKER_FD_HEADROOM remain,
 * and those are kept for the admin server (a new /metrics scrape) and the
 * backend connections of sessions already open.  Set at startup from
 * RLIMIT_NOFILE (worker_set_fd_limit); 0: no ceiling.
 */
#define WORKER_FD_HEADROOM 16
void worker_set_fd_limit(unsigned long nofile);

#endif /* TANDEM_WORKER_H */
