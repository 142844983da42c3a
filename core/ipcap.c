/* ipcap.c -- connections per client address (ipcap.h). A chained hash table of the addresses
 * that have connections open; an entry goes when its count falls to zero, so the table holds
 * at most as many entries as there are connections. */
#include "ipcap.h"
#include "mem.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct entry {
    char ip[46];
    int n;
    struct entry *next;
};

struct ipcap {
    int max;
    int count; /* entries */
    size_t nslots;
    struct entry **slots;
};

static uint64_t hash(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        h ^= (unsigned char) *s;
        h *= 1099511628211ull;
    }
    return h;
}

struct ipcap *ipcap_new(int max)
{
    struct ipcap *c = xcalloc(1, sizeof *c);
    c->max = max > 0 ? max : 0;
    c->nslots = 256;
    c->slots = xcalloc(c->nslots, sizeof *c->slots);
    return c;
}

void ipcap_free(struct ipcap *c)
{
    if (c == NULL)
        return;
    for (size_t i = 0; i < c->nslots; i++) {
        struct entry *e = c->slots[i];
        while (e) {
            struct entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(c->slots);
    free(c);
}

static struct entry **find(const struct ipcap *c, const char *ip)
{
    struct entry **p = &c->slots[hash(ip) % c->nslots];
    while (*p && strcmp((*p)->ip, ip) != 0)
        p = &(*p)->next;
    return p;
}

static void grow(struct ipcap *c)
{
    size_t n = c->nslots * 2;
    struct entry **slots = xcalloc(n, sizeof *slots);
    for (size_t i = 0; i < c->nslots; i++) {
        struct entry *e = c->slots[i];
        while (e) {
            struct entry *next = e->next;
            size_t k = hash(e->ip) % n;
            e->next = slots[k];
            slots[k] = e;
            e = next;
        }
    }
    free(c->slots);
    c->slots = slots;
    c->nslots = n;
}

int ipcap_take(struct ipcap *c, const char *ip)
{
    if (c == NULL)
        return 1;
    struct entry **p = find(c, ip);
    if (*p) {
        if (c->max && (*p)->n >= c->max)
            return 0;
        (*p)->n++;
        return 1;
    }
    struct entry *e = xcalloc(1, sizeof *e);
    strncpy(e->ip, ip, sizeof e->ip - 1);
    e->n = 1;
    *p = e;
    if ((size_t) ++c->count > c->nslots)
        grow(c);
    return 1;
}

void ipcap_give(struct ipcap *c, const char *ip)
{
    if (c == NULL)
        return;
    struct entry **p = find(c, ip);
    if (*p == NULL)
        return;
    if (--(*p)->n <= 0) {
        struct entry *e = *p;
        *p = e->next;
        free(e);
        c->count--;
    }
}

int ipcap_count(const struct ipcap *c, const char *ip)
{
    if (c == NULL)
        return 0;
    struct entry **p = find(c, ip);
    return *p ? (*p)->n : 0;
}

int ipcap_addresses(const struct ipcap *c)
{
    return c ? c->count : 0;
}
