-- lib/world_events.lua: world events on this node, wired to the database and the live world.
--
-- The lifecycle is lib/event_runner.lua's; the kinds are scripts/world_events/<type>.lua,
-- found by their type name. This node runs the events of the regions it owns: it reads their
-- unfinished events when it starts owning a region and every RELOAD_EVERY seconds (events made
-- on another node arrive so), writes an event back when its state changes and every
-- SAVE_EVERY seconds while it is active, and forgets a region it no longer owns (its next
-- owner reads the events back and they go on where they were). Reads and writes run in tasks
-- of their own (mmo.time.after): the tick never waits on the database.
--
-- Schedules (scripts/data/world_schedule.lua): each entry makes one event per occurrence,
-- (epoch seconds - offset_s) a multiple of every_s, a little ahead of time; its schedule_key
-- (entry name and start) is unique, so two nodes trying make one row.
local db = require "mmo.db"
local json = require "mmo.json"
local log = require "mmo.log"
local runner_mod = require "lib.event_runner"
local state = require "mmo.state"
local time = require "mmo.time"
local triggers = require "rules.world_triggers"
local world = require "mmo.world"

local ipairs = ipairs
local pairs = pairs
local pcall = pcall
local require = require
local setmetatable = setmetatable
local tostring = tostring
local type = type


local _M = {}

_M.SAVE_EVERY = 5
_M.RELOAD_EVERY = 5
_M.SCHEDULE_AHEAD = 60 -- seconds: scheduled events are made this long before they start

local COLUMNS = "id, type, region, params, state, starts_at, ends_at, data, result, " ..
                "end_reason, schedule_key"

-- type -> kind module, loaded on first use; a bad or missing one is false
local kinds = setmetatable({}, {
    __index = function(t, name)
        local kind = false
        if type(name) == "string" and name:match("^[a-z][a-z0-9_]*$") and #name <= 40 then
            local ok, mod = pcall(require, "world_events." .. name)
            if ok and type(mod) == "table" and type(mod.on_start) == "function" then
                kind = mod
            elseif not ok and not tostring(mod):find("not found", 1, true) then
                log.error("world event kind " .. name .. " does not load: " .. tostring(mod))
            end
        end
        t[name] = kind
        return kind
    end,
})

-- kept across reloads (mmo.state): the events running here stay running
local S = state.global("world_events", { version = 1, init = function()
    return {
        events = {},     -- id -> ev: the runner's events
        dirty = {},      -- events to write (id -> ev)
        flushing = false,
        regions = {},    -- region id -> { loaded_at } for the regions run here
        last_save = 0, last_schedule = 0, last_trigger = 0,
    }
end })
local regions = S.regions


local function row_of(ev)
    return { id = ev.id, state = ev.state, data = ev.data or {}, result = ev.result,
             end_reason = ev.end_reason }
end


local function flush()
    local rows = json.array({})
    for _, ev in pairs(S.dirty) do
        rows[#rows + 1] = row_of(ev)
    end
    S.dirty = {}
    local ok, err = db.query(
        "update world_events e set state = s.state, data = s.data, result = s.result, " ..
        "end_reason = s.end_reason from jsonb_to_recordset($1) as s(id bigint, state text, " ..
        "data jsonb, result jsonb, end_reason text) where e.id = s.id", rows)
    S.flushing = false
    if not ok then
        log.warn("world events not saved: " .. tostring(err))
    end
end


local function save(ev)
    S.dirty[ev.id] = ev
    if not S.flushing then
        S.flushing = true
        time.after(0, flush)
    end
end


local runner = runner_mod.new {
    kinds = kinds,
    now = time.now,
    broadcast = function(region, msg)
        world.send_region(region, msg)
    end,
    save = save,
    log = function(msg, fields)
        log.warn(msg, fields)
    end,
    events = S.events,
}
_M.runner = runner


function _M.kind(name)
    return kinds[name] or nil
end


-- An event row as API.md lists it.
function _M.document(ev)
    return { id = ev.id, type = ev.type, region = ev.region, state = ev.state,
             starts_at = ev.starts_at, ends_at = ev.ends_at, params = ev.params,
             data = ev.data, result = ev.result or json.null, end_reason = ev.end_reason }
end


-- Read region's unfinished events into the runner (in a task of its own).
local function load(region)
    local rows, err = db.query("select " .. COLUMNS .. " from world_events " ..
                               "where region = $1 and state <> 'ended' order by id", region)
    local r = regions[region]
    if r then
        r.loading = false
    end
    if not rows then
        log.warn("world events of " .. region .. " not read: " .. tostring(err))
        return
    end
    if not r then
        return -- no longer ours
    end
    for _, ev in ipairs(rows) do
        if not runner:get(ev.id) then
            if kinds[ev.type] then
                runner:add(ev)
            else
                log.warn("world event of an unknown kind", { event = ev.id, type = ev.type })
            end
        end
    end
end


-- The occurrences of the schedule entries of region to make now.
local function schedule(region, now)
    local ok, entries = pcall(require, "data.world_schedule")
    if not ok or type(entries) ~= "table" then
        return
    end
    local make = json.array({})
    for _, e in ipairs(entries) do
        if e.region == region and kinds[e.type] and type(e.every_s) == "number" and
           e.every_s >= 60 then
            local next_start = runner_mod.next_start(e, now)
            if next_start - now <= _M.SCHEDULE_AHEAD then
                local params = e.params or {}
                make[#make + 1] = {
                    type = e.type, region = region, params = params, starts_at = next_start,
                    ends_at = next_start + runner_mod.duration(kinds[e.type], params),
                    schedule_key = e.name .. ":" .. next_start,
                }
            end
        end
    end
    if #make > 0 then
        time.after(0, function()
            local res, err = db.query(
                "insert into world_events (type, region, params, state, starts_at, ends_at, " ..
                "schedule_key) select type, region, params, 'scheduled', starts_at, ends_at, " ..
                "schedule_key from jsonb_to_recordset($1) as t(type text, region text, " ..
                "params jsonb, starts_at float8, ends_at float8, schedule_key text) " ..
                "on conflict (schedule_key) do nothing", make)
            if not res then
                log.warn("scheduled world events not made: " .. tostring(err))
            end
        end)
    end
end


-- The events rules/world_triggers.lua asks for in region, made (in a task of its own).
local function trigger(region)
    local online = world.online(region)
    if online == 0 then
        return
    end
    time.after(0, function()
        local rows, err = db.query(
            "select type, max(starts_at) as last, bool_or(state <> 'ended') as active " ..
            "from world_events where region = $1 group by type", region)
        if not rows then
            log.warn("world triggers of " .. region .. " not checked: " .. tostring(err))
            return
        end
        local view = { region = region, online = online, now = time.now(), active = {},
                        last = {} }
        for _, r in ipairs(rows) do
            view.last[r.type] = r.last
            view.active[r.type] = r.active or nil
        end
        for _, e in ipairs(triggers.check(view)) do
            local kind = kinds[e.type]
            if kind and (not kind.validate or kind.validate(e.params)) then
                local ev = _M.create(e.type, region, e.params, view.now, nil, true)
                if ev then
                    log.info("world event started by a rule", { event = ev.id, type = ev.type,
                                                                 region = region })
                end
            end
        end
    end)
end


-- One tick (from handlers/world.lua) with the regions this node owns: {region id = true}.
function _M.tick(owned, dt, now)
    for id, r in pairs(regions) do
        if not owned[id] then
            regions[id] = nil
            for _, ev in ipairs(runner:list()) do
                if ev.region == id then
                    runner:drop(ev.id) -- its next owner goes on with it
                end
            end
        elseif not r.loading and now - r.loaded_at >= _M.RELOAD_EVERY then
            r.loading, r.loaded_at = true, now
            time.after(0, function() load(id) end)
        end
    end
    for id in pairs(owned) do
        if not regions[id] then
            regions[id] = { loaded_at = now, loading = true }
            time.after(0, function() load(id) end)
        end
    end
    runner:tick(dt)
    if now - S.last_save >= _M.SAVE_EVERY then
        S.last_save = now
        for _, ev in ipairs(runner:list()) do
            if ev.state == "active" then
                save(ev)
            end
        end
    end
    if now - S.last_trigger >= triggers.CHECK_EVERY then
        S.last_trigger = now
        for id in pairs(owned) do
            trigger(id)
        end
    end
    if now - S.last_schedule >= 10 then
        S.last_schedule = now
        local wall = time.now()
        for id in pairs(owned) do
            schedule(id, wall)
        end
    end
end


-- Make an event (POST /api/admin/world/events): the row, then this node runs it if it owns
-- the region (else the owner reads it within RELOAD_EVERY seconds). Returns the event.
function _M.create(type_name, region, params, starts_at, account_id, owned)
    local kind = kinds[type_name]
    local ends_at = starts_at + runner_mod.duration(kind, params)
    local rows, err = db.query(
        "insert into world_events (type, region, params, state, starts_at, ends_at, " ..
        "created_by) values ($1, $2, $3, 'scheduled', $4, $5, $6) returning " .. COLUMNS,
        type_name, region, params, starts_at, ends_at, account_id)
    if not rows then
        return nil, err
    end
    local ev = rows[1]
    if owned and regions[region] then
        runner:add(ev)
    end
    return ev
end


-- Recent and coming events, newest first: unfinished ones and those ended within the hour.
function _M.recent(limit)
    return db.query("select " .. COLUMNS .. " from world_events where state <> 'ended' or " ..
                    "ends_at > $1 order by id desc limit $2", time.now() - 3600, limit)
end


-- The experience multiplier of a region now: the product of its active double_xp events'.
function _M.xp_multiplier(region)
    local m = 1
    for _, ev in ipairs(runner:list()) do
        if ev.region == region and ev.state == "active" and ev.data and ev.data.multiplier then
            m = m * ev.data.multiplier
        end
    end
    return m
end


return _M
