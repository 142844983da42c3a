-- End-to-end: reloads under load. Moving WebSocket bots (tools/loadbot) and wrk on an HTTP route
-- while the scripts are reloaded again and again, every other reload broken (a syntax error, or
-- a module that raises while it loads): no connection is dropped, no request gets a 5xx, each
-- broken reload is refused with its file and line, and each good one is seen by the clients
-- (the route answers the new rule's value at once).
--
-- CI runs it small; the full-scale figures (docs/performance.md, "Hot reload") come from:
--   MMO_PROOF_BOTS=2000 MMO_PROOF_RELOADS=20 busted --run=e2e spec/e2e/reload_load_spec.lua
-- with what tools/dev test exports (MMO_BIN pointing at a Release build for figures).
local server = require "helpers.server"
local json = require "cjson.safe"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")
local BOTS = tonumber(os.getenv("MMO_PROOF_BOTS") or "60")
local RELOADS = tonumber(os.getenv("MMO_PROOF_RELOADS") or "6")
local GAP = tonumber(os.getenv("MMO_PROOF_GAP") or "1") -- seconds between reloads
local SECONDS = tonumber(os.getenv("MMO_PROOF_SECONDS") or "0") -- at least (a baseline: RELOADS=0)
local BIN = os.getenv("MMO_BIN") or (server.ROOT .. "/build/mmo")
local LOADBOT = BIN:gsub("mmo$", "loadbot")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))

-- the demo route's rule, at a value the clients can see
local function demo(level)
    local text = assert(io.open(server.ROOT .. "/scripts/handlers/demo.lua")):read("*a")
    local out, n = text:gsub("level = 3,", "level = " .. level .. ",")
    assert(n == 1, "scripts/handlers/demo.lua no longer has `level = 3,`")
    return out
end

local BROKEN = {
    { "lib/proof_broken.lua", "local _M = {}\nlocal x = = 1\nreturn _M\n", 2 },
    { "lib/proof_broken.lua", "local _M = {}\n\nerror('the loot table is empty')\nreturn _M\n", 3 },
}


describe("reloads under load", function()
    local node, dir, env

    setup(function()
        assert.truthy(ADMIN_PASSWORD, "MMO_ADMIN_PASSWORD must be set (tools/dev test does)")
        dir = server.tmpdir()
        assert(os.execute("cp -r " .. server.ROOT .. "/scripts/. " .. dir .. "/"))
        env = { MMO_SCRIPTS = dir, MMO_ROUTES = "routes", MMO_CONTROL_SOCKET = dir .. "/ctl.sock",
                MMO_WS_MAX_CONNECTIONS = tostring(BOTS + 100),
                MMO_RATELIMIT_API_LIMIT = "1000000", MMO_RATELIMIT_API_BURST = "1000000",
                MMO_RATELIMIT_API_PERIOD_MS = "10000", MMO_RATELIMIT_AUTH_LIMIT = "100000",
                MMO_RATELIMIT_AUTH_BURST = "100000", MMO_WS_MSG_RATE = "1000",
                MMO_WS_MSG_BURST = "2000" }
        node = server.start { env = env }
    end)

    teardown(function()
        if node then
            node:stop()
        end
        server.rm_rf(dir)
    end)

    it("drops no connection, answers no 5xx, refuses the broken sets, serves the good ones", function()
        local duration = math.max(SECONDS, math.ceil(RELOADS * (GAP + 0.5)) + 4)
        local lb_out, wrk_out = dir .. "/loadbot.json", dir .. "/wrk.txt"
        local prefix = "p" .. server.letters(4)
        local side = math.min(950, math.floor(math.sqrt(BOTS / 20 * math.pi) * 100))
        os.execute(("MMO_ADMIN_PASSWORD=%s %s --url http://127.0.0.1:%d --bots %d --rate 10 " ..
                    "--duration %d --spread %d --radius 100 --prefix %s --ramp 500 --quiet " ..
                    "--json --watch-pid %d > %s 2>%s.log &")
                   :format(ADMIN_PASSWORD, LOADBOT, node.port, BOTS, duration, side, prefix,
                           node.pid, lb_out, lb_out))
        -- the reloads begin once every bot is in
        assert.is_true(server.eventually(function()
            local m = node:request("GET", "/metrics").body
            return tonumber(m:match("\nmmo_ws_connections (%d+)")) == BOTS
        end, 60 + BOTS / 100), "the bots did not all connect")
        local function fives()
            local n = 0
            for v in node:request("GET", "/metrics").body
                :gmatch('mmo_http_requests_total{[^}]*status="5%d%d"} (%d+)') do
                n = n + tonumber(v)
            end
            return n
        end
        local fives0 = fives() -- (a /readyz asked before Redis was up may have had its 503)
        os.execute(("wrk -t1 -c16 -d%ds --latency http://127.0.0.1:%d/api/demo/player > %s 2>&1 &")
                   :format(duration - 2, node.port, wrk_out))
        server.sleep(1)
        local level, good, refused = 3, 0, 0
        local t_end = server.now() + duration - 4
        for i = 1, RELOADS do
            if i % 2 == 1 then
                level = 100 + i
                server.write(dir .. "/handlers/demo.lua", demo(level))
                local rc, out = server.run("reload", env)
                assert.equal(0, rc, out)
                good = good + 1
            else
                local b = BROKEN[(i / 2 - 1) % #BROKEN + 1]
                server.write(dir .. "/" .. b[1], b[2])
                local rc, out = server.run("reload", env)
                assert.equal(1, rc, out)
                assert.matches('"file":"' .. dir .. "/" .. b[1] .. '","line":' .. b[3], out, 1,
                               true)
                os.remove(dir .. "/" .. b[1])
                refused = refused + 1
            end
            -- the clients see the rule of the set in use: the new one, or still the last good
            local res = node:request("GET", "/api/demo/player")
            assert.equal(200, res.status)
            assert.equal(level, res.json.level)
            server.sleep(GAP)
        end
        if server.now() < t_end then
            server.sleep(t_end - server.now()) -- a baseline without reloads: the same window
        end
        -- loadbot and wrk end by themselves
        assert.is_true(server.eventually(function()
            return server.read_file(lb_out):find("}%s*$") ~= nil
        end, duration + 60), "loadbot did not finish")
        local r = json.decode(assert(io.open(lb_out)):read("*a"):match("(%b{})%s*$") or "")
        assert.is_table(r, "no loadbot summary")
        assert.is_true(server.eventually(function()
            return (assert(io.open(wrk_out)):read("*a")):find("Requests/sec") ~= nil
        end, 30), "wrk did not finish")
        local wrk = assert(io.open(wrk_out)):read("*a")
        -- nothing dropped, nothing refused
        assert.equal(BOTS, r.joined)
        assert.equal(0, r.closed, "connections closed")
        assert.equal(0, r.errors, "error messages")
        assert.equal(0, r.connect_fail)
        assert.is_nil(wrk:match("Non%-2xx"), wrk)
        assert.is_nil(wrk:match("Socket errors"), wrk)
        assert.equal(fives0, fives(), "a 5xx was answered")
        local p99 = wrk:match("\n%s+99%%%s+(%S+)")
        io.stderr:write(("\nreload proof: %d bots at 10 Hz, %d reloads (%d good, %d refused), " ..
                         "bots p99 %s ms (at the socket %s ms), delivered %.2f%%, closed %d; " ..
                         "wrk %s req/s, p99 %s, 5xx 0\n")
                        :format(BOTS, RELOADS, good, refused, r.lat_p99_ms, r.sock_p99_ms,
                                r.delivered_pct, r.closed,
                                wrk:match("Requests/sec:%s+(%S+)") or "?", p99 or "?"))
    end)
end)
