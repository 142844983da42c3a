-- End-to-end: hot reload of the scripts. The node runs a copy of scripts/ in a temporary
-- directory that the spec edits; a designer reloads over HTTP (and an operator with SIGHUP);
-- a broken set is refused with its file and line while the old one keeps serving; requests
-- and WebSocket sessions in flight survive; the state store keeps what must survive and
-- migrates it when its shape changes; rollback returns to the previous set.
local server = require "helpers.server"
local ws = require "helpers.ws"
local socket = require "socket"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))

local ROUTES = [[
local routes = require "routes"
local http = {}
for i, r in ipairs(routes.http) do
    http[i] = r
end
http[#http + 1] = { "GET", "/test/reload/version", "reload_test.version", role = "public" }
http[#http + 1] = { "GET", "/test/reload/slow", "reload_test.slow", role = "public" }
http[#http + 1] = { "POST", "/test/reload/count", "reload_test.count", role = "public" }
return { http = http, ws = routes.ws, ws_close = routes.ws_close, timers = routes.timers,
         on_stop = routes.on_stop }
]]

-- the test module, in versions: CODE is what /version answers; STATE the state's shape
local function handler(code, state)
    return ([[
local state = require "mmo.state"
local time = require "mmo.time"

local _M = {}

%s

function _M.version()
    return 200, { code = %q }
end

function _M.slow()
    time.sleep(1.0)
    return 200, { code = %q }
end

return _M
]]):format(state, code, code)
end

local STATE_V1 = [[
local S = state.global("reload_test.counter", { version = 1, init = function() return { n = 0 } end })
function _M.count()
    S.n = S.n + 1
    return 200, { n = S.n }
end]]

-- version 2 keeps the count in a list of increments: migrate turns n into that list
local STATE_V2 = [[
local S = state.global("reload_test.counter", { version = 2,
    init = function() return { hits = {} } end,
    migrate = function(old_version, old)
        assert(old_version == 1)
        local hits = {}
        for i = 1, old.n do hits[i] = 1 end
        return { hits = hits }
    end })
function _M.count()
    S.hits[#S.hits + 1] = 1
    return 200, { n = #S.hits, shape = 2 }
end]]

-- version 3 without a migrate: refused
local STATE_V3 = [[
local S = state.global("reload_test.counter", { version = 3 })
function _M.count()
    return 200, { n = -1 }
end]]


describe("script reload", function()
    local node, dir, admin, designer, player

    local function put(rel, text)
        server.write(dir .. "/" .. rel, text)
    end

    local function login(username, password)
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = username, password = password } })
        assert.equal(200, res.status, res.body)
        return res.json.access_token
    end

    local function reload(token, path)
        return node:request("POST", path or "/api/admin/scripts/reload", { token = token or designer })
    end

    local function info()
        local res = node:request("GET", "/api/admin/scripts", { token = designer })
        assert.equal(200, res.status, res.body)
        return res.json
    end

    local function version_code()
        local res = node:request("GET", "/test/reload/version")
        assert.equal(200, res.status, res.body)
        return res.json.code
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set (tools/dev test does)")
        dir = server.tmpdir()
        assert(os.execute("cp -r " .. server.ROOT .. "/scripts/. " .. dir .. "/"))
        put("reload_routes.lua", ROUTES)
        put("handlers/reload_test.lua", handler("one", STATE_V1))
        node = server.start { env = { MMO_SCRIPTS = dir, MMO_ROUTES = "reload_routes",
                                      MMO_CONTROL_SOCKET = dir .. "/control.sock",
                                      MMO_SCRIPTS_LOAD_BUDGET_MS = "1000" } }
        admin = login("admin", ADMIN_PASSWORD)
        -- a designer: a new account given the role by the admin
        local name = "d" .. server.letters(8)
        local res = node:request("POST", "/api/auth/register",
                                 { body = { username = name, password = "designer-pass-1" } })
        assert.equal(201, res.status, res.body)
        res = node:request("POST", "/api/admin/accounts/" .. res.json.id .. "/roles",
                           { token = admin, body = { roles = { "player", "designer" } } })
        assert.equal(200, res.status, res.body)
        designer = login(name, "designer-pass-1")
        res = node:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 1, prefix = "r" .. server.letters(4), region = "r1" } })
        assert.equal(200, res.status, res.body)
        player = res.json.bots[1]
    end)

    teardown(function()
        if node then
            node:stop()
        end
        server.rm_rf(dir)
    end)

    it("shows the loaded set to designers and admins only", function()
        local i = info()
        assert.equal(1, i.version)
        assert.matches("^%x+$", i.hash)
        assert.equal(64, #i.hash)
        assert.equal("start", i.loaded_by)
        assert.matches("^%d%d%d%d%-%d%d%-%d%dT", i.loaded_at)
        local names = {}
        for _, m in ipairs(i.modules) do
            names[m.name] = m.file
        end
        assert.equal(dir .. "/handlers/reload_test.lua", names["handlers.reload_test"])
        assert.truthy(names["rules.movement"])
        assert.equal(200, node:request("GET", "/api/admin/scripts", { token = admin }).status)
        local res = node:request("GET", "/api/admin/scripts", { token = player.token })
        assert.equal(403, res.status, res.body)
        res = node:request("POST", "/api/admin/scripts/reload", { token = player.token })
        assert.equal(403, res.status, res.body)
        assert.equal(401, node:request("POST", "/api/admin/scripts/reload").status)
        assert.equal(1, info().version) -- none of that reloaded anything
    end)

    it("swaps in the new code; a request in flight finishes on the code it began with", function()
        assert.equal("one", version_code())
        local before = info()
        -- a slow request on version "one", in flight during the reload
        local c = node:connect(5)
        c:send(server.format_request("GET", "/test/reload/slow"))
        socket.sleep(0.2)
        put("handlers/reload_test.lua", handler("two", STATE_V1))
        local res = reload()
        assert.equal(200, res.status, res.body)
        assert.equal(before.version + 1, res.json.version)
        assert.is_not.equal(before.hash, res.json.hash)
        assert.equal("two", version_code())
        local slow = c:read_response()
        c:close()
        assert.equal(200, slow.status)
        assert.matches('"code":"one"', slow.body)
        local now = info()
        assert.equal(res.json.version, now.version)
        assert.equal(before.version, now.previous.version)
        assert.equal(before.hash, now.previous.hash)
        assert.matches("^account:%d+$", now.loaded_by)
    end)

    it("refuses a broken set with its file and line, and keeps the running one", function()
        local before = info()
        local cases = {
            { "lib/reload_broken.lua", "local x = 1\nlocal y = = 2\nreturn {}\n", 2 },
            { "lib/reload_broken.lua", "local _M = {}\n\nerror('no config for this')\nreturn _M\n", 3 },
            { "handlers/reload_test.lua", handler("three", STATE_V1) .. "\nlocal z = (\n", nil },
        }
        for _, case in ipairs(cases) do
            put(case[1], case[2])
            local res = reload()
            assert.equal(422, res.status, res.body)
            assert.equal("script_error", res.json.error.code)
            assert.equal(dir .. "/" .. case[1], res.json.error.details.file, res.body)
            if case[3] then
                assert.equal(case[3], res.json.error.details.line, res.body)
            end
            assert.matches(case[1], res.json.error.message, 1, true)
            os.remove(dir .. "/" .. case[1])
            put("handlers/reload_test.lua", handler("two", STATE_V1))
        end
        -- a route to a handler that does not exist; a module whose self_check fails
        put("reload_routes.lua", ROUTES:gsub("reload_test.slow", "reload_test.nope"))
        local res = reload()
        assert.equal(422, res.status, res.body)
        assert.matches("no function nope", res.json.error.message)
        put("reload_routes.lua", ROUTES)
        put("lib/reload_check.lua",
            "return { self_check = function() return nil, 'the loot table sums to 0.9' end }\n")
        res = reload()
        assert.equal(422, res.status, res.body)
        assert.matches("lib.reload_check: self_check failed: the loot table sums to 0.9",
                       res.json.error.message, 1, true)
        os.remove(dir .. "/lib/reload_check.lua")
        -- a module that never ends loading (even behind pcall) is stopped; the node serves on
        for _, src in ipairs({ "while true do end\n",
                               "local n = 0\nwhile true do pcall(function() while true do " ..
                               "n = n + 1 end end) end\n" }) do
            put("lib/reload_loop.lua", src)
            local t0 = socket.gettime()
            res = reload()
            assert.equal(422, res.status, res.body)
            assert.matches("took longer than 1 s", res.json.error.message, 1, true)
            assert.is_true(socket.gettime() - t0 < 3)
            assert.equal(200, node:request("GET", "/healthz").status)
        end
        os.remove(dir .. "/lib/reload_loop.lua")
        -- nothing of that was swapped in
        local now = info()
        assert.equal(before.version, now.version)
        assert.equal(before.hash, now.hash)
        assert.equal("two", version_code())
        -- and every failure is audited
        local audit = node:request("GET", "/api/admin/audit?limit=50", { token = admin })
        assert.equal(200, audit.status, audit.body)
        local failures = 0
        for _, e in ipairs(audit.json.entries) do
            if e.action == "scripts.reload" and e.data.result == "error" then
                failures = failures + 1
            end
        end
        assert.is_true(failures >= 5, audit.body)
    end)

    it("keeps WebSocket sessions and the state store across reloads, and migrates state", function()
        local conn = assert(ws.connect(node, player.token))
        conn:send({ t = "join", player_id = player.player_id })
        assert.truthy(conn:expect("welcome"))
        local n
        for _ = 1, 3 do
            local res = node:request("POST", "/test/reload/count")
            assert.equal(200, res.status, res.body)
            n = res.json.n
        end
        -- same shape: the count goes on
        put("handlers/reload_test.lua", handler("four", STATE_V1))
        assert.equal(200, reload().status)
        local res = node:request("POST", "/test/reload/count")
        assert.equal(n + 1, res.json.n)
        -- a new shape: migrate(1, state) carries the count over
        put("handlers/reload_test.lua", handler("five", STATE_V2))
        res = reload()
        assert.equal(200, res.status, res.body)
        res = node:request("POST", "/test/reload/count")
        assert.same({ n = n + 2, shape = 2 }, res.json)
        local found
        for _, e in ipairs(info().state) do
            if e.name == "reload_test.counter" then
                found = e
            end
        end
        assert.same({ name = "reload_test.counter", kind = "global", version = 2 }, found)
        -- a new shape without migrate: refused, and the state is untouched
        put("handlers/reload_test.lua", handler("six", STATE_V3))
        res = reload()
        assert.equal(422, res.status, res.body)
        assert.matches("no migrate", res.json.error.message)
        res = node:request("POST", "/test/reload/count")
        assert.same({ n = n + 3, shape = 2 }, res.json)
        put("handlers/reload_test.lua", handler("five", STATE_V2))
        -- the session lived through all of it
        conn:send({ t = "ping", id = 7 })
        assert.truthy(conn:expect("pong"))
        conn:close()
    end)

    it("rolls back to the previous set", function()
        put("handlers/reload_test.lua", handler("seven", STATE_V2))
        assert.equal(200, reload().status)
        local before = info()
        assert.equal("seven", version_code())
        local res = reload(designer, "/api/admin/scripts/rollback")
        assert.equal(200, res.status, res.body)
        assert.equal(before.version + 1, res.json.version)
        assert.equal(before.previous.hash, res.json.hash)
        assert.equal("five", version_code())
        -- rolling back again returns to "seven"
        res = reload(designer, "/api/admin/scripts/rollback")
        assert.equal(200, res.status, res.body)
        assert.equal(before.hash, res.json.hash)
        assert.equal("seven", version_code())
    end)

    it("reloads on SIGHUP; the world's timers go on where they were", function()
        local function ticks()
            local res = node:request("GET", "/api/admin/world/ticks", { token = admin })
            assert.equal(200, res.status, res.body)
            return res.json.ticks
        end
        local before = info()
        local t0 = ticks()
        assert.is_true(t0 > 0)
        put("handlers/reload_test.lua", handler("eight", STATE_V2))
        node:signal("HUP")
        assert.is_true(server.eventually(function()
            return info().version == before.version + 1
        end, 10))
        assert.equal("sighup", info().loaded_by)
        assert.equal("eight", version_code())
        -- the region tick (a timer of routes.lua) goes on under the new set, and its count
        -- (kept in mmo.state) did not start over
        assert.is_true(ticks() >= t0)
        assert.is_true(server.eventually(function() return ticks() > t0 + 5 end, 10))
        -- what the world keeps is in the store, at the version its modules declare
        local kept = {}
        for _, e in ipairs(info().state) do
            kept[e.name] = e.version
        end
        for _, name in ipairs({ "leases", "territories", "world_events", "pipeline",
                                "world.timers" }) do
            assert.equal(1, kept[name], name)
        end
        -- a broken set on SIGHUP: logged, the running one stays
        put("lib/reload_broken.lua", "return {\n")
        node:signal("HUP")
        assert.is_true(server.eventually(function()
            return node:logs():find("the scripts were not reloaded", 1, true) ~= nil
        end, 10))
        os.remove(dir .. "/lib/reload_broken.lua")
        assert.equal(before.version + 1, info().version)
        -- counted: every reload by trigger and result
        local m = node:request("GET", "/metrics").body
        assert.matches('mmo_script_reloads_total{trigger="api",result="ok"} %d', m)
        assert.matches('mmo_script_reloads_total{trigger="api",result="error"} %d', m)
        assert.matches('mmo_script_reloads_total{trigger="sighup",result="ok"} 1', m)
        assert.matches('mmo_script_reloads_total{trigger="sighup",result="error"} 1', m)
        assert.matches("mmo_script_version " .. info().version, m)
    end)

    it("reloads from the command line through the control socket", function()
        local env = { MMO_SCRIPTS = dir, MMO_ROUTES = "reload_routes",
                      MMO_CONTROL_SOCKET = dir .. "/control.sock" }
        local rc, out = server.run("scripts", env)
        assert.equal(0, rc, out)
        local v = info().version
        assert.matches('"version":' .. v, out, 1, true)
        put("handlers/reload_test.lua", handler("nine", STATE_V2))
        rc, out = server.run("reload", env)
        assert.equal(0, rc, out)
        assert.matches('{"ok":true,"version":' .. (v + 1), out, 1, true)
        assert.equal("nine", version_code())
        assert.equal("control", info().loaded_by)
        -- broken: exit 1, the file and line, the running set stays
        put("lib/reload_broken.lua", "local a = {\nlocal b\n")
        rc, out = server.run("reload", env)
        assert.equal(1, rc, out)
        assert.matches('"file":"' .. dir .. '/lib/reload_broken.lua","line":2', out, 1, true)
        assert.matches("the running scripts stay in use", out, 1, true)
        os.remove(dir .. "/lib/reload_broken.lua")
        assert.equal(v + 1, info().version)
        rc, out = server.run("rollback", env)
        assert.equal(0, rc, out)
        assert.equal("eight", version_code()) -- the set before (the SIGHUP test's)
        -- the socket is the node's alone
        local mode = io.popen("stat -c %a " .. dir .. "/control.sock"):read("*l")
        assert.equal("600", mode)
        -- no node at that path: one clear line, exit 1
        rc, out = server.run("reload", { MMO_CONTROL_SOCKET = dir .. "/nobody.sock" })
        assert.equal(1, rc, out)
        assert.matches("cannot reach the node", out, 1, true)
    end)

    it("reloads by itself when scripts.watch is on and a file is saved", function()
        local dir2 = server.tmpdir()
        assert(os.execute("cp -r " .. dir .. "/. " .. dir2 .. "/"))
        os.remove(dir2 .. "/control.sock")
        server.write(dir2 .. "/handlers/reload_test.lua", handler("w1", STATE_V2))
        local n2 = server.start { env = { MMO_SCRIPTS = dir2, MMO_ROUTES = "reload_routes",
                                          MMO_SCRIPTS_WATCH = "1", MMO_CONTROL_SOCKET = "" } }
        local function get(path)
            return n2:request("GET", path, { token = admin })
        end
        local ok, err = pcall(function()
            assert.equal("w1", get("/test/reload/version").json.code)
            server.write(dir2 .. "/handlers/reload_test.lua", handler("w2", STATE_V2))
            assert.is_true(server.eventually(function()
                return get("/test/reload/version").json.code == "w2"
            end, 10))
            local i = get("/api/admin/scripts").json
            assert.equal(2, i.version)
            assert.equal("watch", i.loaded_by)
            -- a broken save is logged and changes nothing
            server.write(dir2 .. "/handlers/reload_test.lua", "return {\n")
            assert.is_true(server.eventually(function()
                return n2:logs():find("scripts changed but were not reloaded", 1, true) ~= nil
            end, 10))
            assert.equal("w2", get("/test/reload/version").json.code)
        end)
        n2:stop()
        server.rm_rf(dir2)
        assert(ok, err)
    end)
end)
