-- core/lint.lua, the module-state lint of `mmo check`: what a reload would silently reset.
local lint = dofile("core/lint.lua")

-- Debian's LuaJIT (2.1-20230119) sometimes crashes (SIGSEGV) in a compiled trace of the lint;
-- `mmo check` runs it interpreted (core/check.c), and so does this spec.
if jit then
    jit.off()
end


-- "line:col code 'name'" for each warning of src, in order
local function found(src)
    local list, err = lint.check(src, "t.lua")
    assert(list, err)
    local out = {}
    for _, w in ipairs(list) do
        out[#out + 1] = ("%d:%d %s %s"):format(w.line, w.col, w.code, w.message:match("'[^']*'"))
    end
    return out
end


describe("lint", function()
    describe("warns when a function", function()
        it("assigns to a main-chunk local", function()
            assert.same({ "3:5 module-assign 'count'" }, found([[
local count = 0
local function bump()
    count = count + 1
end
return { bump = bump }
]]))
        end)

        it("changes a table a main-chunk local holds, by key, field or path", function()
            assert.same({ "4:5 module-mutate 'cache'", "5:5 module-mutate 'cache'",
                          "6:5 module-mutate 'cache'", "7:5 module-mutate 'cache'" }, found([[
local cache = {}
local _M = {}
function _M.put(k, v)
    cache[k] = v
    cache.last = v
    cache.by.key[k] = v
    cache[k].seen = true
end
return _M
]]))
        end)

        it("assigns to a field of the module table", function()
            assert.same({ "3:5 module-mutate '_M'" }, found([[
local _M = {}
function _M.count()
    _M.calls = _M.calls + 1
end
return _M
]]))
        end)

        it("calls table.insert, remove, sort or rawset on such a table", function()
            assert.same({ "3:18 module-mutate 'list'", "4:18 module-mutate 'list'",
                          "5:16 module-mutate 'list'", "6:12 module-mutate 'list'",
                          "7:18 module-mutate 'list'" }, found([[
local list = { by = {} }
return function(v)
    table.insert(list, v)
    table.remove(list, 1)
    table.sort(list)
    rawset(list, "k", v)
    table.insert(list.by, v)
end
]]))
        end)

        it("changes it through a local alias of those functions", function()
            assert.same({ "5:12 module-mutate 'q'", "6:11 module-mutate 'q'" }, found([[
local insert = table.insert
local clear = require "table.clear"
local q = {}
return function(v)
    insert(q, v)
    clear(q)
end
]]))
        end)

        it("is nested in another one, or is a method", function()
            assert.same({ "5:9 module-assign 'n'", "9:5 module-mutate 'seen'" }, found([[
local n, seen = 0, {}
local M = {}
function M.outer()
    return function()
        n = n + 1
    end
end
function M:see(k)
    seen[k] = self
end
return M
]]))
        end)

        it("is stored in a table or passed as a value", function()
            assert.same({ "3:33 module-assign 'hits'", "4:15 module-assign 'hits'" }, found([[
local hits = 0
local M = {}
M.handlers = { hit = function() hits = hits + 1 end }
on(function() hits = 0 end)
return M
]]))
        end)

        it("defines a function into a main-chunk table", function()
            assert.same({ "4:14 module-mutate 'M'" }, found([[
local M = {}
function M.init()
    -- a function that installs another one at run time
    function M.late() end
end
return M
]]))
        end)

        it("is a local function that escapes: returned, stored or called by one that runs later",
            function()
                assert.same({ "3:20 module-mutate 't'", "4:20 module-mutate 't'" }, found([[
local t = {}
local M = {}
local function a() t.a = 1 end
local function b() t.b = 1 end
local function c() b() end
M.a = a
M.c = c
return M
]]))
            end)
    end)

    describe("does not warn about", function()
        it("tables of the state store (mmo.state) and tables inside them", function()
            assert.same({ "15:5 module-mutate 'plain'" }, found([[
local state = require "mmo.state"
local S = state.global("x", { version = 1 })
local T = state.regional("y")
local U = require("mmo.state").global("z")
local list = S.list
local plain = {}
local _M = {}
function _M.f(k)
    S.n = (S.n or 0) + 1
    S.by[k] = true
    list[#list + 1] = k
    table.insert(list, k)
    T:get(k).seen = true
    U.last = k
    plain[k] = true
end
return _M
]]))
        end)

        it("a table from another module's global() (only mmo.state's count)", function()
            assert.same({ "4:5 module-mutate 'S'" }, found([[
local other = require "lib.other"
local S = other.global("x")
local function f(k)
    S[k] = true
end
return { f = f }
]]))
        end)

        it("the main chunk's own code, at any block depth", function()
            assert.same({}, found([[
local count, cache, list = 0, {}, {}
count = count + 1
cache.x = 1
if count > 0 then
    for i = 1, 3 do
        cache[i] = i
        table.insert(list, i)
    end
end
do cache = {} end
return cache
]]))
        end)

        it("functions defined into the module table by the main chunk", function()
            assert.same({}, found([[
local _M = {}
function _M.f() end
function _M:g() end
_M.h = function() end
_M.VERSION = 1
return _M
]]))
        end)

        it("a function's own locals, parameters and loop variables", function()
            assert.same({}, found([[
return function(a, ...)
    local t = {}
    t.x = a
    a = 2
    for i, v in ipairs(t) do
        i, v = v, i
    end
    for k = 1, 2 do k = k + 1 end
    local function f() end
    f = nil
    table.insert(t, 1)
end
]]))
        end)

        it("upvalues of an enclosing function (not the main chunk)", function()
            assert.same({}, found([[
return function()
    local n, seen = 0, {}
    return function(k)
        n = n + 1
        seen[k] = true
        table.insert(seen, k)
    end
end
]]))
        end)

        it("reading main-chunk locals", function()
            assert.same({}, found([[
local LIMITS, n = { max = 3 }, 0
return function(x)
    local y = LIMITS.max + n + #LIMITS
    print(LIMITS[x], LIMITS.by.key, y)
    local copy = LIMITS
    return copy
end
]]))
        end)

        it("a local of a function that shadows a main-chunk one", function()
            assert.same({}, found([[
local cache, count = {}, 0
local M = {}
function M.f(cache)
    cache.x = 1
end
function M.g()
    local count = 0
    count = count + 1
    do
        local cache = {}
        cache[1] = count
    end
    for _, cache in pairs({}) do cache.y = 1 end
    repeat local count = 1; count = 2 until count == 2
end
function M.h() local function cache() end cache = nil end
return M
]]))
        end)

        it("a shadowing that ends with its block", function()
            assert.same({ "6:5 module-assign 'n'" }, found([[
local n = 0
return function()
    do
        local n = 1; n = 2
    end
    n = 3
end
]]))
        end)

        it("a table reached through a call, or a method call on it", function()
            assert.same({}, found([[
local store = {}
return function(k)
    store.get(k).x = 1
    store:set(k, 1)
    table.insert(store.list(), k)
end
]]))
        end)

        it("work done at load time: local functions the main chunk only calls, and functions "
            .. "called where they are written", function()
            assert.same({}, found([[
local BY_NAME, ORDER = {}, {}
local function add(item)
    BY_NAME[item.name] = item
    table.insert(ORDER, item.name)
end
local function build(list)
    for _, item in ipairs(list) do add(item) end
end
build({ { name = "a" } })
local INDEX = (function()
    local t = {}
    BY_NAME.indexed = true
    return t
end)()
local fill = function() ORDER.n = #ORDER end
fill()
return { BY_NAME = BY_NAME, INDEX = INDEX }
]]))
        end)

        it("globals and table.insert into a fresh table", function()
            assert.same({}, found([[
return function(v)
    local t = {}
    table.insert(t, v)
    rawset(t, 1, v)
    x = 1
end
]]))
        end)
    end)

    describe("reads Lua as LuaJIT does", function()
        it("is not misled by code in strings and comments", function()
            assert.same({ "15:5 module-assign 'n'" }, found([===[
local n = 0
return function()
    local s = "n = 1 -- ' \" \\"
    local t = 'cache[k] = v \' " function() end'
    local u = [[
        n = 2 end end
    ]]
    local w = [=[ ]] n = 3 ]=]
    -- n = 4
    --[[ n = 5
         end ]]
    --[==[ ]] n = 6 ]==]
    local z = "a\
n = 7"
    n = 8
end
]===]))
        end)

        it("reports lines right after multi-line strings and comments", function()
            local list = assert(lint.check("local n = 0\n--[[\n\n]] local s = [[\na\nb]]\n" ..
                                           "local f = function() n = 1 end\nreturn f\n", "t.lua"))
            assert.equal(1, #list)
            assert.equal(7, list[1].line)
            assert.equal(22, list[1].col)
        end)

        it("reads LuaJIT numerals and escapes", function()
            assert.same({ "8:5 module-assign 'n'" }, found([[
local n = 0
return function()
    local a = 0x7fffffffffffffffULL + 1LL + 2ull + 12i + 0x1p-4 + 1e+10 + .5 + 3.
    local b = "\x41\z
               \65\n"
    goto done
    ::done::
    n = a .. b
end
]]))
        end)

        it("skips a first line for the shell", function()
            assert.same({ "3:19 module-assign 'n'" },
                        found("#!/usr/bin/env luajit\nlocal n = 0\nreturn function() n = 1 end\n"))
        end)

        it("answers nil and file:line for source that does not parse", function()
            local list, err = lint.check("local x = 1\nlocal s = 'open\n", "bad.lua")
            assert.is_nil(list)
            assert.equal("bad.lua:2: unfinished string", err)
            list, err = lint.check("return function()\n  x = = 1\nend\n", "bad.lua")
            assert.is_nil(list)
            assert.truthy(err:find("^bad.lua:2: "), err)
            list, err = lint.check("local s = [==[ never closed ]]\n", "bad.lua")
            assert.is_nil(list)
            assert.truthy(err:find("^bad.lua:1: "), err)
            list, err = lint.check("if x then\n", "bad.lua")
            assert.is_nil(list)
            assert.truthy(err:find("^bad.lua:2: 'end' expected"), err)
        end)
    end)

    describe("the opt-out comment", function()
        it("exempts its own line only", function()
            assert.same({ "4:5 module-mutate 'cache'" }, found([[
local cache = {}
return function(k, v)
    cache[k] = v -- lint: allow-module-state (rebuilt on demand)
    cache.n = 1
end
]]))
        end)
    end)

    it("says what and why", function()
        local list = assert(lint.check("local cache = {}\nreturn function(k) cache[k] = 1 end\n",
                                       "x.lua"))
        assert.same({ {
            line = 2, col = 20, code = "module-mutate",
            message = "module-level 'cache' is changed inside a function: a reload resets it; "
                .. "keep it in mmo.state (docs/scripting.md)",
        } }, list)
    end)
end)
