/*
 * lru.h - an intrusive doubly-linked recency list, for the bounded caches
 * (pgcache, pgdesc): the most recent entry at the head, the next victim at
 * the tail.  An entry embeds struct lru_node; LRU_ENTRY() gets the entry
 * back.  No allocation, no locks.
 */
#ifndef TANDEM_LRU_H
#define TANDEM_LRU_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

struct lru_node {
    struct lru_node *prev; /* toward the head (more recent) */
    struct lru_node *next; /* toward the tail (less recent) */
};

struct lru {
    struct lru_node *head;
    struct lru_node *tail;
};

/* The entry of type `type` whose member `member` is node (NULL stays NULL). */
#define LRU_ENTRY(node, type, member)                                                             \
    ((node) ? (type *)(void *)((char *)(node) - offsetof(type, member)) : (type *)NULL)

/*
 * lru_buckets - a cache's hash table: a power of two of zeroed bucket
 * heads of `size` bytes each, at least max_entries of them (a chain is
 * one entry long on average when full); *mask gets their number less one.
 * NULL when max_entries is 0, absurd, or memory is short.
 */
static inline void *
lru_buckets(size_t max_entries, size_t size, size_t *mask)
{
    size_t n = 1;
    if (max_entries == 0 || max_entries > SIZE_MAX / 4 / size)
        return NULL;
    while (n < max_entries)
        n <<= 1;
    *mask = n - 1;
    return calloc(n, size);
}

static inline void
lru_unlink(struct lru *l, struct lru_node *n)
{
    if (n->prev != NULL)
        n->prev->next = n->next;
    else
        l->head = n->next;
    if (n->next != NULL)
        n->next->prev = n->prev;
    else
        l->tail = n->prev;
    n->prev = n->next = NULL;
}

static inline void
lru_push_head(struct lru *l, struct lru_node *n)
{
    n->prev = NULL;
    n->next = l->head;
    if (l->head != NULL)
        l->head->prev = n;
    l->head = n;
    if (l->tail == NULL)
        l->tail = n;
}

/* lru_touch - n becomes the most recent. */
static inline void
lru_touch(struct lru *l, struct lru_node *n)
{
    if (l->head != n) {
        lru_unlink(l, n);
        lru_push_head(l, n);
    }
}

#endif /* TANDEM_LRU_H */
