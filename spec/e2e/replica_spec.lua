-- End-to-end: read-only queries on a streaming replica (docs/operations.md, "A streaming
-- replica for reads"). tools/dev test makes a streaming replica of the main server
-- (pg_basebackup -R) and exports its conninfo as MMO_TEST_PG_REPLICA; only the nodes of this
-- spec are told of it (postgres.replica_conninfo). db.read goes to the replica while it is up,
-- else to the primary; GET /api/players (the moderators' listing) reads with db.read.
-- Proofs: the replica says it is in recovery where db.read ran; with no bound on its lag
-- (postgres.replica_max_lag_ms = 0) and the replica's replay paused, a new player is in the
-- primary and not in the listing; the replica stopped or hung (SIGSTOP), every read is still
-- answered, from the primary, within the query timeout. With a bound (1 s here): reads stay on
-- the replica while the primary is idle; replay paused, a write is in the listing (read from
-- the primary) within the bound plus a probe period, and mmo_db_replica_fresh says 0; replay
-- resumed, reads go back to the replica.
local server = require "helpers.server"

local PG = os.getenv("MMO_PG")
local REPLICA = os.getenv("MMO_TEST_PG_REPLICA")
local STATE = os.getenv("MMO_DEV_STATE")
local PASSWORD = "correct horse battery staple"

math.randomseed(os.time() + math.floor(os.clock() * 1e6))

local psql = server.psql


local function metric(node, db, result)
    local m = node:request("GET", "/metrics").body
    local v = m:match('\nmmo_db_queries_total{db="' .. db .. '",result="' .. result .. '"} (%S+)')
    return tonumber(v) or 0
end


-- a gauge labelled db="<db>", or nil when it has no such series
local function gauge(node, name, db)
    local m = node:request("GET", "/metrics").body
    return tonumber(m:match("\n" .. name .. '{db="' .. db .. '"} (%S+)'))
end


-- the pids of the replica: its postmaster and every child of it
local function replica_pids()
    local f = assert(io.open(STATE .. "/replica/data/postmaster.pid"))
    local pm = f:read("*l"):match("^(%d+)")
    f:close()
    local pids = { pm }
    for pid in server.sh("ps -o pid= --ppid " .. pm):gmatch("%d+") do
        pids[#pids + 1] = pid
    end
    return pids
end


describe("a streaming replica for reads", function()
    local node, admin, me
    -- a node reads from the replica, with no bound on its lag (what it was before
    -- postgres.replica_max_lag_ms); short timeouts so that the hostile cases end soon
    local ENV = {
        MMO_POSTGRES_REPLICA_CONNINFO = REPLICA,
        MMO_POSTGRES_REPLICA_MAX_LAG_MS = "0",
        MMO_POSTGRES_QUERY_TIMEOUT_MS = "1500",
        MMO_POSTGRES_CONNECT_TIMEOUT_MS = "1000",
        MMO_POSTGRES_RECONNECT_MAX_MS = "500",
        MMO_POSTGRES_POOL_SIZE = "2",
    }

    local function new_player(region)
        local res = node:request("POST", "/api/players", { token = me.token,
            body = { name = "R" .. server.letters(10), class = "mage", region = region } })
        assert.equal(201, res.status, res.body)
        return res.json
    end

    -- GET /api/players?name=: the ids it lists, its status, and how long it took
    local function listed(name)
        local t0 = server.now()
        local res = node:request("GET", "/api/players?name=" .. name, { token = admin.token })
        local took = server.now() - t0
        assert.equal(200, res.status, res.body)
        local ids = {}
        for _, p in ipairs(res.json.players) do
            ids[#ids + 1] = p.id
        end
        return ids, took
    end

    local function where_read()
        local res = node:request("GET", "/test/db/read")
        assert.equal(200, res.status, res.body)
        return res.json
    end

    setup(function()
        assert.truthy(REPLICA and PG and STATE, "tools/dev test exports MMO_TEST_PG_REPLICA")
        node = server.start({ env = ENV })
        admin = { token = server.admin_token(node) }
    end)

    -- a fresh account for every test: an account has at most 10 players
    before_each(function()
        local name = "rep" .. server.letters(8)
        node:request("POST", "/api/auth/register", { body = { username = name, password = PASSWORD } })
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = name, password = PASSWORD } })
        assert.equal(200, res.status, res.body)
        me = { token = res.json.access_token }
    end)

    teardown(function()
        os.execute("kill -CONT " .. table.concat(replica_pids(), " ") .. " 2>/dev/null")
        psql("select pg_wal_replay_resume()", REPLICA)
        if node then
            assert.equal(0, node:stop())
        end
    end)

    it("is a standby streaming from the primary", function()
        assert.equal("t", psql("select pg_is_in_recovery()", REPLICA))
        assert.equal("f", psql("select pg_is_in_recovery()", PG))
        assert.equal("streaming", psql("select state from pg_stat_replication", PG))
    end)

    it("runs db.read on the replica, and refuses what is not a read", function()
        local r = where_read()
        assert.is_true(r.replica, "db.read ran on the primary")
        assert.is_false(r.shard1_replica, "shard 1 has no replica here: its primary answers")
        for i = 1, 3 do
            assert.truthy(r.refused[i]:find("a query that only reads", 1, true), r.refused[i])
        end
        assert.truthy(r.refused[4]:find("string expected, got number", 1, true), r.refused[4])
        local before = metric(node, "main_replica", "ok")
        listed("x")
        assert.truthy(metric(node, "main_replica", "ok") > before, "the listing ran on the replica")
    end)

    it("lists what the replica has: with its replay paused, a new player waits for it", function()
        local p = new_player("r1")
        -- write, then read: the replica has it within a second (docs: milliseconds, unbounded)
        assert.truthy(server.eventually(function() return #listed(p.name) == 1 end, 5))
        assert.equal("", psql("select pg_wal_replay_pause()", REPLICA))
        local q = new_player("r2")
        assert.equal("1", psql("select count(*) from players where id = " .. q.id, PG))
        assert.same({}, (listed(q.name))) -- stale: the replica has not replayed it
        -- the player's own document is a read of the primary (through the cache): fresh
        assert.equal(200, node:request("GET", "/api/players/" .. q.id, { token = me.token }).status)
        psql("select pg_wal_replay_resume()", REPLICA)
        assert.truthy(server.eventually(function() return #listed(q.name) == 1 end, 5))
    end)

    it("measures the lag of write then read: under a second here", function()
        local worst = 0
        for _ = 1, 8 do
            local p = new_player("r1")
            local t0 = server.now()
            assert.truthy(server.eventually(function() return #listed(p.name) == 1 end, 5))
            worst = math.max(worst, server.now() - t0)
        end
        assert.truthy(worst < 1, "a write took " .. worst .. " s to reach the listing")
    end)

    it("falls back to the primary at once when the replica is stopped, and returns to it", function()
        local p = new_player("r1")
        server.service("replica", "stop")
        local ok, err = pcall(function()
            local q = new_player("r2") -- written while the replica is away: the primary has it
            for _ = 1, 5 do
                local ids, took = listed(q.name)
                assert.same({ q.id }, ids)
                assert.truthy(took < 1, "a read took " .. took .. " s")
            end
            assert.is_false(where_read().replica)
            assert.same({ p.id }, (listed(p.name)))
        end)
        server.service("replica", "start")
        assert(ok, err)
        -- the pool reconnects (backoff at most 0.5 s here): reads go to the replica again
        assert.truthy(server.eventually(function() return where_read().replica end, 10))
    end)

    it("answers from the primary within the query timeout when the replica hangs", function()
        local p = new_player("r1")
        assert.truthy(server.eventually(function() return #listed(p.name) == 1 end, 5))
        local pids = replica_pids()
        os.execute("kill -STOP " .. table.concat(pids, " "))
        local ok, err = pcall(function()
            local worst = 0
            for _ = 1, 6 do
                local ids, took = listed(p.name)
                assert.same({ p.id }, ids)
                worst = math.max(worst, took)
            end
            -- a read waits the replica's 1.5 s at most, then the primary answers
            assert.truthy(worst < 3.5, "a read took " .. worst .. " s")
            -- once the hung connections are closed and new ones time out, straight to the
            -- primary
            assert.truthy(server.eventually(function()
                local _, took = listed(p.name)
                return took < 0.5
            end, 10))
        end)
        os.execute("kill -CONT " .. table.concat(pids, " "))
        assert(ok, err)
        assert.truthy(server.eventually(function() return where_read().replica end, 10))
    end)

    it("reads from the primary when the replica was never there", function()
        local other = server.start({ env = {
            MMO_POSTGRES_REPLICA_CONNINFO = "host=127.0.0.1 port=" .. server.free_port() ..
                                            " dbname=mmo_test user=postgres",
            MMO_POSTGRES_CONNECT_TIMEOUT_MS = "1000",
        } })
        local ok, err = pcall(function()
            local t0 = server.now()
            local res = other:request("GET", "/test/db/read")
            assert.equal(200, res.status, res.body)
            assert.is_false(res.json.replica)
            res = other:request("GET", "/api/players?limit=1", { token = admin.token })
            assert.equal(200, res.status, res.body)
            assert.truthy(server.now() - t0 < 3, "took " .. (server.now() - t0) .. " s")
            assert.equal(200, other:request("GET", "/readyz").status)
        end)
        assert.equal(0, other:stop())
        assert(ok, err)
    end)
end)


describe("a bound on the replica's staleness (postgres.replica_max_lag_ms)", function()
    local node, admin, me
    local MAX_LAG = 1.0 -- s; probes every 250 ms
    local ENV = {
        MMO_POSTGRES_REPLICA_CONNINFO = REPLICA,
        MMO_POSTGRES_REPLICA_MAX_LAG_MS = tostring(math.floor(MAX_LAG * 1000)),
        MMO_POSTGRES_QUERY_TIMEOUT_MS = "1500",
        MMO_POSTGRES_CONNECT_TIMEOUT_MS = "1000",
        MMO_POSTGRES_RECONNECT_MAX_MS = "500",
        MMO_POSTGRES_POOL_SIZE = "2",
    }

    local function listed(name)
        local res = node:request("GET", "/api/players?name=" .. name, { token = admin.token })
        assert.equal(200, res.status, res.body)
        local ids = {}
        for _, p in ipairs(res.json.players) do
            ids[#ids + 1] = p.id
        end
        return ids
    end

    local function on_replica()
        local res = node:request("GET", "/test/db/read")
        assert.equal(200, res.status, res.body)
        return res.json.replica
    end

    local function logged(level, text)
        for _, e in ipairs(node:log_entries()) do
            if e.tag == "replica" and e.level == level and e.msg:find(text, 1, true) then
                return true
            end
        end
        return false
    end

    setup(function()
        assert.truthy(REPLICA and PG and STATE, "tools/dev test exports MMO_TEST_PG_REPLICA")
        node = server.start({ env = ENV })
        admin = { token = server.admin_token(node) }
        local name = "lag" .. server.letters(8)
        local account = { body = { username = name, password = PASSWORD } }
        node:request("POST", "/api/auth/register", account)
        local res = node:request("POST", "/api/auth/login", account)
        assert.equal(200, res.status, res.body)
        me = { token = res.json.access_token }
    end)

    teardown(function()
        psql("select pg_wal_replay_resume()", REPLICA)
        if node then
            assert.equal(0, node:stop())
        end
    end)

    it("reads from a fresh replica, and stays there while the primary is idle", function()
        assert.truthy(server.eventually(function() return on_replica() end, 5),
                      "db.read never went to the replica")
        assert.equal(1, gauge(node, "mmo_db_replica_fresh", "main"))
        assert.truthy(gauge(node, "mmo_db_replica_lag_bytes", "main") >= 0)
        assert.truthy(logged("info", "replica of main is fresh"))
        -- nothing written for longer than the bound: the replica has it all, it stays fresh
        local t0 = server.now()
        while server.now() - t0 < 2.5 * MAX_LAG do
            assert.is_true(on_replica(), "left the replica of an idle primary")
            server.sleep(0.2)
        end
    end)

    it("reads from the primary once the replica lags past the bound, and back once it catches up",
       function()
        assert.truthy(server.eventually(function() return on_replica() end, 5))
        assert.equal("", psql("select pg_wal_replay_pause()", REPLICA))
        local ok, err = pcall(function()
            local res = node:request("POST", "/api/players", { token = me.token,
                body = { name = "L" .. server.letters(10), class = "mage", region = "r1" } })
            assert.equal(201, res.status, res.body)
            local q, t0 = res.json, server.now()
            assert.equal("1", psql("select count(*) from players where id = " .. q.id, PG))
            -- the bound and a probe period (the primary's insert position covers the commit
            -- at once, even with synchronous_commit = off as here)
            assert.truthy(server.eventually(function() return #listed(q.name) == 1 end, 6),
                          "the listing never showed the new player")
            local took = server.now() - t0
            print(string.format("# replica behind: the new player listed from the primary " ..
                                "%.2f s after its 201 (bound %.1f s)", took, MAX_LAG))
            assert.truthy(took < MAX_LAG + 0.25 + 1,
                          "the primary took over after " .. took .. " s")
            -- from then on, every read is the primary's while the replica stays behind
            for _ = 1, 5 do
                assert.same({ q.id }, listed(q.name))
                assert.is_false(on_replica())
                server.sleep(0.1)
            end
            assert.equal(0, gauge(node, "mmo_db_replica_fresh", "main"))
            assert.truthy(gauge(node, "mmo_db_replica_lag_bytes", "main") > 0)
            assert.equal("t", psql("select pg_is_in_recovery()", REPLICA)) -- up, only behind
            assert.equal(0, #psql("select id from players where id = " .. q.id, REPLICA))
            assert.truthy(server.eventually(function()
                return logged("warn", "replica of main is stale")
            end, 2))
        end)
        psql("select pg_wal_replay_resume()", REPLICA)
        assert(ok, err)
        assert.truthy(server.eventually(function() return on_replica() end, 5),
                      "db.read did not go back to the replica")
        assert.equal(1, gauge(node, "mmo_db_replica_fresh", "main"))
        assert.truthy(server.eventually(function()
            return logged("info", "replica of main is fresh again")
        end, 2))
    end)
end)
