/* ratelimit.h -- rate limits: GCRA kept in Redis (one Lua script, atomic), reserved in batches,
 * with a per-node limiter when Redis fails.
 *
 * A class allows `limit` requests per `period_ms` per key, `burst` of them at once: GCRA with
 * the emission interval T = period_ms / limit and room for `burst` requests. The state of a
 * key is one Redis string, "rl:<class>:<key>", holding its theoretical arrival time (TAT) in
 * microseconds of Redis's clock; it expires when the key is back to a full burst.
 *
 * To spare Redis a round trip per request, a node reserves up to `batch` requests per call and
 * spends them locally; what it has not spent after batch x T (precisely: the units left x T,
 * from when the call was sent) lapses and is given back to Redis with the key's next call.
 * Precision: whatever the number of nodes, any window of W ms admits at most
 * burst + W / T + (batch - 1) requests, batch - 1 more than the exact limit (see
 * docs/ratelimit.md). batch = 1 is exact.
 *
 * When Redis does not answer (not connected, a timeout, an error reply), each node limits by
 * itself with the same numbers (a local GCRA per key, seeded from what Redis last said): with
 * N nodes a client gets up to N times the limit until Redis is back, never "no limit".
 *
 * Local state (reservations, cached denials, the fallback GCRA) lives in a hash table of at
 * most local_max_keys entries, the least recently used evicted first; memory does not grow
 * with the number of distinct keys. All operations are O(1).
 *
 * Async contract: rl_check decides at once (RL_ALLOW, RL_DENY: the callback never fires) or
 * returns RL_PENDING, and then the callback fires exactly once, never from inside rl_check,
 * with status 0 (allowed), ERR_BUSY (limited: retry_after_ms > 0) or ERR_CLOSED (rl_free). */
#ifndef CORE_RATELIMIT_H
#define CORE_RATELIMIT_H

#include <stddef.h>

struct rds;
struct rl;
struct rl_op;

enum { RL_ALLOW = 0, RL_DENY = 1, RL_PENDING = 2 };

#define RL_NAME_MAX 32  /* class name: 1..32 of [A-Za-z0-9_-] */
#define RL_KEY_MAX  256 /* key bytes */

struct rl_class {
    const char *name; /* copied by rl_new */
    int limit;        /* requests per period, >= 1 */
    int period_ms;    /* >= 1 */
    int burst;        /* requests at once, >= 1 (limit is the usual choice) */
    int batch;        /* requests reserved per Redis call, >= 1; 1 = exact */
};

struct rl_stats {
    unsigned long long checks;          /* rl_check calls that returned a decision or PENDING */
    unsigned long long allowed;         /* decisions: allowed (now or by callback) */
    unsigned long long denied;          /* decisions: limited */
    unsigned long long local_allowed;   /* allowed from a reservation, no round trip */
    unsigned long long cached_denied;   /* denied from a cached denial, no round trip */
    unsigned long long redis_calls;     /* scripts sent (EVALSHA, and EVAL after NOSCRIPT) */
    unsigned long long script_loads;    /* EVAL sent because Redis had lost the script */
    unsigned long long redis_failures;  /* calls that failed (timeout, closed, error reply) */
    unsigned long long fallback_checks; /* decisions made by the per-node fallback */
    unsigned long long evictions;       /* entries dropped to make room */
    int keys;                           /* entries in the table now (<= max_keys) */
    int keys_peak;                      /* the most there ever were */
    int max_keys;                       /* local_max_keys */
    int unlisted;                       /* checks in flight that found the table full of them */
    int degraded;                       /* 1 while the per-node fallback decides */
};

/* status: 0 allowed, ERR_BUSY limited (retry_after_ms > 0: when one request will be allowed
 * again), ERR_CLOSED (rl_free). */
typedef void rl_cb(int status, int retry_after_ms, void *ud);

/* 0 if c is a valid class, else ERR_INVALID with *why (may be NULL) a static reason. */
int rl_class_check(const struct rl_class *c, const char **why);

/* A limiter over classes[0..nclasses-1] (copied; every class must pass rl_class_check, else
 * NULL and the reason is logged). rds is borrowed and must outlive the limiter (free the
 * limiter first); NULL means no Redis: every decision is per node. local_max_keys <= 0 picks
 * 65536. */
struct rl *rl_new(struct rds *rds, const struct rl_class *classes, int nclasses,
                  int local_max_keys);
/* Pending checks get ERR_CLOSED before this returns; safe from inside a callback. rl may be
 * NULL. */
void rl_free(struct rl *rl);
/* Index of the class called name, or ERR_NOTFOUND. */
int rl_class_find(const struct rl *rl, const char *name);

/* One request of class cls for key (keylen bytes, any bytes, 1..RL_KEY_MAX; borrowed: copied
 * if kept). Returns RL_ALLOW, RL_DENY with *retry_after_ms (may be NULL) set to when to retry
 * (> 0), RL_PENDING (cb(status, retry_after_ms, ud) fires later; *op, may be NULL, receives a
 * handle for rl_op_cancel, valid until cb fires), or ERR_INVALID (bad arguments) / ERR_CLOSED
 * (rl_free has begun), and then cb never fires. */
int rl_check(struct rl *rl, int cls, const char *key, size_t keylen, rl_cb *cb, void *ud,
             struct rl_op **op, int *retry_after_ms);
/* Forget a pending check: its callback never fires. op may be NULL. */
void rl_op_cancel(struct rl_op *op);

/* Counters and sizes, copied into *out (all zero if rl is NULL). */
void rl_stats(const struct rl *rl, struct rl_stats *out);

#endif
