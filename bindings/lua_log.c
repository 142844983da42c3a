/* lua_log.c -- require "mmo.log": structured logs from Lua.
 *
 *   log.debug(msg [, fields])  log.info(...)  log.warn(...)  log.error(...)
 *       fields: a table of extra keys for the JSON line ({player = 42, region = "r1"});
 *       the request id of the running request is added by itself.
 *   log.level() -> "info"        log.set_level("debug") -> true | nil, "invalid" (the whole node)
 *
 * Lines go through core/log.c, so they look like the core's own. */
#include "bindings.h"
#include "lb.h"
#include "log.h"

#include <string.h>

static int do_log(lua_State *L, int level)
{
    size_t len;
    const char *msg = luaL_checklstring(L, 1, &len);
    if (log__level > level)
        return 0;
    const char *fields = NULL;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        lua_pushvalue(L, lua_upvalueindex(1)); /* mmo.json.encode */
        lua_pushvalue(L, 2);
        if (lua_pcall(L, 1, 1, 0) == 0) {
            size_t fl;
            const char *f = lua_tolstring(L, -1, &fl);
            /* "{...}" -> "..." ; an empty table encodes as "{}" */
            if (fl > 2 && f[0] == '{') {
                lua_pushlstring(L, f + 1, fl - 2);
                fields = lua_tostring(L, -1);
            }
        } else {
            fields = "\"fields_error\":\"fields cannot be encoded\"";
        }
    }
    log_write(level, "lua", lb_request_id(L), fields, "%.*s", (int) len, msg);
    return 0;
}

static int l_debug(lua_State *L)
{
    return do_log(L, LOG_DEBUG);
}

static int l_info(lua_State *L)
{
    return do_log(L, LOG_INFO);
}

static int l_warn(lua_State *L)
{
    return do_log(L, LOG_WARN);
}

static int l_error(lua_State *L)
{
    return do_log(L, LOG_ERROR);
}

static int l_level(lua_State *L)
{
    lua_pushstring(L, log_level_name(log__level));
    return 1;
}

/* log.set_level(name) -> true | nil, "invalid": the node's level from now on */
static int l_set_level(lua_State *L)
{
    int level = log_level_parse(luaL_checkstring(L, 1));
    if (level < 0) {
        lua_pushnil(L);
        lua_pushliteral(L, "invalid");
        return 2;
    }
    log_set_level(level);
    lua_pushboolean(L, 1);
    return 1;
}

int luaopen_mmo_log(lua_State *L)
{
    static const luaL_Reg FUNCS[] = {
        {"debug", l_debug}, {"info", l_info},           {"warn", l_warn}, {"error", l_error},
        {"level", l_level}, {"set_level", l_set_level}, {NULL, NULL},
    };
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "mmo.json");
    lua_call(L, 1, 1);
    lua_getfield(L, -1, "encode");
    int enc = lua_gettop(L);
    lua_createtable(L, 0, 5);
    for (const luaL_Reg *f = FUNCS; f->name; f++) {
        lua_pushvalue(L, enc);
        lua_pushcclosure(L, f->func, 1);
        lua_setfield(L, -2, f->name);
    }
    return 1;
}
