/* lb.c -- helpers shared by the bindings, and the preload table of mmo.* modules. */
#include "lb.h"
#include "bindings.h"
#include "err.h"

static const char CTX_KEY[] = "mmo.ctx";

void lb_set_ctx(lua_State *L, struct lb_ctx *ctx)
{
    lua_pushlightuserdata(L, ctx);
    lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
}

struct lb_ctx *lb_ctx(lua_State *L)
{
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    struct lb_ctx *ctx = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return ctx;
}

int lb_push_err(lua_State *L, int rc)
{
    lua_pushnil(L);
    lua_pushstring(L, err_str(rc));
    return 2;
}

static void preload_all(lua_State *L, const luaL_Reg *modules)
{
    lua_getfield(L, LUA_GLOBALSINDEX, "package");
    lua_getfield(L, -1, "preload");
    for (const luaL_Reg *m = modules; m->name; m++) {
        lua_pushcfunction(L, m->func);
        lua_setfield(L, -2, m->name);
    }
    lua_pop(L, 2);
}

void bindings_preload(lua_State *L)
{
    static const luaL_Reg MODULES[] = {
        {"mmo.db", luaopen_mmo_db},
        {"mmo.cache", luaopen_mmo_cache},
        {"mmo.json", luaopen_mmo_json},
        {"mmo.log", luaopen_mmo_log},
        {"mmo.time", luaopen_mmo_time},
        {"mmo.auth", luaopen_mmo_auth},
        {"mmo.ws", luaopen_mmo_ws},
        {"mmo.world", luaopen_mmo_world},
        {"mmo.crypto", luaopen_mmo_crypto},
        {"mmo.queue", luaopen_mmo_queue},
        {"mmo.metrics", luaopen_mmo_metrics},
        {"mmo.state", luaopen_mmo_state},
        {"mmo.scripts", luaopen_mmo_scripts},
        {"mmo.events", luaopen_mmo_events},
        {NULL, NULL},
    };
    preload_all(L, MODULES);
}

int luaopen_cjson(lua_State *L);
int luaopen_cjson_safe(lua_State *L);

void bindings_preload_json(lua_State *L)
{
    static const luaL_Reg MODULES[] = {
        {"cjson", luaopen_cjson},
        {"cjson.safe", luaopen_cjson_safe},
        {"mmo.json", luaopen_mmo_json},
        {NULL, NULL},
    };
    preload_all(L, MODULES);
}
