-- End-to-end: the game event pipeline (API.md "Game events (pipeline)"). Ingest over HTTP and
-- WebSocket with every hostile case; effects exactly once; a handler that always fails ends
-- in the dead letters without stopping the others; Redis going away gives 503, never a 202 for
-- a lost event; and the guarantee: 20,000 events with duplicates, the node killed with -9 while
-- it consumes, started again: every accepted event had its effect once.
local server = require "helpers.server"
local letters = server.letters
local psql = server.psql
local ws = require "helpers.ws"

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")
local PG = os.getenv("MMO_PG")

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


-- A copy of a script with some of its constants changed, in a scripts dir searched first.
local function patched(dir, path, changes)
    local f = assert(io.open(server.ROOT .. "/scripts/" .. path))
    local text = f:read("*a")
    f:close()
    for pattern, value in pairs(changes) do
        local n
        text, n = text:gsub(pattern, value)
        assert(n == 1, pattern)
    end
    server.write(dir .. "/" .. path, text)
end


describe("game events", function()
    local node, admin

    local function login_admin()
        return server.admin_token(node)
    end

    local function bots(n)
        local res = node:request("POST", "/api/admin/bots", { token = admin,
            body = { count = n, prefix = "v" .. letters(4), region = "r1", spread = 100 } })
        assert.equal(200, res.status, res.body)
        return res.json.bots
    end

    local function send(token, events)
        return node:request("POST", "/api/events", { token = token, body = { events = events } })
    end

    local function queues()
        local res = node:request("GET", "/api/admin/queues", { token = admin })
        assert.equal(200, res.status, res.body)
        return res.json
    end

    local function drained()
        local q = queues()
        return q.group.lag == 0 and q.group.pending == 0
    end

    local function xp(pid)
        return tonumber(psql("select xp from players where id = " .. pid))
    end

    local function qty(pid, item)
        return tonumber(psql("select coalesce(sum(qty), 0) from inventory where player_id = " ..
                             pid .. " and item = '" .. item .. "'"))
    end

    local function kill(id, pid, level)
        return { id = id, type = "kill", player_id = pid, ts = os.time(),
                 data = { monster = "wolf", level = level } }
    end

    -- the node started again without the worker role (it takes events in, consumes none)
    local function ingest_only()
        node:stop()
        node = server.start { env = { MMO_PIPELINE_WORKER = "0" } }
        admin = login_admin()
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD and PG, "MMO_ADMIN_PASSWORD and MMO_PG (tools/dev test)")
        node = server.start()
        admin = login_admin()
    end)

    teardown(function()
        if node then
            node:stop()
        end
    end)

    it("refuses bad batches whole, and bad events one by one, with the index and a code", function()
        local b = bots(2)
        local me, other = b[1], b[2]
        local res = send(me.token, {})
        assert.equal(422, res.status)
        local many = {}
        for i = 1, 1001 do
            many[i] = kill("m" .. i, me.player_id, 1)
        end
        res = send(me.token, many)
        assert.equal(413, res.status, res.body)
        assert.equal("too_many_events", res.json.error.code)
        assert.equal(422, node:request("POST", "/api/events", { token = me.token,
                     body = { events = "all of them" } }).status)
        assert.equal(401, node:request("POST", "/api/events",
                     { body = { events = { kill("x", me.player_id, 1) } } }).status)

        local id = "bad-" .. letters(8)
        res = send(me.token, {
            kill(id .. "-ok", me.player_id, 3),                                       -- 0
            { id = id .. "-1", type = "dance", player_id = me.player_id, ts = os.time(),
              data = {} },                                                            -- 1
            { id = id .. "-2", type = "kill", player_id = me.player_id, ts = os.time(),
              data = { monster = "wolf" } },                                          -- 2
            { id = id .. "-3", type = "kill", player_id = me.player_id, ts = os.time(),
              data = { monster = "wolf", level = "high" } },                          -- 3
            { id = id .. "-4", type = "kill", player_id = me.player_id,
              ts = os.time() + 86400, data = { monster = "wolf", level = 1 } },       -- 4
            { id = id .. "-5", type = "kill", player_id = me.player_id, ts = os.time(),
              data = { monster = string.rep("w", 2000), level = 1 } },                -- 5
            kill(id .. "-6", other.player_id, 60),                                    -- 6
            { type = "kill", player_id = me.player_id, ts = os.time(),
              data = { monster = "wolf", level = 1 } },                               -- 7
            "not an event",                                                           -- 8
            { id = id .. "-9", type = "kill", player_id = me.player_id, ts = os.time(),
              data = { monster = "wolf", level = 1, xp = 1e9 } },                     -- 9
        })
        assert.equal(202, res.status, res.body)
        assert.equal(1, res.json.accepted)
        local codes = {}
        for _, r in ipairs(res.json.rejected) do
            codes[r.index] = r.code
            assert.is_string(r.message)
        end
        assert.same({ [1] = "unknown_type", [2] = "invalid_event", [3] = "invalid_event",
                      [4] = "bad_timestamp", [5] = "too_large", [6] = "forbidden",
                      [7] = "invalid_event", [8] = "invalid_event", [9] = "invalid_event" },
                    codes)
        -- only the good one had an effect; the other account's player got nothing
        local before = xp(other.player_id)
        assert.truthy(server.eventually(function() return xp(me.player_id) == 30 end, 10))
        assert.equal(before, xp(other.player_id))
    end)

    it("gives each event its effect once, however often it is sent", function()
        local me = bots(1)[1]
        local id = "once-" .. letters(8)
        local events = { kill(id .. "-a", me.player_id, 5), kill(id .. "-b", me.player_id, 7),
                         { id = id .. "-c", type = "loot", player_id = me.player_id,
                           ts = os.time(), data = { item = "potion_small", qty = 3 } } }
        events[#events + 1] = { id = id .. "-q3", type = "quest_step", player_id = me.player_id,
                                ts = os.time(), data = { quest = "wolves", step = 3 } }
        events[#events + 1] = { id = id .. "-q2", type = "quest_step", player_id = me.player_id,
                                ts = os.time(), data = { quest = "wolves", step = 2 } }
        for _ = 1, 3 do
            assert.equal(5, send(me.token, events).json.accepted)
        end
        assert.truthy(server.eventually(drained, 15))
        assert.equal(120, xp(me.player_id))
        assert.equal(3, qty(me.player_id, "potion_small"))
        -- a quest goes forward only: step 2 reported after step 3 leaves it at 3
        assert.equal("3", psql("select step from player_quests where player_id = " ..
                               me.player_id .. " and quest = 'wolves'"))
        -- and the player document says so (the cache was told)
        local doc = node:request("GET", "/api/players/" .. me.player_id, { token = me.token })
        assert.equal(120, doc.json.xp)
        local q = queues()
        assert.is_true(q.node.duplicates >= 6)
        assert.is_true(q.node.by_type.kill.processed >= 2)
    end)

    it("takes events over WebSocket too, and answers the bad ones with an error", function()
        local me = bots(1)[1]
        local c = assert(ws.connect(node, me.token))
        c:send({ t = "join", player_id = me.player_id })
        assert.is_table(c:expect("welcome", 3))
        local id = "ws-" .. letters(8)
        c:send({ t = "event", id = id, type = "kill", data = { monster = "bat", level = 2 } })
        c:send({ t = "event", id = id .. "-x", type = "kill", data = { monster = "bat" } })
        local e = c:expect("error", 3)
        assert.equal("invalid_event", e.code)
        c:send({ t = "event", id = id .. "-y", type = "fly", data = {} })
        assert.equal("unknown_type", c:expect("error", 3).code)
        c:close()
        assert.truthy(server.eventually(function() return xp(me.player_id) == 20 end, 10))
    end)

    it("answers 503, never 202, while Redis is away, and takes the batch again after", function()
        local me = bots(1)[1]
        server.service("redis", "stop")
        local ok, err = pcall(function()
            local res = send(me.token, { kill("away-" .. letters(8), me.player_id, 1) })
            assert.equal(503, res.status, res.body)
            assert.equal("unavailable", res.json.error.code)
        end)
        server.service("redis", "start")
        assert(ok, err)
        local id = "back-" .. letters(8)
        assert.truthy(server.eventually(function()
            local res = send(me.token, { kill(id, me.player_id, 4) })
            return res.status == 202 and res.json.accepted == 1
        end, 15))
        assert.truthy(server.eventually(function() return xp(me.player_id) == 40 end, 15))
    end)

    it("puts an event whose job always fails among the dead letters; the others flow", function()
        -- retries claimed every half second instead of 30 s
        local dir = server.tmpdir()
        patched(dir, "lib/pipeline.lua", { ["_M%.CLAIM_IDLE_MS = %d+"] = "_M.CLAIM_IDLE_MS = 300",
                                           ["_M%.CLAIM_EVERY = %d+"] = "_M.CLAIM_EVERY = 0.5" })
        node:stop()
        node = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                        server.ROOT .. "/scripts" }
        admin = login_admin()
        local me = bots(1)[1]
        local id = "dead-" .. letters(8)
        local dead_before = queues().dead_letters
        local res = send(me.token, {
            { id = id, type = "loot", player_id = me.player_id, ts = os.time(),
              data = { item = "no_such_item", qty = 1 } },
            kill(id .. "-fine", me.player_id, 9),
        })
        assert.equal(2, res.json.accepted)
        assert.truthy(server.eventually(function() return xp(me.player_id) == 90 end, 10))
        assert.truthy(server.eventually(function()
            return queues().dead_letters >= dead_before + 1
        end, 20), "the failing event did not reach the dead letters")
        assert.truthy(server.eventually(drained, 10))
        assert.equal(0, qty(me.player_id, "no_such_item"))
        -- the two came as one stream entry, delivered five times for the failing one: the
        -- good one had its effect once all the same
        assert.equal(90, xp(me.player_id))
        -- an operator reads it, adds the item, requeues it: it has its effect, once
        local res2 = node:request("GET", "/api/admin/queues/dead?limit=1000", { token = admin })
        assert.equal(200, res2.status, res2.body)
        local letter
        for _, l in ipairs(res2.json.dead) do
            if type(l.event) == "table" and l.event.id == id then
                letter = l
            end
        end
        assert.is_table(letter, "the dead letter is not listed")
        assert.truthy(letter.error:find("no_such_item", 1, true), letter.error)
        assert.equal(5, letter.tries)
        assert.equal(403, node:request("POST", "/api/admin/queues/dead/" .. letter.id .. "/requeue",
                                       { token = me.token }).status)
        assert.equal(404, node:request("POST", "/api/admin/queues/dead/1-1/requeue",
                                       { token = admin }).status)
        assert.equal(404, node:request("DELETE", "/api/admin/queues/dead/nope",
                                       { token = admin }).status)
        psql("insert into items (id, name, kind, stack) values ('no_such_item', 'Was Missing', " ..
             "'material', 99) on conflict do nothing")
        res2 = node:request("POST", "/api/admin/queues/dead/" .. letter.id .. "/requeue",
                            { token = admin })
        assert.equal(200, res2.status, res2.body)
        assert.truthy(server.eventually(function()
            return qty(me.player_id, "no_such_item") == 1
        end, 20), "the requeued event had no effect")
        -- the same event sent again by the client: no second effect
        send(me.token, { { id = id, type = "loot", player_id = me.player_id, ts = os.time(),
                           data = { item = "no_such_item", qty = 1 } } })
        assert.truthy(server.eventually(drained, 10))
        assert.equal(1, qty(me.player_id, "no_such_item"))
        psql("delete from inventory where item = 'no_such_item'")
        psql("delete from items where id = 'no_such_item'")
        server.rm_rf(dir)
    end)

    it("lets an operator list, requeue and drop dead letters from the command line", function()
        local function mmo(args)
            local p = io.popen(server.BIN .. " queue " .. args .. " 2>&1; echo \"rc=$?\"")
            local out = p:read("*a")
            p:close()
            return tonumber(out:match("rc=(%d+)%s*$")), out
        end
        local rc, out = mmo("stats")
        assert.equal(0, rc, out)
        assert.truthy(out:find("stream mmo:events", 1, true), out)
        assert.truthy(out:find("name=workers", 1, true), out)
        rc, out = mmo("dead --limit 5")
        assert.equal(0, rc, out)
        rc, out = mmo("show 1-1")
        assert.equal(1, rc, out)
        rc, out = mmo("requeue")
        assert.equal(2, rc, out)
        rc, out = mmo("frobnicate")
        assert.equal(2, rc, out)
        -- a letter made by hand, dropped by id
        local lid = server.rcli_at("stream:mmo:events",
                                   "XADD mmo:events:dead '*' entry 0-1 e '' error spec tries 5")
        rc, out = mmo("show " .. lid)
        assert.equal(0, rc, out)
        assert.truthy(out:find("error: spec", 1, true), out)
        rc, out = mmo("requeue " .. lid)
        assert.equal(1, rc, out) -- it holds no event
        rc, out = mmo("drop " .. lid)
        assert.equal(0, rc, out)
        rc = mmo("show " .. lid)
        assert.equal(1, rc)
    end)

    it("has every effect exactly once after a kill -9 in the middle of consuming", function()
        -- a slow consumer first (small batches), so that the kill finds it mid-way
        local dir = server.tmpdir()
        patched(dir, "lib/pipeline.lua", { ["_M%.BATCH = %d+"] = "_M.BATCH = 25",
                                           ["_M%.BUDGET_S = [%d%.]+"] = "_M.BUDGET_S = 0.01" })
        node:stop()
        node = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                        server.ROOT .. "/scripts" }
        admin = login_admin()
        local b = bots(4)
        local items = { "potion_small", "potion_large", "elixir_mana" }
        local want_xp, want_items = {}, {}
        for i = 1, 4 do
            want_xp[i], want_items[i] = xp(b[i].player_id), {}
            for _, it in ipairs(items) do
                want_items[i][it] = qty(b[i].player_id, it)
            end
        end
        local run = letters(8)
        local sent, accepted, unique = 0, 0, 0
        for batch = 1, 20 do
            local who = (batch - 1) % 4 + 1
            local p = b[who]
            local events = {}
            for k = 1, 1000 do
                local n = (batch - 1) * 1000 + k
                local e
                if n % 3 == 0 then
                    local it = items[n % #items + 1]
                    e = { id = run .. "-" .. n, type = "loot", player_id = p.player_id,
                          ts = os.time(), data = { item = it, qty = n % 10 + 1 } }
                else
                    e = kill(run .. "-" .. n, p.player_id, n % 60 + 1)
                end
                -- one in ten is a duplicate of an earlier event of the same player
                if k > 1 and math.random() < 0.1 then
                    e = events[math.random(1, k - 1)]
                else
                    unique = unique + 1
                    if e.type == "kill" then
                        want_xp[who] = want_xp[who] + 10 * e.data.level
                    else
                        want_items[who][e.data.item] = want_items[who][e.data.item] + e.data.qty
                    end
                end
                events[k] = e
            end
            local res = send(p.token, events)
            assert.equal(202, res.status, res.body)
            assert.equal(1000, res.json.accepted)
            sent, accepted = sent + 1000, accepted + res.json.accepted
        end
        assert.equal(20000, accepted)
        -- wait until it is consuming, then kill it mid-way (entries read and not yet written
        -- are pending: a request's 1,000 events are one entry, and a read takes several)
        assert.truthy(server.eventually(function()
            local q = queues()
            return q.node.processed > 0 and q.group.lag + q.group.pending > 0
        end, 20))
        local q = queues()
        assert.is_true(q.group.lag + q.group.pending > 0, "nothing left to consume at the kill")
        node:kill()
        -- the same node again, at full speed: what it had read and not acknowledged first
        server.rm_rf(dir)
        node = server.start()
        admin = login_admin()
        assert.truthy(server.eventually(drained, 120), "the stream was not drained")
        for i = 1, 4 do
            assert.equal(want_xp[i], xp(b[i].player_id), "xp of bot " .. i)
            for _, it in ipairs(items) do
                assert.equal(want_items[i][it], qty(b[i].player_id, it), it .. " of bot " .. i)
            end
        end
        assert.equal(tostring(unique), psql("select count(*) from processed_events where id " ..
                                            "like '" .. run .. "-%'"))
        assert.equal(0, queues().group.pending)
        -- and the stream keeps no more than what is left to do: the acknowledged head goes
        assert.truthy(server.eventually(function()
            return queues().stream.length < 1000
        end, 20), "the stream was not trimmed")
        assert.equal(0, queues().group.lag)
    end)

    it("is only taken in, not consumed, by a node without the worker role", function()
        ingest_only()
        local me = bots(1)[1]
        assert.equal(1, send(me.token, { kill("front-" .. letters(8), me.player_id, 6) })
                         .json.accepted)
        server.sleep(1.5)
        assert.equal(0, xp(me.player_id))
        assert.is_true(queues().group.lag >= 1)
        -- a worker comes: it is consumed
        local worker = server.start { env = { MMO_NODE_ID = "spec-worker" } }
        local ok = server.eventually(function() return xp(me.player_id) == 60 end, 10)
        worker:stop()
        assert.truthy(ok, "the worker did not consume it")
    end)

    it("writes a backlog of large entries in batches of about BATCH events, whole entries each",
       function()
        ingest_only()
        local me = bots(1)[1]
        local run = "chunk-" .. letters(8)
        for i = 1, 10 do -- single events: an entry each
            assert.equal(202, send(me.token, { kill(run .. "-s" .. i, me.player_id, 1) }).status)
        end
        for r = 1, 20 do -- then requests of 100: an entry of 100 events each
            local events = {}
            for i = 1, 100 do
                events[i] = kill(run .. "-" .. r .. "-" .. i, me.player_id, 1)
            end
            assert.equal(202, send(me.token, events).status)
        end
        -- a worker with batches of 300 events: its first read (3 entries: 100 events each
        -- before it knows better) finds one event per entry, so its second takes 300 entries,
        -- 7 singles and the 20 hundreds (2,007 events): written in 7 batches, not one
        local dir = server.tmpdir()
        patched(dir, "lib/pipeline.lua", { ["_M%.BATCH = %d+"] = "_M.BATCH = 300" })
        local worker = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                                server.ROOT .. "/scripts",
                                      env = { MMO_NODE_ID = "spec-chunk" } }
        local ok = server.eventually(function() return xp(me.player_id) == 2010 * 10 end, 30)
        local res = worker:request("GET", "/api/admin/queues", { token = admin })
        worker:stop()
        server.rm_rf(dir)
        assert.truthy(ok, "the backlog was not written: xp " .. tostring(xp(me.player_id)))
        assert.equal(200, res.status, res.body)
        assert.equal(2010, res.json.node.processed)
        assert.is_true(res.json.node.batches >= 8, "batches: " .. res.json.node.batches)
        assert.equal("2010", psql("select count(*) from processed_events where id like '" ..
                                  run .. "-%'"))
        -- the level the batches wrote (in SQL, from the rule's thresholds) is the rule's
        local rule = require "rules.player"
        assert.equal(rule.level_for_xp(20100),
                     tonumber(psql("select level from players where id = " .. me.player_id)))
    end)

    it("reports no lag when nothing is left to read, whatever Redis 7.0 says after a trim",
       function()
        ingest_only()
        local function rcli(args) -- on the stream's instance
            return server.rcli_at("stream:mmo:events", args) .. "\n"
        end
        -- redis/redis#13957: a read after a trim leaves the group's entries-read wrong, and
        -- Redis 7.0 then reports a lag that never falls
        rcli("DEL mmo:events")
        for i = 1, 5 do
            rcli("XADD mmo:events '*' spec " .. i)
        end
        rcli("XGROUP CREATE mmo:events workers 0")
        rcli("XREADGROUP GROUP workers spec-lag COUNT 1 STREAMS mmo:events '>'")
        rcli("XTRIM mmo:events MAXLEN 1")
        rcli("XREADGROUP GROUP workers spec-lag COUNT 1 STREAMS mmo:events '>'")
        local said = tonumber(rcli("XINFO GROUPS mmo:events"):match("\nlag\n(%d+)"))
        local q = queues()
        assert.equal(0, q.group.lag, "Redis said " .. tostring(said))
        -- one entry more: a lag of one, not Redis' count
        rcli("XADD mmo:events '*' spec 6")
        q = queues()
        assert.equal(1, math.min(q.group.lag, 1))
        assert.is_true(q.group.lag <= q.stream.length, "lag " .. q.group.lag)
        -- the stream and its group as the node makes them
        rcli("DEL mmo:events")
        rcli("XGROUP CREATE mmo:events workers 0 MKSTREAM")
    end)

    it("answers 503 to new events while the workers are too far behind, and takes them after", function()
        local dir = server.tmpdir()
        patched(dir, "lib/pipeline.lua", { ["_M%.MAX_LAG = %d+"] = "_M.MAX_LAG = 3" })
        node:stop()
        node = server.start { scripts = dir .. ";" .. server.ROOT .. "/spec/e2e/scripts;" ..
                                        server.ROOT .. "/scripts",
                              env = { MMO_PIPELINE_WORKER = "0" } }
        admin = login_admin()
        local me = bots(1)[1]
        local function batch(n)
            local events = {}
            for i = 1, n do
                events[i] = kill("lag-" .. letters(8), me.player_id, 1)
            end
            return send(me.token, events)
        end
        -- nobody consumes: the lag grows past MAX_LAG (the node looks at it once a second)
        assert.truthy(server.eventually(function()
            local res = batch(2)
            return res.status == 503
        end, 15), "the ingest never said busy")
        local res = batch(1)
        assert.equal(503, res.status, res.body)
        local lag = queues().group.lag -- in entries, of two events each (batch(2))
        assert.is_true(2 * lag > 3, "lag " .. tostring(lag))
        -- a worker catches up: events are taken again
        local worker = server.start { env = { MMO_NODE_ID = "spec-worker-2" } }
        local ok = server.eventually(function() return batch(1).status == 202 end, 20)
        worker:stop()
        server.rm_rf(dir)
        assert.truthy(ok, "the ingest did not open again")
    end)
end)
