/* aoi.h -- interest management: who sees whom, on a grid of cells per region.
 *
 * Every entity (a player in the world) has a position in one region. Two entities of the same
 * region see each other when their distance is at most the view radius (the same radius for
 * all, so seeing is mutual). A region is cut into square cells at least as large as the
 * radius, so the entities a move concerns are found in the 3x3 cells around the old and the
 * new position, whatever the number of entities in the region.
 *
 * aoi_move tells, through callbacks, exactly what changed: to whom the mover moved, to whom
 * it appeared or vanished, and who appeared to or vanished from the mover. The caller turns
 * that into messages (one encoded frame per group, shared by all its receivers). The module
 * does no I/O and allocates only when entities enter or cells grow. */
#ifndef CORE_AOI_H
#define CORE_AOI_H

#include <stdint.h>

struct aoi;
struct aoi_ent;

enum {
    AOI_MOVED = 1, /* receiver sees subject move (both saw each other before and after) */
    AOI_APPEAR,    /* subject entered receiver's view */
    AOI_VANISH,    /* subject left receiver's view */
};

/* One change for one receiver: called once per (receiver, subject, kind). ud is aoi_new's. */
typedef void aoi_event_cb(int kind, struct aoi_ent *receiver, struct aoi_ent *subject, void *ud);

/* radius: view radius in world units (> 0). */
struct aoi *aoi_new(double radius, aoi_event_cb *cb, void *ud);
void aoi_free(struct aoi *a);
/* Add a region [x0, x1) x [y0, y1); id copied (<= 31 bytes). Returns its index or ERR_INVALID. */
int aoi_region_add(struct aoi *a, const char *id, double x0, double y0, double x1, double y1);
/* Index of region id, or -1. */
int aoi_region_find(const struct aoi *a, const char *id);
/* The region containing (x, y), or -1. */
int aoi_region_at(const struct aoi *a, double x, double y);
const char *aoi_region_id(const struct aoi *a, int region);
int aoi_regions(const struct aoi *a);
/* Entities in region (online count). */
int aoi_region_count(const struct aoi *a, int region);

/* Enter the world at (x, y) in region: AOI_APPEAR events both ways with everyone in view.
 * ud is the caller's (e.g. its connection); id its entity id. NULL if (x, y) is not inside
 * region. */
struct aoi_ent *aoi_enter(struct aoi *a, int64_t id, int region, double x, double y, void *ud);
/* Move to (x, y), maybe into another region (then: vanish everywhere in the old one, appear in
 * the new). Returns 0, or ERR_INVALID when (x, y) is not inside region (nothing changes). */
int aoi_move(struct aoi *a, struct aoi_ent *e, int region, double x, double y);
/* Leave the world: AOI_VANISH to everyone who saw e; e is freed. */
void aoi_leave(struct aoi *a, struct aoi_ent *e);

/* Call fn for every entity e sees (not e itself). */
void aoi_each_visible(struct aoi *a, struct aoi_ent *e,
                      void (*fn)(struct aoi_ent *other, void *arg), void *arg);
/* Call fn for every entity of region (chat to a region). */
void aoi_each_in_region(struct aoi *a, int region, void (*fn)(struct aoi_ent *e, void *arg),
                        void *arg);

int64_t aoi_ent_id(const struct aoi_ent *e);
void *aoi_ent_ud(const struct aoi_ent *e);
double aoi_ent_x(const struct aoi_ent *e);
double aoi_ent_y(const struct aoi_ent *e);
int aoi_ent_region(const struct aoi_ent *e);

#endif
