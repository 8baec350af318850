/* conf_err.c - collecting configuration errors; see conf_err.h. */
#include <stdarg.h>
#include <stdio.h>

#include "conf/conf_err.h"

void
conf_err_add(struct conf_errors *errs, int line, const char *fmt, ...)
{
    if (errs->count >= CONF_MAX_ERRORS) {
        errs->dropped++;
        return;
    }
    struct conf_error *e = &errs->list[errs->count++];
    va_list ap;

    e->line = line;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

const char *
conf_err_quote(const char *s, char *out, size_t outlen)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = 0, i;

    if (outlen < CONF_QUOTE_MAX) {
        /* Our bug, not the input's: still return something printable. */
        if (outlen > 0)
            out[0] = '\0';
        return out;
    }
    out[o++] = '"';
    for (i = 0; s[i] != '\0' && i < CONF_QUOTE_TEXT; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c >= 0x7f) {
            out[o++] = '\\';
            out[o++] = 'x';
            out[o++] = hex[c >> 4];
            out[o++] = hex[c & 0xf];
        } else {
            out[o++] = (char)c;
        }
    }
    if (s[i] != '\0') {
        out[o++] = '.';
        out[o++] = '.';
        out[o++] = '.';
    }
    out[o++] = '"';
    out[o] = '\0';
    return out;
}
