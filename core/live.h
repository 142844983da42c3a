/* live.h -- live notifications across nodes: what one node sends to the players of a region, a
 * guild or the whole world reaches those connected to every other node too.
 *
 * A message is delivered to this node's players at once (core/world.c, encoded once) and
 * published on the Redis channel LIVE_CHANNEL as "<sender>\t<kind>\t<target>\t<json>", kind r
 * (region), g (guild) or a (all); every other node's subscriber delivers it to its own players,
 * and a node skips what it sent itself. Closing an account's connections (ban, kick) or a
 * session's (logout) goes the same way: kind c (target: the account) or s (the session id),
 * text "<code>\t<reason>"; and a session ended or changed (kind f, target the session id):
 * every node drops its cached view of it (auth_session_forget). Delivery across nodes is at most
 * once: a node whose subscription is down misses what was published meanwhile (chat, world events,
 * territory changes are notifications; their state is in the database and the APIs). */
#ifndef MMO_LIVE_H
#define MMO_LIVE_H

#include <stddef.h>
#include <stdint.h>

#define LIVE_CHANNEL "mmo:live"

struct event_base;
struct rds;
struct rds_opts;
struct realtime;
struct auth;
struct live;

/* sender: this node's unique name (copied). rt, auth (may be NULL) and rds borrowed, and
 * outlive the live. */
struct live *live_new(struct event_base *base, const struct rds_opts *ro, struct rds *rds,
                      struct realtime *rt, struct auth *auth, const char *sender);
void live_free(struct live *l);

/* Send text (JSON) to the players of region / guild / all, on every node: the receivers on
 * this node. */
int live_send_region(struct live *l, const char *region, const char *text, size_t len);
int live_send_guild(struct live *l, int64_t guild, const char *text, size_t len);
int live_send_all(struct live *l, const char *text, size_t len);
/* Close the connections of an account / of a session id on every node: this node's now (their
 * number is returned), the others' when the message reaches them. */
int live_close_account(struct live *l, int64_t account, int code, const char *reason);
int live_close_session(struct live *l, const char *sid, int code, const char *reason);
/* The session changed (ended, new roles): every node forgets its cached view, this one now. */
void live_forget_session(struct live *l, const char *sid);

/* Counters: published, received from other nodes, failed to publish. */
void live_stats(const struct live *l, uint64_t *published, uint64_t *received, uint64_t *failed);

#endif
