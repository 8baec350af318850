/*
 * conf_tree.c - tokens to the nginx-style syntax tree; see conf_tree.h.
 *
 * A statement is NAME ARG* followed by ';' (a simple directive) or by
 * '{' ... '}' (a block).  The reader recovers from the slips a person makes
 * while editing - a stray ';' or '}', a forgotten ';' - so one run names all
 * of them; a bad token or an unclosed block ends the parse.
 */
#include <stdalign.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf_err.h"
#include "conf/conf_lex.h"
#include "conf/conf_tree.h"

#define ARENA_CHUNK (32 * 1024)

struct conf_arena_chunk {
    struct conf_arena_chunk *next;
    size_t used;
    size_t size;
    max_align_t data[];
};

void
conf_tree_init(struct conf_tree *t)
{
    memset(t, 0, sizeof(*t));
    t->root.name = "";
    t->root.label = "";
    t->root.block = 1;
}

void
conf_tree_release(struct conf_tree *t)
{
    struct conf_arena_chunk *c = t->chunks;

    while (c != NULL) {
        struct conf_arena_chunk *next = c->next;
        free(c);
        c = next;
    }
    conf_tree_init(t);
}

static void *
tree_alloc(struct conf_tree *t, size_t size)
{
    struct conf_arena_chunk *c = t->chunks;
    size_t align = alignof(max_align_t);

    size = (size + align - 1) & ~(align - 1);
    if (c == NULL || c->size - c->used < size) {
        size_t want = size > ARENA_CHUNK ? size : ARENA_CHUNK;
        c = malloc(sizeof(*c) + want);
        if (c == NULL)
            return NULL;
        c->size = want;
        c->used = 0;
        c->next = t->chunks;
        t->chunks = c;
    }
    void *p = (char *)c->data + c->used;
    c->used += size;
    return p;
}

char *
conf_tree_strndup(struct conf_tree *t, const char *s, size_t len)
{
    char *p = tree_alloc(t, len + 1);

    if (p == NULL)
        return NULL;
    memcpy(p, s, len);
    p[len] = '\0';
    return p;
}

/* A node whose strings are already in the arena. */
static struct conf_node *
tree_node(struct conf_tree *t, struct conf_node *parent, const char *name, const char *label,
          int line, int block, const char **args, size_t nargs)
{
    if (t->nnodes >= CONF_TREE_MAX_NODES) {
        t->fatal = 1;
        return NULL;
    }
    struct conf_node *n = tree_alloc(t, sizeof(*n));
    if (n == NULL) {
        t->fatal = 1;
        return NULL;
    }
    memset(n, 0, sizeof(*n));
    n->name = name;
    n->label = label != NULL ? label : name;
    n->args = args;
    n->nargs = nargs;
    n->line = line;
    n->block = block;
    if (parent == NULL)
        parent = &t->root;
    if (parent->last != NULL)
        parent->last->next = n;
    else
        parent->child = n;
    parent->last = n;
    t->nnodes++;
    return n;
}

struct conf_node *
conf_tree_add(struct conf_tree *t, struct conf_node *parent, const char *name, const char *label,
              int line, int block, const char *const *args, size_t nargs)
{
    const char **copy = NULL;
    char *cname, *clabel = NULL;

    if (nargs > CONF_TREE_MAX_ARGS)
        return NULL;
    cname = conf_tree_strndup(t, name, strlen(name));
    if (label != NULL)
        clabel = conf_tree_strndup(t, label, strlen(label));
    if (nargs > 0)
        copy = tree_alloc(t, nargs * sizeof(*copy));
    if (cname == NULL || (label != NULL && clabel == NULL) || (nargs > 0 && copy == NULL)) {
        t->fatal = 1;
        return NULL;
    }
    for (size_t i = 0; i < nargs; i++) {
        copy[i] = conf_tree_strndup(t, args[i], strlen(args[i]));
        if (copy[i] == NULL) {
            t->fatal = 1;
            return NULL;
        }
    }
    return tree_node(t, parent, cname, clabel, line, block, copy, nargs);
}

struct tree_parser {
    struct conf_tree *t;
    struct conf_errors *errs;
    int nerr;
    int pushback; /* a token to read again, or -1 */
    struct conf_lex lx;
};

static void
tree_err(struct tree_parser *p, int line, const char *what, const char *subject)
{
    char q[CONF_QUOTE_MAX];

    if (subject != NULL)
        conf_err_add(p->errs, line, "%s %s", what, conf_err_quote(subject, q, sizeof(q)));
    else
        conf_err_add(p->errs, line, "%s", what);
    p->nerr++;
}

/* The arena or the node budget ran out: say which, once. */
static void
tree_exhausted(struct tree_parser *p, int line)
{
    if (p->t->nnodes >= CONF_TREE_MAX_NODES)
        conf_err_add(p->errs, line, "too many directives (max %d)", CONF_TREE_MAX_NODES);
    else
        conf_err_add(p->errs, line, "out of memory");
    p->nerr++;
    p->t->fatal = 1;
}

static enum conf_tok
tree_next(struct tree_parser *p)
{
    if (p->pushback >= 0) {
        enum conf_tok tok = (enum conf_tok)p->pushback;
        p->pushback = -1;
        return tok;
    }
    return conf_lex_next(&p->lx);
}

static void parse_block(struct tree_parser *p, struct conf_node *parent, int depth);

/* Read the body of block NODE, which sits at DEPTH. */
static void
enter_block(struct tree_parser *p, struct conf_node *node, int depth)
{
    if (depth + 1 > CONF_TREE_MAX_DEPTH) {
        conf_err_add(p->errs, node->line, "blocks nested too deeply (max %d)", CONF_TREE_MAX_DEPTH);
        p->nerr++;
        p->t->fatal = 1;
        return;
    }
    parse_block(p, node, depth + 1);
}

/*
 * Parse a body whose owner is unusable (a stray '{', a directive already
 * rejected) so the braces still balance; the nodes are never linked.
 */
static void
skip_block(struct tree_parser *p, const char *name, int line, int depth)
{
    struct conf_node orphan;

    memset(&orphan, 0, sizeof(orphan));
    orphan.name = name;
    orphan.label = name;
    orphan.line = line;
    orphan.block = 1;
    enter_block(p, &orphan, depth);
}

/* A statement whose first word is in p->lx.tok. */
static void
parse_statement(struct tree_parser *p, struct conf_node *parent, int depth)
{
    const char *args[CONF_TREE_MAX_ARGS];
    size_t nargs = 0;
    int too_many = 0;
    int line = p->lx.tok_line;
    char *name = conf_tree_strndup(p->t, p->lx.tok, p->lx.tok_len);

    if (name == NULL) {
        tree_exhausted(p, line);
        return;
    }
    for (;;) {
        enum conf_tok tok = tree_next(p);
        struct conf_node *node;
        const char **copy;

        switch (tok) {
        case CONF_TOK_WORD:
            if (nargs == CONF_TREE_MAX_ARGS) {
                too_many = 1;
                continue;
            }
            args[nargs] = conf_tree_strndup(p->t, p->lx.tok, p->lx.tok_len);
            if (args[nargs] == NULL) {
                tree_exhausted(p, line);
                return;
            }
            nargs++;
            continue;

        case CONF_TOK_RBRACE:
        case CONF_TOK_EOF:
            /*
             * Keep the statement, so its value is still checked and its
             * absence reported nowhere else; the '}' or the end still counts.
             */
            tree_err(p, line, "missing \";\" after", name);
            p->pushback = (int)tok;
            /* fall through */
        case CONF_TOK_SEMI:
        case CONF_TOK_LBRACE:
            if (too_many) {
                char msg[64];
                snprintf(msg, sizeof(msg), "too many arguments (max %d) for", CONF_TREE_MAX_ARGS);
                tree_err(p, line, msg, name);
                if (tok == CONF_TOK_LBRACE)
                    skip_block(p, name, line, depth);
                return;
            }
            copy = NULL;
            if (nargs > 0) {
                copy = tree_alloc(p->t, nargs * sizeof(*copy));
                if (copy == NULL) {
                    tree_exhausted(p, line);
                    return;
                }
                memcpy(copy, args, nargs * sizeof(*copy));
            }
            node = tree_node(p->t, parent, name, NULL, line, tok == CONF_TOK_LBRACE, copy, nargs);
            if (node == NULL) {
                tree_exhausted(p, line);
                return;
            }
            if (tok == CONF_TOK_LBRACE)
                enter_block(p, node, depth);
            return;

        case CONF_TOK_ERROR:
            conf_err_add(p->errs, p->lx.err_line, "%s", p->lx.err);
            p->nerr++;
            p->t->fatal = 1;
            return;
        }
    }
}

static void
parse_block(struct tree_parser *p, struct conf_node *parent, int depth)
{
    while (!p->t->fatal) {
        enum conf_tok tok = tree_next(p);

        switch (tok) {
        case CONF_TOK_EOF:
            if (depth > 0) {
                /* The opening line is where the fix goes; the end says nothing. */
                tree_err(p, parent->line, "unterminated block", parent->name);
                p->t->fatal = 1;
            }
            return;
        case CONF_TOK_ERROR:
            conf_err_add(p->errs, p->lx.err_line, "%s", p->lx.err);
            p->nerr++;
            p->t->fatal = 1;
            return;
        case CONF_TOK_RBRACE:
            if (depth > 0)
                return;
            tree_err(p, p->lx.tok_line, "unexpected \"}\"", NULL);
            continue;
        case CONF_TOK_SEMI:
            tree_err(p, p->lx.tok_line, "unexpected \";\"", NULL);
            continue;
        case CONF_TOK_LBRACE:
            tree_err(p, p->lx.tok_line, "unexpected \"{\"", NULL);
            skip_block(p, "{", p->lx.tok_line, depth);
            continue;
        case CONF_TOK_WORD:
            parse_statement(p, parent, depth);
            continue;
        }
    }
}

int
conf_tree_parse(struct conf_tree *t, const char *buf, size_t len, struct conf_errors *errs)
{
    /* The lexer's token buffer is 4 KiB: keep it off the stack. */
    struct tree_parser *p = malloc(sizeof(*p));

    if (p == NULL) {
        conf_err_add(errs, 0, "out of memory");
        t->fatal = 1;
        return -1;
    }
    p->t = t;
    p->errs = errs;
    p->nerr = 0;
    p->pushback = -1;
    conf_lex_init(&p->lx, buf, len);
    parse_block(p, &t->root, 0);
    int rc = p->nerr > 0 ? -1 : 0;
    free(p);
    return rc;
}
