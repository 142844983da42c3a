/* sentinel.h -- where the Redis primary is, asked of Redis Sentinel (redis.sentinels).
 *
 * One struct sentinel per node, shared by the command connection and every subscriber
 * (core/rds.c). Each of them, before every (re)connect, calls sentinel_ask: the sentinels are
 * tried in turn, each on a connection of its own made for the question
 * (SENTINEL get-master-addr-by-name <master_name>) and closed after it, each try bounded by
 * timeout_ms. The sentinel that answered is asked first next time. The shared struct keeps the
 * last answer and logs a change of primary once (info), whichever asker saw it first.
 *
 * Async contract as in rds.h: the callback fires exactly once, never from inside sentinel_ask
 * nor from inside hiredis, unless the ask is canceled first.
 *
 * The parsing functions are pure (spec/c/test_sentinel.c). */
#ifndef CORE_SENTINEL_H
#define CORE_SENTINEL_H

#include <stddef.h>

struct event_base;
struct redisReply;
struct conf;
struct sentinel;
struct sentinel_ask;

#define SENTINEL_MAX      8   /* sentinels in redis.sentinels */
#define SENTINEL_HOST_MAX 256 /* bytes of a host name, with its NUL */

struct sentinel_addr {
    char host[SENTINEL_HOST_MAX];
    int port;
};

/* "host:port,host:port" (spaces around entries allowed; an IPv6 host as [addr]:port) into
 * out[0..max-1]. Returns the count (0 for an empty list), or -1 with a message in err. */
int sentinel_parse_addrs(const char *list, struct sentinel_addr *out, int max, char *err,
                         size_t cap);

/* The reply to SENTINEL get-master-addr-by-name: two strings, host and port. 0 with host and
 * port set; ERR_NOTFOUND for a nil (the sentinel does not know that name); ERR_PROTOCOL for
 * anything else (an error reply, a bad port, a host too long or empty). */
int sentinel_parse_master(const struct redisReply *r, char *host, size_t cap, int *port);

enum { SENTINEL_ROLE_MASTER = 1, SENTINEL_ROLE_REPLICA, SENTINEL_ROLE_SENTINEL };
/* The reply to ROLE: SENTINEL_ROLE_*, or ERR_PROTOCOL (an error reply, or not a ROLE reply). */
int sentinel_parse_role(const struct redisReply *r);

/* 1 when an error reply means the server is not (or not yet) a usable primary: READONLY (a
 * replica), LOADING (loading its data), MASTERDOWN (a replica cut off from its primary). */
int sentinel_reply_stale(const struct redisReply *r);

/* addrs[0..n-1] (n >= 1) and master_name copied; timeout_ms bounds each sentinel's try. */
struct sentinel *sentinel_new(struct event_base *base, const struct sentinel_addr *addrs, int n,
                              const char *master_name, int timeout_ms);
/* Free after every asker is gone (no ask may be pending). */
void sentinel_free(struct sentinel *s);

/* status 0: host and port (borrowed, valid during the callback) are the primary. Otherwise
 * ERR_UNAVAILABLE: no sentinel answered; why says what the last one did. */
typedef void sentinel_cb(int status, const char *host, int port, const char *why, void *ud);
/* Never NULL. */
struct sentinel_ask *sentinel_ask(struct sentinel *s, sentinel_cb *cb, void *ud);
/* The callback never fires; the connection to a sentinel is closed. */
void sentinel_ask_cancel(struct sentinel_ask *a);

/* "host:port" of the primary last answered ("" before any answer) into buf. */
void sentinel_primary(const struct sentinel *s, char *buf, size_t cap);
const char *sentinel_master_name(const struct sentinel *s);
/* Times the answer changed from one primary to another (failovers seen). */
unsigned long sentinel_switches(const struct sentinel *s);

/* For the commands that are not the event loop (mmo queue, mmo backup): host and port of the
 * Redis instance called name (NULL or redis.name: home; else one of redis.instances) from c
 * (its host/port, or asked of its sentinels with blocking calls, each bounded by
 * redis.connect_timeout_ms). 0, or -1 with a message in err. */
int sentinel_resolve_conf(const struct conf *c, const char *name, char *host, size_t cap, int *port,
                          char *err, size_t errcap);

#endif
