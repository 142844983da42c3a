/* replica.h -- is a streaming replica fresh enough to read from? (postgres.replica_max_lag_ms)
 *
 * One struct replica per replica pool (the main database's, each shard's), made by main.c next
 * to the pool and given the primary's pool too. It owns a timer: about every second (a quarter
 * of max_lag, between 100 ms and 1 s) it asks the primary `select pg_current_wal_insert_lsn()` and
 * the replica `select pg_last_wal_replay_lsn()`, both at once, through the pools (async, each with
 * the pool's query timeout; a probe still in flight is not sent again). The primary's answers
 * are kept as samples (when the probe was sent, LSN) in a short ring.
 *
 * The rule (replica_fresh_until, pure): a sample (s, L) taken when the probe was sent at s
 * covers everything the primary had committed before s (its commit record ends at or before
 * the LSN read after s). If the replica has replayed up to R >= L, everything committed before
 * s is visible there, and stays visible (replay only goes forward). A read asked for at time t
 * needs everything committed before t - max_lag: that holds while t - max_lag <= s, i.e. until
 * s + max_lag. So after a probe round that succeeded on both sides,
 *
 *     fresh_until = max { s_i + max_lag : sample i with L_i <= R }   (none: not fresh)
 *
 * and the replica is fresh while now < fresh_until. The oldest sample inside the last max_lag
 * is the least demanding one that still proves the bound; samples outside it only give a
 * fresh_until in the past. Just after start the first sample (s_0, L_0) covers all history
 * before s_0: the replica is fresh once it has replayed L_0, for max_lag after s_0; before the
 * first round completes it is not fresh. No special case: an idle primary does not age its
 * samples' LSNs, so an idle replica that has replayed everything stays fresh. A round in which
 * either probe fails (error, timeout, no connection, a replica not in recovery) makes it not
 * fresh until a round succeeds; a round that does not come back in time lets fresh_until pass.
 * Samples closer together than max_lag/32 are not all kept (the ring holds 64), which only
 * makes the rule stricter.
 *
 * The insert position, not the write position (pg_current_wal_lsn): a commit's record is
 * inserted before the commit returns, even with synchronous_commit = off, where it is written
 * out only later by the WAL writer; the write position would not cover it yet.
 *
 * Every transition is logged once: warn when the replica turns stale (and why), info when it is
 * fresh (again). Ownership: the pools are borrowed and must outlive the struct; replica_free
 * cancels the probes in flight (their callbacks never fire). */
#ifndef CORE_REPLICA_H
#define CORE_REPLICA_H

#include <stdint.h>

struct event_base;
struct db_pool;
struct replica;

#define REPLICA_RING 64 /* samples kept */

struct replica_sample {
    int64_t at_ms; /* monotonic ms when the probe was sent */
    uint64_t lsn;  /* what the primary answered */
};

/* "X/Y" (two hex numbers, as pg_lsn prints) into *lsn = X << 32 | Y. 0, or ERR_INVALID. */
int replica_lsn_parse(const char *s, uint64_t *lsn);
/* The rule above: the latest time (monotonic ms) until which a replica that has replayed up to
 * replay is fresh, given samples s[0..n-1] (any order); INT64_MIN when no sample is covered. */
int64_t replica_fresh_until(const struct replica_sample *s, int n, uint64_t replay, int max_lag_ms);

/* Start probing replica (a pool of the streaming replica of primary's database) every
 * period; the first probe goes out at once. name ("main", "shard1"; copied) is for the log.
 * Both pools are borrowed. max_lag_ms > 0. */
struct replica *replica_new(struct event_base *base, struct db_pool *primary,
                            struct db_pool *replica, const char *name, int max_lag_ms);
/* Stop the timer, cancel the probes in flight and free r. r may be NULL. */
void replica_free(struct replica *r);
/* 1 while reads may go to the replica (the rule above, against the monotonic clock now). */
int replica_fresh(const struct replica *r);
/* The primary's LSN of the last round minus the replica's replay LSN (0 if the replica is
 * ahead), as of the last round that succeeded on both sides; -1 before any. */
int64_t replica_lag_bytes(const struct replica *r);

#endif
