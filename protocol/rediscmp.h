/*
 * rediscmp.h - compare a Redis reply of the primary with the shadow's, and
 * show one to a human (pure).
 *
 * The session layer reads each side's reply with resp_reader (resp.h), which
 * gives its type, value (integers) and digest (ordered, or as a multiset
 * for unordered replies), and keeps the first bytes of each reply for the
 * report.  Nothing here touches a socket, logs or allocates.
 */
#ifndef TANDEM_REDISCMP_H
#define TANDEM_REDISCMP_H

#include <stddef.h>
#include <stdint.h>

#include "protocol/outcome.h"
#include "protocol/resp.h"

/* TTL drift accepted between the two sides: the shadow ran the write later. */
#define REDISCMP_TTL_TOLERANCE_S 2
#define REDISCMP_TTL_TOLERANCE_MS 2000

/*
 * rediscmp_outcome - what two replies to one command say.  flags are the
 * command's rediscmd_flags(); ttl_tolerance is in the reply's unit (see
 * rediscmp_ttl_tolerance).
 *
 *   both errors          same text: match; else mismatch
 *   one side's error     primary_error / shadow_error
 *   TTL_REPLY integers   both >= 0 and within ttl_tolerance: match
 *                        (-1 no expiry, -2 no key: exactly)
 *   otherwise            type and digest equal: match
 * A mismatch of a NONDET command (RANDOMKEY, SPOP, TIME ...) is noise.
 */
enum shadow_outcome rediscmp_outcome(uint32_t flags, const struct resp_reply_info *primary,
                                     const struct resp_reply_info *shadow, int64_t ttl_tolerance);

/* rediscmp_ttl_tolerance - the tolerance for a command name: ms for "p..." (PTTL, PEXPIRETIME). */
int64_t rediscmp_ttl_tolerance(const char *name);

/*
 * rediscmp_render - write a reply's first len bytes (of total, the whole
 * reply's size) as redis-cli would show them, on one line:
 *   "bar"   (integer) 5   (nil)   (error) ERR ...   OK   ["a", "b", (integer) 1]
 * Non-printable bytes are \xHH; a reply cut short (len < total, or out
 * full) ends with "...".  out is always NUL-terminated (cap > 0); returns
 * the length written.
 */
size_t rediscmp_render(const uint8_t *buf, size_t len, uint64_t total, char *out, size_t cap);

#endif /* TANDEM_REDISCMP_H */
