/* lb.h -- what every binding shares: the node context and parking a coroutine on I/O.
 *
 * A binding that does I/O follows one pattern (see docs/core.md):
 *
 *     struct lb_wait *w = lb_wait_begin(L);        raises unless L is a task coroutine
 *     int rc = io_start(..., on_done, w, &op);     the I/O layer's async call
 *     if (rc < 0)
 *         return lb_wait_fail(L, w, rc);           pushes nil, err_str(rc); returns 2
 *     lb_wait_on_cancel(w, cancel_op, op);         optional: drop the I/O if the task dies
 *     return lua_yield(L, 0);
 *
 *     static void on_done(..., void *ud) {         fires exactly once, never synchronously
 *         struct lb_wait *w = ud;
 *         lua_State *co = lb_wait_thread(w);
 *         ...push results on co (copy them: nothing of the reply may be kept)...
 *         lb_wait_resume(w, nresults);            the binding call returns these to Lua
 *     }
 *
 * Ownership: the wait belongs to the task (core/task.c). It is valid from lb_wait_begin until
 * lb_wait_resume / lb_wait_fail, or until the cancel callback runs; after the cancel
 * callback the I/O layer must never touch w again. */
#ifndef BINDINGS_LB_H
#define BINDINGS_LB_H

#include <lua.h>
#include <lauxlib.h>

struct event_base;
struct db_pool;
struct replica;
struct rds;
struct rds_sub;
struct rds_set;
struct lcache;
struct work_pool;
struct conf;
struct script;
struct auth;
struct gate;
struct realtime;
struct lb_wait;
struct mods;

/* The node's shared objects, owned by main.c; bindings borrow them for the VM's lifetime.
 * Any of db/rds may be NULL (e.g. `mmo check` runs without them): the bindings then fail
 * every call with "unavailable". */
struct lb_ctx {
    struct event_base *base;
    struct db_pool *db;
    struct db_pool *shards[64]; /* [id] PostgreSQL shard pools (config shards); [0] unused */
    /* [id] a streaming replica's pool for db.read ([0]: the main database's; NULL: none,
     * reads go to the primary) */
    struct db_pool *replicas[64];
    /* [id] the freshness of replicas[id] (core/replica.h): db.read uses the replica only while
     * replica_fresh() says so. NULL: no bound (postgres.replica_max_lag_ms = 0), the replica
     * is used while its pool is up */
    struct replica *replica_lag[64];
    struct rds *rds;        /* home: redis->r[0] */
    struct rds_set *redis;  /* every Redis instance (core/rds_set.h); NULL: home alone */
    struct work_pool *work; /* worker threads (mmo.crypto); NULL: "unavailable" */
    const struct conf *conf;
    struct script *script;
    struct auth *auth;   /* tokens and sessions (core/auth.h) */
    struct gate *gate;   /* what runs before Lua (core/gate.h); NULL: public routes only */
    struct realtime *rt; /* WebSocket sessions and the live world (core/realtime.h) */
    lua_State *main_L;   /* the VM's main thread (set by the script host) */
    /* The cache layers of mmo.cache (fetch, fill, store, drop): the node's in-process layer
     * (core/lcache.h; NULL: no local layer) and the subscriber to LCACHE_CHANNEL that keeps it
     * coherent (NULL: the local layer is trusted as is, a single node). */
    struct lcache *lcache;
    struct rds_sub *sub;
    /* Notifications to the players of other nodes (core/live.h): world.send_region, send_guild
     * and send_all go through it when set (NULL: this node's players only). */
    struct live *live;
    struct metrics *metrics; /* mmo.metrics registers here (core/metrics.h); NULL: none */
    struct mods *mods;       /* the mods in use (core/mods.h), for mmo.events; NULL: none */
};

/* Store ctx in L's registry (borrowed) / fetch it. */
void lb_set_ctx(lua_State *L, struct lb_ctx *ctx);
struct lb_ctx *lb_ctx(lua_State *L);

typedef void lb_cancel_cb(void *ud);

/* Start waiting in the running coroutine. Raises a Lua error when L is not a task coroutine
 * (the main thread, a nested coroutine.create, a non-yieldable context) or already waits. */
struct lb_wait *lb_wait_begin(lua_State *L);
/* Called if the task is dropped while it waits (node shutdown past its drain time). */
void lb_wait_on_cancel(struct lb_wait *w, lb_cancel_cb *cb, void *ud);
/* The start failed: end the wait; push nil, err_str(rc); return 2 (for `return`). */
int lb_wait_fail(lua_State *L, struct lb_wait *w, int rc);
/* The coroutine to push results on before lb_wait_resume. */
lua_State *lb_wait_thread(struct lb_wait *w);
/* Resume the coroutine; the nresults values on top of its stack become the binding's
 * return values. Runs the task until it yields again or ends. */
void lb_wait_resume(struct lb_wait *w, int nresults);
/* Resume with nil, err_str(rc). */
void lb_wait_resume_err(struct lb_wait *w, int rc);

/* Request id of the task running on L, or NULL (not in a task). */
const char *lb_request_id(lua_State *L);

/* Push nil, err_str(rc); return 2. */
int lb_push_err(lua_State *L, int rc);

/* Run the function at idx of L in a new background task (not tied to a request). Errors are
 * logged with a traceback under `what` (a static string). Returns 0 or ERR_CLOSED. */
int lb_spawn(lua_State *L, int idx, const char *what);

#endif
