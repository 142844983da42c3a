/* rds.h -- Redis over hiredis's async API and its libevent adapter.
 *
 * One command connection per node, and a subscriber (rds_sub) per pub/sub channel on a
 * connection of its own. hiredis 0.14 has no command timeouts, so each call carries its own
 * timer. Both connections are made again with backoff when they drop; while the command
 * connection is down, calls fail at once with ERR_UNAVAILABLE.
 *
 * Async contract: a call that returns < 0 never calls its callback; otherwise the callback
 * fires exactly once, never from inside the call, with status 0, ERR_TIMEOUT,
 * ERR_UNAVAILABLE (the connection dropped before the answer) or ERR_CLOSED (rds_free). */
#ifndef CORE_RDS_H
#define CORE_RDS_H

#include <stddef.h>

struct event_base;
struct redisReply;
struct rds;
struct rds_op;
struct rds_sub;

struct sentinel;

struct rds_opts {
    const char *host; /* copied */
    int port;
    int connect_timeout_ms;
    int timeout_ms; /* default for calls given timeout_ms <= 0 */
    int reconnect_max_ms;
    /* Borrowed, may be NULL. When set, every (re)connect first asks the sentinels where the
     * primary is (host/port are ignored), checks with ROLE that the server is a primary, and
     * drops the connection on a reply of READONLY, LOADING or MASTERDOWN (sentinel.h). Free
     * the sentinel after every rds and rds_sub using it. */
    struct sentinel *sentinel;
};

/* replies[0..n-1], one per command in order, borrowed: valid only until the callback
 * returns. A reply may be of type REDIS_REPLY_ERROR (that command failed, the others did
 * not). replies is NULL unless status == 0. */
typedef void rds_batch_cb(struct redisReply **replies, int n, int status, void *ud);

struct rds *rds_new(struct event_base *base, const struct rds_opts *opts);
/* Close; pending callbacks fire with ERR_CLOSED before this returns. */
void rds_free(struct rds *r);
/* 1 when connected. */
int rds_up(const struct rds *r);

/* Send ncmds commands in one pipeline: command i has argc[i] arguments argv[i][j] of
 * lengths argvlen[i][j] (borrowed: copied before return). The callback gets every reply at
 * once. op (may be NULL) receives a handle for rds_op_cancel, valid until the callback fires.
 * Returns 0, ERR_INVALID (rds_check_batch), ERR_UNAVAILABLE (not connected: no waiting) or
 * ERR_CLOSED (from a callback fired by rds_free). timeout_ms <= 0: the default. */
int rds_batch(struct rds *r, int ncmds, const int *argc, const char *const *const *argv,
              const size_t *const *argvlen, int timeout_ms, rds_batch_cb *cb, void *ud,
              struct rds_op **op);
/* As rds_batch, then WAIT replicas wait_ms after the commands, in the same pipeline: the
 * callback gets ncmds + 1 replies, the last WAIT's (the number of replicas that acknowledged
 * every write before it, an integer). WAIT holds every command sent behind it until it answers:
 * use a connection of its own (main.c's durable connections). The call's timeout is timeout_ms
 * (or the default) plus wait_ms. */
int rds_batch_wait(struct rds *r, int ncmds, const int *argc, const char *const *const *argv,
                   const size_t *const *argvlen, int replicas, int wait_ms, int timeout_ms,
                   rds_batch_cb *cb, void *ud, struct rds_op **op);
/* PUBLISH channel msg (both copied): rds_batch's return and callback (one reply: the number of
 * subscribers that got it). */
int rds_publish(struct rds *r, const char *channel, const char *msg, size_t len, rds_batch_cb *cb,
                void *ud);
/* Forget a pending call: its callback never fires. */
void rds_op_cancel(struct rds_op *op);

/* Told of every batch as its callback fires: status (0, ERR_*) and the seconds since it was
 * asked for (metrics). */
typedef void rds_observer(int status, double seconds, void *ud);
void rds_observe(struct rds *r, rds_observer *cb, void *ud);
/* How many times the command connection came up (the first time too): reconnects + 1. */
unsigned long rds_connects(const struct rds *r);
/* "host:port" of the server connected to, or last tried, into buf. */
void rds_addr(const struct rds *r, char *buf, size_t cap);
/* Why the command connection is not up ("" while up): Redis's or the sentinels' own words.
 * Borrowed: valid until the next turn of the loop. */
const char *rds_down_reason(const struct rds *r);

/* 0, or ERR_INVALID for a batch that cannot run on the shared command connection: a command
 * that would block it (BLPOP, WAIT, XREAD ... BLOCK) or change its protocol or state for every
 * other caller (SUBSCRIBE, MONITOR, HELLO, SELECT, CLIENT REPLY, WATCH, ...), or a MULTI not
 * closed by EXEC/DISCARD in the same batch. rds_batch checks with it; bindings call it first to
 * raise a clear error. On ERR_INVALID, *bad (may be NULL) is the index of the command and *why
 * (may be NULL) a static reason. Arguments as for rds_batch, borrowed. */
int rds_check_batch(int ncmds, const int *argc, const char *const *const *argv,
                    const size_t *const *argvlen, int *bad, const char **why);

/* ---- pub/sub ---------------------------------------------------------------------------------
 * A subscriber: its own connection, in subscribe mode on one channel, made again with backoff
 * (opts as for rds_new) when it drops. It also re-sends SUBSCRIBE every second as a ping: a
 * connection that does not confirm within timeout_ms is dropped and made again, so a silent
 * Redis is noticed.
 *
 * Callbacks run from the loop, never from inside rds_sub_new/rds_sub_free nor from inside
 * hiredis, in the order Redis sent them. on_gap fires each time the subscription is confirmed
 * (the first time too): messages published while it was not subscribed were missed, so a cache
 * fed by the channel must forget what it holds. rds_sub_up turns 1 just before on_gap runs and
 * 0 as soon as the connection is lost; while it is 0, messages may be missing. rds_sub_free may
 * be called from inside a callback: no callback fires after it. */

/* msg is borrowed: valid until the callback returns. */
typedef void rds_msg_cb(const char *msg, size_t len, void *ud);
typedef void rds_gap_cb(void *ud);

/* channel copied; on_gap may be NULL. Connects at once (asynchronously). */
struct rds_sub *rds_sub_new(struct event_base *base, const struct rds_opts *opts,
                            const char *channel, rds_msg_cb *on_msg, rds_gap_cb *on_gap, void *ud);
/* Close the connection; messages received and not yet delivered are dropped. */
void rds_sub_free(struct rds_sub *s);
/* 1 while subscribed (confirmed, and on_gap delivered for this connection). */
int rds_sub_up(const struct rds_sub *s);

#endif
