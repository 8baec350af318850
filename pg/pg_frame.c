/*
 * pg_frame.c - the PostgreSQL plug-in's framing step (pg_frame.h).
 */
#include "pg/pg_frame.h"

#include <event2/buffer.h>
#include <stdio.h>

void
pg_frame_view_of(struct pg_frame_view *v, struct evbuffer *in)
{
    struct evbuffer_iovec first;
    if (evbuffer_peek(in, -1, NULL, &first, 1) < 1) {
        v->p = NULL;
        v->len = 0;
        return;
    }
    v->p = first.iov_base;
    v->len = first.iov_len;
}

enum pg_frame_result
pg_frame_step(struct pg_frame *f, struct evbuffer *in, const struct pg_frame_view *view,
              size_t at, size_t avail, enum pg_frame_side side, uint32_t max_len,
              struct pgw_header *h, size_t *n, const char **err)
{
    uint8_t copy[PGW_HEADER_LEN];
    const uint8_t *hdr = copy;

    if (f->skip > 0) {
        *n = avail < f->skip ? avail : f->skip;
        f->skip -= *n;
        return PG_FRAME_PASS;
    }
    if (avail < PGW_HEADER_LEN)
        return PG_FRAME_MORE;
    /*
     * The header where it lies when the first chain holds it (a read's
     * bytes usually are one chain): no walk to `at` and no copy for each
     * message, which was a sixth of the instructions of a short read.
     */
    if (view != NULL && view->len >= at + PGW_HEADER_LEN) {
        hdr = view->p + at;
    } else if (evbuffer_get_contiguous_space(in) >= at + PGW_HEADER_LEN) {
        hdr = evbuffer_pullup(in, (ev_ssize_t)(at + PGW_HEADER_LEN)) + at;
    } else {
        struct evbuffer_ptr pos;
        evbuffer_ptr_set(in, &pos, at, EVBUFFER_PTR_SET);
        evbuffer_copyout_from(in, &pos, copy, sizeof(copy));
    }
    if (pgw_header_parse(hdr, PGW_HEADER_LEN, max_len, h, err) != PGW_OK)
        return PG_FRAME_BAD;
    if (side == PG_FRAME_FRONTEND ? !pgw_frontend_type_valid(h->type)
                                  : !pgw_backend_type_valid(h->type)) {
        /* one thread per worker: the text is copied into the error at once */
        static __thread char text[64];
        snprintf(text, sizeof(text), "invalid %s message type %d",
                 side == PG_FRAME_FRONTEND ? "frontend" : "backend", h->type);
        *err = text;
        return PG_FRAME_BAD;
    }
    if (side == PG_FRAME_BACKEND && !pgw_backend_len_valid(h->type, h->len)) {
        static __thread char text[64];
        snprintf(text, sizeof(text), "backend message '%c' with length %u", h->type, h->len);
        *err = text;
        return PG_FRAME_BAD;
    }
    return PG_FRAME_HEADER;
}

size_t
pg_frame_begin(struct pg_frame *f, const struct pgw_header *h, size_t avail)
{
    size_t total = pgw_header_total(h);
    if (avail >= total)
        return total;
    f->skip = total - avail;
    return avail;
}
