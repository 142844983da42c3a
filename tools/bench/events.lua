-- tools/bench/events.lua -- the wrk script of tools/bench/pipeline's ingest run
-- (docs/performance.md, "Game events (pipeline)").
--
--   BENCH_EVENTS_FILE=accounts.txt BENCH_EVENTS_RUN=r1 \
--       wrk -t8 -c64 -d10s --latency -s tools/bench/events.lua http://127.0.0.1:PORT/api/events
--
-- accounts.txt has a bot account a line, "<player id> <access token>" (tools/bench/pipeline
-- makes them with POST /api/admin/bots). wrk thread i (1-based) signs in as line i (modulo the
-- lines), so every connection of a thread sends for one account's player: run it with as many
-- threads as accounts. Every request is POST /api/events with BENCH_EVENTS_BATCH (100) events
-- of that player, four kills (a random monster level 1-60) to one loot (one of four seeded
-- items, qty 1-3), ts = now, each with an id unique in the run: "<run>-<thread>-<request>-<k>"
-- (BENCH_EVENTS_RUN tells runs apart; the node keys processed events by (account, id)).
--
-- After wrk's own summary, done() prints:
--   events: status <code> <answers>
--   events: full <answers>            202 with accepted == the batch size
--   events: accepted <events>         the sum of accepted over the 202s
--   events: rejected <events>         the sum of the 202s' rejected entries
--   events: refused <status> <code> <answers>    the non-2xx, by error code

local ITEMS = { "potion_small", "elixir_mana", "ore_iron", "herb_moonleaf" }
local MONSTERS = { "wolf", "bat", "goblin", "skeleton", "troll" }

package.path = (debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "?.lua;" .. package.path
local wrkutil = require "wrkutil"

local threads = {}
-- in wrk's main Lua state, once per thread, before its init(): the thread's index (1-based)
setup = wrkutil.numbering(threads)

-- per thread (globals, read by done() through thread:get)
statuses = {}   -- HTTP status -> answers
full = 0        -- 202s with every event accepted
accepted = 0    -- events accepted
rejected = 0    -- events rejected inside 202s
refusals = {}   -- "status code" -> answers, for status >= 300

local pid, headers, prefix, batch
local seq = 0

function init(args)
    local accounts = wrkutil.accounts("BENCH_EVENTS_FILE")
    local me = accounts[(index - 1) % #accounts + 1]
    pid = me.id
    batch = tonumber(os.getenv("BENCH_EVENTS_BATCH") or "100")
    prefix = (os.getenv("BENCH_EVENTS_RUN") or tostring(os.time())) .. "-" .. index .. "-"
    headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. me.token }
    math.randomseed(os.time() * 1000 + index)
end

local fmt_kill = '{"id":"%s%d-%d","type":"kill","player_id":%s,"ts":%d,' ..
                 '"data":{"monster":"%s","level":%d}}'
local fmt_loot = '{"id":"%s%d-%d","type":"loot","player_id":%s,"ts":%d,' ..
                 '"data":{"item":"%s","qty":%d}}'
local random, format, concat = math.random, string.format, table.concat
local parts = {}

function request()
    seq = seq + 1
    local now = os.time()
    for k = 1, batch do
        if k % 5 == 0 then
            parts[k] = format(fmt_loot, prefix, seq, k, pid, now, ITEMS[random(4)], random(3))
        else
            parts[k] = format(fmt_kill, prefix, seq, k, pid, now, MONSTERS[random(5)], random(60))
        end
    end
    return wrk.format("POST", nil, headers, '{"events":[' .. concat(parts, ",", 1, batch) .. ']}')
end

function response(status, _, body)
    statuses[status] = (statuses[status] or 0) + 1
    if status == 202 then
        local a = tonumber(body:match('"accepted":(%d+)')) or 0
        accepted = accepted + a
        if a == batch then
            full = full + 1
        else
            local r = body:match('"rejected":%[(.*)%]')
            if r and r ~= "" then
                local _, n = r:gsub('"index":', "")
                rejected = rejected + n
            end
        end
    elseif status >= 300 then
        local key = status .. " " .. (body and body:match('"code"%s*:%s*"([%w_]+)"') or "?")
        refusals[key] = (refusals[key] or 0) + 1
    end
end

function done()
    local f, a, r = 0, 0, 0
    for _, t in ipairs(threads) do
        f = f + (t:get("full") or 0)
        a = a + (t:get("accepted") or 0)
        r = r + (t:get("rejected") or 0)
    end
    wrkutil.write_sums(threads, "statuses", "events: status %d %d\n")
    io.write(format("events: full %d\nevents: accepted %d\nevents: rejected %d\n", f, a, r))
    wrkutil.write_sums(threads, "refusals", "events: refused %s %d\n")
end
