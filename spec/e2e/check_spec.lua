-- End-to-end: `mmo check` on scripts trees of its own (no PostgreSQL or Redis needed): compile
-- errors, a route table that does not load, the module-state lint, luacheck, --strict.
local server = require "helpers.server"


local function sh_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


-- An absolute path (the helpers' ROOT and BIN may be relative to the checkout).
local function absolute(path)
    if path:sub(1, 1) == "/" then
        return path
    end
    local p = io.popen("cd " .. sh_quote(server.ROOT) .. " && pwd")
    local root = p:read("*l")
    p:close()
    if server.ROOT ~= "." and path:sub(1, #server.ROOT) == server.ROOT then
        path = path:sub(#server.ROOT + 2)
    end
    return root .. "/" .. path:gsub("^%./", "")
end


-- A tree that passes: a route table and its handler.
local function write_clean(dir)
    server.write(dir .. "/routes.lua", [[
return {
    http = {
        { "GET", "/api/hello", "hello.get", role = "public" },
    },
}
]])
    server.write(dir .. "/handlers/hello.lua", [[
local _M = {}

local GREETING = "hello"


function _M.get()
    return 200, { greeting = GREETING }
end


return _M
]])
end


describe("mmo check", function()
    local dir, config

    -- run `mmo check ARGS` on dir alone, from dir (so nothing of the checkout is at hand but
    -- its config.lua); extra: environment
    local function check(args, extra)
        local env = { MMO_SCRIPTS = dir, MMO_ROUTES = "routes" }
        for k, v in pairs(extra or {}) do
            env[k] = v
        end
        local parts = {}
        for k, v in pairs(env) do
            parts[#parts + 1] = k .. "=" .. sh_quote(v)
        end
        local out = os.tmpname()
        os.execute("cd " .. sh_quote(dir) .. " && env " .. table.concat(parts, " ") .. " " ..
                   sh_quote(absolute(server.BIN)) .. " check --config " .. sh_quote(config) ..
                   " " .. (args or "") .. " >" .. out .. " 2>&1; echo $? >>" .. out)
        local f = assert(io.open(out))
        local text = f:read("*a")
        f:close()
        os.remove(out)
        local rc = tonumber(text:match("(%d+)%s*$"))
        return rc, (text:gsub("%d+%s*$", ""))
    end

    before_each(function()
        dir = server.tmpdir()
        config = absolute(server.ROOT .. "/config.lua")
        write_clean(dir)
    end)

    after_each(function()
        server.rm_rf(dir)
    end)

    it("passes a clean tree, --strict too", function()
        local rc, out = check()
        assert.equal(0, rc, out)
        assert.truthy(out:find("0 errors, 0 warnings", 1, true), out)
        rc, out = check("--strict")
        assert.equal(0, rc, out)
    end)

    it("fails on a syntax error, with file:line, and says it once", function()
        server.write(dir .. "/handlers/broken.lua", "local _M = {}\n\nlocal x = = 1\nreturn _M\n")
        local rc, out = check()
        assert.equal(1, rc, out)
        local where, n, at = dir .. "/handlers/broken.lua:3:", 0, 1
        while out:find(where, at, true) do -- (plain: a temporary path may hold pattern characters)
            n, at = n + 1, out:find(where, at, true) + 1
        end
        assert.equal(1, n, out) -- LuaJIT's message, not luacheck's as well
        assert.truthy(out:find("1 error, 0 warnings", 1, true), out)
    end)

    it("fails when the route table names a function that does not exist", function()
        server.write(dir .. "/routes.lua", [[
return { http = { { "GET", "/api/hello", "hello.missing", role = "public" } } }
]])
        local rc, out = check()
        assert.equal(1, rc, out)
        assert.truthy(out:find("handlers.hello has no function missing", 1, true), out)
        assert.truthy(out:find("1 error,", 1, true), out)
    end)

    it("warns about module-level state with file:line:col; --strict fails on it", function()
        server.write(dir .. "/lib/counter.lua", [[
local _M = {}

local seen = {}


function _M.see(k)
    seen[k] = true
    return seen
end


return _M
]])
        local rc, out = check()
        assert.equal(0, rc, out)
        assert.truthy(out:find(dir .. "/lib/counter.lua:7:5: warning: module-level 'seen' is " ..
                               "changed inside a function: a reload resets it; keep it in " ..
                               "mmo.state (docs/scripting.md)", 1, true), out)
        assert.truthy(out:find("0 errors, 1 warning\n", 1, true), out)
        rc, out = check("--strict")
        assert.equal(1, rc, out)
    end)

    it("honours the opt-out comment, and leaves mods/ alone", function()
        server.write(dir .. "/lib/memo.lua", [[
local _M = {}

local cache = {}


function _M.get(k)
    cache[k] = cache[k] or { k } -- lint: allow-module-state (rebuilt on demand)
    return cache[k]
end


return _M
]])
        server.write(dir .. "/mods/bounty/init.lua", [[
local paid = 0

return function(n)
    paid = paid + n
    return paid
end
]])
        local rc, out = check("--strict")
        assert.equal(0, rc, out)
        assert.truthy(out:find("0 errors, 0 warnings", 1, true), out)
    end)

    it("reports luacheck's findings, and goes on without it", function()
        server.write(dir .. "/lib/sloppy.lua", "local unused = 1\nreturn {}\n")
        local rc, out = check()
        local has_luacheck = os.execute("command -v luacheck >/dev/null") == 0
        assert.equal(0, rc, out)
        if has_luacheck then
            assert.truthy(out:find(dir .. "/lib/sloppy.lua:1:7: (W211) unused variable 'unused'",
                                   1, true), out)
            assert.truthy(out:find("0 errors, 1 warning\n", 1, true), out)
            rc = check("--strict")
            assert.equal(1, rc)
        end
        rc, out = check("", { PATH = "/nonexistent" })
        assert.equal(0, rc, out)
        assert.truthy(out:find("luacheck not found on PATH: skipped", 1, true), out)
        assert.truthy(out:find("0 errors, 0 warnings", 1, true), out)
    end)

    it("refuses an unknown option", function()
        local rc, out = check("--bogus")
        assert.equal(2, rc, out)
        assert.truthy(out:find("unknown option --bogus", 1, true), out)
    end)
end)
