-- The pattern functions of a mod's sandbox (core/mods_sandbox.lua) against LuaJIT's own:
-- with pattern_limit = -1 every call takes the matcher written in Lua, which must give the
-- same results as the C one on fixed cases and on thousands of generated ones.
local unpack = unpack


local function sandbox(limit)
    local chunk = assert(loadfile("core/mods_sandbox.lua"))
    local host = {
        events = {},
        game = {},
        charged = 0,
        fault = function() return nil end,
        plainfind = function(s, p, init) return string.find(s, p, init, true) end,
        pattern_limit = limit,
    }
    host.charge = function(n) host.charged = host.charged + n end
    return chunk(host), host
end


local function pack(...)
    return { n = select("#", ...), ... }
end


-- results of f(...) as a table, or {err = true} when it raises
local function call(f, ...)
    local r = pack(pcall(f, ...))
    if not r[1] then
        return { err = true }
    end
    return { n = r.n - 1, unpack(r, 2, r.n) }
end


local function gmatch_all(gmatch, s, p)
    local out = {}
    for a, b, c in gmatch(s, p) do
        out[#out + 1] = { a, b, c }
        if #out > 100 then
            break
        end
    end
    return out
end


local env = sandbox(-1)
local S = env.string

local function same(fname, ...)
    local mine = call(S[fname], ...)
    local theirs = call(string[fname], ...)
    assert.same(theirs, mine, fname .. " " .. table.concat({ tostring((...)),
        tostring(select(2, ...)) }, " "))
end


describe("mods sandbox", function()
    describe("find and match in Lua", function()
        local cases = {
            { "hello world", "o w" }, { "hello world", "l+" }, { "hello world", "(l+)(o)" },
            { "hello", "^h(.-)o$" }, { "hello", "^(h)(e)" }, { "  trim me  ", "^%s*(.-)%s*$" },
            { "key = value", "(%w+)%s*=%s*(%w+)" }, { "f(a(b)c)d", "%b()" },
            { "THE (quick) fox", "%f[%a]%a+" }, { "abcabc", "(abc)%1" }, { "aaa", "a-b" },
            { "aaa", "()a()" }, { "x", "" }, { "", "" }, { "", "a*" }, { "abc", "$" },
            { "a$b", "$b" }, { "a^b", "a^b" }, { "a.b", "%." }, { "a]b", "[]]" },
            { "a-b", "[a-]+" }, { "a%b", "%%" }, { "a\0b", "%z" }, { "a\0b", "a\0b" },
            { "12 ab", "%d+%s(%a+)" }, { "x=1, y=2", "(%a)=(%d)" }, { "[[x]]", "%[(%b[])%]" },
            { "aXb", "[^%l]" }, { "abc", "[b-c]+" }, { "a+b", "a+b" }, { "aab", "a?a?b" },
            { "ab", "a?b?c?" }, { ("a"):rep(50) .. "b", "a*a*b" },
        }
        it("gives what C gives, init included", function()
            for _, c in ipairs(cases) do
                for _, init in ipairs({ 1, 2, -1, -3, 0, 100 }) do
                    same("find", c[1], c[2], init)
                    same("match", c[1], c[2], init)
                end
                same("find", c[1], c[2])
                same("find", c[1], c[2], 1, true)
            end
        end)

        it("raises where C raises on a broken pattern", function()
            for _, p in ipairs({ "%", "[a", "(a", "a%1", "%f", "%bx", "(()", "[%" }) do
                local mine = call(S.find, "aaa", p)
                assert.is_true(mine.err, p)
            end
        end)
    end)

    describe("gmatch and gsub in Lua", function()
        it("gives what C gives", function()
            local subjects = { "hello world from lua", "a,b,,c", "", "key=val; k2=v2",
                               "  x  ", "(a)(b(c))" }
            local patterns = { "%a+", "[^,]*", "(%w+)=(%w+)", "%s*", "()", "%b()", "a*",
                               "^%s*", "(%a)(%a?)" }
            for _, s in ipairs(subjects) do
                for _, p in ipairs(patterns) do
                    assert.same(gmatch_all(string.gmatch, s, p), gmatch_all(S.gmatch, s, p),
                        s .. " " .. p)
                    same("gsub", s, p, "<%0>")
                    same("gsub", s, p, "%1|")
                    same("gsub", s, p, "[%%]", 2)
                    same("gsub", s, p, { a = "A", hello = 1, key = false })
                    same("gsub", s, p, function(a, b) return b and (b .. a) or nil end)
                end
            end
        end)

        it("refuses a bad replacement like C", function()
            assert.is_true(call(S.gsub, "abc", "b", function() return {} end).err)
            assert.is_true(call(S.gsub, "abc", "(b)", "%2").err)
            assert.is_true(call(S.gsub, "abc", "b").err)
        end)
    end)

    describe("on generated patterns and subjects", function()
        local ITEMS = { "a", "b", ".", "%a", "%d", "[ab]", "[^a]", "%s", " ", "1" }
        local QUANT = { "", "", "*", "+", "-", "?" }
        local CHARS = { "a", "b", " ", "1", "(", ")" }

        local function pick(t)
            return t[math.random(#t)]
        end

        local function pattern()
            local out, caps, open = {}, 0, 0
            if math.random(4) == 1 then
                out[#out + 1] = "^"
            end
            for _ = 1, math.random(0, 5) do
                local r = math.random(10)
                if r == 1 and caps < 3 then
                    out[#out + 1] = "("
                    open, caps = open + 1, caps + 1
                elseif r == 2 and open > 0 then
                    out[#out + 1] = ")"
                    open = open - 1
                elseif r == 3 then
                    out[#out + 1] = "()"
                elseif r == 4 and caps > open then
                    out[#out + 1] = "%1"
                elseif r == 5 then
                    out[#out + 1] = "%b()"
                elseif r == 6 then
                    out[#out + 1] = "%f[%a]"
                else
                    out[#out + 1] = pick(ITEMS) .. pick(QUANT)
                end
            end
            out[#out + 1] = (")"):rep(open)
            if math.random(4) == 1 then
                out[#out + 1] = "$"
            end
            return table.concat(out)
        end

        local function subject()
            local out = {}
            for i = 1, math.random(0, 12) do
                out[i] = pick(CHARS)
            end
            return table.concat(out)
        end

        it("find, match, gmatch and gsub agree with C 3000 times", function()
            math.randomseed(20240611)
            for _ = 1, 3000 do
                local s, p = subject(), pattern()
                same("find", s, p)
                same("match", s, p, math.random(-3, 4))
                same("gsub", s, p, "<%0>")
                same("gsub", s, p, "%1")
                local ok, theirs = pcall(gmatch_all, string.gmatch, s, p)
                if ok then
                    assert.same(theirs, gmatch_all(S.gmatch, s, p), s .. " / " .. p)
                end
            end
        end)
    end)

    describe("the bound", function()
        it("lets cheap calls run in C, charged, and sends costly ones to Lua", function()
            local fast, host = sandbox(1e7)
            assert.same({ 1, 5 }, { fast.string.find("hello", "h.-o") })
            assert.is_true(host.charged > 0)
            local before = host.charged
            -- past the bound: the Lua matcher runs, nothing is charged (its instructions count)
            local s = ("a"):rep(200)
            assert.is_nil(fast.string.find(s, "a*a*b"))
            assert.equal(before, host.charged)
        end)

        it("plain finds never go through the matcher", function()
            local e, host = sandbox(-1)
            assert.same({ 3, 4 }, { e.string.find("a.b.", "b.", 1, true) })
            assert.same({ 2, 3 }, { e.string.find("xyz", "yz") })
            assert.equal(0, host.charged)
        end)
    end)

    describe("the environment", function()
        it("holds no way out", function()
            for _, name in ipairs({ "io", "os", "debug", "require", "load", "loadstring",
                                    "dofile", "loadfile", "getfenv", "setfenv", "module",
                                    "package", "collectgarbage", "newproxy", "jit", "print",
                                    "_G" }) do
                assert.is_nil(env[name], name)
            end
            assert.is_nil(env.string.dump)
            assert.is_function(env.pcall)
        end)

        it("runs xpcall's handler with the error", function()
            assert.same({ false, "got boom" },
                { env.xpcall(function() error("boom", 0) end, function(e) return "got " .. e end) })
            assert.same({ true, 1, 2 }, { env.xpcall(function(a, b) return a, b end, print, 1, 2) })
        end)

        it("inserts like LuaJIT within 1..#t+1 and refuses elsewhere", function()
            local t = { 1, 2 }
            env.table.insert(t, 3)
            env.table.insert(t, 1, 0)
            env.table.insert(t, 5, 4)
            assert.same({ 0, 1, 2, 3, 4 }, t)
            assert.has_error(function() env.table.insert(t, -2 ^ 30, 1) end,
                "bad argument #2 to 'insert' (position out of bounds)")
            assert.has_error(function() env.table.insert(t, 7, 1) end)
        end)

        it("sorts with a counted comparison", function()
            local t = { 3, 1, 2 }
            env.table.sort(t)
            assert.same({ 1, 2, 3 }, t)
            env.table.sort(t, function(a, b) return a > b end)
            assert.same({ 3, 2, 1 }, t)
        end)
    end)
end)
