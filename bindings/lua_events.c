/* lua_events.c -- require "mmo.events": game events for the mods (core/mods.h,
 * docs/modding.md).
 *
 *   events.emit(name, payload) -> n    payload: a table with string keys (a JSON object). It is
 *                                      encoded once and delivered now, before emit returns, to
 *                                      every running mod subscribed to name; n handlers ran to
 *                                      their end (0 when the node runs no mods). A failing mod
 *                                      is disabled and logged by the core: emit never raises
 *                                      for what a mod does. Raises on a bad name or payload.
 *   events.mods() -> { {name=, version=, state=, error=, strikes=, last_strike=}, ... }
 *                                      the mods of the set in use, in its order (core/mods.h
 *                                      mods_info): state is "running" | "failed" | "disabled",
 *                                      error nil or why, version nil when the manifest did not
 *                                      load, strikes since it was loaded and why the last one
 *
 * The set in use is ctx->mods, read at every call (a script reload may replace it). */
#include "bindings.h"
#include "err.h"
#include "lb.h"
#include "mods.h"

#include <string.h>

static int l_emit(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    luaL_argcheck(L, mods_event_name_ok(name, n), 1,
                  "not an event name (1 to 64 letters, digits and \"._:-\")");
    luaL_checktype(L, 2, LUA_TTABLE);
    if (ctx->mods == NULL || mods_count(ctx->mods) == 0) {
        lua_pushinteger(L, 0);
        return 1;
    }
    lua_pushvalue(L, lua_upvalueindex(2)); /* mmo.json.encode */
    lua_pushvalue(L, 2);
    lua_call(L, 1, 1);
    size_t len;
    const char *json = lua_tolstring(L, -1, &len);
    if (json[0] != '{')
        return luaL_argerror(L, 2, "an object expected (a table with string keys)");
    int rc = mods_emit(ctx->mods, name, json, len);
    if (rc < 0)
        return luaL_error(L, "events.emit: %s", err_str(rc));
    lua_pushinteger(L, rc);
    return 1;
}

static void set_string(lua_State *L, const char *key, const char *v)
{
    if (v == NULL)
        return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, key);
}

static int l_mods(lua_State *L)
{
    struct lb_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
    int n = mods_count(ctx->mods);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        struct mods_info mi;
        mods_info(ctx->mods, i, &mi);
        lua_createtable(L, 0, 6);
        set_string(L, "name", mi.name);
        set_string(L, "version", mi.version);
        set_string(L, "state", mi.state);
        set_string(L, "error", mi.error);
        lua_pushinteger(L, mi.strikes);
        lua_setfield(L, -2, "strikes");
        set_string(L, "last_strike", mi.last_strike);
        lua_rawseti(L, -2, i + 1);
    }
    return 1;
}

int luaopen_mmo_events(lua_State *L)
{
    static const luaL_Reg FUNCS[] = {{"emit", l_emit}, {"mods", l_mods}, {NULL, NULL}};
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    lua_remove(L, -2);
    int encode = lua_gettop(L);
    lua_createtable(L, 0, 2);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushlightuserdata(L, lb_ctx(L));
        lua_pushvalue(L, encode);
        lua_pushcclosure(L, f->func, 2);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
