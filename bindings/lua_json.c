/* lua_json.c -- require "mmo.json": JSON for scripts and for every response the core sends.
 *
 *   json.encode(value)  -> string          raises on what JSON cannot hold (functions, NaN,
 *                                          userdata, sparse arrays, cycles / depth > 128)
 *   json.size(value)    -> n               #json.encode(value), without making the string
 *                                          (raises as encode does)
 *   json.decode(text)   -> value | nil, err never raises; NaN, Infinity, hex numbers refused
 *   json.null                              a JSON null (cjson.null), both ways
 *   json.array(t)       -> t               marks t as an array, so an empty one encodes as []
 *   json.empty_array                       a shared empty array ([]); do not modify it
 *
 * Decoding is lua-cjson (strict instance). Encoding is ours, because Debian's lua-cjson 2.1.0
 * cannot write an empty array (API.md's lists, "players": [], must be arrays) and formats
 * every number with printf("%.14g"), which loses digits above 1e14 and was the largest
 * user-space cost of a Lua route. Here integers up to 2^53 are written exactly without
 * printf, and other numbers in the shortest form that reads back to the same double.
 *
 * Tables: keys all positive integers -> array (holes become null; a table with more holes
 * than items and over 10 long is refused as sparse); otherwise an object (number keys
 * written as strings); empty -> {} unless marked by json.array. Strings are written as
 * they are, with ", \ and control characters escaped. */
#include "bindings.h"
#include "lb.h"
#include "mem.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 128
#define ARRAY_MT  "mmo.json.array"

/* The encoder's buffer: one per process, reused (encoding never yields and runs no Lua code,
 * so it is never re-entered). */
static struct {
    char *p;
    size_t len, cap;
} B;

static void reserve(size_t n)
{
    if (B.len + n <= B.cap)
        return;
    size_t cap = B.cap ? B.cap : 4096;
    while (cap < B.len + n)
        cap *= 2;
    B.p = xrealloc(B.p, cap);
    B.cap = cap;
}

static void put(const char *s, size_t n)
{
    reserve(n);
    memcpy(B.p + B.len, s, n);
    B.len += n;
}

static void putc1(char c)
{
    reserve(1);
    B.p[B.len++] = c;
}

static void put_string(const char *s, size_t n)
{
    static const char HEX[] = "0123456789abcdef";
    reserve(n + 2);
    putc1('"');
    size_t run = 0; /* bytes copied as they are, flushed in one memcpy */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char) s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        put(s + run, i - run);
        run = i + 1;
        switch (c) {
        case '"': put("\\\"", 2); break;
        case '\\': put("\\\\", 2); break;
        case '\n': put("\\n", 2); break;
        case '\r': put("\\r", 2); break;
        case '\t': put("\\t", 2); break;
        case '\b': put("\\b", 2); break;
        case '\f': put("\\f", 2); break;
        default: {
            char u[6] = {'\\', 'u', '0', '0', HEX[c >> 4], HEX[c & 15]};
            put(u, 6);
        }
        }
    }
    put(s + run, n - run);
    putc1('"');
}

static int put_number(double d)
{
    if (!isfinite(d))
        return -1;
    char buf[32];
    /* the range first: converting a double outside int64_t's range is undefined (1e22, found
     * by fuzz/fuzz_json.c) */
    if (fabs(d) <= 9007199254740992.0 && d == (double) (int64_t) d) {
        int64_t v = (int64_t) d;
        uint64_t u = v < 0 ? (uint64_t) -v : (uint64_t) v;
        int n = 0;
        char tmp[24];
        do {
            tmp[n++] = (char) ('0' + u % 10);
            u /= 10;
        } while (u);
        int o = 0;
        if (v < 0)
            buf[o++] = '-';
        while (n)
            buf[o++] = tmp[--n];
        put(buf, (size_t) o);
        return 0;
    }
    /* the last such number written, kept: a batch's documents often share one (a server
     * timestamp with a fraction), and printf and strtod cost far more than the rest */
    static double last;
    static char last_text[32];
    static size_t last_len;
    if (last_len > 0 && d == last) {
        put(last_text, last_len);
        return 0;
    }
    /* the shortest of %.15g, %.16g, %.17g that reads back to d */
    for (int prec = 15; prec <= 17; prec++) {
        int n = snprintf(buf, sizeof buf, "%.*g", prec, d);
        if (prec == 17 || strtod(buf, NULL) == d) {
            put(buf, (size_t) n);
            last = d;
            memcpy(last_text, buf, (size_t) n);
            last_len = (size_t) n;
            return 0;
        }
    }
    return 0;
}

static int is_array_marked(lua_State *L, int idx)
{
    if (!lua_getmetatable(L, idx))
        return 0;
    luaL_getmetatable(L, ARRAY_MT);
    int yes = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return yes;
}

static void encode(lua_State *L, int idx, int depth);

/* [.., t] at idx: > 0 array length; 0 empty; -1 object */
static long array_length(lua_State *L, int idx)
{
    double max = 0;
    long count = 0;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TNUMBER) {
            lua_pop(L, 1);
            return -1;
        }
        double k = lua_tonumber(L, -1);
        if (k < 1 || k != floor(k) || k > 1e9) {
            lua_pop(L, 1);
            return -1;
        }
        if (k > max)
            max = k;
        count++;
    }
    if (max > 10 && max > 2.0 * (double) count)
        luaL_error(L, "json: cannot encode a sparse array (%d items, length %d)", (int) count,
                   (int) max);
    return (long) max;
}

static void encode_table(lua_State *L, int idx, int depth)
{
    if (depth > MAX_DEPTH)
        luaL_error(L, "json: nested deeper than %d (a cycle?)", MAX_DEPTH);
    luaL_checkstack(L, 4, "json: too deep");
    long n = array_length(L, idx);
    if (n > 0 || (n == 0 && is_array_marked(L, idx))) {
        putc1('[');
        for (long i = 1; i <= n; i++) {
            if (i > 1)
                putc1(',');
            lua_rawgeti(L, idx, (int) i);
            encode(L, lua_gettop(L), depth + 1);
            lua_pop(L, 1);
        }
        putc1(']');
        return;
    }
    putc1('{');
    int first = 1;
    lua_pushnil(L);
    while (lua_next(L, idx)) {
        if (!first)
            putc1(',');
        first = 0;
        int kt = lua_type(L, -2);
        if (kt == LUA_TSTRING) {
            size_t kn;
            const char *k = lua_tolstring(L, -2, &kn);
            put_string(k, kn);
        } else if (kt == LUA_TNUMBER) {
            char kb[40];
            double d = lua_tonumber(L, -2);
            int kn = d == floor(d) && fabs(d) < 1e15
                         ? snprintf(kb, sizeof kb, "%lld", (long long) d)
                         : snprintf(kb, sizeof kb, "%.17g", d);
            put_string(kb, (size_t) kn);
        } else {
            luaL_error(L, "json: cannot encode a table key of type %s", luaL_typename(L, -2));
        }
        putc1(':');
        encode(L, lua_gettop(L), depth + 1);
        lua_pop(L, 1);
    }
    putc1('}');
}

static void encode(lua_State *L, int idx, int depth)
{
    switch (lua_type(L, idx)) {
    case LUA_TSTRING: {
        size_t n;
        const char *s = lua_tolstring(L, idx, &n);
        put_string(s, n);
        return;
    }
    case LUA_TNUMBER:
        if (put_number(lua_tonumber(L, idx)) < 0)
            luaL_error(L, "json: cannot encode NaN or infinity");
        return;
    case LUA_TBOOLEAN:
        if (lua_toboolean(L, idx))
            put("true", 4);
        else
            put("false", 5);
        return;
    case LUA_TNIL: put("null", 4); return;
    case LUA_TLIGHTUSERDATA:
        if (lua_touserdata(L, idx) == NULL) { /* cjson.null, cache.null */
            put("null", 4);
            return;
        }
        break;
    case LUA_TTABLE: encode_table(L, idx, depth); return;
    default: break;
    }
    luaL_error(L, "json: cannot encode a value of type %s", luaL_typename(L, idx));
}

/* one huge document does not pin its buffer forever */
static void shrink(void)
{
    if (B.cap > (1u << 20)) {
        free(B.p);
        B.p = NULL;
        B.cap = 0;
    }
}

static int l_encode(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    B.len = 0;
    encode(L, 1, 0);
    lua_pushlstring(L, B.p ? B.p : "", B.len);
    shrink();
    return 1;
}

static int l_size(lua_State *L)
{
    luaL_checkany(L, 1);
    lua_settop(L, 1);
    B.len = 0;
    encode(L, 1, 0);
    lua_pushnumber(L, (lua_Number) B.len);
    shrink();
    return 1;
}

static int l_array(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_getmetatable(L, ARRAY_MT);
    lua_setmetatable(L, 1);
    return 1;
}

static const char DECODER[] = "local safe = require 'cjson.safe'\n"
                              "local dec = safe.new()\n"
                              "dec.decode_invalid_numbers(false)\n"
                              "dec.decode_max_depth(128)\n"
                              "return dec.decode, require('cjson').null\n";

int luaopen_mmo_json(lua_State *L)
{
    luaL_newmetatable(L, ARRAY_MT);
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
    lua_pop(L, 1);
    lua_createtable(L, 0, 6);
    lua_pushcfunction(L, l_encode);
    lua_setfield(L, -2, "encode");
    lua_pushcfunction(L, l_size);
    lua_setfield(L, -2, "size");
    lua_pushcfunction(L, l_array);
    lua_setfield(L, -2, "array");
    lua_newtable(L);
    luaL_getmetatable(L, ARRAY_MT);
    lua_setmetatable(L, -2);
    lua_setfield(L, -2, "empty_array");
    luaL_getmetatable(L, ARRAY_MT);
    lua_setfield(L, -2, "array_mt");
    if (luaL_loadbuffer(L, DECODER, sizeof DECODER - 1, "=mmo.json") != 0)
        return lua_error(L);
    lua_call(L, 0, 2);
    lua_setfield(L, -3, "null");
    lua_setfield(L, -2, "decode");
    return 1;
}
