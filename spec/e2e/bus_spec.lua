-- End-to-end: one world over several nodes (core/bus.c). Players connected to different nodes
-- see each other join, move, chat and leave; a player whose connection is lost stays in the
-- world for the grace period and comes back on any node without a new login and without
-- vanishing; a node that stops loses no session; the owner of a region counts the players of
-- every node in its territories, and when it is killed (kill -9) the territory it ran and the
-- players in its region go on from another node.
local server = require "helpers.server"
local territories = require "helpers.territory"
local letters = server.letters
local psql = server.psql
local ws = require "helpers.ws"

math.randomseed(os.time() + math.floor(os.clock() * 1e6))

local GRACE_S = 3


-- an account with one player in r1, signed in: { token, player }
local function player(node)
    local u = "bu" .. math.random(1e8, 9e8)
    node:request("POST", "/api/auth/register",
                 { body = { username = u, password = "correct horse battery staple" } })
    local t = node:request("POST", "/api/auth/login",
        { body = { username = u, password = "correct horse battery staple" } }).json.access_token
    local res = node:request("POST", "/api/players", { token = t,
        body = { name = "B" .. letters(7), class = "ranger", region = "r1" } })
    assert.equal(201, res.status, res.body)
    return { token = t, player = res.json, id = res.json.id }
end


-- p joins on node: the client and its welcome
local function joined(node, p)
    local c = assert(ws.connect(node, p.token))
    c:send({ t = "join", player_id = p.id })
    local w = c:expect("welcome", 3)
    assert.is_table(w, "no welcome from " .. tostring(node.id))
    return c, w
end


-- the messages c gets within seconds about player id, by type
local function about(c, id, seconds)
    local got = {}
    for _, m in ipairs(c:drain(seconds)) do
        if m.id == id then
            got[m.t] = (got[m.t] or 0) + 1
        end
    end
    return got
end


-- ids c knows of: the welcome's nearby and what appears within seconds
local function seen_by(c, w, seconds)
    local ids = {}
    for _, n in ipairs(w.nearby) do
        ids[n.id] = true
    end
    for _, m in ipairs(c:drain(seconds)) do
        if m.t == "appear" then
            ids[m.id] = true
        end
    end
    return ids
end


local function stop_all(nodes)
    for _, n in ipairs(nodes) do
        if n:alive() then
            assert.equal(0, n:stop())
        end
    end
end


-- nodes a test started are gone when it ends, passed or failed (server.kill_all)
local function for_this_test(nodes)
    finally(function() server.kill_all(nodes) end)
    return nodes
end


describe("one world over three nodes", function()
    local nodes

    setup(function()
        nodes = server.start_nodes(3, { prefix = "bus", env = {
            MMO_WORLD_GRACE_MS = tostring(GRACE_S * 1000) } })
    end)

    teardown(function()
        stop_all(nodes)
    end)

    it("lets players on different nodes see each other join, move, chat and leave", function()
        local p = { player(nodes[1]), player(nodes[1]), player(nodes[1]) }
        local c, w = {}, {}
        for i = 1, 3 do
            c[i], w[i] = joined(nodes[i], p[i])
        end
        -- everyone knows of everyone: from the welcome or an appear, whichever came first
        for i = 1, 3 do
            local ids = seen_by(c[i], w[i], 1)
            for j = 1, 3 do
                if j ~= i then
                    assert.truthy(ids[p[j].id], "player " .. j .. " unseen on node " .. i)
                end
            end
        end
        -- the region, as every node counts it
        local res = nodes[3]:request("GET", "/api/world/regions", { token = p[3].token })
        for _, r in ipairs(res.json.regions) do
            if r.id == "r1" then
                assert.equal(3, r.online)
            end
        end
        server.sleep(0.3) -- travel time
        c[2]:send({ t = "move", x = 501, y = 500.5, seq = 1 })
        local moved = { t = "moved", id = p[2].id, x = 501, y = 500.5 }
        assert.same(moved, c[1]:expect("moved", 2))
        assert.same(moved, c[3]:expect("moved", 2))
        c[3]:send({ t = "chat", channel = "region", text = "hello from node 3" })
        for i = 1, 2 do
            local m = c[i]:expect("chat", 2)
            assert.is_table(m, "no chat on node " .. i)
            assert.equal("hello from node 3", m.text)
        end
        -- what node 1 applied from the others is counted (metrics are collected each second)
        assert.truthy(server.eventually(function()
            local m = nodes[1]:request("GET", "/metrics").body
            return (tonumber(m:match("\nmmo_bus_lines_received_total (%d+)")) or 0) >= 3 and
                   (tonumber(m:match("\nmmo_bus_published_total (%d+)")) or 0) >= 1
        end, 3), "the bus counters did not move")
        c[2]:close() -- the player leaves: gone for everyone at once
        assert.same({ t = "vanish", id = p[2].id }, c[1]:expect("vanish", 2))
        assert.same({ t = "vanish", id = p[2].id }, c[3]:expect("vanish", 2))
        c[1]:close()
        c[3]:close()
    end)

    it("keeps a player whose connection is lost for the grace period, and takes it back on " ..
       "another node without a new login", function()
        local watcher, lost = player(nodes[1]), player(nodes[1])
        local cw = joined(nodes[1], watcher)
        local cl = joined(nodes[2], lost)
        assert.equal(1, about(cw, lost.id, 0.5).appear)
        server.sleep(0.3)
        cl:send({ t = "move", x = 502, y = 499, seq = 1 })
        assert.same({ t = "moved", id = lost.id, x = 502, y = 499 }, cw:expect("moved", 2))
        cl:drop() -- the network, not the player: no close frame
        assert.same({}, about(cw, lost.id, 1.0), "the lost player vanished at once")
        -- back within the grace, on node 3, with the same token: where it was, no vanish
        local back, w = joined(nodes[3], lost)
        assert.same({ region = "r1", x = 502, y = 499 }, w.player.position)
        assert.same({}, about(cw, lost.id, 0.5))
        server.sleep(0.3)
        back:send({ t = "move", x = 503, y = 499, seq = 2 })
        assert.same({ t = "moved", id = lost.id, x = 503, y = 499 }, cw:expect("moved", 2))
        -- lost again, and not back: it vanishes once the grace is over, not before
        local t0 = server.now()
        back:drop()
        local vanish = cw:expect("vanish", GRACE_S + 4)
        assert.same({ t = "vanish", id = lost.id }, vanish)
        local after = server.now() - t0
        assert.is_true(after >= GRACE_S - 0.5 and after < GRACE_S + 3, "vanished after " .. after)
        cw:close()
    end)
end)


describe("a node that stops", function()
    it("loses no session: its players come back on the others, unseen to leave", function()
        local nodes = for_this_test(server.start_nodes(2, { prefix = "stop", env = {
            MMO_WORLD_GRACE_MS = "10000" } }))
        local watcher = player(nodes[1])
        local cw = joined(nodes[1], watcher)
        local ps, cs, at = {}, {}, {}
        for i = 1, 4 do
            ps[i] = player(nodes[1])
            local w
            cs[i], w = joined(nodes[2], ps[i])
            at[i] = w.player.position
        end
        local appeared = 0
        for _, m in ipairs(cw:drain(1)) do
            appeared = appeared + (m.t == "appear" and 1 or 0)
        end
        assert.equal(4, appeared) -- the watcher sees them, through the bus
        assert.equal(0, nodes[2]:stop()) -- SIGTERM: every connection closed with 1001
        local resumed = 0
        for i = 1, 4 do
            assert.equal(1001, cs[i]:wait_close(5))
            cs[i]:drop()
            -- the client retries with its token, as /play and tools/loadbot do
            local c, w = joined(nodes[1], ps[i])
            assert.same(at[i], w.player.position)
            resumed = resumed + 1
            c:drop() -- lost again: it stays for the grace
        end
        assert.equal(4, resumed)
        for _, m in ipairs(cw:drain(0.5)) do
            assert.is_not.equal("vanish", m.t, "a player of the stopped node vanished")
        end
        cw:close()
        stop_all(nodes)
    end)
end)


describe("the owner of a region killed", function()
    local scripts, dir, tid

    setup(function()
        scripts, dir = territories.fast_rules(25) -- a capture in seconds
        tid = territories.square("t-bus-", "Bus Square")
    end)

    teardown(function()
        territories.clear("t-bus-")
        server.rm_rf(dir)
    end)

    it("counts players of other nodes in its territories; after a kill -9 another node " ..
       "takes the region over and its players go on", function()
        local nodes = for_this_test(server.start_nodes(3, { prefix = "kill",
            scripts = scripts,
            env = { MMO_WORLD_LEASE_MS = "3000", MMO_WORLD_GRACE_MS = "10000" } }))
        local admin = server.admin_token(nodes[1])
        local function region_owner() -- as a node that is alive says
            local n = nodes[1]:alive() and nodes[1] or nodes[2]
            local res = n:request("GET", "/api/world/regions", { token = admin })
            for _, r in ipairs(res.json.regions) do
                if r.id == "r1" then
                    return r.owner_node
                end
            end
        end
        local function territory()
            for _, n in ipairs(nodes) do
                if n:alive() then
                    local res = n:request("GET", "/api/world/territories", { token = admin })
                    for _, t in ipairs(res.json.territories) do
                        if t.id == tid then
                            return t
                        end
                    end
                end
            end
        end
        assert.truthy(server.eventually(function() return type(region_owner()) == "string" end, 5))
        local owner, other, third
        for i, n in ipairs(nodes) do
            if n.id == region_owner() then
                owner = i
            end
        end
        assert.truthy(owner, "r1 is owned by none of the three")
        other, third = owner % 3 + 1, (owner + 1) % 3 + 1

        local res = nodes[other]:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 2, prefix = "k" .. letters(4), region = "r1", spread = 8 } })
        assert.equal(200, res.status, res.body)
        local b = res.json.bots
        local g = nodes[other]:request("POST", "/api/guilds", { token = b[1].token,
            body = { name = "Bus " .. letters(6), player_id = b[1].player_id } })
        assert.equal(201, g.status, g.body)
        local ga = g.json.id
        -- b1 (a guild member) plays on a node that does not own r1, and walks into the
        -- territory; b2 plays on the owner
        local c1 = assert(ws.connect(nodes[other], b[1].token))
        c1:send({ t = "join", player_id = b[1].player_id })
        local w1 = c1:expect("welcome", 3)
        local x, y = w1.player.position.x, w1.player.position.y
        assert.is_true(x < 508, "the bot stands in the territory already")
        local c2 = assert(ws.connect(nodes[owner], b[2].token))
        c2:send({ t = "join", player_id = b[2].player_id })
        local w2 = c2:expect("welcome", 3)
        local seq = 0
        while x < 515 do
            x = math.min(515, x + 0.5)
            seq = seq + 1
            c1:send({ t = "move", x = x, y = y, seq = seq })
            server.sleep(0.1)
        end
        -- the owner counts b1, who is not its player: Bus captures
        assert.truthy(server.eventually(function()
            local t = territory()
            return t and t.owner_guild == ga
        end, 10), "the owner did not count a player of another node")
        assert.truthy(server.eventually(function()
            return psql("select owner_guild from territories where id = '" .. tid .. "'") ==
                   tostring(ga)
        end, 5))
        -- and a world event the owner runs in r1
        local function event(id)
            local r = nodes[other]:request("GET", "/api/world/events?limit=500", { token = admin })
            for _, ev in ipairs(r.json.events) do
                if ev.id == id then
                    return ev
                end
            end
        end
        local ev = nodes[other]:request("POST", "/api/admin/world/events", { token = admin,
            body = { type = "invasion", region = "r1", params = { hp = 4321, duration_s = 600 } } })
        assert.equal(201, ev.status, ev.body)
        local eid = ev.json.id
        assert.truthy(server.eventually(function()
            local e = event(eid)
            return e and e.state == "active"
        end, 5), "the owner did not start the event")
        c1:drain(0.2)

        -- kill -9 the owner: b2's connection is lost; it comes back on the third node
        local killed_at = server.now()
        nodes[owner]:kill()
        c2:drop()
        local c2b = assert(ws.connect(nodes[third], b[2].token))
        c2b:send({ t = "join", player_id = b[2].player_id })
        local back = c2b:expect("welcome", 3)
        assert.same(w2.player.position, back.player.position)
        -- and keeps moving, seen by b1 on the other node
        c1:drain(0.2)
        local bx = back.player.position.x
        for i = 1, 5 do
            server.sleep(0.2)
            c2b:send({ t = "move", x = bx - 0.5 * i, y = back.player.position.y, seq = i })
        end
        local moves = 0
        for _, m in ipairs(c1:drain(1)) do
            if m.t == "moved" and m.id == b[2].player_id then
                moves = moves + 1
            end
            assert.is_not.equal("vanish", m.t)
            assert.is_false(m.t == "world_event" and m.event.state == "active",
                            "the event was started again")
        end
        assert.equal(5, moves)
        -- another node owns r1 within the lease (3 s) and a renewal, and the territory it
        -- loads from PostgreSQL is still Bus's
        assert.truthy(server.eventually(function()
            local o = region_owner()
            return type(o) == "string" and o ~= nodes[owner].id
        end, 8), "no takeover")
        local took = server.now() - killed_at
        assert.is_true(took < 6, "takeover after " .. took .. " s")
        assert.equal(ga, territory().owner_guild)
        -- the new owner goes on with the event where it was: still active, not begun again
        server.sleep(1)
        local e = event(eid)
        assert.equal("active", e.state)
        assert.equal(4321, e.data.max_hp)
        for _, m in ipairs(c1:drain(0.5)) do
            assert.is_false(m.t == "world_event" and m.event.id == eid and
                            m.event.state == "active", "the event was started again")
        end
        c1:close()
        c2b:close()
        stop_all(nodes)
    end)
end)


describe("a node alone on the bus", function()
    local function published(n)
        return tonumber(n:request("GET", "/metrics").body:match(
            "\nmmo_bus_published_total (%d+)")) or 0
    end

    it("publishes no moves while no other node listens, and does once one does", function()
        local a = server.start({ env = { MMO_NODE_ID = "bus-alone-a" }, alone = true })
        local nodes = for_this_test({ a })
        local p = player(a)
        local c, w = joined(a, p)
        local x, y = w.player.position.x, w.player.position.y
        -- 3 s of walking, a step every 0.1 s (well under any class's speed)
        local function walk()
            for i = 1, 30 do
                x = x + 0.25
                c:send({ t = "move", x = x, y = y, seq = i })
                server.sleep(0.1)
            end
            c:drain(0)
        end
        -- how many messages a published while p walked (metrics are collected each second)
        local function during_walk(n)
            server.sleep(1.2)
            local before = published(n)
            walk()
            server.sleep(1.2)
            return published(n) - before
        end
        -- alone: the roster's place is taken by one line a second (who listens?), moves stay
        local alone = during_walk(a)
        nodes[2] = server.start({ env = { MMO_NODE_ID = "bus-alone-b" }, alone = true })
        local shared = during_walk(a)
        print(string.format("# bus messages published in 5.4 s of walking: alone %d, with " ..
                            "another node %d", alone, shared))
        assert.is_true(alone <= 10, alone .. " messages published alone in 5.4 s")
        assert.is_true(shared >= 20, shared .. " messages published with b listening in 5.4 s")
        -- and b sees p where a has it
        local q = player(nodes[2])
        local _, wq = joined(nodes[2], q)
        local seen
        for _, n in ipairs(wq.nearby) do
            if n.id == p.id then
                seen = n
            end
        end
        assert.is_table(seen, "b does not know a's player")
        assert.is_true(math.abs(seen.x - x) < 0.01, "b has it at " .. seen.x .. ", a at " .. x)
        c:close()
    end)
end)
