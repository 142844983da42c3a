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
end)
