/* world.h -- the live world of this node: players in regions, their positions (hot state,
 * in memory), who sees whom (core/aoi.c), and the messages that follow from a move.
 *
 * This is the owner's side of DESIGN.md's `bus`: with one node every region is owned here and
 * a call is direct. Positions are written to PostgreSQL by the caller from world_take_dirty
 * (on an interval) and on leave, never per move.
 *
 * Messages to clients ("moved", "appear", "vanish", chat) are encoded once per event and the
 * same frame is queued to every receiver through the sink. */
#ifndef CORE_WORLD_H
#define CORE_WORLD_H

#include <stddef.h>
#include <stdint.h>

struct world;

/* How frames reach connections (core/ws.c in the node; a fake in tests). */
struct world_sink {
    void *(*frame_new)(const char *text, size_t len, void *ud); /* one encoded frame, ref 1 */
    void (*frame_send)(void *conn, void *frame, void *ud);      /* queue it (takes a ref) */
    void (*frame_unref)(void *frame, void *ud);
    /* the player of conn joined on another node since: it is that node's now; tell conn and
     * close it (its close finds the player gone from this node). May be NULL. */
    void (*taken)(void *conn, void *ud);
    void *ud;
};

/* The bus (core/bus.c): what happens to this node's players, for the other nodes, and a
 * player of this node who joined on another one. Every callback may be NULL. */
struct world_bus {
    /* entered, came back or changed (name, guild): the whole record; since is when its stay on
     * this node began (ms, wall clock): of two nodes claiming a player, the later stay wins */
    void (*joined)(int64_t id, const char *name, int64_t guild, int64_t since, double x, double y,
                   void *ud);
    void (*moved)(int64_t id, double x, double y, void *ud);
    void (*left)(int64_t id, void *ud);
    void *ud;
};

struct world *world_new(double view_radius, const struct world_sink *sink);
/* bus copied; NULL: none (one node). */
void world_set_bus(struct world *w, const struct world_bus *bus);
void world_free(struct world *w);

/* A region [x0,x1) x [y0,y1). Adding one that exists with the same bounds is a no-op (0);
 * with other bounds ERR_INVALID. */
int world_region_add(struct world *w, const char *id, double x0, double y0, double x1, double y1);
int world_regions(const struct world *w);

/* The player enters at (region, x, y) on conn. If it is already in the world on another
 * connection, that one is returned in *replaced (the caller tells it and closes it) and the
 * player continues on conn. ERR_INVALID: not a region or not inside it. name copied (escaped
 * for JSON here). */
int world_join(struct world *w, void *conn, int64_t id, const char *name, int64_t guild,
               const char *region, double x, double y, double now, void **replaced);
/* Move the player (region may change: the region containing (x, y) is found). ERR_NOTFOUND:
 * not in the world; ERR_INVALID: (x, y) outside every region. */
int world_move(struct world *w, int64_t id, double x, double y, double now);
/* Leave (vanish to everyone who saw it). ERR_NOTFOUND if not in the world. Only if conn is
 * the player's current connection (a replaced connection leaving changes nothing). */
int world_leave(struct world *w, int64_t id, void *conn);
/* The connection was lost, not ended by the player: the player stays in the world, seen by
 * all, without a connection, until it joins again (here or on another node: no vanish, no
 * appear) or world_expire finds its grace over. mono: monotonic seconds. ERR_NOTFOUND as for
 * world_leave. */
int world_detach(struct world *w, int64_t id, void *conn, double mono);

/* ---- players of other nodes (the bus) --------------------------------------------------------
 * A mirror: the players other nodes hold in the regions, moved by their messages, seen by this
 * node's players through the same interest management. home: the node's name (<= 47 bytes).
 * A record older (since) than the one held is ignored; a newer one for a player of this node
 * takes it (world_sink.taken). Moves from a node that is not the player's home are ignored.
 * 0: applied; 1 (world_remote_join): ignored, an older stay; ERR_NOTFOUND; ERR_INVALID. */
int world_remote_join(struct world *w, const char *home, int64_t id, const char *name,
                      int64_t guild, int64_t since, double x, double y, double mono);
int world_remote_move(struct world *w, const char *home, int64_t id, double x, double y,
                      double mono);
int world_remote_leave(struct world *w, const char *home, int64_t id);
/* Drop the players of other nodes not heard of for ttl seconds and this node's players
 * detached for longer than grace (those: world_bus.left). Returns how many left. */
int world_expire(struct world *w, double mono, double ttl, double grace);
/* Every player this node holds (connected or detached), for the roster. */
void world_each_local(const struct world *w,
                      void (*fn)(int64_t id, const char *name, int64_t guild, int64_t since,
                                 double x, double y, void *arg),
                      void *arg);

/* Where the player is: 0, or ERR_NOTFOUND. *region borrowed (valid while the world lives). */
int world_position(const struct world *w, int64_t id, double *x, double *y, const char **region,
                   double *at);
/* The player's name (JSON-escaped, borrowed) and guild (0: none), or ERR_NOTFOUND. */
int world_who(const struct world *w, int64_t id, const char **name, int64_t *guild);
/* The generation of the player's stay in the world (a new one each join), or 0 when it is not
 * in the world: a handle that kept an older one is stale. */
uint64_t world_generation(const struct world *w, int64_t id);
/* A player's guild changed (0: none): guild messages follow it at once. 0 or ERR_NOTFOUND. */
int world_set_guild(struct world *w, int64_t id, int64_t guild);
/* Who stands where: for each player of region inside one of the n rectangles (rects[4i..4i+3]
 * = x0, y0, x1, y1, half-open like regions), fn(i, guild, arg) for the first rectangle that
 * holds it. Returns the players of the region looked at, or ERR_NOTFOUND for no such region. */
/* Every player of region on this node, as one message for an observer (the console's map):
 * {"t":"observed","region":..,"players":[[id,"name",x,y,guild],...]} (guild 0: none).
 * Returns a buffer the caller frees, its length in *len, or NULL when there is no such
 * region. */
char *world_snapshot(const struct world *w, const char *region, size_t *len);
int world_each_in_rects(const struct world *w, const char *region, const double *rects, int n,
                        void (*fn)(int rect, int64_t guild, void *arg), void *arg);
/* The player's connection, or NULL. */
void *world_conn(const struct world *w, int64_t id);
/* Call fn for every player id sees: (id, name, x, y). */
void world_each_visible(struct world *w, int64_t id,
                        void (*fn)(int64_t id, const char *name, double x, double y, void *arg),
                        void *arg);

/* Send text (a JSON message) to every player of region / of guild / in the world: one frame.
 * Returns how many got it. */
int world_send_region(struct world *w, const char *region, const char *text, size_t len);
int world_send_guild(struct world *w, int64_t guild, const char *text, size_t len);
/* To one player of this node: 1, or 0 when the player is not in this node's world. */
int world_send_player(struct world *w, int64_t id, const char *text, size_t len);
int world_send_all(struct world *w, const char *text, size_t len);

/* Players online in region (all regions: NULL). */
int world_online(const struct world *w, const char *region);
/* Call fn for every player whose position changed since the last call, and forget it.
 * Returns how many. */
int world_take_dirty(struct world *w,
                     void (*fn)(int64_t id, const char *region, double x, double y, double at,
                                void *arg),
                     void *arg);

#endif
