-- End-to-end: `mmo backup` and `mmo restore` (docs/reliability.md, "Backup and restore").
-- A world of its own (two databases on the test's two PostgreSQL servers, main on the first
-- and shard 1 on the second, and a private redis-server) is filled through the API, backed
-- up, wiped, and restored; every table of both databases and every Redis key must come back
-- as it was, and a restored player signs in and sees their items. Hostile cases: a changed
-- byte, a database that is not empty, a missing folder, pg_dump or PostgreSQL out of reach.
local server = require "helpers.server"
local socket = require "socket"
local letters = server.letters

local ADMIN_PASSWORD = os.getenv("MMO_ADMIN_PASSWORD")
local PG = os.getenv("MMO_PG")
-- shard 1's server (tools/dev test: a second cluster), else the main one
local PG1 = os.getenv("MMO_SHARD_1_CONNINFO") or PG
local PASSWORD = "correct horse battery staple"

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


local sh = server.sh


local function psql(conninfo, sql)
    return server.psql(sql, conninfo)
end


local function free_port()
    local s = assert(socket.bind("127.0.0.1", 0))
    local _, port = s:getsockname()
    s:close()
    return tonumber(port)
end


describe("backup and restore", function()
    local name = "mmo_bk_" .. letters(6)
    local dbs = { [0] = name, [1] = name .. "_s1" }
    local conninfo = {}
    local server_of = { [0] = PG, [1] = PG1 }
    for id, db in pairs(dbs) do
        conninfo[id] = server_of[id]:gsub("dbname=%S+", "dbname=" .. db)
    end
    local tmp = server.tmpdir()
    local rport = free_port()
    local env = {
        MMO_PG = conninfo[0],
        MMO_SHARD_1_CONNINFO = conninfo[1],
        MMO_SHARD_1_REGIONS = "r3,r4",
        MMO_REDIS = "127.0.0.1:" .. rport,
        MMO_REDIS_INSTANCES = "", -- the private Redis alone, not tools/dev's second
    }
    local before = {}   -- tables and keys as they were when backed up
    local backup        -- the folder mmo backup made
    local owner         -- { username, players = { id = {item = qty} } }

    local function redis(args)
        return sh("redis-cli -p " .. rport .. " " .. args)
    end

    local function mmo(args, extra)
        local e = {}
        for k, v in pairs(env) do
            e[k] = v
        end
        for k, v in pairs(extra or {}) do
            e[k] = v
        end
        return server.run(args, e)
    end

    -- every table of database id: { ["public.players"] = md5 of its rows in order, and count }
    -- (one psql: \gexec runs the query made for each table)
    local function tables(id)
        local file = tmp .. "/tables.sql"
        server.write(file, "select format('select %L, md5(coalesce(string_agg(r::text, " ..
                     "chr(10) order by r::text), %L)) || %L || count(*) from %I.%I r', " ..
                     "schemaname || '.' || tablename, '', ':', schemaname, tablename) from " ..
                     "pg_tables where schemaname not in ('pg_catalog', 'information_schema')\n" ..
                     "\\gexec\n")
        local out = {}
        for line in sh("psql '" .. conninfo[id] .. "' -qtA -v ON_ERROR_STOP=1 -f " .. file):gmatch("[^\n]+") do
            local t, sum = line:match("^([^|]+)|(.*)$")
            assert.truthy(t, line)
            out[t] = sum
        end
        return out
    end

    -- every Redis key: { key = { type, dump (escaped), pttl } }; keys about to expire (under
    -- 15 s) are left out, they may be gone by the time of the backup
    local function keys()
        local list = {}
        for k in redis("--scan"):gmatch("[^\n]+") do
            list[#list + 1] = k
        end
        table.sort(list)
        local cmds = {}
        for _, k in ipairs(list) do
            local q = '"' .. k:gsub('[\\"]', "\\%0") .. '"'
            cmds[#cmds + 1] = "TYPE " .. q .. "\nDUMP " .. q .. "\nPTTL " .. q
        end
        local file = tmp .. "/cmds"
        server.write(file, table.concat(cmds, "\n") .. "\n")
        local lines = {}
        for line in redis("--no-raw < " .. file):gmatch("[^\n]+") do
            lines[#lines + 1] = line
        end
        assert.equal(#list * 3, #lines)
        local out = {}
        for i, k in ipairs(list) do
            local pttl = tonumber(lines[i * 3]:match("%-?%d+"))
            if pttl == -1 or pttl > 15000 then
                out[k] = { type = lines[i * 3 - 2], dump = lines[i * 3 - 1], pttl = pttl }
            end
        end
        return out
    end

    local function empty()
        local n = 0
        for id = 0, 1 do
            n = n + tonumber(psql(conninfo[id], "select count(*) from pg_class c join " ..
                                  "pg_namespace n on n.oid = c.relnamespace where n.nspname = 'public'"))
        end
        return n == 0 and redis("dbsize") == "0"
    end

    -- the statement for each database, on its server (CREATE and DROP DATABASE refuse a
    -- transaction: one psql -c each)
    local function on_cluster(fmt)
        for id = 0, 1 do
            sh("psql '" .. server_of[id] .. "' -qtA -c '" .. fmt:format(dbs[id]) .. "'")
        end
    end

    local function wipe()
        on_cluster("drop database %s with (force)")
        on_cluster("create database %s")
        redis("flushall")
        assert.is_true(empty())
    end

    local function same_world(what)
        for id = 0, 1 do
            local now = tables(id)
            assert.is_true(next(before[id]) ~= nil)
            assert.same(before[id], now, what .. ": the tables of shard " .. id)
        end
    end

    local function same_keys()
        local now = keys()
        for k, v in pairs(before.keys) do
            local got = now[k]
            assert.is_table(got, "key " .. k .. " was not restored")
            assert.equal(v.type, got.type, k)
            assert.equal(v.dump, got.dump, k)
            if v.pttl == -1 then
                assert.equal(-1, got.pttl, k)
            else
                assert.is_true(got.pttl > 0 and math.abs(v.pttl - got.pttl) < 60000, k)
            end
        end
        -- nothing more than the backup held (keys under 15 s may be gone from both)
        for k in pairs(now) do
            assert.is_table(before.keys[k], "key " .. k .. " appeared from nowhere")
        end
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD and PG, "MMO_ADMIN_PASSWORD and MMO_PG (tools/dev test)")
        on_cluster("create database %s")
        sh("redis-server --port " .. rport .. " --bind 127.0.0.1 --daemonize yes --dir " .. tmp ..
           " --save '' --appendonly no --pidfile " .. tmp .. "/redis.pid --logfile " .. tmp ..
           "/redis.log")
        assert.truthy(server.eventually(function() return redis("ping") == "PONG" end, 10))
        local rc, out = mmo("migrate")
        assert.equal(0, rc, out)
        rc, out = mmo("seed")
        assert.equal(0, rc, out)

        -- a world: accounts, players in both shards, items, trades, a guild, game events
        local node = server.start { env = env }
        local function call(method, path, token, body, status)
            local res = node:request(method, path, { token = token, body = body })
            assert.equal(status or 200, res.status, res.body)
            return res.json
        end
        local admin = call("POST", "/api/auth/login", nil,
                           { username = "admin", password = ADMIN_PASSWORD }).access_token
        local accounts = {}
        for i, regions in ipairs { { "r1", "r2" }, { "r3", "r4" } } do
            local user = "bk" .. letters(8)
            call("POST", "/api/auth/register", nil, { username = user, password = PASSWORD }, 201)
            local token = call("POST", "/api/auth/login", nil,
                               { username = user, password = PASSWORD }).access_token
            local p = {}
            for k, region in ipairs(regions) do
                p[k] = call("POST", "/api/players", token,
                            { name = "P" .. letters(8), class = "mage", region = region }, 201).id
            end
            call("POST", "/api/admin/players/" .. p[1] .. "/items", admin,
                 { item = "potion_small", qty = 5 })
            call("POST", "/api/admin/players/" .. p[2] .. "/items", admin,
                 { item = "ore_iron", qty = 10 })
            call("POST", "/api/trades", token, { from = p[1], to = p[2],
                 give = { { item = "potion_small", qty = 2 } }, take = { { item = "ore_iron", qty = 4 } } })
            call("GET", "/api/players/" .. p[1] .. "/inventory", token) -- cached
            accounts[i] = { username = user, token = token, players = p }
        end
        owner = { username = accounts[2].username, player = accounts[2].players[1],
                  items = { potion_small = 3, ore_iron = 4 } }
        local bots = call("POST", "/api/admin/bots", admin,
                          { count = 3, prefix = "b" .. letters(4), region = "r1", spread = 50 }).bots
        local guild = call("POST", "/api/guilds", bots[1].token,
                           { name = "G" .. letters(8), player_id = bots[1].player_id }, 201)
        call("POST", "/api/guilds/" .. guild.id .. "/join", bots[2].token,
             { player_id = bots[2].player_id })
        local events = {}
        for i = 1, 5 do
            events[i] = { id = "bk" .. letters(6) .. i, type = "kill", player_id = bots[3].player_id,
                          ts = os.time(), data = { monster = "wolf", level = 2 } }
        end
        call("POST", "/api/events", bots[3].token, { events = events }, 202)
        assert.truthy(server.eventually(function()
            local q = call("GET", "/api/admin/queues", admin)
            return q.group and q.group.lag == 0 and q.group.pending == 0
        end, 20), "the game events were not processed")
        assert.equal(0, node:stop())

        before[0], before[1], before.keys = tables(0), tables(1), keys()
        assert.is_true(tonumber(psql(conninfo[1], "select count(*) from inventory")) > 0)
        local types = {}
        for _, v in pairs(before.keys) do
            types[v.type] = true
        end
        assert.is_true(types.stream and types.string and true or false, "a stream and strings")

        rc, out = mmo("backup " .. tmp .. "/backups")
        assert.equal(0, rc, out)
        backup = out:match("([^\n]+)%s*$")
        assert.truthy(backup:match("/backup%-%d+T%d+Z$"), out)
        assert.truthy(out:find("shard 1 (", 1, true), out)
    end)

    teardown(function()
        redis("shutdown nosave")
        on_cluster("drop database if exists %s with (force)")
        server.rm_rf(tmp)
    end)

    it("writes a manifest and checksums that sha256sum accepts", function()
        assert.equal("OK", sh("cd " .. backup .. " && sha256sum -c --quiet SHA256SUMS && echo OK"))
        local f = assert(io.open(backup .. "/manifest.json"))
        local m = require("cjson").decode(f:read("*a"))
        f:close()
        assert.equal(2, #m.databases)
        assert.equal(11, m.migration_version)
        assert.is_true(m.redis.keys > 0)
        assert.truthy(m.databases[2].tables["public.players"] > 0)
    end)

    it("refuses a backup with a changed byte, and writes nothing", function()
        wipe()
        local copy = tmp .. "/tampered"
        sh("cp -r " .. backup .. " " .. copy)
        local file = copy .. "/shard1.pgdump"
        local f = assert(io.open(file, "r+b"))
        f:seek("set", 200)
        local b = f:read(1)
        f:seek("set", 200)
        f:write(string.char((b:byte() + 1) % 256))
        f:close()
        local rc, out = mmo("restore " .. copy)
        assert.equal(1, rc, out)
        assert.truthy(out:find("shard1.pgdump: checksum mismatch", 1, true), out)
        assert.truthy(out:find("nothing restored", 1, true), out)
        assert.is_true(empty())
        -- the manifest is covered too: a row count changed there
        copy = tmp .. "/tampered-manifest"
        sh("cp -r " .. backup .. " " .. copy)
        sh("sed -i 's/\"public.players\": \\([0-9]*\\)/\"public.players\": 9\\1/' " .. copy ..
           "/manifest.json")
        assert.is_true(tonumber(sh("grep -c '\"public.players\": 9' " .. copy .. "/manifest.json")) > 0)
        rc, out = mmo("restore " .. copy)
        assert.equal(1, rc, out)
        assert.truthy(out:find("manifest.json: checksum mismatch", 1, true), out)
        assert.is_true(empty())
    end)

    it("restores every table of both shards and every Redis key", function()
        local rc, out = mmo("restore " .. backup)
        assert.equal(0, rc, out)
        assert.truthy(out:find("shard 1 (", 1, true) and out:find("row counts match", 1, true), out)
        same_world("after restore")
        same_keys()
    end)

    it("refuses to restore over a database that is not empty, unless --force", function()
        redis("flushall") -- so that the databases are what refuses
        psql(conninfo[1], "update players set xp = xp + 1")
        local changed = tables(1)
        local rc, out = mmo("restore " .. backup)
        assert.equal(1, rc, out)
        assert.truthy(out:find("is not empty", 1, true), out)
        assert.same(changed, tables(1))
        assert.equal("0", redis("dbsize"))
        rc, out = mmo("restore " .. backup .. " --force")
        assert.equal(0, rc, out)
        same_world("after restore --force")
    end)

    it("lets a restored player sign in and see their items", function()
        local node = server.start { env = env }
        local res = node:request("POST", "/api/auth/login",
                                 { body = { username = owner.username, password = PASSWORD } })
        assert.equal(200, res.status, res.body)
        res = node:request("GET", "/api/players/" .. owner.player .. "/inventory",
                           { token = res.json.access_token })
        assert.equal(200, res.status, res.body)
        local inv = {}
        for _, l in ipairs(res.json.items) do
            inv[l.item] = l.qty
        end
        assert.same(owner.items, inv)
        assert.equal(0, node:stop())
    end)

    it("says so when the folder is missing, and when it is not a backup", function()
        local rc, out = mmo("restore " .. tmp .. "/no-such-backup")
        assert.equal(1, rc, out)
        assert.truthy(out:find("no-such-backup: No such file or directory", 1, true), out)
        rc, out = mmo("restore " .. tmp)
        assert.equal(1, rc, out)
        assert.truthy(out:find("not a backup folder", 1, true), out)
        rc, out = mmo("restore")
        assert.equal(2, rc, out)
    end)

    it("says so when pg_dump or PostgreSQL cannot be reached, and leaves no backup", function()
        local dir = tmp .. "/failed"
        local rc, out = mmo("backup " .. dir, { MMO_PG_BIN = "/nonexistent" })
        assert.equal(1, rc, out)
        assert.truthy(out:find("cannot run /nonexistent/pg_dump", 1, true), out)
        assert.truthy(out:find("no backup was made", 1, true), out)
        rc, out = mmo("backup " .. dir, { MMO_PG = PG:gsub("port=%d+", "port=" .. free_port()) })
        assert.equal(1, rc, out)
        assert.truthy(out:find("shard 0: cannot connect to PostgreSQL", 1, true), out)
        assert.equal("", sh("ls -A " .. dir))
    end)
end)
