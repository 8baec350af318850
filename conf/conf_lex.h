/*
 * conf_lex.h - the configuration file's tokenizer (private to conf/).
 *
 * Tokens: words (any run of bytes other than whitespace, '{', '}', ';' and
 * '"'), "quoted strings", '{', '}' and ';'.  A '#' at the start of a token
 * runs to the end of the line (inside a word it is an ordinary byte, as in
 * nginx).  Strings may span lines and know the escapes \" \\ \n \t \r; any
 * other escape is an error.
 *
 * The lexer is pure: it reads only the buffer it was given, allocates
 * nothing, and copies each token into its own fixed buffer, so a token is
 * valid until the next conf_lex_next().  Every error is final: the caller
 * stops at the first CONF_TOK_ERROR (what follows an unterminated string or a
 * NUL byte is not worth guessing at).
 */
#ifndef TANDEM_CONF_LEX_H
#define TANDEM_CONF_LEX_H

#include <stddef.h>

/* Longest token, in bytes after unescaping (paths are at most 1023). */
#define CONF_TOKEN_MAX 4096

enum conf_tok {
    CONF_TOK_EOF,
    CONF_TOK_WORD, /* a bare word or a quoted string: see tok_quoted */
    CONF_TOK_LBRACE,
    CONF_TOK_RBRACE,
    CONF_TOK_SEMI,
    CONF_TOK_ERROR, /* err says why; err_line says where */
};

struct conf_lex {
    const char *buf;
    size_t len;
    size_t pos;
    int line;       /* line of buf[pos], from 1 */
    int tok_line;   /* line where the last token started */
    int tok_quoted; /* the last word was a "string" */
    size_t tok_len;
    char tok[CONF_TOKEN_MAX + 1]; /* the last word, NUL-terminated */
    char err[128];
    int err_line;
};

/* conf_lex_init - start reading BUF[0..LEN) at line 1. */
void conf_lex_init(struct conf_lex *lx, const char *buf, size_t len);

/* conf_lex_next - the next token; CONF_TOK_EOF forever once the end is reached. */
enum conf_tok conf_lex_next(struct conf_lex *lx);

#endif /* TANDEM_CONF_LEX_H */
