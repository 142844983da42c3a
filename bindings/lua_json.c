/* lua_json.c -- require "mmo.json": lua-cjson with strict settings.
 *
 *   json.encode(value) -> string          raises on values JSON cannot hold (functions, NaN)
 *   json.decode(text)  -> value | nil, err never raises; NaN, Infinity and hex numbers refused
 *   json.null                             the value of a JSON null (cjson.null)
 *
 * Own cjson instances (cjson.new), so nobody's settings leak into another module's. */
#include "bindings.h"
#include "lb.h"

static const char CHUNK[] =
    "local cjson = require 'cjson'\n"
    "local safe = require 'cjson.safe'\n"
    "local enc = cjson.new()\n"
    "local dec = safe.new()\n"
    "enc.encode_invalid_numbers(false)\n"
    "enc.encode_max_depth(128)\n"
    "dec.decode_invalid_numbers(false)\n"
    "dec.decode_max_depth(128)\n"
    "return { encode = enc.encode, decode = dec.decode, null = cjson.null }\n";

int luaopen_mmo_json(lua_State *L)
{
    if (luaL_loadbuffer(L, CHUNK, sizeof CHUNK - 1, "=mmo.json") != 0)
        return lua_error(L);
    lua_call(L, 0, 1);
    return 1;
}
