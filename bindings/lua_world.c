/* lua_world.c -- require "mmo.world": the live world of this node (core/world.c).
 *
 *   world.add_region(id, x0, y0, x1, y1) -> true | nil, "invalid"
 *   world.regions()                      -> number of regions loaded
 *   world.join(conn_id, player_id, name, guild_id, region, x, y)
 *                                        -> nearby | nil, err     nearby: {{id, name, x, y}}
 *       A player already in the world on another connection continues on this one; the other
 *       gets {"t":"error","code":"replaced"} and is closed (4002). Then call ws.set_player.
 *   world.move(player_id, x, y [, at])   -> true | nil, "not found" | nil, "invalid"
 *       at: the player's travel clock after the move (rules/movement.lua), default now
 *   world.position(player_id)            -> {x, y, region, at, name, guild} | nil
 *   world.leave(player_id, conn_id)      -> true | nil, "not found"
 *   world.generation(player_id)          -> n | nil   this stay in the world (new at each join)
 *   world.set_guild(player_id, guild_id) -> true | nil, "not found"   (0 or nil: no guild)
 *   world.send_region(region, msg)       -> receivers     msg: a table, encoded once; the
 *       players of other nodes get it too (core/live.h); receivers counts this node's
 *   world.send_guild(guild_id, msg)      -> receivers
 *   world.send_all(msg)                  -> receivers
 *   world.online([region])               -> players in the world (in region)
 *   world.presence(region, rects)        -> {[i] = {[guild_id] = players}}   rects: {{x0, y0,
 *       x1, y1}, ...} (at most 4096); a player counts in the first rectangle that holds it;
 *       players without a guild count under guild 0; rectangles nobody stands in are absent
 *   world.snapshot(region)               -> text | nil, "not found"   every player of region
 *       on this node, encoded once for an observer: {"t":"observed","region":..,
 *       "players":[[id, name, x, y, guild], ...]}
 *   world.settings()                     -> {node, view_radius, lease_ms, worker}  (config.lua)
 *   world.take_dirty()                   -> {{id, region, x, y, at}, ...}  moved since the last
 *                                           call (checkpoints)
 *
 * Moves are not checked here: rules/movement.lua decides, this applies. */
#include "bindings.h"
#include "conf.h"
#include "err.h"
#include "lb.h"
#include "live.h"
#include "realtime.h"
#include "world.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static struct realtime *rt_of(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    if (ctx->rt == NULL)
        luaL_error(L, "mmo.world: this node has no world (no WebSocket)");
    return ctx->rt;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static int64_t id_arg(lua_State *L, int idx)
{
    lua_Number n = luaL_checknumber(L, idx);
    luaL_argcheck(L, n >= 1 && n < 9007199254740992.0 && n == floor(n), idx, "an id");
    return (int64_t) n;
}

static double coord(lua_State *L, int idx)
{
    double v = luaL_checknumber(L, idx);
    luaL_argcheck(L, isfinite(v), idx, "a finite number");
    return v;
}

static int l_add_region(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    const char *id = luaL_checkstring(L, 1);
    if (world_region_add(realtime_world(rt), id, coord(L, 2), coord(L, 3), coord(L, 4),
                         coord(L, 5)) < 0)
        return lb_push_err(L, ERR_INVALID);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_regions(lua_State *L)
{
    lua_pushinteger(L, world_regions(realtime_world(rt_of(L))));
    return 1;
}

struct nearby {
    lua_State *L;
    int n;
};

static void add_nearby(int64_t id, const char *name, double x, double y, void *arg)
{
    struct nearby *nb = arg;
    lua_State *L = nb->L;
    lua_createtable(L, 0, 4);
    lua_pushnumber(L, (lua_Number) id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, name); /* already escaped for JSON, and names have nothing to escape */
    lua_setfield(L, -2, "name");
    lua_pushnumber(L, x);
    lua_setfield(L, -2, "x");
    lua_pushnumber(L, y);
    lua_setfield(L, -2, "y");
    lua_rawseti(L, -2, ++nb->n);
}

static int l_join(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    uint64_t conn = (uint64_t) id_arg(L, 1);
    int64_t pid = id_arg(L, 2);
    const char *name = luaL_checkstring(L, 3);
    int64_t guild = (int64_t) luaL_optnumber(L, 4, 0);
    const char *region = luaL_checkstring(L, 5);
    double x = coord(L, 6), y = coord(L, 7);
    struct rt_sess *s = realtime_sess(rt, conn);
    if (s == NULL)
        return lb_push_err(L, ERR_CLOSED);
    void *replaced = NULL;
    struct world *w = realtime_world(rt);
    if (world_join(w, s, pid, name, guild, region, x, y, now(), &replaced) < 0)
        return lb_push_err(L, ERR_INVALID);
    if (replaced)
        realtime_replace(rt, realtime_sess_id(replaced));
    lua_newtable(L);
    struct nearby nb = {L, 0};
    world_each_visible(w, pid, add_nearby, &nb);
    return 1;
}

static int l_move(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    double at = luaL_optnumber(L, 4, 0);
    if (!(isfinite(at) && at > 0))
        at = now();
    int rc = world_move(realtime_world(rt), id_arg(L, 1), coord(L, 2), coord(L, 3), at);
    if (rc < 0)
        return lb_push_err(L, rc);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_position(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    double x, y, at;
    const char *region;
    if (world_position(realtime_world(rt), id_arg(L, 1), &x, &y, &region, &at) < 0) {
        lua_pushnil(L);
        return 1;
    }
    const char *name;
    int64_t guild;
    world_who(realtime_world(rt), id_arg(L, 1), &name, &guild);
    lua_createtable(L, 0, 6);
    lua_pushnumber(L, x);
    lua_setfield(L, -2, "x");
    lua_pushnumber(L, y);
    lua_setfield(L, -2, "y");
    lua_pushstring(L, region);
    lua_setfield(L, -2, "region");
    lua_pushnumber(L, at);
    lua_setfield(L, -2, "at");
    lua_pushstring(L, name);
    lua_setfield(L, -2, "name");
    if (guild > 0) {
        lua_pushnumber(L, (lua_Number) guild);
        lua_setfield(L, -2, "guild");
    }
    return 1;
}

static int l_generation(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    uint64_t g = ctx->rt ? world_generation(realtime_world(ctx->rt), id_arg(L, 1)) : 0;
    if (g == 0)
        lua_pushnil(L);
    else
        lua_pushnumber(L, (lua_Number) g);
    return 1;
}

static int l_set_guild(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    int64_t guild = (int64_t) luaL_optnumber(L, 2, 0);
    if (world_set_guild(realtime_world(rt), id_arg(L, 1), guild) < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "not found");
        return 2;
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int l_leave(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    int64_t pid = id_arg(L, 1);
    struct rt_sess *s = realtime_sess(rt, (uint64_t) id_arg(L, 2));
    if (s == NULL || world_leave(realtime_world(rt), pid, s) < 0)
        return lb_push_err(L, ERR_NOTFOUND);
    realtime_set_player(rt, realtime_sess_id(s), 0, 0, 0, 0);
    lua_pushboolean(L, 1);
    return 1;
}

/* [.., msg at idx] -> the encoded text on top */
static const char *encode(lua_State *L, int idx, size_t *len)
{
    luaL_checktype(L, idx, LUA_TTABLE);
    lua_pushvalue(L, lua_upvalueindex(2));
    lua_pushvalue(L, idx);
    lua_call(L, 1, 1);
    return lua_tolstring(L, -1, len);
}

static int l_send_region(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    const char *region = luaL_checkstring(L, 1);
    size_t len;
    const char *text = encode(L, 2, &len);
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, ctx->live ? live_send_region(ctx->live, region, text, len)
                                 : world_send_region(realtime_world(rt), region, text, len));
    return 1;
}

static int l_send_guild(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    int64_t guild = (int64_t) luaL_checknumber(L, 1);
    size_t len;
    const char *text = encode(L, 2, &len);
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, ctx->live ? live_send_guild(ctx->live, guild, text, len)
                                 : world_send_guild(realtime_world(rt), guild, text, len));
    return 1;
}

static int l_send_all(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    size_t len;
    const char *text = encode(L, 1, &len);
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_pushinteger(L, ctx->live ? live_send_all(ctx->live, text, len)
                                 : world_send_all(realtime_world(rt), text, len));
    return 1;
}

static int l_online(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const char *region = luaL_optstring(L, 1, NULL);
    lua_pushinteger(L, ctx->rt ? world_online(realtime_world(ctx->rt), region) : 0);
    return 1;
}

static int l_snapshot(lua_State *L) /* world.snapshot(region) -> text | nil, "not found" */
{
    struct realtime *rt = rt_of(L);
    size_t len;
    char *text = world_snapshot(realtime_world(rt), luaL_checkstring(L, 1), &len);
    if (text == NULL)
        return lb_push_err(L, ERR_NOTFOUND);
    lua_pushlstring(L, text, len); /* may raise (memory): text would leak, so copy first */
    free(text);
    return 1;
}

struct dirty {
    lua_State *L;
    int n;
};

static void add_dirty(int64_t id, const char *region, double x, double y, double at, void *arg)
{
    struct dirty *d = arg;
    lua_State *L = d->L;
    lua_createtable(L, 0, 5);
    lua_pushnumber(L, (lua_Number) id);
    lua_setfield(L, -2, "id");
    lua_pushstring(L, region);
    lua_setfield(L, -2, "region");
    lua_pushnumber(L, x);
    lua_setfield(L, -2, "x");
    lua_pushnumber(L, y);
    lua_setfield(L, -2, "y");
    lua_pushnumber(L, at);
    lua_setfield(L, -2, "at");
    lua_rawseti(L, -2, ++d->n);
}

static int l_take_dirty(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    lua_newtable(L);
    if (ctx->rt) {
        struct dirty d = {L, 0};
        world_take_dirty(realtime_world(ctx->rt), add_dirty, &d);
    }
    return 1;
}

struct presence {
    lua_State *L;
    int out;
};

static void add_presence(int rect, int64_t guild, void *arg)
{
    struct presence *pr = arg;
    lua_State *L = pr->L;
    lua_rawgeti(L, pr->out, rect + 1);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_createtable(L, 0, 2);
        lua_pushvalue(L, -1);
        lua_rawseti(L, pr->out, rect + 1);
    }
    lua_pushnumber(L, (lua_Number) guild);
    lua_rawget(L, -2);
    lua_Number n = lua_isnumber(L, -1) ? lua_tonumber(L, -1) : 0;
    lua_pop(L, 1);
    lua_pushnumber(L, (lua_Number) guild);
    lua_pushnumber(L, n + 1);
    lua_rawset(L, -3);
    lua_pop(L, 1);
}

static int l_presence(lua_State *L)
{
    struct realtime *rt = rt_of(L);
    const char *region = luaL_checkstring(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    int n = (int) lua_objlen(L, 2);
    if (n > 4096)
        return luaL_error(L, "world.presence: at most 4096 rectangles");
    double *rects = lua_newuserdata(L, sizeof(double) * 4 * (size_t) (n > 0 ? n : 1));
    for (int i = 0; i < n; i++) {
        lua_rawgeti(L, 2, i + 1);
        if (!lua_istable(L, -1))
            return luaL_error(L, "world.presence: rectangle %d is not {x0, y0, x1, y1}", i + 1);
        for (int k = 0; k < 4; k++) {
            lua_rawgeti(L, -1, k + 1);
            if (!lua_isnumber(L, -1))
                return luaL_error(L, "world.presence: rectangle %d is not {x0, y0, x1, y1}", i + 1);
            rects[4 * i + k] = lua_tonumber(L, -1);
            lua_pop(L, 1);
        }
        lua_pop(L, 1);
    }
    lua_createtable(L, n, 0);
    struct presence pr = {L, lua_gettop(L)};
    if (world_each_in_rects(realtime_world(rt), region, rects, n, add_presence, &pr) < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "no such region");
        return 2;
    }
    return 1;
}

static int l_settings(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    const struct conf *c = ctx->conf;
    lua_createtable(L, 0, 3);
    lua_pushstring(L, c ? c->node_id : "node");
    lua_setfield(L, -2, "node");
    lua_pushinteger(L, c ? c->world_view_radius : 100);
    lua_setfield(L, -2, "view_radius");
    lua_pushinteger(L, c ? c->world_lease_ms : 10000);
    lua_setfield(L, -2, "lease_ms");
    lua_pushboolean(L, c ? c->pipeline_worker : 1);
    lua_setfield(L, -2, "worker");
    return 1;
}

int luaopen_mmo_world(lua_State *L)
{
    static const luaL_Reg FUNCS[] = {
        {"add_region", l_add_region},
        {"regions", l_regions},
        {"join", l_join},
        {"move", l_move},
        {"position", l_position},
        {"leave", l_leave},
        {"set_guild", l_set_guild},
        {"generation", l_generation},
        {"send_region", l_send_region},
        {"send_guild", l_send_guild},
        {"send_all", l_send_all},
        {"online", l_online},
        {"snapshot", l_snapshot},
        {"take_dirty", l_take_dirty},
        {"settings", l_settings},
        {"presence", l_presence},
        {NULL, NULL},
    };
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    int enc = lua_gettop(L);
    lua_createtable(L, 0, 12);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushlightuserdata(L, lb_ctx(L));
        lua_pushvalue(L, enc);
        lua_pushcclosure(L, f->func, 2);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
