/*
 * conf_err.h - collecting configuration errors (private to conf/).
 *
 * Every stage of a load (reading, lexing, tree, directives, cross-checks)
 * appends to the caller's struct conf_errors; none stops at the first error
 * unless what follows could only be noise.
 */
#ifndef TANDEM_CONF_ERR_H
#define TANDEM_CONF_ERR_H

#include <stddef.h>

#include "conf/conf.h"

/* Longest user text quoted into a message, before "..." cuts it. */
#define CONF_QUOTE_TEXT 48
/* Room for one quoted value: quotes, escapes (4 bytes each), "...", NUL. */
#define CONF_QUOTE_MAX (CONF_QUOTE_TEXT * 4 + 8)

/*
 * conf_err_add - append "msg" at LINE (0: not tied to a line).  When the list
 * is full the error is counted in errs->dropped instead.
 */
void conf_err_add(struct conf_errors *errs, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * conf_err_quote - S as "S" for a message: control and non-ASCII bytes become
 * \xNN, '"' and '\' are escaped, and text past CONF_QUOTE_TEXT bytes is cut
 * with "...", so no input can garble a terminal or overflow a message.
 * out must hold CONF_QUOTE_MAX bytes; returns out.
 */
const char *conf_err_quote(const char *s, char *out, size_t outlen);

#endif /* TANDEM_CONF_ERR_H */
