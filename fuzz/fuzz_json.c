/* fuzz_json.c -- bindings/lua_json.c: json.decode on untrusted text (request bodies and
 * WebSocket messages reach it the same way), in one lua_State made once, as core/script.c
 * preloads it (cjson, cjson.safe, mmo.json).
 *
 * When decode succeeds and encode accepts the value, decode(encode(v)) must give a value
 * equal to v (tables compared deeply; an empty array and an empty object are both {}).
 * decode must never raise; encode may refuse (NaN, inf, depth) with a Lua error. */
#include "bindings.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

static const char CHECK[] =
    "local json = require 'mmo.json'\n"
    "local function eq(a, b)\n"
    "    if type(a) ~= 'table' or type(b) ~= 'table' then\n"
    "        return a == b\n"
    "    end\n"
    "    for k, v in pairs(a) do\n"
    "        if not eq(v, b[k]) then return false end\n"
    "    end\n"
    "    for k in pairs(b) do\n"
    "        if a[k] == nil then return false end\n"
    "    end\n"
    "    return true\n"
    "end\n"
    "return function(s)\n"
    "    local v = json.decode(s)\n"
    "    if v == nil then return true end\n"
    "    local ok, e = pcall(json.encode, v)\n"
    "    if not ok then return true end\n"
    "    local w, err = json.decode(e)\n"
    "    if w == nil then return false, 're-decode: ' .. err .. ': ' .. e end\n"
    "    if not eq(v, w) then return false, 'not equal: ' .. e end\n"
    "    return true\n"
    "end\n";

static lua_State *L;
static unsigned runs;

/* LuaJIT's memory is not malloc's, so LeakSanitizer cannot see what the state still holds:
 * close it at exit, before the leak check. */
static void teardown(void)
{
    lua_close(L);
}

static void setup(void)
{
    L = luaL_newstate();
    luaL_openlibs(L);
    bindings_preload_json(L);
    if (luaL_loadbuffer(L, CHECK, sizeof CHECK - 1, "=fuzz_json") != 0 ||
        lua_pcall(L, 0, 1, 0) != 0) {
        fprintf(stderr, "fuzz_json: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_setfield(L, LUA_REGISTRYINDEX, "fuzz_json.check");
    atexit(teardown);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (L == NULL)
        setup();
    lua_getfield(L, LUA_REGISTRYINDEX, "fuzz_json.check");
    lua_pushlstring(L, (const char *) data, size);
    if (lua_pcall(L, 1, 2, 0) != 0) {
        fprintf(stderr, "fuzz_json: decode raised: %s\n", lua_tostring(L, -1));
        abort();
    }
    if (!lua_toboolean(L, -2)) {
        fprintf(stderr, "fuzz_json: round trip: %s\n", lua_tostring(L, -1));
        abort();
    }
    lua_settop(L, 0);
    if (++runs % 1024 == 0)
        lua_gc(L, LUA_GCCOLLECT, 0);
    return 0;
}
