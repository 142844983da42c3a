-- End-to-end: two nodes share players through the cache layers; a write on one is seen by a
-- read on the other within milliseconds (Redis pub/sub drops the other node's local copy).
local server = require "helpers.server"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")


describe("cache layers across two nodes", function()
    local a, b, token, admin_token

    local function layers(node)
        local res = node:request("GET", "/api/admin/cache", { token = admin_token })
        assert.equal(200, res.status, res.body)
        return res.json
    end

    setup(function()
        a = server.start { env = { MMO_NODE_ID = "node-a" } }
        b = server.start { env = { MMO_NODE_ID = "node-b" } }
        local name = "cache" .. math.random(100000, 999999)
        a:request("POST", "/api/auth/register",
                  { body = { username = name, password = "correct horse battery staple" } })
        token = a:request("POST", "/api/auth/login",
            { body = { username = name, password = "correct horse battery staple" } }).json.access_token
        admin_token = a:request("POST", "/api/auth/login",
            { body = { username = "admin", password = ADMIN_PASSWORD } }).json.access_token
        assert.truthy(server.eventually(function()
            return layers(a).subscribed and layers(b).subscribed
        end, 5), "both nodes subscribe to the invalidation channel")
    end)

    teardown(function()
        assert.equal(0, a:stop())
        assert.equal(0, b:stop())
    end)

    it("serves B's second read from B's memory, and B sees A's write at once", function()
        local res = a:request("POST", "/api/players", { token = token,
            body = { name = "Cach" .. string.char(math.random(97, 122), math.random(97, 122),
                                                  math.random(97, 122)), class = "ranger" } })
        assert.equal(201, res.status, res.body)
        local url = "/api/players/" .. res.json.id

        local before = layers(b)
        assert.equal(200, b:request("GET", url, { token = token }).status)
        assert.equal(200, b:request("GET", url, { token = token }).status)
        local after = layers(b)
        assert.truthy(after.local_hits >= before.local_hits + 1, "B's second read is local")

        -- A writes; B's next read must not be stale
        res = a:request("PATCH", url, { token = token, body = { appearance = { hair = "curly" } } })
        assert.equal(200, res.status, res.body)
        local t0 = server.now()
        local seen = server.eventually(function()
            return b:request("GET", url, { token = token }).json.appearance.hair == "curly"
        end, 1)
        assert.truthy(seen, "B still served the old document after 1 s")
        assert.truthy(server.now() - t0 < 0.2, "B took " .. (server.now() - t0) .. " s")
        assert.truthy(layers(b).invalidations_received > before.invalidations_received)

        -- a delete on B reaches A
        assert.equal(204, b:request("DELETE", url, { token = token }).status)
        assert.equal(404, a:request("GET", url, { token = token }).status)
    end)

    it("B sees the xp a game event gave on A (a batch's documents are stored in one go)", function()
        local res = a:request("POST", "/api/players", { token = token,
            body = { name = "Batc" .. string.char(math.random(97, 122), math.random(97, 122),
                                                  math.random(97, 122)), class = "mage" } })
        assert.equal(201, res.status, res.body)
        local id = res.json.id
        local url = "/api/players/" .. id
        -- B has the document in its memory
        assert.equal(0, b:request("GET", url, { token = token }).json.xp)
        assert.equal(0, b:request("GET", url, { token = token }).json.xp)
        -- a kill of a level-5 monster: 50 xp, written by whichever node consumes it
        res = a:request("POST", "/api/events", { token = token, body = { events = {
            { id = "cache-" .. math.random(1e8, 9e8), type = "kill", player_id = id,
              ts = os.time(), data = { monster = "wolf", level = 5 } } } } })
        assert.equal(202, res.status, res.body)
        assert.truthy(server.eventually(function()
            return tonumber(server.psql("select xp from players where id = " .. id)) == 50
        end, 10), "the event had no effect")
        -- B's copy went stale with the write: its next reads say 50
        assert.truthy(server.eventually(function()
            return b:request("GET", url, { token = token }).json.xp == 50
        end, 1), "B still served the old xp after 1 s")
        assert.equal(50, a:request("GET", url, { token = token }).json.xp)
    end)
end)
