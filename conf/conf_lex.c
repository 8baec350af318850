/* conf_lex.c - the configuration file's tokenizer; see conf_lex.h. */
#include <stdio.h>
#include <string.h>

#include "conf/conf_lex.h"

void
conf_lex_init(struct conf_lex *lx, const char *buf, size_t len)
{
    memset(lx, 0, sizeof(*lx));
    lx->buf = buf;
    lx->len = len;
    lx->line = 1;
}

static int
lex_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/* Bytes that end a bare word. */
static int
lex_delim(char c)
{
    return lex_space(c) || c == '{' || c == '}' || c == ';' || c == '"';
}

static enum conf_tok
lex_error_at(struct conf_lex *lx, int line, const char *msg)
{
    snprintf(lx->err, sizeof(lx->err), "%s", msg);
    lx->err_line = line;
    /* Park at the end so a caller that ignores the error cannot loop. */
    lx->pos = lx->len;
    return CONF_TOK_ERROR;
}

static enum conf_tok
lex_error(struct conf_lex *lx, const char *msg)
{
    return lex_error_at(lx, lx->line, msg);
}

static int
lex_put(struct conf_lex *lx, char c)
{
    if (lx->tok_len >= CONF_TOKEN_MAX)
        return -1;
    lx->tok[lx->tok_len++] = c;
    return 0;
}

static enum conf_tok
lex_too_long(struct conf_lex *lx)
{
    char msg[64];

    snprintf(msg, sizeof(msg), "token too long (max %d bytes)", CONF_TOKEN_MAX);
    return lex_error(lx, msg);
}

/* A "string": the opening quote is at lx->pos. */
static enum conf_tok
lex_string(struct conf_lex *lx)
{
    lx->pos++;
    while (lx->pos < lx->len) {
        char c = lx->buf[lx->pos++];

        if (c == '"') {
            lx->tok[lx->tok_len] = '\0';
            return CONF_TOK_WORD;
        }
        if (c == '\0')
            return lex_error(lx, "NUL byte in string");
        if (c == '\n')
            lx->line++;
        if (c == '\\') {
            if (lx->pos >= lx->len)
                break;
            char e = lx->buf[lx->pos++];
            switch (e) {
            case '"':
            case '\\':
                c = e;
                break;
            case 'n':
                c = '\n';
                break;
            case 't':
                c = '\t';
                break;
            case 'r':
                c = '\r';
                break;
            default: {
                char msg[64];
                if (e > 0x20 && e < 0x7f)
                    snprintf(msg, sizeof(msg), "bad escape \"\\%c\" in string", e);
                else
                    snprintf(msg, sizeof(msg), "bad escape in string");
                return lex_error(lx, msg);
            }
            }
        }
        if (lex_put(lx, c) != 0)
            return lex_too_long(lx);
    }
    /* Point at the opening quote: the end of the file says nothing. */
    return lex_error_at(lx, lx->tok_line, "unterminated string");
}

enum conf_tok
conf_lex_next(struct conf_lex *lx)
{
    lx->tok_len = 0;
    lx->tok_quoted = 0;
    lx->tok[0] = '\0';

    for (;;) {
        while (lx->pos < lx->len && lex_space(lx->buf[lx->pos])) {
            if (lx->buf[lx->pos] == '\n')
                lx->line++;
            lx->pos++;
        }
        if (lx->pos >= lx->len) {
            lx->tok_line = lx->line;
            return CONF_TOK_EOF;
        }
        if (lx->buf[lx->pos] != '#')
            break;
        while (lx->pos < lx->len && lx->buf[lx->pos] != '\n')
            lx->pos++;
    }

    lx->tok_line = lx->line;
    switch (lx->buf[lx->pos]) {
    case '{':
        lx->pos++;
        return CONF_TOK_LBRACE;
    case '}':
        lx->pos++;
        return CONF_TOK_RBRACE;
    case ';':
        lx->pos++;
        return CONF_TOK_SEMI;
    case '"':
        lx->tok_quoted = 1;
        return lex_string(lx);
    default:
        break;
    }

    while (lx->pos < lx->len && !lex_delim(lx->buf[lx->pos])) {
        char c = lx->buf[lx->pos];

        /* A NUL would silently cut every C string made from this token. */
        if (c == '\0')
            return lex_error(lx, "NUL byte in configuration");
        if (lex_put(lx, c) != 0)
            return lex_too_long(lx);
        lx->pos++;
    }
    lx->tok[lx->tok_len] = '\0';
    return CONF_TOK_WORD;
}
