/* bus.h -- the world across nodes: every node's players, seen by the players of every node.
 *
 * A node plays the players connected to it: it checks their moves (the same scripts run on
 * every node) and applies them to its world at once. What changes is told to the other nodes
 * on the Redis channel BUS_CHANNEL, coalesced: one PUBLISH per turn of the event loop holding
 * every change of that turn, and once a second the whole roster of this node's players. Every
 * node keeps the others' players in its world (world_remote_*), so its own interest
 * management tells its clients what they see; the region's owner counts them in its
 * territories and world events like its own.
 *
 * A message: "<node>\n" then one line per change:
 *   j <id> <guild> <since> <x> <y> <name>   entered, came back, changed; also the roster
 *   m <id> <x> <y>                          moved
 *   l <id>                                  left the world
 *   s                                       a node that (re)subscribed asks for every roster
 * Delivery is at most once, in order per node; a lost line is mended by the next roster (1 s),
 * and a node not heard of for the grace period has its players vanish (core/realtime.c). */
#ifndef MMO_BUS_H
#define MMO_BUS_H

#include <stddef.h>
#include <stdint.h>

#define BUS_CHANNEL   "mmo:bus"
#define BUS_ROSTER_MS 1000

struct event_base;
struct rds;
struct rds_opts;
struct world;
struct bus;

/* node: this run's unique name (the last 47 bytes are kept). world and rds borrowed. Becomes
 * the world's bus (world_set_bus). */
struct bus *bus_new(struct event_base *base, const struct rds_opts *ro, struct rds *rds,
                    struct world *w, const char *node);
/* Free after the world and rds (their last callbacks may still reach the bus), before the
 * event base. */
void bus_free(struct bus *b);

/* Parse one message and apply it to w as heard from another node (self: ours, skipped).
 * Returns the lines applied, or -1 for a message that is not one. Also for tests. */
int bus_apply(struct world *w, const char *self, const char *msg, size_t len, double mono,
              int *sync_asked);

/* Counters: messages published, lines received from other nodes, publishes that failed. */
void bus_stats(const struct bus *b, uint64_t *published, uint64_t *received, uint64_t *failed);

#endif
