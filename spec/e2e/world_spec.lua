-- End-to-end: the world's regions and their owner leases (API.md "World", DESIGN "Game state and
-- ownership"): one node owns every region; several share them out; a node that stops gives its
-- leases back at once; a node that dies loses them after lease_ms, and the others take them.
local server = require "helpers.server"
local ws = require "helpers.ws"

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


local function redis(...)
    local host, port = (os.getenv("MMO_REDIS") or "127.0.0.1:6379"):match("^(.-):(%d+)$")
    local p = io.popen("redis-cli -h " .. host .. " -p " .. port .. " " .. table.concat({ ... }, " "))
    local out = p:read("*a")
    p:close()
    return (out:gsub("%s+$", ""))
end


-- an account with one player in region, signed in: { token, player }
local function player(node, region)
    local u = "wo" .. math.random(1e8, 9e8)
    node:request("POST", "/api/auth/register",
                 { body = { username = u, password = "correct horse battery staple" } })
    local t = node:request("POST", "/api/auth/login",
        { body = { username = u, password = "correct horse battery staple" } }).json.access_token
    local name = "W" .. string.char(math.random(97, 122), math.random(97, 122),
                                    math.random(97, 122), math.random(97, 122))
    local res = node:request("POST", "/api/players",
                             { token = t, body = { name = name, class = "ranger", region = region } })
    assert.equal(201, res.status, res.body)
    return { token = t, player = res.json }
end


local function regions(node, token)
    local res = node:request("GET", "/api/world/regions", { token = token })
    assert.equal(200, res.status, res.body)
    local by = {}
    for _, r in ipairs(res.json.regions) do
        by[r.id] = r
    end
    return by, res.json.regions
end


local function owners(node, token)
    local by = regions(node, token)
    local out = {}
    for id, r in pairs(by) do
        out[id] = type(r.owner_node) == "string" and r.owner_node or false
    end
    return out
end


-- how many regions each node owns (key false: those without an owner)
local function counts(node, token)
    local count = {}
    for _, o in pairs(owners(node, token)) do
        count[o] = (count[o] or 0) + 1
    end
    return count
end


local function all_owned_by(node, token, who)
    return function()
        local count = counts(node, token)
        return count[who] ~= nil and next(count, next(count)) == nil
    end
end


describe("world regions", function()
    it("lists every region with its bounds, this node as owner, and who is online", function()
        local node = server.start()
        finally(function() server.kill_all(node) end)
        local p = player(node, "r2")
        local res = node:request("GET", "/api/world/regions")
        assert.equal(401, res.status)
        -- within a lease's time (10 s): a node of an earlier spec, stopped while Redis was
        -- down, may still hold them
        assert.truthy(server.eventually(all_owned_by(node, p.token, "spec-node"), 12),
                      "the node did not take its regions")
        local by, list = regions(node, p.token)
        assert.equal(4, #list)
        assert.same({ x0 = 1000, y0 = 0, x1 = 2000, y1 = 1000 }, by.r2.bounds)
        assert.equal("Ironridge", by.r2.name)
        local before = by.r2.online
        -- the lease is in Redis (on the instance r2 is placed on), held by this node
        assert.truthy(server.rcli_at("region:r2", "GET region:owner:r2"):match("^spec%-node/"))
        local c = assert(ws.connect(node, p.token))
        c:send({ t = "join", player_id = p.player.id })
        assert.is_table(c:expect("welcome", 3))
        assert.equal(before + 1, regions(node, p.token).r2.online)
        c:close()
        assert.truthy(server.eventually(function()
            return regions(node, p.token).r2.online == before
        end, 5))
        -- a node that stops gives its leases back
        assert.equal(0, node:stop())
        assert.equal("", server.rcli_at("region:r2", "GET region:owner:r2"))
    end)

    -- true when every region has an owner among nodes, and each node owns share of them
    local function spread(node, token, nodes, share)
        return function()
            local count = counts(node, token)
            local ok = count[false] == nil
            for _, n in ipairs(nodes) do
                ok = ok and count[n] == share
            end
            return ok
        end
    end

    it("spreads the regions over the live nodes; hands them over at once when a node stops, " ..
       "and within 5 s when it dies", function()
        local env = { MMO_WORLD_LEASE_MS = "3000" }
        local a, b
        finally(function() server.kill_all(a, b) end)
        env.MMO_NODE_ID = "node-a"
        a = server.start { env = env }
        local p = player(a, "r1")
        assert.truthy(server.eventually(all_owned_by(a, p.token, "node-a"), 12))
        -- b joins: a hands it its share (4 regions, two each), and both see the same owners
        env.MMO_NODE_ID = "node-b"
        b = server.start { env = env }
        assert.truthy(server.eventually(spread(b, p.token, { "node-a", "node-b" }, 2), 8),
                      "the regions were not spread over the two nodes")
        assert.truthy(server.eventually(function()
            return pcall(assert.same, owners(a, p.token), owners(b, p.token))
        end, 3), "the two nodes do not agree on the owners")
        assert.truthy(redis("ZRANGE", "nodes:live", 0, -1):find("node-b/", 1, true))
        -- a stops: its regions go to b at once
        assert.equal(0, a:stop())
        assert.falsy(redis("ZRANGE", "nodes:live", 0, -1):find("node-a/", 1, true))
        local t0 = server.now()
        assert.truthy(server.eventually(all_owned_by(b, p.token, "node-b"), 3),
                      "node-b did not take the released regions")
        assert.is_true(server.now() - t0 <= 2)
        -- a starts again and gets its share back; then b dies without a word: a takes its
        -- regions once b's lease and its place in the live list lapse (3 s), within 5 s
        env.MMO_NODE_ID = "node-a"
        a = server.start { env = env }
        assert.truthy(server.eventually(spread(a, p.token, { "node-a", "node-b" }, 2), 8))
        b:kill()
        t0 = server.now()
        assert.truthy(server.eventually(all_owned_by(a, p.token, "node-a"), 8),
                      "node-a did not take over the dead node's regions")
        local took = server.now() - t0
        assert.is_true(took < 5, "the takeover took " .. took .. " s")
        assert.equal(0, a:stop())
    end)

    it("spreads the regions over three nodes, and over two when one dies", function()
        local env = { MMO_WORLD_LEASE_MS = "3000" }
        local nodes = {}
        finally(function() server.kill_all(nodes) end)
        for _, id in ipairs({ "node-x", "node-y", "node-z" }) do
            env.MMO_NODE_ID = id
            nodes[#nodes + 1] = server.start { env = env }
        end
        local p = player(nodes[1], "r3")
        -- four regions over three nodes: at most two each, every one owned, one owner each
        assert.truthy(server.eventually(function()
            local c = counts(nodes[1], p.token)
            local x, y, z = c["node-x"] or 0, c["node-y"] or 0, c["node-z"] or 0
            return x + y + z == 4 and math.min(x, y, z) >= 1 and math.max(x, y, z) <= 2
        end, 10), "the regions were not spread over three nodes: " ..
                  require("cjson").encode(owners(nodes[1], p.token)) .. " " ..
                  redis("ZRANGE", "nodes:live", 0, -1, "WITHSCORES"))
        nodes[3]:kill()
        assert.truthy(server.eventually(spread(nodes[1], p.token, { "node-x", "node-y" }, 2), 8),
                      "the dead node's regions were not spread over the two left: " ..
                      require("cjson").encode(owners(nodes[1], p.token)))
        assert.equal(0, nodes[1]:stop())
        assert.equal(0, nodes[2]:stop())
    end)

    it("refuses a lease shorter than 3 s at start", function()
        local rc, out = server.start { env = { MMO_WORLD_LEASE_MS = "500" }, expect_fail = true }
        assert.equal(1, rc)
        assert.truthy(out:find("lease_ms", 1, true), out)
    end)
end)
