--- End-to-end: crash safety (issue 12; docs/reliability.md "Crash safety"). A mixed load of
-- trades, game events, account writes and WebSocket moves; the node killed with -9 at a random
-- moment, started again, and checked: item totals conserved, every acknowledged event had its
-- effect once, every 2xx-confirmed write is there, nothing left in the stream. tools/crash
-- runs the same rounds 20 times; here three short ones. And the case tools/crash found: a
-- player's cached document must not outlive a write that committed just before the kill.
local crash = require "helpers.crash"
local server = require "helpers.server"
local psql = server.psql

math.randomseed(os.time() + math.floor(os.clock() * 1e6))


describe("crash safety", function()
    it("loses and doubles nothing it acknowledged across three kill -9 under mixed load", function()
        assert.truthy(os.getenv("MMO_ADMIN_PASSWORD"), "MMO_ADMIN_PASSWORD (tools/dev test)")
        local ok, lines, failures, summary = crash.run {
            rounds = 3, seconds = 3,
            start = function()
                return server.start { env = { MMO_NODE_ID = "spec-crash" } }
            end,
            say = function() end,
        }
        assert(ok, table.concat(failures, "\n") .. "\n" .. table.concat(lines, "\n"))
        assert.equal(3, summary.kills)
        -- the load really ran: something of each kind was confirmed before the kills
        assert.is_true(summary.trades > 0, table.concat(lines, "\n"))
        assert.is_true(summary.batches > 0, table.concat(lines, "\n"))
        assert.is_true(summary.writes > 0, table.concat(lines, "\n"))
    end)

    it("publishes again the documents of events whose batch committed before a kill", function()
        -- what a node killed between a batch's commit and the cache store leaves: the events
        -- written (processed_events, xp), the cached document from before, the stream entry
        -- not acknowledged (it comes back; a client sending it again is the same)
        local node = server.start()
        local admin = node:request("POST", "/api/auth/login", { body = { username = "admin",
            password = os.getenv("MMO_ADMIN_PASSWORD") } }).json.access_token
        local bot = node:request("POST", "/api/admin/bots", { token = admin, body = {
            count = 1, prefix = "cp" .. server.letters(4), region = "r1" } }).json.bots[1]
        local pid = bot.player_id
        local function xp()
            return node:request("GET", "/api/players/" .. pid, { token = bot.token }).json.xp
        end
        local before = xp() -- now in the cache
        local id = "cp-" .. server.letters(8)
        psql("insert into processed_events (account_id, id, type, player_id) values (" ..
             bot.account_id .. ", '" .. id .. "', 'kill', " .. pid .. ")")
        psql("update players set xp = xp + 50, version = version + 1 where id = " .. pid)
        assert.equal(before, xp()) -- the stale document the cache still serves
        local res = node:request("POST", "/api/events", { token = bot.token, body = { events = {
            { id = id, type = "kill", player_id = pid, ts = os.time(),
              data = { monster = "wolf", level = 5 } } } } })
        assert.equal(202, res.status, res.body)
        local ok = server.eventually(function() return xp() == before + 50 end, 10)
        local got = xp()
        node:stop()
        assert.truthy(ok, "the player document still says xp " .. tostring(got) ..
                          ", the database " .. tostring(before + 50))
        -- and the event had its effect once: the database has it once
        assert.equal(tostring(before + 50), psql("select xp from players where id = " .. pid))
    end)

    it("serves no document older than a PATCH that committed just before a kill", function()
        -- the PATCH is held at its UPDATE (a lock taken with psql), Redis is paused for writes,
        -- the lock goes, the PATCH commits and cannot store its new document; the node is
        -- killed. The document from before the PATCH was in the cache: it must not be served.
        local redis = os.getenv("MMO_REDIS")
        local function rcli(args)
            os.execute("redis-cli -h " .. redis:match("^(.-):") .. " -p " ..
                       redis:match(":(%d+)$") .. " " .. args .. " >/dev/null")
        end
        local node = server.start()
        local admin = node:request("POST", "/api/auth/login", { body = { username = "admin",
            password = os.getenv("MMO_ADMIN_PASSWORD") } }).json.access_token
        local bot = node:request("POST", "/api/admin/bots", { token = admin, body = {
            count = 1, prefix = "cq" .. server.letters(4), region = "r1" } }).json.bots[1]
        local path = "/api/players/" .. bot.player_id
        local function patch(title)
            return server.format_request("PATCH", path, { token = bot.token,
                body = { appearance = { title = title } } })
        end
        local c = node:connect()
        c:send(patch("before"))
        assert.equal(200, c:read_response().status)
        assert.equal("before", node:request("GET", path, { token = bot.token })
                                   .json.appearance.title) -- cached
        os.execute("psql '" .. os.getenv("MMO_PG") .. "' -qc 'begin; lock table players in " ..
                   "share mode; select pg_sleep(2); commit' >/dev/null 2>&1 &")
        local function locks(granted)
            return tonumber(psql("select count(*) from pg_locks where relation = " ..
                                 "'players'::regclass and granted = " .. granted))
        end
        assert.truthy(server.eventually(function() return locks("true") > 0 end, 5))
        c:send(patch("after"))
        assert.truthy(server.eventually(function() return locks("false") > 0 end, 5),
                      "the PATCH did not wait for the lock")
        rcli("CLIENT PAUSE 4000 WRITE")
        local committed = server.eventually(function()
            return psql("select appearance->>'title' from players where id = " ..
                        bot.player_id) == "after"
        end, 5)
        server.sleep(0.3)
        node:kill()
        rcli("CLIENT UNPAUSE")
        c:close()
        assert.truthy(committed, "the PATCH did not commit")
        node = server.start()
        local title = node:request("GET", path, { token = bot.token }).json.appearance.title
        node:stop()
        assert.equal("after", title)
    end)
end)
