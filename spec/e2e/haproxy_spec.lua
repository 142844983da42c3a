-- End-to-end: Debian's haproxy in front of two nodes, with the configuration that
-- tools/deploy/haproxy-config prints: clients spread over both, WebSockets carried, and a node
-- that stops taken out without one failed request.
local server = require "helpers.server"
local ws = require "helpers.ws"

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


-- haproxy in the foreground with cfg, its log in dir; stopped by pid (and when this busted
-- process is gone, by a watchdog)
local function haproxy(dir, cfg)
    local me = io.open("/proc/self/stat"):read("*l"):match("^(%d+)")
    local pidfile, log = dir .. "/haproxy.pid", dir .. "/haproxy.log"
    os.execute("( sh -c 'echo $$ > " .. pidfile .. "; exec haproxy -db -f " .. cfg .. "' >" ..
               log .. " 2>&1 & ) ; ( while kill -0 " .. me .. " 2>/dev/null; do sleep 1; done; " ..
               "kill $(cat " .. pidfile .. ") 2>/dev/null ) >/dev/null 2>&1 &")
    local pid
    assert(server.eventually(function()
        local f = io.open(pidfile)
        pid = f and tonumber(f:read("*a"):match("%d+"))
        if f then
            f:close()
        end
        return pid
    end, 5), "haproxy did not start")
    return { pid = pid, log = log, stop = function()
        os.execute("kill " .. pid .. " 2>/dev/null")
    end }
end


describe("haproxy in front of two nodes", function()
    it("spreads clients, carries WebSockets, and takes a stopping node out with no failed request",
       function()
        assert.truthy(os.execute("command -v haproxy >/dev/null") == 0,
                      "haproxy is not installed (tools/dev installs it)")
        local env = { MMO_HTTP_MAX_CONNECTIONS_PER_IP = "0" } -- every client is haproxy here
        local a, b
        finally(function() server.kill_all(a, b) end)
        env.MMO_NODE_ID = "lb-a"
        a = server.start { env = env }
        env.MMO_NODE_ID = "lb-b"
        b = server.start { env = env }
        local dir = server.tmpdir()
        local port = server.free_port()
        assert.equal(0, os.execute(server.ROOT .. "/tools/deploy/haproxy-config --bind 127.0.0.1:" ..
                                   port .. " 127.0.0.1:" .. a.port .. " 127.0.0.1:" .. b.port ..
                                   " >" .. dir .. "/haproxy.cfg"))
        local h = haproxy(dir, dir .. "/haproxy.cfg")
        local lb = setmetatable({ host = "127.0.0.1", port = port }, getmetatable(a))
        local function node_of(res)
            return res.status == 200 and res.json and res.json.node
        end
        -- both nodes healthy (two checks each): new clients go to both
        local seen = {}
        assert.truthy(server.eventually(function()
            local ok, res = pcall(lb.request, lb, "GET", "/healthz")
            if ok and node_of(res) then
                seen[node_of(res)] = true
            end
            return seen["lb-a"] and seen["lb-b"]
        end, 10), "haproxy did not spread requests over both nodes")

        -- a WebSocket through haproxy: a player signs in and joins the world
        local u = "lb" .. server.letters(8)
        local pw = "correct horse battery staple"
        assert.equal(201, lb:request("POST", "/api/auth/register",
                                     { body = { username = u, password = pw } }).status)
        local token = lb:request("POST", "/api/auth/login",
                                 { body = { username = u, password = pw } }).json.access_token
        local res = lb:request("POST", "/api/players", { token = token,
            body = { name = "Lb" .. server.letters(6), class = "ranger", region = "r1" } })
        assert.equal(201, res.status, res.body)
        local c = assert(ws.connect(lb, token))
        c:send({ t = "join", player_id = res.json.id })
        assert.is_table(c:expect("welcome", 5))
        c:close()

        -- a stops (SIGTERM: /readyz 503 and its listener closed at once): every request sent
        -- meanwhile is answered, by b once haproxy knows
        a:signal("TERM")
        local failed, answered, by = 0, 0, {}
        local t_end = server.now() + 4
        while server.now() < t_end do
            local ok, r = pcall(lb.request, lb, "GET", "/healthz")
            if ok and node_of(r) then
                answered = answered + 1
                by[node_of(r)] = (by[node_of(r)] or 0) + 1
            else
                failed = failed + 1
            end
        end
        assert.equal(0, failed, "requests failed while a node stopped")
        assert.is_true(answered > 50)
        assert.truthy(a:wait(15), "node a did not stop")
        for _ = 1, 10 do
            assert.equal("lb-b", node_of(lb:request("GET", "/healthz")))
        end
        h.stop()
        assert.equal(0, b:stop())
        server.rm_rf(dir)
    end)
end)
