/* test_json.c -- bindings/lua_json.c: the encoder's output, byte for byte, and its refusals. */
#include "test.h"

#include "bindings.h"

#include <lauxlib.h>
#include <lualib.h>

static lua_State *vm(void)
{
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    bindings_preload_json(L);
    return L;
}

/* Run chunk (which returns a string); compare with want. */
static int run(lua_State *L, const char *chunk, const char *want)
{
    if (luaL_dostring(L, chunk) != 0) {
        fprintf(stderr, "error: %s\n", lua_tostring(L, -1));
        lua_pop(L, 1);
        return 0;
    }
    const char *got = lua_tostring(L, -1);
    int ok = got && strcmp(got, want) == 0;
    if (!ok)
        fprintf(stderr, "chunk: %s\n got: %s\nwant: %s\n", chunk, got ? got : "(nil)", want);
    lua_pop(L, 1);
    return ok;
}

static int raises(lua_State *L, const char *chunk, const char *needle)
{
    int rc = luaL_dostring(L, chunk);
    const char *msg = rc ? lua_tostring(L, -1) : NULL;
    int ok = rc != 0 && msg && strstr(msg, needle);
    if (!ok)
        fprintf(stderr, "chunk: %s\nexpected an error with \"%s\", got %s\n", chunk, needle,
                msg ? msg : "no error");
    lua_pop(L, 1);
    return ok;
}

#define J "local j = require 'mmo.json' "

TEST(scalars)
{
    lua_State *L = vm();
    ASSERT(run(L, J "return j.encode(42)", "42"));
    ASSERT(run(L, J "return j.encode(-7)", "-7"));
    ASSERT(run(L, J "return j.encode(0.1)", "0.1"));
    ASSERT(run(L, J "return j.encode(1795855020.4752)", "1795855020.4752"));
    ASSERT(run(L, J "return j.encode(2^53)", "9007199254740992"));
    ASSERT(run(L, J "return j.encode(1e300)", "1e+300"));
    /* beyond int64_t: no integer conversion (undefined behaviour; fuzz/corpus/json/crash-1e22) */
    ASSERT(run(L, J "return j.encode(1e22)", "1e+22"));
    ASSERT(run(L, J "return j.encode(-2^63)", "-9.223372036854776e+18"));
    ASSERT(run(L, J "return j.encode(2^64)", "1.8446744073709552e+19"));
    ASSERT(run(L, J "return j.encode(true) .. j.encode(false) .. j.encode(nil)", "truefalsenull"));
    ASSERT(run(L, J "return j.encode(j.null)", "null"));
    ASSERT(run(L, J "return j.encode('a\"b\\\\c\\n\\1/é')", "\"a\\\"b\\\\c\\n\\u0001/é\""));
    lua_close(L);
}

TEST(tables)
{
    lua_State *L = vm();
    ASSERT(run(L, J "return j.encode({1, 2, 'x'})", "[1,2,\"x\"]"));
    ASSERT(run(L, J "return j.encode({})", "{}"));
    ASSERT(run(L, J "return j.encode(j.array({}))", "[]"));
    ASSERT(run(L, J "return j.encode({ players = j.empty_array })", "{\"players\":[]}"));
    ASSERT(run(L, J "return j.encode({ a = { b = { 1 } } })", "{\"a\":{\"b\":[1]}}"));
    ASSERT(run(L, J "return j.encode({ [1] = 'a', [3] = 'c' })", "[\"a\",null,\"c\"]"));
    ASSERT(run(L, J "return j.encode({ [10] = 1, x = 2 }):len() > 0 and 'ok'", "ok"));
    /* what is encoded decodes back to the same value */
    ASSERT(run(L,
               J "local v = { n = 123456789012345, f = -0.5, s = 'x\\0y', l = { 1, { 2 } } }\n"
                 "local d = j.decode(j.encode(v))\n"
                 "return (d.n == v.n and d.f == v.f and d.s == v.s and d.l[2][1] == 2) and 'same'",
               "same"));
    lua_close(L);
}

TEST(refusals)
{
    lua_State *L = vm();
    ASSERT(raises(L, J "return j.encode(0/0)", "NaN"));
    ASSERT(raises(L, J "return j.encode(1/0)", "infinity"));
    ASSERT(raises(L, J "return j.encode({ f = print })", "function"));
    ASSERT(raises(L, J "return j.encode({ [100] = 1 })", "sparse"));
    ASSERT(raises(L, J "local t = {} t.t = t return j.encode(t)", "deeper"));
    ASSERT(raises(L, J "return j.encode({ [true] = 1 })", "key"));
    /* the encoder is usable after an error */
    ASSERT(run(L, J "return j.encode({ 1 })", "[1]"));
    lua_close(L);
}

TEST(repeated_numbers_and_size)
{
    lua_State *L = vm();
    /* the last non-integer written is kept: the same value again, then others, stay exact */
    ASSERT(run(
        L, J "return j.encode({ 1764370000.123456, 1764370000.123456, 0.1, 1764370000.123456 })",
        "[1764370000.123456,1764370000.123456,0.1,1764370000.123456]"));
    ASSERT(run(L, J "return j.encode({ 0.5, -0.5, 0.5, 1.5 })", "[0.5,-0.5,0.5,1.5]"));
    /* size is the encoded length, without the string; it refuses what encode refuses */
    ASSERT(run(L,
               J "local v = { a = { 1, 2.25, 'x\\ny' }, b = j.null, c = j.array({}) }\n"
                 "return j.size(v) == #j.encode(v) and j.size('') == 2 and 'same'",
               "same"));
    ASSERT(raises(L, J "return j.size({ f = print })", "function"));
    ASSERT(run(L, J "return j.encode({ 1 })", "[1]"));
    lua_close(L);
}

TEST(decode_never_raises)
{
    lua_State *L = vm();
    ASSERT(run(L,
               J "local v, e = j.decode('{bad') return v == nil and type(e) == 'string' and 'ok'",
               "ok"));
    ASSERT(run(L, J "local v = j.decode('[NaN]') return v == nil and 'ok'", "ok"));
    ASSERT(run(L, J "return j.decode('{\"a\":null}').a == j.null and 'ok'", "ok"));
    lua_close(L);
}

int main(void)
{
    RUN(scalars);
    RUN(tables);
    RUN(refusals);
    RUN(repeated_numbers_and_size);
    RUN(decode_never_raises);
    return test_summary();
}
