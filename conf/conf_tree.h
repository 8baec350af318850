/*
 * conf_tree.h - the nginx-style syntax tree (private to conf/).
 *
 *   workers 2;                      node "workers", args ["2"]
 *   backend blue { address x:1; }   node "backend", args ["blue"], block,
 *                                     child "address", args ["x:1"]
 *
 * The tree knows syntax only: which words exist, where blocks open and
 * close, on which line.  What a directive means is conf_parse.c's business,
 * so the file and the command line (conf_cli.c builds a tree too) go
 * through the very same directive table.
 *
 * Every node and string lives in the tree's arena and goes away with
 * conf_tree_release().  Sizes are bounded: CONF_TREE_MAX_NODES directives,
 * CONF_TREE_MAX_ARGS arguments each, CONF_TREE_MAX_DEPTH nested blocks.
 */
#ifndef TANDEM_CONF_TREE_H
#define TANDEM_CONF_TREE_H

#include <stddef.h>

#include "conf/conf.h"

#define CONF_TREE_MAX_NODES 10000
#define CONF_TREE_MAX_ARGS 16
#define CONF_TREE_MAX_DEPTH 8

struct conf_node {
    const char *name;  /* the directive */
    const char *label; /* what messages call it: name, or "--flag" */
    const char **args; /* nargs words after the name */
    size_t nargs;
    int line;                /* of the name; 0 from the command line */
    int block;               /* written with a { } body */
    struct conf_node *child; /* first child of a block */
    struct conf_node *last;  /* last child, for appending */
    struct conf_node *next;  /* next sibling */
};

struct conf_arena_chunk;

struct conf_tree {
    struct conf_node root; /* unnamed block holding the top level */
    struct conf_arena_chunk *chunks;
    size_t nnodes;
    int fatal; /* a syntax error cut the tree short */
};

/* conf_tree_init - an empty tree; conf_tree_release() it when done. */
void conf_tree_init(struct conf_tree *t);
void conf_tree_release(struct conf_tree *t);

/*
 * conf_tree_parse - tokenize BUF[0..LEN) into T's root, appending every
 * syntax error to ERRS.  Errors a reader can step over (a stray ';' or '}',
 * a missing ';') leave the rest of the tree usable; the others (bad token,
 * unterminated block, too deep, too big) set t->fatal and stop.
 * Returns 0 when no error was found, -1 otherwise.
 */
int conf_tree_parse(struct conf_tree *t, const char *buf, size_t len, struct conf_errors *errs);

/*
 * conf_tree_add - append a node to PARENT (NULL: the root), copying NAME,
 * LABEL (NULL: same as name) and ARGS into the arena.  Returns the node, or
 * NULL when out of memory or past CONF_TREE_MAX_NODES (t->fatal is set).
 */
struct conf_node *conf_tree_add(struct conf_tree *t, struct conf_node *parent, const char *name,
                                const char *label, int line, int block, const char *const *args,
                                size_t nargs);

/* conf_tree_strndup - a NUL-terminated copy of S[0..LEN) in the arena, or NULL. */
char *conf_tree_strndup(struct conf_tree *t, const char *s, size_t len);

#endif /* TANDEM_CONF_TREE_H */
