-- tools/bench/trades.lua -- the wrk script of tools/bench/run's trades run (docs/performance.md).
--
--   BENCH_TRADERS_FILE=traders.txt wrk -t50 -c50 -d10s -s tools/bench/trades.lua \
--       http://127.0.0.1:PORT/api/trades
--
-- Run it with as many threads as connections (-tN -cN): each wrk thread then has one
-- connection and is one trader, signed in as its own account. traders.txt has a trader a line,
-- "<player id> <access token>" (tools/bench/run makes them with POST /api/admin/bots); thread i
-- takes line i. Every request is POST /api/trades from the trader's player to a random other
-- trader's player, giving 1-3 of a random item of the four the run grants and taking nothing:
-- a trade between two accounts that happens at once (handlers/trades.lua: with something to
-- take, it would need the other owner's mirror call first). Each one is a PostgreSQL
-- transaction that locks both players' rows, reads both inventories and writes both.
--
-- After wrk's own summary, done() prints the answers by status, and by status and error code
-- for the non-2xx ones:
--   trades: status 200 <count>
--   trades: refused 409 not_enough <count>

local ITEMS = { "potion_small", "elixir_mana", "ore_iron", "herb_moonleaf" }

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local wrkutil = require "wrkutil"

local threads = {}
-- in wrk's main Lua state, once per thread, before its init(): the thread's index (1-based)
setup = wrkutil.numbering(threads)

-- per thread (globals, read by done() through thread:get)
statuses = {}   -- HTTP status -> answers
refusals = {}   -- "status code" -> answers, for status >= 400

local me, others, headers

function init(args)
    local traders = wrkutil.accounts("BENCH_TRADERS_FILE", 2)
    me = traders[(index - 1) % #traders + 1]
    others = {}
    for _, t in ipairs(traders) do
        if t.id ~= me.id then
            others[#others + 1] = t.id
        end
    end
    headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. me.token }
    math.randomseed(os.time() * 1000 + index)
end

function request()
    local body = string.format('{"from":%s,"to":%s,"give":[{"item":"%s","qty":%d}]}', me.id,
                               others[math.random(#others)], ITEMS[math.random(#ITEMS)],
                               math.random(1, 3))
    return wrk.format("POST", nil, headers, body)
end

function response(status, _, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status >= 400 then
        local key = status .. " " .. (body and body:match('"code"%s*:%s*"([%w_]+)"') or "?")
        refusals[key] = (refusals[key] or 0) + 1
    end
end

function done()
    wrkutil.write_sums(threads, "statuses", "trades: status %d %d\n")
    wrkutil.write_sums(threads, "refusals", "trades: refused %s %d\n")
end
