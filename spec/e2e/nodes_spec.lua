-- End-to-end: several nodes on one machine sharing the public port (http.reuseport, as
-- tools/dev up --nodes runs them), each also on an admin port of its own (http.admin_port).
local server = require "helpers.server"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")


describe("nodes sharing a port", function()
    local function at(node, port)
        return setmetatable({ host = node.host, port = port }, getmetatable(node))
    end

    local function who(node, token)
        local res = node:request("GET", "/api/admin/queues", { token = token })
        assert.equal(200, res.status, res.body)
        return res.json.node.consumer
    end

    it("serves from every node on the shared port, and each on its own admin port", function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD (tools/dev test)")
        local port, pa, pb = server.free_port(), server.free_port(), server.free_port()
        local env = { MMO_PORT = tostring(port), MMO_HTTP_REUSEPORT = "1" }
        env.MMO_NODE_ID, env.MMO_HTTP_ADMIN_PORT = "share-a", tostring(pa)
        local a, b
        finally(function() server.kill_all(a, b) end)
        a = server.start { env = env }
        env.MMO_NODE_ID, env.MMO_HTTP_ADMIN_PORT = "share-b", tostring(pb)
        b = server.start { env = env }
        assert.equal(port, a.port)
        assert.equal(port, b.port)
        local token = server.admin_token(a)
        -- each admin port is its node's alone
        assert.equal("share-a", who(at(a, pa), token))
        assert.equal("share-b", who(at(b, pb), token))
        assert.equal(200, at(a, pa):request("GET", "/healthz").status)
        -- the kernel spreads new connections on the shared port over both
        local seen = {}
        for _ = 1, 60 do
            seen[who(a, token)] = true
        end
        assert.truthy(seen["share-a"] and seen["share-b"], "one node took every connection")
        -- one stops: the port goes on serving, from the other
        assert.equal(0, a:stop())
        for _ = 1, 10 do
            assert.equal("share-b", who(b, token))
        end
        assert.equal(0, b:stop())
    end)

    it("refuses at start a port another node holds, unless both share it", function()
        local port = server.free_port()
        local a = server.start { env = { MMO_PORT = tostring(port), MMO_NODE_ID = "alone-a" } }
        finally(function() server.kill_all(a) end)
        local rc, out = server.start { env = { MMO_PORT = tostring(port), MMO_NODE_ID = "alone-b",
                                                MMO_HTTP_REUSEPORT = "1" },
                                       expect_fail = true }
        assert.equal(1, rc)
        assert.truthy(out:lower():find("in use", 1, true), out)
        -- nor can an admin port be one that is taken
        rc, out = server.start { env = { MMO_NODE_ID = "alone-c",
                                         MMO_HTTP_ADMIN_PORT = tostring(port) },
                                 expect_fail = true }
        assert.equal(1, rc)
        assert.truthy(out:lower():find("in use", 1, true), out)
        assert.equal(0, a:stop())
    end)
end)
