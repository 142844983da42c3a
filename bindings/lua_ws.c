/* lua_ws.c -- require "mmo.ws": the WebSocket connections of this node, by id.
 *
 *   ws.send(conn_id, msg)              -> true | nil, "closed"   msg: a table, sent as JSON,
 *                                                                 or a string: sent as it is
 *   ws.close(conn_id [, code, reason]) -> true                   close handshake (code 4000+:
 *                                                                 the game's own)
 *   ws.close_account(account_id, code, reason) -> n              every connection of an
 *                                                                 account, on every node
 *                                                                 (ban); n: this node's
 *   ws.close_session(sid, code, reason) -> n                     of one session (logout)
 *   ws.set_player(conn_id, player_id, speed, speed_until, base_speed) -> true
 *                                      the player it plays (join), and how fast it may move:
 *                                      speed until speed_until (epoch s; 0: always), then
 *                                      base_speed; conn.speed in handlers is the one now
 *   ws.touch(conn_id, interval_ms)     -> boolean                true at most once per
 *                                                                 interval: time to write
 *                                                                 presence again
 *   ws.count()                         -> connections open
 *   ws.node()                          -> this node's id (config node.id)
 *
 * A connection id is a number that never comes back once its connection has ended: every call
 * with the id of a gone connection is a harmless no-op. */
#include "bindings.h"
#include "conf.h"
#include "err.h"
#include "lb.h"
#include "live.h"
#include "realtime.h"

#include <stdint.h>

static struct realtime *rt_of(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (ctx->rt == NULL)
        luaL_error(L, "mmo.ws: this node serves no WebSocket");
    return ctx->rt;
}

static uint64_t conn_arg(lua_State *L, int idx)
{
    lua_Number n = luaL_checknumber(L, idx);
    luaL_argcheck(L, n >= 1 && n < 9007199254740992.0, idx, "a connection id");
    return (uint64_t) n;
}

static int l_send(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    uint64_t id = conn_arg(L, 1);
    if (lua_type(L, 2) != LUA_TSTRING) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushvalue(L, lua_upvalueindex(2)); /* mmo.json.encode */
        lua_pushvalue(L, 2);
        lua_call(L, 1, 1);
    }
    size_t len;
    const char *text = lua_tolstring(L, -1, &len);
    if (realtime_send(rt, id, text, len) < 0)
        return lb_push_err(L, ERR_CLOSED);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_close(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    realtime_close(rt, conn_arg(L, 1), (int) luaL_optinteger(L, 2, 1000),
                   luaL_optstring(L, 3, NULL));
    lua_pushboolean(L, 1);
    return 1;
}

/* the connections of an account (a session) close on every node: here at once (their number is
 * returned), on the others when the message on mmo:live reaches them */
static int l_close_account(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int64_t account = (int64_t) luaL_checknumber(L, 1);
    int code = (int) luaL_optinteger(L, 2, 4003);
    const char *reason = luaL_optstring(L, 3, NULL);
    lua_pushinteger(L, ctx->live ? live_close_account(ctx->live, account, code, reason)
                                 : realtime_close_account(rt, account, code, reason));
    return 1;
}

static int l_close_session(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const char *sid = luaL_checkstring(L, 1);
    int code = (int) luaL_optinteger(L, 2, 4001);
    const char *reason = luaL_optstring(L, 3, NULL);
    lua_pushinteger(L, ctx->live ? live_close_session(ctx->live, sid, code, reason)
                                 : realtime_close_sid(rt, sid, code, reason));
    return 1;
}

static int l_set_player(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    realtime_set_player(rt, conn_arg(L, 1), (int64_t) luaL_optnumber(L, 2, 0),
                        luaL_optnumber(L, 3, 0), luaL_optnumber(L, 4, 0), luaL_optnumber(L, 5, 0));
    lua_pushboolean(L, 1);
    return 1;
}

static int l_touch(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    lua_pushboolean(L, realtime_touch(rt, conn_arg(L, 1), (int) luaL_checkinteger(L, 2)));
    return 1;
}

static int l_node(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushstring(L, ctx->conf ? ctx->conf->node_id : "node");
    return 1;
}

static int l_count(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, ctx->rt ? realtime_count(ctx->rt) : 0);
    return 1;
}

int luaopen_mmo_ws(lua_State *L)
{
    static const luaL_Reg FUNCS[] = {
        {"send", l_send},
        {"close", l_close},
        {"close_account", l_close_account},
        {"close_session", l_close_session},
        {"set_player", l_set_player},
        {"touch", l_touch},
        {"count", l_count},
        {"node", l_node},
        {NULL, NULL},
    };
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    int enc = lua_gettop(L);
    lua_createtable(L, 0, 8);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushlightuserdata(L, lb_ctx(L));
        lua_pushvalue(L, enc);
        lua_pushcclosure(L, f->func, 2);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
