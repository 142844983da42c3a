/* lua_state.c -- mmo.state: game state that outlives a script reload.
 *
 * A reload loads every module anew, so a module's locals start over. What must survive (the
 * territories of the regions this node runs, its leases, the world events in progress) lives
 * here instead, under a name, with a version:
 *
 *   local state = require "mmo.state"
 *   local S = state.global("leases", { version = 1, init = function() return { known = {} } end })
 *   local T = state.regional("territories", { version = 2, init = function(region) return {} end,
 *                                             migrate = function(old_version, data, region) ... end
 * }) T:get(region)   T:drop(region)   for region, data in T:each() do ... end
 *   state.drop_region(region)   -- every regional entry of that region (its lease was lost)
 *
 * state.global returns the same table to every set that declares the same version; a set
 * that declares another version gets migrate(old_version, copy) (a deep copy: the running set
 * keeps the original until the swap). Declarations made while a set loads are staged and
 * become the store's only when the set is swapped in (script_set.c calls the registry's
 * "mmo.state.ctl" begin/commit/abort); a failed reload leaves the store as it was. The code
 * is bindings/state.lua, built in (CMakeLists.txt embeds it). */
#include "bindings.h"

#include <lauxlib.h>

extern const unsigned char lua_state__source[];
extern const size_t lua_state__source_len;

int luaopen_mmo_state(lua_State *L)
{
    if (luaL_loadbuffer(L, (const char *) lua_state__source, lua_state__source_len,
                        "=bindings/state.lua") != 0)
        return lua_error(L);
    lua_call(L, 0, 2);
    lua_setfield(L, LUA_REGISTRYINDEX, "mmo.state.ctl");
    return 1;
}
