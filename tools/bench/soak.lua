-- tools/bench/soak.lua -- the wrk script of tools/bench/soak's HTTP load (docs/reliability.md,
-- "Soak").
--
--   BENCH_SOAK_ACCOUNTS=accounts.txt BENCH_SOAK_DELAY_MS=40 BENCH_SOAK_RUN=w12 \
--       wrk -t4 -c8 -d10s --latency -s tools/bench/soak.lua http://127.0.0.1:PORT
--
-- accounts.txt has a bot account a line, "<player id> <access token>". wrk thread i (1-based)
-- signs in as line i (modulo the lines). Each connection sends, in turn:
--   GET  /api/me                        the session (Redis), the account (PostgreSQL)
--   GET  /api/players/<id>              the player (cache, else PostgreSQL)
--   GET  /api/players/<id>/inventory    PostgreSQL
--   POST /api/events                    5 kill events (unique ids) into the Redis stream; the
--                                       node's worker applies them in PostgreSQL
--   GET  /api/world/territories         the world (Lua)
-- waiting BENCH_SOAK_DELAY_MS before each request (wrk's delay()), so the load is a rate, not
-- as fast as the node goes. done() prints "soak: status <code> <answers>" lines.
-- luacheck: globals setup init request response delay done wrk index statuses

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local wrkutil = require "wrkutil"

local threads = {}
-- in wrk's main Lua state, once per thread, before its init(): the thread's index (1-based)
setup = wrkutil.numbering(threads)

statuses = {}

local MONSTERS = { "wolf", "bat", "goblin", "skeleton", "troll" }
local reqs, n, pause_ms = {}, 0, 0
local pid, headers, prefix, seq = nil, nil, nil, 0

function init()
    local accounts = wrkutil.accounts("BENCH_SOAK_ACCOUNTS")
    local me = accounts[(index - 1) % #accounts + 1]
    pid = me.id
    pause_ms = tonumber(os.getenv("BENCH_SOAK_DELAY_MS") or "0")
    prefix = (os.getenv("BENCH_SOAK_RUN") or tostring(os.time())) .. "-" .. index .. "-"
    headers = { ["Authorization"] = "Bearer " .. me.token }
    math.randomseed(os.time() * 1000 + index)
    reqs = {
        wrk.format("GET", "/api/me", headers),
        wrk.format("GET", "/api/players/" .. pid, headers),
        wrk.format("GET", "/api/players/" .. pid .. "/inventory", headers),
        false, -- the events: made per request (unique ids)
        wrk.format("GET", "/api/world/territories", headers),
    }
end

local fmt_kill = '{"id":"%s%d-%d","type":"kill","player_id":%s,"ts":%d,' ..
                 '"data":{"monster":"%s","level":%d}}'

local function events()
    seq = seq + 1
    local parts, now = {}, os.time()
    for k = 1, 5 do
        parts[k] = string.format(fmt_kill, prefix, seq, k, pid, now,
                                 MONSTERS[math.random(5)], math.random(60))
    end
    local h = { ["Authorization"] = headers.Authorization, ["Content-Type"] = "application/json" }
    return wrk.format("POST", "/api/events", h, '{"events":[' .. table.concat(parts, ",") .. ']}')
end

function request()
    n = n % #reqs + 1
    return reqs[n] or events()
end

function delay()
    return pause_ms
end

function response(status)
    statuses[status] = (statuses[status] or 0) + 1
end

function done()
    wrkutil.write_sums(threads, "statuses", "soak: status %d %d\n")
end
