/* rds_set.c -- placement over several Redis instances, and pipelines split over them
 * (rds_set.h). */
#include "rds_set.h"

#include <hiredis/hiredis.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "err.h"
#include "mem.h"

/* FNV-1a over name, a zero byte and tag, then splitmix64's finalizer: FNV alone mixes its last
 * bytes poorly, and tags often differ only there ("region:r1", "region:r2"). */
uint64_t rds_place_score(const char *name, const char *tag, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (const unsigned char *p = (const unsigned char *) name; *p; p++)
        h = (h ^ *p) * 0x100000001b3ULL;
    h = (h ^ 0) * 0x100000001b3ULL;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char) tag[i]) * 0x100000001b3ULL;
    h ^= h >> 30;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 27;
    h *= 0x94d049bb133111ebULL;
    h ^= h >> 31;
    return h;
}

int rds_set_place(const struct rds_set *s, const char *tag, size_t len)
{
    int best = 0;
    uint64_t top = 0;
    for (int i = 0; s != NULL && i < s->n; i++) {
        uint64_t sc = rds_place_score(s->name[i], tag, len);
        /* ties (never seen in practice) go to the smaller name: the order of the list
         * must not matter */
        if (i == 0 || sc > top || (sc == top && strcmp(s->name[i], s->name[best]) < 0)) {
            top = sc;
            best = i;
        }
    }
    return best;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

void rds_set_layout(const struct rds_set *set, char *buf, size_t cap)
{
    const char *names[RDS_SET_MAX];
    for (int k = 0; k < set->n; k++)
        names[k] = set->name[k];
    qsort(names, (size_t) set->n, sizeof names[0], cmp_names);
    size_t len = 0;
    buf[0] = '\0';
    for (int k = 0; k < set->n && len < cap; k++)
        len += (size_t) snprintf(buf + len, cap - len, "%s%s", k ? "," : "", names[k]);
}

/* ---- one pipeline over several instances ---------------------------------------------------- */

struct part {
    struct rds_split *sp;
    struct rds_op *op; /* NULL once its callback fired */
    int n;             /* commands in this part */
    int *idx;          /* [n]: their places in the caller's pipeline */
};

struct rds_split {
    rds_batch_cb *cb;
    void *ud;
    int ncmds;
    int nparts;
    int pending;                 /* parts not yet answered */
    struct redisReply **replies; /* [ncmds], owned: taken from the parts' callbacks */
    struct part parts[RDS_SET_MAX];
};

static void split_free(struct rds_split *sp)
{
    for (int i = 0; i < sp->ncmds; i++)
        freeReplyObject(sp->replies[i]); /* NULL-safe */
    for (int i = 0; i < sp->nparts; i++)
        free(sp->parts[i].idx);
    free(sp->replies);
    free(sp);
}

/* Cancel every part still owed, but skip: its callback is running. */
static void cancel_parts(struct rds_split *sp, const struct part *skip)
{
    for (int i = 0; i < sp->nparts; i++) {
        struct part *p = &sp->parts[i];
        if (p != skip && p->op) {
            rds_op_cancel(p->op);
            p->op = NULL;
        }
    }
}

static void on_part(struct redisReply **replies, int n, int status, void *ud)
{
    struct part *p = ud;
    struct rds_split *sp = p->sp;
    p->op = NULL;
    if (status < 0) {
        cancel_parts(sp, p);
        sp->cb(NULL, sp->ncmds, status, sp->ud);
        split_free(sp);
        return;
    }
    for (int j = 0; j < n && j < p->n; j++) {
        sp->replies[p->idx[j]] = replies[j];
        replies[j] = NULL; /* ours now: rds.c frees only what is left */
    }
    if (--sp->pending > 0)
        return;
    sp->cb(sp->replies, sp->ncmds, 0, sp->ud);
    split_free(sp);
}

static int is_word(const char *s, size_t len, const char *w)
{
    return strlen(w) == len && strncasecmp(s, w, len) == 0;
}

/* 0 when every MULTI ... EXEC/DISCARD keeps to one instance and every instance exists. */
static int check_places(const struct rds_set *s, const int *inst, int ncmds, const int *argc,
                        const char *const *const *argv, const size_t *const *argvlen)
{
    int open = -1; /* the instance of the open MULTI */
    for (int i = 0; i < ncmds; i++) {
        if (inst[i] < 0 || inst[i] >= s->n)
            return ERR_INVALID;
        if (open >= 0 && inst[i] != open)
            return ERR_INVALID;
        if (argc[i] > 0 && is_word(argv[i][0], argvlen[i][0], "MULTI"))
            open = inst[i];
        else if (argc[i] > 0 && (is_word(argv[i][0], argvlen[i][0], "EXEC") ||
                                 is_word(argv[i][0], argvlen[i][0], "DISCARD")))
            open = -1;
    }
    return 0;
}

int rds_split_batch(const struct rds_set *s, const int *inst, int ncmds, const int *argc,
                    const char *const *const *argv, const size_t *const *argvlen, int timeout_ms,
                    rds_batch_cb *cb, void *ud, struct rds_split **out)
{
    if (out)
        *out = NULL;
    if (s == NULL || inst == NULL || ncmds <= 0 || cb == NULL ||
        rds_check_batch(ncmds, argc, argv, argvlen, NULL, NULL) < 0 ||
        check_places(s, inst, ncmds, argc, argv, argvlen) < 0)
        return ERR_INVALID;

    int count[RDS_SET_MAX] = {0};
    for (int i = 0; i < ncmds; i++)
        count[inst[i]]++;
    struct rds_split *sp = xcalloc(1, sizeof *sp);
    sp->cb = cb;
    sp->ud = ud;
    sp->ncmds = ncmds;
    sp->replies = xcalloc((size_t) ncmds, sizeof *sp->replies);
    int slot[RDS_SET_MAX];
    for (int k = 0; k < s->n; k++) {
        slot[k] = -1;
        if (count[k] == 0)
            continue;
        struct part *p = &sp->parts[sp->nparts];
        p->sp = sp;
        p->idx = xcalloc((size_t) count[k], sizeof *p->idx);
        slot[k] = sp->nparts++;
    }
    for (int i = 0; i < ncmds; i++) {
        struct part *p = &sp->parts[slot[inst[i]]];
        p->idx[p->n++] = i;
    }
    /* the parts' argument arrays, borrowed from the caller's: rds_batch copies them */
    int *pargc = xcalloc((size_t) ncmds, sizeof *pargc);
    const char *const **pargv = xcalloc((size_t) ncmds, sizeof *pargv);
    const size_t **plen = xcalloc((size_t) ncmds, sizeof *plen);
    int rc = 0;
    for (int k = 0; k < s->n && rc == 0; k++) {
        if (slot[k] < 0)
            continue;
        struct part *p = &sp->parts[slot[k]];
        for (int j = 0; j < p->n; j++) {
            pargc[j] = argc[p->idx[j]];
            pargv[j] = argv[p->idx[j]];
            plen[j] = argvlen[p->idx[j]];
        }
        rc = rds_batch(s->r[k], p->n, pargc, pargv, plen, timeout_ms, on_part, p, &p->op);
        if (rc == 0)
            sp->pending++;
    }
    free(pargc);
    free(pargv);
    free(plen);
    if (rc < 0) {
        cancel_parts(sp, NULL);
        split_free(sp);
        return rc;
    }
    if (out)
        *out = sp;
    return 0;
}

void rds_split_cancel(struct rds_split *sp)
{
    if (sp == NULL)
        return;
    cancel_parts(sp, NULL);
    split_free(sp);
}
