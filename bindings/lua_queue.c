/* lua_queue.c -- require "mmo.queue": jobs for Lua, on the game event stream.
 *
 *   queue.push(name, payload [, {delay = s, attempts = n, key = k}]) -> entry | false, "duplicate"
 *                                                                      | nil, err
 *
 * The module is written in Lua, over mmo.cache: scripts/lib/queue.lua (the stream, the delayed
 * set and the idempotency keys are Redis's; the consumer is lib/pipeline.lua's). This preload
 * only gives it its mmo.* name, so that scripts see one kind of binding. */
#include "bindings.h"

int luaopen_mmo_queue(lua_State *L)
{
    lua_getfield(L, LUA_GLOBALSINDEX, "require");
    lua_pushliteral(L, "lib.queue");
    lua_call(L, 1, 1);
    return 1;
}
