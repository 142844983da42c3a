-- End-to-end: several Redis instances (docs/operations.md, "Several Redis instances"). tools/dev
-- test runs a second Redis and names it in MMO_REDIS_INSTANCES, so every spec runs with two;
-- here: each region's lease, the event stream and the bus and live channels are on the instance
-- their tag's hash names (checked against helpers/server.lua's own copy of the hash), the rest
-- stays on home; a pipeline spread over instances answers in order; a node is not ready while
-- an instance is down and is ready again when it is back.
local server = require "helpers.server"

local REGIONS = { "r1", "r2", "r3", "r4" }


-- the instances other than inst
local function others(inst)
    local out = {}
    for _, i in ipairs(server.redis_instances()) do
        if i.name ~= inst.name then
            out[#out + 1] = i
        end
    end
    return out
end


local function cli(inst, args)
    return server.sh("redis-cli -h " .. inst.host .. " -p " .. inst.port .. " " .. args)
end


-- subscribers of channel on inst, as Redis counts them
local function numsub(inst, channel)
    return tonumber(cli(inst, "PUBSUB NUMSUB " .. channel):match("\n(%d+)$"))
end


describe("several Redis instances", function()
    local node

    setup(function()
        assert.is_true(#server.redis_instances() >= 2,
                       "MMO_REDIS_INSTANCES names no second instance (run through tools/dev test)")
        -- what a node with another list of instances left where these nodes would not put it
        -- (sentinel_spec's has home and "ha"): the checks below are of this node's doing
        local stream = server.redis_at("stream:mmo:events")
        for _, o in ipairs(others(stream)) do
            cli(o, "DEL mmo:events")
        end
        for _, r in ipairs(REGIONS) do
            for _, o in ipairs(others(server.redis_at("region:" .. r))) do
                cli(o, "DEL region:owner:" .. r)
            end
        end
        node = server.start()
    end)

    teardown(function()
        if node then
            node:stop()
        end
    end)

    it("keeps each region's lease, the stream and the channels where the hash says", function()
        local spread = {}
        for _, r in ipairs(REGIONS) do
            local inst = server.redis_at("region:" .. r)
            spread[inst.name] = true
            assert.truthy(server.eventually(function()
                return cli(inst, "GET region:owner:" .. r):match("^spec%-node") ~= nil
            end, 10), "the lease of " .. r .. " on " .. inst.name)
            for _, o in ipairs(others(inst)) do
                assert.equal("0", cli(o, "EXISTS region:owner:" .. r), r .. " on " .. o.name)
            end
        end
        -- the regions are spread, not all on one (a check of the test set-up's names)
        assert.is_true(next(spread, next(spread)) ~= nil, "every region on one instance")

        -- the event stream and its group, made by the node as it starts
        local stream = server.redis_at("stream:mmo:events")
        assert.truthy(cli(stream, "XINFO GROUPS mmo:events"):find("workers", 1, true))
        for _, o in ipairs(others(stream)) do
            assert.equal("0", cli(o, "EXISTS mmo:events"), "the stream on " .. o.name)
        end

        -- the channels: the node subscribes where they are placed, and nowhere else
        for _, ch in ipairs({ "mmo:bus", "mmo:live" }) do
            local inst = server.redis_at("channel:" .. ch)
            assert.truthy(server.eventually(function() return numsub(inst, ch) >= 1 end, 5),
                          ch .. " on " .. inst.name)
            for _, o in ipairs(others(inst)) do
                assert.equal(0, numsub(o, ch), ch .. " also on " .. o.name)
            end
        end
        -- the sessions' presence and the live list stay on home
        local home = server.redis_instances()[1]
        assert.truthy(cli(home, "ZRANGE nodes:live 0 -1"):find("spec-node", 1, true))
    end)

    it("prints where things are placed in mmo config, as the nodes place them", function()
        local rc, out = server.run("config", {})
        assert.equal(0, rc, out)
        local n = 0
        for tag, name in out:gmatch('redis%.place%["([^"]+)"%] = "([^"]+)"') do
            assert.equal(server.redis_at(tag).name, name, tag)
            n = n + 1
        end
        assert.equal(12, n, out) -- the stream, two channels, regions r1-r9
    end)

    it("runs one pipeline over several instances and answers in order", function()
        -- two tags on different instances: one from each
        local by = {}
        for _, r in ipairs(REGIONS) do
            by[server.redis_at("region:" .. r).name] = by[server.redis_at("region:" .. r).name] or
                                                       "region:" .. r
        end
        local tags = {}
        for _, inst in ipairs(server.redis_instances()) do
            tags[#tags + 1] = by[inst.name]
        end
        assert.is_true(#tags >= 2, "the regions are all on one instance")
        local res = node:request("GET", "/test/cache/placed?tags=" .. table.concat(tags, ","))
        assert.equal(200, res.status, res.body)
        local j = res.json
        for i, tag in ipairs(tags) do
            local inst = server.redis_at(tag)
            assert.equal(inst.name, j.places[i], tag)
            assert.equal("OK", j.results[2 * i - 1])
            assert.equal(tag, j.results[2 * i])
            -- the key is where its tag is, not elsewhere
            assert.equal(tag, cli(inst, "GET " .. j.keys[i]))
            for _, o in ipairs(others(inst)) do
                assert.equal("", cli(o, "GET " .. j.keys[i]))
            end
        end
        assert.equal(server.redis_at(tags[1]).name, j.at_name)
        assert.equal(tags[1], j.via_at)
        assert.truthy(j.multi:find("must stay on one Redis instance", 1, true), j.multi)
        assert.truthy(j.bad:find("a tag string expected", 1, true), j.bad)
    end)

    it("keeps a node whose list of instances differs from the running nodes' out of the " ..
       "regions", function()
        -- a third instance (up: a second database of the home server would do, but a name is
        -- all it takes to place differently) on a node started beside the spec's node
        local home = server.redis_instances()[1]
        local env = { MMO_REDIS_INSTANCES = (os.getenv("MMO_REDIS_INSTANCES") or "") ..
                                            ",other=" .. home.host .. ":" .. home.port,
                      MMO_NODE_ID = "odd-node", MMO_WORLD_LEASE_MS = "3000" }
        local odd = server.start({ env = env, alone = true, ready = false })
        finally(function() odd:kill() end)
        assert.truthy(server.eventually(function()
            return odd:logs():find("redis.instances differ from the running nodes'", 1, true)
        end, 5), "no refusal in the odd node's log")
        -- and it is not ready: a load balancer sends it no player
        local res = odd:request("GET", "/readyz")
        assert.equal(503, res.status, res.body)
        assert.truthy(res.json.checks.redis.error:find(
            "redis.instances differ from the running nodes' (theirs: main,s2; this node's: " ..
            "main,other,s2)", 1, true), res.body)
        -- it holds no lease anywhere, and the spec's node still holds them all
        server.sleep(1)
        for _, r in ipairs(REGIONS) do
            local inst = server.redis_at("region:" .. r)
            local holder = cli(inst, "GET region:owner:" .. r)
            assert.truthy(holder:match("^spec%-node/"), r .. " held by " .. holder)
        end
        assert.falsy(cli(home, "ZRANGE nodes:live 0 -1"):find("odd-node", 1, true))
    end)

    it("is not ready while an instance is down, keeps the regions of the others, and is ready " ..
       "again when it is back", function()
        -- this node alone in the world: the spec's node gives its leases back, and the list
        -- of instances changes with no node running, as an operator changes it
        node:stop()
        node = nil
        cli(server.redis_instances()[1], "DEL nodes:layout")
        local port = server.free_port()
        local dir = server.tmpdir()
        local extra = { name = "spec-x", host = "127.0.0.1", port = tostring(port) }
        local list = server.redis_instances()
        list[#list + 1] = extra
        local env = { MMO_REDIS_INSTANCES = (os.getenv("MMO_REDIS_INSTANCES") or "") ..
                                            ",spec-x=127.0.0.1:" .. port,
                      MMO_REDIS_RECONNECT_MAX_MS = "300", MMO_NODE_ID = "spec-x-node" }
        local n2 = server.start({ env = env, ready = false, alone = true })
        finally(function()
            n2:kill()
            cli(extra, "SHUTDOWN NOSAVE")
            -- its list of instances, kept alive for the specs after (they have tools/dev's)
            cli(server.redis_instances()[1], "DEL nodes:layout")
        end)
        local function ready()
            local res = n2:request("GET", "/readyz")
            return res.status, res.json and res.json.checks.redis.instances
        end
        -- who holds region r's lease, on the instance it is placed on with spec-x ("" none)
        local function holder(r)
            local inst = server.redis_at("region:" .. r, list)
            return inst, inst == extra and "" or cli(inst, "GET region:owner:" .. r)
        end
        local status, inst = ready()
        assert.equal(503, status)
        assert.equal("down", inst["spec-x"].status)
        assert.truthy(inst["spec-x"].error)
        assert.equal("127.0.0.1:" .. port, inst["spec-x"].addr)
        -- the regions on the instances that answer are taken and kept; those on spec-x wait
        local on_x = {}
        for _, r in ipairs(REGIONS) do
            local where = holder(r)
            if where == extra then
                on_x[#on_x + 1] = r
            else
                assert.truthy(server.eventually(function()
                    return select(2, holder(r)):match("^spec%-x%-node/") ~= nil
                end, 10), r .. " not taken while spec-x is down")
            end
        end
        assert.is_true(#on_x >= 1 and #on_x < #REGIONS, "regions on spec-x: " .. #on_x)

        server.sh("redis-server --port " .. port .. " --bind 127.0.0.1 --daemonize yes --dir " ..
                  dir .. " --save '' --appendonly no --logfile " .. dir .. "/redis.log")
        assert.truthy(server.eventually(function() return ready() == 200 end, 10),
                      "ready once spec-x is up")
        inst = select(2, ready())
        assert.equal("ok", inst["spec-x"].status)
        for _, r in ipairs(on_x) do
            assert.truthy(server.eventually(function()
                return cli(extra, "GET region:owner:" .. r):match("^spec%-x%-node/") ~= nil
            end, 10), r .. " not taken on spec-x once it is up")
        end
        local metrics = n2:request("GET", "/metrics").body
        assert.truthy(metrics:find('mmo_redis_instance_up{redis="spec-x"} 1', 1, true), metrics)
        cli(extra, "SHUTDOWN NOSAVE")
        assert.truthy(server.eventually(function() return ready() == 503 end, 5),
                      "not ready once spec-x is gone")
    end)
end)
