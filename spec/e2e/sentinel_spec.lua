-- End-to-end: Redis high availability through Redis Sentinel (docs/operations.md, "Redis
-- Sentinel"). A primary, its replica and two sentinels of this run (`tools/dev svc ha`), two
-- nodes configured with the sentinels. Under a stream of game events the primary is killed
-- with -9: the sentinels promote the replica, and the nodes follow it: events are taken again
-- within the bound the docs state, the region leases and the event consumer resume, and a chat
-- line crosses from one node to the other through the subscriber. The events acknowledged
-- (202) before the kill are counted against those processed after: the spec asserts what
-- the docs promise, no more (those acknowledged in the last second before the kill may be
-- lost; every one acknowledged after is processed; none has its effect twice). Then the hostile
-- case: no sentinel reachable: the node is not ready and answers 503 in the API's error shape,
-- at once, and is back when they are.
local server = require "helpers.server"
local letters = server.letters
local psql = server.psql
local ws = require "helpers.ws"

local FAILOVER_BOUND_S = 10 -- docs/operations.md: events are taken again within this

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


local function sh_quote(s)
    return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end


-- tools/dev svc WHAT ACTION; its stdout (the messages go to stderr, kept for a failure)
local function svc(what, action)
    local cmd = os.getenv("MMO_SVC_CMD") or (sh_quote(server.ROOT .. "/tools/dev") .. " svc")
    local err = os.tmpname()
    local p = io.popen(cmd .. " " .. what .. " " .. action .. " 2>" .. err)
    local out = p:read("*a")
    local ok = p:close()
    local msg = server.read_file(err)
    os.remove(err)
    assert(ok == true or ok == 0, "tools/dev svc " .. what .. " " .. action .. " failed:\n" .. msg)
    return out
end


local function cli(port, args)
    return server.sh("redis-cli -h 127.0.0.1 -p " .. port .. " " .. args)
end


-- the primary the sentinel on port says, "host:port"
local function primary_by(sentinel_port)
    local out = cli(sentinel_port, "sentinel get-master-addr-by-name mmo")
    local host, port = out:match("^(%S+)%s+(%d+)")
    return host and (host .. ":" .. port)
end


describe("Redis Sentinel", function()
    local ha = {}
    local a, b, dir, admin

    local function readyz(node)
        return node:request("GET", "/readyz", { timeout = 5 })
    end

    local function queues()
        local res = a:request("GET", "/api/admin/queues", { token = admin })
        return res.status == 200 and res.json
    end

    setup(function()
        local out = svc("ha", "start")
        ha.sentinels = assert(out:match("MMO_REDIS_SENTINELS=(%S+)"), out)
        ha.primary, ha.replica = out:match("HA_REDIS=(%S+),(%S+)")
        assert(ha.primary and ha.replica, out)
        ha.sentinel_ports = {}
        for p in ha.sentinels:gmatch(":(%d+)") do
            ha.sentinel_ports[#ha.sentinel_ports + 1] = tonumber(p)
        end
        -- failed jobs and unacknowledged entries come back after 2 s, not 30 (lib/pipeline.lua)
        dir = server.tmpdir()
        local f = assert(io.open(server.ROOT .. "/scripts/lib/pipeline.lua"))
        local text = f:read("*a")
        f:close()
        local n1, n2
        text, n1 = text:gsub("_M%.CLAIM_IDLE_MS = %d+", "_M.CLAIM_IDLE_MS = 2000")
        text, n2 = text:gsub("_M%.CLAIM_EVERY = %d+", "_M.CLAIM_EVERY = 1")
        assert(n1 == 1 and n2 == 1, "lib/pipeline.lua changed: CLAIM_IDLE_MS, CLAIM_EVERY")
        server.write(dir .. "/lib/pipeline.lua", text)
        local env = {
            MMO_REDIS_SENTINELS = ha.sentinels,
            MMO_REDIS_MASTER_NAME = "mmo",
            MMO_REDIS = "127.0.0.1:" .. server.free_port(), -- a wrong first guess: not used
            MMO_REDIS_INSTANCES = "", -- the Sentinel-watched primary alone
            MMO_REDIS_RECONNECT_MAX_MS = "1000",
            MMO_WORLD_LEASE_MS = "3000",
        }
        local scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" .. server.ROOT ..
                        "/scripts"
        env.MMO_NODE_ID = "ha-a"
        a = server.start { env = env, scripts = scripts }
        env.MMO_NODE_ID = "ha-b"
        b = server.start { env = env, scripts = scripts }
        admin = server.admin_token(a)
    end)

    teardown(function()
        if a then
            a:stop()
        end
        if b then
            b:stop()
        end
        svc("ha", "stop")
        server.rm_rf(dir)
    end)

    it("acknowledges an event only once the replica has it, with redis.wait_replicas", function()
        local d = server.start { env = {
            MMO_REDIS_SENTINELS = ha.sentinels, MMO_REDIS_MASTER_NAME = "mmo",
            MMO_REDIS = "127.0.0.1:" .. server.free_port(), MMO_REDIS_INSTANCES = "",
            MMO_REDIS_WAIT_REPLICAS = "1", MMO_REDIS_WAIT_TIMEOUT_MS = "300",
            MMO_NODE_ID = "ha-d" } }
        finally(function() d:kill() end)
        local res = a:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 1, prefix = "w" .. letters(4), region = "r1", spread = 20 } })
        assert.equal(200, res.status, res.body)
        local me = res.json.bots[1]
        local function send()
            local id = "w" .. letters(10)
            local t = server.now()
            local r = d:request("POST", "/api/events", { token = me.token, timeout = 5,
                body = { events = { { id = id, type = "kill", ts = os.time(),
                                      player_id = me.player_id,
                                      data = { monster = "wolf", level = 1 } } } } })
            return r, id, server.now() - t
        end
        local replica = ha.replica:match(":(%d+)$")
        -- acknowledged: the replica holds it already (WAIT counted its acknowledgement)
        for _ = 1, 5 do
            local r, id = send()
            assert.equal(202, r.status, r.body)
            assert.truthy(cli(replica, "XREVRANGE mmo:events + - COUNT 50"):find(id, 1, true),
                          "event " .. id .. " acknowledged but not on the replica")
        end
        -- the replica stopped (SIGSTOP): refused within the wait, in the API's error shape
        local pid = tonumber(cli(replica, "info server"):match("process_id:(%d+)"))
        assert.truthy(pid, "no pid of the replica")
        os.execute("kill -STOP " .. pid)
        local ok, err = pcall(function()
            for _ = 1, 3 do
                local r, _, took = send()
                assert.equal(503, r.status, r.body)
                assert.is_string(r.json.error.code)
                assert.is_true(took < 2, "answered after " .. took .. " s")
            end
        end)
        os.execute("kill -CONT " .. pid)
        assert(ok, err)
        assert.truthy(server.eventually(function() return send().status == 202 end, 10),
                      "events not acknowledged again once the replica is back")
    end)

    it("follows the promoted replica when the primary is killed under load", function()
        -- both nodes on the primary, found through the sentinels
        assert.equal(ha.primary, readyz(a).json.checks.redis.addr)
        assert.equal(ha.primary, readyz(b).json.checks.redis.addr)
        local res = a:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 3, prefix = "s" .. letters(4), region = "r1", spread = 20 } })
        assert.equal(200, res.status, res.body)
        local bot = res.json.bots
        local xp0 = {}
        for i = 1, 3 do
            xp0[i] = tonumber(psql("select xp from players where id = " .. bot[i].player_id))
        end
        -- bot 1 on node a, bot 2 on node b: a chat line crosses through Redis
        local c1 = assert(ws.connect(a, bot[1].token))
        c1:send({ t = "join", player_id = bot[1].player_id })
        assert.is_table(c1:expect("welcome", 5))
        local c2 = assert(ws.connect(b, bot[2].token))
        c2:send({ t = "join", player_id = bot[2].player_id })
        assert.is_table(c2:expect("welcome", 5))

        -- the load: bot 3 sends batches of 20 kills (level 1: 10 xp each) to node a, one
        -- request after another, ids "<run>-b-<n>" before the kill and "<run>-a-<n>" after
        local run = letters(8)
        local acked = { before = 0, after = 0 }
        local recent = 0 -- events acknowledged in the last second before the kill
        local times = {}
        local killed_at, back_at, seq = nil, nil, 0
        local t0 = server.now()
        local pid = tonumber(cli(ha.primary:match(":(%d+)$"), "info server")
                             :match("process_id:(%d+)"))
        assert.truthy(pid, "no pid of the primary")
        local statuses = {}
        while true do
            local now = server.now()
            if not killed_at and now - t0 > 2 then
                os.execute("kill -9 " .. pid)
                killed_at = server.now()
                for _, t in ipairs(times) do
                    if t.at > killed_at - 1 then
                        recent = recent + t.n
                    end
                end
            end
            if back_at and now - back_at > 2 then
                break
            end
            if killed_at and now - killed_at > FAILOVER_BOUND_S + 5 then
                break
            end
            seq = seq + 1
            local phase = killed_at and "after" or "before"
            local events = {}
            for k = 1, 20 do
                events[k] = { id = run .. "-" .. phase:sub(1, 1) .. "-" .. seq .. "-" .. k,
                              type = "kill", player_id = bot[3].player_id, ts = os.time(),
                              data = { monster = "wolf", level = 1 } }
            end
            local sent = server.now()
            local ok, r = pcall(a.request, a, "POST", "/api/events",
                                { token = bot[3].token, body = { events = events }, timeout = 5 })
            local took = server.now() - sent
            assert.is_true(took < 5, "a request took " .. took .. " s")
            local status = ok and r.status or 0
            statuses[status] = (statuses[status] or 0) + 1
            if status == 202 then
                assert.equal(20, r.json.accepted)
                acked[phase] = acked[phase] + 20
                times[#times + 1] = { at = server.now(), n = 20 }
                if killed_at and not back_at then
                    back_at = server.now()
                end
            else
                -- while no primary is reachable: 503 in the error shape, never a lost 202
                assert.is_true(killed_at ~= nil, "status " .. status .. " before the kill")
                assert.equal(503, status, ok and r.body or tostring(r))
                assert.equal("unavailable", r.json.error.code)
                assert.is_string(r.json.error.message)
            end
        end
        assert.truthy(back_at, "no event taken within " .. (FAILOVER_BOUND_S + 5) ..
                      " s of the kill")
        local failover_s = back_at - killed_at
        local answered = {}
        for status, n in pairs(statuses) do
            answered[#answered + 1] = n .. " x " .. status
        end
        print(string.format("# failover: events taken again %.2f s after the kill -9 of the " ..
                            "primary; %d acknowledged before (%d in its last second), %d after; " ..
                            "answers: %s", failover_s, acked.before, recent, acked.after,
                            table.concat(answered, ", ")))
        assert.is_true(failover_s < FAILOVER_BOUND_S, "took " .. failover_s .. " s")
        assert.is_true(acked.before > 0 and acked.after > 0)

        -- the nodes are on the promoted replica, and said so once
        assert.equal(ha.replica, primary_by(ha.sentinel_ports[1]))
        for _, node in ipairs({ a, b }) do
            assert.truthy(server.eventually(function()
                local r = readyz(node)
                return r.status == 200 and r.json.checks.redis.addr == ha.replica
            end, 10), node.log)
            local moved = 0
            for _, e in ipairs(node:log_entries()) do
                if tostring(e.msg):find("Redis primary \"mmo\" moved from " .. ha.primary ..
                                        " to " .. ha.replica, 1, true) then
                    moved = moved + 1
                end
            end
            assert.equal(1, moved)
        end

        -- the consumer resumed: every event acknowledged after the kill is processed, and of
        -- those before, at most the last second's are missing
        local function processed(phase)
            return tonumber(psql("select count(*) from processed_events where id like '" ..
                                 run .. "-" .. phase .. "-%'"))
        end
        assert.truthy(server.eventually(function()
            local q = queues()
            return processed("a") == acked.after and q and q.group.lag == 0 and
                   q.group.pending == 0
        end, 30), "not every event acknowledged after the failover was processed")
        local before = processed("b")
        print(string.format("# of %d events acknowledged before the kill, %d processed " ..
                            "(%d lost)", acked.before, before, acked.before - before))
        assert.is_true(before <= acked.before)
        assert.is_true(acked.before - before <= recent,
                       (acked.before - before) .. " lost, more than the last second's " .. recent)
        -- no effect twice: xp grew by 10 per event processed
        local xp = tonumber(psql("select xp from players where id = " .. bot[3].player_id))
        assert.equal(xp0[3] + 10 * (before + acked.after), xp)

        -- the leases resumed: every region has a live owner again
        assert.truthy(server.eventually(function()
            local r = a:request("GET", "/api/world/regions", { token = admin })
            if r.status ~= 200 then
                return false
            end
            for _, region in ipairs(r.json.regions) do
                if region.owner_node ~= "ha-a" and region.owner_node ~= "ha-b" then
                    return false
                end
            end
            return true
        end, 15), "the regions have no owner after the failover")

        -- live notifications flow again through the subscribers (at most once: try again
        -- until one is heard, as a resubscribed node misses what came before)
        local heard = server.eventually(function()
            local text = "after " .. letters(6)
            c1:send({ t = "chat", channel = "global", text = text })
            for _, m in ipairs(c2:drain(0.5)) do
                if m.t == "chat" and m.text == text then
                    return true
                end
            end
            return false
        end, 10)
        assert.truthy(heard, "no chat crossed from node a to node b after the failover")
        c1:close()
        c2:close()
    end)

    it("is not ready, and answers 503 at once, while no sentinel answers; back after", function()
        local primary = assert(primary_by(ha.sentinel_ports[1]))
        local port = primary:match(":(%d+)$")
        local res = a:request("POST", "/api/admin/bots", { token = admin,
            body = { count = 1, prefix = "h" .. letters(4), region = "r1", spread = 20 } })
        assert.equal(200, res.status, res.body)
        local me = res.json.bots[1]
        -- both sentinels stopped, and the nodes' connections to the primary killed: they ask
        -- the sentinels again, and none answers
        svc("sentinels", "stop")
        cli(port, "client kill type normal")
        cli(port, "client kill type pubsub")
        assert.truthy(server.eventually(function()
            res = readyz(a)
            return res.status == 503 and res.json.checks.redis.status == "down" and
                   res.json.checks.redis.error:find("no sentinel answered", 1, true)
        end, 10), "still ready, or another reason, with no sentinel: " .. res.body)
        for _ = 1, 5 do
            local t = server.now()
            local r = a:request("POST", "/api/events", { token = me.token, timeout = 5,
                body = { events = { { id = "x" .. letters(8), type = "kill", ts = os.time(),
                                      player_id = me.player_id,
                                      data = { monster = "wolf", level = 1 } } } } })
            assert.equal(503, r.status, r.body)
            assert.is_table(r.json.error)
            assert.is_string(r.json.error.code)
            assert.is_string(r.json.error.message)
            assert.is_true(server.now() - t < 2, "a request waited " .. (server.now() - t) .. " s")
        end
        assert.equal(200, a:request("GET", "/healthz").status) -- alive all along
        svc("sentinels", "start")
        local t = server.now()
        assert.truthy(server.eventually(function()
            return readyz(a).status == 200 and readyz(b).status == 200
        end, 10), "not ready 10 s after the sentinels came back")
        print(string.format("# ready again %.2f s after the sentinels answered", server.now() - t))
        assert.equal(primary, readyz(a).json.checks.redis.addr)
    end)

    it("reaches an instance of redis.instances through that instance's own sentinels", function()
        -- home is tools/dev's plain Redis; the instance "ha" is the Sentinel-watched set, known
        -- to the node only by its sentinels (a config file: the environment cannot say them).
        -- Nodes a and b stop first: they see another world (home the set), whose leases on the
        -- same regions this node would not see.
        a:stop()
        b:stop()
        a, b = nil, nil
        local list = {}
        for s in ha.sentinels:gmatch("[^,]+") do
            list[#list + 1] = string.format("%q", s)
        end
        local cfg = dir .. "/instances.lua"
        server.write(cfg, "return { redis = { instances = { { name = \"ha\", sentinels = { " ..
                          table.concat(list, ", ") .. " }, master_name = \"mmo\" } } } }\n")
        -- nodes of the specs before may have left their list of instances for a few leases
        server.sh("redis-cli -h " .. os.getenv("MMO_REDIS"):gsub(":", " -p ") ..
                  " DEL nodes:layout")
        local n = server.start { env = { MMO_CONFIG = cfg, MMO_REDIS_INSTANCES = "",
                                         MMO_NODE_ID = "ha-c" } }
        finally(function()
            n:kill()
            -- its list of instances ("ha,main"), kept alive for the specs after
            server.sh("redis-cli -h " .. os.getenv("MMO_REDIS"):gsub(":", " -p ") ..
                      " DEL nodes:layout")
        end)
        local res = readyz(n)
        assert.equal(200, res.status, res.body)
        local inst = res.json.checks.redis.instances.ha
        assert.equal("ok", inst.status)
        assert.equal(primary_by(ha.sentinel_ports[1]), inst.addr)
        assert.equal(os.getenv("MMO_REDIS"), res.json.checks.redis.addr) -- home unchanged
    end)
end)
