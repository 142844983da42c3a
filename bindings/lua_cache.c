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
 * ({ {"MULTI"}, ..., {"EXEC"} }), and a check-and-set is a cache.eval script. */
#include "bindings.h"
#include "err.h"
#include "lb.h"
#include "log.h"
#include "rds.h"
#include "conf.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <hiredis/hiredis.h>

#define NUM_CAP 32 /* "%.17g" of any double, or an int64 */

enum { K_ANY, K_TRUE, K_BOOL, K_PIPE };

/* Its address is the registry key of the helper thread that converts replies (see finish). */
static const char HELPER_KEY = 0;

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
};

/* Runs protected on the helper thread: [conv] -> [results...] */
static int l_convert(lua_State *L)
{
    const struct conv *c = lua_touserdata(L, 1);
    if (c->kind == K_PIPE) {
        lua_createtable(L, c->n, 0);
        for (int i = 0; i < c->n; i++) {
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
static void finish(struct redisReply **replies, int n, int status, struct lb_wait *w, int kind)
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
    struct conv c = {replies, n, kind};
    int base = lua_gettop(h);
    lua_pushvalue(h, 1); /* l_convert, kept at the bottom of the helper's stack */
    lua_pushlightuserdata(h, &c);
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

static void cancel_op(void *ud)
{
    rds_op_cancel(ud);
}

/* Send a's commands and park the task (bindings/lb.h's pattern). */
static int run(lua_State *L, const struct args *a, rds_batch_cb *cb)
{
    const struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (ctx == NULL || ctx->rds == NULL)
        return lb_push_err(L, ERR_UNAVAILABLE);
    int timeout_ms = ctx->conf ? ctx->conf->redis_timeout_ms : 0;
    struct lb_wait *w = lb_wait_begin(L);
    struct rds_op *op = NULL;
    int rc = rds_batch(ctx->rds, a->ncmds, a->argc, a->argv, a->argvlen, timeout_ms, cb, w, &op);
    if (rc < 0)
        return lb_wait_fail(L, w, rc);
    lb_wait_on_cancel(w, cancel_op, op);
    return lua_yield(L, 0);
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

static int l_pipeline(lua_State *L) /* cache.pipeline(cmds) -> results | nil, err */
{
    luaL_checktype(L, 1, LUA_TTABLE);
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
        lua_pop(L, 1);
    }
    args_check(L, a);
    return run(L, a, on_pipe);
}

static const luaL_Reg FUNCS[] = {
    {"get", l_get},   {"set", l_set},           {"del", l_del},
    {"incr", l_incr}, {"expire", l_expire},     {"eval", l_eval},
    {"cmd", l_cmd},   {"pipeline", l_pipeline}, {NULL, NULL},
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

    luaL_newlibtable(L, FUNCS);
    lua_pushlightuserdata(L, lb_ctx(L)); /* borrowed for the VM's lifetime */
    luaL_setfuncs(L, FUNCS, 1);
    lua_pushlightuserdata(L, NULL);
    lua_setfield(L, -2, "null");
    return 1;
}
