/* aoi.c -- a grid of cells per region; visibility by distance.
 *
 * Ownership: the aoi owns its regions, cells and entities; an entity is freed by aoi_leave
 * (or aoi_free). Callbacks must not change the aoi (enter, move, leave) while it calls them:
 * the caller defers such changes (a dropped client leaves on the next loop turn). */
#include "aoi.h"
#include "err.h"
#include "mem.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

struct cell {
    struct aoi_ent **ents;
    int n, cap;
};

struct region {
    char id[32];
    double x0, y0, x1, y1;
    int cols, rows;
    struct cell *cells;
    int count;
};

struct aoi_ent {
    int64_t id;
    double x, y;
    int region;
    int cell; /* index in its region's cells */
    int slot; /* index in that cell's ents */
    void *ud;
};

struct aoi {
    double radius, r2, cell;
    struct region *regions;
    int nregions;
    aoi_event_cb *cb;
    void *ud;
};

struct aoi *aoi_new(double radius, aoi_event_cb *cb, void *ud)
{
    struct aoi *a = xcalloc(1, sizeof *a);
    a->radius = radius > 0 ? radius : 1;
    a->r2 = a->radius * a->radius;
    a->cell = a->radius; /* >= radius: everything in view is in the 3x3 cells around */
    a->cb = cb;
    a->ud = ud;
    return a;
}

void aoi_free(struct aoi *a)
{
    if (a == NULL)
        return;
    for (int r = 0; r < a->nregions; r++) {
        struct region *rg = &a->regions[r];
        for (int i = 0; i < rg->cols * rg->rows; i++) {
            for (int k = 0; k < rg->cells[i].n; k++)
                free(rg->cells[i].ents[k]);
            free(rg->cells[i].ents);
        }
        free(rg->cells);
    }
    free(a->regions);
    free(a);
}

int aoi_region_add(struct aoi *a, const char *id, double x0, double y0, double x1, double y1)
{
    if (strlen(id) >= sizeof a->regions[0].id || !(x0 < x1) || !(y0 < y1) || !isfinite(x0) ||
        !isfinite(y0) || !isfinite(x1) || !isfinite(y1) || aoi_region_find(a, id) >= 0)
        return ERR_INVALID;
    double cols = ceil((x1 - x0) / a->cell), rows = ceil((y1 - y0) / a->cell);
    if (cols * rows > 4e6)
        return ERR_INVALID; /* a radius far too small for the region */
    a->regions = xrealloc(a->regions, sizeof *a->regions * (size_t) (a->nregions + 1));
    struct region *rg = &a->regions[a->nregions];
    memset(rg, 0, sizeof *rg);
    snprintf(rg->id, sizeof rg->id, "%s", id);
    rg->x0 = x0, rg->y0 = y0, rg->x1 = x1, rg->y1 = y1;
    rg->cols = (int) cols;
    rg->rows = (int) rows;
    rg->cells = xcalloc((size_t) (rg->cols * rg->rows), sizeof *rg->cells);
    return a->nregions++;
}

int aoi_region_find(const struct aoi *a, const char *id)
{
    for (int r = 0; r < a->nregions; r++)
        if (strcmp(a->regions[r].id, id) == 0)
            return r;
    return -1;
}

static int inside(const struct region *rg, double x, double y)
{
    return x >= rg->x0 && x < rg->x1 && y >= rg->y0 && y < rg->y1;
}

int aoi_region_at(const struct aoi *a, double x, double y)
{
    for (int r = 0; r < a->nregions; r++)
        if (inside(&a->regions[r], x, y))
            return r;
    return -1;
}

const char *aoi_region_id(const struct aoi *a, int region)
{
    return region >= 0 && region < a->nregions ? a->regions[region].id : NULL;
}

int aoi_regions(const struct aoi *a)
{
    return a->nregions;
}

int aoi_region_count(const struct aoi *a, int region)
{
    return region >= 0 && region < a->nregions ? a->regions[region].count : 0;
}

int64_t aoi_ent_id(const struct aoi_ent *e)
{
    return e->id;
}

void *aoi_ent_ud(const struct aoi_ent *e)
{
    return e->ud;
}

double aoi_ent_x(const struct aoi_ent *e)
{
    return e->x;
}

double aoi_ent_y(const struct aoi_ent *e)
{
    return e->y;
}

int aoi_ent_region(const struct aoi_ent *e)
{
    return e->region;
}

/* ---- cells --------------------------------------------------------------------------------- */

static int cell_of(const struct aoi *a, const struct region *rg, double x, double y)
{
    int cx = (int) ((x - rg->x0) / a->cell), cy = (int) ((y - rg->y0) / a->cell);
    if (cx >= rg->cols)
        cx = rg->cols - 1;
    if (cy >= rg->rows)
        cy = rg->rows - 1;
    return cy * rg->cols + cx;
}

static void cell_put(struct region *rg, struct aoi_ent *e, int ci)
{
    struct cell *c = &rg->cells[ci];
    if (c->n == c->cap) {
        c->cap = c->cap ? c->cap * 2 : 4;
        c->ents = xrealloc(c->ents, sizeof *c->ents * (size_t) c->cap);
    }
    e->cell = ci;
    e->slot = c->n;
    c->ents[c->n++] = e;
}

static void cell_take(struct region *rg, struct aoi_ent *e)
{
    struct cell *c = &rg->cells[e->cell];
    struct aoi_ent *last = c->ents[--c->n];
    c->ents[e->slot] = last;
    last->slot = e->slot;
    if (c->n == 0 && c->cap > 16) { /* a crowd moved on: give the room back */
        free(c->ents);
        c->ents = NULL;
        c->cap = 0;
    }
}

static int near(const struct aoi *a, double x1, double y1, double x2, double y2)
{
    double dx = x1 - x2, dy = y1 - y2;
    return dx * dx + dy * dy <= a->r2;
}

/* The cells around ci (3x3, clipped), appended to out (deduplicated); returns the count. */
static int around(const struct region *rg, int ci, int *out, int n)
{
    int cx = ci % rg->cols, cy = ci / rg->cols;
    for (int y = cy - 1; y <= cy + 1; y++) {
        if (y < 0 || y >= rg->rows)
            continue;
        for (int x = cx - 1; x <= cx + 1; x++) {
            if (x < 0 || x >= rg->cols)
                continue;
            int c = y * rg->cols + x, dup = 0;
            for (int i = 0; i < n; i++)
                dup |= out[i] == c;
            if (!dup)
                out[n++] = c;
        }
    }
    return n;
}

/* ---- entering, moving, leaving ------------------------------------------------------------- */

/* Both ways, for everyone within view of e at its position: kind. */
static void tell_all(struct aoi *a, struct aoi_ent *e, int kind)
{
    struct region *rg = &a->regions[e->region];
    int cells[9];
    int n = around(rg, e->cell, cells, 0);
    for (int i = 0; i < n; i++) {
        struct cell *c = &rg->cells[cells[i]];
        for (int k = 0; k < c->n; k++) {
            struct aoi_ent *o = c->ents[k];
            if (o != e && near(a, e->x, e->y, o->x, o->y)) {
                a->cb(kind, o, e, a->ud);
                a->cb(kind, e, o, a->ud);
            }
        }
    }
}

struct aoi_ent *aoi_enter(struct aoi *a, int64_t id, int region, double x, double y, void *ud)
{
    if (region < 0 || region >= a->nregions || !inside(&a->regions[region], x, y))
        return NULL;
    struct region *rg = &a->regions[region];
    struct aoi_ent *e = xcalloc(1, sizeof *e);
    e->id = id;
    e->x = x;
    e->y = y;
    e->region = region;
    e->ud = ud;
    cell_put(rg, e, cell_of(a, rg, x, y));
    rg->count++;
    tell_all(a, e, AOI_APPEAR);
    return e;
}

void aoi_leave(struct aoi *a, struct aoi_ent *e)
{
    struct region *rg = &a->regions[e->region];
    cell_take(rg, e);
    rg->count--;
    /* e is out of the cells now, so tell_all would not see it; tell by hand */
    int cells[9];
    int n = around(rg, e->cell, cells, 0);
    for (int i = 0; i < n; i++) {
        struct cell *c = &rg->cells[cells[i]];
        for (int k = 0; k < c->n; k++) {
            struct aoi_ent *o = c->ents[k];
            if (near(a, e->x, e->y, o->x, o->y))
                a->cb(AOI_VANISH, o, e, a->ud);
        }
    }
    free(e);
}

int aoi_move(struct aoi *a, struct aoi_ent *e, int region, double x, double y)
{
    if (region < 0 || region >= a->nregions || !inside(&a->regions[region], x, y))
        return ERR_INVALID;
    if (region != e->region) {
        tell_all(a, e, AOI_VANISH);
        struct region *old = &a->regions[e->region];
        cell_take(old, e);
        old->count--;
        struct region *rg = &a->regions[region];
        e->region = region;
        e->x = x;
        e->y = y;
        cell_put(rg, e, cell_of(a, rg, x, y));
        rg->count++;
        tell_all(a, e, AOI_APPEAR);
        return 0;
    }
    struct region *rg = &a->regions[region];
    double ox = e->x, oy = e->y;
    int oc = e->cell, nc = cell_of(a, rg, x, y);
    int cells[18];
    int n = around(rg, oc, cells, 0);
    n = around(rg, nc, cells, n);
    e->x = x;
    e->y = y;
    if (nc != oc) {
        cell_take(rg, e);
        cell_put(rg, e, nc);
    }
    for (int i = 0; i < n; i++) {
        struct cell *c = &rg->cells[cells[i]];
        for (int k = 0; k < c->n; k++) {
            struct aoi_ent *o = c->ents[k];
            if (o == e)
                continue;
            int saw = near(a, ox, oy, o->x, o->y), sees = near(a, x, y, o->x, o->y);
            if (saw && sees) {
                a->cb(AOI_MOVED, o, e, a->ud);
            } else if (sees) {
                a->cb(AOI_APPEAR, o, e, a->ud);
                a->cb(AOI_APPEAR, e, o, a->ud);
            } else if (saw) {
                a->cb(AOI_VANISH, o, e, a->ud);
                a->cb(AOI_VANISH, e, o, a->ud);
            }
        }
    }
    return 0;
}

void aoi_each_visible(struct aoi *a, struct aoi_ent *e,
                      void (*fn)(struct aoi_ent *other, void *arg), void *arg)
{
    struct region *rg = &a->regions[e->region];
    int cells[9];
    int n = around(rg, e->cell, cells, 0);
    for (int i = 0; i < n; i++) {
        struct cell *c = &rg->cells[cells[i]];
        for (int k = 0; k < c->n; k++)
            if (c->ents[k] != e && near(a, e->x, e->y, c->ents[k]->x, c->ents[k]->y))
                fn(c->ents[k], arg);
    }
}

void aoi_each_in_region(struct aoi *a, int region, void (*fn)(struct aoi_ent *e, void *arg),
                        void *arg)
{
    if (region < 0 || region >= a->nregions)
        return;
    struct region *rg = &a->regions[region];
    for (int i = 0; i < rg->cols * rg->rows; i++)
        for (int k = 0; k < rg->cells[i].n; k++)
            fn(rg->cells[i].ents[k], arg);
}
