--- End-to-end: crash safety (issue 12; docs/reliability.md "Crash safety"). A mixed load of
-- trades, game events, account writes and WebSocket moves; the node killed with -9 at a random
-- moment, started again, and checked: item totals conserved, every acknowledged event had its
-- effect once, every 2xx-confirmed write is there, nothing left in the stream. tools/crash
-- runs the same rounds 20 times; here three short ones.
local crash = require "helpers.crash"
local server = require "helpers.server"

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
end)
