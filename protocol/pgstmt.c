/*
 * pgstmt.c - per-session prepared statement table (see pgstmt.h).
 *
 * Open addressing with linear probing over a power-of-two array; removal
 * uses backward-shift deletion, so there are no tombstones to age.
 */
#include "protocol/pgstmt.h"

#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct pgstmt_table {
    struct pgstmt **slots;
    size_t cap;     /* power of two */
    size_t count;
    size_t parse_bytes;  /* Parse messages kept, all statements together */
    size_t parse_budget; /* at most; SIZE_MAX: no bound */
};

struct pgstmt_table *
pgstmt_table_new(void)
{
    struct pgstmt_table *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return NULL;
    t->cap = 16;
    t->parse_budget = SIZE_MAX;
    t->slots = calloc(t->cap, sizeof(*t->slots));
    if (t->slots == NULL) {
        free(t);
        return NULL;
    }
    return t;
}

static void
entry_free(struct pgstmt_table *t, struct pgstmt *e)
{
    t->parse_bytes -= e->parse_len;
    free(e->name);
    free(e->parse);
    free(e);
}

void
pgstmt_set_parse_budget(struct pgstmt_table *t, size_t bytes)
{
    t->parse_budget = bytes;
}

size_t
pgstmt_parse_bytes(const struct pgstmt_table *t)
{
    return t->parse_bytes;
}

void
pgstmt_clear(struct pgstmt_table *t)
{
    for (size_t i = 0; i < t->cap; i++) {
        if (t->slots[i]) {
            entry_free(t, t->slots[i]);
            t->slots[i] = NULL;
        }
    }
    t->count = 0;
}

void
pgstmt_table_free(struct pgstmt_table *t)
{
    if (t == NULL)
        return;
    pgstmt_clear(t);
    free(t->slots);
    free(t);
}

size_t
pgstmt_count(const struct pgstmt_table *t)
{
    return t->count;
}

void
pgstmt_foreach(struct pgstmt_table *t, void (*fn)(struct pgstmt *st, void *arg), void *arg)
{
    for (size_t i = 0; t != NULL && i < t->cap; i++)
        if (t->slots[i] != NULL)
            fn(t->slots[i], arg);
}

static size_t
home(const struct pgstmt_table *t, const char *name, size_t len)
{
    return (size_t)XXH3_64bits(name, len) & (t->cap - 1);
}

static int
same(const struct pgstmt *e, const char *name, size_t len)
{
    return strlen(e->name) == len && memcmp(e->name, name, len) == 0;
}

/* Index of NAME's slot, or of the empty slot where it would go. */
static size_t
find(const struct pgstmt_table *t, const char *name, size_t len)
{
    size_t i = home(t, name, len);
    while (t->slots[i] && !same(t->slots[i], name, len))
        i = (i + 1) & (t->cap - 1);
    return i;
}

static int
grow(struct pgstmt_table *t)
{
    size_t oldcap = t->cap;
    struct pgstmt **old = t->slots;
    struct pgstmt **slots = calloc(oldcap * 2, sizeof(*slots));
    if (slots == NULL)
        return -1;
    t->slots = slots;
    t->cap = oldcap * 2;
    for (size_t i = 0; i < oldcap; i++) {
        if (old[i]) {
            size_t j = find(t, old[i]->name, strlen(old[i]->name));
            t->slots[j] = old[i];
        }
    }
    free(old);
    return 0;
}

struct pgstmt *
pgstmt_get(struct pgstmt_table *t, const char *name, size_t namelen)
{
    if (namelen > PGSTMT_NAME_MAX)
        return NULL;
    return t->slots[find(t, name, namelen)];
}

struct pgstmt *
pgstmt_put(struct pgstmt_table *t, const char *name, size_t namelen, const uint8_t *parse,
           size_t parse_len, const struct pgclass_result *cls)
{
    if (namelen > PGSTMT_NAME_MAX || memchr(name, '\0', namelen) != NULL)
        return NULL;
    size_t i = find(t, name, namelen);
    struct pgstmt *e = t->slots[i];
    size_t replaced = e != NULL ? e->parse_len : 0;
    /* over the budget: the classification alone, as when nothing is to be kept */
    if (parse_len > t->parse_budget || t->parse_bytes - replaced > t->parse_budget - parse_len)
        parse_len = 0;
    /* no bytes to keep (no shadow to re-parse on): the classification alone */
    uint8_t *copy = NULL;
    if (parse_len > 0) {
        if ((copy = malloc(parse_len)) == NULL)
            return NULL;
        memcpy(copy, parse, parse_len);
    }

    if (e != NULL) {
        free(e->parse);
        t->parse_bytes = t->parse_bytes - e->parse_len + parse_len;
        e->parse = copy;
        e->parse_len = parse_len;
        e->cls = *cls;
        e->epoch = 0; /* a new definition exists nowhere yet */
        return e;
    }
    if (t->count >= PGSTMT_MAX)
        goto out_free;
    if ((t->count + 1) * 4 > t->cap * 3) {
        if (grow(t) != 0)
            goto out_free;
        i = find(t, name, namelen);
    }
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        goto out_free;
    e->name = strndup(name, namelen);
    if (e->name == NULL) {
        free(e);
        goto out_free;
    }
    e->parse = copy;
    e->parse_len = parse_len;
    t->parse_bytes += parse_len;
    e->cls = *cls;
    t->slots[i] = e;
    t->count++;
    return e;

out_free:
    free(copy);
    return NULL;
}

void
pgstmt_remove(struct pgstmt_table *t, const char *name, size_t namelen)
{
    if (namelen > PGSTMT_NAME_MAX)
        return;
    size_t i = find(t, name, namelen);
    if (t->slots[i] == NULL)
        return;
    entry_free(t, t->slots[i]);
    t->slots[i] = NULL;
    t->count--;
    /* backward-shift: pull later members of the probe run into the hole */
    for (size_t j = (i + 1) & (t->cap - 1); t->slots[j]; j = (j + 1) & (t->cap - 1)) {
        size_t h = home(t, t->slots[j]->name, strlen(t->slots[j]->name));
        /* move j to i when its home is not in the cyclic range (i, j] */
        if (((j - h) & (t->cap - 1)) >= ((j - i) & (t->cap - 1))) {
            t->slots[i] = t->slots[j];
            t->slots[j] = NULL;
            i = j;
        }
    }
}

/* A NUL-terminated string at body[*off]; advances *off past the NUL. */
static int
cstring(const uint8_t *body, size_t len, size_t *off, const char **s, size_t *slen)
{
    const uint8_t *nul = *off < len ? memchr(body + *off, '\0', len - *off) : NULL;
    if (nul == NULL)
        return -1;
    *s = (const char *)body + *off;
    *slen = (size_t)(nul - (body + *off));
    *off += *slen + 1;
    return 0;
}

int
pgstmt_parse_msg(const uint8_t *body, size_t len, const char **name, size_t *namelen,
                 const char **query, size_t *querylen)
{
    size_t off = 0;
    if (cstring(body, len, &off, name, namelen) != 0)
        return -1;
    return cstring(body, len, &off, query, querylen);
}

int
pgstmt_bind_msg(const uint8_t *body, size_t len, const char **name, size_t *namelen)
{
    size_t off = 0;
    const char *portal;
    size_t portallen;
    if (cstring(body, len, &off, &portal, &portallen) != 0)
        return -1;
    return cstring(body, len, &off, name, namelen);
}

int
pgstmt_target_msg(const uint8_t *body, size_t len, const char **name, size_t *namelen)
{
    size_t off = 1;
    if (len < 1 || body[0] != 'S')
        return -1;
    return cstring(body, len, &off, name, namelen);
}
