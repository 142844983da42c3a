-- End-to-end: tools/loadbot against a real node, as an operator runs it (README, "Size a node").
-- A short swarm: every bot joins, moves are relayed to neighbours, nothing is refused; and the
-- tool refuses what it cannot do with a clear message.
local server = require "helpers.server"
local json = require "cjson.safe"

local ROOT = os.getenv("MMO_ROOT") or "."
local BIN = os.getenv("MMO_BIN") or (ROOT .. "/build/mmo")
local LOADBOT = BIN:gsub("mmo$", "loadbot")

-- exit code and output (stdout and stderr) of one loadbot run
local function run(args)
    local p = io.popen(LOADBOT .. " " .. args .. " 2>&1; echo \"loadbot-rc=$?\"")
    local out = p:read("*a")
    p:close()
    local rc = tonumber(out:match("loadbot%-rc=(%d+)%s*$"))
    return rc, (out:gsub("loadbot%-rc=%d+%s*$", ""))
end

describe("loadbot", function()
    local node

    setup(function()
        node = server.start()
    end)

    teardown(function()
        node:stop()
    end)

    it("joins every bot, relays their moves to neighbours, and reports it", function()
        local prefix = "lb" .. string.char(math.random(97, 122), math.random(97, 122))
        local rc, out = run(("--url http://127.0.0.1:%d --bots 40 --rate 5 --duration 3 " ..
                             "--spread 60 --radius 100 --prefix %s --quiet --json --watch-pid %d")
                            :format(node.port, prefix, node.pid))
        assert.equal(0, rc, out)
        local r = json.decode(out:match("(%b{})%s*$") or "")
        assert.is_table(r, out)
        assert.equal(40, r.joined)
        assert.equal(0, r.errors, out)
        assert.equal(0, r.corrects, out)
        assert.equal(0, r.connect_fail, out)
        -- 40 bots at 5 Hz for 3 s, everyone within sight of everyone
        assert.is_true(r.moves_per_s > 150, out)
        assert.is_true(r.moved_per_move > 30, out)
        assert.is_true(r.delivered_pct > 95, out)
        assert.is_true(r.lat_p99_ms > 0 and r.lat_p99_ms < 2000, out)
        assert.is_true(r.sock_p99_ms <= r.lat_p99_ms + 1, out)
        assert.is_true(r.node_rss_end_kib > 0, out)
        -- the same prefix again reuses the bots' accounts and players
        rc, out = run(("--url http://127.0.0.1:%d --bots 40 --rate 0 --duration 1 --prefix %s " ..
                       "--quiet --json"):format(node.port, prefix))
        assert.equal(0, rc, out)
        assert.equal(40, json.decode(out:match("(%b{})%s*$")).joined)
    end)

    it("reconnects its bots, with their tokens, when the node goes away and comes back", function()
        local port = server.free_port()
        local a, b
        finally(function() server.kill_all(a, b) end)
        a = server.start { env = { MMO_PORT = tostring(port), MMO_NODE_ID = "lb-back" } }
        local out = os.tmpname()
        local prefix = "rc" .. string.char(math.random(97, 122), math.random(97, 122))
        os.execute(("%s --url http://127.0.0.1:%d --bots 20 --rate 2 --duration 12 --region r2 " ..
                    "--spread 50 --prefix %s --quiet --json >%s 2>&1 &")
                   :format(LOADBOT, port, prefix, out))
        local token = server.admin_token(a)
        local function online(n)
            local ok, res = pcall(n.request, n, "GET", "/api/world/regions", { token = token })
            if not ok or res.status ~= 200 then
                return -1
            end
            for _, r in ipairs(res.json.regions) do
                if r.id == "r2" then
                    return r.online
                end
            end
        end
        local before
        assert.truthy(server.eventually(function()
            before = online(a)
            return before >= 20
        end, 15), "the bots did not join")
        server.sleep(2) -- into the steady window, which the summary covers
        -- the node stops (its WebSockets close with 1001) and a new one takes the port
        assert.equal(0, a:stop())
        b = server.start { env = { MMO_PORT = tostring(port), MMO_NODE_ID = "lb-back" } }
        assert.truthy(server.eventually(function() return online(b) >= before end, 15),
                      "the bots did not come back to the new node")
        -- the run ends by itself; its summary counts the closes and the returns
        local r
        assert.truthy(server.eventually(function()
            r = json.decode(server.read_file(out):match("(%b{})%s*$") or "")
            return r
        end, 30), "loadbot did not end")
        os.remove(out)
        assert.equal(0, b:stop())
        assert.equal(20, r.closed, json.encode(r))
        assert.equal(20, r.reconnects)
        assert.equal(0, r.errors)
    end)

    it("stops with a clear message on a wrong admin password or a node that is not there", function()
        local rc, out = run(("--url http://127.0.0.1:%d --bots 2 --duration 1 " ..
                             "--admin-password wrong-password --quiet"):format(node.port))
        assert.is_not.equal(0, rc)
        assert.truthy(out:lower():find("login", 1, true) or out:find("401", 1, true), out)
        rc, out = run("--url http://127.0.0.1:1 --bots 2 --duration 1 --quiet")
        assert.is_not.equal(0, rc)
        assert.truthy(#out > 0)
        rc, out = run("--bots 0")
        assert.is_not.equal(0, rc)
        assert.truthy(out:find("bots", 1, true), out)
    end)
end)
