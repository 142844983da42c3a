-- End-to-end: `mmo backup` and `mmo restore` (docs/reliability.md, "Backup and restore").
-- A world of its own (two databases on the test's two PostgreSQL servers, main on the first
-- and shard 1 on the second, and two private redis-servers: home "main" and "s2") is filled
-- through the API, backed up, wiped, and restored; every table of both databases and every
-- Redis key must come back as it was, on the instance it was on, and a restored player signs
-- in and sees their items. Hostile cases: a changed byte, a database or a Redis instance that
-- is not empty, a backup with an instance the configuration does not name, a configuration
-- with one more instance than the backup, a missing folder, pg_dump, PostgreSQL or a Redis
-- instance out of reach.
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
    local rport, rport2 = free_port(), free_port()
    assert(rport ~= rport2)
    -- the private Redis instances (not tools/dev's): home, then the other
    local INSTANCES = { { name = "main", host = "127.0.0.1", port = rport, file = "redis.dump" },
                        { name = "s2", host = "127.0.0.1", port = rport2, file = "redis-s2.dump" } }
    local env = {
        MMO_PG = conninfo[0],
        MMO_SHARD_1_CONNINFO = conninfo[1],
        MMO_SHARD_1_REGIONS = "r3,r4",
        MMO_REDIS = "127.0.0.1:" .. rport,
        MMO_REDIS_NAME = "main",
        MMO_REDIS_INSTANCES = "s2=127.0.0.1:" .. rport2,
    }
    local before = {}   -- tables and keys as they were when backed up
    local backup        -- the folder mmo backup made
    local owner         -- { username, players = { id = {item = qty} } }

    -- redis-cli on one of INSTANCES (default home)
    local function redis(args, inst)
        return sh("redis-cli -p " .. (inst or INSTANCES[1]).port .. " " .. args)
    end

    -- every key name in a dump file of mmo backup (core/backup.c: a magic line, then 'K'
    -- keylen key payloadlen payload pttl, big-endian; 'E' count): a set, and how many
    local function dump_keys(file)
        local f = assert(io.open(file, "rb"))
        local data = f:read("*a")
        f:close()
        local magic = "MMO-REDIS-DUMP 1\n"
        assert.equal(magic, data:sub(1, #magic))
        local function u32(at)
            local a, b, c, d = data:byte(at, at + 3)
            return ((a * 256 + b) * 256 + c) * 256 + d
        end
        local set, n, at = {}, 0, #magic + 1
        while data:sub(at, at) == "K" do
            local kl = u32(at + 1)
            local key = data:sub(at + 5, at + 4 + kl)
            local vl = u32(at + 5 + kl)
            set[key] = true
            n = n + 1
            at = at + 5 + kl + 4 + vl + 8
        end
        assert.equal("E", data:sub(at, at))
        return set, n
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

    -- every Redis key of instance inst: { key = { type, dump (escaped), pttl } }; keys about to
    -- expire (under 15 s) are left out, they may be gone by the time of the backup
    local function keys(inst)
        local list = {}
        for k in redis("--scan", inst):gmatch("[^\n]+") do
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
        for line in redis("--no-raw < " .. file, inst):gmatch("[^\n]+") do
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
        for _, inst in ipairs(INSTANCES) do
            if redis("dbsize", inst) ~= "0" then
                return false
            end
        end
        return n == 0
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
        for _, inst in ipairs(INSTANCES) do
            redis("flushall", inst)
        end
        assert.is_true(empty())
    end

    local function same_world(what)
        for id = 0, 1 do
            local now = tables(id)
            assert.is_true(next(before[id]) ~= nil)
            assert.same(before[id], now, what .. ": the tables of shard " .. id)
        end
    end

    -- every instance holds the keys it held at backup time, and no other
    local function same_keys()
        for _, inst in ipairs(INSTANCES) do
            local now, was = keys(inst), before.keys[inst.name]
            assert.is_true(next(was) ~= nil, inst.name .. " had keys")
            for k, v in pairs(was) do
                local got = now[k]
                assert.is_table(got, "key " .. k .. " was not restored on " .. inst.name)
                assert.equal(v.type, got.type, k)
                assert.equal(v.dump, got.dump, k)
                if v.pttl == -1 then
                    assert.equal(-1, got.pttl, k)
                else
                    assert.is_true(got.pttl > 0 and math.abs(v.pttl - got.pttl) < 60000, k)
                end
            end
            -- nothing more than the backup held there (keys under 15 s may be gone from both)
            for k in pairs(now) do
                assert.is_table(was[k], "key " .. k .. " appeared from nowhere on " .. inst.name)
            end
        end
    end

    setup(function()
        assert.truthy(ADMIN_PASSWORD and PG, "MMO_ADMIN_PASSWORD and MMO_PG (tools/dev test)")
        on_cluster("create database %s")
        for _, inst in ipairs(INSTANCES) do
            local dir = tmp .. "/redis-" .. inst.name
            sh("mkdir -p " .. dir .. " && redis-server --port " .. inst.port .. " --bind 127.0.0.1 " ..
               "--daemonize yes --dir " .. dir .. " --save '' --appendonly no --pidfile " .. dir ..
               "/redis.pid --logfile " .. dir .. "/redis.log")
            assert.truthy(server.eventually(function() return redis("ping", inst) == "PONG" end, 10))
        end
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
        -- the node placed region r1's lease where the spec's own placement says (by names)
        local lease_at = server.redis_at("region:r1", INSTANCES)
        local lease
        assert.truthy(server.eventually(function()
            lease = redis("get region:owner:r1", lease_at)
            return lease ~= ""
        end, 20), "no lease of r1 on " .. lease_at.name)
        for _, inst in ipairs(INSTANCES) do
            assert.equal(inst == lease_at and "1" or "0", redis("exists region:owner:r1", inst))
        end
        assert.equal(0, node:stop())
        -- a stopped node gives its leases back: r1's again as a node that died leaves it
        redis("set region:owner:r1 " .. lease .. " px 3600000", lease_at)

        before[0], before[1] = tables(0), tables(1)
        before.keys = {}
        for _, inst in ipairs(INSTANCES) do
            before.keys[inst.name] = keys(inst)
        end
        assert.is_true(tonumber(psql(conninfo[1], "select count(*) from inventory")) > 0)
        local types = {}
        for _, inst in ipairs(INSTANCES) do
            for _, v in pairs(before.keys[inst.name]) do
                types[v.type] = true
            end
        end
        assert.is_true(types.stream and types.string and true or false, "a stream and strings")

        local dbsize = {} -- at most this many keys in each dump, at least dbsize after
        for _, inst in ipairs(INSTANCES) do
            dbsize[inst.name] = { most = tonumber(redis("dbsize", inst)) }
        end
        rc, out = mmo("backup " .. tmp .. "/backups")
        assert.equal(0, rc, out)
        for _, inst in ipairs(INSTANCES) do
            dbsize[inst.name].least = tonumber(redis("dbsize", inst))
        end
        before.dbsize = dbsize
        backup = out:match("([^\n]+)%s*$")
        assert.truthy(backup:match("/backup%-%d+T%d+Z$"), out)
        assert.truthy(out:find("shard 1 (", 1, true), out)
    end)

    teardown(function()
        for _, inst in ipairs(INSTANCES) do
            redis("shutdown nosave", inst)
        end
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
        assert.truthy(m.databases[2].tables["public.players"] > 0)
        -- one dump per Redis instance, each listed with its source and key count
        assert.equal(2, m.format)
        assert.equal(1, #m.redis_instances)
        for i, e in ipairs { m.redis, m.redis_instances[1] } do
            local inst = INSTANCES[i]
            assert.equal(inst.name, e.instance)
            assert.equal(inst.file, e.file)
            assert.equal("127.0.0.1:" .. inst.port .. "/0", e.source)
            local set, n = dump_keys(backup .. "/" .. e.file)
            assert.equal(n, e.keys, e.file)
            local size = before.dbsize[inst.name]
            assert.is_true(e.keys > 0 and e.keys <= size.most and e.keys >= size.least, e.file)
            for k in pairs(before.keys[inst.name]) do
                assert.is_true(set[k], k .. " is not in " .. e.file)
            end
        end
        assert.truthy(sh("cat " .. backup .. "/SHA256SUMS"):find("  redis-s2.dump", 1, true))
    end)

    it("puts the stream and a region's lease in the dump of the instance they live on", function()
        local file_of = {}
        for _, inst in ipairs(INSTANCES) do
            file_of[inst.name] = backup .. "/" .. inst.file
        end
        for key, tag in pairs { ["mmo:events"] = "stream:mmo:events",
                                ["region:owner:r1"] = "region:r1" } do
            local at = server.redis_at(tag, INSTANCES)
            for _, inst in ipairs(INSTANCES) do
                local there = dump_keys(file_of[inst.name])[key] == true
                assert.equal(inst == at, there, key .. " in " .. inst.file)
            end
        end
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
        -- and the dump of the other instance
        copy = tmp .. "/tampered-s2"
        sh("cp -r " .. backup .. " " .. copy)
        f = assert(io.open(copy .. "/redis-s2.dump", "r+b"))
        f:seek("set", 20)
        b = f:read(1)
        f:seek("set", 20)
        f:write(string.char((b:byte() + 1) % 256))
        f:close()
        rc, out = mmo("restore " .. copy .. " --force")
        assert.equal(1, rc, out)
        assert.truthy(out:find("redis-s2.dump: checksum mismatch", 1, true), out)
        assert.is_true(empty())
    end)

    it("refuses a backup with an instance the configuration does not name, even with --force",
       function()
        assert.is_true(empty())
        -- home alone; s2 renamed s3 (same address); --force changes nothing
        for _, list in ipairs { "", "s3=127.0.0.1:" .. rport2 } do
            for _, force in ipairs { "", " --force" } do
                local rc, out = mmo("restore " .. backup .. force, { MMO_REDIS_INSTANCES = list })
                assert.equal(1, rc, out)
                assert.truthy(out:find('the backup holds Redis instance "s2" (redis-s2.dump)', 1,
                                       true), out)
                assert.truthy(out:find("nothing restored", 1, true), out)
                assert.is_true(empty())
            end
        end
        -- home under another name
        local rc, out = mmo("restore " .. backup, { MMO_REDIS_NAME = "other" })
        assert.equal(1, rc, out)
        assert.truthy(out:find([[the backup's home Redis instance is "main", this configuration's]] ..
                               [[ is "other"]], 1, true), out)
        assert.is_true(empty())
    end)

    it("restores every table of both shards and every Redis key", function()
        local rc, out = mmo("restore " .. backup)
        assert.equal(0, rc, out)
        assert.truthy(out:find("shard 1 (", 1, true) and out:find("row counts match", 1, true), out)
        same_world("after restore")
        same_keys()
    end)

    it("refuses to restore over a Redis instance that is not empty, unless --force", function()
        wipe()
        local s2 = INSTANCES[2]
        redis("set stray 1", s2)
        local rc, out = mmo("restore " .. backup)
        assert.equal(1, rc, out)
        assert.truthy(out:find("redis s2 (127.0.0.1:" .. rport2 .. ") is not empty (1 keys)", 1,
                               true), out)
        -- nothing written: no table, no key on home, the stray key alone on s2
        redis("del stray", s2)
        assert.is_true(empty())
        redis("set stray 1", s2)
        rc, out = mmo("restore " .. backup .. " --force")
        assert.equal(0, rc, out)
        assert.truthy(out:find("redis s2 (127.0.0.1:" .. rport2 .. ") <- redis-s2.dump: ", 1, true),
                      out)
        assert.equal("1", redis("get stray", s2)) -- REPLACE leaves keys the backup lacks
        redis("del stray", s2)
        same_world("after restore --force over s2")
        same_keys()
    end)

    it("refuses to restore over a database that is not empty, unless --force", function()
        for _, inst in ipairs(INSTANCES) do -- so that the databases are what refuses
            redis("flushall", inst)
        end
        psql(conninfo[1], "update players set xp = xp + 1")
        local changed = tables(1)
        local rc, out = mmo("restore " .. backup)
        assert.equal(1, rc, out)
        assert.truthy(out:find("is not empty", 1, true), out)
        assert.same(changed, tables(1))
        assert.equal("0", redis("dbsize"))
        assert.equal("0", redis("dbsize", INSTANCES[2]))
        rc, out = mmo("restore " .. backup .. " --force")
        assert.equal(0, rc, out)
        same_world("after restore --force")
    end)

    it("restores into one more instance than the backup only with --force, leaving it alone",
       function()
        wipe()
        -- s3 on a port nobody listens on: left alone means not even connected to
        local list = env.MMO_REDIS_INSTANCES .. ",s3=127.0.0.1:" .. free_port()
        local rc, out = mmo("restore " .. backup, { MMO_REDIS_INSTANCES = list })
        assert.equal(1, rc, out)
        assert.truthy(out:find('Redis instance "s3" is configured but not in the backup, which ' ..
                               'has "main", "s2": placement by instance names would differ', 1,
                               true), out)
        assert.is_true(empty())
        rc, out = mmo("restore " .. backup .. " --force", { MMO_REDIS_INSTANCES = list })
        assert.equal(0, rc, out)
        assert.truthy(out:find('Redis instance "s3" is not in the backup (which has "main", ' ..
                               '"s2"): left alone', 1, true), out)
        same_world("after restore --force with s3")
        same_keys()
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
        local port = free_port()
        rc, out = mmo("backup " .. dir, { MMO_REDIS_INSTANCES = "s2=127.0.0.1:" .. port })
        assert.equal(1, rc, out)
        assert.truthy(out:find("redis s2 (127.0.0.1:" .. port .. "): Connection refused", 1, true),
                      out)
        assert.truthy(out:find("no backup was made", 1, true), out)
        assert.equal("", sh("ls -A " .. dir))
    end)
end)
