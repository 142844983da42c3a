/* lua_cache.c -- require "mmo.cache": Redis for Lua handlers, over core/rds.c.
 *
 *   cache.get(key)                    -> value | nil (absent) | nil, err
 *   cache.set(key, value [, ttl_ms])  -> true | nil, err        SET key value [PX ttl_ms]
 *   cache.del(key, ...)               -> number deleted | nil, err
 *   cache.incr(key [, by])            -> new value | nil, err    INCRBY key by (by = 1)
 *   cache.expire(key, ms)             -> true | false (no such key) | nil, err   PEXPIRE
 *   cache.eval(script [, keys [, args]]) -> reply | nil, err   EVAL script #keys keys.. args..
 *   cache.cmd(name, ...)              -> reply | nil, err        any one command
 *   cache.pipeline(cmds)              -> results | nil, err      { {"SET","a",1}, {"GET","a"} }
 *   cache.pipeline(cmds, {at = tag})  the same on the Redis instance tag is placed on
 *       (several Redis instances, core/rds_set.h): a command's own field at (cmds[i].at) wins
 *       over opts.at; without either it goes to home. Commands of one pipeline on several
 *       instances leave at once, one batch per instance, and the results come back in order.
 *       A MULTI's commands up to EXEC take its instance; one placed elsewhere raises.
 *   cache.place(tag)                  -> the name of the instance tag is placed on
 *   cache.instances()                 -> every instance's name, home first
 *   cache.layout()                    -> the names sorted, comma-separated (every node's must
 *                                        be the same: lib/leases.lua)
 *   cache.pipeline(cmds, {durable = true}) with redis.wait_replicas > 0: on the instance's
 *       durable connection, followed by WAIT wait_replicas wait_timeout_ms; nil, "unavailable"
 *       when fewer replicas acknowledged in time (the writes are on the primary: retry only
 *       what is idempotent). The commands must stay on one instance. Without wait_replicas,
 *       an ordinary pipeline.
 *   cache.at(tag)                     -> { get, set, del, incr, expire, eval, cmd, pipeline,
 *                                          name }: those calls on the instance tag is placed on
 *   cache.pipeline(cmds, {replies = false}) -> { true | {err = ...}, ... } | nil, err
 *       the same, without the replies: true for each command that succeeded (many XADDs
 *       whose ids nobody reads: no string made per reply)
 *   cache.null                        the nil inside arrays: a NULL lightuserdata (== cjson.null)
 *
 * Every call yields the running task until Redis answers (one round trip; a pipeline's
 * commands leave in one write) and has the node's redis.timeout_ms. It returns nil, err with
 * err "timeout", "unavailable" (Redis is down, or the node runs without it) or "closed" (the
 * node is shutting down).
 *
 * Arguments: strings as they are; numbers as integers when integral ("42", never "4.2e+01"),
 * else as %.17g. Anything else raises, as does a command that would block or change the shared
 * connection (SUBSCRIBE, BLPOP, SELECT, MONITOR, WATCH, ...) and a MULTI that the same
 * pipeline does not close with EXEC or DISCARD (rds_check_batch in core/rds.c).
 *
 * Replies: status -> string ("OK"), bulk string -> string, integer -> number, array -> array
 * (recursively), nil -> nil at the top and cache.null inside arrays (so # counts every item).
 * A Redis error reply -> nil, "redis: <message>" for one command; inside an array (EXEC,
 * EVAL) and as a pipeline result -> { err = "redis: <message>" }. A pipeline always answers
 * every command in order: the others still succeed when one fails, and a nil result is
 * cache.null. Integers are Lua numbers: exact up to 2^53.
 *
 * The connection is shared by every task: a transaction is one cache.pipeline
 * ({ {"MULTI"}, ..., {"EXEC"} }), and a check-and-set is a cache.eval script.
 *
 * ---- The cache layers: in-process, then Redis, then the caller's database ----------------------
 * For values that carry a version: an integer >= 0 that grows with every write of the key (a
 * row's version column; a delete takes a version of its own, the row's last + 1). A version is
 * a number (exact up to 2^53) or a decimal string (up to 2^63 - 1); it comes back as a number.
 *
 *   cache.fetch(key)        -> value, version, "local" | "redis"
 *                            | nil          missed both layers: read the database, then fill
 *                            | nil, err     (Redis failed: treat it as a miss)
 *       The local layer first: a local hit never yields. Then Redis (GET + PTTL, one round
 *       trip); a Redis hit fills the local layer until the Redis copy expires.
 *   cache.fill(key, value, version, ttl_ms)  -> true | nil, err      after a database read
 *       Redis first, newer-wins (FILL_SCRIPT: never over a version at least as new, nor over a
 *       tombstone); then the local layer, newer-wins, if Redis took the version or holds it
 *       already. No message: nothing changed. true also when a newer version was there.
 *   cache.store(key, value, version, ttl_ms) -> true | nil, err      after a write
 *       The local layer at once (newer-wins; a read after the write on this node sees it even
 *       if Redis fails), then in one pipeline the same script and PUBLISH LCACHE_CHANNEL
 *       "<version> <key>": every node drops its copies older than version.
 *   cache.store_many({ {key, value, version, ttl_ms}, ... }) -> true | nil, err
 *       cache.store of each (at most 10,000), all in one round trip: after a batch write.
 *   cache.drop(key, version) -> true | nil, err                      after a delete
 *       A local tombstone at once, then in one pipeline a Redis tombstone (the script, value
 *       "<version>!", for LCACHE_TOMBSTONE_MS) and the PUBLISH. A tombstone is a miss in both
 *       layers and refuses fills of older versions: a read that raced the delete cannot put the
 *       row back. (A plain DEL would let such a fill in.)
 *   cache.layers()          -> { local_hits, local_misses, redis_hits, misses, fills, stores,
 *                                drops, stale_refused, evictions, expired,
 *                                invalidations_received, entries, tombstones, bytes, clears,
 *                                subscribed }
 *       Counters since the node started. misses: fetches that missed both layers (or Redis
 *       alone while the local layer was off); fills/stores/drops: calls Redis answered;
 *       stale_refused: fills and stores refused for an older version, both layers; clears: the
 *       local layer forgotten on (re)subscribing (the first subscription counts one);
 *       entries, tombstones and bytes: the local layer now; subscribed: the invalidation
 *       channel is up.
 *
 * In Redis a layered value is "<version>:<value>" (or the tombstone "<version>!") under
 * "lc:<key>", with the ttl_ms given (PX). Another node's store or drop reaches this node as a
 * message on LCACHE_CHANNEL (core/lcache.h, delivered by core/rds.c's subscriber): older local
 * copies are dropped and a tombstone refuses older fills; this node's own messages change
 * nothing. The local layer is only read or filled while that subscription is up: while it is
 * down, fetch goes to Redis; when it comes back, the local layer is cleared (messages may have
 * been missed), and a fill whose Redis answer straddles the clear (lcache_epoch) stays out of
 * it. With no local layer (ctx->lcache NULL) every call uses Redis alone; with no Redis
 * (ctx->rds NULL) store and drop still update the local layer, fill fills it only on a node
 * without a subscriber, and anything that needs Redis returns nil, "unavailable". */
#include "bindings.h"
#include "err.h"
#include "lb.h"
#include "lcache.h"
#include "log.h"
#include "mem.h"
#include "rds.h"
#include "rds_set.h"
#include "conf.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>
#include <strings.h>
#include <time.h>

#define NUM_CAP 32 /* "%.17g" of any double, or an int64 */
#define VER_CAP 24 /* an int64 in decimal */

enum { K_ANY, K_TRUE, K_BOOL, K_PIPE, K_PIPE_OK, K_FETCH, K_LAYER };

/* Its address is the registry key of the helper thread that converts replies (see finish). */
static const char HELPER_KEY = 0;
/* Its address is the registry key of the layers' counters (struct layer_stats). */
static const char STATS_KEY = 0;

/* ---- arguments -------------------------------------------------------------------------------
 * One call's commands, as rds_batch wants them. They point into Lua strings (alive: on the
 * stack or in the caller's tables, and no Lua code runs before rds_batch copies them) or into
 * num[]. The block is a userdata on the stack, so a raise while building it leaks nothing. */
struct args {
    int ncmds, nargs;
    const char **v;
    size_t *len;
    const char *const **argv; /* per command: &v[first] */
    const size_t **argvlen;   /* per command: &len[first] */
    int *argc;
    char (*num)[NUM_CAP];
};

/* [..] -> [.., userdata] */
static struct args *args_new(lua_State *L, int cmds, int nargs)
{
    size_t size = sizeof(struct args) + (size_t) nargs * (sizeof(char *) + sizeof(size_t)) +
                  (size_t) cmds * (sizeof(char **) + sizeof(size_t *) + sizeof(int)) +
                  (size_t) nargs * NUM_CAP;
    struct args *a = lua_newuserdata(L, size);
    char *p = (char *) (a + 1);
    a->ncmds = a->nargs = 0;
    a->v = (const char **) p;
    p += (size_t) nargs * sizeof(char *);
    a->len = (size_t *) p;
    p += (size_t) nargs * sizeof(size_t);
    a->argv = (const char *const **) p;
    p += (size_t) cmds * sizeof(char **);
    a->argvlen = (const size_t **) p;
    p += (size_t) cmds * sizeof(size_t *);
    a->argc = (int *) p;
    p += (size_t) cmds * sizeof(int);
    a->num = (char(*)[NUM_CAP]) p;
    return a;
}

static void args_cmd(struct args *a)
{
    a->argv[a->ncmds] = &a->v[a->nargs];
    a->argvlen[a->ncmds] = &a->len[a->nargs];
    a->argc[a->ncmds] = 0;
    a->ncmds++;
}

static void args_lit(struct args *a, const char *s)
{
    a->v[a->nargs] = s;
    a->len[a->nargs] = strlen(s);
    a->nargs++;
    a->argc[a->ncmds - 1]++;
}

static void args_num(struct args *a, lua_Number x)
{
    char *buf = a->num[a->nargs];
    int n;
    if (x == floor(x) && x >= -9223372036854775808.0 && x < 9223372036854775808.0)
        n = snprintf(buf, NUM_CAP, "%lld", (long long) x);
    else
        n = snprintf(buf, NUM_CAP, "%.17g", x);
    a->v[a->nargs] = buf;
    a->len[a->nargs] = (size_t) n;
    a->nargs++;
    a->argc[a->ncmds - 1]++;
}

/* Add the value at idx (absolute). cmd > 0 names the pipeline command in the error. */
static void args_add(lua_State *L, struct args *a, int idx, int cmd, int arg)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING:
        a->v[a->nargs] = lua_tolstring(L, idx, &a->len[a->nargs]);
        a->nargs++;
        a->argc[a->ncmds - 1]++;
        return;
    case LUA_TNUMBER: args_num(a, lua_tonumber(L, idx)); return;
    default: break;
    }
    if (cmd > 0)
        luaL_error(L, "mmo.cache: command %d, argument %d is a %s (string or number expected)", cmd,
                   arg, luaL_typename(L, idx));
    luaL_error(L, "mmo.cache: argument %d is a %s (string or number expected)", arg,
               luaL_typename(L, idx));
}

/* Raise for a batch that cannot run on the shared connection (see rds_check_batch). */
static void args_check(lua_State *L, const struct args *a)
{
    int bad = 0;
    const char *why = NULL;
    if (rds_check_batch(a->ncmds, a->argc, a->argv, a->argvlen, &bad, &why) < 0)
        luaL_error(L, "mmo.cache: %s: %s", a->argv[bad][0], why);
}

/* ---- replies -------------------------------------------------------------------------------- */

/* [..] -> [.., "redis: " .. msg] */
static void push_redis_err(lua_State *L, const redisReply *r)
{
    lua_pushliteral(L, "redis: ");
    lua_pushlstring(L, r->str ? r->str : "", r->str ? r->len : 0);
    lua_concat(L, 2);
}

/* [..] -> [.., v]; nil is cache.null, an error is { err = ... }. */
static void push_reply(lua_State *L, const redisReply *r)
{
    luaL_checkstack(L, 4, "mmo.cache: reply nested too deep");
    switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS: lua_pushlstring(L, r->str, r->len); break;
    case REDIS_REPLY_INTEGER: lua_pushnumber(L, (lua_Number) r->integer); break;
    case REDIS_REPLY_ERROR:
        lua_createtable(L, 0, 1);
        push_redis_err(L, r);
        lua_setfield(L, -2, "err");
        break;
    case REDIS_REPLY_ARRAY:
        lua_createtable(L, (int) r->elements, 0);
        for (size_t i = 0; i < r->elements; i++) {
            push_reply(L, r->element[i]);
            lua_rawseti(L, -2, (int) i + 1);
        }
        break;
    default: lua_pushlightuserdata(L, NULL); break;
    }
}

struct conv {
    struct redisReply **replies;
    int n;
    int kind;
    /* K_FETCH and K_LAYER: decided by the C callback */
    const redisReply *err; /* the first error reply, or NULL */
    int hit;               /* K_FETCH: a live value */
    const char *val;       /* borrowed from the reply */
    size_t vlen;
    int64_t version;
};

/* Runs protected on the helper thread: [conv] -> [results...] */
static int l_convert(lua_State *L)
{
    const struct conv *c = lua_touserdata(L, 1);
    if (c->kind == K_FETCH || c->kind == K_LAYER) {
        if (c->err) {
            lua_pushnil(L);
            push_redis_err(L, c->err);
            return 2;
        }
        if (c->kind == K_LAYER) {
            lua_pushboolean(L, 1);
            return 1;
        }
        if (!c->hit) {
            lua_pushnil(L);
            return 1;
        }
        lua_pushlstring(L, c->val, c->vlen);
        lua_pushnumber(L, (lua_Number) c->version);
        lua_pushliteral(L, "redis");
        return 3;
    }
    if (c->kind == K_PIPE || c->kind == K_PIPE_OK) {
        lua_createtable(L, c->n, 0);
        for (int i = 0; i < c->n; i++) {
            if (c->kind == K_PIPE_OK && c->replies[i]->type != REDIS_REPLY_ERROR)
                lua_pushboolean(L, 1);
            else
                push_reply(L, c->replies[i]);
            lua_rawseti(L, -2, i + 1);
        }
        return 1;
    }
    const redisReply *r = c->replies[0];
    if (r->type == REDIS_REPLY_ERROR) {
        lua_pushnil(L);
        push_redis_err(L, r);
        return 2;
    }
    if (c->kind == K_TRUE) {
        lua_pushboolean(L, 1);
    } else if (c->kind == K_BOOL && r->type == REDIS_REPLY_INTEGER) {
        lua_pushboolean(L, r->integer != 0);
    } else if (r->type == REDIS_REPLY_NIL) {
        lua_pushnil(L);
    } else {
        push_reply(L, r);
    }
    return 1;
}

/* Hand the outcome to the waiting task. The replies are converted in a protected call on a
 * helper thread, never on the suspended coroutine itself: a memory error (a capped VM, a huge
 * reply) then becomes nil, err instead of a panic outside any pcall. */
static void convert(const struct conv *c, int status, struct lb_wait *w)
{
    if (status < 0) {
        lb_wait_resume_err(w, status);
        return;
    }
    lua_State *co = lb_wait_thread(w);
    lua_pushlightuserdata(co, (void *) &HELPER_KEY); /* no allocation: nothing can raise */
    lua_rawget(co, LUA_REGISTRYINDEX);
    lua_State *h = lua_tothread(co, -1);
    lua_pop(co, 1);
    int base = lua_gettop(h);
    lua_pushvalue(h, 1); /* l_convert, kept at the bottom of the helper's stack */
    lua_pushlightuserdata(h, (void *) c);
    int rc = lua_pcall(h, 1, LUA_MULTRET, 0);
    if (rc != 0) {
        log_warn("cache", "cannot convert a Redis reply: %s",
                 lua_isstring(h, -1) ? lua_tostring(h, -1) : "?");
        lua_settop(h, base);
        lb_wait_resume_err(w, rc == LUA_ERRMEM ? -ENOMEM : ERR_PROTOCOL);
        return;
    }
    int nres = lua_gettop(h) - base;
    lua_xmove(h, co, nres);
    lb_wait_resume(w, nres);
}

static void finish(struct redisReply **replies, int n, int status, struct lb_wait *w, int kind)
{
    struct conv c = {.replies = replies, .n = n, .kind = kind};
    convert(&c, status, w);
}

static void on_any(struct redisReply **rp, int n, int status, void *ud)
{
    finish(rp, n, status, ud, K_ANY);
}

static void on_true(struct redisReply **rp, int n, int status, void *ud)
{
    finish(rp, n, status, ud, K_TRUE);
}

static void on_bool(struct redisReply **rp, int n, int status, void *ud)
{
    finish(rp, n, status, ud, K_BOOL);
}

static void on_pipe(struct redisReply **rp, int n, int status, void *ud)
{
    finish(rp, n, status, ud, K_PIPE);
}

static void on_pipe_ok(struct redisReply **rp, int n, int status, void *ud)
{
    finish(rp, n, status, ud, K_PIPE_OK);
}

static void cancel_op(void *ud)
{
    rds_op_cancel(ud);
}

/* The instance a function of cache.at(tag) is bound to (upvalue 3), 0 (home) for cache's own. */
static int bound_instance(lua_State *L)
{
    return (int) lua_tointeger(L, lua_upvalueindex(3));
}

/* Send a's commands and park the task (bindings/lb.h's pattern). */
static int run(lua_State *L, const struct args *a, rds_batch_cb *cb)
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int k = bound_instance(L);
    struct rds *r = ctx == NULL ? NULL : k > 0 && ctx->redis ? ctx->redis->r[k] : ctx->rds;
    if (r == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);
    int timeout_ms = ctx->conf ? ctx->conf->redis_timeout_ms : 0;
    struct lb_wait *w = lb_wait_begin(L);
    struct rds_op *op = NULL;
    int rc = rds_batch(r, a->ncmds, a->argc, a->argv, a->argvlen, timeout_ms, cb, w, &op);
    if (rc < 0)
        return lb_wait_fail(L, w, rc);
    lb_wait_on_cancel(w, cancel_op, op);
    return lua_yield(L, 0);
}

static void cancel_split(void *ud)
{
    rds_split_cancel(ud);
}

/* As run, each command i on instance inst[i] of ctx->redis (inst NULL: all on home). */
/* A durable pipeline in flight: its wait, what its replies become, and how many replicas
 * must have acknowledged. Freed by its callback or its cancel. */
struct durable {
    struct lb_wait *w;
    struct rds_op *op;
    int kind;
    int want;
};

static void on_durable(struct redisReply **rp, int n, int status, void *ud)
{
    struct durable *d = ud;
    struct lb_wait *w = d->w;
    int kind = d->kind, want = d->want;
    free(d);
    if (status < 0) {
        finish(rp, n, status, w, kind);
        return;
    }
    const redisReply *last = rp[n - 1];
    if (last->type != REDIS_REPLY_INTEGER || last->integer < want) {
        /* written on the primary, not (yet) on enough replicas: the caller says it failed, and
         * a retry is safe where writes are idempotent (game events: their ids) */
        static time_t logged;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        if (ts.tv_sec != logged) {
            logged = ts.tv_sec;
            log_warn("cache",
                     "a durable write reached %lld of %d replicas in time (redis."
                     "wait_replicas, wait_timeout_ms): answered unavailable",
                     last->type == REDIS_REPLY_INTEGER ? (long long) last->integer : -1LL, want);
        }
        lb_wait_resume_err(w, ERR_UNAVAILABLE);
        return;
    }
    finish(rp, n - 1, 0, w, kind);
}

static void cancel_durable(void *ud)
{
    struct durable *d = ud;
    rds_op_cancel(d->op);
    free(d);
}

/* a's commands on instance k's durable connection, then WAIT redis.wait_replicas */
static int run_durable(lua_State *L, const struct args *a, int k, int kind)
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const struct conf *c = ctx->conf;
    struct rds *r = ctx->redis ? ctx->redis->durable[k] : NULL;
    if (r == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);
    struct lb_wait *w = lb_wait_begin(L);
    struct durable *d = xcalloc(1, sizeof *d);
    d->w = w;
    d->kind = kind;
    d->want = c->redis_wait_replicas;
    int rc = rds_batch_wait(r, a->ncmds, a->argc, a->argv, a->argvlen, c->redis_wait_replicas,
                            c->redis_wait_timeout_ms, c->redis_timeout_ms, on_durable, d, &d->op);
    if (rc < 0) {
        free(d);
        return lb_wait_fail(L, w, rc);
    }
    lb_wait_on_cancel(w, cancel_durable, d);
    return lua_yield(L, 0);
}

/* durable: a pipeline whose writes must reach redis.wait_replicas replicas (when set) */
static int run_at(lua_State *L, const struct args *a, const int *inst, int kind, int durable)
{
    rds_batch_cb *cb = kind == K_PIPE ? on_pipe : on_pipe_ok;
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int k = inst ? inst[0] : 0;
    for (int i = 1; inst && i < a->ncmds; i++)
        if (inst[i] != k)
            k = -1;
    if (durable && ctx && ctx->conf && ctx->conf->redis_wait_replicas > 0) {
        if (k < 0)
            luaL_error(L, "mmo.cache: a durable pipeline must stay on one Redis instance");
        return run_durable(L, a, k, kind);
    }
    if (k >= 0 && k == bound_instance(L))
        return run(L, a, cb);
    if (ctx == NULL || ctx->redis == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);
    int timeout_ms = ctx->conf ? ctx->conf->redis_timeout_ms : 0;
    struct lb_wait *w = lb_wait_begin(L);
    int rc;
    if (k >= 0) {
        struct rds_op *op = NULL;
        rc = rds_batch(ctx->redis->r[k], a->ncmds, a->argc, a->argv, a->argvlen, timeout_ms, cb, w,
                       &op);
        if (rc < 0)
            return lb_wait_fail(L, w, rc);
        lb_wait_on_cancel(w, cancel_op, op);
    } else {
        struct rds_split *sp = NULL;
        rc = rds_split_batch(ctx->redis, inst, a->ncmds, a->argc, a->argv, a->argvlen, timeout_ms,
                             cb, w, &sp);
        if (rc < 0)
            return lb_wait_fail(L, w, rc);
        lb_wait_on_cancel(w, cancel_split, sp);
    }
    return lua_yield(L, 0);
}

/* [..] -> [.., the name of instance k] (home's redis.name, or "main", without a set) */
static void push_name(lua_State *L, const struct lb_ctx *ctx, int k)
{
    if (ctx && ctx->redis && ctx->redis->n > 0)
        lua_pushstring(L, ctx->redis->name[k]);
    else
        lua_pushstring(L,
                       ctx && ctx->conf && ctx->conf->redis_name ? ctx->conf->redis_name : "main");
}

/* The instance of the tag at idx (absolute; a string): 0 with a single instance. */
static int place_at(lua_State *L, int idx)
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    size_t len;
    const char *tag = lua_tolstring(L, idx, &len);
    return ctx && ctx->redis ? rds_set_place(ctx->redis, tag, len) : 0;
}

/* ---- the API -------------------------------------------------------------------------------- */

static int l_get(lua_State *L) /* cache.get(key) -> value | nil | nil, err */
{
    lua_settop(L, 1);
    struct args *a = args_new(L, 1, 2);
    args_cmd(a);
    args_lit(a, "GET");
    args_add(L, a, 1, 0, 1);
    return run(L, a, on_any);
}

static int l_set(lua_State *L) /* cache.set(key, value [, ttl_ms]) -> true | nil, err */
{
    lua_settop(L, 3);
    int ttl = !lua_isnil(L, 3);
    if (ttl) {
        lua_Number ms = luaL_checknumber(L, 3);
        luaL_argcheck(L, ms >= 1 && ms == floor(ms), 3, "ttl_ms must be a positive integer");
    }
    struct args *a = args_new(L, 1, 5);
    args_cmd(a);
    args_lit(a, "SET");
    args_add(L, a, 1, 0, 1);
    args_add(L, a, 2, 0, 2);
    if (ttl) {
        args_lit(a, "PX");
        args_add(L, a, 3, 0, 3);
    }
    return run(L, a, on_true);
}

static int l_del(lua_State *L) /* cache.del(key, ...) -> number | nil, err */
{
    luaL_checkany(L, 1);
    int n = lua_gettop(L);
    struct args *a = args_new(L, 1, n + 1);
    args_cmd(a);
    args_lit(a, "DEL");
    for (int i = 1; i <= n; i++)
        args_add(L, a, i, 0, i);
    return run(L, a, on_any);
}

static int l_incr(lua_State *L) /* cache.incr(key [, by]) -> number | nil, err */
{
    lua_settop(L, 2);
    struct args *a = args_new(L, 1, 3);
    args_cmd(a);
    args_lit(a, "INCRBY");
    args_add(L, a, 1, 0, 1);
    if (lua_isnil(L, 2))
        args_lit(a, "1");
    else
        args_add(L, a, 2, 0, 2);
    return run(L, a, on_any);
}

static int l_expire(lua_State *L) /* cache.expire(key, ms) -> boolean | nil, err */
{
    lua_settop(L, 2);
    struct args *a = args_new(L, 1, 3);
    args_cmd(a);
    args_lit(a, "PEXPIRE");
    args_add(L, a, 1, 0, 1);
    args_add(L, a, 2, 0, 2);
    return run(L, a, on_bool);
}

static int l_eval(lua_State *L) /* cache.eval(script [, keys [, args]]) -> reply | nil, err */
{
    luaL_checktype(L, 1, LUA_TSTRING);
    lua_settop(L, 3);
    int nkeys = 0, nargs = 0;
    if (!lua_isnil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        nkeys = (int) lua_objlen(L, 2);
    }
    if (!lua_isnil(L, 3)) {
        luaL_checktype(L, 3, LUA_TTABLE);
        nargs = (int) lua_objlen(L, 3);
    }
    struct args *a = args_new(L, 1, 3 + nkeys + nargs);
    args_cmd(a);
    args_lit(a, "EVAL");
    args_add(L, a, 1, 0, 1);
    args_num(a, nkeys);
    for (int t = 2; t <= 3; t++) {
        int n = t == 2 ? nkeys : nargs;
        for (int i = 1; i <= n; i++) {
            lua_rawgeti(L, t, i);
            if (lua_type(L, -1) != LUA_TSTRING && lua_type(L, -1) != LUA_TNUMBER)
                luaL_error(L, "mmo.cache: %s[%d] is a %s (string or number expected)",
                           t == 2 ? "keys" : "args", i, luaL_typename(L, -1));
            args_add(L, a, lua_gettop(L), 0, i);
            lua_pop(L, 1); /* the string stays alive in the table */
        }
    }
    return run(L, a, on_any);
}

static int l_cmd(lua_State *L) /* cache.cmd(name, ...) -> reply | nil, err */
{
    luaL_checktype(L, 1, LUA_TSTRING);
    int n = lua_gettop(L);
    struct args *a = args_new(L, 1, n);
    args_cmd(a);
    for (int i = 1; i <= n; i++)
        args_add(L, a, i, 0, i);
    args_check(L, a);
    return run(L, a, on_any);
}

static int l_pipeline(lua_State *L) /* cache.pipeline(cmds [, opts]) -> results | nil, err */
{
    luaL_checktype(L, 1, LUA_TTABLE);
    int replies = 1, home = bound_instance(L), durable = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_getfield(L, 2, "replies");
        replies = lua_isnil(L, -1) || lua_toboolean(L, -1);
        lua_getfield(L, 2, "durable");
        durable = lua_toboolean(L, -1);
        lua_pop(L, 1);
        lua_getfield(L, 2, "at");
        if (!lua_isnil(L, -1)) {
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "mmo.cache: opts.at is a %s (a tag string expected)",
                           luaL_typename(L, -1));
            home = place_at(L, lua_gettop(L));
        }
        lua_pop(L, 2);
    }
    lua_settop(L, 1);
    int ncmds = (int) lua_objlen(L, 1);
    if (ncmds == 0) {
        lua_createtable(L, 0, 0);
        return 1;
    }
    int total = 0;
    for (int i = 1; i <= ncmds; i++) {
        lua_rawgeti(L, 1, i);
        if (!lua_istable(L, -1) || lua_objlen(L, -1) == 0)
            luaL_error(L, "mmo.cache: command %d is a %s (a non-empty array expected)", i,
                       lua_istable(L, -1) ? "empty table" : luaL_typename(L, -1));
        total += (int) lua_objlen(L, -1);
        lua_pop(L, 1);
    }
    struct args *a = args_new(L, ncmds, total);
    /* each command's instance: its own at, else the open MULTI's, else opts.at's */
    int *inst = lua_newuserdata(L, (size_t) ncmds * sizeof *inst);
    int multi = -1;
    for (int i = 1; i <= ncmds; i++) {
        lua_rawgeti(L, 1, i);
        int cmd = lua_gettop(L);
        int n = (int) lua_objlen(L, cmd);
        args_cmd(a);
        for (int j = 1; j <= n; j++) {
            lua_rawgeti(L, cmd, j);
            args_add(L, a, lua_gettop(L), i, j);
            lua_pop(L, 1); /* the string stays alive in the table */
        }
        lua_getfield(L, cmd, "at");
        if (lua_isnil(L, -1)) {
            inst[i - 1] = multi >= 0 ? multi : home;
        } else {
            if (lua_type(L, -1) != LUA_TSTRING)
                luaL_error(L, "mmo.cache: command %d: at is a %s (a tag string expected)", i,
                           luaL_typename(L, -1));
            inst[i - 1] = place_at(L, lua_gettop(L));
            if (multi >= 0 && inst[i - 1] != multi)
                luaL_error(L,
                           "mmo.cache: command %d: a transaction (MULTI ... EXEC) must stay on "
                           "one Redis instance, and at places it on another",
                           i);
        }
        lua_pop(L, 2);
        const char *name = a->argv[i - 1][0];
        size_t nlen = a->argvlen[i - 1][0];
        if (nlen == 5 && strncasecmp(name, "MULTI", 5) == 0)
            multi = inst[i - 1];
        else if ((nlen == 4 && strncasecmp(name, "EXEC", 4) == 0) ||
                 (nlen == 7 && strncasecmp(name, "DISCARD", 7) == 0))
            multi = -1;
    }
    args_check(L, a);
    return run_at(L, a, inst, replies ? K_PIPE : K_PIPE_OK, durable);
}

/* What cache.at binds: the calls that take a command, not the layers (those are home's). */
static const luaL_Reg AT_FUNCS[] = {
    {"get", l_get},   {"set", l_set},           {"del", l_del},
    {"incr", l_incr}, {"expire", l_expire},     {"eval", l_eval},
    {"cmd", l_cmd},   {"pipeline", l_pipeline}, {NULL, NULL},
};

/* cache.at(tag) -> { get, set, del, incr, expire, eval, cmd, pipeline, name }: cache's calls
 * on the instance tag is placed on */
static int l_at(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TSTRING);
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int k = place_at(L, 1);
    lua_createtable(L, 0, 9);
    for (const luaL_Reg *f = AT_FUNCS; f->name; f++) {
        lua_pushvalue(L, lua_upvalueindex(1));
        lua_pushvalue(L, lua_upvalueindex(2));
        lua_pushinteger(L, k);
        lua_pushcclosure(L, f->func, 3);
        lua_setfield(L, -2, f->name);
    }
    push_name(L, ctx, k);
    lua_setfield(L, -2, "name");
    return 1;
}

/* cache.instances() -> { name, ... }: every Redis instance's name, home first */
static int l_instances(lua_State *L)
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int n = ctx && ctx->redis && ctx->redis->n > 0 ? ctx->redis->n : 1;
    lua_createtable(L, n, 0);
    for (int k = 0; k < n; k++) {
        push_name(L, ctx, k);
        lua_rawseti(L, -2, k + 1);
    }
    return 1;
}

/* cache.layout() -> the instances' names, sorted, comma-separated (rds_set_layout): what every
 * node must agree on (lib/leases.lua, /readyz) */
static int l_layout(lua_State *L)
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    char buf[RDS_SET_LAYOUT_MAX];
    if (ctx && ctx->redis && ctx->redis->n > 0) {
        rds_set_layout(ctx->redis, buf, sizeof buf);
        lua_pushstring(L, buf);
    } else {
        push_name(L, ctx, 0);
    }
    return 1;
}

/* cache.place(tag) -> the name of the Redis instance tag lives on (redis.name with one) */
static int l_place(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TSTRING);
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    push_name(L, ctx, place_at(L, 1));
    return 1;
}

/* ---- the cache layers ----------------------------------------------------------------------- */

/* KEYS[1] "lc:<key>"; ARGV[1] the version (decimal, no leading zeros), ARGV[2] the new value
 * ("<version>:<value>", or the tombstone "<version>!"), ARGV[3] its ttl in ms. Newer wins:
 * versions are compared as decimal strings (longer is larger), so they are exact to 2^63 - 1.
 * Returns 1 written; 0 the same version is there with a value (nothing to do); -1 refused: a
 * newer version is there, or a tombstone of this version. A value that is not ours is
 * overwritten. */
static const char FILL_SCRIPT[] =
    "local cur = redis.call('GET', KEYS[1])\n"
    "if cur then\n"
    "  local v, kind = string.match(cur, '^(%d+)([:!])')\n"
    "  if v then\n"
    "    local new = ARGV[1]\n"
    "    if #v > #new or (#v == #new and v > new) then return -1 end\n"
    "    if v == new then\n"
    "      if kind == '!' then return -1 end\n"
    "      return 0\n"
    "    end\n"
    "  end\n"
    "end\n"
    "redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])\n"
    "return 1\n";

#define RKEY_PREFIX "lc:"

enum { L_FETCH, L_FILL, L_STORE, L_DROP, L_STORES };

/* The node's counters for the layers (the local layer counts its own, core/lcache.c). */
struct layer_stats {
    uint64_t redis_hits, misses, fills, stores, drops, redis_refused;
};

/* A layered call waiting for Redis: what the callback needs after the reply. Owned by the
 * binding from rds_batch until the callback or the cancel. */
struct lop {
    struct lb_wait *w;
    struct rds_op *op;
    const struct lb_ctx *ctx; /* borrowed for the VM's lifetime */
    struct layer_stats *st;   /* idem */
    int kind;
    uint64_t epoch; /* lcache_epoch when sent */
    int64_t version;
    int ttl_ms;
    size_t klen, vlen;
    char data[]; /* key, then value (L_FILL) */
};

/* The local layer may be read and filled: it exists, and no invalidation can be missing (the
 * subscription is up, or the node has none: one node). */
static int local_trusted(const struct lb_ctx *ctx)
{
    return ctx && ctx->lcache && (ctx->sub == NULL || rds_sub_up(ctx->sub));
}

/* A version: an integral number in [0, 2^53] or a decimal string in [0, 2^63 - 1]. Raises. */
static int64_t check_version(lua_State *L, int idx)
{
    if (lua_type(L, idx) == LUA_TSTRING) {
        size_t len;
        const char *s = lua_tolstring(L, idx, &len);
        uint64_t v = 0;
        int ok = len >= 1 && len <= 19 && (len == 1 || s[0] != '0');
        for (size_t i = 0; ok && i < len; i++) {
            ok = s[i] >= '0' && s[i] <= '9';
            v = v * 10 + (uint64_t) (s[i] - '0');
        }
        luaL_argcheck(L, ok && v <= (uint64_t) INT64_MAX, idx,
                      "version must be a decimal integer >= 0");
        return (int64_t) v;
    }
    lua_Number x = luaL_checknumber(L, idx);
    luaL_argcheck(L, x >= 0 && x <= 9007199254740992.0 && x == floor(x), idx,
                  "version must be an integer >= 0 (exact up to 2^53; a string beyond)");
    return (int64_t) x;
}

static int check_ttl(lua_State *L, int idx)
{
    lua_Number ms = luaL_checknumber(L, idx);
    luaL_argcheck(L, ms >= 1 && ms <= 2147483647.0 && ms == floor(ms), idx,
                  "ttl_ms must be a positive integer");
    return (int) ms;
}

/* [..] -> [.., "<version>"]; returns the index. */
static int push_version(lua_State *L, int64_t version)
{
    char buf[VER_CAP];
    int n = snprintf(buf, sizeof buf, "%lld", (long long) version);
    lua_pushlstring(L, buf, (size_t) n);
    return lua_gettop(L);
}

/* [..] -> [.., "lc:" .. key]; returns the index. Binary-safe. */
static int push_rkey(lua_State *L, int key_idx)
{
    lua_pushliteral(L, RKEY_PREFIX);
    lua_pushvalue(L, key_idx);
    lua_concat(L, 2);
    return lua_gettop(L);
}

/* [..] -> [.., a .. sep .. b]; returns the index. */
static int push_join(lua_State *L, int a, const char *sep, int b)
{
    lua_pushvalue(L, a);
    lua_pushstring(L, sep);
    if (b)
        lua_pushvalue(L, b);
    else
        lua_pushliteral(L, "");
    lua_concat(L, 3);
    return lua_gettop(L);
}

/* "<version>:<value>" -> 1; "<version>!" (a tombstone) and anything not ours -> 0. */
static int parse_layered(const char *s, size_t len, int64_t *version, const char **val,
                         size_t *vlen)
{
    size_t i = 0;
    uint64_t v = 0;
    while (i < len && i < 19 && s[i] >= '0' && s[i] <= '9')
        v = v * 10 + (uint64_t) (s[i++] - '0');
    if (i == 0 || i >= len || s[i] != ':' || v > (uint64_t) INT64_MAX)
        return 0;
    *version = (int64_t) v;
    *val = s + i + 1;
    *vlen = len - i - 1;
    return 1;
}

static struct layer_stats *layer_stats(lua_State *L)
{
    return lua_touserdata(L, lua_upvalueindex(2));
}

/* Fill the local layer from a Redis answer: still trusted, and no clear since the call left. */
static void local_fill(const struct lop *p, const char *val, size_t vlen, int64_t version,
                       int ttl_ms)
{
    if (local_trusted(p->ctx) && lcache_epoch(p->ctx->lcache) == p->epoch)
        lcache_fill(p->ctx->lcache, p->data, p->klen, val, vlen, version, ttl_ms);
}

static void on_layer(struct redisReply **rp, int n, int status, void *ud)
{
    struct lop *p = ud;
    struct layer_stats *st = p->st;
    struct conv c = {.replies = rp, .n = n, .kind = p->kind == L_FETCH ? K_FETCH : K_LAYER};
    for (int i = 0; status == 0 && c.err == NULL && i < n; i++)
        if (rp[i]->type == REDIS_REPLY_ERROR)
            c.err = rp[i];
    if (status == 0 && c.err == NULL && p->kind != L_FETCH && rp[0]->type != REDIS_REPLY_INTEGER)
        status = ERR_PROTOCOL;
    if (status == 0 && c.err == NULL) {
        switch (p->kind) {
        case L_FETCH:
            if (rp[0]->type == REDIS_REPLY_STRING &&
                parse_layered(rp[0]->str, rp[0]->len, &c.version, &c.val, &c.vlen)) {
                c.hit = 1;
                st->redis_hits++;
                /* Expire with the Redis copy: PTTL -1 is none (0 here), -2 gone meanwhile. */
                long long pttl = rp[1]->type == REDIS_REPLY_INTEGER ? rp[1]->integer : -2;
                if (pttl == -1 || pttl > 0)
                    local_fill(p, c.val, c.vlen, c.version,
                               pttl > INT32_MAX ? INT32_MAX : (int) (pttl < 0 ? 0 : pttl));
            } else {
                st->misses++;
            }
            break;
        case L_FILL:
            st->fills++;
            if (rp[0]->integer >= 0)
                local_fill(p, p->data + p->klen, p->vlen, p->version, p->ttl_ms);
            else
                st->redis_refused++;
            break;
        case L_STORE:
            st->stores++;
            st->redis_refused += rp[0]->integer < 0;
            break;
        case L_STORES: /* EVAL, PUBLISH for each */
            for (int i = 0; i + 1 < n; i += 2) {
                st->stores++;
                st->redis_refused += rp[i]->type == REDIS_REPLY_INTEGER && rp[i]->integer < 0;
            }
            break;
        default: st->drops++; break;
        }
    }
    struct lb_wait *w = p->w;
    free(p);
    convert(&c, status, w);
}

static void cancel_layer(void *ud)
{
    struct lop *p = ud;
    rds_op_cancel(p->op);
    free(p);
}

/* Send a's commands for a layered call and park the task. key/val are copied for the callback
 * (val: L_FILL only). */
static int run_layer(lua_State *L, const struct args *a, int kind, const char *key, size_t klen,
                     const char *val, size_t vlen, int64_t version, int ttl_ms)
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int timeout_ms = ctx->conf ? ctx->conf->redis_timeout_ms : 0;
    struct lb_wait *w = lb_wait_begin(L); /* raises: before anything is allocated */
    struct lop *p = xmalloc(sizeof *p + klen + vlen);
    p->w = w;
    p->op = NULL;
    p->ctx = ctx;
    p->st = layer_stats(L);
    p->kind = kind;
    p->epoch = ctx->lcache ? lcache_epoch(ctx->lcache) : 0;
    p->version = version;
    p->ttl_ms = ttl_ms;
    p->klen = klen;
    p->vlen = vlen;
    memcpy(p->data, key, klen);
    if (vlen)
        memcpy(p->data + klen, val, vlen);
    int rc = rds_batch(ctx->rds, a->ncmds, a->argc, a->argv, a->argvlen, timeout_ms, on_layer, p,
                       &p->op);
    if (rc < 0) {
        free(p);
        return lb_wait_fail(L, w, rc);
    }
    lb_wait_on_cancel(w, cancel_layer, p);
    return lua_yield(L, 0);
}

static int l_fetch(lua_State *L) /* cache.fetch(key) -> value, version, layer | nil | nil, err */
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    lua_settop(L, 1);
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (local_trusted(ctx)) {
        const char *val;
        size_t vlen;
        int64_t version;
        if (lcache_get(ctx->lcache, key, klen, &val, &vlen, &version)) {
            lua_pushlstring(L, val, vlen);
            lua_pushnumber(L, (lua_Number) version);
            lua_pushliteral(L, "local");
            return 3;
        }
    }
    if (ctx == NULL || ctx->rds == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);
    int rkey = push_rkey(L, 1);
    struct args *a = args_new(L, 2, 4);
    args_cmd(a);
    args_lit(a, "GET");
    args_add(L, a, rkey, 0, 1);
    args_cmd(a);
    args_lit(a, "PTTL");
    args_add(L, a, rkey, 0, 1);
    return run_layer(L, a, L_FETCH, key, klen, NULL, 0, 0, 0);
}

/* EVAL FILL_SCRIPT for key (index 1) with payload at index pl, [+ PUBLISH "<version> <key>"]. */
static struct args *layer_args(lua_State *L, int ver, int pl, int ttl_ms, int publish)
{
    int rkey = push_rkey(L, 1);
    int msg = publish ? push_join(L, ver, " ", 1) : 0;
    struct args *a = args_new(L, publish ? 2 : 1, 10);
    args_cmd(a);
    args_lit(a, "EVAL");
    args_lit(a, FILL_SCRIPT);
    args_lit(a, "1");
    args_add(L, a, rkey, 0, 1);
    args_add(L, a, ver, 0, 2);
    args_add(L, a, pl, 0, 3);
    args_num(a, ttl_ms);
    if (publish) {
        args_cmd(a);
        args_lit(a, "PUBLISH");
        args_lit(a, LCACHE_CHANNEL);
        args_add(L, a, msg, 0, 1);
    }
    return a;
}

/* cache.fill(key, value, version, ttl_ms) / cache.store(...) -> true | nil, err */
static int fill_or_store(lua_State *L, int kind)
{
    size_t klen, vlen;
    const char *key = luaL_checklstring(L, 1, &klen);
    const char *val = luaL_checklstring(L, 2, &vlen);
    int64_t version = check_version(L, 3);
    int ttl_ms = check_ttl(L, 4);
    lua_settop(L, 4);
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (kind == L_STORE && ctx && ctx->lcache)
        lcache_set(ctx->lcache, key, klen, val, vlen, version, ttl_ms);
    int rc = ctx && ctx->rds ? 0 : ERR_UNAVAILABLE;
    if (rc == 0) {
        int ver = push_version(L, version);
        int pl = push_join(L, ver, ":", 2);
        struct args *a = layer_args(L, ver, pl, ttl_ms, kind == L_STORE);
        if (!rds_up(ctx->rds))
            rc = ERR_UNAVAILABLE;
        else
            return run_layer(L, a, kind, key, klen, kind == L_FILL ? val : NULL,
                             kind == L_FILL ? vlen : 0, version, ttl_ms);
    }
    /* No Redis to decide: a node without a subscriber trusts its local layer alone. */
    if (kind == L_FILL && ctx && ctx->lcache && ctx->sub == NULL)
        lcache_fill(ctx->lcache, key, klen, val, vlen, version, ttl_ms);
    return lb_push_err(L, rc);
}

static int l_fill(lua_State *L)
{
    return fill_or_store(L, L_FILL);
}

static int l_store(lua_State *L)
{
    return fill_or_store(L, L_STORE);
}

/* cache.store_many({ {key, value, version, ttl_ms}, ... }) -> true | nil, err */
static int l_store_many(lua_State *L)
{
    enum { SLOTS = 9 }; /* per entry: entry, key, value, version, ttl, rkey, ver, payload, msg */
    luaL_checktype(L, 1, LUA_TTABLE);
    int n = (int) lua_objlen(L, 1);
    luaL_argcheck(L, n <= 10000, 1, "at most 10,000 entries");
    lua_settop(L, 1);
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (n == 0) {
        lua_pushboolean(L, 1);
        return 1;
    }
    luaL_checkstack(L, SLOTS * n + 16, "cache.store_many");
    for (int i = 1; i <= n; i++) {
        lua_rawgeti(L, 1, i);
        int e = lua_gettop(L);
        if (!lua_istable(L, e))
            return luaL_error(L,
                              "cache.store_many: entry %d is not { key, value, version, "
                              "ttl_ms }",
                              i);
        for (int f = 1; f <= 4; f++)
            lua_rawgeti(L, e, f);
        size_t klen, vlen;
        const char *key = lua_tolstring(L, e + 1, &klen);
        const char *val = lua_tolstring(L, e + 2, &vlen);
        if (lua_type(L, e + 1) != LUA_TSTRING || lua_type(L, e + 2) != LUA_TSTRING)
            return luaL_error(L, "cache.store_many: entry %d: key and value must be strings", i);
        int64_t version = check_version(L, e + 3);
        int ttl_ms = check_ttl(L, e + 4);
        if (ctx && ctx->lcache)
            lcache_set(ctx->lcache, key, klen, val, vlen, version, ttl_ms);
        push_rkey(L, e + 1);
        int ver = push_version(L, version);
        push_join(L, ver, ":", e + 2);
        push_join(L, ver, " ", e + 1);
    }
    if (ctx == NULL || ctx->rds == NULL || !rds_up(ctx->rds))
        return lb_push_err(L, ERR_UNAVAILABLE);
    struct args *a = args_new(L, 2 * n, 10 * n);
    for (int i = 0; i < n; i++) {
        int e = 2 + i * SLOTS;
        args_cmd(a);
        args_lit(a, "EVAL");
        args_lit(a, FILL_SCRIPT);
        args_lit(a, "1");
        args_add(L, a, e + 5, 0, 1); /* "lc:" .. key */
        args_add(L, a, e + 6, 0, 2); /* version */
        args_add(L, a, e + 7, 0, 3); /* "<version>:<value>" */
        args_num(a, lua_tonumber(L, e + 4));
        args_cmd(a);
        args_lit(a, "PUBLISH");
        args_lit(a, LCACHE_CHANNEL);
        args_add(L, a, e + 8, 0, 1); /* "<version> <key>" */
    }
    return run_layer(L, a, L_STORES, "", 0, NULL, 0, 0, 0);
}

static int l_drop(lua_State *L) /* cache.drop(key, version) -> true | nil, err */
{
    size_t klen;
    const char *key = luaL_checklstring(L, 1, &klen);
    int64_t version = check_version(L, 2);
    lua_settop(L, 2);
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (ctx && ctx->lcache)
        lcache_drop(ctx->lcache, key, klen, version);
    if (ctx == NULL || ctx->rds == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);
    int ver = push_version(L, version);
    int pl = push_join(L, ver, "!", 0);
    struct args *a = layer_args(L, ver, pl, LCACHE_TOMBSTONE_MS, 1);
    return run_layer(L, a, L_DROP, key, klen, NULL, 0, version, 0);
}

static void set_count(lua_State *L, const char *name, uint64_t v)
{
    lua_pushnumber(L, (lua_Number) v);
    lua_setfield(L, -2, name);
}

static int l_layers(lua_State *L) /* cache.layers() -> { counters } */
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const struct layer_stats *st = layer_stats(L);
    struct lcache_stats ls;
    memset(&ls, 0, sizeof ls);
    if (ctx && ctx->lcache)
        lcache_stats(ctx->lcache, &ls);
    lua_createtable(L, 0, 16);
    set_count(L, "local_hits", ls.hits);
    set_count(L, "local_misses", ls.misses);
    set_count(L, "redis_hits", st->redis_hits);
    set_count(L, "misses", st->misses);
    set_count(L, "fills", st->fills);
    set_count(L, "stores", st->stores);
    set_count(L, "drops", st->drops);
    set_count(L, "stale_refused", ls.stale_refused + st->redis_refused);
    set_count(L, "evictions", ls.evictions);
    set_count(L, "expired", ls.expired);
    set_count(L, "invalidations_received", ls.invalidations);
    set_count(L, "entries", ls.entries);
    set_count(L, "tombstones", ls.tombstones);
    set_count(L, "bytes", ls.bytes);
    set_count(L, "clears", ls.clears);
    lua_pushboolean(L, ctx && ctx->sub && rds_sub_up(ctx->sub));
    lua_setfield(L, -2, "subscribed");
    return 1;
}

static const luaL_Reg FUNCS[] = {
    {"get", l_get},
    {"set", l_set},
    {"del", l_del},
    {"incr", l_incr},
    {"expire", l_expire},
    {"eval", l_eval},
    {"cmd", l_cmd},
    {"pipeline", l_pipeline},
    {"place", l_place},
    {"at", l_at},
    {"instances", l_instances},
    {"layout", l_layout},
    {"fetch", l_fetch},
    {"fill", l_fill},
    {"store", l_store},
    {"drop", l_drop},
    {"store_many", l_store_many},
    {"layers", l_layers},
    {NULL, NULL},
};

int luaopen_mmo_cache(lua_State *L)
{
    /* The helper thread, one per VM, anchored in the registry: [1] = l_convert. */
    lua_pushlightuserdata(L, (void *) &HELPER_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    if (!lua_isthread(L, -1)) {
        lua_pushlightuserdata(L, (void *) &HELPER_KEY);
        lua_State *h = lua_newthread(L);
        lua_pushcfunction(h, l_convert);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }
    lua_pop(L, 1);

    /* The layers' counters, one block per VM, anchored in the registry. */
    lua_pushlightuserdata(L, (void *) &STATS_KEY);
    lua_rawget(L, LUA_REGISTRYINDEX);
    struct layer_stats *st = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (st == NULL) {
        lua_pushlightuserdata(L, (void *) &STATS_KEY);
        st = lua_newuserdata(L, sizeof *st);
        memset(st, 0, sizeof *st);
        lua_rawset(L, LUA_REGISTRYINDEX);
    }

    luaL_newlibtable(L, FUNCS);
    lua_pushlightuserdata(L, lb_ctx(L)); /* borrowed for the VM's lifetime */
    lua_pushlightuserdata(L, st);        /* anchored in the registry */
    luaL_setfuncs(L, FUNCS, 2);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
