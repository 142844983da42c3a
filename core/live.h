/* live.h -- live notifications across nodes: what one node sends to the players of a region, a
 * guild or the whole world reaches those connected to every other node too.
 *
 * A message is delivered to this node's players at once (core/world.c, encoded once) and
 * published on the Redis channel LIVE_CHANNEL as "<sender>\t<kind>\t<target>\t<json>", kind r
 * (region), g (guild) or a (all); every other node's subscriber delivers it to its own players,
 * and a node skips what it sent itself. Delivery across nodes is at most once: a node whose
 * subscription is down misses what was published meanwhile (chat, world events, territory
 * changes are notifications; their state is in the database and the APIs). */
#ifndef MMO_LIVE_H
#define MMO_LIVE_H

#include <stddef.h>
#include <stdint.h>

#define LIVE_CHANNEL "mmo:live"

struct event_base;
struct rds;
struct rds_opts;
struct world;
struct live;

/* sender: this node's unique name (copied). world and rds borrowed, and outlive the live. */
struct live *live_new(struct event_base *base, const struct rds_opts *ro, struct rds *rds,
                      struct world *w, const char *sender);
void live_free(struct live *l);

/* Send text (JSON) to the players of region / guild / all, on every node: the receivers on
 * this node. */
int live_send_region(struct live *l, const char *region, const char *text, size_t len);
int live_send_guild(struct live *l, int64_t guild, const char *text, size_t len);
int live_send_all(struct live *l, const char *text, size_t len);

/* Counters: published, received from other nodes, failed to publish. */
void live_stats(const struct live *l, uint64_t *published, uint64_t *received, uint64_t *failed);

#endif
