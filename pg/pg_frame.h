/*
 * pg_frame.h - the one framing step of the PostgreSQL plug-in, for every
 * byte stream it reads (the client's, the primary's, the shadow's).
 *
 * Messages are framed, not decoded: a stream keeps how much of its current
 * message is still to pass (skip).  pg_frame_step() looks at offset `at`
 * of an evbuffer holding `avail` bytes from there: while a message is being
 * passed it says how many of its bytes are here (PG_FRAME_PASS); else it
 * reads and checks the next header (PG_FRAME_HEADER: a valid type of that
 * direction, a length within max_len), or needs more bytes, or refuses.
 * The caller decides what the message is worth, then pg_frame_begin()
 * says how much of it is here and keeps the rest to pass.
 */
#ifndef TANDEM_PG_FRAME_H
#define TANDEM_PG_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/pgw.h"

struct evbuffer;

struct pg_frame {
    size_t skip;    /* bytes of the current message still to pass */
    uint8_t target; /* where they go: the caller's own value, kept across reads */
};

enum pg_frame_result {
    PG_FRAME_PASS,   /* *n bytes of the current message are here: pass them */
    PG_FRAME_HEADER, /* *h is the next message's header, checked */
    PG_FRAME_MORE,   /* fewer than a header's bytes are here */
    PG_FRAME_BAD,    /* an invalid header: *err says why */
};

/* From which side a stream comes: the message types valid in it differ. */
enum pg_frame_side { PG_FRAME_FRONTEND, PG_FRAME_BACKEND };

/*
 * pg_frame_view - the bytes at the front of `in` that lie in one piece (its
 * first chain), looked up once for a pass over the buffer by a caller that
 * neither drains nor rearranges it meanwhile: a step then reads a header
 * lying there in place, with no library call per message (two calls per
 * message were a tenth of a short transaction's instructions).
 */
struct pg_frame_view {
    const uint8_t *p;
    size_t len;
};

/* pg_frame_view_of - v is in's first chain (len 0 for an empty buffer). */
void pg_frame_view_of(struct pg_frame_view *v, struct evbuffer *in);

/*
 * pg_frame_step - one step at offset `at` of in (see the top of this file).
 * view: in's pg_frame_view_of, still valid, or NULL.
 */
enum pg_frame_result pg_frame_step(struct pg_frame *f, struct evbuffer *in,
                                   const struct pg_frame_view *view, size_t at, size_t avail,
                                   enum pg_frame_side side, uint32_t max_len,
                                   struct pgw_header *h, size_t *n, const char **err);

/*
 * pg_frame_begin - the message with header h starts at the step's offset
 * and `avail` bytes are there: returns how many of it are here (to move
 * now); the rest is passed by the next steps.
 */
size_t pg_frame_begin(struct pg_frame *f, const struct pgw_header *h, size_t avail);

#endif /* TANDEM_PG_FRAME_H */
