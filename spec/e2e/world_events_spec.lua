-- End-to-end: world events. An admin starts one over HTTP; the region's players get it as
-- world_event; it is listed; it survives a restart of the node and ends on its own.
local json = require "cjson.safe"
local server = require "helpers.server"
local letters = server.letters
local ws = require "helpers.ws"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


describe("world events", function()
    local node, admin

    local function login_admin()
        return server.admin_token(node)
    end

    local function bots(n, region)
        local res = node:request("POST", "/api/admin/bots", { token = admin,
            body = { count = n, prefix = "e" .. letters(4), region = region, spread = 50 } })
        assert.equal(200, res.status, res.body)
        return res.json.bots
    end

    local function start_event(body, token)
        return node:request("POST", "/api/admin/world/events", { token = token or admin, body = body })
    end

    local function listed(token, id)
        local res = node:request("GET", "/api/world/events", { token = token })
        assert.equal(200, res.status, res.body)
        for _, ev in ipairs(res.json.events) do
            if ev.id == id then
                return ev
            end
        end
    end

    local function is_error(res, status, code)
        assert.equal(status, res.status, res.body)
        assert.equal(code, res.json.error.code, res.body)
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set (tools/dev test does)")
        node = server.start()
        admin = login_admin()
    end)

    teardown(function()
        node:stop()
    end)

    it("refuses players, unknown kinds, bad regions and bad params, and makes nothing", function()
        local b = bots(1, "r3")[1]
        is_error(start_event({ type = "invasion", region = "r3" }, b.token), 403, "forbidden")
        for _, body in ipairs({
            { type = "dragons", region = "r3" },
            { type = "../handlers/admin", region = "r3" },
            { type = "invasion", region = "r9" },
            { type = "invasion" },
            { type = "invasion", region = "r3", params = { hp = 5 } },
            { type = "invasion", region = "r3", params = { 1, 2 } },
            { type = "invasion", region = "r3", params = "big" },
            { type = "invasion", region = "r3", params = { duration_s = -5 } },
            { type = "double_xp", region = "r3", params = { multiplier = 1e9 } },
            { type = "invasion", region = "r3", starts_at = 12 },
            { type = "invasion", region = "r3", starts_at = os.time() + 90 * 86400 },
        }) do
            is_error(start_event(body), 422, "validation_failed")
        end
        local res = node:request("GET", "/api/world/events?limit=500", { token = b.token })
        for _, ev in ipairs(res.json.events) do
            assert.is_not.equal("dragons", ev.type)
        end
        is_error(node:request("GET", "/api/world/events?limit=0", { token = b.token }), 422,
                 "validation_failed")
    end)

    it("reaches the region's players, is listed, and survives a restart of the node", function()
        local b = bots(1, "r4")[1]
        local c = assert(ws.connect(node, b.token))
        c:send({ t = "join", player_id = b.player_id })
        assert.is_table(c:expect("welcome", 3))
        local res = start_event({ type = "invasion", region = "r4",
                                  params = { hp = 4321, duration_s = 600 } })
        assert.equal(201, res.status, res.body)
        local id = res.json.id
        assert.equal("scheduled", res.json.state)
        -- the owner starts it at its next tick (once it owns r4: within a lease's time)
        local msg
        local deadline = os.time() + 15
        while os.time() < deadline and not msg do
            local m = c:expect("world_event", 1)
            if m and m.event.id == id then
                msg = m
            end
        end
        assert.is_table(msg, "the region's player was not told")
        assert.equal("active", msg.event.state)
        assert.equal("invasion", msg.event.type)
        assert.equal(4321, msg.event.data.hp)
        assert.truthy(server.eventually(function()
            local ev = listed(b.token, id)
            return ev and ev.state == "active" and ev.data.hp == 4321
        end, 5))
        c:close()

        -- restart: the event is still active, where it was, and not started again
        assert.equal(0, node:stop())
        node = server.start()
        admin = login_admin()
        local ev = listed(b.token, id)
        assert.equal("active", ev.state)
        assert.equal(4321, ev.data.max_hp)
        local c2 = assert(ws.connect(node, b.token))
        c2:send({ t = "join", player_id = b.player_id })
        assert.is_table(c2:expect("welcome", 3))
        for _, m in ipairs(c2:drain(1.5)) do
            assert.is_false(m.t == "world_event" and m.event.id == id and
                            m.event.state == "active", "the event was started again")
        end
        c2:close()
    end)

    it("ends by itself at its time and says so", function()
        local b = bots(1, "r1")[1]
        local c = assert(ws.connect(node, b.token))
        c:send({ t = "join", player_id = b.player_id })
        assert.is_table(c:expect("welcome", 3))
        local res = start_event({ type = "double_xp", region = "r1",
                                  params = { multiplier = 3, duration_s = 2 } })
        assert.equal(201, res.status, res.body)
        local id, states = res.json.id, {}
        local deadline = os.time() + 15
        while os.time() < deadline and states[#states] ~= "ended" do
            local m = c:expect("world_event", 1)
            if m and m.event.id == id then
                states[#states + 1] = m.event.state
            end
        end
        assert.same({ "active", "ended" }, states)
        -- the players are told at once; the row is written in a task of its own right after
        local ev
        assert.truthy(server.eventually(function()
            ev = listed(b.token, id)
            return ev and ev.state == "ended"
        end, 5), "the ended event was not written")
        assert.equal("time", ev.end_reason)
        assert.equal(json.null, ev.result)
        c:close()
    end)

    it("starts when a rule sees its condition (a crowd draws an invasion)", function()
        -- the real rules/world_triggers.lua, with a crowd of one checked every second
        local dir = server.tmpdir()
        local f = assert(io.open(server.ROOT .. "/scripts/rules/world_triggers.lua"))
        local rule = f:read("*a")
        f:close()
        local n1, n2
        rule, n1 = rule:gsub("_M%.CROWD = %d+", "_M.CROWD = 1")
        rule, n2 = rule:gsub("_M%.CHECK_EVERY = %d+", "_M.CHECK_EVERY = 1")
        assert.equal(2, n1 + n2)
        server.write(dir .. "/rules/world_triggers.lua", rule)
        node:stop()
        node = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                        server.ROOT .. "/scripts" }
        admin = login_admin()
        -- r3 may have had one within the cooldown (an earlier run): clear r3's for this spec
        os.execute("psql '" .. os.getenv("MMO_PG") .. "' -qtAc \"delete from world_events " ..
                   "where region = 'r3' and type = 'invasion'\" >/dev/null 2>&1")
        local b = bots(1, "r3")[1]
        local c = assert(ws.connect(node, b.token))
        c:send({ t = "join", player_id = b.player_id })
        assert.is_table(c:expect("welcome", 3))
        local msg
        local deadline = os.time() + 20
        while os.time() < deadline and not msg do
            local m = c:expect("world_event", 1)
            if m and m.event.type == "invasion" and m.event.state == "active" then
                msg = m
            end
        end
        c:close()
        server.rm_rf(dir)
        assert.is_table(msg, "no invasion came to the crowd")
        assert.equal("r3", msg.event.region)
        assert.equal(100, msg.event.data.hp) -- 100 per player online
    end)
end)

