-- End-to-end: the world's regions and their owner leases (API.md "World", DESIGN "Game state and
-- ownership"): one node owns every region; a node that stops gives its leases back at once; a
-- node that dies loses them after lease_ms, and another node takes them over.
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


local function all_owned_by(node, token, who)
    return function()
        for _, o in pairs(owners(node, token)) do
            if o ~= who then
                return false
            end
        end
        return true
    end
end


describe("world regions", function()
    it("lists every region with its bounds, this node as owner, and who is online", function()
        local node = server.start()
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
        -- the lease is in Redis, held by this node
        assert.truthy(redis("GET", "region:owner:r2"):match("^spec%-node/"))
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
        assert.equal("", redis("GET", "region:owner:r2"))
    end)

    it("hands the regions to another node: at once when the owner stops, after the lease " ..
       "when it dies", function()
        local env = { MMO_WORLD_LEASE_MS = "3000" }
        env.MMO_NODE_ID = "node-a"
        local a = server.start { env = env }
        local p = player(a, "r1")
        assert.truthy(server.eventually(all_owned_by(a, p.token, "node-a"), 12))
        env.MMO_NODE_ID = "node-b"
        local b = server.start { env = env }
        -- b sees a as the owner, and takes nothing
        assert.truthy(server.eventually(all_owned_by(b, p.token, "node-a"), 5))
        assert.equal(0, a:stop())
        local t0 = os.time()
        assert.truthy(server.eventually(all_owned_by(b, p.token, "node-b"), 3),
                      "node-b did not take the released regions")
        assert.is_true(os.time() - t0 <= 2)
        -- a starts again and waits; then b dies without a word: a takes over after the lease
        env.MMO_NODE_ID = "node-a"
        a = server.start { env = env }
        assert.truthy(server.eventually(all_owned_by(a, p.token, "node-b"), 5))
        b:kill()
        assert.truthy(server.eventually(all_owned_by(a, p.token, "node-a"), 8),
                      "node-a did not take over the dead node's regions")
        assert.equal(0, a:stop())
    end)

    it("refuses a lease shorter than 3 s at start", function()
        local rc, out = server.start { env = { MMO_WORLD_LEASE_MS = "500" }, expect_fail = true }
        assert.equal(1, rc)
        assert.truthy(out:find("lease_ms", 1, true), out)
    end)
end)
