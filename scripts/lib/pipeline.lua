-- lib/pipeline.lua: game events from clients to their effects in PostgreSQL, exactly once.
--
-- Ingest (POST /api/events, the WebSocket event message): each event is checked and made the
-- server's by rules/validation.lua (its type's schema, the clock, the size; the player must be
-- the caller's), then the accepted ones are appended to the Redis stream STREAM as one entry
-- (field "es": a JSON array of the events; "e": a single event), in one round trip; the caller
-- hears "accepted" only after Redis answered for them. One entry per batch rather than per
-- event: Redis and the node do a hundredth of the per-entry work (docs/performance.md).
--
-- Consume (the timer pipeline.consume in every node): XREADGROUP of the group GROUP, as the
-- consumer named after this node, a batch at a time; first what this consumer had read and not
-- acknowledged before it stopped (id 0), then new entries (>). Every CLAIM_EVERY seconds the
-- pending entries are looked at (XPENDING): one idle for CLAIM_IDLE_MS x 2^(deliveries - 1)
-- (a dead node's, or one whose job failed: exponential backoff) is claimed (XCLAIM) and tried
-- again; one delivered MAX_TRIES times goes to the dead-letter stream DEAD instead. An entry
-- is acknowledged once every event in it is done: written, or buried in the dead letters; one
-- event that failed keeps its whole entry pending, and the entry's other events, written
-- already, are duplicates when it comes back (no second effect).
-- Each event's handler (scripts/jobs/<type>.lua, effect(e, ctx) -> {xp =, items =}) runs;
-- the effects are summed per player and written on each player's shard in one transaction
-- together with the events' ids (processed_events, key (account, id)): an id already there
-- has no second effect, whether the client sent it twice or the stream delivered it again
-- after a crash. XACK only after the commits.
--
-- Trim: every CLAIM_EVERY seconds the entries before both the oldest pending one and the
-- group's last delivered one are dropped (XTRIM MINID ~): they were all acknowledged, so the
-- stream holds what is still to do and no more. (Trimming by length, MAXLEN, could drop
-- accepted events nobody had read yet: it is not used.)
local db = require "mmo.db"
local mod_events = require "mmo.events"
local json = require "mmo.json"
local log = require "mmo.log"
local player = require "rules.player"
local players = require "lib.players"
local queue = require "lib.queue"
-- the Redis instance of the stream and its keys (queue.AT): every command here is theirs
local cache = require("mmo.cache").at(queue.AT)
local state = require "mmo.state"
local time = require "mmo.time"
local validation = require "rules.validation"
local world = require "mmo.world"

local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local require = require
local setmetatable = setmetatable
local tonumber = tonumber
local tostring = tostring
local type = type


local _M = {}

_M.STREAM = "mmo:events"
_M.GROUP = "workers"
_M.DEAD = "mmo:events:dead"
_M.BATCH = 8000          -- events per XREADGROUP (about: entries hold one to 1,000): under a
                         -- backlog, the larger the batch the fewer rows per event (a batch's
                         -- xp is summed per player)
_M.BUDGET_S = 1          -- a consume run stops starting batches after this long (the
                         -- timer waits its period after each run: a longer run idles less)
_M.CLAIM_EVERY = 5
_M.MAX_LAG = 2000000     -- events accepted and not yet read by any worker (the group's lag
                         -- in entries x the events per entry this node appends): past it,
                         -- ingest answers 503 (busy) until the workers catch up (Redis memory
                         -- stays bounded when no worker runs)
_M.CLAIM_IDLE_MS = 30000    -- the first retry; then x2 each time, at most x64
_M.MAX_TRIES = 5

local CONSUMER = world.settings().node

-- kept across reloads (mmo.state): the counters of this node (GET /api/admin/queues), and
-- where its consumer stands
local S = state.global("pipeline", { version = 1, init = function()
    return {
        stats = { ingested = 0, rejected = 0, processed = 0, duplicates = 0, failed = 0,
                        dead = 0, batches = 0, by_type = {} },
        group_ready = false,      -- the consumer group is known to exist
        last_claim = 0,           -- when pending entries of dead consumers were last claimed
        own_pending_done = false, -- this node's own pending entries were read back once
        own_pending_from = "0",   -- reading them: after this id (one that fails stays pending)
        per_entry = 1,            -- events per entry, as this node appended them (average)
        read_per_entry = 100,     -- events per entry in this node's last read (100 before any:
                                  -- a request's usual batch)
    }
end })
S.per_entry = S.per_entry or 1 -- (a state from before these two: kept across a reload)
S.read_per_entry = S.read_per_entry or 100
local stats = S.stats
_M.stats = stats

local metrics = require "mmo.metrics"
local EVENTS = metrics.counter("mmo_game_events_total",
    "Game events and jobs by type and result (processed, duplicates, failed, dead)",
    { "type", "result" })
local QUEUE = metrics.gauge("mmo_queue", "The event stream as Redis sees it: length, pending, " ..
                            "lag of the workers group, dead letters", { "what" })
local INGESTED = metrics.counter("mmo_game_events_ingested_total",
                                 "Game events accepted into the stream (this node)")
local REJECTED = metrics.counter("mmo_game_events_rejected_total",
                                 "Game events refused at ingest, by code", { "code" })
-- per-hook metrics of the job handlers, kept here so that no job writes metric code
local JOB_RUNS = metrics.counter("mmo_job_runs_total",
    "Calls of job handlers (scripts/jobs/<job>.lua: effect for a game event, run for a queued " ..
    "job), by handler (the file's name) and result (ok, error: raised, or an effect that is not " ..
    "a table); not \"job\": Prometheus gives that label to every target",
    { "handler", "result" })
local JOB_SECONDS = metrics.histogram("mmo_job_run_duration_seconds",
    "Time a call of a job handler took, by handler", { "handler" })
local monotonic = time.monotonic

local function count(t, what, n)
    EVENTS:inc(n or 1, t, what)
    local s = stats.by_type[t]
    if not s then
        s = { processed = 0, duplicates = 0, failed = 0, dead = 0 }
        stats.by_type[t] = s
    end
    s[what] = s[what] + (n or 1)
end


-- The group's lag as last seen, in events (the lag in entries x the events per entry this
-- node appends): asked again at most once a second (one round trip). Unknown
-- (Redis away, no group yet, a lag Redis cannot tell) counts as 0: the append itself fails
-- when Redis is away.
local function lag_now()
    local now = time.monotonic()
    if now - (S.lag_at or -math.huge) >= 1 then
        S.lag_at = now
        local st = _M.status()
        S.lag = st and type(st.group.lag) == "number" and st.group.lag * S.per_entry or 0
    end
    return S.lag or 0
end


-- ---- ingest ------------------------------------------------------------------------------

-- Check and append a batch of events from account (session sid). Returns accepted, rejected
-- ({index (0-based), code, message}), or nil, err when Redis did not take them (nothing was
-- accepted then).
function _M.ingest(account_id, sid, events)
    local now = time.now()
    local rejected = json.array({})
    local ok_list, pids, seen = {}, {}, {}
    for i, e in ipairs(events) do
        local size = 0
        if type(e) == "table" and type(e.data) == "table" then
            local enc_ok, n = pcall(json.size, e.data)
            size = enc_ok and n or 1e9
        end
        local clean, code, msg = validation.event(e, now, size)
        if clean then
            ok_list[#ok_list + 1] = { index = i - 1, e = clean }
            if not seen[clean.player_id] then
                seen[clean.player_id] = true
                pids[#pids + 1] = clean.player_id
            end
        else
            rejected[#rejected + 1] = { index = i - 1, code = code, message = msg }
        end
    end
    if #ok_list == 0 then
        for _, r in ipairs(rejected) do
            REJECTED:inc(1, r.code)
        end
        stats.rejected = stats.rejected + #rejected
        return 0, rejected
    end
    -- the players must be the caller's (the directory, one query per batch)
    local rows, err = db.query("select id from player_directory where account_id = $1 and " ..
                               "id in (select (jsonb_array_elements_text($2))::bigint)",
                               account_id, pids)
    if not rows then
        return nil, err
    end
    local mine = {}
    for _, r in ipairs(rows) do
        mine[r.id] = true
    end
    -- the workers are far behind (or none runs): take nothing more for now
    if lag_now() > _M.MAX_LAG then
        return nil, "busy"
    end
    local list, idx = json.array({}), {}
    local where = {} -- player id -> its position (a batch is mostly one player's)
    for _, it in ipairs(ok_list) do
        local e = it.e
        if mine[e.player_id] then
            local pos = where[e.player_id]
            if pos == nil then
                pos = world.position(e.player_id) or false
                where[e.player_id] = pos
            end
            e.account_id, e.sid, e.received = account_id, sid, now
            e.region = pos and pos.region or nil
            list[#list + 1] = e
            idx[#list] = it.index
        else
            rejected[#rejected + 1] = { index = it.index, code = "forbidden",
                                        message = "player_id: not one of your players" }
        end
    end
    local accepted = 0
    if #list > 0 then
        -- one entry for the batch, encoded in one call: one string, not one per event (LuaJIT
        -- interns every string, and a batch's encoded events differ in few places)
        local cmd = #list == 1 and { "XADD", _M.STREAM, "*", "e", json.encode(list[1]) } or
                    { "XADD", _M.STREAM, "*", "es", json.encode(list) }
        -- the id is not read; durable: with redis.wait_replicas, only once replicas have it
        local res, perr = cache.pipeline({ cmd }, { replies = false, durable = true })
        if not res then
            return nil, perr
        end
        if res[1] == true then
            accepted = #list
            S.per_entry = S.per_entry * 0.9 + #list * 0.1
        else
            for i = 1, #list do
                rejected[#rejected + 1] = { index = idx[i], code = "unavailable",
                                            message = "the stream did not take it; send it again" }
            end
        end
    end
    table.sort(rejected, function(a, b) return a.index < b.index end)
    INGESTED:inc(accepted)
    for _, r in ipairs(rejected) do
        REJECTED:inc(1, r.code)
    end
    stats.ingested = stats.ingested + accepted
    stats.rejected = stats.rejected + #rejected
    return accepted, rejected
end


-- ---- consume ----------------------------------------------------------------------------

-- The ids of the item catalogue: { [id] = true }, read again once a minute, and at most once
-- a second when a job asks for an item it does not hold (a new item is known at once).
local items_known, items_at = {}, -math.huge
local function read_items()
    local rows = db.query("select id from items")
    if rows then
        local set = {}
        for _, r in ipairs(rows) do
            set[r.id] = true
        end
        items_known, items_at = set, time.monotonic() -- lint: allow-module-state (a cache)
    end
end
local catalogue_view = setmetatable({}, {
    __index = function(_, id)
        if not items_known[id] and time.monotonic() - items_at > 1 then
            read_items()
        end
        return items_known[id]
    end,
})
local function catalogue()
    if time.monotonic() - items_at > 60 then
        read_items()
    end
    return catalogue_view
end


local jobs = {} -- type -> job module: each script set finds its own

local function job(t)
    local j = jobs[t]
    if j == nil then
        local ok, mod = pcall(require, "jobs." .. t)
        j = ok and type(mod) == "table" and
            (type(mod.effect) == "function" or type(mod.run) == "function") and mod or false
        if not ok then
            log.error("job " .. t .. " does not load: " .. tostring(mod))
        end
        jobs[t] = j -- lint: allow-module-state (each script set finds its own job modules)
    end
    return j
end


-- One command of any number of arguments (a batch's ids: unpack stops at a few thousand
-- values), sent as a pipeline of one.
local function cmd_of(list)
    local r, err = cache.pipeline({ list })
    if not r then
        return nil, err
    end
    if type(r[1]) == "table" and r[1].err then
        return nil, r[1].err
    end
    return r[1]
end


local function ensure_group()
    if S.group_ready then
        return true
    end
    local r, err = cache.cmd("XGROUP", "CREATE", _M.STREAM, _M.GROUP, "0", "MKSTREAM")
    if r or (type(err) == "string" and err:find("BUSYGROUP", 1, true)) then
        S.group_ready = true
        return true
    end
    return nil, err
end


-- A long loop over a batch gives the event loop a turn every 500 items: a batch of thousands
-- never holds the node's clients up for more than a few milliseconds at a time.
local function breathe(i)
    if i % 500 == 0 then
        time.sleep(0)
    end
end


-- entries of a reply: { {id, fields}, ... } -> the items to do, one per event or job:
-- { {sid = stream id, e = event | nil, j = job | nil, tries = deliveries so far,
-- entry = {sid =, left = items not done yet}}, ... }. An entry is acknowledged when its left
-- falls to 0 (done). An entry without anything readable is one item with neither e nor j.
local function entries_of(list, tries)
    local out = {}
    local n = 0
    for _, it in ipairs(list or {}) do
        local id, fields = it[1], it[2]
        local es, j
        if type(fields) == "table" then
            for i = 1, #fields, 2 do
                local f = fields[i]
                if f == "es" then
                    local v = json.decode(fields[i + 1])
                    es = type(v) == "table" and v or nil
                elseif f == "e" then
                    es = { json.decode(fields[i + 1]) }
                elseif f == "j" then
                    j = json.decode(fields[i + 1])
                end
            end
        end
        local entry = { sid = id, left = 0 }
        local t = tries and tries[id] or 1
        j = type(j) == "table" and j or nil
        if j or not es or #es == 0 then
            es = { false }
        end
        for _, e in ipairs(es) do
            n = n + 1
            breathe(n)
            entry.left = entry.left + 1
            out[#out + 1] = { sid = id, e = not j and type(e) == "table" and e or nil, j = j,
                              tries = t, entry = entry }
        end
    end
    if #list > 0 then
        S.read_per_entry = n / #list
    end
    return out
end


-- How many entries to read for about BATCH events (as many events per entry as last time).
local function entries_per_batch()
    return math.max(1, math.min(_M.BATCH, math.floor(_M.BATCH / S.read_per_entry)))
end


-- items (entries_of) cut into batches of about BATCH events, whole entries each: a read that
-- held more events than expected is still written in transactions of the usual size.
local function batches_of(items)
    if #items <= _M.BATCH * 1.5 then
        return { items }
    end
    local out, cur = {}, {}
    for _, it in ipairs(items) do
        if #cur >= _M.BATCH and it.entry ~= cur[#cur].entry then
            out[#out + 1] = cur
            cur = {}
        end
        cur[#cur + 1] = it
    end
    out[#out + 1] = cur
    return out
end


-- An item done (written, or in the dead letters): its entry, when that was its last item, is
-- added to ack.
local function settle(it, ack)
    local entry = it.entry
    entry.left = entry.left - 1
    if entry.left == 0 then
        ack[#ack + 1] = entry.sid
    end
end


-- The players of events written by an earlier batch, read again and added to published: that
-- batch committed, and its node may have died before it stored the players' new documents in
-- the cache (its entries, never acknowledged, came back here), which would otherwise serve the
-- documents from before those events until their ttl (found by tools/crash: docs/reliability.md,
-- "Crash safety"). A failed read leaves the cache as it is.
local function republish(n, list, again, published)
    local have, pids = {}, json.array({})
    for _, r in ipairs(published) do
        have[tonumber(r.id)] = true
    end
    for _, it in ipairs(list) do
        local pid = tonumber(it.e.player_id)
        local ids = again[tonumber(it.e.account_id)]
        if ids and ids[it.e.id] and pid and not have[pid] then
            have[pid] = true
            pids[#pids + 1] = pid
        end
    end
    if #pids == 0 then
        return
    end
    local rows = db.shard(n).query("select " .. players.COLUMNS .. " from players where id in " ..
                                   "(select jsonb_array_elements_text($1)::bigint)", pids)
    for _, r in ipairs(rows or {}) do
        published[#published + 1] = r
    end
end


-- xp_for_level(1 .. MAX_LEVEL) of rules/player.lua as a PostgreSQL array ("{0,100,...}"), for
-- the level computed in SQL: the level for xp is the count of these that xp reaches (they rise
-- with the level, as level_for_xp's search assumes). Made again when the rules change (a
-- reload gives a new rules table).
local thresholds_for, thresholds_text
local function thresholds()
    if thresholds_for ~= player then
        local t = {}
        for n = 1, player.MAX_LEVEL do
            t[n] = string.format("%d", player.xp_for_level(n))
        end
        thresholds_for = player -- lint: allow-module-state (a cache)
        thresholds_text = "{" .. table.concat(t, ",") .. "}" -- lint: allow-module-state
    end
    return thresholds_text
end


-- Write one shard's share of a batch: the events' ids, and the effects of those not seen
-- before, in one transaction. Returns the number of new events and what to announce once
-- committed (for announce), or nil, err. hooks.inserted() is called once the ids are in (or
-- failed), and hooks.may_update() before the effects are written (it waits for the batch
-- before this one to commit: see fly).
local function write_shard(n, list, hooks)
    local rows = json.array({})
    for i, it in ipairs(list) do
        breathe(i)
        rows[i] = { account_id = it.e.account_id, id = it.e.id, type = it.e.type,
                    player_id = it.e.player_id }
    end
    local published = {}
    local fresh_n = 0
    local why -- what the query that failed said
    local created -- items written, by the event type that gave them
    local leveled -- { {id, level} }: players who reached a new level (for the mods)
    local told -- { {name, payload} }: the game events of the effects (effect.events)
    local again -- account -> { [id] = true }: the events written by an earlier batch
    local ok, err = db.shard(n).tx(function(tq)
        created, leveled, told = {}, {}, {}
        local function q(...)
            local r, e, d = tq(...)
            if not r then
                why = type(d) == "table" and (tostring(d.sqlstate) .. " " .. tostring(d.message))
                      or tostring(e)
            end
            return r
        end
        -- the answer names only the events seen before (usually none): a row per event, and
        -- a string made per id, cost more than the insert itself on batches of thousands
        local old = q("with t as (select account_id, id, type, player_id from " ..
                      "json_to_recordset($1) as t(account_id bigint, id text, type text, " ..
                      "player_id bigint)), ins as (insert into processed_events (account_id, " ..
                      "id, type, player_id) select account_id, id, type, player_id from t " ..
                      "on conflict do nothing returning account_id, id) " ..
                      "select t.account_id, t.id from t where not exists (select 1 from ins " ..
                      "where ins.account_id = t.account_id and ins.id = t.id)", rows)
        hooks.inserted()
        if not old then
            return nil
        end
        hooks.may_update()
        local seen = {} -- account -> { [id] = true }: ids seen before, or earlier in the batch
        again = nil
        for _, r in ipairs(old) do
            local a = tonumber(r.account_id)
            seen[a] = seen[a] or {}
            seen[a][r.id] = true
            again = again or {}
            again[a] = again[a] or {}
            again[a][r.id] = true
        end
        local xp, items, quests = {}, {}, {}
        local gave = {} -- "player/item" -> { [event type] = qty }
        for i, it in ipairs(list) do
            breathe(i)
            local a, id = tonumber(it.e.account_id), it.e.id
            local ids = seen[a]
            if not ids then
                ids = {}
                seen[a] = ids
            end
            if not ids[id] then
                ids[id] = true -- a duplicate inside the batch counts once
                fresh_n = fresh_n + 1
                it.fresh = true
                local ef, pid = it.effect, it.e.player_id
                if ef.xp then
                    xp[pid] = (xp[pid] or 0) + ef.xp
                end
                for item, qty in pairs(ef.items or {}) do
                    items[#items + 1] = { player_id = pid, item = item, qty = qty }
                    local k = pid .. "/" .. item
                    local by = gave[k] or {}
                    gave[k] = by
                    by[it.e.type] = (by[it.e.type] or 0) + qty
                end
                for quest, step in pairs(ef.quests or {}) do
                    quests[#quests + 1] = { player_id = pid, quest = quest, step = step }
                end
                for _, ev in ipairs(ef.events or {}) do
                    told[#told + 1] = ev
                end
            end
        end
        local xp_rows = json.array({})
        for pid, v in pairs(xp) do
            xp_rows[#xp_rows + 1] = { pid = pid, add_xp = v }
        end
        if #xp_rows > 0 then
            -- the new level in the same statement, from rules/player.lua's thresholds (the
            -- level is the count of thresholds the new xp reached: width_bucket); the old one
            -- from the row as it was (o: the statement's snapshot) tells who went up. (The
            -- recordset's columns are named apart from players', which RETURNING lists.)
            local up = q("update players p set xp = p.xp + s.add_xp, version = p.version + 1, " ..
                         "level = greatest(1, width_bucket(p.xp + s.add_xp, $2::bigint[])) " ..
                         "from json_to_recordset($1) as s(pid bigint, " ..
                         "add_xp bigint) join players o on o.id = s.pid where p.id = s.pid " ..
                         "returning o.level as old_level, " .. players.columns("p"),
                         xp_rows, thresholds())
            if not up then
                return nil
            end
            for _, r in ipairs(up) do
                if r.level > r.old_level then
                    leveled[#leveled + 1] = { id = r.id, level = r.level }
                end
                r.old_level = nil
                published[#published + 1] = r
            end
        end
        if #items > 0 then
            -- only for players that still exist (a deleted player's loot has no effect)
            local got = q("insert into inventory (player_id, item, qty) " ..
                          "select t.player_id, t.item, sum(t.qty) from json_to_recordset($1) " ..
                          "as t(player_id bigint, item text, qty int) join players p on p.id = " ..
                          "t.player_id group by t.player_id, t.item " ..
                          "on conflict (player_id, item) do update set qty = inventory.qty + " ..
                          "excluded.qty returning player_id, item", json.array(items))
            if not got then
                return nil
            end
            for _, r in ipairs(got) do
                for t, qty in pairs(gave[r.player_id .. "/" .. r.item] or {}) do
                    created[t] = (created[t] or 0) + qty
                end
            end
        end
        if #quests > 0 then
            -- a quest goes forward only (the furthest step of the batch, for players that exist)
            if not q("insert into player_quests (player_id, quest, step) " ..
                     "select t.player_id, t.quest, max(t.step) from json_to_recordset($1) as " ..
                     "t(player_id bigint, quest text, step int) join players p on p.id = " ..
                     "t.player_id group by t.player_id, t.quest " ..
                     "on conflict (player_id, quest) do update set step = " ..
                     "greatest(player_quests.step, excluded.step), updated_at = now()",
                     json.array(quests)) then
                return nil
            end
        end
        return true
    end)
    if not ok then
        return nil, why or err
    end
    if again then
        republish(n, list, again, published)
    end
    return fresh_n, { created = created, published = published, leveled = leveled, told = told }
end


-- What a shard's committed transaction changed, told: the item counters, the players' cached
-- documents (one Redis round trip for the batch), the mods' game events (docs/modding.md).
local function announce(a)
    for t, qty in pairs(a.created) do
        players.items_created(t, qty)
    end
    players.published_many(a.published)
    for _, l in ipairs(a.leveled) do
        mod_events.emit("player.level_up", { player_id = l.id, level = l.level })
    end
    for _, ev in ipairs(a.told) do
        mod_events.emit(ev[1], ev[2])
    end
end


-- An event or job to the dead letters, with the last error there; then done (its entry is
-- acknowledged with the batch's). False when Redis did not take it: it stays pending.
local function bury(it, why)
    local kind = it.e and it.e.type or it.j and ("job:" .. tostring(it.j.name)) or "?"
    local res = cache.pipeline({
        { "XADD", _M.DEAD, "MAXLEN", "~", 100000, "*", "entry", it.sid,
          it.j and "j" or "e", json.encode(it.j or it.e or {}), "error", tostring(why),
          "tries", it.tries },
    })
    if not (res and res[1] and not (type(res[1]) == "table" and res[1].err)) then
        return false
    end
    stats.dead = stats.dead + 1
    count(kind, "dead")
    log.warn("to the dead letters", { entry = it.sid, kind = kind, error = tostring(why),
                                      tries = it.tries })
    return true
end


-- A failed event or job keeps its entry pending, to be claimed again after its backoff; after
-- its last try (MAX_TRIES, or the job's attempts) it goes to the dead letters (done: added to
-- ack when it was its entry's last item).
local function failed(it, why, ack)
    stats.failed = stats.failed + 1
    count(it.e and it.e.type or it.j and ("job:" .. tostring(it.j.name)) or "?", "failed")
    local limit = it.j and type(it.j.attempts) == "number" and it.j.attempts or _M.MAX_TRIES
    if it.tries >= limit and bury(it, why) then
        settle(it, ack)
    end
end


-- Pending entries due again (exponential backoff: idle for CLAIM_IDLE_MS x 2^(tries - 1)),
-- claimed for this consumer. Returns entries to process.
local function claim_due()
    local p = cache.cmd("XPENDING", _M.STREAM, _M.GROUP, "IDLE", _M.CLAIM_IDLE_MS, "-", "+",
                        entries_per_batch())
    if type(p) ~= "table" or #p == 0 then
        return {}
    end
    local due, tries = {}, {}
    for _, x in ipairs(p) do
        local id, idle, n = x[1], x[3], x[4]
        if idle >= _M.CLAIM_IDLE_MS * 2 ^ math.min(n - 1, 6) then
            due[#due + 1] = id
            tries[id] = n + 1 -- this claim is one more delivery
        end
    end
    if #due == 0 then
        return {}
    end
    local cmd = { "XCLAIM", _M.STREAM, _M.GROUP, CONSUMER, _M.CLAIM_IDLE_MS }
    for _, id in ipairs(due) do
        cmd[#cmd + 1] = id
    end
    local r = cmd_of(cmd)
    return type(r) == "table" and entries_of(r, tries) or {}
end


-- A batch of entries (from XREADGROUP or XCLAIM) made ready to write: each event's job has
-- run (pure: its effect), and the effects are grouped by shard. (Entries that cannot be
-- prepared are counted failed here, and may go to the dead letters.)
local function prepare(entries)
    local cat
    local by_shard, ack, n = {}, {}, 0
    local jobs_to_run = {}
    local calls = {} -- job -> { ok = n, error = n }: counted once per batch
    local function called(name, t0, good)
        JOB_SECONDS:observe(monotonic() - t0, name)
        local c = calls[name]
        if not c then
            c = { ok = 0, error = 0 }
            calls[name] = c
        end
        if good then
            c.ok = c.ok + 1
        else
            c.error = c.error + 1
        end
    end
    for _, it in ipairs(entries) do
        n = n + 1
        breathe(n)
        local e = it.e
        local j = e and job(e.type)
        if it.j then
            jobs_to_run[#jobs_to_run + 1] = it
        elseif not e then
            settle(it, ack) -- an entry without an event (trimmed or foreign): dropped
        elseif not j then
            failed(it, "no job handles type " .. tostring(e.type), ack)
        else
            if not cat then
                cat = catalogue()
            end
            local t0 = monotonic()
            local ok, ef = pcall(j.effect, e, { catalogue = cat })
            called(e.type, t0, ok and type(ef) == "table")
            if ok and type(ef) == "table" then
                it.effect = ef
                local s = e.player_id % players.SHARDS
                by_shard[s] = by_shard[s] or {}
                local l = by_shard[s]
                l[#l + 1] = it
            else
                failed(it, ok and "the job returned no effect" or ef, ack)
            end
        end
    end
    return { n = n, by_shard = by_shard, ack = ack, jobs_to_run = jobs_to_run, calls = calls,
             called = called }
end


-- Write a prepared batch: each shard's transaction (hooks: see write_shard), then
-- hooks.committed() (the next batch may write its effects), then what they changed is
-- announced, the jobs run, and the entries written are acknowledged. Returns how many entries
-- the batch had.
local function write(b, hooks)
    local ack, calls, called = b.ack, b.calls, b.called
    local done = {}
    -- inserted when every shard's ids are in: the next batch then inserts nothing a shard of
    -- this one has still to insert (it could wait on the next one's uncommitted ids)
    local left = 0
    for _ in pairs(b.by_shard) do
        left = left + 1
    end
    local shard_hooks = { may_update = hooks.may_update, inserted = function()
        left = left - 1
        if left == 0 then
            hooks.inserted()
        end
    end }
    for s, list in pairs(b.by_shard) do
        local fresh, told = write_shard(s, list, shard_hooks)
        if not fresh then
            -- nothing of this shard's share was written: left pending, claimed again later
            log.warn("game events not written: " .. tostring(told), { shard = s, events = #list })
        else
            done[#done + 1] = told
            for _, it in ipairs(list) do
                settle(it, ack)
                if it.fresh then
                    stats.processed = stats.processed + 1
                    count(it.e.type, "processed")
                else
                    stats.duplicates = stats.duplicates + 1
                    count(it.e.type, "duplicates")
                end
            end
        end
    end
    hooks.committed()
    for _, a in ipairs(done) do
        announce(a)
    end
    -- jobs (mmo.queue.push): each run on its own, in this task; they may do I/O
    for _, it in ipairs(b.jobs_to_run) do
        local j = job(tostring(it.j.name))
        local ok, why = false, "no job " .. tostring(it.j.name) .. " with a run function"
        if j and type(j.run) == "function" then
            local t0 = monotonic()
            ok, why = pcall(j.run, it.j.payload, { entry = it.sid, tries = it.tries })
            called(tostring(it.j.name), t0, ok)
        end
        if ok then
            settle(it, ack)
            stats.processed = stats.processed + 1
            count("job:" .. tostring(it.j.name), "processed")
        else
            failed(it, why, ack)
        end
    end
    for name, c in pairs(calls) do
        if c.ok > 0 then
            JOB_RUNS:inc(c.ok, name, "ok")
        end
        if c.error > 0 then
            JOB_RUNS:inc(c.error, name, "error")
        end
    end
    if #ack > 0 then
        local cmd = { "XACK", _M.STREAM, _M.GROUP }
        for _, id in ipairs(ack) do
            cmd[#cmd + 1] = id
        end
        local r, err = cmd_of(cmd)
        if not r then
            log.warn("game events written but not acknowledged (they will be seen again, " ..
                     "with no second effect): " .. tostring(err))
        end
    end
    stats.batches = stats.batches + 1
    return b.n
end


local function nothing() end
local ALONE = { inserted = nothing, may_update = nothing, committed = nothing }

-- Process entries at once, in this task.
local function process(entries)
    return write(prepare(entries), ALONE)
end


-- Batches overlap: while one batch's transaction runs in PostgreSQL, the next one is read
-- from Redis and its jobs run here; and once the one before has inserted its events' ids,
-- the next one begins its transaction and inserts its own (the larger part of a batch's time
-- in PostgreSQL) while the one before writes its effects and commits. Effects are written one
-- batch at a time, in order: two batches updating at once could lock the same players' rows
-- in opposite orders. Waits go one way only (a later batch waits for an earlier one: for its
-- commit before its effects, and inside PostgreSQL for an id the earlier one inserted: the
-- next batch inserts once the one before has inserted on every shard), so they cannot
-- deadlock. At most two batches are being written. A batch is written in a task of its
-- own; its flight says how far it got.
local function wait_for(flight, what)
    while flight and not flight[what] do
        time.sleep(0.0005)
    end
end

local function fly(b, prev)
    local flight = { inserted = false, committed = false, done = false }
    local hooks = {
        inserted = function() flight.inserted = true end,
        may_update = function() wait_for(prev, "committed") end,
        committed = function() flight.inserted, flight.committed = true, true end,
    }
    time.after(0, function()
        local ok, err = pcall(write, b, hooks)
        if not ok then
            log.error("a batch of game events failed: " .. tostring(err) ..
                      " (its entries stay pending and are claimed again)")
        end
        flight.inserted, flight.committed, flight.done = true, true, true
    end)
    return flight
end


-- Drop the acknowledged head of the stream: what is before both the group's last delivered
-- entry and its oldest pending one (XPENDING's summary). Nothing undelivered or unacknowledged
-- goes; a node that cannot tell (Redis away, no group) trims nothing.
local function cmp_id(a, b) -- stream ids "ms-seq": -1, 0, 1
    local am, as = a:match("^(%d+)-(%d+)$")
    local bm, bs = b:match("^(%d+)-(%d+)$")
    am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
    if not (am and bm) then
        return 0
    end
    if am ~= bm then
        return am < bm and -1 or 1
    end
    return as < bs and -1 or (as > bs and 1 or 0)
end


local function trim(st)
    local last = st.group.last_delivered
    if type(last) ~= "string" or last == "0-0" then
        return
    end
    local p = cache.cmd("XPENDING", _M.STREAM, _M.GROUP)
    if type(p) ~= "table" then
        return
    end
    local min = last
    if type(p[2]) == "string" and cmp_id(p[2], min) < 0 then
        min = p[2]
    end
    cache.cmd("XTRIM", _M.STREAM, "MINID", "~", min)
end


-- timer (routes.lua): read and process batches until the stream is drained or BUDGET_S
function _M.consume()
    if not ensure_group() then
        return
    end
    local t0 = time.monotonic()
    queue.move_due(_M.BATCH) -- delayed jobs that are due, into the stream
    if t0 - S.last_claim >= _M.CLAIM_EVERY then
        S.last_claim = t0
        local st = _M.status()
        if st then
            QUEUE:set(st.stream.length, "length")
            QUEUE:set(st.group.pending, "pending")
            QUEUE:set(type(st.group.lag) == "number" and st.group.lag or 0, "lag")
            QUEUE:set(st.dead_letters, "dead")
        end
        if st then
            trim(st)
        end
        for _, b in ipairs(batches_of(claim_due())) do
            if #b > 0 then
                process(b)
            end
        end
    end
    local last, before -- the flights of the last two batches
    repeat
        -- first what this consumer read before and never acknowledged (a restart), page by
        -- page, then new
        local from = S.own_pending_done and ">" or S.own_pending_from
        local r, err = cache.cmd("XREADGROUP", "GROUP", _M.GROUP, CONSUMER, "COUNT",
                                 entries_per_batch(), "STREAMS", _M.STREAM, from)
        if not r then
            if type(err) == "string" and err:find("NOGROUP", 1, true) then
                S.group_ready = false
            end
            break
        end
        local list = type(r) == "table" and r[1] and r[1][2] or {}
        if #list == 0 then
            if S.own_pending_done then
                break
            end
            S.own_pending_done = true
        else
            if not S.own_pending_done then
                -- the next page of them; one that failed again is left to claim_due (its
                -- backoff): read from "0" again, it would come back at once, for ever
                S.own_pending_from = list[#list][1]
            end
            for _, items in ipairs(batches_of(entries_of(list))) do
                local b = prepare(items)
                wait_for(before, "done")
                wait_for(last, "inserted")
                before, last = last, fly(b, last)
            end
        end
    until time.monotonic() - t0 > _M.BUDGET_S
    -- a run ends with its batches written: the next run (or a reload) starts from nothing
    wait_for(before, "done")
    wait_for(last, "done")
end


-- ---- dead letters ---------------------------------------------------------------------------

local function letter(entry)
    local f, out = entry[2] or {}, { id = entry[1] }
    for i = 1, #f, 2 do
        out[f[i]] = f[i + 1]
    end
    out.event = out.e and out.e ~= "" and json.decode(out.e) or json.null
    out.job = out.j and json.decode(out.j) or nil
    out.e, out.j = nil, nil
    out.tries = tonumber(out.tries)
    return out
end


-- The oldest dead letters after id `after` (exclusive), at most limit: a list, or nil, err.
function _M.dead(limit, after)
    local from = after and ("(" .. after) or "-"
    local r, err = cache.cmd("XRANGE", _M.DEAD, from, "+", "COUNT", limit)
    if not r then
        return nil, err
    end
    local out = json.array({})
    for i, entry in ipairs(r) do
        out[i] = letter(entry)
    end
    return out
end


-- Back into the stream (the event keeps its id, so it still has its effect at most once) and
-- out of the dead letters: the new stream id, false when there is no such letter, or nil, err.
function _M.requeue(id)
    local r, err = cache.cmd("XRANGE", _M.DEAD, id, id)
    if not r then
        return nil, err
    end
    if #r == 0 then
        return false
    end
    local l = letter(r[1])
    if l.event == json.null and not l.job then
        return nil, "that dead letter holds no event"
    end
    local field, body = "e", l.event
    if l.job then
        field, body = "j", l.job
    end
    local res
    res, err = cache.pipeline({ { "XADD", _M.STREAM, "*", field, json.encode(body) },
                                { "XDEL", _M.DEAD, id } })
    if not res then
        return nil, err
    end
    return res[1]
end


-- Out of the dead letters for good: true, false (no such letter), or nil, err.
function _M.drop(id)
    local n, err = cache.cmd("XDEL", _M.DEAD, id)
    if not n then
        return nil, err
    end
    return n > 0
end


-- ---- visibility -----------------------------------------------------------------------------

-- The stream and the group as Redis sees them, and this node's counters.
function _M.status()
    local res, err = cache.pipeline({
        { "XLEN", _M.STREAM },
        { "XINFO", "GROUPS", _M.STREAM },
        { "XLEN", _M.DEAD },
    })
    if not res then
        return nil, err
    end
    local group = { name = _M.GROUP, pending = 0, lag = 0, consumers = 0 }
    if type(res[2]) == "table" then
        for _, g in ipairs(res[2]) do
            local h = {}
            for i = 1, #g, 2 do
                h[g[i]] = g[i + 1]
            end
            if h.name == _M.GROUP then
                group.pending, group.consumers = h.pending or 0, h.consumers or 0
                group.lag = type(h.lag) == "number" and h.lag or json.null
                group.last_delivered = h["last-delivered-id"]
            end
        end
    end
    local length = type(res[1]) == "number" and res[1] or 0
    -- Redis 7.0 (Debian 12's) can report a lag that is not there after a trim (its entries-read
    -- counter goes wrong: redis/redis#13957, fixed in later versions), and such a lag never
    -- falls. It cannot exceed the stream's length; and it is 0 when nothing follows the last
    -- entry delivered.
    if type(group.lag) == "number" and group.lag > 0 then
        group.lag = math.min(group.lag, length)
        if type(group.last_delivered) == "string" then
            local after = cache.cmd("XRANGE", _M.STREAM, "(" .. group.last_delivered, "+",
                                    "COUNT", 1)
            if type(after) == "table" and #after == 0 then
                group.lag = 0
            end
        end
    end
    return {
        stream = { name = _M.STREAM, length = length },
        group = group,
        dead_letters = type(res[3]) == "number" and res[3] or 0,
        node = { consumer = CONSUMER, ingested = stats.ingested, rejected = stats.rejected,
                 processed = stats.processed, duplicates = stats.duplicates,
                 failed = stats.failed, dead = stats.dead, batches = stats.batches,
                 by_type = stats.by_type },
    }
end


return _M
